//! `--plot FILE.svg`: a hand-written SVG with two panels, no plotting library.
//!
//! - left: latency by percentile, the x axis in "nines" (0 = p0, 1 = p90, 2 = p99, 3 =
//!   p99.9, ...), so the tail is as readable as the median;
//! - right: completed requests per second over the run, in 100 ms buckets.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 400.0;
const PANEL_WIDTH: f64 = 400.0;
const PANEL_HEIGHT: f64 = 280.0;
const TOP: f64 = 60.0;
const LEFT_X: f64 = 70.0;
const RIGHT_X: f64 = 550.0;
/// Points on the percentile curve.
const CURVE_POINTS: usize = 200;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" axis maximum at or above `v` (1, 2 or 5 times a power of ten).
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let pow = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * pow >= v {
            return m * pow;
        }
    }
    10.0 * pow
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Frame, grid and tick labels of one panel; returns nothing, writes into `out`.
#[allow(clippy::too_many_arguments)]
fn axes(
    out: &mut String,
    x0: f64,
    title: &str,
    x_label: &str,
    y_label: &str,
    x_ticks: &[(f64, String)],
    y_max: f64,
) {
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{TOP}" width="{PANEL_WIDTH}" height="{PANEL_HEIGHT}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="14">{}</text>"##,
        x0 + PANEL_WIDTH / 2.0,
        TOP - 10.0,
        escape(title)
    );
    for (frac, label) in x_ticks {
        let x = x0 + frac * PANEL_WIDTH;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle" font-size="11">{}</text>"##,
            TOP + PANEL_HEIGHT,
            TOP + PANEL_HEIGHT + 15.0,
            escape(label)
        );
    }
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let y = TOP + PANEL_HEIGHT - PANEL_HEIGHT * i as f64 / 4.0;
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            x0 + PANEL_WIDTH,
            x0 - 5.0,
            y + 4.0,
            number(v)
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="12">{}</text>"##,
        x0 + PANEL_WIDTH / 2.0,
        TOP + PANEL_HEIGHT + 35.0,
        escape(x_label)
    );
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="12" transform="rotate(-90 {} {})">{}</text>"##,
        x0 - 50.0,
        TOP + PANEL_HEIGHT / 2.0,
        x0 - 50.0,
        TOP + PANEL_HEIGHT / 2.0,
        escape(y_label)
    );
}

fn polyline(out: &mut String, points: &[(f64, f64)], color: &str) {
    if points.is_empty() {
        return;
    }
    let mut p = String::new();
    for (x, y) in points {
        let _ = write!(p, "{x:.1},{y:.1} ");
    }
    let _ = writeln!(
        out,
        r##"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"##,
        p.trim_end()
    );
}

/// The SVG document: latency by percentile from `hist` (microseconds) and throughput over
/// time from `timeline` (completions per `bucket`; empty = no throughput panel data).
/// `elapsed` trims the last, partial bucket's rate.
pub(crate) fn svg(
    title: &str,
    hist: &Histogram<u64>,
    timeline: &[u32],
    bucket: Duration,
    elapsed: Option<Duration>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">"##
    );
    let _ = writeln!(out, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        out,
        r##"<text x="{}" y="22" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"##,
        WIDTH / 2.0,
        escape(title)
    );

    // Left: latency by percentile. The x axis runs to the nines the sample supports.
    let count = hist.len();
    let nines_max = if count > 1 {
        ((count as f64).log10().floor()).clamp(1.0, 5.0)
    } else {
        1.0
    };
    let mut curve = Vec::with_capacity(CURVE_POINTS + 1);
    for i in 0..=CURVE_POINTS {
        let nines = nines_max * i as f64 / CURVE_POINTS as f64;
        let percentile = 100.0 * (1.0 - 10f64.powf(-nines));
        let ms = hist.value_at_percentile(percentile) as f64 / 1000.0;
        curve.push((nines, ms));
    }
    let y_max = nice_max(hist.max() as f64 / 1000.0);
    let labels = ["p0", "p90", "p99", "p99.9", "p99.99", "p99.999"];
    let x_ticks: Vec<(f64, String)> = (0..=nines_max as usize)
        .map(|n| (n as f64 / nines_max, labels[n].to_string()))
        .collect();
    let left_title = format!(
        "latency by percentile (p50 {} ms, p99 {} ms, n = {count})",
        number(hist.value_at_percentile(50.0) as f64 / 1000.0),
        number(hist.value_at_percentile(99.0) as f64 / 1000.0)
    );
    axes(
        &mut out,
        LEFT_X,
        &left_title,
        "percentile",
        "latency (ms)",
        &x_ticks,
        y_max,
    );
    let points: Vec<(f64, f64)> = curve
        .iter()
        .map(|(n, ms)| {
            (
                LEFT_X + n / nines_max * PANEL_WIDTH,
                TOP + PANEL_HEIGHT - (ms / y_max).min(1.0) * PANEL_HEIGHT,
            )
        })
        .collect();
    polyline(&mut out, &points, "#1f77b4");

    // Right: throughput over time.
    let secs_per_bucket = bucket.as_secs_f64();
    let mut rates: Vec<f64> = timeline
        .iter()
        .map(|n| *n as f64 / secs_per_bucket)
        .collect();
    if let (Some(elapsed), Some(last)) = (elapsed, rates.last_mut()) {
        // The last bucket is partial: scale its rate to the time it covered.
        let covered = elapsed.as_secs_f64() - secs_per_bucket * (timeline.len() - 1) as f64;
        if covered > 0.0 && covered < secs_per_bucket {
            *last *= secs_per_bucket / covered;
        }
    }
    let duration_s = (rates.len() as f64 * secs_per_bucket).max(secs_per_bucket);
    let rate_max = nice_max(rates.iter().cloned().fold(0.0, f64::max));
    let x_ticks: Vec<(f64, String)> = (0..=4)
        .map(|i| (i as f64 / 4.0, number(duration_s * i as f64 / 4.0)))
        .collect();
    let mean = if duration_s > 0.0 {
        timeline.iter().map(|n| *n as f64).sum::<f64>()
            / elapsed.map_or(duration_s, |e| e.as_secs_f64())
    } else {
        0.0
    };
    let right_title = if timeline.is_empty() {
        "throughput over time (not recorded)".to_string()
    } else {
        format!("throughput over time (mean {} req/s)", number(mean))
    };
    axes(
        &mut out,
        RIGHT_X,
        &right_title,
        "time (s)",
        "requests/s (100 ms buckets)",
        &x_ticks,
        rate_max,
    );
    let points: Vec<(f64, f64)> = rates
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                RIGHT_X + (i as f64 + 0.5) * secs_per_bucket / duration_s * PANEL_WIDTH,
                TOP + PANEL_HEIGHT - (r / rate_max).min(1.0) * PANEL_HEIGHT,
            )
        })
        .collect();
    polyline(&mut out, &points, "#d62728");
    let _ = writeln!(out, "</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_is_well_formed_svg_with_both_panels() {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for us in 1..=10_000u64 {
            hist.record(100 + us % 900).unwrap();
        }
        let svg = svg(
            "put <binary>",
            &hist,
            &[10, 20, 30],
            Duration::from_millis(100),
            Some(Duration::from_millis(250)),
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("put &lt;binary&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("p99.9"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0.37), 0.5);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(0.0), 1.0);
    }
}
