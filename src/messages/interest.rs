//! Socket → interest subscriber: libcurl's socket callback (`CURLMOPT_SOCKETFUNCTION`) as
//! a message. A socket tells whoever watches it what it is waiting for, only when that
//! changes, with the user data assigned to it (`curl_multi_assign`).

use std::fmt;

use actix::Message;

use super::socket::SocketId;

pub use crate::types::{Interest, UserData};

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
