//! The [`Socket`] actor: one per socket, serializing writes like Samba's `tevent_queue`.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use actix::dev::{MessageResponse, OneshotSender};
use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, Recipient, Running,
    SpawnHandle, WrapFuture,
};
use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use super::flusher::{request_flush, Flusher};
use super::functions::{
    flatten, sendfile_unsupported, Adopt, AdoptedStream, ShareStream, SocketFunctions,
    SystemStream, SENDFILE,
};
use super::inbound::{Deframe, Deframer, ReadLimits, ReadPermit, ReadWindow};
use super::writer::{
    answer, notify_writability, report_failure, Core, Counters, Pushed, Reply, ReplyTo, Shared,
    Shut, SlotState, Wake, Writer,
};
use crate::batch::IoBatch;
use crate::error::{SocketError, TransportError, WriteError};
use crate::messages::flush::{Flush, PendingWrite};
use crate::messages::functions::{
    Address, CloseSocket, Connect, Handle, OpenSocket, Readiness, Ready, Received, RecvFrom, SendV,
    Sent, ShutdownWrite, SocketKind,
};
use crate::messages::interest::{AssignUserData, Interest, SocketInterest, UserData};
use crate::messages::read::{Frame, PauseReading, ResumeReading};
use crate::messages::socket::{
    CancelWrite, Close, GetInfo, GetStats, GetWriter, SocketEvent, SocketEventKind, SocketId,
    SocketInfo, SubscribeWritability, WritabilityChanged, Write, Written,
};
use crate::queue::{InPlaceTransmit, QueueConfig, WriteQueue};
use crate::registry::{InterestGroup, Membership, Registration, Registry, SocketState};

/// How a socket's queued writes reach the transport.
#[derive(Clone, Debug)]
pub enum FlushPolicy {
    /// No Flusher: a `Write` message goes to the transport at once, and the socket
    /// handles no other message until that `sendv` is answered (c-ares without a
    /// pending-write callback). Writes that queue up behind a would-block, or that a
    /// [`Writer`] pushes before the socket runs, still leave together.
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
    /// The read window: how much inbound data may be unacknowledged by the subscriber
    /// before the socket stops reading (read backpressure).
    pub read_limits: ReadLimits,
    /// Framed sockets: most undecoded bytes buffered without a whole frame; past it the
    /// stream is rejected with [`DecodeError::FrameTooLong`](crate::DecodeError::FrameTooLong).
    pub max_frame_bytes: usize,
    /// Framed sockets: close gracefully when the stream is rejected (the default). With
    /// `false` reading stops and the subscriber, told by
    /// [`SocketEventKind::DecodeFailed`], decides: it can still write (say, an error
    /// reply) and then send [`Close`].
    pub close_on_decode_error: bool,
    /// A lingering close. Once a graceful close has sent every queued write, a socket on
    /// the in-place system transport shuts down its sending half (the peer reads EOF).
    /// With a linger time, a socket that reads then reads on until the peer's EOF, for
    /// at most this long, before it closes the handle: what the peer sends meanwhile
    /// still reaches the subscriber, instead of arriving at a closed socket and resetting
    /// the connection (which can make the peer lose the last bytes we sent). The price:
    /// a peer that does not close its side (or does not read, so never sees our EOF)
    /// keeps the socket open for the whole linger time. Zero (the default) closes at
    /// once after the shutdown.
    pub close_linger: std::time::Duration,
    /// How long a graceful close may take to send the writes still queued. A peer that
    /// stops reading can hold a draining socket (and its queued bytes) forever; with a
    /// drain timeout, a graceful close that has not sent everything by then turns into
    /// an abort: the writes left are answered [`WriteError::Aborted`] with how far each
    /// got, and the handle closes. `None` (the default) waits as long as it takes.
    pub drain_timeout: Option<std::time::Duration>,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            queue: QueueConfig::default(),
            read_chunk: 64 * 1024,
            max_waiting_writes: 1024,
            read_limits: ReadLimits::default(),
            max_frame_bytes: 8 * 1024 * 1024,
            close_on_decode_error: true,
            close_linger: std::time::Duration::ZERO,
            drain_timeout: None,
        }
    }
}

/// The [`Write`] handler's response: the answer now, or a slot the reply channel is put
/// in, answered when the write finishes. Avoids spawning a task per write.
#[derive(Debug)]
pub struct WriteResponse(ResponseInner);

#[derive(Debug)]
enum ResponseInner {
    Now(Option<u64>, Result<Written, WriteError>),
    Later(Option<u64>, Arc<Mutex<SlotState>>),
}

impl MessageResponse<Socket, Write> for WriteResponse {
    fn handle(
        self,
        ctx: &mut Context<Socket>,
        tx: Option<OneshotSender<Result<Written, WriteError>>>,
    ) {
        match self.0 {
            ResponseInner::Later(tag, slot) => {
                let mut state = slot.lock().unwrap_or_else(PoisonError::into_inner);
                match std::mem::take(&mut *state) {
                    SlotState::Answered(result) => {
                        drop(state);
                        match (tx, result) {
                            (Some(tx), result) => {
                                let _ = tx.send(result);
                            }
                            (None, Ok(_)) => {}
                            (None, Err(error)) => ctx.notify(ReportFailure { tag, error }),
                        }
                    }
                    _ => *state = SlotState::Waiting(tx),
                }
            }
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
    /// Paused, or the read window is full: waiting for a permit or `ResumeReading`.
    Held,
    InFlight,
    Yielding,
    Blocked,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Open,
    Draining,
    /// Drained and the sending half shut down: reading until the peer's EOF (or the
    /// linger time) before closing.
    Lingering,
    Closed,
}

pub(crate) static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One socket as an actor.
///
/// Producers send it [`Write`]s (or write through a [`Writer`] handle); it keeps them in a
/// [`WriteQueue`] and hands the transport ([`SocketFunctions`]) vectored writes, one at a
/// time, so writes leave in FIFO order and never interleave, however the transport
/// answers. Every write is answered exactly once. Inbound data goes to the subscriber as
/// [`SocketEvent`]s.
///
/// Start one with [`Socket::builder`].
///
/// Once closed (by [`Close`], or by a transport error) the handle is closed, the
/// subscriber gets [`SocketEventKind::Closed`], and every later write is answered with a
/// typed error ([`WriteError::Closed`], or [`WriteError::Transport`] carrying the error
/// that closed it). A socket actor stops when its last address is dropped and it has
/// nothing under way (its transport holds only a weak recipient); an open one drains its
/// queued writes and closes first.
#[derive(Debug)]
pub struct Socket {
    core: Arc<Core>,
    handle: Handle,
    peer: Option<Address>,
    functions: SocketFunctions,
    /// From [`SocketConfig`]; the queue limits live in the queue.
    read_chunk: u32,
    max_waiting_writes: u32,
    max_bytes_per_turn: u32,
    /// [`SocketConfig::close_linger`], in milliseconds.
    linger_ms: u32,
    waiting: VecDeque<(Write, Reply)>,
    /// The Flusher to ask (deferred policy), or `None` (immediate).
    flusher: Option<Arc<Recipient<PendingWrite>>>,
    flush: FlushState,
    write_ready_hint: bool,
    turn_bytes: usize,
    read: ReadState,
    read_ready_hint: bool,
    read_turn: usize,
    life: Lifecycle,
    end_after_flight: bool,
    /// The stream, when `sendv`/`recvfrom` are the system ones and called in place.
    stream: Option<Arc<SystemStream>>,
    direct_write: bool,
    /// File ranges go out with `sendfile` (in place, on an OS that has it, until a file
    /// says it cannot).
    sendfile: bool,
    direct_read: bool,
    /// Boxed: idle sockets (most of them) hold only the pointer.
    read_buf: Option<Box<BytesMut>>,
    read_size: u32,
    write_wait: Option<SpawnHandle>,
    read_wait: Option<SpawnHandle>,
    /// Met a would-block since the queue was last empty: the OUT of the interest.
    out_waiting: bool,
    /// Told to stop reading ([`PauseReading`]).
    paused: bool,
    /// Interest subscriber, user data and registry entry; boxed, as most sockets have
    /// none of them (and the actor's size decides its task's allocation class).
    watch: Option<Box<Watch>>,
}

/// A socket's optional extras: what [`Socket::update_interest`] needs, and its entry in a
/// registry (removed when dropped, with the actor).
#[derive(Debug, Default)]
struct Watch {
    membership: Option<Membership>,
    user_data: Option<UserData>,
    last: Option<Interest>,
    registration: Option<Registration>,
    /// Framed sockets: the decoder and its buffer.
    deframer: Option<Box<dyn Deframe>>,
    /// [`SocketConfig::close_on_decode_error`].
    close_on_decode_error: bool,
    /// [`SocketConfig::drain_timeout`]. Kept here, with the other extras, rather than in
    /// the socket: four more bytes there made every idle socket 125 bytes larger (the
    /// actor crossed an allocation size).
    drain_timeout: Option<std::time::Duration>,
    /// The drain timeout's timer while a graceful close drains: cancelled when the
    /// drain ends, so it does not keep a closed actor alive.
    drain_timer: Option<SpawnHandle>,
}

/// Configures and starts a [`Socket`].
#[derive(Debug, Default)]
pub struct SocketBuilder {
    functions: Option<SocketFunctions>,
    config: SocketConfig,
    policy: Option<FlushPolicy>,
    subscriber: Option<Recipient<SocketEvent>>,
    writability: Vec<Recipient<WritabilityChanged>>,
    interest: Option<InterestGroup>,
    user_data: Option<UserData>,
    connect_timeout: Option<std::time::Duration>,
    registry: Option<Registry>,
    deframer: Option<Box<dyn Deframe>>,
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

    /// Who hears what the socket waits for ([`SocketInterest`]), only when it changes
    /// (libcurl's socket callback).
    /// A refused notification aborts this socket: it is a group of one.
    pub fn interest_subscriber(self, subscriber: Recipient<SocketInterest>) -> Self {
        self.interest_group(&InterestGroup::new(subscriber))
    }

    /// Like [`interest_subscriber`](Self::interest_subscriber), sharing the group's
    /// subscriber: a refused notification aborts every socket of the group (libcurl's
    /// rule for the transfers of a multi handle).
    pub fn interest_group(mut self, group: &InterestGroup) -> Self {
        self.interest = Some(group.clone());
        self
    }

    /// Data handed back with every [`SocketInterest`] (libcurl's `curl_multi_assign`);
    /// can be changed later with [`AssignUserData`].
    pub fn user_data(mut self, data: UserData) -> Self {
        self.user_data = Some(data);
        self
    }

    /// Decodes the inbound byte stream with `decoder` (any tokio-util
    /// [`Decoder`], e.g. `LinesCodec`) and sends each whole
    /// frame to `frames` as a [`Frame`], in stream order, instead of raw
    /// [`SocketEventKind::Received`] chunks. Each frame holds a [`ReadPermit`] in the
    /// read window. A decoder error, or more than [`SocketConfig::max_frame_bytes`]
    /// buffered without a whole frame, ends reading: the events subscriber (if any) gets
    /// [`SocketEventKind::DecodeFailed`] and the socket closes gracefully. At the peer's
    /// EOF the decoder's `decode_eof` gets the rest.
    pub fn framed<D>(mut self, decoder: D, frames: Recipient<Frame<D::Item>>) -> Self
    where
        D: Decoder + 'static,
        D::Item: Send + 'static,
        D::Error: std::error::Error + Send + Sync + 'static,
    {
        self.deframer = Some(Box::new(Deframer::new(decoder, frames, usize::MAX)));
        self
    }

    /// Registers the socket in `registry` (removed again when its actor ends).
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Gives up a connect that has not succeeded after `timeout` (tokio time), with
    /// [`SocketError::TimedOut`]. Without it, the operating system's own timeout applies.
    pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.connect_timeout = Some(timeout);
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
        let ctx = Socket::context();
        let open = OpenSocket {
            family: addr.family(),
            kind: SocketKind::Stream,
            events: ctx.address().downgrade().recipient(),
        };
        let handle = flatten(functions.open().send(open).await).map_err(SocketError::Open)?;
        // Closes the handle unless the socket takes it: on a failed or timed-out connect,
        // and when the caller drops this future mid-way.
        let guard = CloseOnDrop {
            functions: &functions,
            handle: Some(handle),
        };
        let connect = Connect {
            handle,
            addr: addr.clone(),
        };
        let started = Instant::now();
        let attempt = functions.connect().send(connect);
        let result = match self.connect_timeout {
            Some(limit) => match tokio::time::timeout(limit, attempt).await {
                Ok(answer) => flatten(answer).map_err(|e| SocketError::from_connect(e, limit)),
                Err(_) => Err(SocketError::TimedOut(limit)),
            },
            None => {
                flatten(attempt.await).map_err(|e| SocketError::from_connect(e, started.elapsed()))
            }
        };
        result?;
        let stream = share_stream(&functions, handle).await;
        guard.disarm();
        let socket = self.build(functions, handle, Some(addr), stream, &ctx);
        Ok(ctx.run(socket))
    }

    /// Starts a socket on an already connected stream (TCP or Unix: from a listener's
    /// `accept`, a `UnixStream::pair`…), handing the stream to the system transport.
    pub async fn adopt(
        self,
        stream: impl Into<AdoptedStream>,
    ) -> Result<Addr<Socket>, SocketError> {
        let stream = stream.into();
        let functions = self
            .functions
            .clone()
            .unwrap_or_else(SocketFunctions::system);
        let Some(system) = functions.system_actor().cloned() else {
            return Err(SocketError::Open(TransportError::Unsupported(
                "adopting a stream needs the system transport",
            )));
        };
        let peer = stream.peer();
        let ctx = Socket::context();
        let adopt = Adopt {
            stream,
            events: ctx.address().downgrade().recipient(),
        };
        let handle = flatten(system.send(adopt).await).map_err(SocketError::Open)?;
        let stream = share_stream(&functions, handle).await;
        let socket = self.build(functions, handle, peer, stream, &ctx);
        Ok(ctx.run(socket))
    }

    /// Starts a socket on a handle its transport has already connected (an accepted
    /// connection, whose `Ready` notices already go to `ctx`), on the current arbiter.
    /// Uses the builder's own transport if it has one, else `functions`.
    pub(crate) async fn start_connected(
        self,
        functions: SocketFunctions,
        handle: Handle,
        peer: Address,
        ctx: Context<Socket>,
    ) -> (Addr<Socket>, SocketId) {
        let functions = self.functions.clone().unwrap_or(functions);
        let stream = share_stream(&functions, handle).await;
        let socket = self.build(functions, handle, Some(peer), stream, &ctx);
        let id = socket.core.id;
        (ctx.run(socket), id)
    }

    fn build(
        mut self,
        functions: SocketFunctions,
        handle: Handle,
        peer: Option<Address>,
        stream: Option<Arc<SystemStream>>,
        ctx: &Context<Socket>,
    ) -> Socket {
        let in_place = functions.in_place();
        self.config.queue = self.config.queue.sanitized();
        self.config.read_chunk = self.config.read_chunk.clamp(1, u32::MAX as usize);
        let id = SocketId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let peer_text = peer.as_ref().map(|p| p.to_string()).unwrap_or_default();
        let flusher = match self.policy {
            None => Some(Flusher::current_recipient()),
            Some(FlushPolicy::Deferred(recipient)) => Some(Arc::new(recipient)),
            Some(FlushPolicy::Immediate) => None,
        };
        let wake = Wake {
            flusher: flusher.clone(),
            socket: ctx.address().recipient::<Flush>().downgrade(),
        };
        let shared = Shared {
            queue: WriteQueue::new(self.config.queue),
            flushing: false,
            shut: None,
            stats: Counters::default(),
            writability: self.writability,
        };
        let span = tracing::debug_span!("socket", id = id.0, peer = %peer_text);
        let reads = ReadWindow::new(self.config.read_limits);
        let core = Arc::new(Core::new(id, wake, self.subscriber, span, reads, shared));
        if let Some(deframer) = self.deframer.as_deref_mut() {
            deframer.set_limit(self.config.max_frame_bytes);
        }
        let registration = self.registry.as_ref().map(|r| {
            r.insert(
                core.clone(),
                ctx.address().downgrade(),
                peer.clone(),
                self.user_data.clone(),
            )
        });
        let membership = self
            .interest
            .as_ref()
            .map(|g| g.join(id, ctx.address().recipient::<Close>().downgrade()));
        let extras = membership.is_some()
            || self.user_data.is_some()
            || registration.is_some()
            || self.deframer.is_some()
            || self.config.drain_timeout.is_some();
        let watch = extras.then(|| {
            Box::new(Watch {
                membership,
                user_data: self.user_data,
                last: None,
                registration,
                deframer: self.deframer,
                close_on_decode_error: self.config.close_on_decode_error,
                drain_timeout: self.config.drain_timeout,
                drain_timer: None,
            })
        });
        Socket {
            core,
            handle,
            peer,
            functions,
            read_chunk: clamp_u32(self.config.read_chunk),
            max_waiting_writes: clamp_u32(self.config.max_waiting_writes),
            max_bytes_per_turn: clamp_u32(self.config.queue.max_bytes_per_turn),
            linger_ms: u32::try_from(self.config.close_linger.as_millis()).unwrap_or(u32::MAX),
            waiting: VecDeque::new(),
            flusher,
            flush: FlushState::Idle,
            write_ready_hint: false,
            turn_bytes: 0,
            read: ReadState::Off,
            read_ready_hint: false,
            read_turn: 0,
            life: Lifecycle::Open,
            end_after_flight: false,
            direct_write: stream.is_some() && in_place.0,
            sendfile: SENDFILE,
            direct_read: stream.is_some() && in_place.1,
            stream,
            read_buf: None,
            read_size: 4096.min(clamp_u32(self.config.read_chunk)),
            write_wait: None,
            read_wait: None,
            out_waiting: false,
            paused: false,
            watch,
        }
    }
}

/// Closes a handle on drop, unless disarmed: a connect that fails, times out or is
/// abandoned by its caller leaves no handle (nor descriptor) behind.
struct CloseOnDrop<'a> {
    functions: &'a SocketFunctions,
    handle: Option<Handle>,
}

impl CloseOnDrop<'_> {
    fn disarm(mut self) {
        self.handle = None;
    }
}

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.functions.close().do_send(CloseSocket { handle });
        }
    }
}

/// The stream behind a system handle, when the socket may call `sendv`/`recvfrom` in
/// place.
async fn share_stream(functions: &SocketFunctions, handle: Handle) -> Option<Arc<SystemStream>> {
    let (sendv, recvfrom) = functions.in_place();
    let system = functions.system_actor()?;
    if !(sendv || recvfrom) {
        return None;
    }
    let share = ShareStream {
        handle,
        all_in_place: sendv && recvfrom,
    };
    system.send(share).await.ok().flatten()
}

/// Limits kept per socket are `u32`: idle sockets are many, and nobody needs a 4 GiB read.
fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Socket {
    /// A builder for a socket.
    pub fn builder() -> SocketBuilder {
        SocketBuilder::default()
    }

    /// A context for a new socket actor. Its mailbox is unbounded: actix's `send` on a
    /// full mailbox (16 messages by default) parks the message inside its future until
    /// polled, so a later `do_send` could overtake it. Unbounded, every message is queued
    /// when sent, and the mailbox stays the socket's FIFO (the write queue bounds memory,
    /// with its watermarks).
    pub(crate) fn context() -> Context<Socket> {
        let mut ctx = Context::new();
        ctx.set_mailbox_capacity(0);
        ctx
    }

    fn event(&self, kind: SocketEventKind) {
        if let Some(s) = &self.core.subscriber {
            s.do_send(SocketEvent {
                socket: self.core.id,
                kind,
                permit: None,
            });
        }
    }

    /// Queues a write from the mailbox; a refused one comes back.
    fn enqueue(
        &mut self,
        msg: Write,
        reply: Reply,
        ctx: &mut Context<Self>,
    ) -> Result<(), Box<(Write, Reply, WriteError)>> {
        let (tag, wait) = (msg.tag, msg.wait_when_full);
        match self.core.push(msg.batch, reply, Instant::now()) {
            Ok(Pushed::Queued { wake: true }) => {
                self.start_flush(ctx);
                Ok(())
            }
            Ok(_) => Ok(()),
            Err((error, reply)) => {
                let batch = match error {
                    WriteError::QueueFull { payload, .. } => payload,
                    other => return Err(Box::new((Write::new(IoBatch::new()), reply, other))),
                };
                let write = Write {
                    batch,
                    tag,
                    wait_when_full: wait,
                };
                let error = {
                    let st = self.core.lock();
                    WriteError::QueueFull {
                        queued: st.queue.queued_bytes(),
                        high_watermark: st.queue.config().high_watermark,
                        payload: IoBatch::new(),
                    }
                };
                Err(Box::new((write, reply, error)))
            }
        }
    }

    /// The queue went from empty to non-empty with no flush under way, on the mailbox
    /// path: the immediate policy flushes now, the deferred one asks the Flusher.
    fn start_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush != FlushState::Idle {
            return;
        }
        let (id, span) = (self.core.id, &self.core.span);
        if request_flush(&mut self.flusher, id, || ctx.address().recipient(), span) {
            self.core.lock().stats.pending_writes += 1;
            self.flush = FlushState::Requested;
        } else {
            self.flush = FlushState::Active;
            self.drive(ctx);
        }
    }

    /// Hands the transport vectored writes until the queue is empty, the transport would
    /// block, the turn's byte budget is spent (then it yields), or (message transports)
    /// a `sendv` is out awaiting its answer.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        loop {
            if self.life == Lifecycle::Closed {
                return;
            }
            let mut guard = self.core.lock();
            let st = &mut *guard;
            if st.queue.in_flight() {
                return;
            }
            let max_turn = st.queue.config().max_bytes_per_turn;
            if self.turn_bytes >= max_turn {
                drop(guard);
                // Fairness: let other actors on this thread run before the next turn.
                self.turn_bytes = 0;
                self.flush = FlushState::Yielding;
                self.after_yield(ctx, |act, ctx| {
                    if act.flush == FlushState::Yielding {
                        act.flush = FlushState::Active;
                        act.drive(ctx);
                    }
                });
                return;
            }
            let budget = max_turn - self.turn_bytes;
            if let Some(stream) = self.stream.as_ref().filter(|_| self.direct_write) {
                // The system transport, called in place: `writev` on slices borrowed
                // from the queue, `sendfile` for file ranges.
                let mut slices = Vec::new();
                let polled = st
                    .queue
                    .poll_transmit_in_place(budget, self.sendfile, &mut slices);
                let transmit = match polled {
                    Ok(Some(transmit)) => transmit,
                    Ok(None) => {
                        st.flushing = false;
                        drop(slices);
                        drop(guard);
                        self.go_idle(ctx);
                        return;
                    }
                    Err(e) => {
                        drop(slices);
                        drop(guard);
                        self.fail(TransportError::File(Arc::new(e)), ctx);
                        return;
                    }
                };
                st.flushing = true;
                let (result, len, writes) = match transmit {
                    InPlaceTransmit::Vectored { len, writes, more } => {
                        st.stats.sendv_calls += 1;
                        let written = if more {
                            stream.try_write_vectored_more(&slices)
                        } else {
                            stream.try_write_vectored(&slices)
                        };
                        let result = match written {
                            Ok(0) => Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                            Ok(n) => Ok(Sent::Accepted(n)),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Sent::WouldBlock),
                            Err(e) => Err(e.into()),
                        };
                        (result, len, writes)
                    }
                    InPlaceTransmit::File {
                        file,
                        offset,
                        len,
                        writes,
                    } => {
                        let sent = stream.try_sendfile(file, offset, len);
                        if sent.as_ref().is_err_and(sendfile_unsupported) {
                            // This file cannot be sent from (some file systems): read
                            // it instead, from now on.
                            drop(slices);
                            st.queue.handle_failed();
                            drop(guard);
                            tracing::debug!(parent: &self.core.span,
                                "sendfile unsupported for this file; reading it instead");
                            self.sendfile = false;
                            continue;
                        }
                        st.stats.sendv_calls += 1;
                        st.stats.sendfile_calls += 1;
                        let result = match sent {
                            // The file ended before the range did: it shrank.
                            Ok(0) => Err(TransportError::File(Arc::new(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the file ended before the range did (it shrank after the range was made)",
                            )))),
                            Ok(n) => Ok(Sent::Accepted(n)),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                Ok(Sent::WouldBlock)
                            }
                            Err(e) => Err(e.into()),
                        };
                        (result, len, writes)
                    }
                };
                drop(slices);
                drop(guard);
                self.flush = FlushState::Active;
                tracing::trace!(parent: &self.core.span, bytes = len, writes, ?result, "writev");
                if !self.absorb_sent(result, ctx) {
                    return;
                }
                continue;
            }
            let transmit = match st.queue.poll_transmit(budget) {
                Ok(Some(transmit)) => transmit,
                Ok(None) => {
                    // Nothing left: writers must wake the socket for their next write.
                    st.flushing = false;
                    drop(guard);
                    self.go_idle(ctx);
                    return;
                }
                Err(e) => {
                    drop(guard);
                    self.fail(TransportError::File(Arc::new(e)), ctx);
                    return;
                }
            };
            st.flushing = true;
            st.stats.sendv_calls += 1;
            drop(guard);
            self.flush = FlushState::Active;
            tracing::trace!(parent: &self.core.span, bytes = transmit.len,
                segments = transmit.segments.len(), writes = transmit.writes, "sendv");
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
                .map(|res, act, ctx| {
                    if act.absorb_sent(flatten(res), ctx) {
                        act.drive(ctx);
                    }
                });
            if self.flusher.is_none() {
                // Immediate: nothing else is handled until the transport has answered.
                ctx.wait(fut);
            } else {
                ctx.spawn(fut);
            }
            return;
        }
    }

    /// Fairness: lets the other tasks of this thread run once, then goes on with `then`.
    fn after_yield(
        &mut self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
    ) {
        ctx.spawn(
            tokio::task::yield_now()
                .into_actor(self)
                .map(move |_, act, ctx| then(act, ctx)),
        );
    }

    fn registration(&self) -> Option<&Registration> {
        self.watch.as_deref().and_then(|w| w.registration.as_ref())
    }

    /// Tells the interest subscriber what the socket now waits for, if that changed.
    fn update_interest(&mut self, ctx: &mut Context<Self>) {
        let now = if self.life == Lifecycle::Closed {
            Interest::Remove
        } else {
            let reading = !self.paused
                && !matches!(
                    self.read,
                    ReadState::Off | ReadState::Done | ReadState::Held
                );
            Interest::from_directions(reading, self.out_waiting)
        };
        let core = &self.core;
        let Some(watch) = self.watch.as_deref_mut() else {
            return;
        };
        let Some(to) = watch.membership.as_ref().map(|m| m.group().subscriber()) else {
            return;
        };
        if watch.last == Some(now) || watch.last == Some(Interest::Remove) {
            return;
        }
        watch.last = Some(now);
        tracing::trace!(parent: &core.span, interest = ?now, "interest changed");
        let note = SocketInterest {
            socket: core.id,
            interest: now,
            user_data: watch.user_data.clone(),
        };
        if now == Interest::Remove {
            to.do_send(note);
            return;
        }
        // libcurl's rule: a callback that reports an error aborts the transfer.
        ctx.spawn(to.send(note).into_actor(self).map(|answer, act, ctx| {
            if let Ok(Err(refused)) = answer {
                tracing::warn!(parent: &act.core.span, %refused, "interest refused; aborting the group");
                <Self as Handler<Close>>::handle(act, Close::Abort, ctx);
                if let Some(m) = act.watch.as_deref().and_then(|w| w.membership.as_ref()) {
                    m.group().abort_all();
                }
            }
        }));
    }

    fn go_idle(&mut self, ctx: &mut Context<Self>) {
        self.flush = FlushState::Idle;
        self.turn_bytes = 0;
        self.out_waiting = false;
        self.update_interest(ctx);
        self.maybe_finish_drain(ctx);
    }

    /// Takes in the transport's answer to a transmit. `true`: drive on.
    fn absorb_sent(
        &mut self,
        result: Result<Sent, TransportError>,
        ctx: &mut Context<Self>,
    ) -> bool {
        if self.life == Lifecycle::Closed {
            self.end_in_flight(result);
            return false;
        }
        match result {
            Ok(Sent::Accepted(n)) => {
                // A writable notice that came meanwhile belonged to an older block.
                self.write_ready_hint = false;
                let core = &*self.core;
                let mut guard = core.lock();
                let st = &mut *guard;
                let stats = &mut st.stats;
                let handled = st
                    .queue
                    .handle_sent(n, Instant::now(), |r, res| answer(core, stats, r, res));
                if let Err(e) = handled {
                    drop(guard);
                    self.fail(e, ctx);
                    return false;
                }
                st.stats.bytes_sent += n as u64;
                drop(guard);
                self.turn_bytes += n;
                self.admit_waiting(ctx);
                self.publish_writability();
                true
            }
            Ok(Sent::WouldBlock) => {
                let queued = {
                    let mut st = self.core.lock();
                    st.queue.handle_would_block();
                    st.stats.would_blocks += 1;
                    st.queue.queued_bytes()
                };
                self.turn_bytes = 0;
                tracing::debug!(parent: &self.core.span, queued, "would block");
                self.out_waiting = true;
                self.update_interest(ctx);
                if self.direct_write {
                    self.flush = FlushState::Blocked;
                    self.arm_in_place(Readiness::Writable, ctx);
                    false
                } else if std::mem::take(&mut self.write_ready_hint) {
                    // Its writable notice already came.
                    self.flush = FlushState::Active;
                    true
                } else {
                    self.flush = FlushState::Blocked;
                    false
                }
            }
            Err(e) => {
                self.core.lock().queue.handle_failed();
                self.fail(e, ctx);
                false
            }
        }
    }

    /// In-place transport: wait on the reactor for the stream to become ready, then go on
    /// as if the transport had sent [`Ready`].
    fn arm_in_place(&mut self, readiness: Readiness, ctx: &mut Context<Self>) {
        let Some(stream) = self.stream.clone() else {
            return;
        };
        let slot = match readiness {
            Readiness::Writable => &mut self.write_wait,
            Readiness::Readable => &mut self.read_wait,
        };
        if slot.is_some() {
            return;
        }
        let handle = self.handle;
        // `poll_*_ready` keeps the waker in the stream's own readiness slot (only this
        // socket ever waits on it), so an armed idle socket holds no waiter node. An error
        // here surfaces on the retry.
        let wait = ReadinessWait { stream, readiness };
        let spawned = ctx.spawn(wait.map(move |woke, act, ctx| {
            match readiness {
                Readiness::Writable => act.write_wait = None,
                Readiness::Readable => act.read_wait = None,
            }
            match woke {
                Woke::Ready => act.on_ready(Ready { handle, readiness }, ctx),
                Woke::Orphaned => act.orphaned(readiness, ctx),
            }
        }));
        match readiness {
            Readiness::Writable => self.write_wait = Some(spawned),
            Readiness::Readable => self.read_wait = Some(spawned),
        }
    }

    /// The transport says the handle can make progress again.
    fn on_ready(&mut self, msg: Ready, ctx: &mut Context<Self>) {
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

    /// Every address of the socket was dropped while it waited on the reactor. actix
    /// keeps an actor with spawned futures alive, so the wait itself notices (see
    /// `ReadinessWait`) and the socket closes gracefully: reading stops, queued writes
    /// drain (their write wait is armed again and no longer watches for this), then the
    /// handle closes and, with nothing left under way, the actor stops.
    fn orphaned(&mut self, readiness: Readiness, ctx: &mut Context<Self>) {
        tracing::debug!(parent: &self.core.span, "every address dropped; closing gracefully");
        self.read = ReadState::Done;
        self.drop_read_buffers();
        if let Some(wait) = self.read_wait.take() {
            ctx.cancel_future(wait);
        }
        <Self as Handler<Close>>::handle(self, Close::Graceful, ctx);
        if readiness == Readiness::Writable && self.flush == FlushState::Blocked {
            self.arm_in_place(Readiness::Writable, ctx);
        }
        self.update_interest(ctx);
    }

    /// Tells writability subscribers about a watermark crossing the socket itself caused.
    fn publish_writability(&mut self) {
        let mut guard = self.core.lock();
        let st = &mut *guard;
        if let Some(writable) = st.queue.take_writability_change() {
            if st.shut.is_none() {
                tracing::debug!(parent: &self.core.span, writable, "writability changed");
                // Under the lock, as a writer's push does: the notices leave in the order
                // of the changes, whichever thread made them.
                st.writability.retain(|r| r.connected());
                notify_writability(self.core.id, &st.writability, writable);
            }
        }
    }

    /// Moves writes that waited for room into the queue, while it is writable.
    fn admit_waiting(&mut self, ctx: &mut Context<Self>) {
        while self.core.lock().queue.is_writable() {
            let Some((write, reply)) = self.waiting.pop_front() else {
                break;
            };
            match self.enqueue(write, reply, ctx).map_err(|e| *e) {
                Ok(()) => {}
                Err((write, reply, WriteError::QueueFull { .. })) => {
                    self.waiting.push_front((write, reply));
                    break;
                }
                Err((_, reply, error)) => answer_now(&self.core, reply, Err(error)),
            }
        }
    }

    /// A transport error: every write is answered with it and the handle closes.
    fn fail(&mut self, error: TransportError, ctx: &mut Context<Self>) {
        tracing::warn!(parent: &self.core.span, %error, "transport failed; closing");
        self.shut_and_fail_writes(Shut::Failed(error));
        self.close_now(ctx);
    }

    /// Stops taking writes and ends every queued and waiting write with the error `shut`
    /// gives. Writes in a `sendv` still awaiting its answer are ended when the answer
    /// comes, so their errors say truly how many bytes went out.
    fn shut_and_fail_writes(&mut self, shut: Shut) {
        let core = &*self.core;
        let mut guard = core.lock();
        let st = &mut *guard;
        if st.shut.is_none() || !matches!(shut, Shut::Closed) {
            st.shut = Some(shut);
        }
        let Some(shut) = st.shut.clone() else {
            return;
        };
        let stats = &mut st.stats;
        let error = |sent, len| shut.error(sent, len);
        for (write, reply) in self.waiting.drain(..) {
            answer(core, stats, reply, Err(error(0, write.batch.len())));
        }
        if st.queue.in_flight() {
            st.queue
                .fail_behind_in_flight(error, |r, res| answer(core, stats, r, res));
            self.end_after_flight = true;
        } else {
            st.queue
                .fail_all(error, |r, res| answer(core, stats, r, res));
        }
        // Watermark changes of a dying queue are not news.
        let _ = st.queue.take_writability_change();
    }

    /// The answer to a `sendv` that was in flight when the socket shut: account for what
    /// it sent, then end the writes it carried.
    fn end_in_flight(&mut self, result: Result<Sent, TransportError>) {
        if !std::mem::take(&mut self.end_after_flight) {
            return;
        }
        let core = &*self.core;
        let mut guard = core.lock();
        let st = &mut *guard;
        let stats = &mut st.stats;
        match result {
            Ok(Sent::Accepted(n)) => {
                if st
                    .queue
                    .handle_sent(n, Instant::now(), |r, res| answer(core, stats, r, res))
                    .is_ok()
                {
                    stats.bytes_sent += n as u64;
                }
            }
            Ok(Sent::WouldBlock) => st.queue.handle_would_block(),
            Err(_) => {}
        }
        let shut = st.shut.clone().unwrap_or(Shut::Closed);
        st.queue.fail_all(
            |sent, len| shut.error(sent, len),
            |r, res| answer(core, stats, r, res),
        );
        let _ = st.queue.take_writability_change();
    }

    fn maybe_finish_drain(&mut self, ctx: &mut Context<Self>) {
        if self.life == Lifecycle::Draining
            && self.core.lock().queue.is_empty()
            && self.waiting.is_empty()
        {
            self.linger_or_close(ctx);
        }
    }

    /// Everything queued has gone out: shut down the sending half (in place, or through
    /// the table's `shutdown` when it has one), then read on until the peer's EOF (at
    /// most `linger_ms`), or close now when there is nothing to wait for (not reading,
    /// no linger time, no way to shut down only the sending half).
    fn linger_or_close(&mut self, ctx: &mut Context<Self>) {
        self.cancel_drain_timer(ctx);
        let Some(stream) = self.stream.as_ref() else {
            let Some(shutdown) = self.functions.shutdown().cloned() else {
                return self.close_now(ctx);
            };
            // Lingering from now on, so the drain is not finished twice; a reply that
            // finds the socket closed meanwhile (an abort, the peer's EOF) is ignored.
            self.life = Lifecycle::Lingering;
            let asked = shutdown.send(ShutdownWrite {
                handle: self.handle,
            });
            ctx.spawn(asked.into_actor(self).map(|answer, act, ctx| {
                if act.life != Lifecycle::Lingering {
                    return;
                }
                match flatten(answer) {
                    Ok(()) => act.linger(ctx),
                    Err(error) => {
                        tracing::debug!(parent: &act.core.span, %error,
                            "shutdown of the sending half failed");
                        act.close_now(ctx);
                    }
                }
            }));
            return;
        };
        if let Err(error) = stream.shutdown_write() {
            tracing::debug!(parent: &self.core.span, %error, "shutdown of the sending half failed");
            return self.close_now(ctx);
        }
        self.linger(ctx);
    }

    /// The sending half is shut down: read on until the peer's EOF, for at most
    /// `linger_ms`, or close now when not reading or without a linger time.
    fn linger(&mut self, ctx: &mut Context<Self>) {
        let reading = !matches!(self.read, ReadState::Off | ReadState::Done);
        if !reading || self.linger_ms == 0 {
            return self.close_now(ctx);
        }
        tracing::debug!(parent: &self.core.span, linger_ms = self.linger_ms,
            "sending half shut down; reading until the peer's EOF");
        self.life = Lifecycle::Lingering;
        let linger = std::time::Duration::from_millis(u64::from(self.linger_ms));
        // The timer is kept in the write-wait slot, unused once the sending half is shut,
        // so that `close_now` cancels it with the other waits and the actor, with nothing
        // spawned left, can stop at once.
        if let Some(wait) = self.write_wait.take() {
            ctx.cancel_future(wait);
        }
        self.write_wait = Some(ctx.run_later(linger, |act, ctx| {
            act.write_wait = None;
            if act.life == Lifecycle::Lingering {
                tracing::debug!(parent: &act.core.span, "linger time over; closing");
                act.close_now(ctx);
            }
        }));
    }

    /// The drain is over (or the socket closes): its timeout no longer applies.
    fn cancel_drain_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.watch.as_deref_mut().and_then(|w| w.drain_timer.take()) {
            ctx.cancel_future(timer);
        }
    }

    fn close_now(&mut self, ctx: &mut Context<Self>) {
        if self.life == Lifecycle::Closed {
            return;
        }
        self.cancel_drain_timer(ctx);
        self.life = Lifecycle::Closed;
        self.read = ReadState::Done;
        if let Some(r) = self.registration() {
            r.set_state(SocketState::Closed);
        }
        // Let go of the stream: with the system transport's own reference dropped on
        // CloseSocket, the descriptor closes now.
        for wait in [self.write_wait.take(), self.read_wait.take()]
            .into_iter()
            .flatten()
        {
            ctx.cancel_future(wait);
        }
        self.stream = None;
        self.read_buf = None;
        let cause = {
            let mut st = self.core.lock();
            if st.shut.is_none() {
                st.shut = Some(Shut::Closed);
            }
            match &st.shut {
                Some(Shut::Failed(e)) => Some(e.clone()),
                _ => None,
            }
        };
        self.functions.close().do_send(CloseSocket {
            handle: self.handle,
        });
        tracing::debug!(parent: &self.core.span, cause = ?cause, "closed");
        self.event(SocketEventKind::Closed { cause });
        self.update_interest(ctx);
        // The actor lingers, answering later writes with a typed error (rather than
        // letting messages already in its mailbox be dropped unanswered), and stops
        // when its last address is dropped.
    }

    /// Reads until the transport would block, the peer's EOF, an error, the read window
    /// fills or reading is paused (then it holds), or the turn's byte budget is spent
    /// (then it yields).
    fn drive_read(&mut self, ctx: &mut Context<Self>) {
        loop {
            if self.read != ReadState::Idle || self.life == Lifecycle::Closed {
                return;
            }
            // Frames already buffered go out before anything more is read.
            if !self.deliver_frames(false, ctx) {
                return;
            }
            if self.paused || !self.core.reads.is_open() {
                // Backpressure: read nothing more until a permit is dropped (the last one
                // out wakes us with a `Flush`) or `ResumeReading`.
                if self.paused || self.core.reads.hold() {
                    self.read = ReadState::Held;
                    self.read_turn = 0;
                    self.drop_read_buffers();
                    let (deliveries, bytes) = self.core.reads.outstanding();
                    tracing::trace!(parent: &self.core.span, paused = self.paused, deliveries,
                        bytes, "reading held");
                    self.update_interest(ctx);
                    return;
                }
            }
            if self.read_turn >= self.max_bytes_per_turn as usize {
                self.read_turn = 0;
                self.read = ReadState::Yielding;
                self.after_yield(ctx, |act, ctx| {
                    if act.read == ReadState::Yielding {
                        act.read = ReadState::Idle;
                        act.drive_read(ctx);
                    }
                });
                return;
            }
            self.read = ReadState::InFlight;
            let Some(stream) = self.stream.as_ref().filter(|_| self.direct_read) else {
                let recv = RecvFrom {
                    handle: self.handle,
                    max_len: self.read_chunk as usize,
                };
                ctx.spawn(self.functions.recvfrom().send(recv).into_actor(self).map(
                    |res, act, ctx| {
                        let got = flatten(res).map(Got::from);
                        if act.absorb_received(got, ctx) {
                            act.drive_read(ctx);
                        }
                    },
                ));
                return;
            };
            // The system transport, called in place. A framed socket reads straight into
            // its decoder's buffer. Otherwise the buffer is allocated when the stream is
            // read (idle sockets hold none), starts small and doubles while reads fill
            // it, up to `read_chunk`; reads are split off it, not copied.
            let want = self.read_size as usize;
            let deframer = self
                .watch
                .as_deref_mut()
                .and_then(|w| w.deframer.as_deref_mut());
            let result = if let Some(deframer) = deframer {
                let buf = deframer.buffer();
                buf.reserve(want);
                let spare = buf.capacity() - buf.len();
                match stream.try_read_buf(buf) {
                    Ok(0) => Ok(Got::Eof),
                    Ok(n) => {
                        if n == spare {
                            self.read_size = (self.read_size * 2).min(self.read_chunk);
                        }
                        Ok(Got::Buffered(n))
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Got::WouldBlock),
                    Err(e) => Err(e.into()),
                }
            } else {
                let buf = self
                    .read_buf
                    .get_or_insert_with(|| Box::new(BytesMut::with_capacity(want)));
                let room = buf.capacity() - buf.len();
                if room == 0 || room < want / 2 {
                    **buf = BytesMut::with_capacity(want);
                }
                let spare = buf.capacity() - buf.len();
                match stream.try_read_buf(&mut **buf) {
                    Ok(0) => Ok(Got::Eof),
                    Ok(n) => {
                        if n == spare {
                            self.read_size = (self.read_size * 2).min(self.read_chunk);
                        }
                        Ok(Got::Chunk(buf.split_to(n).freeze()))
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Got::WouldBlock),
                    Err(e) => Err(e.into()),
                }
            };
            if !self.absorb_received(result, ctx) {
                return;
            }
        }
    }

    /// Takes in what a read found. `true`: read on.
    fn absorb_received(
        &mut self,
        result: Result<Got, TransportError>,
        ctx: &mut Context<Self>,
    ) -> bool {
        // Only the read that is out may change the read state: reading may have ended
        // (closed, orphaned) while a message-path `RecvFrom` was awaiting its answer.
        if self.life == Lifecycle::Closed || self.read != ReadState::InFlight {
            return false;
        }
        match result {
            Ok(Got::Chunk(bytes)) => {
                self.took_in(bytes.len());
                match self
                    .watch
                    .as_deref_mut()
                    .and_then(|w| w.deframer.as_deref_mut())
                {
                    // A message-path read for a framed socket: one copy into the decoder.
                    Some(deframer) => deframer.buffer().extend_from_slice(&bytes),
                    None => self.deliver(bytes, ctx),
                }
                true
            }
            Ok(Got::Buffered(n)) => {
                self.took_in(n);
                true
            }
            Ok(Got::WouldBlock) => {
                self.read_turn = 0;
                if self.direct_read {
                    self.read = ReadState::Blocked;
                    // Idle sockets keep no read buffer.
                    self.drop_read_buffers();
                    self.arm_in_place(Readiness::Readable, ctx);
                    false
                } else if std::mem::take(&mut self.read_ready_hint) {
                    self.read = ReadState::Idle;
                    true
                } else {
                    self.read = ReadState::Blocked;
                    false
                }
            }
            Ok(Got::Eof) => {
                self.read = ReadState::Done;
                self.read_buf = None;
                tracing::debug!(parent: &self.core.span, "peer closed its sending half");
                // The decoder gets the rest; the window does not hold back the last frames
                // (they are already in memory, bounded by the frame limit).
                if self.deliver_frames(true, ctx) {
                    self.event(SocketEventKind::Eof);
                    self.update_interest(ctx);
                }
                if self.life == Lifecycle::Lingering {
                    // The peer is done too: the close is complete.
                    self.close_now(ctx);
                }
                false
            }
            Err(e) => {
                self.read = ReadState::Done;
                self.event(SocketEventKind::ReadFailed(e.clone()));
                self.fail(e, ctx);
                false
            }
        }
    }

    /// Lets go of the read buffer, and of the decoder's when it holds nothing: a socket
    /// that is not reading right now keeps no buffer.
    fn drop_read_buffers(&mut self) {
        self.read_buf = None;
        if let Some(deframer) = self
            .watch
            .as_deref_mut()
            .and_then(|w| w.deframer.as_deref_mut())
        {
            let buf = deframer.buffer();
            if buf.is_empty() {
                *buf = BytesMut::new();
            }
        }
    }

    fn took_in(&mut self, n: usize) {
        self.read_ready_hint = false;
        self.core.lock().stats.bytes_received += n as u64;
        self.read_turn += n;
        self.read = ReadState::Idle;
    }

    /// Hands a raw chunk to the subscriber, with its place in the read window.
    fn deliver(&mut self, bytes: Bytes, ctx: &mut Context<Self>) {
        let Some(s) = &self.core.subscriber else {
            return;
        };
        if !s.connected() {
            self.subscriber_gone(ctx);
            return;
        }
        s.do_send(SocketEvent {
            socket: self.core.id,
            permit: Some(ReadPermit::take(&self.core, bytes.len())),
            kind: SocketEventKind::Received(bytes),
        });
    }

    /// Sends the frames that are whole in the decoder's buffer, while the read window
    /// has room (at `eof`, all of them). `false`: the stream was rejected and the socket
    /// is closing.
    fn deliver_frames(&mut self, eof: bool, ctx: &mut Context<Self>) -> bool {
        let core = &self.core;
        let Some(deframer) = self
            .watch
            .as_deref_mut()
            .and_then(|w| w.deframer.as_deref_mut())
        else {
            return true;
        };
        let failure = loop {
            if !eof && !core.reads.is_open() {
                return true;
            }
            if !deframer.connected() {
                self.subscriber_gone(ctx);
                return false;
            }
            match deframer.deliver_next(core, eof) {
                // A decoder that keeps returning frames without consuming anything at EOF
                // would never end: its last frame ends it.
                Ok(Some(0)) if eof => return true,
                Ok(Some(_)) => {}
                Ok(None) => return true,
                Err(e) => break e,
            }
        };
        tracing::warn!(parent: &self.core.span, error = %failure, "frame decoding failed; closing");
        self.read = ReadState::Done;
        self.event(SocketEventKind::DecodeFailed(failure));
        if self
            .watch
            .as_deref()
            .is_none_or(|w| w.close_on_decode_error)
        {
            <Self as Handler<Close>>::handle(self, Close::Graceful, ctx);
        }
        self.update_interest(ctx);
        false
    }

    /// The subscriber stopped: nobody would get what is read, so stop reading (the
    /// peer is held back by flow control; writing goes on).
    fn subscriber_gone(&mut self, ctx: &mut Context<Self>) {
        tracing::warn!(parent: &self.core.span, "subscriber gone; reading stops");
        self.read = ReadState::Done;
        self.read_buf = None;
        self.update_interest(ctx);
    }

    /// Reading was held for the window or a pause; go on if neither holds any more.
    fn resume_reading(&mut self, ctx: &mut Context<Self>) {
        if self.read == ReadState::Held && !self.paused {
            self.core.reads.unhold();
            self.read = ReadState::Idle;
            self.update_interest(ctx);
            self.drive_read(ctx);
        }
    }
}

/// A socket's own wait for its stream's readiness (in place). Besides readiness it
/// watches the actor's mailbox: actix keeps an actor with spawned futures running, so an
/// open socket waiting on the reactor would otherwise outlive its last address.
struct ReadinessWait {
    stream: Arc<SystemStream>,
    readiness: Readiness,
}

enum Woke {
    Ready,
    /// No address of the socket is left (checked only while it is open).
    Orphaned,
}

impl actix::ActorFuture<Socket> for ReadinessWait {
    type Output = Woke;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        act: &mut Socket,
        ctx: &mut Context<Socket>,
        task: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Woke> {
        // Dropping the last address wakes the actor's task, which polls this again.
        if act.life == Lifecycle::Open && !ctx.connected() {
            return std::task::Poll::Ready(Woke::Orphaned);
        }
        let ready = match self.readiness {
            Readiness::Writable => self.stream.poll_write_ready(task),
            Readiness::Readable => self.stream.poll_read_ready(task),
        };
        ready.map(|_| Woke::Ready)
    }
}

/// What a read brought in.
enum Got {
    /// Bytes, to deliver (or, framed, to copy into the decoder's buffer).
    Chunk(Bytes),
    /// This many bytes read straight into the decoder's buffer.
    Buffered(usize),
    Eof,
    WouldBlock,
}

impl From<Received> for Got {
    fn from(r: Received) -> Self {
        match r {
            // A stream has no datagram boundaries to truncate at: bytes are bytes.
            Received::Data { bytes, .. } | Received::Truncated { bytes, .. } => Got::Chunk(bytes),
            Received::Eof => Got::Eof,
            Received::WouldBlock => Got::WouldBlock,
        }
    }
}

/// Answers a write that never reached the queue.
fn answer_now(core: &Core, reply: Reply, result: Result<Written, WriteError>) {
    let mut st = core.lock();
    answer(core, &mut st.stats, reply, result);
}

impl Actor for Socket {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::debug!(parent: &self.core.span, handle = %self.handle, "socket started");
        let framed = self.watch.as_deref().is_some_and(|w| w.deframer.is_some());
        if self.core.subscriber.is_some() || framed {
            self.read = ReadState::Idle;
            self.drive_read(ctx);
        }
        self.update_interest(ctx);
    }

    /// Nobody holds the socket's address any more. With writes still queued, it closes
    /// gracefully first (the queue drains, then the handle closes) and only then stops.
    fn stopping(&mut self, ctx: &mut Context<Self>) -> Running {
        let queued = !self.core.lock().queue.is_empty() || !self.waiting.is_empty();
        if self.life != Lifecycle::Closed && queued {
            if self.life == Lifecycle::Open {
                <Self as Handler<Close>>::handle(self, Close::Graceful, ctx);
            }
            if self.life != Lifecycle::Closed {
                return Running::Continue;
            }
        }
        Running::Stop
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        if self.life != Lifecycle::Closed {
            self.shut_and_fail_writes(Shut::Closed);
            self.close_now(ctx);
        }
        // A sendv still out will never be answered to this actor: end its writes now.
        if self.end_after_flight {
            self.end_in_flight(Err(TransportError::Unavailable));
        }
    }
}

impl Handler<Write> for Socket {
    type Result = WriteResponse;

    fn handle(&mut self, msg: Write, ctx: &mut Context<Self>) -> WriteResponse {
        let tag = msg.tag;
        if msg.batch.is_empty() && self.waiting.is_empty() {
            let mut st = self.core.lock();
            if st.shut.is_none() && st.queue.is_empty() {
                // Nothing ahead of it and nothing to send: done now, in order.
                st.stats.writes += 1;
                st.stats.writes_completed += 1;
                return WriteResponse(ResponseInner::Now(tag, Ok(Written::default())));
            }
        }
        let slot = Arc::new(Mutex::new(SlotState::Empty));
        let reply = Reply {
            tag,
            to: ReplyTo::Slot(slot.clone()),
        };
        let refused = if self.waiting.is_empty() {
            self.enqueue(msg, reply, ctx).err().map(|e| *e)
        } else {
            // Writes already waiting for room go first: this one waits behind them (the
            // `QueueFull` below is only the marker for that), or is refused.
            let shut = self.core.lock().shut.clone();
            let error = match shut {
                Some(shut) => shut.refusal(msg.batch.len()),
                None => WriteError::QueueFull {
                    queued: 0,
                    high_watermark: 0,
                    payload: IoBatch::new(),
                },
            };
            Some((msg, reply, error))
        };
        let Some((msg, reply, error)) = refused else {
            return WriteResponse(ResponseInner::Later(tag, slot));
        };
        drop(reply);
        match error {
            WriteError::QueueFull { .. } => {
                if msg.wait_when_full && self.waiting.len() < self.max_waiting_writes as usize {
                    let reply = Reply {
                        tag,
                        to: ReplyTo::Slot(slot.clone()),
                    };
                    self.waiting.push_back((msg, reply));
                    return WriteResponse(ResponseInner::Later(tag, slot));
                }
                let (queued, high_watermark) = {
                    let mut st = self.core.lock();
                    st.stats.writes_failed += 1;
                    (st.queue.queued_bytes(), st.queue.config().high_watermark)
                };
                tracing::debug!(parent: &self.core.span, queued, "write refused: queue full");
                WriteResponse(ResponseInner::Now(
                    tag,
                    Err(WriteError::QueueFull {
                        queued,
                        high_watermark,
                        payload: msg.batch,
                    }),
                ))
            }
            other => {
                self.core.lock().stats.writes_failed += 1;
                WriteResponse(ResponseInner::Now(tag, Err(other)))
            }
        }
    }
}

impl Handler<ReportFailure> for Socket {
    type Result = ();

    fn handle(&mut self, msg: ReportFailure, _: &mut Context<Self>) {
        report_failure(&self.core, msg.tag, msg.error);
    }
}

impl Handler<Flush> for Socket {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        // Also the read window's wake-up: a dropped permit reopened it. That one only
        // resumes reading (a Flusher's `Flush` handled while the mark is set is taken
        // for it, and the permit's own `Flush`, right behind, then flushes).
        if self.core.reads.take_reopened() {
            self.resume_reading(ctx);
            return;
        }
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
        self.on_ready(msg, ctx);
    }
}

impl Handler<CancelWrite> for Socket {
    type Result = Option<IoBatch>;

    fn handle(&mut self, msg: CancelWrite, ctx: &mut Context<Self>) -> Option<IoBatch> {
        let cancelled = {
            let core = &*self.core;
            let mut guard = core.lock();
            let st = &mut *guard;
            let stats = &mut st.stats;
            st.queue.cancel(msg.tag, Instant::now(), |r, res| {
                answer(core, stats, r, res)
            })
        };
        let batch = match cancelled {
            Some(batch) => batch,
            None => {
                let index = self
                    .waiting
                    .iter()
                    .position(|(w, _)| w.tag == Some(msg.tag))?;
                let (write, reply) = self.waiting.remove(index)?;
                answer_now(&self.core, reply, Err(WriteError::Cancelled));
                write.batch
            }
        };
        self.admit_waiting(ctx);
        self.publish_writability();
        let drained = {
            let st = self.core.lock();
            st.queue.is_empty() && !st.queue.in_flight()
        };
        if drained && self.waiting.is_empty() && self.flush != FlushState::Idle {
            // The cancel took the last queued write while a flush was blocked (or asked
            // for): nothing is left to wait for.
            if self.flush == FlushState::Blocked {
                if let Some(wait) = self.write_wait.take() {
                    ctx.cancel_future(wait);
                }
            }
            self.go_idle(ctx);
        } else if self.flush == FlushState::Idle {
            self.maybe_finish_drain(ctx);
        }
        Some(batch)
    }
}

impl Handler<Close> for Socket {
    type Result = ();

    fn handle(&mut self, msg: Close, ctx: &mut Context<Self>) {
        match msg {
            Close::Abort => {
                if self.life == Lifecycle::Closed {
                    return;
                }
                self.shut_and_fail_writes(Shut::Aborted);
                self.close_now(ctx);
            }
            Close::Graceful => {
                if self.life != Lifecycle::Open {
                    return;
                }
                self.life = Lifecycle::Draining;
                if let Some(r) = self.registration() {
                    r.set_state(SocketState::Draining);
                }
                {
                    // Writes waiting for room are already in memory: queue them all, so
                    // the drain sends them too. Then refuse new ones.
                    let core = &*self.core;
                    let mut guard = core.lock();
                    let st = &mut *guard;
                    let stats = &mut st.stats;
                    for (write, reply) in self.waiting.drain(..) {
                        stats.writes += 1;
                        st.queue.push_forced(
                            write.batch,
                            write.tag,
                            reply,
                            Instant::now(),
                            |r, res| answer(core, stats, r, res),
                        );
                    }
                    let _ = st.queue.take_writability_change();
                    st.shut = Some(Shut::Closed);
                }
                if let Some(limit) = self.watch.as_deref().and_then(|w| w.drain_timeout) {
                    let timer = ctx.run_later(limit, move |act, ctx| {
                        if let Some(w) = act.watch.as_deref_mut() {
                            w.drain_timer = None;
                        }
                        if act.life == Lifecycle::Draining {
                            let queued = act.core.lock().queue.queued_bytes();
                            tracing::debug!(parent: &act.core.span, ?limit, queued,
                                "graceful close did not drain in time; aborting");
                            <Self as Handler<Close>>::handle(act, Close::Abort, ctx);
                        }
                    });
                    if let Some(w) = self.watch.as_deref_mut() {
                        w.drain_timer = Some(timer);
                    }
                }
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
        let st = self.core.lock();
        let mut stats = st.stats.stats(&st.queue, self.waiting.len());
        let (deliveries, bytes) = self.core.reads.outstanding();
        stats.unacked_deliveries = u64::from(deliveries);
        stats.unacked_bytes = bytes as u64;
        actix::MessageResult(stats)
    }
}

impl Handler<SubscribeWritability> for Socket {
    type Result = ();

    fn handle(&mut self, msg: SubscribeWritability, _: &mut Context<Self>) {
        self.core.lock().writability.push(msg.0);
    }
}

impl Handler<GetInfo> for Socket {
    type Result = actix::MessageResult<GetInfo>;

    fn handle(&mut self, _: GetInfo, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(SocketInfo {
            id: self.core.id,
            peer: self.peer.clone(),
            handle: self.handle,
            open: self.life == Lifecycle::Open,
        })
    }
}

impl Handler<AssignUserData> for Socket {
    type Result = ();

    fn handle(&mut self, msg: AssignUserData, _: &mut Context<Self>) {
        let watch = self.watch.get_or_insert_with(Box::default);
        if let Some(r) = &watch.registration {
            r.set_user_data(msg.0.clone());
        }
        watch.user_data = msg.0;
    }
}

impl Handler<GetWriter> for Socket {
    type Result = actix::MessageResult<GetWriter>;

    fn handle(&mut self, _: GetWriter, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(Writer::new(self.core.clone()))
    }
}

impl Handler<PauseReading> for Socket {
    type Result = ();

    fn handle(&mut self, _: PauseReading, ctx: &mut Context<Self>) {
        if !self.paused {
            self.paused = true;
            self.update_interest(ctx);
        }
    }
}

impl Handler<ResumeReading> for Socket {
    type Result = ();

    fn handle(&mut self, _: ResumeReading, ctx: &mut Context<Self>) {
        if self.paused {
            self.paused = false;
            self.update_interest(ctx);
            self.resume_reading(ctx);
        }
    }
}
