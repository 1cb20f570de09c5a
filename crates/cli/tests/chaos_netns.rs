//! `hastack chaos` and `hastack demo --netns` in network namespaces, end to end: the real
//! binary, real `hastack app`/`proxy`/`vip` processes inside namespaces, partitions and link
//! faults through the testbed. Root only: these tests FAIL (never skip) without root, and one
//! of them drops to `nobody` to check that namespace mode refuses loudly before starting
//! anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Scratch;

const HASTACK: &str = env!("CARGO_BIN_EXE_hastack");

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the namespace tests need root (network namespaces, veths, iptables); run them as root, as CI does. Refusing to skip."
    );
}

/// Run hastack to completion; also returns the child's pid (the prefix of its testbed's
/// namespaces is `hstb-<pid>-`).
fn hastack(args: &[&str], cwd: &Path) -> (Output, u32) {
    let child = Command::new(HASTACK)
        .args(args)
        .current_dir(cwd)
        .env("HASTACK_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (child.wait_with_output().unwrap(), pid)
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Namespaces the hastack process `pid` left behind (must be none once it exited).
fn leftover_namespaces(pid: u32) -> Vec<String> {
    let prefix = format!("hstb-{pid}-");
    std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// lb1 runs hastack proxy in front of two app hosts; the client sends to lb1; web1 is cut
/// off from lb1 for 1.5 s. The proxy routes around it (retries, then health checks), so
/// the report shows the fault, its detection by the proxy, and the availability.
const PARTITION: &str = r#"
[chaos]
name = "netns-partition"
duration = "5s"
seed = 5

[chaos.netns]
hosts = ["lb1", "web1", "web2"]

[chaos.load]
targets = ["{ip:lb1}:80"]
rate = 100
timeout = "2s"

[chaos.slo]
availability = 99.0
latency = "500ms"

[[chaos.file]]
path = "proxy.toml"
content = """
[proxy]
workers = 1

[proxy.admin]
listen = "127.0.0.1:9900"

[[proxy.listeners]]
name = "web"
listen = "{ip:lb1}:80"
pool = "app"

[proxy.pools.app]
members = ["{ip:web1}:8080", "{ip:web2}:8080"]
connect_timeout = "200ms"
try_timeout = "500ms"

[proxy.pools.app.health]
type = "http"
path = "/health"
interval = "200ms"
timeout = "150ms"
fall = 2
"""

[[chaos.process]]
name = "app1"
host = "web1"
command = "hastack"
args = ["app", "--listen", "{ip:web1}:8080", "--name", "app1"]
ready = { tcp = "{ip:web1}:8080" }

[[chaos.process]]
name = "app2"
host = "web2"
command = "hastack"
args = ["app", "--listen", "{ip:web2}:8080", "--name", "app2"]
ready = { tcp = "{ip:web2}:8080" }

[[chaos.process]]
name = "lb"
host = "lb1"
command = "hastack"
args = ["proxy", "--config", "{dir}/proxy.toml"]
ready = { http = "http://{ip:lb1}:80/health" }

[[chaos.events]]
type = "json"
source = "proxy"
host = "lb1"
url = "http://127.0.0.1:9900/status"
members = "/pools/app/members"
name_field = "addr"
state_field = "state"
down_states = ["down", "ejected", "unhealthy"]

[[chaos.timeline]]
at = "1s"
target = "lb1"
peer = "web1"
subject = "{ip:web1}:8080"
fault = "partition"
duration = "1500ms"

[[chaos.timeline]]
at = "3500ms"
target = "client"
peer = "web2"
one_way = true
fault = "partition"
duration = "500ms"
"#;

#[test]
fn a_namespace_scenario_partitions_an_app_host_and_reports_it() {
    require_root();
    let dir = Scratch::new("partition");
    std::fs::write(dir.path("s.toml"), PARTITION).unwrap();
    let (out, pid) = hastack(
        &["chaos", "run", "s.toml", "--out", "run", "--json", "r.json"],
        dir.root(),
    );
    let stdout = ok(&out);
    assert!(stdout.contains("availability"), "{stdout}");
    assert!(stdout.contains("ran in network namespaces"), "{stdout}");
    assert!(
        leftover_namespaces(pid).is_empty(),
        "namespaces left behind: {:?}",
        leftover_namespaces(pid)
    );
    let r = read_json(&dir.path("r.json"));
    // Open loop: every scheduled request is counted, whatever happened.
    assert_eq!(r["requests"]["total"], 500, "{r}");
    let a = r["availability"].as_f64().unwrap();
    assert!(a > 0.5 && a <= 1.0, "availability {a}");
    let faults = r["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 2, "{r}");
    let f = &faults[0]["fault"];
    assert_eq!(f["kind"], "partition", "{f}");
    assert!(f["error"].is_null(), "the partition was not applied: {f}");
    assert!(f["healed_at"].as_f64().is_some(), "never healed: {f}");
    assert!(f["label"].as_str().unwrap().contains("lb1"), "{f}");
    // The proxy on lb1 noticed web1 was unreachable from it: its probes went through the
    // partition, so the rules were applied inside the namespaces that carry the traffic.
    let detection = faults[0]["detection_s"].as_f64();
    assert!(
        detection.is_some_and(|d| d < 2.0),
        "lb1's proxy never marked web1 down: {}",
        faults[0]
    );
    assert!(faults[0]["recovered"].as_bool().unwrap(), "{}", faults[0]);
    // The one-way cut between the client and web2 does not touch client -> lb1 -> web2.
    assert!(faults[1]["fault"]["error"].is_null(), "{}", faults[1]);
    assert!(
        faults[1]["fault"]["label"]
            .as_str()
            .unwrap()
            .contains("client")
    );
    let svg = std::fs::read_to_string(dir.path("run/chart.svg")).unwrap();
    assert!(svg.contains("<svg"), "no chart");
    assert!(dir.path("run/logs/lb.log").exists(), "no process log");
}

#[test]
fn demo_netns_moves_the_vip_and_prints_a_scorecard() {
    require_root();
    let dir = Scratch::new("demo");
    let (out, pid) = hastack(
        &[
            "demo",
            "--netns",
            "--duration",
            "20s",
            "--out",
            "report",
            "--json",
            "r.json",
        ],
        dir.root(),
    );
    let stdout = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("availability") && stdout.contains("request-seconds"),
        "{stdout}"
    );
    assert!(stdout.contains("network namespaces"), "{stdout}");
    assert!(
        stderr.contains("virtual IP 10.99.0.50:80"),
        "the demo must say what runs: {stderr}"
    );
    assert!(
        leftover_namespaces(pid).is_empty(),
        "namespaces left behind: {:?}",
        leftover_namespaces(pid)
    );
    for f in ["report.txt", "report.json", "chart.svg"] {
        assert!(dir.path("report").join(f).exists(), "missing {f}");
    }
    let r = read_json(&dir.path("r.json"));
    assert_eq!(r["requests"]["total"], 4000, "20 s at 200 req/s");
    let faults = r["faults"].as_array().unwrap();
    let targets: Vec<&str> = faults
        .iter()
        .map(|f| f["fault"]["target"].as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        ["app1", "app2", "link3", "proxy1", "vrrp1", "lb1"],
        "{r}"
    );
    for f in faults {
        assert!(f["fault"]["error"].is_null(), "not injected: {f}");
        assert!(
            f["fault"]["healed_at"].as_f64().is_some(),
            "not healed: {f}"
        );
    }
    // kill -9 of the master's proxy: lb2 took the VIP (detected through its /status),
    // clients were served again within a second and lost less than a second of requests.
    let proxy_kill = &faults[3];
    assert!(
        proxy_kill["detection_s"].as_f64().is_some_and(|d| d < 1.0),
        "lb2 never became master after the proxy kill: {proxy_kill}"
    );
    assert!(proxy_kill["recovered"].as_bool().unwrap(), "{proxy_kill}");
    assert!(
        proxy_kill["recovery_s"].as_f64().unwrap() < 1.0,
        "{proxy_kill}"
    );
    assert!(
        proxy_kill["lost_request_s"].as_f64().unwrap() < 1.0,
        "{proxy_kill}"
    );
    // Within a second of each front fault (the balancer killed, the VRRP daemon killed, the
    // link down) lb2 holds the VIP: its `hastack vip` reported master, either just now or
    // already (on a loaded machine lb1 may not have taken the VIP back from the previous
    // fault yet; clients do not care which). kill -9 of the VRRP daemon relies on its guard
    // withdrawing the address. No bound on the availability itself: on a starved CPU every
    // hop of a debug build slows down, which says nothing about the failover (the scorecard is
    // honest, not perfect: a moving VIP also resets the client's keep-alive connections).
    let events = r["events"].as_array().unwrap();
    let lb2_master_at = |t: f64| {
        // The latest state change lb2 reported at or before `t`.
        let at = |e: &serde_json::Value| e["at"].as_f64().unwrap();
        events
            .iter()
            .filter(|e| e["source"] == "vip-lb2" && at(e) <= t)
            .filter(|e| e["kind"] == "detected" || e["kind"] == "repaired")
            .max_by(|a, b| at(a).total_cmp(&at(b)))
            .is_some_and(|e| e["kind"] == "detected")
    };
    for f in &faults[3..] {
        let at = f["fault"]["at"].as_f64().unwrap();
        assert!(
            lb2_master_at(at + 1.0),
            "lb2 did not hold the VIP a second after {}: {events:?}",
            f["fault"]["label"]
        );
    }
    // Every failed request is counted once: in a fault's window or unattributed.
    let attributed: u64 = faults
        .iter()
        .map(|f| f["failed_requests"].as_u64().unwrap())
        .sum();
    assert_eq!(
        attributed + r["unattributed"]["failed_requests"].as_u64().unwrap(),
        r["requests"]["failed"].as_u64().unwrap(),
        "{r}"
    );
}

/// Without root, namespace mode refuses with the testbed's message before anything starts:
/// re-run the binary as `nobody` (copied where `nobody` can execute it).
#[test]
fn namespace_mode_refuses_without_root_before_starting_anything() {
    require_root();
    let dir = Scratch::new("notroot");
    let exe = dir.path("hastack");
    std::fs::copy(HASTACK, &exe).unwrap();
    std::fs::write(dir.path("s.toml"), PARTITION).unwrap();
    for p in [dir.root(), &exe, &dir.path("s.toml")] {
        use std::os::unix::fs::PermissionsExt;
        let mode = if p.is_dir() { 0o777 } else { 0o755 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe)
            .args(args)
            .current_dir(dir.root())
            .env("HASTACK_LOG", "off")
            .output()
            .expect("setpriv (util-linux)")
    };
    for args in [
        &["chaos", "run", "s.toml", "--out", "run-scenario"][..],
        &["demo", "--netns", "--duration", "2s", "--out", "run-demo"][..],
    ] {
        let out = as_nobody(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded without root");
        assert!(
            stderr.contains("needs root") && stderr.contains("network namespaces"),
            "{args:?}: {stderr}"
        );
        // Nothing was started: not even the output directory exists.
        let out_dir = dir.path(args[args.len() - 1]);
        assert!(!out_dir.exists(), "{args:?} created {}", out_dir.display());
    }
}
