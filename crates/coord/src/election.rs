//! Leader election with a fencing token, built on leases, transactions and watches (the
//! algorithm of etcd's `concurrency.Election`).
//!
//! A candidate creates `<prefix>/<lease id>` attached to its lease (only if absent). Keys under
//! the prefix queue up by create revision; the one with the lowest is the leader. A candidate
//! waits until no key with a lower create revision remains (each predecessor deleted, by
//! resignation or lease expiry).
//!
//! **Fencing token** = the create revision of the leader's key. Revisions come from one
//! global counter and a later candidate's key is always created at a higher revision, so
//! successive leaders hold strictly increasing tokens; a resource that remembers the highest
//! token it has seen refuses a deposed leader. Writes to coord itself are fenced by
//! [`Leader::fence`], a compare that fails once the key is gone or replaced.

use std::time::Duration;

use crate::client::Client;
use crate::error::Error;
use crate::keeper::LeaseKeeper;
use crate::proto::etcdserverpb as pb;
use crate::txn::{Cmp, CmpOp, Txn, TxnOp};
use crate::types::{EventKind, KeyValue, prefix_end};
use crate::watch::WatchSpec;

/// An election under one key prefix.
#[derive(Clone, Debug)]
pub struct Election {
    client: Client,
    prefix: Vec<u8>,
}

/// The current leader as observers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's key.
    pub key: Vec<u8>,
    /// The value it proclaimed.
    pub value: Vec<u8>,
    /// Its fencing token (create revision of its key).
    pub token: i64,
    /// Its lease.
    pub lease: i64,
}

/// Leadership won by [`Election::campaign`].
#[derive(Debug)]
pub struct Leader {
    election: Election,
    key: Vec<u8>,
    token: i64,
    lease: i64,
}

impl Election {
    /// An election under `prefix` (a `/` is appended if missing).
    pub fn new(client: &Client, prefix: impl AsRef<[u8]>) -> Election {
        let mut prefix = prefix.as_ref().to_vec();
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        Election {
            client: client.clone(),
            prefix,
        }
    }

    /// Campaign with `value` under the lease kept by `keeper`; returns when this candidate is
    /// the leader. Waits as long as it takes (wrap it in a timeout to bound it); fails if the
    /// lease is lost meanwhile.
    pub async fn campaign(
        &self,
        keeper: &LeaseKeeper,
        value: impl AsRef<[u8]>,
    ) -> Result<Leader, Error> {
        let lease = keeper.id();
        let key = [self.prefix.as_slice(), format!("{lease:016x}").as_bytes()].concat();
        let txn = Txn::new()
            .when([Cmp::absent(&key)])
            .and_then([TxnOp::put(&key, value.as_ref(), Some(lease))])
            .or_else([TxnOp::get(&key)]);
        let r = self.client.txn(txn).await?;
        let token = if r.succeeded {
            r.revision
        } else {
            // Campaigning again with the same lease: keep the place in the queue.
            let kv = r.first_kv().ok_or_else(|| Error::Protocol {
                endpoint: String::new(),
                what: "campaign: key neither created nor found".into(),
            })?;
            kv.create_revision
        };
        let leader = Leader {
            election: self.clone(),
            key,
            token,
            lease,
        };
        tokio::select! {
            r = self.wait_for_predecessors(token) => r?,
            _ = keeper.lost() => return Err(Error::LeaseNotFound(lease)),
        }
        Ok(leader)
    }

    /// Wait until no key under the prefix has a create revision below `token`.
    async fn wait_for_predecessors(&self, token: i64) -> Result<(), Error> {
        loop {
            let l = self
                .client
                .range(pb::RangeRequest {
                    key: self.prefix.clone(),
                    range_end: prefix_end(&self.prefix),
                    max_create_revision: token - 1,
                    sort_order: pb::range_request::SortOrder::Descend as i32,
                    sort_target: pb::range_request::SortTarget::Create as i32,
                    limit: 1,
                    ..Default::default()
                })
                .await?;
            let Some(pred) = l.kvs.into_iter().next() else {
                return Ok(());
            };
            // Wait for that predecessor's deletion; then look again (an earlier one may remain).
            let mut w = self
                .client
                .watch(WatchSpec::key(&pred.key).from_revision(l.revision + 1))
                .await?;
            'deleted: loop {
                match w.next().await {
                    Ok(b) => {
                        if b.events.iter().any(|e| e.kind == EventKind::Delete) {
                            break 'deleted;
                        }
                    }
                    // History gone: just look again.
                    Err(Error::Compacted { .. }) => break 'deleted,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// The current leader, if any.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>, Error> {
        let l = self
            .client
            .range(pb::RangeRequest {
                key: self.prefix.clone(),
                range_end: prefix_end(&self.prefix),
                sort_order: pb::range_request::SortOrder::Ascend as i32,
                sort_target: pb::range_request::SortTarget::Create as i32,
                limit: 1,
                ..Default::default()
            })
            .await?;
        Ok(l.kvs.into_iter().next().map(|kv: KeyValue| LeaderInfo {
            token: kv.create_revision,
            lease: kv.lease,
            key: kv.key,
            value: kv.value,
        }))
    }
}

impl Leader {
    /// The fencing token: strictly greater than every earlier leader's.
    pub fn token(&self) -> i64 {
        self.token
    }

    /// The leader's key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The lease the leadership rests on.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// A compare that holds only while this leadership does: add it to a transaction to make
    /// a write conditional on still being the leader.
    pub fn fence(&self) -> Cmp {
        Cmp::create_revision(&self.key, CmpOp::Equal, self.token)
    }

    /// Whether this candidate is still the leader (its key exists with its token).
    pub async fn is_leader(&self) -> Result<bool, Error> {
        let (kv, _) = self.election.client.get(&self.key).await?;
        Ok(kv.is_some_and(|kv| kv.create_revision == self.token))
    }

    /// Publish a new value, only while still leader; returns whether it was.
    pub async fn proclaim(&self, value: impl AsRef<[u8]>) -> Result<bool, Error> {
        let r = self
            .election
            .client
            .txn(Txn::new().when([self.fence()]).and_then([TxnOp::put(
                &self.key,
                value.as_ref(),
                Some(self.lease),
            )]))
            .await?;
        Ok(r.succeeded)
    }

    /// Step down: delete the key (the next candidate takes over at once). The lease stays.
    pub async fn resign(self, timeout: Duration) -> Result<(), Error> {
        self.election
            .client
            .with_timeout(timeout)
            .txn(
                Txn::new()
                    .when([self.fence()])
                    .and_then([TxnOp::delete(&self.key)]),
            )
            .await?;
        Ok(())
    }
}
