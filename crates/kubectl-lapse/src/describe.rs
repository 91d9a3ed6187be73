//! `describe`: one grant's story in one timeline, from its status, its Events (core/v1, with the
//! grant as involvedObject) and the AccessApprovals that name it; then its Azure objects and its
//! conditions.

use std::fmt::Write as _;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use lapse_api::approval::{ApprovalInput, tally};
use lapse_api::v1alpha1::{
    AccessApproval, AccessGrant, AccessPolicy, ApprovalDecision, UsageStatus,
};
use lapse_api::validate::{ApprovalRule, validate_policy};
use serde::Serialize;

use crate::cli::Output;
use crate::client::{Kube, is_forbidden, is_not_found};
use crate::summary;
use crate::table::Table;
use crate::time;

/// Everything known about one grant.
#[derive(Debug, Serialize)]
pub struct Story {
    pub grant: AccessGrant,
    pub events: Vec<Event>,
    pub approvals: Vec<AccessApproval>,
    /// The approval rule of the policy that allowed the grant, when it has one and the caller
    /// may read it: it says why an approval was not counted.
    #[serde(skip)]
    pub rule: Option<ApprovalRule>,
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub time: Option<DateTime<Utc>>,
    /// `Warning` for Warning Events, else empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub warning: String,
    pub what: String,
}

fn event_time(e: &Event) -> Option<DateTime<Utc>> {
    e.event_time
        .as_ref()
        .and_then(time::from_k8s_micro)
        .or_else(|| e.last_timestamp.as_ref().and_then(time::from_k8s))
        .or_else(|| e.first_timestamp.as_ref().and_then(time::from_k8s))
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .and_then(time::from_k8s)
        })
}

fn approval_input(a: &AccessApproval) -> ApprovalInput {
    ApprovalInput {
        name: a.metadata.name.clone().unwrap_or_default(),
        grant_uid: a.spec.grant.uid.clone(),
        generation: a.spec.grant.generation,
        decision: a.spec.decision,
        username: a.spec.approver.username.clone(),
        groups: a.spec.approver.groups.clone(),
        comment: a.spec.comment.clone(),
        created_at: a
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(time::from_k8s),
    }
}

/// Whether each approval counted, and if not why: the operator's record (`status.approvals`)
/// first, then the policy's rule through the operator's own tally.
pub fn verdicts(story: &Story) -> Vec<(String, String)> {
    let g = &story.grant;
    let counted: Vec<&str> = g
        .status
        .as_ref()
        .map(|s| s.approvals.iter().map(|a| a.name.as_str()).collect())
        .unwrap_or_default();
    let inputs: Vec<ApprovalInput> = story.approvals.iter().map(approval_input).collect();
    let t = story.rule.as_ref().map(|rule| {
        tally(
            rule,
            g.metadata.uid.as_deref().unwrap_or_default(),
            g.metadata.generation.unwrap_or_default(),
            g.spec.requester.as_deref(),
            &inputs,
        )
    });
    inputs
        .iter()
        .map(|a| {
            let why = if counted.contains(&a.name.as_str()) {
                "counted".to_owned()
            } else if let Some(i) = t
                .as_ref()
                .and_then(|t| t.ignored.iter().find(|i| i.name == a.name))
            {
                format!("not counted: {}", i.why)
            } else {
                "not counted (yet)".to_owned()
            };
            (a.name.clone(), why)
        })
        .collect()
}

/// The grant's story in time order (ties keep the order: request, status, Events, approvals).
pub fn timeline(story: &Story, now: DateTime<Utc>) -> Vec<Entry> {
    let g = &story.grant;
    let st = g.status.clone().unwrap_or_default();
    let mut out = Vec::new();
    let mut push = |time: Option<DateTime<Utc>>, warning: bool, what: String| {
        out.push(Entry {
            time,
            warning: if warning {
                "Warning".into()
            } else {
                String::new()
            },
            what,
        });
    };
    push(
        summary::created(g),
        false,
        format!(
            "requested by {}{}",
            g.spec
                .requester
                .as_deref()
                .unwrap_or("(spec.requester not set)"),
            if g.spec.break_glass {
                ", break-glass"
            } else {
                ""
            }
        ),
    );
    let verdicts = verdicts(story);
    for a in &story.approvals {
        let name = a.metadata.name.clone().unwrap_or_default();
        let why = verdicts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, w)| w.clone())
            .unwrap_or_default();
        let verb = match a.spec.decision {
            ApprovalDecision::Approve => "approved",
            ApprovalDecision::Deny => "denied",
        };
        let groups = if a.spec.approver.groups.is_empty() {
            String::new()
        } else {
            format!(" as {}", a.spec.approver.groups.join(", "))
        };
        let comment = a
            .spec
            .comment
            .as_deref()
            .map(|c| format!(": {c:?}"))
            .unwrap_or_default();
        push(
            a.metadata
                .creation_timestamp
                .as_ref()
                .and_then(time::from_k8s),
            false,
            format!(
                "{verb} by {}{groups} (AccessApproval {name}, generation {}; {why}){comment}",
                a.spec.approver.username, a.spec.grant.generation
            ),
        );
    }
    for e in &story.events {
        let count = e
            .count
            .filter(|c| *c > 1)
            .map(|c| format!(" (x{c})"))
            .unwrap_or_default();
        push(
            event_time(e),
            e.type_.as_deref() == Some("Warning"),
            format!(
                "{}: {}{count}",
                e.reason.as_deref().unwrap_or("-"),
                e.message.as_deref().unwrap_or_default()
            ),
        );
    }
    if let Some(t) = st.activated_at {
        let verb = if t > now { "starts" } else { "started" };
        push(Some(t), false, format!("lease {verb} (status.activatedAt)"));
    }
    match (st.ended_at, st.expires_at) {
        (Some(end), _) => push(
            Some(end),
            false,
            format!(
                "lease ended: {} (status.endedAt){}",
                st.end_reason
                    .map_or(st.phase, |r| r.terminal_phase())
                    .as_str(),
                st.ended_early_seconds.map_or_else(String::new, |s| format!(
                    ", {s}s before status.expiresAt: many leases of its subscription ended \
                     together and its deletes started early, within ARM's delete budget"
                ))
            ),
        ),
        (None, Some(exp)) => {
            let verb = if exp > now { "ends" } else { "ended" };
            push(Some(exp), false, format!("lease {verb} (status.expiresAt)"));
        }
        (None, None) => {}
    }
    // Stable: ties keep the order above.
    out.sort_by_key(|e| e.time);
    out
}

/// The story for people.
pub fn render(story: &Story, now: DateTime<Utc>) -> String {
    let g = &story.grant;
    let st = g.status.clone().unwrap_or_default();
    let mut s = String::new();
    let mut field = |k: &str, v: String| {
        let _ = writeln!(s, "{:<15}{v}", format!("{k}:"));
    };
    field("Name", g.metadata.name.clone().unwrap_or_default());
    field(
        "Namespace",
        g.metadata.namespace.clone().unwrap_or_default(),
    );
    field(
        "Requester",
        g.spec.requester.clone().unwrap_or_else(|| "-".into()),
    );
    let identity_id = g
        .spec
        .identity
        .managed_identity
        .clone()
        .map(|id| format!(" ({id})"))
        .unwrap_or_default();
    field("Identity", format!("{}{identity_id}", summary::identity(g)));
    for (i, r) in g.spec.roles.iter().enumerate() {
        let cond = r
            .condition
            .as_deref()
            .map(|c| format!(" if {c}"))
            .unwrap_or_default();
        field(
            if i == 0 { "Roles" } else { "" },
            format!("{} at {}{cond}", r.role, r.scope),
        );
    }
    if let Some(f) = &g.spec.federation {
        field(
            "Federation",
            format!(
                "ServiceAccount {} (audience {})",
                f.service_account, f.audience
            ),
        );
    }
    let mut lease = Vec::new();
    if let Some(d) = &g.spec.duration {
        lease.push(format!("{d} (spec.duration)"));
    }
    if let Some(w) = &g.spec.window {
        if let Some(b) = &w.not_before {
            lease.push(format!("not before {b}"));
        }
        if let Some(a) = &w.not_after {
            lease.push(format!("not after {a}"));
        }
    }
    field("Lease", lease.join(", "));
    if let Some(j) = &g.spec.justification {
        field("Justification", j.clone());
    }
    if g.spec.break_glass {
        field("Break-glass", "yes (spec.breakGlass)".into());
    }
    field(
        "Phase",
        format!("{} ({})", st.phase.as_str(), summary::when(g, now)),
    );
    if let Some(p) = &st.policy {
        field("Policy", format!("AccessPolicy {p}"));
    }
    if let Some(c) = st.conditions.iter().find(|c| c.type_ == "Approved") {
        field("Approval", c.message.clone());
    }
    if let Some(m) = &st.message {
        field("Message", m.clone());
    }
    if let Some(until) = st.access_may_continue_until {
        // docs/security.md, "When access really ends".
        let settled = st.phase.is_terminal();
        field(
            "Access ends by",
            format!(
                "{} at the latest ({}: ARM's role assignment cache and the lifetime of tokens minted before)",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                if settled {
                    "every object is deleted; bound fixed"
                } else {
                    "forecast from the lease's end"
                }
            ),
        );
    }
    field(
        "Generation",
        format!(
            "{}{}",
            g.metadata.generation.unwrap_or_default(),
            st.observed_generation
                .map(|o| format!(" (status observed {o})"))
                .unwrap_or_default()
        ),
    );

    let _ = writeln!(s, "\nTimeline:");
    let entries = timeline(story, now);
    let mut t = Table::new(&["time", "", "", "what"]);
    for e in &entries {
        t.row(vec![
            e.time.map(time::rfc3339).unwrap_or_else(|| "-".into()),
            e.time.map(|t| time::relative(t, now)).unwrap_or_default(),
            e.warning.clone(),
            e.what.clone(),
        ]);
    }
    for line in t.render().lines().skip(1) {
        let _ = writeln!(s, "  {line}");
    }

    let _ = writeln!(s, "\nAzure objects:");
    if st.role_assignments.is_empty() && st.federated_credential.is_none() {
        let _ = writeln!(s, "  none recorded");
    } else {
        let mut t = Table::new(&["object", "state", "what", "id"]);
        for r in &st.role_assignments {
            t.row(vec![
                "role assignment".into(),
                format!("{:?}", r.state),
                format!("{} at {}", r.role, r.scope),
                r.id.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        if let Some(f) = &st.federated_credential {
            t.row(vec![
                "federated credential".into(),
                format!("{:?}", f.state),
                format!("{} for {} (issuer {})", f.name, f.subject, f.issuer),
                f.id.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        for line in t.render().lines() {
            let _ = writeln!(s, "  {line}");
        }
        // Azure-enforced expiry (azure.expiry: PIM): when Azure itself ends each assignment.
        for r in &st.role_assignments {
            if let Some(sched) = r.schedule {
                let _ = writeln!(
                    s,
                    "  Azure PIM removes {} at {} itself at {}, whatever lapse does (schedule \
                     from {}).",
                    r.role,
                    r.scope,
                    sched
                        .ends_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    sched
                        .starts_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
            }
        }
    }

    if let Some(u) = &st.usage {
        render_usage(&mut s, u, now);
    }

    let _ = writeln!(s, "\nConditions:");
    if st.conditions.is_empty() {
        let _ = writeln!(s, "  none yet");
    } else {
        let mut t = Table::new(&["type", "status", "reason", "message"]);
        for c in &st.conditions {
            t.row(vec![
                c.type_.to_string(),
                format!("{:?}", c.status),
                c.reason.to_string(),
                c.message.clone(),
            ]);
        }
        for line in t.render().lines() {
            let _ = writeln!(s, "  {line}");
        }
    }
    s
}

/// How many of the most frequent actions `describe` shows.
const TOP_ACTIONS: usize = 5;

/// The usage evidence section (`status.usage`, present only when the operator reads the logs).
fn render_usage(s: &mut String, u: &UsageStatus, now: DateTime<Utc>) {
    let last = |t: Option<DateTime<Utc>>| {
        t.map(|t| format!(" (last {}, {})", time::rfc3339(t), time::relative(t, now)))
            .unwrap_or_default()
    };
    let _ = writeln!(s, "\nUsage:");
    let _ = writeln!(s, "  {:<13}{}{}", "Tokens:", u.tokens, last(u.last_token));
    let _ = writeln!(
        s,
        "  {:<13}{}{}",
        "Operations:",
        u.operations,
        last(u.last_operation)
    );
    if !u.actions.is_empty() {
        let shown: Vec<String> = u
            .actions
            .iter()
            .take(TOP_ACTIONS)
            .map(|a| format!("{} x{}", a.action, a.count))
            .collect();
        for (i, a) in shown.iter().enumerate() {
            let _ = writeln!(s, "  {:<13}{a}", if i == 0 { "Actions:" } else { "" });
        }
        let more = u.actions.len().saturating_sub(TOP_ACTIONS);
        if more > 0 {
            let _ = writeln!(s, "  {:<13}+{more} more", "");
        }
    }
    if u.actions_truncated {
        let _ = writeln!(
            s,
            "  {:<13}more distinct actions were performed than the status keeps (no RightSize)",
            ""
        );
    }
    if !u.concluded {
        let _ = writeln!(
            s,
            "  {:<13}not concluded yet (UnusedGrant and RightSize are decided once the logs are \
             read past the end)",
            ""
        );
    }
    if u.findings.is_empty() {
        let _ = writeln!(s, "  {:<13}none", "Findings:");
    } else {
        let _ = writeln!(s, "  Findings:");
        let mut t = Table::new(&["kind", "at", "message"]);
        for f in &u.findings {
            t.row(vec![f.kind.clone(), time::rfc3339(f.at), f.message.clone()]);
        }
        for line in t.render().lines() {
            let _ = writeln!(s, "    {line}");
        }
    }
}

/// Reads the grant, its Events, its approvals and its policy's approval rule.
pub async fn load(kube: &Kube, name: &str) -> anyhow::Result<Story> {
    let ns = &kube.namespace;
    let grants: Api<AccessGrant> = Api::namespaced(kube.client.clone(), ns);
    let grant = match grants.get(name).await {
        Ok(g) => g,
        Err(e) if is_not_found(&e) => anyhow::bail!("AccessGrant {ns}/{name} not found"),
        Err(e) => return Err(e).with_context(|| format!("reading AccessGrant {ns}/{name}")),
    };
    let uid = grant.metadata.uid.clone().unwrap_or_default();
    let events: Api<Event> = Api::namespaced(kube.client.clone(), ns);
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind=AccessGrant,involvedObject.name={name}"
    ));
    let events = match events.list(&lp).await {
        Ok(l) => l
            .items
            .into_iter()
            // Events of an earlier grant of the same name are not this one's story.
            .filter(|e| e.involved_object.uid.as_deref().is_none_or(|u| u == uid))
            .collect(),
        Err(e) if is_forbidden(&e) => {
            eprintln!("note: you may not list Events in namespace {ns}: the timeline has none");
            Vec::new()
        }
        Err(e) => {
            return Err(e).with_context(|| format!("listing Events of AccessGrant {ns}/{name}"));
        }
    };
    let approvals: Api<AccessApproval> = Api::namespaced(kube.client.clone(), ns);
    let approvals = match approvals.list(&ListParams::default()).await {
        Ok(l) => l
            .items
            .into_iter()
            .filter(|a| a.spec.grant.name == name && a.spec.grant.uid == uid)
            .collect(),
        Err(e) if is_forbidden(&e) => Vec::new(),
        Err(e) => {
            return Err(e).with_context(|| format!("listing AccessApprovals in namespace {ns}"));
        }
    };
    let rule = match grant.status.as_ref().and_then(|s| s.policy.clone()) {
        Some(p) => policy_rule(kube, &p).await?,
        None => None,
    };
    Ok(Story {
        grant,
        events,
        approvals,
        rule,
    })
}

/// The approval rule of a policy, when it has one, is valid and the caller may read it.
pub async fn policy_rule(kube: &Kube, policy: &str) -> anyhow::Result<Option<ApprovalRule>> {
    let api: Api<AccessPolicy> = Api::all(kube.client.clone());
    match api.get(policy).await {
        Ok(p) => Ok(validate_policy(&p.spec).ok().and_then(|r| r.approval)),
        Err(e) if is_forbidden(&e) || is_not_found(&e) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading AccessPolicy {policy}")),
    }
}

pub async fn run(kube: &Kube, name: &str, output: Option<Output>) -> anyhow::Result<()> {
    if kube.all_namespaces {
        return Err(crate::exit::Stop::Usage(
            "describe works in one namespace: use -n, not -A".into(),
        )
        .into());
    }
    let story = load(kube, name).await?;
    let now = Utc::now();
    match output {
        Some(format) => crate::output::print(
            format,
            &serde_json::json!({
                "grant": story.grant,
                "events": story.events,
                "approvals": story.approvals,
                "timeline": timeline(&story, now),
            }),
        ),
        None => {
            print!("{}", render(&story, now));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use lapse_api::duration::LeaseDuration;
    use lapse_api::v1alpha1::{
        AccessApprovalSpec, AccessGrantSpec, AccessGrantStatus, ActionCount, ApprovalRecord,
        Approver, EndReason, GrantPhase, GrantTarget, UsageFinding,
    };

    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    fn k8s(t: DateTime<Utc>) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).unwrap_or_default())
    }

    fn approval(name: &str, user: &str, generation: i64, t: i64) -> AccessApproval {
        let mut a = AccessApproval::new(
            name,
            AccessApprovalSpec {
                grant: GrantTarget {
                    name: "g".into(),
                    uid: "uid-1".into(),
                    generation,
                },
                decision: ApprovalDecision::Approve,
                approver: Approver {
                    username: user.into(),
                    groups: vec![],
                },
                comment: Some("ok".into()),
            },
        );
        a.metadata.creation_timestamp = Some(k8s(at(t)));
        a
    }

    fn story() -> Story {
        let mut g = AccessGrant::new(
            "g",
            AccessGrantSpec {
                requester: Some("alice".into()),
                duration: Some("10m".into()),
                ..Default::default()
            },
        );
        g.metadata.uid = Some("uid-1".into());
        g.metadata.generation = Some(2);
        g.metadata.creation_timestamp = Some(k8s(at(0)));
        g.status = Some(AccessGrantStatus {
            phase: GrantPhase::Expired,
            activated_at: Some(at(30)),
            expires_at: Some(at(630)),
            ended_at: Some(at(631)),
            end_reason: Some(EndReason::Expired),
            access_may_continue_until: Some(at(631 + 1800)),
            approvals: vec![ApprovalRecord {
                name: "bob-g2".into(),
                approver: "bob".into(),
                decision: ApprovalDecision::Approve,
                generation: 2,
                at: Some(at(20)),
            }],
            ..Default::default()
        });
        let mut ev = Event {
            reason: Some("Activated".into()),
            message: Some("every Azure object exists".into()),
            type_: Some("Normal".into()),
            ..Default::default()
        };
        ev.last_timestamp = Some(k8s(at(31)));
        Story {
            grant: g,
            events: vec![ev],
            approvals: vec![
                approval("alice-g2", "alice", 2, 10),
                approval("bob-g1", "bob", 1, 5),
                approval("bob-g2", "bob", 2, 20),
            ],
            rule: Some(ApprovalRule {
                required: 1,
                users: vec!["bob".into()],
                groups: vec![],
                timeout: LeaseDuration::from_secs(3600).unwrap_or(LeaseDuration::MIN),
                auto_approve: Vec::new(),
                escalation: Vec::new(),
            }),
        }
    }

    #[test]
    fn the_timeline_tells_the_story_in_order_and_why_approvals_did_not_count() {
        let lines: Vec<String> = timeline(&story(), at(700))
            .into_iter()
            .map(|e| e.what)
            .collect();
        assert_eq!(
            lines,
            [
                "requested by alice",
                "approved by bob (AccessApproval bob-g1, generation 1; not counted: for an earlier version of the grant): \"ok\"",
                "approved by alice (AccessApproval alice-g2, generation 2; not counted: the requester): \"ok\"",
                "approved by bob (AccessApproval bob-g2, generation 2; counted): \"ok\"",
                "lease started (status.activatedAt)",
                "Activated: every Azure object exists",
                "lease ended: Expired (status.endedAt)",
            ]
        );
    }

    #[test]
    fn a_lease_ended_early_by_the_delete_budget_says_how_early() {
        let mut story = story();
        if let Some(st) = story.grant.status.as_mut() {
            st.ended_at = Some(at(480));
            st.ended_early_seconds = Some(150);
        }
        let ended = timeline(&story, at(700))
            .into_iter()
            .map(|e| e.what)
            .find(|w| w.starts_with("lease ended"));
        assert_eq!(
            ended.as_deref(),
            Some(
                "lease ended: Expired (status.endedAt), 150s before status.expiresAt: many \
                 leases of its subscription ended together and its deletes started early, \
                 within ARM's delete budget"
            )
        );
    }

    #[test]
    fn the_rendering_has_every_section() {
        let text = render(&story(), at(700));
        for part in [
            "Name:          g",
            "Requester:     alice",
            "Phase:         Expired (expired 1m9s ago)",
            "Access ends by:",
            "at the latest (every object is deleted; bound fixed",
            "Timeline:",
            "Azure objects:\n  none recorded",
            "Conditions:\n  none yet",
        ] {
            assert!(text.contains(part), "{part:?} in\n{text}");
        }
        assert!(
            !text.contains("Usage:"),
            "no usage section without status.usage:\n{text}"
        );
    }

    #[test]
    fn usage_shows_counts_the_top_five_actions_and_every_finding() {
        let mut st = story();
        let usage = UsageStatus {
            tokens: 3,
            last_token: Some(at(100)),
            operations: 42,
            last_operation: Some(at(640)),
            actions: (1..=7u64)
                .map(|i| ActionCount {
                    action: format!("Microsoft.Storage/act{i}/write"),
                    count: 10 - i,
                })
                .collect(),
            actions_truncated: true,
            findings: vec![
                UsageFinding {
                    kind: "SensitiveAction".into(),
                    at: at(200),
                    event: Some("ev-1".into()),
                    message: "Microsoft.Authorization/roleAssignments/write at /subscriptions/s"
                        .into(),
                },
                UsageFinding {
                    kind: "UseAfterEnd".into(),
                    at: at(640),
                    event: None,
                    message: "an operation 9s after the lease ended".into(),
                },
            ],
            concluded: true,
            sequence: 9,
        };
        if let Some(s) = st.grant.status.as_mut() {
            s.usage = Some(Box::new(usage));
        }
        let text = render(&st, at(700));
        let usage = text
            .split("\nUsage:\n")
            .nth(1)
            .and_then(|u| u.split("\nConditions:").next())
            .unwrap_or_default();
        let expected = "  Tokens:      3 (last 2027-01-15T08:01:40Z, 10m ago)
  Operations:  42 (last 2027-01-15T08:10:40Z, 1m ago)
  Actions:     Microsoft.Storage/act1/write x9
               Microsoft.Storage/act2/write x8
               Microsoft.Storage/act3/write x7
               Microsoft.Storage/act4/write x6
               Microsoft.Storage/act5/write x5
               +2 more
               more distinct actions were performed than the status keeps (no RightSize)
  Findings:
    KIND              AT                     MESSAGE
    SensitiveAction   2027-01-15T08:03:20Z   Microsoft.Authorization/roleAssignments/write at /subscriptions/s
    UseAfterEnd       2027-01-15T08:10:40Z   an operation 9s after the lease ended
";
        assert_eq!(usage, expected, "in\n{text}");
    }
}
