//! Real UDP on loopback through the system transport: two bound datagram sockets trade
//! datagrams, each received whole with the right sender address, and answers sent back
//! to that address arrive; a connected socket sends without naming its peer.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::support::{channel, next_datagram};
use actix::prelude::*;
use sockactor::messages::{DatagramEvent, DatagramEventKind, GetDatagramInfo, SendDatagram};
use sockactor::{DatagramSocket, SocketError};

/// Sends every datagram back to where it came from, prefixed with `re:`.
struct Replier {
    socket: Option<Addr<DatagramSocket>>,
}

impl Actor for Replier {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Use(Addr<DatagramSocket>);

impl Handler<Use> for Replier {
    type Result = ();
    fn handle(&mut self, msg: Use, _: &mut Context<Self>) {
        self.socket = Some(msg.0);
    }
}

impl Handler<DatagramEvent> for Replier {
    type Result = ();
    fn handle(&mut self, msg: DatagramEvent, _: &mut Context<Self>) {
        if let (
            Some(socket),
            DatagramEventKind::Received {
                bytes,
                from: Some(from),
                ..
            },
        ) = (&self.socket, msg.kind)
        {
            let mut reply = b"re:".to_vec();
            reply.extend_from_slice(&bytes);
            socket.do_send(SendDatagram::new(reply).to(from));
        }
    }
}

#[actix::test]
async fn two_bound_sockets_trade_datagrams_with_the_right_sender_addresses() {
    const COUNT: usize = 64;
    let replier = Replier { socket: None }.start();
    let (b, b_addr) = DatagramSocket::builder()
        .subscriber(replier.clone().recipient())
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind b");
    replier.send(Use(b.clone())).await.expect("replier");
    let (events, mut heard) = channel::<DatagramEvent>();
    let (a, a_addr) = DatagramSocket::builder()
        .subscriber(events)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind a");
    assert_ne!(a_addr, b_addr);

    let mut expected = BTreeSet::new();
    for i in 0..COUNT {
        // Sizes up to 1,200 bytes: whole datagrams, far from any limit.
        let payload: Vec<u8> = format!("datagram {i:02} ")
            .bytes()
            .cycle()
            .take(20 + i * 18)
            .collect();
        let sent = a
            .send(SendDatagram::new(payload.clone()).to(b_addr.clone()))
            .await
            .expect("answered")
            .expect("sent");
        assert_eq!(sent.len, payload.len());
        let mut reply = b"re:".to_vec();
        reply.extend_from_slice(&payload);
        expected.insert(reply);
    }
    let mut got = BTreeSet::new();
    for _ in 0..COUNT {
        let (bytes, from, truncated) = next_datagram(&mut heard).await;
        assert_eq!(from.as_ref(), Some(&b_addr), "the reply comes from b");
        assert!(!truncated);
        assert!(
            expected.contains(&bytes),
            "a reply that was never asked for"
        );
        got.insert(bytes);
    }
    assert_eq!(got, expected, "every datagram answered, each whole");
}

#[actix::test]
async fn a_connected_socket_sends_to_its_peer_without_naming_it() {
    let (events, mut heard) = channel::<DatagramEvent>();
    let (server, server_addr) = DatagramSocket::builder()
        .subscriber(events)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let client = DatagramSocket::builder()
        .local(SocketAddr::from(([127, 0, 0, 1], 0)))
        .connect(server_addr.clone())
        .await
        .expect("connect");
    let info = client.send(GetDatagramInfo).await.expect("info");
    assert_eq!(info.peer, Some(server_addr));
    let client_addr = info.local.expect("bound first");
    client
        .send(SendDatagram::new(&b"hello, server"[..]))
        .await
        .expect("answered")
        .expect("sent");
    let (bytes, from, _) = next_datagram(&mut heard).await;
    assert_eq!(bytes, b"hello, server");
    assert_eq!(from, Some(client_addr));
    drop(server);
}

#[actix::test]
async fn binding_a_taken_udp_port_is_a_bind_error() {
    let (_first, taken) = DatagramSocket::builder()
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let refused = DatagramSocket::builder()
        .bind(taken.clone())
        .await
        .expect_err("the port is taken");
    assert!(
        matches!(&refused, SocketError::Bind(e) if e.io_kind() == Some(std::io::ErrorKind::AddrInUse)),
        "{refused:?}"
    );
    let (_second, shared) = DatagramSocket::builder()
        .reuse_port(true)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind with reuse_port");
    let (_third, again) = DatagramSocket::builder()
        .reuse_port(true)
        .bind(shared.clone())
        .await
        .expect("a second socket on the port with reuse_port");
    assert_eq!(again, shared);
}

/// Receives one 1,000-byte datagram over real UDP with `max_datagram_size` at `max`, in
/// place or (`by_message`) through the system table's `recvfrom` by message.
async fn receive_with_max(max: usize, by_message: bool) {
    let (subscriber, mut heard) = channel::<DatagramEvent>();
    let mut functions = sockactor::SocketFunctions::system();
    if by_message {
        let recvfrom = functions.recvfrom().clone();
        functions = functions.with_recvfrom(recvfrom);
    }
    let (_receiver, local) = DatagramSocket::builder()
        .functions(functions)
        .config(sockactor::DatagramConfig {
            max_datagram_size: max,
            ..sockactor::DatagramConfig::default()
        })
        .subscriber(subscriber)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let (sender, _) = DatagramSocket::builder()
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind sender");
    sender
        .send(SendDatagram::new(vec![7u8; 1000]).to(local))
        .await
        .expect("mailbox")
        .expect("sent");
    let (bytes, _, truncated) = next_datagram(&mut heard).await;
    assert_eq!((bytes.len(), truncated), (1000, false), "max {max}");
    // The thread's transport lives on: another socket binds.
    DatagramSocket::builder()
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("another socket of the thread binds");
}

/// `DatagramConfig::max_datagram_size` has no upper bound: a huge one (as a caller may
/// write for "whatever comes") receives datagrams whole, in place and by message,
/// without a panic or an allocation of that size (the transport receives at most what a
/// kernel can deliver).
#[actix::test]
async fn a_huge_max_datagram_size_receives_whole_datagrams_in_place_and_by_message() {
    for max in [usize::MAX, 1 << 40] {
        for by_message in [false, true] {
            receive_with_max(max, by_message).await;
        }
    }
}
