//! From the ninth round of the independent review: the reconnecting client under its
//! supervisor. Every write answered once and in write order under both unsent-writes
//! policies across resets, read errors, give-ups, closes in every state (waiting,
//! connecting, draining) and full queues; events and backoff delays as documented; the
//! client over deflate and, on a `SocketSystem` arbiter, over TLS and deflate against a
//! real server that restarts.

use std::io;
use std::time::Duration;

use crate::support::client::{client_events, ConnectGate, Events};
use crate::support::{mock_peer, run_paused, settle, watermarks};
use actix::prelude::*;
use sockactor::messages::{
    ClientEvent, ClientState, Close, GetClientState, Handle, Reconnect, Write,
};
use sockactor::{Jitter, MockTransport, ReconnectingClient, SendStep, UnsentWrites, WriteError};

const RESET: io::ErrorKind = io::ErrorKind::ConnectionReset;

/// Collects `n` WriteFailed events (tag, error), recording every other event too.
async fn failures(
    events: &mut Events,
    n: usize,
    others: &mut Vec<String>,
) -> Vec<(u64, WriteError)> {
    let mut out = Vec::new();
    while out.len() < n {
        match events.next().await {
            ClientEvent::WriteFailed { tag, error } => out.push((tag.expect("tagged"), error)),
            other => others.push(format!("{other:?}")),
        }
    }
    out
}

async fn expect_connected(events: &mut Events) {
    match events.next().await {
        ClientEvent::Connected { .. } => {}
        other => panic!("expected Connected, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// 1. Fail policy: a transport error mid-write, writes in flight, in the socket's queue
//    and in the client's queue: failures in write order.
// ---------------------------------------------------------------------------
#[test]
fn fail_policy_reset_mid_write_reports_failures_in_write_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // First write: 3 bytes taken slowly, then the connection resets.
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Slow {
                    bytes: 3,
                    after: Duration::from_millis(100),
                },
                SendStep::Fail(RESET),
            ],
        );
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .backoff(Duration::from_millis(1), Duration::from_millis(1))
            .unsent_writes(UnsentWrites::Fail)
            .socket_config(watermarks(16, 0))
            .seed(1)
            .start();
        expect_connected(&mut events).await;
        for i in 1..=6u64 {
            client.do_send(Write::new(vec![b'a' + i as u8; 10]).tag(i));
        }
        let mut others = Vec::new();
        let got = failures(&mut events, 6, &mut others).await;
        let tags: Vec<u64> = got.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, [1, 2, 3, 4, 5, 6], "{got:?} / {others:?}");
        assert_eq!(got[0].1.bytes_sent(), 3, "{got:?}");
        for (_, e) in &got[1..] {
            assert_eq!(e.bytes_sent(), 0, "{got:?}");
        }
        settle().await;
        assert!(events
            .drain()
            .iter()
            .all(|e| !matches!(e, ClientEvent::WriteFailed { .. })));
    });
}

/// Same, but the loss is noticed through a read error (the Closed event comes before the
/// socket's answers), with the in-flight write answered a second later.
#[test]
fn fail_policy_read_error_with_slow_answer_reports_failures_in_write_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [SendStep::Slow {
                bytes: 2,
                after: Duration::from_secs(1),
            }],
        );
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .backoff(Duration::from_millis(1), Duration::from_millis(1))
            .unsent_writes(UnsentWrites::Fail)
            .socket_config(watermarks(16, 0))
            .seed(1)
            .start();
        expect_connected(&mut events).await;
        for i in 1..=5u64 {
            client.do_send(Write::new(vec![b'a' + i as u8; 10]).tag(i));
        }
        settle().await;
        mock.push_read_error(Handle(1), RESET);
        // Reconnected quickly; later writes go to the new connection.
        loop {
            if let ClientEvent::Connected { .. } = events.next().await {
                break;
            }
        }
        for i in 6..=7u64 {
            client.do_send(Write::new(vec![b'a' + i as u8; 4]).tag(i));
        }
        let mut others = Vec::new();
        let got = failures(&mut events, 5, &mut others).await;
        let tags: Vec<u64> = got.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, [1, 2, 3, 4, 5], "{got:?} / {others:?}");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(events
            .drain()
            .iter()
            .all(|e| !matches!(e, ClientEvent::WriteFailed { .. })));
        assert_eq!(mock.written(Handle(2)), b"gggghhhh");
    });
}

// ---------------------------------------------------------------------------
// 2. Retain policy: lost connection, then give up: every write answered once, in order.
// ---------------------------------------------------------------------------
#[test]
fn retain_policy_loss_then_give_up_answers_everything_in_write_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Slow {
                    bytes: 4,
                    after: Duration::from_millis(50),
                },
                SendStep::Fail(RESET),
            ],
        );
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .subscriber(subscriber)
            .backoff(Duration::from_millis(10), Duration::from_millis(10))
            .max_attempts(Some(2))
            .socket_config(watermarks(16, 0))
            .seed(5)
            .start();
        expect_connected(&mut events).await;
        gate.refuse_all(true);
        for i in 1..=6u64 {
            client.do_send(Write::new(vec![b'a' + i as u8; 10]).tag(i));
        }
        let mut others = Vec::new();
        let got = failures(&mut events, 6, &mut others).await;
        let tags: Vec<u64> = got.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, [1, 2, 3, 4, 5, 6], "{got:?} / {others:?}");
        assert!(
            matches!(
                got[0].1,
                WriteError::Transport {
                    bytes_sent: 4,
                    len: 10,
                    ..
                }
            ),
            "{got:?}"
        );
        for (_, e) in &got[1..] {
            assert!(
                matches!(e, WriteError::GaveUp { attempts: 2, .. }),
                "{got:?}"
            );
        }
        settle().await;
        others.extend(events.drain().iter().map(|e| format!("{e:?}")));
        let kinds: Vec<&str> = others
            .iter()
            .map(|s| s.split([' ', '(', '{']).next().unwrap_or(""))
            .collect();
        assert_eq!(
            kinds,
            ["Disconnected", "Reconnecting", "Reconnecting", "GaveUp"],
            "{others:?}"
        );
        assert_eq!(mock.written(Handle(1)), b"bbbb");
    });
}

// ---------------------------------------------------------------------------
// 3. Close at each state.
// ---------------------------------------------------------------------------

/// Graceful close while the first connect is under way: held writes answered Closed.
#[test]
fn graceful_close_while_connecting_answers_held_writes_closed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.delay_connect(mock_peer(), Duration::from_secs(1));
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .start();
        settle().await;
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Connecting { attempt: 1 }
        );
        let a = client.send(Write::new(&b"one"[..]));
        let b = client.send(Write::new(&b"two!"[..]));
        settle().await;
        client.do_send(Close::Graceful);
        match a.await.unwrap() {
            Err(WriteError::Closed {
                bytes_sent: 0,
                len: 3,
            }) => {}
            other => panic!("{other:?}"),
        }
        match b.await.unwrap() {
            Err(WriteError::Closed {
                bytes_sent: 0,
                len: 4,
            }) => {}
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rest = events.drain();
        assert!(rest.is_empty(), "{rest:?}");
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Closed
        );
        // The socket the late connect made is closed.
        for h in mock.handles() {
            assert!(mock.is_closed(h), "{h:?} open");
        }
    });
}

// ---------------------------------------------------------------------------
// 4. Lifecycle: give up, Reconnect, attempts, backoff.
// ---------------------------------------------------------------------------

fn kind(e: &ClientEvent) -> &'static str {
    match e {
        ClientEvent::Connected { .. } => "Connected",
        ClientEvent::Disconnected { .. } => "Disconnected",
        ClientEvent::Reconnecting { .. } => "Reconnecting",
        ClientEvent::GaveUp { .. } => "GaveUp",
        ClientEvent::Received(..) => "Received",
        ClientEvent::Eof => "Eof",
        ClientEvent::Idle { .. } => "Idle",
        ClientEvent::WriteFailed { .. } => "WriteFailed",
        _ => "other",
    }
}

#[test]
fn max_attempts_zero_counts_as_one_and_reconnect_starts_over() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        gate.refuse_all(true);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .subscriber(subscriber)
            .max_attempts(Some(0))
            .start();
        match events.next().await {
            ClientEvent::GaveUp { attempts: 1, .. } => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(gate.calls().len(), 1);
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::GaveUp { attempts: 1 }
        );
        match client.send(Write::new(&b"x"[..]).tag(3)).await.unwrap() {
            Err(WriteError::GaveUp {
                len: 1,
                attempts: 1,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // Reconnect again fails -> GaveUp again with attempts 1.
        assert!(client.send(Reconnect).await.unwrap());
        match events.next().await {
            ClientEvent::GaveUp { attempts: 1, .. } => {}
            other => panic!("{other:?}"),
        }
        gate.refuse_all(false);
        let w = client.send(Write::new(&b"late"[..]));
        assert!(client.send(Reconnect).await.unwrap());
        match events.next().await {
            ClientEvent::Connected { attempt: 1, .. } => {}
            other => panic!("{other:?}"),
        }
        // The write made while GaveUp was refused.
        assert!(matches!(w.await.unwrap(), Err(WriteError::GaveUp { .. })));
        assert!(!client.send(Reconnect).await.unwrap());
        settle().await;
        let rest = events.drain();
        assert!(rest.is_empty(), "{rest:?}");
    });
}

/// Reconnect answers false while connecting, waiting, connected, draining or closed.
#[test]
fn reconnect_is_false_in_every_state_but_gave_up() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        mock.delay_connect(mock_peer(), Duration::from_millis(100));
        gate.refuse_next(1);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .subscriber(subscriber)
            .backoff(Duration::from_secs(1), Duration::from_secs(1))
            .jitter(Jitter::None)
            .socket_config(watermarks(4, 0))
            .start();
        // First attempt refused at once -> waiting.
        match events.next().await {
            ClientEvent::Reconnecting { attempt: 2, delay } => {
                assert_eq!(delay, Duration::from_secs(1))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Waiting { attempt: 2 }
        );
        assert!(!client.send(Reconnect).await.unwrap());
        tokio::time::sleep(Duration::from_millis(1010)).await;
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Connecting { attempt: 2 }
        );
        assert!(!client.send(Reconnect).await.unwrap());
        match events.next().await {
            ClientEvent::Connected { attempt: 2, .. } => {}
            other => panic!("{other:?}"),
        }
        assert!(!client.send(Reconnect).await.unwrap());
        client.do_send(Close::Abort);
        assert!(!client.send(Reconnect).await.unwrap());
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Closed
        );
        assert_eq!(gate.calls().len(), 2);
    });
}

/// After several failed connects, a connection resets the backoff: after its loss the
/// next delay is drawn from the base again, and the attempt count restarts at 1.
#[test]
fn backoff_resets_after_a_connect_and_delays_match_the_attempts() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        gate.refuse_next(5);
        let (subscriber, mut events) = client_events();
        let base = Duration::from_millis(100);
        let cap = Duration::from_millis(1000);
        let _client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .subscriber(subscriber)
            .backoff(base, cap)
            .jitter(Jitter::Full)
            .seed(77)
            .start();
        let mut delays = Vec::new();
        loop {
            match events.next().await {
                ClientEvent::Reconnecting { attempt, delay } => delays.push((attempt, delay)),
                ClientEvent::Connected { attempt, .. } => {
                    assert_eq!(attempt, 6);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        for (i, (attempt, delay)) in delays.iter().enumerate() {
            assert_eq!(*attempt as usize, i + 2);
            let nominal = (base * (1 << i)).min(cap);
            assert!(*delay <= nominal, "{delay:?} > {nominal:?}");
        }
        // The measured waits between calls equal the announced delays.
        let calls = gate.calls();
        for (i, (_, delay)) in delays.iter().enumerate() {
            let waited = calls[i + 1] - calls[i];
            assert!(
                waited >= *delay && waited <= *delay + Duration::from_millis(2),
                "attempt {}: {waited:?} vs {delay:?}",
                i + 2
            );
        }
        // Lose the connection: delay back to [0, base], attempt 1.
        let live = *mock.handles().iter().max().expect("a handle");
        mock.push_read_error(live, RESET);
        match events.next().await {
            ClientEvent::Disconnected { cause: Some(_) } => {}
            other => panic!("{other:?}"),
        }
        match events.next().await {
            ClientEvent::Reconnecting { attempt: 1, delay } => assert!(delay <= base, "{delay:?}"),
            other => panic!("{other:?}"),
        }
        match events.next().await {
            ClientEvent::Connected { attempt: 1, .. } => {}
            other => panic!("{other:?}"),
        }
    });
}

/// Equal jitter after a loss plus failed connects: each delay within [n/2, n].
#[test]
fn equal_jitter_after_a_loss_stays_within_half_to_full_nominal() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        let (subscriber, mut events) = client_events();
        let base = Duration::from_millis(40);
        let cap = Duration::from_millis(300);
        let _client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .subscriber(subscriber)
            .backoff(base, cap)
            .seed(3)
            .start();
        expect_connected(&mut events).await;
        gate.refuse_next(6);
        mock.push_eof(Handle(1));
        let mut seen = Vec::new();
        let mut n = 0u32;
        loop {
            let e = events.next().await;
            seen.push(kind(&e));
            match e {
                ClientEvent::Reconnecting { attempt, delay } => {
                    n += 1;
                    assert_eq!(attempt, n);
                    let nominal = (base * (1 << (n - 1))).min(cap);
                    assert!(
                        delay >= nominal / 2 && delay <= nominal,
                        "{n}: {delay:?} vs {nominal:?}"
                    );
                }
                ClientEvent::Connected { attempt, .. } => {
                    assert_eq!(attempt, 7);
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(seen[..2], ["Eof", "Disconnected"], "{seen:?}");
    });
}

// ---------------------------------------------------------------------------
// 5. Queue limits.
// ---------------------------------------------------------------------------

/// A fire-and-forget write refused by a full client queue is reported with its tag and
/// its payload; the writes held before it go out in order.
#[test]
fn queue_full_do_send_reports_the_payload_and_keeps_the_rest() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.delay_connect(mock_peer(), Duration::from_secs(1));
        let (subscriber, mut events) = client_events();
        let _client = {
            let c = ReconnectingClient::builder(mock_peer())
                .functions(mock.functions())
                .subscriber(subscriber)
                .queue_limits(1 << 20, 2)
                .start();
            c.do_send(Write::new(&b"one|"[..]).tag(1));
            c.do_send(Write::new(&b"two|"[..]).tag(2));
            c.do_send(Write::new(&b"three"[..]).tag(3));
            c
        };
        match events.next().await {
            ClientEvent::WriteFailed {
                tag: Some(3),
                error: WriteError::QueueFull { payload, .. },
            } => {
                assert_eq!(payload.len(), 5);
            }
            other => panic!("{other:?}"),
        }
        expect_connected(&mut events).await;
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"one|two|");
    });
}

/// Retained writes go back into the client's queue even past its limits; new writes
/// are refused meanwhile, and the retained ones go out first, in order.
#[test]
fn retained_writes_past_the_queue_limit_are_all_kept_and_replayed_in_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .queue_limits(1 << 20, 2)
            .backoff(Duration::from_millis(10), Duration::from_millis(10))
            .start();
        expect_connected(&mut events).await;
        let answers: Vec<_> = (0..5u8)
            .map(|i| client.send(Write::new(vec![b'a' + i; 3])))
            .collect();
        settle().await;
        mock.delay_connect(mock_peer(), Duration::from_secs(1));
        mock.push_eof(Handle(1));
        loop {
            if let ClientEvent::Reconnecting { .. } = events.next().await {
                break;
            }
        }
        // 5 retained, limit 2: new write refused.
        match client.send(Write::new(&b"new"[..])).await.unwrap() {
            Err(WriteError::QueueFull { payload, .. }) => assert_eq!(payload.len(), 3),
            other => panic!("{other:?}"),
        }
        expect_connected(&mut events).await;
        for a in answers {
            assert_eq!(a.await.unwrap().expect("written").len, 3);
        }
        assert_eq!(mock.written(Handle(2)), b"aaabbbcccdddeee");
    });
}

// ---------------------------------------------------------------------------
// 6. Closes after a loss, with the dead socket's answers still to come.
// ---------------------------------------------------------------------------

fn slow_then_loss_client(
    mock: &MockTransport,
    policy: UnsentWrites,
) -> (Addr<ReconnectingClient>, Events) {
    mock.script_sendv(
        Handle(1),
        [SendStep::Slow {
            bytes: 2,
            after: Duration::from_secs(1),
        }],
    );
    // Later connections are slow to come, so the client stays Waiting/Connecting.
    let (subscriber, events) = client_events();
    let client = ReconnectingClient::builder(mock_peer())
        .functions(mock.functions())
        .subscriber(subscriber)
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
        .unsent_writes(policy)
        .socket_config(watermarks(16, 0))
        .seed(1)
        .start();
    (client, events)
}

async fn loss_then_close(
    policy: UnsentWrites,
    close: Close,
    state_before: &str,
) -> Vec<(u64, WriteError)> {
    let mock = MockTransport::start();
    let (client, mut events) = slow_then_loss_client(&mock, policy);
    expect_connected(&mut events).await;
    for i in 1..=4u64 {
        client.do_send(Write::new(vec![b'a' + i as u8; 10]).tag(i));
    }
    settle().await;
    mock.delay_connect(mock_peer(), Duration::from_secs(30));
    mock.push_read_error(Handle(1), RESET);
    loop {
        if let ClientEvent::Reconnecting { .. } = events.next().await {
            break;
        }
    }
    if state_before == "connecting" {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Connecting { .. }
        ));
    }
    client.do_send(Write::new(&b"while-down"[..]).tag(5));
    settle().await;
    client.do_send(close);
    let mut others = Vec::new();
    let got = failures(&mut events, 5, &mut others).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let extra: Vec<_> = events.drain();
    assert!(
        extra.iter().all(|e| !matches!(
            e,
            ClientEvent::WriteFailed { .. }
                | ClientEvent::Connected { .. }
                | ClientEvent::Reconnecting { .. }
        )),
        "{extra:?}"
    );
    assert_eq!(
        client.send(GetClientState).await.unwrap(),
        ClientState::Closed
    );
    got
}

fn tags(got: &[(u64, WriteError)]) -> Vec<u64> {
    got.iter().map(|(t, _)| *t).collect()
}

#[test]
fn fail_policy_abort_while_waiting_after_a_loss_keeps_write_order() {
    run_paused(|| async {
        let got = loss_then_close(UnsentWrites::Fail, Close::Abort, "waiting").await;
        assert_eq!(tags(&got), [1, 2, 3, 4, 5], "{got:?}");
        assert_eq!(got[0].1.bytes_sent(), 2, "{got:?}");
        assert!(
            matches!(got[4].1, WriteError::Aborted { bytes_sent: 0, .. }),
            "{got:?}"
        );
    });
}

#[test]
fn retain_policy_graceful_close_while_waiting_after_a_loss_keeps_write_order() {
    run_paused(|| async {
        let got = loss_then_close(UnsentWrites::Retain, Close::Graceful, "waiting").await;
        assert_eq!(tags(&got), [1, 2, 3, 4, 5], "{got:?}");
        assert_eq!(got[0].1.bytes_sent(), 2, "{got:?}");
        assert!(
            matches!(got[4].1, WriteError::Closed { bytes_sent: 0, .. }),
            "{got:?}"
        );
    });
}

#[test]
fn retain_policy_abort_while_connecting_after_a_loss_keeps_write_order() {
    run_paused(|| async {
        let got = loss_then_close(UnsentWrites::Retain, Close::Abort, "connecting").await;
        assert_eq!(tags(&got), [1, 2, 3, 4, 5], "{got:?}");
    });
}

#[test]
fn fail_policy_graceful_while_connecting_after_a_loss_keeps_write_order() {
    run_paused(|| async {
        let got = loss_then_close(UnsentWrites::Fail, Close::Graceful, "connecting").await;
        assert_eq!(tags(&got), [1, 2, 3, 4, 5], "{got:?}");
    });
}

/// Draining (writes held for room in the socket's queue), then the connection is reset:
/// every write answered once, in write order, and the client is closed for good.
#[test]
fn a_loss_while_draining_answers_everything_in_order_and_does_not_reconnect() {
    for policy in [UnsentWrites::Retain, UnsentWrites::Fail] {
        run_paused(|| async move {
            let mock = MockTransport::start();
            mock.script_sendv(Handle(1), [SendStep::Accept(3), SendStep::Hold]);
            let (subscriber, mut events) = client_events();
            let client = ReconnectingClient::builder(mock_peer())
                .functions(mock.functions())
                .subscriber(subscriber)
                .backoff(Duration::from_millis(10), Duration::from_millis(10))
                .unsent_writes(policy)
                .socket_config(watermarks(12, 0))
                .start();
            expect_connected(&mut events).await;
            for i in 1..=5u64 {
                client.do_send(Write::new(vec![b'a' + i as u8; 10]).tag(i));
            }
            settle().await;
            client.do_send(Close::Graceful);
            settle().await;
            assert_eq!(
                client.send(GetClientState).await.unwrap(),
                ClientState::Draining
            );
            mock.push_read_error(Handle(1), RESET);
            let mut others = Vec::new();
            let got = failures(&mut events, 5, &mut others).await;
            assert_eq!(tags(&got), [1, 2, 3, 4, 5], "{policy:?}: {got:?}");
            assert_eq!(got[0].1.bytes_sent(), 3);
            tokio::time::sleep(Duration::from_secs(10)).await;
            others.extend(events.drain().iter().map(|e| kind(e).to_string()));
            assert!(
                !others
                    .iter()
                    .any(|k| k.contains("Reconnecting") || k.contains("Connected {")),
                "{others:?}"
            );
            assert_eq!(mock.handles().len(), 1);
            assert_eq!(
                client.send(GetClientState).await.unwrap(),
                ClientState::Closed
            );
        });
    }
}

// ---------------------------------------------------------------------------
// 7. Idle close.
// ---------------------------------------------------------------------------

#[test]
fn an_idle_close_reconnects_and_keeps_writes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .backoff(Duration::from_millis(10), Duration::from_millis(10))
            .socket_config(sockactor::SocketConfig {
                limits: sockactor::PeerLimits {
                    idle: Some(Duration::from_secs(5)),
                    close_when_idle: true,
                    ..Default::default()
                },
                ..Default::default()
            })
            .start();
        expect_connected(&mut events).await;
        let mut seen = Vec::new();
        loop {
            let e = events.next().await;
            seen.push(kind(&e));
            if let ClientEvent::Connected { attempt, .. } = e {
                assert_eq!(attempt, 1);
                break;
            }
        }
        assert_eq!(seen, ["Idle", "Disconnected", "Reconnecting", "Connected"]);
        let w = client.send(Write::new(&b"after"[..])).await.unwrap();
        assert_eq!(w.expect("written").len, 5);
        assert_eq!(mock.written(Handle(2)), b"after");
    });
}

// ---------------------------------------------------------------------------
// 8. Dropping the last address.
// ---------------------------------------------------------------------------

/// The last address dropped while the connect is under way: the write it took still
/// goes out and is answered, then the connection closes.
#[test]
fn dropping_the_address_while_connecting_still_sends_the_write() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.delay_connect(mock_peer(), Duration::from_secs(1));
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .start();
        let w = client.send(Write::new(&b"bye"[..]));
        settle().await;
        drop(client);
        let answer = tokio::time::timeout(Duration::from_secs(60), w).await;
        assert_eq!(
            answer
                .expect("answered")
                .expect("mailbox")
                .expect("written")
                .len,
            3
        );
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"bye");
        assert!(mock.is_closed(Handle(1)));
    });
}

// ---------------------------------------------------------------------------
// 9. Real loopback: TLS + deflate client on a SocketSystem arbiter, writes from another
//    OS thread, a server that is killed and restarts on the same port.
// ---------------------------------------------------------------------------

mod real {
    use super::*;
    use crate::support::tls::{client_config, pki};
    use sockactor::filters::{Compress, Tls};
    use sockactor::messages::{
        ListenerEvent, SocketEvent, SocketEventKind, SocketId, StopListening,
    };
    use sockactor::{Listener, Socket, SocketFunctions, SocketSystem};
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    pub struct Log {
        pub order: Vec<SocketId>,
        pub bytes: HashMap<SocketId, Vec<u8>>,
    }

    pub struct Recorder {
        log: Arc<Mutex<Log>>,
        sockets: HashMap<SocketId, Addr<Socket>>,
    }

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<ListenerEvent> for Recorder {
        type Result = ();
        fn handle(&mut self, msg: ListenerEvent, _: &mut Context<Self>) {
            if let ListenerEvent::Accepted { socket, id, .. } = msg {
                self.sockets.insert(id, socket);
                let mut log = self.log.lock().unwrap();
                log.order.push(id);
                log.bytes.entry(id).or_default();
            }
        }
    }

    impl Handler<SocketEvent> for Recorder {
        type Result = ();
        fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
            match msg.kind {
                SocketEventKind::Received(b) => self
                    .log
                    .lock()
                    .unwrap()
                    .bytes
                    .entry(msg.socket)
                    .or_default()
                    .extend_from_slice(&b),
                SocketEventKind::Eof => {
                    if let Some(s) = self.sockets.get(&msg.socket) {
                        s.do_send(Close::Graceful);
                    }
                }
                SocketEventKind::Closed { .. } => {
                    self.sockets.remove(&msg.socket);
                }
                _ => {}
            }
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    pub struct KillAll;

    impl Handler<KillAll> for Recorder {
        type Result = ();
        fn handle(&mut self, _: KillAll, _: &mut Context<Self>) {
            for (_, s) in self.sockets.drain() {
                s.do_send(Close::Abort);
            }
        }
    }

    async fn serve(
        server_cfg: Arc<rustls::ServerConfig>,
        recorder: Addr<Recorder>,
        addr: SocketAddr,
    ) -> (Addr<Listener>, SocketAddr) {
        use sockactor::messages::Address;
        let sub = recorder.clone();
        let functions =
            Compress::new().wrap(Tls::server(server_cfg).wrap(SocketFunctions::system()));
        Listener::builder()
            .functions(functions)
            .subscriber(recorder.recipient())
            .socket_builder(move |_| Socket::builder().subscriber(sub.clone().recipient()))
            .bind(addr)
            .await
            .map(|(l, a)| match a {
                Address::Inet(a) => (l, a),
                other => panic!("{other:?}"),
            })
            .expect("bind")
    }

    fn record(i: u64) -> Vec<u8> {
        format!("[{i:014}]").into_bytes()
    }

    /// Parses a connection's stream into record numbers, allowing a cut record at the end.
    fn parse(stream: &[u8]) -> (Vec<u64>, usize) {
        let mut out = Vec::new();
        let mut chunks = stream.chunks_exact(16);
        for c in &mut chunks {
            assert!(
                c[0] == b'[' && c[15] == b']',
                "not a record: {:?}",
                String::from_utf8_lossy(c)
            );
            out.push(std::str::from_utf8(&c[1..15]).unwrap().parse().unwrap());
        }
        (out, chunks.remainder().len())
    }

    #[actix::test]
    async fn a_tls_deflate_client_on_an_arbiter_fed_by_another_thread_survives_server_kills() {
        let limit = Duration::from_secs(30);
        let pki = pki(&["localhost"]);
        let log = Arc::new(Mutex::new(Log::default()));
        let recorder = Recorder {
            log: log.clone(),
            sockets: HashMap::new(),
        }
        .start();
        let (listener, addr) = serve(
            pki.server.clone(),
            recorder.clone(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await;

        let system = SocketSystem::builder().arbiters(1).start().expect("system");
        let (subscriber, mut events) = client_events();
        let roots = pki.roots.clone();
        let client = system
            .run_on(0, move || async move {
                let functions = Compress::new().wrap(
                    Tls::client(client_config(roots), "localhost")
                        .expect("name")
                        .wrap(SocketFunctions::system()),
                );
                ReconnectingClient::builder(addr)
                    .functions(functions)
                    .subscriber(subscriber)
                    .backoff(Duration::from_millis(10), Duration::from_millis(50))
                    .queue_limits(1 << 24, 1 << 20)
                    .start()
            })
            .await
            .expect("run_on");

        const N: u64 = 3000;
        let producer = {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..N {
                    client.do_send(Write::new(record(i)).tag(i));
                    if i % 50 == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            })
        };
        // Kill the server twice while the producer writes.
        let mut listener = listener;
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(25)).await;
            listener.do_send(StopListening);
            recorder.do_send(KillAll);
            tokio::time::sleep(Duration::from_millis(30)).await;
            let (l, _) = serve(pki.server.clone(), recorder.clone(), addr).await;
            listener = l;
        }
        producer.join().expect("producer");
        // A last marker write, awaited: once answered Ok, every earlier write is decided.
        let last = tokio::time::timeout(limit, client.send(Write::new(record(N))))
            .await
            .expect("in time")
            .expect("mailbox");
        assert!(last.is_ok(), "{last:?}");
        client.do_send(Close::Graceful);
        // Wait until the server has the marker.
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let done = {
                let log = log.lock().unwrap();
                log.order
                    .last()
                    .map(|id| log.bytes[id].ends_with(&record(N)))
                    .unwrap_or(false)
            };
            if done {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the marker never arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut failed = Vec::new();
        let mut kinds = Vec::new();
        for e in events.drain() {
            match e {
                ClientEvent::WriteFailed { tag, error } => failed.push((tag.unwrap(), error)),
                other => kinds.push(kind(&other)),
            }
        }
        // Failures in write order, each reported once.
        for w in failed.windows(2) {
            assert!(
                w[0].0 < w[1].0,
                "failures out of order: {:?}",
                failed.iter().map(|f| f.0).collect::<Vec<_>>()
            );
        }
        {
            // Every record at most once across all connections, in increasing order.
            let log = log.lock().unwrap();
            let mut seen = Vec::new();
            for id in &log.order {
                let (recs, _cut) = parse(&log.bytes[id]);
                seen.extend(recs);
            }
            for w in seen.windows(2) {
                assert!(
                    w[0] < w[1],
                    "records out of order or repeated: {} then {}",
                    w[0],
                    w[1]
                );
            }
            assert_eq!(seen.last(), Some(&N));
        }
        system.shutdown().await.expect("shutdown");
    }
}

// ---------------------------------------------------------------------------
// 10. Deflate over the mock: retained writes open the next connection's own stream.
// ---------------------------------------------------------------------------
#[test]
fn over_deflate_retained_writes_replay_in_order_on_a_fresh_stream() {
    run_paused(|| async {
        use flate2::FlushDecompress;
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(
                sockactor::filters::Compress::new()
                    .max_buffered(1024)
                    .wrap(mock.functions()),
            )
            .subscriber(subscriber)
            .backoff(Duration::from_millis(10), Duration::from_millis(10))
            .start();
        expect_connected(&mut events).await;
        let payloads: Vec<Vec<u8>> = (0..10u64)
            .map(|i| crate::support::pattern(1000, i + 1))
            .collect();
        let answers: Vec<_> = payloads
            .iter()
            .map(|p| client.send(Write::new(p.clone())))
            .collect();
        settle().await;
        mock.script_sendv(Handle(1), [SendStep::Fail(RESET)]);
        mock.release(Handle(1));
        loop {
            if let ClientEvent::Connected { .. } = events.next().await {
                break;
            }
        }
        let mut first_retained = None;
        for (i, a) in answers.into_iter().enumerate() {
            match a.await.unwrap() {
                Ok(w) => {
                    assert_eq!(w.len, 1000);
                    first_retained.get_or_insert(i);
                }
                Err(e) => assert!(
                    first_retained.is_none(),
                    "failure {i} after a success: {e:?}"
                ),
            }
        }
        client.do_send(Close::Graceful);
        settle().await;
        let first = first_retained.expect("some retained");
        let mut inflater = flate2::Decompress::new(false);
        let mut out = Vec::with_capacity(1 << 20);
        inflater
            .decompress_vec(&mock.written(Handle(2)), &mut out, FlushDecompress::Sync)
            .expect("a valid deflate stream");
        let expected: Vec<u8> = payloads[first..].concat();
        assert_eq!(out.len(), expected.len(), "first retained {first}");
        assert!(out == expected);
    });
}

/// Companion of `abort_after_graceful_close_aborts_the_draining_socket`: while the client
/// itself still holds writes (ClientState::Draining) an Abort does reach the socket.
#[test]
fn abort_while_the_client_is_still_draining_aborts_the_socket() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .socket_config(watermarks(4, 0))
            .start();
        expect_connected(&mut events).await;
        let a = client.send(Write::new(&b"stuck"[..]));
        let b = client.send(Write::new(&b"held"[..]));
        settle().await;
        client.do_send(Close::Graceful);
        settle().await;
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Draining
        );
        client.do_send(Close::Abort);
        for x in [a, b] {
            match tokio::time::timeout(Duration::from_secs(60), x).await {
                Ok(Ok(Err(WriteError::Aborted { .. }))) => {}
                other => panic!("expected aborted, got {other:?}"),
            }
        }
        settle().await;
        assert!(mock.is_closed(Handle(1)));
    });
}
