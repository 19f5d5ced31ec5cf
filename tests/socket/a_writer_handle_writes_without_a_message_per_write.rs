//! The direct write path: a `Writer` pushes into the socket's queue without a mailbox
//! message per write, wakes the socket once per burst, and keeps every guarantee of the
//! message path (order, one answer per write, bounded queue, typed errors).

use std::io;

use crate::support::{mock_peer, mock_socket, run_paused, settle, watermarks, Recorder};
use bytes::Bytes;
use sockactor::messages::{GetStats, GetWriter, Handle, Write};
use sockactor::{MockTransport, SendStep, Socket, WriteError};

#[test]
fn a_burst_through_a_writer_costs_one_wake_and_one_sendv() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = mock_socket(&mock).await;
        let writer = socket.send(GetWriter).await.expect("writer");
        let mut expected = Vec::new();
        for i in 0..1000u32 {
            let line = format!("{i:>15}\n");
            expected.extend_from_slice(line.as_bytes());
            writer.write(Bytes::from(line)).expect("queued");
        }
        let last = writer.write_answered(&b"end"[..]);
        expected.extend_from_slice(b"end");
        let done = last.await.expect("written");
        assert_eq!(done.len, 3);
        assert_eq!(mock.written(Handle(1)), expected);
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(stats.pending_writes, 1, "one wake for the burst");
        assert_eq!(stats.writes_completed, 1001);
        assert_eq!(mock.sendv_calls(Handle(1)), 1);
    });
}

#[test]
fn writer_and_messages_share_one_queue_and_its_bound() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let recorder = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(watermarks(100, 10))
            .writability_subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let writer = socket.send(GetWriter).await.expect("writer");
        writer.write(vec![1u8; 60]).expect("queued");
        let by_message = actix::spawn(socket.send(Write::new(vec![2u8; 60])));
        settle().await;
        assert!(!writer.is_writable());
        match writer.write(Bytes::from_static(b"refused")) {
            Err(WriteError::QueueFull { payload, .. }) => {
                assert_eq!(payload.to_vec().expect("in memory"), b"refused")
            }
            other => panic!("expected QueueFull, got {other:?}"),
        }
        assert_eq!(recorder.writability(), vec![false]);
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        by_message
            .await
            .expect("join")
            .expect("mailbox")
            .expect("written");
        settle().await;
        assert!(writer.is_writable());
        assert_eq!(recorder.writability(), vec![false, true]);
        let mut expected = vec![1u8; 60];
        expected.extend_from_slice(&[2u8; 60]);
        assert_eq!(mock.written(Handle(1)), expected);
    });
}

#[test]
fn a_writer_on_a_failed_socket_gets_the_transport_error() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Fail(io::ErrorKind::BrokenPipe)]);
        let socket = mock_socket(&mock).await;
        let writer = socket.send(GetWriter).await.expect("writer");
        let first = writer.write_answered(&b"doomed"[..]).await;
        assert!(matches!(
            first,
            Err(WriteError::Transport {
                bytes_sent: 0,
                len: 6,
                ..
            })
        ));
        match writer.write(&b"later"[..]) {
            Err(WriteError::Transport { source, .. }) => {
                assert_eq!(source.io_kind(), Some(io::ErrorKind::BrokenPipe))
            }
            other => panic!("expected the transport error, got {other:?}"),
        }
    });
}

#[actix::test]
async fn writers_on_other_threads_feed_the_same_socket() {
    let mock = MockTransport::start();
    let socket = mock_socket(&mock).await;
    let writer = socket.send(GetWriter).await.expect("writer");
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let writer = writer.clone();
            std::thread::spawn(move || {
                for i in 0..250u8 {
                    while writer.write(vec![t, i]).is_err() {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    writer.write_answered(&b"!"[..]).await.expect("final write");
    let written = mock.written(Handle(1));
    assert_eq!(written.len(), 4 * 250 * 2 + 1);
    let mut next = [0u8; 4];
    for pair in written[..2000].chunks(2) {
        let (t, i) = (pair[0] as usize, pair[1]);
        assert_eq!(i, next[t], "each thread's writes in order");
        next[t] += 1;
    }
}
