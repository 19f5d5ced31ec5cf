//! `StopListening` closes the listening handle and stops the listener, and so does
//! dropping every address of it; sockets it accepted live on.

use std::net::SocketAddr;

use crate::support::{channel, drain, run_paused, settle};
use sockactor::messages::{Handle, ListenerEvent, StopListening, Write};
use sockactor::{Listener, MockTransport};

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn client() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 9], 5000))
}

#[test]
fn stop_listening_closes_the_handle_and_leaves_accepted_sockets_open() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (events, mut heard) = channel::<ListenerEvent>();
        let (listener, bound) = Listener::builder()
            .functions(mock.functions())
            .subscriber(events)
            .bind(local())
            .await
            .expect("bind");
        assert_eq!(bound, local().into());
        let accepted = mock
            .connect_inbound(Handle(1), client())
            .expect("listening");
        settle().await;
        let socket = match drain(&mut heard).pop() {
            Some(ListenerEvent::Accepted { socket, .. }) => socket,
            other => panic!("expected an accepted socket, got {other:?}"),
        };

        listener.send(StopListening).await.expect("listener alive");
        settle().await;
        assert!(mock.is_closed(Handle(1)), "the listening handle is closed");
        assert!(matches!(
            drain(&mut heard).as_slice(),
            [ListenerEvent::Closed]
        ));
        assert!(!listener.connected(), "the listener actor stopped");
        assert!(
            mock.connect_inbound(Handle(1), client()).is_none(),
            "nobody listens"
        );

        assert!(
            !mock.is_closed(accepted),
            "the accepted socket is not affected"
        );
        socket
            .send(Write::new(&b"still here"[..]))
            .await
            .expect("mailbox")
            .expect("written");
        assert_eq!(mock.written(accepted), b"still here");
    });
}

#[test]
fn dropping_every_address_of_the_listener_closes_the_handle() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (events, mut heard) = channel::<ListenerEvent>();
        let (listener, _) = Listener::builder()
            .functions(mock.functions())
            .subscriber(events)
            .bind(local())
            .await
            .expect("bind");
        settle().await;
        assert!(!mock.is_closed(Handle(1)));
        drop(listener);
        settle().await;
        assert!(mock.is_closed(Handle(1)), "the listening handle is closed");
        assert!(matches!(
            drain(&mut heard).as_slice(),
            [ListenerEvent::Closed]
        ));
    });
}

#[test]
fn a_port_in_use_is_a_bind_error_and_the_handle_is_closed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (_first, _) = Listener::builder()
            .functions(mock.functions())
            .bind(local())
            .await
            .expect("bind");
        let refused = Listener::builder()
            .functions(mock.functions())
            .bind(local())
            .await
            .expect_err("the port is taken");
        assert!(
            matches!(&refused, sockactor::SocketError::Bind(e) if e.io_kind() == Some(std::io::ErrorKind::AddrInUse)),
            "{refused:?}"
        );
        settle().await;
        assert!(mock.is_closed(Handle(2)), "the second handle is closed");
        assert!(!mock.is_closed(Handle(1)));

        // Both asking for SO_REUSEPORT: both listen.
        let mock = MockTransport::start();
        let mut listeners = Vec::new();
        for _ in 0..2 {
            let (listener, _) = Listener::builder()
                .functions(mock.functions())
                .reuse_port(true)
                .bind(local())
                .await
                .expect("bind with reuse_port");
            listeners.push(listener);
        }
        assert_eq!(mock.listening(Handle(1)), Some(1024));
        assert_eq!(mock.listening(Handle(2)), Some(1024));
    });
}

#[test]
fn a_connection_taken_by_an_accept_still_out_when_listening_stops_is_closed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (events, mut heard) = channel::<ListenerEvent>();
        let (listener, _) = Listener::builder()
            .functions(mock.functions())
            .subscriber(events)
            .bind(local())
            .await
            .expect("bind");
        settle().await;
        // The client's arrival wakes the listener; its accept and the stop are handled
        // in the same turn, so the accept is still out when the listener stops.
        let taken = mock
            .connect_inbound(Handle(1), client())
            .expect("listening");
        listener.do_send(StopListening);
        settle().await;
        assert!(mock.is_closed(Handle(1)), "the listening handle is closed");
        assert_eq!(
            mock.accept_calls(Handle(1)),
            2,
            "the accept went out before the close and took the connection"
        );
        assert!(
            mock.is_closed(taken),
            "the connection nobody will serve is closed"
        );
        assert!(mock.pending_connections(Handle(1)).is_empty());
        assert!(
            matches!(drain(&mut heard).as_slice(), [ListenerEvent::Closed]),
            "no socket was started for it"
        );
        assert!(!listener.connected(), "the listener actor stopped");
    });
}
