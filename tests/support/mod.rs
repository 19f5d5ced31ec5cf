//! Helpers shared by the behaviour tests, included by each test crate's `main.rs` (each
//! crate uses a subset of them). `tls`, `capture` and `client` hold the helpers of the
//! TLS, capture / replay and reconnecting-client tests.
#![allow(dead_code, unreachable_pub)]

pub mod capture;
pub mod client;
pub mod layers;
pub mod servers;
pub mod sim;
pub mod tls;

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

/// A socket over `mock`'s transport table, connected to [`mock_peer`], with every other
/// setting at its default.
pub async fn mock_socket(mock: &sockactor::MockTransport) -> Addr<sockactor::Socket> {
    sockactor::Socket::builder()
        .functions(mock.functions())
        .connect(mock_peer())
        .await
        .expect("connect")
}

/// A socket over `mock`'s transport table, connected to [`mock_peer`], whose events go to
/// `subscriber`; every other setting at its default.
pub async fn subscribed_mock_socket(
    mock: &sockactor::MockTransport,
    subscriber: Recipient<SocketEvent>,
) -> Addr<sockactor::Socket> {
    sockactor::Socket::builder()
        .functions(mock.functions())
        .subscriber(subscriber)
        .connect(mock_peer())
        .await
        .expect("connect")
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

    /// What `pick` makes of each event it picks, in the order the events came.
    pub fn picked<T>(&self, pick: impl FnMut(&SocketEventKind) -> Option<T>) -> Vec<T> {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter_map(pick)
            .collect()
    }

    /// The lengths of the deliveries, in order.
    pub fn delivery_lens(&self) -> Vec<usize> {
        self.picked(|e| match e {
            SocketEventKind::Received(bytes) => Some(bytes.len()),
            _ => None,
        })
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

/// A socket config that lingers this long after a graceful close for the peer's EOF
/// (everything else default).
pub fn lingering(linger: std::time::Duration) -> sockactor::SocketConfig {
    sockactor::SocketConfig {
        close_linger: linger,
        ..sockactor::SocketConfig::default()
    }
}

/// 127.0.0.1 on port 0: a datagram socket's bind address when any port will do.
pub fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
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

/// The next datagram a datagram socket's subscriber heard (its bytes, sender and whether
/// it was cut short), skipping other events; panics if the socket closed or none came
/// within 10 s.
pub async fn next_datagram(
    heard: &mut tokio::sync::mpsc::UnboundedReceiver<sockactor::messages::DatagramEvent>,
) -> (Vec<u8>, Option<sockactor::messages::Address>, bool) {
    use sockactor::messages::DatagramEventKind;
    loop {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), heard.recv())
            .await
            .expect("a datagram within 10 s")
            .expect("subscriber alive");
        match event.kind {
            DatagramEventKind::Received {
                bytes,
                from,
                truncated,
            } => return (bytes.to_vec(), from, truncated),
            DatagramEventKind::Closed { cause } => panic!("socket closed: {cause:?}"),
            _ => {}
        }
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
/// Made with [`EchoServer::teeing`], it also passes each listener event on.
#[derive(Default)]
pub struct EchoServer {
    sockets: std::collections::HashMap<sockactor::messages::SocketId, Addr<sockactor::Socket>>,
    tee: Option<Recipient<sockactor::messages::ListenerEvent>>,
}

impl EchoServer {
    /// An echo server that passes a copy of each listener event to `tee`, so a test can
    /// count them.
    pub fn teeing(tee: Recipient<sockactor::messages::ListenerEvent>) -> Self {
        EchoServer {
            sockets: std::collections::HashMap::new(),
            tee: Some(tee),
        }
    }
}

impl Actor for EchoServer {
    type Context = Context<Self>;
}

impl Handler<sockactor::messages::ListenerEvent> for EchoServer {
    type Result = ();
    fn handle(&mut self, msg: sockactor::messages::ListenerEvent, _: &mut Context<Self>) {
        if let sockactor::messages::ListenerEvent::Accepted { socket, id, .. } = &msg {
            self.sockets.insert(*id, socket.clone());
        }
        if let Some(tee) = &self.tee {
            tee.do_send(msg);
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

/// A path under the temporary directory that no other test uses, in this process or in
/// any other: `sockactor-<process id>-<n>-<name>`, `n` counted across the process (tests
/// that share a crate share its process). Whatever an earlier process with the same id
/// left there is removed first.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("sockactor-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A [`temp_path`], removed (if still there) when dropped.
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    pub fn new(name: &str) -> Self {
        TempPath(temp_path(name))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
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
/// test.
pub fn fd_count_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An actix system for the tests that count this process's descriptors (use it as
/// `#[actix_rt::test(system = "crate::support::SerialSystem")]`): it takes
/// [`fd_count_lock`] before its runtime opens a descriptor and lets go of it only when
/// the test's thread ends, so no two such tests overlap, not even by one test's
/// runtime starting or stopping while another counts.
///
/// Not as soon as the runtime is dropped: two of its descriptors (an epoll and an
/// eventfd, its I/O driver's handle) stay open until the thread's thread-locals are
/// destroyed, and were seen closing in the middle of the next test's count. The guard
/// is kept in a thread-local that is first used here, before the runtime is built;
/// thread-local destructors run in the reverse order of their first use, so it is
/// dropped after all the others.
pub struct SerialSystem {
    runner: actix::SystemRunner,
}

thread_local! {
    /// The [`fd_count_lock`] guard of this thread's [`SerialSystem`].
    static SERIAL: std::cell::RefCell<Option<std::sync::MutexGuard<'static, ()>>> =
        const { std::cell::RefCell::new(None) };
}

impl SerialSystem {
    /// Waits for the lock, then makes the system.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let serial = fd_count_lock();
        SERIAL.with(|held| *held.borrow_mut() = Some(serial));
        SerialSystem {
            runner: actix::System::new(),
        }
    }

    /// Runs `future` to completion, then drops the runtime. The lock goes when the
    /// thread ends (at once if the test runs on the main thread, which never ends).
    pub fn block_on<F: Future>(self, future: F) -> F::Output {
        let output = self.runner.block_on(future);
        drop(self.runner);
        if std::thread::current().name() == Some("main") {
            SERIAL.with(|held| held.borrow_mut().take());
        }
        output
    }
}

/// The config of this suite's property tests: `cases` cases, and failures kept in a file
/// beside the test's module file, named after it with the extension
/// `.proptest-regressions` (committed, and re-run first on every run). Proptest's default
/// would look for a `main.rs` above the module file and keep them in
/// `tests/proptest-regressions/<module>.txt` instead.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..proptest::test_runner::Config::default()
    }
}

/// A process-wide `tracing` subscriber interested in every call site "sometimes" that
/// enables nothing: see [`WarnLog::start`].
struct Quiet;

impl tracing::Subscriber for Quiet {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// What a thread-local `tracing` subscriber wrote: warnings and errors.
#[derive(Clone, Default)]
pub struct WarnLog(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for WarnLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl WarnLog {
    /// Hears this thread's warnings and errors until the guard drops (a test's runtime
    /// runs on its thread, so its actors are heard).
    pub fn start() -> (WarnLog, tracing::subscriber::DefaultGuard) {
        // tracing caches, for the whole process, whether a call site is of interest: one
        // first reached on another test's thread, with no subscriber anywhere, would be
        // cached as of no interest, and this thread's subscriber would never hear it.
        // A process-wide subscriber that is "sometimes" interested (and enables nothing)
        // keeps every call site asking each thread's own subscriber.
        static QUIET: std::sync::Once = std::sync::Once::new();
        QUIET.call_once(|| {
            let _ = tracing::subscriber::set_global_default(Quiet);
        });
        let log = WarnLog::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .finish();
        (log, tracing::subscriber::set_default(subscriber))
    }

    /// How many lines contain `text`.
    pub fn lines_with(&self, text: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().expect("lock"))
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }

    /// Everything written.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

/// A `recvfrom` that breaks its contract: it asks `inner` for ten times what it was
/// asked for, and answers with that.
pub struct GreedyRecv(pub Recipient<sockactor::messages::RecvFrom>);

impl Actor for GreedyRecv {
    type Context = Context<Self>;
}

impl Handler<sockactor::messages::RecvFrom> for GreedyRecv {
    type Result = ResponseFuture<Result<sockactor::messages::Received, sockactor::TransportError>>;
    fn handle(
        &mut self,
        msg: sockactor::messages::RecvFrom,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let inner = self.0.clone();
        let msg = sockactor::messages::RecvFrom {
            max_len: msg.max_len * 10,
            ..msg
        };
        Box::pin(async move { inner.send(msg).await? })
    }
}

/// How many panics `f` raised on this thread, caught or not (a process-wide hook,
/// counted per thread, so tests running beside it do not count).
pub fn panics_on_this_thread_during(f: impl FnOnce()) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static HOOKED: std::sync::Once = std::sync::Once::new();
    thread_local! {
        static COUNT: AtomicUsize = const { AtomicUsize::new(0) };
    }
    HOOKED.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = COUNT.try_with(|c| c.fetch_add(1, Ordering::SeqCst));
            prev(info)
        }));
    });
    let before = COUNT.with(|c| c.load(Ordering::SeqCst));
    f();
    COUNT.with(|c| c.load(Ordering::SeqCst)) - before
}
