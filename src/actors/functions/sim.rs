//! [`SimNetwork`]: a simulated stream network behind [`SocketFunctions`], in virtual time
//! and from one seed, for deterministic tests of many sockets, listeners and clients.
//!
//! It models what makes networks hard for a socket: latency, bounded buffers (a slow or
//! stalled reader blocks its peer's writes), partial accepts, resets, partitions and
//! full accept queues; for datagrams, latency, reordering, loss and full receive
//! buffers. Everything runs on the calling thread's actix system; with tokio's
//! clock paused, the same seed gives the same run, operation for operation
//! ([`SimNetwork::trace_hash`] tells).

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use actix::WeakRecipient;
use bytes::Bytes;
use tokio::time::Instant;

use super::SocketFunctions;
use crate::error::TransportError;
use crate::messages::functions::{
    Accept, Accepted, Bind, CloseSocket, Connect, Listen, OpenSocket, Ready, Received, RecvFrom,
    SendV, ShutdownWrite,
};
use crate::rng::SplitMix64;
use crate::types::{Address, Handle, Readiness, Sent, SocketKind};

/// How a [`SimNetwork`] behaves. Probabilities are per operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimConfig {
    /// Seeds every random choice of the network.
    pub seed: u64,
    /// One-way latency, chosen per segment in this range (segments of a direction still
    /// arrive in order, as TCP delivers them).
    pub latency: (Duration, Duration),
    /// Bytes one direction of a connection holds, in flight and unread: past it, writes
    /// would block until the peer reads.
    pub buffer: usize,
    /// Probability that a `sendv` takes only part of what it could.
    pub partial_accept: f64,
    /// Probability that a `sendv` resets its connection (after the bytes already in
    /// flight, which still arrive).
    pub reset: f64,
    /// Probability that a datagram is lost. Datagrams are not kept in order: each takes
    /// its own latency, so they may arrive reordered; one that finds its receiver's
    /// buffer (`buffer` bytes) full is dropped, as a kernel drops it.
    pub datagram_loss: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            latency: (Duration::from_micros(100), Duration::from_millis(5)),
            buffer: 64 * 1024,
            partial_accept: 0.2,
            reset: 0.0,
            datagram_loss: 0.0,
        }
    }
}

/// What crosses a direction of a connection, in order.
#[derive(Debug)]
enum Segment {
    Data(Bytes),
    Fin,
    Reset,
}

#[derive(Debug)]
struct Endpoint {
    events: Option<WeakRecipient<Ready>>,
    local: Option<Address>,
    peer_addr: Option<Address>,
    peer: Option<Handle>,
    /// Segments on their way here, with their arrival times (in order).
    incoming: VecDeque<(Instant, Segment)>,
    /// Bytes of `incoming`.
    incoming_bytes: usize,
    /// Arrived, unread.
    rx: VecDeque<Bytes>,
    rx_bytes: usize,
    eof: bool,
    /// Reset: reads give what had arrived, then the error; writes fail.
    reset: bool,
    /// A reset of this end's connection was counted (once per connection).
    reset_counted: bool,
    shut_write: bool,
    closed: bool,
    want_read: bool,
    want_write: bool,
    listener: Option<ListenerState>,
    /// A datagram socket: `rx` holds whole datagrams, with their senders in `from`.
    datagram: bool,
    from: VecDeque<Address>,
}

#[derive(Debug)]
struct ListenerState {
    backlog: usize,
    pending: VecDeque<(Handle, Address)>,
}

impl Endpoint {
    fn new(events: Option<WeakRecipient<Ready>>) -> Self {
        Endpoint {
            events,
            local: None,
            peer_addr: None,
            peer: None,
            incoming: VecDeque::new(),
            incoming_bytes: 0,
            rx: VecDeque::new(),
            rx_bytes: 0,
            eof: false,
            reset: false,
            reset_counted: false,
            shut_write: false,
            closed: false,
            want_read: false,
            want_write: false,
            listener: None,
            datagram: false,
            from: VecDeque::new(),
        }
    }
}

#[derive(Debug)]
struct State {
    config: SimConfig,
    rng: SplitMix64,
    endpoints: BTreeMap<Handle, Endpoint>,
    /// Listening addresses (few: looked up in order).
    listeners: Vec<(Address, Handle)>,
    /// Bound datagram sockets.
    datagram_ports: Vec<(Address, Handle)>,
    datagrams_lost: u64,
    next_handle: u64,
    next_port: u16,
    /// Until when the network is partitioned: nothing arrives, and connects wait.
    partition_until: Option<Instant>,
    /// A running hash of every operation and its outcome, with its virtual time.
    trace: u64,
    start: Instant,
    ops: u64,
    resets: u64,
    refused: u64,
}

impl State {
    fn record(&mut self, what: impl std::fmt::Debug) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.trace.hash(&mut h);
        (Instant::now() - self.start).as_nanos().hash(&mut h);
        format!("{what:?}").hash(&mut h);
        self.trace = h.finish();
        self.ops += 1;
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.config.latency;
        let span = hi.saturating_sub(lo).as_nanos() as u64;
        lo + Duration::from_nanos(self.rng.up_to(span))
    }

    /// How long the partition under way lasts from now, if one is.
    fn partitioned(&self) -> Option<Duration> {
        let now = Instant::now();
        self.partition_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// When a segment sent now to `to` arrives: after its latency, after the partition,
    /// and never before the segments ahead of it.
    fn arrival(&mut self, to: Handle) -> Instant {
        let mut at = Instant::now() + self.latency();
        if let Some(until) = self.partition_until {
            at = at.max(until + self.latency());
        }
        if let Some((last, _)) = self.endpoints.get(&to).and_then(|e| e.incoming.back()) {
            at = at.max(*last);
        }
        at
    }

    fn notify(&self, handle: Handle, readiness: Readiness) {
        if let Some(to) = self
            .endpoints
            .get(&handle)
            .and_then(|e| e.events.as_ref())
            .and_then(WeakRecipient::upgrade)
        {
            to.do_send(Ready { handle, readiness });
        }
    }

    /// The open datagram socket bound to `addr`.
    fn datagram_port(&self, addr: &Address) -> Option<Handle> {
        self.datagram_ports
            .iter()
            .find(|(a, h)| a == addr && self.endpoints.get(h).is_some_and(|e| !e.closed))
            .map(|(_, h)| *h)
    }

    /// A datagram endpoint's address, bound now if it was not.
    fn datagram_local(&mut self, handle: Handle) -> Option<Address> {
        let bound = self.endpoints.get(&handle)?.local.clone();
        if bound.is_some() {
            return bound;
        }
        let addr = Address::Inet(([10, 0, 0, 3], self.port()).into());
        self.endpoints.get_mut(&handle)?.local = Some(addr.clone());
        self.datagram_ports.push((addr.clone(), handle));
        Some(addr)
    }

    /// The open listener at `addr`.
    fn listener(&self, addr: &Address) -> Option<Handle> {
        self.listeners
            .iter()
            .find(|(a, h)| a == addr && self.endpoints.get(h).is_some_and(|e| !e.closed))
            .map(|(_, h)| *h)
    }

    fn new_handle(&mut self) -> Handle {
        self.next_handle += 1;
        Handle(self.next_handle)
    }

    fn port(&mut self) -> u16 {
        self.next_port = self.next_port.wrapping_add(1).max(1024);
        self.next_port
    }
}

/// A simulated network: a transport table ([`functions`](Self::functions)) whose
/// connections run in (virtual) time with latency, bounded buffers, partial accepts,
/// resets, partitions and accept-queue limits. Cloning gives another handle to the same
/// network.
///
/// ```
/// use sockactor::{SimConfig, SimNetwork, Listener, Socket};
/// use sockactor::messages::GetInfo;
///
/// # actix::System::new().block_on(async {
/// let net = SimNetwork::start(SimConfig { seed: 7, ..SimConfig::default() });
/// let (_listener, addr) = Listener::builder()
///     .functions(net.functions())
///     .bind("10.0.0.1:80".parse::<std::net::SocketAddr>().unwrap())
///     .await
///     .expect("bind");
/// let socket = Socket::builder()
///     .functions(net.functions())
///     .connect(addr)
///     .await
///     .expect("connect");
/// let info = socket.send(GetInfo).await.unwrap();
/// assert!(net.peer_of(info.handle).is_some(), "connected through the simulated network");
/// # });
/// ```
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<State>>,
    addr: Addr<SimNet>,
}

impl std::fmt::Debug for SimNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNetwork").finish_non_exhaustive()
    }
}

impl SimNetwork {
    /// Starts the network's actor on the current arbiter.
    pub fn start(config: SimConfig) -> Self {
        let state = Arc::new(Mutex::new(State {
            rng: SplitMix64::new(config.seed),
            config,
            endpoints: BTreeMap::new(),
            listeners: Vec::new(),
            datagram_ports: Vec::new(),
            datagrams_lost: 0,
            next_handle: 0,
            next_port: 40_000,
            partition_until: None,
            trace: 0,
            start: Instant::now(),
            ops: 0,
            resets: 0,
            refused: 0,
        }));
        let addr = crate::actors::start_unbudgeted(SimNet {
            state: state.clone(),
        });
        SimNetwork { state, addr }
    }

    /// The transport table: every operation, the shutdown of the sending half included.
    pub fn functions(&self) -> SocketFunctions {
        SocketFunctions::from_actor_ex(self.addr.clone())
            .with_shutdown(self.addr.clone().recipient())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Nothing arrives, and no connect completes, for `length` from now; what was sent
    /// meanwhile arrives after it, in order.
    pub fn partition(&self, length: Duration) {
        let mut state = self.lock();
        let until = Instant::now() + length;
        state.partition_until = Some(state.partition_until.map_or(until, |u| u.max(until)));
        state.record(("partition", length));
    }

    /// Resets the connection of `handle` now, as a `sendv` reset would.
    pub fn reset(&self, handle: Handle) {
        let mut state = self.lock();
        reset(&mut state, handle, &self.addr);
    }

    /// The handle at the other end of `handle`'s connection.
    pub fn peer_of(&self, handle: Handle) -> Option<Handle> {
        self.lock().endpoints.get(&handle).and_then(|e| e.peer)
    }

    /// Handles opened and not yet closed (a socket that ended without closing its handle
    /// leaks one).
    pub fn open_handles(&self) -> Vec<Handle> {
        let state = self.lock();
        state
            .endpoints
            .iter()
            .filter(|(_, e)| !e.closed)
            .map(|(h, _)| *h)
            .collect()
    }

    /// A hash of every operation so far, its outcome and its virtual time: two runs with
    /// the same seed and the same program have the same hash.
    pub fn trace_hash(&self) -> u64 {
        self.lock().trace
    }

    /// What the network has done so far.
    pub fn counts(&self) -> SimCounts {
        let state = self.lock();
        SimCounts {
            operations: state.ops,
            resets: state.resets,
            refused_connects: state.refused,
            datagrams_lost: state.datagrams_lost,
        }
    }
}

/// What a [`SimNetwork`] has done so far ([`SimNetwork::counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimCounts {
    /// Operations handled (every transport call, and each partition and reset).
    pub operations: u64,
    /// Connections reset (by chance, by data sent to a closed end, by a close with
    /// unread bytes, or by [`SimNetwork::reset`]).
    pub resets: u64,
    /// Connects refused (nobody listening, or a full accept queue).
    pub refused_connects: u64,
    /// Datagrams lost (dropped at random, sent to an unbound address, dropped at a
    /// full receive buffer, or sent to a connected socket by another than its peer).
    pub datagrams_lost: u64,
}

/// The actor behind a [`SimNetwork`].
#[derive(Debug)]
pub(crate) struct SimNet {
    state: Arc<Mutex<State>>,
}

impl Actor for SimNet {
    type Context = Context<Self>;
}

impl SimNet {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn err(kind: io::ErrorKind) -> TransportError {
    TransportError::from(kind)
}

/// Queues `segment` to `to`, and a wake-up at its arrival.
fn send_segment(state: &mut State, to: Handle, segment: Segment, net: &Addr<SimNet>) {
    let at = state.arrival(to);
    let Some(end) = state.endpoints.get_mut(&to) else {
        return;
    };
    if end.closed {
        return;
    }
    if let Segment::Data(b) = &segment {
        end.incoming_bytes += b.len();
    }
    end.incoming.push_back((at, segment));
    net.do_send(Schedule { to, at });
}

fn reset(state: &mut State, handle: Handle, net: &Addr<SimNet>) {
    let Some(end) = state.endpoints.get_mut(&handle) else {
        return;
    };
    if end.reset || end.closed {
        return;
    }
    end.reset = true;
    let peer = end.peer;
    count_reset(state, handle, peer);
    state.record(("reset", handle));
    if let Some(peer) = peer {
        send_segment(state, peer, Segment::Reset, net);
    }
    state.notify(handle, Readiness::Readable);
    state.notify(handle, Readiness::Writable);
}

/// Counts a reset of the connection between `a` and `b`, once per connection (its two
/// ends may each reset it before hearing of the other's).
fn count_reset(state: &mut State, a: Handle, b: Option<Handle>) {
    let ends = [Some(a), b];
    let counted = ends
        .iter()
        .flatten()
        .any(|h| state.endpoints.get(h).is_some_and(|e| e.reset_counted));
    if !counted {
        state.resets += 1;
    }
    for h in ends.into_iter().flatten() {
        if let Some(end) = state.endpoints.get_mut(&h) {
            end.reset_counted = true;
        }
    }
}

/// Wake up at `at` to move arrived segments of `to` into its receive buffer.
#[derive(Message)]
#[rtype(result = "()")]
struct Schedule {
    to: Handle,
    at: Instant,
}

impl Handler<Schedule> for SimNet {
    type Result = ();
    fn handle(&mut self, msg: Schedule, ctx: &mut Context<Self>) {
        let wait = msg.at.saturating_duration_since(Instant::now());
        let to = msg.to;
        ctx.run_later(wait, move |act, ctx| act.arrive(to, ctx));
    }
}

impl SimNet {
    /// One datagram: lost, or on its way with a latency of its own.
    fn send_datagram(
        &self,
        state: &mut State,
        handle: Handle,
        dest: Option<Address>,
        segments: &[Bytes],
        ctx: &mut Context<Self>,
    ) -> Result<Sent, TransportError> {
        let Some(dest) = dest else {
            return Err(err(io::ErrorKind::NotConnected));
        };
        let Some(from) = state.datagram_local(handle) else {
            return Err(TransportError::UnknownHandle(handle));
        };
        let len: usize = segments.iter().map(Bytes::len).sum();
        let lost = state.rng.chance(state.config.datagram_loss);
        match state.datagram_port(&dest) {
            Some(to) if !lost => {
                let mut data = Vec::with_capacity(len);
                for s in segments {
                    data.extend_from_slice(s);
                }
                let mut wait = state.latency();
                if let Some(until) = state.partition_until {
                    wait = wait.max(until.saturating_duration_since(Instant::now()));
                }
                let datagram = Bytes::from(data);
                ctx.run_later(wait, move |act, ctx| act.deliver(to, datagram, from, ctx));
            }
            // Lost, or nobody bound there: gone without a word, as UDP goes.
            _ => state.datagrams_lost += 1,
        }
        Ok(Sent::Accepted(len))
    }

    /// A datagram arrives: into the receive buffer, or dropped when it is full.
    fn deliver(&mut self, to: Handle, datagram: Bytes, from: Address, ctx: &mut Context<Self>) {
        let mut state = self.lock();
        if let Some(wait) = state.partitioned() {
            // Nothing arrives during a partition, not even what was on its way.
            ctx.run_later(wait, move |act, ctx| act.deliver(to, datagram, from, ctx));
            return;
        }
        let buffer = state.config.buffer;
        let Some(end) = state.endpoints.get_mut(&to) else {
            return;
        };
        let full = end.rx_bytes + datagram.len() > buffer && !end.rx.is_empty();
        // A connected datagram socket takes datagrams from its peer only, as a kernel's
        // connected UDP socket does.
        let stranger = end.peer_addr.as_ref().is_some_and(|peer| *peer != from);
        if end.closed || full || stranger {
            state.datagrams_lost += 1;
            state.record(("datagram dropped", to));
            return;
        }
        end.rx_bytes += datagram.len();
        end.rx.push_back(datagram);
        end.from.push_back(from);
        let want = std::mem::take(&mut end.want_read);
        state.record(("datagram arrived", to));
        if want {
            state.notify(to, Readiness::Readable);
        }
    }

    fn arrive(&mut self, to: Handle, ctx: &mut Context<Self>) {
        let mut state = self.lock();
        if let Some(wait) = state.partitioned() {
            // Nothing arrives during a partition, not even what was on its way.
            ctx.run_later(wait, move |act, ctx| act.arrive(to, ctx));
            return;
        }
        let now = Instant::now();
        let (mut readable, mut writable) = (false, false);
        let Some(end) = state.endpoints.get_mut(&to) else {
            return;
        };
        while end.incoming.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, segment)) = end.incoming.pop_front() else {
                break;
            };
            match segment {
                Segment::Data(bytes) => {
                    end.incoming_bytes -= bytes.len();
                    if !end.closed && !end.reset {
                        end.rx_bytes += bytes.len();
                        end.rx.push_back(bytes);
                        readable = true;
                    }
                }
                Segment::Fin => {
                    end.eof = true;
                    readable = true;
                }
                Segment::Reset => {
                    end.reset = true;
                    readable = true;
                    writable = true;
                }
            }
        }
        let peer = end.peer;
        if readable && std::mem::take(&mut end.want_read) {
            state.notify(to, Readiness::Readable);
        }
        if writable {
            state.notify(to, Readiness::Writable);
        }
        // Arrivals free no room for the sender: only reads do. But a reset or data to a
        // closed end must not leave the sender waiting for room that will not come.
        if let (true, Some(peer)) = (writable, peer) {
            state.notify(peer, Readiness::Writable);
        }
    }
}

impl Handler<OpenSocket> for SimNet {
    type Result = Result<Handle, TransportError>;
    fn handle(&mut self, msg: OpenSocket, _: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let handle = state.new_handle();
        let mut end = Endpoint::new(Some(msg.events));
        end.datagram = msg.kind == SocketKind::Datagram;
        state.endpoints.insert(handle, end);
        state.record(("open", handle));
        Ok(handle)
    }
}

impl Handler<Bind> for SimNet {
    type Result = Result<Address, TransportError>;
    fn handle(&mut self, msg: Bind, _: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let addr = match msg.addr {
            Address::Inet(mut a) => {
                if a.port() == 0 {
                    a.set_port(state.port());
                }
                Address::Inet(a)
            }
            other => other,
        };
        let taken = state.listener(&addr).is_some() || state.datagram_port(&addr).is_some();
        let answer = match state.endpoints.get_mut(&msg.handle) {
            None => Err(TransportError::UnknownHandle(msg.handle)),
            Some(_) if taken => Err(err(io::ErrorKind::AddrInUse)),
            Some(end) => {
                end.local = Some(addr.clone());
                if end.datagram {
                    state.datagram_ports.push((addr.clone(), msg.handle));
                }
                Ok(addr)
            }
        };
        state.record(("bind", msg.handle, &answer.as_ref().ok()));
        answer
    }
}

impl Handler<Listen> for SimNet {
    type Result = Result<(), TransportError>;
    fn handle(&mut self, msg: Listen, _: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let Some(end) = state.endpoints.get_mut(&msg.handle) else {
            return Err(TransportError::UnknownHandle(msg.handle));
        };
        let Some(local) = end.local.clone() else {
            return Err(err(io::ErrorKind::InvalidInput));
        };
        end.listener = Some(ListenerState {
            backlog: (msg.backlog as usize).max(1),
            pending: VecDeque::new(),
        });
        state.listeners.retain(|(a, _)| *a != local);
        state.listeners.push((local, msg.handle));
        state.record(("listen", msg.handle, msg.backlog));
        Ok(())
    }
}

impl Handler<Accept> for SimNet {
    type Result = Result<Accepted, TransportError>;
    fn handle(&mut self, msg: Accept, _: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let Some(end) = state.endpoints.get_mut(&msg.handle) else {
            return Err(TransportError::UnknownHandle(msg.handle));
        };
        let Some(listener) = end.listener.as_mut() else {
            return Err(err(io::ErrorKind::InvalidInput));
        };
        let answer = match listener.pending.pop_front() {
            Some((handle, peer)) => Accepted::Connection { handle, peer },
            None => {
                end.want_read = true;
                Accepted::WouldBlock
            }
        };
        // The accepted connection's notices go where the accept says.
        if let Accepted::Connection { handle, .. } = &answer {
            if let Some(conn) = state.endpoints.get_mut(handle) {
                conn.events = Some(msg.events);
            }
        }
        state.record(("accept", msg.handle, &answer));
        Ok(answer)
    }
}

impl Handler<Connect> for SimNet {
    type Result = ResponseActFuture<Self, Result<(), TransportError>>;
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        if state.endpoints.get(&msg.handle).is_some_and(|e| e.datagram) {
            // A connected datagram socket: a default destination, no handshake.
            state.datagram_local(msg.handle);
            if let Some(end) = state.endpoints.get_mut(&msg.handle) {
                end.peer_addr = Some(msg.addr.clone());
            }
            state.record(("connect datagram", msg.handle, &msg.addr));
            return Box::pin(actix::fut::ready(Ok(())));
        }
        let now = Instant::now();
        // The answer comes a round trip later (after any partition).
        let mut at = now + state.latency() + state.latency();
        if let Some(until) = state.partition_until {
            at = at.max(until + state.latency());
        }
        let listener = state.listener(&msg.addr);
        let room = listener
            .and_then(|l| state.endpoints.get(&l))
            .filter(|l| !l.closed)
            .and_then(|l| l.listener.as_ref())
            .map(|l| l.pending.len() < l.backlog);
        let answer = match (listener, room) {
            (Some(listener), Some(true)) => {
                let port = state.port();
                let local = Address::Inet(([10, 0, 0, 2], port).into());
                let server = state.new_handle();
                let mut accepted = Endpoint::new(None);
                accepted.local = Some(msg.addr.clone());
                accepted.peer_addr = Some(local.clone());
                accepted.peer = Some(msg.handle);
                match state.endpoints.get_mut(&msg.handle) {
                    Some(end) if !end.closed => {
                        end.local = Some(local.clone());
                        end.peer_addr = Some(msg.addr.clone());
                        end.peer = Some(server);
                        state.endpoints.insert(server, accepted);
                        if let Some(l) = state
                            .endpoints
                            .get_mut(&listener)
                            .and_then(|l| l.listener.as_mut())
                        {
                            l.pending.push_back((server, local));
                        }
                        let want = state
                            .endpoints
                            .get_mut(&listener)
                            .is_some_and(|l| std::mem::take(&mut l.want_read));
                        if want {
                            state.notify(listener, Readiness::Readable);
                        }
                        Ok(())
                    }
                    _ => Err(TransportError::UnknownHandle(msg.handle)),
                }
            }
            _ => {
                state.refused += 1;
                Err(err(io::ErrorKind::ConnectionRefused))
            }
        };
        state.record(("connect", msg.handle, &msg.addr, answer.is_ok()));
        drop(state);
        // No connect completes during a partition, even one begun after it was asked.
        Box::pin(
            tokio::time::sleep_until(at)
                .into_actor(self)
                .then(move |_, act, _| {
                    let wait = act.lock().partitioned();
                    async move {
                        if let Some(wait) = wait {
                            tokio::time::sleep(wait).await;
                        }
                        answer
                    }
                    .into_actor(act)
                }),
        )
    }
}

impl Handler<SendV> for SimNet {
    type Result = Result<Sent, TransportError>;
    fn handle(&mut self, msg: SendV, ctx: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let offered = msg.len();
        let net = ctx.address();
        let config = state.config;
        let reset_now = state.rng.chance(config.reset);
        let partial = state.rng.chance(config.partial_accept);
        let cut = state.rng.next_u64();
        let buffer = config.buffer;
        let Some(end) = state.endpoints.get(&msg.handle) else {
            return Err(TransportError::UnknownHandle(msg.handle));
        };
        if end.datagram {
            let dest = msg.to.clone().or_else(|| end.peer_addr.clone());
            let answer = self.send_datagram(&mut state, msg.handle, dest, &msg.segments, ctx);
            state.record(("sendto", msg.handle, offered, &answer));
            return answer;
        }
        let answer = if end.reset {
            Err(err(io::ErrorKind::ConnectionReset))
        } else if end.shut_write || end.closed {
            Err(err(io::ErrorKind::BrokenPipe))
        } else if let Some(peer) = end.peer {
            let (peer_closed, used) = state
                .endpoints
                .get(&peer)
                .map_or((true, 0), |p| (p.closed, p.rx_bytes + p.incoming_bytes));
            if peer_closed {
                // Data to a closed end is answered with a reset.
                reset(&mut state, msg.handle, &net);
                Err(err(io::ErrorKind::ConnectionReset))
            } else if reset_now && offered > 0 {
                reset(&mut state, msg.handle, &net);
                Err(err(io::ErrorKind::ConnectionReset))
            } else {
                let room = buffer.saturating_sub(used);
                let mut take = offered.min(room);
                if partial && take > 1 {
                    // Only part: 1 to `take - 1` bytes.
                    take = 1 + (cut % (take as u64 - 1)) as usize;
                }
                if take == 0 && offered > 0 {
                    if let Some(end) = state.endpoints.get_mut(&msg.handle) {
                        end.want_write = true;
                    }
                    Ok(Sent::WouldBlock)
                } else {
                    let mut data = Vec::with_capacity(take);
                    let mut left = take;
                    for s in &msg.segments {
                        if left == 0 {
                            break;
                        }
                        let n = s.len().min(left);
                        data.extend_from_slice(&s[..n]);
                        left -= n;
                    }
                    if take > 0 {
                        send_segment(&mut state, peer, Segment::Data(data.into()), &net);
                    }
                    Ok(Sent::Accepted(take))
                }
            }
        } else {
            Err(err(io::ErrorKind::NotConnected))
        };
        state.record(("sendv", msg.handle, offered, &answer));
        answer
    }
}

impl Handler<RecvFrom> for SimNet {
    type Result = Result<Received, TransportError>;
    fn handle(&mut self, msg: RecvFrom, _: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let Some(end) = state.endpoints.get_mut(&msg.handle) else {
            return Err(TransportError::UnknownHandle(msg.handle));
        };
        let max = msg.max_len.max(1);
        if end.datagram {
            let answer = match end.rx.pop_front() {
                Some(bytes) => {
                    end.rx_bytes -= bytes.len();
                    let from = end.from.pop_front();
                    Ok(if bytes.len() > max {
                        Received::Truncated {
                            bytes: bytes.slice(..max),
                            from,
                        }
                    } else {
                        Received::Data { bytes, from }
                    })
                }
                None => {
                    end.want_read = true;
                    Ok(Received::WouldBlock)
                }
            };
            state.record(("recvfrom", msg.handle, &answer));
            return answer;
        }
        let answer = if let Some(front) = end.rx.front_mut() {
            let bytes = if front.len() <= max {
                end.rx.pop_front().unwrap_or_default()
            } else {
                front.split_to(max)
            };
            end.rx_bytes -= bytes.len();
            Ok(Received::Data {
                bytes,
                from: end.peer_addr.clone(),
            })
        } else if end.reset {
            Err(err(io::ErrorKind::ConnectionReset))
        } else if end.eof {
            Ok(Received::Eof)
        } else {
            end.want_read = true;
            Ok(Received::WouldBlock)
        };
        let freed = matches!(answer, Ok(Received::Data { .. }));
        let peer = end.peer;
        state.record((
            "recv",
            msg.handle,
            answer.as_ref().map(|r| match r {
                Received::Data { bytes, .. } => bytes.len() as i64,
                Received::Eof => -1,
                _ => -2,
            }),
        ));
        if let (true, Some(peer)) = (freed, peer) {
            let waiting = state
                .endpoints
                .get_mut(&peer)
                .is_some_and(|p| std::mem::take(&mut p.want_write));
            if waiting {
                state.notify(peer, Readiness::Writable);
            }
        }
        answer
    }
}

impl Handler<ShutdownWrite> for SimNet {
    type Result = Result<(), TransportError>;
    fn handle(&mut self, msg: ShutdownWrite, ctx: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let Some(end) = state.endpoints.get_mut(&msg.handle) else {
            return Err(TransportError::UnknownHandle(msg.handle));
        };
        let answer = if end.reset {
            Err(err(io::ErrorKind::ConnectionReset))
        } else {
            let first = !std::mem::replace(&mut end.shut_write, true);
            if let (true, Some(peer)) = (first, end.peer) {
                send_segment(&mut state, peer, Segment::Fin, &ctx.address());
            }
            Ok(())
        };
        state.record(("shutdown", msg.handle, answer.is_ok()));
        answer
    }
}

impl Handler<CloseSocket> for SimNet {
    type Result = Result<(), TransportError>;
    fn handle(&mut self, msg: CloseSocket, ctx: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let net = ctx.address();
        let Some(end) = state.endpoints.get_mut(&msg.handle) else {
            return Err(TransportError::UnknownHandle(msg.handle));
        };
        if end.closed {
            return Err(TransportError::UnknownHandle(msg.handle));
        }
        end.closed = true;
        end.want_read = false;
        end.want_write = false;
        // Closing with unread data resets the connection (as Linux does); otherwise the
        // peer reads our EOF, unless our sending half was shut down already.
        let unread = end.rx_bytes > 0 || end.incoming_bytes > 0;
        let (peer, reset_already, fin_sent) = (end.peer, end.reset, end.shut_write);
        let pending: Vec<Handle> = end
            .listener
            .take()
            .map(|l| l.pending.into_iter().map(|(h, _)| h).collect())
            .unwrap_or_default();
        if let Some(peer) = peer {
            if !reset_already {
                if unread {
                    count_reset(&mut state, msg.handle, Some(peer));
                    send_segment(&mut state, peer, Segment::Reset, &net);
                } else if !fin_sent {
                    send_segment(&mut state, peer, Segment::Fin, &net);
                }
            }
        }
        // Connections never accepted are reset.
        for h in pending {
            if let Some(e) = state.endpoints.get_mut(&h) {
                e.closed = true;
            }
            if let Some(client) = state.endpoints.get(&h).and_then(|e| e.peer) {
                send_segment(&mut state, client, Segment::Reset, &net);
            }
        }
        state.record(("close", msg.handle));
        Ok(())
    }
}
