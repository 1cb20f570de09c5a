//! Gateway guards for hastack: rate limits, circuit breakers, concurrency limits
//! (bulkheads), adaptive concurrency, priority load shedding, fallbacks, retries with a
//! budget, and timeouts.
//!
//! # Entry points
//! * The proxy's hot path: [`RouteGuard`] (`admit(key, now).await` -> [`RoutePermit`] ->
//!   `complete(now, outcome)`), built from config validated by [`config`]. No allocation, no
//!   global lock on the admitted path.
//! * Each primitive on its own: [`RateLimiter`], [`Breaker`] (and the pure
//!   [`BreakerMachine`]), [`ConcurrencyLimiter`] (fixed or [`adaptive`], with [`shed`]ding),
//!   [`Fallback`] / [`SwitchBoard`], [`retry`].
//! * tower layers over the same primitives, for the service connection pool: [`layer`].
//! * Metrics: [`GuardMetrics`] registers one collector into a passed-in registry.
//!
//! Every machine with timing takes `now` (a [`tokio::time::Instant`]) or reads tokio's clock,
//! so tests run them under paused, virtual time.
//!
//! # What this crate deliberately does not do
//! No IO, no HTTP server or client, no config file reading beyond fallback body files at
//! validation time, no global state. It does not pick upstreams or decide idempotency: the
//! proxy tells it whether a request is safe to retry and how it ended.

pub mod adaptive;
pub mod breaker;
pub mod clock;
pub mod concurrency;
pub mod config;
mod error;
pub mod fallback;
pub mod layer;
pub mod metrics;
pub mod rate;
pub mod retry;
pub mod shed;
pub mod stack;

pub use adaptive::{AdaptiveMachine, AdaptivePolicy};
pub use breaker::{Breaker, BreakerMachine, BreakerPermit, BreakerPolicy, BreakerState};
pub use concurrency::{ConcurrencyLimiter, ConcurrencyPermit, ConcurrencyPolicy, Outcome};
pub use error::{GuardError, RejectReason};
pub use fallback::{Fallback, FallbackAction, RouteSwitch, StaticResponse, SwitchBoard};
pub use metrics::GuardMetrics;
pub use rate::{RateDecision, RateInfo, RateLimitPolicy, RateLimiter};
pub use retry::{Deadline, Retrier, RetryPolicy, SharedBudget};
pub use shed::{ClassId, ShedPolicy, Shedder};
pub use stack::{Rejection, RouteGuard, RouteGuardStatus, RoutePermit};
