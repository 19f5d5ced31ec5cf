//! `SocketConfig::drain_timeout`: a graceful close that has not sent every queued write
//! when the time is up turns into an abort. The write partly sent is answered `Aborted`
//! with the bytes that went out, those behind it with 0, the handle closes and the
//! subscriber hears `Closed` once. A close that drains in time is not touched, and
//! without a drain timeout a draining socket waits as long as it takes.

use std::time::Duration;

use crate::support::{mock_peer, run_paused, settle, Recorder};
use sockactor::messages::{Close, Handle, SocketEventKind, Write};
use sockactor::{MockTransport, SendStep, Socket, SocketConfig, WriteError};

fn config(drain_timeout: Option<Duration>) -> SocketConfig {
    SocketConfig {
        drain_timeout,
        ..SocketConfig::default()
    }
}

#[test]
fn a_close_that_cannot_drain_in_time_is_aborted_with_how_far_each_write_got() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // The peer takes 10 bytes and then nothing more.
        mock.script_sendv(Handle(1), vec![SendStep::Accept(10)]);
        mock.set_default_step(SendStep::Hold);
        let recorder = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config(Some(Duration::from_secs(5))))
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let first = actix::spawn(socket.send(Write::new(vec![1u8; 100])));
        let second = actix::spawn(socket.send(Write::new(vec![2u8; 50])));
        settle().await;
        let closed_at = tokio::time::Instant::now();
        socket.do_send(Close::Graceful);
        let first = first.await.expect("join").expect("mailbox");
        let waited = closed_at.elapsed();
        assert!(
            matches!(
                first,
                Err(WriteError::Aborted {
                    bytes_sent: 10,
                    len: 100
                })
            ),
            "{first:?}"
        );
        assert!(
            waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
            "aborted when the drain timeout ran out, after {waited:?}"
        );
        let second = second.await.expect("join").expect("mailbox");
        assert!(
            matches!(
                second,
                Err(WriteError::Aborted {
                    bytes_sent: 0,
                    len: 50
                })
            ),
            "{second:?}"
        );
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        assert_eq!(mock.written(Handle(1)), vec![1u8; 10]);
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Closed { .. })),
            1
        );
    });
}

#[test]
fn a_close_that_drains_in_time_is_not_touched() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            vec![
                SendStep::WouldBlock(Duration::from_secs(2)),
                SendStep::AcceptAll,
            ],
        );
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config(Some(Duration::from_secs(5))))
            .connect(mock_peer())
            .await
            .expect("connect");
        let write = actix::spawn(socket.send(Write::new(vec![7u8; 64])));
        settle().await;
        socket.do_send(Close::Graceful);
        let written = write.await.expect("join").expect("mailbox");
        assert_eq!(written.expect("sent whole").len, 64);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(mock.is_closed(Handle(1)));
        assert_eq!(mock.written(Handle(1)), vec![7u8; 64]);
    });
}

#[test]
fn without_a_drain_timeout_a_draining_socket_waits_as_long_as_it_takes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config(None))
            .connect(mock_peer())
            .await
            .expect("connect");
        let write = actix::spawn(socket.send(Write::new(vec![3u8; 32])));
        settle().await;
        socket.do_send(Close::Graceful);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!write.is_finished(), "still draining after an hour");
        assert!(!mock.is_closed(Handle(1)));
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        let written = write.await.expect("join").expect("mailbox");
        assert_eq!(written.expect("sent whole").len, 32);
        settle().await;
        assert!(mock.is_closed(Handle(1)));
    });
}

#[test]
fn a_close_that_drained_leaves_no_timer_keeping_the_actor_alive() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let registry = sockactor::Registry::new();
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config(Some(Duration::from_secs(30))))
            .registry(&registry)
            .connect(mock_peer())
            .await
            .expect("connect");
        socket
            .send(Write::new(&b"quick"[..]))
            .await
            .expect("mailbox")
            .expect("written");
        socket.do_send(Close::Graceful);
        drop(socket);
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        assert!(
            registry.is_empty(),
            "the actor stopped with its close, not when the drain timeout would have fired"
        );
    });
}

/// The runtime ends (its `block_on` returns with the socket's address still held) while
/// a socket with a drain timeout has a write out: actix drops the actor, which starts
/// its graceful close with no runtime left to arm the drain timer. Nothing panics.
#[test]
fn the_runtime_ending_under_a_socket_with_a_drain_timeout_does_not_panic() {
    let panics = crate::support::panics_on_this_thread_during(|| {
        let _kept = run_paused(|| async {
            let mock = MockTransport::start();
            mock.script_sendv(Handle(1), [SendStep::Hold]);
            let socket = Socket::builder()
                .functions(mock.functions())
                .config(config(Some(Duration::from_secs(2))))
                .connect(mock_peer())
                .await
                .expect("connect");
            socket.do_send(Write::new(vec![7u8; 100]).tag(5));
            settle().await;
            socket
        });
    });
    assert_eq!(panics, 0, "panics while the runtime ended");
}
