//! Where a write's one answer goes: the rendezvous shared by [`Socket`](crate::Socket),
//! [`DatagramSocket`](crate::DatagramSocket) and
//! [`ReconnectingClient`](crate::ReconnectingClient).
//!
//! actix hands a handler's reply channel over only after the handler has returned (to
//! its [`MessageResponse`]), while the write is already queued. So a queued write's token
//! starts [`Reply::pending`], the response parks the channel in the actor's one
//! [`Rendezvous`] slot, and the actor moves it onto the token before it queues the next
//! write ([`Rendezvous::attach`]). An answer that comes before the channel (a write that
//! finishes inside its own handler) waits in the slot for it. One slot per actor, no
//! allocation per write: only the write handled last can be waiting for its channel.
//!
//! A response that finds a failure nobody waits for (a `do_send` write refused in its
//! handler) cannot reach the actor: it parks the failure in the rendezvous, in order, and
//! the actor reports the parked ones before any failure it reports itself
//! ([`Rendezvous::answer`]) or when it handles [`ReportFailures`]. (A message to self per
//! failure, as before, was handled out of order: actix may poll its context's items in
//! any order.)

use std::cell::{OnceCell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;

use actix::dev::{MessageResponse, OneshotSender};
use actix::{Actor, AsyncContext, Context, Handler, Message};

/// Where one write's answer goes.
#[derive(Debug)]
enum To<R> {
    /// Fire-and-forget (`do_send`, a `Writer`'s `write`): a failure is reported to the
    /// actor's subscriber instead.
    Nobody,
    /// The caller's reply channel (`send`).
    Channel(OneshotSender<R>),
    /// A channel of our own that came with the write (a `Writer`'s awaited write: its
    /// future may be dropped without cancelling the write, unlike actix's `send`).
    Own(tokio::sync::oneshot::Sender<R>),
    /// The channel is in the actor's rendezvous slot, or about to be.
    Pending,
}

/// A write's token: its tag and where its answer goes.
#[derive(Debug)]
pub(crate) struct Reply<R> {
    pub(crate) tag: Option<u64>,
    to: To<R>,
}

impl<R> Reply<R> {
    /// A write whose reply channel actix hands over after its handler returns.
    pub(crate) fn pending(tag: Option<u64>) -> Self {
        Reply {
            tag,
            to: To::Pending,
        }
    }

    /// A write that brought its own reply channel (or none: fire-and-forget) and needs
    /// none from actix.
    pub(crate) fn own(tag: Option<u64>, tx: Option<tokio::sync::oneshot::Sender<R>>) -> Self {
        let to = match tx {
            Some(tx) => To::Own(tx),
            None => To::Nobody,
        };
        Reply { tag, to }
    }
}

impl<R> crate::proto::Token for Reply<R> {
    fn silent(&self) -> bool {
        matches!(self.to, To::Nobody)
    }
    fn new_silent() -> Self {
        Reply::own(None, None)
    }
    fn unheard(&self) -> bool {
        matches!(self.to, To::Pending)
    }
}

/// What [`Rendezvous::attach_stamped`] made of the last write's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attached {
    /// Nothing was parked for it (its answer was decided already, or no write is
    /// pending).
    Nothing,
    /// A caller listens (`send`); its latency counts from this time, if one was read.
    Listened(Option<std::time::Instant>),
    /// Nobody listens (`do_send`): the write turned out fire-and-forget.
    Silent,
}

#[derive(Debug, Default)]
enum Slot<R> {
    #[default]
    Empty,
    /// The channel came (`None`: `do_send`, nobody listens), and when (read only when
    /// someone listens: a fire-and-forget write's latency is never read).
    Channel(Option<OneshotSender<R>>, Option<std::time::Instant>),
    /// The answer came first.
    Answered(R),
}

/// What an actor's responses share with it: the slot, and the failures a response found
/// that nobody waits for (a `do_send` write refused in its handler), in the order found.
#[derive(Debug)]
struct Parked<R> {
    slot: RefCell<Slot<R>>,
    /// Reported by the actor, in order, before any failure it reports itself: a
    /// response cannot reach the actor, and a message to self per failure (actix's
    /// `notify`) could be handled out of order.
    reports: RefCell<VecDeque<(Option<u64>, R)>>,
}

/// An actor's rendezvous of reply channels and answers (see the [module docs](self)).
/// Made by the first write answered through it: an actor that was never written to by
/// message (an idle socket) holds none.
#[derive(Debug)]
pub(crate) struct Rendezvous<R>(OnceCell<Rc<Parked<R>>>);

impl<R> Default for Rendezvous<R> {
    fn default() -> Self {
        Rendezvous(OnceCell::new())
    }
}

impl<R> Rendezvous<R> {
    fn parked(&self) -> &Rc<Parked<R>> {
        self.0.get_or_init(|| {
            Rc::new(Parked {
                slot: RefCell::new(Slot::Empty),
                reports: RefCell::new(VecDeque::new()),
            })
        })
    }

    /// The response for a write that was queued: it parks the reply channel here.
    pub(crate) fn later(&self, tag: Option<u64>) -> WriteResponse<R> {
        WriteResponse(Inner::Later(tag, Rc::clone(self.parked())))
    }

    /// The response for a write answered in its handler (refused, or done at once): to
    /// the caller's channel, or (a failure nobody waits for) reported by the actor in
    /// order with its other failures.
    pub(crate) fn now(&self, tag: Option<u64>, result: R) -> WriteResponse<R> {
        WriteResponse(Inner::Now(tag, result, Rc::clone(self.parked())))
    }

    /// The slot, if a write was ever queued through it (else nothing can be parked).
    fn slot(&self) -> Option<&RefCell<Slot<R>>> {
        self.0.get().map(|parked| &parked.slot)
    }

    /// Reports, in order, the failures responses found that nobody waits for. The actor
    /// calls it when it handles [`ReportFailures`]; [`answer`](Self::answer) calls it
    /// before it reports a failure of its own.
    pub(crate) fn report_parked(&self, mut report: impl FnMut(Option<u64>, R::Error))
    where
        R: Outcome,
    {
        let Some(parked) = self.0.get() else {
            return;
        };
        loop {
            let next = parked.reports.borrow_mut().pop_front();
            let Some((tag, result)) = next else {
                return;
            };
            if let Some(error) = result.failure() {
                report(tag, error);
            }
        }
    }

    /// Moves a parked reply channel onto `token` (the token of the write handled last, if
    /// still pending). Call before queuing the next write.
    pub(crate) fn attach(&self, token: Option<&mut Reply<R>>) {
        self.attach_stamped(token);
    }

    /// [`attach`](Self::attach), returning what the token became: listened to, with
    /// the time to count that write's latency from (the handler did not read the clock
    /// for it, not knowing whether anyone would listen), or silent (`do_send`).
    pub(crate) fn attach_stamped(&self, token: Option<&mut Reply<R>>) -> Attached {
        let Some(cell) = self.slot() else {
            return Attached::Nothing;
        };
        let slot = std::mem::take(&mut *cell.borrow_mut());
        match slot {
            Slot::Channel(tx, at) => match token.filter(|t| matches!(t.to, To::Pending)) {
                Some(token) => match tx {
                    Some(tx) => {
                        token.to = To::Channel(tx);
                        Attached::Listened(at)
                    }
                    None => {
                        token.to = To::Nobody;
                        Attached::Silent
                    }
                },
                // Unreachable while the owner finds the token of every write whose
                // answer is still to come.
                None => {
                    debug_assert!(tx.is_none(), "a reply channel with no write to take it");
                    Attached::Nothing
                }
            },
            // Not ours to take: the response of the write being handled picks it up.
            answered @ Slot::Answered(_) => {
                *cell.borrow_mut() = answered;
                Attached::Nothing
            }
            Slot::Empty => Attached::Nothing,
        }
    }

    /// Delivers a write's answer: to its channel, or (a failure nobody waits for) to
    /// `report`.
    pub(crate) fn answer(
        &self,
        reply: Reply<R>,
        result: R,
        mut report: impl FnMut(Option<u64>, R::Error),
    ) where
        R: Outcome,
    {
        let tx = match reply.to {
            To::Nobody => None,
            To::Channel(tx) => Some(tx),
            To::Own(tx) => {
                if let Err(result) = tx.send(result) {
                    if let Some(error) = result.failure() {
                        self.report_parked(&mut report);
                        report(reply.tag, error);
                    }
                }
                return;
            }
            To::Pending => {
                // A pending token was made with `later`, which made the slot.
                let cell = &self.parked().slot;
                let slot = std::mem::take(&mut *cell.borrow_mut());
                match slot {
                    Slot::Channel(tx, _) => tx,
                    // Answered inside its own handler: the response picks it up.
                    Slot::Empty | Slot::Answered(_) => {
                        *cell.borrow_mut() = Slot::Answered(result);
                        return;
                    }
                }
            }
        };
        let unanswered = match tx {
            Some(tx) => tx.send(result).err(),
            None => Some(result),
        };
        if let Some(error) = unanswered.and_then(Outcome::failure) {
            // Failures found earlier by responses go first.
            self.report_parked(&mut report);
            report(reply.tag, error);
        }
    }
}

/// A write's answer: done, or a failure to report when nobody waits for it.
pub(crate) trait Outcome {
    /// The failure.
    type Error: 'static;
    /// The failure, if it is one.
    fn failure(self) -> Option<Self::Error>;
    /// Whether it is a failure.
    fn is_failure(&self) -> bool;
}

impl<T, E: 'static> Outcome for Result<T, E> {
    type Error = E;
    fn failure(self) -> Option<E> {
        self.err()
    }
    fn is_failure(&self) -> bool {
        self.is_err()
    }
}

/// Failed writes whose answers nobody waits for, found by handlers' responses and parked
/// in the actor's [`Rendezvous`]: the actor reports them ([`Rendezvous::report_parked`]).
/// Sent to self when the first is parked; those parked later go with it, in order.
#[derive(Debug)]
pub(crate) struct ReportFailures;

impl Message for ReportFailures {
    type Result = ();
}

/// A write handler's response: the answer now (a write refused or done at once), or the
/// rendezvous where the reply channel is parked until the write finishes. Allocates
/// nothing per write.
pub struct WriteResponse<R>(Inner<R>);

enum Inner<R> {
    Now(Option<u64>, R, Rc<Parked<R>>),
    Later(Option<u64>, Rc<Parked<R>>),
    /// The write brought its own reply channel: nothing to park.
    Detached,
}

impl<R> WriteResponse<R> {
    /// A write that brought its own reply channel (see [`Reply::own`]).
    pub(crate) fn detached() -> Self {
        WriteResponse(Inner::Detached)
    }
}

impl<R> fmt::Debug for WriteResponse<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Now(tag, ..) => f.debug_tuple("Now").field(tag).finish(),
            Inner::Later(tag, _) => f.debug_tuple("Later").field(tag).finish(),
            Inner::Detached => f.write_str("Detached"),
        }
    }
}

impl<A, M, R> MessageResponse<A, M> for WriteResponse<R>
where
    A: Actor<Context = Context<A>> + Handler<ReportFailures>,
    M: Message<Result = R>,
    R: Outcome + 'static,
{
    fn handle(self, ctx: &mut Context<A>, tx: Option<OneshotSender<R>>) {
        let (tag, result, parked) = match self.0 {
            Inner::Now(tag, result, parked) => (tag, result, parked),
            Inner::Detached => return,
            Inner::Later(tag, parked) => {
                let mut slot = parked.slot.borrow_mut();
                match std::mem::take(&mut *slot) {
                    Slot::Answered(result) => {
                        drop(slot);
                        (tag, result, parked)
                    }
                    _ => {
                        // tokio's clock, as the actors' (paused time in tests).
                        let at = tx.is_some().then(|| tokio::time::Instant::now().into_std());
                        *slot = Slot::Channel(tx, at);
                        return;
                    }
                }
            }
        };
        let unanswered = match tx {
            Some(tx) => tx.send(result).err(),
            None => Some(result),
        };
        if let Some(result) = unanswered.filter(|r| r.is_failure()) {
            // Fire-and-forget, refused or done at once: the actor reports it, after
            // those parked before it.
            let mut reports = parked.reports.borrow_mut();
            if reports.is_empty() {
                ctx.notify(ReportFailures);
            }
            reports.push_back((tag, result));
        }
    }
}
