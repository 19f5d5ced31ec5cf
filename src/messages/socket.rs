//! Producers and subscribers ↔ [`Socket`](crate::Socket).

use actix::{Message, Recipient};
use bytes::Bytes;

use crate::batch::IoBatch;
use crate::error::{TransportError, WriteError};

pub use crate::proto::{SocketStats, Written};
pub use crate::shared::WritabilityChanged;
pub use crate::types::SocketId;

/// Write a batch to the socket. Sent by any producer; handled by [`Socket`](crate::Socket).
///
/// Writes leave in the order the socket receives them and never interleave. The answer
/// comes when the transport has accepted the write's last byte ([`Written`]) or the write
/// has failed ([`WriteError`], which says how many of its bytes went out). With
/// `Addr::do_send` the write is fire-and-forget: failures then go to tracing and to the
/// socket's subscriber as [`SocketEventKind::WriteFailed`].
///
/// ```
/// use bytes::Bytes;
/// use sockactor::messages::Write;
///
/// let w = Write::new(Bytes::from_static(b"hello")).tag(7).wait_when_full();
/// assert_eq!(w.len(), 5);
/// ```
#[derive(Debug)]
pub struct Write {
    pub(crate) batch: IoBatch,
    pub(crate) tag: Option<u64>,
    pub(crate) wait_when_full: bool,
    /// Already admitted by the socket's gate (a `Writer`'s write): never refused for
    /// room.
    pub(crate) admitted: bool,
    /// Where the answer goes instead of actix's reply channel (a `Writer`'s writes, sent
    /// with `do_send`: dropping the caller's future must not cancel the write).
    pub(crate) reply: Option<tokio::sync::oneshot::Sender<Result<Written, WriteError>>>,
}

impl Write {
    /// A write of `batch` (anything that converts: `Bytes`, `Vec<u8>`, `Vec<Bytes>`, …).
    pub fn new(batch: impl Into<IoBatch>) -> Self {
        Write {
            batch: batch.into(),
            tag: None,
            wait_when_full: false,
            admitted: false,
            reply: None,
        }
    }

    /// Labels the write so it can be cancelled with [`CancelWrite`] while still queued,
    /// and recognised in [`SocketEventKind::WriteFailed`].
    pub fn tag(mut self, tag: u64) -> Self {
        self.tag = Some(tag);
        self
    }

    /// When the queue is full, wait for room instead of failing with
    /// [`WriteError::QueueFull`]. Waiting writes are bounded too
    /// ([`SocketConfig::max_waiting_writes`](crate::SocketConfig::max_waiting_writes)).
    pub fn wait_when_full(mut self) -> Self {
        self.wait_when_full = true;
        self
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

impl Message for Write {
    type Result = Result<Written, WriteError>;
}

/// Cancel a queued write that has not started: none of its bytes accepted by the
/// transport, and not part of a `sendv` awaiting its answer (a write whose only `sendv`
/// was answered with would-block has not started). Answered with its payload, or `None`
/// if no such write has this tag (it has started, finished, or never existed). The
/// cancelled write itself is answered with [`WriteError::Cancelled`].
#[derive(Clone, Copy, Debug)]
pub struct CancelWrite {
    /// The tag given with [`Write::tag`].
    pub tag: u64,
}

impl Message for CancelWrite {
    type Result = Option<IoBatch>;
}

/// Close the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Refuse new writes, send everything queued (writes waiting for room included),
    /// then close the handle.
    Graceful,
    /// Close now: every queued write is answered with [`WriteError::Aborted`]. Writes in
    /// a `sendv` still out to a transport reached by message are answered when it
    /// answers, with how far each got; a transport that has not answered 10 s after the
    /// close counts as having sent none of that call's bytes.
    Abort,
}

impl Message for Close {
    type Result = ();
}

/// Ask for the socket's counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct GetStats;

impl Message for GetStats {
    type Result = SocketStats;
}

/// Ask who a socket is.
#[derive(Clone, Copy, Debug, Default)]
pub struct GetInfo;

impl Message for GetInfo {
    type Result = SocketInfo;
}

/// A socket's identity and state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketInfo {
    /// Its id.
    pub id: SocketId,
    /// The peer, where known.
    pub peer: Option<crate::types::Address>,
    /// Its transport handle.
    pub handle: crate::types::Handle,
    /// Whether it still takes writes.
    pub open: bool,
    /// Whether it calls its transport in place (`writev` and `read` on the stream, the
    /// system transport's data path), rather than by `SendV`/`RecvFrom` messages.
    pub in_place: bool,
    /// The byte layers it runs in place (TLS, compression, a user's), plaintext side
    /// first.
    pub layers: Vec<&'static str>,
}

/// Subscribe a producer to writability changes of this socket.
#[derive(Debug)]
pub struct SubscribeWritability(pub Recipient<WritabilityChanged>);

impl Message for SubscribeWritability {
    type Result = ();
}

/// A notification from a socket to its subscriber.
#[derive(Debug)]
pub struct SocketEvent {
    /// The socket it concerns.
    pub socket: SocketId,
    /// What happened.
    pub kind: SocketEventKind,
    /// For [`SocketEventKind::Received`]: the chunk's place in the read window, released
    /// when this is dropped (see [`ReadLimits`](crate::ReadLimits)). `None` otherwise.
    pub permit: Option<crate::shared::ReadPermit>,
}

impl Message for SocketEvent {
    type Result = ();
}

/// What a [`SocketEvent`] reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum SocketEventKind {
    /// Bytes arrived from the peer.
    Received(Bytes),
    /// The peer closed its sending half. Writing goes on until the socket is closed.
    Eof,
    /// A framed socket's decoder rejected the stream; the socket closes gracefully.
    DecodeFailed(crate::DecodeError),
    /// Reading failed; the socket closes.
    ReadFailed(TransportError),
    /// A fire-and-forget write failed.
    WriteFailed {
        /// Its tag, if it had one.
        tag: Option<u64>,
        /// Why.
        error: WriteError,
    },
    /// An idle limit of [`PeerLimits`](crate::PeerLimits) passed: nothing read, sent or
    /// either (`kind`) for `after`. It repeats after each further period of idleness.
    /// With [`PeerLimits::close_when_idle`](crate::PeerLimits::close_when_idle), the
    /// socket then closes gracefully.
    Idle {
        /// Which limit.
        kind: crate::IdleKind,
        /// The limit.
        after: std::time::Duration,
    },
    /// The peer took none of the queued bytes for
    /// [`PeerLimits::send_timeout`](crate::PeerLimits::send_timeout): every unfinished
    /// write is answered [`WriteError::TimedOut`], and the socket closes (`Closed`
    /// follows).
    SendTimedOut {
        /// The send timeout.
        after: std::time::Duration,
        /// Bytes still queued.
        queued: usize,
    },
    /// The socket closed; `cause` is the transport error that closed it, if any. The
    /// last event but one kind: a fire-and-forget write that was in a transport call
    /// still out at the close (a transport reached by message) is reported
    /// ([`WriteFailed`](Self::WriteFailed)) when that call is answered, at most 10 s
    /// later. A subscriber that must hear every failure stays a while after `Closed`.
    Closed {
        /// The transport error, if one closed it.
        cause: Option<TransportError>,
    },
}
