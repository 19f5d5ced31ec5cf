//! Property: whatever the transport does (partial accepts down to one byte, would-block
//! runs, an error at a random point), the byte stream it received is exactly the
//! completed writes, in order, plus the reported part of the first failed one; every
//! write is answered exactly once, in FIFO order; after an error every remaining write
//! is answered with an error. Both write paths: `Write` messages and a `Writer` handle,
//! whose fire-and-forget writes (one at a time, or several per `write_each`) answer a
//! failure by a report each to the subscriber.
//! Segments are memory or file ranges; each file byte is read into memory once at most,
//! however the transport cuts the sends.

use std::io::{self, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{channel_subscriber, mock_peer, run_paused, settle, temp_path};
use bytes::Bytes;
use proptest::prelude::*;
use sockactor::messages::{GetStats, GetWriter, Handle, SocketEventKind, Write};
use sockactor::{
    FileRange, FlushPolicy, Flusher, IoBatch, MockTransport, QueueConfig, SendStep, Socket,
    SocketConfig, TurnCap, WriteError,
};

#[derive(Clone, Debug)]
enum Step {
    Accept(usize),
    AcceptAll,
    WouldBlock(u64),
    Slow(usize, u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1usize..400).prop_map(Step::Accept),
        2 => Just(Step::AcceptAll),
        2 => (0u64..5).prop_map(Step::WouldBlock),
        1 => (1usize..400, 0u64..3).prop_map(|(n, ms)| Step::Slow(n, ms)),
    ]
}

/// Each write: its segments' lengths and whether each is a file range (possibly no
/// segments, possibly empty ones).
fn writes() -> impl Strategy<Value = Vec<Vec<(usize, bool)>>> {
    prop::collection::vec(
        prop::collection::vec((0usize..300, prop::bool::weighted(0.3)), 0..5),
        1..40,
    )
}

#[derive(Clone, Debug)]
struct Case {
    writes: Vec<Vec<(usize, bool)>>,
    steps: Vec<Step>,
    fail_at: Option<usize>,
    immediate: bool,
    via_writer: bool,
    max_bytes_per_turn: usize,
    max_segments: usize,
    file_read_chunk: usize,
    copy_threshold: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (
        writes(),
        prop::collection::vec(step(), 0..60),
        prop::option::of(0usize..60),
        any::<bool>(),
        any::<bool>(),
        1usize..2000,
        1usize..8,
        1usize..500,
        prop::sample::select(vec![0usize, 1, 64, 512, 4096]),
    )
        .prop_map(
            |(
                writes,
                steps,
                fail_at,
                immediate,
                via_writer,
                max_bytes_per_turn,
                max_segments,
                file_read_chunk,
                copy_threshold,
            )| {
                Case {
                    writes,
                    steps,
                    fail_at,
                    immediate,
                    via_writer,
                    max_bytes_per_turn,
                    max_segments,
                    file_read_chunk,
                    copy_threshold,
                }
            },
        )
}

/// Payloads of the writes: every byte names its write, so interleaving would show. File
/// segments are ranges of one file the payloads' bytes are written into.
fn payloads(writes: &[Vec<(usize, bool)>]) -> Vec<IoBatch> {
    let path = temp_path("proptest");
    let mut file = std::fs::File::create(&path).expect("create the file");
    let mut ranges = Vec::new();
    let mut at = 0u64;
    for (w, segments) in writes.iter().enumerate() {
        for (s, &(len, in_file)) in segments.iter().enumerate() {
            let bytes: Vec<u8> = (0..len).map(|i| (w * 31 + s * 7 + i) as u8).collect();
            if in_file {
                file.write_all(&bytes).expect("write the file");
                ranges.push((at, len));
                at += len as u64;
            }
        }
    }
    drop(file);
    let file = Arc::new(std::fs::File::open(&path).expect("open the file"));
    let _ = std::fs::remove_file(&path);
    let mut ranges = ranges.into_iter();
    writes
        .iter()
        .enumerate()
        .map(|(w, segments)| {
            let mut batch = IoBatch::new();
            for (s, &(len, in_file)) in segments.iter().enumerate() {
                if in_file {
                    let (offset, len) = ranges.next().expect("a range per file segment");
                    batch.push_file(FileRange::new(file.clone(), offset, len).expect("fits"));
                } else {
                    batch.push(Bytes::from(
                        (0..len)
                            .map(|i| (w * 31 + s * 7 + i) as u8)
                            .collect::<Vec<u8>>(),
                    ));
                }
            }
            batch
        })
        .collect()
}

/// A mock transport whose first handle follows the case's script (plus its failure).
fn scripted_mock(case: &Case) -> MockTransport {
    let mock = MockTransport::start();
    let mut script: Vec<SendStep> = case
        .steps
        .iter()
        .map(|s| match s {
            Step::Accept(n) => SendStep::Accept(*n),
            Step::AcceptAll => SendStep::AcceptAll,
            Step::WouldBlock(ms) => SendStep::WouldBlock(Duration::from_millis(*ms)),
            Step::Slow(bytes, ms) => SendStep::Slow {
                bytes: *bytes,
                after: Duration::from_millis(*ms),
            },
        })
        .collect();
    if let Some(at) = case.fail_at {
        script.insert(
            at.min(script.len()),
            SendStep::Fail(io::ErrorKind::ConnectionReset),
        );
    }
    mock.script_sendv(Handle(1), script);
    mock
}

/// A socket builder over `mock` with the case's queue limits and flush policy.
fn socket_builder(case: &Case, mock: &MockTransport) -> sockactor::SocketBuilder {
    let config = SocketConfig {
        queue: QueueConfig {
            high_watermark: 1 << 30,
            low_watermark: 0,
            max_bytes_per_turn: case.max_bytes_per_turn,
            // Every turn capped, so that each transmit is within the turn's budget (a
            // socket alone is capped only with `Always`).
            turn_cap: TurnCap::Always,
            max_segments: case.max_segments,
            file_read_chunk: case.file_read_chunk,
            copy_threshold: case.copy_threshold,
        },
        ..SocketConfig::default()
    };
    let policy = if case.immediate {
        FlushPolicy::Immediate
    } else {
        FlushPolicy::Deferred(Flusher::current().recipient())
    };
    Socket::builder()
        .functions(mock.functions())
        .config(config)
        .flush_policy(policy)
}

fn run_case(case: Case) -> Result<(), TestCaseError> {
    if std::env::var("CASE_DEBUG").is_ok() {
        eprintln!("{case:?}");
        let _ = tracing_subscriber::fmt()
            .with_env_filter("sockactor=trace")
            .with_test_writer()
            .try_init();
    }
    run_paused(|| async move {
        let mock = scripted_mock(&case);
        let socket = socket_builder(&case, &mock)
            .connect(mock_peer())
            .await
            .expect("connect");

        let batches = payloads(&case.writes);
        let file_bytes: usize = case
            .writes
            .iter()
            .flatten()
            .filter(|(_, in_file)| *in_file)
            .map(|(len, _)| len)
            .sum();
        let order = Arc::new(Mutex::new(Vec::new()));
        let writer = socket.send(GetWriter).await.expect("writer");
        let mut tasks = Vec::new();
        for (w, batch) in batches.iter().enumerate() {
            let order = order.clone();
            if case.via_writer {
                let answer = writer.write_answered(batch.clone());
                tasks.push(actix::spawn(async move {
                    let answer = answer.await;
                    order.lock().expect("lock").push(w);
                    Ok(answer)
                }));
            } else {
                let request = socket.send(Write::new(batch.clone()));
                tasks.push(actix::spawn(async move {
                    let answer = request.await;
                    order.lock().expect("lock").push(w);
                    answer
                }));
            }
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(
                t.await
                    .expect("join")
                    .expect("every write answered by the socket"),
            );
        }
        settle().await;
        let stats = socket.send(GetStats).await.ok();

        let order = order.lock().expect("lock").clone();
        prop_assert_eq!(
            order,
            (0..batches.len()).collect::<Vec<_>>(),
            "FIFO answers"
        );

        let mut expected = Vec::new();
        let mut failed = false;
        for (w, answer) in answers.iter().enumerate() {
            match answer {
                Ok(done) => {
                    prop_assert!(!failed, "write {} completed after an earlier one failed", w);
                    prop_assert_eq!(done.len, batches[w].len());
                    expected.extend_from_slice(&batches[w].to_vec().expect("in memory"));
                }
                Err(e) => {
                    prop_assert!(
                        matches!(e, WriteError::Transport { .. }),
                        "unexpected error {:?}",
                        e
                    );
                    if !failed {
                        let sent = e.bytes_sent();
                        expected
                            .extend_from_slice(&batches[w].to_vec().expect("in memory")[..sent]);
                    } else {
                        prop_assert_eq!(e.bytes_sent(), 0);
                    }
                    failed = true;
                }
            }
        }
        prop_assert_eq!(mock.written(Handle(1)), expected, "recorded stream");
        if !failed {
            let stats = stats.expect("a socket that has not failed answers");
            prop_assert_eq!(
                stats.file_bytes_read,
                file_bytes as u64,
                "every file byte read into memory exactly once"
            );
        }
        if failed {
            prop_assert!(
                mock.is_closed(Handle(1)),
                "a failed socket closes its handle"
            );
        }
        for record in mock.sendv_log(Handle(1)) {
            prop_assert!(record.offered <= case.max_bytes_per_turn.max(1));
            prop_assert!(record.segments <= case.max_segments);
        }
        Ok(())
    })
}

/// The fire-and-forget `Writer` path: writes through `write` (or `write_each`, three at
/// a time, with `via_writer`), each answered by silence when it went out whole or by one
/// `WriteFailed` report, in order.
fn run_silent_case(case: Case) -> Result<(), TestCaseError> {
    run_paused(|| async move {
        let mock = scripted_mock(&case);
        let (subscriber, mut events) = channel_subscriber();
        let socket = socket_builder(&case, &mock)
            .subscriber(subscriber)
            .connect(mock_peer())
            .await
            .expect("connect");
        let batches = payloads(&case.writes);
        let writer = socket.send(GetWriter).await.expect("writer");
        let group = if case.via_writer { 3 } else { 1 };
        // Writes handed to the socket; the rest were refused at once (it had failed).
        let mut handed = 0;
        for chunk in batches.chunks(group) {
            let taken = if group == 1 {
                writer.write(chunk[0].clone()).is_ok()
            } else {
                writer.write_each(chunk.to_vec()).is_ok()
            };
            if !taken {
                break;
            }
            handed += chunk.len();
        }
        // Every write before it is done (or the socket failed) when this is answered.
        let _ = writer.write_answered(IoBatch::new()).await;
        settle().await;
        let stats = socket.send(GetStats).await.ok();

        let mut failures = Vec::new();
        while let Ok(kind) = events.try_recv() {
            if let SocketEventKind::WriteFailed { tag, error } = kind {
                prop_assert_eq!(tag, None);
                match error {
                    WriteError::Transport {
                        bytes_sent, len, ..
                    } => failures.push((bytes_sent, len)),
                    other => prop_assert!(false, "unexpected error {:?}", other),
                }
            }
        }
        prop_assert!(
            failures.len() <= handed,
            "{} reports for {} writes",
            failures.len(),
            handed
        );
        let done = handed - failures.len();
        let mut expected = Vec::new();
        for batch in &batches[..done] {
            expected.extend_from_slice(&batch.to_vec().expect("in memory"));
        }
        for (k, &(bytes_sent, len)) in failures.iter().enumerate() {
            let batch = &batches[done + k];
            prop_assert_eq!(
                len,
                batch.len(),
                "the reports are the last writes, in order"
            );
            if k == 0 {
                prop_assert!(bytes_sent < len, "a write that went out whole is done");
                expected.extend_from_slice(&batch.to_vec().expect("in memory")[..bytes_sent]);
            } else {
                prop_assert_eq!(bytes_sent, 0);
            }
        }
        prop_assert_eq!(mock.written(Handle(1)), expected, "recorded stream");
        if failures.is_empty() && handed == batches.len() {
            let stats = stats.expect("a socket that has not failed answers");
            prop_assert_eq!(stats.writes, handed as u64 + 1);
            prop_assert_eq!(stats.writes_completed, handed as u64 + 1);
        }
        for record in mock.sendv_log(Handle(1)) {
            prop_assert!(record.offered <= case.max_bytes_per_turn.max(1));
            prop_assert!(record.segments <= case.max_segments);
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(crate::support::proptest_config(192))]
    #[test]
    fn fire_and_forget_writes_are_ordered_and_each_failure_reported_once(case in case()) {
        run_silent_case(case)?;
    }

    #[test]
    fn writes_are_ordered_and_answered_once(case in case()) {
        run_case(case)?;
    }
}
