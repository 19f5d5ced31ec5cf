//! Writes that arrive while a flush is under way (while the transport would block, or
//! while the Flusher's answer is in flight) go out with that flush: nothing waits for
//! another burst (Netty's FlushConsolidationHandler bug).

use std::time::Duration;

use crate::support::{mock_peer, mock_socket, run_paused, settle};
use bytes::Bytes;
use sockactor::messages::{Handle, Write};
use sockactor::{Flusher, MockTransport, SendStep, Socket};

#[test]
fn writes_made_while_blocked_go_out_when_writable() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::from_millis(10))]);
        let socket = mock_socket(&mock).await;
        let first = socket.send(Write::new(Bytes::from_static(b"first ")));
        let first = actix::spawn(first);
        settle().await;
        // The flush met a would-block; these writes arrive during it.
        assert_eq!(mock.sendv_calls(Handle(1)), 1);
        let second = actix::spawn(socket.send(Write::new(Bytes::from_static(b"second "))));
        let third = actix::spawn(socket.send(Write::new(Bytes::from_static(b"third"))));
        settle().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        for w in [first, second, third] {
            w.await.expect("join").expect("mailbox").expect("written");
        }
        assert_eq!(mock.written(Handle(1)), b"first second third");
        let log = mock.sendv_log(Handle(1));
        assert_eq!(
            log.len(),
            2,
            "one would-block, then one write carrying all three: {log:?}"
        );
        // All three writes' bytes in that one write; small writes are copied into the
        // socket's staging buffer, so they leave as one segment.
        assert_eq!(log[1].offered, b"first second third".len());
        assert_eq!(log[1].accepted, log[1].offered);
        assert_eq!(log[1].segments, 1, "one run of copied writes");
        // No PendingWrite went out for writes made during the flush.
        let stats = socket
            .send(sockactor::messages::GetStats)
            .await
            .expect("stats");
        assert_eq!(stats.pending_writes, 1);
    });
}

#[test]
fn writes_made_while_the_flush_request_is_pending_go_out_with_it() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = Socket::builder()
            .functions(mock.functions())
            .flusher(Flusher::current())
            .connect(mock_peer())
            .await
            .expect("connect");
        let a = actix::spawn(socket.send(Write::new(Bytes::from_static(b"a"))));
        // Arrives after the PendingWrite went out, before the Flush came back.
        socket.do_send(Write::new(Bytes::from_static(b"b")));
        a.await.expect("join").expect("mailbox").expect("written");
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"ab");
        assert_eq!(mock.sendv_calls(Handle(1)), 1);
    });
}
