//! A pool member at run time.
//!
//! A [`Member`] owns everything that must survive a reload while its pool name, member name
//! and address stay the same: its health machine, its load statistics, its idle upstream
//! connections (with their epoch), its breaker and its metric handles. It keeps a weak
//! pointer to the [`Owner`] (the pool that currently holds it), so health transitions,
//! whatever their source (live traffic, probes, the ejection timer, operators), refresh that
//! pool's picker at once.
//!
//! Invariant: the connection epoch advances, and the idle connections are closed, on every
//! transition out of `up`, before the transition is published; so no connection pooled
//! before a failure is handed out after it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwapOption;
use hastack_balance::Load;
use hastack_core::Endpoint;
use hastack_core::health::{Event, HealthMachine, ProbePhase, State, Transition};
use hastack_guard::breaker::BreakerSnapshot;
use hastack_guard::{Breaker, BreakerState};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{MemberSpec, PoolSpec};
use crate::failure::{Failure, Penalty};
use crate::metrics::MemberMetrics;
use crate::upstream::ConnPool;

/// The pool that currently holds a member, as the member sees it.
pub trait Owner: Send + Sync {
    /// A member's state changed: rebuild the picking snapshot.
    fn refresh(&self, now: Instant);
    /// Whether one more member may be ejected without exceeding the pool's cap.
    fn may_eject(&self) -> bool;
}

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
    pool: Mutex<Option<Weak<dyn Owner>>>,
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
            pool: Mutex::new(None),
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
    pub fn adopt(&self, owner: Weak<dyn Owner>) {
        *self.pool.lock() = Some(owner);
    }

    fn owner(&self) -> Option<Arc<dyn Owner>> {
        self.pool.lock().as_ref().and_then(Weak::upgrade)
    }

    /// Stable identity (consistent hashing).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// State, slow-start weight factor and end of the ramp at `now`, read together.
    pub fn health_at(&self, now: Instant) -> (State, f64, Option<Instant>) {
        let h = self.health.lock();
        (h.state(), h.weight_factor(now), h.slow_start_until(now))
    }

    /// When the health machine's next timer (the end of an ejection) is due.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.health.lock().poll_timeout()
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
        self.owner().is_none_or(|p| p.may_eject())
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
        if let Some(pool) = self.owner() {
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
