//! Live load of one member: in-flight count and a peak-EWMA latency estimate.
//!
//! One [`Load`] per member is shared (through an `Arc`) by every worker thread and by every
//! [`Picker`](crate::Picker) snapshot built over that member, so it survives picker rebuilds.
//! It is made of atomics only: the hot path never takes a lock.
//!
//! ## Peak EWMA
//!
//! The latency estimate follows Finagle's and linkerd's "peak EWMA":
//!
//! * a sample **slower** than the current estimate replaces it at once (the estimate jumps to
//!   the peak, so a member that suddenly slows down is avoided after its first slow answer);
//! * a **faster** sample is blended in with weight `1 - e^(-dt/tau)`, where `dt` is the time
//!   since the previous update and `tau` is [`DECAY`] (10 s): many quick answers pull the
//!   estimate down over a few seconds, not at once;
//! * with no samples at all the estimate decays towards zero by the same factor, so a member
//!   that was slow long ago gets tried again.
//!
//! The estimate and the time of its last update are packed into one `AtomicU64` (an `f32` of
//! nanoseconds and a wrapping `u32` of milliseconds since a process-wide epoch) so that an
//! update is a single compare-and-swap and readers never see a torn pair. The epoch is shared
//! so that a pick converts its `now` to milliseconds once, not once per candidate (the
//! `Instant` subtraction is the most expensive step of computing a cost).
//!
//! ## Waiting age
//!
//! Peak EWMA only learns from answers: a member that suddenly takes 400 ms keeps its old, low
//! estimate until its first slow answer comes back, and until then it keeps being picked (at
//! 200 req/s, ~60 requests in those 400 ms). So the caller also reports when each request
//! starts waiting for its answer ([`Load::waiting`]) and when the answer's head arrives
//! ([`Load::answered`]); the **average age of the requests still waiting** then stands in for
//! the estimate whenever it is larger. A member whose requests are older than its estimate
//! looks slow within milliseconds, before anything completes. Only time-to-answer counts
//! (like the EWMA), so long streaming bodies do not make a member look slow.
//!
//! The count and the sum of start times are two atomics; writers update them in an order
//! (sum before count on start, count before sum on answer) that can only make a racing
//! reader *underestimate* the age, so a healthy member never looks slow by accident.
//!
//! ## Cost
//!
//! [`Load::cost`] is `max(ewma, waiting age) x (inflight + 1)` in nanoseconds, with one
//! exception taken from
//! Finagle: a member with **no latency information** (new, [`reset`](Load::reset), or idle for
//! so long that the estimate decayed to zero) that already has requests in flight costs
//! [`PENALTY`] `+ inflight`. Without it, a fresh member would look free (cost 0) and absorb
//! every request until its first answer came back; with it, it gets one request at a time
//! until it has answered once, which also limits the damage if it is black-holed.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// Time constant of the EWMA: after `DECAY` without samples the estimate has fallen to
/// `1/e` (37%) of its value; a sample taken `DECAY` after the previous one moves the estimate
/// 63% of the way towards it.
pub const DECAY: Duration = Duration::from_secs(10);

/// Cost (in nanoseconds) of a member that has requests in flight but no latency information
/// yet. About 11.6 days: larger than any real estimate times any real in-flight count.
pub const PENALTY: f64 = 1e15;

/// Live load of one member, shared by all worker threads (atomics only; no locks).
pub struct Load {
    inflight: AtomicU32,
    /// `(f32 estimate in ns).to_bits() << 32 | (ms since EPOCH, wrapping)`.
    rtt: AtomicU64,
    /// Requests waiting for their answer's head.
    waiting: AtomicU32,
    /// Sum of their start times (microseconds since EPOCH).
    waiting_sum: AtomicU64,
}

/// Reference point of every `Load`'s millisecond timestamps: a year before the first use, so
/// that no `now` a caller passes (even one taken a little before the first `Load` existed)
/// falls before it. Only differences of timestamps matter, and those wrap correctly.
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        [365 * 86_400, 86_400, 3_600, 60, 1]
            .into_iter()
            .find_map(|s| now.checked_sub(Duration::from_secs(s)))
            .unwrap_or(now)
    })
}

/// `now` as microseconds since [`EPOCH`] (not wrapping: 2^64 us is 584,000 years).
pub(crate) fn stamp_us(now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch()).as_micros()).unwrap_or(u64::MAX)
}

/// Both time stamps of one `now`, computed once per pick.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamps {
    /// Wrapping milliseconds, for the EWMA.
    pub ms: u32,
    /// Microseconds, for the waiting age.
    pub us: u64,
}

impl Stamps {
    pub(crate) fn of(now: Instant) -> Stamps {
        let us = stamp_us(now);
        #[allow(
            clippy::cast_possible_truncation,
            reason = "deliberately wrapping: only differences of millisecond stamps are used"
        )]
        let ms = (us / 1000) as u32;
        Stamps { ms, us }
    }
}

/// `now` as wrapping milliseconds since [`EPOCH`] (wraps every 49 days; only differences of
/// stamps are used, with wrapping arithmetic).
pub(crate) fn stamp(now: Instant) -> u32 {
    let ms = now.saturating_duration_since(epoch()).as_millis();
    #[allow(
        clippy::cast_possible_truncation,
        reason = "deliberately wrapping: only differences of stamps are used"
    )]
    let stamp = ms as u32;
    stamp
}

impl fmt::Debug for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (est, _) = unpack(self.rtt.load(Ordering::Relaxed));
        f.debug_struct("Load")
            .field("inflight", &self.inflight())
            .field("ewma_ns_at_last_update", &est)
            .finish()
    }
}

impl Default for Load {
    fn default() -> Self {
        Load::new()
    }
}

fn pack(est_ns: f32, stamp_ms: u32) -> u64 {
    (u64::from(est_ns.to_bits()) << 32) | u64::from(stamp_ms)
}

fn unpack(v: u64) -> (f32, u32) {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "splitting a packed u64 into its two u32 halves"
    )]
    let (hi, lo) = ((v >> 32) as u32, v as u32);
    (f32::from_bits(hi), lo)
}

impl Load {
    /// A member with nothing in flight and no latency information.
    pub const fn new() -> Load {
        Load {
            inflight: AtomicU32::new(0),
            rtt: AtomicU64::new(0),
            waiting: AtomicU32::new(0),
            waiting_sum: AtomicU64::new(0),
        }
    }

    /// A request sent at `now` starts waiting for its answer. Returns the token to pass to
    /// [`Load::answered`] when the answer's head arrives (or the request fails).
    pub fn waiting(&self, now: Instant) -> u64 {
        let t = stamp_us(now);
        // Sum first, count second: a reader in between sees a smaller age, never a larger.
        self.waiting_sum.fetch_add(t, Ordering::Release);
        self.waiting.fetch_add(1, Ordering::Release);
        t
    }

    /// The request that started waiting at token `t` got its answer (or failed).
    pub fn answered(&self, t: u64) {
        // Count first, sum second (see `waiting`). A count already at zero means a caller
        // bug; the sum is then left alone rather than corrupted.
        if self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1))
            .is_ok()
        {
            let _ = self
                .waiting_sum
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                    Some(v.saturating_sub(t))
                });
        }
    }

    /// Requests waiting for their answer.
    pub fn waiting_count(&self) -> u32 {
        self.waiting.load(Ordering::Acquire)
    }

    /// Average age of the requests waiting for their answer at `now_us`, in nanoseconds.
    fn waiting_age_ns(&self, now_us: u64) -> f64 {
        let n = self.waiting.load(Ordering::Acquire);
        if n == 0 {
            return 0.0;
        }
        let sum = self.waiting_sum.load(Ordering::Acquire);
        let avg_start = sum / u64::from(n);
        now_us.saturating_sub(avg_start) as f64 * 1e3
    }

    /// A request was sent to the member: in-flight += 1.
    pub fn begin(&self) {
        self.inflight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request to the member finished: in-flight -= 1 (never below zero).
    pub fn end(&self) {
        // A failed update means the count was already 0: a caller bug, but not worth a panic.
        let _ = self
            .inflight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// [`begin`](Load::begin) now and [`end`](Load::end) when the returned guard is dropped,
    /// so that every exit path (errors, cancellation) ends what it began.
    pub fn track(self: &Arc<Self>) -> InFlight {
        self.begin();
        InFlight { load: self.clone() }
    }

    /// Requests in flight.
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Decay factor `e^(-dt/tau)` between a stored stamp and `now`'s stamp.
    fn decay(stamp: u32, now_stamp: u32) -> f64 {
        let elapsed = now_stamp.wrapping_sub(stamp);
        // Zero (common under load: many updates per millisecond), or a "negative" difference
        // (another thread updated with a later `now` than ours): no time passed.
        if elapsed == 0 || elapsed > u32::MAX / 2 {
            return 1.0;
        }
        (-f64::from(elapsed) / (DECAY.as_secs_f64() * 1000.0)).exp()
    }

    /// Feed one response time observed at `now` (peak-EWMA update, see the module docs).
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let sample = rtt.as_nanos() as f64;
        let now_stamp = stamp(now);
        let mut cur = self.rtt.load(Ordering::Relaxed);
        loop {
            let (est, stamp) = unpack(cur);
            let w = Load::decay(stamp, now_stamp);
            // max(sample, blend): a slower sample is taken as is (the peak), a faster one is
            // blended in by how much time passed since the last update.
            let next = (f64::from(est) * w + sample * (1.0 - w)).max(sample);
            #[allow(
                clippy::cast_possible_truncation,
                reason = "f32 keeps 24 bits of precision: plenty for a latency estimate"
            )]
            let next = pack(next as f32, now_stamp);
            match self
                .rtt
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The estimate in nanoseconds at the time whose [`stamp`] is `now_stamp`.
    fn ewma_ns(&self, now_stamp: u32) -> f64 {
        let (est, stamp) = unpack(self.rtt.load(Ordering::Relaxed));
        f64::from(est) * Load::decay(stamp, now_stamp)
    }

    /// The latency estimate at `now` (zero when nothing is known).
    pub fn ewma(&self, now: Instant) -> Duration {
        Duration::try_from_secs_f64(self.ewma_ns(stamp(now)) / 1e9).unwrap_or(Duration::MAX)
    }

    /// The P2C cost at `now`: `ewma x (inflight + 1)` in nanoseconds, or [`PENALTY`]` +
    /// inflight` for a busy member without latency information (see the module docs).
    pub fn cost(&self, now: Instant) -> f64 {
        self.cost_at(Stamps::of(now))
    }

    /// [`Load::cost`] at precomputed [`Stamps`] (one conversion per pick).
    pub(crate) fn cost_at(&self, now: Stamps) -> f64 {
        let inflight = f64::from(self.inflight());
        let est = self.ewma_ns(now.ms).max(self.waiting_age_ns(now.us));
        if est <= 0.0 && inflight > 0.0 {
            PENALTY + inflight
        } else {
            est * (inflight + 1.0)
        }
    }

    /// Forget the latency history (the member was re-admitted: its old latency says nothing
    /// about the new process). The in-flight count is kept: those requests are still running.
    pub fn reset(&self) {
        self.rtt.store(0, Ordering::Relaxed);
    }
}

/// A request in flight on a member; ends it when dropped. See [`Load::track`].
#[derive(Debug)]
#[must_use = "dropping the guard ends the request at once"]
pub struct InFlight {
    load: Arc<Load>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.load.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_requests_make_a_member_look_slow_before_any_answer() {
        let t0 = Instant::now();
        let slow = Load::new();
        let fast = Load::new();
        for l in [&slow, &fast] {
            l.observe(Duration::from_millis(5), t0);
        }
        // One request each, sent at t0; the slow member's is still waiting 100 ms later,
        // the fast member's was answered.
        slow.begin();
        let w = slow.waiting(t0);
        fast.begin();
        let f = fast.waiting(t0);
        fast.answered(f);
        let later = t0 + Duration::from_millis(100);
        assert!(
            slow.cost(later) > 10.0 * fast.cost(later),
            "slow {} vs fast {}",
            slow.cost(later),
            fast.cost(later)
        );
        // The age stands in for the estimate: about 100 ms x (1 + 1).
        let c = slow.cost(later);
        assert!((1.9e8..2.2e8).contains(&c), "{c}");
        // Once answered, only the EWMA (5 ms) counts again.
        slow.answered(w);
        slow.end();
        assert!(slow.cost(later) < 6e6, "{}", slow.cost(later));
    }

    #[test]
    fn unmatched_answers_do_not_corrupt_the_waiting_age() {
        let t0 = Instant::now();
        let l = Load::new();
        l.answered(12345);
        assert_eq!(l.waiting_count(), 0);
        let w = l.waiting(t0 + Duration::from_secs(1));
        assert_eq!(l.waiting_count(), 1);
        assert!(l.waiting_age_ns(stamp_us(t0 + Duration::from_secs(1))) < 1e3);
        l.answered(w);
        assert_eq!(
            (l.waiting_count(), l.waiting_sum.load(Ordering::Relaxed)),
            (0, 0)
        );
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn close(a: Duration, b: Duration) -> bool {
        let (a, b) = (a.as_secs_f64(), b.as_secs_f64());
        (a - b).abs() <= 1e-6 + b.abs() * 1e-5
    }

    #[test]
    fn inflight_counts_and_saturates() {
        let l = Arc::new(Load::new());
        l.end();
        assert_eq!(l.inflight(), 0);
        l.begin();
        l.begin();
        {
            let _g = l.track();
            assert_eq!(l.inflight(), 3);
        }
        assert_eq!(l.inflight(), 2);
        l.end();
        l.end();
        l.end();
        assert_eq!(l.inflight(), 0);
    }

    #[test]
    fn peak_jumps_up_at_once_and_comes_down_slowly() {
        let l = Load::new();
        let t0 = Instant::now();
        l.observe(ms(10), t0);
        assert!(close(l.ewma(t0), ms(10)));
        // A slow answer: the estimate jumps to it.
        l.observe(ms(100), t0 + ms(1));
        assert!(close(l.ewma(t0 + ms(1)), ms(100)));
        // A fast answer 1 ms later barely moves it.
        l.observe(ms(10), t0 + ms(2));
        let e = l.ewma(t0 + ms(2));
        assert!(e > ms(99), "{e:?}");
        // A fast answer one time constant later moves it 63% of the way.
        let t = t0 + ms(2) + DECAY;
        l.observe(ms(10), t);
        let expect = 10.0 + (e.as_secs_f64() * 1000.0 - 10.0) * (-1.0f64).exp();
        let got = l.ewma(t).as_secs_f64() * 1000.0;
        assert!((got - expect).abs() < 0.01, "{got} vs {expect}");
    }

    #[test]
    fn estimate_decays_without_samples() {
        let l = Load::new();
        let t0 = Instant::now();
        l.observe(ms(100), t0);
        let later = l.ewma(t0 + DECAY);
        assert!(close(later, ms(100).mul_f64((-1.0f64).exp())), "{later:?}");
        assert!(l.ewma(t0 + DECAY * 200) < Duration::from_nanos(1));
        // A `now` earlier than the last update does not decay anything.
        l.observe(ms(50), t0 + ms(500));
        let e = l.ewma(t0 + ms(100));
        assert!(e >= ms(50), "{e:?}");
    }

    #[test]
    fn cost_is_ewma_times_inflight_plus_one() {
        let l = Load::new();
        let t0 = Instant::now();
        assert_eq!(l.cost(t0), 0.0, "idle and unknown: free");
        l.begin();
        assert_eq!(l.cost(t0), PENALTY + 1.0, "busy and unknown: penalty");
        l.observe(ms(2), t0);
        let c = l.cost(t0);
        assert!((c - 2.0 * 2e6).abs() < 1.0, "{c}");
        l.reset();
        assert_eq!(l.ewma(t0), Duration::ZERO);
        assert_eq!(l.inflight(), 1, "reset keeps the in-flight count");
        assert_eq!(l.cost(t0), PENALTY + 1.0);
    }

    #[test]
    fn absurd_samples_do_not_panic() {
        let l = Load::new();
        let t0 = Instant::now();
        l.observe(Duration::MAX, t0);
        assert!(l.ewma(t0) > Duration::from_secs(1 << 60));
        assert!(l.cost(t0).is_finite());
        l.observe(Duration::ZERO, t0 + DECAY * 1000);
        assert_eq!(l.ewma(t0 + DECAY * 1000), Duration::ZERO);
    }

    #[test]
    fn concurrent_updates_are_not_lost() {
        let l = Arc::new(Load::new());
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let l = l.clone();
                s.spawn(move || {
                    for _ in 0..10_000 {
                        l.begin();
                        l.observe(ms(5), t0);
                        l.end();
                    }
                });
            }
        });
        assert_eq!(l.inflight(), 0);
        assert!(close(l.ewma(t0), ms(5)));
    }
}
