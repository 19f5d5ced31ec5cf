//! Value types at the bottom of the crate: ids, handles, addresses, kinds, interest. They
//! import nothing of the crate's own, and every other module may use them.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A socket's process-wide unique id (used in tracing spans, events and statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u64);

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A transport's name for one of its sockets (c-ares' `ares_socket_t`). Only meaningful
/// to the transport that issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub u64);

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Address family of a new socket (`socket(2)`'s domain).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
    /// Unix domain.
    Unix,
}

/// Socket type (`socket(2)`'s type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketKind {
    /// A byte stream (TCP, Unix stream).
    Stream,
    /// Datagrams (UDP, Unix datagram).
    Datagram,
}

/// A peer address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// An IP address and port.
    Inet(SocketAddr),
    /// A Unix domain socket path; on Linux an abstract name is a path starting with a NUL
    /// byte (bound, and reported for a peer, so); an unnamed peer is the empty path.
    Unix(PathBuf),
}

impl Address {
    /// The family a socket needs to reach this address.
    pub fn family(&self) -> Family {
        match self {
            Address::Inet(SocketAddr::V4(_)) => Family::Ipv4,
            Address::Inet(SocketAddr::V6(_)) => Family::Ipv6,
            Address::Unix(_) => Family::Unix,
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Inet(a)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What a handle became ready for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Readiness {
    /// A read (or, on a listening handle, an accept) may now make progress.
    Readable,
    /// A send may now make progress.
    Writable,
}

/// Data attached to a socket, handed back with every interest notification.
pub type UserData = Arc<dyn Any + Send + Sync>;

/// What a socket is waiting for (libcurl's `CURL_POLL_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interest {
    /// Waiting for nothing right now (`CURL_POLL_NONE`): not reading, nothing blocked.
    None,
    /// Waiting to become readable (`CURL_POLL_IN`): reading, no data at hand.
    In,
    /// Waiting to become writable (`CURL_POLL_OUT`): the transport would block and
    /// queued data waits. Goes away when the queue drains.
    Out,
    /// Both (`CURL_POLL_INOUT`).
    InOut,
    /// The socket is done (`CURL_POLL_REMOVE`): closed; nothing more will come.
    Remove,
}

impl Interest {
    /// Combines the two directions.
    pub fn from_directions(readable: bool, writable: bool) -> Self {
        match (readable, writable) {
            (false, false) => Interest::None,
            (true, false) => Interest::In,
            (false, true) => Interest::Out,
            (true, true) => Interest::InOut,
        }
    }

    /// Whether it includes waiting to read.
    pub fn is_in(self) -> bool {
        matches!(self, Interest::In | Interest::InOut)
    }

    /// Whether it includes waiting to write.
    pub fn is_out(self) -> bool {
        matches!(self, Interest::Out | Interest::InOut)
    }
}

/// Where a socket is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketState {
    /// Taking writes.
    Open,
    /// Closing gracefully: no new writes, the queue draining.
    Draining,
    /// Closed: the handle is gone; the actor stops when its last address is dropped.
    Closed,
}

/// What a transport did with one vectored write (`SendV`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// This many bytes, from the front of the batch, were taken.
    Accepted(usize),
    /// Nothing was taken; a readiness notice (`Ready` with [`Readiness::Writable`]) will
    /// follow.
    WouldBlock,
}

/// Limits on how long a peer may keep a stream socket waiting: idle timeouts, a deadline
/// for each frame being decoded, and a send timeout. All are off by default. They are the
/// defences a server needs against a peer that connects and goes silent, trickles a frame
/// a byte at a time, or stops reading (Netty's `IdleStateHandler`, nginx's
/// `client_header_timeout`, Erlang's `send_timeout`).
///
/// ```
/// use std::time::Duration;
/// use sockactor::{PeerLimits, SocketConfig};
///
/// let config = SocketConfig {
///     limits: PeerLimits {
///         idle: Some(Duration::from_secs(60)),
///         close_when_idle: true,
///         frame_timeout: Some(Duration::from_secs(10)),
///         send_timeout: Some(Duration::from_secs(30)),
///         ..PeerLimits::default()
///     },
///     ..SocketConfig::default()
/// };
/// # let _ = config;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerLimits {
    /// Nothing read for this long: the subscriber hears
    /// [`SocketEventKind::Idle`](crate::messages::SocketEventKind::Idle) with
    /// [`IdleKind::Read`], and again after each further period of silence. Time when the
    /// socket is not reading (read window full, paused, no subscriber, after the peer's
    /// EOF) does not count. An idle period is at least 1 ms (zero counts as 1 ms).
    pub read_idle: Option<Duration>,
    /// No byte sent for this long: `Idle` with [`IdleKind::Write`], and again after each
    /// further period.
    pub write_idle: Option<Duration>,
    /// Nothing read and nothing sent for this long: `Idle` with [`IdleKind::Both`], and
    /// again after each further period.
    pub idle: Option<Duration>,
    /// Close gracefully at the first `Idle` notice (the writes already queued still go
    /// out; [`SocketConfig::drain_timeout`](crate::SocketConfig::drain_timeout) bounds
    /// that). `false` (the default): only report.
    pub close_when_idle: bool,
    /// Framed sockets: the longest a frame may take to arrive, from the read that brought
    /// its first byte. Past it the stream is rejected with
    /// [`DecodeError::FrameTimedOut`](crate::DecodeError::FrameTimedOut), as for a bad
    /// frame (see [`SocketConfig::close_on_decode_error`](crate::SocketConfig::close_on_decode_error)).
    /// Time the read window is full does not count. A frame's bytes are those the
    /// decoder takes toward it: bytes it consumes without making a frame (a length
    /// prefix, or anything it skips, which the socket cannot tell apart) begin the
    /// next frame.
    pub frame_timeout: Option<Duration>,
    /// The longest queued bytes may wait for the peer to take any of them (from the first
    /// would-block after the last progress). Past it the subscriber hears
    /// [`SocketEventKind::SendTimedOut`](crate::messages::SocketEventKind::SendTimedOut),
    /// every unfinished write is answered
    /// [`WriteError::TimedOut`](crate::WriteError::TimedOut) with how far it got, and
    /// the socket closes. Applies to a graceful close's drain too.
    pub send_timeout: Option<Duration>,
}

impl PeerLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.read_idle.is_some()
            || self.write_idle.is_some()
            || self.idle.is_some()
            || self.frame_timeout.is_some()
            || self.send_timeout.is_some()
    }
}

/// Which idle limit of [`PeerLimits`] passed (Netty's `IdleState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdleKind {
    /// Nothing read ([`PeerLimits::read_idle`]).
    Read,
    /// Nothing sent ([`PeerLimits::write_idle`]).
    Write,
    /// Neither ([`PeerLimits::idle`]).
    Both,
}

/// Kernel buffer sizes for a socket: `SO_SNDBUF` and `SO_RCVBUF`, set by the transport
/// when it opens the socket, before it connects or binds (so a TCP receive buffer can
/// shape the window it offers). `None` keeps the system's default. Linux doubles what is
/// asked (for its bookkeeping) and caps it at `net.core.wmem_max` / `rmem_max`; a
/// transport without kernel buffers (a mock, a simulation) ignores them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketBuffers {
    /// `SO_SNDBUF`: the kernel's send buffer, in bytes.
    pub send: Option<usize>,
    /// `SO_RCVBUF`: the kernel's receive buffer, in bytes.
    pub recv: Option<usize>,
}
