//! Writes and closes from one sender reach the socket's queue in program order, whether
//! they are sent with `send` (awaited later, pipelined far past actix's mailbox capacity
//! of 16), `do_send` or a `Writer`, mixed: a later close never overtakes an earlier
//! write, and a write waiting for room never deadlocks with a writer's admitted one
//! behind it.

use crate::support::{mock_socket, run_paused};
use futures_util::future::join_all;
use futures_util::FutureExt;
use sockactor::messages::{Close, Handle, Write};
use sockactor::{MockTransport, SendStep};

#[test]
fn a_close_sent_after_508_pipelined_writes_closes_after_all_of_them() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::AcceptAll);
        let socket = mock_socket(&mock).await;
        // None of these futures is polled before the close is sent.
        let writes: Vec<_> = (0..508u32)
            .map(|i| socket.send(Write::new(i.to_be_bytes().to_vec())))
            .collect();
        socket.do_send(Close::Graceful);
        let mut expected = Vec::new();
        for (i, answer) in join_all(writes).await.into_iter().enumerate() {
            let written = answer
                .expect("mailbox")
                .unwrap_or_else(|e| panic!("write {i} sent before the close: {e}"));
            assert_eq!(written.len, 4);
            expected.extend_from_slice(&(i as u32).to_be_bytes());
        }
        assert_eq!(mock.written(Handle(1)), expected, "all of them, in order");
        assert!(mock.is_closed(Handle(1)));
    });
}

#[test]
fn send_and_do_send_interleaved_past_the_mailbox_capacity_keep_their_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::AcceptAll);
        let socket = mock_socket(&mock).await;
        let mut pending = Vec::new();
        let mut expected = Vec::new();
        for i in 0..600u32 {
            let bytes = i.to_be_bytes();
            expected.extend_from_slice(&bytes);
            // Two of every three are awaited later, one is fire-and-forget.
            if i % 3 == 2 {
                socket.do_send(Write::new(bytes.to_vec()));
            } else {
                pending.push(socket.send(Write::new(bytes.to_vec())));
            }
        }
        socket.do_send(Close::Graceful);
        for answer in join_all(pending).await {
            answer.expect("mailbox").expect("sent before the close");
        }
        assert_eq!(
            mock.written(Handle(1)),
            expected,
            "the wire holds the writes in program order"
        );
    });
}

#[test]
fn writer_writes_and_address_messages_mixed_keep_program_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::AcceptAll);
        let socket = mock_socket(&mock).await;
        let writer = socket
            .send(sockactor::messages::GetWriter)
            .await
            .expect("writer");
        // 600 writes, by turns through the writer, `do_send` and pipelined `send`s (none
        // polled until the end), then a close through the address: far past the
        // mailbox's 16.
        let mut pending = Vec::new();
        let mut expected = Vec::new();
        for i in 0..600u32 {
            let bytes = i.to_be_bytes().to_vec();
            expected.extend_from_slice(&bytes);
            match i % 3 {
                0 => writer.write(bytes).expect("room"),
                1 => socket.do_send(Write::new(bytes)),
                _ => pending.push(socket.send(Write::new(bytes))),
            }
        }
        socket.do_send(Close::Graceful);
        for answer in join_all(pending).await {
            answer.expect("mailbox").expect("written before the close");
        }
        assert_eq!(
            mock.written(Handle(1)),
            expected,
            "program order across the paths"
        );
        assert!(mock.is_closed(Handle(1)));
    });
}

#[test]
fn a_send_future_dropped_before_the_socket_handles_it_is_skipped_by_actix() {
    // actix skips a message whose answer nobody waits for any more, whether or not its
    // future was polled: the README's caveat.
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::AcceptAll);
        let socket = mock_socket(&mock).await;
        drop(socket.send(Write::new(&b"dropped;"[..])));
        let mut polled = Box::pin(socket.send(Write::new(&b"polled, then dropped;"[..])));
        assert!(polled.as_mut().now_or_never().is_none(), "not handled yet");
        drop(polled);
        socket
            .send(Write::new(&b"kept"[..]))
            .await
            .expect("mailbox")
            .expect("written");
        assert_eq!(mock.written(Handle(1)), b"kept");
    });
}

/// A write waiting for room (`wait_when_full`) still in the mailbox, and a `Writer`'s
/// write admitted meanwhile that fills the gate: the first waits for room behind nothing
/// that could free any, the second behind the first. Both go out, in program order (they
/// waited for each other for ever), and producers hear of room again.
#[test]
fn a_waiting_write_ahead_of_a_writers_admitted_write_goes_first_and_both_go_out() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = crate::support::Recorder::default();
        let socket = sockactor::Socket::builder()
            .functions(mock.functions())
            .config(crate::support::watermarks(100, 50))
            .writability_subscriber(recorder.start().recipient())
            .connect(crate::support::mock_peer())
            .await
            .expect("connect");
        let writer = socket
            .send(sockactor::messages::GetWriter)
            .await
            .expect("writer");
        // In the mailbox, not handled yet.
        let first = socket.send(Write::new(vec![1u8; 20]).wait_when_full());
        // Admitted now: 100 bytes reach the high watermark.
        let second = writer.write_answered(vec![2u8; 100]);
        assert!(second.refused().is_none(), "admitted at once");
        let (first, second) = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            (first.await, second.await)
        })
        .await
        .expect("both answered");
        first.expect("mailbox").expect("first written");
        second.expect("second written");
        let mut expected = vec![1u8; 20];
        expected.extend_from_slice(&[2u8; 100]);
        assert_eq!(mock.written(Handle(1)), expected, "program order");
        assert_eq!(writer.queued_bytes(), 0);
        writer.writable().await.expect("room");
        assert_eq!(recorder.writability(), [false, true]);
    });
}
