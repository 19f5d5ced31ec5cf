//! Bounded buffering through TLS (mock transport, paused time, a rustls server at the
//! far end): while the inner transport holds the ciphertext, the TLS filter takes the
//! socket's plaintext only until its outbox is full, then answers would-block (the write
//! is not done, and no more than the outbox's bound was taken); once the inner transport
//! takes the bytes the owed `Ready` lets the socket go on, and the server decrypts
//! exactly what was written. No inner `sendv` carries more than the per-call bound. And
//! the client's last handshake flight goes out on its own, before any write: the server
//! is done with its handshake once the client's connect is answered.

use std::time::Duration;

use crate::support::tls::{client_config, pki, MockPeer};
use crate::support::{mock_peer, pattern, run_paused, settle};
use bytes::Bytes;
use sockactor::filters::Tls;
use sockactor::messages::{GetStats, Handle, Write};
use sockactor::{MockTransport, SendStep, Socket};

const OUTBOX: usize = 4096;
const PER_CALL: usize = 1024;
const TOTAL: usize = 40_000;

#[test]
fn the_socket_waits_for_room_and_then_every_byte_arrives() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let functions = Tls::client(client_config(pki.roots), "localhost")
            .expect("server name")
            .max_buffered(OUTBOX)
            .max_per_call(PER_CALL)
            .wrap(mock.functions());
        let connecting = actix::spawn(async move {
            Socket::builder()
                .functions(functions)
                .connect(mock_peer())
                .await
        });
        let mut peer = MockPeer::new(pki.server.clone(), Handle(1));
        for _ in 0..20 {
            settle().await;
            peer.pump(&mock);
            if connecting.is_finished() {
                break;
            }
        }
        let socket = connecting
            .await
            .expect("join")
            .expect("the handshake with the mock peer succeeds");
        settle().await;
        peer.pump(&mock);
        assert!(!peer.is_handshaking());

        // The inner transport now holds every sendv until released.
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let data = Bytes::from(pattern(TOTAL, 83));
        let write = actix::spawn(socket.send(Write::new(data.clone())));
        settle().await;
        let stats = socket.send(GetStats).await.expect("stats");
        assert!(!write.is_finished(), "the write cannot be done yet");
        assert_eq!(
            stats.would_blocks, 1,
            "the full outbox answered would-block"
        );
        assert!(
            stats.bytes_sent > 0 && stats.bytes_sent as usize <= OUTBOX,
            "{} plaintext bytes taken with an outbox of {OUTBOX}",
            stats.bytes_sent
        );

        mock.release(Handle(1));
        let written = tokio::time::timeout(Duration::from_secs(10), write)
            .await
            .expect("the owed Ready lets the write finish")
            .expect("join")
            .expect("mailbox")
            .expect("written");
        assert_eq!(written.len, TOTAL);
        settle().await;
        peer.pump(&mock);
        assert_eq!(peer.received.len(), TOTAL);
        assert!(peer.received == data, "the server decrypted other bytes");
        let largest = mock
            .sendv_log(Handle(1))
            .iter()
            .map(|r| r.offered)
            .max()
            .unwrap_or(0);
        assert!(largest <= PER_CALL, "an inner sendv of {largest} bytes");
    });
}
