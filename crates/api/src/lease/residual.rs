//! How long access may continue after lapse removes it (docs/security.md, "When access really
//! ends"). Deleting a role assignment or a federated credential stops new access, not all of
//! it: ARM may keep serving a role assignment it cached for minutes after its deletion, and an
//! access token minted through the federated credential stays valid for its whole lifetime
//! (Entra cannot revoke it; for managed identities its lifetime cannot be configured). The
//! bound is an honest upper bound from those documented facts and the operator's settings.

use chrono::{DateTime, TimeDelta, Utc};

use crate::v1alpha1::AccessGrantStatus;

/// The facts the bound is computed from (operator settings, defaults from Microsoft's docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResidualBounds {
    /// How long ARM may honour a deleted role assignment from its cache (documented: up to 30
    /// minutes).
    pub propagation: TimeDelta,
    /// The lifetime of an access token issued to a managed identity (about 24 hours; not
    /// configurable).
    pub managed_identity_token: TimeDelta,
    /// The lifetime of an access token issued to an app registration's service principal
    /// (60 to 90 minutes by default; a token lifetime policy may change it).
    pub application_token: TimeDelta,
}

impl Default for ResidualBounds {
    fn default() -> Self {
        Self {
            propagation: TimeDelta::minutes(30),
            managed_identity_token: TimeDelta::hours(24),
            application_token: TimeDelta::minutes(90),
        }
    }
}

/// Whose tokens a federated credential lets a workload mint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    ManagedIdentity,
    Application,
}

impl ResidualBounds {
    /// The lifetime of a token of this kind.
    pub fn token_lifetime(&self, kind: TokenKind) -> TimeDelta {
        match kind {
            TokenKind::ManagedIdentity => self.managed_identity_token,
            TokenKind::Application => self.application_token,
        }
    }

    /// How long access may outlast the removal of a lease's objects: the propagation bound, or
    /// a token's lifetime when the lease federated a ServiceAccount (`federated` names whose
    /// tokens), whichever is longer.
    pub fn after_removal(&self, federated: Option<TokenKind>) -> TimeDelta {
        let token = federated.map_or(TimeDelta::zero(), |k| self.token_lifetime(k));
        self.propagation.max(token)
    }
}

/// `status.accessMayContinueUntil` after a decision that wrote `st` (the record before it was
/// `before`): `None` for a lease that never activated; while the lease runs, its expiry plus
/// the bound (a forecast: the objects go at expiry); while deletes are outstanding, now plus
/// the bound (it moves until they are done); once they are done, the instant they were, plus
/// the bound, fixed from then on.
pub fn access_may_continue_until(
    st: &AccessGrantStatus,
    before: &AccessGrantStatus,
    bounds: &ResidualBounds,
    federated: Option<TokenKind>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    st.activated_at?;
    // A lease that federated records its credential; one without it needs no token bound.
    let federated = st.federated_credential.as_ref().and(federated);
    let after = bounds.after_removal(federated);
    if st.phase.is_terminal() {
        if before.phase.is_terminal()
            && let Some(fixed) = before.access_may_continue_until
        {
            return Some(fixed);
        }
        return Some(now + after);
    }
    match (st.ended_at, st.expires_at) {
        // Ended, deletes outstanding: access lasts at least until they are done.
        (Some(ended), _) => Some(ended.max(now) + after),
        (None, Some(expires)) => Some(expires.max(now) + after),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1alpha1::{FederatedCredentialStatus, GrantPhase, ObjectState};

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).unwrap_or_default()
    }

    fn lease(phase: GrantPhase, federated: bool) -> AccessGrantStatus {
        AccessGrantStatus {
            phase,
            activated_at: Some(at(0)),
            expires_at: Some(at(1)),
            federated_credential: federated.then(|| {
                Box::new(FederatedCredentialStatus {
                    name: "lapse-x".into(),
                    state: ObjectState::Present,
                    ..Default::default()
                })
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_running_lease_forecasts_its_expiry_plus_the_longest_bound() {
        let b = ResidualBounds::default();
        let mi = Some(TokenKind::ManagedIdentity);
        let st = lease(GrantPhase::Active, true);
        let before = st.clone();
        assert_eq!(
            access_may_continue_until(&st, &before, &b, mi, at(0)),
            Some(at(1) + TimeDelta::hours(24)),
            "a managed identity's token outlives ARM's cache"
        );
        assert_eq!(
            access_may_continue_until(&st, &before, &b, Some(TokenKind::Application), at(0)),
            Some(at(1) + TimeDelta::minutes(90))
        );
        let plain = lease(GrantPhase::Active, false);
        assert_eq!(
            access_may_continue_until(&plain, &plain, &b, mi, at(0)),
            Some(at(1) + TimeDelta::minutes(30)),
            "without federation only ARM's cache counts"
        );
        let never = AccessGrantStatus::default();
        assert_eq!(
            access_may_continue_until(&never, &never, &b, mi, at(0)),
            None
        );
    }

    #[test]
    fn the_bound_moves_while_deletes_are_outstanding_and_is_fixed_once_they_are_done() {
        let b = ResidualBounds::default();
        let mut revoking = lease(GrantPhase::Revoking, false);
        revoking.ended_at = Some(at(1));
        let later = at(3);
        assert_eq!(
            access_may_continue_until(&revoking, &revoking, &b, None, later),
            Some(later + TimeDelta::minutes(30)),
            "a delete Azure has not done yet extends it"
        );
        let mut done = revoking.clone();
        done.phase = GrantPhase::Revoked;
        let fixed = access_may_continue_until(&done, &revoking, &b, None, at(4));
        assert_eq!(fixed, Some(at(4) + TimeDelta::minutes(30)));
        done.access_may_continue_until = fixed;
        assert_eq!(
            access_may_continue_until(&done, &done, &b, None, at(9)),
            fixed,
            "never moves once the deletes are done"
        );
    }
}
