//! The one list of fault kinds.
//!
//! [`FaultKind`] is every fault a scenario, the control API or the demo can name. Everything
//! that differs by kind is answered here, by an exhaustive `match` per question: its name,
//! what it acts on ([`TargetKind`]), which parameters it takes ([`Param`]) and whether it
//! needs a duration ([`DurationRule`]). The only other exhaustive match is where a scenario
//! entry becomes a [`super::FaultAction`] (`scenario::faults`). So a layer that brings its
//! own faults (say, the coordination store: an etcd member partitioned from its quorum) adds
//! its variants here and to [`FaultKind::ALL`], and the compiler then points at every
//! question the new kinds must answer; nothing can fall through to another kind.

use serde::{Deserialize, Serialize};

/// Every fault kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL a process; with a duration, start it again after it.
    Kill,
    /// SIGTERM a process (SIGKILL after its grace); with a duration, start it again after it.
    Term,
    /// SIGSTOP a process for the duration, then SIGCONT.
    Pause,
    /// SIGTERM a process, wait for it to exit, start it again at once.
    Restart,
    /// A fault proxy delays every chunk by `delay ± jitter`.
    Latency,
    /// A fault proxy caps the bytes per second.
    Bandwidth,
    /// A fault proxy resets every connection.
    Reset,
    /// A fault proxy accepts and never answers.
    Blackhole,
    /// A fault proxy resets a fraction of new connections.
    Drop,
    /// Two hosts stop exchanging packets (namespace mode).
    Partition,
    /// A host's link goes down (namespace mode).
    LinkDown,
}

/// What a fault acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetKind {
    /// A process the harness started (`[[chaos.process]]`).
    Process,
    /// A userspace fault proxy (`[[chaos.fault_proxy]]`).
    FaultProxy,
    /// A host of the namespace topology (`[chaos.netns]`).
    Host,
}

impl TargetKind {
    /// How messages name it (`a {name}`).
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Process => "process",
            TargetKind::FaultProxy => "fault proxy",
            TargetKind::Host => "host",
        }
    }
}

/// A kind-specific parameter of a fault entry (besides `at`, `target`, `duration`, `weight`,
/// `subject` and `chance`, which every kind takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Param {
    /// `delay` (latency).
    Delay,
    /// `jitter` (latency).
    Jitter,
    /// `direction` (latency, bandwidth, blackhole).
    Direction,
    /// `rate` (bandwidth).
    Rate,
    /// `fraction` (drop).
    Fraction,
    /// `peer` (partition).
    Peer,
    /// `one_way` (partition).
    OneWay,
}

impl Param {
    /// Every parameter.
    pub const ALL: [Param; 7] = [
        Param::Delay,
        Param::Jitter,
        Param::Direction,
        Param::Rate,
        Param::Fraction,
        Param::Peer,
        Param::OneWay,
    ];

    /// Its key in a scenario file.
    pub fn name(self) -> &'static str {
        match self {
            Param::Delay => "delay",
            Param::Jitter => "jitter",
            Param::Direction => "direction",
            Param::Rate => "rate",
            Param::Fraction => "fraction",
            Param::Peer => "peer",
            Param::OneWay => "one_way",
        }
    }
}

/// Whether a fault entry takes a `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationRule {
    /// Optional: absent means "until the end of the run".
    Optional,
    /// Required (a paused process must be resumed).
    Required,
    /// Not allowed (the fault heals itself).
    Forbidden,
}

impl FaultKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Kill,
        FaultKind::Term,
        FaultKind::Pause,
        FaultKind::Restart,
        FaultKind::Latency,
        FaultKind::Bandwidth,
        FaultKind::Reset,
        FaultKind::Blackhole,
        FaultKind::Drop,
        FaultKind::Partition,
        FaultKind::LinkDown,
    ];

    /// Its name in scenarios, weights, JSON and labels.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Term => "term",
            FaultKind::Pause => "pause",
            FaultKind::Restart => "restart",
            FaultKind::Latency => "latency",
            FaultKind::Bandwidth => "bandwidth",
            FaultKind::Reset => "reset",
            FaultKind::Blackhole => "blackhole",
            FaultKind::Drop => "drop",
            FaultKind::Partition => "partition",
            FaultKind::LinkDown => "link_down",
        }
    }

    /// The kind called `name`, if any.
    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// What it acts on.
    pub fn target(self) -> TargetKind {
        match self {
            FaultKind::Kill | FaultKind::Term | FaultKind::Pause | FaultKind::Restart => {
                TargetKind::Process
            }
            FaultKind::Latency
            | FaultKind::Bandwidth
            | FaultKind::Reset
            | FaultKind::Blackhole
            | FaultKind::Drop => TargetKind::FaultProxy,
            FaultKind::Partition | FaultKind::LinkDown => TargetKind::Host,
        }
    }

    /// The parameters it takes; any other is an error in a scenario.
    pub fn params(self) -> &'static [Param] {
        match self {
            FaultKind::Latency => &[Param::Delay, Param::Jitter, Param::Direction],
            FaultKind::Bandwidth => &[Param::Rate, Param::Direction],
            FaultKind::Blackhole => &[Param::Direction],
            FaultKind::Drop => &[Param::Fraction],
            FaultKind::Partition => &[Param::Peer, Param::OneWay],
            FaultKind::Kill
            | FaultKind::Term
            | FaultKind::Pause
            | FaultKind::Restart
            | FaultKind::Reset
            | FaultKind::LinkDown => &[],
        }
    }

    /// Whether it takes a duration.
    pub fn duration(self) -> DurationRule {
        match self {
            FaultKind::Pause => DurationRule::Required,
            FaultKind::Restart => DurationRule::Forbidden,
            FaultKind::Kill
            | FaultKind::Term
            | FaultKind::Latency
            | FaultKind::Bandwidth
            | FaultKind::Reset
            | FaultKind::Blackhole
            | FaultKind::Drop
            | FaultKind::Partition
            | FaultKind::LinkDown => DurationRule::Optional,
        }
    }

    /// The kinds that act on `target`.
    pub fn acting_on(target: TargetKind) -> impl Iterator<Item = FaultKind> {
        FaultKind::ALL
            .into_iter()
            .filter(move |k| k.target() == target)
    }

    /// `names` joined for messages: `kill, term, ...`.
    pub fn list(kinds: impl IntoIterator<Item = FaultKind>) -> String {
        kinds
            .into_iter()
            .map(FaultKind::name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_are_unique_and_round_trip_through_serde() {
        let names: BTreeSet<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), FaultKind::ALL.len());
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::from_name(k.name()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
            assert_eq!(serde_json::from_str::<FaultKind>(&json).unwrap(), k);
        }
        assert_eq!(FaultKind::from_name("explode"), None);
        let p: BTreeSet<&str> = Param::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(p.len(), Param::ALL.len());
    }

    #[test]
    fn every_parameter_belongs_to_a_kind_and_every_target_has_kinds() {
        for p in Param::ALL {
            assert!(
                FaultKind::ALL.iter().any(|k| k.params().contains(&p)),
                "{p:?} belongs to no kind"
            );
        }
        for t in [
            TargetKind::Process,
            TargetKind::FaultProxy,
            TargetKind::Host,
        ] {
            assert!(FaultKind::acting_on(t).count() > 0, "{t:?}");
        }
        assert_eq!(
            FaultKind::list(FaultKind::acting_on(TargetKind::FaultProxy)),
            "latency, bandwidth, reset, blackhole, drop"
        );
    }
}
