//! A socket writing through the compression filter: writes of mixed sizes (1 byte to
//! 256 KiB, highly compressible and random) are each answered Ok with their own length,
//! and the encoded stream the inner transport took inflates to exactly the bytes
//! written, also with the fault injector (partial accepts, would-blocks, delays; no
//! resets) under the filter and an outbox small enough to fill. The other way, a deflate
//! stream fed in pieces (and through short reads) reaches the subscriber byte exact.

use std::time::Duration;

use crate::support::{mock_peer, pattern, run_paused, settle, watermarks, Recorder};
use bytes::Bytes;
use flate2::{Compression, FlushCompress, FlushDecompress};
use sockactor::filters::{Compress, FaultInjector, Faults};
use sockactor::messages::{Close, GetWriter, Handle};
use sockactor::{MockTransport, SendStep, Socket, SocketConfig, SocketFunctions};

/// Inflates a raw deflate stream (the filter's format) the way a peer would.
fn inflate(encoded: &[u8]) -> Vec<u8> {
    let mut inflater = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(encoded.len() * 4 + 1024);
    loop {
        let consumed = inflater.total_in() as usize;
        if out.capacity() - out.len() < 64 * 1024 {
            out.reserve(256 * 1024);
        }
        inflater
            .decompress_vec(&encoded[consumed..], &mut out, FlushDecompress::Sync)
            .expect("a valid deflate stream");
        if inflater.total_in() as usize == encoded.len() && out.capacity() > out.len() {
            return out;
        }
    }
}

/// Deflates `data` with a sync flush, the way a compressing peer would.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut deflater = flate2::Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    deflater
        .compress_vec(data, &mut out, FlushCompress::Sync)
        .expect("deflate");
    assert_eq!(deflater.total_in() as usize, data.len());
    out
}

/// Writes of mixed sizes and kinds: single bytes, runs of one byte, text, random data.
fn payloads() -> Vec<Vec<u8>> {
    let sizes = [
        1usize,
        2,
        100,
        4096,
        70_000,
        7,
        256 * 1024,
        13,
        65_536,
        1000,
    ];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| match i % 3 {
            0 => pattern(size, i as u64 + 1),
            1 => vec![b'a' + i as u8; size],
            _ => b"the quick brown fox jumps over the lazy dog. "
                .iter()
                .copied()
                .cycle()
                .take(size)
                .collect(),
        })
        .collect()
}

/// Writes every payload through `functions` (over `mock`), checks each answer, and
/// returns the plaintext the encoded stream on handle 1 inflates to.
async fn write_all(mock: &MockTransport, functions: SocketFunctions) -> Vec<u8> {
    let socket = Socket::builder()
        .functions(functions)
        .config(watermarks(1 << 24, 1 << 20))
        .connect(mock_peer())
        .await
        .expect("connect");
    let writer = socket.send(GetWriter).await.expect("writer");
    let payloads = payloads();
    let answers: Vec<_> = payloads
        .iter()
        .map(|p| writer.write_answered(Bytes::from(p.clone())))
        .collect();
    for (i, answer) in answers.into_iter().enumerate() {
        let done = tokio::time::timeout(Duration::from_secs(600), answer)
            .await
            .unwrap_or_else(|_| panic!("write {i} answered"))
            .unwrap_or_else(|e| panic!("write {i} failed: {e}"));
        assert_eq!(done.len, payloads[i].len(), "write {i}");
    }
    // Answered means taken into the compressor; a close hands on what is left first.
    socket.do_send(Close::Graceful);
    for _ in 0..10_000 {
        if mock.is_closed(Handle(1)) {
            break;
        }
        settle().await;
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    assert!(mock.is_closed(Handle(1)), "the socket closed");
    let written = mock.written(Handle(1));
    let total: usize = payloads.iter().map(Vec::len).sum();
    assert!(written.len() < total, "compressible data got smaller");
    inflate(&written)
}

fn expected() -> Vec<u8> {
    payloads().concat()
}

#[test]
fn writes_of_mixed_sizes_inflate_to_exactly_the_bytes_written() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let functions = Compress::new().wrap(mock.functions());
        assert!(write_all(&mock, functions).await == expected());
    });
}

#[test]
fn writes_through_injected_faults_under_the_filter_still_inflate_exactly() {
    run_paused(|| async {
        for seed in 1..=4 {
            let mock = MockTransport::start();
            let faults = Faults::default()
                .partial(0.5)
                .would_block(0.2, Duration::from_millis(3))
                .delay(0.2, Duration::from_millis(2));
            let functions = Compress::new()
                .max_per_call(8 * 1024)
                .max_buffered(10 * 1024)
                .wrap(
                    FaultInjector::new(seed, faults)
                        .max_per_call(3000)
                        .wrap(mock.functions()),
                );
            let got = write_all(&mock, functions).await;
            assert!(got == expected(), "seed {seed}: stream differs");
        }
    });
}

#[test]
fn an_inner_transport_taking_part_of_each_call_still_gets_the_whole_stream() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Accept(777));
        let functions = Compress::new()
            .max_per_call(4096)
            .max_buffered(6000)
            .wrap(mock.functions());
        let got = write_all(&mock, functions).await;
        assert!(got == expected(), "stream differs");
        let log = mock.sendv_log(Handle(1));
        let partial = log.iter().filter(|r| r.accepted < r.offered).count();
        assert!(partial > 10, "only {partial} partial accepts");
        assert!(log.iter().all(|r| r.accepted > 0), "every call took bytes");
    });
}

#[test]
fn a_deflate_stream_fed_in_pieces_reaches_the_subscriber_byte_exact() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let functions = Compress::new()
            .max_output_per_call(5000)
            .wrap(FaultInjector::new(3, Faults::default().short_reads(0.5)).wrap(mock.functions()));
        let _socket = Socket::builder()
            .functions(functions)
            .config(SocketConfig {
                read_chunk: 4096,
                ..SocketConfig::default()
            })
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        let plain = expected();
        let encoded = deflate(&plain);
        let sizes = pattern(64, 9);
        let mut offset = 0;
        for size in sizes.iter().cycle() {
            if offset == encoded.len() {
                break;
            }
            let end = (offset + 1 + usize::from(*size) * 40).min(encoded.len());
            mock.push_inbound(Handle(1), encoded[offset..end].to_vec());
            offset = end;
            settle().await;
        }
        for _ in 0..200 {
            settle().await;
            if recorder.received().len() >= plain.len() {
                break;
            }
        }
        let got = recorder.received();
        assert_eq!(got.len(), plain.len());
        assert!(got == plain, "stream differs from what the peer compressed");
    });
}
