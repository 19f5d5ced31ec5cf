//! The peer's EOF is a documented choice (`SocketConfig::close_on_eof`): by default the
//! subscriber hears `Eof` and the socket stays open for writes (half-open) until `Close`;
//! with `close_on_eof` it closes gracefully at the EOF, sending the writes already queued
//! first, and the subscriber hears `Closed` after `Eof`.

use std::time::Duration;

use crate::support::{mock_peer, run_paused, settle, Recorder};
use bytes::Bytes;
use sockactor::messages::{Close, GetInfo, Handle, SocketEventKind, Write};
use sockactor::{MockTransport, SendStep, Socket, SocketConfig};

async fn socket(
    mock: &MockTransport,
    close_on_eof: bool,
    recorder: &Recorder,
) -> actix::Addr<Socket> {
    Socket::builder()
        .functions(mock.functions())
        .config(SocketConfig {
            close_on_eof,
            ..SocketConfig::default()
        })
        .subscriber(recorder.start().recipient())
        .connect(mock_peer())
        .await
        .expect("connect")
}

fn kinds(recorder: &Recorder) -> Vec<&'static str> {
    recorder
        .events
        .lock()
        .expect("lock")
        .iter()
        .map(|e| match e {
            SocketEventKind::Received(_) => "received",
            SocketEventKind::Eof => "eof",
            SocketEventKind::Closed { .. } => "closed",
            _ => "other",
        })
        .collect()
}

#[test]
fn by_default_the_socket_stays_open_for_writes_after_the_peers_eof() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let socket = socket(&mock, false, &recorder).await;
        assert!(
            !SocketConfig::default().close_on_eof,
            "the default keeps the socket"
        );
        mock.push_inbound(Handle(1), b"request".to_vec());
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(kinds(&recorder), ["received", "eof"]);
        assert!(socket.send(GetInfo).await.expect("info").open, "still open");
        // The answer still goes out on the half-open socket.
        socket
            .send(Write::new(Bytes::from_static(b"answer")))
            .await
            .expect("mailbox")
            .expect("written");
        assert_eq!(mock.written(Handle(1)), b"answer");
        socket.do_send(Close::Graceful);
        settle().await;
        assert_eq!(kinds(&recorder), ["received", "eof", "closed"]);
        assert!(mock.is_closed(Handle(1)));
    });
}

#[test]
fn with_close_on_eof_the_socket_sends_what_is_queued_then_closes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let socket = socket(&mock, true, &recorder).await;
        // A write held by the transport when the EOF comes: it still goes out whole.
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let answer = socket.send(Write::new(Bytes::from_static(b"last words")));
        let answer = tokio::spawn(answer);
        settle().await;
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(kinds(&recorder), ["eof"], "not closed while a write is out");
        mock.release(Handle(1));
        answer
            .await
            .expect("task")
            .expect("mailbox")
            .expect("the queued write is sent before the close");
        for _ in 0..100 {
            settle().await;
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(kinds(&recorder), ["eof", "closed"]);
        assert_eq!(mock.written(Handle(1)), b"last words");
        assert!(mock.is_closed(Handle(1)));
    });
}
