//! [`LimitClock`]: the idle, frame and send deadlines of [`PeerLimits`], sans I/O.
//!
//! Activity only moves timestamps; the deadline the driver sleeps until (`next`) moves
//! only when a limit is armed (a stall or a frame begins) or checked, so a busy socket
//! does not re-arm its timer on every read and write. At the check, a limit whose real
//! deadline has moved on is simply looked at again later. The driver reports when
//! reading is held back and freed ([`LimitClock::read_held`]), with the time of each: the
//! hold moves the read idle and frame clocks on by exactly its length, wherever the
//! checks fall.

use std::time::{Duration, Instant};

use crate::types::{IdleKind, PeerLimits};

/// What a check found due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// An idle limit: report (and, with `close_when_idle`, close).
    Idle(IdleKind, Duration),
    /// The frame being decoded took too long: `buffered` bytes of it are in memory.
    Frame(Duration, usize),
    /// The peer took nothing for the send timeout.
    Send(Duration),
}

/// The shortest idle period: a zero limit would report again at the same instant, for
/// ever (a flood of notices while time cannot move on).
pub(crate) const MIN_IDLE: Duration = Duration::from_millis(1);

/// What the socket is doing now, for a check.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Now {
    pub(crate) at: Instant,
    /// Open (idle and frame limits apply only then).
    pub(crate) open: bool,
    /// Reading at all (read idleness and frame time apply only then).
    pub(crate) reading: bool,
    /// Reading is held back (window full, paused): that time is not the peer's silence.
    pub(crate) read_held: bool,
    /// Bytes wait to be sent (the send timeout runs only then).
    pub(crate) sending: bool,
}

/// The state of one socket's limits.
#[derive(Clone, Debug)]
pub(crate) struct LimitClock {
    limits: PeerLimits,
    last_read: Instant,
    last_write: Instant,
    /// When each idle kind was last reported (it repeats a period later).
    reported: [Option<Instant>; 3],
    /// Since when the frame being decoded is in the making, and its bytes so far.
    frame: Option<(Instant, usize)>,
    /// Since when the queue waits for the peer without progress.
    stalled: Option<Instant>,
    /// Since when the socket holds its reading back (window full, paused): that time is
    /// not the peer's silence, and it is not the frame's time either.
    held: Option<Instant>,
    /// When to check next.
    next: Option<Instant>,
}

fn later(a: Option<Instant>, b: Instant) -> Instant {
    a.map_or(b, |a| a.max(b))
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `limit` has passed since `since` (never, when it reaches past the clock's end).
fn passed(now: Instant, since: Instant, limit: Duration) -> bool {
    since.checked_add(limit).is_some_and(|due| now >= due)
}

impl LimitClock {
    /// Limits starting now (the socket just opened).
    pub(crate) fn new(limits: PeerLimits, now: Instant) -> Self {
        let mut clock = LimitClock {
            limits,
            last_read: now,
            last_write: now,
            reported: [None; 3],
            frame: None,
            stalled: None,
            held: None,
            next: None,
        };
        clock.next = clock.earliest_due(&Now {
            at: now,
            open: true,
            reading: true,
            read_held: false,
            sending: false,
        });
        clock
    }

    /// Whether an idle notice closes the socket.
    pub(crate) fn close_when_idle(&self) -> bool {
        self.limits.close_when_idle
    }

    /// When [`check`](Self::check) must run next, if ever.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.next
    }

    /// Whether the clock has reading held back (see [`read_held`](Self::read_held)).
    pub(crate) fn is_read_held(&self) -> bool {
        self.held.is_some()
    }

    /// Reading is held back (window full, paused) from `now`, or no longer. The time it
    /// is held counts towards neither the read idle limits nor the frame timeout: when it
    /// ends, their clocks move on by as long as it lasted, so each limit fires after the
    /// silence (or frame time) it still had to run when reading stopped.
    pub(crate) fn read_held(&mut self, held: bool, now: Instant) {
        match (self.held, held) {
            (None, true) => self.held = Some(now),
            (Some(since), false) => {
                self.held = None;
                let paused = now.saturating_duration_since(since);
                // Time before the hold keeps counting; the hold itself does not.
                let shift = |t: Instant| if t >= since { now } else { t + paused };
                self.last_read = shift(self.last_read);
                for kind in [IdleKind::Read, IdleKind::Both] {
                    if let Some(at) = &mut self.reported[kind as usize] {
                        *at = shift(*at);
                    }
                }
                if let Some((begun, _)) = &mut self.frame {
                    *begun = shift(*begun);
                }
                for kind in [IdleKind::Read, IdleKind::Both] {
                    if let Some(limit) = self.idle_limit(kind) {
                        self.arm(self.idle_since(kind).checked_add(limit));
                    }
                }
                if let (Some(limit), Some((begun, _))) = (self.limits.frame_timeout, self.frame) {
                    self.arm(begun.checked_add(limit));
                }
            }
            _ => {}
        }
    }

    /// Bytes came in.
    pub(crate) fn read(&mut self, now: Instant) {
        self.last_read = self.last_read.max(now);
    }

    /// The transport took bytes: the peer makes progress.
    pub(crate) fn sent(&mut self, now: Instant) {
        self.last_write = self.last_write.max(now);
        self.stalled = None;
    }

    /// A send would block: the stall clock starts, unless it runs already.
    pub(crate) fn would_block(&mut self, now: Instant) {
        if self.stalled.is_none() {
            self.stalled = Some(now);
            if let Some(limit) = self.limits.send_timeout {
                self.arm(now.checked_add(limit));
            }
        }
    }

    /// Nothing is left to send.
    pub(crate) fn drained(&mut self) {
        self.stalled = None;
    }

    /// What the frame decoder holds after a delivery: `buffered` undecoded bytes, and
    /// whether a frame was completed since the last call (the bytes left then belong to a
    /// frame begun by this read).
    pub(crate) fn undecoded(&mut self, buffered: usize, completed: bool, now: Instant) {
        if buffered == 0 {
            self.frame = None;
            return;
        }
        match &mut self.frame {
            Some((since, bytes)) if !completed => *bytes = buffered,
            _ => {
                self.frame = Some((now, buffered));
                if let Some(limit) = self.limits.frame_timeout {
                    self.arm(now.checked_add(limit));
                }
            }
        }
    }

    /// Looks at every limit: what is due now (reported ones restart their period), and
    /// when to look next.
    pub(crate) fn check(&mut self, s: Now, due: &mut Vec<Due>) {
        self.read_held(s.read_held, s.at);
        if self.next.is_none_or(|next| s.at < next) {
            return;
        }
        let now = s.at;
        let reading = s.reading && self.held.is_none();
        if !s.sending {
            self.stalled = None;
        }
        if let (Some(limit), Some(since)) = (self.limits.send_timeout, self.stalled) {
            if passed(now, since, limit) {
                self.stalled = None;
                due.push(Due::Send(limit));
            }
        }
        if s.open {
            if let (Some(limit), Some((since, bytes))) = (self.limits.frame_timeout, self.frame) {
                if reading && passed(now, since, limit) {
                    self.frame = None;
                    due.push(Due::Frame(limit, bytes));
                }
            }
            for &kind in self.idle_kinds(s.reading) {
                if let Some(limit) = self.idle_limit(kind) {
                    if passed(now, self.idle_since(kind), limit) {
                        self.reported[kind as usize] = Some(now);
                        due.push(Due::Idle(kind, limit));
                    }
                }
            }
        }
        self.next = self.earliest_due(&s);
    }

    /// The idle kinds that apply: read idleness only while reading, and while reading is
    /// held back only write idleness (the hold is not the peer's silence).
    fn idle_kinds(&self, reading: bool) -> &'static [IdleKind] {
        if !reading {
            &[IdleKind::Write, IdleKind::Both]
        } else if self.held.is_some() {
            &[IdleKind::Write]
        } else {
            &[IdleKind::Read, IdleKind::Write, IdleKind::Both]
        }
    }

    fn idle_limit(&self, kind: IdleKind) -> Option<Duration> {
        let limit = match kind {
            IdleKind::Read => self.limits.read_idle,
            IdleKind::Write => self.limits.write_idle,
            IdleKind::Both => self.limits.idle,
        };
        limit.map(|limit| limit.max(MIN_IDLE))
    }

    fn idle_since(&self, kind: IdleKind) -> Instant {
        let activity = match kind {
            IdleKind::Read => self.last_read,
            IdleKind::Write => self.last_write,
            IdleKind::Both => self.last_read.max(self.last_write),
        };
        later(self.reported[kind as usize], activity)
    }

    /// Looks again at `at` (`None`: a limit too long for the clock, never due).
    fn arm(&mut self, at: Option<Instant>) {
        self.next = earliest(self.next, at);
    }

    /// The earliest real deadline of the limits that apply in state `s` (at the start:
    /// open, reading, not sending).
    fn earliest_due(&self, s: &Now) -> Option<Instant> {
        let mut next = None;
        if s.open {
            for &kind in self.idle_kinds(s.reading) {
                if let Some(limit) = self.idle_limit(kind) {
                    next = earliest(next, self.idle_since(kind).checked_add(limit));
                }
            }
            if let (Some(limit), Some((since, _))) = (self.limits.frame_timeout, self.frame) {
                if s.reading && self.held.is_none() {
                    next = earliest(next, since.checked_add(limit));
                }
            }
        }
        if let (Some(limit), Some(since)) = (self.limits.send_timeout, self.stalled) {
            next = earliest(next, since.checked_add(limit));
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn at(t0: Instant, secs: u64) -> Now {
        Now {
            at: t0 + S * secs as u32,
            open: true,
            reading: true,
            read_held: false,
            sending: false,
        }
    }

    fn run(clock: &mut LimitClock, s: Now) -> Vec<Due> {
        let mut due = Vec::new();
        clock.check(s, &mut due);
        due
    }

    #[test]
    fn a_zero_idle_limit_reports_once_a_millisecond_at_most() {
        let t0 = Instant::now();
        let limits = PeerLimits {
            read_idle: Some(Duration::ZERO),
            ..PeerLimits::default()
        };
        let mut clock = LimitClock::new(limits, t0);
        let now = at(t0, 1);
        assert_eq!(run(&mut clock, now).len(), 1, "silent since the start");
        assert!(
            run(&mut clock, now).is_empty(),
            "not again at the same instant"
        );
        assert_eq!(clock.next(), Some(now.at + MIN_IDLE));
        let later = Now {
            at: now.at + MIN_IDLE,
            ..now
        };
        assert_eq!(run(&mut clock, later).len(), 1);
    }

    #[test]
    fn limits_too_long_to_reach_never_fire_and_never_panic() {
        let t0 = Instant::now();
        let limits = PeerLimits {
            read_idle: Some(Duration::MAX),
            write_idle: Some(Duration::MAX),
            idle: Some(Duration::MAX),
            frame_timeout: Some(Duration::MAX),
            send_timeout: Some(Duration::MAX),
            ..PeerLimits::default()
        };
        let mut clock = LimitClock::new(limits, t0);
        assert_eq!(clock.next(), None);
        clock.would_block(t0);
        clock.undecoded(10, false, t0);
        assert_eq!(clock.next(), None);
        let busy = Now {
            sending: true,
            ..at(t0, 3600)
        };
        assert!(run(&mut clock, busy).is_empty());
        assert_eq!(clock.next(), None);
    }

    #[test]
    fn read_idle_fires_a_period_after_the_last_read_and_repeats() {
        let t0 = Instant::now();
        let limits = PeerLimits {
            read_idle: Some(10 * S),
            ..PeerLimits::default()
        };
        let mut clock = LimitClock::new(limits, t0);
        assert_eq!(clock.next(), Some(t0 + 10 * S));
        clock.read(t0 + 4 * S);
        // The timer does not move with activity: the check finds nothing due and looks
        // again at the real deadline.
        assert_eq!(clock.next(), Some(t0 + 10 * S));
        assert!(run(&mut clock, at(t0, 10)).is_empty());
        assert_eq!(clock.next(), Some(t0 + 14 * S));
        assert_eq!(
            run(&mut clock, at(t0, 14)),
            vec![Due::Idle(IdleKind::Read, 10 * S)]
        );
        assert_eq!(clock.next(), Some(t0 + 24 * S));
        assert_eq!(
            run(&mut clock, at(t0, 24)),
            vec![Due::Idle(IdleKind::Read, 10 * S)]
        );
    }

    #[test]
    fn time_not_reading_does_not_count_as_silence() {
        let t0 = Instant::now();
        let limits = PeerLimits {
            read_idle: Some(10 * S),
            ..PeerLimits::default()
        };
        let mut clock = LimitClock::new(limits, t0);
        let held = Now {
            read_held: true,
            ..at(t0, 10)
        };
        assert!(run(&mut clock, held).is_empty());
        // No read idleness while held: no timer for it.
        assert_eq!(clock.next(), None);
        // Freed at 15 s: the 10 s of silence before the hold were the whole period.
        clock.read_held(false, t0 + 15 * S);
        assert_eq!(clock.next(), Some(t0 + 15 * S));
        assert_eq!(
            run(&mut clock, at(t0, 15)),
            vec![Due::Idle(IdleKind::Read, 10 * S)]
        );
    }

    /// Held from 4 s to 19 s, wherever the checks fall: 4 s of silence before the hold
    /// and 6 after it make the period, at 25 s; a report made before a hold restarts
    /// its period shifted by the hold too.
    #[test]
    fn a_hold_between_checks_moves_the_read_deadline_by_its_length() {
        let t0 = Instant::now();
        let limits = PeerLimits {
            read_idle: Some(10 * S),
            idle: Some(10 * S),
            write_idle: Some(100 * S),
            ..PeerLimits::default()
        };
        let mut clock = LimitClock::new(limits, t0);
        clock.read_held(true, t0 + 4 * S);
        let held = Now {
            read_held: true,
            ..at(t0, 10)
        };
        assert!(
            run(&mut clock, held).is_empty(),
            "neither read nor both-ways idleness"
        );
        clock.read_held(false, t0 + 19 * S);
        assert_eq!(clock.next(), Some(t0 + 25 * S));
        assert!(run(&mut clock, at(t0, 24)).is_empty());
        assert_eq!(
            run(&mut clock, at(t0, 25)),
            vec![
                Due::Idle(IdleKind::Read, 10 * S),
                Due::Idle(IdleKind::Both, 10 * S)
            ]
        );
        // Reported at 25 s, held from 30 s to 40 s: the next report at 45 s.
        clock.read_held(true, t0 + 30 * S);
        clock.read_held(false, t0 + 40 * S);
        assert!(run(&mut clock, at(t0, 44)).is_empty());
        assert_eq!(run(&mut clock, at(t0, 45)).len(), 2);
    }

    /// A frame begun at 2 s, the window full from 3 s to 13 s: 5 s of frame time run
    /// out at 17 s, not 7 s.
    #[test]
    fn a_frames_time_does_not_run_while_reading_is_held() {
        let t0 = Instant::now();
        let limits = PeerLimits {
            frame_timeout: Some(5 * S),
            ..PeerLimits::default()
        };
        let mut clock = LimitClock::new(limits, t0);
        clock.undecoded(3, false, t0 + 2 * S);
        clock.read_held(true, t0 + 3 * S);
        let held = Now {
            read_held: true,
            ..at(t0, 7)
        };
        assert!(run(&mut clock, held).is_empty());
        clock.read_held(false, t0 + 13 * S);
        assert!(run(&mut clock, at(t0, 16)).is_empty());
        assert_eq!(run(&mut clock, at(t0, 17)), vec![Due::Frame(5 * S, 3)]);
    }

    #[test]
    fn a_socket_not_reading_has_no_read_idleness_and_no_timer_in_the_past() {
        let t0 = Instant::now();
        let limits = PeerLimits {
            read_idle: Some(10 * S),
            idle: Some(20 * S),
            ..PeerLimits::default()
        };
        let mut clock = LimitClock::new(limits, t0);
        let not_reading = |secs| Now {
            reading: false,
            ..at(t0, secs)
        };
        assert!(run(&mut clock, not_reading(10)).is_empty());
        // Only the both-ways limit is left, counted from the last activity.
        assert_eq!(clock.next(), Some(t0 + 20 * S));
        assert_eq!(
            run(&mut clock, not_reading(20)),
            vec![Due::Idle(IdleKind::Both, 20 * S)]
        );
        assert_eq!(clock.next(), Some(t0 + 40 * S));
    }

    #[test]
    fn a_closing_socket_keeps_only_its_send_timeout() {
        let t0 = Instant::now();
        let limits = PeerLimits {
            idle: Some(S),
            send_timeout: Some(5 * S),
            ..PeerLimits::default()
        };
        let mut clock = LimitClock::new(limits, t0);
        clock.would_block(t0);
        let draining = |secs| Now {
            open: false,
            sending: true,
            ..at(t0, secs)
        };
        assert!(run(&mut clock, draining(1)).is_empty());
        assert_eq!(clock.next(), Some(t0 + 5 * S));
        assert_eq!(run(&mut clock, draining(5)), vec![Due::Send(5 * S)]);
        assert_eq!(clock.next(), None);
    }

    #[test]
    fn both_idle_needs_silence_both_ways_and_write_idle_only_sending() {
        let t0 = Instant::now();
        let limits = PeerLimits {
            write_idle: Some(10 * S),
            idle: Some(10 * S),
            ..PeerLimits::default()
        };
        let mut clock = LimitClock::new(limits, t0);
        clock.read(t0 + 5 * S);
        assert_eq!(
            run(&mut clock, at(t0, 10)),
            vec![Due::Idle(IdleKind::Write, 10 * S)]
        );
        assert_eq!(
            run(&mut clock, at(t0, 15)),
            vec![Due::Idle(IdleKind::Both, 10 * S)]
        );
    }

    #[test]
    fn a_frame_in_the_making_times_out_and_a_completed_one_restarts_the_clock() {
        let t0 = Instant::now();
        let limits = PeerLimits {
            frame_timeout: Some(5 * S),
            ..PeerLimits::default()
        };
        let mut clock = LimitClock::new(limits, t0);
        assert_eq!(clock.next(), None);
        clock.undecoded(3, false, t0 + S);
        assert_eq!(clock.next(), Some(t0 + 6 * S));
        clock.undecoded(4, false, t0 + 2 * S);
        // A frame completed at 4 s and the next one began in the same read.
        clock.undecoded(2, true, t0 + 4 * S);
        assert!(run(&mut clock, at(t0, 6)).is_empty());
        assert_eq!(clock.next(), Some(t0 + 9 * S));
        clock.undecoded(5, false, t0 + 8 * S);
        assert_eq!(run(&mut clock, at(t0, 9)), vec![Due::Frame(5 * S, 5)]);
        assert_eq!(clock.next(), None);
        // Nothing buffered: no frame in the making.
        clock.undecoded(0, true, t0 + 10 * S);
        assert_eq!(clock.next(), None);
    }

    #[test]
    fn the_send_timeout_runs_from_the_first_would_block_after_progress() {
        let t0 = Instant::now();
        let limits = PeerLimits {
            send_timeout: Some(5 * S),
            ..PeerLimits::default()
        };
        let mut clock = LimitClock::new(limits, t0);
        let sending = |secs| Now {
            sending: true,
            ..at(t0, secs)
        };
        clock.would_block(t0 + S);
        clock.would_block(t0 + 3 * S);
        assert_eq!(clock.next(), Some(t0 + 6 * S));
        clock.sent(t0 + 4 * S);
        clock.would_block(t0 + 5 * S);
        assert!(run(&mut clock, sending(6)).is_empty());
        assert_eq!(clock.next(), Some(t0 + 10 * S));
        assert_eq!(run(&mut clock, sending(10)), vec![Due::Send(5 * S)]);
    }

    #[test]
    fn nothing_is_due_before_its_time_or_without_limits() {
        let t0 = Instant::now();
        let mut clock = LimitClock::new(PeerLimits::default(), t0);
        clock.would_block(t0);
        clock.undecoded(9, false, t0);
        assert_eq!(clock.next(), None);
        assert!(run(&mut clock, at(t0, 3600)).is_empty());
    }
}
