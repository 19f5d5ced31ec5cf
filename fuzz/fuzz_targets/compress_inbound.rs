//! Arbitrary bytes as a peer's compressed stream, read by a socket over
//! `Compress::new().max_total(..).wrap(mock.functions())`: nothing panics, the socket's
//! reads end with exactly one `Eof` or one `ReadFailed` (and that failure is the filter's
//! typed `CompressError`), no delivery is larger than the per-call bound and all of them
//! together stay within `max_total`.
//!
//! Input layout: byte 0 picks the mode, byte 1's low 3 bits say how many of the next
//! bytes cut the stream into the chunks the peer sends, the rest is the data.
//! - bit 0 of the mode: the harness deflates the data itself (raw deflate with a sync
//!   flush, as a peer's `Compress` sends it); the socket must then deliver exactly the
//!   data when it fits in `max_total`, else a prefix of it and a `TooLarge` failure.
//!   Clear: the data goes out as is (mostly not deflate, sometimes a small bomb).
//! - bits 1-2: `max_total`; bits 3-4: `max_output_per_call`; bits 5-6: `read_chunk`.

#![no_main]

use std::io;

use flate2::{Compression, FlushCompress};
use libfuzzer_sys::fuzz_target;
use sockactor::filters::{Compress, CompressError};
use sockactor::messages::{Handle, SocketEventKind};
use sockactor::{MockTransport, Socket, SocketConfig, TransportError};
use sockactor_fuzz::{chunks, mock_peer, run_paused, settle_until, Recorder};

/// The ratio bound starts once this much plaintext came out (the filter's floor).
const RATIO_FLOOR: usize = 64 * 1024;

/// The filter's bounds and the socket's read size for one input.
#[derive(Clone, Copy, Debug)]
struct Setup {
    max_total: u64,
    per_call: usize,
    read_chunk: usize,
}

impl Setup {
    fn from_mode(mode: u8) -> Self {
        let per_call = [1, 7, 512, 16 * 1024][usize::from((mode >> 3) & 3)];
        let total = [256u64, 4096, 65_536, 1 << 20][usize::from((mode >> 1) & 3)];
        // Keep each run to a few thousand deliveries at most.
        let max_total = total.min(per_call as u64 * 4096);
        let read_chunk = [1, 13, 4096, 64 * 1024][usize::from((mode >> 5) & 3)];
        Setup {
            max_total,
            per_call,
            read_chunk,
        }
    }
}

/// `data`, raw-deflated and sync-flushed.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut deflater = flate2::Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 64);
    deflater
        .compress_vec(data, &mut out, FlushCompress::Sync)
        .expect("deflate into a buffer with room for the worst case");
    assert_eq!(deflater.total_in() as usize, data.len(), "all taken");
    out
}

/// The `CompressError` inside a read failure (`None` if it is anything else).
fn compress_error(error: &TransportError) -> Option<CompressError> {
    match error {
        TransportError::Io(e) if e.kind() == io::ErrorKind::InvalidData => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<CompressError>())
            .cloned(),
        _ => None,
    }
}

fn failures(recorder: &Recorder) -> Vec<TransportError> {
    recorder
        .events
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|e| match e {
            SocketEventKind::ReadFailed(error) => Some(error.clone()),
            _ => None,
        })
        .collect()
}

/// Feeds `stream` in `pieces` to a socket reading through the filter; its recorder once
/// its reads ended (or the settle budget ran out).
async fn feed(setup: Setup, pieces: Vec<&[u8]>) -> Recorder {
    let mock = MockTransport::start();
    let recorder = Recorder::default();
    let filter = Compress::new()
        .max_total(setup.max_total)
        .max_output_per_call(setup.per_call);
    let _socket = Socket::builder()
        .functions(filter.wrap(mock.functions()))
        .config(SocketConfig {
            read_chunk: setup.read_chunk,
            ..SocketConfig::default()
        })
        .subscriber(recorder.events_recipient())
        .connect(mock_peer())
        .await
        .expect("connect through the mock");
    for piece in pieces {
        mock.push_inbound(Handle(1), piece.to_vec());
    }
    mock.push_eof(Handle(1));
    let ended = || {
        recorder.count(|e| matches!(e, SocketEventKind::Eof | SocketEventKind::ReadFailed(_))) > 0
    };
    let budget = 64 + 4 * (setup.max_total as usize / setup.per_call + 1);
    assert!(settle_until(budget, ended).await, "reads never ended");
    // A little longer, to see anything that would come after the end.
    settle_until(8, || false).await;
    recorder
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let Some((&cuts, rest)) = rest.split_first() else {
        return;
    };
    let seed_len = usize::from(cuts & 7).min(rest.len());
    let (seed, data) = rest.split_at(seed_len);
    let setup = Setup::from_mode(mode);
    let valid = mode & 1 == 1;
    let stream = if valid { deflate(data) } else { data.to_vec() };
    let recorder = run_paused(|| feed(setup, chunks(seed, &stream)));

    let eofs = recorder.count(|e| matches!(e, SocketEventKind::Eof));
    let failed = failures(&recorder);
    assert_eq!(eofs + failed.len(), 1, "one end: {eofs} EOFs, {failed:?}");
    if let Some(error) = failed.first() {
        assert!(
            compress_error(error).is_some(),
            "a read failure that is not the filter's typed error: {error}"
        );
    }
    let sizes = recorder.deliveries();
    assert!(
        sizes.iter().all(|&n| n > 0 && n <= setup.per_call),
        "a delivery outside 1..={}: {sizes:?}",
        setup.per_call
    );
    let received = recorder.received();
    assert!(
        received.len() as u64 <= setup.max_total,
        "{} bytes through a max_total of {}",
        received.len(),
        setup.max_total
    );
    if valid {
        assert!(data.starts_with(&received), "not a prefix of what was sent");
        if data.len() as u64 <= setup.max_total && data.len() <= RATIO_FLOOR {
            assert_eq!(received.len(), data.len(), "a valid stream cut short");
            assert_eq!(eofs, 1, "a valid stream failed: {failed:?}");
        } else if data.len() as u64 > setup.max_total {
            let error = failed.first().and_then(compress_error);
            assert_eq!(
                error,
                Some(CompressError::TooLarge {
                    limit: setup.max_total
                }),
                "too large a stream passed"
            );
        }
    }
});
