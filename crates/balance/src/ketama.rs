//! Ketama consistent hashing: a ring of virtual nodes.
//!
//! Each member places `points(weight)` virtual nodes on a 64-bit ring at
//! `xxh3(id, k)` for `k = 0, 1, ...`; a key belongs to the first node at or after its hash
//! (wrapping). Lookup is a binary search.
//!
//! Virtual nodes per member: `ceil(320 x weight / unit)`, where `unit` is the smallest power
//! of two >= the largest weight in the set. So the heaviest member gets 161..=320 points and
//! the others proportionally fewer (at least 1). Using a power of two rather than the exact
//! maximum is deliberate:
//!
//! * a member's points depend only on its own id, its own weight and `unit`, so removing a
//!   member (or adding one) that does not move the largest weight across a power of two leaves
//!   every other point where it was: **exactly** the leaver's keys move, nothing else;
//! * a member's points are a prefix of one fixed sequence, so raising its weight (slow start)
//!   only adds points: keys only ever move *to* the warming member.
//!
//! Invariant: the ring depends only on ids and weights, not on candidate order (ties between
//! equal points are broken by id), so two proxies with the same members agree on every key.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Virtual nodes of a member whose weight equals `unit`.
pub(crate) const POINTS_PER_UNIT: u64 = 320;

const RING_SEED: u64 = 0x6b65_7461_6d61_7269; // "ketamari"

/// The ring: sorted points and, in parallel, the candidate position owning each.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    pub(crate) points: Vec<u64>,
    pub(crate) owners: Vec<u32>,
}

/// Virtual nodes for `weight` when the largest weight rounds up to `unit`.
pub(crate) fn points_for(weight: u32, unit: u64) -> u64 {
    let w = u64::from(weight.max(1));
    (w * POINTS_PER_UNIT).div_ceil(unit).max(1)
}

fn point(id: u64, k: u64) -> u64 {
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&id.to_le_bytes());
    buf[8..].copy_from_slice(&k.to_le_bytes());
    xxh3_64_with_seed(&buf, RING_SEED)
}

/// Build the ring over parallel `ids` / `weights`.
pub(crate) fn build(ids: &[u64], weights: &[u32]) -> Ring {
    let w_max = weights.iter().map(|&w| u64::from(w.max(1))).max();
    let Some(w_max) = w_max else {
        return Ring::default();
    };
    let unit = w_max.next_power_of_two();
    let mut nodes: Vec<(u64, u64, u32)> = Vec::new();
    for (pos, (&id, &w)) in ids.iter().zip(weights).enumerate() {
        let pos = u32::try_from(pos).unwrap_or(u32::MAX);
        for k in 0..points_for(w, unit) {
            nodes.push((point(id, k), id, pos));
        }
    }
    nodes.sort_unstable();
    Ring {
        points: nodes.iter().map(|n| n.0).collect(),
        owners: nodes.iter().map(|n| n.2).collect(),
    }
}

impl Ring {
    /// Index of the first node at or after `hash`, wrapping to 0.
    pub(crate) fn first(&self, hash: u64) -> usize {
        let i = self.points.partition_point(|&p| p < hash);
        if i == self.points.len() { 0 } else { i }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_proportional_and_bounded() {
        assert_eq!(points_for(1, 1), 320);
        assert_eq!(points_for(1000, 1024), 313);
        assert_eq!(points_for(100, 1024), 32);
        assert_eq!(points_for(1, 1 << 20), 1);
        assert_eq!(points_for(u32::MAX, 1 << 32), 320);
    }

    #[test]
    fn lookup_wraps() {
        let ids = [crate::member_id("a"), crate::member_id("b")];
        let ring = build(&ids, &[1, 1]);
        assert_eq!(ring.points.len(), 640);
        assert!(ring.points.windows(2).all(|w| w[0] <= w[1]));
        let i = ring.first(u64::MAX);
        assert!(i == 0 || ring.points[i] == u64::MAX);
        let last = *ring.points.last().unwrap();
        if last < u64::MAX {
            assert_eq!(ring.first(last + 1), 0);
        }
        assert_eq!(ring.first(0), 0);
    }
}
