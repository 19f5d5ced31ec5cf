//! From the eighteenth round of the independent review: servers and clients end to end
//! over byte layers. Listeners with TLS, compression, throttles and injected faults
//! (SNI, ALPN, failed and silent handshakes holding up no one), reconnecting clients
//! over TLS and compression through server restarts, graceful TLS closes on both ends
//! (close_notify, half-close, linger, late session tickets), capture and replay of a
//! compressed session, and the examples' own promises.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use sockactor::filters::{Capture, Compress, FaultInjector, Faults, Replay, Throttle, Tls};
use sockactor::messages::{
    ClientEvent, ClientState, Close, GetClientState, GetInfo, ListenerEvent, SocketEvent,
    SocketEventKind, SocketId, StopListening, Write,
};
use sockactor::{Listener, ReconnectingClient, Socket, SocketFunctions, WriteError};

use crate::support::client::client_events;
use crate::support::servers::{inet, loopback};
use crate::support::tls::{client_config, pki, Pki};
use crate::support::{channel_subscriber, pattern, settle};

const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// How a blocking rustls peer's read of the whole stream ended.
#[derive(Debug)]
struct PeerRead {
    data: Vec<u8>,
    /// `Ok` for a clean close_notify, else the error kind (UnexpectedEof: no close_notify).
    end: Result<(), std::io::ErrorKind>,
}

fn read_all_tls(stream: &mut impl std::io::Read) -> PeerRead {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return PeerRead { data, end: Ok(()) },
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return PeerRead {
                    data,
                    end: Err(e.kind()),
                }
            }
        }
    }
}

/// A blocking rustls server on its own thread: accepts one connection, reads the whole
/// stream and says how it ended.
fn rustls_server_thread(
    config: Arc<rustls::ServerConfig>,
) -> (SocketAddr, tokio::sync::oneshot::Receiver<PeerRead>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
        let conn = rustls::ServerConnection::new(config).expect("server conn");
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        let _ = tx.send(read_all_tls(&mut stream));
    });
    (addr, rx)
}

fn tls_client(pki: &Pki) -> Tls {
    Tls::client(client_config(pki.roots.clone()), "localhost").expect("name")
}

/// What one accepted socket received.
type Received = (SocketId, Vec<u8>);

/// Records what each accepted socket received, keeps the sockets (to abort them).
#[derive(Clone, Default)]
struct Taken {
    by_socket: Arc<Mutex<Vec<Received>>>,
    eofs: Arc<Mutex<Vec<SocketId>>>,
    sockets: Arc<Mutex<Vec<Addr<Socket>>>>,
    failed: Arc<Mutex<Vec<String>>>,
}

impl Taken {
    fn of(&self, id: SocketId) -> Vec<u8> {
        self.by_socket
            .lock()
            .unwrap()
            .iter()
            .find(|(s, _)| *s == id)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    }
    fn all(&self) -> Vec<(SocketId, Vec<u8>)> {
        self.by_socket.lock().unwrap().clone()
    }
}

struct TakingServer(Taken);

impl Actor for TakingServer {
    type Context = Context<Self>;
}

impl Handler<ListenerEvent> for TakingServer {
    type Result = ();
    fn handle(&mut self, msg: ListenerEvent, _: &mut Context<Self>) {
        match msg {
            ListenerEvent::Accepted { socket, id, .. } => {
                self.0.sockets.lock().unwrap().push(socket);
                self.0.by_socket.lock().unwrap().push((id, Vec::new()));
            }
            ListenerEvent::AcceptFailed { error } => {
                self.0.failed.lock().unwrap().push(format!("{error:?}"))
            }
            _ => {}
        }
    }
}

impl Handler<SocketEvent> for TakingServer {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        match msg.kind {
            SocketEventKind::Received(b) => {
                let mut all = self.0.by_socket.lock().unwrap();
                match all.iter_mut().find(|(s, _)| *s == msg.socket) {
                    Some((_, v)) => v.extend_from_slice(&b),
                    None => all.push((msg.socket, b.to_vec())),
                }
            }
            SocketEventKind::Eof => self.0.eofs.lock().unwrap().push(msg.socket),
            _ => {}
        }
    }
}

async fn taking_listener(
    functions: SocketFunctions,
    at: SocketAddr,
) -> (Addr<Listener>, SocketAddr, Taken) {
    let taken = Taken::default();
    let server = TakingServer(taken.clone()).start();
    let s2 = server.clone();
    let (listener, local) = Listener::builder()
        .functions(functions)
        .subscriber(server.recipient())
        .accept_backoff(Duration::from_millis(1))
        .socket_builder(move |_| Socket::builder().subscriber(s2.clone().recipient()))
        .bind(at)
        .await
        .expect("bind");
    (listener, inet(local), taken)
}

async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Graceful TLS closes
// ---------------------------------------------------------------------------------------

/// layers.md: "A socket whose addresses are all dropped does not stop while its outbox
/// holds bytes: it closes gracefully first", and a graceful close sends close_notify.
/// Every write answered Ok reaches the peer, then a clean close_notify EOF.
#[actix::test]
async fn a_tls_socket_dropped_after_ok_writes_delivers_them_all_then_close_notify() {
    let pki = pki(&["localhost"]);
    let (addr, peer) = rustls_server_thread(pki.server.clone());
    let socket = Socket::builder()
        .functions(tls_client(&pki).wrap(SocketFunctions::system()))
        .connect(addr)
        .await
        .expect("connect");
    let data = Bytes::from(pattern(900_000, 3));
    let mut answers = Vec::new();
    for chunk in data.chunks(30_000) {
        answers.push(socket.send(Write::new(data.slice_ref(chunk)).wait_when_full()));
    }
    for a in answers {
        a.await.expect("mailbox").expect("written");
    }
    drop(socket);
    let read = tokio::time::timeout(LIMIT, peer)
        .await
        .expect("the peer's read ends in time")
        .expect("peer thread");
    assert_eq!(read.data.len(), data.len(), "bytes the peer read");
    assert!(read.data == data[..], "the stream is byte exact");
    assert_eq!(read.end, Ok(()), "a clean close_notify ends the stream");
}

/// components.md 3.4: the last address of a client dropped: "writes it took still go
/// out and are answered; then ... Drop for ReconnectingClient sends the socket
/// Close::Graceful": over TLS the peer reads every write, then close_notify.
#[actix::test]
async fn a_reconnecting_tls_client_dropped_sends_its_writes_then_close_notify() {
    let pki = pki(&["localhost"]);
    let (addr, peer) = rustls_server_thread(pki.server.clone());
    let client = ReconnectingClient::builder(addr)
        .functions(tls_client(&pki).wrap(SocketFunctions::system()))
        .start();
    let mut expected = Vec::new();
    let mut answers = Vec::new();
    for i in 0..12u64 {
        let w = Bytes::from(pattern(10_000 + i as usize * 777, i + 10));
        expected.extend_from_slice(&w);
        answers.push(client.send(Write::new(w)));
    }
    // Fire-and-forget the tail, then drop the only address.
    let tail = Bytes::from(pattern(5000, 99));
    expected.extend_from_slice(&tail);
    client.do_send(Write::new(tail));
    drop(client);
    for a in answers {
        tokio::time::timeout(LIMIT, a)
            .await
            .expect("answered in time")
            .expect("mailbox")
            .expect("written");
    }
    let read = tokio::time::timeout(LIMIT, peer)
        .await
        .expect("the peer's read ends in time")
        .expect("peer thread");
    assert_eq!(
        read.data.len(),
        expected.len(),
        "bytes the peer read (the stream ended with {:?})",
        read.end
    );
    assert!(read.data == expected, "byte exact, in order");
    assert_eq!(read.end, Ok(()), "close_notify ends the stream");
}

/// Half-close over TLS: a client sends its close_notify first and keeps reading; the
/// server socket hears `Eof` (README: "The peer's EOF keeps the socket half-open ... may
/// still write"), echoes, and closes with its own close_notify.
#[actix::test]
async fn a_tls_server_keeps_writing_after_the_clients_close_notify_then_sends_its_own() {
    let pki = pki(&["localhost"]);
    let (_listener, addr, _events) = crate::support::servers::tls_echo_listener(
        Tls::server(pki.server.clone()).wrap(SocketFunctions::system()),
    )
    .await;
    let config = client_config(pki.roots.clone());
    let read = tokio::task::spawn_blocking(move || {
        let tcp = std::net::TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let conn = rustls::ClientConnection::new(config, "localhost".try_into().expect("name"))
            .expect("client conn");
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        let payload = pattern(200_000, 7);
        stream.write_all(&payload).expect("write");
        stream.conn.send_close_notify();
        stream.flush().expect("flush");
        (payload, read_all_tls(&mut stream))
    });
    let (payload, read) = tokio::time::timeout(LIMIT, read)
        .await
        .expect("in time")
        .expect("thread");
    eprintln!(
        "half-close: read {} of {} bytes, end {:?}",
        read.data.len(),
        payload.len(),
        read.end
    );
    assert_eq!(
        read.data.len(),
        payload.len(),
        "the whole echo after our close_notify"
    );
    assert!(read.data == payload);
    assert_eq!(read.end, Ok(()), "the server's close_notify ends it");
}

// ---------------------------------------------------------------------------------------
// SNI, ALPN, sessions
// ---------------------------------------------------------------------------------------

/// README: "`Tls` ... sends SNI and ALPN from its config ... `Tls::sessions()` tells what
/// each handshake agreed on"; rustdoc of `TlsSessions`: "A session is there from the end
/// of its handshake until its handle closes."
#[actix::test]
async fn sessions_report_sni_and_alpn_on_both_ends_and_are_forgotten_when_the_handles_close() {
    let pki = pki(&["localhost"]);
    let mut server_config = (*pki.server).clone();
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let server_tls = Tls::server(Arc::new(server_config));
    let server_sessions = server_tls.sessions();
    let (listener, addr, mut levents) =
        crate::support::servers::tls_echo_listener(server_tls.wrap(SocketFunctions::system()))
            .await;

    let mut client_cfg = (*client_config(pki.roots.clone())).clone();
    client_cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client_tls = Tls::client(Arc::new(client_cfg), "localhost").expect("name");
    let client_sessions = client_tls.sessions();
    let (sub, mut crx) = channel_subscriber();
    let client = Socket::builder()
        .functions(client_tls.wrap(SocketFunctions::system()))
        .subscriber(sub)
        .connect(addr)
        .await
        .expect("connect");
    let server_socket = match tokio::time::timeout(LIMIT, levents.recv())
        .await
        .expect("event")
        .expect("open")
    {
        ListenerEvent::Accepted { socket, .. } => socket,
        other => panic!("listener event {other:?}"),
    };
    let chandle = client.send(GetInfo).await.expect("info").handle;
    let shandle = server_socket.send(GetInfo).await.expect("info").handle;
    let c = client_sessions.get(chandle).expect("the client's session");
    let s = server_sessions.get(shandle).expect("the server's session");
    assert_eq!(c.alpn_protocol.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(s.alpn_protocol.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(s.server_name.as_deref(), Some("localhost"), "SNI");
    assert_eq!(c.server_name.as_deref(), Some("localhost"));
    assert_eq!(c.peer_certificates, pki.chain);
    assert!(s.peer_certificates.is_empty());
    assert_eq!(c.protocol_version, s.protocol_version);
    assert_eq!(c.cipher_suite, s.cipher_suite);
    assert_eq!(client_sessions.len(), 1);
    assert_eq!(server_sessions.len(), 1);

    client
        .send(Write::new(&b"ping"[..]))
        .await
        .unwrap()
        .unwrap();
    let back = crate::support::tls::collect(&mut crx, 4).await;
    assert_eq!(back, b"ping");
    client.do_send(Close::Graceful);
    // The server echoes, sees the EOF, closes; the client hears the server's EOF.
    wait_until("both sessions forgotten", LIMIT, || {
        client_sessions.is_empty() && server_sessions.is_empty()
    })
    .await;
    listener.send(StopListening).await.unwrap();
}

// ---------------------------------------------------------------------------------------
// A listener with TLS through faults and a throttle; failed and slow handshakes
// ---------------------------------------------------------------------------------------

/// docs/layers.md "Rules and limits": a fault injector or throttle wrapped around a
/// layered table keeps its layers; filters.md: the injector "never breaks the contract";
/// README: "runs up to 64 server handshakes ahead of the listener (a silent client holds
/// up no one)"; reliability.md: a failed handshake is one AcceptFailed and the listener
/// keeps serving.
#[actix::test]
async fn a_compressed_tls_listener_through_faults_and_a_throttle_serves_clients_past_bad_and_silent_ones(
) {
    let pki = pki(&["localhost"]);
    let faults = Faults::default()
        .partial(0.3)
        .would_block(0.2, Duration::from_millis(2))
        .delay(0.1, Duration::from_millis(2))
        .short_reads(0.3)
        .read_would_block(0.1, Duration::from_millis(2));
    let server_stack = Compress::new().wrap(
        Throttle::per_socket(8 << 20, 64 << 10).wrap(
            FaultInjector::new(5, faults).wrap(
                Tls::server(pki.server.clone())
                    .handshake_timeout(Duration::from_millis(1500))
                    .wrap(SocketFunctions::system()),
            ),
        ),
    );
    let (listener, addr, mut levents) =
        crate::support::servers::tls_echo_listener(server_stack).await;

    // A silent client and a client that does not speak TLS, before the good ones.
    let _silent = tokio::net::TcpStream::connect(addr).await.expect("silent");
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("plain");
    tokio::io::AsyncWriteExt::write_all(&mut plain, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");

    let started = tokio::time::Instant::now();
    let mut clients = Vec::new();
    for i in 0..3u64 {
        // The client's handshake goes through faults too (TLS innermost, over the injector).
        let stack = Compress::new().wrap(
            tls_client(&pki)
                .wrap(FaultInjector::new(100 + i, faults).wrap(SocketFunctions::system())),
        );
        clients.push(actix::spawn(async move {
            let (sub, mut rx) = channel_subscriber();
            let socket = Socket::builder()
                .functions(stack)
                .subscriber(sub)
                .connect(addr)
                .await
                .expect("a good client connects");
            let data = Bytes::from(pattern(150_000 + i as usize * 1000, 40 + i));
            crate::support::tls::write_mixed(&socket, &data).await;
            let back = crate::support::tls::collect(&mut rx, data.len()).await;
            assert!(back == data[..], "client {i}: the echo is byte exact");
            socket.do_send(Close::Graceful);
            loop {
                match tokio::time::timeout(LIMIT, rx.recv())
                    .await
                    .expect("close")
                    .expect("open")
                {
                    SocketEventKind::Eof => {}
                    SocketEventKind::Closed { cause } => {
                        assert!(cause.is_none(), "client {i}: closed with {cause:?}");
                        break;
                    }
                    other => panic!("client {i}: {other:?}"),
                }
            }
        }));
    }
    for c in clients {
        tokio::time::timeout(LIMIT, c)
            .await
            .expect("in time")
            .expect("client task");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1400),
        "the good clients were held up behind the silent one: {took:?}"
    );
    // The silent client's handshake times out; the plain one fails at once.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let events = crate::support::drain(&mut levents);
    let accepted = events
        .iter()
        .filter(|e| matches!(e, ListenerEvent::Accepted { .. }))
        .count();
    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ListenerEvent::AcceptFailed { error } => Some(format!("{error:?}")),
            _ => None,
        })
        .collect();
    assert_eq!(accepted, 3, "events: {events:?}");
    assert_eq!(
        failed.len(),
        2,
        "one failed handshake each for the plain and silent clients: {failed:?}"
    );
    listener.send(StopListening).await.unwrap();
}

// ---------------------------------------------------------------------------------------
// A reconnecting client over TLS and compression
// ---------------------------------------------------------------------------------------

fn server_stack(pki: &Pki) -> SocketFunctions {
    Compress::new().wrap(Tls::server(pki.server.clone()).wrap(SocketFunctions::system()))
}

fn client_stack(pki: &Pki) -> SocketFunctions {
    Compress::new().wrap(tls_client(pki).wrap(SocketFunctions::system()))
}

async fn next_event(events: &mut crate::support::client::Events) -> ClientEvent {
    tokio::time::timeout(LIMIT, events.next())
        .await
        .expect("an event in time")
}

/// README "A client that reconnects by itself" and components.md 3.3: across a server
/// restart, writes made while disconnected go out on the next connection in their order,
/// each answered once; the peer reads exactly the answered-Ok writes, in order.
#[actix::test]
async fn a_reconnecting_client_over_compress_and_tls_delivers_across_a_server_restart() {
    let pki = pki(&["localhost"]);
    let (listener, addr, taken) = taking_listener(server_stack(&pki), loopback()).await;
    let (sub, mut events) = client_events();
    let client = ReconnectingClient::builder(addr)
        .functions(client_stack(&pki))
        .subscriber(sub)
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .seed(7)
        .start();
    assert!(matches!(
        next_event(&mut events).await,
        ClientEvent::Connected { attempt: 1, .. }
    ));
    let mut phase1 = Vec::new();
    let mut answers = Vec::new();
    for i in 0..8u64 {
        let w = Bytes::from(pattern(3000 + i as usize * 100, i + 1));
        phase1.extend_from_slice(&w);
        answers.push(client.send(Write::new(w)));
    }
    for a in answers {
        a.await.unwrap().expect("phase 1 written");
    }
    wait_until("phase 1 at the server", LIMIT, || {
        taken.all().first().map(|(_, b)| b.len()) == Some(phase1.len())
    })
    .await;
    assert!(taken.all()[0].1 == phase1);

    // The server goes away: the listener stops and its connection is aborted.
    listener.send(StopListening).await.unwrap();
    for s in taken.sockets.lock().unwrap().drain(..) {
        s.do_send(Close::Abort);
    }
    loop {
        match next_event(&mut events).await {
            ClientEvent::Disconnected { .. } => break,
            ClientEvent::Eof => {}
            other => panic!("before Disconnected: {other:?}"),
        }
    }
    // Writes while disconnected.
    let mut phase2 = Vec::new();
    let mut answers = Vec::new();
    for i in 0..10u64 {
        let w = Bytes::from(pattern(2000 + i as usize * 50, i + 100));
        phase2.extend_from_slice(&w);
        answers.push(actix::spawn(client.send(Write::new(w))));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The server comes back on the same port.
    let (listener2, _, taken2) = taking_listener(server_stack(&pki), addr).await;
    loop {
        match next_event(&mut events).await {
            ClientEvent::Connected { .. } => break,
            ClientEvent::Reconnecting { .. } => {}
            other => panic!("before Connected again: {other:?}"),
        }
    }
    for (i, a) in answers.into_iter().enumerate() {
        tokio::time::timeout(LIMIT, a)
            .await
            .expect("answered in time")
            .unwrap()
            .unwrap()
            .unwrap_or_else(|e| panic!("phase 2 write {i}: {e:?}"));
    }
    wait_until("phase 2 at the restarted server", LIMIT, || {
        taken2.all().first().map(|(_, b)| b.len()) == Some(phase2.len())
    })
    .await;
    let all2 = taken2.all();
    assert_eq!(all2.len(), 1, "one connection to the restarted server");
    assert!(all2[0].1 == phase2, "phase 2 in order, byte exact");
    client.do_send(Close::Graceful);
    let id = all2[0].0;
    wait_until("the server hears the client's EOF", LIMIT, || {
        taken2.eofs.lock().unwrap().contains(&id)
    })
    .await;
    assert!(taken2.of(id) == phase2, "nothing more after the close");
    listener2.send(StopListening).await.unwrap();
}

/// A TLS client that trusts the wrong root: every attempt fails in the handshake;
/// `GaveUp` carries the certificate error one step away (`SocketError::tls()`); the
/// writes it held are each answered `GaveUp` once; later writes are refused `GaveUp`.
#[actix::test]
async fn a_reconnecting_client_with_the_wrong_root_gives_up_with_the_certificate_error() {
    let pki_a = pki(&["localhost"]);
    let pki_b = pki(&["localhost"]);
    let (listener, addr, taken) = taking_listener(server_stack(&pki_a), loopback()).await;
    let (sub, mut events) = client_events();
    let client = ReconnectingClient::builder(addr)
        .functions(client_stack(&pki_b))
        .subscriber(sub)
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .max_attempts(Some(3))
        .start();
    let answers: Vec<_> = (0..5u8)
        .map(|i| client.send(Write::new(Bytes::from(vec![i; 10]))))
        .collect();
    let last_error = loop {
        match next_event(&mut events).await {
            ClientEvent::GaveUp {
                attempts,
                last_error,
            } => {
                assert_eq!(attempts, 3);
                break last_error;
            }
            ClientEvent::Reconnecting { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(
        matches!(last_error.tls(), Some(rustls::Error::InvalidCertificate(_))),
        "the last error: {last_error:?}"
    );
    for a in answers {
        let r = tokio::time::timeout(LIMIT, a)
            .await
            .expect("in time")
            .unwrap();
        assert!(matches!(r, Err(WriteError::GaveUp { .. })), "{r:?}");
    }
    let late = client.send(Write::new(&b"late"[..])).await.unwrap();
    assert!(matches!(late, Err(WriteError::GaveUp { .. })), "{late:?}");
    assert_eq!(
        client.send(GetClientState).await.unwrap(),
        ClientState::GaveUp { attempts: 3 }
    );
    assert_eq!(
        taken.failed.lock().unwrap().len(),
        3,
        "three failed handshakes at the server"
    );
    listener.send(StopListening).await.unwrap();
}

/// `Close::Graceful` while the client's first connect is stuck in a TLS handshake
/// (the server accepts and never answers): held writes are answered `Closed` with
/// nothing sent, the client is `Closed`, and the abandoned connection is let go of.
#[actix::test]
async fn closing_a_tls_client_mid_handshake_answers_its_writes_and_lets_the_connection_go() {
    let pki = pki(&["localhost"]);
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let client = ReconnectingClient::builder(addr)
        .functions(
            Compress::new().wrap(
                tls_client(&pki)
                    .handshake_timeout(Duration::from_secs(2))
                    .wrap(SocketFunctions::system()),
            ),
        )
        .start();
    let (mut stream, _) = tokio::time::timeout(LIMIT, server.accept())
        .await
        .unwrap()
        .unwrap();
    let answers: Vec<_> = (0..3u8)
        .map(|i| client.send(Write::new(Bytes::from(vec![i; 10]))))
        .collect();
    let mut hello = [0u8; 5];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut hello)
        .await
        .unwrap();
    assert_eq!(hello[0], 0x16, "a TLS handshake record");
    assert!(matches!(
        client.send(GetClientState).await.unwrap(),
        ClientState::Connecting { attempt: 1 }
    ));
    client.do_send(Close::Graceful);
    for a in answers {
        let r = tokio::time::timeout(LIMIT, a)
            .await
            .expect("in time")
            .unwrap();
        assert!(
            matches!(r, Err(WriteError::Closed { bytes_sent: 0, .. })),
            "{r:?}"
        );
    }
    assert_eq!(
        client.send(GetClientState).await.unwrap(),
        ClientState::Closed
    );
    // The handshake's connection ends (at the latest when its handshake times out).
    let mut rest = Vec::new();
    let end = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest),
    )
    .await;
    assert!(
        end.is_ok(),
        "the abandoned handshake's connection is still open after 5 s"
    );
    // No second attempt is made.
    let again = tokio::time::timeout(Duration::from_millis(500), server.accept()).await;
    assert!(again.is_err(), "a closed client connected again");
}

// ---------------------------------------------------------------------------------------
// Capture and replay of a layered session (paused time, mock transport)
// ---------------------------------------------------------------------------------------

/// What one run of the compressed session saw.
#[derive(Debug, PartialEq, Eq)]
struct LayeredRun {
    answers: Vec<crate::support::capture::Answer>,
    received: Vec<u8>,
    events: Vec<String>,
    written: Vec<u8>,
}

/// The peer's compressed bytes for `plain`, made by a compressing socket on a mock.
async fn deflated(plain: &[&[u8]]) -> Vec<Vec<u8>> {
    let mock = sockactor::MockTransport::start();
    let socket = Socket::builder()
        .functions(Compress::new().wrap(mock.functions()))
        .connect(crate::support::mock_peer())
        .await
        .expect("connect");
    let mut out = Vec::new();
    let mut seen = 0;
    for p in plain {
        socket
            .send(Write::new(Bytes::copy_from_slice(p)))
            .await
            .unwrap()
            .unwrap();
        settle().await;
        let all = mock.written(sockactor::messages::Handle(1));
        out.push(all[seen..].to_vec());
        seen = all.len();
    }
    out
}

async fn compressed_session(
    functions: SocketFunctions,
    mock: Option<sockactor::MockTransport>,
    inbound: Vec<Vec<u8>>,
) -> (Vec<crate::support::capture::Answer>, Vec<u8>, Vec<String>) {
    let recorder = crate::support::Recorder::default();
    let socket = Socket::builder()
        .functions(functions)
        .subscriber(recorder.start().recipient())
        .connect(crate::support::mock_peer())
        .await
        .expect("connect");
    if let Some(mock) = mock {
        actix::spawn(async move {
            for (i, piece) in inbound.into_iter().enumerate() {
                tokio::time::sleep(Duration::from_millis(3 + i as u64)).await;
                mock.push_inbound(sockactor::messages::Handle(1), piece);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            mock.push_eof(sockactor::messages::Handle(1));
        });
    }
    let big = Bytes::from(pattern(200_000, 9));
    let a = actix::spawn(socket.send(Write::new(&b"hello, layered capture"[..])));
    let b = actix::spawn(socket.send(Write::new(big)));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let c = actix::spawn(socket.send(Write::new(&b"after the peer's eof"[..])));
    let mut answers = Vec::new();
    for w in [a, b, c] {
        let r = tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .expect("answered")
            .unwrap()
            .unwrap();
        answers.push(crate::support::capture::answer_of(r));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    socket.do_send(Close::Graceful);
    tokio::time::sleep(Duration::from_millis(5)).await;
    settle().await;
    (
        answers,
        recorder.received(),
        crate::support::capture::events(&recorder),
    )
}

fn layered_capture_run() -> (LayeredRun, Vec<u8>) {
    crate::support::run_paused(|| async move {
        let inbound = deflated(&[b"ping from the peer", &pattern(5000, 1), b"pong!"]).await;
        let mock = sockactor::MockTransport::start();
        mock.script_sendv(
            sockactor::messages::Handle(1),
            [
                sockactor::SendStep::Accept(3),
                sockactor::SendStep::WouldBlock(Duration::from_millis(4)),
                sockactor::SendStep::Accept(700),
                sockactor::SendStep::Slow {
                    bytes: 5000,
                    after: Duration::from_millis(2),
                },
                sockactor::SendStep::WouldBlock(Duration::from_millis(1)),
            ],
        );
        let (capture, file) = Capture::to_memory();
        let functions = Compress::new().wrap(capture.wrap(mock.functions()));
        let (answers, received, events) =
            compressed_session(functions, Some(mock.clone()), inbound).await;
        let run = LayeredRun {
            answers,
            received,
            events,
            written: mock.written(sockactor::messages::Handle(1)),
        };
        (run, file.contents())
    })
}

fn layered_replay_run(bytes: &[u8]) -> LayeredRun {
    let bytes = bytes.to_vec();
    crate::support::run_paused(|| async move {
        // The same warm-up as the capture's run, so the clocks agree.
        let _ = deflated(&[b"ping from the peer", &pattern(5000, 1), b"pong!"]).await;
        let replay = Replay::from_reader(&bytes[..]).expect("a valid capture");
        let functions = Compress::new().wrap(replay.functions());
        let (answers, received, events) = compressed_session(functions, None, Vec::new()).await;
        let handle = replay
            .handle(sockactor::messages::Handle(1))
            .expect("the session's handle");
        LayeredRun {
            answers,
            received,
            events,
            written: replay.mock().written(handle),
        }
    })
}

/// filters.md: "Replay (turns that file into a scripted mock, so a real session becomes
/// a deterministic test)"; layers.md: "capture a layered table to record its wire bytes".
/// A compressed session (deflate is deterministic) replays with the same answers, the
/// same plaintext and the same wire bytes.
#[test]
fn a_captured_compressed_session_replays_with_the_same_answers_plaintext_and_wire_bytes() {
    let (captured, file) = layered_capture_run();
    assert_eq!(
        captured.received,
        [&b"ping from the peer"[..], &pattern(5000, 1), b"pong!"].concat(),
        "the captured run decompressed the peer's data"
    );
    assert!(
        captured.events.iter().any(|e| e == "eof"),
        "{:?}",
        captured.events
    );
    let replayed = layered_replay_run(&file);
    assert_eq!(replayed.answers, captured.answers);
    assert_eq!(replayed.received, captured.received);
    assert_eq!(replayed.events, captured.events);
    assert!(replayed.written == captured.written, "the same wire bytes");
}

/// The same session through a capture file (`Capture::new(File)`): written out on close,
/// read back by `CaptureReader` whole, replayed the same.
#[test]
fn a_compressed_session_captured_to_a_file_round_trips_and_replays() {
    let path = crate::support::TempPath::new("review18-capture");
    let (memory_run, memory_file) = layered_capture_run();
    let path2 = path.0.clone();
    crate::support::run_paused(|| async move {
        let inbound = deflated(&[b"ping from the peer", &pattern(5000, 1), b"pong!"]).await;
        let mock = sockactor::MockTransport::start();
        mock.script_sendv(
            sockactor::messages::Handle(1),
            [
                sockactor::SendStep::Accept(3),
                sockactor::SendStep::WouldBlock(Duration::from_millis(4)),
                sockactor::SendStep::Accept(700),
                sockactor::SendStep::Slow {
                    bytes: 5000,
                    after: Duration::from_millis(2),
                },
                sockactor::SendStep::WouldBlock(Duration::from_millis(1)),
            ],
        );
        let file = std::fs::File::create(&path2).expect("create");
        let capture = Capture::new(file);
        let functions = Compress::new().wrap(capture.wrap(mock.functions()));
        let _ = compressed_session(functions, Some(mock.clone()), inbound).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        settle().await;
    });
    let on_disk = std::fs::read(&path.0).expect("read the capture");
    let records = crate::support::capture::records(&on_disk);
    let memory_records = crate::support::capture::records(&memory_file);
    assert_eq!(
        records.len(),
        memory_records.len(),
        "the same records as in memory"
    );
    assert_eq!(
        on_disk, memory_file,
        "the file holds the same bytes as the memory capture"
    );
    let replayed = layered_replay_run(&on_disk);
    assert_eq!(replayed, memory_run);
}

// ---------------------------------------------------------------------------------------
// Abandoned TLS connects, descriptors
// ---------------------------------------------------------------------------------------

/// A TLS connect whose future is dropped mid-handshake (the server never answers) lets
/// go of its connection at once, as a plain connect does
/// (`a_timed_out_or_abandoned_connect_releases_its_descriptor_at_once` for plain TCP),
/// not only when the 10 s handshake timeout passes.
#[actix::test]
async fn a_tls_connect_dropped_mid_handshake_releases_its_connection() {
    let pki = pki(&["localhost"]);
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let functions = tls_client(&pki).wrap(SocketFunctions::system());
    settle().await;
    let f2 = functions.clone();
    let connecting =
        actix::spawn(async move { Socket::builder().functions(f2).connect(addr).await });
    let (mut stream, _) = tokio::time::timeout(LIMIT, server.accept())
        .await
        .unwrap()
        .unwrap();
    let mut hello = [0u8; 5];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut hello)
        .await
        .unwrap();
    connecting.abort();
    let _ = connecting.await;
    let mut rest = Vec::new();
    let end = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest),
    )
    .await;
    assert!(
        end.is_ok(),
        "the abandoned handshake's connection still open after 3 s"
    );
    // (No descriptor count: the other tests of this crate run beside this one.)
    let _ = functions;
}

// ---------------------------------------------------------------------------------------
// The examples' logic
// ---------------------------------------------------------------------------------------

/// examples/lines.rs, run as a test (its logic verbatim, 1000 lines answered in order).
#[actix::test]
async fn the_lines_example_answers_every_line_in_order() {
    use sockactor::Socket;
    use tokio::net::TcpListener;
    use tokio_util::codec::LinesCodec;
    const LINES: usize = 1000;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            actix::spawn(async move {
                let (mut tx, mut rx) = Socket::adopt_framed(stream, LinesCodec::new()).await?;
                while let Some(line) = rx.next().await {
                    tx.send(line?.to_uppercase()).await?;
                }
                Ok::<_, Box<dyn std::error::Error>>(())
            });
        }
    });
    let (mut tx, mut rx) = Socket::connect_framed(addr, LinesCodec::new())
        .await
        .unwrap();
    for i in 0..LINES {
        tx.send(format!("line {i}")).await.unwrap();
    }
    for i in 0..LINES {
        let answer = tokio::time::timeout(LIMIT, rx.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("a line");
        assert_eq!(answer, format!("LINE {i}"));
    }
}

/// examples/pipeline.rs, run as a test, with the window the example uses.
#[actix::test]
async fn the_pipeline_example_answers_every_request_in_order() {
    use tokio::net::TcpListener;
    use tokio_util::codec::LinesCodec;
    const REQUESTS: u64 = 3000;
    const WINDOW: u64 = 64;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix::spawn(async move {
        let (stream, _) = listener.accept().await?;
        let (mut tx, mut rx) = Socket::adopt_framed(stream, LinesCodec::new()).await?;
        while let Some(line) = rx.next().await {
            tx.send((line?.parse::<u64>()? * 2).to_string()).await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    });
    let (mut tx, mut rx) = Socket::connect_framed(addr, LinesCodec::new())
        .await
        .unwrap();
    let (mut sent, mut answered) = (0, 0);
    let run = async {
        while answered < REQUESTS {
            if sent < REQUESTS && sent - answered < WINDOW {
                tx.send(sent.to_string()).await.unwrap();
                sent += 1;
            } else {
                let answer = rx.next().await.expect("open").expect("a line");
                assert_eq!(answer, (answered * 2).to_string());
                answered += 1;
            }
        }
    };
    tokio::time::timeout(LIMIT, run)
        .await
        .expect("all answered in time");
}

/// The tls_echo example's stacks (Compress over Tls over the system transport, both
/// ends) with its pattern of spawned `send`s of 64 KiB writes: the echo is byte exact and
/// every write answered Ok; then the client closes gracefully, lingering
/// (`SocketConfig::close_linger`: "reads on until the peer's EOF first"), and hears the
/// server's clean EOF (its close_notify), then `Closed` with no cause.
#[actix::test]
async fn the_tls_echo_examples_stacks_echo_byte_exact_and_close_cleanly() {
    let pki = pki(&["localhost"]);
    let (listener, addr, _events) =
        crate::support::servers::tls_echo_listener(server_stack(&pki)).await;
    let (sub, mut rx) = channel_subscriber();
    let client = Socket::builder()
        .functions(client_stack(&pki))
        .config(crate::support::lingering(Duration::from_secs(5)))
        .subscriber(sub)
        .connect(addr)
        .await
        .expect("connect");
    let total = 2 << 20;
    let data = Bytes::from(pattern(total, 77));
    let mut answers = Vec::new();
    for offset in (0..total).step_by(64 << 10) {
        let chunk = data.slice(offset..(offset + (64 << 10)).min(total));
        answers.push(actix::spawn(
            client.send(Write::new(chunk).wait_when_full()),
        ));
    }
    let back = crate::support::tls::collect(&mut rx, total).await;
    for a in answers {
        a.await.unwrap().unwrap().expect("written");
    }
    assert!(back == data[..], "byte exact");
    client.do_send(Close::Graceful);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(LIMIT, rx.recv())
            .await
            .expect("in time")
            .expect("open")
        {
            SocketEventKind::Closed { cause } => {
                assert!(cause.is_none(), "closed with {cause:?} after {seen:?}");
                break;
            }
            other => seen.push(format!("{other:?}")),
        }
    }
    assert_eq!(
        seen,
        vec!["Eof".to_string()],
        "the server's clean EOF, then Closed"
    );
    listener.send(StopListening).await.unwrap();
}

/// README: `Close::Graceful` "sends everything already queued ..., shuts down its sending
/// half and then closes". A socket without a subscriber (it does not read) whose peer
/// sent it a few bytes: every write answered Ok must still reach the peer, then EOF.
#[actix::test]
async fn a_graceful_close_of_a_socket_with_unread_inbound_bytes_delivers_every_ok_write() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let peer = actix::spawn(async move {
        let (mut stream, _) = server.accept().await.unwrap();
        stream
            .write_all(b"a greeting the client never reads")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut all = Vec::new();
        let end = stream
            .read_to_end(&mut all)
            .await
            .map(|_| ())
            .map_err(|e| e.kind());
        (all, end)
    });
    let socket = Socket::builder().connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let data = Bytes::from(pattern(1 << 20, 5));
    let answers: Vec<_> = data
        .chunks(64 << 10)
        .map(|c| socket.send(Write::new(data.slice_ref(c)).wait_when_full()))
        .collect();
    socket.do_send(Close::Graceful);
    for a in answers {
        tokio::time::timeout(LIMIT, a)
            .await
            .expect("in time")
            .unwrap()
            .expect("written");
    }
    let (all, end) = tokio::time::timeout(LIMIT, peer)
        .await
        .expect("in time")
        .unwrap();
    assert_eq!(
        (all.len(), end),
        (data.len(), Ok(())),
        "the peer read every Ok write, then EOF"
    );
}

/// The same over TLS: the server's session tickets are inbound bytes too. Writes, a
/// graceful close at once, the peer reads late.
#[actix::test]
async fn a_graceful_tls_close_right_after_the_writes_delivers_every_ok_write_then_close_notify() {
    let pki = pki(&["localhost"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, peer) = tokio::sync::oneshot::channel();
    let config = pki.server.clone();
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
        let conn = rustls::ServerConnection::new(config).expect("server conn");
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        // Finish the handshake (and send the tickets), then read late.
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .expect("handshake");
        }
        stream.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(300));
        let _ = tx.send(read_all_tls(&mut stream));
    });
    let (sub, _events) = channel_subscriber();
    let socket = Socket::builder()
        .functions(tls_client(&pki).wrap(SocketFunctions::system()))
        .subscriber(sub)
        .connect(addr)
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let data = Bytes::from(pattern(1 << 20, 6));
    let answers: Vec<_> = data
        .chunks(64 << 10)
        .map(|c| socket.send(Write::new(data.slice_ref(c)).wait_when_full()))
        .collect();
    socket.do_send(Close::Graceful);
    for a in answers {
        tokio::time::timeout(LIMIT, a)
            .await
            .expect("in time")
            .unwrap()
            .expect("written");
    }
    let read = tokio::time::timeout(LIMIT, peer)
        .await
        .expect("in time")
        .unwrap();
    assert_eq!(
        (read.data.len(), read.end),
        (data.len(), Ok(())),
        "the peer read every Ok write, then close_notify"
    );
}

/// A TLS 1.3 server (rustls, as OpenSSL does) sends its session tickets when it has read
/// the client's Finished. A server that reads a little late (here 300 ms after its
/// first flight) meets a client socket that already closed after its graceful close:
/// the tickets hit a closed socket, the client's kernel answers with a reset, and the
/// peer loses every byte it had not read yet, the writes answered Ok and the
/// close_notify with them.
///
/// Promises: rustdoc of `Tls`: "a graceful close sends close_notify after the queued
/// writes"; README: `Close::Graceful` "sends everything already queued ..., shuts down
/// its sending half and then closes"; layers.md: "A write is answered Ok once the layers
/// took it. Those bytes are not dropped when the socket ends early".
#[actix::test]
async fn a_graceful_tls_close_survives_the_servers_session_tickets_arriving_after_it() {
    // The race is the kernel's: a round loses data about half the time; 16 rounds.
    let mut rounds = Vec::new();
    for _ in 0..16 {
        rounds.push(tickets_after_close_round(None).await);
    }
    let expected = (TICKET_TOTAL, Ok(()));
    assert!(
        rounds.iter().all(|r| *r == expected),
        "each round: (bytes the peer read, how its stream ended), expected {expected:?}: {rounds:?}"
    );
}

/// One round: what the late-reading peer read, and how its stream ended.
async fn tickets_after_close_round(
    linger: Option<Duration>,
) -> (usize, Result<(), std::io::ErrorKind>) {
    let pki = pki(&["localhost"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, peer) = tokio::sync::oneshot::channel();
    let config = pki.server.clone();
    std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut conn = rustls::ServerConnection::new(config).expect("server conn");
        // Read the ClientHello, send the server's flight, and nothing more yet.
        while !conn.wants_write() {
            conn.read_tls(&mut tcp).expect("read_tls");
            conn.process_new_packets().expect("client hello");
        }
        while conn.wants_write() {
            conn.write_tls(&mut tcp).expect("write_tls");
        }
        // Take raw bytes off the socket without looking at them yet (the client's
        // Finished among them), then pause: meanwhile the client finishes and closes.
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        while raw.len() < RAW_FIRST {
            let n = tcp.read(&mut buf).expect("raw read");
            assert!(n > 0, "EOF among the raw bytes");
            raw.extend_from_slice(&buf[..n]);
        }
        std::thread::sleep(Duration::from_millis(300));
        // Now process everything (the client's Finished first: the tickets go out).
        let mut stream = rustls::StreamOwned::new(
            conn,
            Prefixed {
                pre: std::io::Cursor::new(raw),
                tcp,
            },
        );
        let _ = tx.send(read_all_tls(&mut stream));
    });
    let (sub, _events) = channel_subscriber();
    let mut builder = Socket::builder()
        .functions(tls_client(&pki).wrap(SocketFunctions::system()))
        .subscriber(sub);
    if let Some(linger) = linger {
        builder = builder.config(crate::support::lingering(linger));
    }
    let socket = builder.connect(addr).await.expect("connect");
    let data = Bytes::from(pattern(TICKET_TOTAL, 8));
    let answers: Vec<_> = data
        .chunks(64 << 10)
        .map(|c| socket.send(Write::new(data.slice_ref(c)).wait_when_full()))
        .collect();
    socket.do_send(Close::Graceful);
    for a in answers {
        tokio::time::timeout(LIMIT, a)
            .await
            .expect("in time")
            .unwrap()
            .expect("written");
    }
    let read = tokio::time::timeout(LIMIT, peer)
        .await
        .expect("in time")
        .unwrap();
    if read.end.is_ok() {
        assert!(read.data == data[..], "byte exact");
    }
    (read.data.len(), read.end)
}

/// The workaround: with `close_linger` the closing socket reads on (the tickets are
/// taken) until the peer's EOF.
#[actix::test]
async fn with_close_linger_a_graceful_tls_close_survives_late_session_tickets() {
    for _ in 0..4 {
        let r = tickets_after_close_round(Some(Duration::from_secs(5))).await;
        assert_eq!(r, (TICKET_TOTAL, Ok(())));
    }
}

const TICKET_TOTAL: usize = 1_500_000;
const RAW_FIRST: usize = 500_000;

/// Bytes already taken off a socket, then the socket.
struct Prefixed {
    pre: std::io::Cursor<Vec<u8>>,
    tcp: std::net::TcpStream,
}

impl std::io::Read for Prefixed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.pre.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        self.tcp.read(buf)
    }
}

impl std::io::Write for Prefixed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}
