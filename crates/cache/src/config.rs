//! The `[cache]` section: `[cache.proxy]` (the sharding proxy), validated into a
//! [`ProxySpec`] with located, plain-English errors. Every key and default is documented in
//! docs/cache.md; the defaults are written once, here, as constants.
//!
//! ```toml
//! [cache.proxy]
//! listen = "127.0.0.1:7000"
//! admin = "127.0.0.1:7001"
//! read_policy = "master"          # or "prefer_replica"
//!
//! [[cache.proxy.shards]]
//! name = "a"
//! master = "127.0.0.1:6379"
//! replicas = ["127.0.0.1:6380"]
//! slots = "0-8191"                # optional: every shard or none (then an even split)
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use hastack_config::{ByteSize, Diagnostics, Dur, KeyPath, Source};
use hastack_probe::{MAX_INTERVAL, MIN_INTERVAL, Schedule};
use serde::Deserialize;

use crate::resp::Limits;
use crate::slot::SLOTS;
use crate::slotmap::{SlotMap, ranges_text};

/// The top-level section this crate owns.
pub const SECTION: &str = "cache";

/// Default backend answer timeout (`timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default backend connect timeout (`connect_timeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default `max_clients`.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Default `limits.proto_max_bulk_len`: 16 MiB (Redis: 512 MiB, too much for a buffer a
/// proxy holds per client).
pub const DEFAULT_MAX_BULK: u64 = 16 * 1024 * 1024;
/// Default `limits.client_query_buffer_limit`: 32 MiB.
pub const DEFAULT_QUERY_LIMIT: u64 = 32 * 1024 * 1024;
/// Default `limits.max_reply_size`: 32 MiB.
pub const DEFAULT_MAX_REPLY: u64 = 32 * 1024 * 1024;
/// Default `limits.client_output_buffer_limit`: 64 MiB.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 64 * 1024 * 1024;
/// Default `limits.max_pipeline`: requests in flight per client.
pub const DEFAULT_MAX_PIPELINE: usize = 1024;
/// Default `limits.max_elements` (Redis's multibulk limit).
pub const DEFAULT_MAX_ELEMENTS: usize = 1024 * 1024;
/// Default `limits.max_transaction`: commands queued in one MULTI.
pub const DEFAULT_MAX_TRANSACTION: usize = 10_000;
/// Default `health.interval`.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Default `health.timeout`.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Default `health.fall`: one failed probe takes a server down, so a dead shard is
/// detected within one probe interval (a wrong verdict costs misses, never data).
pub const DEFAULT_FALL: u32 = 1;
/// Default `health.rise`.
pub const DEFAULT_RISE: u32 = 2;
/// Default `health.jitter`.
pub const DEFAULT_JITTER: f64 = 0.1;

/// Where reads go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadPolicy {
    /// Every command to the shard's master.
    #[default]
    Master,
    /// Reads to a usable replica (round robin), the master when none is.
    PreferReplica,
}

impl ReadPolicy {
    /// Every policy.
    pub const ALL: [ReadPolicy; 2] = [ReadPolicy::Master, ReadPolicy::PreferReplica];

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            ReadPolicy::Master => "master",
            ReadPolicy::PreferReplica => "prefer_replica",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheToml {
    proxy: Option<ProxyToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxyToml {
    listen: String,
    admin: Option<String>,
    workers: Option<usize>,
    password: Option<String>,
    backend_password: Option<String>,
    #[serde(default)]
    read_policy: ReadPolicy,
    timeout: Option<Dur>,
    connect_timeout: Option<Dur>,
    max_clients: Option<usize>,
    pubsub_shard: Option<String>,
    #[serde(default)]
    limits: LimitsToml,
    #[serde(default)]
    health: HealthToml,
    #[serde(default)]
    shards: Vec<ShardToml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsToml {
    proto_max_bulk_len: Option<ByteSize>,
    client_query_buffer_limit: Option<ByteSize>,
    client_output_buffer_limit: Option<ByteSize>,
    max_reply_size: Option<ByteSize>,
    max_pipeline: Option<usize>,
    max_elements: Option<usize>,
    max_transaction: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthToml {
    interval: Option<Dur>,
    fast_interval: Option<Dur>,
    down_interval: Option<Dur>,
    timeout: Option<Dur>,
    jitter: Option<f64>,
    rise: Option<u32>,
    fall: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardToml {
    name: String,
    master: String,
    #[serde(default)]
    replicas: Vec<String>,
    slots: Option<SlotsToml>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SlotsToml {
    Text(String),
    One(i64),
    List(Vec<SlotsToml>),
}

/// The validated `[cache]` section.
#[derive(Clone, Debug)]
pub struct CacheSpec {
    /// `[cache.proxy]`, if present.
    pub proxy: Option<ProxySpec>,
}

/// A validated `[cache.proxy]` table.
#[derive(Clone, Debug)]
pub struct ProxySpec {
    /// Client listener.
    pub listen: SocketAddr,
    /// Admin listener (`/status`, `/metrics`).
    pub admin: Option<SocketAddr>,
    /// Data-plane worker threads.
    pub workers: usize,
    /// Proxy-side password clients `AUTH` with.
    pub password: Option<Bytes>,
    /// Password the proxy sends to every backend (`AUTH`) on connect.
    pub backend_password: Option<Bytes>,
    /// Where reads go.
    pub read_policy: ReadPolicy,
    /// A backend must answer within this; else its connection is closed and the requests
    /// on it fail (reads as misses).
    pub timeout: Duration,
    /// Bound on connecting to a backend.
    pub connect_timeout: Duration,
    /// Most client connections at once; more are closed at accept.
    pub max_clients: usize,
    /// The shard whose master carries pub/sub.
    pub pubsub_shard: usize,
    /// Buffer and size limits.
    pub limits: ProxyLimits,
    /// Active health checks.
    pub health: HealthSpec,
    /// The shard groups, in config order (index = shard number).
    pub shards: Vec<ShardSpec>,
    /// Slot owners.
    pub slots: SlotMap,
}

/// Client-protection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyLimits {
    /// Client request framing: `proto_max_bulk_len`, `max_elements`,
    /// `client_query_buffer_limit` (as the frame limit).
    pub request: Limits,
    /// Backend reply framing: `proto_max_bulk_len`, `max_elements`, `max_reply_size`.
    pub reply: Limits,
    /// Bytes of answers waiting for a client that does not read; beyond it the client is
    /// disconnected (Redis's `client-output-buffer-limit`, hard limit).
    pub client_output_buffer_limit: usize,
    /// Requests in flight per client; beyond it the proxy stops reading that client.
    pub max_pipeline: usize,
    /// Commands queued in one `MULTI`.
    pub max_transaction: usize,
}

/// Active health checks of every backend server (PING).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HealthSpec {
    /// When to probe.
    pub schedule: Schedule,
    /// Consecutive passes that bring a server back.
    pub rise: u32,
    /// Consecutive failures that take it down.
    pub fall: u32,
}

/// One shard group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// Name (in errors, metrics and status).
    pub name: String,
    /// Master address.
    pub master: SocketAddr,
    /// Replica addresses.
    pub replicas: Vec<SocketAddr>,
}

/// Load and validate the `[cache]` section of `src`.
pub fn load(src: &Source) -> Result<(CacheSpec, Diagnostics), Diagnostics> {
    let root = KeyPath::root().key(SECTION);
    let Some(t) = src.section::<CacheToml>(SECTION)? else {
        let mut d = Diagnostics::new();
        d.error(src, &KeyPath::root(), "no [cache] section: nothing to run");
        return Err(d);
    };
    let mut diags = Diagnostics::new();
    let proxy = match t.proxy {
        Some(p) => validate_proxy(src, &root.key("proxy"), p, &mut diags),
        None => {
            diags.error(
                src,
                &root,
                "[cache] has no [cache.proxy] table: nothing to run (the failover manager comes with the coordination layer)",
            );
            None
        }
    };
    if diags.has_errors() {
        diags.sort();
        return Err(diags);
    }
    Ok((CacheSpec { proxy }, diags))
}

/// Load `[cache.proxy]` (an error when absent).
pub fn load_proxy(src: &Source) -> Result<(ProxySpec, Diagnostics), Diagnostics> {
    let (spec, warnings) = load(src)?;
    match spec.proxy {
        Some(p) => Ok((p, warnings)),
        None => {
            let mut d = Diagnostics::new();
            d.error(src, &KeyPath::root().key(SECTION), "no [cache.proxy] table");
            Err(d)
        }
    }
}

/// One line for `hastack check`.
pub fn summary(spec: &CacheSpec) -> String {
    match &spec.proxy {
        Some(p) => format!(
            "cache proxy on {}: {} shard(s) ({}), read policy {}, {} worker(s)",
            p.listen,
            p.shards.len(),
            p.shards
                .iter()
                .enumerate()
                .map(|(i, s)| format!(
                    "{} {} + {} replica(s) slots {}",
                    s.name,
                    s.master,
                    s.replicas.len(),
                    ranges_text(&p.slots.ranges(i))
                ))
                .collect::<Vec<_>>()
                .join("; "),
            p.read_policy.name(),
            p.workers
        ),
        None => "cache: nothing configured".to_string(),
    }
}

/// For `hastack check`: validate and summarise.
pub fn check(src: &Source) -> Result<(String, Diagnostics), Diagnostics> {
    load(src).map(|(spec, w)| (summary(&spec), w))
}

fn addr(
    src: &Source,
    at: &KeyPath,
    text: &str,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            diags.error(
                src,
                at,
                format!("{what} {text:?} is not an IP address and port, like \"127.0.0.1:6379\""),
            );
            None
        }
    }
}

fn validate_proxy(
    src: &Source,
    at: &KeyPath,
    t: ProxyToml,
    diags: &mut Diagnostics,
) -> Option<ProxySpec> {
    let before = diags.error_count();
    let listen = addr(src, &at.key("listen"), &t.listen, "listen", diags);
    let admin = t
        .admin
        .as_deref()
        .and_then(|a| addr(src, &at.key("admin"), a, "admin", diags));
    if let (Some(l), Some(a)) = (listen, admin) {
        if l == a && l.port() != 0 {
            diags.error(
                src,
                &at.key("admin"),
                "admin must not share the client listener's address",
            );
        }
    }
    let workers = t.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    if !(1..=256).contains(&workers) {
        diags.error(
            src,
            &at.key("workers"),
            format!("workers ({workers}) must be between 1 and 256"),
        );
    }
    let positive = |key: &str, d: Option<Dur>, default: Duration, diags: &mut Diagnostics| {
        let v = d.map_or(default, Duration::from);
        if v.is_zero() || v > MAX_INTERVAL {
            diags.error(
                src,
                &at.key(key),
                format!("{key} ({}) must be positive and at most a day", Dur(v)),
            );
        }
        v
    };
    let timeout = positive("timeout", t.timeout, DEFAULT_TIMEOUT, diags);
    let connect_timeout = positive(
        "connect_timeout",
        t.connect_timeout,
        DEFAULT_CONNECT_TIMEOUT,
        diags,
    );
    let max_clients = t.max_clients.unwrap_or(DEFAULT_MAX_CLIENTS);
    if max_clients == 0 {
        diags.error(
            src,
            &at.key("max_clients"),
            "max_clients must be at least 1",
        );
    }
    for (key, v) in [
        ("password", &t.password),
        ("backend_password", &t.backend_password),
    ] {
        if v.as_deref() == Some("") {
            diags.error(
                src,
                &at.key(key),
                format!("{key} is empty: remove the key for no password"),
            );
        }
    }
    let limits = validate_limits(src, &at.key("limits"), &t.limits, diags);
    let health = validate_health(src, &at.key("health"), &t.health, diags);
    let (shards, slots) = validate_shards(src, &at.key("shards"), &t.shards, diags);
    let pubsub_shard = match &t.pubsub_shard {
        None => 0,
        Some(name) => match shards.iter().position(|s| &s.name == name) {
            Some(i) => i,
            None => {
                diags.error(
                    src,
                    &at.key("pubsub_shard"),
                    format!(
                        "pubsub_shard {name:?} names no shard; shards: {}",
                        shards
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                0
            }
        },
    };
    if diags.error_count() > before {
        return None;
    }
    Some(ProxySpec {
        listen: listen?,
        admin,
        workers,
        password: t.password.map(Bytes::from),
        backend_password: t.backend_password.map(Bytes::from),
        read_policy: t.read_policy,
        timeout,
        connect_timeout,
        max_clients,
        pubsub_shard,
        limits: limits?,
        health: health?,
        shards,
        slots: slots?,
    })
}

fn validate_limits(
    src: &Source,
    at: &KeyPath,
    t: &LimitsToml,
    diags: &mut Diagnostics,
) -> Option<ProxyLimits> {
    let before = diags.error_count();
    let size = |v: Option<ByteSize>, d: u64| v.map_or(d, |b| b.0);
    let bulk = size(t.proto_max_bulk_len, DEFAULT_MAX_BULK);
    let query = size(t.client_query_buffer_limit, DEFAULT_QUERY_LIMIT);
    let reply = size(t.max_reply_size, DEFAULT_MAX_REPLY);
    let output = size(t.client_output_buffer_limit, DEFAULT_OUTPUT_LIMIT);
    const MAX: u64 = 1 << 40;
    for (key, v) in [
        ("proto_max_bulk_len", bulk),
        ("client_query_buffer_limit", query),
        ("max_reply_size", reply),
        ("client_output_buffer_limit", output),
    ] {
        if v == 0 || v > MAX {
            diags.error(
                src,
                &at.key(key),
                format!("{key} ({v} bytes) must be between 1 byte and 1TiB"),
            );
        }
    }
    let mut at_least = |key: &str, v: u64, other: &str, min: u64| {
        if v < min {
            diags.error(
                src,
                &at.key(key),
                format!(
                    "{key} ({v} bytes) must be at least {other} ({min} bytes): one request or answer carrying a maximal value must fit"
                ),
            );
        }
    };
    at_least(
        "client_query_buffer_limit",
        query,
        "proto_max_bulk_len",
        bulk,
    );
    at_least("max_reply_size", reply, "proto_max_bulk_len", bulk);
    at_least(
        "client_output_buffer_limit",
        output,
        "max_reply_size",
        reply,
    );
    let count = |key: &str, v: Option<usize>, d: usize, max: usize, diags: &mut Diagnostics| {
        let v = v.unwrap_or(d);
        if v == 0 || v > max {
            diags.error(
                src,
                &at.key(key),
                format!("{key} ({v}) must be between 1 and {max}"),
            );
        }
        v
    };
    let max_pipeline = count(
        "max_pipeline",
        t.max_pipeline,
        DEFAULT_MAX_PIPELINE,
        1 << 20,
        diags,
    );
    let max_elements = count(
        "max_elements",
        t.max_elements,
        DEFAULT_MAX_ELEMENTS,
        1 << 24,
        diags,
    );
    let max_transaction = count(
        "max_transaction",
        t.max_transaction,
        DEFAULT_MAX_TRANSACTION,
        1 << 20,
        diags,
    );
    if diags.error_count() > before {
        return None;
    }
    let us = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    Some(ProxyLimits {
        request: Limits {
            max_bulk_len: us(bulk),
            max_elements,
            max_frame_len: us(query),
        },
        reply: Limits {
            max_bulk_len: us(bulk),
            max_elements,
            max_frame_len: us(reply),
        },
        client_output_buffer_limit: us(output),
        max_pipeline,
        max_transaction,
    })
}

fn validate_health(
    src: &Source,
    at: &KeyPath,
    t: &HealthToml,
    diags: &mut Diagnostics,
) -> Option<HealthSpec> {
    let before = diags.error_count();
    let interval_ok = |key: &str, d: Duration, diags: &mut Diagnostics| {
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&d) {
            diags.error(
                src,
                &at.key(key),
                format!(
                    "{key} ({}) must be between {} and {}",
                    Dur(d),
                    Dur(MIN_INTERVAL),
                    Dur(MAX_INTERVAL)
                ),
            );
        }
        d
    };
    let interval = interval_ok(
        "interval",
        t.interval.map_or(DEFAULT_PROBE_INTERVAL, Duration::from),
        diags,
    );
    let fast_interval = interval_ok(
        "fast_interval",
        t.fast_interval
            .map_or((interval / 4).max(MIN_INTERVAL), Duration::from),
        diags,
    );
    let down_interval = interval_ok(
        "down_interval",
        t.down_interval.map_or(interval, Duration::from),
        diags,
    );
    let timeout = t
        .timeout
        .map_or(DEFAULT_PROBE_TIMEOUT.min(interval), Duration::from);
    if timeout.is_zero() || timeout > interval {
        diags.error(
            src,
            &at.key("timeout"),
            format!(
                "timeout ({}) must be positive and at most interval ({})",
                Dur(timeout),
                Dur(interval)
            ),
        );
    }
    let jitter = t.jitter.unwrap_or(DEFAULT_JITTER);
    if !(0.0..=hastack_probe::MAX_JITTER).contains(&jitter) {
        diags.error(
            src,
            &at.key("jitter"),
            format!(
                "jitter ({jitter}) must be between 0 and {}",
                hastack_probe::MAX_JITTER
            ),
        );
    }
    let rise = t.rise.unwrap_or(DEFAULT_RISE);
    let fall = t.fall.unwrap_or(DEFAULT_FALL);
    for (key, n) in [("rise", rise), ("fall", fall)] {
        if n == 0 {
            diags.error(
                src,
                &at.key(key),
                format!(
                    "{key} must be at least 1 (consecutive probes that change a server's state)"
                ),
            );
        }
    }
    if diags.error_count() > before {
        return None;
    }
    Some(HealthSpec {
        schedule: Schedule {
            interval,
            fast_interval,
            down_interval,
            timeout,
            jitter,
        },
        rise,
        fall,
    })
}

fn validate_shards(
    src: &Source,
    at: &KeyPath,
    shards: &[ShardToml],
    diags: &mut Diagnostics,
) -> (Vec<ShardSpec>, Option<SlotMap>) {
    if shards.is_empty() {
        diags.error(
            src,
            &at.clone(),
            "no shards: add at least one [[cache.proxy.shards]] with a name and a master",
        );
        return (Vec::new(), None);
    }
    if shards.len() > 1024 {
        diags.error(src, at, "at most 1024 shards");
        return (Vec::new(), None);
    }
    let mut out = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addrs: HashMap<SocketAddr, String> = HashMap::new();
    for (i, s) in shards.iter().enumerate() {
        let here = at.index(i);
        if s.name.is_empty()
            || !s
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            diags.error(
                src,
                &here.key("name"),
                format!(
                    "shard name {:?} must be non-empty letters, digits, '-', '_' or '.'",
                    s.name
                ),
            );
        }
        if let Some(prev) = names.insert(&s.name, i) {
            diags.error(
                src,
                &here.key("name"),
                format!(
                    "shard name {:?} is used twice (shards {prev} and {i})",
                    s.name
                ),
            );
        }
        let mut seen = |a: SocketAddr, path: &KeyPath, diags: &mut Diagnostics| {
            let who = format!("shard {:?}", s.name);
            if let Some(prev) = addrs.insert(a, who.clone()) {
                diags.error(
                    src,
                    path,
                    format!("{a} is already a server of {prev}: a Redis server belongs to one shard, once"),
                );
            }
        };
        let master = addr(src, &here.key("master"), &s.master, "master", diags);
        if let Some(m) = master {
            seen(m, &here.key("master"), diags);
        }
        let mut replicas = Vec::new();
        for (j, r) in s.replicas.iter().enumerate() {
            let p = here.key("replicas").index(j);
            if let Some(a) = addr(src, &p, r, "replica", diags) {
                seen(a, &p, diags);
                replicas.push(a);
            }
        }
        if let Some(master) = master {
            out.push(ShardSpec {
                name: s.name.clone(),
                master,
                replicas,
            });
        }
    }
    let with_slots = shards.iter().filter(|s| s.slots.is_some()).count();
    let map = if with_slots == 0 {
        Some(SlotMap::even(shards.len()))
    } else if with_slots < shards.len() {
        let missing = shards
            .iter()
            .position(|s| s.slots.is_none())
            .unwrap_or_default();
        diags.error(
            src,
            &at.index(missing),
            "slots are given for some shards but not this one: give slots for every shard, or for none (an even split)",
        );
        None
    } else {
        explicit_slots(src, at, shards, diags)
    };
    (out, map)
}

fn explicit_slots(
    src: &Source,
    at: &KeyPath,
    shards: &[ShardToml],
    diags: &mut Diagnostics,
) -> Option<SlotMap> {
    let before = diags.error_count();
    let mut owner: Vec<Option<u16>> = vec![None; SLOTS];
    for (i, s) in shards.iter().enumerate() {
        let path = at.index(i).key("slots");
        let mut ranges = Vec::new();
        if let Some(t) = &s.slots {
            if let Err(msg) = parse_slots(t, &mut ranges) {
                diags.error(src, &path, msg);
                continue;
            }
        }
        for (a, b) in ranges {
            for (slot, o) in owner.iter_mut().enumerate().take(b + 1).skip(a) {
                match *o {
                    Some(prev) if usize::from(prev) != i => {
                        diags.error(
                            src,
                            &path,
                            format!(
                                "slot {slot} is given to shard {:?} and to shard {:?}: every slot has one owner",
                                shards[usize::from(prev)].name, s.name
                            ),
                        );
                        return None;
                    }
                    _ => *o = Some(i as u16),
                }
            }
        }
    }
    if diags.error_count() > before {
        return None;
    }
    let unowned: Vec<(u16, u16)> = {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (slot, o) in owner.iter().enumerate() {
            if o.is_none() {
                let slot = slot as u16;
                match out.last_mut() {
                    Some((_, e)) if *e + 1 == slot => *e = slot,
                    _ => out.push((slot, slot)),
                }
            }
        }
        out
    };
    if !unowned.is_empty() {
        diags.error(
            src,
            at,
            format!(
                "slots {} have no shard: the 16384 slots must all be given (or give no slots at all for an even split)",
                ranges_text(&unowned)
            ),
        );
        return None;
    }
    SlotMap::new(
        owner.into_iter().map(|o| o.unwrap_or(0)).collect(),
        shards.len(),
    )
}

fn parse_slots(t: &SlotsToml, out: &mut Vec<(usize, usize)>) -> Result<(), String> {
    let check = |n: i64| -> Result<usize, String> {
        usize::try_from(n)
            .ok()
            .filter(|&n| n < SLOTS)
            .ok_or_else(|| format!("slot {n} is out of range: slots are 0 to {}", SLOTS - 1))
    };
    match t {
        SlotsToml::One(n) => {
            let n = check(*n)?;
            out.push((n, n));
        }
        SlotsToml::List(items) => {
            for i in items {
                parse_slots(i, out)?;
            }
        }
        SlotsToml::Text(s) => {
            for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let num = |x: &str| {
                    x.trim().parse::<i64>().map_err(|_| {
                        format!("invalid slots {part:?}: write ranges like \"0-8191\" or single slots like \"100\", separated by commas")
                    })
                };
                let (a, b) = match part.split_once('-') {
                    Some((a, b)) => (check(num(a)?)?, check(num(b)?)?),
                    None => {
                        let n = check(num(part)?)?;
                        (n, n)
                    }
                };
                if a > b {
                    return Err(format!("slot range {part:?} is backwards: write low-high"));
                }
                out.push((a, b));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ProxySpec, String> {
        let src = Source::parse("test.toml", text.to_string()).map_err(|d| d.to_string())?;
        load_proxy(&src).map(|(p, _)| p).map_err(|d| d.to_string())
    }

    const BASE: &str = r#"
[cache.proxy]
listen = "127.0.0.1:7000"
[[cache.proxy.shards]]
name = "a"
master = "127.0.0.1:6379"
replicas = ["127.0.0.1:6380"]
[[cache.proxy.shards]]
name = "b"
master = "127.0.0.1:6381"
"#;

    #[test]
    fn defaults() {
        let p = parse(BASE).unwrap();
        assert_eq!(p.shards.len(), 2);
        assert_eq!(p.slots.ranges(0), vec![(0, 8191)]);
        assert_eq!(p.read_policy, ReadPolicy::Master);
        assert_eq!(p.timeout, DEFAULT_TIMEOUT);
        assert_eq!(p.health.fall, DEFAULT_FALL);
        assert_eq!(p.health.schedule.interval, DEFAULT_PROBE_INTERVAL);
        assert_eq!(p.limits.request.max_bulk_len, DEFAULT_MAX_BULK as usize);
        assert_eq!(p.limits.reply.max_frame_len, DEFAULT_MAX_REPLY as usize);
    }

    #[test]
    fn explicit_slots_must_cover_everything_once() {
        let ok = BASE.replace(
            "replicas = [\"127.0.0.1:6380\"]",
            "replicas = [\"127.0.0.1:6380\"]\nslots = \"0-99, 200-16383\"",
        ) + "slots = [\"100-199\"]\n";
        let p = parse(&ok).unwrap();
        assert_eq!(p.slots.ranges(1), vec![(100, 199)]);

        let overlap = BASE.replace(
            "replicas = [\"127.0.0.1:6380\"]",
            "replicas = [\"127.0.0.1:6380\"]\nslots = \"0-100\"",
        ) + "slots = \"100-16383\"\n";
        let e = parse(&overlap).unwrap_err();
        assert!(
            e.contains("slot 100 is given to shard \"a\" and to shard \"b\""),
            "{e}"
        );
        assert!(e.contains("test.toml:"), "{e}");

        let gap = BASE.replace(
            "replicas = [\"127.0.0.1:6380\"]",
            "replicas = [\"127.0.0.1:6380\"]\nslots = \"0-100\"",
        ) + "slots = \"200-16383\"\n";
        let e = parse(&gap).unwrap_err();
        assert!(e.contains("slots 101-199 have no shard"), "{e}");

        let some = BASE.replace(
            "replicas = [\"127.0.0.1:6380\"]",
            "replicas = [\"127.0.0.1:6380\"]\nslots = \"0-16383\"",
        );
        assert!(
            parse(&some)
                .unwrap_err()
                .contains("for every shard, or for none")
        );
        let bad = BASE.replace(
            "replicas = [\"127.0.0.1:6380\"]",
            "replicas = [\"127.0.0.1:6380\"]\nslots = \"0-16384\"",
        ) + "slots = 5\n";
        assert!(
            parse(&bad)
                .unwrap_err()
                .contains("slot 16384 is out of range")
        );
    }

    #[test]
    fn located_errors() {
        let cases = [
            (BASE.replace("127.0.0.1:6381", "localhost:6381"), "is not an IP address and port"),
            (BASE.replace("name = \"b\"", "name = \"a\""), "is used twice"),
            (BASE.replace("127.0.0.1:6381", "127.0.0.1:6380"), "already a server of shard \"a\""),
            (BASE.replace("listen = \"127.0.0.1:7000\"", "listen = \"127.0.0.1:7000\"\nread_policy = \"nearest\""), "unknown variant"),
            (BASE.replace("listen = \"127.0.0.1:7000\"", "listen = \"127.0.0.1:7000\"\n[cache.proxy.limits]\nproto_max_bulk_len = \"64MiB\""), "client_query_buffer_limit (33554432 bytes) must be at least proto_max_bulk_len"),
            (BASE.replace("listen = \"127.0.0.1:7000\"", "listen = \"127.0.0.1:7000\"\n[cache.proxy.health]\nfall = 0"), "fall must be at least 1"),
            (BASE.replace("listen = \"127.0.0.1:7000\"", "listen = \"127.0.0.1:7000\"\npubsub_shard = \"z\""), "pubsub_shard \"z\" names no shard"),
            (BASE.replace("listen = \"127.0.0.1:7000\"", "listen = \"127.0.0.1:7000\"\ntimeout = \"0s\""), "timeout (0s) must be positive"),
            ("[cache.proxy]\nlisten = \"127.0.0.1:7000\"\n".to_string(), "no shards"),
            (BASE.replace("listen =", "lisen = \"x\"\nlisten ="), "unknown field `lisen`"),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "want {want:?} in:\n{e}");
            assert!(e.contains("test.toml:"), "not located: {e}");
        }
    }
}
