//! Socket → interest subscriber: libcurl's socket callback (`CURLMOPT_SOCKETFUNCTION`) as
//! a message. A socket tells whoever watches it what it is waiting for, only when that
//! changes, with the user data assigned to it (`curl_multi_assign`).

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use actix::Message;

use super::socket::SocketId;

/// Data attached to a socket, handed back with every [`SocketInterest`].
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

/// Interest change: sent by a [`Socket`](crate::Socket) to its interest subscriber each
/// time what it waits for changes, and once with [`Interest::Remove`] when it closes.
///
/// Answer `Err(..)` to say the notification could not be taken in (libcurl's callback
/// returning -1): the socket then aborts, every queued write answered with
/// [`WriteError::Aborted`](crate::WriteError::Aborted).
#[derive(Clone)]
pub struct SocketInterest {
    /// The socket.
    pub socket: SocketId,
    /// What it now waits for.
    pub interest: Interest,
    /// The data assigned with [`AssignUserData`] or the builder, if any.
    pub user_data: Option<UserData>,
}

impl fmt::Debug for SocketInterest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketInterest")
            .field("socket", &self.socket)
            .field("interest", &self.interest)
            .field("user_data", &self.user_data.is_some())
            .finish()
    }
}

impl Message for SocketInterest {
    type Result = Result<(), InterestRefused>;
}

/// An interest subscriber's refusal of a notification.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("interest subscriber refused the notification: {0}")]
pub struct InterestRefused(pub String);

/// Assign (or clear, with `None`) the user data a socket hands back with every
/// [`SocketInterest`] (libcurl's `curl_multi_assign`).
#[derive(Clone)]
pub struct AssignUserData(pub Option<UserData>);

impl fmt::Debug for AssignUserData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AssignUserData")
            .field(&self.0.is_some())
            .finish()
    }
}

impl Message for AssignUserData {
    type Result = ();
}
