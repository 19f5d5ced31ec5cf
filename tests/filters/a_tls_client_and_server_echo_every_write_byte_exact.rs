//! Real loopback TCP through the TLS filter on both ends: a TLS client socket writes
//! writes of 1 B to 256 KiB to a listener whose accepted sockets run the TLS server
//! filter and echo; every write is answered Ok with its length, and the bytes come back
//! exactly as written.

use crate::support::tls::{client_config, collect, echo_listener, pki, write_mixed};
use crate::support::{channel_subscriber, pattern};
use bytes::Bytes;
use sockactor::filters::Tls;
use sockactor::messages::{Close, StopListening};
use sockactor::{Socket, SocketFunctions};

#[actix::test]
async fn a_tls_client_gets_every_write_back_from_a_tls_echo_listener() {
    const TOTAL: usize = 1536 * 1024;
    let pki = pki(&["localhost"]);
    let (listener, addr) =
        echo_listener(Tls::server(pki.server.clone()).wrap(SocketFunctions::system())).await;
    let (subscriber, mut events) = channel_subscriber();
    let client = Socket::builder()
        .functions(
            Tls::client(client_config(pki.roots), "localhost")
                .expect("server name")
                .wrap(SocketFunctions::system()),
        )
        .subscriber(subscriber)
        .connect(addr)
        .await
        .expect("the TLS handshake succeeds");
    let data = Bytes::from(pattern(TOTAL, 61));
    write_mixed(&client, &data).await;
    let back = collect(&mut events, TOTAL).await;
    assert_eq!(back.len(), TOTAL);
    assert!(back == data, "the echo differs from what was sent");
    client.do_send(Close::Graceful);
    listener.send(StopListening).await.expect("listener");
}
