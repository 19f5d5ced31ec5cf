//! Helpers for server tests: loopback addresses, a TLS echo listener and client, a
//! plain echo round trip, and the listener's events until `Closed`.

use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use sockactor::messages::{Address, Close, ListenerEvent, SocketEventKind, Write};
use sockactor::{Listener, Socket, SocketFunctions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{channel, channel_subscriber, EchoServer};

/// 127.0.0.1, any port.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The inet address of `a` (a test bound one).
pub fn inet(a: Address) -> SocketAddr {
    match a {
        Address::Inet(a) => a,
        other => panic!("not inet: {other:?}"),
    }
}

/// Receives listener events until `Closed` (bounded wait), returns all of them.
pub async fn until_closed(
    rx: &mut UnboundedReceiver<ListenerEvent>,
    within: Duration,
) -> Vec<ListenerEvent> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => {
                let closed = matches!(e, ListenerEvent::Closed);
                out.push(e);
                if closed {
                    return out;
                }
            }
            Ok(None) => panic!("listener events channel ended before Closed"),
            Err(_) => panic!(
                "no Closed within {within:?}; got {} events: {:?}",
                out.len(),
                out
            ),
        }
    }
}

/// Sends `client {i} …` through a fresh TCP connection, half-closes, and checks the
/// echo.
pub async fn echo_once(addr: SocketAddr, i: usize) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let message = format!("client {i} {}", "x".repeat(i % 300));
    stream.write_all(message.as_bytes()).await.expect("write");
    stream.shutdown().await.expect("shutdown");
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.expect("read");
    assert_eq!(back, message.as_bytes(), "client {i}");
    back
}

/// A TLS listener whose sockets echo; listener events go to the test.
pub async fn tls_echo_listener(
    functions: SocketFunctions,
) -> (Addr<Listener>, SocketAddr, UnboundedReceiver<ListenerEvent>) {
    let (seen, events) = channel::<ListenerEvent>();
    let server = EchoServer::teeing(seen).start();
    let s2 = server.clone();
    let (listener, local) = Listener::builder()
        .functions(functions)
        .subscriber(server.recipient())
        .accept_backoff(Duration::from_millis(1))
        .socket_builder(move |_| Socket::builder().subscriber(s2.clone().recipient()))
        .bind(loopback())
        .await
        .expect("bind");
    (listener, inet(local), events)
}

/// Connects with `functions` (a TLS client table), writes `payload` and collects its
/// echo (20 s at most).
pub async fn tls_client_echo(
    functions: SocketFunctions,
    addr: SocketAddr,
    payload: &[u8],
) -> Result<Vec<u8>, sockactor::SocketError> {
    let (sub, mut rx) = channel_subscriber();
    let sock = Socket::builder()
        .functions(functions)
        .subscriber(sub)
        .connect(addr)
        .await?;
    sock.send(Write::new(Bytes::copy_from_slice(payload)))
        .await
        .unwrap()
        .expect("written");
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while back.len() < payload.len() {
            match rx.recv().await {
                Some(SocketEventKind::Received(b)) => back.extend_from_slice(&b),
                Some(other) => panic!("client event {other:?}"),
                None => break,
            }
        }
    })
    .await
    .expect("echo within 20 s");
    sock.do_send(Close::Graceful);
    Ok(back)
}
