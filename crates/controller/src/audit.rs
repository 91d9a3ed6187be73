//! Audit lines: one structured log record per security-relevant fact, on the `lapse::audit`
//! target with `audit = true`, so a log pipeline can route them to a SIEM apart from the rest.

use crate::grant_ref::GrantRef;

/// The status of `grant` was written by someone other than the operator; the lease was ended.
pub fn status_tampered(grant: &GrantRef, uid: &str, detail: &str) {
    tracing::warn!(
        target: "lapse::audit",
        audit = true,
        event = "StatusTampered",
        namespace = %grant.namespace(),
        grant = %grant.name(),
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
        namespace = %grant.namespace(),
        grant = %grant.name(),
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

/// One lifecycle transition of a grant (docs/audit.md): who asked and who decided, what was
/// granted where (with the Azure object IDs), under which policy, when, and why.
pub fn transition(r: &crate::notify::GrantRecord, t: &crate::notify::Transition) {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    let join = |items: Vec<String>| items.join(",");
    tracing::info!(
        target: "lapse::audit",
        audit = true,
        event = "Transition",
        notification = t.kind.map(|k| k.as_str()).unwrap_or_default(),
        from = t.from.as_str(),
        to = t.to.as_str(),
        reason = %t.reason,
        cluster = %r.cluster,
        namespace = %r.namespace,
        grant = %r.name,
        uid = %r.uid,
        generation = r.generation.unwrap_or_default(),
        requester = r.requester.as_deref().unwrap_or_default(),
        break_glass = r.break_glass,
        justification = r.justification.as_deref().unwrap_or_default(),
        identity_kind = r.identity.kind,
        identity = %r.identity.id,
        principal = r.principal_id.as_deref().unwrap_or_default(),
        roles = %join(r.roles.iter().map(|x| x.role.clone()).collect()),
        scopes = %join(r.roles.iter().map(|x| x.scope.clone()).collect()),
        role_assignments = %join(r.roles.iter().filter_map(|x| x.id.clone()).collect()),
        federated_credential = r
            .federated_credential
            .as_ref()
            .and_then(|f| f.id.as_deref().or(Some(f.name.as_str())))
            .unwrap_or_default(),
        policy = r.policy.as_deref().unwrap_or_default(),
        approvers = %join(r.approvers.clone()),
        approvals = %r.approvals_text(),
        activated_at = %time(r.activated_at),
        expires_at = %time(r.expires_at),
        ended_at = %time(r.ended_at),
        // 0 unless the lease ended early to keep its deletes within ARM's delete budget.
        ended_early_seconds = r.ended_early_seconds.unwrap_or_default(),
        end_reason = r.end_reason.as_deref().unwrap_or_default(),
        "AccessGrant {}/{}: {} -> {} ({}): {}",
        r.namespace,
        r.name,
        t.from.as_str(),
        t.to.as_str(),
        t.reason,
        t.message
    );
}

/// A usage finding (docs/usage.md): what Azure's logs showed about a lease or a principal.
pub fn usage_finding(f: &lapse_api::usage::Finding, policy: Option<&str>) {
    tracing::warn!(
        target: "lapse::audit",
        audit = true,
        event = f.kind.as_str(),
        grant = f.grant.as_deref().unwrap_or_default(),
        principal = %f.principal,
        policy = policy.unwrap_or_default(),
        log_event = f.event.as_deref().unwrap_or_default(),
        at = %f.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        revoke = f.revoke,
        "{}: {}",
        f.kind.as_str(),
        f.message
    );
}
