//! A socket actor's own waits for its system socket's readiness ([`WaitSlots`], one
//! [`ReadinessWait`] per direction), when it calls the operating system in place (stream
//! and datagram sockets alike), and its calls to a transport reached by message
//! ([`call`]). Each watches the actor's mailbox while it is out: actix keeps an actor
//! with spawned futures running, so the wait or the call notices the last address gone.

use std::sync::Arc;
use std::task::Poll;

use actix::{Actor, ActorFuture, AsyncContext, Context, SpawnHandle};

use super::functions::{SystemDatagram, SystemStream};
use crate::types::Readiness;

/// A system socket whose readiness can be awaited; the waker is kept in the socket's own
/// slot for that direction (only the one actor calling it in place ever waits on it), so
/// an armed idle socket holds no waiter node.
pub(crate) trait PollReady {
    /// Polls readiness for `readiness`. An error here surfaces on the retry.
    fn poll_ready(
        &self,
        readiness: Readiness,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>>;
}

impl PollReady for SystemStream {
    fn poll_ready(
        &self,
        readiness: Readiness,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        match readiness {
            Readiness::Writable => self.poll_write_ready(cx),
            Readiness::Readable => self.poll_read_ready(cx),
        }
    }
}

impl PollReady for SystemDatagram {
    fn poll_ready(
        &self,
        readiness: Readiness,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        SystemDatagram::poll_ready(self, readiness, cx)
    }
}

/// An actor that waits on the reactor itself.
pub(crate) trait Waiter: Actor<Context = Context<Self>> {
    /// Whether it is open (a closing actor is not orphaned: it finishes its close).
    fn is_open(&self) -> bool;
}

/// The wait. Besides readiness it watches the actor's mailbox: actix keeps an actor with
/// spawned futures running, so an open socket waiting on the reactor would otherwise
/// outlive its last address. It calls `woke` itself when it ends (no combinator: every
/// idle socket holds one of these, boxed by actix).
struct ReadinessWait<S, A: Actor<Context = Context<A>>> {
    socket: Arc<S>,
    woke: fn(&mut A, Readiness, Woke, &mut Context<A>),
    readiness: Readiness,
}

/// How a [`ReadinessWait`] ended.
pub(crate) enum Woke {
    /// The socket is ready.
    Ready,
    /// No address of the actor is left (checked only while it is open).
    Orphaned,
}

impl<S: PollReady, A: Waiter> ActorFuture<A> for ReadinessWait<S, A> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        act: &mut A,
        ctx: &mut Context<A>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        // Dropping the last address wakes the actor's task, which polls this again.
        let how = if act.is_open() && !ctx.connected() {
            Woke::Orphaned
        } else if self.socket.poll_ready(self.readiness, task).is_ready() {
            Woke::Ready
        } else {
            return Poll::Pending;
        };
        (self.woke)(act, self.readiness, how, ctx);
        Poll::Ready(())
    }
}

/// A socket's two waits on the reactor, one per direction, each armed at most once.
#[derive(Debug, Default)]
pub(crate) struct WaitSlots {
    write: Option<SpawnHandle>,
    read: Option<SpawnHandle>,
}

impl WaitSlots {
    fn slot(&mut self, readiness: Readiness) -> &mut Option<SpawnHandle> {
        match readiness {
            Readiness::Writable => &mut self.write,
            Readiness::Readable => &mut self.read,
        }
    }

    /// Waits for `readiness` of `socket` unless that wait is armed already; `woke`
    /// runs in the actor when it ends (ready, or the actor orphaned).
    pub(crate) fn arm<S, A>(
        &mut self,
        socket: &Arc<S>,
        readiness: Readiness,
        ctx: &mut Context<A>,
        woke: fn(&mut A, Readiness, Woke, &mut Context<A>),
    ) where
        S: PollReady + 'static,
        A: Waiter,
    {
        let slot = self.slot(readiness);
        if slot.is_some() {
            return;
        }
        let wait = ReadinessWait {
            socket: socket.clone(),
            woke,
            readiness,
        };
        *slot = Some(ctx.spawn(wait));
    }

    /// The wait for `readiness` ended.
    pub(crate) fn ended(&mut self, readiness: Readiness) {
        *self.slot(readiness) = None;
    }

    /// Stops both waits.
    pub(crate) fn cancel<A: Waiter>(&mut self, ctx: &mut Context<A>) {
        for wait in [self.write.take(), self.read.take()].into_iter().flatten() {
            ctx.cancel_future(wait);
        }
    }
}

/// An actor whose transport calls by message ([`call`]) watch its mailbox.
pub(crate) trait Orphanable: Waiter {
    /// Every address of the actor was dropped while a call to its transport was out
    /// (noticed only while it is open): it closes gracefully, as with no call out.
    fn orphaned(&mut self, ctx: &mut Context<Self>);
}

/// A call to a transport by message (the future of its answer); `done` runs in the actor
/// with the answer. While the answer is awaited the call watches the actor's mailbox: a
/// transport that never answers must not hide from an open actor that its last address
/// is gone. Once no address is left, nobody can abort the actor, so the call is
/// answered [`MailboxError::Timeout`](actix::MailboxError::Timeout) (a
/// [`TransportError::Unavailable`](crate::TransportError::Unavailable)) if the transport
/// has not answered within [`FLIGHT_GRACE`](crate::proto::FLIGHT_GRACE): the actor
/// then ends as for a transport gone, every write answered.
pub(crate) fn call<A, F, D, T>(answer: F, done: D) -> Call<F, D>
where
    A: Orphanable,
    F: std::future::Future<Output = Result<T, actix::MailboxError>>,
    D: FnOnce(F::Output, &mut A, &mut Context<A>),
{
    Call {
        answer,
        done: Some(done),
        grace: None,
    }
}

pin_project_lite::pin_project! {
    /// See [`call`].
    pub(crate) struct Call<F, D> {
        #[pin]
        answer: F,
        done: Option<D>,
        // Armed when the last address is gone (boxed: most calls never need it).
        grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<A, F, D, T> ActorFuture<A> for Call<F, D>
where
    A: Orphanable,
    F: std::future::Future<Output = Result<T, actix::MailboxError>>,
    D: FnOnce(F::Output, &mut A, &mut Context<A>),
{
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        act: &mut A,
        ctx: &mut Context<A>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        let this = self.project();
        let answer = match this.answer.poll(task) {
            Poll::Ready(answer) => Some(answer),
            // Dropping the last address wakes the actor's task, which polls this again.
            Poll::Pending if !ctx.connected() => {
                if act.is_open() {
                    act.orphaned(ctx);
                }
                // No grace without a runtime (the actor dropped with it): nothing waits.
                if this.grace.is_none() && !super::runtime_gone() {
                    *this.grace = Some(Box::pin(tokio::time::sleep(crate::proto::FLIGHT_GRACE)));
                }
                match this
                    .grace
                    .as_mut()
                    .map(|grace| std::future::Future::poll(grace.as_mut(), task))
                {
                    Some(Poll::Ready(())) => {
                        tracing::debug!("a transport call unanswered after the last address went");
                        Some(Err(actix::MailboxError::Timeout))
                    }
                    _ => None,
                }
            }
            Poll::Pending => None,
        };
        let Some(answer) = answer else {
            return Poll::Pending;
        };
        if let Some(done) = this.done.take() {
            done(answer, act, ctx);
        }
        Poll::Ready(())
    }
}
