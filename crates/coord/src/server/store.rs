//! The embedded store's MVCC key space over redb: etcd's data model on one node.
//!
//! * One global revision counter; every request that changes something (a put, a delete that
//!   deletes, a transaction whose branch changes something, a lease revocation that deletes
//!   keys) takes the next revision, and all its changes share it.
//! * Each key carries its create revision, mod revision, version (number of changes since its
//!   creation) and lease, exactly as etcd's `mvccpb.KeyValue`.
//! * Every change is also appended to a history table keyed by (revision, index) with the
//!   previous value, which watches replay from any retained revision. History older than the
//!   compact revision is gone; asking for it answers `ErrCompacted`, as etcd does.
//!
//! Requests are applied in batches, one redb write transaction per batch, committed with
//! redb's default durability (fsync) before any answer leaves: an acknowledged write survives
//! a kill -9 or a power loss. Reads in the same batch see the writes before them, and are
//! answered after the commit, so every answer is linearizable.
//!
//! Every transaction's path (which branch of each nested `Txn` runs) and every check that can
//! refuse it are decided against the state before it, as etcd does, so a refused request
//! changes nothing and an accepted one cannot fail halfway.
//!
//! Not supported (answered with a clear error): reads at a past revision (`Range` with a
//! revision below the current one). Nothing in hastack needs them; watches replay history.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use prost::Message;
use redb::{Database, ReadableTable, ReadableTableMetadata, Table, TableDefinition};

use super::ServeError;
use super::leases::{GrantError, Leases};
use crate::proto::etcdserverpb::{
    self as pb, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse, compare,
    request_op, response_op,
};
use crate::proto::mvccpb::{Event, KeyValue, event::EventType};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const HISTORY: TableDefinition<(i64, u32), &[u8]> = TableDefinition::new("history");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const LEASES: TableDefinition<i64, i64> = TableDefinition::new("leases");
const LEASE_KEYS: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("lease_keys");

const META_REVISION: &str = "revision";
const META_COMPACT: &str = "compact_revision";
const META_CLUSTER_ID: &str = "cluster_id";
const META_MEMBER_ID: &str = "member_id";

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// A request the store applies (the gRPC layer has decoded and size-checked it).
#[derive(Debug, Clone)]
pub enum Op {
    /// `KV.Range`.
    Range(RangeRequest),
    /// `KV.Put`.
    Put(PutRequest),
    /// `KV.DeleteRange`.
    Delete(DeleteRangeRequest),
    /// `KV.Txn`.
    Txn(TxnRequest),
    /// `KV.Compact` to this revision.
    Compact(i64),
    /// `Lease.LeaseGrant`: id (0 = pick one) and TTL in seconds.
    Grant {
        /// Requested id, 0 for any.
        id: i64,
        /// Requested TTL in seconds.
        ttl: i64,
    },
    /// `Lease.LeaseRevoke`, or the expiry of a lease.
    Revoke(i64),
    /// `Lease.LeaseKeepAlive`, one renewal.
    KeepAlive(i64),
    /// `Lease.LeaseTimeToLive`, with the attached keys when `keys`.
    TimeToLive {
        /// Lease id.
        id: i64,
        /// Whether to list the attached keys.
        keys: bool,
    },
    /// `Lease.LeaseLeases`.
    Leases,
}

/// The answer to an [`Op`]; the gRPC layer adds the header.
#[derive(Debug, Clone)]
pub enum OpResult {
    /// Answer to [`Op::Range`].
    Range(RangeResponse),
    /// Answer to [`Op::Put`].
    Put(PutResponse),
    /// Answer to [`Op::Delete`].
    Delete(DeleteRangeResponse),
    /// Answer to [`Op::Txn`].
    Txn(TxnResponse),
    /// [`Op::Compact`] done.
    Compacted,
    /// [`Op::Grant`]: the id and TTL granted.
    Granted {
        /// Lease id.
        id: i64,
        /// TTL granted, in seconds.
        ttl: i64,
    },
    /// [`Op::Revoke`] done; how many keys it deleted.
    Revoked(usize),
    /// [`Op::KeepAlive`]: the TTL granted, or `None` when the lease is gone (etcd answers
    /// TTL 0).
    KeptAlive(Option<i64>),
    /// [`Op::TimeToLive`]: remaining and granted TTL (remaining -1 when the lease is gone, as
    /// etcd answers) and the attached keys.
    TimeToLive {
        /// Seconds left, -1 when the lease does not exist.
        ttl: i64,
        /// TTL granted.
        granted: i64,
        /// Attached keys, when asked for.
        keys: Vec<Vec<u8>>,
    },
    /// [`Op::Leases`]: every lease id.
    Leases(Vec<i64>),
}

/// What a committed batch did, for the driver.
#[derive(Debug)]
pub struct Applied {
    /// One answer per op, in order.
    pub results: Vec<Result<OpResult, ServeError>>,
    /// The revision after the batch.
    pub revision: i64,
    /// Whether the batch was committed (it changed something).
    pub committed: bool,
    /// The compact revision after the batch.
    pub compact_revision: i64,
    /// Header revision to report for each op (the revision right after it).
    pub revisions: Vec<i64>,
    /// Every change of the batch, in order (for the watchers' in-memory cache).
    pub events: Vec<(i64, Event)>,
}

/// Identity of the store, stable across restarts (etcd's cluster and member ids).
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// Cluster id.
    pub cluster_id: u64,
    /// Member id.
    pub member_id: u64,
}

/// The MVCC store.
#[derive(Debug)]
pub struct Store {
    db: Arc<Database>,
    rev: i64,
    compact: i64,
    id: Identity,
    /// History revisions kept before automatic compaction.
    retain: i64,
    rng: fastrand::Rng,
}

type StoreResult<T> = Result<T, ServeError>;

fn storage(e: impl std::fmt::Display) -> ServeError {
    ServeError::Storage(e.to_string())
}

impl Store {
    /// Open (or create) the store in file `path`; returns it and the persisted lease grants.
    pub fn open(path: &Path, retain: i64) -> StoreResult<(Store, Vec<(i64, i64)>)> {
        let db = Database::create(path).map_err(storage)?;
        Store::init(db, retain)
    }

    /// A store in memory (tests, fuzzing). Nothing survives the process.
    pub fn in_memory(retain: i64) -> StoreResult<Store> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(storage)?;
        Ok(Store::init(db, retain)?.0)
    }

    fn init(db: Database, retain: i64) -> StoreResult<(Store, Vec<(i64, i64)>)> {
        let mut rng = fastrand::Rng::new();
        let txn = db.begin_write().map_err(storage)?;
        let (rev, compact, id, leases);
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            // Create every table so that readers never meet a missing one.
            txn.open_table(KV).map_err(storage)?;
            txn.open_table(HISTORY).map_err(storage)?;
            txn.open_table(LEASE_KEYS).map_err(storage)?;
            let lt = txn.open_table(LEASES).map_err(storage)?;
            let get = |m: &Table<&str, i64>, k: &str| -> StoreResult<Option<i64>> {
                Ok(m.get(k).map_err(storage)?.map(|v| v.value()))
            };
            // etcd starts at revision 1 (an empty store answers revision 1).
            rev = get(&meta, META_REVISION)?.unwrap_or(1);
            compact = get(&meta, META_COMPACT)?.unwrap_or(0);
            let mut ident = |m: &mut Table<&str, i64>, k: &str| -> StoreResult<u64> {
                match get(m, k)? {
                    Some(v) => Ok(v as u64),
                    None => {
                        let v = rng.u64(1..=i64::MAX as u64);
                        m.insert(k, v as i64).map_err(storage)?;
                        Ok(v)
                    }
                }
            };
            id = Identity {
                cluster_id: ident(&mut meta, META_CLUSTER_ID)?,
                member_id: ident(&mut meta, META_MEMBER_ID)?,
            };
            meta.insert(META_REVISION, rev).map_err(storage)?;
            leases = lt
                .iter()
                .map_err(storage)?
                .map(|r| r.map(|(k, v)| (k.value(), v.value())))
                .collect::<Result<Vec<_>, _>>()
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok((
            Store {
                db: Arc::new(db),
                rev,
                compact,
                id,
                retain: retain.max(1),
                rng,
            },
            leases,
        ))
    }

    /// The database, for watch readers (redb readers never block the writer).
    pub fn db(&self) -> Arc<Database> {
        self.db.clone()
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// The compact revision.
    pub fn compact_revision(&self) -> i64 {
        self.compact
    }

    /// Cluster and member id.
    pub fn identity(&self) -> Identity {
        self.id
    }

    /// Apply `ops` in one write transaction and commit it (fsync). `Err` only when the storage
    /// itself failed; the caller must then stop serving (fail-stop), since nothing of the batch
    /// may be acknowledged.
    pub fn apply(
        &mut self,
        ops: &[Op],
        leases: &mut Leases,
        now: tokio::time::Instant,
    ) -> StoreResult<Applied> {
        let txn = self.db.begin_write().map_err(storage)?;
        let mut results = Vec::with_capacity(ops.len());
        let mut revisions = Vec::with_capacity(ops.len());
        let (rev, compact, dirty, events);
        {
            let mut w = Writer {
                kv: txn.open_table(KV).map_err(storage)?,
                hist: txn.open_table(HISTORY).map_err(storage)?,
                leases_t: txn.open_table(LEASES).map_err(storage)?,
                lkeys: txn.open_table(LEASE_KEYS).map_err(storage)?,
                meta: txn.open_table(META).map_err(storage)?,
                rev: self.rev,
                compact: self.compact,
                sub: 0,
                dirty: false,
                events: Vec::new(),
                rng: &mut self.rng,
            };
            for op in ops {
                let r = w.apply(op, leases, now);
                if let Err(ServeError::Storage(e)) = &r {
                    return Err(ServeError::Storage(e.clone()));
                }
                results.push(r);
                revisions.push(w.rev);
            }
            // Automatic retention: keep `retain` revisions of history; compact in steps of an
            // eighth of that so the cost is amortised.
            let slack = (self.retain / 8).max(1);
            if w.rev - w.compact > self.retain + slack {
                w.compact_to(w.rev - self.retain)?;
            }
            w.meta.insert(META_REVISION, w.rev).map_err(storage)?;
            rev = w.rev;
            compact = w.compact;
            dirty = w.dirty;
            events = std::mem::take(&mut w.events);
        }
        if dirty {
            txn.commit().map_err(storage)?;
        } else {
            // Reads only: every earlier write is committed already, so answering without a
            // commit (and its fsync) is still linearizable.
            txn.abort().map_err(storage)?;
        }
        self.rev = rev;
        self.compact = compact;
        Ok(Applied {
            results,
            revision: rev,
            committed: dirty,
            compact_revision: compact,
            revisions,
            events,
        })
    }
}

/// The tables of one write transaction, and the revision being built.
struct Writer<'t, 'r> {
    kv: Table<'t, &'static [u8], &'static [u8]>,
    hist: Table<'t, (i64, u32), &'static [u8]>,
    leases_t: Table<'t, i64, i64>,
    lkeys: Table<'t, (i64, &'static [u8]), ()>,
    meta: Table<'t, &'static str, i64>,
    /// Revision of the last completed op.
    rev: i64,
    compact: i64,
    /// Changes made so far under revision `rev + 1`.
    sub: u32,
    /// Whether anything was written (a batch that wrote nothing is not committed).
    dirty: bool,
    /// The changes recorded so far.
    events: Vec<(i64, Event)>,
    rng: &'r mut fastrand::Rng,
}

/// The keys a request names: one key, or `[key, end)`, or everything from `key` (`end` =
/// `\0`), as etcd defines `range_end`.
#[derive(Debug, Clone)]
pub struct KeyRange<'a> {
    key: &'a [u8],
    end: &'a [u8],
}

impl<'a> KeyRange<'a> {
    /// The range of (`key`, `range_end`).
    pub fn new(key: &'a [u8], end: &'a [u8]) -> Self {
        KeyRange { key, end }
    }

    /// Whether `k` falls in the range.
    pub fn contains(&self, k: &[u8]) -> bool {
        if self.end.is_empty() {
            k == self.key
        } else if self.end == [0] {
            k >= self.key
        } else {
            k >= self.key && k < self.end
        }
    }

    fn is_single(&self) -> bool {
        self.end.is_empty()
    }
}

impl Writer<'_, '_> {
    fn next_rev(&self) -> i64 {
        self.rev + 1
    }

    fn apply(
        &mut self,
        op: &Op,
        leases: &mut Leases,
        now: tokio::time::Instant,
    ) -> StoreResult<OpResult> {
        self.sub = 0;
        let r = match op {
            Op::Range(r) => self.range(r).map(OpResult::Range),
            Op::Put(p) => {
                self.check_put(p, leases)?;
                self.put(p).map(OpResult::Put)
            }
            Op::Delete(d) => {
                check_key(&d.key)?;
                self.delete(d).map(OpResult::Delete)
            }
            Op::Txn(t) => {
                let path = self.txn_path(t)?;
                self.check_txn(t, &path, leases)?;
                let mut path = path.into_iter();
                self.txn(t, &mut path).map(OpResult::Txn)
            }
            Op::Compact(to) => self.compact_request(*to).map(|()| OpResult::Compacted),
            Op::Grant { id, ttl } => self.grant(*id, *ttl, leases, now),
            Op::Revoke(id) => self.revoke(*id, leases).map(OpResult::Revoked),
            Op::KeepAlive(id) => Ok(OpResult::KeptAlive(leases.keep_alive(now, *id))),
            Op::TimeToLive { id, keys } => match leases.get(*id) {
                Some(l) => Ok(OpResult::TimeToLive {
                    ttl: leases.remaining(now, *id).unwrap_or(0),
                    granted: l.ttl,
                    keys: if *keys {
                        self.lease_keys(*id)?
                    } else {
                        Vec::new()
                    },
                }),
                None => Ok(OpResult::TimeToLive {
                    ttl: -1,
                    granted: 0,
                    keys: Vec::new(),
                }),
            },
            Op::Leases => Ok(OpResult::Leases(leases.ids())),
        };
        if self.sub > 0 {
            self.rev += 1;
        }
        r
    }

    // ---- reads ------------------------------------------------------------------------

    fn get(&self, key: &[u8]) -> StoreResult<Option<KeyValue>> {
        match self.kv.get(key).map_err(storage)? {
            Some(v) => Ok(Some(decode_kv(v.value())?)),
            None => Ok(None),
        }
    }

    /// Every live key in `r`, in key order.
    fn scan(&self, r: &KeyRange<'_>) -> StoreResult<Vec<KeyValue>> {
        if r.is_single() {
            return Ok(self.get(r.key)?.into_iter().collect());
        }
        let iter = if r.end == [0] {
            self.kv.range::<&[u8]>(r.key..).map_err(storage)?
        } else if r.end <= r.key {
            return Ok(Vec::new());
        } else {
            self.kv.range::<&[u8]>(r.key..r.end).map_err(storage)?
        };
        let mut out = Vec::new();
        for item in iter {
            let (_, v) = item.map_err(storage)?;
            out.push(decode_kv(v.value())?);
        }
        Ok(out)
    }

    fn range(&self, req: &RangeRequest) -> StoreResult<RangeResponse> {
        if req.revision > 0 {
            if req.revision > self.rev {
                return Err(ServeError::FutureRev);
            }
            if req.revision < self.compact {
                return Err(ServeError::Compacted);
            }
            if req.revision < self.rev {
                return Err(ServeError::Unsupported(
                    "reads at a past revision (hastack coord keeps only the current values; watch from a revision instead)",
                ));
            }
        }
        let mut kvs = self.scan(&KeyRange::new(&req.key, &req.range_end))?;
        kvs.retain(|kv| {
            (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        });
        sort_kvs(&mut kvs, req.sort_order, req.sort_target);
        let count = kvs.len() as i64;
        let mut more = false;
        if req.limit > 0 && kvs.len() as i64 > req.limit {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.count_only {
            kvs.clear();
        } else if req.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse {
            header: None,
            kvs,
            more,
            count,
        })
    }

    fn lease_keys(&self, id: i64) -> StoreResult<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        for item in self
            .lkeys
            .range::<(i64, &[u8])>((id, &[][..])..)
            .map_err(storage)?
        {
            let (k, _) = item.map_err(storage)?;
            let (lease, key) = k.value();
            if lease != id {
                break;
            }
            keys.push(key.to_vec());
        }
        Ok(keys)
    }

    // ---- checks (against the state before the request) ------------------------------------

    fn check_put(&self, p: &PutRequest, leases: &Leases) -> StoreResult<()> {
        check_key(&p.key)?;
        if p.ignore_value || p.ignore_lease {
            if self.get(&p.key)?.is_none() {
                return Err(ServeError::KeyNotFound);
            }
            if p.ignore_value && !p.value.is_empty() {
                return Err(ServeError::ValueProvided);
            }
            if p.ignore_lease && p.lease != 0 {
                return Err(ServeError::LeaseProvided);
            }
        }
        if !p.ignore_lease && p.lease != 0 && leases.get(p.lease).is_none() {
            return Err(ServeError::LeaseNotFound);
        }
        Ok(())
    }

    /// Which branch each (nested) transaction takes, in pre-order, decided before any change.
    fn txn_path(&self, t: &TxnRequest) -> StoreResult<Vec<bool>> {
        let mut path = Vec::new();
        self.txn_path_into(t, &mut path)?;
        Ok(path)
    }

    fn txn_path_into(&self, t: &TxnRequest, path: &mut Vec<bool>) -> StoreResult<()> {
        let mut ok = true;
        for c in &t.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        let branch = if ok { &t.success } else { &t.failure };
        for op in branch {
            if let Some(request_op::Request::RequestTxn(inner)) = &op.request {
                self.txn_path_into(inner, path)?;
            }
        }
        Ok(())
    }

    fn check_txn(&self, t: &TxnRequest, path: &[bool], leases: &Leases) -> StoreResult<()> {
        // etcd checks both branches' shapes (size, duplicate keys) but each branch's puts only
        // if it runs; we check the branch that runs, which is what can make it fail.
        let mut it = path.iter();
        let mut puts: Vec<&[u8]> = Vec::new();
        let mut dels: Vec<KeyRange<'_>> = Vec::new();
        self.check_txn_branch(t, &mut it, leases, &mut puts, &mut dels)?;
        let mut seen = HashSet::new();
        for k in &puts {
            if !seen.insert(*k) || dels.iter().any(|d| d.contains(k)) {
                return Err(ServeError::DuplicateKey);
            }
        }
        Ok(())
    }

    fn check_txn_branch<'a>(
        &self,
        t: &'a TxnRequest,
        path: &mut std::slice::Iter<'_, bool>,
        leases: &Leases,
        puts: &mut Vec<&'a [u8]>,
        dels: &mut Vec<KeyRange<'a>>,
    ) -> StoreResult<()> {
        if t.compare.len() > MAX_TXN_OPS
            || t.success.len() > MAX_TXN_OPS
            || t.failure.len() > MAX_TXN_OPS
        {
            return Err(ServeError::TooManyOps);
        }
        for c in &t.compare {
            check_key(&c.key)?;
            if c.target_union.is_none() {
                return Err(ServeError::Invalid("a compare without a target value"));
            }
        }
        let ok = *path.next().ok_or(ServeError::Invalid("transaction path"))?;
        let branch = if ok { &t.success } else { &t.failure };
        for op in branch {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) => check_key(&r.key)?,
                Some(request_op::Request::RequestPut(p)) => {
                    self.check_put(p, leases)?;
                    puts.push(&p.key);
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    check_key(&d.key)?;
                    dels.push(KeyRange::new(&d.key, &d.range_end));
                }
                Some(request_op::Request::RequestTxn(inner)) => {
                    self.check_txn_branch(inner, path, leases, puts, dels)?
                }
                None => return Err(ServeError::Invalid("an empty request op in a transaction")),
            }
        }
        Ok(())
    }

    fn compare(&self, c: &Compare) -> StoreResult<bool> {
        let kvs = self.scan(&KeyRange::new(&c.key, &c.range_end))?;
        if kvs.is_empty() {
            // etcd: a missing key compares as zero values, except that a value compare fails.
            if c.target() == compare::CompareTarget::Value {
                return Ok(false);
            }
            return Ok(compare_kv(c, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
    }

    // ---- writes ------------------------------------------------------------------------

    fn record(&mut self, ev: Event) -> StoreResult<()> {
        let rev = self.next_rev();
        self.hist
            .insert((rev, self.sub), ev.encode_to_vec().as_slice())
            .map_err(storage)?;
        self.events.push((rev, ev));
        self.sub += 1;
        self.dirty = true;
        Ok(())
    }

    fn put(&mut self, p: &PutRequest) -> StoreResult<PutResponse> {
        let rev = self.next_rev();
        let prev = self.get(&p.key)?;
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => p.lease,
        };
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |k| k.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |k| k.version + 1),
            value,
            lease,
        };
        self.kv
            .insert(p.key.as_slice(), kv.encode_to_vec().as_slice())
            .map_err(storage)?;
        let old_lease = prev.as_ref().map_or(0, |k| k.lease);
        if old_lease != 0 && old_lease != lease {
            self.lkeys
                .remove((old_lease, p.key.as_slice()))
                .map_err(storage)?;
        }
        if lease != 0 {
            self.lkeys
                .insert((lease, p.key.as_slice()), ())
                .map_err(storage)?;
        }
        self.record(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev.clone(),
        })?;
        Ok(PutResponse {
            header: None,
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> StoreResult<DeleteRangeResponse> {
        let kvs = self.scan(&KeyRange::new(&d.key, &d.range_end))?;
        for kv in &kvs {
            self.delete_one(kv)?;
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: kvs.len() as i64,
            prev_kvs: if d.prev_kv { kvs } else { Vec::new() },
        })
    }

    fn delete_one(&mut self, kv: &KeyValue) -> StoreResult<()> {
        let rev = self.next_rev();
        self.kv.remove(kv.key.as_slice()).map_err(storage)?;
        if kv.lease != 0 {
            self.lkeys
                .remove((kv.lease, kv.key.as_slice()))
                .map_err(storage)?;
        }
        self.record(Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: kv.key.clone(),
                mod_revision: rev,
                ..KeyValue::default()
            }),
            prev_kv: Some(kv.clone()),
        })
    }

    fn txn(
        &mut self,
        t: &TxnRequest,
        path: &mut std::vec::IntoIter<bool>,
    ) -> StoreResult<TxnResponse> {
        let ok = path.next().ok_or(ServeError::Invalid("transaction path"))?;
        let branch = if ok { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            responses.push(self.request_op(op, path)?);
        }
        Ok(TxnResponse {
            header: None,
            succeeded: ok,
            responses,
        })
    }

    fn request_op(
        &mut self,
        op: &RequestOp,
        path: &mut std::vec::IntoIter<bool>,
    ) -> StoreResult<ResponseOp> {
        use response_op::Response as R;
        let response = match &op.request {
            Some(request_op::Request::RequestRange(r)) => R::ResponseRange(self.range(r)?),
            Some(request_op::Request::RequestPut(p)) => R::ResponsePut(self.put(p)?),
            Some(request_op::Request::RequestDeleteRange(d)) => {
                R::ResponseDeleteRange(self.delete(d)?)
            }
            Some(request_op::Request::RequestTxn(t)) => R::ResponseTxn(self.txn(t, path)?),
            None => return Err(ServeError::Invalid("an empty request op in a transaction")),
        };
        Ok(ResponseOp {
            response: Some(response),
        })
    }

    fn compact_request(&mut self, to: i64) -> StoreResult<()> {
        if to <= self.compact {
            return Err(ServeError::Compacted);
        }
        if to > self.rev {
            return Err(ServeError::FutureRev);
        }
        self.compact_to(to)
    }

    /// Drop history below `to`; watches from an older revision then answer `ErrCompacted`.
    fn compact_to(&mut self, to: i64) -> StoreResult<()> {
        self.hist
            .retain_in::<(i64, u32), _>((self.compact, 0)..(to, 0), |_, _| false)
            .map_err(storage)?;
        self.compact = to;
        self.dirty = true;
        self.meta.insert(META_COMPACT, to).map_err(storage)?;
        Ok(())
    }

    fn grant(
        &mut self,
        id: i64,
        ttl: i64,
        leases: &mut Leases,
        now: tokio::time::Instant,
    ) -> StoreResult<OpResult> {
        if id < 0 {
            return Err(ServeError::Invalid("a negative lease id"));
        }
        let id = if id == 0 {
            // Random positive ids, as etcd's are; retry on the rare collision.
            loop {
                let candidate = self.rng.i64(1..i64::MAX);
                if leases.get(candidate).is_none() {
                    break candidate;
                }
            }
        } else {
            id
        };
        let ttl = leases.grant(now, id, ttl).map_err(|e| match e {
            GrantError::Exists => ServeError::LeaseExists,
            GrantError::TtlTooLarge => ServeError::TtlTooLarge,
            GrantError::TooMany { max } => ServeError::TooManyLeases(max),
        })?;
        self.leases_t.insert(id, ttl).map_err(storage)?;
        self.dirty = true;
        Ok(OpResult::Granted { id, ttl })
    }

    fn revoke(&mut self, id: i64, leases: &mut Leases) -> StoreResult<usize> {
        if !leases.remove(id) {
            return Err(ServeError::LeaseNotFound);
        }
        self.leases_t.remove(id).map_err(storage)?;
        self.dirty = true;
        let keys = self.lease_keys(id)?;
        let mut deleted = 0;
        for key in keys {
            if let Some(kv) = self.get(&key)? {
                self.delete_one(&kv)?;
                deleted += 1;
            } else {
                self.lkeys.remove((id, key.as_slice())).map_err(storage)?;
            }
        }
        Ok(deleted)
    }
}

fn check_key(key: &[u8]) -> StoreResult<()> {
    if key.is_empty() {
        return Err(ServeError::EmptyKey);
    }
    Ok(())
}

fn decode_kv(bytes: &[u8]) -> StoreResult<KeyValue> {
    KeyValue::decode(bytes)
        .map_err(|e| ServeError::Storage(format!("corrupt key-value record: {e}")))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::TargetUnion as T;
    use std::cmp::Ordering;
    let ord = match &c.target_union {
        Some(T::Version(v)) => kv.version.cmp(v),
        Some(T::CreateRevision(v)) => kv.create_revision.cmp(v),
        Some(T::ModRevision(v)) => kv.mod_revision.cmp(v),
        Some(T::Value(v)) => kv.value.as_slice().cmp(v.as_slice()),
        Some(T::Lease(v)) => kv.lease.cmp(v),
        None => return false,
    };
    match c.result() {
        compare::CompareResult::Equal => ord == Ordering::Equal,
        compare::CompareResult::Greater => ord == Ordering::Greater,
        compare::CompareResult::Less => ord == Ordering::Less,
        compare::CompareResult::NotEqual => ord != Ordering::Equal,
    }
}

fn sort_kvs(kvs: &mut [KeyValue], order: i32, target: i32) {
    use pb::range_request::{SortOrder, SortTarget};
    let order = SortOrder::try_from(order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(target).unwrap_or(SortTarget::Key);
    let order = match (order, target) {
        // etcd: no order on a non-key target means ascending; on the key, the natural order.
        (SortOrder::None, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    kvs.sort_by(|a, b| {
        let o = match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        if order == SortOrder::Descend {
            o.reverse()
        } else {
            o
        }
    });
}

/// What a history read found.
#[derive(Debug)]
pub enum HistoryRead {
    /// Events in key range and the last revision scanned (the next read starts after it).
    Events(Vec<Event>, i64),
    /// `from` is below the compact revision (read in the same snapshot): the history is gone.
    Compacted(i64),
}

/// Read history events with revision in `[from, to]` whose key is in `range`, stopping after
/// the revision in which `max_events` events or `max_bytes` bytes were reached (a revision is
/// never split, as etcd never splits one across watch responses).
pub fn read_history(
    db: &Database,
    range: &KeyRange<'_>,
    from: i64,
    to: i64,
    max_events: usize,
    max_bytes: usize,
) -> StoreResult<HistoryRead> {
    let txn = db.begin_read().map_err(storage)?;
    let meta = txn.open_table(META).map_err(storage)?;
    let compact = meta
        .get(META_COMPACT)
        .map_err(storage)?
        .map_or(0, |v| v.value());
    if from < compact {
        return Ok(HistoryRead::Compacted(compact));
    }
    let hist = txn.open_table(HISTORY).map_err(storage)?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut last = from - 1;
    for item in hist
        .range::<(i64, u32)>((from, 0)..=(to, u32::MAX))
        .map_err(storage)?
    {
        let (k, v) = item.map_err(storage)?;
        let (rev, _) = k.value();
        if rev != last && (out.len() >= max_events || bytes >= max_bytes) {
            return Ok(HistoryRead::Events(out, last));
        }
        last = rev;
        let raw = v.value();
        let ev = Event::decode(raw)
            .map_err(|e| ServeError::Storage(format!("corrupt history record: {e}")))?;
        if ev.kv.as_ref().is_some_and(|kv| range.contains(&kv.key)) {
            bytes += raw.len();
            out.push(ev);
        }
    }
    Ok(HistoryRead::Events(out, to))
}

/// Number of history records (for tests and status).
pub fn history_len(db: &Database) -> StoreResult<u64> {
    let txn = db.begin_read().map_err(storage)?;
    let hist = txn.open_table(HISTORY).map_err(storage)?;
    hist.len().map_err(storage)
}

#[cfg(test)]
mod tests;
