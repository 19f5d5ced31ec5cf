//! [`Writer`]: a cloneable, `Send` handle for writing to a [`Socket`] from any task or
//! thread, with a synchronous refusal when the queue is full and an async wait for room.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use actix::{Addr, Message};
use tokio::sync::oneshot;

use super::Socket;
use crate::batch::IoBatch;
use crate::error::WriteError;
use crate::messages::socket::{Close, Write, Written};
use crate::shared::Shared;
use crate::types::SocketId;

/// Ask a socket for a [`Writer`]. Handled by [`Socket`].
#[derive(Clone, Copy, Debug, Default)]
pub struct GetWriter;

impl Message for GetWriter {
    type Result = Writer;
}

/// A cloneable, `Send` handle that writes to a socket from any task or thread. Get one
/// with [`GetWriter`].
///
/// A writer's writes go through the socket's mailbox like [`Write`] messages, so they
/// keep their order with everything else sent to the socket (its own writes and
/// [`close`](Self::close), `send`/`do_send` of any message) and every write gets exactly
/// one answer. What a writer adds:
///
/// - **Refusals at once.** A write is admitted against the socket's watermarks before it
///   is sent: past the high watermark [`write`](Self::write) returns
///   [`WriteError::QueueFull`] with the payload, synchronously, so a pipelining producer
///   never queues later writes ahead of a refused one. After the socket closed it returns
///   [`WriteError::Closed`] (or the transport error that closed it).
/// - **Waiting for room.** [`writable`](Self::writable) waits until a write would be
///   admitted; [`write_when_ready`](Self::write_when_ready) waits and writes.
/// - **No answer channel** for fire-and-forget writes; a later failure goes to the
///   socket's subscriber as [`SocketEventKind::WriteFailed`](crate::messages::SocketEventKind::WriteFailed).
///
/// A writer holds the socket's address: the socket lives (and keeps its connection) while
/// any writer does.
#[derive(Clone, Debug)]
pub struct Writer {
    socket: Option<Addr<Socket>>,
    shared: Arc<Shared>,
}

impl Writer {
    pub(crate) fn new(socket: Option<Addr<Socket>>, shared: Arc<Shared>) -> Self {
        Writer { socket, shared }
    }

    /// The socket written to.
    pub fn socket(&self) -> SocketId {
        self.shared.id
    }

    /// Admits a write against the watermarks, or hands the payload back with why not.
    /// Admits `batch` to the socket's queue. A refusal counts as a failed write, unless
    /// the write `waits` for room and the queue is only full (it is made again).
    fn admit(&self, batch: IoBatch, waits: bool) -> Result<(IoBatch, &Addr<Socket>), WriteError> {
        let len = batch.len();
        let Some(socket) = &self.socket else {
            return Err(WriteError::Closed { bytes_sent: 0, len });
        };
        match self.shared.admit(len) {
            Ok(()) => Ok((batch, socket)),
            Err(error) => {
                if !(waits && matches!(error, WriteError::QueueFull { .. })) {
                    self.shared.count_refused(1);
                }
                Err(match error {
                    WriteError::QueueFull {
                        queued,
                        high_watermark,
                        ..
                    } => WriteError::QueueFull {
                        queued,
                        high_watermark,
                        payload: batch,
                    },
                    other => other,
                })
            }
        }
    }

    fn message(
        batch: IoBatch,
        tag: Option<u64>,
        reply: Option<oneshot::Sender<Result<Written, WriteError>>>,
    ) -> Write {
        Write {
            batch,
            tag,
            wait_when_full: false,
            admitted: true,
            reply,
        }
    }

    /// Fire-and-forget write. Refused at once with [`WriteError::QueueFull`] (payload
    /// handed back) or [`WriteError::Closed`]/[`WriteError::Transport`] when the socket
    /// no longer takes writes; a later failure is reported to the subscriber.
    pub fn write(&self, batch: impl Into<IoBatch>) -> Result<(), WriteError> {
        self.write_inner(batch.into(), None, false)
    }

    /// Fire-and-forget write with a tag (reported with a later failure, and usable with
    /// [`CancelWrite`](crate::messages::CancelWrite)).
    pub fn write_tagged(&self, batch: impl Into<IoBatch>, tag: u64) -> Result<(), WriteError> {
        self.write_inner(batch.into(), Some(tag), false)
    }

    /// A write that will be made again when the queue is full (it waits for room, or
    /// a `FramedWriter` holds it): a full queue does not count it as failed.
    pub(crate) fn write_again_when_full(&self, batch: IoBatch) -> Result<(), WriteError> {
        self.write_inner(batch, None, true)
    }

    /// A write refused elsewhere (a `FramedWriter`'s item behind bytes the queue
    /// refused) counts as a failed write.
    pub(crate) fn count_refused(&self) {
        self.shared.count_refused(1);
    }

    fn write_inner(&self, batch: IoBatch, tag: Option<u64>, waits: bool) -> Result<(), WriteError> {
        let len = batch.len();
        let (batch, socket) = self.admit(batch, waits)?;
        if socket.try_send(Self::message(batch, tag, None)).is_err() {
            // The actor is gone (its runtime stopped): nothing of it was sent.
            self.shared.release(len);
            return Err(WriteError::Closed { bytes_sent: 0, len });
        }
        Ok(())
    }

    /// Fire-and-forget writes, each a write of its own (its own place in the stream,
    /// its own failure report), sent to the socket in one message: a producer with
    /// several writes at hand pays one mailbox message for all of them. They keep their
    /// order with everything else sent to the socket, like [`write`](Self::write)s made
    /// one after another.
    ///
    /// Admitted together, by their total: refused at once, all of them, with the writes
    /// handed back when the queue is at its high watermark or the socket no longer takes
    /// writes.
    ///
    /// ```
    /// # async fn demo(writer: sockactor::Writer) -> Result<(), sockactor::WritesRefused> {
    /// use bytes::Bytes;
    /// let replies: Vec<sockactor::IoBatch> = (0..3)
    ///     .map(|i| Bytes::from(format!("+OK {i}\r\n")).into())
    ///     .collect();
    /// writer.write_each(replies)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn write_each(&self, writes: Vec<IoBatch>) -> Result<(), WritesRefused> {
        let len = writes
            .iter()
            .map(IoBatch::len)
            .fold(0usize, usize::saturating_add);
        let Some(socket) = &self.socket else {
            let error = WriteError::Closed { bytes_sent: 0, len };
            return Err(WritesRefused { error, writes });
        };
        if let Err(error) = self.shared.admit(len) {
            // Each a write of its own, each refused.
            self.shared.count_refused(writes.len() as u64);
            return Err(WritesRefused { error, writes });
        }
        if let Err(returned) = socket.try_send(WriteEach(writes)) {
            self.shared.release(len);
            let writes = match returned {
                actix::dev::SendError::Full(m) | actix::dev::SendError::Closed(m) => m.0,
            };
            let error = WriteError::Closed { bytes_sent: 0, len };
            return Err(WritesRefused { error, writes });
        }
        Ok(())
    }

    /// A write whose answer can be awaited. A refusal is decided now (the future is then
    /// ready with it); otherwise the future resolves when the transport has accepted its
    /// last byte, or with the error that ended it.
    pub fn write_answered(&self, batch: impl Into<IoBatch>) -> WriteFuture {
        let batch = batch.into();
        let len = batch.len();
        let (batch, socket) = match self.admit(batch, false) {
            Ok(admitted) => admitted,
            Err(e) => return WriteFuture(FutureState::Ready(Some(Err(e)))),
        };
        let (tx, rx) = oneshot::channel();
        if socket
            .try_send(Self::message(batch, None, Some(tx)))
            .is_err()
        {
            self.shared.release(len);
            let closed = WriteError::Closed { bytes_sent: 0, len };
            return WriteFuture(FutureState::Ready(Some(Err(closed))));
        }
        WriteFuture(FutureState::Waiting(rx, len))
    }

    /// Waits until a write would be admitted (the queue is below its high watermark, or
    /// has drained to the low one since), or fails with why the socket no longer takes
    /// writes.
    pub async fn writable(&self) -> Result<(), WriteError> {
        if self.socket.is_none() {
            return Err(WriteError::Closed {
                bytes_sent: 0,
                len: 0,
            });
        }
        self.shared.room().await
    }

    /// Waits for room, then writes (fire-and-forget, like [`write`](Self::write)). Fails
    /// only when the socket no longer takes writes.
    pub async fn write_when_ready(&self, batch: impl Into<IoBatch>) -> Result<(), WriteError> {
        let mut batch = batch.into();
        loop {
            match self.write_inner(batch, None, true) {
                Err(WriteError::QueueFull { payload, .. }) => {
                    batch = payload;
                    if self.writable().await.is_err() {
                        // The socket shut while this waited: its refusal (which names
                        // this write's length), counted as a failed write, answers it.
                        return self.write_inner(batch, None, false);
                    }
                }
                other => return other,
            }
        }
    }

    /// Sends `batch` as a write that waits for room in the socket rather than being
    /// refused (for bytes that cannot be handed back: a dropped `FramedWriter`'s
    /// buffer). Fire-and-forget; a failure goes to the subscriber. With no socket to
    /// take it (the socket's actor is gone, its arbiter stopped), the bytes are dropped
    /// with a warning that names them.
    pub(crate) fn write_waiting(&self, batch: IoBatch) {
        let len = batch.len();
        match &self.socket {
            Some(socket) if socket.connected() => socket.do_send(Write {
                batch,
                tag: None,
                wait_when_full: true,
                admitted: false,
                reply: None,
            }),
            _ if len == 0 => {}
            _ => tracing::warn!(
                socket = %self.socket(),
                "{len} bytes dropped unsent: the writer's socket is gone"
            ),
        }
    }

    /// Closes the socket gracefully after the writes sent before it (this writer's and
    /// anyone's): they are sent, then the socket shuts down its sending half and closes.
    pub fn close(&self) {
        if let Some(socket) = &self.socket {
            socket.do_send(Close::Graceful);
        }
    }

    /// Whether a write would be admitted now (the queue is below its high watermark, or
    /// has drained to the low one since).
    pub fn is_writable(&self) -> bool {
        self.socket.is_some() && self.shared.is_writable()
    }

    /// Bytes admitted and not yet sent (queued, or on their way to the queue).
    pub fn queued_bytes(&self) -> usize {
        self.shared.admitted()
    }
}

/// Several writes a [`Writer`] admitted, sent to the socket as one message: each is
/// queued as a write of its own, in order (see [`Writer::write_each`]).
#[derive(Debug)]
pub(crate) struct WriteEach(pub(crate) Vec<IoBatch>);

impl Message for WriteEach {
    type Result = ();
}

/// A [`Writer::write_each`] that was refused: why, and every write, untouched.
#[derive(Debug)]
pub struct WritesRefused {
    /// Why: [`WriteError::QueueFull`] (its payload empty: the writes are here),
    /// [`WriteError::Closed`] or the transport error that closed the socket.
    pub error: WriteError,
    /// The writes, none of them sent.
    pub writes: Vec<IoBatch>,
}

impl std::fmt::Display for WritesRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} writes refused: {}", self.writes.len(), self.error)
    }
}

impl std::error::Error for WritesRefused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The answer to a [`Writer::write_answered`]. Dropping it does not cancel the write.
#[derive(Debug)]
pub struct WriteFuture(FutureState);

#[derive(Debug)]
enum FutureState {
    Ready(Option<Result<Written, WriteError>>),
    Waiting(oneshot::Receiver<Result<Written, WriteError>>, usize),
}

impl WriteFuture {
    /// The refusal, known at once when the write was not queued (queue full, with the
    /// payload back; socket closed): a pipelining caller can check it before it writes
    /// the next item, so its stream cannot go out of order. `None`: the write is queued
    /// and its answer comes by awaiting.
    pub fn refused(&self) -> Option<&WriteError> {
        match &self.0 {
            FutureState::Ready(Some(Err(e))) => Some(e),
            _ => None,
        }
    }
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
