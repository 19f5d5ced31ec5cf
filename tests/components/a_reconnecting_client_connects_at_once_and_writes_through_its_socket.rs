//! A reconnecting client connects at once on start (attempt 1, no backoff), hands writes
//! to its socket in order, and passes the peer's data on to its subscriber.

use std::time::Duration;

use crate::support::client::client_events;
use crate::support::{mock_peer, run_paused, settle};
use bytes::Bytes;
use sockactor::messages::{Address, ClientEvent, ClientState, GetClientState, Handle, Write};
use sockactor::{MockTransport, ReconnectingClient};
use tokio::time::Instant;

#[test]
fn the_first_attempt_connects_without_delay_and_writes_go_out_in_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (subscriber, mut events) = client_events();
        let started = Instant::now();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .start();
        match events.next().await {
            ClientEvent::Connected { peer, attempt } => {
                assert_eq!(peer, Address::Inet(mock_peer()));
                assert_eq!(attempt, 1);
            }
            other => panic!("expected Connected, got {other:?}"),
        }
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no backoff before the first attempt"
        );
        assert_eq!(mock.handles(), [Handle(1)]);
        assert_eq!(mock.peer(Handle(1)), Some(Address::Inet(mock_peer())));
        assert_eq!(
            client.send(GetClientState).await.expect("mailbox"),
            ClientState::Connected {
                peer: Address::Inet(mock_peer())
            }
        );

        let answers: Vec<_> = (0..5u8)
            .map(|i| client.send(Write::new(vec![b'a' + i; 3 + usize::from(i)])))
            .collect();
        for (i, answer) in answers.into_iter().enumerate() {
            let written = answer.await.expect("mailbox").expect("written");
            assert_eq!(written.len, 3 + i);
        }
        assert_eq!(mock.written(Handle(1)), b"aaabbbbcccccddddddeeeeeee");

        mock.push_inbound(Handle(1), Bytes::from_static(b"hello "));
        mock.push_inbound(Handle(1), Bytes::from_static(b"client"));
        let mut received = Vec::new();
        while received.len() < 12 {
            match events.next().await {
                ClientEvent::Received(bytes, _) => received.extend_from_slice(&bytes),
                other => panic!("expected Received, got {other:?}"),
            }
        }
        assert_eq!(received, b"hello client");
        settle().await;
        assert!(events.drain().is_empty(), "no reconnect, no other event");
        assert_eq!(mock.handles(), [Handle(1)]);
    });
}

/// The socket's read window reaches through the client: while the subscriber holds the
/// permits of what it received, the client's socket reads no more.
#[test]
fn the_client_passes_read_permits_on_so_its_subscriber_holds_the_window() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (subscriber, mut events) = client_events();
        let _client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .socket_config(sockactor::SocketConfig {
                read_chunk: 4,
                read_limits: sockactor::ReadLimits {
                    max_deliveries: 2,
                    max_bytes: usize::MAX,
                },
                ..sockactor::SocketConfig::default()
            })
            .start();
        assert!(matches!(events.next().await, ClientEvent::Connected { .. }));
        mock.push_inbound(Handle(1), Bytes::from_static(b"aaaabbbbccccdddd"));
        settle().await;
        let held = events.drain();
        let chunks: Vec<_> = held
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Received(bytes, permit) => {
                    assert!(permit.is_some(), "each chunk carries its permit");
                    Some(bytes.clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(chunks, ["aaaa", "bbbb"], "the window of two is full");
        drop(held);
        settle().await;
        let rest: Vec<_> = events
            .drain()
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Received(bytes, _) => Some(bytes),
                _ => None,
            })
            .collect();
        assert_eq!(rest, ["cccc", "dddd"], "dropping the permits reopened it");
    });
}
