//! From the fifteenth round of the independent review: the read path. The order of
//! frames and events at the end of a stream (frames, `Eof` or the error, then
//! `Closed`), read permits dropped late, early or on other threads, pausing, the read
//! window's accounting, frame and idle limits, and sloppy or stateful decoders; over the
//! mock transport in paused time, and loopback where the kernel matters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{mock_peer, run_paused, settle};
use actix::prelude::*;
use bytes::{Buf, BytesMut};
use sockactor::messages::{
    Close, Frame, GetStats, Handle, PauseReading, ResumeReading, SocketEvent, SocketEventKind,
};
use sockactor::{
    DecodeError, MockTransport, PeerLimits, ReadLimits, ReadPermit, Socket, SocketConfig,
};
use tokio_util::codec::{Decoder, LengthDelimitedCodec, LinesCodec};

/// What the logging actor saw, frames and events in one mailbox (so in order).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Frame(Vec<u8>),
    Received(Vec<u8>),
    Eof,
    DecodeFailed(String),
    ReadFailed,
    Closed,
    Other(String),
}

#[derive(Clone, Default)]
struct Log {
    seen: Arc<Mutex<Vec<Seen>>>,
    keep: Arc<AtomicBool>,
    permits: Arc<Mutex<Vec<ReadPermit>>>,
}

impl Log {
    fn start(&self) -> Addr<LogActor> {
        LogActor(self.clone()).start()
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn keep(&self, keep: bool) {
        self.keep.store(keep, Ordering::SeqCst);
    }
    fn drop_permits(&self) {
        let permits = std::mem::take(&mut *self.permits.lock().unwrap());
        drop(permits);
    }
    fn take_permits(&self) -> Vec<ReadPermit> {
        std::mem::take(&mut *self.permits.lock().unwrap())
    }
    fn frames(&self) -> Vec<Vec<u8>> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Frame(f) => Some(f),
                _ => None,
            })
            .collect()
    }
    fn received(&self) -> Vec<u8> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Received(f) => Some(f),
                _ => None,
            })
            .flatten()
            .collect()
    }
    fn decode_failures(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::DecodeFailed(e) => Some(e),
                _ => None,
            })
            .collect()
    }
    /// Panics unless `Closed` was seen, once, as the last thing.
    fn assert_closed_last(&self) {
        let seen = self.seen();
        let closed = seen.iter().filter(|s| **s == Seen::Closed).count();
        assert_eq!(closed, 1, "one Closed: {seen:?}");
        assert_eq!(
            seen.last(),
            Some(&Seen::Closed),
            "Closed is the last event: {seen:?}"
        );
    }
}

struct LogActor(Log);

impl Actor for LogActor {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for LogActor {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        let seen = match &msg.kind {
            SocketEventKind::Received(b) => Seen::Received(b.to_vec()),
            SocketEventKind::Eof => Seen::Eof,
            SocketEventKind::DecodeFailed(e) => Seen::DecodeFailed(format!("{e:?}")),
            SocketEventKind::ReadFailed(_) => Seen::ReadFailed,
            SocketEventKind::Closed { .. } => Seen::Closed,
            other => Seen::Other(format!("{other:?}")),
        };
        self.0.seen.lock().unwrap().push(seen);
        if self.0.keep.load(Ordering::SeqCst) {
            if let Some(p) = msg.permit {
                self.0.permits.lock().unwrap().push(p);
            }
        }
    }
}

/// Answered after everything before it in the log's mailbox.
struct LogSync;

impl Message for LogSync {
    type Result = ();
}

impl Handler<LogSync> for LogActor {
    type Result = ();
    fn handle(&mut self, _: LogSync, _: &mut Context<Self>) {}
}

impl<T: AsRef<[u8]> + 'static> Handler<Frame<T>> for LogActor {
    type Result = ();
    fn handle(&mut self, msg: Frame<T>, _: &mut Context<Self>) {
        self.0
            .seen
            .lock()
            .unwrap()
            .push(Seen::Frame(msg.frame.as_ref().to_vec()));
        if self.0.keep.load(Ordering::SeqCst) {
            self.0.permits.lock().unwrap().push(msg.permit);
        }
    }
}

fn window(deliveries: u32, bytes: usize) -> SocketConfig {
    SocketConfig {
        read_limits: ReadLimits {
            max_deliveries: deliveries,
            max_bytes: bytes,
        },
        ..SocketConfig::default()
    }
}

/// A length-delimited frame (4-byte big-endian length, then the payload).
fn ld(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// A line decoder that skips blank lines (keepalives) without making a frame of them:
/// it consumes a leading `\n` and answers "no frame yet", as many line protocols'
/// decoders do.
#[derive(Default)]
struct SkipBlankLines;

impl Decoder for SkipBlankLines {
    type Item = Vec<u8>;
    type Error = std::io::Error;
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<u8>>, std::io::Error> {
        // One keepalive per call, as a decoder that skips and then looks again would
        // make of input arriving a byte at a time.
        if buf.first() == Some(&b'\n') {
            buf.advance(1);
            return Ok(None);
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                let line = buf.split_to(i + 1);
                Ok(Some(line[..i].to_vec()))
            }
            None => Ok(None),
        }
    }
}

async fn framed_socket<D>(
    mock: &MockTransport,
    config: SocketConfig,
    decoder: D,
    log: &Log,
    shutdown: bool,
) -> Addr<Socket>
where
    D: Decoder + 'static,
    D::Item: AsRef<[u8]> + Send + 'static,
    D::Error: std::error::Error + Send + Sync + 'static,
{
    let actor = log.start();
    let functions = if shutdown {
        mock.functions_with_shutdown()
    } else {
        mock.functions()
    };
    Socket::builder()
        .functions(functions)
        .config(config)
        .framed(decoder, actor.clone().recipient())
        .subscriber(actor.recipient())
        .connect(mock_peer())
        .await
        .expect("connect")
}

async fn raw_socket(mock: &MockTransport, config: SocketConfig, log: &Log) -> Addr<Socket> {
    let actor = log.start();
    Socket::builder()
        .functions(mock.functions())
        .config(config)
        .subscriber(actor.recipient())
        .connect(mock_peer())
        .await
        .expect("connect")
}

// ---- event order at the end of the stream ----

/// The same with the system-like shutdown (the socket shuts its sending half first).
#[test]
fn a_bad_tail_at_an_eof_that_closes_a_socket_with_shutdown_is_reported_before_closed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let config = SocketConfig {
            close_on_eof: true,
            ..SocketConfig::default()
        };
        let _socket = framed_socket(&mock, config, LengthDelimitedCodec::new(), &log, true).await;
        settle().await;
        mock.push_inbound(Handle(1), vec![0, 0, 0, 9, b'x']);
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(log.decode_failures().len(), 1, "{:?}", log.seen());
        log.assert_closed_last();
    });
}

/// Good frames at the EOF: frames, then `Eof`, then (close_on_eof) `Closed`.
#[test]
fn frames_at_the_eof_come_before_eof_and_closed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let config = SocketConfig {
            close_on_eof: true,
            ..SocketConfig::default()
        };
        let _socket = framed_socket(&mock, config, LinesCodec::new(), &log, false).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"a\nb\nc"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        let seen = log.seen();
        assert_eq!(
            seen,
            [
                Seen::Frame(b"a".to_vec()),
                Seen::Frame(b"b".to_vec()),
                Seen::Frame(b"c".to_vec()),
                Seen::Eof,
                Seen::Closed
            ]
        );
    });
}

/// Whole frames before a read error reach the subscriber before `ReadFailed`, then
/// `Closed`; no `Eof`.
#[test]
fn frames_before_a_read_error_come_first_then_read_failed_then_closed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let _socket =
            framed_socket(&mock, window(1, usize::MAX), LinesCodec::new(), &log, false).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"a\nb\npar"[..]);
        mock.push_read_error(Handle(1), std::io::ErrorKind::ConnectionReset);
        settle().await;
        assert_eq!(
            log.seen(),
            [
                Seen::Frame(b"a".to_vec()),
                Seen::Frame(b"b".to_vec()),
                Seen::ReadFailed,
                Seen::Closed
            ]
        );
    });
}

/// A decoder error after good frames in the same read: the good frames first (held back
/// by the window until acknowledged), then one `DecodeFailed`, then `Closed`.
#[test]
fn good_frames_before_a_bad_one_in_the_same_read_come_first_even_through_a_full_window() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        log.keep(true);
        let _socket = framed_socket(
            &mock,
            window(1, usize::MAX),
            LinesCodec::new_with_max_length(8),
            &log,
            false,
        )
        .await;
        settle().await;
        mock.push_inbound(Handle(1), &b"a\nb\n0123456789abcdef\n"[..]);
        settle().await;
        assert_eq!(
            log.seen(),
            [Seen::Frame(b"a".to_vec())],
            "the window holds b"
        );
        log.keep(false);
        log.drop_permits();
        settle().await;
        let seen = log.seen();
        assert_eq!(
            seen[..2],
            [Seen::Frame(b"a".to_vec()), Seen::Frame(b"b".to_vec())]
        );
        assert!(matches!(seen[2], Seen::DecodeFailed(_)), "{seen:?}");
        log.assert_closed_last();
    });
}

/// A lingering close: what the peer sends before its EOF still reaches the subscriber,
/// then `Eof`, then `Closed`.
#[test]
fn a_lingering_raw_socket_delivers_what_comes_before_the_peers_eof_then_closes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let actor = log.start();
        let socket = Socket::builder()
            .functions(mock.functions_with_shutdown())
            .config(crate::support::lingering(Duration::from_secs(10)))
            .subscriber(actor.recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        socket.do_send(Close::Graceful);
        settle().await;
        mock.push_inbound(Handle(1), &b"late"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(
            log.seen(),
            [Seen::Received(b"late".to_vec()), Seen::Eof, Seen::Closed]
        );
        assert!(mock.is_closed(Handle(1)));
    });
}

/// A lingering framed socket gives the decoder its good tail at the EOF.
#[test]
fn a_lingering_framed_socket_delivers_its_last_frames_then_eof_then_closed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let socket = framed_socket(
            &mock,
            crate::support::lingering(Duration::from_secs(10)),
            LinesCodec::new(),
            &log,
            true,
        )
        .await;
        settle().await;
        socket.do_send(Close::Graceful);
        settle().await;
        mock.push_inbound(Handle(1), &b"x\ny"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(
            log.seen(),
            [
                Seen::Frame(b"x".to_vec()),
                Seen::Frame(b"y".to_vec()),
                Seen::Eof,
                Seen::Closed
            ]
        );
    });
}

// ---- pausing ----

/// `PauseReading`: "Data already read is still delivered." Frames already read into the
/// decoder's buffer, held back only by a full window, are data already read.
#[test]
fn frames_already_read_are_still_delivered_while_reading_is_paused() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        log.keep(true);
        let socket =
            framed_socket(&mock, window(1, usize::MAX), LinesCodec::new(), &log, false).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"a\nb\nc\n"[..]);
        settle().await;
        assert_eq!(log.frames(), [b"a".to_vec()]);
        let read = socket.send(GetStats).await.expect("stats").bytes_received;
        assert_eq!(read, 6, "all three lines were read from the transport");
        socket.send(PauseReading).await.expect("pause");
        log.keep(false);
        log.drop_permits();
        settle().await;
        assert_eq!(
            log.frames(),
            [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
            "frames already read are delivered while paused"
        );
    });
}

/// Pausing from another thread holds reading; resuming from another thread resumes it.
#[test]
fn pausing_and_resuming_from_another_thread_hold_and_free_reading() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let socket = raw_socket(&mock, SocketConfig::default(), &log).await;
        settle().await;
        let s = socket.clone();
        std::thread::spawn(move || s.do_send(PauseReading))
            .join()
            .unwrap();
        settle().await;
        mock.push_inbound(Handle(1), &b"held"[..]);
        settle().await;
        assert!(log.received().is_empty(), "paused: nothing read");
        assert_eq!(socket.send(GetStats).await.unwrap().bytes_received, 0);
        let s = socket.clone();
        std::thread::spawn(move || s.do_send(ResumeReading))
            .join()
            .unwrap();
        settle().await;
        assert_eq!(log.received(), b"held");
    });
}

// ---- permits and the window ----

/// A permit dropped on another thread reopens the window.
#[test]
fn a_permit_dropped_on_another_thread_reopens_the_window() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        log.keep(true);
        let socket = raw_socket(&mock, window(1, usize::MAX), &log).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"one"[..]);
        mock.push_inbound(Handle(1), &b"two"[..]);
        settle().await;
        assert_eq!(log.received(), b"one");
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!((stats.unacked_deliveries, stats.unacked_bytes), (1, 3));
        assert_eq!(
            stats.bytes_received, 3,
            "reading stopped while the window was full"
        );
        log.keep(false);
        let permits = log.take_permits();
        std::thread::spawn(move || drop(permits)).join().unwrap();
        settle().await;
        assert_eq!(log.received(), b"onetwo");
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!((stats.unacked_deliveries, stats.unacked_bytes), (0, 0));
        assert_eq!(stats.bytes_received, 6);
    });
}

/// The counters agree with what the subscriber holds, delivery by delivery.
#[test]
fn unacknowledged_counters_match_the_permits_held() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        log.keep(true);
        let socket = raw_socket(&mock, window(3, usize::MAX), &log).await;
        settle().await;
        for chunk in [&b"a"[..], b"bb", b"ccc", b"dddd", b"eeeee"] {
            mock.push_inbound(Handle(1), chunk);
        }
        settle().await;
        let stats = socket.send(GetStats).await.unwrap();
        let held: usize = log.permits.lock().unwrap().iter().map(|p| p.bytes()).sum();
        assert_eq!(log.received(), b"abbccc");
        assert_eq!(held, 6);
        assert_eq!((stats.unacked_deliveries, stats.unacked_bytes), (3, 6));
        assert_eq!(stats.bytes_received, 6);
        // Drop one: one more delivery.
        let first = log.permits.lock().unwrap().remove(0);
        drop(first);
        settle().await;
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(log.received(), b"abbcccdddd");
        assert_eq!((stats.unacked_deliveries, stats.unacked_bytes), (3, 9));
        log.keep(false);
        log.drop_permits();
        settle().await;
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(log.received(), b"abbcccddddeeeee");
        assert_eq!((stats.unacked_deliveries, stats.unacked_bytes), (0, 0));
        assert_eq!(stats.bytes_received, 15);
    });
}

/// `ReadLimits::max_bytes`: "On a framed socket a frame is delivered whole, so one frame
/// may overshoot it by up to its length": a single 101-byte line through a 16-byte
/// window is one delivery standing for all its stream bytes, and no more is read.
#[test]
fn a_framed_sockets_window_overshoots_max_bytes_by_one_whole_frame_at_most() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        log.keep(true);
        let config = SocketConfig {
            read_chunk: 8,
            ..window(64, 16)
        };
        let socket = framed_socket(&mock, config, LinesCodec::new(), &log, false).await;
        settle().await;
        let mut line = vec![b'x'; 100];
        line.push(b'\n');
        mock.push_inbound(Handle(1), line);
        settle().await;
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(
            (stats.unacked_deliveries, stats.unacked_bytes),
            (1, 101),
            "one whole frame past the 16-byte window"
        );
    });
}

/// After a close nothing is delivered, even when permits held across it are dropped
/// and the peer sends more; the counters come back to zero.
#[test]
fn nothing_is_delivered_after_an_abort_when_held_permits_drop() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        log.keep(true);
        let socket =
            framed_socket(&mock, window(1, usize::MAX), LinesCodec::new(), &log, false).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"a\nb\nc\n"[..]);
        settle().await;
        assert_eq!(log.frames(), [b"a".to_vec()]);
        socket.do_send(Close::Abort);
        settle().await;
        log.keep(false);
        log.drop_permits();
        mock.push_inbound(Handle(1), &b"d\n"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        log.assert_closed_last();
        assert_eq!(log.frames(), [b"a".to_vec()]);
    });
}

/// The same for raw chunks: permits held across a graceful close, dropped after it.
#[test]
fn nothing_is_delivered_after_a_graceful_close_when_held_permits_drop() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        log.keep(true);
        let socket = raw_socket(&mock, window(1, usize::MAX), &log).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"one"[..]);
        mock.push_inbound(Handle(1), &b"two"[..]);
        settle().await;
        socket.do_send(Close::Graceful);
        settle().await;
        log.keep(false);
        let permits = log.take_permits();
        std::thread::spawn(move || drop(permits)).join().unwrap();
        mock.push_inbound(Handle(1), &b"three"[..]);
        settle().await;
        log.assert_closed_last();
        assert!(log.received().starts_with(b"one"));
        assert!(!log.received().ends_with(b"three"));
    });
}

// ---- sloppy decoders ----

/// A decoder that skips keepalive lines: `PeerLimits::frame_timeout` says bytes a decoder
/// consumes without making a frame "(a length prefix, or anything it skips, which the
/// socket cannot tell apart) begin the next frame", so a keepalive a second for longer
/// than the limit is a frame timing out.
#[test]
fn keepalives_a_decoder_skips_begin_a_frame_that_times_out() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let config = SocketConfig {
            limits: PeerLimits {
                frame_timeout: Some(Duration::from_secs(5)),
                ..PeerLimits::default()
            },
            ..SocketConfig::default()
        };
        let _socket = framed_socket(&mock, config, SkipBlankLines, &log, false).await;
        settle().await;
        for _ in 0..20 {
            mock.push_inbound(Handle(1), &b"\n"[..]);
            settle().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            settle().await;
        }
        let failures = log.decode_failures();
        assert!(
            matches!(failures.as_slice(), [e] if e.starts_with("FrameTimedOut { after: 5s")),
            "{:?}",
            log.seen()
        );
        assert!(log.frames().is_empty());
    });
}

/// The same decoder against `max_frame_bytes` ("bytes the decoder consumes without
/// making a frame ... count toward the next frame"): 64 one-byte keepalives with a frame
/// limit of 16 bytes are a frame too long.
#[test]
fn keepalives_a_decoder_skips_count_against_the_next_frames_limit() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let config = SocketConfig {
            max_frame_bytes: 16,
            ..SocketConfig::default()
        };
        let _socket = framed_socket(&mock, config, SkipBlankLines, &log, false).await;
        settle().await;
        for _ in 0..64 {
            mock.push_inbound(Handle(1), &b"\n"[..]);
            settle().await;
        }
        let failures = log.decode_failures();
        assert!(
            matches!(failures.as_slice(), [e] if e.ends_with("limit: 16 }")),
            "{:?}",
            log.seen()
        );
    });
}

/// A decoder that returns a frame without consuming anything at EOF must not loop
/// forever; its frames end and `Eof` follows.
#[derive(Default)]
struct EmptyFramesAtEof {
    given: usize,
}

impl Decoder for EmptyFramesAtEof {
    type Item = Vec<u8>;
    type Error = std::io::Error;
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<u8>>, std::io::Error> {
        if buf.is_empty() {
            return Ok(None);
        }
        Ok(Some(buf.split().to_vec()))
    }
    fn decode_eof(&mut self, _buf: &mut BytesMut) -> Result<Option<Vec<u8>>, std::io::Error> {
        self.given += 1;
        Ok(Some(Vec::new()))
    }
}

#[test]
fn a_decoder_that_makes_empty_frames_forever_at_eof_still_ends() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let _socket = framed_socket(
            &mock,
            SocketConfig::default(),
            EmptyFramesAtEof::default(),
            &log,
            false,
        )
        .await;
        settle().await;
        mock.push_inbound(Handle(1), &b"abc"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        let seen = log.seen();
        assert_eq!(seen.first(), Some(&Seen::Frame(b"abc".to_vec())));
        assert_eq!(seen.last(), Some(&Seen::Eof), "{seen:?}");
        assert!(seen.len() < 10, "{seen:?}");
    });
}

/// A decoder whose `decode_eof` gives several frames from what is left: all of them,
/// in order, then `Eof`, even through a one-delivery window.
struct TailSplitter;

impl Decoder for TailSplitter {
    type Item = Vec<u8>;
    type Error = std::io::Error;
    fn decode(&mut self, _buf: &mut BytesMut) -> Result<Option<Vec<u8>>, std::io::Error> {
        Ok(None)
    }
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<u8>>, std::io::Error> {
        if buf.is_empty() {
            return Ok(None);
        }
        Ok(Some(buf.split_to(1).to_vec()))
    }
}

#[test]
fn every_frame_a_decoder_makes_at_eof_arrives_in_order_before_eof() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        log.keep(true);
        let socket = framed_socket(&mock, window(1, usize::MAX), TailSplitter, &log, false).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"xyz"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(
            log.seen(),
            [
                Seen::Frame(b"x".to_vec()),
                Seen::Frame(b"y".to_vec()),
                Seen::Frame(b"z".to_vec()),
                Seen::Eof
            ]
        );
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!((stats.unacked_deliveries, stats.unacked_bytes), (3, 3));
        log.drop_permits();
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!((stats.unacked_deliveries, stats.unacked_bytes), (0, 0));
    });
}

/// A decoder that errors after it has already returned frames from one buffer: the
/// frames go first; its error is typed (`DecodeError::Decoder`) and the socket closes.
struct FailsOnBang;

impl Decoder for FailsOnBang {
    type Item = Vec<u8>;
    type Error = std::io::Error;
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<u8>>, std::io::Error> {
        match buf.first() {
            None => Ok(None),
            Some(b'!') => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "bang")),
            Some(_) => Ok(Some(buf.split_to(1).to_vec())),
        }
    }
}

#[test]
fn a_decoder_error_after_frames_is_typed_and_comes_after_them() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let actor = log.start();
        let errors: Arc<Mutex<Vec<DecodeError>>> = Arc::default();
        let _socket = Socket::builder()
            .functions(mock.functions())
            .framed(FailsOnBang, actor.clone().recipient())
            .subscriber({
                let (r, mut rx) = crate::support::channel_subscriber();
                let errors = errors.clone();
                let log = log.clone();
                actix::spawn(async move {
                    while let Some(k) = rx.recv().await {
                        if let SocketEventKind::DecodeFailed(e) = k {
                            errors.lock().unwrap().push(e);
                        }
                    }
                    drop(log);
                });
                r
            })
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), &b"ab!cd"[..]);
        settle().await;
        assert_eq!(log.frames(), [b"a".to_vec(), b"b".to_vec()]);
        let errors = errors.lock().unwrap();
        assert_eq!(errors.len(), 1);
        assert!(
            matches!(errors[0], DecodeError::Decoder(_)),
            "{:?}",
            errors[0]
        );
        assert!(mock.is_closed(Handle(1)));
    });
}

// ---- real loopback: the in-place shutdown ----

/// Over real TCP (the shutdown of the sending half is in place) the EOF that closes the
/// socket with a bad tail: `DecodeFailed`, then `Closed`, last.
#[actix::test]
async fn over_loopback_a_bad_tail_at_an_eof_that_closes_the_socket_is_reported_before_closed() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut bytes = ld(b"hi");
        bytes.extend_from_slice(&[0, 0, 0, 9, b'x']);
        stream.write_all(&bytes).await.unwrap();
        stream.shutdown().await.unwrap();
        // Hold the connection until the socket is done with it.
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink).await;
    });
    let log = Log::default();
    let actor = log.start();
    let _socket = Socket::builder()
        .config(SocketConfig {
            close_on_eof: true,
            ..SocketConfig::default()
        })
        .framed(LengthDelimitedCodec::new(), actor.clone().recipient())
        .subscriber(actor.clone().recipient())
        .connect(addr)
        .await
        .expect("connect");
    tokio::time::timeout(Duration::from_secs(10), async {
        while !log.seen().contains(&Seen::Closed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("closed within 10 s");
    actor.send(LogSync).await.unwrap();
    settle().await;
    actor.send(LogSync).await.unwrap();
    assert_eq!(log.frames(), [b"hi".to_vec()]);
    assert_eq!(log.decode_failures().len(), 1, "{:?}", log.seen());
    log.assert_closed_last();
    peer.await.unwrap();
}

// ---- FrameStream backpressure ----

/// "Each frame's place in the read window is given back when the stream yields it, so a
/// slow consumer holds the socket's reading, not its memory."
#[test]
fn a_frame_stream_nobody_polls_holds_reading_to_the_window() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let registry = sockactor::Registry::new();
        let (_tx, mut rx) = Socket::builder()
            .functions(mock.functions())
            .config(window(2, usize::MAX))
            .registry(&registry)
            .connect_framed(mock_peer(), LinesCodec::new())
            .await
            .expect("connect");
        settle().await;
        for i in 0..10 {
            mock.push_inbound(Handle(1), format!("line{i}\n").into_bytes());
        }
        mock.push_eof(Handle(1));
        settle().await;
        let socket = registry.iter()[0].addr().expect("alive");
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(stats.unacked_deliveries, 2);
        assert!(
            stats.bytes_received <= 3 * 6,
            "read {} bytes for a window of 2 frames",
            stats.bytes_received
        );
        let mut got = Vec::new();
        while let Some(line) = rx.next().await {
            got.push(line.expect("a line"));
        }
        let want: Vec<String> = (0..10).map(|i| format!("line{i}")).collect();
        assert_eq!(got, want);
    });
}

// ---- the limits' clocks while reading is held ----

/// The frame timeout while a frame's permit is held: whole frames and a partial one sit
/// in the decoder behind a full window for 100 s; that time does not count.
#[test]
fn a_full_window_does_not_time_out_the_frames_waiting_behind_it() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        log.keep(true);
        let config = SocketConfig {
            limits: PeerLimits {
                frame_timeout: Some(Duration::from_secs(5)),
                ..PeerLimits::default()
            },
            ..window(1, usize::MAX)
        };
        let _socket = framed_socket(&mock, config, LinesCodec::new(), &log, false).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"a\nb\npar"[..]);
        settle().await;
        tokio::time::sleep(Duration::from_secs(100)).await;
        settle().await;
        assert_eq!(log.seen(), [Seen::Frame(b"a".to_vec())]);
        log.keep(false);
        log.drop_permits();
        settle().await;
        assert_eq!(
            log.seen(),
            [Seen::Frame(b"a".to_vec()), Seen::Frame(b"b".to_vec())],
            "b delivered, the partial line not timed out yet"
        );
        mock.push_inbound(Handle(1), &b"t\n"[..]);
        settle().await;
        assert_eq!(log.frames().last(), Some(&b"part".to_vec()));
        assert!(log.decode_failures().is_empty());
    });
}

/// The frame timeout while reading is paused with half a frame buffered.
#[test]
fn a_pause_does_not_time_out_the_frame_in_the_making() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let config = SocketConfig {
            limits: PeerLimits {
                frame_timeout: Some(Duration::from_secs(5)),
                ..PeerLimits::default()
            },
            ..SocketConfig::default()
        };
        let socket = framed_socket(&mock, config, LinesCodec::new(), &log, false).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"par"[..]);
        settle().await;
        socket.send(PauseReading).await.unwrap();
        tokio::time::sleep(Duration::from_secs(100)).await;
        settle().await;
        socket.send(ResumeReading).await.unwrap();
        settle().await;
        mock.push_inbound(Handle(1), &b"t\n"[..]);
        settle().await;
        assert!(log.decode_failures().is_empty(), "{:?}", log.seen());
        assert_eq!(log.frames(), [b"part".to_vec()]);
    });
}

/// `read_idle`: "Time when the socket is not reading (... after the peer's EOF) does not
/// count": a half-open socket is not idle for reading.
#[test]
fn a_half_open_socket_hears_no_read_idle_notice_after_the_eof() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let config = SocketConfig {
            limits: PeerLimits {
                read_idle: Some(Duration::from_secs(5)),
                ..PeerLimits::default()
            },
            ..SocketConfig::default()
        };
        let socket = raw_socket(&mock, config, &log).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"x"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle().await;
        assert_eq!(log.seen(), [Seen::Received(b"x".to_vec()), Seen::Eof]);
        assert!(
            socket
                .send(sockactor::messages::GetInfo)
                .await
                .unwrap()
                .open
        );
    });
}

/// A permit dropped on another thread after its socket's actor is gone (the window was
/// full, so the socket asked to be woken): nothing panics.
#[test]
fn a_permit_outliving_its_socket_drops_quietly() {
    let permits = run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        log.keep(true);
        let socket = raw_socket(&mock, window(1, usize::MAX), &log).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"one"[..]);
        mock.push_inbound(Handle(1), &b"two"[..]);
        settle().await;
        socket.do_send(Close::Abort);
        drop(socket);
        settle().await;
        log.assert_closed_last();
        log.take_permits()
    });
    assert_eq!(permits.len(), 1);
    let panics = crate::support::panics_on_this_thread_during(|| {
        std::thread::spawn(move || drop(permits)).join().unwrap();
    });
    assert_eq!(panics, 0);
}

// ---- a stopped frame recipient, the events subscriber alive ----

/// A frame recipient that stops when told to.
struct StoppingFrames;

impl Actor for StoppingFrames {
    type Context = Context<Self>;
}

struct StopNow;

impl Message for StopNow {
    type Result = ();
}

impl Handler<StopNow> for StoppingFrames {
    type Result = ();
    fn handle(&mut self, _: StopNow, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Frame<String>> for StoppingFrames {
    type Result = ();
    fn handle(&mut self, _: Frame<String>, _: &mut Context<Self>) {}
}

/// The frames go to one actor, the events to another. The frame actor stops between
/// frames; then the peer shuts its sending half. `SocketBuilder::framed`: "once `frames`
/// has stopped, reading stops for good ... the events subscriber hears nothing more from
/// the peer, not even its EOF".
#[test]
fn after_the_frame_recipient_stopped_the_events_subscriber_hears_nothing_more() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let events = log.start();
        let frames = StoppingFrames.start();
        let _socket = Socket::builder()
            .functions(mock.functions())
            .framed(LinesCodec::new(), frames.clone().recipient())
            .subscriber(events.recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), &b"a\n"[..]);
        settle().await;
        frames.send(StopNow).await.unwrap();
        settle().await;
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(log.seen(), [], "reading stopped with the frame recipient");
    });
}

/// The same with `close_on_eof`: reading stopped, so the EOF is never read and the
/// socket stays open (writing goes on).
#[test]
fn with_close_on_eof_a_socket_whose_frame_recipient_stopped_reads_no_eof_and_stays_open() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let events = log.start();
        let frames = StoppingFrames.start();
        let _socket = Socket::builder()
            .functions(mock.functions())
            .config(SocketConfig {
                close_on_eof: true,
                ..SocketConfig::default()
            })
            .framed(LinesCodec::new(), frames.clone().recipient())
            .subscriber(events.recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        frames.send(StopNow).await.unwrap();
        settle().await;
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(log.seen(), []);
    });
}

// ---- counters against what was delivered ----

/// Every stream byte a clean framed stream brought is in exactly one frame's permit:
/// the permits held add up to `bytes_received`, and so does `unacked_bytes`.
#[test]
fn frame_permits_add_up_to_the_bytes_received() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        log.keep(true);
        let config = SocketConfig {
            read_chunk: 3,
            ..SocketConfig::default()
        };
        let socket = framed_socket(&mock, config, LinesCodec::new(), &log, false).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"a\r\nbb\n\nccc"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(
            log.frames(),
            [b"a".to_vec(), b"bb".to_vec(), b"".to_vec(), b"ccc".to_vec()]
        );
        let held: Vec<usize> = log
            .permits
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.bytes())
            .collect();
        assert_eq!(held, [3, 3, 1, 3]);
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(stats.bytes_received, 10);
        assert_eq!((stats.unacked_deliveries, stats.unacked_bytes), (4, 10));
        log.drop_permits();
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!((stats.unacked_deliveries, stats.unacked_bytes), (0, 0));
    });
}

/// The frame-limit error names the setting (README: "whose message names the
/// setting").
#[test]
fn the_frame_limit_error_names_max_frame_bytes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let actor = log.start();
        let (events, mut rx) = crate::support::channel_subscriber();
        let _socket = Socket::builder()
            .functions(mock.functions())
            .config(SocketConfig {
                max_frame_bytes: 8,
                ..SocketConfig::default()
            })
            .framed(LinesCodec::new(), actor.recipient())
            .subscriber(events)
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), &b"0123456789\n"[..]);
        settle().await;
        let mut found = None;
        while let Ok(k) = rx.try_recv() {
            if let SocketEventKind::DecodeFailed(e) = k {
                found = Some(e);
            }
        }
        let e = found.expect("DecodeFailed");
        assert!(
            matches!(e, DecodeError::FrameTooLong { limit: 8, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("max_frame_bytes"), "{e}");
    });
}

/// `close_on_decode_error: false` with a frame timeout: one `DecodeFailed`, however long
/// the subscriber takes to decide; no frame after it, even a whole one already buffered.
#[test]
fn without_close_on_decode_error_a_frame_timeout_is_reported_once_and_nothing_follows() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let config = SocketConfig {
            close_on_decode_error: false,
            limits: PeerLimits {
                frame_timeout: Some(Duration::from_secs(5)),
                ..PeerLimits::default()
            },
            ..SocketConfig::default()
        };
        let socket = framed_socket(&mock, config, LinesCodec::new(), &log, false).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"par"[..]);
        settle().await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"t\nmore\n"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle().await;
        assert_eq!(log.decode_failures().len(), 1, "{:?}", log.seen());
        assert!(log.frames().is_empty(), "{:?}", log.seen());
        assert!(
            !log.seen().contains(&Seen::Closed),
            "the subscriber decides"
        );
        socket.do_send(Close::Graceful);
        settle().await;
        log.assert_closed_last();
    });
}

/// A decoder error with whole lines behind it in the same buffer: nothing after the
/// error.
#[test]
fn no_frame_follows_a_decode_error_even_when_whole_ones_are_buffered_behind_it() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let config = SocketConfig {
            close_on_decode_error: false,
            ..SocketConfig::default()
        };
        let socket = framed_socket(
            &mock,
            config,
            LinesCodec::new_with_max_length(4),
            &log,
            false,
        )
        .await;
        settle().await;
        mock.push_inbound(Handle(1), &b"ok\ntoolong\nafter\n"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        let seen = log.seen();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0], Seen::Frame(b"ok".to_vec()));
        assert!(matches!(seen[1], Seen::DecodeFailed(_)), "{seen:?}");
        socket.do_send(Close::Graceful);
        settle().await;
        log.assert_closed_last();
    });
}

/// `read_idle`: time when the socket is not reading does not count. After a decode
/// error (with `close_on_decode_error: false`) reading has stopped for good.
#[test]
fn no_read_idle_notice_once_a_decode_error_stopped_reading() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let config = SocketConfig {
            close_on_decode_error: false,
            limits: PeerLimits {
                read_idle: Some(Duration::from_secs(5)),
                ..PeerLimits::default()
            },
            ..SocketConfig::default()
        };
        let _socket = framed_socket(
            &mock,
            config,
            LinesCodec::new_with_max_length(4),
            &log,
            false,
        )
        .await;
        settle().await;
        mock.push_inbound(Handle(1), &b"toolong\n"[..]);
        settle().await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle().await;
        let seen = log.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(matches!(seen[0], Seen::DecodeFailed(_)), "{seen:?}");
    });
}

/// Over real TCP a framed socket whose frame recipient holds one frame (window of one)
/// stops reading: what it read stays within one read, and the flooding peer is slowed
/// (its 64 MiB never all leave).
#[actix::test]
async fn over_loopback_a_held_frame_stops_reading_and_slows_a_flooding_peer() {
    use std::sync::atomic::AtomicUsize;
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let progress = sent.clone();
    let peer = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut line = vec![b'x'; 99];
        line.push(b'\n');
        let block: Vec<u8> = line.repeat(655); // 65,500 bytes of whole lines
        for _ in 0..1024 {
            if stream.write_all(&block).await.is_err() {
                return;
            }
            progress.fetch_add(block.len(), Ordering::SeqCst);
        }
    });
    let log = Log::default();
    log.keep(true);
    let socket = Socket::builder()
        .config(window(1, usize::MAX))
        .framed(LinesCodec::new(), log.start().recipient())
        .connect(addr)
        .await
        .expect("connect");
    tokio::time::timeout(Duration::from_secs(10), async {
        while log.frames().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a frame within 10 s");
    // Give the peer time to fill every buffer between us (the bound must hold however
    // long this is).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = socket.send(GetStats).await.unwrap();
    assert_eq!(log.frames().len(), 1);
    assert!(
        stats.bytes_received <= 64 * 1024 + 100,
        "read {} bytes behind one held frame",
        stats.bytes_received
    );
    assert!(
        sent.load(Ordering::SeqCst) < 64 * 1024 * 1024,
        "the peer was slowed"
    );
    socket.do_send(Close::Abort);
    peer.abort();
}
