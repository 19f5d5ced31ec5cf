//! A transport filter (fault injector, throttle, capture) wrapped around a table with
//! byte layers (TLS, compression) keeps those layers: they run in the socket, above every
//! transport filter, whatever order the table was wrapped in. A TLS client so wrapped
//! never sends plaintext after its handshake; a compressing one sends compressed bytes.

use std::time::Duration;

use crate::support::tls::{client_config, echo_listener, pki};
use crate::support::{channel_subscriber, sink};
use bytes::Bytes;
use sockactor::filters::{
    Capture, CaptureEvent, Compress, FaultInjector, Faults, SendAnswer, Throttle, Tls,
};
use sockactor::messages::{Close, GetInfo, SocketEventKind, StopListening, Write};
use sockactor::{Socket, SocketFunctions};

const SECRET: &[u8] = b"SECRET-PLAINTEXT-THAT-MUST-BE-ENCRYPTED";
const GUARD: Duration = Duration::from_secs(60);

#[actix::test]
async fn a_fault_injector_around_a_tls_table_keeps_the_tls_layer() {
    let pki = pki(&["localhost"]);
    let (listener, addr) =
        echo_listener(Tls::server(pki.server.clone()).wrap(SocketFunctions::system())).await;
    let (capture, wire) = Capture::to_memory();
    let client = Tls::client(client_config(pki.roots), "localhost").expect("server name");
    let functions = FaultInjector::new(5, Faults::default())
        .wrap(client.wrap(capture.wrap(SocketFunctions::system())));
    let (subscriber, mut events) = channel_subscriber();
    let socket = tokio::time::timeout(
        GUARD,
        Socket::builder()
            .functions(functions)
            .subscriber(subscriber)
            .connect(addr),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    let info = socket.send(GetInfo).await.expect("info");
    assert_eq!(info.layers, ["tls"]);
    let written = tokio::time::timeout(GUARD, socket.send(Write::new(Bytes::from_static(SECRET))))
        .await
        .expect("answered in time")
        .expect("mailbox");
    assert_eq!(written.expect("written").len, SECRET.len());
    let mut echoed = Vec::new();
    while echoed.len() < SECRET.len() {
        match tokio::time::timeout(GUARD, events.recv())
            .await
            .expect("echo in time")
        {
            Some(SocketEventKind::Received(bytes)) => echoed.extend_from_slice(&bytes),
            Some(_) => {}
            None => panic!("events ended"),
        }
    }
    assert_eq!(echoed, SECRET, "the TLS echo comes back decrypted");
    socket.do_send(Close::Graceful);
    listener.send(StopListening).await.expect("listener");
    let mut sent = Vec::new();
    for record in wire.reader() {
        if let CaptureEvent::SendV {
            answer: SendAnswer::Accepted(bytes),
            ..
        } = record.expect("record").event
        {
            sent.extend_from_slice(&bytes);
        }
    }
    assert!(!sent.is_empty());
    assert!(
        !sent.windows(SECRET.len()).any(|w| w == SECRET),
        "plaintext on the wire after the TLS handshake"
    );
}

/// 100,000 zeros through `outer(Compress(system))` to a raw sink: compressed on the wire.
async fn zeros_through(functions: SocketFunctions) -> (Vec<&'static str>, usize) {
    let (addr, received) = sink().await;
    let socket = tokio::time::timeout(GUARD, Socket::builder().functions(functions).connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let layers = socket.send(GetInfo).await.expect("info").layers;
    let data = Bytes::from(vec![0u8; 100_000]);
    tokio::time::timeout(GUARD, socket.send(Write::new(data)))
        .await
        .expect("answered in time")
        .expect("mailbox")
        .expect("written");
    socket.do_send(Close::Graceful);
    let wire = tokio::time::timeout(GUARD, received)
        .await
        .expect("sink done")
        .expect("join")
        .expect("read");
    (layers, wire.len())
}

#[actix::test]
async fn a_throttle_around_a_compress_table_keeps_the_deflate_layer() {
    let functions = Throttle::per_socket(64 << 20, 1 << 20)
        .wrap(Compress::new().wrap(SocketFunctions::system()));
    let (layers, wire) = zeros_through(functions).await;
    assert_eq!(layers, ["deflate"]);
    assert!(wire < 10_000, "100,000 zeros took {wire} bytes on the wire");
}

#[actix::test]
async fn a_capture_around_a_compress_table_keeps_the_deflate_layer() {
    let (capture, _file) = Capture::to_memory();
    let functions = capture.wrap(Compress::new().wrap(SocketFunctions::system()));
    let (layers, wire) = zeros_through(functions).await;
    assert_eq!(layers, ["deflate"]);
    assert!(wire < 10_000, "100,000 zeros took {wire} bytes on the wire");
}
