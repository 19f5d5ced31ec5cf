//! The sans-IO socket core: every decision a socket makes, with no actors, no runtime, no
//! file or socket I/O and no clock (the time is passed in), in the manner of
//! quinn-proto's `Connection`. The actors only wire it to messages
//! and to a transport.
//!
//! - [`StreamCore`]: one stream socket. Its parts: the [`WriteQueue`] (FIFO writes,
//!   vectored transmits, partial sends, cancels), writes waiting for room, the flush state
//!   with its fairness budget, the read state with its window, the lifecycle (open,
//!   draining, shutting down, lingering, closed) with its drain and linger deadlines, and
//!   interest changes.
//! - [`DatagramCore`]: one datagram socket, the same flush, read and lifecycle parts
//!   around a queue of whole datagrams.
//! - [`Layer`]s in a `LayerStack`: byte transforms (TLS, compression) run in place
//!   between the core's plaintext and the transport, with one bounded outbox.
//! - [`Watermarks`]: admission by watermarks with hysteresis, the one writability state a
//!   socket and its writers share, as rules over a one-word [`Level`] (the actors keep it
//!   in an atomic, because a `Writer` on another thread admits its writes before they
//!   reach the mailbox).
//!
//! # Calling order
//!
//! A driver owns one core and, after every input, drains its outputs:
//!
//! 1. **Inputs** (`handle_*`): a write (`handle_write`, or `handle_wait` for one that
//!    must wait for room), the Flusher's `handle_flush`, `handle_cancel`, `handle_close`,
//!    what the transport did (`handle_sent`, `handle_read`, `handle_ready`,
//!    `handle_shutdown`), what the subscriber did (`handle_unacked`, `handle_pause`,
//!    `handle_resume`; then, when `read_hold_moved` says reading was held back or freed,
//!    `handle_read_hold(now)` for the limits' clock), `handle_yielded` after a yield, and
//!    `handle_timeout` when the deadline from `poll_timeout` has passed. Time comes in as
//!    an argument.
//! 2. **`poll_io`** until `None`: each [`IoAction`] is one thing to do with the transport
//!    or the runtime (ask the Flusher, transmit, yield, wait for readiness, read, shut
//!    down the sending half, close the handle). Doing it produces another input, at once
//!    (a transport called in place) or later (one reached by message: then the driver
//!    says `handle_send_pending` / `handle_read_pending` and feeds the answer when it
//!    comes). A transmit is taken with `poll_transmit` (owned slices) or
//!    `poll_transmit_in_place` (borrowed `IoSlice`s), after any file chunks asked for by
//!    `poll_chunk_request` were read and given back with `handle_chunk`.
//! 3. **`poll_event`** until `None`: write answers, bytes released from the queue (for the
//!    admission gate), interest and state changes, EOF, failures, the close.
//! 4. **`poll_timeout`**: when to call `handle_timeout` next.
//!
//! Every write gets exactly one [`Event::Answer`], except the success of a write whose
//! token is [`silent`](Token::silent) (fire-and-forget: nobody would hear it), which is
//! only counted. A core never answers a write inside the `handle_*` call that queued it,
//! except a zero-length write with nothing ahead of it.

mod datagram;
mod flow;
mod layer;
mod limits;
mod queue;
mod stream;
#[cfg(test)]
pub(crate) mod testing;
mod watermarks;

pub(crate) use datagram::{DatagramCore, DatagramEvent, DatagramSettings, Received};
pub use datagram::{DatagramSent, DatagramStats};
pub(crate) use layer::LayerStack;
pub use layer::{Decoded, Layer};
pub(crate) use queue::InPlaceTransmit;
pub use queue::{QueueConfig, TurnCap, Written};
pub use stream::SocketStats;
pub(crate) use stream::{
    Event, IoAction, ReadOutcome, Shut, StreamCore, StreamSettings, Token, FLIGHT_GRACE,
};
pub(crate) use watermarks::{Level, Watermarks};
