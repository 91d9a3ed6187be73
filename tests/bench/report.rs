//! What the run measured, from sim-azure's request log and the operator, as numbers and then
//! as docs/architecture.md's table of targets: target against measured.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::harness::Call;
use crate::{Config, WRITE_BURST, WRITE_REFILL, between, secs};

pub fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50, p99, max of `v`.
struct Summary {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn summarise(mut v: Vec<f64>) -> Summary {
    v.sort_by(f64::total_cmp);
    Summary {
        n: v.len(),
        p50: percentile(&v, 0.5),
        p99: percentile(&v, 0.99),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

fn line(name: &str, s: &Summary, unit: &str) {
    println!(
        "{name:<46} n={:<6} p50={:>8.3}{unit} p99={:>8.3}{unit} max={:>8.3}{unit}",
        s.n, s.p50, s.p99, s.max
    );
}

/// Everything the run gathered.
pub struct Inputs<'a> {
    pub cfg: &'a Config,
    pub subs: &'a [String],
    pub audit: &'a [Call],
    /// Apply → Ready of the burst's grants, seconds.
    pub activation: Vec<f64>,
    /// Burst window, and the time until all were Active.
    pub burst: (DateTime<Utc>, DateTime<Utc>, Duration),
    pub steady: (DateTime<Utc>, DateTime<Utc>),
    /// Kill instant; restart → ready; restart → every grant decided.
    pub restart: (DateTime<Utc>, Duration, Duration),
    /// Role assignment ID (lower case) → lease end.
    pub expiry: &'a HashMap<String, DateTime<Utc>>,
    pub rss: Rss,
}

/// The operator's memory, KiB.
#[derive(Debug)]
pub struct Rss {
    pub idle: Option<u64>,
    /// With every lease live: RSS and its peak.
    pub active: Option<u64>,
    pub active_peak: Option<u64>,
}

/// One row of the final table.
#[derive(Debug, serde::Serialize)]
pub struct Row {
    pub measure: String,
    pub target: &'static str,
    pub measured: String,
    pub met: Option<bool>,
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "-",
    }
}

/// Prints what phases 1 to 5 measured; their rows of the table.
pub fn numbers(i: &Inputs<'_>) -> Vec<Row> {
    let cfg = i.cfg;
    let n = cfg.grants;
    let audit = i.audit;
    let mut rows = Vec::new();
    println!();

    // Activation burst: PUTs in the first subscription while the burst ran.
    let sub0 = i
        .subs
        .first()
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let burst_calls: Vec<&Call> = between(audit, i.burst.0, i.burst.1)
        .into_iter()
        .filter(|c| c.method == "PUT" && c.is_assignment() && c.subscription() == Some(&sub0))
        .collect();
    let puts: Vec<&&Call> = burst_calls.iter().filter(|c| c.ok()).collect();
    let throttled = burst_calls.iter().filter(|c| c.status == 429).count();
    let span = match (
        puts.iter().map(|c| c.time).min(),
        puts.iter().map(|c| c.acked).max(),
    ) {
        (Some(a), Some(b)) => secs(b - a),
        _ => 0.0,
    };
    let budget = WRITE_BURST + WRITE_REFILL * span;
    let used = 100.0 * puts.len() as f64 / budget.max(1.0);
    let act = summarise(i.activation.clone());
    // The earliest the 99th percentile grant's PUT could go, at ARM's write rate.
    let bound = ((0.99 * cfg.burst as f64).ceil() - WRITE_BURST).max(0.0) / WRITE_REFILL;
    line("activation of the burst (apply -> Ready)", &act, "s");
    println!(
        "{:<46} {} PUTs in {span:.1}s: budget {budget:.0}, used {used:.0}%; {throttled} 429s; \
         all Active after {:.1}s; the budget's own p99 bound {bound:.1}s",
        "burst write budget (one subscription)",
        puts.len(),
        i.burst.2.as_secs_f64()
    );
    rows.push(Row {
        measure: format!("activation, burst of {}", cfg.burst),
        target: "p99 bounded by ARM write budget (>= 90% used)",
        measured: format!(
            "p99 {:.1}s (budget bound {bound:.1}s), {used:.0}% of budget",
            act.p99
        ),
        // Within ARM's initial burst the budget binds nothing: no verdict.
        met: (puts.len() as f64 > WRITE_BURST).then_some(used >= 90.0),
    });

    // Overstay: each role assignment's DELETE acknowledged, against its lease's end.
    let mut ends: Vec<(DateTime<Utc>, f64)> = audit
        .iter()
        .filter(|c| c.method == "DELETE" && c.is_assignment() && c.ok())
        .filter_map(|c| {
            let end = i.expiry.get(&c.path)?;
            Some((*end, secs(c.acked - *end)))
        })
        .collect();
    ends.sort_by_key(|(end, _)| *end);
    let first_tenth: Vec<f64> = ends
        .iter()
        .take((ends.len() / 10).max(1))
        .map(|e| e.1)
        .collect();
    let overstay = summarise(ends.iter().map(|e| e.1).collect());
    let early = summarise(first_tenth);
    line(
        "overstay (lease end -> DELETE acknowledged)",
        &overstay,
        "s",
    );
    line("  the first tenth to end (90%+ still live)", &early, "s");
    rows.push(Row {
        measure: format!("overstay, {n} live leases"),
        target: "p99 <= 1 s, max <= 3 s",
        measured: format!(
            "p99 {:.3}s, max {:.3}s ({} deletes)",
            overstay.p99, overstay.max, overstay.n
        ),
        met: Some(overstay.n == n && overstay.p99 <= 1.0 && overstay.max <= 3.0),
    });

    // Writes per object over the whole run.
    let mut per_object: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut refused = 0usize;
    for c in audit.iter().filter(|c| c.is_assignment()) {
        if !c.ok() {
            if c.method != "GET" {
                refused += 1;
            }
            continue;
        }
        let e = per_object.entry(c.path.as_str()).or_default();
        match c.method.as_str() {
            "PUT" => e.0 += 1,
            "DELETE" => e.1 += 1,
            _ => {}
        }
    }
    let objects = per_object.len();
    let total_puts: usize = per_object.values().map(|v| v.0).sum();
    let total_deletes: usize = per_object.values().map(|v| v.1).sum();
    let exact = per_object.values().filter(|v| **v == (1, 1)).count();
    println!(
        "{:<46} {objects} objects: {total_puts} PUTs, {total_deletes} DELETEs; {exact} with exactly \
         1 + 1; {refused} attempts refused (429)",
        "ARM writes per lease",
    );
    rows.push(Row {
        measure: "ARM writes per grant lifecycle".into(),
        target: "1 PUT + 1 DELETE per object",
        measured: format!(
            "{:.3} PUT + {:.3} DELETE per object ({exact}/{objects} exact)",
            total_puts as f64 / objects.max(1) as f64,
            total_deletes as f64 / objects.max(1) as f64
        ),
        met: Some(objects == n && exact == objects),
    });

    // Steady state.
    let steady = between(audit, i.steady.0, i.steady.1);
    let writes = steady
        .iter()
        .filter(|c| c.is_arm() && c.method != "GET")
        .count();
    let reads = steady
        .iter()
        .filter(|c| c.is_arm() && c.method == "GET")
        .count();
    let mut lists: BTreeMap<&str, (usize, usize)> =
        i.subs.iter().map(|s| (s.as_str(), (0, 0))).collect();
    for c in steady.iter().filter(|c| c.is_assignment_list()) {
        let sub = c.subscription().unwrap_or_default();
        if let Some(e) = lists
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(sub))
            .map(|(_, v)| v)
        {
            e.1 += 1;
            if !c.query.contains("skiptoken") {
                e.0 += 1;
            }
        }
    }
    let intervals = (secs(i.steady.1 - i.steady.0) / cfg.sweep_secs as f64).max(1.0);
    let worst = lists.values().map(|v| v.0).max().unwrap_or(0) as f64 / intervals;
    let pages: usize = lists.values().map(|v| v.1).sum();
    println!(
        "{:<46} {writes} writes, {reads} reads in {:.0}s ({intervals:.0} sweep intervals) with \
         {n} live leases; lists per subscription {:?}, {pages} pages",
        "steady state",
        secs(i.steady.1 - i.steady.0),
        lists.values().map(|v| v.0).collect::<Vec<_>>()
    );
    rows.push(Row {
        measure: format!("steady state, {n} active: writes"),
        target: "0",
        measured: writes.to_string(),
        met: Some(writes == 0),
    });
    rows.push(Row {
        measure: format!("steady state, {n} active: reads"),
        target: "<= 1 list / subscription / sweep",
        measured: format!(
            "{worst:.1} lists / subscription / sweep ({reads} GETs, {pages} pages, {intervals:.0} sweeps)"
        ),
        met: Some(worst <= 1.0),
    });

    // Restart.
    let (kill_at, ready, all) = i.restart;
    let after_kill: Vec<&Call> = audit
        .iter()
        .filter(|c| c.time >= kill_at && c.is_assignment() && c.method == "PUT")
        .collect();
    let dup = after_kill.iter().filter(|c| c.ok()).count();
    println!(
        "{:<46} ready {:.1}s, every grant reconciled {:.1}s after the restart; {dup} PUTs after \
         the kill ({} attempts)",
        "restart recovery (SIGKILL)",
        ready.as_secs_f64(),
        all.as_secs_f64(),
        after_kill.len()
    );
    // Which, and when: a duplicate is a bug to chase, and its timing says where.
    for c in after_kill.iter().take(5) {
        println!(
            "  PUT {:+.1}s after the kill, {}: {}",
            secs(c.time - kill_at),
            c.status,
            c.path
        );
    }
    rows.push(Row {
        measure: format!("restart recovery, {n} active"),
        target: "all reconciled <= 30 s, 0 duplicate PUTs",
        measured: format!(
            "{:.1}s (ready {:.1}s), {dup} duplicate PUTs ({} attempts)",
            all.as_secs_f64(),
            ready.as_secs_f64(),
            after_kill.len()
        ),
        met: Some(all <= Duration::from_secs(30) && after_kill.is_empty()),
    });

    // Memory.
    let Rss {
        idle,
        active,
        active_peak: active_hwm,
    } = i.rss;
    println!(
        "{:<46} idle {} MiB; {n} active leases {} MiB (peak {} MiB)",
        "operator RSS",
        mib(idle),
        mib(active),
        mib(active_hwm)
    );
    rows.push(Row {
        measure: format!("operator RSS, {n} grants"),
        target: "<= 64 MiB",
        measured: format!("{} MiB (peak {} MiB)", mib(active), mib(active_hwm)),
        met: active.map(|k| k <= 64 * 1024),
    });
    println!(
        "{:<46} {}",
        "429s answered over the run",
        audit.iter().filter(|c| c.status == 429).count()
    );

    rows
}

/// The memory-at-scale row: `count` grants held, RSS and peak (KiB), Azure writes meanwhile.
pub fn held_row(count: usize, rss: Option<u64>, hwm: Option<u64>, writes: usize) -> Row {
    Row {
        measure: format!("operator RSS, {count} grants"),
        target: "<= 400 MiB",
        measured: format!(
            "{} MiB (peak {} MiB), {writes} Azure writes",
            mib(rss),
            mib(hwm)
        ),
        met: rss.map(|k| k <= 400 * 1024),
    }
}

/// Phase 5b's row: schedule requests per object of `objects` PIM leases, next to plain mode's
/// one PUT and one DELETE; role assignment writes lapse made outside PIM (there should be none)
/// and refusals.
pub fn pim_row(objects: usize, calls: &[&Call], active_s: f64, lapsed_s: f64) -> Row {
    let requests = calls
        .iter()
        .filter(|c| c.method == "PUT" && c.path.contains("/roleassignmentschedulerequests/"))
        .collect::<Vec<_>>();
    let ok = requests.iter().filter(|c| c.ok()).count();
    let refused = requests.len() - ok;
    let plain = calls
        .iter()
        .filter(|c| c.is_assignment() && c.method != "GET")
        .count();
    let per_object = ok as f64 / objects.max(1) as f64;
    println!(
        "{:<46} {objects} leases: {ok} schedule requests ({per_object:.3} per object), {refused} \
         refused, {plain} plain role assignment writes; all Active {active_s:.1}s after apply, \
         all Expired {lapsed_s:.1}s after their end",
        "ARM writes per PIM lease (azure.expiry: PIM)",
    );
    Row {
        measure: "ARM writes per PIM lease".into(),
        target: "AdminAssign + AdminRemove per object",
        measured: format!(
            "{per_object:.3} requests per object ({ok} for {objects}; plain mode 1 PUT + 1 \
             DELETE), {refused} refused, Expired {lapsed_s:.1}s after the end"
        ),
        met: Some(ok == 2 * objects && refused == 0 && plain == 0),
    }
}

/// Phase 7's row: Activity Log events read per second, and the operator's RSS before, at its
/// peak during and after the read (KiB).
pub fn logs_row(
    events: u64,
    secs: f64,
    before: Option<u64>,
    peak: Option<u64>,
    after: Option<u64>,
    throttled: u64,
) -> Row {
    let rate = events as f64 / secs.max(0.001);
    println!(
        "{:<46} {events} events in {secs:.1}s ({rate:.0}/s, 1,000 a page, background reads \
         within ARM's read budget); operator RSS {} MiB before, {} MiB peak, {} MiB after; \
         {throttled} throttled responses",
        "usage log ingestion (Activity Log)",
        mib(before),
        mib(peak),
        mib(after)
    );
    let grown = match (before, peak) {
        (Some(b), Some(p)) => Some(p.saturating_sub(b)),
        _ => None,
    };
    Row {
        measure: format!("usage log ingestion, {events} events"),
        target: "bounded memory (one page)",
        measured: format!(
            "{rate:.0} events/s; RSS {} MiB -> peak {} MiB (+{} MiB)",
            mib(before),
            mib(peak),
            mib(grown)
        ),
        // A page of 1,000 events is well under a MiB; 32 MiB allows the allocator its slack.
        met: grown.map(|g| g <= 32 * 1024),
    }
}

/// A row for a phase that could not finish.
/// The create flood's row (phase 6a): `measured` says what happened, `met` whether every grant
/// was Scheduled with no storm of refused writes.
pub fn flood_row(n: usize, measured: String, met: bool) -> Row {
    Row {
        measure: format!("create flood, {n} grants"),
        target: "all Scheduled, no 422 storm",
        measured,
        met: Some(met),
    }
}

pub fn failed_row(measure: String, target: &'static str, why: String) -> Row {
    Row {
        measure,
        target,
        measured: why,
        met: Some(false),
    }
}

/// docs/architecture.md's table of targets.
pub fn table(cfg: &Config, wall: Duration, rows: &[Row]) {
    let n = cfg.grants;
    println!();
    println!(
        "The targets of docs/architecture.md at this run's scale ({n} grants, {} subscriptions, {} ms ARM latency); \
         wall time {:.0}s",
        cfg.subscriptions,
        cfg.latency_ms,
        wall.as_secs_f64()
    );
    let w0 = rows.iter().map(|r| r.measure.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.target.len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r.measured.len()).max().unwrap_or(0);
    println!(
        "| {:<w0$} | {:<w1$} | {:<w2$} | verdict |",
        "measure", "target", "measured"
    );
    println!(
        "|-{}-|-{}-|-{}-|---------|",
        "-".repeat(w0),
        "-".repeat(w1),
        "-".repeat(w2)
    );
    for r in rows {
        println!(
            "| {:<w0$} | {:<w1$} | {:<w2$} | {:<7} |",
            r.measure,
            r.target,
            r.measured,
            verdict(r.met)
        );
    }
}
