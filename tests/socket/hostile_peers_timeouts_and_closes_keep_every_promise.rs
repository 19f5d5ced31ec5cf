//! From the seventh round of the independent review: hostile and odd peers (silent,
//! never reading, half-closing, resetting), every timeout and deadline (send, drain,
//! connect, linger, idle, frame, the filters' close and handshake timeouts) firing
//! exactly when documented and once, and closing at every point of a write's life.
//! Paused time over the mock transport; real loopback on 127.0.0.1 where a real peer
//! matters.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{mock_peer, run_paused, settle};
use actix::prelude::*;
use bytes::Bytes;
use sockactor::messages::{
    Close, Frame, GetWriter, Handle, SocketEvent, SocketEventKind, WritabilityChanged, Write,
    Written,
};
use sockactor::{
    DecodeError, IdleKind, MockTransport, PeerLimits, QueueConfig, ReadLimits, ReadPermit,
    SendStep, Socket, SocketConfig, SocketError, WriteError,
};
use tokio::time::Instant;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// Events with the (paused) time each arrived.
#[derive(Clone, Default)]
struct Timed {
    events: Arc<Mutex<Vec<(Instant, SocketEventKind)>>>,
    writability: Arc<Mutex<Vec<(Instant, bool)>>>,
    /// Permits kept instead of dropped (when `keep` is set).
    kept: Arc<Mutex<Vec<ReadPermit>>>,
    keep: Arc<Mutex<bool>>,
}

struct TimedActor(Timed);
impl Actor for TimedActor {
    type Context = Context<Self>;
}
impl Handler<SocketEvent> for TimedActor {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        if let Some(p) = msg.permit {
            if *self.0.keep.lock().unwrap() {
                self.0.kept.lock().unwrap().push(p);
            }
        }
        self.0
            .events
            .lock()
            .unwrap()
            .push((Instant::now(), msg.kind));
    }
}
impl Handler<WritabilityChanged> for TimedActor {
    type Result = ();
    fn handle(&mut self, msg: WritabilityChanged, _: &mut Context<Self>) {
        self.0
            .writability
            .lock()
            .unwrap()
            .push((Instant::now(), msg.writable));
    }
}

impl Timed {
    fn start(&self) -> Addr<TimedActor> {
        TimedActor(self.clone()).start()
    }
    fn names(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| name(e))
            .collect()
    }
    fn count(&self, pred: impl Fn(&SocketEventKind) -> bool) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| pred(e))
            .count()
    }
    fn times(&self, pred: impl Fn(&SocketEventKind) -> bool) -> Vec<Instant> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| pred(e))
            .map(|(t, _)| *t)
            .collect()
    }
    fn closed(&self) -> usize {
        self.count(|e| matches!(e, SocketEventKind::Closed { .. }))
    }
    fn closed_last_once(&self) {
        let names = self.names();
        assert_eq!(self.closed(), 1, "Closed exactly once: {names:?}");
        assert_eq!(
            names.last().map(String::as_str),
            Some("Closed"),
            "Closed last: {names:?}"
        );
    }
    fn debug(&self) -> String {
        format!(
            "{:?}",
            self.events
                .lock()
                .unwrap()
                .iter()
                .map(|(_, e)| e)
                .collect::<Vec<_>>()
        )
    }
    fn debug_t(&self, t0: Instant) -> String {
        format!(
            "{:?}",
            self.events
                .lock()
                .unwrap()
                .iter()
                .map(|(t, e)| (t.saturating_duration_since(t0), name(e)))
                .collect::<Vec<_>>()
        )
    }
}

fn name(e: &SocketEventKind) -> String {
    match e {
        SocketEventKind::Received(_) => "Received".into(),
        SocketEventKind::Eof => "Eof".into(),
        SocketEventKind::DecodeFailed(_) => "DecodeFailed".into(),
        SocketEventKind::ReadFailed(_) => "ReadFailed".into(),
        SocketEventKind::WriteFailed { .. } => "WriteFailed".into(),
        SocketEventKind::Idle { .. } => "Idle".into(),
        SocketEventKind::SendTimedOut { .. } => "SendTimedOut".into(),
        SocketEventKind::Closed { .. } => "Closed".into(),
        _ => "other".into(),
    }
}

async fn at(t0: Instant, secs: f64) {
    tokio::time::sleep_until(t0 + Duration::from_secs_f64(secs)).await;
    settle().await;
}

async fn socket_with(mock: &MockTransport, config: SocketConfig, timed: &Timed) -> Addr<Socket> {
    let actor = timed.start();
    Socket::builder()
        .functions(mock.functions())
        .config(config)
        .subscriber(actor.clone().recipient())
        .writability_subscriber(actor.recipient())
        .connect(mock_peer())
        .await
        .expect("connect")
}

type Answer = tokio::task::JoinHandle<Result<Result<Written, WriteError>, MailboxError>>;

fn send(socket: &Addr<Socket>, w: Write) -> Answer {
    tokio::task::spawn_local(socket.send(w))
}

/// The answer if it has come, else None (never blocks).
async fn peek(a: &mut Answer) -> Option<Result<Written, WriteError>> {
    if a.is_finished() {
        Some(a.await.expect("join").expect("mailbox"))
    } else {
        None
    }
}

async fn answer(a: Answer) -> Result<Written, WriteError> {
    tokio::time::timeout(120 * S, a)
        .await
        .expect("answered within 120 s")
        .expect("join")
        .expect("mailbox")
}

fn config_limits(limits: PeerLimits) -> SocketConfig {
    SocketConfig {
        limits,
        ..SocketConfig::default()
    }
}

// ───────────────────────── send timeout ─────────────────────────

/// A peer that takes 30 bytes then stops reading. Send timeout 10 s. Every unfinished
/// write (partly sent, queued, waiting for room, fire-and-forget) gets exactly one
/// TimedOut answer at 10 s, not before; SendTimedOut then Closed (once, last).
#[test]
fn send_timeout_fires_once_at_its_deadline_and_times_out_every_write() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(30), SendStep::Hold]);
        let timed = Timed::default();
        let config = SocketConfig {
            queue: QueueConfig {
                high_watermark: 100,
                low_watermark: 50,
                copy_threshold: 0,
                ..QueueConfig::default()
            },
            limits: PeerLimits {
                send_timeout: Some(10 * S),
                ..PeerLimits::default()
            },
            ..SocketConfig::default()
        };
        let socket = socket_with(&mock, config, &timed).await;
        let t0 = Instant::now();
        let mut a = send(&socket, Write::new(vec![1u8; 80]));
        let mut b = send(&socket, Write::new(vec![2u8; 40]));
        let mut c = send(&socket, Write::new(vec![3u8; 10]).wait_when_full());
        socket.do_send(Write::new(vec![4u8; 10]).tag(5).wait_when_full());
        at(t0, 9.9).await;
        assert!(peek(&mut a).await.is_none(), "A not answered before 10 s");
        assert!(peek(&mut b).await.is_none());
        assert!(peek(&mut c).await.is_none());
        assert_eq!(
            timed.count(|e| matches!(e, SocketEventKind::SendTimedOut { .. })),
            0
        );
        at(t0, 10.1).await;
        let a = peek(&mut a).await.expect("A answered by 10.1 s");
        let b = peek(&mut b).await.expect("B answered by 10.1 s");
        let c = peek(&mut c).await.expect("C answered by 10.1 s");
        assert!(
            matches!(a, Err(WriteError::TimedOut { bytes_sent: 30, len: 80, after }) if after == 10 * S),
            "{a:?}"
        );
        assert!(
            matches!(
                b,
                Err(WriteError::TimedOut {
                    bytes_sent: 0,
                    len: 40,
                    ..
                })
            ),
            "{b:?}"
        );
        assert!(
            matches!(
                c,
                Err(WriteError::TimedOut {
                    bytes_sent: 0,
                    len: 10,
                    ..
                })
            ),
            "{c:?}"
        );
        let failed = timed.count(|e| {
            matches!(
                e,
                SocketEventKind::WriteFailed {
                    tag: Some(5),
                    error: WriteError::TimedOut {
                        bytes_sent: 0,
                        len: 10,
                        ..
                    }
                }
            )
        });
        at(t0, 60.0).await;
        assert_eq!(
            failed,
            1,
            "the fire-and-forget write reported TimedOut once: {}",
            timed.debug()
        );
        assert_eq!(
            timed.count(
                |e| matches!(e, SocketEventKind::SendTimedOut { after, .. } if *after == 10 * S)
            ),
            1,
            "{}",
            timed.debug()
        );
        timed.closed_last_once();
        assert!(mock.is_closed(Handle(1)));
        assert_eq!(mock.written(Handle(1)), vec![1u8; 30]);
        // The event came after SendTimedOut.
        let names = timed.names();
        let st = names.iter().position(|n| n == "SendTimedOut").unwrap();
        let cl = names.iter().position(|n| n == "Closed").unwrap();
        assert!(st < cl, "{names:?}");
        println!("events: {}", timed.debug());
    });
}

/// A write after the send timeout closed the socket is refused Closed (nothing sent).
#[test]
fn a_writer_waiting_for_room_learns_the_socket_timed_out() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let timed = Timed::default();
        let config = SocketConfig {
            queue: QueueConfig {
                high_watermark: 100,
                low_watermark: 50,
                ..QueueConfig::default()
            },
            limits: PeerLimits {
                send_timeout: Some(10 * S),
                ..PeerLimits::default()
            },
            ..SocketConfig::default()
        };
        let socket = socket_with(&mock, config, &timed).await;
        let writer = socket.send(GetWriter).await.expect("writer");
        writer.write(vec![1u8; 150]).expect("admitted");
        settle().await;
        assert!(!writer.is_writable());
        let w2 = writer.clone();
        let waiting = tokio::task::spawn_local(async move { w2.writable().await });
        let w3 = writer.clone();
        let ready =
            tokio::task::spawn_local(async move { w3.write_when_ready(vec![2u8; 5]).await });
        let r = tokio::time::timeout(60 * S, waiting)
            .await
            .expect("writable() ends")
            .expect("join");
        assert!(
            r.is_err(),
            "writable() must fail once the socket no longer takes writes: {r:?}"
        );
        let r = tokio::time::timeout(60 * S, ready)
            .await
            .expect("write_when_ready ends")
            .expect("join");
        assert!(r.is_err(), "write_when_ready must fail: {r:?}");
        let after = writer.write(vec![3u8; 5]);
        assert!(after.is_err(), "{after:?}");
        timed.closed_last_once();
    });
}

// ───────────────────────── abort at each point ─────────────────────────

/// Abort right behind writes still queued (not yet flushed): each Aborted with 0 sent,
/// nothing reaches the wire, Closed once and last.
#[test]
fn an_abort_behind_unflushed_writes_aborts_them_with_nothing_sent() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::default();
        let socket = socket_with(&mock, SocketConfig::default(), &timed).await;
        let a = send(&socket, Write::new(vec![1u8; 10]));
        let b = send(&socket, Write::new(vec![2u8; 1000]));
        socket.do_send(Close::Abort);
        let a = answer(a).await;
        let b = answer(b).await;
        settle().await;
        let written = mock.written(Handle(1)).len();
        let ok = |r: &Result<Written, WriteError>, len| match r {
            Err(WriteError::Aborted { bytes_sent, len: l }) => *l == len && *bytes_sent <= len,
            Ok(_) => true,
            _ => false,
        };
        assert!(ok(&a, 10), "{a:?}");
        assert!(ok(&b, 1000), "{b:?}");
        // Whatever the answers say went out is exactly what is on the wire.
        let said: usize = [(&a, 10), (&b, 1000)]
            .iter()
            .map(|(r, len)| match r {
                Ok(_) => *len,
                Err(e) => e.bytes_sent(),
            })
            .sum();
        assert_eq!(said, written, "answers {a:?} {b:?}, wire {written}");
        at(Instant::now(), 30.0).await;
        timed.closed_last_once();
        assert!(mock.is_closed(Handle(1)));
    });
}

/// Abort while a write is partly written and the peer is not reading: Aborted with the
/// bytes that went out; a write waiting for room: Aborted (or Closed) with 0.
#[test]
fn an_abort_mid_write_and_while_waiting_for_room_says_how_far_each_got() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(3), SendStep::Hold]);
        let timed = Timed::default();
        let config = SocketConfig {
            queue: QueueConfig {
                high_watermark: 16,
                low_watermark: 8,
                copy_threshold: 0,
                ..QueueConfig::default()
            },
            ..SocketConfig::default()
        };
        let socket = socket_with(&mock, config, &timed).await;
        let a = send(&socket, Write::new(vec![1u8; 20]));
        settle().await;
        let b = send(&socket, Write::new(vec![2u8; 5]).wait_when_full());
        settle().await;
        socket.do_send(Close::Abort);
        socket.do_send(Close::Abort);
        socket.do_send(Close::Graceful);
        let a = answer(a).await;
        let b = answer(b).await;
        assert!(
            matches!(
                a,
                Err(WriteError::Aborted {
                    bytes_sent: 3,
                    len: 20
                })
            ),
            "{a:?}"
        );
        assert!(
            matches!(
                b,
                Err(WriteError::Aborted {
                    bytes_sent: 0,
                    len: 5
                } | WriteError::Closed {
                    bytes_sent: 0,
                    len: 5
                })
            ),
            "{b:?}"
        );
        at(Instant::now(), 30.0).await;
        timed.closed_last_once();
        assert_eq!(mock.written(Handle(1)), vec![1u8; 3]);
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
    });
}

/// Graceful then Abort while draining against a peer that does not read.
#[test]
fn an_abort_during_a_graceful_drain_aborts_at_once() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(3), SendStep::Hold]);
        let timed = Timed::default();
        let socket = socket_with(&mock, SocketConfig::default(), &timed).await;
        let t0 = Instant::now();
        let a = send(&socket, Write::new(vec![1u8; 600]));
        let b = send(&socket, Write::new(vec![2u8; 600]));
        settle().await;
        socket.do_send(Close::Graceful);
        at(t0, 5.0).await;
        socket.do_send(Close::Abort);
        settle().await;
        let a = answer(a).await;
        let b = answer(b).await;
        assert_eq!(Instant::now() - t0, 5 * S, "answered at the abort");
        assert!(
            matches!(
                a,
                Err(WriteError::Aborted {
                    bytes_sent: 3,
                    len: 600
                })
            ),
            "{a:?}"
        );
        assert!(
            matches!(
                b,
                Err(WriteError::Aborted {
                    bytes_sent: 0,
                    len: 600
                })
            ),
            "{b:?}"
        );
        at(t0, 30.0).await;
        timed.closed_last_once();
    });
}

/// Two graceful closes, then a close after the socket is closed: one Closed.
#[test]
fn double_graceful_close_closes_once() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::default();
        let socket = socket_with(&mock, SocketConfig::default(), &timed).await;
        let a = send(&socket, Write::new(vec![1u8; 10]));
        socket.do_send(Close::Graceful);
        socket.do_send(Close::Graceful);
        let a = answer(a).await;
        assert_eq!(a.expect("sent").len, 10);
        at(Instant::now(), 1.0).await;
        socket.do_send(Close::Graceful);
        socket.do_send(Close::Abort);
        at(Instant::now(), 1.0).await;
        timed.closed_last_once();
        assert!(matches!(
            timed.events.lock().unwrap().last().unwrap().1,
            SocketEventKind::Closed { cause: None }
        ));
    });
}

// ───────────────────────── drain timeout ─────────────────────────

/// Drain timeout 5 s from a close at 1 s: the abort happens at 6 s exactly, writes
/// waiting for room are answered too, once each.
#[test]
fn the_drain_timeout_fires_exactly_from_the_close() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(3), SendStep::Hold]);
        let timed = Timed::default();
        let config = SocketConfig {
            drain_timeout: Some(5 * S),
            queue: QueueConfig {
                high_watermark: 16,
                low_watermark: 8,
                copy_threshold: 0,
                ..QueueConfig::default()
            },
            ..SocketConfig::default()
        };
        let socket = socket_with(&mock, config, &timed).await;
        let t0 = Instant::now();
        let mut a = send(&socket, Write::new(vec![1u8; 20]));
        settle().await;
        let mut b = send(&socket, Write::new(vec![2u8; 5]).wait_when_full());
        at(t0, 1.0).await;
        socket.do_send(Close::Graceful);
        at(t0, 5.95).await;
        assert!(peek(&mut a).await.is_none(), "not aborted before 6 s");
        assert!(peek(&mut b).await.is_none());
        at(t0, 6.05).await;
        let a = peek(&mut a).await.expect("aborted at 6 s");
        let b = peek(&mut b).await.expect("aborted at 6 s");
        assert!(
            matches!(
                a,
                Err(WriteError::Aborted {
                    bytes_sent: 3,
                    len: 20
                })
            ),
            "{a:?}"
        );
        assert!(
            matches!(
                b,
                Err(WriteError::Aborted {
                    bytes_sent: 0,
                    len: 5
                })
            ),
            "{b:?}"
        );
        at(t0, 60.0).await;
        timed.closed_last_once();
        assert!(mock.is_closed(Handle(1)));
    });
}

// ───────────────────────── connect timeout ─────────────────────────

#[test]
fn the_connect_timeout_fires_exactly_and_closes_the_handle() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.delay_connect(mock_peer(), 10 * S);
        let t0 = Instant::now();
        let r = Socket::builder()
            .functions(mock.functions())
            .connect_timeout(3 * S)
            .connect(mock_peer())
            .await;
        assert_eq!(Instant::now() - t0, 3 * S);
        assert!(
            matches!(r, Err(SocketError::TimedOut(d)) if d == 3 * S),
            "{r:?}"
        );
        settle().await;
        for h in mock.handles() {
            assert!(mock.is_closed(h), "{h:?} closed");
        }
        // A connect that answers in time is not touched.
        let mock2 = MockTransport::start();
        mock2.delay_connect(mock_peer(), 2 * S);
        let t1 = Instant::now();
        let ok = Socket::builder()
            .functions(mock2.functions())
            .connect_timeout(3 * S)
            .connect(mock_peer())
            .await;
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!(Instant::now() - t1, 2 * S);
    });
}

// ───────────────────────── idle limits ─────────────────────────

/// read_idle: after the peer's EOF the time does not count (no more Idle events).
#[test]
fn read_idle_stops_after_the_peers_eof() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::default();
        let _socket = socket_with(
            &mock,
            config_limits(PeerLimits {
                read_idle: Some(10 * S),
                ..PeerLimits::default()
            }),
            &timed,
        )
        .await;
        let t0 = Instant::now();
        at(t0, 15.0).await;
        mock.push_eof(Handle(1));
        at(t0, 200.0).await;
        assert_eq!(timed.names(), vec!["Idle", "Eof"], "{}", timed.debug_t(t0));
    });
}

/// read_idle of zero counts as 1 ms: one Idle per ms.
#[test]
fn a_zero_read_idle_counts_as_one_millisecond() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::default();
        let _socket = socket_with(
            &mock,
            config_limits(PeerLimits {
                read_idle: Some(Duration::ZERO),
                ..PeerLimits::default()
            }),
            &timed,
        )
        .await;
        let t0 = Instant::now();
        at(t0, 0.0105).await;
        let n = timed
            .times(|e| {
                matches!(
                    e,
                    SocketEventKind::Idle {
                        kind: IdleKind::Read,
                        ..
                    }
                )
            })
            .into_iter()
            .filter(|t| *t - t0 <= Duration::from_micros(10_500))
            .count();
        assert_eq!(n, 10, "{}", timed.debug_t(t0));
    });
}

/// With close_when_idle the socket closes at the first Idle: Idle once, then Closed.
#[test]
fn close_when_idle_on_a_silent_peer_reports_idle_once_then_closed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::default();
        let _socket = socket_with(
            &mock,
            config_limits(PeerLimits {
                read_idle: Some(5 * S),
                write_idle: Some(5 * S),
                idle: Some(5 * S),
                close_when_idle: true,
                ..PeerLimits::default()
            }),
            &timed,
        )
        .await;
        let t0 = Instant::now();
        at(t0, 4.9).await;
        assert_eq!(timed.count(|_| true), 0);
        at(t0, 100.0).await;
        timed.closed_last_once();
        let closed_at = timed.times(|e| matches!(e, SocketEventKind::Closed { .. }))[0];
        assert!(
            closed_at - t0 <= 5 * S + 10 * MS,
            "closed at {:?}",
            closed_at - t0
        );
        assert!(mock.is_closed(Handle(1)));
        println!("{}", timed.debug());
    });
}

// ───────────────────────── frame timeout ─────────────────────────

#[derive(Clone, Default)]
struct Lines {
    got: Arc<Mutex<Vec<(Instant, String)>>>,
    kept: Arc<Mutex<Vec<ReadPermit>>>,
    keep: Arc<Mutex<bool>>,
}
struct LinesActor(Lines);
impl Actor for LinesActor {
    type Context = Context<Self>;
}
impl Handler<Frame<String>> for LinesActor {
    type Result = ();
    fn handle(&mut self, msg: Frame<String>, _: &mut Context<Self>) {
        if *self.0.keep.lock().unwrap() {
            self.0.kept.lock().unwrap().push(msg.permit);
        }
        self.0.got.lock().unwrap().push((Instant::now(), msg.frame));
    }
}

async fn framed_socket(
    mock: &MockTransport,
    config: SocketConfig,
    timed: &Timed,
    lines: &Lines,
) -> Addr<Socket> {
    Socket::builder()
        .functions(mock.functions())
        .config(config)
        .framed(
            tokio_util::codec::LinesCodec::new(),
            LinesActor(lines.clone()).start().recipient(),
        )
        .subscriber(timed.start().recipient())
        .connect(mock_peer())
        .await
        .expect("connect")
}

/// The frame's first byte came in the same read as the end of the frame before: its
/// deadline runs from that read, not from a later one.
#[test]
fn a_frames_deadline_runs_from_the_read_that_brought_its_first_byte() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::default();
        let lines = Lines::default();
        let _socket = framed_socket(
            &mock,
            config_limits(PeerLimits {
                frame_timeout: Some(10 * S),
                ..PeerLimits::default()
            }),
            &timed,
            &lines,
        )
        .await;
        let t0 = Instant::now();
        mock.push_inbound(Handle(1), &b"a\nb"[..]);
        at(t0, 8.0).await;
        mock.push_inbound(Handle(1), &b"c"[..]);
        at(t0, 9.9).await;
        assert_eq!(
            timed.count(|e| matches!(e, SocketEventKind::DecodeFailed(_))),
            0
        );
        at(t0, 10.1).await;
        let failed = timed.picked_decode();
        assert_eq!(failed.len(), 1, "timed out at 10 s: {}", timed.debug());
        assert!(
            matches!(failed[0], DecodeError::FrameTimedOut { after, buffered: 2 } if after == 10 * S),
            "{:?}",
            failed[0]
        );
        mock.push_inbound(Handle(1), &b"\n"[..]);
        at(t0, 30.0).await;
        let got: Vec<String> = lines
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        assert_eq!(got, vec!["a".to_string()]);
        timed.closed_last_once();
    });
}

impl Timed {
    fn picked_decode(&self) -> Vec<DecodeError> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, e)| match e {
                SocketEventKind::DecodeFailed(d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }
}

// ───────────────────────── resets ─────────────────────────

/// The peer resets while a write is partly out (read side reports the reset).
#[test]
fn a_reset_on_the_read_side_mid_write_answers_the_write_with_how_far_it_got() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(3), SendStep::Hold]);
        let timed = Timed::default();
        let socket = socket_with(&mock, SocketConfig::default(), &timed).await;
        let t0 = Instant::now();
        let a = send(&socket, Write::new(vec![1u8; 600]));
        let b = send(&socket, Write::new(vec![2u8; 600]));
        at(t0, 1.0).await;
        mock.push_read_error(Handle(1), std::io::ErrorKind::ConnectionReset);
        let a = answer(a).await;
        let b = answer(b).await;
        assert_eq!(a.as_ref().err().map(|e| e.bytes_sent()), Some(3), "{a:?}");
        assert_eq!(b.as_ref().err().map(|e| e.bytes_sent()), Some(0), "{b:?}");
        at(t0, 30.0).await;
        assert_eq!(
            timed.count(|e| matches!(e, SocketEventKind::ReadFailed(_))),
            1
        );
        timed.closed_last_once();
        println!("{a:?} {b:?} {}", timed.debug());
    });
}

/// The peer resets mid-write (sendv fails after a partial accept).
#[test]
fn a_reset_mid_write_answers_each_write_once_and_closes_with_the_cause() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(3),
                SendStep::Fail(std::io::ErrorKind::ConnectionReset),
            ],
        );
        let timed = Timed::default();
        let socket = socket_with(&mock, SocketConfig::default(), &timed).await;
        let a = send(&socket, Write::new(vec![1u8; 600]));
        let b = send(&socket, Write::new(vec![2u8; 600]));
        socket.do_send(Write::new(vec![3u8; 600]).tag(9));
        let a = answer(a).await;
        let b = answer(b).await;
        assert!(
            matches!(
                a,
                Err(WriteError::Transport {
                    bytes_sent: 3,
                    len: 600,
                    ..
                })
            ),
            "{a:?}"
        );
        assert!(
            matches!(
                b,
                Err(WriteError::Transport {
                    bytes_sent: 0,
                    len: 600,
                    ..
                })
            ),
            "{b:?}"
        );
        at(Instant::now(), 30.0).await;
        assert_eq!(
            timed.count(|e| matches!(e, SocketEventKind::WriteFailed { tag: Some(9), .. })),
            1
        );
        timed.closed_last_once();
        let cause = timed
            .events
            .lock()
            .unwrap()
            .iter()
            .find_map(|(_, e)| match e {
                SocketEventKind::Closed { cause } => Some(cause.clone()),
                _ => None,
            });
        assert_eq!(
            cause.flatten().and_then(|c| c.io_kind()),
            Some(std::io::ErrorKind::ConnectionReset)
        );
    });
}

// ───────────────────────── half-close ─────────────────────────

#[test]
fn after_the_peers_eof_writes_go_on_and_a_close_ends_with_closed_last() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::default();
        let socket = socket_with(&mock, SocketConfig::default(), &timed).await;
        mock.push_inbound(Handle(1), &b"req"[..]);
        mock.push_eof(Handle(1));
        at(Instant::now(), 1.0).await;
        let w = answer(send(&socket, Write::new(&b"reply"[..]))).await;
        assert_eq!(w.expect("written").len, 5);
        socket.do_send(Close::Graceful);
        at(Instant::now(), 1.0).await;
        assert_eq!(timed.names(), vec!["Received", "Eof", "Closed"]);
        assert_eq!(mock.written(Handle(1)), b"reply");
    });
}

// ───────────────────────── batch 2 ─────────────────────────

/// A sendv the transport takes bytes of at once but answers 30 s later is not a peer
/// that stopped reading: no would-block came, so the send timeout (10 s) does not start.
#[test]
fn a_slow_answer_with_bytes_taken_is_not_a_send_timeout() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [SendStep::Slow {
                bytes: 10,
                after: 30 * S,
            }],
        );
        let timed = Timed::default();
        let socket = socket_with(
            &mock,
            config_limits(PeerLimits {
                send_timeout: Some(10 * S),
                ..PeerLimits::default()
            }),
            &timed,
        )
        .await;
        let a = answer(send(&socket, Write::new(vec![1u8; 10]))).await;
        println!("{a:?} {}", timed.debug());
        assert!(a.is_ok(), "{a:?}");
    });
}

/// Writes after close through every path: typed error; write_each hands every write back.
#[test]
fn writes_after_an_abort_are_refused_through_every_path_with_payloads_back() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::default();
        let socket = socket_with(&mock, SocketConfig::default(), &timed).await;
        let writer = socket.send(GetWriter).await.expect("writer");
        socket.send(Close::Abort).await.expect("mailbox");
        settle().await;
        let w = writer.write(vec![1u8; 3]);
        assert!(
            matches!(
                w,
                Err(WriteError::Closed {
                    bytes_sent: 0,
                    len: 3
                })
            ),
            "{w:?}"
        );
        let each = writer.write_each(vec![
            Bytes::from_static(b"ab").into(),
            Bytes::from_static(b"cde").into(),
        ]);
        match each {
            Err(refused) => {
                let lens: Vec<usize> = refused.writes.iter().map(|b| b.len()).collect();
                assert_eq!(lens, vec![2, 3]);
                assert!(
                    matches!(refused.error, WriteError::Closed { .. }),
                    "{:?}",
                    refused.error
                );
            }
            Ok(()) => panic!("write_each accepted after abort"),
        }
        let fut = writer.write_answered(vec![1u8; 7]);
        assert!(fut.refused().is_some(), "refusal known at once");
        let r = fut.await;
        assert!(
            matches!(
                r,
                Err(WriteError::Closed {
                    bytes_sent: 0,
                    len: 7
                })
            ),
            "{r:?}"
        );
        assert!(writer.writable().await.is_err());
        let m = socket
            .send(Write::new(vec![1u8; 9]).wait_when_full())
            .await
            .expect("mailbox");
        assert!(
            matches!(
                m,
                Err(WriteError::Closed {
                    bytes_sent: 0,
                    len: 9
                })
            ),
            "{m:?}"
        );
        at(Instant::now(), 5.0).await;
        timed.closed_last_once();
        assert!(mock.written(Handle(1)).is_empty());
    });
}

/// A Writer write while the socket drains after Close::Graceful: refused (at once or
/// reported), never sent, never silently dropped.
#[test]
fn a_writer_write_during_a_graceful_drain_is_refused_and_reported() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(5 * S)]);
        let timed = Timed::default();
        let socket = socket_with(&mock, SocketConfig::default(), &timed).await;
        let writer = socket.send(GetWriter).await.expect("writer");
        let a = send(&socket, Write::new(vec![1u8; 10]));
        socket.send(Close::Graceful).await.expect("mailbox");
        let w = writer.write_tagged(vec![2u8; 4], 77);
        let fut = writer.write_answered(vec![3u8; 6]);
        let refused_now = fut.refused().cloned();
        let r = tokio::time::timeout(60 * S, fut).await.expect("answered");
        let a = answer(a).await;
        at(Instant::now(), 30.0).await;
        assert_eq!(a.expect("drained").len, 10);
        assert_eq!(
            mock.written(Handle(1)),
            vec![1u8; 10],
            "nothing after the close"
        );
        let reported =
            timed.count(|e| matches!(e, SocketEventKind::WriteFailed { tag: Some(77), .. }));
        assert!(
            w.is_err() != (reported == 1),
            "the tagged write is refused exactly once: sync {w:?}, reported {reported}"
        );
        assert!(
            matches!(
                r,
                Err(WriteError::Closed {
                    bytes_sent: 0,
                    len: 6
                })
            ),
            "{r:?}"
        );
        println!("sync {w:?} refused_now {refused_now:?}");
        timed.closed_last_once();
    });
}

/// close_on_eof with a write blocked and a drain timeout: Eof, the abort at the drain
/// deadline from the EOF, Closed last.
#[test]
fn close_on_eof_with_a_blocked_write_is_bounded_by_the_drain_timeout() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(2), SendStep::Hold]);
        let timed = Timed::default();
        let config = SocketConfig {
            close_on_eof: true,
            drain_timeout: Some(4 * S),
            ..SocketConfig::default()
        };
        let socket = socket_with(&mock, config, &timed).await;
        let t0 = Instant::now();
        let a = send(&socket, Write::new(vec![1u8; 600]));
        at(t0, 1.0).await;
        mock.push_eof(Handle(1));
        let a = answer(a).await;
        assert_eq!(Instant::now() - t0, 5 * S);
        assert!(
            matches!(
                a,
                Err(WriteError::Aborted {
                    bytes_sent: 2,
                    len: 600
                })
            ),
            "{a:?}"
        );
        at(t0, 30.0).await;
        assert_eq!(timed.names(), vec!["Eof", "Closed"]);
    });
}

/// Lingering close: closes exactly at the linger deadline when the peer keeps its side
/// open, and what the peer sends meanwhile arrives before Closed.
#[test]
fn a_lingering_close_ends_exactly_at_its_deadline() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::default();
        let actor = timed.start();
        let socket = Socket::builder()
            .functions(mock.functions_with_shutdown())
            .config(SocketConfig {
                close_linger: 5 * S,
                ..SocketConfig::default()
            })
            .subscriber(actor.recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let t0 = Instant::now();
        let a = answer(send(&socket, Write::new(vec![1u8; 10]))).await;
        assert!(a.is_ok());
        socket.do_send(Close::Graceful);
        at(t0, 2.0).await;
        assert!(mock.is_shut_down(Handle(1)));
        assert!(!mock.is_closed(Handle(1)));
        mock.push_inbound(Handle(1), &b"late"[..]);
        at(t0, 4.9).await;
        assert!(!mock.is_closed(Handle(1)));
        at(t0, 5.1).await;
        assert!(mock.is_closed(Handle(1)));
        let closed = timed.times(|e| matches!(e, SocketEventKind::Closed { .. }));
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0] - t0, 5 * S);
        assert_eq!(timed.names(), vec!["Received", "Closed"]);
    });
}

/// Send timeout during a lingering close's drain, then the socket also had a drain
/// timeout: the earlier one wins, once.
#[test]
fn send_timeout_before_drain_timeout_fires_once() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(1), SendStep::Hold]);
        let timed = Timed::default();
        let config = SocketConfig {
            drain_timeout: Some(20 * S),
            limits: PeerLimits {
                send_timeout: Some(10 * S),
                ..PeerLimits::default()
            },
            ..SocketConfig::default()
        };
        let socket = socket_with(&mock, config, &timed).await;
        let t0 = Instant::now();
        let a = send(&socket, Write::new(vec![1u8; 600]));
        socket.do_send(Close::Graceful);
        let a = answer(a).await;
        assert_eq!(Instant::now() - t0, 10 * S);
        assert!(
            matches!(
                a,
                Err(WriteError::TimedOut {
                    bytes_sent: 1,
                    len: 600,
                    ..
                })
            ),
            "{a:?}"
        );
        at(t0, 60.0).await;
        assert_eq!(timed.names(), vec!["SendTimedOut", "Closed"]);
    });
}

// ───────────────────────── real loopback peers ─────────────────────────

/// A real peer that never reads, paused time: the send timeout ends the write with how
/// far it got, and the peer, reading afterwards, gets exactly that many bytes, then EOF.
#[test]
fn a_real_peer_that_never_reads_is_timed_out_and_gets_exactly_bytes_sent() {
    run_paused(|| async {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let timed = Timed::default();
        let actor = timed.start();
        let socket = Socket::builder()
            .config(SocketConfig {
                buffers: sockactor::SocketBuffers {
                    send: Some(8192),
                    recv: None,
                },
                limits: PeerLimits {
                    send_timeout: Some(5 * S),
                    ..PeerLimits::default()
                },
                ..SocketConfig::default()
            })
            .subscriber(actor.recipient())
            .connect(addr)
            .await
            .expect("connect");
        let (mut peer, _) = listener.accept().await.unwrap();
        let t0 = Instant::now();
        let data = crate::support::pattern(32 << 20, 7);
        let a = send(&socket, Write::new(data.clone()));
        let b = send(&socket, Write::new(vec![9u8; 100]).wait_when_full());
        let a = answer(a).await;
        let b = answer(b).await;
        let waited = Instant::now() - t0;
        let sent = match &a {
            Err(WriteError::TimedOut {
                bytes_sent, len, ..
            }) => {
                assert_eq!(*len, 32 << 20);
                *bytes_sent
            }
            other => panic!("{}", short(other)),
        };
        assert!(
            matches!(
                b,
                Err(WriteError::TimedOut {
                    bytes_sent: 0,
                    len: 100,
                    ..
                })
            ),
            "{}",
            short(&b)
        );
        assert!(waited >= 5 * S && waited < 6 * S, "{waited:?}");
        let mut got = Vec::new();
        let r = tokio::time::timeout(60 * S, peer.read_to_end(&mut got))
            .await
            .expect("EOF comes");
        println!("sent {sent} read {} r={r:?}", got.len());
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(got.len(), sent);
        assert!(got[..] == data[..sent]);
        settle().await;
        timed.closed_last_once();
    });
}

async fn accepted_pair(
    config: SocketConfig,
    timed: &Timed,
) -> (Addr<Socket>, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let actor = timed.start();
    let socket = Socket::builder()
        .config(config)
        .subscriber(actor.clone().recipient())
        .writability_subscriber(actor.recipient())
        .adopt(server)
        .await
        .expect("adopt");
    (socket, client)
}

/// A real peer that half-closes: we hear Eof, keep writing, the peer reads it all, then
/// our graceful close is its EOF.
#[test]
fn a_real_half_closed_peer_reads_our_writes_after_its_eof() {
    run_paused(|| async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let timed = Timed::default();
        let (socket, mut client) = accepted_pair(SocketConfig::default(), &timed).await;
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let t0 = Instant::now();
        while timed.count(|e| matches!(e, SocketEventKind::Eof)) == 0 {
            assert!(Instant::now() - t0 < 60 * S, "Eof within a minute");
            tokio::time::sleep(10 * MS).await;
        }
        let big = crate::support::pattern(3 << 20, 3);
        let a = send(&socket, Write::new(&b"reply:"[..]));
        let b = send(&socket, Write::new(big.clone()));
        socket.do_send(Close::Graceful);
        let mut got = Vec::new();
        let r = tokio::time::timeout(60 * S, client.read_to_end(&mut got))
            .await
            .expect("EOF");
        assert!(r.is_ok(), "{r:?}");
        assert!(answer(a).await.is_ok());
        assert!(answer(b).await.is_ok());
        let mut want = b"reply:".to_vec();
        want.extend_from_slice(&big);
        assert_eq!(got.len(), want.len());
        assert!(got == want);
        at(Instant::now(), 1.0).await;
        assert_eq!(timed.received_bytes(), b"request");
        let names = timed.names();
        assert!(
            names.ends_with(&["Eof".to_string(), "Closed".to_string()]),
            "{names:?}"
        );
        timed.closed_last_once();
    });
}

impl Timed {
    fn received_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (_, e) in self.events.lock().unwrap().iter() {
            if let SocketEventKind::Received(b) = e {
                out.extend_from_slice(b);
            }
        }
        out
    }
}

/// A real peer that connects and sends nothing: read_idle with close_when_idle closes
/// it; the peer reads EOF; Idle once, Closed once and last.
#[test]
fn a_real_silent_peer_is_closed_at_its_idle_limit() {
    run_paused(|| async {
        use tokio::io::AsyncReadExt;
        let timed = Timed::default();
        let (_socket, mut client) = accepted_pair(
            config_limits(PeerLimits {
                read_idle: Some(3 * S),
                close_when_idle: true,
                ..PeerLimits::default()
            }),
            &timed,
        )
        .await;
        let t0 = Instant::now();
        let mut got = Vec::new();
        let r = tokio::time::timeout(60 * S, client.read_to_end(&mut got))
            .await
            .expect("EOF");
        assert!(r.is_ok(), "{r:?}");
        let waited = Instant::now() - t0;
        assert!(waited >= 3 * S && waited < 4 * S, "{waited:?}");
        at(Instant::now(), 1.0).await;
        assert_eq!(timed.names(), vec!["Idle", "Closed"]);
    });
}

/// A real peer that resets mid-write (SO_LINGER 0 after reading a little): every write
/// answered once, each saying how far it got, bytes_sent never more than its length,
/// Closed once and last with a cause.
#[test]
fn a_real_peer_that_resets_mid_write() {
    actix::System::new().block_on(async {
        use tokio::io::AsyncReadExt;
        let timed = Timed::default();
        let (socket, mut client) = accepted_pair(SocketConfig::default(), &timed).await;
        let writes: Vec<Answer> = (0..8)
            .map(|i| send(&socket, Write::new(vec![i as u8; 1 << 20]).wait_when_full()))
            .collect();
        let mut buf = vec![0u8; 64 << 10];
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0);
        #[allow(deprecated)]
        client.set_linger(Some(Duration::ZERO)).unwrap();
        drop(client);
        let mut answers = Vec::new();
        for w in writes {
            answers.push(
                tokio::time::timeout(Duration::from_secs(20), w)
                    .await
                    .expect("answered")
                    .unwrap()
                    .unwrap(),
            );
        }
        let mut total = 0;
        let mut failed = false;
        for (i, a) in answers.iter().enumerate() {
            match a {
                Ok(w) => {
                    assert!(!failed, "an Ok after a failure");
                    total += w.len;
                }
                Err(e) => {
                    failed = true;
                    assert!(
                        matches!(e, WriteError::Transport { len, .. } if *len == 1 << 20),
                        "{i}: {}",
                        short_e(e)
                    );
                    assert!(e.bytes_sent() <= 1 << 20);
                    total += e.bytes_sent();
                }
            }
        }
        assert!(failed, "a reset fails the rest");
        for _ in 0..200 {
            if timed.closed() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        timed.closed_last_once();
        println!("total {total} {:?}", timed.names());
    });
}

fn short_e(e: &WriteError) -> String {
    match e {
        WriteError::QueueFull {
            queued,
            high_watermark,
            payload,
        } => {
            format!("QueueFull {{ queued: {queued}, high_watermark: {high_watermark}, payload: {} bytes }}", payload.len())
        }
        other => format!("{other:?}"),
    }
}

fn short(r: &Result<Written, WriteError>) -> String {
    match r {
        Ok(w) => format!("Ok({} bytes)", w.len),
        Err(e) => format!("Err({})", short_e(e)),
    }
}

// ───────────────────────── batch 4 ─────────────────────────

/// No subscriber: the socket does not read, so read_idle time does not count, and
/// close_when_idle must not close it.
#[test]
fn without_a_subscriber_read_idle_never_closes_the_socket() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config_limits(PeerLimits {
                read_idle: Some(5 * S),
                close_when_idle: true,
                ..PeerLimits::default()
            }))
            .connect(mock_peer())
            .await
            .expect("connect");
        at(Instant::now(), 100.0).await;
        assert!(
            !mock.is_closed(Handle(1)),
            "closed by a read idle limit while not reading"
        );
        let w = answer(send(&socket, Write::new(&b"x"[..]))).await;
        assert!(w.is_ok(), "{}", short(&w));
    });
}

/// After the peer's EOF nothing more can be read: read_idle with close_when_idle must
/// not close the half-open socket.
#[test]
fn after_the_peers_eof_read_idle_never_closes_the_half_open_socket() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::default();
        let socket = socket_with(
            &mock,
            config_limits(PeerLimits {
                read_idle: Some(5 * S),
                close_when_idle: true,
                ..PeerLimits::default()
            }),
            &timed,
        )
        .await;
        let t0 = Instant::now();
        mock.push_eof(Handle(1));
        at(t0, 100.0).await;
        assert!(!mock.is_closed(Handle(1)), "{}", timed.debug_t(t0));
        let w = answer(send(&socket, Write::new(&b"x"[..]))).await;
        assert!(w.is_ok(), "{}", short(&w));
        assert_eq!(timed.names(), vec!["Eof"]);
    });
}

/// A subscriber that holds its permits (window full) for 100 s: the peer is not idle,
/// read_idle with close_when_idle must not close.
#[test]
fn a_full_read_window_never_makes_the_peer_read_idle() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::default();
        *timed.keep.lock().unwrap() = true;
        let config = SocketConfig {
            read_limits: ReadLimits {
                max_deliveries: 1,
                max_bytes: 1 << 20,
            },
            limits: PeerLimits {
                read_idle: Some(5 * S),
                close_when_idle: true,
                ..PeerLimits::default()
            },
            ..SocketConfig::default()
        };
        let _socket = socket_with(&mock, config, &timed).await;
        let t0 = Instant::now();
        mock.push_inbound(Handle(1), &b"x"[..]);
        at(t0, 100.0).await;
        assert!(!mock.is_closed(Handle(1)), "{}", timed.debug_t(t0));
        assert_eq!(timed.names(), vec!["Received"]);
    });
}

/// Frame timeout with close_on_decode_error false: DecodeFailed once, reading stops,
/// the socket stays open for a reply, then a Close ends it, Closed once and last.
#[test]
fn a_frame_timeout_without_close_on_decode_error_leaves_the_socket_open_for_a_reply() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::default();
        let lines = Lines::default();
        let config = SocketConfig {
            close_on_decode_error: false,
            limits: PeerLimits {
                frame_timeout: Some(5 * S),
                ..PeerLimits::default()
            },
            ..SocketConfig::default()
        };
        let socket = framed_socket(&mock, config, &timed, &lines).await;
        let t0 = Instant::now();
        mock.push_inbound(Handle(1), &b"slow"[..]);
        at(t0, 30.0).await;
        let d = timed.picked_decode();
        assert_eq!(d.len(), 1, "{}", timed.debug_t(t0));
        assert!(
            matches!(d[0], DecodeError::FrameTimedOut { buffered: 4, .. }),
            "{:?}",
            d[0]
        );
        assert_eq!(
            timed.times(|e| matches!(e, SocketEventKind::DecodeFailed(_)))[0] - t0,
            5 * S
        );
        assert!(!mock.is_closed(Handle(1)));
        let w = answer(send(&socket, Write::new(&b"408 timeout\n"[..]))).await;
        assert!(w.is_ok(), "{}", short(&w));
        socket.do_send(Close::Graceful);
        at(t0, 31.0).await;
        assert_eq!(timed.names(), vec!["DecodeFailed", "Closed"]);
        assert_eq!(mock.written(Handle(1)), b"408 timeout\n");
    });
}

/// connect_framed over a mock: a slowloris frame ends the FrameStream with the typed
/// FrameTimedOut error, then None.
#[test]
fn a_frame_stream_ends_with_frame_timed_out() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (_tx, mut rx) = Socket::builder()
            .functions(mock.functions())
            .config(config_limits(PeerLimits {
                frame_timeout: Some(5 * S),
                ..PeerLimits::default()
            }))
            .connect_framed(mock_peer(), tokio_util::codec::LinesCodec::new())
            .await
            .expect("connect");
        let t0 = Instant::now();
        mock.push_inbound(Handle(1), &b"ok\nsl"[..]);
        let first = rx.next().await;
        assert!(matches!(first, Some(Ok(ref l)) if l == "ok"), "{first:?}");
        for i in 0..3 {
            at(t0, 1.0 + i as f64).await;
            mock.push_inbound(Handle(1), &b"o"[..]);
        }
        let second = tokio::time::timeout(60 * S, rx.next())
            .await
            .expect("an item");
        assert_eq!(Instant::now() - t0, 5 * S);
        assert!(
            matches!(
                second,
                Some(Err(sockactor::FrameError::Decode(
                    DecodeError::FrameTimedOut { buffered: 5, .. }
                )))
            ),
            "{second:?}"
        );
        let third = tokio::time::timeout(60 * S, rx.next())
            .await
            .expect("the end");
        assert!(third.is_none(), "{third:?}");
    });
}

/// Compress layer close_timeout: a graceful close whose encoded bytes the transport will
/// not take closes anyway at the close timeout, Closed once.
#[test]
fn a_deflate_sockets_close_timeout_bounds_a_graceful_close() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let timed = Timed::default();
        let functions = sockactor::filters::Compress::new()
            .close_timeout(3 * S)
            .wrap(mock.functions_with_shutdown());
        let socket = Socket::builder()
            .functions(functions)
            .subscriber(timed.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let t0 = Instant::now();
        let w = answer(send(&socket, Write::new(vec![7u8; 1000]))).await;
        assert!(w.is_ok(), "{}", short(&w));
        socket.do_send(Close::Graceful);
        at(t0, 2.9).await;
        assert!(!mock.is_closed(Handle(1)), "{}", timed.debug_t(t0));
        at(t0, 3.1).await;
        assert!(
            mock.is_closed(Handle(1)),
            "closed at the close timeout: {}",
            timed.debug_t(t0)
        );
        at(t0, 60.0).await;
        timed.closed_last_once();
        println!("{}", timed.debug_t(t0));
    });
}

/// TLS handshake timeout against a server that never answers: the connect fails at the
/// handshake timeout, typed as timed out, and the handle is closed.
#[test]
fn a_tls_handshake_against_a_silent_server_times_out_exactly() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let pki = crate::support::tls::pki(&["localhost"]);
        let functions = sockactor::filters::Tls::client(
            crate::support::tls::client_config(pki.roots.clone()),
            "localhost",
        )
        .expect("name")
        .handshake_timeout(2 * S)
        .wrap(mock.functions());
        let t0 = Instant::now();
        let r = Socket::builder()
            .functions(functions)
            .connect(mock_peer())
            .await;
        let waited = Instant::now() - t0;
        println!("{r:?} after {waited:?}");
        assert_eq!(waited, 2 * S);
        let timed_out = match &r {
            Err(SocketError::TimedOut(_)) => true,
            Err(e) => e.transport().and_then(|t| t.io_kind()) == Some(std::io::ErrorKind::TimedOut),
            Ok(_) => false,
        };
        assert!(timed_out, "{r:?}");
        settle().await;
        assert!(mock.is_closed(Handle(1)));
    });
}

/// connect_framed honours the builder's connect timeout as connect does.
#[test]
fn connect_framed_honours_the_connect_timeout() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.delay_connect(mock_peer(), 10 * S);
        let t0 = Instant::now();
        let r = Socket::builder()
            .functions(mock.functions())
            .connect_timeout(3 * S)
            .connect_framed(mock_peer(), tokio_util::codec::LinesCodec::new())
            .await;
        assert_eq!(Instant::now() - t0, 3 * S);
        assert!(
            matches!(r, Err(SocketError::TimedOut(d)) if d == 3 * S),
            "{:?}",
            r.err()
        );
    });
}

/// Abort during a lingering close: Closed once, at once.
#[test]
fn an_abort_during_a_linger_closes_at_once_and_once() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::default();
        let socket = Socket::builder()
            .functions(mock.functions_with_shutdown())
            .config(SocketConfig {
                close_linger: 50 * S,
                ..SocketConfig::default()
            })
            .subscriber(timed.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let t0 = Instant::now();
        socket.do_send(Close::Graceful);
        at(t0, 2.0).await;
        assert!(mock.is_shut_down(Handle(1)) && !mock.is_closed(Handle(1)));
        socket.do_send(Close::Abort);
        at(t0, 2.5).await;
        assert!(mock.is_closed(Handle(1)), "the abort ends the linger");
        at(t0, 100.0).await;
        timed.closed_last_once();
        assert_eq!(
            timed.times(|e| matches!(e, SocketEventKind::Closed { .. }))[0] - t0,
            2 * S
        );
    });
}

/// The peer resets while a graceful close drains: each write answered once with how far
/// it got, Closed once with the cause.
#[test]
fn a_reset_during_a_graceful_drain() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(5),
                SendStep::WouldBlock(2 * S),
                SendStep::Fail(std::io::ErrorKind::ConnectionReset),
            ],
        );
        let timed = Timed::default();
        let socket = socket_with(&mock, SocketConfig::default(), &timed).await;
        let a = send(&socket, Write::new(vec![1u8; 600]));
        let b = send(&socket, Write::new(vec![2u8; 600]));
        socket.do_send(Close::Graceful);
        let a = answer(a).await;
        let b = answer(b).await;
        assert!(
            matches!(
                a,
                Err(WriteError::Transport {
                    bytes_sent: 5,
                    len: 600,
                    ..
                })
            ),
            "{}",
            short(&a)
        );
        assert!(
            matches!(
                b,
                Err(WriteError::Transport {
                    bytes_sent: 0,
                    len: 600,
                    ..
                })
            ),
            "{}",
            short(&b)
        );
        at(Instant::now(), 30.0).await;
        timed.closed_last_once();
        assert!(matches!(
            timed.events.lock().unwrap().last().unwrap().1,
            SocketEventKind::Closed { cause: Some(_) }
        ));
    });
}

/// Watermarks against a peer that never reads: one `false` when the queue crosses the
/// high mark, one `true` when it drains to the low one; nothing in between.
#[test]
fn writability_against_a_stalled_peer_flips_once_each_way() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let timed = Timed::default();
        let config = SocketConfig {
            queue: QueueConfig {
                high_watermark: 1000,
                low_watermark: 100,
                ..QueueConfig::default()
            },
            ..SocketConfig::default()
        };
        let socket = socket_with(&mock, config, &timed).await;
        let writer = socket.send(GetWriter).await.unwrap();
        let mut refused = 0;
        for _ in 0..50 {
            if writer.write(vec![1u8; 100]).is_err() {
                refused += 1;
            }
        }
        settle().await;
        assert_eq!(refused, 40);
        let t0 = Instant::now();
        at(t0, 10.0).await;
        mock.release(Handle(1));
        at(t0, 11.0).await;
        let flips: Vec<bool> = timed
            .writability
            .lock()
            .unwrap()
            .iter()
            .map(|(_, w)| *w)
            .collect();
        assert_eq!(flips, vec![false, true]);
        assert_eq!(mock.written(Handle(1)).len(), 1000);
        assert!(writer.is_writable());
    });
}

/// write_idle with close_when_idle against a peer that stopped reading, plus a send
/// timeout: the idle close starts a drain, the send timeout ends it; every write one
/// answer, Closed once and last.
#[test]
fn an_idle_close_ended_by_the_send_timeout_closes_once() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(4), SendStep::Hold]);
        let timed = Timed::default();
        let socket = socket_with(
            &mock,
            config_limits(PeerLimits {
                write_idle: Some(5 * S),
                close_when_idle: true,
                send_timeout: Some(12 * S),
                ..PeerLimits::default()
            }),
            &timed,
        )
        .await;
        let t0 = Instant::now();
        let a = send(&socket, Write::new(vec![1u8; 600]));
        let b = send(&socket, Write::new(vec![2u8; 600]));
        let a = answer(a).await;
        let b = answer(b).await;
        assert_eq!(Instant::now() - t0, 12 * S);
        assert!(
            matches!(
                a,
                Err(WriteError::TimedOut {
                    bytes_sent: 4,
                    len: 600,
                    ..
                })
            ),
            "{}",
            short(&a)
        );
        assert!(
            matches!(
                b,
                Err(WriteError::TimedOut {
                    bytes_sent: 0,
                    len: 600,
                    ..
                })
            ),
            "{}",
            short(&b)
        );
        at(t0, 60.0).await;
        assert_eq!(
            timed.names(),
            vec!["Idle", "SendTimedOut", "Closed"],
            "{}",
            timed.debug_t(t0)
        );
    });
}
