//! `lapse-baseline`: the naive reference reconciler `lapse-bench --baseline` runs the same
//! workload against (docs/testing.md "## Benchmark"). It does what a user would script, or
//! what a generic controller with a fixed resync does:
//!
//! every `--resync-secs`, list every AccessGrant and walk the list in its order, `--concurrency`
//! requests at a time; a grant whose window is open and that has no role assignment recorded
//! gets one (PUT, a random GUID), recorded in an annotation on the grant; one that has is
//! polled (GET; re-PUT when gone); one whose window has closed has its assignment deleted and
//! the annotation removed. A 429 is slept off (`Retry-After`) and retried.
//!
//! What it lacks, on purpose, is what lapse adds: a timer per lease end (deletes wait for the
//! next resync), revocations ahead of other calls (they queue behind polls and creates in list
//! order), a limiter that keeps within ARM's budgets, one list per subscription instead of a
//! read per grant, derived names and an inventory. It reads no AccessPolicy and checks
//! nothing, and deletes whatever its annotation names (which anyone who can edit the grant can
//! write): it is a yardstick, not an operator to run.

mod arm;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Parser;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use lapse_api::v1alpha1::AccessGrant;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use arm::{Arm, Outcome};

/// Where the baseline records the role assignment IDs it made for a grant (comma-separated).
/// lapse ignores it; the bench reads it to tie Azure's request log to the grants.
const ASSIGNMENTS_ANNOTATION: &str = "baseline.lapse.dev/role-assignments";

/// The naive reference reconciler of `lapse-bench --baseline`: a fixed resync that polls every
/// AccessGrant, creates role assignments for open windows and deletes expired ones in list
/// order. Reads KUBECONFIG and the sandbox's azure.env variables (AZURE_TENANT_ID,
/// AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_AUTHORITY_HOST, LAPSE_ARM_ENDPOINT,
/// LAPSE_AZURE_CA_BUNDLE). Not a replacement for lapse: it checks no policy.
#[derive(Debug, Parser)]
#[command(name = "lapse-baseline", version)]
struct Args {
    /// Seconds from the start of one resync pass to the next (a pass that runs longer is
    /// followed at once).
    #[arg(long, env = "LAPSE_BASELINE_RESYNC_SECS", default_value_t = 10)]
    resync_secs: u64,
    /// Azure requests in flight at once, as `xargs -P` would run them.
    #[arg(long, env = "LAPSE_BASELINE_CONCURRENCY", default_value_t = 8)]
    concurrency: usize,
    /// Only this namespace's grants (every namespace when absent).
    #[arg(long)]
    namespace: Option<String>,
}

/// What a pass does for one grant.
#[derive(Debug)]
enum Action {
    Create,
    Poll(Vec<String>),
    Delete(Vec<String>),
}

/// The pass's decision for `g` at `now`; `None` when there is nothing to do.
fn action(g: &AccessGrant, now: DateTime<Utc>) -> Option<Action> {
    let window = g.spec.window.as_ref()?;
    let at = |t: &Option<String>| {
        t.as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    // A grant without an end is not the baseline's: it knows windows only.
    let not_after = at(&window.not_after)?;
    let not_before = at(&window.not_before);
    let recorded: Vec<String> = g
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ASSIGNMENTS_ANNOTATION))
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if now >= not_after {
        (!recorded.is_empty()).then_some(Action::Delete(recorded))
    } else if not_before.is_none_or(|nb| now >= nb) {
        Some(if recorded.is_empty() {
            Action::Create
        } else {
            Action::Poll(recorded)
        })
    } else {
        None
    }
}

/// What one pass did.
#[derive(Debug, Default)]
struct Tally {
    created: usize,
    polled: usize,
    deleted: usize,
    gave_up: usize,
    failed: usize,
}

/// Carries out `act` for `g`; whether it finished (false: still throttled, next pass retries).
async fn carry_out(
    arm: &Arm,
    token: &str,
    api: &Api<AccessGrant>,
    g: &AccessGrant,
    act: Action,
) -> anyhow::Result<bool> {
    let name = g.metadata.name.clone().unwrap_or_default();
    let principal = g
        .spec
        .identity
        .service_principal
        .as_ref()
        .map(|p| p.object_id.clone())
        .with_context(|| format!("{name}: the baseline grants service principals only"))?;
    let annotate = |value: serde_json::Value| {
        let api = api.clone();
        let name = name.clone();
        async move {
            let patch = json!({"metadata": {"annotations": {ASSIGNMENTS_ANNOTATION: value}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("annotating {name}"))
        }
    };
    match act {
        Action::Create => {
            let mut ids = Vec::new();
            for r in &g.spec.roles {
                let id = format!(
                    "{}/providers/Microsoft.Authorization/roleAssignments/{}",
                    r.scope.trim_end_matches('/'),
                    arm::random_guid()?
                );
                if arm
                    .put_assignment(token, &id, &r.scope, &r.role, &principal)
                    .await?
                    != Outcome::Done
                {
                    return Ok(false);
                }
                ids.push(id);
            }
            annotate(json!(ids.join(","))).await?;
        }
        Action::Poll(ids) => {
            for (id, r) in ids.iter().zip(&g.spec.roles) {
                match arm.get_assignment(token, id).await? {
                    Outcome::Done => {}
                    // Someone removed it: put it back, as a desired-state loop does.
                    Outcome::NotFound => {
                        if arm
                            .put_assignment(token, id, &r.scope, &r.role, &principal)
                            .await?
                            != Outcome::Done
                        {
                            return Ok(false);
                        }
                    }
                    Outcome::GaveUp => return Ok(false),
                }
            }
        }
        Action::Delete(ids) => {
            for id in &ids {
                if arm.delete_assignment(token, id).await? != Outcome::Done {
                    return Ok(false);
                }
            }
            annotate(serde_json::Value::Null).await?;
        }
    }
    Ok(true)
}

/// Every grant, in the API server's list order, in pages.
async fn list(api: &Api<AccessGrant>) -> anyhow::Result<Vec<AccessGrant>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.context("listing AccessGrants")?;
        out.extend(page.items);
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// One resync pass over every grant.
async fn pass(
    arm: &Arc<Arm>,
    client: &kube::Client,
    list_api: &Api<AccessGrant>,
    concurrency: &Arc<Semaphore>,
) -> anyhow::Result<Tally> {
    let token: Arc<str> = arm.token().await?.into();
    let grants = list(list_api).await?;
    let now = Utc::now();
    let mut tasks = JoinSet::new();
    for g in grants {
        let Some(act) = action(&g, now) else {
            continue;
        };
        let kind = match act {
            Action::Create => 0,
            Action::Poll(_) => 1,
            Action::Delete(_) => 2,
        };
        let ns = g.metadata.namespace.clone().unwrap_or_default();
        let api: Api<AccessGrant> = Api::namespaced(client.clone(), &ns);
        // Taken here, in list order: the list's order is the order requests go out.
        let permit = concurrency.clone().acquire_owned().await?;
        let (arm, token) = (arm.clone(), token.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let r = carry_out(&arm, &token, &api, &g, act).await;
            (kind, g.metadata.name, r)
        });
    }
    let mut tally = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        let (kind, name, r) = joined?;
        match r {
            Ok(true) => match kind {
                0 => tally.created += 1,
                1 => tally.polled += 1,
                _ => tally.deleted += 1,
            },
            Ok(false) => tally.gave_up += 1,
            Err(e) => {
                tally.failed += 1;
                tracing::warn!(grant = name.as_deref().unwrap_or_default(), "{e:#}");
            }
        }
    }
    Ok(tally)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LAPSE_BASELINE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env: HashMap<String, String> = std::env::vars().collect();
    let arm = Arc::new(Arm::from_env(&env)?);
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG)")?;
    let list_api: Api<AccessGrant> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let concurrency = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tick = tokio::time::interval(Duration::from_secs(args.resync_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(
        resync_secs = args.resync_secs,
        concurrency = args.concurrency,
        "lapse-baseline started"
    );
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let t = Instant::now();
        match pass(&arm, &client, &list_api, &concurrency).await {
            Ok(n) => tracing::info!(
                created = n.created,
                polled = n.polled,
                deleted = n.deleted,
                throttled_out = n.gave_up,
                failed = n.failed,
                secs = t.elapsed().as_secs_f64(),
                "pass"
            ),
            Err(e) => tracing::warn!("pass failed: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use lapse_api::v1alpha1::{AccessGrantSpec, Window};

    fn grant(
        not_before: Option<DateTime<Utc>>,
        not_after: DateTime<Utc>,
        ann: Option<&str>,
    ) -> AccessGrant {
        let mut g = AccessGrant::new(
            "g",
            AccessGrantSpec {
                window: Some(Box::new(Window {
                    not_before: not_before.map(|t| t.to_rfc3339()),
                    not_after: Some(not_after.to_rfc3339()),
                })),
                ..Default::default()
            },
        );
        if let Some(a) = ann {
            g.metadata.annotations =
                Some([(ASSIGNMENTS_ANNOTATION.to_owned(), a.to_owned())].into());
        }
        g
    }

    #[test]
    fn an_open_window_without_a_record_is_created_then_polled() {
        let now = Utc::now();
        let end = now + TimeDelta::minutes(5);
        assert!(matches!(
            action(&grant(None, end, None), now),
            Some(Action::Create)
        ));
        assert!(
            matches!(action(&grant(None, end, Some("/a,/b")), now), Some(Action::Poll(ids)) if ids == ["/a", "/b"])
        );
    }

    #[test]
    fn a_closed_window_deletes_what_was_recorded_and_nothing_else() {
        let now = Utc::now();
        let end = now - TimeDelta::seconds(1);
        assert!(matches!(
            action(&grant(None, end, Some("/a")), now),
            Some(Action::Delete(_))
        ));
        assert!(action(&grant(None, end, None), now).is_none());
    }

    #[test]
    fn a_window_not_yet_open_waits() {
        let now = Utc::now();
        let g = grant(
            Some(now + TimeDelta::days(1)),
            now + TimeDelta::days(2),
            None,
        );
        assert!(action(&g, now).is_none());
    }
}
