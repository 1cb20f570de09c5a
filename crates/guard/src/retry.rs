//! Retries bounded by a budget, and timeout helpers, on top of
//! [`hastack_core::RetryBudget`] and [`hastack_core::Backoff`].
//!
//! A retry happens only if (1) the attempt count allows it, (2) the caller says the request
//! is safe to repeat (idempotent, or never reached the upstream), and (3) the shared budget
//! has a retry to spend: retries add at most `ratio` of the recent request volume (plus a
//! small floor), so an outage cannot be amplified into a retry storm. The delay before retry
//! `k` is jittered and bounded (`Backoff`).

use std::future::Future;
use std::time::Duration;

use hastack_core::{Backoff, RetryBudget, RetryBudgetPolicy};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::GuardError;

/// A validated retry policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first try (0 disables).
    pub max_retries: u32,
    /// Delay between tries.
    pub backoff: Backoff,
    /// The budget every request through this policy shares.
    pub budget: RetryBudgetPolicy,
    /// Time limit of each try (`None`: only the overall deadline).
    pub per_try_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 1,
            backoff: Backoff::new(Duration::from_millis(25), Duration::from_millis(250)),
            budget: RetryBudgetPolicy::default(),
            per_try_timeout: None,
        }
    }
}

/// A retry budget shared by many requests (one per pool or route). The lock is held for a
/// few additions; per request it is taken once to deposit, and once per retry.
#[derive(Debug)]
pub struct SharedBudget {
    inner: Mutex<RetryBudget>,
}

impl SharedBudget {
    /// An empty budget starting now.
    pub fn new(policy: RetryBudgetPolicy) -> Self {
        SharedBudget {
            inner: Mutex::new(RetryBudget::new(policy, Instant::now())),
        }
    }

    /// Count an original request.
    pub fn deposit(&self, now: Instant) {
        self.inner.lock().deposit(now);
    }

    /// Spend one retry; false when the budget is exhausted.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        self.inner.lock().try_withdraw(now)
    }

    /// Retries refused by the budget so far.
    pub fn exhausted_total(&self) -> u64 {
        self.inner.lock().exhausted_total()
    }
}

/// The retry decision for one request, as a small state machine: call
/// [`Retrier::next_delay`] after each failed try.
#[derive(Debug)]
pub struct Retrier<'a> {
    policy: &'a RetryPolicy,
    budget: &'a SharedBudget,
    retries: u32,
}

impl<'a> Retrier<'a> {
    /// Start a request at `now` (deposits it in the budget).
    pub fn start(policy: &'a RetryPolicy, budget: &'a SharedBudget, now: Instant) -> Self {
        budget.deposit(now);
        Retrier {
            policy,
            budget,
            retries: 0,
        }
    }

    /// Retries made so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// A try failed at `now`; `safe` says whether repeating the request is safe. Returns
    /// the delay before the next try, or `None` to give up.
    pub fn next_delay(
        &mut self,
        now: Instant,
        safe: bool,
        rng: &mut fastrand::Rng,
    ) -> Option<Duration> {
        if !safe || self.retries >= self.policy.max_retries || !self.budget.try_withdraw(now) {
            return None;
        }
        let d = self.policy.backoff.delay(self.retries, rng);
        self.retries += 1;
        Some(d)
    }
}

/// An overall deadline that per-try timeouts are carved from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// `total` from `now`.
    pub fn after(now: Instant, total: Duration) -> Self {
        Deadline { at: now + total }
    }

    /// When it expires.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// Time left at `now` (zero once expired).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.at.saturating_duration_since(now)
    }

    /// The timeout for a try starting at `now`: the per-try limit, capped by what is left.
    pub fn per_try(&self, now: Instant, per_try: Option<Duration>) -> Duration {
        let left = self.remaining(now);
        per_try.map_or(left, |p| p.min(left))
    }
}

/// Run `fut` with a time limit; [`GuardError::Timeout`] when it runs out.
pub async fn with_timeout<F: Future>(limit: Duration, fut: F) -> Result<F::Output, GuardError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| GuardError::Timeout(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_max_and_at_budget() {
        let policy = RetryPolicy {
            max_retries: 3,
            budget: RetryBudgetPolicy {
                ratio: 0.0,
                min_per_sec: 1,
                window: Duration::from_secs(2),
            },
            ..RetryPolicy::default()
        };
        let budget = SharedBudget::new(policy.budget);
        let mut rng = fastrand::Rng::with_seed(1);
        let now = Instant::now();
        let mut r = Retrier::start(&policy, &budget, now);
        assert!(r.next_delay(now, false, &mut rng).is_none(), "unsafe");
        let d = r.next_delay(now, true, &mut rng).unwrap();
        assert!(d >= Duration::from_millis(12) && d <= Duration::from_millis(25));
        assert!(r.next_delay(now, true, &mut rng).is_some());
        // Floor of 1/s over 2 s = 2 retries: the third is refused by the budget.
        assert!(r.next_delay(now, true, &mut rng).is_none());
        assert_eq!(budget.exhausted_total(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_caps_per_try() {
        let now = Instant::now();
        let d = Deadline::after(now, Duration::from_secs(1));
        assert_eq!(
            d.per_try(now, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
        let later = now + Duration::from_millis(900);
        assert_eq!(
            d.per_try(later, Some(Duration::from_millis(300))),
            Duration::from_millis(100)
        );
        assert_eq!(d.remaining(now + Duration::from_secs(5)), Duration::ZERO);
        let r = with_timeout(Duration::from_millis(10), std::future::pending::<()>()).await;
        assert!(matches!(r, Err(GuardError::Timeout(_))));
    }
}
