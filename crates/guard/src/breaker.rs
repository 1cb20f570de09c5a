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
//! for many threads: a lock-free state mirror makes `acquire` in the closed state a single
//! atomic load; recording an outcome takes the breaker's own (uncontended, ~20 ns) lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
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
        buckets: [Bucket; TIME_BUCKETS],
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
                buckets: [Bucket::default(); TIME_BUCKETS],
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
            Stats::Time { buckets, .. } => *buckets = [Bucket::default(); TIME_BUCKETS],
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
                (Err(self.policy.slow_call_duration.min(self.policy.open_for)), t)
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
        Arc::new(Breaker {
            machine: Mutex::new(BreakerMachine::new(policy, Instant::now(), seed)),
            state: AtomicU8::new(BreakerState::Closed.to_u8()),
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

    /// Ask to make a call at `now`. Closed: one atomic load, no lock. Open or half-open:
    /// the breaker's lock. `Err(retry_after)` when refused.
    pub fn acquire(self: &Arc<Self>, now: Instant) -> Result<BreakerPermit, Duration> {
        if self.state.load(Ordering::Acquire) == BreakerState::Closed.to_u8() {
            return Ok(self.permit(CallKind::Normal, now));
        }
        let (r, t) = {
            let mut m = self.machine.lock();
            let out = m.try_acquire(now);
            self.state.store(m.state().to_u8(), Ordering::Release);
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
            self.state.store(m.state().to_u8(), Ordering::Release);
            t
        };
        log(t);
    }

    /// Lifetime counters.
    pub fn counts(&self) -> BreakerCounts {
        self.machine.lock().counts()
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
            counts: m.counts(),
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
            self.state.store(m.state().to_u8(), Ordering::Release);
            t
        };
        log(t);
        t
    }
}

fn log(t: Option<Transition>) {
    if let Some(t) = t {
        tracing::info!(from = t.from.as_str(), to = t.to.as_str(), "circuit breaker transition");
    }
}
