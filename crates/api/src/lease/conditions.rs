//! Conditions, computed in one place from the phase and the facts a decision gathered.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use super::reason::Reason;
use crate::v1alpha1::{AccessGrantStatus, Condition, ConditionStatus, GrantPhase};

/// `Ready` is True exactly while the access is usable.
pub const READY: &str = "Ready";
/// kstatus: True while the operator is still working toward what the spec asks.
pub const RECONCILING: &str = "Reconciling";
/// kstatus: True when the grant cannot proceed without a change (denied, failed, a revocation
/// overdue).
pub const STALLED: &str = "Stalled";
/// Whether an AccessPolicy allows the grant.
pub const POLICY_ALLOWED: &str = "PolicyAllowed";
/// The access already existed as an assignment lapse does not own.
pub const STANDING_ACCESS: &str = "StandingAccess";
/// The lease ended but its Azure objects are not all deleted yet.
pub const REVOCATION_OVERDUE: &str = "RevocationOverdue";
/// A management lock refuses the deletes of the ended lease's objects (`409 ScopeLocked`):
/// only removing the lock lets the revocation finish.
pub const REVOCATION_BLOCKED: &str = "RevocationBlocked";
/// A requested extension (or a spec edit) was refused; the recorded lease stands.
pub const EXTENSION_DENIED: &str = "ExtensionDenied";
/// The status was written by someone other than the operator; the lease was ended for it.
pub const TAMPERED: &str = "Tampered";
/// Under a policy with `approval`: whether enough eligible approvers approved.
pub const APPROVED: &str = "Approved";
/// Whether Azure's logs show the lease in use (present while the operator reads them).
pub const USED: &str = "Used";
/// The lease was activated without approval, under the policy's `breakGlass`.
pub const BREAK_GLASS: &str = "BreakGlass";

/// What one decision learned that conditions report.
#[derive(Clone, Debug, Default)]
pub(crate) struct Facts {
    /// (allowed, reason, message) when the policy was evaluated this step.
    pub policy: Option<(bool, Reason, String)>,
    /// (reason, message) of a refused extension or spec edit.
    pub extension_denied: Option<(Reason, String)>,
    /// Why the revocation is overdue.
    pub overdue: Option<String>,
    /// Which lock refuses the revocation's deletes.
    pub revocation_blocked: Option<String>,
    /// Standing assignments the lease uses.
    pub standing: Vec<String>,
    /// The last failed Azure call, for messages.
    pub last_failure: Option<String>,
    /// A create refused with `AuthorizationFailed` inside the grace: why activation waits.
    pub authorization_pending: Option<String>,
    /// (approved, reason, message) under a policy with `approval`.
    pub approval: Option<(bool, Reason, String)>,
    /// Why the lease runs on break-glass.
    pub break_glass: Option<String>,
    /// What was wrong with a status the operator did not write.
    pub tampered: Option<String>,
}

pub(crate) fn apply_conditions(
    st: &mut AccessGrantStatus,
    facts: &Facts,
    now: DateTime<Utc>,
    generation: Option<i64>,
) {
    let message = st.message.clone().unwrap_or_default();
    let ready = if st.phase == GrantPhase::Active {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    set(
        st,
        READY,
        ready,
        Reason::from(st.phase),
        &message,
        now,
        generation,
    );
    // kstatus (Flux, kpt, Argo CD's generic check): Reconciling while work toward the spec is
    // under way, Stalled when only a change can help; neither once the grant is where its spec
    // leads (Active, Scheduled, or ended as asked). docs/gitops.md has the table.
    let (reconciling, stalled): (Option<Reason>, Option<(Reason, String)>) = match st.phase {
        GrantPhase::Pending => (Some(Reason::Pending), None),
        GrantPhase::PendingApproval => (Some(Reason::PendingApproval), None),
        GrantPhase::Activating if facts.authorization_pending.is_some() => {
            (Some(Reason::AuthorizationPending), None)
        }
        GrantPhase::Activating => (Some(Reason::Activating), None),
        GrantPhase::Revoking => match &facts.overdue {
            Some(msg) => (None, Some((Reason::RevocationOverdue, msg.clone()))),
            None => (Some(Reason::Revoking), None),
        },
        GrantPhase::Denied | GrantPhase::Failed => {
            (None, Some((Reason::from(st.phase), message.clone())))
        }
        GrantPhase::Scheduled | GrantPhase::Active | GrantPhase::Expired | GrantPhase::Revoked => {
            (None, None)
        }
    };
    let (status, reason) = match reconciling {
        Some(r) => (ConditionStatus::True, r),
        None => (ConditionStatus::False, Reason::Reconciled),
    };
    let reconciling_msg = if reconciling.is_some() {
        message.as_str()
    } else {
        ""
    };
    set(
        st,
        RECONCILING,
        status,
        reason,
        reconciling_msg,
        now,
        generation,
    );
    match stalled {
        Some((reason, msg)) => set(
            st,
            STALLED,
            ConditionStatus::True,
            reason,
            &msg,
            now,
            generation,
        ),
        None => set(
            st,
            STALLED,
            ConditionStatus::False,
            Reason::Progressing,
            "",
            now,
            generation,
        ),
    }
    if let Some((allowed, reason, msg)) = &facts.policy {
        let status = if *allowed {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        set(st, POLICY_ALLOWED, status, *reason, msg, now, generation);
    }
    match &facts.extension_denied {
        Some((reason, msg)) => set(
            st,
            EXTENSION_DENIED,
            ConditionStatus::True,
            *reason,
            msg,
            now,
            generation,
        ),
        None => clear(st, EXTENSION_DENIED, Reason::Accepted, now, generation),
    }
    match &facts.overdue {
        Some(msg) => set(
            st,
            REVOCATION_OVERDUE,
            ConditionStatus::True,
            Reason::DeletesPending,
            msg,
            now,
            generation,
        ),
        None => clear(st, REVOCATION_OVERDUE, Reason::Revoked, now, generation),
    }
    match &facts.revocation_blocked {
        Some(msg) => set(
            st,
            REVOCATION_BLOCKED,
            ConditionStatus::True,
            Reason::ScopeLocked,
            msg,
            now,
            generation,
        ),
        None => clear(st, REVOCATION_BLOCKED, Reason::Revoked, now, generation),
    }
    if let Some(u) = &st.usage {
        let (status, reason, msg) = used(u);
        set(st, USED, status, reason, &msg, now, generation);
    }
    if let Some(msg) = &facts.tampered {
        set(
            st,
            TAMPERED,
            ConditionStatus::True,
            Reason::StatusTampered,
            msg,
            now,
            generation,
        );
    }
    if let Some((approved, reason, msg)) = &facts.approval {
        let status = if *approved {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        set(st, APPROVED, status, *reason, msg, now, generation);
    }
    if let Some(msg) = &facts.break_glass {
        set(
            st,
            BREAK_GLASS,
            ConditionStatus::True,
            Reason::BreakGlassActivated,
            msg,
            now,
            generation,
        );
    }
    if !facts.standing.is_empty() {
        let msg = format!(
            "access already existed and is left untouched: {}",
            facts.standing.join("; ")
        );
        set(
            st,
            STANDING_ACCESS,
            ConditionStatus::True,
            Reason::StandingAssignment,
            &msg,
            now,
            generation,
        );
    }
}

/// Sets a condition, keeping `lastTransitionTime` when the status does not change.
fn set(
    st: &mut AccessGrantStatus,
    type_: &'static str,
    status: ConditionStatus,
    reason: Reason,
    message: &str,
    now: DateTime<Utc>,
    generation: Option<i64>,
) {
    match st.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status;
            c.reason = reason.as_str().into();
            c.message = message.to_owned();
            c.observed_generation = generation;
        }
        None => st.conditions.push(Condition {
            type_: Cow::Borrowed(type_),
            status,
            reason: reason.as_str().into(),
            message: message.to_owned(),
            last_transition_time: now,
            observed_generation: generation,
        }),
    }
}

/// Turns a True condition False; an absent one stays absent.
fn clear(
    st: &mut AccessGrantStatus,
    type_: &'static str,
    reason: Reason,
    now: DateTime<Utc>,
    generation: Option<i64>,
) {
    if st
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == ConditionStatus::True)
    {
        set(
            st,
            type_,
            ConditionStatus::False,
            reason,
            "",
            now,
            generation,
        );
    }
}

/// The condition of a type, if set.
pub fn find<'s>(st: &'s AccessGrantStatus, type_: &str) -> Option<&'s Condition> {
    st.conditions.iter().find(|c| c.type_ == type_)
}

/// `Used` from `status.usage`.
fn used(u: &crate::v1alpha1::UsageStatus) -> (ConditionStatus, Reason, String) {
    let ts = |t: Option<DateTime<Utc>>| {
        t.map_or_else(
            || "-".to_owned(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
    };
    if u.tokens > 0 || u.operations > 0 {
        (
            ConditionStatus::True,
            Reason::UsageLogged,
            format!(
                "{} token(s), last {}; {} operation(s), last {}",
                u.tokens,
                ts(u.last_token),
                u.operations,
                ts(u.last_operation)
            ),
        )
    } else if u.concluded {
        (
            ConditionStatus::False,
            Reason::UnusedGrant,
            "the lease ended with no token issued and no operation logged".to_owned(),
        )
    } else {
        (
            ConditionStatus::False,
            Reason::NoUsageLogged,
            "no token issued and no operation logged yet".to_owned(),
        )
    }
}
