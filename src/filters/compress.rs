//! [`Compress`]: a streaming deflate filter for stream sockets, both ways.
//!
//! The write side encodes the caller's bytes into a bounded per-handle buffer of encoded
//! bytes (the *outbox*) and hands the inner transport the front of it; the answer counts
//! the caller's bytes taken into the compressor. The read side inflates what the inner
//! transport reads, at most a bounded number of plaintext bytes per call, and fails
//! with a typed error on corrupt input and on a stream that inflates past its bounds.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::Duration;

use actix::{ActorFutureExt, AsyncContext, Context};
use bytes::Bytes;
use flate2::{Compression, FlushCompress, FlushDecompress};
use tokio::sync::oneshot;

use super::link::{Filter, FilterActor, FilterAnswer, Link};
use crate::error::TransportError;
use crate::messages::functions::{
    Address, Handle, Readiness, Ready, Received, RecvFrom, SendV, Sent, SocketKind,
};
use crate::SocketFunctions;

/// Default bound on the caller's bytes compressed, and on the encoded bytes handed to the
/// inner transport, per `sendv`.
const DEFAULT_MAX_PER_CALL: usize = 64 * 1024;
/// Default bound on a handle's encoded bytes the inner transport has not taken yet.
const DEFAULT_MAX_BUFFERED: usize = 128 * 1024;
/// Default bound on the plaintext one `recvfrom` returns.
const DEFAULT_MAX_OUTPUT_PER_CALL: usize = 64 * 1024;
/// Default bound on plaintext bytes per compressed byte, over a connection.
const DEFAULT_MAX_RATIO: u64 = 256;
/// The ratio bound applies once this much plaintext came out: short messages of
/// repeated bytes compress far better than any sensible bound.
const RATIO_FLOOR: u64 = 64 * 1024;
/// Default wait, at close, for the inner transport to take the encoded bytes left.
const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The smallest outbox: room for some input's worst case.
const MIN_BUFFERED: usize = 256;
/// Room beyond the worst case of the input in each compressor call: more than the
/// compressor's own output buffer, so that no output waits inside it between calls.
const SCRATCH_SLACK: usize = 128 * 1024;

/// The most encoded bytes `n` input bytes ending in a sync flush can take: deflate falls
/// back to stored blocks (5 bytes of header per block) for data it cannot shrink; this is
/// generous (1/64 more, plus a flush marker and a partial block's bits).
fn worst_case(n: usize) -> usize {
    n + n / 64 + 64
}

/// The most input whose worst case fits in `room`.
fn input_fitting(room: usize) -> usize {
    let mut n = room.saturating_sub(64) / 65 * 64;
    while worst_case(n + 1) <= room {
        n += 1;
    }
    n
}

/// Why a [`Compress`] filter failed a handle. It reaches the socket as
/// [`TransportError::Io`] with kind [`io::ErrorKind::InvalidData`] (or `Other`, for a
/// compressor fault) whose inner error is this type, so it can be downcast:
///
/// ```
/// use sockactor::filters::CompressError;
/// use sockactor::TransportError;
///
/// fn is_bomb(error: &TransportError) -> bool {
///     matches!(
///         error,
///         TransportError::Io(e) if matches!(
///             e.get_ref().and_then(|inner| inner.downcast_ref::<CompressError>()),
///             Some(CompressError::TooLarge { .. } | CompressError::RatioExceeded { .. })
///         )
///     )
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// The peer's bytes are not a deflate stream.
    #[error("corrupt deflate stream from the peer: {0}")]
    Corrupt(String),
    /// The peer's stream inflated past [`Compress::max_total`].
    #[error("peer's stream inflated to more than {limit} bytes (decompression bomb?)")]
    TooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The peer's stream inflated past [`Compress::max_ratio`] plaintext bytes per
    /// compressed byte.
    #[error(
        "peer's stream inflated {consumed} bytes into {produced}, more than {ratio} times \
         (decompression bomb?)"
    )]
    RatioExceeded {
        /// Compressed bytes read.
        consumed: u64,
        /// Plaintext bytes they gave.
        produced: u64,
        /// The configured ratio.
        ratio: u64,
    },
    /// The compressor itself failed (a bug, not the peer's doing).
    #[error("compressor failed: {0}")]
    Compressor(String),
}

impl CompressError {
    fn into_transport(self) -> TransportError {
        let kind = match self {
            CompressError::Compressor(_) => io::ErrorKind::Other,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self).into()
    }
}

/// The write side of one handle: the compressor and the outbox of encoded bytes the
/// inner transport has not taken yet.
#[derive(Debug)]
struct Encoder {
    deflate: flate2::Compress,
    /// Encoded bytes, oldest first.
    outbox: VecDeque<Bytes>,
    buffered: usize,
    /// A `sendv` of the outbox is out on the inner transport.
    in_flight: bool,
    /// The inner transport answered would-block and owes a `Ready(Writable)`.
    blocked: bool,
    /// A `Ready(Writable)` came while a `sendv` was out (it may overtake its answer).
    woken: bool,
    /// The socket was answered would-block and is owed a `Ready(Writable)`.
    owed: bool,
    /// The inner transport failed: every later call fails the same way.
    failed: Option<TransportError>,
    /// The close waiting for the outbox to drain.
    closing: Option<oneshot::Sender<Result<(), TransportError>>>,
}

impl Encoder {
    fn new(level: Compression) -> Self {
        Encoder {
            deflate: flate2::Compress::new(level, false),
            outbox: VecDeque::new(),
            buffered: 0,
            in_flight: false,
            blocked: false,
            woken: false,
            owed: false,
            failed: None,
            closing: None,
        }
    }

    /// Whether the inner transport may be called now.
    fn idle(&self) -> bool {
        !self.in_flight && !self.blocked && self.failed.is_none()
    }

    /// Whether nothing is left to hand the inner transport.
    fn drained(&self) -> bool {
        self.buffered == 0
    }

    /// Compresses the front of `segments`, at most `limit` bytes and no more than can be
    /// sure to fit in `room` encoded bytes, ending with a sync flush; returns the caller's
    /// bytes consumed (0 when `room` is too small for any).
    fn encode(
        &mut self,
        segments: &[Bytes],
        limit: usize,
        room: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<usize, CompressError> {
        let limit = limit.min(input_fitting(room));
        if limit == 0 {
            return Ok(0);
        }
        // Room for everything the call can produce, and for the compressor's own output
        // buffer, so the sync flush completes within this call.
        let need = worst_case(limit) + SCRATCH_SLACK;
        if scratch.len() < need {
            scratch.resize(need, 0);
        }
        let scratch = &mut scratch[..need];
        let (mut produced, mut consumed) = (0, 0);
        for segment in segments {
            let take = segment.len().min(limit - consumed);
            let (used, made) = self.run(&segment[..take], &mut scratch[produced..], false)?;
            consumed += used;
            produced += made;
            if used < take {
                return Err(CompressError::Compressor(format!(
                    "took {used} of {take} bytes with room to spare"
                )));
            }
            if consumed == limit {
                break;
            }
        }
        let (_, made) = self.run(&[], &mut scratch[produced..], true)?;
        produced += made;
        if produced == scratch.len() {
            return Err(CompressError::Compressor(
                "a sync flush did not fit its bound".into(),
            ));
        }
        self.push(&scratch[..produced]);
        Ok(consumed)
    }

    /// One call into the compressor: (input consumed, output produced).
    fn run(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        sync: bool,
    ) -> Result<(usize, usize), CompressError> {
        let (before_in, before_out) = (self.deflate.total_in(), self.deflate.total_out());
        let flush = if sync {
            FlushCompress::Sync
        } else {
            FlushCompress::None
        };
        self.deflate
            .compress(input, output, flush)
            .map_err(|e| CompressError::Compressor(e.to_string()))?;
        let used = self.deflate.total_in() - before_in;
        let made = self.deflate.total_out() - before_out;
        Ok((as_usize(used), as_usize(made)))
    }

    fn push(&mut self, encoded: &[u8]) {
        if !encoded.is_empty() {
            self.buffered += encoded.len();
            self.outbox.push_back(Bytes::copy_from_slice(encoded));
        }
    }

    /// Drops the first `n` encoded bytes: the inner transport took them.
    fn taken(&mut self, mut n: usize) {
        self.buffered -= n.min(self.buffered);
        while n > 0 {
            let Some(front) = self.outbox.front_mut() else {
                break;
            };
            if front.len() > n {
                let _ = front.split_to(n);
                break;
            }
            n -= front.len();
            self.outbox.pop_front();
        }
    }
}

/// The read side of one handle: the decompressor and the compressed bytes read but not
/// inflated yet (at most one inner read's worth).
#[derive(Debug)]
struct Decoder {
    inflate: flate2::Decompress,
    input: Bytes,
    /// Where the held input came from.
    from: Option<Address>,
    /// The last call filled its output: the decompressor may hold more.
    more: bool,
    /// A fault found after plaintext that went out first: the next call's answer.
    corrupt: Option<CompressError>,
    failed: Option<TransportError>,
}

/// Bounds on what a peer's stream may inflate to.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    max_output_per_call: usize,
    max_ratio: u64,
    max_total: u64,
}

impl Decoder {
    fn new() -> Self {
        Decoder {
            inflate: flate2::Decompress::new(false),
            input: Bytes::new(),
            from: None,
            more: false,
            corrupt: None,
            failed: None,
        }
    }

    /// Whether plaintext may come out without reading more.
    fn has_pending(&self) -> bool {
        !self.input.is_empty() || self.more || self.corrupt.is_some()
    }

    /// Inflates held input into at most `max_len` plaintext bytes (and the per-call
    /// bound), checking the stream's bounds.
    fn inflate(&mut self, max_len: usize, bounds: Bounds) -> Result<Bytes, CompressError> {
        if let Some(e) = self.corrupt.take() {
            return Err(e);
        }
        let mut out = vec![0u8; max_len.min(bounds.max_output_per_call).max(1)];
        let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
        let status = self
            .inflate
            .decompress(&self.input, &mut out, FlushDecompress::None)
            .map_err(|e| CompressError::Corrupt(e.to_string()));
        let used = as_usize(self.inflate.total_in() - before_in);
        let made = as_usize(self.inflate.total_out() - before_out);
        if let Err(e) = status {
            if made == 0 {
                return Err(e);
            }
            // The plaintext before the fault goes out first; the fault comes next call.
            self.corrupt = Some(e);
        } else if used == 0 && made == 0 && !self.input.is_empty() {
            return Err(CompressError::Corrupt(
                "no progress: bytes after the end of the deflate stream".into(),
            ));
        }
        let _ = self.input.split_to(used.min(self.input.len()));
        self.more = made == out.len();
        self.check(bounds)?;
        out.truncate(made);
        Ok(Bytes::from(out))
    }

    fn check(&self, bounds: Bounds) -> Result<(), CompressError> {
        let (consumed, produced) = (self.inflate.total_in(), self.inflate.total_out());
        if produced > bounds.max_total {
            return Err(CompressError::TooLarge {
                limit: bounds.max_total,
            });
        }
        if produced > RATIO_FLOOR && produced > bounds.max_ratio.saturating_mul(consumed) {
            return Err(CompressError::RatioExceeded {
                consumed,
                produced,
                ratio: bounds.max_ratio,
            });
        }
        Ok(())
    }
}

fn as_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A streaming deflate filter for stream sockets (raw deflate, RFC 1951, no header).
///
/// **Writing**: each `sendv` compresses at most [`max_per_call`](Self::max_per_call) of
/// the caller's bytes and ends with a sync flush, so the peer can inflate everything
/// written so far without waiting for more. The encoded bytes go to a per-handle outbox
/// of at most [`max_buffered`](Self::max_buffered) bytes, whose front is handed to the
/// inner transport (at most `max_per_call` per call); the answer is
/// `Sent::Accepted(n)` with `n` the caller's bytes taken into the compressor. While the
/// outbox is full the answer is would-block, and the socket's `Ready(Writable)` follows
/// when the inner transport has taken some. Bytes the inner transport did not take are
/// sent when it is ready again, and before the handle's close goes on to it (waiting at
/// most [`close_timeout`](Self::close_timeout)). An inner error fails the handle's
/// writes for good.
///
/// **Reading**: each `recvfrom` returns at most
/// [`max_output_per_call`](Self::max_output_per_call) plaintext bytes (and its
/// `max_len`); compressed bytes not inflated yet wait for the next call. A peer's stream
/// that is not deflate, or that inflates to more than [`max_total`](Self::max_total)
/// bytes or more than [`max_ratio`](Self::max_ratio) bytes per compressed byte (checked
/// once 64 KiB came out), fails the handle's reads with a [`CompressError`] inside
/// [`TransportError::Io`] (`InvalidData`). Memory per handle stays within the outbox,
/// one inner read and one call's plaintext, whatever the peer sends.
///
/// Datagram handles are refused ([`TransportError::Unsupported`]): a datagram cannot be
/// cut and its reader would need each one compressed on its own.
///
/// ```no_run
/// use sockactor::filters::Compress;
/// use sockactor::SocketFunctions;
///
/// # fn demo() {
/// let functions = Compress::new()
///     .level(6)
///     .max_total(64 << 20)
///     .wrap(SocketFunctions::system());
/// # }
/// ```
#[derive(Debug)]
pub struct Compress {
    level: Compression,
    max_per_call: usize,
    max_buffered: usize,
    bounds: Bounds,
    close_timeout: Duration,
    encoders: HashMap<Handle, Encoder>,
    decoders: HashMap<Handle, Decoder>,
    /// Where each `sendv` compresses before its output is copied to the outbox.
    scratch: Vec<u8>,
}

impl Default for Compress {
    fn default() -> Self {
        Self::new()
    }
}

impl Compress {
    /// A filter at the default level (6), with the default bounds: 64 KiB per call each
    /// way, a 128 KiB outbox, a ratio of 256 and no total.
    pub fn new() -> Self {
        Compress {
            level: Compression::default(),
            max_per_call: DEFAULT_MAX_PER_CALL,
            max_buffered: DEFAULT_MAX_BUFFERED,
            bounds: Bounds {
                max_output_per_call: DEFAULT_MAX_OUTPUT_PER_CALL,
                max_ratio: DEFAULT_MAX_RATIO,
                max_total: u64::MAX,
            },
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            encoders: HashMap::new(),
            decoders: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// The compression level, 0 (store only) to 9 (smallest); higher values are 9.
    pub fn level(mut self, level: u32) -> Self {
        self.level = Compression::new(level.min(9));
        self
    }

    /// Compresses at most `n` of the caller's bytes (at least 1) per `sendv`, and hands
    /// the inner transport at most `n` encoded bytes per call (default 64 KiB).
    pub fn max_per_call(mut self, n: usize) -> Self {
        self.max_per_call = n.max(1);
        self
    }

    /// Holds at most `n` encoded bytes per handle that the inner transport has not
    /// taken (at least 256; default 128 KiB).
    pub fn max_buffered(mut self, n: usize) -> Self {
        self.max_buffered = n.max(MIN_BUFFERED);
        self
    }

    /// Returns at most `n` plaintext bytes (at least 1) per `recvfrom` (default 64 KiB).
    pub fn max_output_per_call(mut self, n: usize) -> Self {
        self.bounds.max_output_per_call = n.max(1);
        self
    }

    /// Fails a peer's stream that inflates to more than `ratio` (at least 1) plaintext
    /// bytes per compressed byte, once 64 KiB of plaintext came out (default 256).
    pub fn max_ratio(mut self, ratio: u64) -> Self {
        self.bounds.max_ratio = ratio.max(1);
        self
    }

    /// Fails a peer's stream that inflates to more than `n` bytes in all (default: no
    /// limit but the ratio).
    pub fn max_total(mut self, n: u64) -> Self {
        self.bounds.max_total = n;
        self
    }

    /// Waits at most this long (tokio time), when a handle closes, for the inner
    /// transport to take the encoded bytes left (default 10 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Starts the filter over `inner` and returns the table to give sockets.
    pub fn wrap(self, inner: SocketFunctions) -> SocketFunctions {
        let max = self.max_per_call;
        FilterActor::wrap(self, inner, max)
    }

    /// Room left in the handle's outbox.
    fn room(&self, encoder: &Encoder) -> usize {
        self.max_buffered.saturating_sub(encoder.buffered)
    }

    /// Hands the inner transport the front of the outbox, if it may be called and there
    /// is something to hand; the answer is handled on the actor, and the next call made,
    /// until the outbox is empty or the inner transport blocks or fails.
    fn pump(&mut self, handle: Handle, link: &Link, ctx: &mut Context<FilterActor<Self>>) {
        if let Some(flush) = self.flush(handle, link) {
            ctx.spawn(flush.map(move |answer, act: &mut FilterActor<Self>, ctx| {
                let (filter, link) = act.parts_mut();
                filter.flushed(handle, answer, link, ctx);
            }));
        }
    }

    /// Starts one inner `sendv` of the outbox's front, or `None` when there is nothing to
    /// do now.
    fn flush(
        &mut self,
        handle: Handle,
        link: &Link,
    ) -> Option<impl actix::ActorFuture<FilterActor<Self>, Output = Result<Sent, TransportError>>>
    {
        let encoder = self.encoders.get_mut(&handle)?;
        if !encoder.idle() || encoder.buffered == 0 {
            return None;
        }
        encoder.in_flight = true;
        encoder.woken = false;
        let msg = SendV {
            handle,
            segments: encoder.outbox.iter().cloned().collect(),
            to: None,
        };
        tracing::trace!(%handle, buffered = encoder.buffered, "compress: flushing");
        Some(actix::fut::wrap_future(link.sendv(msg, usize::MAX)))
    }

    /// The inner transport answered a `sendv` of the outbox: drop what it took, go on
    /// flushing, wake the socket if it is owed a `Ready` and there is room, finish a
    /// waiting close once drained.
    fn flushed(
        &mut self,
        handle: Handle,
        answer: Result<Sent, TransportError>,
        link: &Link,
        ctx: &mut Context<FilterActor<Self>>,
    ) {
        let Some(encoder) = self.encoders.get_mut(&handle) else {
            return;
        };
        encoder.in_flight = false;
        match answer {
            Ok(Sent::Accepted(n)) => encoder.taken(n),
            Ok(Sent::WouldBlock) if encoder.woken => {}
            Ok(Sent::WouldBlock) => encoder.blocked = true,
            Err(e) => {
                tracing::debug!(%handle, error = %e, "compress: inner transport failed");
                encoder.failed = Some(e);
            }
        }
        self.pump(handle, link, ctx);
        self.settle(handle, link);
    }

    /// Wakes an owed socket when its retry can make progress, and answers a waiting
    /// close when the outbox is drained (or failed).
    fn settle(&mut self, handle: Handle, link: &Link) {
        let room = match self.encoders.get(&handle) {
            Some(encoder) => self.room(encoder),
            None => return,
        };
        let Some(encoder) = self.encoders.get_mut(&handle) else {
            return;
        };
        if encoder.owed && (input_fitting(room) > 0 || encoder.failed.is_some()) {
            encoder.owed = false;
            link.notify(handle, Readiness::Writable);
        }
        let done = match &encoder.failed {
            Some(e) => Some(Err(e.clone())),
            None if encoder.drained() => Some(Ok(())),
            None => None,
        };
        if let Some(result) = done {
            if let Some(waiter) = encoder.closing.take() {
                let _ = waiter.send(result);
            }
        }
    }
}

fn answer<T: 'static>(value: Result<T, TransportError>) -> FilterAnswer<Compress, T> {
    Box::pin(actix::fut::ready(value))
}

fn unsupported<T: 'static>() -> FilterAnswer<Compress, T> {
    answer(Err(TransportError::Unsupported("compression of datagrams")))
}

impl Filter for Compress {
    fn name(&self) -> &'static str {
        "compress"
    }

    fn sendv(
        &mut self,
        msg: SendV,
        link: &mut Link,
        ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, Sent> {
        let handle = msg.handle;
        if link.kind(handle) == Some(SocketKind::Datagram) {
            return unsupported();
        }
        let limit = msg.len().min(self.max_per_call);
        let max_buffered = self.max_buffered;
        let level = self.level;
        let encoder = self
            .encoders
            .entry(handle)
            .or_insert_with(|| Encoder::new(level));
        if let Some(e) = &encoder.failed {
            return answer(Err(e.clone()));
        }
        let room = max_buffered.saturating_sub(encoder.buffered);
        let consumed = match encoder.encode(&msg.segments, limit, room, &mut self.scratch) {
            Ok(consumed) => consumed,
            Err(e) => {
                let e = e.into_transport();
                encoder.failed = Some(e.clone());
                return answer(Err(e));
            }
        };
        if consumed == 0 && limit > 0 {
            tracing::trace!(%handle, room, "compress: outbox full, would block");
            encoder.owed = true;
            self.pump(handle, link, ctx);
            return answer(Ok(Sent::WouldBlock));
        }
        let Some(flush) = self.flush(handle, link) else {
            return answer(Ok(Sent::Accepted(consumed)));
        };
        Box::pin(flush.map(move |sent, act: &mut FilterActor<Self>, ctx| {
            let (filter, link) = act.parts_mut();
            let failed = sent.as_ref().err().cloned();
            filter.flushed(handle, sent, link, ctx);
            match failed {
                Some(e) => Err(e),
                None => Ok(Sent::Accepted(consumed)),
            }
        }))
    }

    fn recvfrom(
        &mut self,
        msg: RecvFrom,
        link: &mut Link,
        _ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, Received> {
        let handle = msg.handle;
        if link.kind(handle) == Some(SocketKind::Datagram) {
            return unsupported();
        }
        let decoder = self.decoders.entry(handle).or_insert_with(Decoder::new);
        if let Some(e) = &decoder.failed {
            return answer(Err(e.clone()));
        }
        if decoder.has_pending() {
            let got = self.inflate(handle, msg.max_len, link);
            return answer(got);
        }
        let max_len = msg.max_len;
        Box::pin(actix::fut::wrap_future(link.recvfrom(msg)).map(
            move |received, act: &mut FilterActor<Self>, _| {
                let (filter, link) = act.parts_mut();
                match received? {
                    Received::Data { bytes, from } => {
                        if let Some(decoder) = filter.decoders.get_mut(&handle) {
                            decoder.input = bytes;
                            decoder.from = from;
                        }
                        filter.inflate(handle, max_len, link)
                    }
                    other => Ok(other),
                }
            },
        ))
    }

    fn closing(
        &mut self,
        handle: Handle,
        link: &mut Link,
        ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, ()> {
        let Some(encoder) = self.encoders.get_mut(&handle) else {
            return answer(Ok(()));
        };
        if encoder.failed.is_some() || (encoder.drained() && !encoder.in_flight) {
            return answer(Ok(()));
        }
        let (tx, rx) = oneshot::channel();
        encoder.closing = Some(tx);
        tracing::debug!(%handle, buffered = encoder.buffered, "compress: flushing before close");
        self.pump(handle, link, ctx);
        let timeout = self.close_timeout;
        let waited = async move {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Ok(()),
                Err(_) => Err(io::ErrorKind::TimedOut.into()),
            }
        };
        Box::pin(actix::fut::wrap_future(waited))
    }

    fn closed(&mut self, handle: Handle) {
        self.encoders.remove(&handle);
        self.decoders.remove(&handle);
    }

    fn inner_ready(&mut self, ready: Ready, link: &mut Link, ctx: &mut Context<FilterActor<Self>>) {
        let handle = ready.handle;
        let Some(encoder) = self
            .encoders
            .get_mut(&handle)
            .filter(|_| ready.readiness == Readiness::Writable)
        else {
            link.notify(handle, ready.readiness);
            return;
        };
        if encoder.in_flight {
            encoder.woken = true;
        } else if std::mem::take(&mut encoder.blocked) {
            self.pump(handle, link, ctx);
        }
    }
}

impl Compress {
    /// Inflates the handle's held input for one `recvfrom`: plaintext, or (when the
    /// decompressor needs more input first) would-block with the owed `Ready(Readable)`
    /// sent at once, so the socket's retry reads on.
    fn inflate(
        &mut self,
        handle: Handle,
        max_len: usize,
        link: &Link,
    ) -> Result<Received, TransportError> {
        let bounds = self.bounds;
        let Some(decoder) = self.decoders.get_mut(&handle) else {
            return Err(TransportError::UnknownHandle(handle));
        };
        match decoder.inflate(max_len, bounds) {
            Ok(bytes) if bytes.is_empty() => {
                link.notify(handle, Readiness::Readable);
                Ok(Received::WouldBlock)
            }
            Ok(bytes) => Ok(Received::Data {
                bytes,
                from: decoder.from.clone(),
            }),
            Err(e) => {
                tracing::debug!(%handle, error = %e, "compress: peer's stream refused");
                let e = e.into_transport();
                decoder.failed = Some(e.clone());
                decoder.input = Bytes::new();
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        (0..len).map(|_| rng.next_u64() as u8).collect()
    }

    #[test]
    fn no_encode_takes_more_room_than_its_worst_case() {
        let mut scratch = Vec::new();
        for level in 0..=9 {
            let mut encoder = Encoder::new(Compression::new(level));
            for (i, len) in [1usize, 2, 63, 100, 5000, 65_536, 70_000, 3]
                .iter()
                .enumerate()
            {
                let data = Bytes::from(noise(*len, u64::from(level) * 100 + i as u64));
                let before = encoder.buffered;
                let room = worst_case(*len);
                let taken = encoder
                    .encode(&[data], *len, room, &mut scratch)
                    .expect("encode");
                assert_eq!(
                    taken, *len,
                    "level {level}: a worst case's room takes it all"
                );
                let made = encoder.buffered - before;
                assert!(
                    made <= room,
                    "level {level}: {len} bytes took {made}, bound {room}"
                );
            }
        }
    }

    #[test]
    fn the_input_fitting_a_room_is_the_most_whose_worst_case_fits() {
        for room in [0usize, 1, 64, 65, 66, 129, 256, 1000, 131_072] {
            let n = input_fitting(room);
            assert!(n == 0 || worst_case(n) <= room, "room {room}: {n}");
            assert!(worst_case(n + 1) > room, "room {room}: {n} is not the most");
        }
    }
}
