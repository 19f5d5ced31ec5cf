//! A capture stacks with other filters. Below a fault injector it records what the
//! inner transport saw (call for call the mock's own `sendv` log, and none of the
//! injector's own would-blocks); above it, what the socket saw (the injector's partial
//! accepts, would-blocks, late answers and short reads), and that capture, replayed
//! into a plain mock with no injector, gives the socket the same answers and pieces,
//! under many seeds, and when a reset closes the socket while a send is out.

use std::time::Duration;

use crate::support::capture::{accepted_bytes, answer_of, events, records, Answer};
use crate::support::{mock_peer, pattern, run_paused, settle, Recorder};
use bytes::Bytes;
use sockactor::filters::{
    Capture, CaptureBuffer, CaptureEvent, FaultInjector, Faults, RecvAnswer, Replay, SendAnswer,
};
use sockactor::messages::{Close, Handle, Readiness, SocketEventKind, Write};
use sockactor::{MockTransport, SendStep, Socket, SocketFunctions};

fn injector() -> FaultInjector {
    injector_with(17, Faults::default())
}

/// The test's faults (plus `extra`'s resets), from `seed`.
fn injector_with(seed: u64, extra: Faults) -> FaultInjector {
    let resets = if extra.injects_resets() {
        (0.02, 0.01)
    } else {
        (0.0, 0.0)
    };
    FaultInjector::new(
        seed,
        Faults::default()
            .reset(resets.0)
            .read_reset(resets.1)
            .partial(0.5)
            .would_block(0.2, Duration::from_millis(3))
            .delay(0.2, Duration::from_millis(2))
            .short_reads(0.9)
            .read_would_block(0.2, Duration::from_millis(2))
            .read_delay(0.2, Duration::from_millis(1)),
    )
    .max_per_call(700)
}

/// The peer sends 6000 bytes in three pieces, at 1, 4 and 9 ms.
fn spawn_peer(mock: &MockTransport) -> Vec<u8> {
    let data = pattern(6000, 77);
    let pieces = [
        (1, data[..1000].to_vec()),
        (3, data[1000..4500].to_vec()),
        (5, data[4500..].to_vec()),
    ];
    let mock = mock.clone();
    actix::spawn(async move {
        for (after, piece) in pieces {
            tokio::time::sleep(Duration::from_millis(after)).await;
            mock.push_inbound(Handle(1), piece);
        }
    });
    data
}

/// What the program's socket saw: every answer, every piece received, the events.
type Seen = (Vec<Answer>, Vec<Bytes>, Vec<String>);

/// Twenty writes, one at a time, then a graceful close.
async fn program(functions: SocketFunctions) -> Seen {
    let recorder = Recorder::default();
    let socket = Socket::builder()
        .functions(functions)
        .subscriber(recorder.start().recipient())
        .connect(mock_peer())
        .await
        .expect("connect");
    let mut answers = Vec::new();
    for i in 0..20u64 {
        let payload = Bytes::from(pattern(1 + (i as usize * 211) % 1900, i));
        let answer =
            tokio::time::timeout(Duration::from_secs(10), socket.send(Write::new(payload)))
                .await
                .expect("answered")
                .expect("mailbox");
        answers.push(answer_of(answer));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    socket.do_send(Close::Graceful);
    settle().await;
    let pieces = recorder.picked(|e| match e {
        SocketEventKind::Received(b) => Some(b.clone()),
        _ => None,
    });
    (answers, pieces, events(&recorder))
}

fn all_writes() -> Vec<u8> {
    (0..20u64)
        .flat_map(|i| pattern(1 + (i as usize * 211) % 1900, i))
        .collect()
}

#[test]
fn below_the_injector_the_capture_sees_exactly_what_the_inner_transport_saw() {
    run_paused(|| async {
        let start = tokio::time::Instant::now();
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(100),
                SendStep::WouldBlock(Duration::from_millis(1)),
            ],
        );
        let (capture, file) = Capture::to_memory();
        let functions = injector().wrap(capture.wrap(mock.functions()));
        let data = spawn_peer(&mock);
        let (answers, pieces, _) = program(functions).await;
        assert!(answers.iter().all(|a| matches!(a, Answer::Written(..))));
        assert_eq!(pieces.concat(), data);

        let records = records(&file.contents());
        let sends: Vec<(Duration, u64, Option<usize>, bool)> = records
            .iter()
            .filter_map(|r| match &r.event {
                CaptureEvent::SendV {
                    offered, answer, ..
                } => Some((
                    r.at,
                    *offered,
                    match answer {
                        SendAnswer::Accepted(b) => Some(b.len()),
                        _ => None,
                    },
                    matches!(answer, SendAnswer::WouldBlock),
                )),
                _ => None,
            })
            .collect();
        let log: Vec<(Duration, u64, Option<usize>, bool)> = mock
            .sendv_log(Handle(1))
            .into_iter()
            .map(|l| {
                (
                    l.at.saturating_duration_since(start),
                    l.offered as u64,
                    (!l.would_block && l.failed.is_none()).then_some(l.accepted),
                    l.would_block,
                )
            })
            .collect();
        assert_eq!(sends, log, "call for call the inner transport's log");
        assert!(
            sends.iter().all(|s| s.1 <= 700),
            "the injector's bound, seen below it"
        );
        assert_eq!(accepted_bytes(&records, Handle(1)), all_writes());
        assert_eq!(mock.written(Handle(1)), all_writes());
        let writable = records
            .iter()
            .filter(|r| r.event == CaptureEvent::Ready(Readiness::Writable))
            .count();
        assert_eq!(
            writable,
            log.iter().filter(|l| l.3).count(),
            "only the inner transport's notices, none of the injector's"
        );
        assert_eq!(
            crate::support::capture::received_bytes(&records, Handle(1)),
            data
        );
    });
}

fn capture_above() -> (Seen, CaptureBuffer, Vec<u8>) {
    capture_above_with(injector())
}

fn capture_above_with(injector: FaultInjector) -> (Seen, CaptureBuffer, Vec<u8>) {
    run_paused(|| async move {
        let mock = MockTransport::start();
        let (capture, file) = Capture::to_memory();
        let functions = capture.wrap(injector.wrap(mock.functions()));
        spawn_peer(&mock);
        let seen = program(functions).await;
        (seen, file, mock.written(Handle(1)))
    })
}

#[test]
fn above_the_injector_the_capture_sees_what_the_socket_saw() {
    let ((answers, pieces, _), file, written) = capture_above();
    let records = records(&file.contents());
    assert_eq!(accepted_bytes(&records, Handle(1)), all_writes());
    assert_eq!(written, all_writes());
    let count = |f: &dyn Fn(&CaptureEvent) -> bool| records.iter().filter(|r| f(&r.event)).count();
    let would_blocks = count(&|e| {
        matches!(
            e,
            CaptureEvent::SendV {
                answer: SendAnswer::WouldBlock,
                ..
            }
        )
    });
    let accepted = count(&|e| {
        matches!(
            e,
            CaptureEvent::SendV {
                answer: SendAnswer::Accepted(_),
                ..
            }
        )
    });
    let (mut calls, mut blocks) = (0, 0);
    for a in &answers {
        let Answer::Written(_, c, b, _) = a else {
            panic!("every write completes: {a:?}");
        };
        calls += *c as usize;
        blocks += *b as usize;
    }
    assert_eq!(
        accepted, calls,
        "one accepted sendv per call the socket counted"
    );
    assert_eq!(
        would_blocks, blocks,
        "the injector's would-blocks, as the socket met them"
    );
    assert!(would_blocks > 0 && accepted > 20, "faults were injected");
    let chunks: Vec<Bytes> = records
        .iter()
        .filter_map(|r| match &r.event {
            CaptureEvent::RecvFrom {
                answer: RecvAnswer::Data { bytes, .. },
                ..
            } => Some(bytes.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(chunks, pieces, "the short reads, piece for piece");
    let lens: Vec<usize> = chunks.iter().map(Bytes::len).collect();
    assert!(chunks.len() > 3, "short reads were injected: {lens:?}");
    let late = count(&|e| matches!(e, CaptureEvent::SendV { took, .. } if !took.is_zero()));
    assert!(late > 0, "late answers carry how long they took");
}

fn assert_replays_the_same(injector: FaultInjector, what: &str) {
    let (captured, file, written) = capture_above_with(injector);
    let bytes = file.contents();
    let (replayed, replay_written) = run_paused(|| async move {
        let replay = Replay::from_reader(&bytes[..]).expect("valid capture");
        let seen = program(replay.functions()).await;
        (seen, replay.mock().written(Handle(1)))
    });
    assert_eq!(replayed.0, captured.0, "{what}: the same write answers");
    assert_eq!(replayed.1, captured.1, "{what}: the same pieces received");
    assert_eq!(replayed.2, captured.2, "{what}: the same events");
    assert_eq!(replay_written, written, "{what}: the same byte stream");
}

#[test]
fn a_fault_injected_session_replays_without_the_injector() {
    assert_replays_the_same(injector(), "seed 17");
}

#[test]
fn sessions_under_many_seeds_replay_without_the_injector() {
    for seed in 0..64 {
        assert_replays_the_same(
            injector_with(seed, Faults::default()),
            &format!("seed {seed}"),
        );
    }
}

#[test]
fn a_reset_while_a_send_is_out_replays_the_same() {
    // Seed 12 resets the read side while a delayed sendv is out: its answer is recorded
    // after the handle's close, and must still be scripted for the replay.
    let injector = || injector_with(12, Faults::default().reset(1.0));
    let (seen, file, _) = capture_above_with(injector());
    let records = records(&file.contents());
    let close = records
        .iter()
        .position(|r| r.event == CaptureEvent::Close)
        .expect("closed");
    assert!(
        records[close..]
            .iter()
            .any(|r| matches!(r.event, CaptureEvent::SendV { .. })),
        "a sendv answered after the close"
    );
    assert!(seen
        .0
        .iter()
        .any(|a| matches!(a, Answer::Failed(n, _) if *n > 0)));
    assert_replays_the_same(injector(), "seed 12 with resets");
}
