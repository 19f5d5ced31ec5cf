//! On the unreplaced system transport a datagram socket calls the operating system in
//! place, as a stream socket does: a burst of queued datagrams leaves in a few batched
//! calls (`sendmmsg` where the OS has it), never merged, split or reordered, each answered
//! once, each to its own destination; a burst that arrived is received in a few calls
//! (`recvmmsg`), each datagram whole with its sender. Runs of one length to one
//! destination (which Linux may send as one offloaded message) still arrive as separate
//! datagrams, whole and in order. A socket waiting for readiness on
//! the reactor itself still stops when its last address is dropped.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{channel, next_datagram};
use sockactor::messages::{
    Address, DatagramEvent, DatagramEventKind, GetDatagramStats, SendDatagram,
};
use sockactor::{DatagramConfig, DatagramSocket};

/// Datagrams per burst: one turn's worth (the default `max_per_turn`).
const BURST: usize = 64;
const ROUNDS: usize = 4;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A bound datagram socket on loopback whose subscriber is a channel.
struct Receiver {
    _socket: actix::Addr<DatagramSocket>,
    addr: Address,
    heard: tokio::sync::mpsc::UnboundedReceiver<DatagramEvent>,
}

impl Receiver {
    async fn bind() -> Self {
        let (events, heard) = channel::<DatagramEvent>();
        let (socket, addr) = DatagramSocket::builder()
            .subscriber(events)
            .bind(loopback())
            .await
            .expect("bind a receiver");
        Receiver {
            _socket: socket,
            addr,
            heard,
        }
    }
}

/// A bound sending socket on loopback.
async fn sender(config: DatagramConfig) -> actix::Addr<DatagramSocket> {
    DatagramSocket::builder()
        .config(config)
        .bind(loopback())
        .await
        .expect("bind the sender")
        .0
}

fn datagram(round: usize, i: usize) -> Vec<u8> {
    let mut payload = format!("round {round} datagram {i:03} ").into_bytes();
    payload.resize(40 + (i * 7) % 200, b'0' + (i % 10) as u8);
    payload
}

#[actix::test]
async fn a_burst_leaves_in_few_calls_and_arrives_whole_in_order_in_few_calls() {
    let (events, mut heard) = channel::<DatagramEvent>();
    let (receiver, to) = DatagramSocket::builder()
        .subscriber(events)
        .bind(loopback())
        .await
        .expect("bind the receiver");
    let (sender, from) = DatagramSocket::builder()
        .bind(loopback())
        .await
        .expect("bind the sender");

    for round in 0..ROUNDS {
        // One burst: all queued before the Flusher's `Flush` comes.
        for i in 0..BURST - 1 {
            sender.do_send(SendDatagram::new(datagram(round, i)).to(to.clone()));
        }
        let last = datagram(round, BURST - 1);
        let sent = sender
            .send(SendDatagram::new(last.clone()).to(to.clone()))
            .await
            .expect("answered")
            .expect("sent");
        assert_eq!(sent.len, last.len());
        for i in 0..BURST {
            let (bytes, sender_addr, truncated) = next_datagram(&mut heard).await;
            assert_eq!(
                bytes,
                datagram(round, i),
                "round {round}: datagram {i} in order"
            );
            assert_eq!(sender_addr.as_ref(), Some(&from));
            assert!(!truncated);
        }
    }

    let sent = sender.send(GetDatagramStats).await.expect("stats");
    let received = receiver.send(GetDatagramStats).await.expect("stats");
    let total = (BURST * ROUNDS) as u64;
    assert_eq!((sent.sent, sent.send_failed), (total, 0));
    assert_eq!(received.received, total);
    if cfg!(any(target_os = "linux", target_os = "android")) {
        assert!(
            sent.sendv_calls * 8 <= sent.sent,
            "{} datagrams sent in {} calls: not batched",
            sent.sent,
            sent.sendv_calls
        );
        assert!(
            received.recv_calls * 4 <= received.received,
            "{} datagrams received in {} calls: not batched",
            received.received,
            received.recv_calls
        );
    } else {
        assert_eq!(sent.sendv_calls, sent.sent, "one call per datagram");
    }
}

#[actix::test]
async fn one_batch_reaches_each_destination_with_its_own_datagrams() {
    let (a, b) = (Receiver::bind().await, Receiver::bind().await);
    let (a_addr, mut a_heard, b_addr, mut b_heard) = (a.addr, a.heard, b.addr, b.heard);
    let sender = sender(DatagramConfig::default()).await;
    for i in 0..BURST - 1 {
        let to = if i % 3 == 0 { &b_addr } else { &a_addr };
        sender.do_send(SendDatagram::new(datagram(0, i)).to(to.clone()));
    }
    sender
        .send(SendDatagram::new(datagram(0, BURST - 1)).to(a_addr.clone()))
        .await
        .expect("answered")
        .expect("sent");
    for i in 0..BURST {
        let heard = if i % 3 == 0 && i != BURST - 1 {
            &mut b_heard
        } else {
            &mut a_heard
        };
        let (bytes, _, _) = next_datagram(heard).await;
        assert_eq!(
            bytes,
            datagram(0, i),
            "datagram {i} went to its own destination"
        );
    }
}

#[actix::test]
async fn a_datagram_longer_than_the_socket_takes_is_flagged_truncated_in_a_batch() {
    let (events, mut heard) = channel::<DatagramEvent>();
    let (_receiver, to) = DatagramSocket::builder()
        .config(DatagramConfig {
            max_datagram_size: 100,
            ..DatagramConfig::default()
        })
        .subscriber(events)
        .bind(loopback())
        .await
        .expect("bind");
    let (sender, _) = DatagramSocket::builder()
        .bind(loopback())
        .await
        .expect("bind the sender");
    let sizes = [10usize, 100, 101, 1000, 99, 5];
    for (i, len) in sizes.iter().enumerate() {
        sender.do_send(SendDatagram::new(vec![i as u8; *len]).to(to.clone()));
    }
    sender
        .send(SendDatagram::new(&b"end"[..]).to(to.clone()))
        .await
        .expect("answered")
        .expect("sent");
    for (i, len) in sizes.iter().enumerate() {
        let (bytes, _, truncated) = next_datagram(&mut heard).await;
        assert_eq!(bytes, vec![i as u8; (*len).min(100)], "datagram {i}");
        assert_eq!(truncated, *len > 100, "datagram {i} of {len} bytes");
    }
    assert_eq!(next_datagram(&mut heard).await.0, b"end");
}

#[actix::test]
async fn a_reading_socket_stops_when_its_last_address_is_dropped() {
    let (events, mut heard) = channel::<DatagramEvent>();
    let (socket, _) = DatagramSocket::builder()
        .subscriber(events)
        .bind(loopback())
        .await
        .expect("bind");
    drop(socket);
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match heard.recv().await {
                Some(DatagramEvent {
                    kind: DatagramEventKind::Closed { cause },
                    ..
                }) => return cause,
                Some(_) => {}
                None => panic!("subscriber channel gone before the close"),
            }
        }
    })
    .await
    .expect("closed within 10 s");
    assert!(closed.is_none(), "a clean close: {closed:?}");
}

#[actix::test]
async fn runs_of_one_length_arrive_as_separate_whole_datagrams_in_order() {
    runs_arrive_whole(true).await;
}

#[actix::test]
async fn runs_arrive_the_same_without_segmentation_offload() {
    runs_arrive_whole(false).await;
}

async fn runs_arrive_whole(offload: bool) {
    let (a, b) = (Receiver::bind().await, Receiver::bind().await);
    let (a_addr, mut a_heard, b_addr, mut b_heard) = (a.addr, a.heard, b.addr, b.heard);
    let sender = sender(DatagramConfig {
        offload,
        ..DatagramConfig::default()
    })
    .await;
    // Runs: 20 of 100 bytes to a, a shorter one ending the run, 30 of 1,000 bytes to b
    // (one of them empty), 12 of 1,452 to a, then longer ones that are never grouped.
    let mut plan: Vec<(usize, bool)> = Vec::new();
    plan.extend((0..20).map(|_| (100, true)));
    plan.push((37, true));
    plan.extend((0..30).map(|i| (if i == 15 { 0 } else { 1000 }, false)));
    plan.extend((0..12).map(|_| (1452, true)));
    plan.extend((0..3).map(|_| (2000, true)));
    let body = |i: usize, len: usize| -> Vec<u8> { (0..len).map(|k| (i * 31 + k) as u8).collect() };
    let last = plan.len() - 1;
    for (i, &(len, to_a)) in plan.iter().enumerate() {
        let to = if to_a { &a_addr } else { &b_addr };
        let datagram = SendDatagram::new(body(i, len)).to(to.clone());
        if i == last {
            let sent = sender
                .send(datagram)
                .await
                .expect("answered")
                .expect("sent");
            assert_eq!(sent.len, len);
        } else {
            sender.do_send(datagram);
        }
    }
    for (i, &(len, to_a)) in plan.iter().enumerate() {
        let heard = if to_a { &mut a_heard } else { &mut b_heard };
        let (bytes, _, truncated) = next_datagram(heard).await;
        assert!(!truncated);
        assert_eq!(bytes.len(), len, "datagram {i}: its own length");
        assert_eq!(bytes, body(i, len), "datagram {i}: whole, in order");
    }
    let stats = sender.send(GetDatagramStats).await.expect("stats");
    assert_eq!(
        (stats.sent, stats.send_failed),
        (plan.len() as u64, 0),
        "each datagram answered once, all sent"
    );
}
