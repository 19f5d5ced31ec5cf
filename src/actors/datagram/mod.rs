//! The [`DatagramSocket`] actor: one per datagram (UDP or Unix datagram) socket, a thin
//! driver of its sans-IO [`DatagramCore`](crate::proto::DatagramCore). Datagrams are sent
//! whole and in order, never merged or split, each answered exactly once; bursts are
//! flushed through the same [`Flusher`] protocol as stream sockets.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, MessageResult, Recipient, Running,
    WrapFuture,
};
use tokio::time::Instant;

mod io;
mod writer;

use super::flusher::{request_flush, FlushWaiter, FlusherLink};
use super::functions::{call, ShareDatagram, SocketFunctions, SystemDatagram};
use super::reply::{Rendezvous, Reply, ReportFailures, WriteResponse};
use super::socket::{flush_policy_setters, now, FlushPolicy, NEXT_ID};
use crate::batch::IoBatch;
use crate::error::{DatagramError, SocketError, TransportError};
use crate::messages::datagram::{
    DatagramEvent, DatagramEventKind, DatagramInfo, DatagramSent, GetDatagramInfo,
    GetDatagramStats, SendDatagram,
};
use crate::messages::flush::Flush;
use crate::messages::functions::{Bind, CloseSocket, Connect, OpenSocket, Ready, Received};
use crate::messages::socket::{Close, SubscribeWritability};
use crate::proto::{DatagramCore, DatagramEvent as CoreEvent, DatagramSettings, IoAction};
use crate::types::{Address, Family, Handle, SocketId, SocketKind};
use io::DatagramIo;
use writer::{DatagramGate, SendAdmitted};
pub use writer::{DatagramWriter, GetDatagramWriter};

/// A datagram's answer.
type Answer = Result<DatagramSent, DatagramError>;

/// Limits and sizes of a datagram socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatagramConfig {
    /// Most datagrams queued at once, not yet offered to the transport; past it,
    /// datagrams are refused with [`DatagramError::QueueFull`]. The datagrams of a
    /// batch offered to a transport that would block (one by message, up to a
    /// `sendmmsg` batch in place) wait apart from the queue. A [`DatagramWriter`]'s
    /// admission counts every datagram it admitted until it is answered, offered or not.
    pub max_queued: usize,
    /// Most bytes queued at once, counted as `max_queued` counts datagrams (a single
    /// datagram larger than this is still taken when the queue is empty).
    pub max_queued_bytes: usize,
    /// The longest datagram received whole; a longer one is reported truncated. Any size
    /// may be given: the system transport receives at most 16 MiB of a datagram (no
    /// kernel delivers a longer one: a UDP datagram is at most 64 KiB), so a huge value
    /// allocates no more than that.
    pub max_datagram_size: usize,
    /// Most datagrams sent, and most received, before the socket yields to the other
    /// actors of its thread.
    pub max_per_turn: usize,
    /// Kernel buffer sizes (`SO_SNDBUF`, `SO_RCVBUF`), set when the socket is opened
    /// (default: the system's). A larger receive buffer holds a burst the socket has not
    /// read yet instead of dropping it.
    pub buffers: crate::types::SocketBuffers,
    /// On the system transport where the OS has UDP segmentation offload (Linux), send
    /// a run of queued datagrams of one length (up to 1,452 bytes) to one destination as
    /// one message that the kernel cuts into those datagrams (default `true`). The peer
    /// receives the same datagrams either way; the sender saves most of the kernel's
    /// work per datagram. A kernel that refuses it once turns it off for the process.
    pub offload: bool,
}

impl Default for DatagramConfig {
    fn default() -> Self {
        DatagramConfig {
            max_queued: 1024,
            max_queued_bytes: 4 * 1024 * 1024,
            max_datagram_size: 65_535,
            max_per_turn: 64,
            buffers: crate::types::SocketBuffers::default(),
            offload: true,
        }
    }
}

/// A datagram (UDP or Unix datagram) socket as an actor.
///
/// Producers send it [`SendDatagram`]s; each leaves whole, in arrival order, and gets
/// exactly one answer. On the system transport a burst leaves in batches (`sendmmsg`
/// where the OS has it) and arrivals are received in batches (`recvmmsg`), called in
/// place; on any other transport each datagram is one `sendv` with its destination. The queue is bounded ([`DatagramConfig`]); a full queue refuses with
/// [`DatagramError::QueueFull`], handing the payload back. With a Flusher (the default) a
/// burst asks it once ([`PendingWrite`](crate::messages::PendingWrite)) and the `Flush` sends everything queued until
/// the transport would block; with [`FlushPolicy::Immediate`] datagrams go out as soon as
/// they are queued. A transport that takes only part of a datagram is
/// [`DatagramError::Partial`] for that datagram: the rest is never sent.
///
/// With a subscriber it reads: each datagram whole, with its sender, as
/// [`DatagramEventKind::Received`]; one longer than
/// [`max_datagram_size`](DatagramConfig::max_datagram_size) is flagged `truncated`.
///
/// [`Close`] closes it (gracefully: queued datagrams leave first; or abort: they are
/// answered with [`DatagramError::Aborted`]); so does dropping every address of it (after
/// queued datagrams leave), since the transport's readiness recipient is weak. Start one
/// with [`DatagramSocket::builder`].
#[derive(Debug)]
pub struct DatagramSocket {
    id: SocketId,
    handle: Handle,
    io: DatagramIo,
    local: Option<Address>,
    peer: Option<Address>,
    core: DatagramCore<Token>,
    /// The admission gate of its `DatagramWriter`s.
    gate: Arc<DatagramGate>,
    flusher: Option<Arc<FlusherLink>>,
    /// The wait for the answer to a datagram out at the close (`FLIGHT_GRACE`).
    flight_timer: Option<actix::SpawnHandle>,
    subscriber: Option<Recipient<DatagramEvent>>,
    replies: Rendezvous<Answer>,
    span: tracing::Span,
}

/// A datagram's token in the core: where its answer goes, and the bytes a writer
/// admitted for it (given back to the gate with its answer).
#[derive(Debug)]
struct Token {
    reply: Reply<Answer>,
    admitted: Option<usize>,
}

impl Token {
    fn pending(tag: Option<u64>) -> Self {
        Token {
            reply: Reply::pending(tag),
            admitted: None,
        }
    }
}

/// Configures and starts a [`DatagramSocket`].
#[derive(Debug, Default)]
pub struct DatagramBuilder {
    functions: Option<SocketFunctions>,
    config: DatagramConfig,
    policy: Option<FlushPolicy>,
    subscriber: Option<Recipient<DatagramEvent>>,
    reuse_port: bool,
    local: Option<Address>,
}

impl DatagramBuilder {
    /// The transport (default: [`SocketFunctions::system`]); [`bind`](Self::bind) needs
    /// one with `bind`.
    pub fn functions(mut self, functions: SocketFunctions) -> Self {
        self.functions = Some(functions);
        self
    }

    /// Limits and sizes (default: [`DatagramConfig::default`]).
    pub fn config(mut self, config: DatagramConfig) -> Self {
        self.config = config;
        self
    }

    flush_policy_setters!();

    /// Who receives datagrams, failures of fire-and-forget sends, and the close. Without
    /// a subscriber the socket does not read.
    pub fn subscriber(mut self, subscriber: Recipient<DatagramEvent>) -> Self {
        self.subscriber = Some(subscriber);
        self
    }

    /// Share the local port with other sockets that ask for it too (`SO_REUSEPORT`).
    pub fn reuse_port(mut self, reuse_port: bool) -> Self {
        self.reuse_port = reuse_port;
        self
    }

    /// For [`connect`](Self::connect): bind to this local address first (by default the
    /// system picks one when it connects).
    pub fn local(mut self, addr: impl Into<Address>) -> Self {
        self.local = Some(addr.into());
        self
    }

    /// Opens a datagram socket bound to `addr`, not connected: every datagram names its
    /// destination. Starts it on the current arbiter and answers its address and the
    /// local address it got (the port the system chose, for port 0).
    pub async fn bind(
        mut self,
        addr: impl Into<Address>,
    ) -> Result<(Addr<DatagramSocket>, Address), SocketError> {
        let addr = addr.into();
        let family = addr.family();
        self.local = Some(addr);
        let (socket, local) = self.start(family, None).await?;
        let local = local.ok_or(SocketError::Bind(TransportError::Unsupported("bind")))?;
        Ok((socket, local))
    }

    /// Opens a datagram socket connected to `addr` (bound first to
    /// [`local`](Self::local), if set): datagrams without a destination go to `addr`, and
    /// only datagrams from it are received (the transport filters them, as the kernel
    /// does for the system transport and the [`SimNetwork`](crate::SimNetwork) does; a
    /// [`MockTransport`](crate::MockTransport) hands up whatever the test pushes). Starts
    /// it on the current arbiter.
    pub async fn connect(
        self,
        addr: impl Into<Address>,
    ) -> Result<Addr<DatagramSocket>, SocketError> {
        let addr = addr.into();
        let family = addr.family();
        Ok(self.start(family, Some(addr)).await?.0)
    }

    async fn start(
        self,
        family: Family,
        peer: Option<Address>,
    ) -> Result<(Addr<DatagramSocket>, Option<Address>), SocketError> {
        let functions = self
            .functions
            .clone()
            .unwrap_or_else(SocketFunctions::system);
        if !functions.layers().is_empty() {
            // A byte layer cannot cut a datagram, nor its reader tell where one ends.
            return Err(SocketError::Open(TransportError::Unsupported(
                "byte layers (TLS, compression) on a datagram socket",
            )));
        }
        let mut ctx = Context::<DatagramSocket>::new();
        // Unbounded, as a socket's: `send` then never parks a datagram in its future,
        // so datagrams from one sender keep their order however they are sent.
        ctx.set_mailbox_capacity(0);
        let open = OpenSocket {
            family,
            kind: SocketKind::Datagram,
            events: ctx.address().downgrade().recipient(),
            buffers: self.config.buffers,
        };
        let handle = call(Some(functions.open()), "open", open)
            .await
            .map_err(SocketError::Open)?;
        let local = match self.prepare(&functions, handle, peer.clone()).await {
            Ok(local) => local,
            Err(e) => {
                functions.close().do_send(CloseSocket { handle });
                return Err(e);
            }
        };
        let system = share_datagram(&functions, handle).await;
        let io = DatagramIo::new(functions, handle, system, self.config.offload);
        let socket = self.build(io, handle, local.clone(), peer);
        Ok((ctx.run(socket), local))
    }

    /// Binds (if a local address is set) and connects (if a peer is given).
    async fn prepare(
        &self,
        functions: &SocketFunctions,
        handle: Handle,
        peer: Option<Address>,
    ) -> Result<Option<Address>, SocketError> {
        let local = match &self.local {
            Some(addr) => {
                let bind = Bind {
                    handle,
                    addr: addr.clone(),
                    reuse_port: self.reuse_port,
                };
                let local = call(functions.bind(), "bind", bind)
                    .await
                    .map_err(SocketError::Bind)?;
                Some(local)
            }
            None => None,
        };
        if let Some(addr) = peer {
            let started = Instant::now();
            call(
                Some(functions.connect()),
                "connect",
                Connect { handle, addr },
            )
            .await
            .map_err(|e| SocketError::from_connect(e, started.elapsed()))?;
        }
        Ok(local)
    }

    fn build(
        self,
        io: DatagramIo,
        handle: Handle,
        local: Option<Address>,
        peer: Option<Address>,
    ) -> DatagramSocket {
        let id = SocketId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let flusher = match self.policy {
            None => Some(FlusherLink::current()),
            Some(FlushPolicy::Deferred(recipient)) => Some(FlusherLink::given(recipient)),
            Some(FlushPolicy::Immediate) => None,
        };
        let local_text = local.as_ref().map(|a| a.to_string()).unwrap_or_default();
        let peer_text = peer.as_ref().map(|a| a.to_string()).unwrap_or_default();
        let config = self.config;
        let core = DatagramCore::new(DatagramSettings {
            max_queued: config.max_queued,
            max_queued_bytes: config.max_queued_bytes,
            max_datagram_size: config.max_datagram_size,
            max_per_turn: config.max_per_turn,
            deferred: flusher.is_some(),
            reading: self.subscriber.is_some(),
            connected: peer.is_some(),
        });
        DatagramSocket {
            id,
            handle,
            io,
            local,
            peer,
            core,
            gate: Arc::new(DatagramGate::new(
                id,
                config.max_queued,
                config.max_queued_bytes,
            )),
            flusher,
            flight_timer: None,
            subscriber: self.subscriber,
            replies: Rendezvous::default(),
            span: tracing::debug_span!("datagram", id = id.0, local = %local_text, peer = %peer_text),
        }
    }
}

impl DatagramSocket {
    /// A builder for a datagram socket.
    pub fn builder() -> DatagramBuilder {
        DatagramBuilder::default()
    }

    /// Moves the reply channel the last datagram's response parked onto that datagram.
    /// Call first in every handler.
    fn attach_reply(&mut self) {
        self.replies
            .attach(self.core.last_token_mut().map(|t| &mut t.reply));
    }

    fn event(&self, kind: DatagramEventKind) {
        if let Some(s) = &self.subscriber {
            s.do_send(DatagramEvent {
                socket: self.id,
                kind,
            });
        }
    }

    /// Does what the core asks and tells others what it says, until it has nothing more
    /// to say.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _entered = span.enter();
        loop {
            let mut busy = false;
            while let Some(action) = self.core.poll_io() {
                busy = true;
                self.perform(action, ctx);
            }
            let mut freed = (0, 0);
            while let Some(event) = self.core.poll_event() {
                busy = true;
                self.dispatch(event, &mut freed);
            }
            if !self.core.is_open() {
                // Writers are refused from now on, and those waiting for room wake to
                // hear it (first: the room the close frees is no news).
                self.gate.close(self.core.refusal());
            }
            // Room goes back once a burst of answers, not once a datagram.
            self.gate.release_many(freed.0, freed.1);
            if !busy {
                break;
            }
        }
        self.bound_flight(ctx);
    }

    /// Closed with a datagram out: its answer is waited for `FLIGHT_GRACE` at most.
    fn bound_flight(&mut self, ctx: &mut Context<Self>) {
        if !self.core.flight_unanswered() {
            if let Some(timer) = self.flight_timer.take() {
                ctx.cancel_future(timer);
            }
            return;
        }
        if self.flight_timer.is_none() {
            let timer = ctx.run_later(crate::proto::FLIGHT_GRACE, |act, ctx| {
                act.flight_timer = None;
                tracing::warn!(parent: &act.span, "the transport never answered the datagram out at the close");
                act.core.handle_flight_lost();
                act.drive(ctx);
            });
            self.flight_timer = Some(timer);
        }
    }

    fn perform(&mut self, action: IoAction, ctx: &mut Context<Self>) {
        match action {
            IoAction::RequestFlush => {
                request_flush(
                    &mut self.flusher,
                    self.id,
                    || ctx.address().recipient(),
                    &self.span,
                )
                .follow(self, ctx, |act| act.core.handle_flusher_gone());
            }
            IoAction::Transmit { budget } => self.io.transmit(&mut self.core, budget, ctx),
            IoAction::Yield(direction) => {
                ctx.spawn(
                    tokio::task::yield_now()
                        .into_actor(self)
                        .map(move |_, act, ctx| {
                            act.core.handle_yielded(direction);
                            act.drive(ctx);
                        }),
                );
            }
            IoAction::Wait(readiness) => self.io.wait(readiness, ctx),
            IoAction::Read { max } => {
                let (subscriber, id, span) = (&self.subscriber, self.id, &self.span);
                self.io
                    .read(&mut self.core, max, ctx, |core, bytes, from, truncated| {
                        deliver(core, subscriber, id, span, bytes, from, truncated)
                    });
            }
            IoAction::ShutdownWrite => {}
            IoAction::CloseHandle => self.io.close(ctx),
        }
    }

    /// Takes in what a receive by message found: a datagram goes to the subscriber.
    /// (`max`: the most the transport was asked for; past it, a datagram is cut here.)
    fn received(&mut self, result: Result<Received, TransportError>, max: usize) {
        use crate::proto::Received as Got;
        if !self.core.read_wanted() {
            // Answered after the socket closed (or stopped receiving): nobody may hear it.
            return;
        }
        let (subscriber, id, span) = (&self.subscriber, self.id, &self.span);
        let got = match result {
            Ok(Received::Data { bytes, from } | Received::Truncated { bytes, from })
                if bytes.len() > max =>
            {
                deliver(
                    &mut self.core,
                    subscriber,
                    id,
                    span,
                    bytes.slice(..max),
                    from,
                    true,
                )
            }
            Ok(Received::Data { bytes, from }) => {
                deliver(&mut self.core, subscriber, id, span, bytes, from, false)
            }
            Ok(Received::Truncated { bytes, from }) => {
                deliver(&mut self.core, subscriber, id, span, bytes, from, true)
            }
            Ok(Received::WouldBlock) => Got::WouldBlock,
            Ok(Received::Eof) => {
                tracing::debug!(parent: span, "transport ended reading");
                Got::Eof
            }
            Err(e) => {
                tracing::debug!(parent: span, error = %e, "receive failed");
                Got::Failed(e)
            }
        };
        self.core.handle_received(got);
    }

    /// The socket's own wait for readiness ended.
    fn on_ready(&mut self, readiness: crate::types::Readiness, ctx: &mut Context<Self>) {
        self.attach_reply();
        self.io.waited(readiness);
        self.core.handle_ready(readiness);
        self.drive(ctx);
    }

    /// Every address of the socket was dropped while it waited on the reactor (actix
    /// keeps an actor with spawned futures alive, so the wait itself notices): it closes
    /// gracefully, queued datagrams first.
    fn on_orphaned(&mut self, readiness: crate::types::Readiness, ctx: &mut Context<Self>) {
        self.io.waited(readiness);
        self.close_orphaned(readiness, ctx);
    }

    /// No address is left (noticed by a wait for `readiness`, or by a transport call:
    /// then `Readable`, no wait of its own to arm again): it closes gracefully.
    fn close_orphaned(&mut self, readiness: crate::types::Readiness, ctx: &mut Context<Self>) {
        self.attach_reply();
        tracing::debug!(parent: &self.span, "every address dropped; closing gracefully");
        self.core.handle_orphaned(readiness);
        self.drive(ctx);
    }

    /// Hands an event on; `freed` counts the datagrams and bytes whose admitted room the
    /// gate is to get back.
    fn dispatch(&mut self, event: CoreEvent<Token>, freed: &mut (usize, usize)) {
        match event {
            CoreEvent::Answer(token, answer) => {
                if let Some(len) = token.admitted {
                    freed.0 += 1;
                    freed.1 += len;
                }
                let (subscriber, id, span) = (&self.subscriber, self.id, &self.span);
                self.replies.answer(token.reply, answer, |tag, error| {
                    report_failure(subscriber, id, span, tag, error);
                });
            }
            CoreEvent::ReadFailed(e) => self.event(DatagramEventKind::ReadFailed(e)),
            CoreEvent::Closed(cause) => {
                tracing::debug!(parent: &self.span, cause = ?cause, "closed");
                self.event(DatagramEventKind::Closed { cause });
            }
        }
    }
}

/// Hands a received datagram to the subscriber; what the core is to hear of it.
fn deliver(
    core: &mut io::Core,
    subscriber: &Option<Recipient<DatagramEvent>>,
    socket: SocketId,
    span: &tracing::Span,
    bytes: bytes::Bytes,
    from: Option<Address>,
    truncated: bool,
) -> crate::proto::Received {
    if subscriber.as_ref().is_some_and(|s| !s.connected()) {
        // Nobody would get what is received: stop receiving.
        tracing::warn!(parent: span, "subscriber gone; receiving stops");
        core.handle_subscriber_gone();
        return crate::proto::Received::Eof;
    }
    let len = bytes.len();
    if truncated {
        tracing::debug!(parent: span, kept = len, "datagram truncated");
    }
    if let Some(s) = subscriber {
        s.do_send(DatagramEvent {
            socket,
            kind: DatagramEventKind::Received {
                bytes,
                from,
                truncated,
            },
        });
    }
    crate::proto::Received::Datagram { len, truncated }
}

/// The socket behind a system handle, when the table's data path is the system's and
/// the datagram socket may call it in place.
async fn share_datagram(
    functions: &SocketFunctions,
    handle: Handle,
) -> Option<Arc<SystemDatagram>> {
    if !functions.in_place() {
        return None;
    }
    let system = functions.system_actor()?;
    system.send(ShareDatagram { handle }).await.ok().flatten()
}

/// A datagram nobody waits for failed: the subscriber hears of it.
fn report_failure(
    subscriber: &Option<Recipient<DatagramEvent>>,
    socket: SocketId,
    span: &tracing::Span,
    tag: Option<u64>,
    error: DatagramError,
) {
    match subscriber {
        Some(s) if s.connected() => {
            tracing::debug!(parent: span, ?tag, %error, "datagram failed");
            s.do_send(DatagramEvent {
                socket,
                kind: DatagramEventKind::SendFailed { tag, error },
            });
        }
        // No refusal is silent: with nobody to tell, it is a warning.
        _ => {
            tracing::warn!(parent: span, ?tag, %error, "datagram failed with nobody subscribed to hear it")
        }
    }
}

impl Actor for DatagramSocket {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::debug!(parent: &self.span, handle = %self.handle, "datagram socket started");
        self.drive(ctx);
    }

    /// Nobody holds the socket's address any more: queued datagrams leave first, then
    /// the handle closes.
    fn stopping(&mut self, ctx: &mut Context<Self>) -> Running {
        self.attach_reply();
        if crate::actors::runtime_gone() {
            return Running::Stop;
        }
        if self.core.handle_stopping() {
            self.drive(ctx);
            if !self.core.is_closed() {
                return Running::Continue;
            }
        }
        Running::Stop
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.gate.close(DatagramError::Closed);
        self.attach_reply();
        self.core.handle_stopped();
        while let Some(action) = self.core.poll_io() {
            if action == IoAction::CloseHandle {
                self.io.close(ctx);
            }
        }
        let mut freed = (0, 0);
        while let Some(event) = self.core.poll_event() {
            self.dispatch(event, &mut freed);
        }
        self.gate.release_many(freed.0, freed.1);
    }
}

impl Drop for DatagramSocket {
    /// actix drops an actor without `stopped` when its arbiter stops while it drains:
    /// its writers must still hear that it is gone, and hold nothing as queued.
    fn drop(&mut self) {
        self.gate.close(DatagramError::Closed);
        self.gate.release_all();
        // Dropped with its arbiter, not stopped: the handle closes here (a transport of
        // another thread, still running, would otherwise keep the socket open).
        self.io.abandon();
    }
}

/// The largest datagram any socket can send (IPv4's and IPv6's 16-bit length field).
const MAX_DATAGRAM: usize = 65_535;

/// A datagram leaves in one call, so file ranges in it are read into memory when it is
/// queued (up to the largest possible datagram).
fn in_memory(payload: IoBatch) -> Result<IoBatch, TransportError> {
    if !payload.has_files() {
        return Ok(payload);
    }
    if payload.len() > MAX_DATAGRAM {
        return Err(TransportError::Io(Arc::new(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a {}-byte datagram is longer than any datagram can be ({MAX_DATAGRAM})",
                payload.len()
            ),
        ))));
    }
    payload
        .into_memory()
        .map_err(|e| TransportError::File(Arc::new(e)))
}

impl Handler<SendDatagram> for DatagramSocket {
    type Result = WriteResponse<Answer>;

    fn handle(&mut self, msg: SendDatagram, ctx: &mut Context<Self>) -> Self::Result {
        self.attach_reply();
        let tag = msg.tag;
        let payload = match in_memory(msg.payload) {
            Ok(payload) => payload,
            Err(error) => {
                self.core.handle_refused();
                return self.replies.now(tag, Err(DatagramError::Transport(error)));
            }
        };
        let queued = self
            .core
            .handle_send(payload, msg.to, Token::pending(tag), now());
        if let Err((error, _)) = queued {
            if matches!(error, DatagramError::QueueFull { .. }) {
                tracing::debug!(parent: &self.span, "datagram refused: queue full");
            }
            return self.replies.now(tag, Err(error));
        }
        self.drive(ctx);
        self.replies.later(tag)
    }
}

impl Handler<SendAdmitted> for DatagramSocket {
    type Result = ();

    fn handle(&mut self, msg: SendAdmitted, ctx: &mut Context<Self>) {
        self.attach_reply();
        let len = msg.payload.len();
        let token = Token {
            reply: Reply::own(None, None),
            admitted: Some(len),
        };
        let payload = match in_memory(msg.payload) {
            Ok(payload) => payload,
            Err(error) => {
                self.core.handle_refused();
                self.gate.release(len);
                self.report_now(DatagramError::Transport(error));
                return;
            }
        };
        if let Err((error, _)) = self.core.handle_send(payload, msg.to, token, now()) {
            // Refused after all (the socket closed since, or `do_send`s filled its
            // queue): the room goes back and the subscriber hears why.
            self.gate.release(len);
            self.report_now(error);
            return;
        }
        self.drive(ctx);
    }
}

impl Handler<GetDatagramWriter> for DatagramSocket {
    type Result = actix::MessageResult<GetDatagramWriter>;

    fn handle(&mut self, _: GetDatagramWriter, ctx: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(DatagramWriter::new(
            ctx.address(),
            self.gate.clone(),
            self.id,
        ))
    }
}

/// Changes of the room for its [`DatagramWriter`]s: `writable: false` when the queue is
/// full (the next datagram a writer sends would be refused), `true` when what the writers
/// admitted drained to half the queue's limits.
impl Handler<SubscribeWritability> for DatagramSocket {
    type Result = ();

    fn handle(&mut self, msg: SubscribeWritability, _: &mut Context<Self>) {
        self.gate.subscribe(msg.0);
    }
}

impl DatagramSocket {
    /// Reports a failed untagged send nobody waits for, after the failures responses
    /// parked before it.
    fn report_now(&self, error: DatagramError) {
        let (subscriber, id, span) = (&self.subscriber, self.id, &self.span);
        let mut report = |tag, error| report_failure(subscriber, id, span, tag, error);
        self.replies.report_parked(&mut report);
        report(None, error);
    }
}

impl Handler<ReportFailures> for DatagramSocket {
    type Result = ();

    fn handle(&mut self, _: ReportFailures, _: &mut Context<Self>) {
        let (subscriber, id, span) = (&self.subscriber, self.id, &self.span);
        self.replies.report_parked(|tag, error| {
            report_failure(subscriber, id, span, tag, error);
        });
    }
}

impl Handler<Flush> for DatagramSocket {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        self.attach_reply();
        self.core.handle_flush();
        self.drive(ctx);
    }
}

impl Handler<Ready> for DatagramSocket {
    type Result = ();

    fn handle(&mut self, msg: Ready, ctx: &mut Context<Self>) {
        self.attach_reply();
        if msg.handle == self.handle {
            self.core.handle_ready(msg.readiness);
            self.drive(ctx);
        }
    }
}

impl Handler<Close> for DatagramSocket {
    type Result = ();

    fn handle(&mut self, msg: Close, ctx: &mut Context<Self>) {
        self.attach_reply();
        self.core.handle_close(msg == Close::Abort);
        self.drive(ctx);
    }
}

impl Handler<GetDatagramInfo> for DatagramSocket {
    type Result = MessageResult<GetDatagramInfo>;

    fn handle(&mut self, _: GetDatagramInfo, _: &mut Context<Self>) -> Self::Result {
        MessageResult(DatagramInfo {
            id: self.id,
            handle: self.handle,
            local: self.local.clone(),
            peer: self.peer.clone(),
            open: self.core.is_open(),
        })
    }
}

impl Handler<GetDatagramStats> for DatagramSocket {
    type Result = MessageResult<GetDatagramStats>;

    fn handle(&mut self, _: GetDatagramStats, _: &mut Context<Self>) -> Self::Result {
        let mut stats = self.core.stats();
        // Refused by a writer, in its own thread: never seen by the core.
        stats.send_failed += self.gate.refused();
        MessageResult(stats)
    }
}

impl crate::actors::readiness::Waiter for DatagramSocket {
    fn is_open(&self) -> bool {
        self.core.is_open()
    }
}

impl crate::actors::readiness::Orphanable for DatagramSocket {
    fn orphaned(&mut self, ctx: &mut Context<Self>) {
        self.close_orphaned(crate::types::Readiness::Readable, ctx);
    }
}

impl FlushWaiter for DatagramSocket {
    fn awaited_flush(&self) -> Option<u64> {
        self.core.awaited_flush()
    }

    fn flusher_lost(&mut self, ctx: &mut Context<Self>) {
        tracing::warn!(
            parent: &self.span,
            "the flusher stopped with this socket's request unanswered; sending immediately"
        );
        self.flusher = None;
        self.core.handle_flusher_lost();
        self.drive(ctx);
    }
}
