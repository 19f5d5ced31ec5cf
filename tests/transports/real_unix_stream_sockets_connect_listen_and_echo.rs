//! Unix domain stream sockets through the system transport: a `Listener` on a path under
//! the temporary directory, a `Socket` that connects to it, an echo round trip (both
//! ends socket actors, both on the in-place path), and the path removed when listening
//! stops; and one end of a `UnixStream::pair` adopted by a socket.
#![cfg(unix)]

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{channel, channel_subscriber, pattern, EchoServer, TempPath};
use actix::prelude::*;
use sockactor::messages::{Address, Close, ListenerEvent, SocketEventKind, StopListening, Write};
use sockactor::{Listener, Socket};

#[actix::test]
async fn a_unix_socket_connects_to_a_unix_listener_and_gets_its_bytes_echoed() {
    let path = TempPath::new("echo.sock");
    let server = EchoServer::default().start();
    let (events, mut heard) = channel::<ListenerEvent>();
    let (listener, local) = Listener::builder()
        .subscriber(events)
        .socket_builder({
            let server = server.clone();
            move |_| Socket::builder().subscriber(server.clone().recipient())
        })
        .bind(Address::Unix(path.0.clone()))
        .await
        .expect("bind a Unix path");
    assert_eq!(local, Address::Unix(path.0.clone()));
    assert!(path.0.exists(), "the socket file is there while listening");

    let (subscriber, mut received) = channel_subscriber();
    let client = Socket::builder()
        .subscriber(subscriber)
        .connect(Address::Unix(path.0.clone()))
        .await
        .expect("connect to the Unix path");
    let accepted = tokio::time::timeout(Duration::from_secs(10), heard.recv())
        .await
        .expect("accepted within 10 s")
        .expect("subscriber alive");
    match accepted {
        ListenerEvent::Accepted { socket, id, peer } => {
            assert_eq!(peer, Address::Unix(PathBuf::new()), "an unnamed client");
            // The echo server keeps the accepted socket (nothing is sent before this).
            server.do_send(ListenerEvent::Accepted { socket, id, peer });
        }
        other => panic!("expected an accepted connection, got {other:?}"),
    }

    let data = pattern(1024 * 1024, 77);
    for chunk in data.chunks(10_000) {
        client.do_send(Write::new(chunk.to_vec()).wait_when_full());
    }
    let mut echoed = Vec::new();
    while echoed.len() < data.len() {
        let event = tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .expect("echo within 30 s")
            .expect("subscriber alive");
        match event {
            SocketEventKind::Received(bytes) => echoed.extend_from_slice(&bytes),
            other => panic!("unexpected event before the echo was complete: {other:?}"),
        }
    }
    assert!(echoed == data, "the echo differs from what was sent");

    client.do_send(Close::Graceful);
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("closed within 10 s")
            .expect("subscriber alive");
        if let SocketEventKind::Closed { cause } = event {
            assert!(cause.is_none());
            break;
        }
    }

    listener.send(StopListening).await.expect("listener");
    let closed = tokio::time::timeout(Duration::from_secs(10), heard.recv())
        .await
        .expect("closed within 10 s")
        .expect("subscriber alive");
    assert!(matches!(closed, ListenerEvent::Closed));
    // The transport removes the path once the handle is closed.
    for _ in 0..100 {
        if !path.0.exists() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        !path.0.exists(),
        "the socket file is removed when listening stops"
    );
}

#[actix::test]
async fn connecting_to_a_unix_path_nobody_listens_on_fails() {
    let path = TempPath::new("nobody.sock");
    let error = Socket::builder()
        .connect(Address::Unix(path.0.clone()))
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(
            &error,
            sockactor::SocketError::Connect(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound)
        ),
        "{error:?}"
    );
}

#[actix::test]
async fn one_end_of_a_unix_stream_pair_is_adopted_and_carries_bytes_both_ways() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, mut theirs) = tokio::net::UnixStream::pair().expect("a pair");
    let (subscriber, mut events) = channel_subscriber();
    let socket = Socket::builder()
        .subscriber(subscriber)
        .adopt(ours)
        .await
        .expect("adopted");
    let info = socket
        .send(sockactor::messages::GetInfo)
        .await
        .expect("info");
    assert_eq!(
        info.peer,
        Some(Address::Unix(PathBuf::new())),
        "an unnamed peer"
    );
    let data = pattern(100_000, 21);
    socket
        .send(Write::new(data.clone()))
        .await
        .expect("mailbox")
        .expect("written");
    let mut got = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(10), theirs.read_exact(&mut got))
        .await
        .expect("within 10 s")
        .expect("read");
    assert!(got == data, "our bytes arrive byte-exact");
    theirs.write_all(b"and back").await.expect("write");
    let mut back = Vec::new();
    while back.len() < 8 {
        match tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("within 10 s")
            .expect("subscriber alive")
        {
            SocketEventKind::Received(bytes) => back.extend_from_slice(&bytes),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(back, b"and back");
    socket.do_send(Close::Graceful);
    let mut rest = Vec::new();
    theirs.read_to_end(&mut rest).await.expect("EOF");
    assert!(rest.is_empty());
}

/// A Unix listener on an arbiter of a `SocketSystem` that shuts down (its actors dropped
/// without stopping): the path is removed all the same, and a listener bound again on it
/// after a restart works.
#[actix::test]
async fn a_unix_listeners_path_is_removed_when_its_system_shuts_down() {
    let path = TempPath::new("shutdown.sock");
    let system = sockactor::SocketSystem::builder()
        .arbiters(1)
        .start()
        .expect("start");
    let bound = path.0.clone();
    let (_listener, _) = system
        .run_on(0, move || async move {
            Listener::builder().bind(Address::Unix(bound)).await
        })
        .await
        .expect("on the arbiter")
        .expect("bind");
    assert!(path.0.exists());
    system.shutdown().await.expect("shutdown");
    assert!(!path.0.exists(), "the path is removed at the shutdown");
    let (again, _) = Listener::builder()
        .bind(Address::Unix(path.0.clone()))
        .await
        .expect("bound again after the restart");
    again.do_send(StopListening);
}

/// An empty Unix path is a typed bind error, for a listener and a datagram socket (the
/// kernel would bind a hidden name nobody could reach, reported as the empty path).
#[actix::test]
async fn an_empty_unix_path_is_a_bind_error() {
    let listener = Listener::builder()
        .bind(Address::Unix(PathBuf::new()))
        .await;
    assert!(
        matches!(listener, Err(sockactor::SocketError::Bind(_))),
        "{:?}",
        listener.map(|(_, local)| local)
    );
    let datagrams = sockactor::DatagramSocket::builder()
        .bind(Address::Unix(PathBuf::new()))
        .await;
    assert!(
        matches!(datagrams, Err(sockactor::SocketError::Bind(_))),
        "{:?}",
        datagrams.map(|(_, local)| local)
    );
}
