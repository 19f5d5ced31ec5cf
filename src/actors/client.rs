//! [`ReconnectingClient`]: a supervised client connection that reconnects with
//! exponential backoff and jitter, keeping writes ordered and answered once across
//! reconnects.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use actix::{
    Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, MessageResult, Recipient,
    Supervised, Supervisor, WeakAddr,
};

use super::functions::SocketFunctions;
use super::reply::{Rendezvous, ReportFailures, WriteResponse};
use super::socket::{GetWriter, Socket, SocketConfig, Writer};
use crate::batch::IoBatch;
use crate::error::{SocketError, TransportError, WriteError};
use crate::messages::client::{ClientEvent, ClientState, GetClientState, Reconnect};
use crate::messages::socket::{
    Close, SocketEvent, SocketEventKind, WritabilityChanged, Write, Written,
};
use crate::types::Address;

/// How the delay before a reconnect attempt is drawn around its nominal value
/// (`base · 2^(n−1)`, capped, after `n` consecutive failures).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the nominal delay. Clients that lost the same server retry in lockstep.
    None,
    /// "Equal jitter": half the nominal delay plus a uniformly drawn part of up to the
    /// other half, so the delay lies in `[nominal / 2, nominal]`. It still grows
    /// exponentially (until the cap, each delay is at least the previous nominal one)
    /// while spreading clients apart. The default.
    #[default]
    Equal,
    /// "Full jitter": uniform in `[0, nominal]`. Spreads clients the most; a retry may
    /// come almost at once.
    Full,
}

/// Exponential backoff between connect attempts: after `n` consecutive failures (failed
/// connects, or the loss of a connection) the next attempt waits `base · 2^(n−1)`, at
/// most `cap`, with [`Jitter`] applied. The jittered delay never exceeds `cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The nominal delay after the first failure.
    pub base: Duration,
    /// The largest nominal delay.
    pub cap: Duration,
    /// How the delay is drawn.
    pub jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(30),
            jitter: Jitter::Equal,
        }
    }
}

impl Backoff {
    /// The nominal delay after `failures` consecutive failures (at least one).
    fn nominal(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay after `failures` consecutive failures, jitter drawn from `rng`.
    fn draw(&self, failures: u32, rng: &mut Rng) -> Duration {
        let nominal = self.nominal(failures);
        let n = u64::try_from(nominal.as_nanos()).unwrap_or(u64::MAX);
        let nanos = match self.jitter {
            Jitter::None => n,
            Jitter::Equal => n / 2 + rng.up_to(n - n / 2),
            Jitter::Full => rng.up_to(n),
        };
        Duration::from_nanos(nanos)
    }
}

type Rng = crate::rng::SplitMix64;

/// What happens to writes that were queued but had not started (none of their bytes
/// accepted by the transport) when the connection drops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnsentWrites {
    /// Keep them: after the reconnect they go out first, in their original order, before
    /// any newer write. The default.
    #[default]
    Retain,
    /// Answer them with the error that ended the connection
    /// ([`WriteError::Transport`], or [`WriteError::Aborted`] after the peer's EOF).
    Fail,
}

/// A [`ReconnectingClient`]'s settings (the target, transport and subscriber are given
/// to the [`ClientBuilder`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Gives up one connect attempt after this long (tokio time); `None` leaves it to the
    /// operating system. Default: 10 s.
    pub connect_timeout: Option<Duration>,
    /// The delays between attempts.
    pub backoff: Backoff,
    /// Connect attempts in a row (since the start, the last connection, or a
    /// [`Reconnect`]) before the client gives up; `None` (the default) tries forever.
    /// `Some(0)` counts as `Some(1)`.
    pub max_attempts: Option<u32>,
    /// Seed of the jitter's generator, for reproducible delays; `None` (the default)
    /// seeds it from the process's hash keys and the clock.
    pub seed: Option<u64>,
    /// What happens to writes that had not started when the connection dropped.
    pub unsent: UnsentWrites,
    /// The client's own queue (writes made while disconnected, retained writes, and
    /// writes waiting for the socket's queue to have room) refuses new writes with
    /// [`WriteError::QueueFull`] once it holds this many bytes. Default: 4 MiB.
    pub max_queued_bytes: usize,
    /// ... or this many writes. Default: 1024.
    pub max_queued_writes: usize,
    /// Treat the peer's EOF as the end of the connection: abort the socket and reconnect.
    /// Default: `true` (a server that closes its side is gone). With `false` the client
    /// stays connected and reconnects only when the socket fails.
    pub reconnect_on_eof: bool,
    /// Configuration of each connection's [`Socket`].
    pub socket: SocketConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Some(Duration::from_secs(10)),
            backoff: Backoff::default(),
            max_attempts: None,
            seed: None,
            unsent: UnsentWrites::Retain,
            max_queued_bytes: 4 * 1024 * 1024,
            max_queued_writes: 1024,
            reconnect_on_eof: true,
            socket: SocketConfig::default(),
        }
    }
}

/// Configures and starts a [`ReconnectingClient`].
#[derive(Debug)]
pub struct ClientBuilder {
    target: Address,
    functions: Option<SocketFunctions>,
    config: ClientConfig,
    subscriber: Option<Recipient<ClientEvent>>,
}

impl ClientBuilder {
    /// The transport (default: [`SocketFunctions::system`] of the client's thread).
    pub fn functions(mut self, functions: SocketFunctions) -> Self {
        self.functions = Some(functions);
        self
    }

    /// All settings at once (default: [`ClientConfig::default`]).
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Who hears about connections, inbound data and failed fire-and-forget writes.
    pub fn subscriber(mut self, subscriber: Recipient<ClientEvent>) -> Self {
        self.subscriber = Some(subscriber);
        self
    }

    /// Limit of one connect attempt ([`ClientConfig::connect_timeout`]).
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Backoff base and cap ([`Backoff`]).
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.config.backoff.base = base;
        self.config.backoff.cap = cap;
        self
    }

    /// How delays are jittered ([`Jitter`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.config.backoff.jitter = jitter;
        self
    }

    /// Seeds the jitter, for reproducible delays ([`ClientConfig::seed`]).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Attempts before giving up ([`ClientConfig::max_attempts`]).
    pub fn max_attempts(mut self, max: Option<u32>) -> Self {
        self.config.max_attempts = max;
        self
    }

    /// What happens to writes that had not started when the connection drops.
    pub fn unsent_writes(mut self, policy: UnsentWrites) -> Self {
        self.config.unsent = policy;
        self
    }

    /// Bounds of the client's own queue ([`ClientConfig::max_queued_bytes`] and
    /// [`ClientConfig::max_queued_writes`]).
    pub fn queue_limits(mut self, bytes: usize, writes: usize) -> Self {
        self.config.max_queued_bytes = bytes;
        self.config.max_queued_writes = writes;
        self
    }

    /// Whether the peer's EOF ends the connection ([`ClientConfig::reconnect_on_eof`]).
    pub fn reconnect_on_eof(mut self, reconnect: bool) -> Self {
        self.config.reconnect_on_eof = reconnect;
        self
    }

    /// Configuration of each connection's [`Socket`].
    pub fn socket_config(mut self, config: SocketConfig) -> Self {
        self.config.socket = config;
        self
    }

    /// Starts the client under an [`actix::Supervisor`] on the current arbiter; it
    /// connects at once. Must be called inside a running actix system.
    pub fn start(self) -> Addr<ReconnectingClient> {
        let client = self.build();
        Supervisor::start(move |ctx: &mut Context<ReconnectingClient>| {
            // Unbounded, as a socket's: writes and closes keep program order whether
            // sent with `send` or `do_send`.
            ctx.set_mailbox_capacity(0);
            client
        })
    }

    fn build(self) -> ReconnectingClient {
        let span = tracing::debug_span!("client", peer = %self.target);
        ReconnectingClient {
            rng: Rng::new(self.config.seed.unwrap_or_else(Rng::random_seed)),
            target: self.target,
            functions: self.functions,
            config: self.config,
            subscriber: self.subscriber,
            span,
            link: Link::Waiting,
            attempts: 0,
            failures: 0,
            next_delay: None,
            restart_requested: false,
            generation: 0,
            early: Vec::new(),
            next_seq: 0,
            held: BTreeMap::new(),
            held_bytes: 0,
            forwarded: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            failing: BTreeMap::new(),
            handed_over: None,
            replies: Rendezvous::default(),
        }
    }
}

type Reply = super::reply::Reply<Result<Written, WriteError>>;

/// A write the client holds: not handed to any socket (made while disconnected, retained
/// from a lost connection, or waiting for the socket's queue to have room).
#[derive(Debug)]
struct Held {
    batch: IoBatch,
    tag: Option<u64>,
    reply: Reply,
}

/// A write handed to a connection's socket, its answer awaited.
#[derive(Debug)]
struct Forwarded {
    generation: u64,
    len: usize,
    /// A cheap clone of the payload (reference counts), kept to replay it if the
    /// connection drops before it starts ([`UnsentWrites::Retain`] only).
    batch: Option<IoBatch>,
    tag: Option<u64>,
    reply: Reply,
}

/// One connection.
#[derive(Debug)]
struct Conn {
    socket: Addr<Socket>,
    writer: Writer,
    generation: u64,
    /// False once a write answer showed the socket has shut: nothing more is handed to
    /// it, and its `Closed` event is on the way.
    alive: bool,
}

#[derive(Debug)]
enum Link {
    /// Before the first attempt, or waiting out the backoff.
    Waiting,
    Connecting {
        attempt: u32,
    },
    Connected(Conn),
    /// Closing gracefully: handing over what is held, then closing the socket.
    Draining(Conn),
    GaveUp {
        attempts: u32,
        last_error: SocketError,
    },
    Closed,
}

/// A client connection that reconnects by itself, as an actor under an
/// [`actix::Supervisor`].
///
/// It owns the current connection's [`Socket`] and takes the same [`Write`] and
/// [`Close`] messages. Every write is answered exactly once, and writes reach the peer in
/// the order the client received them, across reconnects:
///
/// - while connected, writes go straight into the socket's queue (through its
///   [`Writer`]), as long as that queue has room; otherwise, and while disconnected,
///   they wait in the client's own bounded queue ([`ClientConfig::max_queued_bytes`],
///   [`ClientConfig::max_queued_writes`]; past them [`WriteError::QueueFull`] hands the
///   payload back);
/// - when the transport fails, the write in flight fails with the bytes it got out
///   ([`WriteError::bytes_sent`] above 0); writes that had not started are, by
///   [`UnsentWrites`], retained (replayed first after the reconnect, in order, before
///   any newer write, once every answer of the dead socket is in) or failed (each
///   failure reported after the dead socket's answers to older writes, so answers keep
///   the order of the writes).
///
/// Supervision is actix's own: when a connect fails or the connection is lost the actor
/// stops, the [`Supervisor`] restarts it with its state and address, and the
/// [`Supervised::restarting`] hook schedules the next attempt after the [`Backoff`]
/// delay (tokio time). A successful connect resets the attempt count. After
/// [`ClientConfig::max_attempts`] failed attempts it gives up ([`ClientEvent::GaveUp`])
/// and answers writes with [`WriteError::GaveUp`] until a [`Reconnect`]. A [`Close`]
/// ends it for good: `Graceful` hands over what it holds and closes the socket after
/// its queue drains (while disconnected, held writes are answered with
/// [`WriteError::Closed`]); `Abort` aborts the socket (also one a graceful close has
/// handed over and left draining) and answers held writes with
/// [`WriteError::Aborted`]; later writes get [`WriteError::Closed`].
///
/// Events go to the subscriber as [`ClientEvent`]s. Write answers survive restarts:
/// each caller waits on a task of its own, not on the actor's context.
///
/// The order kept is the order the client receives writes in. An actix mailbox holds 16
/// messages; an `Addr::send` past that is delivered only when its future is polled, so
/// a producer that fires many `send`s before awaiting any should poll them in order
/// (or give the mailbox time to drain). A write's [`Write::tag`] comes back in
/// [`ClientEvent::WriteFailed`]; [`Write::wait_when_full`] has no effect here: a write
/// the socket has no room for always waits in the client's queue, and only a full
/// client queue refuses it.
///
/// ```no_run
/// use std::time::Duration;
/// use bytes::Bytes;
/// use sockactor::messages::Write;
/// use sockactor::ReconnectingClient;
///
/// #[actix::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let peer: std::net::SocketAddr = "127.0.0.1:7000".parse()?;
///     let client = ReconnectingClient::builder(peer)
///         .backoff(Duration::from_millis(50), Duration::from_secs(5))
///         .start();
///     // Waits in the client's queue until the connection is up.
///     let written = client.send(Write::new(Bytes::from_static(b"hello\n"))).await??;
///     println!("{} bytes out", written.len);
///     Ok(())
/// }
/// ```
pub struct ReconnectingClient {
    target: Address,
    functions: Option<SocketFunctions>,
    config: ClientConfig,
    subscriber: Option<Recipient<ClientEvent>>,
    span: tracing::Span,
    rng: Rng,
    link: Link,
    /// Connect attempts since the start, the last connection, or a `Reconnect`.
    attempts: u32,
    /// Consecutive failures (failed connects and lost connections) since the last
    /// connection: the backoff's exponent.
    failures: u32,
    /// Set by `restarting`, taken by `started`.
    next_delay: Option<Duration>,
    /// The actor stopped itself to be restarted (not for good).
    restart_requested: bool,
    /// Number of the latest connection (attempt), so news of older ones is recognised.
    generation: u64,
    /// News of the connection being made that came before its connect finished.
    early: Vec<News>,
    next_seq: u64,
    /// Writes held by the client, by arrival order.
    held: BTreeMap<u64, Held>,
    held_bytes: usize,
    /// Writes handed to a socket, by arrival order.
    forwarded: BTreeMap<u64, Forwarded>,
    /// Where the reply channel of the write handled last waits.
    replies: Rendezvous<Result<Written, WriteError>>,
    /// How many forwarded writes of each connection await their answer.
    outstanding: BTreeMap<u64, usize>,
    /// Failed writes whose answer waits for an older forwarded write's: answers go out
    /// in arrival order (a lost connection's socket answers its writes after the client
    /// has failed the ones it held).
    failing: BTreeMap<u64, (Reply, WriteError)>,
    /// The socket a graceful close handed over and left draining: a later
    /// [`Close::Abort`] still aborts it.
    handed_over: Option<actix::WeakAddr<Socket>>,
}

impl fmt::Debug for ReconnectingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectingClient")
            .field("target", &self.target)
            .field("link", &self.link)
            .field("attempts", &self.attempts)
            .field("failures", &self.failures)
            .field("held", &self.held.len())
            .field("failing", &self.failing.len())
            .field("forwarded", &self.forwarded.len())
            .finish_non_exhaustive()
    }
}

impl ReconnectingClient {
    /// A builder for a client of `target`.
    pub fn builder(target: impl Into<Address>) -> ClientBuilder {
        ClientBuilder {
            target: target.into(),
            functions: None,
            config: ClientConfig::default(),
            subscriber: None,
        }
    }

    fn emit(&self, event: ClientEvent) {
        if let Some(s) = &self.subscriber {
            s.do_send(event);
        }
    }

    fn conn(&self) -> Option<&Conn> {
        match &self.link {
            Link::Connected(conn) | Link::Draining(conn) => Some(conn),
            _ => None,
        }
    }

    /// The connection writes may go to now, if any: alive, every answer of older
    /// connections in (so retained writes cannot be overtaken), and room in its queue.
    fn open_conn(&self) -> Option<&Conn> {
        let conn = self.conn().filter(|c| c.alive)?;
        let stale = self.outstanding.keys().any(|&g| g != conn.generation);
        (!stale && conn.writer.is_writable()).then_some(conn)
    }

    fn live_generation(&self) -> Option<u64> {
        self.conn().map(|c| c.generation)
    }

    /// Whether writes that had not started on a lost connection are kept for the next.
    fn retains(&self) -> bool {
        self.config.unsent == UnsentWrites::Retain
            && matches!(
                self.link,
                Link::Waiting | Link::Connecting { .. } | Link::Connected(_) | Link::Draining(_)
            )
    }

    /// The token of the write taken last, while the client still holds it.
    fn last_reply_mut(&mut self) -> Option<&mut Reply> {
        let held = self.held.last_key_value().map(|(&seq, _)| seq);
        let forwarded = self.forwarded.last_key_value().map(|(&seq, _)| seq);
        let failing = self.failing.last_key_value().map(|(&seq, _)| seq);
        let last = held.max(forwarded).max(failing);
        if last.is_none() {
            None
        } else if last == held {
            self.held.values_mut().next_back().map(|h| &mut h.reply)
        } else if last == forwarded {
            self.forwarded
                .values_mut()
                .next_back()
                .map(|f| &mut f.reply)
        } else {
            self.failing.values_mut().next_back().map(|(r, _)| r)
        }
    }

    /// Delivers a write's one answer.
    fn answer(&self, reply: Reply, result: Result<Written, WriteError>) {
        let (subscriber, span) = (&self.subscriber, &self.span);
        self.replies.answer(reply, result, |tag, error| {
            report_failure(subscriber, span, tag, error);
        });
    }

    /// Takes a new write: refused, handed to the socket, or held.
    fn accept(&mut self, write: Write, ctx: &mut Context<Self>) -> Result<(), WriteError> {
        let len = write.batch.len();
        match &self.link {
            Link::Closed | Link::Draining(_) => {
                return Err(WriteError::Closed { bytes_sent: 0, len })
            }
            Link::GaveUp {
                attempts,
                last_error,
            } => {
                return Err(WriteError::GaveUp {
                    len,
                    attempts: *attempts,
                    last_error: last_error.clone(),
                })
            }
            _ => {}
        }
        let held = Held {
            batch: write.batch,
            tag: write.tag,
            reply: Reply::pending(write.tag),
        };
        if self.held.is_empty() && self.open_conn().is_some() {
            let seq = self.take_seq();
            self.forward(seq, held, ctx);
            return Ok(());
        }
        if self.held_bytes >= self.config.max_queued_bytes
            || self.held.len() >= self.config.max_queued_writes
        {
            tracing::debug!(parent: &self.span, queued = self.held_bytes, "write refused: client queue full");
            return Err(WriteError::QueueFull {
                queued: self.held_bytes,
                high_watermark: self.config.max_queued_bytes,
                payload: held.batch,
            });
        }
        let seq = self.take_seq();
        self.hold(seq, held);
        Ok(())
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn hold(&mut self, seq: u64, held: Held) {
        self.held_bytes += held.batch.len();
        self.held.insert(seq, held);
    }

    /// Hands a write to the open connection's socket; a task awaits its answer and
    /// brings it back as [`Answered`] (through the mailbox, so it survives restarts).
    fn forward(&mut self, seq: u64, held: Held, ctx: &mut Context<Self>) {
        let Some(conn) = self.conn() else {
            self.hold(seq, held);
            return;
        };
        let generation = conn.generation;
        let len = held.batch.len();
        let keep = (self.config.unsent == UnsentWrites::Retain).then(|| held.batch.clone());
        let answer = conn.writer.write_answered(held.batch);
        *self.outstanding.entry(generation).or_default() += 1;
        self.forwarded.insert(
            seq,
            Forwarded {
                generation,
                len,
                batch: keep,
                tag: held.tag,
                reply: held.reply,
            },
        );
        let me = ctx.address();
        actix::spawn(async move {
            let result = answer.await;
            me.do_send(Answered { seq, result });
        });
    }

    /// Hands held writes to the socket, in order, while it takes them; then finishes a
    /// graceful close if nothing is left.
    fn flush_held(&mut self, ctx: &mut Context<Self>) {
        while self.open_conn().is_some() {
            let Some((seq, held)) = self.held.pop_first() else {
                break;
            };
            self.held_bytes -= held.batch.len();
            self.forward(seq, held, ctx);
        }
        self.maybe_finish_drain();
    }

    fn maybe_finish_drain(&mut self) {
        let Link::Draining(conn) = &self.link else {
            return;
        };
        let stale = self.outstanding.keys().any(|&g| g != conn.generation);
        if self.held.is_empty() && !stale {
            conn.socket.do_send(Close::Graceful);
            tracing::debug!(parent: &self.span, "drained; closing the socket");
            self.handed_over = Some(conn.socket.downgrade());
            self.link = Link::Closed;
        }
    }

    /// Answers every held write with `error(len)`, each after the older writes still
    /// awaiting a socket's answer.
    fn fail_held(&mut self, error: impl Fn(usize) -> WriteError) {
        self.held_bytes = 0;
        for (seq, held) in std::mem::take(&mut self.held) {
            let failure = error(held.batch.len());
            self.failing.insert(seq, (held.reply, failure));
        }
        self.release_failures(u64::MAX);
    }

    /// Answers the failed writes older than `before` and than every forwarded write
    /// still awaiting its answer.
    fn release_failures(&mut self, before: u64) {
        let bound = self
            .forwarded
            .first_key_value()
            .map_or(before, |(&seq, _)| seq.min(before));
        while let Some(entry) = self.failing.first_entry() {
            if *entry.key() >= bound {
                break;
            }
            let (reply, error) = entry.remove();
            self.answer(reply, Err(error));
        }
    }

    /// A forwarded write's answer.
    fn on_answer(
        &mut self,
        seq: u64,
        result: Result<Written, WriteError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(entry) = self.forwarded.remove(&seq) else {
            return;
        };
        self.release_failures(seq);
        if let Some(n) = self.outstanding.get_mut(&entry.generation) {
            *n -= 1;
            if *n == 0 {
                self.outstanding.remove(&entry.generation);
            }
        }
        match result {
            Ok(written) => self.answer(entry.reply, Ok(written)),
            Err(error) => {
                let ended = matches!(
                    error,
                    WriteError::Transport { .. }
                        | WriteError::Closed { .. }
                        | WriteError::Aborted { .. }
                        | WriteError::TimedOut { .. }
                );
                if ended && self.live_generation() == Some(entry.generation) {
                    if let Link::Connected(conn) | Link::Draining(conn) = &mut self.link {
                        conn.alive = false;
                    }
                }
                let unsent = ended && error.bytes_sent() == 0 && self.retains();
                match entry.batch {
                    Some(batch) if unsent => {
                        tracing::debug!(parent: &self.span, seq, len = entry.len, "write retained for the next connection");
                        let held = Held {
                            batch,
                            tag: entry.tag,
                            reply: entry.reply,
                        };
                        self.hold(seq, held);
                    }
                    _ => self.answer(entry.reply, Err(error)),
                }
            }
        }
        self.release_failures(u64::MAX);
        self.flush_held(ctx);
    }

    /// Starts a connect attempt; its outcome comes back as [`ConnectDone`].
    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.attempts = self.attempts.saturating_add(1);
        self.generation += 1;
        self.early.clear();
        let (attempt, generation) = (self.attempts, self.generation);
        self.link = Link::Connecting { attempt };
        tracing::debug!(parent: &self.span, attempt, "connecting");
        let relay = Relay {
            client: ctx.address().downgrade(),
            generation,
        }
        .start();
        let functions = self
            .functions
            .clone()
            .unwrap_or_else(SocketFunctions::system);
        let mut builder = Socket::builder()
            .functions(functions)
            .config(self.config.socket)
            .subscriber(relay.clone().recipient())
            .writability_subscriber(relay.recipient());
        if let Some(limit) = self.config.connect_timeout {
            builder = builder.connect_timeout(limit);
        }
        let target = self.target.clone();
        let me = ctx.address();
        actix::spawn(async move {
            let result = match builder.connect(target).await {
                Ok(socket) => match socket.send(GetWriter).await {
                    Ok(writer) => Ok((socket, writer)),
                    Err(e) => Err(SocketError::Open(e.into())),
                },
                Err(e) => Err(e),
            };
            me.do_send(ConnectDone { generation, result });
        });
    }

    fn on_connect_done(
        &mut self,
        generation: u64,
        result: Result<(Addr<Socket>, Writer), SocketError>,
        ctx: &mut Context<Self>,
    ) {
        let current = generation == self.generation && matches!(self.link, Link::Connecting { .. });
        if !current {
            // Closed (or started over) meanwhile.
            if let Ok((socket, _)) = result {
                socket.do_send(Close::Abort);
            }
            return;
        }
        match result {
            Ok((socket, writer)) => {
                let attempt = self.attempts;
                self.attempts = 0;
                self.failures = 0;
                self.link = Link::Connected(Conn {
                    socket,
                    writer,
                    generation,
                    alive: true,
                });
                tracing::info!(parent: &self.span, attempt, "connected");
                self.emit(ClientEvent::Connected {
                    peer: self.target.clone(),
                    attempt,
                });
                for news in std::mem::take(&mut self.early) {
                    self.on_news(generation, news, ctx);
                }
                self.flush_held(ctx);
            }
            Err(error) => {
                self.early.clear();
                self.failures = self.failures.saturating_add(1);
                let limit = self.config.max_attempts.map(|m| m.max(1));
                tracing::debug!(parent: &self.span, attempt = self.attempts, %error, "connect failed");
                if limit.is_some_and(|max| self.attempts >= max) {
                    self.give_up(error);
                } else {
                    self.link = Link::Waiting;
                    self.restart(ctx);
                }
            }
        }
    }

    fn give_up(&mut self, last_error: SocketError) {
        let attempts = self.attempts;
        tracing::warn!(parent: &self.span, attempts, error = %last_error, "gave up connecting");
        self.link = Link::GaveUp {
            attempts,
            last_error: last_error.clone(),
        };
        self.fail_held(|len| WriteError::GaveUp {
            len,
            attempts,
            last_error: last_error.clone(),
        });
        self.emit(ClientEvent::GaveUp {
            attempts,
            last_error,
        });
    }

    /// Stops the actor so its supervisor restarts it: `restarting` schedules the next
    /// attempt.
    fn restart(&mut self, ctx: &mut Context<Self>) {
        self.restart_requested = true;
        ctx.stop();
    }

    /// News from connection `generation`'s socket (through its relay).
    fn on_news(&mut self, generation: u64, news: News, ctx: &mut Context<Self>) {
        if generation == self.generation && matches!(self.link, Link::Connecting { .. }) {
            // The socket spoke before its connect came back: keep the order.
            self.early.push(news);
            return;
        }
        let live = self.live_generation() == Some(generation);
        match news {
            News::Data(bytes, permit) => self.emit(ClientEvent::Received(bytes, permit)),
            News::Event(SocketEventKind::Received(bytes)) => {
                self.emit(ClientEvent::Received(bytes, None));
            }
            News::Event(SocketEventKind::Eof) if live => {
                self.emit(ClientEvent::Eof);
                if self.config.reconnect_on_eof {
                    self.lose_connection(None, ctx);
                }
            }
            News::Event(SocketEventKind::Idle { kind, after }) if live => {
                self.emit(ClientEvent::Idle { kind, after });
            }
            News::Event(SocketEventKind::Closed { cause }) if live => {
                self.lose_connection(cause, ctx);
            }
            News::Writable(true) if live => self.flush_held(ctx),
            _ => {}
        }
    }

    /// The live connection ended: tell the subscriber, apply the unsent-writes policy and
    /// have the supervisor restart the actor (or, when closing, close for good).
    fn lose_connection(&mut self, cause: Option<TransportError>, ctx: &mut Context<Self>) {
        let (conn, closing) = match std::mem::replace(&mut self.link, Link::Waiting) {
            Link::Connected(conn) => (conn, false),
            Link::Draining(conn) => (conn, true),
            other => {
                self.link = other;
                return;
            }
        };
        // Already shut after a transport error; after the peer's EOF this ends it, and
        // its unsent writes come back as `Aborted` with nothing sent.
        conn.socket.do_send(Close::Abort);
        tracing::info!(parent: &self.span, cause = ?cause, "disconnected");
        let error = |len| match &cause {
            Some(source) => WriteError::Transport {
                bytes_sent: 0,
                len,
                source: source.clone(),
            },
            None => WriteError::Aborted { bytes_sent: 0, len },
        };
        if closing {
            self.link = Link::Closed;
            self.fail_held(error);
        } else if self.config.unsent == UnsentWrites::Fail {
            self.fail_held(error);
        }
        self.emit(ClientEvent::Disconnected { cause });
        if !closing {
            self.failures = self.failures.saturating_add(1);
            self.restart(ctx);
        }
    }

    fn state(&self) -> ClientState {
        match &self.link {
            Link::Waiting => ClientState::Waiting {
                attempt: self.attempts.saturating_add(1),
            },
            Link::Connecting { attempt } => ClientState::Connecting { attempt: *attempt },
            Link::Connected(_) => ClientState::Connected {
                peer: self.target.clone(),
            },
            Link::Draining(_) => ClientState::Draining,
            Link::GaveUp { attempts, .. } => ClientState::GaveUp {
                attempts: *attempts,
            },
            Link::Closed => ClientState::Closed,
        }
    }
}

impl Actor for ReconnectingClient {
    type Context = Context<Self>;

    /// Connects: at once the first time (and after a [`Reconnect`]), after the backoff
    /// delay `restarting` chose on a restart.
    fn started(&mut self, ctx: &mut Context<Self>) {
        // A restart drops the context's messages to self, among them a pending
        // `ReportFailures`: the failures parked for it go out now (left parked, they
        // would keep every later one waiting too).
        let (subscriber, span) = (&self.subscriber, &self.span);
        self.replies.report_parked(|tag, error| {
            report_failure(subscriber, span, tag, error);
        });
        if !matches!(self.link, Link::Waiting) {
            return;
        }
        match self.next_delay.take() {
            Some(delay) => {
                ctx.run_later(delay, |act, ctx| {
                    if matches!(act.link, Link::Waiting) {
                        act.connect(ctx);
                    }
                });
            }
            None => self.connect(ctx),
        }
    }
}

impl Supervised for ReconnectingClient {
    /// Draws the backoff delay for the next attempt and announces it; `started` then
    /// schedules the attempt.
    fn restarting(&mut self, _: &mut Context<Self>) {
        if !std::mem::take(&mut self.restart_requested) {
            return;
        }
        let delay = self.config.backoff.draw(self.failures, &mut self.rng);
        let attempt = self.attempts.saturating_add(1);
        tracing::debug!(parent: &self.span, attempt, ?delay, "reconnecting");
        self.next_delay = Some(delay);
        self.emit(ClientEvent::Reconnecting { attempt, delay });
    }
}

impl Drop for ReconnectingClient {
    /// The last address is gone (or the runtime is shutting down): the socket drains
    /// what it has and closes; held writes are answered.
    fn drop(&mut self) {
        if let Some(conn) = self.conn() {
            conn.socket.do_send(Close::Graceful);
        }
        self.fail_held(|len| WriteError::Closed { bytes_sent: 0, len });
        // No answer of a socket can reach a dropped client: nothing left to wait for.
        for (_, (reply, error)) in std::mem::take(&mut self.failing) {
            self.answer(reply, Err(error));
        }
    }
}

impl Handler<Write> for ReconnectingClient {
    type Result = WriteResponse<Result<Written, WriteError>>;

    fn handle(&mut self, msg: Write, ctx: &mut Context<Self>) -> Self::Result {
        let tag = msg.tag;
        // The channel of the write handled last goes onto its token first.
        let replies = std::mem::take(&mut self.replies);
        replies.attach(self.last_reply_mut());
        self.replies = replies;
        match self.accept(msg, ctx) {
            Ok(()) => self.replies.later(tag),
            Err(error) => self.replies.now(tag, Err(error)),
        }
    }
}

impl Handler<Close> for ReconnectingClient {
    type Result = ();

    fn handle(&mut self, msg: Close, ctx: &mut Context<Self>) {
        let link = std::mem::replace(&mut self.link, Link::Closed);
        tracing::debug!(parent: &self.span, how = ?msg, "closing");
        match (msg, link) {
            (Close::Graceful, Link::Connected(conn)) if conn.alive => {
                self.link = Link::Draining(conn);
                self.flush_held(ctx);
            }
            (Close::Graceful, Link::Draining(conn)) => self.link = Link::Draining(conn),
            (Close::Graceful, link) => {
                if let Link::Connected(conn) = link {
                    conn.socket.do_send(Close::Abort);
                }
                self.fail_held(|len| WriteError::Closed { bytes_sent: 0, len });
            }
            (Close::Abort, link) => {
                if let Link::Connected(conn) | Link::Draining(conn) = link {
                    conn.socket.do_send(Close::Abort);
                } else if let Some(socket) = self.handed_over.take().and_then(|s| s.upgrade()) {
                    // Handed over and still draining (toward a peer that may never read).
                    socket.do_send(Close::Abort);
                }
                self.fail_held(|len| WriteError::Aborted { bytes_sent: 0, len });
            }
        }
    }
}

impl Handler<Reconnect> for ReconnectingClient {
    type Result = bool;

    fn handle(&mut self, _: Reconnect, ctx: &mut Context<Self>) -> bool {
        if !matches!(self.link, Link::GaveUp { .. }) {
            return false;
        }
        tracing::debug!(parent: &self.span, "starting over");
        self.attempts = 0;
        self.failures = 0;
        self.connect(ctx);
        true
    }
}

impl Handler<GetClientState> for ReconnectingClient {
    type Result = MessageResult<GetClientState>;

    fn handle(&mut self, _: GetClientState, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.state())
    }
}

/// A forwarded write's answer, from the task that awaited it.
#[derive(Debug)]
struct Answered {
    seq: u64,
    result: Result<Written, WriteError>,
}

impl Message for Answered {
    type Result = ();
}

impl Handler<Answered> for ReconnectingClient {
    type Result = ();

    fn handle(&mut self, msg: Answered, ctx: &mut Context<Self>) {
        self.on_answer(msg.seq, msg.result, ctx);
    }
}

/// The outcome of a connect attempt.
#[derive(Debug)]
struct ConnectDone {
    generation: u64,
    result: Result<(Addr<Socket>, Writer), SocketError>,
}

impl Message for ConnectDone {
    type Result = ();
}

impl Handler<ConnectDone> for ReconnectingClient {
    type Result = ();

    fn handle(&mut self, msg: ConnectDone, ctx: &mut Context<Self>) {
        self.on_connect_done(msg.generation, msg.result, ctx);
    }
}

impl Handler<ReportFailures> for ReconnectingClient {
    type Result = ();

    fn handle(&mut self, _: ReportFailures, _: &mut Context<Self>) {
        let (subscriber, span) = (&self.subscriber, &self.span);
        self.replies.report_parked(|tag, error| {
            report_failure(subscriber, span, tag, error);
        });
    }
}

/// A write nobody waits for failed: the subscriber hears of it.
fn report_failure(
    subscriber: &Option<Recipient<ClientEvent>>,
    span: &tracing::Span,
    tag: Option<u64>,
    error: WriteError,
) {
    match subscriber {
        Some(s) if s.connected() => {
            tracing::debug!(parent: span, ?tag, %error, "fire-and-forget write failed");
            s.do_send(ClientEvent::WriteFailed { tag, error });
        }
        // No refusal is silent: with nobody to tell, it is a warning.
        _ => tracing::warn!(
            parent: span,
            ?tag,
            %error,
            "fire-and-forget write failed with nobody subscribed to hear it"
        ),
    }
}

/// What a connection's socket told its relay.
#[derive(Debug)]
enum News {
    /// Inbound bytes, with the socket's permit (carried on to the subscriber).
    Data(bytes::Bytes, Option<crate::ReadPermit>),
    Event(SocketEventKind),
    Writable(bool),
}

#[derive(Debug)]
struct FromSocket {
    generation: u64,
    news: News,
}

impl Message for FromSocket {
    type Result = ();
}

impl Handler<FromSocket> for ReconnectingClient {
    type Result = ();

    fn handle(&mut self, msg: FromSocket, ctx: &mut Context<Self>) {
        self.on_news(msg.generation, msg.news, ctx);
    }
}

/// A connection's subscriber: tags the socket's news with the connection's number and
/// passes it on. It holds the client weakly, so a socket does not keep its client
/// alive (the client holds the socket).
#[derive(Debug)]
struct Relay {
    client: WeakAddr<ReconnectingClient>,
    generation: u64,
}

impl Relay {
    fn pass(&self, news: News) {
        if let Some(client) = self.client.upgrade() {
            client.do_send(FromSocket {
                generation: self.generation,
                news,
            });
        }
    }
}

impl Actor for Relay {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for Relay {
    type Result = ();

    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        let news = match msg.kind {
            SocketEventKind::Received(bytes) => News::Data(bytes, msg.permit),
            kind => News::Event(kind),
        };
        self.pass(news);
    }
}

impl Handler<WritabilityChanged> for Relay {
    type Result = ();

    fn handle(&mut self, msg: WritabilityChanged, _: &mut Context<Self>) {
        self.pass(News::Writable(msg.writable));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockTransport;

    fn backoff(jitter: Jitter) -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            jitter,
        }
    }

    #[test]
    fn nominal_delays_double_from_the_base_up_to_the_cap() {
        let b = backoff(Jitter::None);
        let ms: Vec<u128> = (1..=7).map(|n| b.nominal(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(b.nominal(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn drawn_delays_stay_within_their_jitter_bounds() {
        let mut rng = Rng::new(1);
        for n in 1..=40 {
            for _ in 0..200 {
                let nominal = backoff(Jitter::None).nominal(n);
                let equal = backoff(Jitter::Equal).draw(n, &mut rng);
                assert!(
                    equal >= nominal / 2 && equal <= nominal,
                    "{equal:?} vs {nominal:?}"
                );
                let full = backoff(Jitter::Full).draw(n, &mut rng);
                assert!(full <= nominal);
                assert_eq!(backoff(Jitter::None).draw(n, &mut rng), nominal);
            }
        }
    }

    #[test]
    fn the_generator_is_reproducible_and_reaches_both_ends() {
        let a: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let mut r = Rng::new(42);
        let b: Vec<u64> = (0..8).map(|_| r.next_u64()).collect();
        assert_eq!(a, b);
        let mut r = Rng::new(43);
        assert_ne!(a[0], r.next_u64());
        let mut r = Rng::new(7);
        let draws: Vec<u64> = (0..1000).map(|_| r.up_to(3)).collect();
        assert!(draws.iter().all(|&d| d <= 3));
        for v in 0..=3 {
            assert!(draws.contains(&v), "{v} never drawn");
        }
        assert_eq!(r.up_to(0), 0);
    }

    /// Forwards client events into a channel.
    struct Events(tokio::sync::mpsc::UnboundedSender<ClientEvent>);

    impl Actor for Events {
        type Context = Context<Self>;
    }

    impl Handler<ClientEvent> for Events {
        type Result = ();
        fn handle(&mut self, msg: ClientEvent, _: &mut Context<Self>) {
            let _ = self.0.send(msg);
        }
    }

    /// The race the `early` buffer is for: a fresh socket's news reaching the client
    /// before the connect's own answer (it depends on task scheduling, so it is driven
    /// by hand here).
    #[test]
    fn news_that_overtakes_its_connect_is_replayed_after_connected() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .expect("runtime")
        };
        actix::System::with_tokio_rt(runtime).block_on(async {
            let mock = MockTransport::start();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let peer: std::net::SocketAddr = "127.0.0.1:9".parse().expect("addr");
            let mut client = ReconnectingClient::builder(peer)
                .functions(mock.functions())
                .subscriber(Events(tx).start().recipient())
                .build();
            let mut ctx = Context::new();
            client.connect(&mut ctx);
            let generation = client.generation;
            // The news of the connection being made comes first ...
            client.on_news(generation, News::Data("hi".into(), None), &mut ctx);
            client.on_news(generation, News::Event(SocketEventKind::Eof), &mut ctx);
            assert_eq!(client.early.len(), 2);
            // ... then its connect's answer.
            let socket = Socket::builder()
                .functions(mock.functions())
                .connect(peer)
                .await
                .expect("connect");
            let writer = socket.send(GetWriter).await.expect("writer");
            client.on_connect_done(generation, Ok((socket, writer)), &mut ctx);
            let mut seen = Vec::new();
            for _ in 0..4 {
                seen.push(rx.recv().await.expect("event"));
            }
            assert!(
                matches!(seen[0], ClientEvent::Connected { attempt: 1, .. }),
                "{seen:?}"
            );
            assert!(
                matches!(&seen[1], ClientEvent::Received(b, _) if &b[..] == b"hi"),
                "{seen:?}"
            );
            assert!(matches!(seen[2], ClientEvent::Eof), "{seen:?}");
            // The EOF, replayed, ended the connection.
            assert!(
                matches!(seen[3], ClientEvent::Disconnected { cause: None }),
                "{seen:?}"
            );
            assert!(matches!(client.link, Link::Waiting));
            assert!(client.early.is_empty());
        });
    }
}
