//! [`Watermarks`]: how many bytes a socket's writers may have queued, with hysteresis.

/// Admission by watermarks: writes are admitted while the bytes admitted and not yet sent
/// stay below `high`; the write that reaches `high` is still admitted and turns the
/// socket unwritable, and it becomes writable again once they drain to `low`. Each
/// method returns the writability change it caused, if any, so the caller can tell
/// producers once per crossing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Watermarks {
    high: usize,
    low: usize,
    admitted: usize,
    writable: bool,
}

impl Watermarks {
    /// Nothing admitted yet; `low` is capped at `high`.
    pub(crate) fn new(high: usize, low: usize) -> Self {
        Watermarks {
            high,
            low: low.min(high),
            admitted: 0,
            writable: true,
        }
    }

    /// Bytes admitted and not yet released.
    pub(crate) fn admitted(&self) -> usize {
        self.admitted
    }

    /// The high watermark.
    pub(crate) fn high(&self) -> usize {
        self.high
    }

    /// Whether a write would be admitted now.
    pub(crate) fn is_writable(&self) -> bool {
        self.writable
    }

    /// Admits `len` bytes, or refuses them (with the bytes admitted now) while unwritable.
    pub(crate) fn admit(&mut self, len: usize) -> Result<Option<bool>, usize> {
        if !self.writable {
            return Err(self.admitted);
        }
        Ok(self.charge(len))
    }

    /// Admits `len` bytes even while unwritable (writes whose bytes are already held:
    /// ones that waited for room, moved into the queue by a graceful close).
    pub(crate) fn charge(&mut self, len: usize) -> Option<bool> {
        self.admitted = self.admitted.saturating_add(len);
        self.flip(self.writable && self.admitted >= self.high, false)
    }

    /// `len` admitted bytes left the queue (sent, cancelled or failed).
    pub(crate) fn release(&mut self, len: usize) -> Option<bool> {
        self.admitted = self.admitted.saturating_sub(len);
        self.flip(!self.writable && self.admitted <= self.low, true)
    }

    fn flip(&mut self, when: bool, to: bool) -> Option<bool> {
        if when {
            self.writable = to;
            Some(to)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_flip_once_per_crossing_and_refuse_while_unwritable() {
        let mut w = Watermarks::new(10, 4);
        assert_eq!(w.admit(6), Ok(None));
        assert_eq!(
            w.admit(6),
            Ok(Some(false)),
            "the crossing write is admitted"
        );
        assert_eq!(w.admit(1), Err(12), "refused while unwritable");
        assert_eq!(w.release(6), None, "6 admitted > low 4");
        assert_eq!(w.release(3), Some(true));
        assert_eq!(w.release(3), None, "already writable");
        assert_eq!(w.admitted(), 0);
    }

    #[test]
    fn a_charge_admits_while_unwritable_and_a_release_never_underflows() {
        let mut w = Watermarks::new(10, 4);
        assert_eq!(w.charge(20), Some(false));
        assert_eq!(w.charge(5), None);
        assert_eq!(w.admitted(), 25);
        assert_eq!(w.release(100), Some(true));
        assert_eq!(w.admitted(), 0);
    }
}
