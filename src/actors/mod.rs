//! The actors: [`Socket`], [`Flusher`] and the transports in [`functions`].

pub mod flusher;
pub mod functions;
pub(crate) mod inbound;
pub mod socket;
pub mod writer;

pub use flusher::Flusher;
pub use functions::{MockFunctions, MockTransport, SendStep, SocketFunctions, SystemFunctions};
pub use inbound::{ReadLimits, ReadPermit};
pub use socket::{FlushPolicy, Socket, SocketBuilder, SocketConfig};
pub use writer::{WriteFuture, Writer};
