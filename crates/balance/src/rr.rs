//! Smooth weighted round robin, precomputed.
//!
//! nginx's algorithm: every step, each member's `current` grows by its weight, the member with
//! the largest `current` is chosen and its `current` drops by the total weight. Over one cycle
//! of `sum(weights)` steps every member is chosen exactly `weight` times, spread evenly (weights
//! 5,1,1 give `a a b a c a a`, not `a a a a a b c`).
//!
//! nginx runs that loop under a lock on every request. Here the whole cycle is computed once
//! per [`Picker`](crate::Picker) and requests just take the next position from an atomic
//! cursor, so picking is lock-free and O(1).
//!
//! Invariant: the sequence length is at most `max(n, min(MAX_SEQUENCE, BUILD_BUDGET / n))`.
//! Weights are first divided by their greatest common divisor (exact); if the cycle would
//! still be too long they are scaled down proportionally (never below 1), which makes the
//! shares approximate for pools with very uneven or very large weights.

/// Longest precomputed cycle (entries of 4 bytes: 64 KiB).
pub(crate) const MAX_SEQUENCE: u64 = 16_384;

/// Upper bound on `n x sequence length`, the work of one build, for large pools.
const BUILD_BUDGET: u64 = 1 << 22;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The weights the sequence is built from: reduced by their gcd and, if needed, scaled down
/// so the cycle stays short. Every returned weight is >= 1.
pub(crate) fn cycle_weights(weights: &[u32]) -> Vec<u64> {
    let n = weights.len() as u64;
    let mut w: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
    let g = w.iter().fold(0, |g, &x| gcd(g, x));
    if g > 1 {
        w.iter_mut().for_each(|x| *x /= g);
    }
    let sum: u64 = w.iter().sum();
    let limit = MAX_SEQUENCE.min(BUILD_BUDGET / n.max(1)).max(n);
    if sum > limit {
        for x in &mut w {
            let scaled = u128::from(*x) * u128::from(limit) / u128::from(sum);
            *x = u64::try_from(scaled).unwrap_or(u64::MAX).max(1);
        }
    }
    w
}

/// The smooth weighted round-robin cycle over `weights`, as candidate positions.
pub(crate) fn smooth_sequence(weights: &[u32]) -> Vec<u32> {
    let w = cycle_weights(weights);
    let total: u64 = w.iter().sum();
    let w: Vec<i64> = w
        .iter()
        .map(|&x| i64::try_from(x).unwrap_or(i64::MAX))
        .collect();
    let total_i = i64::try_from(total).unwrap_or(i64::MAX);
    let mut current = vec![0i64; w.len()];
    let mut seq = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total_i;
        seq.push(u32::try_from(best).unwrap_or(u32::MAX));
    }
    seq
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_example() {
        let seq = smooth_sequence(&[5, 1, 1]);
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn gcd_reduces_exactly() {
        assert_eq!(cycle_weights(&[200, 100, 100]), vec![2, 1, 1]);
        assert_eq!(smooth_sequence(&[1000, 1000, 1000]), vec![0, 1, 2]);
    }

    #[test]
    fn long_cycles_are_scaled_down() {
        let w = cycle_weights(&[1_000_000, 999_999, 1]);
        let sum: u64 = w.iter().sum();
        assert!(sum <= MAX_SEQUENCE + 3, "{w:?}");
        assert!(w.iter().all(|&x| x >= 1));
        let seq = smooth_sequence(&[u32::MAX, u32::MAX - 1, 7]);
        assert!(seq.len() as u64 <= MAX_SEQUENCE + 3);
        // A huge pool keeps every member in the cycle.
        let big = vec![3u32; 5_000];
        let w = cycle_weights(&big);
        assert_eq!(w.len(), 5_000);
        assert!(w.iter().all(|&x| x == 1), "gcd reduction");
    }

    #[test]
    fn zero_weights_count_as_one() {
        assert_eq!(smooth_sequence(&[0, 0]), vec![0, 1]);
        assert!(smooth_sequence(&[]).is_empty());
    }
}
