//! A subscriber that has stopped cannot take events: the socket notices at the next
//! delivery and stops reading (the peer is held back by flow control, memory does not
//! grow), while writing goes on and a graceful close still drains and closes the handle;
//! writes after that are refused as on any closed socket.

use crate::support::{run_paused, settle, subscribed_mock_socket};
use actix::prelude::*;
use sockactor::messages::{Close, GetStats, Handle, SocketEvent, SocketEventKind, Write};
use sockactor::{MockTransport, WriteError};

/// Takes one event, then stops.
struct OneEvent;

impl Actor for OneEvent {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for OneEvent {
    type Result = ();
    fn handle(&mut self, event: SocketEvent, ctx: &mut Context<Self>) {
        assert!(matches!(event.kind, SocketEventKind::Received(_)));
        ctx.stop();
    }
}

#[test]
fn reading_stops_writes_go_out_and_the_close_completes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let subscriber = OneEvent.start();
        let socket = subscribed_mock_socket(&mock, subscriber.clone().recipient()).await;
        settle().await;
        mock.push_inbound(Handle(1), &b"one"[..]);
        settle().await;
        assert!(
            !subscriber.connected(),
            "the subscriber stopped after one event"
        );
        mock.push_inbound(Handle(1), &b"two"[..]);
        settle().await;
        let seen = socket.send(GetStats).await.expect("stats").bytes_received;
        mock.push_inbound(Handle(1), vec![7u8; 64 * 1024]);
        settle().await;
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(
            stats.bytes_received, seen,
            "nothing more is read once the subscriber is known to be gone"
        );
        assert!(seen <= 6, "at most the chunk that found it gone was read");

        socket
            .send(Write::new(&b"still writing"[..]))
            .await
            .expect("mailbox")
            .expect("writing goes on");
        assert_eq!(mock.written(Handle(1)), b"still writing");

        socket.send(Close::Graceful).await.expect("mailbox");
        settle().await;
        assert!(mock.is_closed(Handle(1)), "the close completes");
        let late = socket.send(Write::new(&b"x"[..])).await.expect("mailbox");
        assert!(matches!(
            late,
            Err(WriteError::Closed {
                bytes_sent: 0,
                len: 1
            })
        ));
    });
}
