//! A small seeded pseudo-random generator (SplitMix64), shared by the reconnecting
//! client's backoff jitter and the fault injector: the same seed gives the same run.

use std::time::Duration;

#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// A seed from the process's hash keys and the clock, for callers not given one.
    pub(crate) fn random_seed() -> u64 {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, max]`.
    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        let wide = u128::from(self.next_u64()) * (u128::from(max) + 1);
        // x · (max + 1) / 2^64 with x < 2^64 is below max + 1.
        u64::try_from(wide >> 64).unwrap_or(max)
    }

    /// Whether an event of probability `p` happens.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }

    /// A number in `1..n` (`n` at least 2): fewer than `n`, at least one.
    pub(crate) fn fewer_than(&mut self, n: usize) -> usize {
        let most = u64::try_from(n.saturating_sub(2)).unwrap_or(u64::MAX);
        1 + usize::try_from(self.up_to(most)).unwrap_or(0)
    }

    /// A duration in `0..=max`.
    pub(crate) fn duration_up_to(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.up_to(nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_their_ranges_and_repeat_with_the_seed() {
        let mut a = SplitMix64::new(9);
        let mut b = SplitMix64::new(9);
        for _ in 0..10_000 {
            let x = a.up_to(10);
            assert!(x <= 10);
            assert_eq!(x, b.up_to(10));
            let f = a.fewer_than(5);
            assert!((1..5).contains(&f));
            b.fewer_than(5);
            assert!(a.duration_up_to(Duration::from_millis(3)) <= Duration::from_millis(3));
            b.duration_up_to(Duration::from_millis(3));
        }
        assert_eq!(a.up_to(u64::MAX), b.up_to(u64::MAX));
        assert!(!a.chance(0.0));
        assert!(a.chance(1.0));
    }
}
