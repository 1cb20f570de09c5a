//! Namespace mode: a scenario's hosts as network namespaces on one machine (root only).
//!
//! A scenario with a `[chaos.netns]` section names its hosts (`hosts = ["lb1", "lb2",
//! "web1"]`). For the run, a [`Lab`] builds a `hastack-testbed` with one namespace per host
//! (addresses `.1`, `.2`, ... of the /24, in order) plus the **client** namespace (`.100`),
//! all on one bridge. Then:
//!
//! * processes with `host = "lb1"` are started inside that namespace (`ip netns exec`, which
//!   execs the program, so the pid the harness signals is the program's own);
//! * fault proxies with a `host` listen and connect from inside it;
//! * the **load generator runs in the client namespace**, as do event sources without a
//!   `host`; readiness checks run in the process's own namespace.
//!
//! How code runs "inside" a namespace: each namespace gets one dedicated OS thread that
//! `setns(2)`s into it and then drives a current-thread tokio runtime (`NsRuntime`). A
//! socket belongs to the namespace of the thread that creates it, and every task spawned on
//! that runtime runs on that thread, so the load generator, the fault proxies and the pollers
//! are simply spawned onto the right runtime's handle; their results (the recorder, event
//! sink, fault-proxy handles) are shared memory and need no namespace. The rest of the
//! harness (timeline, progress, control API) stays in the root namespace. The alternative,
//! re-executing the harness's load runner as a process inside the client namespace, would
//! need a wire format for every request record; a thread needs none.
//!
//! Namespace faults ([`NetFault`]) are iptables rules and bridge-port state applied through the
//! testbed ([`Lab`] implements [`NetworkFaults`]): a partition adds `DROP` rules inside the
//! two hosts and its heal deletes exactly those rules (so overlapping faults heal
//! independently); `link_down` takes the host's bridge port down.
//!
//! Cleanup: [`Lab::close`] stops the namespace threads and drops the testbed, whose `Drop`
//! kills every process left in the namespaces and deletes them; `Lab`'s own `Drop` does the
//! same on any other exit path, and the testbed sweeps namespaces left by a harness that was
//! SIGKILLed. Without root (or without `ip`/`iptables`) [`preflight`] refuses before anything
//! is started.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hastack_testbed::{Host, Testbed, TestbedError};
use nix::sched::{CloneFlags, setns};
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tracing::{debug, error, info};

use crate::error::ChaosError;
use crate::fault::{NetFault, NetworkFaults};
use crate::load::BoxFuture;

/// The name of the client namespace (where the load generator runs).
pub const CLIENT: &str = "client";

/// Most hosts a topology may have (the client takes `.100`).
pub const MAX_HOSTS: usize = 99;

/// The last octet of the client's address.
pub const CLIENT_OCTET: u8 = 100;

/// A validated `[chaos.netns]` topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsTopology {
    /// The /24 (first three octets).
    pub subnet: [u8; 3],
    /// Host names, in address order (`hosts[0]` is `.1`).
    pub hosts: Vec<String>,
}

impl Default for NetnsTopology {
    fn default() -> Self {
        NetnsTopology {
            subnet: [10, 99, 0],
            hosts: Vec::new(),
        }
    }
}

impl NetnsTopology {
    /// The address of host `name` (or of the client).
    pub fn ip(&self, name: &str) -> Option<Ipv4Addr> {
        if name == CLIENT {
            return Some(self.addr(CLIENT_OCTET));
        }
        let i = self.hosts.iter().position(|h| h == name)?;
        u8::try_from(i + 1).ok().map(|last| self.addr(last))
    }

    /// The address `.last` of the topology's /24 (e.g. a virtual IP).
    pub fn addr(&self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, last)
    }

    /// Whether `name` is a host of the topology or the client.
    pub fn knows(&self, name: &str) -> bool {
        name == CLIENT || self.hosts.iter().any(|h| h == name)
    }

    /// Hosts and the client, for messages.
    pub fn names(&self) -> String {
        let mut v: Vec<&str> = self.hosts.iter().map(String::as_str).collect();
        v.push(CLIENT);
        v.join(", ")
    }
}

/// Refuse early, with the testbed's own message, when namespace mode cannot work here (not
/// root, or `ip`/`iptables` missing).
pub fn preflight(scenario: &str) -> Result<(), ChaosError> {
    hastack_testbed::preflight().map_err(|source| ChaosError::Netns {
        what: format!(
            "scenario `{scenario}` runs in network namespaces ([chaos.netns]) and cannot start"
        ),
        source,
    })
}

/// Where a process runs: its namespace's name (for `ip netns exec`) and a runtime inside it
/// (for its readiness checks).
#[derive(Debug, Clone)]
pub struct Placement {
    /// Scenario host name.
    pub host: String,
    /// The namespace's name.
    pub netns: String,
    /// A runtime whose thread is inside the namespace.
    pub handle: Handle,
}

impl Placement {
    /// Run `fut` inside the namespace and wait for it; `None` if the namespace's runtime is
    /// gone (the lab is shutting down).
    pub async fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        self.handle.spawn(fut).await.ok()
    }
}

/// One OS thread inside a namespace, driving a current-thread runtime until stopped.
#[derive(Debug)]
struct NsRuntime {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsRuntime {
    fn start(label: &str, netns: &str) -> Result<NsRuntime, ChaosError> {
        let path = Path::new("/var/run/netns").join(netns);
        let ns = Arc::new(
            File::open(&path)
                .map_err(|e| ChaosError::io(format!("opening namespace {}", path.display()), e))?,
        );
        let (tx, rx) = std::sync::mpsc::channel::<Result<Handle, String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let name = netns.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("chaos-ns-{label}"))
            .spawn(move || {
                if let Err(e) = setns(ns.as_fd(), CloneFlags::CLONE_NEWNET) {
                    let _ = tx.send(Err(format!("setns into {name}: {e}")));
                    return;
                }
                // Threads created from this one inherit its namespace; the blocking pool
                // re-enters it anyway, in case a blocking task is ever spawned from outside.
                let blocking_ns = ns.clone();
                let blocking_name = name.clone();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .on_thread_start(move || {
                        if let Err(e) = setns(blocking_ns.as_fd(), CloneFlags::CLONE_NEWNET) {
                            error!(netns = %blocking_name, error = %e, "a blocking thread cannot enter its namespace");
                        }
                    })
                    .build();
                let rt = match rt {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(format!("runtime in {name}: {e}")));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
                // Dropping the runtime here cancels whatever still runs in the namespace.
                drop(rt);
            })
            .map_err(|e| ChaosError::io("starting a namespace thread", e))?;
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(handle)) => Ok(NsRuntime {
                handle,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(reason)) => Err(ChaosError::io(
                reason,
                std::io::Error::other("namespace thread"),
            )),
            Err(_) => Err(ChaosError::io(
                format!("the thread for namespace {netns} did not start within 5 s"),
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            )),
        }
    }

    /// Stop the runtime and join its thread (blocking; call off the async runtime).
    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug)]
struct LabInner {
    runtimes: Vec<NsRuntime>,
    testbed: Option<Arc<Testbed>>,
}

impl LabInner {
    /// Stop every namespace thread, then drop the testbed (kills what runs in the
    /// namespaces, deletes them). Blocking.
    fn teardown(&mut self) {
        for rt in &mut self.runtimes {
            rt.stop();
        }
        self.runtimes.clear();
        if let Some(tb) = self.testbed.take() {
            let prefix = tb.prefix().to_string();
            drop(tb);
            info!(%prefix, "namespace testbed removed");
        }
    }
}

/// A running namespace topology: the testbed, one runtime per namespace, and the faults.
#[derive(Debug)]
pub struct Lab {
    topo: NetnsTopology,
    /// Scenario name (and `client`) -> testbed host.
    hosts: BTreeMap<String, Host>,
    /// Scenario name (and `client`) -> a runtime inside it.
    handles: BTreeMap<String, Handle>,
    inner: Mutex<LabInner>,
}

impl Lab {
    /// Build the namespaces and start a thread in each. Blocking: call it from
    /// `spawn_blocking` (see [`Lab::start`]).
    pub fn build(topo: &NetnsTopology) -> Result<Lab, ChaosError> {
        let [a, b, c] = topo.subnet;
        let tb = Testbed::builder()
            .hosts(topo.hosts.len())
            .subnet(a, b, c)
            .build()
            .map_err(|source| ChaosError::Netns {
                what: "building the namespace testbed".to_string(),
                source,
            })?;
        let tb = Arc::new(tb);
        let mut hosts = BTreeMap::new();
        for (i, name) in topo.hosts.iter().enumerate() {
            hosts.insert(name.clone(), tb.host(i).clone());
        }
        hosts.insert(CLIENT.to_string(), tb.client().clone());
        let mut inner = LabInner {
            runtimes: Vec::new(),
            testbed: Some(tb.clone()),
        };
        let mut handles = BTreeMap::new();
        for (name, host) in &hosts {
            match NsRuntime::start(name, &host.netns) {
                Ok(rt) => {
                    handles.insert(name.clone(), rt.handle.clone());
                    inner.runtimes.push(rt);
                }
                Err(e) => {
                    inner.teardown();
                    return Err(e);
                }
            }
        }
        info!(
            prefix = tb.prefix(),
            hosts = %topo.names(),
            "namespace testbed up"
        );
        Ok(Lab {
            topo: topo.clone(),
            hosts,
            handles,
            inner: Mutex::new(inner),
        })
    }

    /// [`Lab::build`] on a blocking thread.
    pub async fn start(topo: &NetnsTopology) -> Result<Arc<Lab>, ChaosError> {
        let topo = topo.clone();
        tokio::task::spawn_blocking(move || Lab::build(&topo).map(Arc::new))
            .await
            .map_err(|e| {
                ChaosError::io("building the namespace testbed", std::io::Error::other(e))
            })?
    }

    /// The topology.
    pub fn topology(&self) -> &NetnsTopology {
        &self.topo
    }

    /// The testbed's namespace-name prefix (`hstb-<pid>-<n>-`), once built.
    pub fn prefix(&self) -> Option<String> {
        self.inner
            .lock()
            .testbed
            .as_ref()
            .map(|t| t.prefix().to_string())
    }

    /// Where `host` (a host name or `client`) runs things.
    pub fn placement(&self, host: &str) -> Result<Placement, ChaosError> {
        match (self.hosts.get(host), self.handles.get(host)) {
            (Some(h), Some(handle)) => Ok(Placement {
                host: host.to_string(),
                netns: h.netns.clone(),
                handle: handle.clone(),
            }),
            _ => Err(ChaosError::BadTarget {
                fault: "placement".to_string(),
                target: host.to_string(),
                reason: format!("no such host; hosts: {}", self.topo.names()),
            }),
        }
    }

    /// A runtime inside the client namespace.
    pub fn client(&self) -> Result<Placement, ChaosError> {
        self.placement(CLIENT)
    }

    /// Stop the namespace threads and remove the namespaces (and everything still running
    /// in them). Idempotent.
    pub async fn close(self: &Arc<Self>) {
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || me.inner.lock().teardown()).await;
    }

    fn host(&self, name: &str) -> Result<Host, ChaosError> {
        self.hosts
            .get(name)
            .cloned()
            .ok_or_else(|| ChaosError::BadTarget {
                fault: "namespace fault".to_string(),
                target: name.to_string(),
                reason: format!("no such host; hosts: {}", self.topo.names()),
            })
    }

    async fn apply(&self, fault: &NetFault, inject: bool) -> Result<(), ChaosError> {
        self.check(fault)?;
        let tb = self
            .inner
            .lock()
            .testbed
            .clone()
            .ok_or_else(|| ChaosError::BadTarget {
                fault: kind(fault).to_string(),
                target: target(fault),
                reason: "the namespace testbed is already removed".to_string(),
            })?;
        let plan = match fault {
            NetFault::Partition { from, to, one_way } => Plan::Partition {
                from: self.host(from)?,
                to: self.host(to)?,
                one_way: *one_way,
            },
            NetFault::LinkDown { host } => Plan::Link(self.host(host)?),
        };
        let what = format!(
            "{} {} {}",
            if inject { "injecting" } else { "healing" },
            kind(fault),
            target(fault)
        );
        debug!(%what, "namespace fault");
        tokio::task::spawn_blocking(move || plan.run(&tb, inject))
            .await
            .map_err(|e| ChaosError::io(what.clone(), std::io::Error::other(e)))?
            .map_err(|source| ChaosError::Netns { what, source })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.inner.lock().teardown();
    }
}

/// A namespace fault resolved to testbed hosts.
enum Plan {
    Partition { from: Host, to: Host, one_way: bool },
    Link(Host),
}

impl Plan {
    /// Add (`inject`) or delete exactly this fault's rules; blocking.
    fn run(&self, tb: &Testbed, inject: bool) -> Result<(), TestbedError> {
        let op = if inject { "-A" } else { "-D" };
        match self {
            Plan::Partition { from, to, one_way } => {
                if *one_way {
                    // `to` never hears `from`; `from` still hears `to`.
                    let src = from.ip.to_string();
                    tb.iptables(to, &[op, "INPUT", "-s", &src, "-j", "DROP"])
                } else {
                    for (x, y) in [(from, to), (to, from)] {
                        let peer = y.ip.to_string();
                        tb.iptables(x, &[op, "INPUT", "-s", &peer, "-j", "DROP"])?;
                        tb.iptables(x, &[op, "OUTPUT", "-d", &peer, "-j", "DROP"])?;
                    }
                    Ok(())
                }
            }
            Plan::Link(h) => {
                if inject {
                    tb.link_down(h)
                } else {
                    tb.link_up(h)
                }
            }
        }
    }
}

fn kind(f: &NetFault) -> &'static str {
    match f {
        NetFault::Partition { .. } => "partition",
        NetFault::LinkDown { .. } => "link_down",
    }
}

fn target(f: &NetFault) -> String {
    match f {
        NetFault::Partition {
            from,
            to,
            one_way: false,
        } => format!("{from} <-> {to}"),
        NetFault::Partition {
            from,
            to,
            one_way: true,
        } => format!("{from} -> {to}"),
        NetFault::LinkDown { host } => host.clone(),
    }
}

impl NetworkFaults for Lab {
    fn check(&self, fault: &NetFault) -> Result<(), ChaosError> {
        let names: Vec<&String> = match fault {
            NetFault::Partition { from, to, .. } => {
                if from == to {
                    return Err(ChaosError::BadTarget {
                        fault: "partition".to_string(),
                        target: from.clone(),
                        reason: "a host cannot be partitioned from itself".to_string(),
                    });
                }
                vec![from, to]
            }
            NetFault::LinkDown { host } => vec![host],
        };
        for n in names {
            if !self.hosts.contains_key(n) {
                return Err(ChaosError::BadTarget {
                    fault: kind(fault).to_string(),
                    target: n.clone(),
                    reason: format!("no such host; hosts: {}", self.topo.names()),
                });
            }
        }
        Ok(())
    }

    fn inject<'a>(&'a self, fault: &'a NetFault) -> BoxFuture<'a, Result<(), ChaosError>> {
        Box::pin(self.apply(fault, true))
    }

    fn heal<'a>(&'a self, fault: &'a NetFault) -> BoxFuture<'a, Result<(), ChaosError>> {
        Box::pin(self.apply(fault, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_host_order() {
        let t = NetnsTopology {
            subnet: [10, 98, 7],
            hosts: vec!["lb1".into(), "web1".into()],
        };
        assert_eq!(t.ip("lb1"), Some(Ipv4Addr::new(10, 98, 7, 1)));
        assert_eq!(t.ip("web1"), Some(Ipv4Addr::new(10, 98, 7, 2)));
        assert_eq!(t.ip(CLIENT), Some(Ipv4Addr::new(10, 98, 7, 100)));
        assert_eq!(t.ip("nope"), None);
        assert_eq!(t.addr(50), Ipv4Addr::new(10, 98, 7, 50));
        assert!(t.knows("client") && t.knows("web1") && !t.knows("web2"));
        assert_eq!(t.names(), "lb1, web1, client");
    }

    #[test]
    fn labels_name_the_direction() {
        let p = NetFault::Partition {
            from: "a".into(),
            to: "b".into(),
            one_way: true,
        };
        assert_eq!(target(&p), "a -> b");
        assert_eq!(kind(&p), "partition");
    }
}
