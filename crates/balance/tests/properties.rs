//! Property tests of the pickers: distributions follow weights, exclusions are honoured,
//! least-conn and P2C prefer the less loaded, and consistent hashing moves only the keys it
//! must when a member leaves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hastack_balance::{
    Candidate, HashAlgorithm, Load, PickRequest, Picker, Strategy, hash_key, member_id,
};
use proptest::prelude::*;
use tokio::time::Instant;

const ALL: [Strategy; 6] = [
    Strategy::RoundRobin,
    Strategy::Random,
    Strategy::LeastConn,
    Strategy::P2cEwma,
    Strategy::Hash(HashAlgorithm::Maglev),
    Strategy::Hash(HashAlgorithm::Ketama),
];

/// Candidates with member indexes `3 x i` (so that member != position) and names `m<i>`.
fn cands(weights: &[u32]) -> Vec<Candidate> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Candidate {
            member: i * 3,
            id: member_id(&format!("m{i}")),
            weight: w,
            load: Arc::new(Load::new()),
        })
        .collect()
}

fn req<'a>(now: Instant, hash: Option<u64>, exclude: &'a [usize]) -> PickRequest<'a> {
    PickRequest { now, hash, exclude }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Which member id each of `keys` maps to.
fn assignment(p: &Picker, keys: &[u64]) -> Vec<u64> {
    let now = Instant::now();
    let id_of: HashMap<usize, u64> = p.candidates().iter().map(|c| (c.member, c.id)).collect();
    keys.iter()
        .map(|&k| id_of[&p.pick(&req(now, Some(k), &[])).unwrap()])
        .collect()
}

fn keys(n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| hash_key(format!("key-{i}").as_bytes()))
        .collect()
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Any `cycle_len` consecutive round-robin picks give each member exactly its
    /// (gcd-reduced) weight.
    #[test]
    fn round_robin_is_exact_per_cycle(weights in prop::collection::vec(1u32..=20, 1..12), seed: u64) {
        let p = Picker::new(Strategy::RoundRobin, cands(&weights));
        let g = weights.iter().fold(0, |g, &w| gcd(g, w));
        let len = p.cycle_len();
        prop_assert_eq!(len as u32, weights.iter().map(|w| w / g).sum::<u32>());
        let mut rng = fastrand::Rng::with_seed(seed);
        let now = Instant::now();
        // Start anywhere in the cycle.
        for _ in 0..(seed % 7) {
            p.pick_with(&mut rng, &req(now, None, &[]));
        }
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..len {
            counts[p.pick_with(&mut rng, &req(now, None, &[])).unwrap() / 3] += 1;
        }
        let want: Vec<u32> = weights.iter().map(|w| w / g).collect();
        prop_assert_eq!(counts, want);
    }

    /// Weighted random (and hashing without a key) converges to the weights.
    #[test]
    fn random_converges_to_weights(weights in prop::collection::vec(1u32..=10, 2..8), seed: u64) {
        for s in [Strategy::Random, Strategy::Hash(HashAlgorithm::Maglev)] {
            let p = Picker::new(s, cands(&weights));
            let mut rng = fastrand::Rng::with_seed(seed);
            let now = Instant::now();
            let n = 20_000;
            let mut counts = vec![0u32; weights.len()];
            for _ in 0..n {
                counts[p.pick_with(&mut rng, &req(now, None, &[])).unwrap() / 3] += 1;
            }
            let total: u32 = weights.iter().sum();
            for (c, w) in counts.iter().zip(&weights) {
                let share = f64::from(*c) / f64::from(n);
                let want = f64::from(*w) / f64::from(total);
                // ~5.5 standard deviations at worst (p = 0.5): failures are not flukes.
                prop_assert!((share - want).abs() < 0.02, "{:?}: {:?} vs {:?}", s, counts, weights);
            }
        }
    }

    /// Every strategy honours `exclude`, and answers `None` exactly when all are excluded.
    #[test]
    fn exclusion_is_honoured(
        weights in prop::collection::vec(1u32..=5, 1..10),
        excluded in prop::collection::vec(any::<bool>(), 10),
        inflight in prop::collection::vec(0u32..4, 10),
        hash in prop::option::of(any::<u64>()),
        seed: u64,
    ) {
        let exclude: Vec<usize> = (0..weights.len()).filter(|&i| excluded[i]).map(|i| i * 3).collect();
        let all_excluded = exclude.len() == weights.len();
        let mut rng = fastrand::Rng::with_seed(seed);
        let now = Instant::now();
        for s in ALL {
            let c = cands(&weights);
            for (cand, &f) in c.iter().zip(&inflight) {
                (0..f).for_each(|_| cand.load.begin());
                cand.load.observe(Duration::from_millis(u64::from(f) + 1), now);
            }
            let p = Picker::new(s, c);
            for _ in 0..20 {
                let got = p.pick_with(&mut rng, &req(now, hash, &exclude));
                match got {
                    None => prop_assert!(all_excluded, "{:?} picked nothing", s),
                    Some(m) => {
                        prop_assert!(!all_excluded);
                        prop_assert!(!exclude.contains(&m), "{:?} picked excluded {}", s, m);
                        prop_assert!(m % 3 == 0 && m / 3 < weights.len());
                    }
                }
            }
        }
    }

    /// Least-conn picks a member with minimal in-flight per weight among the eligible.
    #[test]
    fn least_conn_picks_a_minimum(
        weights in prop::collection::vec(1u32..=4, 1..10),
        inflight in prop::collection::vec(0u32..6, 10),
        excluded in prop::collection::vec(any::<bool>(), 10),
        seed: u64,
    ) {
        let c = cands(&weights);
        for (cand, &f) in c.iter().zip(&inflight) {
            (0..f).for_each(|_| cand.load.begin());
        }
        let exclude: Vec<usize> = (0..weights.len()).filter(|&i| excluded[i]).map(|i| i * 3).collect();
        let p = Picker::new(Strategy::LeastConn, c);
        let mut rng = fastrand::Rng::with_seed(seed);
        let eligible: Vec<usize> = (0..weights.len()).filter(|i| !excluded[*i]).collect();
        for _ in 0..10 {
            let got = p.pick_with(&mut rng, &req(Instant::now(), None, &exclude));
            let Some(m) = got else {
                prop_assert!(eligible.is_empty());
                continue;
            };
            let i = m / 3;
            for &j in &eligible {
                // inflight[i]/w[i] <= inflight[j]/w[j]
                prop_assert!(inflight[i] * weights[j] <= inflight[j] * weights[i],
                    "picked {} ({}/{}) over {} ({}/{})", i, inflight[i], weights[i], j, inflight[j], weights[j]);
            }
        }
    }

    /// P2C never picks an excluded member, always picks the cheaper of exactly two, and never
    /// picks a uniquely most expensive member when there is any alternative.
    #[test]
    fn p2c_prefers_the_cheaper(
        weights in prop::collection::vec(1u32..=4, 2..8),
        rtt_ms in prop::collection::vec(1u64..50, 8),
        inflight in prop::collection::vec(0u32..5, 8),
        excluded in prop::collection::vec(any::<bool>(), 8),
        seed: u64,
    ) {
        let now = Instant::now();
        let c = cands(&weights);
        for (i, cand) in c.iter().enumerate() {
            (0..inflight[i]).for_each(|_| cand.load.begin());
            cand.load.observe(Duration::from_millis(rtt_ms[i]), now);
        }
        let per_weight: Vec<f64> = c.iter().map(|c| c.load.cost(now) / f64::from(c.weight)).collect();
        let exclude: Vec<usize> = (0..weights.len()).filter(|&i| excluded[i]).map(|i| i * 3).collect();
        let eligible: Vec<usize> = (0..weights.len()).filter(|i| !excluded[*i]).collect();
        let p = Picker::new(Strategy::P2cEwma, c);
        let mut rng = fastrand::Rng::with_seed(seed);
        let worst = eligible.iter().copied().max_by(|&a, &b| per_weight[a].total_cmp(&per_weight[b]));
        let unique_worst = worst.filter(|&w| eligible.iter().filter(|&&j| per_weight[j] == per_weight[w]).count() == 1);
        for _ in 0..30 {
            let got = p.pick_with(&mut rng, &req(now, None, &exclude));
            let Some(m) = got else {
                prop_assert!(eligible.is_empty());
                continue;
            };
            prop_assert!(!exclude.contains(&m));
            let i = m / 3;
            if eligible.len() == 2 {
                let other = if eligible[0] == i { eligible[1] } else { eligible[0] };
                prop_assert!(per_weight[i] <= per_weight[other]);
            }
            if eligible.len() >= 2 {
                prop_assert_ne!(Some(i), unique_worst, "picked the most expensive member");
            }
        }
    }

    /// Ketama: removing a member moves exactly that member's keys (when the largest weight
    /// stays in the same power-of-two bucket), and a retry that excludes a member lands where
    /// the key would go if that member had left.
    #[test]
    fn ketama_removal_moves_only_the_leavers_keys(
        weights in prop::collection::vec(1u32..=8, 2..12),
        leaver in any::<prop::sample::Index>(),
    ) {
        let leaver = leaver.index(weights.len());
        let unit = |ws: &[u32]| ws.iter().max().unwrap().next_power_of_two();
        let mut rest = weights.clone();
        rest.remove(leaver);
        prop_assume!(unit(&weights) == unit(&rest));
        let all = cands(&weights);
        let mut without = all.clone();
        without.remove(leaver);
        let before = Picker::new(Strategy::Hash(HashAlgorithm::Ketama), all);
        let after = Picker::new(Strategy::Hash(HashAlgorithm::Ketama), without);
        let ks = keys(3_000);
        let a = assignment(&before, &ks);
        let b = assignment(&after, &ks);
        let leaver_id = member_id(&format!("m{leaver}"));
        let now = Instant::now();
        for (i, k) in ks.iter().enumerate() {
            if a[i] == leaver_id {
                prop_assert_ne!(b[i], leaver_id);
                // Retry semantics: excluding the leaver gives the ring successor, which is
                // exactly where the key lives once the leaver is gone.
                let m = before.pick(&req(now, Some(*k), &[leaver * 3])).unwrap();
                prop_assert_eq!(member_id(&format!("m{}", m / 3)), b[i]);
            } else {
                prop_assert_eq!(a[i], b[i], "a key of another member moved");
            }
        }
    }

}

// Each case builds 65537-slot Maglev tables (slow in debug builds): fewer cases.
proptest! {
    #![proptest_config(config(24))]

    /// Maglev: removing one of N equal members moves its keys plus only a small share of the
    /// others' (the paper's "minimal disruption": under 1% measured with the 65537-slot table).
    #[test]
    fn maglev_removal_moves_about_one_nth(n in 3usize..30, leaver in any::<prop::sample::Index>()) {
        let leaver = leaver.index(n);
        let weights = vec![1; n];
        let all = cands(&weights);
        let mut without = all.clone();
        without.remove(leaver);
        let before = Picker::new(Strategy::Hash(HashAlgorithm::Maglev), all);
        let after = Picker::new(Strategy::Hash(HashAlgorithm::Maglev), without);
        let ks = keys(5_000);
        let a = assignment(&before, &ks);
        let b = assignment(&after, &ks);
        let leaver_id = member_id(&format!("m{leaver}"));
        let (mut others, mut others_moved, mut moved) = (0, 0, 0);
        for i in 0..ks.len() {
            if a[i] != b[i] {
                moved += 1;
            }
            if a[i] == leaver_id {
                prop_assert_ne!(b[i], leaver_id);
            } else {
                others += 1;
                if a[i] != b[i] {
                    others_moved += 1;
                }
            }
        }
        let extra = f64::from(others_moved) / f64::from(others);
        prop_assert!(extra < 0.02, "{:.3} of the other members' keys moved (n = {})", extra, n);
        let share = f64::from(moved) / ks.len() as f64;
        let ideal = 1.0 / n as f64;
        prop_assert!(share < ideal + 0.06, "{:.3} of keys moved, ideal {:.3}", share, ideal);
    }

    /// Consistent hashing depends on ids and weights only: another proxy with the same
    /// members in another order, with other local indexes, maps every key to the same member.
    #[test]
    fn hashing_ignores_candidate_order(weights in prop::collection::vec(1u32..=5, 1..10), seed: u64) {
        for alg in [HashAlgorithm::Maglev, HashAlgorithm::Ketama] {
            let a = cands(&weights);
            let mut b = a.clone();
            fastrand::Rng::with_seed(seed).shuffle(&mut b);
            for (i, c) in b.iter_mut().enumerate() {
                c.member = 100 + i;
            }
            let ks = keys(500);
            let pa = Picker::new(Strategy::Hash(alg), a);
            let pb = Picker::new(Strategy::Hash(alg), b);
            prop_assert_eq!(assignment(&pa, &ks), assignment(&pb, &ks));
        }
    }

    /// A retry of the same key with the same exclusions lands on the same member every time.
    #[test]
    fn hash_retries_are_deterministic(n in 2usize..12, key: u64, first_excluded in any::<prop::sample::Index>()) {
        for alg in [HashAlgorithm::Maglev, HashAlgorithm::Ketama] {
            let p = Picker::new(Strategy::Hash(alg), cands(&vec![1; n]));
            let now = Instant::now();
            let ex = [first_excluded.index(n) * 3];
            let first = p.pick(&req(now, Some(key), &ex)).unwrap();
            prop_assert_ne!(first, ex[0]);
            for _ in 0..5 {
                prop_assert_eq!(p.pick(&req(now, Some(key), &ex)), Some(first));
            }
        }
    }
}

/// Maglev slot shares follow weights closely; ketama's roughly (fewer virtual nodes).
#[test]
fn weighted_hash_shares_follow_weights() {
    let weights = [1u32, 2, 3, 4];
    let ks = keys(40_000);
    for (alg, tol) in [(HashAlgorithm::Maglev, 0.01), (HashAlgorithm::Ketama, 0.04)] {
        let p = Picker::new(Strategy::Hash(alg), cands(&weights));
        let a = assignment(&p, &ks);
        for (i, w) in weights.iter().enumerate() {
            let id = member_id(&format!("m{i}"));
            let share = a.iter().filter(|&&x| x == id).count() as f64 / ks.len() as f64;
            let want = f64::from(*w) / 10.0;
            assert!(
                (share - want).abs() < tol,
                "{alg:?} member {i}: {share:.3} vs {want:.3}"
            );
        }
    }
}

/// Slow start on a ketama ring only pulls keys towards the warming member.
#[test]
fn ketama_weight_increase_only_moves_keys_to_that_member() {
    let ks = keys(5_000);
    let warming = member_id("m0");
    let mut prev: Option<Vec<u64>> = None;
    for w0 in [1u32, 3, 5, 8] {
        let p = Picker::new(Strategy::Hash(HashAlgorithm::Ketama), cands(&[w0, 8, 8, 8]));
        let a = assignment(&p, &ks);
        if let Some(prev) = &prev {
            for (x, y) in prev.iter().zip(&a) {
                assert!(
                    x == y || *y == warming,
                    "a key moved between two other members"
                );
            }
        }
        prev = Some(a);
    }
}

/// P2C under load: a member answering 10x slower gets far less traffic.
#[test]
fn p2c_avoids_a_slow_member() {
    let now = Instant::now();
    let c = cands(&[1, 1, 1]);
    c[0].load.observe(Duration::from_millis(100), now);
    c[1].load.observe(Duration::from_millis(10), now);
    c[2].load.observe(Duration::from_millis(10), now);
    let p = Picker::new(Strategy::P2cEwma, c);
    let mut rng = fastrand::Rng::with_seed(3);
    let mut counts = [0u32; 3];
    for _ in 0..3_000 {
        counts[p.pick_with(&mut rng, &req(now, None, &[])).unwrap() / 3] += 1;
    }
    // The slow member is the most expensive of any pair it is in: never picked while idle.
    assert_eq!(counts[0], 0, "{counts:?}");
}
