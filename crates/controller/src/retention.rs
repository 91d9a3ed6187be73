//! Retiring finished grants (`--retain-finished`, off by default). A terminal grant is the audit
//! record of its lease and stays until someone deletes it; GitOps repositories and busy
//! namespaces may prefer them to go after a while. The audit line of the retirement keeps the
//! record in the logs.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use lapse_api::v1alpha1::{AccessGrant, AccessGrantStatus, ObjectState};

use crate::context::Context;
use crate::grant_ref::GrantRef;

/// How often finished grants are looked for, at most.
const INTERVAL: Duration = Duration::from_secs(60);

/// Whether a grant may be retired at `now`: its lease ended (terminal, nothing left to delete)
/// at least `retain` ago.
pub fn retirable(
    status: &AccessGrantStatus,
    retain: chrono::TimeDelta,
    now: chrono::DateTime<Utc>,
) -> bool {
    let done = |s: ObjectState| {
        matches!(
            s,
            ObjectState::Deleted
                | ObjectState::Standing
                | ObjectState::Released
                | ObjectState::Failed
        )
    };
    status.phase.is_terminal()
        && status.role_assignments.iter().all(|r| done(r.state))
        && status
            .federated_credential
            .as_ref()
            .is_none_or(|f| done(f.state))
        && status.ended_at.is_some_and(|end| now - end >= retain)
}

/// Deletes retirable grants until the process ends.
pub async fn run(ctx: Arc<Context>, retain: Duration) {
    let _ = ctx.ready.subscribe().wait_for(|ready| *ready).await;
    // Short retentions are looked at often enough to honour them.
    let every = INTERVAL.min((retain / 2).max(Duration::from_secs(1)));
    let retain = chrono::TimeDelta::from_std(retain).unwrap_or(chrono::TimeDelta::MAX);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Utc::now();
        for g in ctx.grants.state() {
            // Only a finished lease retires: the cache's summary says which to look at.
            let summary = g.summary();
            if !summary.sealed || !summary.phase.is_some_and(|p| p.is_terminal()) {
                continue;
            }
            let Some(g) = g.unpacked("retiring finished grants") else {
                continue;
            };
            let Some(ns) = g.namespace() else { continue };
            let uid = g.uid().unwrap_or_default();
            // Only the operator's own record (sealed: the summary said so) says a lease is over.
            if g.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(status) = g.status.as_ref().filter(|s| retirable(s, retain, now)) else {
                continue;
            };
            let grant = GrantRef::new(&ns, g.name_any());
            let api: Api<AccessGrant> = Api::namespaced(ctx.client.clone(), &ns);
            // The uid precondition: never a grant re-created under the same name since.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(grant.name(), &params).await {
                Ok(_) => crate::audit::retired(&grant, &uid, status),
                Err(e) => tracing::warn!(grant = %grant, error = %e, "retiring a finished grant"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapse_api::v1alpha1::{GrantPhase, RoleAssignmentStatus};

    #[test]
    fn only_finished_leases_past_the_retention_retire() {
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let retain = chrono::TimeDelta::hours(24);
        let mut st = AccessGrantStatus {
            phase: GrantPhase::Expired,
            ended_at: Some(t),
            role_assignments: vec![RoleAssignmentStatus {
                schedule: None,
                state: ObjectState::Deleted,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(!retirable(&st, retain, t + chrono::TimeDelta::hours(23)));
        assert!(retirable(&st, retain, t + retain));
        st.role_assignments[0].state = ObjectState::Deleting;
        assert!(!retirable(&st, retain, t + retain), "still owes a delete");
        st.role_assignments[0].state = ObjectState::Deleted;
        st.phase = GrantPhase::Active;
        assert!(!retirable(&st, retain, t + retain), "a live lease");
    }
}
