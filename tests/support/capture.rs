//! Helpers for the capture and replay tests: one scripted session played on any
//! transport table, and summaries of what a socket and a mock saw, to compare a capture
//! with its replay.
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::time::Duration;

use bytes::Bytes;
use sockactor::filters::{CaptureEvent, CaptureReader, Record};
use sockactor::messages::{Close, Handle, SocketEventKind, Write};
use sockactor::{MockTransport, SendStep, Socket, SocketFunctions, WriteError};

use crate::support::{mock_peer, pattern, settle, Recorder};

/// The mock's script for the session's handle: partial accepts and would-blocks.
pub fn script_session(mock: &MockTransport) {
    mock.script_sendv(
        Handle(1),
        [
            SendStep::Accept(3),
            SendStep::WouldBlock(Duration::from_millis(5)),
            SendStep::Accept(4),
            SendStep::Accept(1000),
            SendStep::WouldBlock(Duration::from_millis(2)),
        ],
    );
}

/// The peer's side of the session, on the capturing mock: two pieces of data, then EOF.
pub fn spawn_peer(mock: &MockTransport) {
    let mock = mock.clone();
    actix::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        mock.push_inbound(Handle(1), &b"ping"[..]);
        tokio::time::sleep(Duration::from_millis(2)).await;
        mock.push_inbound(Handle(1), &b"pong!"[..]);
        tokio::time::sleep(Duration::from_millis(8)).await;
        mock.push_eof(Handle(1));
    });
}

/// A write's answer, comparable across runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// len, sendv calls, would-blocks, latency
    Written(usize, u32, u32, Duration),
    /// bytes_sent, len, io kind
    Failed(usize, Option<io::ErrorKind>),
}

pub fn answer_of(result: Result<sockactor::messages::Written, WriteError>) -> Answer {
    match result {
        Ok(w) => Answer::Written(w.len, w.sendv_calls, w.would_blocks, w.latency),
        Err(e) => {
            let kind = match &e {
                WriteError::Transport { source, .. } => source.io_kind(),
                _ => None,
            };
            Answer::Failed(e.bytes_sent(), kind)
        }
    }
}

/// What a socket saw in a session.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    /// Every write's answer, in order.
    pub answers: Vec<Answer>,
    /// Every byte received.
    pub received: Vec<u8>,
    /// Pieces received, EOFs, read failures (kind), closes, in order.
    pub events: Vec<String>,
}

/// The session's writes: a short one, a long one (both at once), and one after the
/// peer's EOF.
pub fn writes() -> [Bytes; 3] {
    [
        Bytes::from_static(b"hello, capture!"),
        Bytes::from(pattern(3000, 5)),
        Bytes::from_static(b"after eof"),
    ]
}

/// Plays the session on `functions`: connect, two writes at once, one more at 25 ms,
/// a graceful close at 40 ms; what the socket saw.
pub async fn session(functions: SocketFunctions) -> Seen {
    let recorder = Recorder::default();
    let socket = Socket::builder()
        .functions(functions)
        .subscriber(recorder.start().recipient())
        .connect(mock_peer())
        .await
        .expect("connect");
    let [first, second, third] = writes();
    let a = actix::spawn(socket.send(Write::new(first)));
    let b = actix::spawn(socket.send(Write::new(second)));
    tokio::time::sleep(Duration::from_millis(25)).await;
    let c = actix::spawn(socket.send(Write::new(third)));
    let mut answers = Vec::new();
    for w in [a, b, c] {
        let result = tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .expect("answered")
            .expect("join")
            .expect("mailbox");
        answers.push(answer_of(result));
    }
    tokio::time::sleep(Duration::from_millis(15)).await;
    socket.do_send(Close::Graceful);
    tokio::time::sleep(Duration::from_millis(1)).await;
    settle().await;
    Seen {
        answers,
        received: recorder.received(),
        events: events(&recorder),
    }
}

/// The recorder's events as comparable strings.
pub fn events(recorder: &Recorder) -> Vec<String> {
    recorder
        .events
        .lock()
        .expect("lock")
        .iter()
        .map(|e| match e {
            SocketEventKind::Received(b) => format!("data {:?}", String::from_utf8_lossy(b)),
            SocketEventKind::Eof => "eof".to_string(),
            SocketEventKind::ReadFailed(e) => format!("read failed {:?}", e.io_kind()),
            SocketEventKind::Closed { cause } => {
                format!("closed {:?}", cause.as_ref().and_then(|c| c.io_kind()))
            }
            other => format!("{other:?}"),
        })
        .collect()
}

/// A mock's `sendv` log as (time since `start`, offered, accepted, would block, failed).
pub fn sendv_log(
    mock: &MockTransport,
    handle: Handle,
    start: tokio::time::Instant,
) -> Vec<(Duration, usize, usize, bool, Option<io::ErrorKind>)> {
    mock.sendv_log(handle)
        .into_iter()
        .map(|r| {
            (
                r.at.saturating_duration_since(start),
                r.offered,
                r.accepted,
                r.would_block,
                r.failed,
            )
        })
        .collect()
}

/// Every record of a capture, which must be whole.
pub fn records(bytes: &[u8]) -> Vec<Record> {
    CaptureReader::new(bytes)
        .collect::<Result<_, _>>()
        .expect("a valid capture")
}

/// The bytes the records say the inner transport accepted on `handle`, in order.
pub fn accepted_bytes(records: &[Record], handle: Handle) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records.iter().filter(|r| r.handle == handle) {
        if let CaptureEvent::SendV {
            answer: sockactor::filters::SendAnswer::Accepted(b),
            ..
        } = &r.event
        {
            out.extend_from_slice(b);
        }
    }
    out
}

/// The bytes the records say `recvfrom` returned on `handle`, in order.
pub fn received_bytes(records: &[Record], handle: Handle) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records.iter().filter(|r| r.handle == handle) {
        if let CaptureEvent::RecvFrom {
            answer: sockactor::filters::RecvAnswer::Data { bytes, .. },
            ..
        } = &r.event
        {
            out.extend_from_slice(bytes);
        }
    }
    out
}
