//! The embedded store's driver: one task owns the [`Store`] and the [`Leases`] table, takes
//! requests from a queue, applies them in batches (group commit: one fsync for everything
//! queued meanwhile), expires leases on time, and publishes the new revision to watchers.
//!
//! Everything goes through this one queue in arrival order, which is what makes the store
//! linearizable without locks: a request is answered only after the batch holding it (and
//! every batch before) is durable.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use redb::Database;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use super::ServeError;
use super::leases::Leases;
use super::recent::Recent;
use super::store::{HistoryRead, Identity, KeyRange, Op, OpResult, Store};

/// Most requests applied in one batch.
const MAX_BATCH: usize = 1024;
/// Queue depth in front of the driver; callers wait (backpressure) when it is full.
const QUEUE: usize = 4096;
/// Events kept in memory for caught-up watchers.
const RECENT_EVENTS: usize = 8192;

/// The revisions watchers follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revs {
    /// Current revision.
    pub revision: i64,
    /// Compact revision.
    pub compact: i64,
}

/// The answer to one request: the result and the header revision.
pub type Reply = Result<(OpResult, i64), ServeError>;

struct Cmd {
    op: Op,
    reply: oneshot::Sender<Reply>,
}

/// Metrics of the embedded store.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Requests by kind.
    pub requests: Family<Vec<(String, String)>, Counter>,
    /// Refused requests by kind.
    pub refused: Family<Vec<(String, String)>, Counter>,
    /// Committed batches.
    pub commits: Counter,
    /// Commit time (fsync included).
    pub commit_seconds: Histogram,
    /// Current revision.
    pub revision: Gauge,
    /// Compact revision.
    pub compact_revision: Gauge,
    /// Live leases.
    pub leases: Gauge,
    /// Leases that expired.
    pub leases_expired: Counter,
    /// Live watchers.
    pub watchers: Gauge,
    /// Open watch streams.
    pub watch_streams: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            refused: Family::default(),
            commits: Counter::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            revision: Gauge::default(),
            compact_revision: Gauge::default(),
            leases: Gauge::default(),
            leases_expired: Counter::default(),
            watchers: Gauge::default(),
            watch_streams: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Register every metric under `coord_`.
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("coord");
        r.register("requests", "Requests by kind", self.requests.clone());
        r.register("refused", "Refused requests by kind", self.refused.clone());
        r.register(
            "commits",
            "Committed (fsync'd) batches",
            self.commits.clone(),
        );
        r.register(
            "commit_seconds",
            "Time to commit a batch, fsync included",
            self.commit_seconds.clone(),
        );
        r.register("revision", "Current revision", self.revision.clone());
        r.register(
            "compact_revision",
            "Compact revision",
            self.compact_revision.clone(),
        );
        r.register("leases", "Live leases", self.leases.clone());
        r.register(
            "leases_expired",
            "Leases that expired",
            self.leases_expired.clone(),
        );
        r.register("watchers", "Live watchers", self.watchers.clone());
        r.register(
            "watch_streams",
            "Open watch streams",
            self.watch_streams.clone(),
        );
    }
}

/// A handle to the driver: cheap to clone.
#[derive(Debug, Clone)]
pub struct Core {
    tx: mpsc::Sender<Cmd>,
    revs: watch::Receiver<Revs>,
    db: Arc<Database>,
    identity: Identity,
    recent: Arc<parking_lot::RwLock<Recent>>,
    /// Metrics.
    pub metrics: Metrics,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cmd").field("op", &self.op).finish()
    }
}

impl Core {
    /// Start the driver over `store` with persisted lease `grants`. It runs until `shutdown`
    /// fires or the storage fails; the returned handle resolves then (with the storage error,
    /// if any).
    pub fn start(
        store: Store,
        grants: Vec<(i64, i64)>,
        max_leases: usize,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> (Core, tokio::task::JoinHandle<Result<(), ServeError>>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let revs = Revs {
            revision: store.revision(),
            compact: store.compact_revision(),
        };
        let (rev_tx, rev_rx) = watch::channel(revs);
        let mut leases = Leases::new(max_leases);
        leases.restore(Instant::now(), grants);
        info!(
            revision = revs.revision,
            compact_revision = revs.compact,
            leases = leases.len(),
            "store opened; leases restored with a full TTL"
        );
        metrics.revision.set(revs.revision);
        metrics.compact_revision.set(revs.compact);
        metrics.leases.set(leases.len() as i64);
        let recent = Arc::new(parking_lot::RwLock::new(Recent::new(
            revs.revision,
            RECENT_EVENTS,
        )));
        let core = Core {
            tx,
            revs: rev_rx,
            db: store.db(),
            identity: store.identity(),
            recent: recent.clone(),
            metrics: metrics.clone(),
        };
        let task = tokio::spawn(drive(store, leases, rx, rev_tx, recent, metrics, shutdown));
        (core, task)
    }

    /// Apply one request and wait for its durable answer.
    pub async fn call(&self, op: Op) -> Reply {
        let kind = op_name(&op);
        self.metrics
            .requests
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc();
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd { op, reply })
            .await
            .map_err(|_| ServeError::Stopping)?;
        let r = rx.await.map_err(|_| ServeError::Stopping)?;
        if r.is_err() {
            self.metrics
                .refused
                .get_or_create(&vec![("kind".into(), kind.into())])
                .inc();
        }
        r
    }

    /// Follow the revision (watchers wait on this).
    pub fn revs(&self) -> watch::Receiver<Revs> {
        self.revs.clone()
    }

    /// The database, for history reads.
    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    /// Cluster and member id.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// Events in `[from, to]` from memory, if the cache reaches back to `from`.
    pub fn recent(
        &self,
        range: &KeyRange<'_>,
        from: i64,
        to: i64,
        max_events: usize,
        max_bytes: usize,
    ) -> Option<HistoryRead> {
        self.recent
            .read()
            .read(range, from, to, max_events, max_bytes)
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Range(_) => "range",
        Op::Put(_) => "put",
        Op::Delete(_) => "delete_range",
        Op::Txn(_) => "txn",
        Op::Compact(_) => "compact",
        Op::Grant { .. } => "lease_grant",
        Op::Revoke(_) => "lease_revoke",
        Op::KeepAlive(_) => "lease_keepalive",
        Op::TimeToLive { .. } => "lease_timetolive",
        Op::Leases => "lease_leases",
    }
}

async fn drive(
    mut store: Store,
    mut leases: Leases,
    mut rx: mpsc::Receiver<Cmd>,
    rev_tx: watch::Sender<Revs>,
    recent: Arc<parking_lot::RwLock<Recent>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let mut batch: Vec<Cmd> = Vec::with_capacity(MAX_BATCH);
    loop {
        let next_expiry = leases.next_expiry();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            cmd = rx.recv() => match cmd {
                Some(c) => batch.push(c),
                None => break,
            },
            _ = sleep_until_opt(next_expiry) => {}
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        let expired = leases.expired(now);
        let mut ops: Vec<Op> = expired.iter().map(|id| Op::Revoke(*id)).collect();
        let internal = ops.len();
        ops.extend(batch.iter().map(|c| c.op.clone()));
        let started = Instant::now();
        // redb commits block on fsync: run the batch on the blocking pool and take the state
        // back after.
        let joined = tokio::task::spawn_blocking(move || {
            let r = store.apply(&ops, &mut leases, now);
            (store, leases, r)
        })
        .await;
        let (s, l, result) = match joined {
            Ok(x) => x,
            Err(e) => {
                error!(error = %e, "the store's batch panicked; stopping");
                for c in batch.drain(..) {
                    let _ = c
                        .reply
                        .send(Err(ServeError::Storage("internal error".into())));
                }
                return Err(ServeError::Storage(format!("batch task failed: {e}")));
            }
        };
        store = s;
        leases = l;
        let applied = match result {
            Ok(a) => a,
            Err(e) => {
                // Fail-stop: nothing of this batch may be acknowledged, and memory may now be
                // ahead of the disk. A restart recovers from the last commit.
                error!(error = ?e, "storage failed; the server stops");
                for c in batch.drain(..) {
                    let _ = c.reply.send(Err(e.clone()));
                }
                return Err(e);
            }
        };
        // Watchers find the batch's events in memory before they learn its revision.
        recent.write().push(applied.events);
        if applied.committed {
            metrics.commits.inc();
            metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        if internal > 0 {
            debug!(leases = ?expired, "leases expired");
            metrics.leases_expired.inc_by(internal as u64);
        }
        for (i, c) in batch.drain(..).enumerate() {
            let r = applied.results[internal + i].clone();
            let rev = applied.revisions[internal + i];
            let _ = c.reply.send(r.map(|r| (r, rev)));
        }
        metrics.revision.set(applied.revision);
        metrics.compact_revision.set(applied.compact_revision);
        metrics.leases.set(leases.len() as i64);
        rev_tx.send_if_modified(|r| {
            let new = Revs {
                revision: applied.revision,
                compact: applied.compact_revision,
            };
            let changed = *r != new;
            *r = new;
            changed
        });
    }
    Ok(())
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        // A lease expires at most this late: a little after its deadline, so that a renewal
        // in flight at the deadline is not beaten by a timer firing early.
        Some(t) => tokio::time::sleep_until(t + Duration::from_millis(1)).await,
        None => std::future::pending().await,
    }
}
