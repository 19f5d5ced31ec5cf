//! A datagram longer than the socket's `max_datagram_size` reaches the subscriber flagged
//! `truncated` (its first `max_datagram_size` bytes), never as if it were whole; shorter
//! ones arrive whole, each with its sender. On the mock transport and on real UDP, and
//! through a `recvfrom` that answers more than it was asked for.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{channel, drain, pattern, run_paused, settle};
use sockactor::messages::{
    Address, DatagramEvent, DatagramEventKind, GetDatagramStats, Handle, SendDatagram,
};
use sockactor::{DatagramConfig, DatagramSocket, MockTransport};

fn small() -> DatagramConfig {
    DatagramConfig {
        max_datagram_size: 16,
        ..DatagramConfig::default()
    }
}

/// (bytes, from, truncated) of each received datagram.
fn received(events: Vec<DatagramEvent>) -> Vec<(Vec<u8>, Option<Address>, bool)> {
    events
        .into_iter()
        .filter_map(|e| match e.kind {
            DatagramEventKind::Received {
                bytes,
                from,
                truncated,
            } => Some((bytes.to_vec(), from, truncated)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_mock_flags_a_long_datagram_truncated_and_keeps_short_ones_whole() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (events, mut heard) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(small())
            .subscriber(events)
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let sender = SocketAddr::from(([203, 0, 113, 5], 777));
        let long = pattern(40, 1);
        mock.push_datagram(Handle(1), long.clone(), sender);
        mock.push_datagram(Handle(1), pattern(16, 2), sender);
        mock.push_datagram(Handle(1), Vec::new(), sender);
        settle().await;
        assert_eq!(
            received(drain(&mut heard)),
            [
                (long[..16].to_vec(), Some(sender.into()), true),
                (pattern(16, 2), Some(sender.into()), false),
                (Vec::new(), Some(sender.into()), false),
            ]
        );
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!((stats.received, stats.truncated), (3, 1));
    });
}

#[test]
fn a_datagram_longer_than_asked_from_a_greedy_transport_is_cut_and_flagged() {
    use actix::Actor;
    run_paused(|| async {
        let mock = MockTransport::start();
        let greedy = crate::support::GreedyRecv(mock.functions().recvfrom().clone()).start();
        let (events, mut heard) = channel::<DatagramEvent>();
        let (_socket, _) = DatagramSocket::builder()
            .functions(mock.functions().with_recvfrom(greedy.recipient()))
            .config(small())
            .subscriber(events)
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let sender = SocketAddr::from(([203, 0, 113, 5], 777));
        let long = pattern(40, 1);
        mock.push_datagram(Handle(1), long.clone(), sender);
        settle().await;
        assert_eq!(
            received(drain(&mut heard)),
            [(long[..16].to_vec(), Some(sender.into()), true)]
        );
    });
}

#[actix::test]
async fn real_udp_flags_a_long_datagram_truncated() {
    let (events, mut heard) = channel::<DatagramEvent>();
    let (receiver, receiver_addr) = DatagramSocket::builder()
        .config(small())
        .subscriber(events)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let (sender, sender_addr) = DatagramSocket::builder()
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let long = pattern(100, 3);
    for payload in [long.clone(), pattern(16, 4)] {
        sender
            .send(SendDatagram::new(payload).to(receiver_addr.clone()))
            .await
            .expect("answered")
            .expect("sent");
    }
    let mut got = Vec::new();
    while got.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), heard.recv())
            .await
            .expect("datagram within 10 s")
            .expect("subscriber alive");
        got.extend(received(vec![event]));
    }
    assert_eq!(
        got,
        [
            (long[..16].to_vec(), Some(sender_addr.clone()), true),
            (pattern(16, 4), Some(sender_addr), false),
        ]
    );
    let stats = receiver.send(GetDatagramStats).await.expect("stats");
    assert_eq!(stats.truncated, 1);
}

/// At a `max_datagram_size` of 0 on real UDP (received in place, where a receive slot is
/// never shorter than a byte), a 1-byte datagram is flagged truncated, not delivered as a
/// whole empty one.
#[actix::test]
async fn real_udp_at_a_size_of_zero_flags_every_datagram_with_bytes() {
    let (events, mut heard) = channel::<DatagramEvent>();
    let (_receiver, receiver_addr) = DatagramSocket::builder()
        .config(DatagramConfig {
            max_datagram_size: 0,
            ..DatagramConfig::default()
        })
        .subscriber(events)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let (sender, _) = DatagramSocket::builder()
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    for payload in [Vec::new(), vec![42u8], vec![1u8, 2, 3]] {
        sender
            .send(SendDatagram::new(payload).to(receiver_addr.clone()))
            .await
            .expect("answered")
            .expect("sent");
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(10), heard.recv())
            .await
            .expect("datagram within 10 s")
            .expect("subscriber alive");
        got.extend(
            received(vec![event])
                .into_iter()
                .map(|(bytes, _, truncated)| (bytes.len(), truncated)),
        );
    }
    assert_eq!(got, [(0, false), (0, true), (0, true)]);
}

/// A datagram the transport answers with just as the socket is aborted is dropped, not
/// delivered after `Closed` (the socket's last event) nor left out of the counters it
/// was delivered past.
#[test]
fn a_datagram_answered_after_an_abort_is_not_delivered_after_closed() {
    use sockactor::messages::Close;
    run_paused(|| async {
        let mock = MockTransport::start();
        let (subscriber, mut heard) = crate::support::channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .subscriber(subscriber)
            .bind(crate::support::local())
            .await
            .expect("bind");
        mock.push_datagram(
            Handle(1),
            &b"\0\0\0\0"[..],
            std::net::SocketAddr::from(([198, 51, 100, 7], 9)),
        );
        socket.do_send(Close::Abort);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let kinds: Vec<String> = crate::support::drain(&mut heard)
            .into_iter()
            .map(|e| match e.kind {
                DatagramEventKind::Received { bytes, .. } => format!("Received({})", bytes.len()),
                other => format!("{other:?}"),
            })
            .collect();
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        let delivered = kinds.iter().filter(|k| k.starts_with("Received")).count() as u64;
        assert_eq!(
            stats.received, delivered,
            "events {kinds:?}, stats {stats:?}"
        );
        assert!(
            kinds.last().is_some_and(|k| k.starts_with("Closed")),
            "events {kinds:?}"
        );
    });
}
