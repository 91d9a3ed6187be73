//! Which lane a grant's work belongs to right now (docs/architecture.md, "Revocations
//! first"): the revocation lane takes every grant whose lease must end now, the activation lane
//! everything else. Decided per event, cheaply and without I/O.

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use lapse_api::lease::StatusTrust;
use lapse_api::policy::{PolicyContext, covers_namespace, evaluate};
use lapse_api::v1alpha1::{AccessGrant, AccessGrantStatus, GrantPhase};
use lapse_api::validate::validate_grant;

use crate::context::Context;
use crate::grant_ref::GrantRef;
use crate::lanes::holds_objects;
use crate::observe::namespace_labels;

/// Which lane a grant's work belongs to right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Activation,
    Revocation,
}

/// The lane for a grant at `now`. Cheap and free of I/O: it runs for every event in both lanes.
pub fn lane_of(ctx: &Context, g: &AccessGrant, now: DateTime<Utc>) -> Lane {
    if revocation_due(ctx, g, now) {
        Lane::Revocation
    } else {
        Lane::Activation
    }
}

/// For a grant the activation lane holds: how long until the revocation lane must look at it,
/// its lease's end, when that end is still ahead. A lease that ended (`Expired`, `Revoked`) or
/// any other past end needs no timer: the activation lane finishes it, and the watch event of
/// its status write brings it back here if objects remain. Requeueing a past end at once would
/// spin every finished grant through this lane for good, starving the leases that must end.
/// Nor does a lease not yet activated (`Scheduled`, `Pending`): this lane never takes one on
/// its clock, and the status write that activates it wakes this lane. A timer for each grant
/// scheduled a month out held a scheduler entry per grant (docs/performance.md).
pub fn revocation_wake(
    sealed: bool,
    status: Option<&AccessGrantStatus>,
    now: DateTime<Utc>,
) -> Option<std::time::Duration> {
    (live_end(status.filter(|_| sealed)?)? - now)
        .to_std()
        .ok()
        .filter(|d| !d.is_zero())
}

/// The end of a lease that is live: activated and not finished.
fn live_end(status: &AccessGrantStatus) -> Option<DateTime<Utc>> {
    (!status.phase.is_terminal() && status.activated_at.is_some())
        .then_some(status.expires_at)
        .flatten()
}

/// Whether `at`, a decision's time to look again, is the end of a live lease: the moment
/// [`revocation_wake`] sets the revocation lane's timer for. The activation lane sets no timer
/// of its own for it (at the end the grant is the revocation lane's, and its reconcile would
/// only hand it over), which keeps one scheduler entry per live lease instead of two
/// (docs/performance.md).
pub fn is_lease_end(status: &AccessGrantStatus, at: DateTime<Utc>) -> bool {
    live_end(status) == Some(at)
}

fn revocation_due(ctx: &Context, g: &AccessGrant, now: DateTime<Utc>) -> bool {
    let uid = g.uid().unwrap_or_default();
    let trust = ctx.sealer.trust(&uid, g.status.as_ref());
    let st = match (&trust, &g.status) {
        (StatusTrust::Tampered { .. }, _) => return true,
        (StatusTrust::Sealed, Some(st)) => st,
        // No record: nothing of this grant's is known to exist yet, unless it is being deleted
        // (its derived objects may exist if the status was removed mid-lease).
        _ => return g.metadata.deletion_timestamp.is_some(),
    };
    if st.phase.is_terminal() {
        return holds_objects(st);
    }
    if g.metadata.deletion_timestamp.is_some() || st.phase == GrantPhase::Revoking {
        return true;
    }
    if st.activated_at.is_none() {
        return false;
    }
    if g.spec.revoked || st.expires_at.is_some_and(|e| now >= e) {
        return true;
    }
    // Synchronized expiry: the delete plan starts this lease's deletes before its end.
    if let Some(end) = st.expires_at.filter(|_| ctx.early.any())
        && ctx.early.due(
            &GrantRef::new(g.namespace().unwrap_or_default(), g.name_any()),
            end,
            now,
        )
    {
        return true;
    }
    // A sensitive action under `onSensitiveAction: Revoke` waits to be counted.
    if ctx.usage.revokes(&uid) {
        return true;
    }
    // Continuous verification: a lease no policy allows any more ends in this lane too.
    let Ok(req) = validate_grant(&g.spec) else {
        return false;
    };
    let ns = g.namespace().unwrap_or_default();
    let labels = namespace_labels(&ctx.namespaces, &ns);
    let policies = ctx.policies.snapshot();
    if !covers_namespace(&policies, &ns, &labels) {
        return true;
    }
    let (Some(start), Some(end)) = (st.activated_at, st.expires_at) else {
        return false;
    };
    let catalogue = ctx.resolver.catalogue();
    let verdict = evaluate(
        &req,
        end - start,
        &PolicyContext {
            namespace: &ns,
            namespace_labels: &labels,
            policies: &policies,
            catalogue: &catalogue,
            privileges: &lapse_api::lease::PrivilegeObservation::Unknown,
            live_grants: None,
        },
    );
    if !verdict.is_allowed() {
        return true;
    }
    // A ticket closed (or no longer checkable) under the lease ends it in this lane too.
    st.policy.as_deref().is_some_and(|policy| {
        lapse_api::ticket::checked_ticket(&policies, policy, req.justification.as_deref())
            .is_some_and(|key| {
                matches!(
                    ctx.tickets.peek(&key),
                    lapse_api::ticket::TicketState::Closed
                        | lapse_api::ticket::TicketState::Unavailable { .. }
                )
            })
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn status(phase: GrantPhase, ends_in: TimeDelta, now: DateTime<Utc>) -> AccessGrantStatus {
        AccessGrantStatus {
            phase,
            activated_at: Some(now - TimeDelta::minutes(5)),
            expires_at: Some(now + ends_in),
            ..Default::default()
        }
    }

    #[test]
    fn a_live_lease_wakes_the_revocation_lane_at_its_end() {
        let now = Utc::now();
        let st = status(GrantPhase::Active, TimeDelta::seconds(30), now);
        assert_eq!(
            revocation_wake(true, Some(&st), now),
            Some(std::time::Duration::from_secs(30))
        );
    }

    #[test]
    fn the_activation_lane_leaves_a_live_lease_s_end_to_the_revocation_lane() {
        let now = Utc::now();
        let st = status(GrantPhase::Active, TimeDelta::seconds(30), now);
        let end = now + TimeDelta::seconds(30);
        assert!(is_lease_end(&st, end));
        assert_eq!(
            revocation_wake(true, Some(&st), now),
            Some(std::time::Duration::from_secs(30)),
            "the revocation lane wakes for that end"
        );
        // An earlier look (an active-hours window closing, say) stays the activation lane's.
        assert!(!is_lease_end(&st, end - TimeDelta::seconds(10)));
        // A lease not yet activated wakes the activation lane at its start: no other lane does.
        let mut scheduled = st.clone();
        scheduled.activated_at = None;
        assert!(!is_lease_end(&scheduled, end));
        let finished = status(GrantPhase::Expired, TimeDelta::seconds(30), now);
        assert!(!is_lease_end(&finished, end));
    }

    #[test]
    fn a_finished_or_past_lease_waits_for_a_change_instead_of_spinning() {
        let now = Utc::now();
        for phase in [GrantPhase::Expired, GrantPhase::Revoked, GrantPhase::Active] {
            let past = status(phase, TimeDelta::seconds(-30), now);
            assert_eq!(revocation_wake(true, Some(&past), now), None, "{phase:?}");
        }
        let ended_ahead = status(GrantPhase::Expired, TimeDelta::seconds(30), now);
        assert_eq!(revocation_wake(true, Some(&ended_ahead), now), None);
        assert_eq!(revocation_wake(true, None, now), None);
    }

    #[test]
    fn a_lease_not_yet_activated_sets_no_timer_here() {
        let now = Utc::now();
        let mut st = status(GrantPhase::Scheduled, TimeDelta::days(30), now);
        st.activated_at = None;
        assert_eq!(revocation_wake(true, Some(&st), now), None);
    }

    #[test]
    fn an_unsealed_status_sets_no_timer() {
        let now = Utc::now();
        let st = status(GrantPhase::Active, TimeDelta::seconds(30), now);
        assert_eq!(revocation_wake(false, Some(&st), now), None);
    }
}
