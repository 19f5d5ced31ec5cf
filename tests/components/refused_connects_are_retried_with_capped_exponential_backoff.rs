//! Refused connects are retried after delays that grow exponentially from the base,
//! stay within their jitter bounds, never exceed the cap, and are reproducible from the
//! seed; the attempt that finally connects is reported, and a write made meanwhile goes
//! out on that connection.

use std::time::Duration;

use crate::support::client::{client_events, ConnectGate, Events};
use crate::support::{mock_peer, run_paused};
use sockactor::messages::{ClientEvent, Handle, Write};
use sockactor::{Jitter, MockTransport, ReconnectingClient};

const BASE: Duration = Duration::from_millis(100);
const CAP: Duration = Duration::from_millis(1000);
const REFUSALS: u32 = 7;

/// `base · 2^(failures − 1)`, capped: written out, not taken from the library.
fn nominal(failures: u32) -> Duration {
    (BASE * 2u32.pow(failures - 1)).min(CAP)
}

/// Runs a client against `REFUSALS` refused connects and returns the announced
/// `(attempt, delay)` pairs, checking what every scenario shares.
async fn refused_then_connected(jitter: Jitter, seed: u64) -> Vec<(u32, Duration)> {
    let mock = MockTransport::start();
    let gate = ConnectGate::new(&mock);
    gate.refuse_next(REFUSALS);
    let (subscriber, mut events) = client_events();
    let client = ReconnectingClient::builder(mock_peer())
        .functions(gate.functions())
        .subscriber(subscriber)
        .backoff(BASE, CAP)
        .jitter(jitter)
        .seed(seed)
        .start();
    let early = client.send(Write::new(&b"made while refused"[..]));
    let announced = reconnecting_until_connected(&mut events, REFUSALS + 1).await;
    let written = early.await.expect("mailbox").expect("written");
    assert_eq!(written.len, 18);
    // Every attempt opened a handle; the last one connected.
    let connected = Handle(u64::from(REFUSALS) + 1);
    assert_eq!(mock.handles().len() as u32, REFUSALS + 1);
    assert_eq!(mock.written(connected), b"made while refused");

    // Each attempt came exactly its announced delay after the previous one (tokio's
    // timer has millisecond resolution, so allow up to 1 ms more).
    let calls = gate.calls();
    assert_eq!(calls.len() as u32, REFUSALS + 1);
    for (i, (_, delay)) in announced.iter().enumerate() {
        let gap = calls[i + 1] - calls[i];
        assert!(
            gap >= *delay && gap <= *delay + Duration::from_millis(1),
            "attempt {} came {gap:?} after the previous one, announced {delay:?}",
            i + 2
        );
    }
    announced
}

/// Collects `Reconnecting` events until `Connected`, which must name `attempt`.
async fn reconnecting_until_connected(events: &mut Events, attempt: u32) -> Vec<(u32, Duration)> {
    let mut announced = Vec::new();
    loop {
        match events.next().await {
            ClientEvent::Reconnecting { attempt, delay } => announced.push((attempt, delay)),
            ClientEvent::Connected { attempt: a, .. } => {
                assert_eq!(a, attempt, "the attempt that connected");
                return announced;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
}

#[test]
fn equal_jitter_delays_double_within_half_to_full_nominal_and_stop_at_the_cap() {
    run_paused(|| async {
        let announced = refused_then_connected(Jitter::Equal, 11).await;
        let attempts: Vec<u32> = announced.iter().map(|(a, _)| *a).collect();
        assert_eq!(attempts, (2..=REFUSALS + 1).collect::<Vec<_>>());
        for (i, (_, delay)) in announced.iter().enumerate() {
            let n = nominal(i as u32 + 1);
            assert!(
                *delay >= n / 2 && *delay <= n,
                "delay {delay:?} outside [{:?}, {n:?}]",
                n / 2
            );
            assert!(*delay <= CAP);
        }
        // Equal jitter keeps the growth: while the nominal delay still doubles, each
        // delay is at least the one before (at the cap they are drawn alike).
        for (i, pair) in announced.windows(2).enumerate() {
            let failures = i as u32 + 2;
            if nominal(failures) == 2 * nominal(failures - 1) {
                assert!(
                    pair[1].1 >= pair[0].1,
                    "{:?} then {:?}",
                    pair[0].1,
                    pair[1].1
                );
            }
        }
        // And the cap is reached: the last nominal delays are the cap itself.
        assert_eq!(nominal(REFUSALS), CAP);
    });
}

#[test]
fn full_jitter_delays_stay_between_zero_and_the_capped_nominal() {
    run_paused(|| async {
        let announced = refused_then_connected(Jitter::Full, 5).await;
        for (i, (_, delay)) in announced.iter().enumerate() {
            assert!(*delay <= nominal(i as u32 + 1));
            assert!(*delay <= CAP);
        }
    });
}

#[test]
fn without_jitter_the_delays_are_the_nominal_ones() {
    run_paused(|| async {
        let announced = refused_then_connected(Jitter::None, 0).await;
        let delays: Vec<Duration> = announced.iter().map(|(_, d)| *d).collect();
        let expected: Vec<Duration> = (1..=REFUSALS).map(nominal).collect();
        assert_eq!(delays, expected);
    });
}

#[test]
fn the_same_seed_draws_the_same_delays_and_another_seed_others() {
    let first = run_paused(|| refused_then_connected(Jitter::Full, 1234));
    let again = run_paused(|| refused_then_connected(Jitter::Full, 1234));
    let other = run_paused(|| refused_then_connected(Jitter::Full, 4321));
    assert_eq!(first, again);
    assert_ne!(first, other);
}
