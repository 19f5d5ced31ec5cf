//! `SocketSystem::adopt`: streams accepted on the test's thread are handed to the
//! arbiters (round-robin), re-registered with their reactors, and carry data both ways
//! byte-exact.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::support::{channel_subscriber, pattern};
use sockactor::messages::{Close, SocketEventKind, Write};
use sockactor::{Socket, SocketSystem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONNECTIONS: usize = 8;

#[actix::test]
async fn accepted_streams_adopted_onto_two_arbiters_carry_data_both_ways() {
    let system = SocketSystem::builder().arbiters(2).start().expect("start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let placed = Arc::new(Mutex::new(Vec::new()));

    for index in 0..CONNECTIONS {
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let accepted = accepted.into_std().expect("a std stream");
        let (subscriber, mut events) = channel_subscriber();
        let placed_here = placed.clone();
        let socket = system
            .adopt(accepted, move || {
                placed_here
                    .lock()
                    .expect("lock")
                    .push(thread::current().id());
                Socket::builder().subscriber(subscriber)
            })
            .await
            .expect("adopted on an arbiter");

        // Client to adopted socket, then EOF.
        let up = pattern(50_000 + index * 31, index as u64 + 1);
        client.write_all(&up).await.expect("client write");
        client.shutdown().await.expect("client write half closed");
        let mut arrived = Vec::new();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("event within 10 s")
                .expect("subscriber alive");
            match event {
                SocketEventKind::Received(bytes) => arrived.extend_from_slice(&bytes),
                SocketEventKind::Eof => break,
                other => panic!("connection {index}: unexpected {other:?}"),
            }
        }
        assert!(arrived == up, "connection {index}: inbound stream differs");

        // Adopted socket to client, then close.
        let down = pattern(70_000 + index * 17, index as u64 + 100);
        let written = socket
            .send(Write::new(down.clone()))
            .await
            .expect("socket alive")
            .expect("written");
        assert_eq!(written.len, down.len());
        socket.do_send(Close::Graceful);
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut back))
            .await
            .expect("EOF within 10 s")
            .expect("client read");
        assert!(back == down, "connection {index}: outbound stream differs");
    }

    let placed = placed.lock().expect("lock").clone();
    for thread in system.thread_ids() {
        assert_eq!(
            placed.iter().filter(|t| *t == thread).count(),
            CONNECTIONS / 2,
            "each arbiter adopted an equal share"
        );
    }
    system.shutdown().await.expect("clean shutdown");
}
