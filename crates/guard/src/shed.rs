//! Priority load shedding: under overload, refuse the least important class first so that the
//! most important one keeps its success rate.
//!
//! Classes are ordered most important first (default `critical`, `normal`, `best_effort`).
//! Three rules decide, all read lock-free per request:
//! 1. **Only full-share classes queue**: when every slot is taken, a request of a class
//!    whose share is below 1.0 is shed at once instead of waiting, so the queue (and every
//!    slot freed, which goes to the queue first) belongs to the important classes.
//! 2. **Shares** (while the pressure below is above zero): class `c` may only start a
//!    request while the limiter's in-flight count is below `share(c) x limit`. With shares
//!    1.0 / 0.9 / 0.6, under overload the top 10% of the capacity is reserved for
//!    `critical` and the top 40% is closed to `best_effort`. Without overload any class may
//!    use any free slot, so no capacity is wasted on a reservation nobody needs.
//! 3. **Shed pressure** (signal-driven): a controller looks at the lowest *queue time* of the
//!    requests admitted in each `interval` (CoDel's "standing queue" signal: a request
//!    admitted at once counts 0; one refused because the limiter and its queue were full
//!    counts as infinite). The pressure `P` is counted in sixteenths of a class:
//!    ```text
//!    min queue time >  target        P = min(P + 2, (classes - 1) x 16)   # shed 1/8 more
//!    min queue time <= target / 2    P = max(P - 1, 0)                    # give back 1/16
//!    otherwise                       P unchanged
//!    ```
//!    The `P / 16` least important classes are refused outright and the next one is refused
//!    with probability `(P mod 16) / 16`, so shedding grows and shrinks smoothly instead of
//!    switching a whole class on and off (which would waste capacity every other interval).
//!    The most important class is never shed by pressure; the *level* reported in metrics
//!    is `ceil(P / 16)`, the number of classes at least partly shed.
//!
//! [`ShedController`] is the pure per-interval machine; [`Shedder`] wraps it with atomics.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A priority class, by rank (0 = most important).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ClassId(pub u8);

/// One class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassSpec {
    /// Name used in config (`priority = "critical"`) and metrics.
    pub name: String,
    /// Fraction of the limit this class may occupy, in (0, 1].
    pub share: f64,
}

/// A validated shedding policy.
#[derive(Clone, Debug, PartialEq)]
pub struct ShedPolicy {
    /// Classes, most important first (at most 16).
    pub classes: Vec<ClassSpec>,
    /// Standing queue time above which the shed level rises.
    pub target_queue_time: Duration,
    /// How often the level is re-evaluated.
    pub interval: Duration,
}

impl Default for ShedPolicy {
    fn default() -> Self {
        ShedPolicy {
            classes: vec![
                ClassSpec {
                    name: "critical".into(),
                    share: 1.0,
                },
                ClassSpec {
                    name: "normal".into(),
                    share: 0.9,
                },
                ClassSpec {
                    name: "best_effort".into(),
                    share: 0.6,
                },
            ],
            target_queue_time: Duration::from_millis(20),
            interval: Duration::from_millis(100),
        }
    }
}

impl ShedPolicy {
    /// The class called `name`.
    pub fn class(&self, name: &str) -> Option<ClassId> {
        self.classes
            .iter()
            .position(|c| c.name == name)
            .and_then(|i| u8::try_from(i).ok())
            .map(ClassId)
    }

    /// The name of `class` ("?" when out of range).
    pub fn name(&self, class: ClassId) -> &str {
        self.classes
            .get(usize::from(class.0))
            .map_or("?", |c| c.name.as_str())
    }
}

/// Sixteenths: the resolution of the shed pressure.
pub const STEPS: usize = 16;

/// The pure shed-pressure controller.
#[derive(Clone, Debug)]
pub struct ShedController {
    classes: usize,
    target: Duration,
    pressure: usize,
}

impl ShedController {
    /// Pressure 0 (nothing shed).
    pub fn new(policy: &ShedPolicy) -> Self {
        ShedController {
            classes: policy.classes.len().max(1),
            target: policy.target_queue_time,
            pressure: 0,
        }
    }

    /// Current pressure, in sixteenths of a class.
    pub fn pressure(&self) -> usize {
        self.pressure
    }

    /// Classes at least partly shed.
    pub fn level(&self) -> usize {
        self.pressure.div_ceil(STEPS)
    }

    /// End of an interval whose lowest queue time was `min_queue_time` (`None`: nothing was
    /// admitted or refused for fullness: no evidence of overload). Returns the new pressure.
    pub fn on_interval(&mut self, min_queue_time: Option<Duration>) -> usize {
        match min_queue_time {
            Some(q) if q > self.target => {
                self.pressure = (self.pressure + 2).min((self.classes - 1) * STEPS);
            }
            Some(q) if q > self.target / 2 => {}
            _ => self.pressure = self.pressure.saturating_sub(1),
        }
        self.pressure
    }

    /// The probability that a request of `class` is shed at the current pressure.
    pub fn shed_probability(&self, class: ClassId) -> f64 {
        shed_sixteenths(self.classes, self.pressure, class) as f64 / STEPS as f64
    }
}

/// How many sixteenths of `class`'s requests are shed at `pressure`.
fn shed_sixteenths(classes: usize, pressure: usize, class: ClassId) -> usize {
    // Rank from the bottom: 0 = least important.
    let from_bottom = classes.saturating_sub(1 + usize::from(class.0));
    let full = pressure / STEPS;
    if from_bottom < full {
        STEPS
    } else if from_bottom == full {
        pressure % STEPS
    } else {
        0
    }
}

/// The thread-safe shedder attached to one concurrency limiter.
#[derive(Debug)]
pub struct Shedder {
    policy: ShedPolicy,
    origin: Instant,
    pressure: AtomicUsize,
    /// Share of each class, as thousandths of the limit.
    share_milli: Box<[u64]>,
    window_start_ns: AtomicU64,
    min_queue_ns: AtomicU64,
    saw_immediate: AtomicBool,
    ctrl: Mutex<ShedController>,
    shed_by_class: Box<[AtomicU64]>,
}

impl Shedder {
    /// A shedder at level 0.
    pub fn new(policy: ShedPolicy) -> Self {
        let n = policy.classes.len().max(1);
        Shedder {
            share_milli: policy
                .classes
                .iter()
                .map(|c| (c.share.clamp(0.0, 1.0) * 1000.0) as u64)
                .collect(),
            shed_by_class: (0..n).map(|_| AtomicU64::new(0)).collect(),
            ctrl: Mutex::new(ShedController::new(&policy)),
            origin: Instant::now(),
            pressure: AtomicUsize::new(0),
            window_start_ns: AtomicU64::new(0),
            min_queue_ns: AtomicU64::new(u64::MAX),
            saw_immediate: AtomicBool::new(false),
            policy,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &ShedPolicy {
        &self.policy
    }

    /// Current shed level: classes at least partly shed.
    pub fn level(&self) -> usize {
        self.pressure().div_ceil(STEPS)
    }

    /// Current shed pressure, in sixteenths of a class.
    pub fn pressure(&self) -> usize {
        self.pressure.load(Ordering::Relaxed)
    }

    /// Requests of each class shed so far.
    pub fn shed_totals(&self) -> Vec<u64> {
        self.shed_by_class
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// May a request of `class` start, with `inflight` of `limit` slots taken? Counts a
    /// refusal. Lock-free; a partly shed class draws one thread-local random number.
    pub fn admit(&self, class: ClassId, inflight: usize, limit: usize) -> bool {
        let n = self.share_milli.len();
        let i = usize::from(class.0).min(n - 1);
        let shed = match shed_sixteenths(n, self.pressure(), ClassId(i as u8)) {
            0 => false,
            STEPS => true,
            k => fastrand::usize(..STEPS) < k,
        };
        let pressure = self.pressure() > 0;
        // A full-share class is never refused by the share rule: when every slot is taken it
        // waits in the queue (rule 1), which is what the queue is for. Refusing it here shed
        // the most important class whenever the limiter was full under pressure.
        let share = self.share_milli[i];
        let within_share = share >= 1000 || (inflight as u64) * 1000 < share * limit as u64;
        let ok = !shed && (!pressure || within_share);
        if !ok {
            self.shed_by_class[i].fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Whether `class` may wait in the queue when every slot is taken (full-share classes
    /// only). Counts a refusal when not.
    pub fn may_queue(&self, class: ClassId) -> bool {
        let n = self.share_milli.len();
        let i = usize::from(class.0).min(n - 1);
        let ok = self.share_milli[i] >= 1000;
        if !ok {
            self.shed_by_class[i].fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Report one request's queue time (`None`: refused because the limiter was full) at
    /// `now`; ends the interval when due.
    pub fn observe(&self, now: Instant, queued_for: Option<Duration>) {
        match queued_for {
            Some(q) if q.is_zero() => {
                // Read first: once set, the flag costs no cache-line write per request.
                if !self.saw_immediate.load(Ordering::Relaxed) {
                    self.saw_immediate.store(true, Ordering::Relaxed);
                }
            }
            Some(q) => {
                self.min_queue_ns.fetch_min(nanos(q), Ordering::Relaxed);
            }
            None => {
                // Infinite: leaves the minimum alone unless nothing lower was seen; mark
                // that something was seen by lowering MAX to MAX-1.
                self.min_queue_ns.fetch_min(u64::MAX - 1, Ordering::Relaxed);
            }
        }
        let now_ns = nanos(now.saturating_duration_since(self.origin));
        let start = self.window_start_ns.load(Ordering::Relaxed);
        if now_ns.saturating_sub(start) < nanos(self.policy.interval) {
            return;
        }
        // One thread closes the interval; the others carry on.
        let Some(mut ctrl) = self.ctrl.try_lock() else {
            return;
        };
        if self.window_start_ns.load(Ordering::Relaxed) != start {
            return;
        }
        let immediate = self.saw_immediate.swap(false, Ordering::Relaxed);
        let min = self.min_queue_ns.swap(u64::MAX, Ordering::Relaxed);
        let signal = if immediate {
            Some(Duration::ZERO)
        } else if min == u64::MAX {
            None
        } else {
            Some(Duration::from_nanos(min))
        };
        let before = ctrl.level();
        let pressure = ctrl.on_interval(signal);
        self.pressure.store(pressure, Ordering::Relaxed);
        self.window_start_ns.store(now_ns, Ordering::Relaxed);
        let level = ctrl.level();
        if level != before {
            tracing::info!(
                level,
                pressure,
                queue_time_ms = signal.map(|d| d.as_secs_f64() * 1e3),
                "priority shedding level changed"
            );
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_rises_on_standing_queue_and_falls_when_it_drains() {
        let p = ShedPolicy::default();
        let mut c = ShedController::new(&p);
        let slow = Some(Duration::from_millis(50));
        assert_eq!(c.on_interval(slow), 2);
        assert_eq!(c.shed_probability(ClassId(2)), 2.0 / 16.0);
        assert_eq!(c.shed_probability(ClassId(1)), 0.0);
        for _ in 0..7 {
            c.on_interval(slow);
        }
        assert_eq!((c.pressure(), c.level()), (16, 1));
        assert_eq!(c.shed_probability(ClassId(2)), 1.0);
        for _ in 0..100 {
            c.on_interval(Some(Duration::MAX));
        }
        // Never sheds the top class.
        assert_eq!(c.pressure(), 32);
        assert_eq!(c.shed_probability(ClassId(1)), 1.0);
        assert_eq!(c.shed_probability(ClassId(0)), 0.0);
        // In the dead band: holds.
        assert_eq!(c.on_interval(Some(Duration::from_millis(15))), 32);
        assert_eq!(c.on_interval(Some(Duration::ZERO)), 31);
        assert_eq!(c.on_interval(None), 30);
        assert_eq!(c.level(), 2);
    }

    #[test]
    fn shares_reserve_headroom_only_under_pressure() {
        let s = Shedder::new(ShedPolicy::default());
        // No pressure: any class may take any free slot; only full-share classes queue.
        assert!(s.admit(ClassId(2), 9, 10));
        assert!(s.may_queue(ClassId(0)));
        assert!(!s.may_queue(ClassId(2)));
        // Under pressure (1/16: best effort also shed at random 1 in 16).
        s.pressure.store(1, Ordering::Relaxed);
        assert!(!s.admit(ClassId(2), 6, 10));
        assert!(s.admit(ClassId(1), 8, 10));
        assert!(!s.admit(ClassId(1), 9, 10));
        assert!(s.admit(ClassId(0), 9, 10));
        // The most important class is never shed: with every slot taken it goes on to queue.
        assert!(s.admit(ClassId(0), 10, 10));
        assert!(s.may_queue(ClassId(0)));
        assert_eq!(s.shed_totals(), vec![0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn observe_drives_the_pressure() {
        let s = Shedder::new(ShedPolicy::default());
        let t0 = Instant::now();
        for i in 1..=16u64 {
            s.observe(
                t0 + Duration::from_millis(100 * i),
                Some(Duration::from_millis(40)),
            );
        }
        assert_eq!((s.pressure(), s.level()), (32, 2));
        assert!(!s.admit(ClassId(1), 0, 10));
        assert!(s.admit(ClassId(0), 0, 10));
        s.observe(t0 + Duration::from_millis(1750), Some(Duration::ZERO));
        assert_eq!(s.pressure(), 31);
        // Class 1 is now shed with probability 15/16.
        let admitted = (0..1600).filter(|_| s.admit(ClassId(1), 0, 10)).count();
        assert!((50..=160).contains(&admitted), "{admitted}");
    }
}
