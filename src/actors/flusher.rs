//! The [`Flusher`]: c-ares' pending-write callback as an actor.

use std::cell::RefCell;
use std::sync::Arc;

use actix::dev::RecipientRequest;
use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Recipient, WrapFuture};

use crate::messages::flush::{Flush, PendingWrite};
use crate::messages::socket::SocketId;

/// Collects sockets that have freshly queued data and tells each of them to flush once
/// the current burst of messages on its thread has been handled.
///
/// A deferred [`Socket`](crate::Socket) sends one [`PendingWrite`] when its queue goes
/// from empty to non-empty. The first `PendingWrite` of a round makes the Flusher yield
/// to the runtime, so that every actor already scheduled on this thread (the producers
/// and the socket itself, still working through their mailboxes) runs first; then each
/// pending socket gets one [`Flush`], which lands in its mailbox *behind* the writes of
/// the burst. The socket never flushes on the notification path itself.
///
/// There is one Flusher per arbiter (thread): [`Flusher::current`].
#[derive(Debug, Default)]
pub struct Flusher {
    pending: Vec<Recipient<Flush>>,
    scheduled: bool,
}

/// This thread's Flusher and the link its sockets share.
type Current = (Addr<Flusher>, Arc<FlusherLink>);

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

impl Flusher {
    /// A new Flusher (start it with [`Actor::start`]). Most code wants [`Flusher::current`].
    pub fn new() -> Self {
        Self::default()
    }

    /// This thread's Flusher, started on first use. Must be called inside a running actix
    /// system (an arbiter).
    pub fn current() -> Addr<Flusher> {
        Self::with_current(|addr, _| addr.clone())
    }

    fn with_current<R>(f: impl FnOnce(&Addr<Flusher>, &Arc<FlusherLink>) -> R) -> R {
        CURRENT.with(|cell| {
            let mut slot = cell.borrow_mut();
            let (addr, link) = match slot.take() {
                Some(current) if current.0.connected() => current,
                _ => {
                    let addr = Flusher::new().start();
                    let link = Arc::new(FlusherLink {
                        recipient: addr.clone().recipient(),
                        watched: false,
                    });
                    (addr, link)
                }
            };
            let out = f(&addr, &link);
            *slot = Some((addr, link));
            out
        })
    }

    fn flush_all(&mut self) {
        self.scheduled = false;
        tracing::trace!(sockets = self.pending.len(), "flusher round");
        for socket in self.pending.drain(..) {
            // `do_send` ignores the mailbox capacity: the socket's mailbox may hold the
            // whole burst. A socket that stopped meanwhile has nothing left to flush.
            socket.do_send(Flush);
        }
    }
}

impl Actor for Flusher {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Sockets waiting for this round are not stranded: they flush now.
        self.flush_all();
    }
}

impl Handler<PendingWrite> for Flusher {
    type Result = ();

    fn handle(&mut self, msg: PendingWrite, ctx: &mut Context<Self>) {
        self.pending.push(msg.flush);
        if !self.scheduled {
            self.scheduled = true;
            // tokio's `yield_now` wakes the Flusher only once the runtime has run out of
            // ready tasks and polled its I/O driver: the burst has truly ended. Waking it
            // at the back of the run queue instead saved a system call per round trip
            // (ping-pong p50 7.1 → 6.6 µs) but halved the writes per `writev` of answered
            // small writes (producers woken by answers came after the flush): not kept.
            ctx.spawn(
                tokio::task::yield_now()
                    .into_actor(self)
                    .map(|_, act, _| act.flush_all()),
            );
        }
    }
}

/// A socket's Flusher, as the sockets that use it share it.
#[derive(Debug)]
pub(crate) struct FlusherLink {
    recipient: Recipient<PendingWrite>,
    /// A Flusher of the caller's ([`FlushPolicy::Deferred`](crate::FlushPolicy::Deferred)):
    /// it may stop with a request unhandled in its mailbox, so each request is watched.
    /// The thread's own lives as long as the arbiter of its sockets.
    watched: bool,
}

impl FlusherLink {
    /// This thread's Flusher (started on first use), shared by its sockets: one
    /// reference count each, rather than a boxed recipient each.
    pub(crate) fn current() -> Arc<FlusherLink> {
        Flusher::with_current(|_, link| link.clone())
    }

    /// A Flusher of the caller's, its requests watched.
    pub(crate) fn given(recipient: Recipient<PendingWrite>) -> Arc<FlusherLink> {
        Arc::new(FlusherLink {
            recipient,
            watched: true,
        })
    }
}

/// What became of a socket's request for a flush.
pub(crate) enum FlushRequest {
    /// A [`PendingWrite`] went out: the socket waits for its [`Flush`].
    Sent,
    /// The same, to a Flusher of the caller's: an error from this says the request died
    /// unhandled with the Flusher's mailbox (no `Flush` will come), and the socket then
    /// writes at once from now on. Once handled, the Flusher is looked at every
    /// [`FLUSHER_CHECK`] until its `Flush` comes: one that stopped meanwhile will not
    /// answer either.
    Watch(RecipientRequest<PendingWrite>, Recipient<PendingWrite>),
    /// No Flusher (immediate policy), or it is gone (then forgotten, with a warning):
    /// the socket writes at once from now on.
    Gone,
}

/// How often a socket looks at a Flusher of the caller's that has handled its request
/// but not answered it yet: a Flusher that stopped in between never will.
pub(crate) const FLUSHER_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// A socket asking a Flusher of the caller's: what the watch of its request needs.
pub(crate) trait FlushWaiter: Actor<Context = Context<Self>> {
    /// How many flushes were asked so far, while the last one's `Flush` is still to
    /// come; `None` when none is awaited.
    fn awaited_flush(&self) -> Option<u64>;

    /// The Flusher stopped with the request unanswered: no `Flush` will come, and the
    /// socket writes at once from now on.
    fn flusher_lost(&mut self, ctx: &mut Context<Self>);
}

impl FlushRequest {
    /// What the socket does with it: nothing more once sent; `gone` at once when there is
    /// no Flusher; a watched request is spawned in `ctx`: if it died unhandled, or the
    /// Flusher stops after handling it without answering, the socket hears
    /// [`FlushWaiter::flusher_lost`].
    pub(crate) fn follow<A: FlushWaiter>(
        self,
        act: &mut A,
        ctx: &mut Context<A>,
        gone: impl FnOnce(&mut A),
    ) {
        match self {
            FlushRequest::Sent => {}
            FlushRequest::Watch(request, flusher) => {
                ctx.spawn(request.into_actor(&*act).map(move |answer, act, ctx| {
                    if answer.is_err() {
                        act.flusher_lost(ctx);
                    } else if let Some(asked) = act.awaited_flush() {
                        watch_flusher(flusher, asked, ctx);
                    }
                }));
            }
            FlushRequest::Gone => gone(act),
        }
    }
}

/// Looks at `flusher` every [`FLUSHER_CHECK`] while the socket still awaits the `Flush`
/// of its request number `asked`.
fn watch_flusher<A: FlushWaiter>(
    flusher: Recipient<PendingWrite>,
    asked: u64,
    ctx: &mut Context<A>,
) {
    ctx.run_later(FLUSHER_CHECK, move |act, ctx| {
        if act.awaited_flush() != Some(asked) {
            return;
        }
        if flusher.connected() {
            watch_flusher(flusher, asked, ctx);
        } else {
            act.flusher_lost(ctx);
        }
    });
}

/// Asks a socket's Flusher for a flush (c-ares' pending-write notification).
pub(crate) fn request_flush(
    flusher: &mut Option<Arc<FlusherLink>>,
    socket: SocketId,
    flush: impl FnOnce() -> Recipient<Flush>,
    span: &tracing::Span,
) -> FlushRequest {
    match flusher {
        None => FlushRequest::Gone,
        Some(f) if f.recipient.connected() => {
            let request = PendingWrite {
                socket,
                flush: flush(),
            };
            if f.watched {
                // A sender of its own, never parked by a full mailbox: the request is
                // queued now, as a `do_send` would be.
                FlushRequest::Watch(f.recipient.clone().send(request), f.recipient.clone())
            } else {
                f.recipient.do_send(request);
                FlushRequest::Sent
            }
        }
        Some(_) => {
            tracing::warn!(parent: span, "flusher is gone; writing immediately");
            *flusher = None;
            FlushRequest::Gone
        }
    }
}
