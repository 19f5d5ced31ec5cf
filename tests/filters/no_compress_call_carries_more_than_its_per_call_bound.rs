//! Fairness through the compression filter: however large the batches a socket offers,
//! the filter takes at most its per-call bound of the caller's bytes per `sendv`, no
//! `sendv` it makes on its inner transport carries more than that bound of encoded
//! bytes, and no `recvfrom` returns more than its per-call output; every byte still
//! arrives in order.

use crate::support::{channel, mock_peer, pattern, run_paused, settle, watermarks};
use bytes::Bytes;
use flate2::FlushDecompress;
use sockactor::filters::Compress;
use sockactor::messages::{
    Family, GetWriter, Handle, OpenSocket, Ready, Received, RecvFrom, SendV, Sent, SocketKind,
};
use sockactor::{MockTransport, Socket};

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
fn each_sendv_takes_at_most_the_bound_of_the_callers_bytes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let functions = Compress::new().max_per_call(BOUND).wrap(mock.functions());
        let (events, _ready) = channel::<Ready>();
        let handle = functions
            .open()
            .send(OpenSocket {
                family: Family::Ipv4,
                kind: SocketKind::Stream,
                events: events.downgrade(),
            })
            .await
            .expect("mailbox")
            .expect("open");
        let data = Bytes::from(pattern(10_000, 3));
        let mut offset = 0;
        let mut calls = 0;
        while offset < data.len() {
            // Offer everything left, in two segments.
            let mid = offset + (data.len() - offset) / 2;
            let answer = functions
                .sendv()
                .send(SendV {
                    handle,
                    segments: vec![data.slice(offset..mid), data.slice(mid..)],
                    to: None,
                })
                .await
                .expect("mailbox")
                .expect("sendv");
            let Sent::Accepted(n) = answer else {
                panic!("the mock never blocks, nor does a filter with room");
            };
            assert!((1..=BOUND).contains(&n), "took {n}");
            offset += n;
            calls += 1;
            settle().await;
        }
        assert_eq!(calls, data.len().div_ceil(BOUND));
        assert_eq!(inflate(&mock.written(handle), data.len()), data);
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
fn no_recvfrom_returns_more_than_its_output_bound() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let functions = Compress::new()
            .max_output_per_call(BOUND)
            .wrap(mock.functions());
        let (events, _ready) = channel::<Ready>();
        let handle = functions
            .open()
            .send(OpenSocket {
                family: Family::Ipv4,
                kind: SocketKind::Stream,
                events: events.downgrade(),
            })
            .await
            .expect("mailbox")
            .expect("open");
        let plain = vec![7u8; 50_000];
        let mut deflater = flate2::Compress::new(flate2::Compression::default(), false);
        let mut encoded = Vec::with_capacity(1 << 16);
        deflater
            .compress_vec(&plain, &mut encoded, flate2::FlushCompress::Sync)
            .expect("deflate");
        mock.push_inbound(handle, encoded);
        let mut got = Vec::new();
        for _ in 0..1000 {
            let received = functions
                .recvfrom()
                .send(RecvFrom {
                    handle,
                    max_len: 1 << 20,
                })
                .await
                .expect("mailbox")
                .expect("recvfrom");
            match received {
                Received::Data { bytes, .. } => {
                    assert!(bytes.len() <= BOUND, "{} bytes in one call", bytes.len());
                    got.extend_from_slice(&bytes);
                }
                Received::WouldBlock if got.len() == plain.len() => break,
                Received::WouldBlock => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, plain);
    });
}
