//! `SocketBuilder::adopt` takes std streams as well as tokio's: a blocking std TCP stream
//! (from a std listener on loopback) and one end of a std `UnixStream::pair` are made
//! non-blocking, carry a write out and the peer's bytes in, and report their peer.

use std::io::{Read, Write as _};

use crate::support::{channel_subscriber, local};
use bytes::Bytes;
use sockactor::messages::{Close, GetInfo, SocketEventKind, Write};
use sockactor::Socket;

async fn received(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<SocketEventKind>,
    n: usize,
) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        match events.recv().await.expect("events") {
            SocketEventKind::Received(bytes) => got.extend_from_slice(&bytes),
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

#[actix::test]
async fn a_std_tcp_stream_is_adopted_and_carries_bytes_both_ways() {
    let listener = std::net::TcpListener::bind(local()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = std::net::TcpStream::connect(addr).expect("connect");
    let (mut peer, _) = listener.accept().expect("accept");
    let (subscriber, mut events) = channel_subscriber();
    let socket = Socket::builder()
        .subscriber(subscriber)
        .adopt(client)
        .await
        .expect("a std stream is adopted");
    let info = socket.send(GetInfo).await.expect("info");
    assert_eq!(info.peer, Some(addr.into()));
    assert!(info.in_place);
    socket
        .send(Write::new(Bytes::from_static(b"ping")))
        .await
        .expect("mailbox")
        .expect("written");
    let mut buf = [0u8; 4];
    peer.read_exact(&mut buf).expect("the peer reads");
    assert_eq!(&buf, b"ping");
    peer.write_all(b"pong").expect("the peer writes");
    assert_eq!(received(&mut events, 4).await, b"pong");
    socket.do_send(Close::Graceful);
}

#[cfg(unix)]
#[actix::test]
async fn a_std_unix_stream_is_adopted_and_carries_bytes_both_ways() {
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
    let (subscriber, mut events) = channel_subscriber();
    let socket = Socket::builder()
        .subscriber(subscriber)
        .adopt(ours)
        .await
        .expect("a std unix stream is adopted");
    socket
        .send(Write::new(Bytes::from_static(b"hello")))
        .await
        .expect("mailbox")
        .expect("written");
    let mut buf = [0u8; 5];
    theirs.read_exact(&mut buf).expect("the peer reads");
    assert_eq!(&buf, b"hello");
    theirs.write_all(b"there").expect("the peer writes");
    assert_eq!(received(&mut events, 5).await, b"there");
    socket.do_send(Close::Graceful);
}
