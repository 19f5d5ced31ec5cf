//! Socket ↔ transport: c-ares' socket functions (`asocket`, `aconnect`, `asendv`,
//! `arecvfrom`, `aclose`, and from `ares_socket_functions_ex` `abind`) as messages, plus
//! [`Listen`] and [`Accept`] for listeners, and the readiness notice a transport sends
//! back.
//!
//! Every operation is non-blocking, as c-ares requires of its callbacks: an operation
//! that cannot make progress answers *would block*, and the transport then owes the
//! socket one [`Ready`] notice when the handle becomes writable (after [`SendV`]) or
//! readable (after [`RecvFrom`] or [`Accept`]). That notice is the signal to retry.

use actix::{Message, WeakRecipient};
use bytes::Bytes;

use crate::error::TransportError;
pub use crate::types::{Address, Family, Handle, Readiness, Sent, SocketKind};

/// Create a socket (`asocket`). Sent by [`SocketBuilder`](crate::SocketBuilder); answered
/// with the new handle.
#[derive(Debug)]
pub struct OpenSocket {
    /// Address family.
    pub family: Family,
    /// Stream or datagram.
    pub kind: SocketKind,
    /// Where the transport sends [`Ready`] notices for this handle. Weak: a transport
    /// never keeps the socket's actor alive (an actor whose last address is dropped
    /// drains, closes its handle and stops, whatever its transport); a notice for an
    /// actor that is gone is dropped.
    pub events: WeakRecipient<Ready>,
    /// Kernel buffer sizes to set before anything else (a transport without kernel
    /// buffers ignores them).
    pub buffers: crate::types::SocketBuffers,
}

impl Message for OpenSocket {
    type Result = Result<Handle, TransportError>;
}

/// Connect a handle to a peer (`aconnect`). Answered when the connection is made or has
/// failed.
#[derive(Debug)]
pub struct Connect {
    /// The handle, from [`OpenSocket`].
    pub handle: Handle,
    /// The peer.
    pub addr: Address,
}

impl Message for Connect {
    type Result = Result<(), TransportError>;
}

/// Send a batch of segments (`asendv`, `writev(2)`). Sent by a [`Socket`](crate::Socket)
/// with at most one outstanding per handle.
///
/// The answer is [`Sent::Accepted`] with how many bytes, from the front, the transport
/// took (at least one, at most all), or [`Sent::WouldBlock`] when it took none and will
/// send [`Ready`] with [`Readiness::Writable`] once it can, or an error, which is
/// permanent for the handle.
#[derive(Debug)]
pub struct SendV {
    /// The handle.
    pub handle: Handle,
    /// The bytes, in order: slices of the writers' buffers.
    pub segments: Vec<Bytes>,
    /// Destination, for unconnected datagram sockets; `None` on connected sockets.
    pub to: Option<Address>,
}

impl SendV {
    /// Total bytes offered.
    pub fn len(&self) -> usize {
        self.segments.iter().map(Bytes::len).sum()
    }

    /// Whether no bytes are offered.
    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(Bytes::is_empty)
    }
}

impl Message for SendV {
    type Result = Result<Sent, TransportError>;
}

/// Receive data (`arecvfrom`). Sent by a [`Socket`](crate::Socket) with at most one
/// outstanding per handle.
#[derive(Debug)]
pub struct RecvFrom {
    /// The handle.
    pub handle: Handle,
    /// Most bytes to return.
    pub max_len: usize,
}

impl Message for RecvFrom {
    type Result = Result<Received, TransportError>;
}

/// What a [`RecvFrom`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// Bytes from the peer (for datagram sockets, one whole datagram and its sender). On
    /// a stream, at least one byte: a stream socket takes an empty `Data` as a broken
    /// transport ([`TransportError::EmptyRead`]).
    Data {
        /// The bytes.
        bytes: Bytes,
        /// The sender, where the transport knows it.
        from: Option<Address>,
    },
    /// Datagram sockets only: a datagram longer than `max_len` arrived. These are its
    /// first `max_len` bytes; the rest is lost. Stream transports never answer this.
    Truncated {
        /// The datagram's first `max_len` bytes.
        bytes: Bytes,
        /// The sender, where the transport knows it.
        from: Option<Address>,
    },
    /// The peer closed its sending half: no more data will come.
    Eof,
    /// Nothing to read now; a [`Ready`] with [`Readiness::Readable`] will follow.
    WouldBlock,
}

/// Give a handle a local address (`abind`, `bind(2)`). Answered with the address it got
/// (the port the system chose, for port 0).
///
/// Stream handles bound here are usually made listeners with [`Listen`]; datagram
/// handles may be bound before they send or connect.
#[derive(Clone, Debug)]
pub struct Bind {
    /// The handle, from [`OpenSocket`].
    pub handle: Handle,
    /// The local address.
    pub addr: Address,
    /// Let other sockets bind the same address and port (`SO_REUSEPORT`), so that
    /// several listeners (one per arbiter, say) share one port. Every one of them must
    /// ask for it.
    pub reuse_port: bool,
}

impl Message for Bind {
    type Result = Result<Address, TransportError>;
}

/// Make a bound stream handle accept connections (`listen(2)`).
#[derive(Clone, Copy, Debug)]
pub struct Listen {
    /// The handle, bound with [`Bind`].
    pub handle: Handle,
    /// How many connections the system may hold that have not been accepted yet.
    pub backlog: u32,
}

impl Message for Listen {
    type Result = Result<(), TransportError>;
}

/// Take one connection from a listening handle (`accept(2)`).
///
/// The answer is [`Accepted::Connection`] with a new, connected handle, or
/// [`Accepted::WouldBlock`], after which the transport sends the listening handle's
/// `events` recipient (from its [`OpenSocket`]) one [`Ready`] with
/// [`Readiness::Readable`] once a connection is waiting, or an error. Errors are about
/// this call (no descriptors left, a connection aborted before it was taken…), not
/// necessarily the end of the listener.
#[derive(Debug)]
pub struct Accept {
    /// The listening handle.
    pub handle: Handle,
    /// Where [`Ready`] notices for the *accepted* connection's handle go (the listener
    /// makes the socket actor's context before it asks). Weak, as in [`OpenSocket`].
    /// Unused on would-block.
    pub events: WeakRecipient<Ready>,
}

impl Message for Accept {
    type Result = Result<Accepted, TransportError>;
}

/// What an [`Accept`] found.
#[derive(Clone, Debug)]
pub enum Accepted {
    /// A new connection with its own handle, connected and ready for [`SendV`] and
    /// [`RecvFrom`].
    Connection {
        /// The new handle.
        handle: Handle,
        /// The peer. A Unix domain client that did not bind a path (the usual case) is
        /// `Address::Unix` with an empty path.
        peer: Address,
    },
    /// No connection is waiting; a [`Ready`] with [`Readiness::Readable`] will follow.
    WouldBlock,
    /// The transport took a connection but could not finish it (a filter's handshake
    /// failed: a bad certificate, a client that left or never spoke) and has closed it.
    /// Not a failure of the listening handle: a listener reports it and accepts the next
    /// connection at once, without backing off.
    Refused(TransportError),
}

/// Shut down the sending half of a stream handle (`shutdown(SHUT_WR)`): the peer reads
/// EOF after the bytes already sent, and the handle can still be read from. An optional
/// operation of a table ([`SocketFunctions::with_shutdown`](crate::SocketFunctions::with_shutdown));
/// a socket whose table has it shuts its sending half down when a graceful close has
/// drained, and can then linger reading ([`SocketConfig::close_linger`](crate::SocketConfig::close_linger)).
#[derive(Debug)]
pub struct ShutdownWrite {
    /// The handle.
    pub handle: Handle,
}

impl Message for ShutdownWrite {
    type Result = Result<(), TransportError>;
}

/// Close a handle (`aclose`). The handle is invalid afterwards.
#[derive(Debug)]
pub struct CloseSocket {
    /// The handle.
    pub handle: Handle,
}

impl Message for CloseSocket {
    type Result = Result<(), TransportError>;
}

/// Readiness notice: sent by a transport to the `events` recipient given at open, once
/// after each would-block answer, when the handle can make progress again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The handle.
    pub handle: Handle,
    /// What it is ready for.
    pub readiness: Readiness,
}

impl Message for Ready {
    type Result = ();
}
