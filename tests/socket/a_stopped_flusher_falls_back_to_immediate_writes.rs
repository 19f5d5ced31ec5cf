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
