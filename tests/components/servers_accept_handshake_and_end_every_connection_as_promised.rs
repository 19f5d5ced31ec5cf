//! From the eighth round of the independent review: servers. The `Listener` over the
//! mock (bursts past a turn, stops mid-burst, transient accept errors, per-connection
//! builders) and real loopback; TLS and compressing servers (clients that leave, reset,
//! send garbage or nothing, wrong versions, data in the handshake's last flight;
//! accepted sockets carry their layers); Unix listeners; listeners and adopted sockets
//! spread over a `SocketSystem`'s arbiters.
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use sockactor::filters::{Compress, Tls};
use sockactor::messages::{
    Address, Close, GetInfo, GetLocalAddr, Handle, ListenerEvent, SocketEvent, SocketEventKind,
    StopListening,
};
use sockactor::{
    Listener, MockTransport, Registry, Socket, SocketFunctions, SocketSystem, TransportError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::support::servers::{
    echo_once, inet, loopback, tls_client_echo, tls_echo_listener, until_closed,
};
use crate::support::tls::{client_config, pki};
use crate::support::{channel, channel_subscriber, drain, run_paused, settle, EchoServer};

fn peer(i: u32) -> SocketAddr {
    SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1000 + (i % 60000) as u16))
}

// ---------------------------------------------------------------------------------------
// 1. The listener over the mock, paused time
// ---------------------------------------------------------------------------------------

/// A burst of 500 connections, far past one turn (64): each is announced once as
/// `Accepted`, in backlog order, with its own id; `StopListening` then gives exactly one
/// `Closed`, last.
#[test]
fn mock_a_burst_of_500_connections_is_accepted_whole_in_order_then_closed_once() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (seen, mut events) = channel::<ListenerEvent>();
        let (listener, _local) = Listener::builder()
            .functions(mock.functions())
            .subscriber(seen)
            .bind(loopback())
            .await
            .expect("bind");
        let lh = Handle(1);
        let mut peers = Vec::new();
        for i in 0..500u32 {
            mock.connect_inbound(lh, peer(i)).expect("listening");
            peers.push(Address::from(peer(i)));
        }
        for _ in 0..50 {
            settle().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        for _ in 0..50 {
            settle().await;
        }
        let got = drain(&mut events);
        let mut accepted = Vec::new();
        let mut ids = HashSet::new();
        let mut keep = Vec::new();
        for e in got {
            match e {
                ListenerEvent::Accepted { socket, id, peer } => {
                    assert!(ids.insert(id), "id {id} announced twice");
                    accepted.push(peer);
                    keep.push(socket);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            accepted.len(),
            500,
            "every connection of the burst accepted"
        );
        assert_eq!(accepted, peers, "in backlog order");
        listener.do_send(StopListening);
        let rest = until_closed(&mut events, Duration::from_secs(20)).await;
        assert_eq!(rest.len(), 1, "only Closed after the stop: {rest:?}");
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        assert!(drain(&mut events).is_empty(), "nothing after Closed");
        assert!(mock.is_closed(lh), "listening handle closed");
        drop(keep);
    });
}

/// Stopping while the backlog still holds connections and the loop is mid-turn: no
/// `Accepted` after `Closed`, `Closed` once, every connection either announced (and its
/// socket running) or closed by the transport; nothing left half-way.
#[test]
fn mock_stop_listening_mid_burst_leaves_no_connection_unannounced_and_open() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (seen, mut events) = channel::<ListenerEvent>();
        let (listener, _local) = Listener::builder()
            .functions(mock.functions())
            .subscriber(seen)
            .max_accepts_per_turn(4)
            .bind(loopback())
            .await
            .expect("bind");
        let lh = Handle(1);
        let mut handles = Vec::new();
        for i in 0..100u32 {
            handles.push(mock.connect_inbound(lh, peer(i)).expect("listening"));
        }
        // Let a few turns run, then stop.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        listener.do_send(StopListening);
        let all = until_closed(&mut events, Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        assert!(drain(&mut events).is_empty(), "nothing after Closed");
        let mut announced = HashMap::new();
        for e in &all {
            if let ListenerEvent::Accepted { socket, peer, .. } = e {
                announced.insert(peer.clone(), socket.clone());
            }
        }
        let closed_count = all
            .iter()
            .filter(|e| matches!(e, ListenerEvent::Closed))
            .count();
        assert_eq!(closed_count, 1);
        for (i, h) in handles.iter().enumerate() {
            let p = Address::from(peer(i as u32));
            if let Some(sock) = announced.get(&p) {
                let info = sock.send(GetInfo).await.expect("socket alive");
                assert_eq!(info.handle, *h);
                assert!(!mock.is_closed(*h), "an announced socket's handle is open");
            } else {
                assert!(
                    mock.is_closed(*h),
                    "connection {i} ({h}) neither announced nor closed"
                );
            }
        }
        assert!(mock.is_closed(lh));
    });
}

/// Transient accept errors interleaved with a burst: each is one `AcceptFailed`, no
/// connection is lost, the listener keeps going.
#[test]
fn mock_transient_accept_errors_mid_burst_lose_no_connection() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (seen, mut events) = channel::<ListenerEvent>();
        let (listener, _local) = Listener::builder()
            .functions(mock.functions())
            .subscriber(seen)
            .accept_backoff(Duration::from_millis(50))
            .bind(loopback())
            .await
            .expect("bind");
        let lh = Handle(1);
        for round in 0..5u32 {
            mock.fail_accept(lh, std::io::ErrorKind::ConnectionAborted);
            for i in 0..20u32 {
                mock.connect_inbound(lh, peer(round * 20 + i))
                    .expect("listening");
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        let got = drain(&mut events);
        let accepted = got
            .iter()
            .filter(|e| matches!(e, ListenerEvent::Accepted { .. }))
            .count();
        let failed = got
            .iter()
            .filter(|e| matches!(e, ListenerEvent::AcceptFailed { .. }))
            .count();
        assert_eq!(failed, 5, "{got:?}");
        assert_eq!(accepted, 100);
        listener.do_send(StopListening);
        until_closed(&mut events, Duration::from_secs(20)).await;
    });
}

/// Every address of the listener dropped: the handle closes and `Closed` is sent once.
#[test]
fn mock_dropping_the_listener_closes_it_with_one_closed_event() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (seen, mut events) = channel::<ListenerEvent>();
        let (listener, _local) = Listener::builder()
            .functions(mock.functions())
            .subscriber(seen)
            .bind(loopback())
            .await
            .expect("bind");
        let lh = Handle(1);
        mock.connect_inbound(lh, peer(1)).expect("listening");
        settle().await;
        drop(listener);
        let all = until_closed(&mut events, Duration::from_secs(20)).await;
        assert!(matches!(all[0], ListenerEvent::Accepted { .. }), "{all:?}");
        assert!(mock.is_closed(lh));
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        assert!(drain(&mut events).is_empty());
    });
}

/// Per-connection builder: each socket gets the builder its factory made for that peer
/// (here: its own subscriber), and the factory sees the right peer.
#[test]
fn mock_the_factory_sees_each_peer_and_each_socket_gets_its_own_builder() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (seen, mut events) = channel::<ListenerEvent>();
        let peers_seen = Arc::new(Mutex::new(Vec::new()));
        let subs: Arc<Mutex<HashMap<Address, UnboundedReceiver<SocketEventKind>>>> = Arc::default();
        let (ps, ss) = (peers_seen.clone(), subs.clone());
        let (listener, _local) = Listener::builder()
            .functions(mock.functions())
            .subscriber(seen)
            .socket_builder(move |p| {
                ps.lock().unwrap().push(p.clone());
                let (sub, rx) = channel_subscriber();
                ss.lock().unwrap().insert(p.clone(), rx);
                Socket::builder().subscriber(sub)
            })
            .bind(loopback())
            .await
            .expect("bind");
        let lh = Handle(1);
        let mut hs = Vec::new();
        for i in 0..10u32 {
            hs.push(mock.connect_inbound(lh, peer(i)).unwrap());
        }
        settle().await;
        let got = drain(&mut events);
        let mut keep = Vec::new();
        for e in got {
            if let ListenerEvent::Accepted { socket, .. } = e {
                keep.push(socket);
            }
        }
        assert_eq!(keep.len(), 10);
        for (i, h) in hs.iter().enumerate() {
            mock.push_inbound(*h, format!("hello {i}"));
        }
        settle().await;
        let mut subs = subs.lock().unwrap();
        for i in 0..10u32 {
            let rx = subs
                .get_mut(&Address::from(peer(i)))
                .expect("a subscriber per peer");
            let got = drain(rx);
            let bytes: Vec<u8> = got
                .iter()
                .filter_map(|e| match e {
                    SocketEventKind::Received(b) => Some(b.to_vec()),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(bytes, format!("hello {i}").into_bytes());
        }
        assert_eq!(peers_seen.lock().unwrap().len(), 10);
        listener.do_send(StopListening);
    });
}

// ---------------------------------------------------------------------------------------
// 2. Real loopback listeners
// ---------------------------------------------------------------------------------------

/// Dropping every address of a real listener frees its port (`Closed` first).
#[actix::test]
async fn real_dropping_the_listener_frees_the_port_and_sends_closed() {
    let (seen, mut events) = channel::<ListenerEvent>();
    let (listener, local) = Listener::builder()
        .subscriber(seen)
        .bind(loopback())
        .await
        .unwrap();
    let addr = inet(local);
    assert_eq!(inet(listener.send(GetLocalAddr).await.unwrap()), addr);
    drop(listener);
    until_closed(&mut events, Duration::from_secs(15)).await;
    // The port is free again: bind it without SO_REUSEADDR tricks (std sets none).
    std::net::TcpListener::bind(addr).expect("the port is free after Closed");
}

// ---------------------------------------------------------------------------------------
// 3. TLS and compressing servers
// ---------------------------------------------------------------------------------------

/// A ClientHello for "localhost", as a real client's first flight.
fn client_hello(roots: rustls::RootCertStore) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut c = rustls::ClientConnection::new(client_config(roots), name).unwrap();
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out).unwrap();
    }
    out
}

async fn next_listener_event(
    rx: &mut UnboundedReceiver<ListenerEvent>,
    within: Duration,
) -> ListenerEvent {
    tokio::time::timeout(within, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no listener event within {within:?}"))
        .expect("events")
}

/// Bad TLS clients (one that leaves mid-handshake, one that resets mid-handshake, one
/// that sends garbage): each is one `AcceptFailed`, long before the (60 s) handshake
/// timeout, and a good client behind them is served at once.
#[actix::test]
async fn tls_clients_that_leave_reset_or_send_garbage_fail_fast_and_do_not_stop_the_listener() {
    let pki = pki(&["localhost"]);
    let tls = Tls::server(pki.server.clone()).handshake_timeout(Duration::from_secs(60));
    let (listener, addr, mut events) = tls_echo_listener(tls.wrap(SocketFunctions::system())).await;
    let started = Instant::now();
    // 1. ClientHello then FIN.
    {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&client_hello(pki.roots.clone())).await.unwrap();
        s.shutdown().await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
    }
    let e = next_listener_event(&mut events, Duration::from_secs(10)).await;
    let ListenerEvent::AcceptFailed { error } = e else {
        panic!("{e:?}")
    };
    eprintln!("left mid-handshake: {error}");
    // 2. ClientHello then RST.
    {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut s = s;
        s.write_all(&client_hello(pki.roots.clone())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let std = s.into_std().unwrap();
        socket2::SockRef::from(&std)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(std);
    }
    let e = next_listener_event(&mut events, Duration::from_secs(10)).await;
    let ListenerEvent::AcceptFailed { error } = e else {
        panic!("{e:?}")
    };
    eprintln!("reset mid-handshake: {error}");
    // 3. Garbage.
    {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
    }
    let e = next_listener_event(&mut events, Duration::from_secs(10)).await;
    let ListenerEvent::AcceptFailed { error } = e else {
        panic!("{e:?}")
    };
    assert!(
        error.tls().is_some(),
        "garbage is a rustls error: {error:?}"
    );
    // A good client.
    let client = Tls::client(client_config(pki.roots.clone()), "localhost")
        .unwrap()
        .wrap(SocketFunctions::system());
    let back = tls_client_echo(client, addr, b"hello over tls")
        .await
        .expect("connect");
    assert_eq!(back, b"hello over tls");
    let e = next_listener_event(&mut events, Duration::from_secs(10)).await;
    assert!(matches!(e, ListenerEvent::Accepted { .. }), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    listener.do_send(StopListening);
    let rest = until_closed(&mut events, Duration::from_secs(15)).await;
    assert_eq!(rest.len(), 1, "{rest:?}");
}

/// A client whose only TLS version the server does not speak fails its connect with the
/// rustls error; the server reports one failed accept with the rustls error too.
#[actix::test]
async fn tls_a_wrong_version_fails_both_sides_with_the_rustls_error() {
    let pki = pki(&["localhost"]);
    let server_cfg = rustls::ServerConfig::builder_with_provider(crate::support::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .unwrap();
    let tls = Tls::server(Arc::new(server_cfg));
    let (listener, addr, mut events) = tls_echo_listener(tls.wrap(SocketFunctions::system())).await;
    let client_cfg = rustls::ClientConfig::builder_with_provider(crate::support::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(pki.roots.clone())
        .with_no_client_auth();
    let client = Tls::client(Arc::new(client_cfg), "localhost")
        .unwrap()
        .wrap(SocketFunctions::system());
    let refused = Socket::builder().functions(client).connect(addr).await;
    let err = refused.expect_err("no common version");
    assert!(
        err.tls().is_some(),
        "client error carries the rustls error: {err:?}"
    );
    let e = next_listener_event(&mut events, Duration::from_secs(10)).await;
    let ListenerEvent::AcceptFailed { error } = e else {
        panic!("{e:?}")
    };
    assert!(
        error.tls().is_some(),
        "server error carries the rustls error: {error:?}"
    );
    listener.do_send(StopListening);
    until_closed(&mut events, Duration::from_secs(15)).await;
}

/// A silent client fails its handshake when the timeout passes, not much later.
#[actix::test]
async fn tls_a_silent_client_is_one_failed_accept_at_the_handshake_timeout() {
    let pki = pki(&["localhost"]);
    let tls = Tls::server(pki.server.clone()).handshake_timeout(Duration::from_millis(500));
    let (listener, addr, mut events) = tls_echo_listener(tls.wrap(SocketFunctions::system())).await;
    let started = Instant::now();
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let e = next_listener_event(&mut events, Duration::from_secs(10)).await;
    let took = started.elapsed();
    let ListenerEvent::AcceptFailed { error } = e else {
        panic!("{e:?}")
    };
    let TransportError::Io(io) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "after {took:?}"
    );
    drop(s);
    listener.do_send(StopListening);
    until_closed(&mut events, Duration::from_secs(15)).await;
}

/// Compression over TLS on the server: every accepted socket carries both layers,
/// plaintext side first, runs in place, and echoes byte-exact to a matching client.
#[actix::test]
async fn tls_compressing_server_sockets_carry_both_layers_and_echo() {
    let pki = pki(&["localhost"]);
    let server_fns =
        Compress::new().wrap(Tls::server(pki.server.clone()).wrap(SocketFunctions::system()));
    let (listener, addr, mut events) = tls_echo_listener(server_fns).await;
    for i in 0..5 {
        let client = Compress::new().wrap(
            Tls::client(client_config(pki.roots.clone()), "localhost")
                .unwrap()
                .wrap(SocketFunctions::system()),
        );
        let payload = crate::support::pattern(70_000 + i, i as u64);
        let back = tls_client_echo(client, addr, &payload)
            .await
            .expect("connect");
        assert!(back == payload, "client {i}: echo differs");
        let e = next_listener_event(&mut events, Duration::from_secs(10)).await;
        let ListenerEvent::Accepted { socket, .. } = e else {
            panic!("{e:?}")
        };
        let info = socket.send(GetInfo).await.unwrap();
        assert_eq!(info.layers, vec!["deflate", "tls"]);
        assert!(info.in_place);
    }
    listener.do_send(StopListening);
    until_closed(&mut events, Duration::from_secs(15)).await;
}

/// A compressing (no TLS) server, with the layer given per connection by the factory's
/// own table: the accepted socket carries it.
#[actix::test]
async fn compress_per_connection_table_from_the_factory_is_carried_by_accepted_sockets() {
    let (seen, mut events) = channel::<ListenerEvent>();
    let server = EchoServer::teeing(seen).start();
    let s2 = server.clone();
    let (listener, local) = Listener::builder()
        .subscriber(server.recipient())
        .socket_builder(move |_| {
            Socket::builder()
                .functions(Compress::new().wrap(SocketFunctions::system()))
                .subscriber(s2.clone().recipient())
        })
        .bind(loopback())
        .await
        .unwrap();
    let addr = inet(local);
    let payload = crate::support::pattern(100_000, 9);
    let back = tls_client_echo(
        Compress::new().wrap(SocketFunctions::system()),
        addr,
        &payload,
    )
    .await
    .unwrap();
    assert!(back == payload);
    let e = next_listener_event(&mut events, Duration::from_secs(10)).await;
    let ListenerEvent::Accepted { socket, .. } = e else {
        panic!("{e:?}")
    };
    assert_eq!(socket.send(GetInfo).await.unwrap().layers, vec!["deflate"]);
    listener.do_send(StopListening);
    until_closed(&mut events, Duration::from_secs(15)).await;
}

// ---------------------------------------------------------------------------------------
// 4. An echo server under load: clients that half-close, reset or stop reading
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// 5. TLS: data that arrives with the client's last handshake flight
// ---------------------------------------------------------------------------------------

/// A blocking rustls client: handshakes, then sends its Finished and `data` in ONE TCP
/// write (as a client pipelining its first request does), optionally followed by
/// close_notify and FIN; reads until `data.len()` bytes came back (or EOF / timeout).
fn pipelining_tls_client(
    addr: SocketAddr,
    roots: rustls::RootCertStore,
    versions: &'static [&'static rustls::SupportedProtocolVersion],
    data: Vec<u8>,
    close_after: bool,
) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write as _};
    let cfg = rustls::ClientConfig::builder_with_provider(crate::support::tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut sock = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    while conn.is_handshaking() {
        if conn.wants_write() {
            conn.write_tls(&mut sock).map_err(|e| e.to_string())?;
            continue;
        }
        let n = conn
            .read_tls(&mut sock)
            .map_err(|e| format!("handshake read: {e}"))?;
        if n == 0 {
            return Err("server closed during the handshake".into());
        }
        conn.process_new_packets().map_err(|e| e.to_string())?;
    }
    // The handshake is done on our side; our last flight may still be unsent. Queue the
    // data behind it and send both in one write.
    conn.writer().write_all(&data).unwrap();
    if close_after {
        conn.send_close_notify();
    }
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    sock.write_all(&wire).map_err(|e| e.to_string())?;
    if close_after {
        sock.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut back = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while back.len() < data.len() {
        match conn.read_tls(&mut sock) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("after {} bytes back: {e}", back.len())),
        }
        let state = conn.process_new_packets().map_err(|e| e.to_string())?;
        let _ = state;
        loop {
            match conn.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => back.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("plaintext read: {e}")),
            }
        }
    }
    Ok(back)
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

async fn run_pipelining_client(
    versions: &'static [&'static rustls::SupportedProtocolVersion],
    close_after: bool,
) {
    let pki = pki(&["localhost"]);
    let tls = Tls::server(pki.server.clone());
    let (listener, addr, mut events) = tls_echo_listener(tls.wrap(SocketFunctions::system())).await;
    for round in 0..5u64 {
        let data = crate::support::pattern(300 + round as usize * 50, round);
        let roots = pki.roots.clone();
        let d2 = data.clone();
        let client = std::thread::spawn(move || {
            pipelining_tls_client(addr, roots, versions, d2, close_after)
        });
        let started = Instant::now();
        while !client.is_finished() && started.elapsed() < Duration::from_secs(15) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let back = client.join().unwrap();
        assert_eq!(
            back.as_ref().map(|b| b.len()),
            Ok(data.len()),
            "round {round}: the data sent with the client's last flight is echoed \
             (close_after {close_after}): {back:?}"
        );
        assert!(back.unwrap() == data);
    }
    listener.do_send(StopListening);
    let all = until_closed(&mut events, Duration::from_secs(15)).await;
    assert!(
        all.iter()
            .all(|e| !matches!(e, ListenerEvent::AcceptFailed { .. })),
        "{all:?}"
    );
}

#[actix::test]
async fn tls13_data_in_the_same_segment_as_the_clients_finished_is_echoed() {
    run_pipelining_client(TLS13_ONLY, false).await;
}

#[actix::test]
async fn tls13_data_and_close_notify_with_the_clients_finished_are_echoed() {
    run_pipelining_client(TLS13_ONLY, true).await;
}

#[actix::test]
async fn tls12_data_right_after_the_handshake_is_echoed() {
    run_pipelining_client(TLS12_ONLY, false).await;
}

// ---------------------------------------------------------------------------------------
// 6. TLS handshake timing over the mock, paused time
// ---------------------------------------------------------------------------------------

/// Over the mock in paused time: a silent client fails exactly at the handshake timeout
/// (not before), a client that leaves mid-handshake fails at once, a client that sends
/// garbage fails at once; the listener accepts on.
#[test]
fn mock_tls_handshake_failures_come_at_the_documented_times() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let tls = Tls::server(pki.server.clone()).handshake_timeout(Duration::from_secs(10));
        let (seen, mut events) = channel::<ListenerEvent>();
        let (listener, _local) = Listener::builder()
            .functions(tls.wrap(mock.functions()))
            .subscriber(seen)
            .bind(loopback())
            .await
            .expect("bind");
        let lh = Handle(1);
        let t0 = tokio::time::Instant::now();
        let _silent = mock.connect_inbound(lh, peer(1)).unwrap();
        let leaving = mock.connect_inbound(lh, peer(2)).unwrap();
        mock.push_inbound(leaving, client_hello(pki.roots.clone()));
        mock.push_eof(leaving);
        let garbage = mock.connect_inbound(lh, peer(3)).unwrap();
        mock.push_inbound(garbage, &b"\x16\x03\x01\x00\x05hello-not-tls"[..]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        settle().await;
        let early = drain(&mut events);
        let kinds: Vec<String> = early
            .iter()
            .map(|e| match e {
                ListenerEvent::AcceptFailed { error } => format!("failed: {error}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            early.len(),
            2,
            "the leaving and the garbage client fail at once: {kinds:?}"
        );
        tokio::time::sleep_until(t0 + Duration::from_millis(9_900)).await;
        settle().await;
        assert!(
            drain(&mut events).is_empty(),
            "the silent client is not failed before 10 s"
        );
        tokio::time::sleep_until(t0 + Duration::from_millis(10_100)).await;
        settle().await;
        let late = drain(&mut events);
        assert_eq!(late.len(), 1, "{late:?}");
        let ListenerEvent::AcceptFailed {
            error: TransportError::Io(io),
        } = &late[0]
        else {
            panic!("{late:?}")
        };
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
        listener.do_send(StopListening);
        until_closed(&mut events, Duration::from_secs(20)).await;
    });
}

// ---------------------------------------------------------------------------------------
// 7. Unix listeners, listeners on the arbiters of a SocketSystem
// ---------------------------------------------------------------------------------------

/// A Unix listener: `Closed` comes once its path is gone, after `StopListening` and
/// after every address is dropped.
#[actix::test]
async fn unix_listener_path_is_gone_by_closed() {
    for drop_it in [false, true] {
        let path = crate::support::TempPath::new("review8b-unix");
        let (seen, mut events) = channel::<ListenerEvent>();
        let (listener, _local) = Listener::builder()
            .subscriber(seen)
            .bind(Address::Unix(path.0.clone()))
            .await
            .expect("bind unix");
        assert!(path.0.exists());
        let mut c = tokio::net::UnixStream::connect(&path.0).await.unwrap();
        c.write_all(b"x").await.unwrap();
        if drop_it {
            drop(listener);
        } else {
            listener.do_send(StopListening);
        }
        until_closed(&mut events, Duration::from_secs(15)).await;
        assert!(
            !path.0.exists(),
            "path still there at Closed (drop {drop_it})"
        );
    }
}

/// One listener per arbiter sharing a port (`reuse_port`), built with `run_on`: every
/// client is served, and each accepted socket runs on its listener's arbiter.
#[actix::test]
async fn system_reuse_port_listeners_on_each_arbiter_serve_on_their_own_threads() {
    let system = SocketSystem::builder().arbiters(2).start().expect("system");
    let threads: Arc<Mutex<Vec<std::thread::ThreadId>>> = Arc::default();
    let mut listeners = Vec::new();
    let mut port = 0u16;
    for index in 0..2 {
        let threads = threads.clone();
        let bind_to = SocketAddr::from(([127, 0, 0, 1], port));
        let (listener, local) = system
            .run_on(index, move || async move {
                let server = EchoServer::default().start();
                let s2 = server.clone();
                Listener::builder()
                    .reuse_port(true)
                    .subscriber(server.recipient())
                    .socket_builder(move |_| {
                        threads.lock().unwrap().push(std::thread::current().id());
                        Socket::builder().subscriber(s2.clone().recipient())
                    })
                    .bind(bind_to)
                    .await
                    .expect("bind")
            })
            .await
            .expect("run_on");
        port = inet(local).port();
        listeners.push(listener);
    }
    let clients: Vec<_> = (0..60)
        .map(|i| tokio::spawn(echo_once(SocketAddr::from(([127, 0, 0, 1], port)), i)))
        .collect();
    for c in clients {
        tokio::time::timeout(Duration::from_secs(30), c)
            .await
            .expect("served")
            .unwrap();
    }
    let seen = threads.lock().unwrap().clone();
    assert_eq!(seen.len(), 60);
    let ids: HashSet<_> = system.thread_ids().iter().cloned().collect();
    assert!(
        seen.iter().all(|t| ids.contains(t)),
        "every socket built on an arbiter"
    );
    for l in &listeners {
        l.send(StopListening).await.unwrap();
    }
    drop(listeners);
    system.shutdown().await.expect("shutdown");
}

/// `adopt` after `shutdown` is refused, and the stream is closed (the peer sees EOF).
#[actix::test]
async fn system_adopt_after_shutdown_is_refused_and_closes_the_stream() {
    let system = SocketSystem::builder().arbiters(1).start().expect("system");
    let l = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (accepted, _) = l.accept().await.unwrap();
    system.shutdown().await.expect("shutdown");
    let r = system
        .adopt(accepted.into_std().unwrap(), Socket::builder)
        .await;
    assert!(
        matches!(r, Err(sockactor::SocketSystemError::ShutDown)),
        "{r:?}"
    );
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0))), "the stream closed: {read:?}");
}

/// Echoes through the registry (entries exist before any event): no race with
/// learning the socket's address.
struct RegistryEcho(Registry);

impl Actor for RegistryEcho {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for RegistryEcho {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        let Some(h) = self.0.get(msg.socket) else {
            return;
        };
        match msg.kind {
            SocketEventKind::Received(bytes) => {
                h.writer().write(bytes).expect("room");
            }
            SocketEventKind::Eof => {
                if let Some(a) = h.addr() {
                    a.do_send(Close::Graceful);
                }
            }
            _ => {}
        }
    }
}

/// Sockets adopted through a `SocketSystem` spread over its arbiters and echo.
#[actix::test]
async fn system_adopted_server_sockets_spread_and_echo() {
    let system = SocketSystem::builder().arbiters(2).start().expect("system");
    let l = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let threads: Arc<Mutex<Vec<std::thread::ThreadId>>> = Arc::default();
    let registry = Registry::new();
    let echo = RegistryEcho(registry.clone()).start();
    let clients: Vec<_> = (0..20).map(|i| tokio::spawn(echo_once(addr, i))).collect();
    let mut socks = Vec::new();
    for _ in 0..20 {
        let (s, _) = l.accept().await.unwrap();
        let threads = threads.clone();
        let (e2, r2) = (echo.clone(), registry.clone());
        let sock = system
            .adopt(s.into_std().unwrap(), move || {
                threads.lock().unwrap().push(std::thread::current().id());
                Socket::builder().subscriber(e2.recipient()).registry(&r2)
            })
            .await
            .expect("adopt");
        socks.push(sock);
    }
    for c in clients {
        tokio::time::timeout(Duration::from_secs(30), c)
            .await
            .expect("served")
            .unwrap();
    }
    let seen: HashSet<_> = threads.lock().unwrap().iter().cloned().collect();
    assert_eq!(seen.len(), 2, "spread over both arbiters");
    drop(socks);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !registry.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(registry.is_empty(), "{} left", registry.len());
    system.shutdown().await.expect("shutdown");
}

/// `StopListening` on a TLS listener while a burst of clients is handshaking: `Closed`
/// once and last (nothing after it), no `Accepted` socket left unannounced.
#[actix::test]
async fn tls_stop_listening_mid_burst_closed_once_and_last() {
    let pki = pki(&["localhost"]);
    let tls = Tls::server(pki.server.clone()).max_handshakes(8);
    let (listener, addr, mut events) = tls_echo_listener(tls.wrap(SocketFunctions::system())).await;
    let roots = pki.roots.clone();
    let clients: Vec<_> = (0..30)
        .map(|_| {
            let roots = roots.clone();
            actix::spawn(async move {
                let client = Tls::client(client_config(roots), "localhost")
                    .unwrap()
                    .wrap(SocketFunctions::system());
                let _ = tokio::time::timeout(
                    Duration::from_secs(15),
                    Socket::builder().functions(client).connect(addr),
                )
                .await;
            })
        })
        .collect();
    let first = next_listener_event(&mut events, Duration::from_secs(10)).await;
    assert!(matches!(first, ListenerEvent::Accepted { .. }), "{first:?}");
    listener.do_send(StopListening);
    let all = until_closed(&mut events, Duration::from_secs(15)).await;
    let closed = all
        .iter()
        .filter(|e| matches!(e, ListenerEvent::Closed))
        .count();
    assert_eq!(closed, 1);
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(20), c).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(drain(&mut events).is_empty(), "nothing after Closed");
}
