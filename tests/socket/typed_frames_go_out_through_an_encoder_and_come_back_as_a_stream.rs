//! Typed frames both ways, as short as tokio-util's `Framed`: `connect_framed` gives a
//! `FramedWriter` (encoder + `Sink`) and a `FrameStream` (decoder + `Stream`) in one
//! call; the writer's `try_send` refuses a full queue at once, handing its item's
//! encoded bytes back (bytes the writer held stay held); `send` is cancel-safe; as a `Sink` it buffers until a flush (or 64 KiB), waits for room and keeps every
//! item in order, and a dropped one still sends what it was fed (or, its socket closed,
//! is refused with a warning naming the bytes); the stream ends at
//! the peer's EOF and ends with a typed error when a frame is too long; `connect_actor`
//! gives the user's actor its `Writer` when it is made.

use std::time::Duration;

use crate::support::{local, mock_peer, run_paused, settle, watermarks, WarnLog};
use actix::prelude::*;
use futures_util::{FutureExt, SinkExt};
use sockactor::messages::{Close, Handle, SocketEvent, SocketEventKind};
use sockactor::{
    DecodeError, FrameError, FramedWriteError, FramedWriter, MockTransport, SendStep, Socket,
    SocketConfig, WriteError, Writer,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::codec::{LinesCodec, LinesCodecError};

/// A line server on loopback: answers each line with its upper case, then closes after
/// `lines` lines.
async fn upper_server(lines: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind(local()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read).lines();
        for _ in 0..lines {
            let Some(line) = read.next_line().await.expect("read") else {
                return;
            };
            write
                .write_all(format!("{}\n", line.to_uppercase()).as_bytes())
                .await
                .expect("write");
        }
    });
    addr
}

/// A socket on `mock` with `config`, and its `Writer`.
async fn writer_on_mock(mock: &MockTransport, config: SocketConfig) -> (Addr<Socket>, Writer) {
    let socket = Socket::builder()
        .functions(mock.functions())
        .config(config)
        .connect(mock_peer())
        .await
        .expect("connect");
    let writer: Writer = socket
        .send(sockactor::messages::GetWriter)
        .await
        .expect("writer");
    (socket, writer)
}

/// A socket on `mock` with `config`, and a `FramedWriter` of lines on it.
async fn lines_on_mock(
    mock: &MockTransport,
    config: SocketConfig,
) -> (Addr<Socket>, FramedWriter<LinesCodec>) {
    let (socket, writer) = writer_on_mock(mock, config).await;
    (socket, writer.framed(LinesCodec::new()))
}

/// A writer of lines whose socket (watermarks 64/32) holds a 100-byte line its
/// transport does not answer: its queue is over the high watermark.
async fn over_the_high_watermark() -> (MockTransport, Addr<Socket>, FramedWriter<LinesCodec>) {
    let mock = MockTransport::start();
    mock.script_sendv(Handle(1), [SendStep::Hold]);
    let (socket, mut tx) = lines_on_mock(&mock, watermarks(64, 32)).await;
    tx.try_send("x".repeat(100))
        .expect("an empty queue takes a long line");
    (mock, socket, tx)
}

#[actix::test]
async fn a_line_client_is_a_writer_and_a_stream_in_one_call() {
    let addr = upper_server(100).await;
    let (mut tx, mut rx) = Socket::builder()
        .connect_framed(addr, LinesCodec::new())
        .await
        .expect("connect");
    for i in 0..100 {
        tx.send(format!("line {i}")).await.expect("sent");
    }
    for i in 0..100 {
        let line = rx.next().await.expect("a line").expect("decoded");
        assert_eq!(line, format!("LINE {i}"), "in order");
    }
    assert!(
        rx.next().await.is_none(),
        "the stream ends at the peer's EOF"
    );
}

#[actix::test]
async fn as_a_sink_the_writer_sends_everything_in_order() {
    let addr = upper_server(1000).await;
    let (mut tx, mut rx) = Socket::builder()
        .connect_framed(addr, LinesCodec::new())
        .await
        .expect("connect");
    let mut items = futures_util::stream::iter(
        (0..1000).map(|i| Ok::<_, FramedWriteError<LinesCodecError>>(format!("{i}"))),
    );
    SinkExt::send_all(&mut tx, &mut items)
        .await
        .expect("all sent");
    for i in 0..1000 {
        assert_eq!(
            rx.next().await.expect("a line").expect("decoded"),
            format!("{i}")
        );
    }
}

#[test]
fn a_full_queue_refuses_try_send_at_once_and_the_sink_waits_for_room() {
    run_paused(|| async {
        let (mock, _socket, mut tx) = over_the_high_watermark().await;
        match tx.try_send("refused".to_string()) {
            Err(FramedWriteError::Write(WriteError::QueueFull { payload, .. })) => {
                assert_eq!(
                    payload.len(),
                    "refused\n".len(),
                    "the encoded bytes come back"
                );
            }
            other => panic!("expected a synchronous QueueFull, got {other:?}"),
        }
        // As a sink, the next item waits for room instead.
        let sending = tokio::spawn(async move {
            SinkExt::send(&mut tx, "waits".to_string())
                .await
                .map(|()| tx)
        });
        settle().await;
        assert!(!sending.is_finished(), "no room yet");
        mock.release(Handle(1));
        let _tx = tokio::time::timeout(Duration::from_secs(5), sending)
            .await
            .expect("room came")
            .expect("task")
            .expect("sent");
        settle().await;
        let written = mock.written(Handle(1));
        assert_eq!(written, format!("{}\nwaits\n", "x".repeat(100)).as_bytes());
    });
}

/// Feeds "fed" through the `Sink` and polls a flush once: the queue is full, so the line
/// waits in the writer for room.
fn feed_a_line_that_waits_for_room(tx: &mut FramedWriter<LinesCodec>) {
    SinkExt::feed(tx, "fed".to_string())
        .now_or_never()
        .expect("the buffer has room")
        .expect("fed");
    assert!(
        SinkExt::<String>::flush(tx).now_or_never().is_none(),
        "the flush waits for room"
    );
}

/// Fed through the `Sink`, then a flush that found no room: those bytes wait in the
/// writer. A `try_send` then refuses its own item (its encoded bytes come back), and the
/// bytes fed earlier stay in the writer and go out first once there is room.
#[test]
fn a_try_send_behind_bytes_waiting_for_room_hands_back_its_own_item_and_keeps_theirs() {
    run_paused(|| async {
        let (mock, _socket, mut tx) = over_the_high_watermark().await;
        feed_a_line_that_waits_for_room(&mut tx);
        match tx.try_send("tried".to_string()) {
            Err(FramedWriteError::Write(WriteError::QueueFull { payload, .. })) => {
                let payload = payload.to_vec().expect("in memory");
                assert_eq!(
                    payload, b"tried\n",
                    "the item tried comes back, not another"
                );
            }
            other => panic!("expected QueueFull, got {other:?}"),
        }
        settle().await;
        mock.release(Handle(1));
        SinkExt::<String>::flush(&mut tx).await.expect("flushed");
        settle().await;
        assert_eq!(
            mock.written(Handle(1)),
            format!("{}\nfed\n", "x".repeat(100)).as_bytes()
        );
    });
}

/// `send` is cancel-safe: dropped while it waits for room (a timeout), neither the bytes
/// fed before it nor its own item are lost; they go out, in order, when there is room.
#[test]
fn a_send_dropped_while_it_waits_for_room_loses_nothing_fed() {
    run_paused(|| async {
        let (mock, _socket, mut tx) = over_the_high_watermark().await;
        feed_a_line_that_waits_for_room(&mut tx);
        let timed_out =
            tokio::time::timeout(Duration::from_secs(1), tx.send("sent".to_string())).await;
        assert!(timed_out.is_err(), "no room within the timeout");
        mock.release(Handle(1));
        tx.send("next".to_string()).await.expect("sent");
        settle().await;
        assert_eq!(
            mock.written(Handle(1)),
            format!("{}\nfed\nsent\nnext\n", "x".repeat(100)).as_bytes()
        );
    });
}

#[actix::test]
async fn a_frame_over_the_limit_ends_the_stream_with_a_typed_error() {
    let listener = tokio::net::TcpListener::bind(local()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        stream.write_all(&[b'a'; 4096]).await.expect("write");
        // Held open until the socket closes its end.
        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut [0u8; 1]).await;
    });
    let (_tx, mut rx) = Socket::builder()
        .config(SocketConfig {
            max_frame_bytes: 1024,
            ..SocketConfig::default()
        })
        .connect_framed(addr, LinesCodec::new())
        .await
        .expect("connect");
    match rx.next().await {
        Some(Err(FrameError::Decode(e @ DecodeError::FrameTooLong { limit: 1024, .. }))) => {
            assert!(e.to_string().contains("max_frame_bytes"), "{e}");
        }
        other => panic!("expected FrameTooLong, got {other:?}"),
    }
    assert!(rx.next().await.is_none(), "the error is the last item");
}

/// Echoes what it reads through the writer it was made with.
struct Echo(Writer);

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for Echo {
    type Result = ();
    fn handle(&mut self, event: SocketEvent, _: &mut Context<Self>) {
        if let SocketEventKind::Received(bytes) = event.kind {
            self.0.write(bytes).expect("room");
        }
    }
}

#[actix::test]
async fn the_users_actor_is_made_with_its_writer() {
    let listener = tokio::net::TcpListener::bind(local()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _echo = Socket::builder()
        .connect_actor(addr, Echo)
        .await
        .expect("connect");
    let (mut peer, _) = listener.accept().await.expect("accept");
    peer.write_all(b"hello").await.expect("write");
    let mut buf = [0u8; 5];
    tokio::io::AsyncReadExt::read_exact(&mut peer, &mut buf)
        .await
        .expect("echo");
    assert_eq!(&buf, b"hello");
}

#[test]
fn a_refused_answered_write_is_visible_before_the_next_write() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let (_socket, writer) = writer_on_mock(&mock, watermarks(64, 32)).await;
        let first = writer.write_answered(vec![1u8; 100]);
        assert!(first.refused().is_none(), "an empty queue takes it");
        let second = writer.write_answered(vec![2u8; 10]);
        assert!(
            matches!(second.refused(), Some(WriteError::QueueFull { .. })),
            "the refusal is known without awaiting"
        );
        settle().await;
        mock.release(Handle(1));
        first.await.expect("written");
        assert!(matches!(second.await, Err(WriteError::QueueFull { .. })));
    });
}

#[test]
fn as_a_sink_items_are_buffered_until_a_flush_and_leave_as_one_write() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (socket, mut tx) = lines_on_mock(&mock, SocketConfig::default()).await;
        for i in 0..1000 {
            SinkExt::feed(&mut tx, format!("{i}")).await.expect("fed");
        }
        settle().await;
        assert!(
            mock.written(Handle(1)).is_empty(),
            "fed and not flushed: still in the writer's buffer"
        );
        SinkExt::<String>::flush(&mut tx).await.expect("flushed");
        // `try_send` writes what is buffered first, then its own item.
        SinkExt::feed(&mut tx, "fed".to_string())
            .await
            .expect("fed");
        tx.try_send("sent".to_string()).expect("sent");
        settle().await;
        let mut expected: String = (0..1000).map(|i| format!("{i}\n")).collect();
        expected.push_str("fed\nsent\n");
        assert_eq!(
            mock.written(Handle(1)),
            expected.as_bytes(),
            "every item, in order"
        );
        let stats = socket
            .send(sockactor::messages::GetStats)
            .await
            .expect("stats");
        assert_eq!(
            stats.writes, 2,
            "1,000 items flushed in one write, then the buffered item with the next"
        );
    });
}

#[test]
fn a_sink_writes_its_buffer_once_it_holds_buffered_bytes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (_socket, mut tx) = lines_on_mock(&mock, SocketConfig::default()).await;
        let line = "y".repeat(1023);
        let lines = 2 * FramedWriter::<LinesCodec>::BUFFERED / 1024;
        for _ in 0..lines {
            SinkExt::feed(&mut tx, line.clone()).await.expect("fed");
        }
        settle().await;
        let written = mock.written(Handle(1)).len();
        assert!(
            written >= FramedWriter::<LinesCodec>::BUFFERED,
            "a full buffer is written without a flush ({written} bytes out)"
        );
        SinkExt::<String>::flush(&mut tx).await.expect("flushed");
        settle().await;
        assert_eq!(mock.written(Handle(1)).len(), lines * 1024);
    });
}

#[test]
fn a_sink_dropped_with_items_unflushed_still_sends_them_in_order() {
    run_paused(|| async {
        let (mock, _socket, mut tx) = over_the_high_watermark().await;
        // The queue is over its high watermark: these wait in the writer's buffer.
        for i in 0..3 {
            SinkExt::feed(&mut tx, format!("fed {i}"))
                .await
                .expect("fed");
        }
        drop(tx);
        settle().await;
        mock.release(Handle(1));
        settle().await;
        let mut expected = format!("{}\n", "x".repeat(100));
        expected.push_str("fed 0\nfed 1\nfed 2\n");
        assert_eq!(mock.written(Handle(1)), expected.as_bytes());
    });
}

#[test]
fn a_sink_dropped_after_its_socket_closed_warns_of_what_it_could_not_send() {
    let (log, _guard) = WarnLog::start();
    run_paused(|| async {
        let mock = MockTransport::start();
        let (socket, mut tx) = lines_on_mock(&mock, SocketConfig::default()).await;
        // Buffered in the writer, not flushed: nothing has reached the socket.
        SinkExt::feed(&mut tx, "never sent".to_owned())
            .await
            .expect("fed");
        socket.do_send(Close::Abort);
        settle().await;
        drop(tx);
        settle().await;
        assert!(mock.written(Handle(1)).is_empty());
    });
    assert_eq!(
        log.lines_with("11 bytes"),
        1,
        "one warning names the 11 unsent bytes: {}",
        log.text()
    );
}

/// Writes the item, then refuses the ones that start with "bad" after writing part of
/// them (as a serializer failing half-way through `dst` does).
struct HalfWay;

impl tokio_util::codec::Encoder<String> for HalfWay {
    type Error = std::io::Error;
    fn encode(&mut self, item: String, dst: &mut bytes::BytesMut) -> Result<(), Self::Error> {
        dst.extend_from_slice(item.as_bytes());
        if item.starts_with("bad") {
            return Err(std::io::Error::other("refused half-way"));
        }
        dst.extend_from_slice(b"\n");
        Ok(())
    }
}

/// An encoder that fails half-way leaves none of the refused item's bytes to go out,
/// through the `Sink` and through `try_send`; the writer stays usable.
#[test]
fn an_item_the_encoder_refuses_half_way_leaves_no_bytes_behind() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = crate::support::mock_socket(&mock).await;
        let writer = socket
            .send(sockactor::messages::GetWriter)
            .await
            .expect("writer");
        let mut tx = writer.framed(HalfWay);
        SinkExt::feed(&mut tx, "a".to_string()).await.expect("fed");
        let refused = SinkExt::feed(&mut tx, "bad1".to_string()).await;
        assert!(
            matches!(refused, Err(FramedWriteError::Encode(_))),
            "{refused:?}"
        );
        SinkExt::<String>::flush(&mut tx).await.expect("flushed");
        assert!(matches!(
            tx.try_send("bad2".to_string()),
            Err(FramedWriteError::Encode(_))
        ));
        tx.try_send("b".to_string()).expect("sent");
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"a\nb\n");
    });
}

/// A `send` waiting for room when the socket is aborted is answered once, by its `Err`,
/// which names the item's bytes: the writer no longer holds them, so dropping it sends
/// nothing more (no second answer, to the subscriber).
#[test]
fn a_send_refused_by_a_closing_socket_is_answered_once_naming_its_bytes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let recorder = crate::support::Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(watermarks(64, 32))
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let writer: Writer = socket
            .send(sockactor::messages::GetWriter)
            .await
            .expect("writer");
        let mut tx = writer.clone().framed(tokio_util::codec::BytesCodec::new());
        writer
            .write(vec![1u8; 64])
            .expect("an empty queue takes it");
        socket.do_send(Close::Abort);
        let item = bytes::Bytes::from_static(b"framed item");
        let refused = tx.send(item.clone()).await;
        assert!(
            matches!(
                refused,
                Err(FramedWriteError::Write(
                    WriteError::Aborted { len: 11, .. } | WriteError::Closed { len: 11, .. }
                ))
            ),
            "{refused:?}"
        );
        settle().await;
        drop(tx);
        settle().await;
        let again = recorder.count(|e| {
            matches!(e, SocketEventKind::WriteFailed { error, .. }
                if matches!(error, WriteError::Aborted { len: 11, .. } | WriteError::Closed { len: 11, .. }))
        });
        assert_eq!(
            again,
            0,
            "answered a second time: {:?}",
            recorder.picked(|e| Some(format!("{e:?}")))
        );
        assert!(mock.written(Handle(1)).is_empty());
    });
}
