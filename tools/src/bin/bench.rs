//! The write-path benchmark: sockactor sockets against hand-written and framework baselines
//! over loopback TCP, one markdown table.
//!
//! ```text
//! cargo run --release -p sockactor-tools --bin bench             # full run, 5 repetitions
//! cargo run --release -p sockactor-tools --bin bench -- --quick  # tiny sizes, 1 repetition (CI)
//! cargo run --release -p sockactor-tools --bin bench -- --workload a,d --sender ceiling,naive --reps 3
//! ```
//!
//! Workloads: (a) 1M × 64 B from 1 producer, (b) the same from 16 producers, (b1) 16
//! producers that yield after every message, (c) 20k × 64 KiB from 1 producer, (d) 64 B
//! ping-pong through an echo peer (p50/p99 latency), (e) RSS per idle connection, (f) CPU
//! per message over a transport that accepts everything without syscalls.
//!
//! Senders: `sockactor-deferred` and `sockactor-immediate` (a [`Socket`] fed by actix
//! producer actors), `naive` (one `write_all` per message), `ceiling` (gather up to 1024
//! messages, `write_vectored` them: the hand-tuned limit), `actix-framedwrite` (an actor
//! owning `actix::io::FramedWrite`) and `tokio-util-framed` (`feed` per message, `flush`
//! when the channel is empty). Adding a sender is one [`Sender`] variant (plus its line in
//! [`Sender::spec`]) and one function taking a [`Job`]; `sockactor-writer` is such a slot,
//! all measured by default.
//!
//! Method: every measurement runs in a fresh process (this binary re-executed with
//! `--child`), which prints one `RESULT key=value …` line; the parent runs the repetitions
//! interleaved (repetition-major; each repetition rotates the order of a workload's
//! senders by one, so none always runs first), kills a child after 120 s, and prints medians with
//! min..max. The receiving end is a std thread on a blocking socket reading 256 KiB at a
//! time; a run whose receiver does not get exactly the bytes sent fails loudly.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, BufRead, BufReader, IoSlice, Read, Write as _};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use sockactor::filters::{Compress, Decoded, Layer};
use sockactor::messages::{
    Close, CloseSocket, Connect, GetWriter, Handle, OpenSocket, Received, RecvFrom, SendV, Sent,
    SocketEvent, SocketEventKind, Write,
};
use sockactor::{
    QueueConfig, Socket, SocketBuilder, SocketConfig, SocketFunctions, TransportError, Writer,
};
use sockactor_tools::args::{unknown, Args};
use sockactor_tools::child::{self, fields, this_binary, Stderr};
use sockactor_tools::inflate::Inflate;
use sockactor_tools::procfs::{
    nofile_limits, process_cpu_ns, raise_nofile_towards, status_kb, syscw, thread_cpu,
};
use sockactor_tools::report::{self, median, table_header, table_row, Align};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tokio_util::codec::{BytesCodec, FramedRead};

/// Parent's limit on one child process.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);
/// Child's limit on one phase (producing, draining, closing).
const PHASE_TIMEOUT: Duration = Duration::from_secs(90);
/// Messages a run keeps unacknowledged, over all its producers (see [`Plan`]).
const IN_FLIGHT: usize = 1024;
/// Acknowledged messages each producer may have outstanding.
const ACK_WINDOW: usize = 4;
/// Workload (g): requests sent and not yet answered, at most.
const REQ_IN_FLIGHT: usize = 1000;
/// Byte-window flow control: the bytes all producers of a run may have unacknowledged.
const WINDOW_BYTES: usize = 4 << 20;
/// Byte-window flow control: each producer asks for an answer every this many bytes, and
/// that answer gives those bytes back to the window.
const ACK_BYTES: usize = 64 << 10;
/// Byte-window flow control: each producer yields to the runtime every this many messages.
const YIELD_EVERY: usize = 64;
/// Most segments the ceiling gathers into one vectored write (`IOV_MAX`).
const IOV_MAX: usize = 1024;
/// Receiver read size.
const READ_CHUNK: usize = 256 * 1024;
/// Idle connections measured in (e) when the descriptor limit allows.
const IDLE_CONNECTIONS: usize = 10_000;
/// Descriptors each (e) process needs besides one per connection (warm-up, std streams…).
const FD_SLACK: u64 = 512;
/// glibc malloc settings applied at child start (see [`tune_malloc`]).
const MMAP_THRESHOLD: i32 = 16 << 20;
const TRIM_THRESHOLD: i32 = 1 << 30;
const TOP_PAD: i32 = 16 << 20;
/// Set (by the parent, for `--no-pin`) in the children's environment: no CPU pinning.
use sockactor_tools::procfs::{pin_to_cpu, NO_PIN_ENV};

static PATTERN: [u8; 64 * 1024] = [b'x'; 64 * 1024];

type BoxFut<T> = Pin<Box<dyn Future<Output = T>>>;
type Res<T> = Result<T, String>;

fn err(context: &str) -> impl Fn(io::Error) -> String + '_ {
    move |e| format!("{context}: {e}")
}

/// `--text`: messages are cut from this generated text (words and numbers; deflate
/// level 1 takes it to about half), instead of a repeated byte.
static TEXT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

thread_local! {
    /// Where the next message starts in [`TEXT`].
    static TEXT_AT: Cell<usize> = const { Cell::new(0) };
}

/// Text for `--text`: twice the largest message, so any message is one slice of it.
fn make_text() -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "GET",
        "/index.html",
        "HTTP/1.1",
        "Host:",
        "example.com",
        "user",
        "id=",
        "value",
        "\r\n",
        "json",
        "{\"k\":",
        "}",
    ];
    let mut rng = sockactor_tools::rng::Rng::new(7);
    let mut text = Vec::with_capacity(PATTERN.len() * 2 + 32);
    while text.len() < PATTERN.len() * 2 {
        let word = WORDS[(rng.next_u64() % WORDS.len() as u64) as usize];
        text.extend_from_slice(word.as_bytes());
        text.extend_from_slice(format!("{} ", rng.next_u64() % 1000).as_bytes());
    }
    text.truncate(PATTERN.len() * 2);
    text
}

/// One message: a fresh allocation, as a real producer would make it; a repeated byte,
/// or with `--text` the next slice of [`TEXT`].
fn payload(size: usize) -> Bytes {
    match TEXT.get() {
        None => Bytes::copy_from_slice(&PATTERN[..size]),
        Some(text) => {
            let at = TEXT_AT.with(|at| {
                let start = at.get();
                at.set((start + size + 13) % (text.len() - PATTERN.len()));
                start
            });
            Bytes::copy_from_slice(&text[at..at + size])
        }
    }
}

// ───────────────────────────── workloads ─────────────────────────────

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Workload {
    A,
    B,
    B1,
    C,
    D,
    E,
    F,
    G,
    H,
    I,
    I1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Producers stream messages to a receiver (`null`: to a transport that accepts
    /// everything without syscalls).
    Stream { null: bool },
    /// One message out, wait for its echo, repeat.
    PingPong,
    /// Requests through an echo peer, [`REQ_IN_FLIGHT`] unanswered at a time.
    ReqResp,
    /// Datagrams over loopback UDP to a receiver thread that counts them.
    Datagrams,
    /// Datagrams from a sender thread (as fast as it goes, or `rate` a second) to the
    /// receiver measured.
    DatagramsIn { rate: Option<u64> },
    /// Connect and hold idle connections; measure RSS.
    Idle,
}

struct WorkloadSpec {
    kind: Kind,
    full: usize,
    quick: usize,
    size: usize,
    producers: usize,
    yield_each: bool,
}

impl Workload {
    const ALL: [Workload; 11] = [
        Workload::A,
        Workload::B,
        Workload::B1,
        Workload::C,
        Workload::D,
        Workload::E,
        Workload::F,
        Workload::G,
        Workload::H,
        Workload::I,
        Workload::I1,
    ];

    fn key(self) -> &'static str {
        match self {
            Workload::A => "a",
            Workload::B => "b",
            Workload::B1 => "b1",
            Workload::C => "c",
            Workload::D => "d",
            Workload::E => "e",
            Workload::F => "f",
            Workload::G => "g",
            Workload::H => "h",
            Workload::I => "i",
            Workload::I1 => "i1",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.key() == s)
    }

    fn spec(self) -> WorkloadSpec {
        let stream = |full, quick, size, producers, yield_each, null| WorkloadSpec {
            kind: Kind::Stream { null },
            full,
            quick,
            size,
            producers,
            yield_each,
        };
        match self {
            Workload::A => stream(1_000_000, 20_000, 64, 1, false, false),
            Workload::B => stream(1_000_000, 20_000, 64, 16, false, false),
            Workload::B1 => stream(1_000_000, 20_000, 64, 16, true, false),
            Workload::C => stream(20_000, 500, 64 * 1024, 1, false, false),
            Workload::D => WorkloadSpec {
                kind: Kind::PingPong,
                full: 20_000,
                quick: 500,
                size: 64,
                producers: 1,
                yield_each: false,
            },
            Workload::E => WorkloadSpec {
                kind: Kind::Idle,
                full: IDLE_CONNECTIONS,
                quick: 200,
                size: 0,
                producers: 0,
                yield_each: false,
            },
            Workload::F => stream(1_000_000, 20_000, 64, 1, false, true),
            Workload::G => WorkloadSpec {
                kind: Kind::ReqResp,
                full: 1_000_000,
                quick: 20_000,
                size: 64,
                producers: 1,
                yield_each: false,
            },
            Workload::H => WorkloadSpec {
                kind: Kind::Datagrams,
                full: 500_000,
                quick: 10_000,
                size: 64,
                producers: 1,
                yield_each: false,
            },
            Workload::I => WorkloadSpec {
                kind: Kind::DatagramsIn { rate: None },
                full: 500_000,
                quick: 10_000,
                size: 64,
                producers: 1,
                yield_each: false,
            },
            Workload::I1 => WorkloadSpec {
                kind: Kind::DatagramsIn {
                    rate: Some(PACED_RATE),
                },
                full: 200_000,
                quick: 5_000,
                size: 64,
                producers: 1,
                yield_each: false,
            },
        }
    }

    fn label(self, count: usize, size: Option<usize>) -> String {
        let n = fmt_count(count as f64);
        let size = match size.unwrap_or(self.spec().size) {
            s if s >= 1024 && s.is_multiple_of(1024) => format!("{} KiB", s / 1024),
            s => format!("{s} B"),
        };
        match self {
            Workload::A => format!("a · {size} × {n}, 1 producer"),
            Workload::B => format!("b · {size} × {n}, 16 producers"),
            Workload::B1 => format!("b1 · {size} × {n}, 16 yielding producers"),
            Workload::C => format!("c · {size} × {n}, 1 producer"),
            Workload::D => format!("d · {size} ping-pong × {n}"),
            Workload::E => format!("e · {n} idle connections"),
            Workload::F => format!("f · {size} × {n}, no-syscall transport"),
            Workload::G => {
                format!("g · {size} requests × {n}, {REQ_IN_FLIGHT} in flight, echo peer")
            }
            Workload::H => format!("h · {size} UDP datagrams × {n}, sent"),
            Workload::I => format!("i · {size} UDP datagrams × {n}, received (flood)"),
            Workload::I1 => format!(
                "i1 · {size} UDP datagrams × {n}, received ({}/s)",
                fmt_count(PACED_RATE as f64)
            ),
        }
    }
}

/// What a child measures: handed to the sender's function.
#[derive(Clone, Copy, Debug)]
struct Job {
    kind: Kind,
    flow: Flow,
    /// Messages (streams), round trips (ping-pong) or connections (idle).
    count: usize,
    size: usize,
    producers: usize,
    yield_each: bool,
    /// The receiver inflates what it reads (`sockactor-deflate`).
    inflate: bool,
}

// ───────────────────────────── senders ─────────────────────────────

/// The senders. Each is one variant here, one line in [`Sender::spec`] and one function
/// `fn(Job) -> BoxFut<Res<Outcome>>` that does every workload it takes part in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Sender {
    SockactorDeferred,
    SockactorImmediate,
    /// sockactor through its `Writer` handle (deferred policy): writes go straight into
    /// the socket's queue, no message per write.
    SockactorWriter,
    /// `sockactor-writer` through a pass-through byte layer (it copies every byte each
    /// way, in place): what one filter layer costs. Not in the default run.
    SockactorFiltered,
    /// `sockactor-writer` through the deflate layer (`Compress`, level 1, in place), the
    /// receiver inflating: what compression costs. Stream workloads only; not in the
    /// default run.
    SockactorDeflate,
    /// sockactor through the `FramedWriter` `Sink` (items buffered up to 64 KiB, one
    /// write per flush), as a `BufWriter` user writes: (g) only.
    SockactorSink,
    Naive,
    Ceiling,
    ActixFramedWrite,
    TokioUtilFramed,
}

struct SenderSpec {
    name: &'static str,
    run: fn(Job) -> BoxFut<Res<Outcome>>,
    /// Takes part in (e), idle connections.
    idle: bool,
}

impl Sender {
    const ALL: [Sender; 10] = [
        Sender::SockactorDeferred,
        Sender::SockactorImmediate,
        Sender::SockactorWriter,
        Sender::SockactorFiltered,
        Sender::SockactorDeflate,
        Sender::SockactorSink,
        Sender::Naive,
        Sender::Ceiling,
        Sender::ActixFramedWrite,
        Sender::TokioUtilFramed,
    ];

    /// Measured by default, in table order.
    const RUN: [Sender; 8] = [
        Sender::SockactorWriter,
        Sender::SockactorDeferred,
        Sender::SockactorSink,
        Sender::SockactorImmediate,
        Sender::Naive,
        Sender::Ceiling,
        Sender::ActixFramedWrite,
        Sender::TokioUtilFramed,
    ];

    fn spec(self) -> SenderSpec {
        let s = |name, run, idle| SenderSpec { name, run, idle };
        match self {
            Sender::SockactorDeferred => s("sockactor-deferred", sockactor_deferred, true),
            Sender::SockactorImmediate => s("sockactor-immediate", sockactor_immediate, true),
            Sender::SockactorWriter => s("sockactor-writer", sockactor_writer, true),
            Sender::SockactorFiltered => s("sockactor-filtered", sockactor_filtered, true),
            Sender::SockactorDeflate => s("sockactor-deflate", sockactor_deflate, false),
            Sender::SockactorSink => s("sockactor-sink", sockactor_sink, false),
            Sender::Naive => s("naive", naive, true),
            Sender::Ceiling => s("ceiling", ceiling, false),
            Sender::ActixFramedWrite => s("actix-framedwrite", actix_framedwrite, true),
            Sender::TokioUtilFramed => s("tokio-util-framed", tokio_util_framed, false),
        }
    }

    fn name(self) -> &'static str {
        self.spec().name
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }

    fn takes_part(self, w: Workload) -> bool {
        if self == Sender::SockactorDeflate {
            // The streams to a peer, which inflates what it counts ((f) counts the bytes
            // its transport is handed: compressed, they never add up to the plaintext's).
            return matches!(w, Workload::A | Workload::B | Workload::B1 | Workload::C);
        }
        match w {
            Workload::E => self.spec().idle,
            // The client's baseline is the ceiling's slot: a tokio client with a
            // `BufWriter` and a `FramedRead`.
            Workload::G => matches!(
                self,
                Sender::SockactorWriter
                    | Sender::SockactorDeferred
                    | Sender::SockactorFiltered
                    | Sender::SockactorSink
                    | Sender::Ceiling
            ),
            // A `DatagramWriter` against a tokio `send_to` loop (the ceiling's slot).
            Workload::H => matches!(self, Sender::SockactorWriter | Sender::Ceiling),
            // A `DatagramSocket` with a subscriber against a tokio `recv_from` loop.
            Workload::I | Workload::I1 => {
                matches!(self, Sender::SockactorDeferred | Sender::Ceiling)
            }
            _ => self != Sender::SockactorSink,
        }
    }
}

fn sockactor_deferred(job: Job) -> BoxFut<Res<Outcome>> {
    sockactor(job, Mode::Deferred)
}

fn sockactor_immediate(job: Job) -> BoxFut<Res<Outcome>> {
    sockactor(job, Mode::Immediate)
}

fn sockactor_writer(job: Job) -> BoxFut<Res<Outcome>> {
    sockactor(job, Mode::Writer)
}

fn sockactor_filtered(job: Job) -> BoxFut<Res<Outcome>> {
    sockactor(job, Mode::Filtered)
}

fn sockactor_deflate(job: Job) -> BoxFut<Res<Outcome>> {
    sockactor(job, Mode::Deflate)
}

fn sockactor_sink(job: Job) -> BoxFut<Res<Outcome>> {
    if job.kind != Kind::ReqResp {
        return Box::pin(async { Err("sockactor-sink is measured in (g) only".to_string()) });
    }
    Box::pin(async move { req_resp(job, move |addr| Box::pin(sink_requester(addr, job))).await })
}

fn naive(job: Job) -> BoxFut<Res<Outcome>> {
    channel_sender(job, |rx, w| Box::pin(naive_writer(rx, w)), counted_sink)
}

fn ceiling(job: Job) -> BoxFut<Res<Outcome>> {
    if job.kind == Kind::Datagrams {
        return Box::pin(datagrams(job, move |to| Box::pin(tokio_datagrams(to, job))));
    }
    if let Kind::DatagramsIn { .. } = job.kind {
        return Box::pin(datagrams_in(job, |counted| {
            Box::pin(tokio_receiver(counted))
        }));
    }
    if job.kind == Kind::ReqResp {
        return Box::pin(req_resp(job, move |addr| {
            Box::pin(tokio_requester(addr, job))
        }));
    }
    channel_sender(
        job,
        |rx, w| Box::pin(ceiling_writer(rx, w)),
        |bytes| Box::new(VectoredCounter(bytes)),
    )
}

fn tokio_util_framed(job: Job) -> BoxFut<Res<Outcome>> {
    channel_sender(job, |rx, w| Box::pin(framed_writer(rx, w)), counted_sink)
}

// ───────────────────── sockactor (deferred / immediate) ─────────────────────

/// How the sockactor senders write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `Write` messages, deferred policy (Flusher).
    Deferred,
    /// `Write` messages, immediate policy.
    Immediate,
    /// A `Writer` handle, deferred policy.
    Writer,
    /// As `Writer`, through one pass-through byte layer (a copy each way, in place).
    Filtered,
    /// As `Writer`, through the deflate layer (level 1).
    Deflate,
}

impl Mode {
    fn uses_writer(self) -> bool {
        matches!(self, Mode::Writer | Mode::Filtered | Mode::Deflate)
    }
}

/// A byte layer that passes every byte through (copying it), as a filter that changes
/// nothing would.
#[derive(Debug)]
struct PassThrough;

impl Layer for PassThrough {
    fn name(&self) -> &'static str {
        "pass-through"
    }

    fn worst_case(&self, n: usize) -> usize {
        n
    }

    fn encode(&mut self, input: &[std::io::IoSlice<'_>], out: &mut Vec<u8>) -> std::io::Result<()> {
        for slice in input {
            out.extend_from_slice(slice);
        }
        Ok(())
    }

    fn decode(
        &mut self,
        input: &mut bytes::BytesMut,
        out: &mut bytes::BytesMut,
        max: usize,
    ) -> std::io::Result<Decoded> {
        let n = input.len().min(max);
        out.extend_from_slice(&input.split_to(n));
        Ok(if input.is_empty() {
            Decoded::NeedInput
        } else {
            Decoded::More
        })
    }
}

/// The transport of `mode` over `inner`: one pass-through byte layer for
/// `Mode::Filtered`, the deflate layer for `Mode::Deflate`.
fn transport_for(mode: Mode, inner: SocketFunctions) -> SocketFunctions {
    match mode {
        Mode::Filtered => inner.layer(|_| Ok(Box::new(PassThrough))),
        Mode::Deflate => Compress::new().level(1).wrap(inner),
        _ => inner,
    }
}

fn sock_builder(mode: Mode) -> SocketBuilder {
    let builder = Socket::builder().functions(transport_for(mode, SocketFunctions::system()));
    match mode {
        Mode::Immediate => builder.immediate(),
        Mode::Deferred => builder,
        // A writer is refused at the high watermark instead of waiting; the benchmark's
        // own flow control (at most 1,024 messages unacknowledged) bounds memory, as it
        // does for the unbounded channels of the other senders.
        Mode::Writer | Mode::Filtered | Mode::Deflate => builder.config(SocketConfig {
            queue: QueueConfig {
                high_watermark: 256 << 20,
                low_watermark: 64 << 20,
                // SOCKACTOR_BENCH_TURN overrides the flush turn (default 256 KiB), to
                // measure what the fairness bound costs (c).
                max_bytes_per_turn: std::env::var("SOCKACTOR_BENCH_TURN")
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(QueueConfig::default().max_bytes_per_turn),
                // SOCKACTOR_BENCH_COPY overrides the copy threshold (default 512 B), to
                // measure where copying small writes stops paying.
                copy_threshold: std::env::var("SOCKACTOR_BENCH_COPY")
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(QueueConfig::default().copy_threshold),
                ..QueueConfig::default()
            },
            ..SocketConfig::default()
        }),
    }
}

fn sockactor(job: Job, mode: Mode) -> BoxFut<Res<Outcome>> {
    Box::pin(async move {
        match job.kind {
            Kind::Stream { .. } => {
                // Under the byte window, as in the harness that asked for it, `Writer`
                // producers are tokio tasks.
                let producers = if job.flow == Flow::Bytes && mode.uses_writer() {
                    ProducerKind::Task
                } else {
                    ProducerKind::Actor
                };
                stream(job, producers, move |sink| {
                    Box::pin(sock_endpoint(sink, mode))
                })
                .await
            }
            Kind::ReqResp => {
                req_resp(job, move |addr| Box::pin(sock_requester(addr, job, mode))).await
            }
            Kind::Datagrams => datagrams(job, move |to| Box::pin(sock_datagrams(to, job))).await,
            Kind::DatagramsIn { .. } => {
                datagrams_in(job, |counted| Box::pin(sock_receiver(counted))).await
            }
            Kind::PingPong => {
                ping_pong(job, move |addr| {
                    Box::pin(async move {
                        let (done, finished) = oneshot::channel();
                        let ctx = Context::<Pinger>::new();
                        let socket = sock_builder(mode)
                            .subscriber(ctx.address().recipient())
                            .connect(addr)
                            .await
                            .map_err(|e| format!("connect: {e}"))?;
                        let writer = match mode {
                            Mode::Writer | Mode::Filtered | Mode::Deflate => Some(
                                socket
                                    .send(GetWriter)
                                    .await
                                    .map_err(|e| format!("writer: {e}"))?,
                            ),
                            _ => None,
                        };
                        let state = PingState::new(job, done);
                        let pinger = ctx.run(Pinger {
                            socket: socket.clone(),
                            writer,
                            state,
                        });
                        let go: Go = Box::new(move || {
                            Box::pin(async move {
                                pinger.do_send(StartPing);
                                let latencies = finished.await.map_err(|_| "pinger vanished")?;
                                socket.do_send(Close::Graceful);
                                latencies
                            })
                        });
                        Ok(go)
                    })
                })
                .await
            }
            Kind::Idle => {
                let errors = Rc::new(RefCell::new(Vec::new()));
                let watch = Watch(errors.clone()).start();
                let outcome = idle(job, move |addr| {
                    let builder = sock_builder(mode).subscriber(watch.clone().recipient());
                    Box::pin(async move {
                        let socket = builder
                            .connect(addr)
                            .await
                            .map_err(|e| format!("connect: {e}"))?;
                        Ok(Box::new(socket) as Held)
                    })
                })
                .await?;
                first_error(&errors)?;
                Ok(outcome)
            }
        }
    })
}

async fn sock_endpoint(sink: Sink, mode: Mode) -> Res<Box<dyn Endpoint>> {
    let errors = Rc::new(RefCell::new(Vec::new()));
    let builder = sock_builder(mode).subscriber(Watch(errors.clone()).start().recipient());
    let socket = match sink {
        Sink::Tcp(addr) => builder.connect(addr).await,
        Sink::Null(bytes) => {
            let transport = NullTransport { bytes, next: 0 }.start();
            let nowhere: SocketAddr = "127.0.0.1:0".parse().expect("address");
            builder
                .functions(transport_for(mode, SocketFunctions::from_actor(transport)))
                .connect(nowhere)
                .await
        }
    }
    .map_err(|e| format!("connect: {e}"))?;
    if mode.uses_writer() {
        let writer = socket
            .send(GetWriter)
            .await
            .map_err(|e| format!("writer: {e}"))?;
        return Ok(Box::new(WriterEp {
            socket,
            writer,
            errors,
        }));
    }
    Ok(Box::new(SockEp { socket, errors }))
}

/// Producers write with `wait_when_full`; every [`Plan::ack_every`]-th write is sent with
/// `send` and its answer (the write's last byte accepted by the transport) awaited later.
struct SockEp {
    socket: Addr<Socket>,
    errors: Rc<RefCell<Vec<String>>>,
}

impl Endpoint for SockEp {
    fn clone_ep(&self) -> Box<dyn Endpoint> {
        Box::new(SockEp {
            socket: self.socket.clone(),
            errors: self.errors.clone(),
        })
    }

    fn post(&self, msg: Bytes) {
        self.socket.do_send(Write::new(msg).wait_when_full());
    }

    fn post_acked(&self, msg: Bytes) -> BoxFut<Res<()>> {
        let answer = self.socket.send(Write::new(msg).wait_when_full());
        Box::pin(async move {
            match answer.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("write failed: {e}")),
                Err(e) => Err(format!("socket mailbox: {e}")),
            }
        })
    }

    fn close(&self) {
        self.socket.do_send(Close::Graceful);
    }

    fn check(&self) -> Res<()> {
        first_error(&self.errors)
    }
}

/// Producers write through a `Writer`; every [`Plan::ack_every`]-th write is a
/// `write_answered` whose answer is awaited later.
struct WriterEp {
    socket: Addr<Socket>,
    writer: Writer,
    errors: Rc<RefCell<Vec<String>>>,
}

impl Endpoint for WriterEp {
    fn clone_ep(&self) -> Box<dyn Endpoint> {
        Box::new(WriterEp {
            socket: self.socket.clone(),
            writer: self.writer.clone(),
            errors: self.errors.clone(),
        })
    }

    fn post(&self, msg: Bytes) {
        if let Err(e) = self.writer.write(msg) {
            self.errors.borrow_mut().push(format!("write refused: {e}"));
        }
    }

    fn post_acked(&self, msg: Bytes) -> BoxFut<Res<()>> {
        let answer = self.writer.write_answered(msg);
        Box::pin(async move {
            answer
                .await
                .map(|_| ())
                .map_err(|e| format!("write failed: {e}"))
        })
    }

    fn close(&self) {
        self.socket.do_send(Close::Graceful);
    }

    fn check(&self) -> Res<()> {
        first_error(&self.errors)
    }
}

fn first_error(errors: &RefCell<Vec<String>>) -> Res<()> {
    match errors.borrow().first() {
        Some(e) => Err(format!(
            "{e} ({} socket errors in all)",
            errors.borrow().len()
        )),
        None => Ok(()),
    }
}

/// Subscriber of the streaming and idle sockets: anything but silence is an error.
struct Watch(Rc<RefCell<Vec<String>>>);

impl Actor for Watch {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for Watch {
    type Result = ();

    fn handle(&mut self, event: SocketEvent, _: &mut Context<Self>) {
        let problem = match event.kind {
            SocketEventKind::WriteFailed { error, .. } => format!("write failed: {error}"),
            SocketEventKind::ReadFailed(e) => format!("read failed: {e}"),
            SocketEventKind::Closed { cause: Some(e) } => format!("closed by: {e}"),
            SocketEventKind::Received(b) => format!("{} unexpected bytes received", b.len()),
            _ => return,
        };
        self.0.borrow_mut().push(problem);
    }
}

/// A transport that accepts every byte at once and never has anything to read, counting
/// what it accepted: (f) for sockactor.
struct NullTransport {
    bytes: Rc<Cell<u64>>,
    next: u64,
}

impl Actor for NullTransport {
    type Context = Context<Self>;
}

impl Handler<OpenSocket> for NullTransport {
    type Result = Result<Handle, TransportError>;

    fn handle(&mut self, _: OpenSocket, _: &mut Context<Self>) -> Self::Result {
        self.next += 1;
        Ok(Handle(self.next))
    }
}

impl Handler<Connect> for NullTransport {
    type Result = Result<(), TransportError>;

    fn handle(&mut self, _: Connect, _: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}

impl Handler<SendV> for NullTransport {
    type Result = Result<Sent, TransportError>;

    fn handle(&mut self, msg: SendV, _: &mut Context<Self>) -> Self::Result {
        let n = msg.len();
        self.bytes.set(self.bytes.get() + n as u64);
        Ok(Sent::Accepted(n))
    }
}

impl Handler<RecvFrom> for NullTransport {
    type Result = Result<Received, TransportError>;

    fn handle(&mut self, _: RecvFrom, _: &mut Context<Self>) -> Self::Result {
        Ok(Received::WouldBlock)
    }
}

impl Handler<CloseSocket> for NullTransport {
    type Result = Result<(), TransportError>;

    fn handle(&mut self, _: CloseSocket, _: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}

/// (d) for sockactor: the socket's subscriber, writing the next ping when the echo is in.
struct Pinger {
    socket: Addr<Socket>,
    writer: Option<Writer>,
    state: PingState,
}

impl Pinger {
    fn ping(&mut self, msg: Bytes) {
        match &self.writer {
            Some(w) => {
                if let Err(e) = w.write(msg) {
                    self.state.fail(format!("write refused: {e}"));
                }
            }
            None => self.socket.do_send(Write::new(msg)),
        }
    }
}

impl Actor for Pinger {
    type Context = Context<Self>;
}

impl Handler<StartPing> for Pinger {
    type Result = ();

    fn handle(&mut self, _: StartPing, _: &mut Context<Self>) {
        let first = self.state.start();
        self.ping(first);
    }
}

impl Handler<SocketEvent> for Pinger {
    type Result = ();

    fn handle(&mut self, event: SocketEvent, _: &mut Context<Self>) {
        match event.kind {
            SocketEventKind::Received(bytes) => {
                if let Some(next) = self.state.on_bytes(bytes.len()) {
                    self.ping(next);
                }
            }
            SocketEventKind::Eof => self.state.fail("EOF before the last echo".into()),
            SocketEventKind::WriteFailed { error, .. } => {
                self.state.fail(format!("write failed: {error}"))
            }
            SocketEventKind::ReadFailed(e) => self.state.fail(format!("read failed: {e}")),
            SocketEventKind::Closed { cause } => self
                .state
                .fail(format!("closed before the last echo ({cause:?})")),
            _ => {}
        }
    }
}

// ───────────────────────────── actix-framedwrite ─────────────────────────────

type DynWrite = Box<dyn AsyncWrite + Unpin>;

fn actix_framedwrite(job: Job) -> BoxFut<Res<Outcome>> {
    Box::pin(async move {
        match job.kind {
            Kind::Stream { .. } => {
                stream(job, ProducerKind::Actor, |sink| {
                    Box::pin(async move {
                        let error = Rc::new(RefCell::new(None));
                        let w: DynWrite = match sink {
                            Sink::Tcp(addr) => Box::new(Writev(connect(addr).await?)),
                            Sink::Null(bytes) => counted_sink(bytes),
                        };
                        let e = error.clone();
                        let actor = FwActor::create(move |ctx| FwActor::new(w, e, None, ctx));
                        Ok(Box::new(FwEp { actor, error }) as Box<dyn Endpoint>)
                    })
                })
                .await
            }
            Kind::PingPong => {
                ping_pong(job, move |addr| {
                    Box::pin(async move {
                        let (done, finished) = oneshot::channel();
                        let (rd, wr) = connect(addr).await?.into_split();
                        let error = Rc::new(RefCell::new(None));
                        let e = error.clone();
                        let state = PingState::new(job, done);
                        let actor = FwActor::create(move |ctx| {
                            ctx.add_stream(FramedRead::new(rd, BytesCodec::new()));
                            FwActor::new(Box::new(Writev(wr)), e, Some(state), ctx)
                        });
                        let go: Go = Box::new(move || {
                            Box::pin(async move {
                                actor.do_send(StartPing);
                                let latencies = finished.await.map_err(|_| "actor vanished")?;
                                actor.do_send(CloseFw);
                                if let Some(e) = error.borrow().clone() {
                                    return Err(e);
                                }
                                latencies
                            })
                        });
                        Ok(go)
                    })
                })
                .await
            }
            Kind::ReqResp | Kind::Datagrams | Kind::DatagramsIn { .. } => Err(
                "(g), (h) and (i) are measured for sockactor and the tokio baseline only".into(),
            ),
            Kind::Idle => {
                idle(job, |addr| {
                    Box::pin(async move {
                        let (rd, wr) = connect(addr).await?.into_split();
                        let error = Rc::new(RefCell::new(None));
                        let actor = FwActor::create(move |ctx| {
                            ctx.add_stream(FramedRead::new(rd, BytesCodec::new()));
                            FwActor::new(Box::new(Writev(wr)), error, None, ctx)
                        });
                        Ok(Box::new(actor) as Held)
                    })
                })
                .await
            }
        }
    })
}

/// An actor owning `actix::io::FramedWrite` (and, for ping-pong and idle connections, a
/// `FramedRead` stream of the read half).
struct FwActor {
    fw: actix::io::FramedWrite<Bytes, DynWrite, BytesCodec>,
    error: Rc<RefCell<Option<String>>>,
    ping: Option<PingState>,
}

impl FwActor {
    fn new(
        w: DynWrite,
        error: Rc<RefCell<Option<String>>>,
        ping: Option<PingState>,
        ctx: &mut Context<Self>,
    ) -> Self {
        FwActor {
            fw: actix::io::FramedWrite::new(w, BytesCodec::new(), ctx),
            error,
            ping,
        }
    }
}

impl Actor for FwActor {
    type Context = Context<Self>;
}

impl actix::io::WriteHandler<io::Error> for FwActor {
    fn error(&mut self, e: io::Error, _: &mut Context<Self>) -> Running {
        self.error.borrow_mut().get_or_insert(format!("write: {e}"));
        Running::Stop
    }
}

struct Frame(Bytes);

impl Message for Frame {
    type Result = ();
}

impl Handler<Frame> for FwActor {
    type Result = ();

    fn handle(&mut self, msg: Frame, _: &mut Context<Self>) {
        self.fw.write(msg.0);
    }
}

struct CloseFw;

impl Message for CloseFw {
    type Result = ();
}

impl Handler<CloseFw> for FwActor {
    type Result = ();

    fn handle(&mut self, _: CloseFw, _: &mut Context<Self>) {
        self.fw.close();
    }
}

impl Handler<StartPing> for FwActor {
    type Result = ();

    fn handle(&mut self, _: StartPing, _: &mut Context<Self>) {
        if let Some(ping) = &mut self.ping {
            let first = ping.start();
            self.fw.write(first);
        }
    }
}

impl StreamHandler<Result<BytesMut, io::Error>> for FwActor {
    fn handle(&mut self, item: Result<BytesMut, io::Error>, _: &mut Context<Self>) {
        match (item, &mut self.ping) {
            (Ok(bytes), Some(ping)) => {
                if let Some(next) = ping.on_bytes(bytes.len()) {
                    self.fw.write(next);
                }
            }
            (Ok(bytes), None) => {
                let e = format!("{} unexpected bytes received", bytes.len());
                self.error.borrow_mut().get_or_insert(e);
            }
            (Err(e), ping) => {
                let e = format!("read: {e}");
                if let Some(ping) = ping {
                    ping.fail(e.clone());
                }
                self.error.borrow_mut().get_or_insert(e);
            }
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        if let Some(ping) = &mut self.ping {
            ping.fail("EOF before the last echo".into());
        }
    }
}

/// Producers `do_send` frames; the acknowledged ones are `send`s, answered once the actor
/// has handled (buffered) the frame.
struct FwEp {
    actor: Addr<FwActor>,
    error: Rc<RefCell<Option<String>>>,
}

impl Endpoint for FwEp {
    fn clone_ep(&self) -> Box<dyn Endpoint> {
        Box::new(FwEp {
            actor: self.actor.clone(),
            error: self.error.clone(),
        })
    }

    fn post(&self, msg: Bytes) {
        self.actor.do_send(Frame(msg));
    }

    fn post_acked(&self, msg: Bytes) -> BoxFut<Res<()>> {
        let answer = self.actor.send(Frame(msg));
        Box::pin(async move { answer.await.map_err(|e| format!("writer mailbox: {e}")) })
    }

    fn close(&self) {
        self.actor.do_send(CloseFw);
    }

    fn check(&self) -> Res<()> {
        match self.error.borrow().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

// ───────────────────── channel senders: naive, ceiling, tokio-util ─────────────────────

/// A message for a writer task; `ack` is answered once its bytes are written.
struct Msg {
    bytes: Bytes,
    ack: Option<oneshot::Sender<()>>,
}

type WriterFn = fn(UnboundedReceiver<Msg>, DynWrite) -> BoxFut<io::Result<()>>;

/// A tokio writer task fed by an unbounded channel, with tokio-task producers: a real
/// socket, or the given no-syscall writer for (f).
fn channel_sender(
    job: Job,
    writer: WriterFn,
    null_writer: fn(Rc<Cell<u64>>) -> DynWrite,
) -> BoxFut<Res<Outcome>> {
    Box::pin(async move {
        match job.kind {
            Kind::Stream { .. } => {
                stream(job, ProducerKind::Task, move |sink| {
                    Box::pin(async move {
                        let w = match sink {
                            Sink::Tcp(addr) => Box::new(Writev(connect(addr).await?)),
                            Sink::Null(bytes) => null_writer(bytes),
                        };
                        Ok(Box::new(ChanEp::spawn(writer, w)) as Box<dyn Endpoint>)
                    })
                })
                .await
            }
            Kind::PingPong => {
                ping_pong(job, move |addr| {
                    Box::pin(async move {
                        let (mut rd, wr) = connect(addr).await?.into_split();
                        let ep = ChanEp::spawn(writer, Box::new(Writev(wr)));
                        let go: Go = Box::new(move || {
                            Box::pin(async move {
                                let mut latencies = Vec::with_capacity(job.count);
                                let mut echo = vec![0u8; job.size];
                                for _ in 0..job.count {
                                    let sent = Instant::now();
                                    ep.post(payload(job.size));
                                    rd.read_exact(&mut echo).await.map_err(err("read"))?;
                                    latencies.push(sent.elapsed().as_nanos() as u64);
                                }
                                ep.close();
                                ep.check()?;
                                Ok(latencies)
                            })
                        });
                        Ok(go)
                    })
                })
                .await
            }
            Kind::ReqResp | Kind::Datagrams | Kind::DatagramsIn { .. } => Err(
                "(g), (h) and (i) are measured for sockactor and the tokio baseline only".into(),
            ),
            Kind::Idle => {
                // A bare tokio task holding the stream, waiting for it to become readable.
                idle(job, |addr| {
                    Box::pin(async move {
                        let stream = connect(addr).await?;
                        let task = actix::spawn(async move {
                            let mut byte = [0u8; 1];
                            while stream.readable().await.is_ok() {
                                match stream.try_read(&mut byte) {
                                    Ok(0) => break,
                                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => break,
                                    _ => {}
                                }
                            }
                        });
                        Ok(Box::new(task) as Held)
                    })
                })
                .await
            }
        }
    })
}

struct ChanEp {
    tx: RefCell<Option<UnboundedSender<Msg>>>,
    error: Rc<RefCell<Option<String>>>,
}

impl ChanEp {
    fn spawn(writer: WriterFn, w: DynWrite) -> ChanEp {
        let (tx, rx) = unbounded_channel();
        let error = Rc::new(RefCell::new(None));
        let e = error.clone();
        actix::spawn(async move {
            if let Err(problem) = writer(rx, w).await {
                *e.borrow_mut() = Some(format!("writer: {problem}"));
            }
        });
        ChanEp {
            tx: RefCell::new(Some(tx)),
            error,
        }
    }

    fn push(&self, msg: Msg) {
        if let Some(tx) = &*self.tx.borrow() {
            // A writer that stopped has recorded why; its missing bytes fail the run.
            let _ = tx.send(msg);
        }
    }
}

impl Endpoint for ChanEp {
    fn clone_ep(&self) -> Box<dyn Endpoint> {
        Box::new(ChanEp {
            tx: RefCell::new(self.tx.borrow().clone()),
            error: self.error.clone(),
        })
    }

    fn post(&self, bytes: Bytes) {
        self.push(Msg { bytes, ack: None });
    }

    fn post_acked(&self, bytes: Bytes) -> BoxFut<Res<()>> {
        let (ack, written) = oneshot::channel();
        self.push(Msg {
            bytes,
            ack: Some(ack),
        });
        let error = self.error.clone();
        Box::pin(async move {
            written.await.map_err(|_| {
                let why = error.borrow().clone();
                why.unwrap_or_else(|| "writer task ended".into())
            })
        })
    }

    fn close(&self) {
        self.tx.borrow_mut().take();
    }

    fn check(&self) -> Res<()> {
        match self.error.borrow().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn answer_acks(acks: &mut Vec<oneshot::Sender<()>>) {
    for ack in acks.drain(..) {
        let _ = ack.send(());
    }
}

/// naive: one `write_all` per message.
async fn naive_writer(mut rx: UnboundedReceiver<Msg>, mut w: DynWrite) -> io::Result<()> {
    while let Some(msg) = rx.recv().await {
        w.write_all(&msg.bytes).await?;
        if let Some(ack) = msg.ack {
            let _ = ack.send(());
        }
    }
    w.shutdown().await
}

/// ceiling: gather what the channel holds (at most `IOV_MAX` messages) and write it with
/// vectored writes until all of it is out; then gather again.
async fn ceiling_writer(mut rx: UnboundedReceiver<Msg>, mut w: DynWrite) -> io::Result<()> {
    let mut batch: Vec<Bytes> = Vec::with_capacity(IOV_MAX);
    let mut acks = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next {
            batch.push(msg.bytes);
            acks.extend(msg.ack);
            next = if batch.len() < IOV_MAX {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        write_all_vectored(&mut w, &batch).await?;
        batch.clear();
        answer_acks(&mut acks);
    }
    w.shutdown().await
}

async fn write_all_vectored(w: &mut DynWrite, segments: &[Bytes]) -> io::Result<()> {
    let (mut seg, mut off) = (0, 0);
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(segments.len());
    while seg < segments.len() {
        slices.clear();
        slices.push(IoSlice::new(&segments[seg][off..]));
        slices.extend(segments[seg + 1..].iter().map(|s| IoSlice::new(s)));
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let left = segments[seg].len() - off;
            if n < left {
                off += n;
                break;
            }
            n -= left;
            seg += 1;
            off = 0;
        }
    }
    Ok(())
}

/// tokio-util-framed: `feed` per message, `flush` when the channel is empty.
async fn framed_writer(mut rx: UnboundedReceiver<Msg>, w: DynWrite) -> io::Result<()> {
    let mut framed = tokio_util::codec::FramedWrite::new(w, BytesCodec::new());
    let mut acks = Vec::new();
    while let Some(msg) = rx.recv().await {
        framed.feed(msg.bytes).await?;
        acks.extend(msg.ack);
        while let Ok(msg) = rx.try_recv() {
            framed.feed(msg.bytes).await?;
            acks.extend(msg.ack);
        }
        SinkExt::<Bytes>::flush(&mut framed).await?;
        answer_acks(&mut acks);
    }
    SinkExt::<Bytes>::close(&mut framed).await
}

// ───────────────────────────── byte sinks ─────────────────────────────

async fn connect(addr: SocketAddr) -> Res<TcpStream> {
    let stream = TcpStream::connect(addr).await.map_err(err("connect"))?;
    stream.set_nodelay(true).map_err(err("TCP_NODELAY"))?;
    Ok(stream)
}

/// Turns every write into `writev(2)`: `syscw` in /proc/self/io counts write(2) and
/// writev(2) but not send(2), which tokio's `poll_write` on a TCP stream uses.
struct Writev<W>(W);

impl<W: AsyncWrite + Unpin> AsyncWrite for Writev<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// `tokio::io::sink()`, counting the bytes it swallows: (f) for naive and the framed
/// senders.
fn counted_sink(bytes: Rc<Cell<u64>>) -> DynWrite {
    Box::new(Counted {
        inner: tokio::io::sink(),
        bytes,
    })
}

struct Counted<W> {
    inner: W,
    bytes: Rc<Cell<u64>>,
}

impl<W: AsyncWrite + Unpin> Counted<W> {
    fn count(&self, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = r {
            self.bytes.set(self.bytes.get() + n as u64);
        }
        r
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.count(r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.count(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A vectored writer that takes every byte offered and counts it: (f) for the ceiling.
struct VectoredCounter(Rc<Cell<u64>>);

impl AsyncWrite for VectoredCounter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.set(self.0.get() + buf.len() as u64);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n: usize = bufs.iter().map(|b| b.len()).sum();
        self.0.set(self.0.get() + n as u64);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

// ───────────────────────────── producers ─────────────────────────────

/// What producers write to; one per producer (each holds its own address or channel
/// sender).
trait Endpoint {
    fn clone_ep(&self) -> Box<dyn Endpoint>;
    /// Fire and forget.
    fn post(&self, msg: Bytes);
    /// Completes when the sender has taken the message: written to the transport for
    /// sockactor and the channel senders, handled (buffered) for actix-framedwrite.
    fn post_acked(&self, msg: Bytes) -> BoxFut<Res<()>>;
    /// Finish writing what was posted, then close.
    fn close(&self);
    /// Errors the sender saw on its own.
    fn check(&self) -> Res<()>;
}

/// How producers are held back, the same for every sender in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum Flow {
    /// Messages in flight: see [`Plan`].
    #[default]
    Messages,
    /// A byte window shared by all producers ([`WINDOW_BYTES`]): a producer takes a
    /// message's bytes from it before sending, sends fire-and-forget, asks for an answer
    /// every [`ACK_BYTES`] (that answer gives the bytes back) and yields every
    /// [`YIELD_EVERY`] messages. `Writer` producers are tokio tasks here.
    Bytes,
}

impl Flow {
    fn key(self) -> &'static str {
        match self {
            Flow::Messages => "messages",
            Flow::Bytes => "bytes",
        }
    }

    fn parse(s: &str) -> Option<Flow> {
        match s {
            "messages" => Some(Flow::Messages),
            "bytes" => Some(Flow::Bytes),
            _ => None,
        }
    }
}

/// The byte window of [`Flow::Bytes`], shared by a run's producers (one thread).
#[derive(Debug)]
struct ByteWindow {
    free: Cell<usize>,
    room: tokio::sync::Notify,
}

impl ByteWindow {
    fn new() -> Rc<ByteWindow> {
        Rc::new(ByteWindow {
            free: Cell::new(WINDOW_BYTES),
            room: tokio::sync::Notify::new(),
        })
    }

    fn try_take(&self, n: usize) -> bool {
        let free = self.free.get();
        let ok = free >= n;
        if ok {
            self.free.set(free - n);
        }
        ok
    }

    async fn take(&self, n: usize) {
        while !self.try_take(n) {
            self.room.notified().await;
        }
    }

    fn give(&self, n: usize) {
        self.free.set(self.free.get() + n);
        self.room.notify_waiters();
    }
}

/// Flow control, the same for every sender: each producer acknowledges every
/// `ack_every`-th message and has at most `window` acknowledgements outstanding, so a run
/// has at most [`IN_FLIGHT`] unacknowledged messages (within sockactor's waiting-write
/// bound, so `wait_when_full` writes are never refused, and every byte is delivered).
#[derive(Clone, Copy, Debug)]
struct Plan {
    ack_every: usize,
    window: usize,
    yield_each: bool,
    size: usize,
    flow: Flow,
}

impl Plan {
    fn new(job: Job) -> Plan {
        Plan {
            ack_every: (IN_FLIGHT / job.producers.max(1) / ACK_WINDOW).max(1),
            window: ACK_WINDOW,
            yield_each: job.yield_each,
            size: job.size,
            flow: job.flow,
        }
    }

    /// Whether the producer yields after its `produced`-th message.
    fn yields_after(&self, produced: usize) -> bool {
        match self.flow {
            Flow::Messages => self.yield_each,
            Flow::Bytes => self.yield_each || produced.is_multiple_of(YIELD_EVERY),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum ProducerKind {
    /// actix actors (sockactor, actix-framedwrite).
    Actor,
    /// tokio tasks (the channel senders).
    Task,
}

struct ActorProducer {
    ep: Box<dyn Endpoint>,
    plan: Plan,
    left: usize,
    produced: usize,
    outstanding: usize,
    yielding: bool,
    error: Option<String>,
    done: Option<oneshot::Sender<Res<()>>>,
    /// [`Flow::Bytes`]: the shared window, the bytes sent since the last acknowledged
    /// message, and whether the producer waits for room.
    bytes: Rc<ByteWindow>,
    since_ack: usize,
    waiting: bool,
}

impl Actor for ActorProducer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.pump(ctx);
    }
}

impl ActorProducer {
    fn pump(&mut self, ctx: &mut Context<Self>) {
        match self.plan.flow {
            Flow::Messages => self.pump_messages(ctx),
            Flow::Bytes => self.pump_bytes(ctx),
        }
    }

    fn pump_bytes(&mut self, ctx: &mut Context<Self>) {
        while self.left > 0 && self.error.is_none() && !self.waiting && !self.yielding {
            let size = self.plan.size;
            if !self.bytes.try_take(size) {
                self.waiting = true;
                let window = self.bytes.clone();
                let room = async move { window.take(size).await }.into_actor(self);
                ctx.spawn(room.map(|(), act, ctx| {
                    act.waiting = false;
                    act.send_one(ctx);
                    act.pump(ctx);
                }));
                return;
            }
            self.send_one(ctx);
        }
        self.finish(ctx);
    }

    /// Sends one message whose bytes were taken from the window.
    fn send_one(&mut self, ctx: &mut Context<Self>) {
        let size = self.plan.size;
        let msg = payload(size);
        self.left -= 1;
        self.produced += 1;
        self.since_ack += size;
        if self.since_ack >= ACK_BYTES || self.left == 0 {
            let returned = std::mem::take(&mut self.since_ack);
            self.outstanding += 1;
            let acked = self.ep.post_acked(msg).into_actor(self);
            ctx.spawn(acked.map(move |result, act, ctx| {
                act.outstanding -= 1;
                act.bytes.give(returned);
                if let Err(e) = result {
                    act.error.get_or_insert(e);
                }
                if !act.yielding && !act.waiting {
                    act.pump(ctx);
                }
            }));
        } else {
            self.ep.post(msg);
        }
        if self.left > 0 && self.plan.yields_after(self.produced) {
            self.yielding = true;
            let yielded = tokio::task::yield_now().into_actor(self);
            ctx.spawn(yielded.map(|_, act, ctx| {
                act.yielding = false;
                if !act.waiting {
                    act.pump(ctx);
                }
            }));
        }
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        if self.outstanding == 0 && (self.left == 0 || self.error.is_some()) {
            if let Some(done) = self.done.take() {
                let _ = done.send(self.error.take().map_or(Ok(()), Err));
                ctx.stop();
            }
        }
    }

    fn pump_messages(&mut self, ctx: &mut Context<Self>) {
        while self.left > 0 && self.outstanding < self.plan.window && self.error.is_none() {
            let msg = payload(self.plan.size);
            self.left -= 1;
            self.produced += 1;
            if self.produced.is_multiple_of(self.plan.ack_every) || self.left == 0 {
                self.outstanding += 1;
                let acked = self.ep.post_acked(msg).into_actor(self);
                ctx.spawn(acked.map(|result, act, ctx| {
                    act.outstanding -= 1;
                    if let Err(e) = result {
                        act.error.get_or_insert(e);
                    }
                    if !act.yielding {
                        act.pump(ctx);
                    }
                }));
            } else {
                self.ep.post(msg);
            }
            if self.plan.yield_each && self.left > 0 {
                // A real yield to the runtime (ctx.notify would be handled in the same poll).
                self.yielding = true;
                let yielded = tokio::task::yield_now().into_actor(self);
                ctx.spawn(yielded.map(|_, act, ctx| {
                    act.yielding = false;
                    act.pump(ctx);
                }));
                return;
            }
        }
        if self.outstanding == 0 && (self.left == 0 || self.error.is_some()) {
            if let Some(done) = self.done.take() {
                let _ = done.send(self.error.take().map_or(Ok(()), Err));
                ctx.stop();
            }
        }
    }
}

async fn task_producer(
    ep: Box<dyn Endpoint>,
    n: usize,
    plan: Plan,
    window: Rc<ByteWindow>,
) -> Res<()> {
    if plan.flow == Flow::Bytes {
        return task_producer_bytes(ep, n, plan, window).await;
    }
    let mut acks: VecDeque<BoxFut<Res<()>>> = VecDeque::with_capacity(plan.window);
    for i in 1..=n {
        if acks.len() == plan.window {
            acks.pop_front().expect("window").await?;
        }
        let msg = payload(plan.size);
        if i % plan.ack_every == 0 || i == n {
            acks.push_back(ep.post_acked(msg));
        } else {
            ep.post(msg);
        }
        if plan.yield_each {
            tokio::task::yield_now().await;
        }
    }
    for ack in acks {
        ack.await?;
    }
    Ok(())
}

/// A task producer under [`Flow::Bytes`].
async fn task_producer_bytes(
    ep: Box<dyn Endpoint>,
    n: usize,
    plan: Plan,
    window: Rc<ByteWindow>,
) -> Res<()> {
    let mut acks = Vec::new();
    let mut since_ack = 0;
    for i in 1..=n {
        window.take(plan.size).await;
        let msg = payload(plan.size);
        since_ack += plan.size;
        if since_ack >= ACK_BYTES || i == n {
            let returned = std::mem::take(&mut since_ack);
            let ack = ep.post_acked(msg);
            let window = window.clone();
            acks.push(actix::spawn(async move {
                let result = ack.await;
                window.give(returned);
                result
            }));
        } else {
            ep.post(msg);
        }
        if i < n && plan.yields_after(i) {
            tokio::task::yield_now().await;
        }
    }
    for ack in acks {
        ack.await.map_err(|e| format!("ack task: {e}"))??;
    }
    Ok(())
}

// ───────────────────────────── harnesses ─────────────────────────────

/// Where a streaming sender writes.
enum Sink {
    Tcp(SocketAddr),
    /// No socket: accept everything, counting into this.
    Null(Rc<Cell<u64>>),
}

/// What a sender measured; one `RESULT` line.
#[derive(Clone, Debug, Default)]
struct Outcome {
    msgs: u64,
    bytes: u64,
    secs: f64,
    syscw: Option<u64>,
    cpu_ns: u64,
    hwm_kb: Option<u64>,
    p50_ns: Option<u64>,
    p99_ns: Option<u64>,
    conn_bytes: Option<f64>,
    malloc: String,
}

/// Workloads (a), (b), (b1), (c), (f).
async fn stream(
    job: Job,
    producers: ProducerKind,
    open: impl FnOnce(Sink) -> BoxFut<Res<Box<dyn Endpoint>>>,
) -> Res<Outcome> {
    let Kind::Stream { null } = job.kind else {
        return Err("not a streaming workload".into());
    };
    let expected = (job.count * job.size) as u64;
    let counted = Rc::new(Cell::new(0u64));
    let (sink, mut receiver) = if null {
        (Sink::Null(counted.clone()), None)
    } else {
        let listener = StdListener::bind("127.0.0.1:0").map_err(err("bind"))?;
        let addr = listener.local_addr().map_err(err("local_addr"))?;
        (
            Sink::Tcp(addr),
            Some(Peer::spawn(listener, expected, false, job.inflate)),
        )
    };
    let ep = open(sink).await?;
    let plan = Plan::new(job);
    let window = ByteWindow::new();

    let (w0, c0, t0) = (syscw(), process_cpu_ns(), Instant::now());
    let mut done = Vec::new();
    for p in 0..job.producers {
        let n = job.count / job.producers + usize::from(p < job.count % job.producers);
        let (tx, rx) = oneshot::channel();
        match producers {
            ProducerKind::Actor => {
                ActorProducer {
                    ep: ep.clone_ep(),
                    plan,
                    left: n,
                    produced: 0,
                    outstanding: 0,
                    yielding: false,
                    error: None,
                    done: Some(tx),
                    bytes: window.clone(),
                    since_ack: 0,
                    waiting: false,
                }
                .start();
            }
            ProducerKind::Task => {
                let ep = ep.clone_ep();
                let window = window.clone();
                actix::spawn(async move {
                    let _ = tx.send(task_producer(ep, n, plan, window).await);
                });
            }
        }
        done.push(rx);
    }
    let produced = async {
        for rx in done {
            rx.await.map_err(|_| "a producer vanished".to_string())??;
        }
        Ok::<_, String>(())
    };
    within("producing", produced).await??;
    let end = match &mut receiver {
        Some(peer) => within("receiving", peer.all_in()).await??,
        None => {
            let drained = async {
                while counted.get() < expected {
                    tokio::task::yield_now().await;
                }
            };
            within("draining", drained).await?;
            Instant::now()
        }
    };
    let (w1, c1) = (syscw(), process_cpu_ns());
    ep.check()?;
    ep.close();
    drop(ep);
    let got = match receiver {
        Some(peer) => within("closing", peer.finished()).await??,
        None => counted.get(),
    };
    if got != expected {
        return Err(format!(
            "BYTES MISSING: sent {expected} bytes, {got} arrived"
        ));
    }
    Ok(Outcome {
        msgs: job.count as u64,
        bytes: expected,
        secs: (end - t0).as_secs_f64(),
        syscw: w0.zip(w1).map(|(a, b)| b - a),
        cpu_ns: c1 - c0,
        ..Outcome::default()
    })
}

/// Starts a ping-pong run: called after connecting, before the clock starts.
type Go = Box<dyn FnOnce() -> BoxFut<Res<Vec<u64>>>>;

/// Workload (d): `connect` sets up the sender against the echo peer; the clock runs while
/// its `Go` does the round trips (and closes the connection at the end).
async fn ping_pong(job: Job, connect: impl FnOnce(SocketAddr) -> BoxFut<Res<Go>>) -> Res<Outcome> {
    let listener = StdListener::bind("127.0.0.1:0").map_err(err("bind"))?;
    let addr = listener.local_addr().map_err(err("local_addr"))?;
    let expected = (job.count * job.size) as u64;
    let peer = Peer::spawn(listener, expected, true, false);
    let go = connect(addr).await?;
    let (w0, c0, t0) = (syscw(), process_cpu_ns(), Instant::now());
    let mut latencies = within("ping-pong", go()).await??;
    let secs = t0.elapsed().as_secs_f64();
    let (w1, c1) = (syscw(), process_cpu_ns());
    let echoed = within("closing", peer.finished()).await??;
    if echoed != expected || latencies.len() != job.count {
        return Err(format!(
            "BYTES MISSING: {} of {} round trips, echo peer saw {echoed} of {expected} bytes",
            latencies.len(),
            job.count
        ));
    }
    latencies.sort_unstable();
    let rank = |p: usize| latencies[(latencies.len() * p).div_ceil(100).max(1) - 1];
    Ok(Outcome {
        msgs: job.count as u64,
        bytes: expected,
        secs,
        syscw: w0.zip(w1).map(|(a, b)| b - a),
        cpu_ns: c1 - c0,
        p50_ns: Some(rank(50)),
        p99_ns: Some(rank(99)),
        ..Outcome::default()
    })
}

/// (g): how many requests may have been sent once `received` bytes of answers came:
/// those answered and [`REQ_IN_FLIGHT`] more, at most `job.count`.
fn window_end(job: &Job, received: usize) -> usize {
    job.count.min(received / job.size + REQ_IN_FLIGHT)
}

/// Workload (g): a client keeps [`REQ_IN_FLIGHT`] requests of `job.size` bytes
/// unanswered against an echo peer until `job.count` were answered.
async fn req_resp(job: Job, connect: impl FnOnce(SocketAddr) -> BoxFut<Res<Go>>) -> Res<Outcome> {
    let listener = StdListener::bind("127.0.0.1:0").map_err(err("bind"))?;
    let addr = listener.local_addr().map_err(err("local_addr"))?;
    let expected = (job.count * job.size) as u64;
    let peer = Peer::spawn(listener, expected, true, false);
    let go = connect(addr).await?;
    let (w0, c0, t0) = (syscw(), process_cpu_ns(), Instant::now());
    within("requests", go()).await??;
    let secs = t0.elapsed().as_secs_f64();
    let (w1, c1) = (syscw(), process_cpu_ns());
    let echoed = within("closing", peer.finished()).await??;
    if echoed != expected {
        return Err(format!(
            "BYTES MISSING: echo peer saw {echoed} of {expected} bytes"
        ));
    }
    Ok(Outcome {
        msgs: job.count as u64,
        bytes: expected,
        secs,
        syscw: w0.zip(w1).map(|(a, b)| b - a),
        cpu_ns: c1 - c0,
        ..Outcome::default()
    })
}

/// (g)'s baseline: one tokio task writing requests into a 64 KiB `BufWriter` (flushed
/// when the window is full or nothing more may go) and reading answers with a
/// `FramedRead`.
async fn tokio_requester(addr: SocketAddr, job: Job) -> Res<Go> {
    use futures_util::StreamExt;
    let (rd, wr) = connect(addr).await?.into_split();
    let go: Go = Box::new(move || {
        Box::pin(async move {
            let mut wr = tokio::io::BufWriter::with_capacity(64 * 1024, wr);
            let mut rd = FramedRead::new(rd, BytesCodec::new());
            let total = job.count * job.size;
            let (mut sent, mut received) = (0usize, 0usize);
            while received < total {
                let target = window_end(&job, received);
                if sent < target {
                    while sent < target {
                        wr.write_all(&payload(job.size))
                            .await
                            .map_err(err("write"))?;
                        sent += 1;
                    }
                    wr.flush().await.map_err(err("flush"))?;
                }
                match rd.next().await {
                    Some(Ok(chunk)) => received += chunk.len(),
                    Some(Err(e)) => return Err(format!("read: {e}")),
                    None => return Err("EOF before the last answer".into()),
                }
            }
            wr.shutdown().await.map_err(err("shutdown"))?;
            Ok(Vec::new())
        })
    });
    Ok(go)
}

/// (g) through sockactor's typed pair, as the tokio baseline is written: requests fed
/// to the `FramedWriter` `Sink` and flushed when the window is full (one write per
/// flush), answers counted from the `FrameStream`.
async fn sink_requester(addr: SocketAddr, job: Job) -> Res<Go> {
    use futures_util::SinkExt;
    let (mut tx, mut rx) = Socket::builder()
        .connect_framed(addr, BytesCodec::new())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let go: Go = Box::new(move || {
        Box::pin(async move {
            let total = job.count * job.size;
            let (mut sent, mut received) = (0usize, 0usize);
            while received < total {
                let target = window_end(&job, received);
                if sent < target {
                    while sent < target {
                        tx.feed(payload(job.size))
                            .await
                            .map_err(|e| format!("write: {e}"))?;
                        sent += 1;
                    }
                    SinkExt::<Bytes>::flush(&mut tx)
                        .await
                        .map_err(|e| format!("flush: {e}"))?;
                }
                match rx.next().await {
                    Some(Ok(chunk)) => received += chunk.len(),
                    Some(Err(e)) => return Err(format!("read: {e}")),
                    None => return Err("EOF before the last answer".into()),
                }
            }
            SinkExt::<Bytes>::close(&mut tx)
                .await
                .map_err(|e| format!("close: {e}"))?;
            Ok(Vec::new())
        })
    });
    Ok(go)
}

/// Starts a [`Requester`].
#[derive(Clone, Copy, Debug)]
struct StartRequests;

impl Message for StartRequests {
    type Result = ();
}

/// (g) over a sockactor socket: an actor that keeps the window full, writing through a
/// `Writer` or with `Write` messages, and counts the echoed bytes it is delivered.
struct Requester {
    socket: Addr<Socket>,
    writer: Option<Writer>,
    job: Job,
    sent: usize,
    received: usize,
    done: Option<oneshot::Sender<Res<()>>>,
}

impl Requester {
    /// Sends requests until the window is full: through a `Writer`, all of them in one
    /// `write_each` (each its own write); else one `Write` message each.
    fn fill(&mut self) {
        let target = window_end(&self.job, self.received);
        let more = target.saturating_sub(self.sent);
        if more == 0 {
            return;
        }
        match &self.writer {
            Some(w) => {
                let writes = (0..more).map(|_| payload(self.job.size).into()).collect();
                if let Err(e) = w.write_each(writes) {
                    return self.end(Err(format!("writes refused: {e}")));
                }
            }
            None => {
                for _ in 0..more {
                    self.socket.do_send(Write::new(payload(self.job.size)));
                }
            }
        }
        self.sent = target;
    }

    fn end(&mut self, result: Res<()>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
    }
}

impl Actor for Requester {
    type Context = Context<Self>;
}

impl Handler<StartRequests> for Requester {
    type Result = ();

    fn handle(&mut self, _: StartRequests, _: &mut Context<Self>) {
        self.fill();
    }
}

impl Handler<SocketEvent> for Requester {
    type Result = ();

    fn handle(&mut self, event: SocketEvent, _: &mut Context<Self>) {
        match event.kind {
            SocketEventKind::Received(bytes) => {
                self.received += bytes.len();
                if self.received >= self.job.count * self.job.size {
                    self.end(Ok(()));
                } else {
                    self.fill();
                }
            }
            SocketEventKind::Eof => self.end(Err("EOF before the last answer".into())),
            SocketEventKind::WriteFailed { error, .. } => {
                self.end(Err(format!("write failed: {error}")))
            }
            SocketEventKind::ReadFailed(e) => self.end(Err(format!("read failed: {e}"))),
            SocketEventKind::Closed { cause } => {
                self.end(Err(format!("closed before the last answer ({cause:?})")))
            }
            _ => {}
        }
    }
}

async fn sock_requester(addr: SocketAddr, job: Job, mode: Mode) -> Res<Go> {
    let (done, finished) = oneshot::channel();
    let ctx = Context::<Requester>::new();
    let socket = sock_builder(mode)
        .subscriber(ctx.address().recipient())
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let writer = if mode.uses_writer() {
        Some(
            socket
                .send(GetWriter)
                .await
                .map_err(|e| format!("writer: {e}"))?,
        )
    } else {
        None
    };
    let requester = ctx.run(Requester {
        socket: socket.clone(),
        writer,
        job,
        sent: 0,
        received: 0,
        done: Some(done),
    });
    let go: Go = Box::new(move || {
        Box::pin(async move {
            requester.do_send(StartRequests);
            finished.await.map_err(|_| "requester vanished")??;
            socket.do_send(Close::Graceful);
            Ok(Vec::new())
        })
    });
    Ok(go)
}

/// Workload (h): `job.count` datagrams of `job.size` bytes sent over loopback UDP as fast
/// as the sender goes; the receiver thread counts what arrives (a datagram the kernel
/// drops is reported, not an error: the measure is the sender's).
async fn datagrams(job: Job, send: impl FnOnce(SocketAddr) -> BoxFut<Res<Go>>) -> Res<Outcome> {
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").map_err(err("bind"))?;
    let to = receiver.local_addr().map_err(err("local_addr"))?;
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(err("timeout"))?;
    let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = {
        let counted = counted.clone();
        std::thread::spawn(move || {
            pin_to_cpu(1);
            let mut buf = [0u8; 2048];
            while receiver.recv(&mut buf).is_ok() {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let go = send(to).await?;
    let (w0, c0, t0) = (syscw(), process_cpu_ns(), Instant::now());
    within("sending", go()).await??;
    let secs = t0.elapsed().as_secs_f64();
    let (w1, c1) = (syscw(), process_cpu_ns());
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    let received = counted.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "(h): {received} of {} datagrams received ({:.1} % dropped by the kernel)",
        job.count,
        100.0 * (1.0 - received as f64 / job.count as f64)
    );
    Ok(Outcome {
        msgs: job.count as u64,
        bytes: (job.count * job.size) as u64,
        secs,
        syscw: w0.zip(w1).map(|(a, b)| b - a),
        cpu_ns: c1 - c0,
        ..Outcome::default()
    })
}

/// (h)'s baseline: a tokio `UdpSocket` sending in a loop, one `send_to` each.
async fn tokio_datagrams(to: SocketAddr, job: Job) -> Res<Go> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(err("bind"))?;
    let go: Go = Box::new(move || {
        Box::pin(async move {
            for _ in 0..job.count {
                socket
                    .send_to(&payload(job.size), to)
                    .await
                    .map_err(err("send_to"))?;
            }
            Ok(Vec::new())
        })
    });
    Ok(go)
}

/// (h) through a `DatagramSocket`'s `DatagramWriter`, waiting for room when its queue is
/// full; done when the socket has answered every datagram.
/// Binds a datagram socket to a port of 127.0.0.1: its address and the port's.
async fn bind_loopback(
    builder: sockactor::DatagramBuilder,
) -> Res<(Addr<sockactor::DatagramSocket>, SocketAddr)> {
    let (socket, local) = builder
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| format!("bind: {e}"))?;
    match local {
        sockactor::messages::Address::Inet(addr) => Ok((socket, addr)),
        other => Err(format!("bound to {other:?}")),
    }
}

async fn sock_datagrams(to: SocketAddr, job: Job) -> Res<Go> {
    let offload = std::env::var_os(NO_OFFLOAD_ENV).is_none();
    let builder = sockactor::DatagramSocket::builder().config(sockactor::DatagramConfig {
        offload,
        ..sockactor::DatagramConfig::default()
    });
    let (socket, _) = bind_loopback(builder).await?;
    let writer = socket
        .send(sockactor::messages::GetDatagramWriter)
        .await
        .map_err(|e| format!("writer: {e}"))?;
    let go: Go = Box::new(move || {
        Box::pin(async move {
            for _ in 0..job.count {
                writer
                    .send_when_ready(payload(job.size), Some(to.into()))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
            }
            // The last ones leave: the writer's count of unanswered datagrams drains.
            while writer.queued() > 0 {
                tokio::task::yield_now().await;
            }
            let stats = socket
                .send(sockactor::messages::GetDatagramStats)
                .await
                .map_err(|e| format!("stats: {e}"))?;
            if stats.sent != job.count as u64 {
                return Err(format!(
                    "{} of {} datagrams sent ({} failed)",
                    stats.sent, job.count, stats.send_failed
                ));
            }
            Ok(Vec::new())
        })
    });
    Ok(go)
}

/// Set (to anything) to send (h)'s datagrams without UDP segmentation offload.
const NO_OFFLOAD_ENV: &str = "SOCKACTOR_BENCH_NO_OFFLOAD";

/// The offered rate of (i1), datagrams a second.
const PACED_RATE: u64 = 100_000;

/// A receiver of (i): binds, and answers its address and a `Go` that receives until the
/// end marker (a 1-byte datagram), counting the others in `counted`.
type Receiver = BoxFut<Res<(SocketAddr, Go)>>;

/// Workloads (i) and (i1): a sender thread (on the other CPU) sends `job.count`
/// datagrams of `job.size` bytes to the receiver, as fast as it goes or at the paced rate,
/// then 1-byte end markers until the receiver has seen one. Measured: the receiving
/// thread's CPU time per datagram received (the sender's is not counted), and datagrams
/// received a second; the kernel drops what a slow receiver leaves (reported).
async fn datagrams_in(
    job: Job,
    receiver: impl FnOnce(std::rc::Rc<Cell<u64>>) -> Receiver,
) -> Res<Outcome> {
    let Kind::DatagramsIn { rate } = job.kind else {
        return Err("not a datagram receive workload".into());
    };
    let counted = Rc::new(Cell::new(0u64));
    let (to, go) = receiver(counted.clone()).await?;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (start, started) = std::sync::mpsc::channel::<()>();
    let sender = {
        let done = done.clone();
        std::thread::Builder::new()
            .name("i-sender".into())
            .spawn(move || -> io::Result<()> {
                pin_to_cpu(1);
                let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
                socket.connect(to)?;
                let payload = vec![7u8; job.size.max(2)];
                let gap = rate.map(|r| Duration::from_secs_f64(1.0 / r as f64));
                let _ = started.recv();
                let t0 = Instant::now();
                for i in 0..job.count {
                    if let Some(gap) = gap {
                        let due = t0 + gap * i as u32;
                        while Instant::now() < due {
                            std::hint::spin_loop();
                        }
                    }
                    socket.send(&payload)?;
                }
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    socket.send(&[0])?;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Ok(())
            })
            .map_err(err("sender thread"))?
    };
    let (c0, t0) = (thread_cpu(), Instant::now());
    let _ = start.send(());
    within("receiving", go()).await??;
    let secs = t0.elapsed().as_secs_f64();
    let c1 = thread_cpu();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::task::spawn_blocking(move || sender.join())
        .await
        .map_err(|e| format!("sender: {e}"))?
        .map_err(|_| "sender panicked")?
        .map_err(err("send"))?;
    let received = counted.get();
    eprintln!(
        "(i): {received} of {} datagrams received ({:.1} % dropped by the kernel)",
        job.count,
        100.0 * (1.0 - received as f64 / job.count as f64)
    );
    Ok(Outcome {
        msgs: received,
        bytes: received * job.size as u64,
        secs,
        cpu_ns: (c1 - c0).as_nanos() as u64,
        ..Outcome::default()
    })
}

/// (i)'s baseline: a tokio `UdpSocket` receiving in a loop, one `recv_from` each.
async fn tokio_receiver(counted: Rc<Cell<u64>>) -> Res<(SocketAddr, Go)> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(err("bind"))?;
    let to = socket.local_addr().map_err(err("local_addr"))?;
    let go: Go = Box::new(move || {
        Box::pin(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let (n, _from) = socket.recv_from(&mut buf).await.map_err(err("recv_from"))?;
                if n == 1 {
                    return Ok(Vec::new());
                }
                counted.set(counted.get() + 1);
            }
        })
    });
    Ok((to, go))
}

/// Counts what a datagram socket receives until the end marker.
struct DatagramCounter {
    counted: Rc<Cell<u64>>,
    end: Option<oneshot::Sender<()>>,
}

impl Actor for DatagramCounter {
    type Context = Context<Self>;
}

impl Handler<sockactor::messages::DatagramEvent> for DatagramCounter {
    type Result = ();

    fn handle(&mut self, msg: sockactor::messages::DatagramEvent, _: &mut Context<Self>) {
        if let sockactor::messages::DatagramEventKind::Received { bytes, .. } = msg.kind {
            if bytes.len() == 1 {
                if let Some(end) = self.end.take() {
                    let _ = end.send(());
                }
            } else {
                self.counted.set(self.counted.get() + 1);
            }
        }
    }
}

/// (i) through a `DatagramSocket` (default configuration) whose subscriber counts.
async fn sock_receiver(counted: Rc<Cell<u64>>) -> Res<(SocketAddr, Go)> {
    let (end, ended) = oneshot::channel();
    let counter = DatagramCounter {
        counted,
        end: Some(end),
    }
    .start();
    let builder = sockactor::DatagramSocket::builder().subscriber(counter.recipient());
    let (socket, to) = bind_loopback(builder).await?;
    let go: Go = Box::new(move || {
        Box::pin(async move {
            ended.await.map_err(|_| "counter vanished")?;
            let stats = socket
                .send(sockactor::messages::GetDatagramStats)
                .await
                .map_err(|e| format!("stats: {e}"))?;
            eprintln!(
                "(i): {} datagrams in {} receive calls",
                stats.received, stats.recv_calls
            );
            drop(socket);
            Ok(Vec::new())
        })
    });
    Ok((to, go))
}

/// Whatever keeps an idle connection alive (an address, a task handle).
type Held = Box<dyn Any>;

/// Workload (e): RSS growth over `job.count` idle connections to a peer in another
/// process, after a warm-up batch that pays one-time costs.
async fn idle(job: Job, mut open: impl FnMut(SocketAddr) -> BoxFut<Res<Held>>) -> Res<Outcome> {
    let warm = (job.count / 100).clamp(10, 200);
    let holder = Holder::spawn(job.count + warm)?;
    // Filled up front, so the slots' pages are not counted as per-connection memory.
    let mut held: Vec<Option<Held>> = (0..job.count + warm).map(|_| None).collect();
    for slot in &mut held[..warm] {
        *slot = Some(open(holder.addr).await?);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rss0 = status_kb("VmRSS").ok_or("no VmRSS")?;
    let (w0, c0, t0) = (syscw(), process_cpu_ns(), Instant::now());
    let opened = async {
        for slot in &mut held[warm..] {
            *slot = Some(open(holder.addr).await?);
        }
        Ok::<_, String>(())
    };
    within("connecting", opened).await??;
    let secs = t0.elapsed().as_secs_f64();
    // Let every connection reach its idle state (reads armed).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss1 = status_kb("VmRSS").ok_or("no VmRSS")?;
    let (w1, c1) = (syscw(), process_cpu_ns());
    let per_conn = (rss1 as f64 - rss0 as f64) * 1024.0 / job.count as f64;
    drop(held);
    drop(holder);
    Ok(Outcome {
        msgs: job.count as u64,
        secs,
        syscw: w0.zip(w1).map(|(a, b)| b - a),
        cpu_ns: c1 - c0,
        conn_bytes: Some(per_conn),
        ..Outcome::default()
    })
}

async fn within<T>(phase: &str, fut: impl Future<Output = T>) -> Res<T> {
    tokio::time::timeout(PHASE_TIMEOUT, fut)
        .await
        .map_err(|_| format!("{phase}: nothing after {} s", PHASE_TIMEOUT.as_secs()))
}

/// Ping-pong bookkeeping shared by the actor-based pingers.
struct PingState {
    left: usize,
    size: usize,
    got: usize,
    sent: Instant,
    latencies: Vec<u64>,
    done: Option<oneshot::Sender<Res<Vec<u64>>>>,
}

struct StartPing;

impl Message for StartPing {
    type Result = ();
}

impl PingState {
    fn new(job: Job, done: oneshot::Sender<Res<Vec<u64>>>) -> Self {
        PingState {
            left: job.count,
            size: job.size,
            got: 0,
            sent: Instant::now(),
            latencies: Vec::with_capacity(job.count),
            done: Some(done),
        }
    }

    fn start(&mut self) -> Bytes {
        self.left -= 1;
        self.sent = Instant::now();
        payload(self.size)
    }

    /// Counts echoed bytes; returns the next ping once the echo is complete.
    fn on_bytes(&mut self, n: usize) -> Option<Bytes> {
        self.got += n;
        if self.got < self.size {
            return None;
        }
        if self.got > self.size {
            self.fail(format!(
                "{} bytes echoed for a {}-byte ping",
                self.got, self.size
            ));
            return None;
        }
        self.got = 0;
        self.latencies.push(self.sent.elapsed().as_nanos() as u64);
        if self.left > 0 {
            return Some(self.start());
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(Ok(std::mem::take(&mut self.latencies)));
        }
        None
    }

    fn fail(&mut self, e: String) {
        if let Some(done) = self.done.take() {
            let _ = done.send(Err(e));
        }
    }
}

/// The far end of a stream or ping-pong run: a std thread on a blocking socket, reading
/// 256 KiB at a time (and, for ping-pong, writing everything back with send(2)), or
/// inflating what it reads (`inflate`: the deflate sender's streams, counted inflated).
struct Peer {
    all_in: Option<oneshot::Receiver<Instant>>,
    finished: oneshot::Receiver<Res<u64>>,
}

impl Peer {
    fn spawn(listener: StdListener, expected: u64, echo: bool, inflate: bool) -> Peer {
        let (all_in_tx, all_in) = oneshot::channel();
        let (finished_tx, finished) = oneshot::channel();
        std::thread::spawn(move || {
            pin_to_cpu(1);
            let mut all_in_tx = Some(all_in_tx);
            let result = (|| -> io::Result<u64> {
                let (mut s, _) = listener.accept()?;
                s.set_read_timeout(Some(PHASE_TIMEOUT))?;
                s.set_nodelay(true)?;
                let mut reader: Box<dyn Read> = if inflate {
                    Box::new(Inflate::new(s.try_clone()?))
                } else {
                    Box::new(s.try_clone()?)
                };
                let mut buf = vec![0u8; READ_CHUNK];
                let mut total = 0u64;
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(0) => return Ok(total),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    if echo {
                        s.write_all(&buf[..n])?;
                    }
                    total += n as u64;
                    if total >= expected {
                        if let Some(tx) = all_in_tx.take() {
                            let _ = tx.send(Instant::now());
                        }
                    }
                }
            })();
            let _ = finished_tx.send(result.map_err(|e| format!("receiver: {e}")));
        });
        Peer {
            all_in: Some(all_in),
            finished,
        }
    }

    /// When the last expected byte arrived.
    async fn all_in(&mut self) -> Res<Instant> {
        let all_in = self.all_in.take().ok_or("all_in called twice")?;
        match all_in.await {
            Ok(at) => Ok(at),
            Err(_) => match (&mut self.finished).await {
                Ok(Ok(n)) => Err(format!("BYTES MISSING: connection closed after {n} bytes")),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("receiver thread died".into()),
            },
        }
    }

    /// Total bytes read, once the sender has closed.
    async fn finished(self) -> Res<u64> {
        self.finished
            .await
            .map_err(|_| "receiver thread died".to_string())?
    }
}

/// The accepting side of (e), in its own process so that each process needs only one
/// descriptor per connection: this binary run with `--peer-holder N`.
struct Holder {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Holder {
    fn spawn(n: usize) -> Res<Holder> {
        let mut child = Command::new(this_binary()?)
            .args(["--peer-holder", &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(err("spawn peer holder"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("holder stdout")?;
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(err("holder"))?;
        let port: u16 = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| format!("peer holder said {line:?}"))?;
        Ok(Holder {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn holder_main(n: usize) -> ! {
    raise_nofile_towards(n as u64 + FD_SLACK);
    // Ends with the measuring child: its stdin closes then; and in any case after a while.
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_TIMEOUT + Duration::from_secs(30));
        std::process::exit(3);
    });
    let listener = StdListener::bind("127.0.0.1:0").expect("holder: bind");
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // A deeper accept queue than std's default; calling listen(2) again resizes it.
        unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    }
    let port = listener.local_addr().expect("holder: local_addr").port();
    println!("PORT {port}");
    io::stdout().flush().expect("holder: stdout");
    std::thread::spawn(move || {
        let mut held = Vec::with_capacity(n);
        for stream in listener.incoming() {
            match stream {
                Ok(s) => held.push(s),
                Err(e) => eprintln!("peer holder: accept: {e}"),
            }
        }
    });
    let _ = io::stdin().read_to_end(&mut Vec::new());
    std::process::exit(0)
}

// ───────────────────────────── process settings ─────────────────────────────

/// Pins glibc malloc in every child. With the defaults, the mmap threshold slides and the
/// heap top is trimmed whenever more than 128 KiB is free there, so runs that allocate and
/// free 64 KiB messages flip between two regimes (brk/madvise and page faults on every
/// cycle, or none). A fixed `M_MMAP_THRESHOLD` of 16 MiB, `M_TRIM_THRESHOLD` of 1 GiB and
/// `M_TOP_PAD` of 16 MiB keep every run in the second. `--default-malloc` skips this.
fn tune_malloc() -> &'static str {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
                && libc::mallopt(libc::M_TOP_PAD, TOP_PAD) == 1
        };
        if ok {
            "tuned"
        } else {
            "mallopt-failed"
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        "not-glibc"
    }
}

// ───────────────────────────── child ─────────────────────────────

fn child_main(opts: &Opts) -> ! {
    let malloc = if opts.default_malloc {
        "default"
    } else {
        tune_malloc()
    };
    let (workload, sender) = match (opts.workloads.as_slice(), opts.senders.as_slice()) {
        ([w], [s]) => (*w, *s),
        _ => fail_child("--child needs exactly one --workload and one --sender".into()),
    };
    let spec = workload.spec();
    let job = Job {
        kind: spec.kind,
        flow: opts.flows.first().copied().unwrap_or_default(),
        count: opts
            .count
            .unwrap_or(if opts.quick { spec.quick } else { spec.full }),
        size: opts.size.unwrap_or(spec.size),
        producers: spec.producers,
        yield_each: spec.yield_each,
        inflate: sender == Sender::SockactorDeflate,
    };
    if job.kind == Kind::Idle {
        raise_nofile_towards(job.count as u64 + FD_SLACK);
    }
    if opts.text {
        TEXT.get_or_init(make_text);
    }
    let run = sender.spec().run;
    pin_to_cpu(0);
    let result = actix::System::new().block_on(async move { run(job).await });
    match result {
        Ok(mut o) => {
            o.hwm_kb = status_kb("VmHWM");
            o.malloc = malloc.to_string();
            println!("RESULT ok=1 {}", o.to_fields());
            let _ = io::stdout().flush();
            std::process::exit(0)
        }
        Err(e) => fail_child(e),
    }
}

fn fail_child(e: String) -> ! {
    println!("RESULT ok=0 error={}", e.replace('\n', " "));
    let _ = io::stdout().flush();
    std::process::exit(1)
}

impl Outcome {
    fn to_fields(&self) -> String {
        let mut s = format!(
            "msgs={} bytes={} secs={:.6} cpu_ns={} malloc={}",
            self.msgs, self.bytes, self.secs, self.cpu_ns, self.malloc
        );
        let opt = |s: &mut String, k: &str, v: Option<String>| {
            if let Some(v) = v {
                s.push_str(&format!(" {k}={v}"));
            }
        };
        opt(&mut s, "syscw", self.syscw.map(|v| v.to_string()));
        opt(&mut s, "hwm_kb", self.hwm_kb.map(|v| v.to_string()));
        opt(&mut s, "p50_ns", self.p50_ns.map(|v| v.to_string()));
        opt(&mut s, "p99_ns", self.p99_ns.map(|v| v.to_string()));
        opt(
            &mut s,
            "conn_bytes",
            self.conn_bytes.map(|v| format!("{v:.1}")),
        );
        s
    }

    fn parse(line: &str) -> Res<Outcome> {
        let rest = line.strip_prefix("RESULT ").ok_or("no RESULT line")?;
        if let Some(e) = rest.strip_prefix("ok=0 error=") {
            return Err(e.to_string());
        }
        let fields: HashMap<&str, &str> = fields(rest).flatten().collect();
        let num = |k: &str| fields.get(k).and_then(|v| v.parse::<f64>().ok());
        let int = |k: &str| num(k).map(|v| v as u64);
        Ok(Outcome {
            msgs: int("msgs").ok_or("RESULT without msgs")?,
            bytes: int("bytes").unwrap_or(0),
            secs: num("secs").ok_or("RESULT without secs")?,
            syscw: int("syscw"),
            cpu_ns: int("cpu_ns").unwrap_or(0),
            hwm_kb: int("hwm_kb"),
            p50_ns: int("p50_ns"),
            p99_ns: int("p99_ns"),
            conn_bytes: num("conn_bytes"),
            malloc: fields.get("malloc").unwrap_or(&"?").to_string(),
        })
    }
}

// ───────────────────────────── parent ─────────────────────────────

#[derive(Clone, Debug, Default)]
struct Opts {
    child: bool,
    quick: bool,
    default_malloc: bool,
    no_pin: bool,
    reps: Option<usize>,
    count: Option<usize>,
    workloads: Vec<Workload>,
    senders: Vec<Sender>,
    /// Flow-control modes, one table each (default: messages).
    flows: Vec<Flow>,
    /// Message size for every workload (default: each workload's own).
    size: Option<usize>,
    /// Messages cut from generated text instead of a repeated byte.
    text: bool,
    peer_holder: Option<usize>,
}

const USAGE: &str = "usage: bench [--quick] [--reps N] [--workload a,b,b1,c,d,e,f,g,h,i,i1] \
[--sender sockactor-deferred,sockactor-immediate,naive,ceiling,actix-framedwrite,tokio-util-framed,sockactor-writer,sockactor-filtered,sockactor-deflate] \
[--flow messages,bytes] [--size BYTES] [--text] [--default-malloc] [--no-pin]";

fn parse_args() -> Res<Opts> {
    let mut opts = Opts::default();
    let mut args = Args::from_env();
    let number = |args: &mut Args, what: &str| -> Res<usize> {
        args.parsed()
            .ok_or_else(|| format!("{what} needs a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--child" => opts.child = true,
            "--quick" => opts.quick = true,
            "--default-malloc" => opts.default_malloc = true,
            "--no-pin" => opts.no_pin = true,
            "--reps" => opts.reps = Some(number(&mut args, "--reps")?.max(1)),
            "--count" => opts.count = Some(number(&mut args, "--count")?.max(1)),
            "--size" => opts.size = Some(number(&mut args, "--size")?.max(1)),
            "--text" => opts.text = true,
            "--peer-holder" => opts.peer_holder = Some(number(&mut args, "--peer-holder")?),
            "--workload" => {
                for w in args.next().ok_or("--workload needs a list")?.split(',') {
                    let w = Workload::parse(w.trim()).ok_or(format!("unknown workload {w}"))?;
                    opts.workloads.push(w);
                }
            }
            "--flow" => {
                for f in args.next().ok_or("--flow needs a list")?.split(',') {
                    let f = Flow::parse(f.trim()).ok_or(format!("unknown flow {f}"))?;
                    opts.flows.push(f);
                }
            }
            "--sender" => {
                for s in args.next().ok_or("--sender needs a list")?.split(',') {
                    let s = Sender::parse(s.trim()).ok_or(format!("unknown sender {s}"))?;
                    opts.senders.push(s);
                }
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("{}\n{USAGE}", unknown(other))),
        }
    }
    Ok(opts)
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Some(n) = opts.peer_holder {
        holder_main(n);
    }
    if opts.child {
        child_main(&opts);
    }
    let flows = if opts.flows.is_empty() {
        vec![Flow::Messages]
    } else {
        opts.flows.clone()
    };
    let mut status = 0;
    for flow in flows {
        let opts = Opts {
            flows: vec![flow],
            ..opts.clone()
        };
        status = status.max(parent_main(opts));
    }
    std::process::exit(status);
}

/// One row's repetitions, in order (`None`: that repetition failed).
type Reps = Vec<Option<Outcome>>;

fn parent_main(opts: Opts) -> i32 {
    let exe = match this_binary() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let reps = opts.reps.unwrap_or(if opts.quick { 1 } else { 5 });
    let workloads = if opts.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        opts.workloads.clone()
    };
    let senders = if opts.senders.is_empty() {
        Sender::RUN.to_vec()
    } else {
        opts.senders.clone()
    };
    let mut notes = Vec::new();
    let mut counts = HashMap::new();
    for &w in &workloads {
        let spec = w.spec();
        let mut count = if opts.quick { spec.quick } else { spec.full };
        if w == Workload::E {
            let (_, hard) = nofile_limits().unwrap_or((0, 0));
            let allowed = hard.saturating_sub(FD_SLACK) as usize;
            if allowed < count {
                notes.push(format!(
                    "**(e) scaled down from {count} to {allowed} connections**: the hard \
                     RLIMIT_NOFILE is {hard}, and each of the two processes needs one \
                     descriptor per connection plus {FD_SLACK}; raise it (`ulimit -Hn`, as \
                     root) to measure {count}"
                ));
                eprintln!("bench: {}", notes.last().expect("note"));
                count = allowed;
            }
        }
        counts.insert(w, count);
    }
    let workloads: Vec<Workload> = workloads.into_iter().filter(|w| counts[w] > 0).collect();

    // Each workload's senders, in table order; each repetition starts one sender later
    // (rotated), so no sender always runs first in a workload's round: the first process
    // after another workload's ran slower (64 KiB writes: 0.95 first, 1.05 last, the same
    // sender in one session).
    let rounds: Vec<(Workload, Vec<Sender>)> = workloads
        .iter()
        .map(|&w| {
            let taking: Vec<Sender> = senders
                .iter()
                .copied()
                .filter(|s| s.takes_part(w))
                .collect();
            (w, taking)
        })
        .collect();
    let total = rounds.iter().map(|(_, ss)| ss.len()).sum::<usize>() * reps;
    let mut results: HashMap<(Workload, Sender), Reps> = HashMap::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    let mut n = 0;
    for rep in 0..reps {
        let jobs = rounds.iter().flat_map(|(w, ss)| {
            let k = if ss.is_empty() { 0 } else { rep % ss.len() };
            ss[k..].iter().chain(&ss[..k]).map(move |&s| (*w, s))
        });
        for (w, s) in jobs {
            n += 1;
            let result = run_child(&exe, w, s, counts[&w], &opts);
            match &result {
                Ok(o) => eprintln!(
                    "[{n}/{total} {:.0}s] {} {} rep {}: {} msg/s in {:.2}s",
                    started.elapsed().as_secs_f64(),
                    w.key(),
                    s.name(),
                    rep + 1,
                    fmt_count(o.msgs as f64 / o.secs),
                    o.secs
                ),
                Err(e) => {
                    eprintln!(
                        "[{n}/{total}] {} {} rep {} FAILED: {e}",
                        w.key(),
                        s.name(),
                        rep + 1
                    );
                    failures.push(format!("{} / {} / rep {}: {e}", w.key(), s.name(), rep + 1));
                }
            }
            results.entry((w, s)).or_default().push(result.ok());
        }
    }

    let mallocs: Vec<String> = {
        let mut m: Vec<String> = results
            .values()
            .flatten()
            .flatten()
            .map(|o| o.malloc.clone())
            .collect();
        m.sort();
        m.dedup();
        m
    };
    print_header(&opts, reps, &notes, &mallocs, started.elapsed());
    print_table(&workloads, &senders, &counts, &results, opts.size);
    if !failures.is_empty() {
        println!();
        println!("**{} measurement(s) failed:**", failures.len());
        for f in &failures {
            println!("- {f}");
        }
        return 1;
    }
    0
}

fn run_child(
    exe: &std::path::Path,
    w: Workload,
    s: Sender,
    count: usize,
    opts: &Opts,
) -> Res<Outcome> {
    let mut cmd = Command::new(exe);
    cmd.args(["--child", "--workload", w.key(), "--sender", s.name()])
        .args(["--count", &count.to_string()]);
    if let Some(flow) = opts.flows.first() {
        cmd.args(["--flow", flow.key()]);
    }
    if let Some(size) = opts.size {
        cmd.args(["--size", &size.to_string()]);
    }
    if opts.text {
        cmd.arg("--text");
    }
    if opts.quick {
        cmd.arg("--quick");
    }
    if opts.default_malloc {
        cmd.arg("--default-malloc");
    }
    if opts.no_pin {
        cmd.env(NO_PIN_ENV, "1");
    }
    let finished =
        child::run(&mut cmd, Stderr::Capture, Some(CHILD_TIMEOUT)).map_err(err("spawn child"))?;
    let tail = finished.stderr_tail(5);
    let Some(status) = finished.status else {
        return Err(format!(
            "killed after {} s (stderr: {tail})",
            CHILD_TIMEOUT.as_secs()
        ));
    };
    match finished.line("RESULT ") {
        Some(line) => Outcome::parse(line).map_err(|e| {
            if tail.is_empty() {
                e
            } else {
                format!("{e} (stderr: {tail})")
            }
        }),
        None => Err(format!(
            "child exited with {status} and no RESULT (stderr: {tail})"
        )),
    }
}

fn print_header(opts: &Opts, reps: usize, notes: &[String], mallocs: &[String], took: Duration) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|x| x.1.trim())
        })
        .unwrap_or("unknown CPU");
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let args: Vec<String> = std::env::args().collect();
    let flow = opts.flows.first().copied().unwrap_or_default();
    println!(
        "## sockactor write-path benchmark, flow control: {}",
        match flow {
            Flow::Messages => "messages in flight",
            Flow::Bytes => "byte window",
        }
    );
    println!();
    println!("- command: `{}`", args.join(" "));
    println!("- date: {} (took {:.0} s)", utc_now(), took.as_secs_f64());
    println!("- machine: nproc {nproc}, {model}, Linux {}", kernel.trim());
    println!(
        "- method: every measurement in a fresh process; {reps} repetition{} per row, run \
         interleaved (each repetition starts a workload's round one sender later); medians \
         with (min..max); ratio to ceiling = median over i of \
         messages/s of repetition i ÷ the ceiling's repetition i{}",
        if reps == 1 { "" } else { "s" },
        if opts.quick {
            "; **--quick sizes**"
        } else {
            ""
        }
    );
    println!(
        "- receiver: a std thread on a blocking loopback socket reading 256 KiB at a time, \
         byte count verified; the clock stops when its last byte arrives; TCP_NODELAY on \
         every socket; {}",
        if opts.no_pin || nproc < 2 {
            "threads not pinned"
        } else {
            "the sender's runtime thread pinned to one CPU and the receiver/echo thread to another \
             (unpinned, 1M × 64 B naive runs varied 4× from run to run; `--no-pin` turns it off)"
        }
    );
    if flow == Flow::Bytes {
        println!(
            "- flow control (all senders): **byte window**: the producers of a run share a \
             {} MiB window; a producer takes each message's bytes from it before sending \
             fire-and-forget, asks for an answer every {} KiB (that answer gives those bytes \
             back) and yields every {YIELD_EVERY} messages; sockactor `Write` and \
             actix-framedwrite producers are actix actors (`do_send`, `send` for the \
             answered one), `Writer` producers and the channel senders tokio tasks",
            WINDOW_BYTES >> 20,
            ACK_BYTES >> 10
        );
    } else {
        println!(
        "- flow control (all senders): **messages in flight**: each producer awaits an acknowledgement every \
         {}/producers/{ACK_WINDOW} messages with at most {ACK_WINDOW} outstanding ({IN_FLIGHT} \
         unacknowledged messages per run); acknowledged = written to the transport \
         (sockactor `send(Write::new(..).wait_when_full())`, channel senders), handled = \
         buffered (actix-framedwrite, whose FramedWrite never pushes back on a tokio \
         stream, so its buffer can grow: see its peak RSS); sockactor and actix-framedwrite producers are actix \
         actors using `do_send`, the others tokio tasks on an unbounded channel",
        IN_FLIGHT
    );
    }
    println!(
        "- write syscalls: delta of `syscw` (/proc/self/io) over the measured region; \
         naive and the framed senders write through a wrapper that issues writev(2) \
         because syscw does not count send(2); the echo peer of (d) writes with send(2)"
    );
    println!(
        "- malloc: {} (glibc `mallopt` at child start: M_MMAP_THRESHOLD {} MiB, \
         M_TRIM_THRESHOLD {} MiB, M_TOP_PAD {} MiB, against bimodal 64 KiB runs; \
         `--default-malloc` keeps glibc's defaults)",
        mallocs.join(", "),
        MMAP_THRESHOLD >> 20,
        TRIM_THRESHOLD >> 20,
        TOP_PAD >> 20
    );
    println!(
        "- (e): RSS growth per connection after a warm-up batch, the accepting side in \
         another process; sockactor sockets have a subscriber (read path armed); \
         actix-framedwrite = an actor with FramedRead + FramedWrite; naive = a bare tokio \
         task holding the TcpStream. (f): sockactor over an actor transport answering \
         `Sent::Accepted(len)`, ceiling over a counter, the others over `tokio::io::sink()`"
    );
    for note in notes {
        println!("- {note}");
    }
    println!();
}

fn print_table(
    workloads: &[Workload],
    senders: &[Sender],
    counts: &HashMap<Workload, usize>,
    results: &HashMap<(Workload, Sender), Reps>,
    size: Option<usize>,
) {
    let (l, r) = (Align::Left, Align::Right);
    table_header(&[
        ("workload", l),
        ("sender", l),
        ("messages/s", r),
        ("MB/s", r),
        ("ratio to ceiling", r),
        ("write syscalls/msg", r),
        ("peak RSS MiB", r),
        ("p50 µs", r),
        ("p99 µs", r),
        ("bytes/conn", r),
        ("CPU ns/msg", r),
    ]);
    for &w in workloads {
        let ceiling = results.get(&(w, Sender::Ceiling));
        for &s in senders {
            let Some(reps) = results.get(&(w, s)) else {
                continue;
            };
            let ok: Vec<&Outcome> = reps.iter().flatten().collect();
            let failed = reps.len() - ok.len();
            let dash = || "—".to_string();
            let stat = |f: &dyn Fn(&Outcome) -> Option<f64>, fmt: &dyn Fn(f64) -> String| {
                let v: Vec<f64> = ok.iter().filter_map(|o| f(o)).collect();
                median(&v).map_or_else(dash, fmt)
            };
            let spread = |f: &dyn Fn(&Outcome) -> Option<f64>, fmt: &dyn Fn(f64) -> String| {
                let v: Vec<f64> = ok.iter().filter_map(|o| f(o)).collect();
                report::spread(&v, median, fmt).unwrap_or_else(dash)
            };
            let rate = |o: &Outcome| o.msgs as f64 / o.secs;
            let streaming = w != Workload::E;
            let ratios: Vec<f64> = match ceiling {
                Some(c) if streaming => reps
                    .iter()
                    .zip(c)
                    .filter_map(|(a, b)| Some(rate(a.as_ref()?) / rate(b.as_ref()?)))
                    .collect(),
                _ => Vec::new(),
            };
            let sender = if failed > 0 {
                format!("{} (**{failed}/{} failed**)", s.name(), reps.len())
            } else {
                s.name().to_string()
            };
            let cells = [
                w.label(counts[&w], size),
                sender,
                if streaming {
                    spread(&|o| Some(rate(o)), &fmt_count)
                } else {
                    dash()
                },
                if streaming {
                    stat(&|o| Some(o.bytes as f64 / o.secs / 1e6), &|v| {
                        format!("{v:.1}")
                    })
                } else {
                    dash()
                },
                median(&ratios).map_or_else(dash, |r| format!("{r:.2}")),
                if streaming {
                    stat(&|o| Some(o.syscw? as f64 / o.msgs as f64), &|v| {
                        format!("{v:.4}")
                    })
                } else {
                    dash()
                },
                stat(&|o| Some(o.hwm_kb? as f64 / 1024.0), &|v| format!("{v:.1}")),
                stat(&|o| Some(o.p50_ns? as f64 / 1e3), &|v| format!("{v:.1}")),
                stat(&|o| Some(o.p99_ns? as f64 / 1e3), &|v| format!("{v:.1}")),
                spread(&|o| o.conn_bytes, &|v| format!("{v:.0}")),
                // (f): the process's CPU per message; (i), (i1): the receiving thread's.
                if matches!(w, Workload::F | Workload::I | Workload::I1) {
                    spread(&|o| Some(o.cpu_ns as f64 / o.msgs as f64), &|v| {
                        format!("{v:.0}")
                    })
                } else {
                    dash()
                },
            ];
            table_row(&cells);
        }
    }
}

fn fmt_count(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// Now as `YYYY-MM-DD hh:mm:ss UTC` (civil-from-days, Howard Hinnant's algorithm).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
