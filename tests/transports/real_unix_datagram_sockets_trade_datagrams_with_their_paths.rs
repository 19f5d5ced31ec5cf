//! Unix domain datagram sockets through the system transport: two sockets bound to paths
//! under the temporary directory trade datagrams, each received whole with the sender's
//! path; a socket connected to a path sends without naming it; an unbound sender is an
//! unnamed peer; a datagram longer than the receiver's limit is flagged truncated; the
//! bound paths are removed when the sockets close.
#![cfg(unix)]

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{channel, next_datagram, temp_path};
use sockactor::messages::{Address, Close, DatagramEvent, SendDatagram};
use sockactor::{DatagramConfig, DatagramSocket};

#[actix::test]
async fn two_bound_unix_datagram_sockets_trade_datagrams_with_their_paths() {
    let (a_path, b_path) = (temp_path("dgram-a.sock"), temp_path("dgram-b.sock"));
    let (a_events, mut a_heard) = channel::<DatagramEvent>();
    let (b_events, mut b_heard) = channel::<DatagramEvent>();
    let (a, a_local) = DatagramSocket::builder()
        .subscriber(a_events)
        .bind(Address::Unix(a_path.clone()))
        .await
        .expect("bind a");
    let (b, b_local) = DatagramSocket::builder()
        .subscriber(b_events)
        .bind(Address::Unix(b_path.clone()))
        .await
        .expect("bind b");
    assert_eq!(a_local, Address::Unix(a_path.clone()));
    assert_eq!(b_local, Address::Unix(b_path.clone()));

    for i in 0..16usize {
        let payload = vec![i as u8; 10 + i * 50];
        let sent = a
            .send(SendDatagram::new(payload.clone()).to(b_local.clone()))
            .await
            .expect("mailbox")
            .expect("sent");
        assert_eq!(sent.len, payload.len());
        let (bytes, from, truncated) = next_datagram(&mut b_heard).await;
        assert_eq!(bytes, payload, "whole and in order");
        assert_eq!(from, Some(a_local.clone()), "from a's path");
        assert!(!truncated);
    }
    b.send(SendDatagram::new(&b"reply"[..]).to(a_local.clone()))
        .await
        .expect("mailbox")
        .expect("sent");
    let (bytes, from, _) = next_datagram(&mut a_heard).await;
    assert_eq!(bytes, b"reply");
    assert_eq!(from, Some(b_local.clone()));

    a.send(Close::Graceful).await.expect("close a");
    b.send(Close::Graceful).await.expect("close b");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (a_path.exists() || b_path.exists()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !a_path.exists() && !b_path.exists(),
        "bound paths removed on close"
    );
}

#[actix::test]
async fn a_connected_unbound_sender_reaches_its_path_as_an_unnamed_peer_and_long_ones_are_flagged()
{
    let path = temp_path("dgram-server.sock");
    let (events, mut heard) = channel::<DatagramEvent>();
    let (server, local) = DatagramSocket::builder()
        .subscriber(events)
        .config(DatagramConfig {
            max_datagram_size: 100,
            ..DatagramConfig::default()
        })
        .bind(Address::Unix(path.clone()))
        .await
        .expect("bind");
    let client = DatagramSocket::builder()
        .connect(local.clone())
        .await
        .expect("connect to the path");
    client
        .send(SendDatagram::new(&b"no address needed"[..]))
        .await
        .expect("mailbox")
        .expect("sent");
    let (bytes, from, truncated) = next_datagram(&mut heard).await;
    assert_eq!(bytes, b"no address needed");
    assert_eq!(
        from,
        Some(Address::Unix(PathBuf::new())),
        "an unnamed sender"
    );
    assert!(!truncated);
    client
        .send(SendDatagram::new(vec![7u8; 300]))
        .await
        .expect("mailbox")
        .expect("sent");
    let (bytes, _, truncated) = next_datagram(&mut heard).await;
    assert!(truncated, "longer than the receiver's limit");
    assert_eq!(bytes, vec![7u8; 100]);
    server.send(Close::Graceful).await.expect("close");
    client.send(Close::Graceful).await.expect("close");
}

/// A sender bound to an abstract name (Linux: a path starting with a NUL byte) is heard
/// with that name, not as an unnamed peer, and can be answered.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[actix::test]
async fn a_sender_bound_to_an_abstract_name_is_heard_by_it_and_answered() {
    let server_path = temp_path("abstract-server.sock");
    let (events, mut heard) = channel::<DatagramEvent>();
    let (server, server_local) = DatagramSocket::builder()
        .subscriber(events)
        .bind(Address::Unix(server_path.clone()))
        .await
        .expect("bind the server");
    let name = PathBuf::from(format!("\0sockactor-abstract-{}", std::process::id()));
    let (client_events, mut client_heard) = channel::<DatagramEvent>();
    let (client, client_local) = DatagramSocket::builder()
        .subscriber(client_events)
        .bind(Address::Unix(name.clone()))
        .await
        .expect("bind the abstract name");
    assert_eq!(client_local, Address::Unix(name));
    client
        .send(SendDatagram::new(&b"ping"[..]).to(server_local))
        .await
        .expect("mailbox")
        .expect("sent");
    let (bytes, from, _) = next_datagram(&mut heard).await;
    assert_eq!(bytes, b"ping");
    assert_eq!(from.as_ref(), Some(&client_local), "heard by its name");
    server
        .send(SendDatagram::new(&b"pong"[..]).to(client_local))
        .await
        .expect("mailbox")
        .expect("answered");
    let (bytes, _, _) = next_datagram(&mut client_heard).await;
    assert_eq!(bytes, b"pong");
    let _ = std::fs::remove_file(&server_path);
}

/// A socket whose path was unlinked and bound again by another socket (a restarted
/// server's "remove the stale path, then bind") does not remove the newcomer's path when
/// it closes: the transport removes only the file it made.
#[actix::test]
async fn closing_a_socket_whose_path_was_rebound_leaves_the_new_socket_reachable() {
    let path = crate::support::TempPath::new("rebound.sock");
    let (old_sub, mut old_heard) = channel::<DatagramEvent>();
    let (old, _) = DatagramSocket::builder()
        .subscriber(old_sub)
        .bind(Address::Unix(path.0.clone()))
        .await
        .expect("bind old");
    std::fs::remove_file(&path.0).expect("unlink the stale path");
    let (new_sub, mut new_heard) = channel::<DatagramEvent>();
    let (_new, _) = DatagramSocket::builder()
        .subscriber(new_sub)
        .bind(Address::Unix(path.0.clone()))
        .await
        .expect("bind new");
    old.do_send(Close::Graceful);
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), old_heard.recv())
            .await
            .expect("closed in time")
            .expect("a subscriber's channel");
        if matches!(
            e.kind,
            sockactor::messages::DatagramEventKind::Closed { .. }
        ) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        path.0.exists(),
        "the old socket's close removed the new socket's path"
    );
    let sender = std::os::unix::net::UnixDatagram::unbound().expect("sender");
    sender
        .send_to(b"hi", &path.0)
        .expect("the new socket is reachable");
    let (bytes, _, _) = next_datagram(&mut new_heard).await;
    assert_eq!(bytes, b"hi");
}
