//! The soak and chaos run: many concurrent loopback connections stream checksummed,
//! sequenced records from deferred sockets into a sockactor `Listener` that verifies every
//! byte; at the end every write must have been answered exactly once, the receiving side
//! must hold exactly the bytes the writers were told went out, and descriptors and
//! registries must be back where they started.
//!
//! ```text
//! cargo run --release -p sockactor-tools --bin soak                                   # 2,000 connections, 30 s
//! cargo run --release -p sockactor-tools --bin soak -- --connections 200 --seconds 5 # the CI variant
//! cargo run --release -p sockactor-tools --bin soak -- --faults                      # through the fault injector
//! cargo run --release -p sockactor-tools --bin soak -- --faults --resets             # ... with resets too
//! cargo run --release -p sockactor-tools --bin soak -- --connections 10000 --client-process
//! cargo run --release -p sockactor-tools --bin soak -- --cycles 10000                # open/close leak check
//! ```
//!
//! Options: `--connections N` (default 2,000: concurrent connections; with `--cycles`, how
//! many are open at once, default 100), `--seconds S` (default 30: how long the clients
//! write), `--seed X` (default 1), `--faults` (the clients' transport is a `FaultInjector`
//! with partial accepts, would-blocks and delays; the server's injects short reads,
//! read would-blocks and read delays), `--resets` (the clients' injector also resets
//! connections, with probability `--reset-p`, default 0.0005 per `sendv`), `--cycles N`
//! (open, write a few records and close N connections in all, `--connections` at a time),
//! `--client-process` (run the clients in a child process, so that each process needs
//! only one descriptor per connection).
//!
//! The record format: a 16-byte header (magic, connection id, sequence number, payload
//! length, little-endian `u32`s), the payload (bytes drawn from a generator seeded by
//! the run's seed, the connection and the sequence number) and an 8-byte FNV-1a checksum
//! of the payload. The server regenerates each payload and compares it byte by byte,
//! checks the checksum, the sequence (no gap, no repeat) and the connection id, and
//! counts the bytes of each connection. Each client connection writes bursts of 1 to 8
//! records, each burst either as `Write` messages or through a `Writer`
//! (`write_answered`), and awaits the answers of a burst in order before the next; a
//! connection switches between the two only between bursts, so its records keep their
//! order. A write counts as answered when its answer arrives; the client checks that the
//! answers of each connection are consistent (every `Ok` before the first error; the
//! first error may carry part of its write, later ones none) and that the socket's own
//! counters agree. The server's per-connection byte counts must match what the writers
//! were told went out, connection by connection (compared as a sum of per-connection
//! digests, so a child process can report it in one line).
//!
//! Prints a summary and `PASS` or `FAIL`; the exit status is 1 on `FAIL`, 2 on bad
//! arguments or a descriptor limit that cannot be raised far enough.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Command, ExitCode, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use sockactor::filters::{FaultInjector, Faults};
use sockactor::messages::{
    Address, Close, GetStats, GetWriter, ListenerEvent, SocketEvent, SocketEventKind, SocketId,
    Write, Written,
};
use sockactor::{Listener, Registry, Socket, SocketFunctions, WriteError, Writer};
use tokio::sync::Semaphore;

/// First word of every record.
const MAGIC: u32 = 0x534F_414B;
/// Header bytes: magic, connection, sequence, payload length.
const HEADER: usize = 16;
/// Trailer bytes: the payload's FNV-1a checksum.
const TRAILER: usize = 8;
/// Largest payload a record carries.
const MAX_PAYLOAD: usize = 64 * 1024;
/// Most records in one burst.
const MAX_BURST: u64 = 8;
/// Connects under way at once.
const CONNECTS_AT_ONCE: usize = 256;
/// Bursts each connection writes in `--cycles` mode (at most).
const CYCLE_BURSTS: u64 = 3;
/// How long the answers of the last bursts, and the server's end of every connection,
/// may take after the clients stop writing.
const GRACE: Duration = Duration::from_secs(60);
/// Descriptors a process needs besides the connections' (std streams, the runtimes'
/// reactors, the listener, slack).
const FD_SLACK: u64 = 256;
/// First word of the line a client process reports on.
const CLIENT_LINE: &str = "SOAK-CLIENT";

// ───────────────────────────── options ─────────────────────────────

#[derive(Clone, Debug)]
struct Options {
    connections: usize,
    seconds: u64,
    seed: u64,
    faults: bool,
    resets: bool,
    reset_p: f64,
    cycles: Option<usize>,
    client_process: bool,
    /// Set in the child: run only the clients, against this address.
    client_of: Option<SocketAddr>,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut o = Options {
            connections: 0,
            seconds: 30,
            seed: 1,
            faults: false,
            resets: false,
            reset_p: 0.0005,
            cycles: None,
            client_process: false,
            client_of: None,
        };
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--connections" => o.connections = number(&value("--connections")?)?,
                "--seconds" => o.seconds = number(&value("--seconds")?)?,
                "--seed" => o.seed = number(&value("--seed")?)?,
                "--faults" => o.faults = true,
                "--resets" => o.resets = true,
                "--reset-p" => {
                    let v = value("--reset-p")?;
                    o.reset_p = v.parse().map_err(|_| format!("bad probability {v}"))?;
                }
                "--cycles" => o.cycles = Some(number(&value("--cycles")?)?),
                "--client-process" => o.client_process = true,
                "--client-of" => {
                    let v = value("--client-of")?;
                    o.client_of = Some(v.parse().map_err(|_| format!("bad address {v}"))?);
                }
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        if o.connections == 0 {
            o.connections = if o.cycles.is_some() { 100 } else { 2_000 };
        }
        Ok(o)
    }

    /// Connections made in all.
    fn total(&self) -> usize {
        self.cycles.unwrap_or(self.connections)
    }

    /// Connections open at once.
    fn at_once(&self) -> usize {
        self.connections.min(self.total())
    }

    /// The arguments a client process gets.
    fn child_args(&self, addr: SocketAddr) -> Vec<String> {
        let mut args = vec![
            "--connections".into(),
            self.connections.to_string(),
            "--seconds".into(),
            self.seconds.to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--reset-p".into(),
            self.reset_p.to_string(),
            "--client-of".into(),
            addr.to_string(),
        ];
        if let Some(n) = self.cycles {
            args.extend(["--cycles".into(), n.to_string()]);
        }
        if self.faults {
            args.push("--faults".into());
        }
        if self.resets {
            args.push("--resets".into());
        }
        args
    }
}

fn number<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.replace('_', "")
        .parse()
        .map_err(|_| format!("bad number {v}"))
}

// ───────────────────────────── records ─────────────────────────────

/// SplitMix64: the payload generator and every random choice of the run.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `1..=max`.
    fn one_to(&mut self, max: u64) -> u64 {
        1 + self.next_u64() % max.max(1)
    }
}

/// The seed of one record's payload.
fn payload_seed(run: u64, conn: u32, seq: u32) -> u64 {
    run ^ (u64::from(conn) << 32 | u64::from(seq)).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// A payload length: mostly small, sometimes a few KiB, now and then up to 64 KiB.
fn payload_len(rng: &mut Rng) -> usize {
    let max = match rng.next_u64() % 100 {
        0..=69 => 256,
        70..=94 => 4096,
        _ => MAX_PAYLOAD as u64,
    };
    rng.one_to(max) as usize
}

/// FNV-1a, 64 bits.
#[derive(Clone, Copy, Debug)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xCBF2_9CE4_8422_2325)
    }

    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
    }
}

/// A payload's bytes, eight at a time from its generator.
#[derive(Debug)]
struct PayloadBytes {
    rng: Rng,
    word: [u8; 8],
    at: usize,
}

impl PayloadBytes {
    fn new(seed: u64) -> PayloadBytes {
        PayloadBytes {
            rng: Rng::new(seed),
            word: [0; 8],
            at: 8,
        }
    }

    fn next_byte(&mut self) -> u8 {
        if self.at == 8 {
            self.word = self.rng.next_u64().to_le_bytes();
            self.at = 0;
        }
        self.at += 1;
        self.word[self.at - 1]
    }
}

/// One record as three segments: header, payload, checksum.
fn record(run: u64, conn: u32, seq: u32, len: usize) -> Vec<Bytes> {
    let mut gen = PayloadBytes::new(payload_seed(run, conn, seq));
    let mut fnv = Fnv::new();
    let payload: Vec<u8> = (0..len)
        .map(|_| {
            let b = gen.next_byte();
            fnv.byte(b);
            b
        })
        .collect();
    let mut header = Vec::with_capacity(HEADER);
    for word in [MAGIC, conn, seq, len as u32] {
        header.extend_from_slice(&word.to_le_bytes());
    }
    vec![
        Bytes::from(header),
        Bytes::from(payload),
        Bytes::copy_from_slice(&fnv.0.to_le_bytes()),
    ]
}

/// Where the server's parser is within the record stream of one connection.
#[derive(Debug)]
enum Parse {
    Header(Vec<u8>),
    Payload {
        left: usize,
        gen: PayloadBytes,
        fnv: Fnv,
    },
    Trailer {
        fnv: Fnv,
        got: Vec<u8>,
    },
}

/// Why a connection's stream was wrong (the first fault only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Corruption {
    Magic,
    Connection,
    Sequence,
    Length,
    PayloadByte,
    Checksum,
}

/// The server's view of one connection's stream.
#[derive(Debug)]
struct StreamCheck {
    run: u64,
    conn: Option<u32>,
    next_seq: u32,
    bytes: u64,
    records: u64,
    parse: Parse,
    corrupt: Option<Corruption>,
}

impl StreamCheck {
    fn new(run: u64) -> StreamCheck {
        StreamCheck {
            run,
            conn: None,
            next_seq: 0,
            bytes: 0,
            records: 0,
            parse: Parse::Header(Vec::with_capacity(HEADER)),
            corrupt: None,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        for &b in chunk {
            if self.corrupt.is_some() {
                return;
            }
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        match &mut self.parse {
            Parse::Header(h) => {
                h.push(b);
                if h.len() == HEADER {
                    let h = std::mem::take(h);
                    self.header(&h);
                }
            }
            Parse::Payload { left, gen, fnv } => {
                if gen.next_byte() != b {
                    self.corrupt = Some(Corruption::PayloadByte);
                    return;
                }
                fnv.byte(b);
                *left -= 1;
                if *left == 0 {
                    let fnv = *fnv;
                    self.parse = Parse::Trailer {
                        fnv,
                        got: Vec::with_capacity(TRAILER),
                    };
                }
            }
            Parse::Trailer { fnv, got } => {
                got.push(b);
                if got.len() == TRAILER {
                    if got[..] != fnv.0.to_le_bytes() {
                        self.corrupt = Some(Corruption::Checksum);
                        return;
                    }
                    self.records += 1;
                    self.next_seq = self.next_seq.wrapping_add(1);
                    self.parse = Parse::Header(Vec::with_capacity(HEADER));
                }
            }
        }
    }

    fn header(&mut self, h: &[u8]) {
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let (magic, conn, seq, len) = (word(0), word(4), word(8), word(12) as usize);
        let fault = if magic != MAGIC {
            Some(Corruption::Magic)
        } else if self.conn.is_some_and(|c| c != conn) {
            Some(Corruption::Connection)
        } else if seq != self.next_seq {
            Some(Corruption::Sequence)
        } else if len == 0 || len > MAX_PAYLOAD {
            Some(Corruption::Length)
        } else {
            None
        };
        if fault.is_some() {
            self.corrupt = fault;
            return;
        }
        self.conn = Some(conn);
        self.parse = Parse::Payload {
            left: len,
            gen: PayloadBytes::new(payload_seed(self.run, conn, seq)),
            fnv: Fnv::new(),
        };
    }

    /// Whether the stream stopped inside a record.
    fn mid_record(&self) -> bool {
        !matches!(&self.parse, Parse::Header(h) if h.is_empty())
    }
}

/// One connection's contribution to the digest both sides compute: its id and its byte
/// count, mixed, summed over connections. The server learns the id from the first
/// record's header, so a connection cut before a whole header got across contributes its
/// byte count alone (and one that got no byte across, nothing), on both sides.
fn digest_of(conn: Option<u32>, bytes: u64) -> u64 {
    if bytes == 0 {
        return 0;
    }
    let key = match conn {
        Some(conn) if bytes >= HEADER as u64 => u64::from(conn) << 32 ^ bytes,
        _ => bytes ^ 1 << 63,
    };
    Rng::new(key).next_u64()
}

// ───────────────────────────── measurements ─────────────────────────────

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Hands the heap's free memory back to the system, so that RSS after the run shows
/// what is still in use rather than what the allocator keeps; answers whether it could.
fn trim_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory of glibc's own heap.
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Raises the soft descriptor limit to `want` if the hard limit allows; answers the
/// limit in force, or an explanation.
fn raise_nofile(want: u64) -> Result<u64, String> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err("getrlimit(RLIMIT_NOFILE) failed".into());
    }
    let (soft, hard): (u64, u64) = (r.rlim_cur, r.rlim_max);
    if soft >= want {
        return Ok(soft);
    }
    if hard < want {
        return Err(format!(
            "this run needs {want} descriptors but the hard limit (RLIMIT_NOFILE) is {hard}: \
             raise it (ulimit -Hn, limits.conf), lower --connections, or use --client-process \
             to split client and server over two processes"
        ));
    }
    r.rlim_cur = want as libc::rlim_t;
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(format!(
            "setrlimit(RLIMIT_NOFILE, {want}) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(want)
}

// ───────────────────────────── the server ─────────────────────────────

/// What the server saw, over all connections.
#[derive(Debug, Default)]
struct ServerTotals {
    accepted: u64,
    closed: u64,
    bytes: u64,
    records: u64,
    digest: u64,
    /// Connections whose stream ended inside a record.
    mid_record: u64,
    /// Connections whose stream was wrong, by the first fault found.
    corrupt: BTreeMap<Corruption, u64>,
    /// Read errors and accept errors, by kind.
    errors: BTreeMap<String, u64>,
}

/// Subscribed to the listener and to every socket it accepts: checks each stream,
/// closes a socket at the peer's EOF and books the connection when it has closed.
struct Server {
    run: u64,
    sockets: HashMap<SocketId, (Addr<Socket>, StreamCheck)>,
    totals: Arc<Mutex<ServerTotals>>,
}

impl Actor for Server {
    type Context = Context<Self>;
}

impl Server {
    fn book(&self, f: impl FnOnce(&mut ServerTotals)) {
        if let Ok(mut t) = self.totals.lock() {
            f(&mut t);
        }
    }
}

impl Handler<ListenerEvent> for Server {
    type Result = ();
    fn handle(&mut self, event: ListenerEvent, _: &mut Context<Self>) {
        match event {
            ListenerEvent::Accepted { socket, id, .. } => {
                self.sockets
                    .insert(id, (socket, StreamCheck::new(self.run)));
                self.book(|t| t.accepted += 1);
            }
            ListenerEvent::AcceptFailed { error } => {
                let kind = format!("accept: {error}");
                self.book(|t| *t.errors.entry(kind).or_default() += 1);
            }
            _ => {}
        }
    }
}

impl Handler<SocketEvent> for Server {
    type Result = ();
    fn handle(&mut self, event: SocketEvent, _: &mut Context<Self>) {
        let Some((socket, check)) = self.sockets.get_mut(&event.socket) else {
            return;
        };
        match event.kind {
            SocketEventKind::Received(bytes) => check.feed(&bytes),
            SocketEventKind::Eof => socket.do_send(Close::Graceful),
            SocketEventKind::ReadFailed(error) => {
                let kind = format!("server read: {error}");
                self.book(|t| *t.errors.entry(kind).or_default() += 1);
            }
            SocketEventKind::Closed { .. } => {
                if let Some((_, check)) = self.sockets.remove(&event.socket) {
                    self.book(|t| {
                        t.closed += 1;
                        t.bytes += check.bytes;
                        t.records += check.records;
                        t.digest = t.digest.wrapping_add(digest_of(check.conn, check.bytes));
                        match check.corrupt {
                            Some(c) => *t.corrupt.entry(c).or_default() += 1,
                            None if check.mid_record() => t.mid_record += 1,
                            None => {}
                        }
                    });
                }
            }
            other => {
                let kind = format!("server event: {other:?}");
                self.book(|t| *t.errors.entry(kind).or_default() += 1);
            }
        }
    }
}

/// The server side, on its own arbiter: the listener, its sockets' registry, and the
/// totals the server actor keeps.
struct ServerSide {
    local: SocketAddr,
    listener: Addr<Listener>,
    registry: Registry,
    totals: Arc<Mutex<ServerTotals>>,
    _arbiter: Arbiter,
}

/// The server's transport: the system one, or read faults over it.
fn server_functions(opts: &Options) -> SocketFunctions {
    if !opts.faults {
        return SocketFunctions::system();
    }
    let faults = Faults::default()
        .short_reads(0.3)
        .read_would_block(0.05, Duration::from_millis(2))
        .read_delay(0.05, Duration::from_millis(1));
    FaultInjector::new(opts.seed ^ 0x5E5E, faults).wrap(SocketFunctions::system())
}

type Bound = Result<(Addr<Listener>, Address), sockactor::SocketError>;

/// On the server arbiter: the server actor and its listener.
async fn bind_server(
    opts: Options,
    registry: Registry,
    totals: Arc<Mutex<ServerTotals>>,
    tx: tokio::sync::oneshot::Sender<Bound>,
) {
    let server = Server {
        run: opts.seed,
        sockets: HashMap::new(),
        totals,
    }
    .start();
    let for_sockets = server.clone();
    let bound = Listener::builder()
        .functions(server_functions(&opts))
        .backlog(4096)
        .subscriber(server.recipient())
        .socket_builder(move |_| {
            Socket::builder()
                .subscriber(for_sockets.clone().recipient())
                .registry(&registry)
        })
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await;
    let _ = tx.send(bound);
}

async fn start_server(opts: &Options) -> Result<ServerSide, String> {
    let arbiter = Arbiter::new();
    let registry = Registry::new();
    let totals = Arc::new(Mutex::new(ServerTotals::default()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (opts2, reg2, totals2) = (opts.clone(), registry.clone(), totals.clone());
    // `spawn_fn` takes a `Send` closure; the future it spawns there need not be.
    let started = arbiter.spawn_fn(move || {
        actix::spawn(bind_server(opts2, reg2, totals2, tx));
    });
    if !started {
        return Err("the server arbiter is not running".into());
    }
    let (listener, local) = rx
        .await
        .map_err(|_| "the server arbiter dropped the bind".to_string())?
        .map_err(|e| format!("bind: {e}"))?;
    let Address::Inet(local) = local else {
        return Err(format!("listening on {local:?}, not an IP address"));
    };
    Ok(ServerSide {
        local,
        listener,
        registry,
        totals,
        _arbiter: arbiter,
    })
}

// ───────────────────────────── the clients ─────────────────────────────

/// What the clients saw, over all connections; also the line a client process prints.
#[derive(Debug, Default, Clone)]
struct ClientTotals {
    connected: u64,
    reset: u64,
    writes: u64,
    answered: u64,
    ok: u64,
    bytes: u64,
    digest: u64,
    /// Connections whose acknowledged bytes end inside a record.
    mid_record: u64,
    /// Connections whose answers were not consistent (an `Ok` after an error, a second
    /// partial error, more bytes than the write), or whose socket's counters disagreed.
    inconsistent: u64,
    /// Writes still unanswered when the grace period ended.
    unanswered: u64,
    errors: BTreeMap<String, u64>,
    peak_rss_kb: u64,
    rss_after_kb: u64,
    rss_trimmed_kb: u64,
    fds_before: u64,
    fds_after: u64,
    registry_after: u64,
}

impl ClientTotals {
    fn add(&mut self, c: &ConnReport) {
        self.connected += u64::from(c.connected);
        self.reset += u64::from(c.reset);
        self.writes += c.writes;
        self.answered += c.answered;
        self.ok += c.ok;
        self.bytes += c.bytes;
        self.digest = self.digest.wrapping_add(digest_of(Some(c.conn), c.bytes));
        self.mid_record += u64::from(c.mid_record);
        self.inconsistent += u64::from(c.inconsistent);
        self.unanswered += c.writes - c.answered;
        for (k, n) in &c.errors {
            *self.errors.entry(k.clone()).or_default() += n;
        }
    }

    fn to_line(&self) -> String {
        let mut line = format!(
            "{CLIENT_LINE} connected={} reset={} writes={} answered={} ok={} bytes={} digest={} \
             mid_record={} inconsistent={} unanswered={} peak_rss_kb={} rss_after_kb={} \
             rss_trimmed_kb={} fds_before={} \
             fds_after={} registry_after={}",
            self.connected,
            self.reset,
            self.writes,
            self.answered,
            self.ok,
            self.bytes,
            self.digest,
            self.mid_record,
            self.inconsistent,
            self.unanswered,
            self.peak_rss_kb,
            self.rss_after_kb,
            self.rss_trimmed_kb,
            self.fds_before,
            self.fds_after,
            self.registry_after
        );
        for (k, n) in &self.errors {
            line.push_str(&format!(" error:{}={n}", k.replace(' ', "_")));
        }
        line
    }

    fn from_line(line: &str) -> Option<ClientTotals> {
        let mut t = ClientTotals::default();
        for field in line.strip_prefix(CLIENT_LINE)?.split_whitespace() {
            let (key, value) = field.rsplit_once('=')?;
            if let Some(kind) = key.strip_prefix("error:") {
                t.errors.insert(kind.replace('_', " "), value.parse().ok()?);
                continue;
            }
            let v: u64 = value.parse().ok()?;
            match key {
                "connected" => t.connected = v,
                "reset" => t.reset = v,
                "writes" => t.writes = v,
                "answered" => t.answered = v,
                "ok" => t.ok = v,
                "bytes" => t.bytes = v,
                "digest" => t.digest = v,
                "mid_record" => t.mid_record = v,
                "inconsistent" => t.inconsistent = v,
                "unanswered" => t.unanswered = v,
                "peak_rss_kb" => t.peak_rss_kb = v,
                "rss_after_kb" => t.rss_after_kb = v,
                "rss_trimmed_kb" => t.rss_trimmed_kb = v,
                "fds_before" => t.fds_before = v,
                "fds_after" => t.fds_after = v,
                "registry_after" => t.registry_after = v,
                _ => return None,
            }
        }
        Some(t)
    }
}

/// One client connection's account.
#[derive(Debug, Default)]
struct ConnReport {
    conn: u32,
    connected: bool,
    reset: bool,
    writes: u64,
    answered: u64,
    ok: u64,
    bytes: u64,
    mid_record: bool,
    inconsistent: bool,
    /// An error has been answered; every later answer must be an error with no bytes.
    failed: bool,
    errors: BTreeMap<String, u64>,
}

impl ConnReport {
    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    /// Books one write's answer (`len`: the record's length). `Lost` (the socket
    /// vanished without answering) is no answer.
    fn answer(&mut self, len: usize, answer: Result<Written, WriteError>) {
        if let Err(WriteError::Lost { .. }) = answer {
            // Not an answer from the socket: the write stays unanswered.
            self.failed = true;
            self.error("lost (no answer)");
            return;
        }
        self.answered += 1;
        match answer {
            Ok(written) => {
                self.ok += 1;
                self.bytes += written.len as u64;
                if self.failed || written.len != len {
                    self.inconsistent = true;
                }
            }
            Err(e) => {
                let sent = e.bytes_sent();
                if sent > len || (self.failed && sent > 0) {
                    self.inconsistent = true;
                }
                if sent > 0 {
                    self.mid_record = true;
                }
                self.failed = true;
                self.bytes += sent as u64;
                if matches!(e, WriteError::Transport { .. }) {
                    self.reset = true;
                }
                self.error(error_kind(&e));
            }
        }
    }
}

/// A write error's kind, for the summary.
fn error_kind(e: &WriteError) -> String {
    match e {
        WriteError::QueueFull { .. } => "queue full".into(),
        WriteError::Cancelled => "cancelled".into(),
        WriteError::Closed { .. } => "closed".into(),
        WriteError::Aborted { .. } => "aborted".into(),
        WriteError::Lost { .. } => "lost".into(),
        WriteError::Transport { source, .. } => format!("transport ({source})"),
        other => format!("other ({other})"),
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Written, WriteError>>>>;

/// The clients' transport: the system one, or write faults (and resets) over it.
fn client_functions(opts: &Options) -> SocketFunctions {
    if !opts.faults && !opts.resets {
        return SocketFunctions::system();
    }
    let mut faults = Faults::default();
    if opts.faults {
        faults = faults
            .partial(0.3)
            .would_block(0.05, Duration::from_millis(2))
            .delay(0.05, Duration::from_millis(1));
    }
    if opts.resets {
        faults = faults.reset(opts.reset_p);
    }
    FaultInjector::new(opts.seed, faults)
        .max_per_call(16 * 1024)
        .wrap(SocketFunctions::system())
}

/// Everything a client connection needs, shared by all of them.
struct ClientShared {
    opts: Options,
    addr: SocketAddr,
    functions: SocketFunctions,
    registry: Registry,
    connects: Semaphore,
    /// Connections open at once (`--cycles`).
    slots: Semaphore,
    deadline: Instant,
}

/// One client connection: connect, write bursts until the deadline (or, with
/// `--cycles`, a few bursts), close gracefully.
async fn client_conn(shared: Rc<ClientShared>, conn: u32) -> ConnReport {
    let mut report = ConnReport {
        conn,
        ..ConnReport::default()
    };
    let Ok(_slot) = shared.slots.acquire().await else {
        return report;
    };
    let Some((socket, writer)) = connect(&shared, &mut report).await else {
        return report;
    };
    let mut stream = ClientStream {
        run: shared.opts.seed,
        conn,
        seq: 0,
        rng: Rng::new(shared.opts.seed ^ u64::from(conn).wrapping_mul(0x9E37_79B9)),
    };
    let cycle_bursts = stream.rng.one_to(CYCLE_BURSTS);
    let mut bursts = 0u64;
    while !report.failed {
        let done = match shared.opts.cycles {
            Some(_) => bursts == cycle_bursts,
            None => Instant::now() >= shared.deadline,
        };
        if done {
            break;
        }
        bursts += 1;
        let answers = stream.burst(&socket, &writer);
        report.writes += answers.len() as u64;
        let limit = Instant::now().max(shared.deadline) + GRACE;
        if !await_answers(answers, limit, &mut report).await {
            return report;
        }
    }
    check_stats(&socket, &mut report).await;
    socket.do_send(Close::Graceful);
    report
}

/// Connects a deferred socket (at most `CONNECTS_AT_ONCE` connects under way) and takes
/// a `Writer` for it.
async fn connect(shared: &ClientShared, report: &mut ConnReport) -> Option<(Addr<Socket>, Writer)> {
    let permit = shared.connects.acquire().await;
    let socket = Socket::builder()
        .functions(shared.functions.clone())
        .registry(&shared.registry)
        .connect_timeout(Duration::from_secs(30))
        .connect(shared.addr)
        .await;
    drop(permit);
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            report.error(format!("connect ({e})"));
            return None;
        }
    };
    report.connected = true;
    match socket.send(GetWriter).await {
        Ok(writer) => Some((socket, writer)),
        Err(e) => {
            report.error(format!("get writer ({e})"));
            None
        }
    }
}

/// The records one client connection writes.
struct ClientStream {
    run: u64,
    conn: u32,
    seq: u32,
    rng: Rng,
}

impl ClientStream {
    /// Issues a burst of 1 to `MAX_BURST` records, all as `Write` messages or all through
    /// the `Writer`; answers each record's length and its pending answer, in order.
    fn burst(&mut self, socket: &Addr<Socket>, writer: &Writer) -> Vec<(usize, Answer)> {
        let through_writer = self.rng.next_u64() & 1 == 1;
        let count = self.rng.one_to(MAX_BURST);
        (0..count)
            .map(|_| {
                let len = payload_len(&mut self.rng);
                let rec = record(self.run, self.conn, self.seq, len);
                self.seq = self.seq.wrapping_add(1);
                let total = HEADER + len + TRAILER;
                let answer: Answer = if through_writer {
                    Box::pin(writer.write_answered(rec))
                } else {
                    let request = socket.send(Write::new(rec).wait_when_full());
                    // A mailbox error means the socket went away without answering.
                    Box::pin(async move {
                        request
                            .await
                            .unwrap_or(Err(WriteError::Lost { len: total }))
                    })
                };
                (total, answer)
            })
            .collect()
    }
}

/// Awaits a burst's answers in order, until `limit`; answers false if one did not come.
async fn await_answers(
    answers: Vec<(usize, Answer)>,
    limit: Instant,
    report: &mut ConnReport,
) -> bool {
    let limit = tokio::time::Instant::from_std(limit);
    for (len, answer) in answers {
        match tokio::time::timeout_at(limit, answer).await {
            Ok(a) => report.answer(len, a),
            Err(_) => return false,
        }
    }
    true
}

/// The socket's own counters must agree with the answers: as many completed writes as
/// `Ok` answers, as many bytes sent as the answers reported.
async fn check_stats(socket: &Addr<Socket>, report: &mut ConnReport) {
    match socket.send(GetStats).await {
        Ok(stats) => {
            if stats.writes_completed != report.ok || stats.bytes_sent != report.bytes {
                report.inconsistent = true;
            }
        }
        Err(_) if report.failed => {}
        Err(e) => report.error(format!("get stats ({e})")),
    }
}

async fn run_clients(opts: &Options, addr: SocketAddr) -> ClientTotals {
    let registry = Registry::new();
    let shared = Rc::new(ClientShared {
        opts: opts.clone(),
        addr,
        functions: client_functions(opts),
        registry: registry.clone(),
        connects: Semaphore::new(CONNECTS_AT_ONCE),
        slots: Semaphore::new(opts.at_once()),
        deadline: Instant::now() + Duration::from_secs(opts.seconds),
    });
    let handles: Vec<_> = (0..opts.total() as u32)
        .map(|conn| actix::spawn(client_conn(shared.clone(), conn)))
        .collect();
    let mut totals = ClientTotals::default();
    for handle in handles {
        match handle.await {
            Ok(report) => totals.add(&report),
            Err(e) => *totals.errors.entry(format!("task ({e})")).or_default() += 1,
        }
    }
    drop(shared);
    settle_until(|| registry.is_empty()).await;
    totals.registry_after = registry.len() as u64;
    totals
}

/// Waits (real time, at most 10 s) until `done` holds; answers whether it did.
async fn settle_until(done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while !done() {
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// The clients in a child process: this binary again, with `--client-of`.
async fn clients_in_child(opts: &Options, addr: SocketAddr) -> Result<ClientTotals, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let child = Command::new(exe)
        .args(opts.child_args(addr))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn the client process: {e}"))?;
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .map_err(|e| format!("client process: {e}"))?
        .map_err(|e| format!("client process: {e}"))?;
    let line = BufReader::new(&output.stdout[..])
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with(CLIENT_LINE));
    match line.as_deref().and_then(ClientTotals::from_line) {
        Some(t) => Ok(t),
        None => Err(format!(
            "the client process ({}) printed no report",
            output.status
        )),
    }
}

/// The child: the clients only, then one report line.
fn client_main(opts: &Options, addr: SocketAddr) -> ExitCode {
    if let Err(e) = raise_nofile(opts.at_once() as u64 + FD_SLACK) {
        eprintln!("soak client: {e}");
        return ExitCode::from(2);
    }
    let system = System::new();
    let totals = system.block_on(async {
        let _ = SocketFunctions::system();
        let before = open_fds() as u64;
        let mut totals = run_clients(opts, addr).await;
        totals.fds_before = before;
        settle_until(|| open_fds() as u64 <= before).await;
        totals.fds_after = open_fds() as u64;
        totals.peak_rss_kb = status_kb("VmHWM");
        totals.rss_after_kb = status_kb("VmRSS");
        trim_heap();
        totals.rss_trimmed_kb = status_kb("VmRSS");
        totals
    });
    println!("{}", totals.to_line());
    ExitCode::SUCCESS
}

// ───────────────────────────── the run ─────────────────────────────

/// Everything the summary prints.
struct Outcome {
    clients: ClientTotals,
    server: ServerTotals,
    fds_before: usize,
    fds_after: usize,
    rss_before_kb: u64,
    rss_after_kb: u64,
    /// RSS after handing free heap memory back to the system (glibc only).
    rss_trimmed_kb: Option<u64>,
    peak_rss_kb: u64,
    server_registry_after: usize,
    elapsed: Duration,
    all_closed: bool,
}

async fn run(opts: &Options) -> Result<Outcome, String> {
    // The lazily made parts of this thread's runtime first, so that the descriptor count
    // before is comparable with the one after.
    let _ = SocketFunctions::system();
    let server = start_server(opts).await?;
    let fds_before = open_fds();
    let rss_before_kb = status_kb("VmRSS");
    let started = Instant::now();
    let clients = if opts.client_process {
        clients_in_child(opts, server.local).await?
    } else {
        run_clients(opts, server.local).await
    };
    let totals = server.totals.clone();
    let connected = clients.connected;
    let until = Instant::now() + GRACE;
    let mut all_closed = false;
    while Instant::now() < until {
        if totals.lock().is_ok_and(|t| t.closed >= connected) {
            all_closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let registry = server.registry.clone();
    settle_until(|| registry.is_empty()).await;
    settle_until(|| open_fds() <= fds_before).await;
    let server_totals = std::mem::take(&mut *totals.lock().map_err(|_| "poisoned totals")?);
    let outcome = Outcome {
        fds_after: open_fds(),
        rss_after_kb: status_kb("VmRSS"),
        rss_trimmed_kb: trim_heap().then(|| status_kb("VmRSS")),
        peak_rss_kb: status_kb("VmHWM"),
        server_registry_after: registry.len(),
        clients,
        server: server_totals,
        fds_before,
        rss_before_kb,
        elapsed,
        all_closed,
    };
    server.listener.do_send(sockactor::messages::StopListening);
    Ok(outcome)
}

/// Every check of the run, with whether it held.
fn checks(opts: &Options, o: &Outcome) -> Vec<(String, bool)> {
    let (c, s) = (&o.clients, &o.server);
    let mut v = vec![
        (
            format!(
                "every connection made ({} of {})",
                c.connected,
                opts.total()
            ),
            c.connected == opts.total() as u64,
        ),
        (
            format!(
                "the server accepted and closed each ({} accepted, {} closed)",
                s.accepted, s.closed
            ),
            o.all_closed && s.accepted == c.connected && s.closed == c.connected,
        ),
        (
            format!(
                "every write answered exactly once ({} writes, {} answers, {} unanswered)",
                c.writes, c.answered, c.unanswered
            ),
            c.writes == c.answered && c.unanswered == 0,
        ),
        (
            format!(
                "answers consistent with each other and the sockets' counters ({} connections not)",
                c.inconsistent
            ),
            c.inconsistent == 0,
        ),
        (
            format!(
                "every received byte verified ({} corrupt streams)",
                s.corrupt.values().sum::<u64>()
            ),
            s.corrupt.is_empty(),
        ),
        (
            format!(
                "bytes received = bytes answered as sent ({} / {}), per connection (digest {})",
                s.bytes,
                c.bytes,
                if s.digest == c.digest {
                    "equal"
                } else {
                    "differs"
                }
            ),
            s.bytes == c.bytes && s.digest == c.digest,
        ),
        (
            format!(
                "streams cut inside a record only where a write was cut ({} / {})",
                s.mid_record, c.mid_record
            ),
            s.mid_record == c.mid_record,
        ),
        (
            format!(
                "whole records received = writes answered Ok ({} / {})",
                s.records, c.ok
            ),
            s.records == c.ok,
        ),
        (
            format!(
                "registries empty after (server {}, clients {})",
                o.server_registry_after, c.registry_after
            ),
            o.server_registry_after == 0 && c.registry_after == 0,
        ),
        (
            format!(
                "descriptors back where they started ({} → {})",
                o.fds_before, o.fds_after
            ),
            o.fds_after <= o.fds_before,
        ),
    ];
    v.push((
        format!(
            "the server saw no accept or read error ({})",
            s.errors.values().sum::<u64>()
        ),
        s.errors.is_empty(),
    ));
    if opts.client_process {
        v.push((
            format!(
                "client process descriptors back ({} → {})",
                c.fds_before, c.fds_after
            ),
            c.fds_after <= c.fds_before,
        ));
    }
    if !opts.resets {
        v.push((
            format!(
                "no write failed without injected resets ({} reset)",
                c.reset
            ),
            c.errors.is_empty() && c.reset == 0,
        ));
    }
    v
}

fn print_summary(opts: &Options, o: &Outcome) -> bool {
    let (c, s) = (&o.clients, &o.server);
    let mode = match opts.cycles {
        Some(n) => format!("cycles: {n} connections, {} at a time", opts.at_once()),
        None => format!(
            "soak: {} connections for {} s",
            opts.connections, opts.seconds
        ),
    };
    println!("== sockactor soak ({mode}; seed {})", opts.seed);
    println!(
        "transport      : {}{}{}",
        if opts.faults {
            "fault injector (partial, would-block, delay; server: short reads, read would-block, read delay)"
        } else {
            "system"
        },
        if opts.resets {
            format!(", resets p={}", opts.reset_p)
        } else {
            String::new()
        },
        if opts.client_process {
            ", clients in a child process"
        } else {
            ""
        }
    );
    println!(
        "connections    : {} made, {} reset by the injector",
        c.connected, c.reset
    );
    println!(
        "writes         : {} issued, {} answered, {} Ok ({:.0}/s)",
        c.writes,
        c.answered,
        c.ok,
        c.writes as f64 / o.elapsed.as_secs_f64()
    );
    println!(
        "bytes          : {} answered as sent, {} received and verified ({:.1} MiB/s)",
        c.bytes,
        s.bytes,
        s.bytes as f64 / (1 << 20) as f64 / o.elapsed.as_secs_f64()
    );
    let mut errors: Vec<String> = c
        .errors
        .iter()
        .chain(s.errors.iter())
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    errors.extend(s.corrupt.iter().map(|(k, n)| format!("corrupt {k:?}: {n}")));
    println!(
        "errors by kind : {}",
        if errors.is_empty() {
            "none".into()
        } else {
            errors.join(", ")
        }
    );
    let client_rss = if opts.client_process {
        format!(
            "; client process {} MiB peak, {} MiB after, {} MiB after malloc_trim",
            c.peak_rss_kb / 1024,
            c.rss_after_kb / 1024,
            c.rss_trimmed_kb / 1024
        )
    } else {
        String::new()
    };
    println!(
        "RSS            : {} MiB before, {} MiB peak, {} MiB after, {} after malloc_trim{client_rss}",
        o.rss_before_kb / 1024,
        o.peak_rss_kb / 1024,
        o.rss_after_kb / 1024,
        o.rss_trimmed_kb
            .map_or("nothing".into(), |kb| format!("{} MiB", kb / 1024))
    );
    println!(
        "open fds       : {} before, {} after",
        o.fds_before, o.fds_after
    );
    println!(
        "registry after : {} server sockets, {} client sockets",
        o.server_registry_after, c.registry_after
    );
    println!("elapsed        : {:.1} s", o.elapsed.as_secs_f64());
    let mut pass = true;
    for (what, ok) in checks(opts, o) {
        println!("  [{}] {what}", if ok { "ok" } else { "FAIL" });
        pass &= ok;
    }
    println!("{}", if pass { "PASS" } else { "FAIL" });
    pass
}

fn usage() {
    eprintln!(
        "usage: soak [--connections N] [--seconds S] [--seed X] [--faults] [--resets] \
         [--reset-p P] [--cycles N] [--client-process]"
    );
}

fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("soak: {e}");
            }
            usage();
            return ExitCode::from(2);
        }
    };
    if let Some(addr) = opts.client_of {
        return client_main(&opts, addr);
    }
    let per_conn = if opts.client_process { 1 } else { 2 };
    if let Err(e) = raise_nofile(opts.at_once() as u64 * per_conn + FD_SLACK) {
        eprintln!("soak: {e}");
        return ExitCode::from(2);
    }
    let system = System::new();
    let outcome = system.block_on(run(&opts));
    match outcome {
        Ok(o) if print_summary(&opts, &o) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("soak: {e}");
            println!("FAIL");
            ExitCode::from(1)
        }
    }
}
