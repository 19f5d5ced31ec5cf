//! The [`Listener`] actor: accepts connections through the transport and starts a
//! [`Socket`] actor for each.

use std::fmt;
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, MessageResult,
    Recipient, WrapFuture,
};

use super::functions::{call, flatten, SocketFunctions};
use super::socket::{Socket, SocketBuilder};
use crate::error::{SocketError, TransportError};
use crate::messages::functions::{
    Accept, Accepted, Address, Bind, CloseSocket, Handle, Listen, OpenSocket, Ready, SocketKind,
};
use crate::messages::listener::{GetLocalAddr, ListenerEvent, StopListening};

/// Makes the builder for each accepted connection's socket, given its peer.
type Factory = Box<dyn Fn(&Address) -> SocketBuilder>;

/// Where the accept loop is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AcceptState {
    /// Nothing under way: the next `accept` may go out.
    Idle,
    /// An `accept` is out, awaiting its answer.
    InFlight,
    /// The transport would block; waiting for its `Ready(Readable)`.
    Blocked,
    /// The turn's accepts are spent; yielded to the runtime.
    Yielding,
    /// An `accept` failed; waiting out the back-off.
    BackingOff,
}

/// A listening socket as an actor: it accepts connections through its transport's
/// `accept` and starts a [`Socket`] for each, on its own arbiter, from the builder its
/// per-connection factory makes (so each socket can have its own subscriber).
///
/// It accepts until the transport would block, at most
/// [`max_accepts_per_turn`](ListenerBuilder::max_accepts_per_turn) at a time before it
/// yields to the other actors of its thread. A failed accept is reported
/// ([`ListenerEvent::AcceptFailed`]) and, when it is an input/output error (`EMFILE`,
/// `ECONNABORTED`…), retried after the [back-off](ListenerBuilder::accept_backoff): it
/// never stops the listener.
///
/// [`StopListening`] closes the listening handle and stops the actor; so does dropping
/// every address of it (the transport's readiness recipient is weak).
/// Accepted sockets live on either way. [`GetLocalAddr`] gives the address it listens on.
///
/// An accepted socket is like any other [`Socket`]: once nobody holds its address and
/// it has nothing under way, it ends. [`ListenerEvent::Accepted`] hands its address to
/// the listener's subscriber, before the socket's own first event reaches anyone: keep it
/// for as long as the connection should live.
///
/// ```no_run
/// use sockactor::{Listener, Socket};
///
/// # async fn demo() -> Result<(), sockactor::SocketError> {
/// let (listener, local) = Listener::builder()
///     .socket_builder(|_peer| Socket::builder())
///     .bind("127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr"))
///     .await?;
/// println!("listening on {local}");
/// listener.do_send(sockactor::messages::StopListening);
/// # Ok(()) }
/// ```
pub struct Listener {
    handle: Handle,
    local: Address,
    functions: SocketFunctions,
    factory: Factory,
    subscriber: Option<Recipient<ListenerEvent>>,
    max_accepts_per_turn: u32,
    accept_backoff: Duration,
    state: AcceptState,
    /// A `Ready` came while an `accept` was out: its would-block answer retries at once.
    ready_hint: bool,
    /// Connections accepted in this turn.
    turn: u32,
    /// The listening handle has been closed.
    closed: bool,
    /// Accepted connections whose sockets are still starting: `Closed` waits for their
    /// `Accepted`.
    starting: std::rc::Rc<Starting>,
}

/// A count of socket starts under way, and a wake-up when it reaches 0.
#[derive(Debug, Default)]
struct Starting {
    count: std::cell::Cell<usize>,
    done: tokio::sync::Notify,
}

impl Starting {
    fn begin(&self) {
        self.count.set(self.count.get() + 1);
    }

    fn end(&self) {
        self.count.set(self.count.get().saturating_sub(1));
        if self.count.get() == 0 {
            self.done.notify_waiters();
        }
    }

    /// Until no start is under way.
    async fn idle(&self) {
        loop {
            let done = self.done.notified();
            if self.count.get() == 0 {
                return;
            }
            done.await;
        }
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("handle", &self.handle)
            .field("local", &self.local)
            .field("state", &self.state)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// Configures and starts a [`Listener`].
pub struct ListenerBuilder {
    functions: Option<SocketFunctions>,
    backlog: u32,
    reuse_port: bool,
    buffers: crate::types::SocketBuffers,
    factory: Option<Factory>,
    subscriber: Option<Recipient<ListenerEvent>>,
    max_accepts_per_turn: usize,
    accept_backoff: Duration,
}

impl fmt::Debug for ListenerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerBuilder")
            .field("functions", &self.functions)
            .field("backlog", &self.backlog)
            .field("reuse_port", &self.reuse_port)
            .field("buffers", &self.buffers)
            .field("subscriber", &self.subscriber)
            .field("max_accepts_per_turn", &self.max_accepts_per_turn)
            .field("accept_backoff", &self.accept_backoff)
            .finish_non_exhaustive()
    }
}

impl Default for ListenerBuilder {
    fn default() -> Self {
        ListenerBuilder {
            functions: None,
            backlog: 1024,
            reuse_port: false,
            buffers: crate::types::SocketBuffers::default(),
            factory: None,
            subscriber: None,
            max_accepts_per_turn: 64,
            accept_backoff: Duration::from_millis(100),
        }
    }
}

impl ListenerBuilder {
    /// The transport (default: [`SocketFunctions::system`]); it must have `bind`,
    /// `listen` and `accept`. Accepted sockets use it too, unless their builder sets its
    /// own.
    pub fn functions(mut self, functions: SocketFunctions) -> Self {
        self.functions = Some(functions);
        self
    }

    /// Connections the system may hold before they are accepted (default 1024).
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Kernel buffer sizes of the listening socket; on Linux every accepted connection
    /// starts with them (and a receive buffer set before `listen` shapes the TCP window
    /// the connections offer). Default: the system's.
    pub fn buffers(mut self, buffers: crate::types::SocketBuffers) -> Self {
        self.buffers = buffers;
        self
    }

    /// Share the port with other listeners that ask for it too (`SO_REUSEPORT`), for
    /// instance one listener per arbiter; the system spreads connections among them.
    pub fn reuse_port(mut self, reuse_port: bool) -> Self {
        self.reuse_port = reuse_port;
        self
    }

    /// Makes the builder of each accepted connection's socket, given the peer (default:
    /// [`Socket::builder`], which has no subscriber and so does not read).
    pub fn socket_builder(mut self, factory: impl Fn(&Address) -> SocketBuilder + 'static) -> Self {
        self.factory = Some(Box::new(factory));
        self
    }

    /// Who hears about accepted connections, failed accepts and the end of listening.
    pub fn subscriber(mut self, subscriber: Recipient<ListenerEvent>) -> Self {
        self.subscriber = Some(subscriber);
        self
    }

    /// Most connections accepted before the listener yields to the other actors of its
    /// thread (default 64, at least 1).
    pub fn max_accepts_per_turn(mut self, n: usize) -> Self {
        self.max_accepts_per_turn = n;
        self
    }

    /// How long to wait (tokio time) after a failed accept before the next (default
    /// 100 ms).
    pub fn accept_backoff(mut self, backoff: Duration) -> Self {
        self.accept_backoff = backoff;
        self
    }

    /// Opens a stream handle, binds it to `addr`, listens, and starts the listener on
    /// the current arbiter. Answers its address and the local address it got (the port
    /// the system chose, for port 0). On failure the handle is closed.
    pub async fn bind(
        self,
        addr: impl Into<Address>,
    ) -> Result<(Addr<Listener>, Address), SocketError> {
        let addr = addr.into();
        let functions = self
            .functions
            .clone()
            .unwrap_or_else(SocketFunctions::system);
        if functions.accept().is_none() {
            return Err(SocketError::Listen(TransportError::Unsupported("accept")));
        }
        let ctx = Context::<Listener>::new();
        let open = OpenSocket {
            family: addr.family(),
            kind: SocketKind::Stream,
            events: ctx.address().downgrade().recipient(),
            buffers: self.buffers,
        };
        let handle = call(Some(functions.open()), "open", open)
            .await
            .map_err(SocketError::Open)?;
        let local = match self.prepare(&functions, handle, addr).await {
            Ok(local) => local,
            Err(e) => {
                functions.close().do_send(CloseSocket { handle });
                return Err(e);
            }
        };
        tracing::debug!(%local, %handle, "listening");
        let listener = Listener {
            handle,
            local: local.clone(),
            functions,
            factory: self
                .factory
                .unwrap_or_else(|| Box::new(|_: &Address| Socket::builder())),
            subscriber: self.subscriber,
            max_accepts_per_turn: u32::try_from(self.max_accepts_per_turn.max(1))
                .unwrap_or(u32::MAX),
            accept_backoff: self.accept_backoff,
            state: AcceptState::Idle,
            ready_hint: false,
            turn: 0,
            closed: false,
            starting: std::rc::Rc::default(),
        };
        Ok((ctx.run(listener), local))
    }

    /// Binds and listens.
    async fn prepare(
        &self,
        functions: &SocketFunctions,
        handle: Handle,
        addr: Address,
    ) -> Result<Address, SocketError> {
        let bind = Bind {
            handle,
            addr,
            reuse_port: self.reuse_port,
        };
        let local = call(functions.bind(), "bind", bind)
            .await
            .map_err(SocketError::Bind)?;
        let listen = Listen {
            handle,
            backlog: self.backlog,
        };
        call(functions.listen(), "listen", listen)
            .await
            .map_err(SocketError::Listen)?;
        Ok(local)
    }
}

/// Whether a failed accept is worth retrying: input/output errors are about one
/// connection or a passing shortage; anything else is about the handle or transport.
fn is_transient(error: &TransportError) -> bool {
    matches!(error, TransportError::Io(_))
}

impl Listener {
    /// A builder for a listener.
    pub fn builder() -> ListenerBuilder {
        ListenerBuilder::default()
    }

    fn event(&self, event: ListenerEvent) {
        if let Some(s) = &self.subscriber {
            s.do_send(event);
        }
    }

    /// Asks the transport for the next connection, unless one is already asked for, the
    /// listener is blocked, yielding or backing off, or closed.
    fn accept_next(&mut self, ctx: &mut Context<Self>) {
        if self.state != AcceptState::Idle || self.closed {
            return;
        }
        if self.turn >= self.max_accepts_per_turn {
            // Fairness: let the other actors of this thread run before the next turn.
            self.turn = 0;
            self.state = AcceptState::Yielding;
            ctx.spawn(
                tokio::task::yield_now()
                    .into_actor(self)
                    .map(|_, act, ctx| act.resume(AcceptState::Yielding, ctx)),
            );
            return;
        }
        self.state = AcceptState::InFlight;
        // The accepted connection's readiness notices must reach its socket, so the
        // socket's context exists before it is accepted.
        let socket_ctx = Socket::context();
        let accept = Accept {
            handle: self.handle,
            events: socket_ctx.address().downgrade().recipient(),
        };
        let Some(op) = self.functions.accept() else {
            // `bind` made sure there is one; a table cannot lose it.
            let error = TransportError::Unsupported("accept");
            return self.absorb_accepted(Err(error), socket_ctx, ctx);
        };
        // Queued with the transport now, ahead of anything sent after (a close).
        let answer = op.send(accept);
        ctx.spawn(
            answer
                .into_actor(self)
                .map(move |result, act, ctx| act.absorb_accepted(flatten(result), socket_ctx, ctx)),
        );
    }

    /// Goes on accepting after a yield or a back-off, if still in `from`.
    fn resume(&mut self, from: AcceptState, ctx: &mut Context<Self>) {
        if self.state == from {
            self.state = AcceptState::Idle;
            self.accept_next(ctx);
        }
    }

    /// Takes in the answer to an `accept`.
    fn absorb_accepted(
        &mut self,
        result: Result<Accepted, TransportError>,
        socket_ctx: Context<Socket>,
        ctx: &mut Context<Self>,
    ) {
        self.state = AcceptState::Idle;
        if self.closed {
            // Stopped while the accept was out: a connection it took is not wanted.
            if let Ok(Accepted::Connection { handle, .. }) = result {
                self.functions.close().do_send(CloseSocket { handle });
            }
            ctx.stop();
            return;
        }
        match result {
            Ok(Accepted::Connection { handle, peer }) => {
                // A readiness notice that came meanwhile belonged to an older block.
                self.ready_hint = false;
                self.turn += 1;
                self.start_socket(handle, peer, socket_ctx);
                self.accept_next(ctx);
            }
            Ok(Accepted::Refused(error)) => {
                // A connection came and went (a failed handshake): news, not trouble
                // with the listening handle, so no back-off.
                self.ready_hint = false;
                self.turn += 1;
                tracing::debug!(handle = %self.handle, %error, "connection refused by the transport");
                self.event(ListenerEvent::AcceptFailed { error });
                self.accept_next(ctx);
            }
            Ok(Accepted::WouldBlock) => {
                self.turn = 0;
                if std::mem::take(&mut self.ready_hint) {
                    self.accept_next(ctx);
                } else {
                    self.state = AcceptState::Blocked;
                }
            }
            Err(error) => {
                self.ready_hint = false;
                self.turn = 0;
                tracing::warn!(handle = %self.handle, %error, "accept failed");
                let transient = is_transient(&error);
                self.event(ListenerEvent::AcceptFailed { error });
                if transient {
                    self.state = AcceptState::BackingOff;
                    ctx.run_later(self.accept_backoff, |act, ctx| {
                        act.resume(AcceptState::BackingOff, ctx)
                    });
                } else {
                    self.close(ctx);
                }
            }
        }
    }

    /// Starts the accepted connection's socket. Detached from the listener, so the
    /// socket starts (and owns its handle) even if the listener stops meanwhile.
    fn start_socket(&self, handle: Handle, peer: Address, socket_ctx: Context<Socket>) {
        tracing::debug!(listener = %self.handle, %handle, %peer, "accepted");
        let builder = (self.factory)(&peer);
        let functions = self.functions.clone();
        let subscriber = self.subscriber.clone();
        let starting = self.starting.clone();
        starting.begin();
        actix::spawn(async move {
            let (socket, id) = builder
                .start_connected(functions, handle, peer.clone(), socket_ctx)
                .await;
            if let Some(s) = subscriber {
                s.do_send(ListenerEvent::Accepted { socket, id, peer });
            }
            starting.end();
        });
    }

    /// Closes the listening handle and stops, once no accept is out (its answer stops
    /// the listener then).
    fn close(&mut self, ctx: &mut Context<Self>) {
        if crate::actors::runtime_gone() {
            // Dropped with its runtime (an arbiter stopped): nothing can be waited for.
            self.close_unwaited();
            return;
        }
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        tracing::debug!(handle = %self.handle, local = %self.local, "stopped listening");
        let closing = self.functions.close().send(CloseSocket {
            handle: self.handle,
        });
        let (subscriber, starting) = (self.subscriber.clone(), self.starting.clone());
        // Detached: the listener may stop first. `Closed` is news once the handle is
        // closed (the port free, a Unix path gone) and is the last: the sockets still
        // starting announce themselves before it.
        actix::spawn(async move {
            let _ = tokio::time::timeout(crate::proto::FLIGHT_GRACE, closing).await;
            starting.idle().await;
            if let Some(s) = subscriber {
                s.do_send(ListenerEvent::Closed);
            }
        });
        if self.state != AcceptState::InFlight {
            ctx.stop();
        }
    }
}

impl Listener {
    /// Closes the listening handle without waiting (the runtime is gone): the close goes
    /// to the transport now, and `Closed` follows it to the subscriber.
    fn close_unwaited(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        tracing::debug!(handle = %self.handle, local = %self.local, "stopped listening (dropped)");
        self.functions.close().do_send(CloseSocket {
            handle: self.handle,
        });
        if let Some(s) = &self.subscriber {
            s.do_send(ListenerEvent::Closed);
        }
    }
}

impl Drop for Listener {
    /// actix drops an actor without `stopped` when its arbiter stops: the listening
    /// handle still closes (a transport of another thread would otherwise keep the port
    /// or the path), and the subscriber still hears `Closed`.
    fn drop(&mut self) {
        self.close_unwaited();
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.accept_next(ctx);
    }

    /// Every address is gone (or it was stopped): the listening handle closes.
    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.close(ctx);
    }
}

impl Handler<Ready> for Listener {
    type Result = ();

    fn handle(&mut self, msg: Ready, ctx: &mut Context<Self>) {
        if msg.handle != self.handle {
            return;
        }
        match self.state {
            AcceptState::Blocked => {
                self.state = AcceptState::Idle;
                self.accept_next(ctx);
            }
            // The notice overtook the would-block answer it belongs to.
            AcceptState::InFlight => self.ready_hint = true,
            _ => {}
        }
    }
}

impl Handler<StopListening> for Listener {
    type Result = ();

    fn handle(&mut self, _: StopListening, ctx: &mut Context<Self>) {
        self.close(ctx);
    }
}

impl Handler<GetLocalAddr> for Listener {
    type Result = MessageResult<GetLocalAddr>;

    fn handle(&mut self, _: GetLocalAddr, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.local.clone())
    }
}
