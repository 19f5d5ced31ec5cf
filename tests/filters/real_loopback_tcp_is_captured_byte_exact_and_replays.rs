//! Capture over the real system transport on loopback TCP: the records of an echo
//! session hold the open, the connect to the server's address, exactly the bytes the
//! kernel took and exactly the bytes it returned, and the close; replayed into a mock
//! under paused time, the same program gets the same write answers (sendv calls and
//! would-blocks) and the same pieces of data. A peer that reads late makes the kernel
//! would-block: the capture holds the would-blocks and the system's writable notices,
//! and the replay meets them too. A session the peer resets replays the same, 300 times
//! of 300.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{channel_subscriber, pattern, run_paused};
use bytes::Bytes;
use sockactor::filters::{Capture, CaptureEvent, Record, Replay};
use sockactor::messages::{Address, Close, Family, SocketEventKind, SocketKind, Write};
use sockactor::{Socket, SocketFunctions};

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
        (
            seen,
            crate::support::capture::records(&file.contents()),
            server,
        )
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
        CaptureEvent::Open {
            family: Family::Ipv4,
            kind: SocketKind::Stream,
            result: Ok(())
        }
    );
    assert!(matches!(
        &records[1].event,
        CaptureEvent::Connect { addr, result: Ok(()), .. } if *addr == Address::Inet(server)
    ));
    assert_eq!(records.last().map(|r| &r.event), Some(&CaptureEvent::Close));
    assert_eq!(
        crate::support::capture::accepted_bytes(&records, handle),
        all
    );
    assert_eq!(
        crate::support::capture::received_bytes(&records, handle),
        all
    );
    for kind in ["sendv", "recvfrom"] {
        let times: Vec<Duration> = records
            .iter()
            .filter(|r| match r.event {
                CaptureEvent::SendV { .. } => kind == "sendv",
                CaptureEvent::RecvFrom { .. } => kind == "recvfrom",
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

/// Writes 8 MiB in 1 MiB writes, one at a time; each write's (len, sendv calls,
/// would-blocks).
async fn bulk(functions: SocketFunctions, server: SocketAddr) -> Vec<(usize, u32, u32)> {
    let socket = Socket::builder()
        .functions(functions)
        .connect(server)
        .await
        .expect("connect");
    let mut answers = Vec::new();
    for i in 0..8u64 {
        let write = Bytes::from(pattern(1 << 20, 50 + i));
        let done = tokio::time::timeout(Duration::from_secs(60), socket.send(Write::new(write)))
            .await
            .expect("answered in time")
            .expect("mailbox")
            .expect("written");
        answers.push((done.len, done.sendv_calls, done.would_blocks));
    }
    socket.send(Close::Graceful).await.expect("mailbox");
    answers
}

fn bulk_data() -> Vec<u8> {
    (0..8u64).flat_map(|i| pattern(1 << 20, 50 + i)).collect()
}

#[test]
fn a_peer_that_reads_late_is_captured_with_its_would_blocks_and_replays() {
    let (answers, records, server) = actix::System::new().block_on(async {
        use tokio::io::AsyncReadExt;
        // A small receive buffer, and a peer that starts reading only once the capture
        // holds a would-block: the kernel cannot take 8 MiB without one.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind loopback");
        let listener = socket.listen(16).expect("listen");
        let server = listener.local_addr().expect("local addr");
        let (capture, file) = Capture::to_memory();
        let watched = file.clone();
        let reader = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await?;
            while !watched.reader().any(|r| {
                matches!(
                    r.map(|r| r.event),
                    Ok(CaptureEvent::SendV {
                        answer: sockactor::filters::SendAnswer::WouldBlock,
                        ..
                    })
                )
            }) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut all = Vec::new();
            stream.read_to_end(&mut all).await?;
            Ok::<_, std::io::Error>(all)
        });
        let answers = bulk(capture.wrap(SocketFunctions::system()), server).await;
        let received = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("reader done")
            .expect("join")
            .expect("read");
        assert!(received == bulk_data(), "the peer got every byte in order");
        (
            answers,
            crate::support::capture::records(&file.contents()),
            server,
        )
    });
    let handle = records[0].handle;
    assert_eq!(
        crate::support::capture::accepted_bytes(&records, handle),
        bulk_data()
    );
    let would_blocks = records
        .iter()
        .filter(|r| {
            matches!(
                r.event,
                CaptureEvent::SendV {
                    answer: sockactor::filters::SendAnswer::WouldBlock,
                    ..
                }
            )
        })
        .count();
    let notices = records
        .iter()
        .filter(|r| r.event == CaptureEvent::Ready(sockactor::messages::Readiness::Writable))
        .count();
    assert!(would_blocks > 0, "the kernel's buffers filled");
    assert_eq!(notices, would_blocks, "one writable notice per would-block");
    assert_eq!(
        answers.iter().map(|a| a.2 as usize).sum::<usize>(),
        would_blocks
    );

    let (replayed, written) = run_paused(|| async move {
        let replay = Replay::start(records);
        let answers = bulk(replay.functions(), server).await;
        let mock_handle = replay.handle(handle).expect("replayed handle");
        (answers, replay.mock().written(mock_handle))
    });
    assert_eq!(replayed, answers, "the same write answers");
    assert!(written == bulk_data());
}

/// Writes 16 writes of 32 KiB, one at a time, to a peer that resets the connection, then
/// waits for the close: each write's answer, and the events, as text (no latencies: a
/// replay runs in its own time).
async fn reset_program(functions: SocketFunctions, server: SocketAddr) -> Vec<String> {
    let (subscriber, mut events) = channel_subscriber();
    let socket = Socket::builder()
        .functions(functions)
        .subscriber(subscriber)
        .connect(server)
        .await
        .expect("connect");
    let mut seen = Vec::new();
    for i in 0..16u64 {
        let answer = tokio::time::timeout(
            Duration::from_secs(30),
            socket.send(Write::new(Bytes::from(pattern(WRITE_LEN, 70 + i)))),
        )
        .await
        .expect("answered in time")
        .expect("mailbox");
        seen.push(match answer {
            Ok(done) => format!("ok {} {} {}", done.len, done.sendv_calls, done.would_blocks),
            // A capture keeps an error's kind, not its OS code or text.
            Err(sockactor::WriteError::Transport {
                bytes_sent,
                len,
                source,
            }) => format!(
                "err transport {bytes_sent} of {len}: {:?}",
                source.io_kind()
            ),
            Err(e) => format!("err {e:?}"),
        });
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("closed in time")
        {
            None => break,
            Some(SocketEventKind::Received(bytes)) => {
                seen.push(format!("received {}", bytes.len()))
            }
            Some(SocketEventKind::Closed { cause }) => {
                seen.push(format!("closed: {:?}", cause.and_then(|c| c.io_kind())));
                break;
            }
            // As for the writes: a capture keeps a read error's kind, not its OS code.
            Some(SocketEventKind::ReadFailed(e)) => {
                seen.push(format!("read failed: {:?}", e.io_kind()))
            }
            Some(event) => seen.push(format!("{event:?}")),
        }
    }
    seen
}

/// The captured socket's write failed on the reset before it read the EOF after it (and
/// so never reported it); the replay keeps that order, every time: a read's answer waits
/// for the `sendv` calls the captured socket had made before that read.
#[test]
fn a_session_the_peer_resets_replays_the_same_300_times_of_300() {
    let (seen, records, server) = actix::System::new().block_on(async {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let server = listener.local_addr().expect("local addr");
        let resetter = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await?;
            let mut buf = vec![0u8; 64 * 1024];
            stream.read_exact(&mut buf).await?;
            // Closing with unread bytes and a zero linger: the kernel sends a reset.
            socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
            drop(stream);
            Ok::<_, std::io::Error>(())
        });
        let (capture, file) = Capture::to_memory();
        let seen = reset_program(capture.wrap(SocketFunctions::system()), server).await;
        tokio::time::timeout(Duration::from_secs(30), resetter)
            .await
            .expect("peer done")
            .expect("join")
            .expect("peer");
        (
            seen,
            crate::support::capture::records(&file.contents()),
            server,
        )
    });
    assert!(
        seen.iter().any(|s| s.starts_with("err")),
        "the reset failed a write: {seen:?}"
    );
    let differing: Vec<usize> = (0..300)
        .filter(|_| {
            let records = records.clone();
            let replayed = run_paused(|| async move {
                let replay = Replay::start(records);
                reset_program(replay.functions(), server).await
            });
            replayed != seen
        })
        .collect();
    let records = records.clone();
    let one = run_paused(|| async move {
        let replay = Replay::start(records);
        reset_program(replay.functions(), server).await
    });
    assert!(
        differing.is_empty(),
        "{} of 300 replays differed from the capture {seen:?}; one replay: {one:?}",
        differing.len()
    );
}
