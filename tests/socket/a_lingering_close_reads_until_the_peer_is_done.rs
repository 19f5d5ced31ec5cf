//! A graceful close shuts down the sending half once every queued write has gone out.
//! With `close_linger`, the socket then reads on until the peer's EOF: what the peer
//! sends after it saw our EOF still reaches the subscriber, and only then does the
//! handle close. A peer that never closes its side is waited for at most the linger time.

use std::time::Duration;

use crate::support::{lingering, Recorder};
use sockactor::messages::{Close, SocketEventKind, Write};
use sockactor::Socket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn until(deadline: tokio::time::Instant, what: &str, done: impl Fn() -> bool) {
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[actix::test]
async fn data_the_peer_sends_after_our_eof_reaches_the_subscriber_before_the_close() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let recorder = Recorder::default();
    let socket = Socket::builder()
        .config(lingering(Duration::from_secs(30)))
        .subscriber(recorder.start().recipient())
        .connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (mut peer, _) = listener.accept().await.expect("accept");

    socket.do_send(Write::new(&b"bye"[..]));
    socket.do_send(Close::Graceful);
    // The peer reads our last bytes, then our EOF: the sending half is shut down.
    let mut got = Vec::new();
    peer.read_to_end(&mut got).await.expect("read to EOF");
    assert_eq!(got, b"bye");

    // The socket is still reading: the peer's answer arrives, then its EOF, then the close.
    peer.write_all(b"late reply").await.expect("peer write");
    peer.shutdown().await.expect("peer shutdown");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    until(deadline, "no Closed event", || {
        recorder.count(|e| matches!(e, SocketEventKind::Closed { cause: None })) == 1
    })
    .await;
    assert_eq!(recorder.received(), b"late reply");
    let kinds: Vec<&'static str> = recorder.picked(|e| match e {
        SocketEventKind::Eof => Some("eof"),
        SocketEventKind::Closed { .. } => Some("closed"),
        _ => None,
    });
    assert_eq!(
        kinds,
        ["eof", "closed"],
        "the peer's EOF completes the close"
    );
}

#[actix::test]
async fn a_peer_that_keeps_its_side_open_is_waited_for_at_most_the_linger_time() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let recorder = Recorder::default();
    let socket = Socket::builder()
        .config(lingering(Duration::from_millis(100)))
        .subscriber(recorder.start().recipient())
        .connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (mut peer, _) = listener.accept().await.expect("accept");
    socket.do_send(Close::Graceful);
    let mut got = Vec::new();
    peer.read_to_end(&mut got).await.expect("our EOF");
    assert!(got.is_empty());
    // The peer neither writes nor closes: the linger time runs out and the socket closes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    until(deadline, "the linger time never ended the close", || {
        recorder.count(|e| matches!(e, SocketEventKind::Closed { cause: None })) == 1
    })
    .await;
    assert_eq!(recorder.count(|e| matches!(e, SocketEventKind::Eof)), 0);
}

#[actix::test]
async fn without_a_linger_time_the_close_shuts_down_the_sending_half_then_closes_at_once() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let recorder = Recorder::default();
    let socket = Socket::builder()
        .subscriber(recorder.start().recipient())
        .connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (mut peer, _) = listener.accept().await.expect("accept");
    socket.do_send(Write::new(&b"last"[..]));
    socket.do_send(Close::Graceful);
    let mut got = Vec::new();
    peer.read_to_end(&mut got).await.expect("our EOF");
    assert_eq!(got, b"last");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    until(deadline, "no Closed event", || {
        recorder.count(|e| matches!(e, SocketEventKind::Closed { cause: None })) == 1
    })
    .await;
}
