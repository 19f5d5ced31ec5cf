//! No descriptor outlives a listener or the sockets it accepted: 200 loopback clients
//! connect, get their bytes echoed and close, then listening stops; the process has as
//! many open descriptors as before the listener was bound.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{open_fds, EchoServer};
use actix::prelude::*;
use sockactor::messages::{Address, StopListening};
use sockactor::{Listener, Socket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn echo_once(addr: SocketAddr, i: usize) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let message = format!("client {i}");
    stream.write_all(message.as_bytes()).await.expect("write");
    stream.shutdown().await.expect("shutdown");
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.expect("read");
    assert_eq!(back, message.as_bytes());
}

/// Lets the runtime finish closing what was closed (actors stopping, transports
/// dropping their entries).
async fn quiesce() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

#[actix_rt::test(system = "crate::support::SerialSystem")]
async fn two_hundred_accepted_connections_and_the_listener_close_every_descriptor() {
    // Warm the runtime's lazily created descriptors (the reactor, the thread's system
    // transport) with one listener and one client first.
    let warm = EchoServer::default().start();
    let (listener, local) = Listener::builder()
        .subscriber(warm.clone().recipient())
        .socket_builder(move |_| Socket::builder().subscriber(warm.clone().recipient()))
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let Address::Inet(addr) = local else {
        panic!("inet listener");
    };
    echo_once(addr, 0).await;
    listener.send(StopListening).await.expect("listener");
    quiesce().await;
    let before = open_fds();

    let server = EchoServer::default().start();
    let (listener, local) = Listener::builder()
        .subscriber(server.clone().recipient())
        .socket_builder({
            let server = server.clone();
            move |_| Socket::builder().subscriber(server.clone().recipient())
        })
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let Address::Inet(addr) = local else {
        panic!("inet listener");
    };
    let clients: Vec<_> = (1..=200)
        .map(|i| tokio::spawn(echo_once(addr, i)))
        .collect();
    for client in clients {
        tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .expect("echo within 30 s")
            .expect("client");
    }
    listener.send(StopListening).await.expect("listener");
    let mut now = open_fds();
    for _ in 0..100 {
        if now == before {
            break;
        }
        quiesce().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        now = open_fds();
    }
    assert_eq!(
        now, before,
        "descriptors left open after the listener stopped"
    );
}
