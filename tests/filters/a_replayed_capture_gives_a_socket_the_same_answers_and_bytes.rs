//! A capture replayed into a fresh mock: a socket running the same program meets the
//! same transport at the same times (paused tokio time), so its write answers (with
//! their sendv counts, would-blocks and latencies), the bytes it received, its events,
//! and the byte stream and `sendv` log the transport recorded equal the captured run's.
//! A session the transport resets mid-write replays the same 300 times of 300. One
//! socket replaying differently does not shift another's replay.

use std::io;
use std::time::Duration;

use crate::support::capture::{sendv_log, session, Seen};
use crate::support::{mock_peer, run_paused, settle, Recorder};
use bytes::Bytes;
use sockactor::filters::{Capture, CaptureBuffer, Replay};
use sockactor::messages::{Handle, Write};
use sockactor::{MockTransport, SendStep, Socket, SocketFunctions};

type Log = Vec<(Duration, usize, usize, bool, Option<io::ErrorKind>)>;

/// What one run left behind: what the socket saw, and what the transport took.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    seen: Seen,
    written: Vec<u8>,
    log: Log,
}

fn capture_run<F, Fut>(
    script: impl FnOnce(&MockTransport) + 'static,
    program: F,
) -> (Run, CaptureBuffer)
where
    F: FnOnce(SocketFunctions) -> Fut + 'static,
    Fut: std::future::Future<Output = Seen>,
{
    run_paused(|| async move {
        let start = tokio::time::Instant::now();
        let mock = MockTransport::start();
        script(&mock);
        let (capture, file) = Capture::to_memory();
        let seen = program(capture.wrap(mock.functions())).await;
        let run = Run {
            seen,
            written: mock.written(Handle(1)),
            log: sendv_log(&mock, Handle(1), start),
        };
        (run, file)
    })
}

fn replay_run<F, Fut>(file: &CaptureBuffer, program: F) -> Run
where
    F: FnOnce(SocketFunctions) -> Fut + 'static,
    Fut: std::future::Future<Output = Seen>,
{
    let bytes = file.contents();
    run_paused(|| async move {
        let start = tokio::time::Instant::now();
        let replay = Replay::from_reader(&bytes[..]).expect("a valid capture");
        let seen = program(replay.functions()).await;
        let handle = replay.handle(Handle(1)).expect("the session's handle");
        Run {
            seen,
            written: replay.mock().written(handle),
            log: sendv_log(replay.mock(), handle, start),
        }
    })
}

#[test]
fn partial_accepts_would_blocks_inbound_data_and_eof_replay_exactly() {
    let (captured, file) = capture_run(
        |mock| {
            crate::support::capture::script_session(mock);
            crate::support::capture::spawn_peer(mock);
        },
        session,
    );
    assert_eq!(captured.seen.received, b"pingpong!");
    assert_eq!(
        captured.log.iter().filter(|l| l.3).count(),
        2,
        "the captured run met two would-blocks"
    );
    let replayed = replay_run(&file, session);
    assert_eq!(replayed.seen.answers, captured.seen.answers);
    assert_eq!(replayed.seen.received, captured.seen.received);
    assert_eq!(replayed.seen.events, captured.seen.events);
    assert_eq!(replayed.written, captured.written);
    assert_eq!(replayed.log, captured.log);
}

/// Writes while the peer sends a little; the transport fails mid-way.
async fn failing_session(functions: SocketFunctions) -> Seen {
    let recorder = Recorder::default();
    let socket = Socket::builder()
        .functions(functions)
        .subscriber(recorder.start().recipient())
        .connect(mock_peer())
        .await
        .expect("connect");
    let mut answers = Vec::new();
    for payload in [&b"first"[..], b"second write", b"third"] {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            socket.send(Write::new(Bytes::from_static(payload))),
        )
        .await
        .expect("answered")
        .expect("mailbox");
        answers.push(crate::support::capture::answer_of(answer));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    settle().await;
    Seen {
        answers,
        received: recorder.received(),
        events: crate::support::capture::events(&recorder),
    }
}

/// The transport takes the first write, 4 bytes of the second, would-block, then resets;
/// the peer sends a little meanwhile.
fn reset_mid_write(mock: &MockTransport) {
    mock.script_sendv(
        Handle(1),
        [
            SendStep::AcceptAll,
            SendStep::Accept(4),
            SendStep::WouldBlock(Duration::from_micros(300)),
            SendStep::Fail(io::ErrorKind::ConnectionReset),
        ],
    );
    let mock = mock.clone();
    actix::spawn(async move {
        tokio::time::sleep(Duration::from_micros(500)).await;
        mock.push_inbound(Handle(1), &b"hi"[..]);
    });
}

#[test]
fn a_transport_failure_mid_write_replays_with_the_same_bytes_sent() {
    let (captured, file) = capture_run(reset_mid_write, failing_session);
    assert_eq!(
        captured.seen.answers[1],
        crate::support::capture::Answer::Failed(4, Some(io::ErrorKind::ConnectionReset))
    );
    let replayed = replay_run(&file, failing_session);
    assert_eq!(replayed, captured);
}

#[test]
fn a_read_error_replays_at_the_same_time() {
    let (captured, file) = capture_run(
        |mock| {
            let mock = mock.clone();
            actix::spawn(async move {
                tokio::time::sleep(Duration::from_micros(1500)).await;
                mock.push_inbound(Handle(1), &b"last words"[..]);
                mock.push_read_error(Handle(1), io::ErrorKind::ConnectionAborted);
            });
        },
        failing_session,
    );
    assert_eq!(
        captured.seen.events,
        vec![
            "data \"last words\"".to_string(),
            "read failed Some(ConnectionAborted)".to_string(),
            "closed Some(ConnectionAborted)".to_string(),
        ]
    );
    let replayed = replay_run(&file, failing_session);
    assert_eq!(replayed, captured);
}

#[test]
fn a_session_with_a_reset_replays_identically_300_times_of_300() {
    let (captured, file) = capture_run(reset_mid_write, failing_session);
    let differing: Vec<usize> = (0..300)
        .filter(|_| replay_run(&file, failing_session) != captured)
        .collect();
    assert!(
        differing.is_empty(),
        "{} of 300 replays differed from the capture (replays {:?})",
        differing.len(),
        differing
    );
}

/// Two sockets captured apart; in the replay one of them writes less than it did, the
/// other runs the same: the other's inbound data still comes at its captured times (one
/// socket's difference does not shift another's replay).
#[test]
fn one_socket_replaying_differently_does_not_delay_another() {
    /// When each piece reached the second socket's subscriber (ms since the start).
    async fn program(functions: SocketFunctions, a_writes: u8) -> Vec<(u128, Vec<u8>)> {
        let start = tokio::time::Instant::now();
        let a = Socket::builder()
            .functions(functions.clone())
            .subscriber(Recorder::default().start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect a");
        let (subscriber, mut heard) = crate::support::channel_subscriber();
        let _b = Socket::builder()
            .functions(functions)
            .subscriber(subscriber)
            .connect(mock_peer())
            .await
            .expect("connect b");
        for i in 0..a_writes {
            a.send(Write::new(vec![i; 100]))
                .await
                .expect("mailbox")
                .expect("written");
        }
        let mut times = Vec::new();
        let until = start + Duration::from_secs(30);
        while let Ok(Some(event)) = tokio::time::timeout_at(until, heard.recv()).await {
            if let sockactor::messages::SocketEventKind::Received(bytes) = event {
                times.push((start.elapsed().as_millis(), bytes.to_vec()));
            }
        }
        times
    }
    let file = CaptureBuffer::default();
    let captured = run_paused(|| {
        let file = file.clone();
        async move {
            let mock = MockTransport::start();
            let feeder = mock.clone();
            actix::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                feeder.push_inbound(Handle(1), &b"to a"[..]);
                tokio::time::sleep(Duration::from_millis(2)).await;
                feeder.push_inbound(Handle(2), &b"to b, first"[..]);
                tokio::time::sleep(Duration::from_millis(2)).await;
                feeder.push_inbound(Handle(2), &b"to b, second"[..]);
            });
            program(Capture::new(file).wrap(mock.functions()), 3).await
        }
    });
    assert_eq!(
        captured,
        [
            (12, b"to b, first".to_vec()),
            (14, b"to b, second".to_vec())
        ]
    );
    let replayed = run_paused(|| async move {
        let replay = Replay::from_reader(&file.contents()[..]).expect("a whole capture");
        program(replay.functions(), 1).await
    });
    assert_eq!(
        replayed, captured,
        "the second socket's data came at other times"
    );
}
