//! From the eighth round of the independent review: datagram sockets
//! (`DatagramSocket`, `DatagramWriter`) sent to every way and from other threads and
//! arbiters; receiving (truncation, senders on IPv4, IPv6 and Unix paths and abstract
//! names, connected sockets, bursts past a batch, kernel buffer sizes); closing and
//! errors (abort with datagrams queued and out, ICMP on connected UDP, segment counts
//! past the kernel's), each datagram answered once and the counters agreeing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::support::{
    channel, drain, local, next_datagram, run_paused, settle, temp_path, TempPath,
};
use actix::prelude::*;
use sockactor::messages::{
    Address, Close, DatagramEvent, DatagramEventKind, GetDatagramInfo, GetDatagramStats,
    GetDatagramWriter, Handle, SendDatagram, SubscribeWritability, WritabilityChanged,
};
use sockactor::{
    DatagramConfig, DatagramError, DatagramSocket, MockTransport, SendStep, SocketBuffers,
    SocketFunctions, SocketSystem, TransportError,
};

fn peer() -> SocketAddr {
    "127.0.0.1:9053".parse().expect("addr")
}

fn cfg(max_queued: usize) -> DatagramConfig {
    DatagramConfig {
        max_queued,
        ..DatagramConfig::default()
    }
}

fn abstract_name(tag: &str) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(
        format!("sockactor-datagram-test-{}-{tag}", std::process::id()).as_bytes(),
    );
    PathBuf::from(std::ffi::OsStr::from_bytes(&bytes))
}

// ---------------------------------------------------------------------------------------
// Unix datagram sockets: paths and abstract names
// ---------------------------------------------------------------------------------------

/// A Unix datagram socket bound first (`local`) and then connected to a peer bound to an
/// abstract name: the builder takes a local address and connect takes any `Address`,
/// and `Address::Unix` documents abstract names as paths starting with a NUL byte.
#[actix::test]
async fn bound_unix_socket_connects_to_an_abstract_name() {
    let server_name = abstract_name("srv1");
    let (heard_tx, mut heard) = channel::<DatagramEvent>();
    let (_server, server_local) = DatagramSocket::builder()
        .subscriber(heard_tx)
        .bind(Address::Unix(server_name.clone()))
        .await
        .expect("bind the abstract server name");
    assert_eq!(server_local, Address::Unix(server_name.clone()));

    let client_path = TempPath::new("r8a-client.sock");
    let client = DatagramSocket::builder()
        .local(Address::Unix(client_path.0.clone()))
        .connect(Address::Unix(server_name.clone()))
        .await
        .expect("a bound Unix datagram socket connects to an abstract name");
    client
        .send(SendDatagram::new(&b"hello"[..]))
        .await
        .expect("mailbox")
        .expect("sent");
    let (bytes, from, truncated) = next_datagram(&mut heard).await;
    assert_eq!(bytes, b"hello");
    assert!(!truncated);
    assert_eq!(from, Some(Address::Unix(client_path.0.clone())));
}

/// The same connect, but from a socket bound to an abstract name of its own.
#[actix::test]
async fn abstract_bound_socket_connects_to_an_abstract_name() {
    let server_name = abstract_name("srv2");
    let client_name = abstract_name("cli2");
    let (heard_tx, mut heard) = channel::<DatagramEvent>();
    let (_server, _) = DatagramSocket::builder()
        .subscriber(heard_tx)
        .bind(Address::Unix(server_name.clone()))
        .await
        .expect("bind");
    let client = DatagramSocket::builder()
        .local(Address::Unix(client_name.clone()))
        .connect(Address::Unix(server_name.clone()))
        .await
        .expect("connect to an abstract name from an abstract name");
    client
        .send(SendDatagram::new(&b"x"[..]))
        .await
        .expect("mailbox")
        .expect("sent");
    let (bytes, from, _) = next_datagram(&mut heard).await;
    assert_eq!(bytes, b"x");
    assert_eq!(from, Some(Address::Unix(client_name)));
}

/// Unbound (no `local`) connect to an abstract name, and sending to an abstract name
/// from a socket bound to a path.
#[actix::test]
async fn unbound_connect_and_send_to_an_abstract_name() {
    let server_name = abstract_name("srv3");
    let (heard_tx, mut heard) = channel::<DatagramEvent>();
    let (_server, _) = DatagramSocket::builder()
        .subscriber(heard_tx)
        .bind(Address::Unix(server_name.clone()))
        .await
        .expect("bind");
    let client = DatagramSocket::builder()
        .connect(Address::Unix(server_name.clone()))
        .await
        .expect("connect");
    client
        .send(SendDatagram::new(&b"unbound"[..]))
        .await
        .expect("mailbox")
        .expect("sent");
    let (bytes, from, _) = next_datagram(&mut heard).await;
    assert_eq!(bytes, b"unbound");
    assert_eq!(from, Some(Address::Unix(PathBuf::new())), "an unnamed peer");

    let path = TempPath::new("r8a-pathsender.sock");
    let (sender, _) = DatagramSocket::builder()
        .bind(Address::Unix(path.0.clone()))
        .await
        .expect("bind path");
    sender
        .send(SendDatagram::new(&b"to-abstract"[..]).to(Address::Unix(server_name.clone())))
        .await
        .expect("mailbox")
        .expect("sent");
    let (bytes, from, _) = next_datagram(&mut heard).await;
    assert_eq!(bytes, b"to-abstract");
    assert_eq!(from, Some(Address::Unix(path.0.clone())));
}

/// A Unix datagram longer than the default `max_datagram_size` (65,535) is flagged
/// truncated and cut to it; with a larger `max_datagram_size` it arrives whole.
#[actix::test]
async fn long_unix_datagrams_are_truncated_or_whole_per_max_datagram_size() {
    for (max, expect_truncated) in [(65_535usize, true), (150_000usize, false)] {
        let path = TempPath::new("r8a-long.sock");
        let (heard_tx, mut heard) = channel::<DatagramEvent>();
        let (_server, _) = DatagramSocket::builder()
            .subscriber(heard_tx)
            .config(DatagramConfig {
                max_datagram_size: max,
                buffers: SocketBuffers {
                    send: None,
                    recv: Some(1 << 20),
                },
                ..DatagramConfig::default()
            })
            .bind(Address::Unix(path.0.clone()))
            .await
            .expect("bind");
        let sender = std::os::unix::net::UnixDatagram::unbound().expect("std socket");
        socket2::SockRef::from(&sender)
            .set_send_buffer_size(1 << 20)
            .expect("sndbuf");
        let payload = crate::support::pattern(100_000, 7);
        sender.send_to(&payload, &path.0).expect("send 100 kB");
        let (bytes, _, truncated) = next_datagram(&mut heard).await;
        assert_eq!(truncated, expect_truncated, "max {max}");
        let keep = payload.len().min(max);
        assert_eq!(bytes.len(), keep, "max {max}");
        assert_eq!(bytes, payload[..keep], "max {max}");
    }
}

// ---------------------------------------------------------------------------------------
// IPv4 / IPv6 senders, connected sockets, truncation, stats
// ---------------------------------------------------------------------------------------

/// Senders are reported exactly, on IPv6 loopback too; a connected socket receives only
/// from its peer; truncation is flagged; stats agree.
#[actix::test]
async fn ipv6_senders_connected_filtering_truncation_and_stats() {
    let v6: SocketAddr = "[::1]:0".parse().expect("addr");
    let (heard_tx, mut heard) = channel::<DatagramEvent>();
    let (a, a_local) = DatagramSocket::builder()
        .subscriber(heard_tx)
        .config(DatagramConfig {
            max_datagram_size: 8,
            ..DatagramConfig::default()
        })
        .bind(v6)
        .await
        .expect("bind ::1");
    let Address::Inet(a_addr) = a_local.clone() else {
        panic!("inet")
    };
    // B: connected to A, bound first.
    let b_sock = std::net::UdpSocket::bind("[::1]:0").expect("b");
    let b_addr = b_sock.local_addr().expect("b addr");
    drop(b_sock);
    let b = DatagramSocket::builder()
        .local(b_addr)
        .connect(a_addr)
        .await
        .expect("connect B to A");
    // C: a stranger.
    let c = tokio::net::UdpSocket::bind("[::1]:0").await.expect("c");
    let c_addr = c.local_addr().expect("c addr");

    for (len, trunc) in [(3usize, false), (8, false), (9, true), (1000, true)] {
        let data = crate::support::pattern(len, len as u64);
        b.send(SendDatagram::new(data.clone()))
            .await
            .expect("mailbox")
            .expect("sent");
        let (bytes, from, truncated) = next_datagram(&mut heard).await;
        assert_eq!(from, Some(Address::Inet(b_addr)), "len {len}");
        assert_eq!(truncated, trunc, "len {len}");
        assert_eq!(bytes, data[..len.min(8)], "len {len}");
    }
    // Reply from A to B's address; and C also writes to B, which is connected to A.
    let (b_heard_tx, mut b_heard) = channel::<DatagramEvent>();
    // B has no subscriber: make a second connected socket D (subscribed) instead.
    let d_std = std::net::UdpSocket::bind("[::1]:0").expect("d");
    let d_addr = d_std.local_addr().expect("d addr");
    drop(d_std);
    let _d = DatagramSocket::builder()
        .local(d_addr)
        .subscriber(b_heard_tx)
        .connect(a_addr)
        .await
        .expect("connect D to A");
    c.send_to(b"stranger", d_addr).await.expect("c sends");
    a.send(SendDatagram::new(&b"from-a"[..]).to(d_addr))
        .await
        .expect("mailbox")
        .expect("sent");
    let (bytes, from, _) = next_datagram(&mut b_heard).await;
    assert_eq!(bytes, b"from-a", "only the peer's datagrams arrive");
    assert_eq!(from, Some(Address::Inet(a_addr)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    for e in drain(&mut b_heard) {
        if let DatagramEventKind::Received { from, .. } = e.kind {
            panic!("a datagram from {from:?} reached a socket connected to {a_addr}");
        }
    }
    let _ = c_addr;

    let stats = a.send(GetDatagramStats).await.expect("stats");
    assert_eq!(stats.received, 4, "{stats:?}");
    assert_eq!(stats.truncated, 2, "{stats:?}");
    assert_eq!(stats.bytes_received, 3 + 8 + 8 + 8, "{stats:?}");
    assert_eq!(stats.sent, 1, "{stats:?}");
    assert_eq!(stats.bytes_sent, 6, "{stats:?}");
    assert_eq!(stats.send_failed, 0, "{stats:?}");
    let bstats = b.send(GetDatagramStats).await.expect("stats");
    assert_eq!(bstats.sent, 4, "{bstats:?}");
    assert_eq!(bstats.bytes_sent, 3 + 8 + 9 + 1000, "{bstats:?}");
}

// ---------------------------------------------------------------------------------------
// ICMP errors on connected UDP
// ---------------------------------------------------------------------------------------

/// A connected UDP socket whose peer's port is closed: every datagram is answered once,
/// the ICMP errors come back as `ReadFailed` (an I/O error: "the socket goes on
/// reading"), and the socket stays open, so that when the peer comes back its datagrams
/// are delivered both ways.
#[actix::test]
async fn connected_udp_survives_a_peer_that_is_down_for_a_while() {
    // A port that nothing listens on (bound, then freed).
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe");
    let target = probe.local_addr().expect("addr");
    drop(probe);
    let (heard_tx, mut heard) = channel::<DatagramEvent>();
    let client = DatagramSocket::builder()
        .subscriber(heard_tx)
        .connect(target)
        .await
        .expect("connect");
    let mut ok = 0;
    let mut refused = 0;
    for i in 0..12u8 {
        match client
            .send(SendDatagram::new(vec![i]))
            .await
            .expect("mailbox")
        {
            Ok(_) => ok += 1,
            Err(DatagramError::Transport(TransportError::Io(e)))
                if e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                refused += 1
            }
            Err(other) => panic!("datagram {i}: {other:?}"),
        }
        // Let the ICMP error come back and be read.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ok + refused, 12);
    let events = drain(&mut heard);
    let read_failed = events
        .iter()
        .filter(|e| matches!(e.kind, DatagramEventKind::ReadFailed(_)))
        .count();
    let closed: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            DatagramEventKind::Closed { cause } => Some(cause.clone()),
            _ => None,
        })
        .collect();
    let info = client.send(GetDatagramInfo).await.expect("info");
    eprintln!("ok {ok} refused {refused} read_failed {read_failed}");
    assert!(
        closed.is_empty() && info.open,
        "a connected UDP socket closed because its peer was down for 12 datagrams \
         ({read_failed} ReadFailed, {refused} sends refused): closed {closed:?}"
    );
    // The peer comes back on the same port.
    let server = tokio::net::UdpSocket::bind(target).await.expect("rebind");
    client
        .send(SendDatagram::new(&b"again"[..]))
        .await
        .expect("mailbox")
        .expect("sent");
    let mut buf = [0u8; 16];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), server.recv_from(&mut buf))
        .await
        .expect("within 5 s")
        .expect("recv");
    assert_eq!(&buf[..n], b"again");
    server.send_to(b"back", from).await.expect("reply");
    let (bytes, _, _) = next_datagram(&mut heard).await;
    assert_eq!(bytes, b"back");
}

// ---------------------------------------------------------------------------------------
// Sending from other threads and arbiters; would-block on Unix datagram sockets
// ---------------------------------------------------------------------------------------

/// A DatagramSocket on an arbiter of a SocketSystem, over a system table made on the
/// test's thread, sending to a Unix datagram receiver that reads only later (so the
/// kernel's queue fills and sends would block): a producer on a plain OS thread uses a
/// `DatagramWriter` with `send_when_ready`; everything arrives once, in order.
#[actix::test]
async fn writer_from_a_plain_thread_through_an_arbiter_with_would_blocks() {
    const N: u32 = 3000;
    let recv_path = TempPath::new("r8a-slow-recv.sock");
    let receiver = std::os::unix::net::UnixDatagram::bind(&recv_path.0).expect("bind receiver");
    let send_path = temp_path("r8a-sender.sock");
    let system = SocketSystem::builder().arbiters(1).start().expect("start");
    let table = SocketFunctions::system(); // made on this thread
    let sp = send_path.clone();
    let socket = system
        .run_on(0, move || async move {
            let (socket, _) = DatagramSocket::builder()
                .functions(table)
                .config(cfg(64))
                .bind(Address::Unix(sp))
                .await
                .expect("bind sender");
            socket
        })
        .await
        .expect("on the arbiter");
    let writer = socket.send(GetDatagramWriter).await.expect("writer");
    let to = Address::Unix(recv_path.0.clone());
    let producer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            for i in 0..N {
                writer
                    .send_when_ready(i.to_be_bytes().to_vec(), Some(to.clone()))
                    .await
                    .expect("sent once there is room");
            }
        })
    });
    // Read only after a while: the kernel's queue (max_dgram_qlen) fills first.
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        receiver
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        while got.len() < N as usize {
            let n = receiver.recv(&mut buf).expect("a datagram within 10 s");
            assert_eq!(n, 4);
            got.push(u32::from_be_bytes(buf[..4].try_into().expect("4")));
        }
        got
    });
    let got = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
        .await
        .expect("join");
    tokio::task::spawn_blocking(move || producer.join().expect("producer"))
        .await
        .expect("join");
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "all, once, in order");
    let stats = socket.send(GetDatagramStats).await.expect("stats");
    assert_eq!(stats.sent, N as u64, "{stats:?}");
    assert_eq!(stats.send_failed, 0, "{stats:?}");
    assert!(stats.would_blocks > 0, "the kernel queue filled: {stats:?}");
    socket.send(Close::Graceful).await.expect("close");
    system.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_file(&send_path);
}

/// `send` and `do_send` from several threads at once to a socket on an arbiter (mock
/// table made on the test thread): every `send` is answered once, every `do_send`
/// refusal is reported as `SendFailed`, and the counts agree with the stats.
#[actix::test]
async fn sends_and_do_sends_from_many_threads_are_each_answered_or_reported_once() {
    let mock = MockTransport::start();
    let (sub, mut heard) = channel::<DatagramEvent>();
    let system = SocketSystem::builder().arbiters(2).start().expect("start");
    let functions = mock.functions();
    let socket = system
        .run_on(1, move || async move {
            DatagramSocket::builder()
                .functions(functions)
                .config(cfg(8))
                .subscriber(sub)
                .bind(local())
                .await
                .expect("bind")
                .0
        })
        .await
        .expect("arbiter");
    const THREADS: u32 = 4;
    const EACH: u32 = 500;
    let mut joins = Vec::new();
    for t in 0..THREADS {
        let socket = socket.clone();
        joins.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let (mut ok, mut full) = (0u32, 0u32);
                for i in 0..EACH {
                    let payload = [t.to_be_bytes(), i.to_be_bytes()].concat();
                    if i % 2 == 0 {
                        socket.do_send(
                            SendDatagram::new(payload)
                                .to(peer())
                                .tag(u64::from(t) << 32 | u64::from(i)),
                        );
                    } else {
                        match socket
                            .send(SendDatagram::new(payload).to(peer()))
                            .await
                            .expect("mailbox")
                        {
                            Ok(_) => ok += 1,
                            Err(DatagramError::QueueFull { .. }) => full += 1,
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                }
                (ok, full)
            })
        }));
    }
    let mut sent_ok = 0;
    let mut sent_full = 0;
    for j in joins {
        let (ok, full) = tokio::task::spawn_blocking(move || j.join().expect("thread"))
            .await
            .expect("join");
        sent_ok += ok;
        sent_full += full;
    }
    // Let the socket finish.
    let total = (THREADS * EACH) as u64;
    let mut stats = socket.send(GetDatagramStats).await.expect("stats");
    for _ in 0..500 {
        if stats.sent + stats.send_failed == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stats = socket.send(GetDatagramStats).await.expect("stats");
    }
    assert_eq!(stats.sent + stats.send_failed, total, "{stats:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut reported = std::collections::HashSet::new();
    for e in drain(&mut heard) {
        if let DatagramEventKind::SendFailed { tag, error } = e.kind {
            assert!(
                matches!(error, DatagramError::QueueFull { .. }),
                "{error:?}"
            );
            let tag = tag.expect("a do_send's tag");
            assert!(reported.insert(tag), "reported twice: {tag}");
        }
    }
    let do_send_failed = stats.send_failed - u64::from(sent_full);
    assert_eq!(
        reported.len() as u64,
        do_send_failed,
        "every do_send refusal reported once ({stats:?}, {sent_ok} send ok, {sent_full} send full)"
    );
    let recorded = mock.datagrams(Handle(1)).len() as u64;
    assert_eq!(recorded, stats.sent, "{stats:?}");
    system.shutdown().await.expect("shutdown");
}

// ---------------------------------------------------------------------------------------
// Mock: writability notices, the gate, close/abort, stats
// ---------------------------------------------------------------------------------------

/// Writability notices alternate `false`/`true`, start with `false` when the gate fills,
/// and a refusal while already full does not repeat `false`.
#[test]
fn writability_notices_alternate_and_never_repeat() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(cfg(4))
            .immediate()
            .bind(local())
            .await
            .expect("bind");
        let (wsub, mut notices) = channel::<WritabilityChanged>();
        socket
            .send(SubscribeWritability(wsub))
            .await
            .expect("subscribe");
        let writer = socket.send(GetDatagramWriter).await.expect("writer");
        for round in 0..3u8 {
            let mut admitted = 0;
            loop {
                match writer.send_to(vec![round; 10], Some(peer().into())) {
                    Ok(()) => admitted += 1,
                    Err(DatagramError::QueueFull { .. }) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert_eq!(
                admitted,
                4 - if round == 0 { 0 } else { 2 },
                "round {round}"
            );
            // Refused twice more while full.
            assert!(writer.send_to(vec![0u8], Some(peer().into())).is_err());
            settle().await;
            // Let two go: drains to half.
            mock.script_sendv(Handle(1), [SendStep::AcceptAll, SendStep::AcceptAll]);
            mock.set_default_step(SendStep::Hold);
            mock.release(Handle(1));
            settle().await;
        }
        let seen: Vec<bool> = drain(&mut notices)
            .into_iter()
            .map(|n| n.writable)
            .collect();
        assert_eq!(seen, [false, true, false, true, false, true], "{seen:?}");
    });
}

/// Abort with one datagram out (a slow transport) and others queued: the queued ones
/// get `Aborted`, the one out is answered by what the transport did (took it: Ok), and
/// the stats agree with the answers.
#[test]
fn abort_with_a_datagram_in_flight_and_others_queued() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [SendStep::Slow {
                bytes: usize::MAX,
                after: Duration::from_millis(100),
            }],
        );
        let (sub, mut heard) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .immediate()
            .subscriber(sub)
            .bind(local())
            .await
            .expect("bind");
        let mut answers = Vec::new();
        for i in 0..4u8 {
            let s = socket.clone();
            answers.push(actix::spawn(async move {
                s.send(SendDatagram::new(vec![i; 3]).to(peer())).await
            }));
        }
        settle().await;
        socket.do_send(SendDatagram::new(vec![9u8]).to(peer()).tag(9));
        settle().await;
        socket.do_send(Close::Abort);
        settle().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        settle().await;
        let mut results = Vec::new();
        for a in answers {
            results.push(a.await.expect("join").expect("mailbox"));
        }
        assert!(
            matches!(results[0], Ok(ref s) if s.len == 3),
            "{:?}",
            results[0]
        );
        for r in &results[1..] {
            assert!(matches!(r, Err(DatagramError::Aborted)), "{r:?}");
        }
        let events = drain(&mut heard);
        let failed: Vec<_> = events
            .iter()
            .filter_map(|e| match &e.kind {
                DatagramEventKind::SendFailed { tag, error } => Some((*tag, format!("{error:?}"))),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].0, Some(9));
        let closed = events
            .iter()
            .filter(|e| matches!(e.kind, DatagramEventKind::Closed { .. }))
            .count();
        assert_eq!(closed, 1);
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!(stats.sent, 1, "{stats:?}");
        assert_eq!(stats.send_failed, 4, "{stats:?}");
        assert_eq!(stats.bytes_sent, 3, "{stats:?}");
        assert_eq!(stats.queued, 0, "{stats:?}");
        assert_eq!(mock.datagrams(Handle(1)).len(), 1);
    });
}

/// A `DatagramWriter::send` (no destination) on a socket that is not connected: admitted
/// by the gate, then refused by the socket. That refusal must be reported (never
/// silent), counted, and its room given back.
#[test]
fn writer_send_without_destination_is_reported() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut heard) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .subscriber(sub)
            .bind(local())
            .await
            .expect("bind");
        let writer = socket.send(GetDatagramWriter).await.expect("writer");
        let r = writer.send(vec![1u8, 2, 3]);
        settle().await;
        let reported: Vec<_> = drain(&mut heard)
            .into_iter()
            .filter_map(|e| match e.kind {
                DatagramEventKind::SendFailed { error, .. } => Some(error),
                _ => None,
            })
            .collect();
        match r {
            Err(DatagramError::NoDestination { .. }) => {}
            Ok(()) => assert!(
                matches!(reported.as_slice(), [DatagramError::NoDestination { .. }]),
                "{reported:?}"
            ),
            Err(other) => panic!("{other:?}"),
        }
        assert_eq!(writer.queued(), 0);
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!(stats.send_failed, 1, "{stats:?}");
    });
}

/// Graceful close with datagrams queued behind a would-block (via send, do_send and a
/// writer): all of them go out first, in order, then the socket closes; a writer is
/// refused after.
#[test]
fn graceful_close_sends_everything_queued_first() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::from_millis(50))]);
        let (sub, mut heard) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .subscriber(sub)
            .bind(local())
            .await
            .expect("bind");
        let writer = socket.send(GetDatagramWriter).await.expect("writer");
        let s = socket.clone();
        let first =
            actix::spawn(async move { s.send(SendDatagram::new(vec![0u8]).to(peer())).await });
        settle().await;
        socket.do_send(SendDatagram::new(vec![1u8]).to(peer()));
        writer
            .send_to(vec![2u8], Some(peer().into()))
            .expect("admitted");
        socket.do_send(SendDatagram::new(vec![3u8]).to(peer()));
        socket.do_send(Close::Graceful);
        settle().await;
        assert!(matches!(
            writer.send_to(vec![4u8], Some(peer().into())),
            Err(DatagramError::Closed)
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        settle().await;
        assert!(first.await.expect("join").expect("mailbox").is_ok());
        let sent: Vec<Vec<u8>> = mock
            .datagrams(Handle(1))
            .into_iter()
            .map(|d| d.bytes)
            .collect();
        assert_eq!(sent, [vec![0], vec![1], vec![2], vec![3]]);
        let events = drain(&mut heard);
        assert!(
            events
                .iter()
                .all(|e| !matches!(e.kind, DatagramEventKind::SendFailed { .. })),
            "{events:?}"
        );
        assert!(matches!(
            events.last().map(|e| &e.kind),
            Some(DatagramEventKind::Closed { cause: None })
        ));
        assert!(mock.is_closed(Handle(1)));
        let stats = socket.send(GetDatagramStats).await;
        // The actor may be gone after closing; if it answers, its counts must agree.
        if let Ok(stats) = stats {
            assert_eq!(stats.sent, 4, "{stats:?}");
            assert_eq!(stats.send_failed, 1, "the writer's refusal: {stats:?}");
        }
    });
}

/// A transport failure that is not an I/O error (the handle is gone) closes the socket:
/// the datagram and everything queued get `Transport`, and the writer is refused after.
#[test]
fn do_send_only_producer_is_bounded_and_reports_each_refusal() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let (sub, mut heard) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(cfg(16))
            .subscriber(sub)
            .bind(local())
            .await
            .expect("bind");
        for i in 0..1000u64 {
            socket.do_send(SendDatagram::new(vec![1u8; 100]).to(peer()).tag(i));
            if i % 50 == 0 {
                settle().await;
            }
        }
        settle().await;
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert!(stats.queued <= 16, "{stats:?}");
        let refused: Vec<u64> = drain(&mut heard)
            .into_iter()
            .filter_map(|e| match e.kind {
                DatagramEventKind::SendFailed {
                    tag,
                    error: DatagramError::QueueFull { .. },
                } => tag,
                _ => None,
            })
            .collect();
        assert_eq!(refused.len() as u64, stats.send_failed, "{stats:?}");
        // 1 offered (held) + 16 queued
        assert_eq!(refused.len(), 1000 - 17, "{stats:?}");
        let mut sorted = refused.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, refused, "reported in order");
    });
}

// ---------------------------------------------------------------------------------------
// Round 2
// ---------------------------------------------------------------------------------------

/// `send_when_ready` waits for room and then sends: it "fails only when the socket no
/// longer takes datagrams". Its datagrams all go out, once each; none of them failed, so
/// `DatagramStats::send_failed` ("Datagrams that failed") must stay 0, and
/// `sent + send_failed` must equal the datagrams there were.
#[test]
fn send_when_ready_retries_are_not_counted_as_failed_datagrams() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(cfg(1))
            .immediate()
            .bind(local())
            .await
            .expect("bind");
        let writer = socket.send(GetDatagramWriter).await.expect("writer");
        writer
            .send_when_ready(vec![1u8], Some(peer().into()))
            .await
            .expect("first: room at once");
        let second = {
            let writer = writer.clone();
            actix::spawn(
                async move { writer.send_when_ready(vec![2u8], Some(peer().into())).await },
            )
        };
        settle().await;
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        second
            .await
            .expect("join")
            .expect("second: sent once there was room");
        settle().await;
        let sent: Vec<Vec<u8>> = mock
            .datagrams(Handle(1))
            .into_iter()
            .map(|d| d.bytes)
            .collect();
        assert_eq!(sent, [vec![1], vec![2]], "both went out, once each");
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!(stats.sent, 2, "{stats:?}");
        assert_eq!(
            stats.send_failed, 0,
            "no datagram failed, yet send_failed counts send_when_ready's internal retry: {stats:?}"
        );
    });
}

/// Abort while a real Unix datagram socket is blocked (the receiver's queue is full):
/// every datagram gets exactly one answer, the `Ok`s are exactly the datagrams the
/// receiver gets, and the stats agree.
#[actix::test]
async fn abort_while_blocked_on_a_real_unix_socket_answers_truthfully() {
    const N: usize = 1500;
    let recv_path = TempPath::new("r8a-abort-recv.sock");
    let receiver = std::os::unix::net::UnixDatagram::bind(&recv_path.0).expect("bind receiver");
    receiver.set_nonblocking(true).expect("nonblocking");
    let send_path = TempPath::new("r8a-abort-send.sock");
    let (sub, mut heard) = channel::<DatagramEvent>();
    let (socket, _) = DatagramSocket::builder()
        .config(cfg(2048))
        .subscriber(sub)
        .bind(Address::Unix(send_path.0.clone()))
        .await
        .expect("bind sender");
    let to = Address::Unix(recv_path.0.clone());
    let mut answers = Vec::new();
    for i in 0..N as u32 {
        let s = socket.clone();
        let to = to.clone();
        answers.push(actix::spawn(async move {
            s.send(SendDatagram::new(i.to_be_bytes().to_vec()).to(to))
                .await
        }));
    }
    // Until the kernel queue is full and the socket blocks.
    for _ in 0..500 {
        let st = socket.send(GetDatagramStats).await.expect("stats");
        if st.would_blocks > 0 && st.sent > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    socket.send(Close::Abort).await.expect("abort");
    let (mut ok, mut aborted) = (Vec::new(), 0usize);
    for (i, a) in answers.into_iter().enumerate() {
        match a.await.expect("join").expect("mailbox") {
            Ok(_) => ok.push(i as u32),
            Err(DatagramError::Aborted) => aborted += 1,
            Err(other) => panic!("datagram {i}: {other:?}"),
        }
    }
    assert!(aborted > 0, "the abort came while blocked");
    assert_eq!(ok.len() + aborted, N);
    // What the receiver holds.
    let mut got = Vec::new();
    let mut buf = [0u8; 8];
    while let Ok(n) = receiver.recv(&mut buf) {
        assert_eq!(n, 4);
        got.push(u32::from_be_bytes(buf[..4].try_into().expect("4")));
    }
    assert_eq!(
        got, ok,
        "the datagrams answered Ok are exactly those delivered"
    );
    let closed = drain(&mut heard)
        .into_iter()
        .filter(|e| matches!(e.kind, DatagramEventKind::Closed { .. }))
        .count();
    assert_eq!(closed, 1);
}

/// Dropping every address of a socket blocked on a full Unix receiver with datagrams
/// queued (sent with `do_send`): they all leave first, then the socket closes (its path
/// is removed).
#[actix::test]
async fn dropping_every_address_while_blocked_sends_everything_then_closes() {
    const N: u32 = 900;
    let recv_path = TempPath::new("r8a-orphan-recv.sock");
    let receiver = std::os::unix::net::UnixDatagram::bind(&recv_path.0).expect("bind receiver");
    let send_path = TempPath::new("r8a-orphan-send.sock");
    let (socket, _) = DatagramSocket::builder()
        .config(cfg(1024))
        .bind(Address::Unix(send_path.0.clone()))
        .await
        .expect("bind sender");
    let to = Address::Unix(recv_path.0.clone());
    for i in 0..N {
        socket.do_send(SendDatagram::new(i.to_be_bytes().to_vec()).to(to.clone()));
    }
    // Blocked by now (the kernel queue holds far fewer).
    for _ in 0..500 {
        let st = socket.send(GetDatagramStats).await.expect("stats");
        if st.would_blocks > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(socket);
    let reader = tokio::task::spawn_blocking(move || {
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        while got.len() < N as usize {
            match receiver.recv(&mut buf) {
                Ok(n) => {
                    assert_eq!(n, 4);
                    got.push(u32::from_be_bytes(buf[..4].try_into().expect("4")));
                }
                Err(e) => panic!("after {} datagrams: {e}", got.len()),
            }
        }
        got
    });
    let got = reader.await.expect("reader");
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    let path = send_path.0.clone();
    for _ in 0..500 {
        if !path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!path.exists(), "the socket closed and its path went");
}

/// The descriptor of the socket bound at `local` (found through /proc and getsockname).
fn fd_bound_to(local: &SocketAddr) -> Option<i32> {
    for entry in std::fs::read_dir("/proc/self/fd").ok()? {
        let fd: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&bfd);
        if let Ok(addr) = sock.local_addr() {
            if addr.as_socket() == Some(*local) && sock.r#type().ok() == Some(socket2::Type::DGRAM)
            {
                return Some(fd);
            }
        }
    }
    None
}

/// `DatagramConfig::buffers` reach the kernel (SO_SNDBUF / SO_RCVBUF; Linux doubles).
#[actix::test]
async fn datagram_buffer_sizes_reach_the_kernel() {
    let (socket, local_addr) = DatagramSocket::builder()
        .config(DatagramConfig {
            buffers: SocketBuffers {
                send: Some(40_000),
                recv: Some(50_000),
            },
            ..DatagramConfig::default()
        })
        .bind(local())
        .await
        .expect("bind");
    let Address::Inet(addr) = local_addr else {
        panic!()
    };
    let fd = fd_bound_to(&addr).expect("the socket's descriptor");
    let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&bfd);
    assert_eq!(sock.send_buffer_size().expect("sndbuf"), 80_000);
    assert_eq!(sock.recv_buffer_size().expect("rcvbuf"), 100_000);
    // Connected, unbound first.
    let target = std::net::UdpSocket::bind("127.0.0.1:0").expect("target");
    let c = DatagramSocket::builder()
        .config(DatagramConfig {
            buffers: SocketBuffers {
                send: Some(30_000),
                recv: Some(20_000),
            },
            ..DatagramConfig::default()
        })
        .connect(target.local_addr().expect("addr"))
        .await
        .expect("connect");
    c.send(SendDatagram::new(&b"x"[..]))
        .await
        .expect("mailbox")
        .expect("sent");
    let mut buf = [0u8; 4];
    let (_, from) = target.recv_from(&mut buf).expect("recv");
    let fd = fd_bound_to(&from).expect("the connected socket's descriptor");
    let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&bfd);
    assert_eq!(sock.send_buffer_size().expect("sndbuf"), 60_000);
    assert_eq!(sock.recv_buffer_size().expect("rcvbuf"), 40_000);
    drop(socket);
}

/// `max_datagram_size: 0`: an empty datagram arrives whole, any other is flagged
/// truncated and empty.
#[actix::test]
async fn max_datagram_size_zero() {
    let (heard_tx, mut heard) = channel::<DatagramEvent>();
    let (_a, a_local) = DatagramSocket::builder()
        .subscriber(heard_tx)
        .config(DatagramConfig {
            max_datagram_size: 0,
            ..DatagramConfig::default()
        })
        .bind(local())
        .await
        .expect("bind");
    let Address::Inet(a_addr) = a_local else {
        panic!()
    };
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("s");
    s.send_to(b"", a_addr).await.expect("send");
    s.send_to(b"abc", a_addr).await.expect("send");
    let (b, _, t) = next_datagram(&mut heard).await;
    assert!(b.is_empty() && !t, "empty: {b:?} {t}");
    let (b, _, t) = next_datagram(&mut heard).await;
    assert!(b.is_empty() && t, "cut: {b:?} {t}");
}

/// A batch whose second datagram names a destination of the wrong family: the first
/// and third go out; only the second fails.
#[actix::test]
async fn a_wrong_family_destination_fails_only_its_datagram() {
    let target = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("target");
    let t_addr = target.local_addr().expect("addr");
    let (sub, mut heard) = channel::<DatagramEvent>();
    let (socket, _) = DatagramSocket::builder()
        .subscriber(sub)
        .bind(local())
        .await
        .expect("bind");
    socket.do_send(SendDatagram::new(&b"one"[..]).to(t_addr).tag(1));
    socket.do_send(
        SendDatagram::new(&b"two"[..])
            .to(Address::Unix("/nonexistent".into()))
            .tag(2),
    );
    socket.do_send(
        SendDatagram::new(&b"v6"[..])
            .to("[::1]:9".parse::<SocketAddr>().expect("a"))
            .tag(3),
    );
    let last = socket
        .send(SendDatagram::new(&b"four"[..]).to(t_addr))
        .await
        .expect("mailbox");
    assert!(last.is_ok(), "{last:?}");
    let mut buf = [0u8; 8];
    let mut got = Vec::new();
    for _ in 0..2 {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), target.recv_from(&mut buf))
            .await
            .expect("in time")
            .expect("recv");
        got.push(buf[..n].to_vec());
    }
    assert_eq!(got, [b"one".to_vec(), b"four".to_vec()]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let failed: Vec<Option<u64>> = drain(&mut heard)
        .into_iter()
        .filter_map(|e| match e.kind {
            DatagramEventKind::SendFailed { tag, .. } => Some(tag),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [Some(2), Some(3)]);
    let info = socket.send(GetDatagramInfo).await.expect("info");
    assert!(info.open);
}

// ---------------------------------------------------------------------------------------
// Round 3
// ---------------------------------------------------------------------------------------

/// `DatagramSent::latency` counts from the enqueue, across a would-block.
#[test]
fn latency_counts_from_enqueue_across_a_would_block() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::from_millis(50))]);
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .bind(local())
            .await
            .expect("bind");
        let sent = socket
            .send(SendDatagram::new(vec![1u8; 7]).to(peer()))
            .await
            .expect("mailbox")
            .expect("sent");
        assert_eq!(sent.len, 7);
        assert!(sent.latency >= Duration::from_millis(50), "{sent:?}");
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!((stats.sendv_calls, stats.would_blocks), (2, 1), "{stats:?}");
    });
}

/// A datagram socket on an arbiter deferring to the test thread's Flusher (another
/// thread's): every datagram, sent by `send`, `do_send` and a writer, goes out in order.
#[actix::test]
async fn a_socket_on_an_arbiter_with_another_threads_flusher() {
    let target = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("target");
    let t_addr = target.local_addr().expect("addr");
    let system = SocketSystem::builder().arbiters(1).start().expect("start");
    let flusher = sockactor::Flusher::current();
    let (socket, writer) = system
        .run_on(0, move || async move {
            let (socket, _) = DatagramSocket::builder()
                .flusher(flusher)
                .bind(local())
                .await
                .expect("bind");
            let writer = socket.send(GetDatagramWriter).await.expect("writer");
            (socket, writer)
        })
        .await
        .expect("arbiter");
    let mut expect = Vec::new();
    for round in 0..20u32 {
        let a = round * 3;
        socket.do_send(SendDatagram::new(a.to_be_bytes().to_vec()).to(t_addr));
        writer
            .send_when_ready((a + 1).to_be_bytes().to_vec(), Some(t_addr.into()))
            .await
            .expect("writer");
        let r = socket
            .send(SendDatagram::new((a + 2).to_be_bytes().to_vec()).to(t_addr))
            .await
            .expect("mailbox");
        assert!(r.is_ok(), "{r:?}");
        expect.extend([a, a + 1, a + 2]);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 8];
    while got.len() < expect.len() {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), target.recv_from(&mut buf))
            .await
            .expect("in time")
            .expect("recv");
        assert_eq!(n, 4);
        got.push(u32::from_be_bytes(buf[..4].try_into().expect("4")));
    }
    assert_eq!(got, expect);
    system.shutdown().await.expect("shutdown");
}

/// Runs of one length made of several segments each (and a shorter last one), offloaded
/// or not, arrive as the same datagrams, whole and in order.
#[actix::test]
async fn multi_segment_runs_arrive_as_the_same_datagrams() {
    for offload in [true, false] {
        let target = tokio::net::UdpSocket::bind("[::1]:0")
            .await
            .expect("target");
        let t_addr = target.local_addr().expect("addr");
        let (socket, _) = DatagramSocket::builder()
            .config(DatagramConfig {
                offload,
                ..DatagramConfig::default()
            })
            .bind("[::1]:0".parse::<SocketAddr>().expect("a"))
            .await
            .expect("bind");
        let mut expect = Vec::new();
        for i in 0..40u8 {
            let whole = crate::support::pattern(if i == 39 { 60 } else { 100 }, u64::from(i) + 1);
            let segments: Vec<bytes::Bytes> = if i % 2 == 0 {
                vec![
                    bytes::Bytes::copy_from_slice(&whole[..10]),
                    bytes::Bytes::new(),
                    bytes::Bytes::copy_from_slice(&whole[10..50]),
                    bytes::Bytes::copy_from_slice(&whole[50..]),
                ]
            } else {
                vec![bytes::Bytes::copy_from_slice(&whole)]
            };
            socket.do_send(SendDatagram::new(segments).to(t_addr));
            expect.push(whole);
        }
        socket
            .send(SendDatagram::new(&b"end"[..]).to(t_addr))
            .await
            .expect("mailbox")
            .expect("sent");
        expect.push(b"end".to_vec());
        let mut got = Vec::new();
        let mut buf = vec![0u8; 70_000];
        while got.len() < expect.len() {
            let (n, _) = tokio::time::timeout(Duration::from_secs(5), target.recv_from(&mut buf))
                .await
                .expect("in time")
                .expect("recv");
            got.push(buf[..n].to_vec());
        }
        assert_eq!(got, expect, "offload {offload}");
    }
}

struct StopAtFirst;
impl Actor for StopAtFirst {
    type Context = Context<Self>;
}
impl Handler<DatagramEvent> for StopAtFirst {
    type Result = ();
    fn handle(&mut self, _: DatagramEvent, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// A subscriber that goes away: receiving stops (no spinning), the socket stays open and
/// sends, and its info and stats still answer.
#[actix::test]
async fn a_gone_subscriber_stops_receiving_but_not_sending() {
    let (socket, a_local) = DatagramSocket::builder()
        .subscriber(StopAtFirst.start().recipient())
        .bind(local())
        .await
        .expect("bind");
    let Address::Inet(a_addr) = a_local else {
        panic!()
    };
    let other = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("other");
    let o_addr = other.local_addr().expect("addr");
    for i in 0..20u8 {
        other.send_to(&[i], a_addr).await.expect("send");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s1 = socket.send(GetDatagramStats).await.expect("stats");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s2 = socket.send(GetDatagramStats).await.expect("stats");
    assert_eq!(s1.recv_calls, s2.recv_calls, "no spinning: {s1:?} {s2:?}");
    assert!(s2.received <= 20, "{s2:?}");
    let r = socket
        .send(SendDatagram::new(&b"still"[..]).to(o_addr))
        .await
        .expect("mailbox");
    assert!(r.is_ok(), "{r:?}");
    let mut buf = [0u8; 8];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), other.recv_from(&mut buf))
        .await
        .expect("in time")
        .expect("recv");
    assert_eq!(&buf[..n], b"still");
    let info = socket.send(GetDatagramInfo).await.expect("info");
    assert!(info.open);
}

/// `DatagramInfo` says who the socket is: bound (local with the port chosen) or
/// connected (peer; local when bound first), and `open` turns false on close.
#[actix::test]
async fn datagram_info_tells_local_peer_and_open() {
    let (a, a_local) = DatagramSocket::builder().bind(local()).await.expect("bind");
    let info = a.send(GetDatagramInfo).await.expect("info");
    assert_eq!(info.local, Some(a_local.clone()));
    assert_eq!(info.peer, None);
    assert!(info.open);
    let Address::Inet(a_addr) = a_local else {
        panic!()
    };
    assert_ne!(a_addr.port(), 0);
    let b = DatagramSocket::builder()
        .connect(a_addr)
        .await
        .expect("connect");
    let info = b.send(GetDatagramInfo).await.expect("info");
    assert_eq!(info.peer, Some(Address::Inet(a_addr)));
    assert_eq!(info.local, None, "not bound explicitly");
    a.send(Close::Graceful).await.expect("close");
    if let Ok(info) = a.send(GetDatagramInfo).await {
        assert!(!info.open);
    }
    assert!(matches!(
        a.send(SendDatagram::new(&b"x"[..]).to(a_addr)).await,
        Ok(Err(DatagramError::Closed)) | Err(_)
    ));
}

// ---------------------------------------------------------------------------------------
// Round 4: datagrams of many segments in place
// ---------------------------------------------------------------------------------------

fn segmented(whole: &[u8], seg: usize) -> Vec<bytes::Bytes> {
    whole
        .chunks(seg)
        .map(bytes::Bytes::copy_from_slice)
        .collect()
}

/// Runs of one length whose datagrams are each made of 20 segments, to one destination:
/// with offload on (the default) they must arrive exactly as with it off: "The peer
/// receives the same datagrams either way". Each datagram is answered `Ok`.
#[actix::test]
async fn offloaded_runs_of_many_segment_datagrams_all_go_out() {
    many_segment_runs(true).await;
}

/// Control: the same without offload.
#[actix::test]
async fn control_runs_of_many_segment_datagrams_without_offload() {
    many_segment_runs(false).await;
}

async fn many_segment_runs(offload: bool) {
    let target = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("target");
    let t_addr = target.local_addr().expect("addr");
    let (socket, _) = DatagramSocket::builder()
        .config(DatagramConfig {
            offload,
            ..DatagramConfig::default()
        })
        .bind(local())
        .await
        .expect("bind");
    let mut answers = Vec::new();
    let mut expect = Vec::new();
    for i in 0..64u32 {
        let whole = crate::support::pattern(100, u64::from(i) + 11);
        let s = socket.clone();
        let segments = segmented(&whole, 5);
        assert_eq!(segments.len(), 20);
        answers.push(actix::spawn(async move {
            s.send(SendDatagram::new(segments).to(t_addr)).await
        }));
        expect.push(whole);
    }
    let mut failed = Vec::new();
    for (i, a) in answers.into_iter().enumerate() {
        match a.await.expect("join").expect("mailbox") {
            Ok(s) => assert_eq!(s.len, 100),
            Err(e) => failed.push((i, e.to_string())),
        }
    }
    assert!(
        failed.is_empty(),
        "offload {offload}: {} of 64 valid datagrams failed: {failed:?}",
        failed.len()
    );
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < expect.len() {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), target.recv_from(&mut buf))
            .await
            .expect("in time")
            .expect("recv");
        got.push(buf[..n].to_vec());
    }
    assert_eq!(got, expect);
}

/// One datagram of 1,100 one-byte segments: "the payload's segments, in order, as one
/// datagram". On a mock (by message) it goes out; in place it must too.
#[actix::test]
async fn a_datagram_of_many_segments_goes_out_in_place() {
    let target = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("target");
    let t_addr = target.local_addr().expect("addr");
    let (socket, _) = DatagramSocket::builder().bind(local()).await.expect("bind");
    let whole = crate::support::pattern(1100, 3);
    let r = socket
        .send(SendDatagram::new(segmented(&whole, 1)).to(t_addr))
        .await
        .expect("mailbox");
    assert!(
        r.is_ok(),
        "a valid 1,100-byte datagram of 1,100 segments: {r:?}"
    );
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), target.recv_from(&mut buf))
        .await
        .expect("in time")
        .expect("recv");
    assert_eq!(&buf[..n], &whole[..]);
}

/// Control: a bound Unix datagram socket connects to a peer bound to a path.
#[actix::test]
async fn control_bound_unix_socket_connects_to_a_path() {
    let server_path = TempPath::new("r8a-ctl-srv.sock");
    let (heard_tx, mut heard) = channel::<DatagramEvent>();
    let (_server, _) = DatagramSocket::builder()
        .subscriber(heard_tx)
        .bind(Address::Unix(server_path.0.clone()))
        .await
        .expect("bind");
    let client_path = TempPath::new("r8a-ctl-cli.sock");
    let client = DatagramSocket::builder()
        .local(Address::Unix(client_path.0.clone()))
        .connect(Address::Unix(server_path.0.clone()))
        .await
        .expect("connect to a path");
    client
        .send(SendDatagram::new(&b"p"[..]))
        .await
        .expect("mailbox")
        .expect("sent");
    let (bytes, from, _) = next_datagram(&mut heard).await;
    assert_eq!(bytes, b"p");
    assert_eq!(from, Some(Address::Unix(client_path.0.clone())));
}

/// A burst of 2,000 Unix datagrams (far more than a receive batch) from a blocking
/// sender: all arrive, whole, in order, with the sender's path.
#[actix::test]
async fn a_unix_burst_larger_than_the_batch_arrives_whole_in_order() {
    const N: u32 = 2000;
    let path = TempPath::new("r8a-burst.sock");
    let (heard_tx, mut heard) = channel::<DatagramEvent>();
    let (socket, _) = DatagramSocket::builder()
        .subscriber(heard_tx)
        .bind(Address::Unix(path.0.clone()))
        .await
        .expect("bind");
    let sender_path = TempPath::new("r8a-burst-sender.sock");
    let sp = sender_path.0.clone();
    let to = path.0.clone();
    let sender = tokio::task::spawn_blocking(move || {
        let s = std::os::unix::net::UnixDatagram::bind(&sp).expect("bind sender");
        s.set_write_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        for i in 0..N {
            s.send_to(&i.to_be_bytes(), &to).expect("send");
        }
    });
    for i in 0..N {
        let (bytes, from, truncated) = next_datagram(&mut heard).await;
        assert_eq!(bytes, i.to_be_bytes(), "datagram {i}");
        assert!(!truncated);
        assert_eq!(from, Some(Address::Unix(sender_path.0.clone())));
    }
    sender.await.expect("sender");
    let stats = socket.send(GetDatagramStats).await.expect("stats");
    assert_eq!(stats.received, N as u64, "{stats:?}");
    assert!(
        stats.recv_calls < N as u64,
        "received in batches: {stats:?}"
    );
}

/// Control: the same 1,100-segment datagram through the system transport by message
/// (its own `sendv` put back in the table, so not in place) goes out whole.
#[actix::test]
async fn control_a_datagram_of_many_segments_goes_out_by_message() {
    let target = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("target");
    let t_addr = target.local_addr().expect("addr");
    let system = SocketFunctions::system();
    let by_message = system.clone().with_sendv(system.sendv().clone());
    let (socket, _) = DatagramSocket::builder()
        .functions(by_message)
        .bind(local())
        .await
        .expect("bind");
    let whole = crate::support::pattern(1100, 3);
    let r = socket
        .send(SendDatagram::new(segmented(&whole, 1)).to(t_addr))
        .await
        .expect("mailbox");
    assert!(r.is_ok(), "{r:?}");
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), target.recv_from(&mut buf))
        .await
        .expect("in time")
        .expect("recv");
    assert_eq!(&buf[..n], &whole[..]);
}

/// Abort with `do_send` datagrams blocked and queued: each is reported `Aborted` once, in
/// order, before the one `Closed`; a second close changes nothing.
#[test]
fn abort_reports_each_do_send_once_before_closed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let (sub, mut heard) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .subscriber(sub)
            .bind(local())
            .await
            .expect("bind");
        let writer = socket.send(GetDatagramWriter).await.expect("writer");
        for i in 0..5u64 {
            socket.do_send(SendDatagram::new(vec![i as u8]).to(peer()).tag(i));
        }
        writer
            .send_to(vec![5u8], Some(peer().into()))
            .expect("admitted");
        settle().await;
        socket.do_send(Close::Abort);
        socket.do_send(Close::Graceful);
        socket.do_send(Close::Abort);
        settle().await;
        let kinds: Vec<String> = drain(&mut heard)
            .into_iter()
            .map(|e| match e.kind {
                DatagramEventKind::SendFailed { tag, error } => format!("failed {tag:?} {error:?}"),
                DatagramEventKind::Closed { cause } => format!("closed {cause:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "failed Some(0) Aborted",
                "failed Some(1) Aborted",
                "failed Some(2) Aborted",
                "failed Some(3) Aborted",
                "failed Some(4) Aborted",
                "failed None Aborted",
                "closed None",
            ]
        );
        assert_eq!(writer.queued(), 0);
        // Later datagrams are refused `Closed`, as a stream socket's later writes are
        // after an abort (those pending at the abort were answered `Aborted`).
        assert!(matches!(
            writer.send_to(vec![6u8], Some(peer().into())),
            Err(DatagramError::Closed)
        ));
    });
}

/// `DatagramBuilder::connect`: "only datagrams from it are received", on the library's
/// simulated network as on a kernel's UDP: a stranger's datagram never reaches a
/// connected socket (it counts as lost in the network's statistics).
#[test]
fn a_connected_datagram_socket_on_the_sim_network_receives_only_from_its_peer() {
    run_paused(|| async {
        let net = sockactor::SimNetwork::start(sockactor::SimConfig {
            seed: 1,
            ..sockactor::SimConfig::default()
        });
        let a_addr: SocketAddr = "10.0.0.2:200".parse().expect("addr");
        let c_addr: SocketAddr = "10.0.0.3:300".parse().expect("addr");
        let x_addr: SocketAddr = "10.0.0.9:900".parse().expect("addr");
        let (a, _) = DatagramSocket::builder()
            .functions(net.functions())
            .bind(a_addr)
            .await
            .expect("bind a");
        let (c, _) = DatagramSocket::builder()
            .functions(net.functions())
            .bind(c_addr)
            .await
            .expect("bind c");
        let (sub, mut rx) = channel();
        let _x = DatagramSocket::builder()
            .functions(net.functions())
            .local(x_addr)
            .subscriber(sub)
            .connect(a_addr)
            .await
            .expect("connect x");
        c.send(SendDatagram::new(&b"stranger"[..]).to(x_addr))
            .await
            .expect("mailbox")
            .expect("sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
        a.send(SendDatagram::new(&b"friend"[..]).to(x_addr))
            .await
            .expect("mailbox")
            .expect("sent");
        let (bytes, from, _) = next_datagram(&mut rx).await;
        assert_eq!(
            (String::from_utf8_lossy(&bytes).to_string(), from),
            ("friend".to_string(), Some(a_addr.into()))
        );
    });
}

/// The runtime ends (its `block_on` returns with the socket's address still held) while a
/// datagram is out to a transport that holds it: actix drops the actor, which starts its
/// close with no runtime left for the grace timer. Nothing panics.
#[test]
fn the_runtime_ending_under_a_datagram_socket_with_a_datagram_out_does_not_panic() {
    let panics = crate::support::panics_on_this_thread_during(|| {
        let _kept = run_paused(|| async {
            let mock = MockTransport::start();
            mock.set_default_step(SendStep::Hold);
            let (socket, _) = DatagramSocket::builder()
                .functions(mock.functions())
                .bind(local())
                .await
                .expect("bind");
            socket.do_send(SendDatagram::new(vec![1u8; 10]).to(peer()).tag(1));
            settle().await;
            socket
        });
    });
    assert_eq!(panics, 0, "panics while the runtime ended");
}
