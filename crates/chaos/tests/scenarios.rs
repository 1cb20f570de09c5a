//! The shipped scenarios stay valid and keep the identical fault timeline, so that
//! `hastack chaos compare` compares like with like.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use hastack_chaos::fault::FaultAction;
use hastack_chaos::scenario::{Scenario, Vars};

type Key = Vec<(Duration, String, FaultAction, Option<Duration>)>;

fn key(s: &Scenario) -> Key {
    s.schedule
        .iter()
        .map(|f| (f.at, f.target.clone(), f.action.clone(), f.duration))
        .collect()
}

#[test]
fn classic_and_hastack_scenarios_share_topology_load_and_timeline() {
    let classic = common::load("classic-haproxy.toml");
    let hastack = common::load("hastack-proxy.toml");
    assert_eq!(key(&classic), key(&hastack));
    assert_eq!(classic.schedule.len(), 6);
    assert_eq!(classic.load.targets, hastack.load.targets);
    assert_eq!(classic.load.rate, hastack.load.rate);
    assert_eq!(classic.duration, hastack.duration);
    assert_eq!(classic.slo, hastack.slo);
    assert_eq!(classic.proxies, hastack.proxies);
    assert_eq!(classic.requires, vec!["haproxy".to_string()]);
    assert_eq!(hastack.requires, vec!["hastack proxy".to_string()]);
    let apps = |s: &Scenario| {
        s.processes
            .iter()
            .filter(|p| p.name.starts_with("app"))
            .map(|p| p.args.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(apps(&classic), apps(&hastack));
}

#[test]
fn namespace_scenarios_share_topology_load_and_the_demo_timeline() {
    let classic = common::load("netns-classic.toml");
    let hastack = common::load("netns-hastack.toml");
    assert_eq!(key(&classic), key(&hastack));
    assert_eq!(classic.netns, hastack.netns);
    let t = classic.netns.clone().unwrap();
    assert_eq!(t.hosts, ["lb1", "lb2", "web1", "web2", "web3"]);
    assert_eq!(classic.load.targets, hastack.load.targets);
    assert_eq!(classic.load.targets[0].to_string(), "10.99.0.50:80");
    assert_eq!(classic.load.rate, hastack.load.rate);
    assert_eq!(classic.slo, hastack.slo);
    assert_eq!(classic.proxies, hastack.proxies);
    // The same processes on the same hosts, except the classic side's 100 ms watchers that
    // feed keepalived's track files (one per balancer host; see equivalence.rs).
    let placed = |s: &Scenario| {
        s.processes
            .iter()
            .filter(|p| !p.name.starts_with("track"))
            .map(|p| (p.name.clone(), p.host.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(placed(&classic), placed(&hastack));
    let watchers: Vec<Option<&str>> = classic
        .processes
        .iter()
        .filter(|p| p.name.starts_with("track"))
        .map(|p| p.host.as_deref())
        .collect();
    assert_eq!(watchers, [Some("lb1"), Some("lb2")]);
    assert_eq!(
        classic.requires,
        vec!["haproxy".to_string(), "keepalived".to_string()]
    );
    // The same story as `hastack demo --netns --duration 60s`.
    let mut vars = Vars::new(
        "/run".into(),
        "/run/demo".into(),
        PathBuf::from("/bin/hastack"),
    );
    let demo = hastack_chaos::demo::build(
        &hastack_chaos::demo::VipProxyPair {
            hastack_exe: "/bin/hastack".into(),
        },
        &hastack_chaos::demo::DemoOptions {
            duration: Duration::from_secs(60),
            netns: true,
            ..Default::default()
        },
        &mut vars,
    )
    .unwrap();
    assert_eq!(key(&demo), key(&hastack));
    assert_eq!(demo.netns, hastack.netns);
}
