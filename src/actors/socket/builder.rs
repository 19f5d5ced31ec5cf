//! [`SocketBuilder`]: how a [`Socket`] is configured, connected (or adopted) and started.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, AsyncContext, Context, Handler, Recipient};
use tokio_util::codec::Decoder;

use super::framed::{Forward, FrameStream, FramedWriter};
use super::io::{StreamIo, TableIo};
use super::layered::LayeredIo;
use super::registry::{InterestGroup, Registry};
use super::{GetWriter, Socket, Watch, Writer, NEXT_ID};
use crate::actors::flusher::FlusherLink;
use crate::actors::functions::{
    flatten, Adopt, AdoptedStream, ShareStream, SocketFunctions, SystemStream,
};
use crate::actors::inbound::{Deframe, Deframer, Inbound, ReadLimits};
use crate::actors::reply::Rendezvous;
use crate::error::{SocketError, TransportError};
use crate::messages::flush::PendingWrite;
use crate::messages::functions::{CloseSocket, Connect, OpenSocket};
use crate::messages::interest::SocketInterest;
use crate::messages::read::Frame;
use crate::messages::socket::{Close, SocketEvent};
use crate::proto::{QueueConfig, StreamCore, StreamSettings, Watermarks};
use crate::shared::{Shared, WritabilityChanged};
use crate::types::{Address, Handle, PeerLimits, SocketId, SocketKind, UserData};

/// The flush-policy setters every socket builder has (`flush_policy`, `immediate`,
/// `flusher`), for a builder with a `policy: Option<FlushPolicy>` field.
macro_rules! flush_policy_setters {
    () => {
        /// Flush policy (default: deferred to this thread's [`Flusher::current`](crate::Flusher::current)).
        pub fn flush_policy(mut self, policy: FlushPolicy) -> Self {
            self.policy = Some(policy);
            self
        }

        /// Shorthand for [`FlushPolicy::Immediate`].
        pub fn immediate(self) -> Self {
            self.flush_policy(FlushPolicy::Immediate)
        }

        /// Shorthand for [`FlushPolicy::Deferred`] with the given Flusher.
        pub fn flusher(self, flusher: actix::Addr<crate::actors::flusher::Flusher>) -> Self {
            self.flush_policy(FlushPolicy::Deferred(flusher.recipient()))
        }
    };
}
pub(crate) use flush_policy_setters;

/// How a socket's queued writes reach the transport.
#[derive(Clone, Debug)]
pub enum FlushPolicy {
    /// No Flusher: a write goes to the transport as soon as the socket has handled it
    /// (c-ares without a pending-write callback); on a transport reached by message the
    /// socket handles no other message until that `sendv` is answered, so each write is
    /// its own `sendv`. Writes that queue up behind a would-block still leave together.
    Immediate,
    /// Coalesce: on fresh data send one [`PendingWrite`] here and flush everything queued
    /// when the [`Flush`](crate::messages::Flush) comes back (c-ares with a pending-write callback).
    Deferred(Recipient<PendingWrite>),
}

/// Limits and sizes of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketConfig {
    /// Write queue limits: watermarks and fairness bounds.
    pub queue: QueueConfig,
    /// Most bytes asked of one `recvfrom`.
    pub read_chunk: usize,
    /// Most writes that may wait for room ([`Write::wait_when_full`](crate::messages::Write::wait_when_full)) at once; past it
    /// they are refused like other writes.
    pub max_waiting_writes: usize,
    /// The read window: how much inbound data may be unacknowledged by the subscriber
    /// before the socket stops reading (read backpressure).
    pub read_limits: ReadLimits,
    /// Framed sockets: most stream bytes one frame may take (its length prefix and
    /// delimiter included). A frame longer than this is rejected with
    /// [`DecodeError::FrameTooLong`](crate::DecodeError::FrameTooLong), however the stream
    /// was split into reads: when it arrives whole, and as soon as this many bytes are
    /// buffered without a whole frame. Bytes the decoder consumes without making a frame
    /// (a length prefix, or anything it skips) count toward the next frame.
    pub max_frame_bytes: usize,
    /// Framed sockets: close gracefully when the stream is rejected (the default). With
    /// `false` reading stops and the subscriber, told by
    /// [`SocketEventKind::DecodeFailed`](crate::messages::SocketEventKind::DecodeFailed), decides: it can still write (say, an error
    /// reply) and then send [`Close`].
    pub close_on_decode_error: bool,
    /// What the peer's EOF (it shut its sending half down) does. `false` (the default):
    /// the subscriber hears [`SocketEventKind::Eof`](crate::messages::SocketEventKind::Eof)
    /// and the socket stays open, half-open, for writes (a request may still be
    /// answered), until you send [`Close`]. `true`: the socket closes gracefully at the
    /// EOF (the writes already queued go out first), and the subscriber hears `Closed`
    /// after `Eof`.
    pub close_on_eof: bool,
    /// A lingering close. Once a graceful close has sent every queued write, the socket
    /// shuts down its sending half (the peer reads EOF), where its transport can. With a
    /// linger time, a socket that reads then reads on until the peer's EOF, for at most
    /// this long, before it closes the handle: what the peer sends meanwhile still
    /// reaches the subscriber, instead of arriving at a closed socket and resetting the
    /// connection (which can make the peer lose the last bytes we sent). The price: a
    /// peer that does not close its side (or does not read, so never sees our EOF) keeps
    /// the socket open for the whole linger time. Zero (the default) closes at once after
    /// the shutdown.
    pub close_linger: Duration,
    /// How long a graceful close may take to send the writes still queued. A peer that
    /// stops reading can hold a draining socket (and its queued bytes) forever; with a
    /// drain timeout, a graceful close that has not sent everything by then turns into
    /// an abort: the writes left are answered [`WriteError::Aborted`](crate::WriteError::Aborted) with how far each
    /// got, and the handle closes. `None` (the default) waits as long as it takes.
    pub drain_timeout: Option<Duration>,
    /// Idle timeouts, a deadline per frame and a send timeout: how long a peer may keep
    /// this socket waiting (all off by default; see [`PeerLimits`]).
    pub limits: PeerLimits,
    /// Kernel buffer sizes (`SO_SNDBUF`, `SO_RCVBUF`), set when the socket is opened
    /// (default: the system's).
    pub buffers: crate::types::SocketBuffers,
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
            close_on_eof: false,
            close_linger: Duration::ZERO,
            drain_timeout: None,
            limits: PeerLimits::default(),
            buffers: crate::types::SocketBuffers::default(),
        }
    }
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
    connect_timeout: Option<Duration>,
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

    flush_policy_setters!();

    /// Who receives inbound data, EOF, errors and failures of fire-and-forget writes.
    /// Without a subscriber the socket does not read.
    pub fn subscriber(mut self, subscriber: Recipient<SocketEvent>) -> Self {
        self.subscriber = Some(subscriber);
        self
    }

    /// A producer to tell about writability changes (more can subscribe later with
    /// [`SubscribeWritability`](crate::messages::SubscribeWritability)).
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
    /// can be changed later with [`AssignUserData`](crate::messages::AssignUserData).
    pub fn user_data(mut self, data: UserData) -> Self {
        self.user_data = Some(data);
        self
    }

    /// Decodes the inbound byte stream with `decoder` (any tokio-util
    /// [`Decoder`], e.g. `LinesCodec`) and sends each whole
    /// frame to `frames` as a [`Frame`], in stream order, instead of raw
    /// [`SocketEventKind::Received`](crate::messages::SocketEventKind::Received) chunks. Each frame holds a
    /// [`ReadPermit`](crate::ReadPermit) in the read window. A decoder error, or a frame
    /// longer than [`SocketConfig::max_frame_bytes`], ends reading: the
    /// events subscriber (if any) gets [`SocketEventKind::DecodeFailed`](crate::messages::SocketEventKind::DecodeFailed) and the socket
    /// closes gracefully. At the peer's EOF the decoder's `decode_eof` gets the rest, and
    /// is called until it has no frame (as tokio-util's `FramedRead` calls it), before
    /// `Eof` (or its error, before the `Closed` an EOF may bring); a frame made from
    /// nothing (no byte consumed, none taken earlier without a frame left for it to
    /// stand for) is the last, so a decoder making frames for ever still ends. Once
    /// `frames` has stopped, reading stops for good (the peer is held back by flow
    /// control), whether or not a frame found it gone: the events subscriber hears
    /// nothing more from the peer, not even its EOF; writing goes on.
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
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
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
            buffers: self.config.buffers,
        };
        let started = tokio::time::Instant::now();
        let limit = self.connect_timeout;
        // Every step within the one limit, the open's and the stream's included.
        let deadline = limit.map(|limit| (started + limit, limit));
        // The handle is closed unless the socket takes it: on a failed or timed-out
        // connect, and when the caller drops this future mid-way, even before it has
        // seen the open's answer.
        let request = functions.open().send(open);
        let guard = within(deadline, owned_handle(&functions, request))
            .await?
            .map_err(SocketError::Open)?;
        let handle = guard.handle;
        let connect = Connect {
            handle,
            addr: addr.clone(),
        };
        let attempt = functions.connect().send(connect);
        match within(deadline, attempt).await {
            Ok(answer) => flatten(answer).map_err(|e| {
                SocketError::from_connect(e, limit.unwrap_or_else(|| started.elapsed()))
            })?,
            Err(timed_out) => return Err(timed_out),
        }
        let stream = within(deadline, share_stream(&functions, handle)).await?;
        guard.disarm();
        let socket = self.build(functions, handle, Some(addr), stream, &ctx);
        Ok(ctx.run(socket))
    }

    /// Connects, and hands back the typed pair in one call: a [`FramedWriter`] that
    /// encodes items with `codec` and a [`FrameStream`] of what `codec` decodes from the
    /// peer (tokio-util's `Framed::new(stream, codec).split()`, over a socket actor). The
    /// stream takes the socket's events (it ends at the peer's EOF or the close; a decode
    /// or read failure is its last item), so a subscriber set on this builder is replaced.
    ///
    /// ```no_run
    /// use sockactor::Socket;
    /// use tokio_util::codec::LinesCodec;
    ///
    /// # async fn demo(addr: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    /// let (mut tx, mut rx) = Socket::builder().connect_framed(addr, LinesCodec::new()).await?;
    /// tx.send("hello".to_string()).await?;
    /// while let Some(line) = rx.next().await {
    ///     println!("{}", line?);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn connect_framed<C>(
        self,
        addr: impl Into<Address>,
        codec: C,
    ) -> Result<(FramedWriter<C>, FrameStream<C::Item>), SocketError>
    where
        C: Decoder + Clone + 'static,
        C::Item: Send + 'static,
        C::Error: std::error::Error + Send + Sync + 'static,
    {
        let addr = addr.into();
        self.framed_pair(codec, |b| async move { b.connect(addr).await })
            .await
    }

    /// As [`connect_framed`](Self::connect_framed), on an already connected stream (see
    /// [`adopt`](Self::adopt)): a server's accepted connection as a typed pair.
    ///
    /// ```no_run
    /// use sockactor::Socket;
    /// use tokio_util::codec::LinesCodec;
    ///
    /// # async fn demo(listener: tokio::net::TcpListener) -> Result<(), Box<dyn std::error::Error>> {
    /// let (stream, _) = listener.accept().await?;
    /// let (mut tx, mut rx) = Socket::builder().adopt_framed(stream, LinesCodec::new()).await?;
    /// while let Some(line) = rx.next().await {
    ///     tx.send(line?.to_uppercase()).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn adopt_framed<C>(
        self,
        stream: impl Into<AdoptedStream>,
        codec: C,
    ) -> Result<(FramedWriter<C>, FrameStream<C::Item>), SocketError>
    where
        C: Decoder + Clone + 'static,
        C::Item: Send + 'static,
        C::Error: std::error::Error + Send + Sync + 'static,
    {
        let stream = stream.into();
        self.framed_pair(codec, |b| async move { b.adopt(stream).await })
            .await
    }

    /// The typed pair over the socket `open` starts from this builder, its events and
    /// frames going to the pair's stream half.
    async fn framed_pair<C, F, Fut>(
        self,
        codec: C,
        open: F,
    ) -> Result<(FramedWriter<C>, FrameStream<C::Item>), SocketError>
    where
        C: Decoder + Clone + 'static,
        C::Item: Send + 'static,
        C::Error: std::error::Error + Send + Sync + 'static,
        F: FnOnce(Self) -> Fut,
        Fut: std::future::Future<Output = Result<Addr<Socket>, SocketError>>,
    {
        let (forward, half) = Forward::<C::Item>::start();
        let builder = self
            .subscriber(forward.clone().recipient())
            .framed(codec.clone(), forward.recipient());
        let socket = open(builder).await?;
        let writer = get_writer(&socket).await?;
        Ok((writer.framed(codec), half.with_socket(socket)))
    }

    /// Connects, then starts the actor `make` returns, given the socket's [`Writer`], as
    /// the socket's subscriber: the actor has its handle from its first message on, with
    /// no start-up message of its own.
    ///
    /// ```no_run
    /// use actix::prelude::*;
    /// use sockactor::messages::{SocketEvent, SocketEventKind};
    /// use sockactor::{Socket, Writer};
    ///
    /// struct Echo(Writer);
    /// impl Actor for Echo { type Context = Context<Self>; }
    /// impl Handler<SocketEvent> for Echo {
    ///     type Result = ();
    ///     fn handle(&mut self, event: SocketEvent, _: &mut Context<Self>) {
    ///         if let SocketEventKind::Received(bytes) = event.kind {
    ///             let _ = self.0.write(bytes);
    ///         }
    ///     }
    /// }
    ///
    /// # async fn demo(addr: std::net::SocketAddr) -> Result<(), sockactor::SocketError> {
    /// let echo: Addr<Echo> = Socket::builder().connect_actor(addr, Echo).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_actor<A, F>(
        self,
        addr: impl Into<Address>,
        make: F,
    ) -> Result<Addr<A>, SocketError>
    where
        A: Actor<Context = Context<A>> + Handler<SocketEvent>,
        F: FnOnce(Writer) -> A,
    {
        let ctx = Context::<A>::new();
        let socket = self
            .subscriber(ctx.address().recipient())
            .connect(addr)
            .await?;
        let writer = get_writer(&socket).await?;
        Ok(ctx.run(make(writer)))
    }

    /// As [`connect_actor`](Self::connect_actor), with the peer's bytes decoded by
    /// `decoder` into [`Frame`]s for the actor (see [`framed`](Self::framed)).
    pub async fn connect_framed_actor<A, D, F>(
        self,
        addr: impl Into<Address>,
        decoder: D,
        make: F,
    ) -> Result<Addr<A>, SocketError>
    where
        A: Actor<Context = Context<A>> + Handler<SocketEvent> + Handler<Frame<D::Item>>,
        D: Decoder + 'static,
        D::Item: Send + 'static,
        D::Error: std::error::Error + Send + Sync + 'static,
        F: FnOnce(Writer) -> A,
    {
        let ctx = Context::<A>::new();
        let socket = self
            .subscriber(ctx.address().recipient())
            .framed(decoder, ctx.address().recipient())
            .connect(addr)
            .await?;
        let writer = get_writer(&socket).await?;
        Ok(ctx.run(make(writer)))
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
        // The transport owns the stream once it has taken it: a guard closes the handle
        // unless the socket takes it, even if the caller drops this future first.
        let guard = owned_handle(&functions, system.send(adopt))
            .await
            .map_err(SocketError::Open)?;
        let handle = guard.handle;
        let stream = share_stream(&functions, handle).await;
        guard.disarm();
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
        let id = socket.shared.id;
        (ctx.run(socket), id)
    }

    fn build(
        self,
        functions: SocketFunctions,
        handle: Handle,
        peer: Option<Address>,
        stream: Option<Arc<SystemStream>>,
        ctx: &Context<Socket>,
    ) -> Socket {
        let config = self.config;
        let queue = config.queue.sanitized();
        let id = SocketId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let peer_text = peer.as_ref().map(|p| p.to_string()).unwrap_or_default();
        let flusher = match self.policy {
            None => Some(FlusherLink::current()),
            Some(FlushPolicy::Deferred(recipient)) => Some(FlusherLink::given(recipient)),
            Some(FlushPolicy::Immediate) => None,
        };
        let layers = functions.layers().to_vec();
        let base = TableIo::new(functions, handle, peer.clone(), stream);
        let (io, layer_error): (Box<dyn StreamIo>, _) = if layers.is_empty() {
            (Box::new(base), None)
        } else {
            match LayeredIo::new(base, &layers, handle) {
                Ok(io) => (Box::new(io), None),
                // The socket starts failed: its subscriber hears why, writes are refused.
                Err((base, e)) => (Box::new(base), Some(e)),
            }
        };
        let inbound = Inbound::new(
            self.subscriber,
            self.deframer,
            config.read_chunk,
            config.max_frame_bytes,
        );
        let settings = StreamSettings {
            queue,
            read_chunk: config.read_chunk,
            max_waiting_writes: config.max_waiting_writes,
            max_deliveries: config.read_limits.max_deliveries,
            max_window_bytes: config.read_limits.max_bytes,
            close_linger: config.close_linger,
            drain_timeout: config.drain_timeout,
            close_on_decode_error: config.close_on_decode_error,
            close_on_eof: config.close_on_eof,
            deferred: flusher.is_some(),
            // A layered socket reads even with nobody to read for: its layers need the
            // peer's records (TLS session tickets, key updates, close_notify), and bytes
            // left unread in the kernel turn its close into a reset that costs the peer
            // the end of the stream. The plaintext, with no subscriber, is dropped.
            reading: inbound.reads() || !io.layers().is_empty(),
            watch_interest: false,
            shutdown: io.can_shutdown(),
        };
        let mut core = StreamCore::new(settings);
        core.set_limits(config.limits, super::now());
        core.set_sendfile(io.sendfile());
        if let Some(e) = layer_error {
            tracing::warn!(%handle, error = %e, "a byte layer could not be made; the socket fails");
            core.handle_failure(e.into());
        }
        let shared = Arc::new(Shared::new(
            id,
            Watermarks::new(queue.high_watermark, queue.low_watermark),
            self.writability,
            self.registry.is_some(),
        ));
        let registration = self.registry.as_ref().map(|r| {
            r.insert(
                shared.clone(),
                ctx.address().downgrade(),
                peer.clone(),
                self.user_data.clone(),
            )
        });
        let membership = self
            .interest
            .as_ref()
            .map(|g| g.join(id, ctx.address().recipient::<Close>().downgrade()));
        let span = tracing::debug_span!("socket", id = id.0, peer = %peer_text);
        let span = (!span.is_disabled()).then_some(span);
        let extras = membership.is_some()
            || self.user_data.is_some()
            || registration.is_some()
            || span.is_some();
        let watch = extras.then(|| {
            Box::new(Watch {
                membership,
                user_data: self.user_data,
                registration,
                span,
            })
        });
        Socket {
            core,
            io,
            shared,
            inbound,
            flusher,
            replies: Rendezvous::default(),
            timer: None,
            gate_shut: false,
            watch,
            sender: Default::default(),
        }
    }
}

/// Closes a handle on drop, unless disarmed: a connect that fails, times out or is
/// abandoned by its caller leaves no handle (nor descriptor) behind.
struct CloseOnDrop {
    functions: SocketFunctions,
    handle: Handle,
    armed: bool,
}

impl CloseOnDrop {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.functions.close().do_send(CloseSocket {
                handle: self.handle,
            });
        }
    }
}

/// `step`, unless the `deadline` (and the limit it came from) passes first.
async fn within<T>(
    deadline: Option<(tokio::time::Instant, Duration)>,
    step: impl std::future::Future<Output = T>,
) -> Result<T, SocketError> {
    match deadline {
        Some((at, limit)) => tokio::time::timeout_at(at, step)
            .await
            .map_err(|_| SocketError::TimedOut(limit)),
        None => Ok(step.await),
    }
}

/// The handle a transport request makes (`OpenSocket`, `Adopt`), owned from its answer
/// on by a [`CloseOnDrop`]: the request runs in a task of its own, so a caller that drops
/// its future before the answer comes leaves the guard to close the handle.
async fn owned_handle<F>(
    functions: &SocketFunctions,
    request: F,
) -> Result<CloseOnDrop, TransportError>
where
    F: std::future::Future<Output = Result<Result<Handle, TransportError>, actix::MailboxError>>
        + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let functions = functions.clone();
    actix::spawn(async move {
        let owned = flatten(request.await).map(|handle| CloseOnDrop {
            functions,
            handle,
            armed: true,
        });
        // Nobody to take it: the guard, dropped here (or with the channel), closes it.
        let _ = tx.send(owned);
    });
    rx.await.unwrap_or(Err(TransportError::Unavailable))
}

/// The stream behind a system handle, when the table's data path is the system's and
/// the socket may call it in place.
/// The socket's writer (the socket was just started: only a stopped system fails this).
async fn get_writer(socket: &Addr<Socket>) -> Result<Writer, SocketError> {
    socket
        .send(GetWriter)
        .await
        .map_err(|_| SocketError::Open(TransportError::Unavailable))
}

async fn share_stream(functions: &SocketFunctions, handle: Handle) -> Option<Arc<SystemStream>> {
    if !functions.in_place() {
        return None;
    }
    let system = functions.system_actor()?;
    system.send(ShareStream { handle }).await.ok().flatten()
}
