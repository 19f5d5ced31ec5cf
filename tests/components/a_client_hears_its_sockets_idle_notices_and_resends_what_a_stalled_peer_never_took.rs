//! A `ReconnectingClient` over sockets with `PeerLimits`: the socket's idle notices reach
//! the client's subscriber (the cue for a keep-alive), and a peer that stops reading is
//! timed out: the write it took part of is answered `TimedOut` with how far it got, the
//! client reconnects, and the writes that never went out are sent on the new
//! connection.

use std::time::Duration;

use crate::support::client::client_events;
use crate::support::{mock_peer, run_paused, settle};
use sockactor::messages::{ClientEvent, Handle, Write};
use sockactor::{
    IdleKind, MockTransport, PeerLimits, ReconnectingClient, SendStep, SocketConfig, WriteError,
};

const S: Duration = Duration::from_secs(1);

fn with_limits(limits: PeerLimits) -> SocketConfig {
    SocketConfig {
        limits,
        ..SocketConfig::default()
    }
}

#[test]
fn the_sockets_idle_notices_reach_the_clients_subscriber() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (subscriber, mut events) = client_events();
        let _client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .socket_config(with_limits(PeerLimits {
                write_idle: Some(10 * S),
                ..PeerLimits::default()
            }))
            .start();
        assert!(matches!(events.next().await, ClientEvent::Connected { .. }));
        let connected = tokio::time::Instant::now();
        for period in 1..=2u32 {
            match events.next().await {
                ClientEvent::Idle {
                    kind: IdleKind::Write,
                    after,
                } => assert_eq!(after, 10 * S),
                other => panic!("expected Idle, got {other:?}"),
            }
            let at = connected.elapsed();
            assert!(
                at >= 10 * S * period && at < (10 * period + 1) * S,
                "idle notice {period} at {at:?}"
            );
        }
        assert!(!mock.is_closed(Handle(1)), "only reported");
    });
}

#[test]
fn a_peer_that_stops_reading_is_timed_out_and_the_unsent_writes_go_to_the_next_connection() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // The first connection takes 4 bytes and then nothing.
        mock.script_sendv(Handle(1), [SendStep::Accept(4), SendStep::Hold]);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .backoff(Duration::from_millis(10), Duration::from_millis(10))
            .socket_config(with_limits(PeerLimits {
                send_timeout: Some(5 * S),
                ..PeerLimits::default()
            }))
            .start();
        assert!(matches!(events.next().await, ClientEvent::Connected { .. }));
        let first = client.send(Write::new(&b"partly"[..]));
        let second = client.send(Write::new(&b"never sent"[..]));
        settle().await;
        let first = tokio::time::timeout(60 * S, first)
            .await
            .expect("answered")
            .expect("mailbox");
        assert!(
            matches!(
                first,
                Err(WriteError::TimedOut {
                    bytes_sent: 4,
                    len: 6,
                    ..
                })
            ),
            "{first:?}"
        );
        let second = tokio::time::timeout(60 * S, second)
            .await
            .expect("answered")
            .expect("mailbox");
        assert_eq!(second.expect("sent on the next connection").len, 10);
        assert!(mock.is_closed(Handle(1)));
        assert_eq!(mock.written(Handle(1)), b"part");
        assert_eq!(mock.written(Handle(2)), b"never sent");
        let seen = events.drain();
        assert!(
            seen.iter()
                .any(|e| matches!(e, ClientEvent::Disconnected { .. })),
            "{seen:?}"
        );
    });
}
