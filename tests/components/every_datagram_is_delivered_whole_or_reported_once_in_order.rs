//! Property: datagrams sent by `do_send` (tagged, nobody waiting) and by `send` (answered),
//! in bursts, to a small queue, over a transport that takes them whole, takes part of
//! one, would block or fails one, then a graceful close:
//!
//! - each datagram either leaves whole or fails, never both: a `do_send` one that did not
//!   leave whole is reported to the subscriber exactly once, and an answered one gets an
//!   error exactly when it did not leave whole;
//! - the reports come in the order the datagrams were sent: the refusals of a full queue
//!   (reported when decided, which may be before an earlier datagram still queued fails)
//!   among themselves, and the other failures among themselves;
//! - the datagrams that left whole left in the order they were sent.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{channel, drain, local, run_paused, settle};
use proptest::prelude::*;
use sockactor::messages::{Close, DatagramEvent, DatagramEventKind, Handle, SendDatagram};
use sockactor::{DatagramConfig, DatagramError, DatagramSocket, MockTransport, SendStep};

#[derive(Clone, Debug)]
enum Op {
    /// A datagram of this many bytes after its 4-byte index; answered when `true`.
    Send(usize, bool),
    Settle,
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        16 => (0usize..40, prop::bool::weighted(0.2)).prop_map(|(n, a)| Op::Send(n, a)),
        2 => Just(Op::Settle),
        1 => (0u64..4).prop_map(Op::Wait),
    ]
}

fn step() -> impl Strategy<Value = SendStep> {
    prop_oneof![
        4 => Just(SendStep::AcceptAll),
        1 => (0usize..8).prop_map(SendStep::Accept),
        2 => (0u64..4).prop_map(|ms| SendStep::WouldBlock(Duration::from_millis(ms))),
        1 => Just(SendStep::Fail(io::ErrorKind::ConnectionRefused)),
    ]
}

fn to() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 53))
}

fn payload(index: u32, extra: usize) -> Vec<u8> {
    let mut bytes = index.to_be_bytes().to_vec();
    bytes.extend((0..extra).map(|i| (i as u32 + index) as u8));
    bytes
}

fn run_case(ops: Vec<Op>, steps: Vec<SendStep>, max_queued: usize) -> Result<(), TestCaseError> {
    run_paused(|| async move {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), steps);
        let (subscriber, mut events) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(DatagramConfig {
                max_queued,
                ..DatagramConfig::default()
            })
            .subscriber(subscriber)
            .bind(local())
            .await
            .expect("bind");

        // Per datagram, in the order sent: its bytes, and its answer if it has one.
        let mut sent = Vec::new();
        for op in ops {
            match op {
                Op::Send(extra, answered) => {
                    let index = sent.len() as u32;
                    let bytes = payload(index, extra);
                    let msg = SendDatagram::new(bytes.clone())
                        .to(to())
                        .tag(u64::from(index));
                    let answer = if answered {
                        Some(actix::spawn(socket.send(msg)))
                    } else {
                        socket.do_send(msg);
                        None
                    };
                    sent.push((bytes, answer));
                }
                Op::Settle => settle().await,
                Op::Wait(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            }
        }
        socket.do_send(Close::Graceful);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        settle().await;

        // Which left whole, in the order they left.
        let left: Vec<u32> = mock
            .datagrams(Handle(1))
            .into_iter()
            .filter_map(|d| {
                let index = u32::from_be_bytes(d.bytes.get(..4)?.try_into().ok()?);
                let whole = sent.get(index as usize).is_some_and(|(b, _)| *b == d.bytes);
                whole.then_some(index)
            })
            .collect();
        prop_assert!(
            left.windows(2).all(|w| w[0] < w[1]),
            "left in order: {:?}",
            left
        );
        let whole: BTreeSet<u32> = left.iter().copied().collect();

        // (tag, refused at admission for a full queue)
        let reports: Vec<(u64, bool)> = drain(&mut events)
            .into_iter()
            .filter_map(|e| match e.kind {
                DatagramEventKind::SendFailed { tag, error } => Some((
                    tag.expect("every datagram here is tagged"),
                    matches!(error, DatagramError::QueueFull { .. }),
                )),
                _ => None,
            })
            .collect();
        // A refusal is reported when it is decided, which may be before a datagram sent
        // earlier (still queued) fails: refusals in order among themselves, the other
        // failures (the transport's, every datagram sent before the close) in order among
        // themselves.
        for refused in [true, false] {
            let tags: Vec<u64> = reports
                .iter()
                .filter(|r| r.1 == refused)
                .map(|r| r.0)
                .collect();
            prop_assert!(
                tags.windows(2).all(|w| w[0] < w[1]),
                "reported once each, in the order sent (refusals: {}): {:?}",
                refused,
                tags
            );
        }
        let reported: BTreeSet<u64> = reports.iter().map(|r| r.0).collect();
        prop_assert_eq!(reported.len(), reports.len(), "each reported once");
        for (index, (_, answer)) in sent.into_iter().enumerate() {
            let out = whole.contains(&(index as u32));
            match answer {
                Some(task) => {
                    let answer = task.await.expect("join").expect("mailbox");
                    prop_assert_eq!(answer.is_ok(), out, "datagram {}: {:?}", index, answer);
                    prop_assert!(!reported.contains(&(index as u64)), "answered and reported");
                }
                None => prop_assert_eq!(
                    reported.contains(&(index as u64)),
                    !out,
                    "datagram {} left whole or was reported, once",
                    index
                ),
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(crate::support::proptest_config(192))]
    #[test]
    fn every_datagram_leaves_whole_or_fails_once_and_reports_come_in_order(
        ops in prop::collection::vec(op(), 1..120),
        steps in prop::collection::vec(step(), 0..20),
        max_queued in 2usize..40,
    ) {
        run_case(ops, steps, max_queued)?;
    }
}
