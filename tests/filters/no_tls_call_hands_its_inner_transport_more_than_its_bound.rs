//! Fairness through TLS: however large the writes, no `sendv` the TLS filter makes on its
//! inner transport (handshake, records, close_notify) carries more than its per-call
//! bound, and the bytes still arrive byte exact at a TLS echo listener and back.

use crate::support::tls::{client_config, collect, echo_listener, pki, write_mixed};
use crate::support::{channel_subscriber, pattern};
use actix::prelude::*;
use bytes::Bytes;
use sockactor::filters::Tls;
use sockactor::messages::{Close, SendV, Sent, StopListening};
use sockactor::{Socket, SocketFunctions, TransportError};

/// Forwards every `sendv` to the system transport, remembering the largest offered.
struct Largest {
    inner: Recipient<SendV>,
    largest: usize,
    calls: usize,
}

impl Actor for Largest {
    type Context = Context<Self>;
}

impl Handler<SendV> for Largest {
    type Result = ResponseFuture<Result<Sent, TransportError>>;
    fn handle(&mut self, msg: SendV, _: &mut Context<Self>) -> Self::Result {
        self.largest = self.largest.max(msg.len());
        self.calls += 1;
        let inner = self.inner.clone();
        Box::pin(async move { inner.send(msg).await? })
    }
}

#[derive(Message)]
#[rtype(result = "(usize, usize)")]
struct Report;

impl Handler<Report> for Largest {
    type Result = MessageResult<Report>;
    fn handle(&mut self, _: Report, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.largest, self.calls))
    }
}

#[actix::test]
async fn no_inner_sendv_through_tls_exceeds_the_bound() {
    const TOTAL: usize = 512 * 1024;
    const BOUND: usize = 1000;
    let pki = pki(&["localhost"]);
    let (listener, addr) =
        echo_listener(Tls::server(pki.server.clone()).wrap(SocketFunctions::system())).await;
    let system = SocketFunctions::system();
    let recorder = Largest {
        inner: system.sendv().clone(),
        largest: 0,
        calls: 0,
    }
    .start();
    let (subscriber, mut events) = channel_subscriber();
    let client = Socket::builder()
        .functions(
            Tls::client(client_config(pki.roots), "localhost")
                .expect("server name")
                .max_per_call(BOUND)
                .wrap(system.with_sendv(recorder.clone().recipient())),
        )
        .subscriber(subscriber)
        .connect(addr)
        .await
        .expect("the TLS handshake succeeds");
    let data = Bytes::from(pattern(TOTAL, 71));
    write_mixed(&client, &data).await;
    let back = collect(&mut events, TOTAL).await;
    assert!(back == data, "the echo differs from what was sent");
    let (largest, calls) = recorder.send(Report).await.expect("recorder");
    assert!(
        largest <= BOUND,
        "a sendv of {largest} bytes reached the transport, bound {BOUND}"
    );
    assert!(calls >= TOTAL / BOUND, "{calls} calls for {TOTAL} bytes");
    client.do_send(Close::Graceful);
    listener.send(StopListening).await.expect("listener");
}
