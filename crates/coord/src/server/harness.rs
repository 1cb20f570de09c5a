//! Feed raw request bytes through the embedded server's decoding and handling, on an
//! in-memory store, checking its invariants. Used by the fuzz target (`fuzz/`, cargo-fuzz)
//! and by a proptest that runs in CI.
//!
//! Input format: a sequence of frames `kind: u8, len: u16 (LE), payload: len bytes`; the
//! payload is decoded as the protobuf request `kind` selects, exactly as tonic hands it to the
//! services, and applied. One kind advances the virtual clock so leases expire.

use std::time::Duration;

use prost::Message;
use tokio::time::Instant;

use super::leases::Leases;
use super::store::{HistoryRead, KeyRange, Op, Store, read_history};
use crate::proto::etcdserverpb as pb;

/// An in-memory store with a virtual clock.
#[derive(Debug)]
pub struct Harness {
    store: Store,
    leases: Leases,
    now: Instant,
    max_request_bytes: usize,
}

impl Harness {
    /// A fresh in-memory store (small limits so that they are reached).
    pub fn new() -> Harness {
        Harness {
            // Storage in memory cannot fail to be created short of allocation failure.
            #[allow(clippy::expect_used)]
            store: Store::in_memory(64).expect("in-memory store"),
            leases: Leases::new(16),
            now: Instant::now(),
            max_request_bytes: 64 * 1024,
        }
    }

    /// Decode and apply every frame of `data`; panics only if an invariant breaks.
    pub fn feed(&mut self, data: &[u8]) {
        let mut rest = data;
        while rest.len() >= 3 {
            let kind = rest[0];
            let len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
            let end = (3 + len).min(rest.len());
            let payload = &rest[3..end];
            rest = &rest[end..];
            self.frame(kind, payload);
        }
    }

    fn frame(&mut self, kind: u8, payload: &[u8]) {
        if payload.len() > self.max_request_bytes {
            return; // refused before decoding, as the gRPC layer does
        }
        let op = match kind % 9 {
            0 => pb::RangeRequest::decode(payload).ok().map(Op::Range),
            1 => pb::PutRequest::decode(payload).ok().map(Op::Put),
            2 => pb::DeleteRangeRequest::decode(payload).ok().map(Op::Delete),
            3 => pb::TxnRequest::decode(payload).ok().map(Op::Txn),
            4 => pb::LeaseGrantRequest::decode(payload)
                .ok()
                .map(|r| Op::Grant {
                    id: r.id,
                    ttl: r.ttl,
                }),
            5 => pb::LeaseRevokeRequest::decode(payload)
                .ok()
                .map(|r| Op::Revoke(r.id)),
            6 => pb::LeaseKeepAliveRequest::decode(payload)
                .ok()
                .map(|r| Op::KeepAlive(r.id)),
            7 => {
                if let Ok(w) = pb::WatchRequest::decode(payload) {
                    self.watch(w);
                }
                None
            }
            _ => {
                // Advance the virtual clock and expire leases, as the driver does.
                let secs = payload.first().copied().unwrap_or(1);
                self.now += Duration::from_millis(u64::from(secs) * 100);
                let due: Vec<Op> = self
                    .leases
                    .expired(self.now)
                    .into_iter()
                    .map(Op::Revoke)
                    .collect();
                self.apply(&due);
                if let Ok(c) = pb::CompactionRequest::decode(payload) {
                    Some(Op::Compact(c.revision))
                } else {
                    None
                }
            }
        };
        if let Some(op) = op {
            self.apply(&[op]);
        }
    }

    fn apply(&mut self, ops: &[Op]) {
        let before = self.store.revision();
        // An in-memory store has no storage to fail; a Storage error here is a bug.
        #[allow(clippy::expect_used)]
        let a = self
            .store
            .apply(ops, &mut self.leases, self.now)
            .expect("in-memory storage failed");
        assert!(a.revision >= before, "revision went back");
        assert!(
            a.compact_revision <= a.revision,
            "compacted past the revision"
        );
        let mut prev = before;
        for r in &a.revisions {
            assert!(
                *r >= prev && *r <= prev + 1,
                "an op took more than one revision"
            );
            prev = *r;
        }
        assert_eq!(a.results.len(), ops.len());
    }

    fn watch(&mut self, w: pb::WatchRequest) {
        let Some(pb::watch_request::RequestUnion::CreateRequest(c)) = w.request_union else {
            return;
        };
        let cur = self.store.revision();
        let from = c.start_revision.max(1);
        let db = self.store.db();
        // Storage in memory cannot fail; a failure is a bug worth a crash report.
        #[allow(clippy::expect_used)]
        let read = read_history(
            &db,
            &KeyRange::new(&c.key, &c.range_end),
            from,
            cur,
            100,
            64 * 1024,
        )
        .expect("history read");
        if let HistoryRead::Events(events, last) = read {
            assert!(last <= cur.max(from - 1));
            let range = KeyRange::new(&c.key, &c.range_end);
            let mut prev = 0;
            for e in &events {
                let kv = e.kv.as_ref();
                assert!(
                    kv.is_some_and(|kv| range.contains(&kv.key)),
                    "event outside the range"
                );
                let rev = kv.map_or(0, |kv| kv.mod_revision);
                assert!(
                    rev >= prev && rev >= from && rev <= cur,
                    "event revision out of order"
                );
                prev = rev;
            }
        }
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: u8, msg: &impl Message) -> Vec<u8> {
        let body = msg.encode_to_vec();
        let mut f = vec![kind];
        f.extend_from_slice(&(body.len() as u16).to_le_bytes());
        f.extend_from_slice(&body);
        f
    }

    #[test]
    fn well_formed_frames_exercise_the_store() {
        let mut h = Harness::new();
        let mut data = frame(4, &pb::LeaseGrantRequest { ttl: 1, id: 5 });
        data.extend(frame(
            1,
            &pb::PutRequest {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                lease: 5,
                ..Default::default()
            },
        ));
        data.extend(frame(
            8,
            &pb::CompactionRequest {
                revision: 0,
                physical: false,
            },
        ));
        data.extend(vec![8, 1, 0, 30]); // 3 s later: lease 5 expires
        h.feed(&data);
        assert!(h.leases.is_empty());
        assert_eq!(h.store.revision(), 3, "put, then the expiry's delete");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Arbitrary bytes as requests never panic and never break the store's invariants.
        #[test]
        fn arbitrary_requests_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            Harness::new().feed(&data);
        }

        /// Structured requests reach the deeper paths (txns, leases, compaction).
        #[test]
        fn random_valid_requests_keep_invariants(ops in proptest::collection::vec((0u8..9, 0u8..4, 0i64..6, any::<bool>()), 0..80)) {
            let mut h = Harness::new();
            for (kind, k, n, flag) in ops {
                let key = vec![b'k', k];
                let data = match kind {
                    0 => frame(0, &pb::RangeRequest { key: vec![b'k'], range_end: vec![b'l'], limit: n, ..Default::default() }),
                    1 => frame(1, &pb::PutRequest { key, value: vec![k], lease: if flag { n } else { 0 }, ..Default::default() }),
                    2 => frame(2, &pb::DeleteRangeRequest { key, range_end: if flag { vec![0] } else { vec![] }, prev_kv: true }),
                    3 => frame(3, &pb::TxnRequest {
                        compare: vec![pb::Compare { result: 0, target: 2, key: key.clone(), range_end: vec![], target_union: Some(pb::compare::TargetUnion::ModRevision(n)) }],
                        success: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestPut(pb::PutRequest { key: key.clone(), value: vec![1], ..Default::default() })) }],
                        failure: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest { key, ..Default::default() })) }],
                    }),
                    4 => frame(4, &pb::LeaseGrantRequest { ttl: n, id: n }),
                    5 => frame(5, &pb::LeaseRevokeRequest { id: n }),
                    6 => frame(6, &pb::LeaseKeepAliveRequest { id: n }),
                    7 => frame(7, &pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest { key: vec![b'k'], range_end: vec![b'l'], start_revision: n, ..Default::default() })) }),
                    _ => frame(8, &pb::CompactionRequest { revision: n, physical: false }),
                };
                h.feed(&data);
            }
        }
    }
}
