//! The end of a framed stream: the peer's EOF hands the decoder the rest, and what it
//! makes of it (every frame `decode_eof` gives, or the error for a cut frame) reaches
//! the subscriber before `Eof` and before the `Closed` that an EOF may bring
//! (`close_on_eof`, a lingering close); a `FrameStream` ends with that error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{lingering, mock_peer, run_paused, settle};
use actix::prelude::*;
use bytes::BytesMut;
use sockactor::messages::{Close, Frame, Handle, SocketEvent, SocketEventKind};
use sockactor::{MockTransport, Socket, SocketConfig};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

/// Frames and events, in the order they came, as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn seen(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }
}

struct LogActor(Log);

impl Actor for LogActor {
    type Context = Context<Self>;
}

impl<T: AsRef<[u8]> + Send + 'static> Handler<Frame<T>> for LogActor {
    type Result = ();
    fn handle(&mut self, msg: Frame<T>, _: &mut Context<Self>) {
        let text = String::from_utf8_lossy(msg.frame.as_ref()).to_string();
        self.0
             .0
            .lock()
            .expect("lock")
            .push(format!("frame {text}"));
    }
}

impl Handler<SocketEvent> for LogActor {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        let name = match msg.kind {
            SocketEventKind::Eof => "Eof",
            SocketEventKind::Closed { .. } => "Closed",
            SocketEventKind::DecodeFailed(_) => "DecodeFailed",
            SocketEventKind::ReadFailed(_) => "ReadFailed",
            _ => return,
        };
        self.0 .0.lock().expect("lock").push(name.to_string());
    }
}

async fn framed<D>(
    functions: sockactor::SocketFunctions,
    config: SocketConfig,
    decoder: D,
    log: &Log,
) -> Addr<Socket>
where
    D: Decoder + 'static,
    D::Item: AsRef<[u8]> + Send + 'static,
    D::Error: std::error::Error + Send + Sync + 'static,
{
    let actor = LogActor(log.clone()).start();
    Socket::builder()
        .functions(functions)
        .config(config)
        .framed(decoder, actor.clone().recipient())
        .subscriber(actor.recipient())
        .connect(mock_peer())
        .await
        .expect("connect")
}

/// A 4-byte length prefix, then the bytes.
fn ld(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// "hi", then a frame announced 9 bytes long of which 1 came.
fn a_frame_then_a_cut_one() -> Vec<u8> {
    let mut bytes = ld(b"hi");
    bytes.extend_from_slice(&[0, 0, 0, 9, b'x']);
    bytes
}

#[test]
fn a_cut_frame_at_an_eof_that_closes_the_socket_is_reported_before_closed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let config = SocketConfig {
            close_on_eof: true,
            ..SocketConfig::default()
        };
        let _socket = framed(mock.functions(), config, LengthDelimitedCodec::new(), &log).await;
        settle().await;
        mock.push_inbound(Handle(1), a_frame_then_a_cut_one());
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(log.seen(), ["frame hi", "DecodeFailed", "Closed"]);
    });
}

#[test]
fn a_cut_frame_at_the_eof_a_lingering_close_waits_for_is_reported_before_closed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        // A transport that shuts the sending half down: the close lingers for the EOF.
        let socket = framed(
            mock.functions_with_shutdown(),
            lingering(Duration::from_secs(10)),
            LengthDelimitedCodec::new(),
            &log,
        )
        .await;
        settle().await;
        socket.do_send(Close::Graceful);
        settle().await;
        mock.push_inbound(Handle(1), a_frame_then_a_cut_one());
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(log.seen(), ["frame hi", "DecodeFailed", "Closed"]);
    });
}

#[test]
fn a_frame_stream_whose_eof_closes_the_socket_ends_with_the_cut_frames_error() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (_tx, mut rx) = Socket::builder()
            .functions(mock.functions())
            .config(SocketConfig {
                close_on_eof: true,
                ..SocketConfig::default()
            })
            .connect_framed(mock_peer(), LengthDelimitedCodec::new())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), a_frame_then_a_cut_one());
        mock.push_eof(Handle(1));
        let first = rx.next().await.expect("a frame").expect("ok");
        assert_eq!(&first[..], b"hi");
        let last = rx.next().await;
        assert!(matches!(last, Some(Err(_))), "got {last:?}");
        assert!(rx.next().await.is_none());
    });
}

/// Takes every byte into its own buffer and gives the lines out only at the end of the
/// stream, one per `decode_eof` call (tokio-util's `FramedRead` calls it until `None`).
#[derive(Default)]
struct LinesAtEof {
    kept: Vec<u8>,
}

impl Decoder for LinesAtEof {
    type Item = Vec<u8>;
    type Error = std::io::Error;
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<u8>>, std::io::Error> {
        self.kept.extend_from_slice(&buf.split());
        Ok(None)
    }
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<u8>>, std::io::Error> {
        self.kept.extend_from_slice(&buf.split());
        match self.kept.iter().position(|b| *b == b'\n') {
            Some(i) => {
                let line = self.kept[..i].to_vec();
                self.kept.drain(..=i);
                Ok(Some(line))
            }
            None => Ok(None),
        }
    }
}

#[test]
fn a_decoder_holding_several_frames_until_eof_gives_all_of_them() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let _socket = framed(
            mock.functions(),
            SocketConfig::default(),
            LinesAtEof::default(),
            &log,
        )
        .await;
        settle().await;
        mock.push_inbound(Handle(1), &b"x\ny\nz\n"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(log.seen(), ["frame x", "frame y", "frame z", "Eof"]);
    });
}

/// Makes a frame of nothing at every `decode_eof` call, for ever.
struct EmptyFramesForEver;

impl Decoder for EmptyFramesForEver {
    type Item = Vec<u8>;
    type Error = std::io::Error;
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<u8>>, std::io::Error> {
        if buf.is_empty() {
            return Ok(None);
        }
        Ok(Some(buf.split().to_vec()))
    }
    fn decode_eof(&mut self, _: &mut BytesMut) -> Result<Option<Vec<u8>>, std::io::Error> {
        Ok(Some(Vec::new()))
    }
}

/// A decoder that makes frames from nothing at the EOF for ever: each frame at the EOF
/// that consumes no byte must stand for bytes the decoder took without a frame before;
/// past those (here none), its one last frame ends the stream.
#[test]
fn a_decoder_making_frames_from_nothing_at_eof_still_ends() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let log = Log::default();
        let _socket = framed(
            mock.functions(),
            SocketConfig::default(),
            EmptyFramesForEver,
            &log,
        )
        .await;
        settle().await;
        mock.push_inbound(Handle(1), &b"abc"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(log.seen(), ["frame abc", "frame ", "Eof"]);
    });
}
