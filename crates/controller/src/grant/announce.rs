//! Each lifecycle transition a decision makes: one audit line, and a notification when it is a
//! kind people are told about (docs/audit.md, docs/notifications.md). Neither waits for
//! anything: the audit line is a log line, the notification goes to a bounded queue.

use chrono::Utc;
use chrono::{DateTime, SecondsFormat};
use kube::ResourceExt;
use lapse_api::lease::Decision;
use lapse_api::policy::NamedPolicy;
use lapse_api::v1alpha1::{AccessGrant, AccessGrantStatus, GrantPhase};
use lapse_api::validate::ApprovalRule;

use crate::context::Context;
use crate::notify::{GrantRecord, Kind, Notification, repeat_key, transitions};

/// `policies`: the ones the decision was taken with (for the allowing policy's approvers).
pub(super) fn announce(
    ctx: &Context,
    g: &AccessGrant,
    policies: &[NamedPolicy],
    before: &AccessGrantStatus,
    d: &Decision,
) {
    let changes = transitions(before, d);
    let findings = new_findings(before, &d.status);
    let approval = d.status.policy.as_deref().and_then(|name| {
        policies
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.rules.as_ref().ok())
            .and_then(|r| r.approval.clone())
    });
    let waiting = d.status.phase == GrantPhase::PendingApproval;
    let escalated = match (&approval, g.metadata.creation_timestamp.as_ref()) {
        (Some(a), Some(created)) if waiting => crate::observe::to_chrono(created)
            .map(|c| opened_tiers(a, c, Utc::now()))
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    if changes.is_empty() && escalated.is_empty() && findings.is_empty() {
        return;
    }
    let uid = g.uid().unwrap_or_default();
    let record = GrantRecord::of(&ctx.settings.cluster, g, &d.status, approval.as_ref());
    // Usage findings this decision counted (its Events are recorded with the decision's).
    for f in &findings {
        crate::usage::report_leased(ctx, f, &record);
    }
    // Each tier that has opened, once per generation: its approvers are told they may decide.
    for (i, message) in escalated {
        let detail = format!("{}/{i}", g.metadata.generation.unwrap_or_default());
        if ctx
            .notifier
            .first(&uid, Kind::ApprovalEscalated.as_str(), &detail)
        {
            ctx.notifier.send(Notification {
                id: uuid::Uuid::new_v4(),
                kind: Kind::ApprovalEscalated,
                reason: Kind::ApprovalEscalated.as_str().to_owned(),
                message,
                warning: false,
                time: Utc::now(),
                grant: record.clone(),
            });
        }
    }
    for t in changes {
        // A grant decided twice on a stale cache makes the same transition twice: once here.
        let (what, detail) = match t.kind {
            Some(kind) => (
                kind.as_str().to_owned(),
                repeat_key(kind, g.metadata.generation, &d.status),
            ),
            None => (format!("phase:{}", t.to.as_str()), String::new()),
        };
        if !ctx.notifier.first(&uid, &what, &detail) {
            continue;
        }
        crate::audit::transition(&record, &t);
        if let Some(kind) = t.kind {
            ctx.notifier.send(Notification {
                id: uuid::Uuid::new_v4(),
                kind,
                reason: t.reason,
                message: t.message,
                warning: kind.warning(),
                time: Utc::now(),
                grant: record.clone(),
            });
        }
    }
}

/// The usage findings in `after` that `before` did not record, as findings about the grant.
fn new_findings(
    before: &AccessGrantStatus,
    after: &AccessGrantStatus,
) -> Vec<lapse_api::usage::Finding> {
    let Some(usage) = &after.usage else {
        return Vec::new();
    };
    let known = before
        .usage
        .as_ref()
        .map_or(&[][..], |u| u.findings.as_slice());
    let principal = after
        .principal_id
        .as_deref()
        .and_then(|p| uuid::Uuid::try_parse(p).ok())
        .unwrap_or_default();
    usage
        .findings
        .iter()
        .filter(|f| !known.contains(f))
        .filter_map(|f| {
            Some(lapse_api::usage::Finding {
                kind: lapse_api::usage::FindingKind::parse(&f.kind)?,
                at: f.at,
                grant: None,
                principal,
                event: f.event.clone(),
                resource: None,
                message: f.message.clone(),
                revoke: false,
            })
        })
        .collect()
}

/// The escalation tiers open at `now` for a grant created at `created` (tiers count from the
/// grant's creation, as the core does), each with what its notification says.
fn opened_tiers(
    approval: &ApprovalRule,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<(usize, String)> {
    approval
        .escalation
        .iter()
        .enumerate()
        .filter_map(|(i, tier)| {
            let opens = created + tier.after.to_chrono();
            let who = [
                (!tier.users.is_empty()).then(|| format!("users {}", tier.users.join(", "))),
                (!tier.groups.is_empty()).then(|| format!("groups {}", tier.groups.join(", "))),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" and ");
            (opens <= now).then(|| {
                (
                    i,
                    format!(
                        "nobody approved in time: escalation tier {} opened at {}; {who} may now \
                         approve or deny",
                        i + 1,
                        opens.to_rfc3339_opts(SecondsFormat::Secs, true)
                    ),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapse_api::duration::LeaseDuration;
    use lapse_api::validate::EscalationTier;

    #[test]
    fn tiers_are_announced_once_open_naming_who_may_decide() {
        let tier = |after: &str, users: &[&str], groups: &[&str]| EscalationTier {
            after: LeaseDuration::parse(after).unwrap(),
            users: users.iter().map(|s| (*s).to_owned()).collect(),
            groups: groups.iter().map(|s| (*s).to_owned()).collect(),
        };
        let rule = ApprovalRule {
            escalation: vec![
                tier("15m", &["carol@example.com"], &[]),
                tier("1h", &[], &["platform-leads"]),
            ],
            required: 1,
            users: vec!["bob@example.com".into()],
            groups: Vec::new(),
            timeout: LeaseDuration::parse("24h").unwrap(),
            auto_approve: Vec::new(),
        };
        let created = DateTime::parse_from_rfc3339("2026-12-05T08:00:00Z")
            .unwrap()
            .to_utc();
        let at = |m: i64| created + chrono::TimeDelta::minutes(m);
        assert!(opened_tiers(&rule, created, at(14)).is_empty());
        let first = opened_tiers(&rule, created, at(15));
        assert_eq!(first.len(), 1);
        assert!(
            first[0].1.contains("tier 1 opened at 2026-12-05T08:15:00Z")
                && first[0].1.contains("users carol@example.com"),
            "{}",
            first[0].1
        );
        let both = opened_tiers(&rule, created, at(61));
        assert_eq!(both.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1]);
        assert!(both[1].1.contains("groups platform-leads"));
    }
}
