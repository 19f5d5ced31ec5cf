//! What the two soaks share: their limits, waiting for things to settle, error kinds,
//! the injected faults, the meter around a run, and the server that checks every
//! stream it accepts.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use sockactor::filters::{FaultInjector, Faults};
use sockactor::messages::{Address, Close, ListenerEvent, SocketEvent, SocketEventKind, SocketId};
use sockactor::{Listener, Registry, Socket, SocketFunctions, WriteError};

use crate::procfs::{open_fds, reset_peak_rss, status_kb, trim_heap};
use crate::records::{RecordFormat, SeqRule, StreamCheck};
use crate::report::Report;

/// How long answers, closes and the last records may take after the writers stop.
pub const GRACE: Duration = Duration::from_secs(60);
/// Descriptors a process needs besides its sockets' (std streams, the runtimes'
/// reactors, the listener, slack).
pub const FD_SLACK: u64 = 256;
/// Connects under way at once.
pub const CONNECTS_AT_ONCE: usize = 256;
/// How long registries and descriptors may take to come back after a run.
pub const SETTLE: Duration = Duration::from_secs(10);

/// Waits (real time, at most `limit`) until `done` holds; answers whether it did.
pub async fn settle_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + limit;
    while !done() {
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Counts one more of `kind`.
pub fn bump(map: &mut BTreeMap<String, u64>, kind: impl Into<String>) {
    *map.entry(kind.into()).or_default() += 1;
}

/// A write error's kind, for the summary.
pub fn error_kind(e: &WriteError) -> String {
    match e {
        WriteError::QueueFull { .. } => "queue full".into(),
        WriteError::Cancelled => "cancelled".into(),
        WriteError::Closed { .. } => "closed".into(),
        WriteError::Aborted { .. } => "aborted".into(),
        WriteError::Lost { .. } => "lost".into(),
        WriteError::GaveUp { .. } => "gave up".into(),
        WriteError::Transport { source, .. } => format!("transport ({source})"),
        other => format!("other ({other})"),
    }
}

// ───────────────────────────── faults ─────────────────────────────

/// The write faults of `--faults`: partial writes, would-blocks and delays.
pub fn write_faults(faults: Faults) -> Faults {
    faults
        .partial(0.3)
        .would_block(0.05, Duration::from_millis(2))
        .delay(0.05, Duration::from_millis(1))
}

/// The read faults of `--faults`: short reads, read would-blocks and read delays.
pub fn read_faults(faults: Faults) -> Faults {
    faults
        .short_reads(0.3)
        .read_would_block(0.05, Duration::from_millis(2))
        .read_delay(0.05, Duration::from_millis(1))
}

/// A writing end's fault injector over the system transport: at most 16 KiB per call.
pub fn injected(seed: u64, faults: Faults) -> SocketFunctions {
    FaultInjector::new(seed, faults)
        .max_per_call(16 * 1024)
        .wrap(SocketFunctions::system())
}

// ───────────────────────────── checks ─────────────────────────────

/// The checks of what the receivers verified: no stream corrupt, and as many bytes
/// received as the writers were told went out, stream by stream (`per`: what a stream
/// is; compared as sums of per-stream digests, see [`crate::records::digest_of`]).
pub fn check_received(
    report: &mut Report,
    corrupt_streams: u64,
    (received, received_digest): (u64, u64),
    (sent, sent_digest): (u64, u64),
    per: &str,
) {
    report.check(
        format!("every received byte verified ({corrupt_streams} corrupt streams)"),
        corrupt_streams == 0,
    );
    report.check(
        format!(
            "bytes received = bytes answered as sent ({received} / {sent}), per {per} (digest {})",
            if received_digest == sent_digest {
                "equal"
            } else {
                "differs"
            }
        ),
        received == sent && received_digest == sent_digest,
    );
}

// ───────────────────────────── the meter ─────────────────────────────

/// What a run measures about the process around itself.
pub struct Meter {
    pub started: Instant,
    pub fds_before: usize,
    pub rss_before_kb: u64,
    /// The peak was to be reset at the start and the kernel did not allow it.
    peak_of_process: bool,
}

/// The process after a run.
pub struct Usage {
    pub fds: usize,
    pub peak_rss_kb: u64,
    pub rss_kb: u64,
    /// RSS after handing free heap memory back to the system (glibc only).
    pub trimmed_rss_kb: Option<u64>,
}

impl Meter {
    /// Starts the clock after the lazily made parts of this thread's runtime, so that the
    /// descriptor count before is comparable with the one after; with `reset_peak`, the
    /// peak RSS from here on is the run's own.
    pub fn start(reset_peak: bool) -> Meter {
        let _ = SocketFunctions::system();
        Meter {
            peak_of_process: reset_peak && !reset_peak_rss(),
            started: Instant::now(),
            fds_before: open_fds(),
            rss_before_kb: status_kb("VmRSS").unwrap_or(0),
        }
    }

    /// Waits (at most [`SETTLE`]) for the descriptors to come back, then measures.
    pub async fn settle(&self) -> Usage {
        let before = self.fds_before;
        settle_until(SETTLE, || open_fds() <= before).await;
        Usage {
            fds: open_fds(),
            peak_rss_kb: status_kb("VmHWM").unwrap_or(0),
            rss_kb: status_kb("VmRSS").unwrap_or(0),
            trimmed_rss_kb: trim_heap().then(|| status_kb("VmRSS").unwrap_or(0)),
        }
    }

    /// The `RSS` line.
    pub fn rss_line(&self, u: &Usage) -> String {
        format!(
            "{} MiB before, {} MiB peak{}, {} MiB after, {} after malloc_trim",
            self.rss_before_kb / 1024,
            u.peak_rss_kb / 1024,
            if self.peak_of_process {
                " (of the process)"
            } else {
                ""
            },
            u.rss_kb / 1024,
            u.trimmed_rss_kb
                .map_or("nothing".into(), |kb| format!("{} MiB", kb / 1024))
        )
    }

    /// The `open fds` line.
    pub fn fds_line(&self, u: &Usage) -> String {
        format!("{} before, {} after", self.fds_before, u.fds)
    }

    /// The descriptor check.
    pub fn fds_check(&self, u: &Usage) -> (String, bool) {
        (
            format!(
                "descriptors back where they started ({} → {})",
                self.fds_before, u.fds
            ),
            u.fds <= self.fds_before,
        )
    }

    /// Waits for the descriptors to come back, then adds the RSS, descriptor and time
    /// lines and the descriptor check.
    pub async fn finish(self, report: &mut Report) {
        let elapsed = self.started.elapsed();
        let u = self.settle().await;
        report.line("RSS", self.rss_line(&u));
        report.line("open fds", self.fds_line(&u));
        report.line("elapsed", format!("{:.1} s", elapsed.as_secs_f64()));
        let (what, ok) = self.fds_check(&u);
        report.check(what, ok);
    }
}

// ───────────────────────────── the checking server ─────────────────────────────

/// How a soak books the streams its server checked.
pub trait Streams: Default + Send + 'static {
    /// A connection has closed; `check` is what its stream held.
    fn closed(&mut self, check: StreamCheck);
}

/// What the server saw, over all connections.
#[derive(Debug, Default)]
pub struct ServerTotals<S> {
    pub accepted: u64,
    pub closed: u64,
    /// Read errors and accept errors, by kind.
    pub errors: BTreeMap<String, u64>,
    pub streams: S,
}

/// Byte layers both ends of a soak's connections run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layers {
    /// None: plain bytes.
    #[default]
    None,
    /// TLS (the process's self-signed "localhost" identity).
    Tls,
    /// Deflate.
    Deflate,
    /// Deflate inside TLS: compressed, then encrypted.
    TlsDeflate,
}

impl Layers {
    /// From a `--layers` value.
    pub fn parse(v: &str) -> Result<Layers, String> {
        match v {
            "none" => Ok(Layers::None),
            "tls" => Ok(Layers::Tls),
            "deflate" => Ok(Layers::Deflate),
            "tls+deflate" => Ok(Layers::TlsDeflate),
            other => Err(format!(
                "unknown layers {other} (none, tls, deflate, tls+deflate)"
            )),
        }
    }

    fn tls(self) -> bool {
        matches!(self, Layers::Tls | Layers::TlsDeflate)
    }

    fn deflate(self) -> bool {
        matches!(self, Layers::Deflate | Layers::TlsDeflate)
    }

    /// The server's table: the layers over `base`.
    pub fn server(self, base: SocketFunctions) -> SocketFunctions {
        self.over(base, |base| {
            sockactor::filters::Tls::server(crate::tls::configs().0).wrap(base)
        })
    }

    /// The clients' table: the layers over `base`.
    pub fn client(self, base: SocketFunctions) -> SocketFunctions {
        self.over(base, |base| {
            sockactor::filters::Tls::client(crate::tls::configs().1, "localhost")
                .expect("localhost is a server name")
                .wrap(base)
        })
    }

    /// Deflate (outermost) over TLS (made by `tls`) over `base`, as chosen.
    fn over(
        self,
        base: SocketFunctions,
        tls: impl FnOnce(SocketFunctions) -> SocketFunctions,
    ) -> SocketFunctions {
        let base = if self.tls() { tls(base) } else { base };
        if self.deflate() {
            sockactor::filters::Compress::new().wrap(base)
        } else {
            base
        }
    }
}

/// How the server checks its streams.
#[derive(Clone, Copy, Debug)]
pub struct ServerConfig {
    pub format: RecordFormat,
    /// The run's seed: the writers' payloads.
    pub run: u64,
    pub rule: SeqRule,
    /// Keep the sequence numbers of every whole record.
    pub keep_whole: bool,
    /// Inject read faults (seeded from the run's).
    pub faults: bool,
    pub backlog: u32,
    /// The probability that the server aborts a connection at a delivery (server-side
    /// aborts: the client's writes meet a reset).
    pub abort_p: f64,
    /// Byte layers over the server's transport.
    pub layers: Layers,
}

/// Subscribed to the listener and to every socket it accepts: checks each stream,
/// closes a socket at the peer's EOF and books the connection when it has closed.
struct StreamServer<S: Streams> {
    config: ServerConfig,
    /// Draws the server-side aborts.
    rng: crate::rng::Rng,
    sockets: HashMap<SocketId, (Addr<Socket>, StreamCheck)>,
    totals: Arc<Mutex<ServerTotals<S>>>,
}

impl<S: Streams> Actor for StreamServer<S> {
    type Context = Context<Self>;
}

impl<S: Streams> StreamServer<S> {
    fn book(&self, f: impl FnOnce(&mut ServerTotals<S>)) {
        if let Ok(mut t) = self.totals.lock() {
            f(&mut t);
        }
    }
}

impl<S: Streams> Handler<ListenerEvent> for StreamServer<S> {
    type Result = ();
    fn handle(&mut self, event: ListenerEvent, _: &mut Context<Self>) {
        match event {
            ListenerEvent::Accepted { socket, id, .. } => {
                let c = self.config;
                let check = StreamCheck::new(c.format, c.run, c.rule, c.keep_whole);
                self.sockets.insert(id, (socket, check));
                self.book(|t| t.accepted += 1);
            }
            ListenerEvent::AcceptFailed { error } => {
                self.book(|t| bump(&mut t.errors, format!("accept: {error}")));
            }
            _ => {}
        }
    }
}

impl<S: Streams> Handler<SocketEvent> for StreamServer<S> {
    type Result = ();
    fn handle(&mut self, event: SocketEvent, _: &mut Context<Self>) {
        let Some((socket, check)) = self.sockets.get_mut(&event.socket) else {
            return;
        };
        match event.kind {
            SocketEventKind::Received(bytes) => {
                check.feed(&bytes);
                if !check.aborted
                    && self.config.abort_p > 0.0
                    && self.rng.chance(self.config.abort_p)
                {
                    check.aborted = true;
                    socket.do_send(Close::Abort);
                }
            }
            SocketEventKind::Eof => socket.do_send(Close::Graceful),
            SocketEventKind::ReadFailed(error) => {
                self.book(|t| bump(&mut t.errors, format!("server read: {error}")));
            }
            SocketEventKind::Closed { .. } => {
                if let Some((_, check)) = self.sockets.remove(&event.socket) {
                    self.book(|t| {
                        t.closed += 1;
                        t.streams.closed(check);
                    });
                }
            }
            other => {
                self.book(|t| bump(&mut t.errors, format!("server event: {other:?}")));
            }
        }
    }
}

type Bound = Result<(Addr<Listener>, Address), sockactor::SocketError>;

/// The server side, on its own arbiter: the listener, its sockets' registry, and the
/// totals the server actor keeps.
pub struct ServerSide<S> {
    pub local: SocketAddr,
    pub listener: Addr<Listener>,
    pub registry: Registry,
    pub totals: Arc<Mutex<ServerTotals<S>>>,
    pub arbiter: Arbiter,
}

/// Starts the checking server on a new arbiter, listening on a loopback port.
pub async fn start_server<S: Streams>(config: ServerConfig) -> Result<ServerSide<S>, String> {
    let arbiter = Arbiter::new();
    let registry = Registry::new();
    let totals = Arc::new(Mutex::new(ServerTotals::default()));
    let (tx, rx) = tokio::sync::oneshot::channel::<Bound>();
    let (reg, tot) = (registry.clone(), totals.clone());
    // `spawn_fn` takes a `Send` closure; the future it spawns there need not be.
    let started = arbiter.spawn_fn(move || {
        actix::spawn(async move {
            let server = StreamServer {
                config,
                rng: crate::rng::Rng::new(config.run ^ 0xAB07),
                sockets: HashMap::new(),
                totals: tot,
            }
            .start();
            let functions = config.layers.server(if config.faults {
                FaultInjector::new(config.run ^ 0x5E5E, read_faults(Faults::default()))
                    .wrap(SocketFunctions::system())
            } else {
                SocketFunctions::system()
            });
            let for_sockets = server.clone();
            let bound = Listener::builder()
                .functions(functions)
                .backlog(config.backlog)
                .subscriber(server.recipient())
                .socket_builder(move |_| {
                    Socket::builder()
                        .subscriber(for_sockets.clone().recipient())
                        .registry(&reg)
                })
                .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await;
            let _ = tx.send(bound);
        });
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
        arbiter,
    })
}
