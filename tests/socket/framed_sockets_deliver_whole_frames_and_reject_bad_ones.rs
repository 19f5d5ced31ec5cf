//! Framing: a socket built with a tokio-util `Decoder` delivers whole frames in stream
//! order, each holding its place in the read window; a bad stream is a typed error to
//! the subscriber and the socket closes; the peer's EOF hands the decoder the rest; a
//! length prefix the decoder took before its frame was whole counts in the frame's
//! permit and against the frame limit.

use std::sync::{Arc, Mutex};

use crate::support::{mock_peer, run_paused, settle, Recorder};
use actix::prelude::*;
use bytes::BytesMut;
use sockactor::messages::{Frame, GetStats, Handle, SocketEventKind, Write};
use sockactor::{DecodeError, MockTransport, ReadLimits, ReadPermit, Socket, SocketConfig};
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

/// Collects frames; keeps their permits while `keep` is set.
#[derive(Clone, Default)]
struct Frames(Arc<Mutex<Got>>);

#[derive(Default)]
struct Got {
    keep: bool,
    frames: Vec<(String, usize)>,
    permits: Vec<ReadPermit>,
}

impl Frames {
    fn start(&self) -> Recipient<Frame<String>> {
        FramesActor(self.clone()).start().recipient()
    }
    fn lines(&self) -> Vec<String> {
        let got = self.0.lock().expect("lock");
        got.frames.iter().map(|(l, _)| l.clone()).collect()
    }
    fn sizes(&self) -> Vec<usize> {
        let got = self.0.lock().expect("lock");
        got.frames.iter().map(|(_, n)| *n).collect()
    }
}

struct FramesActor(Frames);

impl Actor for FramesActor {
    type Context = Context<Self>;
}

impl Handler<Frame<String>> for FramesActor {
    type Result = ();
    fn handle(&mut self, msg: Frame<String>, _: &mut Context<Self>) {
        let mut got = self.0 .0.lock().expect("lock");
        got.frames.push((msg.frame, msg.permit.bytes()));
        if got.keep {
            got.permits.push(msg.permit);
        }
    }
}

fn config(read_chunk: usize) -> SocketConfig {
    SocketConfig {
        read_chunk,
        ..SocketConfig::default()
    }
}

#[test]
fn lines_split_across_reads_arrive_whole_and_in_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let frames = Frames::default();
        let _socket = Socket::builder()
            .functions(mock.functions())
            .config(config(3))
            .framed(LinesCodec::new(), frames.start())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), &b"hel"[..]);
        settle().await;
        assert!(frames.lines().is_empty(), "half a line is not a frame");
        mock.push_inbound(Handle(1), &b"lo\nwor"[..]);
        mock.push_inbound(Handle(1), &b"ld\r\n\nlast\n"[..]);
        settle().await;
        assert_eq!(frames.lines(), ["hello", "world", "", "last"]);
        assert_eq!(
            frames.sizes(),
            [6, 7, 1, 5],
            "each permit stands for the stream bytes its frame consumed"
        );
    });
}

/// A line socket over a mock whose frames keep their permits, with a window of
/// `deliveries`.
async fn lines_keeping_permits(deliveries: u32) -> (MockTransport, Frames, Addr<Socket>) {
    let mock = MockTransport::start();
    let frames = Frames::default();
    frames.0.lock().expect("lock").keep = true;
    let socket = Socket::builder()
        .functions(mock.functions())
        .config(SocketConfig {
            read_limits: ReadLimits {
                max_deliveries: deliveries,
                max_bytes: usize::MAX,
            },
            ..SocketConfig::default()
        })
        .framed(LinesCodec::new(), frames.start())
        .connect(mock_peer())
        .await
        .expect("connect");
    (mock, frames, socket)
}

#[test]
fn frames_wait_for_the_read_window_like_raw_chunks() {
    run_paused(|| async {
        let (mock, frames, socket) = lines_keeping_permits(2).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"a\nb\nc\nd\ne\n"[..]);
        settle().await;
        assert_eq!(frames.lines(), ["a", "b"], "two frames fill the window");
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!((stats.unacked_deliveries, stats.unacked_bytes), (2, 4));

        frames.0.lock().expect("lock").permits.remove(0);
        settle().await;
        assert_eq!(
            frames.lines(),
            ["a", "b", "c"],
            "one permit dropped, one frame"
        );

        {
            let mut got = frames.0.lock().expect("lock");
            got.keep = false;
            got.permits.clear();
        }
        settle().await;
        assert_eq!(frames.lines(), ["a", "b", "c", "d", "e"]);
    });
}

/// `PauseReading` stops reading, not delivering: frames already read go out as the
/// window makes room, paused or not.
#[test]
fn frames_already_read_go_out_while_reading_is_paused() {
    run_paused(|| async {
        let (mock, frames, socket) = lines_keeping_permits(1).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"a\nb\nc\n"[..]);
        settle().await;
        assert_eq!(frames.lines(), ["a"], "one frame fills the window");
        let read = socket.send(GetStats).await.expect("stats").bytes_received;
        assert_eq!(read, 6, "all three lines were read");
        socket
            .send(sockactor::messages::PauseReading)
            .await
            .expect("paused");
        frames.0.lock().expect("lock").permits.remove(0);
        settle().await;
        assert_eq!(
            frames.lines(),
            ["a", "b"],
            "read already: delivered while paused"
        );
        mock.push_inbound(Handle(1), &b"d\n"[..]);
        frames.0.lock().expect("lock").permits.remove(0);
        settle().await;
        assert_eq!(
            frames.lines(),
            ["a", "b", "c"],
            "nothing more is read while paused"
        );
        socket
            .send(sockactor::messages::ResumeReading)
            .await
            .expect("resumed");
        {
            let mut got = frames.0.lock().expect("lock");
            got.keep = false;
            got.permits.clear();
        }
        settle().await;
        assert_eq!(frames.lines(), ["a", "b", "c", "d"]);
    });
}

#[test]
fn at_eof_the_decoder_gets_the_rest_then_eof_is_reported() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let frames = Frames::default();
        let events = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .subscriber(events.start().recipient())
            .framed(LinesCodec::new(), frames.start())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), &b"x\ny"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(frames.lines(), ["x", "y"]);
        assert_eq!(events.count(|e| matches!(e, SocketEventKind::Eof)), 1);
        assert_eq!(
            events.count(|e| matches!(e, SocketEventKind::Received(_))),
            0,
            "a framed socket sends frames, not raw chunks"
        );
        socket
            .send(Write::new(&b"half-closed, still writing"[..]))
            .await
            .expect("mailbox")
            .expect("written after the peer's EOF");
    });
}

#[test]
fn a_decoder_error_is_reported_and_the_socket_closes_after_its_queued_writes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let frames = Frames::default();
        let events = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .subscriber(events.start().recipient())
            .framed(LinesCodec::new_with_max_length(8), frames.start())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.script_sendv(Handle(1), [sockactor::SendStep::Hold]);
        let reply = socket.send(Write::new(&b"bye\n"[..]));
        settle().await;
        mock.push_inbound(Handle(1), &b"ok\nthis line is far too long\nnever\n"[..]);
        settle().await;
        assert_eq!(frames.lines(), ["ok"], "frames before the bad one arrive");
        let failures: Vec<_> = {
            let events = events.events.lock().expect("lock");
            events
                .iter()
                .filter_map(|e| match e {
                    SocketEventKind::DecodeFailed(DecodeError::Decoder(source)) => Some(matches!(
                        source.downcast_ref::<LinesCodecError>(),
                        Some(LinesCodecError::MaxLineLengthExceeded)
                    )),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            failures,
            [true],
            "one DecodeFailed carrying the codec's error"
        );
        assert!(
            !mock.is_closed(Handle(1)),
            "closing gracefully: the write first"
        );
        mock.release(Handle(1));
        settle().await;
        reply
            .await
            .expect("mailbox")
            .expect("the queued write still went out");
        assert_eq!(mock.written(Handle(1)), b"bye\n");
        assert!(mock.is_closed(Handle(1)));
        assert_eq!(
            events.count(|e| matches!(e, SocketEventKind::Closed { .. })),
            1
        );
    });
}

/// A decoder that never finds a frame.
struct Never;

impl Decoder for Never {
    type Item = String;
    type Error = std::io::Error;
    fn decode(&mut self, _: &mut BytesMut) -> Result<Option<String>, std::io::Error> {
        Ok(None)
    }
}

#[test]
fn more_than_the_frame_limit_without_a_frame_is_rejected() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let frames = Frames::default();
        let events = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(SocketConfig {
                max_frame_bytes: 16,
                read_chunk: 8,
                ..SocketConfig::default()
            })
            .subscriber(events.start().recipient())
            .framed(Never, frames.start())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), vec![b'z'; 100]);
        settle().await;
        let too_long = events.count(|e| {
            matches!(
                e,
                SocketEventKind::DecodeFailed(DecodeError::FrameTooLong { limit: 16, buffered })
                    if *buffered >= 16 && *buffered < 16 + 8
            )
        });
        assert_eq!(too_long, 1, "rejected once the limit is reached");
        let read = socket.send(GetStats).await.expect("stats").bytes_received;
        assert!(
            read < 16 + 8,
            "reading stopped at the limit: {read} bytes read"
        );
        assert!(mock.is_closed(Handle(1)));
    });
}

/// 10,000 lines over real loopback TCP: the in-place path reads straight into the
/// decoder's buffer.
#[actix::test]
async fn ten_thousand_lines_over_loopback_arrive_whole_and_in_order() {
    use tokio::io::AsyncWriteExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let frames = Frames::default();
    let events = Recorder::default();
    let _socket = Socket::builder()
        .subscriber(events.start().recipient())
        .framed(LinesCodec::new(), frames.start())
        .connect(addr)
        .await
        .expect("connect");
    let (mut peer, _) = listener.accept().await.expect("accept");
    let mut text = String::new();
    for i in 0..10_000 {
        text.push_str(&format!("line {i} {}\n", "x".repeat(i % 97)));
    }
    peer.write_all(text.as_bytes()).await.expect("write");
    peer.shutdown().await.expect("shutdown");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while events.count(|e| matches!(e, SocketEventKind::Eof)) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no EOF");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let expected: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(frames.lines(), expected);
}

#[test]
fn without_close_on_decode_error_the_subscriber_can_answer_before_closing() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let frames = Frames::default();
        let events = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(SocketConfig {
                close_on_decode_error: false,
                ..SocketConfig::default()
            })
            .subscriber(events.start().recipient())
            .framed(LinesCodec::new_with_max_length(4), frames.start())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), &b"far too long\nignored\n"[..]);
        settle().await;
        assert_eq!(
            events.count(|e| matches!(e, SocketEventKind::DecodeFailed(_))),
            1
        );
        assert!(frames.lines().is_empty());
        assert!(
            !mock.is_closed(Handle(1)),
            "the subscriber decides when to close"
        );
        socket
            .send(Write::new(&b"ERR line too long\n"[..]))
            .await
            .expect("mailbox")
            .expect("still writable after the decode error");
        socket
            .send(sockactor::messages::Close::Graceful)
            .await
            .expect("close");
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"ERR line too long\n");
        assert!(mock.is_closed(Handle(1)));
        assert!(
            frames.lines().is_empty(),
            "nothing was decoded after the error"
        );
    });
}

/// Takes one frame, then stops.
struct OneAndDone;

impl Actor for OneAndDone {
    type Context = Context<Self>;
}

impl Handler<Frame<String>> for OneAndDone {
    type Result = ();
    fn handle(&mut self, _: Frame<String>, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[test]
fn a_socket_whose_frame_recipient_has_stopped_stops_reading() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = Socket::builder()
            .functions(mock.functions())
            .framed(LinesCodec::new(), OneAndDone.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), &b"a\n"[..]);
        settle().await;
        mock.push_inbound(Handle(1), &b"b\n"[..]);
        settle().await;
        mock.push_inbound(Handle(1), &b"never read\n"[..]);
        settle().await;
        let read = socket.send(GetStats).await.expect("stats").bytes_received;
        assert_eq!(
            read, 2,
            "after the first line nothing more is read: nobody takes the frames"
        );
        socket
            .send(Write::new(&b"still writing"[..]))
            .await
            .expect("mailbox")
            .expect("writing goes on");
    });
}

/// Collects length-delimited frames: (payload length, the stream bytes its permit says).
#[derive(Clone, Default)]
struct Delimited(Arc<Mutex<Vec<(usize, usize)>>>);

struct DelimitedActor(Delimited);

impl Actor for DelimitedActor {
    type Context = Context<Self>;
}

impl Handler<Frame<BytesMut>> for DelimitedActor {
    type Result = ();
    fn handle(&mut self, msg: Frame<BytesMut>, _: &mut Context<Self>) {
        let mut got = self.0 .0.lock().expect("lock");
        got.push((msg.frame.len(), msg.permit.bytes()));
    }
}

/// A length-delimited frame: a 4-byte big-endian length, then the payload.
fn delimited(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A frame whose length prefix came in one read and its payload in the next stands for
/// all of its stream bytes (the decoder took the prefix out of the buffer a read before
/// the frame was whole): the permits add up to the bytes read.
#[test]
fn a_frame_stands_for_its_length_prefix_read_before_the_rest() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let frames = Delimited::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .framed(
                tokio_util::codec::LengthDelimitedCodec::new(),
                DelimitedActor(frames.clone()).start().recipient(),
            )
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        let one = delimited(b"0123456789");
        let two = delimited(b"hello");
        mock.push_inbound(Handle(1), one[..4].to_vec());
        settle().await;
        mock.push_inbound(Handle(1), one[4..].to_vec());
        settle().await;
        mock.push_inbound(Handle(1), two.clone());
        settle().await;
        let got = frames.0.lock().expect("lock").clone();
        assert_eq!(got, [(10, one.len()), (5, two.len())]);
        let read = socket.send(GetStats).await.expect("stats").bytes_received;
        assert_eq!(read as usize, one.len() + two.len());
    });
}

/// The frame limit counts a length prefix the decoder has already taken: a frame of 20
/// stream bytes trickled in a byte at a time is rejected at a limit of 16 (its 16-byte
/// payload passed before); one of exactly 16 passes.
#[test]
fn the_frame_limit_counts_a_length_prefix_already_taken() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let frames = Delimited::default();
        let events = Recorder::default();
        let _socket = Socket::builder()
            .functions(mock.functions())
            .config(SocketConfig {
                max_frame_bytes: 16,
                ..SocketConfig::default()
            })
            .subscriber(events.start().recipient())
            .framed(
                tokio_util::codec::LengthDelimitedCodec::new(),
                DelimitedActor(frames.clone()).start().recipient(),
            )
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        let exact = delimited(&[b'x'; 12]);
        mock.push_inbound(Handle(1), exact[..15].to_vec());
        settle().await;
        mock.push_inbound(Handle(1), exact[15..].to_vec());
        settle().await;
        for byte in delimited(&[b'y'; 16]) {
            mock.push_inbound(Handle(1), vec![byte]);
            settle().await;
        }
        assert_eq!(
            *frames.0.lock().expect("lock"),
            [(12, 16)],
            "only the first"
        );
        let too_long = events.count(|e| {
            matches!(
                e,
                SocketEventKind::DecodeFailed(DecodeError::FrameTooLong {
                    limit: 16,
                    buffered: 16
                })
            )
        });
        assert_eq!(too_long, 1);
    });
}

/// The verdict on a frame does not depend on how the stream was split into reads: a
/// frame of more than `max_frame_bytes` stream bytes that arrives whole in one read is
/// rejected as when it trickles in (a frame of exactly the limit, before it, passes).
#[test]
fn a_whole_frame_past_the_limit_in_one_read_is_rejected_too() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let frames = Delimited::default();
        let events = Recorder::default();
        let _socket = Socket::builder()
            .functions(mock.functions())
            .config(SocketConfig {
                max_frame_bytes: 16,
                ..SocketConfig::default()
            })
            .subscriber(events.start().recipient())
            .framed(
                tokio_util::codec::LengthDelimitedCodec::new(),
                DelimitedActor(frames.clone()).start().recipient(),
            )
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        let mut stream = delimited(&[b'x'; 12]);
        stream.extend(delimited(&[b'y'; 100]));
        stream.extend(delimited(&[b'z'; 1]));
        mock.push_inbound(Handle(1), stream);
        settle().await;
        assert_eq!(
            *frames.0.lock().expect("lock"),
            [(12, 16)],
            "the frame within the limit, nothing from the one past it or after"
        );
        let too_long = events.count(|e| {
            matches!(
                e,
                SocketEventKind::DecodeFailed(DecodeError::FrameTooLong {
                    limit: 16,
                    buffered: 104
                })
            )
        });
        assert_eq!(too_long, 1);
    });
}
