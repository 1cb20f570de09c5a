//! Client-observed outage of `hastack vip` vs keepalived on the same namespace topology, and
//! spurious transitions under CPU stress. Driven by `bench/vip.sh` (root; needs keepalived
//! and stress-ng). Prints a Markdown section on stdout.
//!
//! Method: two hosts and a client on one bridge (hastack-testbed). Host 1 (priority 200) is
//! master, host 2 (priority 100) backup. The client pings the VIP every 2 ms; the outage is
//! the largest gap between replies around the fault (ping-style gap, not lost sequence
//! numbers). Faults: "hard" = host 1's bridge port goes down; "graceful" = SIGTERM to host
//! 1's daemon (both implementations then advertise priority 0). Runs are interleaved
//! (hastack, keepalived, hastack, ...) and medians reported.
//!
//! Stress: with both daemons running, 8 CPU busy loops (`stress-ng --cpu 8`) for N seconds;
//! every state change logged by either daemon during that window is a spurious transition.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark program reporting to the terminal"
)]

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use hastack_testbed::{Host, Proc, Testbed, pause, wait_until};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Impl {
    Hastack,
    Keepalived,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Hastack => "hastack",
            Impl::Keepalived => "keepalived",
        }
    }
}

struct Opts {
    hastack: String,
    intervals: Vec<u64>,
    repeats: usize,
    stress_secs: u64,
    stress_intervals: Vec<u64>,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        hastack: "target/release/hastack".into(),
        intervals: vec![1000, 100, 20, 10],
        repeats: 3,
        stress_secs: 20,
        stress_intervals: vec![20, 10],
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let list = |s: &str| {
        s.split(',')
            .filter(|x| !x.trim().is_empty() && x.trim() != "none")
            .map(|x| x.trim().parse().unwrap())
            .collect()
    };
    let mut i = 0;
    while i + 1 < args.len() {
        let v = &args[i + 1];
        match args[i].as_str() {
            "--hastack" => o.hastack.clone_from(v),
            "--intervals" => o.intervals = list(v),
            "--repeats" => o.repeats = v.parse().unwrap(),
            "--stress-secs" => o.stress_secs = v.parse().unwrap(),
            "--stress-intervals" => o.stress_intervals = list(v),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    o
}

const VRID: u8 = 71;

/// The client's ICMP probe interval: the outage's resolution (2 ms, so that differences of a
/// few ms at 10-20 ms adverts are not lost in the quantization).
const PROBE_EVERY: Duration = Duration::from_millis(2);

fn vip(tb: &Testbed) -> Ipv4Addr {
    tb.addr(70)
}

fn start(tb: &Testbed, o: &Opts, which: Impl, host: &Host, prio: u8, ms: u64) -> Proc {
    let name = format!("{}-{}", which.name(), host.label);
    match which {
        Impl::Hastack => {
            let toml = format!(
                "[vip]\nstate_dir = \"{dir}/state-{name}\"\n\n[[vip.instance]]\nname = \"bench\"\ninterface = \"eth0\"\nvrid = {VRID}\npriority = {prio}\nadvert_interval = \"{ms}ms\"\naddresses = [\"{vip}/24\"]\n",
                dir = tb.dir().display(),
                vip = vip(tb)
            );
            let path = tb.dir().join(format!("{name}.toml"));
            std::fs::write(&path, toml).unwrap();
            tb.spawn(
                host,
                &name,
                &[&o.hastack, "vip", "--config", path.to_str().unwrap()],
            )
            .unwrap()
        }
        Impl::Keepalived => {
            let advert = format!("{}", ms as f64 / 1000.0);
            let conf = format!(
                "global_defs {{\n  router_id {name}\n  vrrp_version 3\n  vrrp_garp_master_delay 1\n}}\nvrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {VRID}\n  priority {prio}\n  advert_int {advert}\n  virtual_ipaddress {{\n    {vip}/24 dev eth0\n  }}\n}}\n",
                vip = vip(tb)
            );
            let d = tb.dir();
            let path = d.join(format!("{name}.conf"));
            std::fs::write(&path, conf).unwrap();
            let p1 = d.join(format!("{name}.pid"));
            let p2 = d.join(format!("{name}_vrrp.pid"));
            tb.spawn(
                host,
                &name,
                &[
                    "keepalived",
                    "-n",
                    "-l",
                    "-D",
                    "-P",
                    "-f",
                    path.to_str().unwrap(),
                    "-p",
                    p1.to_str().unwrap(),
                    "-r",
                    p2.to_str().unwrap(),
                ],
            )
            .unwrap()
        }
    }
}

fn transitions(which: Impl, log: &str) -> usize {
    log.lines()
        .filter(|l| match which {
            Impl::Hastack => l.contains("state change"),
            Impl::Keepalived => {
                l.contains("Entering MASTER STATE")
                    || l.contains("Entering BACKUP STATE")
                    || l.contains("Entering FAULT STATE")
            }
        })
        .count()
}

/// One failover; the client-observed outage.
fn outage(o: &Opts, which: Impl, ms: u64, graceful: bool) -> Option<Duration> {
    let tb = Testbed::new(2).unwrap();
    let (h1, h2) = (tb.host(0).clone(), tb.host(1).clone());
    let a = start(&tb, o, which, &h1, 200, ms);
    let settle = Duration::from_millis((ms * 5).max(300));
    let first = Duration::from_millis(ms * 4 + 10_000);
    if wait_until("h1 master", first, || {
        tb.holders(vip(&tb)).unwrap() == vec![0]
    })
    .is_err()
    {
        eprintln!(
            "{} {ms}ms: h1 never became master\n{}",
            which.name(),
            a.log()
        );
        return None;
    }
    let b = start(&tb, o, which, &h2, 100, ms);
    pause(settle);
    let probe = tb.probe(vip(&tb), PROBE_EVERY).unwrap();
    pause(settle);
    let t = tb.now();
    if graceful {
        a.term().unwrap();
    } else {
        tb.link_down(&h1).unwrap();
    }
    let ok = wait_until("h2 master", Duration::from_secs(15), || {
        tb.holders(vip(&tb)).unwrap() == vec![1]
    });
    pause(settle);
    let r = probe.stop().unwrap();
    if ok.is_err() || !r.replied_after(t) {
        eprintln!(
            "{} {ms}ms graceful={graceful}: no failover\n{}\n{}",
            which.name(),
            a.log(),
            b.log()
        );
        return None;
    }
    drop((a, b));
    Some(r.largest_gap_after(t))
}

/// Spurious transitions of a stable pair under `stress-ng --cpu 8`.
fn stress(o: &Opts, which: Impl, ms: u64) -> Option<usize> {
    let tb = Testbed::new(2).unwrap();
    let (h1, h2) = (tb.host(0).clone(), tb.host(1).clone());
    let a = start(&tb, o, which, &h1, 200, ms);
    if wait_until("h1 master", Duration::from_secs(10), || {
        tb.holders(vip(&tb)).unwrap() == vec![0]
    })
    .is_err()
    {
        return None;
    }
    let b = start(&tb, o, which, &h2, 100, ms);
    pause(Duration::from_secs(1));
    let before = transitions(which, &a.log()) + transitions(which, &b.log());
    let mut s = Command::new("stress-ng")
        .args(["--cpu", "8", "--timeout", &format!("{}s", o.stress_secs)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stress-ng (apt-get install -y stress-ng)");
    pause(Duration::from_secs(o.stress_secs));
    let _ = s.wait();
    pause(Duration::from_millis(200));
    let after = transitions(which, &a.log()) + transitions(which, &b.log());
    if std::env::var_os("VIP_BENCH_LOGS").is_some() {
        eprintln!(
            "--- {} h1 ---\n{}\n--- h2 ---\n{}",
            which.name(),
            a.log(),
            b.log()
        );
    }
    Some(after - before)
}

fn median(v: &mut [Duration]) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    Some(v[v.len() / 2])
}

fn fmt_ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    })
}

fn steal() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    (f.get(7).copied().unwrap_or(0), f.iter().sum())
}

fn main() {
    let o = parse_args();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let (s0, t0) = steal();
    let mut rows = Vec::new();
    for &ms in &o.intervals {
        for (graceful, label) in [
            (false, "hard (bridge port down)"),
            (true, "graceful (SIGTERM)"),
        ] {
            let mut res = [Vec::new(), Vec::new()];
            for rep in 0..o.repeats {
                for (k, which) in [Impl::Hastack, Impl::Keepalived].into_iter().enumerate() {
                    if let Some(d) = outage(&o, which, ms, graceful) {
                        eprintln!("{ms} ms {label} {} #{rep}: {:?}", which.name(), d);
                        res[k].push(d);
                    }
                }
            }
            let (nh, nk) = (res[0].len(), res[1].len());
            let h = median(&mut res[0]);
            let k = median(&mut res[1]);
            let ratio = match (h, k) {
                (Some(h), Some(k)) if !k.is_zero() => {
                    format!("{:.2}", h.as_secs_f64() / k.as_secs_f64())
                }
                _ => "-".into(),
            };
            rows.push(format!(
                "| {ms} ms | {label} | {} ({nh}) | {} ({nk}) | {ratio} |",
                fmt_ms(h),
                fmt_ms(k)
            ));
        }
    }
    let mut srows = Vec::new();
    for &ms in &o.stress_intervals {
        let h = stress(&o, Impl::Hastack, ms);
        let k = stress(&o, Impl::Keepalived, ms);
        let f = |x: Option<usize>| x.map_or("-".into(), |n| n.to_string());
        eprintln!("stress {ms} ms: hastack {h:?} keepalived {k:?}");
        srows.push(format!("| {ms} ms | {} | {} |", f(h), f(k)));
    }
    let (s1, t1) = steal();
    let steal_pct = if t1 > t0 {
        100.0 * (s1 - s0) as f64 / (t1 - t0) as f64
    } else {
        0.0
    };
    println!(
        "Client-observed outage (largest gap between ping replies, one ping every 2 ms), median of runs (runs in brackets), priority 200 master vs 100 backup, VRRPv3, same namespace topology:\n"
    );
    println!("| advert | failure | hastack vip | keepalived 2.2 | hastack / keepalived |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!(
        "\nSpurious transitions of a stable pair during {} s of `stress-ng --cpu 8` (2 cores):\n",
        o.stress_secs
    );
    println!("| advert | hastack vip | keepalived 2.2 |");
    println!("|---|---|---|");
    for r in srows {
        println!("{r}");
    }
    println!(
        "\nNotes: the fault is injected a whole number of settle periods after the master started, i.e. just after one of its adverts, so a hard failure costs close to the full Master_Down_Interval (3 x advert + Skew_Time; Skew_Time is 61% of an advert for the priority-100 backup); a graceful stop costs about Skew_Time. Both daemons see the same timing. hastack runs with its defaults (guard, ARP probe started ahead of the down timer, SCHED_RR); keepalived with the Debian defaults."
    );
    println!(
        "\nMachine: {} CPUs, load average at start `{}`, CPU steal during the run {steal_pct:.1}% (a load average well above 0 means a shared machine: treat the figures as provisional).",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        load.trim()
    );
}
