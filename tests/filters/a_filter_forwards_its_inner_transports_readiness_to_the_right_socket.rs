//! The filter plumbing: a stack of filters is one expression giving a `SocketFunctions`;
//! the inner transport's readiness notices (after its would-blocks) reach the socket
//! that owns the handle, for connected and accepted handles, on both the write and the
//! read side; handles the filter never opened, and operations the inner table lacks,
//! are typed errors.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{channel, drain, mock_peer, run_paused, settle, Recorder};
use bytes::Bytes;
use sockactor::filters::{FaultInjector, Faults, Throttle};
use sockactor::messages::{Address, Bind, Handle, ListenerEvent, SendV, SocketEventKind, Write};
use sockactor::{Listener, MockTransport, SendStep, Socket, SocketFunctions, TransportError};

/// Two filters that change nothing: the fault injector with no faults inside a throttle
/// far faster than the test needs.
fn stacked(inner: SocketFunctions) -> SocketFunctions {
    Throttle::per_socket(1 << 30, 1 << 20)
        .wrap(FaultInjector::new(1, Faults::default()).wrap(inner))
}

#[test]
fn an_inner_would_block_is_ended_by_the_inner_ready_forwarded_to_the_socket() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(3),
                SendStep::WouldBlock(Duration::from_millis(5)),
                SendStep::Accept(2),
                SendStep::Hold,
            ],
        );
        let socket = Socket::builder()
            .functions(stacked(mock.functions()))
            .connect(mock_peer())
            .await
            .expect("connect");
        let write = actix::spawn(socket.send(Write::new(&b"hello, filtered world"[..])));
        tokio::time::sleep(Duration::from_millis(10)).await;
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"hello", "held after 5 bytes");
        assert!(!write.is_finished(), "waiting for the held handle");
        mock.release(Handle(1));
        let done = tokio::time::timeout(Duration::from_secs(1), write)
            .await
            .expect("the released handle's Ready reached the socket")
            .expect("join")
            .expect("mailbox")
            .expect("written");
        assert_eq!(done.would_blocks, 2);
        assert_eq!(mock.written(Handle(1)), b"hello, filtered world");
    });
}

#[test]
fn data_arriving_after_a_read_would_block_reaches_the_socket_through_the_filters() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let _socket = Socket::builder()
            .functions(stacked(mock.functions()))
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        assert!(recorder.received().is_empty());
        mock.push_inbound(Handle(1), &b"late news"[..]);
        settle().await;
        assert_eq!(recorder.received(), b"late news");
    });
}

#[test]
fn an_accepted_connection_behind_filters_gets_its_own_notices() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let subscriber = recorder.start().recipient();
        let (events, mut heard) = channel::<ListenerEvent>();
        let (_listener, _local) = Listener::builder()
            .functions(stacked(mock.functions()))
            .subscriber(events)
            .socket_builder(move |_| Socket::builder().subscriber(subscriber.clone()))
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        settle().await;
        let peer = SocketAddr::from(([10, 0, 0, 7], 5000));
        let conn = mock.connect_inbound(Handle(1), peer).expect("listening");
        mock.script_sendv(conn, [SendStep::WouldBlock(Duration::from_millis(3))]);
        settle().await;
        let socket = match drain(&mut heard).pop() {
            Some(ListenerEvent::Accepted {
                socket, peer: p, ..
            }) => {
                assert_eq!(p, Address::Inet(peer));
                socket
            }
            other => panic!("expected an accepted connection, got {other:?}"),
        };
        mock.push_inbound(conn, &b"from the peer"[..]);
        settle().await;
        assert_eq!(recorder.received(), b"from the peer");
        let done = tokio::time::timeout(
            Duration::from_secs(1),
            socket.send(Write::new(&b"to the peer"[..])),
        )
        .await
        .expect("the inner Ready reached the accepted socket")
        .expect("mailbox")
        .expect("written");
        assert_eq!(done.would_blocks, 1);
        assert_eq!(mock.written(conn), b"to the peer");
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Received(_))),
            1
        );
    });
}

#[test]
fn a_handle_the_filter_never_opened_is_unknown() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let functions = stacked(mock.functions());
        let answer = functions
            .sendv()
            .send(SendV {
                handle: Handle(77),
                segments: vec![Bytes::from_static(b"x")],
                to: None,
            })
            .await
            .expect("filter alive");
        assert!(matches!(
            answer,
            Err(TransportError::UnknownHandle(Handle(77)))
        ));
        assert!(
            mock.handles().is_empty(),
            "nothing reached the inner transport"
        );
    });
}

#[test]
fn an_operation_the_inner_table_lacks_is_unsupported_through_the_filter() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let functions = stacked(SocketFunctions::from_actor(mock.actor().clone()));
        let bind = functions.bind().expect("a filter table has bind");
        let answer = bind
            .send(Bind {
                handle: Handle(1),
                addr: Address::Inet(SocketAddr::from(([127, 0, 0, 1], 0))),
                reuse_port: false,
            })
            .await
            .expect("filter alive");
        assert!(matches!(answer, Err(TransportError::Unsupported("bind"))));
    });
}
