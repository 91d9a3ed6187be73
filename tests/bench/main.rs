//! `make bench`: the operator against the sandbox at the scale of docs/architecture.md's targets, measuring every
//! target in one run and printing target against measured. Asserts nothing.
//!
//! One run, in phases (docs/testing.md "## Benchmark"):
//! 1. burst: `LAPSE_BENCH_BURST` (1,000) grants at once, all in one subscription: activation
//!    (apply → Ready) and how much of ARM's write budget (200 + 10/s) the PUTs used;
//! 2. fill: the rest of `LAPSE_BENCH_GRANTS` (10,000), spread over `LAPSE_BENCH_SUBSCRIPTIONS`
//!    (5) subscriptions so none nears ARM's 4,000 role assignments;
//! 3. steady state: two sweep intervals with every lease live: ARM writes and lists; RSS;
//! 4. restart: SIGKILL, restart, time until every grant is decided again by the new process,
//!    and PUTs after the kill (each one a duplicate);
//! 5. lapse: every lease ends at its `window.notAfter`, staggered at `LAPSE_BENCH_END_RATE`
//!    (9) a second per subscription, inside ARM's delete budget: overstay, writes per object;
//!    then (5b) Azure-enforced expiry: `LAPSE_BENCH_PIM_GRANTS` (200) leases under a policy
//!    with `azure.expiry: PIM` (the sandbox's PIM minimum shortened to 10 s), apply to lapse:
//!    schedule requests per object next to plain mode's 1 PUT + 1 DELETE; then (5c) synchronized
//!    expiry: `LAPSE_BENCH_SYNC_GRANTS` (2,000) leases in one subscription all ending in the
//!    same second, beyond ARM's delete budget: overstay, how early leases ended against what the
//!    budget forces, and whether status and audit lines say so (it runs after phase 7, so
//!    that phase reads the log under the conditions it always did);
//! 6. memory at scale: grants whose window opens in 30 days, up to `LAPSE_BENCH_RSS_GRANTS`
//!    (10 × grants) in all: held without any Azure call; RSS;
//! 7. usage evidence: `LAPSE_BENCH_LOG_EVENTS` (1,000,000) Activity Log events in one
//!    subscription (sim-azure's synthetic events, over the last 10 minutes), read by the
//!    operator restarted with `--usage-activity-log`: events per second and RSS while it reads
//!    (docs/usage.md). It runs before 6a and 6, on the 10,000 ended grants: a restart with
//!    100,000 grants in the cache outlasted the wait for readiness. The operator is restarted
//!    with the bench's own settings after it.
//!
//! Sandbox only: it refuses `LAPSE_E2E_TARGET=external`.

mod baseline_run;
mod compare;
mod figures;
mod flood;
mod harness;
mod plan;
mod report;
mod svg;
mod synchronized;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use lapse_api::v1alpha1::{
    AccessGrant, AccessGrantSpec, ConditionStatus, IdentityRef, ObjectIdRef, RoleRequest, Window,
};
use serde_json::json;

use harness::{Bench, Call, Metrics, RESOURCE_GROUP, rss_kib};
use plan::Plan;
use report::mib;

const USAGE: &str = "\
lapse-bench: the operator against the sandbox at the scale of docs/architecture.md's targets;
prints target against measured, asserts nothing (docs/testing.md, \"Benchmark\").

Usage: lapse-bench [--baseline]

  --baseline   also run the burst, fill, steady state and lapse phases against lapse-baseline,
               a naive resync reconciler, on a sandbox of its own, and print both side by side
               (also LAPSE_BENCH_BASELINE=1)

Writes report.json, overstay.svg and activation.svg to LAPSE_BENCH_OUT, by default to
lapse-bench/ in the cargo target directory the binary was built in
($CARGO_TARGET_DIR/lapse-bench).

Environment (defaults): LAPSE_BENCH_GRANTS (10000), LAPSE_BENCH_BURST (1000),
LAPSE_BENCH_SUBSCRIPTIONS (5), LAPSE_BENCH_RSS_GRANTS (10 x grants; 0 or <= grants skips),
LAPSE_BENCH_LATENCY_MS (50), LAPSE_BENCH_SWEEP_SECS (20), LAPSE_BENCH_END_RATE (9),
LAPSE_BENCH_CONCURRENCY (64), LAPSE_BENCH_CLIENTS (32), LAPSE_BENCH_BATCH (5000),
LAPSE_BENCH_STALL_SECS (90), LAPSE_BENCH_PIM_GRANTS (200; 0 skips),
LAPSE_BENCH_SYNC_GRANTS (2000; 0 skips),
LAPSE_BENCH_LOG_EVENTS (1000000; 0 skips), LAPSE_BENCH_OPERATOR_ENV (K=V,K=V),
LAPSE_BENCH_OPERATOR (the operator binary; `make bench` passes its dist build),
LAPSE_BENCH_BASELINE (0), LAPSE_BENCH_BASELINE_RESYNC_SECS (10),
LAPSE_BENCH_BASELINE_CONCURRENCY (8), LAPSE_E2E_KEEP (keep the scratch directories).";

fn env_num(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}: {v:?} is not a whole number")),
    }
}

/// ARM's per-subscription budgets (sim-azure enforces Azure's defaults).
const WRITE_BURST: f64 = 200.0;
const WRITE_REFILL: f64 = 10.0;
/// Role assignments ARM allows per subscription, less the operator's own.
const PER_SUBSCRIPTION: usize = 4000 - 1;

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Config {
    grants: usize,
    burst: usize,
    subscriptions: usize,
    rss_grants: usize,
    latency_ms: u64,
    sweep_secs: u64,
    end_rate: f64,
    concurrency: u64,
    parallel: usize,
    /// Future grants created per batch in phase 6, and how long without progress is a stall.
    batch: usize,
    stall_secs: u64,
    /// Extra environment for the operator only (a profiler's, say).
    operator_env: Vec<(String, String)>,
    /// Leases of the Azure-enforced expiry round (phase 5b); 0 skips it.
    pim_grants: usize,
    /// Leases of the synchronized-expiry round (phase 5c); 0 skips it.
    sync_grants: usize,
    /// Activity Log events of the usage round (phase 7); 0 skips it.
    log_events: u64,
    /// Grants of the create flood (phase 6a); 0 skips it.
    flood: usize,
    /// Whether phases 1, 2, 3 and 5 run again against `lapse-baseline`, and its settings.
    baseline: bool,
    baseline_resync_secs: u64,
    baseline_concurrency: u64,
}

impl Config {
    /// From the environment and the command line (`--baseline`).
    fn from_env(args: &[String]) -> anyhow::Result<Self> {
        let grants = env_num("LAPSE_BENCH_GRANTS", 10_000)? as usize;
        let c = Self {
            grants,
            burst: (env_num("LAPSE_BENCH_BURST", 1000)? as usize).min(grants),
            subscriptions: env_num("LAPSE_BENCH_SUBSCRIPTIONS", 5)?.max(1) as usize,
            rss_grants: env_num("LAPSE_BENCH_RSS_GRANTS", 10 * grants as u64)? as usize,
            latency_ms: env_num("LAPSE_BENCH_LATENCY_MS", 50)?,
            sweep_secs: env_num("LAPSE_BENCH_SWEEP_SECS", 20)?.max(1),
            end_rate: env_num("LAPSE_BENCH_END_RATE", 9)?.max(1) as f64,
            concurrency: env_num("LAPSE_BENCH_CONCURRENCY", 64)?.max(1),
            parallel: env_num("LAPSE_BENCH_CLIENTS", 32)?.max(1) as usize,
            batch: env_num("LAPSE_BENCH_BATCH", 5000)? as usize,
            stall_secs: env_num("LAPSE_BENCH_STALL_SECS", 90)?.max(1),
            pim_grants: (env_num("LAPSE_BENCH_PIM_GRANTS", 200)? as usize).min(grants),
            sync_grants: env_num("LAPSE_BENCH_SYNC_GRANTS", 2000)? as usize,
            log_events: env_num("LAPSE_BENCH_LOG_EVENTS", 1_000_000)?,
            flood: env_num("LAPSE_BENCH_FLOOD", 20_000)? as usize,
            baseline: args.iter().any(|a| a == "--baseline")
                || env_num("LAPSE_BENCH_BASELINE", 0)? != 0,
            baseline_resync_secs: env_num("LAPSE_BENCH_BASELINE_RESYNC_SECS", 10)?.max(1),
            baseline_concurrency: env_num("LAPSE_BENCH_BASELINE_CONCURRENCY", 8)?.max(1),
            operator_env: std::env::var("LAPSE_BENCH_OPERATOR_ENV")
                .unwrap_or_default()
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.trim().to_owned(), v.to_owned()))
                })
                .collect(),
        };
        if c.grants == 0 {
            bail!("LAPSE_BENCH_GRANTS must be at least 1");
        }
        if c.sync_grants > PER_SUBSCRIPTION {
            bail!(
                "LAPSE_BENCH_SYNC_GRANTS: {} leases in one subscription exceed ARM's 4,000 role \
                 assignments per subscription",
                c.sync_grants
            );
        }
        if c.burst > PER_SUBSCRIPTION || c.grants.div_ceil(c.subscriptions) > PER_SUBSCRIPTION {
            bail!(
                "{} grants over {} subscriptions (burst {} in the first) exceed ARM's 4,000 role \
                 assignments per subscription: raise LAPSE_BENCH_SUBSCRIPTIONS",
                c.grants,
                c.subscriptions,
                c.burst
            );
        }
        Ok(c)
    }

    /// Phase 3: two sweep intervals.
    fn steady_window(&self) -> Duration {
        Duration::from_secs(2 * self.sweep_secs)
    }
}

fn grant(
    name: &str,
    principal: &str,
    scope: String,
    not_before: Option<DateTime<Utc>>,
    not_after: DateTime<Utc>,
) -> AccessGrant {
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    AccessGrant::new(
        name,
        AccessGrantSpec {
            identity: IdentityRef {
                service_principal: Some(ObjectIdRef {
                    object_id: principal.to_owned(),
                }),
                ..Default::default()
            },
            roles: vec![RoleRequest {
                role: "Reader".into(),
                scope,
                condition: None,
            }],
            window: Some(Box::new(Window {
                not_before: not_before.map(ts),
                not_after: Some(ts(not_after)),
            })),
            ..Default::default()
        },
    )
}

fn secs(d: TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

/// When the grant's Ready condition last turned True.
fn ready_at(g: &AccessGrant) -> Option<DateTime<Utc>> {
    g.status.as_ref()?.conditions.iter().find_map(|c| {
        (c.type_ == "Ready" && c.status == ConditionStatus::True).then_some(c.last_transition_time)
    })
}

/// Waits until `count` grants are in `phase` by the operator's gauge; fails at once if any grant
/// is Denied or Failed.
async fn wait_phase(
    b: &mut Bench,
    what: &str,
    phase: &str,
    count: u64,
    timeout: Duration,
    every: Duration,
) -> anyhow::Result<Metrics> {
    let m = b
        .wait_metrics(what, timeout, every, |m| {
            let bad = m.phase("Denied") + m.phase("Failed");
            (
                m.phase(phase) >= count || bad > 0,
                format!("{} of {count} {phase}", m.phase(phase)),
            )
        })
        .await?;
    let bad = m.phase("Denied") + m.phase("Failed");
    if bad > 0 {
        bail!("{what}: {bad} grants Denied or Failed (see `kubectl get accessgrants -A`)");
    }
    Ok(m)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if lapse_e2e::external_selected() {
        bail!(
            "lapse-bench runs against the sandbox only (it seeds subscriptions, creates \
             principals, injects ARM latency and reads the request log); unset {}",
            lapse_e2e::TARGET_VAR
        );
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    if let Some(a) = args.iter().find(|a| *a != "--baseline") {
        bail!("unknown argument {a:?}\n\n{USAGE}");
    }
    let cfg = Config::from_env(&args)?;
    let run_started = Instant::now();
    let n = cfg.grants;
    let s = cfg.subscriptions;
    println!(
        "lapse bench: {n} grants over {s} subscriptions (burst {} in one), {} held for memory, \
         {} ms ARM latency, ARM throttling (writes 200 + 10/s, deletes 200 + 10/s per \
         subscription), sweep every {}s, LAPSE_CONCURRENCY={}",
        cfg.burst,
        cfg.rss_grants.max(n),
        cfg.latency_ms,
        cfg.sweep_secs,
        cfg.concurrency
    );

    let mut b = Bench::start(s, "lapse").await?;
    let subs = b.subscriptions.clone();
    b.kubectl(&["create", "namespace", "bench"])?;
    b.kubectl(&["create", "namespace", "bench-future"])?;
    b.kubectl(&["create", "namespace", "bench-pim"])?;
    b.kubectl(&["create", "namespace", "bench-sync"])?;
    let scopes: Vec<String> = subs.iter().map(|s| format!("/subscriptions/{s}")).collect();
    b.apply(&format!(
        "apiVersion: lapse.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: bench\nspec:\n  \
         namespaces: [bench, bench-future, bench-sync]\n  servicePrincipals: ['*']\n  roles: [Reader]\n  \
         scopes: [{}]\n  maxDuration: 2h\n",
        scopes.join(", ")
    ))?;
    b.apply(&format!(
        "apiVersion: lapse.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: bench-pim\nspec:\n  \
         namespaces: [bench-pim]\n  servicePrincipals: ['*']\n  roles: [Reader]\n  \
         scopes: [{}]\n  maxDuration: 2h\n  azure:\n    expiry: PIM\n",
        scopes.join(", ")
    ))?;
    let t = Instant::now();
    let principals = b.principals(n.max(cfg.sync_grants), cfg.parallel).await?;
    println!(
        "setup: sandbox, {} service principals in {:.1}s",
        principals.len(),
        t.elapsed().as_secs_f64()
    );
    b.admin(
        reqwest::Method::PUT,
        "/admin/delays",
        Some(json!({"latencyMs": cfg.latency_ms})),
    )
    .await?;
    let mut env = vec![
        ("LAPSE_CONCURRENCY".into(), cfg.concurrency.to_string()),
        (
            "LAPSE_SWEEP_INTERVAL".into(),
            format!("{}s", cfg.sweep_secs),
        ),
        ("LAPSE_SWEEP_SUBSCRIPTIONS".into(), subs.join(",")),
        // Phase 5b: the sandbox's PIM minimum is 10 s (Azure's 5 minutes would make the round
        // last 5 minutes); a 5 s grace after each lease.
        ("LAPSE_PIM_MINIMUM".into(), format!("{PIM_MINIMUM_SECS}s")),
        ("LAPSE_PIM_GRACE".into(), "5s".into()),
    ];
    env.extend(cfg.operator_env.iter().cloned());
    b.spawn_operator(env)?;
    b.wait_ready().await?;
    let (rss_idle, _) = rss_kib(b.op()?.pid());

    let plan = Plan::new(&cfg, Utc::now());
    let (lapse_start, lapse_end) = (plan.lapse_start, plan.lapse_end);
    let grants = plan.grants(&principals, &subs);

    // 1. Burst.
    let burst_from = Utc::now();
    let t = Instant::now();
    let mut applied: HashMap<String, DateTime<Utc>> = b
        .create_grants("bench", grants[..cfg.burst].to_vec(), cfg.parallel)
        .await?
        .into_iter()
        .collect();
    let burst_created = t.elapsed();
    let timeout = Duration::from_secs_f64(plan.burst_ideal * 3.0 + 120.0);
    wait_phase(
        &mut b,
        "burst activation",
        "Active",
        cfg.burst as u64,
        timeout,
        Duration::from_millis(250),
    )
    .await?;
    let burst_all_active = t.elapsed();
    let burst_to = Utc::now();
    println!(
        "burst: {} created in {:.1}s, all Active after {:.1}s",
        cfg.burst,
        burst_created.as_secs_f64(),
        burst_all_active.as_secs_f64()
    );

    // 2. Fill.
    let t = Instant::now();
    applied.extend(
        b.create_grants("bench", grants[cfg.burst..].to_vec(), cfg.parallel)
            .await?,
    );
    let fill_created = t.elapsed();
    let timeout = Duration::from_secs_f64(plan.fill_ideal * 3.0 + 180.0);
    wait_phase(
        &mut b,
        "activation of every grant",
        "Active",
        n as u64,
        timeout,
        Duration::from_millis(500),
    )
    .await?;
    println!(
        "fill: {} created in {:.1}s, all {n} Active after {:.1}s",
        n - cfg.burst,
        fill_created.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    let listed = b.list_grants("bench").await?;
    let activation: Vec<f64> = listed
        .iter()
        .filter(|g| {
            g.metadata
                .name
                .as_deref()
                .is_some_and(|n| plan::in_burst(n, cfg.burst))
        })
        .filter_map(|g| {
            let name = g.metadata.name.as_deref()?;
            Some(secs(ready_at(g)? - *applied.get(name)?))
        })
        .collect();

    // 3. Steady state.
    let steady_window = cfg.steady_window();
    let steady_from = Utc::now();
    tokio::time::sleep(steady_window).await;
    let steady_to = Utc::now();
    let (rss_active, hwm_active) = rss_kib(b.op()?.pid());
    println!(
        "steady: {}s observed, operator RSS {} MiB",
        steady_window.as_secs(),
        mib(rss_active)
    );

    // 4. Restart: SIGKILL, start again, wait until every grant is decided by the new process.
    let kill_at = Utc::now();
    b.op()?.kill();
    let restart = Instant::now();
    b.spawn_operator(Vec::new())?;
    let mut ready_after = None;
    let mut all_after = None;
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while all_after.is_none() {
        if Instant::now() > deadline {
            bail!("restart: not every grant reconciled after 300s ({last})");
        }
        b.op()?.check_alive()?;
        if ready_after.is_none() && b.ready().await.unwrap_or(false) {
            ready_after = Some(restart.elapsed());
        }
        if let Ok(m) = b.metrics().await {
            last = format!(
                "{} of {n} Active, {} reconciles",
                m.phase("Active"),
                m.reconciles()
            );
            if m.phase("Active") >= n as u64 {
                all_after = Some(restart.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered_at = Utc::now();
    let ready_after = ready_after.unwrap_or_default();
    let all_after = all_after.unwrap_or_default();
    println!(
        "restart: ready after {:.1}s, every grant reconciled after {:.1}s",
        ready_after.as_secs_f64(),
        all_after.as_secs_f64()
    );
    if recovered_at > lapse_start {
        println!(
            "warning: leases began ending {:.1}s before recovery finished",
            secs(recovered_at - lapse_start)
        );
    }

    // 5. Lapse.
    let wait = (lapse_end - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(300);
    // A stall is a finding, not the end of the run: the leases left are counted as never
    // revoked, and the baseline still runs.
    match wait_phase(
        &mut b,
        "every lease lapsed",
        "Expired",
        n as u64,
        wait,
        Duration::from_secs(1),
    )
    .await
    {
        Ok(_) => println!(
            "lapse: all {n} Expired {:.1}s after the last lease end",
            secs(Utc::now() - lapse_end)
        ),
        Err(e) => println!("lapse: {e:#}"),
    }
    let lapsed_at = Utc::now();
    let listed = b.list_grants("bench").await?;
    let leases: Vec<figures::Lease> = listed
        .iter()
        .filter_map(|g| {
            let name = g.metadata.name.as_deref()?;
            let s = g.status.as_ref()?;
            Some(figures::Lease {
                applied: *applied.get(name)?,
                end: s.expires_at?,
                burst: plan::in_burst(name, cfg.burst),
                assignment: s
                    .role_assignments
                    .first()?
                    .id
                    .as_deref()
                    .map(str::to_ascii_lowercase),
            })
        })
        .collect();
    // Role assignment ID (lower case) → the lease's end.
    let expiry: HashMap<String, DateTime<Utc>> = listed
        .into_iter()
        .filter_map(|g| {
            let s = g.status?;
            let ra = s.role_assignments.first()?.id.clone()?;
            Some((ra.to_ascii_lowercase(), s.expires_at?))
        })
        .collect();

    // Azure's view of phases 1 to 5, printed before the memory phase so a stall there loses
    // nothing.
    let audit = b.audit().await?;
    let lapse_figures = figures::figures(&audit, &leases, lapsed_at, (rss_active, hwm_active));
    let ready_activation = figures::Distribution::new(activation.clone());
    let mut rows = report::numbers(&report::Inputs {
        cfg: &cfg,
        subs: &subs,
        audit: &audit,
        activation,
        burst: (burst_from, burst_to, burst_all_active),
        steady: (steady_from, steady_to),
        restart: (kill_at, ready_after, all_after),
        expiry: &expiry,
        rss: report::Rss {
            idle: rss_idle,
            active: rss_active,
            active_peak: hwm_active,
        },
    });

    // 5b. Azure-enforced expiry.
    if cfg.pim_grants > 0 {
        match pim_round(&mut b, &cfg, &principals, &subs).await {
            Ok(row) => rows.push(row),
            Err(e) => rows.push(report::failed_row(
                "ARM writes per PIM lease".into(),
                "AdminAssign + AdminRemove per object",
                format!("not measured: {e:#}"),
            )),
        }
    }

    // 7. Usage evidence: the Activity Log read at volume. Before the flood and the memory
    // phase: its restart with 100,000 grants in the cache outlasted the wait for readiness.
    if cfg.log_events > 0 {
        match ingest_logs(&mut b, &cfg, &subs[0]).await {
            Ok(row) => rows.push(row),
            Err(e) => rows.push(report::failed_row(
                "usage log ingestion".into(),
                "bounded memory",
                format!("not measured: {e:#}"),
            )),
        }
    }

    // 5c. Synchronized expiry. After phase 7, which then measures the operator as it did
    // before this round existed (right after 5b).
    let mut synchronized = None;
    if cfg.sync_grants > 0 {
        match synchronized::round(&mut b, &cfg, &principals, &subs[0]).await {
            Ok((row, measured)) => {
                rows.push(row);
                synchronized = Some(measured);
            }
            Err(e) => rows.push(report::failed_row(
                format!(
                    "synchronized expiry, {} leases ending in one second",
                    cfg.sync_grants
                ),
                "no overstay > 3 s; early only as the budget forces; status and audit say so",
                format!("not measured: {e:#}"),
            )),
        }
    }

    // 6a. The create flood; its grants count towards phase 6's.
    let mut flooded = 0;
    if cfg.flood > 0 {
        match flood::flood(&mut b, &cfg, &principals[0], &subs[0]).await {
            Ok(row) => {
                flooded = cfg.flood;
                rows.push(row);
            }
            Err(e) => rows.push(report::failed_row(
                format!("create flood, {} grants", cfg.flood),
                "all Scheduled, no 422 storm",
                format!("not measured: {e:#}"),
            )),
        }
    }

    // 6. Memory at scale.
    let future = cfg.rss_grants.saturating_sub(n + flooded);
    if future > 0 {
        let from = Utc::now();
        let held = hold(&mut b, &cfg, future, &principals[0], &subs[0]).await;
        let writes = b
            .audit()
            .await?
            .iter()
            .filter(|c| c.time >= from && c.is_arm() && c.method != "GET")
            .count();
        match held {
            Ok(Held::All { rss, hwm }) => {
                rows.push(report::held_row(n + flooded + future, rss, hwm, writes))
            }
            Ok(Held::Stalled { held, rss, why }) => {
                rows.push(report::failed_row(
                    format!("operator RSS, {} grants", n + flooded + future),
                    "<= 400 MiB",
                    format!("{why}; {} MiB holding {}", mib(rss), n as u64 + held),
                ));
            }
            Err(e) => rows.push(report::failed_row(
                format!("operator RSS, {} grants", n + flooded + future),
                "<= 400 MiB",
                format!("not measured: {e:#}"),
            )),
        }
    }

    report::table(&cfg, run_started.elapsed(), &rows);
    // The baseline gets the machine to itself.
    drop(b);
    let baseline = if cfg.baseline {
        match baseline_run::run(&cfg).await {
            Ok(run) => Some(Ok(run)),
            Err(e) => {
                println!("baseline: not measured: {e:#}");
                Some(Err(format!("{e:#}")))
            }
        }
    } else {
        None
    };
    compare::report(&compare::Report {
        cfg: &cfg,
        wall_secs: run_started.elapsed().as_secs_f64(),
        lapse: &lapse_figures,
        lapse_ready_activation: &ready_activation,
        rows: &rows,
        synchronized: synchronized.as_ref(),
        baseline: baseline.as_ref(),
    })
}

/// Phase 7: `log_events` synthetic Activity Log events in `sub` over the last 10 minutes, and
/// the operator restarted to read them (one subscription of the bench's five holds them; the
/// others are read too). Every event is someone else's: read, not counted.
async fn ingest_logs(b: &mut Bench, cfg: &Config, sub: &str) -> anyhow::Result<report::Row> {
    b.op()?.kill();
    let base_env = b.operator_env.clone();
    let mut env = base_env.clone();
    env.extend([
        ("LAPSE_USAGE_ACTIVITY_LOG".to_owned(), "true".to_owned()),
        ("LAPSE_USAGE_REREAD".to_owned(), "15m".to_owned()),
        ("LAPSE_USAGE_POLL_INTERVAL".to_owned(), "5s".to_owned()),
    ]);
    b.spawn_operator(env)?;
    b.wait_ready().await?;
    // The growth measured is the log's alone: the restarted operator first reconciles every
    // grant it holds (10,000 of them at full scale), and only then do the events appear, late,
    // inside the window each read goes back over.
    settle_reconciles(b).await?;
    let (rss_ready, _) = rss_kib(b.op()?.pid());
    let now = Utc::now();
    b.admin(
        reqwest::Method::PUT,
        "/admin/logs",
        Some(json!({"syntheticEvents": {
            "subscription": sub,
            "count": cfg.log_events,
            "from": now - TimeDelta::minutes(10),
            "to": now,
        }})),
    )
    .await?;
    let source = format!("source=\"activity/{}\"", sub.to_ascii_lowercase());
    let t = Instant::now();
    let mut peak = rss_ready.unwrap_or_default();
    let read = loop {
        let m = b.metrics().await?;
        let read = m.sum("lapse_usage_events_total", &[&source]) as u64;
        let (rss, _) = rss_kib(b.op()?.pid());
        peak = peak.max(rss.unwrap_or_default());
        if read >= cfg.log_events {
            break read;
        }
        if t.elapsed() > Duration::from_secs(cfg.stall_secs * 10) {
            bail!(
                "{read} of {} events read after {:.0}s",
                cfg.log_events,
                t.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let took = t.elapsed().as_secs_f64();
    let (rss_after, _) = rss_kib(b.op()?.pid());
    let m = b.metrics().await?;
    let throttled = m.sum("lapse_azure_throttled_responses_total", &[]) as u64;
    // The phases after this one measure the operator as configured for the bench (not as
    // `spawn_operator` last remembered it: with this phase's log reading).
    b.op()?.kill();
    b.spawn_operator(base_env)?;
    b.wait_ready().await?;
    Ok(report::logs_row(
        read,
        took,
        rss_ready,
        Some(peak),
        rss_after,
        throttled,
    ))
}

/// Waits until the operator's reconcile count has not moved for 5 s (at most 2 minutes).
async fn settle_reconciles(b: &mut Bench) -> anyhow::Result<()> {
    let started = Instant::now();
    let (mut last, mut since) = (None, Instant::now());
    while started.elapsed() < Duration::from_secs(120) {
        let n = Some(b.metrics().await?.reconciles());
        if n != last {
            (last, since) = (n, Instant::now());
        } else if since.elapsed() >= Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// The sandbox's PIM minimum active duration in the bench (Azure: 5 minutes).
const PIM_MINIMUM_SECS: u64 = 10;

/// Phase 5b: `cfg.pim_grants` leases under the PIM policy, 40 s each, from apply to lapse. Every
/// earlier lease has ended, so the Active gauge counts this round's alone.
async fn pim_round(
    b: &mut Bench,
    cfg: &Config,
    principals: &[String],
    subs: &[String],
) -> anyhow::Result<report::Row> {
    let p = cfg.pim_grants;
    let from = Utc::now();
    let end = from + TimeDelta::seconds(40);
    let grants: Vec<AccessGrant> = (0..p)
        .map(|i| {
            grant(
                &format!("p{i:05}"),
                &principals[i],
                format!("/subscriptions/{}/resourceGroups/{RESOURCE_GROUP}", subs[0]),
                None,
                end,
            )
        })
        .collect();
    b.create_grants("bench-pim", grants, cfg.parallel).await?;
    wait_phase(
        b,
        "PIM leases active",
        "Active",
        p as u64,
        Duration::from_secs(60),
        Duration::from_millis(250),
    )
    .await?;
    let active_after = Utc::now() - from;
    let wait = (end - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(120);
    wait_phase(
        b,
        "PIM leases lapsed",
        "Expired",
        (cfg.grants + p) as u64,
        wait,
        Duration::from_millis(250),
    )
    .await?;
    let lapsed_after = Utc::now() - end;
    let audit = b.audit().await?;
    let round = between(&audit, from, Utc::now());
    Ok(report::pim_row(
        p,
        &round,
        secs(active_after),
        secs(lapsed_after),
    ))
}

/// How phase 6 ended.
#[derive(Debug)]
enum Held {
    All {
        rss: Option<u64>,
        hwm: Option<u64>,
    },
    /// The operator stopped making progress: how many it held then, its RSS, and why.
    Stalled {
        held: u64,
        rss: Option<u64>,
        why: String,
    },
}

/// Phase 6: `future` grants whose window opens in 30 days, created through the API in batches
/// of `LAPSE_BENCH_BATCH`, each waited for until the operator counts it `Scheduled` (so its
/// watch never falls far behind the creates). Stops when the count makes no progress for
/// `LAPSE_BENCH_STALL_SECS`.
async fn hold(
    b: &mut Bench,
    cfg: &Config,
    future: usize,
    principal: &str,
    sub: &str,
) -> anyhow::Result<Held> {
    let opens = Utc::now() + TimeDelta::days(30);
    let scope = format!("/subscriptions/{sub}/resourceGroups/{RESOURCE_GROUP}");
    let batch = cfg.batch.max(1);
    let stall = Duration::from_secs(cfg.stall_secs);
    let t = Instant::now();
    let mut creating = Duration::ZERO;
    let mut created = 0usize;
    let base = b.metrics().await?.phase("Scheduled");
    while created < future {
        let upto = (created + batch).min(future);
        let c = Instant::now();
        b.create_grants(
            "bench-future",
            (created..upto)
                .map(|i| {
                    grant(
                        &format!("f{i:06}"),
                        principal,
                        scope.clone(),
                        Some(opens),
                        opens + TimeDelta::hours(1),
                    )
                })
                .collect(),
            cfg.parallel,
        )
        .await?;
        creating += c.elapsed();
        created = upto;
        let (mut best, mut since) = (0, Instant::now());
        loop {
            let m = b.metrics().await?;
            let held = m.phase("Scheduled").saturating_sub(base);
            if m.phase("Denied") + m.phase("Failed") > 0 {
                bail!("future grants Denied or Failed");
            }
            if held >= created as u64 {
                break;
            }
            if held > best {
                (best, since) = (held, Instant::now());
            } else if since.elapsed() > stall {
                let (rss, _) = rss_kib(b.op()?.pid());
                let why = format!(
                    "stalled: {held} of {created} created ({future} planned) Scheduled, no \
                     progress for {}s ({} reconcile errors)",
                    stall.as_secs(),
                    m.sum("lapse_reconciles_total", &[]) as u64
                        - m.sum("lapse_reconciles_total", &["result=\"ok\""]) as u64
                );
                println!("memory: {why}; operator RSS {} MiB", mib(rss));
                return Ok(Held::Stalled { held, rss, why });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!(
            "memory: {created} of {future} future grants Scheduled after {:.0}s",
            t.elapsed().as_secs_f64()
        );
    }
    let (rss, hwm) = rss_kib(b.op()?.pid());
    println!(
        "memory: {future} future grants: {:.0}s creating ({:.0}/s), all Scheduled after {:.0}s; \
         operator RSS {} MiB (peak {} MiB); sandbox RSS {} MiB",
        creating.as_secs_f64(),
        future as f64 / creating.as_secs_f64().max(0.001),
        t.elapsed().as_secs_f64(),
        mib(rss),
        mib(hwm),
        mib(b.sandbox_rss())
    );
    Ok(Held::All { rss, hwm })
}

/// The phase windows' calls.
pub fn between(audit: &[Call], from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<&Call> {
    audit
        .iter()
        .filter(|c| c.time >= from && c.time < to)
        .collect()
}
