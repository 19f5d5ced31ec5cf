//! A peer that sends data and closes right as the connection is made: the subscriber
//! still hears `Connected` first, then the data, the EOF and the disconnect, and the
//! client reconnects.

use std::time::Duration;

use crate::support::client::client_events;
use crate::support::{mock_peer, run_paused};
use bytes::Bytes;
use sockactor::messages::{ClientEvent, Handle};
use sockactor::{MockTransport, ReconnectingClient};

#[test]
fn data_and_eof_at_connect_time_come_after_connected() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // The handle exists while the connect is delayed: feed it before the socket runs.
        mock.delay_connect(mock_peer(), Duration::from_millis(10));
        let (subscriber, mut events) = client_events();
        let _client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .backoff(Duration::from_millis(10), Duration::from_millis(10))
            .start();
        tokio::time::sleep(Duration::from_millis(5)).await;
        mock.push_inbound(Handle(1), Bytes::from_static(b"greeting"));
        mock.push_eof(Handle(1));
        let mut seen = Vec::new();
        loop {
            let event = events.next().await;
            let done = matches!(event, ClientEvent::Connected { .. }) && !seen.is_empty();
            seen.push(event);
            if done {
                break;
            }
        }
        let names: Vec<String> = seen
            .iter()
            .map(|e| match e {
                ClientEvent::Connected { attempt, .. } => format!("connected {attempt}"),
                ClientEvent::Received(b, _) => format!("received {}", String::from_utf8_lossy(b)),
                ClientEvent::Eof => "eof".into(),
                ClientEvent::Disconnected { cause: None } => "disconnected".into(),
                ClientEvent::Reconnecting { attempt, .. } => format!("reconnecting {attempt}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "connected 1",
                "received greeting",
                "eof",
                "disconnected",
                "reconnecting 1",
                "connected 1"
            ]
        );
        assert!(mock.is_closed(Handle(1)));
    });
}
