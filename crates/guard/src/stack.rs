//! The whole guard stack of one route, as the proxy calls it per request.
//!
//! ```text
//! admit(key, now):  switch ─▶ rate limit ─▶ breaker ─▶ shedding + concurrency ─▶ RoutePermit
//!                   (atomic)  (GCRA, may    (atomic    (atomic loads, one CAS;
//!                              pace)         load)      may queue)
//! permit.complete(now, outcome): breaker window, adaptive sample, slot released
//! ```
//! Every refusal comes back as a [`Rejection`] saying which guard refused, the status to
//! answer, `Retry-After`, and whether the route's fallback covers it. Nothing here
//! allocates on the admitted path (verified by `tests/zero_alloc.rs`).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use hastack_guard::{Breaker, BreakerPolicy, FallbackAction, Outcome, RateLimitPolicy,
//!     RateLimiter, RouteGuard, SwitchBoard};
//! use tokio::time::Instant;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let board = SwitchBoard::new(); // one per process: switches survive reloads
//! let route = RouteGuard::new("checkout", board.switch("checkout"))
//!     .with_rate_limit(Arc::new(RateLimiter::new(RateLimitPolicy::new("checkout", 500, Duration::from_secs(1))).unwrap()))
//!     .with_breaker(Breaker::new(BreakerPolicy::default(), 1));
//!
//! // Per request:
//! let key = route.rate_key("192.0.2.7".parse().unwrap(), &http::HeaderMap::new());
//! match route.admit(key, Instant::now()).await {
//!     Ok(permit) => {
//!         // ... forward to the upstream, then:
//!         permit.complete(Instant::now(), Outcome::Success);
//!     }
//!     Err(rejection) => match route.fallback_for(&rejection) {
//!         Some(FallbackAction::Static(resp)) => { let _ = resp.to_response(); }
//!         Some(FallbackAction::Pool(pool)) => { let _ = pool; /* forward there */ }
//!         None => { let _ = rejection.status(); /* 429 / 503 + Retry-After */ }
//!     },
//! }
//! # }
//! ```

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use crate::RejectReason;
use serde::Serialize;

use crate::breaker::{Breaker, BreakerPermit, BreakerSnapshot};
use crate::concurrency::{ConcurrencyLimiter, ConcurrencyPermit, ConcurrencySnapshot, Outcome};
use crate::fallback::{Fallback, FallbackAction, RouteSwitch};
use crate::rate::{RateDecision, RateInfo, RateLimiter};
use crate::shed::ClassId;

/// One route's guards. Build once per config (re)load; share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct RouteGuard {
    name: Arc<str>,
    switch: Arc<RouteSwitch>,
    rate: Option<Arc<RateLimiter>>,
    breaker: Option<Arc<Breaker>>,
    concurrency: Option<Arc<ConcurrencyLimiter>>,
    class: ClassId,
    fallback: Option<Fallback>,
}

/// Why a request was turned away, with everything needed to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// Which guard.
    pub reason: RejectReason,
    /// When to come back (rate limit, open breaker).
    pub retry_after: Option<Duration>,
    /// Rate-limit header values, when the rate limiter refused.
    pub rate: Option<RateInfo>,
}

impl Rejection {
    /// The status to answer when no fallback applies (429 / 503).
    pub fn status(&self) -> http::StatusCode {
        self.reason.status()
    }
}

/// An admitted request. Call [`RoutePermit::complete`] when the upstream answered (or
/// failed); dropping it instead counts as a cancelled request (slots are released, a
/// half-open trial slot is freed, nothing is recorded).
#[derive(Debug)]
#[must_use = "complete the permit with the request's outcome"]
pub struct RoutePermit {
    breaker: Option<BreakerPermit>,
    slot: Option<ConcurrencyPermit>,
    rate: Option<RateInfo>,
    waited: Duration,
}

impl RoutePermit {
    /// Rate-limit header values (for routes that send `RateLimit` on every response).
    pub fn rate_info(&self) -> Option<&RateInfo> {
        self.rate.as_ref()
    }

    /// Time spent paced by the rate limiter plus queued for a slot.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The request ended at `now` with `outcome`.
    pub fn complete(self, now: Instant, outcome: Outcome) {
        let RoutePermit { breaker, slot, .. } = self;
        if let Some(b) = breaker {
            let _ = b.record(now, outcome != Outcome::Success);
        }
        if let Some(s) = slot {
            s.complete(now, outcome);
        }
    }
}

/// A route's guards for `GET /status` (serialize it as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct RouteGuardStatus {
    /// Route name.
    pub route: String,
    /// Switched off by an operator.
    pub disabled: bool,
    /// Rate limit counters: (refused, paced), when there is a rate limit.
    pub rate_limit: Option<RateStatus>,
    /// Breaker state and counters.
    pub breaker: Option<BreakerSnapshot>,
    /// Concurrency limit, in flight, queue, shedding.
    pub concurrency: Option<ConcurrencySnapshot>,
    /// Fallbacks served.
    pub fallback_served: Option<u64>,
}

/// Rate limiter counters for `/status`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RateStatus {
    /// Requests refused.
    pub rejected: u64,
    /// Requests paced.
    pub delayed: u64,
    /// Keys evicted from the bounded table.
    pub key_evictions: u64,
    /// Current warm-up fraction (1 when warm).
    pub warmup_fraction: f64,
}

impl RouteGuard {
    /// The route's guards as of `now`, for `/status`.
    pub fn status(&self, now: Instant) -> RouteGuardStatus {
        RouteGuardStatus {
            route: self.name.to_string(),
            disabled: self.switch.is_disabled(),
            rate_limit: self.rate.as_ref().map(|r| RateStatus {
                rejected: r.rejected_total(),
                delayed: r.delayed_total(),
                key_evictions: r.evictions_total(),
                warmup_fraction: r.warmup_fraction(),
            }),
            breaker: self.breaker.as_ref().map(|b| b.snapshot(now)),
            concurrency: self.concurrency.as_ref().map(|c| c.snapshot()),
            fallback_served: self.fallback.as_ref().map(Fallback::served_total),
        }
    }

    /// A route with only its switch; add guards with the `with_*` methods.
    pub fn new(name: &str, switch: Arc<RouteSwitch>) -> Self {
        RouteGuard {
            name: name.into(),
            switch,
            rate: None,
            breaker: None,
            concurrency: None,
            class: ClassId(0),
            fallback: None,
        }
    }

    /// Add a rate limit.
    #[must_use]
    pub fn with_rate_limit(mut self, rate: Arc<RateLimiter>) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Add a breaker.
    #[must_use]
    pub fn with_breaker(mut self, breaker: Arc<Breaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Add a concurrency limiter (possibly shared with other routes, e.g. the pool's) and
    /// this route's priority class in it.
    #[must_use]
    pub fn with_concurrency(mut self, limiter: Arc<ConcurrencyLimiter>, class: ClassId) -> Self {
        self.concurrency = Some(limiter);
        self.class = class;
        self
    }

    /// Add a fallback.
    #[must_use]
    pub fn with_fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The route's switch.
    pub fn switch(&self) -> &Arc<RouteSwitch> {
        &self.switch
    }

    /// The rate limiter, if any.
    pub fn rate_limiter(&self) -> Option<&Arc<RateLimiter>> {
        self.rate.as_ref()
    }

    /// The breaker, if any.
    pub fn breaker(&self) -> Option<&Arc<Breaker>> {
        self.breaker.as_ref()
    }

    /// The concurrency limiter, if any.
    pub fn concurrency(&self) -> Option<&Arc<ConcurrencyLimiter>> {
        self.concurrency.as_ref()
    }

    /// The fallback, if any.
    pub fn fallback(&self) -> Option<&Fallback> {
        self.fallback.as_ref()
    }

    /// The fallback action for a refusal, if the route has one covering it (counts it).
    pub fn fallback_for(&self, rejection: &Rejection) -> Option<&FallbackAction> {
        self.fallback.as_ref()?.for_reason(rejection.reason)
    }

    /// The rate-limit key of a request (0 without a rate limit). No allocation.
    pub fn rate_key(&self, client_ip: IpAddr, headers: &HeaderMap) -> u64 {
        self.rate.as_ref().map_or(0, |r| r.key(client_ip, headers))
    }

    /// Admit a request that arrived at `now`, counted under `rate_key`. Waits only when the
    /// rate limit paces (queue mode) or the concurrency limiter queues, each bounded by its
    /// own `max_wait` / `queue_timeout`.
    pub async fn admit(&self, rate_key: u64, now: Instant) -> Result<RoutePermit, Rejection> {
        if self.switch.is_disabled() {
            return Err(reject(RejectReason::Disabled, None, None));
        }
        let mut waited = Duration::ZERO;
        let mut now = now;
        let mut rate_info = None;
        if let Some(rl) = &self.rate {
            match rl.check(rate_key) {
                RateDecision::Allow(i) => rate_info = Some(i),
                RateDecision::Delay(d, i) => {
                    rate_info = Some(i);
                    tokio::time::sleep(d).await;
                    waited += d;
                    now = Instant::now();
                }
                RateDecision::Reject(i) => {
                    return Err(reject(
                        RejectReason::RateLimited,
                        Some(i.retry_after),
                        Some(i),
                    ));
                }
            }
        }
        let breaker = match &self.breaker {
            Some(b) => Some(
                b.acquire(now)
                    .map_err(|ra| reject(RejectReason::BreakerOpen, Some(ra), None))?,
            ),
            None => None,
        };
        let slot = match &self.concurrency {
            Some(c) => {
                let s = c
                    .acquire(self.class, now)
                    .await
                    .map_err(|r| reject(r, None, None))?;
                waited += s.queued_for();
                Some(s)
            }
            None => None,
        };
        Ok(RoutePermit {
            breaker,
            slot,
            rate: rate_info,
            waited,
        })
    }
}

fn reject(
    reason: RejectReason,
    retry_after: Option<Duration>,
    rate: Option<RateInfo>,
) -> Rejection {
    Rejection {
        reason,
        retry_after,
        rate,
    }
}
