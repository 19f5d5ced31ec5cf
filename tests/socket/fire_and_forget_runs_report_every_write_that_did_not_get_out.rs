//! Property: small fire-and-forget writes share one queue entry (a run), whether they come
//! from a `Writer` (known silent when queued) or by `do_send` (known silent only after
//! their handler returned). Mixed with answered `send` writes, over a transport that takes
//! bytes in random portions, would block, and may reset:
//!
//! - the recorded stream is a prefix of the writes' bytes in program order;
//! - each fire-and-forget write that did not get out whole is reported to the subscriber
//!   once, in order, with its own length and how many of its bytes went out, and no other
//!   is (a `Writer`'s write refused synchronously is not in the stream and not reported);
//! - each answered write gets `Ok` exactly when all its bytes went out, else an error
//!   with how many did.
//!
//! Under both flush policies: deferred (a `Write` message joins its run before the socket
//! knows who listens, and is settled when the next message is handled) and immediate (the
//! handler that queued it transmits at once).

use std::io;
use std::time::Duration;

use crate::support::{mock_peer, run_paused, settle, Recorder};
use bytes::Bytes;
use proptest::prelude::*;
use sockactor::messages::{Close, GetWriter, Handle, SocketEventKind, Write};
use sockactor::{MockTransport, SendStep, Socket, WriteError};

#[derive(Clone, Copy, Debug)]
enum How {
    DoSend,
    Writer,
    Send,
}

#[derive(Clone, Debug)]
enum Op {
    Write(How, usize),
    Settle,
}

fn op() -> impl Strategy<Value = Op> {
    // Few lengths, so that runs of equal writes are common.
    let len = prop_oneof![
        Just(8usize),
        Just(8),
        Just(8),
        Just(3),
        Just(40),
        1usize..64
    ];
    let how = prop_oneof![4 => Just(How::DoSend), 4 => Just(How::Writer), 1 => Just(How::Send)];
    prop_oneof![
        12 => (how, len).prop_map(|(h, n)| Op::Write(h, n)),
        1 => Just(Op::Settle),
    ]
}

fn step() -> impl Strategy<Value = SendStep> {
    prop_oneof![
        4 => (1usize..300).prop_map(SendStep::Accept),
        2 => Just(SendStep::AcceptAll),
        2 => (0u64..4).prop_map(|ms| SendStep::WouldBlock(Duration::from_millis(ms))),
        1 => Just(SendStep::Fail(io::ErrorKind::ConnectionReset)),
    ]
}

/// `bytes_sent` and `len` of a failure that says both.
fn how_far(error: &WriteError) -> Option<(usize, usize)> {
    match error {
        WriteError::Transport {
            bytes_sent, len, ..
        }
        | WriteError::Closed { bytes_sent, len }
        | WriteError::Aborted { bytes_sent, len } => Some((*bytes_sent, *len)),
        _ => None,
    }
}

fn run_case(ops: Vec<Op>, steps: Vec<SendStep>, immediate: bool) -> Result<(), TestCaseError> {
    run_paused(|| async move {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), steps);
        let recorder = Recorder::default();
        let mut builder = Socket::builder()
            .functions(mock.functions())
            .subscriber(recorder.start().recipient());
        if immediate {
            builder = builder.immediate();
        }
        let socket = builder.connect(mock_peer()).await.expect("connect");
        let writer = socket.send(GetWriter).await.expect("writer");

        // Per write in program order: how, its bytes, and for `send` its answer's task.
        let mut writes = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let (how, len) = match *op {
                Op::Write(how, len) => (how, len),
                Op::Settle => {
                    settle().await;
                    continue;
                }
            };
            let bytes = Bytes::from(crate::support::pattern(len, i as u64));
            let answer = match how {
                How::DoSend => {
                    socket.do_send(Write::new(bytes.clone()));
                    None
                }
                How::Writer => {
                    if writer.write(bytes.clone()).is_err() {
                        // Refused at once (the socket shut): not in the stream.
                        continue;
                    }
                    None
                }
                How::Send => Some(actix::spawn(socket.send(Write::new(bytes.clone())))),
            };
            writes.push((how, bytes, answer));
        }
        socket.do_send(Close::Graceful);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        settle().await;

        let written = mock.written(Handle(1));
        let all: Vec<u8> = writes.iter().flat_map(|(_, b, _)| b.to_vec()).collect();
        prop_assert!(
            all.starts_with(&written),
            "the stream is a prefix of the writes"
        );
        let mut at = 0;
        let mut expected_reports = Vec::new();
        for (how, bytes, answer) in writes {
            let len = bytes.len();
            let sent = written.len().saturating_sub(at).min(len);
            at += len;
            match (how, answer) {
                (How::Send, Some(task)) => {
                    let answer = task.await.expect("join").expect("mailbox");
                    match answer {
                        Ok(done) => {
                            prop_assert_eq!(sent, len, "Ok only when all of it went out");
                            prop_assert_eq!(done.len, len);
                        }
                        Err(e) => {
                            prop_assert!(sent < len, "an error for a write that got out: {:?}", e);
                            prop_assert_eq!(how_far(&e), Some((sent, len)), "{:?}", e);
                        }
                    }
                }
                _ => {
                    if sent < len {
                        expected_reports.push((sent, len));
                    }
                }
            }
        }
        let reports: Vec<Option<(usize, usize)>> = recorder.picked(|e| match e {
            SocketEventKind::WriteFailed { tag: None, error } => Some(how_far(error)),
            _ => None,
        });
        let expected: Vec<Option<(usize, usize)>> =
            expected_reports.into_iter().map(Some).collect();
        prop_assert_eq!(
            reports,
            expected,
            "each fire-and-forget write that did not get out whole, once, in order"
        );
        Ok(())
    })
}

proptest! {
    #![proptest_config(crate::support::proptest_config(192))]
    #[test]
    fn every_fire_and_forget_write_that_did_not_get_out_is_reported_once_in_order(
        ops in prop::collection::vec(op(), 1..160),
        steps in prop::collection::vec(step(), 0..12),
        immediate in any::<bool>(),
    ) {
        run_case(ops, steps, immediate)?;
    }
}
