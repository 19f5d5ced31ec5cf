//! One capture under many handles: a listener's accepts are recorded with the new
//! handle and the peer, and the accepted connection's traffic under its own handle;
//! two sockets writing at once are recorded each under its handle, and the replay gives
//! each of them its own answers and byte stream back.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::capture::{accepted_bytes, answer_of, received_bytes, records, Answer};
use crate::support::{channel, mock_peer, pattern, run_paused, settle, Recorder};
use bytes::Bytes;
use sockactor::filters::{AcceptAnswer, Capture, CaptureEvent, Replay};
use sockactor::messages::{Address, Handle, ListenerEvent, Readiness, Write};
use sockactor::{Listener, MockTransport, SendStep, Socket, SocketFunctions};

#[test]
fn an_accepted_connection_is_recorded_with_its_peer_and_its_own_handle() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (capture, file) = Capture::to_memory();
        let recorder = Recorder::default();
        let subscriber = recorder.start().recipient();
        // The listener's events hold the accepted socket's address (a socket whose
        // every address is dropped closes).
        let (events, _heard) = channel::<ListenerEvent>();
        let (_listener, _local) = Listener::builder()
            .functions(capture.wrap(mock.functions()))
            .subscriber(events)
            .socket_builder(move |_| Socket::builder().subscriber(subscriber.clone()))
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        settle().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        let peer = SocketAddr::from(([10, 0, 0, 7], 5000));
        let conn = mock.connect_inbound(Handle(1), peer).expect("listening");
        settle().await;
        mock.push_inbound(conn, &b"hello listener"[..]);
        settle().await;
        assert_eq!(recorder.received(), b"hello listener");

        let records = records(&file.contents());
        let accepts: Vec<(Handle, Duration, AcceptAnswer)> = records
            .iter()
            .filter_map(|r| match &r.event {
                CaptureEvent::Accept(answer) => Some((r.handle, r.at, answer.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            accepts.first().map(|a| &a.2),
            Some(&AcceptAnswer::WouldBlock),
            "nothing waiting at first: {accepts:?}"
        );
        let connection = AcceptAnswer::Connection {
            handle: conn,
            peer: Address::Inet(peer),
        };
        assert!(
            accepts
                .iter()
                .any(|a| *a == (Handle(1), Duration::from_millis(2), connection.clone())),
            "the connection, on the listening handle, when it came: {accepts:?}"
        );
        assert!(records.iter().any(|r| r.handle == Handle(1)
            && r.at == Duration::from_millis(2)
            && r.event == CaptureEvent::Ready(Readiness::Readable)));
        assert_eq!(received_bytes(&records, conn), b"hello listener");
        assert!(received_bytes(&records, Handle(1)).is_empty());
    });
}

/// Two sockets, each writing four writes at once.
async fn two_sockets(functions: SocketFunctions) -> Vec<Vec<Answer>> {
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let socket = Socket::builder()
            .functions(functions.clone())
            .connect(mock_peer())
            .await
            .expect("connect");
        sockets.push(socket);
    }
    let mut pending = Vec::new();
    for (s, socket) in sockets.iter().enumerate() {
        let writes: Vec<_> = (0..4u64)
            .map(|i| {
                let payload = Bytes::from(pattern(300 + 100 * i as usize, 10 * s as u64 + i));
                actix::spawn(socket.send(Write::new(payload)))
            })
            .collect();
        pending.push(writes);
    }
    let mut answers = Vec::new();
    for writes in pending {
        let mut mine = Vec::new();
        for w in writes {
            let answer = tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("answered")
                .expect("join")
                .expect("mailbox");
            mine.push(answer_of(answer));
        }
        answers.push(mine);
    }
    answers
}

fn expected_stream(s: u64) -> Vec<u8> {
    (0..4u64)
        .flat_map(|i| pattern(300 + 100 * i as usize, 10 * s + i))
        .collect()
}

#[test]
fn two_sockets_are_recorded_apart_and_replay_each_their_own_answers() {
    let (captured, bytes) = run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(250),
                SendStep::WouldBlock(Duration::from_millis(3)),
            ],
        );
        mock.script_sendv(
            Handle(2),
            [
                SendStep::WouldBlock(Duration::from_millis(1)),
                SendStep::Accept(10),
                SendStep::Accept(500),
            ],
        );
        let (capture, file) = Capture::to_memory();
        let answers = two_sockets(capture.wrap(mock.functions())).await;
        settle().await;
        for (s, handle) in [Handle(1), Handle(2)].into_iter().enumerate() {
            assert_eq!(mock.written(handle), expected_stream(s as u64));
        }
        (answers, file.contents())
    });
    let records = records(&bytes);
    for (s, handle) in [Handle(1), Handle(2)].into_iter().enumerate() {
        assert_eq!(accepted_bytes(&records, handle), expected_stream(s as u64));
    }
    assert!(captured[1].iter().all(|a| matches!(a, Answer::Written(..))));

    let replayed = run_paused(|| async move {
        let replay = Replay::from_reader(&bytes[..]).expect("valid capture");
        let answers = two_sockets(replay.functions()).await;
        settle().await;
        for (s, handle) in [Handle(1), Handle(2)].into_iter().enumerate() {
            let mine = replay.handle(handle).expect("replayed");
            assert_eq!(replay.mock().written(mine), expected_stream(s as u64));
        }
        answers
    });
    assert_eq!(replayed, captured);
}
