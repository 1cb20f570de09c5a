//! Circuit breaker: closed / open / half-open, tripping on the error ratio or the slow-call
//! ratio over a sliding window once a minimum number of calls has been seen.
//!
//! # State machine
//! ```text
//!            calls >= min_calls and (failed/calls >= failure_ratio
//!                                    or slow/calls >= slow_call_ratio)
//!   Closed ──────────────────────────────────────────────────────────▶ Open
//!     ▲                                                                │ now >= open_until
//!     │ half_open_calls trial calls in a row succeed                    ▼
//!     └──────────────────────────────────────────────────────────── HalfOpen
//!                               any trial call fails or is slow ──▶ Open (longer)
//! ```
//! * **Window** (closed state): either the last `n` calls (count-based) or the calls of the
//!   last `d` (time-based, kept as [`TIME_BUCKETS`] buckets that age out, so the window
//!   slides in steps of `d / 10`). A call counts as *failed* if the caller says so and as
//!   *slow* if it took at least `slow_call_duration` (a call can be both).
//! * **Open duration** grows with consecutive trips and is jittered: the `k`-th consecutive
//!   opening (0-based) lasts a duration drawn from `[c/2, c]`, `c = min(open_for x 2^k,
//!   open_max)` ([`hastack_core::Backoff`]). A successful close resets `k`.
//! * **Half-open**: at most `half_open_calls` trial calls are let through (the rest are
//!   refused as if open); the breaker closes when that many have succeeded, and reopens at
//!   the first failed or slow one. A trial abandoned by the caller (cancelled, never sent)
//!   frees its slot without counting.
//!
//! [`BreakerMachine`] is the pure machine (`&mut self`, time passed in). [`Breaker`] wraps it
//! for many threads: lock-free mirrors make `acquire` a single atomic load when closed and
//! a lock-free refusal while open; recording an outcome takes the breaker's own
//! (uncontended, ~20 ns) lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use hastack_core::Backoff;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

/// Buckets of a time-based window.
pub const TIME_BUCKETS: usize = 10;

/// Breaker state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// A bounded number of trial calls decide whether to close or reopen.
    HalfOpen,
}

impl BreakerState {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    fn from_u8(v: u8) -> BreakerState {
        match v {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// The sliding window's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `d`.
    Time(Duration),
}

/// A validated breaker policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerPolicy {
    /// The closed-state window.
    pub window: Window,
    /// Calls the window must hold before the ratios are judged.
    pub min_calls: u32,
    /// Trip when failed/calls reaches this (in (0, 1]).
    pub failure_ratio: f64,
    /// Trip when slow/calls reaches this (in (0, 1]; above 1 disables).
    pub slow_call_ratio: f64,
    /// A call at least this long is slow.
    pub slow_call_duration: Duration,
    /// First open period (ceiling before jitter).
    pub open_for: Duration,
    /// Longest open period.
    pub open_max: Duration,
    /// Trial calls in half-open.
    pub half_open_calls: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            window: Window::Count(100),
            min_calls: 20,
            failure_ratio: 0.5,
            slow_call_ratio: 2.0,
            slow_call_duration: Duration::from_secs(5),
            open_for: Duration::from_secs(5),
            open_max: Duration::from_secs(60),
            half_open_calls: 3,
        }
    }
}

/// How a call ended, as the breaker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallResult {
    /// The caller's verdict (5xx, connection error, timeout...).
    pub failed: bool,
    /// How long the call took.
    pub latency: Duration,
}

/// Whether an admitted call is an ordinary one or a half-open trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// Counted in the closed-state window.
    Normal,
    /// One of the bounded half-open trials.
    Trial,
}

/// A state change, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Previous state.
    pub from: BreakerState,
    /// New state.
    pub to: BreakerState,
    /// When.
    pub at: Instant,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    epoch: u64,
    calls: u32,
    failed: u32,
    slow: u32,
}

#[derive(Clone, Debug)]
enum Stats {
    /// Ring of the last n outcomes: bit 0 failed, bit 1 slow.
    Count {
        ring: Vec<u8>,
        next: usize,
        len: usize,
        failed: u32,
        slow: u32,
    },
    Time {
        bucket_len: Duration,
        buckets: Box<[Bucket; TIME_BUCKETS]>,
    },
}

impl Stats {
    fn new(window: Window) -> Stats {
        match window {
            Window::Count(n) => Stats::Count {
                ring: vec![0; n.max(1) as usize],
                next: 0,
                len: 0,
                failed: 0,
                slow: 0,
            },
            Window::Time(d) => Stats::Time {
                bucket_len: (d / TIME_BUCKETS as u32).max(Duration::from_nanos(1)),
                buckets: Box::new([Bucket::default(); TIME_BUCKETS]),
            },
        }
    }

    fn reset(&mut self) {
        match self {
            Stats::Count {
                ring,
                next,
                len,
                failed,
                slow,
            } => {
                ring.fill(0);
                (*next, *len, *failed, *slow) = (0, 0, 0, 0);
            }
            Stats::Time { buckets, .. } => **buckets = [Bucket::default(); TIME_BUCKETS],
        }
    }

    fn record(&mut self, origin: Instant, now: Instant, failed: bool, slow: bool) {
        let bits = u8::from(failed) | (u8::from(slow) << 1);
        match self {
            Stats::Count {
                ring,
                next,
                len,
                failed: f,
                slow: s,
            } => {
                let old = ring[*next];
                if *len == ring.len() {
                    *f -= u32::from(old & 1);
                    *s -= u32::from(old >> 1);
                } else {
                    *len += 1;
                }
                ring[*next] = bits;
                *f += u32::from(failed);
                *s += u32::from(slow);
                *next = (*next + 1) % ring.len();
            }
            Stats::Time {
                bucket_len,
                buckets,
            } => {
                let epoch = epoch_of(origin, now, *bucket_len);
                let b = &mut buckets[(epoch % TIME_BUCKETS as u64) as usize];
                if b.epoch != epoch {
                    *b = Bucket {
                        epoch,
                        ..Bucket::default()
                    };
                }
                b.calls += 1;
                b.failed += u32::from(failed);
                b.slow += u32::from(slow);
            }
        }
    }

    /// (calls, failed, slow) in the window as of `now`.
    fn totals(&self, origin: Instant, now: Instant) -> (u32, u32, u32) {
        match self {
            Stats::Count {
                len, failed, slow, ..
            } => (*len as u32, *failed, *slow),
            Stats::Time {
                bucket_len,
                buckets,
            } => {
                let current = epoch_of(origin, now, *bucket_len);
                buckets
                    .iter()
                    .filter(|b| b.epoch <= current && current - b.epoch < TIME_BUCKETS as u64)
                    .fold((0, 0, 0), |(c, f, s), b| {
                        (c + b.calls, f + b.failed, s + b.slow)
                    })
            }
        }
    }
}

fn epoch_of(origin: Instant, now: Instant, len: Duration) -> u64 {
    let e = now.saturating_duration_since(origin).as_nanos() / len.as_nanos().max(1);
    // +1 so that epoch 0 is never a live bucket (fresh buckets have epoch 0).
    u64::try_from(e).unwrap_or(u64::MAX - 1) + 1
}

/// The pure breaker state machine. Time is passed in; randomness (for jitter) is seeded.
#[derive(Clone, Debug)]
pub struct BreakerMachine {
    policy: BreakerPolicy,
    backoff: Backoff,
    rng: fastrand::Rng,
    origin: Instant,
    state: BreakerState,
    stats: Stats,
    open_until: Instant,
    /// Consecutive openings without a close in between.
    trips_in_a_row: u32,
    trials_issued: u32,
    trials_ok: u32,
    counts: BreakerCounts,
}

impl BreakerMachine {
    /// A closed breaker.
    pub fn new(policy: BreakerPolicy, now: Instant, seed: u64) -> Self {
        BreakerMachine {
            backoff: Backoff::new(policy.open_for, policy.open_max.max(policy.open_for)),
            rng: fastrand::Rng::with_seed(seed),
            origin: now,
            state: BreakerState::Closed,
            stats: Stats::new(policy.window),
            open_until: now,
            trips_in_a_row: 0,
            trials_issued: 0,
            trials_ok: 0,
            counts: BreakerCounts::default(),
            policy,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// Current state (an open breaker whose period has ended still reads `Open` until the
    /// next [`BreakerMachine::try_acquire`]).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// When the open period ends (meaningful in `Open`).
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.state == BreakerState::Open).then_some(self.open_until)
    }

    /// Lifetime counters.
    pub fn counts(&self) -> BreakerCounts {
        self.counts
    }

    /// (calls, failed, slow) currently in the closed-state window.
    pub fn window_totals(&self, now: Instant) -> (u32, u32, u32) {
        self.stats.totals(self.origin, now)
    }

    /// Ask to make a call. `Err(retry_after)` while open (or while every half-open trial
    /// slot is taken). May transition Open -> HalfOpen.
    pub fn try_acquire(
        &mut self,
        now: Instant,
    ) -> (Result<CallKind, Duration>, Option<Transition>) {
        let mut t = None;
        if self.state == BreakerState::Open {
            if now < self.open_until {
                self.counts.rejected += 1;
                return (Err(self.open_until - now), None);
            }
            t = self.set(BreakerState::HalfOpen, now);
            self.trials_issued = 0;
            self.trials_ok = 0;
        }
        match self.state {
            BreakerState::Closed => (Ok(CallKind::Normal), t),
            BreakerState::HalfOpen if self.trials_issued < self.policy.half_open_calls => {
                self.trials_issued += 1;
                (Ok(CallKind::Trial), t)
            }
            // Trial slots taken: come back after roughly one slow call.
            _ => {
                self.counts.rejected += 1;
                (
                    Err(self.policy.slow_call_duration.min(self.policy.open_for)),
                    t,
                )
            }
        }
    }

    /// Record the result of a call admitted by [`BreakerMachine::try_acquire`].
    pub fn on_result(&mut self, now: Instant, kind: CallKind, r: CallResult) -> Option<Transition> {
        let slow = r.latency >= self.policy.slow_call_duration;
        let bad = r.failed || slow;
        self.counts.calls += 1;
        self.counts.failed += u64::from(r.failed);
        self.counts.slow += u64::from(slow);
        match (self.state, kind) {
            (BreakerState::Closed, CallKind::Normal) => {
                self.stats.record(self.origin, now, r.failed, slow);
                // The ratios can only rise on a bad call: judge only then.
                if bad && self.should_trip(now) {
                    return self.open(now);
                }
                None
            }
            (BreakerState::HalfOpen, CallKind::Trial) => {
                if bad {
                    self.open(now)
                } else {
                    self.trials_ok += 1;
                    if self.trials_ok >= self.policy.half_open_calls {
                        self.trips_in_a_row = 0;
                        self.stats.reset();
                        self.set(BreakerState::Closed, now)
                    } else {
                        None
                    }
                }
            }
            // A late result from an earlier state (a normal call finishing while open, a
            // trial finishing after the breaker reopened): it says nothing about now.
            _ => None,
        }
    }

    /// A call admitted as `kind` was abandoned before it produced a result.
    pub fn on_cancel(&mut self, kind: CallKind) {
        if kind == CallKind::Trial && self.state == BreakerState::HalfOpen {
            self.trials_issued = self.trials_issued.saturating_sub(1);
        }
    }

    /// Force the breaker open now (operator command or an external signal).
    pub fn force_open(&mut self, now: Instant) -> Option<Transition> {
        self.open(now)
    }

    fn should_trip(&self, now: Instant) -> bool {
        let (calls, failed, slow) = self.stats.totals(self.origin, now);
        if calls < self.policy.min_calls.max(1) {
            return false;
        }
        let calls = f64::from(calls);
        f64::from(failed) / calls >= self.policy.failure_ratio
            || f64::from(slow) / calls >= self.policy.slow_call_ratio
    }

    fn open(&mut self, now: Instant) -> Option<Transition> {
        let d = self.backoff.delay(self.trips_in_a_row, &mut self.rng);
        self.trips_in_a_row = self.trips_in_a_row.saturating_add(1);
        self.open_until = now + d;
        self.stats.reset();
        self.set(BreakerState::Open, now)
    }

    fn set(&mut self, to: BreakerState, now: Instant) -> Option<Transition> {
        let from = self.state;
        self.state = to;
        if from != to {
            match to {
                BreakerState::Open => self.counts.opened += 1,
                BreakerState::HalfOpen => self.counts.half_opened += 1,
                BreakerState::Closed => self.counts.closed += 1,
            }
        }
        (from != to).then_some(Transition { from, to, at: now })
    }
}

/// Counters of a [`Breaker`], for `/status` and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BreakerCounts {
    /// Calls whose result was recorded.
    pub calls: u64,
    /// Of which failed.
    pub failed: u64,
    /// Of which slow.
    pub slow: u64,
    /// Calls refused because the breaker was open.
    pub rejected: u64,
    /// Transitions into open.
    pub opened: u64,
    /// Transitions into half-open.
    pub half_opened: u64,
    /// Transitions into closed.
    pub closed: u64,
}

/// A `/status` view of a breaker.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// Current state.
    pub state: BreakerState,
    /// Calls / failed / slow in the current window.
    pub window_calls: u32,
    /// Failed calls in the window.
    pub window_failed: u32,
    /// Slow calls in the window.
    pub window_slow: u32,
    /// Lifetime counters.
    pub counts: BreakerCounts,
}

/// A thread-safe breaker for one route or one upstream member.
#[derive(Debug)]
pub struct Breaker {
    machine: Mutex<BreakerMachine>,
    /// Mirror of the machine's state, written only under the lock.
    state: AtomicU8,
    /// Mirror of the end of the open period (nanoseconds after `origin`), written only
    /// under the lock: while open, refusals need no lock at all.
    open_until_ns: AtomicU64,
    origin: Instant,
    /// Refusals made on the lock-free path (added to the machine's count).
    rejected_fast: AtomicU64,
}

/// Permission to make one call through a [`Breaker`]. Report its end with
/// [`BreakerPermit::record`]; dropping it unrecorded counts as a cancelled call.
#[derive(Debug)]
#[must_use = "record the call's result, or drop it to cancel"]
pub struct BreakerPermit {
    breaker: Arc<Breaker>,
    kind: CallKind,
    started: Instant,
    done: bool,
}

impl BreakerPermit {
    /// When the call was admitted.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Whether this is a half-open trial call.
    pub fn kind(&self) -> CallKind {
        self.kind
    }

    /// Record the call's end at `now`; latency is measured from admission.
    pub fn record(mut self, now: Instant, failed: bool) -> Option<Transition> {
        self.done = true;
        let latency = now.saturating_duration_since(self.started);
        self.breaker
            .on_result(now, self.kind, CallResult { failed, latency })
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.done && self.kind == CallKind::Trial {
            self.breaker.machine.lock().on_cancel(self.kind);
        }
    }
}

impl Breaker {
    /// A closed breaker whose jitter is seeded from `seed` (use distinct seeds per member so
    /// breakers that tripped together do not retry together).
    pub fn new(policy: BreakerPolicy, seed: u64) -> Arc<Breaker> {
        let now = Instant::now();
        Arc::new(Breaker {
            machine: Mutex::new(BreakerMachine::new(policy, now, seed)),
            state: AtomicU8::new(BreakerState::Closed.to_u8()),
            open_until_ns: AtomicU64::new(0),
            origin: now,
            rejected_fast: AtomicU64::new(0),
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> BreakerPolicy {
        *self.machine.lock().policy()
    }

    /// Current state, lock-free.
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Ask to make a call at `now`. Closed: one atomic load. Open before its end: two
    /// atomic loads and a counter. Otherwise (half-open, or the open period just ended):
    /// the breaker's lock. `Err(retry_after)` when refused.
    pub fn acquire(self: &Arc<Self>, now: Instant) -> Result<BreakerPermit, Duration> {
        let state = self.state.load(Ordering::Acquire);
        if state == BreakerState::Closed.to_u8() {
            return Ok(self.permit(CallKind::Normal, now));
        }
        if state == BreakerState::Open.to_u8() {
            let now_ns = nanos_since(self.origin, now);
            let until = self.open_until_ns.load(Ordering::Acquire);
            if now_ns < until {
                self.rejected_fast.fetch_add(1, Ordering::Relaxed);
                return Err(Duration::from_nanos(until - now_ns));
            }
        }
        let (r, t) = {
            let mut m = self.machine.lock();
            let out = m.try_acquire(now);
            self.mirror(&m);
            out
        };
        log(t);
        r.map(|kind| self.permit(kind, now))
    }

    /// Force the breaker open (operator command).
    pub fn force_open(&self, now: Instant) {
        let t = {
            let mut m = self.machine.lock();
            let t = m.force_open(now);
            self.mirror(&m);
            t
        };
        log(t);
    }

    /// Lifetime counters.
    pub fn counts(&self) -> BreakerCounts {
        let mut c = self.machine.lock().counts();
        c.rejected += self.rejected_fast.load(Ordering::Relaxed);
        c
    }

    /// Copy the machine's state (and open period) to the lock-free mirrors. Called under
    /// the machine's lock only, so mirrors never go back in time.
    fn mirror(&self, m: &BreakerMachine) {
        if let Some(until) = m.poll_timeout() {
            self.open_until_ns
                .store(nanos_since(self.origin, until), Ordering::Release);
        }
        self.state.store(m.state().to_u8(), Ordering::Release);
    }

    /// State, window and counters for `/status`.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let m = self.machine.lock();
        let (c, f, s) = m.window_totals(now);
        BreakerSnapshot {
            state: m.state(),
            window_calls: c,
            window_failed: f,
            window_slow: s,
            counts: BreakerCounts {
                rejected: m.counts().rejected + self.rejected_fast.load(Ordering::Relaxed),
                ..m.counts()
            },
        }
    }

    fn permit(self: &Arc<Self>, kind: CallKind, now: Instant) -> BreakerPermit {
        BreakerPermit {
            breaker: Arc::clone(self),
            kind,
            started: now,
            done: false,
        }
    }

    fn on_result(&self, now: Instant, kind: CallKind, r: CallResult) -> Option<Transition> {
        let t = {
            let mut m = self.machine.lock();
            let t = m.on_result(now, kind, r);
            self.mirror(&m);
            t
        };
        log(t);
        t
    }
}

fn nanos_since(origin: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

fn log(t: Option<Transition>) {
    if let Some(t) = t {
        tracing::info!(
            from = t.from.as_str(),
            to = t.to.as_str(),
            "circuit breaker transition"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            window: Window::Count(10),
            min_calls: 5,
            failure_ratio: 0.5,
            slow_call_ratio: 0.8,
            slow_call_duration: ms(100),
            open_for: ms(1000),
            open_max: ms(8000),
            half_open_calls: 2,
        }
    }

    fn call(
        m: &mut BreakerMachine,
        now: Instant,
        failed: bool,
        latency: u64,
    ) -> Option<Transition> {
        let (r, _) = m.try_acquire(now);
        let kind = r.expect("admitted");
        m.on_result(
            now,
            kind,
            CallResult {
                failed,
                latency: ms(latency),
            },
        )
    }

    #[test]
    fn trips_on_failure_ratio_only_after_min_calls() {
        let t0 = Instant::now();
        let mut m = BreakerMachine::new(policy(), t0, 1);
        for _ in 0..4 {
            assert!(call(&mut m, t0, true, 1).is_none());
        }
        let t = call(&mut m, t0, true, 1).expect("5th failure trips");
        assert_eq!((t.from, t.to), (BreakerState::Closed, BreakerState::Open));
        let (r, _) = m.try_acquire(t0 + ms(10));
        let retry = r.unwrap_err();
        assert!(retry >= ms(490) && retry <= ms(990), "{retry:?}");
    }

    #[test]
    fn successes_keep_it_closed() {
        let t0 = Instant::now();
        let mut m = BreakerMachine::new(policy(), t0, 1);
        for i in 0..100 {
            // 30% failures, spread out: below the ratio in every window.
            assert!(call(&mut m, t0, matches!(i % 10, 3 | 6 | 9), 1).is_none());
        }
        assert_eq!(m.state(), BreakerState::Closed);
    }

    #[test]
    fn trips_on_slow_calls() {
        let t0 = Instant::now();
        let mut m = BreakerMachine::new(policy(), t0, 1);
        for _ in 0..4 {
            call(&mut m, t0, false, 150);
        }
        assert_eq!(
            call(&mut m, t0, false, 150).map(|t| t.to),
            Some(BreakerState::Open)
        );
    }

    #[test]
    fn half_open_trials_close_or_reopen_longer() {
        let t0 = Instant::now();
        let mut m = BreakerMachine::new(policy(), t0, 3);
        for _ in 0..5 {
            call(&mut m, t0, true, 1);
        }
        let first_open = m.poll_timeout().unwrap() - t0;
        // Half-open: two trials admitted, a third refused.
        let t1 = t0 + ms(1000);
        let (a, tr) = m.try_acquire(t1);
        assert_eq!(tr.map(|t| t.to), Some(BreakerState::HalfOpen));
        assert_eq!(a, Ok(CallKind::Trial));
        let (b, _) = m.try_acquire(t1);
        assert_eq!(b, Ok(CallKind::Trial));
        assert!(m.try_acquire(t1).0.is_err());
        // One trial fails: reopen, for longer (2nd trip: ceiling 2 s).
        let t = m.on_result(
            t1,
            CallKind::Trial,
            CallResult {
                failed: true,
                latency: ms(1),
            },
        );
        assert_eq!(t.map(|t| t.to), Some(BreakerState::Open));
        let second_open = m.poll_timeout().unwrap() - t1;
        assert!(
            second_open >= ms(1000) && second_open <= ms(2000),
            "{first_open:?} {second_open:?}"
        );
        // The other trial's late result changes nothing.
        assert!(
            m.on_result(
                t1,
                CallKind::Trial,
                CallResult {
                    failed: false,
                    latency: ms(1)
                }
            )
            .is_none()
        );
        // Next half-open: both trials succeed -> closed, and the growth resets.
        let t2 = t1 + ms(2000);
        let k1 = m.try_acquire(t2).0.unwrap();
        let k2 = m.try_acquire(t2).0.unwrap();
        assert!(
            m.on_result(
                t2,
                k1,
                CallResult {
                    failed: false,
                    latency: ms(1)
                }
            )
            .is_none()
        );
        let t = m.on_result(
            t2,
            k2,
            CallResult {
                failed: false,
                latency: ms(1),
            },
        );
        assert_eq!(t.map(|t| t.to), Some(BreakerState::Closed));
        assert_eq!(m.window_totals(t2), (0, 0, 0));
        let c = m.counts();
        assert_eq!((c.opened, c.half_opened, c.closed), (2, 2, 1));
        assert_eq!(c.rejected, 1);
    }

    #[test]
    fn cancelled_trial_frees_its_slot() {
        let t0 = Instant::now();
        let mut m = BreakerMachine::new(
            BreakerPolicy {
                half_open_calls: 1,
                ..policy()
            },
            t0,
            1,
        );
        m.force_open(t0);
        let t1 = t0 + ms(1000);
        let k = m.try_acquire(t1).0.unwrap();
        assert!(m.try_acquire(t1).0.is_err());
        m.on_cancel(k);
        assert!(m.try_acquire(t1).0.is_ok());
    }

    #[test]
    fn time_window_forgets_old_failures() {
        let t0 = Instant::now();
        let mut m = BreakerMachine::new(
            BreakerPolicy {
                window: Window::Time(Duration::from_secs(10)),
                ..policy()
            },
            t0,
            1,
        );
        for _ in 0..4 {
            call(&mut m, t0, true, 1);
        }
        assert_eq!(m.window_totals(t0), (4, 4, 0));
        // 11 s later the four failures are gone: four more do not reach min_calls.
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(m.window_totals(t1), (0, 0, 0));
        for _ in 0..4 {
            assert!(call(&mut m, t1, true, 1).is_none());
        }
        assert_eq!(
            call(&mut m, t1, true, 1).map(|t| t.to),
            Some(BreakerState::Open)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shared_breaker_mirrors_state_and_releases_dropped_trials() {
        let b = Breaker::new(
            BreakerPolicy {
                half_open_calls: 1,
                ..policy()
            },
            9,
        );
        let t0 = Instant::now();
        for _ in 0..5 {
            let p = b.acquire(t0).unwrap();
            p.record(t0, true);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.acquire(t0).is_err());
        let t1 = t0 + ms(1000);
        let trial = b.acquire(t1).unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.acquire(t1).is_err());
        drop(trial);
        let trial = b.acquire(t1).unwrap();
        assert!(trial.record(t1, false).is_some());
        assert_eq!(b.state(), BreakerState::Closed);
        let s = b.snapshot(t1);
        assert_eq!(
            (s.counts.calls, s.counts.failed, s.counts.rejected),
            (6, 5, 2)
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Call { failed: bool, latency_ms: u64 },
        StartTrial,
        FinishTrial { failed: bool },
        CancelTrial,
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<bool>(), 0u64..300).prop_map(|(failed, latency_ms)| Op::Call { failed, latency_ms }),
            1 => Just(Op::StartTrial),
            1 => any::<bool>().prop_map(|failed| Op::FinishTrial { failed }),
            1 => Just(Op::CancelTrial),
            2 => (0u64..3000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Only legal transitions happen; open never admits before its end; open periods
        /// stay within [open_for / 2, open_max]; half-open never has more than
        /// half_open_calls trials out.
        #[test]
        fn state_sequence_is_legal(ops in proptest::collection::vec(op(), 1..300), seed: u64) {
            let p = policy();
            let mut now = Instant::now();
            let mut m = BreakerMachine::new(p, now, seed);
            let mut trials: Vec<CallKind> = Vec::new();
            let check = |t: Option<Transition>, m: &BreakerMachine, now: Instant| -> Result<(), TestCaseError> {
                if let Some(t) = t {
                    let legal = matches!(
                        (t.from, t.to),
                        (BreakerState::Closed, BreakerState::Open)
                            | (BreakerState::Open, BreakerState::HalfOpen)
                            | (BreakerState::HalfOpen, BreakerState::Open)
                            | (BreakerState::HalfOpen, BreakerState::Closed)
                    );
                    prop_assert!(legal, "illegal {t:?}");
                    if t.to == BreakerState::Open {
                        let d = m.poll_timeout().unwrap() - now;
                        prop_assert!(d >= p.open_for / 2 && d <= p.open_max, "open for {d:?}");
                    }
                }
                Ok(())
            };
            for op in ops {
                match op {
                    Op::Call { failed, latency_ms } => {
                        let before = m.state();
                        let open_until = m.poll_timeout();
                        let (r, t) = m.try_acquire(now);
                        check(t, &m, now)?;
                        if before == BreakerState::Open && open_until.is_some_and(|u| now < u) {
                            prop_assert!(r.is_err(), "open breaker admitted a call");
                        }
                        if let Ok(k) = r {
                            let t = m.on_result(now, k, CallResult { failed, latency: ms(latency_ms) });
                            check(t, &m, now)?;
                        }
                    }
                    Op::StartTrial => {
                        let (r, t) = m.try_acquire(now);
                        check(t, &m, now)?;
                        if let Ok(k) = r {
                            trials.push(k);
                        }
                    }
                    Op::FinishTrial { failed } => {
                        if let Some(k) = trials.pop() {
                            let t = m.on_result(now, k, CallResult { failed, latency: ms(1) });
                            check(t, &m, now)?;
                        }
                    }
                    Op::CancelTrial => {
                        if let Some(k) = trials.pop() {
                            m.on_cancel(k);
                        }
                    }
                    Op::Advance(d) => now += ms(d),
                }
                if m.state() == BreakerState::HalfOpen {
                    prop_assert!(m.trials_issued <= p.half_open_calls);
                }
            }
        }
    }
}
