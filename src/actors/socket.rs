//! The [`Socket`] actor: one per socket, serializing writes like Samba's `tevent_queue`.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::dev::{MessageResponse, OneshotSender};
use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, MailboxError, Message, Recipient,
    WrapFuture,
};
use bytes::Bytes;
use tokio::time::Instant;

use super::flusher::Flusher;
use super::functions::{Adopt, SocketFunctions};
use crate::batch::IoBatch;
use crate::error::{SocketError, TransportError, WriteError};
use crate::messages::flush::{Flush, PendingWrite};
use crate::messages::functions::{
    Address, CloseSocket, Connect, Handle, OpenSocket, Readiness, Ready, Received, RecvFrom, SendV,
    Sent, SocketKind,
};
use crate::messages::socket::{
    CancelWrite, Close, GetStats, SocketEvent, SocketEventKind, SocketId, SocketStats,
    SubscribeWritability, WritabilityChanged, Write, Written,
};
use crate::queue::{QueueConfig, WriteQueue};

/// How a socket's queued writes reach the transport.
#[derive(Clone, Debug)]
pub enum FlushPolicy {
    /// No Flusher: each write goes to the transport at once, and the socket handles no
    /// other message until the transport has answered (c-ares without a pending-write
    /// callback). Writes that queue up behind a would-block still leave together.
    Immediate,
    /// Coalesce: on fresh data send one [`PendingWrite`] here and flush everything queued
    /// when the [`Flush`] comes back (c-ares with a pending-write callback).
    Deferred(Recipient<PendingWrite>),
}

/// Limits and sizes of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketConfig {
    /// Write queue limits: watermarks and fairness bounds.
    pub queue: QueueConfig,
    /// Most bytes asked of one `recvfrom`.
    pub read_chunk: usize,
    /// Most writes that may wait for room ([`Write::wait_when_full`]) at once; past it
    /// they are refused like other writes.
    pub max_waiting_writes: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            queue: QueueConfig::default(),
            read_chunk: 64 * 1024,
            max_waiting_writes: 1024,
        }
    }
}

/// The slot a write's reply channel sits in: filled right after the handler returns
/// (see [`WriteResponse`]); left empty for `do_send`.
#[derive(Clone, Default)]
struct Slot(Rc<Cell<Option<ReplyTx>>>);

type ReplyTx = OneshotSender<Result<Written, WriteError>>;

impl Slot {
    fn take(&self) -> Option<ReplyTx> {
        self.0.take()
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

/// Where a write's answer goes.
#[derive(Debug)]
struct Reply {
    tag: Option<u64>,
    tx: Slot,
}

/// The [`Write`] handler's response: the answer now, or a slot the reply channel is put
/// in, answered when the write finishes. Avoids spawning a task per write.
#[derive(Debug)]
pub struct WriteResponse(ResponseInner);

#[derive(Debug)]
enum ResponseInner {
    Now(Option<u64>, Result<Written, WriteError>),
    Later(Slot),
}

impl MessageResponse<Socket, Write> for WriteResponse {
    fn handle(
        self,
        ctx: &mut Context<Socket>,
        tx: Option<OneshotSender<Result<Written, WriteError>>>,
    ) {
        match self.0 {
            ResponseInner::Later(slot) => slot.0.set(tx),
            ResponseInner::Now(tag, result) => match (tx, result) {
                (Some(tx), result) => {
                    let _ = tx.send(result);
                }
                (None, Ok(_)) => {}
                // Fire-and-forget write refused on arrival.
                (None, Err(error)) => ctx.notify(ReportFailure { tag, error }),
            },
        }
    }
}

#[derive(Debug)]
struct ReportFailure {
    tag: Option<u64>,
    error: WriteError,
}

impl Message for ReportFailure {
    type Result = ();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlushState {
    /// Nothing under way.
    Idle,
    /// A `PendingWrite` is out; waiting for the Flusher's `Flush`.
    Requested,
    /// A `sendv` is out (or about to be).
    Active,
    /// The turn's byte budget is spent; yielded to the runtime.
    Yielding,
    /// The transport would block; waiting for `Ready(Writable)`.
    Blocked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    Off,
    Idle,
    InFlight,
    Yielding,
    Blocked,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Open,
    Draining,
    Closed,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One socket as an actor.
///
/// Producers send it [`Write`]s; it queues them in a [`WriteQueue`] and hands the
/// transport ([`SocketFunctions`]) vectored writes, one at a time, so writes leave in
/// FIFO order and never interleave, however the transport answers. Every write is
/// answered exactly once. Inbound data goes to the subscriber as [`SocketEvent`]s.
///
/// Start one with [`Socket::builder`].
///
/// Once closed (by [`Close`], or by a transport error) the handle is closed at once, the
/// subscriber gets [`SocketEventKind::Closed`], and every later write is answered with a
/// typed error ([`WriteError::Closed`], or [`WriteError::Transport`] carrying the error
/// that closed it); the actor stops when its last address is dropped.
#[derive(Debug)]
pub struct Socket {
    id: SocketId,
    handle: Handle,
    peer: Option<Address>,
    functions: SocketFunctions,
    config: SocketConfig,
    queue: WriteQueue<Reply>,
    waiting: VecDeque<(Write, Reply)>,
    policy: FlushPolicy,
    flush: FlushState,
    write_ready_hint: bool,
    turn_bytes: usize,
    read: ReadState,
    read_ready_hint: bool,
    read_turn: usize,
    life: Lifecycle,
    cause: Option<TransportError>,
    subscriber: Option<Recipient<SocketEvent>>,
    writability: Vec<Recipient<WritabilityChanged>>,
    stats: SocketStats,
    span: tracing::Span,
}

/// Configures and starts a [`Socket`].
#[derive(Debug, Default)]
pub struct SocketBuilder {
    functions: Option<SocketFunctions>,
    config: SocketConfig,
    policy: Option<FlushPolicy>,
    subscriber: Option<Recipient<SocketEvent>>,
    writability: Vec<Recipient<WritabilityChanged>>,
}

impl SocketBuilder {
    /// The transport (default: [`SocketFunctions::system`]).
    pub fn functions(mut self, functions: SocketFunctions) -> Self {
        self.functions = Some(functions);
        self
    }

    /// Limits and sizes (default: [`SocketConfig::default`]).
    pub fn config(mut self, config: SocketConfig) -> Self {
        self.config = config;
        self
    }

    /// Flush policy (default: deferred to this thread's [`Flusher::current`]).
    pub fn flush_policy(mut self, policy: FlushPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Shorthand for [`FlushPolicy::Immediate`].
    pub fn immediate(self) -> Self {
        self.flush_policy(FlushPolicy::Immediate)
    }

    /// Shorthand for [`FlushPolicy::Deferred`] with the given Flusher.
    pub fn flusher(self, flusher: Addr<Flusher>) -> Self {
        self.flush_policy(FlushPolicy::Deferred(flusher.recipient()))
    }

    /// Who receives inbound data, EOF, errors and failures of fire-and-forget writes.
    /// Without a subscriber the socket does not read.
    pub fn subscriber(mut self, subscriber: Recipient<SocketEvent>) -> Self {
        self.subscriber = Some(subscriber);
        self
    }

    /// A producer to tell about writability changes (more can subscribe later with
    /// [`SubscribeWritability`]).
    pub fn writability_subscriber(mut self, producer: Recipient<WritabilityChanged>) -> Self {
        self.writability.push(producer);
        self
    }

    /// Opens a stream socket through the transport, connects it to `addr`, and starts
    /// the actor on the current arbiter.
    pub async fn connect(self, addr: impl Into<Address>) -> Result<Addr<Socket>, SocketError> {
        let addr = addr.into();
        let functions = self
            .functions
            .clone()
            .unwrap_or_else(SocketFunctions::system);
        let ctx = Context::<Socket>::new();
        let open = OpenSocket {
            family: addr.family(),
            kind: SocketKind::Stream,
            events: ctx.address().recipient(),
        };
        let handle = flatten(functions.open().send(open).await).map_err(SocketError::Open)?;
        let connect = Connect {
            handle,
            addr: addr.clone(),
        };
        if let Err(e) = flatten(functions.connect().send(connect).await) {
            functions.close().do_send(CloseSocket { handle });
            return Err(SocketError::Connect(e));
        }
        Ok(ctx.run(self.build(functions, handle, Some(addr))))
    }

    /// Starts a socket on an already connected TCP stream (from a listener's `accept`),
    /// handing the stream to the system transport.
    pub async fn adopt(self, stream: tokio::net::TcpStream) -> Result<Addr<Socket>, SocketError> {
        let functions = self
            .functions
            .clone()
            .unwrap_or_else(SocketFunctions::system);
        let Some(system) = functions.system_actor().cloned() else {
            return Err(SocketError::Open(TransportError::Unsupported(
                "adopting a stream needs the system transport",
            )));
        };
        let peer = stream.peer_addr().ok().map(Address::Inet);
        let ctx = Context::<Socket>::new();
        let adopt = Adopt {
            stream,
            events: ctx.address().recipient(),
        };
        let handle = flatten(system.send(adopt).await).map_err(SocketError::Open)?;
        Ok(ctx.run(self.build(functions, handle, peer)))
    }

    fn build(self, functions: SocketFunctions, handle: Handle, peer: Option<Address>) -> Socket {
        let id = SocketId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let peer_text = peer.as_ref().map(|p| p.to_string()).unwrap_or_default();
        let policy = self
            .policy
            .unwrap_or_else(|| FlushPolicy::Deferred(Flusher::current().recipient()));
        Socket {
            id,
            handle,
            peer,
            functions,
            config: self.config,
            queue: WriteQueue::new(self.config.queue),
            waiting: VecDeque::new(),
            policy,
            flush: FlushState::Idle,
            write_ready_hint: false,
            turn_bytes: 0,
            read: ReadState::Off,
            read_ready_hint: false,
            read_turn: 0,
            life: Lifecycle::Open,
            cause: None,
            subscriber: self.subscriber,
            writability: self.writability,
            stats: SocketStats::default(),
            span: tracing::debug_span!("socket", id = id.0, peer = %peer_text),
        }
    }
}

fn flatten<T>(r: Result<Result<T, TransportError>, MailboxError>) -> Result<T, TransportError> {
    r.map_err(TransportError::from)?
}

/// Delivers one write's answer: to its caller, or (fire-and-forget failures) to tracing
/// and the subscriber.
fn answer(
    id: SocketId,
    span: &tracing::Span,
    stats: &mut SocketStats,
    subscriber: &Option<Recipient<SocketEvent>>,
    reply: Reply,
    result: Result<Written, WriteError>,
) {
    match &result {
        Ok(w) => {
            stats.writes_completed += 1;
            tracing::trace!(parent: span, len = w.len, sendv_calls = w.sendv_calls,
                would_blocks = w.would_blocks, writes_per_sendv = w.max_writes_per_sendv,
                latency_us = w.latency.as_micros() as u64, "write done");
        }
        Err(_) => stats.writes_failed += 1,
    }
    let unanswered = match reply.tx.take() {
        Some(tx) => tx.send(result).err(),
        None => Some(result),
    };
    if let Some(Err(error)) = unanswered {
        report_failure(id, span, subscriber, reply.tag, error);
    }
}

fn report_failure(
    id: SocketId,
    span: &tracing::Span,
    subscriber: &Option<Recipient<SocketEvent>>,
    tag: Option<u64>,
    error: WriteError,
) {
    tracing::warn!(parent: span, ?tag, %error, "write failed with nobody waiting for its answer");
    if let Some(s) = subscriber {
        s.do_send(SocketEvent {
            socket: id,
            kind: SocketEventKind::WriteFailed { tag, error },
        });
    }
}

impl Socket {
    /// A builder for a socket.
    pub fn builder() -> SocketBuilder {
        SocketBuilder::default()
    }

    /// This socket's id.
    pub fn id(&self) -> SocketId {
        self.id
    }

    /// The peer's address, where known.
    pub fn peer(&self) -> Option<&Address> {
        self.peer.as_ref()
    }

    fn event(&self, kind: SocketEventKind) {
        if let Some(s) = &self.subscriber {
            s.do_send(SocketEvent {
                socket: self.id,
                kind,
            });
        }
    }

    fn new_reply(tag: Option<u64>) -> (Reply, Slot) {
        let tx = Slot::default();
        (
            Reply {
                tag,
                tx: tx.clone(),
            },
            tx,
        )
    }

    /// Tells writability subscribers about a watermark crossing, dropping stopped ones.
    fn publish_writability(&mut self) {
        if let Some(writable) = self.queue.take_writability_change() {
            if self.life == Lifecycle::Closed {
                return;
            }
            tracing::debug!(parent: &self.span, writable, queued = self.queue.queued_bytes(), "writability changed");
            let msg = WritabilityChanged {
                socket: self.id,
                writable,
            };
            self.writability.retain(|r| r.connected());
            for r in &self.writability {
                r.do_send(msg);
            }
        }
    }

    /// Queues a write (refusing it while unwritable). Returns the response for the caller.
    fn enqueue(
        &mut self,
        msg: Write,
        reply: Reply,
        ctx: &mut Context<Self>,
    ) -> Result<(), (Write, Reply)> {
        let was_empty = self.queue.is_empty();
        let Socket {
            id,
            span,
            stats,
            subscriber,
            queue,
            ..
        } = self;
        let (tag, wait) = (msg.tag, msg.wait_when_full);
        match queue.push(msg.batch, tag, reply, Instant::now(), |r, res| {
            answer(*id, span, stats, subscriber, r, res)
        }) {
            Ok(()) => {
                self.stats.writes += 1;
                self.publish_writability();
                if was_empty && !self.queue.is_empty() {
                    self.on_fresh_data(ctx);
                }
                Ok(())
            }
            Err(refused) => Err((
                Write {
                    batch: refused.batch,
                    tag,
                    wait_when_full: wait,
                },
                refused.token,
            )),
        }
    }

    /// The queue went from empty to non-empty.
    fn on_fresh_data(&mut self, ctx: &mut Context<Self>) {
        if self.flush != FlushState::Idle {
            // A flush is under way (or requested): it will pick the new data up.
            return;
        }
        match &self.policy {
            FlushPolicy::Immediate => self.drive(ctx),
            FlushPolicy::Deferred(flusher) if flusher.connected() => {
                flusher.do_send(PendingWrite {
                    socket: self.id,
                    flush: ctx.address().recipient(),
                });
                self.stats.pending_writes += 1;
                self.flush = FlushState::Requested;
            }
            FlushPolicy::Deferred(_) => {
                tracing::warn!(parent: &self.span, "flusher is gone; writing immediately");
                self.policy = FlushPolicy::Immediate;
                self.drive(ctx);
            }
        }
    }

    /// Hands the transport the next vectored write, or goes idle when nothing is queued.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        if self.life == Lifecycle::Closed || self.queue.in_flight() {
            return;
        }
        let max_turn = self.queue.config().max_bytes_per_turn;
        if self.turn_bytes >= max_turn {
            // Fairness: let other actors on this thread run before the next turn.
            self.turn_bytes = 0;
            self.flush = FlushState::Yielding;
            ctx.spawn(
                tokio::task::yield_now()
                    .into_actor(self)
                    .map(|_, act, ctx| {
                        if act.flush == FlushState::Yielding {
                            act.flush = FlushState::Active;
                            act.drive(ctx);
                        }
                    }),
            );
            return;
        }
        let Some(transmit) = self.queue.poll_transmit(max_turn - self.turn_bytes) else {
            self.flush = FlushState::Idle;
            self.turn_bytes = 0;
            self.maybe_finish_drain();
            return;
        };
        self.flush = FlushState::Active;
        self.stats.sendv_calls += 1;
        tracing::trace!(parent: &self.span, bytes = transmit.len, segments = transmit.segments.len(),
            writes = transmit.writes, "sendv");
        let sendv = SendV {
            handle: self.handle,
            segments: transmit.segments,
            to: None,
        };
        let fut = self
            .functions
            .sendv()
            .send(sendv)
            .into_actor(self)
            .map(|res, act, ctx| act.on_sent(flatten(res), ctx));
        match self.policy {
            // Immediate: nothing else is handled until the transport has answered.
            FlushPolicy::Immediate => ctx.wait(fut),
            FlushPolicy::Deferred(_) => {
                ctx.spawn(fut);
            }
        }
    }

    fn on_sent(&mut self, result: Result<Sent, TransportError>, ctx: &mut Context<Self>) {
        if self.life == Lifecycle::Closed {
            return;
        }
        match result {
            Ok(Sent::Accepted(n)) => {
                // A writable notice that came meanwhile belonged to an older block.
                self.write_ready_hint = false;
                let Socket {
                    id,
                    span,
                    stats,
                    subscriber,
                    queue,
                    ..
                } = self;
                let handled = queue.handle_sent(n, Instant::now(), |r, res| {
                    answer(*id, span, stats, subscriber, r, res)
                });
                if let Err(e) = handled {
                    self.fail(e);
                    return;
                }
                self.stats.bytes_sent += n as u64;
                self.turn_bytes += n;
                self.admit_waiting(ctx);
                self.publish_writability();
                self.drive(ctx);
            }
            Ok(Sent::WouldBlock) => {
                self.queue.handle_would_block();
                self.stats.would_blocks += 1;
                self.turn_bytes = 0;
                tracing::debug!(parent: &self.span, queued = self.queue.queued_bytes(), "would block");
                if std::mem::take(&mut self.write_ready_hint) {
                    // Its writable notice already came.
                    self.flush = FlushState::Active;
                    self.drive(ctx);
                } else {
                    self.flush = FlushState::Blocked;
                }
            }
            Err(e) => self.fail(e),
        }
    }

    /// Moves writes that waited for room into the queue, while it is writable.
    fn admit_waiting(&mut self, ctx: &mut Context<Self>) {
        while self.queue.is_writable() {
            let Some((write, reply)) = self.waiting.pop_front() else {
                break;
            };
            if let Err(back) = self.enqueue(write, reply, ctx) {
                self.waiting.push_front(back);
                break;
            }
        }
    }

    /// A transport error: every write is answered with it, the handle closes, the actor
    /// stops.
    fn fail(&mut self, error: TransportError) {
        tracing::warn!(parent: &self.span, %error, "transport failed; closing");
        let err = error.clone();
        self.fail_writes(move |bytes_sent, len| WriteError::Transport {
            bytes_sent,
            len,
            source: err.clone(),
        });
        self.close_now(Some(error));
    }

    fn fail_writes(&mut self, error: impl Fn(usize, usize) -> WriteError) {
        let Socket {
            id,
            span,
            stats,
            subscriber,
            queue,
            waiting,
            ..
        } = self;
        queue.fail_all(&error, |r, res| {
            answer(*id, span, stats, subscriber, r, res)
        });
        for (write, reply) in waiting.drain(..) {
            answer(
                *id,
                span,
                stats,
                subscriber,
                reply,
                Err(error(0, write.batch.len())),
            );
        }
        // Watermark changes of a dying queue are not news.
        let _ = self.queue.take_writability_change();
    }

    fn maybe_finish_drain(&mut self) {
        if self.life == Lifecycle::Draining && self.queue.is_empty() && self.waiting.is_empty() {
            self.close_now(None);
        }
    }

    fn close_now(&mut self, cause: Option<TransportError>) {
        if self.life == Lifecycle::Closed {
            return;
        }
        self.life = Lifecycle::Closed;
        self.read = ReadState::Done;
        self.functions.close().do_send(CloseSocket {
            handle: self.handle,
        });
        tracing::debug!(parent: &self.span, cause = ?cause, "closed");
        self.cause = cause.clone();
        self.event(SocketEventKind::Closed { cause });
        // The actor lingers, answering later writes with a typed error (rather than
        // letting messages already in its mailbox be dropped unanswered), and stops
        // when its last address is dropped.
    }

    fn drive_read(&mut self, ctx: &mut Context<Self>) {
        if self.read != ReadState::Idle || self.life == Lifecycle::Closed {
            return;
        }
        if self.read_turn >= self.queue.config().max_bytes_per_turn {
            self.read_turn = 0;
            self.read = ReadState::Yielding;
            ctx.spawn(
                tokio::task::yield_now()
                    .into_actor(self)
                    .map(|_, act, ctx| {
                        if act.read == ReadState::Yielding {
                            act.read = ReadState::Idle;
                            act.drive_read(ctx);
                        }
                    }),
            );
            return;
        }
        self.read = ReadState::InFlight;
        let recv = RecvFrom {
            handle: self.handle,
            max_len: self.config.read_chunk,
        };
        ctx.spawn(
            self.functions
                .recvfrom()
                .send(recv)
                .into_actor(self)
                .map(|res, act, ctx| act.on_received(flatten(res), ctx)),
        );
    }

    fn on_received(&mut self, result: Result<Received, TransportError>, ctx: &mut Context<Self>) {
        if self.life == Lifecycle::Closed {
            return;
        }
        match result {
            Ok(Received::Data { bytes, .. }) => {
                self.read_ready_hint = false;
                self.stats.bytes_received += bytes.len() as u64;
                self.read_turn += bytes.len();
                self.read = ReadState::Idle;
                self.deliver(bytes);
                self.drive_read(ctx);
            }
            Ok(Received::WouldBlock) => {
                self.read_turn = 0;
                if std::mem::take(&mut self.read_ready_hint) {
                    self.read = ReadState::Idle;
                    self.drive_read(ctx);
                } else {
                    self.read = ReadState::Blocked;
                }
            }
            Ok(Received::Eof) => {
                self.read = ReadState::Done;
                tracing::debug!(parent: &self.span, "peer closed its sending half");
                self.event(SocketEventKind::Eof);
            }
            Err(e) => {
                self.read = ReadState::Done;
                self.event(SocketEventKind::ReadFailed(e.clone()));
                self.fail(e);
            }
        }
    }

    fn deliver(&self, bytes: Bytes) {
        self.event(SocketEventKind::Received(bytes));
    }
}

impl Actor for Socket {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::debug!(parent: &self.span, handle = %self.handle, "socket started");
        if self.subscriber.is_some() {
            self.read = ReadState::Idle;
            self.drive_read(ctx);
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if self.life != Lifecycle::Closed {
            self.fail_writes(|bytes_sent, len| WriteError::Closed { bytes_sent, len });
            self.life = Lifecycle::Closed;
            self.functions.close().do_send(CloseSocket {
                handle: self.handle,
            });
            self.event(SocketEventKind::Closed { cause: None });
        }
    }
}

impl Handler<Write> for Socket {
    type Result = WriteResponse;

    fn handle(&mut self, msg: Write, ctx: &mut Context<Self>) -> WriteResponse {
        let tag = msg.tag;
        if self.life != Lifecycle::Open {
            self.stats.writes_failed += 1;
            let len = msg.batch.len();
            let error = match &self.cause {
                Some(source) => WriteError::Transport {
                    bytes_sent: 0,
                    len,
                    source: source.clone(),
                },
                None => WriteError::Closed { bytes_sent: 0, len },
            };
            return WriteResponse(ResponseInner::Now(tag, Err(error)));
        }
        if msg.batch.is_empty() && self.queue.is_empty() && self.waiting.is_empty() {
            // Nothing ahead of it and nothing to send: done now, in order.
            self.stats.writes += 1;
            self.stats.writes_completed += 1;
            return WriteResponse(ResponseInner::Now(tag, Ok(Written::default())));
        }
        let (reply, slot) = Self::new_reply(tag);
        // Writes already waiting for room go first.
        let refused = if self.waiting.is_empty() {
            self.enqueue(msg, reply, ctx).err()
        } else {
            Some((msg, reply))
        };
        let Some((msg, reply)) = refused else {
            return WriteResponse(ResponseInner::Later(slot));
        };
        if msg.wait_when_full && self.waiting.len() < self.config.max_waiting_writes {
            self.waiting.push_back((msg, reply));
            return WriteResponse(ResponseInner::Later(slot));
        }
        self.stats.writes_failed += 1;
        tracing::debug!(parent: &self.span, queued = self.queue.queued_bytes(), "write refused: queue full");
        WriteResponse(ResponseInner::Now(
            tag,
            Err(WriteError::QueueFull {
                queued: self.queue.queued_bytes(),
                high_watermark: self.queue.config().high_watermark,
                payload: msg.batch,
            }),
        ))
    }
}

impl Handler<ReportFailure> for Socket {
    type Result = ();

    fn handle(&mut self, msg: ReportFailure, _: &mut Context<Self>) {
        report_failure(self.id, &self.span, &self.subscriber, msg.tag, msg.error);
    }
}

impl Handler<Flush> for Socket {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        if matches!(self.flush, FlushState::Requested | FlushState::Idle) {
            self.flush = FlushState::Active;
            self.turn_bytes = 0;
            self.drive(ctx);
        }
    }
}

impl Handler<Ready> for Socket {
    type Result = ();

    fn handle(&mut self, msg: Ready, ctx: &mut Context<Self>) {
        if msg.handle != self.handle {
            return;
        }
        // A notice can overtake the would-block answer it belongs to (the answer comes
        // back through a spawned future, the notice through the mailbox, which actix
        // polls first). Remember it, so that answer retries instead of waiting forever.
        match msg.readiness {
            Readiness::Writable if self.flush == FlushState::Blocked => {
                self.flush = FlushState::Active;
                self.drive(ctx);
            }
            Readiness::Writable => self.write_ready_hint = true,
            Readiness::Readable if self.read == ReadState::Blocked => {
                self.read = ReadState::Idle;
                self.drive_read(ctx);
            }
            Readiness::Readable => self.read_ready_hint = true,
        }
    }
}

impl Handler<CancelWrite> for Socket {
    type Result = Option<IoBatch>;

    fn handle(&mut self, msg: CancelWrite, ctx: &mut Context<Self>) -> Option<IoBatch> {
        let Socket {
            id,
            span,
            stats,
            subscriber,
            queue,
            ..
        } = self;
        let cancelled = queue.cancel(msg.tag, Instant::now(), |r, res| {
            answer(*id, span, stats, subscriber, r, res)
        });
        let (batch, reply) = match cancelled {
            Some(found) => found,
            None => {
                let index = self
                    .waiting
                    .iter()
                    .position(|(w, _)| w.tag == Some(msg.tag))?;
                let (write, reply) = self.waiting.remove(index)?;
                (write.batch, reply)
            }
        };
        answer(
            self.id,
            &self.span,
            &mut self.stats,
            &self.subscriber,
            reply,
            Err(WriteError::Cancelled),
        );
        self.admit_waiting(ctx);
        self.publish_writability();
        if self.queue.is_empty() && self.flush == FlushState::Idle {
            self.maybe_finish_drain();
        }
        Some(batch)
    }
}

impl Handler<Close> for Socket {
    type Result = ();

    fn handle(&mut self, msg: Close, ctx: &mut Context<Self>) {
        match msg {
            Close::Abort => {
                self.fail_writes(|bytes_sent, len| WriteError::Aborted { bytes_sent, len });
                self.close_now(None);
            }
            Close::Graceful => {
                if self.life != Lifecycle::Open {
                    return;
                }
                self.life = Lifecycle::Draining;
                // Flush now rather than wait for the Flusher's round.
                if matches!(self.flush, FlushState::Idle | FlushState::Requested) {
                    self.flush = FlushState::Active;
                    self.drive(ctx);
                }
            }
        }
    }
}

impl Handler<GetStats> for Socket {
    type Result = actix::MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let mut stats = self.stats;
        stats.queued_bytes = self.queue.queued_bytes() as u64;
        stats.queued_writes = (self.queue.len() + self.waiting.len()) as u64;
        actix::MessageResult(stats)
    }
}

impl Handler<SubscribeWritability> for Socket {
    type Result = ();

    fn handle(&mut self, msg: SubscribeWritability, _: &mut Context<Self>) {
        self.writability.push(msg.0);
    }
}
