//! A [`Listener`](crate::Listener) ↔ its owner and its subscriber.

use actix::{Addr, Message};

use super::functions::Address;
use super::socket::SocketId;
use crate::actors::socket::Socket;
use crate::error::TransportError;

/// Stop accepting: the listening handle closes (the port or path is free again), the
/// subscriber gets [`ListenerEvent::Closed`] and the listener actor stops. Sockets it
/// already accepted are not affected.
#[derive(Clone, Copy, Debug, Default)]
pub struct StopListening;

impl Message for StopListening {
    type Result = ();
}

/// Ask a listener for the local address it listens on (with the port the system chose,
/// when it was bound to port 0).
#[derive(Clone, Copy, Debug, Default)]
pub struct GetLocalAddr;

impl Message for GetLocalAddr {
    type Result = Address;
}

/// What a [`Listener`](crate::Listener) tells its subscriber.
#[derive(Debug)]
#[non_exhaustive]
pub enum ListenerEvent {
    /// A connection was accepted and its socket actor started (built by the listener's
    /// per-connection builder, on the listener's arbiter).
    Accepted {
        /// The new socket.
        socket: Addr<Socket>,
        /// Its id.
        id: SocketId,
        /// The peer. An unnamed Unix domain client is `Address::Unix` with an empty path.
        peer: Address,
    },
    /// An `accept` failed. Input/output errors (no descriptors left, a connection
    /// aborted before it was taken…) are retried after the listener's back-off and do
    /// not stop it; any other error (the transport lost the handle or is gone) is
    /// followed by [`ListenerEvent::Closed`].
    AcceptFailed {
        /// The transport's error.
        error: TransportError,
    },
    /// The listening handle closed: [`StopListening`], every address of the listener
    /// dropped, or a transport error it cannot recover from. The last event: sent once
    /// the transport has closed the handle (the port free, a Unix path gone; 10 s at
    /// most for a transport that does not answer) and the sockets of connections already
    /// taken have been announced.
    Closed,
}

impl Message for ListenerEvent {
    type Result = ();
}
