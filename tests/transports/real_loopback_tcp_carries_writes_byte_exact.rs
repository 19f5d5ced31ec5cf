//! Real loopback TCP through the system transport: an echo round trip between socket
//! actors, a 64 MiB transfer in mixed write sizes arriving byte-exact, and a graceful
//! close with bytes from the peer left unread that still ends in EOF, not a reset.

use std::collections::VecDeque;
use std::time::Duration;

use crate::support::{channel_subscriber, pattern, sink};
use actix::prelude::*;
use bytes::Bytes;
use sockactor::messages::{Close, GetStats, SocketEvent, SocketEventKind, Write};
use sockactor::Socket;

/// Server side of the echo: writes back whatever its socket receives.
struct Echo {
    socket: Addr<Socket>,
}

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for Echo {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, ctx: &mut Context<Self>) {
        match msg.kind {
            SocketEventKind::Received(bytes) => self.socket.do_send(Write::new(bytes)),
            SocketEventKind::Eof => self.socket.do_send(Close::Graceful),
            SocketEventKind::Closed { .. } => ctx.stop(),
            _ => {}
        }
    }
}

#[actix::test]
async fn echo_round_trip_between_socket_actors() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    actix::spawn(async move {
        if let Ok((stream, _)) = listener.accept().await {
            let ctx = Context::<Echo>::new();
            let socket = Socket::builder()
                .subscriber(ctx.address().recipient())
                .adopt(stream)
                .await
                .expect("adopt");
            ctx.run(Echo { socket });
        }
    });

    let (subscriber, mut events) = channel_subscriber();
    let client = Socket::builder()
        .subscriber(subscriber)
        .connect(addr)
        .await
        .expect("connect");
    let message = b"ping through two socket actors\n";
    let written = client
        .send(Write::new(&message[..]))
        .await
        .expect("mailbox")
        .expect("written");
    assert_eq!(written.len, message.len());

    let mut echoed = Vec::new();
    while echoed.len() < message.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("echo within 10 s")
            .expect("subscriber alive");
        if let SocketEventKind::Received(bytes) = event {
            echoed.extend_from_slice(&bytes);
        }
    }
    assert_eq!(echoed, message);
    client.do_send(Close::Graceful);
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("closed within 10 s")
            .expect("subscriber alive");
        if matches!(event, SocketEventKind::Closed { cause: None }) {
            break;
        }
    }
}

#[actix::test]
async fn sixty_four_mib_in_mixed_write_sizes_arrive_byte_exact() {
    const TOTAL: usize = 64 * 1024 * 1024;
    let data = Bytes::from(pattern(TOTAL, 0x5eed));
    let (addr, received) = sink().await;
    let (subscriber, mut events) = channel_subscriber();
    let socket = Socket::builder()
        .subscriber(subscriber)
        .connect(addr)
        .await
        .expect("connect");

    // Sizes cycle from 1 byte to 256 KiB; slices of one buffer, so nothing is copied.
    let sizes = [1usize, 7, 64, 1500, 4096, 65_536, 262_144, 100, 33_333];
    let mut offset = 0;
    let mut outstanding = VecDeque::new();
    let mut writes = 0u64;
    for size in sizes.iter().cycle() {
        if offset == TOTAL {
            break;
        }
        let end = (offset + size).min(TOTAL);
        let request = socket.send(Write::new(data.slice(offset..end)).wait_when_full());
        outstanding.push_back(actix::spawn(request));
        offset = end;
        writes += 1;
        if outstanding.len() >= 256 {
            if let Some(w) = outstanding.pop_front() {
                w.await.expect("join").expect("mailbox").expect("written");
            }
        }
    }
    for w in outstanding {
        w.await.expect("join").expect("mailbox").expect("written");
    }
    let stats = socket.send(GetStats).await.expect("stats");
    assert_eq!(stats.bytes_sent, TOTAL as u64);
    assert_eq!(stats.writes_completed, writes);
    socket.do_send(Close::Graceful);
    let bytes = tokio::time::timeout(Duration::from_secs(60), received)
        .await
        .expect("transfer within 60 s")
        .expect("join")
        .expect("read");
    assert_eq!(bytes.len(), TOTAL);
    assert!(bytes == data, "stream differs from what was written");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.recv().await {
            if let SocketEventKind::Closed { cause } = e {
                return cause;
            }
        }
        None
    })
    .await
    .expect("closed");
    assert!(closed.is_none());
}

/// With the immediate policy the system transport writes inside the `Write` handler, so a
/// write can finish before actix has handed over its reply channel: it is still answered.
#[actix::test]
async fn immediate_writes_that_finish_inside_their_handler_are_answered() {
    let data = Bytes::from(pattern(1024 * 1024, 7));
    let (addr, received) = sink().await;
    let socket = Socket::builder()
        .immediate()
        .connect(addr)
        .await
        .expect("connect");
    let mut answers = Vec::new();
    for chunk in data.chunks(4096) {
        answers.push(actix::spawn(
            socket.send(Write::new(data.slice_ref(chunk)).wait_when_full()),
        ));
    }
    for a in answers {
        let written = a
            .await
            .expect("join")
            .expect("answered, not dropped")
            .expect("written");
        assert_eq!(written.len, 4096);
    }
    let stats = socket.send(GetStats).await.expect("stats");
    assert_eq!(stats.writes_completed, 256);
    assert_eq!(
        stats.sendv_calls, 256,
        "one writev per write when the peer keeps up"
    );
    socket.do_send(Close::Graceful);
    let bytes = tokio::time::timeout(Duration::from_secs(30), received)
        .await
        .expect("done")
        .expect("join")
        .expect("read");
    assert!(bytes == data);
}

/// A socket whose every address is dropped with writes still queued drains them, then
/// closes: the peer gets every byte and then EOF.
#[actix::test]
async fn dropping_every_address_drains_then_closes() {
    let data = Bytes::from(pattern(8 * 1024 * 1024, 11));
    let (addr, received) = sink().await;
    let socket = Socket::builder().connect(addr).await.expect("connect");
    for chunk in data.chunks(64 * 1024) {
        socket.do_send(Write::new(data.slice_ref(chunk)).wait_when_full());
    }
    drop(socket);
    let bytes = tokio::time::timeout(Duration::from_secs(30), received)
        .await
        .expect("EOF within 30 s")
        .expect("join")
        .expect("read");
    assert_eq!(bytes.len(), data.len());
    assert!(bytes == data);
}

/// A graceful close with bytes from the peer still unread (a socket with no subscriber
/// reads nothing, as a TLS client leaves session tickets it had no reason to read yet):
/// everything written still reaches the peer, then its EOF, not a reset (a kernel answers
/// the close of a socket with unread bytes with a reset, discarding what it had not
/// sent).
#[actix::test]
async fn a_graceful_close_with_unread_bytes_from_the_peer_sends_everything_then_eof() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let socket = Socket::builder().connect(addr).await.expect("connect");
    let (mut peer, _) = listener.accept().await.expect("accept");
    peer.write_all(&[5u8; 100])
        .await
        .expect("the peer writes first");
    let data = pattern(256 * 1024, 9);
    for chunk in data.chunks(16 * 1024) {
        socket.do_send(Write::new(Bytes::copy_from_slice(chunk)));
    }
    socket.send(Close::Graceful).await.expect("close sent");
    // The peer reads only once the socket has closed its handle (its actor, with no
    // address left, then stops).
    let weak = socket.downgrade();
    drop(socket);
    tokio::time::timeout(Duration::from_secs(10), async {
        while weak.upgrade().is_some() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the socket closes");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), peer.read_to_end(&mut got))
        .await
        .expect("the peer's read ends");
    assert!(
        read.is_ok(),
        "the peer read {} bytes, then {read:?}",
        got.len()
    );
    assert!(
        got == data,
        "{} of {} bytes, not byte-exact",
        got.len(),
        data.len()
    );
}

/// A socket reading by message through the system table with a huge `read_chunk` (and
/// read window) reads its peer's bytes without an allocation of that size.
#[actix::test]
async fn a_huge_read_chunk_by_message_reads_without_a_huge_allocation() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (subscriber, mut events) = channel_subscriber();
    let mut functions = sockactor::SocketFunctions::system();
    let recvfrom = functions.recvfrom().clone();
    functions = functions.with_recvfrom(recvfrom);
    let _socket = Socket::builder()
        .functions(functions)
        .config(sockactor::SocketConfig {
            read_chunk: usize::MAX,
            read_limits: sockactor::ReadLimits::UNBOUNDED,
            ..sockactor::SocketConfig::default()
        })
        .subscriber(subscriber)
        .connect(addr)
        .await
        .expect("connect");
    let (mut peer, _) = listener.accept().await.expect("accept");
    peer.write_all(&pattern(100_000, 3)).await.expect("write");
    let mut got = Vec::new();
    while got.len() < 100_000 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("in time")
            .expect("events");
        if let SocketEventKind::Received(bytes) = event {
            got.extend_from_slice(&bytes);
        }
    }
    assert_eq!(got, pattern(100_000, 3));
}
