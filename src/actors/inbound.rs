//! The inbound side of a socket: the read window's limits ([`ReadLimits`]), the buffer
//! reads land in, and optional framing with a user's
//! [`Decoder`](tokio_util::codec::Decoder). Deliveries go to the subscriber with a
//! [`ReadPermit`](crate::ReadPermit) each.

use std::fmt;
use std::sync::Arc;

use actix::Recipient;
use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::error::DecodeError;
use crate::messages::read::Frame;
use crate::messages::socket::{SocketEvent, SocketEventKind};
use crate::shared::Shared;

/// How much inbound data a socket hands its subscriber before it waits for
/// acknowledgements (the read window).
///
/// Every delivery (a [`Received`](crate::messages::SocketEventKind::Received) chunk or a
/// decoded [`Frame`]) carries a [`ReadPermit`](crate::ReadPermit); the delivery is
/// acknowledged when its permit is dropped, which by default happens when the
/// subscriber's handler returns and the message is dropped. While `max_deliveries`
/// deliveries or `max_bytes` bytes are unacknowledged the socket stops reading: the
/// kernel's receive buffer fills and TCP flow control slows the peer, so a peer that
/// floods cannot grow our memory. A subscriber that needs longer (say, until a database
/// write finished) keeps the permit until then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// Most deliveries unacknowledged at once (at least 1).
    pub max_deliveries: u32,
    /// Most bytes unacknowledged at once (at least 1). One read may overshoot it by at
    /// most `read_chunk` bytes: the check comes before each read. On a framed socket
    /// a frame is delivered whole, so one frame may overshoot it by up to its length
    /// (at most [`max_frame_bytes`](crate::SocketConfig::max_frame_bytes)).
    pub max_bytes: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_deliveries: 64,
            max_bytes: 1024 * 1024,
        }
    }
}

impl ReadLimits {
    /// No practical limit (the subscriber's mailbox is then the only buffer, and it is
    /// unbounded for the socket's `do_send`s): only for peers you trust.
    pub const UNBOUNDED: ReadLimits = ReadLimits {
        max_deliveries: u32::MAX,
        max_bytes: usize::MAX,
    };
}

/// A socket's frame decoder, type-erased: the socket reads into its buffer and asks it
/// for frames, which it sends to the frame subscriber itself.
pub(crate) trait Deframe: fmt::Debug {
    /// The undecoded bytes; reads append here (in place, without a copy).
    fn buffer(&mut self) -> &mut BytesMut;

    /// Stream bytes of frames not yet whole: buffered, or taken by the decoder already
    /// (a parsed length prefix).
    fn undecoded(&self) -> usize;

    /// Most stream bytes one frame may take (see `SocketConfig::max_frame_bytes`).
    fn set_limit(&mut self, limit: usize);

    /// Whether the frame recipient is still there.
    fn connected(&self) -> bool;

    /// Decodes the next whole frame (at the peer's EOF, also a final partial one, as the
    /// decoder's `decode_eof` allows) and sends it with a permit for the stream bytes it
    /// consumed. `Ok(Some(made))`: a frame went out; `Ok(None)`: no whole frame buffered.
    fn deliver_next(
        &mut self,
        shared: &Arc<Shared>,
        eof: bool,
    ) -> Result<Option<Made>, DecodeError>;
}

/// A frame a decoder made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Made {
    /// Whether it stands for no stream byte at all: it consumed none, and no byte the
    /// decoder took earlier without making a frame is left for it to stand for. At the
    /// peer's EOF such a frame is the last (a decoder making frames from nothing at the
    /// EOF would never end; one holding frames in its own state, taken earlier, gives
    /// them all).
    pub(crate) from_nothing: bool,
}

pub(crate) struct Deframer<D: Decoder>
where
    D::Item: Send + 'static,
{
    decoder: D,
    buf: BytesMut,
    to: Recipient<Frame<D::Item>>,
    limit: usize,
    /// Stream bytes the decoder took out of `buf` toward the frame it is decoding (a
    /// length prefix it parsed before the rest came): that frame stands for them too.
    taken: usize,
    /// Bytes the decoder took without making a frame since the last frame that consumed
    /// bytes of `buf`: frames it then makes from its own state (consuming none) stand
    /// for one each.
    held: usize,
}

impl<D> Deframer<D>
where
    D: Decoder,
    D::Item: Send + 'static,
{
    pub(crate) fn new(decoder: D, to: Recipient<Frame<D::Item>>, limit: usize) -> Self {
        Deframer {
            decoder,
            buf: BytesMut::new(),
            to,
            limit: limit.max(1),
            taken: 0,
            held: 0,
        }
    }
}

impl<D: Decoder> fmt::Debug for Deframer<D>
where
    D::Item: Send + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deframer")
            .field("decoder", &std::any::type_name::<D>())
            .field("buffered", &self.buf.len())
            .field("limit", &self.limit)
            .finish()
    }
}

impl<D> Deframe for Deframer<D>
where
    D: Decoder,
    D::Item: Send + 'static,
    D::Error: std::error::Error + Send + Sync + 'static,
{
    fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    fn undecoded(&self) -> usize {
        self.buf.len().saturating_add(self.taken)
    }

    fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    fn connected(&self) -> bool {
        self.to.connected()
    }

    fn deliver_next(
        &mut self,
        shared: &Arc<Shared>,
        eof: bool,
    ) -> Result<Option<Made>, DecodeError> {
        let before = self.buf.len();
        let decoded = if eof {
            self.decoder.decode_eof(&mut self.buf)
        } else {
            self.decoder.decode(&mut self.buf)
        };
        let consumed = before.saturating_sub(self.buf.len());
        let frame = match decoded {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                // The frame so far: what is buffered, and what the decoder took of it.
                self.taken = self.taken.saturating_add(consumed);
                self.held = self.held.saturating_add(consumed);
                let buffered = self.buf.len().saturating_add(self.taken);
                if buffered >= self.limit {
                    return Err(DecodeError::FrameTooLong {
                        buffered,
                        limit: self.limit,
                    });
                }
                return Ok(None);
            }
            Err(e) => return Err(DecodeError::Decoder(Arc::new(e))),
        };
        let from_nothing = if consumed > 0 {
            self.held = 0;
            false
        } else if self.held > 0 {
            self.held -= 1;
            false
        } else {
            true
        };
        let consumed = consumed.saturating_add(std::mem::take(&mut self.taken));
        if consumed > self.limit {
            // Whole in one read, the frame never sat buffered past the limit; the verdict
            // must not depend on how the stream was split.
            return Err(DecodeError::FrameTooLong {
                buffered: consumed,
                limit: self.limit,
            });
        }
        self.to.do_send(Frame {
            socket: shared.id,
            frame,
            permit: shared.permit(consumed),
        });
        if self.buf.is_empty() && self.buf.capacity() > 64 * 1024 {
            // A burst of large frames is over: let its buffer go.
            self.buf = BytesMut::new();
        }
        Ok(Some(Made { from_nothing }))
    }
}

/// What a read brought in.
#[derive(Debug)]
pub(crate) enum Got {
    /// Bytes, to deliver (or, framed, to copy into the decoder's buffer).
    Chunk(Bytes),
    /// This many bytes read in place (into the read buffer or the decoder's).
    Buffered(usize),
    Eof,
    WouldBlock,
}

/// Where a socket's reads go: the raw-chunk subscriber, or a decoder and its frame
/// subscriber, and the buffer reads land in.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) subscriber: Option<Recipient<SocketEvent>>,
    deframer: Option<Box<dyn Deframe>>,
    /// Raw reads in place land here; allocated when the stream is read (idle sockets
    /// hold none), it starts small and doubles while reads fill it, up to `read_chunk`.
    buf: Option<Box<BytesMut>>,
    read_size: u32,
    read_chunk: u32,
}

/// Why delivering stopped.
#[derive(Debug)]
pub(crate) enum Stopped {
    /// Nobody is left to deliver to.
    SubscriberGone,
    /// The decoder rejected the stream.
    Rejected(DecodeError),
}

impl Inbound {
    pub(crate) fn new(
        subscriber: Option<Recipient<SocketEvent>>,
        deframer: Option<Box<dyn Deframe>>,
        read_chunk: usize,
        max_frame_bytes: usize,
    ) -> Self {
        let read_chunk = u32::try_from(read_chunk.max(1)).unwrap_or(u32::MAX);
        let mut deframer = deframer;
        if let Some(d) = deframer.as_deref_mut() {
            d.set_limit(max_frame_bytes);
        }
        Inbound {
            subscriber,
            deframer,
            buf: None,
            read_size: 4096.min(read_chunk),
            read_chunk,
        }
    }

    /// Whether anything reads what comes in.
    pub(crate) fn reads(&self) -> bool {
        self.subscriber.is_some() || self.deframer.is_some()
    }

    /// Reads in place with `read` (a `read(2)` into spare capacity, returning the bytes
    /// read): into the decoder's buffer, or the read buffer, whose chunk is split off.
    pub(crate) fn read_in_place(
        &mut self,
        read: impl FnOnce(&mut BytesMut) -> std::io::Result<usize>,
    ) -> std::io::Result<Got> {
        let want = self.read_size as usize;
        let (buf, split) = match self.deframer.as_deref_mut() {
            Some(d) => (d.buffer(), false),
            None => {
                let buf = self
                    .buf
                    .get_or_insert_with(|| Box::new(BytesMut::with_capacity(want)));
                let room = buf.capacity() - buf.len();
                if room == 0 || room < want / 2 {
                    **buf = BytesMut::with_capacity(want);
                }
                (&mut **buf, true)
            }
        };
        buf.reserve(want);
        let spare = buf.capacity() - buf.len();
        match read(buf) {
            Ok(0) => Ok(Got::Eof),
            Ok(n) => {
                if n == spare {
                    self.read_size = (self.read_size.saturating_mul(2)).min(self.read_chunk);
                }
                Ok(if split {
                    Got::Chunk(buf.split_to(n).freeze())
                } else {
                    Got::Buffered(n)
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Got::WouldBlock),
            Err(e) => Err(e),
        }
    }

    /// Takes in a chunk: to the decoder's buffer (framed: one copy), or to the
    /// subscriber with its permit.
    pub(crate) fn absorb(&mut self, bytes: Bytes, shared: &Arc<Shared>) -> Result<(), Stopped> {
        match self.deframer.as_deref_mut() {
            Some(deframer) => {
                deframer.buffer().extend_from_slice(&bytes);
                Ok(())
            }
            None => self.deliver(bytes, shared),
        }
    }

    fn deliver(&mut self, bytes: Bytes, shared: &Arc<Shared>) -> Result<(), Stopped> {
        let Some(s) = &self.subscriber else {
            return Ok(());
        };
        if !s.connected() {
            return Err(Stopped::SubscriberGone);
        }
        s.do_send(SocketEvent {
            socket: shared.id,
            permit: Some(shared.permit(bytes.len())),
            kind: SocketEventKind::Received(bytes),
        });
        Ok(())
    }

    /// Sends the frames that are whole in the decoder's buffer, while `room()` says the
    /// read window has room (at `eof`, all of them). `Ok(true)` when a frame went out.
    pub(crate) fn deliver_frames(
        &mut self,
        shared: &Arc<Shared>,
        eof: bool,
        mut room: impl FnMut() -> bool,
    ) -> Result<bool, Stopped> {
        let Some(deframer) = self.deframer.as_deref_mut() else {
            return Ok(false);
        };
        let mut delivered = false;
        loop {
            if !eof && !room() {
                return Ok(delivered);
            }
            if !deframer.connected() {
                return Err(Stopped::SubscriberGone);
            }
            match deframer.deliver_next(shared, eof) {
                // A decoder that keeps returning frames from nothing at EOF would never
                // end: its last frame ends it.
                Ok(Some(made)) if eof && made.from_nothing => return Ok(true),
                Ok(Some(_)) => delivered = true,
                Ok(None) => return Ok(delivered),
                Err(e) => return Err(Stopped::Rejected(e)),
            }
        }
    }

    /// Undecoded bytes in the decoder's buffer (0 without a decoder).
    pub(crate) fn undecoded(&mut self) -> usize {
        self.deframer.as_deref().map_or(0, |d| d.undecoded())
    }

    /// Lets go of the read buffer, and of the decoder's when it holds nothing: a socket
    /// that is not reading right now keeps no buffer.
    pub(crate) fn drop_buffers(&mut self) {
        self.buf = None;
        if let Some(deframer) = self.deframer.as_deref_mut() {
            let buf = deframer.buffer();
            if buf.is_empty() {
                *buf = BytesMut::new();
            }
        }
    }

    /// Tells the subscriber something.
    pub(crate) fn event(&self, shared: &Shared, kind: SocketEventKind) {
        if let Some(s) = &self.subscriber {
            s.do_send(SocketEvent {
                socket: shared.id,
                kind,
                permit: None,
            });
        }
    }
}
