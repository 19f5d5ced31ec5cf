//! Real TCP on loopback: a server stops (its listener and connection dropped), the
//! client's connects are refused, the server comes back on the same port, and the
//! client reconnects by itself and delivers the data written while the server was gone.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::client::{client_events, Events};
use sockactor::messages::{ClientEvent, Write};
use sockactor::ReconnectingClient;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket};

const LIMIT: Duration = Duration::from_secs(20);

/// A listener on `addr` that may take a port just given up (SO_REUSEADDR).
fn listen(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind(addr).expect("bind loopback");
    socket.listen(16).expect("listen")
}

async fn next(events: &mut Events) -> ClientEvent {
    tokio::time::timeout(LIMIT, events.next())
        .await
        .expect("an event in time")
}

async fn read_exactly(stream: &mut tokio::net::TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut buf))
        .await
        .expect("data in time")
        .expect("read");
    buf
}

#[actix::test]
async fn the_client_reconnects_to_a_restarted_server_and_the_later_data_arrives() {
    let listener = listen("127.0.0.1:0".parse().expect("addr"));
    let addr = listener.local_addr().expect("local addr");
    let (subscriber, mut events) = client_events();
    let client = ReconnectingClient::builder(addr)
        .subscriber(subscriber)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .start();

    let (mut first, _) = tokio::time::timeout(LIMIT, listener.accept())
        .await
        .expect("accept in time")
        .expect("accept");
    assert!(matches!(
        next(&mut events).await,
        ClientEvent::Connected { attempt: 1, .. }
    ));
    let written = client.send(Write::new(&b"before\n"[..])).await;
    assert_eq!(written.expect("mailbox").expect("written").len, 7);
    assert_eq!(read_exactly(&mut first, 7).await, b"before\n");

    // The server stops.
    drop(first);
    drop(listener);
    assert!(matches!(next(&mut events).await, ClientEvent::Eof));
    assert!(matches!(
        next(&mut events).await,
        ClientEvent::Disconnected { .. }
    ));
    let after = client.send(Write::new(&b"after the restart\n"[..]));
    // Wait until an attempt has been refused: the second one is announced.
    loop {
        match next(&mut events).await {
            ClientEvent::Reconnecting { attempt, .. } if attempt >= 2 => break,
            ClientEvent::Reconnecting { .. } => {}
            other => panic!("unexpected event {other:?}"),
        }
    }

    // The server comes back on the same port.
    let listener = listen(addr);
    let (mut second, _) = tokio::time::timeout(LIMIT, listener.accept())
        .await
        .expect("accept in time")
        .expect("accept");
    loop {
        match next(&mut events).await {
            ClientEvent::Connected { attempt, .. } => {
                assert!(attempt >= 2, "connected on attempt {attempt}");
                break;
            }
            ClientEvent::Reconnecting { .. } => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    let answer = tokio::time::timeout(LIMIT, after)
        .await
        .expect("answer in time");
    assert_eq!(answer.expect("mailbox").expect("written").len, 18);
    assert_eq!(read_exactly(&mut second, 18).await, b"after the restart\n");
    let more = client.send(Write::new(&b"and more\n"[..])).await;
    assert_eq!(more.expect("mailbox").expect("written").len, 9);
    assert_eq!(read_exactly(&mut second, 9).await, b"and more\n");

    client.do_send(sockactor::messages::Close::Graceful);
    let mut rest = Vec::new();
    tokio::time::timeout(LIMIT, second.read_to_end(&mut rest))
        .await
        .expect("EOF in time")
        .expect("read");
    assert!(rest.is_empty(), "nothing after the last write");
}
