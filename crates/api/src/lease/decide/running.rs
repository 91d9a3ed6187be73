//! Stage *running* of an activated lease: the record still holds and matches the spec,
//! `spec.revoked`, extension and shortening within policy, continuous verification, expiry,
//! then the objects (drift repair).

use chrono::{DateTime, SecondsFormat, Utc};

use super::step::Step;
use crate::field::FieldErrors;
use crate::lease::model::ObjectKey;
use crate::lease::model::Observed;
use crate::lease::plan::LeasePlan;
use crate::lease::plan::{recorded_fic, recorded_objects};
use crate::lease::reason::Reason;
use crate::policy::{Verdict, evaluate};
use crate::role::RoleCatalogue;
use crate::v1alpha1::{EndReason, ObjectState};
use crate::validate::GrantRequest;

impl Step<'_> {
    /// Activating or Active.
    pub(super) fn run_activated(&mut self, req: Result<GrantRequest, FieldErrors>) {
        let (Some(activated_at), Some(expires_at)) = (self.st.activated_at, self.st.expires_at)
        else {
            self.wind_down(
                EndReason::Revoked,
                Reason::CorruptStatus,
                "the recorded lease has no expiry".into(),
            );
            return;
        };
        let req = match req {
            Ok(r) => r,
            Err(errs) => {
                // The recorded lease stands; nothing new is created from a spec we cannot read.
                self.facts.extension_denied =
                    Some((Reason::InvalidSpec, format!("invalid grant: {errs}")));
                if self.now >= expires_at {
                    self.wind_down(
                        EndReason::Expired,
                        Reason::Expired,
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
            self.wind_down(
                EndReason::Revoked,
                Reason::Revoked,
                "spec.revoked is true".into(),
            );
            return;
        }
        if self.usage_ends_lease() {
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
                Reason::CorruptStatus,
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
                Reason::SpecChanged,
                "spec.identity, spec.roles or spec.federation changed after activation; the lease was revoked".into(),
            );
            return;
        }
        let expires_at = self.move_expiry(&req, activated_at, expires_at, &catalogue);
        // Continuous verification: the lease as it stands must still be allowed.
        let verdict = evaluate(
            &req,
            expires_at - activated_at,
            &self.policy_ctx(&catalogue, false),
        );
        match &verdict {
            Verdict::Allowed { policy, gate, .. } => {
                self.facts.policy = Some((
                    true,
                    Reason::Allowed,
                    format!("allowed by AccessPolicy {policy}"),
                ));
                self.st.policy = Some(policy.clone());
                // An eligible approver's Deny ends the lease, break-glass or not.
                if self.review(&req, gate) {
                    return;
                }
                // So does a ticket closed (or no longer checkable) under it.
                let policy = policy.clone();
                if self.ticket_ends_lease(&policy, &req) {
                    return;
                }
            }
            Verdict::Denied { .. } => {
                let msg = verdict.message();
                self.facts.policy = Some((false, Reason::PolicyRevoked, msg.clone()));
                self.wind_down(
                    EndReason::Revoked,
                    Reason::PolicyRevoked,
                    format!("no AccessPolicy allows the grant any more: {msg}"),
                );
                return;
            }
        }
        if self.now >= expires_at {
            self.wind_down(
                EndReason::Expired,
                Reason::Expired,
                format!(
                    "the lease lapsed at {}",
                    expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            );
            return;
        }
        if self.delete_budget_ends_lease(expires_at) {
            return;
        }
        let policy = self.st.policy.clone().unwrap_or_default();
        match self.federation_closes_at(&policy, plan.fic.is_some(), expires_at) {
            Some(closes) if self.now >= closes => {
                // The role assignments stay until the lease ends; the credential goes now and
                // is not repaired.
                let mut roles_only = plan.clone();
                roles_only.fic = None;
                self.reconcile_objects(&roles_only);
                self.close_federation(closes, expires_at);
                // Deletes first, as everywhere (a repair of a role assignment may be queued).
                self.actions.sort_by_key(|a| !a.is_delete());
            }
            closes => {
                self.reconcile_objects(&plan);
                if let Some(closes) = closes {
                    self.requeue_at = Some(self.requeue_at.map_or(closes, |r| r.min(closes)));
                }
            }
        }
    }

    /// Synchronized expiry: the controller's delete plan starts this lease's deletes before its
    /// end, because more leases of one subscription end then than ARM's delete budget deletes in
    /// time. The lease ends now, as `Expired`, and says how early and why. A plan made for
    /// another end (the lease was extended or shortened since) waits for the next plan.
    fn delete_budget_ends_lease(&mut self, expires_at: DateTime<Utc>) -> bool {
        let Some(early) = self
            .input
            .early_end
            .filter(|e| e.for_end == expires_at && self.now >= e.starts_at)
        else {
            return false;
        };
        let by = expires_at - self.now;
        // Whole seconds, rounded up: "ended 0 s early" would hide that it did.
        let seconds = (by.num_milliseconds().max(0) + 999) / 1000;
        self.st.ended_early_seconds = Some(u32::try_from(seconds).unwrap_or(u32::MAX));
        self.wind_down(
            EndReason::Expired,
            Reason::EndedEarly,
            format!(
                "the lease ended {seconds}s before its expiry at {}: {} deletes in {} are due \
                 by {}, more than ARM's delete budget deletes in time, so they start early \
                 (synchronized expiry)",
                expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                early.crowd,
                early.budget,
                early.crowd_until.to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
        );
        true
    }

    /// Deletes the lease's federated credential before the lease ends (`federation.closeEarly`),
    /// unless another live lease still needs it.
    fn close_federation(&mut self, closes: DateTime<Utc>, expires_at: DateTime<Utc>) {
        // A lease that ended meanwhile (a refused repair) deletes everything in its own stage.
        if self.st.end_reason.is_some() {
            return;
        }
        let owner = &self.input.settings.owner;
        let Some((key, delete)) = self
            .st
            .federated_credential
            .as_ref()
            .filter(|f| {
                !matches!(
                    f.state,
                    ObjectState::Deleted | ObjectState::Standing | ObjectState::Released
                )
            })
            .and_then(|f| recorded_fic(owner, f))
        else {
            return;
        };
        let obs = self.input.azure.get(&key);
        let state = match obs.observed {
            Observed::Absent => ObjectState::Deleted,
            Observed::Present { owned: false, .. } => ObjectState::Standing,
            _ if obs.needed_by_other_lease => ObjectState::Released,
            Observed::DeleteFailed(f) => {
                self.retry(Some(&f));
                self.actions.push(delete);
                ObjectState::Deleting
            }
            _ => {
                self.actions.push(delete);
                ObjectState::Deleting
            }
        };
        if state == ObjectState::Deleted {
            self.event(
                false,
                Reason::FederationClosed,
                format!(
                    "federated credential deleted at {} (federation.closeEarly): a token minted                      through it expires by the lease's end, {}",
                    closes.to_rfc3339_opts(SecondsFormat::Secs, true),
                    expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            );
        }
        if let Some(f) = self.st.federated_credential.as_mut() {
            f.state = state;
        }
    }

    /// Extension and shortening: the expiry the spec now asks for, an extension only within
    /// policy. Returns the expiry that stands.
    fn move_expiry(
        &mut self,
        req: &GrantRequest,
        activated_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        catalogue: &RoleCatalogue,
    ) -> DateTime<Utc> {
        let wanted = self.within_hours_close(activated_at, req.expiry_from(activated_at));
        if wanted > expires_at {
            let verdict = evaluate(
                req,
                wanted - activated_at,
                &self.policy_ctx(catalogue, false),
            );
            if let Verdict::Allowed { policy, gate, .. } = &verdict
                && (!self.extension_within_limit(policy) || !self.extension_approved(req, gate))
            {
                return expires_at;
            }
            if verdict.is_allowed() {
                self.st.expires_at = Some(wanted);
                self.st.extensions = self.st.extensions.saturating_add(1);
                self.event(
                    false,
                    Reason::Extended,
                    format!(
                        "lease extended to {}",
                        wanted.to_rfc3339_opts(SecondsFormat::Secs, true)
                    ),
                );
                return wanted;
            }
            if verdict.denied_only_for_duration() {
                self.facts.extension_denied = Some((Reason::ExceedsMaxDuration, verdict.message()));
            }
        } else if wanted < expires_at {
            self.st.expires_at = Some(wanted);
            self.event(
                false,
                Reason::Shortened,
                format!(
                    "lease now ends at {}",
                    wanted.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            );
            return wanted;
        }
        expires_at
    }

    /// With a spec we cannot read, look at the recorded objects but create nothing.
    fn observe_recorded(&mut self) {
        for (key, _) in self.recorded() {
            if self.input.azure.get(&key).observed == Observed::Unknown {
                self.retry(None);
            }
        }
    }

    /// The objects the spec derives are the ones recorded (role assignments compared by the
    /// tuple Azure keeps unique: a PIM-made one has a name Azure chose).
    fn plan_matches_record(&self, plan: &LeasePlan) -> bool {
        let lower = |s: &Option<String>| s.as_deref().map(str::to_ascii_lowercase);
        let planned: Vec<&ObjectKey> = plan.role_assignments.iter().map(|p| &p.key).collect();
        let recorded = recorded_objects(&self.st);
        let recorded: Vec<&ObjectKey> = recorded
            .iter()
            .map(|(k, _)| k)
            .filter(|k| matches!(k, ObjectKey::RoleAssignment { .. }))
            .collect();
        let fic_planned = plan.fic.as_ref().map(|f| f.id.to_ascii_lowercase());
        let fic_recorded = self
            .st
            .federated_credential
            .as_ref()
            .and_then(|f| lower(&f.id));
        planned.len() == self.st.role_assignments.len()
            && planned == recorded
            && fic_planned == fic_recorded
    }
}
