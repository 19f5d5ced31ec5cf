//! From the thirteenth round of the independent review: byte layers (TLS, deflate, user
//! layers) under hostile transports (injected faults below and around the layers,
//! resets at random calls, garbage and `close_notify` from the peer, key updates, a
//! trickling transport, throttles, captures), checked against a rustls or layered
//! peer: every write answered once and truthfully, the peer reading exactly the writes
//! answered `Ok`, nothing delivered after `Closed`; and writers used from many threads
//! at once over loopback, each keeping its program order.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use sockactor::filters::{Compress, Decoded, FaultInjector, Faults, Layer, Tls};
use sockactor::messages::{Close, GetStats, GetWriter, Handle, SocketEventKind, Write};
use sockactor::{MockTransport, SendStep, Socket, SocketConfig, SocketFunctions, WriteError};

use crate::support::tls::{client_config, pki, Pki};
use crate::support::{mock_peer, pattern, run_paused, settle, Recorder};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

use crate::support::sim::Rng;

/// A rustls server at the far end of a mock handle that never panics: it records
/// plaintext, whether it saw the client's close_notify, and any TLS error.
struct Peer {
    server: rustls::ServerConnection,
    handle: Handle,
    seen: usize,
    received: Vec<u8>,
    closed_notify: bool,
    error: Option<String>,
}

impl Peer {
    fn new(config: Arc<rustls::ServerConfig>, handle: Handle) -> Self {
        Peer {
            server: rustls::ServerConnection::new(config).expect("server"),
            handle,
            seen: 0,
            received: Vec::new(),
            closed_notify: false,
            error: None,
        }
    }

    fn pump(&mut self, mock: &MockTransport) {
        use std::io::Read;
        let written = mock.written(self.handle);
        if self.error.is_none() {
            let mut fresh = &written[self.seen..];
            while !fresh.is_empty() {
                if let Err(e) = self.server.read_tls(&mut fresh) {
                    self.error = Some(format!("read_tls: {e}"));
                    break;
                }
                if let Err(e) = self.server.process_new_packets() {
                    self.error = Some(format!("process: {e}"));
                    break;
                }
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match self.server.reader().read(&mut buf) {
                        Ok(0) => {
                            self.closed_notify = true;
                            break;
                        }
                        Ok(n) => self.received.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            self.error = Some(format!("read: {e}"));
                            break;
                        }
                    }
                }
            }
        }
        self.seen = written.len();
        let mut out = Vec::new();
        while self.server.wants_write() {
            self.server.write_tls(&mut out).expect("write_tls");
        }
        if !out.is_empty() {
            mock.push_inbound(self.handle, out);
        }
    }

    fn seal(&mut self, data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        self.server.writer().write_all(data).expect("server write");
        let mut out = Vec::new();
        while self.server.wants_write() {
            self.server.write_tls(&mut out).expect("write_tls");
        }
        out
    }

    fn close_notify_bytes(&mut self) -> Vec<u8> {
        self.server.send_close_notify();
        let mut out = Vec::new();
        while self.server.wants_write() {
            self.server.write_tls(&mut out).expect("write_tls");
        }
        out
    }
}

fn tls_client(pki: &Pki) -> Tls {
    Tls::client(client_config(pki.roots.clone()), "localhost").expect("server name")
}

/// Connects `builder` over `functions` (TLS over the mock, handle 1) to a [`Peer`].
async fn connect_tls(
    mock: &MockTransport,
    builder: sockactor::SocketBuilder,
    functions: SocketFunctions,
    server: Arc<rustls::ServerConfig>,
) -> (Addr<Socket>, Peer) {
    let connecting =
        actix::spawn(async move { builder.functions(functions).connect(mock_peer()).await });
    let mut peer = Peer::new(server, Handle(1));
    for _ in 0..200 {
        settle().await;
        peer.pump(mock);
        if connecting.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let socket = connecting.await.expect("join").expect("handshake");
    settle().await;
    peer.pump(mock);
    (socket, peer)
}

type Answer = actix::prelude::Request<Socket, Write>;

/// A spawned write's answer.
type SpawnedAnswer =
    tokio::task::JoinHandle<Result<Result<sockactor::messages::Written, WriteError>, MailboxError>>;

/// Fires `n` writes of random sizes (0 to 40 KiB, some zero-length) and returns the
/// payloads and the spawned answers.
fn fire_writes(
    socket: &Addr<Socket>,
    rng: &mut Rng,
    n: usize,
) -> (Vec<Vec<u8>>, Vec<SpawnedAnswer>) {
    let mut payloads = Vec::new();
    let mut answers = Vec::new();
    for i in 0..n {
        let len = match rng.below(6) {
            0 => 0,
            1 => 1 + rng.below(16) as usize,
            2 => 1 + rng.below(600) as usize,
            3 => 1 + rng.below(5000) as usize,
            4 => 16_000 + rng.below(2000) as usize,
            _ => 1 + rng.below(40_000) as usize,
        };
        let data = pattern(len, i as u64 * 7 + rng.below(1000));
        let fut: Answer = socket.send(Write::new(data.clone()).wait_when_full());
        answers.push(actix::spawn(fut));
        payloads.push(data);
    }
    (payloads, answers)
}

async fn pump_until_done<T>(
    mock: &MockTransport,
    peer: &mut Peer,
    answers: &[tokio::task::JoinHandle<T>],
    max_ms: u64,
) {
    for _ in 0..max_ms {
        settle().await;
        peer.pump(mock);
        if answers.iter().all(|a| a.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    settle().await;
    peer.pump(mock);
}

fn plaintext_leaked(wire: &[u8], payloads: &[Vec<u8>]) -> bool {
    // Any 32-byte window of a written payload on the wire is a leak.
    payloads.iter().filter(|p| p.len() >= 64).any(|p| {
        let probe = &p[16..48];
        wire.windows(32).any(|w| w == probe)
    })
}

// ---------------------------------------------------------------------------------------
// 1. TLS under a hostile transport (mock, paused time)
// ---------------------------------------------------------------------------------------

fn write_faults() -> Faults {
    Faults::default()
        .partial(0.5)
        .would_block(0.3, Duration::from_millis(3))
        .delay(0.2, Duration::from_millis(4))
        .short_reads(0.5)
        .read_would_block(0.2, Duration::from_millis(2))
}

/// With faults under (or around) the TLS layer, every write is answered Ok with its
/// length, the rustls peer decrypts exactly the writes in order, no plaintext reaches
/// the wire, and the counters agree.
fn tls_round_trip_under_faults(seed: u64, injector_outside: bool) {
    run_paused(|| async move {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let functions = if injector_outside {
            FaultInjector::new(seed, write_faults()).wrap(
                tls_client(&pki)
                    .max_buffered(8 * 1024)
                    .wrap(mock.functions()),
            )
        } else {
            tls_client(&pki)
                .max_buffered(8 * 1024)
                .wrap(FaultInjector::new(seed, write_faults()).wrap(mock.functions()))
        };
        let recorder = Recorder::default();
        let (socket, mut peer) = connect_tls(
            &mock,
            Socket::builder().subscriber(recorder.start().recipient()),
            functions,
            pki.server.clone(),
        )
        .await;
        let mut rng = Rng(seed);
        let (payloads, answers) = fire_writes(&socket, &mut rng, 40);
        pump_until_done(&mock, &mut peer, &answers, 20_000).await;
        // The outbox drains after the answers (Ok means taken by the layer).
        for _ in 0..500 {
            settle().await;
            peer.pump(&mock);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut expected = Vec::new();
        for (i, (p, a)) in payloads.iter().zip(answers).enumerate() {
            assert!(a.is_finished(), "seed {seed}: write {i} never answered");
            let w = a
                .await
                .expect("join")
                .expect("mailbox")
                .unwrap_or_else(|e| panic!("seed {seed}: write {i} failed: {e}"));
            assert_eq!(
                w.len,
                p.len(),
                "seed {seed}: write {i} answered another length"
            );
            expected.extend_from_slice(p);
        }
        assert_eq!(peer.error, None, "seed {seed}: the peer saw bad TLS");
        assert_eq!(
            peer.received.len(),
            expected.len(),
            "seed {seed}: the peer decrypted another length"
        );
        assert!(
            peer.received == expected,
            "seed {seed}: the peer decrypted other bytes"
        );
        assert!(
            !peer.closed_notify,
            "seed {seed}: close_notify before any close"
        );
        assert!(
            !plaintext_leaked(&mock.written(Handle(1)), &payloads),
            "seed {seed}: plaintext on the wire"
        );
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(stats.writes, 40, "seed {seed}: {stats:?}");
        assert_eq!(stats.writes_completed, 40, "seed {seed}: {stats:?}");
        assert_eq!(stats.writes_failed, 0, "seed {seed}: {stats:?}");
        assert_eq!(stats.queued_bytes, 0, "seed {seed}: {stats:?}");
        assert_eq!(stats.queued_writes, 0, "seed {seed}: {stats:?}");
        // A graceful close: the peer reads close_notify after every byte.
        socket.do_send(Close::Graceful);
        for _ in 0..2000 {
            settle().await;
            peer.pump(&mock);
            if peer.closed_notify {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            peer.closed_notify,
            "seed {seed}: no close_notify after a graceful close"
        );
        assert!(
            peer.received == expected,
            "seed {seed}: bytes after close_notify"
        );
        for _ in 0..100 {
            settle().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let closed = recorder.count(|e| matches!(e, SocketEventKind::Closed { .. }));
        assert_eq!(closed, 1, "seed {seed}: Closed heard {closed} times");
    })
}

#[test]
fn tls_under_injected_faults_below_the_layer_round_trips_every_write() {
    for seed in 1..=12 {
        tls_round_trip_under_faults(seed, false);
    }
}

#[test]
fn tls_under_injected_faults_around_the_layered_table_round_trips_every_write() {
    for seed in 1..=12 {
        tls_round_trip_under_faults(seed, true);
    }
}

/// A permanent failure at a random call: every write answered exactly once; the Ok
/// answers are a prefix of the writes, then one write may have got partway, then every
/// other fails with 0 bytes; the peer decrypts a prefix of what was answered; one
/// `Closed` carrying the cause; nothing after `Closed`.
fn tls_fails_at_random_call(seed: u64) {
    run_paused(|| async move {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let mut rng = Rng(seed ^ 0xABCD);
        // The handshake needs a few calls; fail after some later ones.
        let mut script = Vec::new();
        for _ in 0..(4 + rng.below(30)) {
            script.push(match rng.below(3) {
                0 => SendStep::Accept(1 + rng.below(3000) as usize),
                1 => SendStep::WouldBlock(Duration::from_millis(rng.below(4))),
                _ => SendStep::AcceptAll,
            });
        }
        script.push(SendStep::Fail(io::ErrorKind::ConnectionReset));
        mock.script_sendv(Handle(1), script);
        let recorder = Recorder::default();
        let functions = tls_client(&pki).max_buffered(4096).wrap(mock.functions());
        let connecting = {
            let sub = recorder.start().recipient();
            actix::spawn(async move {
                Socket::builder()
                    .subscriber(sub)
                    .functions(functions)
                    .connect(mock_peer())
                    .await
            })
        };
        let mut peer = Peer::new(pki.server.clone(), Handle(1));
        for _ in 0..200 {
            settle().await;
            peer.pump(&mock);
            if connecting.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let Ok(socket) = connecting.await.expect("join") else {
            return; // the failure hit the handshake: a failed connect, fine
        };
        let (payloads, answers) = fire_writes(&socket, &mut rng, 30);
        pump_until_done(&mock, &mut peer, &answers, 5_000).await;
        let mut stream = Vec::new();
        let mut failed = false;
        for (i, (p, a)) in payloads.iter().zip(answers).enumerate() {
            assert!(a.is_finished(), "seed {seed}: write {i} never answered");
            match a.await.expect("join").expect("mailbox") {
                Ok(w) => {
                    assert!(
                        !failed,
                        "seed {seed}: write {i} Ok after an earlier failure"
                    );
                    assert_eq!(w.len, p.len());
                    stream.extend_from_slice(p);
                }
                Err(e) => {
                    let sent = e.bytes_sent();
                    assert!(sent <= p.len(), "seed {seed}: {e}");
                    if failed {
                        assert_eq!(sent, 0, "seed {seed}: write {i} after the failure: {e}");
                    } else if p.is_empty() {
                        // fine
                    }
                    stream.extend_from_slice(&p[..sent]);
                    failed = true;
                }
            }
        }
        assert!(
            stream.starts_with(&peer.received),
            "seed {seed}: the peer decrypted bytes that were not answered as sent"
        );
        for _ in 0..100 {
            settle().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let events = recorder.events.lock().expect("lock");
        let closed: Vec<_> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, SocketEventKind::Closed { .. }))
            .collect();
        if failed {
            assert_eq!(closed.len(), 1, "seed {seed}: {events:?}");
            let (at, e) = closed[0];
            assert!(
                matches!(e, SocketEventKind::Closed { cause: Some(_) }),
                "seed {seed}: closed without its cause: {e:?}"
            );
            assert!(
                events[at + 1..]
                    .iter()
                    .all(|e| matches!(e, SocketEventKind::WriteFailed { .. })),
                "seed {seed}: events after Closed: {:?}",
                &events[at + 1..]
            );
        }
    })
}

#[test]
fn a_tls_socket_failing_at_a_random_call_answers_every_write_truthfully() {
    for seed in 1..=30 {
        tls_fails_at_random_call(seed);
    }
}

/// Runs a connected TLS socket over a plain mock with a recorder; returns everything.
async fn tls_pair(
    pki: &Pki,
    mock: &MockTransport,
    config: SocketConfig,
) -> (Addr<Socket>, Peer, Recorder) {
    let recorder = Recorder::default();
    let (socket, peer) = connect_tls(
        mock,
        Socket::builder()
            .config(config)
            .subscriber(recorder.start().recipient()),
        tls_client(pki).wrap(mock.functions()),
        pki.server.clone(),
    )
    .await;
    (socket, peer, recorder)
}

async fn idle(ms: u64) {
    for _ in 0..(ms / 5).max(1) {
        settle().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    settle().await;
}

/// Records after the peer's close_notify (spliced in by an attacker or a buggy peer)
/// never reach the subscriber: the layer said `End`, "nothing comes after".
#[test]
fn nothing_is_delivered_after_the_peers_close_notify() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let (_socket, mut peer, recorder) = tls_pair(&pki, &mock, SocketConfig::default()).await;
        let mut wire = peer.seal(b"before");
        wire.extend(peer.close_notify_bytes());
        // A record rustls makes after its close_notify (if it makes one), else garbage.
        let after = peer.seal(b"AFTER-CLOSE-NOTIFY");
        if after.is_empty() {
            wire.extend_from_slice(&[23, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
        } else {
            wire.extend(after);
        }
        mock.push_inbound(Handle(1), wire);
        idle(100).await;
        let received = recorder.received();
        let events = recorder.events.lock().expect("lock");
        assert_eq!(received, b"before", "events: {events:?}");
        let eof_at = events
            .iter()
            .position(|e| matches!(e, SocketEventKind::Eof))
            .unwrap_or_else(|| panic!("no Eof: {events:?}"));
        assert!(
            !events[eof_at..]
                .iter()
                .any(|e| matches!(e, SocketEventKind::Received(_))),
            "data after Eof: {events:?}"
        );
    })
}

/// Half-open TLS (the README's default): after the peer's close_notify the subscriber
/// hears `Eof` and may still write; the peer decrypts the writes, then the socket's own
/// close_notify at `Close::Graceful`.
#[test]
fn a_tls_socket_keeps_writing_after_the_peers_close_notify() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let (socket, mut peer, recorder) = tls_pair(&pki, &mock, SocketConfig::default()).await;
        let cn = peer.close_notify_bytes();
        mock.push_inbound(Handle(1), cn);
        idle(50).await;
        assert_eq!(recorder.count(|e| matches!(e, SocketEventKind::Eof)), 1);
        let w = socket
            .send(Write::new(&b"still talking"[..]))
            .await
            .expect("mailbox")
            .expect("a write after the peer's close_notify");
        assert_eq!(w.len, 13);
        idle(50).await;
        peer.pump(&mock);
        assert_eq!(peer.error, None);
        assert_eq!(peer.received, b"still talking");
        socket.do_send(Close::Graceful);
        idle(100).await;
        peer.pump(&mock);
        assert!(peer.closed_notify, "no close_notify at the close");
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Closed { .. })),
            1
        );
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::ReadFailed(_))),
            0,
            "{:?}",
            recorder.events.lock().unwrap()
        );
    })
}

/// With `close_on_eof`, the peer's close_notify closes the socket gracefully: the queued
/// writes go out first (transport holding them until released), then its close_notify;
/// `Closed` follows `Eof`.
#[test]
fn close_on_eof_after_close_notify_sends_queued_writes_then_close_notify() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let config = SocketConfig {
            close_on_eof: true,
            ..SocketConfig::default()
        };
        let (socket, mut peer, recorder) = tls_pair(&pki, &mock, config).await;
        mock.set_default_step(SendStep::Hold);
        let data = pattern(300_000, 5);
        let answer = actix::spawn(socket.send(Write::new(data.clone())));
        idle(20).await;
        let cn = peer.close_notify_bytes();
        mock.push_inbound(Handle(1), cn);
        idle(20).await;
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        for _ in 0..200 {
            idle(5).await;
            peer.pump(&mock);
        }
        let w = answer
            .await
            .expect("join")
            .expect("mailbox")
            .expect("written");
        assert_eq!(w.len, data.len());
        assert_eq!(peer.error, None);
        assert!(
            peer.received == data,
            "peer got {} bytes",
            peer.received.len()
        );
        assert!(peer.closed_notify);
        let kinds: Vec<_> = recorder.picked(|e| match e {
            SocketEventKind::Eof => Some("eof"),
            SocketEventKind::Closed { .. } => Some("closed"),
            SocketEventKind::ReadFailed(_) => Some("readfailed"),
            _ => None,
        });
        assert_eq!(kinds, ["eof", "closed"]);
    })
}

/// Garbage from the peer while writes are queued behind a held transport: one read
/// failure carrying the rustls error, one `Closed`, every write answered once, nothing
/// received after the failure.
#[test]
fn garbage_from_the_peer_mid_stream_fails_reading_once_and_answers_every_write() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let (socket, mut peer, recorder) = tls_pair(&pki, &mock, SocketConfig::default()).await;
        mock.set_default_step(SendStep::Hold);
        let mut rng = Rng(77);
        let (payloads, answers) = fire_writes(&socket, &mut rng, 20);
        idle(20).await;
        let mut wire = peer.seal(b"good");
        wire.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x20]);
        wire.extend_from_slice(&[0x5a; 0x20]);
        mock.push_inbound(Handle(1), wire);
        idle(50).await;
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        idle(12_000).await;
        for (i, (p, a)) in payloads.iter().zip(answers).enumerate() {
            assert!(a.is_finished(), "write {i} never answered");
            match a.await.expect("join") {
                Ok(Ok(w)) => assert_eq!(w.len, p.len()),
                Ok(Err(e)) => assert!(e.bytes_sent() <= p.len()),
                Err(e) => panic!("write {i}: no answer from the socket ({e})"),
            }
        }
        let events = recorder.events.lock().expect("lock");
        let fails = events
            .iter()
            .filter(|e| matches!(e, SocketEventKind::ReadFailed(_)))
            .count();
        assert_eq!(fails, 1, "{events:?}");
        let failure = events
            .iter()
            .find_map(|e| match e {
                SocketEventKind::ReadFailed(e) => Some(e.clone()),
                _ => None,
            })
            .unwrap();
        assert!(
            failure.tls().is_some(),
            "the rustls error is not inside: {failure:?}"
        );
        let at = events
            .iter()
            .position(|e| matches!(e, SocketEventKind::ReadFailed(_)))
            .unwrap();
        assert!(
            !events[at..]
                .iter()
                .any(|e| matches!(e, SocketEventKind::Received(_))),
            "{events:?}"
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, SocketEventKind::Closed { .. }))
                .count(),
            1,
            "{events:?}"
        );
        drop(events);
        assert_eq!(recorder.received(), b"good");
    })
}

/// A zero-length write through TLS is answered Ok in order and sends nothing (no empty
/// record, no `sendv`).
#[test]
fn zero_length_writes_through_tls_send_nothing() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let (socket, mut peer, _recorder) = tls_pair(&pki, &mock, SocketConfig::default()).await;
        idle(20).await;
        let before = (mock.written(Handle(1)).len(), mock.sendv_calls(Handle(1)));
        for _ in 0..5 {
            let w = socket
                .send(Write::new(Bytes::new()))
                .await
                .expect("mailbox")
                .expect("an empty write is answered Ok");
            assert_eq!(w.len, 0);
        }
        let writer = socket.send(GetWriter).await.expect("writer");
        writer.write(Bytes::new()).expect("admitted");
        let w = writer.write_answered(Bytes::new()).await.expect("Ok");
        assert_eq!(w.len, 0);
        idle(20).await;
        let after = (mock.written(Handle(1)).len(), mock.sendv_calls(Handle(1)));
        assert_eq!(before, after, "empty writes put bytes on the wire");
        peer.pump(&mock);
        assert!(peer.received.is_empty());
    })
}

/// One 6 MiB write through TLS over a transport taking 1000 bytes per call: the plaintext
/// answered as taken never runs more than the outbox bound ahead of the ciphertext the
/// transport took, and the peer decrypts it all.
#[test]
fn a_huge_tls_write_over_a_trickling_transport_keeps_the_outbox_bounded() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let bound = 32 * 1024;
        let (socket, mut peer) = connect_tls(
            &mock,
            Socket::builder().subscriber(recorder.start().recipient()),
            tls_client(&pki).max_buffered(bound).wrap(mock.functions()),
            pki.server.clone(),
        )
        .await;
        mock.set_default_step(SendStep::Accept(1000));
        let data = pattern(6 << 20, 9);
        let answer = actix::spawn(socket.send(Write::new(data.clone())));
        let mut worst = 0i64;
        for _ in 0..100_000 {
            settle().await;
            peer.pump(&mock);
            let stats = socket.send(GetStats).await.expect("stats");
            let ahead = stats.bytes_sent as i64 - mock.written(Handle(1)).len() as i64;
            worst = worst.max(ahead);
            if answer.is_finished() {
                break;
            }
        }
        assert!(answer.is_finished(), "not answered");
        mock.set_default_step(SendStep::AcceptAll);
        idle(50).await;
        peer.pump(&mock);
        let w = answer
            .await
            .expect("join")
            .expect("mailbox")
            .expect("written");
        assert_eq!(w.len, data.len());
        assert!(
            peer.received == data,
            "peer got {} of {}",
            peer.received.len(),
            data.len()
        );
        // Ciphertext is longer than plaintext, so the plaintext ahead of the wire is
        // what sits in the outbox, at most its bound (once past it for one turn).
        assert!(
            worst <= 2 * bound as i64 + 16 * 1024 + 64,
            "plaintext ran {worst} bytes ahead of the wire (bound {bound})"
        );
        for r in mock.sendv_log(Handle(1)) {
            assert!(r.offered <= 64 * 1024, "a sendv of {} bytes", r.offered);
        }
    })
}

/// Dropping a TLS connect while its handshake waits on a silent peer closes the handle.
#[test]
fn a_tls_connect_dropped_mid_handshake_closes_its_handle() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let functions = tls_client(&pki).wrap(mock.functions());
        let connecting = actix::spawn(async move {
            Socket::builder()
                .functions(functions)
                .connect(mock_peer())
                .await
        });
        idle(50).await;
        assert!(!mock.written(Handle(1)).is_empty(), "no ClientHello");
        connecting.abort();
        idle(50).await;
        idle(11_000).await;
        assert!(
            mock.is_closed(Handle(1)),
            "the handle outlived its dropped connect"
        );
    })
}

/// `connect_timeout` bounds the whole connect, TLS handshake included: a silent TLS
/// peer gives `SocketError::TimedOut` at the timeout and the handle is closed.
#[test]
fn a_connect_timeout_covers_a_silent_tls_handshake() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let functions = tls_client(&pki)
            .handshake_timeout(Duration::from_secs(30))
            .wrap(mock.functions());
        let started = tokio::time::Instant::now();
        let result = Socket::builder()
            .functions(functions)
            .connect_timeout(Duration::from_secs(2))
            .connect(mock_peer())
            .await;
        let took = started.elapsed();
        assert!(
            matches!(result, Err(sockactor::SocketError::TimedOut(_))),
            "{result:?}"
        );
        assert!(took <= Duration::from_millis(2100), "took {took:?}");
        idle(100).await;
        assert!(mock.is_closed(Handle(1)));
    })
}

/// The peer requests a TLS 1.3 key update: the client's later writes decrypt under the
/// new keys (its answer goes out with them).
#[test]
fn a_key_update_from_the_peer_is_answered_and_writes_go_on() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let (socket, mut peer, recorder) = tls_pair(&pki, &mock, SocketConfig::default()).await;
        idle(20).await;
        peer.pump(&mock);
        let before = mock.written(Handle(1)).len();
        peer.server.refresh_traffic_keys().expect("key update");
        let wire = peer.seal(b"rekeyed");
        mock.push_inbound(Handle(1), wire);
        idle(50).await;
        assert_eq!(recorder.received(), b"rekeyed");
        // rustls itself queues its answer until its next record: not checked here.
        let _ = before;
        peer.pump(&mock);
        assert_eq!(peer.error, None);
        let data = pattern(50_000, 3);
        socket
            .send(Write::new(data.clone()))
            .await
            .expect("mailbox")
            .expect("written");
        idle(20).await;
        peer.pump(&mock);
        assert_eq!(peer.error, None);
        assert!(peer.received == data);
    })
}

// ---------------------------------------------------------------------------------------
// 2. User layers and deflate under aborts, failures and faults
// ---------------------------------------------------------------------------------------

/// A pass-through layer (so the mock's bytes are the plaintext), whose `encode` fails
/// from its `fail_at`-th call on (never when `None`).
#[derive(Debug)]
struct Identity {
    calls: usize,
    fail_at: Option<usize>,
}

impl Layer for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }
    fn worst_case(&self, n: usize) -> usize {
        n
    }
    fn encode(&mut self, input: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<()> {
        self.calls += 1;
        if self.fail_at.is_some_and(|k| self.calls >= k) {
            return Err(io::Error::other("encode refused"));
        }
        for s in input {
            out.extend_from_slice(s);
        }
        Ok(())
    }
    fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        max: usize,
    ) -> io::Result<Decoded> {
        let n = input.len().min(max);
        out.extend_from_slice(&input.split_to(n));
        Ok(if input.is_empty() {
            Decoded::NeedInput
        } else {
            Decoded::More
        })
    }
}

fn identity(functions: SocketFunctions, fail_at: Option<usize>) -> SocketFunctions {
    functions.layer(move |_| Ok(Box::new(Identity { calls: 0, fail_at }) as Box<dyn Layer>))
}

/// Awaits every answer; returns the stream the answers claim reached the transport
/// (Ok writes whole, a failed write's `bytes_sent`), checking the answer shapes.
async fn claimed_stream(
    what: &str,
    payloads: &[Vec<u8>],
    answers: Vec<
        tokio::task::JoinHandle<
            Result<Result<sockactor::messages::Written, WriteError>, MailboxError>,
        >,
    >,
) -> (Vec<u8>, usize) {
    let mut stream = Vec::new();
    let mut oks = 0;
    let mut failed = false;
    for (i, (p, a)) in payloads.iter().zip(answers).enumerate() {
        assert!(a.is_finished(), "{what}: write {i} never answered");
        match a.await.expect("join") {
            Ok(Ok(w)) => {
                assert!(!failed, "{what}: write {i} Ok after a failed one");
                assert_eq!(w.len, p.len(), "{what}: write {i}");
                stream.extend_from_slice(p);
                oks += 1;
            }
            Ok(Err(e)) => {
                assert!(e.bytes_sent() <= p.len(), "{what}: write {i}: {e}");
                if failed {
                    assert_eq!(
                        e.bytes_sent(),
                        0,
                        "{what}: write {i} after the failure: {e}"
                    );
                }
                stream.extend_from_slice(&p[..e.bytes_sent()]);
                failed = true;
            }
            Err(e) => panic!("{what}: write {i} got no answer from the socket: {e}"),
        }
    }
    (stream, oks)
}

/// An abort while the transport holds the layer's output: the writes the layer took are
/// answered Ok, the rest `Aborted` with how far they got; once the transport takes
/// bytes again the peer gets exactly the bytes the answers claim, then the handle closes.
fn abort_during_a_held_flush(seed: u64, graceful_first: bool) {
    run_paused(|| async move {
        let mock = MockTransport::start();
        let mut rng = Rng(seed);
        let mut script = Vec::new();
        for _ in 0..rng.below(8) {
            script.push(SendStep::Accept(1 + rng.below(20_000) as usize));
        }
        mock.script_sendv(Handle(1), script);
        mock.set_default_step(SendStep::Hold);
        let recorder = Recorder::default();
        let socket = Socket::builder()
            .functions(identity(mock.functions(), None))
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let (payloads, answers) = fire_writes(&socket, &mut rng, 30);
        idle(10 + rng.below(30)).await;
        if graceful_first {
            socket.do_send(Close::Graceful);
            idle(rng.below(30)).await;
        }
        socket.do_send(Close::Abort);
        idle(50).await;
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        idle(200).await;
        let what = format!("seed {seed} graceful {graceful_first}");
        let (stream, _) = claimed_stream(&what, &payloads, answers).await;
        let written = mock.written(Handle(1));
        assert_eq!(
            written.len(),
            stream.len(),
            "{what}: the peer got another length than the answers claim"
        );
        assert!(written == stream, "{what}: the peer got other bytes");
        assert!(mock.is_closed(Handle(1)), "{what}: handle left open");
        let events = recorder.events.lock().expect("lock");
        let closed = events
            .iter()
            .filter(|e| matches!(e, SocketEventKind::Closed { .. }))
            .count();
        assert_eq!(closed, 1, "{what}: {events:?}");
    })
}

#[test]
fn an_abort_during_a_held_layer_flush_answers_truthfully_and_sends_what_it_claimed() {
    for seed in 1..=25 {
        abort_during_a_held_flush(seed, false);
    }
}

#[test]
fn an_abort_during_a_graceful_layer_drain_answers_truthfully_and_sends_what_it_claimed() {
    for seed in 1..=25 {
        abort_during_a_held_flush(seed, true);
    }
}

/// A user layer whose `encode` fails mid-stream: every write answered once, the bytes on
/// the wire exactly what the answers claim (the outbox before the failure still goes),
/// one `Closed` with the layer's error as its cause.
#[test]
fn a_layer_encode_failure_mid_stream_answers_every_write_truthfully() {
    for seed in 1..=20u64 {
        run_paused(|| async move {
            let mock = MockTransport::start();
            let mut rng = Rng(seed * 31);
            let mut script = Vec::new();
            for _ in 0..rng.below(10) {
                script.push(match rng.below(2) {
                    0 => SendStep::Accept(1 + rng.below(9000) as usize),
                    _ => SendStep::WouldBlock(Duration::from_millis(rng.below(3))),
                });
            }
            mock.script_sendv(Handle(1), script);
            let fail_at = 2 + rng.below(3) as usize;
            let recorder = Recorder::default();
            let socket = Socket::builder()
                .functions(identity(mock.functions(), Some(fail_at)))
                .subscriber(recorder.start().recipient())
                .connect(mock_peer())
                .await
                .expect("connect");
            let (payloads, answers) = fire_writes(&socket, &mut rng, 25);
            idle(300).await;
            let what = format!("seed {seed} fail_at {fail_at}");
            let (stream, oks) = claimed_stream(&what, &payloads, answers).await;
            let written = mock.written(Handle(1));
            assert_eq!(written.len(), stream.len(), "{what}: wire vs answers");
            if oks == payloads.len() {
                return; // the failing call never came
            }
            assert!(written == stream, "{what}: other bytes");
            let events = recorder.events.lock().expect("lock");
            let closed: Vec<_> = events
                .iter()
                .filter(|e| matches!(e, SocketEventKind::Closed { .. }))
                .collect();
            assert_eq!(closed.len(), 1, "{what}: {events:?}");
            assert!(
                matches!(closed[0], SocketEventKind::Closed { cause: Some(_) }),
                "{what}: closed without the layer's error: {:?}",
                closed[0]
            );
        })
    }
}

fn inflate_prefix(encoded: &[u8]) -> Vec<u8> {
    let mut inflater = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(encoded.len() * 4 + (1 << 20));
    let mut input = encoded;
    loop {
        let before_in = inflater.total_in();
        let before_out = inflater.total_out();
        if out.capacity() - out.len() < 65536 {
            out.reserve(1 << 20);
        }
        match inflater.decompress_vec(input, &mut out, flate2::FlushDecompress::Sync) {
            Ok(_) => {}
            Err(e) => panic!("corrupt deflate on the wire: {e}"),
        }
        let took = (inflater.total_in() - before_in) as usize;
        input = &input[took..];
        if input.is_empty() || (took == 0 && inflater.total_out() == before_out) {
            break;
        }
    }
    out
}

/// Deflate with injected partial accepts, would-blocks, delays and (sometimes) a reset:
/// every write answered once; what the peer inflates is a prefix of what the answers
/// claim, and all of it when no reset came.
#[test]
fn deflate_under_injected_faults_and_resets_never_delivers_more_than_claimed() {
    for seed in 1..=30u64 {
        run_paused(|| async move {
            let mock = MockTransport::start();
            let faults = Faults::default()
                .partial(0.4)
                .would_block(0.3, Duration::from_millis(3))
                .delay(0.2, Duration::from_millis(3))
                .reset(if seed % 2 == 0 { 0.03 } else { 0.0 });
            let recorder = Recorder::default();
            let socket = Socket::builder()
                .functions(
                    Compress::new()
                        .max_buffered(8 * 1024)
                        .wrap(FaultInjector::new(seed, faults).wrap(mock.functions())),
                )
                .subscriber(recorder.start().recipient())
                .connect(mock_peer())
                .await
                .expect("connect");
            let mut rng = Rng(seed);
            let (payloads, answers) = fire_writes(&socket, &mut rng, 30);
            idle(3000).await;
            let what = format!("seed {seed}");
            let (stream, oks) = claimed_stream(&what, &payloads, answers).await;
            let inflated = inflate_prefix(&mock.written(Handle(1)));
            assert!(
                stream.starts_with(&inflated),
                "{what}: the peer inflated bytes never claimed"
            );
            if oks == payloads.len() {
                assert_eq!(
                    inflated.len(),
                    stream.len(),
                    "{what}: bytes answered Ok never arrived"
                );
            }
            let events = recorder.events.lock().expect("lock");
            let closed = events
                .iter()
                .filter(|e| matches!(e, SocketEventKind::Closed { .. }))
                .count();
            assert!(closed <= 1, "{what}: {events:?}");
        })
    }
}

// ---------------------------------------------------------------------------------------
// 3. Cross-thread senders over real loopback TCP
// ---------------------------------------------------------------------------------------

/// A loopback sink: accepts one connection, reads it to the end.
async fn tcp_sink() -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    crate::support::sink().await.pipe(|(addr, task)| {
        (
            addr,
            tokio::spawn(async move { task.await.expect("join").expect("sink read") }),
        )
    })
}

trait Pipe: Sized {
    fn pipe<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}
impl<T> Pipe for T {}

fn line(sender: usize, seq: usize) -> Bytes {
    Bytes::from(format!("S{sender}:{seq:06}\n"))
}

/// Per sender, the sequence numbers of its lines on the wire, in wire order.
fn per_sender(wire: &[u8], senders: usize) -> Vec<Vec<usize>> {
    let text = std::str::from_utf8(wire).expect("utf8 on the wire");
    let mut out = vec![Vec::new(); senders];
    for l in text.split_terminator('\n') {
        let (s, n) = l
            .strip_prefix('S')
            .and_then(|r| r.split_once(':'))
            .unwrap_or_else(|| panic!("a torn line on the wire: {l:?}"));
        out[s.parse::<usize>().expect("sender")].push(n.parse().expect("seq"));
    }
    out
}

/// Writes `count` lines from one thread, cycling through every way of sending: a
/// `Writer`'s `write` (waiting for room on `QueueFull`), `write_answered`, `write_each`
/// of three, `write_when_ready`, `do_send(Write)` and `send(Write)` on an `Addr` clone,
/// and a `FramedWriter`. Returns the sequence numbers it was told went out (all of them
/// unless the socket refused).
fn mixed_sender(
    sender: usize,
    count: usize,
    writer: sockactor::Writer,
    socket: Addr<Socket>,
) -> std::thread::JoinHandle<Vec<usize>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            use futures_util::SinkExt;
            let mut sent = Vec::new();
            let mut seq = 0;
            let mut framed = writer.clone().framed(tokio_util::codec::BytesCodec::new());
            while seq < count {
                match seq % 6 {
                    0 => {
                        let mut b: sockactor::IoBatch = line(sender, seq).into();
                        loop {
                            match writer.write(b) {
                                Ok(()) => break,
                                Err(WriteError::QueueFull { payload, .. }) => {
                                    writer.writable().await.expect("writable");
                                    b = payload;
                                }
                                Err(e) => panic!("sender {sender}: {e}"),
                            }
                        }
                        sent.push(seq);
                        seq += 1;
                    }
                    1 => {
                        writer.writable().await.expect("writable");
                        let f = writer.write_answered(line(sender, seq));
                        if let Some(r) = f.refused() {
                            assert!(matches!(r, WriteError::QueueFull { .. }), "{r}");
                            continue; // retried: nothing of it was queued
                        }
                        f.await.expect("written");
                        sent.push(seq);
                        seq += 1;
                    }
                    2 => {
                        let n = 3.min(count - seq);
                        let writes: Vec<sockactor::IoBatch> =
                            (seq..seq + n).map(|s| line(sender, s).into()).collect();
                        match writer.write_each(writes) {
                            Ok(()) => {
                                sent.extend(seq..seq + n);
                                seq += n;
                            }
                            Err(refused) => {
                                assert!(
                                    matches!(refused.error, WriteError::QueueFull { .. }),
                                    "{}",
                                    refused.error
                                );
                                writer.writable().await.expect("writable");
                            }
                        }
                    }
                    3 => {
                        writer
                            .write_when_ready(line(sender, seq))
                            .await
                            .expect("ready");
                        sent.push(seq);
                        seq += 1;
                    }
                    4 => {
                        socket.do_send(Write::new(line(sender, seq)).wait_when_full());
                        sent.push(seq);
                        seq += 1;
                        let w = socket
                            .send(Write::new(line(sender, seq)).wait_when_full())
                            .await
                            .expect("mailbox")
                            .expect("written");
                        assert_eq!(w.len, line(sender, seq).len());
                        sent.push(seq);
                        seq += 1;
                    }
                    _ => {
                        framed.feed(line(sender, seq)).await.expect("framed feed");
                        sent.push(seq);
                        seq += 1;
                        if seq % 4 == 0 {
                            SinkExt::<Bytes>::flush(&mut framed)
                                .await
                                .expect("framed flush");
                        }
                    }
                }
                // Program order across modes: the framed writer buffers until a flush.
                if seq % 6 != 5 {
                    SinkExt::<Bytes>::flush(&mut framed)
                        .await
                        .expect("framed flush");
                }
            }
            SinkExt::<Bytes>::flush(&mut framed)
                .await
                .expect("framed flush");
            sent
        })
    })
}

/// Four threads, each mixing every way of sending to one socket on another arbiter of a
/// `SocketSystem`, over a small queue: each sender's lines reach the peer whole, all of
/// them, in its program order.
#[actix::test]
async fn senders_on_many_threads_keep_their_program_order_over_loopback() {
    let system = sockactor::SocketSystem::builder()
        .arbiters(2)
        .start()
        .expect("system");
    for round in 0..4 {
        let (addr, sink) = tcp_sink().await;
        let socket = system
            .connect(
                move || Socket::builder().config(crate::support::watermarks(2048, 512)),
                addr,
            )
            .await
            .expect("connect");
        let writer = socket.send(GetWriter).await.expect("writer");
        const SENDERS: usize = 4;
        const COUNT: usize = 600;
        let threads: Vec<_> = (0..SENDERS)
            .map(|s| mixed_sender(s, COUNT, writer.clone(), socket.clone()))
            .collect();
        let mut sent = Vec::new();
        for t in threads {
            sent.push(
                tokio::task::spawn_blocking(move || t.join())
                    .await
                    .unwrap()
                    .expect("sender thread"),
            );
        }
        writer.close();
        drop(writer);
        drop(socket);
        let wire = tokio::time::timeout(Duration::from_secs(30), sink)
            .await
            .expect("the sink ends")
            .expect("join");
        let got = per_sender(&wire, SENDERS);
        for s in 0..SENDERS {
            assert_eq!(got[s], sent[s], "round {round}: sender {s}'s lines");
            assert_eq!(
                got[s],
                (0..COUNT).collect::<Vec<_>>(),
                "round {round}: sender {s}"
            );
        }
    }
    system.shutdown().await.expect("shutdown");
}

/// Writers on several threads while another thread closes the socket gracefully at a
/// random moment: per sender, the peer gets exactly the writes that were admitted and
/// not reported failed, whole and in order; refusals after the close say 0 bytes sent.
#[actix::test]
async fn a_close_from_another_thread_racing_writers_keeps_every_answer_truthful() {
    let system = sockactor::SocketSystem::builder()
        .arbiters(2)
        .start()
        .expect("system");
    for round in 0..12u64 {
        let (addr, sink) = tcp_sink().await;
        let recorder = Recorder::default();
        let rec = recorder.clone();
        let socket = system
            .connect(
                move || {
                    Socket::builder()
                        .config(crate::support::watermarks(4096, 1024))
                        .subscriber(rec.start().recipient())
                },
                addr,
            )
            .await
            .expect("connect");
        let writer = socket.send(GetWriter).await.expect("writer");
        const SENDERS: usize = 3;
        let threads: Vec<_> = (0..SENDERS)
            .map(|s| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async move {
                        // (seq, answered: Some(ok) for awaited writes, None for fire-and-forget)
                        let mut admitted: Vec<(usize, Option<bool>)> = Vec::new();
                        for seq in 0..100_000usize {
                            let tag = (s * 1_000_000 + seq) as u64;
                            if seq % 3 == 0 {
                                let f = writer.write_answered(line(s, seq));
                                match f.refused() {
                                    Some(WriteError::QueueFull { .. }) => {
                                        if writer.writable().await.is_err() {
                                            break;
                                        }
                                        continue;
                                    }
                                    Some(e) => {
                                        assert_eq!(e.bytes_sent(), 0, "{e}");
                                        break;
                                    }
                                    None => {}
                                }
                                match f.await {
                                    Ok(_) => admitted.push((seq, Some(true))),
                                    Err(e) => {
                                        assert_eq!(e.bytes_sent(), 0, "a torn line: {e}");
                                        admitted.push((seq, Some(false)));
                                    }
                                }
                            } else {
                                match writer.write_tagged(line(s, seq), tag) {
                                    Ok(()) => admitted.push((seq, None)),
                                    Err(WriteError::QueueFull { .. }) => {
                                        if writer.writable().await.is_err() {
                                            break;
                                        }
                                    }
                                    Err(e) => {
                                        assert_eq!(e.bytes_sent(), 0, "{e}");
                                        break;
                                    }
                                }
                            }
                        }
                        admitted
                    })
                })
            })
            .collect();
        let closer = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_micros(200 + round * 700));
                writer.close();
            })
        };
        closer.join().unwrap();
        let mut admitted = Vec::new();
        for t in threads {
            admitted.push(
                tokio::task::spawn_blocking(move || t.join())
                    .await
                    .unwrap()
                    .expect("sender"),
            );
        }
        drop(writer);
        drop(socket);
        let wire = tokio::time::timeout(Duration::from_secs(30), sink)
            .await
            .expect("the sink ends")
            .expect("join");
        // Late failure reports.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let failed: std::collections::HashSet<u64> = recorder
            .picked(|e| match e {
                SocketEventKind::WriteFailed {
                    tag: Some(t),
                    error,
                } => {
                    assert_eq!(
                        error.bytes_sent(),
                        0,
                        "a torn fire-and-forget line: {error}"
                    );
                    Some(*t)
                }
                _ => None,
            })
            .into_iter()
            .collect();
        let got = per_sender(&wire, SENDERS);
        for s in 0..SENDERS {
            let expected: Vec<usize> = admitted[s]
                .iter()
                .filter(|(seq, answer)| match answer {
                    Some(ok) => *ok,
                    None => !failed.contains(&((s * 1_000_000 + seq) as u64)),
                })
                .map(|(seq, _)| *seq)
                .collect();
            assert_eq!(
                got[s].len(),
                expected.len(),
                "round {round}: sender {s}: {} lines on the wire, {} admitted and not failed",
                got[s].len(),
                expected.len()
            );
            assert_eq!(got[s], expected, "round {round}: sender {s}");
        }
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Closed { .. })),
            1
        );
    }
    system.shutdown().await.expect("shutdown");
}

/// The socket's arbiter stops while other threads hold its `Writer` and wait: a pending
/// `write_answered` resolves (`Lost` or another error, never hangs), a `writable()`
/// waiting on a full queue resolves, and later writes are refused at once.
#[actix::test]
async fn writers_held_on_other_threads_when_the_sockets_arbiter_stops_are_released() {
    for round in 0..3 {
        let system = sockactor::SocketSystem::builder()
            .arbiters(1)
            .start()
            .expect("system");
        // A peer that accepts and never reads.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let hold = std::thread::spawn(move || {
            let (s, _) = listener.accept().expect("accept");
            std::thread::sleep(Duration::from_secs(3));
            drop(s);
        });
        let socket = system
            .connect(
                move || {
                    let mut config = crate::support::watermarks(1 << 20, 1 << 19);
                    config.buffers = sockactor::SocketBuffers {
                        send: Some(16 * 1024),
                        recv: None,
                    };
                    Socket::builder().config(config)
                },
                addr,
            )
            .await
            .expect("connect");
        let writer = socket.send(GetWriter).await.expect("writer");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut answers = Vec::new();
                    for i in 0..200 {
                        let f = writer.write_answered(Bytes::from(vec![i as u8; 256 * 1024]));
                        if f.refused().is_some() {
                            break;
                        }
                        answers.push(f);
                    }
                    tx.send(()).unwrap();
                    let writable =
                        tokio::time::timeout(Duration::from_secs(10), writer.writable()).await;
                    let mut results = Vec::new();
                    for f in answers {
                        results.push(tokio::time::timeout(Duration::from_secs(10), f).await);
                    }
                    (writable, results)
                })
            })
        };
        rx.recv().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !writer.is_writable(),
            "round {round}: the queue should be full"
        );
        system.shutdown().await.expect("shutdown");
        let (writable, results) = tokio::task::spawn_blocking(move || waiter.join())
            .await
            .unwrap()
            .expect("waiter");
        let writable = writable
            .unwrap_or_else(|_| panic!("round {round}: writable() hung after the arbiter stopped"));
        assert!(
            writable.is_err(),
            "round {round}: writable() said Ok with no socket"
        );
        for (i, r) in results.into_iter().enumerate() {
            let r = r.unwrap_or_else(|_| {
                panic!("round {round}: answer {i} hung after the arbiter stopped")
            });
            if let Err(e) = r {
                assert!(e.bytes_sent() <= 256 * 1024);
            }
        }
        let after = writer.write(&b"late"[..]);
        assert!(
            after.is_err(),
            "round {round}: a write after the arbiter stopped was admitted"
        );
        assert!(!writer.is_writable());
        hold.join().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// 4. Transport filters around a TLS table; outboxes when every address is dropped
// ---------------------------------------------------------------------------------------

/// A throttle around a TLS table sees the ciphertext: over every interval the mock
/// takes at most `burst + rate × t` bytes after the handshake, and the peer decrypts it
/// all.
#[test]
fn a_throttle_around_tls_holds_the_ciphertext_to_its_rate() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let (rate, burst) = (10_000_000u64, 16_384u64);
        let functions = sockactor::filters::Throttle::per_socket(rate, burst)
            .wrap(tls_client(&pki).wrap(mock.functions()));
        let recorder = Recorder::default();
        let (socket, mut peer) = connect_tls(
            &mock,
            Socket::builder().subscriber(recorder.start().recipient()),
            functions,
            pki.server.clone(),
        )
        .await;
        let after_handshake = mock.sendv_log(Handle(1)).len();
        let data = pattern(300_000, 4);
        let answer = actix::spawn(socket.send(Write::new(data.clone())));
        for _ in 0..6000 {
            settle().await;
            peer.pump(&mock);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let w = answer
            .await
            .expect("join")
            .expect("mailbox")
            .expect("written");
        assert_eq!(w.len, data.len());
        assert!(
            peer.received == data,
            "peer got {} bytes",
            peer.received.len()
        );
        let log = mock.sendv_log(Handle(1));
        let log = &log[after_handshake..];
        for i in 0..log.len() {
            let mut sum = 0u64;
            for j in i..log.len() {
                sum += log[j].accepted as u64;
                let t = (log[j].at - log[i].at).as_secs_f64();
                let allowed = burst as f64 + rate as f64 * t + 1.0;
                assert!(
                    sum as f64 <= allowed,
                    "{sum} bytes in {t:.6} s (allowed {allowed:.0}), calls {i}..={j}: {:?}",
                    log[i..=j.min(i + 6)]
                        .iter()
                        .map(|r| (r.offered, r.accepted, r.would_block, r.at - log[0].at))
                        .collect::<Vec<_>>()
                );
            }
        }
    })
}

/// A capture around a TLS table records the ciphertext the transport took, exactly:
/// no plaintext, every byte after the handshake.
#[test]
fn a_capture_around_tls_records_exactly_the_ciphertext_on_the_wire() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Accept(3000));
        let (capture, file) = sockactor::filters::Capture::to_memory();
        let functions = capture.wrap(tls_client(&pki).wrap(mock.functions()));
        let (socket, mut peer) =
            connect_tls(&mock, Socket::builder(), functions, pki.server.clone()).await;
        let handshake = mock.written(Handle(1)).len();
        let mut rng = Rng(5);
        let (payloads, answers) = fire_writes(&socket, &mut rng, 20);
        pump_until_done(&mock, &mut peer, &answers, 5000).await;
        idle(200).await;
        peer.pump(&mock);
        let mut expected = Vec::new();
        for (p, a) in payloads.iter().zip(answers) {
            a.await.expect("join").expect("mailbox").expect("written");
            expected.extend_from_slice(p);
        }
        assert!(peer.received == expected);
        let mut captured = Vec::new();
        for record in file.reader() {
            let record = record.expect("a whole record");
            if let sockactor::filters::CaptureEvent::SendV {
                answer: sockactor::filters::SendAnswer::Accepted(bytes),
                ..
            } = record.event
            {
                captured.extend_from_slice(&bytes);
            }
        }
        let wire = mock.written(Handle(1));
        assert_eq!(captured.len(), wire.len() - handshake);
        assert!(
            captured == wire[handshake..],
            "the capture differs from the wire"
        );
        assert!(!plaintext_leaked(&captured, &payloads));
    })
}

/// A TLS socket whose every address is dropped while its transport holds its bytes
/// closes gracefully once they went: the peer decrypts everything answered Ok, then
/// reads close_notify (a clean end, not a cut), and the handle closes.
#[test]
fn a_dropped_tls_socket_sends_its_outbox_then_close_notify() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let (socket, mut peer, _recorder) = tls_pair(&pki, &mock, SocketConfig::default()).await;
        mock.set_default_step(SendStep::Hold);
        let data = pattern(100_000, 8);
        let w = actix::spawn(socket.send(Write::new(data.clone())));
        idle(20).await;
        let answered = w.is_finished();
        drop(socket);
        idle(100).await;
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        for _ in 0..200 {
            idle(5).await;
            peer.pump(&mock);
        }
        let r = w.await.expect("join");
        assert!(
            answered,
            "the write was not taken by the layer before the drop: {r:?}"
        );
        r.expect("mailbox").expect("written");
        assert_eq!(peer.error, None);
        assert!(
            peer.received == data,
            "peer got {} of {}",
            peer.received.len(),
            data.len()
        );
        assert!(
            peer.closed_notify,
            "the peer saw no close_notify (a cut stream)"
        );
        assert!(mock.is_closed(Handle(1)));
    })
}

/// `max_output_per_call` bounds every delivery of plaintext, whatever the size of the
/// records that came in at once.
#[test]
fn tls_deliveries_never_exceed_max_output_per_call() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let (_socket, mut peer) = connect_tls(
            &mock,
            Socket::builder().subscriber(recorder.start().recipient()),
            tls_client(&pki)
                .max_output_per_call(100)
                .wrap(mock.functions()),
            pki.server.clone(),
        )
        .await;
        let data = pattern(200_000, 2);
        for chunk in data.chunks(16_000) {
            let wire = peer.seal(chunk);
            mock.push_inbound(Handle(1), wire);
        }
        idle(500).await;
        assert!(
            recorder.received() == data,
            "got {} bytes",
            recorder.received().len()
        );
        let worst = recorder.delivery_lens().into_iter().max().unwrap_or(0);
        assert!(worst <= 100, "a delivery of {worst} bytes");
    })
}

/// The same without TLS: the minimal reproduction. A reserved grant paid off between
/// tokio's 1 ms timer ticks is spent together with the tokens refilled since, so the
/// transport takes more than `burst` bytes in one instant.
#[test]
fn a_throttle_never_lets_more_than_burst_through_in_one_instant() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (rate, burst) = (10_000_000u64, 16_384u64);
        let socket = Socket::builder()
            .functions(sockactor::filters::Throttle::per_socket(rate, burst).wrap(mock.functions()))
            .connect(mock_peer())
            .await
            .expect("connect");
        let data = pattern(100_000, 1);
        socket
            .send(Write::new(data.clone()))
            .await
            .expect("mailbox")
            .expect("written");
        assert!(mock.written(Handle(1)) == data);
        let log = mock.sendv_log(Handle(1));
        let mut by_instant: Vec<(tokio::time::Instant, u64)> = Vec::new();
        for r in &log {
            match by_instant.last_mut() {
                Some((at, sum)) if *at == r.at => *sum += r.accepted as u64,
                _ => by_instant.push((r.at, r.accepted as u64)),
            }
        }
        let start = log[0].at;
        for (at, sum) in by_instant {
            assert!(
                sum <= burst,
                "{sum} bytes taken at {:?} in one instant (burst {burst})",
                at - start
            );
        }
    })
}

// ---------------------------------------------------------------------------------------
// 5. Counters under refusals from every sender
// ---------------------------------------------------------------------------------------

/// `SocketStats::writes_failed` counts "writes that ended in an error (including refused
/// ones)": refusals through a `Writer` (`write`, `write_answered`), a `Write` message and
/// a TLS layered socket's queue are all counted, and `writes` counts only what was
/// queued.
#[test]
fn refusals_from_every_sender_are_counted_as_failed_writes() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let (socket, _peer, _recorder) =
            tls_pair(&pki, &mock, crate::support::watermarks(100, 50)).await;
        mock.set_default_step(SendStep::Hold);
        let base = socket.send(GetStats).await.expect("stats");
        let writer = socket.send(GetWriter).await.expect("writer");
        // Fills the layer's outbox (the transport holds everything), then the queue.
        let mut admitted = 0;
        loop {
            match writer.write(Bytes::from(vec![7u8; 4096])) {
                Ok(()) => admitted += 1,
                Err(WriteError::QueueFull { .. }) => break,
                Err(e) => panic!("{e}"),
            }
            idle(5).await;
            assert!(admitted < 1000, "never full");
        }
        let mut refused = 1;
        for _ in 0..2 {
            assert!(writer.write(&b"x"[..]).is_err());
            refused += 1;
        }
        let f = writer.write_answered(&b"y"[..]);
        assert!(matches!(f.refused(), Some(WriteError::QueueFull { .. })));
        refused += 1;
        let r = socket.send(Write::new(&b"z"[..])).await.expect("mailbox");
        assert!(matches!(r, Err(WriteError::QueueFull { .. })), "{r:?}");
        refused += 1;
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(stats.writes - base.writes, admitted, "{stats:?}");
        assert_eq!(
            stats.writes_failed - base.writes_failed,
            refused,
            "{stats:?}"
        );
    })
}

/// Both ends close at once: the client closes gracefully while its transport holds its
/// bytes, and the peer's close_notify and TCP EOF arrive meanwhile. Every write is
/// answered Ok and reaches the peer before the client's close_notify; the subscriber
/// hears one `Eof`, no read failure, one `Closed`.
#[test]
fn a_graceful_close_crossing_the_peers_close_notify_and_eof_ends_cleanly() {
    for linger in [Duration::ZERO, Duration::from_secs(1)] {
        run_paused(|| async move {
            let pki = pki(&["localhost"]);
            let mock = MockTransport::start();
            let recorder = Recorder::default();
            let (socket, mut peer) = connect_tls(
                &mock,
                Socket::builder()
                    .config(crate::support::lingering(linger))
                    .subscriber(recorder.start().recipient()),
                tls_client(&pki).wrap(mock.functions_with_shutdown()),
                pki.server.clone(),
            )
            .await;
            mock.set_default_step(SendStep::Hold);
            let mut rng = Rng(3);
            let (payloads, answers) = fire_writes(&socket, &mut rng, 10);
            idle(10).await;
            socket.do_send(Close::Graceful);
            idle(10).await;
            let cn = peer.close_notify_bytes();
            mock.push_inbound(Handle(1), cn);
            mock.push_eof(Handle(1));
            idle(10).await;
            mock.set_default_step(SendStep::AcceptAll);
            mock.release(Handle(1));
            for _ in 0..400 {
                idle(5).await;
                peer.pump(&mock);
            }
            let mut expected = Vec::new();
            for (i, (p, a)) in payloads.iter().zip(answers).enumerate() {
                let r = a.await.expect("join");
                let w = r
                    .unwrap_or_else(|e| panic!("linger {linger:?}: write {i}: {e}"))
                    .unwrap_or_else(|e| panic!("linger {linger:?}: write {i}: {e}"));
                assert_eq!(w.len, p.len());
                expected.extend_from_slice(p);
            }
            assert_eq!(peer.error, None, "linger {linger:?}");
            assert!(
                peer.received == expected,
                "linger {linger:?}: peer got {} of {}",
                peer.received.len(),
                expected.len()
            );
            assert!(peer.closed_notify, "linger {linger:?}: no close_notify");
            let kinds = recorder.picked(|e| match e {
                SocketEventKind::Eof => Some("eof"),
                SocketEventKind::Closed { .. } => Some("closed"),
                SocketEventKind::ReadFailed(_) => Some("readfailed"),
                SocketEventKind::WriteFailed { .. } => Some("writefailed"),
                _ => None,
            });
            assert_eq!(kinds, ["eof", "closed"], "linger {linger:?}");
            assert!(mock.is_closed(Handle(1)), "linger {linger:?}");
        })
    }
}
