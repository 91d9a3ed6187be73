//! Every reason lapse-operator writes: the `reason` of its Kubernetes Events and of its status
//! conditions, on AccessGrants and AccessPolicies. One vocabulary, so docs/api.md can list
//! exactly this set (a test below holds it to that) and no reason is spelled twice.

use std::fmt;

use crate::v1alpha1::GrantPhase;

/// Where a reason is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReasonUsage {
    /// As a Kubernetes Event's reason only.
    Event,
    /// As a status condition's reason only.
    Condition,
    /// Both.
    Both,
}

macro_rules! reasons {
    ($( $(#[doc = $doc:literal])* $name:ident: $usage:ident, )*) => {
        /// A reason of an Event or a status condition. The string is the variant's name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $( $(#[doc = $doc])* $name, )*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name),*];

            /// The reason as written to the API server.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }

            /// Whether the reason is written on Events, on conditions, or both.
            pub const fn usage(self) -> ReasonUsage {
                match self {
                    $(Reason::$name => ReasonUsage::$usage,)*
                }
            }
        }
    };
}

reasons! {
    // The lease's phases: each is `Ready`'s reason while the grant is in it.
    /// Not decided yet (condition); the operator is validating, evaluating or resolving.
    Pending: Condition,
    /// Allowed by a policy that requires approval; waiting for approvers (also `Approved=False`).
    PendingApproval: Both,
    /// Allowed, waiting for `window.notBefore`.
    Scheduled: Both,
    /// The lease is recorded and its Azure objects are being created.
    Activating: Both,
    /// Every Azure object exists (`Ready=True`).
    Active: Condition,
    /// The lease ended and its Azure objects are being deleted.
    Revoking: Both,
    /// The lease lapsed by time.
    Expired: Both,
    /// The lease ended early; also `RevocationOverdue=False` once every delete is done.
    Revoked: Both,
    /// No policy allows the grant.
    Denied: Both,
    /// Azure refused an object for good.
    Failed: Both,

    // Approval and break-glass.
    /// Enough eligible approvers approved this generation (`Approved=True`).
    Approved: Both,
    /// An eligible approver denied: the grant is denied, or its lease ends.
    ApprovalDenied: Both,
    /// Not approved within the policy's `approval.timeout`.
    ApprovalTimedOut: Both,
    /// `Approved=False`: approvals are not counted while the admission policies that make
    /// requesters and approvers unforgeable are missing.
    AdmissionPoliciesMissing: Condition,
    /// Activated without approval under the policy's `breakGlass` (`BreakGlass=True`).
    BreakGlassActivated: Both,

    // Activation and the running lease.
    /// Every Azure object exists: the access is usable.
    Activated: Event,
    /// A create was refused with `AuthorizationFailed` inside the authorization grace.
    AuthorizationPending: Both,
    /// A create failed for a reason worth retrying.
    AzureCallFailed: Event,
    /// An object vanished during the lease and is recreated.
    DriftRepaired: Event,
    /// The expiry moved later (within policy).
    Extended: Event,
    /// The expiry moved earlier.
    Shortened: Event,
    /// The lease ended before its expiry: more leases of its subscription end about then than
    /// ARM's delete budget deletes in time, so their deletes start early (synchronized expiry).
    EndedEarly: Event,

    // Why a lease ended (or never started).
    /// `spec.identity`, `spec.roles` or `spec.federation` changed after activation.
    SpecChanged: Event,
    /// No AccessPolicy allows the running lease any more.
    PolicyRevoked: Both,
    /// The AccessGrant was deleted.
    Deleted: Event,
    /// The sealed record of an activated lease lacks its expiry or principal.
    CorruptStatus: Event,
    /// Azure refused an object for good; the lease is rolled back.
    AzureRefused: Event,
    /// The spec cannot be read.
    InvalidSpec: Both,
    /// A role does not resolve to a role definition (a grant's Event; an AccessPolicy's `Ready`).
    UnknownRole: Both,
    /// The same role is asked twice at one scope.
    DuplicateRole: Event,
    /// Azure cannot find the identity.
    IdentityNotFound: Event,
    /// The identity is lapse-operator's own.
    OperatorIdentity: Both,
    /// A management lock applies to a scope or the identity of the grant: denied unless the
    /// policy sets `locks: Tolerate` (Event, `PolicyAllowed=False`); a delete the lock refused
    /// (`RevocationBlocked=True`, and its Event).
    ScopeLocked: Both,
    /// The change ticket the justification names is closed: a waiting grant is denied, a live
    /// lease revoked (Event, `PolicyAllowed=False`).
    TicketClosed: Both,
    /// The ticket checker could not be asked for longer than the stale period (or the operator
    /// has no checker of the policy's name): a live lease is revoked, failing closed (Event,
    /// `PolicyAllowed=False`).
    TicketUnverified: Both,
    // Usage evidence from Azure's logs (docs/usage.md).
    /// Azure's logs show the lease's access used after it ended: a token through its deleted
    /// federated credential, or an operation after the end and the propagation bound (Event).
    UseAfterEnd: Event,
    /// A principal an AccessPolicy governs acted at a scope it governs with no lease covering
    /// it: a standing path (Event on the AccessPolicy).
    UseWithoutLease: Event,
    /// The lease performed an action on its policy's `watch.sensitiveActions`; under
    /// `onSensitiveAction: Revoke` the lease is revoked for it (Event, `PolicyAllowed=False`).
    SensitiveAction: Both,
    /// The lease's principal gave access (a role assignment, a federated credential) to another
    /// principal (Event).
    PrivilegeChain: Event,
    /// The lease ended with no token issued and no operation logged (Event, `Used=False`).
    UnusedGrant: Both,
    /// Every logged action of the lease is allowed by a narrower role its policy allows (Event).
    RightSize: Event,
    /// Azure's logs show the lease in use (`Used=True`).
    UsageLogged: Condition,
    /// No token and no operation of the lease logged yet (`Used=False`).
    NoUsageLogged: Condition,
    /// The window ended before the grant could activate.
    WindowPassed: Event,
    /// The federated credential was deleted one token lifetime before the lease ends
    /// (`federation.closeEarly`): no token minted through it outlives the lease.
    FederationClosed: Event,
    /// A revocation waits for PIM's minimum active duration: Azure refuses to remove an
    /// assignment within 5 minutes of its start.
    PimMinimumActive: Event,
    /// The status was written by someone other than the operator.
    StatusTampered: Both,
    /// This operator version cannot read the object.
    Unreadable: Event,

    // Revocation.
    /// A delete failed and is retried.
    RevocationRetrying: Event,
    /// The lease ended longer than `overdue_after` ago and its objects are not all deleted.
    RevocationOverdue: Both,
    /// `RevocationOverdue=True`: deletes are outstanding.
    DeletesPending: Condition,

    // Conditions in their resting state.
    /// `Reconciling=False`: the grant is where its spec leads.
    Reconciled: Condition,
    /// `Stalled=False`: nothing needs a change to proceed.
    Progressing: Condition,
    /// `PolicyAllowed=True`.
    Allowed: Condition,
    /// `ExtensionDenied=True`: the extension exceeds the policy's `maxDuration`.
    ExceedsMaxDuration: Condition,
    /// `ExtensionDenied=True`: the lease was already extended the policy's `maxExtensions` times.
    ExtensionLimitReached: Condition,
    /// `ExtensionDenied=False`.
    Accepted: Condition,
    /// `StandingAccess=True`: an assignment lapse does not own already gives the access.
    StandingAssignment: Condition,

    // AccessPolicy `Ready`.
    /// The policy is valid.
    Valid: Condition,
    /// The policy has an invalid rule and allows nothing.
    InvalidRule: Condition,
}

impl Reason {
    /// Written as a Kubernetes Event's reason.
    pub const fn is_event(self) -> bool {
        matches!(self.usage(), ReasonUsage::Event | ReasonUsage::Both)
    }

    /// Written as a status condition's reason.
    pub const fn is_condition(self) -> bool {
        matches!(self.usage(), ReasonUsage::Condition | ReasonUsage::Both)
    }

    /// The reason of this name, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.as_str() == name)
    }
}

/// A phase's name is its reason (`Ready`'s, and the Event of a transition into it).
impl From<GrantPhase> for Reason {
    fn from(phase: GrantPhase) -> Self {
        match phase {
            GrantPhase::Pending => Self::Pending,
            GrantPhase::PendingApproval => Self::PendingApproval,
            GrantPhase::Scheduled => Self::Scheduled,
            GrantPhase::Activating => Self::Activating,
            GrantPhase::Active => Self::Active,
            GrantPhase::Revoking => Self::Revoking,
            GrantPhase::Expired => Self::Expired,
            GrantPhase::Revoked => Self::Revoked,
            GrantPhase::Denied => Self::Denied,
            GrantPhase::Failed => Self::Failed,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The reasons in the first cell (Events) or the `Reasons` cell (conditions) of every row
    /// of the table under each `### {heading}` of docs/api.md, both kinds together.
    fn documented(heading: &str) -> BTreeSet<String> {
        let doc = include_str!("../../../../docs/api.md");
        let title = format!("### {heading}\n");
        let mut out = BTreeSet::new();
        let mut tables = 0;
        for (i, _) in doc.match_indices(&title) {
            let body = &doc[i + title.len()..];
            let end = body.find("\n#").unwrap_or(body.len());
            let mut rows = body[..end].lines().filter(|l| l.starts_with('|'));
            let Some(header) = rows.next() else {
                panic!("docs/api.md: no table under `### {heading}`");
            };
            let cells = |row: &str| -> Vec<String> {
                row.trim_matches('|')
                    .split(" | ")
                    .map(|c| c.trim().to_owned())
                    .collect()
            };
            let Some(column) = cells(header)
                .iter()
                .position(|c| c == "Reason" || c == "Reasons")
            else {
                panic!("docs/api.md: the table under `### {heading}` has no Reason(s) column");
            };
            tables += 1;
            let mut table = BTreeSet::new();
            for row in rows.filter(|r| !r.starts_with("|---")) {
                let cells = cells(row);
                let Some(cell) = cells.get(column) else {
                    panic!("docs/api.md: short row under `### {heading}`: {row}");
                };
                for name in cell.split('`').skip(1).step_by(2) {
                    // Conditions share reasons (`InvalidSpec`); an Event has one row.
                    assert!(
                        table.insert(name.to_owned()) || heading == "Conditions",
                        "docs/api.md lists the Event reason `{name}` twice in one table"
                    );
                }
            }
            out.extend(table);
        }
        assert_eq!(
            tables, 2,
            "docs/api.md has a `### {heading}` table for AccessGrant and for AccessPolicy"
        );
        out
    }

    fn in_code(keep: fn(Reason) -> bool) -> BTreeSet<String> {
        Reason::ALL
            .iter()
            .copied()
            .filter(|r| keep(*r))
            .map(|r| r.as_str().to_owned())
            .collect()
    }

    #[test]
    fn the_docs_list_exactly_the_event_reasons() {
        assert_eq!(documented("Events"), in_code(Reason::is_event));
    }

    #[test]
    fn the_docs_list_exactly_the_condition_reasons() {
        assert_eq!(documented("Conditions"), in_code(Reason::is_condition));
    }

    #[test]
    fn each_reason_is_its_name_once() {
        let names: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        for r in Reason::ALL {
            assert_eq!(Reason::from_name(r.as_str()), Some(*r));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(Reason::from_name("LeaseEnded"), None);
    }

    #[test]
    fn a_phase_s_reason_is_its_name_and_a_condition_reason() {
        for phase in [
            GrantPhase::Pending,
            GrantPhase::PendingApproval,
            GrantPhase::Scheduled,
            GrantPhase::Activating,
            GrantPhase::Active,
            GrantPhase::Revoking,
            GrantPhase::Expired,
            GrantPhase::Revoked,
            GrantPhase::Denied,
            GrantPhase::Failed,
        ] {
            let r = Reason::from(phase);
            assert_eq!(r.as_str(), phase.as_str());
            assert!(r.is_condition(), "{r} is Ready's reason in {phase:?}");
        }
    }
}
