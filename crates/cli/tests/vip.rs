//! `hastack vip` end to end: the real binary in network namespaces (root only; these tests
//! fail loudly without root, ip or iptables, they never skip).
//!
//! Adverts every 100 ms keep the suite fast; the behaviour under test does not depend on the
//! interval. Each test builds its own testbed (unique names), so they run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use hastack_testbed::{Host, Proc, Testbed, pause, wait_until};

const VRID: u8 = 51;

fn hastack() -> &'static str {
    env!("CARGO_BIN_EXE_hastack")
}

/// One instance's config; `extra` is appended inside `[[vip.instance]]`, `global` inside
/// `[vip]`.
fn config(tb: &Testbed, host: &Host, priority: u8, global: &str, extra: &str) -> String {
    format!(
        r#"[vip]
state_dir = "{dir}/state-{label}"
admin = "127.0.0.1:9400"
{global}

[[vip.instance]]
name = "web"
interface = "eth0"
vrid = {VRID}
priority = {priority}
advert_interval = "100ms"
addresses = ["{vip}/24"]
{extra}
"#,
        dir = tb.dir().display(),
        label = host.label,
        vip = vip(tb),
    )
}

fn vip(tb: &Testbed) -> Ipv4Addr {
    tb.addr(50)
}

fn start(tb: &Testbed, host: &Host, name: &str, toml: &str) -> Proc {
    let path = tb.dir().join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    tb.spawn(
        host,
        name,
        &[
            hastack(),
            "--log",
            "hastack_vip=debug,info",
            "vip",
            "--config",
            path.to_str().unwrap(),
        ],
    )
    .unwrap()
}

/// Wait until exactly host `idx` (or nobody, for `None`) holds the VIP.
fn wait_holder(tb: &Testbed, idx: Option<usize>, timeout: Duration, logs: &[&Proc]) {
    let want: Vec<usize> = idx.into_iter().collect();
    let r = wait_until(&format!("VIP holders == {want:?}"), timeout, || {
        tb.holders(vip(tb)).unwrap() == want
    });
    if let Err(e) = r {
        let holders = tb.holders(vip(tb)).unwrap();
        let logs: Vec<String> = logs
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name(), tail(&p.log(), 60)))
            .collect();
        panic!("{e}; holders now {holders:?}\n{}", logs.join("\n"));
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `GET /status` of the daemon on `host`, as JSON.
fn status(tb: &Testbed, host: &Host) -> serde_json::Value {
    let out = tb
        .exec(
            host,
            &["curl", "-s", "-m", "2", "http://127.0.0.1:9400/status"],
        )
        .unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad status JSON {e}: {out}"))
}

/// A `Vm*` line of `/proc/PID/status`, in KiB.
fn vm_kib(p: &Proc, key: &str) -> u64 {
    let pid = p.pid().expect("running");
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    st.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status:\n{st}"))
}

fn instance(st: &serde_json::Value) -> &serde_json::Value {
    &st["vip"]["instances"][0]
}

#[test]
fn failover_on_master_death_and_preemption_back() {
    let tb = Testbed::new(2).unwrap();
    let (h1, h2) = (tb.host(0).clone(), tb.host(1).clone());
    let a = start(&tb, &h1, "a", &config(&tb, &h1, 200, "", ""));
    let b = start(&tb, &h2, "b", &config(&tb, &h2, 100, "", ""));
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&a, &b]);
    let st = status(&tb, &h2);
    assert_eq!(instance(&st)["state"], "backup", "{st}");
    assert_eq!(instance(&st)["master"], h1.ip.to_string(), "{st}");
    let metrics = tb
        .exec(
            &h1,
            &["curl", "-s", "-m", "2", "http://127.0.0.1:9400/metrics"],
        )
        .unwrap();
    // Memory locking must not make the daemon resident in full: with MCL_FUTURE alone, every
    // arena the allocator reserves was populated at mmap time (gigabytes, and a startup stall
    // of seconds before the first advert).
    let rss = vm_kib(&a, "VmRSS");
    assert!(
        rss < 128 * 1024,
        "the master daemon is resident with {rss} KiB (VmLck {} KiB)",
        vm_kib(&a, "VmLck")
    );
    for want in [
        "hastack_vip_state{instance=\"web\",state=\"master\"} 1",
        "hastack_vip_master{instance=\"web\",address=\"10.99.0.1\"} 1",
        "hastack_vip_adverts_sent_total{instance=\"web\"}",
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }

    let probe = tb.probe(vip(&tb), Duration::from_millis(10)).unwrap();
    pause(Duration::from_millis(300));
    // Hard failure: h1 falls off the network.
    let failed_at = tb.now();
    tb.link_down(&h1).unwrap();
    wait_holder(&tb, Some(1), Duration::from_secs(5), &[&a, &b]);
    pause(Duration::from_millis(300));
    let r = probe.stop().unwrap();
    assert!(
        r.replied_after(failed_at + Duration::from_millis(100)),
        "the client never reached the VIP on the backup"
    );

    // h1 comes back with the higher priority and preempts (h2 answering ARP for the VIP
    // until it hears h1 is expected, not a conflict to wait out).
    tb.link_up(&h1).unwrap();
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&a, &b]);
    assert!(!a.log().contains("keeps answering"), "{}", a.log());
    let st = status(&tb, &h2);
    assert_eq!(instance(&st)["state"], "backup", "{st}");
    tb.exec(
        tb.client(),
        &["ping", "-c", "1", "-W", "2", &vip(&tb).to_string()],
    )
    .unwrap();
}

#[test]
fn graceful_handover_and_clean_exit() {
    let tb = Testbed::new(2).unwrap();
    let (h1, h2) = (tb.host(0).clone(), tb.host(1).clone());
    let mut a = start(&tb, &h1, "a", &config(&tb, &h1, 200, "", ""));
    let b = start(&tb, &h2, "b", &config(&tb, &h2, 100, "", ""));
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&a, &b]);
    a.term().unwrap();
    // Priority 0: the backup takes over after Skew_Time, well before Master_Down_Interval.
    wait_holder(&tb, Some(1), Duration::from_secs(3), &[&a, &b]);
    assert_eq!(
        a.wait_exit(Duration::from_secs(5)).unwrap(),
        Some(0),
        "{}",
        a.log()
    );
    assert!(a.log().contains("state change"), "{}", a.log());
    let st = status(&tb, &h2);
    assert_eq!(instance(&st)["state"], "master", "{st}");
    assert_eq!(instance(&st)["last_reason"], "master_resigned", "{st}");
}

#[test]
fn frozen_master_is_fenced_before_the_backup_takes_over() {
    let tb = Testbed::new(2).unwrap();
    let (h1, h2) = (tb.host(0).clone(), tb.host(1).clone());
    let a = start(&tb, &h1, "a", &config(&tb, &h1, 200, "", ""));
    let b = start(&tb, &h2, "b", &config(&tb, &h2, 100, "", ""));
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&a, &b]);
    let watch = tb.watch_holders(vip(&tb)).unwrap();
    a.stop().unwrap();
    wait_holder(&tb, Some(1), Duration::from_secs(5), &[&a, &b]);
    pause(Duration::from_millis(500));
    let frozen = watch.stop().unwrap();
    // The guard withdrew the address from the frozen host before the backup claimed it:
    // two hosts never answered for it (keepalived: both answer until SIGCONT).
    assert_eq!(
        frozen.longest_overlap(),
        Duration::ZERO,
        "two holders while the master was frozen: {:?}",
        frozen
            .samples
            .iter()
            .filter(|(_, s)| s.len() > 1)
            .take(5)
            .collect::<Vec<_>>()
    );
    // Thawed, it steps down instead of advertising stale mastership, then preempts back
    // (it has the higher priority), with never more than one holder at a time for long.
    let watch = tb.watch_holders(vip(&tb)).unwrap();
    a.cont().unwrap();
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&a, &b]);
    pause(Duration::from_millis(300));
    let thawed = watch.stop().unwrap();
    assert!(
        thawed.longest_overlap() <= Duration::from_millis(100),
        "overlap after SIGCONT: {:?}",
        thawed.longest_overlap()
    );
    assert!(
        a.log().contains("guard") || a.log().contains("stalled"),
        "{}",
        a.log()
    );
}

#[test]
fn no_vip_leak_after_kill_9() {
    let tb = Testbed::new(2).unwrap();
    let (h1, h2) = (tb.host(0).clone(), tb.host(1).clone());
    let mut a = start(&tb, &h1, "a", &config(&tb, &h1, 200, "", ""));
    let b = start(&tb, &h2, "b", &config(&tb, &h2, 100, "", ""));
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&a, &b]);
    let watch = tb.watch_holders(vip(&tb)).unwrap();
    a.kill9().unwrap();
    // The guard sees its pipe close and withdraws the address at once, well before h2's
    // Master_Down_Interval (~360 ms) ends: the two never hold it together.
    wait_holder(&tb, Some(1), Duration::from_secs(5), &[&b]);
    pause(Duration::from_millis(200));
    let r = watch.stop().unwrap();
    assert_eq!(
        r.longest_overlap(),
        Duration::ZERO,
        "h1 kept the VIP after kill -9"
    );
    assert!(!tb.holds(&h1, vip(&tb)).unwrap());
}

#[test]
fn kernel_lease_removes_the_vip_when_every_process_is_gone() {
    let tb = Testbed::new(1).unwrap();
    let h1 = tb.host(0).clone();
    // No guard: only the kernel-side lease can clean up after SIGKILL.
    let mut a = start(
        &tb,
        &h1,
        "a",
        &config(&tb, &h1, 200, "guard = false\naddress_lease = \"2s\"", ""),
    );
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&a]);
    let out = tb
        .exec(&h1, &["ip", "-d", "addr", "show", "dev", "eth0"])
        .unwrap();
    // (iproute2 6.1 does not print IFA_PROTO; the leftover test checks the tag.)
    assert!(
        out.contains("valid_lft 2sec") || out.contains("valid_lft 1sec"),
        "{out}"
    );
    a.kill9().unwrap();
    // Lifetime 2 s, refreshed every ~670 ms, kernel sweep granularity ~1 s.
    wait_holder(&tb, None, Duration::from_secs(5), &[&a]);
}

#[test]
fn restarted_daemon_removes_leftovers_before_deciding() {
    let tb = Testbed::new(1).unwrap();
    let h1 = tb.host(0).clone();
    let cfg = config(&tb, &h1, 100, "guard = false\naddress_lease = \"0s\"", "");
    let mut a = start(&tb, &h1, "a", &cfg);
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&a]);
    a.kill9().unwrap();
    // No guard, no lease: the address is left behind...
    pause(Duration::from_millis(300));
    assert!(tb.holds(&h1, vip(&tb)).unwrap());
    // ...and a restart with the interface down (fault: it must not claim) removes it.
    tb.exec(&h1, &["ip", "link", "set", "eth0", "down"])
        .unwrap();
    let b = start(&tb, &h1, "a2", &cfg);
    wait_holder(&tb, None, Duration::from_secs(5), &[&b]);
    assert!(b.log().contains("left by a previous run"), "{}", b.log());
}

#[test]
fn witness_prevents_two_holders_under_one_way_loss() {
    let tb = Testbed::new(3).unwrap();
    let (h1, h2, h3) = (tb.host(0).clone(), tb.host(1).clone(), tb.host(2).clone());
    let witness = format!("witness = [\"{}:5599\"]", h3.ip);
    let w = start(
        &tb,
        &h3,
        "w",
        &format!(
            "[vip]\nwitness_listen = \"{}:5599\"\nwitness_interface = \"eth0\"\n",
            h3.ip
        ),
    );
    let a = start(&tb, &h1, "a", &config(&tb, &h1, 200, "", &witness));
    let b = start(&tb, &h2, "b", &config(&tb, &h2, 100, "", &witness));
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&a, &b, &w]);
    // h2 stops hearing h1's adverts; h1 still hears h2 and serves the clients.
    tb.block_from(&h1, &h2, Some(112)).unwrap();
    let watch = tb.watch_holders(vip(&tb)).unwrap();
    pause(Duration::from_secs(3));
    let r = watch.stop().unwrap();
    assert_eq!(
        r.max_holders(),
        1,
        "two holders under one-way loss despite the witness\n{}",
        tail(&b.log(), 40)
    );
    assert_eq!(r.last().into_iter().collect::<Vec<_>>(), vec![0]);
    assert!(b.log().contains("claim denied"), "{}", tail(&b.log(), 40));
    // When h1 really dies, the witness stops hearing it and h2 takes over.
    tb.link_down(&h1).unwrap();
    wait_holder(&tb, Some(1), Duration::from_secs(5), &[&a, &b, &w]);
}

#[test]
fn forged_adverts_are_rejected_with_hmac() {
    let tb = Testbed::new(3).unwrap();
    let (h1, h2, h3) = (tb.host(0).clone(), tb.host(1).clone(), tb.host(2).clone());
    let key = "[vip.instance.auth]\nkey = \"correct horse battery staple\"";
    let a = start(&tb, &h1, "a", &config(&tb, &h1, 100, "", key));
    let b = start(&tb, &h2, "b", &config(&tb, &h2, 50, "", key));
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&a, &b]);
    let watch = tb.watch_holders(vip(&tb)).unwrap();
    // Attackers on the LAN: one with a wrong key, one unsigned, both with priority 254.
    let wrong = "[vip.instance.auth]\nkey = \"not the right key, sorry\"";
    let m1 = start(
        &tb,
        &h3,
        "mallory",
        &config(
            &tb,
            &h3,
            254,
            "guard = false",
            &format!("arp_probe = false\n{wrong}"),
        ),
    );
    // Wait until h1 has actually seen (and rejected) the forgeries, rather than hoping a
    // fixed pause was long enough for the attacker to start advertising.
    wait_rejected(&tb, &h1, "bad_mac", Duration::from_secs(15));
    drop(m1);
    let m2 = start(
        &tb,
        &h3,
        "mallory2",
        &config(&tb, &h3, 254, "guard = false", "arp_probe = false"),
    );
    wait_rejected(&tb, &h1, "unsigned", Duration::from_secs(15));
    drop(m2);
    let r = watch.stop().unwrap();
    // h1 never gave the address up, and h2 never claimed it.
    assert!(
        r.samples
            .iter()
            .all(|(_, s)| s.contains(&0) && !s.contains(&1)),
        "forged adverts moved the VIP\n{}",
        tail(&a.log(), 30)
    );
    let st = status(&tb, &h1);
    let rej = &instance(&st)["adverts_rejected"];
    assert!(rej["bad_mac"].as_u64().unwrap_or(0) > 0, "{st}");
    assert!(rej["unsigned"].as_u64().unwrap_or(0) > 0, "{st}");
    assert_eq!(instance(&st)["state"], "master", "{st}");
    let st = status(&tb, &h2);
    assert_eq!(instance(&st)["state"], "backup", "{st}");
    assert!(
        instance(&st)["adverts_received"].as_u64().unwrap() > 0,
        "{st}"
    );
}

/// Poll `host`'s status until its `adverts_rejected[kind]` counter is positive.
fn wait_rejected(tb: &Testbed, host: &Host, kind: &str, timeout: Duration) {
    let rejected = || {
        instance(&status(tb, host))["adverts_rejected"][kind]
            .as_u64()
            .unwrap_or(0)
    };
    if wait_until(&format!("a {kind} advert to be rejected"), timeout, || {
        rejected() > 0
    })
    .is_err()
    {
        panic!(
            "no {kind} advert rejected within {timeout:?}: {}",
            status(tb, host)
        );
    }
}

#[test]
fn tracker_failure_lowers_priority_and_moves_the_vip() {
    let tb = Testbed::new(2).unwrap();
    let (h1, h2) = (tb.host(0).clone(), tb.host(1).clone());
    let flag = tb.dir().join("healthy");
    std::fs::write(&flag, "").unwrap();
    let track = format!(
        "[[vip.instance.track]]\nkind = \"command\"\ncommand = [\"test\", \"-e\", \"{}\"]\nweight = 150\ninterval = \"100ms\"",
        flag.display()
    );
    let notify_log = tb.dir().join("notify.log");
    let notify = format!(
        "notify = [\"sh\", \"-c\", \"echo \\\"$1 $2 $3\\\" >> {}\", \"notify\"]",
        notify_log.display()
    );
    let a = start(
        &tb,
        &h1,
        "a",
        &config(&tb, &h1, 200, "", &format!("{notify}\n{track}")),
    );
    let b = start(&tb, &h2, "b", &config(&tb, &h2, 100, "", ""));
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&a, &b]);
    std::fs::remove_file(&flag).unwrap();
    // 200 - 150 = 50 < 100: h2 preempts.
    wait_holder(&tb, Some(1), Duration::from_secs(5), &[&a, &b]);
    assert_eq!(instance(&status(&tb, &h1))["priority"], 50);
    std::fs::write(&flag, "").unwrap();
    wait_holder(&tb, Some(0), Duration::from_secs(5), &[&a, &b]);
    wait_until("notify hooks", Duration::from_secs(3), || {
        std::fs::read_to_string(&notify_log).is_ok_and(|s| s.contains("web backup 50"))
    })
    .unwrap();
    let n = std::fs::read_to_string(&notify_log).unwrap();
    assert!(n.contains("web master 200"), "{n}");
}

#[test]
fn check_warns_about_a_weight_that_cannot_fail_over() {
    let dir = std::env::temp_dir().join(format!("hastack-vip-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vip.toml");
    std::fs::write(
        &path,
        "[vip]\n[[vip.instance]]\nname = \"web\"\ninterface = \"eth0\"\nvrid = 51\npriority = 150\naddresses = [\"10.0.0.50/24\"]\npeer_priorities = [100]\n\n[[vip.instance.track]]\nkind = \"tcp\"\ntarget = \"127.0.0.1:80\"\nweight = 20\n",
    )
    .unwrap();
    let out = std::process::Command::new(hastack())
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("vip.toml:13:1: warning"), "{err}");
    assert!(err.contains("can never cause a failover"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("vip: web (eth0 vrid 51"));
    // And a broken one fails with located errors.
    std::fs::write(
        &path,
        "[vip]\n[[vip.instance]]\nname = \"web\"\ninterface = \"eth0\"\nvrid = 300\naddresses = []\n",
    )
    .unwrap();
    let out = std::process::Command::new(hastack())
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("vip.toml:5:1: error: vip.instance[0].vrid"),
        "{err}"
    );
    assert!(err.contains("addresses is empty"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_capabilities_are_named() {
    hastack_testbed::preflight().expect("this test drops capabilities, so it must start as root");
    let dir = std::env::temp_dir().join(format!("hastack-vip-caps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vip.toml");
    std::fs::write(
        &path,
        "[vip]\n[[vip.instance]]\nname = \"web\"\ninterface = \"lo\"\nvrid = 51\naddresses = [\"10.0.0.50/24\"]\n",
    )
    .unwrap();
    // Root without CAP_NET_ADMIN/CAP_NET_RAW in its bounding set.
    let out = std::process::Command::new("setpriv")
        .args([
            "--bounding-set=-net_admin,-net_raw",
            hastack(),
            "vip",
            "--config",
            path.to_str().unwrap(),
        ])
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("missing: CAP_NET_ADMIN, CAP_NET_RAW"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unicast_peers_work_without_multicast() {
    let tb = Testbed::new(2).unwrap();
    let (h1, h2) = (tb.host(0).clone(), tb.host(1).clone());
    // Multicast adverts are dropped everywhere: only unicast can keep the group together.
    for h in [&h1, &h2] {
        tb.iptables(h, &["-A", "INPUT", "-d", "224.0.0.18", "-j", "DROP"])
            .unwrap();
    }
    let peers = |p: &Host| format!("unicast_peers = [\"{}\"]", p.ip);
    let mut a = start(&tb, &h1, "a", &config(&tb, &h1, 200, "", &peers(&h2)));
    let b = start(&tb, &h2, "b", &config(&tb, &h2, 100, "", &peers(&h1)));
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&a, &b]);
    let watch = tb.watch_holders(vip(&tb)).unwrap();
    pause(Duration::from_secs(1));
    assert_eq!(watch.stop().unwrap().max_holders(), 1, "{}", b.log());
    assert_eq!(instance(&status(&tb, &h2))["master"], h1.ip.to_string());
    a.kill9().unwrap();
    wait_holder(&tb, Some(1), Duration::from_secs(5), &[&b]);
}

#[test]
fn arp_conflict_delays_the_claim_then_is_resolved_with_garp() {
    let tb = Testbed::new(2).unwrap();
    let (h1, h2) = (tb.host(0).clone(), tb.host(1).clone());
    // A host that answers for the VIP without speaking VRRP (a misconfigured box, or a
    // master we cannot hear).
    let cidr = format!("{}/24", vip(&tb));
    tb.exec(&h2, &["ip", "addr", "add", &cidr, "dev", "eth0"])
        .unwrap();
    let a = start(&tb, &h1, "a", &config(&tb, &h1, 100, "", ""));
    // The probe hears h2: no claim at the first Master_Down_Interval (~360 ms)...
    pause(Duration::from_millis(500));
    assert_eq!(tb.holders(vip(&tb)).unwrap(), vec![1], "{}", a.log());
    // ...but a holder that never advertises is not waited for forever (2 x MDI).
    wait_until(
        "h1 to claim despite the conflict",
        Duration::from_secs(5),
        || tb.holds(&h1, vip(&tb)).unwrap(),
    )
    .unwrap();
    assert!(a.log().contains("in use elsewhere"), "{}", a.log());
    assert!(a.log().contains("taking it over"), "{}", a.log());
    // The intruder goes away; h1 re-announces and the client's ARP entry points at h1.
    tb.exec(&h2, &["ip", "addr", "del", &cidr, "dev", "eth0"])
        .unwrap();
    wait_until("conflict over", Duration::from_secs(5), || {
        a.log().contains("conflict over")
    })
    .unwrap();
    tb.exec(
        tb.client(),
        &["ping", "-c", "1", "-W", "2", &vip(&tb).to_string()],
    )
    .unwrap();
    let h1_mac = tb
        .exec(&h1, &["cat", "/sys/class/net/eth0/address"])
        .unwrap();
    let neigh = tb
        .exec(tb.client(), &["ip", "neigh", "show", &vip(&tb).to_string()])
        .unwrap();
    assert!(
        neigh.contains(h1_mac.trim()),
        "client ARP entry {neigh:?} does not point at h1 ({})",
        h1_mac.trim()
    );
}

#[test]
fn a_killed_guard_is_restarted_and_still_fences() {
    let tb = Testbed::new(2).unwrap();
    let (h1, h2) = (tb.host(0).clone(), tb.host(1).clone());
    let a = start(&tb, &h1, "a", &config(&tb, &h1, 200, "", ""));
    let b = start(&tb, &h2, "b", &config(&tb, &h2, 100, "", ""));
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&a, &b]);
    let pid = a.pid().unwrap();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let guard: i32 = children
        .split_whitespace()
        .next()
        .expect("the daemon has a guard child")
        .parse()
        .unwrap();
    tb.exec(&h1, &["kill", "-9", &guard.to_string()]).unwrap();
    wait_until("the guard to be restarted", Duration::from_secs(5), || {
        a.log().contains("guard restarted")
    })
    .unwrap();
    // The new guard knows we hold the VIP: freezing the daemon still withdraws it first.
    assert_eq!(tb.holders(vip(&tb)).unwrap(), vec![0], "{}", a.log());
    let watch = tb.watch_holders(vip(&tb)).unwrap();
    a.stop().unwrap();
    wait_holder(&tb, Some(1), Duration::from_secs(5), &[&a, &b]);
    pause(Duration::from_millis(300));
    let r = watch.stop().unwrap();
    a.cont().unwrap();
    assert_eq!(r.longest_overlap(), Duration::ZERO, "{}", a.log());
}
