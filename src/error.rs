//! The public error types.

use std::io;
use std::sync::Arc;

use crate::batch::IoBatch;
use crate::types::Handle;

/// An error from a transport (a [`SocketFunctions`](crate::SocketFunctions) operation).
///
/// Cloneable, because one transport failure answers every write that was queued.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The operating system (or a filter acting like it) reported an I/O error.
    #[error("i/o error: {0}")]
    Io(#[source] Arc<io::Error>),
    /// The handle is not known to this transport (never opened, or already closed).
    #[error("unknown transport handle {0}")]
    UnknownHandle(Handle),
    /// The transport does not implement this operation or socket kind.
    #[error("not supported by this transport: {0}")]
    Unsupported(&'static str),
    /// A `sendv` answered that it accepted more bytes than it was offered: a broken transport.
    #[error("transport accepted {accepted} bytes but was offered only {offered}")]
    OverAccepted {
        /// Bytes the transport claimed to accept.
        accepted: usize,
        /// Bytes it was offered.
        offered: usize,
    },
    /// A `recvfrom` answered more bytes than it was asked for: a broken transport.
    #[error("transport read {read} bytes but was asked for at most {asked}")]
    OverRead {
        /// Bytes the transport returned.
        read: usize,
        /// The most it was asked for.
        asked: usize,
    },
    /// The transport answered a stream read with no bytes, which is neither data, EOF
    /// ([`Received::Eof`](crate::messages::Received::Eof)) nor would-block: a broken
    /// transport (a read of 0 bytes is EOF in `recv(2)`'s terms; say so).
    #[error("transport answered a stream read with no bytes (neither EOF nor would-block)")]
    EmptyRead,
    /// The transport actor is gone (stopped, or its mailbox closed), or it left a call
    /// of a socket whose every address was dropped unanswered for 10 s (nobody is left
    /// to abort that socket, so it ends as if its transport were gone).
    #[error("transport actor unavailable")]
    Unavailable,
    /// A [`FileRange`](crate::FileRange) in a write could not be read: an I/O error, or
    /// the file shrank after the range was made (`UnexpectedEof`). The socket fails as for
    /// any transport error, because its peer may already have part of that write.
    #[error("file range could not be read: {0}")]
    File(#[source] Arc<io::Error>),
}

impl TransportError {
    /// The TLS error inside, when TLS failed ([`Tls`](crate::filters::Tls)): a
    /// certificate refused, a wrong name, no common protocol, a bad record from the peer.
    pub fn tls(&self) -> Option<&rustls::Error> {
        match self {
            TransportError::Io(e) => e.get_ref().and_then(|inner| inner.downcast_ref()),
            _ => None,
        }
    }

    /// The I/O error kind, when this is an I/O error.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            TransportError::Io(e) | TransportError::File(e) => Some(e.kind()),
            _ => None,
        }
    }
}

impl From<io::Error> for TransportError {
    fn from(e: io::Error) -> Self {
        TransportError::Io(Arc::new(e))
    }
}

impl From<io::ErrorKind> for TransportError {
    fn from(kind: io::ErrorKind) -> Self {
        TransportError::Io(Arc::new(io::Error::from(kind)))
    }
}

/// Why a write was not (fully) sent. Every write gets exactly one answer: its
/// [`Written`](crate::messages::Written) report or one of these.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// Queued bytes are at the high watermark; nothing of this write was queued. The payload
    /// comes back. Retry after a [`WritabilityChanged`](crate::messages::WritabilityChanged)
    /// saying writable, or use [`Write::wait_when_full`](crate::messages::Write::wait_when_full).
    #[error("write queue full: {queued} bytes queued, high watermark {high_watermark}")]
    QueueFull {
        /// Bytes queued when the write arrived.
        queued: usize,
        /// The configured high watermark.
        high_watermark: usize,
        /// The rejected payload, handed back.
        payload: IoBatch,
    },
    /// The write was cancelled before any of its bytes went out.
    #[error("write cancelled before it started")]
    Cancelled,
    /// The socket closed (or was closing) before this write could complete.
    #[error("socket closed after {bytes_sent} of {len} bytes of this write were sent")]
    Closed {
        /// Bytes of this write accepted by the transport.
        bytes_sent: usize,
        /// Length of the write.
        len: usize,
    },
    /// The socket was aborted; this write stopped where it was.
    #[error("socket aborted after {bytes_sent} of {len} bytes of this write were sent")]
    Aborted {
        /// Bytes of this write accepted by the transport.
        bytes_sent: usize,
        /// Length of the write.
        len: usize,
    },
    /// The socket went away without answering: its runtime shut down before the write
    /// finished. Whether any of its bytes went out is unknown.
    #[error("socket dropped without answering a {len}-byte write (its runtime shut down)")]
    Lost {
        /// Length of the write.
        len: usize,
    },
    /// The transport failed while this write was in flight or queued.
    #[error(
        "transport failed after {bytes_sent} of {len} bytes of this write were sent: {source}"
    )]
    Transport {
        /// Bytes of this write accepted by the transport before the failure.
        bytes_sent: usize,
        /// Length of the write.
        len: usize,
        /// The transport's error.
        #[source]
        source: TransportError,
    },
    /// The peer took none of the queued bytes for
    /// [`PeerLimits::send_timeout`](crate::PeerLimits::send_timeout): the socket closed,
    /// and this write stopped where it was.
    #[error(
        "send timeout: the peer took nothing for {after:?}; {bytes_sent} of {len} bytes of \
         this write were sent"
    )]
    TimedOut {
        /// Bytes of this write accepted by the transport.
        bytes_sent: usize,
        /// Length of the write.
        len: usize,
        /// The send timeout.
        after: std::time::Duration,
    },
    /// A [`ReconnectingClient`](crate::ReconnectingClient) gave up connecting (its
    /// attempts ran out) before this write could go out; none of its bytes were sent.
    #[error("gave up connecting after {attempts} attempts; none of this {len}-byte write was sent: {last_error}")]
    GaveUp {
        /// Length of the write.
        len: usize,
        /// Connect attempts made, all failed.
        attempts: u32,
        /// Why the last one failed.
        #[source]
        last_error: SocketError,
    },
}

impl WriteError {
    /// How many bytes of the write went out before it failed (0 for
    /// [`WriteError::Lost`], where the count is unknown).
    pub fn bytes_sent(&self) -> usize {
        match self {
            WriteError::Closed { bytes_sent, .. }
            | WriteError::Aborted { bytes_sent, .. }
            | WriteError::Transport { bytes_sent, .. }
            | WriteError::TimedOut { bytes_sent, .. } => *bytes_sent,
            WriteError::QueueFull { .. }
            | WriteError::Cancelled
            | WriteError::Lost { .. }
            | WriteError::GaveUp { .. } => 0,
        }
    }
}

/// An error starting a socket.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// The transport could not open a handle.
    #[error("could not open a socket: {0}")]
    Open(#[source] TransportError),
    /// The peer refused the connection (nothing listens there).
    #[error("connection refused: {0}")]
    Refused(#[source] TransportError),
    /// The peer's host or network cannot be reached.
    #[error("peer unreachable: {0}")]
    Unreachable(#[source] TransportError),
    /// The connection was not made in time: the builder's connect timeout, or the
    /// operating system's.
    #[error("connect timed out after {0:?}")]
    TimedOut(std::time::Duration),
    /// The connection could not be made for another reason.
    #[error("could not connect: {0}")]
    Connect(#[source] TransportError),
    /// The local address could not be bound (in use, not permitted, not supported by the
    /// transport…).
    #[error("could not bind: {0}")]
    Bind(#[source] TransportError),
    /// The bound handle could not be made to listen.
    #[error("could not listen: {0}")]
    Listen(#[source] TransportError),
}

impl SocketError {
    /// The transport's error behind this one, if there is one.
    pub fn transport(&self) -> Option<&TransportError> {
        match self {
            SocketError::Open(e)
            | SocketError::Refused(e)
            | SocketError::Unreachable(e)
            | SocketError::Connect(e)
            | SocketError::Bind(e)
            | SocketError::Listen(e) => Some(e),
            SocketError::TimedOut(_) => None,
        }
    }

    /// The TLS error, when the socket could not start because TLS failed: the rustls
    /// error of a refused certificate, a wrong server name or a failed handshake, in one
    /// step.
    ///
    /// ```
    /// use sockactor::SocketError;
    ///
    /// fn explain(error: &SocketError) -> String {
    ///     match error.tls() {
    ///         Some(rustls::Error::InvalidCertificate(why)) => format!("bad certificate: {why:?}"),
    ///         Some(other) => format!("TLS failed: {other}"),
    ///         None => error.to_string(),
    ///     }
    /// }
    /// ```
    pub fn tls(&self) -> Option<&rustls::Error> {
        self.transport()?.tls()
    }

    /// Sorts a failed connect into refused, unreachable, timed out, or other.
    pub(crate) fn from_connect(error: TransportError, waited: std::time::Duration) -> Self {
        match error.io_kind() {
            Some(io::ErrorKind::ConnectionRefused) => SocketError::Refused(error),
            Some(io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable) => {
                SocketError::Unreachable(error)
            }
            Some(io::ErrorKind::TimedOut) => SocketError::TimedOut(waited),
            _ => SocketError::Connect(error),
        }
    }
}

/// Why a framed socket could not decode its peer's byte stream. The frame subscriber
/// gets no more frames; the events subscriber hears of it in
/// [`SocketEventKind::DecodeFailed`](crate::messages::SocketEventKind::DecodeFailed), and
/// the socket closes gracefully (writes already queued still go out).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The decoder rejected the stream (its own error, downcastable from the source).
    #[error("frame decoder failed: {0}")]
    Decoder(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// A frame longer than [`SocketConfig::max_frame_bytes`](crate::SocketConfig::max_frame_bytes)
    /// (8 MiB by default): as many bytes buffered without a whole frame, or a whole frame
    /// of more stream bytes that came in one read. Raise the limit for larger frames.
    #[error(
        "a frame longer than max_frame_bytes: {buffered} bytes of it seen, the limit is \
         {limit} (raise SocketConfig::max_frame_bytes for larger frames)"
    )]
    FrameTooLong {
        /// The frame's stream bytes seen: buffered without a whole frame, or the whole
        /// frame's.
        buffered: usize,
        /// The configured limit ([`SocketConfig::max_frame_bytes`](crate::SocketConfig::max_frame_bytes)).
        limit: usize,
    },
    /// A frame took longer to arrive than
    /// [`PeerLimits::frame_timeout`](crate::PeerLimits::frame_timeout): a peer trickling
    /// its bytes, or gone silent in the middle of a frame.
    #[error(
        "a frame took longer than frame_timeout ({after:?}) to arrive: {buffered} bytes of \
         it buffered"
    )]
    FrameTimedOut {
        /// The frame timeout.
        after: std::time::Duration,
        /// Bytes of the frame buffered when the time was up.
        buffered: usize,
    },
}

/// Why a datagram was not sent. Every [`SendDatagram`](crate::messages::SendDatagram)
/// gets exactly one answer: [`DatagramSent`](crate::messages::DatagramSent) or one of these.
/// A datagram is never split, merged or resent: it leaves whole or not at all, and a
/// transport that takes only part of it ([`DatagramError::Partial`]) is reported, not
/// retried.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// The queue holds as many datagrams or bytes as it may; nothing was queued. The
    /// payload comes back.
    #[error("datagram queue full: {queued} datagrams, {queued_bytes} bytes queued")]
    QueueFull {
        /// Datagrams queued when this one arrived.
        queued: usize,
        /// Bytes queued when this one arrived.
        queued_bytes: usize,
        /// The rejected payload, handed back.
        payload: IoBatch,
    },
    /// The socket is not connected and the datagram named no destination. The payload
    /// comes back.
    #[error("no destination: the socket is not connected and the datagram has no address")]
    NoDestination {
        /// The payload, handed back.
        payload: IoBatch,
    },
    /// The transport took only the first `sent` bytes of the `len`-byte datagram. Nothing
    /// more of it is sent (a datagram's rest would be a datagram of its own).
    #[error("the transport took {sent} of the datagram's {len} bytes")]
    Partial {
        /// Bytes the transport took.
        sent: usize,
        /// Length of the datagram.
        len: usize,
    },
    /// The socket closed (or was closing) before this datagram went out.
    #[error("socket closed before the datagram was sent")]
    Closed,
    /// The socket was aborted before this datagram went out.
    #[error("socket aborted before the datagram was sent")]
    Aborted,
    /// The transport failed to send this datagram (or, when it failed for good, the
    /// socket closed with this error before the datagram went out).
    #[error("transport error: {0}")]
    Transport(#[source] TransportError),
    /// The socket went away without answering (its runtime shut down first), or closed
    /// with the datagram out to a transport that did not answer within 10 s: whether it
    /// went out is unknown.
    #[error(
        "datagram not answered: the socket's runtime shut down, or its transport never answered"
    )]
    Lost,
}
