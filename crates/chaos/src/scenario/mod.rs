//! Scenario files: the `[chaos]` section of a hastack config file.
//!
//! A scenario is an ordinary hastack config file, so `hastack check` validates it and a
//! component started by the scenario can read its own section (`[proxy]`, ...) from the
//! same file (`{scenario}` expands to its path). The full key reference is in
//! `docs/chaos.md`. [`load`] turns the file into a runtime [`Scenario`], collecting every
//! error with its file:line:column. The jobs, one module each:
//!
//! * `schema`: the serde types, key by key, with their defaults;
//! * `vars`: placeholders (`{port:NAME}`, `{dir}`, `{scenario}`, `{ip:HOST}`, `{net:N}`);
//! * `validate`: every section into runtime values, with located errors (carrying a
//!   `ctx::Ctx`: the source, the diagnostics, the placeholders);
//! * `faults`: one fault entry into a [`ScheduledFault`] (driven by the one list of kinds,
//!   [`crate::fault::FaultKind`]) and the seeded random schedule.

mod ctx;
mod faults;
mod schema;
mod validate;
mod vars;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hastack_config::{Diagnostics, KeyPath, Source};

use crate::events::EventSourceSpec;
use crate::fault::ScheduledFault;
use crate::fault::process::ProcessSpec;
use crate::load::LoadPlan;
use crate::load::http::HttpRequestSpec;
use crate::load::tcp::TcpDriver;
use crate::netns::NetnsTopology;
use crate::report::{RestoreRule, Slo};
pub use faults::random_schedule;
pub use vars::Vars;

/// The section a scenario lives in.
pub const SECTION: &str = "chaos";

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
    /// The recovery rule.
    pub restore: RestoreRule,
    /// How long after its heal a fault's window stays open: failures until then are
    /// attributed to it.
    pub settle: Duration,
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

/// Overrides from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Replace the seed.
    pub seed: Option<u64>,
}

/// Load and validate the `[chaos]` section of `src`; warnings come back with the scenario.
pub fn load(
    src: &Source,
    vars: &mut Vars,
    opts: LoadOptions,
) -> Result<(Scenario, Diagnostics), Diagnostics> {
    let raw: schema::RawChaos = match src.section(SECTION)? {
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
    let mut cx = ctx::Ctx {
        src,
        diags: Diagnostics::new(),
        vars,
    };
    let scenario = validate::validate(&mut cx, raw, opts);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{FaultAction, FaultKind, NetFault};

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
        for f in s
            .schedule
            .iter()
            .filter(|f| f.action.kind() == FaultKind::Kill)
        {
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

    /// One entry per kind in [`FaultKind::ALL`] (with the parameters it needs) builds an
    /// action of exactly that kind: no kind is read as another.
    #[test]
    fn every_fault_kind_builds_its_own_action() {
        use crate::fault::TargetKind;
        let mut text = String::from(
            "[chaos]\nduration = \"60s\"\n[chaos.netns]\nhosts = [\"lb1\", \"web1\"]\n[chaos.load]\ntargets = [\"{ip:lb1}:80\"]\nrate = 10\n[[chaos.process]]\nname = \"app1\"\nhost = \"web1\"\ncommand = \"x\"\n[[chaos.fault_proxy]]\nname = \"link1\"\nhost = \"web1\"\nlisten = \"{ip:web1}:8080\"\nupstream = \"127.0.0.1:9000\"\n",
        );
        for (i, k) in FaultKind::ALL.iter().enumerate() {
            let target = match k.target() {
                TargetKind::Process => "app1",
                TargetKind::FaultProxy => "link1",
                TargetKind::Host => "lb1",
            };
            let params = match k {
                FaultKind::Latency => "delay = \"10ms\"\n",
                FaultKind::Bandwidth => "rate = \"1KiB\"\n",
                FaultKind::Drop => "fraction = 0.5\n",
                FaultKind::Partition => "peer = \"web1\"\n",
                _ => "",
            };
            let duration = match k.duration() {
                crate::fault::kind::DurationRule::Forbidden => "",
                _ => "duration = \"1s\"\n",
            };
            text.push_str(&format!(
                "[[chaos.timeline]]\nat = \"{}s\"\ntarget = \"{target}\"\nfault = \"{}\"\n{params}{duration}",
                i + 1,
                k.name()
            ));
        }
        let s = parse(&text).unwrap_or_else(|d| panic!("{d}"));
        let kinds: Vec<FaultKind> = s.schedule.iter().map(|f| f.action.kind()).collect();
        assert_eq!(kinds, FaultKind::ALL);
    }

    #[test]
    fn report_keys_and_the_retired_projection() {
        let text = "[chaos]\nduration = \"10s\"\n[chaos.load]\ntargets = [\"127.0.0.1:1\"]\nrate = 1\n[chaos.slo]\nincidents_per_year = 12\n[chaos.report]\nsettle = \"3s\"\n";
        let src = Source::parse("s.toml", text.to_string()).unwrap();
        let (s, warnings) = load(&src, &mut vars(), LoadOptions::default()).unwrap();
        assert_eq!(s.settle, Duration::from_secs(3));
        let w = warnings.to_string();
        assert!(
            w.contains("s.toml:7:") && w.contains("`incidents_per_year` is ignored"),
            "{w}"
        );
        let e = parse(&text.replace("\"3s\"", "\"2h\"")).unwrap_err();
        assert!(e.to_string().contains("settle must be at most 1h"), "{e}");
        // Defaults: settle 2 s.
        let s = parse(GOOD).unwrap();
        assert_eq!(s.settle, crate::report::DEFAULT_SETTLE);
    }
}
