//! Property: on the mock transport with paused time, one socket that gets any mix of
//! `Write` messages (tagged) and writes through its `Writer`, `CancelWrite`s of the
//! message writes, inbound data read under a small read window (`read_limits`) while the
//! subscriber holds some of its `ReadPermit`s and drops them later, waits, and a
//! transport that takes bytes in random portions or would block, keeps every invariant:
//!
//! - every write is answered exactly once, by the socket (no mailbox error, no `Lost`);
//! - answers are FIFO across both paths: the `Ok` answers of each path come in the order
//!   its writes were made, and a write that surely reached the queue before another (a
//!   writer write before a later message; a message before a later writer write when a
//!   settle came between them) is answered first;
//! - a cancel hands back exactly the write's payload, at most once per write; a write is
//!   answered `Cancelled` exactly when a cancel handed its payload back, and none of its
//!   bytes reach the wire;
//! - the recorded stream is exactly, in answer order, the bytes each answer says went out
//!   (all of an `Ok` write, `bytes_sent` of an aborted one, none of a cancelled one); a
//!   graceful close answers every write not cancelled `Ok`;
//! - the read window holds: the subscriber never holds more than `max_deliveries`
//!   deliveries, nor more than `max_bytes` plus one read (`read_chunk`) of bytes, nor
//!   does the socket count more unacknowledged; no delivery is larger than `read_chunk`;
//! - once every permit is dropped, everything the peer sent arrives, in order, once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{mock_peer, run_paused, settle};
use actix::prelude::*;
use bytes::Bytes;
use proptest::prelude::*;
use sockactor::messages::{
    CancelWrite, Close, GetStats, GetWriter, Handle, SocketEvent, SocketEventKind, Write, Written,
};
use sockactor::{
    IoBatch, MockTransport, ReadLimits, ReadPermit, SendStep, Socket, SocketConfig, WriteError,
};

#[derive(Clone, Debug)]
enum Op {
    /// A `Write` message of this many bytes (possibly none), tagged with its op index.
    Write(usize),
    /// A write of this many bytes through the `Writer`.
    WriterWrite(usize),
    /// Cancel one of the message writes made so far (picked by this number).
    Cancel(usize),
    /// The peer sends this many bytes.
    Inbound(usize),
    /// The subscriber starts keeping the permits of what it receives.
    Hold,
    /// The subscriber drops this many kept permits, oldest first.
    Release(usize),
    /// The subscriber stops keeping permits and drops those kept.
    ReleaseAll,
    /// Let this many milliseconds of paused time pass.
    Wait(u64),
    Settle,
}

#[derive(Clone, Debug)]
enum Step {
    Accept(usize),
    AcceptAll,
    WouldBlock(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..400).prop_map(Op::Write),
        5 => (0usize..400).prop_map(Op::WriterWrite),
        3 => any::<usize>().prop_map(Op::Cancel),
        3 => (1usize..300).prop_map(Op::Inbound),
        1 => Just(Op::Hold),
        1 => (0usize..4).prop_map(Op::Release),
        1 => Just(Op::ReleaseAll),
        1 => (0u64..6).prop_map(Op::Wait),
        3 => Just(Op::Settle),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1usize..300).prop_map(Step::Accept),
        2 => Just(Step::AcceptAll),
        3 => (0u64..5).prop_map(Step::WouldBlock),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    steps: Vec<Step>,
    max_deliveries: u32,
    max_bytes: usize,
    read_chunk: usize,
    ops: Vec<Op>,
    /// How the socket is closed at the end: graceful, or abort.
    finish_graceful: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(step(), 0..40),
        1u32..5,
        1usize..300,
        1usize..100,
        prop::collection::vec(op(), 1..60),
        any::<bool>(),
    )
        .prop_map(
            |(steps, max_deliveries, max_bytes, read_chunk, ops, finish_graceful)| Case {
                steps,
                max_deliveries,
                max_bytes,
                read_chunk,
                ops,
                finish_graceful,
            },
        )
}

fn script(steps: &[Step]) -> Vec<SendStep> {
    steps
        .iter()
        .map(|s| match s {
            Step::Accept(n) => SendStep::Accept(*n),
            Step::AcceptAll => SendStep::AcceptAll,
            Step::WouldBlock(ms) => SendStep::WouldBlock(Duration::from_millis(*ms)),
        })
        .collect()
}

/// Write `w`'s payload: every byte names its write and position.
fn payload(w: usize, len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (w * 37 + i) as u8).collect::<Vec<u8>>())
}

/// What the subscriber saw, and the permits it keeps.
#[derive(Default)]
struct Seen {
    keep: bool,
    permits: Vec<ReadPermit>,
    data: Vec<u8>,
    /// The first breach of the read window (or of the read size), if any.
    breach: Option<String>,
    limits: Option<(ReadLimits, usize)>,
}

#[derive(Clone, Default)]
struct Keeper(Arc<Mutex<Seen>>);

impl Keeper {
    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().expect("lock")
    }
}

struct KeeperActor(Keeper);

impl Actor for KeeperActor {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for KeeperActor {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        let mut seen = self.0.lock();
        let SocketEventKind::Received(bytes) = msg.kind else {
            return;
        };
        seen.data.extend_from_slice(&bytes);
        let Some((limits, read_chunk)) = seen.limits else {
            return;
        };
        let Some(permit) = msg.permit else {
            seen.breach
                .get_or_insert_with(|| "a delivery without a permit".into());
            return;
        };
        if bytes.len() > read_chunk {
            seen.breach
                .get_or_insert_with(|| format!("a delivery of {} > {read_chunk}", bytes.len()));
        }
        // Held now: the kept permits and this one.
        let held = seen.permits.len() + 1;
        let held_bytes: usize =
            seen.permits.iter().map(ReadPermit::bytes).sum::<usize>() + permit.bytes();
        if held > limits.max_deliveries as usize {
            seen.breach.get_or_insert_with(|| {
                format!("{held} deliveries held, max {}", limits.max_deliveries)
            });
        }
        if held_bytes > limits.max_bytes + read_chunk {
            seen.breach.get_or_insert_with(|| {
                format!(
                    "{held_bytes} bytes held, max {} + {read_chunk}",
                    limits.max_bytes
                )
            });
        }
        if seen.keep {
            seen.permits.push(permit);
        }
    }
}

type Answer = Result<Written, WriteError>;

/// One write and what became of it.
struct Made {
    data: Bytes,
    /// Made through the `Writer` (else by message).
    via_writer: bool,
    /// The op index it was made at.
    issued: usize,
    /// The op index by which it was surely in the queue (a writer write at once, a
    /// message by the next settle), `usize::MAX` if no settle came.
    queued_by: usize,
    task: tokio::task::JoinHandle<Option<Answer>>,
}

fn run_case(case: Case) -> Result<(), TestCaseError> {
    run_paused(|| async move {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), script(&case.steps));
        let limits = ReadLimits {
            max_deliveries: case.max_deliveries,
            max_bytes: case.max_bytes,
        };
        let keeper = Keeper::default();
        keeper.lock().limits = Some((limits, case.read_chunk));
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(SocketConfig {
                read_chunk: case.read_chunk,
                read_limits: limits,
                ..SocketConfig::default()
            })
            .subscriber(KeeperActor(keeper.clone()).start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let writer = socket.send(GetWriter).await.expect("writer");
        // The order answers came in: indexes into `made`.
        let answered = Arc::new(Mutex::new(Vec::new()));
        let mut made: Vec<Made> = Vec::new();
        let mut cancels = Vec::new();
        let mut inbound = Vec::new();
        for (w, op) in case.ops.iter().enumerate() {
            match *op {
                Op::Write(len) => {
                    let data = payload(w, len);
                    let request = socket.send(Write::new(data.clone()).tag(w as u64));
                    let (index, answered) = (made.len(), answered.clone());
                    let task = actix::spawn(async move {
                        let a = request.await.ok();
                        answered.lock().expect("lock").push(index);
                        a
                    });
                    made.push(Made {
                        data,
                        via_writer: false,
                        issued: w,
                        queued_by: usize::MAX,
                        task,
                    });
                }
                Op::WriterWrite(len) => {
                    let data = payload(w, len);
                    let answer = writer.write_answered(IoBatch::from(data.clone()));
                    let (index, answered) = (made.len(), answered.clone());
                    let task = actix::spawn(async move {
                        let a = answer.await;
                        answered.lock().expect("lock").push(index);
                        Some(a)
                    });
                    made.push(Made {
                        data,
                        via_writer: true,
                        issued: w,
                        queued_by: w,
                        task,
                    });
                }
                Op::Cancel(pick) => {
                    let messages: Vec<usize> =
                        (0..made.len()).filter(|&i| !made[i].via_writer).collect();
                    if !messages.is_empty() {
                        let index = messages[pick % messages.len()];
                        let tag = made[index].issued as u64;
                        let request = socket.send(CancelWrite { tag });
                        cancels.push((index, actix::spawn(request)));
                    }
                }
                Op::Inbound(len) => {
                    let data = payload(w + 1000, len);
                    inbound.extend_from_slice(&data);
                    mock.push_inbound(Handle(1), data);
                }
                Op::Hold => keeper.lock().keep = true,
                Op::Release(n) => {
                    let mut seen = keeper.lock();
                    let n = n.min(seen.permits.len());
                    seen.permits.drain(..n);
                }
                Op::ReleaseAll => {
                    let mut seen = keeper.lock();
                    seen.keep = false;
                    seen.permits.clear();
                }
                Op::Wait(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Op::Settle => {
                    settle().await;
                    for m in made.iter_mut().filter(|m| m.queued_by == usize::MAX) {
                        m.queued_by = w;
                    }
                    let stats = socket.send(GetStats).await.expect("stats");
                    prop_assert!(
                        stats.unacked_deliveries <= u64::from(case.max_deliveries),
                        "{} deliveries unacknowledged, max {}",
                        stats.unacked_deliveries,
                        case.max_deliveries
                    );
                    prop_assert!(
                        stats.unacked_bytes <= (case.max_bytes + case.read_chunk) as u64,
                        "{} bytes unacknowledged, max {} + {}",
                        stats.unacked_bytes,
                        case.max_bytes,
                        case.read_chunk
                    );
                }
            }
        }

        // Every permit dropped: everything the peer sent arrives, in order, once.
        {
            let mut seen = keeper.lock();
            seen.keep = false;
            seen.permits.clear();
        }
        for _ in 0..(inbound.len() / case.read_chunk + 8) {
            if keeper.lock().data.len() >= inbound.len() {
                break;
            }
            settle().await;
        }
        settle().await;
        {
            let seen = keeper.lock();
            prop_assert!(seen.breach.is_none(), "read window: {:?}", seen.breach);
            prop_assert_eq!(seen.data.len(), inbound.len(), "every inbound byte arrives");
            prop_assert!(seen.data == inbound, "inbound bytes in order, once");
        }

        socket.do_send(if case.finish_graceful {
            Close::Graceful
        } else {
            Close::Abort
        });
        let mut answers = Vec::new();
        for m in made.iter_mut() {
            let answer = tokio::time::timeout(Duration::from_secs(3600), &mut m.task)
                .await
                .map_err(|_| TestCaseError::fail("a write was never answered"))?
                .expect("join");
            match answer {
                Some(a) => answers.push(a),
                None => return Err(TestCaseError::fail("a mailbox error, not an answer")),
            }
        }
        let mut handed_back = vec![0usize; made.len()];
        for (index, task) in cancels {
            let back = task.await.expect("join").expect("cancel answered");
            if let Some(batch) = back {
                handed_back[index] += 1;
                prop_assert_eq!(
                    batch.to_vec().expect("in memory"),
                    made[index].data.to_vec(),
                    "the cancelled payload"
                );
            }
        }
        settle().await;
        let answered = answered.lock().expect("lock").clone();
        prop_assert_eq!(answered.len(), made.len(), "each write answered once");

        let mut expected = Vec::new();
        let mut failed = false;
        for &i in &answered {
            let data = &made[i].data;
            let cancelled = matches!(answers[i], Err(WriteError::Cancelled));
            prop_assert!(handed_back[i] <= 1, "write {} handed back twice", i);
            prop_assert_eq!(
                cancelled,
                handed_back[i] == 1,
                "write {} Cancelled exactly when its payload came back",
                i
            );
            match &answers[i] {
                Ok(done) => {
                    prop_assert!(!failed, "write {} Ok after an earlier one failed", i);
                    prop_assert_eq!(done.len, data.len());
                    expected.extend_from_slice(data);
                }
                Err(WriteError::Cancelled) => {}
                Err(e) => {
                    prop_assert!(
                        !case.finish_graceful,
                        "write {} failed under a graceful close: {:?}",
                        i,
                        e
                    );
                    prop_assert!(
                        matches!(e, WriteError::Aborted { .. }),
                        "write {}: {:?}",
                        i,
                        e
                    );
                    prop_assert!(e.bytes_sent() <= data.len());
                    expected.extend_from_slice(&data[..e.bytes_sent()]);
                    failed = true;
                }
            }
        }
        let written = mock.written(Handle(1));
        prop_assert_eq!(written.len(), expected.len(), "recorded stream length");
        prop_assert!(written == expected, "recorded stream = answers' bytes");

        // FIFO across both paths, for the writes that went out whole.
        let position: Vec<usize> = {
            let mut p = vec![0; made.len()];
            for (at, &i) in answered.iter().enumerate() {
                p[i] = at;
            }
            p
        };
        let oks: Vec<usize> = (0..made.len()).filter(|&i| answers[i].is_ok()).collect();
        for &a in &oks {
            for &b in &oks {
                let (ma, mb) = (&made[a], &made[b]);
                let first = if ma.via_writer == mb.via_writer {
                    ma.issued < mb.issued
                } else {
                    ma.queued_by < mb.issued
                };
                prop_assert!(
                    !first || position[a] < position[b],
                    "write {} (writer: {}) was queued before write {} (writer: {}) but answered after",
                    a,
                    ma.via_writer,
                    b,
                    mb.via_writer
                );
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(crate::support::proptest_config(256))]
    #[test]
    fn writes_cancels_and_the_read_window_keep_every_invariant(case in case()) {
        run_case(case)?;
    }
}
