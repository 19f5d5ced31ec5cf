//! A user byte layer that breaks its contract still leaves every promise standing: a
//! worst case past the outbox's bound still lets writes through (an empty outbox takes a
//! turn); a `decode` that keeps answering `More` without progress is a typed read error,
//! not a spinning thread; answers of its own (`poll_output`) for a peer that sends
//! without reading hold reading at twice the outbox's bound instead of growing it; a
//! failing `poll_output` comes after the plaintext decoded before it.

use std::time::Duration;

use crate::support::layers::Unruly;
use crate::support::{mock_peer, run_paused, settle, Recorder};
use sockactor::messages::{Handle, SocketEventKind, Write};
use sockactor::{MockTransport, SendStep, Socket, SocketFunctions};

fn with(mock: &MockTransport, how: Unruly) -> SocketFunctions {
    how.on(mock.functions())
}

async fn socket(functions: SocketFunctions, recorder: &Recorder) -> actix::Addr<Socket> {
    Socket::builder()
        .functions(functions)
        .subscriber(recorder.start().recipient())
        .connect(mock_peer())
        .await
        .expect("connect")
}

fn read_failures(recorder: &Recorder) -> Vec<String> {
    recorder.picked(|e| match e {
        SocketEventKind::ReadFailed(e) => Some(e.to_string()),
        _ => None,
    })
}

#[test]
fn a_worst_case_past_the_outbox_still_lets_writes_through() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let how = Unruly {
            overhead: 200 * 1024,
            ..Unruly::default()
        };
        let socket = socket(with(&mock, how), &recorder).await;
        let answer = tokio::time::timeout(
            Duration::from_secs(60),
            socket.send(Write::new(&b"hello"[..])),
        )
        .await
        .expect("answered")
        .expect("mailbox");
        assert_eq!(answer.expect("written").len, 5);
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"hello");
    });
}

#[test]
fn a_decode_answering_more_without_progress_is_a_typed_read_error() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let how = Unruly {
            stuck: true,
            ..Unruly::default()
        };
        let _socket = socket(with(&mock, how), &recorder).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"hello"[..]);
        for _ in 0..8 {
            settle().await;
        }
        let failures = read_failures(&recorder);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("without progress"), "{failures:?}");
        assert!(mock.is_closed(Handle(1)));
    });
}

#[test]
fn answers_of_its_own_hold_reading_at_twice_the_outbox_bound() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let recorder = Recorder::default();
        let how = Unruly {
            ack: true,
            ..Unruly::default()
        };
        let socket = socket(with(&mock, how), &recorder).await;
        // A write the transport holds: nothing leaves the outbox meanwhile.
        socket.do_send(Write::new(&b"x"[..]));
        settle().await;
        let sent: usize = 2 << 20;
        for _ in 0..sent / (64 * 1024) {
            mock.push_inbound(Handle(1), vec![b'p'; 64 * 1024]);
            for _ in 0..4 {
                settle().await;
            }
        }
        let read_while_held = recorder.received().len();
        assert!(
            read_while_held <= 2 * 128 * 1024 + 64 * 1024,
            "{read_while_held} bytes read and answered while nothing could leave"
        );
        // Room again: reading goes on, and everything is read and answered.
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        for _ in 0..64 {
            settle().await;
        }
        assert_eq!(recorder.received().len(), sent);
        assert_eq!(
            mock.written(Handle(1)).len(),
            1 + sent,
            "the write and every answer"
        );
    });
}

#[test]
fn a_failing_poll_output_comes_after_the_plaintext_before_it() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let how = Unruly {
            poll_fails: true,
            ..Unruly::default()
        };
        let _socket = socket(with(&mock, how), &recorder).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"hello"[..]);
        for _ in 0..8 {
            settle().await;
        }
        assert_eq!(recorder.received(), b"hello");
        assert_eq!(read_failures(&recorder).len(), 1);
    });
}
