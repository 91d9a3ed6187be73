//! `lapse-operator check`: asks ARM's permissions API (`GET {scope}/providers/
//! Microsoft.Authorization/permissions`) what the operator's own identity may do at each scope
//! the AccessPolicies involve, and names every action it lacks. The operator runs the same
//! check at start-up and logs what is missing as warnings.
//!
//! With usage evidence on (`--usage-activity-log`, `--usage-sign-ins`, as on `run`), it also
//! reads one page of each log the operator would read (each policy subscription's Activity
//! Log from five minutes ago, each kind of workload sign-in) and names what a refusal lacks.
//!
//! ARM's answer does not show ABAC conditions: an assignment whose condition leaves a role out
//! still lists `roleAssignments/write`, and Azure refuses that role only when it is assigned.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context as _;
use chrono::{TimeDelta, Utc};
use clap::Args;
use lapse_api::arm::ArmId;
use lapse_azure::{AzureClient, AzureError, ErrorClass, Permission, SignInKind};

use crate::azure_args::AzureArgs;
use crate::azure_role::{ACTIVITY_LOG_READ, Plan, Requirement, UsageLogs};
use crate::policies::SourcedPolicy;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Check for these AccessPolicies (a directory, a file, or `-` for stdin) instead of the
    /// cluster's (read with KUBECONFIG, or the pod's ServiceAccount).
    #[arg(long, value_name = "DIR|FILE|-")]
    pub policies: Option<String>,

    #[command(flatten)]
    pub azure: AzureArgs,

    #[command(flatten)]
    pub usage: UsageLogs,
}

/// One read of a usage log: what was read, and what failed.
#[derive(Debug, PartialEq, Eq)]
pub struct LogProbe {
    pub log: String,
    /// `None` when the page was read; else why not, naming what is missing when Azure says.
    pub failure: Option<String>,
}

/// What a refused Activity Log read lacks.
pub fn activity_log_failure(subscription: &str, e: &AzureError) -> String {
    if e.code() == Some("AuthorizationFailed") || e.status() == Some(403) {
        format!(
            "missing {ACTIVITY_LOG_READ} at /subscriptions/{subscription} (`lapse-operator \
             azure-role --usage-activity-log` plans it): {e}"
        )
    } else {
        e.to_string()
    }
}

/// What a refused sign-in read lacks: the tenant's licence, or Graph's permission.
pub fn sign_ins_failure(e: &AzureError) -> String {
    let text = e.to_string().to_ascii_lowercase();
    let unlicensed = e
        .code()
        .is_some_and(|c| c.to_ascii_lowercase().contains("nonpremium"))
        || text.contains("premium licen")
        || text.contains("p1 or p2");
    if unlicensed {
        format!(
            "the tenant has no Microsoft Entra ID P1 or P2 licence, which Graph's sign-in log \
             needs: {e}"
        )
    } else if e.status() == Some(403) {
        format!(
            "missing the Microsoft Graph application permission AuditLog.Read.All (admin \
             consent) on the operator's service principal: {e}"
        )
    } else {
        e.to_string()
    }
}

/// Reads one page of each usage log the operator would read.
pub async fn probe_usage_logs(azure: &AzureClient, plan: &Plan) -> Vec<LogProbe> {
    let mut out = Vec::new();
    let from = Utc::now() - TimeDelta::minutes(5);
    if plan.usage.usage_activity_log {
        let mut subs: Vec<String> = plan
            .policy_scopes
            .iter()
            .filter_map(|s| s.scope.subscription().map(str::to_ascii_lowercase))
            .collect();
        subs.sort();
        subs.dedup();
        for sub in subs {
            let failure = azure
                .activity_log_page(&sub, from, None, None)
                .await
                .err()
                .map(|e| activity_log_failure(&sub, &e));
            out.push(LogProbe {
                log: format!("the Activity Log of subscription {sub}"),
                failure,
            });
        }
    }
    if plan.usage.usage_sign_ins {
        for (kind, name) in [
            (SignInKind::ServicePrincipal, "service principal"),
            (SignInKind::ManagedIdentity, "managed identity"),
        ] {
            let failure = azure
                .sign_ins_page(kind, from, None)
                .await
                .err()
                .map(|e| sign_ins_failure(&e));
            out.push(LogProbe {
                log: format!("the {name} sign-in log (Microsoft Graph)"),
                failure,
            });
        }
    }
    out
}

/// The log reads as `check` prints them (nothing when usage evidence is off).
pub fn render_probes(probes: &[LogProbe]) -> String {
    let mut o = String::new();
    if probes.is_empty() {
        return o;
    }
    let _ = writeln!(
        o,
        "\nUsage evidence: one page of each log the operator reads"
    );
    for p in probes {
        match &p.failure {
            None => {
                let _ = writeln!(o, "  passed   {}", p.log);
            }
            Some(why) => {
                let _ = writeln!(o, "  FAILED   {}: {why}", p.log);
            }
        }
    }
    o
}

/// What ARM said about one scope.
#[derive(Debug)]
enum Answer {
    Permissions(Vec<Permission>),
    /// ARM refused to list permissions here (`AuthorizationFailed`): the identity has no role
    /// at or above the scope that allows `Microsoft.Authorization/permissions/read`.
    Refused,
    /// Another failure: the scope is missing, Azure failed, ...
    Failed(AzureError),
}

/// One requirement and what is missing of it.
#[derive(Debug)]
pub struct Finding {
    pub requirement: Requirement,
    /// `None` when the scope could not be checked (the error says why).
    pub missing: Option<Vec<&'static str>>,
    pub error: Option<String>,
    /// ARM refused to list the permissions (no role of the identity applies here).
    pub refused: bool,
}

/// The outcome of a check.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// Actions missing, as (scope, action, purpose).
    pub fn missing(&self) -> Vec<(&ArmId, &'static str, &str)> {
        self.findings
            .iter()
            .flat_map(|f| {
                f.missing
                    .iter()
                    .flatten()
                    .map(|a| (&f.requirement.scope, *a, f.requirement.purpose.as_str()))
            })
            .collect()
    }

    /// Scopes that could not be checked, with why.
    pub fn unchecked(&self) -> Vec<(&ArmId, &str)> {
        self.findings
            .iter()
            .filter_map(|f| f.error.as_deref().map(|e| (&f.requirement.scope, e)))
            .collect()
    }

    pub fn complete(&self) -> bool {
        self.missing().is_empty() && self.unchecked().is_empty()
    }
}

/// Asks ARM once per distinct scope and compares. Fails only when the identity cannot
/// authenticate at all (nothing else could be learned then).
pub async fn evaluate(
    azure: &AzureClient,
    requirements: Vec<Requirement>,
) -> anyhow::Result<Report> {
    let mut answers: BTreeMap<String, Answer> = BTreeMap::new();
    for r in &requirements {
        if answers.contains_key(r.scope.key()) {
            continue;
        }
        let answer = match azure.list_permissions(r.scope.as_str()).await {
            Ok(p) => Answer::Permissions(p),
            Err(e) if e.class() == ErrorClass::Auth => {
                return Err(e).context("the operator's identity could not authenticate to Azure");
            }
            Err(e) if e.code() == Some("AuthorizationFailed") => Answer::Refused,
            Err(e) => Answer::Failed(e),
        };
        answers.insert(r.scope.key().to_owned(), answer);
    }
    let findings = requirements
        .into_iter()
        .map(|requirement| {
            let refused = matches!(answers.get(requirement.scope.key()), Some(Answer::Refused));
            let (missing, error) = match answers.get(requirement.scope.key()) {
                Some(Answer::Permissions(p)) => (
                    Some(
                        requirement
                            .actions
                            .iter()
                            .copied()
                            .filter(|a| !Permission::any_allows(p, a))
                            .collect(),
                    ),
                    None,
                ),
                // Nothing can be read here, so nothing can be done either.
                Some(Answer::Refused) => (Some(requirement.actions.clone()), None),
                Some(Answer::Failed(e)) => (None, Some(e.to_string())),
                None => (None, Some("not checked".to_owned())),
            };
            Finding {
                requirement,
                missing,
                error,
                refused,
            }
        })
        .collect();
    Ok(Report { findings })
}

/// The report as `check` prints it.
pub fn render(report: &Report, who: &str, source: &str, notes: &[String]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Azure permissions of lapse-operator's identity ({who}) for the AccessPolicies {source}"
    );
    for f in &report.findings {
        let _ = writeln!(o, "\n{}", f.requirement.scope);
        let _ = writeln!(o, "  to {}", f.requirement.purpose);
        if f.refused {
            let _ = writeln!(
                o,
                "  (ARM refused to list the permissions here: no role of the identity applies)"
            );
        }
        match (&f.missing, &f.error) {
            (Some(missing), _) => {
                for a in &f.requirement.actions {
                    let mark = if missing.contains(a) { "MISSING" } else { "ok" };
                    let _ = writeln!(o, "  {mark:<8} {a}");
                }
            }
            (None, Some(e)) => {
                let _ = writeln!(o, "  UNCHECKED {e}");
            }
            (None, None) => {}
        }
    }
    for n in notes {
        let _ = writeln!(o, "\nNote: {n}");
    }
    let missing = report.missing();
    let unchecked = report.unchecked();
    if report.complete() {
        let n: usize = report
            .findings
            .iter()
            .map(|f| f.requirement.actions.len())
            .sum();
        let _ = writeln!(
            o,
            "\nAll {n} actions at {} scope{} are granted. (ARM's permissions API does not show ABAC conditions: a role outside an assignment's condition is refused when the operator assigns it.)",
            report.findings.len(),
            if report.findings.len() == 1 { "" } else { "s" }
        );
        return o;
    }
    if !missing.is_empty() {
        let _ = writeln!(
            o,
            "\n{} action{} missing:",
            missing.len(),
            if missing.len() == 1 { " is" } else { "s are" }
        );
        for (scope, action, purpose) in &missing {
            let _ = writeln!(o, "  {action} at {scope}: to {purpose}");
        }
    }
    if !unchecked.is_empty() {
        let _ = writeln!(o, "\n{} scope(s) could not be checked:", unchecked.len());
        for (scope, e) in &unchecked {
            let _ = writeln!(o, "  {scope}: {e}");
        }
    }
    if !missing.is_empty() {
        let _ = writeln!(
            o,
            "\nFix: give the identity what `lapse-operator azure-role --policies DIR` prints for these policies."
        );
    }
    if !unchecked.is_empty() {
        let _ = writeln!(
            o,
            "\nA scope that cannot be read cannot be granted either: check that it exists, in the tenant the identity signs in to."
        );
    }
    o
}

/// `lapse-operator check`: `Ok(true)` when everything needed is granted.
pub async fn run(args: CheckArgs) -> anyhow::Result<bool> {
    let azure_cfg = args.azure.config()?;
    let (policies, source) = match &args.policies {
        Some(p) => (crate::policies::from_arg(p)?, format!("in {p}")),
        None => {
            let client = kube::Client::try_default().await.context(
                "connecting to Kubernetes to read the AccessPolicies (KUBECONFIG or ~/.kube/config; or pass --policies DIR)",
            )?;
            (
                crate::policies::from_cluster(client).await?,
                "in the cluster".to_owned(),
            )
        }
    };
    let azure = AzureClient::new(azure_cfg).context("configuring the Azure client")?;
    let who = match azure.own_principal().await {
        Ok(oid) => format!("object ID {oid}"),
        Err(e) if e.class() == ErrorClass::Auth => {
            return Err(e).context("the operator's identity could not authenticate to Azure");
        }
        Err(_) => format!("client ID {}", args.azure.client_id),
    };
    let (plan, notes) = plan_for_check(&policies, args.usage);
    let source = format!(
        "{source} ({})",
        if plan.policies.is_empty() {
            "none".to_owned()
        } else {
            plan.policies.join(", ")
        }
    );
    let report = evaluate(&azure, plan.requirements()).await?;
    print!("{}", render(&report, &who, &source, &notes));
    let probes = probe_usage_logs(&azure, &plan).await;
    print!("{}", render_probes(&probes));
    Ok(report.complete() && probes.iter().all(|p| p.failure.is_none()))
}

/// The plan `check` verifies: every problem `azure-role` would refuse on is a note here (an
/// unknown role name does not change which scopes need rights; an invalid policy allows
/// nothing, so it needs nothing).
fn plan_for_check(policies: &[SourcedPolicy], usage: UsageLogs) -> (Plan, Vec<String>) {
    let plan = Plan::build_with(policies, usage);
    let mut notes = plan.notes.clone();
    notes.extend(
        plan.problems
            .iter()
            .map(|p| format!("{p} (not checked: the policy or entry is skipped)")),
    );
    (plan, notes)
}

/// At start-up: the same check for the cluster's policies, as log lines. Never fails.
pub async fn warn_at_startup(kube: kube::Client, azure: AzureClient, usage: UsageLogs) {
    let policies = match crate::policies::from_cluster(kube).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "Azure permissions check skipped");
            return;
        }
    };
    let (plan, _) = plan_for_check(&policies, usage);
    let report = match evaluate(&azure, plan.requirements()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "Azure permissions check failed");
            return;
        }
    };
    for (scope, action, purpose) in report.missing() {
        tracing::warn!(
            scope = %scope,
            action,
            "the operator's Azure identity lacks {action} at {scope}, needed to {purpose}; \
             see `lapse-operator check` and `lapse-operator azure-role`"
        );
    }
    for (scope, error) in report.unchecked() {
        tracing::warn!(scope = %scope, error, "Azure permissions at {scope} could not be checked");
    }
    if report.complete() {
        tracing::info!(
            scopes = report.findings.len(),
            "Azure permissions check: every action the AccessPolicies need is granted"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requirement(scope: &str, actions: &[&'static str]) -> Requirement {
        Requirement {
            scope: ArmId::parse(scope).unwrap(),
            actions: actions.to_vec(),
            purpose: "test".into(),
        }
    }

    fn terminal(status: u16, code: &str, message: &str) -> AzureError {
        AzureError::Terminal {
            operation: lapse_azure::Operation::ListSignIns,
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    #[test]
    fn a_refused_log_read_names_the_missing_permission_or_licence() {
        let arm = AzureError::Terminal {
            operation: lapse_azure::Operation::ListActivityLog,
            status: 403,
            code: "AuthorizationFailed".into(),
            message: "The client does not have authorization to perform action \
                      'Microsoft.Insights/eventtypes/values/read'"
                .into(),
        };
        let why = activity_log_failure("sub-1", &arm);
        assert!(
            why.starts_with(
                "missing Microsoft.Insights/eventtypes/values/read at /subscriptions/sub-1"
            ),
            "{why}"
        );
        let why = sign_ins_failure(&terminal(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ));
        assert!(
            why.starts_with("missing the Microsoft Graph application permission AuditLog.Read.All"),
            "{why}"
        );
        let why = sign_ins_failure(&terminal(
            403,
            "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
            "Neither tenant is B2C or tenant doesn't have premium license",
        ));
        assert!(why.contains("Microsoft Entra ID P1 or P2"), "{why}");
        // Anything else is Azure's own words.
        let other = terminal(400, "BadRequest", "bad filter");
        assert_eq!(sign_ins_failure(&other), other.to_string());

        let text = render_probes(&[
            LogProbe {
                log: "the Activity Log of subscription sub-1".into(),
                failure: None,
            },
            LogProbe {
                log: "the managed identity sign-in log (Microsoft Graph)".into(),
                failure: Some("missing AuditLog.Read.All".into()),
            },
        ]);
        assert!(
            text.contains("  passed   the Activity Log of subscription sub-1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  FAILED   the managed identity sign-in log (Microsoft Graph): missing AuditLog.Read.All\n"
            ),
            "{text}"
        );
        assert_eq!(render_probes(&[]), "");
    }

    #[test]
    fn the_report_names_each_missing_action_and_scope() {
        let rg = "/subscriptions/s/resourceGroups/rg";
        let kv = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";
        let report = Report {
            findings: vec![
                Finding {
                    requirement: requirement(rg, &["a/read", "a/write"]),
                    missing: Some(vec![]),
                    error: None,
                    refused: false,
                },
                Finding {
                    requirement: requirement(kv, &["a/read", "a/write"]),
                    missing: Some(vec!["a/write"]),
                    error: None,
                    refused: false,
                },
            ],
        };
        assert!(!report.complete());
        let text = render(&report, "object ID x", "in dir", &[]);
        assert!(
            text.contains("  ok       a/read\n  MISSING  a/write\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!("1 action is missing:\n  a/write at {kv}: to test")),
            "{text}"
        );
        assert!(text.contains("Fix: "), "{text}");
        let ok = Report {
            findings: vec![Finding {
                requirement: requirement(rg, &["a/read"]),
                missing: Some(vec![]),
                error: None,
                refused: false,
            }],
        };
        assert!(ok.complete());
        assert!(render(&ok, "x", "y", &[]).contains("All 1 actions at 1 scope are granted"));
    }
}
