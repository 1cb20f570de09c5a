//! The per-member health state machine.
//!
//! One [`HealthMachine`] tracks one backend member. It combines four inputs into one verdict,
//! "may new work be sent to this member?" ([`HealthMachine::usable`]):
//!
//! * **Active probes** ([`Event::ProbeOk`], [`Event::ProbeFailed`]): `fall` consecutive failures
//!   take a live member down; `rise` consecutive successes bring a dead one back.
//! * **Hard passive failures** ([`Event::ConnectFailed`]): a refused or reset *fresh* connection
//!   means nothing is listening. The member goes down at once, without waiting for `fall`
//!   probes, and only the active probe re-admits it (after `rise` successes). Without active
//!   probes there is nothing to re-admit it, so it is ejected for a timed period instead.
//! * **Soft passive failures** ([`Event::GatewayError`]): `consecutive_errors` gateway errors in
//!   a row (5xx, timeouts) eject a member that is alive but misbehaving for a duration that
//!   doubles with each ejection (`base_ejection`, `2 x base`, ... capped at `max_ejection`) and
//!   decays back to `base_ejection` once the member has behaved for twice `max_ejection`. The
//!   caller says whether the pool can afford another ejection (`may_eject`), which is how the
//!   pool-wide "at most N% ejected" cap is enforced without this machine knowing the pool.
//! * **Operator intent** ([`Event::Drain`], [`Event::Disable`], [`Event::Enable`]).
//!
//! On the way back into service a member gets **slow start**: [`HealthMachine::weight_factor`]
//! ramps linearly from [`SLOW_START_FLOOR`] to 1 over `slow_start`, so a cold member is not
//! flooded the instant it is re-admitted.
//!
//! The machine is pure: time is passed in, and the only timer it needs (the end of an
//! ejection) is exposed through [`HealthMachine::poll_timeout`] for the driver to arm.
//! Every call that changes the effective [`State`] returns the [`Transition`] so the driver can
//! log it, count it and republish the pool's usable set.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// The lowest weight factor slow start gives a freshly re-admitted member.
///
/// Not zero: a member with zero weight would never be picked by weighted pickers, so it
/// would never warm up at all.
pub const SLOW_START_FLOOR: f64 = 0.1;

/// Longest possible ejection exponent (2^20 x base is already beyond any sane cap).
const MAX_EJECTION_LEVEL: u32 = 20;

/// Thresholds and durations of the health machine. See the module docs for their meaning.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthPolicy {
    /// Consecutive successful probes that bring a down member back up (>= 1).
    pub rise: u32,
    /// Consecutive failed probes that take an up member down (>= 1).
    pub fall: u32,
    /// Whether an active prober feeds this machine. Without one, hard passive failures
    /// become timed ejections (nothing else could ever re-admit the member).
    pub active_checks: bool,
    /// Consecutive gateway errors that eject a member; 0 turns soft ejection off.
    pub consecutive_errors: u32,
    /// First ejection's duration.
    pub base_ejection: Duration,
    /// Cap on an ejection's duration.
    pub max_ejection: Duration,
    /// Length of the slow-start ramp after re-admission; zero turns it off.
    pub slow_start: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            rise: 2,
            fall: 3,
            active_checks: true,
            consecutive_errors: 5,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
            slow_start: Duration::ZERO,
        }
    }
}

/// What the operator wants for a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Normal service.
    Enabled,
    /// No new work, but work already bound to it (in-flight, sticky sessions) may finish.
    Draining,
    /// Out of service entirely.
    Disabled,
}

/// The effective state of a member, in order of precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Usable for new work.
    Up,
    /// Operator drain: alive, but takes no new work.
    Draining,
    /// Alive but ejected for misbehaving, until the ejection ends.
    Ejected,
    /// Dead: probes failed or a fresh connection was refused.
    Down,
    /// Operator disabled.
    Disabled,
}

impl State {
    /// Every state, for exporting one gauge series per state.
    pub const ALL: [State; 5] = [
        State::Up,
        State::Draining,
        State::Ejected,
        State::Down,
        State::Disabled,
    ];

    /// Lower-case name, as used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Draining => "draining",
            State::Ejected => "ejected",
            State::Down => "down",
            State::Disabled => "disabled",
        }
    }
}

/// An input to the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An active probe succeeded.
    ProbeOk,
    /// An active probe failed (refused, timed out, wrong status or body).
    ProbeFailed,
    /// A fresh connection to the member was refused or reset: nothing is serving there.
    ConnectFailed,
    /// Live traffic got a good (non-gateway-error) response.
    Success,
    /// Live traffic got a gateway error (5xx from the member, timeout, reset mid-response).
    /// `may_eject` is false when the pool already has as many members ejected as it allows.
    GatewayError {
        /// Whether the pool can afford to eject this member now.
        may_eject: bool,
    },
    /// Operator: stop sending new work.
    Drain,
    /// Operator: take out of service.
    Disable,
    /// Operator: back to normal service.
    Enable,
}

/// Why a transition happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Reason {
    /// `rise` probes in a row succeeded.
    ProbesPassed,
    /// `fall` probes in a row failed.
    ProbesFailed,
    /// A fresh connection was refused or reset.
    ConnectFailed,
    /// Consecutive gateway errors crossed the threshold.
    ConsecutiveErrors {
        /// How long the member is ejected for.
        #[serde(with = "duration_ms")]
        ejected_for: Duration,
    },
    /// An ejection ran out.
    EjectionExpired,
    /// Active checks were switched off while the member was down.
    ChecksRemoved,
    /// An operator command.
    Admin,
}

mod duration_ms {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A change of effective state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// State before the event.
    pub from: State,
    /// State after the event.
    pub to: State,
    /// What caused it.
    pub reason: Reason,
}

/// Which probe cadence suits the member now (HAProxy's `inter` / `fastinter` / `downinter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbePhase {
    /// Up and stable.
    Steady,
    /// Part-way through a rise or fall count, or just marked down by live traffic: probe
    /// faster to settle the question sooner.
    Changing,
    /// Down and stable.
    Down,
}

/// A point-in-time view for status pages.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Snapshot {
    /// Effective state.
    pub state: State,
    /// Operator intent.
    pub admin: AdminState,
    /// Current run of successful probes.
    pub probe_successes: u32,
    /// Current run of failed probes.
    pub probe_failures: u32,
    /// Current run of gateway errors from live traffic.
    pub consecutive_errors: u32,
    /// Ejections since the member was created.
    pub ejections_total: u64,
    /// Remaining ejection time in milliseconds, if ejected.
    pub ejected_for_ms: Option<u64>,
    /// Current slow-start weight factor (1.0 = full weight).
    pub weight_factor: f64,
}

/// The health state machine of one member. See the module docs.
#[derive(Clone, Debug)]
pub struct HealthMachine {
    policy: HealthPolicy,
    /// Liveness: false after `fall` failed probes or a hard passive failure.
    alive: bool,
    /// Set by a hard passive failure until the next probe result, so the prober knows to look
    /// again quickly.
    passive_down: bool,
    ok_streak: u32,
    fail_streak: u32,
    error_streak: u32,
    ejected_until: Option<Instant>,
    /// Exponent of the next ejection's duration.
    ejection_level: u32,
    last_ejected_at: Option<Instant>,
    ejections_total: u64,
    admin: AdminState,
    /// Start of the current slow-start ramp, if one is running.
    ramp_from: Option<Instant>,
}

impl HealthMachine {
    /// A machine for a member that starts alive (`alive = true`, full weight at once) or dead
    /// (must pass `rise` probes first).
    pub fn new(policy: HealthPolicy, alive: bool) -> Self {
        HealthMachine {
            policy,
            alive,
            passive_down: false,
            ok_streak: 0,
            fail_streak: 0,
            error_streak: 0,
            ejected_until: None,
            ejection_level: 0,
            last_ejected_at: None,
            ejections_total: 0,
            admin: AdminState::Enabled,
            ramp_from: None,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// Replace the policy (on reload), keeping all state. Streaks already past a new, lower
    /// threshold take effect at the next matching event. A member that is down when active
    /// checks are switched off is brought back: nothing could ever re-admit it otherwise.
    pub fn set_policy(&mut self, now: Instant, policy: HealthPolicy) -> Option<Transition> {
        let before = self.state();
        self.policy = policy;
        if !self.policy.active_checks && !self.alive {
            self.alive = true;
            self.passive_down = false;
            self.ok_streak = 0;
            self.fail_streak = 0;
            return self.finish(now, before, Reason::ChecksRemoved);
        }
        None
    }

    /// The effective state.
    pub fn state(&self) -> State {
        if self.admin == AdminState::Disabled {
            State::Disabled
        } else if !self.alive {
            State::Down
        } else if self.ejected_until.is_some() {
            State::Ejected
        } else if self.admin == AdminState::Draining {
            State::Draining
        } else {
            State::Up
        }
    }

    /// Whether new work may be sent to the member.
    pub fn usable(&self) -> bool {
        self.state() == State::Up
    }

    /// Whether the member is alive (not down and not disabled), even if ejected or draining.
    /// Pools in panic mode route to alive members only when none is usable.
    pub fn alive(&self) -> bool {
        self.alive && self.admin != AdminState::Disabled
    }

    /// Whether the member is currently ejected for gateway errors.
    pub fn ejected(&self) -> bool {
        self.ejected_until.is_some()
    }

    /// Operator intent.
    pub fn admin(&self) -> AdminState {
        self.admin
    }

    /// Ejections since creation.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total
    }

    /// Which probe cadence suits the member now.
    pub fn probe_phase(&self) -> ProbePhase {
        if self.passive_down
            || (self.alive && self.fail_streak > 0)
            || (!self.alive && self.ok_streak > 0)
        {
            ProbePhase::Changing
        } else if self.alive {
            ProbePhase::Steady
        } else {
            ProbePhase::Down
        }
    }

    /// When the driver must call [`HealthMachine::on_timeout`] next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// End of the running slow-start ramp, if one is running at `now`.
    pub fn slow_start_until(&self, now: Instant) -> Option<Instant> {
        let end = self.ramp_from? + self.policy.slow_start;
        (end > now).then_some(end)
    }

    /// The share of its configured weight the member should get now: 1.0, or less while slow
    /// start ramps it up after re-admission (never below [`SLOW_START_FLOOR`]).
    pub fn weight_factor(&self, now: Instant) -> f64 {
        slow_start_factor(self.ramp_from, self.policy.slow_start, now)
    }

    /// Feed one event. Returns the transition if the effective state changed.
    pub fn on_event(&mut self, now: Instant, event: Event) -> Option<Transition> {
        let before = self.state();
        let reason = match event {
            Event::ProbeOk => {
                self.fail_streak = 0;
                self.passive_down = false;
                self.ok_streak = self.ok_streak.saturating_add(1);
                if !self.alive && self.ok_streak >= self.policy.rise {
                    self.alive = true;
                    self.error_streak = 0;
                }
                Reason::ProbesPassed
            }
            Event::ProbeFailed => {
                self.ok_streak = 0;
                self.passive_down = false;
                self.fail_streak = self.fail_streak.saturating_add(1);
                if self.alive && self.fail_streak >= self.policy.fall {
                    self.alive = false;
                }
                Reason::ProbesFailed
            }
            Event::ConnectFailed => {
                if self.policy.active_checks {
                    if self.alive {
                        self.alive = false;
                        self.passive_down = true;
                        self.ok_streak = 0;
                        self.fail_streak = 0;
                    }
                } else if self.ejected_until.is_none() {
                    // Nothing would ever re-admit a hard-down member: eject on a timer instead.
                    // Not subject to the pool's ejection cap, because the member is known dead.
                    self.eject(now);
                }
                Reason::ConnectFailed
            }
            Event::Success => {
                self.error_streak = 0;
                return None;
            }
            Event::GatewayError { may_eject } => {
                self.error_streak = self.error_streak.saturating_add(1);
                let threshold = self.policy.consecutive_errors;
                if threshold == 0
                    || self.error_streak < threshold
                    || !may_eject
                    || self.ejected_until.is_some()
                {
                    return None;
                }
                let ejected_for = self.eject(now);
                Reason::ConsecutiveErrors { ejected_for }
            }
            Event::Drain => {
                self.admin = AdminState::Draining;
                Reason::Admin
            }
            Event::Disable => {
                self.admin = AdminState::Disabled;
                Reason::Admin
            }
            Event::Enable => {
                self.admin = AdminState::Enabled;
                Reason::Admin
            }
        };
        self.finish(now, before, reason)
    }

    /// Let time pass: ends an ejection whose time is up.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Transition> {
        let before = self.state();
        match self.ejected_until {
            Some(until) if until <= now => {
                self.ejected_until = None;
                self.error_streak = 0;
                self.finish(now, before, Reason::EjectionExpired)
            }
            _ => None,
        }
    }

    /// A view for status pages.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot {
            state: self.state(),
            admin: self.admin,
            probe_successes: self.ok_streak,
            probe_failures: self.fail_streak,
            consecutive_errors: self.error_streak,
            ejections_total: self.ejections_total,
            ejected_for_ms: self.ejected_until.map(|u| {
                u64::try_from(u.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
            }),
            weight_factor: self.weight_factor(now),
        }
    }

    /// Start an ejection; returns its length.
    fn eject(&mut self, now: Instant) -> Duration {
        // Decay: a member that behaved for twice the cap since its last ejection starts over.
        if let Some(last) = self.last_ejected_at {
            if now.saturating_duration_since(last) >= self.policy.max_ejection * 2 {
                self.ejection_level = 0;
            }
        }
        let duration = ejection_duration(
            self.policy.base_ejection,
            self.policy.max_ejection,
            self.ejection_level,
        );
        self.ejection_level = (self.ejection_level + 1).min(MAX_EJECTION_LEVEL);
        self.last_ejected_at = Some(now);
        self.ejections_total += 1;
        self.ejected_until = Some(now + duration);
        self.error_streak = 0;
        duration
    }

    fn finish(&mut self, now: Instant, before: State, reason: Reason) -> Option<Transition> {
        let after = self.state();
        if after == before {
            return None;
        }
        if after == State::Up {
            // Re-entering service from anything but a drain gets a slow start. A drained
            // member was alive and warm all along.
            self.ramp_from =
                (before != State::Draining && !self.policy.slow_start.is_zero()).then_some(now);
        } else if before == State::Up {
            self.ramp_from = None;
        }
        Some(Transition {
            from: before,
            to: after,
            reason,
        })
    }
}

/// Length of the ejection at `level` (0 for the first): `base x 2^level`, capped at `max`.
pub fn ejection_duration(base: Duration, max: Duration, level: u32) -> Duration {
    base.checked_mul(1u32 << level.min(MAX_EJECTION_LEVEL))
        .unwrap_or(max)
        .min(max)
}

/// Slow-start weight factor at `now` for a ramp that began at `from` and lasts `window`.
pub fn slow_start_factor(from: Option<Instant>, window: Duration, now: Instant) -> f64 {
    let Some(from) = from else { return 1.0 };
    if window.is_zero() {
        return 1.0;
    }
    let elapsed = now.saturating_duration_since(from);
    if elapsed >= window {
        return 1.0;
    }
    (elapsed.as_secs_f64() / window.as_secs_f64()).max(SLOW_START_FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            rise: 2,
            fall: 3,
            active_checks: true,
            consecutive_errors: 3,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(8),
            slow_start: Duration::from_secs(10),
        }
    }

    #[test]
    fn fall_then_rise() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(policy(), true);
        assert!(m.on_event(t0, Event::ProbeFailed).is_none());
        assert_eq!(m.probe_phase(), ProbePhase::Changing);
        assert!(m.on_event(t0, Event::ProbeFailed).is_none());
        let tr = m.on_event(t0, Event::ProbeFailed).unwrap();
        assert_eq!(
            (tr.from, tr.to, tr.reason),
            (State::Up, State::Down, Reason::ProbesFailed)
        );
        assert_eq!(m.probe_phase(), ProbePhase::Down);
        assert!(m.on_event(t0, Event::ProbeOk).is_none());
        assert_eq!(m.probe_phase(), ProbePhase::Changing);
        let tr = m.on_event(t0, Event::ProbeOk).unwrap();
        assert_eq!((tr.from, tr.to), (State::Down, State::Up));
        assert_eq!(m.probe_phase(), ProbePhase::Steady);
    }

    #[test]
    fn a_success_breaks_a_failure_run() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(policy(), true);
        m.on_event(t0, Event::ProbeFailed);
        m.on_event(t0, Event::ProbeFailed);
        m.on_event(t0, Event::ProbeOk);
        m.on_event(t0, Event::ProbeFailed);
        m.on_event(t0, Event::ProbeFailed);
        assert!(m.usable());
    }

    #[test]
    fn connect_failure_downs_at_once_and_probe_readmits() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(policy(), true);
        let tr = m.on_event(t0, Event::ConnectFailed).unwrap();
        assert_eq!((tr.to, tr.reason), (State::Down, Reason::ConnectFailed));
        assert_eq!(m.probe_phase(), ProbePhase::Changing);
        // No timer re-admits it.
        assert_eq!(m.poll_timeout(), None);
        m.on_event(t0, Event::ProbeOk);
        assert!(!m.usable());
        m.on_event(t0, Event::ProbeOk);
        assert!(m.usable());
    }

    #[test]
    fn connect_failure_without_active_checks_is_a_timed_ejection() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(
            HealthPolicy {
                active_checks: false,
                ..policy()
            },
            true,
        );
        let tr = m.on_event(t0, Event::ConnectFailed).unwrap();
        assert_eq!(tr.to, State::Ejected);
        let until = m.poll_timeout().unwrap();
        assert_eq!(until, t0 + Duration::from_secs(1));
        assert!(m.on_timeout(t0 + Duration::from_millis(999)).is_none());
        let tr = m.on_timeout(until).unwrap();
        assert_eq!((tr.to, tr.reason), (State::Up, Reason::EjectionExpired));
    }

    #[test]
    fn ejection_grows_caps_and_decays() {
        let mut t = Instant::now();
        let mut m = HealthMachine::new(policy(), true);
        let mut lengths = vec![];
        for _ in 0..6 {
            for _ in 0..3 {
                m.on_event(t, Event::GatewayError { may_eject: true });
            }
            let until = m.poll_timeout().unwrap();
            lengths.push((until - t).as_secs());
            t = until;
            m.on_timeout(t).unwrap();
        }
        assert_eq!(lengths, vec![1, 2, 4, 8, 8, 8]);
        assert_eq!(m.ejections_total(), 6);
        // Behave for 2 x max: back to the base duration.
        t += Duration::from_secs(16);
        for _ in 0..3 {
            m.on_event(t, Event::GatewayError { may_eject: true });
        }
        assert_eq!(m.poll_timeout().unwrap() - t, Duration::from_secs(1));
    }

    #[test]
    fn pool_cap_prevents_ejection_and_success_resets_streak() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(policy(), true);
        for _ in 0..5 {
            assert!(
                m.on_event(t0, Event::GatewayError { may_eject: false })
                    .is_none()
            );
        }
        assert!(m.usable());
        m.on_event(t0, Event::Success);
        m.on_event(t0, Event::GatewayError { may_eject: true });
        m.on_event(t0, Event::GatewayError { may_eject: true });
        assert!(m.usable());
        assert!(
            m.on_event(t0, Event::GatewayError { may_eject: true })
                .is_some()
        );
        assert_eq!(m.state(), State::Ejected);
    }

    #[test]
    fn slow_start_ramps_after_recovery_only() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(policy(), true);
        assert_eq!(
            m.weight_factor(t0),
            1.0,
            "a member that starts up is not ramped"
        );
        m.on_event(t0, Event::ConnectFailed);
        m.on_event(t0, Event::ProbeOk);
        m.on_event(t0, Event::ProbeOk);
        assert_eq!(m.weight_factor(t0), SLOW_START_FLOOR);
        let half = m.weight_factor(t0 + Duration::from_secs(5));
        assert!((half - 0.5).abs() < 1e-9, "{half}");
        assert_eq!(m.weight_factor(t0 + Duration::from_secs(10)), 1.0);
        assert_eq!(m.slow_start_until(t0), Some(t0 + Duration::from_secs(10)));
        assert_eq!(m.slow_start_until(t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn drain_and_enable_do_not_ramp() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(policy(), true);
        let tr = m.on_event(t0, Event::Drain).unwrap();
        assert_eq!((tr.from, tr.to), (State::Up, State::Draining));
        assert!(m.alive() && !m.usable());
        m.on_event(t0, Event::Enable).unwrap();
        assert_eq!(m.weight_factor(t0), 1.0);
    }

    #[test]
    fn disabled_wins_over_everything() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(policy(), true);
        m.on_event(t0, Event::Disable);
        m.on_event(t0, Event::ConnectFailed);
        assert_eq!(m.state(), State::Disabled);
        assert!(!m.alive());
        m.on_event(t0, Event::Enable);
        assert_eq!(m.state(), State::Down);
    }

    #[test]
    fn removing_active_checks_revives_a_down_member() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(policy(), true);
        m.on_event(t0, Event::ConnectFailed);
        assert_eq!(m.state(), State::Down);
        assert!(
            m.set_policy(t0, policy()).is_none(),
            "same policy changes nothing"
        );
        let tr = m
            .set_policy(
                t0,
                HealthPolicy {
                    active_checks: false,
                    ..policy()
                },
            )
            .unwrap();
        assert_eq!((tr.to, tr.reason), (State::Up, Reason::ChecksRemoved));
    }

    #[test]
    fn starts_dead_when_asked() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(policy(), false);
        assert_eq!(m.state(), State::Down);
        m.on_event(t0, Event::ProbeOk);
        m.on_event(t0, Event::ProbeOk);
        assert!(m.usable());
    }

    #[test]
    fn ejection_duration_saturates() {
        let d = ejection_duration(Duration::from_secs(1), Duration::from_secs(30), 40);
        assert_eq!(d, Duration::from_secs(30));
        let d = ejection_duration(Duration::MAX, Duration::from_secs(30), 3);
        assert_eq!(d, Duration::from_secs(30));
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::ProbeOk),
            Just(Event::ProbeFailed),
            Just(Event::ConnectFailed),
            Just(Event::Success),
            any::<bool>().prop_map(|may_eject| Event::GatewayError { may_eject }),
            Just(Event::Drain),
            Just(Event::Disable),
            Just(Event::Enable),
        ]
    }

    proptest! {
        /// Whatever happens, the reported transitions chain up, `usable` agrees with the
        /// state, ejections respect the cap, and the weight factor stays in range.
        #[test]
        fn invariants_hold(steps in prop::collection::vec((0u64..3_000, arb_event()), 1..200)) {
            let p = policy();
            let mut t = Instant::now();
            let mut m = HealthMachine::new(p.clone(), true);
            let mut state = m.state();
            for (dt, ev) in steps {
                t += Duration::from_millis(dt);
                if let Some(tr) = m.on_timeout(t) {
                    prop_assert_eq!(tr.from, state);
                    state = tr.to;
                }
                let ejected_before = m.ejected();
                let tr = m.on_event(t, ev);
                if let Some(tr) = tr {
                    prop_assert_eq!(tr.from, state);
                    prop_assert_ne!(tr.from, tr.to);
                    state = tr.to;
                }
                prop_assert_eq!(m.state(), state);
                prop_assert_eq!(m.usable(), state == State::Up);
                if let Some(until) = m.poll_timeout() {
                    prop_assert!(until > t && until - t <= p.max_ejection);
                }
                if ev == (Event::GatewayError { may_eject: false }) {
                    prop_assert_eq!(m.ejected(), ejected_before, "ejected against the pool cap");
                }
                let f = m.weight_factor(t);
                prop_assert!((SLOW_START_FLOOR..=1.0).contains(&f));
            }
        }

        /// `rise` good probes always bring an enabled member back, whatever came before.
        #[test]
        fn rise_probes_always_readmit(steps in prop::collection::vec(arb_event(), 0..50)) {
            let p = policy();
            let t = Instant::now();
            let mut m = HealthMachine::new(p.clone(), true);
            for ev in steps {
                m.on_event(t, ev);
            }
            m.on_event(t, Event::Enable);
            for _ in 0..p.rise {
                m.on_event(t, Event::ProbeOk);
            }
            m.on_timeout(t + p.max_ejection);
            prop_assert!(m.usable());
        }
    }
}
