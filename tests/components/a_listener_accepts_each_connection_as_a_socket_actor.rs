//! A listener on the mock transport accepts each inbound connection as its own socket
//! actor, built by the per-connection factory (so each gets its own subscriber), and
//! data flows both ways on each; a backlog larger than one turn is accepted whole.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::support::{channel, drain, run_paused, settle, Recorder};
use sockactor::messages::{Address, GetInfo, Handle, ListenerEvent, Write};
use sockactor::{Listener, MockTransport, Socket};

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 7], port))
}

#[test]
fn each_connection_becomes_a_socket_with_its_own_subscriber_and_data_flows_both_ways() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorders: Arc<Mutex<HashMap<Address, Recorder>>> = Arc::default();
        let made = recorders.clone();
        let (events, mut heard) = channel::<ListenerEvent>();
        let (_listener, local) = Listener::builder()
            .functions(mock.functions())
            .backlog(16)
            .subscriber(events)
            .socket_builder(move |peer| {
                let recorder = Recorder::default();
                let subscriber = recorder.start().recipient();
                made.lock().expect("lock").insert(peer.clone(), recorder);
                Socket::builder().subscriber(subscriber)
            })
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        assert_eq!(
            local,
            Address::Inet(SocketAddr::from(([127, 0, 0, 1], 40_000)))
        );
        assert_eq!(mock.listening(Handle(1)), Some(16));
        settle().await;
        assert!(
            drain(&mut heard).is_empty(),
            "nothing accepted before a client comes"
        );

        let first = mock
            .connect_inbound(Handle(1), peer(5001))
            .expect("listening");
        let second = mock
            .connect_inbound(Handle(1), peer(5002))
            .expect("listening");
        assert_eq!((first, second), (Handle(2), Handle(3)));
        settle().await;

        let mut sockets = HashMap::new();
        for event in drain(&mut heard) {
            match event {
                ListenerEvent::Accepted { socket, id, peer } => {
                    let info = socket.send(GetInfo).await.expect("info");
                    assert_eq!(info.id, id);
                    assert_eq!(info.peer.as_ref(), Some(&peer));
                    sockets.insert(peer, (socket, info.handle));
                }
                other => panic!("unexpected listener event {other:?}"),
            }
        }
        assert_eq!(sockets.len(), 2, "one socket per connection");
        assert_eq!(
            recorders.lock().expect("lock").len(),
            2,
            "one builder per connection"
        );
        assert!(mock.pending_connections(Handle(1)).is_empty());

        // Both ways, on each connection, kept apart.
        mock.push_inbound(first, &b"to the first"[..]);
        mock.push_inbound(second, &b"to the second"[..]);
        for (port, handle, reply) in [
            (5001, first, &b"from the first"[..]),
            (5002, second, &b"from the second"[..]),
        ] {
            let (socket, socket_handle) = &sockets[&Address::Inet(peer(port))];
            assert_eq!(*socket_handle, handle);
            let written = socket
                .send(Write::new(reply))
                .await
                .expect("mailbox")
                .expect("written");
            assert_eq!(written.len, reply.len());
            assert_eq!(mock.written(handle), reply);
        }
        settle().await;
        let recorders = recorders.lock().expect("lock");
        assert_eq!(
            recorders[&Address::Inet(peer(5001))].received(),
            b"to the first"
        );
        assert_eq!(
            recorders[&Address::Inet(peer(5002))].received(),
            b"to the second"
        );
    });
}

#[test]
fn a_backlog_longer_than_one_turn_is_accepted_whole_in_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (events, mut heard) = channel::<ListenerEvent>();
        let (_listener, _) = Listener::builder()
            .functions(mock.functions())
            .max_accepts_per_turn(3)
            .subscriber(events)
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        settle().await;
        let handles: Vec<Handle> = (0..10)
            .map(|i| {
                mock.connect_inbound(Handle(1), peer(6000 + i))
                    .expect("listening")
            })
            .collect();
        settle().await;
        let peers: Vec<Address> = drain(&mut heard)
            .into_iter()
            .map(|e| match e {
                ListenerEvent::Accepted { peer, .. } => peer,
                other => panic!("unexpected listener event {other:?}"),
            })
            .collect();
        let expected: Vec<Address> = (0..10).map(|i| Address::Inet(peer(6000 + i))).collect();
        assert_eq!(peers, expected);
        assert!(mock.pending_connections(Handle(1)).is_empty());
        assert!(handles.iter().all(|h| !mock.is_closed(*h)));
        // Ten connections, then the would-block that parks the listener; the turn bound
        // adds no calls of its own.
        assert_eq!(mock.accept_calls(Handle(1)), 12);
    });
}
