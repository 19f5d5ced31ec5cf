//! The one I/O mechanism a [`Socket`] sees: [`StreamIo`]. The socket does what its core's
//! [`IoAction`](crate::proto::IoAction)s ask through it, without knowing how the transport
//! is reached; the answer is fed to the core now (a transport called in place) or when it
//! comes (one reached by message).
//!
//! - [`TableIo`]: the transport table. On the unreplaced system table it borrows the
//!   stream and calls `writev`, `sendfile`, `read` and `shutdown` in place, waiting for
//!   readiness on the reactor itself; on any other table it sends `SendV`, `RecvFrom` and
//!   `ShutdownWrite` and the transport's `Ready` notices wake it.
//! - [`LayeredIo`](super::layered::LayeredIo): byte layers (TLS, compression) run in
//!   place over a `TableIo`, with one bounded outbox.

use std::fmt;
use std::io;
use std::sync::Arc;

use actix::{AsyncContext, Context};
use bytes::Bytes;

use super::{Socket, WriteReply};
use crate::actors::functions::{flatten, sendfile_unsupported, SocketFunctions, SystemStream};
use crate::actors::inbound::{Got, Inbound};
use crate::actors::readiness::{call, WaitSlots, Woke};
use crate::error::TransportError;
use crate::messages::functions::{CloseSocket, Received, RecvFrom, SendV, ShutdownWrite};
use crate::proto::{InPlaceTransmit, StreamCore};
use crate::types::{Address, Handle, Readiness, Sent};

/// The core a socket drives.
pub(crate) type Core = StreamCore<WriteReply>;

/// When a transport's answer comes.
#[derive(Debug)]
pub(crate) enum Answer<T> {
    /// Now (a transport called in place).
    Now(T),
    /// Later, to the socket (`Socket::on_sent`, `on_read`, `on_shutdown`): the transport
    /// is reached by message.
    Later,
    /// Nothing was done (the core failed meanwhile, or asks again).
    Nothing,
}

/// A transport's answer by message to a byte layer's own call (see `LayeredIo`).
#[derive(Debug)]
pub(crate) enum Lower {
    /// What it did with the bytes offered.
    Sent {
        offered: Bytes,
        result: Result<Sent, TransportError>,
    },
    /// What it read.
    Read(Result<Received, TransportError>),
    /// It shut the sending half down (or could not).
    Shutdown(Result<(), TransportError>),
    /// A graceful close waited its longest for the layers' bytes to go out.
    CloseTimedOut,
}

/// How a socket reaches its transport: see the [module docs](self).
pub(crate) trait StreamIo: fmt::Debug {
    /// Whether file ranges can go out with `sendfile` (the core keeps whether they still
    /// do: a file may say it cannot).
    fn sendfile(&self) -> bool;

    /// Whether the transport is called in place.
    fn in_place(&self) -> bool;

    /// The byte layers in place, plaintext side first.
    fn layers(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// The peer's address, when known.
    fn peer(&self) -> Option<&Address>;

    /// The transport's handle of the socket.
    fn handle(&self) -> Handle;

    /// Whether the sending half can be shut down alone.
    fn can_shutdown(&self) -> bool;

    /// Hands the core's next transmit (at most `budget` bytes) to the transport.
    fn transmit(
        &mut self,
        core: &mut Core,
        budget: usize,
        ctx: &mut Context<Socket>,
    ) -> Answer<Result<Sent, TransportError>>;

    /// Reads at most `max` bytes into `inbound`.
    fn read(
        &mut self,
        core: &mut Core,
        inbound: &mut Inbound,
        max: usize,
        ctx: &mut Context<Socket>,
    ) -> Answer<Result<Got, TransportError>>;

    /// Waits for `readiness`, then wakes the socket (`Socket::on_ready`). A transport
    /// reached by message sends its own `Ready` notice: nothing to do.
    fn wait(&mut self, readiness: Readiness, ctx: &mut Context<Socket>);

    /// The wait for `readiness` ended.
    fn waited(&mut self, readiness: Readiness);

    /// The transport is ready (a notice, or the socket's own wait ended): `true` when the
    /// core is to hear of it (a byte layer keeps writability for its own outbox).
    fn ready(&mut self, readiness: Readiness, core: &mut Core, ctx: &mut Context<Socket>) -> bool {
        let _ = (readiness, core, ctx);
        true
    }

    /// A transport's answer to a byte layer's own call; a read's outcome for the core,
    /// if it has one now.
    fn lower(
        &mut self,
        lower: Lower,
        core: &mut Core,
        ctx: &mut Context<Socket>,
    ) -> Option<Result<Got, TransportError>> {
        let _ = (lower, core, ctx);
        None
    }

    /// Shuts down the sending half.
    fn shutdown(
        &mut self,
        core: &mut Core,
        ctx: &mut Context<Socket>,
    ) -> Answer<Result<(), TransportError>>;

    /// Closes the handle (the descriptor closes now, on the system transport) and stops
    /// waiting.
    fn close(&mut self, ctx: &mut Context<Socket>);

    /// The actor stopped: a close still under way (see `close`) ends now.
    fn stopped(&mut self, _ctx: &mut Context<Socket>) {}

    /// The actor is dropped without stopping (its arbiter stopped): the handle, unless
    /// closed already, is closed now (no context: nothing is waited for).
    fn abandon(&mut self);

    /// Bytes the core counts as sent are still held here (a layered socket's outbox):
    /// the socket must not stop before they are out.
    fn unsent(&self) -> bool {
        false
    }
}

/// A socket's transport table as its I/O: see the [module docs](self).
pub(crate) struct TableIo {
    functions: SocketFunctions,
    handle: Handle,
    /// The peer's address, when known (kept here, not in the actor: the actor's own
    /// size is what every idle socket pays in its task).
    peer: Option<Address>,
    /// The stream, when the table's data path is the system's and it is called in place.
    stream: Option<Arc<SystemStream>>,
    waits: WaitSlots,
    /// `CloseSocket` went to the transport.
    closed: bool,
}

impl fmt::Debug for TableIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableIo")
            .field("handle", &self.handle)
            .field("in_place", &self.stream.is_some())
            .finish_non_exhaustive()
    }
}

impl TableIo {
    pub(crate) fn new(
        functions: SocketFunctions,
        handle: Handle,
        peer: Option<Address>,
        stream: Option<Arc<SystemStream>>,
    ) -> Self {
        TableIo {
            functions,
            handle,
            peer,
            stream,
            waits: WaitSlots::default(),
            closed: false,
        }
    }

    /// Lets go of the stream and has the transport close the handle, once.
    fn close_handle(&mut self) {
        // With the system transport's own reference dropped on `CloseSocket`, the
        // descriptor closes now.
        self.stream = None;
        if !std::mem::replace(&mut self.closed, true) {
            self.functions.close().do_send(CloseSocket {
                handle: self.handle,
            });
        }
    }
}

impl TableIo {
    /// The stream, when the transport is called in place.
    pub(crate) fn stream(&self) -> Option<&Arc<SystemStream>> {
        self.stream.as_ref()
    }

    /// Sends `bytes` by message; the answer comes to `Socket::on_lower`.
    pub(crate) fn send_raw(&self, bytes: Bytes, ctx: &mut Context<Socket>) {
        let sendv = SendV {
            handle: self.handle,
            segments: vec![bytes.clone()],
            to: None,
        };
        ctx.spawn(call(
            self.functions.sendv().send(sendv),
            move |result, act: &mut Socket, ctx| {
                let result = flatten(result);
                act.on_lower(
                    Lower::Sent {
                        offered: bytes,
                        result,
                    },
                    ctx,
                )
            },
        ));
    }

    /// Reads at most `max` bytes by message; the answer comes to `Socket::on_lower`.
    pub(crate) fn recv_raw(&self, max: usize, ctx: &mut Context<Socket>) {
        let recv = RecvFrom {
            handle: self.handle,
            max_len: max,
        };
        ctx.spawn(call(
            self.functions.recvfrom().send(recv),
            |result, act: &mut Socket, ctx| act.on_lower(Lower::Read(flatten(result)), ctx),
        ));
    }

    /// Shuts the sending half down: now in place, by message if the table has the
    /// operation (the answer comes to `Socket::on_lower`), or not at all (`Ok`: the close
    /// follows).
    pub(crate) fn shutdown_raw(
        &self,
        ctx: &mut Context<Socket>,
    ) -> Answer<Result<(), TransportError>> {
        if let Some(stream) = &self.stream {
            return Answer::Now(stream.shutdown_write().map_err(TransportError::from));
        }
        let Some(shutdown) = self.functions.shutdown() else {
            return Answer::Now(Ok(()));
        };
        let answer = shutdown.send(ShutdownWrite {
            handle: self.handle,
        });
        ctx.spawn(call(answer, |result, act: &mut Socket, ctx| {
            act.on_lower(Lower::Shutdown(flatten(result)), ctx)
        }));
        Answer::Later
    }
}

/// Reads the file chunks the next transmit needs in memory (no `sendfile`). `false` when
/// reading one failed the socket.
pub(crate) fn read_chunks(core: &mut Core, budget: usize) -> bool {
    while let Some(request) = core.poll_chunk_request(budget) {
        let read = request.range.read_chunk(request.at, request.len);
        core.handle_chunk(request, read);
        if core.is_closed() {
            return false;
        }
    }
    true
}

impl StreamIo for TableIo {
    fn peer(&self) -> Option<&Address> {
        self.peer.as_ref()
    }

    fn handle(&self) -> Handle {
        self.handle
    }

    fn sendfile(&self) -> bool {
        self.stream.is_some() && crate::actors::functions::SENDFILE
    }

    fn in_place(&self) -> bool {
        self.stream.is_some()
    }

    fn can_shutdown(&self) -> bool {
        self.stream.is_some() || self.functions.shutdown().is_some()
    }

    fn transmit(
        &mut self,
        core: &mut Core,
        budget: usize,
        ctx: &mut Context<Socket>,
    ) -> Answer<Result<Sent, TransportError>> {
        if !core.sendfile() && !read_chunks(core, budget) {
            return Answer::Nothing;
        }
        let Some(stream) = &self.stream else {
            // By message: owned slices of the writers' buffers.
            let Some(transmit) = core.poll_transmit(budget) else {
                return Answer::Nothing;
            };
            tracing::trace!(
                bytes = transmit.len,
                segments = transmit.segments.len(),
                writes = transmit.writes,
                "sendv"
            );
            let sendv = SendV {
                handle: self.handle,
                segments: transmit.segments,
                to: None,
            };
            let answer = call(
                self.functions.sendv().send(sendv),
                |result, act: &mut Socket, ctx| act.on_sent(flatten(result), ctx),
            );
            // The immediate flush policy: a socket that sends by message handles nothing
            // else until the transport has answered (c-ares without a pending-write
            // callback: one send per write).
            if core.is_immediate() {
                ctx.wait(answer);
            } else {
                ctx.spawn(answer);
            }
            return Answer::Later;
        };
        // In place: `writev` on slices borrowed from the queue, `sendfile` for ranges.
        let mut slices = Vec::new();
        let Some(transmit) = core.poll_transmit_in_place(budget, &mut slices) else {
            return Answer::Nothing;
        };
        let result = match transmit {
            InPlaceTransmit::Vectored { len, writes, more } => {
                let written = if more {
                    stream.try_write_vectored_more(&slices)
                } else {
                    stream.try_write_vectored(&slices)
                };
                tracing::trace!(bytes = len, writes, ?written, "writev");
                match written {
                    Ok(0) => Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                    Ok(n) => Ok(Sent::Accepted(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Sent::WouldBlock),
                    Err(e) => Err(e.into()),
                }
            }
            InPlaceTransmit::File {
                file, offset, len, ..
            } => match stream.try_sendfile(file, offset, len) {
                Err(e) if sendfile_unsupported(&e) => {
                    drop(slices);
                    // This file cannot be sent from (some file systems): read ranges
                    // instead, from now on.
                    tracing::debug!("sendfile unsupported for this file; reading it instead");
                    core.handle_sendfile_unsupported();
                    return Answer::Nothing;
                }
                // The file ended before the range did: it shrank.
                Ok(0) => Err(TransportError::File(Arc::new(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before the range did (it shrank after the range was made)",
                )))),
                Ok(n) => Ok(Sent::Accepted(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Sent::WouldBlock),
                // The file's side: it cannot be read (not open for reading, an I/O error,
                // a range past what its offset type holds). The socket's descriptor is
                // ours and open, so a bad descriptor is the file's.
                Err(e) if file_side(&e) => Err(TransportError::File(Arc::new(e))),
                Err(e) => Err(e.into()),
            },
        };
        Answer::Now(result)
    }

    fn read(
        &mut self,
        _core: &mut Core,
        inbound: &mut Inbound,
        max: usize,
        ctx: &mut Context<Socket>,
    ) -> Answer<Result<Got, TransportError>> {
        let Some(stream) = &self.stream else {
            let recv = RecvFrom {
                handle: self.handle,
                max_len: max,
            };
            let answer = self.functions.recvfrom().send(recv);
            ctx.spawn(call(answer, move |result, act: &mut Socket, ctx| {
                let got = flatten(result).and_then(|received| match received {
                    // A stream has no datagram boundaries to truncate at.
                    Received::Data { bytes, .. } | Received::Truncated { bytes, .. } => {
                        within(bytes, max).map(Got::Chunk)
                    }
                    Received::Eof => Ok(Got::Eof),
                    Received::WouldBlock => Ok(Got::WouldBlock),
                });
                act.on_read(got, ctx);
            }));
            return Answer::Later;
        };
        Answer::Now(
            inbound
                .read_in_place(|buf| stream.try_read_buf(buf))
                .map_err(TransportError::from),
        )
    }

    fn wait(&mut self, readiness: Readiness, ctx: &mut Context<Socket>) {
        if let Some(stream) = &self.stream {
            self.waits.arm(
                stream,
                readiness,
                ctx,
                |act, readiness, woke, ctx| match woke {
                    Woke::Ready => act.on_ready(readiness, true, ctx),
                    Woke::Orphaned => act.on_orphaned(readiness, ctx),
                },
            );
        }
    }

    fn waited(&mut self, readiness: Readiness) {
        self.waits.ended(readiness);
    }

    fn shutdown(
        &mut self,
        _core: &mut Core,
        ctx: &mut Context<Socket>,
    ) -> Answer<Result<(), TransportError>> {
        if let Some(stream) = &self.stream {
            return Answer::Now(stream.shutdown_write().map_err(TransportError::from));
        }
        let Some(shutdown) = self.functions.shutdown() else {
            return Answer::Now(Err(TransportError::Unsupported("shutdown")));
        };
        let answer = shutdown.send(ShutdownWrite {
            handle: self.handle,
        });
        ctx.spawn(call(answer, |result, act: &mut Socket, ctx| {
            act.on_shutdown(flatten(result), ctx)
        }));
        Answer::Later
    }

    fn close(&mut self, ctx: &mut Context<Socket>) {
        self.waits.cancel(ctx);
        self.close_handle();
    }

    fn abandon(&mut self) {
        self.close_handle();
    }
}

/// Bytes a stream's `recvfrom` asked for at most `asked` returned: more is a broken
/// transport (the read window bounds what one read may bring), and so is none (a read
/// brings bytes, or says EOF or would-block).
pub(super) fn within(bytes: bytes::Bytes, asked: usize) -> Result<bytes::Bytes, TransportError> {
    if bytes.is_empty() {
        return Err(TransportError::EmptyRead);
    }
    if bytes.len() > asked {
        return Err(TransportError::OverRead {
            read: bytes.len(),
            asked,
        });
    }
    Ok(bytes)
}

/// Whether a `sendfile` error is the file's, not the socket's.
fn file_side(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EBADF | libc::EIO | libc::EOVERFLOW | libc::ESPIPE | libc::EISDIR)
    )
}
