//! The minimal read path: inbound bytes reach the subscriber in order, then EOF; the
//! socket can still write after the peer's EOF (half-close); a read error is reported
//! and closes the socket.

use std::io;

use crate::support::{mock_peer, run_paused, settle, subscribed_mock_socket, Recorder};
use sockactor::messages::{Handle, SocketEventKind, Write};
use sockactor::{MockTransport, Socket, SocketConfig};

#[test]
fn data_then_eof_arrive_in_order_and_writing_goes_on() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(SocketConfig {
                read_chunk: 4,
                ..SocketConfig::default()
            })
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), &b"hello "[..]);
        settle().await;
        mock.push_inbound(Handle(1), &b"world"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(recorder.received(), b"hello world");
        assert_eq!(recorder.count(|e| matches!(e, SocketEventKind::Eof)), 1);
        socket
            .send(Write::new(&b"still writing"[..]))
            .await
            .expect("mailbox")
            .expect("written after the peer's EOF");
        assert_eq!(mock.written(Handle(1)), b"still writing");
    });
}

#[test]
fn a_read_error_is_reported_and_closes_the_socket() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let _socket = subscribed_mock_socket(&mock, recorder.start().recipient()).await;
        settle().await;
        mock.push_read_error(Handle(1), io::ErrorKind::ConnectionReset);
        settle().await;
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::ReadFailed(_))),
            1
        );
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Closed { cause: Some(_) })),
            1
        );
        assert!(mock.is_closed(Handle(1)));
    });
}
