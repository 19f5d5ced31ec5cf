//! If a socket's Flusher has stopped, writes are not stranded: the socket falls back to
//! sending at once.

use crate::support::{mock_peer, run_paused, settle};
use actix::prelude::*;
use sockactor::messages::{Flush, Handle, PendingWrite, Write};
use sockactor::{FlushPolicy, MockTransport, Socket};

/// A flusher that answers at once until told to stop.
struct MortalFlusher;

impl Actor for MortalFlusher {
    type Context = Context<Self>;
}

impl Handler<PendingWrite> for MortalFlusher {
    type Result = ();
    fn handle(&mut self, msg: PendingWrite, _: &mut Context<Self>) {
        msg.flush.do_send(Flush);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Die;

impl Handler<Die> for MortalFlusher {
    type Result = ();
    fn handle(&mut self, _: Die, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[test]
fn writes_still_go_out_after_the_flusher_stopped() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let flusher = MortalFlusher.start();
        let socket = Socket::builder()
            .functions(mock.functions())
            .flush_policy(FlushPolicy::Deferred(flusher.clone().recipient()))
            .connect(mock_peer())
            .await
            .expect("connect");
        socket
            .send(Write::new(&b"one "[..]))
            .await
            .expect("mailbox")
            .expect("written");
        flusher.do_send(Die);
        settle().await;
        assert!(!flusher.connected());
        socket
            .send(Write::new(&b"two"[..]))
            .await
            .expect("mailbox")
            .expect("written without a Flusher");
        assert_eq!(mock.written(Handle(1)), b"one two");
    });
}

/// The Flusher stops with the socket's `PendingWrite` still in its mailbox, unhandled:
/// the socket learns it and falls back, for good. Stream and datagram sockets.
#[test]
fn a_request_lost_in_a_stopping_flushers_mailbox_strands_no_write() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let flusher = MortalFlusher.start();
        let socket = Socket::builder()
            .functions(mock.functions())
            .flush_policy(FlushPolicy::Deferred(flusher.clone().recipient()))
            .connect(mock_peer())
            .await
            .expect("connect");
        // `Die` is handled first; the request behind it dies with the mailbox.
        flusher.do_send(Die);
        let first = socket.send(Write::new(&b"one "[..]));
        let first = tokio::time::timeout(std::time::Duration::from_secs(60), first)
            .await
            .expect("answered, not stranded")
            .expect("mailbox");
        assert_eq!(first.expect("written").len, 4);
        socket
            .send(Write::new(&b"two"[..]))
            .await
            .expect("mailbox")
            .expect("written without a Flusher");
        assert_eq!(mock.written(Handle(1)), b"one two");

        let flusher = MortalFlusher.start();
        let (datagrams, _) = sockactor::DatagramSocket::builder()
            .functions(mock.functions())
            .flush_policy(FlushPolicy::Deferred(flusher.clone().recipient()))
            .bind(crate::support::local())
            .await
            .expect("bind");
        flusher.do_send(Die);
        let sent =
            datagrams.send(sockactor::messages::SendDatagram::new(&b"three"[..]).to(mock_peer()));
        tokio::time::timeout(std::time::Duration::from_secs(60), sent)
            .await
            .expect("answered, not stranded")
            .expect("mailbox")
            .expect("sent");
    });
}
