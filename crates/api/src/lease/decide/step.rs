//! The state of one decision and the primitives every stage uses: the status being written,
//! the calls and Events gathered, transitions, retries, and the record's objects.

use chrono::{DateTime, Utc};

use crate::lease::conditions::{Facts, apply_conditions};
use crate::lease::model::{
    Action, Decision, Failure, LeaseEvent, LeaseInput, ObjectKey, StatusTrust,
};
use crate::lease::plan::{recorded_fic, recorded_role_assignment};
use crate::lease::reason::Reason;
use crate::lease::residual::{TokenKind, access_may_continue_until};
use crate::policy::PolicyContext;
use crate::role::{RoleCatalogue, RoleRef};
use crate::v1alpha1::{AccessGrantStatus, GrantPhase, ObjectState};
use crate::validate::GrantRequest;

/// How much earlier than one token lifetime before the end federation closes: the delete takes
/// a reconcile, and Entra takes a moment to stop honouring a deleted credential.
pub(super) const CLOSE_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

pub(super) struct Step<'a> {
    pub(super) input: &'a LeaseInput<'a>,
    pub(super) now: DateTime<Utc>,
    pub(super) st: AccessGrantStatus,
    pub(super) actions: Vec<Action>,
    pub(super) events: Vec<LeaseEvent>,
    pub(super) requeue_at: Option<DateTime<Utc>>,
    pub(super) retry_after: Option<std::time::Duration>,
    pub(super) finalized: bool,
    pub(super) tampered: Option<String>,
    pub(super) facts: Facts,
    /// A removal waits for PIM's minimum active duration: not sent yet, still owed.
    pub(super) waiting: bool,
    /// A usage finding that ends the lease (`watch.onSensitiveAction: Revoke`).
    pub(super) usage_revoke: Option<crate::usage::Finding>,
}

impl<'a> Step<'a> {
    pub(super) fn new(input: &'a LeaseInput<'a>) -> Self {
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
            waiting: false,
            usage_revoke: None,
        }
    }

    pub(super) fn activated(&self) -> bool {
        self.st.activated_at.is_some()
    }

    /// The record names objects of this lease: it activated, or it ended adopting the objects
    /// its spec derives (after tampering, or with its status removed).
    pub(super) fn holds_objects(&self) -> bool {
        self.activated()
            || !self.st.role_assignments.is_empty()
            || self.st.federated_credential.is_some()
    }

    /// The objects the status says this lease holds, with their delete calls.
    pub(super) fn recorded(&self) -> Vec<(ObjectKey, Action)> {
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

    pub(super) fn recorded_state(&self, i: usize) -> ObjectState {
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
    pub(super) fn set_states(&mut self, states: &[ObjectState]) {
        let n = self.st.role_assignments.len();
        for (i, s) in states.iter().enumerate() {
            if i < n {
                self.st.role_assignments[i].state = *s;
            } else if let Some(f) = self.st.federated_credential.as_mut() {
                f.state = *s;
            }
        }
    }

    /// The operator's catalogue plus the role definitions this lease recorded at activation,
    /// so a custom role name keeps resolving to the role it was granted as.
    pub(super) fn catalogue(&self) -> RoleCatalogue {
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
    pub(super) fn policy_ctx<'c>(
        &self,
        catalogue: &'c RoleCatalogue,
        activating: bool,
    ) -> PolicyContext<'c>
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
    pub(super) fn lease_start(&self, req: &GrantRequest) -> DateTime<Utc> {
        let created = self.input.grant.created_at.unwrap_or(self.now);
        req.not_before.map_or(created, |b| b.max(created))
    }

    pub(super) fn set_display(&mut self, req: &GrantRequest) {
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

    pub(super) fn transition(
        &mut self,
        phase: GrantPhase,
        warning: bool,
        why: Reason,
        message: String,
    ) {
        let changed = self.st.phase != phase;
        self.st.phase = phase;
        self.st.message = Some(message.clone());
        // One Event per reason per decision: ending a lease names its cause, and the terminal
        // transition that follows in the same step would only repeat it.
        if changed && !self.events.iter().any(|e| e.reason == why) {
            self.event(warning, why, message);
        }
    }

    pub(super) fn event(&mut self, warning: bool, reason: Reason, message: String) {
        self.events.push(LeaseEvent {
            warning,
            reason,
            message,
        });
    }

    pub(super) fn retry(&mut self, failure: Option<&Failure>) {
        let base = self.input.settings.retry_after;
        let wait = match failure {
            Some(Failure::Throttled { retry_after, .. }) => (*retry_after).max(base),
            _ => base,
        };
        self.retry_after = Some(self.retry_after.map_or(wait, |w| w.min(wait)));
    }

    /// A delete is still to be made (or waits for PIM to allow it).
    pub(super) fn outstanding(&self) -> bool {
        self.waiting || self.actions.iter().any(Action::is_delete)
    }

    /// Whose tokens a federated credential of this grant mints: a service principal has no
    /// credentials of its own (they belong to its app registration).
    pub(super) fn token_kind(&self) -> Option<TokenKind> {
        let identity = &self.input.grant.spec.identity;
        if identity.managed_identity.is_some() {
            Some(TokenKind::ManagedIdentity)
        } else if identity.application.is_some() {
            Some(TokenKind::Application)
        } else {
            None
        }
    }

    /// When a federating lease under a policy with `federation.closeEarly` deletes its
    /// credential: one token lifetime before `expires_at`. `None` when it does not.
    pub(super) fn federation_closes_at(
        &self,
        policy: &str,
        federates: bool,
        expires_at: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let closes = self
            .rules_of(policy)
            .is_some_and(|r| r.close_federation_early);
        let kind = self.token_kind()?;
        (closes && federates)
            .then(|| expires_at - self.input.settings.residual.token_lifetime(kind) - CLOSE_MARGIN)
    }

    /// The rules of the AccessPolicy named `policy`, when it is known and valid.
    pub(super) fn rules_of(&self, policy: &str) -> Option<&crate::validate::PolicyRules> {
        self.input
            .policy
            .policies
            .iter()
            .find(|p| p.name == policy)
            .and_then(|p| p.rules.as_ref().ok())
    }

    /// Whether the AccessPolicy `policy` makes Azure enforce expiry through PIM.
    pub(super) fn pim_expiry(&self, policy: &str) -> bool {
        self.rules_of(policy).is_some_and(|r| r.pim_expiry)
    }

    /// The PIM schedule a role assignment of this lease is requested with, if any: a lease
    /// that recorded its assignments as PIM-made keeps them so (a policy change does not turn
    /// them into plain ones mid-lease); a new one follows its policy.
    pub(super) fn assignment_schedule(
        &self,
        expires_at: DateTime<Utc>,
    ) -> Option<crate::v1alpha1::AssignmentSchedule> {
        let pim = if self.activated() {
            self.st
                .role_assignments
                .iter()
                .any(|r| r.schedule.is_some())
        } else {
            self.st
                .policy
                .as_deref()
                .is_some_and(|p| self.pim_expiry(p))
        };
        pim.then(|| self.input.settings.pim.schedule(self.now, expires_at))
    }

    pub(super) fn finish(mut self) -> Decision {
        let before = match self.input.grant.trust {
            StatusTrust::Sealed => Some(self.input.grant.status),
            _ => None,
        };
        let tokens = self.token_kind();
        self.st.access_may_continue_until = access_may_continue_until(
            &self.st,
            before.unwrap_or(&AccessGrantStatus::default()),
            &self.input.settings.residual,
            tokens,
            self.now,
        );
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

pub(super) fn failure_message(f: &Failure) -> String {
    match f {
        Failure::Retryable { message } => message.clone(),
        Failure::Throttled {
            retry_after,
            message,
        } => format!("throttled for {}s: {message}", retry_after.as_secs()),
        Failure::Terminal { code, message } => format!("{code}: {message}"),
    }
}
