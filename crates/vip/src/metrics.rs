//! Prometheus metrics and the JSON status, shared by every instance of a daemon.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::state::{Reason, State};

/// `instance` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabel {
    /// Instance name.
    pub instance: String,
}

/// `instance` + `state` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// Instance name.
    pub instance: String,
    /// State name.
    pub state: String,
}

/// `instance` + `reason` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Instance name.
    pub instance: String,
    /// Why.
    pub reason: String,
}

/// `instance` + `address` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MasterLabel {
    /// Instance name.
    pub instance: String,
    /// Address of the current master.
    pub address: String,
}

/// Every metric of `hastack vip`.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// 1 for the current state, 0 for the others.
    pub state: Family<StateLabel, Gauge>,
    /// Transitions, by destination state.
    pub transitions: Family<StateLabel, Counter>,
    /// Adverts sent.
    pub adverts_sent: Family<InstanceLabel, Counter>,
    /// Adverts received and accepted.
    pub adverts_received: Family<InstanceLabel, Counter>,
    /// Adverts rejected, by reason.
    pub adverts_rejected: Family<ReasonLabel, Counter>,
    /// 1 for the current master's address.
    pub master: Family<MasterLabel, Gauge>,
    /// Effective priority.
    pub priority: Family<InstanceLabel, Gauge>,
    /// ARP conflicts seen while master or claiming.
    pub arp_conflicts: Family<InstanceLabel, Counter>,
    /// Times the watchdog withdrew the addresses.
    pub fenced: Family<InstanceLabel, Counter>,
}

impl Metrics {
    /// Register every metric into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "hastack_vip_state",
            "1 for the instance's current state (init, backup, master, fault)",
            self.state.clone(),
        );
        registry.register(
            "hastack_vip_transitions",
            "State transitions, by destination state",
            self.transitions.clone(),
        );
        registry.register(
            "hastack_vip_adverts_sent",
            "VRRP advertisements sent",
            self.adverts_sent.clone(),
        );
        registry.register(
            "hastack_vip_adverts_received",
            "VRRP advertisements received and accepted",
            self.adverts_received.clone(),
        );
        registry.register(
            "hastack_vip_adverts_rejected",
            "VRRP advertisements rejected, by reason (ttl, checksum, malformed, version, interval, unsigned, bad_mac, replay, stale)",
            self.adverts_rejected.clone(),
        );
        registry.register(
            "hastack_vip_master",
            "1 for the address of the current master as this node sees it",
            self.master.clone(),
        );
        registry.register(
            "hastack_vip_priority",
            "Effective priority (after trackers)",
            self.priority.clone(),
        );
        registry.register(
            "hastack_vip_arp_conflicts",
            "ARP packets from another host claiming a virtual address we hold or probe",
            self.arp_conflicts.clone(),
        );
        registry.register(
            "hastack_vip_fenced",
            "Times the watchdog withdrew the addresses because the protocol loop stalled",
            self.fenced.clone(),
        );
    }

    /// Record the current state.
    pub fn set_state(&self, instance: &str, s: State) {
        for st in [State::Init, State::Backup, State::Master, State::Fault] {
            self.state
                .get_or_create(&StateLabel {
                    instance: instance.to_string(),
                    state: st.as_str().to_string(),
                })
                .set(i64::from(st == s));
        }
    }

    /// Count one rejected advert.
    pub fn reject(&self, instance: &str, reason: &str) {
        self.adverts_rejected
            .get_or_create(&ReasonLabel {
                instance: instance.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The label for `instance`.
    pub fn label(instance: &str) -> InstanceLabel {
        InstanceLabel {
            instance: instance.to_string(),
        }
    }
}

/// One instance's status for `GET /status`.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceStatus {
    /// Name.
    pub name: String,
    /// Interface.
    pub interface: String,
    /// VRID.
    pub vrid: u8,
    /// State.
    pub state: State,
    /// Configured priority.
    pub base_priority: u8,
    /// Effective priority.
    pub priority: u8,
    /// Current master, as far as we know.
    pub master: Option<String>,
    /// Our advertising address.
    pub primary: Option<String>,
    /// Virtual addresses.
    pub addresses: Vec<String>,
    /// Whether we currently hold them.
    pub holding: bool,
    /// Last transition reason.
    pub last_reason: Option<Reason>,
    /// Transitions so far.
    pub transitions: u64,
    /// Adverts sent.
    pub adverts_sent: u64,
    /// Adverts accepted.
    pub adverts_received: u64,
    /// Adverts rejected, by reason.
    pub adverts_rejected: BTreeMap<String, u64>,
    /// Tracker states (name -> up).
    pub trackers: BTreeMap<String, bool>,
    /// Times fenced by the watchdog.
    pub fenced: u64,
    /// ARP conflicts seen.
    pub arp_conflicts: u64,
}

/// Shared status of every instance.
pub type StatusBoard = Arc<RwLock<BTreeMap<String, InstanceStatus>>>;
