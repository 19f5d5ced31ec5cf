//! A socket that reads in place waits on the reactor with a future spawned in its own
//! context, and actix keeps an actor with spawned futures alive. Dropping every address
//! must still close it: the queued write goes out, then the peer sees EOF, and the
//! subscriber hears `Closed`. The same for a socket whose transport, reached by
//! message, never answers the read or the transmit it has out: the call's own future
//! notices the last address gone.

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

/// A transport call that is never answered (a silent transport).
struct Silent;

impl actix::Actor for Silent {
    type Context = actix::Context<Self>;
}

impl actix::Handler<sockactor::messages::RecvFrom> for Silent {
    type Result =
        actix::ResponseFuture<Result<sockactor::messages::Received, sockactor::TransportError>>;
    fn handle(
        &mut self,
        _: sockactor::messages::RecvFrom,
        _: &mut actix::Context<Self>,
    ) -> Self::Result {
        Box::pin(std::future::pending())
    }
}

impl actix::Handler<sockactor::messages::SendV> for Silent {
    type Result =
        actix::ResponseFuture<Result<sockactor::messages::Sent, sockactor::TransportError>>;
    fn handle(
        &mut self,
        _: sockactor::messages::SendV,
        _: &mut actix::Context<Self>,
    ) -> Self::Result {
        Box::pin(std::future::pending())
    }
}

/// Reading by message with a read out that is never answered: dropping every address
/// still closes the socket's handle at once (nothing is queued).
#[test]
fn dropping_every_address_with_a_read_never_answered_closes_the_handle() {
    use actix::Actor;
    crate::support::run_paused(|| async {
        let mock = sockactor::MockTransport::start();
        let recorder = Recorder::default();
        let silent = Silent.start();
        let socket = Socket::builder()
            .functions(mock.functions().with_recvfrom(silent.recipient()))
            .subscriber(recorder.start().recipient())
            .connect(crate::support::mock_peer())
            .await
            .expect("connect");
        crate::support::settle().await;
        drop(socket);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            mock.is_closed(sockactor::messages::Handle(1)),
            "the handle is closed"
        );
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Closed { .. })),
            1
        );
    });
}

/// A transmit out that is never answered, with a drain timeout: dropping every address
/// starts the graceful close, the drain timeout turns it into an abort, and 10 s later
/// the write is answered and the handle closed.
#[test]
fn dropping_every_address_with_a_transmit_never_answered_ends_within_the_drain_and_grace() {
    use actix::Actor;
    crate::support::run_paused(|| async {
        let mock = sockactor::MockTransport::start();
        let recorder = Recorder::default();
        let silent = Silent.start();
        let socket = Socket::builder()
            .functions(mock.functions().with_sendv(silent.recipient()))
            .config(sockactor::SocketConfig {
                drain_timeout: Some(Duration::from_secs(2)),
                ..sockactor::SocketConfig::default()
            })
            .subscriber(recorder.start().recipient())
            .connect(crate::support::mock_peer())
            .await
            .expect("connect");
        socket.do_send(Write::new(vec![5u8; 100]).tag(1));
        crate::support::settle().await;
        drop(socket);
        tokio::time::sleep(Duration::from_secs(13)).await;
        assert!(
            mock.is_closed(sockactor::messages::Handle(1)),
            "the handle is closed"
        );
        let failed = recorder.picked(|e| match e {
            SocketEventKind::WriteFailed { tag, error } => Some((*tag, error.bytes_sent())),
            _ => None,
        });
        assert_eq!(failed, [(Some(1), 0)]);
    });
}
