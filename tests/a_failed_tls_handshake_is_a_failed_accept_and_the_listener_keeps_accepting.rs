//! A TLS server filter runs the handshake before the listener gets the connection: a
//! client that gives up on the handshake (it does not trust the certificate) reaches the
//! listener as a failed accept, not as a socket, and the listener goes on to accept and
//! serve the next, good client.

mod support;
mod tls_support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use sockactor::filters::Tls;
use sockactor::messages::{Address, Close, ListenerEvent, StopListening};
use sockactor::{Listener, Socket, SocketFunctions};
use support::{channel, channel_subscriber, pattern, EchoServer};
use tls_support::{client_config, collect, pki, write_mixed};

use actix::prelude::*;

#[actix::test]
async fn a_bad_handshake_fails_one_accept_and_the_next_client_is_served() {
    const TOTAL: usize = 64 * 1024;
    let pki_server = pki(&["localhost"]);
    let pki_other = pki(&["localhost"]);
    let echo = EchoServer::default().start();
    let (seen, mut listener_events) = channel::<ListenerEvent>();
    let subscriber = echo.clone();
    let (listener, local) = Listener::builder()
        .functions(Tls::server(pki_server.server.clone()).wrap(SocketFunctions::system()))
        .subscriber(seen)
        .accept_backoff(Duration::from_millis(1))
        .socket_builder(move |_| Socket::builder().subscriber(subscriber.clone().recipient()))
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback");
    let Address::Inet(addr) = local else {
        panic!("an inet listener has an inet address");
    };
    let refused = Socket::builder()
        .functions(
            Tls::client(client_config(pki_other.roots), "localhost")
                .expect("server name")
                .wrap(SocketFunctions::system()),
        )
        .connect(addr)
        .await;
    assert!(refused.is_err(), "the untrusting client cannot connect");
    let first = tokio::time::timeout(Duration::from_secs(10), listener_events.recv())
        .await
        .expect("a listener event within 10 s")
        .expect("listener events");
    assert!(
        matches!(first, ListenerEvent::AcceptFailed { .. }),
        "the failed handshake is a failed accept, got {first:?}"
    );
    let (subscriber, mut events) = channel_subscriber();
    let client = Socket::builder()
        .functions(
            Tls::client(client_config(pki_server.roots), "localhost")
                .expect("server name")
                .wrap(SocketFunctions::system()),
        )
        .subscriber(subscriber)
        .connect(addr)
        .await
        .expect("the good client connects");
    let accepted = tokio::time::timeout(Duration::from_secs(10), listener_events.recv())
        .await
        .expect("a listener event within 10 s")
        .expect("listener events");
    assert!(
        matches!(accepted, ListenerEvent::Accepted { .. }),
        "the good client is accepted, got {accepted:?}"
    );
    // The echo server serves the sockets it hears of.
    echo.do_send(accepted);
    let data = Bytes::from(pattern(TOTAL, 79));
    write_mixed(&client, &data).await;
    let back = collect(&mut events, TOTAL).await;
    assert!(back == data, "the echo differs from what was sent");
    client.do_send(Close::Graceful);
    listener.send(StopListening).await.expect("listener");
}
