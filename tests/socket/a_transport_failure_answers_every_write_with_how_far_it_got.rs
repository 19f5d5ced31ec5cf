//! A fatal transport error answers the write in flight with the bytes it got out, and
//! every write queued behind it; later writes get the same typed error at once; writes
//! sent fire-and-forget report their failure to the subscriber; the handle is closed.

use std::io;
use std::time::Duration;

use crate::support::{
    mock_peer, mock_socket, run_paused, settle, subscribed_mock_socket, Recorder,
};
use bytes::Bytes;
use sockactor::messages::{Handle, SocketEventKind, Write};
use sockactor::{MockTransport, SendStep, Socket, SocketError, WriteError};

#[test]
fn a_reset_fails_the_write_in_flight_and_everything_behind_it() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(4),
                SendStep::Fail(io::ErrorKind::ConnectionReset),
            ],
        );
        let recorder = Recorder::default();
        let socket = subscribed_mock_socket(&mock, recorder.start().recipient()).await;
        let first = actix::spawn(socket.send(Write::new(&b"abcdefgh"[..])));
        let second = actix::spawn(socket.send(Write::new(&b"ijkl"[..])));
        socket.do_send(Write::new(&b"fire and forget"[..]).tag(99));
        match first.await.expect("join").expect("mailbox") {
            Err(WriteError::Transport {
                bytes_sent,
                len,
                source,
                ..
            }) => {
                assert_eq!((bytes_sent, len), (4, 8));
                assert_eq!(source.io_kind(), Some(io::ErrorKind::ConnectionReset));
            }
            other => panic!("expected a transport error, got {other:?}"),
        }
        match second.await.expect("join").expect("mailbox") {
            Err(e @ WriteError::Transport { .. }) => assert_eq!(e.bytes_sent(), 0),
            other => panic!("expected a transport error, got {other:?}"),
        }
        // A write after the failure gets the same typed error, not a mailbox error.
        let late = socket.send(Write::new(Bytes::from_static(b"late"))).await;
        assert!(matches!(
            late,
            Ok(Err(WriteError::Transport {
                bytes_sent: 0,
                len: 4,
                ..
            }))
        ));
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"abcd");
        assert!(mock.is_closed(Handle(1)));
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::WriteFailed { tag: Some(99), .. })),
            1,
            "the fire-and-forget write's failure reaches the subscriber"
        );
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Closed { cause: Some(_) })),
            1
        );
    });
}

#[test]
fn a_transport_that_breaks_the_sendv_contract_is_a_typed_error() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(0)]);
        let socket = mock_socket(&mock).await;
        let answer = socket.send(Write::new(&b"xyz"[..])).await.expect("mailbox");
        assert!(matches!(
            answer,
            Err(WriteError::Transport {
                bytes_sent: 0,
                len: 3,
                ..
            })
        ));
    });
}

#[test]
fn a_refused_connect_is_a_typed_error() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.fail_connect(mock_peer(), io::ErrorKind::ConnectionRefused);
        let result = Socket::builder()
            .functions(mock.functions())
            .connect(mock_peer())
            .await;
        match result {
            Err(SocketError::Refused(e)) => {
                assert_eq!(e.io_kind(), Some(io::ErrorKind::ConnectionRefused))
            }
            other => panic!("expected a refused connect, got {other:?}"),
        }
        settle().await;
        assert!(
            mock.is_closed(Handle(1)),
            "the opened handle is closed again"
        );
    });
}

#[actix::test]
async fn a_refused_loopback_connect_is_a_typed_error() {
    // Bind then drop to find a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe port")
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    match Socket::builder().connect(addr).await {
        Err(SocketError::Refused(e)) => {
            assert_eq!(e.io_kind(), Some(io::ErrorKind::ConnectionRefused))
        }
        other => panic!("expected a refused connect, got {other:?}"),
    }
}

#[test]
fn refused_unreachable_and_timed_out_connects_are_distinct_errors() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let unreachable: std::net::SocketAddr = "127.0.0.1:10".parse().expect("addr");
        let silent: std::net::SocketAddr = "127.0.0.1:11".parse().expect("addr");
        let os_timeout: std::net::SocketAddr = "127.0.0.1:12".parse().expect("addr");
        mock.fail_connect(unreachable, io::ErrorKind::HostUnreachable);
        mock.delay_connect(silent, Duration::from_secs(3600));
        mock.fail_connect(os_timeout, io::ErrorKind::TimedOut);
        let connect = |addr| {
            Socket::builder()
                .functions(mock.functions())
                .connect_timeout(Duration::from_secs(5))
                .connect(addr)
        };
        assert!(matches!(
            connect(unreachable).await,
            Err(SocketError::Unreachable(_))
        ));
        let started = tokio::time::Instant::now();
        match connect(silent).await {
            Err(SocketError::TimedOut(after)) => assert_eq!(after, Duration::from_secs(5)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(5),
            "gave up at the timeout"
        );
        assert!(matches!(
            connect(os_timeout).await,
            Err(SocketError::TimedOut(_))
        ));
        settle().await;
        for h in mock.handles() {
            assert!(
                mock.is_closed(h),
                "handle {h} closed after its failed connect"
            );
        }
    });
}

/// `do_send` writes are known to be fire-and-forget only after their handler returned,
/// and then join one queue entry: a failure must still report each of them, in order,
/// with its own length and how much of it got out.
#[test]
fn a_failure_in_a_burst_of_do_send_writes_reports_each_with_how_far_it_got() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let lens: Vec<usize> = [5, 5, 5, 3, 3, 7, 5, 5, 1, 9, 9, 9]
            .into_iter()
            .cycle()
            .take(60)
            .collect();
        let total: usize = lens.iter().sum();
        let cut = total / 2 + 2;
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(cut),
                SendStep::Fail(io::ErrorKind::ConnectionReset),
            ],
        );
        let recorder = Recorder::default();
        let socket = subscribed_mock_socket(&mock, recorder.start().recipient()).await;
        let mut all = Vec::new();
        let mut answered = None;
        for (i, &len) in lens.iter().enumerate() {
            let bytes = crate::support::pattern(len, i as u64);
            all.extend_from_slice(&bytes);
            if i == 30 {
                // One answered write in the middle: its neighbours' runs end at it.
                answered = Some((actix::spawn(socket.send(Write::new(bytes))), len));
            } else {
                socket.do_send(Write::new(bytes));
            }
        }
        let (answer, answer_len) = answered.expect("the answered write");
        let answer = answer.await.expect("join").expect("mailbox");
        settle().await;
        assert_eq!(
            mock.written(Handle(1)),
            all[..cut],
            "the bytes accepted, in order"
        );

        // What each write should have got out of the `cut` accepted bytes.
        let mut at = 0;
        let expected: Vec<(usize, usize)> = lens
            .iter()
            .map(|&len| {
                let sent = cut.saturating_sub(at).min(len);
                at += len;
                (sent, len)
            })
            .collect();
        let failed = untagged_transport_failures(&recorder);
        let unanswered: Vec<(usize, usize)> = expected
            .iter()
            .enumerate()
            .filter(|&(i, &(sent, len))| i != 30 && sent < len)
            .map(|(_, &e)| e)
            .collect();
        assert_eq!(
            failed, unanswered,
            "every fire-and-forget write that did not get out whole is reported, in order"
        );
        match answer {
            Err(WriteError::Transport {
                bytes_sent, len, ..
            }) => {
                assert_eq!((bytes_sent, len), expected[30]);
            }
            Ok(written) => {
                assert_eq!(expected[30], (answer_len, answer_len), "answered done");
                assert_eq!(written.len, answer_len);
            }
            other => panic!("expected the write's own answer, got {other:?}"),
        }
    });
}

/// `do_send` writes refused by a socket that already failed are reported in the order
/// they were sent (their reports once went through a message to self each, which actix
/// may handle out of order).
#[test]
fn do_send_writes_refused_after_a_failure_are_reported_in_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Fail(io::ErrorKind::ConnectionReset)]);
        let recorder = Recorder::default();
        let socket = subscribed_mock_socket(&mock, recorder.start().recipient()).await;
        socket.do_send(Write::new(vec![1u8; 40]));
        settle().await;
        let late = [8usize, 3, 8, 5, 1, 7];
        for len in late {
            socket.do_send(Write::new(vec![2u8; len]));
        }
        settle().await;
        let reported: Vec<usize> = untagged_transport_failures(&recorder)
            .into_iter()
            .map(|(_, len)| len)
            .collect();
        assert_eq!(reported[0], 40, "the write the reset failed");
        assert_eq!(reported[1..], late, "every later write, in the order sent");
    });
}

/// `bytes_sent` and `len` of each untagged write failure the subscriber heard of, in
/// order; any other kind of write failure fails the test.
fn untagged_transport_failures(recorder: &Recorder) -> Vec<(usize, usize)> {
    recorder.picked(|e| match e {
        SocketEventKind::WriteFailed {
            tag: None,
            error: WriteError::Transport {
                bytes_sent, len, ..
            },
        } => Some((*bytes_sent, *len)),
        SocketEventKind::WriteFailed { error, .. } => {
            panic!("an untagged transport failure expected, got {error:?}")
        }
        _ => None,
    })
}
