//! Usage evidence (docs/usage.md): the ledger's batches not yet in the status are counted into
//! `status.usage`, each new finding becomes an Event, and a finding of a policy that revokes on
//! sensitive actions ends a running lease.

use super::step::Step;
use crate::lease::model::LeaseEvent;
use crate::lease::reason::Reason;
use crate::usage::{FindingKind, apply_deltas};
use crate::v1alpha1::EndReason;

impl Step<'_> {
    pub(super) fn count_usage(&mut self) {
        let (usage, added) = apply_deltas(self.st.usage.as_deref(), self.input.usage);
        self.st.usage = usage.map(Box::new);
        for f in added {
            let reason = match f.kind {
                FindingKind::UseAfterEnd => Reason::UseAfterEnd,
                FindingKind::UseWithoutLease => Reason::UseWithoutLease,
                FindingKind::SensitiveAction => Reason::SensitiveAction,
                FindingKind::PrivilegeChain => Reason::PrivilegeChain,
                FindingKind::UnusedGrant => Reason::UnusedGrant,
                FindingKind::RightSize => Reason::RightSize,
            };
            self.events.push(LeaseEvent {
                warning: f.kind.warning(),
                reason,
                message: f.message.clone(),
            });
            if f.revoke && self.usage_revoke.is_none() {
                self.usage_revoke = Some(f);
            }
        }
    }

    /// A running lease whose policy revokes on sensitive actions, after one: revoked. Returns
    /// whether the lease ended.
    pub(super) fn usage_ends_lease(&mut self) -> bool {
        let Some(f) = self.usage_revoke.take() else {
            return false;
        };
        let msg = format!(
            "{}; AccessPolicy {} sets watch.onSensitiveAction: Revoke: the lease was revoked",
            f.message,
            self.st.policy.as_deref().unwrap_or("-")
        );
        self.facts.policy = Some((false, Reason::SensitiveAction, msg.clone()));
        self.wind_down(EndReason::Revoked, Reason::SensitiveAction, msg);
        true
    }
}
