//! `hastack vip`: floating virtual IPs, the job keepalived does, without leaving the address
//! behind.
//!
//! Two or more hosts share virtual IPv4 addresses. One (the master) holds them and sends VRRP
//! advertisements; the others watch and take over when the adverts stop. The protocol is
//! VRRPv3 (RFC 5798, RFC 9568) or VRRPv2 (RFC 3768), wire-compatible with keepalived.
//!
//! Code map:
//!
//! * [`packet`]: the wire format (pure, fuzzed).
//! * [`state`]: the instance state machine (pure; time passed in; property-tested).
//! * [`driver`]: the per-instance IO loop: raw socket, netlink, ARP, trackers, witness.
//! * [`guard`]: the watchdog process that withdraws the addresses if the daemon freezes or
//!   dies; with the kernel-side address lease in [`netlink`], the "never two holders" story.
//! * [`witness`]: optional third-party arbitration against one-way loss.
//! * [`auth`]: HMAC-SHA256 adverts with anti-replay.
//! * [`config`]: the `[vip]` section; [`metrics`]: Prometheus metrics and JSON status.
//!
//! Entry point: [`run`] (the CLI's `hastack vip --config FILE` calls it); the guard process
//! runs [`guard::run_guard`].
//!
//! What it deliberately does not do: IPv6 virtual addresses (unsolicited neighbour
//! advertisements are not implemented), virtual MAC addresses (like keepalived's default, the
//! interface's own MAC answers for the VIP), sync groups, and LVS. Parsing argv, signals and
//! the tracing subscriber are the CLI's job.

pub mod auth;
pub mod config;
pub mod driver;
pub mod guard;
pub mod metrics;
pub mod net;
pub mod netlink;
pub mod packet;
pub mod state;
pub mod sys;
pub mod track;
pub mod witness;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use hastack_admin::{AdminHandler, AdminRequest, AdminResponse, HandlerFuture, SharedRegistry};
use http::{Method, StatusCode};
use parking_lot::RwLock;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use config::{Config, load, summary};

/// Errors of `hastack vip`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A missing capability (CAP_NET_ADMIN / CAP_NET_RAW), with what to do about it.
    #[error("{0}")]
    Privilege(String),
    /// A netlink request failed.
    #[error("netlink: {0}")]
    Netlink(String),
    /// A socket or process operation failed.
    #[error("{0}")]
    Io(String),
    /// The config does not fit this host (missing interface, no address).
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// The same error, its message prefixed with `what`.
    #[must_use]
    pub fn context(self, what: &str) -> Error {
        match self {
            Error::Privilege(m) => Error::Privilege(format!("{what}: {m}")),
            Error::Netlink(m) => Error::Netlink(format!("{what}: {m}")),
            Error::Io(m) => Error::Io(format!("{what}: {m}")),
            Error::Config(m) => Error::Config(format!("{what}: {m}")),
        }
    }
}

/// How the daemon starts its guard process.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Program and arguments that run [`guard::run_guard`] (normally this binary with
    /// `vip --guard`). `None` disables the guard even if the config enables it.
    pub guard_command: Option<(PathBuf, Vec<String>)>,
}

/// Fail early, and clearly, without CAP_NET_ADMIN and CAP_NET_RAW.
pub fn check_privileges() -> Result<(), Error> {
    let missing = sys::missing_caps();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Privilege(format!(
            "hastack vip needs CAP_NET_ADMIN (to add and remove addresses) and CAP_NET_RAW (raw VRRP and ARP sockets); missing: {}. Run it as root, or grant them (systemd: AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW; or setcap cap_net_admin,cap_net_raw+ep on the binary)",
            missing.join(", ")
        )))
    }
}

struct Admin {
    status: metrics::StatusBoard,
}

impl AdminHandler for Admin {
    fn handle(&self, req: &AdminRequest) -> Option<HandlerFuture> {
        if req.method == Method::GET && req.path == "/status" {
            let body = serde_json::json!({ "vip": { "instances": self.status.read().values().cloned().collect::<Vec<_>>() } });
            Some(Box::pin(async move {
                AdminResponse::json(StatusCode::OK, &body)
            }))
        } else {
            None
        }
    }

    fn describe(&self) -> &'static str {
        "GET /status"
    }
}

/// Run every instance (and the witness, if configured) until `shutdown`; then resign and
/// remove the addresses. Returns an error if an instance cannot start.
pub async fn run(
    cfg: Config,
    opts: Options,
    registry: SharedRegistry,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    check_privileges()?;
    let nl = netlink::Netlink::connect()?;
    let m = metrics::Metrics::default();
    m.register(&mut registry.lock());
    let status: metrics::StatusBoard = Arc::new(RwLock::new(Default::default()));
    let inner = shutdown.child_token();
    let mut tasks: JoinSet<Result<(), Error>> = JoinSet::new();

    if let Some(addr) = cfg.admin {
        let listener = hastack_admin::bind(addr)
            .await
            .map_err(|e| Error::Io(format!("cannot bind the admin listener {addr}: {e}")))?;
        info!(%addr, "admin listener");
        let handler = Arc::new(Admin {
            status: status.clone(),
        });
        tokio::spawn(hastack_admin::serve(
            listener,
            handler,
            registry.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(w) = cfg.witness_server.clone() {
        let t = inner.clone();
        tasks.spawn(async move { witness::run_server(w, t).await });
    }

    let (guard, mut guard_events) =
        match (&opts.guard_command, cfg.guard && !cfg.instances.is_empty()) {
            (Some((prog, args)), true) => {
                let (g, ev) = guard::GuardClient::spawn(prog.clone(), args.clone()).await?;
                (Some(Arc::new(g)), Some(ev))
            }
            _ => (None, None),
        };
    let shared = Arc::new(driver::Shared {
        nl,
        guard: guard.clone(),
        metrics: m,
        status,
        lease: cfg.address_lease,
        state_dir: cfg.state_dir.clone(),
    });
    let mut fence_txs: HashMap<u32, mpsc::UnboundedSender<()>> = HashMap::new();
    for (i, inst) in cfg.instances.into_iter().enumerate() {
        let id = u32::try_from(i).unwrap_or(u32::MAX);
        let (tx, rx) = mpsc::unbounded_channel();
        fence_txs.insert(id, tx);
        let sh = shared.clone();
        let t = inner.clone();
        tasks.spawn(async move {
            let name = inst.name.clone();
            driver::run_instance(id, inst, sh, rx, t)
                .await
                .map_err(|e| e.context(&format!("instance {name}")))
        });
    }
    if let Some(mut ev) = guard_events.take() {
        let stop = inner.clone();
        tokio::spawn(async move {
            while let Some(e) = ev.recv().await {
                match e {
                    guard::GuardEvent::Fenced(id) => {
                        if let Some(tx) = fence_txs.get(&id) {
                            let _ = tx.send(());
                        }
                    }
                    guard::GuardEvent::Lost => {
                        if stop.is_cancelled() {
                            break;
                        }
                        error!(
                            "the guard process exited; restarting it (until then only the kernel lease protects against a frozen daemon)"
                        );
                    }
                    guard::GuardEvent::Restarted => info!("guard process running again"),
                }
            }
        });
    }

    let mut result = Ok(());
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap_or_else(|e| Err(Error::Io(format!("an instance task failed: {e}"))));
        if let Err(e) = r {
            // One instance cannot run: stop the others cleanly and report it.
            if result.is_ok() {
                result = Err(e);
            }
            inner.cancel();
        }
    }
    if let Some(g) = guard {
        g.close();
        // Let the guard read "bye" before we exit (it would otherwise see EOF, which is
        // fine too: we hold nothing).
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if result.is_ok() && !shutdown.is_cancelled() {
        warn!("every instance stopped");
    }
    result
}
