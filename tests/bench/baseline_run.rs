//! `--baseline`: the workload of phases 1, 2, 3 and 5 (burst, fill, steady state, lapse), at
//! the same sizes and on the same timeline, against `lapse-baseline` (tests/bench/baseline/)
//! on a sandbox of its own, so that lapse's run is not disturbed by it.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use lapse_api::v1alpha1::AccessGrant;
use serde::Serialize;
use serde_json::json;

use crate::figures::{Figures, Lease, figures};
use crate::harness::{Bench, Call, rss_kib};
use crate::plan::{Plan, in_burst};
use crate::{Config, secs};
use lapse_e2e::tail;

/// Where the baseline records its role assignments (tests/bench/baseline/main.rs).
const ASSIGNMENTS_ANNOTATION: &str = "baseline.lapse.dev/role-assignments";
const NAMESPACE: &str = "bench";

/// The baseline's run: its figures, and what did not go to plan.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BaselineRun {
    pub resync_secs: u64,
    pub concurrency: u64,
    pub figures: Figures,
    /// Waits that ran out (the run goes on: the timeline is fixed by the leases' ends).
    pub notes: Vec<String>,
}

/// A running `lapse-baseline`, killed when dropped.
#[derive(Debug)]
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(b: &Bench, cfg: &Config) -> anyhow::Result<Process> {
    let log = std::fs::File::create(b.dir.join("baseline.log"))?;
    let child = Command::new(lapse_e2e::binary("lapse-baseline")?)
        .args(["--namespace", NAMESPACE])
        .envs(&b.azure)
        .env("KUBECONFIG", &b.kubeconfig)
        .env(
            "LAPSE_BASELINE_RESYNC_SECS",
            cfg.baseline_resync_secs.to_string(),
        )
        .env(
            "LAPSE_BASELINE_CONCURRENCY",
            cfg.baseline_concurrency.to_string(),
        )
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting lapse-baseline")?;
    Ok(Process(child))
}

/// When the baseline began its first pass (it logs "lapse-baseline started" just before).
async fn started(b: &Bench, process: &mut Process) -> anyhow::Result<Instant> {
    let log = b.dir.join("baseline.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("lapse-baseline started") {
            return Ok(Instant::now());
        }
        if let Some(status) = process.0.try_wait()? {
            anyhow::bail!("lapse-baseline exited with {status}:\n{}", tail(&text, 20));
        }
        if Instant::now() > deadline {
            anyhow::bail!("lapse-baseline did not start in 60s:\n{}", tail(&text, 20));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Grant name → the role assignments the baseline recorded on it (lower case, as sim-azure logs
/// paths).
fn recorded(grants: &[AccessGrant]) -> HashMap<String, String> {
    grants
        .iter()
        .filter_map(|g| {
            let ids = g
                .metadata
                .annotations
                .as_ref()?
                .get(ASSIGNMENTS_ANNOTATION)?;
            Some((
                g.metadata.name.clone()?,
                ids.split(',').next()?.to_ascii_lowercase(),
            ))
        })
        .collect()
}

/// Lists the grants every `every` until `done(annotated count)` or `timeout`, adding every
/// record seen to `records`; a note when the wait ran out.
async fn wait_records(
    b: &Bench,
    records: &mut HashMap<String, String>,
    audit: &mut AuditBook,
    what: &str,
    timeout: Duration,
    every: Duration,
    done: impl Fn(usize) -> bool,
) -> anyhow::Result<Option<String>> {
    let t = Instant::now();
    loop {
        let rec = recorded(&b.list_grants(NAMESPACE).await?);
        let count = rec.len();
        records.extend(rec);
        audit.take_every(b, AUDIT_EVERY).await?;
        if done(count) {
            println!("baseline {what} after {:.1}s", t.elapsed().as_secs_f64());
            return Ok(None);
        }
        if t.elapsed() > timeout {
            let note = format!(
                "{what}: not after {:.0}s ({count} grants had a role assignment recorded)",
                timeout.as_secs_f64(),
            );
            println!("baseline: {note}");
            return Ok(Some(note));
        }
        tokio::time::sleep(every).await;
    }
}

/// Audit snapshots merged: sim-azure keeps the last 100,000 requests, and the baseline's polls
/// can pass that in one run.
#[derive(Debug, Default)]
struct AuditBook {
    calls: Vec<Call>,
    seen: HashSet<(DateTime<Utc>, String, String, String, u16)>,
    last: Option<Instant>,
}

/// How often a long wait reads the audit log: the baseline sends at most about 135 requests a
/// second (ARM's read refill of 25/s in each of 5 subscriptions, and sleeping 429s), so a
/// minute is far from 100,000.
const AUDIT_EVERY: Duration = Duration::from_secs(60);

impl AuditBook {
    /// Takes a snapshot when the last is older than `every`.
    async fn take_every(&mut self, b: &Bench, every: Duration) -> anyhow::Result<()> {
        if self.last.is_none_or(|t| t.elapsed() >= every) {
            self.take(b).await?;
        }
        Ok(())
    }

    async fn take(&mut self, b: &Bench) -> anyhow::Result<()> {
        self.last = Some(Instant::now());
        for c in b.audit().await? {
            let key = (
                c.time,
                c.method.clone(),
                c.path.clone(),
                c.query.clone(),
                c.status,
            );
            if self.seen.insert(key) {
                self.calls.push(c);
            }
        }
        Ok(())
    }
}

pub async fn run(cfg: &Config) -> anyhow::Result<BaselineRun> {
    let n = cfg.grants;
    println!();
    println!(
        "baseline: the same workload against lapse-baseline (resync every {}s, {} requests at \
         once), on a sandbox of its own",
        cfg.baseline_resync_secs, cfg.baseline_concurrency
    );
    let b = Bench::start(cfg.subscriptions, "baseline").await?;
    let subs = b.subscriptions.clone();
    b.kubectl(&["create", "namespace", NAMESPACE])?;
    let principals = b.principals(n, cfg.parallel).await?;
    b.admin(
        reqwest::Method::PUT,
        "/admin/delays",
        Some(json!({"latencyMs": cfg.latency_ms})),
    )
    .await?;
    let mut process = spawn(&b, cfg)?;
    let pid = process.0.id();
    let mut notes = Vec::new();
    let mut audit = AuditBook::default();
    let resync = Duration::from_secs(cfg.baseline_resync_secs);
    // The burst lands half-way between two passes: a fixed resync's phase against the
    // workload is arbitrary, and half an interval is its average.
    let first_pass = started(&b, &mut process).await?;
    tokio::time::sleep_until((first_pass + resync / 2).into()).await;

    let plan = Plan::new(cfg, Utc::now());
    let grants = plan.grants(&principals, &subs);

    // 1. Burst; 2. fill: both waited for until the baseline has recorded an assignment on each.
    let mut applied: HashMap<String, DateTime<Utc>> = b
        .create_grants(NAMESPACE, grants[..cfg.burst].to_vec(), cfg.parallel)
        .await?
        .into_iter()
        .collect();
    let burst = cfg.burst;
    // Every assignment the baseline recorded, by grant: it removes a record once deleted.
    let mut records = HashMap::new();
    let note = wait_records(
        &b,
        &mut records,
        &mut audit,
        "burst: all recorded",
        Duration::from_secs_f64(plan.burst_ideal * 3.0 + 120.0) + 2 * resync,
        Duration::from_millis(500),
        |k| k >= burst,
    )
    .await?;
    notes.extend(note);
    applied.extend(
        b.create_grants(NAMESPACE, grants[cfg.burst..].to_vec(), cfg.parallel)
            .await?,
    );
    let note = wait_records(
        &b,
        &mut records,
        &mut audit,
        "fill: all recorded",
        Duration::from_secs_f64(plan.fill_ideal * 3.0 + 180.0) + 2 * resync,
        Duration::from_secs(1),
        |k| k >= n,
    )
    .await?;
    notes.extend(note);
    audit.take(&b).await?;

    // 3. Steady state.
    tokio::time::sleep(cfg.steady_window()).await;
    let rss = rss_kib(pid);
    println!(
        "baseline steady: lapse-baseline RSS {} MiB (peak {} MiB)",
        crate::report::mib(rss.0),
        crate::report::mib(rss.1)
    );
    records.extend(recorded(&b.list_grants(NAMESPACE).await?));
    audit.take(&b).await?;

    // 5. Lapse: until the baseline has removed every record (it does after ARM's DELETE).
    let wait = (plan.lapse_end - Utc::now()).to_std().unwrap_or_default()
        + Duration::from_secs(300)
        + 10 * resync;
    let note = wait_records(
        &b,
        &mut records,
        &mut audit,
        "lapse: every assignment deleted",
        wait,
        Duration::from_secs(1),
        |k| k == 0,
    )
    .await?;
    notes.extend(note);
    let lapsed_at = Utc::now();
    println!(
        "baseline lapse: done {:.1}s after the last lease end",
        secs(lapsed_at - plan.lapse_end)
    );
    audit.take(&b).await?;
    drop(process);

    let leases: Vec<Lease> = grants
        .iter()
        .zip(&plan.ends)
        .filter_map(|(g, end)| {
            let name = g.metadata.name.as_deref()?;
            Some(Lease {
                applied: *applied.get(name)?,
                end: *end,
                burst: in_burst(name, cfg.burst),
                assignment: records.get(name).cloned(),
            })
        })
        .collect();
    Ok(BaselineRun {
        resync_secs: cfg.baseline_resync_secs,
        concurrency: cfg.baseline_concurrency,
        figures: figures(&audit.calls, &leases, lapsed_at, rss),
        notes,
    })
}
