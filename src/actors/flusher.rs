//! The [`Flusher`]: c-ares' pending-write callback as an actor.

use std::cell::RefCell;
use std::sync::Arc;

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

/// This thread's Flusher and the recipient its sockets share.
type Current = (Addr<Flusher>, Arc<Recipient<PendingWrite>>);

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

    /// This thread's Flusher as a shared recipient: what every deferred socket of the
    /// thread holds (one reference count each, rather than a boxed recipient each).
    pub(crate) fn current_recipient() -> Arc<Recipient<PendingWrite>> {
        Self::with_current(|_, recipient| recipient.clone())
    }

    fn with_current<R>(f: impl FnOnce(&Addr<Flusher>, &Arc<Recipient<PendingWrite>>) -> R) -> R {
        CURRENT.with(|cell| {
            let mut slot = cell.borrow_mut();
            let (addr, recipient) = match slot.take() {
                Some(current) if current.0.connected() => current,
                _ => {
                    let addr = Flusher::new().start();
                    let recipient = Arc::new(addr.clone().recipient());
                    (addr, recipient)
                }
            };
            let out = f(&addr, &recipient);
            *slot = Some((addr, recipient));
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

/// Asks a socket's Flusher for a flush (c-ares' pending-write notification): `true` when
/// a [`PendingWrite`] went out and the socket now waits for its [`Flush`]; `false` when
/// there is no Flusher (immediate policy) or it is gone, which is then forgotten (with a
/// warning) so the socket writes at once from now on.
pub(crate) fn request_flush(
    flusher: &mut Option<Arc<Recipient<PendingWrite>>>,
    socket: SocketId,
    flush: impl FnOnce() -> Recipient<Flush>,
    span: &tracing::Span,
) -> bool {
    match flusher {
        None => false,
        Some(f) if f.connected() => {
            f.do_send(PendingWrite {
                socket,
                flush: flush(),
            });
            true
        }
        Some(_) => {
            tracing::warn!(parent: span, "flusher is gone; writing immediately");
            *flusher = None;
            false
        }
    }
}
