//! A `Writer` outliving its socket, whose arbiter stopped (idle, or with writes held in
//! flight, when actix drops the actor without `stopped`): every awaited write resolves,
//! a wait for room ends with an error, later writes are refused with `Closed` at once,
//! `is_writable` says no, and nothing counts as queued.

use std::time::Duration;

use crate::support::{mock_peer, watermarks};
use actix::prelude::*;
use sockactor::messages::{GetWriter, Handle};
use sockactor::{IoBatch, MockTransport, SendStep, Socket, WriteError, WriteFuture, Writer};

const LONG: Duration = Duration::from_secs(30);

/// A socket over `mock` on a new arbiter, and its writer.
async fn socket_on_an_arbiter(mock: &MockTransport) -> (Arbiter, Writer) {
    let functions = mock.functions();
    let arbiter = Arbiter::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    arbiter.spawn_fn(move || {
        actix::spawn(async move {
            let socket = Socket::builder()
                .functions(functions)
                .config(watermarks(1000, 100))
                .connect(mock_peer())
                .await
                .expect("connect");
            let writer = socket.send(GetWriter).await.expect("writer");
            let _ = tx.send(writer);
        });
    });
    (arbiter, rx.await.expect("the writer, from the arbiter"))
}

async fn stop(arbiter: Arbiter) {
    arbiter.stop();
    tokio::task::spawn_blocking(move || arbiter.join())
        .await
        .expect("join")
        .expect("the arbiter stopped");
}

/// What `writer` says after its socket is gone; the awaited `futures` resolve with errors.
async fn after_the_end(writer: &Writer, futures: Vec<WriteFuture>) {
    for (i, f) in futures.into_iter().enumerate() {
        let answer = tokio::time::timeout(LONG, f).await.expect("resolved");
        assert!(
            answer.is_err(),
            "write {i} could not have gone out: {answer:?}"
        );
    }
    let room = tokio::time::timeout(LONG, writer.writable())
        .await
        .expect("resolved");
    assert!(room.is_err(), "no room on a socket that is gone: {room:?}");
    assert!(!writer.is_writable());
    assert!(matches!(
        writer.write(vec![9u8; 10]),
        Err(WriteError::Closed {
            bytes_sent: 0,
            len: 10
        })
    ));
    assert!(writer.write_answered(vec![9u8; 3]).refused().is_some());
    assert!(writer
        .write_each(vec![IoBatch::from(vec![1u8; 2])])
        .is_err());
    assert_eq!(writer.queued_bytes(), 0, "nothing is queued or on its way");
}

#[actix::test]
async fn the_arbiter_stopped_with_writes_in_flight() {
    let mock = MockTransport::start();
    mock.set_default_step(SendStep::Hold);
    let (arbiter, writer) = socket_on_an_arbiter(&mock).await;
    let futures: Vec<_> = (0..4u8)
        .map(|i| writer.write_answered(vec![i; 300]))
        .collect();
    assert!(
        !writer.is_writable(),
        "1,200 bytes reach the high watermark"
    );
    let waiter = {
        let writer = writer.clone();
        tokio::spawn(async move { writer.writable().await })
    };
    // The socket takes the writes and puts its transmit out (held).
    for _ in 0..200 {
        if mock.sendv_calls(Handle(1)) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        mock.sendv_calls(Handle(1)),
        1,
        "one transmit held in flight"
    );
    stop(arbiter).await;
    let woke = tokio::time::timeout(LONG, waiter).await.expect("woke");
    assert!(
        matches!(woke, Ok(Err(_))),
        "the wait for room ends: {woke:?}"
    );
    after_the_end(&writer, futures).await;
}

#[actix::test]
async fn the_arbiter_stopped_while_the_socket_was_idle() {
    let mock = MockTransport::start();
    let (arbiter, writer) = socket_on_an_arbiter(&mock).await;
    writer
        .write_answered(vec![1u8; 10])
        .await
        .expect("written while the arbiter runs");
    stop(arbiter).await;
    after_the_end(&writer, Vec::new()).await;
}
