//! Stage *trust*: a status the operator did not write ends the lease. Nothing in it is read;
//! the objects the spec derives are removed and `spec.revoked` is set.

use super::step::Step;
use crate::lease::conditions::{TAMPERED, find};
use crate::lease::model::{IdentityObservation, StatusTrust};
use crate::lease::plan::plan;
use crate::lease::reason::Reason;
use crate::v1alpha1::{ConditionStatus, EndReason, GrantPhase};
use crate::validate::validate_grant;

impl Step<'_> {
    /// Ends the lease of a status the operator did not write, or goes on looking for what such
    /// a lease must remove. True when nothing else is decided this step.
    pub(super) fn distrust(&mut self) -> bool {
        if let StatusTrust::Tampered { detail } = self.input.grant.trust {
            self.end_tampered(detail);
            return true;
        }
        // Ended for tampering before the identity could be resolved: still looking for what
        // to remove.
        self.st.phase == GrantPhase::Revoking
            && self.st.principal_id.is_none()
            && self.was_tampered()
            && !self.adopt_derived_objects()
    }

    fn was_tampered(&self) -> bool {
        find(&self.st, TAMPERED).is_some_and(|c| c.status == ConditionStatus::True)
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
        self.event(true, Reason::StatusTampered, msg.clone());
        self.st.end_reason = Some(EndReason::Revoked);
        self.st.ended_at = Some(self.now);
        self.st.message = Some(msg.clone());
        self.st.phase = GrantPhase::Revoking;
        let derived = self.adopt_derived_objects();
        if derived {
            self.wind_down(EndReason::Revoked, Reason::StatusTampered, msg);
        } else {
            self.transition(GrantPhase::Revoking, false, Reason::StatusTampered, msg);
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
            None,
            self.input.settings,
            &catalogue,
        ) {
            let (ras, fic) = p.status_entries();
            self.st.principal_id = Some(principal_id.to_string());
            self.st.role_assignments = ras;
            self.st.federated_credential = fic.map(Box::new);
        }
        true
    }
}
