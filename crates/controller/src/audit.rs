//! Audit lines: one structured log record per security-relevant fact, on the `lapse::audit`
//! target with `audit = true`, so a log pipeline can route them to a SIEM apart from the rest.

use crate::grant_ref::GrantRef;

/// The status of `grant` was written by someone other than the operator; the lease was ended.
pub fn status_tampered(grant: &GrantRef, uid: &str, detail: &str) {
    tracing::warn!(
        target: "lapse::audit",
        audit = true,
        event = "StatusTampered",
        namespace = %grant.namespace,
        grant = %grant.name,
        uid,
        detail,
        "status of AccessGrant {grant} was not written by lapse-operator: lease ended, spec.revoked set"
    );
}

/// Objects marked with this cluster's name that another operator owns (a twin): never swept.
pub fn twin_objects(count: usize, sample: &str) {
    tracing::warn!(
        target: "lapse::audit",
        audit = true,
        event = "TwinObjects",
        count,
        sample,
        "{count} Azure objects carry this cluster's name but belong to another operator \
         (same LAPSE_CLUSTER_NAME in another cluster, shard or with another issuer); they are \
         never swept by this one"
    );
}

/// A finished grant deleted after `--retain-finished`: its record, one last time.
pub fn retired(grant: &GrantRef, uid: &str, status: &lapse_api::v1alpha1::AccessGrantStatus) {
    tracing::info!(
        target: "lapse::audit",
        audit = true,
        event = "Retired",
        namespace = %grant.namespace,
        grant = %grant.name,
        uid,
        phase = status.phase.as_str(),
        identity = status.identity_name.as_deref().unwrap_or_default(),
        principal = status.principal_id.as_deref().unwrap_or_default(),
        roles = status.role_summary.as_deref().unwrap_or_default(),
        policy = status.policy.as_deref().unwrap_or_default(),
        activated_at = ?status.activated_at,
        expires_at = ?status.expires_at,
        ended_at = ?status.ended_at,
        "finished AccessGrant {grant} retired (deleted) after the retention period"
    );
}
