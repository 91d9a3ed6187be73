//! The policy's workflow bounds on a lease (docs/approval.md): `activeHours` (a grant activates
//! only inside the window and its lease ends at the window's close), `maxExtensions` (how
//! many times a lease may be lengthened) and `ticket` (a checked ticket must be open). Kept
//! apart from the stages that call them.

use chrono::{DateTime, SecondsFormat, Utc};

use super::step::Step;
use crate::hours::ActiveWindow;
use crate::lease::reason::Reason;
use crate::ticket::{TicketKey, TicketState, checked_ticket};
use crate::v1alpha1::{EndReason, GrantPhase};
use crate::validate::GrantRequest;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Step<'_> {
    /// The working hours of the policy that allows the lease, if it has any.
    fn active_hours(&self) -> Option<(&str, &ActiveWindow)> {
        let policy = self.st.policy.as_deref()?;
        let hours = self.rules_of(policy)?.active_hours.as_ref()?;
        Some((policy, hours))
    }

    /// Before activation: where the lease starts inside the window open now (not before its
    /// opening: the lease does not run down while nobody may use it), or `None` when the grant
    /// waits (`Scheduled`) for the next opening.
    pub(super) fn within_active_hours(&mut self, anchor: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let Some((policy, hours)) = self.active_hours() else {
            return Some(anchor);
        };
        if let Some(open) = hours.containing(self.now) {
            return Some(anchor.max(open.open));
        }
        let (policy, hours) = (policy.to_owned(), hours.to_string());
        let msg = match self.active_hours().and_then(|(_, h)| h.next(self.now)) {
            Some(next) => {
                self.requeue_at = Some(next.open);
                format!(
                    "outside the active hours of AccessPolicy {policy} ({hours}); activates at \
                     {}, when they next open",
                    rfc3339(next.open)
                )
            }
            None => {
                // Validation makes this unreachable (a listed day always has a window); look
                // again rather than never.
                self.retry(None);
                format!("outside the active hours of AccessPolicy {policy} ({hours})")
            }
        };
        self.transition(GrantPhase::Scheduled, false, Reason::Scheduled, msg);
        None
    }

    /// The earliest a lease anchored at `anchor` can start under the policy's hours: in the
    /// window open now or at the next opening.
    pub(super) fn earliest_in_hours(&self, anchor: DateTime<Utc>) -> DateTime<Utc> {
        let Some((_, hours)) = self.active_hours() else {
            return anchor;
        };
        let t = anchor.max(self.now);
        hours
            .containing(t)
            .map(|o| anchor.max(o.open))
            .or_else(|| hours.next(t).map(|o| o.open))
            .unwrap_or(anchor)
    }

    /// The expiry a lease that started at `activated_at` may have: never after the close of the
    /// window it started in. Under a policy without hours, `expiry` itself; a start outside every
    /// window (the policy's hours changed) ends the lease at once.
    pub(super) fn within_hours_close(
        &self,
        activated_at: DateTime<Utc>,
        expiry: DateTime<Utc>,
    ) -> DateTime<Utc> {
        match self.active_hours() {
            None => expiry,
            Some((_, hours)) => hours
                .containing(activated_at)
                .map_or(activated_at, |o| o.close)
                .min(expiry),
        }
    }

    /// Whether the lease may be extended once more under `policy`'s `maxExtensions`; when not,
    /// `ExtensionDenied` says so and the lease keeps its expiry.
    pub(super) fn extension_within_limit(&mut self, policy: &str) -> bool {
        let Some(max) = self.rules_of(policy).and_then(|r| r.max_extensions) else {
            return true;
        };
        if self.st.extensions < max {
            return true;
        }
        let expiry = self.st.expires_at.map(rfc3339).unwrap_or_default();
        self.facts.extension_denied = Some((
            Reason::ExtensionLimitReached,
            format!(
                "the lease was already extended {} time(s), AccessPolicy {policy}'s \
                 maxExtensions is {max}: the extension is refused and the lease keeps its \
                 expiry {expiry}",
                self.st.extensions
            ),
        ));
        false
    }

    /// The ticket `policy` has checked for this grant, and what its checker said. `None` when
    /// the policy checks none.
    fn checked(&self, policy: &str, req: &GrantRequest) -> Option<(TicketKey, TicketState)> {
        let key = checked_ticket(
            self.input.policy.policies,
            policy,
            req.justification.as_deref(),
        )?;
        let state = self.input.tickets.get(&key);
        Some((key, state))
    }

    /// Admission: a ticket its checker says is closed denies the grant before anyone is asked
    /// to approve it. Returns whether the grant may go on.
    pub(super) fn ticket_not_closed(&mut self, policy: &str, req: &GrantRequest) -> bool {
        let Some((key, TicketState::Closed)) = self.checked(policy, req) else {
            return true;
        };
        let msg = format!(
            "spec.justification: {key} is closed; AccessPolicy {policy} allows grants only for \
             an open ticket"
        );
        self.facts.policy = Some((false, Reason::TicketClosed, msg.clone()));
        self.end_without_objects(
            GrantPhase::Denied,
            Reason::TicketClosed,
            format!("denied: {msg}"),
        );
        false
    }

    /// Activation: a checked ticket must be known open. While its state is unknown (being
    /// asked) or unavailable (the checker cannot be believed), the grant waits and says why.
    pub(super) fn ticket_confirmed(&mut self, req: &GrantRequest) -> bool {
        let Some(policy) = self.st.policy.clone() else {
            return true;
        };
        let msg = match self.checked(&policy, req) {
            None | Some((_, TicketState::Open)) => return true,
            // Admission denied it already in this step; never activate on it.
            Some((key, TicketState::Closed)) => format!("{key} is closed"),
            Some((key, TicketState::Unknown)) => {
                format!("checking that {key} is open before activating")
            }
            Some((key, TicketState::Unavailable { detail })) => format!(
                "{key} cannot be checked ({detail}); the grant activates once its checker says \
                 it is open"
            ),
        };
        self.retry(None);
        self.st.message = Some(msg);
        false
    }

    /// A running lease: a closed ticket ends it (`TicketClosed`), and so does a checker that
    /// has not answered for longer than the stale period (`TicketUnverified`: fail closed). An
    /// unknown state (the operator restarted, the answer is on its way) leaves it standing.
    /// Returns whether the lease ended.
    pub(super) fn ticket_ends_lease(&mut self, policy: &str, req: &GrantRequest) -> bool {
        let (why, msg) = match self.checked(policy, req) {
            Some((key, TicketState::Closed)) => (
                Reason::TicketClosed,
                format!(
                    "{key} was closed; AccessPolicy {policy} allows the lease only while it is \
                     open: the lease was revoked"
                ),
            ),
            Some((key, TicketState::Unavailable { detail })) => (
                Reason::TicketUnverified,
                format!(
                    "{key} could not be checked ({detail}); AccessPolicy {policy} allows the \
                     lease only while it is known open: the lease was revoked"
                ),
            ),
            _ => return false,
        };
        self.facts.policy = Some((false, why, msg.clone()));
        self.wind_down(EndReason::Revoked, why, msg);
        true
    }
}
