//! A close through the compression filter hands the inner transport every encoded byte
//! it still holds before the inner `CloseSocket` (a mock that holds its `sendv`s keeps
//! the handle open until released, and the whole stream is there when it closes); a
//! close whose bytes the inner transport never takes still closes the handle, after the
//! filter's close timeout.

use std::time::Duration;

use crate::support::{mock_peer, pattern, run_paused, settle};
use bytes::Bytes;
use flate2::FlushDecompress;
use sockactor::filters::Compress;
use sockactor::messages::{Close, Handle, Write};
use sockactor::{MockTransport, SendStep, Socket};

fn inflate(encoded: &[u8]) -> Vec<u8> {
    let mut inflater = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(1 << 20);
    inflater
        .decompress_vec(encoded, &mut out, FlushDecompress::Sync)
        .expect("a valid deflate stream");
    out
}

#[test]
fn the_close_waits_for_the_held_bytes_to_go_out() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let socket = Socket::builder()
            .functions(Compress::new().wrap(mock.functions()))
            .connect(mock_peer())
            .await
            .expect("connect");
        let data = Bytes::from(pattern(20_000, 4));
        let done = socket
            .send(Write::new(data.clone()))
            .await
            .expect("mailbox")
            .expect("taken into the compressor");
        assert_eq!(done.len, data.len());
        socket.do_send(Close::Graceful);
        settle().await;
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        assert!(
            !mock.is_closed(Handle(1)),
            "closed while encoded bytes were held"
        );
        assert!(mock.written(Handle(1)).is_empty());

        mock.release(Handle(1));
        settle().await;
        assert!(mock.is_closed(Handle(1)), "closed once flushed");
        assert!(inflate(&mock.written(Handle(1))) == data, "stream differs");
        let log = mock.sendv_log(Handle(1));
        assert!(log.len() >= 2 && log[0].would_block && log[1].accepted > 0);
    });
}

#[test]
fn a_close_the_inner_transport_never_drains_still_closes_after_the_timeout() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let socket = Socket::builder()
            .functions(
                Compress::new()
                    .close_timeout(Duration::from_secs(2))
                    .wrap(mock.functions()),
            )
            .connect(mock_peer())
            .await
            .expect("connect");
        socket
            .send(Write::new(pattern(1000, 2)))
            .await
            .expect("mailbox")
            .expect("taken into the compressor");
        socket.do_send(Close::Graceful);
        settle().await;
        tokio::time::advance(Duration::from_millis(1900)).await;
        settle().await;
        assert!(!mock.is_closed(Handle(1)), "closed before the timeout");
        tokio::time::advance(Duration::from_millis(200)).await;
        settle().await;
        assert!(mock.is_closed(Handle(1)), "closed after the timeout");
    });
}
