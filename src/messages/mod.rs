//! The messages between actors, grouped by the boundary they cross.
//!
//! - [`socket`]: producers and subscribers ↔ [`Socket`](crate::Socket).
//! - [`flush`]: [`Socket`](crate::Socket) ↔ [`Flusher`](crate::Flusher).
//! - [`functions`]: [`Socket`](crate::Socket) ↔ the transport ([`SocketFunctions`](crate::SocketFunctions)).
//! - [`read`]: subscribers ↔ [`Socket`](crate::Socket), the inbound side (frames, pausing).
//! - [`interest`]: [`Socket`](crate::Socket) → whoever watches what it waits for.
//! - [`client`]: producers and subscribers ↔ [`ReconnectingClient`](crate::ReconnectingClient).
//! - [`listener`]: owners and subscribers ↔ [`Listener`](crate::Listener).
//! - [`datagram`]: producers and subscribers ↔ [`DatagramSocket`](crate::DatagramSocket).

pub mod client;
pub mod datagram;
pub mod flush;
pub mod functions;
pub mod interest;
pub mod listener;
pub mod read;
pub mod socket;

pub use client::{ClientEvent, ClientState, GetClientState, Reconnect};
pub use datagram::{
    DatagramEvent, DatagramEventKind, DatagramInfo, DatagramSent, DatagramStats, GetDatagramInfo,
    GetDatagramStats, SendDatagram,
};
pub use flush::{Flush, PendingWrite};
pub use functions::{
    Accept, Accepted, Address, Bind, CloseSocket, Connect, Family, Handle, Listen, OpenSocket,
    Readiness, Ready, Received, RecvFrom, SendV, Sent, ShutdownWrite, SocketKind,
};
pub use interest::{AssignUserData, Interest, InterestRefused, SocketInterest, UserData};
pub use listener::{GetLocalAddr, ListenerEvent, StopListening};
pub use read::{Frame, PauseReading, ResumeReading};
pub use socket::{
    CancelWrite, Close, GetInfo, GetStats, SocketEvent, SocketEventKind, SocketId, SocketInfo,
    SocketStats, SubscribeWritability, WritabilityChanged, Write, Written,
};

pub use crate::actors::{GetDatagramWriter, GetWriter};
