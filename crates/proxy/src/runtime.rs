//! One configuration generation at run time: listeners with their resolved routes, and
//! pools with their (possibly carried-over) members.
//!
//! Building a [`Runtime`] from a [`ProxySpec`] is where reload continuity happens: a member
//! whose pool name, member name and address are unchanged is carried over with its health
//! state, load statistics, idle connections and metric series; everything else is new.
//! Members that disappear are retired (prober stopped, idle connections closed, series
//! deleted) only after the new runtime is in place.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{ListenerKind, ListenerSpec, ProxySpec, RouteSpec};
use crate::metrics::{ListenerMetrics, Metrics};
use crate::pool::{Member, Pool};

/// A route with its pool resolved.
#[derive(Debug)]
pub struct RouteRt {
    /// The validated route.
    pub spec: RouteSpec,
    /// Its pool.
    pub pool: Arc<Pool>,
}

/// A listener's run-time view.
#[derive(Debug)]
pub struct ListenerRt {
    /// The validated listener.
    pub spec: ListenerSpec,
    /// HTTP routes, most specific first.
    pub routes: Vec<RouteRt>,
    /// Pool for unmatched HTTP requests, or the TCP pool.
    pub default_pool: Option<Arc<Pool>>,
    /// Metric handles.
    pub metrics: Arc<ListenerMetrics>,
}

impl ListenerRt {
    /// The pool serving `host` + `path`, and the route's name.
    pub fn route(&self, host: &str, path: &str) -> Option<(&Arc<Pool>, Option<&str>)> {
        for r in &self.routes {
            if r.spec.host.matches(host) && path.starts_with(r.spec.path_prefix.as_str()) {
                return Some((&r.pool, Some(&r.spec.name)));
            }
        }
        self.default_pool.as_ref().map(|p| (p, None))
    }
}

/// One configuration generation.
#[derive(Debug)]
pub struct Runtime {
    /// Increases with every reload.
    pub generation: u64,
    /// The validated config.
    pub spec: ProxySpec,
    /// Pools by name.
    pub pools: HashMap<Arc<str>, Arc<Pool>>,
    /// Listeners by name.
    pub listeners: HashMap<Arc<str>, Arc<ListenerRt>>,
}

/// What a build carried over and what it left behind.
#[derive(Debug, Default)]
pub struct BuildReport {
    /// Members new in this generation (they need probers).
    pub added: Vec<Arc<Member>>,
    /// Carried-over members whose pool's health check changed (probers restart).
    pub reprobe: Vec<Arc<Member>>,
    /// Members of the previous generation that are gone.
    pub removed: Vec<Arc<Member>>,
    /// Carried-over members.
    pub kept: usize,
}

impl Runtime {
    /// Build generation `generation` from `spec`, carrying members over from `previous`.
    pub fn build(
        generation: u64,
        spec: ProxySpec,
        previous: Option<&Runtime>,
        metrics: &Metrics,
    ) -> (Runtime, BuildReport) {
        let mut report = BuildReport::default();
        let mut pools = HashMap::new();
        let mut still_used: std::collections::HashSet<*const Member> = Default::default();
        for (name, pspec) in &spec.pools {
            let old_pool = previous.and_then(|p| p.pools.get(name));
            let health_changed = old_pool.is_some_and(|op| {
                op.spec.health.as_ref().map(|h| (&h.check, &h.schedule))
                    != pspec.health.as_ref().map(|h| (&h.check, &h.schedule))
            });
            let members: Vec<Arc<Member>> = pspec
                .members
                .iter()
                .map(|mspec| {
                    let carried = old_pool
                        .and_then(|op| op.members.iter().find(|m| m.same_identity(mspec)).cloned());
                    match carried {
                        Some(m) => {
                            m.update(pspec, mspec);
                            report.kept += 1;
                            if health_changed {
                                report.reprobe.push(m.clone());
                            }
                            still_used.insert(Arc::as_ptr(&m));
                            m
                        }
                        None => {
                            let m = Arc::new(Member::new(
                                pspec,
                                mspec,
                                spec.workers,
                                metrics.member(name, &mspec.name),
                            ));
                            report.added.push(m.clone());
                            m
                        }
                    }
                })
                .collect();
            let pool = Pool::new(pspec.clone(), members, metrics.pool(name));
            pools.insert(name.clone(), pool);
        }
        if let Some(prev) = previous {
            for p in prev.pools.values() {
                for m in &p.members {
                    if !still_used.contains(&Arc::as_ptr(m)) {
                        report.removed.push(m.clone());
                    }
                }
            }
        }
        let listeners = spec
            .listeners
            .iter()
            .map(|l| {
                let rt = Arc::new(build_listener(l, &pools, metrics));
                (l.name.clone(), rt)
            })
            .collect();
        (
            Runtime {
                generation,
                spec,
                pools,
                listeners,
            },
            report,
        )
    }
}

fn build_listener(
    l: &ListenerSpec,
    pools: &HashMap<Arc<str>, Arc<Pool>>,
    metrics: &Metrics,
) -> ListenerRt {
    // Validation guarantees every referenced pool exists; a missing one would only drop
    // the route, never panic.
    let (routes, default_pool) = match &l.kind {
        ListenerKind::Http(h) => (
            h.routes
                .iter()
                .filter_map(|r| {
                    pools.get(&r.pool).map(|p| RouteRt {
                        spec: r.clone(),
                        pool: p.clone(),
                    })
                })
                .collect(),
            h.default_pool.as_ref().and_then(|p| pools.get(p).cloned()),
        ),
        ListenerKind::Tcp { pool } => (Vec::new(), pools.get(pool).cloned()),
    };
    ListenerRt {
        spec: l.clone(),
        routes,
        default_pool,
        metrics: metrics.listener(&l.name),
    }
}
