//! Closing answers every write, and truthfully: a graceful close sends what is queued,
//! writes that waited for room included; an abort while a `sendv` is still out waits
//! for its answer so each error says how many bytes really went out; writes after the
//! close get a typed error, not a mailbox error.

use std::time::Duration;

use crate::support::{mock_peer, mock_socket, run_paused, settle, watermarks, Recorder};
use sockactor::messages::{Close, Handle, SocketEventKind, Write};
use sockactor::{MockTransport, SendStep, Socket, WriteError};

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
