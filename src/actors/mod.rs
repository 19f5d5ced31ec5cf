//! The actors: [`Socket`], [`Listener`], [`DatagramSocket`], [`Flusher`], the transports
//! in [`functions`], and the [`ReconnectingClient`] built on sockets.

pub mod client;
pub mod datagram;
pub mod flusher;
pub mod functions;
pub(crate) mod inbound;
pub mod listener;
pub mod socket;
pub mod writer;

pub use client::{
    Backoff, ClientBuilder, ClientConfig, ClientWriteResponse, Jitter, ReconnectingClient,
    UnsentWrites,
};
pub use datagram::{DatagramBuilder, DatagramConfig, DatagramResponse, DatagramSocket};
pub use flusher::Flusher;
pub use functions::{
    MockDatagram, MockFunctions, MockTransport, SendStep, SocketFunctions, SystemFunctions,
};
pub use inbound::{ReadLimits, ReadPermit};
pub use listener::{Listener, ListenerBuilder};
pub use socket::{FlushPolicy, Socket, SocketBuilder, SocketConfig};
pub use writer::{WriteFuture, Writer};
