//! The actors: [`Socket`], [`Listener`], [`DatagramSocket`], [`Flusher`] and the
//! transports in [`functions`].

pub mod datagram;
pub mod flusher;
pub mod functions;
pub mod listener;
pub mod socket;
pub mod writer;

pub use datagram::{DatagramBuilder, DatagramConfig, DatagramResponse, DatagramSocket};
pub use flusher::Flusher;
pub use functions::{
    MockDatagram, MockFunctions, MockTransport, SendStep, SocketFunctions, SystemFunctions,
};
pub use listener::{Listener, ListenerBuilder};
pub use socket::{FlushPolicy, Socket, SocketBuilder, SocketConfig};
pub use writer::{WriteFuture, Writer};
