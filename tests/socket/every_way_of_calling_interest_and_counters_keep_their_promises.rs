//! From the seventh round of the independent review: every way of calling a socket
//! (`send`, `do_send`, `Writer`s and `FramedWriter`s from other threads and runtimes,
//! handles dropped mid-flight, writes racing a close), interest notifications under
//! every sequence, and the counters (`SocketStats`, `Written`, the registry's,
//! `DatagramStats`) against what happened.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{channel_subscriber, drain, mock_peer, run_paused, settle};
use actix::prelude::*;
use bytes::Bytes;
use sockactor::messages::{
    AssignUserData, Close, GetStats, GetWriter, Handle, Interest, InterestRefused, PauseReading,
    ResumeReading, SocketEventKind, SocketInterest, Write, Written,
};
use sockactor::{MockTransport, SendStep, Socket, WriteError};

// ---------------------------------------------------------------- helpers

/// An interest notification and its user data (if a `String`).
type Seen = (Interest, Option<String>);

/// Records every interest notification, with the user data if it is a `String`.
#[derive(Clone, Default)]
struct Watcher {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Actor for Watcher {
    type Context = Context<Self>;
}

impl Handler<SocketInterest> for Watcher {
    type Result = Result<(), InterestRefused>;
    fn handle(&mut self, msg: SocketInterest, _: &mut Context<Self>) -> Self::Result {
        let data = msg
            .user_data
            .and_then(|d| d.downcast_ref::<String>().cloned());
        self.seen.lock().unwrap().push((msg.interest, data));
        Ok(())
    }
}

impl Watcher {
    fn interests(&self) -> Vec<Interest> {
        self.seen.lock().unwrap().iter().map(|(i, _)| *i).collect()
    }
    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

fn no_consecutive_duplicates(seq: &[Interest]) -> bool {
    seq.windows(2).all(|w| w[0] != w[1])
}

async fn stats(socket: &Addr<Socket>) -> sockactor::messages::SocketStats {
    socket.send(GetStats).await.expect("mailbox")
}

fn write_failures(events: &[SocketEventKind]) -> Vec<(Option<u64>, WriteError)> {
    events
        .iter()
        .filter_map(|e| match e {
            SocketEventKind::WriteFailed { tag, error } => Some((*tag, error.clone())),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------- 1. calling a socket

/// An abort while a slow `sendv` is out: the writes it carried are answered with what it
/// took once it answers; the counters say the same.
#[test]
fn an_abort_during_a_slow_sendv_answers_with_what_it_took_and_stats_agree() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [SendStep::Slow {
                bytes: 4,
                after: Duration::from_secs(1),
            }],
        );
        let socket = crate::support::mock_socket(&mock).await;
        let a = tokio::spawn(socket.send(Write::new(Bytes::from(vec![b'a'; 10]))));
        let b = tokio::spawn(socket.send(Write::new(Bytes::from(vec![b'b'; 10]))));
        settle().await;
        assert_eq!(mock.sendv_calls(Handle(1)), 1, "the slow sendv is out");
        socket.do_send(Close::Abort);
        let late = socket
            .send(Write::new(&b"late"[..]))
            .await
            .expect("mailbox");
        assert!(
            matches!(
                late,
                Err(WriteError::Closed {
                    bytes_sent: 0,
                    len: 4
                })
            ),
            "{late:?}"
        );
        let a = a.await.unwrap().expect("mailbox");
        let b = b.await.unwrap().expect("mailbox");
        assert!(
            matches!(
                a,
                Err(WriteError::Aborted {
                    bytes_sent: 4,
                    len: 10
                })
            ),
            "{a:?}"
        );
        assert!(
            matches!(
                b,
                Err(WriteError::Aborted {
                    bytes_sent: 0,
                    len: 10
                })
            ),
            "{b:?}"
        );
        assert_eq!(mock.written(Handle(1)), b"aaaa");
        let s = stats(&socket).await;
        assert_eq!(s.bytes_sent, 4, "{s:?}");
        assert_eq!(s.sendv_calls, 1, "{s:?}");
        assert_eq!(s.writes_completed, 0, "{s:?}");
        assert_eq!(s.writes_failed, 3, "{s:?}");
        assert_eq!(s.queued_bytes, 0, "{s:?}");
        assert_eq!(s.queued_writes, 0, "{s:?}");
    });
}

/// A run of fire-and-forget small writes, a partial accept and then a reset: each write
/// that did not wholly get out is reported once, in order, with how far it got; the
/// counters agree with the byte stream.
#[test]
fn a_silent_run_cut_by_a_reset_reports_each_unfinished_write_and_stats_agree() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(35),
                SendStep::Fail(std::io::ErrorKind::ConnectionReset),
            ],
        );
        let (events, mut rx) = channel_subscriber();
        let socket = crate::support::subscribed_mock_socket(&mock, events).await;
        for i in 0..10u8 {
            socket.do_send(Write::new(Bytes::from(vec![b'0' + i; 10])));
        }
        settle().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        settle().await;
        let events = drain(&mut rx);
        let failures = write_failures(&events);
        let sent: Vec<usize> = failures.iter().map(|(_, e)| e.bytes_sent()).collect();
        assert_eq!(sent, vec![5, 0, 0, 0, 0, 0, 0], "{failures:?}");
        assert!(failures
            .iter()
            .all(|(_, e)| matches!(e, WriteError::Transport { len: 10, .. })));
        assert_eq!(mock.written(Handle(1)).len(), 35);
        let s = stats(&socket).await;
        assert_eq!(s.writes, 10, "{s:?}");
        assert_eq!(s.writes_completed, 3, "{s:?}");
        assert_eq!(s.writes_failed, 7, "{s:?}");
        assert_eq!(s.bytes_sent, 35, "{s:?}");
        assert_eq!(s.sendv_calls as usize, mock.sendv_calls(Handle(1)), "{s:?}");
    });
}

/// The per-write telemetry of two writes that shared a partial `sendv` and a would-block.
#[test]
fn written_telemetry_of_writes_sharing_partial_sendvs() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(3),
                SendStep::WouldBlock(Duration::from_millis(5)),
            ],
        );
        let socket = crate::support::mock_socket(&mock).await;
        let a = tokio::spawn(socket.send(Write::new(Bytes::from(vec![b'a'; 600]))));
        let b = tokio::spawn(socket.send(Write::new(Bytes::from(vec![b'b'; 600]))));
        let a: Written = a.await.unwrap().unwrap().unwrap();
        let b: Written = b.await.unwrap().unwrap().unwrap();
        let log = mock.sendv_log(Handle(1));
        assert_eq!(log.len(), 3, "{log:?}");
        assert_eq!(a.len, 600);
        assert_eq!(b.len, 600);
        assert_eq!(a.would_blocks, 1, "{a:?}");
        assert_eq!(b.would_blocks, 1, "{b:?}");
        assert_eq!(a.max_writes_per_sendv, 2, "{a:?}");
        assert_eq!(b.max_writes_per_sendv, 2, "{b:?}");
        assert_eq!(a.latency, Duration::from_millis(5), "{a:?}");
        assert_eq!(b.latency, Duration::from_millis(5), "{b:?}");
        let s = stats(&socket).await;
        assert_eq!(s.would_blocks, 1);
        assert_eq!(s.sendv_calls, 3);
        assert_eq!(s.bytes_sent, 1200);
        assert_eq!(s.writes_completed, 2);
    });
}

/// The counters agree with the transport's own log under partial accepts, would-blocks,
/// holds and a final failure, for writes by message and by writer.
#[test]
fn stats_agree_with_the_transport_log_under_every_kind_of_answer() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(7),
                SendStep::WouldBlock(Duration::from_millis(3)),
                SendStep::Accept(1000),
                SendStep::Hold,
                SendStep::Accept(2),
                SendStep::Slow {
                    bytes: 100,
                    after: Duration::from_millis(7),
                },
                SendStep::WouldBlock(Duration::from_millis(1)),
            ],
        );
        let (events, mut rx) = channel_subscriber();
        let socket = crate::support::subscribed_mock_socket(&mock, events).await;
        let writer = socket.send(GetWriter).await.unwrap();
        let mut answered = Vec::new();
        for round in 0..6u8 {
            let mut futs = Vec::new();
            for i in 0..8u8 {
                let len = 1 + (round as usize * 131 + i as usize * 37) % 900;
                let data = Bytes::from(vec![round * 16 + i; len]);
                match i % 3 {
                    0 => socket.do_send(Write::new(data)),
                    1 => futs.push(tokio::spawn(socket.send(Write::new(data)))),
                    _ => writer.write(data).unwrap(),
                }
            }
            for _ in 0..10 {
                settle().await;
                mock.release(Handle(1));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            settle().await;
            for f in futs {
                assert!(f.is_finished(), "round {round}: a write is unanswered");
                answered.push(f.await.unwrap().unwrap());
            }
        }
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(5),
                SendStep::Fail(std::io::ErrorKind::BrokenPipe),
            ],
        );
        let mut futs = Vec::new();
        for i in 0..4u8 {
            futs.push(tokio::spawn(
                socket.send(Write::new(Bytes::from(vec![i; 50]))),
            ));
        }
        for f in futs {
            answered.push(f.await.unwrap().unwrap());
        }
        settle().await;
        let failures = write_failures(&drain(&mut rx));
        let s = stats(&socket).await;
        let log = mock.sendv_log(Handle(1));
        let written = mock.written(Handle(1)).len() as u64;
        assert_eq!(s.sendv_calls, log.len() as u64, "{s:?} {log:?}");
        assert_eq!(
            s.would_blocks,
            log.iter().filter(|r| r.would_block).count() as u64,
            "{s:?}"
        );
        assert_eq!(s.bytes_sent, written, "{s:?}");
        let total = 6 * 8 + 4;
        assert_eq!(s.writes, total, "{s:?}");
        assert_eq!(s.writes_completed + s.writes_failed, total, "{s:?}");
        let ok = answered.iter().filter(|r| r.is_ok()).count() as u64;
        let failed_answers =
            answered.iter().filter(|r| r.is_err()).count() as u64 + failures.len() as u64;
        assert_eq!(s.writes_failed, failed_answers, "{s:?} {failures:?}");
        assert!(ok <= s.writes_completed);
        let sent_by_failures: usize = answered
            .iter()
            .filter_map(|r| r.as_ref().err())
            .chain(failures.iter().map(|(_, e)| e))
            .map(|e| e.bytes_sent())
            .sum();
        assert_eq!(sent_by_failures, 5, "the failed write took 5 bytes");
    });
}

// ---------------------------------------------------------------- 2. interest

/// Reading paused while writes block, resumed, drained, the peer's EOF, a user-data
/// change and a close: each change reported once, with the data assigned at the time.
#[test]
fn interest_under_pause_block_resume_drain_eof_and_close() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let watcher = Watcher::default();
        let (events, _rx) = channel_subscriber();
        let socket = Socket::builder()
            .functions(mock.functions())
            .subscriber(events)
            .interest_subscriber(watcher.clone().start().recipient())
            .user_data(Arc::new(String::from("a")))
            .connect(mock_peer())
            .await
            .unwrap();
        settle().await;
        assert_eq!(watcher.interests(), [Interest::In]);
        socket.do_send(PauseReading);
        settle().await;
        assert_eq!(watcher.interests(), [Interest::In, Interest::None]);
        socket.do_send(Write::new(&b"blocked"[..]));
        settle().await;
        assert_eq!(
            watcher.interests(),
            [Interest::In, Interest::None, Interest::Out]
        );
        socket.do_send(AssignUserData(Some(Arc::new(String::from("b")))));
        socket.do_send(ResumeReading);
        settle().await;
        assert_eq!(
            watcher.interests(),
            [Interest::In, Interest::None, Interest::Out, Interest::InOut]
        );
        // Data arrives while paused again: nothing read, interest says so.
        socket.do_send(PauseReading);
        settle().await;
        mock.push_inbound(Handle(1), &b"hello"[..]);
        settle().await;
        mock.release(Handle(1));
        settle().await;
        socket.do_send(ResumeReading);
        settle().await;
        mock.push_eof(Handle(1));
        settle().await;
        socket.do_send(Close::Graceful);
        settle().await;
        let seen = watcher.seen.lock().unwrap().clone();
        let interests: Vec<Interest> = seen.iter().map(|(i, _)| *i).collect();
        assert!(no_consecutive_duplicates(&interests), "{interests:?}");
        assert_eq!(
            interests,
            [
                Interest::In,
                Interest::None,
                Interest::Out,
                Interest::InOut,
                Interest::Out,
                Interest::None,
                Interest::In,
                Interest::None,
                Interest::Remove
            ],
            "{seen:?}"
        );
        assert!(
            seen[3..].iter().all(|(_, d)| d.as_deref() == Some("b")),
            "{seen:?}"
        );
    });
}

/// A write that fails on the transport: REMOVE, and nothing after it.
#[test]
fn a_transport_failure_on_write_reports_remove_once_and_last() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::WouldBlock(Duration::from_millis(1)),
                SendStep::Fail(std::io::ErrorKind::ConnectionReset),
            ],
        );
        let watcher = Watcher::default();
        let (events, _rx) = channel_subscriber();
        let socket = Socket::builder()
            .functions(mock.functions())
            .subscriber(events)
            .interest_subscriber(watcher.clone().start().recipient())
            .connect(mock_peer())
            .await
            .unwrap();
        let r = socket.send(Write::new(&b"x"[..])).await.unwrap();
        assert!(matches!(r, Err(WriteError::Transport { .. })), "{r:?}");
        socket.do_send(PauseReading);
        socket.do_send(ResumeReading);
        socket.do_send(Write::new(&b"y"[..]));
        settle().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        assert_eq!(
            watcher.interests(),
            [Interest::In, Interest::InOut, Interest::Remove]
        );
    });
}

/// A read error: REMOVE, with writes blocked (OUT) before it.
#[test]
fn a_read_error_with_writes_blocked_reports_remove_last() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let watcher = Watcher::default();
        let (events, _rx) = channel_subscriber();
        let socket = Socket::builder()
            .functions(mock.functions())
            .subscriber(events)
            .interest_subscriber(watcher.clone().start().recipient())
            .connect(mock_peer())
            .await
            .unwrap();
        let w = tokio::spawn(socket.send(Write::new(&b"blocked"[..])));
        settle().await;
        mock.push_read_error(Handle(1), std::io::ErrorKind::ConnectionReset);
        let r = w.await.unwrap().unwrap();
        assert!(
            matches!(
                r,
                Err(WriteError::Transport {
                    bytes_sent: 0,
                    len: 7,
                    ..
                })
            ),
            "{r:?}"
        );
        settle().await;
        assert_eq!(
            watcher.interests(),
            [Interest::In, Interest::InOut, Interest::Remove]
        );
    });
}

/// A socket with an interest subscriber and no event subscriber (so not reading): NONE,
/// OUT while the transport would block, NONE once drained, REMOVE at the close.
#[test]
fn interest_of_a_socket_that_does_not_read() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::from_millis(5))]);
        let watcher = Watcher::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .interest_subscriber(watcher.clone().start().recipient())
            .connect(mock_peer())
            .await
            .unwrap();
        socket.send(Write::new(&b"abc"[..])).await.unwrap().unwrap();
        settle().await;
        socket.send(Close::Graceful).await.unwrap();
        settle().await;
        assert_eq!(
            watcher.interests(),
            [
                Interest::None,
                Interest::Out,
                Interest::None,
                Interest::Remove
            ]
        );
    });
}

/// A graceful close of a socket whose writes are blocked, with a shutdown of the sending
/// half and a linger: OUT stays while draining, IN while lingering, REMOVE at the EOF.
#[test]
fn interest_through_a_lingering_graceful_close() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let watcher = Watcher::default();
        let (events, mut rx) = channel_subscriber();
        let socket = Socket::builder()
            .functions(mock.functions_with_shutdown())
            .subscriber(events)
            .config(crate::support::lingering(Duration::from_secs(5)))
            .interest_subscriber(watcher.clone().start().recipient())
            .connect(mock_peer())
            .await
            .unwrap();
        socket.do_send(Write::new(&b"abc"[..]));
        socket.do_send(Close::Graceful);
        settle().await;
        assert_eq!(watcher.interests(), [Interest::In, Interest::InOut]);
        mock.release(Handle(1));
        settle().await;
        assert!(mock.is_shut_down(Handle(1)));
        assert_eq!(
            watcher.interests(),
            [Interest::In, Interest::InOut, Interest::In]
        );
        mock.push_eof(Handle(1));
        settle().await;
        let interests = watcher.interests();
        assert!(no_consecutive_duplicates(&interests), "{interests:?}");
        assert_eq!(interests.last(), Some(&Interest::Remove), "{interests:?}");
        assert!(drain(&mut rx)
            .iter()
            .any(|e| matches!(e, SocketEventKind::Closed { cause: None })));
    });
}

// ---------------------------------------------------------------- 3. threads and arbiters

/// A record: producer id, sequence number, then filler up to `len`.
fn record(producer: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut v = vec![producer, (seq >> 16) as u8, (seq >> 8) as u8, seq as u8];
    v.resize(len.max(4), b'a' + producer);
    v
}

fn record_len(producer: u8, seq: u32) -> usize {
    4 + ((producer as usize * 977 + seq as usize * 131) % 700)
}

/// Whole records (producer, sequence) and a cut last one (producer, sequence, bytes).
type Parsed = (Vec<(u8, u32)>, Option<(u8, u32, usize)>);

/// Parses a stream of records back into (producer, seq) in order; a truncated last one
/// is reported as such.
fn parse(mut stream: &[u8]) -> Parsed {
    let mut out = Vec::new();
    while !stream.is_empty() {
        if stream.len() < 4 {
            return (out, Some((stream[0], u32::MAX, stream.len())));
        }
        let p = stream[0];
        let seq = (stream[1] as u32) << 16 | (stream[2] as u32) << 8 | stream[3] as u32;
        let len = record_len(p, seq);
        if stream.len() < len {
            return (out, Some((p, seq, stream.len())));
        }
        assert_eq!(
            &stream[..len],
            &record(p, seq, len)[..],
            "record {p}/{seq} intact"
        );
        out.push((p, seq));
        stream = &stream[len..];
    }
    (out, None)
}

/// Writers on four OS threads (each its own tokio runtime) and the socket's own thread
/// writing with `do_send`, `send`, `write`, `write_answered` and `write_each`, with
/// partial accepts throughout: every write whole and in its producer's order, every
/// awaited one answered `Ok`, counters equal to what went out.
#[actix::test]
async fn writers_on_other_threads_keep_their_order_and_every_write_is_answered() {
    let mock = MockTransport::start();
    mock.set_default_step(SendStep::Accept(1013));
    let (events, mut rx) = channel_subscriber();
    let socket = crate::support::subscribed_mock_socket(&mock, events).await;
    let writer = socket.send(GetWriter).await.unwrap();
    const PER: u32 = 400;
    let mut threads = Vec::new();
    for p in 1..=4u8 {
        let w = writer.clone();
        threads.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut answers = Vec::new();
                let mut seq = 0;
                while seq < PER {
                    let data = record(p, seq, record_len(p, seq));
                    match seq % 4 {
                        0 => {
                            w.write_when_ready(data).await.unwrap();
                            seq += 1;
                        }
                        1 => {
                            answers.push(w.write_answered(data));
                            seq += 1;
                        }
                        2 => {
                            w.writable().await.unwrap();
                            let next = record(p, seq + 1, record_len(p, seq + 1));
                            match w.write_each(vec![data.into(), next.into()]) {
                                Ok(()) => seq += 2,
                                Err(refused) => panic!("refused: {refused}"),
                            }
                        }
                        _ => {
                            // a clone made and dropped mid-flight
                            let c = w.clone();
                            c.write(data).unwrap();
                            drop(c);
                            seq += 1;
                        }
                    }
                    if seq % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                let mut ok = 0;
                for a in answers {
                    a.await.unwrap();
                    ok += 1;
                }
                ok
            })
        }));
    }
    // The socket's own thread: addr writes, producer 0.
    let mut sends = Vec::new();
    for seq in 0..PER {
        let data = record(0, seq, record_len(0, seq));
        if seq % 2 == 0 {
            socket.do_send(Write::new(data).wait_when_full());
        } else {
            sends.push(socket.send(Write::new(data).wait_when_full()));
        }
        if seq % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for s in sends {
        s.await.unwrap().unwrap();
    }
    let mut answered = 0;
    for t in threads {
        // Join without blocking the socket's thread.
        let t = tokio::task::spawn_blocking(move || t.join().unwrap());
        answered += t.await.unwrap();
    }
    assert!(answered > 0);
    // Everything out: a graceful close after it all.
    socket.send(Close::Graceful).await.unwrap();
    for _ in 0..200 {
        if mock.is_closed(Handle(1)) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(mock.is_closed(Handle(1)));
    let stream = mock.written(Handle(1));
    let (records, tail) = parse(&stream);
    assert_eq!(tail, None);
    for p in 0..=4u8 {
        let seqs: Vec<u32> = records.iter().filter(|r| r.0 == p).map(|r| r.1).collect();
        assert_eq!(
            seqs,
            (0..PER).collect::<Vec<_>>(),
            "producer {p} in order, whole"
        );
    }
    let failures = write_failures(&drain(&mut rx));
    assert!(failures.is_empty(), "{failures:?}");
    let s = stats(&socket).await;
    assert_eq!(s.bytes_sent, stream.len() as u64, "{s:?}");
    assert_eq!(s.writes, 5 * PER as u64, "{s:?}");
    assert_eq!(s.writes_completed, 5 * PER as u64, "{s:?}");
    assert_eq!(s.writes_failed, 0, "{s:?}");
}

/// Writers on other threads racing an abort: every write answered once; the stream is
/// exactly the writes that say they went out, in each producer's order, the one cut short
/// saying how far it got.
#[actix::test]
async fn writes_from_other_threads_racing_an_abort_are_answered_truthfully() {
    let mock = MockTransport::start();
    mock.set_default_step(SendStep::Accept(357));
    let (events, mut rx) = channel_subscriber();
    let socket = crate::support::subscribed_mock_socket(&mock, events).await;
    let writer = socket.send(GetWriter).await.unwrap();
    const PER: u32 = 3000;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for p in 1..=3u8 {
        let w = writer.clone();
        threads.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut futs = Vec::new();
                for seq in 0..PER {
                    let data = record(p, seq, record_len(p, seq));
                    let f = w.write_answered(data);
                    if let Some(e) = f.refused() {
                        if matches!(e, WriteError::QueueFull { .. }) {
                            // wait and retry once
                            let data = record(p, seq, record_len(p, seq));
                            if w.writable().await.is_err() {
                                futs.push((seq, w.write_answered(data)));
                                break;
                            }
                            futs.push((seq, w.write_answered(data)));
                            continue;
                        }
                    }
                    futs.push((seq, f));
                    if seq % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                let mut out = Vec::new();
                for (seq, f) in futs {
                    out.push((seq, f.await));
                }
                out
            })
        }));
    }
    let _ = &stop;
    // Let some go out, then abort.
    for _ in 0..30 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    socket.do_send(Close::Abort);
    let mut results = Vec::new();
    for (i, t) in threads.into_iter().enumerate() {
        let t = tokio::task::spawn_blocking(move || t.join().unwrap());
        results.push(((i + 1) as u8, t.await.unwrap()));
    }
    settle().await;
    let stream = mock.written(Handle(1));
    let (records, tail) = parse(&stream);
    let s = stats(&socket).await;
    assert_eq!(s.bytes_sent, stream.len() as u64, "{s:?}");
    let mut total_ok = 0u64;
    let mut total_err = 0u64;
    for (p, res) in &results {
        let in_stream: Vec<u32> = records.iter().filter(|r| r.0 == *p).map(|r| r.1).collect();
        let mut ok_seqs = Vec::new();
        for (seq, r) in res {
            match r {
                Ok(w) => {
                    assert_eq!(w.len, record_len(*p, *seq));
                    ok_seqs.push(*seq);
                    total_ok += 1;
                }
                Err(e) => {
                    total_err += 1;
                    let sent = e.bytes_sent();
                    if sent > 0 {
                        let t = tail.expect("a write cut short is the stream's tail");
                        assert_eq!((t.0, t.1, t.2), (*p, *seq, sent), "{e:?}");
                    }
                }
            }
        }
        assert_eq!(
            in_stream, ok_seqs,
            "producer {p}: the stream holds exactly the Ok writes"
        );
        let expect: Vec<u32> = (0..ok_seqs.len() as u32).collect();
        assert_eq!(ok_seqs, expect, "producer {p}: a prefix");
    }
    let failures = write_failures(&drain(&mut rx));
    assert!(failures.is_empty(), "every write was awaited: {failures:?}");
    assert_eq!(s.writes_completed, total_ok, "{s:?}");
    assert_eq!(s.writes_failed, total_err, "{s:?}");
}

// ---------------------------------------------------------------- 4. datagram statistics

/// Datagram counters against what happened: whole sends, a failure, a partial take,
/// would-blocks, writer refusals, a datagram with no destination, and the close.
#[test]
fn datagram_stats_agree_with_what_happened() {
    use sockactor::messages::{
        DatagramEvent, DatagramEventKind, GetDatagramStats, GetDatagramWriter, SendDatagram,
    };
    use sockactor::{DatagramConfig, DatagramError, DatagramSocket};
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::AcceptAll,
                SendStep::Fail(std::io::ErrorKind::ConnectionRefused),
                SendStep::Accept(2),
                SendStep::WouldBlock(Duration::from_millis(3)),
                SendStep::AcceptAll,
                SendStep::Hold,
            ],
        );
        let (events, mut rx) = crate::support::channel::<DatagramEvent>();
        let (udp, _local) = DatagramSocket::builder()
            .functions(mock.functions())
            .subscriber(events)
            .config(DatagramConfig {
                max_queued: 4,
                ..DatagramConfig::default()
            })
            .bind(crate::support::local())
            .await
            .unwrap();
        let to: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut answers = Vec::new();
        for i in 0..4u8 {
            answers.push(
                udp.send(SendDatagram::new(Bytes::from(vec![i; 10])).to(to))
                    .await
                    .unwrap(),
            );
        }
        // 0 ok, 1 refused by the transport, 2 partial, 3 would-block then ok.
        assert!(answers[0].is_ok(), "{answers:?}");
        assert!(
            matches!(answers[1], Err(DatagramError::Transport(_))),
            "{answers:?}"
        );
        assert!(
            matches!(answers[2], Err(DatagramError::Partial { sent: 2, len: 10 })),
            "{answers:?}"
        );
        assert!(answers[3].is_ok(), "{answers:?}");
        let s = udp.send(GetDatagramStats).await.unwrap();
        assert_eq!((s.sent, s.send_failed, s.bytes_sent), (2, 2, 20), "{s:?}");
        assert_eq!(s.sendv_calls as usize, mock.sendv_calls(Handle(1)), "{s:?}");
        assert_eq!(s.would_blocks, 1, "{s:?}");

        // The next one holds; a writer fills the queue and is refused past it.
        let held = tokio::spawn(udp.send(SendDatagram::new(&b"held"[..]).to(to)));
        settle().await;
        let writer = udp.send(GetDatagramWriter).await.unwrap();
        // No destination on a socket that is not connected.
        writer.send(&b"nowhere"[..]).unwrap();
        settle().await;
        let mut admitted = 0;
        let mut refused = 0;
        for i in 0..10u8 {
            match writer.send_to(Bytes::from(vec![i; 3]), Some(to.into())) {
                Ok(()) => admitted += 1,
                Err(DatagramError::QueueFull { .. }) => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        let direct = udp.send(SendDatagram::new(&b"nowhere"[..])).await.unwrap();
        assert!(
            matches!(direct, Err(DatagramError::NoDestination { .. })),
            "{direct:?}"
        );
        settle().await;
        let s = udp.send(GetDatagramStats).await.unwrap();
        assert_eq!(s.sent, 2, "{s:?}");
        assert_eq!(
            s.send_failed,
            2 + refused + 2,
            "{s:?}: 2 earlier, {refused} refused by the writer, 2 without a destination"
        );
        udp.do_send(sockactor::messages::Close::Abort);
        let held = held.await.unwrap().unwrap();
        assert!(held.is_err(), "{held:?}");
        settle().await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        settle().await;
        let heard = drain(&mut rx);
        let failed_reports = heard
            .iter()
            .filter(|e| matches!(e.kind, DatagramEventKind::SendFailed { .. }))
            .count() as u64;
        let s = udp.send(GetDatagramStats).await.unwrap();
        let written: u64 = mock
            .datagrams(Handle(1))
            .iter()
            .map(|d| d.bytes.len() as u64)
            .sum();
        assert_eq!(
            s.sent + s.send_failed,
            4 + 1 + admitted + 1 + refused + 1,
            "{s:?}"
        );
        assert_eq!(
            s.send_failed,
            2 + refused + 1 + 1 + failed_reports,
            "{s:?}: answered failures (2 earlier, held, direct), writer refusals, and reported ones ({failed_reports})"
        );
        assert!(s.bytes_sent <= written, "{s:?} {written}");
        assert_eq!(s.queued, 0, "{s:?}");
    });
}

// ---------------------------------------------------------------- 5. registry counters

/// A registered socket's published counters, once it has nothing more to do, are the
/// ones `GetStats` answers: after writes, refusals by message and by writer, a cancel.
#[test]
fn registry_counters_match_get_stats_once_settled() {
    use sockactor::messages::CancelWrite;
    use sockactor::Registry;
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let registry = Registry::new();
        let (events, _rx) = channel_subscriber();
        let socket = Socket::builder()
            .functions(mock.functions())
            .subscriber(events)
            .registry(&registry)
            .config(crate::support::watermarks(100, 50))
            .connect(mock_peer())
            .await
            .unwrap();
        let id = socket.send(sockactor::messages::GetInfo).await.unwrap().id;
        let handle = registry.get(id).expect("registered");
        let mismatches = Arc::new(Mutex::new(Vec::<String>::new()));
        let check = |what: &'static str| {
            let socket = socket.clone();
            let handle = handle.clone();
            let mismatches = mismatches.clone();
            async move {
                settle().await;
                // Long idle: nothing more will be published.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let asked = stats(&socket).await;
                settle().await;
                let published = handle.stats();
                if published != asked {
                    mismatches.lock().unwrap().push(format!(
                        "after {what}: published writes_failed {} writes {} queued {}, GetStats writes_failed {} writes {} queued {}",
                        published.writes_failed, published.writes, published.queued_bytes,
                        asked.writes_failed, asked.writes, asked.queued_bytes
                    ));
                }
            }
        };
        socket.do_send(Write::new(Bytes::from(vec![1u8; 80])));
        check("a write").await;
        socket.do_send(Write::new(Bytes::from(vec![2u8; 80])).tag(9));
        check("a second write past the high watermark").await;
        // Full: a write by message is refused.
        let r = socket
            .send(Write::new(Bytes::from(vec![3u8; 10])))
            .await
            .unwrap();
        assert!(matches!(r, Err(WriteError::QueueFull { .. })), "{r:?}");
        check("a refusal answered to a send").await;
        socket.do_send(Write::new(Bytes::from(vec![3u8; 10])));
        check("a refusal of a do_send").await;
        let writer = socket.send(GetWriter).await.unwrap();
        assert!(writer.write(&b"w"[..]).is_err());
        check("a refusal by a writer").await;
        let back = socket.send(CancelWrite { tag: 9 }).await.unwrap();
        assert!(back.is_some());
        check("a cancel").await;
        mock.release(Handle(1));
        check("the drain").await;
        mock.push_inbound(Handle(1), &b"inbound"[..]);
        check("a delivery acknowledged at once").await;
        let mismatches = mismatches.lock().unwrap().clone();
        assert!(mismatches.is_empty(), "{mismatches:#?}");
    });
}

// ---------------------------------------------------------------- 6. in place, real loopback

/// On the system transport (in place): a peer that does not read makes the socket wait
/// to write (OUT); once it reads everything the OUT goes; the counters match what the
/// peer read and what the writes' telemetry says.
#[actix::test]
async fn in_place_interest_and_stats_follow_a_peer_that_reads_late() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let watcher = Watcher::default();
    let (events, mut rx) = channel_subscriber();
    let socket = Socket::builder()
        .subscriber(events)
        .interest_subscriber(watcher.clone().start().recipient())
        .config(sockactor::SocketConfig {
            buffers: sockactor::SocketBuffers {
                send: Some(8192),
                recv: None,
            },
            ..sockactor::SocketConfig::default()
        })
        .connect(addr)
        .await
        .unwrap();
    let (mut peer, _) = listener.accept().await.unwrap();
    let info = socket.send(sockactor::messages::GetInfo).await.unwrap();
    assert!(info.in_place);
    const N: usize = 8;
    const LEN: usize = 100_000;
    let mut answers = Vec::new();
    for i in 0..N {
        answers.push(tokio::spawn(
            socket.send(Write::new(Bytes::from(vec![i as u8; LEN])).wait_when_full()),
        ));
    }
    // Wait until the socket says it waits to write.
    for _ in 0..2000 {
        if watcher.interests().contains(&Interest::InOut) {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        watcher.interests().contains(&Interest::InOut),
        "{:?}",
        watcher.interests()
    );
    let mut got = vec![0u8; N * LEN];
    peer.read_exact(&mut got).await.unwrap();
    let mut written = Vec::new();
    for a in answers {
        written.push(a.await.unwrap().unwrap().unwrap());
    }
    for _ in 0..200 {
        if watcher.interests().last() == Some(&Interest::In) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let interests = watcher.interests();
    assert!(no_consecutive_duplicates(&interests), "{interests:?}");
    assert_eq!(interests.first(), Some(&Interest::In), "{interests:?}");
    assert_eq!(interests.last(), Some(&Interest::In), "{interests:?}");
    for (i, chunk) in got.chunks(LEN).enumerate() {
        assert!(chunk.iter().all(|b| *b == i as u8), "write {i} in order");
    }
    let s = stats(&socket).await;
    assert_eq!(s.bytes_sent, (N * LEN) as u64, "{s:?}");
    assert_eq!(s.writes_completed, N as u64, "{s:?}");
    assert!(s.would_blocks >= 1, "{s:?}");
    let wb_per_write: u32 = written.iter().map(|w| w.would_blocks).max().unwrap();
    assert!(wb_per_write >= 1, "{written:?}");
    assert!(
        written.iter().map(|w| w.would_blocks as u64).max().unwrap() <= s.would_blocks,
        "{written:?} {s:?}"
    );
    assert!(s.sendv_calls >= s.would_blocks, "{s:?}");
    watcher.clear();
    socket.do_send(Close::Graceful);
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    for _ in 0..200 {
        if watcher.interests().last() == Some(&Interest::Remove) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(watcher.interests().last(), Some(&Interest::Remove));
    let _ = drain(&mut rx);
}

/// Every address dropped (socket, writer) while writes are blocked: the socket drains
/// them, closes, and says REMOVE; nothing is lost.
#[test]
fn an_orphaned_socket_drains_blocked_writes_then_closes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(5), SendStep::Hold]);
        let watcher = Watcher::default();
        let (events, mut rx) = channel_subscriber();
        let socket = Socket::builder()
            .functions(mock.functions())
            .subscriber(events)
            .interest_subscriber(watcher.clone().start().recipient())
            .connect(mock_peer())
            .await
            .unwrap();
        let writer = socket.send(GetWriter).await.unwrap();
        let mut expect = Vec::new();
        for i in 0..20u8 {
            let data = vec![i; 1 + i as usize * 40];
            expect.extend_from_slice(&data);
            if i % 2 == 0 {
                socket.do_send(Write::new(data));
            } else {
                writer.write(data).unwrap();
            }
        }
        let answered = writer.write_answered(&b"last"[..]);
        expect.extend_from_slice(b"last");
        settle().await;
        drop(socket);
        drop(writer);
        settle().await;
        mock.release(Handle(1));
        let done = answered.await;
        assert!(done.is_ok(), "{done:?}");
        settle().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(mock.written(Handle(1)), expect);
        assert!(mock.is_closed(Handle(1)));
        let events = drain(&mut rx);
        assert!(write_failures(&events).is_empty(), "{events:?}");
        assert_eq!(
            watcher.interests().last(),
            Some(&Interest::Remove),
            "{:?}",
            watcher.interests()
        );
    });
}

/// A `FramedWriter` on another thread: `send`, `try_send`, the `Sink` (`feed` and
/// `flush`, `send_all`) against a small queue that fills, and a drop with items fed and
/// not flushed: every line arrives once, in order, before the close that follows.
#[actix::test]
async fn a_framed_writer_on_another_thread_loses_and_reorders_nothing() {
    use futures_util::SinkExt;
    use tokio_util::codec::LinesCodec;
    let mock = MockTransport::start();
    mock.set_default_step(SendStep::Accept(97));
    let (events, mut rx) = channel_subscriber();
    let socket = Socket::builder()
        .functions(mock.functions())
        .subscriber(events)
        .config(crate::support::watermarks(2000, 1000))
        .connect(mock_peer())
        .await
        .unwrap();
    let writer = socket.send(GetWriter).await.unwrap();
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut framed = writer.clone().framed(LinesCodec::new());
            let mut n = 0u32;
            let line = |n: u32| format!("line {n:05} {}", "x".repeat((n % 50) as usize));
            for _ in 0..300 {
                framed.send(line(n)).await.unwrap();
                n += 1;
            }
            for _ in 0..300 {
                loop {
                    match framed.try_send(line(n)) {
                        Ok(()) => break,
                        Err(sockactor::FramedWriteError::Write(WriteError::QueueFull {
                            ..
                        })) => {
                            framed.writer().writable().await.unwrap();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                n += 1;
            }
            for _ in 0..300 {
                framed.feed(line(n)).await.unwrap();
                n += 1;
            }
            SinkExt::<String>::flush(&mut framed).await.unwrap();
            let mut items = futures_util::stream::iter((n..n + 300).map(|i| Ok(line(i))));
            framed.send_all(&mut items).await.unwrap();
            n += 300;
            // Fed, not flushed, then dropped.
            for _ in 0..50 {
                framed.feed(line(n)).await.unwrap();
                n += 1;
            }
            drop(framed);
            writer.close();
            n
        })
    });
    let n = tokio::task::spawn_blocking(move || t.join().unwrap())
        .await
        .unwrap();
    for _ in 0..2000 {
        if mock.is_closed(Handle(1)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(mock.is_closed(Handle(1)), "closed after the lines");
    let text = String::from_utf8(mock.written(Handle(1))).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), n as usize, "every line once");
    for (i, l) in lines.iter().enumerate() {
        assert!(l.starts_with(&format!("line {i:05} ")), "line {i}: {l}");
    }
    let failures = write_failures(&drain(&mut rx));
    assert!(failures.is_empty(), "{failures:?}");
}

/// Minimal: a write refused for a full queue (answered to a `send`) is counted by
/// `GetStats`, but a registry's live counters never show it while the socket is idle.
#[test]
fn a_refused_write_never_reaches_the_registrys_live_counters() {
    use sockactor::Registry;
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let registry = Registry::new();
        let socket = Socket::builder()
            .functions(mock.functions())
            .registry(&registry)
            .config(crate::support::watermarks(100, 50))
            .connect(mock_peer())
            .await
            .unwrap();
        socket.do_send(Write::new(Bytes::from(vec![1u8; 100])));
        settle().await;
        let refused = socket.send(Write::new(&b"more"[..])).await.unwrap();
        assert!(
            matches!(refused, Err(WriteError::QueueFull { .. })),
            "{refused:?}"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle().await;
        let asked = socket.send(GetStats).await.unwrap();
        let handle = registry.iter().pop().expect("registered");
        assert_eq!(asked.writes_failed, 1);
        assert_eq!(
            handle.stats().writes_failed,
            asked.writes_failed,
            "registry: {:?}\nGetStats: {asked:?}",
            handle.stats()
        );
    });
}
