//! Report output: the terminal table, the side-by-side comparison, and the JSON file.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::ChaosError;
use crate::report::{Incident, Report, Unattributed};

fn pct(a: Option<f64>) -> String {
    a.map_or("n/a".to_string(), |a| format!("{:.3}%", a * 100.0))
}

/// `99.950% (90% interval 99.905-99.974%)`.
fn availability(r: &Report) -> String {
    match (r.availability, r.confidence) {
        (Some(a), Some(c)) => format!(
            "{:.3}%  ({:.0}% interval {:.3}-{:.3}%)",
            a * 100.0,
            c.level * 100.0,
            c.availability_low * 100.0,
            c.availability_high * 100.0
        ),
        (a, _) => pct(a),
    }
}

/// The nines line: what the sample supports first (the figure to quote), then the point
/// estimate, which can exceed what any run of this size could show.
fn nines_line(r: &Report) -> String {
    let Some(c) = r.confidence else {
        return "n/a (no request)".to_string();
    };
    let point = r.nines.map_or_else(
        || "no failure measured".to_string(),
        |n| format!("point estimate {n:.2}"),
    );
    format!(
        ">= {:.2} with 95% confidence ({point}; {} requests support at most {:.2})",
        c.nines_supported, r.requests.total, c.nines_max
    )
}

/// `>= 3.02 (point 3.30)` for the comparison table.
fn nines_short(r: &Report) -> String {
    match (r.nines, r.confidence) {
        (Some(n), Some(c)) => format!(">= {:.2} (point {n:.2})", c.nines_supported),
        (None, Some(c)) => format!(">= {:.2} (no failure)", c.nines_supported),
        _ => "n/a".to_string(),
    }
}

fn secs(s: Option<f64>) -> String {
    s.map_or("-".to_string(), |s| format!("{s:.3}s"))
}

fn recovery(i: &Incident) -> String {
    if i.fault.error.is_some() {
        "not injected".to_string()
    } else if i.recovered {
        format!("{:.3}s", i.recovery_s)
    } else {
        format!(">={:.3}s", i.recovery_s)
    }
}

/// `0.025 s (5)`: lost request-seconds and failed requests of one incident.
fn cost(i: &Incident) -> String {
    if i.fault.error.is_some() {
        "not injected".to_string()
    } else {
        format!("{:.3} s ({})", i.lost_request_s, i.failed_requests)
    }
}

fn budget(r: &Report) -> String {
    match r.slo.error_budget_consumed {
        Some(c) => format!("{:.1}% of the error budget consumed", c * 100.0),
        None => "no error budget (no request)".to_string(),
    }
}

fn outcomes(by: &std::collections::BTreeMap<String, u64>) -> String {
    let v: Vec<String> = by
        .iter()
        .filter(|(k, _)| k.as_str() != "ok")
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if v.is_empty() {
        String::new()
    } else {
        format!(" ({})", v.join(", "))
    }
}

/// The unattributed failures in one line.
fn unattributed(u: &Unattributed) -> String {
    if u.failed_requests == 0 {
        return "none".to_string();
    }
    let mut spans: Vec<String> = u
        .spans
        .iter()
        .take(8)
        .map(|s| format!("{:.2}-{:.2}s: {}", s.from_s, s.to_s, s.failed))
        .collect();
    let more = u.spans.len().saturating_sub(8) + u.spans_not_listed;
    if more > 0 {
        spans.push(format!("{more} more span(s)"));
    }
    format!(
        "{} failed, {:.3} request-s{}; at {}",
        u.failed_requests,
        u.lost_request_s,
        outcomes(&u.by_outcome),
        spans.join("; ")
    )
}

/// The terminal report.
pub fn text(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "hastack chaos: {}  (seed {}, {:.1} s, {} req/s)",
        r.scenario, r.seed, r.duration_s, r.rate
    );
    if !r.description.is_empty() {
        let _ = writeln!(o, "  {}", r.description);
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "requests      {} scheduled, {} good, {} failed{}",
        r.requests.total,
        r.requests.good,
        r.requests.failed,
        outcomes(&r.requests.by_outcome)
    );
    let _ = writeln!(o, "availability  {}", availability(r));
    let _ = writeln!(o, "nines         {}", nines_line(r));
    let attributed = r
        .faults
        .iter()
        .map(|i| i.lost_request_s)
        .fold(0.0, |a, b| a + b);
    let _ = writeln!(
        o,
        "lost          {:.3} request-seconds (failed requests / {} req/s): {attributed:.3} in {} incident(s), {:.3} unattributed",
        r.lost_request_s,
        r.rate,
        r.faults.len(),
        r.unattributed.lost_request_s
    );
    let _ = writeln!(
        o,
        "SLO           {:.3}% with answers under {:.0} ms: {}; {}",
        r.slo.target_pct,
        r.slo.latency_threshold_ms,
        if r.slo.met { "MET" } else { "MISSED" },
        budget(r)
    );
    if let Some(l) = &r.latency {
        let _ = writeln!(
            o,
            "latency       p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  ({} answers)",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
        );
    }
    if let Some(p) = &r.recovery {
        let _ = writeln!(
            o,
            "recovery      p50 {:.3}s  p99 {:.3}s  max {:.3}s  (fault -> {:.0}% of requests good for {}, over {} fault(s))",
            p.p50,
            p.p99,
            p.max,
            r.restore.ratio * 100.0,
            humantime::format_duration(r.restore.window),
            p.count
        );
    }
    let _ = writeln!(
        o,
        "fault score   {:.4}  (sum of lost request-minutes x weight)",
        r.fault_score
    );
    if !r.faults.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  #  {:>8}  {:<40} {:>6} {:>8} {:>10} {:>8} {:>8} {:>9} {:>8}",
            "at", "fault", "failed", "lost s", "recovery", "detect", "repair", "back", "score"
        );
        for i in &r.faults {
            let _ = writeln!(
                o,
                "{:>3}  {:>7.3}s  {:<40} {:>6} {:>8.3} {:>10} {:>8} {:>8} {:>9} {:>8.4}{}",
                i.fault.id,
                i.fault.at.as_secs_f64(),
                truncate(&i.fault.label, 40),
                i.failed_requests,
                i.lost_request_s,
                recovery(i),
                secs(i.detection_s),
                secs(i.repair_s),
                secs(i.member_back_s),
                i.score,
                if i.overlaps { "  (overlaps)" } else { "" }
            );
        }
        let _ = writeln!(
            o,
            "unattributed  {}  (outside every fault's window: injection to heal + {})",
            unattributed(&r.unattributed),
            humantime::format_duration(std::time::Duration::from_secs_f64(r.settle_s))
        );
    } else if r.unattributed.failed_requests > 0 {
        let _ = writeln!(o, "unattributed  {}", unattributed(&r.unattributed));
    }
    if !r.timeline.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  {:>6}  {:>6}  {:>8}  {:>9}  {:>9}  {:>9}",
            "t", "req", "ok", "p50 ms", "p99 ms", "max ms"
        );
        for w in &r.timeline {
            let (p50, p99, max) = w.latency.as_ref().map_or(
                ("-".to_string(), "-".to_string(), "-".to_string()),
                |l| {
                    (
                        format!("{:.2}", l.p50_ms),
                        format!("{:.2}", l.p99_ms),
                        format!("{:.2}", l.max_ms),
                    )
                },
            );
            let _ = writeln!(
                o,
                "  {:>5.0}s  {:>6}  {:>8}  {:>9}  {:>9}  {:>9}",
                w.t_s,
                w.requests,
                w.success_pct
                    .map_or("-".to_string(), |p| format!("{p:.2}%")),
                p50,
                p99,
                max
            );
        }
    }
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Two reports side by side.
pub fn compare(a: &Report, b: &Report, same_timeline: bool) -> String {
    let mut o = String::new();
    let w = 34;
    let row = |o: &mut String, k: &str, x: String, y: String| {
        let _ = writeln!(o, "{k:<26} {x:<w$} {y:<w$}");
    };
    row(&mut o, "", a.scenario.clone(), b.scenario.clone());
    row(
        &mut o,
        "seed / duration",
        format!("{} / {:.1}s", a.seed, a.duration_s),
        format!("{} / {:.1}s", b.seed, b.duration_s),
    );
    row(
        &mut o,
        "requests (failed)",
        format!("{} ({})", a.requests.total, a.requests.failed),
        format!("{} ({})", b.requests.total, b.requests.failed),
    );
    row(
        &mut o,
        "availability",
        pct(a.availability),
        pct(b.availability),
    );
    row(
        &mut o,
        "nines (95% confidence)",
        nines_short(a),
        nines_short(b),
    );
    let lost = |r: &Report| {
        format!(
            "{:.3} s ({:.3} unattributed)",
            r.lost_request_s, r.unattributed.lost_request_s
        )
    };
    row(&mut o, "lost request-seconds", lost(a), lost(b));
    row(
        &mut o,
        "SLO",
        (if a.slo.met { "met" } else { "MISSED" }).to_string(),
        (if b.slo.met { "met" } else { "MISSED" }).to_string(),
    );
    row(
        &mut o,
        "error budget used",
        a.slo
            .error_budget_consumed
            .map_or("-".into(), |c| format!("{:.1}%", c * 100.0)),
        b.slo
            .error_budget_consumed
            .map_or("-".into(), |c| format!("{:.1}%", c * 100.0)),
    );
    let rec = |r: &Report| {
        r.recovery.map_or("-".into(), |p| {
            format!("{:.3}/{:.3}/{:.3}s", p.p50, p.p99, p.max)
        })
    };
    row(&mut o, "recovery p50/p99/max", rec(a), rec(b));
    row(
        &mut o,
        "fault score",
        format!("{:.4}", a.fault_score),
        format!("{:.4}", b.fault_score),
    );
    let lat = |r: &Report| {
        r.latency.as_ref().map_or("-".into(), |l| {
            format!("{:.2} / {:.2} / {:.0} ms", l.p50_ms, l.p99_ms, l.max_ms)
        })
    };
    row(&mut o, "latency p50 / p99 / max", lat(a), lat(b));
    let n = a.faults.len().max(b.faults.len());
    if n > 0 {
        let _ = writeln!(o);
        let _ = writeln!(o, "lost request-seconds (failed requests) per fault:");
        for i in 0..n {
            let ia = a.faults.get(i);
            let ib = b.faults.get(i);
            let label = ia.or(ib).map_or(String::new(), |f| {
                format!("#{} {}", f.fault.id, truncate(&f.fault.label, 22))
            });
            row(
                &mut o,
                &label,
                ia.map_or("-".into(), cost),
                ib.map_or("-".into(), cost),
            );
        }
        let un = |r: &Report| {
            format!(
                "{:.3} s ({})",
                r.unattributed.lost_request_s, r.unattributed.failed_requests
            )
        };
        row(&mut o, "unattributed", un(a), un(b));
    }
    let _ = writeln!(
        o,
        "\ntimelines identical: {}",
        if same_timeline {
            "yes"
        } else {
            "NO (the two scenarios schedule different faults: the comparison is not like for like)"
        }
    );
    o
}

/// Write the report as pretty JSON.
pub fn write_json(r: &Report, path: &Path) -> Result<(), ChaosError> {
    let mut body = serde_json::to_vec_pretty(r).map_err(|e| ChaosError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    body.push(b'\n');
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| ChaosError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, body).map_err(|source| ChaosError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::record::{BUCKET, Bucket, History, Outcome};
    use crate::report::{ReportInput, RestoreRule, Slo, compute};

    /// 12 000 requests (60 s at 200 req/s), `bad` of them failed at 1 s.
    fn report(bad: u32) -> Report {
        let buckets = (0..6000)
            .map(|i| {
                let mut b = Bucket::default();
                let failed = if i == 100 { bad } else { 0 };
                b.counts[Outcome::Ok.index()] = 2 - failed.min(2);
                b.counts[Outcome::Timeout.index()] = failed;
                b
            })
            .collect();
        let h = History::from_buckets(BUCKET, buckets);
        compute(&ReportInput {
            name: "t",
            description: "",
            seed: 1,
            rate: 200.0,
            history: &h,
            faults: &[],
            events: &[],
            slo: Slo {
                availability: 0.999,
                latency: Duration::from_millis(250),
            },
            restore: RestoreRule::default(),
            settle: Duration::from_secs(2),
        })
    }

    #[test]
    fn the_nines_line_leads_with_what_the_sample_supports() {
        let t = text(&report(0));
        assert!(
            t.contains("nines         >= 3.65 with 95% confidence (no failure measured; 12000 requests support at most 3.65)"),
            "{t}"
        );
        // One failure: the point estimate (4.08) is above what the run supports.
        let t = text(&report(1));
        assert!(
            t.contains(">= 3.43 with 95% confidence (point estimate 4.08; 12000 requests support at most 3.65)"),
            "{t}"
        );
        assert!(
            t.contains("lost          0.005 request-seconds (failed requests / 200 req/s): 0.000 in 0 incident(s), 0.005 unattributed"),
            "{t}"
        );
        assert!(
            t.contains("unattributed  1 failed, 0.005 request-s (timeout 1); at 1.00-1.01s: 1"),
            "{t}"
        );
        assert!(!t.contains("-0.0"), "an empty sum printed as -0: {t}");
        let c = compare(&report(0), &report(1), true);
        assert!(
            c.contains(">= 3.65 (no failure)") && c.contains(">= 3.43 (point 4.08)"),
            "{c}"
        );
    }
}
