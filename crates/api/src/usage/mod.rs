//! What leases are used for (docs/usage.md): attribution of Azure's own logs (ARM Activity Log
//! operations, Entra sign-ins) to leases, and the findings that follow. Pure: ingestion reads the
//! logs and the grants, this module decides.
//!
//! An event belongs to a lease when its principal is the lease's, its time is within
//! [activatedAt, endedAt + the propagation bound] and (for an operation) its resource is at or
//! below a granted scope. A token belongs to a federated lease when it came through that lease's
//! federated credential.

mod findings;
mod ledger;
mod rightsize;

#[cfg(test)]
mod tests;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::arm::ArmId;
pub use crate::v1alpha1::OnSensitiveAction;

pub use findings::{
    Finding, FindingKind, end_findings, findings_for_operation, findings_for_token,
};
pub use ledger::{MAX_ACTIONS, MAX_FINDINGS, UsageDelta, apply_deltas};
pub use rightsize::{RolePermissions, narrower_roles};

/// One ARM Activity Log event (a write, delete or action; ARM does not log reads), as ingestion
/// normalises it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// `eventDataId`: unique per event, the key of de-duplication.
    pub id: String,
    /// `eventTimestamp`.
    pub time: DateTime<Utc>,
    /// The caller's object ID (`claims.oid`, or `caller` when it is a GUID).
    pub caller: Uuid,
    /// `operationName.value`, lower case (`microsoft.authorization/roleassignments/write`).
    pub action: String,
    /// `resourceId`.
    pub resource: ArmId,
    /// `status.value` is `Succeeded` (a refused or started operation changed nothing).
    pub succeeded: bool,
    /// For a write that gives access (a role assignment, a federated credential): the principal
    /// it gives it to, when the log names it.
    pub grantee: Option<Uuid>,
}

/// One token Entra issued to a workload identity (the sign-in log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenIssue {
    /// The sign-in's `id`.
    pub id: String,
    /// `createdDateTime`.
    pub time: DateTime<Utc>,
    /// The principal (object) ID the token was issued to.
    pub principal: Uuid,
    /// `federatedCredentialId`: the federated credential exchanged, if one was.
    pub federated_credential: Option<String>,
}

/// A lease as attribution sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseWindow {
    /// `namespace/name` of the grant.
    pub grant: String,
    pub principal: Uuid,
    /// The scopes of its role assignments.
    pub scopes: Vec<ArmId>,
    pub activated_at: DateTime<Utc>,
    /// `None` while it runs.
    pub ended_at: Option<DateTime<Utc>>,
    /// The name of its federated credential, if it federates.
    pub fic: Option<String>,
    /// When the federated credential was deleted (closed early or at the end).
    pub fic_deleted_at: Option<DateTime<Utc>>,
    /// Action patterns (`*` within a segment, a trailing `/*` below) that are sensitive under
    /// its policy.
    pub sensitive: Vec<String>,
    pub on_sensitive: OnSensitiveAction,
}

impl LeaseWindow {
    /// Whether `at` is inside the lease, the propagation bound after its end included.
    pub fn covers(&self, at: DateTime<Utc>, bound: TimeDelta) -> bool {
        at >= self.activated_at && self.ended_at.is_none_or(|end| at <= end + bound)
    }

    /// Whether `resource` is at or below one of its scopes.
    pub fn reaches(&self, resource: &ArmId) -> bool {
        self.scopes.iter().any(|s| resource.is_at_or_below(s))
    }
}

/// Where an operation belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribution {
    /// To the lease at this index: its principal, inside its window, at its scopes.
    Lease(usize),
    /// The principal and scope of the lease at this index, after its end and the bound.
    AfterEnd(usize),
    /// A principal lapse governs acting at a scope lapse governs, with no lease covering it.
    WithoutLease,
    /// Nothing lapse governs.
    Ungoverned,
}

/// What lapse governs beyond the leases themselves: the principals its policies name and the
/// scopes they allow (for `UseWithoutLease`).
#[derive(Clone, Debug, Default)]
pub struct Governed {
    pub principals: Vec<Uuid>,
    pub scopes: Vec<ArmId>,
}

/// Attributes an operation. A lease that covers it wins; then the latest lease of the same
/// principal and scope it came after; then whether lapse governs the principal and scope.
pub fn attribute(
    op: &Operation,
    leases: &[LeaseWindow],
    governed: &Governed,
    bound: TimeDelta,
) -> Attribution {
    let mine = |l: &&LeaseWindow| l.principal == op.caller && l.reaches(&op.resource);
    if let Some(i) = best_cover(leases, op.time, bound, |l| mine(&l)) {
        return Attribution::Lease(i);
    }
    let after = leases
        .iter()
        .enumerate()
        .filter(|(_, l)| mine(l))
        .filter(|(_, l)| l.ended_at.is_some_and(|end| op.time > end + bound))
        .max_by_key(|(_, l)| l.ended_at);
    if let Some((i, _)) = after {
        return Attribution::AfterEnd(i);
    }
    let principal =
        governed.principals.contains(&op.caller) || leases.iter().any(|l| l.principal == op.caller);
    let scope = governed
        .scopes
        .iter()
        .any(|s| op.resource.is_at_or_below(s));
    if principal && scope {
        Attribution::WithoutLease
    } else {
        Attribution::Ungoverned
    }
}

/// Where a token belongs: the lease whose principal it was issued to inside its window; for a
/// federated one, the lease whose credential it came through.
pub fn attribute_token(
    token: &TokenIssue,
    leases: &[LeaseWindow],
    bound: TimeDelta,
) -> Option<usize> {
    best_cover(leases, token.time, bound, |l| {
        let through = match (&token.federated_credential, &l.fic) {
            (Some(used), Some(fic)) => fic_matches(used, fic),
            (Some(_), None) => false,
            (None, _) => true,
        };
        l.principal == token.principal && through
    })
}

/// Of the leases `fits` accepts that cover `at`, the one it most plausibly belongs to: a lease
/// running at `at` before one in its propagation tail (a lease that just ended must not take
/// what the next lease of the same principal does), then the latest activated.
fn best_cover(
    leases: &[LeaseWindow],
    at: DateTime<Utc>,
    bound: TimeDelta,
    fits: impl Fn(&LeaseWindow) -> bool,
) -> Option<usize> {
    leases
        .iter()
        .enumerate()
        .filter(|(_, l)| fits(l) && l.covers(at, bound))
        .max_by_key(|(_, l)| (l.ended_at.is_none_or(|end| at <= end), l.activated_at))
        .map(|(i, _)| i)
}

/// Whether the credential a sign-in names (its name, or its resource ID) is `fic`.
pub fn fic_matches(used: &str, fic: &str) -> bool {
    used.eq_ignore_ascii_case(fic)
        || used
            .rsplit_once('/')
            .is_some_and(|(_, last)| last.eq_ignore_ascii_case(fic))
}

/// Whether an action matches a pattern: segments compare case-insensitively, `*` matches one
/// whole segment, and a trailing `*` matches every segment below.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let a: Vec<&str> = action.split('/').collect();
    for (i, seg) in p.iter().enumerate() {
        if *seg == "*" && i == p.len() - 1 {
            return a.len() >= p.len() - 1;
        }
        match a.get(i) {
            Some(x) if *seg == "*" || seg.eq_ignore_ascii_case(x) => {}
            _ => return false,
        }
    }
    a.len() == p.len()
}

/// The sensitive actions of a policy that sets none (DESIGN §13): role assignment and federated
/// credential writes, key listing and regeneration, identity assignment.
pub const DEFAULT_SENSITIVE_ACTIONS: &[&str] = &[
    "Microsoft.Authorization/roleAssignments/write",
    "Microsoft.Authorization/roleAssignmentScheduleRequests/write",
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
    "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
    "Microsoft.Storage/storageAccounts/listKeys/action",
    "Microsoft.Storage/storageAccounts/regenerateKey/action",
    "Microsoft.KeyVault/vaults/secrets/write",
];

/// Actions that hand access to a principal: with another principal as grantee, a privilege
/// chain.
pub const GRANTING_ACTIONS: &[&str] = &[
    "Microsoft.Authorization/roleAssignments/write",
    "Microsoft.Authorization/roleAssignmentScheduleRequests/write",
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
];
