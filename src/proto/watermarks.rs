//! [`Watermarks`]: how many bytes a socket's writers may have queued, with hysteresis.

/// The admission state of one socket in one word, so that it can live in an atomic:
/// the bytes admitted and not yet released, and whether writes are refused (unwritable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Level(usize);

impl Level {
    const UNWRITABLE: usize = 1 << (usize::BITS - 1);
    /// Counts saturate below the flag bit.
    const MAX: usize = Self::UNWRITABLE - 1;

    /// The state as one word (see [`from_bits`](Self::from_bits)).
    pub(crate) fn bits(self) -> usize {
        self.0
    }

    /// The state a word from [`bits`](Self::bits) holds.
    pub(crate) fn from_bits(bits: usize) -> Self {
        Level(bits)
    }

    /// Bytes admitted and not yet released.
    pub(crate) fn admitted(self) -> usize {
        self.0 & Self::MAX
    }

    /// Whether a write would be admitted now.
    pub(crate) fn is_writable(self) -> bool {
        self.0 & Self::UNWRITABLE == 0
    }

    fn new(admitted: usize, writable: bool) -> Self {
        let flag = if writable { 0 } else { Self::UNWRITABLE };
        Level(admitted.min(Self::MAX) | flag)
    }
}

/// Admission by watermarks: writes are admitted while the bytes admitted and not yet sent
/// stay below `high`; the write that reaches `high` is still admitted and turns the
/// socket unwritable, and it becomes writable again once they drain to `low`.
///
/// The rules only: the state is a [`Level`] the caller keeps (in an atomic, for the
/// socket's admission gate). Each rule returns the next level and the writability change
/// it caused, if any, so the caller can tell producers once per crossing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Watermarks {
    high: usize,
    low: usize,
}

impl Watermarks {
    /// The rules for these marks; `low` is capped at `high`.
    pub(crate) fn new(high: usize, low: usize) -> Self {
        Watermarks {
            high,
            low: low.min(high),
        }
    }

    /// The high watermark.
    pub(crate) fn high(&self) -> usize {
        self.high
    }

    /// Admits `len` bytes, or refuses them (with the bytes admitted now) while unwritable.
    pub(crate) fn admit(&self, level: Level, len: usize) -> Result<(Level, Option<bool>), usize> {
        if !level.is_writable() {
            return Err(level.admitted());
        }
        Ok(self.charge(level, len))
    }

    /// Admits `len` bytes even while unwritable (writes whose bytes are already held:
    /// ones that waited for room, moved into the queue by a graceful close).
    pub(crate) fn charge(&self, level: Level, len: usize) -> (Level, Option<bool>) {
        let admitted = level.admitted().saturating_add(len).min(Level::MAX);
        // A zero-length write adds nothing: it reaches no mark (at a high watermark of
        // 0 it would turn the socket unwritable with nothing queued to drain).
        let crossing = level.is_writable() && len > 0 && admitted >= self.high;
        let next = Level::new(admitted, level.is_writable() && !crossing);
        (next, crossing.then_some(false))
    }

    /// `len` admitted bytes left the queue (sent, cancelled or failed).
    pub(crate) fn release(&self, level: Level, len: usize) -> (Level, Option<bool>) {
        let admitted = level.admitted().saturating_sub(len);
        let crossing = !level.is_writable() && admitted <= self.low;
        let next = Level::new(admitted, level.is_writable() || crossing);
        (next, crossing.then_some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_flip_once_per_crossing_and_refuse_while_unwritable() {
        let w = Watermarks::new(10, 4);
        let l = Level::default();
        let (l, change) = w.admit(l, 6).expect("admitted");
        assert_eq!(change, None);
        let (l, change) = w.admit(l, 6).expect("the crossing write is admitted");
        assert_eq!(change, Some(false));
        assert_eq!(w.admit(l, 1), Err(12), "refused while unwritable");
        let (l, change) = w.release(l, 6);
        assert_eq!(change, None, "6 admitted > low 4");
        let (l, change) = w.release(l, 3);
        assert_eq!(change, Some(true));
        let (l, change) = w.release(l, 3);
        assert_eq!(change, None, "already writable");
        assert_eq!(l.admitted(), 0);
        assert!(l.is_writable());
    }

    #[test]
    fn a_zero_length_write_adds_nothing_and_crosses_no_mark() {
        let w = Watermarks::new(0, 0);
        let (l, change) = w.admit(Level::default(), 0).expect("admitted");
        assert_eq!(change, None, "nothing was added: no crossing");
        assert!(l.is_writable());
        let (l, change) = w.admit(l, 3).expect("admitted");
        assert_eq!(change, Some(false), "3 bytes reach a high watermark of 0");
        let (l, change) = w.release(l, 3);
        assert_eq!(change, Some(true));
        assert!(l.is_writable());
    }

    #[test]
    fn a_charge_admits_while_unwritable_and_a_release_never_underflows() {
        let w = Watermarks::new(10, 4);
        let (l, change) = w.charge(Level::default(), 20);
        assert_eq!(change, Some(false));
        let (l, change) = w.charge(l, 5);
        assert_eq!(change, None);
        assert_eq!(l.admitted(), 25);
        let (l, change) = w.release(l, 100);
        assert_eq!(change, Some(true));
        assert_eq!(l.admitted(), 0);
    }

    #[test]
    fn a_level_survives_its_word_and_saturates_below_the_flag() {
        let w = Watermarks::new(usize::MAX, 0);
        let (l, change) = w.charge(Level::default(), usize::MAX);
        assert_eq!(change, None);
        assert!(l.is_writable(), "the count never reaches the flag bit");
        assert_eq!(l.admitted(), Level::MAX);
        assert_eq!(Level::from_bits(l.bits()), l);
        let (l, _) = Watermarks::new(1, 0).charge(l, 1);
        assert!(!l.is_writable());
        assert_eq!(Level::from_bits(l.bits()).admitted(), Level::MAX);
    }
}
