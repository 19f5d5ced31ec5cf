//! TLS, compression and a user's byte layer run inside the socket, over its transport:
//! on the system transport the socket still calls `write` and `read` on the stream in
//! place (no message per call), layers stack in one expression (deflate over TLS), a
//! user layer transforms the bytes a plain peer sees, and over a message transport (a
//! fault injector) the same layers carry every byte exact. TLS configs load from PEM in
//! one call, and a certificate error is one step from the connect's error.

use std::io::{self, IoSlice};
use std::time::Duration;

use crate::support::tls::{client_config, collect, echo_listener, pki, write_mixed};
use crate::support::{channel_subscriber, local, pattern, temp_path};
use bytes::{Bytes, BytesMut};
use sockactor::filters::{Compress, Decoded, FaultInjector, Faults, Layer, Tls};
use sockactor::messages::{Close, GetInfo, StopListening, Write};
use sockactor::{Socket, SocketFunctions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Flips every bit, both ways.
#[derive(Debug)]
struct Invert;

impl Layer for Invert {
    fn name(&self) -> &'static str {
        "invert"
    }

    fn worst_case(&self, n: usize) -> usize {
        n
    }

    fn encode(&mut self, input: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<()> {
        for slice in input {
            out.extend(slice.iter().map(|b| !b));
        }
        Ok(())
    }

    fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        max: usize,
    ) -> io::Result<Decoded> {
        let n = input.len().min(max);
        out.extend(input.split_to(n).iter().map(|b| !b));
        Ok(if input.is_empty() {
            Decoded::NeedInput
        } else {
            Decoded::More
        })
    }
}

/// A TLS client over `client` to a TLS echo listener over `server`: every byte comes
/// back; returns what the client's `GetInfo` said of its path.
async fn echo_through(
    client: SocketFunctions,
    server: SocketFunctions,
) -> (bool, Vec<&'static str>) {
    const TOTAL: usize = 512 * 1024;
    let (listener, addr) = echo_listener(server).await;
    let (subscriber, mut events) = channel_subscriber();
    let socket = Socket::builder()
        .functions(client)
        .subscriber(subscriber)
        .connect(addr)
        .await
        .expect("connect");
    let info = socket.send(GetInfo).await.expect("info");
    let data = Bytes::from(pattern(TOTAL, 5));
    write_mixed(&socket, &data).await;
    let back = collect(&mut events, TOTAL).await;
    assert!(back == data, "the echo differs from what was sent");
    socket.do_send(Close::Graceful);
    listener.send(StopListening).await.expect("listener");
    (info.in_place, info.layers)
}

#[actix::test]
async fn a_tls_socket_on_the_system_transport_reads_and_writes_in_place() {
    let pki = pki(&["localhost"]);
    let client = Tls::client(client_config(pki.roots.clone()), "localhost")
        .expect("name")
        .wrap(SocketFunctions::system());
    let server = Tls::server(pki.server.clone()).wrap(SocketFunctions::system());
    let (in_place, layers) = echo_through(client, server).await;
    assert!(in_place, "TLS keeps the in-place path");
    assert_eq!(layers, ["tls"]);
}

#[actix::test]
async fn deflate_over_tls_stacks_in_one_expression_and_stays_in_place() {
    let pki = pki(&["localhost"]);
    let client = Compress::new().wrap(
        Tls::client(client_config(pki.roots.clone()), "localhost")
            .expect("name")
            .wrap(SocketFunctions::system()),
    );
    let server =
        Compress::new().wrap(Tls::server(pki.server.clone()).wrap(SocketFunctions::system()));
    let (in_place, layers) = echo_through(client, server).await;
    assert!(in_place);
    assert_eq!(layers, ["deflate", "tls"], "compress, then encrypt");
}

#[actix::test]
async fn tls_beneath_another_layer_is_refused_with_a_typed_error() {
    let pki = pki(&["localhost"]);
    let (listener, addr) =
        echo_listener(Tls::server(pki.server.clone()).wrap(SocketFunctions::system())).await;
    let error = Socket::builder()
        .functions(
            Tls::client(client_config(pki.roots.clone()), "localhost")
                .expect("name")
                .wrap(Compress::new().wrap(SocketFunctions::system())),
        )
        .connect(addr)
        .await
        .expect_err("TLS cannot handshake through a layer beneath it");
    assert!(
        matches!(
            error.transport(),
            Some(sockactor::TransportError::Unsupported(_))
        ),
        "{error:?}"
    );
    listener.send(StopListening).await.expect("listener");
}

#[actix::test]
async fn tls_over_a_message_transport_carries_every_byte_by_message() {
    let pki = pki(&["localhost"]);
    let faults = Faults::default()
        .partial(0.3)
        .would_block(0.1, Duration::from_millis(1));
    let client = Tls::client(client_config(pki.roots.clone()), "localhost")
        .expect("name")
        .wrap(FaultInjector::new(3, faults).wrap(SocketFunctions::system()));
    let server = Tls::server(pki.server.clone()).wrap(SocketFunctions::system());
    let (in_place, layers) = echo_through(client, server).await;
    assert!(!in_place, "under a fault injector the path is by message");
    assert_eq!(layers, ["tls"]);
}

#[actix::test]
async fn a_user_layer_transforms_what_a_plain_peer_sees_both_ways() {
    let listener = tokio::net::TcpListener::bind(local()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (subscriber, mut events) = channel_subscriber();
    let socket = Socket::builder()
        .functions(SocketFunctions::system().layer(|_| Ok(Box::new(Invert))))
        .subscriber(subscriber)
        .connect(addr)
        .await
        .expect("connect");
    let (mut peer, _) = listener.accept().await.expect("accept");
    let info = socket.send(GetInfo).await.expect("info");
    assert!(info.in_place);
    assert_eq!(info.layers, ["invert"]);
    socket
        .send(Write::new(Bytes::from_static(b"hello")))
        .await
        .expect("mailbox")
        .expect("written");
    let mut seen = [0u8; 5];
    peer.read_exact(&mut seen).await.expect("read");
    assert_eq!(
        seen,
        b"hello".map(|b| !b),
        "the peer sees the layer's bytes"
    );
    peer.write_all(&b"world".map(|b| !b)).await.expect("write");
    assert_eq!(
        collect(&mut events, 5).await,
        b"world",
        "the subscriber sees plaintext"
    );
    socket.do_send(Close::Graceful);
}

#[actix::test]
async fn tls_configs_load_from_pem_files_in_one_call() {
    let pki = pki(&["localhost"]);
    let (ca, chain, key) = (
        temp_path("ca.pem"),
        temp_path("chain.pem"),
        temp_path("key.pem"),
    );
    std::fs::write(&ca, &pki.ca_pem).expect("write");
    std::fs::write(&chain, &pki.chain_pem).expect("write");
    std::fs::write(&key, &pki.key_pem).expect("write");
    let client = Tls::client_from_pem(&ca, "localhost")
        .expect("client from PEM")
        .wrap(SocketFunctions::system());
    let server = Tls::server_from_pem(&chain, &key)
        .expect("server from PEM")
        .wrap(SocketFunctions::system());
    let (in_place, _) = echo_through(client, server).await;
    assert!(in_place);
    // A file without a certificate is a typed error, not a panic.
    assert!(matches!(
        Tls::client_from_pem(&key, "localhost"),
        Err(sockactor::filters::TlsConfigError::Missing(_))
    ));
    for path in [ca, chain, key] {
        let _ = std::fs::remove_file(path);
    }
}

#[actix::test]
async fn a_certificate_error_is_one_step_from_the_connects_error() {
    let (trusted, other) = (pki(&["localhost"]), pki(&["localhost"]));
    let (listener, addr) =
        echo_listener(Tls::server(other.server.clone()).wrap(SocketFunctions::system())).await;
    let error = Socket::builder()
        .functions(
            Tls::client(client_config(trusted.roots), "localhost")
                .expect("name")
                .wrap(SocketFunctions::system()),
        )
        .connect(addr)
        .await
        .expect_err("an unknown issuer fails the connect");
    assert!(
        matches!(error.tls(), Some(rustls::Error::InvalidCertificate(_))),
        "{error:?}"
    );
    listener.send(StopListening).await.expect("listener");
}
