//! Config: serde types for each guard (to embed in the proxy's routes, pools and listeners)
//! and validation into the runtime policies, with every error located by key path.
//!
//! The proxy embeds the tables it wants (docs/guards.md lists where), e.g. on a route:
//! ```toml
//! [[proxy.listeners.routes]]
//! name = "checkout"
//! pool = "shop"
//! priority = "critical"
//! [proxy.listeners.routes.rate_limit]
//! rate = 500
//! [proxy.listeners.routes.breaker]
//! failure_ratio = 0.5
//! [proxy.listeners.routes.concurrency]
//! max_inflight = 200
//! [proxy.listeners.routes.fallback]
//! status = 503
//! body_file = "pages/busy.html"
//! ```
//! and calls one `validate_*` per table present, passing the table's [`KeyPath`]. Each
//! returns `None` after adding at least one error to `diags`, so the proxy collects every
//! problem of the file in one pass. Every key has a default ([`Default`] impls below; the
//! full list is in docs/guards.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hastack_config::{Diagnostics, Dur, KeyPath, Seg, Source};
use hastack_core::{Backoff, RetryBudgetPolicy};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;

use crate::RejectReason;
use crate::adaptive::{AdaptivePolicy, Algorithm};
use crate::breaker::{BreakerPolicy, Window};
use crate::concurrency::{ConcurrencyLimiter, ConcurrencyPolicy};
use crate::fallback::{Fallback, FallbackAction, RouteSwitch, StaticResponse};
use crate::rate::{KeyKind, RateLimitPolicy, RateLimiter, Warmup};
use crate::retry::RetryPolicy;
use crate::shed::{ClassId, ClassSpec, ShedPolicy};
use crate::stack::RouteGuard;

/// Largest fallback body file, read into memory at load time.
pub const MAX_FALLBACK_BODY: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Rate limit

/// What a rate limit counts by.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateKeyConfig {
    /// One bucket.
    #[default]
    Global,
    /// Per client address.
    ClientIp,
    /// Per value of `header`.
    Header,
}

/// When to send the `RateLimit` / `RateLimit-Policy` fields.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateHeaders {
    /// Only on 429 answers (no cost on admitted requests).
    #[default]
    OnReject,
    /// On every answer (formats two small header values per response).
    Always,
    /// Never (still sends `Retry-After` on 429).
    Never,
}

/// `[... .rate_limit]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests per `per` (required).
    pub rate: Option<u32>,
    /// The period of `rate`.
    pub per: Dur,
    /// Back-to-back requests allowed after a quiet period (default: `rate`).
    pub burst: Option<u32>,
    /// What requests are counted by.
    pub key: RateKeyConfig,
    /// The header to key by when `key = "header"`.
    pub header: Option<String>,
    /// Most keys remembered (keyed limits).
    pub max_keys: usize,
    /// Pace requests up to this long instead of refusing them ("0s" refuses at once).
    pub max_wait: Dur,
    /// Ramp the rate up over this long after a cold start.
    pub warmup: Option<Dur>,
    /// Fraction of the rate allowed when the warm-up starts.
    pub warmup_from: f64,
    /// When to send the RateLimit header fields.
    pub headers: RateHeaders,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            rate: None,
            per: Dur::secs(1),
            burst: None,
            key: RateKeyConfig::Global,
            header: None,
            max_keys: 16_384,
            max_wait: Dur::ms(0),
            warmup: None,
            warmup_from: 0.1,
            headers: RateHeaders::OnReject,
        }
    }
}

/// A validated rate limit: build the limiter with [`RateLimitSpec::build`].
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitSpec {
    /// The policy.
    pub policy: RateLimitPolicy,
    /// When to send the header fields.
    pub headers: RateHeaders,
}

impl RateLimitSpec {
    /// A fresh limiter (its warm-up, if any, starts now).
    pub fn build(&self) -> Arc<RateLimiter> {
        // Validation already proved the parameters workable.
        match RateLimiter::new(self.policy.clone()) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                tracing::error!(error = %e, "rate limit rejected after validation; using 1/s");
                #[allow(clippy::expect_used, reason = "1 request per second is always valid")]
                Arc::new(
                    RateLimiter::new(RateLimitPolicy::new("fallback", 1, Duration::from_secs(1)))
                        .expect("1/s is valid"),
                )
            }
        }
    }
}

/// The name a table's guard reports in headers and metrics: the key above the guard's table
/// (`proxy.routes.checkout.rate_limit` -> `checkout`). Callers whose tables sit in arrays
/// (the proxy's `[[proxy.listeners.routes]]`) overwrite `policy.name` with the route's name.
fn scope_name(path: &KeyPath) -> String {
    let segs = path.segments();
    segs.len()
        .checked_sub(2)
        .and_then(|i| segs.get(i))
        .map_or_else(String::new, |s| match s {
            Seg::Key(k) => k.clone(),
            Seg::Index(i) => i.to_string(),
        })
}

/// Validate a `rate_limit` table at `path`.
pub fn validate_rate_limit(
    src: &Source,
    path: &KeyPath,
    raw: &RateLimitConfig,
    diags: &mut Diagnostics,
) -> Option<RateLimitSpec> {
    let before = diags.error_count();
    let rate = match raw.rate {
        Some(0) => {
            diags.error(
                src,
                &path.key("rate"),
                "rate must be at least 1 (to refuse everything, disable the route instead)",
            );
            0
        }
        Some(r) => r,
        None => {
            diags.error(
                src,
                path,
                "a rate limit needs `rate` (requests per `per`, e.g. rate = 100)",
            );
            0
        }
    };
    if raw.per.0.is_zero() {
        diags.error(
            src,
            &path.key("per"),
            "per must be longer than zero, e.g. \"1s\" or \"1m\"",
        );
    }
    let burst = raw.burst.unwrap_or(rate.max(1));
    if burst == 0 {
        diags.error(
            src,
            &path.key("burst"),
            "burst must be at least 1 (one request must always fit)",
        );
    }
    let key = match raw.key {
        RateKeyConfig::Global => KeyKind::Global,
        RateKeyConfig::ClientIp => KeyKind::ClientIp,
        RateKeyConfig::Header => match raw.header.as_deref() {
            Some(h) => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) => KeyKind::Header(n),
                Err(_) => {
                    diags.error(
                        src,
                        &path.key("header"),
                        format!("{h:?} is not a valid HTTP header name"),
                    );
                    KeyKind::Global
                }
            },
            None => {
                diags.error(
                    src,
                    &path.key("key"),
                    "key = \"header\" needs `header = \"<name>\"` (e.g. \"x-api-key\")",
                );
                KeyKind::Global
            }
        },
    };
    if raw.header.is_some() && raw.key != RateKeyConfig::Header {
        diags.warning(
            src,
            &path.key("header"),
            "`header` is ignored unless key = \"header\"",
        );
    }
    if raw.max_keys == 0 || raw.max_keys > 16_777_216 {
        diags.error(
            src,
            &path.key("max_keys"),
            "max_keys must be between 1 and 16777216",
        );
    }
    let warmup = match raw.warmup {
        Some(p) if !p.0.is_zero() => {
            if !(raw.warmup_from > 0.0 && raw.warmup_from <= 1.0) {
                diags.error(
                    src,
                    &path.key("warmup_from"),
                    "warmup_from must be in (0, 1], e.g. 0.1 to start at a tenth of the rate",
                );
            }
            Some(Warmup {
                period: p.0,
                from: raw.warmup_from,
            })
        }
        _ => None,
    };
    if diags.error_count() > before {
        return None;
    }
    let policy = RateLimitPolicy {
        name: scope_name(path),
        rate,
        per: raw.per.0,
        burst,
        key,
        max_keys: raw.max_keys,
        max_wait: raw.max_wait.0,
        warmup,
    };
    // Let the limiter itself judge what it can count (rate too fast, depth overflow, a name
    // unfit for a header).
    if let Err(e) = RateLimiter::new(policy.clone()) {
        diags.error(src, path, e.to_string());
        return None;
    }
    Some(RateLimitSpec {
        policy,
        headers: raw.headers,
    })
}

// ---------------------------------------------------------------------------------------
// Breaker

/// Window kinds.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// The last `window_calls` calls.
    #[default]
    Count,
    /// The calls of the last `window_duration`.
    Time,
}

/// `[... .breaker]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Count- or time-based window.
    pub window: WindowKind,
    /// Calls in a count-based window.
    pub window_calls: u32,
    /// Length of a time-based window.
    pub window_duration: Dur,
    /// Calls needed before the ratios are judged.
    pub min_calls: u32,
    /// Trip at this share of failed calls.
    pub failure_ratio: f64,
    /// Trip at this share of slow calls (absent: slow calls never trip the breaker alone).
    pub slow_call_ratio: Option<f64>,
    /// A call this long is slow.
    pub slow_call_duration: Dur,
    /// First open period.
    pub open_for: Dur,
    /// Longest open period.
    pub open_max: Dur,
    /// Trial calls in half-open.
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: WindowKind::Count,
            window_calls: 100,
            window_duration: Dur::secs(10),
            min_calls: 20,
            failure_ratio: 0.5,
            slow_call_ratio: None,
            slow_call_duration: Dur::secs(5),
            open_for: Dur::secs(5),
            open_max: Dur::secs(60),
            half_open_calls: 3,
        }
    }
}

fn ratio(src: &Source, path: &KeyPath, v: f64, diags: &mut Diagnostics) {
    if !(v > 0.0 && v <= 1.0) {
        diags.error(
            src,
            path,
            format!("{v} is not a ratio in (0, 1] (0.5 means half of the calls)"),
        );
    }
}

/// Validate a `breaker` table at `path`.
pub fn validate_breaker(
    src: &Source,
    path: &KeyPath,
    raw: &BreakerConfig,
    diags: &mut Diagnostics,
) -> Option<BreakerPolicy> {
    let before = diags.error_count();
    let window = match raw.window {
        WindowKind::Count => {
            if raw.window_calls == 0 || raw.window_calls > 1_000_000 {
                diags.error(
                    src,
                    &path.key("window_calls"),
                    "window_calls must be between 1 and 1000000",
                );
            }
            if raw.min_calls > raw.window_calls {
                diags.error(
                    src,
                    &path.key("min_calls"),
                    format!(
                        "min_calls ({}) exceeds window_calls ({}): the breaker could never trip",
                        raw.min_calls, raw.window_calls
                    ),
                );
            }
            Window::Count(raw.window_calls)
        }
        WindowKind::Time => {
            if raw.window_duration.0 < Duration::from_millis(10) {
                diags.error(
                    src,
                    &path.key("window_duration"),
                    "window_duration must be at least \"10ms\"",
                );
            }
            Window::Time(raw.window_duration.0)
        }
    };
    ratio(src, &path.key("failure_ratio"), raw.failure_ratio, diags);
    if let Some(r) = raw.slow_call_ratio {
        ratio(src, &path.key("slow_call_ratio"), r, diags);
    }
    if raw.slow_call_duration.0.is_zero() {
        diags.error(
            src,
            &path.key("slow_call_duration"),
            "slow_call_duration must be above zero",
        );
    }
    if raw.open_for.0.is_zero() {
        diags.error(
            src,
            &path.key("open_for"),
            "open_for must be above zero, e.g. \"5s\"",
        );
    }
    if raw.open_max < raw.open_for {
        diags.error(
            src,
            &path.key("open_max"),
            format!(
                "open_max ({}) is shorter than open_for ({})",
                raw.open_max, raw.open_for
            ),
        );
    }
    if raw.half_open_calls == 0 {
        diags.error(
            src,
            &path.key("half_open_calls"),
            "half_open_calls must be at least 1",
        );
    }
    if diags.error_count() > before {
        return None;
    }
    Some(BreakerPolicy {
        window,
        min_calls: raw.min_calls.max(1),
        failure_ratio: raw.failure_ratio,
        slow_call_ratio: raw.slow_call_ratio.unwrap_or(f64::INFINITY),
        slow_call_duration: raw.slow_call_duration.0,
        open_for: raw.open_for.0,
        open_max: raw.open_max.0,
        half_open_calls: raw.half_open_calls,
    })
}

// ---------------------------------------------------------------------------------------
// Concurrency, adaptive, shedding

/// Adaptive algorithms.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmConfig {
    /// Gradient2.
    #[default]
    Gradient2,
    /// Vegas.
    Vegas,
}

/// `[... .concurrency.adaptive]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConfig {
    /// The algorithm.
    pub algorithm: AlgorithmConfig,
    /// Starting limit.
    pub initial_limit: usize,
    /// Floor (the ceiling is the table's `max_inflight`).
    pub min_limit: usize,
    /// Gradient2: latency growth tolerated (>= 1).
    pub tolerance: f64,
    /// Weight of each new estimate, in (0, 1].
    pub smoothing: f64,
    /// Gradient2: windows the long-term RTT averages over.
    pub long_window: u32,
    /// Sampling window.
    pub window: Dur,
    /// Samples a window needs before it counts.
    pub min_window_samples: u32,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        let d = AdaptivePolicy::default();
        AdaptiveConfig {
            algorithm: AlgorithmConfig::Gradient2,
            initial_limit: d.initial_limit,
            min_limit: d.min_limit,
            tolerance: 1.5,
            smoothing: d.smoothing,
            long_window: 600,
            window: Dur(d.window),
            min_window_samples: d.min_window_samples,
        }
    }
}

/// `[... .concurrency.shedding]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SheddingConfig {
    /// Class names, most important first.
    pub classes: Vec<String>,
    /// Share of the limit each class may occupy (same order; the first must be 1.0).
    pub shares: Vec<f64>,
    /// Standing queue time that raises the shed level.
    pub target_queue_time: Dur,
    /// How often the level is re-evaluated.
    pub interval: Dur,
}

impl Default for SheddingConfig {
    fn default() -> Self {
        let d = ShedPolicy::default();
        SheddingConfig {
            classes: d.classes.iter().map(|c| c.name.clone()).collect(),
            shares: d.classes.iter().map(|c| c.share).collect(),
            target_queue_time: Dur(d.target_queue_time),
            interval: Dur(d.interval),
        }
    }
}

/// `[... .concurrency]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConcurrencyConfig {
    /// Fixed limit, or the adaptive limit's ceiling.
    pub max_inflight: usize,
    /// Requests that may wait for a slot (0: refuse at once).
    pub max_queue: usize,
    /// Longest wait for a slot.
    pub queue_timeout: Dur,
    /// Find the limit from latency.
    pub adaptive: Option<AdaptiveConfig>,
    /// Shed by priority class.
    pub shedding: Option<SheddingConfig>,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        ConcurrencyConfig {
            max_inflight: 256,
            max_queue: 128,
            queue_timeout: Dur::secs(1),
            adaptive: None,
            shedding: None,
        }
    }
}

/// Validate a `concurrency` table at `path`.
pub fn validate_concurrency(
    src: &Source,
    path: &KeyPath,
    raw: &ConcurrencyConfig,
    diags: &mut Diagnostics,
) -> Option<ConcurrencyPolicy> {
    let before = diags.error_count();
    if raw.max_inflight == 0 || raw.max_inflight > 1_000_000 {
        diags.error(
            src,
            &path.key("max_inflight"),
            "max_inflight must be between 1 and 1000000",
        );
    }
    if raw.max_queue > 1_000_000 {
        diags.error(
            src,
            &path.key("max_queue"),
            "max_queue must be at most 1000000",
        );
    }
    if raw.max_queue > 0 && raw.queue_timeout.0.is_zero() {
        diags.error(
            src,
            &path.key("queue_timeout"),
            "queue_timeout must be above zero when max_queue > 0 (every wait needs a bound)",
        );
    }
    let adaptive = raw.adaptive.as_ref().map(|a| {
        let p = path.key("adaptive");
        if a.min_limit == 0 {
            diags.error(src, &p.key("min_limit"), "min_limit must be at least 1");
        }
        if a.min_limit > raw.max_inflight {
            diags.error(src, &p.key("min_limit"), format!("min_limit ({}) exceeds max_inflight ({})", a.min_limit, raw.max_inflight));
        }
        if a.initial_limit < a.min_limit || a.initial_limit > raw.max_inflight {
            diags.error(src, &p.key("initial_limit"), format!("initial_limit ({}) must be between min_limit ({}) and max_inflight ({})", a.initial_limit, a.min_limit, raw.max_inflight));
        }
        if !(a.tolerance >= 1.0 && a.tolerance <= 10.0) {
            diags.error(src, &p.key("tolerance"), "tolerance must be between 1.0 and 10.0 (1.5: latency may grow by half before the limit shrinks)");
        }
        ratio(src, &p.key("smoothing"), a.smoothing, diags);
        if a.long_window == 0 {
            diags.error(src, &p.key("long_window"), "long_window must be at least 1");
        }
        if a.window.0 < Duration::from_millis(1) {
            diags.error(src, &p.key("window"), "window must be at least \"1ms\"");
        }
        AdaptivePolicy {
            algorithm: match a.algorithm {
                AlgorithmConfig::Gradient2 => Algorithm::Gradient2 {
                    tolerance: a.tolerance,
                    long_window: a.long_window,
                },
                AlgorithmConfig::Vegas => Algorithm::Vegas,
            },
            initial_limit: a.initial_limit,
            min_limit: a.min_limit,
            max_limit: raw.max_inflight,
            smoothing: a.smoothing,
            window: a.window.0,
            min_window_samples: a.min_window_samples,
        }
    });
    let shedding = raw
        .shedding
        .as_ref()
        .map(|s| validate_shedding(src, &path.key("shedding"), s, diags));
    if diags.error_count() > before {
        return None;
    }
    Some(ConcurrencyPolicy {
        max_inflight: raw.max_inflight,
        max_queue: raw.max_queue,
        queue_timeout: raw.queue_timeout.0,
        adaptive,
        shedding,
    })
}

fn validate_shedding(
    src: &Source,
    path: &KeyPath,
    raw: &SheddingConfig,
    diags: &mut Diagnostics,
) -> ShedPolicy {
    if raw.classes.is_empty() || raw.classes.len() > 16 {
        diags.error(
            src,
            &path.key("classes"),
            "classes must list 1 to 16 names, most important first",
        );
    }
    if raw.shares.len() != raw.classes.len() {
        diags.error(
            src,
            &path.key("shares"),
            format!(
                "shares has {} entries but classes has {}: give one share per class",
                raw.shares.len(),
                raw.classes.len()
            ),
        );
    }
    for (i, name) in raw.classes.iter().enumerate() {
        if name.is_empty() || raw.classes[..i].contains(name) {
            diags.error(
                src,
                &path.key("classes").index(i),
                format!("class name {name:?} is empty or repeated"),
            );
        }
    }
    for (i, s) in raw.shares.iter().enumerate() {
        ratio(src, &path.key("shares").index(i), *s, diags);
        if i > 0 && *s > raw.shares[i - 1] {
            diags.error(src, &path.key("shares").index(i), "shares must not grow down the list: a less important class cannot get more room than a more important one");
        }
    }
    if raw.shares.first().is_some_and(|s| *s < 1.0) {
        diags.warning(
            src,
            &path.key("shares").index(0),
            "the most important class has a share below 1.0: part of the capacity is never used",
        );
    }
    if raw.target_queue_time.0.is_zero() {
        diags.error(
            src,
            &path.key("target_queue_time"),
            "target_queue_time must be above zero, e.g. \"20ms\"",
        );
    }
    if raw.interval.0.is_zero() {
        diags.error(
            src,
            &path.key("interval"),
            "interval must be above zero, e.g. \"100ms\"",
        );
    }
    ShedPolicy {
        classes: raw
            .classes
            .iter()
            .zip(raw.shares.iter().chain(std::iter::repeat(&1.0)))
            .map(|(n, s)| ClassSpec {
                name: n.clone(),
                share: *s,
            })
            .collect(),
        target_queue_time: raw.target_queue_time.0,
        interval: raw.interval.0,
    }
}

/// Validate a route's `priority = "..."` against the shedding classes of the limiter the
/// route uses (`None`: the default classes `critical`, `normal`, `best_effort`).
pub fn validate_priority(
    src: &Source,
    path: &KeyPath,
    raw: &str,
    shedding: Option<&ShedPolicy>,
    diags: &mut Diagnostics,
) -> Option<ClassId> {
    let default = ShedPolicy::default();
    let policy = shedding.unwrap_or(&default);
    match policy.class(raw) {
        Some(c) => Some(c),
        None => {
            let names: Vec<&str> = policy.classes.iter().map(|c| c.name.as_str()).collect();
            diags.error(
                src,
                path,
                format!(
                    "unknown priority {raw:?}; the classes are: {}",
                    names.join(", ")
                ),
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fallback

/// `[... .fallback]`: a static answer, or another pool.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    /// Status of the static answer.
    pub status: Option<u16>,
    /// Headers of the static answer.
    pub headers: BTreeMap<String, String>,
    /// Body text of the static answer.
    pub body: Option<String>,
    /// File holding the body (relative to the config file), read at load time.
    pub body_file: Option<PathBuf>,
    /// Send the request to this pool instead of answering statically.
    pub pool: Option<String>,
    /// Which refusals the fallback answers.
    pub on: Vec<RejectReason>,
    /// Also answer when the upstream failed (5xx, connection error).
    pub upstream_error: bool,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            status: None,
            headers: BTreeMap::new(),
            body: None,
            body_file: None,
            pool: None,
            on: vec![
                RejectReason::Disabled,
                RejectReason::BreakerOpen,
                RejectReason::Shed,
                RejectReason::Overloaded,
                RejectReason::Timeout,
            ],
            upstream_error: false,
        }
    }
}

impl<'de> Deserialize<'de> for RejectReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RejectReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
                serde::de::Error::custom(format!(
                    "unknown refusal {s:?}; expected one of: {}",
                    names.join(", ")
                ))
            })
    }
}

/// Validate a `fallback` table at `path`. The body file is read now, relative to the
/// config file's directory. A `pool` name is returned as is: the proxy checks it exists.
pub fn validate_fallback(
    src: &Source,
    path: &KeyPath,
    raw: &FallbackConfig,
    diags: &mut Diagnostics,
) -> Option<Fallback> {
    let before = diags.error_count();
    let is_static = raw.status.is_some()
        || raw.body.is_some()
        || raw.body_file.is_some()
        || !raw.headers.is_empty();
    let action = match (&raw.pool, is_static) {
        (Some(_), true) => {
            diags.error(
                src,
                &path.key("pool"),
                "a fallback is either a pool or a static answer (status/headers/body), not both",
            );
            None
        }
        (Some(pool), false) => {
            if pool.is_empty() {
                diags.error(src, &path.key("pool"), "pool name is empty");
            }
            Some(FallbackAction::Pool(pool.clone()))
        }
        (None, _) => {
            static_response(src, path, raw, diags).map(|r| FallbackAction::Static(Arc::new(r)))
        }
    };
    if diags.error_count() > before {
        return None;
    }
    action.map(|a| Fallback::new(a, &raw.on, raw.upstream_error))
}

fn static_response(
    src: &Source,
    path: &KeyPath,
    raw: &FallbackConfig,
    diags: &mut Diagnostics,
) -> Option<StaticResponse> {
    let status = match StatusCode::from_u16(raw.status.unwrap_or(503)) {
        Ok(s) => s,
        Err(_) => {
            diags.error(
                src,
                &path.key("status"),
                "status must be an HTTP status code between 100 and 999",
            );
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &raw.headers {
        let p = path.key("headers").key(k);
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(n), Ok(v)) => {
                headers.insert(n, v);
            }
            (Err(_), _) => diags.error(src, &p, format!("{k:?} is not a valid HTTP header name")),
            (_, Err(_)) => diags.error(
                src,
                &p,
                "header value has characters HTTP does not allow (control characters or non-ASCII)",
            ),
        }
    }
    let body = match (&raw.body, &raw.body_file) {
        (Some(_), Some(_)) => {
            diags.error(
                src,
                &path.key("body_file"),
                "give either body or body_file, not both",
            );
            Bytes::new()
        }
        (Some(b), None) => Bytes::from(b.clone()),
        (None, Some(f)) => read_body(src, &path.key("body_file"), f, diags),
        (None, None) => Bytes::new(),
    };
    if !headers.contains_key(http::header::CONTENT_TYPE) && !body.is_empty() {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    Some(StaticResponse {
        status,
        headers,
        body,
    })
}

fn read_body(src: &Source, path: &KeyPath, file: &Path, diags: &mut Diagnostics) -> Bytes {
    let full = match src.path().and_then(Path::parent) {
        Some(dir) if file.is_relative() => dir.join(file),
        _ => file.to_path_buf(),
    };
    match std::fs::metadata(&full) {
        Ok(m) if m.len() > MAX_FALLBACK_BODY => {
            diags.error(src, path, format!("{} is {} bytes; fallback bodies are held in memory and may be at most {MAX_FALLBACK_BODY}", full.display(), m.len()));
            return Bytes::new();
        }
        Ok(_) => {}
        Err(e) => {
            diags.error(src, path, format!("cannot read {}: {e}", full.display()));
            return Bytes::new();
        }
    }
    match std::fs::read(&full) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            diags.error(src, path, format!("cannot read {}: {e}", full.display()));
            Bytes::new()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Retry

/// `[... .retry]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries after the first try (0 disables).
    pub max_retries: u32,
    /// First back-off ceiling.
    pub backoff_base: Dur,
    /// Largest back-off.
    pub backoff_max: Dur,
    /// Retries allowed as a share of recent requests.
    pub budget_ratio: f64,
    /// Retries always allowed per second.
    pub budget_min_per_sec: u32,
    /// How far back the budget looks.
    pub budget_window: Dur,
    /// Time limit of each try.
    pub per_try_timeout: Option<Dur>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let d = RetryPolicy::default();
        RetryConfig {
            max_retries: d.max_retries,
            backoff_base: Dur(d.backoff.base),
            backoff_max: Dur(d.backoff.max),
            budget_ratio: d.budget.ratio,
            budget_min_per_sec: d.budget.min_per_sec,
            budget_window: Dur(d.budget.window),
            per_try_timeout: None,
        }
    }
}

/// Validate a `retry` table at `path`.
pub fn validate_retry(
    src: &Source,
    path: &KeyPath,
    raw: &RetryConfig,
    diags: &mut Diagnostics,
) -> Option<RetryPolicy> {
    let before = diags.error_count();
    if raw.max_retries > 10 {
        diags.error(
            src,
            &path.key("max_retries"),
            "max_retries above 10 only multiplies load during an outage; use at most 10",
        );
    }
    if raw.backoff_max < raw.backoff_base {
        diags.error(
            src,
            &path.key("backoff_max"),
            format!(
                "backoff_max ({}) is shorter than backoff_base ({})",
                raw.backoff_max, raw.backoff_base
            ),
        );
    }
    if !(0.0..=1.0).contains(&raw.budget_ratio) {
        diags.error(
            src,
            &path.key("budget_ratio"),
            "budget_ratio must be between 0 and 1 (0.2: retries add at most 20% load)",
        );
    }
    if raw.budget_window.0 < Duration::from_secs(1) {
        diags.error(
            src,
            &path.key("budget_window"),
            "budget_window must be at least \"1s\"",
        );
    }
    if raw.per_try_timeout.is_some_and(|d| d.0.is_zero()) {
        diags.error(
            src,
            &path.key("per_try_timeout"),
            "per_try_timeout must be above zero",
        );
    }
    if diags.error_count() > before {
        return None;
    }
    Some(RetryPolicy {
        max_retries: raw.max_retries,
        backoff: Backoff::new(raw.backoff_base.0, raw.backoff_max.0),
        budget: RetryBudgetPolicy {
            ratio: raw.budget_ratio,
            min_per_sec: raw.budget_min_per_sec,
            window: raw.budget_window.0,
        },
        per_try_timeout: raw.per_try_timeout.map(|d| d.0),
    })
}

// ---------------------------------------------------------------------------------------
// A whole route

/// Every guard table a route may carry, validated.
#[derive(Clone, Debug, Default)]
pub struct RouteGuardSpec {
    /// `rate_limit`.
    pub rate_limit: Option<RateLimitSpec>,
    /// `breaker`.
    pub breaker: Option<BreakerPolicy>,
    /// The route's own `concurrency` (absent: the pool's limiter, if any).
    pub concurrency: Option<ConcurrencyPolicy>,
    /// `priority`.
    pub priority: Option<String>,
    /// `fallback`.
    pub fallback: Option<Fallback>,
}

impl RouteGuardSpec {
    /// Build the route's guards. `shared` is the pool's (or listener's) limiter, used when
    /// the route has no `concurrency` of its own. Fresh rate-limit and breaker state: a
    /// proxy that wants them to survive a reload keeps the old `Arc`s when the spec is
    /// unchanged.
    pub fn build(
        &self,
        name: &str,
        switch: Arc<RouteSwitch>,
        shared: Option<Arc<ConcurrencyLimiter>>,
    ) -> RouteGuard {
        let mut g = RouteGuard::new(name, switch);
        if let Some(r) = &self.rate_limit {
            g = g.with_rate_limit(r.build());
        }
        if let Some(b) = &self.breaker {
            g = g.with_breaker(crate::Breaker::new(
                *b,
                xxhash_rust::xxh3::xxh3_64(name.as_bytes()),
            ));
        }
        let limiter = self
            .concurrency
            .as_ref()
            .map(|c| ConcurrencyLimiter::new(c.clone()))
            .or(shared);
        if let Some(l) = limiter {
            let class = self
                .priority
                .as_deref()
                .and_then(|p| l.class(p))
                .unwrap_or_else(|| l.class("normal").unwrap_or(ClassId(0)));
            g = g.with_concurrency(l, class);
        }
        if let Some(f) = &self.fallback {
            g = g.with_fallback(f.clone());
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Route {
        #[serde(default)]
        rate_limit: Option<RateLimitConfig>,
        #[serde(default)]
        breaker: Option<BreakerConfig>,
        #[serde(default)]
        concurrency: Option<ConcurrencyConfig>,
        #[serde(default)]
        fallback: Option<FallbackConfig>,
        #[serde(default)]
        retry: Option<RetryConfig>,
        #[serde(default)]
        priority: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Proxy {
        routes: BTreeMap<String, Route>,
    }

    fn load(text: &str) -> (Source, Proxy) {
        let src = Source::parse("t.toml", text.to_string()).unwrap();
        let p = src.section::<Proxy>("proxy").unwrap().unwrap();
        (src, p)
    }

    fn validate_all(src: &Source, p: &Proxy) -> (Diagnostics, Vec<RouteGuardSpec>) {
        let mut d = Diagnostics::new();
        let mut specs = Vec::new();
        for (name, r) in &p.routes {
            let base = KeyPath::of(&["proxy", "routes"]).key(name);
            let conc = r
                .concurrency
                .as_ref()
                .and_then(|c| validate_concurrency(src, &base.key("concurrency"), c, &mut d));
            if let Some(pr) = &r.priority {
                validate_priority(
                    src,
                    &base.key("priority"),
                    pr,
                    conc.as_ref().and_then(|c| c.shedding.as_ref()),
                    &mut d,
                );
            }
            if let Some(rt) = &r.retry {
                validate_retry(src, &base.key("retry"), rt, &mut d);
            }
            specs.push(RouteGuardSpec {
                rate_limit: r
                    .rate_limit
                    .as_ref()
                    .and_then(|x| validate_rate_limit(src, &base.key("rate_limit"), x, &mut d)),
                breaker: r
                    .breaker
                    .as_ref()
                    .and_then(|x| validate_breaker(src, &base.key("breaker"), x, &mut d)),
                concurrency: conc,
                priority: r.priority.clone(),
                fallback: r
                    .fallback
                    .as_ref()
                    .and_then(|x| validate_fallback(src, &base.key("fallback"), x, &mut d)),
            });
        }
        (d, specs)
    }

    #[test]
    fn defaults_validate_and_build() {
        let (src, p) = load(
            r#"
[proxy.routes.checkout]
priority = "critical"
[proxy.routes.checkout.rate_limit]
rate = 100
[proxy.routes.checkout.breaker]
[proxy.routes.checkout.concurrency.shedding]
[proxy.routes.checkout.concurrency.adaptive]
[proxy.routes.checkout.fallback]
body = "busy"
[proxy.routes.checkout.retry]
"#,
        );
        let (d, specs) = validate_all(&src, &p);
        assert!(d.is_empty(), "{d}");
        let s = &specs[0];
        let rl = s.rate_limit.as_ref().unwrap();
        assert_eq!(
            (rl.policy.rate, rl.policy.burst, rl.policy.name.as_str()),
            (100, 100, "checkout")
        );
        let g = s.build("checkout", Arc::new(RouteSwitch::default()), None);
        assert!(g.rate_limiter().is_some() && g.breaker().is_some() && g.fallback().is_some());
        assert_eq!(
            g.concurrency().unwrap().limit(),
            20,
            "adaptive starts at initial_limit"
        );
    }

    #[test]
    fn every_problem_is_reported_and_located() {
        let (src, p) = load(
            r#"
[proxy.routes.a]
priority = "vip"
[proxy.routes.a.rate_limit]
per = "0s"
key = "header"
[proxy.routes.a.breaker]
failure_ratio = 1.5
open_for = "10s"
open_max = "1s"
[proxy.routes.a.concurrency]
max_inflight = 0
[proxy.routes.a.fallback]
pool = "static"
status = 200
[proxy.routes.a.retry]
max_retries = 50
"#,
        );
        let (d, _) = validate_all(&src, &p);
        let text = d.to_string();
        for needle in [
            "t.toml:4:17: error: proxy.routes.a.rate_limit: a rate limit needs `rate`",
            "proxy.routes.a.rate_limit.per: per must be longer than zero",
            "rate_limit.key: key = \"header\" needs `header",
            "breaker.failure_ratio: 1.5 is not a ratio",
            "breaker.open_max: open_max (1s) is shorter than open_for (10s)",
            "concurrency.max_inflight: max_inflight must be between",
            "fallback.pool: a fallback is either a pool or a static answer",
            "retry.max_retries",
            "priority: unknown priority \"vip\"; the classes are: critical, normal, best_effort",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(d.error_count(), 9, "{text}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_serde_errors() {
        let src = Source::parse(
            "t.toml",
            "[proxy.routes.a.rate_limit]\nrate = 1\nburts = 3\n".to_string(),
        )
        .unwrap();
        let e = src.section::<Proxy>("proxy").unwrap_err().to_string();
        assert!(
            e.contains("t.toml:3:1") && e.contains("unknown field `burts`"),
            "{e}"
        );
        let src = Source::parse(
            "t.toml",
            "[proxy.routes.a.fallback]\non = [\"breaker_opn\"]\n".to_string(),
        )
        .unwrap();
        let e = src.section::<Proxy>("proxy").unwrap_err().to_string();
        assert!(
            e.contains("unknown refusal \"breaker_opn\"") && e.contains("breaker_open"),
            "{e}"
        );
    }

    #[test]
    fn body_file_is_read_relative_to_the_config() {
        let dir = std::env::temp_dir().join(format!("hastack-guard-cfg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pages")).unwrap();
        std::fs::write(dir.join("pages/busy.html"), "<h1>busy</h1>").unwrap();
        let cfg = dir.join("hastack.toml");
        std::fs::write(
            &cfg,
            "[proxy.routes.a.fallback]\nbody_file = \"pages/busy.html\"\nheaders = { content-type = \"text/html\" }\n[proxy.routes.b.fallback]\nbody_file = \"pages/missing.html\"\n",
        )
        .unwrap();
        let src = Source::load(&cfg).unwrap();
        let p = src.section::<Proxy>("proxy").unwrap().unwrap();
        let (d, specs) = validate_all(&src, &p);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(d.error_count(), 1, "{d}");
        assert!(
            d.to_string()
                .contains(":5:1: error: proxy.routes.b.fallback.body_file: cannot read"),
            "{d}"
        );
        let Some(FallbackAction::Static(r)) = specs[0].fallback.as_ref().map(|f| &f.action) else {
            panic!("not static");
        };
        assert_eq!(&r.body[..], b"<h1>busy</h1>");
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers["content-type"], "text/html");
    }
}
