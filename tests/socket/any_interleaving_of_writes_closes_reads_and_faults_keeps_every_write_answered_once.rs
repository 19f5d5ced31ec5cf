//! Property: on the mock transport with paused time, any interleaving of writes (by
//! `Write` message or `Writer`), inbound data, pauses and resumes of reading, graceful
//! closes and aborts, waits, and a transport that takes bytes in random portions, would
//! block, or resets, over up to three sockets, keeps every invariant:
//!
//! - every write is answered exactly once, by the socket (no mailbox error, no `Lost`);
//! - `Ok` answers come in the order the writes were made, and no write is `Ok` after an
//!   earlier one failed;
//! - each socket's recorded stream is exactly, in order, the bytes each answer says went
//!   out (all of an `Ok` write, `bytes_sent` of a failed one);
//! - the subscriber receives a prefix of what the peer sent, in order, nothing twice;
//! - nothing panics; once every socket has closed and its addresses and writers are
//!   dropped, every handle is closed and the registry is empty.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{mock_peer, run_paused, settle, Recorder};
use actix::prelude::*;
use bytes::Bytes;
use proptest::prelude::*;
use sockactor::messages::{Close, GetWriter, Handle, PauseReading, ResumeReading, Write, Written};
use sockactor::{IoBatch, MockTransport, Registry, SendStep, Socket, WriteError};

#[derive(Clone, Debug)]
enum Op {
    /// A write of this many bytes (possibly none) to socket `.0`.
    Write(usize, usize),
    /// The peer sends this many bytes to socket `.0`.
    Inbound(usize, usize),
    Pause(usize),
    Resume(usize),
    Close(usize, bool),
    /// Let this many milliseconds of paused time pass.
    Wait(u64),
    Settle,
}

#[derive(Clone, Debug)]
enum Step {
    Accept(usize),
    AcceptAll,
    WouldBlock(u64),
    Reset,
}

fn op(sockets: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..sockets, 0usize..600).prop_map(|(s, n)| Op::Write(s, n)),
        2 => (0..sockets, 1usize..300).prop_map(|(s, n)| Op::Inbound(s, n)),
        1 => (0..sockets).prop_map(Op::Pause),
        1 => (0..sockets).prop_map(Op::Resume),
        1 => (0..sockets, any::<bool>()).prop_map(|(s, g)| Op::Close(s, g)),
        2 => (0u64..6).prop_map(Op::Wait),
        2 => Just(Op::Settle),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1usize..500).prop_map(Step::Accept),
        3 => Just(Step::AcceptAll),
        2 => (0u64..5).prop_map(Step::WouldBlock),
        1 => Just(Step::Reset),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    /// Per socket: whether it writes through a `Writer`, and its transport script.
    sockets: Vec<(bool, Vec<Step>)>,
    ops: Vec<Op>,
    /// Per socket, how it is closed at the end (graceful or abort), if still open.
    finish_graceful: Vec<bool>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=3).prop_flat_map(|n| {
        (
            prop::collection::vec((any::<bool>(), prop::collection::vec(step(), 0..30)), n),
            prop::collection::vec(op(n), 1..60),
            prop::collection::vec(any::<bool>(), n),
        )
            .prop_map(|(sockets, ops, finish_graceful)| Case {
                sockets,
                ops,
                finish_graceful,
            })
    })
}

fn script(steps: &[Step]) -> Vec<SendStep> {
    steps
        .iter()
        .map(|s| match s {
            Step::Accept(n) => SendStep::Accept(*n),
            Step::AcceptAll => SendStep::AcceptAll,
            Step::WouldBlock(ms) => SendStep::WouldBlock(Duration::from_millis(*ms)),
            Step::Reset => SendStep::Fail(io::ErrorKind::ConnectionReset),
        })
        .collect()
}

/// Write `w`'s payload: every byte names its write and position.
fn payload(w: usize, len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (w * 37 + i) as u8).collect::<Vec<u8>>())
}

type Answer = Result<Written, WriteError>;

/// One socket under test and what was done to it.
struct Under {
    socket: Addr<Socket>,
    writer: sockactor::Writer,
    via_writer: bool,
    recorder: Recorder,
    handle: Handle,
    /// Payloads in the order written, with the task awaiting each answer.
    writes: Vec<(Bytes, tokio::task::JoinHandle<Option<Answer>>)>,
    inbound: Vec<u8>,
}

impl Under {
    fn write(&mut self, w: usize, len: usize, answered: &Arc<Mutex<Vec<(Handle, usize)>>>) {
        let data = payload(w, len);
        let index = self.writes.len();
        let (handle, answered) = (self.handle, answered.clone());
        let task = if self.via_writer {
            let answer = self.writer.write_answered(IoBatch::from(data.clone()));
            actix::spawn(async move {
                let a = answer.await;
                answered.lock().expect("lock").push((handle, index));
                Some(a)
            })
        } else {
            let request = self.socket.send(Write::new(data.clone()));
            actix::spawn(async move {
                let a = request.await.ok();
                answered.lock().expect("lock").push((handle, index));
                a
            })
        };
        self.writes.push((data, task));
    }
}

async fn start(case: &Case, mock: &MockTransport, registry: &Registry) -> Vec<Under> {
    let mut under = Vec::new();
    for (i, (via_writer, steps)) in case.sockets.iter().enumerate() {
        let handle = Handle(i as u64 + 1);
        mock.script_sendv(handle, script(steps));
        let recorder = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .subscriber(recorder.start().recipient())
            .registry(registry)
            .connect(mock_peer())
            .await
            .expect("connect");
        let writer = socket.send(GetWriter).await.expect("writer");
        under.push(Under {
            socket,
            writer,
            via_writer: *via_writer,
            recorder,
            handle,
            writes: Vec::new(),
            inbound: Vec::new(),
        });
    }
    under
}

/// Checks one socket's answers against its recorded stream.
fn check_writes(
    u: &Under,
    answers: &[Answer],
    answered: &[(Handle, usize)],
    written: &[u8],
) -> Result<(), TestCaseError> {
    let mut expected = Vec::new();
    let mut failed = false;
    for (i, answer) in answers.iter().enumerate() {
        let data = &u.writes[i].0;
        match answer {
            Ok(done) => {
                prop_assert!(!failed, "write {} Ok after an earlier one failed", i);
                prop_assert_eq!(done.len, data.len());
                expected.extend_from_slice(data);
            }
            Err(e) => {
                prop_assert!(
                    !matches!(e, WriteError::Lost { .. }),
                    "write {} lost: {:?}",
                    i,
                    e
                );
                prop_assert!(e.bytes_sent() <= data.len());
                expected.extend_from_slice(&data[..e.bytes_sent()]);
                failed = true;
            }
        }
    }
    prop_assert_eq!(written, &expected[..], "recorded stream");
    let oks: Vec<usize> = answered
        .iter()
        .filter(|(h, i)| *h == u.handle && answers[*i].is_ok())
        .map(|(_, i)| *i)
        .collect();
    prop_assert!(oks.windows(2).all(|w| w[0] < w[1]), "Ok answers in order");
    let received = u.recorder.received();
    prop_assert!(
        u.inbound.starts_with(&received),
        "received a prefix of what the peer sent"
    );
    Ok(())
}

fn run_case(case: Case) -> Result<(), TestCaseError> {
    run_paused(|| async move {
        let mock = MockTransport::start();
        let registry = Registry::new();
        let mut under = start(&case, &mock, &registry).await;
        let answered = Arc::new(Mutex::new(Vec::new()));
        for (w, op) in case.ops.iter().enumerate() {
            match *op {
                Op::Write(s, len) => under[s].write(w, len, &answered),
                Op::Inbound(s, len) => {
                    let data = payload(w + 1000, len);
                    under[s].inbound.extend_from_slice(&data);
                    mock.push_inbound(under[s].handle, data);
                }
                Op::Pause(s) => under[s].socket.do_send(PauseReading),
                Op::Resume(s) => under[s].socket.do_send(ResumeReading),
                Op::Close(s, graceful) => under[s].socket.do_send(if graceful {
                    Close::Graceful
                } else {
                    Close::Abort
                }),
                Op::Wait(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Op::Settle => settle().await,
            }
        }
        for (u, graceful) in under.iter().zip(&case.finish_graceful) {
            u.socket.do_send(if *graceful {
                Close::Graceful
            } else {
                Close::Abort
            });
        }
        let mut all = Vec::new();
        for u in &mut under {
            let mut answers = Vec::new();
            for (_, task) in u.writes.iter_mut() {
                let answer = tokio::time::timeout(Duration::from_secs(3600), task)
                    .await
                    .map_err(|_| TestCaseError::fail("a write was never answered"))?
                    .expect("join");
                match answer {
                    Some(a) => answers.push(a),
                    None => return Err(TestCaseError::fail("a mailbox error, not an answer")),
                }
            }
            all.push(answers);
        }
        settle().await;
        let answered = answered.lock().expect("lock").clone();
        for (u, answers) in under.iter().zip(&all) {
            check_writes(u, answers, &answered, &mock.written(u.handle))?;
        }
        let handles: Vec<Handle> = under.iter().map(|u| u.handle).collect();
        drop(under);
        for _ in 0..8 {
            settle().await;
        }
        for h in handles {
            prop_assert!(mock.is_closed(h), "handle {} closed", h);
        }
        prop_assert_eq!(registry.len(), 0, "registry empty after every socket ended");
        Ok(())
    })
}

proptest! {
    #![proptest_config(crate::support::proptest_config(256))]
    #[test]
    fn every_write_is_answered_once_and_every_socket_ends_cleanly(case in case()) {
        run_case(case)?;
    }
}
