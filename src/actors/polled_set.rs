//! One future in an actor's context that polls a set the actor owns (readiness waits,
//! timers), instead of a future per member: actix polls every future of a context at
//! each of the actor's wake-ups, so a future per waiting socket made every message cost
//! a poll per socket. The set polls only what was woken since its last poll.
//!
//! The poller ends when the set is empty (a future left in a context keeps its actor
//! alive for good) and is started again by the next [`added`].

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Waker};

use actix::{Actor, ActorFuture, AsyncContext, Context};

/// An actor with a set polled by one future in its context.
pub(crate) trait PolledSet: Actor<Context = Context<Self>> {
    /// The poller's state in the actor.
    fn poller(&mut self) -> &mut SetPoller;

    /// Polls the set with `task` (registering its wake-ups), handles what is done, and
    /// says whether the set is now empty.
    fn poll_set(&mut self, task: &mut TaskContext<'_>) -> bool;
}

/// Whether the poller runs, and the actor's task from its last poll.
#[derive(Debug, Default)]
pub(crate) struct SetPoller {
    /// `Some` while the poller runs (its last poll's task).
    waker: Option<Waker>,
    polling: bool,
}

/// A member was added to `act`'s set: starts the poller (polled in this wake-up, after
/// the code that added it), or, if it runs, polls the set at once (it may have been
/// polled earlier in this wake-up, and the new member would miss its wake-ups).
pub(crate) fn added<A: PolledSet>(act: &mut A, ctx: &mut Context<A>) {
    let poller = act.poller();
    if !poller.polling {
        poller.polling = true;
        ctx.spawn(Poller::<A>(PhantomData));
    } else if let Some(waker) = poller.waker.clone() {
        act.poll_set(&mut TaskContext::from_waker(&waker));
    }
}

/// The future in the context that polls the set.
struct Poller<A>(PhantomData<fn(A)>);

impl<A: PolledSet> ActorFuture<A> for Poller<A> {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut A,
        _: &mut Context<A>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let poller = act.poller();
        if !poller
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(task.waker()))
        {
            poller.waker = Some(task.waker().clone());
        }
        if act.poll_set(task) {
            *act.poller() = SetPoller::default();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}
