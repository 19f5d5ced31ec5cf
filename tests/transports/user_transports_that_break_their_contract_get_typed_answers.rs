//! From the fourteenth round of the independent review: user-written transports and
//! partial overrides of the `SocketFunctions` table (c-ares' `ares_set_socket_functions`)
//! that answer late, never, after the close, too much or nothing, with every error kind,
//! storm `Ready` notices, fail their close, stop mid-call or reuse handles: typed errors,
//! every write answered once, each handle closed once, change-only interest notices;
//! sockets, listeners, datagram sockets and the reconnecting client. Everything runs in
//! paused tokio time over scripted actors.
#![allow(dead_code, clippy::type_complexity)]

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{channel, channel_subscriber, pattern, run_paused, settle};
use actix::prelude::*;
use actix::WeakRecipient;
use bytes::Bytes;
use sockactor::messages::functions::ShutdownWrite;
use sockactor::messages::{
    Accept, Accepted, Address, Bind, Close, CloseSocket, Connect, DatagramEvent, DatagramEventKind,
    GetInfo, Handle, Interest, InterestRefused, Listen, ListenerEvent, OpenSocket, Readiness,
    Ready, Received, RecvFrom, SendDatagram, SendV, Sent, SocketEventKind, SocketInterest,
    StopListening, Write,
};
use sockactor::{
    DatagramError, DatagramSocket, Listener, Socket, SocketConfig, SocketError, SocketFunctions,
    TransportError, WriteError,
};
use tokio::sync::mpsc::UnboundedReceiver;

// ---------------------------------------------------------------------------------------
// A scriptable hostile transport.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum SendAct {
    /// Take at most n bytes (usize::MAX: all).
    Take(usize),
    /// Answer n more bytes than offered (takes all).
    Over(usize),
    /// Answer `Accepted(0)`.
    Zero,
    /// Would block; `storm` Readys after `after` (0: no Ready at all).
    WouldBlock { after: Duration, storm: usize },
    /// Ready storm sent *before* answering would-block.
    ReadyFirst { storm: usize },
    /// Never answers.
    Never,
    /// Takes n bytes, answered after `d`.
    Late(usize, Duration),
    /// Fails with this error.
    Fail(TransportError),
    /// Stops the transport actor while the call is out.
    StopActor,
}

#[derive(Clone, Debug)]
enum RecvAct {
    Data(Bytes),
    DataFrom(Bytes, Option<Address>),
    Trunc(Bytes, Option<Address>),
    Eof,
    /// Would block, `storm` Readys after `after` (0: none).
    WouldBlock {
        after: Duration,
        storm: usize,
    },
    Fail(TransportError),
    Never,
    Late(Bytes, Duration),
}

#[derive(Clone, Debug)]
enum Act<T: Clone> {
    Now(Result<T, TransportError>),
    Late(Result<T, TransportError>, Duration),
    Never,
}

#[derive(Default)]
struct St {
    next_handle: u64,
    /// Every open returns this handle, when set.
    fixed_handle: Option<u64>,
    events: HashMap<u64, WeakRecipient<Ready>>,
    open_act: VecDeque<Act<()>>,
    connect_act: VecDeque<Act<()>>,
    close_act: VecDeque<Act<()>>,
    shutdown_act: VecDeque<Act<()>>,
    send_script: VecDeque<SendAct>,
    recv_script: VecDeque<RecvAct>,
    /// What a recvfrom does once its script is empty (default: would block, no Ready).
    recv_default: Option<RecvAct>,
    accept_script: VecDeque<Act<Accepted>>,
    written: HashMap<u64, Vec<u8>>,
    datagrams: Vec<(Vec<u8>, Option<Address>)>,
    sendv_calls: usize,
    empty_offers: usize,
    recv_calls: usize,
    accept_calls: usize,
    send_out: HashMap<u64, usize>,
    max_send_out: usize,
    recv_out: HashMap<u64, usize>,
    max_recv_out: usize,
    accept_out: usize,
    max_accept_out: usize,
    closes: Vec<u64>,
    shutdowns: Vec<u64>,
    opens: usize,
    connects: usize,
    offered: Vec<usize>,
    asked: Vec<usize>,
}

#[derive(Clone, Default)]
struct Hostile(Arc<Mutex<St>>);

impl Hostile {
    fn st(&self) -> std::sync::MutexGuard<'_, St> {
        self.0.lock().unwrap()
    }
    fn send(&self, acts: impl IntoIterator<Item = SendAct>) {
        self.st().send_script.extend(acts);
    }
    fn recv(&self, acts: impl IntoIterator<Item = RecvAct>) {
        self.st().recv_script.extend(acts);
    }
    fn closes(&self) -> Vec<u64> {
        self.st().closes.clone()
    }
    fn written(&self, h: u64) -> Vec<u8> {
        self.st().written.get(&h).cloned().unwrap_or_default()
    }
    fn ready(&self, h: u64, readiness: Readiness, n: usize) {
        let e = self.st().events.get(&h).cloned();
        if let Some(r) = e.and_then(|e| e.upgrade()) {
            for _ in 0..n {
                r.do_send(Ready {
                    handle: Handle(h),
                    readiness,
                });
            }
        }
    }
    /// Sends a Ready for `h` through the recipient registered for `via`.
    fn ready_via(&self, via: u64, h: u64, readiness: Readiness) {
        let e = self.st().events.get(&via).cloned();
        if let Some(r) = e.and_then(|e| e.upgrade()) {
            r.do_send(Ready {
                handle: Handle(h),
                readiness,
            });
        }
    }
    fn start(&self) -> Addr<HostileActor> {
        sockactor::start_unbudgeted(HostileActor(self.clone()))
    }
    fn functions(&self) -> (Addr<HostileActor>, SocketFunctions) {
        let a = self.start();
        let f = SocketFunctions::from_actor_ex(a.clone()).with_shutdown(a.clone().recipient());
        (a, f)
    }
}

struct HostileActor(Hostile);

impl Actor for HostileActor {
    type Context = Context<Self>;
}

/// Counts an outstanding call; decrements on drop.
struct Out(Hostile, u64, u8);
impl Drop for Out {
    fn drop(&mut self) {
        let mut s = self.0.st();
        let map = match self.2 {
            0 => &mut s.send_out,
            1 => &mut s.recv_out,
            _ => {
                s.accept_out -= 1;
                return;
            }
        };
        *map.get_mut(&self.1).unwrap() -= 1;
    }
}

fn later<T: 'static>(
    d: Duration,
    v: T,
    guard: Option<Out>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> {
    Box::pin(async move {
        tokio::time::sleep(d).await;
        drop(guard);
        v
    })
}

fn never<T: 'static>(
    guard: Option<Out>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> {
    Box::pin(async move {
        let _g = guard;
        std::future::pending::<T>().await
    })
}

fn act_fut<T: Clone + 'static>(
    act: Option<Act<T>>,
    default: Result<T, TransportError>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, TransportError>>>> {
    match act {
        None => Box::pin(std::future::ready(default)),
        Some(Act::Now(r)) => Box::pin(std::future::ready(r)),
        Some(Act::Late(r, d)) => later(d, r, None),
        Some(Act::Never) => never(None),
    }
}

type Fut<T> = ResponseActFuture<HostileActor, Result<T, TransportError>>;

fn wrap<T: 'static>(
    f: std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, TransportError>>>>,
) -> Fut<T> {
    Box::pin(actix::fut::wrap_future(f))
}

fn spawn_ready(h: Hostile, handle: u64, readiness: Readiness, after: Duration, n: usize) {
    if n == 0 {
        return;
    }
    actix::spawn(async move {
        tokio::time::sleep(after).await;
        h.ready(handle, readiness, n);
    });
}

impl Handler<OpenSocket> for HostileActor {
    type Result = Fut<Handle>;
    fn handle(&mut self, msg: OpenSocket, _: &mut Context<Self>) -> Self::Result {
        let mut s = self.0.st();
        s.opens += 1;
        let act = s.open_act.pop_front();
        let h = match s.fixed_handle {
            Some(h) => h,
            None => {
                s.next_handle += 1;
                s.next_handle
            }
        };
        if !matches!(act, Some(Act::Now(Err(_)))) {
            s.events.insert(h, msg.events);
            s.written.entry(h).or_default();
        }
        drop(s);
        let f = act_fut(act, Ok(()));
        wrap(Box::pin(async move { f.await.map(|()| Handle(h)) }))
    }
}

impl Handler<Connect> for HostileActor {
    type Result = Fut<()>;
    fn handle(&mut self, _: Connect, _: &mut Context<Self>) -> Self::Result {
        let mut s = self.0.st();
        s.connects += 1;
        let act = s.connect_act.pop_front();
        drop(s);
        wrap(act_fut(act, Ok(())))
    }
}

impl Handler<CloseSocket> for HostileActor {
    type Result = Fut<()>;
    fn handle(&mut self, msg: CloseSocket, _: &mut Context<Self>) -> Self::Result {
        let mut s = self.0.st();
        s.closes.push(msg.handle.0);
        let act = s.close_act.pop_front();
        drop(s);
        wrap(act_fut(act, Ok(())))
    }
}

impl Handler<ShutdownWrite> for HostileActor {
    type Result = Fut<()>;
    fn handle(&mut self, msg: ShutdownWrite, _: &mut Context<Self>) -> Self::Result {
        let mut s = self.0.st();
        s.shutdowns.push(msg.handle.0);
        let act = s.shutdown_act.pop_front();
        drop(s);
        wrap(act_fut(act, Ok(())))
    }
}

impl Handler<Bind> for HostileActor {
    type Result = Result<Address, TransportError>;
    fn handle(&mut self, msg: Bind, _: &mut Context<Self>) -> Self::Result {
        Ok(msg.addr)
    }
}

impl Handler<Listen> for HostileActor {
    type Result = Result<(), TransportError>;
    fn handle(&mut self, _: Listen, _: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}

impl Handler<Accept> for HostileActor {
    type Result = Fut<Accepted>;
    fn handle(&mut self, msg: Accept, _: &mut Context<Self>) -> Self::Result {
        let mut s = self.0.st();
        s.accept_calls += 1;
        s.accept_out += 1;
        s.max_accept_out = s.max_accept_out.max(s.accept_out);
        let guard = Out(self.0.clone(), msg.handle.0, 2);
        let act = s.accept_script.pop_front();
        if let Some(Act::Now(Ok(Accepted::Connection { handle, .. })))
        | Some(Act::Late(Ok(Accepted::Connection { handle, .. }), _)) = &act
        {
            s.events.insert(handle.0, msg.events.clone());
            s.written.entry(handle.0).or_default();
        }
        drop(s);
        match act {
            None => {
                drop(guard);
                wrap(Box::pin(std::future::ready(Ok(Accepted::WouldBlock))))
            }
            Some(Act::Now(r)) => {
                drop(guard);
                wrap(Box::pin(std::future::ready(r)))
            }
            Some(Act::Late(r, d)) => wrap(later(d, r, Some(guard))),
            Some(Act::Never) => wrap(never(Some(guard))),
        }
    }
}

impl Handler<SendV> for HostileActor {
    type Result = Fut<Sent>;
    fn handle(&mut self, msg: SendV, ctx: &mut Context<Self>) -> Self::Result {
        let h = msg.handle.0;
        let offered = msg.len();
        let mut s = self.0.st();
        s.sendv_calls += 1;
        s.offered.push(offered);
        if offered == 0 {
            s.empty_offers += 1;
        }
        *s.send_out.entry(h).or_default() += 1;
        let out = s.send_out[&h];
        s.max_send_out = s.max_send_out.max(out);
        let guard = Out(self.0.clone(), h, 0);
        let act = s
            .send_script
            .pop_front()
            .unwrap_or(SendAct::Take(usize::MAX));
        let take = |s: &mut St, n: usize| -> usize {
            let n = n.min(offered);
            let mut left = n;
            let mut bytes = Vec::new();
            for seg in &msg.segments {
                let k = left.min(seg.len());
                bytes.extend_from_slice(&seg[..k]);
                left -= k;
            }
            if msg.to.is_some() {
                s.datagrams.push((bytes.clone(), msg.to.clone()));
            }
            s.written.entry(h).or_default().extend_from_slice(&bytes);
            n
        };
        let now = |r: Result<Sent, TransportError>, g: Out| -> Fut<Sent> {
            drop(g);
            wrap(Box::pin(std::future::ready(r)))
        };
        match act {
            SendAct::Take(n) => {
                let n = take(&mut s, n);
                drop(s);
                now(Ok(Sent::Accepted(n)), guard)
            }
            SendAct::Over(extra) => {
                let n = take(&mut s, usize::MAX);
                drop(s);
                now(Ok(Sent::Accepted(n + extra)), guard)
            }
            SendAct::Zero => {
                drop(s);
                now(Ok(Sent::Accepted(0)), guard)
            }
            SendAct::WouldBlock { after, storm } => {
                drop(s);
                spawn_ready(self.0.clone(), h, Readiness::Writable, after, storm);
                now(Ok(Sent::WouldBlock), guard)
            }
            SendAct::ReadyFirst { storm } => {
                drop(s);
                self.0.ready(h, Readiness::Writable, storm);
                now(Ok(Sent::WouldBlock), guard)
            }
            SendAct::Never => {
                drop(s);
                wrap(never(Some(guard)))
            }
            SendAct::Late(n, d) => {
                let n = take(&mut s, n);
                drop(s);
                wrap(later(d, Ok(Sent::Accepted(n)), Some(guard)))
            }
            SendAct::Fail(e) => {
                drop(s);
                now(Err(e), guard)
            }
            SendAct::StopActor => {
                drop(s);
                ctx.stop();
                wrap(never(Some(guard)))
            }
        }
    }
}

impl Handler<RecvFrom> for HostileActor {
    type Result = Fut<Received>;
    fn handle(&mut self, msg: RecvFrom, ctx: &mut Context<Self>) -> Self::Result {
        let h = msg.handle.0;
        let mut s = self.0.st();
        s.recv_calls += 1;
        s.asked.push(msg.max_len);
        *s.recv_out.entry(h).or_default() += 1;
        let out = s.recv_out[&h];
        s.max_recv_out = s.max_recv_out.max(out);
        let guard = Out(self.0.clone(), h, 1);
        let act = s.recv_script.pop_front().or_else(|| s.recv_default.clone());
        drop(s);
        let _ = ctx;
        let now = |r: Result<Received, TransportError>, g: Out| -> Fut<Received> {
            drop(g);
            wrap(Box::pin(std::future::ready(r)))
        };
        match act {
            None => now(Ok(Received::WouldBlock), guard),
            Some(RecvAct::Data(bytes)) => now(Ok(Received::Data { bytes, from: None }), guard),
            Some(RecvAct::DataFrom(bytes, from)) => now(Ok(Received::Data { bytes, from }), guard),
            Some(RecvAct::Trunc(bytes, from)) => {
                now(Ok(Received::Truncated { bytes, from }), guard)
            }
            Some(RecvAct::Eof) => now(Ok(Received::Eof), guard),
            Some(RecvAct::WouldBlock { after, storm }) => {
                spawn_ready(self.0.clone(), h, Readiness::Readable, after, storm);
                now(Ok(Received::WouldBlock), guard)
            }
            Some(RecvAct::Fail(e)) => now(Err(e), guard),
            Some(RecvAct::Never) => wrap(never(Some(guard))),
            Some(RecvAct::Late(bytes, d)) => wrap(later(
                d,
                Ok(Received::Data { bytes, from: None }),
                Some(guard),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

fn peer() -> std::net::SocketAddr {
    crate::support::mock_peer()
}

async fn socket_on(
    functions: SocketFunctions,
    config: SocketConfig,
) -> (Addr<Socket>, UnboundedReceiver<SocketEventKind>) {
    let (events, heard) = channel_subscriber();
    let socket = Socket::builder()
        .functions(functions)
        .subscriber(events)
        .config(config)
        .connect(peer())
        .await
        .expect("connect");
    (socket, heard)
}

/// Waits for `Closed`, returning its cause and every event before it.
async fn until_closed(
    heard: &mut UnboundedReceiver<SocketEventKind>,
    within: Duration,
) -> (Option<TransportError>, Vec<SocketEventKind>) {
    let mut before = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, heard.recv()).await {
            Err(_) => panic!("no Closed within {within:?}; heard {before:?}"),
            Ok(Some(SocketEventKind::Closed { cause })) => return (cause, before),
            Ok(Some(e)) => before.push(e),
            Ok(None) => panic!("subscriber gone; heard {before:?}"),
        }
    }
}

async fn answer<T>(
    j: tokio::task::JoinHandle<Result<T, MailboxError>>,
    within: Duration,
    what: &str,
) -> T {
    tokio::time::timeout(within, j)
        .await
        .unwrap_or_else(|_| panic!("{what}: not answered within {within:?}"))
        .expect("join")
        .unwrap_or_else(|e| panic!("{what}: mailbox error {e}"))
}

fn io_err(kind: io::ErrorKind) -> TransportError {
    TransportError::from(kind)
}

/// Waits (paused time) for the actor behind `addr` to stop, up to `within`.
async fn stops<A: Actor>(addr: &Addr<A>, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        settle().await;
        if !addr.connected() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    !addr.connected()
}

// ---------------------------------------------------------------------------------------
// Close: failing, never answering; exactly one close per handle.
// ---------------------------------------------------------------------------------------

/// A close that fails: the socket still ends (`Closed`, actor stopped), every write is
/// answered, and `close` is called exactly once.
#[test]
fn a_failing_close_still_ends_the_socket_and_is_called_once() {
    for act in [
        Act::Now(Err(io_err(io::ErrorKind::Other))),
        Act::Now(Err(TransportError::UnknownHandle(Handle(1)))),
        Act::Now(Err(TransportError::Unavailable)),
        Act::Late(
            Err(io_err(io::ErrorKind::BrokenPipe)),
            Duration::from_secs(3),
        ),
        Act::Never,
    ] {
        run_paused(|| async {
            let h = Hostile::default();
            h.st().close_act.push_back(act.clone());
            let (_t, f) = h.functions();
            let (socket, mut heard) = socket_on(f, SocketConfig::default()).await;
            let w = actix::spawn(socket.send(Write::new(Bytes::from(pattern(2000, 1)))));
            socket.do_send(Close::Graceful);
            let w = answer(w, Duration::from_secs(30), "write").await;
            assert_eq!(w.expect("written").len, 2000, "{act:?}");
            let (cause, _) = until_closed(&mut heard, Duration::from_secs(30)).await;
            assert!(
                cause.is_none(),
                "{act:?}: a graceful close; cause {cause:?}"
            );
            let late = socket.send(Write::new(&b"late"[..])).await;
            if let Ok(late) = late {
                assert!(
                    matches!(late, Err(WriteError::Closed { bytes_sent: 0, .. })),
                    "{act:?}: {late:?}"
                );
            }
            drop(socket);
            tokio::time::sleep(Duration::from_secs(20)).await;
            settle().await;
            assert_eq!(h.closes(), vec![1], "{act:?}: close called once");
        });
    }
}

/// The same handle closed once, whatever path ended the socket: transport error, abort,
/// abort after a graceful close, read error, EOF with close_on_eof, last address dropped.
#[test]
fn every_ending_closes_the_handle_exactly_once() {
    for path in 0..7 {
        run_paused(|| async {
            let h = Hostile::default();
            let (_t, f) = h.functions();
            let config = SocketConfig {
                close_on_eof: path == 4,
                ..SocketConfig::default()
            };
            match path {
                0 => h.send([SendAct::Fail(io_err(io::ErrorKind::ConnectionReset))]),
                1 | 2 => h.send([SendAct::Late(10, Duration::from_secs(1))]),
                3 => h.recv([RecvAct::Fail(io_err(io::ErrorKind::ConnectionReset))]),
                4 => h.recv([RecvAct::Eof]),
                5 => h.send([SendAct::Over(3)]),
                _ => {}
            }
            let (socket, mut heard) = socket_on(f, config).await;
            let w = actix::spawn(socket.send(Write::new(Bytes::from(pattern(5000, 1)))));
            settle().await;
            match path {
                1 => socket.do_send(Close::Abort),
                2 => {
                    socket.do_send(Close::Graceful);
                    socket.do_send(Close::Abort);
                    socket.do_send(Close::Graceful);
                }
                6 => {}
                _ => {}
            }
            if path == 6 {
                let _ = answer(w, Duration::from_secs(15), "write").await;
                drop(socket);
                tokio::time::sleep(Duration::from_secs(15)).await;
                settle().await;
                assert_eq!(h.closes(), vec![1], "path {path}: one close");
                return;
            }
            let _ = until_closed(&mut heard, Duration::from_secs(15)).await;
            let _ = answer(w, Duration::from_secs(15), "write").await;
            socket.do_send(Close::Abort);
            socket.do_send(Close::Graceful);
            drop(socket);
            tokio::time::sleep(Duration::from_secs(15)).await;
            settle().await;
            assert_eq!(h.closes(), vec![1], "path {path}: one close");
        });
    }
}

// ---------------------------------------------------------------------------------------
// Readiness storms, early and foreign notices.
// ---------------------------------------------------------------------------------------

/// A `Ready` storm (hundreds of notices per would-block, before and after the answer,
/// and unsolicited ones while nothing waits) never puts two `SendV`s out on a handle nor
/// offers an empty batch; every byte once, in order.
#[test]
fn ready_storms_never_put_two_sendvs_out_nor_offer_nothing() {
    run_paused(|| async {
        let h = Hostile::default();
        let mut script = Vec::new();
        for i in 0..60 {
            script.push(match i % 4 {
                0 => SendAct::WouldBlock {
                    after: Duration::from_millis(1),
                    storm: 200,
                },
                1 => SendAct::ReadyFirst { storm: 100 },
                2 => SendAct::Take(7),
                _ => SendAct::Late(100, Duration::from_millis(2)),
            });
        }
        h.send(script);
        let (_t, f) = h.functions();
        let (socket, mut heard) = socket_on(f, SocketConfig::default()).await;
        let data = Bytes::from(pattern(20_000, 5));
        let mut answers = Vec::new();
        for chunk in data.chunks(1000) {
            answers.push(actix::spawn(
                socket.send(Write::new(Bytes::copy_from_slice(chunk))),
            ));
        }
        // Unsolicited storms while writes are going.
        for _ in 0..5 {
            h.ready(1, Readiness::Writable, 300);
            h.ready(1, Readiness::Readable, 300);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for a in answers {
            answer(a, Duration::from_secs(60), "write")
                .await
                .expect("written");
        }
        // Storm while idle: no sendv with nothing to send.
        let before = h.st().sendv_calls;
        h.ready(1, Readiness::Writable, 1000);
        settle().await;
        {
            let s = h.st();
            assert_eq!(s.sendv_calls, before, "sendv called with nothing queued");
            assert_eq!(s.empty_offers, 0, "an empty batch was offered");
            assert_eq!(s.max_send_out, 1, "two sendvs out on one handle");
            assert!(s.max_recv_out <= 1, "two recvfroms out on one handle");
            assert_eq!(s.written[&1], data[..].to_vec(), "byte stream");
        }
        socket.do_send(Close::Graceful);
        let (cause, _) = until_closed(&mut heard, Duration::from_secs(10)).await;
        assert!(cause.is_none());
    });
}

/// A readable storm never puts two `RecvFrom`s out, and the socket does not spin.
#[test]
fn readable_storms_never_put_two_recvfroms_out() {
    run_paused(|| async {
        let h = Hostile::default();
        let mut script = Vec::new();
        for i in 0..50 {
            script.push(match i % 3 {
                0 => RecvAct::WouldBlock {
                    after: Duration::from_millis(1),
                    storm: 100,
                },
                1 => RecvAct::Data(Bytes::from(vec![i as u8; 10])),
                _ => RecvAct::Late(Bytes::from(vec![i as u8; 5]), Duration::from_millis(2)),
            });
        }
        h.recv(script);
        let (_t, f) = h.functions();
        let (socket, mut heard) = socket_on(f, SocketConfig::default()).await;
        for _ in 0..20 {
            h.ready(1, Readiness::Readable, 100);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let calls = h.st().recv_calls;
        h.ready(1, Readiness::Readable, 0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = h.st();
        assert!(
            s.max_recv_out <= 1,
            "{} recvfroms out at once",
            s.max_recv_out
        );
        assert_eq!(s.recv_calls, calls, "the socket reads again with no Ready");
        drop(s);
        let mut got = Vec::new();
        for e in crate::support::drain(&mut heard) {
            if let SocketEventKind::Received(b) = e {
                got.extend_from_slice(&b);
            }
        }
        let mut want = Vec::new();
        for i in 0..50u8 {
            match i % 3 {
                1 => want.extend(vec![i; 10]),
                2 => want.extend(vec![i; 5]),
                _ => {}
            }
        }
        assert_eq!(got, want);
        drop(socket);
    });
}

/// A `Ready` naming another handle, sent to a blocked socket, does not wake it: the
/// socket retries only on its own handle's notice.
#[test]
fn a_ready_for_a_foreign_handle_does_not_wake_a_blocked_socket() {
    run_paused(|| async {
        let h = Hostile::default();
        h.send([SendAct::WouldBlock {
            after: Duration::ZERO,
            storm: 0,
        }]);
        let (_t, f) = h.functions();
        let (socket, _heard) = socket_on(f, SocketConfig::default()).await;
        let w = actix::spawn(socket.send(Write::new(Bytes::from(pattern(100, 1)))));
        settle().await;
        assert_eq!(h.st().sendv_calls, 1);
        h.ready_via(1, 999, Readiness::Writable);
        h.ready_via(1, 0, Readiness::Writable);
        settle().await;
        assert_eq!(h.st().sendv_calls, 1, "woken by a foreign handle's Ready");
        h.ready(1, Readiness::Writable, 1);
        answer(w, Duration::from_secs(1), "write")
            .await
            .expect("written");
        assert_eq!(h.st().sendv_calls, 2);
    });
}

// ---------------------------------------------------------------------------------------
// Reading: contract-breaking answers.
// ---------------------------------------------------------------------------------------

/// After the transport said EOF, the socket does not read again; data a broken transport
/// would give later never reaches the subscriber after `Eof`.
#[test]
fn no_read_and_no_delivery_after_eof() {
    run_paused(|| async {
        let h = Hostile::default();
        h.recv([
            RecvAct::Data(Bytes::from_static(b"abc")),
            RecvAct::Eof,
            RecvAct::Data(Bytes::from_static(b"after-eof")),
        ]);
        h.st().recv_default = Some(RecvAct::Data(Bytes::from_static(b"more")));
        let (_t, f) = h.functions();
        let (socket, mut heard) = socket_on(f, SocketConfig::default()).await;
        settle().await;
        // Storms of readable notices after the EOF.
        h.ready(1, Readiness::Readable, 50);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let events = crate::support::drain(&mut heard);
        let mut seen_eof = false;
        for e in &events {
            match e {
                SocketEventKind::Eof => seen_eof = true,
                SocketEventKind::Received(b) => {
                    assert!(!seen_eof, "bytes {b:?} delivered after Eof")
                }
                _ => {}
            }
        }
        assert!(seen_eof, "{events:?}");
        assert_eq!(h.st().recv_calls, 2, "read again after EOF");
        // The socket still writes (half-open by default).
        socket
            .send(Write::new(&b"x"[..]))
            .await
            .expect("mailbox")
            .expect("written after the peer's EOF");
    });
}

/// A read error ends reading: no more recvfrom, no delivery after `ReadFailed`, writes
/// queued are answered, the handle closed once.
#[test]
fn no_delivery_after_a_read_error_for_any_error_kind() {
    for e in [
        io_err(io::ErrorKind::ConnectionReset),
        TransportError::UnknownHandle(Handle(1)),
        TransportError::Unsupported("recvfrom"),
        TransportError::Unavailable,
        TransportError::OverRead { read: 9, asked: 1 },
        TransportError::OverAccepted {
            accepted: 9,
            offered: 1,
        },
        TransportError::File(Arc::new(io::Error::from(io::ErrorKind::UnexpectedEof))),
    ] {
        run_paused(|| async {
            let h = Hostile::default();
            h.send([SendAct::Never]);
            h.recv([
                RecvAct::Data(Bytes::from_static(b"ok")),
                RecvAct::Fail(e.clone()),
                RecvAct::Data(Bytes::from_static(b"after-error")),
            ]);
            h.st().recv_default = Some(RecvAct::Data(Bytes::from_static(b"more")));
            let (_t, f) = h.functions();
            let (socket, mut heard) = socket_on(f, SocketConfig::default()).await;
            let w = actix::spawn(socket.send(Write::new(Bytes::from(pattern(100, 1)))));
            let (cause, before) = until_closed(&mut heard, Duration::from_secs(30)).await;
            h.ready(1, Readiness::Readable, 10);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let received: Vec<u8> = before
                .iter()
                .filter_map(|e| match e {
                    SocketEventKind::Received(b) => Some(b.to_vec()),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(received, b"ok", "{e:?}: {before:?}");
            assert!(
                before
                    .iter()
                    .any(|k| matches!(k, SocketEventKind::ReadFailed(_))),
                "{e:?}: {before:?}"
            );
            assert!(cause.is_some(), "{e:?}");
            assert_eq!(h.st().recv_calls, 2, "{e:?}: read after the error");
            let w = answer(w, Duration::from_secs(11), "write").await;
            assert!(w.is_err(), "{e:?}: {w:?}");
            for ev in crate::support::drain(&mut heard) {
                assert!(
                    !matches!(
                        ev,
                        SocketEventKind::Received(_) | SocketEventKind::Closed { .. }
                    ),
                    "{e:?}: {ev:?} after Closed"
                );
            }
            drop(socket);
            tokio::time::sleep(Duration::from_secs(12)).await;
            assert_eq!(h.closes(), vec![1], "{e:?}");
        });
    }
}

/// A transport answering zero-byte `Data` on every read (a broken transport: a stream
/// read of 0 bytes is EOF in `recv(2)` terms) must not make the socket spin, nor deliver
/// empty chunks to its subscriber.
#[test]
fn zero_byte_reads_forever_do_not_spin_the_socket() {
    run_paused(|| async {
        let h = Hostile::default();
        h.st().recv_default = Some(RecvAct::Data(Bytes::new()));
        let (_t, f) = h.functions();
        let (socket, mut heard) = socket_on(f, SocketConfig::default()).await;
        for _ in 0..10 {
            settle().await;
        }
        let calls = h.st().recv_calls;
        let empty = crate::support::drain(&mut heard)
            .iter()
            .filter(|e| matches!(e, SocketEventKind::Received(b) if b.is_empty()))
            .count();
        eprintln!("recvfrom calls in 640 yields: {calls}; empty deliveries {empty}");
        assert!(
            calls < 100,
            "{calls} recvfrom calls in one instant: the socket spins on empty reads"
        );
        assert_eq!(empty, 0, "empty chunks delivered");
        drop(socket);
    });
}

/// A stream transport answering `Truncated` (datagram-only) still delivers the bytes.
#[test]
fn a_truncated_answer_on_a_stream_is_delivered_as_data() {
    run_paused(|| async {
        let h = Hostile::default();
        h.recv([
            RecvAct::Trunc(Bytes::from_static(b"abc"), None),
            RecvAct::Eof,
        ]);
        let (_t, f) = h.functions();
        let (_socket, mut heard) = socket_on(f, SocketConfig::default()).await;
        settle().await;
        let ev = crate::support::drain(&mut heard);
        let got: Vec<u8> = ev
            .iter()
            .filter_map(|e| match e {
                SocketEventKind::Received(b) => Some(b.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(got, b"abc", "{ev:?}");
    });
}

/// A transport that reads more than asked on *every* read (any size): a typed
/// `OverRead`, the over-read bytes never delivered.
#[test]
fn an_over_read_of_one_byte_is_a_typed_error_and_nothing_of_it_is_delivered() {
    run_paused(|| async {
        let h = Hostile::default();
        let (_t, f) = h.functions();
        let config = SocketConfig {
            read_chunk: 16,
            ..SocketConfig::default()
        };
        h.recv([RecvAct::Data(Bytes::from(vec![1u8; 17]))]);
        let (_socket, mut heard) = socket_on(f, config).await;
        let (cause, before) = until_closed(&mut heard, Duration::from_secs(5)).await;
        let asked = h.st().asked.clone();
        assert!(
            before
                .iter()
                .all(|e| !matches!(e, SocketEventKind::Received(_))),
            "asked {asked:?}: {before:?}"
        );
        assert!(
            matches!(cause, Some(TransportError::OverRead { read: 17, .. })),
            "asked {asked:?}: {cause:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Open and connect.
// ---------------------------------------------------------------------------------------

/// Connect errors are sorted as documented, and the opened handle is closed exactly once.
#[test]
fn connect_errors_are_sorted_and_the_handle_is_closed_once() {
    let cases: Vec<(TransportError, &str)> = vec![
        (io_err(io::ErrorKind::ConnectionRefused), "refused"),
        (io_err(io::ErrorKind::HostUnreachable), "unreachable"),
        (io_err(io::ErrorKind::NetworkUnreachable), "unreachable"),
        (io_err(io::ErrorKind::TimedOut), "timedout"),
        (io_err(io::ErrorKind::PermissionDenied), "connect"),
        (TransportError::UnknownHandle(Handle(1)), "connect"),
        (TransportError::Unavailable, "connect"),
        (TransportError::Unsupported("connect"), "connect"),
    ];
    for (e, want) in cases {
        run_paused(|| async {
            let h = Hostile::default();
            h.st().connect_act.push_back(Act::Now(Err(e.clone())));
            let (_t, f) = h.functions();
            let r = Socket::builder().functions(f).connect(peer()).await;
            let got = match &r {
                Err(SocketError::Refused(_)) => "refused",
                Err(SocketError::Unreachable(_)) => "unreachable",
                Err(SocketError::TimedOut(_)) => "timedout",
                Err(SocketError::Connect(_)) => "connect",
                other => panic!("{e:?}: {other:?}"),
            };
            assert_eq!(got, want, "{e:?}: {r:?}");
            settle().await;
            assert_eq!(h.closes(), vec![1], "{e:?}: the opened handle closed once");
        });
    }
}

/// A connect never answered, and one answered after the timeout: `TimedOut` at the
/// timeout, the handle closed exactly once (even when the late answer is a success).
#[test]
fn a_silent_or_late_connect_times_out_and_closes_the_handle_once() {
    for act in [
        Act::Never,
        Act::Late(Ok(()), Duration::from_secs(5)),
        Act::Late(
            Err(io_err(io::ErrorKind::ConnectionRefused)),
            Duration::from_secs(5),
        ),
    ] {
        run_paused(|| async {
            let h = Hostile::default();
            h.st().connect_act.push_back(act.clone());
            let (_t, f) = h.functions();
            let t0 = tokio::time::Instant::now();
            let r = Socket::builder()
                .functions(f)
                .connect_timeout(Duration::from_secs(2))
                .connect(peer())
                .await;
            assert!(matches!(r, Err(SocketError::TimedOut(_))), "{act:?}: {r:?}");
            assert_eq!(t0.elapsed(), Duration::from_secs(2), "{act:?}");
            tokio::time::sleep(Duration::from_secs(10)).await;
            settle().await;
            assert_eq!(h.closes(), vec![1], "{act:?}: closed once");
        });
    }
}

/// An open that never answers, or answers after the timeout: `TimedOut`, and a handle
/// the late open hands back is closed (once).
#[test]
fn a_silent_or_late_open_times_out_and_a_late_handle_is_closed() {
    for act in [Act::Never, Act::Late(Ok(()), Duration::from_secs(5))] {
        run_paused(|| async {
            let h = Hostile::default();
            h.st().open_act.push_back(act.clone());
            let (_t, f) = h.functions();
            let r = Socket::builder()
                .functions(f)
                .connect_timeout(Duration::from_secs(2))
                .connect(peer())
                .await;
            assert!(matches!(r, Err(SocketError::TimedOut(_))), "{act:?}: {r:?}");
            tokio::time::sleep(Duration::from_secs(10)).await;
            settle().await;
            let want: Vec<u64> = match act {
                Act::Never => vec![],
                _ => vec![1],
            };
            assert_eq!(h.closes(), want, "{act:?}");
            assert_eq!(h.st().connects, 0, "{act:?}");
        });
    }
}

/// An open error of any kind is `SocketError::Open` carrying it; nothing is closed.
#[test]
fn an_open_error_is_socket_error_open_with_no_close() {
    for e in [
        io_err(io::ErrorKind::Other),
        TransportError::Unsupported("open"),
        TransportError::Unavailable,
    ] {
        run_paused(|| async {
            let h = Hostile::default();
            h.st().open_act.push_back(Act::Now(Err(e.clone())));
            let (_t, f) = h.functions();
            let r = Socket::builder().functions(f).connect(peer()).await;
            assert!(matches!(r, Err(SocketError::Open(_))), "{e:?}: {r:?}");
            settle().await;
            assert!(h.closes().is_empty(), "{e:?}");
        });
    }
}

// ---------------------------------------------------------------------------------------
// Shutdown of the sending half.
// ---------------------------------------------------------------------------------------

/// A shutdown that fails (any kind): the graceful close still completes, every write `Ok`,
/// the handle closed once.
#[test]
fn a_failing_shutdown_still_completes_the_close() {
    for e in [
        io_err(io::ErrorKind::NotConnected),
        TransportError::Unavailable,
        TransportError::UnknownHandle(Handle(1)),
    ] {
        run_paused(|| async {
            let h = Hostile::default();
            h.st().shutdown_act.push_back(Act::Now(Err(e.clone())));
            let (_t, f) = h.functions();
            let (socket, mut heard) =
                socket_on(f, crate::support::lingering(Duration::from_secs(5))).await;
            let w = actix::spawn(socket.send(Write::new(Bytes::from(pattern(4000, 1)))));
            socket.do_send(Close::Graceful);
            let (_cause, _) = until_closed(&mut heard, Duration::from_secs(30)).await;
            answer(w, Duration::from_secs(1), "write")
                .await
                .expect("written");
            settle().await;
            assert_eq!(h.st().shutdowns, vec![1]);
            assert_eq!(h.closes(), vec![1], "{e:?}");
        });
    }
}

/// A shutdown never answered: the close ends at the drain timeout ("which runs on through
/// the shutdown"), the handle closed once.
#[test]
fn a_silent_shutdown_is_bounded_by_the_drain_timeout() {
    run_paused(|| async {
        let h = Hostile::default();
        h.st().shutdown_act.push_back(Act::Never);
        let (_t, f) = h.functions();
        let config = SocketConfig {
            drain_timeout: Some(Duration::from_secs(3)),
            ..SocketConfig::default()
        };
        let (socket, mut heard) = socket_on(f, config).await;
        let w = actix::spawn(socket.send(Write::new(Bytes::from(pattern(4000, 1)))));
        socket.do_send(Close::Graceful);
        let t0 = tokio::time::Instant::now();
        let _ = until_closed(&mut heard, Duration::from_secs(30)).await;
        assert!(t0.elapsed() <= Duration::from_secs(3), "{:?}", t0.elapsed());
        answer(w, Duration::from_secs(1), "write")
            .await
            .expect("written");
        settle().await;
        assert_eq!(h.closes(), vec![1]);
    });
}

/// A shutdown never answered and no drain timeout: the close may wait (it "drains as
/// long as it takes"), but `Close::Abort` must end it at once, the handle closed once.
#[test]
fn an_abort_ends_a_close_stuck_on_a_silent_shutdown() {
    run_paused(|| async {
        let h = Hostile::default();
        h.st().shutdown_act.push_back(Act::Never);
        let (_t, f) = h.functions();
        let (socket, mut heard) = socket_on(f, SocketConfig::default()).await;
        socket
            .send(Write::new(Bytes::from(pattern(4000, 1))))
            .await
            .expect("mailbox")
            .expect("written");
        socket.do_send(Close::Graceful);
        tokio::time::sleep(Duration::from_secs(30)).await;
        let early: Vec<_> = crate::support::drain(&mut heard);
        eprintln!(
            "after 30 s of a silent shutdown: {early:?}, closes {:?}",
            h.closes()
        );
        socket.do_send(Close::Abort);
        let _ = until_closed(&mut heard, Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(h.closes(), vec![1]);
    });
}

/// A shutdown never answered, then every address dropped: the socket is documented to
/// close its handle and stop "whatever its transport".
#[test]
fn dropping_a_socket_stuck_on_a_silent_shutdown_closes_its_handle() {
    run_paused(|| async {
        let h = Hostile::default();
        h.st().shutdown_act.push_back(Act::Never);
        let (_t, f) = h.functions();
        let (socket, _heard) = socket_on(f, SocketConfig::default()).await;
        socket
            .send(Write::new(Bytes::from(pattern(4000, 1))))
            .await
            .expect("mailbox")
            .expect("written");
        socket.do_send(Close::Graceful);
        settle().await;
        drop(socket);
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle().await;
        assert_eq!(
            h.closes(),
            vec![1],
            "handle closed after the last address dropped"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Transport actor stops.
// ---------------------------------------------------------------------------------------

/// The transport stops while a recvfrom is out: `ReadFailed(Unavailable)`, the socket
/// closes, writes queued get typed errors, and nothing panics (close on a dead transport).
#[test]
fn a_transport_stopping_mid_read_fails_reading_with_unavailable() {
    run_paused(|| async {
        let h = Hostile::default();
        h.recv([RecvAct::Never]);
        h.send([SendAct::StopActor]);
        let (t, f) = h.functions();
        let (socket, mut heard) = socket_on(f, SocketConfig::default()).await;
        settle().await;
        let w = actix::spawn(socket.send(Write::new(Bytes::from(pattern(100, 1)))));
        let (cause, before) = until_closed(&mut heard, Duration::from_secs(15)).await;
        assert!(
            matches!(cause, Some(TransportError::Unavailable)),
            "{cause:?} {before:?}"
        );
        let w = answer(w, Duration::from_secs(15), "write").await;
        assert!(
            matches!(
                w,
                Err(WriteError::Transport {
                    source: TransportError::Unavailable,
                    ..
                })
            ),
            "{w:?}"
        );
        assert!(!t.connected());
    });
}

// ---------------------------------------------------------------------------------------
// Two sockets on one handle; a reused closed handle.
// ---------------------------------------------------------------------------------------

/// A transport that hands out the same handle twice: each socket still hears only its own
/// notices (they go to the recipient given at open) and both get every write answered.
#[test]
fn two_sockets_given_one_handle_each_answer_their_own_writes() {
    run_paused(|| async {
        let h = Hostile::default();
        h.st().fixed_handle = Some(7);
        let (_t, f) = h.functions();
        let (a, mut ha) = socket_on(f.clone(), SocketConfig::default()).await;
        let (b, mut hb) = socket_on(f, SocketConfig::default()).await;
        h.send([
            SendAct::Take(2),
            SendAct::Late(usize::MAX, Duration::from_millis(5)),
        ]);
        let wa = actix::spawn(a.send(Write::new(&b"aaaa"[..])));
        settle().await;
        let wb = actix::spawn(b.send(Write::new(&b"bbbb"[..])));
        let wa = answer(wa, Duration::from_secs(5), "a").await;
        let wb = answer(wb, Duration::from_secs(5), "b").await;
        assert!(wa.is_ok() && wb.is_ok(), "{wa:?} {wb:?}");
        a.do_send(Close::Graceful);
        let _ = until_closed(&mut ha, Duration::from_secs(5)).await;
        // b is unaffected by a's close.
        b.send(Write::new(&b"b2"[..]))
            .await
            .expect("mailbox")
            .expect("b still writes");
        b.do_send(Close::Graceful);
        let _ = until_closed(&mut hb, Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(h.closes(), vec![7, 7]);
    });
}

// ---------------------------------------------------------------------------------------
// Interest notifications over a user transport.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Watch(Arc<Mutex<Vec<(Interest, Option<String>)>>>);
impl Actor for Watch {
    type Context = Context<Self>;
}
impl Handler<SocketInterest> for Watch {
    type Result = Result<(), InterestRefused>;
    fn handle(&mut self, m: SocketInterest, _: &mut Context<Self>) -> Self::Result {
        let d = m
            .user_data
            .and_then(|d| d.downcast_ref::<String>().cloned());
        self.0.lock().unwrap().push((m.interest, d));
        Ok(())
    }
}

/// Under would-blocks with Ready storms (read and write), interest changes are reported
/// only on change, each with the user data, `Remove` once and last.
#[test]
fn interest_stays_change_only_under_ready_storms() {
    run_paused(|| async {
        let h = Hostile::default();
        let mut script = Vec::new();
        for i in 0..30 {
            script.push(match i % 3 {
                0 => SendAct::WouldBlock {
                    after: Duration::from_millis(2),
                    storm: 50,
                },
                1 => SendAct::ReadyFirst { storm: 20 },
                _ => SendAct::Take(3),
            });
        }
        h.send(script);
        h.recv([
            RecvAct::WouldBlock {
                after: Duration::from_millis(3),
                storm: 30,
            },
            RecvAct::Data(Bytes::from_static(b"x")),
            RecvAct::WouldBlock {
                after: Duration::from_millis(7),
                storm: 30,
            },
            RecvAct::Eof,
        ]);
        let (_t, f) = h.functions();
        let watch = Watch::default();
        let (events, mut heard) = channel_subscriber();
        let socket = Socket::builder()
            .functions(f)
            .subscriber(events)
            .interest_subscriber(watch.clone().start().recipient())
            .user_data(Arc::new(String::from("u")))
            .connect(peer())
            .await
            .expect("connect");
        let mut answers = Vec::new();
        for i in 0..10 {
            answers.push(actix::spawn(
                socket.send(Write::new(Bytes::from(pattern(40, i)))),
            ));
            h.ready(1, Readiness::Writable, 30);
            h.ready(1, Readiness::Readable, 30);
        }
        for a in answers {
            answer(a, Duration::from_secs(30), "write")
                .await
                .expect("written");
        }
        socket.do_send(Close::Graceful);
        let _ = until_closed(&mut heard, Duration::from_secs(30)).await;
        h.ready(1, Readiness::Writable, 30);
        settle().await;
        let seen = watch.0.lock().unwrap().clone();
        eprintln!("{seen:?}");
        for w in seen.windows(2) {
            assert_ne!(w[0].0, w[1].0, "a repeated notification: {seen:?}");
        }
        assert!(
            seen.iter().all(|(_, d)| d.as_deref() == Some("u")),
            "{seen:?}"
        );
        assert_eq!(seen.last().map(|s| s.0), Some(Interest::Remove), "{seen:?}");
        assert_eq!(
            seen.iter().filter(|s| s.0 == Interest::Remove).count(),
            1,
            "{seen:?}"
        );
        assert!(seen
            .iter()
            .any(|s| matches!(s.0, Interest::Out | Interest::InOut)));
    });
}

// ---------------------------------------------------------------------------------------
// Listener over a user transport.
// ---------------------------------------------------------------------------------------

async fn listener_on(f: SocketFunctions) -> (Addr<Listener>, UnboundedReceiver<ListenerEvent>) {
    let (events, heard) = channel::<ListenerEvent>();
    let (l, _) = Listener::builder()
        .functions(f)
        .subscriber(events)
        .accept_backoff(Duration::from_millis(100))
        .bind(peer())
        .await
        .expect("bind");
    (l, heard)
}

fn conn(h: u64) -> Act<Accepted> {
    Act::Now(Ok(Accepted::Connection {
        handle: Handle(h),
        peer: Address::Inet(peer()),
    }))
}

/// Accept errors: an I/O error is reported and the listener goes on after its back-off;
/// any other kind is reported, then `Closed` last, the listening handle closed once.
#[test]
fn accept_errors_of_every_kind_are_reported_and_end_or_back_off_as_documented() {
    for (e, transient) in [
        (io_err(io::ErrorKind::Other), true),
        (TransportError::UnknownHandle(Handle(1)), false),
        (TransportError::Unavailable, false),
        (TransportError::Unsupported("accept"), false),
        (TransportError::OverRead { read: 1, asked: 0 }, false),
    ] {
        run_paused(|| async {
            let h = Hostile::default();
            {
                let mut s = h.st();
                s.accept_script.push_back(Act::Now(Err(e.clone())));
                s.accept_script.push_back(conn(50));
            }
            let (_t, f) = h.functions();
            let (l, mut heard) = listener_on(f).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let ev = crate::support::drain(&mut heard);
            let kinds: Vec<&str> = ev
                .iter()
                .map(|e| match e {
                    ListenerEvent::Accepted { .. } => "accepted",
                    ListenerEvent::AcceptFailed { .. } => "failed",
                    ListenerEvent::Closed => "closed",
                    _ => "other",
                })
                .collect();
            if transient {
                assert_eq!(kinds, ["failed", "accepted"], "{e:?}");
                l.do_send(StopListening);
                settle().await;
                assert_eq!(h.closes(), vec![1], "{e:?}");
            } else {
                assert_eq!(kinds, ["failed", "closed"], "{e:?}");
                assert_eq!(h.closes(), vec![1], "{e:?}");
                assert_eq!(h.st().accept_calls, 1, "{e:?}");
            }
        });
    }
}

/// Stop listening while an accept is out that is answered later with a connection: the
/// connection is closed, no socket is started, `Closed` is the last event, the listening
/// handle closed once.
#[test]
fn a_connection_accepted_after_stop_listening_is_closed_not_started() {
    run_paused(|| async {
        let h = Hostile::default();
        h.st().accept_script.push_back(Act::Late(
            Ok(Accepted::Connection {
                handle: Handle(40),
                peer: Address::Inet(peer()),
            }),
            Duration::from_secs(2),
        ));
        let (_t, f) = h.functions();
        let (l, mut heard) = listener_on(f).await;
        settle().await;
        l.do_send(StopListening);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let ev = crate::support::drain(&mut heard);
        assert!(
            ev.iter()
                .all(|e| !matches!(e, ListenerEvent::Accepted { .. })),
            "{ev:?}"
        );
        assert!(matches!(ev.last(), Some(ListenerEvent::Closed)), "{ev:?}");
        let mut closes = h.closes();
        closes.sort();
        assert_eq!(closes, vec![1, 40]);
        assert!(
            stops(&l, Duration::from_secs(1)).await,
            "the listener stopped"
        );
    });
}

/// Stop listening while an accept is out that is never answered: `Closed` still comes,
/// the listening handle is closed once.
#[test]
fn stop_listening_with_a_silent_accept_out_still_closes() {
    run_paused(|| async {
        let h = Hostile::default();
        h.st().accept_script.push_back(Act::Never);
        let (_t, f) = h.functions();
        let (l, mut heard) = listener_on(f).await;
        settle().await;
        l.do_send(StopListening);
        tokio::time::sleep(Duration::from_secs(30)).await;
        let ev = crate::support::drain(&mut heard);
        assert!(matches!(ev.last(), Some(ListenerEvent::Closed)), "{ev:?}");
        assert_eq!(h.closes(), vec![1]);
    });
}

/// A readable storm on the listening handle never puts two `Accept`s out, and every
/// connection is accepted once, in order.
#[test]
fn a_readable_storm_on_a_listener_keeps_one_accept_out() {
    run_paused(|| async {
        let h = Hostile::default();
        {
            let mut s = h.st();
            for i in 0..20u64 {
                if i % 4 == 0 {
                    s.accept_script
                        .push_back(Act::Now(Ok(Accepted::WouldBlock)));
                }
                s.accept_script.push_back(Act::Late(
                    Ok(Accepted::Connection {
                        handle: Handle(100 + i),
                        peer: Address::Inet(peer()),
                    }),
                    Duration::from_millis(1),
                ));
            }
        }
        let (_t, f) = h.functions();
        let (l, mut heard) = listener_on(f).await;
        for _ in 0..100 {
            h.ready(1, Readiness::Readable, 20);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let accepted = crate::support::drain(&mut heard)
            .into_iter()
            .filter(|e| matches!(e, ListenerEvent::Accepted { .. }))
            .count();
        assert_eq!(accepted, 20);
        assert_eq!(h.st().max_accept_out, 1, "two accepts out at once");
        l.do_send(StopListening);
    });
}

/// The same connection handle returned by two accepts: both sockets start; closing them
/// closes the (shared) handle twice; nothing panics. Also: an accept returning the
/// listening handle itself.
#[test]
fn accepts_returning_a_duplicate_or_the_listening_handle_do_not_panic() {
    run_paused(|| async {
        let h = Hostile::default();
        {
            let mut s = h.st();
            s.accept_script.push_back(conn(60));
            s.accept_script.push_back(conn(60));
            s.accept_script.push_back(conn(1));
        }
        let (_t, f) = h.functions();
        let (l, mut heard) = listener_on(f).await;
        settle().await;
        let ev = crate::support::drain(&mut heard);
        let sockets: Vec<Addr<Socket>> = ev
            .into_iter()
            .filter_map(|e| match e {
                ListenerEvent::Accepted { socket, .. } => Some(socket),
                _ => None,
            })
            .collect();
        eprintln!("accepted {}", sockets.len());
        for s in &sockets {
            let _ = s.send(Write::new(&b"hi"[..])).await;
            s.do_send(Close::Abort);
        }
        l.do_send(StopListening);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let closes = h.closes();
        eprintln!("closes {closes:?}");
        assert!(closes.contains(&1));
    });
}

// ---------------------------------------------------------------------------------------
// Datagram socket over a user transport.
// ---------------------------------------------------------------------------------------

async fn dgram_on(
    f: SocketFunctions,
    config: sockactor::DatagramConfig,
) -> (Addr<DatagramSocket>, UnboundedReceiver<DatagramEvent>) {
    let (events, heard) = channel::<DatagramEvent>();
    let (d, _) = DatagramSocket::builder()
        .functions(f)
        .subscriber(events)
        .config(config)
        .bind(peer())
        .await
        .expect("bind");
    (d, heard)
}

fn to() -> Address {
    Address::Inet("127.0.0.1:4000".parse().unwrap())
}

/// Partial, over-accept, zero, I/O error, would-block storms: each datagram answered once
/// with the documented error, the socket goes on after partial/over/I/O errors.
#[test]
fn datagram_answers_from_a_hostile_sendv_are_typed_and_once_each() {
    run_paused(|| async {
        let h = Hostile::default();
        h.send([
            SendAct::Take(3),
            SendAct::Over(2),
            SendAct::Fail(io_err(io::ErrorKind::ConnectionRefused)),
            SendAct::WouldBlock {
                after: Duration::from_millis(1),
                storm: 100,
            },
            SendAct::ReadyFirst { storm: 50 },
            SendAct::Take(usize::MAX),
            SendAct::Zero,
            SendAct::Take(usize::MAX),
        ]);
        let (_t, f) = h.functions();
        let (d, _heard) = dgram_on(f, sockactor::DatagramConfig::default()).await;
        let mut answers = Vec::new();
        for i in 0..6u8 {
            answers.push(actix::spawn(
                d.send(SendDatagram::new(Bytes::from(vec![i; 10])).to(to())),
            ));
        }
        let mut got = Vec::new();
        for a in answers {
            got.push(answer(a, Duration::from_secs(10), "datagram").await);
        }
        eprintln!("{got:?}");
        assert!(
            matches!(got[0], Err(DatagramError::Partial { sent: 3, len: 10 })),
            "{got:?}"
        );
        assert!(
            matches!(
                got[1],
                Err(DatagramError::Transport(
                    TransportError::OverAccepted { .. }
                ))
            ),
            "{got:?}"
        );
        assert!(
            matches!(got[2], Err(DatagramError::Transport(_))),
            "{got:?}"
        );
        assert!(got[3].is_ok(), "{got:?}");
        assert!(got[4].is_err(), "zero-byte accept of a datagram: {got:?}");
        assert!(got[5].is_ok(), "{got:?}");
        let s = h.st();
        assert_eq!(s.max_send_out, 1);
        assert_eq!(s.empty_offers, 0);
    });
}

/// Datagram reads from a user transport: senders kept, truncation flagged, an over-read
/// cut and flagged, I/O errors reported and reading goes on, a fatal error closes.
#[test]
fn datagram_reads_from_a_hostile_recvfrom_are_whole_flagged_and_bounded() {
    run_paused(|| async {
        let h = Hostile::default();
        let from = Some(Address::Inet("10.0.0.1:53".parse().unwrap()));
        h.recv([
            RecvAct::DataFrom(Bytes::from_static(b"one"), from.clone()),
            RecvAct::Trunc(Bytes::from(vec![2u8; 8]), from.clone()),
            RecvAct::DataFrom(Bytes::from(vec![3u8; 20]), None),
            RecvAct::Fail(io_err(io::ErrorKind::ConnectionRefused)),
            RecvAct::DataFrom(Bytes::from_static(b"four"), from.clone()),
            RecvAct::WouldBlock {
                after: Duration::from_millis(1),
                storm: 40,
            },
            RecvAct::Fail(TransportError::UnknownHandle(Handle(1))),
            RecvAct::DataFrom(Bytes::from_static(b"after"), from.clone()),
        ]);
        let (_t, f) = h.functions();
        let config = sockactor::DatagramConfig {
            max_datagram_size: 8,
            ..sockactor::DatagramConfig::default()
        };
        let (d, mut heard) = dgram_on(f, config).await;
        let w = actix::spawn(d.send(SendDatagram::new(&b"q"[..]).to(to())));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ev = crate::support::drain(&mut heard);
        let kinds: Vec<String> = ev
            .iter()
            .map(|e| match &e.kind {
                DatagramEventKind::Received {
                    bytes,
                    from,
                    truncated,
                } => format!("recv {} {} {}", bytes.len(), from.is_some(), truncated),
                DatagramEventKind::ReadFailed(_) => "readfailed".into(),
                DatagramEventKind::Closed { cause } => format!("closed {}", cause.is_some()),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "recv 3 true false",
                "recv 8 true true",
                "recv 8 false true",
                "readfailed",
                "recv 4 true false",
                "readfailed",
                "closed true",
            ],
            "{ev:?}"
        );
        let w = answer(w, Duration::from_secs(11), "datagram").await;
        eprintln!("datagram sent before the failure: {w:?}");
        assert!(h.st().max_recv_out <= 1);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(h.closes(), vec![1]);
    });
}

/// A datagram `SendV` never answered, then an abort: the datagram is answered within the
/// 10 s grace; later answers do not answer twice; the handle closed once.
#[test]
fn a_datagram_sendv_never_answered_is_answered_within_the_grace() {
    run_paused(|| async {
        let h = Hostile::default();
        h.send([SendAct::Never]);
        let (_t, f) = h.functions();
        let (d, mut heard) = dgram_on(f, sockactor::DatagramConfig::default()).await;
        let a = actix::spawn(d.send(SendDatagram::new(&b"one"[..]).to(to())));
        let b = actix::spawn(d.send(SendDatagram::new(&b"two"[..]).to(to())));
        settle().await;
        d.do_send(Close::Abort);
        let b = answer(b, Duration::from_secs(1), "queued datagram").await;
        assert!(matches!(b, Err(DatagramError::Aborted)), "{b:?}");
        let a = answer(a, Duration::from_secs(11), "datagram in flight").await;
        assert!(a.is_err(), "{a:?}");
        let _ = heard.recv().await;
        settle().await;
        assert_eq!(h.closes(), vec![1]);
    });
}

/// The datagram socket's transport stops mid-send: the datagram in flight and the queued
/// ones are answered with `Transport(Unavailable)`, `Closed` carries the cause.
#[test]
fn a_datagram_transport_that_stops_mid_send_fails_every_datagram_once() {
    run_paused(|| async {
        let h = Hostile::default();
        h.send([SendAct::StopActor]);
        let (_t, f) = h.functions();
        let (d, mut heard) = dgram_on(f, sockactor::DatagramConfig::default()).await;
        let mut answers = Vec::new();
        for i in 0..4u8 {
            answers.push(actix::spawn(
                d.send(SendDatagram::new(Bytes::from(vec![i; 4])).to(to())),
            ));
        }
        for a in answers {
            let r = answer(a, Duration::from_secs(11), "datagram").await;
            assert!(
                matches!(
                    r,
                    Err(DatagramError::Transport(TransportError::Unavailable))
                ),
                "{r:?}"
            );
        }
        let mut closed = None;
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(11), heard.recv()).await {
            if let DatagramEventKind::Closed { cause } = e.kind {
                closed = Some(cause);
                break;
            }
        }
        assert!(
            matches!(closed, Some(Some(TransportError::Unavailable))),
            "{closed:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Partial overrides over the mock: close / sendv replaced.
// ---------------------------------------------------------------------------------------

/// The mock's table with only `close` replaced by a failing user close: the socket ends,
/// the failing close is called once, and the mock's own handle stays open (the
/// replacement did not forward) — documented as the replacement's job.
#[test]
fn a_replaced_close_over_the_mock_is_called_once_per_socket() {
    run_paused(|| async {
        let mock = sockactor::MockTransport::start();
        let h = Hostile::default();
        h.st()
            .close_act
            .push_back(Act::Now(Err(io_err(io::ErrorKind::Other))));
        let t = h.start();
        let f = mock.functions().with_close(t.recipient());
        let (socket, mut heard) = socket_on(f, SocketConfig::default()).await;
        socket
            .send(Write::new(&b"hello"[..]))
            .await
            .expect("mailbox")
            .expect("written");
        socket.do_send(Close::Graceful);
        let _ = until_closed(&mut heard, Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(h.closes(), vec![1]);
        assert_eq!(mock.written(Handle(1)), b"hello");
    });
}

/// Only `sendv` replaced over the mock by an over-accepting one: typed `OverAccepted`,
/// the mock's handle closed once.
#[test]
fn an_over_accepting_sendv_over_the_mock_is_typed_and_closes_the_mock_handle() {
    run_paused(|| async {
        let mock = sockactor::MockTransport::start();
        let h = Hostile::default();
        h.send([SendAct::Take(2), SendAct::Over(1)]);
        let t = h.start();
        let f = mock.functions().with_sendv(t.recipient());
        let (socket, mut heard) = socket_on(f, SocketConfig::default()).await;
        let w = socket
            .send(Write::new(&b"hello"[..]))
            .await
            .expect("mailbox");
        match w {
            Err(WriteError::Transport {
                bytes_sent: 2,
                len: 5,
                source:
                    TransportError::OverAccepted {
                        accepted: 4,
                        offered: 3,
                    },
            }) => {}
            other => panic!("{other:?}"),
        }
        let (cause, _) = until_closed(&mut heard, Duration::from_secs(5)).await;
        assert!(matches!(cause, Some(TransportError::OverAccepted { .. })));
        settle().await;
        let info = socket.send(GetInfo).await;
        if let Ok(info) = info {
            assert!(!info.open);
        }
        assert!(mock.is_closed(Handle(1)), "the mock's handle closed");
    });
}

// ---------------------------------------------------------------------------------------
// Second batch: late answers within the grace, orphaned sockets over silent transports,
// the reconnecting client over a user transport, datagram read-error bounds.
// ---------------------------------------------------------------------------------------

/// An abort while a `SendV` is out that is answered 3 s later (within the 10 s grace)
/// with a partial accept: the write is answered once, `Aborted` with every byte the
/// transport took (10 before, 100 in the late answer).
#[test]
fn a_late_partial_answer_within_the_grace_counts_its_bytes() {
    run_paused(|| async {
        let h = Hostile::default();
        h.send([
            SendAct::Take(10),
            SendAct::Late(100, Duration::from_secs(3)),
        ]);
        let (_t, f) = h.functions();
        let (socket, mut heard) = socket_on(f, SocketConfig::default()).await;
        let w = actix::spawn(socket.send(Write::new(Bytes::from(pattern(5000, 1)))));
        settle().await;
        assert_eq!(h.st().sendv_calls, 2);
        socket.do_send(Close::Abort);
        let w = answer(w, Duration::from_secs(11), "write").await;
        assert!(
            matches!(
                w,
                Err(WriteError::Aborted {
                    bytes_sent: 110,
                    len: 5000
                })
            ),
            "{w:?}"
        );
        let _ = until_closed(&mut heard, Duration::from_secs(11)).await;
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(h.closes(), vec![1]);
        assert_eq!(h.written(1).len(), 110);
    });
}

/// A transport that sends `Ready(Readable)` before answering would-block on a read:
/// the socket must not lose the notice (it reads again and gets the data).
#[test]
fn a_readable_notice_overtaking_its_would_block_is_not_lost() {
    run_paused(|| async {
        let h = Hostile::default();
        let (_t, f) = h.functions();
        // First read: would block, with the Ready sent "before" the answer by a storm of 1
        // at zero delay (spawned, so it races the answer).
        h.recv([
            RecvAct::WouldBlock {
                after: Duration::ZERO,
                storm: 1,
            },
            RecvAct::Data(Bytes::from_static(b"late data")),
        ]);
        let (_socket, mut heard) = socket_on(f, SocketConfig::default()).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let got: Vec<u8> = crate::support::drain(&mut heard)
            .into_iter()
            .filter_map(|e| match e {
                SocketEventKind::Received(b) => Some(b.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(got, b"late data");
    });
}

/// Every address dropped while a read is out that the transport never answers, nothing
/// queued: the socket is documented to close its handle and stop "whatever its
/// transport" (`OpenSocket::events`).
#[test]
fn an_orphaned_socket_with_a_silent_read_out_closes_its_handle() {
    run_paused(|| async {
        let h = Hostile::default();
        h.recv([RecvAct::Never]);
        let (_t, f) = h.functions();
        let (socket, _heard) = socket_on(f, SocketConfig::default()).await;
        settle().await;
        assert_eq!(h.st().recv_calls, 1);
        drop(socket);
        tokio::time::sleep(Duration::from_secs(120)).await;
        settle().await;
        assert_eq!(
            h.closes(),
            vec![1],
            "handle closed after the last address dropped"
        );
    });
}

/// Control: the same with a read that is answered (would-block, never a `Ready`).
#[test]
fn an_orphaned_socket_with_a_parked_read_closes_its_handle() {
    run_paused(|| async {
        let h = Hostile::default();
        let (_t, f) = h.functions();
        let (socket, _heard) = socket_on(f, SocketConfig::default()).await;
        settle().await;
        drop(socket);
        tokio::time::sleep(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(h.closes(), vec![1]);
    });
}

/// Every address dropped with a `SendV` never answered and a drain timeout: the drain
/// turns into an abort, the transmit gets its 10 s grace, the handle is closed once.
#[test]
fn an_orphaned_socket_with_a_silent_sendv_and_a_drain_timeout_closes_its_handle() {
    run_paused(|| async {
        let h = Hostile::default();
        h.send([SendAct::Never]);
        let (_t, f) = h.functions();
        let config = SocketConfig {
            drain_timeout: Some(Duration::from_secs(2)),
            ..SocketConfig::default()
        };
        let (socket, mut heard) = socket_on(f, config).await;
        socket.do_send(Write::new(Bytes::from(pattern(100, 1))).tag(5));
        settle().await;
        drop(socket);
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        let ev = crate::support::drain(&mut heard);
        assert_eq!(h.closes(), vec![1], "{ev:?}");
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, SocketEventKind::WriteFailed { tag: Some(5), .. }))
                .count(),
            1,
            "{ev:?}"
        );
    });
}

/// The reconnecting client over a user transport: two refused connects, a connection
/// whose transport takes 3 bytes and then resets, a new connection. The write on the
/// wire fails with its 3 bytes, the others go out in order on the new connection, and
/// every handle opened is closed exactly once (but the live one).
#[test]
fn a_reconnecting_client_over_a_user_transport_releases_every_handle_once() {
    run_paused(|| async {
        let h = Hostile::default();
        {
            let mut s = h.st();
            s.connect_act
                .push_back(Act::Now(Err(io_err(io::ErrorKind::ConnectionRefused))));
            s.connect_act
                .push_back(Act::Now(Err(io_err(io::ErrorKind::ConnectionRefused))));
            s.send_script.push_back(SendAct::Take(3));
            s.send_script
                .push_back(SendAct::Fail(io_err(io::ErrorKind::ConnectionReset)));
        }
        let (_t, f) = h.functions();
        let (events, mut heard) = channel::<sockactor::messages::ClientEvent>();
        let client = sockactor::ReconnectingClient::builder(peer())
            .functions(f)
            .backoff(Duration::from_millis(10), Duration::from_millis(100))
            .jitter(sockactor::Jitter::None)
            .seed(1)
            .subscriber(events)
            .start();
        let a = Bytes::from(pattern(5000, 1));
        let b = Bytes::from(pattern(6000, 2));
        let c = Bytes::from(pattern(7000, 3));
        let wa = actix::spawn(client.send(Write::new(a.clone())));
        let wb = actix::spawn(client.send(Write::new(b.clone())));
        let wc = actix::spawn(client.send(Write::new(c.clone())));
        let wa = answer(wa, Duration::from_secs(30), "a").await;
        let wb = answer(wb, Duration::from_secs(30), "b").await;
        let wc = answer(wc, Duration::from_secs(30), "c").await;
        eprintln!("a {wa:?}\nb {wb:?}\nc {wc:?}");
        assert!(
            matches!(
                wa,
                Err(WriteError::Transport {
                    bytes_sent: 3,
                    len: 5000,
                    ..
                })
            ),
            "{wa:?}"
        );
        assert_eq!(wb.expect("b replayed").len, 6000);
        assert_eq!(wc.expect("c replayed").len, 7000);
        let (opens, mut closes) = {
            let s = h.st();
            (s.opens, s.closes.clone())
        };
        closes.sort();
        eprintln!("opens {opens}, closes {closes:?}");
        assert_eq!(opens, 4);
        assert_eq!(closes, vec![1, 2, 3], "each dead handle closed once");
        let mut want = b.to_vec();
        want.extend_from_slice(&c);
        assert_eq!(h.written(4), want, "the replayed writes, in order");
        let ev = crate::support::drain(&mut heard);
        eprintln!("{ev:?}");
        client.do_send(Close::Graceful);
        settle().await;
    });
}

/// Datagram read errors: I/O errors are reported and reading goes on up to 8 in a row;
/// a datagram between resets the count; the 9th in a row fails the socket, reported.
#[test]
fn datagram_read_errors_are_bounded_at_eight_in_a_row() {
    run_paused(|| async {
        let h = Hostile::default();
        let mut script = Vec::new();
        for _ in 0..8 {
            script.push(RecvAct::Fail(io_err(io::ErrorKind::ConnectionRefused)));
        }
        script.push(RecvAct::DataFrom(Bytes::from_static(b"ok"), Some(to())));
        for _ in 0..9 {
            script.push(RecvAct::Fail(io_err(io::ErrorKind::ConnectionRefused)));
        }
        script.push(RecvAct::DataFrom(Bytes::from_static(b"never"), Some(to())));
        h.recv(script);
        let (_t, f) = h.functions();
        let (_d, mut heard) = dgram_on(f, sockactor::DatagramConfig::default()).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ev = crate::support::drain(&mut heard);
        let failed = ev
            .iter()
            .filter(|e| matches!(e.kind, DatagramEventKind::ReadFailed(_)))
            .count();
        let received = ev
            .iter()
            .filter(|e| matches!(e.kind, DatagramEventKind::Received { .. }))
            .count();
        let closed = ev
            .iter()
            .filter(|e| matches!(e.kind, DatagramEventKind::Closed { .. }))
            .count();
        assert_eq!((failed, received, closed), (17, 1, 1), "{ev:?}");
        assert_eq!(h.st().recv_calls, 18);
    });
}

/// `Eof` from a datagram transport ends reading: no more `RecvFrom`, even under Ready
/// storms; sending goes on.
#[test]
fn a_datagram_eof_ends_reading_for_good() {
    run_paused(|| async {
        let h = Hostile::default();
        h.recv([RecvAct::Eof]);
        h.st().recv_default = Some(RecvAct::DataFrom(Bytes::from_static(b"x"), Some(to())));
        let (_t, f) = h.functions();
        let (d, mut heard) = dgram_on(f, sockactor::DatagramConfig::default()).await;
        settle().await;
        h.ready(1, Readiness::Readable, 50);
        settle().await;
        assert_eq!(h.st().recv_calls, 1);
        assert!(crate::support::drain(&mut heard)
            .iter()
            .all(|e| !matches!(e.kind, DatagramEventKind::Received { .. })));
        d.send(SendDatagram::new(&b"still"[..]).to(to()))
            .await
            .expect("mailbox")
            .expect("sent");
    });
}

/// Every address of a datagram socket dropped with a `SendV` that is never answered:
/// the datagram is answered (`Lost` or the grace), and the handle is closed once.
#[test]
fn a_dropped_datagram_socket_over_a_silent_sendv_closes_its_handle() {
    run_paused(|| async {
        let h = Hostile::default();
        h.send([SendAct::Never]);
        let (_t, f) = h.functions();
        let (d, _heard) = dgram_on(f, sockactor::DatagramConfig::default()).await;
        let a = actix::spawn(d.send(SendDatagram::new(&b"one"[..]).to(to())));
        settle().await;
        drop(d);
        let a = answer(a, Duration::from_secs(60), "datagram").await;
        eprintln!("{a:?}");
        assert!(a.is_err());
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(h.closes(), vec![1]);
    });
}

/// `from_actor` tables have no bind/listen/accept: a listener and a bound datagram
/// socket fail with `Unsupported`, and a stream socket's graceful close with a linger
/// (no shutdown operation) still completes.
#[test]
fn a_minimal_table_refuses_listening_and_still_closes_without_shutdown() {
    run_paused(|| async {
        let h = Hostile::default();
        let t = h.start();
        let f = SocketFunctions::from_actor(t);
        let r = Listener::builder().functions(f.clone()).bind(peer()).await;
        assert!(
            matches!(
                r,
                Err(SocketError::Listen(TransportError::Unsupported("accept")))
            ),
            "{:?}",
            r.err()
        );
        let r = DatagramSocket::builder()
            .functions(f.clone())
            .bind(peer())
            .await;
        assert!(r.is_err(), "a bound datagram socket without bind");
        let (socket, mut heard) =
            socket_on(f, crate::support::lingering(Duration::from_secs(5))).await;
        socket
            .send(Write::new(&b"x"[..]))
            .await
            .expect("mailbox")
            .expect("written");
        socket.do_send(Close::Graceful);
        let _ = until_closed(&mut heard, Duration::from_secs(10)).await;
        settle().await;
        let closes = h.closes();
        // The datagram open (if any) and the stream socket: each closed once.
        let mut dedup = closes.clone();
        dedup.dedup();
        assert_eq!(dedup, closes, "a handle closed twice: {closes:?}");
        assert!(closes.contains(&(h.st().next_handle)), "{closes:?}");
    });
}

/// An accept answered `Refused` (a filter's handshake failed): reported, no back-off,
/// the next connection accepted at once.
#[test]
fn a_refused_accept_is_reported_and_the_next_is_taken_at_once() {
    run_paused(|| async {
        let h = Hostile::default();
        {
            let mut s = h.st();
            s.accept_script
                .push_back(Act::Now(Ok(Accepted::Refused(io_err(
                    io::ErrorKind::InvalidData,
                )))));
            s.accept_script.push_back(conn(70));
        }
        let (_t, f) = h.functions();
        let (_l, mut heard) = listener_on(f).await;
        settle().await;
        let ev = crate::support::drain(&mut heard);
        assert!(
            matches!(ev.first(), Some(ListenerEvent::AcceptFailed { .. })),
            "{ev:?}"
        );
        assert!(
            matches!(ev.get(1), Some(ListenerEvent::Accepted { .. })),
            "{ev:?}"
        );
    });
}

/// The runtime ends while a socket with a drain timeout still has a write out (over a
/// silent user transport, and over the mock's `Hold`): dropping the actor must not panic
/// ("there is no reactor running" from a timer armed while the runtime is torn down).
#[test]
fn the_runtime_ending_under_a_socket_with_a_drain_timeout_does_not_panic() {
    runtime_end_probe(false);
}

/// The same over the mock transport with a held `sendv` (an ordinary test setup).
#[test]
fn the_runtime_ending_under_a_mock_socket_with_a_drain_timeout_does_not_panic() {
    runtime_end_probe(true);
}

fn runtime_end_probe(over_mock: bool) {
    {
        let panics = crate::support::panics_on_this_thread_during(|| {
            let _kept = run_paused(|| async {
                let config = SocketConfig {
                    drain_timeout: Some(Duration::from_secs(2)),
                    ..SocketConfig::default()
                };
                let mock = sockactor::MockTransport::start();
                let h = Hostile::default();
                let f = if over_mock {
                    mock.script_sendv(Handle(1), [sockactor::SendStep::Hold]);
                    mock.functions()
                } else {
                    h.send([SendAct::Never]);
                    h.functions().1
                };
                let (socket, _heard) = socket_on(f, config).await;
                socket.do_send(Write::new(Bytes::from(pattern(100, 1))).tag(5));
                settle().await;
                // The runtime ends with the write still out and the address held
                // (returned out of `block_on`, as an application holding its sockets):
                // the runtime drops the actor.
                socket
            });
        });
        assert_eq!(
            panics, 0,
            "over_mock {over_mock}: panics while the runtime ended"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Third batch: the simulator and a filter over user transports.
// ---------------------------------------------------------------------------------------

/// Forwards `CloseSocket` to an inner close, recording each handle.
struct CountingClose {
    inner: Recipient<CloseSocket>,
    seen: Arc<Mutex<Vec<u64>>>,
}
impl Actor for CountingClose {
    type Context = Context<Self>;
}
impl Handler<CloseSocket> for CountingClose {
    type Result = ResponseFuture<Result<(), TransportError>>;
    fn handle(&mut self, msg: CloseSocket, _: &mut Context<Self>) -> Self::Result {
        self.seen.lock().unwrap().push(msg.handle.0);
        let inner = self.inner.clone();
        Box::pin(async move { inner.send(msg).await? })
    }
}

/// Over the simulator, a client whose `close` is replaced by a forwarding counter and a
/// listener echoing: the client's handle is closed exactly once, and afterwards no
/// handle is left open in the simulator.
#[test]
fn over_the_simulator_a_replaced_close_is_called_once_and_nothing_leaks() {
    run_paused(|| async {
        let sim = sockactor::SimNetwork::start(sockactor::SimConfig {
            seed: 14,
            ..sockactor::SimConfig::default()
        });
        let server = crate::support::EchoServer::default().start();
        let sub = server.clone();
        let (listener, local) = Listener::builder()
            .functions(sim.functions())
            .subscriber(server.clone().recipient())
            .socket_builder(move |_| Socket::builder().subscriber(sub.clone().recipient()))
            .bind(std::net::SocketAddr::from(([10, 0, 0, 1], 80)))
            .await
            .expect("bind");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let counting = sockactor::start_unbudgeted(CountingClose {
            inner: sim.functions().close().clone(),
            seen: seen.clone(),
        });
        let f = sim.functions().with_close(counting.recipient());
        let (events, mut heard) = channel_subscriber();
        let client = Socket::builder()
            .functions(f)
            .subscriber(events)
            .connect(local)
            .await
            .expect("connect");
        let data = Bytes::from(pattern(10_000, 9));
        client
            .send(Write::new(data.clone()))
            .await
            .expect("mailbox")
            .expect("written");
        let mut back = Vec::new();
        while back.len() < data.len() {
            match tokio::time::timeout(Duration::from_secs(30), heard.recv())
                .await
                .expect("echo in time")
            {
                Some(SocketEventKind::Received(b)) => back.extend_from_slice(&b),
                Some(SocketEventKind::Closed { cause }) => panic!("closed: {cause:?}"),
                Some(_) => {}
                None => panic!("gone"),
            }
        }
        assert_eq!(back, data.to_vec());
        let handle = client.send(GetInfo).await.expect("info").handle;
        client.do_send(Close::Graceful);
        let _ = until_closed(&mut heard, Duration::from_secs(30)).await;
        listener.do_send(StopListening);
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        assert_eq!(*seen.lock().unwrap(), vec![handle.0]);
        assert!(sim.open_handles().is_empty(), "{:?}", sim.open_handles());
    });
}

/// A fault injector (no faults) over a user transport that over-accepts and storms
/// `Ready`s for handles it never opened: the filter turns the over-accept into
/// `OverAccepted` (filters.md, `Link::sendv`), drops the foreign notices, and the write
/// is answered once with how far it got.
#[test]
fn a_filter_over_an_over_accepting_user_transport_reports_over_accepted() {
    run_paused(|| async {
        let h = Hostile::default();
        h.send([SendAct::Take(4), SendAct::Over(2)]);
        let (_t, inner) = h.functions();
        let f = sockactor::filters::FaultInjector::new(1, sockactor::filters::Faults::default())
            .wrap(inner);
        let (socket, mut heard) = socket_on(f, SocketConfig::default()).await;
        // Foreign notices through the filter's own recipient for handle 1.
        h.ready_via(1, 77, Readiness::Writable);
        h.ready_via(1, 78, Readiness::Readable);
        let w = socket
            .send(Write::new(Bytes::from(pattern(1000, 1))))
            .await
            .expect("mailbox");
        match &w {
            Err(WriteError::Transport {
                bytes_sent: 4,
                len: 1000,
                source: TransportError::OverAccepted { .. },
            }) => {}
            other => panic!("{other:?}"),
        }
        let (cause, _) = until_closed(&mut heard, Duration::from_secs(15)).await;
        assert!(
            matches!(cause, Some(TransportError::OverAccepted { .. })),
            "{cause:?}"
        );
        settle().await;
        assert_eq!(h.closes(), vec![1]);
    });
}

/// The transport stops mid-write with an interest subscriber: `Remove` comes once, last,
/// with the user data.
#[test]
fn a_transport_stopping_mid_write_still_reports_remove_once() {
    run_paused(|| async {
        let h = Hostile::default();
        h.send([
            SendAct::WouldBlock {
                after: Duration::from_millis(1),
                storm: 5,
            },
            SendAct::StopActor,
        ]);
        let (_t, f) = h.functions();
        let watch = Watch::default();
        let (events, mut heard) = channel_subscriber();
        let socket = Socket::builder()
            .functions(f)
            .subscriber(events)
            .interest_subscriber(watch.clone().start().recipient())
            .user_data(Arc::new(String::from("z")))
            .connect(peer())
            .await
            .expect("connect");
        let w = actix::spawn(socket.send(Write::new(Bytes::from(pattern(100, 1)))));
        let _ = until_closed(&mut heard, Duration::from_secs(15)).await;
        let _ = answer(w, Duration::from_secs(15), "write").await;
        settle().await;
        let seen = watch.0.lock().unwrap().clone();
        for p in seen.windows(2) {
            assert_ne!(p[0].0, p[1].0, "{seen:?}");
        }
        assert_eq!(seen.last().map(|s| s.0), Some(Interest::Remove), "{seen:?}");
        assert_eq!(seen.iter().filter(|s| s.0 == Interest::Remove).count(), 1);
        assert!(seen.iter().all(|s| s.1.as_deref() == Some("z")));
    });
}
