//! Prometheus metrics of the proxy.
//!
//! Families are registered once into the registry the caller passes in. The hot path never
//! looks a series up by labels: each member and listener caches its own handles (counters
//! and histograms are reference-counted atomics) when the runtime is built, and series of
//! members removed by a reload are deleted.

use std::sync::Arc;

use hastack_core::health::State;

use crate::failure::{ErrorKind, Failure};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds: 0.5 ms to 30 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

/// Labels of per-member series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    /// Pool name.
    pub pool: String,
    /// Member name.
    pub member: String,
}

/// Labels of per-member error series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberErrorLabels {
    /// Pool name.
    pub pool: String,
    /// Member name.
    pub member: String,
    /// A [`ErrorKind`] a member can be blamed for (`connect_refused`, `upstream_reset`...).
    pub kind: String,
}

/// Labels of per-member state series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberStateLabels {
    /// Pool name.
    pub pool: String,
    /// Member name.
    pub member: String,
    /// State name.
    pub state: String,
}

/// Labels of per-pool series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Pool name.
    pub pool: String,
}

/// Labels of retry series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// Pool name.
    pub pool: String,
    /// The [`ErrorKind`] of the failure that caused the retry.
    pub reason: String,
}

/// Labels of per-listener request series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// Listener name.
    pub listener: String,
    /// Status class: `2xx`, `3xx`, `4xx`, `5xx` (TCP: `ok`/`error`).
    pub class: String,
}

/// Labels of per-listener connection series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    /// Listener name.
    pub listener: String,
}

/// Labels of reload series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: String,
}

#[derive(Clone)]
struct LatencyHistogram;

impl MetricConstructor<Histogram> for LatencyHistogram {
    fn new_metric(&self) -> Histogram {
        Histogram::new(LATENCY_BUCKETS)
    }
}

/// Every metric family of the proxy.
#[derive(Clone)]
pub struct Metrics {
    member_requests: Family<MemberLabels, Counter>,
    member_errors: Family<MemberErrorLabels, Counter>,
    member_latency: Family<MemberLabels, Histogram, LatencyHistogram>,
    member_state: Family<MemberStateLabels, Gauge>,
    member_ejections: Family<MemberLabels, Counter>,
    member_inflight: Family<MemberLabels, Gauge>,
    member_transitions: Family<MemberStateLabels, Counter>,
    retries: Family<RetryLabels, Counter>,
    redos: Family<PoolLabels, Counter>,
    budget_exhausted: Family<PoolLabels, Counter>,
    no_member: Family<PoolLabels, Counter>,
    requests: Family<ListenerLabels, Counter>,
    connections: Family<ConnLabels, Counter>,
    active_connections: Family<ConnLabels, Gauge>,
    reloads: Family<ResultLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Create the families and register them under `hastack_proxy_*` in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            member_requests: Family::default(),
            member_errors: Family::default(),
            member_latency: Family::new_with_constructor(LatencyHistogram),
            member_state: Family::default(),
            member_ejections: Family::default(),
            member_inflight: Family::default(),
            member_transitions: Family::default(),
            retries: Family::default(),
            redos: Family::default(),
            budget_exhausted: Family::default(),
            no_member: Family::default(),
            requests: Family::default(),
            connections: Family::default(),
            active_connections: Family::default(),
            reloads: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("hastack_proxy");
        r.register(
            "member_requests",
            "Requests sent to a member (every try counts)",
            m.member_requests.clone(),
        );
        r.register(
            "member_errors",
            "Failed tries the member is blamed for, by kind",
            m.member_errors.clone(),
        );
        r.register(
            "member_latency_seconds",
            "Time from sending a try to receiving its response headers",
            m.member_latency.clone(),
        );
        r.register(
            "member_state",
            "1 for the member's current health state, 0 for the others",
            m.member_state.clone(),
        );
        r.register(
            "member_ejections",
            "Passive ejections of a member (consecutive gateway errors)",
            m.member_ejections.clone(),
        );
        r.register(
            "member_inflight",
            "Requests in flight to a member",
            m.member_inflight.clone(),
        );
        r.register(
            "member_transitions",
            "Health state changes of a member, by the state entered",
            m.member_transitions.clone(),
        );
        r.register(
            "retries",
            "Retries sent, by pool and cause",
            m.retries.clone(),
        );
        r.register(
            "redos",
            "Tries redone on a fresh connection to the same member after a pooled connection \
             turned out closed (the keep-alive race); free: no attempt, no budget",
            m.redos.clone(),
        );
        r.register(
            "retry_budget_exhausted",
            "Retries refused because the pool's retry budget was spent",
            m.budget_exhausted.clone(),
        );
        r.register(
            "no_member",
            "Requests answered 503 because the pool had no usable member",
            m.no_member.clone(),
        );
        r.register(
            "requests",
            "Requests answered per listener, by status class",
            m.requests.clone(),
        );
        r.register(
            "connections",
            "Client connections accepted per listener",
            m.connections.clone(),
        );
        r.register(
            "active_connections",
            "Client connections open per listener",
            m.active_connections.clone(),
        );
        r.register(
            "reloads",
            "Configuration reloads, by result",
            m.reloads.clone(),
        );
        m
    }

    /// Handles for one member.
    pub fn member(&self, pool: &str, member: &str) -> MemberMetrics {
        let l = MemberLabels {
            pool: pool.to_string(),
            member: member.to_string(),
        };
        let errors = ErrorKind::ALL.map(|kind| {
            kind.can_blame_member().then(|| {
                self.member_errors
                    .get_or_create(&MemberErrorLabels {
                        pool: pool.to_string(),
                        member: member.to_string(),
                        kind: kind.as_str().to_string(),
                    })
                    .clone()
            })
        });
        let states = State::ALL.map(|s| {
            self.member_state
                .get_or_create(&MemberStateLabels {
                    pool: pool.to_string(),
                    member: member.to_string(),
                    state: s.as_str().to_string(),
                })
                .clone()
        });
        let transitions = State::ALL.map(|s| {
            self.member_transitions
                .get_or_create(&MemberStateLabels {
                    pool: pool.to_string(),
                    member: member.to_string(),
                    state: s.as_str().to_string(),
                })
                .clone()
        });
        MemberMetrics {
            requests: self.member_requests.get_or_create(&l).clone(),
            latency: self.member_latency.get_or_create(&l).clone(),
            ejections: self.member_ejections.get_or_create(&l).clone(),
            inflight: self.member_inflight.get_or_create(&l).clone(),
            errors,
            states,
            transitions,
        }
    }

    /// Delete a removed member's series.
    pub fn remove_member(&self, pool: &str, member: &str) {
        let l = MemberLabels {
            pool: pool.to_string(),
            member: member.to_string(),
        };
        self.member_requests.remove(&l);
        self.member_latency.remove(&l);
        self.member_ejections.remove(&l);
        self.member_inflight.remove(&l);
        for kind in ErrorKind::ALL.iter().filter(|k| k.can_blame_member()) {
            self.member_errors.remove(&MemberErrorLabels {
                pool: pool.to_string(),
                member: member.to_string(),
                kind: kind.as_str().to_string(),
            });
        }
        for s in State::ALL {
            let sl = MemberStateLabels {
                pool: pool.to_string(),
                member: member.to_string(),
                state: s.as_str().to_string(),
            };
            self.member_state.remove(&sl);
            self.member_transitions.remove(&sl);
        }
    }

    /// Handles for one pool.
    pub fn pool(&self, pool: &str) -> PoolMetrics {
        let l = PoolLabels {
            pool: pool.to_string(),
        };
        let retries = ErrorKind::ALL.map(|kind| {
            kind.can_blame_member().then(|| {
                self.retries
                    .get_or_create(&RetryLabels {
                        pool: pool.to_string(),
                        reason: kind.as_str().to_string(),
                    })
                    .clone()
            })
        });
        PoolMetrics {
            retries,
            redos: self.redos.get_or_create(&l).clone(),
            budget_exhausted: self.budget_exhausted.get_or_create(&l).clone(),
            no_member: self.no_member.get_or_create(&l).clone(),
        }
    }

    /// Handles for one listener.
    pub fn listener(&self, listener: &str) -> Arc<ListenerMetrics> {
        let class = |c: &str| {
            self.requests
                .get_or_create(&ListenerLabels {
                    listener: listener.to_string(),
                    class: c.to_string(),
                })
                .clone()
        };
        let l = ConnLabels {
            listener: listener.to_string(),
        };
        Arc::new(ListenerMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            tcp_ok: class("ok"),
            tcp_error: class("error"),
            connections: self.connections.get_or_create(&l).clone(),
            active: self.active_connections.get_or_create(&l).clone(),
        })
    }

    /// Count a reload.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }
}

/// Cached handles of one member.
#[derive(Clone, Debug)]
pub struct MemberMetrics {
    /// Tries sent.
    pub requests: Counter,
    /// Try latency to headers.
    pub latency: Histogram,
    /// Ejections.
    pub ejections: Counter,
    /// In flight.
    pub inflight: Gauge,
    /// Failed tries the member is blamed for, by [`ErrorKind::index`] (`None` for kinds no
    /// member can be blamed for).
    errors: [Option<Counter>; ErrorKind::ALL.len()],
    states: [Gauge; 5],
    transitions: [Counter; 5],
}

impl MemberMetrics {
    /// Count a failed try the member is blamed for.
    pub fn error(&self, failure: &Failure) {
        if let Some(c) = &self.errors[failure.kind.index()] {
            c.inc();
        }
    }

    /// Publish the current state (1 for it, 0 for the others).
    pub fn set_state(&self, state: State) {
        for (s, g) in State::ALL.iter().zip(&self.states) {
            g.set(i64::from(*s == state));
        }
    }

    /// Count a transition into `to`.
    pub fn transition(&self, to: State) {
        if let Some(i) = State::ALL.iter().position(|s| *s == to) {
            self.transitions[i].inc();
        }
    }
}

/// Cached handles of one pool.
#[derive(Clone, Debug)]
pub struct PoolMetrics {
    /// Retries by the [`ErrorKind::index`] of the failure that caused them.
    retries: [Option<Counter>; ErrorKind::ALL.len()],
    /// Free redos after a stale pooled connection.
    pub redos: Counter,
    /// Budget refusals.
    pub budget_exhausted: Counter,
    /// 503 for lack of members.
    pub no_member: Counter,
}

impl PoolMetrics {
    /// Count a retry caused by `failure`.
    pub fn retry(&self, failure: &Failure) {
        if let Some(c) = &self.retries[failure.kind.index()] {
            c.inc();
        }
    }
}

/// Cached handles of one listener.
#[derive(Debug)]
pub struct ListenerMetrics {
    by_class: [Counter; 5],
    /// TCP sessions that ended cleanly.
    pub tcp_ok: Counter,
    /// TCP sessions that failed to reach a member.
    pub tcp_error: Counter,
    /// Accepted connections.
    pub connections: Counter,
    /// Open connections.
    pub active: Gauge,
}

impl ListenerMetrics {
    /// Count a response with `status`.
    pub fn response(&self, status: u16) {
        let i = usize::from((status / 100).clamp(1, 5)) - 1;
        self.by_class[i].inc();
    }
}
