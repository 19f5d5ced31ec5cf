//! When the last address of a reconnecting client is dropped, the writes it took still
//! go out and are answered, then its socket closes; a socket does not keep its client
//! alive.

use std::time::Duration;

use crate::support::client::client_events;
use crate::support::{mock_peer, run_paused, settle};
use sockactor::messages::{ClientEvent, Handle, Write};
use sockactor::{MockTransport, ReconnectingClient, SendStep};

#[test]
fn the_writes_drain_then_the_handle_closes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::from_millis(5))]);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(subscriber)
            .start();
        assert!(matches!(events.next().await, ClientEvent::Connected { .. }));
        let answers: Vec<_> = (0..3u8)
            .map(|i| client.send(Write::new(vec![b'x' + i; 2])))
            .collect();
        settle().await;
        drop(client);
        for answer in answers {
            assert_eq!(answer.await.expect("mailbox").expect("written").len, 2);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(mock.written(Handle(1)), b"xxyyzz");
        assert!(
            mock.is_closed(Handle(1)),
            "the client is gone and closed its socket"
        );
        assert_eq!(mock.handles(), [Handle(1)], "and never reconnected");
    });
}
