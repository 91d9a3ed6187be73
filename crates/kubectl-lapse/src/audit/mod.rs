//! `audit`: the estate audit (docs/kubectl-lapse.md, "audit"). Lists Azure with the caller's
//! credentials (`estate.rs`) and, when a kubeconfig is usable, reads the cluster's grants and
//! policies (`cluster.rs`); `findings.rs` judges them (pure), `suggest.rs` writes the
//! manifests that would replace standing access; this module prints and picks the exit code.

mod cluster;
mod connect;
mod estate;
pub mod findings;
mod progress;
mod suggest;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use chrono::{TimeDelta, Utc};
use lapse_api::arm::ArmId;
use serde::Serialize;

use crate::cli::{AuditArgs, Global, Output};
use crate::exit::Stop;
use crate::table::Table;
use crate::{output, time};
use findings::{Finding, FindingKind, Options, Report, Tally};
use suggest::{SuggestOptions, Suggestion};

/// `--max-secret-age`: whole days (`90d`) or a Go duration (`2160h`).
fn parse_age(s: &str) -> Result<TimeDelta, Stop> {
    let bad = |why: String| Stop::Usage(format!("--max-secret-age {s:?}: {why}"));
    if let Some(days) = s.trim().strip_suffix('d') {
        return match days.parse::<i64>() {
            Ok(d) if d > 0 && d <= 36_500 => Ok(TimeDelta::days(d)),
            _ => Err(bad("days must be a whole number from 1 to 36500".into())),
        };
    }
    time::parse_duration("--max-secret-age", s)
        .map(|d| d.to_chrono())
        .map_err(|e| bad(e.to_string()))
}

/// `--fail-on`: kinds by name (case-insensitive), or `all`.
fn parse_fail_on(values: &[String]) -> Result<Vec<FindingKind>, Stop> {
    let mut kinds = Vec::new();
    for v in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
        if v.eq_ignore_ascii_case("all") {
            kinds.extend(FindingKind::ALL);
            continue;
        }
        kinds.push(FindingKind::parse(v).ok_or_else(|| {
            Stop::Usage(format!(
                "--fail-on: {v:?} is not a finding kind (one of {}, or all)",
                FindingKind::ALL.map(FindingKind::as_str).join(", ")
            ))
        })?);
    }
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

/// A scope for the table: `subscription`, `rg/<name>`, `<group>/<type>/<name>`.
fn short_scope(scope: &str) -> String {
    let Ok(id) = ArmId::parse(scope) else {
        return scope.to_owned();
    };
    match (id.resource_group(), id.name()) {
        (None, _) => "subscription".into(),
        (Some(rg), _) if id.provider().is_none() => format!("rg/{rg}"),
        (Some(rg), Some(name)) => {
            let kind = id
                .resource_type()
                .and_then(|t| t.rsplit('/').next().map(str::to_owned))
                .unwrap_or_default();
            format!("{rg}/{kind}/{name}")
        }
        (Some(rg), None) => format!("rg/{rg}"),
    }
}

fn what_and_where(f: &Finding) -> (String, String) {
    if let Some(u) = &f.usage {
        // Usage evidence: which grant, and when.
        return (
            f.grant
                .as_deref()
                .map_or_else(|| "no lease".to_owned(), |g| format!("grant {g}")),
            format!("at {}", time::rfc3339(u.at)),
        );
    }
    if let Some(issuer) = &f.issuer {
        let name = f.object_id.rsplit('/').next().unwrap_or_default();
        let host = url::Url::parse(issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| issuer.clone());
        let name = if f.principal.kind == "Application" {
            // Graph IDs are GUIDs; the detail names the credential.
            "federated credential".to_owned()
        } else {
            format!("FIC {name}")
        };
        return (name, format!("issuer {host}"));
    }
    (
        f.role.clone().unwrap_or_else(|| "-".into()),
        f.scope.as_deref().map_or_else(|| "-".into(), short_scope),
    )
}

fn policy_cell(f: &Finding) -> String {
    match (&f.kind, &f.covered_by) {
        (FindingKind::StandingRoleAssignment | FindingKind::StandingFederation, Some(p))
            if !p.is_empty() =>
        {
            p.join(",")
        }
        (FindingKind::StandingRoleAssignment, Some(_)) => "none".into(),
        (FindingKind::StandingFederation, Some(_))
            if f.subject
                .as_deref()
                .is_some_and(|s| s.starts_with("system:serviceaccount:")) =>
        {
            "none".into()
        }
        (FindingKind::StandingRoleAssignment, None) => "?".into(),
        _ => "-".into(),
    }
}

/// The findings as a table.
pub fn table(findings: &[Finding]) -> String {
    let mut t = Table::new(&["kind", "principal", "what", "where", "policy", "note", "id"]);
    for f in findings {
        let (what, place) = what_and_where(f);
        t.row(vec![
            f.kind.to_string(),
            f.principal.short(),
            what,
            place,
            policy_cell(f),
            if f.note.is_empty() {
                "-".into()
            } else {
                f.note.clone()
            },
            if f.object_id.is_empty() {
                "-".into()
            } else {
                f.object_id.clone()
            },
        ]);
    }
    t.render()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Counts per kind, in the kinds' order.
fn by_kind(findings: &[Finding]) -> BTreeMap<FindingKind, usize> {
    let mut m = BTreeMap::new();
    for f in findings {
        *m.entry(f.kind).or_default() += 1;
    }
    m
}

/// What the audit looked at, in a few lines for people.
fn summary(report: &Report, run: &Run, reads: &estate::Reads, seconds: f64) -> String {
    let mut s = String::new();
    let kinds = by_kind(&report.findings);
    if report.findings.is_empty() {
        s.push_str("No findings: every credential path seen keeps lapse's lifecycle.\n");
    } else {
        let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let _ = writeln!(
            s,
            "{}: {}.",
            plural(report.findings.len(), "finding", "findings"),
            parts.join(", ")
        );
    }
    let t: &Tally = &report.tally;
    let subs = match run.subscriptions.as_slice() {
        [one] => format!("subscription {one}"),
        many => format!("{} subscriptions", many.len()),
    };
    let _ = writeln!(
        s,
        "Audited {subs} as {} with {}.",
        run.caller.as_deref().unwrap_or("an unknown principal"),
        run.credential,
    );
    let _ = writeln!(
        s,
        "Listed {} ({} to users or groups), {}, {}, {} with {}.",
        plural(t.role_assignments, "role assignment", "role assignments"),
        t.user_and_group_assignments,
        plural(
            t.identities,
            "user-assigned identity",
            "user-assigned identities"
        ),
        plural(
            t.federated_credentials,
            "federated credential",
            "federated credentials"
        ),
        plural(t.applications, "app registration", "app registrations"),
        plural(
            t.credentials,
            "secret or certificate",
            "secrets or certificates"
        ),
    );
    let _ = writeln!(
        s,
        "Lapse's own objects: {} held by live leases, {} of other lapse clusters, {} not judged.",
        t.governed_by_lapse, t.other_clusters, t.unchecked,
    );
    match &run.cluster {
        Some(c) => {
            let _ = writeln!(
                s,
                "Cluster: lapse cluster name {}{}, {}, {}.",
                if report.cluster_names.is_empty() {
                    "unknown".to_owned()
                } else {
                    report.cluster_names.join(", ")
                },
                c.cluster_id
                    .as_ref()
                    .map(|id| format!(" (ID {id})"))
                    .unwrap_or_default(),
                c.grants.as_ref().map_or_else(
                    || "AccessGrants not readable".to_owned(),
                    |g| plural(g.len(), "AccessGrant", "AccessGrants")
                ),
                c.policies.as_ref().map_or_else(
                    || "AccessPolicies not readable".to_owned(),
                    |p| plural(p.len(), "AccessPolicy", "AccessPolicies")
                ),
            );
        }
        None => {
            let _ = writeln!(
                s,
                "Cluster: not read{}.",
                run.no_cluster_reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
    }
    let _ = writeln!(
        s,
        "{} ARM and {} Graph reads ({} throttled) in {seconds:.1}s.",
        reads.arm, reads.graph, reads.throttled
    );
    s
}

/// One finding in `-o json|yaml`, with its suggestion under `--suggest`.
#[derive(Serialize)]
struct FindingOut<'a> {
    #[serde(flatten)]
    finding: &'a Finding,
    #[serde(skip_serializing_if = "Option::is_none")]
    suggestion: Option<&'a Suggestion>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grants: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policies: Option<usize>,
}

/// The whole audit for `-o json|yaml`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    kind: &'static str,
    audited_at: String,
    subscriptions: &'a [String],
    credential: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    caller: Option<String>,
    cluster: Option<ClusterOut>,
    summary: BTreeMap<String, usize>,
    findings: Vec<FindingOut<'a>>,
    tally: &'a Tally,
    /// Kinds that could not be checked (no cluster, Graph refused).
    not_checked: Vec<FindingKind>,
    notes: &'a [String],
    reads: estate::Reads,
    duration_seconds: f64,
}

/// What one run knows besides the report.
struct Run {
    subscriptions: Vec<String>,
    credential: &'static str,
    caller: Option<String>,
    cluster: Option<findings::Cluster>,
    no_cluster_reason: Option<String>,
}

pub async fn run(global: &Global, args: &AuditArgs, out: Option<Output>) -> anyhow::Result<()> {
    let started = Instant::now();
    let now = Utc::now();
    let fail_on = parse_fail_on(&args.fail_on)?;
    let max_secret_age = parse_age(&args.max_secret_age)?;
    let overstay_after =
        time::parse_duration("--overstay-after", &args.overstay_after)?.to_chrono();
    if args.suggest {
        time::parse_duration("--suggest-duration", &args.suggest_duration)?;
    }
    let progress = progress::Progress::stderr();
    let (azure, source) = connect::client(args)?;

    let (cluster, no_cluster_reason) = if args.no_cluster {
        (None, Some("--no-cluster".to_owned()))
    } else {
        progress.show("reading the cluster");
        match cluster::read(global, args).await {
            Ok(c) => (Some(c), None),
            Err(why) => (None, Some(why)),
        }
    };
    let subscriptions = estate::subscriptions(&azure, &args.subscriptions)
        .await
        .map_err(|e| match source {
            // Say why the CLI was asked: no other credential was set.
            connect::CredentialSource::AzureCli => e.context(
                "no AZURE_CLIENT_SECRET or AZURE_FEDERATED_TOKEN_FILE is set, so the audit \
                 asked the Azure CLI's login (az login)",
            ),
            _ => e,
        })?;
    let mut listing = estate::list(&azure, subscriptions.clone(), &progress).await?;
    let options = Options {
        now,
        max_secret_age,
        overstay_after,
    };
    // Locks only where lapse has objects: no read at all when it has none.
    let locked_subs = findings::lock_subscriptions(&listing.estate, cluster.as_ref(), &options);
    let (locks, locks_note) = estate::locks(&azure, &locked_subs, &progress).await?;
    listing.estate.locks = locks;
    listing.notes.extend(locks_note);
    let mut report = findings::audit(&listing.estate, cluster.as_ref(), &options);
    report.notes.splice(0..0, listing.notes.iter().cloned());
    if let Some(why) = &no_cluster_reason {
        report
            .notes
            .iter_mut()
            .filter(|n| n.starts_with("no cluster"))
            .for_each(|n| *n = format!("{n} (the cluster was not read: {why})"));
    }
    let mut not_checked = Vec::new();
    if cluster.as_ref().is_none_or(|c| c.grants.is_none()) {
        not_checked.extend([FindingKind::Orphan, FindingKind::Overstay]);
        not_checked.extend(FindingKind::FROM_GRANTS);
    }
    if cluster.as_ref().is_none_or(|c| c.unleased.is_none()) {
        not_checked.push(FindingKind::UseWithoutLease);
    }
    not_checked.sort();
    if listing.applications_unread {
        not_checked.push(FindingKind::LongLivedSecret);
    }
    if listing.estate.locks.is_none() {
        not_checked.push(FindingKind::LockedLapseObject);
    }
    let reads = estate::reads(&azure);
    let seconds = started.elapsed().as_secs_f64();
    let run = Run {
        subscriptions,
        credential: source.describe(),
        caller: listing.estate.caller.map(|c| {
            match listing
                .estate
                .principals
                .get(&c)
                .and_then(|p| p.display_name.as_deref())
            {
                Some(name) => format!("sp/{name} ({c})"),
                None => format!("principal {c}"),
            }
        }),
        cluster,
        no_cluster_reason,
    };

    let namespace = global.namespace.clone().unwrap_or_else(|| "default".into());
    let suggestions: Vec<Option<Suggestion>> = report
        .findings
        .iter()
        .map(|f| {
            args.suggest
                .then(|| {
                    suggest::suggest(
                        f,
                        &SuggestOptions {
                            namespace: &namespace,
                            duration: &args.suggest_duration,
                        },
                    )
                })
                .flatten()
        })
        .collect();

    match out {
        Some(format) => {
            let doc = Document {
                kind: "EstateAudit",
                audited_at: time::rfc3339(now),
                subscriptions: &run.subscriptions,
                credential: run.credential,
                caller: run.caller.clone(),
                cluster: run.cluster.as_ref().map(|c| ClusterOut {
                    id: c.cluster_id.clone(),
                    names: report.cluster_names.clone(),
                    grants: c.grants.as_ref().map(Vec::len),
                    policies: c.policies.as_ref().map(Vec::len),
                }),
                summary: by_kind(&report.findings)
                    .into_iter()
                    .map(|(k, n)| (k.to_string(), n))
                    .collect(),
                findings: report
                    .findings
                    .iter()
                    .zip(&suggestions)
                    .map(|(finding, suggestion)| FindingOut {
                        finding,
                        suggestion: suggestion.as_ref(),
                    })
                    .collect(),
                tally: &report.tally,
                not_checked: not_checked.clone(),
                notes: &report.notes,
                reads,
                duration_seconds: (seconds * 1000.0).round() / 1000.0,
            };
            output::print(format, &doc)?;
            for n in &report.notes {
                eprintln!("note: {n}");
            }
        }
        None if args.suggest => {
            // The manifests alone on stdout, ready to review and apply.
            let docs: Vec<&Suggestion> = suggestions.iter().flatten().collect();
            for s in &docs {
                println!("{}", s.yaml.trim_end());
            }
            eprint!("{}", summary(&report, &run, &reads, seconds));
            let usage = report
                .findings
                .iter()
                .zip(&suggestions)
                .filter(|(f, s)| f.kind.is_usage() && s.is_some())
                .count();
            let (unlocks, replacements): (Vec<&Suggestion>, Vec<&Suggestion>) = report
                .findings
                .iter()
                .zip(&suggestions)
                .filter(|(f, _)| !f.kind.is_usage())
                .filter_map(|(_, s)| s.as_ref())
                .partition(|s| s.grant.is_none());
            if replacements.is_empty() {
                eprintln!("No standing role assignment to replace.");
            } else {
                eprintln!(
                    "{} to review, apply, then remove the standing assignments they replace.",
                    plural(replacements.len(), "suggestion", "suggestions")
                );
            }
            if !unlocks.is_empty() {
                eprintln!(
                    "{} under a management lock: lift the lock or remove the object (the \
                     comments say how).",
                    plural(unlocks.len(), "object of lapse's", "objects of lapse's")
                );
            }
            if usage > 0 {
                eprintln!(
                    "{} from the logs: what to do is in the comments.",
                    plural(usage, "usage finding", "usage findings")
                );
            }
            for n in &report.notes {
                eprintln!("note: {n}");
            }
        }
        None => {
            if !report.findings.is_empty() {
                println!("{}", table(&report.findings));
            }
            print!("{}", summary(&report, &run, &reads, seconds));
            for n in &report.notes {
                eprintln!("note: {n}");
            }
        }
    }

    let blind: Vec<&str> = fail_on
        .iter()
        .filter(|k| not_checked.contains(k))
        .map(|k| k.as_str())
        .collect();
    if !blind.is_empty() {
        anyhow::bail!(
            "--fail-on {}: not checked (see the notes above), so the audit cannot vouch for it",
            blind.join(",")
        );
    }
    let failing: Vec<String> = by_kind(&report.findings)
        .into_iter()
        .filter(|(k, _)| fail_on.contains(k))
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    if !failing.is_empty() {
        return Err(Stop::Findings(format!(
            "{} (--fail-on {})",
            failing.join(", "),
            fail_on
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_days_or_go_durations() {
        assert_eq!(parse_age("90d").ok(), Some(TimeDelta::days(90)));
        assert_eq!(parse_age("2160h").ok(), Some(TimeDelta::days(90)));
        assert!(parse_age("0d").is_err());
        assert!(parse_age("ninety").is_err());
    }

    #[test]
    fn fail_on_takes_kinds_or_all() {
        assert_eq!(
            parse_fail_on(&["orphan".into(), "Overstay".into(), "Orphan".into()]).ok(),
            Some(vec![FindingKind::Orphan, FindingKind::Overstay])
        );
        assert_eq!(
            parse_fail_on(&["all".into()]).map(|k| k.len()).ok(),
            Some(12)
        );
        assert_eq!(
            parse_fail_on(&["UseWithoutLease".into(), "rightsize".into()]).ok(),
            Some(vec![FindingKind::UseWithoutLease, FindingKind::RightSize])
        );
        let err = parse_fail_on(&["Standing".into()])
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("StandingRoleAssignment")),
            "{err:?}"
        );
    }

    #[test]
    fn a_usage_finding_reads_as_its_grant_and_time_and_serialises_its_event() {
        let f = Finding {
            kind: FindingKind::SensitiveAction,
            object_id: String::new(),
            principal: findings::Principal {
                id: "p".into(),
                display_name: Some("runner".into()),
                kind: "ManagedIdentity".into(),
                resource_id: None,
                is_caller: false,
            },
            scope: None,
            role: None,
            role_definition_id: None,
            issuer: None,
            subject: None,
            credential: None,
            covered_by: None,
            grant: Some("payments/etl".into()),
            locks: Vec::new(),
            usage: Some(findings::UsageFacts {
                at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
                event: None,
                message: "deleted a vault".into(),
            }),
            detail: "grant payments/etl: deleted a vault".into(),
            note: "deleted a vault".into(),
        };
        let t = table(std::slice::from_ref(&f));
        let row = t.lines().nth(1).unwrap_or_default();
        for part in [
            "SensitiveAction",
            "mi/runner",
            "grant payments/etl",
            "at 2027-01-15T08:00:00Z",
            "deleted a vault",
        ] {
            assert!(row.contains(part), "{part:?} in {row:?}");
        }
        assert!(row.trim_end().ends_with('-'), "no event: {row:?}");
        let json = serde_json::to_value(&f).unwrap_or_default();
        assert_eq!(json["kind"], "SensitiveAction");
        assert_eq!(json["grant"], "payments/etl");
        assert_eq!(json["usage"]["at"], "2027-01-15T08:00:00Z");
        assert_eq!(json["usage"]["message"], "deleted a vault");
    }

    #[test]
    fn scopes_read_short() {
        let sub = "/subscriptions/00000000-0000-4000-8000-00000000a001";
        assert_eq!(short_scope(sub), "subscription");
        assert_eq!(short_scope(&format!("{sub}/resourceGroups/rg")), "rg/rg");
        assert_eq!(
            short_scope(&format!(
                "{sub}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/data"
            )),
            "rg/storageAccounts/data"
        );
    }
}
