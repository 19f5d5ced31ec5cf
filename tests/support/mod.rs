//! Helpers shared by the behaviour tests.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use sockactor::messages::{SocketEvent, SocketEventKind, WritabilityChanged};

/// Runs `f` in a fresh actix system on a tokio runtime whose clock starts paused.
pub fn run_paused<F: Future>(f: impl FnOnce() -> F) -> F::Output {
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("tokio runtime")
    })
    .block_on(f())
}

/// An address nothing listens on; the mock never dials it.
pub fn mock_peer() -> SocketAddr {
    "127.0.0.1:9".parse().expect("addr")
}

/// Records every socket event and writability change it receives.
#[derive(Clone, Default)]
pub struct Recorder {
    pub events: Arc<Mutex<Vec<SocketEventKind>>>,
    pub writability: Arc<Mutex<Vec<bool>>>,
}

impl Recorder {
    pub fn start(&self) -> Addr<RecorderActor> {
        RecorderActor(self.clone()).start()
    }

    pub fn received(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in self.events.lock().expect("lock").iter() {
            if let SocketEventKind::Received(b) = e {
                out.extend_from_slice(b);
            }
        }
        out
    }

    pub fn writability(&self) -> Vec<bool> {
        self.writability.lock().expect("lock").clone()
    }

    pub fn count(&self, pred: impl Fn(&SocketEventKind) -> bool) -> usize {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| pred(e))
            .count()
    }
}

pub struct RecorderActor(Recorder);

impl Actor for RecorderActor {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for RecorderActor {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        self.0.events.lock().expect("lock").push(msg.kind);
    }
}

impl Handler<WritabilityChanged> for RecorderActor {
    type Result = ();
    fn handle(&mut self, msg: WritabilityChanged, _: &mut Context<Self>) {
        self.0.writability.lock().expect("lock").push(msg.writable);
    }
}

/// Lets every ready actor run until nothing is left to do at this instant of paused time.
pub async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// A subscriber that forwards every event into a channel the test can await.
pub fn channel_subscriber() -> (
    Recipient<SocketEvent>,
    tokio::sync::mpsc::UnboundedReceiver<SocketEventKind>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (Forwarder(tx).start().recipient(), rx)
}

struct Forwarder(tokio::sync::mpsc::UnboundedSender<SocketEventKind>);

impl Actor for Forwarder {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for Forwarder {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        let _ = self.0.send(msg.kind);
    }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A loopback listener that reads everything one connection sends until EOF.
pub async fn sink() -> (
    SocketAddr,
    tokio::task::JoinHandle<std::io::Result<Vec<u8>>>,
) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await?;
        Ok(all)
    });
    (addr, task)
}

/// A socket config whose queue has these watermarks (everything else default).
pub fn watermarks(high: usize, low: usize) -> sockactor::SocketConfig {
    sockactor::SocketConfig {
        queue: sockactor::QueueConfig {
            high_watermark: high,
            low_watermark: low,
            ..sockactor::QueueConfig::default()
        },
        ..sockactor::SocketConfig::default()
    }
}

/// A recipient of any message type that forwards each message into a channel the test
/// can await or drain.
pub fn channel<M>() -> (Recipient<M>, tokio::sync::mpsc::UnboundedReceiver<M>)
where
    M: Message<Result = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (AnyForwarder(tx).start().recipient(), rx)
}

struct AnyForwarder<M: Send>(tokio::sync::mpsc::UnboundedSender<M>);

impl<M: Send + 'static> Actor for AnyForwarder<M> {
    type Context = Context<Self>;
}

impl<M> Handler<M> for AnyForwarder<M>
where
    M: Message<Result = ()> + Send + 'static,
{
    type Result = ();
    fn handle(&mut self, msg: M, _: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}

/// Everything already in a channel.
pub fn drain<M>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<M>) -> Vec<M> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m);
    }
    out
}

/// The server side of an echo: subscribed to a listener and to every socket it accepts
/// (`Socket::builder().subscriber(server.clone().recipient())` in the listener's
/// per-connection builder). It keeps each accepted socket's address (from
/// `ListenerEvent::Accepted`, which arrives before the socket's first event), writes back
/// whatever a socket receives, closes it gracefully on EOF and forgets it once closed.
#[derive(Default)]
pub struct EchoServer {
    sockets: std::collections::HashMap<sockactor::messages::SocketId, Addr<sockactor::Socket>>,
}

impl Actor for EchoServer {
    type Context = Context<Self>;
}

impl Handler<sockactor::messages::ListenerEvent> for EchoServer {
    type Result = ();
    fn handle(&mut self, msg: sockactor::messages::ListenerEvent, _: &mut Context<Self>) {
        if let sockactor::messages::ListenerEvent::Accepted { socket, id, .. } = msg {
            self.sockets.insert(id, socket);
        }
    }
}

impl Handler<SocketEvent> for EchoServer {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        let Some(socket) = self.sockets.get(&msg.socket) else {
            return;
        };
        match msg.kind {
            SocketEventKind::Received(bytes) => {
                socket.do_send(sockactor::messages::Write::new(bytes).wait_when_full());
            }
            SocketEventKind::Eof => socket.do_send(sockactor::messages::Close::Graceful),
            SocketEventKind::Closed { .. } => {
                self.sockets.remove(&msg.socket);
            }
            _ => {}
        }
    }
}

/// How many descriptors this process has open now.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .expect("/proc/self/fd")
}

/// Serializes the tests of one crate that count this process's descriptors (tests run
/// on parallel threads, and a descriptor count is process-wide). Hold it for the whole
/// test. (Each test runs on its own thread, so blocking here never stalls another test's
/// runtime.)
pub fn fd_count_lock() -> FdCountGuard {
    static LOCK: Mutex<()> = Mutex::new(());
    FdCountGuard(
        LOCK.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// Held while a test counts descriptors: see [`fd_count_lock`].
pub struct FdCountGuard(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);
