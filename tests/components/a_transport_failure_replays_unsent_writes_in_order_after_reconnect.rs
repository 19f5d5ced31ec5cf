//! A transport failure mid-stream: the write in flight fails with the bytes it got out;
//! the writes that had not started are, by policy, replayed first and in order on the
//! next connection (whose byte stream starts exactly with them), or answered with the
//! error; writes made while disconnected follow them. Every write is answered once.

use std::io;
use std::time::Duration;

use crate::support::client::{client_events, Events};
use crate::support::{mock_peer, run_paused, settle};
use sockactor::messages::{ClientEvent, Handle, Write};
use sockactor::{MockTransport, ReconnectingClient, SendStep, UnsentWrites, WriteError};

async fn expect_connected(events: &mut Events, attempt: u32) {
    match events.next().await {
        ClientEvent::Connected { attempt: a, .. } => assert_eq!(a, attempt),
        other => panic!("expected Connected, got {other:?}"),
    }
}

/// Waits for the disconnect caused by a reset and the reconnect announcement.
async fn expect_reset_then_reconnecting(events: &mut Events) {
    match events.next().await {
        ClientEvent::Disconnected { cause: Some(cause) } => {
            assert_eq!(cause.io_kind(), Some(io::ErrorKind::ConnectionReset))
        }
        other => panic!("expected Disconnected by a reset, got {other:?}"),
    }
    match events.next().await {
        ClientEvent::Reconnecting { attempt, delay } => {
            assert_eq!(attempt, 1, "the count restarts after a connection");
            assert!(delay <= Duration::from_millis(10));
        }
        other => panic!("expected Reconnecting, got {other:?}"),
    }
}

fn client(mock: &MockTransport, policy: UnsentWrites) -> (actix::Addr<ReconnectingClient>, Events) {
    client_with(mock, policy, None)
}

/// A client whose sockets have a high watermark of `high` bytes (if given): one write
/// past it fills the socket's queue, and later ones wait in the client's.
fn client_with(
    mock: &MockTransport,
    policy: UnsentWrites,
    high: Option<usize>,
) -> (actix::Addr<ReconnectingClient>, Events) {
    let (subscriber, events) = client_events();
    let mut builder = ReconnectingClient::builder(mock_peer())
        .functions(mock.functions())
        .subscriber(subscriber)
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .unsent_writes(policy)
        .seed(3);
    if let Some(high) = high {
        builder = builder.socket_config(crate::support::watermarks(high, 0));
    }
    (builder.start(), events)
}

#[test]
fn retained_writes_open_the_next_connections_stream_in_their_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // The first connection takes 4 bytes, then resets.
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(4),
                SendStep::Fail(io::ErrorKind::ConnectionReset),
            ],
        );
        let (client, mut events) = client(&mock, UnsentWrites::Retain);
        expect_connected(&mut events, 1).await;

        let in_flight = client.send(Write::new(&b"0123456789"[..]));
        let second = client.send(Write::new(&b"second|"[..]));
        let third = client.send(Write::new(&b"third|"[..]));
        expect_reset_then_reconnecting(&mut events).await;
        // Made while disconnected: goes out after the retained ones.
        let fourth = client.send(Write::new(&b"fourth"[..]));
        expect_connected(&mut events, 1).await;

        match in_flight.await.expect("mailbox") {
            Err(WriteError::Transport {
                bytes_sent, len, ..
            }) => {
                assert_eq!((bytes_sent, len), (4, 10));
            }
            other => panic!("expected the in-flight write to fail, got {other:?}"),
        }
        for (answer, len) in [(second.await, 7), (third.await, 6), (fourth.await, 6)] {
            assert_eq!(answer.expect("mailbox").expect("written").len, len);
        }
        assert_eq!(mock.written(Handle(1)), b"0123");
        assert_eq!(mock.written(Handle(2)), b"second|third|fourth");
        assert!(mock.is_closed(Handle(1)));
        assert!(!mock.is_closed(Handle(2)));

        // And the new connection carries on.
        let later = client.send(Write::new(&b"|fifth"[..])).await;
        assert_eq!(later.expect("mailbox").expect("written").len, 6);
        assert!(mock
            .written(Handle(2))
            .starts_with(b"second|third|fourth|fifth"));
        settle().await;
        assert!(events.drain().is_empty());
    });
}

#[test]
fn with_the_fail_policy_unsent_writes_are_answered_with_the_error() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(4),
                SendStep::Fail(io::ErrorKind::ConnectionReset),
            ],
        );
        let (client, mut events) = client(&mock, UnsentWrites::Fail);
        expect_connected(&mut events, 1).await;

        let in_flight = client.send(Write::new(&b"0123456789"[..]));
        let second = client.send(Write::new(&b"second|"[..]));
        let third = client.send(Write::new(&b"third|"[..]));
        expect_reset_then_reconnecting(&mut events).await;
        let fourth = client.send(Write::new(&b"fourth"[..]));
        expect_connected(&mut events, 1).await;

        let failed = [in_flight.await, second.await, third.await];
        let sent: Vec<(usize, usize)> = failed
            .into_iter()
            .map(|answer| match answer.expect("mailbox") {
                Err(WriteError::Transport {
                    bytes_sent,
                    len,
                    source,
                }) => {
                    assert_eq!(source.io_kind(), Some(io::ErrorKind::ConnectionReset));
                    (bytes_sent, len)
                }
                other => panic!("expected a transport error, got {other:?}"),
            })
            .collect();
        assert_eq!(sent, [(4, 10), (0, 7), (0, 6)]);
        // Made while disconnected: still goes out, alone.
        assert_eq!(fourth.await.expect("mailbox").expect("written").len, 6);
        assert_eq!(mock.written(Handle(1)), b"0123");
        assert_eq!(mock.written(Handle(2)), b"fourth");
    });
}

#[test]
fn writes_waiting_for_room_in_the_socket_queue_keep_their_place_across_the_reconnect() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // The first connection blocks, so writes pile up in its queue (high watermark
        // 8 bytes) and then in the client's; then it resets.
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (client, mut events) = client_with(&mock, UnsentWrites::Retain, Some(8));
        expect_connected(&mut events, 1).await;
        let answers: Vec<_> = (0..6u8)
            .map(|i| client.send(Write::new(vec![b'a' + i; 5])))
            .collect();
        settle().await;
        mock.script_sendv(Handle(1), [SendStep::Fail(io::ErrorKind::ConnectionReset)]);
        mock.release(Handle(1));
        expect_reset_then_reconnecting(&mut events).await;
        expect_connected(&mut events, 1).await;
        for answer in answers {
            assert_eq!(answer.await.expect("mailbox").expect("written").len, 5);
        }
        assert_eq!(mock.written(Handle(1)), b"");
        assert_eq!(mock.written(Handle(2)), b"aaaaabbbbbcccccdddddeeeeefffff");
    });
}

#[test]
fn with_the_fail_policy_a_lost_connections_failures_are_reported_in_write_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // Write 1 waits in the socket's queue (the mock holds it, and at a high watermark
        // of 8 bytes the socket has no room after it); write 2 waits in the client's.
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (client, mut events) = client_with(&mock, UnsentWrites::Fail, Some(8));
        expect_connected(&mut events, 1).await;
        client.do_send(Write::new(&b"0123456789"[..]).tag(1));
        settle().await;
        client.do_send(Write::new(&b"second"[..]).tag(2));
        settle().await;
        mock.push_eof(Handle(1));
        let mut failed = Vec::new();
        while failed.len() < 2 {
            match events.next().await {
                ClientEvent::WriteFailed { tag, error } => {
                    assert_eq!(error.bytes_sent(), 0, "{error:?}");
                    failed.push(tag.expect("tagged"));
                }
                ClientEvent::Eof
                | ClientEvent::Disconnected { .. }
                | ClientEvent::Reconnecting { .. }
                | ClientEvent::Connected { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            failed,
            [1, 2],
            "failures come in the order the writes were sent"
        );
        assert_eq!(mock.written(Handle(1)), b"");
    });
}

#[test]
fn with_the_fail_policy_a_failure_waiting_its_turn_still_reaches_its_caller() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // The first connection's transport takes 2 bytes and answers a second later, so
        // the lost socket's answer to the first write comes well after the loss.
        mock.script_sendv(
            Handle(1),
            [SendStep::Slow {
                bytes: 2,
                after: Duration::from_secs(1),
            }],
        );
        let (client, mut events) = client_with(&mock, UnsentWrites::Fail, Some(8));
        expect_connected(&mut events, 1).await;
        let first = tokio::spawn(client.send(Write::new(&b"0123456789"[..])));
        settle().await;
        // Held by the client; its answer has to wait for the first's after the loss.
        let second = tokio::spawn(client.send(Write::new(&b"second"[..])));
        settle().await;
        mock.push_eof(Handle(1));
        assert!(matches!(events.next().await, ClientEvent::Eof));
        // Handled after the loss, before the lost socket answers the first write: its
        // reply channel goes onto the second's token, which waits among the failures.
        let third = tokio::spawn(client.send(Write::new(&b"third"[..])));
        match first.await.expect("task").expect("mailbox") {
            Err(WriteError::Aborted {
                bytes_sent: 2,
                len: 10,
            }) => {}
            other => panic!("expected the first write aborted, got {other:?}"),
        }
        match second.await.expect("task").expect("mailbox") {
            Err(WriteError::Aborted {
                bytes_sent: 0,
                len: 6,
            }) => {}
            other => panic!("expected the second write aborted, got {other:?}"),
        }
        assert_eq!(
            third
                .await
                .expect("task")
                .expect("mailbox")
                .expect("written")
                .len,
            5
        );
        assert_eq!(mock.written(Handle(2)), b"third");
    });
}
