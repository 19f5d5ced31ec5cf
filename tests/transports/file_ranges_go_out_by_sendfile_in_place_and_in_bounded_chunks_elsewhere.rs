//! File ranges in an `IoBatch` (libowfat's `iob_addfile`): on the system transport called
//! in place they go out with `sendfile(2)` and never enter the process; through a filter
//! (or any message-path transport) they are read in chunks of at most
//! `QueueConfig::file_read_chunk`, each byte once, and no inner call carries more than the
//! filter's bound. Either way the stream is byte-exact, mixed with memory segments. A
//! file that shrinks under a queued range fails the socket with a typed error that says
//! how far the write got; a datagram carries a file range whole.

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{mock_peer, pattern, run_paused, sink, temp_path};
use bytes::Bytes;
use sockactor::filters::{FaultInjector, Faults};
use sockactor::messages::{Close, GetStats, GetWriter, Handle, SendDatagram, Write};
use sockactor::{
    DatagramSocket, FileRange, IoBatch, MockTransport, QueueConfig, Socket, SocketConfig,
    TransportError, WriteError,
};

/// A file holding `content`, already unlinked (it lives as long as its handle).
fn temp_file(content: &[u8]) -> Arc<File> {
    let path = temp_path("file-ranges");
    let mut file = File::create(&path).expect("create");
    file.write_all(content).expect("write");
    let file = File::open(&path).expect("open");
    let _ = std::fs::remove_file(&path);
    Arc::new(file)
}

/// Writes of a header, a range of `file` and a trailer, of sizes from one byte up to
/// several hundred kilobytes: the batches and the bytes they stand for.
fn mixed_writes(file: &Arc<File>, content: &[u8], count: usize) -> (Vec<IoBatch>, Vec<u8>) {
    let lens = [1usize, 100, 4096, 65_536, 300_000, 7, 1_000_000];
    let mut batches = Vec::new();
    let mut expected = Vec::new();
    for i in 0..count {
        let len = lens[i % lens.len()].min(content.len());
        let offset = (i * 7919) % (content.len() - len + 1);
        let header = Bytes::from(format!("<{i}:{len}>"));
        let mut batch = IoBatch::new();
        batch.push(header.clone());
        batch.push_file(FileRange::new(file.clone(), offset as u64, len).expect("in the file"));
        batch.push(Bytes::from_static(b"\n"));
        expected.extend_from_slice(&header);
        expected.extend_from_slice(&content[offset..offset + len]);
        expected.push(b'\n');
        batches.push(batch);
    }
    (batches, expected)
}

#[actix::test]
async fn over_loopback_tcp_in_place_ranges_go_out_by_sendfile_byte_exact() {
    let content = pattern(2 << 20, 11);
    let file = temp_file(&content);
    let (batches, expected) = mixed_writes(&file, &content, 40);
    let (addr, received) = sink().await;
    let socket = Socket::builder().connect(addr).await.expect("connect");
    let writer = socket.send(GetWriter).await.expect("writer");
    let mut answers = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        // Both write paths, interleaved on one socket.
        if i % 2 == 0 {
            answers.push(writer.write_answered(batch.clone()).await);
        } else {
            answers.push(
                socket
                    .send(Write::new(batch.clone()))
                    .await
                    .expect("mailbox"),
            );
        }
    }
    for (answer, batch) in answers.iter().zip(&batches) {
        assert_eq!(answer.as_ref().expect("written").len, batch.len());
    }
    let stats = socket.send(GetStats).await.expect("stats");
    assert_eq!(stats.bytes_sent, expected.len() as u64);
    assert!(
        stats.sendfile_calls >= batches.len() as u64,
        "each range went out by sendfile: {stats:?}"
    );
    assert_eq!(stats.file_bytes_read, 0, "no file byte entered the process");
    socket.do_send(Close::Graceful);
    let got = tokio::time::timeout(Duration::from_secs(30), received)
        .await
        .expect("the peer reads it all within 30 s")
        .expect("join")
        .expect("read");
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the stream is byte-exact");
}

#[cfg(unix)]
#[actix::test]
async fn over_a_unix_stream_in_place_ranges_go_out_by_sendfile_byte_exact() {
    use sockactor::messages::Address;
    use tokio::io::AsyncReadExt;

    let path = temp_path("file-ranges.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let reader = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await?;
        std::io::Result::Ok(all)
    });
    let content = pattern(1 << 20, 12);
    let file = temp_file(&content);
    let (batches, expected) = mixed_writes(&file, &content, 14);
    let socket = Socket::builder()
        .connect(Address::Unix(path.clone()))
        .await
        .expect("connect");
    let mut answers = Vec::new();
    for batch in batches {
        answers.push(socket.send(Write::new(batch)));
    }
    for answer in answers {
        answer.await.expect("mailbox").expect("written");
    }
    let stats = socket.send(GetStats).await.expect("stats");
    assert!(stats.sendfile_calls >= 14, "{stats:?}");
    assert_eq!(stats.file_bytes_read, 0);
    socket.do_send(Close::Graceful);
    let got = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("read within 30 s")
        .expect("join")
        .expect("read");
    let _ = std::fs::remove_file(&path);
    assert!(got == expected, "the stream is byte-exact");
}

#[test]
fn through_a_filter_ranges_are_read_in_bounded_chunks_once_each_and_calls_stay_bounded() {
    run_paused(|| async {
        let content = pattern(1 << 20, 13);
        let file = temp_file(&content);
        let (batches, expected) = mixed_writes(&file, &content, 20);
        let file_bytes: usize = batches
            .iter()
            .flat_map(|b| b.segments())
            .filter(|s| s.as_bytes().is_none())
            .map(|s| s.len())
            .sum();
        let mock = MockTransport::start();
        let faults = Faults::default()
            .partial(0.5)
            .would_block(0.2, Duration::from_millis(1));
        let config = SocketConfig {
            queue: QueueConfig {
                high_watermark: 1 << 26,
                low_watermark: 1 << 20,
                file_read_chunk: 16 * 1024,
                ..QueueConfig::default()
            },
            ..SocketConfig::default()
        };
        let socket = Socket::builder()
            .functions(
                FaultInjector::new(21, faults)
                    .max_per_call(1000)
                    .wrap(mock.functions()),
            )
            .config(config)
            .connect(mock_peer())
            .await
            .expect("connect");
        let writer = socket.send(GetWriter).await.expect("writer");
        let mut answers = Vec::new();
        for batch in &batches {
            answers.push(writer.write_answered(batch.clone()));
        }
        for (answer, batch) in answers.into_iter().zip(&batches) {
            assert_eq!(answer.await.expect("written").len, batch.len());
        }
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(stats.sendfile_calls, 0, "a filter gets bytes, never a file");
        assert_eq!(
            stats.file_bytes_read, file_bytes as u64,
            "each file byte read once, however the filter cut the sends"
        );
        let log = mock.sendv_log(Handle(1));
        let largest = log.iter().map(|r| r.offered).max().unwrap_or(0);
        assert!(largest <= 1000, "an inner call of {largest} bytes");
        assert!(mock.written(Handle(1)) == expected, "byte-exact");
    });
}

#[test]
fn a_message_path_transmit_holds_at_most_one_chunk_of_a_range() {
    run_paused(|| async {
        let content = pattern(200_000, 14);
        let file = temp_file(&content);
        let mock = MockTransport::start();
        let config = SocketConfig {
            queue: QueueConfig {
                file_read_chunk: 4096,
                ..QueueConfig::default()
            },
            ..SocketConfig::default()
        };
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config)
            .connect(mock_peer())
            .await
            .expect("connect");
        let range = FileRange::whole(file).expect("a file");
        socket
            .send(Write::new(range))
            .await
            .expect("mailbox")
            .expect("written");
        let log = mock.sendv_log(Handle(1));
        assert!(log.iter().all(|r| r.offered <= 4096), "chunks of 4 KiB");
        assert_eq!(log.len(), 200_000usize.div_ceil(4096));
        assert!(mock.written(Handle(1)) == content);
    });
}

/// The write's error, which must be a `TransportError::File` with `UnexpectedEof`.
fn file_error(answer: Result<sockactor::messages::Written, WriteError>) -> usize {
    match answer {
        Err(WriteError::Transport {
            bytes_sent,
            source: TransportError::File(e),
            ..
        }) => {
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
            bytes_sent
        }
        other => panic!("expected a file error, got {other:?}"),
    }
}

#[actix::test]
async fn a_file_that_shrinks_under_a_queued_range_fails_the_socket_in_place_with_how_far_it_got() {
    let content = pattern(300_000, 15);
    let file = temp_file(&content);
    let range = FileRange::whole(file.clone()).expect("a file");
    // The file shrinks after the range was made (through another handle to it).
    let shrink = std::fs::OpenOptions::new().write(true).open(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&*file)
    ));
    let Ok(shrink) = shrink else {
        eprintln!("skipped: no /proc/self/fd to reopen the unlinked file for writing");
        return;
    };
    shrink.set_len(1000).expect("truncate");
    let (addr, received) = sink().await;
    let socket = Socket::builder().connect(addr).await.expect("connect");
    let mut batch = IoBatch::new();
    batch.push(Bytes::from_static(b"head"));
    batch.push_file(range);
    let first = socket.send(Write::new(batch));
    let second = socket.send(Write::new(&b"after"[..]));
    assert_eq!(
        file_error(first.await.expect("mailbox")),
        4 + 1000,
        "the header and what was left of the file went out"
    );
    match second.await.expect("mailbox") {
        Err(WriteError::Transport {
            bytes_sent: 0,
            source: TransportError::File(_),
            ..
        }) => {}
        other => panic!("the write behind it fails too, unsent: {other:?}"),
    }
    let got = tokio::time::timeout(Duration::from_secs(10), received)
        .await
        .expect("the peer sees the end within 10 s")
        .expect("join");
    if let Ok(got) = got {
        assert_eq!(got.len(), 1004, "exactly what was reported sent");
    }
}

#[test]
fn a_file_that_shrinks_under_a_queued_range_fails_a_filtered_socket_with_a_typed_error() {
    run_paused(|| async {
        let content = pattern(300_000, 16);
        let file = temp_file(&content);
        let range = FileRange::whole(file.clone()).expect("a file");
        let Ok(shrink) = std::fs::OpenOptions::new().write(true).open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&*file)
        )) else {
            eprintln!("skipped: no /proc/self/fd");
            return;
        };
        shrink.set_len(100_000).expect("truncate");
        let mock = MockTransport::start();
        let config = SocketConfig {
            queue: QueueConfig {
                file_read_chunk: 40_000,
                ..QueueConfig::default()
            },
            ..SocketConfig::default()
        };
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config)
            .connect(mock_peer())
            .await
            .expect("connect");
        let answer = socket.send(Write::new(range)).await.expect("mailbox");
        // Two whole chunks were read and sent; the third read found the end.
        assert_eq!(file_error(answer), 80_000);
        assert!(mock.written(Handle(1)) == content[..80_000]);
        assert!(
            mock.is_closed(Handle(1)),
            "the failed socket closed its handle"
        );
    });
}

#[actix::test]
async fn a_datagram_carries_a_file_range_whole() {
    let content = pattern(1200, 17);
    let file = temp_file(&content);
    let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let to: SocketAddr = receiver.local_addr().expect("addr");
    let (socket, _) = DatagramSocket::builder()
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let mut datagram = IoBatch::new();
    datagram.push(Bytes::from_static(b"file:"));
    datagram.push_file(FileRange::new(file.clone(), 200, 1000).expect("in the file"));
    let sent = socket
        .send(SendDatagram::new(datagram).to(to))
        .await
        .expect("mailbox")
        .expect("sent");
    assert_eq!(sent.len, 1005);
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), receiver.recv_from(&mut buf))
        .await
        .expect("within 10 s")
        .expect("received");
    assert_eq!(&buf[..5], b"file:");
    assert!(buf[5..n] == content[200..1200], "one whole datagram");

    // A range longer than any datagram is refused before anything is read.
    let big = temp_file(&vec![0u8; 70_000]);
    let refused = socket
        .send(SendDatagram::new(FileRange::whole(big).expect("a file")).to(to))
        .await
        .expect("mailbox");
    assert!(
        matches!(&refused, Err(sockactor::DatagramError::Transport(e))
            if e.io_kind() == Some(std::io::ErrorKind::InvalidInput)),
        "{refused:?}"
    );
}

/// A range of a file that cannot be read (opened write-only) written in place: a typed
/// `TransportError::File`, as over a message-path transport, not an I/O error that reads
/// as the socket's own.
#[actix::test]
async fn an_unreadable_file_written_in_place_is_a_file_error() {
    let path = temp_path("write-only");
    std::fs::write(&path, pattern(10_000, 41)).expect("written");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("opened write-only");
    let _ = std::fs::remove_file(&path);
    let (addr, _received) = sink().await;
    let socket = Socket::builder().connect(addr).await.expect("connect");
    let range = FileRange::whole(Arc::new(file)).expect("a range");
    let answer = tokio::time::timeout(Duration::from_secs(10), socket.send(Write::new(range)))
        .await
        .expect("answered")
        .expect("mailbox");
    assert!(
        matches!(
            answer,
            Err(WriteError::Transport {
                source: TransportError::File(_),
                bytes_sent: 0,
                len: 10_000,
            })
        ),
        "{answer:?}"
    );
}
