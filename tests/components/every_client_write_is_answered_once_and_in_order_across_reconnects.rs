//! Across several transport failures (partial sends, would-blocks, a connection that
//! fails before sending anything), every write to a reconnecting client is answered
//! exactly once, and the connections' byte streams, one after the other, are exactly
//! the writes in order: whole for each write answered `Written`, the reported prefix for
//! each that failed in flight, nothing twice.

use std::io;
use std::time::Duration;

use crate::support::client::client_events;
use crate::support::{mock_peer, pattern, run_paused, settle};
use sockactor::messages::{ClientEvent, Handle, Write};
use sockactor::{MockTransport, ReconnectingClient, SendStep, WriteError};

const RESET: io::ErrorKind = io::ErrorKind::ConnectionReset;

#[test]
fn four_resets_lose_no_byte_and_repeat_none() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(7), SendStep::Fail(RESET)]);
        mock.script_sendv(
            Handle(2),
            [
                SendStep::Accept(100),
                SendStep::Accept(3),
                SendStep::Fail(RESET),
            ],
        );
        // Fails before taking a byte: every write it had is retained.
        mock.script_sendv(Handle(3), [SendStep::Fail(RESET)]);
        mock.script_sendv(
            Handle(4),
            [
                SendStep::Accept(1),
                SendStep::WouldBlock(Duration::from_millis(1)),
                SendStep::Accept(50),
                SendStep::Fail(RESET),
            ],
        );
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .backoff(Duration::from_millis(5), Duration::from_millis(20))
            .seed(9)
            .start();

        let payloads: Vec<Vec<u8>> = (0..40u64)
            .map(|i| {
                pattern(
                    if i % 13 == 6 {
                        0
                    } else {
                        1 + (i as usize * 7) % 23
                    },
                    i,
                )
            })
            .collect();
        // Sent a few at a time: an actix mailbox holds 16 messages, and a `send` past
        // that is delivered only when its future is polled, which would reorder them.
        let mut answers = Vec::new();
        for chunk in payloads[..20].chunks(8) {
            for p in chunk {
                answers.push(client.send(Write::new(p.clone())));
            }
            settle().await;
        }
        // The rest once the first connection is gone: they wait for the next one.
        loop {
            if let ClientEvent::Disconnected { .. } = events.next().await {
                break;
            }
        }
        for chunk in payloads[20..].chunks(8) {
            for p in chunk {
                answers.push(client.send(Write::new(p.clone())));
            }
            settle().await;
        }

        let mut expected = Vec::new();
        let mut failed = 0;
        for (answer, payload) in answers.into_iter().zip(&payloads) {
            match answer.await.expect("mailbox") {
                Ok(written) => {
                    assert_eq!(written.len, payload.len());
                    expected.extend_from_slice(payload);
                }
                Err(WriteError::Transport {
                    bytes_sent, len, ..
                }) => {
                    // Only a write in flight fails; the unsent ones were retained.
                    assert!(bytes_sent > 0 && bytes_sent < len, "{bytes_sent} of {len}");
                    expected.extend_from_slice(&payload[..bytes_sent]);
                    failed += 1;
                }
                Err(other) => panic!("unexpected answer {other:?}"),
            }
        }
        let mut streams = Vec::new();
        for h in 1..=5 {
            streams.extend(mock.written(Handle(h)));
        }
        assert_eq!(streams, expected);
        assert_eq!(mock.handles().len(), 5);
        assert!(
            failed >= 2,
            "partial sends on connections 1, 2 and 4 fail writes"
        );

        let rest = events.drain();
        let disconnects = rest
            .iter()
            .filter(|e| matches!(e, ClientEvent::Disconnected { .. }))
            .count();
        assert_eq!(disconnects + 1, 4, "four connections were lost: {rest:?}");
        assert!(
            matches!(rest.last(), Some(ClientEvent::Connected { attempt: 1, .. })),
            "{rest:?}"
        );
    });
}
