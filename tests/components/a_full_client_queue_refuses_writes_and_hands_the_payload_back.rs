//! While disconnected, writes wait in the client's own bounded queue; past its byte or
//! write limit a write is refused with `WriteError::QueueFull`, its payload handed back,
//! and the writes it did take go out, in order, once connected.

use std::time::Duration;

use crate::support::client::{client_events, ConnectGate};
use crate::support::{mock_peer, run_paused};
use sockactor::messages::{ClientEvent, Handle, Write};
use sockactor::{IoBatch, MockTransport, ReconnectingClient, WriteError};

#[test]
fn the_byte_limit_takes_the_crossing_write_and_refuses_the_next() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        gate.refuse_next(1);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .subscriber(subscriber)
            .backoff(Duration::from_secs(1), Duration::from_secs(1))
            .queue_limits(10, 3)
            .start();
        assert!(matches!(
            events.next().await,
            ClientEvent::Reconnecting { attempt: 2, .. }
        ));
        // 6 + 6 bytes: the second crosses the 10-byte limit and is still taken.
        let first = client.send(Write::new(&b"first-"[..]));
        let second = client.send(Write::new(&b"second"[..]));
        match client
            .send(Write::new(&b"refused"[..]))
            .await
            .expect("mailbox")
        {
            Err(WriteError::QueueFull {
                queued,
                high_watermark,
                payload,
            }) => {
                assert_eq!((queued, high_watermark), (12, 10));
                assert_eq!(payload, IoBatch::from(&b"refused"[..]));
            }
            other => panic!("expected QueueFull, got {other:?}"),
        }
        assert!(matches!(
            events.next().await,
            ClientEvent::Connected { attempt: 2, .. }
        ));
        assert_eq!(first.await.expect("mailbox").expect("written").len, 6);
        assert_eq!(second.await.expect("mailbox").expect("written").len, 6);
        assert_eq!(mock.written(Handle(2)), b"first-second");
    });
}

#[test]
fn the_write_limit_refuses_the_write_past_it() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        gate.refuse_next(1);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .subscriber(subscriber)
            .backoff(Duration::from_secs(1), Duration::from_secs(1))
            .queue_limits(1024, 2)
            .start();
        assert!(matches!(
            events.next().await,
            ClientEvent::Reconnecting { .. }
        ));
        let taken = [
            client.send(Write::new(&b"a"[..])),
            client.send(Write::new(&b"b"[..])),
        ];
        match client.send(Write::new(&b"c"[..])).await.expect("mailbox") {
            Err(WriteError::QueueFull { payload, .. }) => {
                assert_eq!(payload.to_vec().expect("in memory"), b"c")
            }
            other => panic!("expected QueueFull, got {other:?}"),
        }
        for answer in taken {
            assert_eq!(answer.await.expect("mailbox").expect("written").len, 1);
        }
        assert_eq!(mock.written(Handle(2)), b"ab");
    });
}
