//! From the eleventh round of the independent review, an audit of the documentation:
//! each test checks one concrete promise of the rustdoc, the README or docs/ at its
//! edges (defaults, watermark and limit boundaries, calls after and racing a close,
//! counters, error variants and the byte counts they carry), across sockets, writers,
//! datagram sockets, listeners, the reconnecting client and the filters; over the mock
//! transport in paused time, or loopback where the kernel is the point.

use std::io;
use std::time::Duration;

use crate::support::{
    channel, channel_subscriber, drain, mock_peer, mock_socket, run_paused, settle, watermarks,
    Recorder,
};
use actix::prelude::*;
use bytes::Bytes;
use sockactor::messages::{
    CancelWrite, Close, DatagramEventKind, Flush, GetDatagramInfo, GetDatagramStats, GetInfo,
    GetStats, GetWriter, Handle, PauseReading, ResumeReading, SendDatagram, SocketEventKind,
    SubscribeWritability, WritabilityChanged, Write,
};
use sockactor::{
    DatagramConfig, DatagramError, DatagramSocket, FlushPolicy, MockTransport, QueueConfig,
    ReadLimits, SendStep, Socket, SocketConfig, SocketError, WriteError,
};

/// Interest notices seen, with their user data.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(sockactor::messages::Interest, Option<u32>)>>>;

fn config_with(f: impl FnOnce(&mut SocketConfig)) -> SocketConfig {
    let mut c = SocketConfig::default();
    f(&mut c);
    c
}

async fn socket_with(mock: &MockTransport, config: SocketConfig) -> Addr<Socket> {
    Socket::builder()
        .functions(mock.functions())
        .config(config)
        .connect(mock_peer())
        .await
        .expect("connect")
}

// ---------------------------------------------------------------------------------------
// Defaults

#[test]
fn documented_defaults_hold() {
    let s = SocketConfig::default();
    assert_eq!(s.max_frame_bytes, 8 * 1024 * 1024, "README: 8 MiB");
    assert!(!s.close_on_eof, "README: close_on_eof default false");
    assert!(s.close_on_decode_error, "default true");
    assert_eq!(s.close_linger, Duration::ZERO);
    assert_eq!(s.drain_timeout, None);
    assert!(!s.limits.any(), "PeerLimits all off by default");
    let r = ReadLimits::default();
    assert_eq!(
        (r.max_deliveries, r.max_bytes),
        (64, 1024 * 1024),
        "README: 64 and 1 MiB"
    );
    let q = QueueConfig::default();
    assert_eq!(q.copy_threshold, 512, "README: 512 by default");
    assert_eq!(q.file_read_chunk, 64 * 1024, "README: 64 KiB by default");
    assert_eq!(q.max_segments, 1024);
    let c = sockactor::ClientConfig::default();
    assert_eq!(c.connect_timeout, Some(Duration::from_secs(10)));
    assert_eq!(c.max_attempts, None);
    assert_eq!(c.max_queued_bytes, 4 * 1024 * 1024);
    assert_eq!(c.max_queued_writes, 1024);
    assert!(c.reconnect_on_eof);
    assert_eq!(c.unsent, sockactor::UnsentWrites::Retain);
    assert_eq!(c.backoff.jitter, sockactor::Jitter::Equal);
    assert_eq!(
        sockactor::FramedWriter::<tokio_util::codec::LinesCodec>::BUFFERED,
        64 * 1024
    );
}

// ---------------------------------------------------------------------------------------
// Watermarks

/// QueueConfig::high_watermark: "When queued (unsent) bytes reach this, the queue becomes
/// unwritable ... The write that crosses the mark is still accepted".
#[test]
fn the_write_that_reaches_the_high_watermark_is_accepted_and_the_next_refused() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let socket = socket_with(&mock, watermarks(10, 4)).await;
        let a = socket.send(Write::new(vec![b'a'; 9]));
        let b = socket.send(Write::new(vec![b'b'; 1]));
        let c = socket.send(Write::new(vec![b'c'; 2]));
        let (a, b, c) = (actix::spawn(a), actix::spawn(b), actix::spawn(c));
        settle().await;
        assert!(c.is_finished(), "the third write is refused at once");
        match c.await.unwrap().unwrap() {
            Err(WriteError::QueueFull {
                queued,
                high_watermark,
                payload,
            }) => {
                assert_eq!((queued, high_watermark, payload.len()), (10, 10, 2));
            }
            other => panic!("expected QueueFull, got {other:?}"),
        }
        mock.release(Handle(1));
        assert_eq!(a.await.unwrap().unwrap().unwrap().len, 9);
        assert_eq!(b.await.unwrap().unwrap().unwrap().len, 1);
        assert_eq!(
            mock.written(Handle(1)),
            [vec![b'a'; 9], vec![b'b']].concat()
        );
    });
}

/// QueueConfig::low_watermark: "Queued bytes at or below which an unwritable queue
/// becomes writable again." WritabilityChanged: once per crossing.
#[test]
fn draining_exactly_to_the_low_watermark_makes_the_socket_writable_again() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(6), SendStep::Hold]);
        let rec = Recorder::default();
        let actor = rec.start();
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(watermarks(10, 4))
            .writability_subscriber(actor.clone().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        socket.do_send(Write::new(vec![1u8; 10]));
        settle().await;
        assert_eq!(
            rec.writability(),
            vec![false, true],
            "10 queued, then 4 = low"
        );
        let writer = socket.send(GetWriter).await.unwrap();
        assert!(writer.is_writable());
        assert_eq!(writer.queued_bytes(), 4);
    });
}

#[test]
fn draining_to_one_byte_above_the_low_watermark_keeps_the_socket_unwritable() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(5), SendStep::Hold]);
        let rec = Recorder::default();
        let actor = rec.start();
        let socket = socket_with(&mock, watermarks(10, 4)).await;
        socket
            .send(SubscribeWritability(actor.clone().recipient()))
            .await
            .unwrap();
        socket.do_send(Write::new(vec![1u8; 10]));
        settle().await;
        assert_eq!(rec.writability(), vec![false]);
        let writer = socket.send(GetWriter).await.unwrap();
        assert!(!writer.is_writable());
        assert_eq!(writer.queued_bytes(), 5);
        match writer.write(&b"x"[..]) {
            Err(WriteError::QueueFull { queued, .. }) => assert_eq!(queued, 5),
            other => panic!("{other:?}"),
        }
        mock.release(Handle(1));
        settle().await;
        assert_eq!(rec.writability(), vec![false, true]);
        assert_eq!(writer.queued_bytes(), 0);
    });
}

/// SocketStats::writes_failed: "Writes that ended in an error (including refused ones)";
/// writes: "Writes accepted into the queue".
#[test]
fn refused_writes_count_as_failed_not_as_accepted_however_sent() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let socket = socket_with(&mock, watermarks(4, 0)).await;
        let writer = socket.send(GetWriter).await.unwrap();
        writer.write(&b"abcd"[..]).expect("admitted");
        settle().await;
        // One refused by message, one by the writer, two by write_each.
        let by_message = socket.send(Write::new(&b"e"[..])).await.unwrap();
        assert!(matches!(by_message, Err(WriteError::QueueFull { .. })));
        assert!(matches!(
            writer.write(&b"f"[..]),
            Err(WriteError::QueueFull { .. })
        ));
        let refused = writer
            .write_each(vec![
                Bytes::from_static(b"g").into(),
                Bytes::from_static(b"h").into(),
            ])
            .expect_err("refused");
        assert_eq!(refused.writes.len(), 2);
        match &refused.error {
            WriteError::QueueFull { payload, .. } => assert!(payload.is_empty()),
            other => panic!("{other:?}"),
        }
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(
            stats.writes, 1,
            "only the admitted write was accepted: {stats:?}"
        );
        assert_eq!(
            stats.writes_failed, 4,
            "each refused write counts: {stats:?}"
        );
        assert_eq!(stats.queued_writes, 1);
        assert_eq!(stats.queued_bytes, 4);
    });
}

// ---------------------------------------------------------------------------------------
// Cancel

/// CancelWrite: "a write whose only sendv was answered with would-block has not started".
#[test]
fn a_write_whose_only_sendv_would_block_can_be_cancelled() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::from_millis(10))]);
        let socket = mock_socket(&mock).await;
        let w = actix::spawn(socket.send(Write::new(vec![7u8; 1000]).tag(7)));
        settle().await;
        assert_eq!(mock.sendv_calls(Handle(1)), 1, "offered once, would block");
        let back = socket.send(CancelWrite { tag: 7 }).await.unwrap();
        assert_eq!(back.map(|b| b.len()), Some(1000), "payload handed back");
        assert!(matches!(
            w.await.unwrap().unwrap(),
            Err(WriteError::Cancelled)
        ));
        assert_eq!(
            socket
                .send(CancelWrite { tag: 7 })
                .await
                .unwrap()
                .map(|b| b.len()),
            None
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(mock.written(Handle(1)).is_empty(), "nothing of it went out");
    });
}

#[test]
fn a_started_write_cannot_be_cancelled_and_still_completes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(2), SendStep::Hold]);
        let socket = mock_socket(&mock).await;
        let w = actix::spawn(socket.send(Write::new(&b"hello"[..]).tag(3)));
        settle().await;
        assert!(socket.send(CancelWrite { tag: 3 }).await.unwrap().is_none());
        mock.release(Handle(1));
        let done = w.await.unwrap().unwrap().expect("written");
        assert_eq!(done.len, 5);
        assert_eq!(mock.written(Handle(1)), b"hello");
    });
}

// ---------------------------------------------------------------------------------------
// Close

/// Close::Abort: "every queued write is answered with WriteError::Aborted" ... "saying
/// how many of its bytes went out".
#[test]
fn an_abort_answers_each_write_with_how_far_it_got() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(3), SendStep::Hold]);
        let socket = mock_socket(&mock).await;
        let a = actix::spawn(socket.send(Write::new(&b"hello world"[..])));
        let b = actix::spawn(socket.send(Write::new(vec![0u8; 600])));
        settle().await;
        socket.do_send(Close::Abort);
        let a = a.await.unwrap().unwrap();
        let b = b.await.unwrap().unwrap();
        assert!(
            matches!(
                a,
                Err(WriteError::Aborted {
                    bytes_sent: 3,
                    len: 11
                })
            ),
            "{a:?}"
        );
        assert!(
            matches!(
                b,
                Err(WriteError::Aborted {
                    bytes_sent: 0,
                    len: 600
                })
            ),
            "{b:?}"
        );
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        let info = socket.send(GetInfo).await.unwrap();
        assert!(!info.open);
    });
}

/// Close::Graceful: "send everything queued (writes waiting for room included)".
#[test]
fn a_graceful_close_sends_writes_waiting_for_room_too() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let socket = socket_with(&mock, watermarks(4, 0)).await;
        let a = actix::spawn(socket.send(Write::new(&b"abcd"[..])));
        settle().await;
        let b = actix::spawn(socket.send(Write::new(&b"efg"[..]).wait_when_full()));
        settle().await;
        assert!(!b.is_finished(), "b waits for room");
        socket.do_send(Close::Graceful);
        let late = socket.send(Write::new(&b"late"[..])).await.unwrap();
        assert!(
            matches!(
                late,
                Err(WriteError::Closed {
                    bytes_sent: 0,
                    len: 4
                })
            ),
            "{late:?}"
        );
        mock.release(Handle(1));
        assert_eq!(a.await.unwrap().unwrap().unwrap().len, 4);
        assert_eq!(b.await.unwrap().unwrap().unwrap().len, 3);
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"abcdefg");
        assert!(mock.is_closed(Handle(1)));
    });
}

/// SocketConfig::max_waiting_writes: "Most writes that may wait for room at once; past it
/// they are refused like other writes."
#[test]
fn waiting_writes_past_max_waiting_writes_are_refused_queue_full() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let mut config = watermarks(4, 0);
        config.max_waiting_writes = 1;
        let socket = socket_with(&mock, config).await;
        let _a = actix::spawn(socket.send(Write::new(&b"abcd"[..])));
        settle().await;
        let b = actix::spawn(socket.send(Write::new(&b"b"[..]).wait_when_full()));
        let c = actix::spawn(socket.send(Write::new(&b"c"[..]).wait_when_full()));
        settle().await;
        assert!(!b.is_finished());
        assert!(c.is_finished(), "past max_waiting_writes: refused");
        assert!(matches!(
            c.await.unwrap().unwrap(),
            Err(WriteError::QueueFull { .. })
        ));
        mock.release(Handle(1));
        assert!(b.await.unwrap().unwrap().is_ok());
    });
}

/// SocketConfig::drain_timeout: "a graceful close that has not sent everything by then
/// turns into an abort: the writes left are answered Aborted with how far each got".
#[test]
fn a_drain_timeout_turns_the_graceful_close_into_an_abort_with_counts() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(2), SendStep::Hold]);
        let config = SocketConfig {
            drain_timeout: Some(Duration::from_secs(1)),
            ..SocketConfig::default()
        };
        let socket = socket_with(&mock, config).await;
        let a = actix::spawn(socket.send(Write::new(&b"hello"[..])));
        let b = actix::spawn(socket.send(Write::new(vec![9u8; 700])));
        settle().await;
        let start = tokio::time::Instant::now();
        socket.do_send(Close::Graceful);
        let a = a.await.unwrap().unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert!(
            matches!(
                a,
                Err(WriteError::Aborted {
                    bytes_sent: 2,
                    len: 5
                })
            ),
            "{a:?}"
        );
        let b = b.await.unwrap().unwrap();
        assert!(
            matches!(
                b,
                Err(WriteError::Aborted {
                    bytes_sent: 0,
                    len: 700
                })
            ),
            "{b:?}"
        );
        settle().await;
        assert!(mock.is_closed(Handle(1)));
    });
}

// ---------------------------------------------------------------------------------------
// Info, stats, flush

#[test]
fn get_info_reports_peer_handle_and_the_message_path_on_a_mock() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = mock_socket(&mock).await;
        let info = socket.send(GetInfo).await.unwrap();
        assert_eq!(info.peer, Some(mock_peer().into()));
        assert_eq!(info.handle, Handle(1));
        assert!(info.open);
        assert!(!info.in_place, "a mock is reached by message");
        assert!(info.layers.is_empty());
        socket.send(Close::Graceful).await.unwrap();
        settle().await;
        assert!(!socket.send(GetInfo).await.unwrap().open);
    });
}

/// Flush: "Harmless when nothing is queued."
#[test]
fn a_flush_with_nothing_queued_sends_nothing() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = mock_socket(&mock).await;
        socket.send(Flush).await.unwrap();
        socket.send(Flush).await.unwrap();
        settle().await;
        assert_eq!(mock.sendv_calls(Handle(1)), 0);
        let w = socket.send(Write::new(&b"x"[..])).await.unwrap();
        assert!(w.is_ok());
    });
}

/// README: "a burst of 64 writes leaves in one sendv"; SocketStats::pending_writes:
/// "Flushes requested from the Flusher".
#[test]
fn a_burst_asks_the_flusher_once_and_leaves_in_one_sendv() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = mock_socket(&mock).await;
        for i in 0..64u8 {
            socket.do_send(Write::new(vec![i; 64]));
        }
        let last = socket
            .send(Write::new(vec![64u8; 64]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(mock.sendv_calls(Handle(1)), 1);
        assert_eq!(last.max_writes_per_sendv, 65);
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(stats.pending_writes, 1, "{stats:?}");
        assert_eq!(stats.writes_completed, 65);
        assert_eq!(stats.bytes_sent, 65 * 64);
        assert_eq!(stats.sendv_calls, 1);
    });
}

/// FlushPolicy::Immediate: "on a transport reached by message ... each write is its own
/// sendv".
#[test]
fn immediate_writes_are_one_sendv_each_on_a_message_transport() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = Socket::builder()
            .functions(mock.functions())
            .flush_policy(FlushPolicy::Immediate)
            .connect(mock_peer())
            .await
            .unwrap();
        for i in 0..5u8 {
            socket.do_send(Write::new(vec![i; 10]));
        }
        socket
            .send(Write::new(vec![5u8; 10]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(mock.sendv_calls(Handle(1)), 6);
        assert_eq!(socket.send(GetStats).await.unwrap().pending_writes, 0);
    });
}

/// Written: "sendv_calls ... would_blocks".
#[test]
fn written_counts_its_sendv_calls_and_would_blocks() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(2),
                SendStep::WouldBlock(Duration::from_millis(3)),
                SendStep::Accept(2),
                SendStep::WouldBlock(Duration::from_millis(3)),
            ],
        );
        let socket = mock_socket(&mock).await;
        let w = socket
            .send(Write::new(&b"abcdefg"[..]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((w.len, w.sendv_calls, w.would_blocks), (7, 3, 2));
        assert_eq!(w.latency, Duration::from_millis(6));
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(stats.would_blocks, 2);
        assert_eq!(
            stats.sendv_calls, 5,
            "every call made, would-blocks included"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Writer

/// Writer::writable: "fails with why the socket no longer takes writes"; is_writable:
/// "Whether a write would be admitted now".
#[test]
fn a_writer_of_a_closed_socket_is_not_writable_and_its_wait_fails() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = mock_socket(&mock).await;
        let writer = socket.send(GetWriter).await.unwrap();
        assert!(writer.is_writable());
        writer.close();
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        assert!(
            !writer.is_writable(),
            "a write would be refused: not writable"
        );
        let waited = tokio::time::timeout(Duration::from_secs(1), writer.writable()).await;
        assert!(
            matches!(waited, Ok(Err(WriteError::Closed { .. }))),
            "{waited:?}"
        );
        let r = writer.write_when_ready(&b"x"[..]).await;
        assert!(
            matches!(
                r,
                Err(WriteError::Closed {
                    bytes_sent: 0,
                    len: 1
                })
            ),
            "{r:?}"
        );
        let f = writer.write_answered(&b"yy"[..]);
        assert!(matches!(
            f.refused(),
            Some(WriteError::Closed {
                bytes_sent: 0,
                len: 2
            })
        ));
    });
}

/// Writer::write_each: "Admitted together, by their total"; an empty list.
#[test]
fn write_each_of_nothing_is_fine_and_each_write_is_answered_on_its_own() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = mock_socket(&mock).await;
        let writer = socket.send(GetWriter).await.unwrap();
        writer.write_each(Vec::new()).expect("nothing to refuse");
        writer
            .write_each(vec![
                Bytes::from_static(b"one").into(),
                Bytes::new().into(),
                Bytes::from_static(b"three").into(),
            ])
            .expect("admitted");
        let last = writer.write_answered(&b"!"[..]).await.expect("written");
        assert_eq!(last.len, 1);
        assert_eq!(mock.written(Handle(1)), b"onethree!");
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(
            stats.writes, 4,
            "three writes of write_each and one more: {stats:?}"
        );
        assert_eq!(stats.writes_completed, 4);
        assert_eq!(writer.queued_bytes(), 0);
    });
}

/// WriteFuture: "Dropping it does not cancel the write."
#[test]
fn dropping_a_write_answered_future_still_writes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = mock_socket(&mock).await;
        let writer = socket.send(GetWriter).await.unwrap();
        drop(writer.write_answered(&b"dropped"[..]));
        writer.write_answered(&b"!"[..]).await.unwrap();
        assert_eq!(mock.written(Handle(1)), b"dropped!");
    });
}

// ---------------------------------------------------------------------------------------
// Reading

/// SocketBuilder::subscriber: "Without a subscriber the socket does not read."
#[test]
fn a_socket_without_subscriber_does_not_read() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.push_inbound(Handle(1), &b"hello"[..]);
        let socket = mock_socket(&mock).await;
        settle().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(socket.send(GetStats).await.unwrap().bytes_received, 0);
    });
}

/// PauseReading: "Idempotent". ResumeReading: idempotent.
#[test]
fn pausing_twice_then_resuming_once_reads_again() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut rx) = channel_subscriber();
        let socket = crate::support::subscribed_mock_socket(&mock, sub).await;
        socket.send(PauseReading).await.unwrap();
        socket.send(PauseReading).await.unwrap();
        settle().await;
        mock.push_inbound(Handle(1), &b"abc"[..]);
        settle().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(drain(&mut rx).is_empty(), "paused: nothing read");
        socket.send(ResumeReading).await.unwrap();
        socket.send(ResumeReading).await.unwrap();
        settle().await;
        let got: Vec<u8> = drain(&mut rx)
            .into_iter()
            .filter_map(|k| match k {
                SocketEventKind::Received(b) => Some(b.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(got, b"abc");
    });
}

/// ReadLimits::max_deliveries: "Most deliveries unacknowledged at once (at least 1)".
#[test]
fn a_read_window_of_zero_deliveries_counts_as_one() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut rx) = channel_subscriber();
        let config = config_with(|c| {
            c.read_limits = ReadLimits {
                max_deliveries: 0,
                max_bytes: 0,
            }
        });
        let _socket = Socket::builder()
            .functions(mock.functions())
            .config(config)
            .subscriber(sub)
            .connect(mock_peer())
            .await
            .unwrap();
        mock.push_inbound(Handle(1), &b"abc"[..]);
        settle().await;
        mock.push_inbound(Handle(1), &b"def"[..]);
        settle().await;
        let got: Vec<u8> = drain(&mut rx)
            .into_iter()
            .filter_map(|k| match k {
                SocketEventKind::Received(b) => Some(b.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(got, b"abcdef");
    });
}

/// SocketConfig::close_on_eof default: the socket stays half-open and writable after Eof.
#[test]
fn after_the_peers_eof_the_socket_stays_open_for_writes_by_default() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut rx) = channel_subscriber();
        let socket = crate::support::subscribed_mock_socket(&mock, sub).await;
        mock.push_eof(Handle(1));
        settle().await;
        let kinds = drain(&mut rx);
        assert!(
            matches!(kinds.as_slice(), [SocketEventKind::Eof]),
            "{kinds:?}"
        );
        assert!(socket.send(GetInfo).await.unwrap().open);
        socket
            .send(Write::new(&b"reply"[..]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(mock.written(Handle(1)), b"reply");
        assert!(!mock.is_closed(Handle(1)));
    });
}

#[test]
fn with_close_on_eof_closed_follows_eof() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::from_millis(5))]);
        let (sub, mut rx) = channel_subscriber();
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config_with(|c| c.close_on_eof = true))
            .subscriber(sub)
            .connect(mock_peer())
            .await
            .unwrap();
        let w = actix::spawn(socket.send(Write::new(&b"queued"[..])));
        settle().await;
        mock.push_eof(Handle(1));
        assert!(
            w.await.unwrap().unwrap().is_ok(),
            "the queued write goes out first"
        );
        settle().await;
        let kinds = drain(&mut rx);
        assert!(
            matches!(
                kinds.as_slice(),
                [
                    SocketEventKind::Eof,
                    SocketEventKind::Closed { cause: None }
                ]
            ),
            "{kinds:?}"
        );
        assert_eq!(mock.written(Handle(1)), b"queued");
    });
}

// ---------------------------------------------------------------------------------------
// Connect errors

#[test]
fn connect_failures_are_sorted_as_documented() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let cases = [
            ("127.0.0.1:1", io::ErrorKind::ConnectionRefused),
            ("127.0.0.1:2", io::ErrorKind::HostUnreachable),
            ("127.0.0.1:3", io::ErrorKind::NetworkUnreachable),
            ("127.0.0.1:4", io::ErrorKind::PermissionDenied),
        ];
        for (addr, kind) in cases {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            mock.fail_connect(addr, kind);
        }
        let mut results = Vec::new();
        for (addr, _) in cases {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            let r = Socket::builder()
                .functions(mock.functions())
                .connect(addr)
                .await;
            results.push(r.expect_err("fails"));
        }
        assert!(
            matches!(results[0], SocketError::Refused(_)),
            "{:?}",
            results[0]
        );
        assert!(
            matches!(results[1], SocketError::Unreachable(_)),
            "{:?}",
            results[1]
        );
        assert!(
            matches!(results[2], SocketError::Unreachable(_)),
            "{:?}",
            results[2]
        );
        assert!(
            matches!(results[3], SocketError::Connect(_)),
            "{:?}",
            results[3]
        );
        settle().await;
        for h in mock.handles() {
            assert!(mock.is_closed(h), "a failed connect leaves no handle: {h}");
        }
    });
}

/// SocketBuilder::connect_timeout: "Gives up a connect that has not succeeded after
/// timeout, with SocketError::TimedOut."
#[test]
fn a_connect_timeout_fails_with_timed_out_carrying_the_limit() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.delay_connect(mock_peer(), Duration::from_secs(60));
        let start = tokio::time::Instant::now();
        let r = Socket::builder()
            .functions(mock.functions())
            .connect_timeout(Duration::from_millis(250))
            .connect(mock_peer())
            .await;
        assert!(
            matches!(r, Err(SocketError::TimedOut(d)) if d == Duration::from_millis(250)),
            "{r:?}"
        );
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        settle().await;
        assert!(mock.is_closed(Handle(1)));
    });
}

#[test]
fn socket_buffers_reach_the_transport_at_open() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let buffers = sockactor::SocketBuffers {
            send: Some(12345),
            recv: None,
        };
        let _s = socket_with(&mock, config_with(|c| c.buffers = buffers)).await;
        assert_eq!(mock.buffers(Handle(1)), Some(buffers));
    });
}

// ---------------------------------------------------------------------------------------
// Datagrams

async fn bound_datagram(
    mock: &MockTransport,
    config: DatagramConfig,
    policy: FlushPolicy,
) -> Addr<DatagramSocket> {
    DatagramSocket::builder()
        .functions(mock.functions())
        .config(config)
        .flush_policy(policy)
        .bind(crate::support::local())
        .await
        .expect("bind")
        .0
}

/// DatagramError::NoDestination: "The payload, handed back."
#[test]
fn a_datagram_with_no_destination_on_an_unconnected_socket_comes_back() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = bound_datagram(&mock, DatagramConfig::default(), FlushPolicy::Immediate).await;
        let r = socket.send(SendDatagram::new(&b"lost?"[..])).await.unwrap();
        match r {
            Err(DatagramError::NoDestination { payload }) => assert_eq!(payload.len(), 5),
            other => panic!("{other:?}"),
        }
        let stats = socket.send(GetDatagramStats).await.unwrap();
        assert_eq!(stats.send_failed, 1, "refused counts as failed: {stats:?}");
        assert_eq!(stats.sent, 0);
    });
}

/// DatagramError::Partial: "The transport took only the first sent bytes".
#[test]
fn a_partly_taken_datagram_is_partial_and_the_rest_is_never_sent() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(2)]);
        let socket = bound_datagram(&mock, DatagramConfig::default(), FlushPolicy::Immediate).await;
        let to: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let r = socket
            .send(SendDatagram::new(&b"hello"[..]).to(to))
            .await
            .unwrap();
        assert!(
            matches!(r, Err(DatagramError::Partial { sent: 2, len: 5 })),
            "{r:?}"
        );
        let r2 = socket
            .send(SendDatagram::new(&b"next"[..]).to(to))
            .await
            .unwrap();
        assert_eq!(r2.unwrap().len, 4);
        let sent = mock.datagrams(Handle(1));
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(&sent[1].bytes[..], b"next");
        let stats = socket.send(GetDatagramStats).await.unwrap();
        assert_eq!((stats.sent, stats.send_failed), (1, 1), "{stats:?}");
    });
}

/// SendDatagram::is_empty: "an empty datagram is still a datagram".
#[test]
fn an_empty_datagram_is_sent_as_a_datagram() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = bound_datagram(&mock, DatagramConfig::default(), FlushPolicy::Immediate).await;
        let to: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let r = socket
            .send(SendDatagram::new(Bytes::new()).to(to))
            .await
            .unwrap();
        assert_eq!(r.expect("sent").len, 0);
        assert_eq!(mock.datagrams(Handle(1)).len(), 1);
        assert_eq!(socket.send(GetDatagramStats).await.unwrap().sent, 1);
    });
}

/// DatagramConfig::max_queued: "Most datagrams queued at once, not yet offered to the
/// transport; past it, datagrams are refused".
#[test]
fn datagrams_past_max_queued_are_refused_with_the_payload() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let config = DatagramConfig {
            max_queued: 2,
            ..DatagramConfig::default()
        };
        let socket = bound_datagram(&mock, config, FlushPolicy::Immediate).await;
        let to: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut answers = Vec::new();
        for i in 0..4u8 {
            answers.push(actix::spawn(
                socket.send(SendDatagram::new(vec![i; 3]).to(to)),
            ));
            settle().await;
        }
        assert!(!answers[0].is_finished(), "offered, held");
        assert!(!answers[1].is_finished());
        assert!(!answers[2].is_finished());
        assert!(answers[3].is_finished(), "the fourth is past max_queued");
        let stats = socket.send(GetDatagramStats).await.unwrap();
        assert_eq!(stats.queued, 2, "{stats:?}");
        let fourth = answers.pop().unwrap().await.unwrap().unwrap();
        match fourth {
            Err(DatagramError::QueueFull {
                queued,
                queued_bytes,
                payload,
            }) => assert_eq!((queued, queued_bytes, payload.len()), (2, 6, 3)),
            other => panic!("{other:?}"),
        }
        mock.release(Handle(1));
        for a in answers {
            assert_eq!(a.await.unwrap().unwrap().unwrap().len, 3);
        }
    });
}

/// DatagramConfig::max_queued_bytes: "a single datagram larger than this is still taken
/// when the queue is empty".
#[test]
fn a_datagram_larger_than_max_queued_bytes_is_taken_when_the_queue_is_empty() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let config = DatagramConfig {
            max_queued_bytes: 4,
            ..DatagramConfig::default()
        };
        let socket = bound_datagram(&mock, config, FlushPolicy::Immediate).await;
        let to: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = actix::spawn(socket.send(SendDatagram::new(vec![1u8; 2]).to(to)));
        settle().await; // offered, held: the queue is empty again
        let b = actix::spawn(socket.send(SendDatagram::new(vec![2u8; 10]).to(to)));
        settle().await;
        assert!(!b.is_finished(), "taken: the queue was empty");
        let c = socket
            .send(SendDatagram::new(vec![3u8; 1]).to(to))
            .await
            .unwrap();
        assert!(
            matches!(
                c,
                Err(DatagramError::QueueFull {
                    queued: 1,
                    queued_bytes: 10,
                    ..
                })
            ),
            "{c:?}"
        );
        mock.release(Handle(1));
        assert!(a.await.unwrap().unwrap().is_ok());
        assert_eq!(b.await.unwrap().unwrap().unwrap().len, 10);
    });
}

/// DatagramEventKind::Received: truncated when longer than max_datagram_size; stats count
/// it.
#[test]
fn a_datagram_longer_than_the_maximum_is_flagged_truncated_and_counted() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut rx) = channel();
        let config = DatagramConfig {
            max_datagram_size: 4,
            ..DatagramConfig::default()
        };
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(config)
            .subscriber(sub)
            .bind(crate::support::local())
            .await
            .unwrap();
        let from: std::net::SocketAddr = "127.0.0.1:6000".parse().unwrap();
        mock.push_datagram(Handle(1), &b"abcd"[..], from);
        mock.push_datagram(Handle(1), &b"abcdefgh"[..], from);
        let (a, f, t) = crate::support::next_datagram(&mut rx).await;
        assert_eq!((a.as_slice(), t), (&b"abcd"[..], false));
        assert_eq!(f, Some(from.into()));
        let (b, _, t) = crate::support::next_datagram(&mut rx).await;
        assert_eq!((b.as_slice(), t), (&b"abcd"[..], true));
        let stats = socket.send(GetDatagramStats).await.unwrap();
        assert_eq!(
            (stats.received, stats.truncated, stats.bytes_received),
            (2, 1, 8)
        );
    });
}

#[test]
fn a_closed_datagram_socket_refuses_and_says_so_in_its_info() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut rx) = channel();
        let (socket, local) = DatagramSocket::builder()
            .functions(mock.functions())
            .subscriber(sub)
            .bind(crate::support::local())
            .await
            .unwrap();
        let info = socket.send(GetDatagramInfo).await.unwrap();
        assert!(info.open);
        assert_eq!(info.local, Some(local.clone()));
        assert_eq!(info.peer, None);
        socket.send(Close::Graceful).await.unwrap();
        settle().await;
        let to: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let r = socket
            .send(SendDatagram::new(&b"x"[..]).to(to))
            .await
            .unwrap();
        assert!(matches!(r, Err(DatagramError::Closed)), "{r:?}");
        assert!(!socket.send(GetDatagramInfo).await.unwrap().open);
        let closed = drain(&mut rx)
            .into_iter()
            .filter(|e| matches!(e.kind, DatagramEventKind::Closed { cause: None }))
            .count();
        assert_eq!(closed, 1);
        assert!(mock.is_closed(Handle(1)));
    });
}

#[allow(dead_code)]
fn _unused(_: WritabilityChanged) {}

// ---------------------------------------------------------------------------------------
// Framing

use sockactor::messages::Frame;
use sockactor::DecodeError;
use tokio_util::codec::LinesCodec;

async fn framed_socket(
    mock: &MockTransport,
    config: SocketConfig,
) -> (
    Addr<Socket>,
    tokio::sync::mpsc::UnboundedReceiver<Frame<String>>,
    tokio::sync::mpsc::UnboundedReceiver<SocketEventKind>,
) {
    let (frames, frames_rx) = channel::<Frame<String>>();
    let (sub, events_rx) = channel_subscriber();
    let socket = Socket::builder()
        .functions(mock.functions())
        .config(config)
        .framed(LinesCodec::new(), frames)
        .subscriber(sub)
        .connect(mock_peer())
        .await
        .unwrap();
    (socket, frames_rx, events_rx)
}

/// SocketConfig::max_frame_bytes: "most stream bytes one frame may take (its length
/// prefix and delimiter included)": a frame of exactly that many bytes passes.
#[test]
fn a_frame_of_exactly_max_frame_bytes_passes_trickled_or_whole() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let config = config_with(|c| c.max_frame_bytes = 6);
        let (_socket, mut frames, mut events) = framed_socket(&mock, config).await;
        mock.push_inbound(Handle(1), &b"hello\n"[..]);
        settle().await;
        for piece in [&b"wor"[..], &b"ld"[..], &b"\n"[..]] {
            mock.push_inbound(Handle(1), piece);
            settle().await;
        }
        let got: Vec<String> = drain(&mut frames).into_iter().map(|f| f.frame).collect();
        assert_eq!(got, vec!["hello".to_string(), "world".to_string()]);
        assert!(drain(&mut events)
            .iter()
            .all(|e| !matches!(e, SocketEventKind::DecodeFailed(_))),);
    });
}

#[test]
fn a_frame_one_byte_over_max_frame_bytes_is_frame_too_long_with_its_counts() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let config = config_with(|c| c.max_frame_bytes = 6);
        let (_socket, mut frames, mut events) = framed_socket(&mock, config).await;
        mock.push_inbound(Handle(1), &b"hello!\n"[..]);
        settle().await;
        assert!(drain(&mut frames).is_empty());
        let evs = drain(&mut events);
        let failed: Vec<_> = evs
            .iter()
            .filter_map(|e| match e {
                SocketEventKind::DecodeFailed(d) => Some(d.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 1, "{evs:?}");
        match &failed[0] {
            DecodeError::FrameTooLong { buffered, limit } => {
                assert_eq!(*limit, 6);
                assert!(*buffered >= 7 || *buffered == 6, "{buffered}");
                assert!(failed[0].to_string().contains("max_frame_bytes"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(evs.last(), Some(SocketEventKind::Closed { .. })),
            "closes gracefully by default: {evs:?}"
        );
    });
}

/// SocketConfig::close_on_decode_error = false: "reading stops and the subscriber ...
/// can still write (say, an error reply) and then send Close".
#[test]
fn without_close_on_decode_error_the_socket_still_writes_after_a_bad_frame() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let config = config_with(|c| {
            c.max_frame_bytes = 4;
            c.close_on_decode_error = false;
        });
        let (socket, mut frames, mut events) = framed_socket(&mock, config).await;
        mock.push_inbound(Handle(1), &b"toolong\nok\n"[..]);
        settle().await;
        assert!(
            drain(&mut frames).is_empty(),
            "no frames after the rejection"
        );
        let evs = drain(&mut events);
        assert!(
            matches!(
                evs.as_slice(),
                [SocketEventKind::DecodeFailed(
                    DecodeError::FrameTooLong { .. }
                )]
            ),
            "{evs:?}"
        );
        assert!(socket.send(GetInfo).await.unwrap().open);
        socket
            .send(Write::new(&b"-ERR\n"[..]))
            .await
            .unwrap()
            .unwrap();
        socket.send(Close::Graceful).await.unwrap();
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"-ERR\n");
        assert!(mock.is_closed(Handle(1)));
        let evs = drain(&mut events);
        assert!(
            matches!(evs.as_slice(), [SocketEventKind::Closed { cause: None }]),
            "{evs:?}"
        );
    });
}

/// PeerLimits::frame_timeout: "the longest a frame may take to arrive, from the read that
/// brought its first byte" -> DecodeError::FrameTimedOut { after, buffered }.
#[test]
fn a_trickled_frame_past_frame_timeout_is_frame_timed_out_with_what_was_buffered() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let config = config_with(|c| c.limits.frame_timeout = Some(Duration::from_millis(100)));
        let (_socket, _frames, mut events) = framed_socket(&mock, config).await;
        let start = tokio::time::Instant::now();
        mock.push_inbound(Handle(1), &b"ab"[..]);
        settle().await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        mock.push_inbound(Handle(1), &b"c"[..]);
        let e = loop {
            match events.recv().await.unwrap() {
                SocketEventKind::DecodeFailed(e) => break e,
                _ => continue,
            }
        };
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        assert!(
            matches!(e, DecodeError::FrameTimedOut { after, buffered: 3 } if after == Duration::from_millis(100)),
            "{e:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Peer limits

/// PeerLimits::read_idle: "Idle with IdleKind::Read, and again after each further period
/// of silence."
#[test]
fn read_idle_repeats_after_each_period_and_resets_on_data() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut rx) = channel_subscriber();
        let config = config_with(|c| c.limits.read_idle = Some(Duration::from_millis(100)));
        let _socket = Socket::builder()
            .functions(mock.functions())
            .config(config)
            .subscriber(sub)
            .connect(mock_peer())
            .await
            .unwrap();
        let start = tokio::time::Instant::now();
        let mut at = Vec::new();
        while at.len() < 2 {
            if let SocketEventKind::Idle { kind, after } = rx.recv().await.unwrap() {
                assert_eq!(kind, sockactor::IdleKind::Read);
                assert_eq!(after, Duration::from_millis(100));
                at.push(start.elapsed());
            }
        }
        assert_eq!(
            at,
            vec![Duration::from_millis(100), Duration::from_millis(200)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // t = 250
        mock.push_inbound(Handle(1), &b"x"[..]);
        loop {
            if let SocketEventKind::Idle { .. } = rx.recv().await.unwrap() {
                break;
            }
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(350),
            "counted from the read"
        );
    });
}

/// PeerLimits::read_idle: "An idle period is at least 1 ms (zero counts as 1 ms)."
#[test]
fn a_zero_read_idle_counts_as_one_millisecond() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut rx) = channel_subscriber();
        let config = config_with(|c| c.limits.read_idle = Some(Duration::ZERO));
        let _socket = Socket::builder()
            .functions(mock.functions())
            .config(config)
            .subscriber(sub)
            .connect(mock_peer())
            .await
            .unwrap();
        let start = tokio::time::Instant::now();
        let mut n = 0;
        while n < 3 {
            if let SocketEventKind::Idle { .. } = rx.recv().await.unwrap() {
                n += 1;
            }
        }
        assert_eq!(start.elapsed(), Duration::from_millis(3));
    });
}

/// PeerLimits::close_when_idle: "Close gracefully at the first Idle notice (the writes
/// already queued still go out".
#[test]
fn close_when_idle_closes_after_the_first_notice_and_sends_what_was_queued() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [SendStep::WouldBlock(Duration::from_millis(500))],
        );
        let (sub, mut rx) = channel_subscriber();
        let config = config_with(|c| {
            c.limits.idle = Some(Duration::from_millis(100));
            c.limits.close_when_idle = true;
        });
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config)
            .subscriber(sub)
            .connect(mock_peer())
            .await
            .unwrap();
        let w = actix::spawn(socket.send(Write::new(&b"late"[..])));
        assert!(
            w.await.unwrap().unwrap().is_ok(),
            "the queued write still goes out"
        );
        settle().await;
        let evs = drain(&mut rx);
        let idles = evs
            .iter()
            .filter(|e| matches!(e, SocketEventKind::Idle { .. }))
            .count();
        assert_eq!(idles, 1, "{evs:?}");
        assert!(
            matches!(evs.last(), Some(SocketEventKind::Closed { cause: None })),
            "{evs:?}"
        );
        assert_eq!(mock.written(Handle(1)), b"late");
    });
}

/// PeerLimits::send_timeout: "the subscriber hears SendTimedOut, every unfinished write
/// is answered WriteError::TimedOut with how far it got, and the socket closes."
#[test]
fn a_send_timeout_reports_queued_bytes_and_answers_each_write_with_how_far_it_got() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(3), SendStep::Hold]);
        let (sub, mut rx) = channel_subscriber();
        let limit = Duration::from_millis(200);
        let config = config_with(|c| c.limits.send_timeout = Some(limit));
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config)
            .subscriber(sub)
            .connect(mock_peer())
            .await
            .unwrap();
        let a = actix::spawn(socket.send(Write::new(&b"hello"[..])));
        let b = actix::spawn(socket.send(Write::new(vec![1u8; 600])));
        let start = tokio::time::Instant::now();
        let a = a.await.unwrap().unwrap();
        assert_eq!(start.elapsed(), limit);
        assert!(
            matches!(a, Err(WriteError::TimedOut { bytes_sent: 3, len: 5, after }) if after == limit),
            "{a:?}"
        );
        let b = b.await.unwrap().unwrap();
        assert!(
            matches!(
                b,
                Err(WriteError::TimedOut {
                    bytes_sent: 0,
                    len: 600,
                    ..
                })
            ),
            "{b:?}"
        );
        settle().await;
        let evs = drain(&mut rx);
        let timed: Vec<_> = evs
            .iter()
            .filter_map(|e| match e {
                SocketEventKind::SendTimedOut { after, queued } => Some((*after, *queued)),
                _ => None,
            })
            .collect();
        assert_eq!(timed, vec![(limit, 602)], "{evs:?}");
        assert!(
            matches!(evs.last(), Some(SocketEventKind::Closed { .. })),
            "{evs:?}"
        );
        assert!(mock.is_closed(Handle(1)));
    });
}

// ---------------------------------------------------------------------------------------
// Listener

use sockactor::messages::{GetLocalAddr, ListenerEvent, StopListening};
use sockactor::Listener;

#[test]
fn a_listener_reports_its_address_backlog_and_closes_last_on_stop() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (events, mut heard) = channel::<ListenerEvent>();
        let (listener, local) = Listener::builder()
            .functions(mock.functions())
            .subscriber(events)
            .bind(crate::support::local())
            .await
            .unwrap();
        assert_eq!(listener.send(GetLocalAddr).await.unwrap(), local);
        assert_eq!(
            mock.listening(Handle(1)),
            Some(1024),
            "default backlog 1024"
        );
        let peer: std::net::SocketAddr = "10.0.0.1:5000".parse().unwrap();
        mock.connect_inbound(Handle(1), peer).unwrap();
        settle().await;
        listener.do_send(StopListening);
        settle().await;
        let evs = drain(&mut heard);
        assert_eq!(evs.len(), 2, "{evs:?}");
        assert!(matches!(&evs[0], ListenerEvent::Accepted { peer: p, .. } if *p == peer.into()));
        assert!(matches!(evs[1], ListenerEvent::Closed));
        assert!(mock.is_closed(Handle(1)));
    });
}

/// ListenerBuilder::max_accepts_per_turn: "(default 64, at least 1)"; accept_backoff:
/// a failed accept is retried after the back-off and does not stop the listener.
#[test]
fn a_failed_accept_is_reported_and_retried_after_the_backoff() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (events, mut heard) = channel::<ListenerEvent>();
        let (_listener, _) = Listener::builder()
            .functions(mock.functions())
            .subscriber(events)
            .max_accepts_per_turn(0)
            .accept_backoff(Duration::from_millis(300))
            .bind(crate::support::local())
            .await
            .unwrap();
        settle().await;
        mock.fail_accept(Handle(1), io::ErrorKind::ConnectionAborted);
        let peer: std::net::SocketAddr = "10.0.0.1:5000".parse().unwrap();
        mock.connect_inbound(Handle(1), peer).unwrap();
        mock.connect_inbound(Handle(1), peer).unwrap();
        settle().await;
        let evs = drain(&mut heard);
        assert!(
            matches!(evs.as_slice(), [ListenerEvent::AcceptFailed { .. }]),
            "{evs:?}"
        );
        tokio::time::sleep(Duration::from_millis(299)).await;
        assert!(drain(&mut heard).is_empty(), "waits out the back-off");
        tokio::time::sleep(Duration::from_millis(2)).await;
        settle().await;
        let evs = drain(&mut heard);
        assert_eq!(
            evs.iter()
                .filter(|e| matches!(e, ListenerEvent::Accepted { .. }))
                .count(),
            2,
            "{evs:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Reconnecting client

use crate::support::client::{client_events, ConnectGate};
use sockactor::messages::{ClientEvent, ClientState, GetClientState, Reconnect};
use sockactor::ReconnectingClient;

/// Reconnect: "Answered true if that started a connect, false if the client had not given
/// up (it is connected ...)". GetClientState.
#[test]
fn reconnect_is_answered_false_while_connected() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(sub)
            .start();
        let first = events.next().await;
        assert!(
            matches!(first, ClientEvent::Connected { attempt: 1, .. }),
            "{first:?}"
        );
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Connected {
                peer: mock_peer().into()
            }
        );
        assert!(!client.send(Reconnect).await.unwrap());
    });
}

/// ClientConfig::max_attempts: "Some(0) counts as Some(1)"; GaveUp; writes then refused
/// with WriteError::GaveUp; Reconnect starts over at attempt 1.
#[test]
fn max_attempts_zero_gives_up_after_one_attempt_and_reconnect_starts_over() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        gate.refuse_all(true);
        let (sub, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .subscriber(sub)
            .max_attempts(Some(0))
            .start();
        let e = events.next().await;
        assert!(
            matches!(e, ClientEvent::GaveUp { attempts: 1, .. }),
            "{e:?}"
        );
        assert_eq!(gate.calls().len(), 1);
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::GaveUp { attempts: 1 }
        );
        let w = client.send(Write::new(&b"abc"[..])).await.unwrap();
        assert!(
            matches!(
                w,
                Err(WriteError::GaveUp {
                    len: 3,
                    attempts: 1,
                    ..
                })
            ),
            "{w:?}"
        );
        gate.refuse_all(false);
        assert!(client.send(Reconnect).await.unwrap(), "started a connect");
        let e = events.next().await;
        assert!(
            matches!(e, ClientEvent::Connected { attempt: 1, .. }),
            "{e:?}"
        );
    });
}

/// ClientConfig::max_queued_bytes: "refuses new writes with QueueFull once it holds this
/// many bytes"; max_queued_writes: "or this many writes".
#[test]
fn a_disconnected_clients_queue_refuses_at_its_limits_with_the_payload() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        gate.refuse_all(true);
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .queue_limits(10, 3)
            .start();
        let a = actix::spawn(client.send(Write::new(vec![1u8; 6])));
        let b = actix::spawn(client.send(Write::new(vec![2u8; 4])));
        settle().await;
        let c = client.send(Write::new(vec![3u8; 1])).await.unwrap();
        assert!(
            matches!(&c, Err(WriteError::QueueFull { payload, .. }) if payload.len() == 1),
            "holds 10 bytes = max_queued_bytes: {c:?}"
        );
        assert!(!a.is_finished() && !b.is_finished());
        gate.refuse_all(false);
        assert!(a.await.unwrap().unwrap().is_ok());
        assert!(b.await.unwrap().unwrap().is_ok());
    });
}

#[test]
fn a_disconnected_clients_queue_refuses_past_max_queued_writes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        gate.refuse_all(true);
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .queue_limits(1000, 2)
            .start();
        let a = actix::spawn(client.send(Write::new(vec![1u8; 1])));
        let b = actix::spawn(client.send(Write::new(vec![2u8; 1])));
        settle().await;
        let c = client.send(Write::new(vec![3u8; 1])).await.unwrap();
        assert!(matches!(c, Err(WriteError::QueueFull { .. })), "{c:?}");
        gate.refuse_all(false);
        assert!(a.await.unwrap().unwrap().is_ok());
        assert!(b.await.unwrap().unwrap().is_ok());
    });
}

/// ReconnectingClient: "A Close ends it for good: Graceful ... (while disconnected, held
/// writes are answered with WriteError::Closed) ... later writes get WriteError::Closed."
#[test]
fn closing_a_disconnected_client_answers_held_writes_closed_and_ends_it() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        gate.refuse_all(true);
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .start();
        let a = actix::spawn(client.send(Write::new(vec![1u8; 5])));
        settle().await;
        client.send(Close::Graceful).await.unwrap();
        let a = a.await.unwrap().unwrap();
        assert!(
            matches!(
                a,
                Err(WriteError::Closed {
                    bytes_sent: 0,
                    len: 5
                })
            ),
            "{a:?}"
        );
        let later = client.send(Write::new(vec![1u8; 2])).await.unwrap();
        assert!(
            matches!(
                later,
                Err(WriteError::Closed {
                    bytes_sent: 0,
                    len: 2
                })
            ),
            "{later:?}"
        );
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Closed
        );
        assert!(!client.send(Reconnect).await.unwrap(), "closed for good");
        let calls = gate.calls().len();
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(
            gate.calls().len(),
            calls,
            "no more attempts after the close"
        );
    });
}

// ---------------------------------------------------------------------------------------
// More write-path edges

/// CancelWrite: a write waiting for room has not started; it is cancelled with its
/// payload. SocketStats::queued_writes: "Writes queued right now (waiting for room
/// included)."
#[test]
fn a_write_waiting_for_room_counts_as_queued_and_can_be_cancelled() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let socket = socket_with(&mock, watermarks(4, 0)).await;
        let a = actix::spawn(socket.send(Write::new(&b"abcd"[..])));
        settle().await;
        let b = actix::spawn(socket.send(Write::new(&b"efg"[..]).tag(9).wait_when_full()));
        settle().await;
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(stats.queued_writes, 2, "{stats:?}");
        let back = socket.send(CancelWrite { tag: 9 }).await.unwrap();
        assert_eq!(back.map(|p| p.len()), Some(3));
        assert!(matches!(
            b.await.unwrap().unwrap(),
            Err(WriteError::Cancelled)
        ));
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(stats.queued_writes, 1, "{stats:?}");
        mock.release(Handle(1));
        assert!(a.await.unwrap().unwrap().is_ok());
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"abcd");
    });
}

/// QueueConfig::copy_threshold: "writes with a tag (they can be cancelled, which hands
/// the payload back) ... stay zero-copy": a small tagged write is cancellable with its
/// payload intact.
#[test]
fn a_small_tagged_write_behind_a_would_block_is_cancelled_whole() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let socket = mock_socket(&mock).await;
        let a = actix::spawn(socket.send(Write::new(&b"first"[..])));
        settle().await;
        let b = actix::spawn(socket.send(Write::new(&b"second"[..]).tag(1)));
        let c = actix::spawn(socket.send(Write::new(&b"third"[..])));
        settle().await;
        let back = socket
            .send(CancelWrite { tag: 1 })
            .await
            .unwrap()
            .expect("queued");
        let mut bytes = Vec::new();
        for seg in back.segments() {
            if let sockactor::Segment::Bytes(b) = seg {
                bytes.extend_from_slice(b);
            }
        }
        assert_eq!(bytes, b"second");
        mock.release(Handle(1));
        assert!(a.await.unwrap().unwrap().is_ok());
        assert!(matches!(
            b.await.unwrap().unwrap(),
            Err(WriteError::Cancelled)
        ));
        assert!(c.await.unwrap().unwrap().is_ok());
        assert_eq!(mock.written(Handle(1)), b"firstthird");
    });
}

/// Watermarks: a zero-length write "adds nothing" ... README: each write gets exactly
/// one answer. With a high watermark of 0 a zero-length write must not make the socket
/// unwritable.
#[test]
fn a_zero_length_write_at_a_zero_high_watermark_is_answered_and_blocks_nothing() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = socket_with(&mock, watermarks(0, 0)).await;
        let writer = socket.send(GetWriter).await.unwrap();
        let w = socket
            .send(Write::new(Bytes::new()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.len, 0);
        assert!(writer.is_writable());
        writer.write_answered(Bytes::new()).await.expect("answered");
        let w = writer
            .write_answered(&b"abc"[..])
            .await
            .expect("crosses, accepted");
        assert_eq!(w.len, 3);
        assert!(writer.is_writable(), "drained again");
        assert_eq!(mock.written(Handle(1)), b"abc");
    });
}

/// SocketStats::unacked_deliveries / unacked_bytes: "Deliveries ... the subscriber holds
/// unacknowledged right now"; ReadLimits: reading stops while the window is full.
#[test]
fn held_permits_show_in_the_stats_and_stop_reading_until_dropped() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut rx) = channel::<sockactor::messages::SocketEvent>();
        let config = config_with(|c| {
            c.read_limits = ReadLimits {
                max_deliveries: 2,
                max_bytes: 1 << 20,
            }
        });
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config)
            .subscriber(sub)
            .connect(mock_peer())
            .await
            .unwrap();
        let mut held = Vec::new();
        for chunk in [&b"one"[..], &b"two"[..], &b"three"[..]] {
            mock.push_inbound(Handle(1), chunk);
            settle().await;
            held.extend(drain(&mut rx));
        }
        assert_eq!(held.len(), 2, "the window holds two deliveries");
        let permits: Vec<usize> = held
            .iter()
            .map(|e| e.permit.as_ref().expect("a permit").bytes())
            .collect();
        assert_eq!(permits, vec![3, 3]);
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(
            (stats.unacked_deliveries, stats.unacked_bytes),
            (2, 6),
            "{stats:?}"
        );
        assert_eq!(stats.bytes_received, 6, "the third chunk is not read yet");
        held.clear();
        settle().await;
        let more = drain(&mut rx);
        assert_eq!(more.len(), 1);
        assert!(matches!(&more[0].kind, SocketEventKind::Received(b) if &b[..] == b"three"));
        drop(more);
        settle().await;
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(
            (stats.unacked_deliveries, stats.unacked_bytes),
            (0, 0),
            "{stats:?}"
        );
        assert_eq!(stats.bytes_received, 11);
    });
}

/// SocketConfig::read_chunk: "Most bytes asked of one recvfrom."
#[test]
fn no_delivery_is_larger_than_read_chunk() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let rec = Recorder::default();
        let actor = rec.start();
        let _socket = Socket::builder()
            .functions(mock.functions())
            .config(config_with(|c| c.read_chunk = 7))
            .subscriber(actor.recipient())
            .connect(mock_peer())
            .await
            .unwrap();
        mock.push_inbound(Handle(1), vec![5u8; 30]);
        settle().await;
        let lens = rec.delivery_lens();
        assert_eq!(lens.iter().sum::<usize>(), 30);
        assert!(lens.iter().all(|&l| l <= 7), "{lens:?}");
    });
}

// A transport that claims more than it was offered, or reads more than asked for.
struct Liar;
impl Actor for Liar {
    type Context = Context<Self>;
}
impl Handler<sockactor::messages::SendV> for Liar {
    type Result = Result<sockactor::messages::Sent, sockactor::TransportError>;
    fn handle(&mut self, msg: sockactor::messages::SendV, _: &mut Context<Self>) -> Self::Result {
        Ok(sockactor::messages::Sent::Accepted(msg.len() + 1))
    }
}
impl Handler<sockactor::messages::RecvFrom> for Liar {
    type Result = Result<sockactor::messages::Received, sockactor::TransportError>;
    fn handle(
        &mut self,
        msg: sockactor::messages::RecvFrom,
        _: &mut Context<Self>,
    ) -> Self::Result {
        Ok(sockactor::messages::Received::Data {
            bytes: Bytes::from(vec![0u8; msg.max_len + 1]),
            from: None,
        })
    }
}

/// TransportError::OverAccepted: "A sendv answered that it accepted more bytes than it
/// was offered: a broken transport."
#[test]
fn a_transport_that_over_accepts_fails_the_write_with_over_accepted() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let liar = Liar.start();
        let functions = mock.functions().with_sendv(liar.recipient());
        let socket = Socket::builder()
            .functions(functions)
            .connect(mock_peer())
            .await
            .unwrap();
        let w = socket.send(Write::new(&b"abc"[..])).await.unwrap();
        assert!(
            matches!(
                &w,
                Err(WriteError::Transport {
                    source: sockactor::TransportError::OverAccepted {
                        accepted: 4,
                        offered: 3
                    },
                    ..
                })
            ),
            "{w:?}"
        );
    });
}

/// TransportError::OverRead: "A recvfrom answered more bytes than it was asked for".
/// SocketEventKind::ReadFailed: "Reading failed; the socket closes."
#[test]
fn a_transport_that_over_reads_fails_reading_with_over_read_and_closes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let liar = Liar.start();
        let functions = mock.functions().with_recvfrom(liar.recipient());
        let (sub, mut rx) = channel_subscriber();
        let _socket = Socket::builder()
            .functions(functions)
            .config(config_with(|c| c.read_chunk = 16))
            .subscriber(sub)
            .connect(mock_peer())
            .await
            .unwrap();
        settle().await;
        let evs = drain(&mut rx);
        assert!(
            matches!(
                evs.first(),
                Some(SocketEventKind::ReadFailed(
                    sockactor::TransportError::OverRead {
                        read: 17,
                        asked: 16
                    }
                ))
            ),
            "{evs:?}"
        );
        assert!(
            matches!(evs.last(), Some(SocketEventKind::Closed { .. })),
            "{evs:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Registry, interest

use sockactor::messages::{AssignUserData, Interest, InterestRefused, SocketInterest};
use sockactor::{InterestGroup, Registry, SocketState};

#[test]
fn a_registry_entry_follows_the_sockets_state_and_goes_with_its_actor() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let registry = Registry::new();
        let socket = Socket::builder()
            .functions(mock.functions())
            .registry(&registry)
            .connect(mock_peer())
            .await
            .unwrap();
        let id = socket.send(GetInfo).await.unwrap().id;
        let entry = registry.get(id).expect("registered");
        assert_eq!(entry.state(), SocketState::Open);
        assert_eq!(entry.peer(), Some(&mock_peer().into()));
        entry.writer().write(&b"via registry"[..]).unwrap();
        settle().await;
        socket.do_send(Close::Graceful);
        settle().await;
        assert_eq!(registry.get(id).unwrap().state(), SocketState::Draining);
        mock.release(Handle(1));
        settle().await;
        let entry = registry.get(id);
        assert!(
            entry
                .as_ref()
                .is_none_or(|e| e.state() == SocketState::Closed),
            "closed or gone"
        );
        if let Some(e) = &entry {
            assert_eq!(e.stats().bytes_sent, 12);
        }
        drop(entry);
        drop(socket);
        settle().await;
        assert!(
            registry.get(id).is_none(),
            "the entry goes when the actor ends"
        );
        assert!(registry.is_empty());
        assert_eq!(mock.written(Handle(1)), b"via registry");
    });
}

struct Refuser {
    seen: Seen,
    refuse_out: bool,
}
impl Actor for Refuser {
    type Context = Context<Self>;
}
impl Handler<SocketInterest> for Refuser {
    type Result = Result<(), InterestRefused>;
    fn handle(&mut self, msg: SocketInterest, _: &mut Context<Self>) -> Self::Result {
        let data = msg
            .user_data
            .as_ref()
            .and_then(|d| d.downcast_ref::<u32>().copied());
        self.seen.lock().unwrap().push((msg.interest, data));
        if self.refuse_out && msg.interest.is_out() {
            return Err(InterestRefused("no".into()));
        }
        Ok(())
    }
}

/// InterestGroup: "when the subscriber refuses a notification (answers Err), every
/// socket of the group is aborted"; SocketInterest: the socket then aborts, "every queued
/// write answered with WriteError::Aborted".
#[test]
fn a_refused_interest_notice_aborts_every_socket_of_the_group() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // Handle 1 would block (interest Out, refused); handle 2 has a slow write out.
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::from_secs(5))]);
        mock.script_sendv(
            Handle(2),
            [SendStep::Slow {
                bytes: 100,
                after: Duration::from_secs(1),
            }],
        );
        let seen = std::sync::Arc::default();
        let sub = Refuser {
            seen: std::sync::Arc::clone(&seen),
            refuse_out: false,
        }
        .start();
        let group = InterestGroup::new(sub.recipient());
        let refusing = Refuser {
            seen: std::sync::Arc::default(),
            refuse_out: true,
        }
        .start();
        let group_refusing = InterestGroup::new(refusing.recipient());
        let a = Socket::builder()
            .functions(mock.functions())
            .interest_group(&group_refusing)
            .connect(mock_peer())
            .await
            .unwrap();
        let b = Socket::builder()
            .functions(mock.functions())
            .interest_group(&group_refusing)
            .connect(mock_peer())
            .await
            .unwrap();
        let c = Socket::builder()
            .functions(mock.functions())
            .interest_group(&group)
            .connect(mock_peer())
            .await
            .unwrap();
        assert_eq!(group_refusing.len(), 2);
        let bw = actix::spawn(b.send(Write::new(vec![1u8; 600])));
        settle().await;
        let aw = a.send(Write::new(vec![2u8; 700])).await.unwrap();
        assert!(
            matches!(
                aw,
                Err(WriteError::Aborted {
                    bytes_sent: 0,
                    len: 700
                })
            ),
            "{aw:?}"
        );
        let bw = bw.await.unwrap().unwrap();
        assert!(matches!(bw, Err(WriteError::Aborted { .. })), "{bw:?}");
        assert!(
            c.send(GetInfo).await.unwrap().open,
            "another group is untouched"
        );
        settle().await;
        assert!(mock.is_closed(Handle(1)) && mock.is_closed(Handle(2)));
        assert!(!mock.is_closed(Handle(3)));
    });
}

/// SocketInterest: "only when that changes", "once with Interest::Remove when it
/// closes", each with its user data (AssignUserData changes it).
#[test]
fn interest_notices_carry_the_latest_user_data_and_end_with_one_remove() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::from_millis(10))]);
        let seen: Seen = std::sync::Arc::default();
        let sub = Refuser {
            seen: seen.clone(),
            refuse_out: false,
        }
        .start();
        let socket = Socket::builder()
            .functions(mock.functions())
            .interest_subscriber(sub.recipient())
            .user_data(std::sync::Arc::new(1u32))
            .connect(mock_peer())
            .await
            .unwrap();
        settle().await;
        socket
            .send(AssignUserData(Some(std::sync::Arc::new(2u32))))
            .await
            .unwrap();
        socket.send(Write::new(&b"x"[..])).await.unwrap().unwrap();
        socket.send(Close::Graceful).await.unwrap();
        settle().await;
        let seen = seen.lock().unwrap().clone();
        for pair in seen.windows(2) {
            assert_ne!(pair[0].0, pair[1].0, "reported only on change: {seen:?}");
        }
        assert_eq!(
            seen.iter().filter(|(i, _)| *i == Interest::Remove).count(),
            1,
            "{seen:?}"
        );
        assert_eq!(seen.last().map(|s| s.0), Some(Interest::Remove), "{seen:?}");
        assert!(seen.iter().any(|(i, _)| i.is_out()), "{seen:?}");
        let out = seen.iter().find(|(i, _)| i.is_out()).unwrap();
        assert_eq!(out.1, Some(2), "the user data assigned last: {seen:?}");
    });
}

// ---------------------------------------------------------------------------------------
// Datagram writer and reads

use sockactor::messages::GetDatagramWriter;

/// DatagramWriter / SubscribeWritability on a datagram socket: "false when the gate is
/// full (the next datagram would be refused) ... true when what the writers admitted
/// drained to half the limits".
#[test]
fn a_datagram_writers_room_is_announced_full_and_back_at_half() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let config = DatagramConfig {
            max_queued: 4,
            ..DatagramConfig::default()
        };
        let socket = bound_datagram(&mock, config, FlushPolicy::Immediate).await;
        let (sub, mut notes) = channel::<WritabilityChanged>();
        socket.send(SubscribeWritability(sub)).await.unwrap();
        let writer = socket.send(GetDatagramWriter).await.unwrap();
        let to: sockactor::messages::Address = "127.0.0.1:5000"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into();
        for i in 0..4u8 {
            writer
                .send_to(vec![i; 2], Some(to.clone()))
                .expect("admitted");
        }
        assert_eq!(writer.queued(), 4);
        match writer.send_to(vec![9u8; 2], Some(to.clone())) {
            Err(DatagramError::QueueFull { payload, .. }) => assert_eq!(payload.len(), 2),
            other => panic!("{other:?}"),
        }
        settle().await;
        let n: Vec<bool> = drain(&mut notes).into_iter().map(|n| n.writable).collect();
        assert_eq!(n, vec![false]);
        mock.release(Handle(1));
        settle().await;
        let n: Vec<bool> = drain(&mut notes).into_iter().map(|n| n.writable).collect();
        assert_eq!(n, vec![true]);
        assert_eq!(writer.queued(), 0);
        assert_eq!(mock.datagrams(Handle(1)).len(), 4);
        let stats = socket.send(GetDatagramStats).await.unwrap();
        assert_eq!(
            (stats.sent, stats.send_failed),
            (4, 1),
            "the refusal counts: {stats:?}"
        );
    });
}

/// DatagramWriter: "A datagram that fails later ... is reported to the socket's
/// subscriber as SendFailed".
#[test]
fn a_datagram_writers_datagram_with_no_destination_is_reported_send_failed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut rx) = channel();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .subscriber(sub)
            .bind(crate::support::local())
            .await
            .unwrap();
        let writer = socket.send(GetDatagramWriter).await.unwrap();
        writer.send(&b"nowhere"[..]).expect("admitted");
        settle().await;
        let evs = drain(&mut rx);
        assert!(
            evs.iter().any(|e| matches!(
                &e.kind,
                DatagramEventKind::SendFailed { tag: None, error: DatagramError::NoDestination { payload } } if payload.len() == 7
            )),
            "{evs:?}"
        );
        assert_eq!(writer.queued(), 0);
        socket.send(Close::Graceful).await.unwrap();
        settle().await;
        let r = writer.send_to(&b"x"[..], None);
        assert!(matches!(r, Err(DatagramError::Closed)), "{r:?}");
        let w = tokio::time::timeout(Duration::from_secs(1), writer.writable(1)).await;
        assert!(matches!(w, Ok(Err(DatagramError::Closed))), "{w:?}");
    });
}

/// DatagramEventKind::ReadFailed: "A receive failed with an input/output error ...; the
/// socket goes on reading."
#[test]
fn a_datagram_read_error_is_reported_and_reading_goes_on() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut rx) = channel();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .subscriber(sub)
            .bind(crate::support::local())
            .await
            .unwrap();
        let from: std::net::SocketAddr = "127.0.0.1:6000".parse().unwrap();
        mock.push_read_error(Handle(1), io::ErrorKind::ConnectionRefused);
        mock.push_datagram(Handle(1), &b"after"[..], from);
        settle().await;
        let evs = drain(&mut rx);
        assert!(
            matches!(
                evs.first().map(|e| &e.kind),
                Some(DatagramEventKind::ReadFailed(_))
            ),
            "{evs:?}"
        );
        assert!(
            evs.iter().any(|e| matches!(&e.kind, DatagramEventKind::Received { bytes, .. } if &bytes[..] == b"after")),
            "{evs:?}"
        );
        assert!(socket.send(GetDatagramInfo).await.unwrap().open);
    });
}

/// DatagramSocket: "abort: they are answered with DatagramError::Aborted".
#[test]
fn aborting_a_datagram_socket_answers_queued_datagrams_aborted() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let socket = bound_datagram(&mock, DatagramConfig::default(), FlushPolicy::Immediate).await;
        let to: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = actix::spawn(socket.send(SendDatagram::new(&b"one"[..]).to(to)));
        settle().await;
        let b = actix::spawn(socket.send(SendDatagram::new(&b"two"[..]).to(to)));
        settle().await;
        socket.do_send(Close::Abort);
        let b = b.await.unwrap().unwrap();
        assert!(matches!(b, Err(DatagramError::Aborted)), "{b:?}");
        mock.release(Handle(1));
        let a = tokio::time::timeout(Duration::from_secs(20), a)
            .await
            .unwrap();
        let _ = a; // the one in flight is answered, whatever its fate
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        let stats = socket.send(GetDatagramStats).await.unwrap();
        assert_eq!(stats.queued, 0);
    });
}

// ---------------------------------------------------------------------------------------
// Filters' small promises

#[test]
fn a_token_bucket_starts_full_and_its_zero_settings_count_as_one() {
    let b = sockactor::filters::TokenBucket::new(1000, 64);
    assert_eq!(b.available(), 64, "It starts full.");
    assert_eq!((b.rate(), b.burst()), (1000, 64));
    let z = sockactor::filters::TokenBucket::new(0, 0);
    assert_eq!((z.rate(), z.burst()), (1, 1), "(at least 1)");
    assert_eq!(z.available(), 1);
}

#[test]
fn fault_probabilities_are_clamped_and_nan_is_never() {
    use sockactor::filters::Faults;
    assert!(!Faults::default().injects_resets());
    assert!(
        !Faults::default().reset(f64::NAN).injects_resets(),
        "NaN is never"
    );
    assert!(
        !Faults::default().reset(-1.0).injects_resets(),
        "clamped to 0"
    );
    assert!(
        Faults::default().reset(7.0).injects_resets(),
        "clamped to 1"
    );
    assert!(Faults::default().read_reset(0.5).injects_resets());
    assert!(!Faults::default().read_reset(f64::NAN).injects_resets());
}

/// Throttle::per_socket: "`rate` bytes per second, up to `burst` bytes at once ... It
/// starts full."
#[test]
fn a_throttled_socket_sends_the_burst_at_once_and_the_rest_at_the_rate() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let functions = sockactor::filters::Throttle::per_socket(1000, 100).wrap(mock.functions());
        let socket = Socket::builder()
            .functions(functions)
            .connect(mock_peer())
            .await
            .unwrap();
        let start = tokio::time::Instant::now();
        let w = socket
            .send(Write::new(vec![1u8; 100]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.len, 100);
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst goes at once");
        socket
            .send(Write::new(vec![2u8; 500]))
            .await
            .unwrap()
            .unwrap();
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(500) && took <= Duration::from_millis(510),
            "500 bytes at 1000 B/s: {took:?}"
        );
        assert_eq!(mock.written(Handle(1)).len(), 600);
    });
}

// ---------------------------------------------------------------------------------------
// FramedWriter and FrameStream

use futures_util::SinkExt;
use sockactor::{FrameError, FramedWriteError};

/// FramedWriter as a Sink: "a run of small items costs one mailbox message per buffer,
/// not per item"; poll_close "flushes, then closes the socket gracefully".
#[test]
fn a_sink_run_of_small_items_is_one_write_and_close_closes_the_socket() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (mut tx, _rx) = Socket::builder()
            .functions(mock.functions())
            .connect_framed(mock_peer(), LinesCodec::new())
            .await
            .unwrap();
        for i in 0..10 {
            tx.feed(format!("line {i}")).await.unwrap();
        }
        SinkExt::<String>::flush(&mut tx).await.unwrap();
        settle().await;
        let expected: String = (0..10).map(|i| format!("line {i}\n")).collect();
        assert_eq!(mock.written(Handle(1)), expected.as_bytes());
        let socket = tx.writer().clone();
        let _ = socket;
        SinkExt::<String>::close(&mut tx).await.unwrap();
        settle().await;
        assert!(mock.is_closed(Handle(1)), "poll_close closes the socket");
    });
}

#[test]
fn a_sink_flush_sends_one_write_for_the_buffered_items() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let registry = Registry::new();
        let (mut tx, _rx) = Socket::builder()
            .functions(mock.functions())
            .registry(&registry)
            .connect_framed(mock_peer(), LinesCodec::new())
            .await
            .unwrap();
        for i in 0..10 {
            tx.feed(format!("line {i}")).await.unwrap();
        }
        SinkExt::<String>::flush(&mut tx).await.unwrap();
        settle().await;
        let stats = registry.get(tx.writer().socket()).unwrap().stats();
        assert_eq!(stats.writes, 1, "one write per buffer: {stats:?}");
    });
}

/// FramedWriter::try_send: "a full queue (WriteError::QueueFull, this item's encoded
/// bytes inside)"; "Bytes the writer holds ... go first".
#[test]
fn try_send_on_a_full_queue_hands_back_the_encoded_item_and_keeps_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (mut tx, _rx) = Socket::builder()
            .functions(mock.functions())
            .config(watermarks(12, 0))
            .connect_framed(mock_peer(), LinesCodec::new())
            .await
            .unwrap();
        tx.try_send("abcdefghijk").unwrap(); // 12 bytes: reaches the high watermark
        settle().await;
        tx.feed("buffered".to_string()).await.unwrap();
        match tx.try_send("next") {
            Err(FramedWriteError::Write(WriteError::QueueFull { payload, .. })) => {
                assert_eq!(payload.len(), 5, "\"next\\n\"");
            }
            other => panic!("{other:?}"),
        }
        mock.release(Handle(1));
        settle().await;
        tx.try_send("last").unwrap();
        SinkExt::<String>::flush(&mut tx).await.unwrap();
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"abcdefghijk\nbuffered\nlast\n");
    });
}

/// FramedWriter: "Dropped with items unflushed, the writer sends them to the socket":
/// "nothing fed is lost while the socket lives".
#[test]
fn a_dropped_framed_writer_sends_what_was_fed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (mut tx, _rx) = Socket::builder()
            .functions(mock.functions())
            .connect_framed(mock_peer(), LinesCodec::new())
            .await
            .unwrap();
        tx.feed("fed".to_string()).await.unwrap();
        drop(tx);
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"fed\n");
    });
}

/// FrameStream: "ends at the peer's EOF (after the last frame)"; SocketBuilder::framed:
/// "At the peer's EOF the decoder's decode_eof gets the rest."
#[test]
fn a_frame_stream_yields_the_rest_at_eof_then_ends() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (_tx, mut rx) = Socket::builder()
            .functions(mock.functions())
            .connect_framed(mock_peer(), LinesCodec::new())
            .await
            .unwrap();
        mock.push_inbound(Handle(1), &b"one\ntw"[..]);
        mock.push_inbound(Handle(1), &b"o"[..]);
        mock.push_eof(Handle(1));
        assert_eq!(rx.next().await.unwrap().unwrap(), "one");
        assert_eq!(rx.next().await.unwrap().unwrap(), "two");
        assert!(rx.next().await.is_none());
        assert!(rx.next().await.is_none(), "stays ended");
    });
}

/// FrameStream: "a decode or read failure is its last item".
#[test]
fn a_frame_stream_ends_with_its_decode_failure() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (_tx, mut rx) = Socket::builder()
            .functions(mock.functions())
            .config(config_with(|c| c.max_frame_bytes = 4))
            .connect_framed(mock_peer(), LinesCodec::new())
            .await
            .unwrap();
        mock.push_inbound(Handle(1), &b"ok\ntoo long\nmore\n"[..]);
        assert_eq!(rx.next().await.unwrap().unwrap(), "ok");
        let e = rx.next().await.unwrap();
        assert!(
            matches!(
                e,
                Err(FrameError::Decode(DecodeError::FrameTooLong {
                    limit: 4,
                    ..
                }))
            ),
            "{e:?}"
        );
        assert!(rx.next().await.is_none());
    });
}

#[test]
fn a_frame_stream_ends_with_a_read_failure() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (_tx, mut rx) = Socket::builder()
            .functions(mock.functions())
            .connect_framed(mock_peer(), LinesCodec::new())
            .await
            .unwrap();
        mock.push_inbound(Handle(1), &b"a\n"[..]);
        mock.push_read_error(Handle(1), io::ErrorKind::ConnectionReset);
        assert_eq!(rx.next().await.unwrap().unwrap(), "a");
        let e = rx.next().await.unwrap();
        assert!(matches!(e, Err(FrameError::Read(_))), "{e:?}");
        assert!(rx.next().await.is_none());
    });
}

// ---------------------------------------------------------------------------------------
// Other entry points

/// SocketBuilder::adopt: "handing the stream to the system transport": with another
/// transport it is refused with a typed error.
#[test]
fn adopting_over_a_mock_is_refused_typed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let r = Socket::builder().functions(mock.functions()).adopt(a).await;
        assert!(
            matches!(
                r,
                Err(SocketError::Open(sockactor::TransportError::Unsupported(_)))
            ),
            "{r:?}"
        );
    });
}

/// DatagramSocket builder: byte layers are refused.
#[test]
fn a_datagram_socket_over_byte_layers_is_refused() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let functions = sockactor::filters::Compress::new().wrap(mock.functions());
        let r = DatagramSocket::builder()
            .functions(functions)
            .bind(crate::support::local())
            .await;
        assert!(
            matches!(
                r,
                Err(SocketError::Open(sockactor::TransportError::Unsupported(_)))
            ),
            "{r:?}"
        );
        settle().await;
        assert!(mock.handles().is_empty() || mock.handles().iter().all(|h| mock.is_closed(*h)));
    });
}

/// StopListening twice: ListenerEvent::Closed is "The last event", sent once; accepted
/// sockets "are not affected".
#[test]
fn stopping_a_listener_twice_reports_closed_once_and_spares_its_sockets() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (events, mut heard) = channel::<ListenerEvent>();
        let (listener, _) = Listener::builder()
            .functions(mock.functions())
            .subscriber(events)
            .bind(crate::support::local())
            .await
            .unwrap();
        let peer: std::net::SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let conn = mock.connect_inbound(Handle(1), peer).unwrap();
        settle().await;
        listener.do_send(StopListening);
        listener.do_send(StopListening);
        settle().await;
        let evs = drain(&mut heard);
        let closed = evs
            .iter()
            .filter(|e| matches!(e, ListenerEvent::Closed))
            .count();
        assert_eq!(closed, 1, "{evs:?}");
        let socket = evs
            .into_iter()
            .find_map(|e| match e {
                ListenerEvent::Accepted { socket, .. } => Some(socket),
                _ => None,
            })
            .unwrap();
        socket
            .send(Write::new(&b"still"[..]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(mock.written(conn), b"still");
        assert!(!mock.is_closed(conn));
    });
}

// ---------------------------------------------------------------------------------------
// Client lifecycle

/// ClientEvent: "For one connection the order is Connected, then Received and Eof ...
/// then Disconnected; between connections come Reconnecting"; Connected::attempt: "1 for
/// the first try since ... the last connection was lost"; Disconnected: "the peer closed
/// its side (None)"; Backoff: the loss of a connection counts as a failure.
#[test]
fn a_lost_connection_is_reported_in_order_and_reconnects_as_attempt_one() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(sub)
            .backoff(Duration::from_millis(100), Duration::from_secs(1))
            .jitter(sockactor::Jitter::None)
            .start();
        let e = events.next().await;
        assert!(
            matches!(e, ClientEvent::Connected { attempt: 1, .. }),
            "{e:?}"
        );
        mock.push_inbound(Handle(1), &b"bye"[..]);
        mock.push_eof(Handle(1));
        let e = events.next().await;
        assert!(
            matches!(&e, ClientEvent::Received(b, _) if &b[..] == b"bye"),
            "{e:?}"
        );
        let e = events.next().await;
        assert!(matches!(e, ClientEvent::Eof), "{e:?}");
        let e = events.next().await;
        assert!(
            matches!(e, ClientEvent::Disconnected { cause: None }),
            "{e:?}"
        );
        let e = events.next().await;
        assert!(
            matches!(e, ClientEvent::Reconnecting { attempt: 1, delay } if delay == Duration::from_millis(100)),
            "{e:?}"
        );
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Waiting { attempt: 1 }
        );
        let e = events.next().await;
        assert!(
            matches!(e, ClientEvent::Connected { attempt: 1, .. }),
            "{e:?}"
        );
        let w = client
            .send(Write::new(&b"again"[..]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.len, 5);
        assert_eq!(mock.written(Handle(2)), b"again");
    });
}

/// ClientConfig::reconnect_on_eof = false: "the client stays connected and reconnects
/// only when the socket fails."
#[test]
fn without_reconnect_on_eof_the_client_stays_connected_and_writes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(sub)
            .reconnect_on_eof(false)
            .start();
        assert!(matches!(events.next().await, ClientEvent::Connected { .. }));
        mock.push_eof(Handle(1));
        assert!(matches!(events.next().await, ClientEvent::Eof));
        settle().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(events.drain().is_empty());
        let w = client
            .send(Write::new(&b"half-open"[..]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.len, 9);
        assert_eq!(mock.written(Handle(1)), b"half-open");
        assert_eq!(mock.handles().len(), 1);
    });
}

/// UnsentWrites::Fail: "Answer them with the error that ended the connection
/// (WriteError::Transport, or WriteError::Aborted after the peer's EOF)".
#[test]
fn with_unsent_writes_fail_a_held_write_is_aborted_after_the_peers_eof() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (sub, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(sub)
            .unsent_writes(sockactor::UnsentWrites::Fail)
            .start();
        assert!(matches!(events.next().await, ClientEvent::Connected { .. }));
        let w = actix::spawn(client.send(Write::new(&b"unsent"[..])));
        settle().await;
        mock.push_eof(Handle(1));
        let w = w.await.unwrap().unwrap();
        assert!(
            matches!(
                w,
                Err(WriteError::Aborted {
                    bytes_sent: 0,
                    len: 6
                })
            ),
            "{w:?}"
        );
    });
}

#[test]
fn with_unsent_writes_fail_a_held_write_fails_with_the_transport_error() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(2), SendStep::Hold]);
        let (sub, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(sub)
            .unsent_writes(sockactor::UnsentWrites::Fail)
            .start();
        assert!(matches!(events.next().await, ClientEvent::Connected { .. }));
        let a = actix::spawn(client.send(Write::new(&b"started"[..])));
        settle().await;
        let b = actix::spawn(client.send(Write::new(&b"unsent"[..])));
        settle().await;
        mock.push_read_error(Handle(1), io::ErrorKind::ConnectionReset);
        let a = a.await.unwrap().unwrap();
        let b = b.await.unwrap().unwrap();
        assert!(
            a.as_ref().err().map(WriteError::bytes_sent) == Some(2),
            "{a:?}"
        );
        assert!(
            matches!(
                b,
                Err(WriteError::Transport {
                    bytes_sent: 0,
                    len: 6,
                    ..
                })
            ),
            "{b:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Closing races and the 10 s grace

/// Writer::writable: "fails with why the socket no longer takes writes": a writer waiting
/// for room when the socket aborts is woken with the refusal.
#[test]
fn a_writer_waiting_for_room_is_woken_by_an_abort() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let socket = socket_with(&mock, watermarks(4, 0)).await;
        let writer = socket.send(GetWriter).await.unwrap();
        writer.write(&b"full"[..]).unwrap();
        settle().await;
        assert!(!writer.is_writable());
        let w2 = writer.clone();
        let wait = actix::spawn(async move { w2.writable().await });
        let w3 = writer.clone();
        let ready = actix::spawn(async move { w3.write_when_ready(&b"more"[..]).await });
        settle().await;
        assert!(!wait.is_finished());
        socket.do_send(Close::Abort);
        let waited = tokio::time::timeout(Duration::from_secs(1), wait).await;
        assert!(matches!(waited, Ok(Ok(Err(_)))), "{waited:?}");
        let r = tokio::time::timeout(Duration::from_secs(1), ready).await;
        assert!(matches!(r, Ok(Ok(Err(_)))), "{r:?}");
    });
}

/// Close::Abort: "a transport that has not answered 10 s after the close counts as having
/// sent none of that call's bytes."
#[test]
fn an_abort_with_a_silent_transport_answers_after_ten_seconds_with_none_sent() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [SendStep::Slow {
                bytes: 3,
                after: Duration::from_secs(3600),
            }],
        );
        let socket = mock_socket(&mock).await;
        let w = actix::spawn(socket.send(Write::new(&b"hello"[..])));
        settle().await;
        let start = tokio::time::Instant::now();
        socket.do_send(Close::Abort);
        let w = w.await.unwrap().unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert!(
            matches!(
                w,
                Err(WriteError::Aborted {
                    bytes_sent: 0,
                    len: 5
                })
            ),
            "{w:?}"
        );
    });
}

/// Close::Abort: "Writes in a sendv still out ... are answered when it answers, with how
/// far each got".
#[test]
fn an_abort_with_a_slow_transport_answers_with_what_it_took() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [SendStep::Slow {
                bytes: 3,
                after: Duration::from_secs(2),
            }],
        );
        let socket = mock_socket(&mock).await;
        let a = actix::spawn(socket.send(Write::new(&b"ab"[..])));
        let b = actix::spawn(socket.send(Write::new(&b"cdef"[..])));
        settle().await;
        let start = tokio::time::Instant::now();
        socket.do_send(Close::Abort);
        let a = a.await.unwrap().unwrap();
        let b = b.await.unwrap().unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(a.map(|w| w.len).ok(), Some(2), "its bytes were all taken");
        assert!(
            matches!(
                b,
                Err(WriteError::Aborted {
                    bytes_sent: 1,
                    len: 4
                })
            ),
            "{b:?}"
        );
    });
}

/// DatagramError::Lost: "closed with the datagram out to a transport that did not answer
/// within 10 s".
#[test]
fn a_datagram_out_to_a_silent_transport_at_an_abort_is_lost_after_ten_seconds() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [SendStep::Slow {
                bytes: 3,
                after: Duration::from_secs(3600),
            }],
        );
        let socket = bound_datagram(&mock, DatagramConfig::default(), FlushPolicy::Immediate).await;
        let to: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = actix::spawn(socket.send(SendDatagram::new(&b"one"[..]).to(to)));
        settle().await;
        let start = tokio::time::Instant::now();
        socket.do_send(Close::Abort);
        let a = a.await.unwrap().unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert!(matches!(a, Err(DatagramError::Lost)), "{a:?}");
    });
}

/// SocketConfig::close_linger: "reads on until the peer's EOF, for at most this long,
/// before it closes the handle: what the peer sends meanwhile still reaches the
/// subscriber".
#[test]
fn a_lingering_close_delivers_late_data_and_closes_at_the_eof() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut rx) = channel_subscriber();
        let socket = Socket::builder()
            .functions(mock.functions_with_shutdown())
            .config(crate::support::lingering(Duration::from_secs(5)))
            .subscriber(sub)
            .connect(mock_peer())
            .await
            .unwrap();
        socket.send(Write::new(&b"req"[..])).await.unwrap().unwrap();
        socket.do_send(Close::Graceful);
        settle().await;
        assert!(mock.is_shut_down(Handle(1)));
        assert!(!mock.is_closed(Handle(1)), "lingering");
        tokio::time::sleep(Duration::from_secs(1)).await;
        mock.push_inbound(Handle(1), &b"late"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        assert!(
            mock.is_closed(Handle(1)),
            "closed at the EOF, not after 5 s"
        );
        let evs = drain(&mut rx);
        assert!(
            evs.iter()
                .any(|e| matches!(e, SocketEventKind::Received(b) if &b[..] == b"late")),
            "{evs:?}"
        );
        assert!(
            matches!(evs.last(), Some(SocketEventKind::Closed { cause: None })),
            "{evs:?}"
        );
    });
}

#[test]
fn a_lingering_close_gives_up_after_the_linger_time() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, _rx) = channel_subscriber();
        let socket = Socket::builder()
            .functions(mock.functions_with_shutdown())
            .config(crate::support::lingering(Duration::from_secs(5)))
            .subscriber(sub)
            .connect(mock_peer())
            .await
            .unwrap();
        socket.do_send(Close::Graceful);
        settle().await;
        tokio::time::sleep(Duration::from_millis(4999)).await;
        assert!(!mock.is_closed(Handle(1)));
        tokio::time::sleep(Duration::from_millis(2)).await;
        settle().await;
        assert!(mock.is_closed(Handle(1)));
    });
}

/// PeerLimits::write_idle: "No byte sent for this long: Idle with IdleKind::Write".
#[test]
fn write_idle_counts_from_the_last_byte_sent() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (sub, mut rx) = channel_subscriber();
        let config = config_with(|c| c.limits.write_idle = Some(Duration::from_millis(100)));
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config)
            .subscriber(sub)
            .connect(mock_peer())
            .await
            .unwrap();
        let start = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(70)).await;
        socket.send(Write::new(&b"x"[..])).await.unwrap().unwrap();
        loop {
            if let SocketEventKind::Idle { kind, .. } = rx.recv().await.unwrap() {
                assert_eq!(kind, sockactor::IdleKind::Write);
                break;
            }
        }
        assert_eq!(start.elapsed(), Duration::from_millis(170));
    });
}

/// SocketEventKind::WriteFailed: "A fire-and-forget write failed" with its tag.
#[test]
fn a_failed_fire_and_forget_write_is_reported_with_its_tag() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(2),
                SendStep::Fail(io::ErrorKind::ConnectionReset),
            ],
        );
        let (sub, mut rx) = channel_subscriber();
        let socket = crate::support::subscribed_mock_socket(&mock, sub).await;
        socket.do_send(Write::new(&b"hello"[..]).tag(42));
        socket.do_send(Write::new(&b"world"[..]));
        settle().await;
        let evs = drain(&mut rx);
        let failed: Vec<_> = evs
            .iter()
            .filter_map(|e| match e {
                SocketEventKind::WriteFailed { tag, error } => Some((*tag, error.bytes_sent())),
                _ => None,
            })
            .collect();
        assert_eq!(failed, vec![(Some(42), 2), (None, 0)], "{evs:?}");
        assert!(
            matches!(evs.last(), Some(SocketEventKind::Closed { cause: Some(_) })),
            "{evs:?}"
        );
        let late = socket.send(Write::new(&b"late"[..])).await.unwrap();
        assert!(
            matches!(
                late,
                Err(WriteError::Transport {
                    bytes_sent: 0,
                    len: 4,
                    ..
                })
            ),
            "{late:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// More client and listener promises

/// ClientState::Connecting; ClientConfig::connect_timeout: "Gives up one connect attempt
/// after this long"; GaveUp carries why the last attempt failed.
#[test]
fn a_client_connect_attempt_times_out_and_the_client_gives_up_with_why() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.delay_connect(mock_peer(), Duration::from_secs(3600));
        let (sub, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .subscriber(sub)
            .connect_timeout(Some(Duration::from_secs(2)))
            .max_attempts(Some(1))
            .start();
        settle().await;
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Connecting { attempt: 1 }
        );
        assert!(
            !client.send(Reconnect).await.unwrap(),
            "connecting: not given up"
        );
        let start = tokio::time::Instant::now();
        let e = events.next().await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert!(
            matches!(&e, ClientEvent::GaveUp { attempts: 1, last_error: SocketError::TimedOut(d) } if *d == Duration::from_secs(2)),
            "{e:?}"
        );
    });
}

/// ClientEvent::WriteFailed: "A write sent with do_send (nobody awaits its answer)
/// failed", with its tag.
#[test]
fn a_fire_and_forget_client_write_after_giving_up_is_reported_with_its_tag() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        gate.refuse_all(true);
        let (sub, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .subscriber(sub)
            .max_attempts(Some(1))
            .start();
        assert!(matches!(events.next().await, ClientEvent::GaveUp { .. }));
        client.do_send(Write::new(&b"abc"[..]).tag(5));
        let e = events.next().await;
        assert!(
            matches!(
                &e,
                ClientEvent::WriteFailed {
                    tag: Some(5),
                    error: WriteError::GaveUp { len: 3, .. }
                }
            ),
            "{e:?}"
        );
    });
}

/// Reconnect: "false if the client had not given up (it is ... waiting to [connect])".
#[test]
fn reconnect_while_waiting_out_the_backoff_is_false() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        gate.refuse_next(1);
        let (sub, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .subscriber(sub)
            .backoff(Duration::from_secs(10), Duration::from_secs(10))
            .jitter(sockactor::Jitter::None)
            .start();
        let e = events.next().await;
        assert!(
            matches!(e, ClientEvent::Reconnecting { attempt: 2, .. }),
            "{e:?}"
        );
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Waiting { attempt: 2 }
        );
        assert!(!client.send(Reconnect).await.unwrap());
        assert_eq!(gate.calls().len(), 1, "no extra attempt");
        let e = events.next().await;
        assert!(
            matches!(e, ClientEvent::Connected { attempt: 2, .. }),
            "{e:?}"
        );
    });
}

/// ListenerBuilder::bind: "On failure the handle is closed"; reuse_port: "Share the port
/// with other listeners that ask for it too".
#[test]
fn a_listener_bind_on_a_taken_address_fails_bind_and_leaves_no_handle() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let addr: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let (_first, _) = Listener::builder()
            .functions(mock.functions())
            .bind(addr)
            .await
            .unwrap();
        let second = Listener::builder()
            .functions(mock.functions())
            .bind(addr)
            .await;
        assert!(matches!(second, Err(SocketError::Bind(_))), "{second:?}");
        settle().await;
        assert!(
            mock.is_closed(Handle(2)),
            "the failed listener's handle is closed"
        );
        let r1 = Listener::builder()
            .functions(mock.functions())
            .reuse_port(true)
            .bind("127.0.0.1:8081".parse::<std::net::SocketAddr>().unwrap())
            .await;
        let r2 = Listener::builder()
            .functions(mock.functions())
            .reuse_port(true)
            .bind("127.0.0.1:8081".parse::<std::net::SocketAddr>().unwrap())
            .await;
        assert!(r1.is_ok() && r2.is_ok());
    });
}

/// InterestGroup: "Members leave when their actors end."
#[test]
fn interest_group_members_leave_when_their_actors_end() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let sub = Refuser {
            seen: std::sync::Arc::default(),
            refuse_out: false,
        }
        .start();
        let group = InterestGroup::new(sub.recipient());
        let s = Socket::builder()
            .functions(mock.functions())
            .interest_group(&group)
            .connect(mock_peer())
            .await
            .unwrap();
        assert_eq!(group.len(), 1);
        s.send(Close::Graceful).await.unwrap();
        drop(s);
        settle().await;
        assert!(group.is_empty());
    });
}

// ---------------------------------------------------------------------------------------
// Queue limits

/// QueueConfig::max_segments: "Most segments in one vectored write".
#[test]
fn no_sendv_carries_more_than_max_segments() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let mut config = SocketConfig::default();
        config.queue.max_segments = 2;
        let socket = socket_with(&mock, config).await;
        for i in 0..4u8 {
            socket.do_send(Write::new(vec![i; 1000]));
        }
        socket
            .send(Write::new(vec![4u8; 1000]))
            .await
            .unwrap()
            .unwrap();
        let log = mock.sendv_log(Handle(1));
        assert!(log.iter().all(|r| r.segments <= 2), "{log:?}");
        assert_eq!(mock.written(Handle(1)).len(), 5000);
    });
}

/// README: "A socket alone on its thread hands the transport everything it has in each
/// writev; only while other sockets of the thread have data to send is a flush turn
/// capped at max_bytes_per_turn".
#[test]
fn a_socket_alone_hands_the_transport_everything_in_one_sendv() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let mut config = SocketConfig::default();
        config.queue.max_bytes_per_turn = 1024;
        let socket = socket_with(&mock, config).await;
        for i in 0..9u8 {
            socket.do_send(Write::new(vec![i; 10_000]));
        }
        socket
            .send(Write::new(vec![9u8; 10_000]))
            .await
            .unwrap()
            .unwrap();
        let log = mock.sendv_log(Handle(1));
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(log[0].offered, 100_000);
    });
}

/// SocketConfig::max_waiting_writes = 0: no write may wait; a waiting write is refused
/// like any other.
#[test]
fn with_no_room_for_waiting_writes_a_waiting_write_is_refused_at_once() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let mut config = watermarks(4, 0);
        config.max_waiting_writes = 0;
        let socket = socket_with(&mock, config).await;
        let _a = actix::spawn(socket.send(Write::new(&b"abcd"[..])));
        settle().await;
        let b = socket
            .send(Write::new(&b"b"[..]).wait_when_full())
            .await
            .unwrap();
        assert!(matches!(b, Err(WriteError::QueueFull { .. })), "{b:?}");
    });
}

/// DatagramSocket: "[Close] closes it (gracefully: queued datagrams leave first ...)".
#[test]
fn a_graceful_datagram_close_sends_the_queued_datagrams_first() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::from_millis(10))]);
        let socket = bound_datagram(&mock, DatagramConfig::default(), FlushPolicy::Immediate).await;
        let to: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = actix::spawn(socket.send(SendDatagram::new(&b"one"[..]).to(to)));
        let b = actix::spawn(socket.send(SendDatagram::new(&b"two"[..]).to(to)));
        settle().await;
        socket.do_send(Close::Graceful);
        let late = socket
            .send(SendDatagram::new(&b"late"[..]).to(to))
            .await
            .unwrap();
        assert!(matches!(late, Err(DatagramError::Closed)), "{late:?}");
        assert!(a.await.unwrap().unwrap().is_ok());
        assert!(b.await.unwrap().unwrap().is_ok());
        settle().await;
        let sent: Vec<Vec<u8>> = mock
            .datagrams(Handle(1))
            .into_iter()
            .map(|d| d.bytes.to_vec())
            .collect();
        assert_eq!(sent, vec![b"one".to_vec(), b"two".to_vec()]);
        assert!(mock.is_closed(Handle(1)));
    });
}

/// Control for the two failing datagram tests above: on the system transport the kernel
/// does filter a connected UDP socket's arrivals, so the promise holds there.
#[actix_rt::test]
async fn a_connected_udp_socket_on_the_system_transport_receives_only_from_its_peer() {
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (sub, mut rx) = channel();
    let socket = DatagramSocket::builder()
        .subscriber(sub)
        .local(crate::support::local())
        .connect(peer_addr)
        .await
        .unwrap();
    let info = socket.send(GetDatagramInfo).await.unwrap();
    let local = match info.local {
        Some(sockactor::messages::Address::Inet(a)) => a,
        other => panic!("{other:?}"),
    };
    stranger.send_to(b"stranger", local).unwrap();
    peer.send_to(b"friend", local).unwrap();
    let (bytes, _, _) = crate::support::next_datagram(&mut rx).await;
    assert_eq!(bytes, b"friend");
}
