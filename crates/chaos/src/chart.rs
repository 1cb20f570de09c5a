//! The SVG chart: success rate (top) and latency p50/p99 (bottom, log scale) over time,
//! with each fault drawn as a shaded span from injection to healing and labelled.

use std::path::Path;

use plotters::prelude::*;

use crate::error::ChaosError;
use crate::report::Report;

/// Draw `r` into an SVG file at `path`.
pub fn write_svg(r: &Report, path: &Path) -> Result<(), ChaosError> {
    draw(r, path).map_err(|reason| ChaosError::Chart {
        path: path.to_path_buf(),
        reason,
    })
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

fn draw(r: &Report, path: &Path) -> Result<(), String> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let end = r.duration_s.max(0.1);
    let root = SVGBackend::new(path, (1100, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(380);

    let spans: Vec<(f64, f64, String)> = r
        .faults
        .iter()
        .filter(|f| f.fault.error.is_none())
        .map(|f| {
            let at = f.fault.at.as_secs_f64();
            let healed = f
                .fault
                .healed_at
                .map_or(at + end / 200.0, |h| h.as_secs_f64())
                .max(at + end / 200.0);
            (at, healed.min(end), f.fault.label.clone())
        })
        .collect();

    // Success rate.
    let min_ok = r
        .series
        .iter()
        .filter_map(|p| p.success_pct)
        .fold(100.0_f64, f64::min);
    let y0 = if min_ok >= 95.0 { 90.0 } else { 0.0 };
    let title = format!(
        "{}: success rate (availability {})",
        r.scenario,
        r.availability
            .map_or("n/a".to_string(), |a| format!("{:.3}%", a * 100.0))
    );
    let mut c = ChartBuilder::on(&top)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..end, y0..100.5)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("time (s)")
        .y_desc("good requests (%)")
        .draw()
        .map_err(err)?;
    let shade = RGBColor(220, 50, 50).mix(0.15);
    c.draw_series(
        spans
            .iter()
            .map(|(a, b, _)| Rectangle::new([(*a, y0), (*b, 100.5)], shade.filled())),
    )
    .map_err(err)?;
    c.draw_series(spans.iter().enumerate().map(|(i, (a, _, l))| {
        // Stagger labels so neighbouring faults stay readable.
        let y = 100.0 - (100.0 - y0) * (0.05 + 0.07 * (i % 4) as f64);
        Text::new(
            l.clone(),
            (*a, y),
            ("sans-serif", 11).into_font().color(&RGBColor(150, 20, 20)),
        )
    }))
    .map_err(err)?;
    c.draw_series(LineSeries::new(
        r.series
            .iter()
            .filter_map(|p| p.success_pct.map(|s| (p.t_s, s))),
        &BLUE,
    ))
    .map_err(err)?
    .label("good %")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLUE));

    // Latency.
    let lat: Vec<(f64, f64, f64)> = r
        .timeline
        .iter()
        .filter_map(|w| w.latency.as_ref().map(|l| (w.t_s, l.p50_ms, l.p99_ms)))
        .collect();
    let max = lat.iter().map(|x| x.2).fold(1.0_f64, f64::max) * 1.5;
    let min = lat.iter().map(|x| x.1).fold(max, f64::min).max(0.01) / 1.5;
    let mut c = ChartBuilder::on(&bottom)
        .caption(
            "latency per window (ms, from intended send time)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..end, (min..max).log_scale())
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("time (s)")
        .y_desc("ms")
        .draw()
        .map_err(err)?;
    c.draw_series(
        spans
            .iter()
            .map(|(a, b, _)| Rectangle::new([(*a, min), (*b, max)], shade.filled())),
    )
    .map_err(err)?;
    c.draw_series(LineSeries::new(lat.iter().map(|x| (x.0, x.1)), &GREEN))
        .map_err(err)?
        .label("p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], GREEN));
    c.draw_series(LineSeries::new(lat.iter().map(|x| (x.0, x.2)), &RED))
        .map_err(err)?
        .label("p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], RED));
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
