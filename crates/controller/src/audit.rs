//! Audit lines: one structured log record per security-relevant fact, on the `lapse::audit`
//! target with `audit = true`, so a log pipeline can route them to a SIEM apart from the rest.

use crate::inventory::GrantRef;

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
