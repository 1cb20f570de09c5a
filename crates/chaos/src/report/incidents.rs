//! Per-fault accounting: which fault each failed request is attributed to, what each fault
//! cost in lost request-seconds, when the service recovered, when components detected it.
//!
//! **Attribution.** A fault's window opens at the 10 ms bucket holding its injection time and
//! closes `settle` after it was healed (at the end of the run if it never was). A failed
//! request belongs to the most recently injected fault whose window holds its intended send
//! time; a failed request in no window is *unattributed* and listed as such. So every failed
//! request is counted exactly once: attributed + unattributed = failed.
//!
//! **Recovery** (a time, not a cost): the first bucket at or after the fault's that has a
//! good request and no failed one, and whose `restore_window` is at least `restore_ratio`
//! good. Failures after it still count for the fault (they are in its window).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::stats::ratio;
use super::{ComponentEvent, EventKind, InjectedFault, ReportInput, RestoreRule};
use crate::record::{Bucket, History, Outcome, index};

/// Failed requests closer than this are listed as one span of unattributed failures.
pub const SPAN_GAP: Duration = Duration::from_secs(1);

/// Unattributed spans listed at most (the counts always cover all of them).
pub const MAX_SPANS: usize = 100;

/// One injected fault and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// The fault as injected.
    pub fault: InjectedFault,
    /// End of its attribution window (healed + settle, or the end of the run), seconds from
    /// the start; none when it could not be injected.
    pub window_end_s: Option<f64>,
    /// Failed requests attributed to it.
    pub failed_requests: u64,
    /// Their outcomes (only non-zero ones).
    pub failed_by_outcome: BTreeMap<String, u64>,
    /// `failed_requests / offered rate`: the seconds of full outage these failures are worth.
    pub lost_request_s: f64,
    /// First attributed failure, seconds after the fault (bucket start, 10 ms resolution).
    pub failures_from_s: Option<f64>,
    /// End of the last attributed failure's bucket, seconds after the fault.
    pub failures_until_s: Option<f64>,
    /// Whether the service recovered (restore rule) before the end of the run.
    pub recovered: bool,
    /// From the fault to recovery, seconds (to the end of the run when not recovered: a
    /// lower bound).
    pub recovery_s: f64,
    /// An earlier fault's window was still open when this one was injected (from then on,
    /// failures count for this one).
    pub overlaps: bool,
    /// Time from the fault to the first `detected` event about its subject, seconds.
    pub detection_s: Option<f64>,
    /// Time from detection to recovery, seconds (only when the fault cost something and was
    /// detected before it recovered, or at once within the event's uncertainty).
    pub repair_s: Option<f64>,
    /// Time from the fault to the first `repaired` event about its subject after detection
    /// (the member back in rotation), seconds.
    pub member_back_s: Option<f64>,
    /// `lost request-minutes x weight`.
    pub score: f64,
}

/// A stretch of unattributed failures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureSpan {
    /// Start of its first failed bucket, seconds from the start.
    pub from_s: f64,
    /// End of its last failed bucket.
    pub to_s: f64,
    /// Failed requests in it.
    pub failed: u64,
}

/// Failed requests that fall in no fault's window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Unattributed {
    /// How many.
    pub failed_requests: u64,
    /// `failed_requests / offered rate`.
    pub lost_request_s: f64,
    /// Their outcomes (only non-zero ones).
    pub by_outcome: BTreeMap<String, u64>,
    /// Where they are (at most [`MAX_SPANS`], earliest first).
    pub spans: Vec<FailureSpan>,
    /// Spans not listed.
    pub spans_not_listed: usize,
}

/// Prefix sums of good and total counts, for O(1) window sums.
pub(super) struct Prefix {
    good: Vec<u64>,
    total: Vec<u64>,
}

impl Prefix {
    pub(super) fn new(h: &History) -> Self {
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

/// The recovery time after a fault at `at` under `rule`, or `None` if the service did not
/// recover before the end of the history.
pub fn recovery(h: &History, at: Duration, rule: RestoreRule) -> Option<Duration> {
    recovery_with(h, &Prefix::new(h), at, rule)
}

pub(super) fn recovery_with(
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
            return Some(bucket_start(h, r).max(at));
        }
    }
    None
}

fn bucket_start(h: &History, i: usize) -> Duration {
    h.bucket * u32::try_from(i).unwrap_or(u32::MAX)
}

/// The attribution window of each fault in `faults`, as buckets `[from, to)`; `None` for a
/// fault that could not be injected.
fn windows(
    h: &History,
    faults: &[&InjectedFault],
    settle: Duration,
) -> Vec<Option<(usize, usize)>> {
    let end = h.span();
    let bucket = h.bucket.as_nanos().max(1);
    faults
        .iter()
        .map(|f| {
            f.error.is_none().then(|| {
                let close = f.healed_at.map_or(end, |healed| (healed + settle).min(end));
                let to = usize::try_from(close.max(f.at).as_nanos().div_ceil(bucket))
                    .unwrap_or(usize::MAX);
                (index(f.at, h.bucket), to.max(index(f.at, h.bucket) + 1))
            })
        })
        .collect()
}

/// For every bucket of `h`, the fault (index into `faults`) its failures are attributed to:
/// the most recently injected one (latest `at`, then highest id) whose window holds it.
pub fn attribute(h: &History, faults: &[&InjectedFault], settle: Duration) -> Vec<Option<usize>> {
    let wins = windows(h, faults, settle);
    (0..h.buckets.len())
        .map(|i| {
            wins.iter()
                .enumerate()
                .filter(|(_, w)| w.is_some_and(|(from, to)| from <= i && i < to))
                .max_by_key(|(j, _)| (faults[*j].at, faults[*j].id))
                .map(|(j, _)| j)
        })
        .collect()
}

fn outcomes(b: &Bucket) -> BTreeMap<String, u64> {
    Outcome::ALL
        .iter()
        .filter(|o| !o.is_good() && b.counts[o.index()] > 0)
        .map(|o| (o.name().to_string(), u64::from(b.counts[o.index()])))
        .collect()
}

fn add(into: &mut Bucket, b: &Bucket) {
    for (o, c) in into.counts.iter_mut().zip(b.counts) {
        *o = o.saturating_add(c);
    }
}

#[allow(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
fn lost(failed: u64, rate: f64) -> f64 {
    if rate > 0.0 {
        failed as f64 / rate
    } else {
        0.0
    }
}

/// Every fault's incident (sorted by injection time) and the unattributed failures.
pub(super) fn incidents(
    input: &ReportInput<'_>,
    notes: &mut Vec<String>,
) -> (Vec<Incident>, Unattributed) {
    let h = input.history;
    let prefix = Prefix::new(h);
    let mut order: Vec<&InjectedFault> = input.faults.iter().collect();
    order.sort_by_key(|f| (f.at, f.id));
    let owners = attribute(h, &order, input.settle);
    let wins = windows(h, &order, input.settle);

    // Sum each fault's failures; collect the rest.
    let mut failed: Vec<Bucket> = vec![Bucket::default(); order.len()];
    let mut first_last: Vec<Option<(usize, usize)>> = vec![None; order.len()];
    let mut rest = Bucket::default();
    let mut spans: Vec<(usize, usize, u64)> = Vec::new();
    for (i, b) in h.buckets.iter().enumerate() {
        if b.bad() == 0 {
            continue;
        }
        let mut bad = *b;
        bad.counts[Outcome::Ok.index()] = 0;
        match owners[i] {
            Some(j) => {
                add(&mut failed[j], &bad);
                let fl = first_last[j].get_or_insert((i, i));
                fl.1 = i;
            }
            None => {
                add(&mut rest, &bad);
                let gap = usize::try_from(SPAN_GAP.as_nanos() / h.bucket.as_nanos().max(1))
                    .unwrap_or(usize::MAX);
                match spans.last_mut() {
                    Some(s) if i <= s.1 + gap => {
                        s.1 = i;
                        s.2 += b.bad();
                    }
                    _ => spans.push((i, i, b.bad())),
                }
            }
        }
    }

    let mut out = Vec::with_capacity(order.len());
    let mut window_open_until = 0usize;
    for (j, f) in order.iter().enumerate() {
        if let Some(e) = &f.error {
            notes.push(format!(
                "fault {} ({}) could not be injected: {e}",
                f.id, f.label
            ));
        }
        let count = failed[j].total();
        let since = |i: usize| bucket_start(h, i).saturating_sub(f.at).as_secs_f64();
        let mut inc = Incident {
            fault: (*f).clone(),
            window_end_s: wins[j].map(|(_, to)| bucket_start(h, to).min(h.span()).as_secs_f64()),
            failed_requests: count,
            failed_by_outcome: outcomes(&failed[j]),
            lost_request_s: lost(count, input.rate),
            failures_from_s: first_last[j].map(|(a, _)| since(a)),
            failures_until_s: first_last[j].map(|(_, b)| since(b + 1)),
            recovered: true,
            recovery_s: 0.0,
            overlaps: false,
            detection_s: None,
            repair_s: None,
            member_back_s: None,
            score: lost(count, input.rate) / 60.0 * f.weight,
        };
        if let Some((from, to)) = wins[j] {
            inc.overlaps = window_open_until > from;
            window_open_until = window_open_until.max(to);
            measure(input, &prefix, f, &mut inc, notes);
        }
        out.push(inc);
    }

    let unattributed = Unattributed {
        failed_requests: rest.total(),
        lost_request_s: lost(rest.total(), input.rate),
        by_outcome: outcomes(&rest),
        spans: spans
            .iter()
            .take(MAX_SPANS)
            .map(|&(a, b, n)| FailureSpan {
                from_s: bucket_start(h, a).as_secs_f64(),
                to_s: bucket_start(h, b + 1).as_secs_f64(),
                failed: n,
            })
            .collect(),
        spans_not_listed: spans.len().saturating_sub(MAX_SPANS),
    };
    (out, unattributed)
}

/// Recovery, detection, repair and member-back times of one injected fault.
fn measure(
    input: &ReportInput<'_>,
    prefix: &Prefix,
    f: &InjectedFault,
    inc: &mut Incident,
    notes: &mut Vec<String>,
) {
    let h = input.history;
    let recovered_at = recovery_with(h, prefix, f.at, input.restore);
    let until = recovered_at.unwrap_or_else(|| h.span()).max(f.at);
    let recovery = until - f.at;
    inc.recovered = recovered_at.is_some();
    inc.recovery_s = recovery.as_secs_f64();
    if recovered_at.is_none() {
        notes.push(format!(
            "fault {} ({}): the service had not recovered by the end of the run; its recovery time is a lower bound",
            f.id, f.label
        ));
    }
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
            e.kind == EventKind::Detected && e.at >= f.at && e.is_about(&f.subject) && in_window(e)
        })
        .min_by_key(|e| e.at);
    let detected = detected_event.map(|e| e.at);
    inc.detection_s = detected.map(|d| (d - f.at).as_secs_f64());
    inc.member_back_s = detected
        .and_then(|d| {
            input
                .events
                .iter()
                .filter(|e| e.kind == EventKind::Repaired && e.at >= d && e.is_about(&f.subject))
                .map(|e| e.at)
                .min()
        })
        .map(|b| (b - f.at).as_secs_f64());
    // A polled event is stamped up to its uncertainty late: detection seen just after
    // recovery (within that) means they coincided, i.e. repair 0.
    inc.repair_s = match (detected_event, recovered_at) {
        (Some(e), Some(r)) if recovery > Duration::ZERO => {
            let slack = Duration::try_from_secs_f64(e.uncertainty_s).unwrap_or_default();
            if e.at <= r {
                Some((r - e.at).as_secs_f64())
            } else if e.at <= r + slack {
                Some(0.0)
            } else {
                None
            }
        }
        _ => None,
    };
}
