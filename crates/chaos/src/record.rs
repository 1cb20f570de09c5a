//! Recording every request's intended send time, finish time and outcome in bounded memory.
//!
//! Memory does not grow with the number of requests: requests are folded into fixed-width
//! time buckets keyed by their **intended** send time (default 10 ms: per-kind counts) and
//! coarser latency windows (default 1 s, widened so that a run has at most
//! [`MAX_WINDOWS`] of them: one HDR histogram each). A 60 s run therefore holds 6 000 small
//! buckets and 60 histograms whatever the request rate.
//!
//! Invariant: every request the generator schedules is recorded exactly once, either when it
//! finishes or, if it could not even be sent (in-flight cap), at its intended send time.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Width of a count bucket.
pub const BUCKET: Duration = Duration::from_millis(10);
/// Most latency windows per run (the window widens for long runs to stay under it).
pub const MAX_WINDOWS: usize = 600;
/// Largest latency the histograms hold (larger values are clamped to it).
pub const MAX_LATENCY_US: u64 = 120_000_000;

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered successfully within the SLO latency threshold.
    Ok,
    /// Answered successfully but slower than the SLO latency threshold: a failure.
    Slow,
    /// Connection refused on every entry address.
    Refused,
    /// Connecting timed out on every entry address tried.
    ConnectTimeout,
    /// The connection was reset.
    Reset,
    /// No complete answer within the request timeout.
    Timeout,
    /// The peer closed the connection before a complete answer.
    Closed,
    /// An HTTP answer with a failing status (4xx/5xx by default).
    Status,
    /// An answer that was not what was expected (bad protocol bytes, wrong echo).
    BadResponse,
    /// Not sent: the in-flight cap was reached. Counted as a failure, never delayed.
    Overload,
    /// Any other I/O error.
    Other,
}

impl Outcome {
    /// Every outcome, in index order.
    pub const ALL: [Outcome; 11] = [
        Outcome::Ok,
        Outcome::Slow,
        Outcome::Refused,
        Outcome::ConnectTimeout,
        Outcome::Reset,
        Outcome::Timeout,
        Outcome::Closed,
        Outcome::Status,
        Outcome::BadResponse,
        Outcome::Overload,
        Outcome::Other,
    ];

    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the request counts as good for availability.
    pub fn is_good(self) -> bool {
        self == Outcome::Ok
    }

    /// Short name for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Slow => "slow",
            Outcome::Refused => "refused",
            Outcome::ConnectTimeout => "connect_timeout",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
            Outcome::Closed => "closed",
            Outcome::Status => "status",
            Outcome::BadResponse => "bad_response",
            Outcome::Overload => "overload",
            Outcome::Other => "other",
        }
    }
}

/// Number of outcome kinds.
pub const KINDS: usize = Outcome::ALL.len();

/// Counts of the requests whose intended send time fell in one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Per-outcome counts, indexed by [`Outcome::index`].
    pub counts: [u32; KINDS],
}

impl Bucket {
    /// Good requests.
    pub fn good(&self) -> u64 {
        u64::from(self.counts[Outcome::Ok.index()])
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// Failed requests.
    pub fn bad(&self) -> u64 {
        self.total() - self.good()
    }
}

/// A new latency histogram (microseconds, 2 significant digits: 1% resolution).
pub fn new_histogram() -> Histogram<u64> {
    #[allow(
        clippy::expect_used,
        reason = "constant, valid bounds: 1 us .. MAX_LATENCY_US with 2 significant figures"
    )]
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("valid histogram bounds")
}

/// The recorder the load generator writes into while a run is going.
#[derive(Debug)]
pub struct Recorder {
    bucket: Duration,
    window: Duration,
    latency_threshold: Duration,
    buckets: Vec<Bucket>,
    windows: Vec<Histogram<u64>>,
    total: Histogram<u64>,
    dropped_late: u64,
}

impl Recorder {
    /// A recorder for a run of `span` (load duration plus the drain time), counting answers
    /// slower than `latency_threshold` as [`Outcome::Slow`].
    pub fn new(span: Duration, latency_threshold: Duration) -> Self {
        Recorder::with_widths(span, latency_threshold, BUCKET, default_window(span))
    }

    /// As [`Recorder::new`] with explicit widths (tests).
    pub fn with_widths(
        span: Duration,
        latency_threshold: Duration,
        bucket: Duration,
        window: Duration,
    ) -> Self {
        let nb = slots(span, bucket);
        let nw = slots(span, window);
        Recorder {
            bucket,
            window,
            latency_threshold,
            buckets: vec![Bucket::default(); nb],
            windows: (0..nw).map(|_| new_histogram()).collect(),
            total: new_histogram(),
            dropped_late: 0,
        }
    }

    /// Record one request: intended send time `at` (offset from the run's start), its
    /// latency (finish minus intended send; `None` when it never got an answer), and how it
    /// ended. A successful answer slower than the threshold is turned into [`Outcome::Slow`].
    pub fn record(&mut self, at: Duration, latency: Option<Duration>, outcome: Outcome) {
        let outcome = match (outcome, latency) {
            (Outcome::Ok, Some(l)) if l > self.latency_threshold => Outcome::Slow,
            (o, _) => o,
        };
        let b = index(at, self.bucket);
        let Some(bucket) = self.buckets.get_mut(b) else {
            // Cannot happen for requests the generator scheduled inside the span; counted so
            // that a bug shows up in the report instead of vanishing.
            self.dropped_late += 1;
            return;
        };
        bucket.counts[outcome.index()] = bucket.counts[outcome.index()].saturating_add(1);
        if let (Some(l), Outcome::Ok | Outcome::Slow) = (latency, outcome) {
            let us = u64::try_from(l.as_micros())
                .unwrap_or(MAX_LATENCY_US)
                .clamp(1, MAX_LATENCY_US);
            if let Some(h) = self.windows.get_mut(index(at, self.window)) {
                h.saturating_record(us);
            }
            self.total.saturating_record(us);
        }
    }

    /// Freeze into a [`History`] covering the first `len` of the span.
    pub fn finish(mut self, len: Duration) -> History {
        self.buckets.truncate(slots(len, self.bucket));
        self.windows.truncate(slots(len, self.window));
        History {
            bucket: self.bucket,
            window: self.window,
            buckets: self.buckets,
            windows: self.windows,
            total: self.total,
            dropped_late: self.dropped_late,
        }
    }

    /// Counts so far over `[from, to)` (for live progress).
    pub fn summary(&self, from: Duration, to: Duration) -> Bucket {
        sum(
            &self.buckets,
            index(from, self.bucket),
            index(to, self.bucket),
        )
    }

    /// The latency window containing `at`, if any (for live progress).
    pub fn window_at(&self, at: Duration) -> Option<&Histogram<u64>> {
        self.windows.get(index(at, self.window))
    }
}

fn default_window(span: Duration) -> Duration {
    let min = Duration::from_secs(1);
    let per = span / u32::try_from(MAX_WINDOWS).unwrap_or(u32::MAX);
    // Round up to whole seconds so windows line up with the live progress lines.
    let secs = per.as_secs() + u64::from(per.subsec_nanos() > 0);
    min.max(Duration::from_secs(secs))
}

fn slots(span: Duration, width: Duration) -> usize {
    let w = width.as_nanos().max(1);
    usize::try_from(span.as_nanos().div_ceil(w)).unwrap_or(usize::MAX)
}

/// The slot containing offset `at`.
pub fn index(at: Duration, width: Duration) -> usize {
    usize::try_from(at.as_nanos() / width.as_nanos().max(1)).unwrap_or(usize::MAX)
}

fn sum(buckets: &[Bucket], from: usize, to: usize) -> Bucket {
    let mut out = Bucket::default();
    for b in buckets.iter().take(to).skip(from) {
        for (o, c) in out.counts.iter_mut().zip(b.counts) {
            *o = o.saturating_add(c);
        }
    }
    out
}

/// A finished run's record: what the report is computed from.
#[derive(Debug, Clone)]
pub struct History {
    /// Width of a count bucket.
    pub bucket: Duration,
    /// Width of a latency window.
    pub window: Duration,
    /// Count buckets, bucket `i` covering intended send times `[i*bucket, (i+1)*bucket)`.
    pub buckets: Vec<Bucket>,
    /// Latency histograms (microseconds) of answered requests, per window.
    pub windows: Vec<Histogram<u64>>,
    /// Latency histogram of every answered request.
    pub total: Histogram<u64>,
    /// Requests recorded past the end of the span (a bug if not zero).
    pub dropped_late: u64,
}

impl History {
    /// A history made of counts only (tests, synthetic inputs): one latency window spanning
    /// the whole run, empty.
    pub fn from_buckets(bucket: Duration, buckets: Vec<Bucket>) -> Self {
        let span = bucket * u32::try_from(buckets.len()).unwrap_or(u32::MAX);
        History {
            bucket,
            window: span.max(bucket),
            buckets,
            windows: vec![new_histogram()],
            total: new_histogram(),
            dropped_late: 0,
        }
    }

    /// The recorded span.
    pub fn span(&self) -> Duration {
        self.bucket * u32::try_from(self.buckets.len()).unwrap_or(u32::MAX)
    }

    /// Counts over all buckets.
    pub fn totals(&self) -> Bucket {
        sum(&self.buckets, 0, self.buckets.len())
    }

    /// Counts over buckets `[from, to)`.
    pub fn sum(&self, from: usize, to: usize) -> Bucket {
        sum(&self.buckets, from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_answers_become_failures_and_buckets_follow_intended_time() {
        let mut r = Recorder::with_widths(
            Duration::from_secs(1),
            Duration::from_millis(100),
            BUCKET,
            Duration::from_millis(500),
        );
        r.record(
            Duration::from_millis(5),
            Some(Duration::from_millis(50)),
            Outcome::Ok,
        );
        r.record(
            Duration::from_millis(5),
            Some(Duration::from_millis(150)),
            Outcome::Ok,
        );
        r.record(Duration::from_millis(15), None, Outcome::Refused);
        r.record(Duration::from_millis(999), None, Outcome::Overload);
        r.record(Duration::from_secs(5), None, Outcome::Overload);
        let h = r.finish(Duration::from_secs(1));
        assert_eq!(h.buckets.len(), 100);
        assert_eq!(h.windows.len(), 2);
        assert_eq!(h.buckets[0].good(), 1);
        assert_eq!(h.buckets[0].counts[Outcome::Slow.index()], 1);
        assert_eq!(h.buckets[1].counts[Outcome::Refused.index()], 1);
        assert_eq!(h.buckets[99].counts[Outcome::Overload.index()], 1);
        assert_eq!(h.dropped_late, 1);
        assert_eq!(h.totals().total(), 4);
        // Both answered requests carry a latency; refusals do not.
        assert_eq!(h.total.len(), 2);
        assert_eq!(h.windows[0].len(), 2);
    }

    #[test]
    fn windows_stay_bounded_for_long_runs() {
        assert_eq!(
            default_window(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        let w = default_window(Duration::from_secs(24 * 3600));
        assert!(slots(Duration::from_secs(24 * 3600), w) <= MAX_WINDOWS);
    }
}
