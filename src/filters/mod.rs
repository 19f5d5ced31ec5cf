//! Transport filters: [`SocketFunctions`](crate::SocketFunctions) actors that wrap another
//! table and change what passes through it, libowfat's `iob_write` through a filtering
//! callback, as actors.
//!
//! A filter takes [`SendV`](crate::messages::SendV) batches and answers them exactly as a
//! transport does: how many of the caller's bytes it took ([`Sent::Accepted`]), would-block
//! (after which it owes the socket one [`Ready`](crate::messages::Ready) with
//! `Writable`), or a permanent error. It hands its inner transport at most a bounded
//! number of bytes per call, so one socket cannot hold a shared transport for long, and
//! `recvfrom` passes through its inverse. Filters stack in one expression:
//!
//! ```no_run
//! use std::time::Duration;
//! use sockactor::filters::{FaultInjector, Faults, Throttle};
//! use sockactor::SocketFunctions;
//!
//! # fn demo() {
//! let functions: SocketFunctions = Throttle::per_socket(1 << 20, 64 << 10).wrap(
//!     FaultInjector::new(7, Faults::default().partial(0.3).would_block(0.1, Duration::from_millis(2)))
//!         .wrap(SocketFunctions::system()),
//! );
//! # }
//! ```
//!
//! [`Compress`] is a transforming filter: a streaming deflate both ways, with a bounded
//! outbox of encoded bytes and bounded inflation. [`Tls`] is another: TLS on rustls, its
//! handshake run before the connect (or accept) is answered, with a bounded outbox of
//! ciphertext and bounded decryption.
//!
//! [`Capture`] records everything that passes through it to a file (format in
//! [`record`]), [`CaptureReader`] reads it back, and [`Replay`] turns it into a scripted
//! mock transport: a captured session becomes a deterministic test.
//!
//! [`Filter`] and [`FilterActor`] are the shared plumbing (opening, connecting, closing,
//! binding, listening and accepting pass through, with hooks after a connect or accept
//! and before a close; readiness notices are forwarded to the right socket); a filter
//! only says what it does with `sendv` and `recvfrom`. See
//! `docs/filters.md` for the whole contract.
//!
//! [`Sent::Accepted`]: crate::messages::Sent::Accepted

mod capture;
mod compress;
mod fault;
mod link;
pub mod record;
mod replay;
mod throttle;
mod tls;

pub use crate::proto::{Decoded, Layer};
pub use capture::{Capture, CaptureBuffer};
pub use compress::{Compress, CompressError};
pub use fault::{FaultInjector, Faults};
pub use link::{take_front, Filter, FilterActor, FilterAnswer, Link};
pub use record::{
    AcceptAnswer, CaptureError, CaptureEvent, CaptureReader, Record, RecordedError, RecvAnswer,
    SendAnswer,
};
pub use replay::Replay;
pub use throttle::{Throttle, TokenBucket};
pub use tls::{Tls, TlsConfigError, TlsSessionInfo, TlsSessions};
