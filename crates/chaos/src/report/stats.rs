//! The statistics the report rests on: nines, how many nines a sample can support (Wilson
//! score interval), nearest-rank percentiles, latency summaries.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The normal quantile for a one-sided 95% bound (a two-sided 90% interval):
/// `Phi^-1(0.95)`.
pub const Z_95_ONE_SIDED: f64 = 1.644_853_626_951_472_2;

/// `-log10(1 - a)`, none when `a >= 1`.
pub fn nines(a: f64) -> Option<f64> {
    (a < 1.0).then(|| -(1.0 - a).log10())
}

/// The Wilson score interval for a proportion: `k` events in `n` trials, normal quantile `z`
/// (1.96 for a two-sided 95% interval, [`Z_95_ONE_SIDED`] for a two-sided 90% one, whose
/// ends are one-sided 95% bounds). `None` when `n = 0`.
///
/// With `p = k/n`: centre `(p + z²/2n) / (1 + z²/n)`, half-width
/// `z / (1 + z²/n) x sqrt(p(1-p)/n + z²/4n²)`. Unlike the normal approximation it never
/// leaves `[0, 1]` and it is not degenerate at `k = 0`: the upper end is then `z²/(n + z²)`,
/// so a run without a single failure still bounds the failure rate from above, by about
/// `2.7/n` at 95%.
pub fn wilson(k: u64, n: u64, z: f64) -> Option<(f64, f64)> {
    if n == 0 || k > n {
        return None;
    }
    #[allow(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// What a sample of requests says about availability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Confidence {
    /// Confidence level of the two-sided interval (0.90: each end is a one-sided 95% bound).
    pub level: f64,
    /// Lower end of the availability interval.
    pub availability_low: f64,
    /// Upper end of the availability interval.
    pub availability_high: f64,
    /// The nines the sample supports: `-log10(1 - availability_low)`, i.e. at least this many
    /// with 95% confidence. Never more than [`Confidence::nines_max`].
    pub nines_supported: f64,
    /// The most nines this many requests could support at all (with no failure).
    pub nines_max: f64,
}

/// The availability interval and supported nines for `failed` of `total` requests
/// (Wilson, two-sided 90%); `None` without requests.
pub fn confidence(failed: u64, total: u64) -> Option<Confidence> {
    let z = Z_95_ONE_SIDED;
    let (p_low, p_high) = wilson(failed, total, z)?;
    let (_, p_best) = wilson(0, total, z)?;
    Some(Confidence {
        level: 0.90,
        availability_low: 1.0 - p_high,
        availability_high: 1.0 - p_low,
        nines_supported: -p_high.log10(),
        nines_max: -p_best.log10(),
    })
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

/// `good / total`, none without requests.
#[allow(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
pub fn ratio(good: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| good as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn nines_of_known_values() {
        assert!(close(nines(0.999).unwrap(), 3.0, 1e-9));
        assert!(close(nines(0.9999).unwrap(), 4.0, 1e-9));
        assert!(close(nines(0.9).unwrap(), 1.0, 1e-9));
        assert!(close(nines(0.0).unwrap(), 0.0, 1e-9));
        assert_eq!(nines(1.0), None);
    }

    /// Newcombe, "Two-sided confidence intervals for the single proportion: comparison of
    /// seven methods", Statistics in Medicine 17 (1998), Table I, method 3 (score interval
    /// without continuity correction), 95%: independent reference values, to 4 decimals.
    #[test]
    fn wilson_matches_newcombe_1998() {
        for (k, n, lo, hi) in [
            (81, 263, 0.2553, 0.3662),
            (15, 148, 0.0624, 0.1605),
            (0, 20, 0.0, 0.1611),
            (1, 29, 0.0061, 0.1718),
        ] {
            let (l, h) = wilson(k, n, 1.96).unwrap();
            assert!(
                close(l, lo, 5e-5) && close(h, hi, 5e-5),
                "{k}/{n}: got ({l:.4}, {h:.4}), want ({lo}, {hi})"
            );
        }
        assert_eq!(wilson(0, 0, 1.96), None);
        assert_eq!(wilson(3, 2, 1.96), None);
    }

    #[test]
    fn wilson_is_symmetric_and_contains_the_estimate() {
        for (k, n) in [(0, 1), (1, 3), (7, 1000), (500, 1000), (12_000, 12_000)] {
            let (lo, hi) = wilson(k, n, Z_95_ONE_SIDED).unwrap();
            let (lo2, hi2) = wilson(n - k, n, Z_95_ONE_SIDED).unwrap();
            assert!(close(lo, 1.0 - hi2, 1e-12) && close(hi, 1.0 - lo2, 1e-12));
            #[allow(clippy::cast_precision_loss)]
            let p = k as f64 / n as f64;
            assert!(lo <= p && p <= hi, "{k}/{n}: {lo} {hi}");
        }
    }

    #[test]
    fn twelve_thousand_requests_support_about_three_point_six_nines() {
        // No failure in 12 000 requests: the failure rate is below z²/(n + z²) = 2.25e-4
        // with 95% confidence, i.e. at least 3.65 nines, and no run of that size can claim
        // more. The point estimate (no failure at all) would claim infinitely many.
        let c = confidence(0, 12_000).unwrap();
        assert!(close(c.nines_supported, 3.647, 5e-4), "{c:?}");
        assert!(close(c.nines_max, c.nines_supported, 1e-12));
        assert!(close(c.availability_high, 1.0, 1e-12));
        // One failure: the point estimate is 4.08 nines, more than the sample supports.
        let c = confidence(1, 12_000).unwrap();
        let point = nines(1.0 - 1.0 / 12_000.0).unwrap();
        assert!(close(point, 4.079, 5e-4));
        assert!(
            c.nines_supported < c.nines_max && c.nines_max < point,
            "{c:?}"
        );
        assert!(close(c.nines_supported, 3.428, 5e-4), "{c:?}");
        // Ten times more requests support one more nine.
        let big = confidence(0, 120_000).unwrap();
        assert!(close(big.nines_max - 3.647, 1.0, 5e-3), "{big:?}");
        assert_eq!(confidence(0, 0), None);
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
        assert_eq!(percentiles(&[]), None);
    }
}
