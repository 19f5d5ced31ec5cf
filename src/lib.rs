//! An actor-model socket I/O runtime on [actix]: each socket is an actor, writes are
//! ordered and answered one by one, bursts are coalesced into vectored writes, and the
//! whole transport is injected.
//!
//! # Overview
//!
//! ```text
//!  producers ──Write──▶ Socket ──PendingWrite──▶ Flusher
//!  (or a Writer handle   │  ▲ ◀──────Flush────────┘
//!   pushing straight     │  │
//!   into the queue)      │  │ OpenSocket, Connect, SendV, RecvFrom, CloseSocket
//!      ▲                 ▼  │ ◀── Ready (after a would-block)
//!      └─ answer,     SocketFunctions: SystemFunctions | MockFunctions | your actor
//!         WritabilityChanged, SocketEvent (to the subscriber)
//! ```
//!
//! - [`Socket`] (one per socket) keeps a write queue: writes leave in FIFO order, never
//!   interleave, and each gets exactly one answer ([`messages::Written`] or a
//!   [`WriteError`] saying how many of its bytes went out). The queue is bounded by
//!   watermarks, and producers hear about writability changes. A [`Writer`] (from
//!   [`messages::GetWriter`]) pushes into the same queue without a message per write.
//! - [`Flusher`] (one per thread) is c-ares' pending-write callback: a socket with fresh
//!   data tells it once, and it answers with a [`messages::Flush`] after the current burst,
//!   so a burst of writes leaves in one vectored write.
//! - [`SocketFunctions`] is c-ares' socket-functions table: `open`, `connect`, `sendv`,
//!   `recvfrom`, `close` (and `bind`, `listen`, `accept`) as recipients, real TCP, UDP and
//!   Unix sockets by default, any subset replaceable. [`MockTransport`] scripts it for
//!   tests.
//! - Reading has backpressure: each delivery holds a [`ReadPermit`] in the socket's read
//!   window ([`ReadLimits`]); a full window stops reading. [`SocketBuilder::framed`]
//!   decodes the stream with any tokio-util `Decoder` into [`messages::Frame`]s;
//!   [`Socket::connect_framed`] gives a typed [`FramedWriter`] (a `Sink`) and
//!   [`FrameStream`] (a `Stream`) in one call.
//! - [`filters`] wrap a transport table in another: a seeded
//!   [`FaultInjector`](filters::FaultInjector), a token-bucket
//!   [`Throttle`](filters::Throttle) and a [`Capture`](filters::Capture) that records a
//!   session to a file, which [`Replay`](filters::Replay) turns back into a scripted mock
//!   transport; stacked in one expression, each keeping the transport contract and a
//!   bound on the bytes it hands on per call. [`Tls`](filters::Tls) and
//!   [`Compress`](filters::Compress) are byte layers ([`filters::Layer`]) each socket runs
//!   in place.
//! - Around the socket: [`Listener`] accepts connections as socket actors,
//!   [`DatagramSocket`] sends and receives whole datagrams, [`ReconnectingClient`] is a
//!   supervised client that reconnects with backoff, [`SocketSystem`] spreads sockets
//!   over one arbiter per core, and [`Registry`] lists live sockets from any thread.
//!
//! # Example
//!
//! ```no_run
//! use bytes::Bytes;
//! use sockactor::messages::Write;
//! use sockactor::Socket;
//!
//! #[actix::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let socket = Socket::builder().connect("127.0.0.1:7000".parse::<std::net::SocketAddr>()?).await?;
//!     let written = socket.send(Write::new(Bytes::from_static(b"hello\n"))).await??;
//!     println!("{} bytes out in {:?}", written.len, written.latency);
//!     Ok(())
//! }
//! ```
//!
//! # Testing with a mock transport
//!
//! Give the builder [`MockTransport::functions`] instead of the system transport, script
//! each `sendv` (partial accepts, would-blocks with paused-time delays, failures), and
//! assert on the recorded calls and byte stream. See [`MockTransport`].
//!
//! The library emits [`tracing`] spans and events and never installs a subscriber.

#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod actors;
mod batch;
mod error;
pub mod filters;
pub mod messages;
mod proto;
mod rng;
mod runtime;
mod shared;
mod types;

pub use actors::start_unbudgeted;
pub use actors::{
    Adopt, AdoptedStream, Backoff, ClientBuilder, ClientConfig, DatagramBuilder, DatagramConfig,
    DatagramSocket, DatagramWriter, FlushPolicy, Flusher, FrameError, FrameStream,
    FramedWriteError, FramedWriter, InterestGroup, Jitter, Listener, ListenerBuilder, MockDatagram,
    MockFunctions, MockTransport, ReadLimits, ReconnectingClient, Registry, SendRecord, SendStep,
    SimConfig, SimCounts, SimNetwork, Socket, SocketBuilder, SocketConfig, SocketFunctions,
    SocketHandle, SystemFunctions, UnsentWrites, WriteFuture, WriteResponse, Writer, WritesRefused,
};
pub use batch::{FileRange, FileRangeError, IoBatch, Segment};
pub use error::{DatagramError, DecodeError, SocketError, TransportError, WriteError};
pub use proto::{QueueConfig, TurnCap};
pub use runtime::{SocketSystem, SocketSystemBuilder, SocketSystemError};
pub use shared::ReadPermit;
pub use types::{IdleKind, PeerLimits, SocketBuffers, SocketState};

/// The types most programs need.
pub mod prelude {
    pub use crate::messages::{
        ClientEvent, Close, DatagramEvent, DatagramEventKind, Frame, ListenerEvent, Reconnect,
        SendDatagram, SocketEvent, SocketEventKind, StopListening, Write, Written,
    };
    pub use crate::{
        DatagramError, DatagramSocket, FileRange, FlushPolicy, Flusher, IoBatch, Listener,
        MockTransport, ReconnectingClient, SendStep, Socket, SocketFunctions, SocketSystem,
        TransportError, UnsentWrites, WriteError, Writer,
    };
}
