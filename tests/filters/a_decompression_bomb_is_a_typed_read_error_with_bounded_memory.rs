//! A small compressed stream that inflates past the filter's bounds (its total, or its
//! ratio of plaintext to compressed bytes) fails the receiving socket's reads with a
//! typed error (`ReadFailed` carrying `TransportError::Io`, `InvalidData`, whose inner
//! error is `CompressError`), and the plaintext it let through before that stays within
//! the bound, in deliveries of at most the filter's per-call output.

use std::io;

use crate::support::{mock_peer, run_paused, settle, Recorder};
use flate2::{Compression, FlushCompress};
use sockactor::filters::{Compress, CompressError};
use sockactor::messages::{Handle, SocketEventKind};
use sockactor::{MockTransport, Socket, SocketConfig, TransportError};

/// `len` zero bytes, deflated: about a thousandth of `len`.
fn bomb(len: usize) -> Vec<u8> {
    let mut deflater = flate2::Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(len / 500 + 1024);
    deflater
        .compress_vec(&vec![0u8; len], &mut out, FlushCompress::Sync)
        .expect("deflate");
    assert_eq!(deflater.total_in() as usize, len);
    out
}

/// The `CompressError` inside a read failure.
fn compress_error(error: &TransportError) -> CompressError {
    match error {
        TransportError::Io(e) => {
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{error}");
            e.get_ref()
                .and_then(|inner| inner.downcast_ref::<CompressError>())
                .cloned()
                .unwrap_or_else(|| panic!("not a CompressError: {error}"))
        }
        other => panic!("not an i/o error: {other}"),
    }
}

/// Feeds `encoded` to a socket reading through `filter`; returns its recorder once the
/// read failed.
async fn feed(filter: Compress, encoded: Vec<u8>) -> Recorder {
    let mock = MockTransport::start();
    let recorder = Recorder::default();
    let _socket = Socket::builder()
        .functions(filter.wrap(mock.functions()))
        .config(SocketConfig {
            read_chunk: 1 << 20,
            ..SocketConfig::default()
        })
        .subscriber(recorder.start().recipient())
        .connect(mock_peer())
        .await
        .expect("connect");
    settle().await;
    mock.push_inbound(Handle(1), encoded);
    for _ in 0..10_000 {
        settle().await;
        if recorder.count(|e| matches!(e, SocketEventKind::ReadFailed(_))) > 0 {
            break;
        }
    }
    recorder
}

fn the_read_failure(recorder: &Recorder) -> CompressError {
    let events = recorder.events.lock().expect("lock");
    let failures: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SocketEventKind::ReadFailed(error) => Some(compress_error(error)),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 1, "one read failure");
    failures[0].clone()
}

fn largest_delivery(recorder: &Recorder) -> usize {
    let events = recorder.events.lock().expect("lock");
    events
        .iter()
        .filter_map(|e| match e {
            SocketEventKind::Received(bytes) => Some(bytes.len()),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn a_stream_inflating_past_the_total_is_too_large() {
    run_paused(|| async {
        let encoded = bomb(64 << 20);
        assert!(encoded.len() < 128 * 1024, "{} bytes", encoded.len());
        let filter = Compress::new()
            .max_ratio(u64::MAX)
            .max_total(1 << 20)
            .max_output_per_call(16 * 1024);
        let recorder = feed(filter, encoded).await;
        assert_eq!(
            the_read_failure(&recorder),
            CompressError::TooLarge { limit: 1 << 20 }
        );
        let through = recorder.received();
        assert!(through.len() <= (1 << 20) + 16 * 1024, "{}", through.len());
        assert!(through.iter().all(|&b| b == 0));
        assert!(largest_delivery(&recorder) <= 16 * 1024);
    });
}

#[test]
fn a_kibibyte_inflating_past_the_ratio_is_refused() {
    run_paused(|| async {
        let encoded = bomb(1 << 20);
        assert!(encoded.len() <= 1100, "{} bytes", encoded.len());
        let filter = Compress::new().max_ratio(100).max_output_per_call(8 * 1024);
        let recorder = feed(filter, encoded).await;
        match the_read_failure(&recorder) {
            CompressError::RatioExceeded {
                consumed,
                produced,
                ratio,
            } => {
                assert_eq!(ratio, 100);
                assert!(produced > 100 * consumed, "{produced} from {consumed}");
            }
            other => panic!("not a ratio error: {other}"),
        }
        // Refused within one call's output of the 64 KiB the ratio starts at.
        assert!(recorder.received().len() <= 64 * 1024 + 8 * 1024);
        assert!(largest_delivery(&recorder) <= 8 * 1024);
    });
}

#[test]
fn a_compressible_stream_within_the_bounds_is_delivered_whole() {
    run_paused(|| async {
        let encoded = bomb(1 << 20);
        let filter = Compress::new().max_ratio(u64::MAX).max_total(1 << 20);
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let _socket = Socket::builder()
            .functions(filter.wrap(mock.functions()))
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), encoded);
        mock.push_eof(Handle(1));
        for _ in 0..1000 {
            settle().await;
        }
        assert_eq!(recorder.received(), vec![0u8; 1 << 20]);
        assert_eq!(recorder.count(|e| matches!(e, SocketEventKind::Eof)), 1);
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::ReadFailed(_))),
            0
        );
    });
}
