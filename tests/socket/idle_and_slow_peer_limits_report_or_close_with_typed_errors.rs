//! `PeerLimits`: a peer that goes silent, trickles a frame, or stops reading. Idle limits
//! (read, write, both) are reported as `Idle` events, once per period of idleness, and
//! close the socket gracefully only when asked to; a frame that takes longer than the
//! frame timeout is a typed `DecodeError::FrameTimedOut`; queued bytes the peer takes
//! none of for the send timeout end every unfinished write with `WriteError::TimedOut`
//! saying how far it got, and the socket closes. A busy peer is never touched, and
//! without limits nothing happens however long the socket waits. Paused time throughout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{mock_peer, run_paused, settle, Recorder};
use actix::prelude::*;
use sockactor::messages::{
    Frame, Handle, PauseReading, ResumeReading, SocketEvent, SocketEventKind, Write,
};
use sockactor::{
    DecodeError, IdleKind, MockTransport, PeerLimits, ReadLimits, SendStep, Socket, SocketConfig,
    WriteError,
};
use tokio::time::{sleep, Instant};
use tokio_util::codec::LinesCodec;

const S: Duration = Duration::from_secs(1);

fn config(limits: PeerLimits) -> SocketConfig {
    SocketConfig {
        limits,
        ..SocketConfig::default()
    }
}

async fn socket(mock: &MockTransport, limits: PeerLimits, recorder: &Recorder) -> Addr<Socket> {
    Socket::builder()
        .functions(mock.functions())
        .config(config(limits))
        .subscriber(recorder.start().recipient())
        .connect(mock_peer())
        .await
        .expect("connect")
}

fn idles(recorder: &Recorder, which: IdleKind) -> usize {
    recorder.count(|e| matches!(e, SocketEventKind::Idle { kind, .. } if *kind == which))
}

/// `f`, or a failed test after a minute of (paused) time: a limit that never fires fails
/// the test rather than hanging it.
async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(60 * S, f)
        .await
        .expect("answered within a minute")
}

/// Sleeps until `secs` seconds after `t0`.
async fn until(t0: Instant, secs: f64) {
    tokio::time::sleep_until(t0 + Duration::from_secs_f64(secs)).await;
    settle().await;
}

#[test]
fn read_idle_is_reported_a_period_after_the_last_byte_and_again_each_period() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let limits = PeerLimits {
            read_idle: Some(10 * S),
            ..PeerLimits::default()
        };
        let t0 = Instant::now();
        let socket = socket(&mock, limits, &recorder).await;
        until(t0, 5.0).await;
        mock.push_inbound(Handle(1), &b"hello"[..]);
        until(t0, 14.5).await;
        assert_eq!(idles(&recorder, IdleKind::Read), 0, "5 s of data resets it");
        until(t0, 15.5).await;
        assert_eq!(idles(&recorder, IdleKind::Read), 1);
        until(t0, 25.5).await;
        assert_eq!(idles(&recorder, IdleKind::Read), 2, "repeats each period");
        assert!(
            recorder
                .events
                .lock()
                .expect("lock")
                .iter()
                .any(|e| matches!(
                    e,
                    SocketEventKind::Idle { kind: IdleKind::Read, after } if *after == 10 * S
                )),
            "the event names its limit"
        );
        // Only reported: the socket stays open and writes go on.
        let written = socket
            .send(Write::new(&b"still here"[..]))
            .await
            .expect("mailbox")
            .expect("written");
        assert_eq!(written.len, 10);
        assert!(!mock.is_closed(Handle(1)));
        assert_eq!(idles(&recorder, IdleKind::Write), 0, "not configured");
    });
}

#[test]
fn write_idle_and_both_idle_count_their_own_directions() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let limits = PeerLimits {
            write_idle: Some(10 * S),
            idle: Some(10 * S),
            ..PeerLimits::default()
        };
        let t0 = Instant::now();
        let socket = socket(&mock, limits, &recorder).await;
        until(t0, 4.0).await;
        socket
            .send(Write::new(&b"ping"[..]))
            .await
            .expect("mailbox")
            .expect("written");
        until(t0, 8.0).await;
        mock.push_inbound(Handle(1), &b"pong"[..]);
        until(t0, 13.5).await;
        assert_eq!(idles(&recorder, IdleKind::Write), 0);
        until(t0, 14.5).await;
        assert_eq!(
            idles(&recorder, IdleKind::Write),
            1,
            "10 s after the last send"
        );
        assert_eq!(idles(&recorder, IdleKind::Both), 0, "a read 6 s ago");
        until(t0, 18.5).await;
        assert_eq!(
            idles(&recorder, IdleKind::Both),
            1,
            "10 s after the last read"
        );
    });
}

#[test]
fn close_when_idle_closes_a_silent_peers_socket_gracefully_after_its_writes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // The peer is slow to take the reply: the close waits for it.
        mock.script_sendv(
            Handle(1),
            vec![SendStep::WouldBlock(2 * S), SendStep::AcceptAll],
        );
        let recorder = Recorder::default();
        let limits = PeerLimits {
            idle: Some(30 * S),
            close_when_idle: true,
            ..PeerLimits::default()
        };
        let t0 = Instant::now();
        let socket = socket(&mock, limits, &recorder).await;
        until(t0, 29.5).await;
        assert!(!mock.is_closed(Handle(1)));
        let reply = actix::spawn(socket.send(Write::new(vec![9u8; 64])));
        settle().await;
        // The write would block: nothing was sent, so the socket is idle at 30 s.
        until(t0, 30.5).await;
        assert_eq!(idles(&recorder, IdleKind::Both), 1);
        let written = within(reply).await.expect("join").expect("mailbox");
        assert_eq!(written.expect("sent whole by the graceful close").len, 64);
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        assert_eq!(mock.written(Handle(1)), vec![9u8; 64]);
        let late = socket.send(Write::new(&b"late"[..])).await;
        assert!(
            matches!(
                late,
                Ok(Err(WriteError::Closed {
                    bytes_sent: 0,
                    len: 4
                })) | Err(_)
            ),
            "{late:?}"
        );
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Closed { cause: None })),
            1
        );
    });
}

/// Collects lines.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

struct LinesActor(Lines);

impl Actor for LinesActor {
    type Context = Context<Self>;
}

impl Handler<Frame<String>> for LinesActor {
    type Result = ();
    fn handle(&mut self, msg: Frame<String>, _: &mut Context<Self>) {
        self.0 .0.lock().expect("lock").push(msg.frame);
    }
}

/// A framed socket on `mock`; the caller holds its address for as long as it is to read
/// (a socket whose every address is dropped stops reading and closes).
async fn framed(
    mock: &MockTransport,
    limits: PeerLimits,
    recorder: &Recorder,
    lines: &Lines,
) -> Addr<Socket> {
    Socket::builder()
        .functions(mock.functions())
        .config(config(limits))
        .subscriber(recorder.start().recipient())
        .framed(
            LinesCodec::new(),
            LinesActor(lines.clone()).start().recipient(),
        )
        .connect(mock_peer())
        .await
        .expect("connect")
}

#[test]
fn a_frame_trickled_slower_than_the_frame_timeout_is_a_typed_decode_error() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let lines = Lines::default();
        let limits = PeerLimits {
            frame_timeout: Some(5 * S),
            ..PeerLimits::default()
        };
        let t0 = Instant::now();
        let _socket = framed(&mock, limits, &recorder, &lines).await;
        // Whole lines well within the limit, then one byte a second.
        mock.push_inbound(Handle(1), &b"GET /\nHost: x\nslo"[..]);
        for i in 1..=10 {
            until(t0, f64::from(i)).await;
            if !mock.is_closed(Handle(1)) {
                mock.push_inbound(Handle(1), &b"w"[..]);
            }
        }
        settle().await;
        assert_eq!(*lines.0.lock().expect("lock"), vec!["GET /", "Host: x"]);
        let events = recorder.events.lock().expect("lock");
        let timed_out: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                SocketEventKind::DecodeFailed(DecodeError::FrameTimedOut { after, buffered }) => {
                    Some((*after, *buffered))
                }
                _ => None,
            })
            .collect();
        // The frame began at 0 s with "slo"; at 5 s it held "slo" and 4 or 5 "w"s.
        assert_eq!(timed_out.len(), 1, "{events:?}");
        assert_eq!(timed_out[0].0, 5 * S);
        assert!((7..=8).contains(&timed_out[0].1), "{timed_out:?}");
        drop(events);
        assert!(
            mock.is_closed(Handle(1)),
            "rejected and closed, as a bad frame"
        );
    });
}

#[test]
fn a_steady_stream_of_whole_frames_is_never_timed_out() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let lines = Lines::default();
        let limits = PeerLimits {
            frame_timeout: Some(5 * S),
            read_idle: Some(5 * S),
            close_when_idle: true,
            ..PeerLimits::default()
        };
        let t0 = Instant::now();
        let _socket = framed(&mock, limits, &recorder, &lines).await;
        // Each second a line ends and the next begins: frames take 1 s each.
        mock.push_inbound(Handle(1), &b"line 0"[..]);
        for i in 1..=60 {
            until(t0, f64::from(i)).await;
            mock.push_inbound(Handle(1), format!("\nline {i}").into_bytes());
        }
        until(t0, 60.5).await;
        assert_eq!(lines.0.lock().expect("lock").len(), 60);
        assert!(!mock.is_closed(Handle(1)));
        assert_eq!(
            recorder.count(|e| matches!(
                e,
                SocketEventKind::DecodeFailed(_) | SocketEventKind::Idle { .. }
            )),
            0
        );
        // Then the peer goes silent mid-frame: the frame timeout and the idle limit
        // both fall due at 65 s; the frame's rejection closes the socket.
        until(t0, 66.0).await;
        assert!(mock.is_closed(Handle(1)));
        assert_eq!(
            recorder.count(|e| matches!(
                e,
                SocketEventKind::DecodeFailed(DecodeError::FrameTimedOut { .. })
            )),
            1
        );
    });
}

#[test]
fn a_peer_that_stops_reading_times_out_every_write_with_how_far_it_got() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // The peer takes 10 bytes and then nothing more.
        mock.script_sendv(Handle(1), vec![SendStep::Accept(10)]);
        mock.set_default_step(SendStep::Hold);
        let recorder = Recorder::default();
        let limits = PeerLimits {
            send_timeout: Some(5 * S),
            ..PeerLimits::default()
        };
        let socket = socket(&mock, limits, &recorder).await;
        let t0 = Instant::now();
        let first = actix::spawn(socket.send(Write::new(vec![1u8; 100])));
        let second = actix::spawn(socket.send(Write::new(vec![2u8; 50])));
        let first = within(first).await.expect("join").expect("mailbox");
        let waited = t0.elapsed();
        assert!(
            matches!(
                first,
                Err(WriteError::TimedOut { bytes_sent: 10, len: 100, after }) if after == 5 * S
            ),
            "{first:?}"
        );
        assert_eq!(
            first.as_ref().map_err(WriteError::bytes_sent).err(),
            Some(10)
        );
        assert!(
            waited >= 5 * S && waited < 6 * S,
            "timed out 5 s after the first would-block, after {waited:?}"
        );
        let second = within(second).await.expect("join").expect("mailbox");
        assert!(
            matches!(
                second,
                Err(WriteError::TimedOut {
                    bytes_sent: 0,
                    len: 50,
                    ..
                })
            ),
            "{second:?}"
        );
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        assert_eq!(mock.written(Handle(1)), vec![1u8; 10]);
        assert_eq!(
            recorder.count(|e| matches!(
                e,
                SocketEventKind::SendTimedOut { after, queued: 140 } if *after == 5 * S
            )),
            1
        );
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Closed { .. })),
            1
        );
    });
}

#[test]
fn a_slow_peer_that_keeps_taking_bytes_is_not_timed_out() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // Ten bytes every 3 s: slow, but never 5 s without progress.
        let mut steps = Vec::new();
        for _ in 0..20 {
            steps.push(SendStep::WouldBlock(3 * S));
            steps.push(SendStep::Accept(10));
        }
        mock.script_sendv(Handle(1), steps);
        let recorder = Recorder::default();
        let limits = PeerLimits {
            send_timeout: Some(5 * S),
            ..PeerLimits::default()
        };
        let socket = socket(&mock, limits, &recorder).await;
        let written = socket
            .send(Write::new(vec![5u8; 100]))
            .await
            .expect("mailbox")
            .expect("sent whole, slowly");
        assert_eq!(written.len, 100);
        assert_eq!(mock.written(Handle(1)), vec![5u8; 100]);
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::SendTimedOut { .. })),
            0
        );
    });
}

#[test]
fn the_send_timeout_also_ends_a_graceful_close_whose_peer_stopped_reading() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let recorder = Recorder::default();
        let limits = PeerLimits {
            send_timeout: Some(5 * S),
            ..PeerLimits::default()
        };
        let socket = socket(&mock, limits, &recorder).await;
        let write = actix::spawn(socket.send(Write::new(vec![3u8; 32])));
        settle().await;
        socket.do_send(sockactor::messages::Close::Graceful);
        let answer = within(write).await.expect("join").expect("mailbox");
        assert!(
            matches!(
                answer,
                Err(WriteError::TimedOut {
                    bytes_sent: 0,
                    len: 32,
                    ..
                })
            ),
            "{answer:?}"
        );
        settle().await;
        assert!(mock.is_closed(Handle(1)));
    });
}

#[test]
fn without_limits_a_silent_peer_and_a_stalled_queue_wait_as_long_as_they_take() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let recorder = Recorder::default();
        let socket = socket(&mock, PeerLimits::default(), &recorder).await;
        let write = actix::spawn(socket.send(Write::new(vec![3u8; 32])));
        mock.push_inbound(Handle(1), &b"half a fra"[..]);
        sleep(Duration::from_secs(3600)).await;
        assert!(!write.is_finished());
        assert!(!mock.is_closed(Handle(1)));
        assert_eq!(
            recorder.count(|e| !matches!(e, SocketEventKind::Received(_))),
            0,
            "no event but the data"
        );
    });
}

/// Events with the (paused) time each came, keeping the read permits that come with
/// them while told to: a subscriber that holds the read window full.
#[derive(Clone, Default)]
struct Timed {
    events: Arc<Mutex<Vec<(Instant, SocketEventKind)>>>,
    permits: Arc<Mutex<Vec<sockactor::ReadPermit>>>,
    keep: Arc<Mutex<bool>>,
}

struct TimedActor(Timed);

impl Actor for TimedActor {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for TimedActor {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        if let Some(permit) = msg.permit {
            if *self.0.keep.lock().expect("lock") {
                self.0.permits.lock().expect("lock").push(permit);
            }
        }
        let at = Instant::now();
        self.0.events.lock().expect("lock").push((at, msg.kind));
    }
}

impl Handler<Frame<String>> for TimedActor {
    type Result = ();
    fn handle(&mut self, msg: Frame<String>, _: &mut Context<Self>) {
        if *self.0.keep.lock().expect("lock") {
            self.0.permits.lock().expect("lock").push(msg.permit);
        }
    }
}

impl Timed {
    fn keeping() -> Self {
        let timed = Timed::default();
        *timed.keep.lock().expect("lock") = true;
        timed
    }

    /// Drops the kept permits and keeps no more: the read window reopens.
    fn let_go(&self) {
        *self.keep.lock().expect("lock") = false;
        self.permits.lock().expect("lock").clear();
    }

    /// When (after `t0`) the first event `pick` picks came.
    fn first(&self, t0: Instant, pick: impl Fn(&SocketEventKind) -> bool) -> Option<Duration> {
        let events = self.events.lock().expect("lock");
        events.iter().find(|(_, e)| pick(e)).map(|(at, _)| *at - t0)
    }
}

fn one_delivery_window(limits: PeerLimits) -> SocketConfig {
    SocketConfig {
        read_limits: ReadLimits {
            max_deliveries: 1,
            max_bytes: 1 << 20,
        },
        ..config(limits)
    }
}

fn is_idle(e: &SocketEventKind) -> bool {
    matches!(e, SocketEventKind::Idle { .. })
}

/// Paused from 0 to 19 s: the 10 s of silence are counted from the resume, whatever
/// the period the limit's checks run on.
#[test]
fn read_idle_does_not_count_time_while_reading_is_paused() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::default();
        let limits = PeerLimits {
            read_idle: Some(10 * S),
            close_when_idle: true,
            ..PeerLimits::default()
        };
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config(limits))
            .subscriber(TimedActor(timed.clone()).start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let t0 = Instant::now();
        socket.do_send(PauseReading);
        until(t0, 19.0).await;
        socket.do_send(ResumeReading);
        until(t0, 60.0).await;
        let closed = |e: &SocketEventKind| matches!(e, SocketEventKind::Closed { .. });
        assert_eq!(timed.first(t0, is_idle), Some(29 * S));
        assert_eq!(timed.first(t0, closed), Some(29 * S));
    });
}

/// A byte at 1 s whose permit is kept until 35 s: the silence counts from 35 s.
#[test]
fn read_idle_does_not_count_time_with_the_read_window_full() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::keeping();
        let limits = PeerLimits {
            read_idle: Some(10 * S),
            ..PeerLimits::default()
        };
        let _socket = Socket::builder()
            .functions(mock.functions())
            .config(one_delivery_window(limits))
            .subscriber(TimedActor(timed.clone()).start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let t0 = Instant::now();
        until(t0, 1.0).await;
        mock.push_inbound(Handle(1), &b"x"[..]);
        until(t0, 35.0).await;
        timed.let_go();
        until(t0, 60.0).await;
        assert_eq!(timed.first(t0, is_idle), Some(45 * S));
    });
}

/// Frame "b" and the start of "c" in one read at 0 s; b's permit kept until 7 s: c has
/// until 17 s.
#[test]
fn frame_timeout_does_not_count_time_with_the_read_window_full() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let timed = Timed::keeping();
        let limits = PeerLimits {
            frame_timeout: Some(10 * S),
            ..PeerLimits::default()
        };
        let actor = TimedActor(timed.clone()).start();
        let _socket = Socket::builder()
            .functions(mock.functions())
            .config(one_delivery_window(limits))
            .framed(LinesCodec::new(), actor.clone().recipient())
            .subscriber(actor.recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let t0 = Instant::now();
        mock.push_inbound(Handle(1), &b"b\nc"[..]);
        until(t0, 7.0).await;
        timed.let_go();
        until(t0, 60.0).await;
        let timed_out = |e: &SocketEventKind| {
            matches!(
                e,
                SocketEventKind::DecodeFailed(DecodeError::FrameTimedOut { .. })
            )
        };
        assert_eq!(timed.first(t0, timed_out), Some(17 * S));
    });
}
