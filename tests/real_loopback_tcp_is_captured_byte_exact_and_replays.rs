//! Capture over the real system transport on loopback TCP: the records of an echo
//! session hold the open, the connect to the server's address, exactly the bytes the
//! kernel took and exactly the bytes it returned, and the close; replayed into a mock
//! under paused time, the same program gets the same write answers (sendv calls and
//! would-blocks) and the same pieces of data.

mod capture_support;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use sockactor::filters::{Capture, Event, Record, Replay};
use sockactor::messages::{Address, Close, Family, SocketEventKind, SocketKind, Write};
use sockactor::{Socket, SocketFunctions};
use support::{channel_subscriber, pattern, run_paused};

const WRITES: usize = 8;
const WRITE_LEN: usize = 32 * 1024;

fn payload() -> Vec<Bytes> {
    (0..WRITES)
        .map(|i| Bytes::from(pattern(WRITE_LEN, 900 + i as u64)))
        .collect()
}

/// What the program saw: (len, sendv calls, would-blocks) per write, and the pieces
/// received.
type Seen = (Vec<(usize, u32, u32)>, Vec<Bytes>);

/// Writes the payload one write at a time, reads the echo back whole, closes.
async fn program(functions: SocketFunctions, server: SocketAddr) -> Seen {
    let (subscriber, mut events) = channel_subscriber();
    let socket = Socket::builder()
        .functions(functions)
        .subscriber(subscriber)
        .connect(server)
        .await
        .expect("connect");
    let mut answers = Vec::new();
    for write in payload() {
        let done = tokio::time::timeout(Duration::from_secs(30), socket.send(Write::new(write)))
            .await
            .expect("answered in time")
            .expect("mailbox")
            .expect("written");
        answers.push((done.len, done.sendv_calls, done.would_blocks));
    }
    let mut pieces = Vec::new();
    let mut got = 0;
    while got < WRITES * WRITE_LEN {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("echo in time")
            .expect("subscriber alive");
        if let SocketEventKind::Received(bytes) = event {
            got += bytes.len();
            pieces.push(bytes);
        }
    }
    socket.send(Close::Graceful).await.expect("mailbox");
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("closed in time");
        if matches!(event, None | Some(SocketEventKind::Closed { .. })) {
            break;
        }
    }
    (answers, pieces)
}

/// Runs the program against a real echo server through a capture.
fn captured() -> (Seen, Vec<Record>, SocketAddr) {
    actix::System::new().block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let server = listener.local_addr().expect("local addr");
        let echo = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await?;
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(());
                }
                stream.write_all(&buf[..n]).await?;
            }
        });
        let (capture, file) = Capture::to_memory();
        let seen = program(capture.wrap(SocketFunctions::system()), server).await;
        tokio::time::timeout(Duration::from_secs(30), echo)
            .await
            .expect("server done")
            .expect("join")
            .expect("echo");
        (seen, capture_support::records(&file.contents()), server)
    })
}

#[test]
fn an_echo_session_over_loopback_is_captured_and_replayed_byte_exact() {
    let (seen, records, server) = captured();
    let all: Vec<u8> = payload().concat();
    assert_eq!(seen.1.concat(), all, "the echo came back whole");

    // The records.
    let handle = records[0].handle;
    assert!(
        records.iter().all(|r| r.handle == handle),
        "one handle throughout"
    );
    assert_eq!(
        records[0].event,
        Event::Open {
            family: Family::Ipv4,
            kind: SocketKind::Stream,
            result: Ok(())
        }
    );
    assert!(matches!(
        &records[1].event,
        Event::Connect { addr, result: Ok(()), .. } if *addr == Address::Inet(server)
    ));
    assert_eq!(records.last().map(|r| &r.event), Some(&Event::Close));
    assert_eq!(capture_support::accepted_bytes(&records, handle), all);
    assert_eq!(capture_support::received_bytes(&records, handle), all);
    for kind in ["sendv", "recvfrom"] {
        let times: Vec<Duration> = records
            .iter()
            .filter(|r| match r.event {
                Event::SendV { .. } => kind == "sendv",
                Event::RecvFrom { .. } => kind == "recvfrom",
                _ => false,
            })
            .map(|r| r.at)
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{kind} calls in time order"
        );
    }

    // The replay.
    let (replayed, written) = run_paused(|| async move {
        let replay = Replay::start(records);
        let seen = program(replay.functions(), server).await;
        let mock_handle = replay.handle(handle).expect("replayed handle");
        (seen, replay.mock().written(mock_handle))
    });
    assert_eq!(replayed.0, seen.0, "the same write answers");
    assert_eq!(replayed.1, seen.1, "the same pieces");
    assert_eq!(written, all);
}
