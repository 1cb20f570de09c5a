//! `hastack chaos` and `hastack demo` end to end: real `hastack app` processes, real fault
//! proxies, real HAProxy (Debian package, installed by scripts/test.sh), real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::Scratch;

const HASTACK: &str = env!("CARGO_BIN_EXE_hastack");

fn hastack(args: &[&str], cwd: &Path) -> Output {
    Command::new(HASTACK)
        .args(args)
        .current_dir(cwd)
        .env("HASTACK_LOG", "warn")
        .output()
        .unwrap()
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

const APPS: &str = r#"
[[chaos.process]]
name = "app1"
command = "hastack"
args = ["app", "--listen", "127.0.0.1:{port:app1}", "--name", "app1"]
ready = { tcp = "127.0.0.1:{port:app1}" }

[[chaos.process]]
name = "app2"
command = "hastack"
args = ["app", "--listen", "127.0.0.1:{port:app2}", "--name", "app2"]
ready = { http = "http://127.0.0.1:{port:app2}/health" }

[[chaos.fault_proxy]]
name = "link1"
listen = "127.0.0.1:{port:link1}"
upstream = "127.0.0.1:{port:app1}"

[[chaos.fault_proxy]]
name = "link2"
listen = "127.0.0.1:{port:link2}"
upstream = "127.0.0.1:{port:app2}"
"#;

#[test]
fn a_short_scenario_runs_end_to_end_with_client_side_failover() {
    let dir = Scratch::new("direct");
    let scenario = format!(
        r#"
[chaos]
name = "e2e-direct"
duration = "4s"
seed = 3

[chaos.load]
targets = ["127.0.0.1:{{port:link1}}", "127.0.0.1:{{port:link2}}"]
rate = 100
timeout = "1s"

[chaos.slo]
availability = 99.0
latency = "200ms"
{APPS}
# app1 dies at 1 s and comes back at 3 s: clients fail over to link2 (the proxy mirrors
# the refusal), where answers are slowed for half a second.
[[chaos.timeline]]
at = "1s"
target = "app1"
fault = "kill"
duration = "2s"

[[chaos.timeline]]
at = "1500ms"
target = "link2"
fault = "latency"
delay = "300ms"
duration = "500ms"
"#
    );
    std::fs::write(dir.path("s.toml"), scenario).unwrap();
    let out = hastack(
        &["chaos", "run", "s.toml", "--out", "run", "--json", "r.json"],
        dir.root(),
    );
    let stdout = ok(&out);
    assert!(stdout.contains("availability"), "{stdout}");
    let r = read_json(&dir.path("r.json"));
    // Open loop: exactly rate x duration requests, whatever happened.
    assert_eq!(r["requests"]["total"], 400, "{r}");
    let a = r["availability"].as_f64().unwrap();
    assert!(a < 1.0 && a > 0.5, "availability {a}");
    assert!(
        r["requests"]["by_outcome"]["slow"].as_u64().unwrap() > 0,
        "{r}"
    );
    let faults = r["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 2);
    for f in faults {
        assert!(f["fault"]["error"].is_null(), "{f}");
        assert!(f["fault"]["healed_at"].as_f64().is_some(), "healed: {f}");
    }
    // The slowed link carried the traffic: its fault cost requests (slow answers), and
    // every failed request is counted once, in a fault or unattributed.
    assert!(
        faults[1]["failed_by_outcome"]["slow"].as_u64().unwrap() > 0,
        "{}",
        faults[1]
    );
    assert!(
        faults[1]["lost_request_s"].as_f64().unwrap() >= 0.2,
        "{}",
        faults[1]
    );
    let attributed: u64 = faults
        .iter()
        .map(|f| f["failed_requests"].as_u64().unwrap())
        .sum();
    assert_eq!(
        attributed + r["unattributed"]["failed_requests"].as_u64().unwrap(),
        r["requests"]["failed"].as_u64().unwrap(),
        "{r}"
    );
    assert_eq!(r["timeline"].as_array().unwrap().len(), 4);
    let svg = std::fs::read_to_string(dir.path("run/chart.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("kill app1"),
        "chart marks faults"
    );
    assert!(dir.path("run/report.txt").exists());
    assert!(dir.path("run/logs/app1.log").exists());
}

#[test]
fn haproxy_scenario_reports_detection_from_its_stats() {
    let dir = Scratch::new("haproxy");
    let scenario = format!(
        r#"
[chaos]
name = "e2e-haproxy"
duration = "5s"
requires = ["haproxy"]

[chaos.load]
targets = ["127.0.0.1:{{port:front}}"]
rate = 100

[[chaos.file]]
path = "haproxy.cfg"
content = """
global
    maxconn 256
defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 2s
    retries 3
    option redispatch 1
frontend web
    bind 127.0.0.1:{{port:front}}
    default_backend app
backend app
    option httpchk GET /health
    default-server inter 200ms fall 2 rise 2
    server app1 127.0.0.1:{{port:link1}} check
    server app2 127.0.0.1:{{port:link2}} check
listen stats
    bind 127.0.0.1:{{port:stats}}
    stats enable
    stats uri /stats
"""
{APPS}
[[chaos.process]]
name = "lb"
command = "haproxy"
args = ["-db", "-f", "{{dir}}/haproxy.cfg"]
ready = {{ http = "http://127.0.0.1:{{port:front}}/health" }}

[[chaos.events]]
type = "haproxy"
url = "http://127.0.0.1:{{port:stats}}/stats;csv"
interval = "50ms"

[[chaos.timeline]]
at = "1s"
target = "app1"
fault = "kill"
duration = "2s"
"#
    );
    std::fs::write(dir.path("s.toml"), scenario).unwrap();
    let out = hastack(&["chaos", "run", "s.toml", "--out", "run"], dir.root());
    ok(&out);
    let r = read_json(&dir.path("run/report.json"));
    assert_eq!(r["requests"]["total"], 500);
    let events = r["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "detected" && e["subject"] == "app/app1"),
        "HAProxy's DOWN transition arrives as an event: {events:?}"
    );
    let f = &r["faults"][0];
    let det = f["detection_s"].as_f64().expect("detection measured");
    assert!(det > 0.0 && det < 3.0, "{f}");
    assert!(
        f["member_back_s"].as_f64().is_some(),
        "app1 back in rotation: {f}"
    );
}

fn minimal(extra: &str) -> String {
    format!(
        "[chaos]\nduration = \"2s\"\n{extra}\n[chaos.load]\ntargets = [\"127.0.0.1:{{port:x}}\"]\nrate = 10\n"
    )
}

#[test]
fn unavailable_requirements_and_namespace_faults_fail_before_anything_starts() {
    let dir = Scratch::new("refuse");
    std::fs::write(
        dir.path("netns.toml"),
        format!(
            "{}\n[[chaos.timeline]]\nat = \"1s\"\ntarget = \"lb1\"\nfault = \"partition\"\npeer = \"lb2\"\n",
            minimal("")
        ),
    )
    .unwrap();
    let out = hastack(&["chaos", "run", "netns.toml", "--out", "run"], dir.root());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // A namespace fault without a [chaos.netns] topology is a located config error.
    assert!(
        err.contains("needs a [chaos.netns] topology") && err.contains("netns.toml:11:"),
        "{err}"
    );
    assert!(!dir.path("run").exists(), "nothing may start");

    std::fs::write(
        dir.path("sub.toml"),
        minimal("requires = [\"hastack no-such-subcommand\"]"),
    )
    .unwrap();
    let out = hastack(&["chaos", "run", "sub.toml", "--out", "run"], dir.root());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs `hastack no-such-subcommand`"), "{err}");

    // A bad scenario: every error located.
    std::fs::write(dir.path("bad.toml"), minimal("seed = \"x\"")).unwrap();
    let out = hastack(&["chaos", "run", "bad.toml"], dir.root());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3:"), "{err}");
}

#[test]
fn shipped_classic_scenario_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = hastack(
        &["check", "scenarios/classic-haproxy.toml"],
        &root.canonicalize().unwrap(),
    );
    let s = ok(&out);
    assert!(s.contains("6 fault(s)"), "{s}");
}

#[test]
fn demo_runs_and_says_what_front_tier_it_ran() {
    let dir = Scratch::new("demo");
    let out = hastack(
        &[
            "demo",
            "--duration",
            "5s",
            "--rate",
            "50",
            "--front",
            "direct",
            "--out",
            "rep",
            "--json",
            "d.json",
        ],
        dir.root(),
    );
    let stdout = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("front tier: NONE"), "{stdout}");
    assert!(
        stderr.contains("[   1/5s]"),
        "live progress every second: {stderr}"
    );
    let r = read_json(&dir.path("d.json"));
    assert_eq!(r["requests"]["total"], 250);
    assert_eq!(r["faults"].as_array().unwrap().len(), 3);
    assert!(dir.path("rep/chart.svg").exists());
}

#[test]
fn fault_proxy_command_rejects_a_bad_fault() {
    let dir = Scratch::new("fp");
    let out = hastack(
        &[
            "chaos",
            "fault-proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
            "--fault",
            r#"{"kind":"latency"}"#,
        ],
        dir.root(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a fault") && err.contains("kinds: latency"),
        "{err}"
    );
}

#[test]
fn compare_runs_two_scenarios_with_the_same_timeline_side_by_side() {
    let dir = Scratch::new("compare");
    let one = |name: &str, targets: &str| {
        format!(
            r#"
[chaos]
name = "{name}"
duration = "2s"

[chaos.load]
targets = [{targets}]
rate = 50
{APPS}
[[chaos.timeline]]
at = "500ms"
target = "app1"
fault = "kill"
duration = "1s"
"#
        )
    };
    // A: clients fail over between the two links; B: only link1, so B loses requests.
    std::fs::write(
        dir.path("a.toml"),
        one(
            "failover",
            r#""127.0.0.1:{port:link1}", "127.0.0.1:{port:link2}""#,
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path("b.toml"),
        one("single", r#""127.0.0.1:{port:link1}""#),
    )
    .unwrap();
    let out = hastack(
        &[
            "chaos", "compare", "a.toml", "b.toml", "--seed", "9", "--out", "cmp", "--json",
            "c.json",
        ],
        dir.root(),
    );
    let stdout = ok(&out);
    assert!(stdout.contains("timelines identical: yes"), "{stdout}");
    let c = read_json(&dir.path("c.json"));
    assert_eq!(c["a"]["seed"], 9);
    assert_eq!(c["b"]["seed"], 9);
    let fa = c["a"]["requests"]["failed"].as_u64().unwrap();
    let fb = c["b"]["requests"]["failed"].as_u64().unwrap();
    assert!(
        fb > fa,
        "without failover more requests fail: a {fa}, b {fb}"
    );
    assert!(dir.path("cmp/compare.txt").exists());
    assert!(dir.path("cmp/a/chart.svg").exists() && dir.path("cmp/b/chart.svg").exists());
}

#[test]
fn standalone_fault_proxy_is_controlled_over_http() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use tokio::time::Instant;

    // Upstream: sends 32 KiB to every connection and closes it, so that the traffic the
    // bandwidth fault acts on goes through the proxy.
    const BODY: usize = 32 * 1024;
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in upstream.incoming() {
            let Ok(mut c) = conn else { return };
            let _ = c.write_all(&[b'x'; BODY]);
        }
    });
    let mut child = Command::new(HASTACK)
        .args([
            "--log",
            "warn",
            "chaos",
            "fault-proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &up,
            "--control",
            "127.0.0.1:0",
            "--name",
            "edge",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    /// Stops the child on every exit path.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let guard = Kill(child);
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    let listen = first
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("{first}"))
        .trim_end_matches(',')
        .to_string();
    let second = lines.next().unwrap().unwrap();
    let ctl = second
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    let call = |method: &str, path: &str, body: &str| -> String {
        let mut s = TcpStream::connect(&ctl).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    // How long 32 KiB take from the upstream, through the proxy.
    let fetch = || {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(&listen).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), BODY, "every byte arrives, fault or not");
        t0.elapsed()
    };
    let r = call(
        "POST",
        "/admin/proxies/edge/faults",
        r#"{"kind":"bandwidth","rate":"16KiB","direction":"downstream"}"#,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let status = call("GET", "/status", "");
    assert!(status.contains("\"kind\": \"bandwidth\""), "{status}");
    // 32 KiB at 16 KiB/s: about 2 s (less the 20 ms burst), however fast the machine.
    let capped = fetch();
    assert!(capped >= Duration::from_millis(1900), "{capped:?}");
    let r = call(
        "POST",
        "/admin/proxies/edge/clear",
        r#"{"kind":"bandwidth"}"#,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(!call("GET", "/status", "").contains("bandwidth"));
    // Cleared: no longer held to the rate.
    let free = fetch();
    assert!(free < capped / 2, "cleared {free:?} vs capped {capped:?}");
    drop(guard);
}
