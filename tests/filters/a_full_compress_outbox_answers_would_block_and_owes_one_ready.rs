//! The compression filter's outbox of encoded bytes is bounded: while the inner
//! transport does not take them and the outbox is full, a `sendv` is answered
//! would-block (nothing taken), and exactly one `Ready(Writable)` follows once the
//! inner transport took bytes and there is room; the held bytes go out without the
//! socket asking, in order.

use std::time::Duration;

use crate::support::{channel, drain, mock_peer, pattern, run_paused, settle};
use bytes::Bytes;
use flate2::FlushDecompress;
use sockactor::filters::Compress;
use sockactor::messages::{
    Close, Family, Handle, OpenSocket, Readiness, Ready, SendV, Sent, SocketKind, Write,
};
use sockactor::{MockTransport, SendStep, Socket, SocketFunctions};

const OUTBOX: usize = 512;

async fn send(functions: &SocketFunctions, msg: SendV) -> Sent {
    functions
        .sendv()
        .send(msg)
        .await
        .expect("mailbox")
        .expect("sendv")
}

#[test]
fn a_full_outbox_blocks_the_socket_until_the_inner_transport_takes_bytes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let functions = Compress::new()
            .level(0)
            .max_buffered(OUTBOX)
            .wrap(mock.functions());
        let (events, mut ready) = channel::<Ready>();
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
        // The inner transport blocks until released.
        mock.script_sendv(handle, [SendStep::Hold]);
        let data = Bytes::from(pattern(200_000, 1));
        let msg = |from: usize| SendV {
            handle,
            segments: vec![data.slice(from..)],
            to: None,
        };
        let Sent::Accepted(first) = send(&functions, msg(0)).await else {
            panic!("an empty outbox takes bytes");
        };
        assert!(first > 0);
        // Level 0 stores: the encoded bytes fill the outbox (the compressor's own window
        // takes some input first), and the inner transport holds.
        let mut taken = first;
        let blocked = loop {
            match send(&functions, msg(taken)).await {
                Sent::Accepted(n) => taken += n,
                Sent::WouldBlock => break true,
            }
            assert!(taken < data.len(), "the outbox never filled");
        };
        assert!(blocked);
        settle().await;
        assert!(drain(&mut ready).is_empty(), "no Ready while nothing moves");
        assert_eq!(mock.sendv_calls(handle), 1, "one held call, no retries");

        mock.release(handle);
        settle().await;
        let notices = drain(&mut ready);
        assert_eq!(
            notices,
            vec![Ready {
                handle,
                readiness: Readiness::Writable
            }],
            "exactly one Ready once there is room"
        );
        // Everything taken so far reached the inner transport, without the socket asking.
        let written = mock.written(handle);
        let mut inflater = flate2::Decompress::new(false);
        let mut out = Vec::with_capacity(data.len());
        inflater
            .decompress_vec(&written, &mut out, FlushDecompress::Sync)
            .expect("valid stream");
        assert_eq!(out.len(), taken, "{} encoded bytes written", written.len());
        assert!(out == data[..taken], "stream differs");
        let log = mock.sendv_log(handle);
        assert!(
            log.iter().all(|r| r.offered <= OUTBOX),
            "outbox over its bound"
        );
        // The socket's retry makes progress.
        assert!(matches!(send(&functions, msg(taken)).await, Sent::Accepted(n) if n > 0));
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
