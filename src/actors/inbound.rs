//! The inbound side of a socket: the read window that gives reading backpressure
//! ([`ReadPermit`]), and optional framing with a user's
//! [`Decoder`](tokio_util::codec::Decoder).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::Recipient;
use bytes::BytesMut;
use tokio_util::codec::Decoder;

use super::writer::Core;
use crate::error::DecodeError;
use crate::messages::flush::Flush;
use crate::messages::read::Frame;

/// How much inbound data a socket hands its subscriber before it waits for
/// acknowledgements (the read window).
///
/// Every delivery (a [`Received`](crate::messages::SocketEventKind::Received) chunk or a
/// decoded [`Frame`]) carries a [`ReadPermit`]; the delivery is acknowledged when its
/// permit is dropped, which by default happens when the subscriber's handler returns and
/// the message is dropped. While `max_deliveries` deliveries or `max_bytes` bytes are
/// unacknowledged the socket stops reading: the kernel's receive buffer fills and TCP
/// flow control slows the peer, so a peer that floods cannot grow our memory. A
/// subscriber that needs longer (say, until a database write finished) keeps the permit
/// until then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// Most deliveries unacknowledged at once (at least 1).
    pub max_deliveries: u32,
    /// Most bytes unacknowledged at once (at least 1). One read may overshoot it by at
    /// most `read_chunk` bytes: the check comes before each read.
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

/// The read window's counters, shared by the socket and every outstanding permit.
#[derive(Debug)]
pub(crate) struct ReadWindow {
    max_deliveries: u32,
    max_bytes: usize,
    deliveries: AtomicU32,
    bytes: AtomicUsize,
    /// The socket stopped reading because the window was full; the permit release that
    /// reopens it wakes the socket.
    held: AtomicBool,
    /// The `Flush` on its way to the socket is a permit's wake-up, not the Flusher's.
    reopened: AtomicBool,
}

impl ReadWindow {
    pub(crate) fn new(limits: ReadLimits) -> Self {
        ReadWindow {
            max_deliveries: limits.max_deliveries.max(1),
            max_bytes: limits.max_bytes.max(1),
            deliveries: AtomicU32::new(0),
            bytes: AtomicUsize::new(0),
            held: AtomicBool::new(false),
            reopened: AtomicBool::new(false),
        }
    }

    /// Whether another read may be delivered now.
    pub(crate) fn is_open(&self) -> bool {
        self.deliveries.load(Ordering::SeqCst) < self.max_deliveries
            && self.bytes.load(Ordering::SeqCst) < self.max_bytes
    }

    /// The socket is about to stop reading for a full window. `false`: the window
    /// reopened meanwhile (a permit was dropped on another thread), read on.
    pub(crate) fn hold(&self) -> bool {
        self.held.store(true, Ordering::SeqCst);
        if self.is_open() {
            // Whoever clears the flag first resumes reading: us, or the releaser.
            return !self.held.swap(false, Ordering::SeqCst);
        }
        true
    }

    /// Clears the hold, when the socket resumes on its own.
    pub(crate) fn unhold(&self) {
        self.held.store(false, Ordering::SeqCst);
    }

    /// Whether a permit reopened the window and sent the `Flush` that is being handled
    /// (clears it).
    pub(crate) fn take_reopened(&self) -> bool {
        self.reopened.swap(false, Ordering::SeqCst)
    }

    /// Unacknowledged deliveries and bytes now.
    pub(crate) fn outstanding(&self) -> (u32, usize) {
        (
            self.deliveries.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst),
        )
    }
}

/// One delivery's place in its socket's read window (see [`ReadLimits`]). Dropping it
/// acknowledges the delivery; keep it to hold the window until you are done with the
/// data.
pub struct ReadPermit {
    core: Arc<Core>,
    bytes: usize,
}

impl ReadPermit {
    /// Takes a place in the window for a delivery of `bytes` bytes.
    pub(crate) fn take(core: &Arc<Core>, bytes: usize) -> ReadPermit {
        let window = &core.reads;
        window.deliveries.fetch_add(1, Ordering::SeqCst);
        window.bytes.fetch_add(bytes, Ordering::SeqCst);
        ReadPermit {
            core: core.clone(),
            bytes,
        }
    }

    /// The stream bytes this delivery stands for.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl fmt::Debug for ReadPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadPermit")
            .field("socket", &self.core.id)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Drop for ReadPermit {
    fn drop(&mut self) {
        let window = &self.core.reads;
        window.deliveries.fetch_sub(1, Ordering::SeqCst);
        window.bytes.fetch_sub(self.bytes, Ordering::SeqCst);
        if window.held.load(Ordering::SeqCst)
            && window.is_open()
            && window.held.swap(false, Ordering::SeqCst)
        {
            // The socket's wake-up is a `Flush`, marked as the window's so that it does not
            // start a write flush ahead of the Flusher's round.
            window.reopened.store(true, Ordering::SeqCst);
            if let Some(socket) = self.core.wake.socket.upgrade() {
                socket.do_send(Flush);
            }
        }
    }
}

/// A socket's frame decoder, type-erased: the socket reads into its buffer and asks it
/// for frames, which it sends to the frame subscriber itself.
pub(crate) trait Deframe: fmt::Debug {
    /// The undecoded bytes; reads append here (in place, without a copy).
    fn buffer(&mut self) -> &mut BytesMut;

    /// Most undecoded bytes buffered without a whole frame.
    fn set_limit(&mut self, limit: usize);

    /// Whether the frame recipient is still there.
    fn connected(&self) -> bool;

    /// Decodes the next whole frame (at the peer's EOF, also a final partial one, as the
    /// decoder's `decode_eof` allows) and sends it with a permit for the stream bytes it
    /// consumed. `Ok(Some(consumed))`: a frame went out, standing for `consumed` stream
    /// bytes; `Ok(None)`: no whole frame buffered.
    fn deliver_next(&mut self, core: &Arc<Core>, eof: bool) -> Result<Option<usize>, DecodeError>;
}

pub(crate) struct Deframer<D: Decoder>
where
    D::Item: Send + 'static,
{
    decoder: D,
    buf: BytesMut,
    to: Recipient<Frame<D::Item>>,
    limit: usize,
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

    fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    fn connected(&self) -> bool {
        self.to.connected()
    }

    fn deliver_next(&mut self, core: &Arc<Core>, eof: bool) -> Result<Option<usize>, DecodeError> {
        let before = self.buf.len();
        let decoded = if eof {
            self.decoder.decode_eof(&mut self.buf)
        } else {
            self.decoder.decode(&mut self.buf)
        };
        let frame = match decoded {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                if self.buf.len() >= self.limit {
                    return Err(DecodeError::FrameTooLong {
                        buffered: self.buf.len(),
                        limit: self.limit,
                    });
                }
                return Ok(None);
            }
            Err(e) => return Err(DecodeError::Decoder(Arc::new(e))),
        };
        let consumed = before.saturating_sub(self.buf.len());
        self.to.do_send(Frame {
            socket: core.id,
            frame,
            permit: ReadPermit::take(core, consumed),
        });
        if self.buf.is_empty() && self.buf.capacity() > 64 * 1024 {
            // A burst of large frames is over: let its buffer go.
            self.buf = BytesMut::new();
        }
        Ok(Some(consumed))
    }
}
