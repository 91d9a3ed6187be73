//! The lease decision: one pure step from what is known to what to do next.
//!
//! The controller calls [`decide`], persists the returned status, makes the returned calls,
//! records their outcomes in the [`AzureView`](super::AzureView) and calls [`decide`] again, until
//! no call is left. Everything the invariants of docs/architecture.md ("Invariants") need is
//! decided here.
//!
//! What the core acts on is derived from the spec, the policies, the operator's owner identity,
//! server-set times and what Azure holds. The status is read only when it carries the
//! operator's seal ([`StatusTrust::Sealed`]); deletes are aimed at derived names only.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

use super::conditions::{Facts, apply_conditions};
use super::model::{
    Action, Decision, Failure, IdentityObservation, LeaseEvent, LeaseInput, ObjectKey, Observed,
    PrivilegeObservation, StatusTrust,
};
use super::plan::{LeasePlan, PlanError, plan, recorded_fic, recorded_role_assignment};
use crate::policy::{PolicyContext, Verdict, evaluate};
use crate::role::{RoleCatalogue, RoleRef};
use crate::v1alpha1::{AccessGrantStatus, EndReason, GrantPhase, ObjectState};
use crate::validate::{GrantRequest, validate_grant};

/// ARM's code for a caller lacking a permission (or, for some scopes, the scope being invalid).
const AUTHORIZATION_FAILED: &str = "AuthorizationFailed";

/// Decides the next step of one lease.
pub fn decide(input: &LeaseInput<'_>) -> Decision {
    let mut step = Step::new(input);
    step.run();
    step.finish()
}

struct Step<'a> {
    input: &'a LeaseInput<'a>,
    now: DateTime<Utc>,
    st: AccessGrantStatus,
    actions: Vec<Action>,
    events: Vec<LeaseEvent>,
    requeue_at: Option<DateTime<Utc>>,
    retry_after: Option<std::time::Duration>,
    finalized: bool,
    tampered: Option<String>,
    facts: Facts,
}

impl<'a> Step<'a> {
    fn new(input: &'a LeaseInput<'a>) -> Self {
        // Only the operator's own record is read; anything else starts from nothing.
        let mut st = match input.grant.trust {
            StatusTrust::Sealed => input.grant.status.clone(),
            StatusTrust::Absent | StatusTrust::Tampered { .. } => AccessGrantStatus::default(),
        };
        st.observed_generation = input.grant.generation;
        Self {
            input,
            now: input.now,
            st,
            actions: Vec::new(),
            events: Vec::new(),
            requeue_at: None,
            retry_after: None,
            finalized: false,
            tampered: None,
            facts: Facts::default(),
        }
    }

    fn activated(&self) -> bool {
        self.st.activated_at.is_some()
    }

    /// The record names objects of this lease: it activated, or it ended adopting the objects
    /// its spec derives (after tampering, or with its status removed).
    fn holds_objects(&self) -> bool {
        self.activated()
            || !self.st.role_assignments.is_empty()
            || self.st.federated_credential.is_some()
    }

    fn run(&mut self) {
        if let StatusTrust::Tampered { detail } = self.input.grant.trust {
            self.end_tampered(detail);
            return;
        }
        if self.st.phase == GrantPhase::Revoking
            && self.st.principal_id.is_none()
            && self.was_tampered()
            && !self.adopt_derived_objects()
        {
            // Ended for tampering before the identity could be resolved: still looking for
            // what to remove.
            return;
        }
        let phase = self.st.phase;
        if self.input.grant.deleting {
            if self.holds_objects() {
                self.wind_down(
                    EndReason::Revoked,
                    "Deleted",
                    "the AccessGrant was deleted".into(),
                );
                self.finalized = !self.outstanding();
            } else {
                // Nothing was ever recorded for this grant: let it go once nothing derived from
                // it is left.
                if !phase.is_terminal() {
                    self.end_without_objects(
                        GrantPhase::Revoked,
                        "Deleted",
                        "deleted before activation".into(),
                    );
                }
                self.finalized = !self.outstanding();
            }
            return;
        }
        if phase.is_terminal() {
            // Terminal phases absorb. A terminal lease that still records an object owes only
            // its delete; this is never a way back.
            if self.holds_objects() {
                let reason = self.st.end_reason.unwrap_or(EndReason::Revoked);
                self.wind_down(reason, "", String::new());
            }
            return;
        }
        if phase == GrantPhase::Revoking {
            let reason = self.st.end_reason.unwrap_or(EndReason::Revoked);
            self.wind_down(reason, "", String::new());
            return;
        }
        let req = validate_grant(self.input.grant.spec);
        if self.activated() {
            self.run_activated(req);
        } else {
            self.run_not_activated(req);
        }
    }

    /// Pending or Scheduled: decide whether and when to activate.
    fn run_not_activated(&mut self, req: Result<GrantRequest, crate::field::FieldErrors>) {
        let req = match req {
            Ok(r) => r,
            Err(errs) => {
                self.facts.policy = Some((false, "InvalidSpec", errs.to_string()));
                self.end_without_objects(
                    GrantPhase::Denied,
                    "InvalidSpec",
                    format!("invalid grant: {errs}"),
                );
                return;
            }
        };
        self.set_display(&req);
        if req.revoked {
            self.end_without_objects(
                GrantPhase::Revoked,
                "Revoked",
                "spec.revoked is true; the grant never activated".into(),
            );
            return;
        }
        let anchor = self.lease_start(&req);
        let start = anchor.max(self.now);
        let expiry = req.expiry_from(anchor);
        if expiry <= self.now {
            // An old manifest must stay harmless: a passed window never activates.
            self.st.ended_at = Some(expiry);
            self.st.end_reason = Some(EndReason::Expired);
            let field = if req.not_after == Some(expiry) {
                "spec.window.notAfter"
            } else {
                "spec.window.notBefore + spec.duration"
            };
            self.end_without_objects(
                GrantPhase::Expired,
                "WindowPassed",
                format!("the lease window ended at {} ({field}) before activation; the grant never activates", expiry.to_rfc3339_opts(SecondsFormat::Secs, true)),
            );
            return;
        }
        let catalogue = self.catalogue();
        let verdict = evaluate(&req, expiry - anchor, &self.policy_ctx(&catalogue, true));
        let policy = match verdict {
            Verdict::Allowed { policy, .. } => policy,
            Verdict::Denied { .. } => {
                let msg = verdict.message();
                self.facts.policy = Some((false, "Denied", msg.clone()));
                self.end_without_objects(GrantPhase::Denied, "Denied", format!("denied: {msg}"));
                return;
            }
        };
        self.facts.policy = Some((true, "Allowed", format!("allowed by AccessPolicy {policy}")));
        self.st.policy = Some(policy);
        if start > self.now {
            self.requeue_at = Some(start);
            self.transition(
                GrantPhase::Scheduled,
                false,
                "Scheduled",
                format!(
                    "activates at {}",
                    start.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            );
            return;
        }
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
                    "IdentityNotFound",
                    format!("spec.identity: Azure could not find the identity: {code}: {message}"),
                );
                return;
            }
        };
        if self.input.settings.operator_principal == Some(principal_id) {
            self.facts.policy = Some((
                false,
                "OperatorIdentity",
                "the identity is lapse-operator's own".into(),
            ));
            self.end_without_objects(
                GrantPhase::Denied,
                "OperatorIdentity",
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
        // The lease starts where no tenant can write it: the grant's creation (set by the API
        // server) or window.notBefore. Whole seconds in the record (and so in kubectl's EXPIRES
        // column); rounding the start down only ever shortens the lease.
        let activated_at = anchor.trunc_subsecs(0);
        let expiry = req.expiry_from(activated_at);
        if expiry <= self.now {
            self.st.ended_at = Some(expiry);
            self.st.end_reason = Some(EndReason::Expired);
            self.end_without_objects(
                GrantPhase::Expired,
                "WindowPassed",
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
        self.st.federated_credential = fic;
        self.transition(
            GrantPhase::Activating,
            false,
            "Activating",
            format!(
                "lease until {}",
                expiry.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
        );
        self.reconcile_objects(&plan);
    }

    /// Activating or Active.
    fn run_activated(&mut self, req: Result<GrantRequest, crate::field::FieldErrors>) {
        let (Some(activated_at), Some(mut expires_at)) = (self.st.activated_at, self.st.expires_at)
        else {
            self.wind_down(
                EndReason::Revoked,
                "CorruptStatus",
                "the recorded lease has no expiry".into(),
            );
            return;
        };
        let req = match req {
            Ok(r) => r,
            Err(errs) => {
                // The recorded lease stands; nothing new is created from a spec we cannot read.
                self.facts.extension_denied =
                    Some(("InvalidSpec", format!("invalid grant: {errs}")));
                if self.now >= expires_at {
                    self.wind_down(
                        EndReason::Expired,
                        "Expired",
                        format!(
                            "the lease lapsed at {}",
                            expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                        ),
                    );
                } else {
                    self.observe_recorded();
                    self.requeue_at = Some(expires_at);
                }
                return;
            }
        };
        self.set_display(&req);
        if req.revoked {
            self.wind_down(EndReason::Revoked, "Revoked", "spec.revoked is true".into());
            return;
        }
        let Some(principal_id) = self
            .st
            .principal_id
            .as_deref()
            .and_then(|p| uuid::Uuid::try_parse(p).ok())
        else {
            self.wind_down(
                EndReason::Revoked,
                "CorruptStatus",
                "the recorded lease has no principal".into(),
            );
            return;
        };
        let catalogue = self.catalogue();
        let Some(plan) = self.plan(&req, principal_id, expires_at, &catalogue) else {
            return;
        };
        if !self.plan_matches_record(&plan) {
            self.wind_down(
                EndReason::Revoked,
                "SpecChanged",
                "spec.identity, spec.roles or spec.federation changed after activation; the lease was revoked".into(),
            );
            return;
        }
        let wanted = req.expiry_from(activated_at);
        if wanted > expires_at {
            let verdict = evaluate(
                &req,
                wanted - activated_at,
                &self.policy_ctx(&catalogue, false),
            );
            if verdict.is_allowed() {
                expires_at = wanted;
                self.st.expires_at = Some(wanted);
                self.event(
                    false,
                    "Extended",
                    format!(
                        "lease extended to {}",
                        wanted.to_rfc3339_opts(SecondsFormat::Secs, true)
                    ),
                );
            } else if verdict.denied_only_for_duration() {
                self.facts.extension_denied = Some(("ExceedsMaxDuration", verdict.message()));
            }
        } else if wanted < expires_at {
            expires_at = wanted;
            self.st.expires_at = Some(wanted);
            self.event(
                false,
                "Shortened",
                format!(
                    "lease now ends at {}",
                    wanted.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            );
        }
        // Continuous verification: the lease as it stands must still be allowed.
        let verdict = evaluate(
            &req,
            expires_at - activated_at,
            &self.policy_ctx(&catalogue, false),
        );
        match &verdict {
            Verdict::Allowed { policy, .. } => {
                self.facts.policy =
                    Some((true, "Allowed", format!("allowed by AccessPolicy {policy}")));
                self.st.policy = Some(policy.clone());
            }
            Verdict::Denied { .. } => {
                let msg = verdict.message();
                self.facts.policy = Some((false, "PolicyRevoked", msg.clone()));
                self.wind_down(
                    EndReason::Revoked,
                    "PolicyRevoked",
                    format!("no AccessPolicy allows the grant any more: {msg}"),
                );
                return;
            }
        }
        if self.now >= expires_at {
            self.wind_down(
                EndReason::Expired,
                "Expired",
                format!(
                    "the lease lapsed at {}",
                    expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            );
            return;
        }
        self.reconcile_objects(&plan);
    }

    /// Brings every planned object into existence, or rolls back on a terminal refusal.
    fn reconcile_objects(&mut self, plan: &LeasePlan) {
        let expires_at = self.st.expires_at.unwrap_or(self.now);
        let was_active = self.input.grant.status.phase == GrantPhase::Active;
        let mut all_present = true;
        let mut refusal: Option<String> = None;
        let mut standing = Vec::new();
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
        for (key, create, what) in items {
            let obs = self.input.azure.get(&key);
            let state = match obs.observed {
                Observed::Present { owned: true, .. } => ObjectState::Present,
                Observed::Present { owned: false, id } => {
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
                        if was_active {
                            self.event(
                                true,
                                "DriftRepaired",
                                format!("{what} vanished during the lease; recreating it"),
                            );
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
                    self.event(true, "AuthorizationPending", msg.clone());
                    self.facts.authorization_pending = Some(msg.clone());
                    self.facts.last_failure = Some(msg);
                    ObjectState::Pending
                }
                Observed::CreateFailed(Failure::Terminal { code, message }) => {
                    let hint = if code.eq_ignore_ascii_case(AUTHORIZATION_FAILED) {
                        " (refused since the lease started: the operator lacks this permission; \
                         `lapse-operator check` names what is missing)"
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
                        "AzureCallFailed",
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
            self.wind_down(EndReason::Failed, "AzureRefused", msg);
            return;
        }
        self.actions.extend(creates);
        self.facts.standing = standing;
        if all_present {
            self.requeue_at = Some(expires_at);
            self.transition(
                GrantPhase::Active,
                false,
                "Activated",
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
            self.transition(GrantPhase::Activating, false, "Activating", msg);
        }
    }

    /// With a spec we cannot read, look at the recorded objects but create nothing.
    fn observe_recorded(&mut self) {
        for (key, _) in self.recorded() {
            if self.input.azure.get(&key).observed == Observed::Unknown {
                self.retry(None);
            }
        }
    }

    /// Ends the lease: deletes what this lease alone holds, leaves shared and standing access.
    fn wind_down(&mut self, reason: EndReason, why: &'static str, message: String) {
        let first = self.st.end_reason.is_none();
        let end_reason = *self.st.end_reason.get_or_insert(reason);
        let end = match end_reason {
            EndReason::Expired => self.st.expires_at.unwrap_or(self.now).min(self.now),
            EndReason::Revoked | EndReason::Failed => self.now,
        };
        let ended_at = *self.st.ended_at.get_or_insert(end);
        if first {
            self.st.message = Some(message.clone());
            self.event(
                end_reason == EndReason::Failed,
                if why.is_empty() { "LeaseEnded" } else { why },
                message,
            );
        }
        let mut states = Vec::new();
        let mut outstanding_failure = None;
        for (i, (key, delete)) in self.recorded().into_iter().enumerate() {
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
            let state = match obs.observed {
                Observed::Present { owned: false, .. } => ObjectState::Standing,
                Observed::Absent | Observed::CreateFailed(Failure::Terminal { .. }) => {
                    ObjectState::Deleted
                }
                _ if obs.needed_by_other_lease => ObjectState::Released,
                Observed::DeleteFailed(f) => {
                    self.retry(Some(&f));
                    let msg = failure_message(&f);
                    self.event(
                        true,
                        "RevocationRetrying",
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
                self.transition(GrantPhase::Revoking, false, "Revoking", msg);
            }
            if self.now - ended_at >= self.input.settings.overdue_after {
                let detail = outstanding_failure.unwrap_or_else(|| "deletes pending".into());
                let msg = format!(
                    "lease ended at {} and its Azure objects are not all deleted yet: {detail}",
                    ended_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                );
                let was_overdue = super::conditions::find(
                    self.input.grant.status,
                    super::conditions::REVOCATION_OVERDUE,
                )
                .is_some_and(|c| c.status == crate::v1alpha1::ConditionStatus::True);
                if !was_overdue {
                    self.event(true, "RevocationOverdue", msg.clone());
                }
                self.facts.overdue = Some(msg);
            }
            self.retry(None);
        } else if !self.st.phase.is_terminal() {
            let phase = end_reason.terminal_phase();
            let msg = self.st.message.clone().unwrap_or_default();
            self.transition(phase, end_reason == EndReason::Failed, phase.as_str(), msg);
        }
    }

    /// Ends a lease that never created anything.
    fn end_without_objects(&mut self, phase: GrantPhase, why: &'static str, message: String) {
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

    /// The objects the status says this lease holds, with their delete calls.
    fn recorded(&self) -> Vec<(ObjectKey, Action)> {
        let principal = self
            .st
            .principal_id
            .as_deref()
            .and_then(|p| uuid::Uuid::try_parse(p).ok());
        let owner = &self.input.settings.owner;
        let mut out: Vec<(ObjectKey, Action)> = match principal {
            Some(p) => self
                .st
                .role_assignments
                .iter()
                .filter_map(|e| recorded_role_assignment(owner, p, e))
                .collect(),
            None => Vec::new(),
        };
        out.extend(
            self.st
                .federated_credential
                .as_ref()
                .and_then(|f| recorded_fic(owner, f)),
        );
        out
    }

    fn recorded_state(&self, i: usize) -> ObjectState {
        let n = self.st.role_assignments.len();
        if i < n {
            self.st.role_assignments[i].state
        } else {
            self.st
                .federated_credential
                .as_ref()
                .map_or(ObjectState::Deleted, |f| f.state)
        }
    }

    /// States in recorded order: role assignments, then the FIC.
    fn set_states(&mut self, states: &[ObjectState]) {
        let n = self.st.role_assignments.len();
        for (i, s) in states.iter().enumerate() {
            if i < n {
                self.st.role_assignments[i].state = *s;
            } else if let Some(f) = self.st.federated_credential.as_mut() {
                f.state = *s;
            }
        }
    }

    fn plan_matches_record(&self, plan: &LeasePlan) -> bool {
        let lower = |s: &Option<String>| s.as_deref().map(str::to_ascii_lowercase);
        let planned: Vec<Option<String>> = plan
            .role_assignments
            .iter()
            .map(|p| Some(p.id.to_ascii_lowercase()))
            .collect();
        let recorded: Vec<Option<String>> = self
            .st
            .role_assignments
            .iter()
            .map(|r| lower(&r.id))
            .collect();
        let fic_planned = plan.fic.as_ref().map(|f| f.id.to_ascii_lowercase());
        let fic_recorded = self
            .st
            .federated_credential
            .as_ref()
            .and_then(|f| lower(&f.id));
        planned == recorded && fic_planned == fic_recorded
    }

    fn plan(
        &mut self,
        req: &GrantRequest,
        principal_id: uuid::Uuid,
        expires_at: DateTime<Utc>,
        catalogue: &RoleCatalogue,
    ) -> Option<LeasePlan> {
        let g = &self.input.grant;
        match plan(
            req,
            g.namespace,
            g.name,
            principal_id,
            expires_at,
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
                        "UnknownRole",
                        format!("spec.roles[{i}].role: {e}"),
                    );
                }
                None
            }
            Err(PlanError::Duplicate(i, e)) => {
                // Roles are immutable once active, so this is only ever met before activation.
                self.end_without_objects(
                    GrantPhase::Denied,
                    "DuplicateRole",
                    format!("spec.roles[{i}]: {e}"),
                );
                None
            }
        }
    }

    /// The operator's catalogue plus the role definitions this lease recorded at activation,
    /// so a custom role name keeps resolving to the role it was granted as.
    fn catalogue(&self) -> RoleCatalogue {
        let mut c = self.input.policy.catalogue.clone();
        for r in &self.st.role_assignments {
            if let Some(guid) = r
                .role_definition_id
                .as_deref()
                .and_then(|d| d.rsplit('/').next())
                .and_then(|g| uuid::Uuid::try_parse(g).ok())
                && let Ok(RoleRef::Name(name)) = RoleRef::parse(&r.role)
                && c.resolve(&RoleRef::Name(name.clone())).is_err()
            {
                c.insert(&name, guid);
            }
        }
        c
    }

    /// The policy context with this lease's catalogue. The namespace quota counts only for a
    /// new activation: a running lease is never ended by it.
    fn policy_ctx<'c>(&self, catalogue: &'c RoleCatalogue, activating: bool) -> PolicyContext<'c>
    where
        'a: 'c,
    {
        PolicyContext {
            catalogue,
            live_grants: self.input.policy.live_grants.filter(|_| activating),
            ..self.input.policy
        }
    }

    /// Where the lease starts: `window.notBefore`, or the grant's creation (set by the API
    /// server), whichever is later. Neither can be written through the status.
    fn lease_start(&self, req: &GrantRequest) -> DateTime<Utc> {
        let created = self.input.grant.created_at.unwrap_or(self.now);
        req.not_before.map_or(created, |b| b.max(created))
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
        self.st.federated_credential = fic;
        true
    }

    fn was_tampered(&self) -> bool {
        super::conditions::find(&self.st, super::conditions::TAMPERED)
            .is_some_and(|c| c.status == crate::v1alpha1::ConditionStatus::True)
    }

    /// The status is not the operator's record. Nothing in it is read: the lease ends, the
    /// objects the spec derives are removed (only this owner's, only where no other lease needs
    /// them), and `spec.revoked` is set so no replayed status can bring the lease back.
    fn end_tampered(&mut self, detail: &str) {
        let msg = format!(
            "the status was not written by lapse-operator ({detail}); nothing in it is trusted: \
             the lease was ended, the Azure objects the spec derives are removed and \
             spec.revoked is set"
        );
        self.tampered = Some(detail.to_owned());
        self.facts.tampered = Some(msg.clone());
        self.event(true, "StatusTampered", msg.clone());
        self.st.end_reason = Some(EndReason::Revoked);
        self.st.ended_at = Some(self.now);
        self.st.message = Some(msg.clone());
        self.st.phase = GrantPhase::Revoking;
        let derived = self.adopt_derived_objects();
        if derived {
            self.wind_down(EndReason::Revoked, "StatusTampered", msg);
        } else {
            self.transition(GrantPhase::Revoking, false, "StatusTampered", msg);
        }
        if self.input.grant.deleting {
            self.finalized = derived && !self.outstanding();
        }
    }

    /// Records, as this lease's, the objects its spec derives (for a lease ended without a
    /// record it can trust). False while they cannot be named yet (the principal is not
    /// resolved): the lease stays `Revoking` and looks again.
    fn adopt_derived_objects(&mut self) -> bool {
        let Ok(req) = validate_grant(self.input.grant.spec) else {
            // Nothing derivable: the orphan sweep removes whatever of ours no lease claims.
            return true;
        };
        self.set_display(&req);
        let IdentityObservation::Resolved { principal_id } = self.input.identity else {
            self.retry(None);
            return false;
        };
        let catalogue = self.catalogue();
        let expiry = req.expiry_from(self.lease_start(&req));
        let g = &self.input.grant;
        if let Ok(p) = plan(
            &req,
            g.namespace,
            g.name,
            *principal_id,
            expiry,
            self.input.settings,
            &catalogue,
        ) {
            let (ras, fic) = p.status_entries();
            self.st.principal_id = Some(principal_id.to_string());
            self.st.role_assignments = ras;
            self.st.federated_credential = fic;
        }
        true
    }

    fn set_display(&mut self, req: &GrantRequest) {
        self.st.identity_name = Some(req.identity.display_name());
        self.st.role_summary = Some(
            req.roles
                .iter()
                .map(|r| r.written.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
        let mut scopes: Vec<&str> = req
            .roles
            .iter()
            .map(|r| r.scope.name().unwrap_or(r.scope.as_str()))
            .collect();
        scopes.dedup();
        self.st.scope_summary = Some(scopes.join(","));
    }

    fn transition(&mut self, phase: GrantPhase, warning: bool, why: &'static str, message: String) {
        let changed = self.st.phase != phase;
        self.st.phase = phase;
        self.st.message = Some(message.clone());
        // One Event per reason per decision: ending a lease names its cause, and the terminal
        // transition that follows in the same step would only repeat it.
        if changed && !self.events.iter().any(|e| e.reason == why) {
            self.event(warning, why, message);
        }
    }

    fn event(&mut self, warning: bool, reason: &'static str, message: String) {
        self.events.push(LeaseEvent {
            warning,
            reason,
            message,
        });
    }

    /// Until when an `AuthorizationFailed` create is retried: the grace from the lease start.
    fn authorization_deadline(&self) -> DateTime<Utc> {
        self.st.activated_at.unwrap_or(self.now) + self.input.settings.authorization_grace
    }

    fn retry(&mut self, failure: Option<&Failure>) {
        let base = self.input.settings.retry_after;
        let wait = match failure {
            Some(Failure::Throttled { retry_after, .. }) => (*retry_after).max(base),
            _ => base,
        };
        self.retry_after = Some(self.retry_after.map_or(wait, |w| w.min(wait)));
    }

    fn outstanding(&self) -> bool {
        self.actions.iter().any(|a| !a.is_create())
    }

    fn finish(mut self) -> Decision {
        apply_conditions(
            &mut self.st,
            &self.facts,
            self.now,
            self.input.grant.generation,
        );
        if self.finalized || self.st.phase.is_terminal() {
            self.requeue_at = None;
        }
        Decision {
            status: self.st,
            actions: self.actions,
            events: self.events,
            requeue_at: self.requeue_at,
            retry_after: self.retry_after,
            finalized: self.finalized,
            tampered: self.tampered,
        }
    }
}

fn failure_message(f: &Failure) -> String {
    match f {
        Failure::Retryable { message } => message.clone(),
        Failure::Throttled {
            retry_after,
            message,
        } => format!("throttled for {}s: {message}", retry_after.as_secs()),
        Failure::Terminal { code, message } => format!("{code}: {message}"),
    }
}
