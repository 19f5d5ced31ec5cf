//! The plumbing every filter shares: a generic actor that wraps an inner
//! [`SocketFunctions`] table, passes the operations a filter does not change straight
//! through, remembers where each handle's readiness notices go, and forwards the inner
//! transport's notices there.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, ResponseActFuture, ResponseFuture,
    WeakRecipient, WrapFuture,
};
use bytes::Bytes;
use tokio::time::Instant;

use crate::actors::functions::call;
use crate::actors::polled_set::{self, PolledSet, SetPoller};
use crate::error::TransportError;
use crate::messages::functions::{
    Accept, Accepted, Address, Bind, CloseSocket, Connect, Family, Handle, Listen, OpenSocket,
    Readiness, Ready, Received, RecvFrom, SendV, Sent, ShutdownWrite, SocketKind,
};
use crate::SocketFunctions;

/// The answer a [`Filter`] gives to a `sendv` or `recvfrom`: a future running on the
/// filter's actor, so it can look at (and change) the filter's state when the inner
/// transport answers.
pub type FilterAnswer<F, T> = ResponseActFuture<FilterActor<F>, Result<T, TransportError>>;

/// What a filter does with the bytes: the part of a filter that is not plumbing.
///
/// [`FilterActor`] runs a `Filter`: it passes `open`, `connect`, `close`, `bind`,
/// `listen` and `accept` to the inner table, keeps the socket's readiness recipient of
/// every handle, and calls the filter only for `sendv` and `recvfrom` on handles it
/// knows. The filter keeps the contract of `docs/filters.md`: it answers a `sendv` with
/// how many of the *caller's* bytes it took, or would-block (and then owes the socket
/// exactly one `Ready(Writable)`: either the inner transport's, which the actor forwards,
/// or its own, through [`FilterActor::notify_later`]), or a permanent error; it hands
/// the inner transport at most [`Link::max_per_call`] bytes per call (what
/// [`Link::sendv`] enforces).
pub trait Filter: Sized + Unpin + 'static {
    /// A short name, for tracing.
    fn name(&self) -> &'static str;

    /// A `sendv` on a handle this filter opened or accepted.
    fn sendv(
        &mut self,
        msg: SendV,
        link: &mut Link,
        ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, Sent>;

    /// A `recvfrom` on a handle this filter opened or accepted. Passes through by
    /// default.
    fn recvfrom(
        &mut self,
        msg: RecvFrom,
        link: &mut Link,
        _ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, Received> {
        Box::pin(actix::fut::wrap_future(link.recvfrom(msg)))
    }

    /// The socket closes the handle: what must happen before the close goes on to the
    /// inner transport (a transforming filter hands it the bytes it still holds). The
    /// inner close follows when the answer is ready, whatever it is; an error is the
    /// close's answer. Nothing by default.
    fn closing(
        &mut self,
        _handle: Handle,
        _link: &mut Link,
        _ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, ()> {
        Box::pin(actix::fut::ready(Ok(())))
    }

    /// The handle was closed: forget what the filter kept for it.
    fn closed(&mut self, _handle: Handle) {}

    /// The inner transport connected `handle`: what must happen before the socket hears
    /// that the connect succeeded (a TLS client runs its handshake here). An error is the
    /// connect's answer. Nothing by default.
    fn connected(
        &mut self,
        _handle: Handle,
        _link: &mut Link,
        _ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, ()> {
        Box::pin(actix::fut::ready(Ok(())))
    }

    /// The inner transport accepted a connection as `handle`: what must happen before the
    /// listener gets it (a TLS server runs its handshake here). On an error the handle is
    /// closed on the inner transport and the listener is answered
    /// [`Accepted::Refused`] with the error (it reports it and goes on at once). Nothing
    /// by default.
    fn accepted(
        &mut self,
        _handle: Handle,
        _link: &mut Link,
        _ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, ()> {
        Box::pin(actix::fut::ready(Ok(())))
    }

    /// How many accepted connections this filter may finish ahead of its listener (0, the
    /// default: none, [`accepted`](Self::accepted) runs inside the listener's `accept`).
    ///
    /// A filter whose `accepted` takes a while (a TLS handshake: round trips to the
    /// client) returns more, so one slow client does not hold up the next connection:
    /// the filter then accepts from its inner transport on its own, up to this many
    /// connections at once, finishes each in the background, and answers the listener's
    /// `accept` with whichever is finished first (or would-block, and a `Ready` when one
    /// is). A connection that fails to finish is the answer to one `accept`, as before.
    fn background_accepts(&self) -> usize {
        0
    }

    /// A connection finished ahead of its listener was handed to its socket, whose
    /// readiness notices now go to `events` (for a filter that keeps its own copy of the
    /// recipient). Does nothing by default.
    fn routed(&mut self, _handle: Handle, _events: &WeakRecipient<Ready>) {}

    /// A readiness notice from the inner transport. Forwarded to the socket by default; a
    /// filter that calls its inner transport on its own (to flush what it holds) takes
    /// the `Writable` notices owed to it here.
    fn inner_ready(
        &mut self,
        ready: Ready,
        link: &mut Link,
        _ctx: &mut Context<FilterActor<Self>>,
    ) {
        link.notify(ready.handle, ready.readiness);
    }

    /// The inner transport answered an `OpenSocket` (for a filter that watches; does
    /// nothing by default).
    fn opened(
        &mut self,
        _family: Family,
        _kind: SocketKind,
        _answer: &Result<Handle, TransportError>,
    ) {
    }

    /// The inner transport answered a `Connect` to `addr`, asked at `asked` (tokio time);
    /// for a filter that watches (before [`connected`](Self::connected)); does nothing
    /// by default.
    fn saw_connect(
        &mut self,
        _handle: Handle,
        _addr: &Address,
        _asked: Instant,
        _answer: &Result<(), TransportError>,
    ) {
    }

    /// The inner transport answered an `Accept` on the listening handle; for a filter
    /// that watches (before [`accepted`](Self::accepted)); does nothing by default.
    fn saw_accept(&mut self, _listener: Handle, _answer: &Result<Accepted, TransportError>) {}

    /// The inner transport sent a readiness notice for a handle the filter knows, about
    /// to be forwarded to its socket; does nothing by default.
    fn ready(&mut self, _handle: Handle, _readiness: Readiness) {}
}

/// Where one handle's notices go.
#[derive(Debug)]
struct Route {
    /// The socket's recipient, from its `OpenSocket` or `Accept`; `None` for a connection
    /// accepted ahead of its listener, until the listener takes it.
    events: Option<WeakRecipient<Ready>>,
    kind: SocketKind,
}

/// A filter's connection to its inner transport: the inner table, the handles the
/// filter knows (with where their notices go) and the per-call bound.
///
/// Handles are the inner transport's own (the mapping is the identity): a filter wraps
/// exactly one table, so the inner handle already names the socket uniquely.
#[derive(Debug)]
pub struct Link {
    inner: SocketFunctions,
    routes: HashMap<Handle, Route>,
    max_per_call: usize,
}

impl Link {
    /// The wrapped table.
    pub fn inner(&self) -> &SocketFunctions {
        &self.inner
    }

    /// Most bytes of a stream handle handed to the inner transport in one `sendv`.
    pub fn max_per_call(&self) -> usize {
        self.max_per_call
    }

    /// The kind of an open handle, or `None` if the filter does not know it.
    pub fn kind(&self, handle: Handle) -> Option<SocketKind> {
        self.routes.get(&handle).map(|r| r.kind)
    }

    /// The socket's readiness recipient for `handle`, for a filter that notifies it from
    /// a future of its own; `None` if the filter does not know the handle.
    pub fn events(&self, handle: Handle) -> Option<WeakRecipient<Ready>> {
        self.routes.get(&handle).and_then(|r| r.events.clone())
    }

    /// Tells the socket behind `handle` that it can make progress (dropped if the handle
    /// is closed or the socket is gone).
    pub fn notify(&self, handle: Handle, readiness: Readiness) {
        let events = self.routes.get(&handle).and_then(|r| r.events.as_ref());
        if let Some(events) = events.and_then(|e| e.upgrade()) {
            tracing::trace!(%handle, ?readiness, "filter: ready");
            events.do_send(Ready { handle, readiness });
        }
    }

    /// Sends the front of the batch, at most `limit` bytes (but at least one) and at most
    /// [`max_per_call`](Self::max_per_call), to the inner transport. Datagrams go whole
    /// (a datagram cannot be cut). An inner answer of more bytes than it was handed is
    /// [`TransportError::OverAccepted`].
    pub fn sendv(
        &self,
        msg: SendV,
        limit: usize,
    ) -> impl Future<Output = Result<Sent, TransportError>> + 'static {
        let inner = self.inner.sendv().clone();
        let datagram = self.kind(msg.handle) == Some(SocketKind::Datagram);
        let msg = if datagram {
            msg
        } else {
            let bound = limit.min(self.max_per_call).max(1);
            SendV {
                segments: take_front(msg.segments, bound),
                ..msg
            }
        };
        let offered = msg.len();
        async move {
            match inner.send(msg).await? {
                Ok(Sent::Accepted(n)) if n > offered => Err(TransportError::OverAccepted {
                    accepted: n,
                    offered,
                }),
                answer => answer,
            }
        }
    }

    /// Passes a `recvfrom` to the inner transport.
    pub fn recvfrom(
        &self,
        msg: RecvFrom,
    ) -> impl Future<Output = Result<Received, TransportError>> + 'static {
        let inner = self.inner.recvfrom().clone();
        async move { inner.send(msg).await? }
    }
}

/// The first `n` bytes of `segments` (all of them if they hold fewer), without copying.
pub fn take_front(mut segments: Vec<Bytes>, n: usize) -> Vec<Bytes> {
    // Cut in place: the batch's own vector is reused, nothing is allocated.
    let mut left = n;
    let mut keep = 0;
    for segment in &mut segments {
        if left == 0 {
            break;
        }
        if segment.len() > left {
            segment.truncate(left);
        }
        left -= segment.len();
        keep += 1;
    }
    segments.truncate(keep);
    segments
}

/// The actor of a filter: a [`SocketFunctions`] transport that runs a [`Filter`] over an
/// inner table.
///
/// It gives the inner transport its own readiness recipient (weak, so it never keeps
/// itself alive through the inner transport), and forwards every inner notice to the
/// socket that owns the handle.
#[derive(Debug)]
pub struct FilterActor<F: Filter> {
    link: Link,
    filter: F,
    /// The readiness notices owed later ([`notify_later`](Self::notify_later)): one
    /// timer queue, polled by one future in the context, however many handles wait.
    later: Later,
    /// Per listening handle: connections accepted and being finished ahead of the
    /// listener ([`Filter::background_accepts`]).
    ahead: HashMap<Handle, AcceptAhead>,
}

/// The connections a filter accepts ahead of one listener.
#[derive(Debug, Default)]
struct AcceptAhead {
    /// Connections finished, oldest first: the listener's next `accept`s get these first.
    connections: VecDeque<(Handle, Address)>,
    /// A failure of the inner `accept` itself, for the listener (which backs off); no
    /// more inner accepts until it has taken it.
    error: Option<TransportError>,
    /// Connections that failed to finish (already closed), reported to the listener as
    /// [`Accepted::Refused`] after the finished ones. At most [`MAX_REFUSED`] are kept.
    refused: VecDeque<TransportError>,
    /// Connections being finished.
    running: usize,
    /// An inner `accept` is out.
    in_flight: bool,
    /// The inner transport would block; it owes a `Ready`.
    blocked: bool,
    /// A `Ready` came while an inner `accept` was out: if that answer is a would-block,
    /// the notice was for it (it overtook the answer), so accept again at once.
    ready_hint: bool,
    /// The listener was answered would-block and is owed a `Ready`.
    owed: bool,
}

/// Refused connections kept for a listener that does not ask; older ones are only
/// logged.
const MAX_REFUSED: usize = 64;

/// Keeps at most [`MAX_REFUSED`] refusals, dropping the oldest.
fn trim_refused(ahead: &mut AcceptAhead) {
    while ahead.refused.len() > MAX_REFUSED {
        if let Some(error) = ahead.refused.pop_front() {
            tracing::debug!(%error, "refused connection not reported: too many waiting");
        }
    }
}

impl<F: Filter> FilterActor<F> {
    /// Starts `filter` over `inner` on the current arbiter, handing the inner transport
    /// at most `max_per_call` bytes (at least 1) per stream `sendv`, and returns the
    /// table to give sockets. `bind`, `listen` and `accept` are there and answer
    /// [`TransportError::Unsupported`] if the inner table lacks them. The inner table's
    /// byte layers (TLS, compression) are kept: they run in the socket, above the
    /// filter, which sees their output.
    pub fn wrap(filter: F, inner: SocketFunctions, max_per_call: usize) -> SocketFunctions {
        tracing::debug!(filter = filter.name(), max_per_call, "filter started");
        let actor = FilterActor {
            link: Link {
                inner,
                routes: HashMap::new(),
                max_per_call: max_per_call.max(1),
            },
            filter,
            ahead: HashMap::new(),
            later: Later::default(),
        };
        let has_shutdown = actor.link.inner.shutdown().is_some();
        // The inner table's byte layers stay the sockets' own: they run in the socket,
        // above every transport filter, whatever order the table was wrapped in (a TLS
        // table wrapped in a capture still encrypts; the capture sees ciphertext).
        let layers = actor.link.inner.layers().to_vec();
        let addr = crate::actors::start_unbudgeted(actor);
        let mut functions = SocketFunctions::from_actor_ex(addr.clone());
        for spec in layers.into_iter().rev() {
            functions = functions.with_layer(spec);
        }
        if has_shutdown {
            functions.with_shutdown(addr.recipient())
        } else {
            functions
        }
    }

    /// The connection to the inner transport.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The filter.
    pub fn filter(&self) -> &F {
        &self.filter
    }

    /// The filter, to change its state.
    pub fn filter_mut(&mut self) -> &mut F {
        &mut self.filter
    }

    /// The filter and its connection together, for an answer that changes the filter's
    /// state and calls the inner transport again.
    pub fn parts_mut(&mut self) -> (&mut F, &mut Link) {
        (&mut self.filter, &mut self.link)
    }

    /// Sends the socket behind `handle` a `Ready` after `after` of tokio time: what a
    /// filter owes after answering would-block on its own.
    ///
    /// The notices wait in one timer queue of the actor (not a timer future each in its
    /// context, which actix would poll all at every wake-up).
    pub fn notify_later(
        ctx: &mut Context<Self>,
        handle: Handle,
        readiness: Readiness,
        after: Duration,
    ) {
        ctx.notify(NotifyLater {
            handle,
            readiness,
            after,
        });
    }

    /// Sends the notices whose time has come.
    fn poll_later(&mut self, task: &mut std::task::Context<'_>) {
        while let Poll::Ready(Some(due)) = self.later.queue.poll_expired(task) {
            let (handle, readiness) = due.into_inner();
            self.link.notify(handle, readiness);
        }
    }

    /// This actor as a readiness recipient for the inner transport.
    fn own_events(ctx: &Context<Self>) -> WeakRecipient<Ready> {
        ctx.address().downgrade().recipient()
    }
}

impl<F: Filter> Actor for FilterActor<F> {
    type Context = Context<Self>;
}

/// The readiness notices a filter owes later, in one timer queue polled by one future
/// in the context (see [`polled_set`](crate::actors::polled_set)).
#[derive(Default)]
struct Later {
    queue: tokio_util::time::DelayQueue<(Handle, Readiness)>,
    poller: SetPoller,
}

impl std::fmt::Debug for Later {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Later")
            .field("queued", &self.queue.len())
            .finish()
    }
}

/// The latest a notice is sent ([`FilterActor::notify_later`]).
const LATEST_NOTICE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A readiness notice to send after a while (through the actor, which owns the queue).
struct NotifyLater {
    handle: Handle,
    readiness: Readiness,
    after: Duration,
}

impl actix::Message for NotifyLater {
    type Result = ();
}

impl<F: Filter> Handler<NotifyLater> for FilterActor<F> {
    type Result = ();

    fn handle(&mut self, msg: NotifyLater, ctx: &mut Context<Self>) {
        // The timer queue takes at most about two years; a notice due later than a year
        // (a filter asked to wait "for ever") comes after a year.
        let after = msg.after.min(LATEST_NOTICE);
        self.later.queue.insert((msg.handle, msg.readiness), after);
        polled_set::added(self, ctx);
    }
}

impl<F: Filter> PolledSet for FilterActor<F> {
    fn poller(&mut self) -> &mut SetPoller {
        &mut self.later.poller
    }

    fn poll_set(&mut self, task: &mut std::task::Context<'_>) -> bool {
        self.poll_later(task);
        self.later.queue.is_empty()
    }
}

impl<F: Filter> Handler<OpenSocket> for FilterActor<F> {
    type Result = ResponseActFuture<Self, Result<Handle, TransportError>>;

    fn handle(&mut self, msg: OpenSocket, ctx: &mut Context<Self>) -> Self::Result {
        let inner = self.link.inner.open().clone();
        let (events, kind, family) = (msg.events, msg.kind, msg.family);
        let open = OpenSocket {
            family: msg.family,
            kind,
            events: Self::own_events(ctx),
            buffers: msg.buffers,
        };
        let opened = async move { inner.send(open).await? };
        Box::pin(opened.into_actor(self).map(move |answer, act, _| {
            if let Ok(handle) = answer {
                let events = Some(events);
                act.link.routes.insert(handle, Route { events, kind });
            }
            act.filter.opened(family, kind, &answer);
            answer
        }))
    }
}

impl<F: Filter> Handler<Accept> for FilterActor<F> {
    type Result = ResponseActFuture<Self, Result<Accepted, TransportError>>;

    /// Accepts on the inner transport, records the new handle's route, and lets the
    /// filter finish the connection ([`Filter::accepted`]) before the listener gets it; a
    /// connection the filter refuses is closed on the inner transport.
    fn handle(&mut self, msg: Accept, ctx: &mut Context<Self>) -> Self::Result {
        if self.filter.background_accepts() > 0 {
            return Box::pin(actix::fut::ready(self.take_ahead(msg, ctx)));
        }
        let inner = self.link.inner.accept().cloned();
        let events = msg.events;
        let accept = Accept {
            handle: msg.handle,
            events: Self::own_events(ctx),
        };
        let accepted = async move { call(inner.as_ref(), "accept", accept).await };
        let listener = msg.handle;
        Box::pin(accepted.into_actor(self).then(move |answer, act, ctx| {
            act.filter.saw_accept(listener, &answer);
            let Ok(Accepted::Connection { handle, .. }) = &answer else {
                return Box::pin(actix::fut::ready(answer)) as Self::Result;
            };
            let handle = *handle;
            let route = Route {
                events: Some(events),
                kind: SocketKind::Stream,
            };
            act.link.routes.insert(handle, route);
            let finishing = act.filter.accepted(handle, &mut act.link, ctx);
            Box::pin(finishing.then(move |finished, act, _| {
                let refused = finished.err();
                let close = refused.as_ref().map(|_| act.refuse(handle));
                async move {
                    match (refused, close) {
                        (Some(e), Some(close)) => {
                            close.await;
                            Ok(Accepted::Refused(e))
                        }
                        _ => answer,
                    }
                }
                .into_actor(act)
            }))
        }))
    }
}

impl<F: Filter> FilterActor<F> {
    /// The listener's `accept` when connections are finished ahead: the oldest finished
    /// connection, else the inner transport's error, else the oldest refused connection,
    /// else would-block (and a `Ready` owed). Accepting ahead goes on either way.
    fn take_ahead(
        &mut self,
        msg: Accept,
        ctx: &mut Context<Self>,
    ) -> Result<Accepted, TransportError> {
        let listener = msg.handle;
        let ahead = self.ahead.entry(listener).or_default();
        let answer = if let Some((handle, peer)) = ahead.connections.pop_front() {
            if let Some(route) = self.link.routes.get_mut(&handle) {
                route.events = Some(msg.events.clone());
            }
            self.filter.routed(handle, &msg.events);
            Ok(Accepted::Connection { handle, peer })
        } else if let Some(error) = ahead.error.take() {
            Err(error)
        } else if let Some(error) = ahead.refused.pop_front() {
            Ok(Accepted::Refused(error))
        } else {
            ahead.owed = true;
            Ok(Accepted::WouldBlock)
        };
        self.accept_ahead(listener, ctx);
        answer
    }

    /// Asks the inner transport for the next connection, while there is room ahead.
    fn accept_ahead(&mut self, listener: Handle, ctx: &mut Context<Self>) {
        let room = self.filter.background_accepts();
        let Some(ahead) = self.ahead.get_mut(&listener) else {
            return;
        };
        if ahead.in_flight
            || ahead.blocked
            || ahead.error.is_some()
            || ahead.running + ahead.connections.len() >= room
        {
            return;
        }
        ahead.in_flight = true;
        let inner = self.link.inner.accept().cloned();
        let accept = Accept {
            handle: listener,
            events: Self::own_events(ctx),
        };
        let accepted = async move { call(inner.as_ref(), "accept", accept).await };
        ctx.spawn(
            accepted
                .into_actor(self)
                .map(move |answer, act, ctx| act.accepted_ahead(listener, answer, ctx)),
        );
    }

    /// The inner transport's answer to an `accept` made ahead.
    fn accepted_ahead(
        &mut self,
        listener: Handle,
        answer: Result<Accepted, TransportError>,
        ctx: &mut Context<Self>,
    ) {
        self.filter.saw_accept(listener, &answer);
        let Some(ahead) = self.ahead.get_mut(&listener) else {
            // The listener closed meanwhile: a connection it took is not wanted.
            if let Ok(Accepted::Connection { handle, .. }) = answer {
                let inner = self.link.inner.close().clone();
                ctx.spawn(actix::fut::wrap_future(async move {
                    let _ = inner.send(CloseSocket { handle }).await;
                }));
            }
            return;
        };
        ahead.in_flight = false;
        let hinted = std::mem::take(&mut ahead.ready_hint);
        match answer {
            Ok(Accepted::WouldBlock) if hinted => {
                // Its `Ready` already came (it overtook this answer): try again now.
                self.accept_ahead(listener, ctx);
            }
            Ok(Accepted::WouldBlock) => ahead.blocked = true,
            Err(e) => {
                ahead.error = Some(e);
                self.wake_listener(listener);
            }
            Ok(Accepted::Refused(e)) => {
                ahead.refused.push_back(e);
                trim_refused(ahead);
                self.wake_listener(listener);
                self.accept_ahead(listener, ctx);
            }
            Ok(Accepted::Connection { handle, peer }) => {
                ahead.running += 1;
                let route = Route {
                    events: None,
                    kind: SocketKind::Stream,
                };
                self.link.routes.insert(handle, route);
                let finishing = self.filter.accepted(handle, &mut self.link, ctx);
                ctx.spawn(finishing.map(move |finished, act, ctx| {
                    act.finished_ahead(listener, handle, peer, finished, ctx)
                }));
                self.accept_ahead(listener, ctx);
            }
        }
    }

    /// A connection accepted ahead is finished (or failed to finish).
    fn finished_ahead(
        &mut self,
        listener: Handle,
        handle: Handle,
        peer: Address,
        finished: Result<(), TransportError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(ahead) = self.ahead.get_mut(&listener) else {
            ctx.spawn(actix::fut::wrap_future(self.refuse(handle)));
            return;
        };
        ahead.running -= 1;
        match finished {
            Ok(()) => ahead.connections.push_back((handle, peer)),
            Err(e) => {
                ahead.refused.push_back(e);
                trim_refused(ahead);
                ctx.spawn(actix::fut::wrap_future(self.refuse(handle)));
            }
        }
        self.wake_listener(listener);
        self.accept_ahead(listener, ctx);
    }

    /// Sends the listener the `Ready` it is owed, if it is owed one.
    fn wake_listener(&mut self, listener: Handle) {
        if let Some(ahead) = self.ahead.get_mut(&listener) {
            if std::mem::take(&mut ahead.owed) {
                self.link.notify(listener, Readiness::Readable);
            }
        }
    }

    /// What the filter must do before `handle` is shut down or closed on the inner
    /// transport ([`Filter::closing`]), or nothing for a handle it does not know.
    fn finishing(&mut self, handle: Handle, ctx: &mut Context<Self>) -> FilterAnswer<F, ()> {
        if self.link.routes.contains_key(&handle) {
            self.filter.closing(handle, &mut self.link, ctx)
        } else {
            Box::pin(actix::fut::ready(Ok(())))
        }
    }

    /// Forgets a handle the filter refused and closes it on the inner transport.
    fn refuse(&mut self, handle: Handle) -> impl Future<Output = ()> + 'static {
        tracing::debug!(filter = self.filter.name(), %handle, "filter refused a connection");
        self.link.routes.remove(&handle);
        self.filter.closed(handle);
        let inner = self.link.inner.close().clone();
        async move {
            let _ = inner.send(CloseSocket { handle }).await;
        }
    }
}

impl<F: Filter> Handler<Connect> for FilterActor<F> {
    type Result = ResponseActFuture<Self, Result<(), TransportError>>;

    /// Connects on the inner transport, then lets the filter finish the connection
    /// ([`Filter::connected`]) before the socket hears the answer.
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) -> Self::Result {
        let handle = msg.handle;
        let inner = self.link.inner.connect().clone();
        let (addr, asked) = (msg.addr.clone(), Instant::now());
        let connected = async move { inner.send(msg).await? };
        Box::pin(connected.into_actor(self).then(move |answer, act, ctx| {
            act.filter.saw_connect(handle, &addr, asked, &answer);
            if answer.is_err() || !act.link.routes.contains_key(&handle) {
                return Box::pin(actix::fut::ready(answer)) as Self::Result;
            }
            act.filter.connected(handle, &mut act.link, ctx)
        }))
    }
}

impl<F: Filter> Handler<Bind> for FilterActor<F> {
    type Result = ResponseFuture<Result<Address, TransportError>>;

    fn handle(&mut self, msg: Bind, _: &mut Context<Self>) -> Self::Result {
        let inner = self.link.inner.bind().cloned();
        Box::pin(async move { call(inner.as_ref(), "bind", msg).await })
    }
}

impl<F: Filter> Handler<Listen> for FilterActor<F> {
    type Result = ResponseFuture<Result<(), TransportError>>;

    fn handle(&mut self, msg: Listen, _: &mut Context<Self>) -> Self::Result {
        let inner = self.link.inner.listen().cloned();
        Box::pin(async move { call(inner.as_ref(), "listen", msg).await })
    }
}

impl<F: Filter> Handler<ShutdownWrite> for FilterActor<F> {
    type Result = ResponseActFuture<Self, Result<(), TransportError>>;

    /// Lets the filter hand on what it holds ([`Filter::closing`]: a TLS filter sends
    /// its close_notify), then shuts down the sending half on the inner transport.
    fn handle(&mut self, msg: ShutdownWrite, ctx: &mut Context<Self>) -> Self::Result {
        let handle = msg.handle;
        let finishing = self.finishing(handle, ctx);
        let inner = self.link.inner.shutdown().cloned();
        Box::pin(finishing.then(move |finished, act, _| {
            async move {
                finished?;
                call(inner.as_ref(), "shutdown", msg).await
            }
            .into_actor(act)
        }))
    }
}

impl<F: Filter> Handler<CloseSocket> for FilterActor<F> {
    type Result = ResponseActFuture<Self, Result<(), TransportError>>;

    /// Lets the filter finish with the handle ([`Filter::closing`]), then forgets it and
    /// closes it on the inner transport (even when finishing failed).
    fn handle(&mut self, msg: CloseSocket, ctx: &mut Context<Self>) -> Self::Result {
        let handle = msg.handle;
        if let Some(ahead) = self.ahead.remove(&handle) {
            // A closing listener: connections finished for it are not wanted (those
            // still finishing are closed when they are done).
            for (handle, _) in ahead.connections {
                ctx.spawn(actix::fut::wrap_future(self.refuse(handle)));
            }
        }
        let finishing = self.finishing(handle, ctx);
        Box::pin(finishing.then(move |finished, act, _| {
            act.link.routes.remove(&handle);
            if act.link.routes.is_empty() {
                // No handle is left to owe a notice to: the timers would only keep the
                // actor alive once nothing holds it.
                act.later.queue.clear();
            }
            act.filter.closed(handle);
            let inner = act.link.inner.close().clone();
            let closed = async move {
                let closed = inner.send(msg).await?;
                finished.and(closed)
            };
            closed.into_actor(act)
        }))
    }
}

impl<F: Filter> Handler<SendV> for FilterActor<F> {
    type Result = ResponseActFuture<Self, Result<Sent, TransportError>>;

    fn handle(&mut self, msg: SendV, ctx: &mut Context<Self>) -> Self::Result {
        if !self.link.routes.contains_key(&msg.handle) {
            return Box::pin(actix::fut::ready(Err(TransportError::UnknownHandle(
                msg.handle,
            ))));
        }
        self.filter.sendv(msg, &mut self.link, ctx)
    }
}

impl<F: Filter> Handler<RecvFrom> for FilterActor<F> {
    type Result = ResponseActFuture<Self, Result<Received, TransportError>>;

    fn handle(&mut self, msg: RecvFrom, ctx: &mut Context<Self>) -> Self::Result {
        if !self.link.routes.contains_key(&msg.handle) {
            return Box::pin(actix::fut::ready(Err(TransportError::UnknownHandle(
                msg.handle,
            ))));
        }
        self.filter.recvfrom(msg, &mut self.link, ctx)
    }
}

/// A notice from the inner transport, owed after one of its would-block answers:
/// forwarded to the socket that owns the handle.
impl<F: Filter> Handler<Ready> for FilterActor<F> {
    type Result = ();

    fn handle(&mut self, msg: Ready, ctx: &mut Context<Self>) {
        tracing::trace!(filter = self.filter.name(), handle = %msg.handle, "inner transport ready");
        if let Some(ahead) = self.ahead.get_mut(&msg.handle) {
            // A listener this filter accepts ahead of: the notice is the filter's own.
            ahead.blocked = false;
            if ahead.in_flight {
                ahead.ready_hint = true;
            }
            self.accept_ahead(msg.handle, ctx);
            return;
        }
        if self.link.routes.contains_key(&msg.handle) {
            self.filter.ready(msg.handle, msg.readiness);
        }
        self.filter.inner_ready(msg, &mut self.link, ctx);
    }
}
