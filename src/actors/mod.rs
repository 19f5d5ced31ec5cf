//! The actors: [`Socket`], [`Flusher`], the transports in [`functions`], and the
//! [`ReconnectingClient`] built on sockets.

pub mod client;
pub mod flusher;
pub mod functions;
pub(crate) mod inbound;
pub mod socket;
pub mod writer;

pub use client::{
    Backoff, ClientBuilder, ClientConfig, ClientWriteResponse, Jitter, ReconnectingClient,
    UnsentWrites,
};
pub use flusher::Flusher;
pub use functions::{MockFunctions, MockTransport, SendStep, SocketFunctions, SystemFunctions};
pub use inbound::{ReadLimits, ReadPermit};
pub use socket::{FlushPolicy, Socket, SocketBuilder, SocketConfig};
pub use writer::{WriteFuture, Writer};
