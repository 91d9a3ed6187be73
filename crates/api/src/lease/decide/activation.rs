//! Stage *activation*: waiting for `notBefore`, the identity's principal, recording the lease,
//! and bringing every planned object into existence (creates, drift repair, the authorization
//! grace, all-or-nothing rollback).

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

use super::admission::Admitted;
use super::step::{Step, failure_message};
use crate::lease::model::{
    Action, AssignmentSchedule, Failure, IdentityObservation, ObjectKey, ObjectObservation,
    Observed, Reschedule, RoleAssignmentPlan,
};
use crate::lease::pim::PIM_LICENCE_REQUIRED;
use crate::lease::plan::{LeasePlan, PlanError, plan};
use crate::lease::reason::Reason;
use crate::lock::LockObservation;
use crate::policy::PrivilegeObservation;
use crate::role::RoleCatalogue;
use crate::v1alpha1::{EndReason, GrantPhase, ObjectState};
use crate::validate::GrantRequest;

/// ARM's code for a caller lacking a permission (or, for some scopes, the scope being invalid).
const AUTHORIZATION_FAILED: &str = "AuthorizationFailed";

impl Step<'_> {
    /// Schedules an admitted grant, or records its lease and starts creating its objects.
    pub(super) fn activate(&mut self, admitted: Admitted) {
        let Admitted {
            req,
            anchor,
            catalogue,
        } = admitted;
        let start = anchor.max(self.now);
        if start > self.now {
            self.requeue_at = Some(start);
            self.transition(
                GrantPhase::Scheduled,
                false,
                Reason::Scheduled,
                format!(
                    "activates at {}",
                    start.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            );
            return;
        }
        let Some(anchor) = self.within_active_hours(anchor) else {
            return;
        };
        let principal_id = match self.input.identity {
            IdentityObservation::Resolved { principal_id } => *principal_id,
            IdentityObservation::Unknown => {
                self.retry(None);
                self.st.message = Some("resolving the identity's principal".into());
                return;
            }
            IdentityObservation::NotFound { code, message } => {
                self.end_without_objects(
                    GrantPhase::Failed,
                    Reason::IdentityNotFound,
                    format!("spec.identity: Azure could not find the identity: {code}: {message}"),
                );
                return;
            }
        };
        if self.input.settings.operator_principal == Some(principal_id) {
            self.facts.policy = Some((
                false,
                Reason::OperatorIdentity,
                "the identity is lapse-operator's own".into(),
            ));
            self.end_without_objects(
                GrantPhase::Denied,
                Reason::OperatorIdentity,
                format!(
                    "spec.identity: {} is lapse-operator's own identity (principal \
                     {principal_id}); lapse never grants to or federates itself",
                    req.identity.display_name()
                ),
            );
            return;
        }
        if req.federation.is_some() && *self.input.privileges == PrivilegeObservation::Unknown {
            // A federated credential hands over every right of the identity: know them first.
            self.retry(None);
            self.st.message =
                Some("checking the identity's standing roles before federating it".into());
            return;
        }
        // Azure lets lapse create under a management lock but not delete: know the locks
        // first, unless the policy tolerates them (DESIGN §12 "Locks").
        if *self.input.locks == LockObservation::Unknown
            && !self
                .st
                .policy
                .as_deref()
                .is_some_and(|p| self.tolerates_locks(p))
        {
            self.retry(None);
            self.st.message =
                Some("checking the management locks on the grant's scopes and identity".into());
            return;
        }
        // A checked ticket must be known open (DESIGN §11 "Tickets").
        if !self.ticket_confirmed(&req) {
            return;
        }
        // The lease starts where no tenant can write it: the grant's creation (set by the API
        // server) or window.notBefore. Whole seconds in the record (and so in kubectl's EXPIRES
        // column); rounding the start down only ever shortens the lease.
        let activated_at = anchor.trunc_subsecs(0);
        let expiry = self.within_hours_close(activated_at, req.expiry_from(activated_at));
        if expiry <= self.now {
            self.st.ended_at = Some(expiry);
            self.st.end_reason = Some(EndReason::Expired);
            self.end_without_objects(
                GrantPhase::Expired,
                Reason::WindowPassed,
                format!(
                    "the lease ended at {} before it could activate",
                    expiry.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            );
            return;
        }
        let plan = match self.plan(&req, principal_id, expiry, &catalogue) {
            Some(p) => p,
            None => return,
        };
        // Record the lease before any create, so a crash can never leave an unrecorded object.
        self.st.activated_at = Some(activated_at);
        self.st.expires_at = Some(expiry);
        self.st.principal_id = Some(principal_id.to_string());
        let (ras, fic) = plan.status_entries();
        self.st.role_assignments = ras;
        self.st.federated_credential = fic.map(Box::new);
        self.transition(
            GrantPhase::Activating,
            false,
            Reason::Activating,
            format!(
                "lease until {}",
                expiry.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
        );
        if let Some(msg) = self.facts.break_glass.clone() {
            // Loud, once: the moment the lease is recorded.
            self.event(true, Reason::BreakGlassActivated, msg);
        }
        self.reconcile_objects(&plan);
    }

    /// The objects the lease needs, by derived name. `None` when they cannot be planned: before
    /// activation the grant is denied; after it the lease stands as recorded and looks again.
    pub(super) fn plan(
        &mut self,
        req: &GrantRequest,
        principal_id: uuid::Uuid,
        expires_at: DateTime<Utc>,
        catalogue: &RoleCatalogue,
    ) -> Option<LeasePlan> {
        let schedule = self.assignment_schedule(expires_at);
        let g = &self.input.grant;
        match plan(
            req,
            g.namespace,
            g.name,
            principal_id,
            expires_at,
            schedule,
            self.input.settings,
            catalogue,
        ) {
            Ok(p) => Some(p),
            Err(PlanError::UnknownRole(i, e)) => {
                if self.activated() {
                    // A role we resolved at activation cannot be resolved now: keep the lease as
                    // recorded rather than act on a guess, and look again soon.
                    self.retry(None);
                    self.st.message = Some(format!("spec.roles[{i}].role: {e}"));
                } else {
                    self.end_without_objects(
                        GrantPhase::Denied,
                        Reason::UnknownRole,
                        format!("spec.roles[{i}].role: {e}"),
                    );
                }
                None
            }
            Err(PlanError::Duplicate(i, e)) => {
                // Roles are immutable once active, so this is only ever met before activation.
                self.end_without_objects(
                    GrantPhase::Denied,
                    Reason::DuplicateRole,
                    format!("spec.roles[{i}]: {e}"),
                );
                None
            }
        }
    }

    /// Brings every planned object into existence, or rolls back on a terminal refusal.
    pub(super) fn reconcile_objects(&mut self, plan: &LeasePlan) {
        let expires_at = self.st.expires_at.unwrap_or(self.now);
        let was_active = self.input.grant.status.phase == GrantPhase::Active;
        let mut all_present = true;
        let mut refusal: Option<String> = None;
        let mut standing = Vec::new();
        // When a held tuple may have come free (docs/architecture.md, "Scaling past one
        // cluster and one subscription").
        let mut look_again: Option<DateTime<Utc>> = None;
        let mut creates = Vec::new();
        let mut items: Vec<(ObjectKey, Action, String)> = plan
            .role_assignments
            .iter()
            .map(|p| {
                (
                    p.key.clone(),
                    Action::CreateRoleAssignment(p.clone()),
                    format!("role {:?} at {}", p.written_role, p.scope),
                )
            })
            .collect();
        if let Some(f) = &plan.fic {
            items.push((
                f.key.clone(),
                Action::CreateFic(f.clone()),
                format!("federated credential {}", f.name),
            ));
        }
        let mut states = Vec::with_capacity(items.len());
        for (i, (key, create, what)) in items.into_iter().enumerate() {
            let obs = self.input.azure.get(&key);
            let planned = plan
                .role_assignments
                .get(i)
                .filter(|p| p.schedule.is_some());
            let state = match obs.observed.clone() {
                Observed::Present { owned: true, id } => {
                    if let Some(p) = planned {
                        self.keep_schedule(i, p, &obs, id);
                    }
                    ObjectState::Present
                }
                Observed::RescheduleFailed(f) => {
                    // The assignment stands with the end Azure held before: look again soon.
                    self.retry(Some(&f));
                    let msg = failure_message(&f);
                    self.event(
                        true,
                        Reason::AzureCallFailed,
                        format!("moving the end Azure PIM enforces on {what}: {msg}; retrying"),
                    );
                    self.facts.last_failure = Some(msg);
                    ObjectState::Present
                }
                Observed::Present { owned: false, id } => {
                    if let Some(t) = obs.holder.look_again_at(self.now) {
                        look_again = Some(look_again.map_or(t, |l| l.min(t)));
                    }
                    standing.push(format!(
                        "{what} ({})",
                        id.unwrap_or_else(|| "existing assignment".into())
                    ));
                    ObjectState::Standing
                }
                Observed::Absent => {
                    all_present = false;
                    // Never a create at or after expiry.
                    if self.now < expires_at {
                        let held = self
                            .st
                            .role_assignments
                            .get(i)
                            .map(|r| r.state)
                            .or_else(|| self.st.federated_credential.as_ref().map(|f| f.state))
                            == Some(ObjectState::Standing);
                        if held {
                            // Another's object held the tuple and is gone: the lease's own
                            // takes its place, bounded by this lease as everything it creates.
                            self.event(
                                false,
                                Reason::DriftRepaired,
                                format!(
                                    "{what} was held by an object lapse did not create here, \
                                     which is gone; creating the lease's own"
                                ),
                            );
                        } else if was_active {
                            self.event(
                                true,
                                Reason::DriftRepaired,
                                format!("{what} vanished during the lease; recreating it"),
                            );
                        }
                        let mut create = create;
                        if let (Some(_), Some(entry), Action::CreateRoleAssignment(p)) =
                            (planned, self.st.role_assignments.get_mut(i), &mut create)
                        {
                            // A new request, a new schedule from now to the lease's end as it
                            // stands (an extension may have moved it): recorded before it is
                            // made.
                            let schedule = self.input.settings.pim.schedule(self.now, expires_at);
                            p.schedule = Some(schedule);
                            entry.schedule = Some(schedule);
                            entry.id = None;
                        }
                        creates.push(create);
                    }
                    ObjectState::Pending
                }
                Observed::Unknown => {
                    all_present = false;
                    self.retry(None);
                    ObjectState::Pending
                }
                Observed::CreateFailed(Failure::Terminal { code, message })
                    if code.eq_ignore_ascii_case(AUTHORIZATION_FAILED)
                        && self.now < self.authorization_deadline() =>
                {
                    // The operator's own role may not have reached ARM yet (minutes on a fresh
                    // install): not a refusal until the grace is over.
                    all_present = false;
                    self.retry(None);
                    let msg = format!(
                        "Azure answered AuthorizationFailed creating {what}: {message}. The \
                         operator's own Azure role may still be propagating (up to 10 minutes \
                         after it is granted); retrying until {}, then the grant fails",
                        self.authorization_deadline()
                            .to_rfc3339_opts(SecondsFormat::Secs, true)
                    );
                    self.event(true, Reason::AuthorizationPending, msg.clone());
                    self.facts.authorization_pending = Some(msg.clone());
                    self.facts.last_failure = Some(msg);
                    ObjectState::Pending
                }
                Observed::CreateFailed(Failure::Terminal { code, message }) => {
                    let hint = if code.eq_ignore_ascii_case(AUTHORIZATION_FAILED) {
                        " (refused since the lease started: the operator lacks this permission; \
                         `lapse-operator check` names what is missing)"
                    } else if code.eq_ignore_ascii_case(PIM_LICENCE_REQUIRED) {
                        " (the policy's azure.expiry: PIM needs Microsoft Entra ID P2 or \
                         Governance in the tenant; lapse does not fall back to role \
                         assignments Azure would not end)"
                    } else {
                        ""
                    };
                    refusal.get_or_insert(format!("Azure refused {what}: {code}: {message}{hint}"));
                    ObjectState::Failed
                }
                Observed::CreateFailed(f) | Observed::DeleteFailed(f) => {
                    all_present = false;
                    self.retry(Some(&f));
                    let msg = failure_message(&f);
                    self.event(
                        true,
                        Reason::AzureCallFailed,
                        format!("creating {what}: {msg}; retrying"),
                    );
                    self.facts.last_failure = Some(msg);
                    ObjectState::Pending
                }
            };
            states.push(state);
        }
        self.set_states(&states);
        if let Some(msg) = refusal {
            // All or nothing: undo what this lease alone holds, then fail.
            self.wind_down(EndReason::Failed, Reason::AzureRefused, msg);
            return;
        }
        self.actions.extend(creates);
        self.facts.standing = standing;
        if all_present {
            self.requeue_at = Some(expires_at);
            self.transition(
                GrantPhase::Active,
                false,
                Reason::Activated,
                format!(
                    "access is active until {}",
                    expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            );
        } else {
            let msg = match (&self.facts.authorization_pending, &self.facts.last_failure) {
                (Some(pending), _) => pending.clone(),
                (None, Some(f)) => format!("creating Azure objects (retrying: {f})"),
                (None, None) => "creating Azure objects".into(),
            };
            self.transition(GrantPhase::Activating, false, Reason::Activating, msg);
        }
        if let Some(t) = look_again {
            let t = t.min(expires_at);
            self.requeue_at = Some(self.requeue_at.map_or(t, |r| r.min(t)));
        }
    }

    /// A PIM-made assignment of this lease exists: record the schedule Azure holds (and the
    /// assignment's ID), and move its end to one grace after the lease's when it differs. An
    /// end is only ever moved earlier when no other lease shares the assignment, and never
    /// within PIM's minimum of the start.
    fn keep_schedule(
        &mut self,
        i: usize,
        planned: &RoleAssignmentPlan,
        obs: &ObjectObservation,
        id: Option<String>,
    ) {
        let expires_at = self.st.expires_at.unwrap_or(self.now);
        let pim = &self.input.settings.pim;
        let Some(entry) = self.st.role_assignments.get_mut(i) else {
            return;
        };
        if id.is_some() {
            entry.id = id;
        }
        if obs.schedule.is_some() {
            entry.schedule = obs.schedule;
        }
        let Some(held) = entry.schedule else {
            return;
        };
        let wanted = pim.ends_at(expires_at).max(pim.removable_at(&held));
        let extend = wanted > held.ends_at;
        if wanted == held.ends_at || (!extend && obs.needed_by_other_lease) {
            return;
        }
        let ObjectKey::RoleAssignment {
            principal_id,
            role_guid,
            ..
        } = planned.key
        else {
            return;
        };
        entry.schedule = Some(AssignmentSchedule {
            ends_at: wanted,
            ..held
        });
        self.actions
            .push(Action::RescheduleRoleAssignment(Reschedule {
                key: planned.key.clone(),
                scope: planned.scope.clone(),
                principal_id,
                role_guid,
                role_definition_id: planned.role_definition_id.clone(),
                ends_at: wanted,
                extend,
            }));
    }

    /// Until when an `AuthorizationFailed` create is retried: the grace from the lease start.
    fn authorization_deadline(&self) -> DateTime<Utc> {
        self.st.activated_at.unwrap_or(self.now) + self.input.settings.authorization_grace
    }
}
