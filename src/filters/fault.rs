//! [`FaultInjector`]: a seeded filter that makes a good transport behave like a bad one.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use actix::{ActorFutureExt, Context};
use bytes::Bytes;

use super::link::{Filter, FilterActor, FilterAnswer, Link};
use crate::error::TransportError;
use crate::messages::functions::{
    Address, Handle, Readiness, Received, RecvFrom, SendV, Sent, SocketKind,
};
use crate::SocketFunctions;

/// Default bound on the bytes handed to the inner transport per `sendv`.
const DEFAULT_MAX_PER_CALL: usize = 64 * 1024;

/// Which faults a [`FaultInjector`] injects, each with its own probability per call (0,
/// never, unless set; values outside 0..=1 are clamped, NaN is never).
///
/// ```
/// use std::time::Duration;
/// use sockactor::filters::Faults;
///
/// let faults = Faults::default()
///     .partial(0.5)
///     .would_block(0.2, Duration::from_millis(3))
///     .delay(0.1, Duration::from_millis(1))
///     .short_reads(0.5);
/// assert!(!faults.injects_resets());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    partial: f64,
    would_block: f64,
    would_block_for: Duration,
    delay: f64,
    delay_for: Duration,
    reset: f64,
    short_read: f64,
    read_would_block: f64,
    read_would_block_for: Duration,
    read_delay: f64,
    read_delay_for: Duration,
    read_reset: f64,
}

impl Faults {
    /// A `sendv` takes fewer bytes than offered (at least one), with probability `p`.
    pub fn partial(mut self, p: f64) -> Self {
        self.partial = p;
        self
    }

    /// A `sendv` would block with probability `p`; the owed `Ready(Writable)` follows
    /// after a random delay of at most `up_to` (tokio time).
    pub fn would_block(mut self, p: f64, up_to: Duration) -> Self {
        self.would_block = p;
        self.would_block_for = up_to;
        self
    }

    /// A `sendv` is answered only after a random delay of at most `up_to`, with
    /// probability `p`.
    pub fn delay(mut self, p: f64, up_to: Duration) -> Self {
        self.delay = p;
        self.delay_for = up_to;
        self
    }

    /// A `sendv` fails with `ConnectionReset` with probability `p`, and every later call
    /// on the handle fails the same way.
    pub fn reset(mut self, p: f64) -> Self {
        self.reset = p;
        self
    }

    /// A stream `recvfrom` returns fewer bytes than the inner transport read (at least
    /// one), with probability `p`; the injector holds the rest back for the next
    /// `recvfrom` (never more than one read's bytes per handle).
    pub fn short_reads(mut self, p: f64) -> Self {
        self.short_read = p;
        self
    }

    /// A `recvfrom` would block with probability `p`; the owed `Ready(Readable)` follows
    /// after a random delay of at most `up_to`.
    pub fn read_would_block(mut self, p: f64, up_to: Duration) -> Self {
        self.read_would_block = p;
        self.read_would_block_for = up_to;
        self
    }

    /// A `recvfrom` is answered only after a random delay of at most `up_to`, with
    /// probability `p`.
    pub fn read_delay(mut self, p: f64, up_to: Duration) -> Self {
        self.read_delay = p;
        self.read_delay_for = up_to;
        self
    }

    /// A `recvfrom` fails with `ConnectionReset` with probability `p`, and every later
    /// call on the handle fails the same way.
    pub fn read_reset(mut self, p: f64) -> Self {
        self.read_reset = p;
        self
    }

    /// Whether any reset (on either side) may be injected.
    pub fn injects_resets(&self) -> bool {
        self.reset > 0.0 || self.read_reset > 0.0
    }
}

type Rng = crate::rng::SplitMix64;

/// The injector's state for one handle: one generator per direction, so reads never
/// change which faults the writes get, and whether the handle was reset.
#[derive(Debug)]
struct HandleFaults {
    write: Rng,
    read: Rng,
    reset: bool,
    /// Bytes a short read held back, with their sender: the next `recvfrom` gets them.
    held: Option<(Bytes, Option<Address>)>,
}

impl HandleFaults {
    fn new(seed: u64, handle: Handle) -> Self {
        let base = seed ^ handle.0.wrapping_mul(0xA076_1D64_78BD_642F);
        HandleFaults {
            write: Rng::new(base),
            read: Rng::new(base ^ 0xE703_7ED1_A0B4_28DB),
            reset: false,
            held: None,
        }
    }
}

/// A filter that injects transport faults at random, from a seed: partial accepts,
/// would-blocks followed (later) by the owed readiness notice, delayed answers and
/// connection resets on the write side; short reads, would-blocks, delays and resets on
/// the read side. Each handle draws from its own generator, seeded from the seed and the
/// handle, so under paused tokio time the same seed gives the same run.
///
/// It never breaks the transport contract: a partial accept takes at least one byte, a
/// would-block is followed by exactly one `Ready`, a reset is permanent for the handle.
/// Datagrams are never cut (no partial accepts or short reads on datagram handles).
///
/// ```no_run
/// use std::time::Duration;
/// use sockactor::filters::{FaultInjector, Faults};
/// use sockactor::SocketFunctions;
///
/// # fn demo() {
/// let faults = Faults::default().partial(0.5).would_block(0.1, Duration::from_millis(5));
/// let functions = FaultInjector::new(42, faults).wrap(SocketFunctions::system());
/// # }
/// ```
#[derive(Debug)]
pub struct FaultInjector {
    seed: u64,
    faults: Faults,
    max_per_call: usize,
    handles: HashMap<Handle, HandleFaults>,
}

impl FaultInjector {
    /// An injector with these faults, drawing from `seed`.
    pub fn new(seed: u64, faults: Faults) -> Self {
        FaultInjector {
            seed,
            faults,
            max_per_call: DEFAULT_MAX_PER_CALL,
            handles: HashMap::new(),
        }
    }

    /// Hands the inner transport at most `n` bytes (at least 1) per `sendv` (default 64
    /// KiB).
    pub fn max_per_call(mut self, n: usize) -> Self {
        self.max_per_call = n;
        self
    }

    /// Starts the injector over `inner` and returns the table to give sockets.
    pub fn wrap(self, inner: SocketFunctions) -> SocketFunctions {
        let max = self.max_per_call;
        FilterActor::wrap(self, inner, max)
    }

    fn state(&mut self, handle: Handle) -> &mut HandleFaults {
        let seed = self.seed;
        self.handles
            .entry(handle)
            .or_insert_with(|| HandleFaults::new(seed, handle))
    }
}

/// Stream data for one `recvfrom` of at most `max_len` bytes: with `cut`, fewer
/// (at least one). What is not returned is held for the next `recvfrom`.
fn shorten(
    held: &mut Option<(Bytes, Option<Address>)>,
    mut bytes: Bytes,
    from: Option<Address>,
    max_len: usize,
    cut: Option<u64>,
) -> Received {
    let mut keep = bytes.len().min(max_len.max(1));
    if let Some(draw) = cut.filter(|_| keep > 1) {
        keep = 1 + (draw % (keep as u64 - 1)) as usize;
    }
    if keep < bytes.len() {
        let rest = bytes.split_off(keep);
        tracing::trace!(keep, held = rest.len(), "fault injector: short read");
        *held = Some((rest, from.clone()));
    }
    Received::Data { bytes, from }
}

/// A permanent reset, as answered by the injector.
fn reset() -> TransportError {
    io::ErrorKind::ConnectionReset.into()
}

fn answer<T: 'static>(value: Result<T, TransportError>) -> FilterAnswer<FaultInjector, T> {
    Box::pin(actix::fut::ready(value))
}

/// Runs `fut` after `delay` (none when `None`) on the filter's actor.
fn after<T: 'static>(
    delay: Option<Duration>,
    fut: impl std::future::Future<Output = Result<T, TransportError>> + 'static,
) -> FilterAnswer<FaultInjector, T> {
    let delayed = async move {
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        fut.await
    };
    Box::pin(actix::fut::wrap_future(delayed))
}

impl Filter for FaultInjector {
    fn name(&self) -> &'static str {
        "fault-injector"
    }

    fn sendv(
        &mut self,
        msg: SendV,
        link: &mut Link,
        ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, Sent> {
        let handle = msg.handle;
        let stream = link.kind(handle) == Some(SocketKind::Stream);
        let faults = self.faults;
        let state = self.state(handle);
        if state.reset {
            return answer(Err(reset()));
        }
        let rng = &mut state.write;
        if rng.chance(faults.reset) {
            state.reset = true;
            tracing::debug!(%handle, "fault injector: reset on sendv");
            return answer(Err(reset()));
        }
        if rng.chance(faults.would_block) {
            let wait = rng.duration_up_to(faults.would_block_for);
            tracing::trace!(%handle, ?wait, "fault injector: sendv would block");
            FilterActor::notify_later(ctx, handle, Readiness::Writable, wait);
            return answer(Ok(Sent::WouldBlock));
        }
        let offered = msg.len();
        let mut limit = offered;
        if stream && offered > 1 && rng.chance(faults.partial) {
            limit = rng.fewer_than(offered);
            tracing::trace!(%handle, offered, limit, "fault injector: partial accept");
        }
        let delay = rng
            .chance(faults.delay)
            .then(|| rng.duration_up_to(faults.delay_for));
        after(delay, link.sendv(msg, limit))
    }

    fn recvfrom(
        &mut self,
        msg: RecvFrom,
        link: &mut Link,
        ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, Received> {
        let handle = msg.handle;
        let stream = link.kind(handle) == Some(SocketKind::Stream);
        let faults = self.faults;
        let state = self.state(handle);
        if state.reset {
            return answer(Err(reset()));
        }
        let rng = &mut state.read;
        if rng.chance(faults.read_reset) {
            state.reset = true;
            tracing::debug!(%handle, "fault injector: reset on recvfrom");
            return answer(Err(reset()));
        }
        if rng.chance(faults.read_would_block) {
            let wait = rng.duration_up_to(faults.read_would_block_for);
            tracing::trace!(%handle, ?wait, "fault injector: recvfrom would block");
            FilterActor::notify_later(ctx, handle, Readiness::Readable, wait);
            return answer(Ok(Received::WouldBlock));
        }
        // Drawn whether or not the read turns out long enough to cut, so the draws
        // do not depend on what arrives.
        let cut = (stream && rng.chance(faults.short_read)).then(|| rng.next_u64());
        let delay = rng
            .chance(faults.read_delay)
            .then(|| rng.duration_up_to(faults.read_delay_for));
        if let Some((bytes, from)) = state.held.take() {
            let received = shorten(&mut state.held, bytes, from, msg.max_len, cut);
            return after(delay, std::future::ready(Ok(received)));
        }
        Box::pin(after(delay, link.recvfrom(msg)).map(
            move |answer, act: &mut FilterActor<Self>, _| {
                // Closed meanwhile: no state to hold bytes back in (nor to recreate).
                let Some(state) = act.filter_mut().handles.get_mut(&handle) else {
                    return answer;
                };
                answer.map(|received| match received {
                    Received::Data { bytes, from } => {
                        shorten(&mut state.held, bytes, from, usize::MAX, cut)
                    }
                    other => other,
                })
            },
        ))
    }

    fn closed(&mut self, handle: Handle) {
        self.handles.remove(&handle);
    }
}
