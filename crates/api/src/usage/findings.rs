//! Findings (docs/usage.md): what an attributed event, or a finished lease, says about how the
//! access was used.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use super::{
    Attribution, GRANTING_ACTIONS, LeaseWindow, OnSensitive, Operation, TokenIssue, action_matches,
};

/// The kinds of finding, as Events, metrics, audit lines and `kubectl lapse audit` name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FindingKind {
    /// A token through the lease's federated credential after its deletion, or an operation by
    /// the principal at a granted scope after the end and the propagation bound.
    UseAfterEnd,
    /// A principal lapse governs acting at a scope lapse governs with no lease covering it.
    UseWithoutLease,
    /// An action on the policy's sensitive list.
    SensitiveAction,
    /// A leased principal handing access to another principal.
    PrivilegeChain,
    /// A lease that ended with no operation and no token.
    UnusedGrant,
    /// A lease whose every logged action a narrower allowed role also allows.
    RightSize,
}

impl FindingKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UseAfterEnd => "UseAfterEnd",
            Self::UseWithoutLease => "UseWithoutLease",
            Self::SensitiveAction => "SensitiveAction",
            Self::PrivilegeChain => "PrivilegeChain",
            Self::UnusedGrant => "UnusedGrant",
            Self::RightSize => "RightSize",
        }
    }
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    /// The grant it concerns (`namespace/name`), if any.
    pub grant: Option<String>,
    pub principal: Uuid,
    /// The log event that shows it, if one does.
    pub event: Option<String>,
    pub message: String,
    /// The lease must end now (`watch.onSensitiveAction: Revoke`).
    pub revoke: bool,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What one operation shows, given where it was attributed. A refused operation changed
/// nothing: it shows no finding (after the end, a refusal is the end holding).
pub fn findings_for_operation(
    op: &Operation,
    attribution: Attribution,
    leases: &[LeaseWindow],
) -> Vec<Finding> {
    if !op.succeeded {
        return Vec::new();
    }
    let finding = |kind, grant: Option<&LeaseWindow>, message: String, revoke| Finding {
        kind,
        grant: grant.map(|l| l.grant.clone()),
        principal: op.caller,
        event: Some(op.id.clone()),
        message,
        revoke,
    };
    match attribution {
        Attribution::Lease(i) => {
            let Some(l) = leases.get(i) else {
                return Vec::new();
            };
            let mut out = Vec::new();
            if let Some(pattern) = l.sensitive.iter().find(|p| action_matches(p, &op.action)) {
                let revoke = l.on_sensitive == OnSensitive::Revoke;
                out.push(finding(
                    FindingKind::SensitiveAction,
                    Some(l),
                    format!(
                        "{} performed {} on {} at {} (sensitive: {pattern}){}",
                        op.caller,
                        op.action,
                        op.resource,
                        ts(op.time),
                        if revoke {
                            "; the policy revokes the lease"
                        } else {
                            ""
                        }
                    ),
                    revoke,
                ));
            }
            if let Some(grantee) = op.grantee.filter(|g| *g != l.principal)
                && GRANTING_ACTIONS
                    .iter()
                    .any(|p| action_matches(p, &op.action))
            {
                out.push(finding(
                    FindingKind::PrivilegeChain,
                    Some(l),
                    format!(
                        "{} (leased by {}) gave access to {grantee} through {} on {} at {}",
                        op.caller,
                        l.grant,
                        op.action,
                        op.resource,
                        ts(op.time)
                    ),
                    false,
                ));
            }
            out
        }
        Attribution::AfterEnd(i) => leases
            .get(i)
            .map(|l| {
                finding(
                    FindingKind::UseAfterEnd,
                    Some(l),
                    format!(
                        "{} performed {} on {} at {}, after the lease ended ({}) and the \
                         propagation bound",
                        op.caller,
                        op.action,
                        op.resource,
                        ts(op.time),
                        l.ended_at.map_or_else(|| "-".to_owned(), ts)
                    ),
                    false,
                )
            })
            .into_iter()
            .collect(),
        Attribution::WithoutLease => vec![finding(
            FindingKind::UseWithoutLease,
            None,
            format!(
                "{} performed {} on {} at {} with no lease covering it: a standing path",
                op.caller,
                op.action,
                op.resource,
                ts(op.time)
            ),
            false,
        )],
        Attribution::Ungoverned => Vec::new(),
    }
}

/// What one token shows: issued through a lease's federated credential after lapse deleted it,
/// the end did not hold at Entra.
pub fn findings_for_token(token: &TokenIssue, leases: &[LeaseWindow]) -> Vec<Finding> {
    let Some(used) = &token.federated_credential else {
        return Vec::new();
    };
    leases
        .iter()
        .filter(|l| l.principal == token.principal)
        .filter(|l| {
            l.fic
                .as_deref()
                .is_some_and(|f| f.eq_ignore_ascii_case(used))
        })
        .filter(|l| l.fic_deleted_at.is_some_and(|d| token.time > d))
        .map(|l| Finding {
            kind: FindingKind::UseAfterEnd,
            grant: Some(l.grant.clone()),
            principal: token.principal,
            event: Some(token.id.clone()),
            message: format!(
                "a token was issued to {} through federated credential {used} at {}, after \
                 lapse deleted it ({})",
                token.principal,
                ts(token.time),
                l.fic_deleted_at.map_or_else(|| "-".to_owned(), ts)
            ),
            revoke: false,
        })
        .collect()
}

/// How a lease was used (`status.usage`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Usage {
    pub tokens: u64,
    pub last_token: Option<DateTime<Utc>>,
    pub operations: u64,
    pub last_operation: Option<DateTime<Utc>>,
    /// The most frequent actions, most frequent first (ties by name), at most five.
    pub top_actions: Vec<(String, u64)>,
}

/// The usage of one lease from the events attributed to it (succeeded operations only).
pub fn summarise<'a>(
    operations: impl IntoIterator<Item = &'a Operation>,
    tokens: impl IntoIterator<Item = &'a TokenIssue>,
) -> Usage {
    let mut u = Usage::default();
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for op in operations.into_iter().filter(|o| o.succeeded) {
        u.operations += 1;
        u.last_operation = u.last_operation.max(Some(op.time));
        *counts.entry(op.action.as_str()).or_default() += 1;
    }
    for t in tokens {
        u.tokens += 1;
        u.last_token = u.last_token.max(Some(t.time));
    }
    let mut top: Vec<(String, u64)> = counts.into_iter().map(|(a, n)| (a.to_owned(), n)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(5);
    u.top_actions = top;
    u
}

/// What an ended lease's usage shows: `UnusedGrant` when nothing used it (after the logs'
/// delay has passed, which the caller waits for), `RightSize` naming the narrower roles that
/// allow everything it did.
pub fn end_findings(lease: &LeaseWindow, usage: &Usage, narrower: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    let base = |kind, message| Finding {
        kind,
        grant: Some(lease.grant.clone()),
        principal: lease.principal,
        event: None,
        message,
        revoke: false,
    };
    if usage.tokens == 0 && usage.operations == 0 {
        out.push(base(
            FindingKind::UnusedGrant,
            format!(
                "{} ended with no token issued and no operation logged: the access was not \
                 needed",
                lease.grant
            ),
        ));
    } else if usage.operations > 0 && !narrower.is_empty() {
        out.push(base(
            FindingKind::RightSize,
            format!(
                "every action {} performed is also allowed by {}: ask for that next time",
                lease.grant,
                narrower.join(" or ")
            ),
        ));
    }
    out
}
