//! Rate limiting: GCRA (the "generic cell rate algorithm", a token bucket kept as one
//! timestamp) through the `governor` crate, with bounded keyed state, optional queueing with
//! uniform pacing, optional warm-up, and the values for `Retry-After` and the IETF
//! `RateLimit`/`RateLimit-Policy` fields (draft-ietf-httpapi-ratelimit-headers-09).
//!
//! # The algorithm
//! Each key keeps a *theoretical arrival time* `TAT`. With emission interval `T = per / rate`
//! and tolerance `tau = (burst - 1) x T`, a request arriving at `now` conforms iff
//! `now >= TAT - tau`; it then sets `TAT = max(TAT, now) + T`. Over any window of length `w`
//! at most `burst + w / T` requests conform (tested as a property below).
//!
//! Three refinements are layered on governor's GCRA by counting in *cells*, with
//! [`CELLS_PER_REQUEST`] cells per request (so costs can be fractional requests):
//! * **queueing** (`max_wait > 0`): the bucket gets `Q = max_wait / T_cell` extra cells of
//!   depth; a request admitted into that extra depth is told to wait
//!   `(Q - remaining_cells) x T_cell` before going on. Because governor already advanced
//!   `TAT` for it, the waiting requests leave exactly `T` apart (uniform pacing), FIFO by
//!   arrival, and nobody waits longer than `max_wait`.
//! * **warm-up** (`warmup = period`): for `period` after [`RateLimiter::begin_warmup`] (called
//!   at construction), a request costs `ceil(CELLS / f(t))` cells with
//!   `f(t) = from + (1 - from) x t / period`, so both the sustained rate and the burst ramp
//!   linearly from `from x rate` to `rate`. A request never costs more than the full burst
//!   (a full bucket always admits one request), so the effective start of the ramp is
//!   `max(from, 1 / burst)`.
//! * **bounded keys**: keyed limiters keep their state in a fixed-size, set-associative
//!   table ([`BoundedStore`]); a new key evicts the entry of its set with the oldest `TAT`.
//!   An entry whose `TAT` is in the past is indistinguishable from a fresh key, so eviction
//!   loses nothing unless every entry of the set is still actively limited. Memory is fixed at construction: a flood of distinct keys cannot grow it.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{NotUntil, Quota};
use http::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::GuardError;
use crate::clock::{TokioClock, TokioInstant};

/// Cells per request: the resolution of warm-up costs and queue waits (1/64 of a request).
pub const CELLS_PER_REQUEST: u32 = 64;

/// Entries per set of a [`BoundedStore`].
pub const WAYS: usize = 8;

/// What a limiter counts requests by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// One bucket for everything that reaches this limiter.
    Global,
    /// One bucket per client address.
    ClientIp,
    /// One bucket per value of this request header (an API key, a tenant id). Requests
    /// without the header are counted per client address.
    Header(HeaderName),
}

/// Warm-up: after a cold start the allowed rate ramps linearly from `from x rate` to `rate`
/// over `period`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Warmup {
    /// How long the ramp lasts.
    pub period: Duration,
    /// The fraction of the rate allowed at the start, in (0, 1].
    pub from: f64,
}

/// A validated rate limit.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitPolicy {
    /// Name used in the `RateLimit` header fields (the route or listener name).
    pub name: String,
    /// Requests allowed per `per` (sustained).
    pub rate: u32,
    /// The period `rate` is counted over.
    pub per: Duration,
    /// Requests allowed back to back after a quiet period (>= 1).
    pub burst: u32,
    /// What requests are counted by.
    pub key: KeyKind,
    /// Most keys remembered at once (keyed limiters only).
    pub max_keys: usize,
    /// Longest a request may be held back to pace it instead of refusing it (0 = refuse).
    pub max_wait: Duration,
    /// Optional ramp after a cold start.
    pub warmup: Option<Warmup>,
}

impl RateLimitPolicy {
    /// `rate` requests per `per`, burst `rate`, global, refusing beyond it.
    pub fn new(name: impl Into<String>, rate: u32, per: Duration) -> Self {
        RateLimitPolicy {
            name: name.into(),
            rate,
            per,
            burst: rate.max(1),
            key: KeyKind::Global,
            max_keys: 16_384,
            max_wait: Duration::ZERO,
            warmup: None,
        }
    }

    /// The emission interval `T = per / rate`.
    pub fn emission_interval(&self) -> Duration {
        self.per / self.rate.max(1)
    }
}

/// What the limiter decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Go on now.
    Allow(RateInfo),
    /// Go on after waiting this long (queueing mode; never longer than `max_wait`).
    Delay(Duration, RateInfo),
    /// Refuse (429), telling the client when to come back.
    Reject(RateInfo),
}

impl RateDecision {
    /// The header values, whatever the decision.
    pub fn info(&self) -> &RateInfo {
        match self {
            RateDecision::Allow(i) | RateDecision::Delay(_, i) | RateDecision::Reject(i) => i,
        }
    }
}

/// The numbers behind `Retry-After` and the `RateLimit` fields. Plain integers: formatting
/// them is left to [`RateInfo::write_headers`], off the allocation-free path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RateInfo {
    /// `q`: requests allowed per window.
    pub limit: u32,
    /// `w`: the window in seconds (rounded up, at least 1).
    pub window_secs: u64,
    /// `r`: requests that could go through right now without waiting.
    pub remaining: u32,
    /// `t`: seconds until the full burst is available again (rounded up).
    pub reset_secs: u64,
    /// For refusals: how long until a retry would be admitted (0 when admitted).
    pub retry_after: Duration,
}

impl RateInfo {
    /// `Retry-After` in whole seconds, rounded up (at least 1 for a refusal).
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after).max(u64::from(!self.retry_after.is_zero()))
    }

    /// Write `RateLimit: "name";r=R;t=T` (draft-ietf-httpapi-ratelimit-headers-09) and, for
    /// refusals, `Retry-After`. Allocates the header values: call it on refusals, or on
    /// every response only where the operator asked for that.
    pub fn write_headers(&self, policy_name: &str, rejected: bool, headers: &mut HeaderMap) {
        let v = format!(
            "\"{}\";r={};t={}",
            policy_name, self.remaining, self.reset_secs
        );
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(HeaderName::from_static("ratelimit"), v);
        }
        if rejected {
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(self.retry_after_secs()),
            );
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

type Direct =
    governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, StateInformationMiddleware>;
type Keyed = governor::RateLimiter<u64, BoundedStore, TokioClock, StateInformationMiddleware>;

#[derive(Debug)]
enum Inner {
    Direct(Direct),
    Keyed(Keyed),
}

/// A thread-safe rate limiter. Share it behind an `Arc`; [`RateLimiter::check`] takes `&self`.
///
/// Cost per call (measured in `benches/guard_stack.rs`): one clock read, and for a global
/// limiter one compare-and-swap, for a keyed one a hash and an uncontended per-set lock.
/// No allocation.
#[derive(Debug)]
pub struct RateLimiter {
    policy: RateLimitPolicy,
    inner: Inner,
    /// Nanoseconds per cell.
    cell_ns: u64,
    /// Extra depth for queueing, in cells.
    queue_cells: u64,
    /// Cells of real burst (`burst x CELLS_PER_REQUEST`).
    burst_cells: u64,
    origin: Instant,
    /// Nanoseconds after `origin` when the current warm-up began.
    warm_start: AtomicU64,
    /// False while a warm-up ramp is running: the fast path reads only this.
    warm: AtomicBool,
    policy_header: HeaderValue,
    delayed: AtomicU64,
    rejected: AtomicU64,
    /// Shared with the keyed store (governor keeps the store private).
    evictions: Arc<AtomicU64>,
}

impl RateLimiter {
    /// Build a limiter; the warm-up, if any, starts now.
    pub fn new(policy: RateLimitPolicy) -> Result<RateLimiter, GuardError> {
        if policy.rate == 0 || policy.per.is_zero() || policy.burst == 0 {
            return Err(GuardError::Invalid(
                "rate, per and burst must all be above zero".into(),
            ));
        }
        let per_ns = u64::try_from(policy.per.as_nanos()).unwrap_or(u64::MAX);
        let cells_per_period = u64::from(policy.rate) * u64::from(CELLS_PER_REQUEST);
        let cell_ns = per_ns / cells_per_period;
        if cell_ns == 0 {
            return Err(GuardError::Invalid(format!(
                "rate {} per {:?} is too fast to count (at most {} per second)",
                policy.rate,
                policy.per,
                1_000_000_000 / u64::from(CELLS_PER_REQUEST)
            )));
        }
        let burst_cells = u64::from(policy.burst) * u64::from(CELLS_PER_REQUEST);
        let queue_cells = u64::try_from(policy.max_wait.as_nanos()).unwrap_or(u64::MAX) / cell_ns;
        let total = burst_cells.saturating_add(queue_cells);
        let total = u32::try_from(total)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| {
                GuardError::Invalid(format!(
                    "burst {} plus max_wait {:?} is too deep to count",
                    policy.burst, policy.max_wait
                ))
            })?;
        let quota = Quota::with_period(Duration::from_nanos(cell_ns))
            .ok_or_else(|| GuardError::Invalid("zero emission interval".into()))?
            .allow_burst(total);
        let evictions = Arc::new(AtomicU64::new(0));
        let inner = match policy.key {
            KeyKind::Global => Inner::Direct(
                governor::RateLimiter::direct_with_clock(quota, TokioClock)
                    .with_middleware::<StateInformationMiddleware>(),
            ),
            _ => Inner::Keyed(governor::RateLimiter::<
                u64,
                BoundedStore,
                TokioClock,
                StateInformationMiddleware,
            >::new(
                quota,
                BoundedStore::with_counter(policy.max_keys, evictions.clone()),
                TokioClock,
            )),
        };
        let policy_header = HeaderValue::from_str(&format!(
            "\"{}\";q={};w={}",
            policy.name,
            policy.rate,
            ceil_secs(policy.per).max(1)
        ))
        .map_err(|_| {
            GuardError::Invalid(format!(
                "name {:?} cannot appear in a header value",
                policy.name
            ))
        })?;
        let rl = RateLimiter {
            warm: AtomicBool::new(policy.warmup.is_none()),
            policy,
            inner,
            cell_ns,
            queue_cells,
            burst_cells,
            origin: Instant::now(),
            warm_start: AtomicU64::new(0),
            policy_header,
            delayed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            evictions,
        };
        Ok(rl)
    }

    /// The policy in force.
    pub fn policy(&self) -> &RateLimitPolicy {
        &self.policy
    }

    /// The precomputed `RateLimit-Policy` value: `"name";q=RATE;w=SECONDS`. Cloning it does
    /// not allocate.
    pub fn policy_header(&self) -> &HeaderValue {
        &self.policy_header
    }

    /// Start (or restart) the warm-up ramp now, e.g. when the pool behind this limiter comes
    /// back from having no healthy member. Does nothing without a warm-up policy.
    pub fn begin_warmup(&self) {
        if self.policy.warmup.is_some() {
            let ns = nanos(Instant::now().saturating_duration_since(self.origin));
            self.warm_start.store(ns, Ordering::Relaxed);
            self.warm.store(false, Ordering::Release);
        }
    }

    /// The key for a request from `client_ip` with `headers`, per this limiter's [`KeyKind`].
    /// A 64-bit hash: no allocation, and distinct kinds never collide by construction of the
    /// seeds.
    pub fn key(&self, client_ip: IpAddr, headers: &HeaderMap) -> u64 {
        match &self.policy.key {
            KeyKind::Global => 0,
            KeyKind::ClientIp => ip_key(client_ip),
            KeyKind::Header(name) => match headers.get(name) {
                Some(v) => xxhash_rust::xxh3::xxh3_64_with_seed(v.as_bytes(), 0x6865_6164),
                None => ip_key(client_ip),
            },
        }
    }

    /// Decide for one request counted under `key` (ignored by global limiters).
    pub fn check(&self, key: u64) -> RateDecision {
        let cost = self.cost();
        // `cost` <= burst cells <= the quota's depth, so InsufficientCapacity cannot happen;
        // treat it as a refusal rather than trusting that.
        let n = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        let outcome = match &self.inner {
            Inner::Direct(l) => l.check_n(n),
            Inner::Keyed(l) => l.check_key_n(&key, n),
        };
        match outcome {
            Ok(Ok(snap)) => self.admitted(&snap),
            Ok(Err(not_until)) => self.refused(&not_until),
            Err(_) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                RateDecision::Reject(RateInfo {
                    limit: self.policy.rate,
                    window_secs: ceil_secs(self.policy.per).max(1),
                    remaining: 0,
                    reset_secs: ceil_secs(self.policy.per),
                    retry_after: self.policy.per,
                })
            }
        }
    }

    /// Requests delayed (queued) so far.
    pub fn delayed_total(&self) -> u64 {
        self.delayed.load(Ordering::Relaxed)
    }

    /// Requests refused so far.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Keyed limiters: entries evicted to make room for a new key so far.
    pub fn evictions_total(&self) -> u64 {
        match &self.inner {
            Inner::Direct(_) => 0,
            Inner::Keyed(_) => self.evictions.load(Ordering::Relaxed),
        }
    }

    /// The current warm-up fraction in (0, 1] (1 when warm).
    pub fn warmup_fraction(&self) -> f64 {
        if self.warm.load(Ordering::Acquire) {
            return 1.0;
        }
        let Some(w) = self.policy.warmup else {
            return 1.0;
        };
        let now = nanos(Instant::now().saturating_duration_since(self.origin));
        let elapsed = now.saturating_sub(self.warm_start.load(Ordering::Relaxed));
        let period = nanos(w.period).max(1);
        if elapsed >= period {
            self.warm.store(true, Ordering::Release);
            return 1.0;
        }
        w.from + (1.0 - w.from) * (elapsed as f64 / period as f64)
    }

    /// Cells this request costs now.
    fn cost(&self) -> u32 {
        if self.warm.load(Ordering::Acquire) {
            return CELLS_PER_REQUEST;
        }
        let f = self.warmup_fraction();
        let cost = (f64::from(CELLS_PER_REQUEST) / f.max(1e-6)).ceil();
        // Never more than the whole burst: a full bucket always admits one request.
        let cap = self.burst_cells as f64;
        cost.min(cap).max(f64::from(CELLS_PER_REQUEST)) as u32
    }

    fn info(&self, remaining_cells: u64) -> RateInfo {
        let free = remaining_cells.saturating_sub(self.queue_cells);
        let remaining = u32::try_from(free / u64::from(CELLS_PER_REQUEST)).unwrap_or(u32::MAX);
        let total = self.burst_cells + self.queue_cells;
        let reset = Duration::from_nanos(total.saturating_sub(remaining_cells) * self.cell_ns);
        RateInfo {
            limit: self.policy.rate,
            window_secs: ceil_secs(self.policy.per).max(1),
            remaining: remaining.min(self.policy.burst),
            reset_secs: ceil_secs(reset),
            retry_after: Duration::ZERO,
        }
    }

    fn admitted(&self, snap: &StateSnapshot) -> RateDecision {
        let remaining = u64::from(snap.remaining_burst_capacity());
        let info = self.info(remaining);
        if remaining >= self.queue_cells {
            RateDecision::Allow(info)
        } else {
            self.delayed.fetch_add(1, Ordering::Relaxed);
            let wait = Duration::from_nanos((self.queue_cells - remaining) * self.cell_ns);
            RateDecision::Delay(wait.min(self.policy.max_wait), info)
        }
    }

    fn refused(&self, not_until: &NotUntil<TokioInstant>) -> RateDecision {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let wait = not_until.wait_time_from(TokioInstant(Instant::now()));
        let mut info = self.info(0);
        info.retry_after = wait.max(Duration::from_nanos(1));
        info.reset_secs = ceil_secs(wait + Duration::from_nanos(self.burst_cells * self.cell_ns));
        RateDecision::Reject(info)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn ip_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => xxhash_rust::xxh3::xxh3_64_with_seed(&v4.octets(), 4),
        IpAddr::V6(v6) => xxhash_rust::xxh3::xxh3_64_with_seed(&v6.octets(), 6),
    }
}

/// One set: (key, TAT nanoseconds) pairs; key 0 = empty.
type Set = [(u64, u64); WAYS];

/// A fixed-size, set-associative GCRA state table keyed by 64-bit hashes.
///
/// `capacity` entries are allocated up front in sets of [`WAYS`]; each set has its own small
/// lock (no global lock), held for a few comparisons. Key 0 is reserved as "empty" (a real
/// key of 0 is stored as 1: a 2^-64 collision, harmless).
#[derive(Debug)]
pub struct BoundedStore {
    sets: Box<[Mutex<Set>]>,
    mask: usize,
    evictions: Arc<AtomicU64>,
}

impl BoundedStore {
    /// A table holding at least `capacity` keys (rounded up to a power-of-two number of sets).
    pub fn new(capacity: usize) -> Self {
        Self::with_counter(capacity, Arc::new(AtomicU64::new(0)))
    }

    fn with_counter(capacity: usize, evictions: Arc<AtomicU64>) -> Self {
        let sets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        BoundedStore {
            sets: (0..sets).map(|_| Mutex::new([(0, 0); WAYS])).collect(),
            mask: sets - 1,
            evictions,
        }
    }

    /// Keys this table can hold.
    pub fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    /// Remembered keys replaced by a new key so far. Most are harmless (an entry whose TAT
    /// has passed is a fresh bucket anyway); a high rate next to refusals means `max_keys`
    /// is too small for the traffic.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

impl StateStore for BoundedStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let k = if *key == 0 { 1 } else { *key };
        // High bits pick the set: the low bits of a hash are as good, but keeping them for
        // nothing else makes the choice obvious.
        let set_idx = ((k >> 32) as usize ^ k as usize) & self.mask;
        let mut set = self.sets[set_idx].lock();
        let mut slot = None;
        let mut victim = 0;
        for (i, e) in set.iter().enumerate() {
            if e.0 == k {
                slot = Some(i);
                break;
            }
            // Prefer an empty entry, else the one with the oldest TAT (most replenished).
            if set[victim].0 != 0 && (e.0 == 0 || e.1 < set[victim].1) {
                victim = i;
            }
        }
        let (idx, prev) = match slot {
            Some(i) => (i, Some(Nanos::new(set[i].1))),
            None => (victim, None),
        };
        let (out, next) = f(prev)?;
        if slot.is_none() && set[idx].0 != 0 {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        set[idx] = (k, next.as_u64());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy(rate: u32, burst: u32) -> RateLimitPolicy {
        RateLimitPolicy {
            burst,
            ..RateLimitPolicy::new("api", rate, Duration::from_secs(1))
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_one_per_interval_with_retry_after() {
        let rl = RateLimiter::new(policy(10, 5)).unwrap();
        for i in 0..5 {
            let d = rl.check(0);
            assert!(matches!(d, RateDecision::Allow(_)), "{i}: {d:?}");
            assert_eq!(d.info().remaining, 4 - i);
        }
        let RateDecision::Reject(info) = rl.check(0) else {
            panic!("6th admitted");
        };
        assert!(
            info.retry_after > ms(99) && info.retry_after <= ms(100),
            "{info:?}"
        );
        assert_eq!(info.retry_after_secs(), 1);
        assert_eq!((info.limit, info.window_secs, info.remaining), (10, 1, 0));
        tokio::time::advance(ms(100)).await;
        assert!(matches!(rl.check(0), RateDecision::Allow(_)));
        assert!(matches!(rl.check(0), RateDecision::Reject(_)));
        assert_eq!(rl.rejected_total(), 2);
        assert_eq!(rl.policy_header().to_str().unwrap(), "\"api\";q=10;w=1");
    }

    #[tokio::test(start_paused = true)]
    async fn headers_are_formatted_per_the_draft() {
        let rl = RateLimiter::new(policy(10, 2)).unwrap();
        let _ = rl.check(0);
        let _ = rl.check(0);
        let d = rl.check(0);
        let mut h = HeaderMap::new();
        d.info().write_headers("api", true, &mut h);
        assert_eq!(h["ratelimit"], "\"api\";r=0;t=1");
        assert_eq!(h["retry-after"], "1");
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_independent() {
        let rl = RateLimiter::new(RateLimitPolicy {
            key: KeyKind::ClientIp,
            ..policy(1, 1)
        })
        .unwrap();
        let h = HeaderMap::new();
        let a = rl.key("10.0.0.1".parse().unwrap(), &h);
        let b = rl.key("10.0.0.2".parse().unwrap(), &h);
        assert_ne!(a, b);
        assert!(matches!(rl.check(a), RateDecision::Allow(_)));
        assert!(matches!(rl.check(a), RateDecision::Reject(_)));
        assert!(matches!(rl.check(b), RateDecision::Allow(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn header_key_falls_back_to_client_ip() {
        let rl = RateLimiter::new(RateLimitPolicy {
            key: KeyKind::Header(HeaderName::from_static("x-api-key")),
            ..policy(1, 1)
        })
        .unwrap();
        let ip = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        let none = rl.key(ip, &h);
        h.insert("x-api-key", HeaderValue::from_static("k1"));
        let k1 = rl.key(ip, &h);
        assert_ne!(none, k1);
        assert_eq!(none, ip_key(ip));
    }

    #[test]
    fn a_flood_of_keys_cannot_grow_the_table() {
        let store = BoundedStore::new(100);
        assert_eq!(store.capacity(), 128);
        for k in 1..100_000u64 {
            let k = xxhash_rust::xxh3::xxh3_64(&k.to_le_bytes());
            let _: Result<(), ()> = store.measure_and_replace(&k, |prev| {
                assert!(prev.is_none());
                Ok(((), Nanos::new(k % 1000)))
            });
        }
        assert!(store.evictions() > 99_000, "{}", store.evictions());
        // A key just used is still found.
        let k = 12_345u64;
        let _: Result<(), ()> =
            store.measure_and_replace(&k, |_| Ok(((), Nanos::new(u64::MAX / 2))));
        let _: Result<(), ()> = store.measure_and_replace(&k, |prev| {
            assert_eq!(prev, Some(Nanos::new(u64::MAX / 2)));
            Ok(((), Nanos::new(1)))
        });
    }

    #[tokio::test(start_paused = true)]
    async fn queueing_paces_uniformly_up_to_max_wait() {
        let rl = RateLimiter::new(RateLimitPolicy {
            max_wait: ms(500),
            ..policy(10, 1)
        })
        .unwrap();
        assert!(matches!(rl.check(0), RateDecision::Allow(_)));
        for i in 1..=5u64 {
            match rl.check(0) {
                RateDecision::Delay(d, info) => {
                    let want = ms(100 * i);
                    assert!(d <= want && d + ms(1) > want, "{i}: {d:?}");
                    assert_eq!(info.remaining, 0);
                }
                other => panic!("{i}: {other:?}"),
            }
        }
        assert!(matches!(rl.check(0), RateDecision::Reject(_)));
        assert_eq!(rl.delayed_total(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn warmup_ramps_the_rate() {
        let rl = RateLimiter::new(RateLimitPolicy {
            warmup: Some(Warmup {
                period: Duration::from_secs(10),
                from: 0.1,
            }),
            ..policy(100, 100)
        })
        .unwrap();
        let mut per_second = Vec::new();
        for _ in 0..12 {
            let mut n = 0;
            for _ in 0..1000 {
                if matches!(rl.check(0), RateDecision::Allow(_)) {
                    n += 1;
                }
                tokio::time::advance(ms(1)).await;
            }
            per_second.push(n);
        }
        // Second 0 admits about a tenth (plus the reduced burst), the last ones the full rate.
        assert!(per_second[0] < 30, "{per_second:?}");
        assert!(per_second[5] > per_second[1], "{per_second:?}");
        assert!((99..=101).contains(&per_second[11]), "{per_second:?}");
        assert_eq!(rl.warmup_fraction(), 1.0);
        rl.begin_warmup();
        assert!(rl.warmup_fraction() < 0.2);
    }

    proptest! {
        /// GCRA's guarantee: over any window of length w, at most burst + w / T requests are
        /// admitted (T the effective emission interval), whatever the arrival pattern.
        #[test]
        fn never_admits_more_than_rate_times_window_plus_burst(
            rate in 1u32..2000,
            burst in 1u32..50,
            gaps in proptest::collection::vec(0u64..5_000_000, 1..400),
            keyed: bool,
        ) {
            let rt = rt();
            let admitted: Vec<u64> = rt.block_on(async {
                let rl = RateLimiter::new(RateLimitPolicy {
                    key: if keyed { KeyKind::ClientIp } else { KeyKind::Global },
                    ..policy(rate, burst)
                }).unwrap();
                let t0 = Instant::now();
                let mut out = Vec::new();
                for g in gaps {
                    tokio::time::advance(Duration::from_nanos(g)).await;
                    if matches!(rl.check(7), RateDecision::Allow(_)) {
                        out.push(nanos(Instant::now() - t0));
                    }
                }
                out
            });
            let t_eff = (1_000_000_000u64 / (u64::from(rate) * 64)) * 64;
            for i in 0..admitted.len() {
                for j in i..admitted.len() {
                    let w = admitted[j] - admitted[i];
                    let n = (j - i + 1) as u64;
                    prop_assert!(n <= u64::from(burst) + w / t_eff,
                        "{n} admitted in {w} ns (burst {burst}, T {t_eff} ns)");
                }
            }
        }
    }
}
