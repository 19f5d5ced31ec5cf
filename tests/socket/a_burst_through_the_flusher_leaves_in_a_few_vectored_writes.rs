//! Coalescing (c-ares' pending-write callback): 1,000 writes from 10 producer actors in
//! one burst reach the transport in a handful of `sendv` calls through a deferred socket,
//! against one call per write with the immediate policy; and nothing is sent before the
//! Flusher answers (the socket never flushes on the notification path).

use std::sync::{Arc, Mutex};

use crate::support::{mock_peer, run_paused, settle};
use actix::prelude::*;
use bytes::Bytes;
use sockactor::messages::{Flush, GetStats, Handle, PendingWrite, Write};
use sockactor::{FlushPolicy, Flusher, MockTransport, Socket};

const PRODUCERS: usize = 10;
const WRITES_EACH: usize = 100;
const TOTAL: usize = PRODUCERS * WRITES_EACH;

/// Sends its share of the burst when told to.
struct Producer {
    id: usize,
    socket: Addr<Socket>,
}

impl Actor for Producer {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Go;

impl Handler<Go> for Producer {
    type Result = ();
    fn handle(&mut self, _: Go, _: &mut Context<Self>) {
        for i in 0..WRITES_EACH {
            let line = format!("p{:02} w{:03} {:>54}\n", self.id, i, "");
            self.socket.do_send(Write::new(Bytes::from(line)));
        }
    }
}

/// Starts the producers and fires the burst; waits until the mock has every byte.
async fn burst(policy: FlushPolicy) -> (MockTransport, Addr<Socket>) {
    let mock = MockTransport::start();
    let socket = Socket::builder()
        .functions(mock.functions())
        .flush_policy(policy)
        .connect(mock_peer())
        .await
        .expect("connect");
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            Producer {
                id,
                socket: socket.clone(),
            }
            .start()
        })
        .collect();
    settle().await;
    for p in &producers {
        p.do_send(Go);
    }
    for _ in 0..100 {
        settle().await;
        if mock.written(Handle(1)).len() == TOTAL * 64 {
            break;
        }
    }
    (mock, socket)
}

fn assert_every_write_arrived_whole(written: &[u8]) {
    assert_eq!(written.len(), TOTAL * 64);
    let mut next = [0usize; PRODUCERS];
    for line in written.chunks(64) {
        let text = std::str::from_utf8(line).expect("utf8");
        let p: usize = text[1..3].parse().expect("producer");
        let w: usize = text[5..8].parse().expect("write");
        assert_eq!(w, next[p], "a producer's writes stay in order");
        next[p] += 1;
    }
}

#[test]
fn deferred_socket_sends_the_burst_in_a_handful_of_sendv_calls() {
    run_paused(|| async {
        let (mock, socket) = burst(FlushPolicy::Deferred(Flusher::current().recipient())).await;
        assert_every_write_arrived_whole(&mock.written(Handle(1)));
        let calls = mock.sendv_calls(Handle(1));
        assert!(calls <= 5, "{calls} sendv calls for {TOTAL} writes");
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(stats.writes_completed, TOTAL as u64);
        assert_eq!(stats.sendv_calls, calls as u64);
    });
}

#[test]
fn immediate_socket_sends_each_write_at_once() {
    run_paused(|| async {
        let (mock, _socket) = burst(FlushPolicy::Immediate).await;
        assert_every_write_arrived_whole(&mock.written(Handle(1)));
        assert_eq!(mock.sendv_calls(Handle(1)), TOTAL);
    });
}

/// A Flusher that answers only when the test says so.
#[derive(Default)]
struct HeldFlusher {
    pending: Arc<Mutex<Vec<Recipient<Flush>>>>,
    notifications: Arc<Mutex<usize>>,
}

impl Actor for HeldFlusher {
    type Context = Context<Self>;
}

impl Handler<PendingWrite> for HeldFlusher {
    type Result = ();
    fn handle(&mut self, msg: PendingWrite, _: &mut Context<Self>) {
        *self.notifications.lock().expect("lock") += 1;
        self.pending.lock().expect("lock").push(msg.flush);
    }
}

#[test]
fn nothing_is_sent_before_the_flusher_answers() {
    run_paused(|| async {
        let pending = Arc::new(Mutex::new(Vec::new()));
        let notifications = Arc::new(Mutex::new(0));
        let flusher = HeldFlusher {
            pending: pending.clone(),
            notifications: notifications.clone(),
        }
        .start();
        let mock = MockTransport::start();
        let socket = Socket::builder()
            .functions(mock.functions())
            .flush_policy(FlushPolicy::Deferred(flusher.recipient()))
            .connect(mock_peer())
            .await
            .expect("connect");
        for i in 0..TOTAL {
            socket.do_send(Write::new(Bytes::from(format!("{i:>63}\n"))));
        }
        settle().await;
        assert_eq!(mock.sendv_calls(Handle(1)), 0, "no sendv before the Flush");
        assert_eq!(
            *notifications.lock().expect("lock"),
            1,
            "one PendingWrite for the burst"
        );
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!(stats.queued_writes, TOTAL as u64);

        for r in pending.lock().expect("lock").drain(..) {
            r.do_send(Flush);
        }
        settle().await;
        assert_eq!(mock.written(Handle(1)).len(), TOTAL * 64);
        assert_eq!(
            mock.sendv_calls(Handle(1)),
            1,
            "1,000 segments fit one iovec array"
        );
    });
}

/// `Written::max_writes_per_sendv` counts writes, not queue entries: 63 small
/// fire-and-forget writes (one run in the queue) and an answered one, all in one `sendv`,
/// make 64.
#[test]
fn the_coalescing_a_write_reports_counts_every_write_of_its_sendv() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let socket = crate::support::mock_socket(&mock).await;
        for i in 0..63u8 {
            socket.do_send(Write::new(vec![i; 8]));
        }
        let written = socket
            .send(Write::new(vec![63u8; 8]))
            .await
            .expect("mailbox")
            .expect("written");
        assert_eq!(mock.sendv_calls(Handle(1)), 1, "one vectored write");
        assert_eq!(written.max_writes_per_sendv, 64);
    });
}
