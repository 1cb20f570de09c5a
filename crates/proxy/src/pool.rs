//! Pools and members at run time.
//!
//! A [`Member`] owns everything that must survive a reload while its pool name, member name
//! and address stay the same: its health machine, its load statistics, its idle upstream
//! connections and its metric handles. A [`Pool`] is rebuilt on every reload and points at
//! (possibly reused) members; each member keeps a weak pointer to the pool that currently
//! owns it, so health transitions, whatever their source (live traffic, probes, the ejection
//! timer, operators), refresh that pool's picker at once.
//!
//! The data plane never takes a lock to pick: it loads the pool's current [`Picks`] snapshot
//! (an `ArcSwap`), which holds a picker over exactly the members that may take new work.
//! Snapshots are rebuilt only when something changes: a transition, a slow-start step, a
//! reload.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use hastack_balance::{Candidate, Load, PickRequest, Picker, Strategy};
use hastack_core::health::{Event, HealthMachine, ProbePhase, State, Transition};
use hastack_core::{Endpoint, RetryBudget};
use hastack_guard::breaker::BreakerSnapshot;
use hastack_guard::concurrency::ConcurrencySnapshot;
use hastack_guard::{Breaker, BreakerState, ConcurrencyLimiter};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{MemberSpec, PoolSpec};
use crate::failure::{Failure, Penalty};
use crate::metrics::{MemberMetrics, PoolMetrics};
use crate::upstream::ConnPool;

/// Weight units per configured weight unit, so slow start can scale weights finely.
const WEIGHT_SCALE: f64 = 100.0;

/// One backend member.
pub struct Member {
    endpoint: Endpoint,
    pool_name: Arc<str>,
    /// Stable identity for consistent hashing and sticky cookies.
    id: u64,
    /// Sticky-cookie value: the id in hex (never the address: no internal topology leaks).
    token: String,
    weight: AtomicU32,
    backup: AtomicBool,
    health: Mutex<HealthMachine>,
    /// Published [`State`] (as u8) for lock-free reads.
    state: AtomicU8,
    /// Advances whenever the member stops being usable; pooled connections of older epochs
    /// are never reused.
    epoch: AtomicU64,
    /// Set after a gateway error so that the next success resets the streak; lets the common
    /// success path skip the health lock.
    errors_pending: AtomicBool,
    /// Live load, shared with pickers.
    pub load: Arc<Load>,
    /// Idle upstream connections.
    pub conns: ConnPool,
    /// Metric handles.
    pub metrics: MemberMetrics,
    pool: Mutex<Weak<Pool>>,
    probe: Mutex<Option<CancellationToken>>,
    last_probe: Mutex<Option<ProbeView>>,
    /// Brings the next active probe forward (after live traffic marked the member down).
    wake: tokio::sync::Notify,
    /// The pool's per-member circuit breaker (`[proxy.pools.NAME.breaker]`), carried over
    /// reloads with the member while its policy is unchanged.
    breaker: ArcSwapOption<Breaker>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("pool", &self.pool_name)
            .field("endpoint", &self.endpoint)
            .field("state", &self.state())
            .finish()
    }
}

fn state_to_u8(s: State) -> u8 {
    State::ALL.iter().position(|x| *x == s).unwrap_or(0) as u8
}

fn state_from_u8(v: u8) -> State {
    State::ALL
        .get(usize::from(v))
        .copied()
        .unwrap_or(State::Down)
}

/// The last probe's result, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeView {
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed, or "ok".
    pub detail: String,
    /// How long it took, in milliseconds.
    pub latency_ms: f64,
}

impl Member {
    /// A new member of pool `pool_name`, alive until proven otherwise.
    pub fn new(
        pool: &PoolSpec,
        spec: &MemberSpec,
        workers: usize,
        metrics: MemberMetrics,
    ) -> Member {
        let id = hastack_balance::member_id(&spec.name);
        let m = Member {
            endpoint: Endpoint::new(spec.name.clone(), spec.addr),
            pool_name: pool.name.clone(),
            id,
            token: format!("{id:016x}"),
            weight: AtomicU32::new(spec.weight),
            backup: AtomicBool::new(spec.backup),
            health: Mutex::new(HealthMachine::new(pool.health_policy(), true)),
            state: AtomicU8::new(state_to_u8(State::Up)),
            epoch: AtomicU64::new(0),
            errors_pending: AtomicBool::new(false),
            load: Arc::new(Load::new()),
            conns: ConnPool::new(
                workers,
                pool.max_idle_per_member,
                pool.upstream_idle_timeout,
            ),
            metrics,
            pool: Mutex::new(Weak::new()),
            probe: Mutex::new(None),
            last_probe: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            breaker: ArcSwapOption::new(pool.breaker.map(|p| Breaker::new(p, id))),
        };
        m.metrics.set_state(State::Up);
        m
    }

    /// Whether this member can be carried over unchanged into a pool built from `spec`.
    pub fn same_identity(&self, spec: &MemberSpec) -> bool {
        self.endpoint.name() == &*spec.name && self.endpoint.addr() == spec.addr
    }

    /// Apply a reload's settings to a carried-over member.
    pub fn update(&self, pool: &PoolSpec, spec: &MemberSpec) {
        // Keep the breaker (its window, state and counters) while its policy is unchanged.
        let current = self.breaker.load().as_ref().map(|b| b.policy());
        if current != pool.breaker {
            self.breaker
                .store(pool.breaker.map(|p| Breaker::new(p, self.id)));
        }
        self.weight.store(spec.weight, Ordering::Relaxed);
        self.backup.store(spec.backup, Ordering::Relaxed);
        self.conns
            .set_limits(pool.max_idle_per_member, pool.upstream_idle_timeout);
        let tr = self
            .health
            .lock()
            .set_policy(Instant::now(), pool.health_policy());
        if let Some(tr) = tr {
            self.on_transition(Instant::now(), tr);
        }
    }

    /// Name within the pool.
    pub fn name(&self) -> &str {
        self.endpoint.name()
    }

    /// Address.
    pub fn addr(&self) -> SocketAddr {
        self.endpoint.addr()
    }

    /// Sticky-cookie token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Configured weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Backup member?
    pub fn is_backup(&self) -> bool {
        self.backup.load(Ordering::Relaxed)
    }

    /// Published state.
    pub fn state(&self) -> State {
        state_from_u8(self.state.load(Ordering::Acquire))
    }

    /// The member's circuit breaker, if its pool has `breaker`.
    pub fn breaker(&self) -> Option<Arc<Breaker>> {
        self.breaker.load_full()
    }

    /// Whether the member's breaker lets a try through now (always, without a breaker). A
    /// closed breaker costs one atomic load. Otherwise the breaker is asked for a permit and
    /// the permit dropped at once: that moves an expired open period to half-open and
    /// frees the trial slot again, so the try that follows takes its own permit
    /// (`guards::member_try`). Two workers racing for the last trial slot can let one extra
    /// trial through; the breaker stays bounded by the number of workers.
    pub fn breaker_admits(&self, now: Instant) -> bool {
        let b = self.breaker.load();
        match b.as_ref() {
            None => true,
            Some(b) if b.state() == BreakerState::Closed => true,
            Some(b) => b.acquire(now).is_ok(),
        }
    }

    /// Current connection epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Point the member at the pool that now owns it.
    pub fn adopt(&self, pool: &Arc<Pool>) {
        *self.pool.lock() = Arc::downgrade(pool);
    }

    /// Install the cancel token of this member's prober, stopping the previous one.
    pub fn set_probe(&self, token: Option<CancellationToken>) {
        if let Some(old) = std::mem::replace(&mut *self.probe.lock(), token) {
            old.cancel();
        }
    }

    /// Stop everything that runs for this member (it left the configuration).
    pub fn retire(&self) {
        self.set_probe(None);
        self.conns.clear();
    }

    /// Feed a health event.
    pub fn report(&self, now: Instant, ev: Event) {
        let tr = self.health.lock().on_event(now, ev);
        if let Some(tr) = tr {
            self.on_transition(now, tr);
        }
    }

    /// A try succeeded (any non-5xx answer).
    pub fn success(&self, now: Instant) {
        // Fast path: nothing to reset, no lock.
        if self.errors_pending.load(Ordering::Relaxed) {
            self.errors_pending.store(false, Ordering::Relaxed);
            self.report(now, Event::Success);
        }
    }

    /// A try on this member failed (HTTP or TCP alike): count it and apply the ejection
    /// rules of [`Failure::penalty`]: nothing unless the member is to blame; down at once
    /// for a refused connection; otherwise one gateway error towards outlier ejection, within
    /// the pool's cap on ejected members.
    pub fn record(&self, now: Instant, failure: &Failure) {
        let event = match failure.penalty() {
            Penalty::None => return,
            Penalty::Down => Event::ConnectFailed,
            Penalty::Error => {
                self.errors_pending.store(true, Ordering::Relaxed);
                Event::GatewayError {
                    may_eject: self.may_eject(),
                }
            }
        };
        self.metrics.error(failure);
        self.report(now, event);
    }

    /// Whether the pool that owns this member can afford one more ejection.
    fn may_eject(&self) -> bool {
        let pool = self.pool.lock().upgrade();
        pool.is_none_or(|p| p.may_eject())
    }

    /// Let time pass: ends an ejection whose time is up.
    pub fn tick(&self, now: Instant) {
        let tr = {
            let mut h = self.health.lock();
            match h.poll_timeout() {
                Some(t) if t <= now => h.on_timeout(now),
                _ => None,
            }
        };
        if let Some(tr) = tr {
            self.on_transition(now, tr);
        }
    }

    fn on_transition(&self, now: Instant, tr: Transition) {
        self.state.store(state_to_u8(tr.to), Ordering::Release);
        if tr.from == State::Up {
            // Nothing pooled while it was usable may be reused after this point.
            self.epoch.fetch_add(1, Ordering::AcqRel);
            self.conns.clear();
        }
        if tr.to == State::Up {
            // Old latency says nothing about the re-admitted member.
            self.load.reset();
        }
        if tr.reason == hastack_core::health::Reason::ConnectFailed {
            // Live traffic found it dead: probe soon, so a quick restart is re-admitted
            // without waiting a full interval.
            self.wake.notify_one();
        }
        self.metrics.set_state(tr.to);
        self.metrics.transition(tr.to);
        if tr.to == State::Ejected {
            self.metrics.ejections.inc();
        }
        let reason = serde_json::to_string(&tr.reason).unwrap_or_default();
        if tr.to == State::Up {
            info!(pool = %self.pool_name, member = %self.endpoint, from = tr.from.as_str(), to = tr.to.as_str(), %reason, "member state changed");
        } else {
            warn!(pool = %self.pool_name, member = %self.endpoint, from = tr.from.as_str(), to = tr.to.as_str(), %reason, "member state changed");
        }
        let pool = self.pool.lock().upgrade();
        if let Some(pool) = pool {
            pool.refresh(now);
        }
    }

    /// A view for `/status`.
    pub fn view(&self, now: Instant) -> MemberView {
        let snap = self.health.lock().snapshot(now);
        MemberView {
            name: self.name().to_string(),
            addr: self.addr().to_string(),
            weight: self.weight(),
            backup: self.is_backup(),
            state: snap.state,
            health: snap,
            inflight: self.load.inflight(),
            ewma_ms: self.load.ewma(now).as_secs_f64() * 1000.0,
            idle_connections: self.conns.idle_count(),
            requests: self.metrics.requests.get(),
            last_probe: self.last_probe.lock().clone(),
            breaker: self.breaker.load().as_ref().map(|b| b.snapshot(now)),
        }
    }
}

impl hastack_probe::Target for Member {
    fn addr(&self) -> SocketAddr {
        self.endpoint.addr()
    }

    fn wake(&self) -> Option<&tokio::sync::Notify> {
        Some(&self.wake)
    }

    fn report(&self, outcome: hastack_probe::Outcome) -> ProbePhase {
        let now = Instant::now();
        let ev = if outcome.ok {
            Event::ProbeOk
        } else {
            Event::ProbeFailed
        };
        *self.last_probe.lock() = Some(ProbeView {
            ok: outcome.ok,
            detail: if outcome.ok {
                "ok".to_string()
            } else {
                outcome.detail
            },
            latency_ms: outcome.latency.as_secs_f64() * 1000.0,
        });
        Member::report(self, now, ev);
        self.health.lock().probe_phase()
    }
}

/// A member as `/status` shows it.
#[derive(Debug, Serialize)]
pub struct MemberView {
    name: String,
    addr: String,
    weight: u32,
    backup: bool,
    state: State,
    health: hastack_core::health::Snapshot,
    inflight: u32,
    ewma_ms: f64,
    idle_connections: usize,
    requests: u64,
    last_probe: Option<ProbeView>,
    /// Present when the pool has a per-member `breaker`.
    #[serde(skip_serializing_if = "Option::is_none")]
    breaker: Option<BreakerSnapshot>,
}

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
        for m in &pool.members {
            m.adopt(&pool);
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
            let (state, factor, until) = {
                let h = m.health.lock();
                (h.state(), h.weight_factor(now), h.slow_start_until(now))
            };
            let weight = ((f64::from(m.weight()) * WEIGHT_SCALE * factor).round() as u32).max(1);
            let cand = Candidate {
                member: i,
                id: m.id,
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
            .filter_map(|m| m.health.lock().poll_timeout())
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
