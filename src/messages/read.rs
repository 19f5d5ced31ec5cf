//! Subscriber ↔ [`Socket`](crate::Socket), the inbound side: decoded frames, and
//! pausing and resuming reading.
//!
//! Reading has backpressure: see [`ReadLimits`](crate::ReadLimits) and
//! [`ReadPermit`].

use actix::Message;

use crate::shared::ReadPermit;
use crate::types::SocketId;

/// A whole frame decoded from a socket's byte stream by the
/// [`Decoder`](tokio_util::codec::Decoder) given to
/// [`SocketBuilder::framed`](crate::SocketBuilder::framed). Frames arrive in stream order.
#[derive(Debug)]
pub struct Frame<T> {
    /// The socket it came from.
    pub socket: SocketId,
    /// The frame.
    pub frame: T,
    /// Its place in the read window: dropped with the message, unless kept.
    pub permit: ReadPermit,
}

impl<T: 'static> Message for Frame<T> {
    type Result = ();
}

/// Stop reading until [`ResumeReading`]: the peer is slowed by TCP flow control once the
/// kernel's buffers fill. Data already read is still delivered. Idempotent.
#[derive(Clone, Copy, Debug, Default)]
pub struct PauseReading;

impl Message for PauseReading {
    type Result = ();
}

/// Resume reading after [`PauseReading`] (as far as the read window allows). Idempotent.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResumeReading;

impl Message for ResumeReading {
    type Result = ();
}
