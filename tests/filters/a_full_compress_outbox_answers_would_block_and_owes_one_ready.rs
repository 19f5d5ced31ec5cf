//! The compression layer's outbox of encoded bytes is bounded: while the transport does
//! not take them and the outbox is full, the socket's transmits are answered would-block
//! (nothing more taken, no retries on the transport), and once the transport took bytes
//! there is room again and the held bytes go out without anyone asking, in order.
//! (The layer runs in the socket since the core rebuild: the would-block it answers is
//! the socket's own, counted in its stats and in the write's telemetry.)

use std::time::Duration;

use crate::support::{mock_peer, pattern, run_paused, settle};
use bytes::Bytes;
use flate2::FlushDecompress;
use sockactor::filters::Compress;
use sockactor::messages::{Close, GetStats, Handle, Write};
use sockactor::{MockTransport, SendStep, Socket};

const OUTBOX: usize = 512;

#[test]
fn a_full_outbox_blocks_the_socket_until_the_inner_transport_takes_bytes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = Socket::builder()
            .functions(
                Compress::new()
                    .level(0)
                    .max_buffered(OUTBOX)
                    .wrap(mock.functions()),
            )
            .connect(mock_peer())
            .await
            .expect("connect");
        let handle = Handle(1);
        // The transport blocks until released.
        mock.script_sendv(handle, [SendStep::Hold]);
        let data = Bytes::from(pattern(200_000, 1));
        let answer = socket.send(Write::new(data.clone()));
        let answer = tokio::spawn(answer);
        settle().await;
        // Level 0 stores: the encoded bytes fill the outbox, and the transport holds.
        let stats = socket.send(GetStats).await.expect("stats");
        assert!(
            stats.would_blocks > 0,
            "the full outbox answered would-block"
        );
        assert_eq!(mock.sendv_calls(handle), 1, "one held call, no retries");
        assert!(
            (stats.bytes_sent as usize) < data.len(),
            "the outbox took only what fits"
        );
        assert!(!answer.is_finished(), "the write waits for the transport");

        mock.release(handle);
        let done = answer
            .await
            .expect("task")
            .expect("mailbox")
            .expect("written");
        assert_eq!(done.len, data.len());
        assert!(done.would_blocks > 0);
        socket.do_send(Close::Graceful);
        for _ in 0..10_000 {
            if mock.is_closed(handle) {
                break;
            }
            settle().await;
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        // Everything reached the transport in order, in calls within the bound.
        let log = mock.sendv_log(handle);
        assert!(
            log.iter().all(|r| r.offered <= OUTBOX),
            "outbox over its bound"
        );
        let written = mock.written(handle);
        let mut inflater = flate2::Decompress::new(false);
        let mut out = Vec::with_capacity(data.len() + 1);
        inflater
            .decompress_vec(&written, &mut out, FlushDecompress::Sync)
            .expect("valid stream");
        assert!(out == data, "stream differs");
    });
}

#[test]
fn the_outbox_never_holds_more_than_its_bound_at_any_level() {
    run_paused(|| async {
        for level in [0, 1, 6, 9] {
            let mock = MockTransport::start();
            // A slow inner transport: 300 bytes per call, after 1 ms.
            mock.set_default_step(SendStep::Slow {
                bytes: 300,
                after: Duration::from_millis(1),
            });
            let socket = Socket::builder()
                .functions(
                    Compress::new()
                        .level(level)
                        .max_buffered(2000)
                        .wrap(mock.functions()),
                )
                .connect(mock_peer())
                .await
                .expect("connect");
            let data = pattern(100_000, u64::from(level) + 7);
            let done = socket
                .send(Write::new(data.clone()))
                .await
                .expect("mailbox")
                .expect("written");
            assert_eq!(done.len, data.len());
            assert!(done.would_blocks > 0, "level {level}: the outbox filled");
            socket.do_send(Close::Graceful);
            for _ in 0..100_000 {
                if mock.is_closed(Handle(1)) {
                    break;
                }
                settle().await;
                tokio::time::advance(Duration::from_millis(1)).await;
            }
            let log = mock.sendv_log(Handle(1));
            let largest = log.iter().map(|r| r.offered).max().unwrap_or(0);
            assert!(largest <= 2000, "level {level}: {largest} bytes held");
            let written = mock.written(Handle(1));
            let mut inflater = flate2::Decompress::new(false);
            let mut out = Vec::with_capacity(data.len() + 1);
            inflater
                .decompress_vec(&written, &mut out, FlushDecompress::Sync)
                .expect("valid stream");
            assert!(out == data, "level {level}: stream differs");
        }
    });
}
