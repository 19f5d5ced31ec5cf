//! From the seventh round of the independent review: the read path (deframing at every
//! read boundary, read windows and permits, pause/resume, EOF), byte layers (a user
//! layer, deflate, TLS) over a scripted transport, and the `FramedWriter` sink under
//! cancellation.
#![allow(dead_code)]

use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{mock_peer, run_paused, settle};
use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use sockactor::filters::{Compress, CompressError, Decoded, Layer, Tls};
use sockactor::messages::{
    Close, Frame, GetStats, GetWriter, Handle, PauseReading, ResumeReading, SocketEvent,
    SocketEventKind, Write,
};
use sockactor::{
    DecodeError, FrameError, FramedWriteError, MockTransport, ReadLimits, ReadPermit, SendStep,
    Socket, SocketConfig, SocketFunctions, TransportError, WriteError,
};
use tokio_util::codec::{LengthDelimitedCodec, LinesCodec};

// ---------------------------------------------------------------- a recorder

#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Frame(Vec<u8>, usize),
    Data(Vec<u8>, usize),
    Eof,
    DecodeFailed(String),
    TooLong { buffered: usize, limit: usize },
    ReadFailed(String),
    Closed(Option<String>),
    Other(String),
}

#[derive(Clone, Default)]
struct Log {
    entries: Arc<Mutex<Vec<Entry>>>,
    keep: Arc<Mutex<bool>>,
    permits: Arc<Mutex<Vec<ReadPermit>>>,
    read_errors: Arc<Mutex<Vec<TransportError>>>,
}

impl Log {
    fn keeping() -> Self {
        let log = Log::default();
        *log.keep.lock().unwrap() = true;
        log
    }
    fn start(&self) -> Addr<LogActor> {
        LogActor(self.clone()).start()
    }
    fn entries(&self) -> Vec<Entry> {
        self.entries.lock().unwrap().clone()
    }
    fn frames(&self) -> Vec<Vec<u8>> {
        self.entries()
            .into_iter()
            .filter_map(|e| match e {
                Entry::Frame(f, _) => Some(f),
                _ => None,
            })
            .collect()
    }
    fn frame_permits(&self) -> Vec<usize> {
        self.entries()
            .into_iter()
            .filter_map(|e| match e {
                Entry::Frame(_, n) => Some(n),
                _ => None,
            })
            .collect()
    }
    fn data(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in self.entries() {
            if let Entry::Data(d, _) = e {
                out.extend_from_slice(&d);
            }
        }
        out
    }
    fn deliveries(&self) -> usize {
        self.entries()
            .iter()
            .filter(|e| matches!(e, Entry::Data(..) | Entry::Frame(..)))
            .count()
    }
    fn has(&self, pred: impl Fn(&Entry) -> bool) -> bool {
        self.entries().iter().any(pred)
    }
    fn held(&self) -> usize {
        self.permits.lock().unwrap().len()
    }
    fn drop_permit(&self, at: usize) -> ReadPermit {
        self.permits.lock().unwrap().remove(at)
    }
    fn stop_keeping(&self) {
        *self.keep.lock().unwrap() = false;
    }
    fn push(&self, e: Entry, permit: Option<ReadPermit>) {
        self.entries.lock().unwrap().push(e);
        if let Some(p) = permit {
            if *self.keep.lock().unwrap() {
                self.permits.lock().unwrap().push(p);
            }
        }
    }
}

struct LogActor(Log);

impl Actor for LogActor {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for LogActor {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        let entry = match &msg.kind {
            SocketEventKind::Received(b) => {
                Entry::Data(b.to_vec(), msg.permit.as_ref().map_or(0, |p| p.bytes()))
            }
            SocketEventKind::Eof => Entry::Eof,
            SocketEventKind::DecodeFailed(DecodeError::FrameTooLong { buffered, limit }) => {
                Entry::TooLong {
                    buffered: *buffered,
                    limit: *limit,
                }
            }
            SocketEventKind::DecodeFailed(e) => Entry::DecodeFailed(format!("{e:?}")),
            SocketEventKind::ReadFailed(e) => {
                self.0.read_errors.lock().unwrap().push(e.clone());
                Entry::ReadFailed(format!("{e:?}"))
            }
            SocketEventKind::Closed { cause } => {
                Entry::Closed(cause.as_ref().map(|c| format!("{c:?}")))
            }
            other => Entry::Other(format!("{other:?}")),
        };
        self.0.push(entry, msg.permit);
    }
}

impl Handler<Frame<String>> for LogActor {
    type Result = ();
    fn handle(&mut self, msg: Frame<String>, _: &mut Context<Self>) {
        let n = msg.permit.bytes();
        self.0
            .push(Entry::Frame(msg.frame.into_bytes(), n), Some(msg.permit));
    }
}

impl Handler<Frame<BytesMut>> for LogActor {
    type Result = ();
    fn handle(&mut self, msg: Frame<BytesMut>, _: &mut Context<Self>) {
        let n = msg.permit.bytes();
        self.0
            .push(Entry::Frame(msg.frame.to_vec(), n), Some(msg.permit));
    }
}

fn cfg(read_chunk: usize, limits: ReadLimits, max_frame: usize) -> SocketConfig {
    SocketConfig {
        read_chunk,
        read_limits: limits,
        max_frame_bytes: max_frame,
        ..SocketConfig::default()
    }
}

fn deliveries(n: u32) -> ReadLimits {
    ReadLimits {
        max_deliveries: n,
        max_bytes: usize::MAX,
    }
}

async fn lines_socket(mock: &MockTransport, log: &Log, config: SocketConfig) -> Addr<Socket> {
    let actor = log.start();
    Socket::builder()
        .functions(mock.functions())
        .config(config)
        .subscriber(actor.clone().recipient())
        .framed(LinesCodec::new(), actor.recipient())
        .connect(mock_peer())
        .await
        .expect("connect")
}

async fn delimited_socket(mock: &MockTransport, log: &Log, config: SocketConfig) -> Addr<Socket> {
    let actor = log.start();
    Socket::builder()
        .functions(mock.functions())
        .config(config)
        .subscriber(actor.clone().recipient())
        .framed(LengthDelimitedCodec::new(), actor.recipient())
        .connect(mock_peer())
        .await
        .expect("connect")
}

async fn raw_socket(mock: &MockTransport, log: &Log, config: SocketConfig) -> Addr<Socket> {
    Socket::builder()
        .functions(mock.functions())
        .config(config)
        .subscriber(log.start().recipient())
        .connect(mock_peer())
        .await
        .expect("connect")
}

fn delimited(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

const LIMIT: usize = 16;

/// Lines, the last exactly `LIMIT` stream bytes long (with its "\n").
fn line_stream() -> (Vec<u8>, Vec<&'static [u8]>, Vec<usize>) {
    let stream = b"a\nhello world\r\n\n0123456789abcde\nxy\n".to_vec();
    let frames: Vec<&[u8]> = vec![b"a", b"hello world", b"", b"0123456789abcde", b"xy"];
    let sizes = vec![2, 13, 1, 16, 3];
    (stream, frames, sizes)
}

// ---------------------------------------------------------------- 1. deframing

#[test]
fn lines_split_at_every_read_boundary_arrive_whole_with_a_frame_exactly_at_the_limit() {
    run_paused(|| async {
        let (stream, frames, sizes) = line_stream();
        // One byte per read: every boundary at once.
        {
            let mock = MockTransport::start();
            let log = Log::default();
            let _s = lines_socket(&mock, &log, cfg(4096, ReadLimits::default(), LIMIT)).await;
            settle().await;
            for b in &stream {
                mock.push_inbound(Handle(1), vec![*b]);
                settle().await;
            }
            assert_eq!(log.frames(), frames, "1-byte reads");
            assert_eq!(log.frame_permits(), sizes);
            assert!(!log.has(|e| matches!(e, Entry::TooLong { .. } | Entry::DecodeFailed(_))));
        }
        // Two reads, split at every point.
        for split in 1..stream.len() {
            let mock = MockTransport::start();
            let log = Log::default();
            let _s = lines_socket(&mock, &log, cfg(4096, ReadLimits::default(), LIMIT)).await;
            settle().await;
            mock.push_inbound(Handle(1), stream[..split].to_vec());
            settle().await;
            mock.push_inbound(Handle(1), stream[split..].to_vec());
            settle().await;
            assert_eq!(log.frames(), frames, "split at {split}");
            assert_eq!(log.frame_permits(), sizes, "split at {split}");
        }
        // A small read_chunk splits reads too.
        for chunk in 1..6 {
            let mock = MockTransport::start();
            let log = Log::default();
            let _s = lines_socket(&mock, &log, cfg(chunk, ReadLimits::default(), LIMIT)).await;
            settle().await;
            mock.push_inbound(Handle(1), stream.clone());
            settle().await;
            assert_eq!(log.frames(), frames, "read_chunk {chunk}");
        }
    });
}

#[test]
fn length_delimited_frames_split_at_every_boundary_arrive_whole_one_exactly_at_the_limit() {
    run_paused(|| async {
        let payloads: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"abc".to_vec(),
            vec![b'q'; LIMIT - 4],
            b"z".to_vec(),
        ];
        let stream: Vec<u8> = payloads.iter().flat_map(|p| delimited(p)).collect();
        let sizes: Vec<usize> = payloads.iter().map(|p| p.len() + 4).collect();
        for split_a in 0..=stream.len() {
            let mock = MockTransport::start();
            let log = Log::default();
            let _s = delimited_socket(&mock, &log, cfg(4096, ReadLimits::default(), LIMIT)).await;
            settle().await;
            if split_a == 0 {
                for b in &stream {
                    mock.push_inbound(Handle(1), vec![*b]);
                    settle().await;
                }
            } else {
                mock.push_inbound(Handle(1), stream[..split_a].to_vec());
                settle().await;
                if split_a < stream.len() {
                    mock.push_inbound(Handle(1), stream[split_a..].to_vec());
                    settle().await;
                }
            }
            assert_eq!(log.frames(), payloads, "split {split_a}");
            assert_eq!(log.frame_permits(), sizes, "split {split_a}");
            assert!(
                !log.has(|e| matches!(e, Entry::TooLong { .. } | Entry::DecodeFailed(_))),
                "split {split_a}: {:?}",
                log.entries()
            );
        }
    });
}

/// Whole frames before an oversized one are all delivered (even while the window holds
/// them back), then the typed error; nothing after.
#[test]
fn frames_before_an_oversized_frame_are_delivered_first_even_through_a_full_window() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::keeping();
        let socket = lines_socket(&mock, &log, cfg(4096, deliveries(1), LIMIT)).await;
        settle().await;
        let mut bytes = b"a\nbb\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 40));
        mock.push_inbound(Handle(1), bytes);
        mock.push_inbound(Handle(1), &b"\nlater\n"[..]);
        settle().await;
        assert_eq!(log.frames(), [b"a".to_vec()], "the window holds one");
        assert!(
            !log.has(|e| matches!(e, Entry::TooLong { .. })),
            "{:?}",
            log.entries()
        );
        drop(log.drop_permit(0));
        settle().await;
        assert_eq!(log.frames(), [b"a".to_vec(), b"bb".to_vec()]);
        drop(log.drop_permit(0));
        settle().await;
        let entries = log.entries();
        let too_long = entries
            .iter()
            .position(|e| matches!(e, Entry::TooLong { limit: LIMIT, .. }))
            .unwrap_or_else(|| panic!("FrameTooLong expected: {entries:?}"));
        assert_eq!(log.frames().len(), 2, "no frame after the oversized one");
        assert!(
            entries[..too_long]
                .iter()
                .filter(|e| matches!(e, Entry::Frame(..)))
                .count()
                == 2,
            "both frames before the error"
        );
        let _ = socket;
    });
}

/// EOF with a partial frame: `LinesCodec::decode_eof` makes it a last frame, then Eof.
/// Length-delimited's `decode_eof` rejects it: the whole frames before go first, then a
/// typed decode error (no Eof).
#[test]
fn eof_with_a_partial_frame_buffered_hands_the_decoder_the_rest() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let _s = lines_socket(&mock, &log, cfg(4096, ReadLimits::default(), LIMIT)).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"one\ntw"[..]);
        mock.push_inbound(Handle(1), &b"o"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        let e = log.entries();
        assert_eq!(
            e[..3],
            [
                Entry::Frame(b"one".to_vec(), 4),
                Entry::Frame(b"two".to_vec(), 3),
                Entry::Eof
            ],
            "{e:?}"
        );

        let mock = MockTransport::start();
        let log = Log::default();
        let _s = delimited_socket(&mock, &log, cfg(4096, ReadLimits::default(), LIMIT)).await;
        settle().await;
        let mut bytes = delimited(b"whole");
        bytes.extend_from_slice(&delimited(b"partial")[..6]);
        mock.push_inbound(Handle(1), bytes);
        mock.push_eof(Handle(1));
        settle().await;
        let e = log.entries();
        assert_eq!(e[0], Entry::Frame(b"whole".to_vec(), 9), "{e:?}");
        assert!(matches!(e[1], Entry::DecodeFailed(_)), "{e:?}");
        assert!(!e.contains(&Entry::Eof), "{e:?}");
    });
}

/// A FrameStream over a length-delimited socket whose peer ends inside a frame: the whole
/// frames, then a typed error as last item, then None.
#[test]
fn a_frame_stream_ending_inside_a_frame_yields_a_typed_error_last() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (_tx, mut rx) = Socket::builder()
            .functions(mock.functions())
            .connect_framed(mock_peer(), LengthDelimitedCodec::new())
            .await
            .expect("connect");
        settle().await;
        let mut bytes = delimited(b"whole");
        bytes.extend_from_slice(&delimited(b"partial")[..6]);
        mock.push_inbound(Handle(1), bytes);
        mock.push_eof(Handle(1));
        let first = rx.next().await.expect("a frame").expect("ok");
        assert_eq!(&first[..], b"whole");
        let second = rx.next().await.expect("an error item");
        assert!(matches!(second, Err(FrameError::Decode(_))), "{second:?}");
        assert!(rx.next().await.is_none());
        assert!(rx.next().await.is_none());
    });
}

/// A FrameStream that is not polled holds the socket's reading (through the read window),
/// not its memory; polling it lets reading go on.
#[test]
fn an_unpolled_frame_stream_holds_reading_through_the_window() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let registry = sockactor::Registry::new();
        let (_tx, mut rx) = Socket::builder()
            .functions(mock.functions())
            .registry(&registry)
            .config(cfg(4096, deliveries(2), LIMIT))
            .connect_framed(mock_peer(), LinesCodec::new())
            .await
            .expect("connect");
        settle().await;
        for i in 0..10 {
            mock.push_inbound(Handle(1), format!("l{i}\n").into_bytes());
        }
        settle().await;
        let socket = registry
            .get(_tx.writer().socket())
            .expect("registered")
            .addr()
            .expect("addr");
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(stats.bytes_received, 6, "two frames of 3 bytes, then held");
        assert_eq!(stats.unacked_deliveries, 2);
        for i in 0..10 {
            let line = rx.next().await.expect("frame").expect("ok");
            assert_eq!(line, format!("l{i}"));
        }
        settle().await;
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(stats.bytes_received, 30);
        assert_eq!(stats.unacked_deliveries, 0);
    });
}

// ---------------------------------------------------------------- 1b. windows, permits

#[test]
fn permits_released_out_of_order_reopen_the_window_one_place_each() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::keeping();
        let socket = raw_socket(&mock, &log, cfg(4096, deliveries(3), LIMIT)).await;
        settle().await;
        for i in 0..8u8 {
            mock.push_inbound(Handle(1), vec![b'0' + i; (i + 1) as usize]);
        }
        settle().await;
        assert_eq!(log.deliveries(), 3, "window exactly full");
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(
            (stats.unacked_deliveries, stats.unacked_bytes),
            (3, 1 + 2 + 3)
        );
        // Drop the middle one.
        drop(log.drop_permit(1));
        settle().await;
        assert_eq!(log.deliveries(), 4);
        // Drop the newest, then the oldest.
        let n = log.held();
        drop(log.drop_permit(n - 1));
        settle().await;
        assert_eq!(log.deliveries(), 5);
        drop(log.drop_permit(0));
        settle().await;
        assert_eq!(log.deliveries(), 6);
        // Drop two at once from another thread.
        let a = log.drop_permit(0);
        let b = log.drop_permit(0);
        std::thread::spawn(move || {
            drop(b);
            drop(a);
        })
        .join()
        .unwrap();
        settle().await;
        assert_eq!(log.deliveries(), 8);
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(stats.unacked_deliveries as usize, log.held());
        let expect: Vec<u8> = (0..8u8)
            .flat_map(|i| vec![b'0' + i; (i + 1) as usize])
            .collect();
        assert_eq!(log.data(), expect);
    });
}

#[test]
fn a_byte_window_exactly_full_holds_reading_until_a_permit_goes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::keeping();
        let limits = ReadLimits {
            max_deliveries: 100,
            max_bytes: 10,
        };
        let _socket = raw_socket(&mock, &log, cfg(10, limits, LIMIT)).await;
        settle().await;
        mock.push_inbound(Handle(1), vec![1u8; 10]);
        mock.push_inbound(Handle(1), vec![2u8; 5]);
        settle().await;
        assert_eq!(log.deliveries(), 1, "10 of 10 bytes unacknowledged: full");
        drop(log.drop_permit(0));
        settle().await;
        assert_eq!(log.deliveries(), 2);
    });
}

#[test]
fn a_permit_outliving_its_socket_can_be_dropped_and_eof_waits_for_the_window() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::keeping();
        let socket = raw_socket(&mock, &log, cfg(4096, deliveries(1), LIMIT)).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"x"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(
            log.entries(),
            [Entry::Data(b"x".to_vec(), 1)],
            "EOF not read while full"
        );
        drop(log.drop_permit(0));
        settle().await;
        assert_eq!(log.entries()[1], Entry::Eof);
        // A permit held while the socket closes.
        mock.push_inbound(Handle(1), &b"y"[..]);
        let mock2 = MockTransport::start();
        let log2 = Log::keeping();
        let socket2 = raw_socket(&mock2, &log2, cfg(4096, deliveries(1), LIMIT)).await;
        settle().await;
        mock2.push_inbound(Handle(1), &b"z"[..]);
        settle().await;
        socket2.do_send(Close::Abort);
        settle().await;
        drop(socket2);
        settle().await;
        assert!(mock2.is_closed(Handle(1)));
        let p = log2.drop_permit(0);
        std::thread::spawn(move || drop(p)).join().unwrap();
        settle().await;
        let _ = socket;
    });
}

#[test]
fn eof_while_paused_waits_for_resume_and_pause_resume_are_idempotent() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let socket = raw_socket(&mock, &log, cfg(4096, ReadLimits::default(), LIMIT)).await;
        settle().await;
        socket.send(PauseReading).await.unwrap();
        socket.send(PauseReading).await.unwrap();
        mock.push_inbound(Handle(1), &b"abc"[..]);
        settle().await;
        assert!(log.entries().is_empty(), "paused: {:?}", log.entries());
        socket.send(ResumeReading).await.unwrap();
        settle().await;
        assert_eq!(log.data(), b"abc");
        socket.send(ResumeReading).await.unwrap();
        socket.send(PauseReading).await.unwrap();
        mock.push_inbound(Handle(1), &b"def"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(log.data(), b"abc", "{:?}", log.entries());
        assert!(
            !log.has(|e| *e == Entry::Eof),
            "EOF while paused is not read"
        );
        socket.send(ResumeReading).await.unwrap();
        settle().await;
        let e = log.entries();
        assert_eq!(log.data(), b"abcdef");
        assert_eq!(e.last(), Some(&Entry::Eof), "{e:?}");
        assert_eq!(e.iter().filter(|x| **x == Entry::Eof).count(), 1);
    });
}

/// Framed and paused with whole frames buffered behind a full window: the frames still go
/// out as permits are dropped (data already read), but the EOF behind them is not read
/// until resumed; then the last frames and Eof come once each.
#[test]
fn framed_pause_with_buffered_frames_and_eof_behind_them() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::keeping();
        let socket = lines_socket(&mock, &log, cfg(4096, deliveries(1), LIMIT)).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"a\nb\nc\n"[..]);
        settle().await;
        socket.send(PauseReading).await.unwrap();
        mock.push_inbound(Handle(1), &b"d\ne"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(log.frames(), [b"a".to_vec()]);
        drop(log.drop_permit(0));
        settle().await;
        drop(log.drop_permit(0));
        settle().await;
        assert_eq!(log.frames(), [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        drop(log.drop_permit(0));
        settle().await;
        assert_eq!(log.frames().len(), 3, "paused: nothing more read");
        assert!(!log.has(|e| *e == Entry::Eof));
        log.stop_keeping();
        socket.send(ResumeReading).await.unwrap();
        settle().await;
        let e = log.entries();
        assert_eq!(
            log.frames(),
            [
                b"a".to_vec(),
                b"b".to_vec(),
                b"c".to_vec(),
                b"d".to_vec(),
                b"e".to_vec()
            ],
            "{e:?}"
        );
        assert_eq!(e.iter().filter(|x| **x == Entry::Eof).count(), 1, "{e:?}");
    });
}

/// `max_frame_bytes` bounds a frame whatever the read boundaries: the same 41-byte line
/// (limit 16) is rejected when it trickles in, so it must be rejected when it arrives in
/// one read too.
#[test]
fn an_oversized_frame_is_rejected_whatever_the_read_boundaries() {
    run_paused(|| async {
        let mut line = vec![b'x'; 40];
        line.push(b'\n');
        // Trickled in: rejected.
        let mock = MockTransport::start();
        let log = Log::default();
        let _s = lines_socket(&mock, &log, cfg(4096, ReadLimits::default(), LIMIT)).await;
        settle().await;
        for chunk in line.chunks(8) {
            mock.push_inbound(Handle(1), chunk.to_vec());
            settle().await;
        }
        assert!(log.frames().is_empty(), "{:?}", log.entries());
        assert!(log.has(|e| matches!(e, Entry::TooLong { limit: LIMIT, .. })));
        // In one read: the same stream.
        let mock = MockTransport::start();
        let log = Log::default();
        let _s = lines_socket(&mock, &log, cfg(4096, ReadLimits::default(), LIMIT)).await;
        settle().await;
        mock.push_inbound(Handle(1), line.clone());
        settle().await;
        assert!(
            log.frames().is_empty(),
            "a 41-byte frame passed a 16-byte max_frame_bytes: {:?}",
            log.entries()
        );
        assert!(log.has(|e| matches!(e, Entry::TooLong { limit: LIMIT, .. })));
    });
}

// ---------------------------------------------------------------- 2. byte layers

/// XORs every byte with a running key: a toy stream cipher whose output depends on every
/// byte before it (a lost, duplicated or reordered byte garbles the rest).
#[derive(Debug, Default)]
struct Xor {
    out: u8,
    inp: u8,
}

fn xor_step(k: &mut u8, b: u8) -> u8 {
    let c = b ^ *k;
    *k = k.wrapping_mul(31).wrapping_add(b).wrapping_add(7);
    c
}

fn xor_unstep(k: &mut u8, c: u8) -> u8 {
    let b = c ^ *k;
    *k = k.wrapping_mul(31).wrapping_add(b).wrapping_add(7);
    b
}

impl Layer for Xor {
    fn name(&self) -> &'static str {
        "xor"
    }
    fn worst_case(&self, n: usize) -> usize {
        n
    }
    fn encode(&mut self, input: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<()> {
        for s in input {
            for &b in s.iter() {
                out.push(xor_step(&mut self.out, b));
            }
        }
        Ok(())
    }
    fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        max: usize,
    ) -> io::Result<Decoded> {
        let n = input.len().min(max);
        for c in input.split_to(n) {
            out.extend_from_slice(&[xor_unstep(&mut self.inp, c)]);
        }
        Ok(if input.is_empty() {
            Decoded::NeedInput
        } else {
            Decoded::More
        })
    }
}

fn unxor(bytes: &[u8]) -> Vec<u8> {
    let mut k = 0u8;
    bytes.iter().map(|&c| xor_unstep(&mut k, c)).collect()
}

fn xor_table(mock: &MockTransport) -> SocketFunctions {
    mock.functions()
        .layer(|_| Ok(Box::new(Xor::default()) as Box<dyn Layer>))
}

const SIZES: [usize; 8] = [1, 7, 300, 4096, 70_000, 3, 140_000, 513];

#[test]
fn a_user_layer_over_partial_accepts_and_would_blocks_delivers_every_byte_once_in_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let mut steps = Vec::new();
        for i in 0..200 {
            steps.push(SendStep::Accept(1 + i % 5));
            steps.push(SendStep::WouldBlock(Duration::from_millis(1)));
            steps.push(SendStep::Accept(1000 + 17 * i));
        }
        mock.script_sendv(Handle(1), steps);
        let socket = Socket::builder()
            .functions(xor_table(&mock))
            .connect(mock_peer())
            .await
            .expect("connect");
        let data = crate::support::pattern(SIZES.iter().sum::<usize>(), 7);
        let mut answers = Vec::new();
        let mut off = 0;
        for size in SIZES {
            let w = socket.send(Write::new(Bytes::copy_from_slice(&data[off..off + size])));
            answers.push((size, actix::spawn(w)));
            off += size;
        }
        for (size, a) in answers {
            let w = a.await.unwrap().unwrap().expect("written");
            assert_eq!(w.len, size);
        }
        // The outbox drains after the answers.
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        let wire = mock.written(Handle(1));
        assert_eq!(wire.len(), data.len());
        assert!(unxor(&wire) == data, "bytes lost, doubled or reordered");
    });
}

/// A layered socket whose transport fails part way: every write answered once, in
/// order; answers are truthful (Ok writes first, then at most one partial, then none);
/// the peer got a prefix of the plaintext.
#[test]
fn a_deflate_socket_whose_transport_fails_answers_every_write_once_with_how_far_it_got() {
    run_paused(|| async {
        for fail_after in [0usize, 1, 3, 10] {
            let mock = MockTransport::start();
            let mut steps = Vec::new();
            for _ in 0..fail_after {
                steps.push(SendStep::Accept(100));
                steps.push(SendStep::WouldBlock(Duration::from_millis(1)));
            }
            steps.push(SendStep::Fail(io::ErrorKind::ConnectionReset));
            mock.script_sendv(Handle(1), steps);
            let table = Compress::new()
                .level(0)
                .max_buffered(256)
                .wrap(mock.functions());
            let socket = Socket::builder()
                .functions(table)
                .connect(mock_peer())
                .await
                .expect("connect");
            let data = crate::support::pattern(20 * 150, 3);
            let mut answers = Vec::new();
            for chunk in data.chunks(150) {
                let w = socket.send(Write::new(Bytes::copy_from_slice(chunk)));
                answers.push(actix::spawn(w));
            }
            let mut results = Vec::new();
            for a in answers {
                results.push(a.await.unwrap().unwrap());
            }
            if fail_after < 3 {
                assert!(
                    results.iter().any(|r| r.is_err()),
                    "fail_after {fail_after}: {results:?}"
                );
            }
            let mut taken = 0usize;
            let mut state = 0; // 0: oks, 1: after first error
            for (i, r) in results.iter().enumerate() {
                match r {
                    Ok(w) => {
                        assert_eq!(
                            state, 0,
                            "fail_after {fail_after}: Ok after an error at {i}: {results:?}"
                        );
                        assert_eq!(w.len, 150);
                        taken += 150;
                    }
                    Err(e) => {
                        let sent = e.bytes_sent();
                        assert!(sent <= 150);
                        if state == 1 {
                            assert_eq!(sent, 0, "fail_after {fail_after}: a later write partially sent: {results:?}");
                        }
                        state = 1;
                        taken += sent;
                    }
                }
            }
            // What the peer got inflates to a prefix of the plaintext, no longer than
            // what the answers say was taken.
            let wire = mock.written(Handle(1));
            let mut inflate = flate2::Decompress::new(false);
            let mut plain = vec![0u8; data.len() + 1024];
            let _ = inflate.decompress(&wire, &mut plain, flate2::FlushDecompress::Sync);
            let got = inflate.total_out() as usize;
            assert!(
                got <= taken,
                "fail_after {fail_after}: peer got {got} > taken {taken}"
            );
            assert_eq!(&plain[..got], &data[..got], "fail_after {fail_after}");
        }
    });
}

/// Compressed bytes from one socket, fed to another one byte per read (and the writer's
/// transport taking them in dribs with would-blocks): byte-exact.
#[test]
fn deflate_round_trips_through_one_byte_reads_and_partial_accepts() {
    run_paused(|| async {
        let a = MockTransport::start();
        let mut steps = Vec::new();
        for i in 0..400 {
            steps.push(SendStep::Accept(1 + i % 9));
            if i % 3 == 0 {
                steps.push(SendStep::WouldBlock(Duration::from_millis(1)));
            }
        }
        a.script_sendv(Handle(1), steps);
        let writer = Socket::builder()
            .functions(Compress::new().level(1).wrap(a.functions()))
            .connect(mock_peer())
            .await
            .expect("connect");
        let mut data = crate::support::pattern(3000, 11);
        data.extend(std::iter::repeat_n(b'r', 5000));
        data.extend(crate::support::pattern(2000, 12));
        for chunk in data.chunks(777) {
            writer
                .send(Write::new(Bytes::copy_from_slice(chunk)))
                .await
                .unwrap()
                .expect("written");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        settle().await;
        let wire = a.written(Handle(1));
        assert!(!wire.is_empty());

        let b = MockTransport::start();
        let log = Log::default();
        let _reader = Socket::builder()
            .functions(Compress::new().wrap(b.functions()))
            .subscriber(log.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        for byte in &wire {
            b.push_inbound(Handle(1), vec![*byte]);
            settle().await;
        }
        assert!(
            log.data() == data,
            "got {} of {} bytes",
            log.data().len(),
            data.len()
        );
        assert!(
            !log.has(|e| matches!(e, Entry::ReadFailed(_))),
            "{:?}",
            log.entries().last()
        );
    });
}

/// A corrupt deflate stream after valid data, one byte per read: the plaintext before it
/// arrives, then a typed `CompressError::Corrupt`; no panic, the socket closes.
#[test]
fn a_corrupt_deflate_stream_in_one_byte_reads_is_a_typed_error_after_the_good_plaintext() {
    run_paused(|| async {
        let mut deflate = flate2::Compress::new(flate2::Compression::new(6), false);
        let mut wire = vec![0u8; 4096];
        deflate
            .compress(b"good bytes first", &mut wire, flate2::FlushCompress::Sync)
            .unwrap();
        wire.truncate(deflate.total_out() as usize);
        // A block header with the reserved type 3 (BTYPE = 11): invalid.
        wire.extend_from_slice(&[0x07, 0xff, 0xff, 0xff, 0x00, 0x12]);
        let b = MockTransport::start();
        let log = Log::default();
        let _reader = Socket::builder()
            .functions(Compress::new().wrap(b.functions()))
            .subscriber(log.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        for byte in &wire {
            b.push_inbound(Handle(1), vec![*byte]);
            settle().await;
        }
        assert_eq!(log.data(), b"good bytes first");
        let errors = log.read_errors.lock().unwrap().clone();
        assert_eq!(errors.len(), 1, "{:?}", log.entries());
        let typed = match &errors[0] {
            TransportError::Io(e) => e
                .get_ref()
                .and_then(|i| i.downcast_ref::<CompressError>())
                .cloned(),
            _ => None,
        };
        assert!(
            matches!(typed, Some(CompressError::Corrupt(_))),
            "{:?}",
            errors[0]
        );
        assert!(b.is_closed(Handle(1)));
    });
}

/// TLS records fed one byte per read: the plaintext arrives byte-exact.
#[test]
fn tls_records_in_one_byte_reads_decrypt_byte_exact() {
    run_paused(|| async {
        let pki = crate::support::tls::pki(&["localhost"]);
        let mock = MockTransport::start();
        let log = Log::default();
        let tls = Tls::client(
            crate::support::tls::client_config(pki.roots.clone()),
            "localhost",
        )
        .expect("tls client")
        .wrap(mock.functions());
        let builder = Socket::builder().subscriber(log.start().recipient());
        let (_socket, mut peer) =
            crate::support::tls::connect_to_mock_peer(&mock, builder, tls, pki.server.clone())
                .await;
        let data = crate::support::pattern(40_000, 5);
        let sealed = peer.seal(&data);
        for byte in &sealed {
            mock.push_inbound(Handle(1), vec![*byte]);
        }
        for _ in 0..50 {
            settle().await;
        }
        assert!(
            log.data() == data,
            "got {} of {}",
            log.data().len(),
            data.len()
        );
    });
}

/// TLS writes over a transport taking a few bytes per call with would-blocks: the peer
/// decrypts every byte once, in order; every write answered Ok with its length.
#[test]
fn tls_writes_over_dribbling_accepts_reach_the_peer_once_in_order() {
    run_paused(|| async {
        let pki = crate::support::tls::pki(&["localhost"]);
        let mock = MockTransport::start();
        let tls = Tls::client(
            crate::support::tls::client_config(pki.roots.clone()),
            "localhost",
        )
        .expect("tls client")
        .wrap(mock.functions());
        let (socket, mut peer) = crate::support::tls::connect_to_mock_peer(
            &mock,
            Socket::builder(),
            tls,
            pki.server.clone(),
        )
        .await;
        let mut steps = Vec::new();
        for i in 0..3000 {
            steps.push(SendStep::Accept(1 + (i * 37) % 200));
            if i % 4 == 0 {
                steps.push(SendStep::WouldBlock(Duration::from_millis(1)));
            }
        }
        mock.script_sendv(Handle(1), steps);
        let total: usize = SIZES.iter().sum();
        let data = Bytes::from(crate::support::pattern(total, 9));
        let mut answers = Vec::new();
        let mut off = 0;
        for size in SIZES {
            answers.push((
                size,
                actix::spawn(socket.send(Write::new(data.slice(off..off + size)).wait_when_full())),
            ));
            off += size;
        }
        for (size, a) in answers {
            assert_eq!(a.await.unwrap().unwrap().expect("written").len, size);
        }
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            peer.pump(&mock);
            if peer.received.len() >= total {
                break;
            }
        }
        assert!(
            peer.received == data,
            "peer got {} of {}",
            peer.received.len(),
            total
        );
    });
}

/// Garbage where a TLS record should be, one byte per read: a typed rustls error, no
/// panic, the socket closes.
#[test]
fn garbage_instead_of_tls_records_is_a_typed_tls_error() {
    run_paused(|| async {
        let pki = crate::support::tls::pki(&["localhost"]);
        let mock = MockTransport::start();
        let log = Log::default();
        let tls = Tls::client(
            crate::support::tls::client_config(pki.roots.clone()),
            "localhost",
        )
        .expect("tls client")
        .wrap(mock.functions());
        let builder = Socket::builder().subscriber(log.start().recipient());
        let (_socket, mut peer) =
            crate::support::tls::connect_to_mock_peer(&mock, builder, tls, pki.server.clone())
                .await;
        let mut sealed = peer.seal(b"fine");
        // A record with a valid header whose body is garbage (bad MAC).
        let mut bad = peer.seal(b"this will be tampered with");
        let last = bad.len() - 3;
        bad[last] ^= 0x55;
        sealed.extend_from_slice(&bad);
        for byte in &sealed {
            mock.push_inbound(Handle(1), vec![*byte]);
        }
        for _ in 0..30 {
            settle().await;
        }
        assert_eq!(log.data(), b"fine");
        let errors = log.read_errors.lock().unwrap().clone();
        assert_eq!(errors.len(), 1, "{:?}", log.entries());
        assert!(
            errors[0].tls().is_some(),
            "a rustls error inside: {:?}",
            errors[0]
        );
        assert!(mock.is_closed(Handle(1)));

        // And pure noise from the start (not even a record header).
        let mock = MockTransport::start();
        let log = Log::default();
        let tls = Tls::client(
            crate::support::tls::client_config(pki.roots.clone()),
            "localhost",
        )
        .expect("tls client")
        .wrap(mock.functions());
        let builder = Socket::builder().subscriber(log.start().recipient());
        let (_socket, _peer) =
            crate::support::tls::connect_to_mock_peer(&mock, builder, tls, pki.server.clone())
                .await;
        for byte in b"GET / HTTP/1.1\r\n\r\n" {
            mock.push_inbound(Handle(1), vec![*byte]);
        }
        for _ in 0..30 {
            settle().await;
        }
        let errors = log.read_errors.lock().unwrap().clone();
        assert_eq!(errors.len(), 1, "{:?}", log.entries());
        assert!(errors[0].tls().is_some(), "{:?}", errors[0]);
    });
}

// ---------------------------------------------------------------- 3. FramedWriter / Sink

use futures_util::SinkExt;
use sockactor::{FramedWriter, Writer};

async fn lines_writer(
    mock: &MockTransport,
    high: usize,
    low: usize,
) -> (Addr<Socket>, FramedWriter<LinesCodec>) {
    let socket = Socket::builder()
        .functions(mock.functions())
        .config(crate::support::watermarks(high, low))
        .connect(mock_peer())
        .await
        .expect("connect");
    let writer: Writer = socket.send(GetWriter).await.expect("writer");
    (socket, writer.framed(LinesCodec::new()))
}

/// `SinkExt::send` dropped while its flush waits for room, a `feed` after it, then a
/// flush: every item once, in order. Then `close` closes the socket and later items are
/// refused with a typed error.
#[test]
fn sink_futures_cancelled_while_waiting_lose_nothing_and_close_refuses_later_items() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (_socket, mut tx) = lines_writer(&mock, 64, 32).await;
        SinkExt::send(&mut tx, "a".repeat(100))
            .await
            .expect("first fits");
        settle().await;
        let t = tokio::time::timeout(
            Duration::from_millis(10),
            SinkExt::send(&mut tx, "b".to_string()),
        )
        .await;
        assert!(t.is_err(), "waits for room");
        SinkExt::feed(&mut tx, "c".to_string()).await.expect("fed");
        let t = tokio::time::timeout(Duration::from_millis(10), SinkExt::<String>::flush(&mut tx))
            .await;
        assert!(t.is_err(), "still no room");
        mock.release(Handle(1));
        SinkExt::<String>::flush(&mut tx).await.expect("flushed");
        settle().await;
        assert_eq!(
            mock.written(Handle(1)),
            format!("{}\nb\nc\n", "a".repeat(100)).as_bytes()
        );

        SinkExt::<String>::close(&mut tx).await.expect("closed");
        settle().await;
        assert!(mock.is_closed(Handle(1)), "poll_close closes the socket");
        let after = SinkExt::send(&mut tx, "d".to_string()).await;
        assert!(
            matches!(
                after,
                Err(FramedWriteError::Write(WriteError::Closed { .. }))
            ),
            "{after:?}"
        );
        let after = tx.try_send("e".to_string());
        assert!(
            matches!(after, Err(FramedWriteError::Write(_))),
            "{after:?}"
        );
        let after = tx.send("f".to_string()).await;
        assert!(
            matches!(after, Err(FramedWriteError::Write(_))),
            "{after:?}"
        );
        assert_eq!(
            mock.written(Handle(1)),
            format!("{}\nb\nc\n", "a".repeat(100)).as_bytes()
        );
    });
}

/// `FramedWriter::send` raced against a short timeout over and over (each time cancelled
/// at whatever await it reached) while the transport dribbles: every item that was polled
/// goes out exactly once, in order.
#[test]
fn framed_sends_cancelled_at_every_await_go_out_once_in_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let mut steps = Vec::new();
        for i in 0..2000 {
            steps.push(SendStep::Accept(5 + i % 11));
            steps.push(SendStep::WouldBlock(Duration::from_micros(300)));
        }
        mock.script_sendv(Handle(1), steps);
        let (_socket, mut tx) = lines_writer(&mock, 40, 20).await;
        let mut expect = String::new();
        for i in 0..300 {
            let item = format!("item-{i}");
            expect.push_str(&item);
            expect.push('\n');
            let _ = tokio::time::timeout(Duration::from_micros(100 + (i % 7) * 150), tx.send(item))
                .await;
            if i % 5 == 0 {
                let _ = tokio::time::timeout(
                    Duration::from_micros(200),
                    SinkExt::<String>::flush(&mut tx),
                )
                .await;
            }
        }
        SinkExt::<String>::flush(&mut tx).await.expect("flush");
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let got = String::from_utf8(mock.written(Handle(1))).unwrap();
        assert!(
            got == expect,
            "got {} bytes, expected {}",
            got.len(),
            expect.len()
        );
    });
}

/// A Sink flush cancelled while waiting, then the writer dropped: what was fed still goes
/// out, in order, after what was written before.
#[test]
fn a_sink_dropped_after_a_cancelled_flush_still_sends_everything_in_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (socket, mut tx) = lines_writer(&mock, 64, 32).await;
        SinkExt::send(&mut tx, "a".repeat(100))
            .await
            .expect("first fits");
        for i in 0..5 {
            SinkExt::feed(&mut tx, format!("fed{i}"))
                .await
                .expect("fed");
        }
        let t = tokio::time::timeout(Duration::from_millis(10), SinkExt::<String>::flush(&mut tx))
            .await;
        assert!(t.is_err());
        SinkExt::feed(&mut tx, "tail".to_string())
            .await
            .expect("fed");
        drop(tx);
        socket.do_send(Write::new(&b"raw\n"[..]).wait_when_full());
        mock.release(Handle(1));
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            String::from_utf8(mock.written(Handle(1))).unwrap(),
            format!(
                "{}\nfed0\nfed1\nfed2\nfed3\nfed4\ntail\nraw\n",
                "a".repeat(100)
            )
        );
    });
}

// ---------------------------------------------------------------- 2b. layers + window + EOF

fn deflate_raw(data: &[u8]) -> Vec<u8> {
    let mut deflate = flate2::Compress::new(flate2::Compression::new(6), false);
    let mut wire = vec![0u8; data.len() + 1024];
    deflate
        .compress(data, &mut wire, flate2::FlushCompress::Sync)
        .unwrap();
    wire.truncate(deflate.total_out() as usize);
    wire
}

/// A deflate socket returning at most 10 plaintext bytes per read, window of one delivery
/// kept: the peer's 100 bytes then EOF come as ten deliveries, one per dropped permit,
/// and Eof only after the last of them.
#[test]
fn a_layers_held_plaintext_before_eof_goes_out_through_the_window_then_eof() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::keeping();
        let data = crate::support::pattern(100, 21);
        let _socket = Socket::builder()
            .functions(
                Compress::new()
                    .max_output_per_call(10)
                    .wrap(mock.functions()),
            )
            .config(cfg(4096, deliveries(1), LIMIT))
            .subscriber(log.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), deflate_raw(&data));
        mock.push_eof(Handle(1));
        settle().await;
        for i in 1..=10 {
            assert_eq!(log.deliveries(), i, "{:?}", log.entries());
            assert!(
                !log.has(|e| *e == Entry::Eof),
                "Eof before the plaintext at {i}"
            );
            drop(log.drop_permit(0));
            settle().await;
        }
        assert_eq!(log.data(), data);
        assert!(log.has(|e| *e == Entry::Eof), "{:?}", log.entries());
        assert!(
            !log.has(|e| matches!(e, Entry::ReadFailed(_))),
            "{:?}",
            log.entries()
        );
    });
}

/// Lines over deflate, the compressed bytes one per read, the last line unterminated at
/// EOF: whole lines in order, the last one at EOF, then Eof.
#[test]
fn framed_lines_over_deflate_in_one_byte_reads_with_a_partial_line_at_eof() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let actor = log.start();
        let _socket = Socket::builder()
            .functions(
                Compress::new()
                    .max_output_per_call(7)
                    .wrap(mock.functions()),
            )
            .config(cfg(3, ReadLimits::default(), 64))
            .subscriber(actor.clone().recipient())
            .framed(LinesCodec::new(), actor.recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        let text = b"first line\nsecond\n\nthird line is a bit longer\nunterminated";
        for byte in deflate_raw(text) {
            mock.push_inbound(Handle(1), vec![byte]);
            settle().await;
        }
        mock.push_eof(Handle(1));
        settle().await;
        let e = log.entries();
        assert_eq!(
            log.frames(),
            [
                b"first line".to_vec(),
                b"second".to_vec(),
                b"".to_vec(),
                b"third line is a bit longer".to_vec(),
                b"unterminated".to_vec()
            ],
            "{e:?}"
        );
        assert_eq!(e.iter().filter(|x| **x == Entry::Eof).count(), 1, "{e:?}");
    });
}

/// TLS: plaintext then the peer's close_notify, while the window is full: all plaintext,
/// then one clean Eof (no read error).
#[test]
fn tls_close_notify_behind_a_full_window_gives_all_plaintext_then_a_clean_eof() {
    run_paused(|| async {
        let pki = crate::support::tls::pki(&["localhost"]);
        let mock = MockTransport::start();
        let log = Log::keeping();
        let tls = Tls::client(
            crate::support::tls::client_config(pki.roots.clone()),
            "localhost",
        )
        .expect("tls client")
        .wrap(mock.functions());
        let builder = Socket::builder()
            .config(cfg(4096, deliveries(1), LIMIT))
            .subscriber(log.start().recipient());
        let (_socket, mut peer) =
            crate::support::tls::connect_to_mock_peer(&mock, builder, tls, pki.server.clone())
                .await;
        let data = crate::support::pattern(30_000, 5);
        peer.send(&mock, &data);
        peer.close_notify(&mock);
        mock.push_eof(Handle(1));
        for _ in 0..200 {
            settle().await;
            if log.held() > 0 {
                drop(log.drop_permit(0));
            }
            if log.has(|e| matches!(e, Entry::Eof | Entry::ReadFailed(_))) {
                break;
            }
        }
        settle().await;
        assert!(
            log.data() == data,
            "got {} of {}",
            log.data().len(),
            data.len()
        );
        let e = log.entries();
        assert_eq!(
            e.iter().filter(|x| **x == Entry::Eof).count(),
            1,
            "{:?}",
            e.last()
        );
        assert!(
            !log.has(|e| matches!(e, Entry::ReadFailed(_))),
            "{:?}",
            e.last()
        );
    });
}

/// `SinkExt::feed` of big items (the 64 KiB buffer fills, `poll_ready` waits for room),
/// each raced against a short timeout and retried when it timed out (it was then never
/// started): every item once, in order.
#[test]
fn sink_poll_ready_cancelled_while_the_buffer_is_full_loses_and_doubles_nothing() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let mut steps = Vec::new();
        for i in 0..5000 {
            steps.push(SendStep::Accept(2000 + (i * 311) % 9000));
            steps.push(SendStep::WouldBlock(Duration::from_micros(400)));
        }
        mock.script_sendv(Handle(1), steps);
        let (_socket, mut tx) = lines_writer(&mock, 16 * 1024, 8 * 1024).await;
        let mut expect = Vec::new();
        let mut timeouts = 0;
        for i in 0..60usize {
            let item = format!("{i:04}-{}", "z".repeat(4000 + i * 37));
            expect.extend_from_slice(item.as_bytes());
            expect.push(b'\n');
            loop {
                match tokio::time::timeout(
                    Duration::from_micros(150),
                    SinkExt::feed(&mut tx, item.clone()),
                )
                .await
                {
                    Ok(r) => {
                        r.expect("fed");
                        break;
                    }
                    Err(_) => timeouts += 1,
                }
            }
        }
        assert!(
            timeouts > 0,
            "poll_ready never waited: the test did not test anything"
        );
        SinkExt::<String>::flush(&mut tx).await.expect("flush");
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let got = mock.written(Handle(1));
        assert!(
            got == expect,
            "got {} bytes, expected {}",
            got.len(),
            expect.len()
        );
    });
}

/// Permits dropped on another OS thread, in bursts and out of order, while the socket
/// reads a window of 2 and is paused and resumed: every chunk delivered once, in order.
#[test]
fn permits_dropped_on_another_thread_never_stall_reading() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::keeping();
        let socket = raw_socket(&mock, &log, cfg(4096, deliveries(2), LIMIT)).await;
        settle().await;
        let n = 400usize;
        for i in 0..n {
            mock.push_inbound(Handle(1), format!("{i:05}").into_bytes());
        }
        let (tx, rx) = std::sync::mpsc::channel::<ReadPermit>();
        let dropper = std::thread::spawn(move || {
            let mut held: Vec<ReadPermit> = Vec::new();
            let mut k = 0u64;
            while let Ok(p) = rx.recv() {
                held.push(p);
                k = k
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if held.len() >= 2 || k.is_multiple_of(3) {
                    // newest first, sometimes
                    if k.is_multiple_of(2) {
                        held.reverse();
                    }
                    held.clear();
                }
            }
        });
        let mut spins = 0u64;
        let mut paused = false;
        while log.deliveries() < n && spins < 2_000_000 {
            spins += 1;
            let taken: Vec<ReadPermit> = std::mem::take(&mut *log.permits.lock().unwrap());
            for p in taken {
                tx.send(p).unwrap();
            }
            if spins.is_multiple_of(997) {
                if paused {
                    socket.do_send(ResumeReading);
                } else {
                    socket.do_send(PauseReading);
                }
                paused = !paused;
            }
            tokio::task::yield_now().await;
        }
        socket.do_send(ResumeReading);
        for _ in 0..1000 {
            let taken: Vec<ReadPermit> = std::mem::take(&mut *log.permits.lock().unwrap());
            for p in taken {
                tx.send(p).unwrap();
            }
            tokio::task::yield_now().await;
            if log.deliveries() == n {
                break;
            }
        }
        drop(tx);
        dropper.join().unwrap();
        let expect: Vec<u8> = (0..n)
            .flat_map(|i| format!("{i:05}").into_bytes())
            .collect();
        assert_eq!(
            log.deliveries(),
            n,
            "stalled after {} deliveries",
            log.deliveries()
        );
        assert_eq!(log.data(), expect);
    });
}

/// Same as above for a length-delimited frame: a 104-byte frame (limit 16) that arrives
/// in one read is delivered; trickled in, it is rejected.
#[test]
fn an_oversized_length_delimited_frame_in_one_read_is_rejected_too() {
    run_paused(|| async {
        let frame = delimited(&[b'p'; 100]);
        let mock = MockTransport::start();
        let log = Log::default();
        let _s = delimited_socket(&mock, &log, cfg(4096, ReadLimits::default(), LIMIT)).await;
        settle().await;
        mock.push_inbound(Handle(1), frame);
        settle().await;
        assert!(
            log.frames().is_empty(),
            "a 104-byte frame passed a 16-byte max_frame_bytes: {:?}",
            log.entries()
                .iter()
                .map(|e| match e {
                    Entry::Frame(f, n) => format!("Frame(len {}, permit {n})", f.len()),
                    o => format!("{o:?}"),
                })
                .collect::<Vec<_>>()
        );
        assert!(log.has(|e| matches!(e, Entry::TooLong { limit: LIMIT, .. })));
    });
}

/// A decoder that never finds a frame: per `SocketBuilder::framed` ("more than
/// max_frame_bytes buffered without a whole frame ... ends reading") and
/// `SocketConfig::max_frame_bytes` ("most undecoded bytes buffered without a whole
/// frame; past it the stream is rejected"), exactly `max_frame_bytes` buffered is allowed.
#[derive(Debug)]
struct Never;

impl tokio_util::codec::Decoder for Never {
    type Item = String;
    type Error = io::Error;
    fn decode(&mut self, _: &mut BytesMut) -> Result<Option<String>, io::Error> {
        Ok(None)
    }
}
