//! A zero-length write is a valid write: into an empty queue it is answered at once with
//! `len: 0` and no `sendv`; behind queued writes it waits for them and is answered after
//! them; through a `Writer` the same. It never puts a byte on the wire.

use crate::support::{mock_socket, run_paused, settle};
use bytes::Bytes;
use sockactor::messages::{GetStats, GetWriter, Handle, Write};
use sockactor::{MockTransport, SendStep};

#[test]
fn into_an_empty_queue_it_is_answered_at_once_without_a_sendv() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = mock_socket(&mock).await;
        let written = socket
            .send(Write::new(Bytes::new()))
            .await
            .expect("mailbox")
            .expect("written");
        assert_eq!(written.len, 0);
        let writer = socket.send(GetWriter).await.expect("writer");
        let through_writer = writer
            .write_answered(Bytes::new())
            .await
            .expect("written through the writer");
        assert_eq!(through_writer.len, 0);
        settle().await;
        assert_eq!(mock.sendv_calls(Handle(1)), 0, "nothing to send, no sendv");
        assert!(mock.written(Handle(1)).is_empty());
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(stats.bytes_sent, 0);
    });
}

#[test]
fn behind_a_queued_write_it_is_answered_after_it() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let socket = mock_socket(&mock).await;
        let first = actix::spawn(socket.send(Write::new(&b"first"[..])));
        settle().await;
        let empty = actix::spawn(socket.send(Write::new(Bytes::new())));
        settle().await;
        assert!(
            !first.is_finished(),
            "the first write is held by the transport"
        );
        assert!(
            !empty.is_finished(),
            "the empty write waits behind the held one, not answered before it"
        );
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        let first = first
            .await
            .expect("join")
            .expect("mailbox")
            .expect("written");
        let empty = empty
            .await
            .expect("join")
            .expect("mailbox")
            .expect("written");
        assert_eq!((first.len, empty.len), (5, 0));
        assert_eq!(mock.written(Handle(1)), b"first");
    });
}
