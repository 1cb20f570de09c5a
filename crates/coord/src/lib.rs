//! Coordination for hastack: leases, compare-and-swap transactions, resumable watches and
//! leader election with fencing tokens, over the etcd v3 API, and `hastack coord`, an
//! embedded single-node server of that API.
//!
//! **One client code path.** [`Client`] speaks etcd v3 gRPC. In production it talks to an
//! etcd cluster (the quorum: this crate never implements consensus); on one machine and in
//! the demo it talks to the embedded [`server`], which speaks the same protocol, so the same
//! consumer code runs against both, and a consumer's tests can start an embedded server in
//! memory ([`server::start`] with [`server::Storage::Memory`]) instead of mocking a trait.
//!
//! * [`Client`]: endpoints, failover with jittered bounded back-off, a deadline on every
//!   call, and errors as values that say whether a retry is safe ([`Error::retry`]).
//! * KV: [`Client::get`], [`Client::list`], [`Client::put`], [`Client::delete`],
//!   [`Client::txn`] with [`Txn`]/[`Cmp`]/[`TxnOp`], [`Client::cas`].
//! * Leases: [`Client::grant`], [`Client::keep_alive_once`], [`Client::time_to_live`],
//!   [`Client::revoke`], and [`LeaseKeeper`] (background renewal with a conservative deadline
//!   for fencing).
//! * Watches: [`Client::watch`] / [`Watch::next`], resumed across reconnects from the next
//!   revision owed, never losing or repeating an event.
//! * Election: [`Election::campaign`] -> [`Leader`] with a strictly increasing
//!   [`Leader::token`].
//! * [`lincheck`]: a linearizability checker for register histories (tests, chaos).
//! * [`etcd`]: running etcd members as child processes (tests, benchmarks, chaos faults).
//!
//! The protos in `proto/` are etcd's (Apache-2.0), compiled at build time by `protox` (no
//! `protoc` needed). This crate deliberately does not do etcd's auth, TLS client
//! certificates, or historical reads at a past revision.

mod client;
pub mod election;
mod error;
pub mod etcd;
mod keeper;
pub mod lincheck;
pub mod server;
mod txn;
mod types;
mod watch;

/// The etcd v3 protocol types, generated from the vendored protos.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod proto {
    /// etcd's `mvccpb` (key-values and events).
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// etcd's `authpb` (referenced by `rpc.proto`).
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    /// etcd's `etcdserverpb` (the gRPC services).
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

pub use client::{Client, ClientOptions, MAX_RESPONSE_BYTES};
pub use election::{Election, Leader, LeaderInfo};
pub use error::{Error, Retry};
pub use keeper::{LeaseKeeper, LeaseState, Renewal};
pub use txn::{Cas, Cmp, CmpOp, Expect, Txn, TxnOp, TxnOpResult, TxnResult};
pub use types::{
    Event, EventKind, KeyValue, LeaseGrant, LeaseInfo, Listing, MemberStatus, prefix_end,
};
pub use watch::{Watch, WatchBatch, WatchSpec};
