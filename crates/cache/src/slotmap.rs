//! The slot map: which shard owns each of the 16384 slots.

use crate::slot::{SLOTS, key_slot};

/// Owner shard of every slot. Phase 1 builds it once from the config; phase 2 will swap
/// in maps published by the managers (an `ArcSwap` of this type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMap {
    owner: Box<[u16]>,
    shards: usize,
}

impl SlotMap {
    /// A map from an owner per slot (`owner.len() == SLOTS`, every owner `< shards`),
    /// or `None` when that does not hold.
    pub fn new(owner: Vec<u16>, shards: usize) -> Option<SlotMap> {
        (owner.len() == SLOTS && owner.iter().all(|&o| usize::from(o) < shards)).then(|| SlotMap {
            owner: owner.into_boxed_slice(),
            shards,
        })
    }

    /// `shards` contiguous, near-equal ranges in order, like `redis-cli --cluster create`
    /// (the first `SLOTS % shards` shards get one slot more). `shards` must be 1..=SLOTS.
    pub fn even(shards: usize) -> SlotMap {
        let shards = shards.clamp(1, SLOTS);
        // redis-cli's allocation (`clusterManagerNodeArrayReset` ... `lround`), so a map
        // built here matches a cluster created with it.
        let per = SLOTS as f64 / shards as f64;
        let mut owner = vec![0u16; SLOTS];
        let (mut first, mut cursor) = (0usize, 0f64);
        for shard in 0..shards {
            let mut last = (cursor + per - 1.0).round() as usize;
            if last >= SLOTS || shard == shards - 1 {
                last = SLOTS - 1;
            }
            last = last.max(first);
            for o in owner.iter_mut().take(last + 1).skip(first) {
                *o = shard as u16;
            }
            first = last + 1;
            cursor += per;
        }
        SlotMap {
            owner: owner.into_boxed_slice(),
            shards,
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Owner of `slot` (taken modulo [`SLOTS`]).
    pub fn owner(&self, slot: u16) -> usize {
        usize::from(self.owner[usize::from(slot) % SLOTS])
    }

    /// Owner of `key`'s slot.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        self.owner(key_slot(key))
    }

    /// The slot ranges (inclusive) owned by `shard`, in order.
    pub fn ranges(&self, shard: usize) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (slot, &o) in self.owner.iter().enumerate() {
            if usize::from(o) != shard {
                continue;
            }
            let slot = slot as u16;
            match out.last_mut() {
                Some((_, end)) if *end + 1 == slot => *end = slot,
                _ => out.push((slot, slot)),
            }
        }
        out
    }

    /// Number of slots `shard` owns.
    pub fn count(&self, shard: usize) -> usize {
        self.owner
            .iter()
            .filter(|&&o| usize::from(o) == shard)
            .count()
    }
}

/// `0-8191,10000` style text of ranges.
pub fn ranges_text(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn even_split_matches_redis_cli() {
        // redis-cli --cluster create with 3 masters: 0-5460, 5461-10922, 10923-16383.
        let m = SlotMap::even(3);
        assert_eq!(m.ranges(0), vec![(0, 5460)]);
        assert_eq!(m.ranges(1), vec![(5461, 10922)]);
        assert_eq!(m.ranges(2), vec![(10923, 16383)]);
        let m = SlotMap::even(2);
        assert_eq!(m.ranges(0), vec![(0, 8191)]);
        assert_eq!(ranges_text(&m.ranges(1)), "8192-16383");
    }

    proptest! {
        #[test]
        fn every_slot_has_exactly_one_owner(n in 1usize..64) {
            let m = SlotMap::even(n);
            let total: usize = (0..n).map(|s| m.count(s)).sum();
            prop_assert_eq!(total, SLOTS);
            for s in 0..n {
                // Contiguous and non-empty.
                prop_assert_eq!(m.ranges(s).len(), 1);
            }
        }

        #[test]
        fn a_key_always_maps_to_the_same_shard(key in proptest::collection::vec(any::<u8>(), 0..40)) {
            let m = SlotMap::even(5);
            prop_assert_eq!(m.shard_of(&key), m.owner(key_slot(&key)));
            prop_assert!(m.shard_of(&key) < 5);
        }
    }
}
