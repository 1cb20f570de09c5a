//! `hastack proxy`: an HTTP (1.1, 2, TLS) and TCP load balancer whose job is to keep serving
//! while backends die, hang, recover and get reconfigured.
//!
//! Entry point: [`Proxy::start`] with a validated [`config::ProxySpec`] (from
//! [`config::load`]). The returned handle reloads ([`Proxy::reload`], [`Proxy::apply`]),
//! reports ([`Proxy::status`]) and drains ([`Proxy::shutdown`]).
//!
//! How the pieces fit:
//! * [`server`]: worker threads, one single-threaded runtime each, with `SO_REUSEPORT`
//!   sockets; they accept and drive client connections.
//! * [`http`] / [`tcp`]: per-request (per-session) forwarding, retries, passive health.
//! * [`failure`]: failures as values and the pure retry and ejection rules; [`reply`]: the
//!   proxy's own answers.
//! * [`member`] (health machine, load, idle connections) and [`pool`] (picking snapshot,
//!   retry budget, backup and panic modes).
//! * [`upstream`]: dialing and our own keep-alive pool; [`lease`]: a try's hold on a
//!   member; [`h1`]: the upstream HTTP/1.1 client; [`body`]: the response body.
//! * [`runtime`]: one configuration generation; reload builds a new one, carrying members
//!   and guard state over, and swaps it in atomically.
//! * [`guards`]: how the data plane applies `hastack-guard`'s route guards (rate limits,
//!   breakers, bulkheads, shedding, fallbacks, switches) and member breakers.
//! * The control plane (this module): probers, the housekeeping ticker, the admin endpoints.
//!
//! Deliberately not here: argv, signals and logging setup (the CLI owns them), the guard
//! algorithms themselves (`hastack-guard`: this crate only wires them in), and HTTP parsing
//! (hyper's).

pub mod body;
pub mod config;
pub mod failure;
pub mod guards;
pub mod h1;
pub mod http;
pub mod lease;
pub mod member;
pub mod metrics;
pub mod pool;
pub mod reply;
pub mod runtime;
pub mod server;
pub mod tcp;
pub mod upstream;

mod admin;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hastack_admin::SharedRegistry;
use hastack_config::{Diagnostics, Source};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{ListenerKind, ProxySpec};
use crate::metrics::Metrics;
use crate::pool::{Member, Pool};
use crate::runtime::{BuildReport, Guards, Runtime};
use crate::server::Workers;

/// How often the housekeeping ticker runs (ejection ends, slow-start steps).
const TICK: Duration = Duration::from_millis(100);

/// Errors of the proxy's control plane.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration is invalid (every problem, located).
    #[error("invalid configuration:\n{0}")]
    Config(Diagnostics),
    /// A socket could not be bound or a thread started.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Reload was asked for but the proxy was started without a config file.
    #[error("no config file to reload from (the proxy was started from an in-memory config)")]
    NoConfigFile,
    /// The proxy is shutting down.
    #[error("the proxy is shutting down")]
    ShuttingDown,
}

/// State shared by the control plane and every worker.
pub struct Shared {
    /// The current configuration generation.
    pub runtime: ArcSwap<Runtime>,
    /// Metric families.
    pub metrics: Metrics,
    /// Whether to log one line per request.
    pub access_log: AtomicBool,
    /// Route switches and the guard metrics collector: one for the life of the process,
    /// outside the reloadable runtime, so switch states survive reloads.
    pub guards: Guards,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("generation", &self.runtime.load().generation)
            .finish()
    }
}

/// Start-up options.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Config file, for reloads (SIGHUP, `POST /admin/reload`).
    pub config_path: Option<PathBuf>,
    /// Registry the proxy's metrics are registered in (and `/metrics` encodes).
    pub registry: SharedRegistry,
}

struct Bound {
    addr: SocketAddr,
    /// The address actually bound (differs from `addr` for port 0).
    local: SocketAddr,
    tcp: bool,
    stop: CancellationToken,
}

struct Inner {
    shared: Arc<Shared>,
    workers: Mutex<Option<Workers>>,
    worker_count: usize,
    bound: Mutex<HashMap<Arc<str>, Bound>>,
    reload_lock: tokio::sync::Mutex<()>,
    config_path: Option<PathBuf>,
    generation: AtomicU64,
    started: Instant,
    /// Stops probers, the ticker and the admin listener.
    control: CancellationToken,
    registry: SharedRegistry,
    admin_addr: Mutex<Option<SocketAddr>>,
}

/// A running proxy.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("generation", &self.inner.generation.load(Ordering::Relaxed))
            .finish()
    }
}

/// What a reload changed.
#[derive(Debug, Default, Serialize)]
pub struct ReloadReport {
    /// The new generation.
    pub generation: u64,
    /// Listeners started.
    pub listeners_added: Vec<String>,
    /// Listeners stopped.
    pub listeners_removed: Vec<String>,
    /// Members carried over with their state.
    pub members_kept: usize,
    /// Members added.
    pub members_added: Vec<String>,
    /// Members removed.
    pub members_removed: Vec<String>,
    /// Settings that need a restart and were not applied.
    pub warnings: Vec<String>,
}

impl Proxy {
    /// Start serving `spec`. Must be called inside a tokio runtime (the control runtime:
    /// probers, the ticker and the admin listener run there; data-plane workers get their
    /// own threads).
    pub async fn start(spec: ProxySpec, opts: ProxyOptions) -> Result<Proxy, ProxyError> {
        let (metrics, guards) = {
            let mut reg = opts.registry.lock();
            (Metrics::register(&mut reg), Guards::register(&mut reg))
        };
        let access_log = spec.access_log;
        let admin_addr = spec.admin;
        let workers = spec.workers;
        let (rt, report) = Runtime::build(1, spec, None, &metrics, &guards);
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(rt),
            metrics,
            access_log: AtomicBool::new(access_log),
            guards,
        });
        let pool_workers = Workers::start(workers, shared.clone())?;
        let inner = Arc::new(Inner {
            shared,
            workers: Mutex::new(Some(pool_workers)),
            worker_count: workers,
            bound: Mutex::new(HashMap::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            config_path: opts.config_path,
            generation: AtomicU64::new(1),
            started: Instant::now(),
            control: CancellationToken::new(),
            registry: opts.registry,
            admin_addr: Mutex::new(None),
        });
        let proxy = Proxy { inner };

        // Admin first: a bind error there should stop start-up before traffic flows.
        if let Some(addr) = admin_addr {
            let listener = hastack_admin::bind(addr).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot bind the admin listener {addr}: {e}"),
                )
            })?;
            *proxy.inner.admin_addr.lock() = listener.local_addr().ok();
            tokio::spawn(hastack_admin::serve(
                listener,
                Arc::new(admin::ProxyAdmin::new(proxy.clone())),
                proxy.inner.registry.clone(),
                proxy.inner.control.clone(),
            ));
        }

        let rt = proxy.inner.shared.runtime.load_full();
        let mut started = Vec::new();
        for l in &rt.spec.listeners {
            match proxy.bind_listener(&l.name, l.addr, matches!(l.kind, ListenerKind::Tcp { .. })) {
                Ok(()) => started.push(l.name.to_string()),
                Err(e) => {
                    proxy.clone().shutdown(Duration::ZERO).await;
                    return Err(e.into());
                }
            }
        }
        proxy.start_probes(&rt, &report);
        tokio::spawn(ticker(
            proxy.inner.shared.clone(),
            proxy.inner.control.clone(),
        ));
        info!(
            listeners = ?started,
            workers,
            admin = ?admin_addr,
            "proxy started"
        );
        Ok(proxy)
    }

    /// The admin listener's bound address, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        *self.inner.admin_addr.lock()
    }

    /// The current configuration generation (1 at start, +1 per successful reload).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The shared state (for tests and embedding).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    fn bind_listener(&self, name: &Arc<str>, addr: SocketAddr, tcp: bool) -> std::io::Result<()> {
        let stop = CancellationToken::new();
        let local = {
            let workers = self.inner.workers.lock();
            let Some(w) = workers.as_ref() else {
                return Err(std::io::Error::other("the proxy is shutting down"));
            };
            w.listen(name, addr, &stop)?
        };
        self.inner.bound.lock().insert(
            name.clone(),
            Bound {
                addr,
                local,
                tcp,
                stop,
            },
        );
        Ok(())
    }

    /// Every bound listener's name and address (the port the kernel picked for port 0).
    pub fn listener_addrs(&self) -> Vec<(Arc<str>, SocketAddr)> {
        self.inner
            .bound
            .lock()
            .iter()
            .map(|(name, b)| (name.clone(), b.local))
            .collect()
    }

    /// Re-read the config file and apply it. On any error the running configuration stays.
    pub async fn reload(&self) -> Result<ReloadReport, ProxyError> {
        let path = self
            .inner
            .config_path
            .clone()
            .ok_or(ProxyError::NoConfigFile)?;
        let loaded = Source::load(&path).and_then(|src| config::load(&src));
        match loaded {
            Ok((spec, warnings)) => {
                for w in warnings.items() {
                    warn!("{w}");
                }
                self.apply(spec).await
            }
            Err(d) => {
                self.inner.shared.metrics.reload(false);
                warn!("reload rejected, the running configuration stays:\n{d}");
                Err(ProxyError::Config(d))
            }
        }
    }

    /// Apply a validated configuration by atomic swap. Unchanged listeners keep their
    /// sockets, unchanged members keep their health, load and connections; new listeners
    /// are bound before anything changes, so a bind error leaves the old config serving.
    pub async fn apply(&self, mut spec: ProxySpec) -> Result<ReloadReport, ProxyError> {
        let _serial = self.inner.reload_lock.lock().await;
        if self.inner.control.is_cancelled() {
            return Err(ProxyError::ShuttingDown);
        }
        let mut report = ReloadReport::default();
        if spec.workers != self.inner.worker_count {
            report.warnings.push(format!(
                "workers = {} needs a restart; keeping {}",
                spec.workers, self.inner.worker_count
            ));
            spec.workers = self.inner.worker_count;
        }
        if spec.admin != self.inner.shared.runtime.load().spec.admin {
            report.warnings.push(
                "a changed [proxy.admin] address needs a restart; the admin listener stays where it is"
                    .to_string(),
            );
        }

        // 1. Bind what is new (or moved) before touching anything.
        let (to_add, to_remove): (Vec<_>, Vec<_>) = {
            let bound = self.inner.bound.lock();
            let add = spec
                .listeners
                .iter()
                .filter(|l| {
                    let tcp = matches!(l.kind, ListenerKind::Tcp { .. });
                    bound
                        .get(&l.name)
                        .is_none_or(|b| b.addr != l.addr || b.tcp != tcp)
                })
                .map(|l| {
                    (
                        l.name.clone(),
                        l.addr,
                        matches!(l.kind, ListenerKind::Tcp { .. }),
                    )
                })
                .collect();
            let remove = bound
                .iter()
                .filter(|(name, b)| {
                    !spec.listeners.iter().any(|l| {
                        &l.name == *name
                            && l.addr == b.addr
                            && matches!(l.kind, ListenerKind::Tcp { .. }) == b.tcp
                    })
                })
                .map(|(name, _)| name.clone())
                .collect();
            (add, remove)
        };
        // Moved listeners: stop the old sockets only after the swap, but their entry in
        // `bound` is replaced by the new binding.
        let mut old_stops = Vec::new();
        let mut fresh: Vec<Arc<str>> = Vec::new();
        for (name, addr, tcp) in &to_add {
            let previous = self.inner.bound.lock().remove(name);
            match self.bind_listener(name, *addr, *tcp) {
                Ok(()) => {
                    fresh.push(name.clone());
                    if let Some(p) = previous {
                        old_stops.push(p.stop);
                    }
                }
                Err(e) => {
                    // Roll back: stop what this reload started, restore what it replaced.
                    for n in &fresh {
                        if let Some(b) = self.inner.bound.lock().remove(n) {
                            b.stop.cancel();
                        }
                    }
                    if let Some(p) = previous {
                        self.inner.bound.lock().insert(name.clone(), p);
                    }
                    self.inner.shared.metrics.reload(false);
                    warn!(error = %e, "reload rejected, the running configuration stays");
                    return Err(e.into());
                }
            }
        }

        // 2. Build the new generation and swap it in.
        let generation = self.inner.generation.load(Ordering::Acquire) + 1;
        let previous = self.inner.shared.runtime.load_full();
        let access_log = spec.access_log;
        let (rt, build) = Runtime::build(
            generation,
            spec,
            Some(&previous),
            &self.inner.shared.metrics,
            &self.inner.shared.guards,
        );
        let rt = Arc::new(rt);
        self.inner.shared.runtime.store(rt.clone());
        self.inner.generation.store(generation, Ordering::Release);
        self.inner
            .shared
            .access_log
            .store(access_log, Ordering::Relaxed);

        // 3. Stop what is gone, start what is new.
        for s in old_stops {
            s.cancel();
        }
        for name in &to_remove {
            if fresh.contains(name) {
                continue;
            }
            if let Some(b) = self.inner.bound.lock().remove(name) {
                b.stop.cancel();
            }
        }
        self.start_probes(&rt, &build);
        for m in &build.removed {
            m.retire();
            self.inner
                .shared
                .metrics
                .remove_member(&pool_of(&previous, m), m.name());
        }
        report.generation = generation;
        report.listeners_added = to_add.iter().map(|(n, ..)| n.to_string()).collect();
        report.listeners_removed = to_remove
            .iter()
            .filter(|n| !fresh.contains(n))
            .map(|n| n.to_string())
            .collect();
        report.members_kept = build.kept;
        report.members_added = build.added.iter().map(|m| m.name().to_string()).collect();
        report.members_removed = build.removed.iter().map(|m| m.name().to_string()).collect();
        self.inner.shared.metrics.reload(true);
        info!(
            generation,
            kept = build.kept,
            added = build.added.len(),
            removed = build.removed.len(),
            "configuration reloaded"
        );
        Ok(report)
    }

    fn start_probes(&self, rt: &Runtime, build: &BuildReport) {
        let wanted: Vec<&Arc<Member>> = build.added.iter().chain(&build.reprobe).collect();
        if wanted.is_empty() {
            return;
        }
        for pool in rt.pools.values() {
            for m in &pool.members {
                if wanted.iter().any(|w| Arc::ptr_eq(w, m)) {
                    self.start_probe(pool, m);
                }
            }
        }
    }

    fn start_probe(&self, pool: &Pool, m: &Arc<Member>) {
        match &pool.spec.health {
            Some(h) => {
                let token = self.inner.control.child_token();
                hastack_probe::spawn(
                    m.clone() as Arc<dyn hastack_probe::Target>,
                    Arc::new(h.check.clone()),
                    h.schedule,
                    token.clone(),
                );
                m.set_probe(Some(token));
            }
            None => m.set_probe(None),
        }
    }

    /// A view of everything for `GET /status`.
    pub fn status(&self) -> StatusView {
        let now = Instant::now();
        let rt = self.inner.shared.runtime.load_full();
        let bound = self.inner.bound.lock();
        let pools = rt
            .pools
            .values()
            .map(|p| (p.name().to_string(), p.view(now)))
            .collect();
        StatusView {
            generation: rt.generation,
            uptime_secs: self.inner.started.elapsed().as_secs(),
            workers: self.inner.worker_count,
            listeners: rt
                .spec
                .listeners
                .iter()
                .map(|l| ListenerView {
                    name: l.name.to_string(),
                    addr: l.addr.to_string(),
                    protocol: match &l.kind {
                        ListenerKind::Http(h) if h.tls.is_some() => "https",
                        ListenerKind::Http(_) => "http",
                        ListenerKind::Tcp { .. } => "tcp",
                    },
                    active: bound.contains_key(&l.name),
                    routes: match &l.kind {
                        ListenerKind::Http(h) => h
                            .routes
                            .iter()
                            .map(|r| format!("{} -> {}", r.name, r.pool))
                            .chain(h.default_pool.iter().map(|p| format!("(default) -> {p}")))
                            .collect(),
                        ListenerKind::Tcp { pool } => vec![format!("(tcp) -> {pool}")],
                    },
                    rate_limit: rt
                        .listeners
                        .get(&l.name)
                        .and_then(|x| x.rate_limit.as_ref())
                        .map(|(r, _)| guards::rate_status(r)),
                })
                .collect(),
            routes: rt
                .spec
                .listeners
                .iter()
                .filter_map(|l| rt.listeners.get(&l.name))
                .flat_map(|l| l.all_routes().map(move |r| guards::route_view(l, r, now)))
                .collect(),
            switches: self.inner.shared.guards.board.states(),
            pools,
        }
    }

    /// Switch route `route` off (`disable = true`) or back on; `None` when the current
    /// configuration has no route of that name. The switch belongs to the process, so the
    /// state survives reloads.
    pub fn switch_route(&self, route: &str, disable: bool) -> Option<guards::RouteView> {
        let rt = self.inner.shared.runtime.load_full();
        let listener = rt
            .listeners
            .values()
            .find(|l| l.all_routes().any(|r| &*r.spec.name == route))?;
        let r = listener.all_routes().find(|r| &*r.spec.name == route)?;
        // The route's switch is the board's, shared by every generation.
        if disable {
            r.guard.switch().disable();
        } else {
            r.guard.switch().enable();
        }
        info!(route, disabled = disable, "route switched by operator");
        Some(guards::route_view(listener, r, Instant::now()))
    }

    /// Find a member for an operator command.
    pub fn member(&self, pool: &str, member: &str) -> Option<Arc<Member>> {
        let rt = self.inner.shared.runtime.load();
        rt.pools
            .get(pool)?
            .members
            .iter()
            .find(|m| m.name() == member)
            .cloned()
    }

    /// Readiness for `GET /ready`: every listener is bound and every pool has a usable
    /// member (normal or backup mode). Otherwise the reasons, one per listener or pool.
    /// Meant for whatever decides where traffic goes, such as a `hastack vip` tracker: a
    /// proxy that would answer 503 (or send to members it believes dead, in panic mode)
    /// should not win the VIP over a peer that can serve.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let rt = self.inner.shared.runtime.load_full();
        let mut why = Vec::new();
        {
            let bound = self.inner.bound.lock();
            for l in &rt.spec.listeners {
                if !bound.contains_key(&l.name) {
                    why.push(format!("listener {:?} ({}) is not bound", l.name, l.addr));
                }
            }
        }
        for p in rt.pools.values() {
            match p.picks().mode {
                pool::Mode::Normal | pool::Mode::Backup => {}
                pool::Mode::Panic => why.push(format!(
                    "pool {:?} is in panic mode (too few usable members)",
                    p.name()
                )),
                pool::Mode::Empty => why.push(format!("pool {:?} has no usable member", p.name())),
            }
        }
        if why.is_empty() { Ok(()) } else { Err(why) }
    }

    /// Stop accepting, let in-flight requests finish for up to `drain`, then stop probers,
    /// the ticker and the admin listener.
    pub async fn shutdown(self, drain: Duration) {
        let workers = self.inner.workers.lock().take();
        if let Some(w) = workers {
            info!(drain = ?drain, "draining");
            for (_, b) in self.inner.bound.lock().drain() {
                b.stop.cancel();
            }
            w.drain(Instant::now() + drain).await;
        }
        self.inner.control.cancel();
        info!("proxy stopped");
    }
}

fn pool_of(rt: &Runtime, m: &Arc<Member>) -> String {
    rt.pools
        .values()
        .find(|p| p.members.iter().any(|x| Arc::ptr_eq(x, m)))
        .map(|p| p.name().to_string())
        .unwrap_or_default()
}

async fn ticker(shared: Arc<Shared>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        n += 1;
        let now = Instant::now();
        let rt = shared.runtime.load_full();
        for p in rt.pools.values() {
            p.tick(now, n % 10 == 0);
        }
    }
}

/// `GET /status`.
#[derive(Debug, Serialize)]
pub struct StatusView {
    generation: u64,
    uptime_secs: u64,
    workers: usize,
    listeners: Vec<ListenerView>,
    /// Every route (default routes included) with its guards.
    routes: Vec<guards::RouteView>,
    /// Every route switch the process knows, by route name (a disabled switch outlives its
    /// route's removal from the file).
    switches: Vec<hastack_guard::fallback::SwitchState>,
    /// Pools by name (sorted), so `jq .pools.app` and JSON pointers like
    /// `/pools/app/members` work.
    pools: std::collections::BTreeMap<String, pool::PoolView>,
}

#[derive(Debug, Serialize)]
struct ListenerView {
    name: String,
    addr: String,
    protocol: &'static str,
    active: bool,
    routes: Vec<String>,
    /// The listener-wide rate limit, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<hastack_guard::stack::RateStatus>,
}
