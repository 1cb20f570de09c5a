//! Transactions: compares on a key's revisions, version or value, then one of two branches,
//! applied atomically at one revision. Compare-and-swap is a transaction.

use crate::error::Error;
use crate::proto::etcdserverpb::{self as pb, compare, request_op, response_op};
use crate::types::{KeyValue, Listing};

/// How a compare relates the key's field to the given value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `>`
    Greater,
    /// `<`
    Less,
}

impl CmpOp {
    fn proto(self) -> compare::CompareResult {
        match self {
            CmpOp::Equal => compare::CompareResult::Equal,
            CmpOp::NotEqual => compare::CompareResult::NotEqual,
            CmpOp::Greater => compare::CompareResult::Greater,
            CmpOp::Less => compare::CompareResult::Less,
        }
    }
}

/// One compare of a transaction. A missing key has version, create and mod revision 0 (so
/// `Cmp::create_revision(k, Equal, 0)` means "k does not exist"); a value compare on a
/// missing key is false.
#[derive(Clone, Debug, PartialEq)]
pub struct Cmp(pb::Compare);

impl Cmp {
    fn new(key: &[u8], op: CmpOp, target: compare::CompareTarget, u: compare::TargetUnion) -> Cmp {
        Cmp(pb::Compare {
            result: op.proto() as i32,
            target: target as i32,
            key: key.to_vec(),
            range_end: Vec::new(),
            target_union: Some(u),
        })
    }

    /// Compare the key's version.
    pub fn version(key: impl AsRef<[u8]>, op: CmpOp, v: i64) -> Cmp {
        Cmp::new(
            key.as_ref(),
            op,
            compare::CompareTarget::Version,
            compare::TargetUnion::Version(v),
        )
    }

    /// Compare the key's create revision.
    pub fn create_revision(key: impl AsRef<[u8]>, op: CmpOp, v: i64) -> Cmp {
        Cmp::new(
            key.as_ref(),
            op,
            compare::CompareTarget::Create,
            compare::TargetUnion::CreateRevision(v),
        )
    }

    /// Compare the key's mod revision.
    pub fn mod_revision(key: impl AsRef<[u8]>, op: CmpOp, v: i64) -> Cmp {
        Cmp::new(
            key.as_ref(),
            op,
            compare::CompareTarget::Mod,
            compare::TargetUnion::ModRevision(v),
        )
    }

    /// Compare the key's value.
    pub fn value(key: impl AsRef<[u8]>, op: CmpOp, v: impl AsRef<[u8]>) -> Cmp {
        Cmp::new(
            key.as_ref(),
            op,
            compare::CompareTarget::Value,
            compare::TargetUnion::Value(v.as_ref().to_vec()),
        )
    }

    /// The key does not exist.
    pub fn absent(key: impl AsRef<[u8]>) -> Cmp {
        Cmp::create_revision(key, CmpOp::Equal, 0)
    }
}

/// One operation of a transaction branch.
#[derive(Clone, Debug, PartialEq)]
pub struct TxnOp(pb::RequestOp);

impl TxnOp {
    /// Put `key` = `value` (attached to `lease`).
    pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, lease: Option<i64>) -> TxnOp {
        TxnOp(pb::RequestOp {
            request: Some(request_op::Request::RequestPut(pb::PutRequest {
                key: key.as_ref().to_vec(),
                value: value.as_ref().to_vec(),
                lease: lease.unwrap_or(0),
                ..Default::default()
            })),
        })
    }

    /// Read `key`.
    pub fn get(key: impl AsRef<[u8]>) -> TxnOp {
        TxnOp(pb::RequestOp {
            request: Some(request_op::Request::RequestRange(pb::RangeRequest {
                key: key.as_ref().to_vec(),
                ..Default::default()
            })),
        })
    }

    /// Delete `key`.
    pub fn delete(key: impl AsRef<[u8]>) -> TxnOp {
        TxnOp(pb::RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                pb::DeleteRangeRequest {
                    key: key.as_ref().to_vec(),
                    ..Default::default()
                },
            )),
        })
    }
}

/// A transaction: `if all(compares) then success else failure`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Txn {
    compares: Vec<Cmp>,
    success: Vec<TxnOp>,
    failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction (no compare: the success branch runs).
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Add compares (all must hold).
    pub fn when(mut self, cmps: impl IntoIterator<Item = Cmp>) -> Txn {
        self.compares.extend(cmps);
        self
    }

    /// Operations when every compare holds.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.success.extend(ops);
        self
    }

    /// Operations otherwise.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.failure.extend(ops);
        self
    }

    pub(crate) fn into_proto(self) -> pb::TxnRequest {
        pb::TxnRequest {
            compare: self.compares.into_iter().map(|c| c.0).collect(),
            success: self.success.into_iter().map(|o| o.0).collect(),
            failure: self.failure.into_iter().map(|o| o.0).collect(),
        }
    }
}

/// The answer of one branch operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResult {
    /// A read: what it found.
    Get(Listing),
    /// A put.
    Put,
    /// A delete: how many keys.
    Delete(i64),
    /// A nested transaction (not built by this crate's builder; reported for completeness).
    Txn,
}

/// What a transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the compares held (the success branch ran).
    pub succeeded: bool,
    /// The revision after the transaction.
    pub revision: i64,
    /// One answer per operation of the branch that ran.
    pub results: Vec<TxnOpResult>,
}

impl TxnResult {
    pub(crate) fn from_proto(r: pb::TxnResponse) -> Result<TxnResult, Error> {
        let revision = crate::client::revision_of(r.header.as_ref())?;
        let mut results = Vec::with_capacity(r.responses.len());
        for op in r.responses {
            results.push(match op.response {
                Some(response_op::Response::ResponseRange(mut rr)) => {
                    if rr.header.is_none() {
                        // etcd leaves nested headers empty; the transaction's revision holds.
                        rr.header = Some(pb::ResponseHeader {
                            revision,
                            ..Default::default()
                        });
                    }
                    TxnOpResult::Get(Listing::from_proto(rr)?)
                }
                Some(response_op::Response::ResponsePut(_)) => TxnOpResult::Put,
                Some(response_op::Response::ResponseDeleteRange(d)) => {
                    TxnOpResult::Delete(d.deleted)
                }
                Some(response_op::Response::ResponseTxn(_)) => TxnOpResult::Txn,
                None => {
                    return Err(Error::Protocol {
                        endpoint: String::new(),
                        what: "an empty operation result in a transaction answer".into(),
                    });
                }
            });
        }
        Ok(TxnResult {
            succeeded: r.succeeded,
            revision,
            results,
        })
    }

    /// The first key read by the branch that ran, if any.
    pub fn first_kv(&self) -> Option<&KeyValue> {
        self.results.iter().find_map(|r| match r {
            TxnOpResult::Get(l) => l.kvs.first(),
            _ => None,
        })
    }
}

/// What a compare-and-swap expects to find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key does not exist.
    Absent,
    /// The key's last change was at this revision.
    ModRevision(i64),
    /// The key holds this value.
    Value(Vec<u8>),
}

/// The outcome of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cas {
    /// Written at this revision.
    Swapped(i64),
    /// The expectation did not hold; the key's current state (`None`: absent).
    Conflict(Option<KeyValue>),
}

impl Cas {
    /// The transaction for "if `key` is as `expect`ed, set it to `value`; else read it".
    pub fn txn(key: &[u8], expect: &Expect, value: &[u8], lease: Option<i64>) -> Txn {
        let cmp = match expect {
            Expect::Absent => Cmp::absent(key),
            Expect::ModRevision(r) => Cmp::mod_revision(key, CmpOp::Equal, *r),
            Expect::Value(v) => Cmp::value(key, CmpOp::Equal, v),
        };
        Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(key, value, lease)])
            .or_else([TxnOp::get(key)])
    }

    /// Read the outcome from the transaction's answer.
    pub fn from_result(r: &TxnResult) -> Cas {
        if r.succeeded {
            Cas::Swapped(r.revision)
        } else {
            Cas::Conflict(r.first_kv().cloned())
        }
    }
}

impl crate::Client {
    /// Compare-and-swap: set `key` to `value` if it is as `expect`ed. A conflict is an
    /// answer, not an error. On [`Error::Unknown`] the swap may have happened: read the key
    /// back (its mod revision and value tell) before trying again.
    pub async fn cas(
        &self,
        key: impl AsRef<[u8]>,
        expect: Expect,
        value: impl AsRef<[u8]>,
        lease: Option<i64>,
    ) -> Result<Cas, Error> {
        let r = self
            .txn(Cas::txn(key.as_ref(), &expect, value.as_ref(), lease))
            .await?;
        Ok(Cas::from_result(&r))
    }
}
