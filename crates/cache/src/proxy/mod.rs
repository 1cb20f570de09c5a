//! `hastack cache proxy`: a sharding Redis proxy.
//!
//! * **Control plane** (this module, on the caller's runtime): the shared state
//!   ([`Shared`]: spec, shards, servers with their health, metrics), one PING prober per
//!   server (`hastack_probe`'s scheduler feeding `hastack_core`'s `HealthMachine`), the admin
//!   listener (`/status`, `/metrics`).
//! * **Data plane**: `workers` threads, each with its own single-threaded runtime, its own
//!   `SO_REUSEPORT` listening socket, and its own multiplexed connection to every backend
//!   server ([`backend`]); a client's requests never leave the worker that accepted it
//!   ([`client`]). Pub/sub connections get their own pinned backend connection ([`pubsub`]).
//!
//! **A dead shard is a miss, never a rehash.** The slot map never changes because a shard
//! died: requests for its keys are answered by the proxy (reads as misses, writes with
//! `-ERR shard NAME unavailable`) until its server is usable again, then flow to it again.

mod admin;
mod backend;
mod client;
pub mod metrics;
mod pubsub;
mod server;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hastack_admin::SharedRegistry;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use backend::{Failure, Sink};
pub use server::{LastProbe, Role, Server};

use crate::Error;
use crate::config::ProxySpec;
use crate::resp::write;
use backend::{BackendConfig, BackendRequest};
use metrics::{Disconnect, Metrics};
use server::{ProbeTarget, RespCheck};

/// How long connections may take to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// One shard group.
#[derive(Debug)]
pub struct ShardState {
    /// Name.
    pub name: Arc<str>,
    /// Its master.
    pub master: Arc<Server>,
    /// Its replicas.
    pub replicas: Vec<Arc<Server>>,
    rr: AtomicUsize,
}

impl ShardState {
    /// Round-robin start among the replicas.
    fn next_replica(&self) -> usize {
        self.rr.fetch_add(1, Ordering::Relaxed)
    }

    /// `up` (master usable), `degraded` (only replicas usable: reads under
    /// `prefer_replica`), `down` (nothing usable: every key is a miss).
    pub fn state(&self) -> &'static str {
        if self.master.usable() {
            "up"
        } else if self.replicas.iter().any(|r| r.usable()) {
            "degraded"
        } else {
            "down"
        }
    }
}

/// State shared by the control plane and every worker.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub spec: ProxySpec,
    /// Shards by index.
    pub shards: Vec<ShardState>,
    /// Every server, by id.
    pub servers: Vec<Arc<Server>>,
    /// Metric handles.
    pub metrics: Metrics,
    /// Fires at shutdown.
    pub shutdown: CancellationToken,
    clients: AtomicUsize,
    next_id: AtomicU64,
}

impl Shared {
    fn next_client_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The name of shard `i`.
    pub fn shard_name(&self, i: usize) -> &str {
        self.shards.get(i).map_or("?", |s| &s.name)
    }

    /// Open client connections.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }
}

/// One worker's handles: its connection to every backend server.
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    backends: Vec<mpsc::UnboundedSender<BackendRequest>>,
    backend_config: BackendConfig,
}

/// A running proxy.
#[derive(Debug)]
pub struct CacheProxy {
    shared: Arc<Shared>,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CacheProxy {
    /// Bind the listeners, start the probers, the workers and the admin listener. Must be
    /// called inside a tokio runtime, which runs the probers and the admin listener.
    pub async fn start(spec: ProxySpec, registry: SharedRegistry) -> Result<CacheProxy, Error> {
        let metrics = Metrics::register(&mut registry.lock(), &spec);
        let mut servers = Vec::new();
        let mut shards = Vec::new();
        for (i, s) in spec.shards.iter().enumerate() {
            let name: Arc<str> = s.name.as_str().into();
            let mut make = |addr, role| {
                let id = servers.len();
                let m = metrics.servers.get(id).cloned().unwrap_or_default();
                let server = Arc::new(Server::new(
                    id,
                    i,
                    name.clone(),
                    addr,
                    role,
                    &spec.health,
                    m,
                ));
                servers.push(server.clone());
                server
            };
            let master = make(s.master, Role::Master);
            let replicas = s.replicas.iter().map(|&r| make(r, Role::Replica)).collect();
            if let Some(m) = metrics.shards.get(i) {
                m.up.set(1);
            }
            shards.push(ShardState {
                name,
                master,
                replicas,
                rr: AtomicUsize::new(0),
            });
        }
        let shared = Arc::new(Shared {
            spec,
            shards,
            servers,
            metrics,
            shutdown: CancellationToken::new(),
            clients: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
        });
        let spec = &shared.spec;

        // Bind everything before starting anything.
        let admin_listener = match spec.admin {
            Some(addr) => Some(
                hastack_admin::bind(addr)
                    .await
                    .map_err(|source| Error::Bind {
                        what: "the admin listener",
                        addr,
                        source,
                    })?,
            ),
            None => None,
        };
        let admin = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        let sockets = bind_workers(spec.listen, spec.workers)?;
        let listen = sockets
            .first()
            .and_then(|s| s.local_addr().ok())
            .unwrap_or(spec.listen);

        for server in &shared.servers {
            hastack_probe::spawn_with(
                Arc::new(ProbeTarget(server.clone())),
                Arc::new(RespCheck {
                    password: spec.backend_password.clone(),
                    server: server.clone(),
                }),
                spec.health.schedule,
                shared.shutdown.clone(),
            );
        }
        let mut threads = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            let shared = shared.clone();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::Worker)?;
            let t = std::thread::Builder::new()
                .name(format!("hastack-cache-w{i}"))
                .spawn(move || rt.block_on(worker_main(shared, socket)))
                .map_err(Error::Worker)?;
            threads.push(t);
        }
        if let Some(l) = admin_listener {
            tokio::spawn(hastack_admin::serve(
                l,
                Arc::new(admin::CacheAdmin(shared.clone())),
                registry,
                shared.shutdown.clone(),
            ));
        }
        info!(
            listen = %listen,
            admin = %admin.map(|a| a.to_string()).unwrap_or_default(),
            shards = shared.shards.len(),
            workers = threads.len(),
            "cache proxy ready"
        );
        Ok(CacheProxy {
            shared,
            listen,
            admin,
            threads,
        })
    }

    /// The client listener's bound address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The shared state (status, tests).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stop accepting, let connections finish their answers (up to [`DRAIN_TIMEOUT`]),
    /// stop the probers and the admin listener, and join the workers.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// One `SO_REUSEPORT` socket per worker on `addr` (port 0: the first socket's port).
fn bind_workers(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>, Error> {
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n.max(1) {
        let l = bind_one(at).map_err(|source| Error::Bind {
            what: "the client listener",
            addr: at,
            source,
        })?;
        if let Ok(a) = l.local_addr() {
            at = a;
        }
        out.push(l);
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

async fn worker_main(shared: Arc<Shared>, socket: std::net::TcpListener) {
    let listener = match TcpListener::from_std(socket) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "worker cannot use its listening socket");
            return;
        }
    };
    let backend_config = BackendConfig {
        timeout: shared.spec.timeout,
        connect_timeout: shared.spec.connect_timeout,
        password: shared.spec.backend_password.clone(),
        limits: shared.spec.limits.reply,
    };
    let mut backends = Vec::with_capacity(shared.servers.len());
    for server in &shared.servers {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(backend::run(server.clone(), backend_config.clone(), rx));
        backends.push(tx);
    }
    let worker = Arc::new(Worker {
        shared: shared.clone(),
        backends,
        backend_config,
    });
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((mut stream, _)) => {
                if shared.clients.fetch_add(1, Ordering::AcqRel) >= shared.spec.max_clients {
                    shared.clients.fetch_sub(1, Ordering::AcqRel);
                    shared.metrics.disconnect(Disconnect::max_clients);
                    tokio::spawn(async move {
                        let _ = stream
                            .write_all(b"-ERR max number of clients reached\r\n")
                            .await;
                    });
                    continue;
                }
                let worker = worker.clone();
                let shared = shared.clone();
                tracker.spawn(async move {
                    client::serve(stream, worker).await;
                    shared.clients.fetch_sub(1, Ordering::AcqRel);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    tracker.close();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await;
}

/// The proxy's answer to `INFO`: a bulk string in Redis's `# Section` / `key:value` format.
pub fn info_text(shared: &Shared) -> Bytes {
    let mut t = String::new();
    let _ = write!(
        t,
        "# Server\r\nhastack_version:{}\r\nmode:proxy\r\nredis_mode:standalone\r\n\r\n# Clients\r\nconnected_clients:{}\r\n\r\n# Shards\r\nshards:{}\r\nread_policy:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        shared.clients(),
        shared.shards.len(),
        shared.spec.read_policy.name(),
    );
    for (i, s) in shared.shards.iter().enumerate() {
        let _ = write!(
            t,
            "shard_{i}:name={},state={},master={},replicas={},slots={}\r\n",
            s.name,
            s.state(),
            s.master.addr,
            s.replicas.len(),
            crate::slotmap::ranges_text(&shared.spec.slots.ranges(i)),
        );
    }
    let mut out = BytesMut::new();
    write::bulk(&mut out, t.as_bytes());
    out.freeze()
}
