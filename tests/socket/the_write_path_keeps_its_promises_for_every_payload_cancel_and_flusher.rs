//! From the ninth round of the independent review: the stream socket's write path in
//! depth. Payloads of every shape (thousands of segments, empty ones, file ranges that
//! shrink, grow or cannot be read, huge and zero-length writes) in place over real
//! loopback with small buffers and by message over the mock; `QueueConfig` at its
//! edges; `CancelWrite` at every point of a write's life; waiting writes; the flush
//! policies (a custom Flusher that is slow, answers twice, or stops); `Written`
//! telemetry against what happened.

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{mock_peer, pattern, run_paused, settle, temp_path};
use actix::prelude::*;
use bytes::Bytes;
use sockactor::messages::{CancelWrite, Close, Flush, GetStats, Handle, PendingWrite, Write};
use sockactor::{
    FileRange, FlushPolicy, IoBatch, MockTransport, QueueConfig, SendStep, Socket, SocketBuffers,
    SocketConfig, TransportError, WriteError,
};
use tokio::io::AsyncReadExt;

// ---------------------------------------------------------------------------------------
// helpers

/// A file holding `content`, already unlinked.
fn temp_file(content: &[u8]) -> Arc<File> {
    let path = temp_path("review9a");
    let mut file = File::create(&path).expect("create");
    file.write_all(content).expect("write");
    let file = File::open(&path).expect("open");
    let _ = std::fs::remove_file(&path);
    Arc::new(file)
}

/// A file holding `content`, with a second handle open for writing (to grow or shrink it).
fn temp_file_rw(content: &[u8]) -> (Arc<File>, File) {
    let path = temp_path("review9a-rw");
    let mut file = File::create(&path).expect("create");
    file.write_all(content).expect("write");
    let reader = File::open(&path).expect("open");
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open rw");
    let _ = std::fs::remove_file(&path);
    (Arc::new(reader), writer)
}

/// A loopback listener with a small receive buffer that reads everything one connection
/// sends until EOF (bounded: 30 s).
async fn small_sink() -> (
    SocketAddr,
    tokio::task::JoinHandle<std::io::Result<Vec<u8>>>,
) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(16).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut all = Vec::new();
        let mut buf = vec![0u8; 1000];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        Ok(all)
    });
    (addr, task)
}

/// A config with a small SO_SNDBUF (partial writes happen) and the given queue.
fn small_sndbuf(queue: QueueConfig) -> SocketConfig {
    SocketConfig {
        queue,
        buffers: SocketBuffers {
            send: Some(4096),
            recv: None,
        },
        ..SocketConfig::default()
    }
}

async fn received_within(task: tokio::task::JoinHandle<std::io::Result<Vec<u8>>>) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the peer sees EOF within 30 s")
        .expect("join")
        .expect("read")
}

/// A batch of `count` memory segments (some empty) and what they hold.
fn many_segments(count: usize, seed: u64) -> (IoBatch, Vec<u8>) {
    let data = pattern(count * 40, seed);
    let mut batch = IoBatch::new();
    let mut expected = Vec::new();
    let mut at = 0;
    for i in 0..count {
        let len = match i % 7 {
            0 => 0,
            1 => 1,
            2 => 3,
            3 => 17,
            4 => 39,
            5 => 2,
            _ => 8,
        };
        let seg = Bytes::copy_from_slice(&data[at..at + len]);
        at += len;
        expected.extend_from_slice(&seg);
        batch.push(seg);
    }
    (batch, expected)
}

async fn mock_with(config: SocketConfig) -> (MockTransport, Addr<Socket>) {
    let mock = MockTransport::start();
    let socket = Socket::builder()
        .functions(mock.functions())
        .config(config)
        .connect(mock_peer())
        .await
        .expect("connect");
    (mock, socket)
}

fn queue(f: impl FnOnce(&mut QueueConfig)) -> SocketConfig {
    let mut q = QueueConfig::default();
    f(&mut q);
    SocketConfig {
        queue: q,
        ..SocketConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// 1. IoBatch shapes, in place over loopback

#[actix::test]
async fn in_place_thousands_of_segments_past_iov_max_arrive_exact() {
    let (addr, received) = small_sink().await;
    let socket = Socket::builder()
        .config(small_sndbuf(QueueConfig::default()))
        .connect(addr)
        .await
        .expect("connect");
    let mut expected = Vec::new();
    let mut answers = Vec::new();
    for (i, count) in [5000usize, 1024, 1025, 3000, 1].into_iter().enumerate() {
        let (batch, bytes) = many_segments(count, 100 + i as u64);
        expected.extend_from_slice(&bytes);
        let len = batch.len();
        answers.push((len, socket.send(Write::new(batch))));
    }
    for (len, answer) in answers {
        let w = answer.await.expect("mailbox").expect("written");
        assert_eq!(w.len, len);
        // A write with bytes went out in at least one call; a zero-length one (a single
        // empty segment) in none.
        if len > 0 {
            assert!(w.sendv_calls >= 1, "{w:?}");
        } else {
            assert_eq!(w.sendv_calls, 0, "{w:?}");
        }
    }
    socket.do_send(Close::Graceful);
    let got = received_within(received).await;
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "byte-exact");
}

#[actix::test]
async fn in_place_mixed_memory_and_file_segments_larger_than_every_watermark_arrive_exact() {
    let content = pattern(300_000, 7);
    let file = temp_file(&content);
    let (addr, received) = small_sink().await;
    let q = QueueConfig {
        high_watermark: 16 * 1024,
        low_watermark: 4 * 1024,
        max_bytes_per_turn: 8 * 1024,
        ..QueueConfig::default()
    };
    let socket = Socket::builder()
        .config(small_sndbuf(q))
        .connect(addr)
        .await
        .expect("connect");
    let mut batch = IoBatch::new();
    let mut expected = Vec::new();
    for i in 0..2500usize {
        let head = Bytes::from(format!("[{i}]"));
        expected.extend_from_slice(&head);
        batch.push(head);
        if i % 50 == 0 {
            let off = (i * 131) % 200_000;
            let len = 1 + (i * 977) % 90_000;
            batch.push_file(FileRange::new(file.clone(), off as u64, len).expect("range"));
            expected.extend_from_slice(&content[off..off + len]);
        }
    }
    let len = batch.len();
    assert!(len > 16 * 1024 * 10);
    let big = socket.send(Write::new(batch));
    let after = socket.send(Write::new(&b"after"[..]).wait_when_full());
    expected.extend_from_slice(b"after");
    let w = big.await.expect("mailbox").expect("written");
    assert_eq!(w.len, len);
    let a = after.await.expect("mailbox").expect("written");
    assert_eq!(a.len, 5);
    let stats = socket.send(GetStats).await.expect("stats");
    assert!(stats.sendfile_calls >= 50, "{stats:?}");
    socket.do_send(Close::Graceful);
    let got = received_within(received).await;
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "byte-exact");
}

#[actix::test]
async fn in_place_a_file_that_grows_after_its_range_was_made_sends_only_the_range() {
    let content = pattern(100_000, 8);
    let (file, mut writer) = temp_file_rw(&content);
    let range = FileRange::whole(file.clone()).expect("range");
    let tail_range = FileRange::new(file.clone(), 99_000, 1000).expect("range");
    use std::io::Seek;
    writer.seek(std::io::SeekFrom::End(0)).expect("seek");
    writer.write_all(&pattern(50_000, 9)).expect("grow");
    let (addr, received) = small_sink().await;
    let socket = Socket::builder()
        .config(small_sndbuf(QueueConfig::default()))
        .connect(addr)
        .await
        .expect("connect");
    let mut batch = IoBatch::new();
    batch.push(Bytes::from_static(b"<"));
    batch.push_file(range);
    batch.push(Bytes::from_static(b">"));
    batch.push_file(tail_range);
    let w = socket
        .send(Write::new(batch))
        .await
        .expect("mailbox")
        .expect("written");
    assert_eq!(w.len, 1 + 100_000 + 1 + 1000);
    socket.do_send(Close::Graceful);
    let got = received_within(received).await;
    let mut expected = b"<".to_vec();
    expected.extend_from_slice(&content);
    expected.push(b'>');
    expected.extend_from_slice(&content[99_000..]);
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
}

#[actix::test]
async fn in_place_zero_length_writes_and_all_empty_batches_are_answered_in_order() {
    let (addr, received) = small_sink().await;
    let socket = Socket::builder()
        .config(small_sndbuf(QueueConfig::default()))
        .connect(addr)
        .await
        .expect("connect");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut futs = Vec::new();
    let mut expected = Vec::new();
    for i in 0..40u32 {
        let batch: IoBatch = if i % 3 == 0 {
            vec![Bytes::new(), Bytes::new()].into()
        } else {
            let b = Bytes::from(pattern(20_000 + i as usize, i as u64));
            expected.extend_from_slice(&b);
            b.into()
        };
        let len = batch.len();
        let order = order.clone();
        let f = socket.send(Write::new(batch));
        futs.push(async move {
            let w = f.await.expect("mailbox").expect("written");
            assert_eq!(w.len, len);
            order.lock().unwrap().push(i);
        });
    }
    futures_util::future::join_all(futs).await;
    let order = order.lock().unwrap().clone();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "answers in write order");
    socket.do_send(Close::Graceful);
    let got = received_within(received).await;
    assert!(got == expected);
}

// ---------------------------------------------------------------------------------------
// 1b. by message over the mock

#[test]
fn by_message_thousands_of_segments_with_partial_accepts_stay_within_max_segments() {
    run_paused(|| async {
        let (mock, socket) = mock_with(queue(|q| q.copy_threshold = 0)).await;
        let mut steps = Vec::new();
        for i in 0..200usize {
            steps.push(SendStep::Accept(1 + (i * 37) % 500));
            if i % 5 == 0 {
                steps.push(SendStep::WouldBlock(Duration::from_millis(1)));
            }
        }
        mock.script_sendv(Handle(1), steps);
        let mut expected = Vec::new();
        let mut answers = Vec::new();
        for (i, count) in [5000usize, 1024, 1025, 3000].into_iter().enumerate() {
            let (batch, bytes) = many_segments(count, 200 + i as u64);
            expected.extend_from_slice(&bytes);
            answers.push((batch.len(), socket.send(Write::new(batch))));
        }
        for (len, a) in answers {
            assert_eq!(a.await.expect("mailbox").expect("written").len, len);
        }
        assert!(mock.written(Handle(1)) == expected, "byte-exact");
        for r in mock.sendv_log(Handle(1)) {
            assert!(r.segments <= 1024, "{r:?}");
            assert!(r.segments >= 1, "{r:?}");
        }
    });
}

#[test]
fn max_segments_at_its_edges_bounds_every_sendv() {
    for (max, bound) in [(0usize, 1usize), (1, 1), (2, 2), (1023, 1023), (5000, 1024)] {
        run_paused(|| async move {
            let (mock, socket) = mock_with(queue(|q| {
                q.max_segments = max;
                q.copy_threshold = 0;
            }))
            .await;
            let (batch, expected) = many_segments(2100, 7);
            let len = batch.len();
            let w = socket
                .send(Write::new(batch))
                .await
                .expect("mailbox")
                .expect("written");
            assert_eq!(w.len, len);
            assert!(mock.written(Handle(1)) == expected);
            let log = mock.sendv_log(Handle(1));
            for r in &log {
                assert!(r.segments <= bound, "max {max}: {r:?}");
            }
            let nonempty: usize = 2100 - 2100 / 7;
            let min_calls = nonempty.div_ceil(bound);
            assert!(log.len() >= min_calls, "max {max}: {} calls", log.len());
            assert_eq!(w.sendv_calls as usize, log.len(), "max {max}");
        });
    }
}

#[test]
fn file_read_chunk_of_one_byte_reads_each_byte_once_and_sends_exact() {
    run_paused(|| async {
        let content = pattern(3000, 3);
        let file = temp_file(&content);
        let (mock, socket) = mock_with(queue(|q| q.file_read_chunk = 1)).await;
        let mut batch = IoBatch::new();
        batch.push(Bytes::from_static(b"hd"));
        batch.push_file(FileRange::new(file.clone(), 10, 20).expect("r"));
        batch.push(Bytes::from_static(b"|"));
        batch.push_file(FileRange::new(file.clone(), 2000, 1000).expect("r"));
        let w = socket
            .send(Write::new(batch))
            .await
            .expect("mailbox")
            .expect("written");
        assert_eq!(w.len, 2 + 20 + 1 + 1000);
        let mut expected = b"hd".to_vec();
        expected.extend_from_slice(&content[10..30]);
        expected.push(b'|');
        expected.extend_from_slice(&content[2000..3000]);
        assert!(mock.written(Handle(1)) == expected);
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(stats.file_bytes_read, 1020, "{stats:?}");
        for r in mock.sendv_log(Handle(1)) {
            // each transmit holds at most one chunk of each range: at most 1 file byte
            assert!(r.offered <= 2 + 1 + 1 + 1, "{r:?}");
        }
    });
}

#[test]
fn file_read_chunk_zero_is_sanitized_and_exact() {
    run_paused(|| async {
        let content = pattern(500, 4);
        let file = temp_file(&content);
        let (mock, socket) = mock_with(queue(|q| q.file_read_chunk = 0)).await;
        let w = socket
            .send(Write::new(FileRange::whole(file).expect("r")))
            .await
            .expect("mailbox")
            .expect("written");
        assert_eq!(w.len, 500);
        assert!(mock.written(Handle(1)) == content);
    });
}

#[test]
fn by_message_a_file_that_shrinks_between_chunks_reports_exactly_what_went_out() {
    run_paused(|| async {
        let content = pattern(10_000, 5);
        let (file, writer) = temp_file_rw(&content);
        let (mock, socket) = mock_with(queue(|q| q.file_read_chunk = 1000)).await;
        // the transport holds after 2 chunks, so the file can shrink mid-write
        mock.script_sendv(
            Handle(1),
            [SendStep::AcceptAll, SendStep::AcceptAll, SendStep::Hold],
        );
        let mut batch = IoBatch::new();
        batch.push(Bytes::from_static(b"h"));
        batch.push_file(FileRange::whole(file).expect("r"));
        let first = socket.send(Write::new(batch));
        let second = socket.send(Write::new(&b"next"[..]));
        settle().await;
        writer.set_len(2500).expect("shrink");
        mock.release(Handle(1));
        let r1 = first.await.expect("mailbox");
        let r2 = second.await.expect("mailbox");
        let written = mock.written(Handle(1));
        match r1 {
            Err(WriteError::Transport {
                bytes_sent,
                source: TransportError::File(e),
                ..
            }) => {
                assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
                assert_eq!(
                    bytes_sent,
                    written.len(),
                    "what went out is what is reported"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(r2, Err(WriteError::Transport { bytes_sent: 0, .. })),
            "{r2:?}"
        );
        assert!(written[..] == [&b"h"[..], &content[..written.len() - 1]].concat()[..]);
    });
}

// ---------------------------------------------------------------------------------------
// 2. QueueConfig::copy_threshold at its edges

#[test]
fn copy_threshold_exactly_at_a_writes_size_copies_it_and_one_past_does_not() {
    for (threshold, size, copied) in [
        (10usize, 10usize, true),
        (10, 11, false),
        (10, 9, true),
        (0, 1, false),
        (1, 1, true),
    ] {
        run_paused(|| async move {
            let (mock, socket) = mock_with(queue(|q| q.copy_threshold = threshold)).await;
            let mut expected = Vec::new();
            let mut answers = Vec::new();
            for i in 0..5u8 {
                // a write of two segments adding up to `size`
                let a = Bytes::from(vec![b'a' + i; size / 2]);
                let b = Bytes::from(vec![b'A' + i; size - size / 2]);
                expected.extend_from_slice(&a);
                expected.extend_from_slice(&b);
                answers.push(socket.send(Write::new(vec![a, b])));
            }
            for a in answers {
                assert_eq!(a.await.expect("mailbox").expect("written").len, size);
            }
            assert!(mock.written(Handle(1)) == expected);
            let log = mock.sendv_log(Handle(1));
            assert_eq!(
                log.len(),
                1,
                "t{threshold} s{size}: one burst, one sendv: {log:?}"
            );
            let segs_per_write = if size / 2 == 0 { 1 } else { 2 };
            if copied {
                assert_eq!(log[0].segments, 1, "t{threshold} s{size}: {log:?}");
            } else {
                assert_eq!(
                    log[0].segments,
                    5 * segs_per_write,
                    "t{threshold} s{size}: {log:?}"
                );
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// 3. Written telemetry against a script

#[test]
fn written_telemetry_matches_a_scripted_partial_would_block_run() {
    run_paused(|| async {
        let (mock, socket) = mock_with(queue(|q| q.copy_threshold = 0)).await;
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(150),
                SendStep::WouldBlock(Duration::from_millis(5)),
                SendStep::Accept(100),
                SendStep::WouldBlock(Duration::from_millis(7)),
            ],
        );
        let a = socket.send(Write::new(vec![b'a'; 100]));
        let b = socket.send(Write::new(vec![b'b'; 100]));
        let c = socket.send(Write::new(vec![b'c'; 100]));
        let a = a.await.unwrap().unwrap();
        let b = b.await.unwrap().unwrap();
        let c = c.await.unwrap().unwrap();
        // sendv 1: A,B,C offered, 150 taken (A done, half of B)
        // sendv 2: B,C would block; sendv 3: B,C 100 taken (B done, half of C)
        // sendv 4: C would block; sendv 5: C taken
        let log = mock.sendv_log(Handle(1));
        assert_eq!(log.len(), 5, "{log:?}");
        assert_eq!(
            (a.sendv_calls, a.would_blocks, a.max_writes_per_sendv),
            (1, 0, 3),
            "{a:?}"
        );
        assert_eq!(a.latency, Duration::ZERO, "{a:?}");
        assert_eq!(
            (b.sendv_calls, b.would_blocks, b.max_writes_per_sendv),
            (2, 1, 3),
            "{b:?}"
        );
        assert_eq!(b.latency, Duration::from_millis(5), "{b:?}");
        assert_eq!(c.would_blocks, 2, "{c:?}");
        assert_eq!(c.max_writes_per_sendv, 3, "{c:?}");
        assert_eq!(c.latency, Duration::from_millis(12), "{c:?}");
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(stats.would_blocks, 2);
        assert_eq!(stats.sendv_calls, 5);
    });
}

#[test]
fn a_zero_length_write_behind_others_reports_no_sendv_of_its_own_bytes() {
    run_paused(|| async {
        let (mock, socket) = mock_with(queue(|q| q.copy_threshold = 0)).await;
        mock.script_sendv(Handle(1), [SendStep::Accept(10)]);
        let a = socket.send(Write::new(vec![b'a'; 100]));
        let z = socket.send(Write::new(IoBatch::new()));
        let a = a.await.unwrap().unwrap();
        let z = z.await.unwrap().unwrap();
        assert_eq!(a.len, 100);
        assert_eq!(z.len, 0);
        assert_eq!(mock.written(Handle(1)), vec![b'a'; 100]);
        // a zero-length write carries no bytes: no sendv carried bytes of it
        assert_eq!(z.sendv_calls, 0, "{z:?}");
    });
}

// ---------------------------------------------------------------------------------------
// 4. CancelWrite at every point of a write's life (mock)

fn payload(batch: Option<IoBatch>) -> Option<Vec<u8>> {
    batch.map(|b| b.to_vec().expect("memory"))
}

#[test]
fn cancel_a_queued_write_before_its_flush() {
    run_paused(|| async {
        let (mock, socket) = mock_with(SocketConfig::default()).await;
        let a = socket.send(Write::new(&b"first"[..]));
        let b = socket.send(Write::new(&b"second"[..]).tag(2));
        let c = socket.send(Write::new(&b"third"[..]));
        let got = socket.send(CancelWrite { tag: 2 }).await.unwrap();
        assert_eq!(payload(got), Some(b"second".to_vec()));
        assert!(a.await.unwrap().is_ok());
        assert!(matches!(b.await.unwrap(), Err(WriteError::Cancelled)));
        assert!(c.await.unwrap().is_ok());
        assert_eq!(mock.written(Handle(1)), b"firstthird");
        assert!(socket.send(CancelWrite { tag: 2 }).await.unwrap().is_none());
    });
}

#[test]
fn cancel_a_write_whose_only_sendv_would_block() {
    run_paused(|| async {
        let (mock, socket) = mock_with(SocketConfig::default()).await;
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let b = socket.send(Write::new(vec![b'x'; 1000]).tag(9));
        let c = socket.send(Write::new(&b"after"[..]).tag(10));
        settle().await;
        assert_eq!(mock.sendv_calls(Handle(1)), 1);
        let got = socket.send(CancelWrite { tag: 9 }).await.unwrap();
        assert_eq!(payload(got), Some(vec![b'x'; 1000]));
        mock.release(Handle(1));
        assert!(matches!(b.await.unwrap(), Err(WriteError::Cancelled)));
        let c = c.await.unwrap().unwrap();
        assert_eq!(c.len, 5);
        assert_eq!(mock.written(Handle(1)), b"after");
    });
}

#[test]
fn cancel_a_write_in_a_sendv_still_out_is_refused_and_it_completes() {
    run_paused(|| async {
        let (mock, socket) = mock_with(SocketConfig::default()).await;
        mock.script_sendv(
            Handle(1),
            [SendStep::Slow {
                bytes: 3,
                after: Duration::from_millis(10),
            }],
        );
        let b = socket.send(Write::new(vec![b'y'; 1000]).tag(3));
        let c = socket.send(Write::new(vec![b'z'; 1000]).tag(4));
        settle().await;
        assert_eq!(mock.sendv_calls(Handle(1)), 1);
        // both are in the sendv that is out: neither may be cancelled
        assert!(socket.send(CancelWrite { tag: 3 }).await.unwrap().is_none());
        assert!(socket.send(CancelWrite { tag: 4 }).await.unwrap().is_none());
        let b = b.await.unwrap().unwrap();
        let c = c.await.unwrap().unwrap();
        assert_eq!((b.len, c.len), (1000, 1000));
        let mut expected = vec![b'y'; 1000];
        expected.extend(vec![b'z'; 1000]);
        assert_eq!(mock.written(Handle(1)), expected);
    });
}

#[test]
fn cancel_a_partly_sent_write_is_refused_and_one_behind_it_can_be() {
    run_paused(|| async {
        let (mock, socket) = mock_with(SocketConfig::default()).await;
        mock.script_sendv(Handle(1), [SendStep::Accept(10), SendStep::Hold]);
        let b = socket.send(Write::new(vec![b'p'; 1000]).tag(1));
        let c = socket.send(Write::new(vec![b'q'; 1000]).tag(2));
        settle().await;
        assert!(socket.send(CancelWrite { tag: 1 }).await.unwrap().is_none());
        // c was offered in two sendvs, one partial (none of c's bytes), one would-block
        let got = socket.send(CancelWrite { tag: 2 }).await.unwrap();
        assert_eq!(payload(got), Some(vec![b'q'; 1000]));
        mock.release(Handle(1));
        assert_eq!(b.await.unwrap().unwrap().len, 1000);
        assert!(matches!(c.await.unwrap(), Err(WriteError::Cancelled)));
        assert_eq!(mock.written(Handle(1)), vec![b'p'; 1000]);
    });
}

#[test]
fn cancel_a_finished_write_is_refused() {
    run_paused(|| async {
        let (_mock, socket) = mock_with(SocketConfig::default()).await;
        let b = socket.send(Write::new(vec![b'p'; 1000]).tag(1));
        b.await.unwrap().unwrap();
        assert!(socket.send(CancelWrite { tag: 1 }).await.unwrap().is_none());
    });
}

#[test]
fn cancel_a_write_waiting_for_room_hands_it_back_and_the_rest_go_out() {
    run_paused(|| async {
        let (mock, socket) = mock_with(SocketConfig {
            max_waiting_writes: 2,
            ..crate::support::watermarks(100, 10)
        })
        .await;
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let a = socket.send(Write::new(vec![b'a'; 200]));
        let w1 = socket.send(Write::new(vec![b'1'; 50]).tag(1).wait_when_full());
        let w2 = socket.send(Write::new(vec![b'2'; 50]).tag(2).wait_when_full());
        let w3 = socket.send(Write::new(vec![b'3'; 50]).tag(3).wait_when_full());
        let w3 = w3.await.unwrap();
        match w3 {
            Err(WriteError::QueueFull { payload, .. }) => {
                assert_eq!(payload.to_vec().unwrap(), vec![b'3'; 50])
            }
            other => panic!("the third waiting write is refused: {other:?}"),
        }
        let got = socket.send(CancelWrite { tag: 1 }).await.unwrap();
        assert_eq!(payload(got), Some(vec![b'1'; 50]));
        // room for one more waiting write now
        let w4 = socket.send(Write::new(vec![b'4'; 50]).tag(4).wait_when_full());
        settle().await;
        mock.release(Handle(1));
        assert_eq!(a.await.unwrap().unwrap().len, 200);
        assert!(matches!(w1.await.unwrap(), Err(WriteError::Cancelled)));
        assert_eq!(w2.await.unwrap().unwrap().len, 50);
        assert_eq!(w4.await.unwrap().unwrap().len, 50);
        let mut expected = vec![b'a'; 200];
        expected.extend(vec![b'2'; 50]);
        expected.extend(vec![b'4'; 50]);
        assert_eq!(mock.written(Handle(1)), expected);
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(stats.queued_bytes, 0, "{stats:?}");
        assert_eq!(stats.queued_writes, 0, "{stats:?}");
    });
}

#[test]
fn max_waiting_writes_zero_refuses_a_waiting_write_on_a_full_queue() {
    run_paused(|| async {
        let (mock, socket) = mock_with(SocketConfig {
            max_waiting_writes: 0,
            ..crate::support::watermarks(100, 10)
        })
        .await;
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let a = socket.send(Write::new(vec![b'a'; 200]));
        let w = socket
            .send(Write::new(vec![b'w'; 5]).wait_when_full())
            .await
            .unwrap();
        assert!(matches!(w, Err(WriteError::QueueFull { .. })), "{w:?}");
        settle().await;
        mock.release(Handle(1));
        a.await.unwrap().unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// 5. flush policies

/// A Flusher of the caller's with a behaviour.
#[derive(Clone, Copy)]
enum Behaviour {
    Slow(Duration),
    Twice,
    StopAfterHandling,
}

struct OddFlusher(Behaviour, Arc<Mutex<u32>>);

impl Actor for OddFlusher {
    type Context = Context<Self>;
}

impl Handler<PendingWrite> for OddFlusher {
    type Result = ();
    fn handle(&mut self, msg: PendingWrite, ctx: &mut Context<Self>) {
        *self.1.lock().unwrap() += 1;
        match self.0 {
            Behaviour::Slow(d) => {
                let flush = msg.flush;
                ctx.run_later(d, move |_, _| flush.do_send(Flush));
            }
            Behaviour::Twice => {
                msg.flush.do_send(Flush);
                msg.flush.do_send(Flush);
                let flush = msg.flush;
                ctx.run_later(Duration::from_millis(1), move |_, _| flush.do_send(Flush));
            }
            Behaviour::StopAfterHandling => ctx.stop(),
        }
    }
}

fn odd_flusher_test(behaviour: Behaviour) {
    run_paused(|| async move {
        let count = Arc::new(Mutex::new(0));
        let flusher = OddFlusher(behaviour, count.clone()).start();
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(7),
                SendStep::WouldBlock(Duration::from_millis(2)),
            ],
        );
        let socket = Socket::builder()
            .functions(mock.functions())
            .flush_policy(FlushPolicy::Deferred(flusher.recipient()))
            .connect(mock_peer())
            .await
            .expect("connect");
        let mut expected = Vec::new();
        for round in 0..5u8 {
            let mut answers = Vec::new();
            for i in 0..10u8 {
                let b = vec![round * 16 + i; 30 + i as usize];
                expected.extend_from_slice(&b);
                answers.push(socket.send(Write::new(b)));
            }
            for a in answers {
                let r = tokio::time::timeout(Duration::from_secs(60), a)
                    .await
                    .expect("answered within 60 s of paused time")
                    .unwrap();
                r.expect("written");
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        assert!(mock.written(Handle(1)) == expected);
    });
}

#[test]
fn a_slow_custom_flusher_delays_but_delivers_every_write_once() {
    odd_flusher_test(Behaviour::Slow(Duration::from_millis(50)));
}

#[test]
fn a_custom_flusher_answering_twice_or_thrice_sends_each_byte_once() {
    odd_flusher_test(Behaviour::Twice);
}

#[test]
fn a_custom_flusher_that_stops_after_handling_the_request_strands_nothing() {
    odd_flusher_test(Behaviour::StopAfterHandling);
}

#[test]
fn immediate_policy_by_message_makes_one_sendv_per_write() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = Socket::builder()
            .functions(mock.functions())
            .immediate()
            .connect(mock_peer())
            .await
            .expect("connect");
        let mut answers = Vec::new();
        for i in 0..10usize {
            answers.push(socket.send(Write::new(vec![i as u8; 10 + i])));
        }
        for a in answers {
            let w = a.await.unwrap().unwrap();
            assert_eq!(w.sendv_calls, 1);
            assert_eq!(w.max_writes_per_sendv, 1, "{w:?}");
        }
        let log = mock.sendv_log(Handle(1));
        assert_eq!(log.len(), 10);
        for (i, r) in log.iter().enumerate() {
            assert_eq!(r.offered, 10 + i);
        }
    });
}

#[test]
fn after_a_custom_flusher_stops_a_later_write_still_gets_everything_out() {
    run_paused(|| async {
        let count = Arc::new(Mutex::new(0));
        let flusher = OddFlusher(Behaviour::StopAfterHandling, count.clone()).start();
        let mock = MockTransport::start();
        let socket = Socket::builder()
            .functions(mock.functions())
            .flush_policy(FlushPolicy::Deferred(flusher.recipient()))
            .connect(mock_peer())
            .await
            .expect("connect");
        let a = socket.send(Write::new(&b"first"[..]));
        settle().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(*count.lock().unwrap(), 1, "the flusher handled the request");
        let b = socket.send(Write::new(&b"second"[..]));
        let a = tokio::time::timeout(Duration::from_secs(60), a).await;
        let b = tokio::time::timeout(Duration::from_secs(60), b).await;
        assert!(
            a.is_ok() && b.is_ok(),
            "a: {a:?}, b: {b:?}; written {:?}",
            mock.written(Handle(1))
        );
    });
}

// ---------------------------------------------------------------------------------------
// 6. more in place: cancel after a would-block, abort mid file, immediate telemetry

/// A loopback listener with a small receive buffer whose connection is read only once
/// `go` fires; it then reads to EOF (or error), returning what it read.
async fn gated_sink() -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Vec<u8>>,
) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(16).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let (go_tx, go) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let _ = go.await;
        let mut all = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
        all
    });
    (addr, go_tx, task)
}

#[actix::test]
async fn in_place_a_tagged_write_behind_a_blocked_one_can_be_cancelled() {
    let (addr, go, received) = gated_sink().await;
    let socket = Socket::builder()
        .config(small_sndbuf(QueueConfig::default()))
        .connect(addr)
        .await
        .expect("connect");
    let big = pattern(3 << 20, 21);
    let a = socket.send(Write::new(big.clone()));
    let b = socket.send(Write::new(vec![b'B'; 700]).tag(7));
    let c = socket.send(Write::new(&b"CCC"[..]));
    // let the socket fill the kernel's buffers and block
    for _ in 0..50 {
        let stats = socket.send(GetStats).await.unwrap();
        if stats.would_blocks > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = socket.send(GetStats).await.unwrap();
    assert!(stats.would_blocks > 0, "{stats:?}");
    assert!(stats.bytes_sent < big.len() as u64, "{stats:?}");
    let got = socket.send(CancelWrite { tag: 7 }).await.unwrap();
    assert_eq!(
        payload(got),
        Some(vec![b'B'; 700]),
        "not started: handed back"
    );
    let _ = go.send(());
    assert_eq!(a.await.unwrap().unwrap().len, big.len());
    assert!(matches!(b.await.unwrap(), Err(WriteError::Cancelled)));
    assert_eq!(c.await.unwrap().unwrap().len, 3);
    socket.do_send(Close::Graceful);
    let got = tokio::time::timeout(Duration::from_secs(30), received)
        .await
        .expect("30 s")
        .expect("join");
    let mut expected = big;
    expected.extend_from_slice(b"CCC");
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
}

#[actix::test]
async fn in_place_an_abort_mid_file_reports_exactly_what_the_peer_got() {
    let content = pattern(3 << 20, 22);
    let file = temp_file(&content);
    let (addr, go, received) = gated_sink().await;
    let socket = Socket::builder()
        .config(small_sndbuf(QueueConfig::default()))
        .connect(addr)
        .await
        .expect("connect");
    let mut batch = IoBatch::new();
    batch.push(Bytes::from_static(b"HEAD"));
    batch.push_file(FileRange::whole(file.clone()).expect("range"));
    batch.push(Bytes::from_static(b"TAIL"));
    let a = socket.send(Write::new(batch));
    let b = socket.send(Write::new(&b"behind"[..]));
    for _ in 0..50 {
        let stats = socket.send(GetStats).await.unwrap();
        if stats.would_blocks > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    socket.do_send(Close::Abort);
    let a = a.await.unwrap();
    let b = b.await.unwrap();
    let sent = match a {
        Err(WriteError::Aborted { bytes_sent, len }) => {
            assert_eq!(len, content.len() + 8);
            bytes_sent
        }
        other => panic!("{other:?}"),
    };
    assert!(
        matches!(
            b,
            Err(WriteError::Aborted {
                bytes_sent: 0,
                len: 6
            })
        ),
        "{b:?}"
    );
    let _ = go.send(());
    let got = tokio::time::timeout(Duration::from_secs(30), received)
        .await
        .expect("30 s")
        .expect("join");
    assert_eq!(
        got.len(),
        sent,
        "the peer got exactly what the answer says went out"
    );
    let mut expected = b"HEAD".to_vec();
    expected.extend_from_slice(&content);
    assert!(got[..] == expected[..got.len()]);
}

#[actix::test]
async fn in_place_immediate_writes_report_one_call_each_and_zero_latency() {
    let (addr, received) = small_sink().await;
    let socket = Socket::builder()
        .immediate()
        .connect(addr)
        .await
        .expect("connect");
    let mut answers = Vec::new();
    for i in 0..20u8 {
        answers.push(socket.send(Write::new(vec![i; 100])));
    }
    for a in answers {
        let w = a.await.unwrap().unwrap();
        assert_eq!(w.len, 100);
        assert_eq!(w.sendv_calls, 1, "{w:?}");
        assert_eq!(w.would_blocks, 0, "{w:?}");
        assert_eq!(w.max_writes_per_sendv, 1, "{w:?}");
    }
    let stats = socket.send(GetStats).await.unwrap();
    assert_eq!(stats.sendv_calls, 20, "{stats:?}");
    socket.do_send(Close::Graceful);
    let got = received_within(received).await;
    assert_eq!(got.len(), 2000);
}

#[actix::test]
async fn in_place_stats_add_up_after_a_storm_of_shapes() {
    let content = pattern(500_000, 23);
    let file = temp_file(&content);
    let (addr, received) = small_sink().await;
    let socket = Socket::builder()
        .config(small_sndbuf(QueueConfig {
            copy_threshold: 64,
            max_segments: 7,
            ..QueueConfig::default()
        }))
        .connect(addr)
        .await
        .expect("connect");
    let writer = socket.send(sockactor::messages::GetWriter).await.unwrap();
    let mut expected = Vec::new();
    let mut answers = Vec::new();
    for i in 0..300usize {
        let mut batch = IoBatch::new();
        match i % 5 {
            0 => {
                let b = Bytes::from(pattern(i % 70, i as u64));
                expected.extend_from_slice(&b);
                batch.push(b);
            }
            1 => {
                let off = (i * 1009) % 400_000;
                let len = 1 + (i * 31) % 50_000;
                batch.push(Bytes::from_static(b"<"));
                batch.push_file(FileRange::new(file.clone(), off as u64, len).unwrap());
                batch.push(Bytes::from_static(b">"));
                expected.push(b'<');
                expected.extend_from_slice(&content[off..off + len]);
                expected.push(b'>');
            }
            2 => {
                for k in 0..20 {
                    let b = Bytes::from(vec![(i + k) as u8; k]);
                    expected.extend_from_slice(&b);
                    batch.push(b);
                }
            }
            3 => {
                batch.push(Bytes::new());
            }
            _ => {
                let b = Bytes::from(pattern(100_000, i as u64));
                expected.extend_from_slice(&b);
                batch.push(b);
            }
        }
        let len = batch.len();
        type Fut = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<sockactor::messages::Written, WriteError>>>,
        >;
        if i % 2 == 0 {
            writer.writable().await.expect("room");
            let f = writer.write_answered(batch);
            assert!(f.refused().is_none());
            answers.push((len, Box::pin(f) as Fut));
        } else {
            let f = socket.send(Write::new(batch).wait_when_full());
            answers.push((len, Box::pin(async move { f.await.unwrap() }) as Fut));
        }
    }
    let mut total = 0u64;
    for (len, a) in answers {
        let w = a.await.expect("written");
        assert_eq!(w.len, len);
        total += len as u64;
    }
    let stats = socket.send(GetStats).await.unwrap();
    assert_eq!(stats.bytes_sent, total, "{stats:?}");
    assert_eq!(stats.writes_completed, 300, "{stats:?}");
    assert_eq!(stats.writes_failed, 0, "{stats:?}");
    assert_eq!(stats.queued_bytes, 0, "{stats:?}");
    socket.do_send(Close::Graceful);
    let got = received_within(received).await;
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
}

// ---------------------------------------------------------------------------------------
// 7. more by message: file read errors, transport failures, cancel of files and small

#[test]
fn by_message_an_unreadable_file_behind_memory_fails_with_how_far_it_got() {
    run_paused(|| async {
        let path = temp_path("review9a-wo");
        std::fs::write(&path, pattern(1000, 1)).unwrap();
        let wo = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let range = FileRange::whole(wo).expect("a regular file");
        let (mock, socket) = mock_with(SocketConfig::default()).await;
        let before = socket.send(Write::new(vec![b'm'; 600]));
        let mut batch = IoBatch::new();
        batch.push(Bytes::from(vec![b'h'; 600]));
        batch.push_file(range);
        let bad = socket.send(Write::new(batch));
        let after = socket.send(Write::new(vec![b'z'; 600]));
        assert_eq!(before.await.unwrap().unwrap().len, 600);
        match bad.await.unwrap() {
            Err(WriteError::Transport {
                bytes_sent: 600,
                len: 1600,
                source: TransportError::File(_),
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            after.await.unwrap(),
            Err(WriteError::Transport { bytes_sent: 0, .. })
        ),);
        let mut expected = vec![b'm'; 600];
        expected.extend(vec![b'h'; 600]);
        assert_eq!(mock.written(Handle(1)), expected);
    });
}

#[test]
fn by_message_a_transport_failure_mid_run_answers_each_write_with_how_far_it_got() {
    run_paused(|| async {
        let (mock, socket) = mock_with(queue(|q| q.copy_threshold = 512)).await;
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(250),
                SendStep::Fail(std::io::ErrorKind::ConnectionReset),
            ],
        );
        let answers: Vec<_> = (0..10u8)
            .map(|i| socket.send(Write::new(vec![i; 100])))
            .collect();
        let mut sent = Vec::new();
        for a in answers {
            match a.await.unwrap() {
                Ok(w) => sent.push(w.len),
                Err(e) => sent.push(e.bytes_sent()),
            }
        }
        assert_eq!(sent, vec![100, 100, 50, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(mock.written(Handle(1)).len(), 250);
    });
}

#[test]
fn cancel_hands_back_a_file_range_write_and_a_small_tagged_write_unchanged() {
    run_paused(|| async {
        let content = pattern(5000, 2);
        let file = temp_file(&content);
        let (mock, socket) = mock_with(queue(|q| q.copy_threshold = 512)).await;
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let a = socket.send(Write::new(vec![b'a'; 10]));
        let mut fb = IoBatch::new();
        fb.push(Bytes::from_static(b"x"));
        fb.push_file(FileRange::new(file.clone(), 100, 50).unwrap());
        let f = socket.send(Write::new(fb.clone()).tag(1));
        let s = socket
            .send(Write::new(vec![Bytes::from_static(b"sm"), Bytes::from_static(b"all")]).tag(2));
        let t = socket.send(Write::new(vec![b't'; 10]));
        settle().await;
        // a, f, s, t all were in the sendv that would block: none started
        let got_f = socket
            .send(CancelWrite { tag: 1 })
            .await
            .unwrap()
            .expect("f back");
        assert_eq!(got_f, fb, "the same segments, the same file range");
        let got_s = socket
            .send(CancelWrite { tag: 2 })
            .await
            .unwrap()
            .expect("s back");
        assert_eq!(got_s.segment_count(), 2);
        assert_eq!(got_s.to_vec().unwrap(), b"small");
        mock.release(Handle(1));
        a.await.unwrap().unwrap();
        assert!(matches!(f.await.unwrap(), Err(WriteError::Cancelled)));
        assert!(matches!(s.await.unwrap(), Err(WriteError::Cancelled)));
        t.await.unwrap().unwrap();
        let mut expected = vec![b'a'; 10];
        expected.extend(vec![b't'; 10]);
        assert_eq!(mock.written(Handle(1)), expected);
    });
}

#[test]
fn a_write_larger_than_every_watermark_by_message_goes_out_whole_with_its_telemetry() {
    run_paused(|| async {
        let (mock, socket) = mock_with(SocketConfig {
            queue: QueueConfig {
                high_watermark: 1000,
                low_watermark: 100,
                max_bytes_per_turn: 300,
                file_read_chunk: 128,
                ..QueueConfig::default()
            },
            ..SocketConfig::default()
        })
        .await;
        let content = pattern(20_000, 6);
        let file = temp_file(&content);
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(999),
                SendStep::WouldBlock(Duration::from_millis(4)),
            ],
        );
        let mut batch = IoBatch::new();
        batch.push(Bytes::from(pattern(30_000, 5)));
        batch.push_file(FileRange::whole(file).unwrap());
        let a = socket.send(Write::new(batch));
        let b = socket.send(Write::new(&b"next"[..]));
        let b = b.await.unwrap();
        assert!(matches!(b, Err(WriteError::QueueFull { .. })), "{b:?}");
        let a = a.await.unwrap().unwrap();
        assert_eq!(a.len, 50_000);
        assert_eq!(a.would_blocks, 1);
        assert_eq!(a.latency, Duration::from_millis(4));
        let log = mock.sendv_log(Handle(1));
        assert_eq!(
            a.sendv_calls as usize,
            log.iter().filter(|r| !r.would_block).count()
        );
        let mut expected = pattern(30_000, 5);
        expected.extend_from_slice(&content);
        assert!(mock.written(Handle(1)) == expected);
    });
}

#[test]
fn immediate_writes_queued_behind_a_would_block_leave_together() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::from_millis(5))]);
        let socket = Socket::builder()
            .functions(mock.functions())
            .immediate()
            .config(queue(|q| q.copy_threshold = 0))
            .connect(mock_peer())
            .await
            .expect("connect");
        let answers: Vec<_> = (0..10u8)
            .map(|i| socket.send(Write::new(vec![i; 10])))
            .collect();
        let mut ws = Vec::new();
        for a in answers {
            ws.push(a.await.unwrap().unwrap());
        }
        let log = mock.sendv_log(Handle(1));
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(log[0].would_block);
        assert_eq!(log[1].offered, 100);
        assert_eq!(ws[0].would_blocks, 1);
        assert_eq!(ws[0].sendv_calls, 1);
        for w in &ws {
            assert_eq!(w.max_writes_per_sendv, 10, "{w:?}");
            assert_eq!(w.latency, Duration::from_millis(5), "{w:?}");
        }
    });
}

#[test]
fn a_turn_cap_of_one_byte_always_still_delivers_exactly() {
    run_paused(|| async {
        let (mock, socket) = mock_with(queue(|q| {
            q.max_bytes_per_turn = 0;
            q.turn_cap = sockactor::TurnCap::Always;
            q.copy_threshold = 4;
        }))
        .await;
        let mut expected = Vec::new();
        let mut answers = Vec::new();
        for i in 0..20u8 {
            let b = vec![i; (i as usize % 7) + 1];
            expected.extend_from_slice(&b);
            answers.push((b.len(), socket.send(Write::new(b))));
        }
        for (len, a) in answers {
            let w = a.await.unwrap().unwrap();
            assert_eq!(w.len, len);
            assert_eq!(w.sendv_calls as usize, len, "one byte per sendv: {w:?}");
        }
        assert_eq!(mock.written(Handle(1)), expected);
        for r in mock.sendv_log(Handle(1)) {
            assert_eq!(r.offered, 1, "{r:?}");
        }
    });
}

/// A Flusher of the caller's that answers each request after `delay` and records how many
/// requests were outstanding (received, not yet answered) at most.
struct CountingFlusher {
    delay: Duration,
    outstanding: Arc<Mutex<(u32, u32, u32)>>, // (now, max, total)
}

impl Actor for CountingFlusher {
    type Context = Context<Self>;
}

impl Handler<PendingWrite> for CountingFlusher {
    type Result = ();
    fn handle(&mut self, msg: PendingWrite, ctx: &mut Context<Self>) {
        {
            let mut o = self.outstanding.lock().unwrap();
            o.0 += 1;
            o.1 = o.1.max(o.0);
            o.2 += 1;
        }
        let outstanding = self.outstanding.clone();
        ctx.run_later(self.delay, move |_, _| {
            outstanding.lock().unwrap().0 -= 1;
            msg.flush.do_send(Flush);
        });
    }
}

#[test]
fn a_socket_has_at_most_one_pending_write_outstanding_even_after_a_cancel() {
    run_paused(|| async {
        let outstanding = Arc::new(Mutex::new((0, 0, 0)));
        let flusher = CountingFlusher {
            delay: Duration::from_millis(10),
            outstanding: outstanding.clone(),
        }
        .start();
        let mock = MockTransport::start();
        let socket = Socket::builder()
            .functions(mock.functions())
            .flush_policy(FlushPolicy::Deferred(flusher.recipient()))
            .connect(mock_peer())
            .await
            .expect("connect");
        let a = socket.send(Write::new(&b"cancel me"[..]).tag(1));
        settle().await;
        assert_eq!(outstanding.lock().unwrap().0, 1, "one request out");
        let got = socket.send(CancelWrite { tag: 1 }).await.unwrap();
        assert!(got.is_some());
        assert!(matches!(a.await.unwrap(), Err(WriteError::Cancelled)));
        let b = socket.send(Write::new(&b"then this"[..]));
        settle().await;
        let (now, max, total) = *outstanding.lock().unwrap();
        assert!(
            max <= 1,
            "PendingWrite: 'A socket has at most one outstanding at a time'; \
             outstanding now {now}, at most {max}, sent {total}"
        );
        b.await.unwrap().unwrap();
        assert_eq!(mock.written(Handle(1)), b"then this");
    });
}

#[test]
fn watermarks_at_zero_and_inverted_take_one_write_at_a_time_and_drain() {
    for (high, low) in [(0usize, 0usize), (0, 50), (10, 10), (10, 1000)] {
        run_paused(|| async move {
            let (mock, socket) = mock_with(crate::support::watermarks(high, low)).await;
            mock.script_sendv(Handle(1), [SendStep::Hold]);
            let a = socket.send(Write::new(vec![b'a'; 30]));
            let b = socket.send(Write::new(vec![b'b'; 30]));
            let w = socket.send(Write::new(vec![b'w'; 30]).wait_when_full());
            let b = b.await.unwrap();
            assert!(
                matches!(b, Err(WriteError::QueueFull { .. })),
                "h{high} l{low}: {b:?}"
            );
            settle().await;
            mock.release(Handle(1));
            assert_eq!(a.await.unwrap().unwrap().len, 30);
            assert_eq!(w.await.unwrap().unwrap().len, 30, "h{high} l{low}");
            let mut expected = vec![b'a'; 30];
            expected.extend(vec![b'w'; 30]);
            assert_eq!(mock.written(Handle(1)), expected);
            // drained: a new write is taken
            let c = socket.send(Write::new(vec![b'c'; 30])).await.unwrap();
            assert!(c.is_ok(), "h{high} l{low}: {c:?}");
        });
    }
}

#[test]
fn cancel_with_a_duplicate_tag_takes_the_write_that_has_not_started() {
    run_paused(|| async {
        let (mock, socket) = mock_with(SocketConfig::default()).await;
        mock.script_sendv(Handle(1), [SendStep::Accept(5), SendStep::Hold]);
        let a = socket.send(Write::new(vec![b'a'; 1000]).tag(5));
        let b = socket.send(Write::new(vec![b'b'; 1000]).tag(5));
        settle().await;
        let got = socket.send(CancelWrite { tag: 5 }).await.unwrap();
        assert_eq!(payload(got), Some(vec![b'b'; 1000]));
        assert!(socket.send(CancelWrite { tag: 5 }).await.unwrap().is_none());
        mock.release(Handle(1));
        assert!(a.await.unwrap().is_ok());
        assert!(matches!(b.await.unwrap(), Err(WriteError::Cancelled)));
        assert_eq!(mock.written(Handle(1)), vec![b'a'; 1000]);
    });
}
