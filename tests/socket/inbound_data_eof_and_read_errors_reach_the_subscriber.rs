//! The minimal read path: inbound bytes reach the subscriber in order, then EOF; the
//! socket can still write after the peer's EOF (half-close); a read error is reported
//! and closes the socket; a `recvfrom` answering more than it was asked for is a broken
//! transport, a typed read error (the read window's bound holds).

use std::io;

use crate::support::{mock_peer, run_paused, settle, subscribed_mock_socket, Recorder};
use actix::prelude::*;
use sockactor::messages::{Handle, SocketEventKind, Write};
use sockactor::{MockTransport, Socket, SocketConfig, TransportError};

#[test]
fn data_then_eof_arrive_in_order_and_writing_goes_on() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(SocketConfig {
                read_chunk: 4,
                ..SocketConfig::default()
            })
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), &b"hello "[..]);
        settle().await;
        mock.push_inbound(Handle(1), &b"world"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(recorder.received(), b"hello world");
        assert_eq!(recorder.count(|e| matches!(e, SocketEventKind::Eof)), 1);
        socket
            .send(Write::new(&b"still writing"[..]))
            .await
            .expect("mailbox")
            .expect("written after the peer's EOF");
        assert_eq!(mock.written(Handle(1)), b"still writing");
    });
}

#[test]
fn a_read_error_is_reported_and_closes_the_socket() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let _socket = subscribed_mock_socket(&mock, recorder.start().recipient()).await;
        settle().await;
        mock.push_read_error(Handle(1), io::ErrorKind::ConnectionReset);
        settle().await;
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::ReadFailed(_))),
            1
        );
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Closed { cause: Some(_) })),
            1
        );
        assert!(mock.is_closed(Handle(1)));
    });
}

#[test]
fn a_recvfrom_answering_more_than_it_was_asked_for_is_a_typed_read_error() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let greedy = crate::support::GreedyRecv(mock.functions().recvfrom().clone()).start();
        let _socket = Socket::builder()
            .functions(mock.functions().with_recvfrom(greedy.recipient()))
            .config(SocketConfig {
                read_chunk: 100,
                ..SocketConfig::default()
            })
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), vec![7u8; 5000]);
        settle().await;
        assert!(
            recorder.received().is_empty(),
            "nothing past the bound delivered"
        );
        let failures = recorder.picked(|e| match e {
            SocketEventKind::ReadFailed(e) => Some(e.clone()),
            _ => None,
        });
        assert!(
            matches!(
                failures.as_slice(),
                [TransportError::OverRead {
                    read: 1000,
                    asked: 100
                }]
            ),
            "{failures:?}"
        );
        assert!(mock.is_closed(Handle(1)));
    });
}

/// Bytes a message-path read brings back after an abort are dropped, as a reset
/// connection's are: `Closed` stays the last event (but a late `WriteFailed`), and the
/// counters do not count bytes nobody received.
#[test]
fn a_read_answered_after_an_abort_is_not_delivered_after_closed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let socket = subscribed_mock_socket(&mock, recorder.start().recipient()).await;
        mock.push_inbound(Handle(1), &b","[..]);
        socket.do_send(sockactor::messages::Close::Abort);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        settle().await;
        let names: Vec<String> = recorder.picked(|e| {
            Some(match e {
                SocketEventKind::Received(b) => format!("Received({})", b.len()),
                other => format!("{other:?}"),
            })
        });
        let closed = names
            .iter()
            .position(|n| n.starts_with("Closed"))
            .unwrap_or_else(|| panic!("no Closed: {names:?}"));
        assert!(
            names[closed + 1..]
                .iter()
                .all(|n| n.starts_with("WriteFailed")),
            "events after Closed: {names:?}"
        );
        let delivered = recorder.received().len() as u64;
        let stats = socket
            .send(sockactor::messages::GetStats)
            .await
            .expect("stats");
        assert_eq!(stats.bytes_received, delivered, "{stats:?}");
    });
}

/// Answers every `RecvFrom` with a `Data` of no bytes: neither data, EOF nor would-block.
struct EmptyRecv(std::rc::Rc<std::cell::Cell<usize>>);

impl Actor for EmptyRecv {
    type Context = Context<Self>;
}

impl Handler<sockactor::messages::RecvFrom> for EmptyRecv {
    type Result = Result<sockactor::messages::Received, TransportError>;
    fn handle(&mut self, _: sockactor::messages::RecvFrom, _: &mut Context<Self>) -> Self::Result {
        self.0.set(self.0.get() + 1);
        Ok(sockactor::messages::Received::Data {
            bytes: bytes::Bytes::new(),
            from: None,
        })
    }
}

/// A transport answering a stream read with no bytes breaks its contract (a read brings
/// bytes, or says EOF or would-block): a typed read error that closes the socket, not a
/// loop of empty reads and empty deliveries.
#[test]
fn a_read_answered_with_no_bytes_is_a_typed_read_error_not_a_spin() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let calls = std::rc::Rc::new(std::cell::Cell::new(0));
        let empty = EmptyRecv(calls.clone()).start();
        let _socket = Socket::builder()
            .functions(mock.functions().with_recvfrom(empty.recipient()))
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        for _ in 0..10 {
            settle().await;
        }
        assert_eq!(calls.get(), 1, "one read, then the socket fails");
        assert_eq!(
            recorder.delivery_lens(),
            Vec::<usize>::new(),
            "nothing delivered"
        );
        let failures = recorder.picked(|e| match e {
            SocketEventKind::ReadFailed(e) => Some(e.clone()),
            _ => None,
        });
        assert!(
            matches!(failures.as_slice(), [TransportError::EmptyRead]),
            "{failures:?}"
        );
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Closed { cause: Some(_) })),
            1
        );
    });
}
