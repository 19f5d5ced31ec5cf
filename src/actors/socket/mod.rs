//! The [`Socket`] actor: one per stream socket, a thin driver of its sans-IO
//! [`StreamCore`](crate::proto::StreamCore). Messages come in, the core decides, and the
//! socket does what it asks through its [`StreamIo`] and tells others what it says.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Running, SpawnHandle, WrapFuture};

mod builder;
mod callbacks;
mod framed;
mod handlers;
mod io;
mod layered;
mod registry;
mod turns;
mod writer;

use super::flusher::{request_flush, FlushWaiter, FlusherLink};
use super::inbound::{Got, Inbound, Stopped};
use super::reply::{Attached, Rendezvous, Reply};
use crate::error::{TransportError, WriteError};
use crate::messages::interest::SocketInterest;
use crate::messages::socket::SocketEventKind;
use crate::proto::{Event, IoAction, ReadOutcome, Written};
use crate::shared::Shared;
use crate::types::{Interest, SocketState, UserData};
pub(crate) use builder::flush_policy_setters;
pub use builder::{FlushPolicy, SocketBuilder, SocketConfig};
pub use framed::{FrameError, FrameStream, FramedWriteError, FramedWriter};
use io::{Answer, Core, StreamIo};
pub use registry::{InterestGroup, Registry, SocketHandle};
use registry::{Membership, Registration};
use turns::SenderSlot;
pub use writer::{GetWriter, WriteFuture, Writer, WritesRefused};

/// A write's token in the core: where its answer goes.
pub(crate) type WriteReply = Reply<Result<Written, WriteError>>;

pub(crate) static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Now, on tokio's clock (paused in tests), for the core.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// One stream socket as an actor.
///
/// Producers send it [`Write`](crate::messages::Write)s (or write through a [`Writer`] handle); its core keeps
/// them in a FIFO queue and hands the transport ([`SocketFunctions`](crate::SocketFunctions)) vectored writes,
/// one at a time, so writes leave in the order the socket receives them and never
/// interleave, however the transport answers. Every write is answered exactly once.
/// Inbound data goes to the subscriber as [`SocketEvent`](crate::messages::SocketEvent)s.
///
/// Start one with [`Socket::builder`].
///
/// Once closed (by [`Close`](crate::messages::Close), or by a transport error) the handle is closed, the
/// subscriber gets [`SocketEventKind::Closed`], and every later write is answered with a
/// typed error ([`WriteError::Closed`], or [`WriteError::Transport`] carrying the error
/// that closed it). A socket actor stops when its last address (a [`Writer`] holds one)
/// is dropped and it has nothing under way (its transport holds only a weak recipient);
/// an open one drains its queued writes and closes first.
#[derive(Debug)]
pub struct Socket {
    core: Core,
    io: Box<dyn StreamIo>,
    shared: Arc<Shared>,
    inbound: Inbound,
    /// The Flusher to ask (deferred policy), or `None` (immediate).
    flusher: Option<Arc<FlusherLink>>,
    replies: Rendezvous<Result<Written, WriteError>>,
    /// The timer for the core's deadline, and that deadline (boxed: most sockets have
    /// no deadline).
    timer: Option<Box<(std::time::Instant, SpawnHandle)>>,
    /// The core's shut reason was handed to the gate.
    gate_shut: bool,
    /// Interest subscriber, user data, registry entry and tracing span; boxed, as most
    /// sockets have none of them.
    watch: Option<Box<Watch>>,
    /// Its place among the sockets of its thread with data to send.
    sender: SenderSlot,
}

/// A socket's optional extras: where its interest goes, its entry in a registry
/// (removed when dropped, with the actor), and its tracing span when tracing wants it.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    membership: Option<Membership>,
    user_data: Option<UserData>,
    registration: Option<Registration>,
    span: Option<tracing::Span>,
}

impl Socket {
    /// A builder for a socket.
    pub fn builder() -> SocketBuilder {
        SocketBuilder::default()
    }

    /// A context for a new socket actor. Its mailbox is unbounded: actix's `send` on a
    /// full mailbox (16 messages by default) parks the message inside its future until
    /// polled, so a later `do_send` could overtake it. Unbounded, every message is queued
    /// when sent, and the mailbox stays the socket's FIFO (the watermarks bound memory).
    pub(crate) fn context() -> Context<Socket> {
        let mut ctx = Context::new();
        ctx.set_mailbox_capacity(0);
        ctx
    }

    /// Its tracing span (a disabled one when tracing does not want it).
    fn span(&self) -> &tracing::Span {
        span_of(&self.watch)
    }

    /// Does what the core asks, tells others what it says, and sets its timer, until it
    /// has nothing more to say.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        self.attach_reply();
        let span = self.span().clone();
        let _entered = span.enter();
        let (deliveries, bytes) = self.shared.unacked();
        self.core.handle_unacked(deliveries, bytes);
        self.note_read_hold();
        self.core.handle_contention(self.sender.others_sending());
        loop {
            let mut busy = false;
            while let Some(action) = self.core.poll_io() {
                busy = true;
                self.perform(action, ctx);
            }
            while let Some(event) = self.core.poll_event() {
                busy = true;
                self.dispatch(event, ctx);
            }
            // Room may have come back: writes waiting for it go in.
            busy |= self.admit_waiting();
            if self.core.read_held() {
                // Reading holds for a full window: the permit drop that frees it must wake
                // us. One may have been dropped meanwhile: look again after asking.
                self.shared.hold(|| ctx.address().downgrade().recipient());
                let (deliveries, bytes) = self.shared.unacked();
                self.core.handle_unacked(deliveries, bytes);
                if !self.core.read_held() {
                    self.shared.unhold();
                    busy = true;
                }
            }
            if !busy {
                break;
            }
        }
        if let Some(shut) = self.core.shut().filter(|_| !self.gate_shut) {
            self.shared.shut(shut);
            self.gate_shut = true;
        }
        self.sender.set(self.core.is_sending());
        self.note_read_hold();
        self.set_timer(ctx);
        self.publish_stats();
    }

    /// Tells the core's limits when reading was held back or freed (the clock is read
    /// only then, and only for a socket with limits).
    fn note_read_hold(&mut self) {
        if self.core.read_hold_moved() {
            self.core.handle_read_hold(now());
        }
    }

    /// Moves the reply channel the last write's response parked onto that write, and
    /// starts its latency from when it was parked. Call first in every handler.
    fn attach_reply(&mut self) {
        match self.replies.attach_stamped(self.core.last_token_mut()) {
            Attached::Listened(Some(at)) => self.core.stamp_last(at),
            // A `do_send` write: it may join the run of silent writes before it.
            Attached::Silent => self.core.handle_silenced_last(),
            Attached::Listened(None) | Attached::Nothing => {}
        }
    }

    /// A registered socket's live counters, for its registry.
    fn publish_stats(&self) {
        if self
            .watch
            .as_ref()
            .is_some_and(|w| w.registration.is_some())
        {
            self.shared.publish(self.core.stats());
        }
    }

    fn perform(&mut self, action: IoAction, ctx: &mut Context<Self>) {
        // The clock is read only where the core needs the time (a vDSO call each).
        match action {
            IoAction::RequestFlush => {
                let (id, span) = (self.shared.id, span_of(&self.watch));
                request_flush(&mut self.flusher, id, || ctx.address().recipient(), span).follow(
                    self,
                    ctx,
                    |act| act.core.handle_flusher_gone(),
                );
            }
            IoAction::Transmit { budget } => match self.io.transmit(&mut self.core, budget, ctx) {
                Answer::Now(result) => self.core.handle_sent(result, now()),
                Answer::Later => self.core.handle_send_pending(),
                Answer::Nothing => {}
            },
            IoAction::Yield(direction) => {
                // Fairness: let the other tasks of this thread run once.
                ctx.spawn(
                    tokio::task::yield_now()
                        .into_actor(self)
                        .map(move |_, act, ctx| {
                            act.attach_reply();
                            act.core.handle_yielded(direction);
                            act.drive(ctx);
                        }),
                );
            }
            IoAction::Wait(readiness) => self.io.wait(readiness, ctx),
            IoAction::Read { max } => {
                let now = now();
                // Frames already buffered go out before anything more is read.
                if !self.deliver_frames(false, now) || !self.window_open() {
                    return;
                }
                match self.io.read(&mut self.core, &mut self.inbound, max, ctx) {
                    Answer::Now(got) => self.absorb(got, now),
                    Answer::Later => self.core.handle_read_pending(),
                    Answer::Nothing => {}
                }
            }
            IoAction::ShutdownWrite => match self.io.shutdown(&mut self.core, ctx) {
                Answer::Now(result) => {
                    if let Err(error) = &result {
                        tracing::debug!(%error, "shutdown of the sending half failed");
                    }
                    self.core.handle_shutdown(result, now())
                }
                Answer::Later | Answer::Nothing => {}
            },
            IoAction::CloseHandle => {
                self.io.close(ctx);
                self.inbound.drop_buffers();
                if let Some(timer) = self.timer.take() {
                    ctx.cancel_future(timer.1);
                }
            }
        }
    }

    /// Whether the read window has room now (the core learns what was acknowledged).
    fn window_open(&mut self) -> bool {
        let (deliveries, bytes) = self.shared.unacked();
        self.core.handle_unacked(deliveries, bytes);
        self.core.window_open()
    }

    /// Sends the frames whole in the decoder's buffer while the window has room (at `eof`
    /// all). `false` when delivering stopped for good (rejected, or nobody to deliver to).
    fn deliver_frames(&mut self, eof: bool, now: std::time::Instant) -> bool {
        let shared = &self.shared;
        let core = &mut self.core;
        let delivered = self.inbound.deliver_frames(shared, eof, || {
            let (deliveries, bytes) = shared.unacked();
            core.handle_unacked(deliveries, bytes);
            core.window_open()
        });
        match delivered {
            Ok(completed) => {
                let buffered = self.inbound.undecoded();
                self.core.handle_undecoded(buffered, completed, now);
                true
            }
            Err(Stopped::SubscriberGone) => {
                tracing::warn!("subscriber gone; reading stops");
                self.core.handle_subscriber_gone();
                self.inbound.drop_buffers();
                false
            }
            Err(Stopped::Rejected(error)) => {
                tracing::warn!(%error, "frame decoding failed");
                self.core.handle_decode_error(error, now);
                false
            }
        }
    }

    /// Takes in what a read found.
    fn absorb(&mut self, got: Result<Got, TransportError>, now: std::time::Instant) {
        if !self.core.read_wanted() {
            // Answered after the socket closed (or stopped reading): nobody may hear it.
            self.inbound.drop_buffers();
            return;
        }
        let outcome = match got {
            Ok(Got::Chunk(bytes)) => {
                let n = bytes.len();
                if self.inbound.absorb(bytes, &self.shared).is_err() {
                    tracing::warn!("subscriber gone; reading stops");
                    self.core.handle_read(ReadOutcome::Data(n), now);
                    self.core.handle_subscriber_gone();
                    self.inbound.drop_buffers();
                    return;
                }
                ReadOutcome::Data(n)
            }
            Ok(Got::Buffered(n)) => ReadOutcome::Data(n),
            Ok(Got::Eof) => {
                // The decoder gets the rest now, before the core hears of the end (which
                // may close the socket): its last frames, or its error, come before
                // `Closed`. The window does not hold back the last frames (they are
                // already in memory, bounded by the frame limit).
                if !self.deliver_frames(true, now) {
                    // Rejected, or nobody to deliver to: reading has ended already, and
                    // a lingering close waited for this end.
                    self.core.handle_end_unread(now);
                    self.inbound.drop_buffers();
                    return;
                }
                ReadOutcome::Eof
            }
            Ok(Got::WouldBlock) => {
                // Idle sockets keep no read buffer.
                self.inbound.drop_buffers();
                ReadOutcome::WouldBlock
            }
            Err(e) => ReadOutcome::Failed(e),
        };
        self.core.handle_read(outcome, now);
    }

    /// Tells others what the core said.
    fn dispatch(&mut self, event: Event<WriteReply>, ctx: &mut Context<Self>) {
        match event {
            Event::Answer(reply, result) => {
                if let Ok(w) = &result {
                    tracing::trace!(
                        len = w.len,
                        sendv_calls = w.sendv_calls,
                        would_blocks = w.would_blocks,
                        writes_per_sendv = w.max_writes_per_sendv,
                        latency_us = w.latency.as_micros() as u64,
                        "write done"
                    );
                }
                let (inbound, shared) = (&self.inbound, &self.shared);
                self.replies.answer(reply, result, |tag, error| {
                    report_failure(inbound, shared, tag, error);
                });
            }
            Event::Released(n) => self.shared.release(n),
            Event::Charged(n) => self.shared.charge(n),
            Event::Interest(interest) => self.tell_interest(interest, ctx),
            Event::State(state) => {
                if let Some(r) = self.registration() {
                    r.set_state(state);
                }
                if state == SocketState::Closed {
                    tracing::debug!("closed");
                }
            }
            Event::Eof => {
                tracing::debug!("peer closed its sending half");
                // The decoder had the rest when the end was read (`absorb`).
                self.inbound.event(&self.shared, SocketEventKind::Eof);
                self.inbound.drop_buffers();
            }
            Event::ReadFailed(error) => {
                self.inbound
                    .event(&self.shared, SocketEventKind::ReadFailed(error));
            }
            Event::DecodeFailed(error) => {
                self.inbound
                    .event(&self.shared, SocketEventKind::DecodeFailed(error));
            }
            Event::Idle(kind, after) => {
                tracing::debug!(?kind, ?after, "idle");
                self.inbound
                    .event(&self.shared, SocketEventKind::Idle { kind, after });
            }
            Event::SendTimedOut(after, queued) => {
                tracing::warn!(
                    ?after,
                    queued,
                    "send timeout: the peer took nothing; closing"
                );
                self.inbound.event(
                    &self.shared,
                    SocketEventKind::SendTimedOut { after, queued },
                );
            }
            Event::Closed(cause) => {
                if let Some(error) = &cause {
                    tracing::warn!(%error, "transport failed; closed");
                }
                self.inbound
                    .event(&self.shared, SocketEventKind::Closed { cause });
            }
        }
    }

    fn registration(&self) -> Option<&Registration> {
        self.watch.as_deref().and_then(|w| w.registration.as_ref())
    }

    /// Tells the interest subscriber what the socket now waits for (libcurl's socket
    /// callback); a refusal aborts the socket's group.
    fn tell_interest(&mut self, interest: Interest, ctx: &mut Context<Self>) {
        let Some(watch) = self.watch.as_deref() else {
            return;
        };
        // A sender of its own per notification: actix parks a sender once it finds the
        // mailbox full, and holds its later `send`s back until they are polled, while a
        // `do_send` goes ahead (the REMOVE overtook the changes before it). A fresh one is
        // never parked: its message is queued now, in order, as a `do_send`'s.
        let Some(to) = watch
            .membership
            .as_ref()
            .map(|m| m.group().subscriber().clone())
        else {
            return;
        };
        tracing::trace!(?interest, "interest changed");
        let note = SocketInterest {
            socket: self.shared.id,
            interest,
            user_data: watch.user_data.clone(),
        };
        if interest == Interest::Remove {
            to.do_send(note);
            return;
        }
        // libcurl's rule: a callback that reports an error aborts the transfer.
        ctx.spawn(to.send(note).into_actor(self).map(|answer, act, ctx| {
            if let Ok(Err(refused)) = answer {
                tracing::warn!(parent: act.span(), %refused, "interest refused; aborting the group");
                act.core.handle_close(true, now());
                act.drive(ctx);
                if let Some(m) = act.watch.as_deref().and_then(|w| w.membership.as_ref()) {
                    m.group().abort_all();
                }
            }
        }));
    }

    /// Keeps one timer, for the core's next deadline.
    fn set_timer(&mut self, ctx: &mut Context<Self>) {
        let deadline = self.core.poll_timeout();
        if self.timer.as_deref().map(|(at, _)| *at) == deadline {
            return;
        }
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer.1);
        }
        if let Some(at) = deadline {
            let wait = at.saturating_duration_since(now());
            let timer = ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                act.attach_reply();
                // The core learns what the subscriber acknowledged meanwhile.
                let (deliveries, bytes) = act.shared.unacked();
                act.core.handle_unacked(deliveries, bytes);
                act.core.handle_timeout(now());
                act.drive(ctx);
            });
            self.timer = Some(Box::new((at, timer)));
        }
    }

    /// The counters now.
    fn stats(&self) -> crate::proto::SocketStats {
        let mut stats = self.core.stats();
        stats.writes_failed += self.shared.refused();
        stats
    }
}

impl Socket {
    /// The queue-full error for a payload refused now.
    fn full(&self, payload: crate::batch::IoBatch) -> WriteError {
        WriteError::QueueFull {
            queued: self.shared.admitted(),
            high_watermark: self.shared.high_watermark(),
            payload,
        }
    }

    /// Moves writes that waited for room into the queue, while the gate admits them, or
    /// nothing would ever free room for the first (see `waiting_stalled`). `true` when
    /// one went in.
    fn admit_waiting(&mut self) -> bool {
        let mut admitted = false;
        while let Some((len, charged)) = self.core.waiting_front() {
            if !charged && self.shared.admit(len).is_err() {
                if !self.core.waiting_stalled() {
                    break;
                }
                // Its bytes are in memory already: counted, they go first.
                self.shared.charge(len);
            }
            self.core.admit_waiting_front(now());
            admitted = true;
        }
        admitted
    }
}

/// The span in `watch`, or a disabled span.
fn span_of(watch: &Option<Box<Watch>>) -> &tracing::Span {
    static NONE: std::sync::OnceLock<tracing::Span> = std::sync::OnceLock::new();
    watch
        .as_deref()
        .and_then(|w| w.span.as_ref())
        .unwrap_or_else(|| NONE.get_or_init(tracing::Span::none))
}

/// A failed write nobody waits for: tracing and the subscriber hear of it.
pub(super) fn report_failure(
    inbound: &Inbound,
    shared: &Shared,
    tag: Option<u64>,
    error: WriteError,
) {
    tracing::warn!(?tag, %error, "write failed with nobody waiting for its answer");
    inbound.event(shared, SocketEventKind::WriteFailed { tag, error });
}

impl Actor for Socket {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::debug!(parent: self.span(), handle = %self.io.handle(), "socket started");
        let watching = self
            .watch
            .as_deref()
            .is_some_and(|w| w.membership.is_some());
        self.core.set_watch_interest(watching);
        self.drive(ctx);
    }

    /// Nobody holds the socket's address any more. With writes still queued, it closes
    /// gracefully first (the queue drains, then the handle closes) and only then stops.
    fn stopping(&mut self, ctx: &mut Context<Self>) -> Running {
        self.attach_reply();
        if crate::actors::runtime_gone() {
            return Running::Stop;
        }
        // Bytes answered `Ok` still in a layer's outbox go out first, too: a graceful
        // close sends them (and the layers' close) before the handle closes.
        let unsent = self.io.unsent();
        if self.core.handle_stopping(now()) || unsent {
            if unsent {
                self.core.handle_close(false, now());
            }
            self.drive(ctx);
            if !self.core.is_closed() || self.io.unsent() {
                return Running::Continue;
            }
        }
        Running::Stop
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.attach_reply();
        self.core.handle_stopped();
        while let Some(action) = self.core.poll_io() {
            if action == IoAction::CloseHandle {
                self.io.close(ctx);
            }
        }
        self.io.stopped(ctx);
        while let Some(event) = self.core.poll_event() {
            self.dispatch(event, ctx);
        }
        self.let_go_of_the_gate();
    }
}

impl Socket {
    /// The actor is done: its writers are refused from now on (and those waiting for
    /// room wake to hear it), and nothing it held counts as queued any more.
    fn let_go_of_the_gate(&mut self) {
        if !std::mem::replace(&mut self.gate_shut, true) {
            let closed = crate::proto::Shut::Closed;
            self.shared.shut(self.core.shut().unwrap_or(&closed));
        }
        self.shared.release(self.shared.admitted());
    }
}

impl Drop for Socket {
    /// actix drops an actor without `stopped` when its arbiter stops while it drains:
    /// writers must still hear that it is gone.
    fn drop(&mut self) {
        self.let_go_of_the_gate();
        // Dropped with its arbiter, not stopped: the handle closes here (a transport of
        // another thread, still running, would otherwise keep the connection open).
        self.io.abandon();
    }
}

impl FlushWaiter for Socket {
    fn awaited_flush(&self) -> Option<u64> {
        self.core.awaited_flush()
    }

    fn flusher_lost(&mut self, ctx: &mut Context<Self>) {
        tracing::warn!(
            parent: self.span(),
            "the flusher stopped with this socket's request unanswered; writing immediately"
        );
        self.flusher = None;
        self.core.handle_flusher_lost();
        self.drive(ctx);
    }
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    /// Every socket is one tokio task holding its actor context; tokio sizes a task in
    /// steps of 128 bytes. The socket fits the 896-byte task (an idle socket's largest
    /// allocation, see `idle_mem` and workload (e)); a field more would cost a step.
    #[test]
    fn the_socket_actor_fits_its_896_byte_task() {
        let future = std::mem::size_of::<
            actix::dev::ContextFut<super::Socket, super::Context<super::Socket>>,
        >();
        assert!(
            future <= 792,
            "the socket's actor future is {future} bytes: over 792, its task grows to 1,024"
        );
    }
}
