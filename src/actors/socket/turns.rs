//! Which sockets of a thread have data to send: a socket caps its flush turn (and yields
//! after it) only while another one does ([`TurnCap::WhenContended`](crate::TurnCap)).

use std::cell::Cell;

thread_local! {
    /// Sockets of this thread whose core [is sending](crate::proto::StreamCore::is_sending).
    static SENDERS: Cell<usize> = const { Cell::new(0) };
}

/// One socket's place in its thread's count of senders; leaves it when dropped.
#[derive(Debug, Default)]
pub(crate) struct SenderSlot {
    counted: bool,
}

impl SenderSlot {
    /// Whether another socket of this thread has data to send.
    pub(crate) fn others_sending(&self) -> bool {
        SENDERS
            .try_with(|n| n.get() > usize::from(self.counted))
            .unwrap_or(false)
    }

    /// Whether this socket has data to send now.
    pub(crate) fn set(&mut self, sending: bool) {
        if sending == self.counted {
            return;
        }
        let _ = SENDERS.try_with(|n| {
            n.set(if sending {
                n.get() + 1
            } else {
                n.get().saturating_sub(1)
            })
        });
        self.counted = sending;
    }
}

impl Drop for SenderSlot {
    fn drop(&mut self) {
        self.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_sees_only_the_others_and_leaves_the_count_when_dropped() {
        let mut a = SenderSlot::default();
        let mut b = SenderSlot::default();
        a.set(true);
        assert!(!a.others_sending(), "alone");
        assert!(b.others_sending(), "a sends");
        b.set(true);
        assert!(a.others_sending());
        drop(b);
        assert!(!a.others_sending(), "b left when dropped");
        a.set(false);
        a.set(false);
        let c = SenderSlot::default();
        assert!(!c.others_sending());
    }
}
