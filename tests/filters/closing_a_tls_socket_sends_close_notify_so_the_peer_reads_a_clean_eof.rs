//! Closing a TLS socket queues close_notify and hands on every record before the close
//! reaches the inner transport: the TLS peer reads all the bytes written and then a clean
//! EOF, never a read error (which is what a TCP close without close_notify gives).

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::tls::{client_config, pki, write_mixed};
use crate::support::{channel, channel_subscriber, pattern};
use bytes::Bytes;
use sockactor::filters::Tls;
use sockactor::messages::{Address, Close, ListenerEvent, SocketEventKind, StopListening};
use sockactor::{Listener, Socket, SocketFunctions};

#[actix::test]
async fn the_peer_reads_every_byte_then_eof() {
    const TOTAL: usize = 300 * 1024;
    let pki = pki(&["localhost"]);
    let (accepted_events, mut events) = channel_subscriber();
    let (listener_events, _listener_rx) = channel::<ListenerEvent>();
    let (listener, local) = Listener::builder()
        .functions(Tls::server(pki.server.clone()).wrap(SocketFunctions::system()))
        .subscriber(listener_events)
        .socket_builder(move |_| Socket::builder().subscriber(accepted_events.clone()))
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback");
    let Address::Inet(addr) = local else {
        panic!("an inet listener has an inet address");
    };
    // The client reads too (the server's session tickets), so its close is a clean FIN,
    // not a reset for unread bytes.
    let (client_events, _client_rx) = channel_subscriber();
    let client = Socket::builder()
        .functions(
            Tls::client(client_config(pki.roots), "localhost")
                .expect("server name")
                .wrap(SocketFunctions::system()),
        )
        .subscriber(client_events)
        .connect(addr)
        .await
        .expect("the TLS handshake succeeds");
    let data = Bytes::from(pattern(TOTAL, 73));
    write_mixed(&client, &data).await;
    client.do_send(Close::Graceful);
    let mut got = Vec::with_capacity(TOTAL);
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.recv().await {
                Some(SocketEventKind::Received(bytes)) => got.extend_from_slice(&bytes),
                Some(SocketEventKind::Eof) => return true,
                Some(SocketEventKind::ReadFailed(e)) => panic!("a read error instead of EOF: {e}"),
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await
    .expect("EOF within 60 s");
    assert!(ended, "the events ended without an EOF");
    assert_eq!(got.len(), TOTAL);
    assert!(got == data, "the peer read other bytes than were written");
    listener.send(StopListening).await.expect("listener");
}
