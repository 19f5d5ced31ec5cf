//! The client handshake runs before the socket hears its connect's answer, so a handshake
//! that cannot finish fails the connect with a typed error and leaves no handle open
//! (mock transport, paused time): a silent peer after the handshake timeout (exactly, in
//! tokio time), a peer that closes the connection mid-handshake with `UnexpectedEof`,
//! and a peer that answers with bytes that are not TLS with `InvalidData` and the
//! `rustls::Error` inside, after an alert to the peer.

use std::io;
use std::time::Duration;

use crate::support::tls::{client_config, pki};
use crate::support::{mock_peer, run_paused, settle};
use sockactor::filters::Tls;
use sockactor::messages::Handle;
use sockactor::{MockTransport, Socket, SocketError, TransportError};

/// TLS record content types.
const HANDSHAKE: u8 = 0x16;
const ALERT: u8 = 0x15;

fn tls_over(mock: &MockTransport, timeout: Duration) -> sockactor::SocketFunctions {
    Tls::client(client_config(pki(&["localhost"]).roots), "localhost")
        .expect("server name")
        .handshake_timeout(timeout)
        .wrap(mock.functions())
}

#[test]
fn a_silent_peer_fails_the_connect_after_the_handshake_timeout() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let start = tokio::time::Instant::now();
        let connected = Socket::builder()
            .functions(tls_over(&mock, Duration::from_secs(3)))
            .connect(mock_peer())
            .await;
        let waited = start.elapsed();
        assert!(
            matches!(connected, Err(SocketError::TimedOut(_))),
            "{connected:?}"
        );
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_millis(3010),
            "failed after {waited:?}"
        );
        let written = mock.written(Handle(1));
        assert_eq!(written.first(), Some(&HANDSHAKE), "a ClientHello went out");
        settle().await;
        assert!(mock.is_closed(Handle(1)), "the handle is closed");
    });
}

#[test]
fn a_peer_that_leaves_mid_handshake_fails_the_connect_with_unexpected_eof() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let functions = tls_over(&mock, Duration::from_secs(10));
        let connecting = actix::spawn(async move {
            Socket::builder()
                .functions(functions)
                .connect(mock_peer())
                .await
        });
        settle().await;
        assert_eq!(mock.written(Handle(1)).first(), Some(&HANDSHAKE));
        mock.push_eof(Handle(1));
        let connected = connecting.await.expect("join");
        let Err(SocketError::Connect(TransportError::Io(e))) = &connected else {
            panic!("not a connect i/o error: {connected:?}");
        };
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        settle().await;
        assert!(mock.is_closed(Handle(1)), "the handle is closed");
    });
}

#[test]
fn a_peer_that_does_not_speak_tls_fails_the_connect_with_the_rustls_error() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let functions = tls_over(&mock, Duration::from_secs(10));
        let connecting = actix::spawn(async move {
            Socket::builder()
                .functions(functions)
                .connect(mock_peer())
                .await
        });
        settle().await;
        let hello = mock.written(Handle(1)).len();
        assert!(hello > 0, "a ClientHello went out");
        mock.push_inbound(Handle(1), &b"HTTP/1.1 400 Bad Request\r\n\r\n"[..]);
        let connected = connecting.await.expect("join");
        let Err(SocketError::Connect(TransportError::Io(e))) = &connected else {
            panic!("not a connect i/o error: {connected:?}");
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some(),
            "no rustls error inside: {e:?}"
        );
        settle().await;
        let written = mock.written(Handle(1));
        assert_eq!(
            written.get(hello),
            Some(&ALERT),
            "an alert followed the hello"
        );
        assert!(mock.is_closed(Handle(1)), "the handle is closed");
    });
}
