//! Findings (docs/usage.md): what an attributed event, or a finished lease, says about how the
//! access was used.

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use super::{
    Attribution, GRANTING_ACTIONS, LeaseWindow, OnSensitiveAction, Operation, TokenIssue,
    action_matches,
};

/// The kinds of finding, as Events, metrics, audit lines and `kubectl lapse audit` name them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
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

    pub const ALL: [FindingKind; 6] = [
        Self::UseAfterEnd,
        Self::UseWithoutLease,
        Self::SensitiveAction,
        Self::PrivilegeChain,
        Self::UnusedGrant,
        Self::RightSize,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether it says something went wrong (a Warning Event), rather than advice.
    pub const fn warning(self) -> bool {
        !matches!(self, Self::UnusedGrant | Self::RightSize)
    }
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// When the event it rests on happened (for an end finding, the lease's end).
    pub at: DateTime<Utc>,
    /// The grant it concerns (`namespace/name`), if any.
    pub grant: Option<String>,
    pub principal: Uuid,
    /// The log event that shows it, if one does.
    pub event: Option<String>,
    /// The resource an operation acted on (for a finding that rests on one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
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
        at: op.time,
        grant: grant.map(|l| l.grant.clone()),
        principal: op.caller,
        event: Some(op.id.clone()),
        resource: Some(op.resource.as_str().to_owned()),
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
                let revoke = l.on_sensitive == OnSensitiveAction::Revoke;
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
                .is_some_and(|f| super::fic_matches(used, f))
        })
        .filter(|l| l.fic_deleted_at.is_some_and(|d| token.time > d))
        .map(|l| Finding {
            kind: FindingKind::UseAfterEnd,
            at: token.time,
            grant: Some(l.grant.clone()),
            principal: token.principal,
            event: Some(token.id.clone()),
            resource: None,
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

/// What an ended lease's usage shows: `UnusedGrant` when nothing used it (after the logs'
/// delay has passed, which the caller waits for), `RightSize` naming the narrower roles that
/// allow everything it did.
pub fn end_findings(
    lease: &LeaseWindow,
    usage: &crate::v1alpha1::UsageStatus,
    narrower: &[String],
) -> Vec<Finding> {
    let mut out = Vec::new();
    let base = |kind, message| Finding {
        kind,
        at: lease.ended_at.unwrap_or(lease.activated_at),
        grant: Some(lease.grant.clone()),
        principal: lease.principal,
        event: None,
        resource: None,
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
