//! Jittered, bounded exponential back-off.
//!
//! The delay before attempt `n` (0-based) is drawn uniformly from `[c/2, c]` where
//! `c = min(base x 2^n, max)` ("equal jitter"): it never waits longer than `max`, never retries
//! in lock-step with other clients, and still grows quickly enough to relieve an overloaded peer.

use std::time::Duration;

/// Exponential back-off parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first delay.
    pub base: Duration,
    /// Ceiling of every delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// Back-off from `base` doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max }
    }

    /// The ceiling for attempt `attempt` (0-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.base
            .checked_mul(1u32 << attempt.min(31))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The jittered delay before attempt `attempt` (0-based).
    pub fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rng.u64(0..=spread))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grows_then_caps() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(75));
        let c: Vec<u128> = (0..6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(c, vec![10, 20, 40, 75, 75, 75]);
        assert_eq!(b.ceiling(200), Duration::from_millis(75));
    }

    #[test]
    fn jitter_spreads_clients_apart() {
        let b = Backoff::default();
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: std::collections::HashSet<Duration> =
            (0..50).map(|_| b.delay(3, &mut rng)).collect();
        assert!(delays.len() > 40, "delays barely vary: {}", delays.len());
    }

    proptest! {
        #[test]
        fn delay_within_half_and_full_ceiling(
            base_ms in 0u64..10_000, max_ms in 0u64..100_000, attempt in 0u32..100, seed: u64
        ) {
            let b = Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            let d = b.delay(attempt, &mut fastrand::Rng::with_seed(seed));
            let c = b.ceiling(attempt);
            prop_assert!(d <= c && d >= c / 2 && d <= b.max);
        }
    }
}
