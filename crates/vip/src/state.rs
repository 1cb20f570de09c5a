//! The VRRP instance state machine: pure logic, no IO, no clock.
//!
//! The driver feeds [`Event`]s with the current time and performs the returned [`Action`]s;
//! it calls [`Instance::on_event`] with [`Event::Timer`] once `now >= poll_timeout()`.
//!
//! Timers follow RFC 5798 section 6.1 and RFC 9568 (with microsecond resolution instead of
//! centisecond rounding):
//!
//! * `Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256` (v3);
//!   `(256 - Priority) / 256` seconds (v2),
//! * `Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time`,
//! * a backup learns `Master_Adver_Interval` from the master's adverts (v3 only).
//!
//! Receiving rules (RFC 9568 section 6.4):
//!
//! * Backup, priority 0 received: `Master_Down_Timer = Skew_Time` (fast handover).
//! * Backup, `preempt == false` or advert priority >= ours: learn the interval, reset the
//!   down timer. Otherwise (we would preempt) discard it, so the timer fires and we take over.
//! * Master, priority 0 received: send an advert at once and reset the advert timer.
//! * Master, advert priority > ours, or equal with a greater primary address: become backup.
//!   Otherwise discard.
//!
//! hastack additions, each off unless configured:
//!
//! * `preempt_delay`: a higher-priority backup keeps honouring a lower-priority master until it
//!   has been eligible to preempt for that long.
//! * Claim gate (ARP probe, witness): when the down timer fires, the machine emits
//!   [`Action::AskClaim`] and only becomes master on [`Event::ClaimGranted`] with the same id.
//! * [`Event::Fenced`] / [`Event::QuorumLost`]: the watchdog or the witness took the
//!   address away; a master steps down to backup.
//!
//! Invariant: in every state except `Master`, the instance holds no address: every transition
//! out of `Master` emits [`Action::RemoveAddresses`] before anything else.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::packet::Version;

/// Instance states (RFC 5798 section 6.4 plus `Fault`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not started, or stopped.
    Init,
    /// Watching the master.
    Backup,
    /// Holding the addresses and advertising.
    Master,
    /// A tracker with weight 0 failed (or the interface is down): not participating.
    Fault,
}

impl State {
    /// Lower-case name, for logs, metrics and notify hooks.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Init => "init",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

/// Static parameters of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Protocol version.
    pub version: Version,
    /// Configured priority (1..=255; 255 = address owner).
    pub priority: u8,
    /// Our advertisement interval, centiseconds (1..=4095).
    pub interval_cs: u16,
    /// Preempt a lower-priority master.
    pub preempt: bool,
    /// Wait this long (eligible all along) before preempting.
    pub preempt_delay: Duration,
    /// Our primary address on the interface (the tie-breaker).
    pub primary: Ipv4Addr,
    /// Whether becoming master needs a [`Event::ClaimGranted`] (ARP probe / witness).
    pub claim_gate: bool,
    /// How long before the down timer the claim checks start (the ARP probe's wait), so
    /// that they add nothing to the takeover time when the master is really gone. Any
    /// advert arriving meanwhile cancels the claim.
    pub claim_lead: Duration,
}

/// Inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Start (from Init).
    Startup,
    /// Graceful stop: a master resigns with priority 0.
    Shutdown,
    /// A valid advert for our VRID (already authenticated and TTL-checked).
    Advert {
        /// Sender's IPv4 address.
        from: Ipv4Addr,
        /// Its priority.
        priority: u8,
        /// Its advert interval (centiseconds).
        interval_cs: u16,
    },
    /// A deadline from [`Instance::poll_timeout`] passed.
    Timer,
    /// Fault on (a weight-0 tracker failed) or off.
    Fault(bool),
    /// The effective priority changed (weighted trackers); 1..=254, or 255 for an owner.
    Priority(u8),
    /// The driver's claim checks passed for claim `id`.
    ClaimGranted(u64),
    /// The claim checks failed; ask again after `retry_after`.
    ClaimDenied {
        /// The claim id.
        id: u64,
        /// When to try again.
        retry_after: Duration,
    },
    /// The watchdog withdrew our addresses while we were stalled.
    Fenced,
    /// We lost the witness/quorum: a master must step down.
    QuorumLost,
}

/// Why a transition happened (for logs, status and notify hooks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Startup.
    Startup,
    /// Startup as the address owner (priority 255).
    Owner,
    /// No advert from a master for Master_Down_Interval.
    MasterDown,
    /// The master resigned (priority 0) and the skew timer fired.
    MasterResigned,
    /// A better master advertised.
    BetterMaster,
    /// Graceful stop.
    Shutdown,
    /// A weight-0 tracker failed.
    Fault,
    /// The fault cleared.
    FaultCleared,
    /// The watchdog fenced us.
    Fenced,
    /// The witness/quorum was lost.
    QuorumLost,
}

/// Outputs, to be performed in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority.
    SendAdvert {
        /// Priority to advertise (0 when resigning).
        priority: u8,
    },
    /// Add the virtual addresses.
    AddAddresses,
    /// Remove the virtual addresses.
    RemoveAddresses,
    /// Send gratuitous ARP for the virtual addresses.
    SendGarp,
    /// Run the claim checks (ARP probe, witness) and answer with `ClaimGranted(id)` or
    /// `ClaimDenied { id, .. }`.
    AskClaim(u64),
    /// The state changed.
    Transition {
        /// Old state.
        from: State,
        /// New state.
        to: State,
        /// Why.
        reason: Reason,
    },
}

/// Master_Down_Interval and Skew_Time for `priority` with master interval `interval_cs`.
pub fn skew_time(version: Version, priority: u8, interval_cs: u16) -> Duration {
    let p = 256 - u64::from(priority);
    match version {
        Version::V3 => Duration::from_micros(p * u64::from(interval_cs) * 10_000 / 256),
        Version::V2 => Duration::from_micros(p * 1_000_000 / 256),
    }
}

/// `3 * Master_Adver_Interval + Skew_Time`.
pub fn master_down_interval(version: Version, priority: u8, interval_cs: u16) -> Duration {
    Duration::from_millis(u64::from(interval_cs) * 10) * 3
        + skew_time(version, priority, interval_cs)
}

/// One VRRP instance.
#[derive(Clone, Debug)]
pub struct Instance {
    params: Params,
    state: State,
    /// Effective priority (after trackers).
    priority: u8,
    fault: bool,
    master_adver_cs: u16,
    down_at: Option<Instant>,
    adver_at: Option<Instant>,
    preempt_since: Option<Instant>,
    claim: Option<u64>,
    claim_granted: bool,
    next_claim: u64,
    master: Option<Ipv4Addr>,
    master_priority: u8,
    lower_master_seen: Option<Instant>,
}

impl Instance {
    /// A new instance in `Init`.
    pub fn new(params: Params) -> Self {
        let priority = params.priority;
        let cs = params.interval_cs;
        Instance {
            params,
            state: State::Init,
            priority,
            fault: false,
            master_adver_cs: cs,
            down_at: None,
            adver_at: None,
            preempt_since: None,
            claim: None,
            claim_granted: false,
            next_claim: 1,
            master: None,
            master_priority: 0,
            lower_master_seen: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Effective priority.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The current master as far as we know (ourselves when master).
    pub fn master(&self) -> Option<Ipv4Addr> {
        match self.state {
            State::Master => Some(self.params.primary),
            State::Backup => self.master,
            _ => None,
        }
    }

    /// Priority of the master we follow (backup only).
    pub fn master_priority(&self) -> Option<u8> {
        (self.state == State::Backup && self.master.is_some()).then_some(self.master_priority)
    }

    /// Whether a claim made now would preempt a live lower-priority master (heard within one
    /// Master_Down_Interval). Its host legitimately answers ARP for the address until it
    /// hears our first advert, so the driver must not treat that as a conflict.
    pub fn preempting(&self, now: Instant) -> bool {
        self.state == State::Backup
            && self
                .lower_master_seen
                .is_some_and(|t| now.saturating_duration_since(t) < self.master_down())
    }

    /// Whether a claim is being checked.
    pub fn claim_pending(&self) -> bool {
        self.claim.is_some()
    }

    /// The Master_Down_Interval in force.
    pub fn master_down(&self) -> Duration {
        master_down_interval(self.params.version, self.priority, self.master_adver_cs)
    }

    /// Skew_Time in force.
    pub fn skew(&self) -> Duration {
        skew_time(self.params.version, self.priority, self.master_adver_cs)
    }

    /// Our advertisement interval.
    pub fn advert_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.params.interval_cs) * 10)
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let down = if self.params.claim_gate && self.state == State::Backup {
            match (self.claim, self.claim_granted) {
                // Start the claim checks `claim_lead` early.
                (None, _) => self
                    .down_at
                    .map(|d| d.checked_sub(self.params.claim_lead).unwrap_or(d)),
                // Granted early: take over when the down timer really expires.
                (Some(_), true) => self.down_at,
                // Waiting for the driver's answer (it always answers, bounded in time).
                (Some(_), false) => None,
            }
        } else {
            self.down_at
        };
        match (down, self.adver_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Feed one event; returns what to do, in order.
    pub fn on_event(&mut self, now: Instant, ev: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match ev {
            Event::Startup => {
                if self.state == State::Init {
                    self.start(now, Reason::Startup, &mut out);
                }
            }
            Event::Shutdown => {
                if self.state == State::Master {
                    out.push(Action::RemoveAddresses);
                    out.push(Action::SendAdvert { priority: 0 });
                }
                self.goto(State::Init, Reason::Shutdown, &mut out);
                self.clear_timers();
            }
            Event::Timer => self.on_timer(now, &mut out),
            Event::Advert {
                from,
                priority,
                interval_cs,
            } => self.on_advert(now, from, priority, interval_cs, &mut out),
            Event::Fault(on) => {
                self.fault = on;
                match (on, self.state) {
                    (true, State::Master) => {
                        out.push(Action::RemoveAddresses);
                        out.push(Action::SendAdvert { priority: 0 });
                        self.clear_timers();
                        self.goto(State::Fault, Reason::Fault, &mut out);
                    }
                    (true, State::Backup) => {
                        self.clear_timers();
                        self.goto(State::Fault, Reason::Fault, &mut out);
                    }
                    (false, State::Fault) => self.start(now, Reason::FaultCleared, &mut out),
                    _ => {}
                }
            }
            Event::Priority(p) => {
                self.priority = p;
                if self.state == State::Master && p < 255 && self.params.priority == 255 {
                    // An owner whose trackers lowered it is no longer an owner; nothing to do
                    // now: the next advert carries the new priority.
                }
            }
            Event::ClaimGranted(id) => {
                if self.claim == Some(id) && self.state == State::Backup {
                    if self.down_at.is_none_or(|d| now >= d) {
                        self.become_master(now, self.claim_reason(), &mut out);
                    } else {
                        self.claim_granted = true;
                    }
                }
            }
            Event::ClaimDenied { id, retry_after } => {
                if self.claim == Some(id) && self.state == State::Backup {
                    self.claim = None;
                    self.claim_granted = false;
                    let retry = now + retry_after;
                    self.down_at = Some(self.down_at.map_or(retry, |d| d.max(retry)));
                }
            }
            Event::Fenced | Event::QuorumLost => {
                if self.state == State::Master {
                    let reason = if ev == Event::Fenced {
                        Reason::Fenced
                    } else {
                        Reason::QuorumLost
                    };
                    out.push(Action::RemoveAddresses);
                    if reason == Reason::QuorumLost {
                        // Let a backup that still reaches the witness take over at once.
                        out.push(Action::SendAdvert { priority: 0 });
                    }
                    self.step_down(now, reason, &mut out);
                }
            }
        }
        out
    }

    fn start(&mut self, now: Instant, reason: Reason, out: &mut Vec<Action>) {
        if self.fault {
            self.goto(State::Fault, Reason::Fault, out);
            return;
        }
        if self.priority == 255 {
            self.become_master(now, Reason::Owner, out);
        } else {
            self.master_adver_cs = self.params.interval_cs;
            self.master = None;
            self.claim = None;
            self.claim_granted = false;
            self.adver_at = None;
            self.down_at = Some(now + self.master_down());
            self.goto(State::Backup, reason, out);
        }
    }

    fn on_timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.state {
            State::Backup => {
                let Some(down) = self.down_at else { return };
                if self.params.claim_gate {
                    if self.claim.is_none() && now + self.params.claim_lead >= down {
                        let id = self.next_claim;
                        self.next_claim += 1;
                        self.claim = Some(id);
                        self.claim_granted = false;
                        out.push(Action::AskClaim(id));
                    } else if self.claim.is_some() && self.claim_granted && now >= down {
                        self.become_master(now, self.claim_reason(), out);
                    }
                } else if now >= down {
                    self.become_master(now, self.claim_reason(), out);
                }
            }
            State::Master => {
                if self.adver_at.is_some_and(|t| now >= t) {
                    out.push(Action::SendAdvert {
                        priority: self.priority,
                    });
                    // Schedule from the deadline, not from `now`, so a late wake-up does not
                    // drift the period; but never schedule in the past.
                    let next = self.adver_at.map_or(now, |t| t + self.advert_interval());
                    self.adver_at = Some(if next <= now {
                        now + self.advert_interval()
                    } else {
                        next
                    });
                }
            }
            State::Init | State::Fault => self.clear_timers(),
        }
    }

    fn on_advert(
        &mut self,
        now: Instant,
        from: Ipv4Addr,
        priority: u8,
        interval_cs: u16,
        out: &mut Vec<Action>,
    ) {
        match self.state {
            State::Backup => {
                if priority == 0 {
                    self.master = Some(from);
                    self.master_priority = 0;
                    self.preempt_since = None;
                    self.claim = None;
                    self.claim_granted = false;
                    self.down_at = Some(now + self.skew());
                    return;
                }
                let honour = !self.params.preempt || priority >= self.priority || {
                    // We would preempt: honour the master until preempt_delay has passed.
                    let since = *self.preempt_since.get_or_insert(now);
                    now.saturating_duration_since(since) < self.params.preempt_delay
                };
                if priority >= self.priority {
                    self.preempt_since = None;
                    self.lower_master_seen = None;
                } else if self.params.preempt {
                    self.lower_master_seen = Some(now);
                }
                if honour {
                    if self.params.version == Version::V3 {
                        self.master_adver_cs = interval_cs.max(1);
                    }
                    self.master = Some(from);
                    self.master_priority = priority;
                    self.claim = None;
                    self.claim_granted = false;
                    self.down_at = Some(now + self.master_down());
                }
            }
            State::Master => {
                if priority == 0 {
                    out.push(Action::SendAdvert {
                        priority: self.priority,
                    });
                    self.adver_at = Some(now + self.advert_interval());
                } else if priority > self.priority
                    || (priority == self.priority && from > self.params.primary)
                {
                    if self.params.version == Version::V3 {
                        self.master_adver_cs = interval_cs.max(1);
                    }
                    out.push(Action::RemoveAddresses);
                    self.master = Some(from);
                    self.master_priority = priority;
                    self.adver_at = None;
                    self.down_at = Some(now + self.master_down());
                    self.goto(State::Backup, Reason::BetterMaster, out);
                }
            }
            State::Init | State::Fault => {}
        }
    }

    fn claim_reason(&self) -> Reason {
        if self.master_priority == 0 && self.master.is_some() {
            Reason::MasterResigned
        } else {
            Reason::MasterDown
        }
    }

    fn become_master(&mut self, now: Instant, reason: Reason, out: &mut Vec<Action>) {
        out.push(Action::SendAdvert {
            priority: self.priority,
        });
        out.push(Action::AddAddresses);
        out.push(Action::SendGarp);
        self.down_at = None;
        self.claim = None;
        self.claim_granted = false;
        self.preempt_since = None;
        self.lower_master_seen = None;
        self.master = None;
        self.adver_at = Some(now + self.advert_interval());
        self.goto(State::Master, reason, out);
    }

    fn step_down(&mut self, now: Instant, reason: Reason, out: &mut Vec<Action>) {
        self.adver_at = None;
        self.master = None;
        self.master_priority = 0;
        self.master_adver_cs = self.params.interval_cs;
        self.down_at = Some(now + self.master_down());
        self.goto(State::Backup, reason, out);
    }

    fn clear_timers(&mut self) {
        self.down_at = None;
        self.adver_at = None;
        self.claim = None;
        self.claim_granted = false;
    }

    fn goto(&mut self, to: State, reason: Reason, out: &mut Vec<Action>) {
        if self.state != to {
            out.push(Action::Transition {
                from: self.state,
                to,
                reason,
            });
            self.state = to;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(priority: u8, last: u8) -> Params {
        Params {
            version: Version::V3,
            priority,
            interval_cs: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary: Ipv4Addr::new(10, 0, 0, last),
            claim_gate: false,
            claim_lead: Duration::ZERO,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn transitions(a: &[Action]) -> Vec<State> {
        a.iter()
            .filter_map(|a| match a {
                Action::Transition { to, .. } => Some(*to),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn rfc_timers() {
        // priority 100, 1 s: skew = 156/256 s = 609.375 ms; down = 3609.375 ms.
        assert_eq!(
            skew_time(Version::V3, 100, 100),
            Duration::from_micros(609_375)
        );
        assert_eq!(
            master_down_interval(Version::V3, 100, 100),
            Duration::from_micros(3_609_375)
        );
        // 10 ms adverts, priority 254: skew = 2/256 * 10 ms = 78.125 us.
        assert_eq!(skew_time(Version::V3, 254, 1), Duration::from_nanos(78_000));
        assert_eq!(skew_time(Version::V2, 0, 100), Duration::from_secs(1));
    }

    #[test]
    fn backup_takes_over_after_master_down_interval() {
        let t0 = Instant::now();
        let mut i = Instance::new(params(100, 2));
        let a = i.on_event(t0, Event::Startup);
        assert_eq!(transitions(&a), vec![State::Backup]);
        assert_eq!(i.poll_timeout(), Some(t0 + i.master_down()));
        // An advert from a better master resets the timer.
        let t1 = t0 + ms(1000);
        i.on_event(
            t1,
            Event::Advert {
                from: Ipv4Addr::new(10, 0, 0, 1),
                priority: 150,
                interval_cs: 100,
            },
        );
        assert_eq!(i.master(), Some(Ipv4Addr::new(10, 0, 0, 1)));
        let down = t1 + master_down_interval(Version::V3, 100, 100);
        assert_eq!(i.poll_timeout(), Some(down));
        assert!(i.on_event(down - ms(1), Event::Timer).is_empty());
        let a = i.on_event(down, Event::Timer);
        assert_eq!(
            a,
            vec![
                Action::SendAdvert { priority: 100 },
                Action::AddAddresses,
                Action::SendGarp,
                Action::Transition {
                    from: State::Backup,
                    to: State::Master,
                    reason: Reason::MasterDown
                }
            ]
        );
    }

    #[test]
    fn learns_master_interval() {
        let t0 = Instant::now();
        let mut i = Instance::new(params(100, 2));
        i.on_event(t0, Event::Startup);
        i.on_event(
            t0,
            Event::Advert {
                from: Ipv4Addr::new(10, 0, 0, 1),
                priority: 200,
                interval_cs: 2,
            },
        );
        assert_eq!(
            i.poll_timeout(),
            Some(t0 + master_down_interval(Version::V3, 100, 2))
        );
    }

    #[test]
    fn resign_gives_skew_time() {
        let t0 = Instant::now();
        let mut i = Instance::new(params(100, 2));
        i.on_event(t0, Event::Startup);
        i.on_event(
            t0,
            Event::Advert {
                from: Ipv4Addr::new(10, 0, 0, 1),
                priority: 0,
                interval_cs: 100,
            },
        );
        assert_eq!(
            i.poll_timeout(),
            Some(t0 + skew_time(Version::V3, 100, 100))
        );
        let a = i.on_event(t0 + i.skew(), Event::Timer);
        assert!(a.contains(&Action::Transition {
            from: State::Backup,
            to: State::Master,
            reason: Reason::MasterResigned
        }));
    }

    #[test]
    fn master_yields_to_higher_and_to_equal_with_higher_ip() {
        let t0 = Instant::now();
        let mut i = Instance::new(Params {
            priority: 255,
            ..params(255, 5)
        });
        let a = i.on_event(t0, Event::Startup);
        assert_eq!(transitions(&a), vec![State::Master]);
        i.on_event(t0, Event::Priority(100));
        // Lower: discarded.
        let a = i.on_event(
            t0,
            Event::Advert {
                from: Ipv4Addr::new(10, 0, 0, 9),
                priority: 99,
                interval_cs: 100,
            },
        );
        assert!(a.is_empty());
        // Equal but lower address: discarded.
        let a = i.on_event(
            t0,
            Event::Advert {
                from: Ipv4Addr::new(10, 0, 0, 4),
                priority: 100,
                interval_cs: 100,
            },
        );
        assert!(a.is_empty());
        // Equal, higher address: step down, addresses first.
        let a = i.on_event(
            t0,
            Event::Advert {
                from: Ipv4Addr::new(10, 0, 0, 6),
                priority: 100,
                interval_cs: 100,
            },
        );
        assert_eq!(a[0], Action::RemoveAddresses);
        assert_eq!(i.state(), State::Backup);
    }

    #[test]
    fn master_answers_resign_at_once() {
        let t0 = Instant::now();
        let mut i = Instance::new(params(255, 5));
        i.on_event(t0, Event::Startup);
        let a = i.on_event(
            t0 + ms(10),
            Event::Advert {
                from: Ipv4Addr::new(10, 0, 0, 9),
                priority: 0,
                interval_cs: 100,
            },
        );
        assert_eq!(a, vec![Action::SendAdvert { priority: 255 }]);
    }

    #[test]
    fn no_preempt_honours_lower_master() {
        let t0 = Instant::now();
        let mut i = Instance::new(Params {
            preempt: false,
            ..params(200, 2)
        });
        i.on_event(t0, Event::Startup);
        for k in 0..10 {
            let t = t0 + ms(1000 * k);
            let a = i.on_event(t, Event::Timer);
            assert!(a.is_empty());
            i.on_event(
                t,
                Event::Advert {
                    from: Ipv4Addr::new(10, 0, 0, 1),
                    priority: 100,
                    interval_cs: 100,
                },
            );
        }
        assert_eq!(i.state(), State::Backup);
    }

    #[test]
    fn preemption_is_flagged_for_the_claim() {
        let t0 = Instant::now();
        let mut i = Instance::new(params(200, 2));
        i.on_event(t0, Event::Startup);
        assert!(!i.preempting(t0));
        i.on_event(
            t0,
            Event::Advert {
                from: Ipv4Addr::new(10, 0, 0, 1),
                priority: 100,
                interval_cs: 100,
            },
        );
        assert!(i.preempting(t0 + ms(100)));
        assert!(!i.preempting(t0 + i.master_down() + ms(1)));
    }

    #[test]
    fn preempt_delay_is_honoured() {
        let t0 = Instant::now();
        let mut i = Instance::new(Params {
            preempt_delay: ms(5000),
            ..params(200, 2)
        });
        i.on_event(t0, Event::Startup);
        let mut t = t0;
        let mut took_over = None;
        for k in 0..200 {
            t = t0 + ms(100 * k);
            if let Some(d) = i.poll_timeout()
                && d <= t
                && !transitions(&i.on_event(t, Event::Timer)).is_empty()
            {
                took_over = Some(t);
                break;
            }
            i.on_event(
                t,
                Event::Advert {
                    from: Ipv4Addr::new(10, 0, 0, 1),
                    priority: 100,
                    interval_cs: 100,
                },
            );
        }
        let took = took_over.expect("never preempted");
        let waited = took - t0;
        assert!(waited >= ms(5000), "{waited:?}");
        assert!(
            waited <= ms(5000) + i.master_down() + ms(100),
            "{waited:?} {t:?}"
        );
    }

    #[test]
    fn claim_gate_asks_and_waits() {
        let t0 = Instant::now();
        let mut i = Instance::new(Params {
            claim_gate: true,
            ..params(100, 2)
        });
        i.on_event(t0, Event::Startup);
        let down = i.poll_timeout().unwrap();
        let a = i.on_event(down, Event::Timer);
        assert_eq!(a, vec![Action::AskClaim(1)]);
        assert_eq!(i.state(), State::Backup);
        // A denial re-arms the timer; a stale grant is ignored.
        i.on_event(
            down,
            Event::ClaimDenied {
                id: 1,
                retry_after: ms(50),
            },
        );
        assert!(i.on_event(down, Event::ClaimGranted(1)).is_empty());
        let a = i.on_event(down + ms(50), Event::Timer);
        assert_eq!(a, vec![Action::AskClaim(2)]);
        let a = i.on_event(down + ms(51), Event::ClaimGranted(2));
        assert_eq!(transitions(&a), vec![State::Master]);
    }

    #[test]
    fn claim_starts_early_and_takes_over_on_time() {
        let t0 = Instant::now();
        let lead = ms(50);
        let mut i = Instance::new(Params {
            claim_gate: true,
            claim_lead: lead,
            ..params(100, 2)
        });
        i.on_event(t0, Event::Startup);
        let down = t0 + i.master_down();
        assert_eq!(i.poll_timeout(), Some(down - lead));
        assert_eq!(
            i.on_event(down - lead, Event::Timer),
            vec![Action::AskClaim(1)]
        );
        // Granted early: nothing happens until the down timer really expires.
        assert!(i.on_event(down - ms(40), Event::ClaimGranted(1)).is_empty());
        assert_eq!(i.poll_timeout(), Some(down));
        let a = i.on_event(down, Event::Timer);
        assert_eq!(transitions(&a), vec![State::Master]);
        // An advert arriving during the lead cancels the claim.
        let mut j = Instance::new(Params {
            claim_gate: true,
            claim_lead: lead,
            ..params(100, 2)
        });
        j.on_event(t0, Event::Startup);
        j.on_event(down - lead, Event::Timer);
        j.on_event(
            down - ms(10),
            Event::Advert {
                from: Ipv4Addr::new(10, 0, 0, 1),
                priority: 200,
                interval_cs: 100,
            },
        );
        assert!(j.on_event(down - ms(5), Event::ClaimGranted(1)).is_empty());
        assert!(j.on_event(down, Event::Timer).is_empty());
        assert_eq!(j.state(), State::Backup);
    }

    #[test]
    fn fault_and_shutdown() {
        let t0 = Instant::now();
        let mut i = Instance::new(params(255, 1));
        i.on_event(t0, Event::Startup);
        let a = i.on_event(t0, Event::Fault(true));
        assert_eq!(a[0], Action::RemoveAddresses);
        assert_eq!(a[1], Action::SendAdvert { priority: 0 });
        assert_eq!(i.state(), State::Fault);
        assert_eq!(i.poll_timeout(), None);
        i.on_event(t0, Event::Fault(false));
        assert_eq!(i.state(), State::Master);
        let a = i.on_event(t0, Event::Shutdown);
        assert_eq!(
            a[..2],
            [Action::RemoveAddresses, Action::SendAdvert { priority: 0 }]
        );
        assert_eq!(i.state(), State::Init);
    }

    #[test]
    fn fenced_master_steps_down() {
        let t0 = Instant::now();
        let mut i = Instance::new(params(255, 1));
        i.on_event(t0, Event::Startup);
        let a = i.on_event(t0, Event::Fenced);
        assert_eq!(a[0], Action::RemoveAddresses);
        assert_eq!(i.state(), State::Backup);
    }

    /// A tiny simulated LAN: two instances, adverts delivered after arbitrary delays (drawn
    /// by proptest) in any order; checks the RFC's safety property: once both are live and
    /// adverts flow with bounded delay, two masters never coexist for longer than one
    /// Master_Down_Interval.
    fn simulate(
        prios: (u8, u8),
        interval_cs: u16,
        delays: &[u16],
        starts: (u16, u16),
        gate: bool,
    ) -> Duration {
        let t0 = Instant::now();
        let mut nodes = [
            Instance::new(Params {
                interval_cs,
                claim_gate: gate,
                claim_lead: ms(5),
                ..params(prios.0, 1)
            }),
            Instance::new(Params {
                interval_cs,
                claim_gate: gate,
                claim_lead: ms(5),
                ..params(prios.1, 2)
            }),
        ];
        let ip = |n: usize| Ipv4Addr::new(10, 0, 0, u8::try_from(n + 1).unwrap());
        // (deliver_at, to, from, priority)
        let mut inflight: Vec<(Instant, usize, usize, u8)> = Vec::new();
        let mut started = [false, false];
        let start_at = [t0 + ms(u64::from(starts.0)), t0 + ms(u64::from(starts.1))];
        let tick = ms(1);
        let horizon = ms(u64::from(interval_cs) * 10 * 40);
        let mut now = t0;
        let mut k = 0usize;
        let mut both_since: Option<Instant> = None;
        let mut worst = Duration::ZERO;
        // Max one-way delay is bounded by the drawn delays (< one interval).
        while now < t0 + horizon {
            for n in 0..2 {
                if !started[n] && now >= start_at[n] {
                    started[n] = true;
                    let acts = nodes[n].on_event(now, Event::Startup);
                    for a in acts {
                        if let Action::SendAdvert { priority } = a {
                            let d = ms(u64::from(delays[k % delays.len()]));
                            k += 1;
                            inflight.push((now + d, 1 - n, n, priority));
                        }
                    }
                }
            }
            // Deliver due adverts (arbitrary order among those due: the drawn delays decide).
            inflight.sort_by_key(|x| x.0);
            while let Some(&(at, to, from, priority)) = inflight.first() {
                if at > now {
                    break;
                }
                inflight.remove(0);
                if !started[to] {
                    continue;
                }
                let acts = nodes[to].on_event(
                    now,
                    Event::Advert {
                        from: ip(from),
                        priority,
                        interval_cs,
                    },
                );
                for a in acts {
                    if let Action::SendAdvert { priority } = a {
                        let d = ms(u64::from(delays[k % delays.len()]));
                        k += 1;
                        inflight.push((now + d, from, to, priority));
                    }
                }
            }
            for n in 0..2 {
                if !started[n] {
                    continue;
                }
                if nodes[n].poll_timeout().is_some_and(|t| t <= now) {
                    let acts = nodes[n].on_event(now, Event::Timer);
                    for a in acts {
                        match a {
                            Action::SendAdvert { priority } => {
                                let d = ms(u64::from(delays[k % delays.len()]));
                                k += 1;
                                inflight.push((now + d, 1 - n, n, priority));
                            }
                            Action::AskClaim(id) => {
                                let acts = nodes[n].on_event(now, Event::ClaimGranted(id));
                                for a in acts {
                                    if let Action::SendAdvert { priority } = a {
                                        let d = ms(u64::from(delays[k % delays.len()]));
                                        k += 1;
                                        inflight.push((now + d, 1 - n, n, priority));
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            let both = nodes.iter().all(|n| n.state() == State::Master);
            match (both, both_since) {
                (true, None) => both_since = Some(now),
                (false, Some(s)) => {
                    worst = worst.max(now - s);
                    both_since = None;
                }
                _ => {}
            }
            now += tick;
        }
        if let Some(s) = both_since {
            worst = worst.max(now - s);
        }
        worst
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn never_two_masters_beyond_one_master_down_interval(
            p0 in 1u8..=255, p1 in 1u8..=254,
            interval_cs in 1u16..=20,
            delays in proptest::collection::vec(0u16..10, 1..32),
            s0 in 0u16..500, s1 in 0u16..500,
            gate: bool,
        ) {
            // Delivery delay below one advert interval (>= 10 ms here): adverts may overtake
            // each other in any order, but none is lost.
            let cap = interval_cs * 10;
            let delays: Vec<u16> = delays.into_iter().map(|d| d % cap).collect();
            let worst = simulate((p0, p1), interval_cs, &delays, (s0, s1), gate);
            let mdi = master_down_interval(Version::V3, p0.min(p1), interval_cs);
            prop_assert!(worst <= mdi, "two masters for {:?} > {:?}", worst, mdi);
        }
    }
}
