//! Transports hold only weak readiness recipients, so a socket on a message-path
//! transport (here the mock) behaves like one on the in-place system path: when its last
//! address is dropped it sends what is queued, closes its handle and stops. Likewise for
//! datagram sockets.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{channel, drain, run_paused, settle, subscribed_mock_socket, Recorder};
use sockactor::messages::{
    DatagramEvent, DatagramEventKind, Handle, SendDatagram, SocketEventKind, Write,
};
use sockactor::{DatagramSocket, MockTransport, SendStep};

#[test]
fn a_stream_socket_drains_its_queue_then_closes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let socket = subscribed_mock_socket(&mock, recorder.start().recipient()).await;
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::from_millis(20))]);
        for i in 0..10u8 {
            socket.do_send(Write::new(vec![i; 100]));
        }
        settle().await;
        assert!(mock.written(Handle(1)).is_empty(), "blocked for now");
        drop(socket);
        settle().await;
        assert!(
            !mock.is_closed(Handle(1)),
            "not closed with writes still queued"
        );

        tokio::time::sleep(Duration::from_millis(20)).await;
        settle().await;
        let expected: Vec<u8> = (0..10u8).flat_map(|i| vec![i; 100]).collect();
        assert_eq!(
            mock.written(Handle(1)),
            expected,
            "every queued byte went out"
        );
        assert!(mock.is_closed(Handle(1)), "then the handle closed");
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Closed { cause: None })),
            1
        );
    });
}

#[test]
fn an_idle_reading_socket_closes_at_once() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let socket = subscribed_mock_socket(&mock, recorder.start().recipient()).await;
        mock.push_inbound(Handle(1), &b"before"[..]);
        settle().await;
        assert_eq!(recorder.received(), b"before");
        drop(socket);
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Closed { .. })),
            1
        );
    });
}

#[test]
fn a_datagram_socket_sends_what_is_queued_then_closes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (events, mut heard) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .subscriber(events)
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::from_millis(20))]);
        let to = SocketAddr::from(([192, 0, 2, 9], 53));
        for i in 0..5u8 {
            socket.do_send(SendDatagram::new(vec![i; 10]).to(to));
        }
        settle().await;
        drop(socket);
        settle().await;
        assert!(
            !mock.is_closed(Handle(1)),
            "not closed with datagrams still queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        settle().await;
        let sent: Vec<Vec<u8>> = mock
            .datagrams(Handle(1))
            .into_iter()
            .map(|d| d.bytes)
            .collect();
        assert_eq!(sent, (0..5u8).map(|i| vec![i; 10]).collect::<Vec<_>>());
        assert!(mock.is_closed(Handle(1)));
        let closed = drain(&mut heard)
            .into_iter()
            .filter(|e| matches!(e.kind, DatagramEventKind::Closed { cause: None }))
            .count();
        assert_eq!(closed, 1);
    });
}
