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
//! only one descriptor per connection), `--layers tls|deflate|tls+deflate` (byte layers
//! on both ends: TLS with a self-signed "localhost" certificate, deflate, or deflate
//! inside TLS).
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

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Command, ExitCode};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use sockactor::filters::Faults;
use sockactor::messages::{Close, GetStats, GetWriter, StopListening, Write, Written};
use sockactor::{Registry, Socket, SocketFunctions, WriteError, Writer};
use sockactor_tools::args::{bad_arguments, unknown, Args};
use sockactor_tools::child::{self, fields, this_binary, Stderr};
use sockactor_tools::procfs::raise_nofile;
use sockactor_tools::records::{
    digest_of, Corruption, RecordFormat, SeqRule, StreamCheck, HEADER, MAX_BURST, TRAILER,
};
use sockactor_tools::report::Report;
use sockactor_tools::rng::Rng;
use sockactor_tools::soak::{
    bump, check_received, error_kind, injected, settle_until, start_server, write_faults, Layers,
    Meter, ServerConfig, ServerTotals, Streams, Usage, CONNECTS_AT_ONCE, FD_SLACK, GRACE, SETTLE,
};
use tokio::sync::Semaphore;

/// The records: `SOAK` first, payloads up to 64 KiB.
const RECORDS: RecordFormat = RecordFormat {
    magic: 0x534F_414B,
    max_payload: 64 * 1024,
};
/// Bursts each connection writes in `--cycles` mode (at most).
const CYCLE_BURSTS: u64 = 3;
/// First word of the line a client process reports on.
const CLIENT_LINE: &str = "SOAK-CLIENT";
const USAGE: &str = "usage: soak [--connections N] [--seconds S] [--seed X] [--faults] [--resets] \
                     [--reset-p P] [--cycles N] [--client-process]";
/// What to do when the hard descriptor limit is too low.
const NOFILE_ADVICE: &str = "raise it (ulimit -Hn, limits.conf), lower --connections, or use \
                             --client-process to split client and server over two processes";

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
    /// Byte layers on both ends.
    layers: Layers,
    /// Set in the child: run only the clients, against this address.
    client_of: Option<SocketAddr>,
}

impl Options {
    fn parse(mut args: Args) -> Result<Options, String> {
        let mut o = Options {
            connections: 0,
            seconds: 30,
            seed: 1,
            faults: false,
            resets: false,
            reset_p: 0.0005,
            cycles: None,
            client_process: false,
            layers: Layers::None,
            client_of: None,
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--connections" => o.connections = args.number("--connections")?,
                "--seconds" => o.seconds = args.number("--seconds")?,
                "--seed" => o.seed = args.number("--seed")?,
                "--faults" => o.faults = true,
                "--resets" => o.resets = true,
                "--reset-p" => o.reset_p = args.probability("--reset-p")?,
                "--cycles" => o.cycles = Some(args.number("--cycles")?),
                "--client-process" => o.client_process = true,
                "--layers" => o.layers = Layers::parse(&args.value("--layers")?)?,
                "--client-of" => {
                    let v = args.value("--client-of")?;
                    o.client_of = Some(v.parse().map_err(|_| format!("bad address {v}"))?);
                }
                "-h" | "--help" => return Err(String::new()),
                other => return Err(unknown(other)),
            }
        }
        if o.connections == 0 {
            o.connections = if o.cycles.is_some() { 100 } else { 2_000 };
        }
        if o.client_process && o.layers != Layers::None {
            return Err("--layers runs in one process (the TLS identity is the process's)".into());
        }
        if o.resets && o.layers != Layers::None {
            // A reset loses what a layer's outbox held, answered Ok, as it loses a kernel's
            // send buffer: the exact byte accounting below does not hold then.
            return Err(
                "--resets and --layers: a reset loses a layer's outbox, which the \
                        soak's exact accounting does not allow for"
                    .into(),
            );
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

/// A corruption's name in the summary (a record of another connection is `Connection`).
fn corruption_name(c: Corruption) -> String {
    match c {
        Corruption::Writer => "Connection".into(),
        other => format!("{other:?}"),
    }
}

// ───────────────────────────── the server ─────────────────────────────

/// What the server's streams held, over all connections.
#[derive(Debug, Default)]
struct SoakStreams {
    bytes: u64,
    records: u64,
    digest: u64,
    /// Connections whose stream ended inside a record.
    mid_record: u64,
    /// Connections whose stream was wrong, by the first fault found.
    corrupt: BTreeMap<Corruption, u64>,
}

impl Streams for SoakStreams {
    fn closed(&mut self, check: StreamCheck) {
        self.bytes += check.bytes;
        self.records += check.records;
        self.digest = self
            .digest
            .wrapping_add(digest_of(check.writer, check.bytes));
        match check.corrupt {
            Some(c) => *self.corrupt.entry(c).or_default() += 1,
            None if check.mid_record() => self.mid_record += 1,
            None => {}
        }
    }
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
        for field in fields(line.strip_prefix(CLIENT_LINE)?) {
            let (key, value) = field?;
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
        bump(&mut self.errors, kind);
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

type Answer = Pin<Box<dyn Future<Output = Result<Written, WriteError>>>>;

/// The clients' transport: the system one, or write faults (and resets) over it.
fn client_functions(opts: &Options) -> SocketFunctions {
    opts.layers.client(base_functions(opts))
}

/// The clients' transport under any layers.
fn base_functions(opts: &Options) -> SocketFunctions {
    if !opts.faults && !opts.resets {
        return SocketFunctions::system();
    }
    let mut faults = Faults::default();
    if opts.faults {
        faults = write_faults(faults);
    }
    if opts.resets {
        faults = faults.reset(opts.reset_p);
    }
    injected(opts.seed, faults)
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
                let len = RECORDS.payload_len(&mut self.rng);
                let rec = RECORDS.record(self.run, self.conn, self.seq, len);
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
    settle_until(SETTLE, || registry.is_empty()).await;
    totals.registry_after = registry.len() as u64;
    totals
}

/// The clients in a child process: this binary again, with `--client-of`.
async fn clients_in_child(opts: &Options, addr: SocketAddr) -> Result<ClientTotals, String> {
    let mut cmd = Command::new(this_binary()?);
    cmd.args(opts.child_args(addr));
    let finished = tokio::task::spawn_blocking(move || child::run(&mut cmd, Stderr::Inherit, None))
        .await
        .map_err(|e| format!("client process: {e}"))?
        .map_err(|e| format!("spawn the client process: {e}"))?;
    match finished.line(CLIENT_LINE).and_then(ClientTotals::from_line) {
        Some(t) => Ok(t),
        None => Err(format!(
            "the client process ({}) printed no report",
            finished.status.map_or("killed".into(), |s| s.to_string())
        )),
    }
}

/// The child: the clients only, then one report line.
fn client_main(opts: &Options, addr: SocketAddr) -> ExitCode {
    if let Err(e) = raise_nofile(opts.at_once() as u64 + FD_SLACK, NOFILE_ADVICE) {
        eprintln!("soak client: {e}");
        return ExitCode::from(2);
    }
    let system = System::new();
    let totals = system.block_on(async {
        let meter = Meter::start(false);
        let mut totals = run_clients(opts, addr).await;
        let after = meter.settle().await;
        totals.fds_before = meter.fds_before as u64;
        totals.fds_after = after.fds as u64;
        totals.peak_rss_kb = after.peak_rss_kb;
        totals.rss_after_kb = after.rss_kb;
        totals.rss_trimmed_kb = after.trimmed_rss_kb.unwrap_or(after.rss_kb);
        totals
    });
    println!("{}", totals.to_line());
    ExitCode::SUCCESS
}

// ───────────────────────────── the run ─────────────────────────────

/// Everything the summary prints.
struct Outcome {
    clients: ClientTotals,
    server: ServerTotals<SoakStreams>,
    meter: Meter,
    after: Usage,
    server_registry_after: usize,
    elapsed: Duration,
    all_closed: bool,
}

async fn run(opts: &Options) -> Result<Outcome, String> {
    let server = start_server::<SoakStreams>(ServerConfig {
        format: RECORDS,
        run: opts.seed,
        rule: SeqRule::Consecutive,
        keep_whole: false,
        faults: opts.faults,
        backlog: 4096,
        abort_p: 0.0,
        layers: opts.layers,
    })
    .await?;
    let meter = Meter::start(false);
    let clients = if opts.client_process {
        clients_in_child(opts, server.local).await?
    } else {
        run_clients(opts, server.local).await
    };
    let totals = server.totals.clone();
    let connected = clients.connected;
    let all_closed =
        settle_until(GRACE, || totals.lock().is_ok_and(|t| t.closed >= connected)).await;
    let elapsed = meter.started.elapsed();
    let registry = server.registry.clone();
    settle_until(SETTLE, || registry.is_empty()).await;
    let after = meter.settle().await;
    let server_totals = std::mem::take(&mut *totals.lock().map_err(|_| "poisoned totals")?);
    let outcome = Outcome {
        server_registry_after: registry.len(),
        clients,
        server: server_totals,
        meter,
        after,
        elapsed,
        all_closed,
    };
    server.listener.do_send(StopListening);
    Ok(outcome)
}

/// The summary: what ran, the counts, and every check of the run.
fn summary(opts: &Options, o: &Outcome) -> Report {
    let (c, s, streams) = (&o.clients, &o.server, &o.server.streams);
    let mode = match opts.cycles {
        Some(n) => format!("cycles: {n} connections, {} at a time", opts.at_once()),
        None => format!(
            "soak: {} connections for {} s",
            opts.connections, opts.seconds
        ),
    };
    let mut r = Report::new("soak", mode, opts.seed);
    r.line(
        "transport",
        format!(
            "{}{}{}{}",
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
            },
            match opts.layers {
                Layers::None => "",
                Layers::Tls => "; TLS on both ends",
                Layers::Deflate => "; deflate on both ends",
                Layers::TlsDeflate => "; deflate inside TLS on both ends",
            }
        ),
    );
    r.line(
        "connections",
        format!("{} made, {} reset by the injector", c.connected, c.reset),
    );
    r.line(
        "writes",
        format!(
            "{} issued, {} answered, {} Ok ({:.0}/s)",
            c.writes,
            c.answered,
            c.ok,
            c.writes as f64 / o.elapsed.as_secs_f64()
        ),
    );
    r.line(
        "bytes",
        format!(
            "{} answered as sent, {} received and verified ({:.1} MiB/s)",
            c.bytes,
            streams.bytes,
            streams.bytes as f64 / (1 << 20) as f64 / o.elapsed.as_secs_f64()
        ),
    );
    let corrupt = streams
        .corrupt
        .iter()
        .map(|(k, n)| (format!("corrupt {}", corruption_name(*k)), *n));
    r.errors(
        c.errors
            .iter()
            .chain(&s.errors)
            .map(|(k, n)| (k.clone(), *n))
            .chain(corrupt),
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
    r.line("RSS", format!("{}{client_rss}", o.meter.rss_line(&o.after)));
    r.line("open fds", o.meter.fds_line(&o.after));
    r.line(
        "registry after",
        format!(
            "{} server sockets, {} client sockets",
            o.server_registry_after, c.registry_after
        ),
    );
    r.line("elapsed", format!("{:.1} s", o.elapsed.as_secs_f64()));

    r.check(
        format!(
            "every connection made ({} of {})",
            c.connected,
            opts.total()
        ),
        c.connected == opts.total() as u64,
    );
    r.check(
        format!(
            "the server accepted and closed each ({} accepted, {} closed)",
            s.accepted, s.closed
        ),
        o.all_closed && s.accepted == c.connected && s.closed == c.connected,
    );
    r.check(
        format!(
            "every write answered exactly once ({} writes, {} answers, {} unanswered)",
            c.writes, c.answered, c.unanswered
        ),
        c.writes == c.answered && c.unanswered == 0,
    );
    r.check(
        format!(
            "answers consistent with each other and the sockets' counters ({} connections not)",
            c.inconsistent
        ),
        c.inconsistent == 0,
    );
    check_received(
        &mut r,
        streams.corrupt.values().sum(),
        (streams.bytes, streams.digest),
        (c.bytes, c.digest),
        "connection",
    );
    r.check(
        format!(
            "streams cut inside a record only where a write was cut ({} / {})",
            streams.mid_record, c.mid_record
        ),
        streams.mid_record == c.mid_record,
    );
    r.check(
        format!(
            "whole records received = writes answered Ok ({} / {})",
            streams.records, c.ok
        ),
        streams.records == c.ok,
    );
    r.check(
        format!(
            "registries empty after (server {}, clients {})",
            o.server_registry_after, c.registry_after
        ),
        o.server_registry_after == 0 && c.registry_after == 0,
    );
    let (what, ok) = o.meter.fds_check(&o.after);
    r.check(what, ok);
    r.check(
        format!(
            "the server saw no accept or read error ({})",
            s.errors.values().sum::<u64>()
        ),
        s.errors.is_empty(),
    );
    if opts.client_process {
        r.check(
            format!(
                "client process descriptors back ({} → {})",
                c.fds_before, c.fds_after
            ),
            c.fds_after <= c.fds_before,
        );
    }
    if !opts.resets {
        r.check(
            format!(
                "no write failed without injected resets ({} reset)",
                c.reset
            ),
            c.errors.is_empty() && c.reset == 0,
        );
    }
    r
}

fn main() -> ExitCode {
    if let Ok(filter) = std::env::var("SOCKACTOR_LOG") {
        // The library's tracing, e.g. `sockactor::filters::tls=debug`, on stderr.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let opts = match Options::parse(Args::from_env()) {
        Ok(o) => o,
        Err(e) => return bad_arguments("soak", &e, USAGE),
    };
    if let Some(addr) = opts.client_of {
        return client_main(&opts, addr);
    }
    let per_conn = if opts.client_process { 1 } else { 2 };
    if let Err(e) = raise_nofile(opts.at_once() as u64 * per_conn + FD_SLACK, NOFILE_ADVICE) {
        eprintln!("soak: {e}");
        return ExitCode::from(2);
    }
    let system = System::new();
    let outcome = system.block_on(run(&opts));
    match outcome {
        Ok(o) if summary(&opts, &o).print() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("soak: {e}");
            println!("FAIL");
            ExitCode::from(1)
        }
    }
}
