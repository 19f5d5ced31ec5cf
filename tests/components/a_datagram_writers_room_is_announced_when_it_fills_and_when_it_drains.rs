//! A datagram socket announces its writers' room as a stream socket does: a
//! `WritabilityChanged { writable: false }` when its queue is full (the next datagram a
//! `DatagramWriter` sends would be refused), and `writable: true` once the datagrams it
//! admitted drained to half the queue; the notices alternate, once per change; a socket
//! that no longer takes datagrams announces no room.

use std::net::SocketAddr;

use crate::support::{channel, drain, local, run_paused, settle};
use sockactor::messages::{
    Close, GetDatagramWriter, Handle, SubscribeWritability, WritabilityChanged,
};
use sockactor::{DatagramConfig, DatagramError, DatagramSocket, MockTransport, SendStep};

fn peer() -> SocketAddr {
    "127.0.0.1:9054".parse().expect("addr")
}

#[test]
fn full_then_drained_to_half_each_announced_once() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(DatagramConfig {
                max_queued: 4,
                ..DatagramConfig::default()
            })
            .bind(local())
            .await
            .expect("bind");
        let (notices, mut heard) = channel::<WritabilityChanged>();
        socket
            .send(SubscribeWritability(notices))
            .await
            .expect("subscribed");
        let writer = socket.send(GetDatagramWriter).await.expect("writer");
        for i in 0..3u8 {
            writer
                .send_to(vec![i], Some(peer().into()))
                .expect("admitted");
        }
        settle().await;
        assert!(drain(&mut heard).is_empty(), "room left: no notice yet");
        writer
            .send_to(vec![3], Some(peer().into()))
            .expect("admitted");
        assert!(matches!(
            writer.send_to(vec![4], Some(peer().into())),
            Err(DatagramError::QueueFull { .. })
        ));
        settle().await;
        let seen: Vec<bool> = drain(&mut heard).iter().map(|n| n.writable).collect();
        assert_eq!(
            seen,
            [false],
            "full: announced once, the refusal adds nothing"
        );

        // The transport takes them now: the queue drains, and the room is announced.
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        settle().await;
        let seen: Vec<bool> = drain(&mut heard).iter().map(|n| n.writable).collect();
        assert_eq!(seen, [true], "drained: announced once");
        assert_eq!(writer.queued(), 0);

        // And again: the notices alternate.
        mock.set_default_step(SendStep::Hold);
        for i in 0..4u8 {
            writer
                .send_to(vec![i], Some(peer().into()))
                .expect("admitted");
        }
        settle().await;
        let notices = drain(&mut heard);
        assert_eq!(
            notices.iter().map(|n| n.writable).collect::<Vec<_>>(),
            [false]
        );
        let info = socket
            .send(sockactor::messages::GetDatagramInfo)
            .await
            .expect("info");
        assert_eq!(notices[0].socket, info.id, "the notice names the socket");
    });
}

/// An abort frees the writers' room, but the socket takes no more: the last notice is
/// the full queue's.
#[test]
fn an_abort_while_full_announces_no_room() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(DatagramConfig {
                max_queued: 2,
                ..DatagramConfig::default()
            })
            .bind(local())
            .await
            .expect("bind");
        let (notices, mut heard) = channel::<WritabilityChanged>();
        socket
            .send(SubscribeWritability(notices))
            .await
            .expect("subscribed");
        let writer = socket.send(GetDatagramWriter).await.expect("writer");
        writer
            .send_to(vec![1u8], Some(peer().into()))
            .expect("admitted");
        writer
            .send_to(vec![2u8], Some(peer().into()))
            .expect("admitted");
        settle().await;
        socket.do_send(Close::Abort);
        settle().await;
        let seen: Vec<bool> = drain(&mut heard).iter().map(|n| n.writable).collect();
        assert_eq!(seen, [false]);
        let refused = writer.send_to(vec![3u8], Some(peer().into()));
        assert!(
            matches!(refused, Err(DatagramError::Aborted | DatagramError::Closed)),
            "{refused:?}"
        );
    });
}
