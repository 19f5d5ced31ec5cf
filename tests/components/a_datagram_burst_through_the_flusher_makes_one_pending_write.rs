//! Datagram sockets coalesce their wake-ups through the Flusher like stream sockets: a
//! burst of datagrams asks the Flusher once, nothing is sent before its `Flush`, and the
//! `Flush` sends every queued datagram, one `sendv` each with its destination. Without a
//! Flusher each datagram goes out at once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::support::{local, run_paused, settle};
use actix::prelude::*;
use sockactor::messages::{Flush, GetDatagramStats, Handle, PendingWrite, SendDatagram};
use sockactor::{DatagramSocket, FlushPolicy, Flusher, MockTransport};

const BURST: usize = 100;

fn to(i: usize) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, (i % 4) as u8 + 1], 9000))
}

/// A Flusher that answers only when the test says so.
#[derive(Default)]
struct HeldFlusher {
    pending: Arc<Mutex<Vec<Recipient<Flush>>>>,
}

impl Actor for HeldFlusher {
    type Context = Context<Self>;
}

impl Handler<PendingWrite> for HeldFlusher {
    type Result = ();
    fn handle(&mut self, msg: PendingWrite, _: &mut Context<Self>) {
        self.pending.lock().expect("lock").push(msg.flush);
    }
}

#[test]
fn a_burst_asks_the_flusher_once_and_its_flush_sends_every_datagram() {
    run_paused(|| async {
        let pending = Arc::new(Mutex::new(Vec::new()));
        let flusher = HeldFlusher {
            pending: pending.clone(),
        }
        .start();
        let mock = MockTransport::start();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .flush_policy(FlushPolicy::Deferred(flusher.recipient()))
            .bind(local())
            .await
            .expect("bind");
        for i in 0..BURST {
            socket.do_send(SendDatagram::new(format!("datagram {i:03}").into_bytes()).to(to(i)));
        }
        settle().await;
        assert_eq!(
            pending.lock().expect("lock").len(),
            1,
            "one PendingWrite for the burst"
        );
        assert_eq!(
            mock.sendv_calls(Handle(1)),
            0,
            "nothing sent before the Flush"
        );
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!(stats.queued, BURST as u64);

        for r in pending.lock().expect("lock").drain(..) {
            r.do_send(Flush);
        }
        settle().await;
        let sent = mock.datagrams(Handle(1));
        assert_eq!(sent.len(), BURST);
        for (i, d) in sent.iter().enumerate() {
            assert_eq!(d.bytes, format!("datagram {i:03}").into_bytes());
            assert_eq!(d.to, Some(to(i).into()));
        }
        assert_eq!(mock.sendv_calls(Handle(1)), BURST, "one sendv per datagram");
        assert!(
            pending.lock().expect("lock").is_empty(),
            "no second PendingWrite"
        );
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!(
            (stats.sent, stats.pending_writes, stats.queued),
            (BURST as u64, 1, 0)
        );
    });
}

#[test]
fn with_the_thread_flusher_a_burst_costs_one_pending_write() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .flusher(Flusher::current())
            .bind(local())
            .await
            .expect("bind");
        for i in 0..BURST {
            socket.do_send(SendDatagram::new(vec![i as u8; 32]).to(to(i)));
        }
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!(stats.pending_writes, 1);
        settle().await;
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!(
            (stats.sent, stats.sendv_calls, stats.pending_writes),
            (BURST as u64, BURST as u64, 1)
        );
        let sent = mock.datagrams(Handle(1));
        assert!(sent
            .iter()
            .enumerate()
            .all(|(i, d)| d.bytes == vec![i as u8; 32]));
    });
}

#[test]
fn without_a_flusher_each_datagram_goes_out_at_once() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .immediate()
            .bind(local())
            .await
            .expect("bind");
        for i in 0..5 {
            socket
                .send(SendDatagram::new(vec![i as u8; 8]).to(to(i)))
                .await
                .expect("answered")
                .expect("sent");
            assert_eq!(mock.sendv_calls(Handle(1)), i + 1);
        }
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!(stats.pending_writes, 0, "no Flusher involved");
    });
}
