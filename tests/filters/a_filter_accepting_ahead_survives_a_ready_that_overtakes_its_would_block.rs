//! The transport contract lets a `Ready` overtake the would-block answer it belongs to.
//! A filter that accepts ahead of its listener (`Filter::background_accepts`) must then
//! accept again at once: a transport that sends the listening handle's `Ready` before
//! answering its first `accept` with would-block still gets the waiting connection taken
//! and handed to the listener.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::support::{channel, drain, run_paused, settle};
use actix::prelude::*;
use actix::WeakRecipient;
use sockactor::filters::{Filter, FilterActor, FilterAnswer, Link};
use sockactor::messages::{
    Accept, Accepted, Bind, CloseSocket, Connect, Handle, Listen, ListenerEvent, OpenSocket,
    Readiness, Ready, Received, RecvFrom, SendV, Sent,
};
use sockactor::{Listener, MockTransport, SocketFunctions, TransportError};

/// A pass-through filter that finishes accepted connections ahead of its listener.
#[derive(Debug)]
struct Ahead;

impl Filter for Ahead {
    fn name(&self) -> &'static str {
        "ahead"
    }

    fn sendv(
        &mut self,
        msg: SendV,
        link: &mut Link,
        _ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, Sent> {
        Box::pin(actix::fut::wrap_future(link.sendv(msg, usize::MAX)))
    }

    fn background_accepts(&self) -> usize {
        4
    }
}

/// The mock, except that its first `accept` sends the listening handle's `Ready` first
/// and answers would-block after it.
struct Overtaking {
    mock: SocketFunctions,
    events: HashMap<Handle, WeakRecipient<Ready>>,
    accepts: usize,
}

impl Actor for Overtaking {
    type Context = Context<Self>;
}

impl Handler<OpenSocket> for Overtaking {
    type Result = ResponseActFuture<Self, Result<Handle, TransportError>>;
    fn handle(&mut self, msg: OpenSocket, _: &mut Context<Self>) -> Self::Result {
        let events = msg.events.clone();
        let open = self.mock.open().send(msg);
        Box::pin(
            async move { open.await? }
                .into_actor(self)
                .map(move |opened, act, _| {
                    if let Ok(handle) = &opened {
                        act.events.insert(*handle, events);
                    }
                    opened
                }),
        )
    }
}

macro_rules! forward {
    ($msg:ty, $out:ty, $op:ident) => {
        impl Handler<$msg> for Overtaking {
            type Result = ResponseFuture<Result<$out, TransportError>>;
            fn handle(&mut self, msg: $msg, _: &mut Context<Self>) -> Self::Result {
                let asked = self.mock.$op().send(msg);
                Box::pin(async move { asked.await? })
            }
        }
    };
}

forward!(Connect, (), connect);
forward!(SendV, Sent, sendv);
forward!(RecvFrom, Received, recvfrom);
forward!(CloseSocket, (), close);

impl Handler<Bind> for Overtaking {
    type Result = ResponseFuture<Result<sockactor::messages::Address, TransportError>>;
    fn handle(&mut self, msg: Bind, _: &mut Context<Self>) -> Self::Result {
        let asked = self.mock.bind().cloned().expect("the mock binds").send(msg);
        Box::pin(async move { asked.await? })
    }
}

impl Handler<Listen> for Overtaking {
    type Result = ResponseFuture<Result<(), TransportError>>;
    fn handle(&mut self, msg: Listen, _: &mut Context<Self>) -> Self::Result {
        let asked = self
            .mock
            .listen()
            .cloned()
            .expect("the mock listens")
            .send(msg);
        Box::pin(async move { asked.await? })
    }
}

impl Handler<Accept> for Overtaking {
    type Result = ResponseFuture<Result<Accepted, TransportError>>;
    fn handle(&mut self, msg: Accept, _: &mut Context<Self>) -> Self::Result {
        self.accepts += 1;
        if self.accepts == 1 {
            // The notice first, then the would-block it belongs to.
            if let Some(events) = self.events.get(&msg.handle).and_then(|e| e.upgrade()) {
                events.do_send(Ready {
                    handle: msg.handle,
                    readiness: Readiness::Readable,
                });
            }
            return Box::pin(async { Ok(Accepted::WouldBlock) });
        }
        let asked = self
            .mock
            .accept()
            .cloned()
            .expect("the mock accepts")
            .send(msg);
        Box::pin(async move { asked.await? })
    }
}

#[test]
fn the_waiting_connection_is_taken_when_the_ready_came_before_the_would_block() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let overtaking = Overtaking {
            mock: mock.functions(),
            events: HashMap::new(),
            accepts: 0,
        }
        .start();
        let inner = SocketFunctions::from_actor_ex(overtaking);
        let functions = FilterActor::wrap(Ahead, inner, 64 * 1024);
        let (events, mut heard) = channel::<ListenerEvent>();
        let (_listener, _) = Listener::builder()
            .functions(functions)
            .subscriber(events)
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        // A client is already waiting when the first accept goes out.
        mock.connect_inbound(Handle(1), SocketAddr::from(([10, 0, 0, 2], 5000)))
            .expect("listening");
        settle().await;
        let accepted = drain(&mut heard)
            .into_iter()
            .filter(|e| matches!(e, ListenerEvent::Accepted { .. }))
            .count();
        assert_eq!(accepted, 1, "the waiting connection reached the listener");
    });
}
