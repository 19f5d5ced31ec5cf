//! A write through byte layers is answered `Ok` once the layers took it; an abort (or a
//! drain timeout) afterwards must not lose those bytes while the peer reads a clean EOF.
//! Found by the network simulation (seed 23): an aborted deflate socket dropped the
//! compressed bytes still in its outbox and closed, and its peer read a clean end 7,203
//! bytes short of what the answers acknowledged. Now the handle closes once the outbox
//! has drained, as a kernel sends its buffer after a close, or at the layers' close
//! timeout.

use std::time::Duration;

use crate::support::{mock_peer, run_paused, settle};
use flate2::FlushDecompress;
use sockactor::filters::Compress;
use sockactor::messages::{Close, Handle, Write};
use sockactor::{MockTransport, SendStep, Socket};

/// Incompressible bytes, so the layer's output is as long as the input.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn inflate(encoded: &[u8]) -> Vec<u8> {
    let mut inflater = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(1 << 20);
    inflater
        .decompress_vec(encoded, &mut out, FlushDecompress::Sync)
        .expect("a valid deflate stream");
    out
}

/// A deflate socket whose transport took 100 bytes and holds the rest, with a write
/// answered `Ok` (taken by the layer), then aborted.
async fn aborted_with_bytes_held(
    mock: &MockTransport,
    close_timeout: Duration,
    data: &[u8],
) -> actix::Addr<Socket> {
    mock.script_sendv(Handle(1), [SendStep::Accept(100)]);
    mock.set_default_step(SendStep::Hold);
    let socket = Socket::builder()
        .functions(
            Compress::new()
                .close_timeout(close_timeout)
                .wrap(mock.functions()),
        )
        .connect(mock_peer())
        .await
        .expect("connect");
    let written = socket
        .send(Write::new(data.to_vec()))
        .await
        .expect("mailbox")
        .expect("taken by the layer");
    assert_eq!(written.len, data.len());
    socket.do_send(Close::Abort);
    settle().await;
    socket
}

#[test]
fn the_bytes_answered_ok_go_out_before_the_handle_closes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let data = noise(4000);
        let _socket = aborted_with_bytes_held(&mock, Duration::from_secs(10), &data).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !mock.is_closed(Handle(1)),
            "closed with {} of the bytes answered Ok sent",
            mock.written(Handle(1)).len()
        );
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        settle().await;
        assert!(mock.is_closed(Handle(1)), "closed once they went out");
        assert!(
            inflate(&mock.written(Handle(1))) == data,
            "the peer has every byte"
        );
    });
}

#[test]
fn a_transport_that_never_takes_them_is_closed_at_the_close_timeout() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let _socket = aborted_with_bytes_held(&mock, Duration::from_secs(2), &noise(4000)).await;
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert!(!mock.is_closed(Handle(1)), "closed before the timeout");
        tokio::time::sleep(Duration::from_millis(200)).await;
        settle().await;
        assert!(mock.is_closed(Handle(1)), "closed at the timeout");
    });
}

#[test]
fn an_abort_with_nothing_held_closes_at_once() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = Socket::builder()
            .functions(Compress::new().wrap(mock.functions()))
            .connect(mock_peer())
            .await
            .expect("connect");
        socket
            .send(Write::new(noise(500)))
            .await
            .expect("mailbox")
            .expect("sent");
        socket.do_send(Close::Abort);
        settle().await;
        assert!(mock.is_closed(Handle(1)));
    });
}

/// Found by the simulation too (seed 62): a socket whose every address was dropped
/// stopped at once when its queue was empty, though its deflate outbox still held bytes
/// answered `Ok`; the peer read a clean EOF 1,246 bytes short.
#[test]
fn dropping_every_address_sends_them_too_before_the_socket_stops() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(100)]);
        mock.set_default_step(SendStep::Hold);
        let registry = sockactor::Registry::new();
        let socket = Socket::builder()
            .functions(Compress::new().wrap(mock.functions()))
            .registry(&registry)
            .connect(mock_peer())
            .await
            .expect("connect");
        let data = noise(4000);
        socket
            .send(Write::new(data.clone()))
            .await
            .expect("mailbox")
            .expect("taken by the layer");
        drop(socket);
        settle().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !mock.is_closed(Handle(1)),
            "closed with {} of the bytes answered Ok sent",
            mock.written(Handle(1)).len()
        );
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        settle().await;
        assert!(mock.is_closed(Handle(1)), "closed once they went out");
        assert!(
            inflate(&mock.written(Handle(1))) == data,
            "the peer has every byte"
        );
        assert!(registry.is_empty(), "and the socket stopped");
    });
}

/// Found by the simulation (seed 162): a graceful close's drain timeout covered only the
/// queue; a deflate socket whose outbox could not drain closed only at the layers' close
/// timeout, 10 s, whatever its drain timeout. Now the socket closes at the drain
/// deadline, and the bytes answered `Ok` still go out behind it until the close timeout.
#[test]
fn a_drain_timeout_also_bounds_the_layers_flush() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(100)]);
        mock.set_default_step(SendStep::Hold);
        let recorder = crate::support::Recorder::default();
        let socket = Socket::builder()
            .functions(Compress::new().wrap(mock.functions()))
            .config(sockactor::SocketConfig {
                drain_timeout: Some(Duration::from_secs(1)),
                ..sockactor::SocketConfig::default()
            })
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let data = noise(4000);
        socket
            .send(Write::new(data.clone()))
            .await
            .expect("mailbox")
            .expect("taken by the layer");
        socket.do_send(Close::Graceful);
        settle().await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        settle().await;
        assert_eq!(
            recorder.count(|e| matches!(e, sockactor::messages::SocketEventKind::Closed { .. })),
            1,
            "closed at the drain deadline"
        );
        // The bytes answered Ok still go out behind the close.
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        assert!(
            inflate(&mock.written(Handle(1))) == data,
            "the peer has every byte"
        );
    });
}
