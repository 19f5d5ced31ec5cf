//! A single write larger than the queue's high watermark is not refused when the queue
//! has room: it is taken whole and sent whole. While it is queued the socket is
//! unwritable, so the next write is refused `QueueFull` with its payload back, and the
//! queue holds at most that one write; once it has drained, writes are taken again.

use crate::support::{mock_peer, pattern, run_paused, settle, watermarks};
use sockactor::messages::{GetStats, Handle, Write};
use sockactor::{MockTransport, SendStep, Socket, WriteError};

const HIGH: usize = 1024;
const BIG: usize = 64 * 1024;

#[test]
fn the_big_write_is_sent_whole_and_the_next_is_refused_until_it_drains() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(watermarks(HIGH, HIGH / 2))
            .connect(mock_peer())
            .await
            .expect("connect");
        let big = pattern(BIG, 5);
        let pending = actix::spawn(socket.send(Write::new(big.clone())));
        settle().await;
        assert!(!pending.is_finished(), "taken and held, not refused");

        let refused = socket
            .send(Write::new(&b"next"[..]))
            .await
            .expect("mailbox");
        match refused {
            Err(WriteError::QueueFull {
                queued,
                high_watermark,
                payload,
            }) => {
                assert_eq!((queued, high_watermark), (BIG, HIGH));
                assert_eq!(payload.to_vec().expect("in memory"), b"next");
            }
            other => panic!("expected QueueFull, got {other:?}"),
        }
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(
            (stats.queued_bytes, stats.queued_writes),
            (BIG as u64, 1),
            "only the big write is held"
        );

        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        let written = pending
            .await
            .expect("join")
            .expect("mailbox")
            .expect("written");
        assert_eq!(written.len, BIG);
        assert!(mock.written(Handle(1)) == big, "sent whole, byte exact");
        socket
            .send(Write::new(&b"after"[..]))
            .await
            .expect("mailbox")
            .expect("taken again once drained");
        assert_eq!(&mock.written(Handle(1))[BIG..], b"after");
    });
}
