//! Typed frames both ways: a [`FramedWriter`] encodes items with a tokio-util
//! [`Encoder`] and writes them through a [`Writer`] (a `futures` `Sink` with
//! backpressure); a [`FrameStream`] yields what the socket's [`Decoder`] made of the peer's
//! bytes (a `futures` `Stream`). [`SocketBuilder::connect_framed`] gives both in one call,
//! as tokio-util's `Framed::new(stream, codec).split()` does.
//!
//! [`Decoder`]: tokio_util::codec::Decoder
//! [`SocketBuilder::connect_framed`]: super::SocketBuilder::connect_framed

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use actix::{Actor, Addr, Context, Handler};
use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::sync::mpsc;
use tokio_util::codec::Encoder;

use super::{Socket, Writer};
use crate::batch::IoBatch;
use crate::error::{DecodeError, TransportError, WriteError};
use crate::messages::read::Frame;
use crate::messages::socket::{SocketEvent, SocketEventKind};

/// Why a [`FramedWriter`] could not write an item.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FramedWriteError<E> {
    /// The encoder refused the item.
    #[error("encoding failed: {0}")]
    Encode(E),
    /// The socket refused the encoded bytes (closed, failed, or full: a
    /// [`WriteError::QueueFull`] carries them back).
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// A wait for room in the socket's queue.
type Room = Pin<Box<dyn Future<Output = Result<(), WriteError>> + Send>>;

/// Items encoded with `E` and written, in order, through a [`Writer`]: made by
/// [`Writer::framed`] or [`SocketBuilder::connect_framed`](super::SocketBuilder::connect_framed).
///
/// - [`send`](Self::send) waits for room in the socket's queue, then writes.
/// - [`try_send`](Self::try_send) writes now or says why not at once (a full queue hands
///   the encoded bytes back), so a pipelining client learns of a refusal before it writes
///   the next item.
/// - As a [`Sink`] (`futures::SinkExt::send`, `send_all`, `forward`) it buffers, as
///   tokio-util's `FramedWrite` does: `start_send` encodes the item into the writer's
///   buffer, and the buffer goes to the socket as one write when it holds
///   [`FramedWriter::BUFFERED`] bytes (`poll_ready` then waits for room in the socket's
///   queue) or at `poll_flush`, which is ready once every item is in the socket's queue
///   (the socket writes them in order; await a [`Writer::write_answered`] to know the
///   transport took them). `SinkExt::send` flushes after its item; `send_all` and
///   `forward` flush at the end, so a run of small items costs one mailbox message per
///   buffer, not per item. `poll_close` flushes, then closes the socket gracefully.
///   Items buffered and not yet flushed are not in the socket's queue: a write by any
///   other path goes ahead of them. [`try_send`](Self::try_send) and
///   [`send`](Self::send) write the buffer first, then their item. Dropped with items
///   unflushed, the writer sends them to the socket as writes that wait for room there:
///   nothing fed is lost while the socket lives (a closed socket refuses them with a
///   warning, and a socket gone for good, its arbiter stopped, too: each names the
///   bytes).
///
/// ```no_run
/// use sockactor::Socket;
/// use tokio_util::codec::LinesCodec;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let (mut lines, mut replies) = Socket::builder()
///     .connect_framed("127.0.0.1:7000".parse::<std::net::SocketAddr>()?, LinesCodec::new())
///     .await?;
/// lines.send("PING".to_string()).await?;
/// if let Some(reply) = replies.next().await {
///     println!("{}", reply?);
/// }
/// # Ok(()) }
/// ```
pub struct FramedWriter<E> {
    writer: Writer,
    encoder: E,
    buf: BytesMut,
    /// Encoded bytes the queue refused (full): they go first.
    pending: Option<IoBatch>,
    room: Option<Room>,
    /// The `Sink`'s buffers handed to the socket, reused once it has let go of them.
    spent: Spent,
}

/// The buffers a [`FramedWriter`]'s `Sink` handed to the socket (zero-copy), kept to be
/// reused once the socket has let go of them: a fresh 64 KiB buffer per flush, grown
/// from nothing, cost a chain of reallocations and fresh pages faulted in (as much as
/// the encryption of a TLS socket's writes). A tokio `BufWriter` keeps one buffer for
/// good; this keeps at most [`Spent::KEPT`] references.
#[derive(Debug, Default)]
struct Spent(Vec<Bytes>);

impl Spent {
    /// Buffers kept: one the socket may still be sending, and one free.
    const KEPT: usize = 2;

    /// A buffer was handed to the socket: keep a reference to reuse it later (not one
    /// much larger than the Sink's own, which a huge item made).
    fn keep(&mut self, handed: &Bytes, capacity: usize) {
        if capacity > 4 * FramedWriter::<()>::BUFFERED {
            return;
        }
        if self.0.len() == Self::KEPT {
            self.0.remove(0);
        }
        self.0.push(handed.clone());
    }

    /// A buffer the socket has let go of, emptied; or a new one with room for a full
    /// Sink buffer and an item more.
    fn take(&mut self) -> BytesMut {
        while let Some(at) = self.0.iter().position(Bytes::is_unique) {
            if let Ok(mut buf) = self.0.swap_remove(at).try_into_mut() {
                buf.clear();
                return buf;
            }
        }
        BytesMut::with_capacity(FramedWriter::<()>::BUFFERED + FramedWriter::<()>::BUFFERED / 4)
    }
}

impl<E> std::fmt::Debug for FramedWriter<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramedWriter")
            .field("writer", &self.writer)
            .field("pending", &self.pending.as_ref().map(IoBatch::len))
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Items encoded with `encoder`, written through this writer: see [`FramedWriter`].
    pub fn framed<E>(self, encoder: E) -> FramedWriter<E> {
        FramedWriter {
            writer: self,
            encoder,
            buf: BytesMut::new(),
            pending: None,
            room: None,
            spent: Spent::default(),
        }
    }
}

impl<E> FramedWriter<E> {
    /// How many encoded bytes the [`Sink`] buffers before it writes them (64 KiB, as a
    /// default `BufWriter` of tokio's).
    pub const BUFFERED: usize = 64 * 1024;

    /// The writer underneath (to close, wait for room, or write raw bytes in between).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// The encoder.
    pub fn encoder_mut(&mut self) -> &mut E {
        &mut self.encoder
    }

    /// Encodes `item` and writes it now, or says why not: a full queue
    /// ([`WriteError::QueueFull`], this item's encoded bytes inside) or a closed socket.
    /// Bytes the writer holds (fed to the [`Sink`] and not flushed, or refused earlier)
    /// go first; while the queue refuses them, they stay held and the item is refused.
    pub fn try_send<I>(&mut self, item: I) -> Result<(), FramedWriteError<E::Error>>
    where
        E: Encoder<I>,
    {
        if self.pending.is_some() {
            // Bytes refused before go first: while they wait, the item waits too.
            let held = self.try_write_held();
            let item = self.encode(item)?;
            return match held {
                Ok(()) => Ok(self.writer.write(item)?),
                Err(WriteError::QueueFull {
                    queued,
                    high_watermark,
                    ..
                }) => {
                    // The item is refused without reaching the queue: a failed write.
                    self.writer.count_refused();
                    Err(WriteError::QueueFull {
                        queued,
                        high_watermark,
                        payload: item.into(),
                    }
                    .into())
                }
                Err(e) => Err(e.into()),
            };
        }
        // The `Sink`'s buffered bytes, then the item: one write.
        let buffered = self.buf.len();
        let bytes = self.encode(item)?;
        if buffered == 0 {
            self.writer.write(bytes)?;
            return Ok(());
        }
        match self.writer.write(bytes.clone()) {
            Ok(()) => Ok(()),
            Err(WriteError::QueueFull {
                queued,
                high_watermark,
                ..
            }) => {
                // Only the item comes back; the buffered bytes stay held, first in line.
                self.pending = Some(bytes.slice(..buffered).into());
                Err(WriteError::QueueFull {
                    queued,
                    high_watermark,
                    payload: bytes.slice(buffered..).into(),
                }
                .into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Encodes `item`, waits for room in the socket's queue, and writes it (after the
    /// bytes the writer holds).
    ///
    /// Cancel-safe: the item is the writer's once this is first polled. Dropped while
    /// it waits for room (a timeout), the future loses nothing: the item and what was
    /// held before it go first at the next `send`, flush or `try_send`, or when the
    /// writer is dropped. Refused because the socket shut while it waited, the error is
    /// the answer for the item and the bytes held before it (its `len` counts them all):
    /// the writer lets go of them.
    pub async fn send<I>(&mut self, item: I) -> Result<(), FramedWriteError<E::Error>>
    where
        E: Encoder<I>,
    {
        let batch = self.encode(item)?;
        self.hold(batch.into());
        std::future::poll_fn(|cx| self.poll_pending(cx)).await?;
        Ok(())
    }

    /// Puts `batch` behind the bytes held (one write of several segments).
    fn hold(&mut self, batch: IoBatch) {
        match &mut self.pending {
            Some(held) => {
                for segment in batch.into_segments() {
                    held.push_segment(segment);
                }
            }
            None => self.pending = Some(batch),
        }
    }

    /// The `Sink`'s buffer joins the bytes held, its allocation kept for reuse.
    fn hold_buffer(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let capacity = self.buf.capacity();
        let full = std::mem::take(&mut self.buf).freeze();
        self.spent.keep(&full, capacity);
        self.hold(full.into());
    }

    /// Writes the bytes held (refused before, then the `Sink`'s buffer) now; what the
    /// queue refuses stays held, and a `QueueFull` (with no payload) says so.
    fn try_write_held(&mut self) -> Result<(), WriteError> {
        self.hold_buffer();
        let Some(held) = self.pending.take() else {
            return Ok(());
        };
        match self.writer.write_again_when_full(held) {
            Ok(()) => Ok(()),
            Err(WriteError::QueueFull {
                queued,
                high_watermark,
                payload,
            }) => {
                self.pending = Some(payload);
                Err(WriteError::QueueFull {
                    queued,
                    high_watermark,
                    payload: IoBatch::new(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The `Sink`'s buffered bytes and `item`, encoded after them.
    fn encode<I>(&mut self, item: I) -> Result<Bytes, FramedWriteError<E::Error>>
    where
        E: Encoder<I>,
    {
        let before = self.buf.len();
        if let Err(e) = self.encoder.encode(item, &mut self.buf) {
            // What the encoder wrote of the item it refused does not go out.
            self.buf.truncate(before);
            return Err(FramedWriteError::Encode(e));
        }
        Ok(self.buf.split().freeze())
    }

    /// Writes what the queue refused before, waiting for room as needed.
    fn poll_pending(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), WriteError>> {
        loop {
            if let Some(room) = self.room.as_mut() {
                let ready = room.as_mut().poll(cx);
                match ready {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => self.room = None,
                    Poll::Ready(Err(refused)) => {
                        self.room = None;
                        // The socket no longer takes writes: the bytes held get its
                        // refusal, which names their length, and are answered by it,
                        // once (the writer lets go of them: not sent again at drop).
                        let Some(held) = self.pending.take() else {
                            return Poll::Ready(Err(refused));
                        };
                        return Poll::Ready(match self.writer.write_again_when_full(held) {
                            Ok(()) => Ok(()),
                            Err(WriteError::QueueFull { payload, .. }) => {
                                self.pending = Some(payload);
                                Err(refused)
                            }
                            Err(e) => Err(e),
                        });
                    }
                }
            }
            let Some(pending) = self.pending.take() else {
                return Poll::Ready(Ok(()));
            };
            match self.writer.write_again_when_full(pending) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(WriteError::QueueFull { payload, .. }) => {
                    self.pending = Some(payload);
                    self.wait_for_room();
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes what the queue refused before, then the buffered bytes, waiting for room
    /// as needed: ready once all of it is in the socket's queue.
    fn poll_write_buffered(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), WriteError>> {
        loop {
            match self.poll_pending(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            if self.buf.is_empty() {
                return Poll::Ready(Ok(()));
            }
            // Next in line: `poll_pending` writes it, or waits for room for it. The
            // whole buffer goes (so that it can come back); the next is taken when an
            // item needs it.
            self.hold_buffer();
        }
    }

    fn wait_for_room(&mut self) {
        let writer = self.writer.clone();
        self.room = Some(Box::pin(async move { writer.writable().await }));
    }
}

impl<E> Unpin for FramedWriter<E> {}

impl<E> Drop for FramedWriter<E> {
    /// Bytes refused or buffered and not flushed are not lost: they go to the socket as
    /// writes that wait for room there, in order (or, the socket gone, are named in a
    /// warning).
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.writer.write_waiting(pending);
        }
        if !self.buf.is_empty() {
            self.writer.write_waiting(self.buf.split().freeze().into());
        }
    }
}

impl<I, E: Encoder<I>> Sink<I> for FramedWriter<E> {
    type Error = FramedWriteError<E::Error>;

    fn poll_ready(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<(), Self::Error>> {
        let this = &mut *self;
        if this.buf.len() < Self::BUFFERED {
            return Poll::Ready(Ok(()));
        }
        // A full buffer goes to the socket before the next item.
        this.poll_write_buffered(cx).map_err(Into::into)
    }

    fn start_send(mut self: Pin<&mut Self>, item: I) -> Result<(), Self::Error> {
        let this = &mut *self;
        if this.buf.capacity() == 0 {
            this.buf = this.spent.take();
        }
        let before = this.buf.len();
        this.encoder.encode(item, &mut this.buf).map_err(|e| {
            // What the encoder wrote of the item it refused does not go out.
            this.buf.truncate(before);
            FramedWriteError::Encode(e)
        })
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<(), Self::Error>> {
        self.poll_write_buffered(cx).map_err(Into::into)
    }

    fn poll_close(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<(), Self::Error>> {
        match self.poll_write_buffered(cx) {
            Poll::Ready(Ok(())) => {
                self.writer.close();
                Poll::Ready(Ok(()))
            }
            other => other.map_err(Into::into),
        }
    }
}

/// Why a [`FrameStream`] ended with an error.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The decoder rejected the peer's bytes, or a frame outgrew
    /// [`SocketConfig::max_frame_bytes`](crate::SocketConfig::max_frame_bytes).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Reading failed (a transport or byte-layer error).
    #[error("reading failed: {0}")]
    Read(#[source] TransportError),
}

/// What reaches a [`FrameStream`].
enum Incoming<T> {
    Frame(Frame<T>),
    Failed(FrameError),
    End,
}

/// The frames a socket decodes from its peer, as a [`Stream`] of
/// `Result<frame, FrameError>`: made by
/// [`SocketBuilder::connect_framed`](super::SocketBuilder::connect_framed). It ends at
/// the peer's EOF (after the last frame) or the socket's close; a decode or read failure
/// is its last item. Each frame's place in the read window is given back when the stream
/// yields it, so a slow consumer holds the socket's reading, not its memory.
pub struct FrameStream<T> {
    rx: mpsc::UnboundedReceiver<Incoming<T>>,
    ended: bool,
    /// Keeps the socket alive while the stream is read.
    _socket: Addr<Socket>,
}

impl<T> std::fmt::Debug for FrameStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameStream")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<T> FrameStream<T> {
    /// The next frame, or `None` once the stream ended.
    pub async fn next(&mut self) -> Option<Result<T, FrameError>> {
        std::future::poll_fn(|cx| self.poll_frame(cx)).await
    }

    fn poll_frame(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Result<T, FrameError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Incoming::Frame(frame))) => Poll::Ready(Some(Ok(frame.frame))),
            Poll::Ready(Some(Incoming::Failed(e))) => {
                self.ended = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Incoming::End)) | Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
        }
    }
}

impl<T> Unpin for FrameStream<T> {}

impl<T> Stream for FrameStream<T> {
    type Item = Result<T, FrameError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.poll_frame(cx)
    }
}

/// The actor between a socket and its [`FrameStream`]: frames and the end of reading go
/// into the stream's channel.
pub(crate) struct Forward<T: 'static>(mpsc::UnboundedSender<Incoming<T>>);

impl<T: Send + 'static> Forward<T> {
    /// The forwarding actor, and the stream's half (its socket given later).
    pub(crate) fn start() -> (Addr<Self>, StreamHalf<T>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Forward(tx).start(), StreamHalf(rx))
    }
}

/// A [`FrameStream`] waiting for its socket.
pub(crate) struct StreamHalf<T>(mpsc::UnboundedReceiver<Incoming<T>>);

impl<T> StreamHalf<T> {
    pub(crate) fn with_socket(self, socket: Addr<Socket>) -> FrameStream<T> {
        FrameStream {
            rx: self.0,
            ended: false,
            _socket: socket,
        }
    }
}

impl<T: 'static> Actor for Forward<T> {
    type Context = Context<Self>;
}

impl<T: Send + 'static> Handler<Frame<T>> for Forward<T> {
    type Result = ();

    fn handle(&mut self, frame: Frame<T>, _: &mut Context<Self>) {
        let _ = self.0.send(Incoming::Frame(frame));
    }
}

impl<T: Send + 'static> Handler<SocketEvent> for Forward<T> {
    type Result = ();

    fn handle(&mut self, event: SocketEvent, _: &mut Context<Self>) {
        let incoming = match event.kind {
            SocketEventKind::Eof | SocketEventKind::Closed { .. } => Incoming::End,
            SocketEventKind::DecodeFailed(e) => Incoming::Failed(FrameError::Decode(e)),
            SocketEventKind::ReadFailed(e) => Incoming::Failed(FrameError::Read(e)),
            // Raw chunks do not come to a framed socket's subscriber; failed writes are
            // the writer's to hear of.
            _ => return,
        };
        let _ = self.0.send(incoming);
    }
}

impl super::Socket {
    /// Connects with the default configuration and gives the typed pair: see
    /// [`SocketBuilder::connect_framed`](super::SocketBuilder::connect_framed).
    pub async fn connect_framed<C>(
        addr: impl Into<crate::types::Address>,
        codec: C,
    ) -> Result<(FramedWriter<C>, FrameStream<C::Item>), crate::SocketError>
    where
        C: tokio_util::codec::Decoder + Clone + 'static,
        C::Item: Send + 'static,
        C::Error: std::error::Error + Send + Sync + 'static,
    {
        Self::builder().connect_framed(addr, codec).await
    }

    /// Adopts a connected stream with the default configuration and gives the typed
    /// pair: see [`SocketBuilder::adopt_framed`](super::SocketBuilder::adopt_framed).
    pub async fn adopt_framed<C>(
        stream: impl Into<crate::AdoptedStream>,
        codec: C,
    ) -> Result<(FramedWriter<C>, FrameStream<C::Item>), crate::SocketError>
    where
        C: tokio_util::codec::Decoder + Clone + 'static,
        C::Item: Send + 'static,
        C::Error: std::error::Error + Send + Sync + 'static,
    {
        Self::builder().adopt_framed(stream, codec).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_buffer_is_reused_once_the_socket_lets_go_of_it() {
        let mut spent = Spent::default();
        let mut buf = spent.take();
        let capacity = buf.capacity();
        assert!(
            capacity > FramedWriter::<()>::BUFFERED,
            "room for a full buffer"
        );
        buf.extend_from_slice(b"hello");
        let at = buf.as_ptr();
        let handed = buf.freeze();
        spent.keep(&handed, capacity);
        let in_socket = handed.slice(1..);
        drop(handed);
        let other = spent.take();
        assert_ne!(
            other.as_ptr(),
            at,
            "a buffer still being sent is not reused"
        );
        drop(in_socket);
        let reused = spent.take();
        assert_eq!(reused.as_ptr(), at, "let go of: the same allocation");
        assert!(reused.is_empty());
        assert!(reused.capacity() >= capacity - 5);
        assert!(spent.0.is_empty(), "handed out, no longer kept");
    }

    #[test]
    fn the_sink_keeps_at_most_two_buffers_and_none_made_for_a_huge_item() {
        let mut spent = Spent::default();
        let huge = Bytes::from(vec![0u8; 5 * FramedWriter::<()>::BUFFERED]);
        spent.keep(&huge, huge.len());
        assert!(spent.0.is_empty(), "a huge item's buffer is not kept");
        for _ in 0..3 {
            spent.keep(&Bytes::from(vec![0u8; 16]), 16);
        }
        assert_eq!(spent.0.len(), Spent::KEPT);
    }
}
