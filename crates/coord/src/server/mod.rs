//! `hastack coord`: an embedded, single-node, crash-safe store that speaks the part of the
//! etcd v3 gRPC API hastack uses, so the same client code runs against it and against etcd.
//!
//! **One node, not a quorum.** It survives its own crash (every acknowledged write is fsync'd
//! by redb before the answer) but not the loss of its disk or machine, and while it is down
//! nothing can be coordinated. Production runs etcd (3 or 5 members); moving there is a
//! change of endpoints (see docs/coord.md).
//!
//! Pieces: [`store`] (the MVCC data model over redb), [`leases`] (the pure lease table),
//! [`core`] (the driver: batching, group commit, lease expiry), [`grpc`] and [`watch`] (the
//! etcd services), [`config`] (the `[coord]` section).

pub mod config;
pub mod core;
mod error;
pub mod grpc;
pub mod harness;
pub mod leases;
mod recent;
pub mod store;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hastack_admin::{AdminHandler, AdminRequest, AdminResponse, HandlerFuture, SharedRegistry};
use http::{Method, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::ServerConfig;
pub use error::ServeError;

use crate::Error;
use crate::proto::etcdserverpb as pb;

/// File name of the database inside `data_dir`.
pub const DB_FILE: &str = "coord.redb";
/// etcd's allowance for gRPC framing on top of `max_request_bytes`.
const GRPC_OVERHEAD: usize = 512 * 1024;

/// The gRPC decoding limit: room for a request somewhat over `max_request_bytes`, so that it
/// is decoded and refused with etcd's own message ("request is too large") rather than a
/// transport error, while a hostile peer still cannot make the server buffer more than this.
fn decode_limit(max_request_bytes: usize) -> usize {
    2 * max_request_bytes + GRPC_OVERHEAD
}

/// Where the store keeps its data.
#[derive(Debug, Clone)]
pub enum Storage {
    /// `DB_FILE` in this directory (created if missing).
    Dir(PathBuf),
    /// In memory: nothing survives the process (tests, fuzzing).
    Memory,
}

/// A running embedded server.
#[derive(Debug)]
pub struct Running {
    /// The gRPC address clients use.
    pub addr: SocketAddr,
    /// The admin listener's address, if any.
    pub admin: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Running {
    /// `http://addr`, the endpoint to give clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop serving and wait until the store is closed.
    pub async fn stop(self) -> Result<(), Error> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Wait until the server stops on its own (storage failure) or is stopped.
    pub async fn wait(self) -> Result<(), Error> {
        self.task
            .await
            .map_err(|e| Error::Server(format!("server task failed: {e}")))?
    }
}

/// Start the server: open the store, bind the listeners, serve until `shutdown`. Returns once
/// it is accepting connections.
pub async fn start(
    cfg: &ServerConfig,
    storage: Storage,
    registry: SharedRegistry,
    shutdown: CancellationToken,
) -> Result<Running, Error> {
    let (store, grants, db_path) = match &storage {
        Storage::Dir(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Server(format!("cannot create data_dir {}: {e}", dir.display()))
            })?;
            let path = dir.join(DB_FILE);
            let p = path.clone();
            let retain = cfg.history_revisions;
            let (store, grants) =
                tokio::task::spawn_blocking(move || store::Store::open(&p, retain))
                    .await
                    .map_err(|e| Error::Server(format!("opening the store failed: {e}")))?
                    .map_err(|e| Error::Server(format!("cannot open {}: {e:?}", path.display())))?;
            (store, grants, Some(path))
        }
        Storage::Memory => (
            store::Store::in_memory(cfg.history_revisions)
                .map_err(|e| Error::Server(format!("cannot create the store: {e:?}")))?,
            Vec::new(),
            None,
        ),
    };
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| Error::Server(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Server(format!("listener address: {e}")))?;
    let admin_listener = match cfg.admin {
        Some(a) => Some(
            hastack_admin::bind(a)
                .await
                .map_err(|e| Error::Server(format!("cannot listen on admin address {a}: {e}")))?,
        ),
        None => None,
    };
    let admin = admin_listener.as_ref().and_then(|l| l.local_addr().ok());

    let metrics = core::Metrics::default();
    metrics.register(&mut registry.lock());
    let inner = shutdown.child_token();
    let (core, core_task) =
        core::Core::start(store, grants, cfg.max_leases, metrics, inner.clone());
    let svc = grpc::Services {
        core: core.clone(),
        max_request_bytes: cfg.max_request_bytes,
        client_url: cfg
            .advertise
            .clone()
            .unwrap_or_else(|| format!("http://{addr}")),
        watch: watch::WatchLimits {
            max_watchers: cfg.max_watchers,
            progress_notify: cfg.progress_notify,
            active: Arc::new(AtomicUsize::new(0)),
        },
        db_path: db_path.clone(),
    };
    if let Some(l) = admin_listener {
        let handler = Arc::new(Admin {
            svc: svc.clone(),
            storage: match &db_path {
                Some(p) => p.display().to_string(),
                None => "memory".into(),
            },
        });
        tokio::spawn(hastack_admin::serve(
            l,
            handler,
            registry.clone(),
            inner.clone(),
        ));
    }
    let limit = decode_limit(cfg.max_request_bytes);
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(cfg.max_streams_per_connection)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(pb::kv_server::KvServer::new(svc.clone()).max_decoding_message_size(limit))
        .add_service(
            pb::lease_server::LeaseServer::new(svc.clone()).max_decoding_message_size(limit),
        )
        .add_service(
            pb::watch_server::WatchServer::new(svc.clone()).max_decoding_message_size(limit),
        )
        .add_service(pb::maintenance_server::MaintenanceServer::new(svc.clone()))
        .add_service(pb::cluster_server::ClusterServer::new(svc));
    info!(%addr, admin = ?admin, storage = ?storage, "hastack coord serving (one node, not a quorum)");
    let stop = inner.clone();
    let task = tokio::spawn(async move {
        // Nagle off on every accepted connection (the builder's `tcp_nodelay` only applies to
        // listeners tonic binds itself): streamed answers (keep-alives, watch events) are
        // small writes that Nagle and delayed ACKs would hold back ~40 ms.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let serve = router.serve_with_incoming_shutdown(incoming, stop.cancelled());
        tokio::pin!(serve);
        let mut core_task = core_task;
        let result = tokio::select! {
            r = &mut serve => r.map_err(|e| Error::Server(format!("gRPC server failed: {e}"))),
            r = &mut core_task => {
                // The store stopped by itself: a storage failure (fail-stop).
                stop.cancel();
                let _ = (&mut serve).await;
                return match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(Error::Server(format!("the store failed: {e:?}"))),
                    Err(e) => Err(Error::Server(format!("the store task failed: {e}"))),
                };
            }
        };
        stop.cancel();
        match core_task.await {
            Ok(Err(e)) => Err(Error::Server(format!("the store failed: {e:?}"))),
            _ => result,
        }
    });
    Ok(Running {
        addr,
        admin,
        shutdown: inner,
        task,
    })
}

struct Admin {
    svc: grpc::Services,
    storage: String,
}

impl AdminHandler for Admin {
    fn handle(&self, req: &AdminRequest) -> Option<HandlerFuture> {
        if req.method != Method::GET || req.path != "/status" {
            return None;
        }
        let revs = *self.svc.core.revs().borrow();
        let id = self.svc.core.identity();
        let body = serde_json::json!({
            "coord": {
                "mode": "embedded single node (not a quorum)",
                "version": grpc::VERSION,
                "storage": self.storage,
                "cluster_id": format!("{:x}", id.cluster_id),
                "member_id": format!("{:x}", id.member_id),
                "revision": revs.revision,
                "compact_revision": revs.compact,
                "leases": self.svc.core.metrics.leases.get(),
                "watchers": self.svc.watch.active.load(Ordering::Relaxed),
                "client_url": self.svc.client_url,
            }
        });
        Some(Box::pin(async move {
            AdminResponse::json(StatusCode::OK, &body)
        }))
    }

    fn describe(&self) -> &'static str {
        "GET /status"
    }
}
