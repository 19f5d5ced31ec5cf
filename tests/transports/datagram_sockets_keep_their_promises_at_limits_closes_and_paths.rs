//! From the seventeenth round of the independent review: datagram sockets at their
//! limits (empty, exact and one-over datagrams, huge buffers), through closes and aborts
//! while the transport would block, with writers on other threads, over real UDP (with
//! and without offload) and Unix paths (bound, removed, rebound), the mock and the
//! simulated network: every datagram answered once and the counters agreeing.
#![allow(clippy::all)]

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{channel, drain, local, next_datagram, run_paused, settle, TempPath};
use actix::prelude::*;
use sockactor::messages::{
    Address, Close, DatagramEvent, DatagramEventKind, GetDatagramInfo, GetDatagramStats,
    GetDatagramWriter, Handle, SendDatagram,
};
use sockactor::{
    DatagramConfig, DatagramError, DatagramSocket, MockTransport, SendStep, SimConfig, SimNetwork,
};

fn peer() -> SocketAddr {
    "127.0.0.1:9053".parse().expect("addr")
}

fn kinds(events: &[DatagramEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.kind {
            DatagramEventKind::Received {
                bytes, truncated, ..
            } => {
                format!("recv{}{}", bytes.len(), if *truncated { "t" } else { "" })
            }
            DatagramEventKind::ReadFailed(_) => "readfailed".into(),
            DatagramEventKind::SendFailed { tag, .. } => format!("sendfailed{tag:?}"),
            DatagramEventKind::Closed { .. } => "closed".into(),
            _ => "other".into(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Real Unix datagram sockets
// ---------------------------------------------------------------------------------------

/// An unconnected (bound) Unix datagram socket sends to a receiver whose queue another
/// sender filled: the kernel answers would-block. Once the receiver drains its queue the
/// datagram must go out and be answered ("each `SendDatagram` ... answered once";
/// `WouldBlock`: "offered again, whole, on `Ready(Writable)`").
#[actix::test]
async fn r17_unix_sender_blocked_by_a_queue_another_sender_filled_is_answered_after_it_drains() {
    use std::os::unix::net::UnixDatagram;
    let rpath = TempPath::new("r17-recv.sock");
    let receiver = UnixDatagram::bind(&rpath.0).expect("bind receiver");
    receiver.set_nonblocking(true).expect("nb");
    let filler = UnixDatagram::unbound().expect("filler");
    filler.set_nonblocking(true).expect("nb");
    let mut filled = 0;
    loop {
        match filler.send_to(b"fill", &rpath.0) {
            Ok(_) => filled += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("fill: {e}"),
        }
        assert!(filled < 100_000, "never filled");
    }
    let spath = TempPath::new("r17-send.sock");
    let (sender, _) = DatagramSocket::builder()
        .bind(Address::Unix(spath.0.clone()))
        .await
        .expect("bind sender");
    let s = sender.clone();
    let to = Address::Unix(rpath.0.clone());
    let answer = actix::spawn(async move { s.send(SendDatagram::new(&b"mine"[..]).to(to)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !answer.is_finished(),
        "the receiver's queue is full: it should wait"
    );
    // The receiver drains everything the filler sent.
    let mut buf = [0u8; 64];
    let mut drained = 0;
    while receiver.recv(&mut buf).is_ok() {
        drained += 1;
    }
    assert_eq!(drained, filled);
    let answered = tokio::time::timeout(Duration::from_secs(3), answer).await;
    let answered = answered
        .expect("the datagram is answered within 3 s of the receiver draining")
        .expect("join")
        .expect("mailbox");
    assert!(matches!(answered, Ok(ref s) if s.len == 4), "{answered:?}");
    receiver.set_nonblocking(false).expect("blocking");
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let n = receiver.recv(&mut buf).expect("the datagram arrives");
    assert_eq!(&buf[..n], b"mine");
}

/// Zero-length datagrams are datagrams ("an empty datagram is still a datagram"): a
/// burst of them to one destination on the system transport (batched, offload on)
/// arrives as that many empty datagrams, in order, around the others.
#[actix::test]
async fn r17_a_burst_of_empty_datagrams_arrives_each_on_real_udp() {
    empty_burst(true).await;
}

#[actix::test]
async fn r17_a_burst_of_empty_datagrams_arrives_each_on_real_udp_without_offload() {
    empty_burst(false).await;
}

async fn empty_burst(offload: bool) {
    let (heard_tx, mut heard) = channel::<DatagramEvent>();
    let (_rx, rx_addr) = DatagramSocket::builder()
        .subscriber(heard_tx)
        .bind(local())
        .await
        .expect("bind receiver");
    let (tx, _) = DatagramSocket::builder()
        .config(DatagramConfig {
            offload,
            ..DatagramConfig::default()
        })
        .bind(local())
        .await
        .expect("bind sender");
    let plan: Vec<usize> = vec![0, 0, 0, 5, 5, 0, 0, 5, 0];
    // All queued in one burst (do_send), then one awaited marker.
    for len in &plan {
        tx.do_send(SendDatagram::new(vec![7u8; *len]).to(rx_addr.clone()));
    }
    tx.send(SendDatagram::new(&b"end"[..]).to(rx_addr.clone()))
        .await
        .expect("mailbox")
        .expect("sent");
    let mut got = Vec::new();
    loop {
        let (bytes, _, truncated) = next_datagram(&mut heard).await;
        assert!(!truncated);
        if bytes == b"end" {
            break;
        }
        got.push(bytes.len());
    }
    assert_eq!(got, plan, "offload {offload}");
    let stats = tx.send(GetDatagramStats).await.expect("stats");
    assert_eq!(stats.sent, plan.len() as u64 + 1, "{stats:?}");
    assert_eq!(stats.send_failed, 0, "{stats:?}");
}

/// The same burst over Unix datagram sockets.
#[actix::test]
async fn r17_a_burst_of_empty_datagrams_arrives_each_on_a_unix_socket() {
    let rpath = TempPath::new("r17-empty-recv.sock");
    let (heard_tx, mut heard) = channel::<DatagramEvent>();
    let (_rx, rx_addr) = DatagramSocket::builder()
        .subscriber(heard_tx)
        .bind(Address::Unix(rpath.0.clone()))
        .await
        .expect("bind receiver");
    let spath = TempPath::new("r17-empty-send.sock");
    let (tx, _) = DatagramSocket::builder()
        .bind(Address::Unix(spath.0.clone()))
        .await
        .expect("bind sender");
    let plan: Vec<usize> = vec![0, 3, 0, 0];
    for len in &plan {
        tx.do_send(SendDatagram::new(vec![1u8; *len]).to(rx_addr.clone()));
    }
    tx.send(SendDatagram::new(&b"end"[..]).to(rx_addr.clone()))
        .await
        .expect("mailbox")
        .expect("sent");
    let mut got = Vec::new();
    loop {
        let (bytes, from, _) = next_datagram(&mut heard).await;
        assert_eq!(from, Some(Address::Unix(spath.0.clone())));
        if bytes == b"end" {
            break;
        }
        got.push(bytes.len());
    }
    assert_eq!(got, plan);
}

/// A bound Unix datagram socket's path "is removed when the handle closes": after a
/// graceful close (its `Closed` event), and when its runtime ends with it still open.
#[actix::test]
async fn r17_a_unix_datagram_path_is_removed_when_the_socket_closes() {
    let path = TempPath::new("r17-removed.sock");
    let (sub, mut heard) = channel::<DatagramEvent>();
    let (socket, _) = DatagramSocket::builder()
        .subscriber(sub)
        .bind(Address::Unix(path.0.clone()))
        .await
        .expect("bind");
    assert!(path.0.exists());
    socket.do_send(Close::Graceful);
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), heard.recv())
            .await
            .expect("closed in time")
            .expect("alive");
        if matches!(e.kind, DatagramEventKind::Closed { .. }) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!path.0.exists(), "the path is gone after the close");
    // The path can be bound again.
    let (_again, _) = DatagramSocket::builder()
        .bind(Address::Unix(path.0.clone()))
        .await
        .expect("bind again");
}

#[test]
fn r17_a_unix_datagram_path_is_removed_when_its_runtime_ends() {
    let path = TempPath::new("r17-runtime-end.sock");
    let p = path.0.clone();
    {
        let sys = actix::System::new();
        let _kept = sys.block_on(async move {
            let (socket, _) = DatagramSocket::builder()
                .bind(Address::Unix(p))
                .await
                .expect("bind");
            socket
        });
        drop(sys);
    }
    assert!(!path.0.exists(), "the bound path outlived its runtime");
}

// ---------------------------------------------------------------------------------------
// Mock transport: answers, counters and events
// ---------------------------------------------------------------------------------------

/// An empty datagram pushed by the mock is delivered (empty, not truncated) and counted.
#[test]
fn r17_an_empty_datagram_pushed_on_the_mock_is_delivered_and_counted() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut heard) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .subscriber(sub)
            .bind(local())
            .await
            .expect("bind");
        mock.push_datagram(Handle(1), Vec::<u8>::new(), peer());
        mock.push_datagram(Handle(1), vec![1u8; 3], peer());
        settle().await;
        let events = drain(&mut heard);
        assert_eq!(kinds(&events), ["recv0", "recv3"]);
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!(
            (stats.received, stats.bytes_received, stats.truncated),
            (2, 3, 0),
            "{stats:?}"
        );
    });
}

/// Datagrams at, and one byte over, `max_datagram_size` on the mock.
#[test]
fn r17_datagrams_at_and_over_max_datagram_size_on_the_mock() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut heard) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(DatagramConfig {
                max_datagram_size: 10,
                ..DatagramConfig::default()
            })
            .subscriber(sub)
            .bind(local())
            .await
            .expect("bind");
        mock.push_datagram(Handle(1), vec![1u8; 10], peer());
        mock.push_datagram(Handle(1), vec![2u8; 11], peer());
        mock.push_datagram(Handle(1), vec![3u8; 0], peer());
        settle().await;
        let events = drain(&mut heard);
        assert_eq!(kinds(&events), ["recv10", "recv10t", "recv0"]);
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!((stats.received, stats.truncated), (3, 1), "{stats:?}");
    });
}

/// Every transport behaviour in one run; the counters agree with the answers and with
/// the mock's own log.
#[test]
fn r17_counters_agree_with_answers_and_the_transport_log() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::WouldBlock(Duration::from_millis(5)),
                SendStep::AcceptAll,
                SendStep::Fail(std::io::ErrorKind::ConnectionRefused),
                SendStep::Accept(2),
                SendStep::WouldBlock(Duration::from_millis(5)),
                SendStep::WouldBlock(Duration::from_millis(5)),
                SendStep::AcceptAll,
            ],
        );
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .immediate()
            .bind(local())
            .await
            .expect("bind");
        let mut answers = Vec::new();
        for i in 0..4u8 {
            let s = socket.clone();
            answers.push(actix::spawn(async move {
                s.send(SendDatagram::new(vec![i; 5]).to(peer())).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut results = Vec::new();
        for a in answers {
            results.push(a.await.expect("join").expect("mailbox"));
        }
        assert!(matches!(results[0], Ok(ref s) if s.len == 5), "{results:?}");
        assert!(
            matches!(results[1], Err(DatagramError::Transport(_))),
            "{results:?}"
        );
        assert!(
            matches!(results[2], Err(DatagramError::Partial { sent: 2, len: 5 })),
            "{results:?}"
        );
        assert!(matches!(results[3], Ok(ref s) if s.len == 5), "{results:?}");
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!(stats.sent, 2, "{stats:?}");
        assert_eq!(stats.send_failed, 2, "{stats:?}");
        assert_eq!(stats.bytes_sent, 10, "{stats:?}");
        assert_eq!(stats.would_blocks, 3, "{stats:?}");
        assert_eq!(
            stats.sendv_calls,
            mock.sendv_calls(Handle(1)) as u64,
            "{stats:?}"
        );
        assert_eq!(stats.sendv_calls, 7, "{stats:?}");
        assert_eq!(stats.queued, 0, "{stats:?}");
    });
}

/// `queued`: "Datagrams queued right now, not yet offered to the transport": the one held
/// by the transport is not counted.
#[test]
fn r17_queued_does_not_count_the_datagram_the_transport_holds() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .bind(local())
            .await
            .expect("bind");
        for i in 0..3u8 {
            socket.do_send(SendDatagram::new(vec![i; 2]).to(peer()));
        }
        settle().await;
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!(stats.queued, 2, "{stats:?}");
        assert_eq!(stats.would_blocks, 1, "{stats:?}");
        mock.release(Handle(1));
        settle().await;
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!((stats.queued, stats.sent), (0, 3), "{stats:?}");
    });
}

/// A graceful close while the transport would block: the socket stops taking datagrams
/// at once (info `open: false`, new ones `Closed`), waits for the transport, sends what
/// was queued in order, then closes; `Closed` is the last event and every do_send failure
/// comes before it.
#[test]
fn r17_a_graceful_close_while_blocked_waits_sends_in_order_then_closes_last() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (sub, mut heard) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .subscriber(sub)
            .bind(local())
            .await
            .expect("bind");
        for i in 0..3u8 {
            socket.do_send(SendDatagram::new(vec![i; 2]).to(peer()).tag(i as u64));
        }
        settle().await;
        socket.do_send(Close::Graceful);
        socket.do_send(SendDatagram::new(vec![9u8; 2]).to(peer()).tag(9));
        let late = socket
            .send(SendDatagram::new(vec![8u8; 2]).to(peer()))
            .await
            .expect("mailbox");
        assert!(matches!(late, Err(DatagramError::Closed)), "{late:?}");
        let info = socket.send(GetDatagramInfo).await.expect("info");
        assert!(!info.open);
        assert!(!mock.is_closed(Handle(1)), "still draining");
        mock.release(Handle(1));
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        let sent: Vec<Vec<u8>> = mock
            .datagrams(Handle(1))
            .into_iter()
            .map(|d| d.bytes)
            .collect();
        assert_eq!(sent, [vec![0u8; 2], vec![1u8; 2], vec![2u8; 2]]);
        let events = drain(&mut heard);
        assert_eq!(kinds(&events), ["sendfailedSome(9)", "closed"]);
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!((stats.sent, stats.send_failed), (3, 2), "{stats:?}");
    });
}

/// A writer's refusals after the close count in `send_failed`, and its waits fail.
#[test]
fn r17_writer_refusals_after_an_abort_are_counted_and_its_waiters_woken() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (sub, mut heard) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(DatagramConfig {
                max_queued: 2,
                ..DatagramConfig::default()
            })
            .subscriber(sub)
            .bind(local())
            .await
            .expect("bind");
        let writer = socket.send(GetDatagramWriter).await.expect("writer");
        writer.send_to(vec![1u8], Some(peer().into())).expect("1");
        writer.send_to(vec![2u8], Some(peer().into())).expect("2");
        settle().await;
        assert_eq!(writer.queued(), 2);
        let w = writer.clone();
        let waiting =
            actix::spawn(async move { w.send_when_ready(vec![3u8], Some(peer().into())).await });
        settle().await;
        assert!(!waiting.is_finished());
        socket.do_send(Close::Abort);
        let r = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken")
            .expect("join");
        assert!(r.is_err(), "{r:?}");
        assert!(writer.send_to(vec![4u8], Some(peer().into())).is_err());
        assert!(writer.writable(1).await.is_err());
        assert_eq!(writer.queued(), 0);
        settle().await;
        let events = drain(&mut heard);
        let k = kinds(&events);
        assert_eq!(k.last().map(String::as_str), Some("closed"), "{k:?}");
        let failed = k.iter().filter(|s| s.starts_with("sendfailed")).count();
        assert_eq!(failed, 2, "the two admitted datagrams aborted: {k:?}");
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        // Two aborted, the waiter's refusal and the late send_to.
        assert_eq!((stats.sent, stats.send_failed), (0, 4), "{stats:?}");
    });
}

// ---------------------------------------------------------------------------------------
// Simulated network
// ---------------------------------------------------------------------------------------

/// On the simulated network: an empty datagram and ones at and over `max_datagram_size`
/// arrive as documented, with their sender's bound address.
#[test]
fn r17_sim_network_empty_and_boundary_datagrams() {
    run_paused(|| async {
        let net = SimNetwork::start(SimConfig {
            seed: 17,
            ..SimConfig::default()
        });
        let (sub, mut heard) = channel::<DatagramEvent>();
        let a_addr: SocketAddr = "10.0.0.1:5000".parse().expect("addr");
        let b_addr: SocketAddr = "10.0.0.2:6000".parse().expect("addr");
        let (_a, _) = DatagramSocket::builder()
            .functions(net.functions())
            .config(DatagramConfig {
                max_datagram_size: 4,
                ..DatagramConfig::default()
            })
            .subscriber(sub)
            .bind(a_addr)
            .await
            .expect("bind a");
        let (b, b_local) = DatagramSocket::builder()
            .functions(net.functions())
            .bind(b_addr)
            .await
            .expect("bind b");
        assert_eq!(b_local, Address::Inet(b_addr));
        for len in [0usize, 4, 5] {
            b.send(SendDatagram::new(vec![1u8; len]).to(a_addr))
                .await
                .expect("mailbox")
                .expect("sent");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut got = Vec::new();
        for _ in 0..3 {
            let (bytes, from, truncated) = next_datagram(&mut heard).await;
            assert_eq!(from, Some(Address::Inet(b_addr)));
            got.push((bytes.len(), truncated));
        }
        assert_eq!(got, [(0, false), (4, false), (4, true)]);
    });
}

/// With `max_datagram_size: 0` on the simulated network, a one-byte datagram is cut to
/// nothing and flagged, an empty one is whole.
#[test]
fn r17_sim_network_max_datagram_size_zero() {
    run_paused(|| async {
        let net = SimNetwork::start(SimConfig {
            seed: 3,
            ..SimConfig::default()
        });
        let (sub, mut heard) = channel::<DatagramEvent>();
        let a_addr: SocketAddr = "10.0.0.1:5001".parse().expect("addr");
        let (a, _) = DatagramSocket::builder()
            .functions(net.functions())
            .config(DatagramConfig {
                max_datagram_size: 0,
                ..DatagramConfig::default()
            })
            .subscriber(sub)
            .bind(a_addr)
            .await
            .expect("bind a");
        let (b, _) = DatagramSocket::builder()
            .functions(net.functions())
            .bind("10.0.0.2:6001".parse::<SocketAddr>().expect("addr"))
            .await
            .expect("bind b");
        for len in [1usize, 0] {
            b.send(SendDatagram::new(vec![1u8; len]).to(a_addr))
                .await
                .expect("mailbox")
                .expect("sent");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut got = Vec::new();
        for _ in 0..2 {
            let (bytes, _, truncated) = next_datagram(&mut heard).await;
            got.push((bytes.len(), truncated));
        }
        assert_eq!(got, [(0, true), (0, false)]);
        let stats = a.send(GetDatagramStats).await.expect("stats");
        assert_eq!((stats.received, stats.truncated), (2, 1), "{stats:?}");
    });
}

// ---------------------------------------------------------------------------------------
// Configuration edges, flushers, shutdowns
// ---------------------------------------------------------------------------------------

/// A Flusher of the caller's that handles the request and stops without answering: "is
/// noticed (looked at every second) and the socket writes at once".
#[test]
fn r17_a_custom_flusher_that_stops_without_answering_strands_no_datagram() {
    struct Quitter;
    impl Actor for Quitter {
        type Context = Context<Self>;
    }
    impl Handler<sockactor::messages::PendingWrite> for Quitter {
        type Result = ();
        fn handle(&mut self, _: sockactor::messages::PendingWrite, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }
    run_paused(|| async {
        let mock = MockTransport::start();
        let quitter = Quitter.start();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .flush_policy(sockactor::FlushPolicy::Deferred(quitter.recipient()))
            .bind(local())
            .await
            .expect("bind");
        let s = socket.clone();
        let answer =
            actix::spawn(async move { s.send(SendDatagram::new(vec![1u8; 4]).to(peer())).await });
        socket.do_send(SendDatagram::new(vec![2u8; 4]).to(peer()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        settle().await;
        assert!(
            answer.is_finished(),
            "stranded behind a flusher that stopped"
        );
        let r = answer.await.expect("join").expect("mailbox");
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(mock.datagrams(Handle(1)).len(), 2);
        // Later datagrams go at once.
        let r = socket
            .send(SendDatagram::new(vec![3u8; 4]).to(peer()))
            .await
            .expect("mailbox");
        assert!(r.is_ok(), "{r:?}");
    });
}

/// A `Flush` the user sends early, and the Flusher's own one after: "harmless"; every
/// datagram leaves once, in order.
#[test]
fn r17_an_early_flush_and_the_flushers_own_send_each_datagram_once() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .bind(local())
            .await
            .expect("bind");
        socket.do_send(SendDatagram::new(vec![1u8]).to(peer()));
        socket.do_send(sockactor::messages::Flush);
        socket.do_send(SendDatagram::new(vec![2u8]).to(peer()));
        socket.do_send(sockactor::messages::Flush);
        socket.do_send(SendDatagram::new(vec![3u8]).to(peer()));
        settle().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        settle().await;
        let sent: Vec<Vec<u8>> = mock
            .datagrams(Handle(1))
            .into_iter()
            .map(|d| d.bytes)
            .collect();
        assert_eq!(sent, [vec![1u8], vec![2u8], vec![3u8]]);
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!(
            (stats.sent, stats.send_failed, stats.queued),
            (3, 0, 0),
            "{stats:?}"
        );
    });
}

/// A socket system shut down under a datagram socket whose transport holds a datagram,
/// with more queued and a writer on the caller's thread: every awaited datagram is
/// answered (an answer or a mailbox error, never a hang), the writer refuses afterwards,
/// holds nothing, and its waits fail.
#[actix::test]
async fn r17_a_socket_system_shut_down_under_a_blocked_datagram_socket() {
    let mock = MockTransport::start();
    mock.set_default_step(SendStep::Hold);
    let functions = mock.functions();
    let system = sockactor::SocketSystem::builder()
        .arbiters(1)
        .start()
        .expect("start");
    let socket = system
        .run_on(0, move || async move {
            DatagramSocket::builder()
                .functions(functions)
                .config(DatagramConfig {
                    max_queued: 4,
                    ..DatagramConfig::default()
                })
                .bind(local())
                .await
                .expect("bind")
                .0
        })
        .await
        .expect("run_on");
    let writer = socket.send(GetDatagramWriter).await.expect("writer");
    let mut answers = Vec::new();
    for i in 0..1u8 {
        let s = socket.clone();
        answers.push(tokio::spawn(async move {
            s.send(SendDatagram::new(vec![i; 3]).to(peer())).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..4u8 {
        writer
            .send_to(vec![i; 3], Some(peer().into()))
            .expect("admitted");
    }
    assert!(
        writer.send_to(vec![9u8; 3], Some(peer().into())).is_err(),
        "full"
    );
    let w = writer.clone();
    let waiting = tokio::spawn(async move { w.writable(3).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "the gate is full: the waiter waits");
    assert_eq!(writer.queued(), 4);
    system.shutdown().await.expect("shutdown");
    for a in answers {
        let r = tokio::time::timeout(Duration::from_secs(2), a)
            .await
            .expect("answered after the shutdown")
            .expect("join");
        if let Ok(r) = r {
            assert!(r.is_err(), "nothing went out: {r:?}");
        }
    }
    let w = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("the waiter woke")
        .expect("join");
    assert!(w.is_err(), "{w:?}");
    assert_eq!(writer.queued(), 0);
    assert!(writer.send_to(vec![1u8], Some(peer().into())).is_err());
    assert!(writer.writable(1).await.is_err());
    drop(socket);
}

// ---------------------------------------------------------------------------------------
// Unix paths: whose path is removed
// ---------------------------------------------------------------------------------------

/// Binding over a regular file fails with a bind error, and leaves the file alone.
#[actix::test]
async fn r17_binding_over_a_regular_file_fails_and_keeps_the_file() {
    let path = TempPath::new("r17-regular-file");
    std::fs::write(&path.0, b"precious").expect("write");
    let r = DatagramSocket::builder()
        .bind(Address::Unix(path.0.clone()))
        .await;
    assert!(
        matches!(r, Err(sockactor::SocketError::Bind(_))),
        "{:?}",
        r.err()
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(std::fs::read(&path.0).expect("still there"), b"precious");
}

/// `DatagramInfo::local`: "The local address it was bound to": a connect bound first to
/// port 0 tells the port it got, and the peer hears the datagram from it.
#[actix::test]
async fn r17_a_connect_bound_to_port_zero_tells_its_real_local_address() {
    let (heard_tx, mut heard) = channel::<DatagramEvent>();
    let (_rx, rx_addr) = DatagramSocket::builder()
        .subscriber(heard_tx)
        .bind(local())
        .await
        .expect("bind receiver");
    let tx = DatagramSocket::builder()
        .local(local())
        .connect(rx_addr.clone())
        .await
        .expect("connect");
    let info = tx.send(GetDatagramInfo).await.expect("info");
    assert_eq!(info.peer, Some(rx_addr));
    tx.send(SendDatagram::new(&b"x"[..]))
        .await
        .expect("mailbox")
        .expect("sent");
    let (_, from, _) = next_datagram(&mut heard).await;
    let local = info.local.expect("bound explicitly");
    match &local {
        Address::Inet(a) => assert_ne!(a.port(), 0, "{local:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(from, Some(local));
}

// ---------------------------------------------------------------------------------------
// Batches on the system transport
// ---------------------------------------------------------------------------------------

/// A connected IPv6 socket sends a run of one length (offloaded) with an over-long
/// datagram in the middle: the run arrives whole and in order, the over-long one alone
/// fails (`Transport`), and the counters agree.
#[actix::test]
async fn r17_a_connected_ipv6_run_with_an_oversized_datagram_in_the_middle() {
    let any6: SocketAddr = "[::1]:0".parse().expect("addr");
    let (heard_tx, mut heard) = channel::<DatagramEvent>();
    let (_rx, rx_addr) = match DatagramSocket::builder()
        .subscriber(heard_tx)
        .bind(any6)
        .await
    {
        Ok(x) => x,
        Err(e) => {
            eprintln!("no IPv6 loopback here: {e}");
            return;
        }
    };
    let tx = DatagramSocket::builder()
        .connect(rx_addr.clone())
        .await
        .expect("connect");
    let mut plan: Vec<usize> = vec![1200; 5];
    plan.insert(3, 70_000);
    plan.extend([1200, 1200, 300]);
    let mut answers = Vec::new();
    for (i, len) in plan.iter().enumerate() {
        let s = tx.clone();
        let d = vec![i as u8; *len];
        answers.push(actix::spawn(
            async move { s.send(SendDatagram::new(d)).await },
        ));
    }
    let mut ok = 0;
    for (i, a) in answers.into_iter().enumerate() {
        let r = a.await.expect("join").expect("mailbox");
        if plan[i] == 70_000 {
            assert!(matches!(r, Err(DatagramError::Transport(_))), "{i}: {r:?}");
        } else {
            assert!(matches!(r, Ok(ref s) if s.len == plan[i]), "{i}: {r:?}");
            ok += 1;
        }
    }
    let mut got = Vec::new();
    for _ in 0..ok {
        let (bytes, from, truncated) = next_datagram(&mut heard).await;
        assert!(!truncated);
        assert!(
            matches!(from, Some(Address::Inet(a)) if a.is_ipv6()),
            "{from:?}"
        );
        assert!(bytes.iter().all(|b| *b == bytes[0]));
        got.push((bytes[0], bytes.len()));
    }
    let want: Vec<(u8, usize)> = plan
        .iter()
        .enumerate()
        .filter(|(_, l)| **l != 70_000)
        .map(|(i, l)| (i as u8, *l))
        .collect();
    assert_eq!(got, want);
    let stats = tx.send(GetDatagramStats).await.expect("stats");
    assert_eq!((stats.sent, stats.send_failed), (ok as u64, 1), "{stats:?}");
}

/// Two destinations interleaved, same length, on one unconnected socket: each receiver
/// gets its own datagrams in order (offload groups must not cross destinations).
#[actix::test]
async fn r17_interleaved_destinations_of_one_length_each_get_their_own() {
    let (a_tx, mut a_heard) = channel::<DatagramEvent>();
    let (b_tx, mut b_heard) = channel::<DatagramEvent>();
    let (_a, a_addr) = DatagramSocket::builder()
        .subscriber(a_tx)
        .bind(local())
        .await
        .expect("a");
    let (_b, b_addr) = DatagramSocket::builder()
        .subscriber(b_tx)
        .bind(local())
        .await
        .expect("b");
    let (tx, _) = DatagramSocket::builder().bind(local()).await.expect("tx");
    let order = [0, 0, 1, 1, 0, 1, 0, 0, 0, 1];
    for (i, d) in order.iter().enumerate() {
        let to = if *d == 0 {
            a_addr.clone()
        } else {
            b_addr.clone()
        };
        tx.do_send(SendDatagram::new(vec![i as u8; 100]).to(to));
    }
    tx.send(SendDatagram::new(vec![99u8; 100]).to(a_addr.clone()))
        .await
        .expect("mailbox")
        .expect("sent");
    tx.send(SendDatagram::new(vec![99u8; 100]).to(b_addr.clone()))
        .await
        .expect("mailbox")
        .expect("sent");
    for (heard, which) in [(&mut a_heard, 0), (&mut b_heard, 1)] {
        let mut got = Vec::new();
        loop {
            let (bytes, _, _) = next_datagram(heard).await;
            assert_eq!(bytes.len(), 100);
            if bytes[0] == 99 {
                break;
            }
            got.push(bytes[0] as usize);
        }
        let want: Vec<usize> = order
            .iter()
            .enumerate()
            .filter(|(_, d)| **d == which)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(got, want, "destination {which}");
    }
}

/// Graceful close while blocked, a second graceful close, then an abort: the blocked and
/// queued datagrams are answered `Aborted` once each, in order, `Closed` comes once and
/// last, and the counters agree.
#[test]
fn r17_graceful_then_abort_while_blocked_answers_each_once_and_closes_once() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (sub, mut heard) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .subscriber(sub)
            .bind(local())
            .await
            .expect("bind");
        for i in 0..3u64 {
            socket.do_send(SendDatagram::new(vec![i as u8; 2]).to(peer()).tag(i));
        }
        settle().await;
        socket.do_send(Close::Graceful);
        socket.do_send(Close::Graceful);
        settle().await;
        socket.do_send(Close::Abort);
        socket.do_send(Close::Abort);
        settle().await;
        mock.release(Handle(1));
        settle().await;
        assert!(mock.datagrams(Handle(1)).is_empty());
        let events = drain(&mut heard);
        assert_eq!(
            kinds(&events),
            [
                "sendfailedSome(0)",
                "sendfailedSome(1)",
                "sendfailedSome(2)",
                "closed"
            ]
        );
        for e in &events {
            if let DatagramEventKind::SendFailed { error, .. } = &e.kind {
                assert!(matches!(error, DatagramError::Aborted), "{error:?}");
            }
        }
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!(
            (stats.sent, stats.send_failed, stats.queued),
            (0, 3, 0),
            "{stats:?}"
        );
        assert!(mock.is_closed(Handle(1)));
    });
}

/// `reuse_port` on a Unix datagram socket is refused as a bind error, with no path left.
#[actix::test]
async fn r17_reuse_port_on_a_unix_datagram_socket_is_a_bind_error_with_no_path_left() {
    let path = TempPath::new("r17-reuse.sock");
    let r = DatagramSocket::builder()
        .reuse_port(true)
        .bind(Address::Unix(path.0.clone()))
        .await;
    assert!(
        matches!(r, Err(sockactor::SocketError::Bind(_))),
        "{:?}",
        r.err()
    );
    assert!(!path.0.exists());
}

/// A datagram socket connected (unbound) to a Unix path, sending a burst while the
/// receiver reads: a connected sender waits for the receiver's room and everything
/// arrives in order, each answered.
#[actix::test]
async fn r17_a_connected_unix_sender_outpacing_its_receiver_delivers_everything_in_order() {
    let rpath = TempPath::new("r17-conn-recv.sock");
    let (heard_tx, mut heard) = channel::<DatagramEvent>();
    let (_rx, rx_addr) = DatagramSocket::builder()
        .subscriber(heard_tx)
        .bind(Address::Unix(rpath.0.clone()))
        .await
        .expect("bind receiver");
    let tx = DatagramSocket::builder()
        .connect(rx_addr)
        .await
        .expect("connect");
    let writer = tx.send(GetDatagramWriter).await.expect("writer");
    let n = 2000u32;
    let w = writer.clone();
    let producer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            for i in 0..n {
                w.send_when_ready(i.to_be_bytes().to_vec(), None)
                    .await
                    .expect("admitted");
            }
        });
    });
    let mut next = 0u32;
    while next < n {
        let (bytes, _, _) = next_datagram(&mut heard).await;
        let got = u32::from_be_bytes(bytes[..4].try_into().expect("4"));
        assert_eq!(got, next);
        next += 1;
    }
    producer.join().expect("producer");
    let stats = tx.send(GetDatagramStats).await.expect("stats");
    assert_eq!((stats.sent, stats.send_failed), (n as u64, 0), "{stats:?}");
}
