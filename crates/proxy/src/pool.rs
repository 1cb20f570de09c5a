//! Pools at run time.
//!
//! A [`Pool`] is rebuilt on every reload and points at (possibly carried-over)
//! [`Member`]s, which it adopts: it is their [`Owner`], told about every transition.
//!
//! The data plane never takes a lock to pick: it loads the pool's current [`Picks`] snapshot
//! (an `ArcSwap`), which holds a picker over exactly the members that may take new work:
//! usable primaries (normal mode); usable backups when no primary is usable (backup mode);
//! every member not disabled, dead or not, when fewer than `panic_threshold` percent of the
//! primaries are usable (panic mode). Snapshots are rebuilt only when something changes: a
//! transition, a slow-start step, a reload.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hastack_balance::{Candidate, PickRequest, Picker, Strategy};
use hastack_core::RetryBudget;
use hastack_core::health::State;
use hastack_guard::concurrency::ConcurrencySnapshot;
use hastack_guard::{BreakerState, ConcurrencyLimiter};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;
use tracing::{info, warn};

pub use crate::member::{Member, MemberView, Owner, ProbeView};

use crate::config::PoolSpec;
use crate::metrics::PoolMetrics;

/// Weight units per configured weight unit, so slow start can scale weights finely.
const WEIGHT_SCALE: f64 = 100.0;

/// Which members the current picker spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Usable primary members.
    Normal,
    /// No primary usable: usable backups.
    Backup,
    /// Too few usable members (panic threshold): every member not disabled, dead or not.
    Panic,
    /// Nothing to send to.
    Empty,
}

/// The pool's current picking snapshot.
#[derive(Debug)]
pub struct Picks {
    /// Picker over the members that may take new work.
    pub picker: Picker,
    /// Which set that is.
    pub mode: Mode,
    /// While some member ramps up (slow start), when the ramp ends.
    pub ramp_until: Option<Instant>,
}

/// One pool at run time.
pub struct Pool {
    /// Validated settings.
    pub spec: PoolSpec,
    /// Members, in config order (picker indices point here).
    pub members: Vec<Arc<Member>>,
    picks: ArcSwap<Picks>,
    refresh_lock: Mutex<()>,
    budget: Mutex<RetryBudget>,
    /// Metric handles.
    pub metrics: PoolMetrics,
    tokens: HashMap<String, usize>,
    last_empty_log: Mutex<Option<Instant>>,
    /// The bulkhead shared by every route to this pool (`[proxy.pools.NAME.concurrency]`).
    pub limiter: Option<Arc<ConcurrencyLimiter>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.spec.name)
            .field("members", &self.members)
            .finish()
    }
}

/// Outcome of a pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Send to this member index.
    Member(usize),
    /// Every candidate is excluded (already tried).
    Exhausted,
    /// The pool has nothing usable.
    Empty,
}

impl Pool {
    /// A pool over `members` behind `limiter` (the pool's bulkhead, possibly carried over
    /// from the previous generation); adopts the members and builds the first snapshot.
    pub fn new(
        spec: PoolSpec,
        members: Vec<Arc<Member>>,
        metrics: PoolMetrics,
        limiter: Option<Arc<ConcurrencyLimiter>>,
    ) -> Arc<Pool> {
        let now = Instant::now();
        let tokens = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.token().to_string(), i))
            .collect();
        let budget = RetryBudget::new(spec.retry.budget, now);
        let pool = Arc::new(Pool {
            picks: ArcSwap::from_pointee(Picks {
                picker: Picker::new(spec.strategy, Vec::new()),
                mode: Mode::Empty,
                ramp_until: None,
            }),
            spec,
            members,
            refresh_lock: Mutex::new(()),
            budget: Mutex::new(budget),
            metrics,
            tokens,
            last_empty_log: Mutex::new(None),
            limiter,
        });
        let owner: std::sync::Weak<dyn Owner> = Arc::downgrade(&pool) as _;
        for m in &pool.members {
            m.adopt(owner.clone());
        }
        pool.picks.store(Arc::new(pool.compute(now)));
        pool
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Current snapshot.
    pub fn picks(&self) -> arc_swap::Guard<Arc<Picks>> {
        self.picks.load()
    }

    /// Rebuild the picking snapshot from the members' current states and weights.
    pub fn refresh(&self, now: Instant) {
        // Serialized so that the last snapshot stored reflects the latest states.
        let _serial = self.refresh_lock.lock();
        let picks = self.compute(now);
        let previous = self.picks.load().mode;
        if picks.mode != previous {
            if picks.mode == Mode::Normal {
                info!(pool = %self.spec.name, from = ?previous, to = ?picks.mode, "pool mode changed");
            } else {
                warn!(pool = %self.spec.name, from = ?previous, to = ?picks.mode, "pool mode changed");
            }
        }
        self.picks.store(Arc::new(picks));
    }

    fn compute(&self, now: Instant) -> Picks {
        let mut primaries = Vec::new();
        let mut backups = Vec::new();
        let mut panic = Vec::new();
        let mut primary_total = 0usize;
        let mut ramp_until: Option<Instant> = None;
        for (i, m) in self.members.iter().enumerate() {
            let (state, factor, until) = m.health_at(now);
            let weight = ((f64::from(m.weight()) * WEIGHT_SCALE * factor).round() as u32).max(1);
            let cand = Candidate {
                member: i,
                id: m.id(),
                weight,
                load: m.load.clone(),
            };
            if !m.is_backup() {
                primary_total += 1;
            }
            if state != State::Disabled {
                panic.push(Candidate {
                    weight: (f64::from(m.weight()) * WEIGHT_SCALE) as u32,
                    ..cand.clone()
                });
            }
            if state == State::Up {
                if let Some(u) = until {
                    ramp_until = Some(ramp_until.map_or(u, |r| r.max(u)));
                }
                if m.is_backup() {
                    backups.push(cand);
                } else {
                    primaries.push(cand);
                }
            }
        }
        let threshold = usize::from(self.spec.panic_threshold);
        let below_threshold = threshold > 0 && primaries.len() * 100 < threshold * primary_total;
        let (mode, cands) = if !primaries.is_empty() && !below_threshold {
            (Mode::Normal, primaries)
        } else if !primaries.is_empty() {
            (Mode::Panic, panic)
        } else if !backups.is_empty() {
            (Mode::Backup, backups)
        } else if threshold > 0 && !panic.is_empty() {
            (Mode::Panic, panic)
        } else {
            (Mode::Empty, Vec::new())
        };
        Picks {
            picker: Picker::new(self.spec.strategy, cands),
            mode,
            ramp_until,
        }
    }

    /// Pick a member for a try, avoiding `exclude` and members whose breaker is open.
    pub fn pick(&self, hash: Option<u64>, exclude: &[usize], now: Instant) -> Pick {
        let picks = self.picks.load();
        if picks.mode == Mode::Empty {
            return Pick::Empty;
        }
        let first = match picks.picker.pick(&PickRequest { now, hash, exclude }) {
            Some(i) => i,
            None => return Pick::Exhausted,
        };
        if self.spec.breaker.is_none() || self.members[first].breaker_admits(now) {
            return Pick::Member(first);
        }
        // Slow path (some breaker is open): pick again without the refused members.
        let mut skip = Vec::with_capacity(exclude.len() + 4);
        skip.extend_from_slice(exclude);
        skip.push(first);
        for _ in 0..self.members.len() {
            match picks.picker.pick(&PickRequest {
                now,
                hash,
                exclude: &skip,
            }) {
                Some(i) if self.members[i].breaker_admits(now) => return Pick::Member(i),
                Some(i) => skip.push(i),
                None => break,
            }
        }
        // Every candidate left is refused by its breaker. With nothing tried yet this
        // request has no member at all, which the caller answers as an empty pool (503).
        if exclude.is_empty() {
            Pick::Empty
        } else {
            Pick::Exhausted
        }
    }

    /// The member a sticky cookie names, if it may still take work (up, or draining: a
    /// drained member keeps serving the sessions bound to it).
    pub fn sticky_member(&self, token: &str) -> Option<usize> {
        let i = *self.tokens.get(token)?;
        let m = &self.members[i];
        let ok = matches!(m.state(), State::Up | State::Draining)
            && (self.spec.breaker.is_none() || m.breaker_admits(Instant::now()));
        // A backup member is only sticky while the pool is actually on backups.
        let mode_ok = !m.is_backup() || self.picks.load().mode == Mode::Backup;
        (ok && mode_ok).then_some(i)
    }

    /// Whether another member may be ejected without exceeding the pool's cap.
    pub fn may_eject(&self) -> bool {
        let ejected = self
            .members
            .iter()
            .filter(|m| m.state() == State::Ejected)
            .count();
        (ejected + 1) * 100
            <= usize::from(self.spec.outlier.max_ejected_percent) * self.members.len()
    }

    /// Count an original request against the retry budget.
    pub fn deposit(&self, now: Instant) {
        self.budget.lock().deposit(now);
    }

    /// Spend a retry from the budget; false (and counted) when exhausted.
    pub fn withdraw(&self, now: Instant) -> bool {
        let ok = self.budget.lock().try_withdraw(now);
        if !ok {
            self.metrics.budget_exhausted.inc();
        }
        ok
    }

    /// Whether `status` is retried.
    pub fn retries_status(&self, status: u16) -> bool {
        self.spec.retry.on_status.contains(&status)
    }

    /// Rate-limited log line for a request that found no usable member; returns a
    /// description of the members' states for the 503 body.
    pub fn describe_empty(&self, now: Instant) -> String {
        let mut counts: Vec<(State, usize)> = Vec::new();
        for m in &self.members {
            let s = m.state();
            match counts.iter_mut().find(|(x, _)| *x == s) {
                Some((_, n)) => *n += 1,
                None => counts.push((s, 1)),
            }
        }
        let mut parts: Vec<String> = counts
            .iter()
            .map(|(s, n)| format!("{n} {}", s.as_str()))
            .collect();
        let open = self
            .members
            .iter()
            .filter(|m| {
                m.breaker()
                    .is_some_and(|b| b.state() != BreakerState::Closed)
            })
            .count();
        if open > 0 {
            parts.push(format!("{open} with an open or half-open breaker"));
        }
        let text = format!(
            "no usable member in pool {:?} ({} members: {})",
            self.spec.name,
            self.members.len(),
            parts.join(", ")
        );
        let mut last = self.last_empty_log.lock();
        if last.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1)) {
            *last = Some(now);
            warn!(pool = %self.spec.name, "{text}");
        }
        text
    }

    /// Seconds until some member might be usable again, for `Retry-After`.
    pub fn retry_after(&self, now: Instant) -> u64 {
        self.members
            .iter()
            .filter_map(|m| m.next_timeout())
            .map(|t| t.saturating_duration_since(now).as_secs().max(1))
            .min()
            .unwrap_or(1)
            .min(60)
    }

    /// Housekeeping: end due ejections, step slow-start ramps, close stale idle connections.
    pub fn tick(&self, now: Instant, sweep: bool) {
        for m in &self.members {
            m.tick(now);
            if sweep {
                m.conns.sweep(now);
            }
        }
        let ramping = self.picks.load().ramp_until.is_some();
        if ramping {
            self.refresh(now);
        }
    }

    /// A view for `/status`.
    pub fn view(&self, now: Instant) -> PoolView {
        let picks = self.picks.load();
        PoolView {
            name: self.spec.name.to_string(),
            strategy: strategy_name(self.spec.strategy),
            mode: picks.mode,
            candidates: picks.picker.candidates().len(),
            retry_budget_available: self.budget.lock().available(now),
            concurrency: self.limiter.as_ref().map(|l| l.snapshot()),
            members: self.members.iter().map(|m| m.view(now)).collect(),
        }
    }
}

/// Config name of a strategy.
pub fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::RoundRobin => "round_robin",
        Strategy::Random => "random",
        Strategy::LeastConn => "least_conn",
        Strategy::P2cEwma => "p2c_ewma",
        Strategy::Hash(hastack_balance::HashAlgorithm::Maglev) => "hash (maglev)",
        Strategy::Hash(hastack_balance::HashAlgorithm::Ketama) => "hash (ketama)",
    }
}

impl PoolView {
    /// Pool name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A pool as `/status` shows it.
#[derive(Debug, Serialize)]
pub struct PoolView {
    name: String,
    strategy: &'static str,
    mode: Mode,
    candidates: usize,
    retry_budget_available: f64,
    /// The pool's bulkhead, when it has `concurrency`.
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<ConcurrencySnapshot>,
    members: Vec<MemberView>,
}

impl Owner for Pool {
    fn refresh(&self, now: Instant) {
        Pool::refresh(self, now);
    }

    fn may_eject(&self) -> bool {
        Pool::may_eject(self)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The pool's invariants, with the real config loader and virtual time: the ejection
    //! cap, backup and panic modes, sticky sessions, slow start.
    use super::*;
    use crate::failure::{Blame, ErrorKind, Failure, Retry};
    use crate::metrics::Metrics;
    use hastack_core::health::Event;

    /// A pool `p` built from the body of its `[proxy.pools.p]` table.
    pub(crate) fn pool(table: &str) -> Arc<Pool> {
        let text = format!(
            "[proxy]\nworkers = 1\n[[proxy.listeners]]\nlisten = \"127.0.0.1:8080\"\npool = \"p\"\n[proxy.pools.p]\n{table}\n"
        );
        let src = hastack_config::Source::parse("t.toml", text).unwrap();
        let (spec, _) = crate::config::load(&src).unwrap();
        let pspec = spec.pools.get("p").unwrap().clone();
        let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
        let members = pspec
            .members
            .iter()
            .map(|m| Arc::new(Member::new(&pspec, m, 1, metrics.member("p", &m.name))))
            .collect();
        Pool::new(pspec, members, metrics.pool("p"), None)
    }

    fn states(p: &Pool) -> Vec<State> {
        p.members.iter().map(|m| m.state()).collect()
    }

    /// The members the current picker spans, by index.
    fn spanned(p: &Pool) -> Vec<usize> {
        let mut v: Vec<usize> = p
            .picks()
            .picker
            .candidates()
            .iter()
            .map(|c| c.member)
            .collect();
        v.sort_unstable();
        v
    }

    fn gateway_error() -> Failure {
        Failure::status(false)
    }

    fn refused() -> Failure {
        Failure {
            kind: ErrorKind::ConnectRefused,
            blame: Blame::Upstream,
            retry: Retry::Unsent,
        }
    }

    const FOUR: &str =
        r#"members = ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003", "127.0.0.1:9004"]"#;

    #[tokio::test(start_paused = true)]
    async fn ejections_stop_at_the_pool_cap_but_dead_members_still_go() {
        let p = pool(&format!(
            "{FOUR}\nslow_start = \"0s\"\n[proxy.pools.p.outlier]\nconsecutive_errors = 2\nbase_ejection = \"5s\"\nmax_ejected_percent = 50"
        ));
        let now = Instant::now();
        for i in 0..3 {
            p.members[i].record(now, &gateway_error());
            p.members[i].record(now, &gateway_error());
        }
        // Two of four may be ejected; the third one's errors are counted, not acted on.
        use State::{Ejected, Up};
        assert_eq!(states(&p), [Ejected, Ejected, Up, Up]);
        assert_eq!(spanned(&p), [2, 3]);
        // A refused connection proves a member dead: the cap does not protect it (without
        // active probes it is ejected on a timer).
        p.members[3].record(now, &refused());
        assert_eq!(states(&p), [Ejected, Ejected, Up, Ejected]);
        // Nobody's fault (the keep-alive race) and the client's fault cost nothing.
        let race = Failure::transport(hastack_core::Progress {
            reused: true,
            written: true,
            answered: false,
        });
        for _ in 0..5 {
            p.members[2].record(now, &race);
            p.members[2].record(now, &Failure::client_body(true));
        }
        assert_eq!(p.members[2].state(), Up);
        // Ejections end on time.
        tokio::time::advance(Duration::from_secs(5)).await;
        p.tick(Instant::now(), false);
        assert_eq!(states(&p), [Up, Up, Up, Up]);
        assert_eq!(p.picks().mode, Mode::Normal);
    }

    #[tokio::test(start_paused = true)]
    async fn backups_serve_only_while_no_primary_can() {
        let p = pool(
            r#"members = ["127.0.0.1:9001", "127.0.0.1:9002", { addr = "127.0.0.1:9003", backup = true }]
slow_start = "0s"
[proxy.pools.p.health]
rise = 1"#,
        );
        assert_eq!((p.picks().mode, spanned(&p)), (Mode::Normal, vec![0, 1]));
        let now = Instant::now();
        p.members[0].record(now, &refused());
        assert_eq!((p.picks().mode, spanned(&p)), (Mode::Normal, vec![1]));
        p.members[1].record(now, &refused());
        assert_eq!((p.picks().mode, spanned(&p)), (Mode::Backup, vec![2]));
        assert_eq!(p.pick(None, &[], now), Pick::Member(2));
        // A primary comes back: the backup is dropped at once.
        p.members[1].report(now, Event::ProbeOk);
        assert_eq!((p.picks().mode, spanned(&p)), (Mode::Normal, vec![1]));
        // Everything down and no panic threshold: nothing to pick, the 503 path.
        p.members[1].record(now, &refused());
        p.members[2].record(now, &refused());
        assert_eq!(p.picks().mode, Mode::Empty);
        assert_eq!(p.pick(None, &[], now), Pick::Empty);
    }

    #[tokio::test(start_paused = true)]
    async fn below_the_panic_threshold_every_member_not_disabled_gets_traffic() {
        let p = pool(&format!(
            "{FOUR}\nslow_start = \"0s\"\npanic_threshold = 50\n[proxy.pools.p.health]\nrise = 1"
        ));
        let now = Instant::now();
        p.members[0].record(now, &refused());
        // 3 of 4 usable: normal.
        assert_eq!((p.picks().mode, spanned(&p)), (Mode::Normal, vec![1, 2, 3]));
        p.members[1].record(now, &refused());
        // 2 of 4 = 50%: still normal (panic is strictly below the threshold).
        assert_eq!((p.picks().mode, spanned(&p)), (Mode::Normal, vec![2, 3]));
        p.members[2].record(now, &refused());
        // 1 of 4: panic, over every member that is not disabled, dead ones included.
        assert_eq!(
            (p.picks().mode, spanned(&p)),
            (Mode::Panic, vec![0, 1, 2, 3])
        );
        p.members[3].report(now, Event::Disable);
        assert_eq!((p.picks().mode, spanned(&p)), (Mode::Panic, vec![0, 1, 2]));
        // Nothing usable at all: still panic (the threshold asks to try anyway).
        assert_eq!(p.picks().mode, Mode::Panic);
        // Recovery ends the panic.
        p.members[0].report(now, Event::ProbeOk);
        p.members[1].report(now, Event::ProbeOk);
        assert_eq!((p.picks().mode, spanned(&p)), (Mode::Normal, vec![0, 1]));
    }

    #[tokio::test(start_paused = true)]
    async fn sticky_tokens_follow_their_member_while_it_may_serve() {
        let p = pool(
            r#"members = ["127.0.0.1:9001", "127.0.0.1:9002", { addr = "127.0.0.1:9003", backup = true }]
sticky = { cookie = "srv" }
[proxy.pools.p.health]
rise = 1"#,
        );
        let token = |i: usize| p.members[i].token().to_string();
        assert_eq!(p.sticky_member(&token(1)), Some(1));
        assert_eq!(p.sticky_member("not-a-token"), None);
        // Draining keeps its sessions; disabled or dead does not.
        p.members[1].report(Instant::now(), Event::Drain);
        assert_eq!(p.sticky_member(&token(1)), Some(1));
        p.members[1].report(Instant::now(), Event::Disable);
        assert_eq!(p.sticky_member(&token(1)), None);
        p.members[1].report(Instant::now(), Event::Enable);
        p.members[1].record(Instant::now(), &refused());
        assert_eq!(p.sticky_member(&token(1)), None);
        // A backup is sticky only while the pool is on its backups.
        assert_eq!(p.sticky_member(&token(2)), None);
        p.members[0].record(Instant::now(), &refused());
        assert_eq!(p.picks().mode, Mode::Backup);
        assert_eq!(p.sticky_member(&token(2)), Some(2));
        // Tokens are opaque: never the address.
        assert!(!token(0).contains("127.0.0.1"));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_ramps_a_readmitted_member_from_ten_percent() {
        let p = pool(
            r#"members = ["127.0.0.1:9001", "127.0.0.1:9002"]
slow_start = "10s"
[proxy.pools.p.health]
rise = 1"#,
        );
        let weight = |p: &Pool, i: usize| {
            p.picks()
                .picker
                .candidates()
                .iter()
                .find(|c| c.member == i)
                .map(|c| c.weight)
        };
        // Members present at start get full weight at once.
        assert_eq!(weight(&p, 0), Some(100));
        assert_eq!(p.picks().ramp_until, None);
        let t0 = Instant::now();
        p.members[0].record(t0, &refused());
        assert_eq!(weight(&p, 0), None);
        p.members[0].report(t0, Event::ProbeOk);
        assert_eq!(weight(&p, 0), Some(10));
        assert_eq!(p.picks().ramp_until, Some(t0 + Duration::from_secs(10)));
        // The housekeeping tick steps the ramp (elapsed / slow_start, never below 10%); the
        // other member is untouched.
        tokio::time::advance(Duration::from_millis(500)).await;
        p.tick(Instant::now(), false);
        assert_eq!(weight(&p, 0), Some(10));
        tokio::time::advance(Duration::from_millis(4500)).await;
        p.tick(Instant::now(), false);
        assert_eq!(weight(&p, 0), Some(50));
        assert_eq!(weight(&p, 1), Some(100));
        tokio::time::advance(Duration::from_secs(5)).await;
        p.tick(Instant::now(), false);
        assert_eq!(weight(&p, 0), Some(100));
        assert_eq!(p.picks().ramp_until, None);
    }
}
