//! Every comparison gives both sides the same detection intervals, timeouts and tries, and
//! the classic side the strongest setup its documentation allows (docs/chaos.md, "Side by
//! side"). Pure: the shipped scenarios and the demo's generated configs are parsed back,
//! each side in its own vocabulary, into the settings the comparison depends on, and those
//! must be equal. The last tests weaken one side at a time and check that this test notices.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use hastack_chaos::demo::{self, DemoOptions, HaproxyFront, HastackProxyPair};
use hastack_chaos::scenario::{Scenario, Vars};
use hastack_config::{Dur, Source};

/// What a balancer comparison depends on.
#[derive(Debug, Clone, PartialEq)]
struct Balancer {
    check_interval: Duration,
    check_fast_interval: Duration,
    check_down_interval: Duration,
    check_timeout: Duration,
    fall: u64,
    rise: u64,
    check_jitter_pct: u64,
    connect_timeout: Duration,
    try_timeout: Duration,
    attempts: u64,
    consecutive_errors: u64,
    slow_start: Duration,
}

/// HAProxy's time format: a number and an optional unit (us, ms, s, m, h, d; ms by default).
fn haproxy_time(v: &str) -> Result<Duration, String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("bad time {v:?}"))?;
    Ok(match unit {
        "us" => Duration::from_micros(n),
        "" | "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86400),
        _ => return Err(format!("bad time unit in {v:?}")),
    })
}

/// The settings of an HAProxy config with one backend, and every way it falls short of the
/// strongest setup HAProxy's documentation allows for this job.
fn haproxy(cfg: &str) -> Result<Balancer, String> {
    let mut kv: BTreeMap<String, String> = BTreeMap::new();
    let mut options = Vec::new();
    let mut section = String::new();
    for raw in cfg.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if !raw.starts_with(char::is_whitespace) {
            section = words[0].to_string();
            continue;
        }
        if section == "frontend" || section == "listen" {
            continue;
        }
        match words.as_slice() {
            ["timeout", what, v] => drop(kv.insert(format!("timeout {what}"), (*v).into())),
            ["option", rest @ ..] => options.push(rest.join(" ")),
            ["default-server", rest @ ..] => {
                for pair in rest.chunks(2) {
                    let [k, v] = pair else {
                        return Err(format!("odd default-server line: {line}"));
                    };
                    kv.insert((*k).into(), (*v).into());
                }
            }
            ["server", _, _, "check"] => {}
            ["server", ..] => {
                return Err(format!(
                    "per-server settings are not compared, put them on default-server: {line}"
                ));
            }
            [k, rest @ ..] => drop(kv.insert((*k).into(), rest.join(" "))),
            [] => {}
        }
    }
    let get = |k: &str| {
        kv.get(k)
            .cloned()
            .ok_or_else(|| format!("HAProxy: `{k}` is not set"))
    };
    let want = |k: &str, v: &str| -> Result<(), String> {
        let got = get(k)?;
        (got == v)
            .then_some(())
            .ok_or_else(|| format!("HAProxy: `{k} {got}`, the comparison needs `{k} {v}`"))
    };
    // What makes HAProxy as strong as its documentation allows (docs/chaos.md says why).
    want("balance", "leastconn")?;
    want("observe", "layer7")?;
    want("on-error", "mark-down")?;
    want("retry-on", "all-retryable-errors")?;
    for o in ["redispatch 1", "httpchk GET /health"] {
        if !options.iter().any(|x| x == o) {
            return Err(format!("HAProxy: `option {o}` is missing"));
        }
    }
    let num = |k: &str| -> Result<u64, String> {
        get(k)?
            .parse()
            .map_err(|_| format!("HAProxy: `{k}` is not a number"))
    };
    let time = |k: &str| haproxy_time(&get(k)?);
    Ok(Balancer {
        check_interval: time("inter")?,
        check_fast_interval: time("fastinter")?,
        check_down_interval: time("downinter")?,
        check_timeout: time("timeout check")?,
        fall: num("fall")?,
        rise: num("rise")?,
        check_jitter_pct: num("spread-checks")?,
        connect_timeout: time("timeout connect")?,
        try_timeout: time("timeout server")?,
        attempts: num("retries")? + 1,
        consecutive_errors: num("error-limit")?,
        slow_start: time("slowstart")?,
    })
}

/// `text` without `#` comments (HAProxy and keepalived configs).
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The settings of pool `app` of a hastack proxy config; every one must be written out (a
/// default is not compared, so it could drift from the other side unseen).
fn hastack_proxy(text: &str) -> Result<Balancer, String> {
    let src = Source::parse("proxy.toml", text.to_string()).map_err(|d| d.to_string())?;
    let proxy: serde_json::Value = src
        .section("proxy")
        .map_err(|d| d.to_string())?
        .ok_or("no [proxy] section")?;
    let pool = &proxy["pools"]["app"];
    let at = |path: &str| {
        pool.pointer(path).ok_or_else(|| {
            format!(
                "hastack proxy: `pools.app{}` is not set",
                path.replace('/', ".")
            )
        })
    };
    let time = |path: &str| -> Result<Duration, String> {
        let v = at(path)?
            .as_str()
            .ok_or(format!("{path} is not a duration"))?;
        v.parse::<Dur>().map(|d| d.0)
    };
    let num = |path: &str| -> Result<u64, String> {
        at(path)?.as_u64().ok_or(format!("{path} is not a number"))
    };
    if pool.get("strategy").is_some_and(|s| s != "p2c_ewma") {
        return Err(format!(
            "hastack proxy: strategy {}, the comparison runs p2c_ewma",
            pool["strategy"]
        ));
    }
    let jitter = at("/health/jitter")?
        .as_f64()
        .ok_or("jitter is not a number")?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let jitter_pct = (jitter * 100.0).round() as u64;
    Ok(Balancer {
        check_interval: time("/health/interval")?,
        check_fast_interval: time("/health/fast_interval")?,
        check_down_interval: time("/health/down_interval")?,
        check_timeout: time("/health/timeout")?,
        fall: num("/health/fall")?,
        rise: num("/health/rise")?,
        check_jitter_pct: jitter_pct,
        connect_timeout: time("/connect_timeout")?,
        try_timeout: time("/try_timeout")?,
        attempts: num("/retry/attempts")?,
        consecutive_errors: num("/outlier/consecutive_errors")?,
        slow_start: time("/slow_start")?,
    })
}

/// Both sides equal, and the timeouts chosen so that a stuck try is retried in time: under
/// the SLO latency (so the retried answer can still count as good) and the client deadline.
fn same_balancers(classic: &Balancer, hastack: &Balancer, s: &Scenario) -> Result<(), String> {
    if classic != hastack {
        return Err(format!(
            "the two sides differ:\nclassic {classic:#?}\nhastack {hastack:#?}"
        ));
    }
    if classic.try_timeout >= s.slo.latency || classic.try_timeout >= s.load.timeout {
        return Err(format!(
            "try timeout {:?} must be under the SLO latency {:?} and the client deadline {:?}",
            classic.try_timeout, s.slo.latency, s.load.timeout
        ));
    }
    if classic.check_timeout >= classic.check_interval {
        return Err("a check timeout must be shorter than the check interval".into());
    }
    Ok(())
}

/// What a VIP comparison depends on, per host: advert interval, priority, and per tracker
/// (in order: the balancer itself, its readiness) interval, timeout, fall, rise and weight
/// (0 = the instance goes to fault).
#[derive(Debug, Clone, PartialEq)]
struct Vip {
    /// The VRRP protocol runs at SCHED_RR priority 50 with locked memory.
    realtime: bool,
    advert: Duration,
    priority: u64,
    trackers: Vec<(Duration, Duration, u64, u64, i64)>,
}

/// keepalived's instance and track files, with the watcher script that feeds them.
fn keepalived(conf: &str, watcher: &str, dir: &str) -> Result<Vip, String> {
    let conf = uncommented(conf);
    let words: Vec<&str> = conf.split_whitespace().collect();
    let after = |k: &str| {
        words
            .iter()
            .position(|w| *w == k)
            .and_then(|i| words.get(i + 1).copied())
            .ok_or_else(|| format!("keepalived: `{k}` is not set"))
    };
    if conf.contains("vrrp_script") {
        return Err("keepalived: a vrrp_script runs at most once a second; the comparison feeds track files every 100 ms".into());
    }
    let advert: f64 = after("advert_int")?.parse().map_err(|_| "advert_int")?;
    let priority: u64 = after("priority")?.parse().map_err(|_| "priority")?;
    // track_file NAME { file "DIR/NAME" weight W }
    let mut weights = BTreeMap::new();
    for block in conf.split("track_file ").skip(1) {
        let w: Vec<&str> = block.split_whitespace().collect();
        if w.first() == Some(&"{") {
            continue; // the instance's list of track files
        }
        let file = w
            .iter()
            .position(|x| *x == "file")
            .and_then(|i| w.get(i + 1));
        let weight = w
            .iter()
            .position(|x| *x == "weight")
            .and_then(|i| w.get(i + 1));
        let (Some(file), Some(weight)) = (file, weight) else {
            return Err(format!(
                "keepalived: track_file {} needs file and weight",
                w[0]
            ));
        };
        let file = file.trim_matches('"');
        let name = file
            .strip_prefix(&format!("{dir}/"))
            .ok_or_else(|| format!("keepalived: track file {file} is not in {dir}"))?;
        weights.insert(
            name.to_string(),
            weight.parse::<i64>().map_err(|_| "weight")?,
        );
    }
    let var = |k: &str| -> Result<&str, String> {
        watcher
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{k}=")))
            .ok_or_else(|| format!("watcher: `{k}` is not set"))
    };
    let secs = |k: &str| -> Result<Duration, String> {
        Duration::try_from_secs_f64(var(k)?.parse().map_err(|_| format!("watcher: {k}"))?)
            .map_err(|e| e.to_string())
    };
    let int =
        |k: &str| -> Result<u64, String> { var(k)?.parse().map_err(|_| format!("watcher: {k}")) };
    let mut trackers = Vec::new();
    for (file, prefix) in [("proxy", "PROXY"), ("ready", "READY")] {
        let w = *weights
            .get(file)
            .ok_or_else(|| format!("keepalived: no track_file on {dir}/{file}"))?;
        trackers.push((
            secs("INTERVAL")?,
            secs("TIMEOUT")?,
            int(&format!("{prefix}_FALL"))?,
            int(&format!("{prefix}_RISE"))?,
            -w,
        ));
    }
    let realtime = words.windows(2).any(|w| w == ["vrrp_rt_priority", "50"])
        && words.contains(&"vrrp_no_swap");
    Ok(Vip {
        realtime,
        advert: Duration::try_from_secs_f64(advert).map_err(|e| e.to_string())?,
        priority,
        trackers,
    })
}

/// A `hastack vip` config with one instance and the two trackers.
fn hastack_vip(text: &str) -> Result<Vip, String> {
    let src = Source::parse("vip.toml", text.to_string()).map_err(|d| d.to_string())?;
    let vip: serde_json::Value = src
        .section("vip")
        .map_err(|d| d.to_string())?
        .ok_or("no [vip] section")?;
    let inst = &vip["instance"][0];
    let dur = |v: &serde_json::Value| -> Result<Duration, String> {
        v.as_str()
            .ok_or("not a duration")?
            .parse::<Dur>()
            .map(|d| d.0)
    };
    let mut trackers = Vec::new();
    for t in inst["track"].as_array().ok_or("no trackers")? {
        let interval = dur(&t["interval"])?;
        let timeout = if t["timeout"].is_null() {
            interval.min(Duration::from_secs(1)) // the documented default
        } else {
            dur(&t["timeout"])?
        };
        trackers.push((
            interval,
            timeout,
            t["fall"].as_u64().ok_or("fall")?,
            t["rise"].as_u64().ok_or("rise")?,
            t["weight"].as_i64().ok_or("weight")?,
        ));
    }
    Ok(Vip {
        realtime: vip["realtime"]
            .as_bool()
            .ok_or("hastack vip: `realtime` is not set")?,
        advert: dur(&inst["advert_interval"])?,
        priority: inst["priority"].as_u64().ok_or("priority")?,
        trackers,
    })
}

fn file<'a>(s: &'a Scenario, name: &str) -> &'a str {
    &s.files
        .iter()
        .find(|(p, _)| p.ends_with(name))
        .unwrap_or_else(|| panic!("{} writes no {name}", s.name))
        .1
}

/// The loopback pair: HAProxy's config is a file of the classic scenario, hastack proxy's
/// is the `[proxy]` section of its scenario file.
fn loopback(haproxy_cfg: &str, hastack_toml: &str) -> Result<(), String> {
    let s = common::load("classic-haproxy.toml");
    same_balancers(&haproxy(haproxy_cfg)?, &hastack_proxy(hastack_toml)?, &s)
}

/// The namespace pair: both balancers and both VRRP daemons, on each lb host.
fn namespaces(
    classic: &Scenario,
    hastack: &Scenario,
    haproxy_cfg: &str,
    watcher: &str,
) -> Result<(), String> {
    for host in ["lb1", "lb2"] {
        same_balancers(
            &haproxy(haproxy_cfg)?,
            &hastack_proxy(file(hastack, &format!("proxy-{host}.toml")))?,
            classic,
        )?;
        let k = keepalived(
            file(classic, &format!("keepalived-{host}.conf")),
            watcher,
            &format!("/run/track-{host}"),
        )?;
        let h = hastack_vip(file(hastack, &format!("vip-{host}.toml")))?;
        if k != h {
            return Err(format!(
                "{host}: the VRRP sides differ:\nkeepalived {k:#?}\nhastack vip {h:#?}"
            ));
        }
        // The watcher runs on the host, on that host's track files.
        let runs = classic.processes.iter().any(|p| {
            p.host.as_deref() == Some(host)
                && p.args.first().is_some_and(|a| a.ends_with("track.sh"))
                && p.args.get(1).map(String::as_str) == Some(&format!("/run/track-{host}"))
        });
        if !runs {
            return Err(format!("no track.sh watcher runs on {host}"));
        }
    }
    Ok(())
}

#[test]
fn the_loopback_comparison_gives_both_sides_the_same_settings() {
    let classic = common::load("classic-haproxy.toml");
    loopback(
        file(&classic, "haproxy.cfg"),
        &common::text("hastack-proxy.toml"),
    )
    .unwrap();
}

#[test]
fn the_namespace_comparison_gives_both_sides_the_same_settings() {
    let classic = common::load("netns-classic.toml");
    let hastack = common::load("netns-hastack.toml");
    namespaces(
        &classic,
        &hastack,
        file(&classic, "haproxy.cfg"),
        file(&classic, "track.sh"),
    )
    .unwrap();
}

#[test]
fn the_demo_gives_haproxy_and_hastack_proxy_the_same_settings() {
    let build = |front: &dyn demo::FrontTier| {
        let mut vars = Vars::new("/run".into(), "/run/demo".into(), "/bin/hastack".into());
        demo::build(front, &DemoOptions::default(), &mut vars).unwrap()
    };
    let ha = build(&HaproxyFront::default());
    let pair = build(&HastackProxyPair {
        hastack_exe: "/bin/hastack".into(),
    });
    assert_eq!((ha.slo, ha.load.timeout), (pair.slo, pair.load.timeout));
    let classic = haproxy(file(&ha, "haproxy.cfg")).unwrap();
    for f in ["proxy1.toml", "proxy2.toml"] {
        same_balancers(&classic, &hastack_proxy(file(&pair, f)).unwrap(), &ha).unwrap();
    }
}

/// Each weakening of one side, one at a time, makes the comparison fail: the check above can
/// fail, and names what differs.
#[test]
fn weakening_either_side_is_caught() {
    let classic = common::load("classic-haproxy.toml");
    let cfg = uncommented(file(&classic, "haproxy.cfg"));
    let hastack = common::text("hastack-proxy.toml");
    loopback(&cfg, &hastack).unwrap();
    for (from, to) in [
        ("timeout server 200ms", "timeout server 2s"),
        ("timeout check 300ms", "timeout check 1s"),
        ("timeout connect 500ms", "timeout connect 1s"),
        ("balance leastconn", "balance roundrobin"),
        (" observe layer7", ""),
        (" on-error mark-down", " on-error fastinter"),
        ("error-limit 5", "error-limit 10"),
        ("retry-on all-retryable-errors", "retry-on conn-failure"),
        ("retries 2", "retries 1"),
        ("option redispatch 1", "option redispatch"),
        ("inter 500ms fastinter", "inter 1s fastinter"),
        ("fastinter 125ms", "fastinter 500ms"),
        ("fall 2", "fall 3"),
        ("spread-checks 10", "spread-checks 0"),
        (
            "server app2 127.0.0.1:9002 check",
            "server app2 127.0.0.1:9002 check inter 2s",
        ),
    ] {
        assert!(cfg.contains(from), "{from}");
        let weak = cfg.replacen(from, to, 1);
        assert!(
            loopback(&weak, &hastack).is_err(),
            "HAProxy {from:?} -> {to:?} not caught"
        );
    }
    for (from, to) in [
        ("try_timeout = \"200ms\"", "try_timeout = \"30s\""),
        ("fall = 2\n", ""),
        ("interval = \"500ms\"", "interval = \"2s\""),
        ("attempts = 3", "attempts = 1"),
        ("consecutive_errors = 5", "consecutive_errors = 0"),
        ("jitter = 0.1", "jitter = 0.3"),
        (
            "[proxy.pools.app]\n",
            "[proxy.pools.app]\nstrategy = \"round_robin\"\n",
        ),
    ] {
        assert!(hastack.contains(from), "{from}");
        let weak = hastack.replacen(from, to, 1);
        assert!(
            loopback(&cfg, &weak).is_err(),
            "hastack {from:?} -> {to:?} not caught"
        );
    }
    // Equal but too slow for the SLO on both sides is caught too.
    let slow_cfg = cfg.replacen("timeout server 200ms", "timeout server 2s", 1);
    let slow_hastack = hastack.replacen("try_timeout = \"200ms\"", "try_timeout = \"2s\"", 1);
    let e = loopback(&slow_cfg, &slow_hastack).unwrap_err();
    assert!(e.contains("under the SLO latency"), "{e}");
}

#[test]
fn weakening_a_vrrp_side_is_caught() {
    let classic = common::load("netns-classic.toml");
    let hastack = common::load("netns-hastack.toml");
    let cfg = file(&classic, "haproxy.cfg").to_string();
    let watcher = file(&classic, "track.sh").to_string();
    namespaces(&classic, &hastack, &cfg, &watcher).unwrap();
    for (from, to) in [
        ("INTERVAL=0.1", "INTERVAL=1"),
        ("TIMEOUT=0.1", "TIMEOUT=1"),
        ("PROXY_FALL=1", "PROXY_FALL=3"),
        ("READY_RISE=2", "READY_RISE=1"),
    ] {
        let weak = watcher.replacen(from, to, 1);
        assert!(
            namespaces(&classic, &hastack, &cfg, &weak).is_err(),
            "watcher {from:?} -> {to:?} not caught"
        );
    }
    for (from, to) in [
        ("advert_int 0.02", "advert_int 1"),
        ("vrrp_rt_priority 50", "vrrp_rt_priority 1"),
        ("    vrrp_no_swap\n", ""),
        ("weight 0\n", "weight -10\n"),
        ("weight -60", "weight -20"),
    ] {
        let mut weak = classic.clone();
        for (p, content) in &mut weak.files {
            if p.ends_with("keepalived-lb1.conf") {
                assert!(content.contains(from), "{from}");
                *content = content.replacen(from, to, 1);
            }
        }
        assert!(
            namespaces(&weak, &hastack, &cfg, &watcher).is_err(),
            "keepalived {from:?} -> {to:?} not caught"
        );
    }
    let mut weak = hastack.clone();
    for (p, content) in &mut weak.files {
        if p.ends_with("vip-lb2.toml") {
            *content = content.replacen("interval = \"100ms\"", "interval = \"1s\"", 1);
        }
    }
    assert!(namespaces(&classic, &weak, &cfg, &watcher).is_err());
}

/// `hastack demo --netns` runs what netns-hastack.toml describes.
#[test]
fn the_namespace_demo_runs_the_hastack_side_of_the_comparison() {
    let hastack = common::load("netns-hastack.toml");
    let mut vars = Vars::new("/run".into(), "/run/demo".into(), "/bin/hastack".into());
    let demo = demo::build(
        &demo::VipProxyPair {
            hastack_exe: "/bin/hastack".into(),
        },
        &DemoOptions {
            netns: true,
            ..DemoOptions::default()
        },
        &mut vars,
    )
    .unwrap();
    for host in ["lb1", "lb2"] {
        let p = |s: &Scenario| hastack_proxy(file(s, &format!("proxy-{host}.toml"))).unwrap();
        assert_eq!(p(&demo), p(&hastack), "{host}");
        let v = |s: &Scenario| hastack_vip(file(s, &format!("vip-{host}.toml"))).unwrap();
        assert_eq!(v(&demo), v(&hastack), "{host}");
    }
}
