//! Empirical CDF plots as hand-written SVG: one curve per system, a log-scale time axis (the
//! runs differ by orders of magnitude), gridlines at p50 and p99, a legend.

use std::fmt::Write as _;

/// One curve: its name, colour and values (any order), out of `total` (more than the values
/// when some never happened, e.g. leases never revoked: the curve then stops short of 100%).
#[derive(Debug)]
pub struct Series<'a> {
    pub label: &'a str,
    pub colour: &'a str,
    pub values: &'a [f64],
    pub total: usize,
}

const W: f64 = 760.0;
const H: f64 = 500.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 24.0;
/// Room for the title and, under it, the legend.
const TOP: f64 = 84.0;
const BOTTOM: f64 = 62.0;
/// The smallest time the axis shows (1 ms): shorter values sit on its left edge.
const FLOOR_EXP: i32 = -3;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn seconds_label(exp: i32) -> String {
    match exp {
        e if e < 0 => format!("{} ms", 10f64.powi(e + 3).round()),
        e => format!("{} s", 10f64.powi(e).round()),
    }
}

/// A minor tick's label: "20 ms", "5 s".
fn seconds_value(v: f64) -> String {
    if v < 1.0 {
        format!("{} ms", (v * 1000.0).round())
    } else {
        format!("{} s", v.round())
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    sorted
        .get((((last as f64) * p).round() as usize).min(last))
        .copied()
}

/// An SVG document: the CDF of each series over a log10 axis of seconds.
pub fn cdf(title: &str, x_label: &str, series: &[Series<'_>]) -> String {
    let sorted: Vec<Vec<f64>> = series
        .iter()
        .map(|s| {
            let mut v: Vec<f64> = s.values.iter().copied().filter(|x| x.is_finite()).collect();
            v.sort_by(f64::total_cmp);
            v
        })
        .collect();
    let max = sorted
        .iter()
        .filter_map(|v| v.last())
        .fold(1e-3_f64, |a, b| a.max(*b));
    let min = sorted
        .iter()
        .filter_map(|v| v.first())
        .fold(max, |a, b| a.min(*b))
        .max(10f64.powi(FLOOR_EXP));
    let lo = (min.log10().floor() as i32).max(FLOOR_EXP);
    let hi = (max.log10().ceil() as i32).max(lo + 1);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x_of = |v: f64| {
        let e = v.max(10f64.powi(lo)).log10();
        LEFT + (e - f64::from(lo)) / f64::from(hi - lo) * pw
    };
    let y_of = |p: f64| TOP + (1.0 - p) * ph;

    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>
"##,
        W / 2.0,
        escape(title)
    );
    // Gridlines: decades (with their minor ticks) and quarters.
    for e in lo..=hi {
        let x = x_of(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ccc"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 18.0,
            seconds_label(e)
        );
        if e < hi {
            for m in 2..10 {
                let v = f64::from(m) * 10f64.powi(e);
                let x = x_of(v);
                let _ = writeln!(
                    s,
                    r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/>"##,
                    TOP + ph
                );
                // A short axis has room for 2x and 5x labels.
                if hi - lo <= 2 && (m == 2 || m == 5) {
                    let _ = writeln!(
                        s,
                        r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#666" font-size="10">{}</text>"##,
                        TOP + ph + 16.0,
                        seconds_value(v)
                    );
                }
            }
        }
    }
    for q in 0..=4 {
        let p = f64::from(q) / 4.0;
        let y = y_of(p);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ccc"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}%</text>"##,
            LEFT + pw,
            LEFT - 8.0,
            y + 4.0,
            q * 25
        );
    }
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        let y = y_of(p);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#888" stroke-dasharray="4 4"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#666">{name}</text>"##,
            LEFT + pw,
            LEFT + pw - 4.0,
            y - 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#333"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>
<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">share of leases at or below</text>"##,
        LEFT + pw / 2.0,
        H - 16.0,
        escape(x_label),
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // The curves: a step up at each value; points closer than half a pixel merge.
    for (serie, v) in series.iter().zip(&sorted) {
        if v.is_empty() {
            continue;
        }
        let n = serie.total.max(v.len()) as f64;
        let mut d = format!("M{:.1},{:.1}", x_of(v[0]), y_of(0.0));
        let mut last_x = x_of(v[0]);
        for (i, x) in v.iter().enumerate() {
            let px = x_of(*x);
            if px - last_x >= 0.5 {
                let _ = write!(d, "H{px:.1}");
                last_x = px;
            }
            let _ = write!(d, "V{:.1}", y_of((i + 1) as f64 / n));
        }
        let _ = writeln!(
            s,
            r##"<path d="{d}" fill="none" stroke="{}" stroke-width="2"/>"##,
            serie.colour
        );
    }
    // The legend, between the title and the plot, where no curve can hide it.
    for (i, (serie, v)) in series.iter().zip(&sorted).enumerate() {
        let y = 46.0 + 18.0 * i as f64;
        let text = match (percentile(v, 0.5), percentile(v, 0.99)) {
            (Some(p50), Some(p99)) if v.len() >= serie.total => format!(
                "{} (n={}, p50 {p50:.3} s, p99 {p99:.3} s)",
                serie.label,
                v.len()
            ),
            (Some(_), Some(_)) => format!(
                "{} ({} of {} measured, the rest never happened; max {:.3} s)",
                serie.label,
                v.len(),
                serie.total,
                v.last().copied().unwrap_or_default()
            ),
            _ => format!("{} (no data)", serie.label),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            LEFT + 10.0,
            LEFT + 34.0,
            serie.colour,
            LEFT + 40.0,
            y + 4.0,
            escape(&text)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_has_a_curve_and_a_legend_per_series_and_spans_the_values() {
        let fast = [0.2, 0.4, 0.5];
        let slow = [3.0, 9.0, 42.0];
        let svg = cdf(
            "overstay",
            "seconds",
            &[
                Series {
                    label: "lapse",
                    colour: "#1f77b4",
                    values: &fast,
                    total: 3,
                },
                Series {
                    label: "baseline <naive>",
                    colour: "#d62728",
                    values: &slow,
                    total: 4,
                },
            ],
        );
        assert_eq!(svg.matches("<path ").count(), 2);
        assert!(svg.contains("lapse (n=3, p50 0.400 s, p99 0.500 s)"));
        // One of the baseline's four never happened: its curve stops at 75%.
        assert!(svg.contains("baseline &lt;naive&gt; (3 of 4 measured"));
        assert!(svg.contains(&format!("V{:.1}", TOP + 0.25 * (H - TOP - BOTTOM))));
        // The axis runs from 100 ms to 100 s.
        assert!(svg.contains(">100 ms<") && svg.contains(">100 s<"));
        assert!(svg.ends_with("</svg>\n"));
    }

    #[test]
    fn an_empty_series_draws_no_curve() {
        let svg = cdf(
            "x",
            "s",
            &[Series {
                label: "b",
                colour: "red",
                values: &[],
                total: 0,
            }],
        );
        assert_eq!(svg.matches("<path ").count(), 0);
        assert!(svg.contains("b (no data)"));
    }
}
