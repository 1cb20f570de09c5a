//! Report output: the terminal table, the side-by-side comparison, and the JSON file.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::ChaosError;
use crate::report::{FaultReport, Report};

fn pct(a: Option<f64>) -> String {
    a.map_or("n/a".to_string(), |a| format!("{:.3}%", a * 100.0))
}

fn nines(n: Option<f64>, a: Option<f64>) -> String {
    match (n, a) {
        (Some(n), _) => format!("{n:.2} nines"),
        (None, Some(_)) => "no failure".to_string(),
        (None, None) => "n/a".to_string(),
    }
}

fn secs(s: Option<f64>) -> String {
    s.map_or("-".to_string(), |s| format!("{s:.3}s"))
}

fn downtime(f: &FaultReport) -> String {
    if f.fault.error.is_some() {
        "not injected".to_string()
    } else if f.restored {
        format!("{:.3}s", f.downtime_s)
    } else {
        format!(">={:.3}s", f.downtime_s)
    }
}

fn budget(r: &Report) -> String {
    match r.slo.error_budget_consumed {
        Some(c) => format!("{:.1}% of the error budget consumed", c * 100.0),
        None => "no error budget (no request)".to_string(),
    }
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
    let outcomes: Vec<String> = r
        .requests
        .by_outcome
        .iter()
        .filter(|(k, _)| k.as_str() != "ok")
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        o,
        "requests      {} scheduled, {} good, {} failed{}",
        r.requests.total,
        r.requests.good,
        r.requests.failed,
        if outcomes.is_empty() {
            String::new()
        } else {
            format!(" ({})", outcomes.join(", "))
        }
    );
    let _ = writeln!(
        o,
        "availability  {}  ({})",
        pct(r.availability),
        nines(r.nines, r.availability)
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
    if let Some(p) = &r.failover {
        let _ = writeln!(
            o,
            "failover      p50 {:.3}s  p99 {:.3}s  max {:.3}s  (client-observed downtime over {} fault(s))",
            p.p50, p.p99, p.max, p.count
        );
    }
    let _ = writeln!(
        o,
        "fault score   {:.4}  (sum of downtime minutes x weight)",
        r.fault_score
    );
    if let Some(p) = &r.projection {
        let _ = writeln!(
            o,
            "projection    {} incidents/year x {:.3} s = {:.2} min/year -> {:.5}% ({})",
            p.incidents_per_year,
            p.mean_downtime_s,
            p.yearly_downtime_min,
            p.availability * 100.0,
            nines(p.nines, Some(p.availability))
        );
    }
    if !r.faults.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  #  {:>8}  {:<40} {:>11} {:>8} {:>8} {:>9} {:>7} {:>8}",
            "at", "fault", "downtime", "detect", "repair", "back", "failed", "score"
        );
        for f in &r.faults {
            let _ = writeln!(
                o,
                "{:>3}  {:>7.3}s  {:<40} {:>11} {:>8} {:>8} {:>9} {:>7} {:>8.4}{}",
                f.fault.id,
                f.fault.at.as_secs_f64(),
                truncate(&f.fault.label, 40),
                downtime(f),
                secs(f.detection_s),
                secs(f.repair_s),
                secs(f.member_back_s),
                f.failed_requests,
                f.score,
                if f.overlaps { "  (overlaps)" } else { "" }
            );
        }
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
    let w = 30;
    let row = |o: &mut String, k: &str, x: String, y: String| {
        let _ = writeln!(o, "{k:<22} {x:<w$} {y:<w$}");
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
        "nines",
        nines(a.nines, a.availability),
        nines(b.nines, b.availability),
    );
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
    let fo = |r: &Report| {
        r.failover.map_or("-".into(), |p| {
            format!("{:.3}/{:.3}/{:.3}s", p.p50, p.p99, p.max)
        })
    };
    row(&mut o, "failover p50/p99/max", fo(a), fo(b));
    row(
        &mut o,
        "fault score",
        format!("{:.4}", a.fault_score),
        format!("{:.4}", b.fault_score),
    );
    let lat = |r: &Report| {
        r.latency.as_ref().map_or("-".into(), |l| {
            format!("{:.2} / {:.2} ms", l.p50_ms, l.p99_ms)
        })
    };
    row(&mut o, "latency p50 / p99", lat(a), lat(b));
    let proj = |r: &Report| {
        r.projection.as_ref().map_or("-".into(), |p| {
            format!(
                "{:.5}% ({:.2} min/y)",
                p.availability * 100.0,
                p.yearly_downtime_min
            )
        })
    };
    row(&mut o, "projected yearly", proj(a), proj(b));
    let n = a.faults.len().max(b.faults.len());
    if n > 0 {
        let _ = writeln!(o);
        let _ = writeln!(o, "downtime per fault:");
        for i in 0..n {
            let fa = a.faults.get(i);
            let fb = b.faults.get(i);
            let label = fa.or(fb).map_or(String::new(), |f| {
                format!("#{} {}", f.fault.id, truncate(&f.fault.label, 18))
            });
            row(
                &mut o,
                &label,
                fa.map_or("-".into(), downtime),
                fb.map_or("-".into(), downtime),
            );
        }
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
