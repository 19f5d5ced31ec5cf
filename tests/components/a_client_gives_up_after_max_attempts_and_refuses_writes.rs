//! After `max_attempts` failed connects the client gives up: `GaveUp` with the attempt
//! count and the last error, writes it held and every later write answered with
//! `WriteError::GaveUp` (never left hanging, also fire-and-forget ones, reported in the
//! order sent), no further
//! attempt; a `Reconnect` starts over from attempt 1.

use std::time::Duration;

use crate::support::client::{client_events, ConnectGate};
use crate::support::{mock_peer, run_paused, settle};
use sockactor::messages::{ClientEvent, ClientState, GetClientState, Handle, Reconnect, Write};
use sockactor::{MockTransport, ReconnectingClient, SocketError, WriteError};

#[test]
fn three_refusals_with_three_attempts_allowed_give_up_and_refuse_writes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        gate.refuse_all(true);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .subscriber(subscriber)
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .max_attempts(Some(3))
            .start();
        let held = client.send(Write::new(&b"never sent"[..]));
        for attempt in [2, 3] {
            match events.next().await {
                ClientEvent::Reconnecting { attempt: a, .. } => assert_eq!(a, attempt),
                other => panic!("expected Reconnecting, got {other:?}"),
            }
        }
        match events.next().await {
            ClientEvent::GaveUp {
                attempts,
                last_error,
            } => {
                assert_eq!(attempts, 3);
                assert!(
                    matches!(last_error, SocketError::Refused(_)),
                    "{last_error:?}"
                );
            }
            other => panic!("expected GaveUp, got {other:?}"),
        }
        match held.await.expect("mailbox") {
            Err(WriteError::GaveUp { len, attempts, .. }) => assert_eq!((len, attempts), (10, 3)),
            other => panic!("expected GaveUp, got {other:?}"),
        }
        match client
            .send(Write::new(&b"late"[..]))
            .await
            .expect("mailbox")
        {
            Err(e @ WriteError::GaveUp { len: 4, .. }) => assert_eq!(e.bytes_sent(), 0),
            other => panic!("expected GaveUp, got {other:?}"),
        }
        client.do_send(Write::new(&b"fire and forget"[..]).tag(7));
        match events.next().await {
            ClientEvent::WriteFailed {
                tag: Some(7),
                error: WriteError::GaveUp { .. },
            } => {}
            other => panic!("expected the fire-and-forget failure, got {other:?}"),
        }
        // A burst of them is reported in the order sent (each once went through a
        // message to self, which actix may handle out of order).
        for tag in 100..108 {
            client.do_send(Write::new(&b"burst"[..]).tag(tag));
        }
        let mut tags = Vec::new();
        for _ in 100..108 {
            match events.next().await {
                ClientEvent::WriteFailed {
                    tag: Some(tag),
                    error: WriteError::GaveUp { .. },
                } => tags.push(tag),
                other => panic!("expected a fire-and-forget failure, got {other:?}"),
            }
        }
        assert_eq!(tags, (100..108).collect::<Vec<_>>(), "in the order sent");
        assert_eq!(
            client.send(GetClientState).await.expect("mailbox"),
            ClientState::GaveUp { attempts: 3 }
        );

        // No further attempt, however long we wait.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(gate.calls().len(), 3);
        assert!(events.drain().is_empty());

        // Starting over: attempt 1 again, at once.
        gate.refuse_all(false);
        assert!(client.send(Reconnect).await.expect("mailbox"));
        match events.next().await {
            ClientEvent::Connected { attempt, .. } => assert_eq!(attempt, 1),
            other => panic!("expected Connected, got {other:?}"),
        }
        let written = client
            .send(Write::new(&b"after"[..]))
            .await
            .expect("mailbox")
            .expect("written");
        assert_eq!(written.len, 5);
        assert_eq!(mock.written(Handle(4)), b"after");
        assert!(
            !client.send(Reconnect).await.expect("mailbox"),
            "a connected client does not start over"
        );
        settle().await;
        assert_eq!(gate.calls().len(), 4);
    });
}

#[test]
fn connects_that_time_out_count_as_failed_attempts() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.delay_connect(mock_peer(), Duration::from_secs(3600));
        let (subscriber, mut events) = client_events();
        let started = tokio::time::Instant::now();
        let _client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .connect_timeout(Some(Duration::from_secs(2)))
            .backoff(Duration::from_secs(1), Duration::from_secs(1))
            .jitter(sockactor::Jitter::None)
            .max_attempts(Some(2))
            .start();
        match events.next().await {
            ClientEvent::Reconnecting { attempt: 2, delay } => {
                assert_eq!(delay, Duration::from_secs(1))
            }
            other => panic!("expected Reconnecting, got {other:?}"),
        }
        match events.next().await {
            ClientEvent::GaveUp {
                attempts: 2,
                last_error: SocketError::TimedOut(limit),
            } => assert_eq!(limit, Duration::from_secs(2)),
            other => panic!("expected GaveUp after timeouts, got {other:?}"),
        }
        // Two 2 s timeouts and one 1 s backoff.
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(5) && elapsed <= Duration::from_millis(5010),
            "{elapsed:?}"
        );
    });
}

/// With nobody subscribed, a fire-and-forget write the client refuses is a warning, not
/// silence.
#[test]
fn a_refused_fire_and_forget_write_with_nobody_subscribed_is_a_warning() {
    let (log, _guard) = crate::support::WarnLog::start();
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        gate.refuse_all(true);
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .max_attempts(Some(1))
            .start();
        tokio::time::sleep(Duration::from_secs(1)).await;
        client.do_send(Write::new(&b"fire and forget"[..]).tag(7));
        // An answered write behind it: the refusal before it was handled.
        let answered = client
            .send(Write::new(&b"late"[..]))
            .await
            .expect("mailbox");
        assert!(
            matches!(answered, Err(WriteError::GaveUp { .. })),
            "{answered:?}"
        );
        settle().await;
    });
    assert_eq!(
        log.lines_with("nobody subscribed"),
        1,
        "one warning for the refused write: {}",
        log.text()
    );
}

/// Refuses every connect, telling the test each time (before its refusal is answered).
struct SignallingRefuser(tokio::sync::mpsc::UnboundedSender<()>);

impl actix::Actor for SignallingRefuser {
    type Context = actix::Context<Self>;
}

impl actix::Handler<sockactor::messages::Connect> for SignallingRefuser {
    type Result = actix::ResponseFuture<Result<(), sockactor::TransportError>>;
    fn handle(
        &mut self,
        _: sockactor::messages::Connect,
        _: &mut actix::Context<Self>,
    ) -> Self::Result {
        let _ = self.0.send(());
        Box::pin(async { Err(std::io::ErrorKind::ConnectionRefused.into()) })
    }
}

/// Fire-and-forget writes refused (a queue of 0) in the very turn a failed connect
/// restarts the client are still reported, and so is every refusal after: a restart
/// once dropped the pending report, and no refusal was reported again (each kept its
/// payload, without bound).
#[test]
fn refusals_in_the_turn_of_a_restart_are_reported_and_so_is_every_one_after() {
    use actix::Actor;
    run_paused(|| async {
        let mock = MockTransport::start();
        let (signal, mut signals) = tokio::sync::mpsc::unbounded_channel();
        let functions = mock
            .functions()
            .with_connect(SignallingRefuser(signal).start().recipient());
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(functions)
            .subscriber(subscriber)
            .backoff(Duration::from_millis(10), Duration::from_millis(10))
            .jitter(sockactor::Jitter::None)
            .queue_limits(0, 0)
            .max_attempts(Some(8))
            .start();
        // Woken by each refused connect, two tasks bouncing a count fire a tagged
        // `do_send` at each hop: one lands just ahead of the connect's failure, in the
        // turn that restarts the client.
        let (ping, mut pings) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let (pong, mut pongs) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let sent = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let bounce = ping.clone();
        actix::spawn(async move {
            while let Some(n) = pongs.recv().await {
                let _ = bounce.send(n);
            }
        });
        let (writer, counted) = (client.clone(), sent.clone());
        actix::spawn(async move {
            while let Some(n) = pings.recv().await {
                counted.set(counted.get() + 1);
                writer.do_send(Write::new(&b"x"[..]).tag(counted.get()));
                if n > 0 {
                    let _ = pong.send(n - 1);
                }
            }
        });
        actix::spawn(async move {
            while signals.recv().await.is_some() {
                let _ = ping.send(6);
            }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        settle().await;
        let reported: Vec<u64> = events
            .drain()
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::WriteFailed { tag, .. } => tag,
                _ => None,
            })
            .collect();
        assert!(sent.get() > 0);
        assert_eq!(
            reported,
            (1..=sent.get()).collect::<Vec<_>>(),
            "every refusal reported, in order"
        );
        client.do_send(Write::new(&b"y"[..]).tag(9999));
        settle().await;
        let later: Vec<u64> = events
            .drain()
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::WriteFailed { tag, .. } => tag,
                _ => None,
            })
            .collect();
        assert_eq!(later, [9999], "a refusal after giving up is reported too");
    });
}
