//! [`Throttle`]: a token-bucket rate limit on the bytes a socket (or a group of sockets)
//! sends, and optionally on the bytes it receives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use actix::{ActorFutureExt, Context};
use tokio::time::Instant;

use super::link::{Filter, FilterActor, FilterAnswer, Link};
use crate::messages::functions::{Handle, Readiness, Received, RecvFrom, SendV, Sent, SocketKind};
use crate::SocketFunctions;

/// Default bound on the bytes handed to the inner transport per `sendv`.
const DEFAULT_MAX_PER_CALL: usize = 64 * 1024;

/// Tokens are counted in billionths of a byte, so a refill over any number of
/// nanoseconds is exact.
const SCALE: i128 = 1_000_000_000;

/// A token bucket: `rate` bytes per second, up to `burst` bytes at once. Share one
/// (`Arc`) between several [`Throttle`]s to limit a group of sockets together.
///
/// It starts full. Time is tokio time, so paused-time tests run instantly and exactly.
/// Sockets that find it empty reserve their next chunk in turn (the bucket goes into
/// debt, first come first served), so sockets sharing a bucket share its rate evenly.
#[derive(Debug)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// Billionths of a byte; negative while chunks are reserved ahead of time.
    tokens: i128,
    /// Billionths of a byte reserved (paid for, or being paid for) and not sent yet:
    /// they count against the bucket's size, so the tokens and the reservations
    /// together never exceed a burst (a reservation paid off and the tokens refilled
    /// after it would otherwise go out in one instant, past the burst).
    reserved: i128,
    /// Last refill; `None` until first used (full).
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket of `burst` bytes (at least 1) refilled at `bytes_per_second` (at
    /// least 1).
    pub fn new(bytes_per_second: u64, burst: u64) -> Self {
        let burst = burst.max(1);
        TokenBucket {
            rate: bytes_per_second.max(1),
            burst,
            state: Mutex::new(BucketState {
                tokens: i128::from(burst) * SCALE,
                reserved: 0,
                last: None,
            }),
        }
    }

    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Most bytes at once.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Whole bytes that may be sent now (0 while the bucket is empty or in debt).
    pub fn available(&self) -> u64 {
        let state = self.refilled();
        whole_bytes(state.tokens)
    }

    fn capacity(&self) -> i128 {
        i128::from(self.burst) * SCALE
    }

    /// The state, refilled up to now.
    fn refilled(&self) -> MutexGuard<'_, BucketState> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if let Some(last) = state.last {
            let nanos = i128::try_from(now.duration_since(last).as_nanos()).unwrap_or(i128::MAX);
            let added = nanos.saturating_mul(i128::from(self.rate));
            // A reservation larger than the burst (a datagram is never cut) leaves no
            // room, but the debt it made is still paid off.
            let room = (self.capacity() - state.reserved).max(0);
            // Tokens over the room left are lost, as a full bucket's are; tokens already
            // there (a refund) are not taken away.
            state.tokens = state
                .tokens
                .max(state.tokens.saturating_add(added).min(room));
        }
        state.last = Some(now);
        state
    }

    /// Takes up to `want` bytes' worth of tokens now (all of `want` or nothing when
    /// `whole`); returns how many were taken.
    fn take(&self, want: u64, whole: bool) -> u64 {
        let mut state = self.refilled();
        let available = whole_bytes(state.tokens);
        let taken = if whole && available < want {
            0
        } else {
            want.min(available)
        };
        state.tokens -= i128::from(taken) * SCALE;
        taken
    }

    /// Reserves `bytes` ahead of time, going into debt; returns how long until the debt
    /// is paid off and the reserved bytes may go. They stay reserved until
    /// [`spend_reserved`](Self::spend_reserved) or [`unreserve`](Self::unreserve).
    fn reserve(&self, bytes: u64) -> Duration {
        let mut state = self.refilled();
        state.tokens -= i128::from(bytes) * SCALE;
        state.reserved += i128::from(bytes) * SCALE;
        if state.tokens >= 0 {
            return Duration::ZERO;
        }
        let rate = i128::from(self.rate);
        let nanos = (-state.tokens + rate - 1) / rate;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Pays for `bytes` already used, going into debt if the bucket holds fewer.
    fn charge(&self, bytes: u64) {
        let mut state = self.refilled();
        state.tokens -= i128::from(bytes) * SCALE;
    }

    /// How long until the bucket holds at least one whole byte again (zero if it does).
    fn wait_for_a_byte(&self) -> Duration {
        let state = self.refilled();
        let short = SCALE - state.tokens;
        if short <= 0 {
            return Duration::ZERO;
        }
        let rate = i128::from(self.rate);
        let nanos = (short + rate - 1) / rate;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Reserved bytes are being sent now: they no longer count against the bucket's
    /// size.
    fn spend_reserved(&self, bytes: u64) {
        let mut state = self.refilled();
        state.reserved = (state.reserved - i128::from(bytes) * SCALE).max(0);
    }

    /// Reserved bytes spent and not taken by the inner transport: reserved again.
    fn reserve_again(&self, bytes: u64) {
        let mut state = self.refilled();
        state.reserved += i128::from(bytes) * SCALE;
    }

    /// Reserved bytes that will not be sent (their socket closed): their tokens go back
    /// to the bucket.
    fn unreserve(&self, bytes: u64) {
        self.spend_reserved(bytes);
        self.refund(bytes);
    }

    /// Gives back tokens taken or reserved but not used.
    fn refund(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut state = self.refilled();
        // As a refill: never past the room the reservations leave of a burst.
        let room = (self.capacity() - state.reserved).max(0);
        let refunded = state.tokens.saturating_add(i128::from(bytes) * SCALE);
        state.tokens = state.tokens.max(refunded.min(room));
    }
}

fn whole_bytes(tokens: i128) -> u64 {
    u64::try_from(tokens.max(0) / SCALE).unwrap_or(u64::MAX)
}

/// One bucket for every socket of the table, or one per socket.
#[derive(Debug)]
enum Buckets {
    Shared(Arc<TokenBucket>),
    PerSocket {
        rate: u64,
        burst: u64,
        each: HashMap<Handle, Arc<TokenBucket>>,
    },
}

/// A filter that limits the bytes sent per second with a [`TokenBucket`], per socket
/// ([`Throttle::per_socket`]) or shared by every socket of every table made with the
/// same bucket ([`Throttle::shared`]).
///
/// When the bucket is empty, a `sendv` reserves its next chunk (at most the burst and
/// the per-call bound), answers would-block, and sends the owed `Ready(Writable)` once
/// the reservation is paid for; the socket's next `sendv` uses the reserved bytes.
/// Receiving is not limited unless asked for: [`receive_per_socket`](Self::receive_per_socket)
/// or [`receive_shared`](Self::receive_shared) give received bytes a bucket of their own.
/// A read then asks the inner transport for at most the bucket's burst (and the read's
/// own limit), pays for what arrived after the fact (a datagram is never cut, so it may
/// put the bucket into debt, as may several sockets reading from a shared bucket at
/// once), and while the bucket is empty or in debt answers
/// would-block and sends the owed `Ready(Readable)` when a byte's worth has refilled. The
/// socket stops reading meanwhile, so the kernel's buffers fill and TCP holds the peer
/// back: the peer is slowed, not just the delivery.
///
/// ```no_run
/// use std::sync::Arc;
/// use sockactor::filters::{Throttle, TokenBucket};
/// use sockactor::SocketFunctions;
///
/// # fn demo() {
/// // Two tables whose sockets share 1 MB/s between them.
/// let bucket = Arc::new(TokenBucket::new(1_000_000, 16 * 1024));
/// let uploads = Throttle::shared(bucket.clone()).wrap(SocketFunctions::system());
/// let backups = Throttle::shared(bucket).wrap(SocketFunctions::system());
/// # }
/// ```
#[derive(Debug)]
pub struct Throttle {
    buckets: Buckets,
    /// Buckets for received bytes (`None`: receiving is not limited).
    receive: Option<Buckets>,
    max_per_call: usize,
    /// Bytes reserved (and paid for by waiting) per handle, not sent yet.
    granted: HashMap<Handle, u64>,
}

impl Throttle {
    /// Each socket gets its own bucket of `burst` bytes refilled at `bytes_per_second`.
    pub fn per_socket(bytes_per_second: u64, burst: u64) -> Self {
        Self::with(Buckets::PerSocket {
            rate: bytes_per_second,
            burst,
            each: HashMap::new(),
        })
    }

    /// Every socket shares `bucket`, with the sockets of every other table made with it.
    pub fn shared(bucket: Arc<TokenBucket>) -> Self {
        Self::with(Buckets::Shared(bucket))
    }

    fn with(buckets: Buckets) -> Self {
        Throttle {
            buckets,
            receive: None,
            max_per_call: DEFAULT_MAX_PER_CALL,
            granted: HashMap::new(),
        }
    }

    /// Also limits received bytes: each socket gets a bucket of its own of `burst` bytes
    /// refilled at `bytes_per_second`, apart from the sending bucket.
    pub fn receive_per_socket(mut self, bytes_per_second: u64, burst: u64) -> Self {
        self.receive = Some(Buckets::PerSocket {
            rate: bytes_per_second,
            burst,
            each: HashMap::new(),
        });
        self
    }

    /// Also limits received bytes, sharing `bucket` between every socket that uses it
    /// for receiving (it may be the sending bucket too: then sent and received bytes
    /// share one rate).
    pub fn receive_shared(mut self, bucket: Arc<TokenBucket>) -> Self {
        self.receive = Some(Buckets::Shared(bucket));
        self
    }

    /// Hands the inner transport at most `n` bytes (at least 1) per `sendv` (default 64
    /// KiB).
    pub fn max_per_call(mut self, n: usize) -> Self {
        self.max_per_call = n;
        self
    }

    /// Starts the throttle over `inner` and returns the table to give sockets.
    pub fn wrap(self, inner: SocketFunctions) -> SocketFunctions {
        let max = self.max_per_call;
        FilterActor::wrap(self, inner, max)
    }

    fn bucket(&mut self, handle: Handle) -> Arc<TokenBucket> {
        self.buckets.of(handle)
    }
}

impl Buckets {
    /// The bucket `handle` uses (made on first use, per socket).
    fn of(&mut self, handle: Handle) -> Arc<TokenBucket> {
        match self {
            Buckets::Shared(bucket) => bucket.clone(),
            Buckets::PerSocket { rate, burst, each } => each
                .entry(handle)
                .or_insert_with(|| Arc::new(TokenBucket::new(*rate, *burst)))
                .clone(),
        }
    }

    /// Forgets `handle`'s own bucket, returning the bucket it used.
    fn forget(&mut self, handle: Handle) -> Option<Arc<TokenBucket>> {
        match self {
            Buckets::Shared(bucket) => Some(bucket.clone()),
            Buckets::PerSocket { each, .. } => each.remove(&handle),
        }
    }
}

/// Where the bytes of one `sendv` were paid from, to give back what was not sent.
#[derive(Clone, Copy, Debug)]
enum Paid {
    Grant,
    Bucket,
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn as_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl Filter for Throttle {
    fn name(&self) -> &'static str {
        "throttle"
    }

    fn sendv(
        &mut self,
        msg: SendV,
        link: &mut Link,
        ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, Sent> {
        let handle = msg.handle;
        let datagram = link.kind(handle) == Some(SocketKind::Datagram);
        let offered = as_u64(msg.len());
        let want = if datagram {
            offered
        } else {
            offered.min(as_u64(link.max_per_call()))
        };
        let bucket = self.bucket(handle);
        let granted = self.granted.get(&handle).copied().unwrap_or(0);
        let (allowed, paid) = if granted > 0 && (!datagram || granted >= want) {
            (want.min(granted), Paid::Grant)
        } else {
            (bucket.take(want, datagram), Paid::Bucket)
        };
        if allowed == 0 && want > 0 {
            let chunk = if datagram {
                want
            } else {
                want.min(bucket.burst())
            };
            let wait = bucket.reserve(chunk);
            *self.granted.entry(handle).or_default() += chunk;
            tracing::trace!(%handle, chunk, ?wait, "throttle: out of tokens");
            FilterActor::notify_later(ctx, handle, Readiness::Writable, wait);
            return Box::pin(actix::fut::ready(Ok(Sent::WouldBlock)));
        }
        if let Paid::Grant = paid {
            *self.granted.entry(handle).or_default() -= allowed;
            bucket.spend_reserved(allowed);
        }
        let sent = actix::fut::wrap_future(link.sendv(msg, as_usize(allowed)));
        Box::pin(sent.map(move |answer, act: &mut FilterActor<Self>, _| {
            let used = match answer {
                Ok(Sent::Accepted(n)) => as_u64(n).min(allowed),
                _ => 0,
            };
            let unused = allowed - used;
            match paid {
                // Closed meanwhile: the grant was settled, so the rest goes to the bucket.
                Paid::Grant => match act.filter_mut().granted.get_mut(&handle) {
                    Some(grant) => {
                        *grant += unused;
                        bucket.reserve_again(unused);
                    }
                    None => bucket.refund(unused),
                },
                Paid::Bucket => bucket.refund(unused),
            }
            answer
        }))
    }

    fn recvfrom(
        &mut self,
        msg: RecvFrom,
        link: &mut Link,
        ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, Received> {
        let Some(buckets) = self.receive.as_mut() else {
            return Box::pin(actix::fut::wrap_future(link.recvfrom(msg)));
        };
        let handle = msg.handle;
        let bucket = buckets.of(handle);
        let wait = bucket.wait_for_a_byte();
        if !wait.is_zero() {
            tracing::trace!(%handle, ?wait, "throttle: out of receive tokens");
            FilterActor::notify_later(ctx, handle, Readiness::Readable, wait);
            return Box::pin(actix::fut::ready(Ok(Received::WouldBlock)));
        }
        let datagram = link.kind(handle) == Some(SocketKind::Datagram);
        let msg = if datagram {
            msg
        } else {
            // A stream read is cut to the burst, so the debt stays under one burst.
            RecvFrom {
                handle,
                max_len: msg.max_len.min(as_usize(bucket.burst())).max(1),
            }
        };
        let read = actix::fut::wrap_future(link.recvfrom(msg));
        Box::pin(read.map(move |answer, _: &mut FilterActor<Self>, _| {
            if let Ok(Received::Data { bytes, .. } | Received::Truncated { bytes, .. }) = &answer {
                bucket.charge(as_u64(bytes.len()));
            }
            answer
        }))
    }

    fn closed(&mut self, handle: Handle) {
        let granted = self.granted.remove(&handle).unwrap_or(0);
        if let Some(bucket) = self.buckets.forget(handle) {
            bucket.unreserve(granted);
        }
        if let Some(receive) = self.receive.as_mut() {
            receive.forget(handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens given back while another socket's reservation is out fill only the room it
    /// leaves of the burst: the refund and the reservation never go out together past it.
    #[test]
    fn a_refund_during_a_reservation_stays_within_the_burst() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(async {
            let bucket = TokenBucket::new(1_000, 100);
            // One socket takes the whole burst (its inner transport is slow to answer).
            assert_eq!(bucket.take(100, false), 100);
            // Another reserves a burst's worth, and waits for it to be paid off.
            let wait = bucket.reserve(100);
            tokio::time::advance(wait).await;
            assert_eq!(
                bucket.available(),
                0,
                "paid off, the reservation fills the bucket"
            );
            // The first socket's transport took nothing: its tokens come back.
            bucket.refund(100);
            assert_eq!(
                bucket.available(),
                0,
                "the reserved 100 and the refund together would pass the burst"
            );
            // The reservation spent, the bucket refills as before.
            bucket.spend_reserved(100);
            tokio::time::advance(Duration::from_millis(100)).await;
            assert_eq!(bucket.available(), 100);
        });
    }
}
