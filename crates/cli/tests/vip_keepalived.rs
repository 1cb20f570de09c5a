//! Interop: `hastack vip` and Debian's keepalived (2.2.x) in one VRRPv3 group, failing over in
//! both directions. Root only; needs the `keepalived` package (fails loudly without it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use hastack_testbed::{Host, Proc, Testbed, pause, wait_until, which};

const VRID: u8 = 61;

fn vip(tb: &Testbed) -> Ipv4Addr {
    tb.addr(60)
}

fn start_hastack(tb: &Testbed, host: &Host, name: &str, priority: u8) -> Proc {
    start_hastack_v(tb, host, name, priority, 3, "100ms")
}

fn start_hastack_v(
    tb: &Testbed,
    host: &Host,
    name: &str,
    priority: u8,
    version: u8,
    interval: &str,
) -> Proc {
    let toml = format!(
        r#"[vip]
state_dir = "{dir}/state-{name}"

[[vip.instance]]
name = "web"
interface = "eth0"
vrid = {VRID}
priority = {priority}
advert_interval = "{interval}"
version = {version}
addresses = ["{vip}/24"]
"#,
        dir = tb.dir().display(),
        vip = vip(tb),
    );
    let path = tb.dir().join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    tb.spawn(
        host,
        name,
        &[
            env!("CARGO_BIN_EXE_hastack"),
            "--log",
            "hastack_vip=debug,info",
            "vip",
            "--config",
            path.to_str().unwrap(),
        ],
    )
    .unwrap()
}

fn start_keepalived(tb: &Testbed, host: &Host, name: &str, priority: u8) -> Proc {
    start_keepalived_v(tb, host, name, priority, 3, "0.1")
}

fn start_keepalived_v(
    tb: &Testbed,
    host: &Host,
    name: &str,
    priority: u8,
    version: u8,
    advert: &str,
) -> Proc {
    let conf = format!(
        r#"global_defs {{
  router_id {name}
  vrrp_version {version}
  vrrp_garp_master_delay 1
  script_user root
  enable_script_security
}}
vrrp_instance VI_1 {{
  state BACKUP
  interface eth0
  virtual_router_id {VRID}
  priority {priority}
  advert_int {advert}
  virtual_ipaddress {{
    {vip}/24 dev eth0
  }}
}}
"#,
        vip = vip(tb)
    );
    let d = tb.dir();
    let path = d.join(format!("{name}.conf"));
    std::fs::write(&path, conf).unwrap();
    let pid = d.join(format!("{name}.pid"));
    let vpid = d.join(format!("{name}_vrrp.pid"));
    tb.spawn(
        host,
        name,
        &[
            "keepalived",
            "-n",
            "-l",
            "-D",
            "-P",
            "-f",
            path.to_str().unwrap(),
            "-p",
            pid.to_str().unwrap(),
            "-r",
            vpid.to_str().unwrap(),
        ],
    )
    .unwrap()
}

fn wait_holder(tb: &Testbed, idx: Option<usize>, timeout: Duration, logs: &[&Proc]) {
    let want: Vec<usize> = idx.into_iter().collect();
    if let Err(e) = wait_until(&format!("VIP holders == {want:?}"), timeout, || {
        tb.holders(vip(tb)).unwrap() == want
    }) {
        let holders = tb.holders(vip(tb)).unwrap();
        let logs: Vec<String> = logs
            .iter()
            .map(|p| {
                let l = p.log();
                let lines: Vec<&str> = l.lines().collect();
                format!(
                    "--- {} ---\n{}",
                    p.name(),
                    lines[lines.len().saturating_sub(40)..].join("\n")
                )
            })
            .collect();
        panic!("{e}; holders now {holders:?}\n{}", logs.join("\n"));
    }
}

#[test]
fn interop_with_keepalived_both_directions() {
    assert!(
        which("keepalived").is_some(),
        "keepalived is not installed: apt-get install -y keepalived (the interop test needs the real peer)"
    );
    let tb = Testbed::new(2).unwrap();
    let (h1, h2) = (tb.host(0).clone(), tb.host(1).clone());

    // Phase 1: hastack (200) is master, keepalived (150) accepts our adverts and stays backup.
    let mut hs = start_hastack(&tb, &h2, "hastack", 200);
    let ka = start_keepalived(&tb, &h1, "ka", 150);
    wait_holder(&tb, Some(1), Duration::from_secs(10), &[&hs, &ka]);
    let watch = tb.watch_holders(vip(&tb)).unwrap();
    pause(Duration::from_secs(1));
    let r = watch.stop().unwrap();
    assert_eq!(
        r.max_holders(),
        1,
        "keepalived did not accept hastack's adverts"
    );

    // hastack -> keepalived, hard failure: hastack's host falls off the network.
    tb.link_down(&h2).unwrap();
    wait_holder(&tb, Some(0), Duration::from_secs(5), &[&hs, &ka]);
    // hastack comes back and preempts: keepalived yields to our higher priority.
    tb.link_up(&h2).unwrap();
    wait_holder(&tb, Some(1), Duration::from_secs(10), &[&hs, &ka]);

    // hastack -> keepalived, graceful: SIGTERM sends priority 0.
    hs.term().unwrap();
    wait_holder(&tb, Some(0), Duration::from_secs(3), &[&hs, &ka]);
    assert_eq!(hs.wait_exit(Duration::from_secs(5)).unwrap(), Some(0));

    // Phase 2: hastack (100) joins as backup of keepalived (150): it hears keepalived's
    // adverts and does not claim...
    let hs2 = start_hastack(&tb, &h2, "hastack2", 100);
    let watch = tb.watch_holders(vip(&tb)).unwrap();
    pause(Duration::from_secs(1));
    let r = watch.stop().unwrap();
    assert_eq!(
        r.max_holders(),
        1,
        "hastack did not accept keepalived's adverts\n{}",
        hs2.log()
    );
    assert_eq!(r.last().into_iter().collect::<Vec<_>>(), vec![0]);
    // ...keepalived -> hastack: keepalived's host falls off the network.
    tb.link_down(&h1).unwrap();
    wait_holder(&tb, Some(1), Duration::from_secs(5), &[&hs2, &ka]);
    let probe_ok = tb.exec(
        tb.client(),
        &["ping", "-c", "1", "-W", "2", &vip(&tb).to_string()],
    );
    assert!(probe_ok.is_ok(), "client cannot reach the VIP on hastack");
    // keepalived -> hastack, graceful: bring keepalived back (it preempts), then stop it.
    tb.link_up(&h1).unwrap();
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&hs2, &ka]);
    ka.term().unwrap();
    wait_holder(&tb, Some(1), Duration::from_secs(3), &[&hs2, &ka]);
}

#[test]
fn interop_with_keepalived_vrrp_v2() {
    assert!(
        which("keepalived").is_some(),
        "keepalived is not installed: apt-get install -y keepalived"
    );
    let tb = Testbed::new(2).unwrap();
    let (h1, h2) = (tb.host(0).clone(), tb.host(1).clone());
    // VRRPv2 counts whole seconds: 1 s adverts, Master_Down_Interval ~3.6 s.
    let ka = start_keepalived_v(&tb, &h1, "ka", 150, 2, "1");
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&ka]);
    let hs = start_hastack_v(&tb, &h2, "hastack", 100, 2, "1s");
    let watch = tb.watch_holders(vip(&tb)).unwrap();
    pause(Duration::from_secs(4));
    let r = watch.stop().unwrap();
    assert_eq!(
        r.max_holders(),
        1,
        "hastack did not accept keepalived's v2 adverts\n{}",
        hs.log()
    );
    tb.link_down(&h1).unwrap();
    wait_holder(&tb, Some(1), Duration::from_secs(8), &[&hs, &ka]);
    // keepalived comes back, accepts our v2 adverts, and preempts with its higher priority.
    tb.link_up(&h1).unwrap();
    wait_holder(&tb, Some(0), Duration::from_secs(10), &[&hs, &ka]);
}
