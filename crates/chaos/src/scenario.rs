//! Scenario files: the `[chaos]` section of a hastack config file.
//!
//! A scenario is an ordinary hastack config file, so `hastack check` validates it and a
//! component started by the scenario can read its own section (`[proxy]`, ...) from the
//! same file (`{scenario}` expands to its path). The full key reference is in
//! `docs/chaos.md`; the serde types below are the schema, and [`load`] validates them into
//! a runtime [`Scenario`], collecting every error with its file:line:column.
//!
//! Strings in addresses, arguments, environment values, URLs, fault subjects and file
//! contents may use
//! placeholders: `{port:NAME}` (a free loopback port picked for this run, the same number
//! for every use of NAME), `{dir}` (the run's directory), `{scenario}` (the scenario
//! file's path), `{{` / `}}` for literal braces; with a `[chaos.netns]` topology also
//! `{ip:HOST}` (a host's address, `{ip:client}` the client's) and `{net:N}` (address `.N` of
//! the topology's /24, e.g. a virtual IP).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use hastack_config::{ByteSize, Diagnostics, Dur, KeyPath, Source};
use serde::Deserialize;

use crate::events::EventSourceSpec;
use crate::fault::process::{ProcessSpec, Readiness};
use crate::fault::{Direction, FaultAction, NetFault, ProcessFault, ProxyFault, ScheduledFault};
use crate::load::LoadPlan;
use crate::load::http::HttpRequestSpec;
use crate::load::tcp::{TcpDriver, TcpExpect};
use crate::netns::{CLIENT, MAX_HOSTS, NetnsTopology};
use crate::report::{RestoreRule, Slo};

/// The section a scenario lives in.
pub const SECTION: &str = "chaos";

/// Every fault kind a scenario may name.
pub const FAULT_KINDS: &[&str] = &[
    "kill",
    "term",
    "pause",
    "restart",
    "latency",
    "bandwidth",
    "reset",
    "blackhole",
    "drop",
    "partition",
    "link_down",
];

fn d_seed() -> u64 {
    1
}
fn d_protocol() -> String {
    "http".into()
}
fn d_method() -> String {
    "GET".into()
}
fn d_path() -> String {
    "/".into()
}
fn d_timeout() -> Dur {
    Dur::secs(2)
}
fn d_connect_timeout() -> Dur {
    Dur::secs(1)
}
fn d_max_in_flight() -> usize {
    10_000
}
fn d_availability() -> f64 {
    99.9
}
fn d_latency() -> Dur {
    Dur::secs(1)
}
fn d_incidents() -> f64 {
    12.0
}
fn d_restore_window() -> Dur {
    Dur::secs(1)
}
fn d_restore_ratio() -> f64 {
    0.99
}
fn d_ready_timeout() -> Dur {
    Dur::secs(10)
}
fn d_stop_grace() -> Dur {
    Dur::secs(2)
}
fn d_interval() -> Dur {
    Dur::ms(100)
}
fn d_name_field() -> String {
    "name".into()
}
fn d_state_field() -> String {
    "state".into()
}
fn d_down_states() -> Vec<String> {
    vec!["down".into()]
}

/// `[chaos]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChaos {
    name: Option<String>,
    description: Option<String>,
    duration: Dur,
    #[serde(default = "d_seed")]
    seed: u64,
    #[serde(default)]
    requires: Vec<String>,
    load: RawLoad,
    #[serde(default)]
    slo: Option<RawSlo>,
    #[serde(default)]
    report: Option<RawReport>,
    #[serde(default)]
    weights: BTreeMap<String, f64>,
    #[serde(default)]
    process: Vec<RawProcess>,
    #[serde(default)]
    fault_proxy: Vec<RawFaultProxy>,
    #[serde(default)]
    file: Vec<RawFile>,
    #[serde(default)]
    timeline: Vec<RawFault>,
    random: Option<RawRandom>,
    #[serde(default)]
    events: Vec<RawEvents>,
    control: Option<RawControl>,
    netns: Option<RawNetns>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetns {
    hosts: Vec<String>,
    subnet: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    #[serde(default = "d_protocol")]
    protocol: String,
    targets: Vec<String>,
    rate: f64,
    #[serde(default = "d_method")]
    method: String,
    #[serde(default = "d_path")]
    path: String,
    host: Option<String>,
    #[serde(default = "d_timeout")]
    timeout: Dur,
    #[serde(default = "d_connect_timeout")]
    connect_timeout: Dur,
    #[serde(default = "d_max_in_flight")]
    max_in_flight: usize,
    send: Option<String>,
    expect_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlo {
    #[serde(default = "d_availability")]
    availability: f64,
    #[serde(default = "d_latency")]
    latency: Dur,
    #[serde(default = "d_incidents")]
    incidents_per_year: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    #[serde(default = "d_restore_window")]
    restore_window: Dur,
    #[serde(default = "d_restore_ratio")]
    restore_ratio: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReady {
    tcp: Option<String>,
    http: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    name: String,
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    ready: Option<RawReady>,
    #[serde(default = "d_ready_timeout")]
    ready_timeout: Dur,
    #[serde(default = "d_stop_grace")]
    stop_grace: Dur,
    host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFaultProxy {
    name: String,
    listen: String,
    upstream: String,
    #[serde(default = "d_connect_timeout")]
    connect_timeout: Dur,
    #[serde(default = "d_true")]
    mirror_refusal: bool,
    host: Option<String>,
}

fn d_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    content: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at: Option<Dur>,
    target: String,
    fault: String,
    duration: Option<Dur>,
    delay: Option<Dur>,
    jitter: Option<Dur>,
    direction: Option<Direction>,
    rate: Option<ByteSize>,
    fraction: Option<f64>,
    peer: Option<String>,
    one_way: Option<bool>,
    weight: Option<f64>,
    subject: Option<String>,
    chance: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRandom {
    count: u32,
    start: Option<Dur>,
    end: Option<Dur>,
    choices: Vec<RawFault>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    #[serde(rename = "type")]
    kind: String,
    url: String,
    #[serde(default = "d_interval")]
    interval: Dur,
    source: Option<String>,
    members: Option<String>,
    #[serde(default = "d_name_field")]
    name_field: String,
    #[serde(default = "d_state_field")]
    state_field: String,
    #[serde(default = "d_down_states")]
    down_states: Vec<String>,
    host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    listen: String,
}

/// The load protocol and its request.
#[derive(Debug, Clone)]
pub enum Protocol {
    /// HTTP/1.1 requests.
    Http(HttpRequestSpec),
    /// TCP request/answer exchanges.
    Tcp(TcpDriver),
}

/// A fault proxy to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultProxySpec {
    /// Name (fault target).
    pub name: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// Upstream.
    pub upstream: SocketAddr,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Refuse connections while the upstream refuses them (see
    /// [`crate::fault::proxy::FaultProxyConfig::mirror_refusal`]).
    pub mirror_refusal: bool,
    /// Namespace mode: the host it runs on (it listens and connects from there).
    pub host: Option<String>,
}

/// A validated, resolved scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name.
    pub name: String,
    /// What it runs.
    pub description: String,
    /// Load duration.
    pub duration: Duration,
    /// Seed of the random schedule and the fault proxies' randomness.
    pub seed: u64,
    /// Programs (`haproxy`) or hastack subcommands (`hastack proxy`) it needs.
    pub requires: Vec<String>,
    /// The load.
    pub load: LoadPlan,
    /// Its protocol.
    pub protocol: Protocol,
    /// The SLO.
    pub slo: Slo,
    /// Restoration rule.
    pub restore: RestoreRule,
    /// Processes, started in order.
    pub processes: Vec<ProcessSpec>,
    /// Fault proxies, started before the processes.
    pub proxies: Vec<FaultProxySpec>,
    /// Files written into the run directory before anything starts.
    pub files: Vec<(PathBuf, String)>,
    /// The fault schedule, sorted by time.
    pub schedule: Vec<ScheduledFault>,
    /// Event sources polled during the run.
    pub events: Vec<EventSourceSpec>,
    /// Control API address.
    pub control: Option<SocketAddr>,
    /// Namespace mode (root): the hosts, each a network namespace; the load runs from the
    /// client namespace.
    pub netns: Option<NetnsTopology>,
}

/// Placeholder values for one run.
#[derive(Debug, Clone)]
pub struct Vars {
    /// The run's directory (`{dir}`).
    pub dir: PathBuf,
    /// The scenario file (`{scenario}`).
    pub scenario: PathBuf,
    /// The hastack binary (`command = "hastack"`).
    pub hastack_exe: PathBuf,
    ports: BTreeMap<String, u16>,
    netns: Option<NetnsTopology>,
}

impl Vars {
    /// Placeholder values for a run in `dir`.
    pub fn new(dir: PathBuf, scenario: PathBuf, hastack_exe: PathBuf) -> Self {
        Vars {
            dir,
            scenario,
            hastack_exe,
            ports: BTreeMap::new(),
            netns: None,
        }
    }

    /// Declare the namespace topology (enables `{ip:HOST}` and `{net:N}`).
    pub fn set_netns(&mut self, topo: NetnsTopology) {
        self.netns = Some(topo);
    }

    /// The namespace topology, if declared.
    pub fn netns(&self) -> Option<&NetnsTopology> {
        self.netns.as_ref()
    }

    /// The address of a host of the topology (`{ip:HOST}`).
    pub fn ip(&self, host: &str) -> Result<std::net::Ipv4Addr, String> {
        let t = self.netns.as_ref().ok_or_else(|| {
            format!("{{ip:{host}}} needs a [chaos.netns] topology (namespace mode)")
        })?;
        t.ip(host)
            .ok_or_else(|| format!("{{ip:{host}}}: no host `{host}`; hosts: {}", t.names()))
    }

    /// The port picked for `name` (picked now if new): bound on 127.0.0.1:0 and released,
    /// never the same as another name's.
    pub fn port(&mut self, name: &str) -> Result<u16, String> {
        if let Some(p) = self.ports.get(name) {
            return Ok(*p);
        }
        let used: BTreeSet<u16> = self.ports.values().copied().collect();
        for _ in 0..50 {
            let l = TcpListener::bind(("127.0.0.1", 0))
                .map_err(|e| format!("cannot pick a free port for {{port:{name}}}: {e}"))?;
            let p = l.local_addr().map_err(|e| e.to_string())?.port();
            if !used.contains(&p) {
                self.ports.insert(name.to_string(), p);
                return Ok(p);
            }
        }
        Err(format!(
            "cannot pick a distinct free port for {{port:{name}}}"
        ))
    }

    /// Expand placeholders in `s`.
    pub fn expand(&mut self, s: &str) -> Result<String, String> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find(['{', '}']) {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(t) = tail.strip_prefix("{{") {
                out.push('{');
                rest = t;
            } else if let Some(t) = tail.strip_prefix("}}") {
                out.push('}');
                rest = t;
            } else if tail.starts_with('}') {
                return Err(format!(
                    "unmatched `}}` in {s:?} (write `}}}}` for a literal brace)"
                ));
            } else {
                let end = tail.find('}').ok_or_else(|| {
                    format!("unclosed `{{` in {s:?} (write `{{{{` for a literal brace)")
                })?;
                let name = &tail[1..end];
                match name.split_once(':') {
                    Some(("port", n)) if !n.is_empty() => out.push_str(&self.port(n)?.to_string()),
                    Some(("ip", h)) if !h.is_empty() => out.push_str(&self.ip(h)?.to_string()),
                    Some(("net", n)) => {
                        let t = self.netns.as_ref().ok_or_else(|| {
                            format!("{{net:{n}}} needs a [chaos.netns] topology (namespace mode)")
                        })?;
                        let last: u8 = n
                            .parse()
                            .ok()
                            .filter(|x| (1..=254).contains(x))
                            .ok_or_else(|| {
                                format!("{{net:{n}}}: N is the last octet of an address, 1..=254")
                            })?;
                        out.push_str(&t.addr(last).to_string());
                    }
                    None if name == "dir" => out.push_str(&self.dir.display().to_string()),
                    None if name == "scenario" => {
                        out.push_str(&self.scenario.display().to_string());
                    }
                    _ => {
                        return Err(format!(
                            "unknown placeholder {{{name}}} in {s:?}; known: {{port:NAME}}, {{dir}}, {{scenario}}, {{ip:HOST}}, {{net:N}}"
                        ));
                    }
                }
                rest = &tail[end + 1..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The ports picked so far, by name.
    pub fn ports(&self) -> &BTreeMap<String, u16> {
        &self.ports
    }
}

/// Overrides from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Replace the seed.
    pub seed: Option<u64>,
}

struct Ctx<'a> {
    src: &'a Source,
    diags: Diagnostics,
    vars: &'a mut Vars,
}

impl Ctx<'_> {
    fn err(&mut self, path: &KeyPath, msg: impl Into<String>) {
        self.diags.error(self.src, path, msg);
    }

    fn expand(&mut self, path: &KeyPath, s: &str) -> Option<String> {
        match self.vars.expand(s) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    fn addr(&mut self, path: &KeyPath, s: &str) -> Option<SocketAddr> {
        let v = self.expand(path, s)?;
        match v.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    path,
                    format!("{v:?} is not an IP:port address, e.g. \"127.0.0.1:8080\""),
                );
                None
            }
        }
    }
}

/// Load and validate the `[chaos]` section of `src`; warnings come back with the scenario.
pub fn load(
    src: &Source,
    vars: &mut Vars,
    opts: LoadOptions,
) -> Result<(Scenario, Diagnostics), Diagnostics> {
    let raw: RawChaos = match src.section(SECTION)? {
        Some(r) => r,
        None => {
            let mut d = Diagnostics::new();
            d.error(
                src,
                &KeyPath::root(),
                "no [chaos] section: a scenario needs at least [chaos] with `duration` and [chaos.load]",
            );
            return Err(d);
        }
    };
    let mut cx = Ctx {
        src,
        diags: Diagnostics::new(),
        vars,
    };
    let scenario = validate(&mut cx, raw, opts);
    let diags = cx.diags;
    match scenario {
        Some(s) if !diags.has_errors() => Ok((s, diags)),
        _ => {
            let mut d = diags;
            d.sort();
            Err(d)
        }
    }
}

/// Validate `src` for `hastack check` (ports are picked but not used): a one-line summary.
pub fn check(src: &Source) -> Result<(String, Diagnostics), Diagnostics> {
    let mut vars = Vars::new(
        PathBuf::from("<run dir>"),
        src.path()
            .map_or_else(|| PathBuf::from(src.name()), Path::to_path_buf),
        PathBuf::from("hastack"),
    );
    let (s, w) = load(src, &mut vars, LoadOptions::default())?;
    let hosts = s.netns.as_ref().map_or(String::new(), |t| {
        format!(
            " in network namespaces ({} host(s) + client, root)",
            t.hosts.len()
        )
    });
    Ok((
        format!(
            "chaos: scenario `{}`{hosts}: {} process(es), {} fault proxy(ies), {} fault(s) over {}, {} req/s, SLO {}%",
            s.name,
            s.processes.len(),
            s.proxies.len(),
            s.schedule.len(),
            humantime::format_duration(s.duration),
            s.load.rate,
            s.slo.availability * 100.0
        ),
        w,
    ))
}

#[allow(
    clippy::too_many_lines,
    reason = "one pass over the schema, key by key"
)]
fn validate(cx: &mut Ctx<'_>, raw: RawChaos, opts: LoadOptions) -> Option<Scenario> {
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

    // Load.
    let lp = root.key("load");
    let l = &raw.load;
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
    let load = LoadPlan {
        rate: l.rate,
        duration,
        targets,
        timeout: l.timeout.0,
        max_in_flight: l.max_in_flight,
    };

    // SLO and report.
    let sp = root.key("slo");
    let slo_raw = raw.slo.unwrap_or(RawSlo {
        availability: d_availability(),
        latency: d_latency(),
        incidents_per_year: d_incidents(),
    });
    if !(slo_raw.availability > 0.0 && slo_raw.availability < 100.0) {
        cx.err(
            &sp.key("availability"),
            "availability is a percentage strictly between 0 and 100, e.g. 99.9",
        );
    }
    if !(slo_raw.incidents_per_year >= 0.0 && slo_raw.incidents_per_year.is_finite()) {
        cx.err(
            &sp.key("incidents_per_year"),
            "incidents_per_year must be 0 or more",
        );
    }
    let slo = Slo {
        availability: slo_raw.availability / 100.0,
        latency: slo_raw.latency.0,
        incidents_per_year: slo_raw.incidents_per_year,
    };
    let rp = root.key("report");
    let rep = raw.report.unwrap_or(RawReport {
        restore_window: d_restore_window(),
        restore_ratio: d_restore_ratio(),
    });
    if !(rep.restore_ratio > 0.0 && rep.restore_ratio <= 1.0) {
        cx.err(
            &rp.key("restore_ratio"),
            "restore_ratio must be in (0, 1], e.g. 0.99",
        );
    }
    if rep.restore_window.0 < Duration::from_millis(10) {
        cx.err(
            &rp.key("restore_window"),
            "restore_window must be at least 10ms",
        );
    }
    let restore = RestoreRule {
        window: rep.restore_window.0,
        ratio: rep.restore_ratio,
    };

    // Weights.
    for (k, w) in &raw.weights {
        if !FAULT_KINDS.contains(&k.as_str()) {
            cx.err(
                &root.key("weights").key(k),
                format!(
                    "unknown fault kind `{k}`; known: {}",
                    FAULT_KINDS.join(", ")
                ),
            );
        }
        if !(w.is_finite() && *w >= 0.0) {
            cx.err(&root.key("weights").key(k), "a weight must be 0 or more");
        }
    }

    // Names: processes and fault proxies share one namespace (they are fault targets).
    let mut names: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut processes = Vec::new();
    for (i, p) in raw.process.iter().enumerate() {
        let pp = root.key("process").index(i);
        check_name(cx, &mut names, &pp.key("name"), &p.name, "process");
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
        let host = host_of(cx, netns.as_ref(), &pp, p.host.as_deref(), "process", true);
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
    let mut proxies = Vec::new();
    for (i, p) in raw.fault_proxy.iter().enumerate() {
        let pp = root.key("fault_proxy").index(i);
        check_name(cx, &mut names, &pp.key("name"), &p.name, "fault proxy");
        let host = host_of(
            cx,
            netns.as_ref(),
            &pp,
            p.host.as_deref(),
            "fault proxy",
            true,
        );
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

    // Files.
    let mut files = Vec::new();
    for (i, f) in raw.file.iter().enumerate() {
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

    // Faults.
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
        if let Some(s) = fault_of(cx, &fp, f, &names, netns.as_ref(), &raw.weights) {
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
            if let Some(s) = fault_of(cx, &cp, c, &names, netns.as_ref(), &raw.weights) {
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

    // Event sources.
    let mut events = Vec::new();
    for (i, e) in raw.events.iter().enumerate() {
        let ep = root.key("events").index(i);
        let url = cx.expand(&ep.key("url"), &e.url).unwrap_or_default();
        if !url.starts_with("http://") {
            cx.err(&ep.key("url"), "url must start with http://");
        }
        if e.interval.0 < Duration::from_millis(10) {
            cx.err(&ep.key("interval"), "interval must be at least 10ms");
        }
        let source = e.source.clone().unwrap_or_else(|| e.kind.clone());
        let host = host_of(
            cx,
            netns.as_ref(),
            &ep,
            e.host.as_deref(),
            "event source",
            false,
        );
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
        processes,
        proxies,
        files,
        schedule,
        events,
        control,
        netns,
    })
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
    names: &mut BTreeMap<String, &'static str>,
    path: &KeyPath,
    name: &str,
    what: &'static str,
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
            format!("the name `{name}` is already used by a {prev}; process and fault proxy names must be unique"),
        );
    }
}

/// Validate one fault entry (timeline or random choice) into a fault with `at` zero.
#[allow(clippy::too_many_lines, reason = "one match arm per fault kind")]
fn fault_of(
    cx: &mut Ctx<'_>,
    path: &KeyPath,
    f: &RawFault,
    names: &BTreeMap<String, &'static str>,
    netns: Option<&NetnsTopology>,
    weights: &BTreeMap<String, f64>,
) -> Option<ScheduledFault> {
    let kind = f.fault.as_str();
    if !FAULT_KINDS.contains(&kind) {
        cx.err(
            &path.key("fault"),
            format!(
                "unknown fault {kind:?}; allowed: {}",
                FAULT_KINDS.join(", ")
            ),
        );
        return None;
    }
    let target_kind = names.get(&f.target).copied();
    let needs = |cx: &mut Ctx<'_>, want: &str| {
        if target_kind != Some(want) {
            let known: Vec<&str> = names
                .iter()
                .filter(|(_, k)| **k == want)
                .map(|(n, _)| n.as_str())
                .collect();
            cx.err(
                &path.key("target"),
                format!(
                    "fault `{kind}` needs a {want} as target; `{}` is {}; {want}s: {}",
                    f.target,
                    target_kind.map_or("not defined".to_string(), |k| format!("a {k}")),
                    if known.is_empty() {
                        "(none)".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
            false
        } else {
            true
        }
    };
    // Parameters that belong to other kinds are errors, not silently ignored.
    let allowed: &[&str] = match kind {
        "latency" => &["delay", "jitter", "direction"],
        "bandwidth" => &["rate", "direction"],
        "blackhole" => &["direction"],
        "drop" => &["fraction"],
        "partition" => &["peer", "one_way"],
        _ => &[],
    };
    let given = [
        ("delay", f.delay.is_some()),
        ("jitter", f.jitter.is_some()),
        ("direction", f.direction.is_some()),
        ("rate", f.rate.is_some()),
        ("fraction", f.fraction.is_some()),
        ("peer", f.peer.is_some()),
        ("one_way", f.one_way.is_some()),
    ];
    for (key, present) in given {
        if present && !allowed.contains(&key) {
            cx.err(
                &path.key(key),
                format!("`{key}` does not apply to fault `{kind}`"),
            );
        }
    }
    let duration = f.duration.map(|d| d.0);
    if duration.is_some_and(|d| d.is_zero()) {
        cx.err(
            &path.key("duration"),
            "duration must be more than 0 (leave it out for \"until the end\")",
        );
    }
    let direction = f.direction.unwrap_or_default();
    let action = match kind {
        "kill" | "term" | "pause" | "restart" => {
            if !needs(cx, "process") {
                return None;
            }
            if kind == "pause" && duration.is_none() {
                cx.err(
                    path,
                    "fault `pause` needs a duration (SIGCONT is sent after it)",
                );
            }
            if kind == "restart" && duration.is_some() {
                cx.err(&path.key("duration"), "fault `restart` takes no duration: it stops and starts again at once (use `kill` or `term` with a duration for a longer outage)");
            }
            FaultAction::Process(match kind {
                "kill" => ProcessFault::Kill,
                "term" => ProcessFault::Term,
                "pause" => ProcessFault::Pause,
                _ => ProcessFault::Restart,
            })
        }
        "partition" | "link_down" => {
            let Some(t) = netns else {
                cx.err(
                    &path.key("fault"),
                    format!("fault `{kind}` acts on network namespaces: it needs a [chaos.netns] topology (root only)"),
                );
                return None;
            };
            if !t.knows(&f.target) {
                cx.err(
                    &path.key("target"),
                    format!(
                        "fault `{kind}` needs a host as target; `{}` is not one; hosts: {}",
                        f.target,
                        t.names()
                    ),
                );
                return None;
            }
            if kind == "partition" {
                let Some(peer) = f.peer.clone() else {
                    cx.err(
                        path,
                        "fault `partition` needs `peer` (the host on the other side)",
                    );
                    return None;
                };
                if !t.knows(&peer) {
                    cx.err(
                        &path.key("peer"),
                        format!("no host `{peer}`; hosts: {}", t.names()),
                    );
                    return None;
                }
                if peer == f.target {
                    cx.err(
                        &path.key("peer"),
                        "peer must be another host than the target",
                    );
                    return None;
                }
                FaultAction::Net(NetFault::Partition {
                    from: f.target.clone(),
                    to: peer,
                    one_way: f.one_way.unwrap_or(false),
                })
            } else {
                FaultAction::Net(NetFault::LinkDown {
                    host: f.target.clone(),
                })
            }
        }
        _ => {
            if !needs(cx, "fault proxy") {
                return None;
            }
            let pf = match kind {
                "latency" => {
                    let Some(delay) = f.delay else {
                        cx.err(path, "fault `latency` needs `delay` (e.g. \"200ms\")");
                        return None;
                    };
                    ProxyFault::Latency {
                        delay,
                        jitter: f.jitter.unwrap_or_default(),
                        direction,
                    }
                }
                "bandwidth" => {
                    let Some(rate) = f.rate else {
                        cx.err(
                            path,
                            "fault `bandwidth` needs `rate` in bytes per second (e.g. \"64KiB\")",
                        );
                        return None;
                    };
                    ProxyFault::Bandwidth { rate, direction }
                }
                "reset" => ProxyFault::Reset,
                "blackhole" => ProxyFault::Blackhole { direction },
                _ => {
                    let Some(fraction) = f.fraction else {
                        cx.err(
                            path,
                            "fault `drop` needs `fraction` (e.g. 0.3 for 30% of connections)",
                        );
                        return None;
                    };
                    ProxyFault::Drop { fraction }
                }
            };
            if let Err(e) = pf.validate() {
                cx.err(path, e);
            }
            FaultAction::Proxy(pf)
        }
    };
    let weight = f
        .weight
        .or_else(|| weights.get(kind).copied())
        .unwrap_or(1.0);
    if !(weight.is_finite() && weight >= 0.0) {
        cx.err(&path.key("weight"), "weight must be 0 or more");
    }
    Some(ScheduledFault {
        id: 0,
        at: Duration::ZERO,
        target: f.target.clone(),
        action,
        duration,
        weight,
        subject: match &f.subject {
            Some(sub) => cx.expand(&path.key("subject"), sub)?,
            None => f.target.clone(),
        },
    })
}

/// Draw `count` faults from `choices` (relative chances) at times spread over
/// `[start, end)`: the window is cut into `count` equal slots and one time is drawn
/// uniformly inside each, so faults never bunch up. Pure function of the seed.
pub fn random_schedule(
    seed: u64,
    count: u32,
    start: Duration,
    end: Duration,
    choices: &[(f64, ScheduledFault)],
) -> Vec<ScheduledFault> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let total: f64 = choices.iter().map(|(c, _)| *c).sum();
    let slot = (end - start) / count.max(1);
    let mut out = Vec::new();
    for i in 0..count {
        let at = start + slot * i + slot.mul_f64(rng.f64());
        let mut pick = rng.f64() * total;
        let mut chosen = None;
        for (c, f) in choices {
            if pick < *c {
                chosen = Some(f);
                break;
            }
            pick -= c;
        }
        if let Some(f) = chosen.or_else(|| choices.last().map(|(_, f)| f)) {
            out.push(ScheduledFault { at, ..f.clone() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::new("/run".into(), "/s.toml".into(), "/bin/hastack".into())
    }

    fn parse(text: &str) -> Result<Scenario, Diagnostics> {
        let src = Source::parse("s.toml", text.to_string()).unwrap();
        load(&src, &mut vars(), LoadOptions::default()).map(|(s, _)| s)
    }

    const GOOD: &str = r#"
[chaos]
name = "t"
duration = "20s"
seed = 7

[chaos.load]
targets = ["127.0.0.1:{port:front}"]
rate = 100

[[chaos.process]]
name = "app1"
command = "hastack"
args = ["app", "--listen", "127.0.0.1:{port:app1}"]
ready = { tcp = "127.0.0.1:{port:app1}" }

[[chaos.fault_proxy]]
name = "link1"
listen = "127.0.0.1:{port:front}"
upstream = "127.0.0.1:{port:app1}"

[[chaos.timeline]]
at = "5s"
target = "app1"
fault = "pause"
duration = "2s"

[[chaos.timeline]]
at = "2s"
target = "link1"
fault = "latency"
delay = "100ms"
jitter = "10ms"
duration = "1s"

[chaos.random]
count = 3
[[chaos.random.choices]]
target = "app1"
fault = "kill"
duration = "1s"
"#;

    #[test]
    fn a_good_scenario_resolves_placeholders_and_sorts_the_schedule() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.processes[0].program, PathBuf::from("/bin/hastack"));
        let port = s.load.targets[0].port();
        assert_eq!(s.proxies[0].listen.port(), port, "same name, same port");
        assert_ne!(s.proxies[0].upstream.port(), port);
        assert_eq!(s.schedule.len(), 5);
        assert!(s.schedule.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(s.schedule.iter().enumerate().all(|(i, f)| f.id == i));
        // Random faults fall in [10%, 80%) of 20 s.
        for f in s.schedule.iter().filter(|f| f.action.kind() == "kill") {
            assert!(f.at >= Duration::from_secs(2) && f.at < Duration::from_secs(16));
        }
        assert_eq!((s.slo.availability * 1000.0).round(), 999.0);
    }

    #[test]
    fn the_schedule_is_a_function_of_the_seed() {
        let a = parse(GOOD).unwrap().schedule;
        let b = parse(GOOD).unwrap().schedule;
        assert_eq!(a, b);
        let src = Source::parse("s.toml", GOOD.to_string()).unwrap();
        let (c, _) = load(&src, &mut vars(), LoadOptions { seed: Some(8) }).unwrap();
        assert_ne!(a, c.schedule);
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let text = r#"
[chaos]
duration = "10s"

[chaos.load]
targets = ["nowhere"]
rate = 0

[[chaos.process]]
name = "a"
command = "x"

[[chaos.timeline]]
at = "20s"
target = "a"
fault = "latency"
delay = "1s"

[[chaos.timeline]]
at = "1s"
target = "a"
fault = "pause"
fraction = 0.5

[[chaos.timeline]]
at = "1s"
target = "b"
fault = "explode"
"#;
        let e = parse(text).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("s.toml:6:"), "{s}");
        assert!(s.contains("is not an IP:port"), "{s}");
        assert!(s.contains("rate must be"), "{s}");
        assert!(
            s.contains("needs a fault proxy as target; `a` is a process"),
            "{s}"
        );
        assert!(s.contains("must be before the end of the run"), "{s}");
        assert!(
            s.contains("`fraction` does not apply to fault `pause`"),
            "{s}"
        );
        assert!(s.contains("unknown fault \"explode\""), "{s}");
        assert!(e.error_count() >= 6, "{s}");
    }

    #[test]
    fn unknown_keys_are_located() {
        let e =
            parse("[chaos]\nduration = \"1s\"\nduraton = 2\n[chaos.load]\ntargets=[]\nrate=1\n")
                .unwrap_err();
        assert!(e.to_string().contains("s.toml:3:1"), "{e}");
    }

    #[test]
    fn placeholders() {
        let mut v = vars();
        assert_eq!(v.expand("{dir}/x {{y}}").unwrap(), "/run/x {y}");
        let a = v.expand("{port:a}").unwrap();
        assert_eq!(v.expand("{port:a}").unwrap(), a);
        assert_ne!(v.expand("{port:b}").unwrap(), a);
        assert!(
            v.expand("{nope}")
                .unwrap_err()
                .contains("unknown placeholder")
        );
        assert!(v.expand("{dir").unwrap_err().contains("unclosed"));
        assert!(v.expand("}").unwrap_err().contains("unmatched"));
    }

    const NETNS: &str = r#"
[chaos]
duration = "10s"

[chaos.netns]
hosts = ["lb1", "web1", "web2"]
subnet = "10.98.7.0/24"

[chaos.load]
targets = ["{net:50}:80"]
rate = 50

[[chaos.process]]
name = "app1"
host = "web1"
command = "hastack"
args = ["app", "--listen", "{ip:web1}:9000", "--peer", "{ip:client}"]
ready = { tcp = "{ip:web1}:9000" }

[[chaos.fault_proxy]]
name = "link1"
host = "web1"
listen = "{ip:web1}:8080"
upstream = "127.0.0.1:9000"

[[chaos.events]]
type = "haproxy"
host = "lb1"
url = "http://127.0.0.1:9901/stats;csv"

[[chaos.timeline]]
at = "1s"
target = "lb1"
fault = "partition"
peer = "web1"
one_way = true
duration = "2s"

[[chaos.timeline]]
at = "4s"
target = "web2"
fault = "link_down"
duration = "1s"

[[chaos.timeline]]
at = "6s"
target = "client"
fault = "partition"
peer = "web2"
"#;

    #[test]
    fn a_namespace_scenario_places_everything_on_its_hosts() {
        let s = parse(NETNS).unwrap();
        let t = s.netns.clone().unwrap();
        assert_eq!(t.hosts, vec!["lb1", "web1", "web2"]);
        assert_eq!(t.subnet, [10, 98, 7]);
        assert_eq!(s.load.targets[0].to_string(), "10.98.7.50:80");
        assert_eq!(s.processes[0].host.as_deref(), Some("web1"));
        assert_eq!(s.processes[0].args[2], "10.98.7.2:9000");
        assert_eq!(s.processes[0].args[4], "10.98.7.100");
        assert_eq!(s.proxies[0].host.as_deref(), Some("web1"));
        assert_eq!(s.proxies[0].listen.to_string(), "10.98.7.2:8080");
        assert_eq!(s.events[0].host(), Some("lb1"));
        assert_eq!(
            s.schedule[0].action,
            FaultAction::Net(NetFault::Partition {
                from: "lb1".into(),
                to: "web1".into(),
                one_way: true
            })
        );
        assert_eq!(
            s.schedule[1].action,
            FaultAction::Net(NetFault::LinkDown {
                host: "web2".into()
            })
        );
        assert_eq!(
            s.schedule[2].action,
            FaultAction::Net(NetFault::Partition {
                from: "client".into(),
                to: "web2".into(),
                one_way: false
            })
        );
        let src = Source::parse("s.toml", NETNS.to_string()).unwrap();
        let (summary, _) = check(&src).unwrap();
        assert!(
            summary.contains("in network namespaces (3 host(s) + client, root)"),
            "{summary}"
        );
    }

    #[test]
    fn namespace_keys_are_validated_with_their_lines() {
        let text = r#"
[chaos]
duration = "10s"

[chaos.netns]
hosts = ["lb1", "lb1", "client", "bad name"]
subnet = "10.1.2.3/16"

[chaos.load]
targets = ["{ip:nope}:80", "{net:300}:80"]
rate = 50

[[chaos.process]]
name = "app1"
command = "hastack"

[[chaos.process]]
name = "app2"
host = "mars"
command = "hastack"

[[chaos.timeline]]
at = "1s"
target = "app1"
fault = "link_down"

[[chaos.timeline]]
at = "2s"
target = "lb1"
fault = "partition"
peer = "lb1"

[[chaos.timeline]]
at = "3s"
target = "lb1"
fault = "partition"
peer = "venus"
"#;
        let e = parse(text).unwrap_err();
        let s = e.to_string();
        for (want, line) in [
            ("the host `lb1` is listed twice", 6),
            ("`client` is the load generator's namespace", 6),
            ("a host name is 1 to 32 letters", 6),
            ("is not a /24", 7),
            ("no host `nope`", 10),
            ("N is the last octet", 10),
            ("every process runs on a host", 13),
            ("no host `mars` in [chaos.netns]", 19),
            (
                "fault `link_down` needs a host as target; `app1` is not one",
                24,
            ),
            ("peer must be another host than the target", 31),
            ("no host `venus`", 37),
        ] {
            assert!(
                s.contains(want) && s.contains(&format!("s.toml:{line}:")),
                "missing {want:?} at line {line} in:\n{s}"
            );
        }
    }

    #[test]
    fn namespace_keys_need_a_topology() {
        let text = r#"
[chaos]
duration = "10s"

[chaos.load]
targets = ["127.0.0.1:80", "{ip:lb1}:80"]
rate = 50

[[chaos.process]]
name = "app1"
host = "web1"
command = "hastack"

[[chaos.events]]
type = "haproxy"
host = "lb1"
url = "http://127.0.0.1:1/stats;csv"

[[chaos.timeline]]
at = "1s"
target = "lb1"
fault = "partition"
peer = "lb2"
"#;
        let e = parse(text).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("{ip:lb1} needs a [chaos.netns] topology"), "{s}");
        assert!(
            s.contains("s.toml:11:1") && s.contains("`host` places a process"),
            "{s}"
        );
        assert!(s.contains("`host` places an event source"), "{s}");
        assert!(
            s.contains("s.toml:22:1") && s.contains("fault `partition` acts on network namespaces"),
            "{s}"
        );
    }

    proptest::proptest! {
        /// Placeholder expansion on arbitrary text never panics.
        #[test]
        fn expand_never_panics(text in "[{}a-z:_]{0,40}") {
            let mut v = vars();
            let _ = v.expand(&text);
        }
    }
}
