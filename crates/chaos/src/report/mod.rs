//! The availability report: pure functions from a [`History`], the faults injected and the
//! events components reported, to numbers. No IO, no clock: every test feeds synthetic
//! histories with known answers.
//!
//! Definitions (also in `docs/chaos.md`):
//!
//! * A request is **good** when it was answered successfully within the SLO latency threshold;
//!   every other scheduled request (error, slow answer, not sent because of the in-flight cap)
//!   is **failed**. Requests are placed in time by their *intended* send time.
//! * **availability** `A = good / total`; **nines** `= -log10(1 - A)` (none when `A = 1`).
//! * **confidence** ([`stats::confidence`]): the Wilson score interval of the failure rate
//!   at 90% (two-sided), so its upper end is a one-sided 95% bound; the **supported nines**
//!   `= -log10(upper end)`: at least that many with 95% confidence. With no failure in `n`
//!   requests the upper end is `z²/(n + z²)` (about `2.7/n`): 12 000 requests support at most
//!   3.65 nines, whatever happened.
//! * **lost request-seconds** `= failed requests / offered rate`: the seconds of complete
//!   outage the failures are worth. A third of the requests failing for 3 s costs 1; one
//!   failure in a thousand still costs something.
//! * **attribution** ([`incidents`]): each failed request goes to the most recently injected
//!   fault whose window (injection to heal + `settle`) holds it, else it is *unattributed*;
//!   attributed + unattributed = failed, always.
//! * **recovery** after a fault at `t_f`: the start of the first 10 ms bucket at or after the
//!   fault's that has a good request and no failed one and whose `[r, r + restore_window)` is
//!   at least `restore_ratio` good, `t_r = max(start(r), t_f)`; recovery time `t_r - t_f`,
//!   to the end of the run (flagged) when never. A time, not a cost: failures after it still
//!   count for the fault.
//! * **detection** `= t_d - t_f` where `t_d` is the first `detected` event about the fault's
//!   subject at or after `t_f` and before the fault's window closes: its heal time plus the
//!   restore window plus the event's own uncertainty (unbounded if never healed), and before
//!   the next fault on the same subject; **repair** `= t_r - t_d` when `t_d <= t_r`.
//! * **recovery percentiles**: nearest-rank percentiles of the per-fault recovery times.
//! * **fault score** `= sum(lost request-minutes x weight)`.
//! * **error budget**: `allowed = (1 - SLO) x total`; `consumed = failed / allowed`.

pub mod incidents;
pub mod stats;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::incidents::{FailureSpan, Incident, Unattributed, attribute, recovery};
use self::stats::ratio;
pub use self::stats::{
    Confidence, Latency, Percentiles, confidence, latency_of, nearest_rank, nines, percentiles,
};
use crate::fault::FaultKind;
use crate::record::{History, Outcome};

/// The service level objective a run is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// Target availability as a fraction (0.999 for 99.9%).
    pub availability: f64,
    /// Answers slower than this count as failures.
    #[serde(with = "crate::report::serde_dur")]
    pub latency: Duration,
}

/// When a service counts as recovered after a fault.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RestoreRule {
    /// Window over which success must stay high.
    #[serde(with = "crate::report::serde_dur")]
    pub window: Duration,
    /// Share of good requests required in that window.
    pub ratio: f64,
}

impl Default for RestoreRule {
    fn default() -> Self {
        RestoreRule {
            window: Duration::from_secs(1),
            ratio: 0.99,
        }
    }
}

/// How long after a fault is healed its failures still count for it, by default: a
/// restarted process warming up, a balancer re-admitting a member, a VIP moving back.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);

/// A fault as it was actually injected (times are offsets from the start of the load).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InjectedFault {
    /// Position in the schedule.
    pub id: usize,
    /// Human label, e.g. `kill app1`.
    pub label: String,
    /// The fault kind.
    pub kind: FaultKind,
    /// The scenario target.
    pub target: String,
    /// Which component events are about this fault (event subject), default the target.
    pub subject: String,
    /// When it was injected.
    #[serde(with = "crate::report::serde_dur")]
    pub at: Duration,
    /// When it was healed (SIGCONT, restart, proxy fault cleared), if it was.
    #[serde(with = "crate::report::serde_opt_dur")]
    pub healed_at: Option<Duration>,
    /// Weight for the fault score.
    pub weight: f64,
    /// Why injecting it failed, if it did (the report keeps it, marked).
    pub error: Option<String>,
}

/// What a component said about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The component noticed a member failing (it stops sending it traffic).
    Detected,
    /// The component put a member back.
    Repaired,
    /// Anything else worth showing on the timeline.
    Info,
}

/// One event from the event feed (see [`crate::events`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentEvent {
    /// When the harness received it (offset from the start of the load).
    #[serde(with = "crate::report::serde_dur")]
    pub at: Duration,
    /// Who reported it.
    pub source: String,
    /// What kind of event.
    pub kind: EventKind,
    /// What it is about (a member name, e.g. `app1` or `web/app1`).
    pub subject: String,
    /// Free text.
    #[serde(default)]
    pub detail: String,
    /// How late `at` may be, seconds: a polled source sees a change up to one poll
    /// (interval plus request time) after it happened; pushed events have 0.
    #[serde(default)]
    pub uncertainty_s: f64,
}

impl ComponentEvent {
    /// Whether this event is about `subject`: equal, or ending in `/subject`.
    pub fn is_about(&self, subject: &str) -> bool {
        self.subject == subject
            || self
                .subject
                .strip_suffix(subject)
                .is_some_and(|p| p.ends_with('/'))
    }
}

/// Everything the report is computed from.
#[derive(Debug, Clone, Copy)]
pub struct ReportInput<'a> {
    /// Scenario name.
    pub name: &'a str,
    /// What ran (topology, front tier), said plainly.
    pub description: &'a str,
    /// The seed of the run.
    pub seed: u64,
    /// Offered load, requests per second.
    pub rate: f64,
    /// The recorded requests.
    pub history: &'a History,
    /// The faults injected.
    pub faults: &'a [InjectedFault],
    /// Component events.
    pub events: &'a [ComponentEvent],
    /// The SLO.
    pub slo: Slo,
    /// The recovery rule.
    pub restore: RestoreRule,
    /// How long after its heal a fault's window stays open.
    pub settle: Duration,
}

/// Request counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requests {
    /// Scheduled requests.
    pub total: u64,
    /// Good ones.
    pub good: u64,
    /// Failed ones.
    pub failed: u64,
    /// Count per outcome (only non-zero ones).
    pub by_outcome: BTreeMap<String, u64>,
}

/// The SLO verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloReport {
    /// Target availability, percent.
    pub target_pct: f64,
    /// Latency threshold, milliseconds.
    pub latency_threshold_ms: f64,
    /// Whether the run met the target (point estimate).
    pub met: bool,
    /// Failures the SLO allows for this many requests: `(1 - target) x total`.
    pub error_budget_requests: f64,
    /// `failed / error_budget_requests` (1.0 = budget exactly spent; more = overspent).
    pub error_budget_consumed: Option<f64>,
}

/// One latency window of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowStat {
    /// Window start, seconds.
    pub t_s: f64,
    /// Requests scheduled in the window.
    pub requests: u64,
    /// Good share, percent (none when no request).
    pub success_pct: Option<f64>,
    /// Latency percentiles of the answered requests (none when none answered).
    pub latency: Option<Latency>,
}

/// One point of the success-rate series drawn in the chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Step start, seconds.
    pub t_s: f64,
    /// Requests scheduled in the step.
    pub requests: u64,
    /// Good share, percent.
    pub success_pct: Option<f64>,
}

/// The whole report, serialized as the JSON output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// What ran, said plainly.
    pub description: String,
    /// Seed.
    pub seed: u64,
    /// Offered load, requests per second.
    pub rate: f64,
    /// Recorded span, seconds.
    pub duration_s: f64,
    /// Request counts.
    pub requests: Requests,
    /// Request-based availability (fraction), none when nothing was scheduled.
    pub availability: Option<f64>,
    /// Its nines, the point estimate (none when perfect or nothing was scheduled).
    pub nines: Option<f64>,
    /// What the sample supports: the availability interval and the nines it backs.
    pub confidence: Option<Confidence>,
    /// `failed / rate`, seconds.
    pub lost_request_s: f64,
    /// SLO verdict.
    pub slo: SloReport,
    /// One incident per injected fault, by injection time.
    pub faults: Vec<Incident>,
    /// Failed requests that belong to no fault's window.
    pub unattributed: Unattributed,
    /// Recovery time percentiles over the injected faults (none without faults).
    pub recovery: Option<Percentiles>,
    /// Sum of the incidents' scores (lost request-minutes x weight).
    pub fault_score: f64,
    /// Latency over the whole run.
    pub latency: Option<Latency>,
    /// Per latency window.
    pub timeline: Vec<WindowStat>,
    /// Success-rate series for the chart.
    pub series: Vec<Point>,
    /// The recovery rule used.
    pub restore: RestoreRule,
    /// How long after its heal a fault's window stayed open, seconds.
    pub settle_s: f64,
    /// Component events received.
    pub events: Vec<ComponentEvent>,
    /// Things the reader must know (e.g. requests lost by a bug, faults that failed).
    pub notes: Vec<String>,
}

/// Compute the report.
pub fn compute(input: &ReportInput<'_>) -> Report {
    let h = input.history;
    let totals = h.totals();
    let total = totals.total();
    let good = totals.good();
    let failed = total - good;
    let availability = ratio(good, total);
    let mut notes = Vec::new();
    if h.dropped_late > 0 {
        notes.push(format!(
            "{} requests were recorded after the end of the run and are not counted (a harness bug)",
            h.dropped_late
        ));
    }
    if total == 0 {
        notes.push("no request was scheduled: availability cannot be computed".to_string());
    }

    let by_outcome = Outcome::ALL
        .iter()
        .filter(|o| totals.counts[o.index()] > 0)
        .map(|o| (o.name().to_string(), u64::from(totals.counts[o.index()])))
        .collect();

    #[allow(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
    let budget = (1.0 - input.slo.availability).max(0.0) * total as f64;
    #[allow(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
    let consumed = (budget > 0.0).then(|| failed as f64 / budget);
    let slo = SloReport {
        target_pct: input.slo.availability * 100.0,
        latency_threshold_ms: input.slo.latency.as_secs_f64() * 1000.0,
        met: availability.is_some_and(|a| a >= input.slo.availability),
        error_budget_requests: budget,
        error_budget_consumed: consumed,
    };

    let (faults, unattributed) = incidents::incidents(input, &mut notes);
    let measured: Vec<&Incident> = faults.iter().filter(|i| i.fault.error.is_none()).collect();
    let recoveries: Vec<f64> = measured.iter().map(|i| i.recovery_s).collect();
    // A fold from +0.0: `sum` of no f64 is -0.0, printed "-0.0000".
    let fault_score = measured.iter().map(|i| i.score).fold(0.0, |a, b| a + b);
    #[allow(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
    let lost_request_s = if input.rate > 0.0 {
        failed as f64 / input.rate
    } else {
        0.0
    };

    Report {
        scenario: input.name.to_string(),
        description: input.description.to_string(),
        seed: input.seed,
        rate: input.rate,
        duration_s: h.span().as_secs_f64(),
        requests: Requests {
            total,
            good,
            failed,
            by_outcome,
        },
        availability,
        nines: availability.and_then(nines),
        confidence: confidence(failed, total),
        lost_request_s,
        slo,
        faults,
        unattributed,
        recovery: percentiles(&recoveries),
        fault_score,
        latency: latency_of(&h.total),
        timeline: timeline(h),
        series: series(h, input.rate),
        restore: input.restore,
        settle_s: input.settle.as_secs_f64(),
        events: input.events.to_vec(),
        notes,
    }
}

fn timeline(h: &History) -> Vec<WindowStat> {
    let per = usize::try_from(h.window.as_nanos() / h.bucket.as_nanos().max(1))
        .unwrap_or(1)
        .max(1);
    h.windows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let counts = h.sum(i * per, (i + 1) * per);
            WindowStat {
                t_s: (h.window * u32::try_from(i).unwrap_or(u32::MAX)).as_secs_f64(),
                requests: counts.total(),
                success_pct: ratio(counts.good(), counts.total()).map(|r| r * 100.0),
                latency: latency_of(w),
            }
        })
        .collect()
}

/// The success-rate series: steps of at least 100 ms holding about 20 requests each, at most
/// 2 000 points.
fn series(h: &History, rate: f64) -> Vec<Point> {
    let n = h.buckets.len();
    if n == 0 {
        return Vec::new();
    }
    let per_bucket = (rate * h.bucket.as_secs_f64()).max(1e-9);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "small positive bucket counts"
    )]
    let want = (20.0 / per_bucket).ceil() as usize;
    let min = usize::try_from(Duration::from_millis(100).as_nanos() / h.bucket.as_nanos().max(1))
        .unwrap_or(1)
        .max(1);
    let step = want.max(min).max(n.div_ceil(2000));
    (0..n)
        .step_by(step)
        .map(|i| {
            let c = h.sum(i, i + step);
            Point {
                t_s: (h.bucket * u32::try_from(i).unwrap_or(u32::MAX)).as_secs_f64(),
                requests: c.total(),
                success_pct: ratio(c.good(), c.total()).map(|r| r * 100.0),
            }
        })
        .collect()
}

/// Serde for [`Duration`] as seconds (f64), so the JSON is readable by anything.
pub mod serde_dur {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// Deserialize from seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = f64::deserialize(d)?;
        Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom)
    }
}

/// Serde for `Option<Duration>` as seconds.
pub mod serde_opt_dur {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as seconds or null.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    /// Deserialize from seconds or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests;
