//! The MVCC rules, checked on an in-memory store (etcd's semantics, stated as tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use tokio::time::Instant;

struct T {
    store: Store,
    leases: Leases,
    now: Instant,
}

impl T {
    fn new() -> T {
        T {
            store: Store::in_memory(1000).unwrap(),
            leases: Leases::new(100),
            now: Instant::now(),
        }
    }

    fn one(&mut self, op: Op) -> Result<OpResult, ServeError> {
        let mut a = self.store.apply(&[op], &mut self.leases, self.now).unwrap();
        a.results.remove(0)
    }

    fn put(&mut self, k: &str, v: &str) -> i64 {
        self.one(Op::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }))
        .unwrap();
        self.store.revision()
    }

    fn get(&mut self, k: &str) -> Option<KeyValue> {
        match self
            .one(Op::Range(RangeRequest {
                key: k.into(),
                ..Default::default()
            }))
            .unwrap()
        {
            OpResult::Range(r) => r.kvs.into_iter().next(),
            _ => unreachable!(),
        }
    }

    fn history(&self, from: i64) -> Vec<Event> {
        match read_history(
            &self.store.db(),
            &KeyRange::new(b"\0", b"\0"),
            from,
            self.store.revision(),
            10_000,
            usize::MAX,
        )
        .unwrap()
        {
            HistoryRead::Events(e, _) => e,
            HistoryRead::Compacted(c) => panic!("compacted at {c}"),
        }
    }
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult, u: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        range_end: vec![],
        target_union: Some(u),
    }
}

fn put_op(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    }
}

#[test]
fn revisions_versions_and_create_revisions_follow_etcd() {
    let mut t = T::new();
    assert_eq!(
        t.store.revision(),
        1,
        "an empty store is at revision 1, as etcd"
    );
    assert_eq!(t.put("a", "1"), 2);
    assert_eq!(t.put("a", "2"), 3);
    let kv = t.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    // A delete of nothing changes nothing; a real delete takes a revision.
    t.one(Op::Delete(DeleteRangeRequest {
        key: "zz".into(),
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(t.store.revision(), 3);
    t.one(Op::Delete(DeleteRangeRequest {
        key: "a".into(),
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(t.store.revision(), 4);
    // Re-created: a new create revision, version 1.
    assert_eq!(t.put("a", "3"), 5);
    let kv = t.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.version), (5, 1));
    let h = t.history(1);
    assert_eq!(
        h.iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    assert_eq!(h[2].r#type, EventType::Delete as i32);
    assert_eq!(h[2].prev_kv.as_ref().unwrap().value, b"2");
}

#[test]
fn txn_compare_and_swap() {
    let mut t = T::new();
    let rev = t.put("k", "v1");
    let cas = |mod_rev: i64, v: &str| {
        Op::Txn(TxnRequest {
            compare: vec![cmp(
                "k",
                CompareTarget::Mod,
                CompareResult::Equal,
                TargetUnion::ModRevision(mod_rev),
            )],
            success: vec![put_op("k", v)],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: "k".into(),
                    ..Default::default()
                })),
            }],
        })
    };
    match t.one(cas(rev, "v2")).unwrap() {
        OpResult::Txn(r) => assert!(r.succeeded),
        _ => unreachable!(),
    }
    // The same expectation again: it fails and reads the current value; no revision taken.
    let before = t.store.revision();
    match t.one(cas(rev, "v3")).unwrap() {
        OpResult::Txn(r) => {
            assert!(!r.succeeded);
            match &r.responses[0].response {
                Some(response_op::Response::ResponseRange(rr)) => {
                    assert_eq!(rr.kvs[0].value, b"v2")
                }
                other => panic!("{other:?}"),
            }
        }
        _ => unreachable!(),
    }
    assert_eq!(t.store.revision(), before);
    // A missing key compares as zeros, except on its value.
    let absent = |target, u| {
        Op::Txn(TxnRequest {
            compare: vec![cmp("nope", target, CompareResult::Equal, u)],
            success: vec![put_op("flag", "x")],
            failure: vec![],
        })
    };
    assert!(
        matches!(t.one(absent(CompareTarget::Create, TargetUnion::CreateRevision(0))).unwrap(), OpResult::Txn(r) if r.succeeded)
    );
    assert!(
        matches!(t.one(absent(CompareTarget::Value, TargetUnion::Value(vec![]))).unwrap(), OpResult::Txn(r) if !r.succeeded)
    );
}

#[test]
fn a_txn_shares_one_revision_and_refuses_duplicate_keys() {
    let mut t = T::new();
    let op = Op::Txn(TxnRequest {
        compare: vec![],
        success: vec![put_op("a", "1"), put_op("b", "2")],
        failure: vec![],
    });
    t.one(op).unwrap();
    assert_eq!(t.store.revision(), 2);
    assert_eq!(
        t.get("a").unwrap().mod_revision,
        t.get("b").unwrap().mod_revision
    );
    let dup = Op::Txn(TxnRequest {
        compare: vec![],
        success: vec![put_op("a", "1"), put_op("a", "2")],
        failure: vec![],
    });
    assert_eq!(t.one(dup).unwrap_err(), ServeError::DuplicateKey);
    let many = Op::Txn(TxnRequest {
        compare: vec![],
        success: (0..129).map(|i| put_op(&format!("k{i}"), "v")).collect(),
        failure: vec![],
    });
    assert_eq!(t.one(many).unwrap_err(), ServeError::TooManyOps);
    assert_eq!(t.store.revision(), 2, "refused transactions change nothing");
}

#[test]
fn a_refused_txn_changes_nothing_even_when_its_second_put_is_bad() {
    let mut t = T::new();
    let mut bad = PutRequest {
        key: "b".into(),
        value: "2".into(),
        lease: 42,
        ..Default::default()
    };
    bad.prev_kv = true;
    let op = Op::Txn(TxnRequest {
        compare: vec![],
        success: vec![
            put_op("a", "1"),
            RequestOp {
                request: Some(request_op::Request::RequestPut(bad)),
            },
        ],
        failure: vec![],
    });
    assert_eq!(t.one(op).unwrap_err(), ServeError::LeaseNotFound);
    assert!(t.get("a").is_none());
    assert_eq!(t.store.revision(), 1);
}

#[test]
fn revoking_a_lease_deletes_its_keys_in_one_revision() {
    let mut t = T::new();
    let OpResult::Granted { id, ttl } = t.one(Op::Grant { id: 0, ttl: 5 }).unwrap() else {
        panic!()
    };
    assert_eq!(ttl, 5);
    for k in ["x", "y"] {
        t.one(Op::Put(PutRequest {
            key: k.into(),
            value: "v".into(),
            lease: id,
            ..Default::default()
        }))
        .unwrap();
    }
    let OpResult::TimeToLive { keys, .. } = t.one(Op::TimeToLive { id, keys: true }).unwrap()
    else {
        panic!()
    };
    assert_eq!(keys, vec![b"x".to_vec(), b"y".to_vec()]);
    let before = t.store.revision();
    assert!(matches!(
        t.one(Op::Revoke(id)).unwrap(),
        OpResult::Revoked(2)
    ));
    assert_eq!(t.store.revision(), before + 1);
    assert!(t.get("x").is_none() && t.get("y").is_none());
    assert_eq!(
        t.one(Op::Revoke(id)).unwrap_err(),
        ServeError::LeaseNotFound
    );
    let OpResult::TimeToLive { ttl, .. } = t.one(Op::TimeToLive { id, keys: false }).unwrap()
    else {
        panic!()
    };
    assert_eq!(ttl, -1);
}

#[test]
fn moving_a_key_to_another_lease_detaches_it_from_the_first() {
    let mut t = T::new();
    let OpResult::Granted { id: l1, .. } = t.one(Op::Grant { id: 1, ttl: 5 }).unwrap() else {
        panic!()
    };
    let OpResult::Granted { id: l2, .. } = t.one(Op::Grant { id: 2, ttl: 5 }).unwrap() else {
        panic!()
    };
    t.one(Op::Put(PutRequest {
        key: "k".into(),
        value: "v".into(),
        lease: l1,
        ..Default::default()
    }))
    .unwrap();
    t.one(Op::Put(PutRequest {
        key: "k".into(),
        value: "w".into(),
        lease: l2,
        ..Default::default()
    }))
    .unwrap();
    t.one(Op::Revoke(l1)).unwrap();
    assert_eq!(
        t.get("k").unwrap().value,
        b"w",
        "the key now belongs to lease 2"
    );
}

#[test]
fn compaction_drops_history_and_answers_compacted() {
    let mut t = T::new();
    for i in 0..10 {
        t.put("k", &i.to_string());
    }
    assert_eq!(t.store.revision(), 11);
    t.one(Op::Compact(6)).unwrap();
    assert!(matches!(
        read_history(
            &t.store.db(),
            &KeyRange::new(b"k", b""),
            5,
            11,
            100,
            usize::MAX
        )
        .unwrap(),
        HistoryRead::Compacted(6)
    ));
    assert_eq!(t.history(6).len(), 6);
    assert_eq!(t.one(Op::Compact(6)).unwrap_err(), ServeError::Compacted);
    assert_eq!(t.one(Op::Compact(99)).unwrap_err(), ServeError::FutureRev);
    let past = Op::Range(RangeRequest {
        key: "k".into(),
        revision: 3,
        ..Default::default()
    });
    assert_eq!(t.one(past).unwrap_err(), ServeError::Compacted);
}

#[test]
fn automatic_retention_keeps_the_configured_history() {
    let mut t = T {
        store: Store::in_memory(16).unwrap(),
        leases: Leases::new(1),
        now: Instant::now(),
    };
    for i in 0..100 {
        t.put("k", &i.to_string());
    }
    let rev = t.store.revision();
    let compact = t.store.compact_revision();
    assert!(
        rev - compact >= 16 && rev - compact <= 16 + 2,
        "rev {rev} compact {compact}"
    );
    assert!(history_len(&t.store.db()).unwrap() <= 18);
}

#[test]
fn range_options() {
    let mut t = T::new();
    for k in ["a/1", "a/2", "a/3", "b/1"] {
        t.put(k, k);
    }
    let r = |req: RangeRequest, t: &mut T| match t.one(Op::Range(req)).unwrap() {
        OpResult::Range(r) => r,
        _ => unreachable!(),
    };
    let all = r(
        RangeRequest {
            key: "a/".into(),
            range_end: "a0".into(),
            ..Default::default()
        },
        &mut t,
    );
    assert_eq!(all.kvs.len(), 3);
    let lim = r(
        RangeRequest {
            key: "a/".into(),
            range_end: "a0".into(),
            limit: 2,
            ..Default::default()
        },
        &mut t,
    );
    assert_eq!((lim.kvs.len(), lim.more, lim.count), (2, true, 3));
    let desc = r(
        RangeRequest {
            key: "a/".into(),
            range_end: "a0".into(),
            sort_order: pb::range_request::SortOrder::Descend as i32,
            sort_target: pb::range_request::SortTarget::Create as i32,
            limit: 1,
            ..Default::default()
        },
        &mut t,
    );
    assert_eq!(desc.kvs[0].key, b"a/3");
    let every = r(
        RangeRequest {
            key: vec![0],
            range_end: vec![0],
            count_only: true,
            ..Default::default()
        },
        &mut t,
    );
    assert_eq!((every.count, every.kvs.len()), (4, 0));
    let below = r(
        RangeRequest {
            key: "a/".into(),
            range_end: "a0".into(),
            max_create_revision: 3,
            ..Default::default()
        },
        &mut t,
    );
    assert_eq!(below.kvs.len(), 2);
}

#[test]
fn bad_requests_are_refused_by_name() {
    let mut t = T::new();
    assert_eq!(
        t.one(Op::Put(PutRequest::default())).unwrap_err(),
        ServeError::EmptyKey
    );
    let ignore = PutRequest {
        key: "nope".into(),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(t.one(Op::Put(ignore)).unwrap_err(), ServeError::KeyNotFound);
    assert_eq!(
        t.one(Op::Grant { id: -5, ttl: 1 }).unwrap_err(),
        ServeError::Invalid("a negative lease id")
    );
    assert_eq!(
        t.one(Op::Range(RangeRequest {
            key: "k".into(),
            revision: 99,
            ..Default::default()
        }))
        .unwrap_err(),
        ServeError::FutureRev
    );
}

#[test]
fn data_survives_reopening_the_file() {
    let dir = std::env::temp_dir().join(format!(
        "hastack-coord-store-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("db");
    let now = Instant::now();
    let (id, member) = {
        let (mut s, grants) = Store::open(&path, 100).unwrap();
        assert!(grants.is_empty());
        let mut l = Leases::new(10);
        let a = s
            .apply(
                &[
                    Op::Grant { id: 77, ttl: 9 },
                    Op::Put(PutRequest {
                        key: "k".into(),
                        value: "v".into(),
                        lease: 77,
                        ..Default::default()
                    }),
                ],
                &mut l,
                now,
            )
            .unwrap();
        assert!(a.results.iter().all(|r| r.is_ok()));
        (77, s.identity().member_id)
    };
    let (s, grants) = Store::open(&path, 100).unwrap();
    assert_eq!(grants, vec![(id, 9)]);
    assert_eq!(s.revision(), 2);
    assert_eq!(s.identity().member_id, member, "the identity is stable");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
