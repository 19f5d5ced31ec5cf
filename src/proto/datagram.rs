//! [`DatagramCore`]: every decision one datagram socket makes, sans I/O. It shares the
//! send and receive schedules ([`SendFlow`], [`ReceiveFlow`]) with the stream core; what
//! differs is the queue (whole datagrams, bounded by count and bytes) and that a datagram
//! is sent whole or not at all.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::flow::{ReceiveFlow, ReceivePoll, SendFlow, SendPoll};
use super::stream::{Direction, IoAction};
use crate::batch::IoBatch;
use crate::error::{DatagramError, TransportError};
use crate::types::{Address, Readiness, Sent};

/// Receive errors in a row after which a datagram socket gives up and fails: an error
/// that recurs with no datagram in between will not clear.
const MAX_READ_ERRORS: u32 = 8;

/// The success answer to a datagram: the transport took all of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatagramSent {
    /// Bytes sent.
    pub len: usize,
    /// Time from enqueue to the transport taking it.
    pub latency: Duration,
}

/// A datagram socket's counters since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatagramStats {
    /// Datagrams sent whole.
    pub sent: u64,
    /// Datagrams that failed (refused, partial, transport errors, closed before sent).
    pub send_failed: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// `sendv` calls made.
    pub sendv_calls: u64,
    /// `sendv` calls answered with would-block.
    pub would_blocks: u64,
    /// Flushes requested from the Flusher.
    pub pending_writes: u64,
    /// Receive calls made (one call may receive a batch of datagrams).
    pub recv_calls: u64,
    /// Datagrams received.
    pub received: u64,
    /// Of those, datagrams cut short (longer than `max_datagram_size`).
    pub truncated: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Datagrams queued right now, not yet offered to the transport (see
    /// [`DatagramConfig::max_queued`](crate::DatagramConfig::max_queued)).
    pub queued: u64,
}

/// Limits of a datagram core.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DatagramSettings {
    /// Most datagrams queued at once.
    pub(crate) max_queued: usize,
    /// Most bytes queued at once (one datagram larger than this is taken when the queue
    /// is empty).
    pub(crate) max_queued_bytes: usize,
    /// The longest datagram received whole.
    pub(crate) max_datagram_size: usize,
    /// Most datagrams sent, and most received, per turn.
    pub(crate) max_per_turn: usize,
    /// Ask a Flusher before sending.
    pub(crate) deferred: bool,
    /// Read (someone subscribes).
    pub(crate) reading: bool,
    /// The socket has a peer: datagrams need no destination of their own.
    pub(crate) connected: bool,
}

/// One queued datagram.
#[derive(Debug)]
struct Queued<T> {
    payload: IoBatch,
    to: Option<Address>,
    token: T,
    at: Instant,
}

/// The bounded FIFO of datagrams waiting for the transport.
#[derive(Debug)]
struct DatagramQueue<T> {
    items: VecDeque<Queued<T>>,
    bytes: usize,
    max: usize,
    max_bytes: usize,
}

impl<T> DatagramQueue<T> {
    fn new(max: usize, max_bytes: usize) -> Self {
        DatagramQueue {
            items: VecDeque::new(),
            bytes: 0,
            max: max.max(1),
            max_bytes,
        }
    }

    /// Queues a datagram, or hands it back when the queue is full: `max` datagrams, or
    /// its bytes would pass `max_bytes` (an empty queue takes any one datagram).
    fn push(&mut self, item: Queued<T>) -> Result<(), Queued<T>> {
        let len = item.payload.len();
        let over_bytes = !self.items.is_empty() && self.bytes.saturating_add(len) > self.max_bytes;
        if self.items.len() >= self.max || over_bytes {
            return Err(item);
        }
        self.bytes += len;
        self.items.push_back(item);
        Ok(())
    }

    fn pop(&mut self) -> Option<Queued<T>> {
        let item = self.items.pop_front()?;
        self.bytes -= item.payload.len();
        Some(item)
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// What a receive found, for [`DatagramCore::handle_received`].
#[derive(Debug)]
pub(crate) enum Received {
    /// A datagram of `len` bytes (its first bytes only, when `truncated`), already
    /// delivered by the driver.
    Datagram {
        /// Bytes delivered.
        len: usize,
        /// It was longer than the socket receives whole.
        truncated: bool,
    },
    /// Nothing to receive now.
    WouldBlock,
    /// The transport will deliver nothing more.
    Eof,
    /// Receiving failed.
    Failed(TransportError),
}

/// What the datagram driver must tell others, from [`DatagramCore::poll_event`].
#[derive(Debug)]
pub(crate) enum DatagramEvent<T> {
    /// A datagram's one answer.
    Answer(T, Result<DatagramSent, DatagramError>),
    /// One receive failed (the socket goes on), or receiving failed for good (it closes).
    ReadFailed(TransportError),
    /// The handle is closed; the transport error that closed it, if any.
    Closed(Option<TransportError>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Open,
    Draining,
    Closed,
}

/// One datagram socket, sans I/O: the bounded queue of whole datagrams, those being
/// offered (kept until the transport takes them, so one that met a would-block goes
/// again, whole), the send and receive schedules, and the lifecycle.
///
/// The driver's calling order is the stream core's: an input (`handle_*`), then
/// [`poll_io`](Self::poll_io) until `None`, doing each action, then
/// [`poll_event`](Self::poll_event) until `None`. For [`IoAction::Transmit`] the driver
/// takes the datagrams to send with [`poll_datagram`](Self::poll_datagram) (one, for a
/// transport reached by message) or [`poll_datagrams`](Self::poll_datagrams) (a batch,
/// for one called in place) and answers each in order with `handle_sent`; the ones it
/// does not answer stay offered, first in line. For [`IoAction::Read`] it receives up to
/// [`read_budget`](Self::read_budget) datagrams and hands each to `handle_received`.
#[derive(Debug)]
pub(crate) struct DatagramCore<T> {
    queue: DatagramQueue<T>,
    /// Taken from the queue and offered to the transport, oldest first; answered in
    /// this order.
    offered: VecDeque<Queued<T>>,
    settings: DatagramSettings,
    send: SendFlow,
    receive: ReceiveFlow,
    read_errors: u32,
    life: Life,
    cause: Option<TransportError>,
    aborted: bool,
    close: bool,
    stats: DatagramStats,
    events: VecDeque<DatagramEvent<T>>,
}

impl<T> DatagramCore<T> {
    /// A new, open socket.
    pub(crate) fn new(settings: DatagramSettings) -> Self {
        let mut settings = settings;
        settings.max_per_turn = settings.max_per_turn.max(1);
        DatagramCore {
            queue: DatagramQueue::new(settings.max_queued, settings.max_queued_bytes),
            offered: VecDeque::new(),
            send: SendFlow::new(settings.deferred),
            receive: ReceiveFlow::new(settings.reading),
            read_errors: 0,
            life: Life::Open,
            cause: None,
            aborted: false,
            close: false,
            stats: DatagramStats::default(),
            events: VecDeque::new(),
            settings,
        }
    }

    /// Whether it still takes datagrams.
    pub(crate) fn is_open(&self) -> bool {
        self.life == Life::Open
    }

    /// Whether the handle is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.life == Life::Closed
    }

    /// Whether datagrams are queued or being offered.
    pub(crate) fn is_busy(&self) -> bool {
        !self.queue.is_empty() || !self.offered.is_empty()
    }

    /// The counters, with the queue's size now.
    pub(crate) fn stats(&self) -> DatagramStats {
        let mut stats = self.stats;
        stats.queued = self.queue.len() as u64;
        stats
    }

    /// The token of the datagram queued last (the driver attaches a reply channel that
    /// arrives after the datagram was queued).
    pub(crate) fn last_token_mut(&mut self) -> Option<&mut T> {
        match self.queue.items.back_mut() {
            Some(last) => Some(&mut last.token),
            // The last one may be out with the transport already.
            None => self.offered.back_mut().map(|o| &mut o.token),
        }
    }

    /// The error for a datagram that can no longer be sent.
    pub(crate) fn refusal(&self) -> DatagramError {
        match &self.cause {
            Some(e) => DatagramError::Transport(e.clone()),
            None => DatagramError::Closed,
        }
    }

    fn answer(&mut self, token: T, result: Result<DatagramSent, DatagramError>) {
        match &result {
            Ok(sent) => {
                self.stats.sent += 1;
                self.stats.bytes_sent += sent.len as u64;
            }
            Err(_) => self.stats.send_failed += 1,
        }
        self.events.push_back(DatagramEvent::Answer(token, result));
    }

    /// A datagram to send (its file ranges already read into memory). Refused (token
    /// back) when the socket no longer takes datagrams, it has no destination, or the
    /// queue is full.
    /// A datagram refused before it reached the queue (its file range could not be
    /// read into memory): counted as failed.
    pub(crate) fn handle_refused(&mut self) {
        self.stats.send_failed += 1;
    }

    pub(crate) fn handle_send(
        &mut self,
        payload: IoBatch,
        to: Option<Address>,
        token: T,
        now: Instant,
    ) -> Result<(), (DatagramError, T)> {
        let refused = |core: &mut Self, error, token| {
            core.stats.send_failed += 1;
            Err((error, token))
        };
        if self.life != Life::Open {
            let error = self.refusal();
            return refused(self, error, token);
        }
        if to.is_none() && !self.settings.connected {
            return refused(self, DatagramError::NoDestination { payload }, token);
        }
        let item = Queued {
            payload,
            to,
            token,
            at: now,
        };
        if let Err(item) = self.queue.push(item) {
            let error = DatagramError::QueueFull {
                queued: self.queue.len(),
                queued_bytes: self.queue.bytes,
                payload: item.payload,
            };
            return refused(self, error, item.token);
        }
        if self.send.start() {
            self.stats.pending_writes += 1;
        }
        Ok(())
    }

    /// The Flusher's `Flush`.
    pub(crate) fn handle_flush(&mut self) {
        self.send.flush();
    }

    /// The Flusher is gone: send at once from now on.
    pub(crate) fn handle_flusher_gone(&mut self) {
        self.stats.pending_writes = self.stats.pending_writes.saturating_sub(1);
        self.send.flusher_gone();
    }

    /// How many flushes were asked so far, while the last one's `Flush` is still to come
    /// (`None` when none is awaited): what the driver's watch of a Flusher keys on.
    pub(crate) fn awaited_flush(&self) -> Option<u64> {
        self.send
            .is_requested()
            .then_some(self.stats.pending_writes)
    }

    /// The Flusher stopped with this socket's request unhandled: no `Flush` will come
    /// ([`handle_flusher_gone`](Self::handle_flusher_gone), the request counted as made).
    pub(crate) fn handle_flusher_lost(&mut self) {
        self.send.flusher_gone();
    }

    /// The datagram to offer the transport now (after [`IoAction::Transmit`]): its bytes
    /// and destination. Answer with `handle_sent` or `handle_send_pending`.
    pub(crate) fn poll_datagram(&mut self) -> Option<(&IoBatch, Option<&Address>)> {
        self.poll_datagrams(1).next()
    }

    /// Up to `max` datagrams to offer the transport in one call (after
    /// [`IoAction::Transmit`], whose budget bounds `max`), oldest first. Answer each one
    /// the transport took with `handle_sent`, in order; then the first it did not take,
    /// if it said why (would-block, an error). Those not answered stay offered.
    pub(crate) fn poll_datagrams(
        &mut self,
        max: usize,
    ) -> impl Iterator<Item = (&IoBatch, Option<&Address>)> {
        while self.offered.len() < max {
            let Some(item) = self.queue.pop() else {
                break;
            };
            self.offered.push_back(item);
        }
        if max > 0 && !self.offered.is_empty() {
            self.stats.sendv_calls += 1;
        }
        self.offered
            .iter()
            .take(max)
            .map(|o| (&o.payload, o.to.as_ref()))
    }

    /// Answers and drops the offered datagrams from `keep` on, with `error`.
    fn refuse_offered(&mut self, keep: usize, error: &DatagramError) {
        let refused = self.offered.split_off(keep.min(self.offered.len()));
        for item in refused {
            self.answer(item.token, Err(error.clone()));
        }
    }

    /// How many offered datagrams are with a transport that answers later (it never
    /// has more than one).
    fn out(&self) -> usize {
        usize::from(self.send.in_flight())
    }

    /// Whether the socket closed with a datagram out to a transport that has not
    /// answered yet: its driver gives it [`FLIGHT_GRACE`](super::FLIGHT_GRACE), then
    /// calls [`handle_flight_lost`](Self::handle_flight_lost).
    pub(crate) fn flight_unanswered(&self) -> bool {
        // Closed, only what was out stays offered (the rest was refused).
        self.life == Life::Closed && !self.offered.is_empty()
    }

    /// The transport never answered the datagram out at the close: it is answered
    /// [`DatagramError::Lost`] (whether it went out is unknown).
    pub(crate) fn handle_flight_lost(&mut self) {
        if self.life == Life::Closed {
            self.refuse_offered(0, &DatagramError::Lost);
        }
    }

    /// The datagram was handed to a transport that answers later.
    pub(crate) fn handle_send_pending(&mut self) {
        self.send.pending();
    }

    /// What the transport did with the oldest datagram offered.
    pub(crate) fn handle_sent(&mut self, result: Result<Sent, TransportError>, now: Instant) {
        let Some(offered) = self.offered.pop_front() else {
            return;
        };
        if let Ok(Sent::WouldBlock) = result {
            self.stats.would_blocks += 1;
            if self.life == Life::Closed {
                // Never sent: closed meanwhile.
                let error = match self.cause {
                    None if self.aborted => DatagramError::Aborted,
                    _ => self.refusal(),
                };
                return self.answer(offered.token, Err(error));
            }
            // Not taken: it goes out first when the transport can.
            self.offered.push_front(offered);
            self.send.would_block();
            return;
        }
        let len = offered.payload.len();
        let answer = match result {
            Ok(Sent::Accepted(n)) if n == len => Ok(DatagramSent {
                len,
                latency: now.saturating_duration_since(offered.at),
            }),
            Ok(Sent::Accepted(n)) if n < len => Err(DatagramError::Partial { sent: n, len }),
            Ok(Sent::Accepted(n)) => Err(DatagramError::Transport(TransportError::OverAccepted {
                accepted: n,
                offered: len,
            })),
            Ok(Sent::WouldBlock) => return,
            Err(e) if matches!(e, TransportError::Io(_)) => Err(DatagramError::Transport(e)),
            Err(e) => {
                // The handle or the transport is gone: nothing else can be sent.
                self.answer(offered.token, Err(DatagramError::Transport(e.clone())));
                return self.fail(e);
            }
        };
        self.answer(offered.token, answer);
        if self.life != Life::Closed {
            self.send.took(1);
        }
    }

    /// The transport is ready again.
    pub(crate) fn handle_ready(&mut self, readiness: Readiness) {
        match readiness {
            Readiness::Writable => self.send.ready(),
            Readiness::Readable => self.receive.ready(),
        }
    }

    /// The yield asked for is over.
    pub(crate) fn handle_yielded(&mut self, direction: Direction) {
        match direction {
            Direction::Send => self.send.yielded(),
            Direction::Receive => self.receive.yielded(),
        }
    }

    /// Most datagrams to receive in the [`IoAction::Read`] just polled (those left in
    /// this turn).
    pub(crate) fn read_budget(&self) -> usize {
        self.receive.left(self.settings.max_per_turn)
    }

    /// The receive was handed to a transport that answers later.
    pub(crate) fn handle_read_pending(&mut self) {
        self.receive.pending();
    }

    /// Whether a receive's answer is still wanted: a receive is out and the socket is
    /// not closed (a datagram answered after that is dropped, never delivered after
    /// `Closed`).
    pub(crate) fn read_wanted(&self) -> bool {
        self.receive.expecting().is_some() && self.life != Life::Closed
    }

    /// What a receive found (ignored unless [`read_wanted`](Self::read_wanted)).
    pub(crate) fn handle_received(&mut self, received: Received) {
        if !self.read_wanted() {
            return;
        }
        match received {
            Received::Datagram { len, truncated } => {
                self.read_errors = 0;
                self.stats.received += 1;
                self.stats.truncated += u64::from(truncated);
                self.stats.bytes_received += len as u64;
                self.receive.took(1);
            }
            Received::WouldBlock => self.receive.would_block(),
            // Datagram transports have no end of stream; one that says so is done.
            Received::Eof => self.receive.done(),
            // One failed receive (an ICMP error reported on a connected UDP socket, say)
            // does not end the socket; a run of them with no datagram between is an error
            // that will not clear, and does.
            Received::Failed(e)
                if matches!(e, TransportError::Io(_)) && self.read_errors < MAX_READ_ERRORS =>
            {
                self.read_errors += 1;
                self.events.push_back(DatagramEvent::ReadFailed(e));
                self.receive.took(1);
            }
            Received::Failed(e) => {
                self.receive.done();
                self.events.push_back(DatagramEvent::ReadFailed(e.clone()));
                self.fail(e);
            }
        }
    }

    /// Nobody is left to receive for: receiving stops.
    pub(crate) fn handle_subscriber_gone(&mut self) {
        self.receive.done();
    }

    /// Every address of the socket is gone while it waited for `readiness` on the
    /// reactor (the wait ended without it): receiving stops, and the socket closes
    /// gracefully, queued datagrams first (a blocked send waits again).
    pub(crate) fn handle_orphaned(&mut self, readiness: Readiness) {
        self.receive.done();
        if readiness == Readiness::Writable {
            self.send.rewait();
        }
        self.handle_close(false);
    }

    /// Closes: gracefully (queued datagrams leave first) or at once (they are answered
    /// `Aborted`).
    pub(crate) fn handle_close(&mut self, abort: bool) {
        if abort {
            if self.life == Life::Closed {
                return;
            }
            self.aborted = true;
            // Oldest first: the datagrams offered (taken from the queue, blocked), then
            // those still queued.
            self.refuse_offered(self.out(), &DatagramError::Aborted);
            while let Some(item) = self.queue.pop() {
                self.answer(item.token, Err(DatagramError::Aborted));
            }
            self.close_now();
            return;
        }
        if self.life != Life::Open {
            return;
        }
        self.life = Life::Draining;
        self.send.flush();
    }

    /// The actor is asked to stop: `true` to keep it running while queued datagrams
    /// leave (the close is begun here).
    pub(crate) fn handle_stopping(&mut self) -> bool {
        let busy = self.is_busy();
        if self.life == Life::Open && busy {
            self.handle_close(false);
        }
        self.life != Life::Closed && busy
    }

    /// The actor stopped: what is unfinished ends now.
    pub(crate) fn handle_stopped(&mut self) {
        self.close_now();
        // A datagram still out will never be answered.
        self.refuse_offered(0, &DatagramError::Lost);
    }

    /// The next I/O to do; see the stream core's [`IoAction`], with two differences: a
    /// `Transmit`'s budget counts datagrams (those left in this turn), and datagram
    /// sockets never shut down a sending half.
    pub(crate) fn poll_io(&mut self) -> Option<IoAction> {
        loop {
            if self.close {
                self.close = false;
                return Some(IoAction::CloseHandle);
            }
            if self.life == Life::Closed {
                return None;
            }
            let has_work = self.is_busy();
            match self.send.poll(has_work, false, self.settings.max_per_turn) {
                SendPoll::RequestFlush => return Some(IoAction::RequestFlush),
                SendPoll::Transmit(left) => return Some(IoAction::Transmit { budget: left }),
                SendPoll::Yield => return Some(IoAction::Yield(Direction::Send)),
                SendPoll::Wait => return Some(IoAction::Wait(Readiness::Writable)),
                SendPoll::WentIdle => {
                    if self.life == Life::Draining {
                        self.close_now();
                    }
                    continue;
                }
                SendPoll::Nothing => {}
            }
            return match self.receive.poll(false, self.settings.max_per_turn) {
                ReceivePoll::Read => {
                    self.stats.recv_calls += 1;
                    Some(IoAction::Read {
                        max: self.settings.max_datagram_size,
                    })
                }
                ReceivePoll::Yield => Some(IoAction::Yield(Direction::Receive)),
                ReceivePoll::Wait => Some(IoAction::Wait(Readiness::Readable)),
                ReceivePoll::Held | ReceivePoll::Nothing => None,
            };
        }
    }

    /// The next answer or notice to hand on.
    pub(crate) fn poll_event(&mut self) -> Option<DatagramEvent<T>> {
        self.events.pop_front()
    }

    fn fail(&mut self, error: TransportError) {
        self.cause = Some(error);
        self.close_now();
    }

    fn close_now(&mut self) {
        if self.life == Life::Closed {
            return;
        }
        self.life = Life::Closed;
        self.receive.done();
        self.send.stop();
        let refusal = self.refusal();
        // Datagrams offered but not taken (blocked) are not going out now; they are
        // older than those still queued, so answered first.
        self.refuse_offered(self.out(), &refusal);
        while let Some(item) = self.queue.pop() {
            self.answer(item.token, Err(refusal.clone()));
        }
        self.send.idle();
        self.close = true;
        self.events
            .push_back(DatagramEvent::Closed(self.cause.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(len: usize) -> Queued<usize> {
        Queued {
            payload: vec![0u8; len].into(),
            to: None,
            token: len,
            at: Instant::now(),
        }
    }

    #[test]
    fn the_queue_refuses_past_its_datagram_count() {
        let mut q = DatagramQueue::new(2, 1 << 20);
        assert!(q.push(item(1)).is_ok());
        assert!(q.push(item(2)).is_ok());
        let refused = q.push(item(3)).expect_err("full");
        assert_eq!(refused.token, 3);
        assert_eq!(refused.payload.len(), 3, "the payload comes back");
        assert_eq!(q.pop().map(|i| i.token), Some(1));
        assert!(q.push(item(4)).is_ok(), "room again");
    }

    #[test]
    fn the_queue_refuses_past_its_bytes_but_takes_any_one_datagram() {
        let mut q = DatagramQueue::new(100, 10);
        assert!(
            q.push(item(50)).is_ok(),
            "an empty queue takes any one datagram"
        );
        assert!(q.push(item(1)).is_err());
        assert_eq!(q.pop().map(|i| i.token), Some(50));
        assert_eq!(q.bytes, 0);
        assert!(q.push(item(6)).is_ok());
        assert!(q.push(item(4)).is_ok(), "exactly at the limit");
        assert!(q.push(item(1)).is_err());
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn the_queue_is_fifo_and_counts_bytes() {
        let mut q = DatagramQueue::new(10, 100);
        for len in [3, 1, 2] {
            assert!(q.push(item(len)).is_ok());
        }
        assert_eq!(q.bytes, 6);
        let order: Vec<usize> = std::iter::from_fn(|| q.pop().map(|i| i.token)).collect();
        assert_eq!(order, [3, 1, 2]);
        assert!(q.is_empty());
    }

    fn settings() -> DatagramSettings {
        DatagramSettings {
            max_queued: 8,
            max_queued_bytes: 1 << 20,
            max_datagram_size: 1500,
            max_per_turn: 2,
            deferred: true,
            reading: false,
            connected: true,
        }
    }

    fn answers(core: &mut DatagramCore<u32>) -> Vec<(u32, bool)> {
        let mut out = Vec::new();
        while let Some(e) = core.poll_event() {
            if let DatagramEvent::Answer(t, r) = e {
                out.push((t, r.is_ok()));
            }
        }
        out
    }

    #[test]
    fn datagrams_leave_whole_in_order_with_a_yield_per_turn() {
        let mut core = DatagramCore::new(settings());
        let now = Instant::now();
        for t in 0..3u32 {
            core.handle_send(vec![t as u8; 10].into(), None, t, now)
                .expect("queued");
        }
        assert_eq!(core.poll_io(), Some(IoAction::RequestFlush));
        assert_eq!(core.poll_io(), None);
        core.handle_flush();
        for _ in 0..2 {
            assert!(matches!(core.poll_io(), Some(IoAction::Transmit { .. })));
            assert_eq!(core.poll_datagram().map(|(p, _)| p.len()), Some(10));
            core.handle_sent(Ok(Sent::Accepted(10)), now);
        }
        assert_eq!(core.poll_io(), Some(IoAction::Yield(Direction::Send)));
        core.handle_yielded(Direction::Send);
        assert_eq!(core.poll_io(), Some(IoAction::Transmit { budget: 2 }));
        core.poll_datagram();
        core.handle_sent(Ok(Sent::Accepted(4)), now);
        assert_eq!(answers(&mut core), [(0, true), (1, true), (2, false)]);
        assert_eq!(core.poll_io(), None, "idle");
    }

    #[test]
    fn a_blocked_datagram_goes_again_whole_and_a_graceful_close_waits_for_it() {
        let mut core = DatagramCore::new(DatagramSettings {
            deferred: false,
            ..settings()
        });
        let now = Instant::now();
        core.handle_send(vec![1u8; 5].into(), None, 1, now)
            .expect("queued");
        assert_eq!(core.poll_io(), Some(IoAction::Transmit { budget: 2 }));
        core.poll_datagram();
        core.handle_send_pending();
        core.handle_sent(Ok(Sent::WouldBlock), now);
        core.handle_close(false);
        assert_eq!(core.poll_io(), Some(IoAction::Wait(Readiness::Writable)));
        assert!(!core.is_closed());
        core.handle_ready(Readiness::Writable);
        assert_eq!(core.poll_io(), Some(IoAction::Transmit { budget: 2 }));
        assert_eq!(core.poll_datagram().map(|(p, _)| p.len()), Some(5));
        core.handle_sent(Ok(Sent::Accepted(5)), now);
        assert_eq!(core.poll_io(), Some(IoAction::CloseHandle));
        assert_eq!(answers(&mut core), [(1, true)]);
        assert!(core.is_closed());
    }

    #[test]
    fn a_batch_is_answered_in_order_and_what_was_not_taken_goes_first_next_time() {
        let mut core = DatagramCore::new(DatagramSettings {
            deferred: false,
            max_per_turn: 8,
            ..settings()
        });
        let now = Instant::now();
        for t in 0..5u32 {
            core.handle_send(vec![t as u8; 3].into(), None, t, now)
                .expect("queued");
        }
        assert_eq!(core.poll_io(), Some(IoAction::Transmit { budget: 8 }));
        let offered: Vec<u8> = core.poll_datagrams(3).map(|(p, _)| p.len() as u8).collect();
        assert_eq!(offered, [3, 3, 3], "three of the five, oldest first");
        core.handle_sent(Ok(Sent::Accepted(3)), now);
        core.handle_sent(Ok(Sent::Accepted(3)), now);
        // The kernel took two; the third met a full buffer.
        core.handle_sent(Ok(Sent::WouldBlock), now);
        assert_eq!(core.poll_io(), Some(IoAction::Wait(Readiness::Writable)));
        core.handle_ready(Readiness::Writable);
        assert_eq!(core.poll_io(), Some(IoAction::Transmit { budget: 8 }));
        let again: Vec<u8> = core
            .poll_datagrams(8)
            .map(|(p, _)| p.segments()[0].as_bytes().map_or(0, |b| b[0]))
            .collect();
        assert_eq!(
            again,
            [2, 3, 4],
            "the blocked one first, then the rest in order"
        );
        core.handle_sent(Ok(Sent::Accepted(3)), now);
        core.handle_close(true);
        assert_eq!(
            answers(&mut core),
            [(0, true), (1, true), (2, true), (3, false), (4, false)],
            "an abort answers what stayed offered, in order"
        );
        assert_eq!(core.stats().sendv_calls, 2, "two calls offered batches");
    }

    #[test]
    fn the_read_budget_is_what_is_left_of_the_turn() {
        let mut core: DatagramCore<u32> = DatagramCore::new(DatagramSettings {
            reading: true,
            max_per_turn: 4,
            ..settings()
        });
        assert!(matches!(core.poll_io(), Some(IoAction::Read { .. })));
        assert_eq!(core.read_budget(), 4);
        for _ in 0..3 {
            core.handle_received(Received::Datagram {
                len: 1,
                truncated: false,
            });
        }
        assert!(matches!(core.poll_io(), Some(IoAction::Read { .. })));
        assert_eq!(core.read_budget(), 1);
        core.handle_received(Received::Datagram {
            len: 1,
            truncated: false,
        });
        assert_eq!(core.poll_io(), Some(IoAction::Yield(Direction::Receive)));
        assert_eq!(core.stats().recv_calls, 2);
    }
}
