//! The messages between actors, grouped by the boundary they cross.
//!
//! - [`socket`]: producers and subscribers ↔ [`Socket`](crate::Socket).
//! - [`flush`]: [`Socket`](crate::Socket) ↔ [`Flusher`](crate::Flusher).
//! - [`functions`]: [`Socket`](crate::Socket) ↔ the transport ([`SocketFunctions`](crate::SocketFunctions)).
//! - [`read`]: subscribers ↔ [`Socket`](crate::Socket), the inbound side (frames, pausing).
//! - [`interest`]: [`Socket`](crate::Socket) → whoever watches what it waits for.
//! - [`client`]: producers and subscribers ↔ [`ReconnectingClient`](crate::ReconnectingClient).

pub mod client;
pub mod flush;
pub mod functions;
pub mod interest;
pub mod read;
pub mod socket;

pub use client::{ClientEvent, ClientState, GetClientState, Reconnect};
pub use flush::{Flush, PendingWrite};
pub use functions::{
    Address, CloseSocket, Connect, Family, Handle, OpenSocket, Readiness, Ready, Received,
    RecvFrom, SendV, Sent, SocketKind,
};
pub use interest::{AssignUserData, Interest, InterestRefused, SocketInterest, UserData};
pub use read::{Frame, PauseReading, ResumeReading};
pub use socket::{
    CancelWrite, Close, GetInfo, GetStats, GetWriter, SocketEvent, SocketEventKind, SocketId,
    SocketInfo, SocketStats, SubscribeWritability, WritabilityChanged, Write, Written,
};
