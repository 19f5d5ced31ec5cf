//! A graceful close whose queued writes are all cancelled while the transport is blocked
//! has nothing left to send: it closes at once, without waiting for the transport.

use std::time::Duration;

use crate::support::{channel_subscriber, run_paused, settle, subscribed_mock_socket};
use sockactor::messages::{CancelWrite, Close, Handle, SocketEventKind, Write};
use sockactor::{MockTransport, SendStep, WriteError};

#[test]
fn cancelling_every_write_of_a_blocked_drain_closes_the_socket() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // The first sendv blocks until released (which never happens here).
        mock.set_default_step(SendStep::Hold);
        let (subscriber, mut events) = channel_subscriber();
        let socket = subscribed_mock_socket(&mock, subscriber).await;
        let first = actix::spawn(socket.send(Write::new(&b"first"[..]).tag(1)));
        let second = actix::spawn(socket.send(Write::new(&b"second"[..]).tag(2)));
        settle().await;
        socket.do_send(Close::Graceful);
        for tag in [1, 2] {
            let payload = socket
                .send(CancelWrite { tag })
                .await
                .expect("mailbox")
                .expect("not started, so cancellable");
            assert!(!payload.is_empty());
        }
        for answer in [first, second] {
            assert!(matches!(
                answer.await.expect("join").expect("mailbox"),
                Err(WriteError::Cancelled)
            ));
        }
        // Nothing is left to send: the close completes without the transport.
        let closed = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(event) = events.recv().await {
                if let SocketEventKind::Closed { cause } = event {
                    return cause;
                }
            }
            panic!("the subscriber's channel ended before Closed");
        })
        .await
        .expect("Closed within 60 s of paused time");
        assert!(closed.is_none(), "a clean close: {closed:?}");
        assert!(mock.is_closed(Handle(1)), "the handle was closed");
        assert!(mock.written(Handle(1)).is_empty(), "nothing went out");
    });
}
