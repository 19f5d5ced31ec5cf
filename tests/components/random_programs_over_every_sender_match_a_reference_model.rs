//! From the twelfth round of the independent review: random programs against a
//! reference model, through the public API only. Stream sockets written by every sender
//! (`send`, `do_send` tagged or not, the `Writer`'s calls, a `FramedWriter`, cancels,
//! read pauses, inbound data, closes) over a transport that takes part, would block or
//! resets; datagram sockets; the reconnecting client across reconnects; a deflate
//! layer. Each checks that the wire holds exactly the answered writes in order, that
//! every write is answered once, that nothing follows `Closed` but late `WriteFailed`s,
//! and that the counters agree with the transport's log.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use proptest::prelude::*;
use sockactor::messages::{
    CancelWrite, Close, GetStats, GetWriter, Handle, Interest, PauseReading, ResumeReading,
    SocketEvent, SocketEventKind, SocketInterest, Write, Written,
};
use sockactor::{IoBatch, MockTransport, QueueConfig, SendStep, Socket, SocketConfig, WriteError};
use tokio::time::Instant;

use crate::support::{mock_peer, pattern, run_paused, settle};

type Answer = Result<Written, WriteError>;

// ---------------------------------------------------------------------------------------
// Recorders
// ---------------------------------------------------------------------------------------

/// Every socket event with the (paused) time it arrived.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<(Instant, SocketEventKind)>>>);

struct EventsActor(Events);
impl Actor for EventsActor {
    type Context = Context<Self>;
}
impl Handler<SocketEvent> for EventsActor {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        self.0 .0.lock().unwrap().push((Instant::now(), msg.kind));
    }
}

/// Every interest notice.
#[derive(Clone, Default)]
struct Interests(Arc<Mutex<Vec<Interest>>>);
struct InterestsActor(Interests);
impl Actor for InterestsActor {
    type Context = Context<Self>;
}
impl Handler<SocketInterest> for InterestsActor {
    type Result = Result<(), sockactor::messages::InterestRefused>;
    fn handle(&mut self, msg: SocketInterest, _: &mut Context<Self>) -> Self::Result {
        self.0 .0.lock().unwrap().push(msg.interest);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Stream socket model
// ---------------------------------------------------------------------------------------

const HWM: usize = 4096;

#[derive(Clone, Debug)]
enum Op {
    /// `send` a write (awaited by a spawned task).
    Send(usize),
    /// `do_send` a tagged write.
    DoSendTagged(usize),
    /// `do_send` an untagged write (`wait_when_full` if true).
    DoSend(usize, bool),
    /// `Writer::write`.
    WriterWrite(usize),
    /// `Writer::write_tagged`.
    WriterTagged(usize),
    /// `Writer::write_answered`.
    WriterAnswered(usize),
    /// `Writer::write_each`.
    WriterEach(Vec<usize>),
    /// `FramedWriter::send` (BytesCodec), awaited inline.
    Framed(usize),
    /// Cancel the n-th tagged write (modulo how many there are).
    Cancel(usize),
    Inbound(usize),
    Pause,
    Resume,
    Wait(u64),
    Settle,
    Close(bool),
}

#[derive(Clone, Debug)]
enum Step {
    Accept(usize),
    AcceptAll,
    WouldBlock(u64),
    Slow(usize, u64),
    Fail,
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0usize..16,
        4 => 0usize..600,
        2 => 0usize..(3 * HWM),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => size().prop_map(Op::Send),
        2 => size().prop_map(Op::DoSendTagged),
        3 => (size(), any::<bool>()).prop_map(|(n, w)| Op::DoSend(n, w)),
        3 => size().prop_map(Op::WriterWrite),
        1 => size().prop_map(Op::WriterTagged),
        2 => size().prop_map(Op::WriterAnswered),
        1 => prop::collection::vec(size(), 0..4).prop_map(Op::WriterEach),
        1 => size().prop_map(Op::Framed),
        2 => (0usize..8).prop_map(Op::Cancel),
        1 => (1usize..300).prop_map(Op::Inbound),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        2 => (0u64..5).prop_map(Op::Wait),
        2 => Just(Op::Settle),
        1 => any::<bool>().prop_map(Op::Close),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1usize..3000).prop_map(Step::Accept),
        3 => Just(Step::AcceptAll),
        2 => (0u64..5).prop_map(Step::WouldBlock),
        2 => ((1usize..3000), (0u64..5)).prop_map(|(b, a)| Step::Slow(b, a)),
        1 => Just(Step::Fail),
    ]
}

fn script(steps: &[Step]) -> Vec<SendStep> {
    steps
        .iter()
        .map(|s| match *s {
            Step::Accept(n) => SendStep::Accept(n),
            Step::AcceptAll => SendStep::AcceptAll,
            Step::WouldBlock(ms) => SendStep::WouldBlock(Duration::from_millis(ms)),
            Step::Slow(bytes, ms) => SendStep::Slow {
                bytes,
                after: Duration::from_millis(ms),
            },
            Step::Fail => SendStep::Fail(io::ErrorKind::ConnectionReset),
        })
        .collect()
}

#[derive(Clone, Debug)]
struct StreamCase {
    steps: Vec<Step>,
    ops: Vec<Op>,
    immediate: bool,
    finish_graceful: bool,
}

fn stream_case() -> impl Strategy<Value = StreamCase> {
    (
        prop::collection::vec(step(), 0..30),
        prop::collection::vec(op(), 1..50),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(steps, ops, immediate, finish_graceful)| StreamCase {
            steps,
            ops,
            immediate,
            finish_graceful,
        })
}

/// How a write's answer is learnt.
enum How {
    /// From a task (send, write_answered).
    Task(tokio::task::JoinHandle<Option<Answer>>),
    /// Known at once (a synchronous refusal).
    Now(Answer),
    /// A tagged fire-and-forget write: a `WriteFailed { tag }` or success.
    Tagged(u64),
    /// An untagged fire-and-forget write: an untagged `WriteFailed` or success.
    Untagged,
    /// The same, sent as a `Write` message: only such a write can be refused in the
    /// socket's handler (an untagged `QueueFull` event); a `Writer`'s refusals come back
    /// to its caller.
    UntaggedMessage,
}

struct W {
    data: Bytes,
    how: How,
}

fn stream_config() -> SocketConfig {
    SocketConfig {
        queue: QueueConfig {
            high_watermark: HWM,
            low_watermark: HWM / 4,
            ..QueueConfig::default()
        },
        max_waiting_writes: 1 << 20,
        ..SocketConfig::default()
    }
}

fn ok_len(a: &Answer) -> Option<usize> {
    a.as_ref().ok().map(|w| w.len)
}

/// The outcome of one model run, for the checks.
struct Outcome {
    answers: Vec<Answer>,
    datas: Vec<Bytes>,
}

fn run_stream_case(case: StreamCase) -> Result<(), TestCaseError> {
    run_paused(|| async move {
        let mock = MockTransport::start();
        let h = Handle(1);
        mock.script_sendv(h, script(&case.steps));
        let events = Events::default();
        let interests = Interests::default();
        let mut builder = Socket::builder()
            .functions(mock.functions())
            .config(stream_config())
            .subscriber(EventsActor(events.clone()).start().recipient())
            .interest_subscriber(InterestsActor(interests.clone()).start().recipient());
        if case.immediate {
            builder = builder.immediate();
        }
        let socket = builder.connect(mock_peer()).await.expect("connect");
        let writer = socket.send(GetWriter).await.expect("writer");
        let mut framed = writer.clone().framed(tokio_util::codec::BytesCodec::new());
        let mut writes: Vec<W> = Vec::new();
        let mut tagged: Vec<(u64, usize)> = Vec::new(); // (tag, write index)
        let mut cancels: Vec<(usize, Option<IoBatch>)> = Vec::new();
        let mut next_tag = 100u64;
        let mut inbound = Vec::new();
        for (i, op) in case.ops.iter().enumerate() {
            let seed = |k: usize| (i * 16 + k + 1) as u64;
            match op {
                Op::Send(n) => {
                    let data = Bytes::from(pattern(*n, seed(0)));
                    let req = socket.send(Write::new(data.clone()));
                    let t = actix::spawn(async move { req.await.ok() });
                    writes.push(W {
                        data,
                        how: How::Task(t),
                    });
                }
                Op::DoSendTagged(n) => {
                    let data = Bytes::from(pattern(*n, seed(0)));
                    let tag = next_tag;
                    next_tag += 1;
                    socket.do_send(Write::new(data.clone()).tag(tag));
                    tagged.push((tag, writes.len()));
                    writes.push(W {
                        data,
                        how: How::Tagged(tag),
                    });
                }
                Op::DoSend(n, wait) => {
                    let data = Bytes::from(pattern(*n, seed(0)));
                    let mut w = Write::new(data.clone());
                    if *wait {
                        w = w.wait_when_full();
                    }
                    socket.do_send(w);
                    writes.push(W {
                        data,
                        how: How::UntaggedMessage,
                    });
                }
                Op::WriterWrite(n) => {
                    let data = Bytes::from(pattern(*n, seed(0)));
                    let how = match writer.write(data.clone()) {
                        Ok(()) => How::Untagged,
                        Err(e) => How::Now(Err(e)),
                    };
                    writes.push(W { data, how });
                }
                Op::WriterTagged(n) => {
                    let data = Bytes::from(pattern(*n, seed(0)));
                    let tag = next_tag;
                    next_tag += 1;
                    let how = match writer.write_tagged(data.clone(), tag) {
                        Ok(()) => {
                            tagged.push((tag, writes.len()));
                            How::Tagged(tag)
                        }
                        Err(e) => How::Now(Err(e)),
                    };
                    writes.push(W { data, how });
                }
                Op::WriterAnswered(n) => {
                    let data = Bytes::from(pattern(*n, seed(0)));
                    let f = writer.write_answered(data.clone());
                    let t = actix::spawn(async move { Some(f.await) });
                    writes.push(W {
                        data,
                        how: How::Task(t),
                    });
                }
                Op::WriterEach(ns) => {
                    let datas: Vec<Bytes> = ns
                        .iter()
                        .enumerate()
                        .map(|(k, n)| Bytes::from(pattern(*n, seed(k))))
                        .collect();
                    let batches: Vec<IoBatch> = datas.iter().cloned().map(IoBatch::from).collect();
                    match writer.write_each(batches) {
                        Ok(()) => {
                            for data in datas {
                                writes.push(W {
                                    data,
                                    how: How::Untagged,
                                });
                            }
                        }
                        Err(refused) => {
                            for data in datas {
                                let len = data.len();
                                let e = match &refused.error {
                                    WriteError::QueueFull { .. } => WriteError::QueueFull {
                                        queued: 0,
                                        high_watermark: 0,
                                        payload: IoBatch::new(),
                                    },
                                    WriteError::Closed { .. } => {
                                        WriteError::Closed { bytes_sent: 0, len }
                                    }
                                    other => other.clone(),
                                };
                                writes.push(W {
                                    data,
                                    how: How::Now(Err(e)),
                                });
                            }
                        }
                    }
                }
                Op::Framed(n) => {
                    let data = Bytes::from(pattern(*n, seed(0)));
                    let r =
                        tokio::time::timeout(Duration::from_secs(60), framed.send(data.clone()))
                            .await;
                    let how = match r {
                        Ok(Ok(())) => How::Untagged,
                        Ok(Err(sockactor::FramedWriteError::Write(e))) => {
                            // The refusal is the item's one answer, naming its bytes.
                            prop_assert_eq!(err_len(&e), Some(*n), "{:?}", e);
                            How::Now(Err(e))
                        }
                        Ok(Err(e)) => {
                            return Err(TestCaseError::fail(format!("framed send: {e:?}")))
                        }
                        Err(_) => return Err(TestCaseError::fail("framed send never returned")),
                    };
                    writes.push(W { data, how });
                }
                Op::Cancel(k) => {
                    if !tagged.is_empty() {
                        let (tag, idx) = tagged[k % tagged.len()];
                        let r = socket.send(CancelWrite { tag }).await.ok().flatten();
                        cancels.push((idx, r));
                    }
                }
                Op::Inbound(n) => {
                    let data = pattern(*n, seed(9) + 5000);
                    inbound.extend_from_slice(&data);
                    mock.push_inbound(h, data);
                }
                Op::Pause => socket.do_send(PauseReading),
                Op::Resume => socket.do_send(ResumeReading),
                Op::Wait(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
                Op::Settle => settle().await,
                Op::Close(g) => socket.do_send(if *g { Close::Graceful } else { Close::Abort }),
            }
        }
        // A quiet point: everything the transport will take has been taken.
        tokio::time::sleep(Duration::from_millis(200)).await;
        settle().await;
        let stats = socket.send(GetStats).await.ok();
        let written_then = mock.written(h);
        let log_then = mock.sendv_log(h);
        socket.do_send(if case.finish_graceful {
            Close::Graceful
        } else {
            Close::Abort
        });
        socket.do_send(ResumeReading);
        drop(framed);
        drop(writer);
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        let final_stats = socket.send(GetStats).await.ok();

        // Collect the answers.
        let evs: Vec<(Instant, SocketEventKind)> = std::mem::take(&mut *events.0.lock().unwrap());
        let mut by_tag: HashMap<u64, Vec<WriteError>> = HashMap::new();
        let mut untagged: Vec<WriteError> = Vec::new();
        let mut closed_at = None;
        let mut closed_count = 0;
        for (at, e) in evs.iter() {
            if closed_at.is_some() {
                prop_assert!(
                    matches!(e, SocketEventKind::WriteFailed { .. }),
                    "only WriteFailed may follow Closed, got {:?}",
                    e
                );
            }
            match e {
                SocketEventKind::WriteFailed {
                    tag: Some(t),
                    error,
                } => by_tag.entry(*t).or_default().push(error.clone()),
                SocketEventKind::WriteFailed { tag: None, error } => untagged.push(error.clone()),
                SocketEventKind::Closed { .. } => {
                    closed_count += 1;
                    closed_at = Some(*at);
                }
                _ => {}
            }
        }
        if std::env::var("R12_DEBUG").is_ok() {
            eprintln!(
                "events: {:?}",
                evs.iter().map(|e| format!("{:?}", e.1)).collect::<Vec<_>>()
            );
            eprintln!(
                "writes: {:?}",
                writes
                    .iter()
                    .map(|w| (
                        w.data.len(),
                        match &w.how {
                            How::Task(_) => "task".to_string(),
                            How::Now(a) => format!("now {:?}", a.as_ref().map(|w| w.len)),
                            How::Tagged(t) => format!("tag {t}"),
                            How::Untagged | How::UntaggedMessage => "untagged".into(),
                        }
                    ))
                    .collect::<Vec<_>>()
            );
        }
        prop_assert_eq!(closed_count, 1, "exactly one Closed event");
        for (t, v) in &by_tag {
            prop_assert_eq!(v.len(), 1, "tag {} failed {} times: {:?}", t, v.len(), v);
        }
        // Untagged refusals carry their payload: match them by content.
        let mut answers: Vec<Option<Answer>> = Vec::with_capacity(writes.len());
        let mut untagged_idx = Vec::new();
        for (i, w) in writes.iter_mut().enumerate() {
            let a = match &mut w.how {
                How::Task(t) => {
                    let r = t.await.expect("join");
                    match r {
                        Some(a) => Some(a),
                        None => {
                            return Err(TestCaseError::fail(format!("write {i}: mailbox error")))
                        }
                    }
                }
                How::Now(a) => Some(a.clone()),
                How::Tagged(tag) => Some(match by_tag.remove(tag) {
                    Some(mut v) => Err(v.remove(0)),
                    None => Ok(Written {
                        len: w.data.len(),
                        ..written_placeholder()
                    }),
                }),
                How::Untagged | How::UntaggedMessage => {
                    untagged_idx.push(i);
                    None
                }
            };
            answers.push(a);
        }
        prop_assert!(
            by_tag.is_empty(),
            "WriteFailed for unknown tags: {:?}",
            by_tag.keys().collect::<Vec<_>>()
        );
        // QueueFull refusals of untagged writes: by payload.
        let mut rest = Vec::new();
        for e in untagged {
            if let WriteError::QueueFull { payload, .. } = &e {
                let bytes = payload_bytes(payload);
                let pos = untagged_idx.iter().position(|&i| {
                    matches!(writes[i].how, How::UntaggedMessage)
                        && answers[i].is_none()
                        && writes[i].data[..] == bytes[..]
                });
                match pos {
                    Some(p) => {
                        let i = untagged_idx.remove(p);
                        answers[i] = Some(Err(e));
                    }
                    None => return Err(TestCaseError::fail("a QueueFull for no untagged write")),
                }
            } else {
                rest.push(e);
            }
        }
        // The rest fail from some point on: the last `rest.len()` untagged writes.
        prop_assert!(
            rest.len() <= untagged_idx.len(),
            "{} untagged failures for {} untagged writes",
            rest.len(),
            untagged_idx.len()
        );
        let failing: Vec<usize> = untagged_idx[untagged_idx.len() - rest.len()..].to_vec();
        // Partly sent failures go to the earliest write of their length.
        rest.sort_by_key(|e| std::cmp::Reverse(e.bytes_sent()));
        let mut free: Vec<usize> = failing.clone();
        for e in rest {
            let len = err_len(&e);
            let pos = free
                .iter()
                .position(|&i| Some(writes[i].data.len()) == len)
                .unwrap_or(0);
            let i = free.remove(pos);
            answers[i] = Some(Err(e));
        }
        for &i in &untagged_idx {
            if answers[i].is_none() {
                answers[i] = Some(Ok(Written {
                    len: writes[i].data.len(),
                    ..written_placeholder()
                }));
            }
        }
        let outcome = Outcome {
            answers: answers.into_iter().map(|a| a.expect("answered")).collect(),
            datas: writes.iter().map(|w| w.data.clone()).collect(),
        };

        // (1) The stream is exactly the answered bytes, in program order.
        let mut expected = Vec::new();
        for (i, (a, d)) in outcome.answers.iter().zip(&outcome.datas).enumerate() {
            match a {
                Ok(w) => {
                    prop_assert_eq!(w.len, d.len(), "write {} Ok with the wrong length", i);
                    expected.extend_from_slice(d);
                }
                Err(e) => {
                    prop_assert!(!matches!(e, WriteError::Lost { .. }), "write {} lost", i);
                    prop_assert!(e.bytes_sent() <= d.len(), "write {}: {:?}", i, e);
                    expected.extend_from_slice(&d[..e.bytes_sent()]);
                }
            }
        }
        let written = mock.written(h);
        if written != expected {
            let at = written.iter().zip(&expected).position(|(a, b)| a != b);
            return Err(TestCaseError::fail(format!(
                "stream differs: written {} bytes, expected {} bytes, first difference at {:?}; answers: {:?}",
                written.len(),
                expected.len(),
                at,
                outcome
                    .answers
                    .iter()
                    .zip(&outcome.datas)
                    .map(|(a, d)| (d.len(), a.as_ref().map(|w| w.len).map_err(|e| format!("{e}"))))
                    .collect::<Vec<_>>()
            )));
        }
        // (2) Cancels.
        for (idx, r) in &cancels {
            if let Some(payload) = r {
                prop_assert_eq!(
                    &payload_bytes(payload)[..],
                    &outcome.datas[*idx][..],
                    "cancel handed back another payload"
                );
                prop_assert!(
                    matches!(outcome.answers[*idx], Err(WriteError::Cancelled)),
                    "a cancelled write answered {:?}",
                    outcome.answers[*idx].as_ref().map(|w| w.len)
                );
            }
        }
        for (i, a) in outcome.answers.iter().enumerate() {
            if matches!(a, Err(WriteError::Cancelled)) {
                prop_assert!(
                    cancels.iter().any(|(idx, r)| *idx == i && r.is_some()),
                    "write {} answered Cancelled though no cancel returned its payload",
                    i
                );
            }
        }
        // (3) Interest: only on change, Remove once and last.
        let ints = interests.0.lock().unwrap().clone();
        for w in ints.windows(2) {
            prop_assert!(w[0] != w[1], "interest repeated: {:?}", ints);
        }
        prop_assert_eq!(ints.last(), Some(&Interest::Remove), "interests {:?}", ints);
        prop_assert_eq!(ints.iter().filter(|i| **i == Interest::Remove).count(), 1);
        // (4) Nothing goes out after Closed.
        let closed_at = closed_at.expect("closed");
        for r in mock.sendv_log(h) {
            prop_assert!(
                !(r.at > closed_at && r.accepted > 0),
                "a sendv took {} bytes after Closed",
                r.accepted
            );
        }
        prop_assert!(mock.is_closed(h), "handle closed");
        // (5) The received bytes are a prefix of what the peer sent.
        let mut received = Vec::new();
        for (_, e) in &evs {
            if let SocketEventKind::Received(b) = e {
                received.extend_from_slice(b);
            }
        }
        prop_assert!(
            inbound.starts_with(&received),
            "received not a prefix of what was sent"
        );
        // (6) Counters at the quiet point.
        if let Some(s) = stats {
            prop_assert_eq!(
                s.bytes_sent,
                written_then.len() as u64,
                "bytes_sent counter"
            );
            prop_assert_eq!(s.sendv_calls, log_then.len() as u64, "sendv_calls counter");
            prop_assert_eq!(
                s.would_blocks,
                log_then.iter().filter(|r| r.would_block).count() as u64,
                "would_blocks counter"
            );
        }
        if let Some(s) = final_stats {
            let oks = outcome.answers.iter().filter(|a| a.is_ok()).count() as u64;
            let errs = outcome.answers.len() as u64 - oks;
            prop_assert_eq!(s.bytes_sent, written.len() as u64, "final bytes_sent");
            prop_assert_eq!(s.writes_completed, oks, "writes_completed: {:?}", s);
            prop_assert_eq!(s.writes_failed, errs, "writes_failed: {:?}", s);
            prop_assert!(s.writes <= oks + errs, "writes: {:?}", s);
            prop_assert_eq!(s.queued_bytes, 0);
            prop_assert_eq!(s.queued_writes, 0);
        }
        let _ = ok_len;
        Ok(())
    })
}

fn written_placeholder() -> Written {
    Written {
        len: 0,
        sendv_calls: 0,
        would_blocks: 0,
        max_writes_per_sendv: 0,
        latency: Duration::ZERO,
    }
}

fn err_len(e: &WriteError) -> Option<usize> {
    match e {
        WriteError::Closed { len, .. }
        | WriteError::Aborted { len, .. }
        | WriteError::Transport { len, .. }
        | WriteError::TimedOut { len, .. }
        | WriteError::Lost { len } => Some(*len),
        _ => None,
    }
}

fn payload_bytes(b: &IoBatch) -> Vec<u8> {
    b.to_vec().expect("memory batch")
}

proptest! {
    #![proptest_config(crate::support::proptest_config(256))]
    #[test]
    fn stream_model_every_sender_every_write_answered_once_and_stream_exact(case in stream_case()) {
        run_stream_case(case)?;
    }
}

// ---------------------------------------------------------------------------------------
// Datagram socket model
// ---------------------------------------------------------------------------------------

mod datagram_model {
    use super::*;
    use sockactor::messages::{
        Address, DatagramEvent, DatagramEventKind, GetDatagramStats, GetDatagramWriter,
        SendDatagram,
    };
    use sockactor::{DatagramConfig, DatagramError, DatagramSocket};
    use std::net::SocketAddr;

    #[derive(Clone, Debug)]
    pub(super) enum DOp {
        Send(usize),
        DoSend(usize),
        Writer(usize),
        WriterWhenReady(usize),
        Inbound(usize),
        Wait(u64),
        Settle,
        Close(bool),
    }

    fn dop() -> impl Strategy<Value = DOp> {
        let n = prop_oneof![3 => 0usize..40, 1 => 0usize..3000];
        prop_oneof![
            3 => n.clone().prop_map(DOp::Send),
            3 => n.clone().prop_map(DOp::DoSend),
            3 => n.clone().prop_map(DOp::Writer),
            1 => n.prop_map(DOp::WriterWhenReady),
            1 => (0usize..100).prop_map(DOp::Inbound),
            1 => (0u64..4).prop_map(DOp::Wait),
            2 => Just(DOp::Settle),
            1 => any::<bool>().prop_map(DOp::Close),
        ]
    }

    fn dstep() -> impl Strategy<Value = SendStep> {
        prop_oneof![
            4 => Just(SendStep::AcceptAll),
            1 => (0usize..8).prop_map(SendStep::Accept),
            2 => (0u64..4).prop_map(|ms| SendStep::WouldBlock(Duration::from_millis(ms))),
            2 => ((0usize..3000), (0u64..4)).prop_map(|(b, ms)| SendStep::Slow { bytes: b, after: Duration::from_millis(ms) }),
            1 => Just(SendStep::Fail(io::ErrorKind::ConnectionRefused)),
        ]
    }

    #[derive(Clone, Debug)]
    pub(super) struct DCase {
        pub(super) ops: Vec<DOp>,
        pub(super) steps: Vec<SendStep>,
        pub(super) max_queued: usize,
        pub(super) immediate_close_graceful: bool,
    }

    pub(super) fn dcase() -> impl Strategy<Value = DCase> {
        (
            prop::collection::vec(dop(), 1..50),
            prop::collection::vec(dstep(), 0..30),
            1usize..10,
            any::<bool>(),
        )
            .prop_map(|(ops, steps, max_queued, g)| DCase {
                ops,
                steps,
                max_queued,
                immediate_close_graceful: g,
            })
    }

    fn to() -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], 53))
    }

    fn payload(index: u32, extra: usize) -> Bytes {
        let mut bytes = index.to_be_bytes().to_vec();
        bytes.extend((0..extra).map(|i| (i as u32 * 7 + index) as u8));
        Bytes::from(bytes)
    }

    type DAnswer = Result<usize, DatagramError>;

    enum DHow {
        Task(
            tokio::task::JoinHandle<
                Option<Result<sockactor::messages::DatagramSent, DatagramError>>,
            >,
        ),
        Now(DAnswer),
        Tagged(u64),
        Untagged,
    }

    #[derive(Clone, Default)]
    struct DEvents(Arc<Mutex<Vec<DatagramEventKind>>>);
    struct DEventsActor(DEvents);
    impl Actor for DEventsActor {
        type Context = Context<Self>;
    }
    impl Handler<DatagramEvent> for DEventsActor {
        type Result = ();
        fn handle(&mut self, msg: DatagramEvent, _: &mut Context<Self>) {
            self.0 .0.lock().unwrap().push(msg.kind);
        }
    }

    pub(super) fn run(case: DCase) -> Result<(), TestCaseError> {
        run_paused(|| async move {
            let mock = MockTransport::start();
            let h = Handle(1);
            mock.script_sendv(h, case.steps.clone());
            let events = DEvents::default();
            let (socket, _) = DatagramSocket::builder()
                .functions(mock.functions())
                .config(DatagramConfig {
                    max_queued: case.max_queued,
                    ..DatagramConfig::default()
                })
                .subscriber(DEventsActor(events.clone()).start().recipient())
                .bind(crate::support::local())
                .await
                .expect("bind");
            let writer = socket.send(GetDatagramWriter).await.expect("writer");
            let dest: Address = to().into();
            let mut sent: Vec<(Bytes, DHow)> = Vec::new();
            let mut next_tag = 1u64;
            let mut inbound = Vec::new();
            for op in &case.ops {
                let index = sent.len() as u32;
                match op {
                    DOp::Send(n) => {
                        let p = payload(index, *n);
                        let req = socket.send(SendDatagram::new(p.clone()).to(to()));
                        let t = actix::spawn(async move { req.await.ok() });
                        sent.push((p, DHow::Task(t)));
                    }
                    DOp::DoSend(n) => {
                        let p = payload(index, *n);
                        socket.do_send(SendDatagram::new(p.clone()).to(to()).tag(next_tag));
                        sent.push((p, DHow::Tagged(next_tag)));
                        next_tag += 1;
                    }
                    DOp::Writer(n) => {
                        let p = payload(index, *n);
                        let how = match writer.send_to(p.clone(), Some(dest.clone())) {
                            Ok(()) => DHow::Untagged,
                            Err(e) => DHow::Now(Err(e)),
                        };
                        sent.push((p, how));
                    }
                    DOp::WriterWhenReady(n) => {
                        let p = payload(index, *n);
                        let r = tokio::time::timeout(
                            Duration::from_secs(60),
                            writer.send_when_ready(p.clone(), Some(dest.clone())),
                        )
                        .await;
                        let how = match r {
                            Ok(Ok(())) => DHow::Untagged,
                            Ok(Err(e)) => DHow::Now(Err(e)),
                            Err(_) => return Err(TestCaseError::fail("send_when_ready hung")),
                        };
                        sent.push((p, how));
                    }
                    DOp::Inbound(n) => {
                        let p = payload(10_000 + inbound.len() as u32, *n);
                        inbound.push(p.clone());
                        mock.push_datagram(h, p, SocketAddr::from(([198, 51, 100, 7], 9)));
                    }
                    DOp::Wait(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
                    DOp::Settle => settle().await,
                    DOp::Close(g) => {
                        socket.do_send(if *g { Close::Graceful } else { Close::Abort })
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            settle().await;
            let stats_then = socket.send(GetDatagramStats).await.ok();
            let log_then = mock.sendv_log(h);
            let records_then = mock.datagrams(h);
            socket.do_send(if case.immediate_close_graceful {
                Close::Graceful
            } else {
                Close::Abort
            });
            tokio::time::sleep(Duration::from_secs(30)).await;
            settle().await;
            let final_stats = socket.send(GetDatagramStats).await.ok();

            let evs = std::mem::take(&mut *events.0.lock().unwrap());
            let mut by_tag: HashMap<u64, Vec<DatagramError>> = HashMap::new();
            let mut untagged: Vec<DatagramError> = Vec::new();
            let mut received = Vec::new();
            let mut closed = 0;
            for e in evs {
                match e {
                    DatagramEventKind::SendFailed {
                        tag: Some(t),
                        error,
                    } => by_tag.entry(t).or_default().push(error),
                    DatagramEventKind::SendFailed { tag: None, error } => untagged.push(error),
                    DatagramEventKind::Received {
                        bytes, truncated, ..
                    } => {
                        prop_assert!(!truncated);
                        received.push(bytes)
                    }
                    DatagramEventKind::Closed { .. } => closed += 1,
                    _ => {}
                }
            }
            prop_assert_eq!(closed, 1, "one Closed");
            if std::env::var("R12_DEBUG").is_ok() {
                eprintln!(
                    "records {:?}",
                    mock.datagrams(h)
                        .iter()
                        .map(|x| x.bytes.clone())
                        .collect::<Vec<_>>()
                );
                eprintln!("untagged {:?} by_tag {:?}", untagged, by_tag);
                eprintln!(
                    "log {:?}",
                    mock.sendv_log(h)
                        .iter()
                        .map(|r| (r.offered, r.accepted, r.would_block, r.failed))
                        .collect::<Vec<_>>()
                );
            }
            for (t, v) in &by_tag {
                prop_assert_eq!(v.len(), 1, "tag {} reported {:?}", t, v);
            }
            // Received datagrams: whole, in order, a prefix of what came in.
            prop_assert!(received.len() <= inbound.len());
            for (r, i) in received.iter().zip(&inbound) {
                prop_assert_eq!(r, i);
            }
            // Untagged refusals by payload; the rest in order.
            let mut refusals: Vec<DatagramError> = Vec::new();
            let mut others: std::collections::VecDeque<DatagramError> = Default::default();
            for e in untagged {
                if matches!(e, DatagramError::QueueFull { .. }) {
                    refusals.push(e)
                } else {
                    others.push_back(e)
                }
            }
            let mut answers: Vec<Option<DAnswer>> = Vec::new();
            for (p, how) in sent.iter_mut() {
                answers.push(match how {
                    DHow::Task(t) => match t.await.expect("join") {
                        Some(a) => Some(a.map(|s| s.len)),
                        None => return Err(TestCaseError::fail("mailbox error")),
                    },
                    DHow::Now(a) => Some(a.clone()),
                    DHow::Tagged(t) => Some(match by_tag.remove(t) {
                        Some(mut v) => Err(v.remove(0)),
                        None => Ok(p.len()),
                    }),
                    DHow::Untagged => {
                        let pos = refusals.iter().position(|e| match e {
                            DatagramError::QueueFull { payload, .. } => {
                                payload.to_vec().unwrap() == p.to_vec()
                            }
                            _ => false,
                        });
                        pos.map(|k| Err(refusals.remove(k)))
                    }
                });
            }
            prop_assert!(by_tag.is_empty(), "reports for unknown tags");
            prop_assert!(refusals.is_empty(), "QueueFull reports for no datagram");
            // Align with the transport's records.
            let records = mock.datagrams(h);
            let mut r = 0usize;
            for (i, ((p, _), a)) in sent.iter().zip(answers.iter_mut()).enumerate() {
                if a.is_none() {
                    // An untagged writer datagram: Ok if it is the next record, else the
                    // next untagged failure.
                    if r < records.len() && records[r].bytes == p[..] {
                        *a = Some(Ok(p.len()));
                    } else {
                        // Refusals are reported when decided (maybe ahead of an earlier
                        // datagram's failure): a Partial must match this datagram.
                        let k = others
                            .iter()
                            .position(|e| match e {
                                DatagramError::Partial { sent, len } => {
                                    *len == p.len()
                                        && r < records.len()
                                        && records[r].bytes[..] == p[..*sent]
                                }
                                _ => false,
                            })
                            .or_else(|| {
                                others
                                    .iter()
                                    .position(|e| !matches!(e, DatagramError::Partial { .. }))
                            });
                        match k.and_then(|k| others.remove(k)) {
                            Some(e) => *a = Some(Err(e)),
                            None => {
                                return Err(TestCaseError::fail(format!(
                                "datagram {i} ({:?}) neither sent nor reported; records left {:?}",
                                &p[..],
                                records[r..]
                                    .iter()
                                    .map(|x| x.bytes.clone())
                                    .collect::<Vec<_>>()
                            )))
                            }
                        }
                    }
                }
                match a.as_ref().unwrap() {
                    Ok(len) => {
                        prop_assert_eq!(*len, p.len());
                        prop_assert!(r < records.len(), "datagram {} Ok but not sent", i);
                        prop_assert_eq!(
                            &records[r].bytes[..],
                            &p[..],
                            "datagram {} Ok but record differs",
                            i
                        );
                        r += 1;
                    }
                    Err(DatagramError::Partial { sent, len }) => {
                        prop_assert_eq!(*len, p.len());
                        prop_assert!(*sent < *len);
                        prop_assert!(r < records.len(), "datagram {} partial but not recorded", i);
                        prop_assert_eq!(
                            &records[r].bytes[..],
                            &p[..*sent],
                            "datagram {} partial record",
                            i
                        );
                        r += 1;
                    }
                    Err(DatagramError::Lost) => {
                        return Err(TestCaseError::fail(format!("datagram {i} lost")))
                    }
                    Err(_) => {}
                }
            }
            prop_assert_eq!(
                r,
                records.len(),
                "records left over: {:?}",
                records.len() - r
            );
            prop_assert!(
                others.is_empty(),
                "untagged failures left over: {:?}",
                others
            );
            // Counters.
            let oks = answers.iter().filter(|a| matches!(a, Some(Ok(_)))).count() as u64;
            let errs = answers.len() as u64 - oks;
            if let Some(s) = final_stats {
                prop_assert_eq!(s.sent, oks, "sent counter {:?}", s);
                // `<=`: a DatagramWriter's refusals of a closed socket are not all counted.
                prop_assert_eq!(s.send_failed, errs, "send_failed counter {:?}", s);
                prop_assert_eq!(
                    s.sendv_calls,
                    mock.sendv_calls(h) as u64,
                    "sendv_calls {:?}",
                    s
                );
                prop_assert_eq!(
                    s.would_blocks,
                    mock.sendv_log(h).iter().filter(|r| r.would_block).count() as u64,
                    "would_blocks {:?}",
                    s
                );
                prop_assert_eq!(s.received, received.len() as u64);
            }
            if let Some(s) = stats_then {
                prop_assert_eq!(
                    s.sendv_calls,
                    log_then.len() as u64,
                    "sendv_calls then {:?}",
                    s
                );
                let _ = records_then;
            }
            prop_assert!(mock.is_closed(h));
            Ok(())
        })
    }
}

proptest! {
    #![proptest_config(crate::support::proptest_config(256))]
    #[test]
    fn datagram_model_every_datagram_whole_or_reported_once_in_order(case in datagram_model::dcase()) {
        datagram_model::run(case)?;
    }
}

#[test]
fn datagram_model_a_refusal_reported_before_an_earlier_partial() {
    use datagram_model::{DCase, DOp};
    let r = datagram_model::run(DCase {
        ops: vec![
            DOp::Send(0),
            DOp::Writer(2),
            DOp::Close(true),
            DOp::Writer(0),
        ],
        steps: vec![SendStep::AcceptAll, SendStep::Accept(0)],
        max_queued: 8,
        immediate_close_graceful: false,
    });
    r.unwrap();
}

// ---------------------------------------------------------------------------------------
// Reconnecting client model
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum COp {
    Send(usize),
    DoSendTagged(usize),
    Wait(u64),
    Settle,
    Eof,
}

#[derive(Clone, Debug)]
struct CCase {
    scripts: Vec<Vec<Step>>,
    ops: Vec<COp>,
    retain: bool,
}

fn ccase() -> impl Strategy<Value = CCase> {
    (
        prop::collection::vec(prop::collection::vec(step(), 0..10), 1..5),
        prop::collection::vec(
            prop_oneof![
                4 => size().prop_map(COp::Send),
                2 => size().prop_map(COp::DoSendTagged),
                2 => (0u64..300).prop_map(COp::Wait),
                2 => Just(COp::Settle),
                1 => Just(COp::Eof),
            ],
            1..40,
        ),
        any::<bool>(),
    )
        .prop_map(|(scripts, ops, retain)| CCase {
            scripts,
            ops,
            retain,
        })
}

/// A client write: its bytes, the task awaiting its answer (if answered) and its tag.
type ClientWrite = (
    Bytes,
    Option<tokio::task::JoinHandle<Option<Answer>>>,
    Option<u64>,
);

fn run_client_case(case: CCase) -> Result<(), TestCaseError> {
    use sockactor::messages::ClientEvent;
    use sockactor::{ReconnectingClient, UnsentWrites};
    run_paused(|| async move {
        let mock = MockTransport::start();
        for (i, s) in case.scripts.iter().enumerate() {
            mock.script_sendv(Handle(i as u64 + 1), script(s));
        }
        let (events, mut heard) = crate::support::channel::<ClientEvent>();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .backoff(Duration::from_millis(10), Duration::from_millis(100))
            .seed(7)
            .max_attempts(None)
            .unsent_writes(if case.retain {
                UnsentWrites::Retain
            } else {
                UnsentWrites::Fail
            })
            .subscriber(events)
            .start();
        let mut writes: Vec<ClientWrite> = Vec::new();
        let mut tag = 1u64;
        for (i, op) in case.ops.iter().enumerate() {
            match op {
                COp::Send(n) => {
                    let data = Bytes::from(pattern(*n, i as u64 + 1));
                    let req = client.send(Write::new(data.clone()));
                    // Poll in order: the client keeps the order it receives writes in.
                    let t = actix::spawn(async move { req.await.ok() });
                    tokio::task::yield_now().await;
                    writes.push((data, Some(t), None));
                }
                COp::DoSendTagged(n) => {
                    let data = Bytes::from(pattern(*n, i as u64 + 1));
                    client.do_send(Write::new(data.clone()).tag(tag));
                    writes.push((data, None, Some(tag)));
                    tag += 1;
                }
                COp::Wait(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
                COp::Settle => settle().await,
                COp::Eof => {
                    for h in mock.handles() {
                        if !mock.is_closed(h) {
                            mock.push_eof(h);
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        settle().await;
        client.do_send(Close::Graceful);
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        let mut failed: HashMap<u64, Vec<WriteError>> = HashMap::new();
        for e in crate::support::drain(&mut heard) {
            if let ClientEvent::WriteFailed {
                tag: Some(t),
                error,
            } = e
            {
                failed.entry(t).or_default().push(error);
            }
        }
        let mut expected = Vec::new();
        let mut summary = Vec::new();
        for (i, (data, task, t)) in writes.into_iter().enumerate() {
            let answer: Answer = match (task, t) {
                (Some(task), _) => match task.await.expect("join") {
                    Some(a) => a,
                    None => return Err(TestCaseError::fail(format!("write {i}: mailbox error"))),
                },
                (None, Some(t)) => match failed.remove(&t) {
                    Some(mut v) => {
                        prop_assert_eq!(v.len(), 1, "tag {} reported {} times", t, v.len());
                        Err(v.remove(0))
                    }
                    None => Ok(Written {
                        len: data.len(),
                        ..Written::default()
                    }),
                },
                _ => unreachable!(),
            };
            match &answer {
                Ok(w) => {
                    prop_assert_eq!(w.len, data.len());
                    expected.extend_from_slice(&data);
                }
                Err(e) => {
                    prop_assert!(!matches!(e, WriteError::Lost { .. }), "write {} lost", i);
                    expected.extend_from_slice(&data[..e.bytes_sent()]);
                }
            }
            summary.push((
                data.len(),
                answer.map(|w| w.len).map_err(|e| format!("{e}")),
            ));
        }
        let mut wire = Vec::new();
        let mut per_handle = Vec::new();
        for h in mock.handles() {
            let w = mock.written(h);
            per_handle.push((h, w.len(), mock.is_closed(h)));
            wire.extend_from_slice(&w);
        }
        if std::env::var("R12_DEBUG").is_ok() {
            eprintln!(
                "client handles {} wire {} answers {}",
                per_handle.len(),
                wire.len(),
                summary.iter().filter(|a| a.1.is_err()).count()
            );
        }
        prop_assert!(
            wire == expected,
            "wire {} bytes, expected {} bytes; handles {:?}; answers {:?}",
            wire.len(),
            expected.len(),
            per_handle,
            summary
        );
        Ok(())
    })
}

proptest! {
    #![proptest_config(crate::support::proptest_config(128))]
    #[test]
    fn client_model_wire_is_the_answered_writes_in_order_across_reconnects(case in ccase()) {
        run_client_case(case)?;
    }
}

// ---------------------------------------------------------------------------------------
// Deflate layer over a random transport
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct LCase {
    steps: Vec<Step>,
    writes: Vec<(usize, u8)>,
    abort: bool,
}

fn lcase() -> impl Strategy<Value = LCase> {
    let nonfail = prop_oneof![
        4 => (1usize..3000).prop_map(Step::Accept),
        3 => Just(Step::AcceptAll),
        2 => (0u64..5).prop_map(Step::WouldBlock),
        2 => ((1usize..3000), (0u64..5)).prop_map(|(b, a)| Step::Slow(b, a)),
    ];
    (
        prop::collection::vec(nonfail, 0..40),
        prop::collection::vec((size(), 0u8..4), 1..30),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(steps, writes, abort)| LCase {
            steps,
            writes,
            abort,
        })
}

fn run_layer_case(case: LCase) -> Result<(), TestCaseError> {
    use sockactor::filters::Compress;
    run_paused(|| async move {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), script(&case.steps));
        let events = Events::default();
        let socket = Socket::builder()
            .functions(Compress::new().wrap(mock.functions_with_shutdown()))
            .config(stream_config())
            .subscriber(EventsActor(events.clone()).start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let writer = socket.send(GetWriter).await.unwrap();
        let mut tasks = Vec::new();
        for (i, (n, how)) in case.writes.iter().enumerate() {
            // Compressible and incompressible payloads.
            let data = if i % 2 == 0 {
                Bytes::from(pattern(*n, i as u64 + 1))
            } else {
                Bytes::from(vec![b'a' + (i % 26) as u8; *n])
            };
            let t: tokio::task::JoinHandle<Option<Answer>> = match how {
                0 => {
                    let r = socket.send(Write::new(data.clone()).wait_when_full());
                    actix::spawn(async move { r.await.ok() })
                }
                1 => {
                    let _ = writer.writable().await;
                    let f = writer.write_answered(data.clone());
                    actix::spawn(async move { Some(f.await) })
                }
                2 => {
                    let w = writer.clone();
                    let d = data.clone();
                    // Waits for room, then writes: answered Ok unless a failure is reported.
                    let r = w.write_when_ready(d).await;
                    actix::spawn(async move { Some(r.map(|()| Written::default())) })
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let r = socket.send(Write::new(data.clone()).wait_when_full());
                    actix::spawn(async move { r.await.ok() })
                }
            };
            tasks.push((data, *how, t));
        }
        socket.do_send(if case.abort {
            Close::Abort
        } else {
            Close::Graceful
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle().await;
        let untagged_failures = events
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| matches!(e, SocketEventKind::WriteFailed { .. }))
            .count();
        let mut expected = Vec::new();
        let mut all_ok = untagged_failures == 0;
        for (i, (data, how, t)) in tasks.into_iter().enumerate() {
            let a = t.await.unwrap();
            match a {
                Some(Ok(_)) => {
                    if all_ok {
                        expected.extend_from_slice(&data)
                    }
                }
                Some(Err(e)) => {
                    prop_assert!(
                        case.abort,
                        "write {} ({}, how {}) failed without an abort: {:?}",
                        i,
                        data.len(),
                        how,
                        e
                    );
                    all_ok = false;
                }
                None => return Err(TestCaseError::fail("mailbox error")),
            }
        }
        prop_assert!(mock.is_closed(Handle(1)), "handle closed");
        // The peer decodes the wire.
        let wire = mock.written(Handle(1));
        let peer_mock = MockTransport::start();
        let peer_events = Events::default();
        let _peer = Socket::builder()
            .functions(Compress::new().wrap(peer_mock.functions()))
            .subscriber(EventsActor(peer_events.clone()).start().recipient())
            .connect(mock_peer())
            .await
            .expect("peer");
        peer_mock.push_inbound(Handle(1), wire.clone());
        peer_mock.push_eof(Handle(1));
        tokio::time::sleep(Duration::from_secs(1)).await;
        settle().await;
        let mut decoded = Vec::new();
        let mut read_failed = None;
        for (_, e) in peer_events.0.lock().unwrap().iter() {
            match e {
                SocketEventKind::Received(b) => decoded.extend_from_slice(b),
                SocketEventKind::ReadFailed(e) => read_failed = Some(format!("{e}")),
                _ => {}
            }
        }
        if case.abort {
            // What was answered Ok before the abort is decoded (a prefix at least).
            prop_assert!(
                decoded.starts_with(&expected) || expected.starts_with(&decoded),
                "decoded diverges"
            );
            prop_assert!(
                decoded.len() >= expected.len(),
                "decoded {} < answered Ok {}",
                decoded.len(),
                expected.len()
            );
        } else {
            prop_assert!(read_failed.is_none(), "peer read failed: {:?}", read_failed);
            prop_assert!(
                decoded == expected,
                "decoded {} bytes, answered {} bytes (wire {})",
                decoded.len(),
                expected.len(),
                wire.len()
            );
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(crate::support::proptest_config(64))]
    #[test]
    fn deflate_model_peer_decodes_exactly_the_answered_writes(case in lcase()) {
        run_layer_case(case)?;
    }
}
