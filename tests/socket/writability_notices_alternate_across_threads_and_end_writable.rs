//! Writability notices stay in order when the writer is on another thread: every
//! subscriber hears strictly alternating `false`, `true`, … and, once the queue has
//! drained, the last thing it heard is `true` (so a producer waiting for room never
//! stalls).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::support::{mock_peer, watermarks, Recorder};
use actix::prelude::*;
use sockactor::messages::{
    CloseSocket, Connect, GetStats, GetWriter, Handle, OpenSocket, Received, RecvFrom, SendV, Sent,
};
use sockactor::{Socket, SocketFunctions, TransportError, WriteError};

/// A transport that takes every byte at once and keeps only a count.
struct Swallow {
    bytes: Arc<AtomicU64>,
}

impl Actor for Swallow {
    type Context = Context<Self>;
}

impl Handler<OpenSocket> for Swallow {
    type Result = Result<Handle, TransportError>;
    fn handle(&mut self, _: OpenSocket, _: &mut Context<Self>) -> Self::Result {
        Ok(Handle(1))
    }
}

impl Handler<Connect> for Swallow {
    type Result = Result<(), TransportError>;
    fn handle(&mut self, _: Connect, _: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}

impl Handler<SendV> for Swallow {
    type Result = Result<Sent, TransportError>;
    fn handle(&mut self, msg: SendV, _: &mut Context<Self>) -> Self::Result {
        let n = msg.len();
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(Sent::Accepted(n))
    }
}

impl Handler<RecvFrom> for Swallow {
    type Result = Result<Received, TransportError>;
    fn handle(&mut self, _: RecvFrom, _: &mut Context<Self>) -> Self::Result {
        Ok(Received::WouldBlock)
    }
}

impl Handler<CloseSocket> for Swallow {
    type Result = Result<(), TransportError>;
    fn handle(&mut self, _: CloseSocket, _: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}

#[actix::test]
async fn every_subscriber_hears_alternating_notices_and_ends_writable() {
    const WRITES: u64 = 200_000;
    let swallowed = Arc::new(AtomicU64::new(0));
    let transport = Swallow {
        bytes: swallowed.clone(),
    }
    .start();
    let recorders: Vec<Recorder> = (0..32).map(|_| Recorder::default()).collect();
    let mut builder = Socket::builder()
        .functions(SocketFunctions::from_actor(transport))
        .config(watermarks(8_000, 4_000));
    for r in &recorders {
        builder = builder.writability_subscriber(r.start().recipient());
    }
    let socket = builder.connect(mock_peer()).await.expect("connect");
    let writer = socket.send(GetWriter).await.expect("writer");

    // The producer runs on a thread of its own, pushing as fast as the queue lets it.
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut accepted = 0u64;
            while accepted < WRITES {
                match writer.write(vec![7u8; 1_000]) {
                    Ok(()) => accepted += 1,
                    Err(WriteError::QueueFull { .. }) => std::thread::yield_now(),
                    Err(other) => panic!("unexpected refusal: {other}"),
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    // Wait (without sleeping) until the producer is done and the queue has drained.
    loop {
        tokio::task::yield_now().await;
        if done.load(Ordering::SeqCst) && swallowed.load(Ordering::Relaxed) == WRITES * 1_000 {
            let stats = socket.send(GetStats).await.expect("stats");
            if stats.queued_bytes == 0 {
                break;
            }
        }
    }
    producer.join().expect("producer");
    // Let every notice already sent reach its subscriber.
    for _ in 0..256 {
        tokio::task::yield_now().await;
    }

    for (i, r) in recorders.iter().enumerate() {
        let heard = r.writability();
        assert!(!heard.is_empty(), "subscriber {i} heard nothing");
        for (k, pair) in heard.windows(2).enumerate() {
            assert_ne!(
                pair[0],
                pair[1],
                "subscriber {i}: notice {k} and {} repeat {} ({} notices)",
                k + 1,
                pair[0],
                heard.len()
            );
        }
        assert!(!heard[0], "subscriber {i}: the first notice is `false`");
        assert_eq!(
            heard.last(),
            Some(&true),
            "subscriber {i} ended on `false` with an empty queue"
        );
    }
}
