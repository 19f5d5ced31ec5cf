//! Bounded memory: with a transport that never accepts, writes past the high watermark
//! get a typed queue-full error (with their payload back) and queued bytes stay bounded;
//! producers hear "unwritable" and "writable" once per crossing; a queued write that has
//! not started can be cancelled and its payload comes back; an awaiting write waits for
//! room instead of failing; a zero-length write reaches no mark.

use crate::support::{mock_peer, mock_socket, run_paused, settle, watermarks, Recorder};
use bytes::Bytes;
use sockactor::messages::{CancelWrite, GetStats, Handle, SubscribeWritability, Write};
use sockactor::{MockTransport, SendStep, Socket, SocketConfig, WriteError};

fn config() -> SocketConfig {
    watermarks(1000, 200)
}

#[test]
fn writes_past_the_high_watermark_are_refused_with_their_payload() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let recorder = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config())
            .writability_subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        // 100-byte writes: the tenth reaches the mark and is still accepted.
        let mut accepted = Vec::new();
        for i in 0..10u8 {
            accepted.push(actix::spawn(socket.send(Write::new(vec![i; 100]))));
        }
        settle().await;
        for i in 0..1000u32 {
            let answer = socket
                .send(Write::new(Bytes::from(vec![0xAB; 100])).tag(u64::from(i)))
                .await
                .expect("mailbox");
            match answer {
                Err(WriteError::QueueFull {
                    queued,
                    high_watermark,
                    payload,
                }) => {
                    assert_eq!((queued, high_watermark), (1000, 1000));
                    assert_eq!(
                        payload.to_vec().expect("in memory"),
                        vec![0xAB; 100],
                        "payload handed back"
                    );
                }
                other => panic!("expected QueueFull, got {other:?}"),
            }
        }
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(stats.queued_bytes, 1000, "memory stays bounded");
        assert_eq!(stats.writes_failed, 1000);
        assert_eq!(
            recorder.writability(),
            vec![false],
            "one notice per crossing"
        );

        // The peer starts reading: everything queued goes, and producers hear it once.
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        for w in accepted {
            w.await.expect("join").expect("mailbox").expect("written");
        }
        settle().await;
        assert_eq!(recorder.writability(), vec![false, true]);
        let written = mock.written(Handle(1));
        assert_eq!(written.len(), 1000);
        assert!(written
            .chunks(100)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == i as u8)));
    });
}

#[test]
fn crossing_again_notifies_again() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let recorder = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config())
            .connect(mock_peer())
            .await
            .expect("connect");
        socket.do_send(SubscribeWritability(recorder.start().recipient()));
        for _round in 0..3 {
            socket.do_send(Write::new(vec![1u8; 1000]));
            settle().await;
            mock.script_sendv(Handle(1), [SendStep::AcceptAll]);
            mock.release(Handle(1));
            settle().await;
        }
        assert_eq!(
            recorder.writability(),
            vec![false, true, false, true, false, true]
        );
    });
}

#[test]
fn a_queued_write_can_be_cancelled_and_its_payload_comes_back() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // The first write starts (3 bytes out), then the transport blocks.
        mock.script_sendv(Handle(1), [SendStep::Accept(3)]);
        mock.set_default_step(SendStep::Hold);
        let socket = mock_socket(&mock).await;
        let first = actix::spawn(socket.send(Write::new(&b"in flight"[..]).tag(1)));
        let second = actix::spawn(socket.send(Write::new(&b"queued"[..]).tag(2)));
        settle().await;
        assert!(
            socket
                .send(CancelWrite { tag: 1 })
                .await
                .expect("mailbox")
                .is_none(),
            "a write that has started cannot be cancelled"
        );
        let payload = socket
            .send(CancelWrite { tag: 2 })
            .await
            .expect("mailbox")
            .expect("cancelled");
        assert_eq!(payload.to_vec().expect("in memory"), b"queued");
        assert!(matches!(
            second.await.expect("join").expect("mailbox"),
            Err(WriteError::Cancelled)
        ));
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        first
            .await
            .expect("join")
            .expect("mailbox")
            .expect("written");
        assert_eq!(mock.written(Handle(1)), b"in flight");
    });
}

#[test]
fn an_awaiting_write_waits_for_room_instead_of_failing() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config())
            .connect(mock_peer())
            .await
            .expect("connect");
        let big = actix::spawn(socket.send(Write::new(vec![1u8; 1000])));
        let waiting = actix::spawn(socket.send(Write::new(vec![2u8; 10]).wait_when_full()));
        let refused = socket
            .send(Write::new(vec![3u8; 10]))
            .await
            .expect("mailbox");
        assert!(matches!(refused, Err(WriteError::QueueFull { .. })));
        settle().await;
        assert!(!waiting.is_finished());
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        big.await.expect("join").expect("mailbox").expect("written");
        waiting
            .await
            .expect("join")
            .expect("mailbox")
            .expect("written");
        let mut expected = vec![1u8; 1000];
        expected.extend_from_slice(&[2u8; 10]);
        assert_eq!(mock.written(Handle(1)), expected);
    });
}

/// A zero-length write adds nothing to the queue, so it cannot reach the high watermark:
/// with watermarks of 0, after one, the next write is admitted as before (it left the
/// socket unwritable for good, with nothing queued).
#[test]
fn a_zero_length_write_never_turns_a_zero_high_watermark_unwritable() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(watermarks(0, 0))
            .connect(mock_peer())
            .await
            .expect("connect");
        for bytes in [&b"abc"[..], b"", b"def"] {
            socket
                .send(Write::new(bytes))
                .await
                .expect("mailbox")
                .expect("written");
        }
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"abcdef");
    });
}

/// A write that waits for room (`Writer::write_when_ready`, `FramedWriter::send`, the
/// `FramedWriter`'s held bytes) and then goes out did not fail: `writes_failed` counts
/// only writes that ended in an error, as `DatagramWriter::send_when_ready`'s waits are
/// not counted either. A `try_send` refused while bytes are held counts its item.
#[test]
fn a_write_that_waited_for_room_and_went_out_is_not_counted_failed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::WouldBlock(std::time::Duration::from_millis(5)),
                SendStep::AcceptAll,
                SendStep::WouldBlock(std::time::Duration::from_millis(5)),
            ],
        );
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(watermarks(64, 32))
            .connect(mock_peer())
            .await
            .expect("connect");
        let writer = socket
            .send(sockactor::messages::GetWriter)
            .await
            .expect("writer");
        writer.write(vec![1u8; 64]).expect("fills the queue");
        writer
            .write_when_ready(&b"second"[..])
            .await
            .expect("waits, then writes");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(
            (stats.writes_completed, stats.writes_failed),
            (2, 0),
            "{stats:?}"
        );

        writer.write(vec![2u8; 64]).expect("fills the queue again");
        let mut framed = writer.clone().framed(tokio_util::codec::BytesCodec::new());
        framed
            .send(Bytes::from_static(b"third"))
            .await
            .expect("waits, then writes");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(
            (stats.writes_completed, stats.writes_failed),
            (4, 0),
            "{stats:?}"
        );
        assert_eq!(mock.written(Handle(1)).len(), 64 + 6 + 64 + 5);

        // Held bytes refused again and again are not failures; the item refused behind
        // them is one.
        mock.set_default_step(SendStep::Hold);
        writer.write(vec![3u8; 64]).expect("fills the queue");
        for _ in 0..3 {
            let refused = framed.try_send(Bytes::from_static(b"item"));
            assert!(refused.is_err(), "{refused:?}");
        }
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(stats.writes_failed, 3, "{stats:?}");
        use futures_util::SinkExt;
        framed
            .feed(Bytes::from_static(b"held"))
            .await
            .expect("buffered");
        let refused = framed.try_send(Bytes::from_static(b"item"));
        assert!(refused.is_err(), "{refused:?}");
        let refused = framed.try_send(Bytes::from_static(b"item"));
        assert!(refused.is_err(), "{refused:?}");
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(stats.writes_failed, 5, "{stats:?}");
    });
}

/// A `write_when_ready` waiting for room when the socket closes fails with the socket's
/// refusal naming its length, counted once in `writes_failed`.
#[test]
fn a_write_waiting_for_room_when_the_socket_closes_is_refused_and_counted() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(watermarks(64, 32))
            .connect(mock_peer())
            .await
            .expect("connect");
        let writer = socket
            .send(sockactor::messages::GetWriter)
            .await
            .expect("writer");
        writer.write(vec![1u8; 64]).expect("fills the queue");
        let waiting = {
            let writer = writer.clone();
            actix::spawn(async move { writer.write_when_ready(&b"second"[..]).await })
        };
        settle().await;
        socket.do_send(sockactor::messages::Close::Abort);
        let refused = waiting.await.expect("task");
        assert!(
            matches!(
                refused,
                Err(WriteError::Closed { len: 6, .. } | WriteError::Aborted { len: 6, .. })
            ),
            "{refused:?}"
        );
        tokio::time::sleep(std::time::Duration::from_secs(11)).await;
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(
            stats.writes_failed, 2,
            "the held write and this one: {stats:?}"
        );
    });
}
