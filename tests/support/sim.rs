//! The seeded network simulation: listeners, servers and clients over a [`SimNetwork`],
//! in paused time, all chosen from one seed, and the invariants checked at the end.
//! `cargo test` runs it on fixed seeds (tests/components); the `sim` tool of
//! `sockactor-tools` runs any number of seeds (`--seeds N --from S`, `--seed S` to replay
//! one) and includes this file.
//!
//! The invariants, per client connection:
//! - every write is answered exactly once (never `Lost`, never a mailbox error), within the
//!   run;
//! - no `Ok` answer after a failed one (`QueueFull` refusals aside: nothing of them is
//!   queued);
//! - the answers are truthful: the server read exactly the client's stream up to the
//!   bytes the answers report (the `Ok` writes and the failed write's `bytes_sent`), when
//!   the server read to the end; a prefix of it when the server aborted;
//! - a graceful close with a drain timeout is closed by its deadline;
//! - afterwards no handle is open in the network and the registry is empty.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use sockactor::messages::{
    Close, GetInfo, ListenerEvent, SocketEvent, SocketEventKind, SocketId, StopListening, Write,
};
use sockactor::{
    Listener, PeerLimits, ReadPermit, Registry, SimConfig, SimNetwork, Socket, SocketConfig,
    WriteError,
};
use tokio::time::Instant;

/// What one seed's run found.
#[derive(Debug, Default)]
pub struct SimReport {
    pub seed: u64,
    pub failures: Vec<String>,
    pub trace: u64,
    pub clients: usize,
    pub connected: usize,
    pub writes: usize,
    pub ok_writes: usize,
    pub bytes_checked: usize,
    pub ops: u64,
    pub resets: u64,
    pub refused: u64,
    pub virtual_secs: f64,
    /// Failed answers by kind (`QueueFull`, `Aborted`…).
    pub errors: BTreeMap<String, usize>,
    /// Connections through TLS, and the bytes their servers read.
    pub tls_connections: usize,
    pub tls_bytes: usize,
    /// Datagrams received, and lost by the network.
    pub datagrams: u64,
    pub datagrams_lost: u64,
}

impl SimReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The command that replays this seed.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p sockactor-tools --features sim --bin sim -- --seed {}",
            self.seed
        )
    }
}

/// SplitMix64: the scenario's own choices (the network has its own, from the same seed),
/// and any test's deterministic draws.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn ms(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }
}

/// The byte at `offset` of client `client`'s stream.
fn byte(client: usize, offset: usize) -> u8 {
    (offset.wrapping_mul(31) ^ client.wrapping_mul(151) ^ (offset >> 8)) as u8
}

/// What a server saw on one accepted connection.
#[derive(Debug, Default)]
struct Conn {
    handle: Option<sockactor::messages::Handle>,
    received: Vec<u8>,
    eof: bool,
    read_failed: bool,
    closed: bool,
    aborted: bool,
}

type Conns = Rc<RefCell<BTreeMap<SocketId, Conn>>>;

/// A server: keeps each accepted socket, records what it reads, sometimes holds its
/// read window for a while (a stalled reader), sometimes aborts, closes at the EOF.
struct Server {
    conns: Conns,
    sockets: BTreeMap<SocketId, Addr<Socket>>,
    rng: Rng,
    abort_percent: u64,
    stall_percent: u64,
}

impl Actor for Server {
    type Context = Context<Self>;
}

impl Handler<ListenerEvent> for Server {
    type Result = ();
    fn handle(&mut self, msg: ListenerEvent, ctx: &mut Context<Self>) {
        if let ListenerEvent::Accepted { socket, id, .. } = msg {
            self.conns.borrow_mut().entry(id).or_default();
            self.sockets.insert(id, socket.clone());
            let conns = self.conns.clone();
            ctx.spawn(
                socket
                    .send(GetInfo)
                    .into_actor(self)
                    .map(move |info, _, _| {
                        if let Ok(info) = info {
                            conns.borrow_mut().entry(id).or_default().handle = Some(info.handle);
                        }
                    }),
            );
        }
    }
}

impl Handler<SocketEvent> for Server {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, ctx: &mut Context<Self>) {
        let id = msg.socket;
        let mut conns = self.conns.borrow_mut();
        let conn = conns.entry(id).or_default();
        match msg.kind {
            SocketEventKind::Received(bytes) => {
                conn.received.extend_from_slice(&bytes);
                if !conn.aborted && self.rng.chance(self.abort_percent) {
                    conn.aborted = true;
                    if let Some(s) = self.sockets.get(&id) {
                        s.do_send(Close::Abort);
                    }
                } else if let (Some(permit), true) =
                    (msg.permit, self.rng.chance(self.stall_percent))
                {
                    // Hold the read window a while: the peer's writes back up.
                    let hold = self.rng.ms(200);
                    ctx.run_later(hold, move |_, _| drop::<ReadPermit>(permit));
                }
            }
            SocketEventKind::Eof => {
                conn.eof = true;
                if let Some(s) = self.sockets.get(&id) {
                    s.do_send(Close::Graceful);
                }
            }
            SocketEventKind::ReadFailed(_) => conn.read_failed = true,
            SocketEventKind::Closed { .. } => {
                conn.closed = true;
                self.sockets.remove(&id);
            }
            _ => {}
        }
    }
}

/// A client's socket events, with their times.
#[derive(Default)]
struct ClientLog {
    closed_at: Option<Instant>,
}

struct ClientEvents(Rc<RefCell<ClientLog>>);

impl Actor for ClientEvents {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for ClientEvents {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        if let SocketEventKind::Closed { .. } = msg.kind {
            self.0.borrow_mut().closed_at.get_or_insert(Instant::now());
        }
    }
}

/// How a client ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Graceful,
    Abort,
    Drop,
}

/// A write's answer: the written length or the write error; `Err` for a broken promise
/// (a mailbox error, a wrong length).
type Answer = Result<Result<usize, WriteError>, String>;

/// What a client did, for the checks.
struct ClientRun {
    index: usize,
    handle: Option<sockactor::messages::Handle>,
    /// Each write's offset in the client's numbering, length and answer.
    answers: Vec<(usize, usize, Answer)>,
    ending: Ending,
    closed_at: Option<Instant>,
    drain_timeout: Option<Duration>,
    closing_at: Option<Instant>,
    /// The byte layers it ran under.
    stack: Stack,
}

/// Byte layers a listener and its clients run over the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stack {
    Plain,
    Deflate,
    Tls,
}

impl Stack {
    fn layered(self) -> bool {
        self != Stack::Plain
    }
}

/// A TLS identity for "localhost" with an Ed25519 key (fixed-size signatures, so a
/// handshake's bytes have the same lengths every run), made once per process.
fn tls_configs() -> (
    std::sync::Arc<rustls::ServerConfig>,
    std::sync::Arc<rustls::ClientConfig>,
) {
    use std::sync::{Arc, OnceLock};
    static CONFIGS: OnceLock<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)> =
        OnceLock::new();
    CONFIGS
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
                .expect("params")
                .self_signed(&key)
                .expect("cert");
            let der = cert.der().clone();
            let server = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(
                    vec![der.clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(
                        rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
                    ),
                )
                .expect("server config");
            let mut roots = rustls::RootCertStore::empty();
            roots.add(der).expect("root");
            let mut client = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            // No resumption: a seed run after another in the same process would resume
            // its sessions, and so run differently.
            client.resumption = rustls::client::Resumption::disabled();
            (Arc::new(server), Arc::new(client))
        })
        .clone()
}

/// The network's transport table under `stack`, for a server's or a client's end.
fn functions(net: &SimNetwork, stack: Stack, server: bool) -> sockactor::SocketFunctions {
    match stack {
        Stack::Plain => net.functions(),
        Stack::Deflate => sockactor::filters::Compress::new().wrap(net.functions()),
        Stack::Tls if server => {
            sockactor::filters::Tls::server(tls_configs().0).wrap(net.functions())
        }
        Stack::Tls => sockactor::filters::Tls::client(tls_configs().1, "localhost")
            .expect("a server name")
            .wrap(net.functions()),
    }
}

/// Runs seed `seed` on a fresh thread (its own actix system, paused clock) and checks
/// every invariant.
pub fn run_seed(seed: u64) -> SimReport {
    std::thread::spawn(move || {
        actix::System::with_tokio_rt(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .expect("tokio runtime")
        })
        .block_on(scenario(seed))
    })
    .join()
    .unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        SimReport {
            seed,
            failures: vec![format!("panicked: {why}")],
            ..SimReport::default()
        }
    })
}

async fn scenario(seed: u64) -> SimReport {
    let start = Instant::now();
    let mut rng = Rng(seed ^ 0x0005_EED0_F5CE_A210);
    let mut report = SimReport {
        seed,
        ..SimReport::default()
    };
    let config = SimConfig {
        seed,
        latency: (rng.ms(2), Duration::from_millis(2 + rng.below(20))),
        buffer: 256 << rng.below(9),
        partial_accept: rng.below(60) as f64 / 100.0,
        reset: [0.0, 0.0, 0.002, 0.02][rng.below(4) as usize],
        datagram_loss: [0.0, 0.01, 0.1][rng.below(3) as usize],
    };
    let net = SimNetwork::start(config);
    let registry = Registry::new();
    let conns: Conns = Rc::default();

    // Listeners and their servers.
    let listeners = 1 + rng.below(2) as usize;
    let mut addrs = Vec::new();
    let mut listener_addrs = Vec::new();
    for i in 0..listeners {
        let server = Server {
            conns: conns.clone(),
            sockets: BTreeMap::new(),
            rng: Rng(rng.next()),
            abort_percent: [0, 0, 1, 5][rng.below(4) as usize],
            stall_percent: [0, 10, 50][rng.below(3) as usize],
        }
        .start();
        let socket_config = SocketConfig {
            read_chunk: 64 << rng.below(8),
            ..SocketConfig::default()
        };
        // Some listeners, and their clients, run byte layers over the network.
        let stack = match rng.below(10) {
            0..=5 => Stack::Plain,
            6..=7 => Stack::Deflate,
            _ => Stack::Tls,
        };
        let (registry, server2) = (registry.clone(), server.clone());
        let functions = functions(&net, stack, true);
        let functions2 = functions.clone();
        let bound = Listener::builder()
            .functions(functions)
            .backlog(1 + rng.below(8) as u32)
            .subscriber(server.recipient())
            .socket_builder(move |_| {
                Socket::builder()
                    .functions(functions2.clone())
                    .config(socket_config)
                    .registry(&registry)
                    .subscriber(server2.clone().recipient())
            })
            .bind(SocketAddr::from(([10, 0, 0, 1], 80 + i as u16)))
            .await;
        match bound {
            Ok((listener, addr)) => {
                listener_addrs.push(listener);
                addrs.push((addr, stack));
            }
            Err(e) => report.failures.push(format!("bind failed: {e}")),
        }
    }
    if addrs.is_empty() {
        return report;
    }

    // Clients, each its own task.
    let clients = 1 + rng.below(12) as usize;
    report.clients = clients;
    let mut tasks = Vec::new();
    let phases: Vec<Rc<RefCell<String>>> = (0..clients).map(|_| Rc::default()).collect();
    for (index, phase) in phases.iter().enumerate() {
        let mut crng = Rng(rng.next());
        let (net, registry) = (net.clone(), registry.clone());
        let (addr, stack) = addrs[crng.below(addrs.len() as u64) as usize].clone();
        let phase = phase.clone();
        tasks.push(actix::spawn(async move {
            client(index, &mut crng, net, stack, registry, addr, phase).await
        }));
    }
    // Now and then the network partitions.
    if rng.chance(30) {
        tokio::time::sleep(rng.ms(50)).await;
        net.partition(rng.ms(300));
    }
    // Reconnecting clients: each writes numbered records, across reconnects.
    let reconnecting = rng.below(4) as usize;
    let mut rtasks = Vec::new();
    for k in 0..reconnecting {
        let mut crng = Rng(rng.next());
        let (net, registry) = (net.clone(), registry.clone());
        let (addr, stack) = addrs[crng.below(addrs.len() as u64) as usize].clone();
        let id = (clients + k) as u16;
        rtasks.push(actix::spawn(async move {
            reconnecting_client(id, &mut crng, net, stack, registry, addr).await
        }));
    }
    // Datagram pairs: numbered datagrams both ways over a lossy, reordering network.
    let pairs = rng.below(3) as usize;
    let mut dtasks = Vec::new();
    for pair in 0..pairs {
        let mut prng = Rng(rng.next());
        let net = net.clone();
        dtasks.push(actix::spawn(async move {
            datagram_pair(pair as u16, &mut prng, net).await
        }));
    }
    let mut runs = Vec::new();
    for (index, task) in tasks.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(600), task).await {
            Ok(Ok(run)) => runs.push(run),
            Ok(Err(e)) => report.failures.push(format!("client task failed: {e}")),
            Err(_) => report.failures.push(format!(
                "client {index} did not finish within 600 s of virtual time: {}",
                phases[index].borrow()
            )),
        }
    }
    let mut dgrams = DatagramTally::default();
    for task in dtasks {
        match tokio::time::timeout(Duration::from_secs(600), task).await {
            Ok(Ok(Ok(tally))) => dgrams.add(tally),
            Ok(Ok(Err(e))) => report.failures.push(e),
            Ok(Err(e)) => report.failures.push(format!("datagram task failed: {e}")),
            Err(_) => report
                .failures
                .push("a datagram pair did not finish within 600 s".into()),
        }
    }
    let mut rruns = Vec::new();
    for task in rtasks {
        match tokio::time::timeout(Duration::from_secs(600), task).await {
            Ok(Ok(run)) => rruns.push(run),
            Ok(Err(e)) => report.failures.push(format!("client task failed: {e}")),
            Err(_) => report
                .failures
                .push("a reconnecting client did not finish within 600 s".into()),
        }
    }
    // Let the servers finish and the last segments arrive.
    tokio::time::sleep(Duration::from_secs(30)).await;
    for listener in &listener_addrs {
        let _ = listener.send(StopListening).await;
    }
    drop(listener_addrs);
    tokio::time::sleep(Duration::from_secs(30)).await;

    let claimed = check(&mut report, &runs, &conns.borrow(), &net);
    let resets = net.counts().resets;
    check_records(&mut report, &rruns, &conns.borrow(), &claimed, resets);
    let open = net.open_handles();
    if !open.is_empty() {
        report
            .failures
            .push(format!("handles left open in the network: {open:?}"));
    }
    if !registry.is_empty() {
        report.failures.push(format!(
            "{} sockets still registered after the run",
            registry.len()
        ));
    }
    // Every datagram answered Ok arrived once or was lost by the network.
    let lost = net.counts().datagrams_lost;
    if dgrams.sent_ok != dgrams.received + lost {
        report.failures.push(format!(
            "{} datagrams sent, {} received, {lost} lost by the network",
            dgrams.sent_ok, dgrams.received
        ));
    }
    report.datagrams = dgrams.received;
    report.datagrams_lost = lost;
    let counts = net.counts();
    let (ops, resets, refused) = (counts.operations, counts.resets, counts.refused_connects);
    report.ops = ops;
    report.resets = resets;
    report.refused = refused;
    report.trace = net.trace_hash();
    report.virtual_secs = start.elapsed().as_secs_f64();
    report
}

async fn client(
    index: usize,
    rng: &mut Rng,
    net: SimNetwork,
    stack: Stack,
    registry: Registry,
    addr: sockactor::messages::Address,
    phase: Rc<RefCell<String>>,
) -> ClientRun {
    let set = |what: String| *phase.borrow_mut() = what;
    set("connecting".into());
    tokio::time::sleep(rng.ms(50)).await;
    let drain_timeout = rng
        .chance(50)
        .then(|| rng.ms(500) + Duration::from_millis(1));
    let limits = PeerLimits {
        send_timeout: rng
            .chance(30)
            .then(|| rng.ms(1000) + Duration::from_millis(50)),
        ..PeerLimits::default()
    };
    let high = if rng.chance(30) {
        1024 << rng.below(6)
    } else {
        sockactor::QueueConfig::default().high_watermark
    };
    let config = SocketConfig {
        drain_timeout,
        limits,
        queue: sockactor::QueueConfig {
            high_watermark: high,
            low_watermark: high / 2,
            ..sockactor::QueueConfig::default()
        },
        ..SocketConfig::default()
    };
    let log = Rc::new(RefCell::new(ClientLog::default()));
    let events = ClientEvents(log.clone()).start();
    let mut run = ClientRun {
        index,
        handle: None,
        answers: Vec::new(),
        ending: Ending::Graceful,
        closed_at: None,
        drain_timeout,
        closing_at: None,
        stack,
    };
    let socket = match Socket::builder()
        .functions(functions(&net, stack, false))
        .config(config)
        .registry(&registry)
        .subscriber(events.recipient())
        .connect(addr)
        .await
    {
        Ok(socket) => socket,
        // Refused (a full accept queue): nothing to check but the handle's close.
        Err(_) => return run,
    };
    run.handle = socket.send(GetInfo).await.ok().map(|i| i.handle);
    set(format!("writing on {:?}", run.handle));
    let writes = 1 + rng.below(40) as usize;
    let mut pending = Vec::new();
    let mut offset = 0usize;
    for _ in 0..writes {
        let len = match rng.below(10) {
            0 => 0,
            1..=6 => rng.below(256) as usize,
            _ => rng.below(8192) as usize,
        };
        let data: Vec<u8> = (offset..offset + len).map(|o| byte(index, o)).collect();
        offset += len;
        pending.push((offset - len, len, socket.send(Write::new(data))));
        if rng.chance(20) {
            tokio::time::sleep(rng.ms(20)).await;
        }
    }
    run.ending = match rng.below(10) {
        0 => Ending::Abort,
        1 => Ending::Drop,
        _ => Ending::Graceful,
    };
    tokio::time::sleep(rng.ms(30)).await;
    run.closing_at = Some(Instant::now());
    match run.ending {
        Ending::Graceful => socket.do_send(Close::Graceful),
        Ending::Abort => socket.do_send(Close::Abort),
        Ending::Drop => {}
    }
    drop(socket);
    for (i, (start, len, answer)) in pending.into_iter().enumerate() {
        set(format!(
            "awaiting the answer to write {i} ({len} bytes) on {:?} after {:?}",
            run.handle, run.ending
        ));
        let answer = match answer.await {
            Ok(Ok(written)) if written.len == len => Ok(Ok(len)),
            Ok(Ok(written)) => Err(format!("answered Ok with len {} for {len}", written.len)),
            Ok(Err(e)) => Ok(Err(e)),
            Err(e) => Err(format!("mailbox error: {e}")),
        };
        run.answers.push((start, len, answer));
    }
    set("awaiting the close".into());
    // The close's end, for the drain deadline.
    for _ in 0..100 {
        if log.borrow().closed_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.closed_at = log.borrow().closed_at;
    run
}

fn check(
    report: &mut SimReport,
    runs: &[ClientRun],
    conns: &BTreeMap<SocketId, Conn>,
    net: &SimNetwork,
) -> Vec<sockactor::messages::Handle> {
    let mut claimed = Vec::new();
    let by_handle: BTreeMap<_, _> = conns
        .values()
        .filter_map(|c| c.handle.map(|h| (h, c)))
        .collect();
    for run in runs {
        let Some(handle) = run.handle else { continue };
        report.connected += 1;
        let who = format!(
            "client {} (handle {}{}, {:?})",
            run.index,
            handle.0,
            match run.stack {
                Stack::Plain => "",
                Stack::Deflate => ", deflate",
                Stack::Tls => ", tls",
            },
            run.ending
        );
        let mut fail = |what: String| report.failures.push(format!("{who}: {what}"));
        // Answered once each, truthfully, Ok only before the first failure.
        let mut reported = 0usize;
        // The stream the server should see a prefix of: every write not refused.
        let mut expected = Vec::new();
        let mut failed = false;
        let mut ok = 0;
        for (i, (start, len, answer)) in run.answers.iter().enumerate() {
            if !matches!(answer, Ok(Err(WriteError::QueueFull { .. }))) {
                expected.extend((*start..start + len).map(|o| byte(run.index, o)));
            }
            match answer {
                Err(e) => fail(format!("write {i}: {e}")),
                Ok(Ok(_)) if failed => fail(format!("write {i}: Ok after a failed write")),
                Ok(Ok(n)) => {
                    ok += 1;
                    reported += n;
                }
                Ok(Err(WriteError::QueueFull { .. })) => {
                    *report.errors.entry("QueueFull".into()).or_default() += 1;
                }
                Ok(Err(WriteError::Lost { .. })) => fail(format!("write {i}: Lost")),
                Ok(Err(e)) => {
                    let kind = format!("{e:?}");
                    let kind = kind.split([' ', '{', '(']).next().unwrap_or("").to_string();
                    *report.errors.entry(kind).or_default() += 1;
                    let sent = e.bytes_sent();
                    if sent > *len {
                        fail(format!("write {i}: {sent} bytes sent of {len}"));
                    }
                    if failed && sent > 0 {
                        fail(format!("write {i}: {sent} bytes sent after a failure"));
                    }
                    failed = true;
                    reported += sent;
                }
            }
        }
        report.writes += run.answers.len();
        report.ok_writes += ok;
        // The server's view, through the network's pairing.
        let Some(server) = net.peer_of(handle) else {
            fail("no peer in the network".into());
            continue;
        };
        claimed.push(server);
        let conn = by_handle.get(&server);
        let received: &[u8] = conn.map_or(&[], |c| &c.received);
        if received.len() > expected.len() {
            fail(format!(
                "the server read {} bytes of a {}-byte stream",
                received.len(),
                expected.len()
            ));
            continue;
        }
        if let Some(at) = received.iter().zip(&expected).position(|(a, b)| a != b) {
            fail(format!("the server read a wrong byte at offset {at}"));
            continue;
        }
        let server_aborted = conn.is_some_and(|c| c.aborted);
        let read_to_end = conn.is_some_and(|c| c.eof || c.read_failed);
        let clean_end = conn.is_some_and(|c| c.eof && !c.read_failed);
        // A layer's outbox, like a kernel's send buffer, is lost to a reset: a reset
        // layered connection must read no more than reported, but may read less.
        let layered_reset = run.stack.layered() && conn.is_some_and(|c| c.read_failed);
        if received.len() > reported {
            fail(format!(
                "the server read {} bytes, the answers report {reported}",
                received.len()
            ));
        } else if !server_aborted && read_to_end && !layered_reset && received.len() != reported {
            fail(format!(
                "the server read {} bytes to the end ({}), the answers report {reported}: {:?}",
                received.len(),
                if clean_end { "EOF" } else { "reset" },
                run.answers
                    .iter()
                    .map(|(_, len, a)| match a {
                        Ok(Ok(n)) => format!("ok {n}"),
                        Ok(Err(e)) => format!("{len}: {e}"),
                        Err(e) => e.clone(),
                    })
                    .collect::<Vec<_>>()
            ));
        }
        if !server_aborted
            && !read_to_end
            && conn.is_some()
            && run.ending == Ending::Graceful
            && !failed
        {
            fail(
                "a graceful close whose writes all went out never reached the server's EOF".into(),
            );
        }
        report.bytes_checked += received.len();
        if run.stack == Stack::Tls {
            report.tls_connections += 1;
            report.tls_bytes += received.len();
        }
        // The drain deadline.
        if let (Ending::Graceful, Some(limit), Some(closing)) =
            (run.ending, run.drain_timeout, run.closing_at)
        {
            match run.closed_at {
                Some(closed) if closed <= closing + limit + Duration::from_millis(50) => {}
                Some(closed) => fail(format!(
                    "closed {:?} after its graceful close, drain timeout {limit:?}",
                    closed - closing
                )),
                None => fail("a graceful close with a drain timeout never closed".into()),
            }
        }
    }
    claimed
}

/// A record of a reconnecting client: a header (`0xA5`, client, number, payload length)
/// and its payload.
fn record(client: u16, seq: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(11 + len);
    out.push(0xA5);
    out.extend_from_slice(&client.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend((0..len).map(|i| byte(usize::from(client), seq as usize * 7919 + i)));
    out
}

/// What a reconnecting client did.
struct RecordRun {
    client: u16,
    /// Each record's number, length (whole record) and answer.
    answers: Vec<(u32, usize, Answer)>,
    connections: usize,
    stack: Stack,
}

async fn reconnecting_client(
    client: u16,
    rng: &mut Rng,
    net: SimNetwork,
    stack: Stack,
    _registry: Registry,
    addr: sockactor::messages::Address,
) -> RecordRun {
    tokio::time::sleep(rng.ms(50)).await;
    let connections = Rc::new(RefCell::new(0usize));
    let counter = ClientCounter(connections.clone()).start();
    let policy = if rng.chance(50) {
        sockactor::UnsentWrites::Retain
    } else {
        sockactor::UnsentWrites::Fail
    };
    let handle = sockactor::ReconnectingClient::builder(addr)
        .functions(functions(&net, stack, false))
        .subscriber(counter.recipient())
        .backoff(Duration::from_millis(5), Duration::from_millis(200))
        .seed(rng.next())
        .max_attempts(Some(30))
        .unsent_writes(policy)
        .start();
    let mut pending = Vec::new();
    let writes = 1 + rng.below(60) as u32;
    for seq in 0..writes {
        let len = rng.below(2000) as usize;
        let data = record(client, seq, len);
        pending.push((seq, data.len(), handle.send(Write::new(data))));
        if rng.chance(30) {
            tokio::time::sleep(rng.ms(40)).await;
        }
    }
    let mut answers = Vec::new();
    for (seq, len, answer) in pending {
        let answer = match answer.await {
            Ok(Ok(written)) if written.len == len => Ok(Ok(len)),
            Ok(Ok(written)) => Err(format!("answered Ok with len {} for {len}", written.len)),
            Ok(Err(e)) => Ok(Err(e)),
            Err(e) => Err(format!("mailbox error: {e}")),
        };
        answers.push((seq, len, answer));
    }
    handle.do_send(Close::Graceful);
    drop(handle);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let connections = *connections.borrow();
    RecordRun {
        client,
        answers,
        connections,
        stack,
    }
}

/// Counts a reconnecting client's connections.
struct ClientCounter(Rc<RefCell<usize>>);

impl Actor for ClientCounter {
    type Context = Context<Self>;
}

impl Handler<sockactor::messages::ClientEvent> for ClientCounter {
    type Result = ();
    fn handle(&mut self, msg: sockactor::messages::ClientEvent, _: &mut Context<Self>) {
        if let sockactor::messages::ClientEvent::Connected { .. } = msg {
            *self.0.borrow_mut() += 1;
        }
    }
}

/// The records of the connections no plain client claimed: every record whole and right,
/// numbers rising on each connection, none twice, every `Ok` record there (unless its
/// server aborted a connection), none answered with nothing sent.
fn check_records(
    report: &mut SimReport,
    runs: &[RecordRun],
    conns: &BTreeMap<SocketId, Conn>,
    claimed: &[sockactor::messages::Handle],
    resets: u64,
) {
    // (client, seq) -> how many times seen whole.
    let mut seen: BTreeMap<(u16, u32), usize> = BTreeMap::new();
    let mut any_abort = false;
    for conn in conns.values() {
        if conn.handle.is_some_and(|h| claimed.contains(&h)) {
            continue;
        }
        any_abort |= conn.aborted;
        let mut at = 0;
        let mut last: Option<(u16, u32)> = None;
        let data = &conn.received;
        while at < data.len() {
            if data[at] != 0xA5 {
                report
                    .failures
                    .push(format!("a record stream broken at byte {at}"));
                break;
            }
            if data.len() - at < 11 {
                break; // a cut header
            }
            let client = u16::from_le_bytes([data[at + 1], data[at + 2]]);
            let seq = u32::from_le_bytes([data[at + 3], data[at + 4], data[at + 5], data[at + 6]]);
            let len = u32::from_le_bytes([data[at + 7], data[at + 8], data[at + 9], data[at + 10]])
                as usize;
            let whole = record(client, seq, len);
            let have = &data[at..data.len().min(at + whole.len())];
            if have != &whole[..have.len()] {
                report
                    .failures
                    .push(format!("record {client}/{seq} is not what was written"));
                break;
            }
            if have.len() < whole.len() {
                break; // a cut record, at the end of the connection
            }
            if let Some((c, s)) = last {
                if c != client || s >= seq {
                    report.failures.push(format!(
                        "record {client}/{seq} after {c}/{s} on one connection"
                    ));
                }
            }
            last = Some((client, seq));
            if std::env::var_os("SIM_DEBUG").is_some() {
                eprintln!(
                    "conn {:?}: record {client}/{seq} whole (eof {}, reset {}, aborted {}, {} bytes)",
                    conn.handle, conn.eof, conn.read_failed, conn.aborted, data.len()
                );
            }
            *seen.entry((client, seq)).or_default() += 1;
            at += whole.len();
        }
    }
    for ((client, seq), n) in &seen {
        if *n > 1 {
            report
                .failures
                .push(format!("record {client}/{seq} arrived {n} times"));
        }
    }
    for run in runs {
        report.writes += run.answers.len();
        for (seq, len, answer) in &run.answers {
            let arrived = seen.contains_key(&(run.client, *seq));
            match answer {
                Err(e) => report
                    .failures
                    .push(format!("client {} record {seq}: {e}", run.client)),
                Ok(Ok(_)) => {
                    report.ok_writes += 1;
                    report.bytes_checked += len;
                    // A reset loses a layer's outbox (bytes answered Ok), as it loses a
                    // kernel's send buffer.
                    let may_lose = any_abort || (run.stack.layered() && resets > 0);
                    if !arrived && !may_lose {
                        report.failures.push(format!(
                            "client {} record {seq}: answered Ok, never arrived whole",
                            run.client
                        ));
                    }
                }
                Ok(Err(WriteError::Lost { .. })) => report
                    .failures
                    .push(format!("client {} record {seq}: Lost", run.client)),
                Ok(Err(e)) => {
                    if arrived {
                        report.failures.push(format!(
                            "client {} record {seq}: arrived whole but answered {e}",
                            run.client
                        ));
                    }
                }
            }
        }
        report.connected += run.connections;
    }
}

/// What the datagram pairs did, summed.
#[derive(Default)]
struct DatagramTally {
    sent_ok: u64,
    received: u64,
}

impl DatagramTally {
    fn add(&mut self, other: DatagramTally) {
        self.sent_ok += other.sent_ok;
        self.received += other.received;
    }
}

/// A datagram: `0x5A`, pair, direction, number, payload length, payload.
fn datagram_bytes(pair: u16, dir: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + len);
    out.push(0x5A);
    out.extend_from_slice(&pair.to_le_bytes());
    out.push(dir);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend((0..len).map(|i| byte(usize::from(pair) * 2 + usize::from(dir), seq as usize + i)));
    out
}

/// Datagrams a socket received: (bytes, sender).
type Inbox = Rc<RefCell<Vec<(bytes::Bytes, Option<sockactor::messages::Address>, bool)>>>;

struct DatagramInbox(Inbox);

impl Actor for DatagramInbox {
    type Context = Context<Self>;
}

impl Handler<sockactor::messages::DatagramEvent> for DatagramInbox {
    type Result = ();
    fn handle(&mut self, msg: sockactor::messages::DatagramEvent, _: &mut Context<Self>) {
        if let sockactor::messages::DatagramEventKind::Received {
            bytes,
            from,
            truncated,
        } = msg.kind
        {
            self.0.borrow_mut().push((bytes, from, truncated));
        }
    }
}

/// Two datagram sockets trading numbered datagrams: each send answered once, every
/// datagram received whole, from its sender, once, and only if it was answered `Ok`.
async fn datagram_pair(pair: u16, rng: &mut Rng, net: SimNetwork) -> Result<DatagramTally, String> {
    use sockactor::messages::{Address, SendDatagram};
    let addrs: [Address; 2] = [
        SocketAddr::from(([10, 0, 1, pair as u8], 5000)).into(),
        SocketAddr::from(([10, 0, 1, pair as u8], 5001)).into(),
    ];
    let inboxes: [Inbox; 2] = [Rc::default(), Rc::default()];
    let mut sockets = Vec::new();
    for side in 0..2 {
        let (socket, _) = sockactor::DatagramSocket::builder()
            .functions(net.functions())
            .subscriber(DatagramInbox(inboxes[side].clone()).start().recipient())
            .bind(addrs[side].clone())
            .await
            .map_err(|e| format!("datagram pair {pair}: bind: {e}"))?;
        sockets.push(socket);
    }
    let mut pending = Vec::new();
    let count = rng.below(100) as u32;
    for seq in 0..count {
        let dir = (rng.below(2)) as u8;
        let data = datagram_bytes(pair, dir, seq, rng.below(1200) as usize);
        let len = data.len();
        let to = addrs[1 - usize::from(dir)].clone();
        pending.push((
            dir,
            seq,
            len,
            sockets[usize::from(dir)].send(SendDatagram::new(data).to(to)),
        ));
        if rng.chance(20) {
            tokio::time::sleep(rng.ms(10)).await;
        }
    }
    let mut ok = BTreeMap::new();
    for (dir, seq, len, answer) in pending {
        match answer.await {
            Ok(Ok(sent)) if sent.len == len => {
                ok.insert((dir, seq), len);
            }
            Ok(Ok(sent)) => {
                return Err(format!(
                    "datagram pair {pair}: {seq} answered Ok with {} of {len} bytes",
                    sent.len
                ))
            }
            Ok(Err(_)) => {}
            Err(e) => return Err(format!("datagram pair {pair}: {seq}: mailbox error {e}")),
        }
    }
    // Every datagram lands or is dropped within its latency.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut seen = BTreeMap::new();
    let mut received = 0;
    for (side, inbox) in inboxes.iter().enumerate() {
        for (bytes, from, truncated) in inbox.borrow().iter() {
            if *truncated || bytes.len() < 8 || bytes[0] != 0x5A {
                return Err(format!("datagram pair {pair}: a broken datagram"));
            }
            let dir = bytes[3];
            let seq = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            let expected = datagram_bytes(pair, dir, seq, bytes.len() - 8);
            if bytes[..] != expected[..] || usize::from(dir) == side {
                return Err(format!(
                    "datagram pair {pair}: datagram {seq} is not what was sent"
                ));
            }
            if from.as_ref() != Some(&addrs[usize::from(dir)]) {
                return Err(format!(
                    "datagram pair {pair}: datagram {seq} from {from:?}"
                ));
            }
            if ok.get(&(dir, seq)) != Some(&bytes.len()) {
                return Err(format!(
                    "datagram pair {pair}: datagram {seq} arrived unsent"
                ));
            }
            if seen.insert((dir, seq), ()).is_some() {
                return Err(format!(
                    "datagram pair {pair}: datagram {seq} arrived twice"
                ));
            }
            received += 1;
        }
    }
    for socket in &sockets {
        socket.do_send(Close::Graceful);
    }
    drop(sockets);
    Ok(DatagramTally {
        sent_ok: ok.len() as u64,
        received,
    })
}
