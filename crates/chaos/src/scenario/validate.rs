//! Validation: the schema ([`super::schema`]) into a runtime [`Scenario`], one section at
//! a time, collecting every error with its file:line:column.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use hastack_config::KeyPath;

use super::ctx::Ctx;
use super::faults::{fault_of, random_schedule};
use super::schema::*;
use super::{FaultProxySpec, LoadOptions, Protocol, SECTION, Scenario};
use crate::events::EventSourceSpec;
use crate::fault::process::{ProcessSpec, Readiness};
use crate::fault::{FaultKind, ScheduledFault, TargetKind};
use crate::load::LoadPlan;
use crate::load::http::HttpRequestSpec;
use crate::load::tcp::{TcpDriver, TcpExpect};
use crate::netns::{CLIENT, MAX_HOSTS, NetnsTopology};
use crate::report::{RestoreRule, Slo};

/// Validate every section of `[chaos]` into a [`Scenario`] (`None` when a part that others
/// depend on is unusable; the errors are in `cx`).
pub(super) fn validate(cx: &mut Ctx<'_>, raw: RawChaos, opts: LoadOptions) -> Option<Scenario> {
    let root = KeyPath::root().key(SECTION);
    let duration = raw.duration.0;
    if duration.is_zero() || duration > Duration::from_secs(24 * 3600) {
        cx.err(
            &root.key("duration"),
            "duration must be between 1ms and 24h",
        );
    }
    let seed = opts.seed.unwrap_or(raw.seed);

    // Namespace topology first: placeholders such as {ip:lb1} need it.
    let netns = raw
        .netns
        .as_ref()
        .map(|n| netns_of(cx, &root.key("netns"), n));
    if let Some(t) = &netns {
        cx.vars.set_netns(t.clone());
    }
    let (load, protocol) = load_of(cx, &root.key("load"), &raw.load, duration);
    let slo = slo_of(cx, &root.key("slo"), raw.slo.as_ref());
    let (restore, settle) = report_rules_of(cx, &root.key("report"), raw.report.as_ref());
    weights_of(cx, &root.key("weights"), &raw.weights);

    // Names: processes and fault proxies share one namespace (they are fault targets).
    let mut names: BTreeMap<String, TargetKind> = BTreeMap::new();
    let processes = processes_of(cx, &root, &raw.process, &mut names, netns.as_ref());
    let proxies = fault_proxies_of(cx, &root, &raw.fault_proxy, &mut names, netns.as_ref());
    let files = files_of(cx, &root, &raw.file);
    let schedule = schedule_of(cx, &root, &raw, &names, netns.as_ref(), seed);
    let events = events_of(cx, &root, &raw.events, netns.as_ref());
    let control = match &raw.control {
        Some(c) => cx.addr(&root.key("control").key("listen"), &c.listen),
        None => None,
    };
    for (i, r) in raw.requires.iter().enumerate() {
        if r.trim().is_empty() {
            cx.err(&root.key("requires").index(i), "an empty requirement");
        }
    }

    let name = raw.name.clone().unwrap_or_else(|| {
        cx.src.path().and_then(|p| p.file_stem()).map_or_else(
            || "scenario".to_string(),
            |s| s.to_string_lossy().into_owned(),
        )
    });
    Some(Scenario {
        name,
        description: raw.description.clone().unwrap_or_default(),
        duration,
        seed,
        requires: raw.requires.clone(),
        load,
        protocol: protocol?,
        slo,
        restore,
        settle,
        processes,
        proxies,
        files,
        schedule,
        events,
        control,
        netns,
    })
}

/// `[chaos.load]`: the load plan and its protocol.
fn load_of(
    cx: &mut Ctx<'_>,
    lp: &KeyPath,
    l: &RawLoad,
    duration: Duration,
) -> (LoadPlan, Option<Protocol>) {
    if !(l.rate.is_finite() && l.rate > 0.0 && l.rate <= 1_000_000.0) {
        cx.err(
            &lp.key("rate"),
            "rate must be a number of requests per second in (0, 1000000]",
        );
    }
    if l.targets.is_empty() {
        cx.err(
            &lp.key("targets"),
            "targets must list at least one entry address (IP:port); several mean client-side failover in that order",
        );
    }
    let mut targets = Vec::new();
    for (i, t) in l.targets.iter().enumerate() {
        if let Some(a) = cx.addr(&lp.key("targets").index(i), t) {
            targets.push(a);
        }
    }
    if l.max_in_flight == 0 {
        cx.err(&lp.key("max_in_flight"), "max_in_flight must be at least 1");
    }
    if l.timeout.0.is_zero() {
        cx.err(&lp.key("timeout"), "timeout must be more than 0");
    }
    let protocol = match l.protocol.as_str() {
        "http" => {
            if l.send.is_some() || l.expect_prefix.is_some() {
                cx.err(
                    &lp.key("send"),
                    "`send` and `expect_prefix` are for protocol = \"tcp\"",
                );
            }
            let method = http::Method::from_bytes(l.method.as_bytes()).ok();
            if method.is_none() {
                cx.err(
                    &lp.key("method"),
                    format!("{:?} is not an HTTP method", l.method),
                );
            }
            if !l.path.starts_with('/') {
                cx.err(
                    &lp.key("path"),
                    "path must start with `/`, e.g. \"/\" or \"/api?x=1\"",
                );
            }
            Some(Protocol::Http(HttpRequestSpec {
                method: method.unwrap_or(http::Method::GET),
                path: l.path.clone(),
                host: l.host.clone(),
                connect_timeout: l.connect_timeout.0,
            }))
        }
        "tcp" => {
            let send = l.send.clone().unwrap_or_default();
            if send.is_empty() {
                cx.err(
                    &lp.key("protocol"),
                    "protocol = \"tcp\" needs `send` (the bytes of one request, e.g. \"PING\\n\")",
                );
            }
            Some(Protocol::Tcp(TcpDriver {
                send: Bytes::from(send),
                expect: l
                    .expect_prefix
                    .clone()
                    .map_or(TcpExpect::Echo, |p| TcpExpect::LinePrefix(Bytes::from(p))),
                connect_timeout: l.connect_timeout.0,
            }))
        }
        other => {
            cx.err(
                &lp.key("protocol"),
                format!("unknown protocol {other:?}; allowed: \"http\", \"tcp\""),
            );
            None
        }
    };
    let plan = LoadPlan {
        rate: l.rate,
        duration,
        targets,
        timeout: l.timeout.0,
        max_in_flight: l.max_in_flight,
    };
    (plan, protocol)
}

/// `[chaos.slo]`.
fn slo_of(cx: &mut Ctx<'_>, sp: &KeyPath, raw: Option<&RawSlo>) -> Slo {
    let (availability, latency) = raw.map_or((d_availability(), d_latency()), |s| {
        (s.availability, s.latency)
    });
    if !(availability > 0.0 && availability < 100.0) {
        cx.err(
            &sp.key("availability"),
            "availability is a percentage strictly between 0 and 100, e.g. 99.9",
        );
    }
    if raw.is_some_and(|s| s.incidents_per_year.is_some()) {
        cx.warn(
            &sp.key("incidents_per_year"),
            "`incidents_per_year` is ignored: the report no longer projects a year of availability from a few injected faults (a handful of incidents supports no such figure); it reports lost request-seconds per incident instead",
        );
    }
    Slo {
        availability: availability / 100.0,
        latency: latency.0,
    }
}

/// `[chaos.report]`: the recovery rule and the attribution tail.
fn report_rules_of(
    cx: &mut Ctx<'_>,
    rp: &KeyPath,
    raw: Option<&RawReport>,
) -> (RestoreRule, Duration) {
    let (window, ratio, settle) = raw
        .map_or((d_restore_window(), d_restore_ratio(), d_settle()), |r| {
            (r.restore_window, r.restore_ratio, r.settle)
        });
    if !(ratio > 0.0 && ratio <= 1.0) {
        cx.err(
            &rp.key("restore_ratio"),
            "restore_ratio must be in (0, 1], e.g. 0.99",
        );
    }
    if window.0 < Duration::from_millis(10) {
        cx.err(
            &rp.key("restore_window"),
            "restore_window must be at least 10ms",
        );
    }
    if settle.0 > Duration::from_secs(3600) {
        cx.err(&rp.key("settle"), "settle must be at most 1h");
    }
    (
        RestoreRule {
            window: window.0,
            ratio,
        },
        settle.0,
    )
}

/// `[chaos.weights]`: every key a fault kind, every weight 0 or more.
fn weights_of(cx: &mut Ctx<'_>, wp: &KeyPath, weights: &BTreeMap<String, f64>) {
    for (k, w) in weights {
        if FaultKind::from_name(k).is_none() {
            cx.err(
                &wp.key(k),
                format!(
                    "unknown fault kind `{k}`; known: {}",
                    FaultKind::list(FaultKind::ALL)
                ),
            );
        }
        if !(w.is_finite() && *w >= 0.0) {
            cx.err(&wp.key(k), "a weight must be 0 or more");
        }
    }
}

/// `[[chaos.process]]`.
fn processes_of(
    cx: &mut Ctx<'_>,
    root: &KeyPath,
    raw: &[RawProcess],
    names: &mut BTreeMap<String, TargetKind>,
    netns: Option<&NetnsTopology>,
) -> Vec<ProcessSpec> {
    let mut processes = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let pp = root.key("process").index(i);
        check_name(cx, names, &pp.key("name"), &p.name, TargetKind::Process);
        let program = if p.command == "hastack" {
            cx.vars.hastack_exe.clone()
        } else {
            PathBuf::from(
                cx.expand(&pp.key("command"), &p.command)
                    .unwrap_or_default(),
            )
        };
        let mut args = Vec::new();
        for (j, a) in p.args.iter().enumerate() {
            args.push(cx.expand(&pp.key("args").index(j), a).unwrap_or_default());
        }
        let mut env = Vec::new();
        for (k, v) in &p.env {
            env.push((
                k.clone(),
                cx.expand(&pp.key("env").key(k), v).unwrap_or_default(),
            ));
        }
        let ready = match &p.ready {
            None => Readiness::Started,
            Some(RawReady {
                tcp: Some(t),
                http: None,
            }) => cx
                .addr(&pp.key("ready").key("tcp"), t)
                .map_or(Readiness::Started, Readiness::Tcp),
            Some(RawReady {
                tcp: None,
                http: Some(u),
            }) => {
                let url = cx
                    .expand(&pp.key("ready").key("http"), u)
                    .unwrap_or_default();
                if !url.starts_with("http://") {
                    cx.err(
                        &pp.key("ready").key("http"),
                        "the readiness URL must start with http://",
                    );
                }
                Readiness::Http(url)
            }
            Some(_) => {
                cx.err(
                    &pp.key("ready"),
                    "ready takes exactly one of `tcp = \"IP:port\"` or `http = \"http://...\"`",
                );
                Readiness::Started
            }
        };
        let host = host_of(cx, netns, &pp, p.host.as_deref(), "process", true);
        processes.push(ProcessSpec {
            name: p.name.clone(),
            program,
            args,
            env,
            ready,
            ready_timeout: p.ready_timeout.0,
            stop_grace: p.stop_grace.0,
            host,
        });
    }
    processes
}

/// `[[chaos.fault_proxy]]`.
fn fault_proxies_of(
    cx: &mut Ctx<'_>,
    root: &KeyPath,
    raw: &[RawFaultProxy],
    names: &mut BTreeMap<String, TargetKind>,
    netns: Option<&NetnsTopology>,
) -> Vec<FaultProxySpec> {
    let mut proxies = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let pp = root.key("fault_proxy").index(i);
        check_name(cx, names, &pp.key("name"), &p.name, TargetKind::FaultProxy);
        let host = host_of(cx, netns, &pp, p.host.as_deref(), "fault proxy", true);
        let listen = cx.addr(&pp.key("listen"), &p.listen);
        let upstream = cx.addr(&pp.key("upstream"), &p.upstream);
        if let (Some(listen), Some(upstream)) = (listen, upstream) {
            if listen == upstream {
                cx.err(&pp.key("upstream"), "upstream must differ from listen");
            }
            proxies.push(FaultProxySpec {
                name: p.name.clone(),
                listen,
                upstream,
                connect_timeout: p.connect_timeout.0,
                mirror_refusal: p.mirror_refusal,
                host,
            });
        }
    }
    proxies
}

/// `[[chaos.file]]`.
fn files_of(cx: &mut Ctx<'_>, root: &KeyPath, raw: &[RawFile]) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for (i, f) in raw.iter().enumerate() {
        let fp = root.key("file").index(i);
        let rel = Path::new(&f.path);
        if f.path.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            cx.err(
                &fp.key("path"),
                "path must be relative to the run directory, without `..` (e.g. \"haproxy.cfg\")",
            );
            continue;
        }
        if let Some(content) = cx.expand(&fp.key("content"), &f.content) {
            files.push((rel.to_path_buf(), content));
        }
    }
    files
}

/// `[[chaos.timeline]]` and `[chaos.random]`, merged and sorted by time, numbered in order.
fn schedule_of(
    cx: &mut Ctx<'_>,
    root: &KeyPath,
    raw: &RawChaos,
    names: &BTreeMap<String, TargetKind>,
    netns: Option<&NetnsTopology>,
    seed: u64,
) -> Vec<ScheduledFault> {
    let duration = raw.duration.0;
    let mut schedule = Vec::new();
    for (i, f) in raw.timeline.iter().enumerate() {
        let fp = root.key("timeline").index(i);
        if f.chance.is_some() {
            cx.err(
                &fp.key("chance"),
                "`chance` is for [[chaos.random.choices]], not the timeline",
            );
        }
        let Some(at) = f.at else {
            cx.err(
                &fp,
                "a timeline entry needs `at` (offset from the start of the load, e.g. \"10s\")",
            );
            continue;
        };
        if at.0 >= duration {
            cx.err(
                &fp.key("at"),
                format!(
                    "at ({at}) must be before the end of the run ({})",
                    raw.duration
                ),
            );
        }
        if let Some(s) = fault_of(cx, &fp, f, names, netns, &raw.weights) {
            schedule.push(ScheduledFault { at: at.0, ..s });
        }
    }
    if let Some(r) = &raw.random {
        let rp = root.key("random");
        let start = r.start.map_or(duration / 10, |d| d.0);
        let end = r.end.map_or(duration * 8 / 10, |d| d.0);
        if start >= end || end > duration {
            cx.err(&rp, "random faults need start < end <= duration (defaults: 10% and 80% of the duration)");
        }
        if r.choices.is_empty() {
            cx.err(
                &rp.key("choices"),
                "random needs at least one [[chaos.random.choices]] entry",
            );
        }
        let mut choices = Vec::new();
        for (i, c) in r.choices.iter().enumerate() {
            let cp = rp.key("choices").index(i);
            if c.at.is_some() {
                cx.err(
                    &cp.key("at"),
                    "random choices take no `at`: their times are drawn from the seed",
                );
            }
            let chance = c.chance.unwrap_or(1.0);
            if !(chance.is_finite() && chance > 0.0) {
                cx.err(
                    &cp.key("chance"),
                    "chance is a relative weight, more than 0",
                );
            }
            if let Some(s) = fault_of(cx, &cp, c, names, netns, &raw.weights) {
                choices.push((chance, s));
            }
        }
        if !choices.is_empty() && start < end {
            schedule.extend(random_schedule(seed, r.count, start, end, &choices));
        }
    }
    schedule.sort_by_key(|s| s.at);
    for (i, s) in schedule.iter_mut().enumerate() {
        s.id = i;
    }
    schedule
}

/// `[[chaos.events]]`.
fn events_of(
    cx: &mut Ctx<'_>,
    root: &KeyPath,
    raw: &[RawEvents],
    netns: Option<&NetnsTopology>,
) -> Vec<EventSourceSpec> {
    let mut events = Vec::new();
    for (i, e) in raw.iter().enumerate() {
        let ep = root.key("events").index(i);
        let url = cx.expand(&ep.key("url"), &e.url).unwrap_or_default();
        if !url.starts_with("http://") {
            cx.err(&ep.key("url"), "url must start with http://");
        }
        if e.interval.0 < Duration::from_millis(10) {
            cx.err(&ep.key("interval"), "interval must be at least 10ms");
        }
        let source = e.source.clone().unwrap_or_else(|| e.kind.clone());
        let host = host_of(cx, netns, &ep, e.host.as_deref(), "event source", false);
        match e.kind.as_str() {
            "haproxy" => events.push(EventSourceSpec::Haproxy {
                source,
                url,
                interval: e.interval.0,
                host,
            }),
            "json" => {
                let Some(members) = e.members.clone() else {
                    cx.err(&ep, "type = \"json\" needs `members`: a JSON pointer to the array of members, e.g. \"/pools/app/members\"");
                    continue;
                };
                if !members.starts_with('/') {
                    cx.err(&ep.key("members"), "members is a JSON pointer and starts with `/`");
                }
                events.push(EventSourceSpec::Json {
                    source,
                    url,
                    interval: e.interval.0,
                    members,
                    name_field: e.name_field.clone(),
                    state_field: e.state_field.clone(),
                    down_states: e.down_states.clone(),
                    host,
                });
            }
            other => cx.err(
                &ep.key("type"),
                format!("unknown event source type {other:?}; allowed: \"haproxy\", \"json\" (push events need no entry: POST them to the control API)"),
            ),
        }
    }
    events
}

/// Validate `[chaos.netns]`.
fn netns_of(cx: &mut Ctx<'_>, path: &KeyPath, n: &RawNetns) -> NetnsTopology {
    let mut topo = NetnsTopology::default();
    if let Some(sub) = &n.subnet {
        match parse_subnet(sub) {
            Some(s) => topo.subnet = s,
            None => cx.err(
                &path.key("subnet"),
                format!("{sub:?} is not a /24 written as \"a.b.c.0/24\", e.g. \"10.99.0.0/24\""),
            ),
        }
    }
    if n.hosts.is_empty() || n.hosts.len() > MAX_HOSTS {
        cx.err(
            &path.key("hosts"),
            format!("hosts must name 1 to {MAX_HOSTS} hosts, e.g. [\"lb1\", \"lb2\", \"web1\"]"),
        );
    }
    for (i, h) in n.hosts.iter().enumerate() {
        let hp = path.key("hosts").index(i);
        if h.is_empty()
            || h.len() > 32
            || !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            cx.err(
                &hp,
                "a host name is 1 to 32 letters, digits, `-`, `_` or `.`",
            );
        }
        if h == CLIENT {
            cx.err(
                &hp,
                "`client` is the load generator's namespace and always exists; do not list it",
            );
        } else if topo.hosts.contains(h) {
            cx.err(&hp, format!("the host `{h}` is listed twice"));
        } else {
            topo.hosts.push(h.clone());
        }
    }
    topo
}

/// `"a.b.c.0/24"` -> `[a, b, c]`.
fn parse_subnet(s: &str) -> Option<[u8; 3]> {
    let (addr, len) = s.split_once('/')?;
    if len != "24" {
        return None;
    }
    let ip: std::net::Ipv4Addr = addr.parse().ok()?;
    let [a, b, c, d] = ip.octets();
    (d == 0).then_some([a, b, c])
}

/// Validate a `host` key: required (when `required`) with a topology, refused without one.
fn host_of(
    cx: &mut Ctx<'_>,
    netns: Option<&NetnsTopology>,
    path: &KeyPath,
    host: Option<&str>,
    what: &str,
    required: bool,
) -> Option<String> {
    match (netns, host) {
        (None, None) => None,
        (None, Some(_)) => {
            cx.err(
                &path.key("host"),
                format!(
                    "`host` places {} {what} in a network namespace: it needs a [chaos.netns] topology with that host",
                    if what.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
                ),
            );
            None
        }
        (Some(t), None) => {
            if required {
                cx.err(
                    path,
                    format!(
                        "in a namespace scenario every {what} runs on a host: add `host = \"...\"` (hosts: {})",
                        t.names()
                    ),
                );
            }
            None
        }
        (Some(t), Some(h)) => {
            if !t.knows(h) {
                cx.err(
                    &path.key("host"),
                    format!("no host `{h}` in [chaos.netns]; hosts: {}", t.names()),
                );
            }
            Some(h.to_string())
        }
    }
}

fn check_name(
    cx: &mut Ctx<'_>,
    names: &mut BTreeMap<String, TargetKind>,
    path: &KeyPath,
    name: &str,
    what: TargetKind,
) {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        cx.err(
            path,
            "a name is letters, digits, `-`, `_` or `.`, not empty",
        );
    }
    if let Some(prev) = names.insert(name.to_string(), what) {
        cx.err(
            path,
            format!(
                "the name `{name}` is already used by a {}; process and fault proxy names must be unique",
                prev.name()
            ),
        );
    }
}
