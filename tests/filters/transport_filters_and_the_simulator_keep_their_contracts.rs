//! From the twentieth round of the independent review: transport filters and the
//! simulator as actors. The throttle's rate and per-call bounds for streams and
//! datagrams, the fault injector's odd inputs and seeds, every filter's bounds and
//! liveness, capture and replay stacked around faults, and the simulated network's
//! partitions, counters and seeded determinism; over the mock and the simulator in
//! paused time.
#![allow(clippy::too_many_lines)]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use sockactor::filters::{
    Capture, CaptureError, CaptureReader, FaultInjector, Faults, Replay, Throttle, TokenBucket,
};
use sockactor::messages::{
    Accept, Accepted, Address, Bind, Close, CloseSocket, Connect, Family, Handle, Listen,
    OpenSocket, Readiness, Ready, Received, RecvFrom, SendV, Sent, ShutdownWrite, SocketKind,
    Write,
};
use sockactor::{
    Listener, MockTransport, SimConfig, SimCounts, SimNetwork, Socket, SocketBuffers,
    SocketFunctions, TransportError,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::support::{
    channel, drain, mock_peer, pattern, run_paused, settle, EchoServer, Recorder,
};

const MS: Duration = Duration::from_millis(1);

/// A handle opened raw on `f`, with the recipient its notices go to (kept alive) and
/// the channel they arrive on.
struct Raw {
    handle: Handle,
    _keep: Recipient<Ready>,
    ready: UnboundedReceiver<Ready>,
}

async fn open(f: &SocketFunctions, kind: SocketKind) -> Raw {
    let (keep, ready) = channel::<Ready>();
    let handle = f
        .open()
        .send(OpenSocket {
            family: Family::Ipv4,
            kind,
            events: keep.downgrade(),
            buffers: SocketBuffers::default(),
        })
        .await
        .expect("mailbox")
        .expect("open");
    Raw {
        handle,
        _keep: keep,
        ready,
    }
}

async fn connect(f: &SocketFunctions, handle: Handle, addr: SocketAddr) {
    f.connect()
        .send(Connect {
            handle,
            addr: addr.into(),
        })
        .await
        .expect("mailbox")
        .expect("connect");
}

async fn sendv(
    f: &SocketFunctions,
    handle: Handle,
    segments: Vec<Bytes>,
    to: Option<Address>,
) -> Result<Sent, TransportError> {
    f.sendv()
        .send(SendV {
            handle,
            segments,
            to,
        })
        .await
        .expect("mailbox")
}

async fn recvfrom(
    f: &SocketFunctions,
    handle: Handle,
    max_len: usize,
) -> Result<Received, TransportError> {
    f.recvfrom()
        .send(RecvFrom { handle, max_len })
        .await
        .expect("mailbox")
}

/// Waits for the next notice of `raw`, at most `within`.
async fn next_ready(raw: &mut Raw, within: Duration) -> Ready {
    tokio::time::timeout(within, raw.ready.recv())
        .await
        .expect("the owed Ready came")
        .expect("channel open")
}

// ---------------------------------------------------------------------------------------
// Throttle

/// docs/filters.md §6: "N bytes at R bytes per second therefore take (N − burst)/R to N/R
/// seconds", and a datagram larger than the burst is explicitly reserved whole ("a whole
/// datagram"). Ten 200-byte datagrams through a 1000 B/s bucket of burst 100 are 2000
/// bytes: at most 2 s (plus the timer's 1 ms ticks).
#[test]
fn throttle_datagrams_larger_than_the_burst_keep_the_buckets_rate() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let f = Throttle::per_socket(1000, 100).wrap(mock.functions());
        let mut raw = open(&f, SocketKind::Datagram).await;
        let to: Address = mock_peer().into();
        let start = Instant::now();
        let mut sent_at = Vec::new();
        for i in 0..10u8 {
            loop {
                let seg = vec![Bytes::from(vec![i; 200])];
                match sendv(&f, raw.handle, seg, Some(to.clone()))
                    .await
                    .expect("no error")
                {
                    Sent::Accepted(n) => {
                        assert_eq!(n, 200, "a datagram goes whole");
                        sent_at.push(start.elapsed());
                        break;
                    }
                    Sent::WouldBlock => {
                        let ready = next_ready(&mut raw, Duration::from_secs(60)).await;
                        assert_eq!(ready.readiness, Readiness::Writable);
                    }
                }
            }
        }
        assert_eq!(mock.datagrams(raw.handle).len(), 10);
        let took = start.elapsed();
        assert!(
            took <= Duration::from_millis(2000 + 20),
            "2000 bytes at 1000 B/s (burst 100) took {took:?}, more than N/R = 2 s; \
             datagrams left at {sent_at:?}"
        );
    });
}

/// The same with a stream and a small per-call bound: each call hands on at most the
/// bound, the inner transport never sees more than burst + rate·t, and 1000 bytes take
/// (N − burst)/R to N/R.
#[test]
fn throttle_stream_keeps_bound_rate_and_total_time() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let f = Throttle::per_socket(1000, 100)
            .max_per_call(30)
            .wrap(mock.functions());
        let mut raw = open(&f, SocketKind::Stream).await;
        connect(&f, raw.handle, mock_peer()).await;
        let data = Bytes::from(pattern(1000, 3));
        let start = Instant::now();
        let mut at = 0;
        while at < data.len() {
            match sendv(&f, raw.handle, vec![data.slice(at..)], None)
                .await
                .expect("no error")
            {
                Sent::Accepted(n) => {
                    assert!((1..=30).contains(&n), "accepted {n}");
                    at += n;
                }
                Sent::WouldBlock => {
                    next_ready(&mut raw, Duration::from_secs(60)).await;
                }
            }
        }
        let took = start.elapsed();
        assert_eq!(mock.written(raw.handle), data.to_vec());
        let mut total = 0usize;
        for r in mock.sendv_log(raw.handle) {
            assert!(r.offered <= 30, "inner offered {} > bound", r.offered);
            total += r.accepted;
            let t = r.at.saturating_duration_since(start).as_secs_f64();
            assert!(
                total as f64 <= 100.0 + 1000.0 * t + 1.0,
                "{total} bytes by {t} s"
            );
        }
        assert!(
            took >= Duration::from_millis(899) && took <= Duration::from_millis(1020),
            "took {took:?}"
        );
    });
}

/// §6: "A grant not spent when the handle closes goes back to the bucket", and a notice
/// for a handle that is closed is dropped (§3).
#[test]
fn an_unspent_grant_returns_to_a_shared_bucket_at_close() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let bucket = Arc::new(TokenBucket::new(1000, 100));
        let f1 = Throttle::shared(bucket.clone()).wrap(mock.functions());
        let f2 = Throttle::shared(bucket.clone()).wrap(mock.functions());
        let mut a = open(&f1, SocketKind::Stream).await;
        connect(&f1, a.handle, mock_peer()).await;
        let b = open(&f2, SocketKind::Stream).await;
        connect(&f2, b.handle, mock_peer()).await;
        let hundred = Bytes::from(vec![7u8; 100]);
        assert_eq!(
            sendv(&f1, a.handle, vec![hundred.clone()], None)
                .await
                .unwrap(),
            Sent::Accepted(100)
        );
        assert_eq!(bucket.available(), 0);
        assert_eq!(
            sendv(&f1, a.handle, vec![hundred.clone()], None)
                .await
                .unwrap(),
            Sent::WouldBlock,
            "bucket empty: a grant is reserved"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        f1.close()
            .send(CloseSocket { handle: a.handle })
            .await
            .unwrap()
            .unwrap();
        settle().await;
        let avail = bucket.available();
        assert!(
            (9..=11).contains(&avail),
            "10 ms after the grant, closing gives it back: about 10 bytes available, found {avail}"
        );
        // The other table's socket can use them at once.
        match sendv(&f2, b.handle, vec![hundred.clone()], None)
            .await
            .unwrap()
        {
            Sent::Accepted(n) => assert!((9..=11).contains(&n), "took {n}"),
            other => panic!("expected the refunded tokens, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        settle().await;
        assert_eq!(
            bucket.available(),
            100,
            "refilled to the burst, not past it"
        );
        assert!(
            drain(&mut a.ready).is_empty(),
            "no notice reaches a closed handle's socket"
        );
    });
}

/// §6 receiving: a stream read asks for at most the burst, and a socket with its own
/// bucket receives at most 2 × burst + rate × t.
#[test]
fn throttled_receiving_keeps_its_bound() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let f = Throttle::per_socket(1_000_000, 1_000_000)
            .receive_per_socket(1000, 100)
            .wrap(mock.functions());
        let mut raw = open(&f, SocketKind::Stream).await;
        connect(&f, raw.handle, mock_peer()).await;
        let data = pattern(3000, 9);
        mock.push_inbound(raw.handle, data.clone());
        let start = Instant::now();
        let mut got = Vec::new();
        while got.len() < data.len() {
            match recvfrom(&f, raw.handle, 65536).await.expect("no error") {
                Received::Data { bytes, .. } => {
                    assert!(bytes.len() <= 100, "a read of {} > burst", bytes.len());
                    got.extend_from_slice(&bytes);
                    let t = start.elapsed().as_secs_f64();
                    assert!(
                        got.len() as f64 <= 200.0 + 1000.0 * t + 1.0,
                        "{} bytes by {t}",
                        got.len()
                    );
                }
                Received::WouldBlock => {
                    next_ready(&mut raw, Duration::from_secs(60)).await;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, data);
    });
}

/// Odd inputs: zero rates and bursts, huge ones; nothing panics and bytes flow.
#[test]
fn throttle_odd_rates_and_bursts_do_not_panic() {
    run_paused(|| async {
        for (rate, burst) in [(0, 0), (u64::MAX, u64::MAX), (1, u64::MAX), (u64::MAX, 0)] {
            let mock = MockTransport::start();
            let f = Throttle::per_socket(rate, burst)
                .receive_per_socket(rate, burst)
                .max_per_call(0)
                .wrap(mock.functions());
            let raw = open(&f, SocketKind::Stream).await;
            connect(&f, raw.handle, mock_peer()).await;
            let answer = sendv(&f, raw.handle, vec![Bytes::from_static(b"abc")], None)
                .await
                .expect("no error");
            assert!(
                matches!(answer, Sent::Accepted(1) | Sent::WouldBlock),
                "max_per_call(0) is 1: {answer:?} (rate {rate}, burst {burst})"
            );
            mock.push_inbound(raw.handle, &b"xyz"[..]);
            let r = recvfrom(&f, raw.handle, 10).await.expect("no error");
            assert!(matches!(r, Received::Data { .. } | Received::WouldBlock));
            let bucket = TokenBucket::new(rate, burst);
            assert!(bucket.rate() >= 1 && bucket.burst() >= 1);
            let _ = bucket.available();
        }
    });
}

// ---------------------------------------------------------------------------------------
// Liveness

/// Says when it stops: held by a table only through its `shutdown` recipient.
struct Probe(Arc<AtomicBool>);

impl Actor for Probe {
    type Context = Context<Self>;
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Handler<ShutdownWrite> for Probe {
    type Result = Result<(), TransportError>;
    fn handle(&mut self, _: ShutdownWrite, _: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}

/// A throttle over a table holding a probe; its socket's handle sends `writes` sendv
/// calls, is closed, everything is dropped; whether the probe (so the filter's actor
/// that holds its table) has stopped 10 s later.
async fn throttle_stops(writes: usize) -> bool {
    let mock = MockTransport::start();
    let stopped = Arc::new(AtomicBool::new(false));
    let probe = Probe(stopped.clone()).start();
    let inner = mock.functions().with_shutdown(probe.recipient());
    let f = Throttle::per_socket(1, 1000).wrap(inner);
    let raw = open(&f, SocketKind::Stream).await;
    connect(&f, raw.handle, mock_peer()).await;
    let kilo = Bytes::from(vec![1u8; 1000]);
    for _ in 0..writes {
        let _ = sendv(&f, raw.handle, vec![kilo.clone()], None).await;
    }
    f.close()
        .send(CloseSocket { handle: raw.handle })
        .await
        .unwrap()
        .unwrap();
    drop(f);
    drop(raw);
    tokio::time::sleep(Duration::from_secs(10)).await;
    settle().await;
    stopped.load(Ordering::SeqCst)
}

/// Control: with no notice owed, the filter's actor stops once nothing holds it.
#[test]
fn a_throttles_actor_stops_once_nothing_holds_it() {
    run_paused(|| async {
        assert!(throttle_stops(1).await, "the filter's actor stopped");
    });
}

/// docs/filters.md §1 Liveness: "The filter's actor lives as long as some table that
/// holds it". Here the second write reserved a grant paid off only after 1000 s (1 B/s);
/// its handle is closed and every table is dropped, yet the actor (and the inner table it
/// holds) lives on until the dead handle's notice is due.
#[test]
fn a_throttles_actor_stops_once_nothing_holds_it_even_with_a_notice_owed_to_a_closed_handle() {
    run_paused(|| async {
        assert!(
            throttle_stops(2).await,
            "10 s after its handle closed and its tables were dropped, the throttle's actor \
             still runs (kept alive by a notice due in 1000 s for the closed handle)"
        );
    });
}

// ---------------------------------------------------------------------------------------
// FaultInjector

/// §5: a would-block is followed by exactly one Ready; probability 1.0 blocks every call.
#[test]
fn every_injected_would_block_owes_exactly_one_ready() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let f = FaultInjector::new(
            5,
            Faults::default().would_block(1.0, Duration::from_millis(7)),
        )
        .wrap(mock.functions());
        let mut raw = open(&f, SocketKind::Stream).await;
        connect(&f, raw.handle, mock_peer()).await;
        for _ in 0..20 {
            assert_eq!(
                sendv(&f, raw.handle, vec![Bytes::from_static(b"x")], None)
                    .await
                    .unwrap(),
                Sent::WouldBlock
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        settle().await;
        let notices = drain(&mut raw.ready);
        assert_eq!(notices.len(), 20, "{notices:?}");
        assert!(notices
            .iter()
            .all(|r| r.readiness == Readiness::Writable && r.handle == raw.handle));
        assert_eq!(
            mock.sendv_calls(raw.handle),
            0,
            "nothing reached the inner transport"
        );
    });
}

/// Odd probabilities (NaN, negative, above 1, infinite) and zero delays: clamped, no
/// panic; a partial of probability 1 still takes at least one byte.
#[test]
fn odd_fault_probabilities_are_clamped_without_panics() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let faults = Faults::default()
            .partial(f64::INFINITY)
            .would_block(f64::NAN, Duration::ZERO)
            .delay(-3.0, Duration::ZERO)
            .reset(f64::NAN)
            .short_reads(2.0)
            .read_would_block(-1.0, Duration::ZERO)
            .read_delay(f64::NEG_INFINITY, Duration::ZERO)
            .read_reset(f64::NAN);
        assert!(!faults.injects_resets(), "NaN is never");
        let f = FaultInjector::new(0, faults)
            .max_per_call(0)
            .wrap(mock.functions());
        let raw = open(&f, SocketKind::Stream).await;
        connect(&f, raw.handle, mock_peer()).await;
        for _ in 0..10 {
            match sendv(&f, raw.handle, vec![Bytes::from_static(b"abcdef")], None)
                .await
                .expect("never reset")
            {
                Sent::Accepted(n) => assert_eq!(n, 1, "bound of 1"),
                Sent::WouldBlock => panic!("NaN would-block is never"),
            }
        }
        mock.push_inbound(raw.handle, &b"0123456789"[..]);
        let mut got = Vec::new();
        while got.len() < 10 {
            match recvfrom(&f, raw.handle, 100).await.expect("no error") {
                Received::Data { bytes, .. } => {
                    assert!(!bytes.is_empty());
                    got.extend_from_slice(&bytes);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, b"0123456789");
    });
}

/// No panics on odd inputs: a would-block delay bound of years (or `Duration::MAX`) is a
/// valid `Duration`; the injector must keep serving the handle (answer the close, the
/// next calls) rather than its actor dying.
#[test]
fn a_would_block_bound_of_years_does_not_kill_the_injector() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let years = Duration::from_secs(20 * 365 * 86_400);
        let f = FaultInjector::new(11, Faults::default().would_block(1.0, years))
            .wrap(mock.functions());
        let raw = open(&f, SocketKind::Stream).await;
        connect(&f, raw.handle, mock_peer()).await;
        for i in 0..4 {
            let answer = f
                .sendv()
                .send(SendV {
                    handle: raw.handle,
                    segments: vec![Bytes::from_static(b"x")],
                    to: None,
                })
                .await;
            assert!(
                matches!(answer, Ok(Ok(Sent::WouldBlock))),
                "call {i}: {answer:?}"
            );
            settle().await;
        }
        let closed = f.close().send(CloseSocket { handle: raw.handle }).await;
        assert!(
            matches!(closed, Ok(Ok(()))),
            "the injector's actor answers the close: {closed:?}"
        );
    });
}

/// §5: "With the mock transport and paused tokio time the same seed gives the same sendv
/// log, call for call and instant for instant"; another seed gives another.
#[test]
fn the_same_seed_gives_the_same_sendv_log_through_stacked_filters() {
    fn run(seed: u64) -> Vec<(Duration, usize, usize, bool, Option<io::ErrorKind>)> {
        std::thread::spawn(move || {
            run_paused(|| async move {
                let mock = MockTransport::start();
                let start = Instant::now();
                let faults = Faults::default()
                    .partial(0.5)
                    .would_block(0.3, Duration::from_millis(4))
                    .delay(0.3, Duration::from_millis(3));
                let f = Throttle::per_socket(200_000, 2048).wrap(
                    FaultInjector::new(seed, faults)
                        .max_per_call(1500)
                        .wrap(mock.functions()),
                );
                let socket = Socket::builder()
                    .functions(f)
                    .connect(mock_peer())
                    .await
                    .expect("connect");
                let data = pattern(20_000, 77);
                let mut answers = Vec::new();
                for chunk in data.chunks(2500) {
                    answers.push(socket.send(Write::new(Bytes::copy_from_slice(chunk))));
                }
                for a in answers {
                    a.await.expect("mailbox").expect("written");
                }
                assert_eq!(mock.written(Handle(1)), data);
                crate::support::capture::sendv_log(&mock, Handle(1), start)
            })
        })
        .join()
        .expect("run")
    }
    let a = run(42);
    let b = run(42);
    assert_eq!(a, b);
    assert!(a.iter().all(|r| r.1 <= 1500));
    assert_ne!(a, run(43), "another seed, another log");
}

// ---------------------------------------------------------------------------------------
// Every filter

fn every_filter(inner: SocketFunctions, bound: usize) -> Vec<(&'static str, SocketFunctions)> {
    vec![
        (
            "fault injector",
            FaultInjector::new(3, Faults::default().partial(1.0).short_reads(1.0))
                .max_per_call(bound)
                .wrap(inner.clone()),
        ),
        (
            "throttle",
            Throttle::per_socket(1 << 30, 1 << 20)
                .max_per_call(bound)
                .wrap(inner.clone()),
        ),
        (
            "capture",
            Capture::to_memory().0.max_per_call(bound).wrap(inner),
        ),
    ]
}

/// §1: "Datagrams are never cut: a datagram goes whole, whatever the bound."
#[test]
fn no_filter_cuts_a_datagram_whatever_its_bound() {
    run_paused(|| async {
        let mock = MockTransport::start();
        for (name, f) in every_filter(mock.functions(), 10) {
            let raw = open(&f, SocketKind::Datagram).await;
            let segs = vec![
                Bytes::from(vec![1u8; 40]),
                Bytes::from(vec![2u8; 40]),
                Bytes::from(vec![3u8; 20]),
            ];
            let answer = sendv(&f, raw.handle, segs, Some(mock_peer().into())).await;
            assert_eq!(answer.expect(name), Sent::Accepted(100), "{name}");
            let sent = mock.datagrams(raw.handle);
            assert_eq!(sent.len(), 1, "{name}");
            assert_eq!(sent[0].bytes.len(), 100, "{name}");
            // A datagram read is not cut either.
            mock.push_datagram(raw.handle, vec![9u8; 50], mock_peer());
            match recvfrom(&f, raw.handle, 1000).await.expect(name) {
                Received::Data { bytes, .. } => assert_eq!(bytes.len(), 50, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    });
}

/// An inner transport that takes more than it was handed.
struct OverAccepting;

impl Actor for OverAccepting {
    type Context = Context<Self>;
}

impl Handler<SendV> for OverAccepting {
    type Result = Result<Sent, TransportError>;
    fn handle(&mut self, msg: SendV, _: &mut Context<Self>) -> Self::Result {
        Ok(Sent::Accepted(msg.len() + 5))
    }
}

/// §4: "Link::sendv … turns an inner answer of more bytes than it was handed into
/// TransportError::OverAccepted" (a `with_sendv` override under each filter); a sendv on
/// a handle the filter did not open is `UnknownHandle`.
#[test]
fn every_filter_reports_an_over_accepting_inner_table_and_unknown_handles() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let inner = mock
            .functions()
            .with_sendv(OverAccepting.start().recipient());
        for (name, f) in every_filter(inner, 4) {
            let raw = open(&f, SocketKind::Stream).await;
            connect(&f, raw.handle, mock_peer()).await;
            let answer = sendv(&f, raw.handle, vec![Bytes::from_static(b"abcdefgh")], None).await;
            match answer {
                Err(TransportError::OverAccepted { accepted, offered }) => {
                    assert!(
                        offered <= 4 && accepted == offered + 5,
                        "{name}: {accepted}/{offered}"
                    );
                }
                other => panic!("{name}: {other:?}"),
            }
            let unknown = sendv(&f, Handle(9999), vec![Bytes::from_static(b"a")], None).await;
            assert!(
                matches!(unknown, Err(TransportError::UnknownHandle(Handle(9999)))),
                "{name}: {unknown:?}"
            );
            let unknown = recvfrom(&f, Handle(9999), 10).await;
            assert!(
                matches!(unknown, Err(TransportError::UnknownHandle(Handle(9999)))),
                "{name}: {unknown:?}"
            );
        }
    });
}

/// §1: "A filter's table always has bind, listen and accept; they answer
/// TransportError::Unsupported when the inner table lacks them."
#[test]
fn filters_over_a_table_without_listeners_answer_unsupported() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let bare = SocketFunctions::from_actor(mock.actor().clone());
        assert!(bare.bind().is_none());
        for (name, f) in every_filter(bare, 64) {
            let raw = open(&f, SocketKind::Stream).await;
            let bind = f
                .bind()
                .expect("bind is there")
                .send(Bind {
                    handle: raw.handle,
                    addr: mock_peer().into(),
                    reuse_port: false,
                })
                .await
                .expect("mailbox");
            assert!(
                matches!(bind, Err(TransportError::Unsupported(_))),
                "{name}: {bind:?}"
            );
            let listen = f
                .listen()
                .expect("listen is there")
                .send(Listen {
                    handle: raw.handle,
                    backlog: 1,
                })
                .await
                .expect("mailbox");
            assert!(
                matches!(listen, Err(TransportError::Unsupported(_))),
                "{name}"
            );
            let accept = f
                .accept()
                .expect("accept is there")
                .send(Accept {
                    handle: raw.handle,
                    events: raw._keep.downgrade(),
                })
                .await
                .expect("mailbox");
            assert!(
                matches!(accept, Err(TransportError::Unsupported(_))),
                "{name}"
            );
        }
    });
}

// ---------------------------------------------------------------------------------------
// Capture and Replay

/// A sink that counts its calls and fails each in a given way.
struct BadSink {
    calls: Arc<AtomicUsize>,
    kind: io::ErrorKind,
}

impl io::Write for BadSink {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(self.kind.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(self.kind.into())
    }
}

/// §8 The sink: an error, or a would-block past `buffer_limit`, ends the capture (the
/// sink is never called again); traffic is never affected.
#[test]
fn a_failing_capture_sink_ends_the_capture_and_never_touches_traffic() {
    run_paused(|| async {
        for (kind, limit) in [
            (io::ErrorKind::Other, 4 << 20),
            (io::ErrorKind::WouldBlock, 200),
        ] {
            let mock = MockTransport::start();
            let calls = Arc::new(AtomicUsize::new(0));
            let capture = Capture::new(BadSink {
                calls: calls.clone(),
                kind,
            })
            .flush_at(0)
            .buffer_limit(limit);
            let f = capture.wrap(mock.functions());
            let socket = Socket::builder()
                .functions(f)
                .connect(mock_peer())
                .await
                .expect("connect");
            let data = pattern(5000, 1);
            for chunk in data.chunks(500) {
                socket
                    .send(Write::new(Bytes::copy_from_slice(chunk)))
                    .await
                    .expect("mailbox")
                    .expect("traffic unaffected");
            }
            let after_writes = calls.load(Ordering::SeqCst);
            assert!(after_writes >= 1, "{kind:?}: the sink was tried");
            for chunk in data.chunks(500) {
                socket
                    .send(Write::new(Bytes::copy_from_slice(chunk)))
                    .await
                    .expect("mailbox")
                    .expect("traffic unaffected");
            }
            socket.do_send(Close::Graceful);
            tokio::time::sleep(Duration::from_millis(10)).await;
            settle().await;
            assert_eq!(mock.written(Handle(1)).len(), 10_000, "{kind:?}");
            assert_eq!(
                calls.load(Ordering::SeqCst),
                after_writes,
                "{kind:?}: the sink is never called again once the capture ended"
            );
        }
    });
}

/// §8 file format: an empty file is a typed error at offset 0; a header alone is a valid
/// empty capture, which replays without a panic.
#[test]
fn empty_captures_are_typed_and_a_header_alone_replays() {
    let mut reader = CaptureReader::new(&b""[..]);
    assert!(matches!(
        reader.next(),
        Some(Err(CaptureError::Truncated { offset: 0, .. }))
    ));
    assert!(reader.next().is_none());
    let header = {
        let mut h = b"SKACTCAP".to_vec();
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h
    };
    assert_eq!(CaptureReader::new(&header[..]).count(), 0);
    // The reserved field is ignored by version-1 readers.
    let mut reserved = header.clone();
    reserved[10] = 0xAB;
    assert_eq!(CaptureReader::new(&reserved[..]).count(), 0);
    run_paused(|| async move {
        assert!(Replay::from_reader(&b""[..]).is_err());
        let replay = Replay::from_reader(&header[..]).expect("a valid empty capture");
        assert_eq!(replay.handle(Handle(1)), None);
        let socket = Socket::builder()
            .functions(replay.functions())
            .connect(mock_peer())
            .await
            .expect("connect");
        socket
            .send(Write::new(&b"free"[..]))
            .await
            .expect("mailbox")
            .expect("the mock's default step");
    });
}

/// §8: a capture below a fault injector sees what the inner transport saw; above it,
/// what the socket saw; both record every accepted count as exactly the accepted front
/// bytes, and the socket's stream equals the bytes the records say were accepted.
#[test]
fn captures_above_and_below_an_injector_agree_with_the_mock() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (below, below_file) = Capture::to_memory();
        let (above, above_file) = Capture::to_memory();
        let faults = Faults::default()
            .partial(0.6)
            .would_block(0.3, Duration::from_millis(3))
            .delay(0.3, Duration::from_millis(2));
        let f = above.wrap(
            FaultInjector::new(9, faults)
                .max_per_call(700)
                .wrap(below.max_per_call(500).wrap(mock.functions())),
        );
        let socket = Socket::builder()
            .functions(f)
            .connect(mock_peer())
            .await
            .expect("connect");
        let data = pattern(6000, 4);
        let mut answers = Vec::new();
        for chunk in data.chunks(1000) {
            answers.push(socket.send(Write::new(Bytes::copy_from_slice(chunk))));
        }
        for a in answers {
            a.await.expect("mailbox").expect("written");
        }
        socket.do_send(Close::Graceful);
        tokio::time::sleep(Duration::from_millis(20)).await;
        settle().await;
        let below = crate::support::capture::records(&below_file.contents());
        let above = crate::support::capture::records(&above_file.contents());
        assert_eq!(
            crate::support::capture::accepted_bytes(&below, Handle(1)),
            data
        );
        assert_eq!(
            crate::support::capture::accepted_bytes(&above, Handle(1)),
            data
        );
        assert_eq!(mock.written(Handle(1)), data);
        let below_sends = below
            .iter()
            .filter(|r| matches!(r.event, sockactor::filters::CaptureEvent::SendV { .. }))
            .count();
        assert_eq!(below_sends, mock.sendv_calls(Handle(1)), "call for call");
        for r in &below {
            if let sockactor::filters::CaptureEvent::SendV {
                answer: sockactor::filters::SendAnswer::Accepted(b),
                ..
            } = &r.event
            {
                assert!(b.len() <= 500, "below: per-call bound");
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// SimNetwork

fn sim(seed: u64) -> SimNetwork {
    SimNetwork::start(SimConfig {
        seed,
        latency: (Duration::from_millis(5), Duration::from_millis(5)),
        partial_accept: 0.0,
        ..SimConfig::default()
    })
}

/// A listener on the network, and a connection to it: (client, server) handles.
struct SimPair {
    f: SocketFunctions,
    client: Raw,
    server: Raw,
    _listener: Raw,
}

async fn sim_pair(net: &SimNetwork) -> SimPair {
    let f = net.functions();
    let listener = open(&f, SocketKind::Stream).await;
    let addr = SocketAddr::from(([10, 0, 0, 1], 80));
    f.bind()
        .unwrap()
        .send(Bind {
            handle: listener.handle,
            addr: addr.into(),
            reuse_port: false,
        })
        .await
        .unwrap()
        .unwrap();
    f.listen()
        .unwrap()
        .send(Listen {
            handle: listener.handle,
            backlog: 4,
        })
        .await
        .unwrap()
        .unwrap();
    let client = open(&f, SocketKind::Stream).await;
    connect(&f, client.handle, addr).await;
    let (keep, ready) = channel::<Ready>();
    let accepted = f
        .accept()
        .unwrap()
        .send(Accept {
            handle: listener.handle,
            events: keep.downgrade(),
        })
        .await
        .unwrap()
        .unwrap();
    let Accepted::Connection { handle, .. } = accepted else {
        panic!("{accepted:?}");
    };
    SimPair {
        f,
        client,
        server: Raw {
            handle,
            _keep: keep,
            ready,
        },
        _listener: listener,
    }
}

/// Control: without a partition, 5 ms of latency.
#[test]
fn sim_data_arrives_after_its_latency() {
    run_paused(|| async {
        let net = sim(1);
        let p = sim_pair(&net).await;
        assert_eq!(
            sendv(
                &p.f,
                p.client.handle,
                vec![Bytes::from_static(b"hello")],
                None
            )
            .await
            .unwrap(),
            Sent::Accepted(5)
        );
        tokio::time::sleep(Duration::from_millis(6)).await;
        settle().await;
        assert!(matches!(
            recvfrom(&p.f, p.server.handle, 100).await.unwrap(),
            Received::Data { .. }
        ));
    });
}

/// `SimNetwork::partition`: "Nothing arrives, and no connect completes, for `length`
/// from now; what was sent meanwhile arrives after it, in order." Bytes sent 0 ms
/// before the partition (5 ms of latency) arrive 5 ms into a 100 ms partition.
#[test]
fn sim_nothing_arrives_during_a_partition_not_even_what_was_in_flight() {
    run_paused(|| async {
        let net = sim(1);
        let p = sim_pair(&net).await;
        assert_eq!(
            sendv(
                &p.f,
                p.client.handle,
                vec![Bytes::from_static(b"hello")],
                None
            )
            .await
            .unwrap(),
            Sent::Accepted(5)
        );
        net.partition(Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(50)).await;
        settle().await;
        let during = recvfrom(&p.f, p.server.handle, 100).await.unwrap();
        assert_eq!(
            during,
            Received::WouldBlock,
            "50 ms into a 100 ms partition, something arrived"
        );
    });
}

/// The same for a connect asked 1 ms before the partition: it completes 9 ms into it.
#[test]
fn sim_no_connect_completes_during_a_partition() {
    run_paused(|| async {
        let net = sim(2);
        let f = net.functions();
        let listener = open(&f, SocketKind::Stream).await;
        let addr = SocketAddr::from(([10, 0, 0, 1], 80));
        f.bind()
            .unwrap()
            .send(Bind {
                handle: listener.handle,
                addr: addr.into(),
                reuse_port: false,
            })
            .await
            .unwrap()
            .unwrap();
        f.listen()
            .unwrap()
            .send(Listen {
                handle: listener.handle,
                backlog: 4,
            })
            .await
            .unwrap()
            .unwrap();
        let client = open(&f, SocketKind::Stream).await;
        let start = Instant::now();
        let connecting = actix::spawn(f.connect().send(Connect {
            handle: client.handle,
            addr: addr.into(),
        }));
        tokio::time::sleep(MS).await;
        net.partition(Duration::from_millis(100));
        connecting.await.unwrap().unwrap().expect("connected");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(101),
            "the connect completed {took:?} after it was asked, inside the partition (1..101 ms)"
        );
    });
}

/// `SimCounts::resets`: "Connections reset (by chance, by data sent to a closed end, by a
/// close with unread bytes, or by SimNetwork::reset)". One connection, closed by the
/// server with unread bytes, to which the client then sends once more before the reset
/// reaches it: one connection reset.
#[test]
fn sim_counts_one_reset_for_one_connection() {
    run_paused(|| async {
        let net = sim(3);
        let p = sim_pair(&net).await;
        sendv(
            &p.f,
            p.client.handle,
            vec![Bytes::from_static(b"unread")],
            None,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        p.f.close()
            .send(CloseSocket {
                handle: p.server.handle,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(net.counts().resets, 1, "the close with unread bytes");
        tokio::time::sleep(MS).await;
        let again = sendv(
            &p.f,
            p.client.handle,
            vec![Bytes::from_static(b"more")],
            None,
        )
        .await;
        assert!(again.is_err() || matches!(again, Ok(Sent::Accepted(_))));
        tokio::time::sleep(Duration::from_millis(20)).await;
        settle().await;
        let counts: SimCounts = net.counts();
        assert_eq!(
            counts.resets, 1,
            "one connection reset, counted {} times ({counts:?})",
            counts.resets
        );
    });
}

/// Datagram loss counters: probability 1.0 loses every datagram, 0.0 none; a datagram to
/// an unbound address is lost too.
#[test]
fn sim_datagram_loss_is_counted() {
    run_paused(|| async {
        for (loss, expect_lost) in [(1.0, 10u64), (0.0, 0)] {
            let net = SimNetwork::start(SimConfig {
                seed: 4,
                datagram_loss: loss,
                ..SimConfig::default()
            });
            let f = net.functions();
            let a = open(&f, SocketKind::Datagram).await;
            let b = open(&f, SocketKind::Datagram).await;
            let baddr = f
                .bind()
                .unwrap()
                .send(Bind {
                    handle: b.handle,
                    addr: SocketAddr::from(([10, 0, 1, 1], 5000)).into(),
                    reuse_port: false,
                })
                .await
                .unwrap()
                .unwrap();
            for _ in 0..10 {
                let sent = sendv(
                    &f,
                    a.handle,
                    vec![Bytes::from_static(b"dg")],
                    Some(baddr.clone()),
                )
                .await
                .unwrap();
                assert_eq!(sent, Sent::Accepted(2));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            settle().await;
            assert_eq!(net.counts().datagrams_lost, expect_lost, "loss {loss}");
            let mut received = 0;
            while let Ok(Received::Data { .. }) = recvfrom(&f, b.handle, 100).await {
                received += 1;
            }
            assert_eq!(received + expect_lost, 10);
            sendv(
                &f,
                a.handle,
                vec![Bytes::from_static(b"nobody")],
                Some(SocketAddr::from(([10, 9, 9, 9], 1)).into()),
            )
            .await
            .unwrap();
            assert_eq!(net.counts().datagrams_lost, expect_lost + 1);
        }
    });
}

/// `SimNetwork::trace_hash`: "two runs with the same seed and the same program have the
/// same hash", here with a fault injector and a throttle stacked over the network on
/// both ends and an echo server.
#[test]
fn the_same_seed_gives_the_same_trace_through_stacked_filters_on_the_sim() {
    fn run(seed: u64) -> (u64, SimCounts, usize) {
        std::thread::spawn(move || {
            run_paused(|| async move {
                let net = SimNetwork::start(SimConfig {
                    seed,
                    partial_accept: 0.3,
                    buffer: 4096,
                    ..SimConfig::default()
                });
                let faults = Faults::default()
                    .partial(0.4)
                    .would_block(0.2, Duration::from_millis(3))
                    .delay(0.2, Duration::from_millis(2))
                    .short_reads(0.5)
                    .read_would_block(0.2, Duration::from_millis(2))
                    .read_delay(0.2, Duration::from_millis(1));
                let server_f = FaultInjector::new(seed ^ 1, faults).wrap(net.functions());
                let server = EchoServer::default().start();
                let (f2, s2) = (server_f.clone(), server.clone());
                let (_listener, addr) = Listener::builder()
                    .functions(server_f)
                    .subscriber(server.clone().recipient())
                    .socket_builder(move |_| {
                        Socket::builder()
                            .functions(f2.clone())
                            .subscriber(s2.clone().recipient())
                    })
                    .bind(SocketAddr::from(([10, 0, 0, 1], 80)))
                    .await
                    .expect("bind");
                let client_f = Throttle::per_socket(100_000, 4096)
                    .wrap(FaultInjector::new(seed, faults).wrap(net.functions()));
                let recorder = Recorder::default();
                let socket = Socket::builder()
                    .functions(client_f)
                    .subscriber(recorder.start().recipient())
                    .connect(addr)
                    .await
                    .expect("connect");
                let data = pattern(20_000, seed);
                let mut answers = Vec::new();
                for chunk in data.chunks(3000) {
                    answers.push(socket.send(Write::new(Bytes::copy_from_slice(chunk))));
                }
                for a in answers {
                    a.await.expect("mailbox").expect("written");
                }
                for _ in 0..2000 {
                    if recorder.received().len() >= data.len() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                assert_eq!(recorder.received(), data, "echoed byte exact");
                socket.do_send(Close::Graceful);
                tokio::time::sleep(Duration::from_secs(1)).await;
                settle().await;
                (net.trace_hash(), net.counts(), recorder.received().len())
            })
        })
        .join()
        .expect("run")
    }
    let a = run(7);
    let b = run(7);
    assert_eq!(a, b, "same seed, same trace");
    let c = run(8);
    assert_ne!(a.0, c.0, "another seed, another trace");
}

/// `SimConfig::partial_accept`: "Probability that a `sendv` takes only part of what it
/// could." At 1.0, with room for everything, every 10-byte `sendv` takes fewer than 10.
#[test]
fn sim_partial_accept_of_one_always_takes_only_part() {
    run_paused(|| async {
        let net = SimNetwork::start(SimConfig {
            seed: 5,
            latency: (Duration::from_millis(5), Duration::from_millis(5)),
            partial_accept: 1.0,
            buffer: 1 << 20,
            ..SimConfig::default()
        });
        let p = sim_pair(&net).await;
        let mut whole = 0;
        for _ in 0..50 {
            match sendv(
                &p.f,
                p.client.handle,
                vec![Bytes::from_static(b"0123456789")],
                None,
            )
            .await
            .unwrap()
            {
                Sent::Accepted(10) => whole += 1,
                Sent::Accepted(n) => assert!(n >= 1),
                Sent::WouldBlock => panic!("room for everything"),
            }
        }
        assert_eq!(
            whole, 0,
            "{whole} of 50 calls at partial_accept 1.0 took everything"
        );
    });
}
