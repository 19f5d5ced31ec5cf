//! The actors that serve many sockets live as long as something holds them: a filter's
//! actor stops (and drops its filter) once its table, every copy of it and every socket
//! on it are gone, and a system transport started on its own stops once its last
//! address is dropped, also after it has queued readiness notices or waits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{mock_peer, run_paused, settle};
use actix::prelude::*;
use sockactor::filters::{FilterActor, FilterAnswer, Link};
use sockactor::messages::{Handle, Readiness, SendV, Sent, Write};
use sockactor::{start_unbudgeted, MockTransport, SendStep, Socket, SystemFunctions};

/// A filter that passes everything through, answers the first `sendv` would-block with a
/// notice owed later, and says when it is dropped.
struct Watched {
    dropped: Arc<AtomicBool>,
    blocked_once: bool,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl sockactor::filters::Filter for Watched {
    fn name(&self) -> &'static str {
        "watched"
    }

    fn sendv(
        &mut self,
        msg: SendV,
        link: &mut Link,
        ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, Sent> {
        if !std::mem::replace(&mut self.blocked_once, true) {
            FilterActor::notify_later(
                ctx,
                msg.handle,
                Readiness::Writable,
                Duration::from_millis(5),
            );
            return Box::pin(actix::fut::ready(Ok(Sent::WouldBlock)));
        }
        Box::pin(actix::fut::wrap_future(link.sendv(msg, usize::MAX)))
    }
}

#[test]
fn a_filters_actor_stops_once_its_table_and_sockets_are_gone() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::AcceptAll]);
        let dropped = Arc::new(AtomicBool::new(false));
        let filter = Watched {
            dropped: dropped.clone(),
            blocked_once: false,
        };
        let functions = FilterActor::wrap(filter, mock.functions(), 64 * 1024);
        let socket = Socket::builder()
            .functions(functions)
            .connect(mock_peer())
            .await
            .expect("connect");
        // The first write meets the filter's would-block and its notice owed later.
        socket
            .send(Write::new(&b"through the filter"[..]))
            .await
            .expect("mailbox")
            .expect("written after the notice");
        assert_eq!(mock.written(Handle(1)), b"through the filter");
        assert!(!dropped.load(Ordering::SeqCst), "in use");
        drop(socket);
        tokio::time::sleep(Duration::from_millis(50)).await;
        settle().await;
        assert!(
            dropped.load(Ordering::SeqCst),
            "the filter's actor stopped and dropped its filter"
        );
    });
}

#[test]
fn a_system_transport_started_alone_stops_with_its_last_address() {
    run_paused(|| async {
        let system = start_unbudgeted(SystemFunctions::new());
        let weak = system.downgrade();
        settle().await;
        assert!(weak.upgrade().is_some(), "running");
        drop(system);
        settle().await;
        assert!(weak.upgrade().is_none(), "stopped with its last address");
    });
}
