//! `Writer::write_each`: several writes sent to the socket in one message. Each is a
//! write of its own (counted, answered, reported on failure one by one), they keep their
//! order with everything else sent to the socket, and a refusal hands them all back.

use std::io;

use crate::support::{channel_subscriber, mock_peer, mock_socket, run_paused, settle, watermarks};
use bytes::Bytes;
use sockactor::messages::{Close, GetStats, GetWriter, Handle, SocketEventKind, Write};
use sockactor::{IoBatch, MockTransport, SendStep, Socket, WriteError};

fn batches(items: &[&'static [u8]]) -> Vec<IoBatch> {
    items.iter().map(|b| Bytes::from_static(b).into()).collect()
}

#[test]
fn writes_sent_together_keep_their_order_with_every_other_way_of_writing() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = mock_socket(&mock).await;
        let writer = socket.send(GetWriter).await.expect("writer");
        writer.write(&b"a"[..]).expect("queued");
        writer.write_each(batches(&[b"b", b"cc"])).expect("queued");
        socket.do_send(Write::new(Bytes::from_static(b"d")));
        writer
            .write_each(batches(&[b"e", b"", b"f"]))
            .expect("queued");
        writer.close();
        writer
            .write_each(batches(&[b"late"]))
            .expect("admitted before the close was handled");
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"abccdef");
        assert!(mock.is_closed(Handle(1)));
    });
}

#[test]
fn each_write_of_a_batch_counts_as_one_write() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = mock_socket(&mock).await;
        let writer = socket.send(GetWriter).await.expect("writer");
        writer
            .write_each((0..100u8).map(|i| IoBatch::from(vec![i; 3])).collect())
            .expect("queued");
        writer.write_answered(&b"!"[..]).await.expect("written");
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(stats.writes, 101);
        assert_eq!(stats.writes_completed, 101);
        assert_eq!(stats.pending_writes, 1, "one burst");
        assert_eq!(mock.written(Handle(1)).len(), 301);
    });
}

#[test]
fn a_full_queue_refuses_the_whole_batch_and_hands_every_write_back() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(watermarks(100, 10))
            .connect(mock_peer())
            .await
            .expect("connect");
        let writer = socket.send(GetWriter).await.expect("writer");
        writer
            .write(vec![1u8; 120])
            .expect("the crossing write is admitted");
        settle().await;
        let refused = writer
            .write_each(batches(&[b"one", b"two"]))
            .expect_err("full");
        assert!(matches!(refused.error, WriteError::QueueFull { .. }));
        let back: Vec<Vec<u8>> = refused
            .writes
            .iter()
            .map(|w| w.to_vec().expect("memory"))
            .collect();
        assert_eq!(back, vec![b"one".to_vec(), b"two".to_vec()]);
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(stats.writes_failed, 2, "each write refused is counted");
        socket.do_send(Close::Abort);
        settle().await;
        let closed = writer.write_each(batches(&[b"x"])).expect_err("closed");
        assert!(
            matches!(
                closed.error,
                WriteError::Closed { .. } | WriteError::Aborted { .. }
            ),
            "{:?}",
            closed.error
        );
        assert_eq!(closed.writes.len(), 1);
    });
}

#[test]
fn a_failure_is_reported_for_each_write_of_the_batch() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Fail(io::ErrorKind::BrokenPipe)]);
        let (subscriber, mut events) = channel_subscriber();
        let socket = Socket::builder()
            .functions(mock.functions())
            .subscriber(subscriber)
            .connect(mock_peer())
            .await
            .expect("connect");
        let writer = socket.send(GetWriter).await.expect("writer");
        writer
            .write_each(batches(&[b"one", b"two", b"three"]))
            .expect("queued");
        settle().await;
        let mut failed = Vec::new();
        while let Ok(kind) = events.try_recv() {
            if let SocketEventKind::WriteFailed {
                error: WriteError::Transport { len, .. },
                ..
            } = kind
            {
                failed.push(len);
            }
        }
        assert_eq!(
            failed,
            vec![3, 3, 5],
            "one report per write, with its length"
        );
    });
}
