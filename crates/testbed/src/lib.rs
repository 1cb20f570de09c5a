//! Network-namespace test beds: several "hosts" on one Ethernet segment, on one machine.
//!
//! A [`Testbed`] builds, per run:
//!
//! * a switch namespace holding a Linux bridge (`br0`, IGMP snooping off),
//! * `N` host namespaces and one client namespace, each with `lo` up and an `eth0` (one end of
//!   a veth pair whose other end, `pN`/`pc`, is a port of the bridge), addressed in a private
//!   /24 (`10.99.0.0/24` by default: hosts `.1`..`.N`, client `.100`).
//!
//! Everything is created *inside* namespaces that belong to the run, so the only global names
//! are the namespace names themselves; they carry a per-process, per-testbed prefix
//! (`hstb-<pid>-<n>-`), so tests can run in parallel threads of one `cargo test` process and
//! in parallel processes. The root namespace and the host's own firewall are never touched.
//!
//! What it offers (see each type):
//!
//! * [`Testbed::spawn`]: run a process inside a host namespace ([`Proc`], killed on drop),
//!   with [`Proc::kill9`], [`Proc::stop`] (SIGSTOP), [`Proc::cont`], [`Proc::term`].
//! * Faults: [`Testbed::link_down`] / [`Testbed::link_up`] (the host's bridge port),
//!   [`Testbed::drop_proto`] (one-way iptables drops, e.g. VRRP = protocol 112),
//!   [`Testbed::partition`] (symmetric A<->B), [`Testbed::block_from`] (one-way A->B),
//!   [`Testbed::partition_groups`], [`Testbed::isolate`], [`Testbed::heal`].
//! * Measurement: [`Testbed::probe`] pings an address from the client every ~10 ms and records
//!   reply times ([`ProbeReport::largest_gap`] = client-visible outage);
//!   [`Testbed::watch_holders`] samples which hosts currently own an address (to prove "never
//!   two holders").
//! * Cleanup: [`Drop`] deletes every namespace of the testbed (processes first), and
//!   [`sweep_stale`] (called by [`Testbed::new`]) deletes namespaces left by crashed runs whose
//!   process no longer exists.
//!
//! It fails loudly: without root, or without `ip`/`iptables`, [`Testbed::new`] returns an
//! error naming the missing privilege or tool (and the Debian package). It never skips.
//!
//! What it deliberately does not do: latency/jitter injection (the kernel here has no `netem`;
//! use a userspace proxy), and anything in the root namespace.
//!
//! The API is synchronous (plain threads): tests and benchmarks drive it from ordinary
//! `#[test]` functions, never from an async runtime thread.
//!
//! ```no_run
//! use std::time::Duration;
//! use hastack_testbed::{Direction, Testbed, pause};
//!
//! # fn main() -> Result<(), hastack_testbed::TestbedError> {
//! let tb = Testbed::new(2)?; // h1 = 10.99.0.1, h2 = 10.99.0.2, client = 10.99.0.100
//! let (h1, h2) = (tb.host(0).clone(), tb.host(1).clone());
//! let server = tb.spawn(&h1, "server", &["hastack", "app", "--listen", "10.99.0.1:8080"])?;
//! let probe = tb.probe(h1.ip, Duration::from_millis(10))?;
//! tb.drop_proto(&h2, Direction::In, 112)?; // one-way loss of VRRP into h2
//! tb.partition(&h1, &h2)?;                 // symmetric partition
//! tb.link_down(&h1)?;                      // h1 off the network
//! pause(Duration::from_millis(500));
//! tb.heal()?;                              // rules flushed, ports up
//! server.stop()?;                          // SIGSTOP (and cont(), term(), kill9())
//! let outage = probe.stop()?.largest_gap();
//! println!("client saw {outage:?} without replies; logs in {}", tb.dir().display());
//! # Ok(()) }
//! ```
//! (Everything is removed when `tb` goes out of scope.)

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

/// Errors of the testbed. Each names what is missing or what failed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// Not running as root.
    #[error(
        "hastack-testbed needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN to create network namespaces, veths and iptables rules); run the tests as root (CI does). Refusing to skip."
    )]
    NotRoot,
    /// A required tool is not installed.
    #[error(
        "hastack-testbed needs `{tool}`, which is not on PATH: install the Debian package `{package}` (apt-get install -y {package})"
    )]
    MissingTool {
        /// The executable.
        tool: &'static str,
        /// The Debian package providing it.
        package: &'static str,
    },
    /// A setup or fault command failed.
    #[error("command `{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A wait ran out.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// An OS-level error.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Result alias.
pub type Result<T, E = TestbedError> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestbedError {
    let context = context.into();
    move |source| TestbedError::Io { context, source }
}

/// Prefix of every namespace a testbed creates; [`sweep_stale`] only ever touches these.
pub const NS_PREFIX: &str = "hstb-";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Block the calling (plain, non-runtime) thread.
#[allow(
    clippy::disallowed_methods,
    reason = "the testbed is a synchronous harness driven from plain test threads, never from a runtime thread"
)]
pub fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// Poll `cond` every 10 ms until it returns true or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(TestbedError::Timeout {
                what: what.to_string(),
                after: timeout,
            });
        }
        pause(Duration::from_millis(10));
    }
}

/// One namespace of the testbed: a host, or the client.
#[derive(Debug, Clone)]
pub struct Host {
    /// Short label (`h1`, `h2`, ..., `client`).
    pub label: String,
    /// The network namespace's name (use with `ip netns exec`).
    pub netns: String,
    /// Its `eth0` address.
    pub ip: Ipv4Addr,
    /// Its bridge port in the switch namespace.
    port: String,
}

/// How to build a testbed.
#[derive(Debug, Clone)]
pub struct Builder {
    hosts: usize,
    subnet: [u8; 3],
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            hosts: 2,
            subnet: [10, 99, 0],
        }
    }
}

impl Builder {
    /// Number of hosts (1..=99).
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }

    /// The /24 to use (first three octets). Every testbed has its own bridge, so parallel
    /// testbeds may use the same subnet.
    pub fn subnet(mut self, a: u8, b: u8, c: u8) -> Self {
        self.subnet = [a, b, c];
        self
    }

    /// Create the namespaces, bridge and links.
    pub fn build(self) -> Result<Testbed> {
        Testbed::create(self)
    }
}

/// A running testbed. Dropping it kills its processes and deletes its namespaces.
#[derive(Debug)]
pub struct Testbed {
    prefix: String,
    switch: String,
    hosts: Vec<Host>,
    client: Host,
    subnet: [u8; 3],
    dir: PathBuf,
    epoch: Instant,
}

impl Testbed {
    /// A testbed with `hosts` hosts in `10.99.0.0/24`.
    pub fn new(hosts: usize) -> Result<Testbed> {
        Builder::default().hosts(hosts).build()
    }

    /// A builder for other shapes.
    pub fn builder() -> Builder {
        Builder::default()
    }

    fn create(b: Builder) -> Result<Testbed> {
        preflight()?;
        if b.hosts == 0 || b.hosts > 99 {
            return Err(TestbedError::Command {
                cmd: "Testbed::new".into(),
                status: "invalid".into(),
                stderr: format!("hosts must be 1..=99, got {}", b.hosts),
            });
        }
        // Crashed runs (a panicking test whose Drop never ran because the process aborted)
        // leave namespaces behind; remove those whose creator is gone before adding ours.
        let _ = sweep_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{NS_PREFIX}{}-{n}-", std::process::id());
        let dir = std::env::temp_dir().join(format!("{}{:x}", prefix, fastrand::u32(..)));
        std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        let [a, bb, c] = b.subnet;
        let hosts: Vec<Host> = (1..=b.hosts)
            .map(|i| Host {
                label: format!("h{i}"),
                netns: format!("{prefix}h{i}"),
                ip: Ipv4Addr::new(a, bb, c, u8::try_from(i).unwrap_or(1)),
                port: format!("p{i}"),
            })
            .collect();
        let client = Host {
            label: "client".into(),
            netns: format!("{prefix}c"),
            ip: Ipv4Addr::new(a, bb, c, 100),
            port: "pc".into(),
        };
        let tb = Testbed {
            switch: format!("{prefix}sw"),
            prefix,
            hosts,
            client,
            subnet: b.subnet,
            dir,
            epoch: Instant::now(),
        };
        // From here on, Drop cleans up whatever part was created.
        tb.setup()?;
        Ok(tb)
    }

    fn setup(&self) -> Result<()> {
        run(&["ip", "netns", "add", &self.switch])?;
        run(&["ip", "-n", &self.switch, "link", "set", "lo", "up"])?;
        run(&[
            "ip",
            "-n",
            &self.switch,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
            "forward_delay",
            "0",
        ])?;
        run(&["ip", "-n", &self.switch, "link", "set", "br0", "up"])?;
        for h in self.hosts.iter().chain(std::iter::once(&self.client)) {
            run(&["ip", "netns", "add", &h.netns])?;
            run(&["ip", "-n", &h.netns, "link", "set", "lo", "up"])?;
            // Create the pair inside the switch namespace and move one end straight into the
            // host: no name ever exists in the root namespace.
            run(&[
                "ip",
                "-n",
                &self.switch,
                "link",
                "add",
                &h.port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &h.netns,
            ])?;
            run(&[
                "ip",
                "-n",
                &self.switch,
                "link",
                "set",
                &h.port,
                "master",
                "br0",
                "up",
            ])?;
            let cidr = format!("{}/24", h.ip);
            run(&["ip", "-n", &h.netns, "addr", "add", &cidr, "dev", "eth0"])?;
            run(&["ip", "-n", &h.netns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// The hosts, in order (`h1` first).
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `i` (0-based).
    ///
    /// # Panics
    /// If `i` is out of range (a bug in the test).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// The client namespace.
    pub fn client(&self) -> &Host {
        &self.client
    }

    /// An address in the testbed's /24 (`.last`), e.g. for a virtual IP.
    pub fn addr(&self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, last)
    }

    /// A private directory for configs and logs, removed with the testbed.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Time since the testbed was built (the clock of every report).
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The namespace-name prefix of this testbed (`hstb-<pid>-<n>-`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Run `argv` inside `host` to completion (10 s limit), returning stdout.
    pub fn exec(&self, host: &Host, argv: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "netns", "exec", host.netns.as_str()];
        full.extend_from_slice(argv);
        run(&full)
    }

    /// Start `argv` inside `host` in the background; stdout and stderr go to
    /// `<dir>/<name>.log`. The process is killed (SIGKILL) when the [`Proc`] or the testbed
    /// is dropped.
    pub fn spawn(&self, host: &Host, name: &str, argv: &[&str]) -> Result<Proc> {
        self.spawn_env(host, name, argv, &[])
    }

    /// Like [`Testbed::spawn`] with extra environment variables.
    pub fn spawn_env(
        &self,
        host: &Host,
        name: &str,
        argv: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Proc> {
        let log = self.dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(io_err(format!("create {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("dup {}", log.display())))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.netns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // `ip netns exec` execs the program after setns(): the child pid is the program's.
        let child = cmd
            .spawn()
            .map_err(io_err(format!("spawn {argv:?} in {}", host.netns)))?;
        tracing::debug!(name, host = %host.label, pid = child.id(), "spawned");
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        })
    }

    /// Take `host` off the network: its bridge port goes down (its `eth0` loses carrier).
    pub fn link_down(&self, host: &Host) -> Result<()> {
        run(&["ip", "-n", &self.switch, "link", "set", &host.port, "down"]).map(drop)
    }

    /// Put `host` back on the network.
    pub fn link_up(&self, host: &Host) -> Result<()> {
        run(&["ip", "-n", &self.switch, "link", "set", &host.port, "up"]).map(drop)
    }

    /// Drop IP protocol `proto` (112 = VRRP, 6 = TCP, ...) in `dir` on `host` only (one-way
    /// when only one direction is given).
    pub fn drop_proto(&self, host: &Host, dir: Direction, proto: u8) -> Result<()> {
        let p = proto.to_string();
        if matches!(dir, Direction::In | Direction::Both) {
            self.iptables(host, &["-A", "INPUT", "-p", &p, "-j", "DROP"])?;
        }
        if matches!(dir, Direction::Out | Direction::Both) {
            self.iptables(host, &["-A", "OUTPUT", "-p", &p, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// One-way loss: `to` silently drops everything coming from `from` (`from` still hears
    /// `to`). With `proto`, only that IP protocol (e.g. `Some(112)`).
    pub fn block_from(&self, from: &Host, to: &Host, proto: Option<u8>) -> Result<()> {
        let src = from.ip.to_string();
        let mut args = vec!["-A", "INPUT", "-s", src.as_str()];
        let p = proto.map(|p| p.to_string());
        if let Some(p) = &p {
            args.extend_from_slice(&["-p", p.as_str()]);
        }
        args.extend_from_slice(&["-j", "DROP"]);
        self.iptables(to, &args)
    }

    /// Symmetric partition between `a` and `b` (each drops the other's packets both ways).
    /// Multicast from one still cannot reach the other: the rules match the source address.
    pub fn partition(&self, a: &Host, b: &Host) -> Result<()> {
        for (x, y) in [(a, b), (b, a)] {
            let peer = y.ip.to_string();
            self.iptables(x, &["-A", "INPUT", "-s", &peer, "-j", "DROP"])?;
            self.iptables(x, &["-A", "OUTPUT", "-d", &peer, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Split the hosts into groups that cannot reach each other (symmetric drops between
    /// every pair of hosts in different groups); hosts within a group, and the client,
    /// are unaffected.
    pub fn partition_groups(&self, groups: &[&[&Host]]) -> Result<()> {
        for (i, g) in groups.iter().enumerate() {
            for other in &groups[i + 1..] {
                for a in *g {
                    for b in *other {
                        self.partition(a, b)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Cut `host` off from every other namespace of the testbed (the link stays up).
    pub fn isolate(&self, host: &Host) -> Result<()> {
        self.iptables(host, &["-A", "INPUT", "!", "-i", "lo", "-j", "DROP"])?;
        self.iptables(host, &["-A", "OUTPUT", "!", "-o", "lo", "-j", "DROP"])
    }

    /// Remove every fault rule and bring every port up.
    pub fn heal(&self) -> Result<()> {
        for h in self.hosts.iter().chain(std::iter::once(&self.client)) {
            self.iptables(h, &["-F"])?;
            self.link_up(h)?;
        }
        Ok(())
    }

    /// Run `iptables args` inside `host`.
    pub fn iptables(&self, host: &Host, args: &[&str]) -> Result<()> {
        let mut full = vec!["ip", "netns", "exec", host.netns.as_str(), "iptables", "-w"];
        full.extend_from_slice(args);
        run(&full).map(drop)
    }

    /// Whether `host` currently owns `addr` (any interface).
    pub fn holds(&self, host: &Host, addr: Ipv4Addr) -> Result<bool> {
        let ns = open_ns(&host.netns)?;
        in_netns(&ns, move || Ok(owns(addr)))
    }

    /// Which hosts (by index) currently own `addr`.
    pub fn holders(&self, addr: Ipv4Addr) -> Result<Vec<usize>> {
        let mut out = Vec::new();
        for (i, h) in self.hosts.iter().enumerate() {
            if self.holds(h, addr)? {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// Ping `target` from the client every `interval` until the returned [`Prober`] is
    /// stopped; the report holds each reply's arrival time.
    pub fn probe(&self, target: Ipv4Addr, interval: Duration) -> Result<Prober> {
        Prober::start(&self.client.netns, target, interval, self.epoch)
    }

    /// Sample, every ~5 ms, which hosts own `addr`, until stopped.
    pub fn watch_holders(&self, addr: Ipv4Addr) -> Result<HolderWatch> {
        HolderWatch::start(&self.hosts, addr, self.epoch)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Kill every process still inside our namespaces (also those of leaked Procs), then
        // delete the namespaces (which deletes the veths, the bridge and the rules).
        let mut all: Vec<&str> = self.hosts.iter().map(|h| h.netns.as_str()).collect();
        all.push(&self.client.netns);
        all.push(&self.switch);
        for ns in &all {
            kill_ns_pids(ns);
        }
        for ns in &all {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Which way a drop applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Packets arriving at the host.
    In,
    /// Packets leaving the host.
    Out,
    /// Both.
    Both,
}

/// A process running inside a testbed namespace. Killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Its pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its name (the log file's stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self.pid().ok_or_else(|| TestbedError::Command {
            cmd: format!("kill -{sig} {}", self.name),
            status: "reaped".into(),
            stderr: "the process was already reaped".into(),
        })?;
        let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        kill(pid, sig).map_err(|e| TestbedError::Io {
            context: format!("kill -{sig} {} ({pid})", self.name),
            source: e.into(),
        })
    }

    /// SIGKILL (no cleanup in the process).
    pub fn kill9(&mut self) -> Result<()> {
        self.signal(Signal::SIGKILL)?;
        if let Some(c) = self.child.as_mut() {
            let _ = c.wait();
        }
        Ok(())
    }

    /// SIGSTOP: freeze it.
    pub fn stop(&self) -> Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// SIGCONT: thaw it.
    pub fn cont(&self) -> Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// SIGTERM: ask it to stop gracefully.
    pub fn term(&self) -> Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Wait for it to exit, at most `timeout`; its exit code (`None` = killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let child = self.child.as_mut().ok_or_else(|| TestbedError::Command {
            cmd: format!("wait {}", self.name),
            status: "reaped".into(),
            stderr: "already reaped".into(),
        })?;
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return Ok(st.code()),
                Ok(None) if start.elapsed() < timeout => pause(Duration::from_millis(10)),
                Ok(None) => {
                    return Err(TestbedError::Timeout {
                        what: format!("{} to exit", self.name),
                        after: timeout,
                    });
                }
                Err(e) => return Err(io_err(format!("wait {}", self.name))(e)),
            }
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Path of its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Client-side reachability record: the time of every echo reply.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// When probing started and stopped (testbed clock).
    pub started: Duration,
    /// When probing stopped.
    pub stopped: Duration,
    /// Echo requests sent.
    pub sent: u64,
    /// Reply arrival times (testbed clock), ascending.
    pub replies: Vec<Duration>,
}

impl ProbeReport {
    /// The largest gap between consecutive replies (including start -> first reply and last
    /// reply -> stop): the client-observed outage. This is what `ping -D` users measure; it
    /// does not depend on lost sequence numbers (ping slows down while replies are missing).
    pub fn largest_gap(&self) -> Duration {
        self.gaps()
            .into_iter()
            .map(|(_, d)| d)
            .max()
            .unwrap_or_default()
    }

    /// The largest gap that ends after `after` (to ignore start-up).
    pub fn largest_gap_after(&self, after: Duration) -> Duration {
        self.gaps()
            .into_iter()
            .filter(|(end, _)| *end > after)
            .map(|(_, d)| d)
            .max()
            .unwrap_or_default()
    }

    /// (end time, length) of each gap between replies, bounds included.
    pub fn gaps(&self) -> Vec<(Duration, Duration)> {
        let mut out = Vec::with_capacity(self.replies.len() + 1);
        let mut prev = self.started;
        for &r in &self.replies {
            out.push((r, r.saturating_sub(prev)));
            prev = r;
        }
        out.push((self.stopped, self.stopped.saturating_sub(prev)));
        out
    }

    /// Whether any reply arrived after `t`.
    pub fn replied_after(&self, t: Duration) -> bool {
        self.replies.iter().any(|&r| r > t)
    }
}

/// A running ICMP echo prober (a thread inside the client namespace).
#[derive(Debug)]
pub struct Prober {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<ProbeReport>>>,
}

impl Prober {
    fn start(netns: &str, target: Ipv4Addr, interval: Duration, epoch: Instant) -> Result<Prober> {
        let ns = open_ns(netns)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("testbed-probe".into())
            .spawn(move || {
                // setns() on this thread only: the socket is created inside the client.
                let sock = match setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|e| io_err("setns into the client namespace")(e.into()))
                    .and_then(|()| icmp_socket())
                {
                    Ok(s) => {
                        let _ = tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return Err(TestbedError::Command {
                            cmd: "probe".into(),
                            status: "setup".into(),
                            stderr: "see the error returned by Testbed::probe".into(),
                        });
                    }
                };
                probe_loop(&sock, target, interval, epoch, &flag)
            })
            .map_err(io_err("spawn the probe thread"))?;
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(Prober {
                stop,
                handle: Some(handle),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TestbedError::Timeout {
                what: "the probe thread to start".into(),
                after: Duration::from_secs(5),
            }),
        }
    }

    /// Stop probing and return the record.
    pub fn stop(mut self) -> Result<ProbeReport> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(TestbedError::Command {
                cmd: "probe".into(),
                status: "panicked".into(),
                stderr: "the probe thread panicked".into(),
            }),
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn icmp_socket() -> Result<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::ICMPV4),
    )
    .map_err(io_err("open a raw ICMP socket in the client namespace"))?;
    Ok(s)
}

fn probe_loop(
    sock: &socket2::Socket,
    target: Ipv4Addr,
    interval: Duration,
    epoch: Instant,
    stop: &AtomicBool,
) -> Result<ProbeReport> {
    let id: u16 = fastrand::u16(..);
    let dst = socket2::SockAddr::from(SocketAddrV4::new(target, 0));
    let started = epoch.elapsed();
    let mut replies = Vec::new();
    let mut sent = 0u64;
    let mut seq: u16 = 0;
    let mut next_send = Instant::now();
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_send {
            let pkt = echo_request(id, seq);
            // A send error (no route while the link is down) is just a missing reply.
            let _ = sock.send_to(&pkt, &dst);
            seq = seq.wrapping_add(1);
            sent += 1;
            next_send += interval;
            if next_send < now {
                next_send = now + interval;
            }
            continue;
        }
        let wait = (next_send - now).max(Duration::from_micros(200));
        sock.set_read_timeout(Some(wait))
            .map_err(io_err("set the probe socket timeout"))?;
        // `Read for &Socket` reads into an initialised buffer (no MaybeUninit juggling).
        if let Ok(n) = (&*sock).read(&mut buf) {
            let bytes = &buf[..n];
            if is_echo_reply(bytes, target, id) {
                replies.push(epoch.elapsed());
            }
        }
    }
    Ok(ProbeReport {
        started,
        stopped: epoch.elapsed(),
        sent,
        replies,
    })
}

fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8u8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"hastack-testbed-probe");
    let c = inet_checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

fn is_echo_reply(pkt: &[u8], target: Ipv4Addr, id: u16) -> bool {
    let Some(&vihl) = pkt.first() else {
        return false;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    if pkt.len() < ihl + 8 || pkt.len() < 20 {
        return false;
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let icmp = &pkt[ihl..];
    src == target && icmp[0] == 0 && u16::from_be_bytes([icmp[4], icmp[5]]) == id
}

fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for ch in data.chunks(2) {
        let w = if ch.len() == 2 {
            u16::from_be_bytes([ch[0], ch[1]])
        } else {
            u16::from_be_bytes([ch[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(u16::try_from(sum).unwrap_or(0xffff))
}

/// Who owned an address over time.
#[derive(Debug, Clone)]
pub struct HolderReport {
    /// (time, set of host indexes owning the address), one per sample.
    pub samples: Vec<(Duration, BTreeSet<usize>)>,
}

impl HolderReport {
    /// The longest continuous stretch during which two or more hosts owned the address
    /// (from the first sample seeing two to the first sample seeing fewer).
    pub fn longest_overlap(&self) -> Duration {
        let mut best = Duration::ZERO;
        let mut since: Option<Duration> = None;
        for (t, set) in &self.samples {
            match (set.len() >= 2, since) {
                (true, None) => since = Some(*t),
                (false, Some(s)) => {
                    best = best.max(t.saturating_sub(s));
                    since = None;
                }
                _ => {}
            }
        }
        if let (Some(s), Some((t, _))) = (since, self.samples.last()) {
            best = best.max(t.saturating_sub(s));
        }
        best
    }

    /// The largest number of simultaneous owners seen.
    pub fn max_holders(&self) -> usize {
        self.samples.iter().map(|(_, s)| s.len()).max().unwrap_or(0)
    }

    /// The owners at the last sample.
    pub fn last(&self) -> BTreeSet<usize> {
        self.samples
            .last()
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }
}

/// A running owner sampler.
#[derive(Debug)]
pub struct HolderWatch {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<HolderReport>>>,
}

impl HolderWatch {
    fn start(hosts: &[Host], addr: Ipv4Addr, epoch: Instant) -> Result<HolderWatch> {
        let fds = hosts
            .iter()
            .map(|h| open_ns(&h.netns))
            .collect::<Result<Vec<_>>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("testbed-holders".into())
            .spawn(move || {
                let mut samples = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    let mut set = BTreeSet::new();
                    for (i, ns) in fds.iter().enumerate() {
                        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                            .map_err(|e| io_err("setns into a host namespace")(e.into()))?;
                        if owns(addr) {
                            set.insert(i);
                        }
                    }
                    samples.push((epoch.elapsed(), set));
                    pause(Duration::from_millis(5));
                }
                Ok(HolderReport { samples })
            })
            .map_err(io_err("spawn the holder-watch thread"))?;
        Ok(HolderWatch {
            stop,
            handle: Some(handle),
        })
    }

    /// Stop sampling and return the record.
    pub fn stop(mut self) -> Result<HolderReport> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(TestbedError::Command {
                cmd: "watch_holders".into(),
                status: "panicked".into(),
                stderr: "the holder-watch thread panicked".into(),
            }),
        }
    }
}

impl Drop for HolderWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Whether the current thread's network namespace owns `addr`: binding a socket to an
/// address succeeds only if it is local (`ip_nonlocal_bind` is 0 in a fresh namespace).
fn owns(addr: Ipv4Addr) -> bool {
    UdpSocket::bind(SocketAddrV4::new(addr, 0)).is_ok()
}

fn open_ns(name: &str) -> Result<File> {
    let p = Path::new("/var/run/netns").join(name);
    File::open(&p).map_err(io_err(format!("open network namespace {}", p.display())))
}

/// Run `f` on a short-lived thread inside namespace `ns` (the caller's thread never moves).
fn in_netns<T: Send + 'static>(
    ns: &File,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = ns.try_clone().map_err(io_err("dup a namespace fd"))?;
    std::thread::spawn(move || {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| io_err("setns into a host namespace")(e.into()))?;
        f()
    })
    .join()
    .unwrap_or_else(|_| {
        Err(TestbedError::Command {
            cmd: "in_netns".into(),
            status: "panicked".into(),
            stderr: "a namespace helper thread panicked".into(),
        })
    })
}

/// Root and the tools present, or a clear error.
pub fn preflight() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(TestbedError::NotRoot);
    }
    for (tool, package) in [("ip", "iproute2"), ("iptables", "iptables")] {
        if which(tool).is_none() {
            return Err(TestbedError::MissingTool { tool, package });
        }
    }
    Ok(())
}

/// The full path of `tool` on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Delete namespaces named `hstb-<pid>-...` whose creating process no longer exists (left by
/// runs that crashed or were killed before their Drop ran). Returns how many were removed.
pub fn sweep_stale() -> Result<usize> {
    let dir = Path::new("/var/run/netns");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        kill_ns_pids(&name);
        if run(&["ip", "netns", "del", &name]).is_ok() {
            removed += 1;
            tracing::info!(netns = %name, "removed a stale testbed namespace");
        }
    }
    Ok(removed)
}

fn kill_ns_pids(ns: &str) {
    if let Ok(out) = run(&["ip", "netns", "pids", ns]) {
        for pid in out.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Run a command to completion (10 s limit); stdout on success, a [`TestbedError`] naming
/// the command and its stderr otherwise.
pub fn run(argv: &[&str]) -> Result<String> {
    let (prog, args) = argv.split_first().ok_or_else(|| TestbedError::Command {
        cmd: String::new(),
        status: "empty".into(),
        stderr: "empty command".into(),
    })?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("run {}", argv.join(" "))))?;
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .map_err(io_err(format!("wait {}", argv.join(" "))))?
        {
            break st;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TestbedError::Timeout {
                what: argv.join(" "),
                after: Duration::from_secs(10),
            });
        }
        pause(Duration::from_millis(2));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if status.success() {
        Ok(out)
    } else {
        Err(TestbedError::Command {
            cmd: argv.join(" "),
            status: status.to_string(),
            stderr: err.trim().to_string(),
        })
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.label, self.ip, self.netns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_echo_request_verifies() {
        let p = echo_request(0x1234, 7);
        assert_eq!(inet_checksum(&p), 0);
    }

    #[test]
    fn gaps_include_bounds() {
        let r = ProbeReport {
            started: Duration::from_millis(0),
            stopped: Duration::from_millis(100),
            sent: 10,
            replies: vec![Duration::from_millis(10), Duration::from_millis(70)],
        };
        assert_eq!(r.largest_gap(), Duration::from_millis(60));
        assert_eq!(
            r.largest_gap_after(Duration::from_millis(80)),
            Duration::from_millis(30)
        );
    }

    #[test]
    fn overlap_is_measured_between_samples() {
        let s = |t: u64, v: &[usize]| (Duration::from_millis(t), v.iter().copied().collect());
        let r = HolderReport {
            samples: vec![s(0, &[0]), s(5, &[0, 1]), s(10, &[0, 1]), s(15, &[1])],
        };
        assert_eq!(r.longest_overlap(), Duration::from_millis(10));
        assert_eq!(r.max_holders(), 2);
    }
}
