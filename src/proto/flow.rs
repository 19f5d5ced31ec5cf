//! The scheduling both socket cores share: when to send (the Flusher protocol, the
//! fairness budget, would-block and readiness) and when to read (the same, plus holding
//! for the read window). [`StreamCore`](super::StreamCore) counts the budgets in bytes,
//! [`DatagramCore`](super::DatagramCore) in datagrams.

/// Where the sending side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Send {
    /// Nothing under way.
    Idle,
    /// A flush was asked of the Flusher.
    Requested,
    /// Transmit when polled.
    Ready,
    /// A transmit is out, its answer to come; `early`: its transport already said it is
    /// writable again (a notice can overtake the would-block answer it follows).
    InFlight { early: bool },
    /// The transport would block: waiting for it to be writable.
    Blocked,
    /// The turn's budget is spent: yielded to the runtime.
    Yielding,
}

/// What the sending side wants now, from [`SendFlow::poll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendPoll {
    /// Ask the Flusher for a flush.
    RequestFlush,
    /// Transmit, with this much budget left in the turn.
    Transmit(usize),
    /// Nothing is left to send: the flow went idle (the core checks its drain).
    WentIdle,
    /// Yield to the runtime, then `yielded`.
    Yield,
    /// Wait for the transport to be writable, then `ready`.
    Wait,
    /// Nothing to do until an input comes.
    Nothing,
}

/// A turn's budget as counted: at most 4 GiB (a flow counts what it used in a `u32`,
/// every socket holding two of them).
fn turn(limit: usize) -> usize {
    limit.min(u32::MAX as usize)
}

/// The sending side's schedule: the Flusher protocol (c-ares' pending-write callback),
/// one transmit out at a time, a fairness budget per turn, would-block and readiness.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SendFlow {
    state: Send,
    /// Budget used in this turn.
    used: u32,
    /// Ask a Flusher before sending (else send as soon as there is data).
    deferred: bool,
    request: bool,
    wait: bool,
}

impl SendFlow {
    pub(crate) fn new(deferred: bool) -> Self {
        SendFlow {
            state: Send::Idle,
            used: 0,
            deferred,
            request: false,
            wait: false,
        }
    }

    /// Whether nothing is under way.
    pub(crate) fn is_idle(&self) -> bool {
        self.state == Send::Idle
    }

    /// Whether the sending side is under way and not waiting for the transport to be
    /// writable: it wants its thread's time.
    pub(crate) fn is_active(&self) -> bool {
        matches!(
            self.state,
            Send::Requested | Send::Ready | Send::InFlight { .. } | Send::Yielding
        )
    }

    /// Whether [`poll`](Self::poll) may have something to say now (a flush to ask for,
    /// a transmit to make or a wait to start); `false` while a flush, transmit, wait or
    /// yield is under way, or nothing is.
    pub(crate) fn wants_poll(&self) -> bool {
        self.request || self.wait || self.state == Send::Ready
    }

    /// Whether a flush was asked of the Flusher and its answer is still to come.
    pub(crate) fn is_requested(&self) -> bool {
        self.state == Send::Requested
    }

    /// Whether a transmit is out, its answer to come.
    pub(crate) fn in_flight(&self) -> bool {
        matches!(self.state, Send::InFlight { .. })
    }

    /// Fresh data with nothing under way: ask the Flusher (`true`: a request is made), or
    /// send at once.
    pub(crate) fn start(&mut self) -> bool {
        if self.state != Send::Idle {
            return false;
        }
        if self.deferred {
            self.state = Send::Requested;
            self.request = true;
            true
        } else {
            self.state = Send::Ready;
            self.used = 0;
            false
        }
    }

    /// The Flusher's `Flush` (or a close that flushes now): send what there is.
    pub(crate) fn flush(&mut self) {
        if matches!(self.state, Send::Requested | Send::Idle) {
            self.state = Send::Ready;
            self.used = 0;
        }
    }

    /// The Flusher is gone: send at once from now on.
    pub(crate) fn flusher_gone(&mut self) {
        self.deferred = false;
        self.flush();
    }

    /// The transmit was handed to a transport that answers later.
    pub(crate) fn pending(&mut self) {
        self.state = Send::InFlight { early: false };
    }

    /// The transport took what it was given (`used` of the budget): send on.
    pub(crate) fn took(&mut self, used: usize) {
        self.used = self
            .used
            .saturating_add(u32::try_from(used).unwrap_or(u32::MAX));
        self.state = Send::Ready;
    }

    /// The transport would block: wait for readiness (unless its notice came early).
    pub(crate) fn would_block(&mut self) {
        self.used = 0;
        if self.state == (Send::InFlight { early: true }) {
            self.state = Send::Ready;
        } else {
            self.state = Send::Blocked;
            self.wait = true;
        }
    }

    /// The transport is writable again.
    pub(crate) fn ready(&mut self) {
        match self.state {
            Send::Blocked => self.state = Send::Ready,
            Send::InFlight { .. } => self.state = Send::InFlight { early: true },
            _ => {}
        }
    }

    /// The yield is over.
    pub(crate) fn yielded(&mut self) {
        if self.state == Send::Yielding {
            self.state = Send::Ready;
            self.used = 0;
        }
    }

    /// Nothing left to send: go idle now (a cancel took the last write).
    pub(crate) fn idle(&mut self) {
        self.state = Send::Idle;
        self.used = 0;
        self.wait = false;
    }

    /// The wait asked for was lost (it ended without readiness): ask again.
    pub(crate) fn rewait(&mut self) {
        if self.state == Send::Blocked {
            self.wait = true;
        }
    }

    /// The socket closed: nothing more is asked of anyone.
    pub(crate) fn stop(&mut self) {
        self.request = false;
        self.wait = false;
    }

    /// What to do now. `has_work`: something can be transmitted; `busy`: a transmit's
    /// answer is still to come (so the flow is not idle yet); `limit`: the budget per turn.
    pub(crate) fn poll(&mut self, has_work: bool, busy: bool, limit: usize) -> SendPoll {
        if self.request {
            self.request = false;
            return SendPoll::RequestFlush;
        }
        if self.state == Send::Ready {
            if !has_work {
                if !busy {
                    self.idle();
                    return SendPoll::WentIdle;
                }
            } else if self.used as usize >= turn(limit) {
                // Fairness: let the other actors of the thread run first.
                self.used = 0;
                self.state = Send::Yielding;
                return SendPoll::Yield;
            } else {
                return SendPoll::Transmit(turn(limit) - self.used as usize);
            }
        }
        if self.wait {
            self.wait = false;
            if self.state == Send::Blocked {
                return SendPoll::Wait;
            }
        }
        SendPoll::Nothing
    }
}

/// Where the receiving side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Receive {
    /// Not reading (nobody subscribes).
    Off,
    /// Read when polled.
    Ready,
    /// A read is out, its answer to come (see `Send::InFlight` for `early`).
    InFlight { early: bool },
    /// Nothing to read: waiting for the transport to be readable.
    Blocked,
    /// Paused, or the read window is full.
    Held,
    /// The turn's budget is spent: yielded to the runtime.
    Yielding,
    /// Done: the peer's EOF, an error, or nobody left to read for.
    Done,
}

/// What the receiving side wants now, from [`ReceiveFlow::poll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReceivePoll {
    /// Read.
    Read,
    /// Reading is now held (the core reports the interest change).
    Held,
    /// Yield to the runtime, then `yielded`.
    Yield,
    /// Wait for the transport to be readable, then `ready`.
    Wait,
    /// Nothing to do until an input comes.
    Nothing,
}

/// The receiving side's schedule: one read out at a time, a fairness budget per turn,
/// holding while paused or while the read window is full, would-block and readiness.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReceiveFlow {
    state: Receive,
    used: u32,
    wait: bool,
}

impl ReceiveFlow {
    /// Reading from the start (`reading`), or never.
    pub(crate) fn new(reading: bool) -> Self {
        ReceiveFlow {
            state: if reading {
                Receive::Ready
            } else {
                Receive::Off
            },
            used: 0,
            wait: false,
        }
    }

    /// Whether reading has ended for good (or never began).
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, Receive::Off | Receive::Done)
    }

    /// Whether reading is held for the window or a pause.
    pub(crate) fn is_held(&self) -> bool {
        self.state == Receive::Held
    }

    /// Whether the socket is reading (waiting for data counts): the IN of the interest.
    pub(crate) fn is_active(&self) -> bool {
        !matches!(self.state, Receive::Off | Receive::Done | Receive::Held)
    }

    /// Whether an answer to a read may be taken in now (`Some(early)`): only the read that
    /// is out may change the state, and reading may have ended while it was.
    pub(crate) fn expecting(&self) -> Option<bool> {
        match self.state {
            Receive::Ready => Some(false),
            Receive::InFlight { early } => Some(early),
            _ => None,
        }
    }

    /// The read was handed to a transport that answers later.
    pub(crate) fn pending(&mut self) {
        self.state = Receive::InFlight { early: false };
    }

    /// A read brought `used` of the budget in: read on.
    pub(crate) fn took(&mut self, used: usize) {
        self.used = self
            .used
            .saturating_add(u32::try_from(used).unwrap_or(u32::MAX));
        self.state = Receive::Ready;
    }

    /// Nothing to read: wait for readiness (unless its notice came early).
    pub(crate) fn would_block(&mut self) {
        self.used = 0;
        if self.state == (Receive::InFlight { early: true }) {
            self.state = Receive::Ready;
        } else {
            self.state = Receive::Blocked;
            self.wait = true;
        }
    }

    /// The transport is readable again.
    pub(crate) fn ready(&mut self) {
        match self.state {
            Receive::Blocked => self.state = Receive::Ready,
            Receive::InFlight { .. } => self.state = Receive::InFlight { early: true },
            _ => {}
        }
    }

    /// The yield is over.
    pub(crate) fn yielded(&mut self) {
        if self.state == Receive::Yielding {
            self.state = Receive::Ready;
            self.used = 0;
        }
    }

    /// Reading may go on after a hold (`true` when it was held).
    pub(crate) fn release(&mut self) -> bool {
        if self.state == Receive::Held {
            self.state = Receive::Ready;
            true
        } else {
            false
        }
    }

    /// The wait asked for was lost (it ended without readiness): ask again.
    pub(crate) fn rewait(&mut self) {
        if self.state == Receive::Blocked {
            self.wait = true;
        }
    }

    /// What is left of this turn's budget of `limit`.
    pub(crate) fn left(&self, limit: usize) -> usize {
        turn(limit).saturating_sub(self.used as usize)
    }

    /// Reading ends for good.
    pub(crate) fn done(&mut self) {
        if self.state != Receive::Off {
            self.state = Receive::Done;
        }
        self.wait = false;
    }

    /// What to do now. `hold`: paused or the window is full; `limit`: the budget per
    /// turn.
    pub(crate) fn poll(&mut self, hold: bool, limit: usize) -> ReceivePoll {
        if self.state == Receive::Ready {
            if hold {
                self.state = Receive::Held;
                self.used = 0;
                return ReceivePoll::Held;
            }
            if self.used as usize >= turn(limit) {
                self.used = 0;
                self.state = Receive::Yielding;
                return ReceivePoll::Yield;
            }
            return ReceivePoll::Read;
        }
        if self.wait {
            self.wait = false;
            if self.state == Receive::Blocked {
                return ReceivePoll::Wait;
            }
        }
        ReceivePoll::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deferred_flow_asks_once_then_sends_after_the_flush() {
        let mut f = SendFlow::new(true);
        assert!(f.start());
        assert!(!f.start(), "one request per burst");
        assert_eq!(f.poll(true, false, 10), SendPoll::RequestFlush);
        assert_eq!(
            f.poll(true, false, 10),
            SendPoll::Nothing,
            "until the flush"
        );
        f.flush();
        assert_eq!(f.poll(true, false, 10), SendPoll::Transmit(10));
        f.took(7);
        assert_eq!(f.poll(true, false, 10), SendPoll::Transmit(3));
        f.took(3);
        assert_eq!(
            f.poll(true, false, 10),
            SendPoll::Yield,
            "the turn is spent"
        );
        assert_eq!(f.poll(true, false, 10), SendPoll::Nothing);
        f.yielded();
        assert_eq!(f.poll(false, false, 10), SendPoll::WentIdle);
        assert!(f.is_idle());
    }

    #[test]
    fn a_readiness_notice_that_overtakes_its_would_block_answer_is_not_lost() {
        let mut f = SendFlow::new(false);
        f.start();
        f.pending();
        f.ready();
        f.would_block();
        assert_eq!(
            f.poll(true, false, 10),
            SendPoll::Transmit(10),
            "retried at once"
        );
        f.pending();
        f.would_block();
        assert_eq!(f.poll(true, false, 10), SendPoll::Wait);
        assert_eq!(f.poll(true, false, 10), SendPoll::Nothing, "one wait");
        f.ready();
        assert_eq!(f.poll(true, false, 10), SendPoll::Transmit(10));
    }

    #[test]
    fn reading_holds_yields_and_waits() {
        let mut r = ReceiveFlow::new(true);
        assert_eq!(r.poll(false, 4), ReceivePoll::Read);
        r.took(4);
        assert_eq!(r.poll(false, 4), ReceivePoll::Yield);
        r.yielded();
        assert_eq!(r.poll(true, 4), ReceivePoll::Held);
        assert!(r.is_held() && !r.is_active());
        assert!(r.release());
        r.pending();
        r.would_block();
        assert_eq!(r.poll(false, 4), ReceivePoll::Wait);
        r.ready();
        assert_eq!(r.poll(false, 4), ReceivePoll::Read);
        r.done();
        assert_eq!(r.expecting(), None, "a late answer is ignored");
        assert!(r.is_done());
    }
}
