//! Phase 6a, the create flood: `LAPSE_BENCH_FLOOD` (20,000) grants whose window opens in 30
//! days, created as fast as the API server takes them (`LAPSE_BENCH_CLIENTS` in flight, none
//! waiting for the operator), then waited for until the operator counts every one `Scheduled`.
//!
//! What it watches is what went wrong before (docs/performance.md, "The create flood"): the
//! operator's writes refused by the API server (422 when it acted on a stale cached copy, 409,
//! 429), the creates the API server turned away with 429 under load (retried after its
//! Retry-After, as client-go does), and the sandbox's memory at its peak.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use kube::Api;
use lapse_api::v1alpha1::AccessGrant;

use crate::harness::{Bench, Metrics, RESOURCE_GROUP, create_grant, rss_kib};
use crate::report::{self, Row, mib};
use crate::{Config, grant};

/// The namespace the flood's grants go to (phase 6 adds its own there too).
const NS: &str = "bench-future";

/// What the API server refused, from its own `apiserver_request_total`.
#[derive(Debug, Default, Clone, Copy)]
struct Refused {
    /// Writes to AccessGrants answered 422 (a JSON patch's `test` on a stale copy) or 409.
    stale: u64,
    /// Requests answered 429.
    throttled: u64,
}

fn refused(m: &Metrics) -> Refused {
    let grants = "resource=\"accessgrants\"";
    let writes = |code: &str| -> u64 {
        ["PATCH", "PUT", "APPLY"]
            .iter()
            .map(|verb| {
                m.sum(
                    "apiserver_request_total",
                    &[
                        grants,
                        &format!("verb=\"{verb}\""),
                        &format!("code=\"{code}\""),
                    ],
                ) as u64
            })
            .sum()
    };
    Refused {
        stale: writes("422") + writes("409"),
        throttled: m.sum("apiserver_request_total", &["code=\"429\""]) as u64,
    }
}

/// Runs the flood and returns its row of the table.
pub async fn flood(b: &mut Bench, cfg: &Config, principal: &str, sub: &str) -> anyhow::Result<Row> {
    let n = cfg.flood;
    let opens = Utc::now() + TimeDelta::days(30);
    let scope = format!("/subscriptions/{sub}/resourceGroups/{RESOURCE_GROUP}");
    let before = refused(&b.kube_metrics().await?);
    let base = b.metrics().await?.phase("Scheduled");
    let sandbox_before = b.sandbox_rss().unwrap_or_default();
    let turned_away = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut creates = Some({
        let api: Api<AccessGrant> = Api::namespaced(b.kube.clone(), NS);
        let sem = Arc::new(tokio::sync::Semaphore::new(cfg.parallel.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let g = grant(
                &format!("flood{i:06}"),
                principal,
                scope.clone(),
                Some(opens),
                opens + TimeDelta::hours(1),
            );
            let (api, sem, turned_away) = (api.clone(), sem.clone(), turned_away.clone());
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await?;
                create_grant(&api, &g, &turned_away).await
            });
        }
        tokio::spawn(async move {
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            anyhow::Ok(started.elapsed())
        })
    });
    let stall = Duration::from_secs(cfg.stall_secs);
    let (mut sandbox_peak, mut best, mut since) = (0u64, 0u64, Instant::now());
    let mut created_after = None;
    let scheduled_after = loop {
        sandbox_peak = sandbox_peak.max(b.sandbox_rss().unwrap_or_default());
        if let Some(done) = creates.take_if(|h| h.is_finished()) {
            created_after = Some(done.await??);
        }
        let held = b.metrics().await?.phase("Scheduled").saturating_sub(base);
        if held >= n as u64 {
            break Some(started.elapsed());
        }
        if held > best {
            (best, since) = (held, Instant::now());
        } else if since.elapsed() > stall {
            println!(
                "flood: stalled at {held} of {n} Scheduled, no progress for {}s",
                stall.as_secs()
            );
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let created_after = match (created_after, creates) {
        (Some(d), _) => d,
        (None, Some(pending)) => pending.await??,
        (None, None) => Duration::ZERO,
    };
    let after = refused(&b.kube_metrics().await?);
    let (stale, throttled) = (
        after.stale - before.stale,
        after.throttled - before.throttled,
    );
    let (op_rss, _) = rss_kib(b.op()?.pid());
    let turned_away = turned_away.load(Ordering::Relaxed);
    // What the sandbox grew by, per grant created: memory that follows what it stores, not
    // the requests in flight.
    let per_grant = sandbox_peak.saturating_sub(sandbox_before) as f64 / n.max(1) as f64;
    println!(
        "flood: {n} creates in {:.1}s ({:.0}/s, {turned_away} answered 429 and retried); {}; \
         operator writes refused as stale (422/409): {stale}; 429s answered in all: {throttled}; \
         sandbox RSS peak {} MiB (+{per_grant:.1} KiB per grant created); operator RSS {} MiB",
        created_after.as_secs_f64(),
        n as f64 / created_after.as_secs_f64().max(0.001),
        match scheduled_after {
            Some(d) => format!("all Scheduled after {:.1}s", d.as_secs_f64()),
            None => "NOT all Scheduled".into(),
        },
        mib(Some(sandbox_peak)),
        mib(op_rss)
    );
    // A storm is refusals in the order of the grants themselves; a few stale writes are
    // normal for any controller and cost one retry each.
    let storm = stale > (n as u64 / 100).max(10);
    Ok(report::flood_row(
        n,
        format!(
            "{}; {stale} stale writes refused, {turned_away} creates answered 429; sandbox peak \
             {} MiB (+{per_grant:.0} KiB per grant)",
            match scheduled_after {
                Some(d) => format!(
                    "all Scheduled {:.0}s after the first create",
                    d.as_secs_f64()
                ),
                None => format!("stalled ({} Scheduled)", best),
            },
            mib(Some(sandbox_peak))
        ),
        scheduled_after.is_some() && !storm,
    ))
}
