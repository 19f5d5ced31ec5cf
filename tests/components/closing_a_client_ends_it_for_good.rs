//! `Close` ends a reconnecting client for good: no restart and no further connect
//! attempt. `Graceful` sends what the client holds, then closes the socket; `Abort`
//! aborts it; writes it held are answered, and later writes get `WriteError::Closed`.

use std::time::Duration;

use crate::support::client::{client_events, ConnectGate, Events};
use crate::support::{mock_peer, run_paused, settle, watermarks};
use sockactor::messages::{
    ClientEvent, ClientState, Close, GetClientState, Handle, Reconnect, Write,
};
use sockactor::{MockTransport, ReconnectingClient, SendStep, WriteError};

async fn expect_connected(events: &mut Events) {
    match events.next().await {
        ClientEvent::Connected { .. } => {}
        other => panic!("expected Connected, got {other:?}"),
    }
}

async fn assert_closed_for_good(
    client: &actix::Addr<ReconnectingClient>,
    events: &mut Events,
    gate: &ConnectGate,
) {
    let attempts = gate.calls().len();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(gate.calls().len(), attempts, "no connect after the close");
    assert!(
        events.drain().iter().all(|e| !matches!(
            e,
            ClientEvent::Reconnecting { .. } | ClientEvent::Connected { .. }
        )),
        "no restart"
    );
    assert_eq!(
        client.send(GetClientState).await.expect("mailbox"),
        ClientState::Closed
    );
    match client
        .send(Write::new(&b"late"[..]))
        .await
        .expect("mailbox")
    {
        Err(WriteError::Closed {
            bytes_sent: 0,
            len: 4,
        }) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(!client.send(Reconnect).await.expect("mailbox"));
}

#[test]
fn a_graceful_close_sends_every_held_write_then_closes_the_socket() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        // A slow peer and a small socket queue, so some writes wait in the client.
        mock.script_sendv(
            Handle(1),
            [SendStep::WouldBlock(Duration::from_millis(5)); 4],
        );
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .subscriber(subscriber)
            .socket_config(watermarks(6, 0))
            .start();
        expect_connected(&mut events).await;
        let answers: Vec<_> = (0..6u8)
            .map(|i| client.send(Write::new(vec![b'0' + i; 4])))
            .collect();
        settle().await;
        client.do_send(Close::Graceful);
        // Writes are still waiting in the client for room in the socket's queue.
        assert_eq!(
            client.send(GetClientState).await.expect("mailbox"),
            ClientState::Draining
        );
        match client
            .send(Write::new(&b"too late"[..]))
            .await
            .expect("mailbox")
        {
            Err(WriteError::Closed {
                bytes_sent: 0,
                len: 8,
            }) => {}
            other => panic!("a draining client takes no new write, got {other:?}"),
        }
        for answer in answers {
            assert_eq!(answer.await.expect("mailbox").expect("written").len, 4);
        }
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"000011112222333344445555");
        assert!(mock.is_closed(Handle(1)));
        assert_closed_for_good(&client, &mut events, &gate).await;
    });
}

#[test]
fn an_abort_answers_every_write_and_stops_reconnecting() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .subscriber(subscriber)
            .socket_config(watermarks(4, 0))
            .start();
        expect_connected(&mut events).await;
        // One in the socket's queue (its sendv held), one waiting in the client.
        let queued = client.send(Write::new(&b"queued"[..]));
        let held = client.send(Write::new(&b"held"[..]));
        settle().await;
        client.do_send(Close::Abort);
        for (answer, len) in [(queued.await, 6), (held.await, 4)] {
            match answer.expect("mailbox") {
                Err(WriteError::Aborted {
                    bytes_sent: 0,
                    len: l,
                }) => assert_eq!(l, len),
                other => panic!("expected Aborted, got {other:?}"),
            }
        }
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        assert_closed_for_good(&client, &mut events, &gate).await;
    });
}

#[test]
fn closing_while_waiting_to_reconnect_cancels_the_attempt() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        gate.refuse_all(true);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .subscriber(subscriber)
            .backoff(Duration::from_secs(1), Duration::from_secs(1))
            .start();
        assert!(matches!(
            events.next().await,
            ClientEvent::Reconnecting { attempt: 2, .. }
        ));
        let held = client.send(Write::new(&b"waiting"[..]));
        settle().await;
        client.do_send(Close::Graceful);
        match held.await.expect("mailbox") {
            Err(WriteError::Closed {
                bytes_sent: 0,
                len: 7,
            }) => {}
            other => panic!("expected Closed, got {other:?}"),
        }
        gate.refuse_all(false);
        assert_closed_for_good(&client, &mut events, &gate).await;
        assert_eq!(gate.calls().len(), 1);
    });
}

/// After a graceful close whose hand-over is done (the client is `Closed`, its socket
/// still draining toward a peer that stopped reading), an `Abort` aborts that socket:
/// the write still queued in it is answered `Aborted` instead of waiting for ever.
#[test]
fn abort_after_a_graceful_close_aborts_the_socket_still_draining() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .start();
        expect_connected(&mut events).await;
        let stuck = client.send(Write::new(&b"stuck"[..]));
        settle().await;
        client.do_send(Close::Graceful);
        settle().await;
        assert!(matches!(
            client.send(GetClientState).await.expect("state"),
            ClientState::Closed
        ));
        client.do_send(Close::Abort);
        match tokio::time::timeout(Duration::from_secs(60), stuck).await {
            Ok(Ok(Err(WriteError::Aborted {
                bytes_sent: 0,
                len: 5,
            }))) => {}
            other => panic!("expected the write aborted, got {other:?}"),
        }
        settle().await;
        assert!(mock.is_closed(Handle(1)));
    });
}
