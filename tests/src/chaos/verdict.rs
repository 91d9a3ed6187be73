//! The invariants, judged from what Azure saw (sim-azure's audit log), what the grants'
//! statuses say and what Azure still holds, once every lease has ended.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use lapse_api::v1alpha1::{AccessGrant, GrantPhase, ObjectState};
use serde_json::Value;

use super::replicas::Span;
use super::report::{ChaosReport, Overstay};
use crate::{acknowledged_at, recorded_ids, succeeded};

/// A grant as the campaign applied it.
#[derive(Debug, Clone)]
pub struct Applied {
    pub name: String,
    pub at: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub federated: bool,
}

/// Everything the judgement reads.
#[derive(Debug)]
pub struct Observed<'a> {
    pub applied: &'a [Applied],
    /// The grants as they ended, by name.
    pub grants: &'a BTreeMap<String, AccessGrant>,
    pub audit: &'a [Value],
    /// Objects carrying the cluster's marker still in Azure.
    pub owned: &'a BTreeSet<String>,
    /// When no replica led.
    pub leaderless: &'a [Span],
    /// When an injected Azure fault could refuse or slow a DELETE of an object.
    pub azure_faults: &'a [Span],
}

fn is_object(path: &str) -> bool {
    path.contains("/roleassignments/") || path.contains("/federatedidentitycredentials/")
}

fn lower_path(e: &Value) -> String {
    e.get("path")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn arrived(e: &Value) -> Option<DateTime<Utc>> {
    serde_json::from_value(e.get("time")?.clone()).ok()
}

/// Milliseconds of `spans` inside `[from, to]`.
pub fn overlap_ms(spans: &[Span], from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    spans
        .iter()
        .map(|(a, b)| {
            let (start, end) = ((*a).max(from), (*b).min(to));
            (end - start).num_milliseconds().max(0)
        })
        .sum()
}

/// Object PUTs that succeeded while an earlier successful PUT of the same object still stood
/// (no successful DELETE between them). Objects are per slot, and grants on one slot never
/// overlap, so each stretch between DELETEs is one lease.
pub fn duplicate_puts(audit: &[Value]) -> Vec<String> {
    let mut standing: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for e in audit.iter().filter(|e| succeeded(e)) {
        let path = lower_path(e);
        if !is_object(&path) {
            continue;
        }
        match e.get("method").and_then(Value::as_str) {
            Some("PUT") => {
                let n = standing.entry(path.clone()).or_default();
                *n += 1;
                if *n > 1 {
                    out.push(format!(
                        "{path}: successful PUT #{n} at {}",
                        e.get("time").unwrap_or(&Value::Null)
                    ));
                }
            }
            Some("DELETE") => {
                standing.remove(&path);
            }
            _ => {}
        }
    }
    out
}

/// Judges the invariants into `report` (whose other fields the campaign fills).
pub fn judge(obs: &Observed<'_>, allowance: std::time::Duration, report: &mut ChaosReport) {
    let allowance_ms = i64::try_from(allowance.as_millis()).unwrap_or(i64::MAX);
    report.allowance = allowance;
    report.grants_planned = obs.applied.len();
    report.duplicate_puts = duplicate_puts(obs.audit);
    report.orphans = obs.owned.iter().cloned().collect();

    let mut recorded_anywhere: BTreeSet<String> = BTreeSet::new();
    for a in obs.applied {
        let Some(g) = obs.grants.get(&a.name) else {
            report
                .unprocessed
                .push(format!("{}: the grant is gone", a.name));
            continue;
        };
        let Some(status) = &g.status else {
            report
                .unprocessed
                .push(format!("{}: no status at all", a.name));
            continue;
        };
        if status.phase != GrantPhase::Expired {
            report.unprocessed.push(format!(
                "{}: {:?} ({})",
                a.name,
                status.phase,
                status.message.as_deref().unwrap_or_default()
            ));
            continue;
        }
        let ids = recorded_ids(g);
        recorded_anywhere.extend(ids.iter().cloned());
        if status.activated_at.is_none() && ids.is_empty() {
            // Expired without activating is right when no replica led for the whole lease.
            let lease_ms = (a.not_after - a.at).num_milliseconds();
            if overlap_ms(obs.leaderless, a.at, a.not_after) >= lease_ms - 2_000 {
                report.grants_unseen.push(a.name.clone());
            } else {
                report.lost_status.push(format!(
                    "{}: Expired without ever recording an activation",
                    a.name
                ));
            }
            continue;
        }
        let mut lost = Vec::new();
        if status.activated_at.is_none() {
            lost.push("no activatedAt".to_owned());
        }
        let ras = status
            .role_assignments
            .iter()
            .filter(|r| r.id.is_some())
            .count();
        if ras != 1 {
            lost.push(format!("{ras} role assignments recorded, not 1"));
        }
        let fic = status
            .federated_credential
            .as_ref()
            .is_some_and(|f| f.id.is_some());
        if fic != a.federated {
            lost.push(format!(
                "federated credential recorded: {fic}, requested: {}",
                a.federated
            ));
        }
        let states = status
            .role_assignments
            .iter()
            .map(|r| r.state)
            .chain(status.federated_credential.iter().map(|f| f.state));
        for state in states.filter(|s| *s != ObjectState::Deleted) {
            lost.push(format!("an object recorded as {state:?}, not Deleted"));
        }
        if status.expires_at.is_some_and(|e| e > a.not_after) {
            lost.push(format!(
                "expiresAt {:?} after notAfter {}",
                status.expires_at, a.not_after
            ));
        }
        for id in &ids {
            measure(obs, a, id, allowance_ms, report, &mut lost);
        }
        if lost.is_empty() {
            report.grants_processed += 1;
        } else {
            report
                .lost_status
                .push(format!("{}: {}", a.name, lost.join("; ")));
        }
    }

    // Every object Azure accepted must be recorded by some grant: otherwise the operator lost
    // track of a write.
    let written: BTreeSet<String> = obs
        .audit
        .iter()
        .filter(|e| succeeded(e) && e.get("method").and_then(Value::as_str) == Some("PUT"))
        .map(lower_path)
        .filter(|p| is_object(p))
        .collect();
    for p in written.difference(&recorded_anywhere) {
        report
            .lost_status
            .push(format!("{p}: written, but no grant's status records it"));
    }
    report.overstays.sort_by_key(|o| -o.ms);
}

/// Finds the DELETE that ended object `id` of grant `a` and measures its overstay.
fn measure(
    obs: &Observed<'_>,
    a: &Applied,
    id: &str,
    allowance_ms: i64,
    report: &mut ChaosReport,
    lost: &mut Vec<String>,
) {
    let delete = obs.audit.iter().find(|e| {
        succeeded(e)
            && e.get("method").and_then(Value::as_str) == Some("DELETE")
            && lower_path(e) == id
            && arrived(e).is_some_and(|t| t >= a.at)
    });
    let Some(delete) = delete else {
        if !obs.owned.contains(id) {
            lost.push(format!("{id} recorded, but Azure never saw it deleted"));
        }
        return;
    };
    let (Some(arrival), Ok(acked)) = (arrived(delete), acknowledged_at(delete)) else {
        lost.push(format!("{id}: its DELETE has no time in the audit log"));
        return;
    };
    report.objects_deleted += 1;
    if arrival < a.not_after {
        report.early_deletes.push(format!(
            "{} {id}: DELETE at {arrival}, lease ended {}",
            a.name, a.not_after
        ));
    }
    let ms = (acked - a.not_after).num_milliseconds();
    report.max_overstay_ms = report.max_overstay_ms.max(ms);
    if ms <= allowance_ms {
        return;
    }
    let leaderless_ms = overlap_ms(obs.leaderless, a.not_after, acked);
    let azure_fault_ms = overlap_ms(obs.azure_faults, a.not_after, acked);
    // A refused DELETE is retried with a doubling backoff, so the retry that succeeds may come
    // as long again after the fault as the fault lasted, plus the first retry's second.
    let retry_ms = if azure_fault_ms > 0 {
        2 * azure_fault_ms + 1_000
    } else {
        0
    };
    report.overstays.push(Overstay {
        grant: a.name.clone(),
        object: id.to_owned(),
        ms,
        leaderless_ms,
        azure_fault_ms,
        allowed_ms: allowance_ms + leaderless_ms + retry_ms,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use serde_json::json;

    fn ms(n: i64) -> TimeDelta {
        TimeDelta::milliseconds(n)
    }

    fn entry(method: &str, path: &str, status: u16, at: DateTime<Utc>) -> Value {
        json!({"method": method, "path": path, "status": status, "time": at, "latency": 10.0})
    }

    #[test]
    fn a_second_successful_put_before_the_delete_is_a_duplicate_and_after_it_is_not() {
        let t = Utc::now();
        let ra = "/subscriptions/s/providers/Microsoft.Authorization/roleAssignments/x";
        let audit = vec![
            entry("PUT", ra, 429, t),
            entry("PUT", ra, 201, t + ms(10)),
            entry("DELETE", ra, 200, t + ms(20)),
            // The slot's next lease.
            entry("PUT", ra, 201, t + ms(30)),
            entry("PUT", ra, 200, t + ms(40)),
        ];
        let dups = duplicate_puts(&audit);
        assert_eq!(dups.len(), 1, "{dups:?}");
        assert!(dups[0].contains("PUT #2"), "{dups:?}");
    }

    #[test]
    fn overlap_counts_only_the_part_inside_the_span() {
        let t = Utc::now();
        let spans = [(t, t + ms(1_000)), (t + ms(5_000), t + ms(6_000))];
        assert_eq!(overlap_ms(&spans, t + ms(500), t + ms(5_500)), 1_000);
        assert_eq!(overlap_ms(&spans, t + ms(2_000), t + ms(3_000)), 0);
    }

    #[test]
    fn an_overstay_is_excused_by_the_time_without_a_leader_and_no_more() {
        let t0 = Utc::now();
        let ra = "/subscriptions/s/providers/microsoft.authorization/roleassignments/x";
        let not_after = t0 + ms(20_000);
        let applied = [Applied {
            name: "g".into(),
            at: t0,
            not_after,
            federated: false,
        }];
        let grant: AccessGrant = serde_json::from_value(json!({
            "apiVersion": "lapse.dev/v1alpha1", "kind": "AccessGrant",
            "metadata": {"name": "g", "namespace": "chaos"},
            "spec": {"identity": {"managedIdentity": "/subscriptions/s/resourceGroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i"},
                "roles": [{"role": "Reader", "scope": "/subscriptions/s"}]},
            "status": {"phase": "Expired", "activatedAt": t0 + ms(500), "expiresAt": not_after,
                "roleAssignments": [{"role": "Reader", "scope": "/subscriptions/s", "id": ra, "state": "Deleted"}]}
        }))
        .unwrap();
        let grants = BTreeMap::from([("g".to_owned(), grant)]);
        let judge_with = |delete_after_ms: i64, leaderless: &[Span]| {
            let audit = vec![
                entry("PUT", ra, 201, t0 + ms(600)),
                entry("DELETE", ra, 200, not_after + ms(delete_after_ms)),
            ];
            let mut r = ChaosReport::default();
            judge(
                &Observed {
                    applied: &applied,
                    grants: &grants,
                    audit: &audit,
                    owned: &BTreeSet::new(),
                    leaderless,
                    azure_faults: &[],
                },
                std::time::Duration::from_secs(3),
                &mut r,
            );
            r
        };
        let on_time = judge_with(1_000, &[]);
        assert!(on_time.passed(), "{on_time}");
        assert_eq!(on_time.grants_processed, 1);
        assert!(on_time.overstays.is_empty());
        let late = judge_with(9_000, &[]);
        assert_eq!(late.violations().count(), 1, "{late}");
        let gap = [(not_after - ms(1_000), not_after + ms(7_000))];
        let excused = judge_with(9_000, &gap);
        assert!(excused.passed(), "{excused}");
        assert_eq!(excused.overstays.len(), 1, "still listed: {excused}");
        let early = judge_with(-500, &[]);
        assert_eq!(early.early_deletes.len(), 1, "{early}");
    }
}
