//! The peer's data reaches the client's subscriber; its EOF ends the connection (the
//! socket is aborted, unsent writes are kept for the next one) and the client
//! reconnects, unless told to stay connected on EOF.

use std::time::Duration;

use crate::support::client::{client_events, Events};
use crate::support::{mock_peer, run_paused, settle};
use bytes::Bytes;
use sockactor::messages::{ClientEvent, ClientState, GetClientState, Handle, Write};
use sockactor::{MockTransport, ReconnectingClient, SendStep};

async fn expect_connected(events: &mut Events) {
    match events.next().await {
        ClientEvent::Connected { .. } => {}
        other => panic!("expected Connected, got {other:?}"),
    }
}

#[test]
fn data_then_eof_is_passed_on_and_the_client_reconnects_with_its_unsent_writes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // The first connection never takes a byte: its writes are still queued at EOF.
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .backoff(Duration::from_millis(10), Duration::from_millis(10))
            .start();
        expect_connected(&mut events).await;
        let unsent = client.send(Write::new(&b"still queued"[..]));
        settle().await;
        mock.push_inbound(Handle(1), Bytes::from_static(b"bye"));
        mock.push_eof(Handle(1));
        match events.next().await {
            ClientEvent::Received(bytes, _) => assert_eq!(&bytes[..], b"bye"),
            other => panic!("expected Received, got {other:?}"),
        }
        assert!(matches!(events.next().await, ClientEvent::Eof));
        assert!(matches!(
            events.next().await,
            ClientEvent::Disconnected { cause: None }
        ));
        assert!(matches!(
            events.next().await,
            ClientEvent::Reconnecting { attempt: 1, .. }
        ));
        expect_connected(&mut events).await;
        assert_eq!(unsent.await.expect("mailbox").expect("written").len, 12);
        assert!(mock.is_closed(Handle(1)));
        assert_eq!(mock.written(Handle(1)), b"");
        assert_eq!(mock.written(Handle(2)), b"still queued");
    });
}

#[test]
fn told_to_stay_on_eof_the_client_keeps_its_connection() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .reconnect_on_eof(false)
            .start();
        expect_connected(&mut events).await;
        mock.push_eof(Handle(1));
        assert!(matches!(events.next().await, ClientEvent::Eof));
        let written = client.send(Write::new(&b"half-closed"[..])).await;
        assert_eq!(written.expect("mailbox").expect("written").len, 11);
        assert_eq!(mock.written(Handle(1)), b"half-closed");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(events.drain().is_empty(), "no disconnect, no reconnect");
        assert!(matches!(
            client.send(GetClientState).await.expect("mailbox"),
            ClientState::Connected { .. }
        ));
        assert_eq!(mock.handles(), [Handle(1)]);
    });
}
