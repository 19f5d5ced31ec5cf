//! Helpers for the reconnecting client's tests: its events as a channel, and a connect
//! gate in front of the mock transport that refuses connects on demand and records when
//! each was made.
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use actix::prelude::*;
use sockactor::messages::{ClientEvent, Connect};
use sockactor::{MockTransport, SocketFunctions, TransportError};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

/// A subscriber that forwards every client event into a channel the test can await.
pub fn client_events() -> (Recipient<ClientEvent>, Events) {
    let (tx, rx) = unbounded_channel();
    (EventForwarder(tx).start().recipient(), Events(rx))
}

/// The client's events, in order.
pub struct Events(UnboundedReceiver<ClientEvent>);

impl Events {
    /// The next event (under paused time, tokio advances the clock while waiting).
    pub async fn next(&mut self) -> ClientEvent {
        tokio::time::timeout(Duration::from_secs(3600), self.0.recv())
            .await
            .expect("an event within an hour of tokio time")
            .expect("the event channel is open")
    }

    /// Events already delivered, without waiting.
    pub fn drain(&mut self) -> Vec<ClientEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.0.try_recv() {
            out.push(e);
        }
        out
    }
}

struct EventForwarder(UnboundedSender<ClientEvent>);

impl Actor for EventForwarder {
    type Context = Context<Self>;
}

impl Handler<ClientEvent> for EventForwarder {
    type Result = ();
    fn handle(&mut self, msg: ClientEvent, _: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}

#[derive(Default)]
struct GateState {
    refuse_next: u32,
    refuse_all: bool,
    calls: Vec<Instant>,
}

/// A `connect` in front of the mock's: refuses while told to, records when each
/// connect was made, and passes the rest to the mock.
#[derive(Clone)]
pub struct ConnectGate {
    state: Arc<Mutex<GateState>>,
    functions: SocketFunctions,
}

impl ConnectGate {
    /// A gate in front of `mock`; `functions()` is the mock's table with this `connect`.
    pub fn new(mock: &MockTransport) -> Self {
        let state = Arc::new(Mutex::new(GateState::default()));
        let inner = mock.functions().connect().clone();
        let gate = GateActor {
            state: state.clone(),
            inner,
        }
        .start();
        let functions = mock.functions().with_connect(gate.recipient());
        ConnectGate { state, functions }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The transport table to give the client.
    pub fn functions(&self) -> SocketFunctions {
        self.functions.clone()
    }

    /// Refuse the next `n` connects.
    pub fn refuse_next(&self, n: u32) {
        self.lock().refuse_next = n;
    }

    /// Refuse every connect until told otherwise.
    pub fn refuse_all(&self, refuse: bool) {
        self.lock().refuse_all = refuse;
    }

    /// When each connect was made (tokio time).
    pub fn calls(&self) -> Vec<Instant> {
        self.lock().calls.clone()
    }
}

struct GateActor {
    state: Arc<Mutex<GateState>>,
    inner: Recipient<Connect>,
}

impl Actor for GateActor {
    type Context = Context<Self>;
}

impl Handler<Connect> for GateActor {
    type Result = ResponseFuture<Result<(), TransportError>>;

    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) -> Self::Result {
        let refuse = {
            let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.calls.push(Instant::now());
            if st.refuse_next > 0 {
                st.refuse_next -= 1;
                true
            } else {
                st.refuse_all
            }
        };
        if refuse {
            return Box::pin(async { Err(io::ErrorKind::ConnectionRefused.into()) });
        }
        let inner = self.inner.clone();
        Box::pin(async move { inner.send(msg).await? })
    }
}
