//! [`Replay`]: a capture turned into a scripted [`MockTransport`], so a socket replaying
//! the session meets the same transport at the same times.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::record::{CaptureError, CaptureEvent, CaptureReader, Record, RecvAnswer, SendAnswer};
use crate::messages::functions::{Address, Handle, Readiness, SocketKind};
use crate::{MockTransport, SendStep, SocketFunctions};

/// How long the feeder waits (in yields) for a handle the socket is about to open,
/// before it falls back to waiting in steps of tokio time.
const OPEN_YIELDS: u32 = 256;

/// Most 1 ms steps of tokio time the feeder waits for a handle to be opened before it
/// drops that handle's inbound events.
const OPEN_STEPS: u32 = 60_000;

/// How long, in steps of tokio time, the feeder waits for the `sendv` calls an inbound
/// event follows (scripted delays are that long): 10 s at most (tokio's timer counts
/// whole milliseconds).
const SEND_STEP: Duration = Duration::from_millis(1);
const SEND_STEPS: u32 = 10_000;

/// One `sendv` of the capture, on one handle.
#[derive(Debug)]
struct SendCall {
    at: Duration,
    took: Duration,
    answer: SendAnswer,
}

/// An inbound event, when it is due, and how many `sendv` calls the replaying socket
/// must have made on its handle first (the captured socket had made the calls that
/// stand for them before this read was answered).
#[derive(Debug)]
struct Due {
    at: Duration,
    handle: Handle,
    /// Captured `sendv` calls of the handle made before the captured read.
    sends_before: usize,
    event: Inbound,
}

/// What the peer does to a handle's read side at some time.
#[derive(Debug)]
enum Inbound {
    Data(Bytes, Option<Address>),
    Eof,
    Error(io::ErrorKind),
}

/// One handle of the capture as the replay sees it.
#[derive(Debug, Default)]
struct Script {
    sends: Vec<SendCall>,
    writable: Vec<Duration>,
}

/// A capture replayed: a fresh [`MockTransport`] scripted so that sockets opened on it
/// in the order the capture opened them meet what the captured sockets met, at the same
/// times since the replay started (under paused tokio time, exactly):
///
/// - each `sendv` gets the captured answer: an accept of the same number of bytes
///   ([`SendStep::Accept`], or [`SendStep::Slow`] when the inner transport took time to
///   answer), a would-block whose `Ready(Writable)` comes when the captured one came (or
///   else when the next call came; [`SendStep::Hold`] when neither did), or the captured
///   failure ([`SendStep::Fail`], after a would-block as long as the captured answer
///   took);
/// - inbound data (with its sender, for datagrams), EOF and read errors arrive at the
///   time the captured socket's `recvfrom` was answered with them, in the same pieces (a truncated
///   datagram arrives one byte longer than the captured read's `max_len`, so it is cut
///   again);
/// - a failed `connect` fails the same way and a slow one takes as long (for every
///   handle connecting to that address: the mock scripts connects by address);
/// - a read's answer also waits until the replaying socket has made the `sendv` calls
///   the captured socket had made before that read, so a write that met a reset fails
///   before the EOF read after it, as it did.
///
/// Not reproduced: listeners and accepted connections (their records are read, their
/// handles are not replayed), errors other than I/O errors (replayed as
/// [`io::ErrorKind::Other`]), a `sendv` answer's order against reads answered after it
/// (it is answered when called), and anything the replaying socket does differently (it
/// gets the captured answers in order whatever it offers, and the mock's default step
/// once they run out). Handles
/// are the mock's (numbered from 1 in the order they are opened); [`handle`](Self::handle)
/// maps a captured handle to its replayed one.
///
/// Start it inside an actix system, just before the sockets that replay the session,
/// as the capture was started just before theirs.
#[derive(Debug)]
pub struct Replay {
    mock: MockTransport,
    handles: BTreeMap<Handle, Handle>,
    kinds: HashMap<Handle, SocketKind>,
}

impl Replay {
    /// Scripts a fresh mock with these records (in the order they were captured) and
    /// starts feeding inbound events at their times.
    pub fn start(records: impl IntoIterator<Item = Record>) -> Replay {
        let mut replay = Replay {
            mock: MockTransport::start(),
            handles: BTreeMap::new(),
            kinds: HashMap::new(),
        };
        let mut scripts: BTreeMap<Handle, Script> = BTreeMap::new();
        let mut inbound: Vec<Due> = Vec::new();
        for record in records {
            replay.take(record, &mut scripts, &mut inbound);
        }
        // The mock's calls that stand for each handle's first n captured `sendv` calls.
        let mut calls_through: HashMap<Handle, Vec<usize>> = HashMap::new();
        for (handle, script) in scripts {
            let (steps, through) = steps(script);
            calls_through.insert(handle, through);
            replay.mock.script_sendv(handle, steps);
        }
        let mut inbound: Vec<(Duration, Handle, usize, Inbound)> = inbound
            .into_iter()
            .map(|due| {
                let calls = match due.sends_before {
                    0 => 0,
                    n => calls_through
                        .get(&due.handle)
                        .and_then(|through| through.get(n - 1))
                        .copied()
                        .unwrap_or(0),
                };
                (due.at, due.handle, calls, due.event)
            })
            .collect();
        inbound.sort_by_key(|(at, ..)| *at);
        // A feeder per handle: one socket that replays differently (and so keeps its
        // feeder waiting for calls it never makes) holds up no other.
        let mut by_handle: BTreeMap<Handle, Vec<_>> = BTreeMap::new();
        for event in inbound {
            by_handle.entry(event.1).or_default().push(event);
        }
        let start = Instant::now();
        for events in by_handle.into_values() {
            actix::spawn(feed(replay.mock.clone(), start, events));
        }
        replay
    }

    /// Reads a whole capture and starts its replay; the first error in the capture is
    /// the answer instead.
    pub fn from_reader(source: impl Read) -> Result<Replay, CaptureError> {
        let records = CaptureReader::new(source).collect::<Result<Vec<_>, _>>()?;
        Ok(Replay::start(records))
    }

    /// The scripted mock, to inspect what the replaying sockets sent.
    pub fn mock(&self) -> &MockTransport {
        &self.mock
    }

    /// The transport table to give the replaying sockets.
    pub fn functions(&self) -> SocketFunctions {
        self.mock.functions()
    }

    /// The mock's handle for a captured handle (the last one opened under that number).
    pub fn handle(&self, captured: Handle) -> Option<Handle> {
        self.handles.get(&captured).copied()
    }

    /// Takes one record into the scripts.
    fn take(
        &mut self,
        record: Record,
        scripts: &mut BTreeMap<Handle, Script>,
        inbound: &mut Vec<Due>,
    ) {
        let at = record.at;
        if let CaptureEvent::Open {
            kind,
            result: Ok(()),
            ..
        } = record.event
        {
            // The mock numbers handles from 1 in the order they are opened.
            let replayed = Handle(self.kinds.len() as u64 + 1);
            self.kinds.insert(replayed, kind);
            self.handles.insert(record.handle, replayed);
            return;
        }
        if let CaptureEvent::Connect { addr, took, result } = record.event {
            if let Err(e) = result {
                self.mock.fail_connect(addr.clone(), kind_of(e.io_kind()));
            }
            if !took.is_zero() {
                self.mock.delay_connect(addr, took);
            }
            return;
        }
        let Some(&handle) = self.handles.get(&record.handle) else {
            return;
        };
        let datagram = self.kinds.get(&handle) == Some(&SocketKind::Datagram);
        match record.event {
            CaptureEvent::SendV { took, answer, .. } => {
                let call = SendCall { at, took, answer };
                scripts.entry(handle).or_default().sends.push(call);
            }
            CaptureEvent::Ready(Readiness::Writable) => {
                scripts.entry(handle).or_default().writable.push(at);
            }
            CaptureEvent::RecvFrom {
                answer,
                max_len,
                took,
            } => {
                // Delivered when the captured call was answered, and not before the
                // replaying socket has made the `sendv` calls the captured one had made
                // by then (so a write's failure and the read after it keep their order).
                if let Some(event) = inbound_of(answer, max_len, datagram) {
                    let sends_before = scripts.get(&handle).map_or(0, |s| s.sends.len());
                    inbound.push(Due {
                        at: at + took,
                        handle,
                        sends_before,
                        event,
                    });
                }
            }
            // A call's answer may be recorded after its handle's close (the socket closed
            // while it was out): the handle keeps its mapping until it is opened again.
            _ => {}
        }
    }
}

fn kind_of(kind: Option<io::ErrorKind>) -> io::ErrorKind {
    kind.unwrap_or(io::ErrorKind::Other)
}

/// What a captured `recvfrom` answer means the peer did; nothing for a would-block.
fn inbound_of(answer: RecvAnswer, max_len: u64, datagram: bool) -> Option<Inbound> {
    match answer {
        RecvAnswer::Data { bytes, from } => Some(Inbound::Data(bytes, from.filter(|_| datagram))),
        RecvAnswer::Truncated { bytes, from } => {
            // One byte past the read's max_len, so the mock cuts it again.
            let want = usize::try_from(max_len)
                .unwrap_or(usize::MAX)
                .saturating_add(1);
            let mut longer = BytesMut::from(&bytes[..]);
            if longer.len() < want {
                longer.resize(want, 0);
            }
            Some(Inbound::Data(longer.freeze(), from))
        }
        RecvAnswer::Eof => Some(Inbound::Eof),
        RecvAnswer::Failed(e) => Some(Inbound::Error(kind_of(e.io_kind()))),
        RecvAnswer::WouldBlock => None,
    }
}

/// The mock's script for one handle's `sendv` calls, and for each captured call how many
/// of the mock's calls stand for it and those before it (a late failure is two).
fn steps(script: Script) -> (Vec<SendStep>, Vec<usize>) {
    let mut writable: VecDeque<Duration> = script.writable.into();
    let mut out = Vec::with_capacity(script.sends.len());
    let mut through = Vec::with_capacity(script.sends.len());
    for (i, call) in script.sends.iter().enumerate() {
        match &call.answer {
            SendAnswer::Accepted(bytes) if call.took.is_zero() => {
                out.push(SendStep::Accept(bytes.len()));
            }
            SendAnswer::Accepted(bytes) => out.push(SendStep::Slow {
                bytes: bytes.len(),
                after: call.took,
            }),
            SendAnswer::Failed(e) => {
                // A late failure: the socket waits as long (one more call in the mock's
                // log), then fails.
                if !call.took.is_zero() {
                    out.push(SendStep::WouldBlock(call.took));
                }
                out.push(SendStep::Fail(kind_of(e.io_kind())));
            }
            SendAnswer::WouldBlock => {
                // The notice that ended this would-block: the first one not before the
                // call (a notice may overtake its answer, never its call). The mock
                // answers at once, so the delay counts from the call.
                while writable.front().is_some_and(|r| *r < call.at) {
                    writable.pop_front();
                }
                let step = match writable.pop_front() {
                    Some(ready) => SendStep::WouldBlock(ready.saturating_sub(call.at)),
                    None => match script.sends.get(i + 1) {
                        Some(next) => SendStep::WouldBlock(next.at.saturating_sub(call.at)),
                        None => SendStep::Hold,
                    },
                };
                out.push(step);
            }
        }
        through.push(out.len());
    }
    (out, through)
}

/// Feeds one handle's inbound events to the mock at their times (since `start`), each
/// after the `sendv` calls it must follow.
async fn feed(
    mock: MockTransport,
    start: Instant,
    events: Vec<(Duration, Handle, usize, Inbound)>,
) {
    let mut gone: Vec<Handle> = Vec::new();
    for (at, handle, calls, event) in events {
        tokio::time::sleep_until(start + at).await;
        if gone.contains(&handle) {
            continue;
        }
        if !wait_open(&mock, handle).await {
            tracing::warn!(%handle, "replay: the handle was never opened; its inbound events are dropped");
            gone.push(handle);
            continue;
        }
        wait_sends(&mock, handle, calls).await;
        match event {
            Inbound::Data(bytes, Some(from)) => mock.push_datagram(handle, bytes, from),
            Inbound::Data(bytes, None) => mock.push_inbound(handle, bytes),
            Inbound::Eof => mock.push_eof(handle),
            Inbound::Error(kind) => mock.push_read_error(handle, kind),
        }
    }
}

/// Waits until the replaying socket has made `calls` `sendv` calls on `handle` (it may be
/// about to, or waiting on a scripted delay), or closed it, or a bounded time passed (it
/// replays something else).
async fn wait_sends(mock: &MockTransport, handle: Handle, calls: usize) {
    let done = || mock.sendv_calls(handle) >= calls || mock.is_closed(handle);
    for _ in 0..OPEN_YIELDS {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    for _ in 0..SEND_STEPS {
        if done() {
            return;
        }
        tokio::time::sleep(SEND_STEP).await;
    }
}

/// Waits until the replaying socket has opened `handle` (it may be about to, at this
/// very instant); `false` if it never does.
async fn wait_open(mock: &MockTransport, handle: Handle) -> bool {
    for _ in 0..OPEN_YIELDS {
        if mock.handles().contains(&handle) {
            return true;
        }
        tokio::task::yield_now().await;
    }
    for _ in 0..OPEN_STEPS {
        if mock.handles().contains(&handle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}
