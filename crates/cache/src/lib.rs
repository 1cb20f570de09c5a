//! The cache tier of hastack.
//!
//! * [`resp`]: a bounded, resumable RESP2/RESP3 codec (framer, request parser, value
//!   tree, encoders). Written by hand; see its docs for why.
//! * [`slot`]: Redis Cluster key slots (CRC16/XMODEM mod 16384 with `{hash tags}`),
//!   bit-exact with Redis; [`slotmap::SlotMap`] assigns slots to shards.
//! * [`command`]: the command table (keys, routing, read/write, the miss answer of each
//!   read); [`route`]: the pure routing decisions built on it (where a request goes, how a
//!   split command is joined, what a dead shard answers); [`session`]: the per-connection
//!   state the proxy answers itself (AUTH, SELECT, MULTI, ...).
//! * [`proxy`]: `hastack cache proxy`, a sharding Redis proxy over shard groups (master +
//!   replicas) where **a dead shard is a miss, never a rehash**; [`config`] is its
//!   `[cache.proxy]` section.
//!
//! * [`failover`]: the failover manager's pure decision machine (sdown, odown by quorum, one
//!   promotion per epoch owned through the coordination store, Sentinel's replica order),
//!   property-tested; its driver (probes, `coord`) is phase 2.
//! * [`sentinel`]: the manager's Sentinel protocol face (`SENTINEL get-master-addr-by-name`,
//!   `masters`, `replicas`, ..., and Sentinel's pub/sub events), served from a view.
//!
//! Deliberately not here (yet): the manager's driver and its Sentinel face, which need the
//! `coord` crate's leases and fencing tokens (see docs/cache.md, "Phase 2 design"). The
//! proxy follows a static slot map and static masters; it never promotes anything.
//!
//! Entry point: [`proxy::CacheProxy::start`] with a [`config::ProxySpec`] from
//! [`config::load`].

pub mod command;
pub mod config;
pub mod failover;
pub mod proxy;
pub mod resp;
pub mod route;
pub mod sentinel;
pub mod session;
pub mod slot;
pub mod slotmap;

/// Errors of the cache crate that are not protocol errors (those are
/// [`resp::ProtocolError`], carried as values on the data path).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A worker thread or runtime could not be started.
    #[error("cannot start a worker: {0}")]
    Worker(std::io::Error),
}
