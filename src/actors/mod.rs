//! The actors: [`Socket`], [`Listener`], [`DatagramSocket`], [`Flusher`], the transports
//! in [`functions`], and the [`ReconnectingClient`] built on sockets. Each is a thin
//! driver of a sans-IO core (`crate::proto`) or a transport.

pub(crate) mod client;
pub(crate) mod datagram;
pub(crate) mod flusher;
pub(crate) mod functions;
pub(crate) mod inbound;
pub(crate) mod listener;
pub(crate) mod polled_set;
pub(crate) mod readiness;
pub(crate) mod reply;
pub(crate) mod socket;
pub(crate) mod unbudgeted;

pub use client::{Backoff, ClientBuilder, ClientConfig, Jitter, ReconnectingClient, UnsentWrites};
pub use datagram::{
    DatagramBuilder, DatagramConfig, DatagramSocket, DatagramWriter, GetDatagramWriter,
};
pub use flusher::Flusher;
pub use functions::{
    Adopt, AdoptedStream, MockDatagram, MockFunctions, MockTransport, SendRecord, SendStep,
    SimConfig, SimCounts, SimNetwork, SocketFunctions, SystemFunctions,
};
pub use inbound::ReadLimits;
pub use listener::{Listener, ListenerBuilder};
pub use reply::WriteResponse;
pub use socket::{
    FlushPolicy, FrameError, FrameStream, FramedWriteError, FramedWriter, GetWriter, InterestGroup,
    Registry, Socket, SocketBuilder, SocketConfig, SocketHandle, WriteFuture, Writer,
    WritesRefused,
};
pub use unbudgeted::start_unbudgeted;

/// Whether the actor is being dropped with its runtime gone: actix polls a live actor
/// once more when its context is dropped (a runtime shutting down, an arbiter stopped),
/// outside any runtime, where a timer or a spawned task would panic. An actor's
/// `stopping` then stops at once: no drain can run, and `stopped` (or `Drop`) answers
/// what is left and closes the handle.
pub(crate) fn runtime_gone() -> bool {
    tokio::runtime::Handle::try_current().is_err()
}
