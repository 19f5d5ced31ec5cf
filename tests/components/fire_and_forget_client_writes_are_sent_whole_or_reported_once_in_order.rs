//! Property: fire-and-forget writes (`do_send`, tagged) to a reconnecting client, in
//! bursts, over connections that take bytes in random portions, would block and reset:
//! across the connections' streams, one after the other, each write is either whole (and
//! never reported) or, reported once as failed with how many of its bytes went out, just
//! that prefix; nothing twice, nothing out of order; the reports come in the order the
//! writes were sent.

use std::io;
use std::time::Duration;

use crate::support::client::client_events;
use crate::support::{mock_peer, pattern, run_paused, settle};
use proptest::prelude::*;
use sockactor::messages::{ClientEvent, Close, Handle, Write};
use sockactor::{MockTransport, ReconnectingClient, SendStep, WriteError};

fn step() -> impl Strategy<Value = SendStep> {
    prop_oneof![
        4 => (1usize..120).prop_map(SendStep::Accept),
        1 => Just(SendStep::AcceptAll),
        1 => (0u64..4).prop_map(|ms| SendStep::WouldBlock(Duration::from_millis(ms))),
        3 => Just(SendStep::Fail(io::ErrorKind::ConnectionReset)),
    ]
}

/// Connections the client may make, each with its script.
const CONNECTIONS: u64 = 6;

fn run_case(bursts: Vec<Vec<usize>>, scripts: Vec<Vec<SendStep>>) -> Result<(), TestCaseError> {
    run_paused(|| async move {
        let mock = MockTransport::start();
        for (h, steps) in scripts.into_iter().enumerate() {
            // The last connection takes everything: the writes end.
            let mut steps = steps;
            if h as u64 + 1 == CONNECTIONS {
                steps.clear();
            }
            mock.script_sendv(Handle(h as u64 + 1), steps);
        }
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .backoff(Duration::from_millis(5), Duration::from_millis(20))
            .seed(3)
            .start();
        let mut writes = Vec::new();
        for burst in bursts {
            for len in burst {
                let tag = writes.len() as u64;
                let bytes = pattern(len, tag);
                client.do_send(Write::new(bytes.clone()).tag(tag));
                writes.push(bytes);
            }
            settle().await;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        client.do_send(Close::Graceful);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        settle().await;

        let mut reports = Vec::new();
        for e in events.drain() {
            if let ClientEvent::WriteFailed { tag, error } = e {
                let tag = tag.expect("every write here is tagged");
                let sent = match error {
                    WriteError::Transport { bytes_sent, .. }
                    | WriteError::Closed { bytes_sent, .. }
                    | WriteError::Aborted { bytes_sent, .. } => bytes_sent,
                    other => return Err(TestCaseError::fail(format!("{other:?}"))),
                };
                reports.push((tag, sent));
            }
        }
        prop_assert!(
            reports.windows(2).all(|w| w[0].0 < w[1].0),
            "reported once each, in the order sent: {:?}",
            reports
        );
        let mut expected = Vec::new();
        let mut reported = reports.iter().peekable();
        for (tag, bytes) in writes.iter().enumerate() {
            match reported.next_if(|r| r.0 == tag as u64) {
                Some(&(_, sent)) => {
                    prop_assert!(sent < bytes.len(), "write {} reported, all sent", tag);
                    expected.extend_from_slice(&bytes[..sent]);
                }
                None => expected.extend_from_slice(bytes),
            }
        }
        let mut streams = Vec::new();
        for h in 1..=CONNECTIONS {
            streams.extend(mock.written(Handle(h)));
        }
        prop_assert_eq!(streams, expected, "the streams, one after the other");
        Ok(())
    })
}

proptest! {
    #![proptest_config(crate::support::proptest_config(128))]
    #[test]
    fn every_fire_and_forget_client_write_is_sent_whole_or_reported_once_in_order(
        bursts in prop::collection::vec(prop::collection::vec(0usize..40, 1..12), 1..8),
        scripts in prop::collection::vec(prop::collection::vec(step(), 1..6), CONNECTIONS as usize),
    ) {
        run_case(bursts, scripts)?;
    }
}
