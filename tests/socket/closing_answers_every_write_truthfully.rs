//! Closing answers every write, and truthfully: a graceful close sends what is queued,
//! writes that waited for room included; an abort while a `sendv` is still out waits
//! for its answer so each error says how many bytes really went out, but not for ever: a
//! transport that never answers holds those writes 10 s at most after the close (abort
//! or drain timeout); writes after the close get a typed error, not a mailbox error.

use std::time::Duration;

use crate::support::{mock_peer, mock_socket, run_paused, settle, watermarks, Recorder};
use actix::prelude::*;
use sockactor::messages::{Close, Handle, SendV, Sent, SocketEventKind, Write};
use sockactor::{MockTransport, SendStep, Socket, SocketConfig, TransportError, WriteError};

#[test]
fn a_graceful_close_sends_everything_including_writes_waiting_for_room() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let recorder = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(watermarks(10, 0))
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let queued = actix::spawn(socket.send(Write::new(vec![1u8; 10])));
        settle().await;
        let waiting = actix::spawn(socket.send(Write::new(vec![2u8; 5]).wait_when_full()));
        settle().await;
        socket.do_send(Close::Graceful);
        let late = socket
            .send(Write::new(vec![3u8; 5]))
            .await
            .expect("mailbox");
        assert!(matches!(
            late,
            Err(WriteError::Closed {
                bytes_sent: 0,
                len: 5
            })
        ));
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        queued
            .await
            .expect("join")
            .expect("mailbox")
            .expect("written");
        waiting
            .await
            .expect("join")
            .expect("mailbox")
            .expect("written");
        settle().await;
        let mut expected = vec![1u8; 10];
        expected.extend_from_slice(&[2u8; 5]);
        assert_eq!(mock.written(Handle(1)), expected);
        assert!(mock.is_closed(Handle(1)));
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Closed { cause: None })),
            1
        );
    });
}

#[test]
fn an_abort_during_a_sendv_reports_what_that_sendv_sent() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = mock_socket(&mock).await;
        // The transport takes 3 bytes, but answers only after 10 ms.
        mock.script_sendv(
            Handle(1),
            [SendStep::Slow {
                bytes: 3,
                after: Duration::from_millis(10),
            }],
        );
        let first = actix::spawn(socket.send(Write::new(&b"abcdef"[..])));
        let second = actix::spawn(socket.send(Write::new(&b"gh"[..])));
        settle().await;
        assert_eq!(mock.sendv_calls(Handle(1)), 1, "the sendv is out");
        socket.do_send(Close::Abort);
        let first = first.await.expect("join").expect("mailbox");
        let second = second.await.expect("join").expect("mailbox");
        assert!(
            matches!(
                first,
                Err(WriteError::Aborted {
                    bytes_sent: 3,
                    len: 6
                })
            ),
            "the error counts the 3 bytes the outstanding sendv took: {first:?}"
        );
        assert!(matches!(
            second,
            Err(WriteError::Aborted {
                bytes_sent: 0,
                len: 2
            })
        ));
        assert_eq!(mock.written(Handle(1)), b"abc");
        assert_eq!(
            mock.sendv_calls(Handle(1)),
            1,
            "nothing sent after the abort"
        );
        assert!(mock.is_closed(Handle(1)));
    });
}

/// A `sendv` that never answers.
struct Silent;

impl Actor for Silent {
    type Context = Context<Self>;
}

impl Handler<SendV> for Silent {
    type Result = ResponseActFuture<Self, Result<Sent, TransportError>>;
    fn handle(&mut self, _: SendV, _: &mut Context<Self>) -> Self::Result {
        Box::pin(actix::fut::wrap_future(std::future::pending()))
    }
}

/// A write in a `sendv` that is never answered, and the close that cannot wait for it:
/// `Aborted`, none of its bytes counted, 10 s after the close; one `Closed`.
fn a_sendv_never_answered(close: Close, config: SocketConfig, closes_at: Duration) {
    run_paused(move || async move {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions().with_sendv(Silent.start().recipient()))
            .config(config)
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let write = actix::spawn(socket.send(Write::new(&b"abc"[..])));
        settle().await;
        let t0 = tokio::time::Instant::now();
        socket.do_send(close);
        let answer = tokio::time::timeout(Duration::from_secs(60), write)
            .await
            .expect("answered, not held for ever")
            .expect("join")
            .expect("mailbox");
        assert!(
            matches!(
                answer,
                Err(WriteError::Aborted {
                    bytes_sent: 0,
                    len: 3
                })
            ),
            "{answer:?}"
        );
        assert_eq!(t0.elapsed(), closes_at + Duration::from_secs(10));
        settle().await;
        let closed = recorder.count(|e| matches!(e, SocketEventKind::Closed { .. }));
        assert_eq!(closed, 1);
        assert!(mock.is_closed(Handle(1)));
    });
}

#[test]
fn an_abort_with_a_sendv_never_answered_answers_its_writes_10_s_later() {
    a_sendv_never_answered(Close::Abort, SocketConfig::default(), Duration::ZERO);
}

#[test]
fn a_drain_timeout_with_a_sendv_never_answered_answers_its_writes_10_s_later() {
    let config = SocketConfig {
        drain_timeout: Some(Duration::from_secs(1)),
        ..SocketConfig::default()
    };
    a_sendv_never_answered(Close::Graceful, config, Duration::from_secs(1));
}

/// A `sendv` out when the socket is aborted, answered would-block after the abort, is
/// still counted as one (`SocketStats::would_blocks`: "`sendv` calls answered with
/// would-block"), as the transport's log shows.
#[test]
fn a_would_block_answered_after_an_abort_is_counted() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::ZERO)]);
        let socket = mock_socket(&mock).await;
        let answer = actix::spawn(socket.send(Write::new(&b"x"[..])));
        socket.do_send(Close::Graceful);
        socket.do_send(Close::Abort);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let answer = answer.await.expect("task").expect("mailbox");
        assert!(
            matches!(
                answer,
                Err(WriteError::Aborted {
                    bytes_sent: 0,
                    len: 1
                })
            ),
            "{answer:?}"
        );
        let stats = socket
            .send(sockactor::messages::GetStats)
            .await
            .expect("stats");
        let log = mock.sendv_log(Handle(1));
        let logged = log.iter().filter(|r| r.would_block).count() as u64;
        assert_eq!(stats.sendv_calls, log.len() as u64, "{stats:?}");
        assert_eq!(
            stats.would_blocks, logged,
            "stats {stats:?}, transport log {log:?}"
        );
    });
}
