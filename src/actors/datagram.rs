//! The [`DatagramSocket`] actor: one per datagram (UDP) socket. Datagrams are sent whole
//! and in order, never merged or split, each answered exactly once; bursts are flushed
//! through the same [`Flusher`] protocol as stream sockets.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use actix::dev::{MessageResponse, OneshotSender};
use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, MessageResult, Recipient,
    Running, WrapFuture,
};
use tokio::time::Instant;

use super::flusher::{request_flush, Flusher};
use super::functions::{call, flatten, SocketFunctions};
use super::socket::{FlushPolicy, NEXT_ID};
use crate::batch::IoBatch;
use crate::error::{DatagramError, SocketError, TransportError};
use crate::messages::datagram::{
    DatagramEvent, DatagramEventKind, DatagramInfo, DatagramSent, DatagramStats, GetDatagramInfo,
    GetDatagramStats, SendDatagram,
};
use crate::messages::flush::{Flush, PendingWrite};
use crate::messages::functions::{
    Address, Bind, CloseSocket, Connect, Family, Handle, OpenSocket, Readiness, Ready, Received,
    RecvFrom, SendV, Sent, SocketKind,
};
use crate::messages::socket::{Close, SocketId};

/// Receive errors in a row after which a datagram socket gives up and fails: an error
/// that recurs with no datagram in between will not clear.
const MAX_READ_ERRORS: u32 = 8;
/// Limits and sizes of a datagram socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatagramConfig {
    /// Most datagrams queued (waiting for the transport) at once; past it, datagrams are
    /// refused with [`DatagramError::QueueFull`].
    pub max_queued: usize,
    /// Most bytes queued at once (a single datagram larger than this is still taken
    /// when the queue is empty).
    pub max_queued_bytes: usize,
    /// The longest datagram received whole; a longer one is reported truncated.
    pub max_datagram_size: usize,
    /// Most datagrams sent, and most received, before the socket yields to the other
    /// actors of its thread.
    pub max_per_turn: usize,
}

impl Default for DatagramConfig {
    fn default() -> Self {
        DatagramConfig {
            max_queued: 1024,
            max_queued_bytes: 4 * 1024 * 1024,
            max_datagram_size: 65_535,
            max_per_turn: 64,
        }
    }
}

/// One queued datagram.
#[derive(Debug)]
struct Queued<T> {
    payload: IoBatch,
    to: Option<Address>,
    token: T,
}

/// The bounded FIFO of datagrams waiting for the transport: no actors, no I/O.
#[derive(Debug)]
struct DatagramQueue<T> {
    items: VecDeque<Queued<T>>,
    bytes: usize,
    max: usize,
    max_bytes: usize,
}

impl<T> DatagramQueue<T> {
    fn new(max: usize, max_bytes: usize) -> Self {
        DatagramQueue {
            items: VecDeque::new(),
            bytes: 0,
            max: max.max(1),
            max_bytes,
        }
    }

    /// Queues a datagram, or hands it back when the queue is full: `max` datagrams, or
    /// its bytes would pass `max_bytes` (an empty queue takes any one datagram).
    fn push(&mut self, item: Queued<T>) -> Result<(), Queued<T>> {
        let len = item.payload.len();
        let over_bytes = !self.items.is_empty() && self.bytes.saturating_add(len) > self.max_bytes;
        if self.items.len() >= self.max || over_bytes {
            return Err(item);
        }
        self.bytes += len;
        self.items.push_back(item);
        Ok(())
    }

    fn pop(&mut self) -> Option<Queued<T>> {
        let item = self.items.pop_front()?;
        self.bytes -= item.payload.len();
        Some(item)
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

type Answer = Result<DatagramSent, DatagramError>;

/// Where a datagram's answer goes: the slot shared with its [`DatagramResponse`]. The
/// answer may come before actix hands over the reply channel (a refusal, or an
/// immediate send), so whichever arrives first waits in the slot for the other.
#[derive(Debug, Default)]
enum Slot {
    #[default]
    Empty,
    /// Actix handed over the channel (`None`: sent with `do_send`).
    Waiting(Option<OneshotSender<Answer>>),
    Answered(Answer),
}

/// A datagram's token: its reply slot, tag and enqueue time.
#[derive(Debug)]
struct Reply {
    slot: Arc<Mutex<Slot>>,
    tag: Option<u64>,
    at: Instant,
}

/// The [`SendDatagram`] handler's response: hands actix's reply channel to the slot.
#[derive(Debug)]
pub struct DatagramResponse {
    slot: Arc<Mutex<Slot>>,
    tag: Option<u64>,
}

impl MessageResponse<DatagramSocket, SendDatagram> for DatagramResponse {
    fn handle(self, ctx: &mut Context<DatagramSocket>, tx: Option<OneshotSender<Answer>>) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::take(&mut *slot) {
            Slot::Answered(answer) => {
                drop(slot);
                match (tx, answer) {
                    (Some(tx), answer) => {
                        let _ = tx.send(answer);
                    }
                    (None, Ok(_)) => {}
                    (None, Err(error)) => ctx.notify(ReportFailure {
                        tag: self.tag,
                        error,
                    }),
                }
            }
            _ => *slot = Slot::Waiting(tx),
        }
    }
}

/// A fire-and-forget datagram failed before actix handed over its (absent) channel.
#[derive(Debug)]
struct ReportFailure {
    tag: Option<u64>,
    error: DatagramError,
}

impl Message for ReportFailure {
    type Result = ();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SendState {
    /// Nothing under way.
    Idle,
    /// A `PendingWrite` is out; waiting for the Flusher's `Flush`.
    Requested,
    /// Sending: the next datagram may go out.
    Active,
    /// A `sendv` is out.
    InFlight,
    /// The transport would block; waiting for `Ready(Writable)`.
    Blocked,
    /// The turn's datagrams are spent; yielded to the runtime.
    Yielding,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    Off,
    Idle,
    InFlight,
    Blocked,
    Yielding,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Open,
    Draining,
    Closed,
}

/// The datagram the transport is being offered: kept until it takes it, so one that
/// met a would-block is offered again, whole.
#[derive(Debug)]
struct InFlight {
    payload: IoBatch,
    to: Option<Address>,
    reply: Reply,
}

/// A datagram (UDP) socket as an actor.
///
/// Producers send it [`SendDatagram`]s; each leaves whole, in arrival order, through the
/// transport's `sendv` (one call per datagram, with its destination), and gets exactly
/// one answer. The queue is bounded ([`DatagramConfig`]); a full queue refuses with
/// [`DatagramError::QueueFull`], handing the payload back. With a Flusher (the default) a
/// burst asks it once ([`PendingWrite`]) and the `Flush` sends everything queued until
/// the transport would block; with [`FlushPolicy::Immediate`] each datagram goes out at
/// once. A transport that takes only part of a datagram is
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
    functions: SocketFunctions,
    local: Option<Address>,
    peer: Option<Address>,
    config: DatagramConfig,
    queue: DatagramQueue<Reply>,
    in_flight: Option<InFlight>,
    flusher: Option<Arc<Recipient<PendingWrite>>>,
    subscriber: Option<Recipient<DatagramEvent>>,
    send: SendState,
    write_ready_hint: bool,
    sent_turn: usize,
    read: ReadState,
    read_ready_hint: bool,
    read_turn: usize,
    /// Receive errors in a row, with no datagram between them.
    read_errors: u32,
    life: Lifecycle,
    /// The transport error that closed it, if one did.
    cause: Option<TransportError>,
    /// Closed by `Close::Abort`: a datagram still out then is answered `Aborted`.
    aborted: bool,
    stats: DatagramStats,
    span: tracing::Span,
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
    /// only datagrams from it are received. Starts it on the current arbiter.
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
        let mut ctx = Context::<DatagramSocket>::new();
        // Unbounded, as a socket's: `send` then never parks a datagram in its future,
        // so datagrams from one sender keep their order however they are sent.
        ctx.set_mailbox_capacity(0);
        let open = OpenSocket {
            family,
            kind: SocketKind::Datagram,
            events: ctx.address().downgrade().recipient(),
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
        let socket = self.build(functions, handle, local.clone(), peer);
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
        functions: SocketFunctions,
        handle: Handle,
        local: Option<Address>,
        peer: Option<Address>,
    ) -> DatagramSocket {
        let id = SocketId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let flusher = match self.policy {
            None => Some(Flusher::current_recipient()),
            Some(FlushPolicy::Deferred(recipient)) => Some(Arc::new(recipient)),
            Some(FlushPolicy::Immediate) => None,
        };
        let local_text = local.as_ref().map(|a| a.to_string()).unwrap_or_default();
        let peer_text = peer.as_ref().map(|a| a.to_string()).unwrap_or_default();
        let mut config = self.config;
        config.max_per_turn = config.max_per_turn.max(1);
        DatagramSocket {
            id,
            handle,
            functions,
            local,
            peer,
            queue: DatagramQueue::new(config.max_queued, config.max_queued_bytes),
            config,
            in_flight: None,
            flusher,
            subscriber: self.subscriber,
            send: SendState::Idle,
            write_ready_hint: false,
            sent_turn: 0,
            read: ReadState::Off,
            read_ready_hint: false,
            read_turn: 0,
            read_errors: 0,
            life: Lifecycle::Open,
            cause: None,
            aborted: false,
            stats: DatagramStats::default(),
            span: tracing::debug_span!("datagram", id = id.0, local = %local_text, peer = %peer_text),
        }
    }
}

impl DatagramSocket {
    /// A builder for a datagram socket.
    pub fn builder() -> DatagramBuilder {
        DatagramBuilder::default()
    }

    fn event(&self, kind: DatagramEventKind) {
        if let Some(s) = &self.subscriber {
            s.do_send(DatagramEvent {
                socket: self.id,
                kind,
            });
        }
    }

    /// Answers a datagram (exactly once: each `Reply` is consumed here).
    fn finish(&mut self, reply: Reply, answer: Answer) {
        match &answer {
            Ok(sent) => {
                self.stats.sent += 1;
                self.stats.bytes_sent += sent.len as u64;
            }
            Err(_) => self.stats.send_failed += 1,
        }
        let mut slot = reply.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::take(&mut *slot) {
            Slot::Waiting(Some(tx)) => {
                drop(slot);
                let _ = tx.send(answer);
            }
            Slot::Waiting(None) => {
                drop(slot);
                if let Err(error) = answer {
                    tracing::debug!(parent: &self.span, %error, "datagram failed");
                    self.event(DatagramEventKind::SendFailed {
                        tag: reply.tag,
                        error,
                    });
                }
            }
            Slot::Empty | Slot::Answered(_) => *slot = Slot::Answered(answer),
        }
    }

    /// The error for a datagram that can no longer be sent.
    fn refusal(&self) -> DatagramError {
        match &self.cause {
            Some(e) => DatagramError::Transport(e.clone()),
            None => DatagramError::Closed,
        }
    }

    /// Queues a datagram, or says why not (handing the payload back where it can).
    fn enqueue(&mut self, msg: SendDatagram, reply: Reply, ctx: &mut Context<Self>) {
        if self.life != Lifecycle::Open {
            let error = self.refusal();
            return self.finish(reply, Err(error));
        }
        if msg.to.is_none() && self.peer.is_none() {
            let error = DatagramError::NoDestination {
                payload: msg.payload,
            };
            return self.finish(reply, Err(error));
        }
        let payload = match in_memory(msg.payload) {
            Ok(payload) => payload,
            Err(error) => return self.finish(reply, Err(DatagramError::Transport(error))),
        };
        let item = Queued {
            payload,
            to: msg.to,
            token: reply,
        };
        if let Err(item) = self.queue.push(item) {
            let error = DatagramError::QueueFull {
                queued: self.queue.len(),
                queued_bytes: self.queue.bytes,
                payload: item.payload,
            };
            tracing::debug!(parent: &self.span, queued = self.queue.len(), "datagram refused: queue full");
            return self.finish(item.token, Err(error));
        }
        self.start_flush(ctx);
    }

    /// Fresh data with nothing under way: the immediate policy sends now, the deferred
    /// one asks the Flusher.
    fn start_flush(&mut self, ctx: &mut Context<Self>) {
        if self.send != SendState::Idle {
            return;
        }
        if request_flush(
            &mut self.flusher,
            self.id,
            || ctx.address().recipient(),
            &self.span,
        ) {
            self.stats.pending_writes += 1;
            self.send = SendState::Requested;
        } else {
            self.send = SendState::Active;
            self.drive(ctx);
        }
    }

    /// Sends the next queued datagram, unless the queue is empty (then idle), the turn's
    /// datagrams are spent (then it yields) or the socket is not `Active`.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        if self.send != SendState::Active || self.life == Lifecycle::Closed {
            return;
        }
        if self.sent_turn >= self.config.max_per_turn {
            self.sent_turn = 0;
            self.send = SendState::Yielding;
            ctx.spawn(
                tokio::task::yield_now()
                    .into_actor(self)
                    .map(|_, act, ctx| {
                        if act.send == SendState::Yielding {
                            act.send = SendState::Active;
                            act.drive(ctx);
                        }
                    }),
            );
            return;
        }
        let Some(next) = self.queue.pop() else {
            self.go_idle();
            return;
        };
        self.in_flight = Some(InFlight {
            payload: next.payload,
            to: next.to,
            reply: next.token,
        });
        self.offer(ctx);
    }

    /// Hands the transport the datagram in flight: one `sendv`, with its destination.
    fn offer(&mut self, ctx: &mut Context<Self>) {
        let Some(flight) = &self.in_flight else {
            return;
        };
        let sendv = SendV {
            handle: self.handle,
            segments: flight
                .payload
                .segments()
                .iter()
                .filter_map(|s| s.as_bytes().cloned())
                .collect(),
            to: flight.to.clone(),
        };
        self.send = SendState::InFlight;
        self.stats.sendv_calls += 1;
        tracing::trace!(parent: &self.span, bytes = flight.payload.len(), to = ?sendv.to, "sendv");
        // Queued with the transport now, ahead of anything sent after (a close).
        let answer = self.functions.sendv().send(sendv);
        ctx.spawn(
            answer
                .into_actor(self)
                .map(|result, act, ctx| act.absorb_sent(flatten(result), ctx)),
        );
    }

    fn go_idle(&mut self) {
        self.send = SendState::Idle;
        self.sent_turn = 0;
        if self.life == Lifecycle::Draining {
            self.close_now();
        }
    }

    /// Takes in the transport's answer to the datagram in flight.
    fn absorb_sent(&mut self, result: Result<Sent, TransportError>, ctx: &mut Context<Self>) {
        let Some(flight) = self.in_flight.take() else {
            return;
        };
        if matches!(result, Ok(Sent::WouldBlock)) {
            self.stats.would_blocks += 1;
            if self.life == Lifecycle::Closed {
                // Never sent: closed meanwhile.
                let error = match self.cause {
                    None if self.aborted => DatagramError::Aborted,
                    _ => self.refusal(),
                };
                return self.finish(flight.reply, Err(error));
            }
            // Not taken: it goes out first when the transport can.
            self.in_flight = Some(flight);
            self.sent_turn = 0;
            if std::mem::take(&mut self.write_ready_hint) {
                self.offer(ctx);
            } else {
                self.send = SendState::Blocked;
            }
            return;
        }
        self.write_ready_hint = false;
        let latency = flight.reply.at.elapsed();
        let len = flight.payload.len();
        let answer = match result {
            Ok(Sent::Accepted(n)) if n == len => Ok(DatagramSent { len, latency }),
            Ok(Sent::Accepted(n)) if n < len => Err(DatagramError::Partial { sent: n, len }),
            Ok(Sent::Accepted(n)) => Err(DatagramError::Transport(TransportError::OverAccepted {
                accepted: n,
                offered: len,
            })),
            Ok(Sent::WouldBlock) => return,
            Err(e) if matches!(e, TransportError::Io(_)) => Err(DatagramError::Transport(e)),
            Err(e) => {
                // The handle or the transport is gone: nothing else can be sent.
                self.finish(flight.reply, Err(DatagramError::Transport(e.clone())));
                return self.fail(e);
            }
        };
        if let Err(error) = &answer {
            tracing::debug!(parent: &self.span, %error, "datagram not sent");
        }
        self.finish(flight.reply, answer);
        if self.life == Lifecycle::Closed {
            return;
        }
        self.sent_turn += 1;
        self.send = SendState::Active;
        self.drive(ctx);
    }

    /// A transport error that ends the socket: every queued datagram is answered with it
    /// and the handle closes.
    fn fail(&mut self, error: TransportError) {
        tracing::warn!(parent: &self.span, %error, "transport failed; closing");
        self.cause = Some(error);
        self.close_now();
    }

    /// Answers every queued datagram with `error`.
    fn fail_queued(&mut self, error: impl Fn() -> DatagramError) {
        while let Some(item) = self.queue.pop() {
            self.finish(item.token, Err(error()));
        }
    }

    fn close_now(&mut self) {
        if self.life == Lifecycle::Closed {
            return;
        }
        self.life = Lifecycle::Closed;
        self.read = ReadState::Done;
        let refusal = self.refusal();
        self.fail_queued(|| refusal.clone());
        if self.send != SendState::InFlight {
            // A datagram blocked on the transport is not going out now.
            if let Some(flight) = self.in_flight.take() {
                self.finish(flight.reply, Err(refusal));
            }
        }
        self.send = SendState::Idle;
        self.functions.close().do_send(CloseSocket {
            handle: self.handle,
        });
        tracing::debug!(parent: &self.span, cause = ?self.cause, "closed");
        self.event(DatagramEventKind::Closed {
            cause: self.cause.clone(),
        });
    }

    /// Reads datagrams until the transport would block, the turn's datagrams are spent
    /// (then it yields), or reading ends.
    fn drive_read(&mut self, ctx: &mut Context<Self>) {
        if self.read != ReadState::Idle || self.life == Lifecycle::Closed {
            return;
        }
        if self.read_turn >= self.config.max_per_turn {
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
            max_len: self.config.max_datagram_size,
        };
        let answer = self.functions.recvfrom().send(recv);
        ctx.spawn(
            answer
                .into_actor(self)
                .map(|result, act, ctx| act.absorb_received(flatten(result), ctx)),
        );
    }

    /// Takes in what a receive found.
    fn absorb_received(
        &mut self,
        result: Result<Received, TransportError>,
        ctx: &mut Context<Self>,
    ) {
        if self.life == Lifecycle::Closed {
            return;
        }
        self.read = ReadState::Idle;
        match result {
            Ok(Received::Data { bytes, from }) => self.deliver(bytes, from, false),
            Ok(Received::Truncated { bytes, from }) => self.deliver(bytes, from, true),
            Ok(Received::WouldBlock) => {
                self.read_turn = 0;
                if !std::mem::take(&mut self.read_ready_hint) {
                    self.read = ReadState::Blocked;
                    return;
                }
            }
            Ok(Received::Eof) => {
                // Datagram transports have no end of stream; one that says so is done.
                tracing::debug!(parent: &self.span, "transport ended reading");
                self.read = ReadState::Done;
                return;
            }
            // One failed receive (an ICMP error reported on a connected UDP socket, say)
            // does not end the socket; a run of them with no datagram between is an
            // error that will not clear, and does.
            Err(e) if matches!(e, TransportError::Io(_)) && self.read_errors < MAX_READ_ERRORS => {
                tracing::debug!(parent: &self.span, error = %e, "receive failed");
                self.read_ready_hint = false;
                self.read_turn += 1;
                self.read_errors += 1;
                self.event(DatagramEventKind::ReadFailed(e));
            }
            Err(e) => {
                self.read = ReadState::Done;
                self.event(DatagramEventKind::ReadFailed(e.clone()));
                return self.fail(e);
            }
        }
        self.drive_read(ctx);
    }

    fn deliver(&mut self, bytes: bytes::Bytes, from: Option<Address>, truncated: bool) {
        if self.subscriber.as_ref().is_some_and(|s| !s.connected()) {
            // Nobody would get what is received: stop receiving.
            tracing::warn!(parent: &self.span, "subscriber gone; receiving stops");
            self.read = ReadState::Done;
            return;
        }
        self.read_ready_hint = false;
        self.read_errors = 0;
        self.read_turn += 1;
        self.stats.received += 1;
        self.stats.truncated += u64::from(truncated);
        self.stats.bytes_received += bytes.len() as u64;
        if truncated {
            tracing::debug!(parent: &self.span, kept = bytes.len(), "datagram truncated");
        }
        self.event(DatagramEventKind::Received {
            bytes,
            from,
            truncated,
        });
    }
}

impl Actor for DatagramSocket {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::debug!(parent: &self.span, handle = %self.handle, "datagram socket started");
        if self.subscriber.is_some() {
            self.read = ReadState::Idle;
            self.drive_read(ctx);
        }
    }

    /// Nobody holds the socket's address any more: queued datagrams leave first, then
    /// the handle closes.
    fn stopping(&mut self, ctx: &mut Context<Self>) -> Running {
        let busy = !self.queue.is_empty() || self.in_flight.is_some();
        if self.life == Lifecycle::Open && busy {
            <Self as Handler<Close>>::handle(self, Close::Graceful, ctx);
        }
        if self.life != Lifecycle::Closed && busy {
            return Running::Continue;
        }
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.close_now();
        // A datagram still out will never be answered to this actor.
        if let Some(flight) = self.in_flight.take() {
            self.finish(flight.reply, Err(DatagramError::Lost));
        }
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
        return Err(TransportError::Io(Arc::new(io::Error::new(
            io::ErrorKind::InvalidInput,
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
    type Result = DatagramResponse;

    fn handle(&mut self, msg: SendDatagram, ctx: &mut Context<Self>) -> DatagramResponse {
        let tag = msg.tag;
        let slot = Arc::new(Mutex::new(Slot::Empty));
        let reply = Reply {
            slot: slot.clone(),
            tag,
            at: Instant::now(),
        };
        self.enqueue(msg, reply, ctx);
        DatagramResponse { slot, tag }
    }
}

impl Handler<ReportFailure> for DatagramSocket {
    type Result = ();

    fn handle(&mut self, msg: ReportFailure, _: &mut Context<Self>) {
        tracing::debug!(parent: &self.span, error = %msg.error, "datagram failed");
        self.event(DatagramEventKind::SendFailed {
            tag: msg.tag,
            error: msg.error,
        });
    }
}

impl Handler<Flush> for DatagramSocket {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        if matches!(self.send, SendState::Requested | SendState::Idle) {
            self.send = SendState::Active;
            self.sent_turn = 0;
            self.drive(ctx);
        }
    }
}

impl Handler<Ready> for DatagramSocket {
    type Result = ();

    fn handle(&mut self, msg: Ready, ctx: &mut Context<Self>) {
        if msg.handle != self.handle {
            return;
        }
        // A notice can overtake the would-block answer it belongs to: remember it.
        match msg.readiness {
            Readiness::Writable if self.send == SendState::Blocked => self.offer(ctx),
            Readiness::Writable => self.write_ready_hint = true,
            Readiness::Readable if self.read == ReadState::Blocked => {
                self.read = ReadState::Idle;
                self.drive_read(ctx);
            }
            Readiness::Readable => self.read_ready_hint = true,
        }
    }
}

impl Handler<Close> for DatagramSocket {
    type Result = ();

    fn handle(&mut self, msg: Close, ctx: &mut Context<Self>) {
        match msg {
            Close::Abort => {
                if self.life == Lifecycle::Closed {
                    return;
                }
                self.aborted = true;
                self.fail_queued(|| DatagramError::Aborted);
                if self.send != SendState::InFlight {
                    if let Some(flight) = self.in_flight.take() {
                        self.finish(flight.reply, Err(DatagramError::Aborted));
                    }
                }
                self.close_now();
            }
            Close::Graceful => {
                if self.life != Lifecycle::Open {
                    return;
                }
                self.life = Lifecycle::Draining;
                if matches!(self.send, SendState::Idle | SendState::Requested) {
                    self.send = SendState::Active;
                    self.drive(ctx);
                }
            }
        }
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
            open: self.life == Lifecycle::Open,
        })
    }
}

impl Handler<GetDatagramStats> for DatagramSocket {
    type Result = MessageResult<GetDatagramStats>;

    fn handle(&mut self, _: GetDatagramStats, _: &mut Context<Self>) -> Self::Result {
        let mut stats = self.stats;
        stats.queued = self.queue.len() as u64;
        MessageResult(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(len: usize) -> Queued<usize> {
        Queued {
            payload: vec![0u8; len].into(),
            to: None,
            token: len,
        }
    }

    #[test]
    fn the_queue_refuses_past_its_datagram_count() {
        let mut q = DatagramQueue::new(2, 1 << 20);
        assert!(q.push(item(1)).is_ok());
        assert!(q.push(item(2)).is_ok());
        let refused = q.push(item(3)).expect_err("full");
        assert_eq!(refused.token, 3);
        assert_eq!(refused.payload.len(), 3, "the payload comes back");
        assert_eq!(q.pop().map(|i| i.token), Some(1));
        assert!(q.push(item(4)).is_ok(), "room again");
    }

    #[test]
    fn the_queue_refuses_past_its_bytes_but_takes_any_one_datagram() {
        let mut q = DatagramQueue::new(100, 10);
        assert!(
            q.push(item(50)).is_ok(),
            "an empty queue takes any one datagram"
        );
        assert!(q.push(item(1)).is_err());
        assert_eq!(q.pop().map(|i| i.token), Some(50));
        assert_eq!(q.bytes, 0);
        assert!(q.push(item(6)).is_ok());
        assert!(q.push(item(4)).is_ok(), "exactly at the limit");
        assert!(q.push(item(1)).is_err());
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn the_queue_is_fifo_and_counts_bytes() {
        let mut q = DatagramQueue::new(10, 100);
        for len in [3, 1, 2] {
            assert!(q.push(item(len)).is_ok());
        }
        assert_eq!(q.bytes, 6);
        let order: Vec<usize> = std::iter::from_fn(|| q.pop().map(|i| i.token)).collect();
        assert_eq!(order, [3, 1, 2]);
        assert!(q.is_empty());
        assert_eq!(q.bytes, 0);
    }
}
