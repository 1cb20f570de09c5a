//! Why the embedded server refused a request, and the gRPC status etcd answers for it.
//!
//! The messages are etcd's own (`rpctypes`), because clients match on them: the Go client
//! and `etcdctl` turn `etcdserver: mvcc: required revision has been compacted` into
//! `ErrCompacted`, and so does [`crate::Error`]'s conversion.

use tonic::{Code, Status};

/// A refused request (or a failed store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeError {
    /// `key` is empty.
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    KeyNotFound,
    /// `ignore_value` with a value.
    ValueProvided,
    /// `ignore_lease` with a lease.
    LeaseProvided,
    /// More than `MAX_TXN_OPS` operations in a transaction branch.
    TooManyOps,
    /// A transaction writes one key twice.
    DuplicateKey,
    /// The revision asked for is below the compact revision.
    Compacted,
    /// The revision asked for is above the current one.
    FutureRev,
    /// The lease does not exist.
    LeaseNotFound,
    /// A lease with that id exists.
    LeaseExists,
    /// TTL above the maximum.
    TtlTooLarge,
    /// The lease table is full.
    TooManyLeases(usize),
    /// Too many watchers.
    TooManyWatchers(usize),
    /// The request exceeds the size limit.
    RequestTooLarge,
    /// A malformed request.
    Invalid(&'static str),
    /// Something etcd does that this store does not.
    Unsupported(&'static str),
    /// The store is shutting down.
    Stopping,
    /// The storage failed: the server stops (fail-stop).
    Storage(String),
}

impl ServeError {
    /// The gRPC status etcd answers.
    pub fn status(&self) -> Status {
        match self {
            ServeError::EmptyKey => Status::invalid_argument("etcdserver: key is not provided"),
            ServeError::KeyNotFound => Status::invalid_argument("etcdserver: key not found"),
            ServeError::ValueProvided => Status::invalid_argument("etcdserver: value is provided"),
            ServeError::LeaseProvided => Status::invalid_argument("etcdserver: lease is provided"),
            ServeError::TooManyOps => {
                Status::invalid_argument("etcdserver: too many operations in txn request")
            }
            ServeError::DuplicateKey => {
                Status::invalid_argument("etcdserver: duplicate key given in txn request")
            }
            ServeError::Compacted => {
                Status::out_of_range("etcdserver: mvcc: required revision has been compacted")
            }
            ServeError::FutureRev => {
                Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
            }
            ServeError::LeaseNotFound => Status::not_found("etcdserver: requested lease not found"),
            ServeError::LeaseExists => {
                Status::failed_precondition("etcdserver: lease already exists")
            }
            ServeError::TtlTooLarge => Status::out_of_range("etcdserver: too large lease TTL"),
            ServeError::TooManyLeases(max) => Status::resource_exhausted(format!(
                "hastack coord: too many leases (limit {max}, see `max_leases`)"
            )),
            ServeError::TooManyWatchers(max) => Status::resource_exhausted(format!(
                "hastack coord: too many watchers (limit {max}, see `max_watchers`)"
            )),
            ServeError::RequestTooLarge => {
                Status::invalid_argument("etcdserver: request is too large")
            }
            ServeError::Invalid(what) => {
                Status::invalid_argument(format!("hastack coord: invalid request: {what}"))
            }
            ServeError::Unsupported(what) => Status::new(
                Code::Unimplemented,
                format!("hastack coord does not support {what}"),
            ),
            ServeError::Stopping => Status::unavailable("hastack coord: the server is stopping"),
            ServeError::Storage(e) => {
                Status::unavailable(format!("hastack coord: storage failed: {e}"))
            }
        }
    }
}
