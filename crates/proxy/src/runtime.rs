//! One configuration generation at run time: listeners with their resolved routes and
//! guards, and pools with their (possibly carried-over) members.
//!
//! Building a [`Runtime`] from a [`ProxySpec`] is where reload continuity happens: a member
//! whose pool name, member name and address are unchanged is carried over with its health
//! state, load statistics, idle connections, breaker and metric series; everything else is
//! new. Members that disappear are retired (prober stopped, idle connections closed, series
//! deleted) only after the new runtime is in place.
//!
//! Guards follow the same rule: a rate limiter, breaker or bulkhead whose validated policy
//! is unchanged is carried over (same `Arc`, so its state and counters survive the
//! reload); a changed one starts fresh. Route switches come from the process-wide
//! [`SwitchBoard`], which outlives every generation, so an operator's `disable` survives
//! any number of reloads.
//!
//! Architecture invariant: a `Runtime` is immutable once built; everything that changes
//! while it serves (health, guard state) lives behind atomics or locks inside the members,
//! pools and guards it points to.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hastack_guard::config::RateHeaders;
use hastack_guard::{
    Breaker, ClassId, ConcurrencyLimiter, FallbackAction, GuardMetrics, RateLimiter, RouteGuard,
    SwitchBoard,
};

use crate::config::{ListenerKind, ListenerSpec, ProxySpec, RouteSpec};
use crate::metrics::{ListenerMetrics, Metrics};
use crate::pool::{Member, Pool};

/// Guard state that outlives configuration generations: the route switches and the
/// collector that exposes every guard on `/metrics`.
#[derive(Debug, Clone)]
pub struct Guards {
    /// Route switches by route name (`POST /admin/routes/{route}/disable`).
    pub board: Arc<SwitchBoard>,
    /// The `hastack_guard_*` collector, registered once into the proxy's registry.
    pub metrics: Arc<GuardMetrics>,
}

impl Guards {
    /// A fresh board and a collector registered into `registry`.
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Guards {
        Guards {
            board: SwitchBoard::new(),
            metrics: GuardMetrics::register(registry),
        }
    }
}

/// A route with its pool, guards and fallback resolved.
#[derive(Debug)]
pub struct RouteRt {
    /// The validated route.
    pub spec: RouteSpec,
    /// Its pool.
    pub pool: Arc<Pool>,
    /// Its guards: switch, rate limit, breaker, bulkhead (its own, else the pool's),
    /// fallback.
    pub guard: RouteGuard,
    /// The pool's bulkhead and the route's class in it, when the route has a bulkhead of
    /// its own as well (then both apply: the route's bounds the route, the pool's bounds
    /// everything sent to the pool).
    pub pool_slot: Option<(Arc<ConcurrencyLimiter>, ClassId)>,
    /// The pool a `fallback.pool` names, and the route's class in that pool's bulkhead.
    pub fallback_pool: Option<(Arc<Pool>, ClassId)>,
    /// When to send the `RateLimit` header fields.
    pub rate_headers: RateHeaders,
    /// Whether the guard's bulkhead is the route's own (not the pool's).
    own_limiter: bool,
}

/// A listener's run-time view.
#[derive(Debug)]
pub struct ListenerRt {
    /// The validated listener.
    pub spec: ListenerSpec,
    /// HTTP routes, most specific first.
    pub routes: Vec<RouteRt>,
    /// The route of HTTP requests no other route matches (the listener's `pool`).
    pub default_route: Option<RouteRt>,
    /// Pool for unmatched HTTP requests, or the TCP pool.
    pub default_pool: Option<Arc<Pool>>,
    /// Listener-wide rate limit, checked before routing, and when to send its headers.
    pub rate_limit: Option<(Arc<RateLimiter>, RateHeaders)>,
    /// Metric handles.
    pub metrics: Arc<ListenerMetrics>,
}

impl ListenerRt {
    /// The route serving `host` + `path` (the default route when no other matches).
    pub fn route(&self, host: &str, path: &str) -> Option<&RouteRt> {
        self.routes
            .iter()
            .find(|r| r.spec.host.matches(host) && path.starts_with(r.spec.path_prefix.as_str()))
            .or(self.default_route.as_ref())
    }

    /// Every route, the default one last.
    pub fn all_routes(&self) -> impl Iterator<Item = &RouteRt> {
        self.routes.iter().chain(self.default_route.as_ref())
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

impl Runtime {
    /// The route called `name`, on any listener.
    pub fn route(&self, name: &str) -> Option<&RouteRt> {
        self.listeners
            .values()
            .flat_map(|l| l.all_routes())
            .find(|r| &*r.spec.name == name)
    }
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
    /// Build generation `generation` from `spec`, carrying members and guard state over
    /// from `previous`.
    pub fn build(
        generation: u64,
        spec: ProxySpec,
        previous: Option<&Runtime>,
        metrics: &Metrics,
        guards: &Guards,
    ) -> (Runtime, BuildReport) {
        let mut report = BuildReport::default();
        let mut pools = HashMap::new();
        let mut still_used: HashSet<*const Member> = Default::default();
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
            for m in &members {
                if let Some(b) = m.breaker() {
                    guards
                        .metrics
                        .track_breaker(&format!("{name}/{}", m.name()), &b);
                }
            }
            let limiter = pspec.concurrency.as_ref().map(|policy| {
                let carried = old_pool
                    .and_then(|op| op.limiter.as_ref())
                    .filter(|l| l.policy() == policy)
                    .cloned();
                let l = carried.unwrap_or_else(|| ConcurrencyLimiter::new(policy.clone()));
                guards
                    .metrics
                    .track_concurrency(&format!("pool:{name}"), &l);
                l
            });
            let pool = Pool::new(pspec.clone(), members, metrics.pool(name), limiter);
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
        let old_routes: HashMap<&str, &RouteRt> = previous
            .into_iter()
            .flat_map(|p| p.listeners.values())
            .flat_map(|l| l.all_routes())
            .map(|r| (&*r.spec.name, r))
            .collect();
        let listeners: HashMap<Arc<str>, Arc<ListenerRt>> = spec
            .listeners
            .iter()
            .map(|l| {
                let old = previous.and_then(|p| p.listeners.get(&l.name));
                let rt = Arc::new(build_listener(l, &pools, old, &old_routes, metrics, guards));
                (l.name.clone(), rt)
            })
            .collect();
        // Forget the switches of routes that are gone, except disabled ones: an operator's
        // decision outlives a route being briefly removed from the file.
        let names: HashSet<&str> = listeners
            .values()
            .flat_map(|l| l.all_routes())
            .map(|r| &*r.spec.name)
            .collect();
        guards
            .board
            .retain(|name, s| names.contains(name) || s.is_disabled());
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
    old: Option<&Arc<ListenerRt>>,
    old_routes: &HashMap<&str, &RouteRt>,
    metrics: &Metrics,
    guards: &Guards,
) -> ListenerRt {
    // Validation guarantees every referenced pool exists; a missing one would only drop
    // the route, never panic.
    let route = |r: &RouteSpec| build_route(r, pools, old_routes.get(&*r.name).copied(), guards);
    let (routes, default_route, default_pool, rate_limit) = match &l.kind {
        ListenerKind::Http(h) => {
            let rate_limit = h.rate_limit.as_ref().map(|spec| {
                let carried = old
                    .and_then(|o| o.rate_limit.as_ref())
                    .filter(|(r, _)| r.policy() == &spec.policy)
                    .map(|(r, _)| r.clone());
                let r = carried.unwrap_or_else(|| spec.build());
                guards
                    .metrics
                    .track_rate_limiter(&format!("listener:{}", l.name), &r);
                (r, spec.headers)
            });
            (
                h.routes.iter().filter_map(route).collect(),
                h.default_route.as_ref().and_then(route),
                h.default_pool.as_ref().and_then(|p| pools.get(p).cloned()),
                rate_limit,
            )
        }
        ListenerKind::Tcp { pool } => (Vec::new(), None, pools.get(pool).cloned(), None),
    };
    ListenerRt {
        spec: l.clone(),
        routes,
        default_route,
        default_pool,
        rate_limit,
        metrics: metrics.listener(&l.name),
    }
}

/// The class `priority` has in `limiter` (default `normal`; the most important class when
/// the limiter's classes have no `normal`, which validation warns about).
fn class_in(limiter: &ConcurrencyLimiter, priority: Option<&str>) -> ClassId {
    priority
        .and_then(|p| limiter.class(p))
        .or_else(|| limiter.class("normal"))
        .unwrap_or(ClassId(0))
}

/// Build a route's guards, carrying over from `old` (the previous generation's route of the
/// same name) every guard whose policy is unchanged.
fn build_route(
    spec: &RouteSpec,
    pools: &HashMap<Arc<str>, Arc<Pool>>,
    old: Option<&RouteRt>,
    guards: &Guards,
) -> Option<RouteRt> {
    let pool = pools.get(&spec.pool)?.clone();
    let g = &spec.guards;
    let priority = g.priority.as_deref();
    let mut guard = RouteGuard::new(&spec.name, guards.board.switch(&spec.name));
    let mut rate_headers = RateHeaders::OnReject;
    if let Some(r) = &g.rate_limit {
        let carried = old
            .and_then(|o| o.guard.rate_limiter())
            .filter(|l| l.policy() == &r.policy)
            .cloned();
        guard = guard.with_rate_limit(carried.unwrap_or_else(|| r.build()));
        rate_headers = r.headers;
    }
    if let Some(b) = &g.breaker {
        let carried = old
            .and_then(|o| o.guard.breaker())
            .filter(|x| x.policy() == *b)
            .cloned();
        guard =
            guard.with_breaker(carried.unwrap_or_else(|| {
                Breaker::new(*b, hastack_balance::hash_key(spec.name.as_bytes()))
            }));
    }
    let own = g.concurrency.as_ref().map(|policy| {
        old.filter(|o| o.own_limiter)
            .and_then(|o| o.guard.concurrency())
            .filter(|l| l.policy() == policy)
            .cloned()
            .unwrap_or_else(|| ConcurrencyLimiter::new(policy.clone()))
    });
    let own_limiter = own.is_some();
    let pool_slot = match (&own, &pool.limiter) {
        (Some(_), Some(pl)) => Some((pl.clone(), class_in(pl, priority))),
        _ => None,
    };
    if let Some(l) = own.or_else(|| pool.limiter.clone()) {
        let class = class_in(&l, priority);
        if own_limiter {
            guards.metrics.track_concurrency(&spec.name, &l);
        }
        guard = guard.with_concurrency(l, class);
    }
    let mut fallback_pool = None;
    if let Some(f) = &g.fallback {
        // Same action and coverage: keep the old one, so its served counter keeps counting.
        let carried = old.and_then(|o| o.guard.fallback()).filter(|o| {
            o.action == f.action && o.on == f.on && o.on_upstream_error == f.on_upstream_error
        });
        guard = guard.with_fallback(carried.unwrap_or(f).clone());
        if let FallbackAction::Pool(name) = &f.action {
            fallback_pool = pools.get(name.as_str()).map(|p| {
                let class = p
                    .limiter
                    .as_ref()
                    .map_or(ClassId(0), |l| class_in(l, priority));
                (p.clone(), class)
            });
        }
    }
    guards.metrics.track_route(&guard);
    Some(RouteRt {
        spec: spec.clone(),
        pool,
        guard,
        pool_slot,
        fallback_pool,
        rate_headers,
        own_limiter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hastack_config::Source;
    use prometheus_client::registry::Registry;

    const TEXT: &str = r#"
[proxy]
workers = 1
[[proxy.listeners]]
name = "web"
listen = "127.0.0.1:8080"
pool = "app"
[proxy.listeners.rate_limit]
rate = 1000
[[proxy.listeners.routes]]
name = "checkout"
path_prefix = "/checkout"
pool = "app"
priority = "critical"
[proxy.listeners.routes.rate_limit]
rate = 20
[proxy.listeners.routes.breaker]
failure_ratio = 0.5
[proxy.listeners.routes.concurrency]
max_inflight = 10
[proxy.listeners.routes.fallback]
body = "sorry"
[[proxy.listeners.routes]]
name = "search"
path_prefix = "/search"
pool = "app"
[proxy.listeners.routes.fallback]
pool = "static"
[proxy.pools.app]
members = ["127.0.0.1:9001"]
[proxy.pools.app.concurrency]
max_inflight = 100
[proxy.pools.app.concurrency.shedding]
[proxy.pools.app.breaker]
[proxy.pools.static]
members = ["127.0.0.1:9101"]
[proxy.pools.static.concurrency]
max_inflight = 5
"#;

    fn spec(text: &str) -> ProxySpec {
        let src = Source::parse("t.toml", text.to_string()).unwrap();
        crate::config::load(&src).unwrap().0
    }

    fn same<T>(a: Option<&Arc<T>>, b: Option<&Arc<T>>) -> bool {
        matches!((a, b), (Some(a), Some(b)) if Arc::ptr_eq(a, b))
    }

    #[tokio::test]
    async fn unchanged_guards_survive_a_rebuild_and_changed_ones_restart() {
        let mut reg = Registry::default();
        let metrics = Metrics::register(&mut reg);
        let guards = Guards::register(&mut reg);
        let (a, _) = Runtime::build(1, spec(TEXT), None, &metrics, &guards);
        let (b, _) = Runtime::build(2, spec(TEXT), Some(&a), &metrics, &guards);
        let (ra, rb) = (a.route("checkout").unwrap(), b.route("checkout").unwrap());
        assert!(same(ra.guard.rate_limiter(), rb.guard.rate_limiter()));
        assert!(same(ra.guard.breaker(), rb.guard.breaker()));
        assert!(same(ra.guard.concurrency(), rb.guard.concurrency()));
        assert_eq!(ra.guard.fallback().unwrap().served_total(), 0);
        assert!(Arc::ptr_eq(ra.guard.switch(), rb.guard.switch()));
        // The route has its own bulkhead and the pool one too: both apply.
        let (pool_limiter, class) = rb.pool_slot.as_ref().unwrap();
        assert!(same(Some(pool_limiter), b.pools["app"].limiter.as_ref()));
        assert_eq!(*class, ClassId(0), "critical is the first default class");
        assert!(same(
            a.pools["app"].limiter.as_ref(),
            b.pools["app"].limiter.as_ref()
        ));
        assert!(same(
            a.pools["app"].members[0].breaker().as_ref(),
            b.pools["app"].members[0].breaker().as_ref()
        ));
        let la = a.listeners["web"].rate_limit.as_ref().unwrap();
        let lb = b.listeners["web"].rate_limit.as_ref().unwrap();
        assert!(Arc::ptr_eq(&la.0, &lb.0));
        // The search route borrows the pool's bulkhead at its "normal" class and falls
        // back to the static pool.
        let search = b.route("search").unwrap();
        assert!(same(
            search.guard.concurrency(),
            b.pools["app"].limiter.as_ref()
        ));
        let (fp, _) = search.fallback_pool.as_ref().unwrap();
        assert_eq!(fp.name(), "static");
        // The default route exists, named after the listener.
        assert!(b.route("web").unwrap().spec.is_default);

        // A switch thrown in generation 2 holds in generation 3.
        rb.guard.switch().disable();
        // Members are carried over (the same objects); keep the breaker they hold now.
        let member_breaker = b.pools["app"].members[0].breaker();
        let changed = TEXT
            .replace("failure_ratio = 0.5", "failure_ratio = 0.4")
            .replace(
                "[proxy.pools.app.breaker]\n",
                "[proxy.pools.app.breaker]\nmin_calls = 7\n",
            );
        let (c, _) = Runtime::build(3, spec(&changed), Some(&b), &metrics, &guards);
        let rc = c.route("checkout").unwrap();
        assert!(rc.guard.switch().is_disabled());
        assert!(same(rb.guard.rate_limiter(), rc.guard.rate_limiter()));
        assert!(
            !same(rb.guard.breaker(), rc.guard.breaker()),
            "changed policy: fresh breaker"
        );
        assert!(Arc::ptr_eq(
            &b.pools["app"].members[0],
            &c.pools["app"].members[0]
        ));
        assert!(!same(
            member_breaker.as_ref(),
            c.pools["app"].members[0].breaker().as_ref()
        ));
        assert_eq!(
            c.pools["app"].members[0]
                .breaker()
                .unwrap()
                .policy()
                .min_calls,
            7
        );

        // One series per guard, however many builds tracked it.
        drop((a, b, member_breaker));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        for (needle, n) in [
            ("hastack_guard_route_disabled{scope=\"checkout\"} 1", 1),
            ("hastack_guard_concurrency_limit{scope=\"pool:app\"} 100", 1),
            ("hastack_guard_concurrency_limit{scope=\"checkout\"} 10", 1),
            (
                "hastack_guard_concurrency_limit{scope=\"pool:static\"} 5",
                1,
            ),
            (
                "hastack_guard_breaker_state{scope=\"app/127.0.0.1:9001\",state=\"closed\"} 1",
                1,
            ),
            (
                "hastack_guard_rate_limited_total{scope=\"listener:web\"} 0",
                1,
            ),
        ] {
            assert_eq!(out.matches(needle).count(), n, "{needle} in:\n{out}");
        }
    }

    #[tokio::test]
    async fn switches_of_removed_routes_are_forgotten_unless_disabled() {
        let mut reg = Registry::default();
        let metrics = Metrics::register(&mut reg);
        let guards = Guards::register(&mut reg);
        let (a, _) = Runtime::build(1, spec(TEXT), None, &metrics, &guards);
        a.route("checkout").unwrap().guard.switch().disable();
        let without = TEXT
            .replace("name = \"checkout\"", "name = \"pay\"")
            .replace("name = \"search\"", "name = \"find\"");
        let (b, _) = Runtime::build(2, spec(&without), Some(&a), &metrics, &guards);
        let names: Vec<String> = guards.board.states().into_iter().map(|s| s.route).collect();
        assert!(names.contains(&"checkout".to_string()), "{names:?}");
        assert!(!names.contains(&"search".to_string()), "{names:?}");
        let (c, _) = Runtime::build(3, spec(TEXT), Some(&b), &metrics, &guards);
        assert!(c.route("checkout").unwrap().guard.switch().is_disabled());
        assert!(!c.route("search").unwrap().guard.switch().is_disabled());
    }
}
