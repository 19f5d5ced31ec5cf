//! Producers and subscribers ↔ [`ReconnectingClient`](crate::ReconnectingClient).
//!
//! A client takes the same [`Write`](crate::messages::Write) and
//! [`Close`](crate::messages::Close) messages as a [`Socket`](crate::Socket); the messages
//! here are the ones only a client has: its lifecycle events, [`Reconnect`] and
//! [`GetClientState`].

use std::time::Duration;

use actix::Message;
use bytes::Bytes;

use crate::error::{SocketError, TransportError, WriteError};
use crate::messages::functions::Address;

/// A notification from a [`ReconnectingClient`](crate::ReconnectingClient) to its
/// subscriber: how the connection comes and goes, and what the peer sent.
///
/// For one connection the order is `Connected`, then `Received` and `Eof` as the peer
/// sends them, then `Disconnected`; between connections come `Reconnecting` (one per
/// scheduled attempt), and `GaveUp` when the attempts run out.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A connection is up; writes flow to it.
    Connected {
        /// The peer connected to.
        peer: Address,
        /// Which attempt made it: 1 for the first try since the start (or since the last
        /// connection was lost, or since a [`Reconnect`]).
        attempt: u32,
    },
    /// The connection is gone: a transport error closed it (`cause`), or the peer
    /// closed its side (`None`).
    Disconnected {
        /// The transport error, if one ended the connection.
        cause: Option<TransportError>,
    },
    /// The next connect attempt is scheduled after `delay` (the backoff, jitter
    /// included).
    Reconnecting {
        /// The number the attempt will have (see [`ClientEvent::Connected::attempt`]).
        attempt: u32,
        /// How long the client waits before it.
        delay: Duration,
    },
    /// The attempts ran out. Writes are now refused with [`WriteError::GaveUp`] until a
    /// [`Reconnect`].
    GaveUp {
        /// Connect attempts made, all failed.
        attempts: u32,
        /// Why the last one failed.
        last_error: SocketError,
    },
    /// Bytes arrived from the peer, with their place in the socket's read window
    /// ([`ReadPermit`](crate::ReadPermit), dropped with the event unless kept): the read
    /// backpressure of the socket reaches the client's subscriber. `None` only for data a
    /// socket delivered without one.
    Received(Bytes, Option<crate::ReadPermit>),
    /// The peer closed its sending half.
    Eof,
    /// An idle limit of the socket's [`PeerLimits`](crate::PeerLimits) passed (see
    /// [`SocketEventKind::Idle`](crate::messages::SocketEventKind::Idle)): the cue for a
    /// keep-alive. With `close_when_idle` the connection then closes, and the client
    /// reconnects.
    Idle {
        /// Which limit.
        kind: crate::IdleKind,
        /// The limit.
        after: Duration,
    },
    /// A write sent with `do_send` (nobody awaits its answer) failed.
    WriteFailed {
        /// Its tag, if it had one.
        tag: Option<u64>,
        /// Why.
        error: WriteError,
    },
}

impl Message for ClientEvent {
    type Result = ();
}

/// Start over after the client gave up: reset the attempt count and connect now.
/// Answered `true` if that started a connect, `false` if the client had not given up
/// (it is connected, connecting or waiting to, or it was closed for good).
#[derive(Clone, Copy, Debug, Default)]
pub struct Reconnect;

impl Message for Reconnect {
    type Result = bool;
}

/// Ask where a client is in its lifecycle.
#[derive(Clone, Copy, Debug, Default)]
pub struct GetClientState;

impl Message for GetClientState {
    type Result = ClientState;
}

/// Where a [`ReconnectingClient`](crate::ReconnectingClient) is in its lifecycle.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientState {
    /// Waiting out the backoff before the next connect attempt.
    Waiting {
        /// The number the next attempt will have.
        attempt: u32,
    },
    /// A connect attempt is under way.
    Connecting {
        /// Its number.
        attempt: u32,
    },
    /// Connected: writes flow to the socket.
    Connected {
        /// The peer.
        peer: Address,
    },
    /// Closing gracefully: sending what it holds, then closing the socket.
    Draining,
    /// Gave up after this many failed attempts; a [`Reconnect`] starts over.
    GaveUp {
        /// Connect attempts made.
        attempts: u32,
    },
    /// Closed for good by a [`Close`](crate::messages::Close).
    Closed,
}
