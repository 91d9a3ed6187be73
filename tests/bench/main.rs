//! `make bench`: the operator against the sandbox at a chosen scale, measuring what DESIGN.md §6
//! targets: activation of a burst against ARM's write budget, overstay (lease end → DELETE
//! acknowledged) under real throttling with simulated ARM latency, writes per lease, ARM calls
//! at steady state, and the operator's memory. Prints numbers; asserts nothing.
//!
//! `LAPSE_BENCH_GRANTS` (default 400) grants, each for its own service principal so no Azure
//! object is shared; `LAPSE_BENCH_LATENCY_MS` (default 50) of ARM latency. Sandbox only: it
//! refuses `LAPSE_E2E_TARGET=external`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use kube::api::PostParams;
use lapse_api::v1alpha1::{
    AccessGrant, AccessGrantSpec, GrantPhase, IdentityRef, ObjectIdRef, RoleRequest,
};
use lapse_e2e::World;
use serde_json::{Value, json};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<f64>, unit: &str) {
    v.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name:<44} n={:<5} p50={:>8.3}{unit} p99={:>8.3}{unit} max={:>8.3}{unit}",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    );
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // The bench needs the sandbox's powers: it makes principals and sets ARM latency through
    // sim-azure's admin API, and reads Azure's request log. A real tenant has none of them.
    if lapse_e2e::external_selected() {
        bail!(
            "lapse-bench runs against the sandbox only (it creates principals, injects ARM \
             latency and reads the request log); unset {} to run it on a sandbox of its own",
            lapse_e2e::TARGET_VAR
        );
    }
    let n = env_num("LAPSE_BENCH_GRANTS", 400) as usize;
    let latency = env_num("LAPSE_BENCH_LATENCY_MS", 50);
    println!(
        "lapse bench: {n} grants, {latency} ms ARM latency, sandbox throttling (writes 200 + 10/s, deletes 200 + 10/s)"
    );
    let mut w = World::without_operator().await?;
    w.start_operator(&[("LAPSE_CONCURRENCY", "64"), ("LAPSE_LOG", "warn")])
        .await?;
    let pid = w
        .operator
        .as_ref()
        .map(lapse_e2e::Operator::pid)
        .context("no operator")?;
    let rss_idle = rss_kib(pid);
    let sub = w.subscription()?.to_owned();

    // One principal per grant: nothing shared, so every grant costs exactly its own writes.
    let mut principals = Vec::with_capacity(n);
    for i in 0..n {
        let p = w
            .azure_admin(
                reqwest::Method::POST,
                "/admin/principals",
                Some(json!({"displayName": format!("bench-{i}"), "kind": "ServicePrincipal"})),
            )
            .await?;
        principals.push(p["objectId"].as_str().context("objectId")?.to_owned());
    }
    w.kubectl_ok(&["create", "namespace", "bench"])?;
    w.apply_ok(&format!(
        "apiVersion: lapse.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: bench\nspec:\n  namespaces: [bench]\n  servicePrincipals: ['*']\n  roles: [Reader]\n  scopes: [/subscriptions/{sub}]\n  maxDuration: 2h\n"
    ))?;
    w.azure_admin(
        reqwest::Method::PUT,
        "/admin/delays",
        Some(json!({"latencyMs": latency})),
    )
    .await?;
    w.azure_admin(reqwest::Method::DELETE, "/admin/audit", None)
        .await?;

    // Leases end staggered, 5 a second, so revocations run inside the delete budget.
    let burst_at = Instant::now();
    let base = 90 + n as u64 / 10;
    let grants = w.grants("bench");
    let mut applied: HashMap<String, Instant> = HashMap::new();
    for (i, p) in principals.iter().enumerate() {
        let name = format!("g{i:05}");
        let g = AccessGrant::new(
            &name,
            AccessGrantSpec {
                identity: IdentityRef {
                    service_principal: Some(ObjectIdRef {
                        object_id: p.clone(),
                    }),
                    ..Default::default()
                },
                roles: vec![RoleRequest {
                    role: "Reader".into(),
                    scope: format!("/subscriptions/{sub}/resourceGroups/lapse-demo-rg"),
                    condition: None,
                }],
                duration: Some(format!("{}ms", base * 1000 + i as u64 * 200)),
                ..Default::default()
            },
        );
        grants.create(&PostParams::default(), &g).await?;
        applied.insert(name, Instant::now());
    }
    let created_in = burst_at.elapsed();

    // Activation: apply → Active, per grant.
    let mut activation = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(base.saturating_sub(10));
    while activation.len() < n {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} grants active before the first lease ends",
                activation.len()
            );
        }
        for g in grants.list(&Default::default()).await? {
            let name = g.metadata.name.clone().unwrap_or_default();
            if g.status
                .as_ref()
                .is_some_and(|s| s.phase == GrantPhase::Active)
                && !activation.contains_key(&name)
            {
                activation.insert(name.clone(), applied[&name].elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_active = burst_at.elapsed();
    let rss_active = rss_kib(pid);

    // Steady state: a quiet window with every lease live.
    let audit_before = w.audit().await?.len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let steady: Vec<Value> = w.audit().await?.into_iter().skip(audit_before).collect();
    let steady_writes = steady.iter().filter(|e| e["method"] != "GET").count();

    // Lapse: wait for every lease to end.
    let deadline = Instant::now() + Duration::from_secs(base + n as u64 / 5 + 120);
    loop {
        let list = grants.list(&Default::default()).await?;
        if list.items.iter().all(|g| {
            g.status
                .as_ref()
                .is_some_and(|s| s.phase == GrantPhase::Expired)
        }) {
            break;
        }
        if Instant::now() > deadline {
            bail!("not every lease ended in time");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let expiry: HashMap<String, DateTime<Utc>> = grants
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|g| {
            let s = g.status?;
            let ra = s.role_assignments.first()?.id.clone()?;
            Some((ra.to_ascii_lowercase(), s.expires_at?))
        })
        .collect();
    let audit = w.audit().await?;
    let mut puts = 0usize;
    let mut deletes = 0usize;
    let mut first_put: Option<DateTime<Utc>> = None;
    let mut last_put: Option<DateTime<Utc>> = None;
    let mut overstay = Vec::new();
    for e in &audit {
        let path = e["path"].as_str().unwrap_or_default().to_ascii_lowercase();
        if !path.contains("/roleassignments/") || e["status"].as_u64().is_none_or(|s| s >= 300) {
            continue;
        }
        match e["method"].as_str() {
            Some("PUT") => {
                puts += 1;
                let t = lapse_e2e::acknowledged_at(e).ok();
                first_put = first_put.min(t).or(t);
                last_put = last_put.max(t);
            }
            Some("DELETE") => {
                deletes += 1;
                if let (Ok(t), Some(exp)) = (lapse_e2e::acknowledged_at(e), expiry.get(&path)) {
                    overstay.push((t - *exp).num_milliseconds() as f64 / 1000.0);
                }
            }
            _ => {}
        }
    }
    let throttled = audit.iter().filter(|e| e["status"] == 429).count();
    // Write budget use: beyond the initial burst of 200, ARM refills 10 writes a second.
    let span = match (first_put, last_put) {
        (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
        _ => 0.0,
    };
    let budget = 200.0 + 10.0 * span;
    println!();
    summary(
        "activation (apply -> Active)",
        activation.into_values().collect(),
        "s",
    );
    println!(
        "{:<44} {:.1}s to create, {:.1}s until all Active",
        "burst",
        created_in.as_secs_f64(),
        all_active.as_secs_f64()
    );
    println!(
        "{:<44} {puts} PUTs in {span:.1}s; budget {budget:.0}; used {:.0}%",
        "ARM write budget use",
        100.0 * puts as f64 / budget.max(1.0)
    );
    summary("overstay (expiresAt -> DELETE acknowledged)", overstay, "s");
    println!(
        "{:<44} {:.2} PUT, {:.2} DELETE per lease (minimum 1 and 1)",
        "ARM writes per lease",
        puts as f64 / n as f64,
        deletes as f64 / n as f64
    );
    println!(
        "{:<44} {steady_writes} writes, {} calls in 10 s with {n} live leases",
        "steady state",
        steady.len()
    );
    println!("{:<44} {throttled}", "429s seen by the operator",);
    println!(
        "{:<44} idle {} MiB, {n} active leases {} MiB",
        "operator RSS",
        rss_idle.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        rss_active.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
    );
    Ok(())
}
