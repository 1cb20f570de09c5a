//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted.
//!
//! Each member has a pseudo-random permutation of the table's slots (an `offset` and a
//! `skip`, both derived from its stable id; the table size is prime so every skip visits every
//! slot). Members take turns claiming their next still-free preferred slot until the table is
//! full. A key maps to `table[hash % size]`: one array read.
//!
//! Weights: in round `r` a member may claim slots until it holds `r x weight / max_weight`,
//! so slot counts (and therefore key shares) are proportional to weights; with equal weights
//! this is exactly the paper's round-robin population.
//!
//! Invariants:
//! * the table depends only on the members' ids and weights, never on their order in the
//!   candidate list or their local indexes (population runs in id order), so two proxies with
//!   the same members agree on every key;
//! * the table size is prime and at least 100 x the member count (65537 for up to 655
//!   members), which keeps the share of each member within about 1% of its weight and the
//!   disruption when a member leaves at a few percent of keys beyond the leaver's own.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Table size for pools of up to 655 members: prime, 2^16 + 1.
pub(crate) const DEFAULT_TABLE_SIZE: u64 = 65_537;

const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SKIP_SEED: u64 = 0x6d61_676c_6576_736b; // "maglevsk"

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// The table size for `n` members: 65537, or the first prime >= 100 x n for larger pools.
pub(crate) fn table_size(n: usize) -> u64 {
    let want = (n as u64).saturating_mul(100);
    if want <= DEFAULT_TABLE_SIZE {
        return DEFAULT_TABLE_SIZE;
    }
    let mut m = want | 1;
    while !is_prime(m) {
        m += 2;
    }
    m
}

/// Build the lookup table: `table[slot]` is a position in `ids` / `weights`.
///
/// `ids` and `weights` are parallel; weights of 0 count as 1.
pub(crate) fn build(ids: &[u64], weights: &[u32]) -> Vec<u32> {
    let n = ids.len();
    if n == 0 {
        return Vec::new();
    }
    let m = table_size(n);
    // Population order by id (then position, for duplicate ids) so the table does not depend
    // on the candidate order.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (ids[i], i));
    let offset: Vec<u64> = ids
        .iter()
        .map(|id| xxh3_64_with_seed(&id.to_le_bytes(), OFFSET_SEED) % m)
        .collect();
    let skip: Vec<u64> = ids
        .iter()
        .map(|id| xxh3_64_with_seed(&id.to_le_bytes(), SKIP_SEED) % (m - 1) + 1)
        .collect();
    let w: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
    let w_max = w.iter().copied().max().unwrap_or(1);

    let size = usize::try_from(m).unwrap_or(usize::MAX);
    let mut table = vec![u32::MAX; size];
    // Each member's next preferred slot (its permutation `offset + j x skip mod m`, walked
    // incrementally: one add and one compare per step, no division), and slots claimed so far.
    let mut next: Vec<u64> = offset;
    let mut claimed = vec![0u64; n];
    let mut filled: u64 = 0;
    let mut round: u64 = 0;
    'population: loop {
        round += 1;
        for &i in &order {
            while claimed[i] * w_max < round * w[i] {
                // The permutation visits every slot once (m prime, 1 <= skip < m) and the
                // table is not full, so this finds a free slot within m steps.
                loop {
                    let slot = next[i];
                    next[i] += skip[i];
                    if next[i] >= m {
                        next[i] -= m;
                    }
                    #[allow(
                        clippy::cast_possible_truncation,
                        reason = "slot < m, and m fits the table, which fits usize"
                    )]
                    let cell = &mut table[slot as usize];
                    if *cell == u32::MAX {
                        *cell = u32::try_from(i).unwrap_or(u32::MAX - 1);
                        break;
                    }
                }
                claimed[i] += 1;
                filled += 1;
                if filled == m {
                    break 'population;
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_prime_and_large_enough() {
        assert!(is_prime(DEFAULT_TABLE_SIZE));
        assert_eq!(table_size(3), DEFAULT_TABLE_SIZE);
        assert_eq!(table_size(655), DEFAULT_TABLE_SIZE);
        let m = table_size(1000);
        assert!(m >= 100_000 && is_prime(m), "{m}");
    }

    #[test]
    fn equal_weights_share_the_table_evenly() {
        let ids: Vec<u64> = (0..7).map(|i| crate::member_id(&format!("m{i}"))).collect();
        let t = build(&ids, &[1; 7]);
        assert_eq!(t.len() as u64, DEFAULT_TABLE_SIZE);
        let mut counts = [0u64; 7];
        for &p in &t {
            counts[p as usize] += 1;
        }
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(hi - lo <= 1, "{counts:?}");
    }

    #[test]
    fn weighted_shares_follow_weights() {
        let ids: Vec<u64> = (0..3).map(|i| crate::member_id(&format!("w{i}"))).collect();
        let t = build(&ids, &[1, 2, 5]);
        let mut counts = [0f64; 3];
        for &p in &t {
            counts[p as usize] += 1.0;
        }
        let m = t.len() as f64;
        for (c, w) in counts.iter().zip([1.0, 2.0, 5.0]) {
            assert!((c / m - w / 8.0).abs() < 0.002, "{counts:?}");
        }
    }
}
