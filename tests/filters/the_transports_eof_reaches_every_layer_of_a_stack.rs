//! The transport's end of stream reaches every byte layer, wire side first: each layer
//! decodes what it holds, then hears the end (`Layer::eof`); one that says the stream
//! was cut turns the end into a typed read failure after the plaintext, wherever it sits
//! in the stack (not only nearest the wire). A clean end is one `Eof`.

use std::io::{self, IoSlice};

use crate::support::{mock_peer, run_paused, settle, Recorder};
use bytes::BytesMut;
use sockactor::filters::{Compress, Decoded, Layer};
use sockactor::messages::{Handle, SocketEventKind};
use sockactor::{MockTransport, Socket, SocketFunctions};

/// Passes bytes through; with `strict`, a stream that ends without its say is cut.
#[derive(Debug)]
struct Pass {
    strict: bool,
}

impl Layer for Pass {
    fn name(&self) -> &'static str {
        if self.strict {
            "strict"
        } else {
            "pass"
        }
    }
    fn worst_case(&self, n: usize) -> usize {
        n
    }
    fn encode(&mut self, input: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<()> {
        for s in input {
            out.extend_from_slice(s);
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
        out.extend_from_slice(&input.split_to(n));
        Ok(if input.is_empty() {
            Decoded::NeedInput
        } else {
            Decoded::More
        })
    }
    fn eof(&mut self) -> io::Result<()> {
        if self.strict {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the stream was cut",
            ))
        } else {
            Ok(())
        }
    }
}

/// What a socket over `functions` tells its subscriber when the mock peer sends `wire`
/// and then its EOF: the plaintext, read failures (their kinds) and EOFs.
async fn at_the_end(
    mock: &MockTransport,
    functions: SocketFunctions,
    wire: &[u8],
) -> (Vec<u8>, Vec<Option<io::ErrorKind>>, usize) {
    let recorder = Recorder::default();
    let _socket = Socket::builder()
        .functions(functions)
        .subscriber(recorder.start().recipient())
        .connect(mock_peer())
        .await
        .expect("connect");
    settle().await;
    mock.push_inbound(Handle(1), wire.to_vec());
    mock.push_eof(Handle(1));
    for _ in 0..8 {
        settle().await;
    }
    let failures = recorder.picked(|e| match e {
        SocketEventKind::ReadFailed(e) => Some(e.io_kind()),
        _ => None,
    });
    let eofs = recorder.count(|e| matches!(e, SocketEventKind::Eof));
    (recorder.received(), failures, eofs)
}

fn pass(strict: bool) -> impl Fn(sockactor::messages::Handle) -> io::Result<Box<dyn Layer>> {
    move |_| Ok(Box::new(Pass { strict }) as Box<dyn Layer>)
}

#[test]
fn a_strict_layer_above_a_pass_through_one_hears_the_end() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // The layer added last is nearest the plaintext.
        let functions = mock.functions().layer(pass(false)).layer(pass(true));
        let (plain, failures, eofs) = at_the_end(&mock, functions, b"hello").await;
        assert_eq!(plain, b"hello", "the plaintext comes first");
        assert_eq!(
            (failures, eofs),
            (vec![Some(io::ErrorKind::UnexpectedEof)], 0),
            "the upper layer said the stream was cut"
        );
    });
}

#[test]
fn a_strict_layer_over_deflate_hears_the_end() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let functions = Compress::new().wrap(mock.functions()).layer(pass(true));
        let mut deflate = flate2::Compress::new(flate2::Compression::fast(), false);
        let mut wire = Vec::with_capacity(64);
        deflate
            .compress_vec(b"hello", &mut wire, flate2::FlushCompress::Sync)
            .expect("deflate");
        let (plain, failures, eofs) = at_the_end(&mock, functions, &wire).await;
        assert_eq!(plain, b"hello");
        assert_eq!(
            (failures, eofs),
            (vec![Some(io::ErrorKind::UnexpectedEof)], 0)
        );
    });
}

#[test]
fn pass_through_layers_end_cleanly_with_one_eof() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let functions = mock.functions().layer(pass(false)).layer(pass(false));
        let (plain, failures, eofs) = at_the_end(&mock, functions, b"hello").await;
        assert_eq!(plain, b"hello");
        assert_eq!((failures, eofs), (vec![], 1));
    });
}
