//! The proxy's Prometheus metrics, registered into the registry passed in. Hot paths hold
//! the per-shard and per-server handles, never look a series up by labels.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::ProxySpec;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    shard: String,
    addr: String,
    role: String,
}

/// Why the proxy closed a client connection.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, reason = "label values are snake_case")]
pub enum Disconnect {
    /// Answers waiting for it exceeded `client_output_buffer_limit`.
    output_limit,
    /// It sent malformed or oversized RESP.
    protocol_error,
    /// `max_clients` connections were already open.
    max_clients,
}

impl Disconnect {
    /// Every reason, to export zeros from the start.
    pub const ALL: [Disconnect; 3] = [
        Disconnect::output_limit,
        Disconnect::protocol_error,
        Disconnect::max_clients,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: Disconnect,
}

/// One shard's handles.
#[derive(Clone, Debug, Default)]
pub struct ShardMetrics {
    /// Requests (and split parts) sent to the shard.
    pub requests: Counter,
    /// Keys answered as misses because the shard was dead.
    pub misses: Counter,
    /// Writes (and reads without a miss answer) refused because the shard was dead.
    pub rejected: Counter,
    /// Requests that failed on the way (timeout, connection lost, malformed reply).
    pub errors: Counter,
    /// 1 while the shard's master is usable.
    pub up: Gauge,
}

/// One backend server's handles.
#[derive(Clone, Debug, Default)]
pub struct ServerMetrics {
    /// 1 while usable.
    pub up: Gauge,
    /// Failed probes.
    pub probe_failures: Counter,
    /// Health transitions (up <-> down).
    pub transitions: Counter,
    /// For a master: its shard's `shard_up` gauge, which follows it.
    pub shard_up: Option<Gauge>,
}

/// Every handle of the proxy.
#[derive(Debug)]
pub struct Metrics {
    /// Per shard, by shard index.
    pub shards: Vec<ShardMetrics>,
    /// Per server, by server index.
    pub servers: Vec<ServerMetrics>,
    /// Open client connections.
    pub clients: Gauge,
    disconnects: Family<ReasonLabels, Counter>,
}

impl Metrics {
    /// Register every series for `spec` (servers numbered shard by shard, master first).
    pub fn register(registry: &mut Registry, spec: &ProxySpec) -> Metrics {
        let reg = registry.sub_registry_with_prefix("hastack_cache");
        let requests = Family::<ShardLabels, Counter>::default();
        let misses = Family::<ShardLabels, Counter>::default();
        let rejected = Family::<ShardLabels, Counter>::default();
        let errors = Family::<ShardLabels, Counter>::default();
        let shard_up = Family::<ShardLabels, Gauge>::default();
        let slots = Family::<ShardLabels, Gauge>::default();
        let server_up = Family::<ServerLabels, Gauge>::default();
        let probe_failures = Family::<ServerLabels, Counter>::default();
        let transitions = Family::<ServerLabels, Counter>::default();
        let clients = Gauge::default();
        let disconnects = Family::<ReasonLabels, Counter>::default();
        reg.register(
            "requests",
            "Requests and split parts sent to a shard",
            requests.clone(),
        );
        reg.register(
            "dead_shard_misses",
            "Keys answered as cache misses because their shard was dead",
            misses.clone(),
        );
        reg.register(
            "dead_shard_rejections",
            "Writes refused because their shard was dead",
            rejected.clone(),
        );
        reg.register(
            "backend_errors",
            "Requests that failed on the way to or from a shard (timeout, connection lost, malformed reply)",
            errors.clone(),
        );
        reg.register(
            "shard_up",
            "1 while the shard's master is usable",
            shard_up.clone(),
        );
        reg.register(
            "shard_slots",
            "Slots owned by the shard (the slot map)",
            slots.clone(),
        );
        reg.register(
            "server_up",
            "1 while the backend server is usable",
            server_up.clone(),
        );
        reg.register(
            "probe_failures",
            "Failed active probes (PING) of a backend server",
            probe_failures.clone(),
        );
        reg.register(
            "server_transitions",
            "Health transitions of a backend server",
            transitions.clone(),
        );
        reg.register(
            "client_connections",
            "Open client connections",
            clients.clone(),
        );
        reg.register(
            "client_disconnects",
            "Client connections closed by the proxy, by reason",
            disconnects.clone(),
        );
        for reason in Disconnect::ALL {
            let _ = disconnects.get_or_create(&ReasonLabels { reason });
        }
        let mut shards = Vec::new();
        let mut servers = Vec::new();
        for (i, s) in spec.shards.iter().enumerate() {
            let l = ShardLabels {
                shard: s.name.clone(),
            };
            slots
                .get_or_create(&l)
                .set(i64::try_from(spec.slots.count(i)).unwrap_or(i64::MAX));
            shards.push(ShardMetrics {
                requests: requests.get_or_create(&l).clone(),
                misses: misses.get_or_create(&l).clone(),
                rejected: rejected.get_or_create(&l).clone(),
                errors: errors.get_or_create(&l).clone(),
                up: shard_up.get_or_create(&l).clone(),
            });
            let master_up = shard_up.get_or_create(&l).clone();
            let roles = std::iter::once((s.master, "master"))
                .chain(s.replicas.iter().map(|&r| (r, "replica")));
            for (addr, role) in roles {
                let l = ServerLabels {
                    shard: s.name.clone(),
                    addr: addr.to_string(),
                    role: role.to_string(),
                };
                servers.push(ServerMetrics {
                    up: server_up.get_or_create(&l).clone(),
                    probe_failures: probe_failures.get_or_create(&l).clone(),
                    transitions: transitions.get_or_create(&l).clone(),
                    shard_up: (role == "master").then(|| master_up.clone()),
                });
            }
        }
        Metrics {
            shards,
            servers,
            clients,
            disconnects,
        }
    }

    /// Count a disconnect.
    pub fn disconnect(&self, reason: Disconnect) {
        self.disconnects
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}
