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
//! * **restoration** after a fault at `t_f`: the start of the first 10 ms bucket `r` at or
//!   after the fault's bucket such that bucket `r` has at least one good request and no failed
//!   one, and the requests in the window `[r, r + restore_window)` are at least
//!   `restore_ratio` good ("first success after which success stays high"). The restoration
//!   time is `t_r = max(start(r), t_f)`.
//! * **downtime** `= t_r - t_f`; when never restored, `end - t_f`, flagged.
//! * **attributed downtime**: downtime not already covered by an earlier fault's
//!   `[t_f, t_r)` interval, so overlapping faults are never counted twice.
//! * **detection** `= t_d - t_f` where `t_d` is the first `detected` event about the fault's
//!   subject at or after `t_f` and before the fault's window closes: its heal time plus the
//!   restore window plus the event's own uncertainty (unbounded if never healed), and before
//!   the next fault on the same subject (a host going down later must not be read as the
//!   detection of an earlier, never-detected fault); **repair** `= t_r - t_d` when
//!   `t_d <= t_r`.
//! * **failover time** percentiles: nearest-rank percentiles of the per-fault downtimes.
//! * **fault score** `= sum(attributed downtime in minutes x weight)`.
//! * **error budget**: `allowed = (1 - SLO) x total`; `consumed = failed / allowed`.
//! * **projection**: `yearly downtime = incidents_per_year x mean attributed downtime`,
//!   `projected A = 1 - yearly downtime / 525 600 min`.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::record::{History, Outcome, index};

/// Minutes in a (365-day) year, the sources' convention: 99.99% = 52.56 min a year.
pub const MINUTES_PER_YEAR: f64 = 525_600.0;

/// The service level objective a run is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// Target availability as a fraction (0.999 for 99.9%).
    pub availability: f64,
    /// Answers slower than this count as failures.
    #[serde(with = "crate::report::serde_dur")]
    pub latency: Duration,
    /// Incidents a year assumed by the projection.
    pub incidents_per_year: f64,
}

/// When a service counts as restored after a fault.
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

/// A fault as it was actually injected (times are offsets from the start of the load).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InjectedFault {
    /// Position in the schedule.
    pub id: usize,
    /// Human label, e.g. `kill app1`.
    pub label: String,
    /// The fault kind, e.g. `kill`.
    pub kind: String,
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
    /// The restoration rule.
    pub restore: RestoreRule,
}

/// Nearest-rank percentiles of a set of durations (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Count of values.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
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
    /// Whether the run met the target.
    pub met: bool,
    /// Failures the SLO allows for this many requests: `(1 - target) x total`.
    pub error_budget_requests: f64,
    /// `failed / error_budget_requests` (1.0 = budget exactly spent; more = overspent).
    pub error_budget_consumed: Option<f64>,
}

/// One fault's effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    /// The fault as injected.
    pub fault: InjectedFault,
    /// Whether service was restored before the end of the run.
    pub restored: bool,
    /// Restoration time, seconds from the start.
    pub restored_at_s: f64,
    /// Client-observed downtime, seconds.
    pub downtime_s: f64,
    /// Downtime not already counted for an earlier overlapping fault, seconds.
    pub attributed_downtime_s: f64,
    /// Whether an earlier fault's outage was still going on when this one was injected.
    pub overlaps: bool,
    /// Failed requests between the fault and restoration.
    pub failed_requests: u64,
    /// Time from the fault to the first `detected` event about its subject, seconds.
    pub detection_s: Option<f64>,
    /// Time from detection to restoration, seconds.
    pub repair_s: Option<f64>,
    /// Time from the fault to the first `repaired` event about its subject after
    /// detection (the member back in rotation), seconds.
    pub member_back_s: Option<f64>,
    /// `attributed downtime (min) x weight`.
    pub score: f64,
}

/// The yearly projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    /// Assumed incidents a year.
    pub incidents_per_year: f64,
    /// Mean attributed downtime per injected fault, seconds.
    pub mean_downtime_s: f64,
    /// `incidents_per_year x mean downtime`, minutes.
    pub yearly_downtime_min: f64,
    /// `1 - yearly downtime / 525600 min`.
    pub availability: f64,
    /// Its nines.
    pub nines: Option<f64>,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Answered requests measured.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
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
    /// Its nines (none when perfect or nothing was scheduled).
    pub nines: Option<f64>,
    /// SLO verdict.
    pub slo: SloReport,
    /// Per-fault effects.
    pub faults: Vec<FaultReport>,
    /// Failover time percentiles over the faults (none without faults).
    pub failover: Option<Percentiles>,
    /// Sum of the fault scores.
    pub fault_score: f64,
    /// Yearly projection (none without faults).
    pub projection: Option<Projection>,
    /// Latency over the whole run.
    pub latency: Option<Latency>,
    /// Per latency window.
    pub timeline: Vec<WindowStat>,
    /// Success-rate series for the chart.
    pub series: Vec<Point>,
    /// The restoration rule used.
    pub restore: RestoreRule,
    /// Component events received.
    pub events: Vec<ComponentEvent>,
    /// Things the reader must know (e.g. requests lost by a bug, faults that failed).
    pub notes: Vec<String>,
}

/// `-log10(1 - a)`, none when `a >= 1`.
pub fn nines(a: f64) -> Option<f64> {
    (a < 1.0).then(|| -(1.0 - a).log10())
}

/// Nearest-rank percentile `p` (0..=100) of sorted `v`.
pub fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "rank is within 1..=n, far below 2^52"
    )]
    let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(n) - 1).copied()
}

/// Percentiles of `values`.
pub fn percentiles(values: &[f64]) -> Option<Percentiles> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Some(Percentiles {
        count: v.len(),
        p50: nearest_rank(&v, 50.0)?,
        p99: nearest_rank(&v, 99.0)?,
        max: *v.last()?,
    })
}

/// Latency summary of a histogram in microseconds.
pub fn latency_of(h: &Histogram<u64>) -> Option<Latency> {
    if h.is_empty() {
        return None;
    }
    #[allow(clippy::cast_precision_loss, reason = "microseconds to milliseconds")]
    let ms = |us: u64| us as f64 / 1000.0;
    Some(Latency {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    })
}

#[allow(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
fn ratio(good: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| good as f64 / total as f64)
}

/// Prefix sums of good and total counts, for O(1) window sums.
struct Prefix {
    good: Vec<u64>,
    total: Vec<u64>,
}

impl Prefix {
    fn new(h: &History) -> Self {
        let mut good = Vec::with_capacity(h.buckets.len() + 1);
        let mut total = Vec::with_capacity(h.buckets.len() + 1);
        good.push(0);
        total.push(0);
        for b in &h.buckets {
            good.push(good.last().copied().unwrap_or(0) + b.good());
            total.push(total.last().copied().unwrap_or(0) + b.total());
        }
        Prefix { good, total }
    }

    /// (good, total) over buckets `[from, to)`, clamped to the history.
    fn range(&self, from: usize, to: usize) -> (u64, u64) {
        let n = self.good.len() - 1;
        let (from, to) = (from.min(n), to.min(n).max(from.min(n)));
        (
            self.good[to] - self.good[from],
            self.total[to] - self.total[from],
        )
    }
}

/// The restoration time after a fault at `at` under `rule`, or `None` if the service was
/// not restored before the end of the history.
pub fn restoration(h: &History, at: Duration, rule: RestoreRule) -> Option<Duration> {
    let prefix = Prefix::new(h);
    restoration_with(h, &prefix, at, rule)
}

fn restoration_with(
    h: &History,
    prefix: &Prefix,
    at: Duration,
    rule: RestoreRule,
) -> Option<Duration> {
    let w = usize::try_from(rule.window.as_nanos().div_ceil(h.bucket.as_nanos().max(1)))
        .unwrap_or(usize::MAX)
        .max(1);
    let start = index(at, h.bucket);
    for r in start..h.buckets.len() {
        let b = &h.buckets[r];
        if b.good() == 0 || b.bad() > 0 {
            continue;
        }
        let (good, total) = prefix.range(r, r.saturating_add(w));
        if ratio(good, total).is_some_and(|x| x >= rule.ratio) {
            let bucket_start = h.bucket * u32::try_from(r).unwrap_or(u32::MAX);
            return Some(bucket_start.max(at));
        }
    }
    None
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

    let faults = fault_reports(input, &mut notes);
    let measured: Vec<&FaultReport> = faults.iter().filter(|f| f.fault.error.is_none()).collect();
    let downtimes: Vec<f64> = measured.iter().map(|f| f.downtime_s).collect();
    let failover = percentiles(&downtimes);
    let fault_score = measured.iter().map(|f| f.score).sum();
    let projection = (!measured.is_empty()).then(|| {
        #[allow(clippy::cast_precision_loss, reason = "a handful of faults")]
        let mean = measured
            .iter()
            .map(|f| f.attributed_downtime_s)
            .sum::<f64>()
            / measured.len() as f64;
        let yearly_min = input.slo.incidents_per_year * mean / 60.0;
        let a = (1.0 - yearly_min / MINUTES_PER_YEAR).max(0.0);
        Projection {
            incidents_per_year: input.slo.incidents_per_year,
            mean_downtime_s: mean,
            yearly_downtime_min: yearly_min,
            availability: a,
            nines: nines(a),
        }
    });

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
        slo,
        faults,
        failover,
        fault_score,
        projection,
        latency: latency_of(&h.total),
        timeline: timeline(h),
        series: series(h, input.rate),
        restore: input.restore,
        events: input.events.to_vec(),
        notes,
    }
}

fn fault_reports(input: &ReportInput<'_>, notes: &mut Vec<String>) -> Vec<FaultReport> {
    let h = input.history;
    let prefix = Prefix::new(h);
    let end = h.span();
    let mut order: Vec<&InjectedFault> = input.faults.iter().collect();
    order.sort_by_key(|f| (f.at, f.id));
    let mut covered_until = Duration::ZERO;
    let mut out = Vec::with_capacity(order.len());
    for f in order {
        if let Some(e) = &f.error {
            notes.push(format!(
                "fault {} ({}) could not be injected: {e}",
                f.id, f.label
            ));
            out.push(FaultReport {
                fault: f.clone(),
                restored: true,
                restored_at_s: f.at.as_secs_f64(),
                downtime_s: 0.0,
                attributed_downtime_s: 0.0,
                overlaps: false,
                failed_requests: 0,
                detection_s: None,
                repair_s: None,
                member_back_s: None,
                score: 0.0,
            });
            continue;
        }
        let restored_at = restoration_with(h, &prefix, f.at, input.restore);
        let until = restored_at.unwrap_or(end).max(f.at);
        let downtime = until - f.at;
        let overlaps = covered_until > f.at;
        let attributed = until.saturating_sub(covered_until.max(f.at));
        covered_until = covered_until.max(until);
        let (g, t) = prefix.range(index(f.at, h.bucket), index(until, h.bucket));
        let next_same = input
            .faults
            .iter()
            .filter(|g| g.subject == f.subject && g.at > f.at && g.error.is_none())
            .map(|g| g.at)
            .min();
        let in_window = |e: &ComponentEvent| {
            let slack = Duration::try_from_secs_f64(e.uncertainty_s).unwrap_or_default();
            f.healed_at
                .is_none_or(|healed| e.at <= healed + input.restore.window + slack)
                && next_same.is_none_or(|next| e.at < next)
        };
        let detected_event = input
            .events
            .iter()
            .filter(|e| {
                e.kind == EventKind::Detected
                    && e.at >= f.at
                    && e.is_about(&f.subject)
                    && in_window(e)
            })
            .min_by_key(|e| e.at);
        let detected = detected_event.map(|e| e.at);
        let member_back = detected.and_then(|d| {
            input
                .events
                .iter()
                .filter(|e| e.kind == EventKind::Repaired && e.at >= d && e.is_about(&f.subject))
                .map(|e| e.at)
                .min()
        });
        // A polled event is stamped up to its uncertainty late: detection seen just after
        // restoration (within that) means they coincided, i.e. repair 0.
        let repair = match (detected_event, restored_at) {
            (Some(e), Some(r)) if downtime > Duration::ZERO => {
                let slack = Duration::try_from_secs_f64(e.uncertainty_s).unwrap_or_default();
                if e.at <= r {
                    Some(r - e.at)
                } else if e.at <= r + slack {
                    Some(Duration::ZERO)
                } else {
                    None
                }
            }
            _ => None,
        };
        if restored_at.is_none() {
            notes.push(format!(
                "fault {} ({}) : service was not restored before the end of the run; its downtime is a lower bound",
                f.id, f.label
            ));
        }
        out.push(FaultReport {
            fault: f.clone(),
            restored: restored_at.is_some(),
            restored_at_s: until.as_secs_f64(),
            downtime_s: downtime.as_secs_f64(),
            attributed_downtime_s: attributed.as_secs_f64(),
            overlaps,
            failed_requests: t - g,
            detection_s: detected.map(|d| (d - f.at).as_secs_f64()),
            repair_s: repair.map(|d| d.as_secs_f64()),
            member_back_s: member_back.map(|b| (b - f.at).as_secs_f64()),
            score: attributed.as_secs_f64() / 60.0 * f.weight,
        });
    }
    out
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
mod tests {
    use super::*;
    use crate::record::{BUCKET, Bucket};

    fn bucket(good: u32, bad: u32) -> Bucket {
        let mut b = Bucket::default();
        b.counts[Outcome::Ok.index()] = good;
        b.counts[Outcome::Refused.index()] = bad;
        b
    }

    /// 10 s at 1 request per 10 ms bucket, with the buckets in `[from, to)` failed.
    fn history(n: usize, outages: &[(usize, usize)]) -> History {
        let buckets = (0..n)
            .map(|i| {
                if outages.iter().any(|&(a, b)| i >= a && i < b) {
                    bucket(0, 1)
                } else {
                    bucket(1, 0)
                }
            })
            .collect();
        History::from_buckets(BUCKET, buckets)
    }

    fn fault(id: usize, at_ms: u64, subject: &str) -> InjectedFault {
        InjectedFault {
            id,
            label: format!("kill {subject}"),
            kind: "kill".into(),
            target: subject.into(),
            subject: subject.into(),
            at: Duration::from_millis(at_ms),
            healed_at: None,
            weight: 2.0,
            error: None,
        }
    }

    fn input<'a>(
        h: &'a History,
        faults: &'a [InjectedFault],
        events: &'a [ComponentEvent],
    ) -> ReportInput<'a> {
        ReportInput {
            name: "t",
            description: "synthetic",
            seed: 1,
            rate: 100.0,
            history: h,
            faults,
            events,
            slo: Slo {
                availability: 0.999,
                latency: Duration::from_millis(500),
                incidents_per_year: 12.0,
            },
            restore: RestoreRule::default(),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn availability_nines_and_error_budget() {
        // 1000 requests, 10 failed: 99%, two nines; SLO 99.9% allows 1 failure: 10x spent.
        let h = history(1000, &[(100, 110)]);
        let r = compute(&input(&h, &[], &[]));
        assert_eq!((r.requests.total, r.requests.failed), (1000, 10));
        assert!(close(r.availability.unwrap(), 0.99));
        assert!(close(r.nines.unwrap(), 2.0));
        assert!(close(r.slo.error_budget_requests, 1.0));
        assert!(close(r.slo.error_budget_consumed.unwrap(), 10.0));
        assert!(!r.slo.met);
        assert_eq!(r.requests.by_outcome["refused"], 10);
        assert!(r.failover.is_none() && r.projection.is_none());
    }

    #[test]
    fn perfect_run_has_no_nines_value_and_meets_slo() {
        let h = history(100, &[]);
        let r = compute(&input(&h, &[], &[]));
        assert_eq!(r.availability, Some(1.0));
        assert_eq!(r.nines, None);
        assert!(r.slo.met);
        assert!(close(r.slo.error_budget_consumed.unwrap(), 0.0));
    }

    #[test]
    fn downtime_runs_from_fault_to_first_clean_bucket_with_high_window() {
        // Fault at 2.005 s; buckets 200..350 fail; restoration at bucket 350 = 3.5 s.
        let h = history(1000, &[(200, 350)]);
        let f = [fault(0, 2005, "app1")];
        let ev = [
            ComponentEvent {
                at: Duration::from_millis(2900),
                source: "lb".into(),
                kind: EventKind::Detected,
                subject: "web/app1".into(),
                detail: String::new(),
                uncertainty_s: 0.0,
            },
            ComponentEvent {
                at: Duration::from_millis(2500),
                source: "lb".into(),
                kind: EventKind::Detected,
                subject: "web/app2".into(),
                detail: String::new(),
                uncertainty_s: 0.0,
            },
            ComponentEvent {
                at: Duration::from_millis(6000),
                source: "lb".into(),
                kind: EventKind::Repaired,
                subject: "app1".into(),
                detail: String::new(),
                uncertainty_s: 0.0,
            },
        ];
        let r = compute(&input(&h, &f, &ev));
        let fr = &r.faults[0];
        assert!(fr.restored);
        assert!(close(fr.restored_at_s, 3.5));
        assert!(close(fr.downtime_s, 1.495));
        assert!(close(fr.attributed_downtime_s, 1.495));
        assert_eq!(fr.failed_requests, 150);
        // Detection by the event about app1 (the app2 one is ignored), repair the rest.
        assert!(close(fr.detection_s.unwrap(), 0.895));
        assert!(close(fr.repair_s.unwrap(), 0.6));
        assert!(close(fr.member_back_s.unwrap(), 3.995));
        assert!(close(fr.score, 1.495 / 60.0 * 2.0));
        let p = r.failover.unwrap();
        assert!(close(p.p50, 1.495) && close(p.max, 1.495));
        // Projection: 12 incidents x 1.495 s = 0.299 min a year.
        let proj = r.projection.unwrap();
        assert!(close(proj.yearly_downtime_min, 12.0 * 1.495 / 60.0));
        assert!(close(proj.availability, 1.0 - 0.299 / MINUTES_PER_YEAR));
    }

    #[test]
    fn a_fault_without_effect_has_zero_downtime() {
        let h = history(1000, &[]);
        let r = compute(&input(&h, &[fault(0, 3333, "app1")], &[]));
        assert!(close(r.faults[0].downtime_s, 0.0));
        assert_eq!(r.faults[0].failed_requests, 0);
        assert!(r.faults[0].repair_s.is_none());
    }

    #[test]
    fn a_lone_failure_after_recovery_delays_restoration_until_the_window_is_clean() {
        // Outage 100..150, one more failure at 180: window [150, 250) has 1 bad of 100 =
        // 99% good, meets 0.99, so restored at 150 despite the straggler; with a stricter
        // ratio restoration moves past the straggler to 181.
        let h = history(1000, &[(100, 150), (180, 181)]);
        let f = [fault(0, 1000, "a")];
        let r = compute(&input(&h, &f, &[]));
        assert!(close(r.faults[0].restored_at_s, 1.5));
        let mut strict = input(&h, &f, &[]);
        strict.restore.ratio = 1.0;
        let r = compute(&strict);
        assert!(close(r.faults[0].restored_at_s, 1.81));
        assert_eq!(r.faults[0].failed_requests, 51);
    }

    #[test]
    fn overlapping_faults_are_not_counted_twice() {
        // Outage 200..400 (2 s-4 s). Fault A at 2 s, fault B at 3 s: both restore at 4 s.
        let h = history(1000, &[(200, 400)]);
        let f = [fault(1, 3000, "b"), fault(0, 2000, "a")];
        let r = compute(&input(&h, &f, &[]));
        assert_eq!(r.faults[0].fault.id, 0, "sorted by time");
        assert!(close(r.faults[0].downtime_s, 2.0));
        assert!(close(r.faults[1].downtime_s, 1.0));
        assert!(r.faults[1].overlaps);
        assert!(close(r.faults[1].attributed_downtime_s, 0.0));
        assert!(close(r.fault_score, 2.0 / 60.0 * 2.0));
        let p = r.failover.unwrap();
        assert!(close(p.p50, 1.0) && close(p.p99, 2.0) && close(p.max, 2.0));
    }

    #[test]
    fn unrestored_fault_runs_to_the_end_and_is_flagged() {
        let h = history(500, &[(300, 500)]);
        let r = compute(&input(&h, &[fault(0, 3000, "a")], &[]));
        assert!(!r.faults[0].restored);
        assert!(close(r.faults[0].downtime_s, 2.0));
        assert!(r.notes.iter().any(|n| n.contains("lower bound")));
    }

    #[test]
    fn failed_injection_is_kept_but_not_measured() {
        let h = history(100, &[]);
        let mut f = fault(0, 100, "a");
        f.error = Some("no such process".into());
        let r = compute(&input(&h, &[f], &[]));
        assert_eq!(r.faults.len(), 1);
        assert!(r.failover.is_none());
        assert!(r.notes.iter().any(|n| n.contains("no such process")));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 50.0), Some(50.0));
        assert_eq!(nearest_rank(&v, 99.0), Some(99.0));
        assert_eq!(nearest_rank(&v, 100.0), Some(100.0));
        assert_eq!(nearest_rank(&[3.0], 99.0), Some(3.0));
        assert_eq!(nearest_rank(&[], 50.0), None);
        let p = percentiles(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((p.p50, p.p99, p.max), (3.0, 5.0, 5.0));
    }

    #[test]
    fn nines_of_known_values() {
        assert!(close(nines(0.999).unwrap(), 3.0));
        assert!(close(nines(0.9999).unwrap(), 4.0));
        assert!(close(nines(0.9).unwrap(), 1.0));
        assert_eq!(nines(1.0), None);
        // 99.99% is 52.56 minutes a year.
        assert!(close(MINUTES_PER_YEAR * (1.0 - 0.9999), 52.56));
    }

    #[test]
    fn latency_percentiles_over_time() {
        let mut rec = crate::record::Recorder::with_widths(
            Duration::from_secs(2),
            Duration::from_secs(10),
            BUCKET,
            Duration::from_secs(1),
        );
        for i in 1..=100u64 {
            rec.record(
                Duration::from_millis(i),
                Some(Duration::from_millis(i)),
                Outcome::Ok,
            );
            rec.record(
                Duration::from_millis(1000 + i),
                Some(Duration::from_millis(10 * i)),
                Outcome::Ok,
            );
        }
        let h = rec.finish(Duration::from_secs(2));
        let r = compute(&input(&h, &[], &[]));
        assert_eq!(r.timeline.len(), 2);
        let l0 = r.timeline[0].latency.clone().unwrap();
        let l1 = r.timeline[1].latency.clone().unwrap();
        // 2 significant digits: within 1%.
        assert!((l0.p50_ms - 50.0).abs() <= 0.5, "{l0:?}");
        assert!((l0.p99_ms - 99.0).abs() <= 1.0, "{l0:?}");
        assert!((l1.p50_ms - 500.0).abs() <= 5.0, "{l1:?}");
        assert!((l1.max_ms - 1000.0).abs() <= 10.0, "{l1:?}");
        assert_eq!(r.latency.unwrap().count, 200);
        assert_eq!(r.timeline[0].requests, 100);
    }

    #[test]
    fn a_polled_detection_just_after_restoration_means_repair_zero() {
        let h = history(1000, &[(200, 300)]);
        let f = [fault(0, 2000, "app1")];
        let mut ev = ComponentEvent {
            at: Duration::from_millis(3050),
            source: "haproxy".into(),
            kind: EventKind::Detected,
            subject: "app/app1".into(),
            detail: String::new(),
            uncertainty_s: 0.1,
        };
        let r = compute(&input(&h, &f, std::slice::from_ref(&ev)));
        assert!(close(r.faults[0].detection_s.unwrap(), 1.05));
        assert_eq!(r.faults[0].repair_s, Some(0.0));
        // Beyond the uncertainty the detection did not cause the restoration.
        ev.at = Duration::from_millis(3200);
        let r = compute(&input(&h, &f, &[ev]));
        assert_eq!(r.faults[0].repair_s, None);
    }

    #[test]
    fn detection_belongs_to_the_fault_only_while_its_window_is_open() {
        let h = history(1000, &[(200, 300)]);
        let mut f = [fault(0, 2000, "app1"), fault(1, 7000, "app1")];
        // The first fault is healed at 3 s: its window closes at 3 s + restore window (1 s)
        // + the event's uncertainty (0.1 s).
        f[0].healed_at = Some(Duration::from_millis(3000));
        let ev = |at_ms: u64| ComponentEvent {
            at: Duration::from_millis(at_ms),
            source: "haproxy".into(),
            kind: EventKind::Detected,
            subject: "app/app1".into(),
            detail: String::new(),
            uncertainty_s: 0.1,
        };
        let r = compute(&input(&h, &f, &[ev(4050)]));
        assert!(close(r.faults[0].detection_s.unwrap(), 2.05));
        // Long after the heal, an event about app1 is not this fault's detection...
        let r = compute(&input(&h, &f, &[ev(5000)]));
        assert_eq!(r.faults[0].detection_s, None);
        // ... and after the next fault on app1 it belongs to that one only.
        let r = compute(&input(&h, &f, &[ev(7500)]));
        assert_eq!(r.faults[0].detection_s, None);
        assert!(close(r.faults[1].detection_s.unwrap(), 0.5));
        // A fault never healed keeps its window open until the next one.
        f[0].healed_at = None;
        let r = compute(&input(&h, &f, &[ev(6000)]));
        assert!(close(r.faults[0].detection_s.unwrap(), 4.0));
    }
}
