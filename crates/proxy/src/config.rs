//! The `[proxy]` section: serde types as written in the file, and their validation into the
//! plain runtime spec ([`ProxySpec`]) that the rest of the crate consumes.
//!
//! Validation collects every problem it finds (with file:line:column) instead of stopping at
//! the first, resolves names (pool references), loads TLS material, and fills in defaults, so
//! nothing downstream ever sees an unchecked value.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hastack_balance::{HashAlgorithm, Strategy};
use hastack_config::{ByteSize, Diagnostics, Dur, KeyPath, Source};
use hastack_core::{Backoff, RetryBudgetPolicy};
use hastack_guard::config::{
    BreakerConfig, ConcurrencyConfig, FallbackConfig, RateLimitConfig, RateLimitSpec,
    RouteGuardSpec, validate_breaker, validate_concurrency, validate_fallback, validate_priority,
    validate_rate_limit,
};
use hastack_guard::{BreakerPolicy, ConcurrencyPolicy, FallbackAction, ShedPolicy};
use hastack_probe::{HealthCheckConfig, ValidatedHealth};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// Name of the section this crate owns.
pub const SECTION: &str = "proxy";

// ---------------------------------------------------------------------------------------------
// As written in the file.
// ---------------------------------------------------------------------------------------------

/// `[proxy]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyToml {
    /// Data-plane threads (default: one per CPU).
    #[serde(default)]
    pub workers: Option<usize>,
    /// How long SIGTERM waits for in-flight requests (default 30s).
    #[serde(default)]
    pub drain_timeout: Option<Dur>,
    /// Log one line per request at target `hastack::access` (default false).
    #[serde(default)]
    pub access_log: bool,
    /// `[proxy.admin]`.
    #[serde(default)]
    pub admin: Option<AdminToml>,
    /// `[[proxy.listeners]]`.
    #[serde(default)]
    pub listeners: Vec<ListenerToml>,
    /// `[proxy.pools.NAME]`.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolToml>,
}

/// `[proxy.admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToml {
    /// Address of the admin listener.
    pub listen: String,
}

/// Listener protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 (h2c prior knowledge, or ALPN under TLS).
    #[default]
    Http,
    /// Raw TCP (layer 4).
    Tcp,
}

/// `[[proxy.listeners]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerToml {
    /// Name (default: the listen address).
    #[serde(default)]
    pub name: Option<String>,
    /// Address to listen on.
    pub listen: String,
    /// `http` (default) or `tcp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Default pool (HTTP: when no route matches; TCP: the pool).
    #[serde(default)]
    pub pool: Option<String>,
    /// TLS termination (HTTP only).
    #[serde(default)]
    pub tls: Option<TlsToml>,
    /// Host/path routes (HTTP only).
    #[serde(default)]
    pub routes: Vec<RouteToml>,
    /// Time allowed to receive a request's headers (default 10s).
    #[serde(default)]
    pub header_read_timeout: Option<Dur>,
    /// Largest request head (default 64KiB).
    #[serde(default)]
    pub max_header_size: Option<ByteSize>,
    /// Most request header fields (default 100).
    #[serde(default)]
    pub max_headers: Option<usize>,
    /// Largest request body (default 100MiB); larger gets 413.
    #[serde(default)]
    pub max_request_body: Option<ByteSize>,
    /// TCP only: close a session idle in both directions this long (default 1h). HTTP/1
    /// keep-alive connections are closed after `header_read_timeout` without a request.
    #[serde(default)]
    pub idle_timeout: Option<Dur>,
    /// Most concurrent client connections per worker (default 10000).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Add `X-Forwarded-For` and `X-Forwarded-Proto` (default true).
    #[serde(default)]
    pub forwarded_headers: Option<bool>,
    /// HTTP only: a rate limit over every request of the listener, checked before routing.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// HTTP only: the name and guards of the default route (requests no route matches,
    /// served by `pool`).
    #[serde(default)]
    pub default_route: Option<DefaultRouteToml>,
}

/// `[proxy.listeners.default_route]`: the implicit route of requests that no
/// `[[proxy.listeners.routes]]` entry matches (served by the listener's `pool`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRouteToml {
    /// Name (default: the listener's name).
    #[serde(default)]
    pub name: Option<String>,
    /// Rate limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Route circuit breaker.
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
    /// The route's own bulkhead (absent: the pool's, if any).
    #[serde(default)]
    pub concurrency: Option<ConcurrencyConfig>,
    /// Priority class for shedding (default `normal`).
    #[serde(default)]
    pub priority: Option<String>,
    /// What to answer instead of a refusal.
    #[serde(default)]
    pub fallback: Option<FallbackConfig>,
}

/// `tls = { cert = "...", key = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsToml {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[[proxy.listeners.routes]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteToml {
    /// Name (default: `host+path_prefix`).
    #[serde(default)]
    pub name: Option<String>,
    /// Host to match: exact (`api.example.com`) or wildcard (`*.example.com`); any if absent.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix to match (default `/`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Pool that serves the route.
    pub pool: String,
    /// Rate limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Route circuit breaker.
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
    /// The route's own bulkhead (absent: the pool's, if any).
    #[serde(default)]
    pub concurrency: Option<ConcurrencyConfig>,
    /// Priority class for shedding (default `normal`).
    #[serde(default)]
    pub priority: Option<String>,
    /// What to answer instead of a refusal.
    #[serde(default)]
    pub fallback: Option<FallbackConfig>,
}

/// The guard tables of one route, as written (shared by routes and default routes).
#[derive(Debug, Clone, Copy, Default)]
struct GuardTables<'a> {
    rate_limit: Option<&'a RateLimitConfig>,
    breaker: Option<&'a BreakerConfig>,
    concurrency: Option<&'a ConcurrencyConfig>,
    priority: Option<&'a str>,
    fallback: Option<&'a FallbackConfig>,
}

impl<'a> From<&'a RouteToml> for GuardTables<'a> {
    fn from(r: &'a RouteToml) -> Self {
        GuardTables {
            rate_limit: r.rate_limit.as_ref(),
            breaker: r.breaker.as_ref(),
            concurrency: r.concurrency.as_ref(),
            priority: r.priority.as_deref(),
            fallback: r.fallback.as_ref(),
        }
    }
}

impl<'a> From<&'a DefaultRouteToml> for GuardTables<'a> {
    fn from(r: &'a DefaultRouteToml) -> Self {
        GuardTables {
            rate_limit: r.rate_limit.as_ref(),
            breaker: r.breaker.as_ref(),
            concurrency: r.concurrency.as_ref(),
            priority: r.priority.as_deref(),
            fallback: r.fallback.as_ref(),
        }
    }
}

/// `[proxy.pools.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolToml {
    /// Members: `"host:port"` or `{ addr, name, weight, backup }`.
    pub members: Vec<MemberToml>,
    /// Load-balancing strategy (default `p2c_ewma`).
    #[serde(default)]
    pub strategy: Option<StrategyToml>,
    /// Consistent-hash settings (required with `strategy = "hash"`).
    #[serde(default)]
    pub hash: Option<HashToml>,
    /// Cookie affinity.
    #[serde(default)]
    pub sticky: Option<StickyToml>,
    /// Active health checks (absent: passive detection only).
    #[serde(default)]
    pub health: Option<HealthCheckConfig>,
    /// Passive outlier detection.
    #[serde(default)]
    pub outlier: Option<OutlierToml>,
    /// Retries.
    #[serde(default)]
    pub retry: Option<RetryToml>,
    /// Time allowed to connect to a member (default 2s).
    #[serde(default)]
    pub connect_timeout: Option<Dur>,
    /// Time allowed per try for the response headers (default 30s).
    #[serde(default)]
    pub try_timeout: Option<Dur>,
    /// Time allowed for the whole request, retries included, until response headers (default 60s).
    #[serde(default)]
    pub request_timeout: Option<Dur>,
    /// Weight ramp after a member is re-admitted (default 5s; "0s" turns it off).
    #[serde(default)]
    pub slow_start: Option<Dur>,
    /// Percent of usable members below which the pool routes to every live member, ejected ones
    /// included (default 0: never).
    #[serde(default)]
    pub panic_threshold: Option<u8>,
    /// Idle upstream connections kept per member and worker (default 64).
    #[serde(default)]
    pub max_idle_per_member: Option<usize>,
    /// How long an idle upstream connection is kept (default 20s); keep it below the
    /// backends' own keep-alive timeout.
    #[serde(default)]
    pub upstream_idle_timeout: Option<Dur>,
    /// Bulkhead shared by every route to this pool (priority shedding lives here).
    #[serde(default)]
    pub concurrency: Option<ConcurrencyConfig>,
    /// A circuit breaker per member: a member whose breaker is open is not picked.
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
}

/// Strategy names as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyToml {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Weighted random.
    Random,
    /// Fewest in-flight requests per weight.
    LeastConn,
    /// Power of two choices over peak-EWMA latency x in-flight.
    P2cEwma,
    /// Consistent hashing on a request key.
    Hash,
}

/// `hash = { key = "...", algorithm = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashToml {
    /// `client_ip`, `uri`, `header:NAME` or `cookie:NAME`.
    pub key: String,
    /// `maglev` (default) or `ketama`.
    #[serde(default)]
    pub algorithm: Option<HashAlgorithmToml>,
}

/// Consistent-hash algorithm names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashAlgorithmToml {
    /// Maglev lookup table.
    Maglev,
    /// Ketama ring.
    Ketama,
}

/// `sticky = { cookie = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyToml {
    /// Cookie name.
    pub cookie: String,
    /// Cookie `Max-Age` (default: session cookie).
    #[serde(default)]
    pub max_age: Option<Dur>,
}

/// `[proxy.pools.NAME.outlier]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierToml {
    /// Consecutive 5xx/gateway errors that eject a member (default 5; 0 = off).
    #[serde(default)]
    pub consecutive_errors: Option<u32>,
    /// First ejection's length (default 5s).
    #[serde(default)]
    pub base_ejection: Option<Dur>,
    /// Longest ejection (default 60s).
    #[serde(default)]
    pub max_ejection: Option<Dur>,
    /// Most members ejected at once, in percent of the pool (default 50).
    #[serde(default)]
    pub max_ejected_percent: Option<u8>,
}

/// `[proxy.pools.NAME.retry]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryToml {
    /// Tries per request including the first (default 3; 1 = no retries).
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Upstream statuses that are retried (default [502, 503, 504]).
    #[serde(default)]
    pub on_status: Option<Vec<u16>>,
    /// Largest request body buffered so it can be resent (default 64KiB).
    #[serde(default)]
    pub buffer_body: Option<ByteSize>,
    /// Retries allowed as a share of requests (default 0.2).
    #[serde(default)]
    pub budget_ratio: Option<f64>,
    /// Retries always allowed per second (default 10).
    #[serde(default)]
    pub budget_min_per_sec: Option<u32>,
    /// Ceiling of the back-off before the second retry (default 5ms; the first retry goes at
    /// once, to a different member).
    #[serde(default)]
    pub backoff_base: Option<Dur>,
    /// Longest back-off (default 100ms).
    #[serde(default)]
    pub backoff_max: Option<Dur>,
}

/// A member as written: `"127.0.0.1:9001"` or `{ addr = "...", name, weight, backup }`.
#[derive(Debug)]
pub struct MemberToml {
    /// `host:port`.
    pub addr: String,
    /// Name (default: the address).
    pub name: Option<String>,
    /// Weight 1-1000 (default 1).
    pub weight: Option<u32>,
    /// Used only when no primary member is usable.
    pub backup: bool,
}

impl<'de> Deserialize<'de> for MemberToml {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            addr: String,
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            weight: Option<u32>,
            #[serde(default)]
            backup: bool,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MemberToml;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a member: \"host:port\" or { addr = \"host:port\", weight = 1, backup = false }",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MemberToml, E> {
                Ok(MemberToml {
                    addr: s.to_string(),
                    name: None,
                    weight: None,
                    backup: false,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MemberToml, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(MemberToml {
                    addr: t.addr,
                    name: t.name,
                    weight: t.weight,
                    backup: t.backup,
                })
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Validated runtime spec.
// ---------------------------------------------------------------------------------------------

/// The validated `[proxy]` section.
#[derive(Debug, Clone)]
pub struct ProxySpec {
    /// Data-plane threads.
    pub workers: usize,
    /// SIGTERM grace period.
    pub drain_timeout: Duration,
    /// Per-request log lines.
    pub access_log: bool,
    /// Admin listener address.
    pub admin: Option<SocketAddr>,
    /// Listeners, in file order.
    pub listeners: Vec<ListenerSpec>,
    /// Pools by name.
    pub pools: BTreeMap<Arc<str>, PoolSpec>,
}

/// A validated listener.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// Name.
    pub name: Arc<str>,
    /// Bind address.
    pub addr: SocketAddr,
    /// Idle timeout of TCP sessions.
    pub idle_timeout: Duration,
    /// Most concurrent connections per worker.
    pub max_connections: usize,
    /// Protocol-specific part.
    pub kind: ListenerKind,
}

/// HTTP or TCP specifics.
#[derive(Debug, Clone)]
pub enum ListenerKind {
    /// An HTTP listener (boxed: routes with guards make it large).
    Http(Box<HttpListenerSpec>),
    /// A TCP listener forwarding to one pool.
    Tcp {
        /// The pool.
        pool: Arc<str>,
    },
}

/// HTTP listener settings.
#[derive(Clone)]
pub struct HttpListenerSpec {
    /// TLS termination.
    pub tls: Option<TlsSpec>,
    /// Routes, most specific first.
    pub routes: Vec<RouteSpec>,
    /// Pool for requests no route matches.
    pub default_pool: Option<Arc<str>>,
    /// The implicit route of requests no route matches (present iff `default_pool` is):
    /// named after the listener unless `[..default_route] name` says otherwise, with the
    /// guards of `[..default_route]`.
    pub default_route: Option<RouteSpec>,
    /// Listener-wide rate limit, checked before routing.
    pub rate_limit: Option<RateLimitSpec>,
    /// Header read timeout.
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub max_header_size: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Largest request body.
    pub max_request_body: u64,
    /// Add X-Forwarded-* headers.
    pub forwarded_headers: bool,
}

impl fmt::Debug for HttpListenerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpListenerSpec")
            .field("tls", &self.tls.as_ref().map(|t| &t.cert))
            .field("routes", &self.routes)
            .field("default_pool", &self.default_pool)
            .field("default_route", &self.default_route)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

/// Loaded TLS material.
#[derive(Clone, Debug)]
pub struct TlsSpec {
    /// Certificate path (for messages and reload comparison).
    pub cert: PathBuf,
    /// Key path.
    pub key: PathBuf,
    /// Ready server config (ALPN h2, http/1.1).
    pub config: Arc<rustls::ServerConfig>,
}

/// How a route matches the Host header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Any host.
    Any,
    /// Exactly this host (lower case, no port).
    Exact(String),
    /// `*.suffix`: any host ending in `.suffix` (stored with the leading dot).
    Suffix(String),
}

impl HostMatch {
    /// Whether `host` (lower case, port stripped) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h == host,
            HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            HostMatch::Exact(_) => 2,
            HostMatch::Suffix(_) => 1,
            HostMatch::Any => 0,
        }
    }
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Name.
    pub name: Arc<str>,
    /// Host match.
    pub host: HostMatch,
    /// Path prefix (raw prefix match, like nginx `location /prefix`).
    pub path_prefix: String,
    /// Pool.
    pub pool: Arc<str>,
    /// Guards (rate limit, breaker, own bulkhead, priority, fallback); all optional.
    pub guards: RouteGuardSpec,
    /// Whether this is a listener's implicit default route.
    pub is_default: bool,
}

/// Where a hash key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// Path and query.
    Uri,
    /// A request header's value.
    Header(http::HeaderName),
    /// A cookie's value.
    Cookie(String),
}

/// Cookie affinity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickySpec {
    /// Cookie name.
    pub cookie: String,
    /// Max-Age, if any.
    pub max_age: Option<Duration>,
}

/// Passive outlier detection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierSpec {
    /// Consecutive errors that eject (0 = off).
    pub consecutive_errors: u32,
    /// First ejection.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Most members ejected at once, percent.
    pub max_ejected_percent: u8,
}

/// Retry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySpec {
    /// Tries including the first.
    pub attempts: u32,
    /// Retried statuses.
    pub on_status: Vec<u16>,
    /// Largest buffered (resendable) body.
    pub buffer_body: usize,
    /// Budget.
    pub budget: RetryBudgetPolicy,
    /// Back-off from the second retry on.
    pub backoff: Backoff,
}

/// A validated member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpec {
    /// Identity within the pool.
    pub name: Arc<str>,
    /// Address.
    pub addr: SocketAddr,
    /// Weight 1-1000.
    pub weight: u32,
    /// Backup member.
    pub backup: bool,
}

/// A validated pool.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    /// Name.
    pub name: Arc<str>,
    /// Members.
    pub members: Vec<MemberSpec>,
    /// Strategy.
    pub strategy: Strategy,
    /// Hash key (with `Strategy::Hash`).
    pub hash_key: Option<HashKey>,
    /// Cookie affinity.
    pub sticky: Option<StickySpec>,
    /// Active health checks.
    pub health: Option<ValidatedHealth>,
    /// Passive detection.
    pub outlier: OutlierSpec,
    /// Retries.
    pub retry: RetrySpec,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Per-try timeout.
    pub try_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Slow start.
    pub slow_start: Duration,
    /// Panic threshold, percent.
    pub panic_threshold: u8,
    /// Idle upstream connections per member and worker.
    pub max_idle_per_member: usize,
    /// Idle upstream connection lifetime.
    pub upstream_idle_timeout: Duration,
    /// Bulkhead shared by every route to this pool.
    pub concurrency: Option<ConcurrencyPolicy>,
    /// Per-member circuit breaker.
    pub breaker: Option<BreakerPolicy>,
}

impl PoolSpec {
    /// The health policy members of this pool run.
    pub fn health_policy(&self) -> hastack_core::HealthPolicy {
        let (rise, fall) = self.health.as_ref().map_or((2, 3), |h| (h.rise, h.fall));
        hastack_core::HealthPolicy {
            rise,
            fall,
            active_checks: self.health.is_some(),
            consecutive_errors: self.outlier.consecutive_errors,
            base_ejection: self.outlier.base_ejection,
            max_ejection: self.outlier.max_ejection,
            slow_start: self.slow_start,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading and validation.
// ---------------------------------------------------------------------------------------------

/// Load and validate the `[proxy]` section. `Ok` carries the spec and any warnings.
pub fn load(src: &Source) -> Result<(ProxySpec, Diagnostics), Diagnostics> {
    let Some(raw) = src.section::<ProxyToml>(SECTION)? else {
        let mut d = Diagnostics::new();
        d.error(
            src,
            &KeyPath::root(),
            "no [proxy] section: `hastack proxy` needs at least one [[proxy.listeners]] and one [proxy.pools.NAME]",
        );
        return Err(d);
    };
    let mut diags = Diagnostics::new();
    let spec = validate(src, &raw, &mut diags);
    match (spec, diags.has_errors()) {
        (Some(spec), false) => Ok((spec, diags)),
        _ => {
            diags.sort();
            Err(diags)
        }
    }
}

/// A one-line summary for `hastack check`.
pub fn summary(spec: &ProxySpec) -> String {
    let members: usize = spec.pools.values().map(|p| p.members.len()).sum();
    let listeners: Vec<String> = spec
        .listeners
        .iter()
        .map(|l| {
            let proto = match &l.kind {
                ListenerKind::Http(h) if h.tls.is_some() => "https",
                ListenerKind::Http(_) => "http",
                ListenerKind::Tcp { .. } => "tcp",
            };
            format!("{proto}://{}", l.addr)
        })
        .collect();
    let routes: Vec<&RouteSpec> = spec
        .listeners
        .iter()
        .filter_map(|l| match &l.kind {
            ListenerKind::Http(h) => Some(h.routes.iter().chain(h.default_route.as_ref())),
            ListenerKind::Tcp { .. } => None,
        })
        .flatten()
        .collect();
    let guarded = routes
        .iter()
        .filter(|r| {
            let g = &r.guards;
            g.rate_limit.is_some()
                || g.breaker.is_some()
                || g.concurrency.is_some()
                || g.fallback.is_some()
                || spec
                    .pools
                    .get(&r.pool)
                    .is_some_and(|p| p.concurrency.is_some())
        })
        .count();
    format!(
        "proxy: {} listener(s) [{}], {} route(s) ({} guarded), {} pool(s) with {} member(s), {} worker(s), admin {}",
        spec.listeners.len(),
        listeners.join(", "),
        routes.len(),
        guarded,
        spec.pools.len(),
        members,
        spec.workers,
        spec.admin
            .map_or_else(|| "off".to_string(), |a| a.to_string())
    )
}

fn validate(src: &Source, raw: &ProxyToml, d: &mut Diagnostics) -> Option<ProxySpec> {
    let at = KeyPath::root().key(SECTION);
    let workers = match raw.workers {
        Some(0) => {
            d.error(src, &at.key("workers"), "workers must be at least 1");
            1
        }
        Some(n) if n > 1024 => {
            d.error(
                src,
                &at.key("workers"),
                format!("workers = {n} is more than 1024"),
            );
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let admin = raw
        .admin
        .as_ref()
        .and_then(|a| resolve_addr(src, &at.key("admin").key("listen"), &a.listen, d));
    if raw.admin.is_none() {
        d.warning(
            src,
            &at,
            "no [proxy.admin] listener: /status, /metrics and hot reload over HTTP are off",
        );
    }

    // Pools first, so listeners can check references.
    let mut pools = BTreeMap::new();
    if raw.pools.is_empty() {
        d.error(
            src,
            &at,
            "no pools: add at least one [proxy.pools.NAME] with members",
        );
    }
    for (name, p) in &raw.pools {
        if let Some(spec) = validate_pool(src, &at.key("pools").key(name), name, p, d) {
            pools.insert(Arc::<str>::from(name.as_str()), spec);
        }
    }

    let mut listeners = Vec::new();
    if raw.listeners.is_empty() {
        d.error(
            src,
            &at,
            "no listeners: add at least one [[proxy.listeners]]",
        );
    }
    let mut names = HashSet::new();
    let mut addrs = HashMap::new();
    let mut used_pools = HashSet::new();
    let mut route_names = RouteNames::new();
    let cx = RouteCtx {
        raw_pools: &raw.pools,
        pools: &pools,
    };
    for (i, l) in raw.listeners.iter().enumerate() {
        let lp = at.key("listeners").index(i);
        let Some(spec) = validate_listener(src, &lp, l, &cx, &mut used_pools, &mut route_names, d)
        else {
            continue;
        };
        if !names.insert(spec.name.clone()) {
            d.error(
                src,
                &lp.key("name"),
                format!(
                    "listener name {:?} is used twice; names must be unique",
                    spec.name
                ),
            );
        }
        // Port 0 asks the kernel for a free port: two such sockets never clash.
        let fixed = spec.addr.port() != 0;
        if let Some(prev) = addrs.insert(spec.addr, i).filter(|_| fixed) {
            d.error(
                src,
                &lp.key("listen"),
                format!("{} is already used by listener #{prev}", spec.addr),
            );
        }
        if fixed && Some(spec.addr) == admin {
            d.error(
                src,
                &lp.key("listen"),
                format!("{} is the admin listener's address", spec.addr),
            );
        }
        listeners.push(spec);
    }
    for name in raw.pools.keys() {
        if !used_pools.contains(name.as_str()) {
            d.warning(
                src,
                &at.key("pools").key(name),
                format!("pool {name:?} is not used by any listener or route"),
            );
        }
    }
    let drain_timeout = raw
        .drain_timeout
        .map_or(Duration::from_secs(30), Duration::from);
    Some(ProxySpec {
        workers,
        drain_timeout,
        access_log: raw.access_log,
        admin,
        listeners,
        pools,
    })
}

/// Names every route is known by: admin commands (`/admin/routes/{route}/...`), `/status`,
/// metrics labels and the `RateLimit` header fields address routes by name, so names are
/// unique across the whole proxy, not just within a listener.
type RouteNames = HashMap<Arc<str>, KeyPath>;

/// Whether `name` can serve as a route name: printable ASCII without the characters that
/// would need escaping in a URL path segment or a structured header string, and not one of
/// the prefixes used for pool and listener metric scopes.
fn route_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"\\%?#".contains(&b))
        && !name.starts_with("pool:")
        && !name.starts_with("listener:")
}

/// Check a route's name (charset, proxy-wide uniqueness) and record it.
fn check_route_name(
    src: &Source,
    at: &KeyPath,
    name: &Arc<str>,
    explicit: bool,
    names: &mut RouteNames,
    d: &mut Diagnostics,
) {
    let name_at = if explicit { at.key("name") } else { at.clone() };
    if !route_name_ok(name) {
        d.error(
            src,
            &name_at,
            format!(
                "route name {name:?} is not usable{}: names are 1-128 printable ASCII characters without '\"', '\\\\', '%', '?', '#' or spaces, and do not start with \"pool:\" or \"listener:\"",
                if explicit { "" } else { " (derived from host + path_prefix or the listener name; set `name`)" }
            ),
        );
        return;
    }
    if let Some(prev) = names.get(name) {
        d.error(
            src,
            &name_at,
            format!(
                "route name {name:?} is already used by {prev}; route names must be unique across the proxy (admin commands, /status and metrics address routes by name): give this route a distinct `name`"
            ),
        );
        return;
    }
    names.insert(name.clone(), at.clone());
}

/// Mark `pool` used if it exists, else report it (at `key`) and return `None`.
fn check_pool_ref(
    src: &Source,
    key: &KeyPath,
    pool: &str,
    pools: &BTreeMap<String, PoolToml>,
    used: &mut HashSet<String>,
    d: &mut Diagnostics,
) -> Option<Arc<str>> {
    if pools.contains_key(pool) {
        used.insert(pool.to_string());
        Some(pool.into())
    } else {
        let known: Vec<&str> = pools.keys().map(String::as_str).collect();
        d.error(
            src,
            key,
            format!(
                "pool {pool:?} is not defined; defined pools: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
        None
    }
}

/// What route validation needs to know about the rest of the file.
struct RouteCtx<'a> {
    raw_pools: &'a BTreeMap<String, PoolToml>,
    pools: &'a BTreeMap<Arc<str>, PoolSpec>,
}

/// Validate a route's guard tables (at `at`, the route's own path) for route `name` served
/// by pool `pool`.
#[allow(
    clippy::too_many_arguments,
    reason = "one validation pass threads its context"
)]
fn validate_route_guards(
    src: &Source,
    at: &KeyPath,
    name: &str,
    pool: &str,
    g: GuardTables<'_>,
    cx: &RouteCtx<'_>,
    used: &mut HashSet<String>,
    d: &mut Diagnostics,
) -> RouteGuardSpec {
    let rate_limit = g.rate_limit.and_then(|r| {
        validate_rate_limit(src, &at.key("rate_limit"), r, d).map(|mut s| {
            // The header fields and metrics name the route, not the table's parent key.
            s.policy.name = name.to_string();
            s
        })
    });
    let breaker = g
        .breaker
        .and_then(|b| validate_breaker(src, &at.key("breaker"), b, d));
    let concurrency = g
        .concurrency
        .and_then(|c| validate_concurrency(src, &at.key("concurrency"), c, d));
    let pool_shed = cx
        .pools
        .get(pool)
        .and_then(|p| p.concurrency.as_ref())
        .and_then(|c| c.shedding.as_ref());
    let own_shed = concurrency.as_ref().and_then(|c| c.shedding.as_ref());
    let sheds: Vec<(&ShedPolicy, String)> = [
        own_shed.map(|s| (s, "this route's [..concurrency.shedding]".to_string())),
        pool_shed.map(|s| (s, format!("pool {pool:?}'s [..concurrency.shedding]"))),
    ]
    .into_iter()
    .flatten()
    .collect();
    match g.priority {
        Some(p) => {
            let before = d.error_count();
            for (sh, _) in &sheds {
                validate_priority(src, &at.key("priority"), p, Some(sh), d);
                if d.error_count() > before {
                    break;
                }
            }
            if sheds.is_empty() {
                validate_priority(src, &at.key("priority"), p, None, d);
                if d.error_count() == before {
                    d.warning(
                        src,
                        &at.key("priority"),
                        format!("priority has no effect: neither this route nor pool {pool:?} has a [..concurrency.shedding] table"),
                    );
                }
            }
        }
        None => {
            for (sh, what) in &sheds {
                if sh.class("normal").is_none() {
                    d.warning(
                        src,
                        at,
                        format!(
                            "this route has no `priority` and {what} has no \"normal\" class: it is treated as {:?}, the most important class; set `priority`",
                            sh.name(hastack_guard::ClassId(0))
                        ),
                    );
                }
            }
        }
    }
    let fallback = g.fallback.and_then(|f| {
        let fp = at.key("fallback");
        let fb = validate_fallback(src, &fp, f, d)?;
        if let FallbackAction::Pool(target) = &fb.action {
            check_pool_ref(src, &fp.key("pool"), target, cx.raw_pools, used, d)?;
            if f.upstream_error {
                d.error(
                    src,
                    &fp.key("upstream_error"),
                    "upstream_error = true needs a static fallback (status/headers/body): a request that already went to the route's pool cannot be replayed to a fallback pool",
                );
                return None;
            }
            if target == pool {
                d.warning(
                    src,
                    &fp.key("pool"),
                    format!("the fallback pool is the route's own pool {pool:?}: a refused request would go where it was refused"),
                );
            }
        }
        Some(fb)
    });
    RouteGuardSpec {
        rate_limit,
        breaker,
        concurrency,
        priority: g.priority.map(str::to_string),
        fallback,
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "one validation pass threads its context"
)]
fn validate_listener(
    src: &Source,
    at: &KeyPath,
    l: &ListenerToml,
    cx: &RouteCtx<'_>,
    used: &mut HashSet<String>,
    route_names: &mut RouteNames,
    d: &mut Diagnostics,
) -> Option<ListenerSpec> {
    let addr = resolve_addr(src, &at.key("listen"), &l.listen, d);
    let name: Arc<str> = l.name.clone().unwrap_or_else(|| l.listen.clone()).into();
    let idle_timeout = l
        .idle_timeout
        .map_or(Duration::from_secs(3600), Duration::from);
    let max_connections = match l.max_connections {
        Some(0) => {
            d.error(
                src,
                &at.key("max_connections"),
                "max_connections must be at least 1",
            );
            1
        }
        Some(n) => n,
        None => 10_000,
    };
    let kind = match l.protocol {
        Protocol::Tcp => {
            for (key, present) in [
                ("tls", l.tls.is_some()),
                ("routes", !l.routes.is_empty()),
                ("header_read_timeout", l.header_read_timeout.is_some()),
                ("max_header_size", l.max_header_size.is_some()),
                ("max_headers", l.max_headers.is_some()),
                ("max_request_body", l.max_request_body.is_some()),
                ("forwarded_headers", l.forwarded_headers.is_some()),
                ("rate_limit", l.rate_limit.is_some()),
                ("default_route", l.default_route.is_some()),
            ] {
                if present {
                    d.error(
                        src,
                        &at.key(key),
                        format!("`{key}` applies to HTTP listeners only; this one has protocol = \"tcp\""),
                    );
                }
            }
            let pool = match &l.pool {
                Some(p) => check_pool_ref(src, &at.key("pool"), p, cx.raw_pools, used, d),
                None => {
                    d.error(src, at, "a TCP listener needs `pool = \"NAME\"`");
                    None
                }
            };
            ListenerKind::Tcp { pool: pool? }
        }
        Protocol::Http => {
            if l.idle_timeout.is_some() {
                d.error(
                    src,
                    &at.key("idle_timeout"),
                    "`idle_timeout` applies to TCP listeners; an HTTP/1 keep-alive connection is closed after `header_read_timeout` without a new request",
                );
            }
            let default_pool = match &l.pool {
                Some(p) => check_pool_ref(src, &at.key("pool"), p, cx.raw_pools, used, d),
                None => None,
            };
            let mut routes = Vec::new();
            for (i, r) in l.routes.iter().enumerate() {
                let rp = at.key("routes").index(i);
                let Some(pool) =
                    check_pool_ref(src, &rp.key("pool"), &r.pool, cx.raw_pools, used, d)
                else {
                    continue;
                };
                let host = match r.host.as_deref().map(str::trim) {
                    None | Some("") | Some("*") => HostMatch::Any,
                    Some(h) => {
                        let h = h.to_ascii_lowercase();
                        if let Some(rest) = h.strip_prefix("*.") {
                            HostMatch::Suffix(format!(".{rest}"))
                        } else if h.contains('*') || h.contains('/') || h.contains(':') {
                            d.error(
                                src,
                                &rp.key("host"),
                                format!("host {h:?} is not a host name: use \"example.com\" or \"*.example.com\" (no port, no path)"),
                            );
                            continue;
                        } else {
                            HostMatch::Exact(h)
                        }
                    }
                };
                let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".to_string());
                if !path_prefix.starts_with('/') {
                    d.error(
                        src,
                        &rp.key("path_prefix"),
                        format!("path_prefix {path_prefix:?} must start with '/'"),
                    );
                    continue;
                }
                let name: Arc<str> = r
                    .name
                    .clone()
                    .unwrap_or_else(|| {
                        format!("{}{}", r.host.as_deref().unwrap_or(""), path_prefix)
                    })
                    .into();
                check_route_name(src, &rp, &name, r.name.is_some(), route_names, d);
                let guards = validate_route_guards(
                    src,
                    &rp,
                    &name,
                    &pool,
                    GuardTables::from(r),
                    cx,
                    used,
                    d,
                );
                routes.push(RouteSpec {
                    name,
                    host,
                    path_prefix,
                    pool,
                    guards,
                    is_default: false,
                });
            }
            // Most specific first: exact host, then wildcard, then any; longer prefix first.
            routes.sort_by(|a, b| {
                b.host
                    .rank()
                    .cmp(&a.host.rank())
                    .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
            });
            if l.pool.is_none() && l.routes.is_empty() {
                d.error(
                    src,
                    at,
                    "an HTTP listener needs `pool = \"NAME\"` or at least one [[...routes]]",
                );
            }
            let dp = at.key("default_route");
            if l.pool.is_none() && l.default_route.is_some() {
                d.error(
                    src,
                    &dp,
                    "[..default_route] guards the requests no route matches, which go to the listener's `pool`: set `pool = \"NAME\"` on the listener",
                );
            }
            let default_route = default_pool.clone().map(|pool| {
                let dr = l.default_route.as_ref();
                let explicit = dr.and_then(|r| r.name.clone());
                let rname: Arc<str> = explicit.clone().map_or_else(|| name.clone(), Arc::from);
                let name_at = if dr.is_some() {
                    dp.clone()
                } else {
                    at.key("pool")
                };
                check_route_name(src, &name_at, &rname, explicit.is_some(), route_names, d);
                let guards = validate_route_guards(
                    src,
                    &dp,
                    &rname,
                    &pool,
                    dr.map(GuardTables::from).unwrap_or_default(),
                    cx,
                    used,
                    d,
                );
                RouteSpec {
                    name: rname,
                    host: HostMatch::Any,
                    path_prefix: "/".to_string(),
                    pool,
                    guards,
                    is_default: true,
                }
            });
            let rate_limit = l.rate_limit.as_ref().and_then(|r| {
                let rp = at.key("rate_limit");
                if !route_name_ok(&name) {
                    d.error(
                        src,
                        &rp,
                        format!("the listener name {name:?} names this rate limit in the RateLimit header fields and metrics and must be 1-128 printable ASCII characters without '\"', '\\\\', '%', '?', '#' or spaces: set a simpler `name` on the listener"),
                    );
                }
                validate_rate_limit(src, &rp, r, d).map(|mut s| {
                    s.policy.name = name.to_string();
                    s
                })
            });
            let tls = l
                .tls
                .as_ref()
                .and_then(|t| load_tls(src, &at.key("tls"), t, d));
            let max_header_size = l.max_header_size.map_or(64 * 1024, ByteSize::as_usize);
            if max_header_size < 8192 {
                d.error(
                    src,
                    &at.key("max_header_size"),
                    format!("max_header_size must be at least 8KiB (got {max_header_size} bytes)"),
                );
            }
            let max_headers = l.max_headers.unwrap_or(100);
            if max_headers == 0 {
                d.error(
                    src,
                    &at.key("max_headers"),
                    "max_headers must be at least 1",
                );
            }
            ListenerKind::Http(Box::new(HttpListenerSpec {
                tls,
                routes,
                default_pool,
                default_route,
                rate_limit,
                header_read_timeout: l
                    .header_read_timeout
                    .map_or(Duration::from_secs(10), Duration::from),
                max_header_size,
                max_headers,
                max_request_body: l.max_request_body.map_or(100 * 1024 * 1024, |b| b.0),
                forwarded_headers: l.forwarded_headers.unwrap_or(true),
            }))
        }
    };
    Some(ListenerSpec {
        name,
        addr: addr?,
        idle_timeout,
        max_connections,
        kind,
    })
}

fn validate_pool(
    src: &Source,
    at: &KeyPath,
    name: &str,
    p: &PoolToml,
    d: &mut Diagnostics,
) -> Option<PoolSpec> {
    let mut members = Vec::new();
    let mut names = HashSet::new();
    if p.members.is_empty() {
        d.error(
            src,
            &at.key("members"),
            format!("pool {name:?} has no members"),
        );
    }
    for (i, m) in p.members.iter().enumerate() {
        let mp = at.key("members").index(i);
        let Some(addr) = resolve_addr(src, &mp, &m.addr, d) else {
            continue;
        };
        let weight = m.weight.unwrap_or(1);
        if !(1..=1000).contains(&weight) {
            d.error(
                src,
                &mp.key("weight"),
                format!("weight {weight} is out of range 1-1000 (to stop traffic to a member, drain or disable it)"),
            );
            continue;
        }
        let mname: Arc<str> = m.name.clone().unwrap_or_else(|| m.addr.clone()).into();
        if !names.insert(mname.clone()) {
            d.error(
                src,
                &mp,
                format!(
                    "member {mname:?} appears twice in pool {name:?}; give each a distinct `name`"
                ),
            );
            continue;
        }
        members.push(MemberSpec {
            name: mname,
            addr,
            weight,
            backup: m.backup,
        });
    }
    if !p.members.is_empty() && members.iter().all(|m| m.backup) && members.len() == p.members.len()
    {
        d.error(
            src,
            &at.key("members"),
            "every member is a backup: at least one must be a primary",
        );
    }

    let strategy_raw = p.strategy.unwrap_or(StrategyToml::P2cEwma);
    let (strategy, hash_key) = match (strategy_raw, &p.hash) {
        (StrategyToml::Hash, None) => {
            d.error(
                src,
                &at.key("strategy"),
                "strategy = \"hash\" needs `hash = { key = \"client_ip\" | \"uri\" | \"header:NAME\" | \"cookie:NAME\" }`",
            );
            (Strategy::Hash(HashAlgorithm::Maglev), None)
        }
        (StrategyToml::Hash, Some(h)) => {
            let alg = match h.algorithm.unwrap_or(HashAlgorithmToml::Maglev) {
                HashAlgorithmToml::Maglev => HashAlgorithm::Maglev,
                HashAlgorithmToml::Ketama => HashAlgorithm::Ketama,
            };
            (
                Strategy::Hash(alg),
                parse_hash_key(src, &at.key("hash").key("key"), &h.key, d),
            )
        }
        (other, Some(_)) => {
            d.error(
                src,
                &at.key("hash"),
                format!("`hash` only applies with strategy = \"hash\" (this pool uses {other:?})"),
            );
            (strategy_of(other), None)
        }
        (other, None) => (strategy_of(other), None),
    };

    let sticky = p.sticky.as_ref().and_then(|s| {
        let valid = !s.cookie.is_empty()
            && s.cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if valid {
            Some(StickySpec {
                cookie: s.cookie.clone(),
                max_age: s.max_age.map(Duration::from),
            })
        } else {
            d.error(
                src,
                &at.key("sticky").key("cookie"),
                format!(
                    "cookie name {:?} must be non-empty letters, digits, '-', '_' or '.'",
                    s.cookie
                ),
            );
            None
        }
    });

    let health = p
        .health
        .as_ref()
        .and_then(|h| h.validate(src, &at.key("health"), d));

    let o = p.outlier.as_ref();
    let outlier = OutlierSpec {
        consecutive_errors: o.and_then(|o| o.consecutive_errors).unwrap_or(5),
        base_ejection: o
            .and_then(|o| o.base_ejection)
            .map_or(Duration::from_secs(5), Duration::from),
        max_ejection: o
            .and_then(|o| o.max_ejection)
            .map_or(Duration::from_secs(60), Duration::from),
        max_ejected_percent: o.and_then(|o| o.max_ejected_percent).unwrap_or(50),
    };
    if outlier.max_ejected_percent > 100 {
        d.error(
            src,
            &at.key("outlier").key("max_ejected_percent"),
            "max_ejected_percent is a percentage: 0-100",
        );
    }
    if outlier.base_ejection > outlier.max_ejection {
        d.error(
            src,
            &at.key("outlier").key("base_ejection"),
            format!(
                "base_ejection ({}) is longer than max_ejection ({})",
                Dur(outlier.base_ejection),
                Dur(outlier.max_ejection)
            ),
        );
    }

    let r = p.retry.as_ref();
    let retry = RetrySpec {
        attempts: r.and_then(|r| r.attempts).unwrap_or(3),
        on_status: r
            .and_then(|r| r.on_status.clone())
            .unwrap_or_else(|| vec![502, 503, 504]),
        buffer_body: r
            .and_then(|r| r.buffer_body)
            .map_or(64 * 1024, ByteSize::as_usize),
        budget: RetryBudgetPolicy {
            ratio: r.and_then(|r| r.budget_ratio).unwrap_or(0.2),
            min_per_sec: r.and_then(|r| r.budget_min_per_sec).unwrap_or(10),
            window: Duration::from_secs(10),
        },
        backoff: Backoff::new(
            r.and_then(|r| r.backoff_base)
                .map_or(Duration::from_millis(5), Duration::from),
            r.and_then(|r| r.backoff_max)
                .map_or(Duration::from_millis(100), Duration::from),
        ),
    };
    let rp = at.key("retry");
    if retry.attempts == 0 || retry.attempts > 10 {
        d.error(
            src,
            &rp.key("attempts"),
            format!(
                "attempts = {} is out of range 1-10 (1 means no retries)",
                retry.attempts
            ),
        );
    }
    for s in &retry.on_status {
        if !(100..=599).contains(s) {
            d.error(
                src,
                &rp.key("on_status"),
                format!("{s} is not an HTTP status code"),
            );
        }
    }
    if !(0.0..=10.0).contains(&retry.budget.ratio) {
        d.error(
            src,
            &rp.key("budget_ratio"),
            format!(
                "budget_ratio {} must be between 0.0 and 10.0",
                retry.budget.ratio
            ),
        );
    }

    let connect_timeout = p
        .connect_timeout
        .map_or(Duration::from_secs(2), Duration::from);
    let try_timeout = p
        .try_timeout
        .map_or(Duration::from_secs(30), Duration::from);
    let request_timeout = p
        .request_timeout
        .map_or(Duration::from_secs(60), Duration::from);
    for (key, v) in [
        ("connect_timeout", connect_timeout),
        ("try_timeout", try_timeout),
        ("request_timeout", request_timeout),
    ] {
        if v.is_zero() {
            d.error(src, &at.key(key), format!("{key} must be more than zero"));
        }
    }
    if try_timeout > request_timeout {
        d.warning(
            src,
            &at.key("try_timeout"),
            format!(
                "try_timeout ({}) exceeds request_timeout ({}): a slow try leaves no time for a retry",
                Dur(try_timeout),
                Dur(request_timeout)
            ),
        );
    }
    let panic_threshold = p.panic_threshold.unwrap_or(0);
    if panic_threshold > 100 {
        d.error(
            src,
            &at.key("panic_threshold"),
            "panic_threshold is a percentage: 0-100",
        );
    }
    let concurrency = p
        .concurrency
        .as_ref()
        .and_then(|c| validate_concurrency(src, &at.key("concurrency"), c, d));
    let breaker = p
        .breaker
        .as_ref()
        .and_then(|b| validate_breaker(src, &at.key("breaker"), b, d));
    Some(PoolSpec {
        name: name.into(),
        members,
        strategy,
        hash_key,
        sticky,
        health,
        outlier,
        retry,
        connect_timeout,
        try_timeout,
        request_timeout,
        slow_start: p.slow_start.map_or(Duration::from_secs(5), Duration::from),
        panic_threshold,
        max_idle_per_member: p.max_idle_per_member.unwrap_or(64),
        upstream_idle_timeout: p
            .upstream_idle_timeout
            .map_or(Duration::from_secs(20), Duration::from),
        concurrency,
        breaker,
    })
}

fn strategy_of(s: StrategyToml) -> Strategy {
    match s {
        StrategyToml::RoundRobin => Strategy::RoundRobin,
        StrategyToml::Random => Strategy::Random,
        StrategyToml::LeastConn => Strategy::LeastConn,
        StrategyToml::P2cEwma => Strategy::P2cEwma,
        StrategyToml::Hash => Strategy::Hash(HashAlgorithm::Maglev),
    }
}

fn parse_hash_key(src: &Source, at: &KeyPath, key: &str, d: &mut Diagnostics) -> Option<HashKey> {
    let bad = |d: &mut Diagnostics, why: &str| {
        d.error(
            src,
            at,
            format!("hash key {key:?} {why}: use \"client_ip\", \"uri\", \"header:NAME\" or \"cookie:NAME\""),
        );
        None
    };
    match key.split_once(':') {
        None if key == "client_ip" => Some(HashKey::ClientIp),
        None if key == "uri" => Some(HashKey::Uri),
        Some(("header", name)) => match http::HeaderName::from_bytes(name.trim().as_bytes()) {
            Ok(h) => Some(HashKey::Header(h)),
            Err(_) => bad(d, "names an invalid header"),
        },
        Some(("cookie", name)) if !name.trim().is_empty() => {
            Some(HashKey::Cookie(name.trim().to_string()))
        }
        _ => bad(d, "is not understood"),
    }
}

/// Parse `host:port`; resolves names once, at load time.
fn resolve_addr(src: &Source, at: &KeyPath, s: &str, d: &mut Diagnostics) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    if !s.contains(':') {
        d.error(
            src,
            at,
            format!("address {s:?} has no port: write \"host:port\", e.g. \"127.0.0.1:8080\""),
        );
        return None;
    }
    match s.to_socket_addrs() {
        Ok(mut it) => match it.next() {
            Some(a) => Some(a),
            None => {
                d.error(src, at, format!("address {s:?} resolves to nothing"));
                None
            }
        },
        Err(e) => {
            d.error(src, at, format!("address {s:?} cannot be resolved: {e}"));
            None
        }
    }
}

fn load_tls(src: &Source, at: &KeyPath, t: &TlsToml, d: &mut Diagnostics) -> Option<TlsSpec> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let base = src.path().and_then(Path::parent).unwrap_or(Path::new("."));
    let cert_path = base.join(&t.cert);
    let key_path = base.join(&t.key);
    let certs: Vec<CertificateDer<'static>> = match CertificateDer::pem_file_iter(&cert_path) {
        Ok(it) => match it.collect::<Result<Vec<_>, _>>() {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => {
                d.error(
                    src,
                    &at.key("cert"),
                    format!("{} holds no PEM certificate", cert_path.display()),
                );
                return None;
            }
            Err(e) => {
                d.error(
                    src,
                    &at.key("cert"),
                    format!("cannot read certificates from {}: {e}", cert_path.display()),
                );
                return None;
            }
        },
        Err(e) => {
            d.error(
                src,
                &at.key("cert"),
                format!("cannot read {}: {e}", cert_path.display()),
            );
            return None;
        }
    };
    let key = match PrivateKeyDer::from_pem_file(&key_path) {
        Ok(k) => k,
        Err(e) => {
            d.error(
                src,
                &at.key("key"),
                format!(
                    "cannot read a PEM private key from {}: {e}",
                    key_path.display()
                ),
            );
            return None;
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(|e| e.to_string())
        });
    match config {
        Ok(mut c) => {
            c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Some(TlsSpec {
                cert: cert_path,
                key: key_path,
                config: Arc::new(c),
            })
        }
        Err(e) => {
            d.error(
                src,
                at,
                format!("the certificate and key do not make a TLS config: {e}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(ProxySpec, Diagnostics), Diagnostics> {
        let src = Source::parse("t.toml", text.to_string()).unwrap();
        load(&src)
    }

    const GOOD: &str = r#"
[proxy]
workers = 2
[proxy.admin]
listen = "127.0.0.1:9900"
[[proxy.listeners]]
name = "web"
listen = "127.0.0.1:8080"
pool = "app"
[[proxy.listeners.routes]]
path_prefix = "/api"
pool = "api"
[[proxy.listeners.routes]]
host = "*.example.com"
pool = "api"
[[proxy.listeners]]
listen = "127.0.0.1:5432"
protocol = "tcp"
pool = "api"
[proxy.pools.app]
members = ["127.0.0.1:9001", { addr = "127.0.0.1:9002", weight = 3 }, { addr = "127.0.0.1:9003", backup = true }]
strategy = "round_robin"
[proxy.pools.app.health]
type = "http"
path = "/health"
[proxy.pools.api]
members = ["127.0.0.1:9101"]
strategy = "hash"
hash = { key = "header:x-user" }
"#;

    #[test]
    fn a_good_config_validates() {
        let (spec, warnings) = check(GOOD).unwrap();
        assert!(warnings.is_empty(), "{warnings}");
        assert_eq!(spec.workers, 2);
        assert_eq!(spec.listeners.len(), 2);
        let app = &spec.pools["app"];
        assert_eq!(app.members[1].weight, 3);
        assert!(app.members[2].backup);
        assert_eq!(app.strategy, Strategy::RoundRobin);
        assert!(app.health.is_some());
        let ListenerKind::Http(h) = &spec.listeners[0].kind else {
            panic!("http")
        };
        // Wildcard host route sorts before the any-host route.
        assert_eq!(h.routes[0].host, HostMatch::Suffix(".example.com".into()));
        assert_eq!(
            spec.pools["api"].hash_key,
            Some(HashKey::Header(http::HeaderName::from_static("x-user")))
        );
        assert!(summary(&spec).contains("tcp://127.0.0.1:5432"));
    }

    #[test]
    fn every_error_is_reported_with_a_location() {
        let text = r#"
[proxy]
[[proxy.listeners]]
listen = "127.0.0.1"
pool = "nope"
[[proxy.listeners]]
listen = "127.0.0.1:81"
protocol = "tcp"
routes = [{ pool = "app" }]
[proxy.pools.app]
members = [{ addr = "127.0.0.1:1", weight = 0 }, "127.0.0.1:2", "127.0.0.1:2"]
strategy = "hash"
connect_timeout = "0s"
"#;
        let err = check(text).unwrap_err();
        let s = err.to_string();
        for needle in [
            "t.toml:4:1: error: proxy.listeners[0].listen: address \"127.0.0.1\" has no port",
            "proxy.listeners[0].pool: pool \"nope\" is not defined; defined pools: app",
            "`routes` applies to HTTP listeners only",
            "a TCP listener needs `pool",
            "weight 0 is out of range 1-1000",
            "member \"127.0.0.1:2\" appears twice",
            "strategy = \"hash\" needs",
            "connect_timeout must be more than zero",
        ] {
            assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
        }
        // Sorted by line.
        let lines: Vec<usize> = err.items().iter().filter_map(|d| d.line).collect();
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted);
    }

    #[test]
    fn unknown_keys_and_bad_enums_are_located() {
        let err = check("[proxy]\n[proxy.pools.a]\nmembers = []\nstratgy = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("t.toml:4:1"), "{err}");
        assert!(err.to_string().contains("unknown field `stratgy`"), "{err}");
        let err =
            check("[proxy]\n[proxy.pools.a]\nmembers = []\nstrategy = \"fastest\"\n").unwrap_err();
        assert!(err.to_string().contains("p2c_ewma"), "{err}");
        let err = check("[proxy]\n[proxy.pools.a]\nmembers = [{ adr = \"x:1\" }]\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `adr`"), "{err}");
    }

    #[test]
    fn missing_section_is_explained() {
        let err = check("[vip]\nx = 1\n").unwrap_err();
        assert!(err.to_string().contains("no [proxy] section"), "{err}");
    }

    #[test]
    fn unused_pool_and_missing_admin_warn() {
        let text = "[proxy]\n[[proxy.listeners]]\nlisten = \"127.0.0.1:1\"\npool = \"a\"\n[proxy.pools.a]\nmembers = [\"127.0.0.1:2\"]\n[proxy.pools.b]\nmembers = [\"127.0.0.1:3\"]\n";
        let (_, w) = check(text).unwrap();
        let s = w.to_string();
        assert!(s.contains("pool \"b\" is not used"), "{s}");
        assert!(s.contains("no [proxy.admin]"), "{s}");
    }

    #[test]
    fn tls_files_are_checked() {
        let text = "[proxy]\n[[proxy.listeners]]\nlisten = \"127.0.0.1:1\"\npool = \"a\"\ntls = { cert = \"/nonexistent/c.pem\", key = \"/nonexistent/k.pem\" }\n[proxy.pools.a]\nmembers = [\"127.0.0.1:2\"]\n";
        let err = check(text).unwrap_err();
        assert!(
            err.to_string().contains("cannot read /nonexistent/c.pem"),
            "{err}"
        );
    }

    proptest::proptest! {
        /// Whatever the file says, loading it returns a spec or located errors: no panic.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            if let Ok(src) = Source::parse("t.toml", text) {
                let _ = load(&src);
            }
        }

        /// Mutations of a valid file (a key's value replaced by junk) never panic either.
        #[test]
        fn mutated_config_never_panics(pos in 0usize..GOOD.len(), junk in "[\\[\\]{}=\",.0-9a-z:\\n -]{0,12}") {
            let mut text = GOOD.to_string();
            let pos = (0..=pos).rev().find(|p| text.is_char_boundary(*p)).unwrap_or(0);
            text.insert_str(pos, &junk);
            if let Ok(src) = Source::parse("t.toml", text) {
                let _ = load(&src);
            }
        }
    }

    const GUARDED: &str = r#"
[proxy]
workers = 1
[proxy.admin]
listen = "127.0.0.1:9900"
[[proxy.listeners]]
name = "web"
listen = "127.0.0.1:8080"
pool = "app"
[proxy.listeners.rate_limit]
rate = 1000
[proxy.listeners.default_route]
name = "catchall"
priority = "best_effort"
[proxy.listeners.default_route.fallback]
status = 503
body = "busy"
[[proxy.listeners.routes]]
name = "checkout"
path_prefix = "/checkout"
pool = "app"
priority = "critical"
[proxy.listeners.routes.rate_limit]
rate = 20
burst = 40
key = "client_ip"
[proxy.listeners.routes.breaker]
failure_ratio = 0.3
[proxy.listeners.routes.fallback]
body = "sorry"
[[proxy.listeners.routes]]
name = "search"
path_prefix = "/search"
pool = "app"
[proxy.listeners.routes.concurrency]
max_inflight = 10
[proxy.listeners.routes.fallback]
pool = "static"
[proxy.pools.app]
members = ["127.0.0.1:9001", "127.0.0.1:9002"]
[proxy.pools.app.concurrency]
max_inflight = 100
[proxy.pools.app.concurrency.shedding]
[proxy.pools.app.breaker]
min_calls = 5
window_calls = 10
[proxy.pools.static]
members = ["127.0.0.1:9101"]
"#;

    fn http(spec: &ProxySpec, i: usize) -> &HttpListenerSpec {
        match &spec.listeners[i].kind {
            ListenerKind::Http(h) => h,
            ListenerKind::Tcp { .. } => panic!("tcp"),
        }
    }

    #[test]
    fn guard_tables_validate_onto_routes_pools_and_listeners() {
        let (spec, warnings) = check(GUARDED).unwrap();
        assert!(warnings.is_empty(), "{warnings}");
        let h = http(&spec, 0);
        let checkout = h.routes.iter().find(|r| &*r.name == "checkout").unwrap();
        let rl = checkout.guards.rate_limit.as_ref().unwrap();
        // The header fields and metrics name the route, not the table's parent key.
        assert_eq!(
            (rl.policy.name.as_str(), rl.policy.rate, rl.policy.burst),
            ("checkout", 20, 40)
        );
        assert_eq!(checkout.guards.breaker.unwrap().failure_ratio, 0.3);
        assert_eq!(checkout.guards.priority.as_deref(), Some("critical"));
        let search = h.routes.iter().find(|r| &*r.name == "search").unwrap();
        assert_eq!(search.guards.concurrency.as_ref().unwrap().max_inflight, 10);
        assert_eq!(
            search.guards.fallback.as_ref().unwrap().action,
            FallbackAction::Pool("static".into())
        );
        let d = h.default_route.as_ref().unwrap();
        assert!(d.is_default);
        assert_eq!((&*d.name, &*d.pool), ("catchall", "app"));
        assert!(d.guards.fallback.is_some());
        assert_eq!(h.rate_limit.as_ref().unwrap().policy.name, "web");
        let app = &spec.pools["app"];
        assert!(app.concurrency.as_ref().unwrap().shedding.is_some());
        assert_eq!(app.breaker.unwrap().min_calls, 5);
        // The fallback pool counts as used: no "not used" warning for it.
        assert!(
            summary(&spec).contains("3 route(s) (3 guarded)"),
            "{}",
            summary(&spec)
        );
    }

    #[test]
    fn a_default_route_exists_without_a_table_and_is_named_after_the_listener() {
        let (spec, _) = check(GOOD).unwrap();
        let d = http(&spec, 0).default_route.as_ref().unwrap();
        assert_eq!((&*d.name, &*d.pool), ("web", "app"));
        assert!(d.guards.rate_limit.is_none() && d.guards.fallback.is_none());
    }

    #[test]
    fn guard_errors_are_all_reported_with_locations() {
        let text = r#"
[proxy]
[[proxy.listeners]]
name = "web"
listen = "127.0.0.1:8080"
[proxy.listeners.default_route]
priority = "normal"
[[proxy.listeners.routes]]
name = "a"
pool = "app"
priority = "vip"
[proxy.listeners.routes.breaker]
failure_ratio = 1.5
[proxy.listeners.routes.fallback]
pool = "nope"
[[proxy.listeners.routes]]
name = "b"
path_prefix = "/b"
pool = "app"
[proxy.listeners.routes.fallback]
pool = "app"
upstream_error = true
[[proxy.listeners.routes]]
name = "has space"
path_prefix = "/c"
pool = "app"
[[proxy.listeners]]
name = "other"
listen = "127.0.0.1:8081"
[[proxy.listeners.routes]]
name = "a"
pool = "app"
[proxy.listeners.routes.rate_limit]
per = "1s"
[[proxy.listeners]]
listen = "127.0.0.1:8082"
protocol = "tcp"
pool = "app"
[proxy.listeners.rate_limit]
rate = 5
[proxy.pools.app]
members = ["127.0.0.1:9001"]
[proxy.pools.app.concurrency]
max_inflight = 0
[proxy.pools.app.concurrency.shedding]
classes = ["gold", "silver"]
shares = [1.0, 0.5]
[proxy.pools.app.breaker]
open_for = "0s"
"#;
        let err = check(text).unwrap_err();
        let s = err.to_string();
        for needle in [
            "t.toml:6:18: error: proxy.listeners[0].default_route: [..default_route] guards the requests no route matches",
            "t.toml:11:1: error: proxy.listeners[0].routes[0].priority: unknown priority \"vip\"",
            "t.toml:13:1: error: proxy.listeners[0].routes[0].breaker.failure_ratio: 1.5 is not a ratio",
            "t.toml:15:1: error: proxy.listeners[0].routes[0].fallback.pool: pool \"nope\" is not defined; defined pools: app",
            "t.toml:22:1: error: proxy.listeners[0].routes[1].fallback.upstream_error: upstream_error = true needs a static fallback",
            "t.toml:24:1: error: proxy.listeners[0].routes[2].name: route name \"has space\" is not usable",
            "t.toml:31:1: error: proxy.listeners[1].routes[0].name: route name \"a\" is already used by proxy.listeners[0].routes[0]",
            "proxy.listeners[1].routes[0].rate_limit: a rate limit needs `rate`",
            "proxy.listeners[2].rate_limit: `rate_limit` applies to HTTP listeners only",
            "proxy.pools.app.concurrency.max_inflight: max_inflight must be between 1 and 1000000",
            "proxy.pools.app.breaker.open_for: open_for must be above zero",
        ] {
            assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
        }
    }

    #[test]
    fn priorities_are_checked_against_every_bulkhead_the_route_passes() {
        // Valid in the pool's classes, and the route's own bulkhead sheds with other ones.
        let text = r#"
[proxy]
[proxy.admin]
listen = "127.0.0.1:9900"
[[proxy.listeners]]
listen = "127.0.0.1:8080"
[[proxy.listeners.routes]]
name = "a"
pool = "app"
priority = "gold"
[proxy.listeners.routes.concurrency.shedding]
[[proxy.listeners.routes]]
name = "b"
path_prefix = "/b"
pool = "plain"
priority = "critical"
[[proxy.listeners.routes]]
name = "c"
path_prefix = "/c"
pool = "app"
[proxy.pools.app]
members = ["127.0.0.1:9001"]
[proxy.pools.app.concurrency.shedding]
classes = ["gold", "silver"]
shares = [1.0, 0.5]
[proxy.pools.plain]
members = ["127.0.0.1:9002"]
"#;
        let err = check(text).unwrap_err();
        let s = err.to_string();
        assert!(
            s.contains("routes[0].priority: unknown priority \"gold\"; the classes are: critical, normal, best_effort"),
            "{s}"
        );
        assert_eq!(err.error_count(), 1, "{s}");
        let ok = text.replace(
            "[proxy.listeners.routes.concurrency.shedding]\n",
            "[proxy.listeners.routes.concurrency.shedding]\nclasses = [\"gold\", \"silver\"]\nshares = [1.0, 0.5]\n",
        );
        let (_, w) = check(&ok).unwrap();
        let w = w.to_string();
        assert!(
            w.contains(
                "routes[1].priority: priority has no effect: neither this route nor pool \"plain\""
            ),
            "{w}"
        );
        assert!(
            w.contains("routes[2]: this route has no `priority` and pool \"app\"'s [..concurrency.shedding] has no \"normal\" class: it is treated as \"gold\""),
            "{w}"
        );
    }

    #[test]
    fn default_route_names_collide_like_any_other() {
        let text = "[proxy]\n[[proxy.listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\npool = \"a\"\n[[proxy.listeners.routes]]\nname = \"web\"\npath_prefix = \"/x\"\npool = \"a\"\n[proxy.pools.a]\nmembers = [\"127.0.0.1:2\"]\n";
        let err = check(text).unwrap_err();
        assert!(
            err.to_string()
                .contains("t.toml:5:1: error: proxy.listeners[0].pool: route name \"web\" is already used by proxy.listeners[0].routes[0]"),
            "{err}"
        );
    }

    #[test]
    fn host_matching() {
        let s = HostMatch::Suffix(".example.com".into());
        assert!(s.matches("a.example.com"));
        assert!(!s.matches("example.com"));
        assert!(!s.matches("aexample.com"));
        assert!(HostMatch::Exact("x".into()).matches("x"));
    }
}
