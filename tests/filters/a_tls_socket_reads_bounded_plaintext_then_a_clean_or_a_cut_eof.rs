//! The read side of the TLS filter (mock transport, paused time, a rustls server at the
//! far end): no read hands the socket more plaintext than the filter's per-call bound,
//! and the rest comes in the next reads, byte exact; the peer's close_notify reaches the
//! subscriber as EOF after all the data; an inner EOF without close_notify is a read
//! error of kind `UnexpectedEof` (the stream may have been cut), never a clean EOF. No
//! delivery is larger than the socket's `read_chunk` either (found by the tls_inbound
//! fuzz target: a read answered by message delivered the filter's bound, not the
//! socket's).

use std::io;

use crate::support::tls::{client_config, connect_to_mock_peer, pki, Pki};
use crate::support::{pattern, run_paused, settle, Recorder};
use sockactor::filters::Tls;
use sockactor::messages::{Handle, SocketEventKind};
use sockactor::{MockTransport, Socket, SocketFunctions, TransportError};

const BOUND: usize = 1000;
const TOTAL: usize = 50_000;

fn tls(pki: &Pki, mock: &MockTransport) -> SocketFunctions {
    Tls::client(client_config(pki.roots.clone()), "localhost")
        .expect("server name")
        .max_output_per_call(BOUND)
        .wrap(mock.functions())
}

#[test]
fn no_delivery_is_larger_than_the_sockets_read_chunk() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let builder = Socket::builder()
            .config(sockactor::SocketConfig {
                read_chunk: 13,
                ..sockactor::SocketConfig::default()
            })
            .subscriber(recorder.start().recipient());
        let (_socket, mut peer) =
            connect_to_mock_peer(&mock, builder, tls(&pki, &mock), pki.server.clone()).await;
        let data = pattern(100, 7);
        peer.send(&mock, &data);
        peer.close_notify(&mock);
        settle().await;
        let largest = recorder.delivery_lens().into_iter().max();
        assert!(
            largest.is_some_and(|n| n <= 13),
            "a delivery of {largest:?} bytes"
        );
        assert_eq!(recorder.received(), data);
    });
}

#[test]
fn every_read_is_within_the_bound_and_close_notify_is_eof() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let builder = Socket::builder().subscriber(recorder.start().recipient());
        let (_socket, mut peer) =
            connect_to_mock_peer(&mock, builder, tls(&pki, &mock), pki.server.clone()).await;
        let data = pattern(TOTAL, 89);
        peer.send(&mock, &data);
        peer.close_notify(&mock);
        settle().await;
        let (sizes, last_is_eof) = {
            let events = recorder.events.lock().expect("lock");
            let sizes: Vec<usize> = events
                .iter()
                .filter_map(|e| match e {
                    SocketEventKind::Received(bytes) => Some(bytes.len()),
                    _ => None,
                })
                .collect();
            (sizes, matches!(events.last(), Some(SocketEventKind::Eof)))
        };
        assert!(
            sizes.iter().all(|&n| n <= BOUND),
            "a read of {} bytes, bound {BOUND}",
            sizes.iter().max().copied().unwrap_or(0)
        );
        assert!(sizes.len() >= TOTAL / BOUND, "{} reads", sizes.len());
        assert_eq!(recorder.received(), data);
        assert!(last_is_eof, "the last event is EOF");
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::ReadFailed(_))),
            0
        );
    });
}

#[test]
fn an_eof_without_close_notify_is_an_unexpected_eof_error() {
    run_paused(|| async {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let builder = Socket::builder().subscriber(recorder.start().recipient());
        let (_socket, mut peer) =
            connect_to_mock_peer(&mock, builder, tls(&pki, &mock), pki.server.clone()).await;
        let data = pattern(3000, 97);
        peer.send(&mock, &data);
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(recorder.received(), data, "the data before the cut arrives");
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Eof)),
            0,
            "a cut stream is no clean EOF"
        );
        let events = recorder.events.lock().expect("lock");
        let failed = events.iter().find_map(|e| match e {
            SocketEventKind::ReadFailed(TransportError::Io(e)) => Some(e.kind()),
            _ => None,
        });
        assert_eq!(failed, Some(io::ErrorKind::UnexpectedEof));
    });
}
