//! A socket whose writes go through messages (a mock, a filter) shuts down its sending
//! half when a graceful close has drained, if its table has the `shutdown` operation,
//! and then lingers like an in-place socket: what the peer sends after our EOF still
//! reaches the subscriber, and the handle closes at the peer's EOF (or the linger time).
//! A filter passes the shutdown on after handing on what it holds; a table without
//! the operation closes at once, as before.

use std::time::Duration;

use crate::support::{lingering, mock_peer, run_paused, settle, Recorder};
use sockactor::filters::{FaultInjector, Faults};
use sockactor::messages::{Close, Handle, SocketEventKind, Write};
use sockactor::{MockTransport, Socket, SocketFunctions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn on_a_mock_with_shutdown_the_close_shuts_the_sending_half_then_reads_until_eof() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions_with_shutdown())
            .config(lingering(Duration::from_secs(30)))
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        socket.do_send(Write::new(&b"bye"[..]));
        socket.do_send(Close::Graceful);
        settle().await;
        assert!(
            mock.is_shut_down(Handle(1)),
            "the sending half is shut down"
        );
        assert!(
            !mock.is_closed(Handle(1)),
            "lingering: still open for reading"
        );
        assert_eq!(mock.written(Handle(1)), b"bye");
        mock.push_inbound(Handle(1), &b"late reply"[..]);
        settle().await;
        assert_eq!(recorder.received(), b"late reply");
        assert!(!mock.is_closed(Handle(1)));
        mock.push_eof(Handle(1));
        settle().await;
        assert!(mock.is_closed(Handle(1)), "closed at the peer's EOF");
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Closed { cause: None })),
            1
        );
    });
}

#[test]
fn through_a_filter_the_shutdown_is_passed_on_and_the_linger_time_bounds_the_wait() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let functions =
            FaultInjector::new(1, Faults::default()).wrap(mock.functions_with_shutdown());
        assert!(
            functions.shutdown().is_some(),
            "the filter's table has it too"
        );
        let socket = Socket::builder()
            .functions(functions)
            .config(lingering(Duration::from_secs(5)))
            .subscriber(Recorder::default().start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        socket.do_send(Write::new(&b"last words"[..]));
        socket.do_send(Close::Graceful);
        settle().await;
        assert!(mock.is_shut_down(Handle(1)));
        assert!(!mock.is_closed(Handle(1)));
        // The peer neither writes nor closes: the linger time ends the wait.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(mock.is_closed(Handle(1)));
        assert_eq!(mock.written(Handle(1)), b"last words");
    });
}

#[test]
fn without_the_operation_or_a_linger_time_the_close_is_immediate() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let plain = Socket::builder()
            .functions(mock.functions())
            .config(lingering(Duration::from_secs(30)))
            .subscriber(Recorder::default().start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        plain.do_send(Close::Graceful);
        settle().await;
        assert!(!mock.is_shut_down(Handle(1)), "no shutdown in this table");
        assert!(mock.is_closed(Handle(1)));

        let no_linger = Socket::builder()
            .functions(mock.functions_with_shutdown())
            .subscriber(Recorder::default().start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        no_linger.do_send(Close::Graceful);
        settle().await;
        assert!(mock.is_shut_down(Handle(2)));
        assert!(mock.is_closed(Handle(2)), "shut down, then closed at once");
    });
}

#[actix::test]
async fn a_filtered_socket_over_real_tcp_reads_the_peers_late_reply_after_our_eof() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let recorder = Recorder::default();
    let socket = Socket::builder()
        .functions(FaultInjector::new(2, Faults::default()).wrap(SocketFunctions::system()))
        .config(lingering(Duration::from_secs(30)))
        .subscriber(recorder.start().recipient())
        .connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (mut peer, _) = listener.accept().await.expect("accept");
    socket.do_send(Write::new(&b"bye"[..]));
    socket.do_send(Close::Graceful);
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), peer.read_to_end(&mut got))
        .await
        .expect("our EOF within 10 s")
        .expect("read to EOF");
    assert_eq!(got, b"bye");
    peer.write_all(b"late reply").await.expect("peer write");
    peer.shutdown().await.expect("peer shutdown");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while recorder.count(|e| matches!(e, SocketEventKind::Closed { .. })) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no Closed event");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(recorder.received(), b"late reply", "read while lingering");
}
