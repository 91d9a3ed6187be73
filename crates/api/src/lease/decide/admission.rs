//! Stage *admission* of a grant not activated yet: a valid spec, not revoked, a window not
//! passed, and an AccessPolicy that allows all of it.

use chrono::{DateTime, SecondsFormat, Utc};

use super::step::Step;
use crate::field::FieldErrors;
use crate::lease::pim::ACTIVE_DURATION_TOO_SHORT;
use crate::lease::reason::Reason;
use crate::lock::LockObservation;
use crate::policy::{Verdict, evaluate};
use crate::role::RoleCatalogue;
use crate::v1alpha1::{EndReason, GrantPhase, LockTolerance};
use crate::validate::GrantRequest;

/// A grant admitted for activation.
pub(super) struct Admitted {
    pub(super) req: GrantRequest,
    /// Where the lease starts (`window.notBefore` or the grant's creation).
    pub(super) anchor: DateTime<Utc>,
    /// The catalogue the policy resolved the roles with.
    pub(super) catalogue: RoleCatalogue,
}

impl Step<'_> {
    /// Admits the grant, or ends it (`Denied`, `Revoked`, `Expired`) saying why.
    pub(super) fn admit(&mut self, req: Result<GrantRequest, FieldErrors>) -> Option<Admitted> {
        let req = match req {
            Ok(r) => r,
            Err(errs) => {
                self.facts.policy = Some((false, Reason::InvalidSpec, errs.to_string()));
                self.end_without_objects(
                    GrantPhase::Denied,
                    Reason::InvalidSpec,
                    format!("invalid grant: {errs}"),
                );
                return None;
            }
        };
        self.set_display(&req);
        if req.revoked {
            self.end_without_objects(
                GrantPhase::Revoked,
                Reason::Revoked,
                "spec.revoked is true; the grant never activated".into(),
            );
            return None;
        }
        let anchor = self.lease_start(&req);
        // An old manifest must stay harmless: an absolute window that has passed never
        // activates, whatever a policy would say.
        if let Some(after) = req.not_after.filter(|a| *a <= self.now) {
            self.window_passed(after, "spec.window.notAfter");
            return None;
        }
        let expiry = req.expiry_from(anchor);
        let catalogue = self.catalogue();
        let verdict = evaluate(&req, expiry - anchor, &self.policy_ctx(&catalogue, true));
        let (policy, gate) = match verdict {
            Verdict::Allowed { policy, gate, .. } => (policy, gate),
            Verdict::Denied { .. } => {
                let msg = verdict.message();
                self.facts.policy = Some((false, Reason::Denied, msg.clone()));
                self.end_without_objects(
                    GrantPhase::Denied,
                    Reason::Denied,
                    format!("denied: {msg}"),
                );
                return None;
            }
        };
        // Known locks deny before anyone is asked to approve; unknown ones only hold back the
        // activation itself (`activate`).
        if !self.locks_allow(&policy) {
            return None;
        }
        // A closed ticket denies before anyone is asked to approve; an unknown one only holds
        // back the activation itself (`activate`).
        if !self.ticket_not_closed(&policy, &req) {
            return None;
        }
        // Closing federation a token lifetime early needs a lease longer than that.
        if let Some(closes) = self.federation_closes_at(&policy, req.federation.is_some(), expiry)
            && closes <= anchor
        {
            let msg = format!(
                "spec.duration: a lease of {}s is not longer than a token lifetime and a margin \
                 ({}s), and AccessPolicy {policy} sets federation.closeEarly: the federated \
                 credential would be deleted before the lease starts; ask for a longer lease",
                (expiry - anchor).num_seconds(),
                (expiry - closes).num_seconds()
            );
            self.facts.policy = Some((false, Reason::Denied, msg.clone()));
            self.end_without_objects(GrantPhase::Denied, Reason::Denied, format!("denied: {msg}"));
            return None;
        }
        // PIM could not remove the assignment before its minimum: such a lease would overstay.
        let minimum = self.input.settings.pim.minimum;
        if self.pim_expiry(&policy) && expiry - anchor < minimum {
            let msg = format!(
                "spec.duration: a lease of {}s is shorter than Azure PIM's minimum active \
                 duration ({}s), and AccessPolicy {policy} sets azure.expiry: PIM: PIM would \
                 refuse to remove the assignment when the lease ends ({ACTIVE_DURATION_TOO_SHORT}); \
                 ask for a longer lease",
                (expiry - anchor).num_seconds(),
                minimum.num_seconds()
            );
            self.facts.policy = Some((false, Reason::Denied, msg.clone()));
            self.end_without_objects(GrantPhase::Denied, Reason::Denied, format!("denied: {msg}"));
            return None;
        }
        self.facts.policy = Some((
            true,
            Reason::Allowed,
            format!("allowed by AccessPolicy {policy}"),
        ));
        // Under approval the lease starts when approved: it does not run down while nobody
        // may use it.
        let start = self.pass_gate(&req, &gate, &policy, anchor);
        self.st.policy = Some(policy);
        let start = start?;
        // Under activeHours the lease cannot start before the window opens.
        let expiry = req.expiry_from(self.earliest_in_hours(start));
        if expiry <= self.now {
            let field = if req.not_before.is_some() {
                "spec.window.notBefore + spec.duration"
            } else {
                "spec.duration from the grant's creation"
            };
            self.window_passed(expiry, field);
            return None;
        }
        Some(Admitted {
            req,
            anchor: start,
            catalogue,
        })
    }

    /// Whether the AccessPolicy `policy` sets `locks: Tolerate`.
    pub(super) fn tolerates_locks(&self, policy: &str) -> bool {
        self.rules_of(policy)
            .is_some_and(|r| r.locks == LockTolerance::Tolerate)
    }

    /// DESIGN §12 "Locks": lapse never creates what it could not remove. A management lock
    /// that applies to a scope or the identity denies the grant (`ScopeLocked`, naming each
    /// lock) unless the allowing policy tolerates locks. Unknown locks (not looked at yet, or
    /// the look failed) pass here and hold back the activation itself (`activate`).
    fn locks_allow(&mut self, policy: &str) -> bool {
        let tolerate = self.tolerates_locks(policy);
        match self.input.locks {
            _ if tolerate => true,
            LockObservation::Known(locks) if locks.is_empty() => true,
            LockObservation::Known(locks) => {
                let named: Vec<String> = locks.iter().map(ToString::to_string).collect();
                let msg = format!(
                    "management lock(s) apply to the grant's scopes or identity: {}; Azure would \
                     let lapse create the access but not delete it. AccessPolicy {policy} must \
                     set locks: Tolerate to allow it",
                    named.join(", ")
                );
                self.facts.policy = Some((false, Reason::ScopeLocked, msg.clone()));
                self.end_without_objects(
                    GrantPhase::Denied,
                    Reason::ScopeLocked,
                    format!("denied: {msg}"),
                );
                false
            }
            LockObservation::Unknown => true,
        }
    }

    fn window_passed(&mut self, end: DateTime<Utc>, field: &str) {
        self.st.ended_at = Some(end);
        self.st.end_reason = Some(EndReason::Expired);
        self.end_without_objects(
            GrantPhase::Expired,
            Reason::WindowPassed,
            format!(
                "the lease window ended at {} ({field}) before activation; the grant never activates",
                end.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
        );
    }
}
