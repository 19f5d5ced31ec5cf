//! Leak check: 2,000 connections are opened through a sockactor `Listener` on 127.0.0.1,
//! each client socket writes once and closes gracefully, the server socket closes at the
//! client's EOF; afterwards the process has as many open descriptors, and the registry
//! holding both sides' sockets as many entries, as before the first cycle.
//!
//! Each batch waits for every socket's `Closed` event (no sleeps); after the last one the
//! runtime is let run until the stopped actors have left the registry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{channel, open_fds, settle};
use actix::prelude::*;
use sockactor::messages::{
    Address, Close, ListenerEvent, SocketEvent, SocketEventKind, SocketId, StopListening, Write,
};
use sockactor::{Listener, Registry, Socket};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

const CYCLES: usize = 2_000;
const BATCH: usize = 50;

/// The server: keeps each accepted socket's address until it has closed, closes it at
/// the peer's EOF, and reports each close.
struct Server {
    sockets: HashMap<SocketId, Addr<Socket>>,
    closed: UnboundedSender<SocketId>,
}

impl Actor for Server {
    type Context = Context<Self>;
}

impl Handler<ListenerEvent> for Server {
    type Result = ();
    fn handle(&mut self, event: ListenerEvent, _: &mut Context<Self>) {
        if let ListenerEvent::Accepted { socket, id, .. } = event {
            self.sockets.insert(id, socket);
        }
    }
}

impl Handler<SocketEvent> for Server {
    type Result = ();
    fn handle(&mut self, event: SocketEvent, _: &mut Context<Self>) {
        match event.kind {
            SocketEventKind::Eof => {
                if let Some(socket) = self.sockets.get(&event.socket) {
                    socket.do_send(Close::Graceful);
                }
            }
            SocketEventKind::Closed { .. } => {
                self.sockets.remove(&event.socket);
                let _ = self.closed.send(event.socket);
            }
            _ => {}
        }
    }
}

/// Waits for `n` closes reported on `rx`.
async fn closes(rx: &mut UnboundedReceiver<SocketId>, n: usize) {
    for _ in 0..n {
        rx.recv().await.expect("close reported");
    }
}

/// Waits for `n` `Closed` events among the client sockets' events.
async fn client_closes(rx: &mut UnboundedReceiver<SocketEvent>, n: usize) {
    let mut seen = 0;
    while seen < n {
        let event = rx.recv().await.expect("client event");
        if matches!(event.kind, SocketEventKind::Closed { .. }) {
            seen += 1;
        }
    }
}

/// The client side of the cycles, and what it waits on.
struct Rig {
    addr: SocketAddr,
    registry: Registry,
    client_events: Recipient<SocketEvent>,
    client_rx: UnboundedReceiver<SocketEvent>,
    server_rx: UnboundedReceiver<SocketId>,
    /// Most registered sockets seen with a batch open.
    peak: usize,
}

impl Rig {
    /// `n` cycles at once: connect, write, close gracefully; answers when every client
    /// and server socket of the batch has closed and the clients' addresses are dropped.
    async fn batch(&mut self, n: usize) {
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            let socket = Socket::builder()
                .registry(&self.registry)
                .subscriber(self.client_events.clone())
                .connect(self.addr)
                .await
                .expect("connect");
            let message = format!("cycle {i}").into_bytes();
            let len = message.len();
            let written = socket
                .send(Write::new(message))
                .await
                .expect("mailbox")
                .expect("written");
            assert_eq!(written.len, len);
            clients.push(socket);
        }
        self.peak = self.peak.max(self.registry.len());
        for socket in &clients {
            socket.do_send(Close::Graceful);
        }
        client_closes(&mut self.client_rx, n).await;
        closes(&mut self.server_rx, n).await;
    }
}

/// Lets stopped actors finish (and leave the registry, and drop their streams).
async fn quiesce(registry: &Registry) {
    for _ in 0..100 {
        if registry.is_empty() {
            break;
        }
        settle().await;
    }
    settle().await;
}

#[actix_rt::test(system = "crate::support::SerialSystem")]
async fn two_thousand_open_close_cycles_leave_fd_count_and_registry_size_unchanged() {
    let registry = Registry::new();
    let (closed_tx, server_rx) = tokio::sync::mpsc::unbounded_channel();
    let server = Server {
        sockets: HashMap::new(),
        closed: closed_tx,
    }
    .start();
    let (listener, local) = Listener::builder()
        .subscriber(server.clone().recipient())
        .socket_builder({
            let server = server.clone();
            let registry = registry.clone();
            move |_| {
                Socket::builder()
                    .subscriber(server.clone().recipient())
                    .registry(&registry)
            }
        })
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let Address::Inet(addr) = local else {
        panic!("inet listener");
    };
    let (client_events, client_rx) = channel::<SocketEvent>();
    let mut rig = Rig {
        addr,
        registry: registry.clone(),
        client_events,
        client_rx,
        server_rx,
        peak: 0,
    };

    // One cycle first, so that what the runtime creates lazily (the thread's transport
    // and Flusher, reactor registrations) exists before the count is taken.
    rig.batch(1).await;
    quiesce(&registry).await;
    let fds_before = open_fds();
    let registry_before = registry.len();

    let cycles = async {
        for _ in 0..CYCLES / BATCH {
            rig.batch(BATCH).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(120), cycles)
        .await
        .expect("2,000 cycles within 120 s");
    quiesce(&registry).await;

    assert!(
        rig.peak >= BATCH,
        "a batch's sockets were registered while open (peak {})",
        rig.peak
    );
    assert_eq!(registry_before, 0);
    assert_eq!(
        registry.len(),
        registry_before,
        "registry size after {CYCLES} cycles"
    );
    assert_eq!(
        open_fds(),
        fds_before,
        "descriptors open after {CYCLES} cycles"
    );
    listener.send(StopListening).await.expect("listener");
}
