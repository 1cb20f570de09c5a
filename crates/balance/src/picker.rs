//! The [`Picker`]: one immutable snapshot over a candidate set, picking per request.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;

use crate::load::Load;
use crate::{ketama, maglev, rr};

/// Which consistent-hashing scheme a [`Strategy::Hash`] picker uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// Maglev lookup table (65537 slots): O(1) lookup, near-perfect balance, a few percent
    /// of extra key movement when the set changes.
    Maglev,
    /// Ketama ring of virtual nodes: O(log n) lookup, only the leaver's keys move.
    Ketama,
}

/// How a [`Picker`] chooses among its candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Smooth weighted round robin (nginx's interleaving, precomputed, lock-free).
    RoundRobin,
    /// Weighted random.
    Random,
    /// Fewest in-flight requests per unit of weight; ties broken by weighted random.
    LeastConn,
    /// Power of two choices: two distinct weighted-random candidates, the one with the lower
    /// peak-EWMA cost per unit of weight wins.
    P2cEwma,
    /// Consistent hashing of [`PickRequest::hash`]; weighted random when there is no key.
    Hash(HashAlgorithm),
}

impl Strategy {
    /// The config spelling: `round_robin`, `random`, `least_conn`, `p2c_ewma`, `maglev`,
    /// `ketama`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Random => "random",
            Strategy::LeastConn => "least_conn",
            Strategy::P2cEwma => "p2c_ewma",
            Strategy::Hash(HashAlgorithm::Maglev) => "maglev",
            Strategy::Hash(HashAlgorithm::Ketama) => "ketama",
        }
    }
}

/// One usable member as the picker sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Index in the pool's member list: what [`Picker::pick`] returns.
    pub member: usize,
    /// [`member_id`](crate::member_id) of the member's name: the stable identity consistent
    /// hashing uses, so that two proxies (and restarts) agree.
    pub id: u64,
    /// Effective weight (config weight x slow-start factor, scaled by the caller). Must be
    /// > 0; a 0 is treated as 1.
    pub weight: u32,
    /// The member's live load, shared with the data plane.
    pub load: Arc<Load>,
}

/// One pick's inputs.
#[derive(Clone, Copy, Debug)]
pub struct PickRequest<'a> {
    /// The current time (for the EWMA decay of [`Strategy::P2cEwma`]).
    pub now: Instant,
    /// The request key's hash ([`hash_key`](crate::hash_key)) for [`Strategy::Hash`].
    pub hash: Option<u64>,
    /// Members (by [`Candidate::member`]) not to pick: those already tried by this request.
    pub exclude: &'a [usize],
}

/// An atomic on its own cache line, so that the round-robin cursor (written by every pick)
/// does not slow down reads of the picker's other fields on other cores.
#[repr(align(64))]
struct Cursor(AtomicUsize);

enum Kind {
    /// Random, LeastConn, P2cEwma: nothing precomputed beyond the cumulative weights.
    Plain,
    RoundRobin {
        seq: Vec<u32>,
        cursor: Cursor,
    },
    Maglev(Vec<u32>),
    Ketama(ketama::Ring),
}

/// Immutable snapshot over one candidate set; rebuilt by the caller when the set or weights
/// change (rare: health transitions, slow-start steps, reloads). [`Picker::pick`] is called
/// per request from many threads: it never allocates and never locks.
pub struct Picker {
    strategy: Strategy,
    candidates: Vec<Candidate>,
    /// `cumulative[i]` = sum of the weights of candidates `0..=i` (for weighted draws).
    cumulative: Vec<u64>,
    kind: Kind,
}

impl fmt::Debug for Picker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picker")
            .field("strategy", &self.strategy)
            .field("candidates", &self.candidates)
            .finish_non_exhaustive()
    }
}

impl Picker {
    /// Build the snapshot (and, for the strategies that need one, the precomputed sequence,
    /// table or ring: up to a few milliseconds for large pools).
    pub fn new(strategy: Strategy, mut candidates: Vec<Candidate>) -> Picker {
        for c in &mut candidates {
            c.weight = c.weight.max(1);
        }
        let mut sum = 0u64;
        let cumulative = candidates
            .iter()
            .map(|c| {
                sum += u64::from(c.weight);
                sum
            })
            .collect();
        let ids: Vec<u64> = candidates.iter().map(|c| c.id).collect();
        let weights: Vec<u32> = candidates.iter().map(|c| c.weight).collect();
        let kind = match strategy {
            Strategy::RoundRobin => Kind::RoundRobin {
                seq: rr::smooth_sequence(&weights),
                // A random start, so that frequent rebuilds (slow-start steps) do not keep
                // sending the first request of every cycle to the same member.
                cursor: Cursor(AtomicUsize::new(fastrand::usize(..))),
            },
            Strategy::Hash(HashAlgorithm::Maglev) => Kind::Maglev(maglev::build(&ids, &weights)),
            Strategy::Hash(HashAlgorithm::Ketama) => Kind::Ketama(ketama::build(&ids, &weights)),
            Strategy::Random | Strategy::LeastConn | Strategy::P2cEwma => Kind::Plain,
        };
        Picker {
            strategy,
            candidates,
            cumulative,
            kind,
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The candidates, in the order given (weights of 0 raised to 1).
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// Whether there is no candidate at all.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// Length of the round-robin cycle (0 for other strategies): over any this many
    /// consecutive picks without exclusions, each candidate is picked in proportion to its
    /// weight (exactly, unless the weights had to be scaled down to bound the cycle).
    pub fn cycle_len(&self) -> usize {
        match &self.kind {
            Kind::RoundRobin { seq, .. } => seq.len(),
            _ => 0,
        }
    }

    /// A member index ([`Candidate::member`]) not in `req.exclude`, or `None` if every
    /// candidate is excluded or there is none. Uses the thread-local random generator.
    pub fn pick(&self, req: &PickRequest<'_>) -> Option<usize> {
        let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
        self.pick_with(&mut rng, req)
    }

    /// [`Picker::pick`] with a caller-provided generator (reproducible tests, or a caller
    /// that already holds one).
    pub fn pick_with(&self, rng: &mut fastrand::Rng, req: &PickRequest<'_>) -> Option<usize> {
        let pos = match (&self.kind, self.strategy) {
            (Kind::RoundRobin { seq, cursor }, _) => self.round_robin(seq, cursor, req.exclude),
            (Kind::Maglev(table), _) => match req.hash {
                Some(h) => self.maglev(table, h, req.exclude),
                None => self.weighted(rng, req.exclude, None),
            },
            (Kind::Ketama(ring), _) => match req.hash {
                Some(h) => self.ketama(ring, h, req.exclude),
                None => self.weighted(rng, req.exclude, None),
            },
            (Kind::Plain, Strategy::LeastConn) => self.least_conn(rng, req.exclude),
            (Kind::Plain, Strategy::P2cEwma) => self.p2c(rng, req),
            (Kind::Plain, _) => self.weighted(rng, req.exclude, None),
        }?;
        Some(self.candidates[pos].member)
    }

    fn excluded(&self, pos: usize, exclude: &[usize]) -> bool {
        exclude.contains(&self.candidates[pos].member)
    }

    fn any_eligible(&self, exclude: &[usize]) -> bool {
        self.candidates.iter().any(|c| !exclude.contains(&c.member))
    }

    fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// A weighted-random candidate position, not excluded and not `skip`.
    ///
    /// Rejection sampling first (exact, and almost always done in one draw); after a few
    /// rejections, one exact pass over the eligible candidates. The combination still draws
    /// from exactly the weighted distribution conditioned on eligibility.
    fn weighted(
        &self,
        rng: &mut fastrand::Rng,
        exclude: &[usize],
        skip: Option<usize>,
    ) -> Option<usize> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        for _ in 0..4 {
            let r = rng.u64(0..total);
            let pos = self.cumulative.partition_point(|&c| c <= r);
            if Some(pos) != skip && !self.excluded(pos, exclude) {
                return Some(pos);
            }
        }
        let eligible = |pos: usize| Some(pos) != skip && !self.excluded(pos, exclude);
        let remaining: u64 = (0..self.candidates.len())
            .filter(|&p| eligible(p))
            .map(|p| u64::from(self.candidates[p].weight))
            .sum();
        if remaining == 0 {
            return None;
        }
        let mut r = rng.u64(0..remaining);
        for pos in (0..self.candidates.len()).filter(|&p| eligible(p)) {
            let w = u64::from(self.candidates[pos].weight);
            if r < w {
                return Some(pos);
            }
            r -= w;
        }
        None
    }

    fn round_robin(&self, seq: &[u32], cursor: &Cursor, exclude: &[usize]) -> Option<usize> {
        let len = seq.len();
        if len == 0 {
            return None;
        }
        let start = cursor.0.fetch_add(1, Ordering::Relaxed);
        let first = seq[start % len] as usize;
        if !self.excluded(first, exclude) {
            return Some(first);
        }
        if !self.any_eligible(exclude) {
            return None;
        }
        // The next eligible entry of the cycle: deterministic given the cursor, and found
        // within one cycle because every candidate appears in it.
        (1..len)
            .map(|step| seq[(start.wrapping_add(step)) % len] as usize)
            .find(|&pos| !self.excluded(pos, exclude))
    }

    fn least_conn(&self, rng: &mut fastrand::Rng, exclude: &[usize]) -> Option<usize> {
        let mut best: Option<(usize, u64, u64)> = None; // (pos, inflight, weight)
        let mut tie_weight = 0u64;
        for (pos, c) in self.candidates.iter().enumerate() {
            if exclude.contains(&c.member) {
                continue;
            }
            let (f, w) = (u64::from(c.load.inflight()), u64::from(c.weight));
            match best {
                // f/w vs bf/bw, compared exactly by cross-multiplication.
                Some((_, bf, bw)) => match (f * bw).cmp(&(bf * w)) {
                    std::cmp::Ordering::Less => {
                        best = Some((pos, f, w));
                        tie_weight = w;
                    }
                    std::cmp::Ordering::Equal => {
                        // Weighted reservoir sampling among the tied minima.
                        tie_weight += w;
                        if rng.u64(0..tie_weight) < w {
                            best = Some((pos, f, w));
                        }
                    }
                    std::cmp::Ordering::Greater => {}
                },
                None => {
                    best = Some((pos, f, w));
                    tie_weight = w;
                }
            }
        }
        best.map(|(pos, _, _)| pos)
    }

    fn p2c(&self, rng: &mut fastrand::Rng, req: &PickRequest<'_>) -> Option<usize> {
        let a = self.weighted(rng, req.exclude, None)?;
        let Some(b) = self.weighted(rng, req.exclude, Some(a)) else {
            return Some(a);
        };
        let now = crate::load::Stamps::of(req.now);
        let per_weight = |pos: usize| {
            let c = &self.candidates[pos];
            c.load.cost_at(now) / f64::from(c.weight)
        };
        if per_weight(b) < per_weight(a) {
            Some(b)
        } else {
            Some(a)
        }
    }

    fn maglev(&self, table: &[u32], hash: u64, exclude: &[usize]) -> Option<usize> {
        let len = table.len();
        if len == 0 {
            return None;
        }
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the remainder is below the table length, a usize"
        )]
        let slot = (hash % len as u64) as usize;
        let pos = table[slot] as usize;
        if !self.excluded(pos, exclude) {
            return Some(pos);
        }
        if !self.any_eligible(exclude) {
            return None;
        }
        // The next slots of the table: a stable, deterministic second choice per key.
        (1..len)
            .map(|step| table[(slot + step) % len] as usize)
            .find(|&pos| !self.excluded(pos, exclude))
    }

    fn ketama(&self, ring: &ketama::Ring, hash: u64, exclude: &[usize]) -> Option<usize> {
        let len = ring.owners.len();
        if len == 0 {
            return None;
        }
        let start = ring.first(hash);
        let pos = ring.owners[start] as usize;
        if !self.excluded(pos, exclude) {
            return Some(pos);
        }
        if !self.any_eligible(exclude) {
            return None;
        }
        // Ring successors: the same member the key would move to if the excluded one left.
        (1..len)
            .map(|step| ring.owners[(start + step) % len] as usize)
            .find(|&pos| !self.excluded(pos, exclude))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member_id;
    use std::time::Duration;

    fn cands(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Candidate {
                member: i * 10,
                id: member_id(&format!("m{i}")),
                weight: w,
                load: Arc::new(Load::new()),
            })
            .collect()
    }

    fn req(exclude: &[usize]) -> PickRequest<'_> {
        PickRequest {
            now: Instant::now(),
            hash: None,
            exclude,
        }
    }

    const ALL: [Strategy; 6] = [
        Strategy::RoundRobin,
        Strategy::Random,
        Strategy::LeastConn,
        Strategy::P2cEwma,
        Strategy::Hash(HashAlgorithm::Maglev),
        Strategy::Hash(HashAlgorithm::Ketama),
    ];

    #[test]
    fn p2c_leaves_a_member_whose_requests_wait_too_long_even_against_ramping_members() {
        // Members 0 and 1 are ramping up (slow start: weight 10), member 2 has full weight
        // and just became slow: one request has waited 100 ms, nothing has come back yet,
        // so its EWMA still says 5 ms. Without the waiting age it would win every pair.
        let c = cands(&[10, 10, 100]);
        let t0 = Instant::now();
        for x in &c {
            x.load.observe(Duration::from_millis(5), t0);
        }
        c[2].load.begin();
        let _waiting = c[2].load.waiting(t0);
        let p = Picker::new(Strategy::P2cEwma, c);
        let now = t0 + Duration::from_millis(100);
        let mut rng = fastrand::Rng::with_seed(3);
        let to_slow = (0..1000)
            .filter(|_| {
                p.pick_with(
                    &mut rng,
                    &PickRequest {
                        now,
                        hash: None,
                        exclude: &[],
                    },
                ) == Some(20)
            })
            .count();
        // Only when both draws land on member 2 (impossible: two distinct picks) or when it
        // is the sole eligible one could it be chosen.
        assert_eq!(
            to_slow, 0,
            "the slow member was still picked {to_slow} times"
        );
    }

    #[test]
    fn empty_and_fully_excluded_pick_nothing() {
        for s in ALL {
            let p = Picker::new(s, vec![]);
            assert!(p.is_empty());
            assert_eq!(p.pick(&req(&[])), None, "{s:?}");
            let p = Picker::new(s, cands(&[1, 2]));
            assert_eq!(p.pick(&req(&[0, 10])), None, "{s:?}");
            let mut r = req(&[0, 10]);
            r.hash = Some(42);
            assert_eq!(p.pick(&r), None, "{s:?}");
            assert_eq!(p.pick(&req(&[0])), Some(10), "{s:?}");
        }
    }

    #[test]
    fn single_candidate_always_wins() {
        for s in ALL {
            let p = Picker::new(s, cands(&[3]));
            for h in [None, Some(7), Some(u64::MAX)] {
                let r = PickRequest {
                    hash: h,
                    ..req(&[])
                };
                assert_eq!(p.pick(&r), Some(0), "{s:?}");
            }
        }
    }

    #[test]
    fn round_robin_interleaves_smoothly() {
        let p = Picker::new(Strategy::RoundRobin, cands(&[5, 1, 1]));
        assert_eq!(p.cycle_len(), 7);
        let mut rng = fastrand::Rng::with_seed(1);
        let picks: Vec<usize> = (0..14)
            .map(|_| p.pick_with(&mut rng, &req(&[])).unwrap())
            .collect();
        // nginx's interleaving `a a b a c a a`, from a random starting point of the cycle.
        let cycle = [0, 0, 10, 0, 20, 0, 0];
        let offset = (0..7)
            .find(|&o| (0..14).all(|k| picks[k] == cycle[(o + k) % 7]))
            .unwrap_or_else(|| panic!("not a rotation of {cycle:?}: {picks:?}"));
        assert!(offset < 7);
        assert_eq!(picks.iter().filter(|&&m| m == 0).count(), 10);
    }

    #[test]
    fn zero_weight_counts_as_one() {
        let p = Picker::new(Strategy::Random, cands(&[0, 0]));
        assert!(p.candidates().iter().all(|c| c.weight == 1));
        assert_eq!(p.cycle_len(), 0);
    }

    #[test]
    fn strategy_names() {
        let names: Vec<&str> = ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "round_robin",
                "random",
                "least_conn",
                "p2c_ewma",
                "maglev",
                "ketama"
            ]
        );
    }

    #[test]
    fn picker_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Picker>();
        assert_send_sync::<Load>();
    }
}
