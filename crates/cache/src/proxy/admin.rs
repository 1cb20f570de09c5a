//! The proxy's admin endpoints: `GET /status` (JSON: shards, servers, slot map, clients).
//! `/metrics` and `/healthz` come from `hastack_admin`.

use std::sync::Arc;

use hastack_admin::{AdminHandler, AdminRequest, AdminResponse, HandlerFuture};
use http::{Method, StatusCode};
use serde::Serialize;

use super::{LastProbe, Role, Server, Shared};
use crate::slotmap::ranges_text;

#[derive(Debug)]
pub(super) struct CacheAdmin(pub(super) Arc<Shared>);

#[derive(Serialize)]
struct Status {
    listen: String,
    read_policy: &'static str,
    clients: usize,
    pubsub_shard: String,
    shards: Vec<ShardStatus>,
}

#[derive(Serialize)]
struct ShardStatus {
    name: String,
    index: usize,
    state: &'static str,
    slots: String,
    slot_count: usize,
    master: ServerStatus,
    replicas: Vec<ServerStatus>,
}

#[derive(Serialize)]
struct ServerStatus {
    addr: String,
    role: Role,
    state: &'static str,
    usable: bool,
    last_probe: LastProbe,
}

fn server(s: &Server) -> ServerStatus {
    ServerStatus {
        addr: s.addr.to_string(),
        role: s.role,
        state: s.state().as_str(),
        usable: s.usable(),
        last_probe: s.last_probe(),
    }
}

/// The `/status` document.
pub(super) fn status(shared: &Shared) -> serde_json::Value {
    let spec = &shared.spec;
    let st = Status {
        listen: spec.listen.to_string(),
        read_policy: spec.read_policy.name(),
        clients: shared.clients(),
        pubsub_shard: shared.shard_name(spec.pubsub_shard).to_string(),
        shards: shared
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| ShardStatus {
                name: s.name.to_string(),
                index: i,
                state: s.state(),
                slots: ranges_text(&spec.slots.ranges(i)),
                slot_count: spec.slots.count(i),
                master: server(&s.master),
                replicas: s.replicas.iter().map(|r| server(r)).collect(),
            })
            .collect(),
    };
    serde_json::to_value(st).unwrap_or_default()
}

impl AdminHandler for CacheAdmin {
    fn handle(&self, req: &AdminRequest) -> Option<HandlerFuture> {
        if req.method == Method::GET && req.path == "/status" {
            let doc = status(&self.0);
            return Some(Box::pin(async move {
                AdminResponse::json(StatusCode::OK, &doc)
            }));
        }
        None
    }

    fn describe(&self) -> &'static str {
        "GET /status"
    }
}
