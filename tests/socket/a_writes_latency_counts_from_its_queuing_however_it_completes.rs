//! `Written::latency` counts from when the write was queued, for a `send` whose answer
//! comes from a transport callback with no other message in between (the socket reads the
//! clock for a `send` only once its response parks the reply channel), and for a
//! `Writer::write_answered`.

use std::time::Duration;

use crate::support::{mock_peer, run_paused};
use bytes::Bytes;
use sockactor::messages::{GetWriter, Handle, Write};
use sockactor::{MockTransport, SendStep, Socket};

#[test]
fn a_sends_latency_covers_a_would_block_answered_by_a_callback() {
    for immediate in [true, false] {
        run_paused(|| async move {
            let mock = MockTransport::start();
            mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::from_millis(25))]);
            let builder = Socket::builder().functions(mock.functions());
            let builder = if immediate {
                builder.immediate()
            } else {
                builder
            };
            let socket = builder.connect(mock_peer()).await.expect("connect");
            let done = socket
                .send(Write::new(Bytes::from_static(b"slow")))
                .await
                .expect("mailbox")
                .expect("written");
            assert_eq!(done.len, 4);
            assert_eq!(done.would_blocks, 1);
            assert!(
                done.latency >= Duration::from_millis(25),
                "immediate {immediate}: latency {:?} misses the would-block",
                done.latency
            );
        });
    }
}

#[test]
fn a_sends_latency_covers_a_slow_transport_whose_answer_completes_it() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // The transmit goes out inside the write's own handler; its answer, the write's
        // completion, is the next thing the socket hears.
        mock.script_sendv(
            Handle(1),
            [SendStep::Slow {
                bytes: 100,
                after: Duration::from_millis(25),
            }],
        );
        let socket = Socket::builder()
            .functions(mock.functions())
            .immediate()
            .connect(mock_peer())
            .await
            .expect("connect");
        let done = socket
            .send(Write::new(Bytes::from_static(b"slow")))
            .await
            .expect("mailbox")
            .expect("written");
        assert_eq!(done.sendv_calls, 1);
        assert!(
            done.latency >= Duration::from_millis(25),
            "{:?}",
            done.latency
        );
    });
}

#[test]
fn a_writers_answered_write_counts_its_latency_too() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::WouldBlock(Duration::from_millis(25))]);
        let socket = Socket::builder()
            .functions(mock.functions())
            .connect(mock_peer())
            .await
            .expect("connect");
        let writer = socket.send(GetWriter).await.expect("writer");
        let done = writer.write_answered(&b"slow"[..]).await.expect("written");
        assert!(
            done.latency >= Duration::from_millis(25),
            "{:?}",
            done.latency
        );
    });
}
