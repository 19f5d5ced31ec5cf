//! Bytes from the peer that are not a deflate stream fail the socket's reads with a
//! typed error (`ReadFailed` carrying `TransportError::Io`, `InvalidData`, whose inner
//! error is `CompressError::Corrupt`), after the plaintext of whatever valid stream
//! came before them.

use std::io;

use crate::support::{mock_peer, run_paused, settle, Recorder};
use flate2::{Compression, FlushCompress};
use sockactor::filters::{Compress, CompressError};
use sockactor::messages::{Handle, SocketEventKind};
use sockactor::{MockTransport, Socket, TransportError};

fn read_failures(recorder: &Recorder) -> Vec<TransportError> {
    recorder.picked(|e| match e {
        SocketEventKind::ReadFailed(error) => Some(error.clone()),
        _ => None,
    })
}

fn is_corrupt(error: &TransportError) -> bool {
    match error {
        TransportError::Io(e) => {
            e.kind() == io::ErrorKind::InvalidData
                && matches!(
                    e.get_ref()
                        .and_then(|inner| inner.downcast_ref::<CompressError>()),
                    Some(CompressError::Corrupt(_))
                )
        }
        _ => false,
    }
}

async fn receive(inbound: Vec<u8>) -> Recorder {
    let mock = MockTransport::start();
    let recorder = Recorder::default();
    let _socket = Socket::builder()
        .functions(Compress::new().wrap(mock.functions()))
        .subscriber(recorder.start().recipient())
        .connect(mock_peer())
        .await
        .expect("connect");
    settle().await;
    mock.push_inbound(Handle(1), inbound);
    for _ in 0..100 {
        settle().await;
    }
    recorder
}

#[test]
fn garbage_is_a_corrupt_stream_error() {
    run_paused(|| async {
        // 0xff: a final block of the reserved type 3, which no deflate stream has.
        let recorder = receive(vec![0xff; 100]).await;
        let failures = read_failures(&recorder);
        assert_eq!(failures.len(), 1);
        assert!(is_corrupt(&failures[0]), "{}", failures[0]);
        assert!(recorder.received().is_empty());
    });
}

#[test]
fn garbage_after_a_valid_stream_fails_after_its_plaintext() {
    run_paused(|| async {
        let mut deflater = flate2::Compress::new(Compression::default(), false);
        let mut inbound = Vec::with_capacity(1024);
        deflater
            .compress_vec(b"hello, world", &mut inbound, FlushCompress::Sync)
            .expect("deflate");
        // A stored block whose length and its complement disagree.
        inbound.extend_from_slice(&[0x00, 0x05, 0x00, 0x05, 0x00, b'x']);
        let recorder = receive(inbound).await;
        assert_eq!(recorder.received(), b"hello, world");
        let failures = read_failures(&recorder);
        assert_eq!(failures.len(), 1);
        assert!(is_corrupt(&failures[0]), "{}", failures[0]);
    });
}
