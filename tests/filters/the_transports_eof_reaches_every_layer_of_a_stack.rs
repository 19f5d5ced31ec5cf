//! The transport's end of stream reaches every byte layer, wire side first: each layer
//! decodes what it holds, then hears the end (`Layer::eof`); one that says the stream
//! was cut turns the end into a typed read failure after the plaintext, wherever it sits
//! in the stack (not only nearest the wire). A clean end is one `Eof`.

use std::io;

use crate::support::layers::Unruly;
use crate::support::{mock_peer, run_paused, settle, Recorder};
use sockactor::filters::Compress;
use sockactor::messages::{Handle, SocketEventKind};
use sockactor::{MockTransport, Socket, SocketFunctions};

/// `functions` with a pass-through layer on top; `strict`: one that says a stream
/// ending without its say was cut.
fn pass(strict: bool, functions: SocketFunctions) -> SocketFunctions {
    Unruly {
        strict_eof: strict,
        ..Unruly::default()
    }
    .on(functions)
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

#[test]
fn a_strict_layer_above_a_pass_through_one_hears_the_end() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // The layer added last is nearest the plaintext.
        let functions = pass(true, pass(false, mock.functions()));
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
        let functions = pass(true, Compress::new().wrap(mock.functions()));
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
        let functions = pass(false, pass(false, mock.functions()));
        let (plain, failures, eofs) = at_the_end(&mock, functions, b"hello").await;
        assert_eq!(plain, b"hello");
        assert_eq!((failures, eofs), (vec![], 1));
    });
}
