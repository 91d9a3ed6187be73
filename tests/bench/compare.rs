//! The run's last words: lapse beside the baseline (when it ran), `report.json` with every figure
//! of both, and the CDF plots of overstay and activation.

use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::json;

use crate::Config;
use crate::baseline_run::BaselineRun;
use crate::figures::{Distribution, Figures};
use crate::report::{Row, mib};
use crate::svg::{Series, cdf};

#[derive(Debug)]
pub struct Report<'a> {
    pub cfg: &'a Config,
    pub wall_secs: f64,
    pub lapse: &'a Figures,
    /// lapse's own activation measure (apply → Ready), beside the Azure-side one.
    pub lapse_ready_activation: &'a Distribution,
    pub rows: &'a [Row],
    /// Phase 5c's figures, when it ran.
    pub synchronized: Option<&'a crate::synchronized::Synchronized>,
    /// `None` when not asked for; `Err` when it could not run.
    pub baseline: Option<&'a Result<BaselineRun, String>>,
}

/// Where report.json and the plots go: `LAPSE_BENCH_OUT`, else `lapse-bench/` in the cargo
/// target directory the binary was built in.
fn out_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LAPSE_BENCH_OUT") {
        return d.into();
    }
    // target/<profile>/lapse-bench → target/lapse-bench.
    let target = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.to_path_buf()))
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("lapse-bench")
}

fn seconds(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{s:.3} s"))
}

/// One line of the side-by-side table: measure, target, lapse, baseline.
type Line = (String, String, String, String);

/// The lines both runs measured; `b` is the baseline's column (None: not measured).
fn lines(cfg: &Config, l: &Figures, b: Option<&Figures>) -> Vec<Line> {
    let col = |f: &dyn Fn(&Figures) -> String| (f(l), b.map_or_else(|| "not measured".into(), f));
    let mut out = Vec::new();
    let mut push = |measure: String, target: &str, (lv, bv): (String, String)| {
        out.push((measure, target.to_owned(), lv, bv));
    };
    let n = cfg.grants;
    push(
        "overstay p50 (lease end -> DELETE acked)".into(),
        "-",
        col(&|f| seconds(f.overstay.p50)),
    );
    push(
        "overstay p99".into(),
        "<= 1 s",
        col(&|f| seconds(f.overstay.p99)),
    );
    push(
        "overstay max".into(),
        "<= 3 s",
        col(&|f| seconds(f.overstay.max)),
    );
    push(
        "leases never revoked / never activated".into(),
        "0 / 0",
        col(&|f| format!("{} / {}", f.unrevoked, f.never_activated)),
    );
    push(
        format!(
            "activation p99, burst of {} (apply -> PUT acked)",
            cfg.burst
        ),
        "bounded by ARM write budget",
        col(&|f| seconds(f.activation.p99)),
    );
    push(
        "ARM reads per lease".into(),
        "-",
        col(&|f| format!("{:.2} ({} GETs)", f.arm_reads_per_lease, f.arm_reads)),
    );
    push(
        "ARM writes per lease".into(),
        "1 PUT + 1 DELETE",
        col(&|f| {
            format!(
                "{:.2} ({} PUT + {} DELETE, {} refused)",
                f.arm_writes_per_lease, f.assignment_puts, f.assignment_deletes, f.writes_refused
            )
        }),
    );
    push(
        "throttled responses (429)".into(),
        "-",
        col(&|f| f.throttled.to_string()),
    );
    push(
        format!("RSS, {n} leases live"),
        "<= 64 MiB",
        col(&|f| format!("{} MiB (peak {} MiB)", mib(f.rss_kib), mib(f.rss_peak_kib))),
    );
    out
}

/// lapse's rows of phases the baseline does not run.
fn lapse_only(cfg: &Config, rows: &[Row]) -> Vec<Line> {
    let active_rss = format!("operator RSS, {} grants", cfg.grants);
    rows.iter()
        .filter(|r| {
            r.measure.starts_with("restart recovery")
                || r.measure.starts_with("ARM writes per PIM")
                || r.measure.starts_with("usage log ingestion")
                || (r.measure.starts_with("operator RSS, ") && r.measure != active_rss)
        })
        .map(|r| {
            (
                r.measure.clone(),
                r.target.to_owned(),
                r.measured.clone(),
                "n/a".to_owned(),
            )
        })
        .collect()
}

fn print_table(lines: &[Line]) {
    let w = |f: fn(&Line) -> &String, head: &str| {
        lines
            .iter()
            .map(|l| f(l).len())
            .max()
            .unwrap_or(0)
            .max(head.len())
    };
    let (w0, w1, w2, w3) = (
        w(|l| &l.0, "measure"),
        w(|l| &l.1, "target"),
        w(|l| &l.2, "lapse"),
        w(|l| &l.3, "baseline"),
    );
    println!(
        "| {:<w0$} | {:<w1$} | {:<w2$} | {:<w3$} |",
        "measure", "target", "lapse", "baseline"
    );
    println!(
        "|-{}-|-{}-|-{}-|-{}-|",
        "-".repeat(w0),
        "-".repeat(w1),
        "-".repeat(w2),
        "-".repeat(w3)
    );
    for (a, b, c, d) in lines {
        println!("| {a:<w0$} | {b:<w1$} | {c:<w2$} | {d:<w3$} |");
    }
}

/// Prints the side-by-side table (when the baseline was asked for), writes report.json and the
/// plots, and prints where they are.
pub fn report<'a>(r: &Report<'a>) -> anyhow::Result<()> {
    let baseline = r.baseline.and_then(|b| b.as_ref().ok());
    if let Some(b) = r.baseline {
        println!();
        println!(
            "lapse beside the baseline (lapse-baseline: resync every {}s, {} requests at once, \
             polls every grant, deletes in list order; same workload on a sandbox of its own)",
            r.cfg.baseline_resync_secs, r.cfg.baseline_concurrency
        );
        let mut all = lines(r.cfg, r.lapse, baseline.map(|b| &b.figures));
        all.extend(lapse_only(r.cfg, r.rows));
        print_table(&all);
        match b {
            Ok(run) => {
                for note in &run.notes {
                    println!("baseline: {note}");
                }
            }
            Err(e) => println!("baseline: not measured: {e}"),
        }
    }

    let dir = out_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let report = json!({
        "config": r.cfg,
        "wallSecs": r.wall_secs,
        "lapse": {
            "figures": r.lapse,
            "readyActivation": r.lapse_ready_activation,
            "rows": r.rows,
            "synchronized": r.synchronized,
        },
        "baseline": match r.baseline {
            None => serde_json::Value::Null,
            Some(Ok(run)) => serde_json::to_value(run)?,
            Some(Err(e)) => json!({"error": e}),
        },
    });
    let path = dir.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!();
    println!("report: {}", path.display());

    // Out of every lease (overstay) and every burst grant (activation): one that never got
    // there keeps its curve below 100%.
    let overstay = |f: &'a Figures| (&f.overstay, f.leases);
    let activation = |f: &'a Figures| (&f.activation, r.cfg.burst);
    let plots = [
        (
            "overstay.svg",
            "Overstay: lease end to DELETE acknowledged by ARM",
            "overstay (seconds, log scale)",
            overstay(r.lapse),
            baseline.map(|b| overstay(&b.figures)),
        ),
        (
            "activation.svg",
            "Activation of the burst: apply to PUT acknowledged by ARM",
            "activation (seconds, log scale)",
            activation(r.lapse),
            baseline.map(|b| activation(&b.figures)),
        ),
    ];
    for (file, title, x_label, (lapse, total), base) in plots {
        let mut series = vec![Series {
            label: "lapse",
            colour: "#1f77b4",
            values: &lapse.samples,
            total,
        }];
        if let Some((b, total)) = base {
            series.push(Series {
                label: "baseline (naive resync)",
                colour: "#d62728",
                values: &b.samples,
                total,
            });
        }
        let path = dir.join(file);
        std::fs::write(&path, cdf(title, x_label, &series))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("plot: {}", path.display());
    }
    Ok(())
}
