//! Load-balancing pickers: which member gets the next request.
//!
//! Entry point: build a [`Picker`] over the usable members ([`Candidate`]s) with a
//! [`Strategy`], then call [`Picker::pick`] per request. A picker is an immutable snapshot:
//! the caller rebuilds it when the candidate set or the effective weights change (health
//! transitions, slow-start steps, reloads) and publishes it (e.g. with `arc-swap`); picks run
//! concurrently on every worker thread without locks or allocation.
//!
//! | strategy | picks | per pick |
//! |---|---|---|
//! | [`Strategy::RoundRobin`] | smooth weighted round robin (nginx's interleaving), precomputed cycle + atomic cursor | O(1) |
//! | [`Strategy::Random`] | weighted random | O(log n) |
//! | [`Strategy::LeastConn`] | fewest in-flight per unit of weight, ties by weighted random | O(n) |
//! | [`Strategy::P2cEwma`] | two distinct weighted-random candidates, lower peak-EWMA cost per weight wins | O(log n) |
//! | [`Strategy::Hash`] ([`HashAlgorithm::Maglev`]) | Maglev table of 65537 slots | O(1) |
//! | [`Strategy::Hash`] ([`HashAlgorithm::Ketama`]) | ring of virtual nodes proportional to weight | O(log n) |
//!
//! Live load ([`Load`]: in-flight count and peak-EWMA latency) belongs to the member, not to
//! the picker: the data plane calls [`Load::begin`]/[`Load::end`] (or [`Load::track`]) and
//! [`Load::observe`] around each request, and every picker snapshot built over that member
//! sees the same counters.
//!
//! Retries pass the members already tried in [`PickRequest::exclude`]. Consistent hashing
//! then moves to the next distinct member deterministically (the ring successor, or the next
//! Maglev slot), so a key's retry lands on the same second choice on every proxy.
//!
//! Identity: consistent hashing places members by [`member_id`] of their name, never by their
//! position, so two proxies with the same members (in any order) and a restarted proxy map
//! every key to the same member. [`member_id`] and [`hash_key`] are xxh3 with fixed seeds:
//! stable across processes, machines and versions (pinned by tests).
//!
//! This crate deliberately does no IO, keeps no health state (callers pass only usable
//! members; `hastack_core::health` decides who is usable and the slow-start factor), and knows
//! nothing about HTTP: what the hash key is (client IP, header, cookie, URI) is the caller's
//! choice.

mod ketama;
mod load;
mod maglev;
mod picker;
mod rr;

pub use load::{DECAY, InFlight, Load, PENALTY};
pub use picker::{Candidate, HashAlgorithm, PickRequest, Picker, Strategy};

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of [`member_id`]. Changing it reshuffles every consistent-hash assignment.
const MEMBER_SEED: u64 = 0x6861_7374_6163_6b6d; // "hastackm"
/// Seed of [`hash_key`].
const KEY_SEED: u64 = 0x6861_7374_6163_6b6b; // "hastackk"

/// The stable identity of a member named `name`, for [`Candidate::id`]. The same on every
/// process, machine and version.
pub fn member_id(name: &str) -> u64 {
    xxh3_64_with_seed(name.as_bytes(), MEMBER_SEED)
}

/// The stable hash of a request key (client IP bytes, header value, cookie, URI), for
/// [`PickRequest::hash`].
pub fn hash_key(key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, KEY_SEED)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These values must never change: other proxies, restarted proxies and sticky clients
    /// rely on every key mapping to the same member. Cross-checked against the reference C
    /// implementation (python-xxhash `xxh3_64_intdigest(data, seed)`).
    #[test]
    fn hashes_are_pinned() {
        assert_eq!(member_id("app-1"), member_id("app-1"));
        assert_ne!(member_id("app-1"), member_id("app-2"));
        assert_eq!(member_id("app-1"), 14443311528620747185);
        assert_eq!(hash_key(b"10.0.0.1"), 1256529299677302665);
    }
}
