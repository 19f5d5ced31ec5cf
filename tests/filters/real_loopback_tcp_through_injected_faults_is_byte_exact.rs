//! Real loopback TCP through the fault injector (every fault but resets, on both sides):
//! every byte written arrives at the peer once and in order, and every byte the peer
//! sends reaches the subscriber once and in order.

use std::collections::VecDeque;
use std::time::Duration;

use crate::support::{channel_subscriber, pattern, sink};
use bytes::Bytes;
use sockactor::filters::{FaultInjector, Faults};
use sockactor::messages::{Close, SocketEventKind, Write};
use sockactor::{Socket, SocketFunctions};

fn faults() -> Faults {
    Faults::default()
        .partial(0.5)
        .would_block(0.1, Duration::from_millis(2))
        .delay(0.1, Duration::from_millis(1))
        .short_reads(0.5)
        .read_would_block(0.1, Duration::from_millis(2))
        .read_delay(0.1, Duration::from_millis(1))
}

fn injected(seed: u64) -> SocketFunctions {
    FaultInjector::new(seed, faults())
        .max_per_call(16 * 1024)
        .wrap(SocketFunctions::system())
}

#[actix::test]
async fn writes_through_injected_faults_arrive_byte_exact() {
    const TOTAL: usize = 1024 * 1024;
    let data = Bytes::from(pattern(TOTAL, 21));
    let (addr, received) = sink().await;
    let socket = Socket::builder()
        .functions(injected(11))
        .connect(addr)
        .await
        .expect("connect");
    let sizes = [1usize, 9, 700, 4096, 65_536, 3000, 130_000];
    let mut offset = 0;
    let mut outstanding = VecDeque::new();
    for size in sizes.iter().cycle() {
        if offset == TOTAL {
            break;
        }
        let end = (offset + size).min(TOTAL);
        let request = socket.send(Write::new(data.slice(offset..end)).wait_when_full());
        outstanding.push_back((end - offset, actix::spawn(request)));
        offset = end;
        if outstanding.len() >= 64 {
            if let Some((len, w)) = outstanding.pop_front() {
                let done = w.await.expect("join").expect("mailbox").expect("written");
                assert_eq!(done.len, len);
            }
        }
    }
    for (len, w) in outstanding {
        let done = w.await.expect("join").expect("mailbox").expect("written");
        assert_eq!(done.len, len);
    }
    socket.do_send(Close::Graceful);
    let bytes = tokio::time::timeout(Duration::from_secs(60), received)
        .await
        .expect("transfer within 60 s")
        .expect("join")
        .expect("read");
    assert_eq!(bytes.len(), TOTAL);
    assert!(bytes == data, "stream differs from what was written");
}

#[actix::test]
async fn reads_through_injected_faults_arrive_byte_exact() {
    use tokio::io::AsyncWriteExt;
    const TOTAL: usize = 512 * 1024;
    let data = pattern(TOTAL, 33);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let sent = data.clone();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        stream.write_all(&sent).await?;
        stream.shutdown().await
    });
    let (subscriber, mut events) = channel_subscriber();
    let socket = Socket::builder()
        .functions(injected(12))
        .subscriber(subscriber)
        .connect(addr)
        .await
        .expect("connect");
    let mut got = Vec::with_capacity(TOTAL);
    let mut deliveries = 0usize;
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = events.recv().await {
            match event {
                SocketEventKind::Received(bytes) => {
                    deliveries += 1;
                    got.extend_from_slice(&bytes);
                }
                SocketEventKind::Eof => break,
                other => panic!("unexpected event {other:?}"),
            }
        }
    })
    .await
    .expect("everything and EOF within 60 s");
    server.await.expect("join").expect("server wrote");
    assert_eq!(got.len(), TOTAL);
    assert!(got == data, "stream differs from what the peer sent");
    assert!(deliveries > 1);
    socket.do_send(Close::Graceful);
}
