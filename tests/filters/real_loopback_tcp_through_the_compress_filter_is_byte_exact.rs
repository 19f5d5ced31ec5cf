//! Real loopback TCP through the compression filter: what a compressing socket writes
//! is a raw deflate stream a plain peer inflates to exactly the bytes written; a plain
//! peer's deflate stream reaches a compressing socket's subscriber byte exact; and a
//! compressing client talking to a compressing echo listener (with the fault injector
//! under the client's filter) gets back exactly what it sent.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{channel_subscriber, pattern, sink, EchoServer};
use actix::prelude::*;
use bytes::Bytes;
use flate2::{Compression, FlushCompress, FlushDecompress};
use sockactor::filters::{Compress, FaultInjector, Faults};
use sockactor::messages::{Address, Close, SocketEventKind, StopListening, Write};
use sockactor::{Listener, Socket, SocketFunctions};

/// Half random, half very compressible: a mixed stream of `len` bytes.
fn mixed(len: usize, seed: u64) -> Vec<u8> {
    let random = pattern(len / 2, seed);
    let text = b"compress me, compress me again. ".iter().copied().cycle();
    random.into_iter().chain(text).take(len).collect()
}

fn inflate(encoded: &[u8], len: usize) -> Vec<u8> {
    let mut inflater = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(len + 1);
    inflater
        .decompress_vec(encoded, &mut out, FlushDecompress::Sync)
        .expect("a valid deflate stream");
    out
}

/// Writes `data` in writes of mixed sizes, each answered with its length.
async fn write_mixed(socket: &Addr<Socket>, data: &Bytes) {
    let sizes = [1usize, 9, 700, 4096, 65_536, 3000, 130_000, 256 * 1024];
    let (mut offset, mut answers) = (0, Vec::new());
    for size in sizes.iter().cycle() {
        if offset == data.len() {
            break;
        }
        let end = (offset + size).min(data.len());
        let write = socket.send(Write::new(data.slice(offset..end)).wait_when_full());
        answers.push((end - offset, actix::spawn(write)));
        offset = end;
    }
    for (len, answer) in answers {
        let done = answer
            .await
            .expect("join")
            .expect("mailbox")
            .expect("written");
        assert_eq!(done.len, len);
    }
}

#[actix::test]
async fn a_plain_peer_inflates_what_a_compressing_socket_writes() {
    const TOTAL: usize = 1 << 20;
    let data = Bytes::from(mixed(TOTAL, 41));
    let (addr, received) = sink().await;
    let socket = Socket::builder()
        .functions(Compress::new().wrap(SocketFunctions::system()))
        .connect(addr)
        .await
        .expect("connect");
    write_mixed(&socket, &data).await;
    socket.do_send(Close::Graceful);
    let encoded = tokio::time::timeout(Duration::from_secs(60), received)
        .await
        .expect("transfer within 60 s")
        .expect("join")
        .expect("read");
    assert!(
        encoded.len() < TOTAL * 3 / 4,
        "{} bytes on the wire",
        encoded.len()
    );
    let plain = inflate(&encoded, TOTAL);
    assert_eq!(plain.len(), TOTAL);
    assert!(plain == data, "stream differs from what was written");
}

#[actix::test]
async fn a_compressing_socket_reads_a_plain_peers_deflate_stream() {
    use tokio::io::AsyncWriteExt;
    const TOTAL: usize = 512 * 1024;
    let data = mixed(TOTAL, 43);
    let mut deflater = flate2::Compress::new(Compression::default(), false);
    let mut encoded = Vec::with_capacity(TOTAL + 1024);
    deflater
        .compress_vec(&data, &mut encoded, FlushCompress::Sync)
        .expect("deflate");
    assert_eq!(deflater.total_in() as usize, TOTAL);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        stream.write_all(&encoded).await?;
        stream.shutdown().await
    });
    let (subscriber, mut events) = channel_subscriber();
    let socket = Socket::builder()
        .functions(Compress::new().wrap(SocketFunctions::system()))
        .subscriber(subscriber)
        .connect(addr)
        .await
        .expect("connect");
    let mut got = Vec::with_capacity(TOTAL);
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = events.recv().await {
            match event {
                SocketEventKind::Received(bytes) => got.extend_from_slice(&bytes),
                SocketEventKind::Eof => break,
                other => panic!("unexpected event {other:?}"),
            }
        }
    })
    .await
    .expect("everything and EOF within 60 s");
    server.await.expect("join").expect("server wrote");
    assert_eq!(got.len(), TOTAL);
    assert!(got == data, "stream differs from what the peer compressed");
    socket.do_send(Close::Graceful);
}

#[actix::test]
async fn a_compressing_client_gets_its_bytes_back_from_a_compressing_echo() {
    const TOTAL: usize = 768 * 1024;
    let server = EchoServer::default().start();
    let subscriber = server.clone();
    let (listener, local) = Listener::builder()
        .functions(Compress::new().wrap(SocketFunctions::system()))
        .subscriber(server.clone().recipient())
        .socket_builder(move |_| Socket::builder().subscriber(subscriber.clone().recipient()))
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback");
    let Address::Inet(addr) = local else {
        panic!("an inet listener has an inet address");
    };
    let faults = Faults::default()
        .partial(0.5)
        .would_block(0.1, Duration::from_millis(2))
        .short_reads(0.5);
    let (client_events, mut events) = channel_subscriber();
    let client = Socket::builder()
        .functions(
            Compress::new()
                .max_buffered(16 * 1024)
                .wrap(FaultInjector::new(5, faults).wrap(SocketFunctions::system())),
        )
        .subscriber(client_events)
        .connect(addr)
        .await
        .expect("connect");
    let data = Bytes::from(mixed(TOTAL, 47));
    write_mixed(&client, &data).await;
    let mut back = Vec::with_capacity(TOTAL);
    tokio::time::timeout(Duration::from_secs(60), async {
        while back.len() < TOTAL {
            match events.recv().await {
                Some(SocketEventKind::Received(bytes)) => back.extend_from_slice(&bytes),
                Some(other) => panic!("unexpected event {other:?}"),
                None => break,
            }
        }
    })
    .await
    .expect("the echo within 60 s");
    assert_eq!(back.len(), TOTAL);
    assert!(back == data, "the echo differs from what was sent");
    client.do_send(Close::Graceful);
    listener.send(StopListening).await.expect("listener");
}
