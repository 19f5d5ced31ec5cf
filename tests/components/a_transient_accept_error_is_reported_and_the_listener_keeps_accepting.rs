//! A failed accept (no descriptors left, a connection aborted before it was taken) is
//! reported to the listener's subscriber and retried after the back-off, in tokio time:
//! the listener keeps listening and accepts the connections that come next.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{channel, drain, run_paused, settle};
use sockactor::messages::{Handle, ListenerEvent};
use sockactor::{Listener, MockTransport};

const BACKOFF: Duration = Duration::from_millis(250);

#[test]
fn accept_errors_are_reported_and_retried_after_the_backoff() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (events, mut heard) = channel::<ListenerEvent>();
        let (listener, _) = Listener::builder()
            .functions(mock.functions())
            .accept_backoff(BACKOFF)
            .subscriber(events)
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        settle().await;
        assert_eq!(mock.accept_calls(Handle(1)), 1, "parked on a would-block");

        // Two failures in a row, then a client.
        mock.fail_accept(Handle(1), io::ErrorKind::ConnectionAborted);
        mock.fail_accept(Handle(1), io::ErrorKind::OutOfMemory);
        let client = mock
            .connect_inbound(Handle(1), SocketAddr::from(([10, 0, 0, 1], 4000)))
            .expect("listening");
        settle().await;
        let kinds = |events: Vec<ListenerEvent>| -> Vec<Option<io::ErrorKind>> {
            events
                .into_iter()
                .map(|e| match e {
                    ListenerEvent::AcceptFailed { error } => error.io_kind(),
                    other => panic!("unexpected listener event {other:?}"),
                })
                .collect()
        };
        assert_eq!(
            kinds(drain(&mut heard)),
            [Some(io::ErrorKind::ConnectionAborted)]
        );
        assert_eq!(mock.accept_calls(Handle(1)), 2);

        // Nothing is tried during the back-off.
        tokio::time::sleep(BACKOFF - Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(
            mock.accept_calls(Handle(1)),
            2,
            "no accept during the back-off"
        );
        assert!(drain(&mut heard).is_empty());

        tokio::time::sleep(Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(kinds(drain(&mut heard)), [Some(io::ErrorKind::OutOfMemory)]);
        assert_eq!(mock.accept_calls(Handle(1)), 3);

        tokio::time::sleep(BACKOFF).await;
        settle().await;
        match drain(&mut heard).as_slice() {
            [ListenerEvent::Accepted { peer, .. }] => {
                assert_eq!(peer, &SocketAddr::from(([10, 0, 0, 1], 4000)).into());
            }
            other => panic!("expected the connection to be accepted, got {other:?}"),
        }
        assert!(!mock.is_closed(client));
        assert_eq!(mock.listening(Handle(1)), Some(1024), "still listening");
        assert!(listener.connected(), "the listener did not stop");

        // And the next client is taken at once.
        mock.connect_inbound(Handle(1), SocketAddr::from(([10, 0, 0, 2], 4000)))
            .expect("listening");
        settle().await;
        assert!(matches!(
            drain(&mut heard).as_slice(),
            [ListenerEvent::Accepted { .. }]
        ));
    });
}
