//! [`LayeredIo`]: a socket's transport with byte layers (TLS, compression, a user's) run
//! in place between the core's plaintext and the transport, over one bounded outbox (a
//! [`LayerStack`]). On the system transport the layers' bytes go out with `write` and
//! come in with `read` on the stream itself, as an unlayered socket's do; on any other
//! table they go by `SendV` and `RecvFrom`, at most the layers' per-call bound at a time.
//!
//! The core sees a transport that takes plaintext: a transmit is taken into the outbox
//! (answered at once with how much), or answered would-block while the outbox is full;
//! the socket's writability then comes when the transport has taken enough of the
//! outbox. A graceful close puts the layers' last bytes (TLS close_notify) in the outbox
//! and shuts the transport's sending half down once they are out.

use std::io;

use actix::{AsyncContext, Context};
use bytes::BytesMut;

use super::io::{read_chunks, Answer, Core, Lower, StreamIo, TableIo};
use super::Socket;
use crate::actors::functions::{LayerSpec, SystemStream};
use crate::actors::inbound::{Got, Inbound};
use crate::error::TransportError;
use crate::proto::{Decoded, InPlaceTransmit, LayerStack};
use crate::types::{Handle, Readiness, Sent};

/// Where a graceful close's shutdown stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutting {
    No,
    /// The layers' last bytes are in the outbox: shut down once it drains.
    Flushing,
    /// The transport's shutdown is out (by message).
    Out,
    Done,
}

/// A socket's transport under byte layers: see the [module docs](self).
#[derive(Debug)]
pub(crate) struct LayeredIo {
    base: TableIo,
    stack: LayerStack,
    /// Bytes per call to a transport reached by message (and per read).
    max_per_call: usize,
    /// The longest wait at a graceful close for the outbox to drain.
    close_timeout: std::time::Duration,
    /// A `SendV` of the outbox is out (message path).
    sending: bool,
    /// A `Ready(Writable)` came while it was out: it may have overtaken a would-block.
    woken: bool,
    /// The transport would block: its writability is awaited.
    blocked: bool,
    /// The core was answered would-block and waits for writability.
    owed: bool,
    /// Reading holds for the layers' own output (see `LayerStack::reading_held`): the
    /// core, answered would-block, waits for readability until the outbox drains.
    read_owed: bool,
    shutting: Shutting,
    /// Writing to the transport failed: every later transmit fails the same way.
    failed: Option<TransportError>,
    /// Plaintext decoded, not yet handed to the core.
    plain: BytesMut,
    /// The transport's stream ended.
    raw_eof: bool,
    /// The layers' stream ended cleanly: the core hears EOF once the plaintext is out.
    ended: bool,
    /// The most the core asked of its last read (a read by message answers that).
    read_max: usize,
    /// The socket closed (an abort, a drain timeout) with bytes still in the outbox:
    /// writes were answered `Ok` for them, so, as a kernel sends its buffer after a
    /// close, the handle closes once they are out, or at the close timeout (this
    /// timer).
    lingering: Option<actix::SpawnHandle>,
    /// The handle is closed.
    closed: bool,
    /// The graceful close's timeout, cancelled when the shutdown is done (a pending timer
    /// would keep the actor alive).
    shutdown_timer: Option<actix::SpawnHandle>,
    /// The close timeout passed: bytes still held are given up.
    gave_up: bool,
}

impl LayeredIo {
    /// Layers `specs` (plaintext side first) over `base`, for `handle`; `base` back if a
    /// layer could not be made.
    pub(crate) fn new(
        base: TableIo,
        specs: &[LayerSpec],
        handle: Handle,
    ) -> Result<Self, (TableIo, io::Error)> {
        let mut layers = Vec::with_capacity(specs.len());
        for spec in specs {
            match (spec.make)(handle) {
                Ok(layer) => layers.push(layer),
                Err(e) => return Err((base, e)),
            }
        }
        let min = |f: fn(&LayerSpec) -> usize| specs.iter().map(f).min().unwrap_or(1).max(1);
        let stack = LayerStack::new(
            layers,
            min(|s| s.bounds.max_buffered),
            min(|s| s.bounds.max_output),
        );
        tracing::debug!(%handle, layers = ?stack.names(), "byte layers in place");
        Ok(LayeredIo {
            base,
            stack,
            max_per_call: min(|s| s.bounds.max_per_call),
            close_timeout: specs
                .iter()
                .map(|s| s.bounds.close_timeout)
                .min()
                .unwrap_or_default(),
            sending: false,
            woken: false,
            blocked: false,
            owed: false,
            read_owed: false,
            shutting: Shutting::No,
            failed: None,
            plain: BytesMut::new(),
            raw_eof: false,
            ended: false,
            read_max: 1,
            lingering: None,
            closed: false,
            shutdown_timer: None,
            gave_up: false,
        })
    }

    /// Hands the outbox to the transport until it is empty, blocks, is out by message, or
    /// fails; then, if the core waits for room and there is some, or a shutdown waits for
    /// the outbox to drain, goes on with them.
    fn pump(&mut self, core: &mut Core, ctx: &mut Context<Socket>) {
        while self.failed.is_none() && !self.blocked && !self.sending && !self.stack.drained() {
            let Some(stream) = self.base.stream() else {
                let bytes = self.stack.take_outbox(self.max_per_call);
                self.sending = true;
                self.base.send_raw(bytes, ctx);
                break;
            };
            let outbox = self.stack.outbox();
            let n = outbox.len().min(self.max_per_call.max(64 * 1024));
            match stream.try_write_vectored(&[io::IoSlice::new(&outbox[..n])]) {
                Ok(0) => self.fail(io::Error::from(io::ErrorKind::WriteZero).into(), core),
                Ok(n) => self.stack.sent(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    self.base.wait(Readiness::Writable, ctx);
                }
                Err(e) => self.fail(e.into(), core),
            }
        }
        self.settle(core, ctx);
    }

    /// What an emptier outbox allows: the core's writes go on; a shutdown goes out.
    fn settle(&mut self, core: &mut Core, ctx: &mut Context<Socket>) {
        if self.owed && (self.failed.is_some() || self.stack.room(1) > 0) {
            self.owed = false;
            core.handle_ready(Readiness::Writable);
        }
        if self.read_owed && (self.failed.is_some() || !self.stack.reading_held()) {
            self.read_owed = false;
            core.handle_ready(Readiness::Readable);
        }
        let drained = self.stack.drained() && !self.sending;
        if self.lingering.is_some() && (drained || self.failed.is_some()) {
            self.close_now(ctx);
            return;
        }
        if self.shutting == Shutting::Flushing && drained && self.failed.is_none() {
            match self.base.shutdown_raw(ctx) {
                Answer::Now(result) => {
                    self.shutting = Shutting::Done;
                    core.handle_shutdown(result, super::now());
                }
                Answer::Later => self.shutting = Shutting::Out,
                Answer::Nothing => {}
            }
        }
    }

    /// Closes the handle now (once).
    fn close_now(&mut self, ctx: &mut Context<Socket>) {
        for timer in [self.lingering.take(), self.shutdown_timer.take()]
            .into_iter()
            .flatten()
        {
            ctx.cancel_future(timer);
        }
        if !std::mem::replace(&mut self.closed, true) {
            self.base.close(ctx);
        }
    }

    /// Writing failed for good: the core fails every write with it and closes.
    fn fail(&mut self, error: TransportError, core: &mut Core) {
        tracing::debug!(%error, "layered socket: the transport failed");
        self.failed = Some(error.clone());
        core.handle_failure(error);
    }

    /// What the layers make of what was read: plaintext for the core, its end, or
    /// `None` when they need more input.
    fn decoded(
        &mut self,
        max: usize,
        ctx: &mut Context<Socket>,
        core: &mut Core,
    ) -> Option<Result<Got, TransportError>> {
        loop {
            if !self.plain.is_empty() {
                let n = self.plain.len().min(max.max(1));
                return Some(Ok(Got::Chunk(self.plain.split_to(n).freeze())));
            }
            if self.ended {
                return Some(Ok(Got::Eof));
            }
            if self.stack.reading_held() && self.failed.is_none() {
                // The layers' own answers wait for the transport: decode (and read)
                // nothing more until they are out, or they would grow without bound.
                return Some(Ok(Got::WouldBlock));
            }
            let decoded = self.stack.decode(&mut self.plain, max);
            // Bytes of the layers' own (key updates, alerts) go out.
            self.pump(core, ctx);
            match decoded {
                Ok(Decoded::More) => continue,
                Ok(Decoded::End) => self.ended = true,
                Ok(Decoded::NeedInput) if self.plain.is_empty() && self.raw_eof => {
                    // The layers hear the end, wire side first: the next decode says
                    // `End` or fails (a layer says the stream was cut). Heard already,
                    // and still wanting input: nothing more comes.
                    if !self.stack.end_input() {
                        self.ended = true;
                    }
                }
                Ok(Decoded::NeedInput) if self.plain.is_empty() => return None,
                Ok(Decoded::NeedInput) => {}
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}

/// The stream, written in place by the layer nearest the wire during an encode (see
/// [`Layer::encode_direct`](crate::proto::Layer::encode_direct)): it answers would-block
/// once the stream would block or failed, and keeps what happened for the socket.
struct Direct<'a> {
    stream: &'a SystemStream,
    /// The stream would block: the socket waits for it to be writable.
    blocked: bool,
    /// Writing failed: the socket fails with it.
    failed: Option<io::Error>,
}

impl<'a> Direct<'a> {
    fn new(stream: &'a std::sync::Arc<SystemStream>) -> Self {
        Direct {
            stream,
            blocked: false,
            failed: None,
        }
    }
}

impl io::Write for Direct<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if self.blocked || self.failed.is_some() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.stream.try_write_vectored(bufs) {
            Ok(0) if bufs.iter().any(|b| !b.is_empty()) => {
                self.failed = Some(io::ErrorKind::WriteZero.into());
                Err(io::ErrorKind::WouldBlock.into())
            }
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.blocked = true;
                Err(e)
            }
            Err(e) => {
                self.failed = Some(e);
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl StreamIo for LayeredIo {
    fn sendfile(&self) -> bool {
        // The layers must see every byte.
        false
    }

    fn in_place(&self) -> bool {
        self.base.in_place()
    }

    fn peer(&self) -> Option<&crate::types::Address> {
        self.base.peer()
    }

    fn handle(&self) -> crate::types::Handle {
        self.base.handle()
    }

    fn layers(&self) -> Vec<&'static str> {
        self.stack.names()
    }

    fn can_shutdown(&self) -> bool {
        // The layers' close is the shutdown, whether or not the transport has one.
        true
    }

    fn transmit(
        &mut self,
        core: &mut Core,
        budget: usize,
        ctx: &mut Context<Socket>,
    ) -> Answer<Result<Sent, TransportError>> {
        self.pump(core, ctx);
        if let Some(e) = &self.failed {
            return Answer::Now(Err(e.clone()));
        }
        let room = self.stack.room(budget);
        if room == 0 {
            // The layers' outbox is full: to the core, a transport that would block (on
            // the transmit it made).
            self.owed = true;
            if !read_chunks(core, budget) {
                return Answer::Nothing;
            }
            let mut slices = Vec::new();
            return match core.poll_transmit_in_place(budget, &mut slices) {
                Some(_) => Answer::Now(Ok(Sent::WouldBlock)),
                None => Answer::Nothing,
            };
        }
        if !read_chunks(core, room) {
            return Answer::Nothing;
        }
        let mut slices = Vec::new();
        let mut direct = self
            .base
            .stream()
            .filter(|_| !self.blocked)
            .map(Direct::new);
        let encoded = match core.poll_transmit_in_place(room, &mut slices) {
            None => return Answer::Nothing,
            Some(InPlaceTransmit::Vectored { len, .. }) => match direct.as_mut() {
                // In place: the layer nearest the wire may write to the stream itself.
                Some(direct) => self.stack.encode_direct(&slices, direct),
                None => self.stack.encode(&slices),
            }
            .map(|()| len),
            Some(InPlaceTransmit::File { .. }) => {
                drop(slices);
                core.handle_sendfile_unsupported();
                return Answer::Nothing;
            }
        };
        drop(slices);
        if let Some(Direct {
            blocked, failed, ..
        }) = direct
        {
            if let Some(e) = failed {
                self.fail(e.into(), core);
            } else if blocked {
                self.blocked = true;
                self.base.wait(Readiness::Writable, ctx);
            }
        }
        match encoded {
            Ok(len) => {
                tracing::trace!(bytes = len, outbox = self.stack.outbox().len(), "encoded");
                self.pump(core, ctx);
                Answer::Now(Ok(Sent::Accepted(len)))
            }
            Err(e) => Answer::Now(Err(e.into())),
        }
    }

    fn read(
        &mut self,
        core: &mut Core,
        _inbound: &mut Inbound,
        max: usize,
        ctx: &mut Context<Socket>,
    ) -> Answer<Result<Got, TransportError>> {
        self.read_max = max.max(1);
        loop {
            if let Some(got) = self.decoded(max, ctx, core) {
                return Answer::Now(got);
            }
            let Some(stream) = self.base.stream() else {
                self.base.recv_raw(self.max_per_call, ctx);
                return Answer::Later;
            };
            let inbox = self.stack.inbox(self.max_per_call.min(64 * 1024));
            match stream.try_read_buf(inbox) {
                Ok(0) => self.raw_eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Idle sockets keep no read buffers.
                    self.stack.release_inbox();
                    self.plain = BytesMut::new();
                    return Answer::Now(Ok(Got::WouldBlock));
                }
                Err(e) => return Answer::Now(Err(e.into())),
            }
        }
    }

    fn wait(&mut self, readiness: Readiness, ctx: &mut Context<Socket>) {
        match readiness {
            // The outbox is full: the core's writability comes when it has room.
            Readiness::Writable => self.owed = true,
            // Reading holds for the layers' own output: readability comes when it is out.
            Readiness::Readable if self.stack.reading_held() && self.failed.is_none() => {
                self.read_owed = true
            }
            Readiness::Readable => self.base.wait(readiness, ctx),
        }
    }

    fn waited(&mut self, readiness: Readiness) {
        self.base.waited(readiness);
    }

    fn ready(&mut self, readiness: Readiness, core: &mut Core, ctx: &mut Context<Socket>) -> bool {
        match readiness {
            Readiness::Writable => {
                self.blocked = false;
                self.woken |= self.sending;
                self.pump(core, ctx);
                false
            }
            Readiness::Readable => true,
        }
    }

    fn lower(
        &mut self,
        lower: Lower,
        core: &mut Core,
        ctx: &mut Context<Socket>,
    ) -> Option<Result<Got, TransportError>> {
        match lower {
            Lower::Sent { offered, result } => {
                self.sending = false;
                let woken = std::mem::take(&mut self.woken);
                match result {
                    Ok(Sent::Accepted(n)) if n > offered.len() => {
                        self.stack.returned(&offered, offered.len());
                        self.fail(
                            TransportError::OverAccepted {
                                accepted: n,
                                offered: offered.len(),
                            },
                            core,
                        )
                    }
                    Ok(Sent::Accepted(n)) => self.stack.returned(&offered, n),
                    Ok(Sent::WouldBlock) => {
                        // The transport owes a `Ready(Writable)`, unless it came already.
                        self.stack.returned(&offered, 0);
                        self.blocked = !woken;
                    }
                    Err(e) => {
                        self.stack.returned(&offered, offered.len());
                        self.fail(e, core)
                    }
                }
                self.pump(core, ctx);
                None
            }
            Lower::Read(result) => {
                let max = self.read_max;
                match result {
                    Ok(crate::messages::functions::Received::Data { bytes, .. })
                    | Ok(crate::messages::functions::Received::Truncated { bytes, .. }) => {
                        match super::io::within(bytes, self.max_per_call) {
                            Ok(bytes) => self.stack.inbox(bytes.len()).extend_from_slice(&bytes),
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    Ok(crate::messages::functions::Received::Eof) => self.raw_eof = true,
                    Ok(crate::messages::functions::Received::WouldBlock) => {
                        return Some(Ok(Got::WouldBlock))
                    }
                    Err(e) => return Some(Err(e)),
                }
                match self.decoded(max, ctx, core) {
                    Some(got) => Some(got),
                    None => {
                        // Part of a record: read on, the transport may hold the rest.
                        self.base.recv_raw(self.max_per_call, ctx);
                        None
                    }
                }
            }
            Lower::Shutdown(result) => {
                self.shutting = Shutting::Done;
                core.handle_shutdown(result, super::now());
                None
            }
            Lower::CloseTimedOut if self.lingering.is_some() => {
                tracing::debug!(
                    left = self.stack.outbox().len(),
                    "layered socket: the close gave up on the bytes left"
                );
                self.lingering = None;
                self.close_now(ctx);
                None
            }
            Lower::CloseTimedOut => {
                if matches!(self.shutting, Shutting::Flushing | Shutting::Out) {
                    tracing::debug!(
                        left = self.stack.outbox().len(),
                        "layered socket: the close gave up on the bytes left"
                    );
                    self.shutting = Shutting::Done;
                    self.gave_up = true;
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the layers' last bytes did not go out in time",
                    );
                    core.handle_shutdown(Err(e.into()), super::now());
                }
                None
            }
        }
    }

    fn shutdown(
        &mut self,
        core: &mut Core,
        ctx: &mut Context<Socket>,
    ) -> Answer<Result<(), TransportError>> {
        if self.shutting != Shutting::No {
            return Answer::Nothing;
        }
        if let Err(e) = self.stack.close() {
            return Answer::Now(Err(e.into()));
        }
        self.shutting = Shutting::Flushing;
        self.shutdown_timer = Some(ctx.run_later(self.close_timeout, |act, ctx| {
            act.on_lower(Lower::CloseTimedOut, ctx)
        }));
        self.pump(core, ctx);
        if let Some(e) = &self.failed {
            return Answer::Now(Err(e.clone()));
        }
        Answer::Later
    }

    fn abandon(&mut self) {
        // The outbox cannot go out without the actor: the handle closes now.
        self.closed = true;
        self.base.abandon();
    }

    fn close(&mut self, ctx: &mut Context<Socket>) {
        self.plain = BytesMut::new();
        let unsent = !self.stack.drained() || self.sending;
        if unsent
            && self.failed.is_none()
            && !self.gave_up
            && !self.closed
            && self.lingering.is_none()
        {
            // Bytes answered `Ok` are still in the outbox (blocked, or out by message):
            // they go out first; the readiness wait or the `SendV` answer under way
            // drives them (`settle` closes).
            tracing::debug!(
                left = self.stack.outbox().len(),
                "layered socket: closing after the outbox drains"
            );
            // A graceful close's timeout already running bounds this wait too.
            let timer = self.shutdown_timer.take().unwrap_or_else(|| {
                ctx.run_later(self.close_timeout, |act, ctx| {
                    act.on_lower(Lower::CloseTimedOut, ctx)
                })
            });
            self.lingering = Some(timer);
            return;
        }
        self.close_now(ctx);
    }

    fn unsent(&self) -> bool {
        !self.closed && self.failed.is_none() && (!self.stack.drained() || self.sending)
    }

    fn stopped(&mut self, ctx: &mut Context<Socket>) {
        if self.lingering.is_some() {
            self.close_now(ctx);
        }
    }
}
