//! The state a [`Socket`](crate::Socket) shares with its [`Writer`] handles, and the
//! handles themselves: the direct write path that skips the actor mailbox.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context as TaskContext, Poll};

use actix::dev::OneshotSender;
use actix::{Recipient, WeakRecipient};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::inbound::ReadWindow;
use crate::batch::IoBatch;
use crate::error::{TransportError, WriteError};
use crate::messages::flush::{Flush, PendingWrite};
use crate::messages::socket::{
    SocketEvent, SocketEventKind, SocketId, SocketStats, WritabilityChanged, Written,
};
use crate::queue::WriteQueue;

pub(crate) type ReplyTx = OneshotSender<Result<Written, WriteError>>;

/// Where one write's answer goes.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) tag: Option<u64>,
    pub(crate) to: ReplyTo,
}

#[derive(Debug)]
pub(crate) enum ReplyTo {
    /// Fire-and-forget: failures go to tracing and the subscriber.
    Nobody,
    /// A [`Writer::write_answered`] future.
    Tx(ReplyTx),
    /// A `Write` message: actix hands over the reply channel right after the handler
    /// returns, so it is parked here (see `WriteResponse`).
    Slot(Arc<Mutex<SlotState>>),
}

/// The meeting point of a `Write` message's answer and its reply channel, whichever
/// comes first: a write can finish inside its own handler (the immediate policy writes
/// in place), before actix has handed over the channel.
#[derive(Debug, Default)]
pub(crate) enum SlotState {
    /// Neither has come yet.
    #[default]
    Empty,
    /// The channel came first (`None`: `do_send`, nobody listens).
    Waiting(Option<ReplyTx>),
    /// The answer came first.
    Answered(Result<Written, WriteError>),
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
        }
    }

    /// The answer for a write that arrives after the socket shut.
    pub(crate) fn refusal(&self, len: usize) -> WriteError {
        match self {
            Shut::Closed | Shut::Aborted => WriteError::Closed { bytes_sent: 0, len },
            Shut::Failed(_) => self.error(0, len),
        }
    }
}

/// The part of a socket that writers touch, behind one mutex.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) queue: WriteQueue<Reply>,
    /// The socket is responsible for flushing (a wake is out, or a flush is under way).
    /// A push that makes the queue non-empty while this is false must wake the socket.
    pub(crate) flushing: bool,
    pub(crate) shut: Option<Shut>,
    pub(crate) stats: Counters,
    pub(crate) writability: Vec<Recipient<WritabilityChanged>>,
}

/// The socket's counters (the stored part of [`SocketStats`]; queue sizes are read
/// off the queue when asked).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) writes: u64,
    pub(crate) writes_completed: u64,
    pub(crate) writes_failed: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) sendv_calls: u64,
    pub(crate) sendfile_calls: u64,
    pub(crate) would_blocks: u64,
    pub(crate) pending_writes: u64,
    pub(crate) bytes_received: u64,
}

impl Counters {
    pub(crate) fn stats<T>(&self, queue: &WriteQueue<T>, waiting: usize) -> SocketStats {
        SocketStats {
            writes: self.writes,
            writes_completed: self.writes_completed,
            writes_failed: self.writes_failed,
            bytes_sent: self.bytes_sent,
            sendv_calls: self.sendv_calls,
            sendfile_calls: self.sendfile_calls,
            file_bytes_read: queue.file_bytes_read(),
            would_blocks: self.would_blocks,
            pending_writes: self.pending_writes,
            bytes_received: self.bytes_received,
            queued_bytes: queue.queued_bytes() as u64,
            queued_writes: (queue.len() + waiting) as u64,
            unacked_deliveries: 0,
            unacked_bytes: 0,
        }
    }
}

/// How a push that needs a flush wakes the socket.
#[derive(Debug)]
pub(crate) struct Wake {
    pub(crate) flusher: Option<Arc<Recipient<PendingWrite>>>,
    pub(crate) socket: WeakRecipient<Flush>,
}

/// State shared between a socket actor and its writers.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) id: SocketId,
    pub(crate) wake: Wake,
    pub(crate) subscriber: Option<Recipient<SocketEvent>>,
    pub(crate) span: tracing::Span,
    /// The read window, shared with the permits of unacknowledged deliveries.
    pub(crate) reads: ReadWindow,
    state: Mutex<Shared>,
}

/// The result of a push.
pub(crate) enum Pushed {
    /// Queued; `wake` says the caller must get the socket flushing.
    Queued { wake: bool },
    /// A zero-length write with nothing ahead of it: already answered.
    Done,
}

impl Core {
    pub(crate) fn new(
        id: SocketId,
        wake: Wake,
        subscriber: Option<Recipient<SocketEvent>>,
        span: tracing::Span,
        reads: ReadWindow,
        shared: Shared,
    ) -> Self {
        Core {
            id,
            wake,
            subscriber,
            span,
            reads,
            state: Mutex::new(shared),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a write. Refused writes come back with the error to answer them with (the
    /// caller counts them as failed once it knows they will not wait for room).
    pub(crate) fn push(
        &self,
        batch: IoBatch,
        reply: Reply,
        now: Instant,
    ) -> Result<Pushed, (WriteError, Reply)> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(shut) = &st.shut {
            let error = shut.refusal(batch.len());
            return Err((error, reply));
        }
        let was_empty = st.queue.is_empty();
        let tag = reply.tag;
        let mut done = None;
        match st
            .queue
            .push(batch, tag, reply, now, |r, res| done = Some((r, res)))
        {
            Ok(()) => {}
            Err(refused) => {
                let error = WriteError::QueueFull {
                    queued: refused.queued,
                    high_watermark: st.queue.config().high_watermark,
                    payload: refused.batch,
                };
                return Err((error, refused.token));
            }
        }
        st.stats.writes += 1;
        if let Some(writable) = st.queue.take_writability_change() {
            // Sent under the lock: the socket's thread publishes the opposite change under
            // the same lock, so every subscriber hears the changes in the order they
            // happened (sent after releasing it, a `true` could overtake this `false`).
            st.writability.retain(|r| r.connected());
            notify_writability(self.id, &st.writability, writable);
        }
        let wake = was_empty && !st.queue.is_empty() && !st.flushing;
        if wake {
            st.flushing = true;
        }
        let completed_now = done.is_some();
        if let Some((reply, result)) = done {
            answer(self, &mut st.stats, reply, result);
        }
        drop(guard);
        Ok(if completed_now {
            Pushed::Done
        } else {
            Pushed::Queued { wake }
        })
    }

    /// Gets a flush going from outside the actor: through the Flusher when there is a live
    /// one, else straight to the socket.
    pub(crate) fn wake_from_outside(&self) {
        let Some(socket) = self.wake.socket.upgrade() else {
            return;
        };
        match &self.wake.flusher {
            Some(flusher) if flusher.connected() => {
                self.lock().stats.pending_writes += 1;
                flusher.do_send(PendingWrite {
                    socket: self.id,
                    flush: socket,
                });
            }
            _ => socket.do_send(Flush),
        }
    }
}

pub(crate) fn notify_writability(
    id: SocketId,
    subscribers: &[Recipient<WritabilityChanged>],
    writable: bool,
) {
    let msg = WritabilityChanged {
        socket: id,
        writable,
    };
    for r in subscribers {
        r.do_send(msg);
    }
}

/// Delivers one write's answer: to whoever waits for it, or (for fire-and-forget
/// failures) to tracing and the subscriber.
pub(crate) fn answer(
    core: &Core,
    stats: &mut Counters,
    reply: Reply,
    result: Result<Written, WriteError>,
) {
    match &result {
        Ok(w) => {
            stats.writes_completed += 1;
            tracing::trace!(parent: &core.span, len = w.len, sendv_calls = w.sendv_calls,
                would_blocks = w.would_blocks, writes_per_sendv = w.max_writes_per_sendv,
                latency_us = w.latency.as_micros() as u64, "write done");
        }
        Err(_) => stats.writes_failed += 1,
    }
    let tx = match reply.to {
        ReplyTo::Nobody => None,
        ReplyTo::Tx(tx) => Some(tx),
        ReplyTo::Slot(slot) => {
            let mut state = slot.lock().unwrap_or_else(PoisonError::into_inner);
            match std::mem::take(&mut *state) {
                SlotState::Waiting(tx) => tx,
                SlotState::Empty | SlotState::Answered(_) => {
                    // Answered inside its own handler: the response picks it up.
                    *state = SlotState::Answered(result);
                    return;
                }
            }
        }
    };
    let unanswered = match tx {
        Some(tx) => tx.send(result).err(),
        None => Some(result),
    };
    if let Some(Err(error)) = unanswered {
        report_failure(core, reply.tag, error);
    }
}

/// A failed write nobody waits for: tracing and the subscriber hear of it.
pub(crate) fn report_failure(core: &Core, tag: Option<u64>, error: WriteError) {
    tracing::warn!(parent: &core.span, ?tag, %error, "write failed with nobody waiting for its answer");
    if let Some(s) = &core.subscriber {
        s.do_send(SocketEvent {
            socket: core.id,
            kind: SocketEventKind::WriteFailed { tag, error },
            permit: None,
        });
    }
}

/// A cloneable handle that writes straight into a socket's queue, without a message per
/// write. Get one with [`GetWriter`](crate::messages::GetWriter).
///
/// Same semantics as [`Write`](crate::messages::Write): writes from one handle leave in
/// the order they were made and never interleave with others, every write gets exactly
/// one answer, the queue is bounded by the same watermarks. The socket is woken (a
/// [`PendingWrite`] to its Flusher, or a [`Flush`] with the immediate policy) only when
/// the queue goes from empty to non-empty while no flush is under way, so a burst costs
/// one wake-up however many writes it has.
///
/// Writes that wait for room ([`Write::wait_when_full`](crate::messages::Write::wait_when_full))
/// exist only on the message path; a writer gets [`WriteError::QueueFull`] at once and
/// can watch [`WritabilityChanged`].
#[derive(Clone, Debug)]
pub struct Writer {
    core: Arc<Core>,
}

impl Writer {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Writer { core }
    }

    /// The socket written to.
    pub fn socket(&self) -> SocketId {
        self.core.id
    }

    /// Fire-and-forget write. Refused at once with [`WriteError::QueueFull`] (payload
    /// handed back) or [`WriteError::Closed`]/[`WriteError::Transport`] when the socket
    /// no longer takes writes; a later failure is reported to the subscriber.
    pub fn write(&self, batch: impl Into<IoBatch>) -> Result<(), WriteError> {
        self.push(batch.into(), None, ReplyTo::Nobody)
    }

    /// Fire-and-forget write with a tag (reported with a later failure).
    pub fn write_tagged(&self, batch: impl Into<IoBatch>, tag: u64) -> Result<(), WriteError> {
        self.push(batch.into(), Some(tag), ReplyTo::Nobody)
    }

    /// A write whose answer can be awaited. The future resolves when the transport has
    /// accepted its last byte, or with the error that ended it.
    pub fn write_answered(&self, batch: impl Into<IoBatch>) -> WriteFuture {
        let batch = batch.into();
        let len = batch.len();
        let (tx, rx) = oneshot::channel();
        match self.push(batch, None, ReplyTo::Tx(tx)) {
            Ok(()) => WriteFuture(FutureState::Waiting(rx, len)),
            Err(e) => WriteFuture(FutureState::Ready(Some(Err(e)))),
        }
    }

    fn push(&self, batch: IoBatch, tag: Option<u64>, to: ReplyTo) -> Result<(), WriteError> {
        match self.core.push(batch, Reply { tag, to }, Instant::now()) {
            Ok(Pushed::Queued { wake }) => {
                if wake {
                    self.core.wake_from_outside();
                }
                Ok(())
            }
            Ok(Pushed::Done) => Ok(()),
            Err((error, _reply)) => {
                self.core.lock().stats.writes_failed += 1;
                Err(error)
            }
        }
    }

    /// Whether a write would be accepted now (the queue is below its high watermark, or
    /// has drained to the low one since).
    pub fn is_writable(&self) -> bool {
        let st = self.core.lock();
        st.shut.is_none() && st.queue.is_writable()
    }

    /// Unsent bytes queued.
    pub fn queued_bytes(&self) -> usize {
        self.core.lock().queue.queued_bytes()
    }
}

/// The answer to a [`Writer::write_answered`].
#[derive(Debug)]
pub struct WriteFuture(FutureState);

#[derive(Debug)]
enum FutureState {
    Ready(Option<Result<Written, WriteError>>),
    Waiting(oneshot::Receiver<Result<Written, WriteError>>, usize),
}

impl Future for WriteFuture {
    type Output = Result<Written, WriteError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            FutureState::Ready(result) => {
                Poll::Ready(result.take().unwrap_or(Err(WriteError::Lost { len: 0 })))
            }
            FutureState::Waiting(rx, len) => {
                let len = *len;
                Pin::new(rx)
                    .poll(cx)
                    .map(|r| r.unwrap_or(Err(WriteError::Lost { len })))
            }
        }
    }
}
