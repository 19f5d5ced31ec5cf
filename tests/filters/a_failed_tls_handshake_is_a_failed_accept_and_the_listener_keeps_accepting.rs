//! A TLS server filter runs the handshake before the listener gets the connection: a
//! client that gives up on the handshake (it does not trust the certificate) reaches the
//! listener as a failed accept, not as a socket, and the listener goes on to accept and
//! serve the next, good client. A handshake the server refuses sends the client the
//! server's alert before the connection closes.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::tls::{client_config, collect, pki, write_mixed};
use crate::support::{channel, channel_subscriber, pattern, EchoServer};
use bytes::Bytes;
use sockactor::filters::Tls;
use sockactor::messages::{Address, Close, ListenerEvent, StopListening};
use sockactor::{Listener, Socket, SocketFunctions};

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

/// The server refuses the handshake (the client offers only TLS 1.2, the server speaks
/// only TLS 1.3): its alert reaches the client before the connection closes, so the
/// client's connect fails with the alert, not with a bare EOF.
#[actix::test]
async fn a_server_that_refuses_the_handshake_tells_the_client_why() {
    use std::sync::Arc;

    use rustls::{AlertDescription, ClientConfig, ServerConfig};
    use sockactor::{SocketError, TransportError};

    let pki = pki(&["localhost"]);
    let server = ServerConfig::builder_with_provider(crate::support::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .expect("server config");
    let client = ClientConfig::builder_with_provider(crate::support::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("versions")
        .with_root_certificates(pki.roots.clone())
        .with_no_client_auth();
    let (seen, mut listener_events) = channel::<ListenerEvent>();
    let (listener, local) = Listener::builder()
        .functions(Tls::server(Arc::new(server)).wrap(SocketFunctions::system()))
        .subscriber(seen)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback");
    let Address::Inet(addr) = local else {
        panic!("an inet listener has an inet address");
    };
    let connected = Socket::builder()
        .functions(
            Tls::client(Arc::new(client), "localhost")
                .expect("server name")
                .wrap(SocketFunctions::system()),
        )
        .connect(addr)
        .await;
    let Err(SocketError::Connect(TransportError::Io(e))) = &connected else {
        panic!("not a connect i/o error: {connected:?}");
    };
    let inner = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    assert_eq!(
        inner,
        Some(&rustls::Error::AlertReceived(
            AlertDescription::ProtocolVersion
        )),
        "{e:?}"
    );
    let event = tokio::time::timeout(Duration::from_secs(10), listener_events.recv())
        .await
        .expect("a listener event within 10 s")
        .expect("listener events");
    assert!(
        matches!(event, ListenerEvent::AcceptFailed { .. }),
        "the refused handshake is a failed accept, got {event:?}"
    );
    listener.send(StopListening).await.expect("listener");
}
