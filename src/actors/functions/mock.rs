//! [`MockTransport`]: a scripted, recording transport for deterministic tests: streams,
//! listeners and datagram sockets.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, ResponseActFuture, WeakRecipient,
    WrapFuture,
};
use bytes::Bytes;
use tokio::time::Instant;

use super::SocketFunctions;
use crate::error::TransportError;
use crate::messages::functions::{
    Accept, Accepted, Address, Bind, CloseSocket, Connect, Handle, Listen, OpenSocket, Readiness,
    Ready, Received, RecvFrom, SendV, Sent, ShutdownWrite, SocketKind,
};

/// What the mock does with one `sendv` call on a handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendStep {
    /// Accept up to this many bytes (a partial write when fewer than offered).
    /// `Accept(0)` answers `Accepted(0)`, which breaks the transport contract: useful to
    /// test that a socket copes with a broken transport.
    Accept(usize),
    /// Accept everything offered.
    AcceptAll,
    /// Would block; the handle becomes writable (a [`Ready`] is sent) after this delay of
    /// (possibly paused) tokio time.
    WouldBlock(Duration),
    /// Would block until [`MockTransport::release`] is called for the handle.
    Hold,
    /// Fail with this error kind; the handle stays failed (every later `sendv` fails
    /// the same way), as a reset connection does.
    Fail(io::ErrorKind),
    /// Take up to `bytes` bytes now, but answer only after `after` of (possibly paused)
    /// tokio time: a slow transport, so a test can act while a `sendv` is out.
    Slow {
        /// Bytes taken.
        bytes: usize,
        /// Delay before the answer.
        after: Duration,
    },
}

/// One recorded `sendv` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendRecord {
    /// Segments offered.
    pub segments: usize,
    /// Bytes offered.
    pub offered: usize,
    /// Bytes accepted (0 for would-block and errors).
    pub accepted: usize,
    /// The call was answered with would-block.
    pub would_block: bool,
    /// The call failed with this error kind.
    pub failed: Option<io::ErrorKind>,
    /// When the call was made (tokio time).
    pub at: Instant,
}

/// One datagram a mock datagram handle sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockDatagram {
    /// The bytes the `sendv` call accepted (all of them, unless a step said otherwise).
    pub bytes: Vec<u8>,
    /// The destination the call carried (`None` on a connected socket).
    pub to: Option<Address>,
}

#[derive(Debug)]
enum Inbound {
    /// Bytes, and for datagrams their sender.
    Data(Bytes, Option<Address>),
    Eof,
    Error(io::ErrorKind),
}

#[derive(Debug)]
struct MockHandle {
    kind: SocketKind,
    /// Weak, and dropped on close: the mock keeps no socket alive.
    events: Option<WeakRecipient<Ready>>,
    script: VecDeque<SendStep>,
    log: Vec<SendRecord>,
    written: Vec<u8>,
    inbound: VecDeque<Inbound>,
    read_waiting: bool,
    held: bool,
    failed: Option<io::ErrorKind>,
    eof: bool,
    closed: bool,
    /// The sending half was shut down: later sends fail with `BrokenPipe`.
    shut_write: bool,
    peer: Option<Address>,
    local: Option<Address>,
    reuse_port: bool,
    /// The backlog given to `listen`, once listening.
    listening: Option<u32>,
    /// Inbound connections not yet accepted, oldest first.
    pending: VecDeque<Handle>,
    accept_errors: VecDeque<io::ErrorKind>,
    accept_waiting: bool,
    accept_calls: usize,
    datagrams: Vec<MockDatagram>,
    /// The kernel buffer sizes asked for when it was opened.
    buffers: crate::types::SocketBuffers,
}

impl MockHandle {
    fn new(
        kind: SocketKind,
        events: Option<WeakRecipient<Ready>>,
        script: VecDeque<SendStep>,
    ) -> Self {
        MockHandle {
            kind,
            events,
            script,
            log: Vec::new(),
            written: Vec::new(),
            inbound: VecDeque::new(),
            read_waiting: false,
            held: false,
            failed: None,
            eof: false,
            closed: false,
            shut_write: false,
            peer: None,
            local: None,
            reuse_port: false,
            listening: None,
            pending: VecDeque::new(),
            accept_errors: VecDeque::new(),
            accept_waiting: false,
            accept_calls: 0,
            datagrams: Vec::new(),
            buffers: crate::types::SocketBuffers::default(),
        }
    }

    fn notify(&self, handle: Handle, readiness: Readiness) {
        if let Some(events) = self.events.as_ref().and_then(WeakRecipient::upgrade) {
            events.do_send(Ready { handle, readiness });
        }
    }
}

#[derive(Debug)]
struct MockState {
    next: u64,
    handles: HashMap<Handle, MockHandle>,
    prescripted: HashMap<Handle, VecDeque<SendStep>>,
    default_step: SendStep,
    connect_failures: HashMap<Address, io::ErrorKind>,
    connect_delays: HashMap<Address, Duration>,
    /// The next port handed out for a bind to port 0.
    next_port: u16,
}

impl MockState {
    /// A new handle, numbered in order with every other handle of the mock.
    fn add(&mut self, kind: SocketKind, events: Option<WeakRecipient<Ready>>) -> Handle {
        self.next += 1;
        let handle = Handle(self.next);
        let script = self.prescripted.remove(&handle).unwrap_or_default();
        self.handles
            .insert(handle, MockHandle::new(kind, events, script));
        handle
    }

    /// `addr` with a port chosen for port 0.
    fn assign_port(&mut self, addr: Address) -> Address {
        match addr {
            Address::Inet(mut a) if a.port() == 0 => {
                a.set_port(self.next_port);
                self.next_port = self.next_port.wrapping_add(1).max(40_000);
                Address::Inet(a)
            }
            other => other,
        }
    }

    /// Whether an open handle other than `except` holds `addr` without both asking for
    /// `SO_REUSEPORT`.
    fn in_use(&self, addr: &Address, except: Handle, reuse_port: bool) -> bool {
        self.handles.iter().any(|(h, m)| {
            *h != except
                && !m.closed
                && m.local.as_ref() == Some(addr)
                && !(reuse_port && m.reuse_port)
        })
    }
}

/// The mock transport's actor. Tests hold the [`MockTransport`] controller instead.
#[derive(Debug)]
pub struct MockFunctions {
    shared: Arc<Mutex<MockState>>,
}

/// A deterministic transport for tests: script what each `sendv` does per handle, feed
/// inbound data, EOF and errors, make connects fail; afterwards read back every `sendv`
/// call and the whole byte stream each handle received.
///
/// It also plays listeners and datagram sockets: [`connect_inbound`](Self::connect_inbound)
/// puts a connection in a listening handle's backlog (the new handle is scripted and
/// inspected like any other), [`fail_accept`](Self::fail_accept) makes an `accept` fail,
/// [`push_datagram`](Self::push_datagram) and [`datagrams`](Self::datagrams) feed and
/// record datagrams, which are never merged or split. A bind to port 0 gets a port from
/// 40000 up; binding an address an open handle holds fails with `AddrInUse` unless both
/// asked for `reuse_port`.
///
/// Handles are numbered from 1 in the order they are opened (inbound connections
/// included, when [`connect_inbound`](Self::connect_inbound) makes them), so a test can
/// script a handle before its socket exists. Unscripted calls use the default step
/// ([`SendStep::AcceptAll`] unless changed). Delays use tokio time, so with paused time
/// a test runs instantly and the same way every time.
///
/// ```
/// use std::time::Duration;
/// use sockactor::messages::{Handle, Write};
/// use sockactor::{MockTransport, SendStep, Socket};
///
/// let runtime = || {
///     tokio::runtime::Builder::new_current_thread()
///         .enable_all()
///         .start_paused(true)
///         .build()
///         .expect("runtime")
/// };
/// actix::System::with_tokio_rt(runtime).block_on(async {
///     let mock = MockTransport::start();
///     // Handle 1 takes 3 bytes, then blocks for 5 ms, then takes the rest.
///     mock.script_sendv(Handle(1), [SendStep::Accept(3), SendStep::WouldBlock(Duration::from_millis(5))]);
///     let peer: std::net::SocketAddr = "127.0.0.1:9".parse().expect("addr");
///     let socket = Socket::builder()
///         .functions(mock.functions())
///         .connect(peer)
///         .await
///         .expect("connect");
///     let done = socket.send(Write::new(&b"hello world"[..])).await.expect("mailbox").expect("written");
///     assert_eq!((done.sendv_calls, done.would_blocks), (2, 1));
///     assert_eq!(mock.written(Handle(1)), b"hello world");
///     assert_eq!(mock.sendv_log(Handle(1)).len(), 3);
/// });
/// ```
#[derive(Clone, Debug)]
pub struct MockTransport {
    shared: Arc<Mutex<MockState>>,
    addr: Addr<MockFunctions>,
}

impl MockTransport {
    /// Starts the mock's actor on the current arbiter.
    pub fn start() -> Self {
        let shared = Arc::new(Mutex::new(MockState {
            next: 0,
            handles: HashMap::new(),
            prescripted: HashMap::new(),
            default_step: SendStep::AcceptAll,
            connect_failures: HashMap::new(),
            connect_delays: HashMap::new(),
            next_port: 40_000,
        }));
        let addr = crate::actors::start_unbudgeted(MockFunctions {
            shared: shared.clone(),
        });
        MockTransport { shared, addr }
    }

    /// A transport table with every operation (`bind`, `listen` and `accept` included)
    /// handled by this mock, except the optional `shutdown` of the sending half (see
    /// [`functions_with_shutdown`](Self::functions_with_shutdown)).
    pub fn functions(&self) -> SocketFunctions {
        SocketFunctions::from_actor_ex(self.addr.clone())
    }

    /// [`functions`](Self::functions) plus the shutdown of the sending half, as the
    /// system transport has it: a graceful close then shuts the sending half down before
    /// it closes the handle ([`is_shut_down`](Self::is_shut_down)).
    pub fn functions_with_shutdown(&self) -> SocketFunctions {
        self.functions()
            .with_shutdown(self.addr.clone().recipient())
    }

    /// Whether the handle's sending half was shut down.
    pub fn is_shut_down(&self, handle: Handle) -> bool {
        self.lock()
            .handles
            .get(&handle)
            .is_some_and(|h| h.shut_write)
    }

    /// The mock's actor.
    pub fn actor(&self) -> &Addr<MockFunctions> {
        &self.addr
    }

    fn lock(&self) -> MutexGuard<'_, MockState> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends steps to a handle's `sendv` script (the handle may not be open yet).
    pub fn script_sendv(&self, handle: Handle, steps: impl IntoIterator<Item = SendStep>) {
        let mut state = self.lock();
        match state.handles.get_mut(&handle) {
            Some(h) => h.script.extend(steps),
            None => state.prescripted.entry(handle).or_default().extend(steps),
        }
    }

    /// What `sendv` does once a handle's script is used up (default: accept all).
    pub fn set_default_step(&self, step: SendStep) {
        self.lock().default_step = step;
    }

    /// Ends a [`SendStep::Hold`]: the handle becomes writable.
    pub fn release(&self, handle: Handle) {
        let mut state = self.lock();
        if let Some(h) = state.handles.get_mut(&handle) {
            if std::mem::take(&mut h.held) {
                h.notify(handle, Readiness::Writable);
            }
        }
    }

    /// A client connects to the listening handle `listener` from `peer`: a new handle
    /// (numbered like any other) waits in its backlog until accepted, and a listener
    /// waiting for a connection is told. Data pushed to the new handle before it is
    /// accepted is kept. `None` if `listener` is not listening.
    pub fn connect_inbound(&self, listener: Handle, peer: impl Into<Address>) -> Option<Handle> {
        let mut state = self.lock();
        let local = match state.handles.get(&listener) {
            Some(l) if !l.closed && l.listening.is_some() => l.local.clone(),
            _ => return None,
        };
        let handle = state.add(SocketKind::Stream, None);
        if let Some(h) = state.handles.get_mut(&handle) {
            h.peer = Some(peer.into());
            h.local = local;
        }
        if let Some(l) = state.handles.get_mut(&listener) {
            l.pending.push_back(handle);
            if std::mem::take(&mut l.accept_waiting) {
                l.notify(listener, Readiness::Readable);
            }
        }
        Some(handle)
    }

    /// The next `accept` on `listener` fails with `kind` (each call queues one failure,
    /// taken before any waiting connection). A listener waiting for a connection is
    /// told, so it calls.
    pub fn fail_accept(&self, listener: Handle, kind: io::ErrorKind) {
        let mut state = self.lock();
        if let Some(l) = state.handles.get_mut(&listener) {
            l.accept_errors.push_back(kind);
            if std::mem::take(&mut l.accept_waiting) {
                l.notify(listener, Readiness::Readable);
            }
        }
    }

    /// A datagram from `from` for the datagram handle, delivered whole by one
    /// `recvfrom` (or as [`Received::Truncated`] if longer than its `max_len`).
    pub fn push_datagram(&self, handle: Handle, bytes: impl Into<Bytes>, from: impl Into<Address>) {
        self.push_inbound_item(handle, Inbound::Data(bytes.into(), Some(from.into())));
    }

    fn push_inbound_item(&self, handle: Handle, item: Inbound) {
        let mut state = self.lock();
        if let Some(h) = state.handles.get_mut(&handle) {
            h.inbound.push_back(item);
            if std::mem::take(&mut h.read_waiting) {
                h.notify(handle, Readiness::Readable);
            }
        }
    }

    /// Bytes from the peer, delivered to the next `recvfrom` calls (on a stream, none
    /// is nothing to read).
    pub fn push_inbound(&self, handle: Handle, bytes: impl Into<Bytes>) {
        self.push_inbound_item(handle, Inbound::Data(bytes.into(), None));
    }

    /// The peer closes its sending half after the inbound data queued so far.
    pub fn push_eof(&self, handle: Handle) {
        self.push_inbound_item(handle, Inbound::Eof);
    }

    /// A `recvfrom` error after the inbound data queued so far.
    pub fn push_read_error(&self, handle: Handle, kind: io::ErrorKind) {
        self.push_inbound_item(handle, Inbound::Error(kind));
    }

    /// Connects to `addr` fail with `kind`.
    pub fn fail_connect(&self, addr: impl Into<Address>, kind: io::ErrorKind) {
        self.lock().connect_failures.insert(addr.into(), kind);
    }

    /// Connects to `addr` answer only after `delay` of (possibly paused) tokio time: a
    /// slow or silent peer, for connect timeouts.
    pub fn delay_connect(&self, addr: impl Into<Address>, delay: Duration) {
        self.lock().connect_delays.insert(addr.into(), delay);
    }

    /// Every byte the handle accepted, in order.
    pub fn written(&self, handle: Handle) -> Vec<u8> {
        self.lock()
            .handles
            .get(&handle)
            .map(|h| h.written.clone())
            .unwrap_or_default()
    }

    /// Every `sendv` call on the handle.
    pub fn sendv_log(&self, handle: Handle) -> Vec<SendRecord> {
        self.lock()
            .handles
            .get(&handle)
            .map(|h| h.log.clone())
            .unwrap_or_default()
    }

    /// Number of `sendv` calls on the handle.
    pub fn sendv_calls(&self, handle: Handle) -> usize {
        self.lock().handles.get(&handle).map_or(0, |h| h.log.len())
    }

    /// Handles opened so far.
    pub fn handles(&self) -> Vec<Handle> {
        let mut v: Vec<Handle> = self.lock().handles.keys().copied().collect();
        v.sort();
        v
    }

    /// Whether the handle has been closed.
    pub fn is_closed(&self, handle: Handle) -> bool {
        self.lock().handles.get(&handle).is_some_and(|h| h.closed)
    }

    /// The kernel buffer sizes the handle was opened with (`None`: no such handle).
    pub fn buffers(&self, handle: Handle) -> Option<crate::types::SocketBuffers> {
        self.lock().handles.get(&handle).map(|h| h.buffers)
    }

    /// The address the handle connected to (or, for an inbound connection, came from).
    pub fn peer(&self, handle: Handle) -> Option<Address> {
        self.lock()
            .handles
            .get(&handle)
            .and_then(|h| h.peer.clone())
    }

    /// The address the handle is bound to.
    pub fn local_addr(&self, handle: Handle) -> Option<Address> {
        self.lock()
            .handles
            .get(&handle)
            .and_then(|h| h.local.clone())
    }

    /// The backlog the handle listens with, if it is a listening handle that is still
    /// open.
    pub fn listening(&self, handle: Handle) -> Option<u32> {
        self.lock()
            .handles
            .get(&handle)
            .filter(|h| !h.closed)
            .and_then(|h| h.listening)
    }

    /// Inbound connections waiting in a listening handle's backlog.
    pub fn pending_connections(&self, listener: Handle) -> Vec<Handle> {
        self.lock()
            .handles
            .get(&listener)
            .map(|h| h.pending.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Number of `accept` calls on the handle.
    pub fn accept_calls(&self, listener: Handle) -> usize {
        self.lock()
            .handles
            .get(&listener)
            .map_or(0, |h| h.accept_calls)
    }

    /// Every datagram the datagram handle sent, in order, with its destination.
    pub fn datagrams(&self, handle: Handle) -> Vec<MockDatagram> {
        self.lock()
            .handles
            .get(&handle)
            .map(|h| h.datagrams.clone())
            .unwrap_or_default()
    }
}

impl MockFunctions {
    fn lock(&self) -> MutexGuard<'_, MockState> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Actor for MockFunctions {
    type Context = Context<Self>;
}

fn open_handle(state: &mut MockState, handle: Handle) -> Result<&mut MockHandle, TransportError> {
    match state.handles.get_mut(&handle) {
        Some(h) if !h.closed => Ok(h),
        _ => Err(TransportError::UnknownHandle(handle)),
    }
}

impl Handler<OpenSocket> for MockFunctions {
    type Result = Result<Handle, TransportError>;

    fn handle(&mut self, msg: OpenSocket, _: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let handle = state.add(msg.kind, Some(msg.events));
        if let Some(h) = state.handles.get_mut(&handle) {
            h.buffers = msg.buffers;
        }
        Ok(handle)
    }
}

impl Handler<Connect> for MockFunctions {
    type Result = ResponseActFuture<Self, Result<(), TransportError>>;

    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let delay = state.connect_delays.get(&msg.addr).copied();
        let answer = match state.connect_failures.get(&msg.addr).copied() {
            Some(kind) => Err(kind.into()),
            None => open_handle(&mut state, msg.handle).map(|h| {
                // Connected datagram handles are bound by the system if need be.
                let unbound = h.local.is_none() && h.kind == SocketKind::Datagram;
                h.peer = Some(msg.addr);
                unbound
            }),
        };
        let answer = match answer {
            Ok(true) => {
                let local = state.assign_port(Address::Inet(([0, 0, 0, 0], 0).into()));
                if let Some(h) = state.handles.get_mut(&msg.handle) {
                    h.local = Some(local);
                }
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        drop(state);
        match delay {
            Some(after) => Box::pin(
                tokio::time::sleep(after)
                    .into_actor(self)
                    .map(move |_, _, _| answer),
            ),
            None => Box::pin(actix::fut::ready(answer)),
        }
    }
}

impl Handler<SendV> for MockFunctions {
    type Result = ResponseActFuture<Self, Result<Sent, TransportError>>;

    fn handle(&mut self, msg: SendV, ctx: &mut Context<Self>) -> Self::Result {
        let mut delay = None;
        let answer = self.sendv(msg, ctx, &mut delay);
        match delay {
            Some(after) => Box::pin(
                tokio::time::sleep(after)
                    .into_actor(self)
                    .map(move |_, _, _| answer),
            ),
            None => Box::pin(actix::fut::ready(answer)),
        }
    }
}

impl MockFunctions {
    fn sendv(
        &mut self,
        msg: SendV,
        ctx: &mut Context<Self>,
        delay: &mut Option<Duration>,
    ) -> Result<Sent, TransportError> {
        let mut state = self.lock();
        let default_step = state.default_step;
        let h = open_handle(&mut state, msg.handle)?;
        let offered = msg.len();
        let mut record = SendRecord {
            segments: msg.segments.len(),
            offered,
            accepted: 0,
            would_block: false,
            failed: None,
            at: Instant::now(),
        };
        if let Some(kind) = h.failed {
            record.failed = Some(kind);
            h.log.push(record);
            return Err(kind.into());
        }
        if h.shut_write {
            record.failed = Some(io::ErrorKind::BrokenPipe);
            h.log.push(record);
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let step = h.script.pop_front().unwrap_or(default_step);
        let datagram = h.kind == SocketKind::Datagram;
        let answer = match step {
            SendStep::Accept(n) => Ok(Sent::Accepted(n.min(offered))),
            SendStep::AcceptAll => Ok(Sent::Accepted(offered)),
            SendStep::Slow { bytes, after } => {
                *delay = Some(after);
                Ok(Sent::Accepted(bytes.min(offered)))
            }
            SendStep::WouldBlock(delay) => {
                let handle = msg.handle;
                ctx.run_later(delay, move |act, _| {
                    if let Some(h) = act.lock().handles.get(&handle) {
                        h.notify(handle, Readiness::Writable);
                    }
                });
                Ok(Sent::WouldBlock)
            }
            SendStep::Hold => {
                h.held = true;
                Ok(Sent::WouldBlock)
            }
            SendStep::Fail(kind) => {
                // A datagram's failure is its own; a stream's is the connection's.
                if !datagram {
                    h.failed = Some(kind);
                }
                Err(kind)
            }
        };
        match answer {
            Ok(Sent::Accepted(n)) => {
                record.accepted = n;
                let start = h.written.len();
                let mut left = n;
                for seg in &msg.segments {
                    let take = left.min(seg.len());
                    h.written.extend_from_slice(&seg[..take]);
                    left -= take;
                }
                if datagram {
                    let bytes = h.written[start..].to_vec();
                    h.datagrams.push(MockDatagram { bytes, to: msg.to });
                }
            }
            Ok(Sent::WouldBlock) => record.would_block = true,
            Err(kind) => record.failed = Some(kind),
        }
        h.log.push(record);
        answer.map_err(TransportError::from)
    }
}

impl Handler<RecvFrom> for MockFunctions {
    type Result = Result<Received, TransportError>;

    fn handle(&mut self, msg: RecvFrom, _: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let h = open_handle(&mut state, msg.handle)?;
        if h.eof {
            return Ok(Received::Eof);
        }
        // A stream of no bytes is nothing to read: empty pushes are skipped (a read
        // never answers an empty `Data`).
        while matches!(h.inbound.front(), Some(Inbound::Data(bytes, _)) if bytes.is_empty())
            && h.kind != SocketKind::Datagram
        {
            h.inbound.pop_front();
        }
        match h.inbound.pop_front() {
            Some(Inbound::Data(mut bytes, from)) if h.kind == SocketKind::Datagram => {
                let from = from.or_else(|| h.peer.clone());
                if bytes.len() > msg.max_len {
                    bytes.truncate(msg.max_len);
                    Ok(Received::Truncated { bytes, from })
                } else {
                    Ok(Received::Data { bytes, from })
                }
            }
            Some(Inbound::Data(mut bytes, from)) => {
                let max = msg.max_len.max(1);
                if bytes.len() > max {
                    let rest = bytes.split_off(max);
                    h.inbound.push_front(Inbound::Data(rest, from));
                }
                Ok(Received::Data {
                    bytes,
                    from: h.peer.clone(),
                })
            }
            Some(Inbound::Eof) => {
                h.eof = true;
                Ok(Received::Eof)
            }
            Some(Inbound::Error(kind)) => Err(kind.into()),
            None => {
                h.read_waiting = true;
                Ok(Received::WouldBlock)
            }
        }
    }
}

impl Handler<ShutdownWrite> for MockFunctions {
    type Result = Result<(), TransportError>;

    fn handle(&mut self, msg: ShutdownWrite, _: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let h = open_handle(&mut state, msg.handle)?;
        if h.kind != SocketKind::Stream {
            return Err(io::Error::from(io::ErrorKind::NotConnected).into());
        }
        h.shut_write = true;
        Ok(())
    }
}

impl Handler<CloseSocket> for MockFunctions {
    type Result = Result<(), TransportError>;

    fn handle(&mut self, msg: CloseSocket, _: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let h = open_handle(&mut state, msg.handle)?;
        h.closed = true;
        h.events = None;
        // Connections still in a listener's backlog are reset with it.
        let pending: Vec<Handle> = h.pending.drain(..).collect();
        for handle in pending {
            if let Some(c) = state.handles.get_mut(&handle) {
                c.closed = true;
            }
        }
        Ok(())
    }
}

impl Handler<Bind> for MockFunctions {
    type Result = Result<Address, TransportError>;

    fn handle(&mut self, msg: Bind, _: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let h = open_handle(&mut state, msg.handle)?;
        if h.local.is_some() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let local = state.assign_port(msg.addr);
        if state.in_use(&local, msg.handle, msg.reuse_port) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        let h = open_handle(&mut state, msg.handle)?;
        h.local = Some(local.clone());
        h.reuse_port = msg.reuse_port;
        Ok(local)
    }
}

impl Handler<Listen> for MockFunctions {
    type Result = Result<(), TransportError>;

    fn handle(&mut self, msg: Listen, _: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let h = open_handle(&mut state, msg.handle)?;
        if h.kind != SocketKind::Stream || h.peer.is_some() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        h.listening = Some(msg.backlog);
        Ok(())
    }
}

impl Handler<Accept> for MockFunctions {
    type Result = Result<Accepted, TransportError>;

    fn handle(&mut self, msg: Accept, _: &mut Context<Self>) -> Self::Result {
        let mut state = self.lock();
        let l = open_handle(&mut state, msg.handle)?;
        if l.listening.is_none() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        l.accept_calls += 1;
        if let Some(kind) = l.accept_errors.pop_front() {
            return Err(kind.into());
        }
        let Some(handle) = l.pending.pop_front() else {
            l.accept_waiting = true;
            return Ok(Accepted::WouldBlock);
        };
        let c = open_handle(&mut state, handle)?;
        c.events = Some(msg.events);
        let peer = c.peer.clone().unwrap_or(Address::Unix(Default::default()));
        Ok(Accepted::Connection { handle, peer })
    }
}
