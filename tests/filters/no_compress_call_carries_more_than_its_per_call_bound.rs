//! Fairness through the compression layer: however large the writes a socket queues, no
//! `sendv` it makes on its transport carries more than the per-call bound of encoded
//! bytes (a transport that takes all gets full calls), and no delivery of inflated
//! bytes is larger than the per-call output bound; every byte still arrives in order.

use crate::support::{mock_peer, pattern, run_paused, settle, watermarks, Recorder};
use bytes::Bytes;
use flate2::FlushDecompress;
use sockactor::filters::Compress;
use sockactor::messages::{GetWriter, Handle, Write};
use sockactor::{MockTransport, Socket, SocketConfig};

const BOUND: usize = 1000;

fn inflate(encoded: &[u8], len: usize) -> Vec<u8> {
    let mut inflater = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(len + 1);
    inflater
        .decompress_vec(encoded, &mut out, FlushDecompress::Sync)
        .expect("a valid deflate stream");
    assert_eq!(inflater.total_in() as usize, encoded.len());
    out
}

#[test]
fn each_sendv_carries_at_most_the_bound_and_full_calls_when_the_transport_takes_all() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = Socket::builder()
            .functions(Compress::new().max_per_call(BOUND).wrap(mock.functions()))
            .connect(mock_peer())
            .await
            .expect("connect");
        let data = Bytes::from(pattern(10_000, 3));
        // Two writes in one batch, as two segments were offered before.
        let (a, b) = (data.slice(..5000), data.slice(5000..));
        let first = socket.send(Write::new(a));
        let second = socket.send(Write::new(b));
        first.await.expect("mailbox").expect("written");
        second.await.expect("mailbox").expect("written");
        for _ in 0..10 {
            settle().await;
        }
        let log = mock.sendv_log(Handle(1));
        let written = mock.written(Handle(1));
        assert!(log.iter().all(|r| (1..=BOUND).contains(&r.offered)));
        // The mock takes all: every call but the last of each flush is full.
        let full = log.iter().filter(|r| r.offered == BOUND).count();
        assert!(
            full >= written.len() / BOUND - 2,
            "{full} full calls of {}",
            log.len()
        );
        assert_eq!(inflate(&written, data.len()), data);
    });
}

#[test]
fn no_inner_sendv_carries_more_than_the_bound() {
    run_paused(|| async {
        const TOTAL: usize = 300_000;
        let mock = MockTransport::start();
        let socket = Socket::builder()
            .functions(Compress::new().max_per_call(BOUND).wrap(mock.functions()))
            .config(watermarks(1 << 24, 1 << 20))
            .connect(mock_peer())
            .await
            .expect("connect");
        let writer = socket.send(GetWriter).await.expect("writer");
        // Random bytes: the encoded stream is a little longer than the plaintext.
        let data = Bytes::from(pattern(TOTAL, 5));
        let sizes = [1usize, 30_000, 7, 4096, 50_000, 900];
        let (mut offset, mut last) = (0, None);
        for size in sizes.iter().cycle() {
            if offset == TOTAL {
                break;
            }
            let end = (offset + size).min(TOTAL);
            last = Some(writer.write_answered(data.slice(offset..end)));
            offset = end;
        }
        last.expect("writes").await.expect("written");
        for _ in 0..100 {
            settle().await;
        }
        let log = mock.sendv_log(Handle(1));
        let largest = log.iter().map(|r| r.offered).max().unwrap_or(0);
        assert!(
            largest <= BOUND,
            "a sendv of {largest} bytes, bound {BOUND}"
        );
        let written = mock.written(Handle(1));
        assert!(written.len() > TOTAL, "random data does not shrink");
        assert!(log.len() >= written.len() / BOUND, "{} calls", log.len());
        assert!(inflate(&written, TOTAL) == data, "stream differs");
    });
}

#[test]
fn no_delivery_is_larger_than_the_output_bound() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let _socket = Socket::builder()
            .functions(
                Compress::new()
                    .max_output_per_call(BOUND)
                    .wrap(mock.functions()),
            )
            .config(SocketConfig {
                read_chunk: 1 << 20,
                ..SocketConfig::default()
            })
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let plain = vec![7u8; 50_000];
        let mut deflater = flate2::Compress::new(flate2::Compression::default(), false);
        let mut encoded = Vec::with_capacity(1 << 16);
        deflater
            .compress_vec(&plain, &mut encoded, flate2::FlushCompress::Sync)
            .expect("deflate");
        mock.push_inbound(Handle(1), encoded);
        for _ in 0..1000 {
            settle().await;
            if recorder.received().len() >= plain.len() {
                break;
            }
        }
        let largest = recorder.delivery_lens().into_iter().max();
        assert!(
            largest.is_some_and(|n| n <= BOUND),
            "{largest:?} bytes in one delivery"
        );
        assert_eq!(recorder.received(), plain);
    });
}
