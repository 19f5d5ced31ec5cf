//! Partial override (c-ares lets any socket function be left to the system): only `sendv`
//! is replaced, by an actor that counts calls and forwards them to the system `sendv`;
//! over real loopback TCP the data arrives intact and the count matches.

use std::time::Duration;

use crate::support::{pattern, sink};
use actix::prelude::*;
use bytes::Bytes;
use sockactor::messages::{Close, GetStats, SendV, Sent, Write};
use sockactor::{Socket, SocketFunctions, TransportError};

struct CountingSendv {
    inner: Recipient<SendV>,
    calls: u64,
    bytes_offered: u64,
}

impl Actor for CountingSendv {
    type Context = Context<Self>;
}

impl Handler<SendV> for CountingSendv {
    type Result = ResponseFuture<Result<Sent, TransportError>>;
    fn handle(&mut self, msg: SendV, _: &mut Context<Self>) -> Self::Result {
        self.calls += 1;
        self.bytes_offered += msg.len() as u64;
        let inner = self.inner.clone();
        Box::pin(async move { inner.send(msg).await? })
    }
}

#[derive(Message)]
#[rtype(result = "(u64, u64)")]
struct Count;

impl Handler<Count> for CountingSendv {
    type Result = MessageResult<Count>;
    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.calls, self.bytes_offered))
    }
}

#[actix::test]
async fn only_sendv_replaced_data_arrives_and_calls_are_counted() {
    let system = SocketFunctions::system();
    let counter = CountingSendv {
        inner: system.sendv().clone(),
        calls: 0,
        bytes_offered: 0,
    }
    .start();
    let functions = system.with_sendv(counter.clone().recipient());

    let (addr, received) = sink().await;
    let socket = Socket::builder()
        .functions(functions)
        .connect(addr)
        .await
        .expect("connect through the system open/connect");

    let data = Bytes::from(pattern(4 * 1024 * 1024, 42));
    let mut pending = Vec::new();
    for chunk in (0..data.len()).step_by(10_000) {
        let end = (chunk + 10_000).min(data.len());
        pending.push(actix::spawn(
            socket.send(Write::new(data.slice(chunk..end)).wait_when_full()),
        ));
    }
    for p in pending {
        p.await.expect("join").expect("mailbox").expect("written");
    }
    let stats = socket.send(GetStats).await.expect("stats");
    let (calls, offered) = counter.send(Count).await.expect("count");
    assert!(calls > 0);
    assert_eq!(
        calls, stats.sendv_calls,
        "every sendv went through the override"
    );
    assert!(offered >= data.len() as u64);

    socket.do_send(Close::Graceful);
    let bytes = tokio::time::timeout(Duration::from_secs(30), received)
        .await
        .expect("done within 30 s")
        .expect("join")
        .expect("read");
    assert!(bytes == data, "data intact");
}
