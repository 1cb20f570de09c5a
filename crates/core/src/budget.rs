//! A retry budget: retries may add at most a fixed share of the recent request volume, plus a
//! small floor per second so that low-traffic services can still retry at all.
//!
//! The budget over the last `window` is
//!
//! ```text
//! available = min_per_sec x window_secs + ratio x requests_in_window - retries_in_window
//! ```
//!
//! and a retry is allowed only while `available >= 1`. Unlike a fixed "retry 3 times"
//! policy, this bounds the extra load retries can cause during an outage to `ratio` (20% by
//! default), so retries cannot amplify an overload into a collapse.
//!
//! The window is kept as [`SLOTS`] time slots that roll over as time passes: memory is
//! constant and old traffic ages out smoothly.

use std::time::Duration;

use tokio::time::Instant;

/// How many slots the window is divided into.
pub const SLOTS: usize = 10;

/// Retry budget parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudgetPolicy {
    /// Retries allowed per original request over the window (0.2 = 20%).
    pub ratio: f64,
    /// Retries always allowed per second, whatever the traffic.
    pub min_per_sec: u32,
    /// How far back requests and retries are remembered.
    pub window: Duration,
}

impl Default for RetryBudgetPolicy {
    fn default() -> Self {
        RetryBudgetPolicy {
            ratio: 0.2,
            min_per_sec: 10,
            window: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// Which slot of time this holds (`elapsed / slot_len`); stale when behind the window.
    epoch: u64,
    requests: u64,
    retries: u64,
}

/// The budget's state. Not thread-safe by itself; the proxy keeps one per pool behind a lock.
#[derive(Clone, Debug)]
pub struct RetryBudget {
    policy: RetryBudgetPolicy,
    origin: Instant,
    slot_len: Duration,
    slots: [Slot; SLOTS],
    exhausted_total: u64,
}

impl RetryBudget {
    /// An empty budget whose clock starts at `now`.
    pub fn new(policy: RetryBudgetPolicy, now: Instant) -> Self {
        let window = policy.window.max(Duration::from_millis(SLOTS as u64));
        RetryBudget {
            policy: RetryBudgetPolicy { window, ..policy },
            origin: now,
            slot_len: window / SLOTS as u32,
            slots: [Slot::default(); SLOTS],
            exhausted_total: 0,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &RetryBudgetPolicy {
        &self.policy
    }

    /// Record an original (non-retry) request.
    pub fn deposit(&mut self, now: Instant) {
        self.slot(now).requests += 1;
    }

    /// Ask to spend one retry. Returns false (and counts an exhaustion) when the budget is
    /// spent; the caller must then give up instead of retrying.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        if self.available(now) >= 1.0 {
            self.slot(now).retries += 1;
            true
        } else {
            self.exhausted_total += 1;
            false
        }
    }

    /// Retries that may still be spent now.
    pub fn available(&self, now: Instant) -> f64 {
        let current = self.epoch(now);
        let (mut requests, mut retries) = (0u64, 0u64);
        for s in &self.slots {
            if current.saturating_sub(s.epoch) < SLOTS as u64 && s.epoch <= current {
                requests += s.requests;
                retries += s.retries;
            }
        }
        let floor = f64::from(self.policy.min_per_sec) * self.policy.window.as_secs_f64();
        floor + self.policy.ratio * requests as f64 - retries as f64
    }

    /// How many retries were refused since creation.
    pub fn exhausted_total(&self) -> u64 {
        self.exhausted_total
    }

    fn epoch(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin);
        u64::try_from(elapsed.as_nanos() / self.slot_len.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    fn slot(&mut self, now: Instant) -> &mut Slot {
        let epoch = self.epoch(now);
        let slot = &mut self.slots[(epoch % SLOTS as u64) as usize];
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                requests: 0,
                retries: 0,
            };
        }
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryBudgetPolicy {
        RetryBudgetPolicy {
            ratio: 0.2,
            min_per_sec: 1,
            window: Duration::from_secs(10),
        }
    }

    #[test]
    fn floor_alone_allows_min_per_sec_times_window() {
        let t = Instant::now();
        let mut b = RetryBudget::new(policy(), t);
        let allowed = (0..100).filter(|_| b.try_withdraw(t)).count();
        assert_eq!(allowed, 10);
        assert_eq!(b.exhausted_total(), 90);
    }

    #[test]
    fn retries_bounded_by_ratio_of_requests() {
        let t = Instant::now();
        let mut b = RetryBudget::new(
            RetryBudgetPolicy {
                min_per_sec: 0,
                ..policy()
            },
            t,
        );
        for _ in 0..1000 {
            b.deposit(t);
        }
        let allowed = (0..1000).filter(|_| b.try_withdraw(t)).count();
        assert_eq!(allowed, 200);
    }

    #[test]
    fn old_traffic_ages_out() {
        let t = Instant::now();
        let mut b = RetryBudget::new(
            RetryBudgetPolicy {
                min_per_sec: 0,
                ..policy()
            },
            t,
        );
        for _ in 0..100 {
            b.deposit(t);
        }
        assert!(b.available(t) >= 20.0);
        assert!(b.available(t + Duration::from_secs(9)) >= 20.0);
        assert_eq!(b.available(t + Duration::from_secs(11)), 0.0);
        assert!(!b.try_withdraw(t + Duration::from_secs(11)));
    }

    #[test]
    fn sustained_outage_is_bounded() {
        // Every request fails and wants a retry: over a minute, retries stay within ratio
        // of requests plus the floor.
        let t0 = Instant::now();
        let mut b = RetryBudget::new(policy(), t0);
        let (mut requests, mut retries) = (0u64, 0u64);
        for ms in 0..60_000u64 {
            let now = t0 + Duration::from_millis(ms);
            b.deposit(now);
            requests += 1;
            if b.try_withdraw(now) {
                retries += 1;
            }
        }
        let bound = 0.2 * requests as f64 + 1.0 * 70.0;
        assert!((retries as f64) <= bound, "{retries} > {bound}");
        assert!(
            retries as f64 >= 0.19 * requests as f64,
            "budget too stingy: {retries}"
        );
    }
}
