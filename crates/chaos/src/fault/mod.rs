//! Faults: what can be done to a running system, and to what.
//!
//! * [`ProcessFault`]: signals to processes the harness started ([`process`]).
//! * [`ProxyFault`]: network misbehaviour injected by the userspace [`proxy::FaultProxy`]
//!   placed in front of an endpoint (latency, bandwidth, reset, black hole, dropped
//!   connections). `tc netem` is not available on these kernels, so this is how latency
//!   and loss are made.
//! * [`NetFault`]: namespace-level faults (iptables partitions, link down), applied through
//!   the [`NetworkFaults`] trait, implemented by [`crate::netns::Lab`] on top of
//!   `hastack-testbed` for scenarios with a `[chaos.netns]` topology. A scenario without one
//!   gets [`NoTestbed`], which refuses every such fault with a clear error (scenario files
//!   cannot even declare one: validation asks for `[chaos.netns]` first).

pub mod kind;
pub mod process;
pub mod proxy;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ChaosError;
use crate::load::BoxFuture;
pub use kind::{FaultKind, TargetKind};
pub use proxy::{Direction, ProxyFault};

/// A fault on a process the harness started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessFault {
    /// SIGKILL; with a duration, started again after it.
    Kill,
    /// SIGTERM; with a duration, started again after it.
    Term,
    /// SIGSTOP for the duration, then SIGCONT.
    Pause,
    /// SIGTERM (SIGKILL after the grace period), then start again at once.
    Restart,
}

impl ProcessFault {
    /// Its kind.
    pub fn kind(self) -> FaultKind {
        match self {
            ProcessFault::Kill => FaultKind::Kill,
            ProcessFault::Term => FaultKind::Term,
            ProcessFault::Pause => FaultKind::Pause,
            ProcessFault::Restart => FaultKind::Restart,
        }
    }
}

/// A namespace-level fault (needs the network-namespace testbed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NetFault {
    /// Drop traffic between two hosts (both ways, or only `from` -> `to` when one-way).
    Partition {
        /// One side.
        from: String,
        /// The other side.
        to: String,
        /// Only traffic from `from` to `to` is dropped.
        one_way: bool,
    },
    /// Take a host's link down.
    LinkDown {
        /// The host.
        host: String,
    },
}

impl NetFault {
    /// Its kind.
    pub fn kind(&self) -> FaultKind {
        match self {
            NetFault::Partition { .. } => FaultKind::Partition,
            NetFault::LinkDown { .. } => FaultKind::LinkDown,
        }
    }
}

/// What a scheduled fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// Signal a process.
    Process(ProcessFault),
    /// Misbehave in a fault proxy.
    Proxy(ProxyFault),
    /// Namespace fault.
    Net(NetFault),
}

impl FaultAction {
    /// Its kind (`kill`, `latency`, `partition`...), used for weights and labels.
    pub fn kind(&self) -> FaultKind {
        match self {
            FaultAction::Process(p) => p.kind(),
            FaultAction::Proxy(p) => p.kind(),
            FaultAction::Net(n) => n.kind(),
        }
    }
}

/// One fault of a run's schedule, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledFault {
    /// Position in the schedule.
    pub id: usize,
    /// Offset from the start of the load.
    #[serde(with = "crate::report::serde_dur")]
    pub at: Duration,
    /// The process, fault proxy or host it applies to.
    pub target: String,
    /// What it does.
    pub action: FaultAction,
    /// How long until it is healed (none: never, or immediate for `restart`).
    #[serde(with = "crate::report::serde_opt_dur")]
    pub duration: Option<Duration>,
    /// Weight in the fault score.
    pub weight: f64,
    /// The component-event subject that belongs to this fault.
    pub subject: String,
}

impl ScheduledFault {
    /// A label such as `kill app1 for 3s`.
    pub fn label(&self) -> String {
        let mut s = match &self.action {
            FaultAction::Net(NetFault::Partition { from, to, one_way }) => format!(
                "partition {from} {} {to}",
                if *one_way { "->" } else { "<->" }
            ),
            _ => format!("{} {}", self.action.kind(), self.target),
        };
        if let FaultAction::Proxy(p) = &self.action {
            let d = p.describe();
            if !d.is_empty() {
                s.push_str(&format!(" ({d})"));
            }
        }
        if let Some(d) = self.duration {
            s.push_str(&format!(" for {}", humantime::format_duration(d)));
        }
        s
    }
}

/// The boundary to namespace-level fault injection, implemented by [`crate::netns::Lab`]
/// (iptables partitions, link down inside its namespaces); the runner calls `check` for
/// every scheduled fault before starting anything, `inject` at the fault's time and `heal`
/// after its duration. `heal` undoes exactly its own fault, so overlapping faults heal
/// independently.
pub trait NetworkFaults: Send + Sync + std::fmt::Debug {
    /// Whether `fault` can be applied at all (checked for every scheduled fault before a
    /// run starts anything, so a scenario that cannot run fails at once).
    fn check(&self, fault: &NetFault) -> Result<(), ChaosError>;
    /// Apply `fault`.
    fn inject<'a>(&'a self, fault: &'a NetFault) -> BoxFuture<'a, Result<(), ChaosError>>;
    /// Undo `fault`.
    fn heal<'a>(&'a self, fault: &'a NetFault) -> BoxFuture<'a, Result<(), ChaosError>>;
}

/// The stand-in for scenarios without a namespace topology: refuses every namespace fault.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTestbed;

impl NoTestbed {
    fn refuse(fault: &NetFault) -> ChaosError {
        let target = match fault {
            NetFault::Partition { from, to, .. } => format!("{from} <-> {to}"),
            NetFault::LinkDown { host } => host.clone(),
        };
        ChaosError::NeedsTestbed {
            fault: fault.kind().name().to_string(),
            target,
        }
    }
}

impl NetworkFaults for NoTestbed {
    fn check(&self, fault: &NetFault) -> Result<(), ChaosError> {
        Err(NoTestbed::refuse(fault))
    }

    fn inject<'a>(&'a self, fault: &'a NetFault) -> BoxFuture<'a, Result<(), ChaosError>> {
        Box::pin(async move { Err(NoTestbed::refuse(fault)) })
    }

    fn heal<'a>(&'a self, fault: &'a NetFault) -> BoxFuture<'a, Result<(), ChaosError>> {
        Box::pin(async move { Err(NoTestbed::refuse(fault)) })
    }
}
