//! Real TCP on loopback through the system transport: a `Listener` accepts many clients
//! at once, each accepted socket echoes what it receives, and every client gets its own
//! bytes back exactly; two listeners share a port only with `reuse_port`; IPv6 loopback
//! works too.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{channel, pattern, EchoServer};
use actix::prelude::*;
use sockactor::messages::{Address, GetLocalAddr, ListenerEvent, StopListening};
use sockactor::{Listener, Socket, SocketError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn echo_listener(addr: SocketAddr) -> (Addr<Listener>, Address) {
    let server = EchoServer::default().start();
    Listener::builder()
        .subscriber(server.clone().recipient())
        .socket_builder(move |_| Socket::builder().subscriber(server.clone().recipient()))
        .bind(addr)
        .await
        .expect("bind loopback")
}

#[actix::test]
async fn fifty_clients_each_get_their_own_bytes_back() {
    const CLIENTS: u64 = 50;
    const LEN: usize = 96 * 1024;
    let (listener, local) = echo_listener(SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let Address::Inet(addr) = local.clone() else {
        panic!("an inet listener has an inet address");
    };
    assert_ne!(addr.port(), 0, "the chosen port is reported");
    assert_eq!(listener.send(GetLocalAddr).await.expect("listener"), local);

    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(async move {
                let data = pattern(LEN, 100 + i);
                let stream = tokio::net::TcpStream::connect(addr).await?;
                let (mut rx, mut tx) = stream.into_split();
                let sent = data.clone();
                let writer = tokio::spawn(async move {
                    tx.write_all(&sent).await?;
                    tx.shutdown().await
                });
                let mut back = Vec::new();
                rx.read_to_end(&mut back).await?;
                writer.await.expect("join")?;
                Ok::<_, std::io::Error>((data, back))
            })
        })
        .collect();
    for client in clients {
        let (sent, back) = tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .expect("echo within 30 s")
            .expect("join")
            .expect("client i/o");
        assert_eq!(back.len(), sent.len());
        assert!(back == sent, "a client got bytes that were not its own");
    }
    listener.send(StopListening).await.expect("listener");
}

#[actix::test]
async fn two_listeners_share_a_port_only_with_reuse_port() {
    let (first, local) = Listener::builder()
        .reuse_port(true)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let (second, again) = Listener::builder()
        .reuse_port(true)
        .bind(local.clone())
        .await
        .expect("a second listener on the same port with reuse_port");
    assert_eq!(again, local);
    let refused = Listener::builder()
        .bind(local.clone())
        .await
        .expect_err("without reuse_port the port is taken");
    assert!(
        matches!(&refused, SocketError::Bind(e) if e.io_kind() == Some(std::io::ErrorKind::AddrInUse)),
        "{refused:?}"
    );
    first.send(StopListening).await.expect("listener");
    second.send(StopListening).await.expect("listener");
}

/// One listener per arbiter on a shared port (`SO_REUSEPORT`): together they echo every
/// client.
#[actix::test]
async fn listeners_on_two_arbiters_share_one_port() {
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let one = Arbiter::new();
    // The listener lives on that arbiter's thread (its futures are not `Send`).
    one.spawn_fn(move || {
        actix::spawn(async move {
            let (listener, local) = echo_listener_on(SocketAddr::from(([127, 0, 0, 1], 0))).await;
            let _ = first_tx.send(local);
            // Keep listening until the arbiter stops.
            std::future::pending::<()>().await;
            drop(listener);
        });
    });
    let local = first_rx.await.expect("first listener");
    let (second_tx, second_rx) = tokio::sync::oneshot::channel();
    let two = Arbiter::new();
    let shared = local.clone();
    two.spawn_fn(move || {
        actix::spawn(async move {
            let (listener, local) = echo_listener_on(shared).await;
            let _ = second_tx.send(local);
            std::future::pending::<()>().await;
            drop(listener);
        });
    });
    assert_eq!(second_rx.await.expect("second listener"), local);
    let Address::Inet(addr) = local else {
        panic!("an inet listener has an inet address");
    };
    for i in 0..40u64 {
        let data = pattern(4096, i);
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(&data).await.expect("write");
        stream.shutdown().await.expect("shutdown");
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut back))
            .await
            .expect("echo within 10 s")
            .expect("read");
        assert!(back == data, "client {i} got bytes that were not its own");
    }
    one.stop();
    two.stop();
}

/// An echo listener sharing its port (`SO_REUSEPORT`), on the current arbiter.
async fn echo_listener_on(addr: impl Into<Address>) -> (Addr<Listener>, Address) {
    let server = EchoServer::default().start();
    Listener::builder()
        .reuse_port(true)
        .subscriber(server.clone().recipient())
        .socket_builder(move |_| Socket::builder().subscriber(server.clone().recipient()))
        .bind(addr)
        .await
        .expect("bind with reuse_port")
}

#[actix::test]
async fn a_listener_over_ipv6_loopback_accepts() {
    let (events, mut heard) = channel::<ListenerEvent>();
    let bound = Listener::builder()
        .subscriber(events)
        .bind(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)))
        .await;
    let (listener, local) = match bound {
        Ok(bound) => bound,
        // A machine without IPv6 loopback has nothing to test here.
        Err(SocketError::Bind(e)) if e.io_kind() == Some(std::io::ErrorKind::AddrNotAvailable) => {
            return;
        }
        Err(e) => panic!("bind [::1]: {e}"),
    };
    let Address::Inet(addr) = local else {
        panic!("an inet listener has an inet address");
    };
    let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let event = tokio::time::timeout(Duration::from_secs(10), heard.recv())
        .await
        .expect("accepted within 10 s")
        .expect("subscriber alive");
    match event {
        ListenerEvent::Accepted { peer, .. } => {
            assert_eq!(peer, Address::Inet(client.local_addr().expect("addr")));
        }
        other => panic!("expected an accepted connection, got {other:?}"),
    }
    listener.send(StopListening).await.expect("listener");
}
