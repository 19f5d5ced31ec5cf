//! The registry: every registered socket by id with its peer, state, user data and live
//! counters, readable from any thread; an entry goes when its actor ends, so nothing
//! stale stays behind.

use std::sync::Arc;

use crate::support::{mock_peer, run_paused, settle};
use sockactor::messages::{AssignUserData, Close, GetInfo, GetStats, Handle, Write};
use sockactor::{MockTransport, Registry, SendStep, Socket, SocketState, WriteError};

#[test]
fn registered_sockets_are_listed_then_removed_when_their_actors_end() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let registry = Registry::new();
        let mut sockets = Vec::new();
        for i in 0..20u32 {
            let socket = Socket::builder()
                .functions(mock.functions())
                .registry(&registry)
                .user_data(Arc::new(i))
                .connect(mock_peer())
                .await
                .expect("connect");
            sockets.push(socket);
        }
        assert_eq!(registry.len(), 20);

        // Lookup by id: peer, state, user data, counters, a writer.
        let first = sockets[0].send(GetInfo).await.expect("info");
        let entry = registry.get(first.id).expect("registered");
        assert_eq!(entry.peer(), Some(&mock_peer().into()));
        assert_eq!(entry.state(), SocketState::Open);
        assert_eq!(
            entry.user_data().and_then(|d| d.downcast_ref::<u32>()),
            Some(&0)
        );
        entry.writer().write(&b"hello"[..]).expect("queued");
        sockets[0].do_send(Write::new(&b" world"[..]));
        settle().await;
        assert_eq!(
            registry.get(first.id).expect("entry").stats().bytes_sent,
            11
        );
        sockets[0].do_send(AssignUserData(Some(Arc::new(99u32))));
        settle().await;
        let data = registry.get(first.id).expect("entry").user_data().cloned();
        assert_eq!(
            data.and_then(|d| d.downcast_ref::<u32>().copied()),
            Some(99)
        );

        // Readable from another thread while the sockets run.
        let seen = {
            let registry = registry.clone();
            std::thread::spawn(move || registry.iter().len())
                .join()
                .expect("thread")
        };
        assert_eq!(seen, 20);

        // Close half gracefully, abort the rest: the entries say so.
        for (i, s) in sockets.iter().enumerate() {
            s.do_send(if i.is_multiple_of(2) {
                Close::Graceful
            } else {
                Close::Abort
            });
        }
        settle().await;
        assert!(registry
            .iter()
            .iter()
            .all(|s| s.state() == SocketState::Closed));

        // The actors end when their last address goes, and take their entries along.
        drop(sockets);
        settle().await;
        assert!(registry.is_empty(), "{} stale entries", registry.len());
    });
}

/// A write refused by message (answered to a `send`, or a `do_send`'s) is counted in
/// the registry's live counters at once, as `GetStats` counts it, however long the
/// socket then stays idle.
#[test]
fn refused_writes_reach_the_registrys_live_counters() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let registry = Registry::new();
        let socket = Socket::builder()
            .functions(mock.functions())
            .registry(&registry)
            .config(crate::support::watermarks(100, 50))
            .connect(mock_peer())
            .await
            .expect("connect");
        let id = socket.send(GetInfo).await.expect("info").id;
        let handle = registry.get(id).expect("registered");
        socket.do_send(Write::new(vec![1u8; 100]));
        settle().await;
        let refused = socket
            .send(Write::new(&b"more"[..]))
            .await
            .expect("mailbox");
        assert!(
            matches!(refused, Err(WriteError::QueueFull { .. })),
            "{refused:?}"
        );
        settle().await;
        assert_eq!(
            handle.stats().writes_failed,
            1,
            "a refusal answered to a send"
        );
        socket.do_send(Write::new(&b"more"[..]));
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        settle().await;
        assert_eq!(handle.stats().writes_failed, 2, "a do_send's refusal");
        let asked = socket.send(GetStats).await.expect("stats");
        assert_eq!(handle.stats(), asked);
    });
}
