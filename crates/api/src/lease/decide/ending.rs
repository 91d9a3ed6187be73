//! Stage *ending*: a deleted grant, a lease that ended, a grant that never activated. Deletes
//! what this lease alone holds (never standing access, never what a live lease shares), retried
//! forever, overdue past `overdue_after`.

use chrono::{DateTime, SecondsFormat, Utc};

use super::step::{Step, failure_message};
use crate::lease::conditions::{REVOCATION_BLOCKED, REVOCATION_OVERDUE, find};
use crate::lease::model::{
    Action, Failure, IdentityObservation, ObjectKey, ObjectObservation, Observed, StatusTrust,
};
use crate::lease::pim::ACTIVE_DURATION_TOO_SHORT;
use crate::lease::plan::plan;
use crate::lease::reason::Reason;
use crate::v1alpha1::{ConditionStatus, EndReason, GrantPhase, ObjectState};
use crate::validate::validate_grant;

impl Step<'_> {
    /// A deleted grant winds down what it holds, then lets its finalizer go.
    pub(super) fn end_deleted(&mut self) {
        if self.holds_objects() {
            self.wind_down(
                EndReason::Revoked,
                Reason::Deleted,
                "the AccessGrant was deleted".into(),
            );
        } else if !self.st.phase.is_terminal() {
            // Nothing was ever recorded for this grant: let it go once nothing derived from it
            // is left.
            self.end_without_objects(
                GrantPhase::Revoked,
                Reason::Deleted,
                "deleted before activation".into(),
            );
        }
        self.finalized = !self.outstanding();
    }

    /// A lease already ended (`Revoking`, or terminal): it owes only the deletes of what it
    /// still records. Terminal phases absorb; this is never a way back.
    pub(super) fn continue_ending(&mut self) {
        if self.st.phase == GrantPhase::Revoking || self.holds_objects() {
            self.revoke();
        }
    }

    /// Ends the lease for `why` (recorded and told once: a lease ends only once), then revokes.
    pub(super) fn wind_down(&mut self, reason: EndReason, why: Reason, message: String) {
        if self.st.end_reason.is_none() {
            self.st.end_reason = Some(reason);
            self.st.message = Some(message.clone());
            self.event(reason == EndReason::Failed, why, message);
        }
        self.revoke();
    }

    /// Deletes what this lease alone holds, leaves shared and standing access.
    fn revoke(&mut self) {
        // Whoever ended the lease recorded why; `Revoked` stands in for a record without it.
        let end_reason = *self.st.end_reason.get_or_insert(EndReason::Revoked);
        let end = match end_reason {
            EndReason::Expired => self.st.expires_at.unwrap_or(self.now).min(self.now),
            EndReason::Revoked | EndReason::Failed => self.now,
        };
        let ended_at = *self.st.ended_at.get_or_insert(end);
        let mut states = Vec::new();
        let mut outstanding_failure = None;
        let mut blocked: Vec<String> = Vec::new();
        for (i, (key, mut delete)) in self.recorded().into_iter().enumerate() {
            let current = self.recorded_state(i);
            if matches!(
                current,
                ObjectState::Deleted
                    | ObjectState::Standing
                    | ObjectState::Released
                    | ObjectState::Failed
            ) {
                states.push(current);
                continue;
            }
            let obs = self.input.azure.get(&key);
            // PIM: Azure's schedule names the removal, and PIM refuses it before its minimum.
            let removable_at = self.pim_removal(&mut delete, &obs);
            let state = match obs.observed {
                Observed::Present { owned: false, .. } => ObjectState::Standing,
                Observed::Absent | Observed::CreateFailed(Failure::Terminal { .. }) => {
                    ObjectState::Deleted
                }
                _ if obs.needed_by_other_lease => ObjectState::Released,
                _ if removable_at.is_some_and(|at| at > self.now) => {
                    let at = removable_at.unwrap_or(self.now);
                    let msg = self.wait_for_pim(&delete, at, current);
                    outstanding_failure = Some(msg);
                    ObjectState::Deleting
                }
                Observed::DeleteFailed(f) => {
                    self.retry(Some(&f));
                    let msg = failure_message(&f);
                    if let Failure::Terminal { code, message } = &f
                        && code.eq_ignore_ascii_case(SCOPE_LOCKED)
                    {
                        blocked.push(blocked_message(message));
                    }
                    self.event(
                        true,
                        Reason::RevocationRetrying,
                        format!("deleting an Azure object failed: {msg}; retrying"),
                    );
                    outstanding_failure = Some(msg);
                    self.actions.push(delete);
                    ObjectState::Deleting
                }
                // Present and ours, unknown, or a create whose outcome is unknown: delete.
                // Deletes are idempotent (204 when already gone), so doubt costs one call.
                _ => {
                    self.actions.push(delete);
                    ObjectState::Deleting
                }
            };
            states.push(state);
        }
        self.set_states(&states);
        if states.contains(&ObjectState::Deleting) {
            if !self.st.phase.is_terminal() {
                // The message stays the reason the lease ended; Ready's reason says Revoking.
                let msg = self.st.message.clone().unwrap_or_default();
                self.transition(GrantPhase::Revoking, false, Reason::Revoking, msg);
            }
            if self.now - ended_at >= self.input.settings.overdue_after {
                let previous = find(self.input.grant.status, REVOCATION_OVERDUE)
                    .filter(|c| c.status == ConditionStatus::True);
                let msg = match (outstanding_failure, previous) {
                    (Some(detail), _) => format!(
                        "lease ended at {} and its Azure objects are not all deleted yet: {detail}",
                        ended_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                    ),
                    // A retry that has not failed yet this time: the last known cause stands
                    // (a lock does not go away because nobody asked).
                    (None, Some(c)) => c.message.clone(),
                    (None, None) => format!(
                        "lease ended at {} and its Azure objects are not all deleted yet: deletes pending",
                        ended_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                    ),
                };
                if previous.is_none() {
                    self.event(true, Reason::RevocationOverdue, msg.clone());
                }
                self.facts.overdue = Some(msg);
            }
            let previous = find(self.input.grant.status, REVOCATION_BLOCKED)
                .filter(|c| c.status == ConditionStatus::True);
            match (blocked.is_empty(), previous) {
                (false, _) => {
                    blocked.dedup();
                    let msg = format!(
                        "a management lock refuses deleting this lease's Azure objects; remove \
                         the lock to let the revocation finish: {}",
                        blocked.join("; ")
                    );
                    if previous.is_none() {
                        self.event(true, Reason::ScopeLocked, msg.clone());
                    }
                    self.facts.revocation_blocked = Some(msg);
                }
                // A retry that has not been refused yet this time: the lock stands until a
                // delete goes through.
                (true, Some(c)) => self.facts.revocation_blocked = Some(c.message.clone()),
                (true, None) => {}
            }
            self.retry(None);
        } else if !self.st.phase.is_terminal() {
            let phase = end_reason.terminal_phase();
            let msg = self.st.message.clone().unwrap_or_default();
            self.transition(phase, end_reason == EndReason::Failed, phase.into(), msg);
        }
    }

    /// For a PIM-made role assignment: aims the removal at the schedule Azure holds (its start
    /// names the `AdminRemove` request) and says from when PIM allows it. `None` for anything
    /// else.
    fn pim_removal(&self, delete: &mut Action, obs: &ObjectObservation) -> Option<DateTime<Utc>> {
        let Action::DeleteRoleAssignment { schedule_start, .. } = delete else {
            return None;
        };
        if let Some(held) = obs.schedule {
            *schedule_start = Some(held.starts_at);
        }
        schedule_start.map(|start| start + self.input.settings.pim.minimum)
    }

    /// A removal PIM would refuse yet: nothing is sent; the lease looks again when it may,
    /// and says (once) why it waits.
    fn wait_for_pim(&mut self, delete: &Action, at: DateTime<Utc>, current: ObjectState) -> String {
        self.waiting = true;
        self.requeue_at = Some(self.requeue_at.map_or(at, |r| r.min(at)));
        let what = match delete {
            Action::DeleteRoleAssignment {
                key: ObjectKey::RoleAssignment { scope, .. },
                ..
            } => {
                format!("the role assignment at {scope}")
            }
            _ => "an Azure object".to_owned(),
        };
        let msg = format!(
            "Azure PIM refuses to remove an assignment within {} minutes of its start \
             ({ACTIVE_DURATION_TOO_SHORT}); {what} is removed at {}",
            self.input.settings.pim.minimum.num_minutes(),
            at.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        if current != ObjectState::Deleting {
            self.event(false, Reason::PimMinimumActive, msg.clone());
        }
        msg
    }

    /// Ends a lease that never created anything.
    pub(super) fn end_without_objects(&mut self, phase: GrantPhase, why: Reason, message: String) {
        // Without a record, objects this spec derives may still exist (the status was removed
        // mid-lease): they end with the lease, never left to the sweep.
        if *self.input.grant.trust == StatusTrust::Absent
            && !self.activated()
            && self.adopt_present_derived()
        {
            let reason = match phase {
                GrantPhase::Expired => EndReason::Expired,
                GrantPhase::Failed => EndReason::Failed,
                _ => EndReason::Revoked,
            };
            self.wind_down(reason, why, message);
            return;
        }
        self.st.ended_at.get_or_insert(self.now);
        if self.st.end_reason.is_none() {
            self.st.end_reason = match phase {
                GrantPhase::Expired => Some(EndReason::Expired),
                GrantPhase::Failed => Some(EndReason::Failed),
                GrantPhase::Revoked => Some(EndReason::Revoked),
                _ => None,
            };
        }
        let warning = matches!(phase, GrantPhase::Denied | GrantPhase::Failed);
        self.transition(phase, warning, why, message);
    }

    /// Records, as this lease's, the objects its spec derives that Azure holds as this
    /// owner's. False when there are none (or they cannot be named).
    fn adopt_present_derived(&mut self) -> bool {
        let Ok(req) = validate_grant(self.input.grant.spec) else {
            return false;
        };
        let IdentityObservation::Resolved { principal_id } = self.input.identity else {
            return false;
        };
        let catalogue = self.catalogue();
        let expiry = req.expiry_from(self.lease_start(&req));
        let g = &self.input.grant;
        let Ok(p) = plan(
            &req,
            g.namespace,
            g.name,
            *principal_id,
            expiry,
            None,
            self.input.settings,
            &catalogue,
        ) else {
            return false;
        };
        let present = |key: &ObjectKey| {
            matches!(
                self.input.azure.get(key).observed,
                Observed::Present { owned: true, .. }
            )
        };
        let (ras, fic) = p.status_entries();
        let ras: Vec<_> = p
            .role_assignments
            .iter()
            .zip(ras)
            .filter(|(planned, _)| present(&planned.key))
            .map(|(_, entry)| entry)
            .collect();
        let fic = p
            .fic
            .as_ref()
            .zip(fic)
            .filter(|(planned, _)| present(&planned.key))
            .map(|(_, entry)| entry);
        if ras.is_empty() && fic.is_none() {
            return false;
        }
        self.st.principal_id = Some(principal_id.to_string());
        self.st.role_assignments = ras;
        self.st.federated_credential = fic.map(Box::new);
        true
    }
}

/// ARM's code for a write or delete a management lock refuses.
pub(crate) const SCOPE_LOCKED: &str = "ScopeLocked";

/// What a `ScopeLocked` refusal names: the locked scopes when the message is ARM's own, else
/// the whole message (the controller's, naming the lock: `controller/src/blocked.rs`).
fn blocked_message(message: &str) -> String {
    let scopes = crate::lock::locked_scopes(message);
    if scopes.is_empty() {
        format!("ScopeLocked: {message}")
    } else {
        format!("ScopeLocked: locked scope(s) {}", scopes.join(", "))
    }
}
