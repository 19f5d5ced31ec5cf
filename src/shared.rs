//! The one piece of a socket that other threads touch: [`Shared`], behind an `Arc`, held
//! by the socket actor, its [`Writer`](crate::Writer)s, the [`ReadPermit`]s of its
//! deliveries and its registry entry.
//!
//! It holds two things. The **admission gate**: the socket's admission [`Level`] in one
//! atomic word, moved by the [`Watermarks`] rules, so that a `Writer` on any thread is
//! refused synchronously (before its write reaches the mailbox). A write or release that
//! crosses no watermark is one compare-and-swap; one that crosses takes the gate's lock
//! and tells the subscribers under it, so notices leave in the order the changes
//! happened. And the **acknowledgements** of the read window:
//! counters a dropped permit adds to, and a flag that makes the drop that reopens a full
//! window wake the socket.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use actix::{Message, Recipient, WeakRecipient};
use tokio::sync::Notify;

use crate::error::WriteError;
use crate::proto::{Level, Shut, SocketStats, Watermarks};
use crate::types::SocketId;

/// Writability change: sent by a socket to each writability subscriber once per
/// crossing. `writable: false` when queued bytes reached the high watermark (writes are
/// refused with [`WriteError::QueueFull`]); `true` when they drained to the low watermark.
///
/// The notices of one socket alternate (`false`, `true`, `false`, …) and reach every
/// subscriber in the order the changes happened, whichever thread caused them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WritabilityChanged {
    /// The socket.
    pub socket: SocketId,
    /// Whether writes are accepted now.
    pub writable: bool,
}

impl Message for WritabilityChanged {
    type Result = ();
}

/// A permit was dropped while the socket's read window was held full: read again.
/// Sent to the socket by the permit, handled by the socket.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WindowReopened;

impl Message for WindowReopened {
    type Result = ();
}

/// The gate's state under its lock: what crossing a watermark or shutting needs.
#[derive(Debug)]
struct Gate {
    /// Why writes are refused (the socket shut), if they are.
    shut: Option<Shut>,
    /// Who hears of changes; boxed, and made only when someone is there to hear (most
    /// sockets have nobody).
    listeners: Option<Box<Listeners>>,
}

#[derive(Debug, Default)]
struct Listeners {
    subscribers: Vec<Recipient<WritabilityChanged>>,
    /// Who a reopened read window wakes: given by the socket the first time it holds
    /// reading.
    wake: Option<WeakRecipient<WindowReopened>>,
}

impl Gate {
    fn listeners(&mut self) -> &mut Listeners {
        self.listeners.get_or_insert_with(Box::default)
    }
}

/// What a socket shares with other threads: see the [module docs](self).
pub(crate) struct Shared {
    pub(crate) id: SocketId,
    /// The admission [`Level`]'s bits.
    level: AtomicUsize,
    marks: Watermarks,
    /// Set (under the lock) when the socket shuts: `gate.shut` says why.
    closed: AtomicBool,
    gate: Mutex<Gate>,
    /// Woken when the gate opens (or shuts): writers waiting for room.
    room: Notify,
    unacked_deliveries: AtomicU32,
    unacked_bytes: AtomicUsize,
    /// The socket holds reading for a full window: the permit drop that frees it wakes
    /// the socket (`gate.wake`).
    held: AtomicBool,
    /// `gate.listeners.wake` is given: later holds need not take the lock.
    wake_given: AtomicBool,
    /// The counters as last published (registered sockets only).
    stats: Option<Box<Mutex<SocketStats>>>,
    /// Writes a `Writer` had refused before they reached the socket.
    refused: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("id", &self.id)
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        id: SocketId,
        marks: Watermarks,
        subscribers: Vec<Recipient<WritabilityChanged>>,
        registered: bool,
    ) -> Self {
        Shared {
            id,
            level: AtomicUsize::new(Level::default().bits()),
            marks,
            closed: AtomicBool::new(false),
            gate: Mutex::new(Gate {
                shut: None,
                listeners: (!subscribers.is_empty()).then(|| {
                    Box::new(Listeners {
                        subscribers,
                        wake: None,
                    })
                }),
            }),
            room: Notify::new(),
            unacked_deliveries: AtomicU32::new(0),
            unacked_bytes: AtomicUsize::new(0),
            held: AtomicBool::new(false),
            wake_given: AtomicBool::new(false),
            // Boxed: most sockets are not registered, and idle ones are many.
            stats: registered.then(|| Box::new(Mutex::new(SocketStats::default()))),
            refused: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn level(&self) -> Level {
        Level::from_bits(self.level.load(Ordering::Acquire))
    }

    /// Moves the level by `rule`: with one compare-and-swap while it crosses no
    /// watermark, under the lock (telling the subscribers) when it does. Returns the
    /// change made, or the rule's refusal.
    fn step<E>(
        &self,
        rule: impl Fn(Level) -> Result<(Level, Option<bool>), E>,
    ) -> Result<Option<bool>, E> {
        let mut bits = self.level.load(Ordering::Acquire);
        loop {
            let (next, change) = rule(Level::from_bits(bits))?;
            if change.is_some() {
                break;
            }
            match self.level.compare_exchange_weak(
                bits,
                next.bits(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(None),
                Err(now) => bits = now,
            }
        }
        // A crossing: only made under the lock, so that crossings are told in order.
        let mut gate = self.gate();
        let mut bits = self.level.load(Ordering::Acquire);
        loop {
            let (next, change) = rule(Level::from_bits(bits))?;
            match self.level.compare_exchange_weak(
                bits,
                next.bits(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if change == Some(true) {
                        self.room.notify_waiters();
                    }
                    Self::tell(&mut gate, self.id, change);
                    return Ok(change);
                }
                Err(now) => bits = now,
            }
        }
    }

    /// Admits a write of `len` bytes, or says why not: the socket shut, or the queue is
    /// at its high watermark (`QueueFull`, with an empty payload for the caller to fill).
    pub(crate) fn admit(&self, len: usize) -> Result<(), WriteError> {
        if self.closed.load(Ordering::Acquire) {
            if let Some(shut) = &self.gate().shut {
                return Err(shut.refusal(len));
            }
        }
        let marks = self.marks;
        match self.step(|level| marks.admit(level, len)) {
            Ok(_) => Ok(()),
            Err(queued) => Err(WriteError::QueueFull {
                queued,
                high_watermark: marks.high(),
                payload: crate::batch::IoBatch::new(),
            }),
        }
    }

    /// Admits `len` bytes unconditionally (writes already held in memory).
    pub(crate) fn charge(&self, len: usize) {
        let marks = self.marks;
        let _ = self.step(|level| Ok::<_, ()>(marks.charge(level, len)));
    }

    /// `len` admitted bytes left the queue.
    pub(crate) fn release(&self, len: usize) {
        if len == 0 {
            return;
        }
        let marks = self.marks;
        let _ = self.step(|level| Ok::<_, ()>(marks.release(level, len)));
    }

    /// Tells the subscribers of a change, under the lock: the notices leave in the order
    /// of the changes, whichever thread made them. A shut socket's watermark changes are
    /// not news.
    fn tell(gate: &mut Gate, id: SocketId, change: Option<bool>) {
        let Some(writable) = change else {
            return;
        };
        if gate.shut.is_some() {
            return;
        }
        tracing::debug!(socket = id.0, writable, "writability changed");
        let Some(listeners) = gate.listeners.as_deref_mut() else {
            return;
        };
        listeners.subscribers.retain(|r| r.connected());
        let msg = WritabilityChanged {
            socket: id,
            writable,
        };
        for r in &listeners.subscribers {
            r.do_send(msg);
        }
    }

    /// The socket no longer takes writes: writers are refused with `shut`'s error from
    /// now on, and writers waiting for room wake up to hear it.
    pub(crate) fn shut(&self, shut: &Shut) {
        let mut gate = self.gate();
        let replace = matches!(
            (&gate.shut, shut),
            (None, _) | (Some(Shut::Closed), Shut::Aborted | Shut::Failed(_))
        );
        if replace {
            gate.shut = Some(shut.clone());
            self.closed.store(true, Ordering::Release);
        }
        drop(gate);
        self.room.notify_waiters();
    }

    /// Subscribes a producer to writability changes.
    pub(crate) fn subscribe(&self, producer: Recipient<WritabilityChanged>) {
        self.gate().listeners().subscribers.push(producer);
    }

    /// Whether a write would be admitted now.
    pub(crate) fn is_writable(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && self.level().is_writable()
    }

    /// The high watermark.
    pub(crate) fn high_watermark(&self) -> usize {
        self.marks.high()
    }

    /// Bytes admitted and not yet sent.
    pub(crate) fn admitted(&self) -> usize {
        self.level().admitted()
    }

    /// Waits until a write would be admitted, or the socket shuts (its refusal).
    pub(crate) async fn room(&self) -> Result<(), WriteError> {
        wait_for_room(&self.room, || {
            if let Some(shut) = &self.gate().shut {
                return Some(Err(shut.refusal(0)));
            }
            self.level().is_writable().then_some(Ok(()))
        })
        .await
    }

    // ---- the read window's acknowledgements ----

    /// A delivery of `bytes` holds a place in the window until its permit is dropped.
    pub(crate) fn permit(self: &Arc<Self>, bytes: usize) -> ReadPermit {
        self.unacked_deliveries.fetch_add(1, Ordering::AcqRel);
        self.unacked_bytes.fetch_add(bytes, Ordering::AcqRel);
        ReadPermit {
            shared: self.clone(),
            bytes,
        }
    }

    /// Deliveries and bytes not acknowledged now.
    pub(crate) fn unacked(&self) -> (u32, usize) {
        (
            self.unacked_deliveries.load(Ordering::Acquire),
            self.unacked_bytes.load(Ordering::Acquire),
        )
    }

    /// The socket holds reading for a full window: the permit drop that could reopen it
    /// must wake the socket, through `wake` (made only the first time). Call
    /// [`unacked`](Self::unacked) after this, and resume at once if the window reopened
    /// meanwhile.
    pub(crate) fn hold(&self, wake: impl FnOnce() -> WeakRecipient<WindowReopened>) {
        // Only the socket's thread gives it, so a plain flag says it was given.
        if !self.wake_given.load(Ordering::Relaxed) {
            self.gate().listeners().wake = Some(wake());
            self.wake_given.store(true, Ordering::Relaxed);
        }
        self.held.store(true, Ordering::SeqCst);
    }

    /// The socket reads again: no wake-up is owed.
    pub(crate) fn unhold(&self) {
        self.held.store(false, Ordering::SeqCst);
    }

    fn acknowledge(&self, bytes: usize) {
        self.unacked_deliveries.fetch_sub(1, Ordering::AcqRel);
        self.unacked_bytes.fetch_sub(bytes, Ordering::AcqRel);
        if self.held.load(Ordering::SeqCst) && self.held.swap(false, Ordering::SeqCst) {
            let socket = {
                let gate = self.gate();
                let wake = gate.listeners.as_ref().and_then(|l| l.wake.as_ref());
                wake.and_then(WeakRecipient::upgrade)
            };
            if let Some(socket) = socket {
                socket.do_send(WindowReopened);
            }
        }
    }

    // ---- counters ----

    /// A `Writer` refused a write before it reached the socket.
    pub(crate) fn count_refused(&self, writes: u64) {
        self.refused.fetch_add(writes, Ordering::Relaxed);
    }

    /// Writes `Writer`s refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Publishes the counters (registered sockets only).
    pub(crate) fn publish(&self, stats: SocketStats) {
        if let Some(cell) = &self.stats {
            *cell.lock().unwrap_or_else(PoisonError::into_inner) = stats;
        }
    }

    /// The counters as last published.
    pub(crate) fn published(&self) -> SocketStats {
        self.stats
            .as_ref()
            .map(|cell| *cell.lock().unwrap_or_else(PoisonError::into_inner))
            .unwrap_or_default()
    }
}

/// One delivery's place in its socket's read window (see
/// [`ReadLimits`](crate::ReadLimits)). Dropping it acknowledges the delivery; keep it to
/// hold the window until you are done with the data.
pub struct ReadPermit {
    shared: Arc<Shared>,
    bytes: usize,
}

impl ReadPermit {
    /// The stream bytes this delivery stands for.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl fmt::Debug for ReadPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadPermit")
            .field("socket", &self.shared.id)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Drop for ReadPermit {
    fn drop(&mut self) {
        self.shared.acknowledge(self.bytes);
    }
}

/// Waits on `room` until `look` has an answer (room, or why there will be none). The
/// waiter is registered before each look, so a wake between the look and the wait is not
/// lost.
pub(crate) async fn wait_for_room<E>(
    room: &Notify,
    look: impl Fn() -> Option<Result<(), E>>,
) -> Result<(), E> {
    loop {
        let notified = room.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(answer) = look() {
            return answer;
        }
        notified.await;
    }
}
