//! Arbitrary inbound chunks to a socket framed with
//! `LinesCodec::new_with_max_length(64)` over the mock transport: nothing panics, and
//! the frames are whole lines: exactly the lines of the whole stream, in order, up to
//! the first bad one (longer than 64 bytes, or not UTF-8), which is one `DecodeFailed`;
//! a clean stream ends with one `Eof` instead, its unterminated tail as the last line.
//! How the stream was cut into reads changes nothing.
//!
//! Input layout: byte 0's low 3 bits say how many of the next bytes cut the stream into
//! the chunks the peer sends (see `chunks`), its bits 3-4 pick the socket's `read_chunk`;
//! the rest is the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sockactor::messages::{Handle, SocketEventKind};
use sockactor::{MockTransport, Socket, SocketConfig};
use sockactor_fuzz::{chunks, mock_peer, run_paused, settle_until, Recorder};
use tokio_util::codec::LinesCodec;

/// The codec's bound on a line (its `\r` included, its `\n` not).
const MAX_LINE: usize = 64;

/// What the stream should give: its lines, and whether it ends in a bad one.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    lines: Vec<String>,
    bad: bool,
}

/// One line's bytes (without its `\n`) as the codec would give it, or `None` if bad.
fn line(raw: &[u8]) -> Option<String> {
    if raw.len() > MAX_LINE {
        return None;
    }
    let text = raw.strip_suffix(b"\r").unwrap_or(raw);
    String::from_utf8(text.to_vec()).ok()
}

/// The lines of the whole stream, as a reference independent of how it was read.
fn expected(stream: &[u8]) -> Expected {
    let mut lines = Vec::new();
    let mut rest = stream;
    while let Some(at) = rest.iter().position(|&b| b == b'\n') {
        match line(&rest[..at]) {
            Some(l) => lines.push(l),
            None => return Expected { lines, bad: true },
        }
        rest = &rest[at + 1..];
    }
    if rest.len() > MAX_LINE {
        return Expected { lines, bad: true };
    }
    // The codec's `decode_eof` gives an unterminated tail as a line, unless it is empty
    // or a lone `\r`.
    if !rest.is_empty() && rest != b"\r" {
        match line(rest) {
            Some(l) => lines.push(l),
            None => return Expected { lines, bad: true },
        }
    }
    Expected { lines, bad: false }
}

async fn feed(read_chunk: usize, pieces: Vec<&[u8]>) -> Recorder {
    let mock = MockTransport::start();
    let recorder = Recorder::default();
    let _socket = Socket::builder()
        .functions(mock.functions())
        .config(SocketConfig {
            read_chunk,
            ..SocketConfig::default()
        })
        .subscriber(recorder.events_recipient())
        .framed(
            LinesCodec::new_with_max_length(MAX_LINE),
            recorder.frames_recipient(),
        )
        .connect(mock_peer())
        .await
        .expect("connect through the mock");
    let reads = pieces.len();
    for piece in pieces {
        mock.push_inbound(Handle(1), piece.to_vec());
    }
    mock.push_eof(Handle(1));
    let ended = || {
        recorder.count(|e| matches!(e, SocketEventKind::Eof | SocketEventKind::DecodeFailed(_))) > 0
    };
    let budget = 64 + 4 * reads + 4 * read_rounds(read_chunk);
    assert!(settle_until(budget, ended).await, "reads never ended");
    settle_until(8, || false).await;
    recorder
}

/// Extra settle rounds for a small read size (each read is a round trip).
fn read_rounds(read_chunk: usize) -> usize {
    4096 / read_chunk
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let seed_len = usize::from(mode & 7).min(rest.len());
    let (seed, stream) = rest.split_at(seed_len);
    let read_chunk = [1, 5, 64, 4096][usize::from((mode >> 3) & 3)];
    let want = expected(stream);
    let recorder = run_paused(|| feed(read_chunk, chunks(seed, stream)));

    let frames = recorder.frames();
    for frame in &frames {
        assert!(frame.len() <= MAX_LINE, "a frame of {} bytes", frame.len());
        assert!(
            !frame.contains('\n'),
            "a frame holding a newline: {frame:?}"
        );
    }
    assert_eq!(frames, want.lines, "frames are not the stream's lines");
    let failed = recorder.count(|e| matches!(e, SocketEventKind::DecodeFailed(_)));
    let eofs = recorder.count(|e| matches!(e, SocketEventKind::Eof));
    if want.bad {
        assert_eq!((failed, eofs), (1, 0), "a bad line not refused once");
    } else {
        assert_eq!((failed, eofs), (0, 1), "a clean stream not ended once");
    }
});
