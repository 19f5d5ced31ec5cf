//! From the nineteenth round of the independent review: the write path in depth. The
//! `Written` answer's fields and the socket's counters through coalesced runs of copied
//! writes, partial accepts, would-blocks, failures, many segments and file ranges;
//! watermarks and writability at their boundaries; waiting writes, cancels, `write_each`
//! and dropped `WriteFuture`s; Flushers (custom, slow, unasked `Flush`es) and the turn
//! cap of a socket alone on its thread; a mixed memory and `sendfile` write on loopback.

use std::fs::File;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{mock_peer, pattern, run_paused, settle, Recorder};
use actix::prelude::*;
use bytes::Bytes;
use sockactor::messages::{
    CancelWrite, Flush, GetStats, GetWriter, Handle, PendingWrite, SocketEventKind,
    SubscribeWritability, Write,
};
use sockactor::{
    FileRange, FlushPolicy, IoBatch, MockTransport, QueueConfig, SendStep, Socket, SocketConfig,
    TransportError, WriteError,
};

// ---------------------------------------------------------------------------------------
// helpers

fn config(f: impl FnOnce(&mut QueueConfig)) -> SocketConfig {
    let mut q = QueueConfig::default();
    f(&mut q);
    SocketConfig {
        queue: q,
        ..SocketConfig::default()
    }
}

async fn socket_with(
    mock: &MockTransport,
    config: SocketConfig,
    recorder: Option<&Recorder>,
    policy: Option<FlushPolicy>,
) -> Addr<Socket> {
    let mut b = Socket::builder().functions(mock.functions()).config(config);
    if let Some(r) = recorder {
        let addr = r.start();
        b = b
            .subscriber(addr.clone().recipient())
            .writability_subscriber(addr.recipient());
    }
    if let Some(p) = policy {
        b = b.flush_policy(p);
    }
    b.connect(mock_peer()).await.expect("connect")
}

fn temp_file(content: &[u8]) -> Arc<File> {
    let path = crate::support::temp_path("review19");
    let mut file = File::create(&path).expect("create");
    file.write_all(content).expect("write");
    let file = File::open(&path).expect("open");
    let _ = std::fs::remove_file(&path);
    Arc::new(file)
}

fn write_failures(r: &Recorder) -> Vec<(Option<u64>, String)> {
    r.picked(|e| match e {
        SocketEventKind::WriteFailed { tag, error } => Some((*tag, format!("{error:?}"))),
        _ => None,
    })
}

/// A Flusher that records each request and answers only when the test says so.
#[derive(Clone, Default)]
struct ManualFlusher {
    requests: Arc<Mutex<Vec<Recipient<Flush>>>>,
    count: Arc<Mutex<usize>>,
}

impl ManualFlusher {
    fn answer_all(&self) {
        for r in self.requests.lock().unwrap().drain(..) {
            r.do_send(Flush);
        }
    }
    fn count(&self) -> usize {
        *self.count.lock().unwrap()
    }
}

struct ManualFlusherActor(ManualFlusher);
impl Actor for ManualFlusherActor {
    type Context = Context<Self>;
}
impl Handler<PendingWrite> for ManualFlusherActor {
    type Result = ();
    fn handle(&mut self, msg: PendingWrite, _: &mut Context<Self>) {
        *self.0.count.lock().unwrap() += 1;
        self.0.requests.lock().unwrap().push(msg.flush);
    }
}

/// A Flusher that answers each request after `delay` of tokio time.
struct DelayFlusher(Duration);
impl Actor for DelayFlusher {
    type Context = Context<Self>;
}
impl Handler<PendingWrite> for DelayFlusher {
    type Result = ();
    fn handle(&mut self, msg: PendingWrite, ctx: &mut Context<Self>) {
        let flush = msg.flush;
        ctx.run_later(self.0, move |_, _| flush.do_send(Flush));
    }
}

// ---------------------------------------------------------------------------------------
// 1. Written and SocketStats over coalesced runs of small copied writes

#[test]
fn a_run_of_silent_small_writes_counts_every_write_in_one_sendv() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = socket_with(&mock, SocketConfig::default(), None, None).await;
        let mut expected = Vec::new();
        for i in 0..9u8 {
            let w = vec![b'0' + i; 10];
            expected.extend_from_slice(&w);
            socket.do_send(Write::new(w));
        }
        expected.extend_from_slice(&[b'z'; 10]);
        let last = socket
            .send(Write::new(vec![b'z'; 10]))
            .await
            .unwrap()
            .unwrap();
        settle().await;
        assert_eq!(mock.written(Handle(1)), expected);
        let log = mock.sendv_log(Handle(1));
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(last.len, 10);
        assert_eq!(last.sendv_calls, 1, "{last:?}");
        assert_eq!(last.would_blocks, 0, "{last:?}");
        assert_eq!(
            last.max_writes_per_sendv, 10,
            "the sendv carried all ten writes: {last:?}"
        );
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!(s.writes, 10, "{s:?}");
        assert_eq!(s.writes_completed, 10, "{s:?}");
        assert_eq!(s.writes_failed, 0, "{s:?}");
        assert_eq!(s.bytes_sent, 100, "{s:?}");
        assert_eq!(s.sendv_calls, 1, "{s:?}");
        assert_eq!(s.would_blocks, 0, "{s:?}");
        assert_eq!(s.pending_writes, 1, "{s:?}");
        assert_eq!((s.queued_bytes, s.queued_writes), (0, 0), "{s:?}");
        assert_eq!((s.sendfile_calls, s.file_bytes_read), (0, 0), "{s:?}");
    });
}

#[test]
fn a_copied_run_split_over_partial_accepts_reports_each_call() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(25),
                SendStep::WouldBlock(Duration::from_millis(3)),
                SendStep::Accept(30),
            ],
        );
        let socket = socket_with(&mock, SocketConfig::default(), None, None).await;
        let mut expected = Vec::new();
        let mut answers = Vec::new();
        for i in 0..5u8 {
            let w = vec![b'a' + i; 10];
            expected.extend_from_slice(&w);
            socket.do_send(Write::new(w));
        }
        for i in 0..6u8 {
            let w = vec![b'A' + i; 10];
            expected.extend_from_slice(&w);
            answers.push(socket.send(Write::new(w)));
        }
        let mut got = Vec::new();
        for a in answers {
            got.push(a.await.unwrap().unwrap());
        }
        settle().await;
        assert_eq!(mock.written(Handle(1)), expected);
        let log = mock.sendv_log(Handle(1));
        // sendv 1: 110 offered, 25 taken; 2: would-block; 3: 85 offered, 30 taken;
        // 4: 55 offered, all taken.
        assert_eq!(log.len(), 4, "{log:?}");
        let last = got.last().unwrap();
        assert_eq!(last.sendv_calls, 3, "{last:?}");
        assert_eq!(last.would_blocks, 1, "{last:?}");
        assert_eq!(last.max_writes_per_sendv, 11, "{last:?}");
        assert_eq!(last.latency, Duration::from_millis(3), "{last:?}");
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!(
            (s.writes, s.writes_completed, s.writes_failed),
            (11, 11, 0),
            "{s:?}"
        );
        assert_eq!(
            (s.sendv_calls, s.would_blocks, s.bytes_sent),
            (4, 1, 110),
            "{s:?}"
        );
    });
}

#[test]
fn a_failed_silent_run_reports_each_unfinished_write_with_how_far_it_got() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(25),
                SendStep::Fail(std::io::ErrorKind::ConnectionReset),
            ],
        );
        let rec = Recorder::default();
        let socket = socket_with(&mock, SocketConfig::default(), Some(&rec), None).await;
        for i in 0..5u8 {
            socket.do_send(Write::new(vec![b'a' + i; 10]));
        }
        settle().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        settle().await;
        let fails = rec.picked(|e| match e {
            SocketEventKind::WriteFailed { error, .. } => Some(match error {
                WriteError::Transport {
                    bytes_sent, len, ..
                } => (*bytes_sent, *len),
                other => panic!("unexpected {other:?}"),
            }),
            _ => None,
        });
        assert_eq!(
            fails,
            vec![(5, 10), (0, 10), (0, 10)],
            "{:?}",
            write_failures(&rec)
        );
        let s = socket.send(GetStats).await;
        if let Ok(s) = s {
            assert_eq!(
                (s.writes, s.writes_completed, s.writes_failed),
                (5, 2, 3),
                "{s:?}"
            );
            assert_eq!(s.bytes_sent, 25, "{s:?}");
        }
    });
}

// ---------------------------------------------------------------------------------------
// 2. copy_threshold boundaries and IOV_MAX with telemetry

#[test]
fn many_segments_past_iov_max_report_every_sendv_they_took() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = socket_with(&mock, SocketConfig::default(), None, None).await;
        let data = pattern(3000, 19);
        let batch: IoBatch = data.chunks(1).map(Bytes::copy_from_slice).collect();
        assert_eq!(batch.segment_count(), 3000);
        let w = socket.send(Write::new(batch)).await.unwrap().unwrap();
        let log = mock.sendv_log(Handle(1));
        assert!(log.iter().all(|r| r.segments <= 1024), "{log:?}");
        assert_eq!(log.len(), 3, "{log:?}");
        assert_eq!(mock.written(Handle(1)), data);
        assert_eq!(w.len, 3000);
        assert_eq!(w.sendv_calls as usize, log.len(), "{w:?}");
        assert_eq!(w.max_writes_per_sendv, 1, "{w:?}");
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!(s.sendv_calls as usize, log.len(), "{s:?}");
    });
}

#[test]
fn many_segments_under_the_copy_threshold_leave_as_one_slice() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = socket_with(&mock, config(|q| q.copy_threshold = 4000), None, None).await;
        let data = pattern(3000, 7);
        let batch: IoBatch = data.chunks(1).map(Bytes::copy_from_slice).collect();
        let w = socket.send(Write::new(batch)).await.unwrap().unwrap();
        let log = mock.sendv_log(Handle(1));
        assert_eq!(mock.written(Handle(1)), data);
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(log[0].segments, 1, "copied: one slice: {log:?}");
        assert_eq!((w.len, w.sendv_calls, w.max_writes_per_sendv), (3000, 1, 1));
    });
}

#[test]
fn zero_length_writes_send_nothing_and_are_counted() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = socket_with(&mock, SocketConfig::default(), None, None).await;
        let mut empties = IoBatch::new();
        empties.push(Bytes::new());
        empties.push(Bytes::new());
        assert_eq!((empties.len(), empties.segment_count()), (0, 0));
        let a = socket.send(Write::new(empties)).await.unwrap().unwrap();
        let b = socket
            .send(Write::new(Vec::<u8>::new()).tag(3))
            .await
            .unwrap()
            .unwrap();
        socket.do_send(Write::new(""));
        settle().await;
        for w in [a, b] {
            assert_eq!(
                (w.len, w.sendv_calls, w.would_blocks, w.max_writes_per_sendv),
                (0, 0, 0, 0),
                "{w:?}"
            );
        }
        assert_eq!(mock.sendv_calls(Handle(1)), 0);
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!(
            (s.writes, s.writes_completed, s.writes_failed),
            (3, 3, 0),
            "{s:?}"
        );
        assert_eq!((s.sendv_calls, s.bytes_sent), (0, 0), "{s:?}");
    });
}

// ---------------------------------------------------------------------------------------
// 3. file ranges through the mock

#[test]
fn a_mixed_memory_and_file_write_by_message_reads_each_file_byte_once() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Accept(7000));
        let socket = socket_with(&mock, SocketConfig::default(), None, None).await;
        let content = pattern(150_000, 3);
        let file = temp_file(&content);
        let mut batch = IoBatch::new();
        batch.push(Bytes::from_static(b"head------"));
        batch.push_file(FileRange::new(file.clone(), 1000, 100_000).unwrap());
        batch.push(Bytes::from_static(b"mid-------"));
        batch.push_file(FileRange::new(file, 0, 40_000).unwrap());
        batch.push(Bytes::from_static(b"tail------"));
        let mut expected = b"head------".to_vec();
        expected.extend_from_slice(&content[1000..101_000]);
        expected.extend_from_slice(b"mid-------");
        expected.extend_from_slice(&content[..40_000]);
        expected.extend_from_slice(b"tail------");
        let w = socket.send(Write::new(batch)).await.unwrap().unwrap();
        assert!(mock.written(Handle(1)) == expected, "bytes differ");
        let log = mock.sendv_log(Handle(1));
        assert!(log.iter().all(|r| r.offered <= 64 * 1024 + 30), "{log:?}");
        assert_eq!(w.len, expected.len());
        assert_eq!(w.sendv_calls as usize, log.len(), "{w:?}");
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!(
            s.file_bytes_read, 140_000,
            "each file byte read once: {s:?}"
        );
        assert_eq!(s.sendfile_calls, 0, "{s:?}");
        assert_eq!(s.bytes_sent as usize, expected.len(), "{s:?}");
        assert_eq!(s.sendv_calls as usize, log.len(), "{s:?}");
    });
}

// ---------------------------------------------------------------------------------------
// 4. watermarks and writability exactly at their boundaries

#[test]
fn writability_flips_exactly_at_the_high_and_low_watermarks() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Hold,
                SendStep::Accept(59),
                SendStep::Hold,
                SendStep::Accept(1),
            ],
        );
        let rec = Recorder::default();
        let socket = socket_with(
            &mock,
            config(|q| {
                q.high_watermark = 100;
                q.low_watermark = 40;
                q.copy_threshold = 0;
            }),
            Some(&rec),
            None,
        )
        .await;
        let writer = socket.send(GetWriter).await.unwrap();
        writer.write(vec![b'a'; 99]).expect("99 < 100");
        assert!(
            writer.is_writable(),
            "99 bytes are below the high watermark"
        );
        writer
            .write(vec![b'b'; 1])
            .expect("the write reaching the mark is taken");
        assert!(!writer.is_writable(), "100 bytes reach the high watermark");
        match writer.write(vec![b'c'; 1]) {
            Err(WriteError::QueueFull {
                queued,
                high_watermark,
                payload,
            }) => {
                assert_eq!((queued, high_watermark), (100, 100));
                assert_eq!(payload.to_vec().unwrap(), b"c");
            }
            other => panic!("{other:?}"),
        }
        settle().await;
        assert_eq!(rec.writability(), vec![false]);
        mock.release(Handle(1));
        settle().await;
        // 41 left: above the low watermark
        assert_eq!(writer.queued_bytes(), 41);
        assert!(!writer.is_writable(), "41 > low 40");
        assert_eq!(rec.writability(), vec![false]);
        mock.release(Handle(1));
        settle().await;
        assert_eq!(writer.queued_bytes(), 0);
        assert!(writer.is_writable());
        assert_eq!(rec.writability(), vec![false, true]);
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!((s.writes, s.writes_failed), (2, 1), "{s:?}");
    });
}

#[test]
fn draining_to_exactly_the_low_watermark_makes_the_socket_writable() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [SendStep::Hold, SendStep::Accept(60), SendStep::Hold],
        );
        let rec = Recorder::default();
        let socket = socket_with(
            &mock,
            config(|q| {
                q.high_watermark = 100;
                q.low_watermark = 40;
                q.copy_threshold = 0;
            }),
            Some(&rec),
            None,
        )
        .await;
        let (wtx, mut wrx) = crate::support::channel();
        socket.send(SubscribeWritability(wtx)).await.unwrap();
        socket.do_send(Write::new(vec![b'a'; 100]));
        settle().await;
        let r = socket.send(Write::new(vec![b'x'; 1])).await.unwrap();
        assert!(
            matches!(r, Err(WriteError::QueueFull { queued: 100, .. })),
            "{r:?}"
        );
        mock.release(Handle(1));
        settle().await;
        assert_eq!(
            rec.writability(),
            vec![false, true],
            "40 left: at the low mark"
        );
        let heard: Vec<bool> = crate::support::drain(&mut wrx)
            .iter()
            .map(|w| w.writable)
            .collect();
        assert_eq!(heard, vec![false, true]);
        let ok = socket.send(Write::new(vec![b'y'; 1]));
        mock.release(Handle(1));
        ok.await.unwrap().expect("writable again: taken");
    });
}

#[test]
fn a_write_crossing_the_high_watermark_is_taken_and_the_next_refused() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let socket = socket_with(
            &mock,
            config(|q| {
                q.high_watermark = 100;
                q.low_watermark = 10;
            }),
            None,
            None,
        )
        .await;
        socket.do_send(Write::new(vec![b'a'; 99]));
        socket.do_send(Write::new(vec![b'b'; 50]));
        let r = socket.send(Write::new(vec![b'c'; 1]).tag(9)).await.unwrap();
        match r {
            Err(WriteError::QueueFull {
                queued,
                high_watermark,
                payload,
            }) => {
                assert_eq!((queued, high_watermark), (149, 100));
                assert_eq!(payload.to_vec().unwrap(), b"c");
            }
            other => panic!("{other:?}"),
        }
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!((s.writes, s.writes_failed), (2, 1), "{s:?}");
        assert_eq!((s.queued_bytes, s.queued_writes), (149, 2), "{s:?}");
        mock.release(Handle(1));
        settle().await;
        let mut expected = vec![b'a'; 99];
        expected.extend_from_slice(&[b'b'; 50]);
        assert_eq!(mock.written(Handle(1)), expected);
    });
}

// ---------------------------------------------------------------------------------------
// 5. waiting writes keep their order; cancels

#[test]
fn waiting_writes_keep_order_and_plain_writes_behind_them_are_refused() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let socket = socket_with(
            &mock,
            config(|q| {
                q.high_watermark = 100;
                q.low_watermark = 50;
                q.copy_threshold = 0;
            }),
            None,
            None,
        )
        .await;
        let writer = socket.send(GetWriter).await.unwrap();
        socket.do_send(Write::new(vec![b'a'; 100]));
        let w1 = socket.send(Write::new(vec![b'b'; 60]).wait_when_full());
        let w2 = socket.send(Write::new(vec![b'c'; 1]));
        let w3 = socket.send(Write::new(vec![b'd'; 60]).wait_when_full().tag(4));
        settle().await;
        assert!(writer.write(vec![b'e'; 1]).is_err(), "the gate is full");
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!(s.queued_writes, 3, "waiting writes included: {s:?}");
        mock.release(Handle(1));
        let w1 = w1.await.unwrap().unwrap();
        let w2 = w2.await.unwrap();
        let w3 = w3.await.unwrap().unwrap();
        assert!(matches!(w2, Err(WriteError::QueueFull { .. })), "{w2:?}");
        assert_eq!((w1.len, w3.len), (60, 60));
        settle().await;
        writer.write(vec![b'e'; 1]).expect("room now");
        settle().await;
        let mut expected = vec![b'a'; 100];
        expected.extend_from_slice(&[b'b'; 60]);
        expected.extend_from_slice(&[b'd'; 60]);
        expected.push(b'e');
        assert_eq!(mock.written(Handle(1)), expected);
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!((s.writes, s.writes_completed), (4, 4), "{s:?}");
        assert_eq!(s.writes_failed, 2, "c and the first e were refused: {s:?}");
    });
}

#[test]
fn cancelling_the_write_that_filled_the_queue_makes_it_writable_again() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let rec = Recorder::default();
        let socket = socket_with(
            &mock,
            config(|q| {
                q.high_watermark = 100;
                q.low_watermark = 50;
                q.copy_threshold = 0;
            }),
            Some(&rec),
            None,
        )
        .await;
        let writer = socket.send(GetWriter).await.unwrap();
        let a = socket.send(Write::new(vec![b'a'; 40]));
        settle().await; // A is in a held sendv
        let b_payload: Vec<Bytes> = vec![Bytes::from(vec![b'b'; 30]), Bytes::from(vec![b'B'; 40])];
        let b = socket.send(Write::new(b_payload.clone()).tag(7));
        settle().await;
        assert!(!writer.is_writable());
        assert_eq!(rec.writability(), vec![false]);
        let back = socket
            .send(CancelWrite { tag: 7 })
            .await
            .unwrap()
            .expect("B is queued");
        let back: Vec<Bytes> = back
            .into_segments()
            .into_iter()
            .map(|s| s.as_bytes().cloned().expect("memory"))
            .collect();
        assert_eq!(back, b_payload, "payload back exactly");
        assert!(matches!(b.await.unwrap(), Err(WriteError::Cancelled)));
        settle().await;
        assert_eq!(writer.queued_bytes(), 40);
        assert!(writer.is_writable(), "40 <= low 50");
        assert_eq!(rec.writability(), vec![false, true]);
        assert_eq!(
            socket.send(CancelWrite { tag: 7 }).await.unwrap(),
            None,
            "already gone"
        );
        mock.release(Handle(1));
        assert_eq!(a.await.unwrap().unwrap().len, 40);
        assert_eq!(mock.written(Handle(1)), vec![b'a'; 40]);
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!(
            (s.writes, s.writes_completed, s.writes_failed),
            (2, 1, 1),
            "{s:?}"
        );
    });
}

#[test]
fn cancel_a_write_from_a_writer_hands_back_its_file_range_and_releases_the_gate() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let socket = socket_with(&mock, SocketConfig::default(), None, None).await;
        let writer = socket.send(GetWriter).await.unwrap();
        let file = temp_file(&pattern(5000, 1));
        let range = FileRange::new(file.clone(), 10, 4000).unwrap();
        writer.write(vec![b'a'; 10]).unwrap();
        settle().await;
        let mut batch = IoBatch::new();
        batch.push(Bytes::from_static(b"hdr"));
        batch.push_file(range.clone());
        writer.write_tagged(batch, 11).unwrap();
        settle().await;
        assert_eq!(writer.queued_bytes(), 4013);
        let back = socket
            .send(CancelWrite { tag: 11 })
            .await
            .unwrap()
            .expect("queued");
        assert_eq!(back.len(), 4003);
        let segs = back.into_segments();
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].as_bytes().unwrap().as_ref(), b"hdr");
        assert_eq!(segs[1], sockactor::Segment::File(range));
        assert_eq!(writer.queued_bytes(), 10);
        mock.release(Handle(1));
        settle().await;
        assert_eq!(mock.written(Handle(1)), vec![b'a'; 10]);
    });
}

// ---------------------------------------------------------------------------------------
// 6. the Flusher: one request at a time, custom flushers, latency

/// `Flush`: "Sent by anyone else while the socket's request is out, it is taken as the
/// answer to that request: the socket may ask again before its Flusher has answered the
/// first." Nothing is lost or reordered either way.
#[test]
fn an_unasked_flush_counts_as_the_answer_to_the_request_out() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let flusher = ManualFlusher::default();
        let f = ManualFlusherActor(flusher.clone()).start();
        let socket = socket_with(
            &mock,
            SocketConfig::default(),
            None,
            Some(FlushPolicy::Deferred(f.recipient())),
        )
        .await;
        socket.do_send(Write::new(&b"one"[..]));
        settle().await;
        socket.do_send(Write::new(&b"two"[..]));
        settle().await;
        assert_eq!(flusher.count(), 1);
        assert_eq!(mock.sendv_calls(Handle(1)), 0, "nothing before the Flush");
        // an unasked Flush sends what is queued
        socket.do_send(Flush);
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"onetwo");
        assert_eq!(
            mock.sendv_calls(Handle(1)),
            1,
            "everything queued in one sendv"
        );
        socket.do_send(Write::new(&b"three"[..]));
        settle().await;
        assert_eq!(
            flusher.count(),
            2,
            "the unasked Flush answered the first request: the socket asked again"
        );
        flusher.answer_all();
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"onetwothree");
        socket.do_send(Write::new(&b"four"[..]));
        settle().await;
        assert_eq!(flusher.count(), 3);
        flusher.answer_all();
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"onetwothreefour");
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!(s.pending_writes, 3, "{s:?}");
    });
}

#[test]
fn latency_counts_from_queuing_to_the_last_byte_through_a_slow_flusher() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let f = DelayFlusher(Duration::from_millis(7)).start();
        let socket = socket_with(
            &mock,
            SocketConfig::default(),
            None,
            Some(FlushPolicy::Deferred(f.recipient())),
        )
        .await;
        let writer = socket.send(GetWriter).await.unwrap();
        let a = socket.send(Write::new(&b"hello"[..]));
        let b = writer.write_answered(&b" world"[..]);
        assert!(b.refused().is_none());
        let a = a.await.unwrap().unwrap();
        let b = b.await.unwrap();
        assert_eq!(a.latency, Duration::from_millis(7), "{a:?}");
        assert_eq!(b.latency, Duration::from_millis(7), "{b:?}");
        assert_eq!(a.max_writes_per_sendv, 2, "{a:?}");
        assert_eq!(b.max_writes_per_sendv, 2, "{b:?}");
        assert_eq!(mock.written(Handle(1)), b"hello world");
    });
}

#[test]
fn immediate_policy_requests_no_flush_and_makes_a_sendv_per_write() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = socket_with(
            &mock,
            SocketConfig::default(),
            None,
            Some(FlushPolicy::Immediate),
        )
        .await;
        let mut answers = Vec::new();
        for i in 0..4u8 {
            answers.push(socket.send(Write::new(vec![b'a' + i; 5])));
        }
        for a in answers {
            let w = a.await.unwrap().unwrap();
            assert_eq!((w.sendv_calls, w.max_writes_per_sendv), (1, 1), "{w:?}");
        }
        assert_eq!(mock.sendv_calls(Handle(1)), 4);
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!(s.pending_writes, 0, "{s:?}");
        assert_eq!(s.sendv_calls, 4, "{s:?}");
    });
}

#[test]
fn a_socket_alone_ignores_max_bytes_per_turn() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = socket_with(
            &mock,
            config(|q| {
                q.max_bytes_per_turn = 10;
                q.copy_threshold = 0;
            }),
            None,
            None,
        )
        .await;
        let mut answers = Vec::new();
        for i in 0..5u8 {
            answers.push(socket.send(Write::new(vec![b'a' + i; 100])));
        }
        for a in answers {
            a.await.unwrap().unwrap();
        }
        let log = mock.sendv_log(Handle(1));
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(log[0].offered, 500);
    });
}

// ---------------------------------------------------------------------------------------
// 7. the Writer: write_each, write_answered dropped early

#[test]
fn write_each_counts_each_write_and_refuses_all_when_full() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let socket = socket_with(
            &mock,
            config(|q| {
                q.high_watermark = 1000;
                q.low_watermark = 100;
            }),
            None,
            None,
        )
        .await;
        let writer = socket.send(GetWriter).await.unwrap();
        let writes: Vec<IoBatch> = vec![
            Bytes::from_static(b"a").into(),
            IoBatch::new(),
            Bytes::from(vec![b'b'; 600]).into(),
            Bytes::from(vec![b'c'; 600]).into(),
        ];
        writer
            .write_each(writes)
            .expect("admitted by their total on an empty queue");
        settle().await;
        assert!(!writer.is_writable());
        let refused = writer
            .write_each(vec![
                Bytes::from_static(b"x").into(),
                Bytes::from_static(b"y").into(),
            ])
            .expect_err("full");
        assert_eq!(refused.writes.len(), 2);
        assert!(matches!(refused.error, WriteError::QueueFull { .. }));
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!(s.writes, 4, "{s:?}");
        assert_eq!(s.writes_failed, 2, "{s:?}");
        mock.release(Handle(1));
        settle().await;
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!(s.writes_completed, 4, "{s:?}");
        assert_eq!(s.bytes_sent, 1201, "{s:?}");
    });
}

#[test]
fn a_dropped_write_future_still_sends_its_write_once() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = socket_with(&mock, SocketConfig::default(), None, None).await;
        let writer = socket.send(GetWriter).await.unwrap();
        drop(writer.write_answered(&b"first"[..]));
        let second = writer.write_answered(&b"-second"[..]).await.unwrap();
        assert_eq!(second.len, 7);
        assert_eq!(mock.written(Handle(1)), b"first-second");
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!((s.writes, s.writes_completed), (2, 2), "{s:?}");
    });
}

#[test]
fn a_dropped_write_future_that_fails_is_reported_to_the_subscriber() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [SendStep::Fail(std::io::ErrorKind::ConnectionReset)],
        );
        let rec = Recorder::default();
        let socket = socket_with(&mock, SocketConfig::default(), Some(&rec), None).await;
        let writer = socket.send(GetWriter).await.unwrap();
        drop(writer.write_answered(&b"lost"[..]));
        settle().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        settle().await;
        assert_eq!(
            write_failures(&rec).len(),
            1,
            "nobody waits for it any more: {:?}",
            rec.events.lock().unwrap()
        );
    });
}

// ---------------------------------------------------------------------------------------
// 8. IoBatch edge cases

#[test]
fn transport_error_kind_is_kept_for_a_failed_run() {
    // a run failure keeps the transport's error for each write
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Fail(std::io::ErrorKind::BrokenPipe)]);
        let socket = socket_with(&mock, SocketConfig::default(), None, None).await;
        let a = socket.send(Write::new(&b"abc"[..]));
        let b = socket.send(Write::new(&b"def"[..]));
        for (r, len) in [(a.await.unwrap(), 3), (b.await.unwrap(), 3)] {
            match r {
                Err(WriteError::Transport {
                    bytes_sent,
                    len: l,
                    source,
                }) => {
                    assert_eq!((bytes_sent, l), (0, len));
                    assert!(
                        matches!(&source, TransportError::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
                            || format!("{source:?}").contains("BrokenPipe"),
                        "{source:?}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// 9. telemetry of writes not offered; cancels after a would-block; sendfile in place

#[test]
fn a_write_not_offered_in_a_sendv_is_not_charged_for_it() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::WouldBlock(Duration::from_millis(2)),
                SendStep::Accept(100),
            ],
        );
        let socket = socket_with(
            &mock,
            config(|q| {
                q.max_segments = 1;
                q.copy_threshold = 0;
            }),
            None,
            None,
        )
        .await;
        let a = socket.send(Write::new(vec![b'a'; 100]));
        let b = socket.send(Write::new(vec![b'b'; 100]));
        let a = a.await.unwrap().unwrap();
        let b = b.await.unwrap().unwrap();
        let log = mock.sendv_log(Handle(1));
        assert_eq!(log.len(), 3, "{log:?}");
        assert!(log.iter().all(|r| r.segments == 1), "{log:?}");
        assert_eq!(
            (a.sendv_calls, a.would_blocks, a.max_writes_per_sendv),
            (1, 1, 1),
            "{a:?}"
        );
        assert_eq!(
            (b.sendv_calls, b.would_blocks, b.max_writes_per_sendv),
            (1, 0, 1),
            "{b:?}"
        );
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!((s.sendv_calls, s.would_blocks), (3, 1), "{s:?}");
    });
}

#[test]
fn a_write_behind_a_partly_sent_one_in_a_would_blocked_sendv_can_be_cancelled() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(10), SendStep::Hold]);
        let socket = socket_with(&mock, config(|q| q.copy_threshold = 0), None, None).await;
        let a = socket.send(Write::new(vec![b'a'; 100]));
        let b = socket.send(Write::new(vec![b'b'; 50]).tag(5));
        settle().await;
        // sendv 1 took 10 of A; sendv 2 (A's rest and B) would block
        let back = socket.send(CancelWrite { tag: 5 }).await.unwrap();
        assert_eq!(back.map(|b| b.len()), Some(50), "B has not started");
        assert!(matches!(b.await.unwrap(), Err(WriteError::Cancelled)));
        mock.release(Handle(1));
        let a = a.await.unwrap().unwrap();
        assert_eq!(a.len, 100);
        assert_eq!(mock.written(Handle(1)), vec![b'a'; 100]);
        let s = socket.send(GetStats).await.unwrap();
        assert_eq!(
            (s.writes, s.writes_completed, s.writes_failed),
            (2, 1, 1),
            "{s:?}"
        );
    });
}

#[actix::test]
async fn in_place_a_mixed_write_reports_sendfile_and_writev_calls_truthfully() {
    let (addr, task) = crate::support::sink().await;
    let socket = Socket::builder().connect(addr).await.expect("connect");
    let content = pattern(300_000, 5);
    let file = temp_file(&content);
    let mut batch = IoBatch::new();
    batch.push(Bytes::from_static(b"HEAD"));
    batch.push_file(FileRange::new(file.clone(), 0, 200_000).unwrap());
    batch.push(Bytes::from_static(b"MID"));
    batch.push_file(FileRange::new(file, 250_000, 50_000).unwrap());
    let mut expected = b"HEAD".to_vec();
    expected.extend_from_slice(&content[..200_000]);
    expected.extend_from_slice(b"MID");
    expected.extend_from_slice(&content[250_000..]);
    let w = socket.send(Write::new(batch)).await.unwrap().unwrap();
    assert_eq!(w.len, expected.len());
    let s = socket.send(GetStats).await.unwrap();
    assert!(s.sendfile_calls >= 2, "{s:?}");
    assert_eq!(s.file_bytes_read, 0, "{s:?}");
    assert_eq!(s.bytes_sent as usize, expected.len(), "{s:?}");
    assert!(
        s.sendv_calls >= s.sendfile_calls + 2,
        "writev for HEAD and MID too: {s:?}"
    );
    assert_eq!(
        u64::from(w.sendv_calls),
        s.sendv_calls,
        "every call of the socket carried this write's bytes: {w:?} {s:?}"
    );
    assert_eq!(u64::from(w.would_blocks), s.would_blocks, "{w:?} {s:?}");
    socket.do_send(sockactor::messages::Close::Graceful);
    let got = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(got == expected, "bytes differ");
}
