//! Prometheus metrics, read from the guards at scrape time.
//!
//! The guards already keep their counters (atomics or fields under their own lock) for
//! `/status`; [`GuardMetrics`] is a [`Collector`] that walks the guards it was told about
//! and encodes those numbers when `/metrics` is scraped. So metrics add **nothing** to the
//! per-request path, and guards dropped on reload disappear from `/metrics` by themselves
//! (they are held weakly).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `hastack_guard_rate_limited_total` | counter | scope |
//! | `hastack_guard_rate_delayed_total` | counter | scope |
//! | `hastack_guard_rate_key_evictions_total` | counter | scope |
//! | `hastack_guard_breaker_state` | gauge (1 for the current state) | scope, state |
//! | `hastack_guard_breaker_transitions_total` | counter | scope, to |
//! | `hastack_guard_breaker_calls_total` | counter | scope, result (`all`, `failed`, `slow`, `rejected`) |
//! | `hastack_guard_concurrency_limit` | gauge | scope |
//! | `hastack_guard_concurrency_inflight` | gauge | scope |
//! | `hastack_guard_concurrency_queued` | gauge | scope |
//! | `hastack_guard_concurrency_rejected_total` | counter | scope, reason (`full`, `timeout`) |
//! | `hastack_guard_shed_level` | gauge | scope |
//! | `hastack_guard_shed_total` | counter | scope, class |
//! | `hastack_guard_fallback_served_total` | counter | scope |
//! | `hastack_guard_route_disabled` | gauge | scope |
//! | `hastack_guard_retry_budget_exhausted_total` | counter | scope |

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::breaker::{Breaker, BreakerState};
use crate::concurrency::ConcurrencyLimiter;
use crate::fallback::RouteSwitch;
use crate::rate::RateLimiter;
use crate::retry::SharedBudget;
use crate::stack::RouteGuard;

#[derive(Debug)]
enum Tracked {
    Rate(Weak<RateLimiter>),
    Breaker(Weak<Breaker>),
    Concurrency(Weak<ConcurrencyLimiter>),
    Fallback(Weak<AtomicU64>),
    Switch(Weak<RouteSwitch>),
    Budget(Weak<SharedBudget>),
}

impl Tracked {
    /// Whether both point at the same guard.
    fn same(&self, other: &Tracked) -> bool {
        match (self, other) {
            (Tracked::Rate(a), Tracked::Rate(b)) => a.ptr_eq(b),
            (Tracked::Breaker(a), Tracked::Breaker(b)) => a.ptr_eq(b),
            (Tracked::Concurrency(a), Tracked::Concurrency(b)) => a.ptr_eq(b),
            (Tracked::Fallback(a), Tracked::Fallback(b)) => a.ptr_eq(b),
            (Tracked::Switch(a), Tracked::Switch(b)) => a.ptr_eq(b),
            (Tracked::Budget(a), Tracked::Budget(b)) => a.ptr_eq(b),
            _ => false,
        }
    }

    fn alive(&self) -> bool {
        match self {
            Tracked::Rate(w) => w.strong_count() > 0,
            Tracked::Breaker(w) => w.strong_count() > 0,
            Tracked::Concurrency(w) => w.strong_count() > 0,
            Tracked::Fallback(w) => w.strong_count() > 0,
            Tracked::Switch(w) => w.strong_count() > 0,
            Tracked::Budget(w) => w.strong_count() > 0,
        }
    }
}

/// The guards' metrics collector. Create it with [`GuardMetrics::register`] against the
/// component's registry, then `track_*` every guard as it is built (not per request).
#[derive(Debug, Default)]
pub struct GuardMetrics {
    tracked: Mutex<Vec<(String, Tracked)>>,
}

impl GuardMetrics {
    /// Register a collector into `registry` (never a global one) and return the handle used
    /// to track guards. Metric names are absolute (`hastack_guard_*`): register into a
    /// registry without a prefix.
    pub fn register(registry: &mut Registry) -> Arc<GuardMetrics> {
        let m = Arc::new(GuardMetrics::default());
        registry.register_collector(Box::new(Arc::clone(&m)));
        m
    }

    /// Track `t` under `scope`. Idempotent: tracking the same guard under the same scope
    /// again (a reload that carried the guard over) adds nothing, so `track_*` can be
    /// called on every build without duplicating series.
    fn push(&self, scope: &str, t: Tracked) {
        let mut v = self.tracked.lock();
        v.retain(|(_, t)| t.alive());
        if !v.iter().any(|(s, x)| s == scope && x.same(&t)) {
            v.push((scope.to_string(), t));
        }
    }

    /// Track a route's rate limit, breaker, fallback and switch under `scope = route name`.
    /// Its concurrency limiter is NOT tracked here, because it is often the pool's, shared
    /// by several routes: track it once with [`GuardMetrics::track_concurrency`] (under the
    /// route's name if it is the route's own, under the pool's name if shared).
    pub fn track_route(&self, route: &RouteGuard) {
        let scope = route.name();
        if let Some(r) = route.rate_limiter() {
            self.track_rate_limiter(scope, r);
        }
        if let Some(b) = route.breaker() {
            self.track_breaker(scope, b);
        }
        if let Some(f) = route.fallback() {
            self.push(scope, Tracked::Fallback(Arc::downgrade(f.served_counter())));
        }
        self.push(scope, Tracked::Switch(Arc::downgrade(route.switch())));
    }

    /// Track a rate limiter.
    pub fn track_rate_limiter(&self, scope: &str, r: &Arc<RateLimiter>) {
        self.push(scope, Tracked::Rate(Arc::downgrade(r)));
    }

    /// Track a breaker (per route, or per member with `scope = "pool/member"`).
    pub fn track_breaker(&self, scope: &str, b: &Arc<Breaker>) {
        self.push(scope, Tracked::Breaker(Arc::downgrade(b)));
    }

    /// Track a concurrency limiter (with its shedder). A limiter shared by several routes
    /// should be tracked once, under the pool's name.
    pub fn track_concurrency(&self, scope: &str, c: &Arc<ConcurrencyLimiter>) {
        self.push(scope, Tracked::Concurrency(Arc::downgrade(c)));
    }

    /// Track a retry budget.
    pub fn track_budget(&self, scope: &str, b: &Arc<SharedBudget>) {
        self.push(scope, Tracked::Budget(Arc::downgrade(b)));
    }
}

/// One sample: label pairs and a value.
struct Sample {
    labels: Vec<(&'static str, String)>,
    value: u64,
}

struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    samples: Vec<Sample>,
}

impl GuardMetrics {
    fn families(&self) -> Vec<Family> {
        let fam = |name, help, counter| Family {
            name,
            help,
            counter,
            samples: Vec::new(),
        };
        let mut rate_limited = fam(
            "hastack_guard_rate_limited",
            "Requests refused by a rate limit.",
            true,
        );
        let mut rate_delayed = fam(
            "hastack_guard_rate_delayed",
            "Requests paced (queued) by a rate limit.",
            true,
        );
        let mut evictions = fam(
            "hastack_guard_rate_key_evictions",
            "Rate-limit keys evicted to make room for new ones.",
            true,
        );
        let mut br_state = fam(
            "hastack_guard_breaker_state",
            "Circuit breaker state (1 for the current one).",
            false,
        );
        let mut br_trans = fam(
            "hastack_guard_breaker_transitions",
            "Circuit breaker transitions, by new state.",
            true,
        );
        let mut br_calls = fam(
            "hastack_guard_breaker_calls",
            "Calls seen by a circuit breaker, by result.",
            true,
        );
        let mut c_limit = fam(
            "hastack_guard_concurrency_limit",
            "Current concurrency limit.",
            false,
        );
        let mut c_inflight = fam(
            "hastack_guard_concurrency_inflight",
            "Requests holding a concurrency slot.",
            false,
        );
        let mut c_queued = fam(
            "hastack_guard_concurrency_queued",
            "Requests waiting for a concurrency slot.",
            false,
        );
        let mut c_rejected = fam(
            "hastack_guard_concurrency_rejected",
            "Requests refused by a concurrency limit, by reason.",
            true,
        );
        let mut shed_level = fam(
            "hastack_guard_shed_level",
            "Priority shedding level (classes shed from the bottom).",
            false,
        );
        let mut shed = fam(
            "hastack_guard_shed",
            "Requests shed by priority, by class.",
            true,
        );
        let mut fb = fam(
            "hastack_guard_fallback_served",
            "Fallback responses served.",
            true,
        );
        let mut disabled = fam(
            "hastack_guard_route_disabled",
            "1 while the route is switched off.",
            false,
        );
        let mut budget = fam(
            "hastack_guard_retry_budget_exhausted",
            "Retries refused by the retry budget.",
            true,
        );
        let one = |scope: &str, value: u64| Sample {
            labels: vec![("scope", scope.to_string())],
            value,
        };
        let two = |scope: &str, k: &'static str, v: &str, value: u64| Sample {
            labels: vec![("scope", scope.to_string()), (k, v.to_string())],
            value,
        };
        let mut v = self.tracked.lock();
        v.retain(|(_, t)| t.alive());
        for (scope, t) in v.iter() {
            match t {
                Tracked::Rate(w) => {
                    if let Some(r) = w.upgrade() {
                        rate_limited.samples.push(one(scope, r.rejected_total()));
                        rate_delayed.samples.push(one(scope, r.delayed_total()));
                        evictions.samples.push(one(scope, r.evictions_total()));
                    }
                }
                Tracked::Breaker(w) => {
                    if let Some(b) = w.upgrade() {
                        let current = b.state();
                        for s in [
                            BreakerState::Closed,
                            BreakerState::Open,
                            BreakerState::HalfOpen,
                        ] {
                            br_state.samples.push(two(
                                scope,
                                "state",
                                s.as_str(),
                                u64::from(s == current),
                            ));
                        }
                        let c = b.counts();
                        br_trans.samples.push(two(scope, "to", "open", c.opened));
                        br_trans
                            .samples
                            .push(two(scope, "to", "half_open", c.half_opened));
                        br_trans.samples.push(two(scope, "to", "closed", c.closed));
                        br_calls.samples.push(two(scope, "result", "all", c.calls));
                        br_calls
                            .samples
                            .push(two(scope, "result", "failed", c.failed));
                        br_calls.samples.push(two(scope, "result", "slow", c.slow));
                        br_calls
                            .samples
                            .push(two(scope, "result", "rejected", c.rejected));
                    }
                }
                Tracked::Concurrency(w) => {
                    if let Some(c) = w.upgrade() {
                        let s = c.snapshot();
                        c_limit.samples.push(one(scope, s.limit as u64));
                        c_inflight.samples.push(one(scope, s.inflight as u64));
                        c_queued.samples.push(one(scope, s.queued as u64));
                        c_rejected
                            .samples
                            .push(two(scope, "reason", "full", s.rejected_full));
                        c_rejected.samples.push(two(
                            scope,
                            "reason",
                            "timeout",
                            s.rejected_timeout,
                        ));
                        if let Some(sh) = c.shedder() {
                            shed_level.samples.push(one(scope, s.shed_level as u64));
                            for (i, n) in s.shed.iter().enumerate() {
                                let class =
                                    sh.policy().classes.get(i).map_or("?", |c| c.name.as_str());
                                shed.samples.push(two(scope, "class", class, *n));
                            }
                        }
                    }
                }
                Tracked::Fallback(w) => {
                    if let Some(n) = w.upgrade() {
                        fb.samples.push(one(scope, n.load(Ordering::Relaxed)));
                    }
                }
                Tracked::Switch(w) => {
                    if let Some(s) = w.upgrade() {
                        disabled
                            .samples
                            .push(one(scope, u64::from(s.is_disabled())));
                    }
                }
                Tracked::Budget(w) => {
                    if let Some(b) = w.upgrade() {
                        budget.samples.push(one(scope, b.exhausted_total()));
                    }
                }
            }
        }
        vec![
            rate_limited,
            rate_delayed,
            evictions,
            br_state,
            br_trans,
            br_calls,
            c_limit,
            c_inflight,
            c_queued,
            c_rejected,
            shed_level,
            shed,
            fb,
            disabled,
            budget,
        ]
    }
}

impl Collector for GuardMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in self.families() {
            if f.samples.is_empty() {
                continue;
            }
            let ty = if f.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut me = encoder.encode_descriptor(f.name, f.help, None, ty)?;
            for s in &f.samples {
                let labels: Vec<(&str, &str)> =
                    s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let fe = me.encode_family(&labels)?;
                if f.counter {
                    ConstCounter::new(s.value).encode(fe)?;
                } else {
                    ConstGauge::new(i64::try_from(s.value).unwrap_or(i64::MAX)).encode(fe)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerPolicy;

    #[test]
    fn scraped_from_guards_and_forgotten_when_dropped() {
        let mut reg = Registry::default();
        let m = GuardMetrics::register(&mut reg);
        let b = Breaker::new(BreakerPolicy::default(), 1);
        m.track_breaker("pool/a", &b);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains("hastack_guard_breaker_state{scope=\"pool/a\",state=\"closed\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("hastack_guard_breaker_calls_total{scope=\"pool/a\",result=\"all\"} 0"),
            "{out}"
        );
        let route =
            crate::RouteGuard::new("checkout", crate::SwitchBoard::new().switch("checkout"));
        m.track_route(&route);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains("hastack_guard_route_disabled{scope=\"checkout\"} 0"),
            "{out}"
        );
        // Tracking again (a reload that kept the guard) adds no second series.
        m.track_breaker("pool/a", &b);
        m.track_route(&route);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert_eq!(
            out.matches("hastack_guard_breaker_state{scope=\"pool/a\",state=\"closed\"}")
                .count(),
            1,
            "{out}"
        );
        assert_eq!(
            out.matches("hastack_guard_route_disabled{scope=\"checkout\"}")
                .count(),
            1,
            "{out}"
        );
        drop(b);
        drop(route);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            !out.contains("pool/a") && !out.contains("checkout"),
            "{out}"
        );
    }
}
