//! A socket that reads in place waits on the reactor with a future spawned in its own
//! context, and actix keeps an actor with spawned futures alive. Dropping every address
//! must still close it: the queued write goes out, then the peer sees EOF, and the
//! subscriber hears `Closed`.

use std::time::Duration;

use crate::support::Recorder;
use sockactor::messages::{SocketEventKind, Write};
use sockactor::Socket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[actix::test]
async fn dropping_every_address_of_a_reading_socket_drains_then_closes_it() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let recorder = Recorder::default();
    let socket = Socket::builder()
        .subscriber(recorder.start().recipient())
        .connect(addr)
        .await
        .expect("connect");
    let (mut peer, _) = listener.accept().await.expect("accept");

    // The socket is reading: it got the peer's bytes and waits for more on the reactor.
    peer.write_all(b"hello").await.expect("peer write");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while recorder.received() != b"hello" {
        assert!(tokio::time::Instant::now() < deadline, "nothing received");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    socket.do_send(Write::new(&b"goodbye"[..]));
    drop(socket);

    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), peer.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the peer never saw EOF: the socket outlived its addresses"
    );
    assert_eq!(
        got, b"goodbye",
        "the queued write went out before the close"
    );
    while recorder.count(|e| matches!(e, SocketEventKind::Closed { cause: None })) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no Closed event");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
