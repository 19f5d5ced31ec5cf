//! The TLS filter keeps the transport contract below it: with the fault injector under
//! the TLS layer on both ends (partial accepts, write and read would-blocks, short reads;
//! no resets), the handshake still completes, and a TLS client gets back from a TLS echo
//! listener exactly the bytes it wrote, every write answered Ok with its length.

use std::time::Duration;

use crate::support::tls::{client_config, collect, echo_listener, pki, write_mixed};
use crate::support::{channel_subscriber, pattern};
use bytes::Bytes;
use sockactor::filters::{FaultInjector, Faults, Tls};
use sockactor::messages::{Close, StopListening};
use sockactor::{Socket, SocketFunctions};

fn faults() -> Faults {
    Faults::default()
        .partial(0.5)
        .would_block(0.2, Duration::from_millis(2))
        .short_reads(0.5)
        .read_would_block(0.2, Duration::from_millis(2))
}

#[actix::test]
async fn a_tls_echo_over_injected_faults_is_byte_exact() {
    const TOTAL: usize = 768 * 1024;
    let pki = pki(&["localhost"]);
    let server = Tls::server(pki.server.clone())
        .max_buffered(16 * 1024)
        .wrap(FaultInjector::new(3, faults()).wrap(SocketFunctions::system()));
    let (listener, addr) = echo_listener(server).await;
    let (subscriber, mut events) = channel_subscriber();
    let client = Socket::builder()
        .functions(
            Tls::client(client_config(pki.roots), "localhost")
                .expect("server name")
                .max_buffered(16 * 1024)
                .wrap(FaultInjector::new(5, faults()).wrap(SocketFunctions::system())),
        )
        .subscriber(subscriber)
        .connect(addr)
        .await
        .expect("the TLS handshake succeeds through the faults");
    let data = Bytes::from(pattern(TOTAL, 67));
    write_mixed(&client, &data).await;
    let back = collect(&mut events, TOTAL).await;
    assert_eq!(back.len(), TOTAL);
    assert!(back == data, "the echo differs from what was sent");
    client.do_send(Close::Graceful);
    listener.send(StopListening).await.expect("listener");
}
