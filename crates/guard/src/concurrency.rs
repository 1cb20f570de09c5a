//! Concurrency limits (bulkheads): at most `limit` requests in flight, a bounded FIFO queue
//! with a timeout behind them, and fast refusal when the queue is full. The limit is fixed
//! (`max_inflight`) or adaptive ([`crate::adaptive`]), and the limiter can shed by priority
//! ([`crate::shed`]).
//!
//! # Mechanics
//! Slots are permits of a tokio [`Semaphore`] (FIFO-fair, lock-free `try_acquire`). Lowering
//! an adaptive limit forgets idle permits and records the rest as *debt*, paid by the next
//! releases instead of returning their permit; raising it pays debt first, then adds permits.
//! So the number of permits out plus idle never exceeds the current limit once the debt is
//! paid, and never exceeds the previous limit before (tested as a property).
//!
//! Per request on the uncontended path: one shedding check (two atomic loads), one
//! `try_acquire` (one CAS), two counter updates; on completion the adaptive sample (four
//! atomic updates) and the release. The window's hand-over to the
//! [`AdaptiveMachine`] happens once per window on whichever thread notices it ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::RejectReason;
use crate::adaptive::{AdaptiveMachine, AdaptivePolicy, WindowSample};
use crate::shed::{ClassId, ShedPolicy, Shedder};

/// A validated concurrency policy.
#[derive(Clone, Debug, PartialEq)]
pub struct ConcurrencyPolicy {
    /// Fixed limit, or the ceiling of the adaptive one.
    pub max_inflight: usize,
    /// Requests that may wait for a slot (0 = refuse at once when full).
    pub max_queue: usize,
    /// Longest wait in the queue before refusing.
    pub queue_timeout: Duration,
    /// Find the limit from latency instead.
    pub adaptive: Option<AdaptivePolicy>,
    /// Shed by priority class.
    pub shedding: Option<ShedPolicy>,
}

impl ConcurrencyPolicy {
    /// A fixed bulkhead of `max_inflight` with a queue of `max_queue` waiting up to
    /// `queue_timeout`.
    pub fn fixed(max_inflight: usize, max_queue: usize, queue_timeout: Duration) -> Self {
        ConcurrencyPolicy {
            max_inflight,
            max_queue,
            queue_timeout,
            adaptive: None,
            shedding: None,
        }
    }
}

/// How a request ended, as every guard sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream did its job (2xx-4xx: a client's mistake is not the upstream's failure).
    Success,
    /// The upstream failed (5xx other than 503, connection refused or reset). Counts as a
    /// failure for breakers; its latency is left out of the adaptive RTT (fast failures
    /// would make the upstream look quick).
    Failure,
    /// Dropped for overload: timed out, or the upstream said it was overloaded (503).
    /// A failure for breakers, a drop for the adaptive limit.
    Dropped,
}

#[derive(Debug)]
struct Window {
    start_ns: AtomicU64,
    sum_rtt_ns: AtomicU64,
    count: AtomicU64,
    min_rtt_ns: AtomicU64,
    max_inflight: AtomicUsize,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct Adaptive {
    machine: Mutex<AdaptiveMachine>,
    window: Window,
    window_ns: u64,
    min_samples: u64,
}

/// Counters and gauges of a limiter, for `/status` and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ConcurrencySnapshot {
    /// Current limit.
    pub limit: usize,
    /// Requests holding a slot.
    pub inflight: usize,
    /// Requests waiting for one.
    pub queued: usize,
    /// Refused because the queue was full.
    pub rejected_full: u64,
    /// Refused after waiting `queue_timeout`.
    pub rejected_timeout: u64,
    /// Current shed level (0 without shedding).
    pub shed_level: usize,
    /// Shed requests per class, most important first (empty without shedding).
    pub shed: Vec<u64>,
}

/// A thread-safe concurrency limiter. Keep it in an `Arc`; permits hold a clone.
#[derive(Debug)]
pub struct ConcurrencyLimiter {
    policy: ConcurrencyPolicy,
    sem: Semaphore,
    limit: AtomicUsize,
    debt: AtomicUsize,
    inflight: AtomicUsize,
    queued: AtomicUsize,
    origin: Instant,
    adaptive: Option<Adaptive>,
    shedder: Option<Shedder>,
    rejected_full: AtomicU64,
    rejected_timeout: AtomicU64,
}

/// A slot in a [`ConcurrencyLimiter`]. Released on drop; report the outcome with
/// [`ConcurrencyPermit::complete`] to feed the adaptive limit.
#[derive(Debug)]
#[must_use = "the slot is released when the permit drops"]
pub struct ConcurrencyPermit {
    limiter: Arc<ConcurrencyLimiter>,
    started: Instant,
    inflight_at_start: usize,
    queued_for: Duration,
}

impl ConcurrencyPermit {
    /// When the slot was granted.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// How long the request waited in the queue.
    pub fn queued_for(&self) -> Duration {
        self.queued_for
    }

    /// The request finished at `now` with `outcome`: feed the adaptive limit, release.
    pub fn complete(self, now: Instant, outcome: Outcome) {
        let rtt = now.saturating_duration_since(self.started);
        self.limiter
            .sample(now, rtt, self.inflight_at_start, outcome);
    }
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        self.limiter.release();
    }
}

impl ConcurrencyLimiter {
    /// Build a limiter.
    pub fn new(policy: ConcurrencyPolicy) -> Arc<ConcurrencyLimiter> {
        let max = policy.max_inflight.max(1);
        let (limit, adaptive) = match policy.adaptive {
            Some(mut a) => {
                a.max_limit = a.max_limit.min(max);
                let m = AdaptiveMachine::new(a);
                let limit = m.limit();
                (
                    limit,
                    Some(Adaptive {
                        machine: Mutex::new(m),
                        window: Window {
                            start_ns: AtomicU64::new(0),
                            sum_rtt_ns: AtomicU64::new(0),
                            count: AtomicU64::new(0),
                            min_rtt_ns: AtomicU64::new(u64::MAX),
                            max_inflight: AtomicUsize::new(0),
                            dropped: AtomicU64::new(0),
                        },
                        window_ns: nanos(a.window).max(1),
                        min_samples: u64::from(a.min_window_samples),
                    }),
                )
            }
            None => (max, None),
        };
        Arc::new(ConcurrencyLimiter {
            sem: Semaphore::new(limit),
            limit: AtomicUsize::new(limit),
            debt: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            origin: Instant::now(),
            adaptive,
            shedder: policy.shedding.clone().map(Shedder::new),
            rejected_full: AtomicU64::new(0),
            rejected_timeout: AtomicU64::new(0),
            policy,
        })
    }

    /// The policy.
    pub fn policy(&self) -> &ConcurrencyPolicy {
        &self.policy
    }

    /// The shedding policy's class called `name`, or the default class (rank 0) when this
    /// limiter does not shed.
    pub fn class(&self, name: &str) -> Option<ClassId> {
        match &self.shedder {
            Some(s) => s.policy().class(name),
            None => Some(ClassId(0)),
        }
    }

    /// Current limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Requests holding a slot.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Counters for `/status` and `/metrics`.
    pub fn snapshot(&self) -> ConcurrencySnapshot {
        ConcurrencySnapshot {
            limit: self.limit(),
            inflight: self.inflight(),
            queued: self.queued.load(Ordering::Relaxed),
            rejected_full: self.rejected_full.load(Ordering::Relaxed),
            rejected_timeout: self.rejected_timeout.load(Ordering::Relaxed),
            shed_level: self.shedder.as_ref().map_or(0, Shedder::level),
            shed: self
                .shedder
                .as_ref()
                .map_or_else(Vec::new, Shedder::shed_totals),
        }
    }

    /// The shedder, if any.
    pub fn shedder(&self) -> Option<&Shedder> {
        self.shedder.as_ref()
    }

    /// Ask for a slot for a request of `class` arriving at `now`: at once if one is free,
    /// else wait in the FIFO queue up to `queue_timeout`. Refuses with
    /// [`RejectReason::Shed`] or [`RejectReason::Overloaded`].
    pub async fn acquire(
        self: &Arc<Self>,
        class: ClassId,
        now: Instant,
    ) -> Result<ConcurrencyPermit, RejectReason> {
        if let Some(s) = &self.shedder
            && !s.admit(class, self.inflight(), self.limit())
        {
            return Err(RejectReason::Shed);
        }
        if let Ok(p) = self.sem.try_acquire() {
            p.forget();
            if let Some(s) = &self.shedder {
                s.observe(now, Some(Duration::ZERO));
            }
            return Ok(self.granted(now, Duration::ZERO));
        }
        // Full: only full-share classes wait (the queue is for the important ones).
        if let Some(s) = &self.shedder
            && !s.may_queue(class)
        {
            return Err(RejectReason::Shed);
        }
        // Queue if there is room. Increment first so concurrent arrivals cannot overshoot
        // max_queue.
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.policy.max_queue {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(self.full(now));
        }
        let waited = tokio::time::timeout(self.policy.queue_timeout, self.sem.acquire()).await;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(p)) => {
                p.forget();
                let at = Instant::now();
                let q = at.saturating_duration_since(now);
                if let Some(s) = &self.shedder {
                    s.observe(at, Some(q));
                }
                Ok(self.granted(at, q))
            }
            // Timed out (or the semaphore closed, which this crate never does).
            _ => {
                self.rejected_timeout.fetch_add(1, Ordering::Relaxed);
                if let Some(s) = &self.shedder {
                    s.observe(Instant::now(), Some(self.policy.queue_timeout));
                }
                Err(RejectReason::Overloaded)
            }
        }
    }

    /// A slot only if one is free right now (no queueing). For callers that cannot wait.
    pub fn try_acquire(
        self: &Arc<Self>,
        class: ClassId,
        now: Instant,
    ) -> Result<ConcurrencyPermit, RejectReason> {
        if let Some(s) = &self.shedder
            && !s.admit(class, self.inflight(), self.limit())
        {
            return Err(RejectReason::Shed);
        }
        match self.sem.try_acquire() {
            Ok(p) => {
                p.forget();
                Ok(self.granted(now, Duration::ZERO))
            }
            Err(_) => Err(self.full(now)),
        }
    }

    fn full(&self, now: Instant) -> RejectReason {
        self.rejected_full.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = &self.shedder {
            s.observe(now, None);
        }
        RejectReason::Overloaded
    }

    fn granted(self: &Arc<Self>, now: Instant, queued_for: Duration) -> ConcurrencyPermit {
        let inflight = self.inflight.fetch_add(1, Ordering::Relaxed) + 1;
        ConcurrencyPermit {
            limiter: Arc::clone(self),
            started: now,
            inflight_at_start: inflight,
            queued_for,
        }
    }

    fn release(&self) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
        // Pay debt (from a lowered limit) before returning the permit.
        let mut debt = self.debt.load(Ordering::Acquire);
        while debt > 0 {
            match self.debt.compare_exchange_weak(
                debt,
                debt - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(d) => debt = d,
            }
        }
        self.sem.add_permits(1);
    }

    fn sample(&self, now: Instant, rtt: Duration, inflight: usize, outcome: Outcome) {
        let Some(a) = &self.adaptive else {
            return;
        };
        let w = &a.window;
        let rtt_ns = nanos(rtt);
        if outcome != Outcome::Failure {
            w.sum_rtt_ns.fetch_add(rtt_ns, Ordering::Relaxed);
            w.count.fetch_add(1, Ordering::Relaxed);
            w.min_rtt_ns.fetch_min(rtt_ns, Ordering::Relaxed);
        }
        w.max_inflight.fetch_max(inflight, Ordering::Relaxed);
        if outcome == Outcome::Dropped {
            w.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let now_ns = nanos(now.saturating_duration_since(self.origin));
        let start = w.start_ns.load(Ordering::Relaxed);
        if now_ns.saturating_sub(start) < a.window_ns
            || w.count.load(Ordering::Relaxed) < a.min_samples
        {
            return;
        }
        let Some(mut m) = a.machine.try_lock() else {
            return;
        };
        if w.start_ns.load(Ordering::Relaxed) != start {
            return;
        }
        let count = w.count.swap(0, Ordering::Relaxed).max(1);
        let sample = WindowSample {
            rtt: Duration::from_nanos(w.sum_rtt_ns.swap(0, Ordering::Relaxed) / count),
            min_rtt: Duration::from_nanos(w.min_rtt_ns.swap(u64::MAX, Ordering::Relaxed)),
            inflight: w.max_inflight.swap(0, Ordering::Relaxed),
            dropped: w.dropped.swap(0, Ordering::Relaxed) > 0,
        };
        w.start_ns.store(now_ns, Ordering::Relaxed);
        let before = self.limit();
        let after = m.on_window(sample);
        if after != before {
            self.set_limit(before, after);
            tracing::debug!(
                before,
                after,
                rtt_us = sample.rtt.as_micros() as u64,
                "adaptive concurrency limit"
            );
        }
    }

    /// Move the limit from `from` to `to` (called only under the machine's lock).
    fn set_limit(&self, from: usize, to: usize) {
        if to > from {
            let mut grow = to - from;
            let mut debt = self.debt.load(Ordering::Acquire);
            while debt > 0 && grow > 0 {
                let pay = debt.min(grow);
                match self.debt.compare_exchange_weak(
                    debt,
                    debt - pay,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        grow -= pay;
                        break;
                    }
                    Err(d) => debt = d,
                }
            }
            if grow > 0 {
                self.sem.add_permits(grow);
            }
        } else {
            let shrink = from - to;
            let forgotten = self.sem.forget_permits(shrink);
            self.debt.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
        self.limit.store(to, Ordering::Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn bulkhead_queues_fifo_then_times_out_then_refuses() {
        let l = ConcurrencyLimiter::new(ConcurrencyPolicy::fixed(2, 1, ms(100)));
        let now = Instant::now();
        let a = l.acquire(ClassId(0), now).await.unwrap();
        let _b = l.acquire(ClassId(0), now).await.unwrap();
        assert_eq!(l.inflight(), 2);
        // Third waits; a fourth finds the queue full and is refused at once.
        let l2 = Arc::clone(&l);
        let waiter = tokio::spawn(async move {
            l2.acquire(ClassId(0), Instant::now())
                .await
                .map(|p| p.queued_for())
        });
        tokio::task::yield_now().await;
        assert_eq!(l.snapshot().queued, 1);
        assert_eq!(
            l.acquire(ClassId(0), now).await.unwrap_err(),
            RejectReason::Overloaded
        );
        tokio::time::advance(ms(30)).await;
        a.complete(Instant::now(), Outcome::Success);
        let q = waiter.await.unwrap().unwrap();
        assert_eq!(q, ms(30));
        // Now full again (b + the waiter's permit, already dropped -> one free).
        let c = l.acquire(ClassId(0), Instant::now()).await.unwrap();
        let t = Instant::now();
        let r = l.acquire(ClassId(0), t).await;
        assert_eq!(r.unwrap_err(), RejectReason::Overloaded);
        assert_eq!(Instant::now() - t, ms(100), "waited the queue timeout");
        let s = l.snapshot();
        assert_eq!((s.rejected_full, s.rejected_timeout), (1, 1));
        drop(c);
    }

    #[tokio::test(start_paused = true)]
    async fn adaptive_limit_shrinks_when_latency_grows() {
        let l = ConcurrencyLimiter::new(ConcurrencyPolicy {
            adaptive: Some(AdaptivePolicy {
                initial_limit: 40,
                window: ms(100),
                ..AdaptivePolicy::default()
            }),
            ..ConcurrencyPolicy::fixed(100, 0, ms(1))
        });
        assert_eq!(l.limit(), 40);
        let t0 = Instant::now();
        // Windows of 10 ms requests at full concurrency, then 50 ms ones.
        let mut now = t0;
        for round in 0..40u64 {
            let rtt = if round < 20 { 10 } else { 50 };
            let permits: Vec<_> = (0..l.limit())
                .filter_map(|_| l.try_acquire(ClassId(0), now).ok())
                .collect();
            now += ms(rtt.max(100));
            for p in permits {
                let start = p.started();
                p.complete(start + ms(rtt), Outcome::Success);
            }
            // Force a window close with one more sample at `now`.
            if let Ok(p) = l.try_acquire(ClassId(0), now) {
                p.complete(now + ms(rtt), Outcome::Success);
            }
            if round == 19 {
                assert!(l.limit() > 40, "grew: {}", l.limit());
            }
        }
        assert!(l.limit() < 40, "shrank: {}", l.limit());
        assert_eq!(l.inflight(), 0);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Acquire,
        Release(usize),
        SetLimit(usize),
    }

    proptest! {
        /// The bulkhead never has more requests in flight than its ceiling, never more than
        /// the current limit once the debt of a lowered limit is paid, and accounts for
        /// every permit exactly.
        #[test]
        fn never_exceeds_the_limit(
            ops in proptest::collection::vec(prop_oneof![
                4 => Just(Op::Acquire),
                3 => (0usize..64).prop_map(Op::Release),
                1 => (1usize..32).prop_map(Op::SetLimit),
            ], 1..400),
        ) {
            let max = 32;
            let l = ConcurrencyLimiter::new(ConcurrencyPolicy {
                adaptive: Some(AdaptivePolicy { initial_limit: 8, min_limit: 1, ..AdaptivePolicy::default() }),
                ..ConcurrencyPolicy::fixed(max, 0, ms(1))
            });
            let now = Instant::now();
            let mut held = Vec::new();
            for op in ops {
                match op {
                    Op::Acquire => {
                        if let Ok(p) = l.try_acquire(ClassId(0), now) {
                            held.push(p);
                        }
                    }
                    Op::Release(i) => {
                        if !held.is_empty() {
                            drop(held.swap_remove(i % held.len()));
                        }
                    }
                    Op::SetLimit(to) => {
                        let from = l.limit();
                        l.set_limit(from, to);
                    }
                }
                let limit = l.limit();
                let debt = l.debt.load(Ordering::Relaxed);
                prop_assert_eq!(l.inflight(), held.len());
                prop_assert!(held.len() <= max);
                if debt == 0 {
                    prop_assert!(held.len() <= limit, "{} held, limit {}", held.len(), limit);
                }
                // Permits: held + idle - debt == limit.
                prop_assert_eq!(held.len() + l.sem.available_permits(), limit + debt);
            }
        }
    }
}
