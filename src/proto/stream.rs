//! [`StreamCore`]: every decision one stream socket makes, with no actors, no I/O and no
//! clock. See the [module docs](super) for the calling order.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::flow::{ReceiveFlow, ReceivePoll, SendFlow, SendPoll};
use super::limits::{Due, LimitClock, Now};
pub(crate) use super::queue::Token;
use super::queue::{
    ChunkRequest, InPlaceTransmit, QueueConfig, Transmit, TurnCap, WriteQueue, Written,
};
use crate::batch::IoBatch;
use crate::error::{DecodeError, TransportError, WriteError};
use crate::types::{IdleKind, Interest, PeerLimits, Readiness, Sent, SocketState};

/// What [`StreamCore`] needs to know about its socket, fixed when it is made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamSettings {
    /// Queue limits (the watermarks are the admission gate's, not the core's).
    pub(crate) queue: QueueConfig,
    /// Most bytes asked of one read.
    pub(crate) read_chunk: usize,
    /// Most writes that may wait for room at once.
    pub(crate) max_waiting_writes: usize,
    /// The read window: most deliveries, and bytes, unacknowledged at once.
    pub(crate) max_deliveries: u32,
    /// See `max_deliveries`.
    pub(crate) max_window_bytes: usize,
    /// How long a closing socket reads on for the peer's EOF after shutting down its
    /// sending half (zero: not at all).
    pub(crate) close_linger: Duration,
    /// How long a graceful close may take to drain before it becomes an abort.
    pub(crate) drain_timeout: Option<Duration>,
    /// Close gracefully when the stream is rejected by the frame decoder.
    pub(crate) close_on_decode_error: bool,
    /// Close gracefully at the peer's EOF (else keep the half-open socket writable).
    pub(crate) close_on_eof: bool,
    /// Ask a Flusher before flushing (else flush as soon as data is queued).
    pub(crate) deferred: bool,
    /// Read (someone subscribes to what comes in).
    pub(crate) reading: bool,
    /// Report interest changes.
    pub(crate) watch_interest: bool,
    /// The transport can shut down the sending half alone (then a graceful close does,
    /// and may linger reading).
    pub(crate) shutdown: bool,
}

/// What the core keeps of its [`StreamSettings`], compactly: every socket, idle or not,
/// holds one.
#[derive(Clone, Copy, Debug)]
struct Settings {
    /// At most 4 GiB: a flow counts its turn in a `u32`.
    max_bytes_per_turn: u32,
    turn_cap: TurnCap,
    max_window_bytes: usize,
    /// `close_linger` in nanoseconds (at most 584 years).
    close_linger: u64,
    /// `drain_timeout` in nanoseconds; `u64::MAX`: none.
    drain_timeout: u64,
    read_chunk: u32,
    max_waiting_writes: u32,
    max_deliveries: u32,
    close_on_decode_error: bool,
    close_on_eof: bool,
    watch_interest: bool,
    shutdown: bool,
    /// The flush policy as set: deferred (a Flusher asked), or immediate.
    deferred: bool,
}

impl Settings {
    fn of(s: &StreamSettings) -> Self {
        let small = |n: usize| u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        Settings {
            max_bytes_per_turn: u32::try_from(s.queue.max_bytes_per_turn).unwrap_or(u32::MAX),
            turn_cap: s.queue.turn_cap,
            max_window_bytes: s.max_window_bytes.max(1),
            close_linger: nanos(s.close_linger),
            drain_timeout: s.drain_timeout.map_or(u64::MAX, nanos),
            read_chunk: small(s.read_chunk),
            max_waiting_writes: u32::try_from(s.max_waiting_writes).unwrap_or(u32::MAX),
            max_deliveries: s.max_deliveries.max(1),
            close_on_decode_error: s.close_on_decode_error,
            close_on_eof: s.close_on_eof,
            watch_interest: s.watch_interest,
            shutdown: s.shutdown,
            deferred: s.deferred,
        }
    }
}

/// How long a closed socket waits for the answer to a transmit that was out when it
/// closed (its writes are answered with what that answer says went out). A transport
/// that never answers holds them no longer: they are answered as if the call had failed
/// (none of its bytes counted as sent).
pub(crate) const FLIGHT_GRACE: Duration = Duration::from_secs(10);

/// A duration in nanoseconds, short of `u64::MAX` (which stands for none).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).map_or(u64::MAX - 1, |n| n.min(u64::MAX - 1))
}

impl Settings {
    fn close_linger(&self) -> Duration {
        Duration::from_nanos(self.close_linger)
    }

    fn drain_timeout(&self) -> Option<Duration> {
        (self.drain_timeout != u64::MAX).then(|| Duration::from_nanos(self.drain_timeout))
    }
}

/// Writes waiting for room ([`StreamCore::handle_wait`]), boxed: most sockets never have
/// any.
#[derive(Debug)]
// Boxed on purpose: an empty `VecDeque` is 32 bytes in every socket's task, the box 8.
#[allow(clippy::box_collection)]
struct Waitlist<T>(Option<Box<VecDeque<Waiting<T>>>>);

impl<T> Waitlist<T> {
    fn new() -> Self {
        Waitlist(None)
    }

    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|w| w.is_empty())
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |w| w.len())
    }

    fn front(&self) -> Option<&Waiting<T>> {
        self.0.as_ref()?.front()
    }

    fn back_mut(&mut self) -> Option<&mut Waiting<T>> {
        self.0.as_mut()?.back_mut()
    }

    fn push_back(&mut self, w: Waiting<T>) {
        self.0.get_or_insert_with(Box::default).push_back(w);
    }

    fn pop_front(&mut self) -> Option<Waiting<T>> {
        self.0.as_mut()?.pop_front()
    }

    fn iter(&self) -> impl Iterator<Item = &Waiting<T>> {
        self.0.iter().flat_map(|w| w.iter())
    }

    fn remove(&mut self, index: usize) -> Option<Waiting<T>> {
        self.0.as_mut()?.remove(index)
    }
}

/// One direction, for [`IoAction::Yield`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// The sending side.
    Send,
    /// The receiving side.
    Receive,
}

/// The next thing the driver must do with the transport, from [`StreamCore::poll_io`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IoAction {
    /// Ask the Flusher for a flush (a `PendingWrite`); answer with `handle_flush` when
    /// its `Flush` comes, or `handle_flusher_gone`.
    RequestFlush,
    /// Hand the transport the next transmit of at most `budget` bytes
    /// ([`StreamCore::poll_transmit`] or [`StreamCore::poll_transmit_in_place`]), then
    /// answer with `handle_sent`, or `handle_send_pending` when the answer comes later.
    Transmit {
        /// Most bytes in this transmit.
        budget: usize,
    },
    /// Let the other tasks of the thread run once, then `handle_yielded`.
    Yield(Direction),
    /// Wait for the transport to become ready, then `handle_ready`. (A transport that
    /// sends readiness notices on its own needs nothing done here.)
    Wait(Readiness),
    /// Read at most `max` bytes, then `handle_read` (or `handle_read_pending`).
    Read {
        /// Most bytes to read.
        max: usize,
    },
    /// Shut down the sending half, then `handle_shutdown`.
    ShutdownWrite,
    /// Close the transport handle. The last action: nothing else follows.
    CloseHandle,
}

/// What a read found, for [`StreamCore::handle_read`].
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    /// This many bytes (already delivered, or buffered for the decoder, by the driver).
    Data(usize),
    /// The peer closed its sending half.
    Eof,
    /// Nothing to read now.
    WouldBlock,
    /// Reading failed; the socket closes.
    Failed(TransportError),
}

/// What the driver must tell others, from [`StreamCore::poll_event`].
#[derive(Debug)]
pub(crate) enum Event<T> {
    /// A write's one answer.
    Answer(T, Result<Written, WriteError>),
    /// Unsent bytes left the queue (sent, cancelled or failed): give them back to the
    /// admission gate.
    Released(usize),
    /// Writes that waited for room entered the queue unadmitted (a graceful close takes
    /// them all): charge the admission gate with their bytes.
    Charged(usize),
    /// What the socket waits for changed (only when watching interest).
    Interest(Interest),
    /// The socket's state changed.
    State(SocketState),
    /// The peer closed its sending half.
    Eof,
    /// Reading failed (the socket is closing with this error).
    ReadFailed(TransportError),
    /// The frame decoder rejected the stream.
    DecodeFailed(DecodeError),
    /// An idle limit passed (a graceful close follows with `close_when_idle`).
    Idle(IdleKind, Duration),
    /// The peer took nothing for the send timeout, with this many bytes queued: the
    /// writes are answered `TimedOut` and the socket closes.
    SendTimedOut(Duration, usize),
    /// The handle is closed; the transport error that closed it, if any.
    Closed(Option<TransportError>),
}

/// Why the socket no longer takes writes.
#[derive(Clone, Debug)]
pub(crate) enum Shut {
    /// Closing gracefully, or closed: `WriteError::Closed`.
    Closed,
    /// Aborted: queued writes end with `WriteError::Aborted`.
    Aborted,
    /// A transport error closed it: `WriteError::Transport`.
    Failed(TransportError),
    /// The peer took nothing for the send timeout: `WriteError::TimedOut`.
    TimedOut(Duration),
}

impl Shut {
    /// The answer for a write that was queued when the socket shut.
    pub(crate) fn error(&self, bytes_sent: usize, len: usize) -> WriteError {
        match self {
            Shut::Closed => WriteError::Closed { bytes_sent, len },
            Shut::Aborted => WriteError::Aborted { bytes_sent, len },
            Shut::Failed(source) => WriteError::Transport {
                bytes_sent,
                len,
                source: source.clone(),
            },
            Shut::TimedOut(after) => WriteError::TimedOut {
                bytes_sent,
                len,
                after: *after,
            },
        }
    }

    /// The answer for a write that arrives after the socket shut.
    pub(crate) fn refusal(&self, len: usize) -> WriteError {
        match self {
            Shut::Closed | Shut::Aborted | Shut::TimedOut(_) => {
                WriteError::Closed { bytes_sent: 0, len }
            }
            Shut::Failed(_) => self.error(0, len),
        }
    }
}

/// A socket's counters since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketStats {
    /// Writes accepted into the queue.
    pub writes: u64,
    /// Writes completed.
    pub writes_completed: u64,
    /// Writes that ended in an error (including refused ones).
    pub writes_failed: u64,
    /// Bytes accepted by the transport.
    pub bytes_sent: u64,
    /// `sendv` calls made (in place: `writev` and `sendfile` calls).
    pub sendv_calls: u64,
    /// Of those, `sendfile` calls: file ranges sent without entering this process.
    pub sendfile_calls: u64,
    /// Bytes of file ranges read into memory to be sent (where `sendfile` could not be
    /// used: a filter or other message-path transport, or a file that does not support it).
    pub file_bytes_read: u64,
    /// `sendv` calls answered with would-block.
    pub would_blocks: u64,
    /// Flushes requested from the Flusher.
    pub pending_writes: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Unsent bytes queued right now.
    pub queued_bytes: u64,
    /// Writes queued right now (waiting for room included).
    pub queued_writes: u64,
    /// Deliveries (chunks or frames) the subscriber holds unacknowledged right now.
    pub unacked_deliveries: u64,
    /// Stream bytes those deliveries stand for.
    pub unacked_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Open,
    /// Closing gracefully: no new writes, the queue draining.
    Draining,
    /// Drained: the sending half is being shut down.
    ShuttingDown,
    /// The sending half is shut down: reading until the peer's EOF or the linger time.
    Lingering,
    Closed,
}

/// A write waiting for room ([`StreamCore::handle_wait`]).
#[derive(Debug)]
struct Waiting<T> {
    batch: IoBatch,
    tag: Option<u64>,
    token: T,
    /// Already admitted (charged to the gate) before it had to wait behind others.
    charged: bool,
}

/// A refused write, handed back with its token.
#[derive(Debug)]
pub(crate) struct Refused<T> {
    /// Why.
    pub(crate) error: WriteError,
    /// The caller's token.
    pub(crate) token: T,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    writes: u64,
    writes_completed: u64,
    writes_failed: u64,
    bytes_sent: u64,
    sendv_calls: u64,
    sendfile_calls: u64,
    would_blocks: u64,
    pending_writes: u64,
    bytes_received: u64,
}

/// One stream socket, sans I/O: the write queue and writes waiting for room, the flush
/// state and its fairness budget, the read state and its window, the lifecycle with its
/// drain and linger deadlines, and interest changes. `T` is the driver's per-write token
/// (where the write's answer goes).
#[derive(Debug)]
pub(crate) struct StreamCore<T> {
    queue: WriteQueue<T>,
    waiting: Waitlist<T>,
    settings: Settings,
    send: SendFlow,
    receive: ReceiveFlow,
    paused: bool,
    /// Deliveries and bytes the subscriber has not acknowledged.
    unacked: (u32, usize),
    life: Life,
    /// Why the socket shut (boxed: open sockets, most of them, have none).
    shut: Option<Box<Shut>>,
    /// The socket shut while a transmit was out: its answer ends the writes it carried.
    end_after_flight: bool,
    deadline: Option<Instant>,
    /// The idle, frame and send limits (boxed: most sockets have none).
    limits: Option<Box<LimitClock>>,
    /// Met a would-block since the queue was last empty: the OUT of the interest.
    out_waiting: bool,
    /// Other sockets of the driver's thread have data to send (see `handle_contention`).
    contended: bool,
    interest: Option<Interest>,
    shutdown: bool,
    close: bool,
    /// File ranges go out with `sendfile` (set by the driver; cleared when a file
    /// cannot be sent that way).
    sendfile: bool,
    events: VecDeque<Event<T>>,
    counters: Counters,
}

/// Emits a write's answer, unless it is a silent token's success.
fn answer<T: Token>(
    events: &mut VecDeque<Event<T>>,
    token: T,
    result: Result<Written, WriteError>,
) {
    if !(result.is_ok() && token.silent()) {
        events.push_back(Event::Answer(token, result));
    }
}

impl<T: Token> StreamCore<T> {
    /// A new, open socket.
    pub(crate) fn new(settings: StreamSettings) -> Self {
        let mut settings = settings;
        settings.queue = settings.queue.sanitized();
        settings.read_chunk = settings.read_chunk.max(1);
        settings.max_deliveries = settings.max_deliveries.max(1);
        settings.max_window_bytes = settings.max_window_bytes.max(1);
        StreamCore {
            queue: WriteQueue::new(settings.queue),
            waiting: Waitlist::new(),
            send: SendFlow::new(settings.deferred),
            receive: ReceiveFlow::new(settings.reading),
            paused: false,
            unacked: (0, 0),
            life: Life::Open,
            shut: None,
            end_after_flight: false,
            deadline: None,
            limits: None,
            out_waiting: false,
            contended: false,
            interest: None,
            shutdown: false,
            close: false,
            sendfile: false,
            events: VecDeque::new(),
            counters: Counters::default(),
            settings: Settings::of(&settings),
        }
    }

    // ---- state the driver asks about ----

    /// Whether the socket still takes writes.
    pub(crate) fn is_open(&self) -> bool {
        self.life == Life::Open
    }

    /// Whether the handle is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.life == Life::Closed
    }

    /// Why writes are refused, if they are.
    pub(crate) fn shut(&self) -> Option<&Shut> {
        self.shut.as_deref()
    }

    /// Whether reading has ended for good.
    pub(crate) fn reading_done(&self) -> bool {
        self.receive.is_done()
    }

    /// Whether `poll_io` or `poll_event` has something now. After a write, `false`
    /// means the write only joined the queue (a flush, transmit or wait already under
    /// way will carry it): the driver may skip its loop.
    pub(crate) fn wants_drive(&self) -> bool {
        !self.events.is_empty() || self.close || self.life == Life::Closed || self.send.wants_poll()
    }

    /// Whether the socket has bytes to send and is not waiting for the transport to be
    /// writable: a sender competing for its thread (see `handle_contention`).
    pub(crate) fn is_sending(&self) -> bool {
        self.send.is_active() && self.queue.queued_bytes() > 0
    }

    /// Whether reading is held for the window or a pause.
    pub(crate) fn read_held(&self) -> bool {
        self.receive.is_held()
    }

    /// Whether reading is held back now, for the limits: paused, the window full, or
    /// the receive side holding.
    fn reading_held_back(&self) -> bool {
        self.paused || self.receive.is_held() || !self.window_open()
    }

    /// Whether the limits' clock has yet to learn that reading was held back or freed:
    /// then call [`handle_read_hold`](Self::handle_read_hold) with the time.
    pub(crate) fn read_hold_moved(&self) -> bool {
        self.limits
            .as_ref()
            .is_some_and(|limits| limits.is_read_held() != self.reading_held_back())
    }

    /// Tells the limits' clock whether reading is held back as of `now`: the time it is
    /// held counts towards neither the read idle limits nor the frame timeout.
    pub(crate) fn handle_read_hold(&mut self, now: Instant) {
        let held = self.reading_held_back();
        if let Some(limits) = &mut self.limits {
            limits.read_held(held, now);
        }
    }

    /// Whether the read window has room for another delivery.
    pub(crate) fn window_open(&self) -> bool {
        self.unacked.0 < self.settings.max_deliveries
            && self.unacked.1 < self.settings.max_window_bytes
    }

    /// Whether writes wait for room: a new write must wait behind them.
    pub(crate) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Whether another write may wait for room.
    pub(crate) fn can_wait(&self) -> bool {
        self.waiting.len() < self.settings.max_waiting_writes as usize
    }

    /// The first write waiting for room: its length, and whether it is already admitted.
    pub(crate) fn waiting_front(&self) -> Option<(usize, bool)> {
        self.waiting.front().map(|w| (w.batch.len(), w.charged))
    }

    /// Whether writes wait for room that nothing will free: nothing is queued or out, so
    /// the bytes the gate holds are those of writes waiting behind the first (admitted
    /// by writers on their way), and the first must go in regardless.
    pub(crate) fn waiting_stalled(&self) -> bool {
        !self.waiting.is_empty() && self.queue.is_empty() && !self.queue.in_flight()
    }

    /// Whether writes are queued or waiting, or a transmit is out.
    pub(crate) fn has_writes(&self) -> bool {
        !self.queue.is_empty() || !self.waiting.is_empty() || self.queue.in_flight()
    }

    /// Whether file ranges go out with `sendfile`.
    pub(crate) fn sendfile(&self) -> bool {
        self.sendfile
    }

    /// The immediate flush policy was set (no Flusher asked): a driver sending by message
    /// handles nothing else until each transmit is answered.
    pub(crate) fn is_immediate(&self) -> bool {
        !self.settings.deferred
    }

    /// The token of the write queued last (see `WriteQueue::last_token_mut`), or of the
    /// last one waiting for room.
    pub(crate) fn last_token_mut(&mut self) -> Option<&mut T> {
        match self.waiting.back_mut() {
            Some(w) => Some(&mut w.token),
            None => self.queue.last_token_mut(),
        }
    }

    /// The write queued last (if it is in the queue, not waiting for room) turned out
    /// silent after it was queued (its driver learned only then that nobody listens):
    /// if it joined the run before it provisionally (see `WriteQueue::push`), it stays.
    pub(crate) fn handle_silenced_last(&mut self) {
        if self.waiting.is_empty() {
            self.queue.join_silenced_last();
        }
    }

    /// The write queued last (if it is in the queue, not waiting for room) counts its
    /// latency from `at`, if it had no start yet (its driver learned only after queuing
    /// it that someone listens).
    pub(crate) fn stamp_last(&mut self, at: Instant) {
        if self.waiting.is_empty() {
            self.queue.stamp_last(at);
        }
    }

    /// The counters, with the queue's and window's sizes now.
    pub(crate) fn stats(&self) -> SocketStats {
        let c = &self.counters;
        SocketStats {
            writes: c.writes,
            writes_completed: c.writes_completed,
            writes_failed: c.writes_failed,
            bytes_sent: c.bytes_sent,
            sendv_calls: c.sendv_calls,
            sendfile_calls: c.sendfile_calls,
            file_bytes_read: self.queue.file_bytes_read(),
            would_blocks: c.would_blocks,
            pending_writes: c.pending_writes,
            bytes_received: c.bytes_received,
            queued_bytes: self.queue.queued_bytes() as u64,
            queued_writes: (self.queue.len() + self.waiting.len()) as u64,
            unacked_deliveries: u64::from(self.unacked.0),
            unacked_bytes: self.unacked.1 as u64,
        }
    }

    // ---- inputs: writes ----

    /// Sets the idle, frame and send limits, starting now (the socket opened).
    pub(crate) fn set_limits(&mut self, limits: PeerLimits, now: Instant) {
        self.limits = limits.any().then(|| Box::new(LimitClock::new(limits, now)));
    }

    /// Lets file ranges go out with `sendfile` (the driver's transport can).
    pub(crate) fn set_sendfile(&mut self, sendfile: bool) {
        self.sendfile = sendfile;
    }

    /// A write, already admitted by the gate. Refused (token back, and its bytes to
    /// release) once the socket no longer takes writes.
    pub(crate) fn handle_write(
        &mut self,
        batch: IoBatch,
        tag: Option<u64>,
        token: T,
        now: Option<Instant>,
    ) -> Result<(), Refused<T>> {
        if let Some(shut) = &self.shut {
            self.counters.writes_failed += 1;
            return Err(Refused {
                error: shut.refusal(batch.len()),
                token,
            });
        }
        self.enqueue(batch, tag, token, now);
        Ok(())
    }

    /// A write that may not be queued yet (the gate refused it, or writes wait ahead of
    /// it): it waits for room, in order, or is refused with the error `full` makes when
    /// too many wait already (or the socket no longer takes writes).
    pub(crate) fn handle_wait(
        &mut self,
        batch: IoBatch,
        tag: Option<u64>,
        token: T,
        charged: bool,
        full: impl FnOnce(IoBatch) -> WriteError,
    ) -> Result<(), Refused<T>> {
        let error = match &self.shut {
            Some(shut) => Some(shut.refusal(batch.len())),
            None if !self.can_wait() && !charged => Some(full(batch.clone())),
            None => None,
        };
        if let Some(error) = error {
            self.counters.writes_failed += 1;
            return Err(Refused { error, token });
        }
        self.waiting.push_back(Waiting {
            batch,
            tag,
            token,
            charged,
        });
        Ok(())
    }

    /// The first waiting write was admitted by the gate (or was already): it joins the
    /// queue.
    pub(crate) fn admit_waiting_front(&mut self, now: Instant) {
        if let Some(w) = self.waiting.pop_front() {
            self.enqueue(w.batch, w.tag, w.token, Some(now));
        }
    }

    fn enqueue(&mut self, batch: IoBatch, tag: Option<u64>, token: T, now: Option<Instant>) {
        self.counters.writes += 1;
        let events = &mut self.events;
        let counters = &mut self.counters;
        self.queue.push(batch, tag, token, now, |token, result| {
            counters.writes_completed += 1;
            answer(events, token, result);
        });
        if !self.queue.is_empty() && self.send.start() {
            self.counters.pending_writes += 1;
        }
    }

    /// A write was refused before it reached the core (by the admission gate).
    pub(crate) fn handle_refused(&mut self) {
        self.counters.writes_failed += 1;
    }

    /// Whether other sockets of the driver's thread have data to send now. With
    /// [`TurnCap::WhenContended`] a flush turn is capped at `max_bytes_per_turn` only
    /// while they do; alone, a socket hands the transport all it has.
    pub(crate) fn handle_contention(&mut self, contended: bool) {
        self.contended = contended;
    }

    /// The Flusher's `Flush`: send what is queued.
    pub(crate) fn handle_flush(&mut self) {
        self.send.flush();
    }

    /// The Flusher is gone: flush at once from now on.
    pub(crate) fn handle_flusher_gone(&mut self) {
        self.counters.pending_writes = self.counters.pending_writes.saturating_sub(1);
        self.send.flusher_gone();
    }

    /// How many flushes were asked so far, while the last one's `Flush` is still to come
    /// (`None` when none is awaited): what the driver's watch of a Flusher keys on.
    pub(crate) fn awaited_flush(&self) -> Option<u64> {
        self.send
            .is_requested()
            .then_some(self.counters.pending_writes)
    }

    /// The Flusher stopped with this socket's request unhandled: no `Flush` will come
    /// ([`handle_flusher_gone`](Self::handle_flusher_gone), the request counted as made).
    pub(crate) fn handle_flusher_lost(&mut self) {
        self.send.flusher_gone();
    }

    /// Takes back a write that has not started; `None` if no such write has this tag.
    /// Its answer is [`WriteError::Cancelled`].
    pub(crate) fn handle_cancel(&mut self, tag: u64, now: Instant) -> Option<IoBatch> {
        let events = &mut self.events;
        let counters = &mut self.counters;
        let batch = match self.queue.cancel(tag, now, |token, result| {
            match &result {
                Ok(_) => counters.writes_completed += 1,
                Err(_) => counters.writes_failed += 1,
            }
            answer(events, token, result);
        }) {
            Some(batch) => {
                self.events.push_back(Event::Released(batch.len()));
                batch
            }
            None => {
                let index = self.waiting.iter().position(|w| w.tag == Some(tag))?;
                let w = self.waiting.remove(index)?;
                self.counters.writes_failed += 1;
                self.events
                    .push_back(Event::Answer(w.token, Err(WriteError::Cancelled)));
                if w.charged {
                    self.events.push_back(Event::Released(w.batch.len()));
                }
                w.batch
            }
        };
        if self.queue.is_empty() && !self.queue.in_flight() && self.waiting.is_empty() {
            // Nothing is left to send (a blocked flush included). A flush asked of the
            // Flusher stays asked: its `Flush` is still to come, and a socket has one
            // request out at a time (that `Flush` finds nothing, or the next write).
            if self.send.is_requested() {
                self.maybe_finish_drain();
            } else if !self.send.is_idle() {
                self.send.idle();
                self.went_idle();
            } else {
                self.maybe_finish_drain();
            }
        }
        Some(batch)
    }

    /// Closes: gracefully (refuse new writes, send what is queued and waiting, shut down
    /// the sending half, maybe linger, close), or at once (`abort`: every unfinished write
    /// is answered `Aborted`).
    pub(crate) fn handle_close(&mut self, abort: bool, now: Instant) {
        if abort {
            if self.life != Life::Closed {
                self.shut_and_fail(Shut::Aborted);
                self.close_now();
                self.bound_flight(now);
            }
            return;
        }
        if self.life != Life::Open {
            return;
        }
        self.life = Life::Draining;
        self.events.push_back(Event::State(SocketState::Draining));
        // Writes waiting for room are already in memory: queue them all, so the drain
        // sends them too. Then refuse new ones.
        let mut charged = 0;
        while let Some(w) = self.waiting.pop_front() {
            if !w.charged {
                charged += w.batch.len();
            }
            self.enqueue(w.batch, w.tag, w.token, Some(now));
        }
        if charged > 0 {
            self.events.push_back(Event::Charged(charged));
        }
        self.shut = Some(Box::new(Shut::Closed));
        if let Some(limit) = self.settings.drain_timeout() {
            // A limit past the clock's end: no deadline.
            self.deadline = now.checked_add(limit);
        }
        // Flush now rather than wait for the Flusher's round.
        self.send.flush();
    }

    /// Every address of the socket is gone: stop reading and close gracefully.
    pub(crate) fn handle_orphaned(&mut self, now: Instant) {
        self.receive.done();
        self.handle_close(false, now);
        self.update_interest();
    }

    /// The actor is asked to stop (no address left): `true` to keep it running, because
    /// queued writes still drain (the close is begun here).
    pub(crate) fn handle_stopping(&mut self, now: Instant) -> bool {
        if self.life == Life::Closed || !self.has_writes() {
            return false;
        }
        if self.life == Life::Open {
            self.handle_close(false, now);
        }
        self.life != Life::Closed
    }

    /// The actor stopped: whatever is unfinished ends now (a transmit still out will never
    /// be answered: the writes it carried are `Lost`).
    pub(crate) fn handle_stopped(&mut self) {
        if self.life != Life::Closed {
            self.shut_and_fail(Shut::Closed);
            self.close_now();
        }
        self.lose_in_flight();
    }

    // ---- inputs: the transport ----

    /// The transmit was handed to a transport that answers later (`handle_sent`).
    pub(crate) fn handle_send_pending(&mut self) {
        self.send.pending();
    }

    /// What the transport did with the transmit: took `n` bytes, would block, or failed.
    pub(crate) fn handle_sent(&mut self, result: Result<Sent, TransportError>, now: Instant) {
        if self.life == Life::Closed {
            // A transmit answered after the close is still a call the transport made.
            if matches!(result, Ok(Sent::WouldBlock)) {
                self.counters.would_blocks += 1;
            }
            self.end_in_flight(result, now);
            return;
        }
        match result {
            Ok(Sent::Accepted(n)) => {
                let events = &mut self.events;
                let counters = &mut self.counters;
                let handled = self.queue.handle_sent(n, now, |token, result| {
                    counters.writes_completed += 1;
                    answer(events, token, result);
                });
                if let Err(e) = handled {
                    self.fail(e);
                    return;
                }
                self.counters.bytes_sent += n as u64;
                self.events.push_back(Event::Released(n));
                self.send.took(n);
                if let (Some(limits), true) = (&mut self.limits, n > 0) {
                    limits.sent(now);
                }
            }
            Ok(Sent::WouldBlock) => {
                if let Some(limits) = &mut self.limits {
                    limits.would_block(now);
                }
                self.queue.handle_would_block();
                self.counters.would_blocks += 1;
                self.out_waiting = true;
                self.send.would_block();
                self.update_interest();
            }
            Err(e) => {
                self.queue.handle_failed();
                self.fail(e);
            }
        }
    }

    /// The transport is ready again (after a would-block), or says so early.
    pub(crate) fn handle_ready(&mut self, readiness: Readiness) {
        match readiness {
            Readiness::Writable => self.send.ready(),
            Readiness::Readable => self.receive.ready(),
        }
    }

    /// The wait for `readiness` ended without it (the driver's wait was cut short): ask
    /// for it again if still needed.
    pub(crate) fn rearm(&mut self, readiness: Readiness) {
        match readiness {
            Readiness::Writable => self.send.rewait(),
            Readiness::Readable => self.receive.rewait(),
        }
    }

    /// The yield asked for by [`IoAction::Yield`] is over.
    pub(crate) fn handle_yielded(&mut self, direction: Direction) {
        match direction {
            Direction::Send => self.send.yielded(),
            Direction::Receive => self.receive.yielded(),
        }
    }

    /// A file cannot be sent with `sendfile` (some file systems): the transmit was not
    /// made; read file ranges from now on.
    pub(crate) fn handle_sendfile_unsupported(&mut self) {
        self.queue.handle_failed();
        self.sendfile = false;
        self.counters.sendv_calls -= 1;
        self.counters.sendfile_calls -= 1;
    }

    /// The read was handed to a transport that answers later (`handle_read`).
    pub(crate) fn handle_read_pending(&mut self) {
        self.receive.pending();
    }

    /// Whether a read's answer is still wanted: a read is out and the socket is not
    /// closed. Reading may have ended (closed, orphaned) while a message-path read was
    /// awaiting its answer; its bytes are then dropped, as a reset connection's are,
    /// never delivered after `Closed`.
    pub(crate) fn read_wanted(&self) -> bool {
        self.receive.expecting().is_some() && self.life != Life::Closed
    }

    /// What the read found (ignored unless [`read_wanted`](Self::read_wanted)).
    pub(crate) fn handle_read(&mut self, outcome: ReadOutcome, now: Instant) {
        if !self.read_wanted() {
            return;
        }
        match outcome {
            ReadOutcome::Data(n) => {
                self.counters.bytes_received += n as u64;
                self.receive.took(n);
                if let Some(limits) = &mut self.limits {
                    limits.read(now);
                }
            }
            ReadOutcome::WouldBlock => self.receive.would_block(),
            ReadOutcome::Eof => {
                self.receive.done();
                self.events.push_back(Event::Eof);
                self.update_interest();
                if self.life == Life::Lingering {
                    // The peer is done too: the close is complete.
                    self.close_now();
                } else if self.settings.close_on_eof {
                    self.handle_close(false, now);
                }
            }
            ReadOutcome::Failed(e) => {
                self.receive.done();
                self.events.push_back(Event::ReadFailed(e.clone()));
                self.fail(e);
                self.bound_flight(now);
            }
        }
    }

    /// The peer's EOF came after reading had ended on the driver's side (the decoder
    /// rejected what was left, or nobody is left to deliver to): no `Eof` is reported,
    /// but a lingering close, which waited for the peer to be done, completes.
    pub(crate) fn handle_end_unread(&mut self, _now: Instant) {
        if self.life == Life::Lingering {
            self.close_now();
        }
    }

    /// The sending half was shut down (or could not be).
    pub(crate) fn handle_shutdown(&mut self, result: Result<(), TransportError>, now: Instant) {
        if self.life != Life::ShuttingDown {
            return;
        }
        match result {
            Ok(()) => {
                let reading = !self.reading_done();
                if !reading || self.settings.close_linger == 0 {
                    self.close_now();
                } else {
                    self.life = Life::Lingering;
                    // A linger past the clock's end: until the peer's EOF.
                    self.deadline = now.checked_add(self.settings.close_linger());
                }
            }
            Err(_) => self.close_now(),
        }
    }

    /// A transport error outside a transmit or read (a failed file read, a broken
    /// transport): every write is answered with it, and the socket closes.
    pub(crate) fn handle_failure(&mut self, error: TransportError) {
        if self.life != Life::Closed {
            self.queue.handle_failed();
            self.fail(error);
        }
    }

    /// The next file chunk the coming transmit needs in memory (see
    /// `WriteQueue::poll_chunk_request`); answer with `handle_chunk`.
    pub(crate) fn poll_chunk_request(&self, budget: usize) -> Option<ChunkRequest> {
        self.queue.poll_chunk_request(budget)
    }

    /// What reading a chunk gave; an error on the transmit's first piece fails the
    /// socket.
    pub(crate) fn handle_chunk(&mut self, request: ChunkRequest, read: io::Result<Bytes>) {
        if let Err(e) = self.queue.handle_chunk(request, read) {
            self.handle_failure(TransportError::File(std::sync::Arc::new(e)));
        }
    }

    /// The next transmit as owned slices (a transport reached by message).
    pub(crate) fn poll_transmit(&mut self, budget: usize) -> Option<Transmit> {
        let transmit = self.queue.poll_transmit(budget)?;
        self.counters.sendv_calls += 1;
        Some(transmit)
    }

    /// The next transmit lent as `IoSlice`s (a transport called in place).
    pub(crate) fn poll_transmit_in_place<'a>(
        &'a mut self,
        budget: usize,
        out: &mut Vec<IoSlice<'a>>,
    ) -> Option<InPlaceTransmit<'a>> {
        let sendfile = self.sendfile;
        let transmit = self.queue.poll_transmit_in_place(budget, sendfile, out)?;
        self.counters.sendv_calls += 1;
        if matches!(transmit, InPlaceTransmit::File { .. }) {
            self.counters.sendfile_calls += 1;
        }
        Some(transmit)
    }

    // ---- inputs: the subscriber ----

    /// The deliveries (and their stream bytes) the subscriber holds unacknowledged now:
    /// reading holds while they fill the window, and resumes when they no longer do.
    pub(crate) fn handle_unacked(&mut self, deliveries: u32, bytes: usize) {
        self.unacked = (deliveries, bytes);
        self.resume_if_free();
    }

    /// Stop reading until `handle_resume`.
    pub(crate) fn handle_pause(&mut self) {
        if !self.paused {
            self.paused = true;
            self.update_interest();
        }
    }

    /// Read again after `handle_pause`, as far as the window allows.
    pub(crate) fn handle_resume(&mut self) {
        if self.paused {
            self.paused = false;
            self.update_interest();
            self.resume_if_free();
        }
    }

    /// The frame decoder rejected the stream: reading ends, and (by default) the socket
    /// closes gracefully.
    pub(crate) fn handle_decode_error(&mut self, error: DecodeError, now: Instant) {
        self.receive.done();
        self.events.push_back(Event::DecodeFailed(error));
        if self.settings.close_on_decode_error {
            self.handle_close(false, now);
        }
        self.update_interest();
    }

    /// What the frame decoder holds after a delivery: `buffered` undecoded bytes, and
    /// whether a frame was completed (the bytes left then begin a new frame). Times the
    /// frame in the making for the frame timeout.
    pub(crate) fn handle_undecoded(&mut self, buffered: usize, completed: bool, now: Instant) {
        if let Some(limits) = &mut self.limits {
            limits.undecoded(buffered, completed, now);
        }
    }

    /// Nobody is left to read for: reading stops (writing goes on).
    pub(crate) fn handle_subscriber_gone(&mut self) {
        if !self.reading_done() {
            self.receive.done();
            self.update_interest();
        }
    }

    /// Starts watching interest (or stops): the current interest is reported next.
    pub(crate) fn set_watch_interest(&mut self, watch: bool) {
        self.settings.watch_interest = watch;
        self.update_interest();
    }

    /// Time went on: a deadline may have passed.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.deadline {
            if now >= deadline {
                self.deadline = None;
                match self.life {
                    Life::Draining => self.handle_close(true, now),
                    Life::ShuttingDown | Life::Lingering => self.close_now(),
                    // The transmit out at the close was never answered.
                    Life::Closed => self.end_in_flight(Err(TransportError::Unavailable), now),
                    _ => {}
                }
            }
        }
        self.check_limits(now);
        self.bound_flight(now);
    }

    /// Closed with a transmit out: its answer is waited for [`FLIGHT_GRACE`] at most.
    fn bound_flight(&mut self, now: Instant) {
        if self.life == Life::Closed && self.end_after_flight && self.deadline.is_none() {
            self.deadline = now.checked_add(FLIGHT_GRACE);
        }
    }

    /// The idle, frame and send limits: reports what is due, and acts on it.
    fn check_limits(&mut self, now: Instant) {
        if self.life == Life::Closed {
            return;
        }
        let state = Now {
            at: now,
            open: self.life == Life::Open,
            reading: !self.receive.is_done(),
            read_held: self.reading_held_back(),
            sending: self.queue.has_transmit() || self.queue.in_flight(),
        };
        let Some(limits) = &mut self.limits else {
            return;
        };
        let close_when_idle = limits.close_when_idle();
        let mut due = Vec::new();
        limits.check(state, &mut due);
        for due in due {
            match due {
                Due::Send(after) => {
                    if self.life == Life::Closed {
                        continue;
                    }
                    let queued = self.queue.queued_bytes();
                    tracing::debug!(?after, queued, "send timeout: the peer took nothing");
                    self.events.push_back(Event::SendTimedOut(after, queued));
                    self.shut_and_fail(Shut::TimedOut(after));
                    self.close_now();
                }
                Due::Frame(after, buffered) => {
                    if self.life == Life::Open && !self.receive.is_done() {
                        self.handle_decode_error(
                            DecodeError::FrameTimedOut { after, buffered },
                            now,
                        );
                    }
                }
                Due::Idle(kind, after) => {
                    if self.life != Life::Open {
                        continue;
                    }
                    self.events.push_back(Event::Idle(kind, after));
                    if close_when_idle {
                        self.handle_close(false, now);
                    }
                }
            }
        }
    }

    // ---- outputs ----

    /// The next I/O to do, or `None` when there is nothing to do until an input comes.
    /// Call it until `None` after every input.
    pub(crate) fn poll_io(&mut self) -> Option<IoAction> {
        loop {
            if self.close {
                self.close = false;
                return Some(IoAction::CloseHandle);
            }
            if self.life == Life::Closed {
                return None;
            }
            let limit = if self.contended || self.settings.turn_cap == TurnCap::Always {
                self.settings.max_bytes_per_turn as usize
            } else {
                usize::MAX
            };
            match self
                .send
                .poll(self.queue.has_transmit(), self.queue.in_flight(), limit)
            {
                SendPoll::RequestFlush => return Some(IoAction::RequestFlush),
                SendPoll::Transmit(budget) => return Some(IoAction::Transmit { budget }),
                SendPoll::Yield => return Some(IoAction::Yield(Direction::Send)),
                SendPoll::Wait => return Some(IoAction::Wait(Readiness::Writable)),
                SendPoll::WentIdle => {
                    self.went_idle();
                    continue;
                }
                SendPoll::Nothing => {}
            }
            if self.shutdown {
                self.shutdown = false;
                return Some(IoAction::ShutdownWrite);
            }
            let hold = self.paused || !self.window_open();
            return match self.receive.poll(hold, limit) {
                ReceivePoll::Read => Some(IoAction::Read {
                    max: self.settings.read_chunk as usize,
                }),
                ReceivePoll::Held => {
                    self.update_interest();
                    continue;
                }
                ReceivePoll::Yield => Some(IoAction::Yield(Direction::Receive)),
                ReceivePoll::Wait => Some(IoAction::Wait(Readiness::Readable)),
                ReceivePoll::Nothing => None,
            };
        }
    }

    /// The next answer or notice to hand on.
    pub(crate) fn poll_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next, if ever.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let limits = match &self.limits {
            Some(limits) if self.life != Life::Closed => limits.next(),
            _ => None,
        };
        match (self.deadline, limits) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- internals ----

    fn resume_if_free(&mut self) {
        if self.receive.is_held() && !self.paused && self.window_open() && self.receive.release() {
            self.update_interest();
        }
    }

    /// The send flow went idle: nothing left to send.
    fn went_idle(&mut self) {
        self.out_waiting = false;
        if let Some(limits) = &mut self.limits {
            limits.drained();
        }
        self.update_interest();
        self.maybe_finish_drain();
    }

    fn maybe_finish_drain(&mut self) {
        if self.life == Life::Draining
            && self.queue.is_empty()
            && self.waiting.is_empty()
            && !self.queue.in_flight()
        {
            if self.settings.shutdown {
                // The drain deadline also bounds the shutdown: a transport (a layer's
                // outbox) that cannot take its last bytes does not hold the close.
                self.life = Life::ShuttingDown;
                self.shutdown = true;
            } else {
                self.deadline = None;
                self.close_now();
            }
        }
    }

    fn fail(&mut self, error: TransportError) {
        self.shut_and_fail(Shut::Failed(error));
        self.close_now();
    }

    /// Stops taking writes and ends every queued and waiting write with the error `shut`
    /// gives. Writes in a transmit still awaiting its answer are ended when the answer
    /// comes, so their errors say truly how many bytes went out.
    fn shut_and_fail(&mut self, shut: Shut) {
        if self.shut.is_none() || !matches!(shut, Shut::Closed) {
            self.shut = Some(Box::new(shut));
        }
        let Some(shut) = self.shut.as_deref().cloned() else {
            return;
        };
        let mut released = 0;
        while let Some(w) = self.waiting.pop_front() {
            if w.charged {
                released += w.batch.len();
            }
            self.counters.writes_failed += 1;
            self.events
                .push_back(Event::Answer(w.token, Err(shut.error(0, w.batch.len()))));
        }
        let events = &mut self.events;
        let counters = &mut self.counters;
        let error = |sent, len| shut.error(sent, len);
        let answer = |token, result: Result<Written, WriteError>| {
            // A write of a copied run whose bytes all went out is done.
            match &result {
                Ok(_) => counters.writes_completed += 1,
                Err(_) => counters.writes_failed += 1,
            }
            answer(events, token, result);
        };
        if self.queue.in_flight() {
            released += self.queue.fail_behind_in_flight(error, answer);
            self.end_after_flight = true;
        } else {
            released += self.queue.fail_all(error, answer);
        }
        if released > 0 {
            self.events.push_back(Event::Released(released));
        }
    }

    /// The answer to a transmit that was out when the socket shut: account for what it
    /// sent, then end the writes it carried.
    fn end_in_flight(&mut self, result: Result<Sent, TransportError>, now: Instant) {
        if !std::mem::take(&mut self.end_after_flight) {
            return;
        }
        // Its grace (`bound_flight`) is over.
        self.deadline = None;
        let events = &mut self.events;
        let counters = &mut self.counters;
        match result {
            Ok(Sent::Accepted(n)) => {
                let handled = self.queue.handle_sent(n, now, |token, result| {
                    counters.writes_completed += 1;
                    answer(events, token, result);
                });
                if handled.is_ok() {
                    counters.bytes_sent += n as u64;
                    events.push_back(Event::Released(n));
                }
            }
            Ok(Sent::WouldBlock) => self.queue.handle_would_block(),
            Err(_) => {}
        }
        let shut = self.shut.as_deref().cloned().unwrap_or(Shut::Closed);
        self.fail_queued(|sent, len| shut.error(sent, len));
    }

    /// The socket stopped with a transmit still out: it will never be answered, and
    /// whether the transport took its bytes is unknown, so the writes it carried are
    /// answered [`WriteError::Lost`] (those behind it were answered when it shut).
    fn lose_in_flight(&mut self) {
        if !std::mem::take(&mut self.end_after_flight) {
            return;
        }
        self.deadline = None;
        self.fail_queued(|_, len| WriteError::Lost { len });
    }

    /// Answers every write still queued with the `error` made of its bytes sent and its
    /// length (a run of copied writes each its own), counted; their bytes are released.
    fn fail_queued(&mut self, error: impl Fn(usize, usize) -> WriteError) {
        let events = &mut self.events;
        let counters = &mut self.counters;
        let released = self.queue.fail_all(error, |token, result| {
            match &result {
                Ok(_) => counters.writes_completed += 1,
                Err(_) => counters.writes_failed += 1,
            }
            answer(events, token, result);
        });
        if released > 0 {
            events.push_back(Event::Released(released));
        }
    }

    fn close_now(&mut self) {
        if self.life == Life::Closed {
            return;
        }
        self.life = Life::Closed;
        self.receive.done();
        self.send.stop();
        self.deadline = None;
        self.close = true;
        self.shutdown = false;
        if self.shut.is_none() {
            self.shut = Some(Box::new(Shut::Closed));
        }
        let cause = match self.shut.as_deref() {
            Some(Shut::Failed(e)) => Some(e.clone()),
            _ => None,
        };
        self.events.push_back(Event::State(SocketState::Closed));
        self.events.push_back(Event::Closed(cause));
        self.update_interest();
    }

    /// Reports what the socket now waits for, if that changed and someone watches.
    fn update_interest(&mut self) {
        if !self.settings.watch_interest {
            return;
        }
        let now = if self.life == Life::Closed {
            Interest::Remove
        } else {
            let reading = !self.paused && self.receive.is_active();
            Interest::from_directions(reading, self.out_waiting)
        };
        if self.interest == Some(now) || self.interest == Some(Interest::Remove) {
            return;
        }
        self.interest = Some(now);
        self.events.push_back(Event::Interest(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Core = StreamCore<u32>;

    fn settings() -> StreamSettings {
        StreamSettings {
            queue: QueueConfig {
                max_bytes_per_turn: 100,
                ..QueueConfig::default()
            },
            read_chunk: 64,
            max_waiting_writes: 4,
            max_deliveries: 2,
            max_window_bytes: 1000,
            close_linger: Duration::ZERO,
            drain_timeout: None,
            close_on_decode_error: true,
            close_on_eof: false,
            deferred: true,
            reading: false,
            watch_interest: false,
            shutdown: false,
        }
    }

    fn t0() -> Instant {
        Instant::now()
    }

    /// Every answer so far, as (token, ok).
    fn answers(core: &mut Core) -> Vec<(u32, Result<Written, WriteError>)> {
        let mut out = Vec::new();
        let mut rest = VecDeque::new();
        while let Some(e) = core.poll_event() {
            match e {
                Event::Answer(t, r) => out.push((t, r)),
                other => rest.push_back(other),
            }
        }
        core.events = rest;
        out
    }

    fn events(core: &mut Core) -> Vec<String> {
        std::iter::from_fn(|| core.poll_event())
            .map(|e| match e {
                Event::Answer(t, r) => format!("answer {t} {}", r.is_ok()),
                Event::Released(n) => format!("released {n}"),
                Event::Charged(n) => format!("charged {n}"),
                Event::Interest(i) => format!("interest {i:?}"),
                Event::State(s) => format!("state {s:?}"),
                Event::Eof => "eof".into(),
                Event::ReadFailed(_) => "read failed".into(),
                Event::DecodeFailed(_) => "decode failed".into(),
                Event::Idle(kind, after) => format!("idle {kind:?} {}", after.as_secs()),
                Event::SendTimedOut(after, queued) => {
                    format!("send timed out {} {queued}", after.as_secs())
                }
                Event::Closed(cause) => format!("closed {}", cause.is_some()),
            })
            .collect()
    }

    fn write(core: &mut Core, token: u32, len: usize) {
        core.handle_write(
            vec![token as u8; len].into(),
            Some(u64::from(token)),
            token,
            Some(t0()),
        )
        .map_err(|r| r.error)
        .expect("open");
    }

    /// Takes the next transmit's length (message path) after `Transmit`.
    fn transmit(core: &mut Core) -> usize {
        match core.poll_io() {
            Some(IoAction::Transmit { budget }) => {
                core.poll_transmit(budget).expect("a transmit").len
            }
            other => panic!("expected a transmit, got {other:?}"),
        }
    }

    #[test]
    fn a_send_timeout_ends_the_writes_of_a_transmit_still_out_when_its_answer_comes() {
        let s = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut core = Core::new(StreamSettings {
            deferred: false,
            ..settings()
        });
        core.set_limits(
            PeerLimits {
                send_timeout: Some(5 * s),
                ..PeerLimits::default()
            },
            t0,
        );
        assert_eq!(core.poll_timeout(), None, "no stall, no timer");
        write(&mut core, 1, 30);
        write(&mut core, 2, 30);
        assert_eq!(transmit(&mut core), 60);
        core.handle_sent(Ok(Sent::Accepted(10)), t0);
        assert_eq!(transmit(&mut core), 50);
        core.handle_sent(Ok(Sent::WouldBlock), t0 + s);
        assert_eq!(core.poll_timeout(), Some(t0 + 6 * s));
        core.handle_ready(Readiness::Writable);
        // The retry goes to a transport that answers later, and the time runs out.
        assert_eq!(transmit(&mut core), 50);
        core.handle_send_pending();
        core.handle_timeout(t0 + 6 * s);
        let now: Vec<String> = events(&mut core);
        assert!(now.contains(&"send timed out 5 50".to_string()), "{now:?}");
        assert!(now.contains(&"closed false".to_string()), "{now:?}");
        assert!(
            !now.iter().any(|e| e.starts_with("answer")),
            "the writes in the transmit wait for its answer: {now:?}"
        );
        assert_eq!(core.poll_io(), Some(IoAction::CloseHandle));
        // It took 5 more bytes after all: the first write got 15 of 30 out.
        core.handle_sent(Ok(Sent::Accepted(5)), t0 + 6 * s);
        let ends = answers(&mut core);
        assert_eq!(ends.len(), 2);
        for (token, result) in ends {
            let (sent, len) = match result {
                Err(WriteError::TimedOut {
                    bytes_sent, len, ..
                }) => (bytes_sent, len),
                other => panic!("write {token}: {other:?}"),
            };
            assert_eq!((sent, len), if token == 1 { (15, 30) } else { (0, 30) });
        }
        assert_eq!(core.poll_timeout(), None, "a closed socket has no timer");
    }

    /// A token that is silent or not.
    #[derive(Debug)]
    struct Quiet(u32, bool);

    impl Token for Quiet {
        fn silent(&self) -> bool {
            self.1
        }
        fn new_silent() -> Self {
            Quiet(0, true)
        }
    }

    #[test]
    fn a_silent_tokens_success_is_counted_not_answered_and_its_failure_is_answered() {
        let mut core = StreamCore::<Quiet>::new(StreamSettings {
            deferred: false,
            ..settings()
        });
        for (id, silent) in [(1, true), (2, false), (3, true), (4, true)] {
            core.handle_write(vec![1u8; 10].into(), None, Quiet(id, silent), None)
                .map_err(|r| r.error)
                .expect("open");
        }
        let Some(IoAction::Transmit { budget }) = core.poll_io() else {
            panic!("a transmit");
        };
        assert_eq!(core.poll_transmit(budget).expect("data").len, 40);
        core.handle_sent(Ok(Sent::Accepted(25)), t0());
        let mut answered = Vec::new();
        while let Some(e) = core.poll_event() {
            if let Event::Answer(Quiet(id, _), r) = e {
                answered.push((id, r.is_ok()));
            }
        }
        assert_eq!(answered, [(2, true)], "write 1's success is silent");
        assert_eq!(core.stats().writes_completed, 2, "both are counted");
        core.handle_failure(std::io::Error::from(std::io::ErrorKind::BrokenPipe).into());
        while let Some(e) = core.poll_event() {
            if let Event::Answer(Quiet(id, _), r) = e {
                answered.push((id, r.is_ok()));
            }
        }
        assert_eq!(
            answered,
            [(2, true), (3, false), (0, false)],
            "failures are answered, silent or not (write 4, merged into write 3's run of \
             silent copied writes, answers with a fresh silent token)"
        );
    }

    #[test]
    fn a_burst_asks_the_flusher_once_and_leaves_in_one_transmit() {
        let mut core = Core::new(settings());
        for t in 0..5 {
            write(&mut core, t, 10);
        }
        assert_eq!(core.poll_io(), Some(IoAction::RequestFlush));
        assert_eq!(core.poll_io(), None, "nothing until the Flusher answers");
        core.handle_flush();
        assert_eq!(transmit(&mut core), 50);
        core.handle_send_pending();
        assert_eq!(core.poll_io(), None, "one transmit out at a time");
        core.handle_sent(Ok(Sent::Accepted(50)), t0());
        assert_eq!(core.poll_io(), None);
        let done: Vec<u32> = answers(&mut core).iter().map(|(t, _)| *t).collect();
        assert_eq!(done, [0, 1, 2, 3, 4]);
        assert_eq!(core.stats().pending_writes, 1);
        assert_eq!(core.stats().sendv_calls, 1);
    }

    #[test]
    fn a_turn_yields_after_its_byte_budget_and_goes_on_after() {
        let mut core = Core::new(StreamSettings {
            deferred: false,
            ..settings()
        });
        // Another socket of the thread has data to send: turns are capped.
        core.handle_contention(true);
        write(&mut core, 1, 250);
        for expected in [100, 100] {
            assert_eq!(
                transmit(&mut core),
                expected,
                "a turn is capped at its budget"
            );
            core.handle_sent(Ok(Sent::Accepted(expected)), t0());
            assert_eq!(core.poll_io(), Some(IoAction::Yield(Direction::Send)));
            assert_eq!(core.poll_io(), None, "nothing more until the yield ends");
            core.handle_yielded(Direction::Send);
        }
        assert_eq!(transmit(&mut core), 50);
        core.handle_sent(Ok(Sent::Accepted(50)), t0());
        assert_eq!(answers(&mut core).len(), 1);
    }

    #[test]
    fn a_turn_alone_is_not_capped_and_is_capped_once_others_send() {
        let mut core = Core::new(StreamSettings {
            deferred: false,
            ..settings()
        });
        write(&mut core, 1, 250);
        write(&mut core, 2, 250);
        assert!(core.is_sending());
        assert_eq!(
            transmit(&mut core),
            500,
            "alone: all of it, past the 100-byte turn"
        );
        core.handle_sent(Ok(Sent::Accepted(120)), t0());
        core.handle_contention(true);
        assert_eq!(
            core.poll_io(),
            Some(IoAction::Yield(Direction::Send)),
            "others send now: this turn (120 bytes) is past the budget"
        );
        core.handle_yielded(Direction::Send);
        assert_eq!(transmit(&mut core), 100, "a capped turn");
        core.handle_sent(Ok(Sent::Accepted(100)), t0());
        assert_eq!(core.poll_io(), Some(IoAction::Yield(Direction::Send)));
        core.handle_yielded(Direction::Send);
        core.handle_contention(false);
        assert_eq!(transmit(&mut core), 280, "alone again");
        core.handle_sent(Ok(Sent::Accepted(280)), t0());
        assert_eq!(answers(&mut core).len(), 2);
        assert!(!core.is_sending(), "nothing left");
    }

    #[test]
    fn a_would_block_waits_for_readiness_once_and_a_notice_that_comes_early_retries() {
        let mut core = Core::new(StreamSettings {
            deferred: false,
            ..settings()
        });
        write(&mut core, 1, 10);
        transmit(&mut core);
        core.handle_sent(Ok(Sent::WouldBlock), t0());
        assert_eq!(core.poll_io(), Some(IoAction::Wait(Readiness::Writable)));
        assert_eq!(core.poll_io(), None);
        core.handle_ready(Readiness::Writable);
        assert_eq!(transmit(&mut core), 10, "the same bytes again");
        core.handle_send_pending();
        // The transport's notice overtakes its would-block answer.
        core.handle_ready(Readiness::Writable);
        core.handle_sent(Ok(Sent::WouldBlock), t0());
        assert_eq!(transmit(&mut core), 10, "retried without waiting");
        core.handle_sent(Ok(Sent::Accepted(10)), t0());
        let (_, result) = answers(&mut core).pop().expect("answered");
        assert_eq!(result.expect("written").would_blocks, 2);
    }

    #[test]
    fn a_graceful_close_drains_shuts_down_lingers_and_closes_at_the_peers_eof() {
        let mut core = Core::new(StreamSettings {
            deferred: false,
            reading: true,
            shutdown: true,
            close_linger: Duration::from_secs(5),
            ..settings()
        });
        assert_eq!(core.poll_io(), Some(IoAction::Read { max: 64 }));
        core.handle_read(ReadOutcome::WouldBlock, t0());
        assert_eq!(core.poll_io(), Some(IoAction::Wait(Readiness::Readable)));
        write(&mut core, 1, 10);
        core.handle_close(false, t0());
        assert!(matches!(
            core.handle_write(vec![0u8].into(), None, 2, Some(t0())),
            Err(Refused {
                error: WriteError::Closed { .. },
                token: 2
            })
        ));
        assert_eq!(transmit(&mut core), 10);
        core.handle_sent(Ok(Sent::Accepted(10)), t0());
        assert_eq!(core.poll_io(), Some(IoAction::ShutdownWrite));
        let now = t0();
        core.handle_shutdown(Ok(()), now);
        assert_eq!(core.poll_timeout(), Some(now + Duration::from_secs(5)));
        assert!(!core.is_closed(), "lingering");
        core.handle_ready(Readiness::Readable);
        assert_eq!(core.poll_io(), Some(IoAction::Read { max: 64 }));
        core.handle_read(ReadOutcome::Eof, now);
        assert_eq!(core.poll_io(), Some(IoAction::CloseHandle));
        assert_eq!(core.poll_io(), None);
        assert_eq!(
            events(&mut core),
            [
                "state Draining",
                "answer 1 true",
                "released 10",
                "eof",
                "state Closed",
                "closed false"
            ]
        );
    }

    #[test]
    fn the_linger_deadline_closes_a_socket_whose_peer_never_finishes() {
        let mut core = Core::new(StreamSettings {
            reading: true,
            shutdown: true,
            close_linger: Duration::from_secs(5),
            ..settings()
        });
        let now = t0();
        core.handle_close(false, now);
        assert_eq!(core.poll_io(), Some(IoAction::ShutdownWrite));
        core.handle_shutdown(Ok(()), now);
        core.handle_timeout(now + Duration::from_secs(4));
        assert!(!core.is_closed());
        core.handle_timeout(now + Duration::from_secs(5));
        assert!(core.is_closed());
        assert_eq!(core.poll_timeout(), None);
    }

    #[test]
    fn a_drain_that_cannot_finish_in_time_aborts_with_how_far_each_write_got() {
        let mut core = Core::new(StreamSettings {
            deferred: false,
            drain_timeout: Some(Duration::from_secs(1)),
            ..settings()
        });
        write(&mut core, 1, 10);
        write(&mut core, 2, 10);
        assert_eq!(transmit(&mut core), 20);
        core.handle_sent(Ok(Sent::Accepted(4)), t0());
        core.poll_io();
        core.handle_sent(Ok(Sent::WouldBlock), t0());
        let now = t0();
        core.handle_close(false, now);
        core.handle_timeout(now + Duration::from_secs(1));
        assert!(core.is_closed());
        let sent: Vec<(u32, usize)> = answers(&mut core)
            .into_iter()
            .map(|(t, r)| match r {
                Err(WriteError::Aborted { bytes_sent, .. }) => (t, bytes_sent),
                other => panic!("expected an abort, got {other:?}"),
            })
            .collect();
        assert_eq!(sent, [(1, 4), (2, 0)]);
    }

    #[test]
    fn drain_and_linger_times_too_long_to_reach_are_kept_without_a_panic() {
        let mut core = Core::new(StreamSettings {
            deferred: false,
            reading: true,
            shutdown: true,
            drain_timeout: Some(Duration::MAX),
            close_linger: Duration::MAX,
            ..settings()
        });
        assert_eq!(core.poll_io(), Some(IoAction::Read { max: 64 }));
        core.handle_read(ReadOutcome::WouldBlock, t0());
        assert_eq!(core.poll_io(), Some(IoAction::Wait(Readiness::Readable)));
        write(&mut core, 1, 10);
        transmit(&mut core);
        core.handle_close(false, t0());
        let year = Duration::from_secs(365 * 24 * 3600);
        core.handle_timeout(t0() + year);
        assert!(!core.is_closed(), "still draining after a year");
        core.handle_sent(Ok(Sent::Accepted(10)), t0() + year);
        assert_eq!(core.poll_io(), Some(IoAction::ShutdownWrite));
        core.handle_shutdown(Ok(()), t0() + year);
        core.handle_timeout(t0() + 2 * year);
        assert!(!core.is_closed(), "still lingering for the peer's EOF");
    }

    #[test]
    fn cancelling_every_write_of_a_blocked_drain_closes_at_once() {
        let mut core = Core::new(StreamSettings {
            deferred: false,
            ..settings()
        });
        write(&mut core, 1, 10);
        write(&mut core, 2, 10);
        transmit(&mut core);
        core.handle_send_pending();
        core.handle_sent(Ok(Sent::WouldBlock), t0());
        core.handle_close(false, t0());
        assert!(core.handle_cancel(1, t0()).is_some());
        assert!(core.handle_cancel(2, t0()).is_some());
        while let Some(action) = core.poll_io() {
            assert_ne!(
                action,
                IoAction::Wait(Readiness::Writable),
                "nothing to wait for"
            );
        }
        assert!(core.is_closed());
    }

    #[test]
    fn an_abort_with_a_transmit_out_answers_its_writes_when_the_transport_does() {
        let mut core = Core::new(StreamSettings {
            deferred: false,
            ..settings()
        });
        write(&mut core, 1, 10);
        write(&mut core, 2, 10);
        assert_eq!(transmit(&mut core), 20);
        core.handle_send_pending();
        write(&mut core, 3, 10);
        core.handle_close(true, t0());
        let early: Vec<u32> = answers(&mut core).iter().map(|(t, _)| *t).collect();
        assert_eq!(early, [3], "the write behind the transmit ends now");
        core.handle_sent(Ok(Sent::Accepted(15)), t0());
        let late: Vec<(u32, bool, usize)> = answers(&mut core)
            .into_iter()
            .map(|(t, r)| (t, r.is_ok(), r.map_or_else(|e| e.bytes_sent(), |w| w.len)))
            .collect();
        assert_eq!(late, [(1, true, 10), (2, false, 5)]);
    }

    #[test]
    fn an_abort_with_a_transmit_never_answered_ends_its_writes_after_the_grace() {
        let t0 = t0();
        let mut core = Core::new(StreamSettings {
            deferred: false,
            ..settings()
        });
        write(&mut core, 1, 10);
        assert_eq!(transmit(&mut core), 10);
        core.handle_send_pending();
        core.handle_close(true, t0);
        assert!(answers(&mut core).is_empty(), "its answer is waited for");
        assert_eq!(core.poll_timeout(), Some(t0 + FLIGHT_GRACE));
        core.handle_timeout(t0 + FLIGHT_GRACE - Duration::from_millis(1));
        assert!(answers(&mut core).is_empty(), "not before the grace ends");
        core.handle_timeout(t0 + FLIGHT_GRACE);
        let late: Vec<(u32, Option<(usize, usize)>)> = answers(&mut core)
            .into_iter()
            .map(|(t, r)| match r {
                Err(WriteError::Aborted { bytes_sent, len }) => (t, Some((bytes_sent, len))),
                _ => (t, None),
            })
            .collect();
        assert_eq!(
            late,
            [(1, Some((0, 10)))],
            "not known to have gone: 0 of 10"
        );
        assert_eq!(core.poll_timeout(), None);
        // The answer, should it come after all, changes nothing.
        core.handle_sent(Ok(Sent::Accepted(10)), t0 + FLIGHT_GRACE);
        assert!(answers(&mut core).is_empty());
    }

    #[test]
    fn writes_wait_for_room_in_order_and_a_graceful_close_takes_them_all() {
        let mut core = Core::new(settings());
        let full = |payload: IoBatch| WriteError::QueueFull {
            queued: 0,
            high_watermark: 0,
            payload,
        };
        core.handle_wait(vec![1u8; 5].into(), None, 1, false, full)
            .map_err(|r| r.error)
            .expect("waits");
        core.handle_wait(vec![2u8; 5].into(), None, 2, true, full)
            .map_err(|r| r.error)
            .expect("waits");
        assert_eq!(core.waiting_front(), Some((5, false)));
        core.admit_waiting_front(t0());
        assert_eq!(core.waiting_front(), Some((5, true)));
        core.handle_close(false, t0());
        assert_eq!(core.waiting_front(), None);
        let charged: Vec<String> = events(&mut core)
            .into_iter()
            .filter(|e| e.starts_with("charged"))
            .collect();
        assert_eq!(
            charged, ["charged 0"; 0],
            "the already admitted one is not charged again"
        );
        assert_eq!(core.stats().queued_writes, 2);
    }

    #[test]
    fn too_many_waiting_writes_are_refused_with_their_payload() {
        let mut core = Core::new(settings());
        let full = |payload: IoBatch| WriteError::QueueFull {
            queued: 0,
            high_watermark: 0,
            payload,
        };
        for t in 0..4 {
            core.handle_wait(vec![0u8; 1].into(), None, t, false, full)
                .map_err(|r| r.error)
                .expect("waits");
        }
        let refused = core
            .handle_wait(vec![9u8; 3].into(), None, 9, false, full)
            .expect_err("too many");
        assert_eq!(refused.token, 9);
        match refused.error {
            WriteError::QueueFull { payload, .. } => assert_eq!(payload.len(), 3),
            other => panic!("{other:?}"),
        }
        assert_eq!(core.stats().writes_failed, 1);
    }

    #[test]
    fn reading_holds_for_a_full_window_and_resumes_when_acknowledged() {
        let mut core = Core::new(StreamSettings {
            reading: true,
            watch_interest: true,
            ..settings()
        });
        core.set_watch_interest(true);
        assert_eq!(core.poll_io(), Some(IoAction::Read { max: 64 }));
        core.handle_read(ReadOutcome::Data(10), t0());
        core.handle_unacked(2, 20);
        assert_eq!(core.poll_io(), None, "the window is full");
        assert!(core.read_held());
        core.handle_unacked(1, 10);
        assert_eq!(core.poll_io(), Some(IoAction::Read { max: 64 }));
        core.handle_pause();
        core.handle_read(ReadOutcome::Data(10), t0());
        assert_eq!(core.poll_io(), None, "paused");
        core.handle_resume();
        assert_eq!(core.poll_io(), Some(IoAction::Read { max: 64 }));
        let interest: Vec<String> = events(&mut core)
            .into_iter()
            .filter(|e| e.starts_with("interest"))
            .collect();
        assert_eq!(
            interest,
            [
                "interest In",
                "interest None",
                "interest In",
                "interest None",
                "interest In"
            ]
        );
    }

    #[test]
    fn a_transport_failure_answers_every_write_and_closes_with_the_cause() {
        let mut core = Core::new(StreamSettings {
            deferred: false,
            ..settings()
        });
        write(&mut core, 1, 10);
        transmit(&mut core);
        core.handle_sent(Ok(Sent::Accepted(3)), t0());
        core.poll_io();
        let error = TransportError::from(io::ErrorKind::BrokenPipe);
        core.handle_sent(Err(error), t0());
        assert_eq!(core.poll_io(), Some(IoAction::CloseHandle));
        let evs = events(&mut core);
        assert_eq!(evs.last().map(String::as_str), Some("closed true"));
        assert!(evs.contains(&"answer 1 false".to_string()));
        assert!(matches!(
            core.shut(),
            Some(Shut::Failed(e)) if e.io_kind() == Some(io::ErrorKind::BrokenPipe)
        ));
    }

    #[test]
    fn a_zero_length_write_with_nothing_ahead_is_answered_at_once_and_sends_nothing() {
        let mut core = Core::new(settings());
        write(&mut core, 7, 0);
        assert_eq!(events(&mut core), ["answer 7 true"]);
        assert_eq!(core.poll_io(), None, "no flush for nothing");
    }
}
