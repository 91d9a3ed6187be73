//! Phase 5c: synchronized expiry (docs/architecture.md). `LAPSE_BENCH_SYNC_GRANTS` (2,000)
//! leases in one subscription, every one ending in the same second: beyond ARM's delete budget
//! (200 at once, then 10 a second), so the operator must start deletes early. Measured from
//! Azure's request log: how long after the common end each lease's DELETE was acknowledged
//! (overstay), how early leases ended and whether more than the budget forces, 429s answered
//! to the deletes; from the grants and the operator's audit lines: whether each early end says
//! so. The operator runs with its audit lines on for the round (and as configured after it).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::bail;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use lapse_api::v1alpha1::GrantPhase;
use serde_json::Value;

use crate::figures::Distribution;
use crate::harness::{Bench, RESOURCE_GROUP};
use crate::report::Row;
use crate::{Config, WRITE_BURST, WRITE_REFILL, between, grant, secs, wait_phase};

/// ARM's delete budget per subscription (sim-azure enforces Azure's).
const DELETE_BURST: f64 = 200.0;
const DELETE_REFILL: f64 = 10.0;
/// The operator's default `--delete-headroom`: what it plans with is 90 % of the budget.
const PLANNED_SHARE: f64 = 0.9;

/// What the round measured; also written to report.json.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Synchronized {
    pub leases: usize,
    /// Lease end to DELETE acknowledged, seconds (negative: before the end).
    pub overstay: Distribution,
    /// Leases whose DELETE was acknowledged more than 3 s after the end.
    pub overstays_beyond_3s: usize,
    /// Leases that ended early, and by how much (`status.endedEarlySeconds`).
    pub ended_early: Distribution,
    /// The most the budget forces (its full 200 + 10/s), and with the operator's headroom.
    pub forced_early_secs: f64,
    pub planned_early_secs: f64,
    /// Early ends whose status disagrees with itself (endedEarlySeconds vs expiresAt − endedAt,
    /// or a message not saying why), and leases ended before their expiry without saying so.
    pub unexplained: usize,
    /// Early-ended leases with an audit line carrying `ended_early_seconds`.
    pub audited: usize,
    pub refused_deletes: usize,
    /// Seconds from apply until every lease was Active, and from the first planned start.
    pub active_after_secs: f64,
}

/// Runs the round against `sub`; the operator is restarted twice (audit lines on, then back).
pub async fn round(
    b: &mut Bench,
    cfg: &Config,
    principals: &[String],
    sub: &str,
) -> anyhow::Result<(Row, Synchronized)> {
    let n = cfg.sync_grants;
    let base_env = b.operator_env.clone();
    let mut env = base_env.clone();
    env.push(("LAPSE_LOG".into(), "warn,lapse::audit=info".into()));
    env.push(("LAPSE_LOG_FORMAT".into(), "json".into()));
    b.op()?.kill();
    b.spawn_operator(env)?;
    b.wait_ready().await?;
    let log = b.op()?.log.clone();

    // Activation is bound by the write budget; the early starts need the delete budget's time
    // before the end: the end leaves room for both, so every lease is live before the first
    // planned start.
    let extra = (n as f64 - WRITE_BURST).max(0.0);
    let activation = extra / WRITE_REFILL;
    let planned_early = (n as f64 - (DELETE_BURST * PLANNED_SHARE).floor()).max(0.0)
        / (DELETE_REFILL * PLANNED_SHARE);
    let forced_early = (n as f64 - DELETE_BURST).max(0.0) / DELETE_REFILL;
    let from = Utc::now();
    let end = (from
        + TimeDelta::milliseconds(((activation * 1.3 + planned_early + 30.0) * 1000.0) as i64))
    .trunc_subsecs(0);
    println!(
        "synchronized expiry: {n} leases in subscription {sub}, all ending at {end} ({:.0}s \
         from now); activation takes about {activation:.0}s of write budget, the earliest delete \
         starts about {planned_early:.0}s before the end",
        secs(end - from)
    );
    let grants = (0..n)
        .map(|i| {
            grant(
                &format!("s{i:05}"),
                &principals[i],
                format!("/subscriptions/{sub}/resourceGroups/{RESOURCE_GROUP}"),
                None,
                end,
            )
        })
        .collect();
    b.create_grants("bench-sync", grants, cfg.parallel).await?;
    wait_phase(
        b,
        "synchronized leases active",
        "Active",
        n as u64,
        Duration::from_secs_f64(activation * 3.0 + 120.0),
        Duration::from_millis(500),
    )
    .await?;
    let active_after = secs(Utc::now() - from);
    let first_start = end - TimeDelta::milliseconds((planned_early * 1000.0) as i64);
    if Utc::now() > first_start {
        println!(
            "warning: the last lease activated {:.1}s after the first planned start",
            secs(Utc::now() - first_start)
        );
    }
    // Counted from the round's own grants: the Expired gauge of an operator just restarted is
    // still counting the earlier phases' grants, and would call the round done early.
    let deadline = end + TimeDelta::seconds(300);
    let listed = loop {
        let listed = b.list_grants("bench-sync").await?;
        let expired = listed
            .iter()
            .filter(|g| {
                g.status
                    .as_ref()
                    .is_some_and(|s| s.phase == GrantPhase::Expired)
            })
            .count();
        if expired >= n {
            break listed;
        }
        if Utc::now() > deadline {
            bail!("{expired} of {n} synchronized leases Expired 300 s after their end");
        }
        b.op()?.check_alive()?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let audit = b.audit().await?;
    let calls = between(&audit, from, Utc::now());
    // Role assignment ID → when ARM acknowledged its delete.
    let deleted: HashMap<&str, DateTime<Utc>> = calls
        .iter()
        .filter(|c| c.method == "DELETE" && c.is_assignment() && c.ok())
        .map(|c| (c.path.as_str(), c.acked))
        .collect();
    let refused = calls
        .iter()
        .filter(|c| c.method == "DELETE" && c.status == 429)
        .count();
    let mut overstay = Vec::new();
    let mut early = Vec::new();
    let mut early_names = HashSet::new();
    let mut unexplained = 0;
    let mut undeleted: Vec<String> = Vec::new();
    for g in &listed {
        let Some(st) = g.status.as_ref() else {
            continue;
        };
        let (Some(expires), Some(ended)) = (st.expires_at, st.ended_at) else {
            continue;
        };
        let id = st
            .role_assignments
            .first()
            .and_then(|r| r.id.as_deref())
            .map(str::to_ascii_lowercase);
        match id.as_deref().and_then(|id| deleted.get(id)) {
            Some(at) => overstay.push(secs(*at - expires)),
            None => {
                if undeleted.is_empty() {
                    let seen: Vec<String> = calls
                        .iter()
                        .filter(|c| id.as_deref().is_some_and(|id| c.path == id))
                        .map(|c| format!("{} {} at {}", c.method, c.status, c.time))
                        .collect();
                    println!(
                        "synchronized expiry: no acknowledged DELETE for {:?} ({id:?}, ended {ended}, \
                         {:?}); Azure saw: {seen:?}",
                        g.metadata.name, st.phase
                    );
                }
                undeleted.push(g.metadata.name.clone().unwrap_or_default());
            }
        }
        match st.ended_early_seconds {
            Some(s) => {
                let by = secs(expires - ended);
                let says_why = st
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains("synchronized expiry"));
                if !(by > 0.0 && (f64::from(s) - by).abs() < 1.0 && says_why) {
                    unexplained += 1;
                }
                early.push(f64::from(s));
                if let Some(name) = g.metadata.name.clone() {
                    early_names.insert(name);
                }
            }
            None if ended < expires => unexplained += 1,
            None => {}
        }
    }
    let audited = audited_grants(&std::fs::read_to_string(&log).unwrap_or_default())
        .intersection(&early_names)
        .count();

    // The rest of the bench measures the operator as configured for it.
    b.op()?.kill();
    b.spawn_operator(base_env)?;
    b.wait_ready().await?;

    let overstay = Distribution::new(overstay);
    let beyond = overstay.samples.iter().filter(|s| **s > 3.0).count();
    let ended_early = Distribution::new(early);
    let found = overstay_summary(&overstay);
    let measured = Synchronized {
        leases: n,
        overstays_beyond_3s: beyond,
        forced_early_secs: forced_early,
        planned_early_secs: planned_early,
        unexplained,
        audited,
        refused_deletes: refused,
        active_after_secs: active_after,
        overstay,
        ended_early,
    };
    let early_max = measured.ended_early.max.unwrap_or(0.0);
    println!(
        "{:<46} {n} leases: {found}; {} ended early (the budget forces up to {forced_early:.0}s, \
         {planned_early:.0}s with the operator's 10% headroom), {unexplained} unexplained, \
         {audited} audit lines; {refused} DELETEs answered 429; all Active {active_after:.0}s \
         after apply",
        "synchronized expiry", measured.ended_early.n,
    );
    let met = measured.overstay.n == n
        && beyond == 0
        && early_max <= planned_early.ceil() + 1.0
        && unexplained == 0
        && audited == measured.ended_early.n
        && refused == 0;
    Ok((
        Row {
            measure: format!("synchronized expiry, {n} leases ending in one second"),
            target: "no overstay > 3 s; early only as the budget forces; status and audit say so",
            measured: format!(
                "{found} ({} deletes); {} ended early by <= {early_max:.0}s (budget forces \
                 {forced_early:.0}s, {planned_early:.0}s with 10% headroom); {unexplained} not \
                 explained by their status, {audited} audit lines; {refused} deletes refused",
                measured.overstay.n, measured.ended_early.n,
            ),
            met: Some(met),
        },
        measured,
    ))
}

fn overstay_summary(overstay: &Distribution) -> String {
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
    format!(
        "overstay p50/p99/max {}/{}/{} s",
        f(overstay.p50),
        f(overstay.p99),
        f(overstay.max)
    )
}

/// Grants named by an audit line of a transition that carries a non-zero
/// `ended_early_seconds` (the operator's JSON log format).
fn audited_grants(log: &str) -> HashSet<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "lapse::audit" && v["fields"]["event"] == "Transition")
        .filter(|v| {
            v["fields"]["ended_early_seconds"]
                .as_u64()
                .is_some_and(|s| s > 0)
        })
        .filter_map(|v| v["fields"]["grant"].as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn audit_lines_name_the_grants_that_ended_early() {
        let line = |target: &str, grant: &str, early: u32| {
            json!({"timestamp": "2026-12-06T08:00:00Z", "level": "INFO", "target": target,
                   "fields": {"message": "AccessGrant bench-sync/x: Active -> Revoking",
                              "event": "Transition", "grant": grant,
                              "ended_early_seconds": early}})
            .to_string()
        };
        let log = [
            line("lapse::audit", "s00001", 150),
            line("lapse::audit", "s00002", 0),
            line("lapse_controller", "s00003", 9),
            "not json".to_owned(),
        ]
        .join("\n");
        assert_eq!(audited_grants(&log), HashSet::from(["s00001".to_owned()]));
    }
}
