//! Socket ↔ [`Flusher`](crate::Flusher): c-ares' pending-write callback as messages.

use actix::{Message, Recipient};

use super::socket::SocketId;

/// "I have freshly queued data": sent by a deferred [`Socket`](crate::Socket) to its
/// [`Flusher`](crate::Flusher) when its queue goes from empty to non-empty and it is not
/// already flushing. A socket has at most one outstanding at a time: it asks again only
/// after a [`Flush`] came (one sent by anyone else, which the socket cannot tell from its
/// Flusher's answer, counts as that answer).
///
/// Handled by the Flusher, which answers later, after the current burst of messages on
/// its thread, with one [`Flush`] to `flush`.
#[derive(Debug)]
pub struct PendingWrite {
    /// The socket that has data pending.
    pub socket: SocketId,
    /// Where to send the [`Flush`].
    pub flush: Recipient<Flush>,
}

impl Message for PendingWrite {
    type Result = ();
}

/// "Flush now": sent by the [`Flusher`](crate::Flusher) to a socket that sent a
/// [`PendingWrite`]. The socket then sends everything queued, in as few vectored writes
/// as its fairness limits allow. Harmless when nothing is queued. Sent by anyone else
/// while the socket's request is out, it is taken as the answer to that request: the
/// socket may ask again before its Flusher has answered the first.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flush;

impl Message for Flush {
    type Result = ();
}
