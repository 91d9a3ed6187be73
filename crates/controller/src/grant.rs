//! The AccessGrant reconciler: observes, asks the decision core, persists the status, acts,
//! and repeats until the core has nothing left to do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use lapse_api::lease::{
    self, Decision, GrantView, IdentityObservation, LeaseInput, ObjectKey, REVOCATION_OVERDUE,
    recorded_fic, recorded_role_assignment,
};
use lapse_api::policy::PolicyContext;
use lapse_api::role::RoleRef;
use lapse_api::v1alpha1::{
    AccessGrant, AccessGrantStatus, ConditionStatus, EndReason, ObjectState,
};
use lapse_api::validate::{GrantRequest, validate_grant};
use serde_json::json;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::inventory::GrantRef;
use crate::observe::namespace_labels;

/// Added to every grant; removed only once its lease's Azure objects are gone.
pub const FINALIZER: &str = "lapse.dev/revoke";
/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "lapse-operator";
/// Decide/act rounds in one reconcile before yielding to other grants.
const MAX_ROUNDS: usize = 8;

pub async fn reconcile(grant: Arc<AccessGrant>, ctx: Arc<Context>) -> Result<Requeue> {
    // Wait until every cache is loaded and every grant's claims are known.
    let _ = ctx.ready.subscribe().wait_for(|ready| *ready).await;
    let started = Instant::now();
    let ns = grant.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<AccessGrant> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, grant, |event| async {
        match event {
            Finalizer::Apply(g) => drive(&g, &ctx, false).await,
            Finalizer::Cleanup(g) => drive(&g, &ctx, true).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconcile_seconds
        .observe(started.elapsed().as_secs_f64());
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.metric_label(),
    };
    ctx.metrics
        .reconciles
        .get_or_create(&crate::metrics::ResultLabels {
            result: label.into(),
        })
        .inc();
    result
}

/// Backs off on errors; a pending revocation retries at the pace the core asked for.
pub fn error_policy(_grant: Arc<AccessGrant>, error: &Error, ctx: Arc<Context>) -> Requeue {
    match error.retry_after() {
        Some(d) => Requeue::requeue(d),
        None => {
            tracing::warn!(error = %error, "reconcile failed");
            Requeue::requeue(ctx.settings.retry_after)
        }
    }
}

/// The keys a grant may touch: those its status records, and those its spec plans.
fn keys_of(
    ctx: &Context,
    g: &AccessGrant,
    req: Option<&GrantRequest>,
    identity: &IdentityObservation,
) -> Vec<ObjectKey> {
    let status = g.status.clone().unwrap_or_default();
    let mut keys = Vec::new();
    if let Some(p) = status
        .principal_id
        .as_deref()
        .and_then(|p| uuid::Uuid::try_parse(p).ok())
    {
        keys.extend(
            status
                .role_assignments
                .iter()
                .filter_map(|e| recorded_role_assignment(p, e))
                .map(|(k, _)| k),
        );
    }
    keys.extend(
        status
            .federated_credential
            .as_ref()
            .and_then(recorded_fic)
            .map(|(k, _)| k),
    );
    if let (Some(req), IdentityObservation::Resolved { principal_id }) = (req, identity) {
        let catalogue = ctx.resolver.catalogue();
        let (ns, name) = (g.namespace().unwrap_or_default(), g.name_any());
        // Keys do not depend on the expiry; any instant serves.
        if let Ok(plan) = lease::plan(
            req,
            &ns,
            &name,
            *principal_id,
            Utc::now(),
            &ctx.core,
            &catalogue,
        ) {
            keys.extend(plan.role_assignments.into_iter().map(|p| p.key));
            keys.extend(plan.fic.map(|f| f.key));
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

async fn drive(g: &AccessGrant, ctx: &Context, deleting: bool) -> Result<Requeue> {
    let gref = GrantRef {
        namespace: g.namespace().ok_or(Error::NoNamespace)?,
        name: g.name_any(),
    };
    let mut status = g.status.clone().unwrap_or_default();
    let req = validate_grant(&g.spec).ok();
    let needs_azure = !status.phase.is_terminal() || status.activated_at.is_some();

    // Observe what the core reads from outside.
    let identity = match (
        status
            .principal_id
            .as_deref()
            .and_then(|p| uuid::Uuid::try_parse(p).ok()),
        &req,
    ) {
        (Some(p), _) => IdentityObservation::Resolved { principal_id: p },
        (None, Some(r))
            if !deleting
                && !status.phase.is_terminal()
                && r.not_before.is_none_or(|b| b <= Utc::now()) =>
        {
            ctx.resolver.identity(&ctx.azure, &r.identity).await
        }
        _ => IdentityObservation::Unknown,
    };
    let policies = ctx.policies.snapshot();
    if let Some(r) = &req
        && needs_azure
    {
        ctx.resolver
            .resolve_names(&ctx.azure, &role_names_to_resolve(r, &policies))
            .await;
    }
    let keys = keys_of(ctx, g, req.as_ref(), &identity);
    crate::sweep::ensure_loaded(ctx, &keys).await;
    // Hold every object this grant touches, so a lease sharing one cannot end under us.
    let _guards = ctx.locks.lock(&keys).await;
    let mut view = ctx.inventory.view(&keys, &gref);
    let labels = namespace_labels(&ctx.namespaces, &gref.namespace);
    let catalogue = ctx.resolver.catalogue();

    // Each object gets one attempt per reconcile: after a failure the core's retry delay (or
    // the throttle's) applies instead of hammering Azure in a tight loop.
    let mut failed: std::collections::HashSet<ObjectKey> = std::collections::HashSet::new();
    let mut persisted = g.status.is_some();
    for _ in 0..MAX_ROUNDS {
        let now = Utc::now();
        let input = LeaseInput {
            now,
            settings: &ctx.core,
            grant: GrantView {
                namespace: &gref.namespace,
                name: &gref.name,
                generation: g.metadata.generation,
                deleting,
                spec: &g.spec,
                status: &status,
            },
            policy: PolicyContext {
                namespace: &gref.namespace,
                namespace_labels: &labels,
                policies: &policies,
                catalogue: &catalogue,
            },
            identity: &identity,
            azure: &view,
        };
        let d = lease::decide(&input);
        if d.status != status || !persisted {
            // Status first: a crash after this point leaves a record of every object we create.
            patch_status(ctx, &gref, &d.status).await?;
            ctx.inventory.set_claims(&gref, Some(&d.status));
            persisted = true;
        }
        observe_metrics(ctx, &gref, &status, &d, now);
        publish(ctx, g, &d);
        status = d.status.clone();
        let actions: Vec<&lease::Action> = d
            .actions
            .iter()
            .filter(|a| !failed.contains(a.key()))
            .collect();
        if actions.is_empty() {
            return finish(ctx, &gref, &d, deleting);
        }
        for action in actions {
            let outcome = crate::execute::execute(ctx, action).await;
            if matches!(
                outcome,
                lease::Observed::CreateFailed(_) | lease::Observed::DeleteFailed(_)
            ) {
                failed.insert(action.key().clone());
            }
            view.set(action.key().clone(), outcome);
        }
    }
    // Still busy after many rounds: yield and come back at once.
    Ok(Requeue::requeue(Duration::from_millis(100)))
}

fn finish(ctx: &Context, gref: &GrantRef, d: &Decision, deleting: bool) -> Result<Requeue> {
    if deleting {
        if d.finalized {
            ctx.inventory.set_claims(gref, None);
            ctx.metrics.observe_grant(gref, None, false);
            return Ok(Requeue::await_change());
        }
        // The finalizer stays until the revocation is done.
        return Err(Error::RevocationPending {
            grant: gref.to_string(),
            retry_after: d.retry_after.unwrap_or(ctx.settings.retry_after),
        });
    }
    let now = Utc::now();
    let at = d
        .requeue_at
        .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO));
    let wait = match (at, d.retry_after) {
        (Some(a), Some(r)) => Some(a.min(r)),
        (a, r) => a.or(r),
    };
    Ok(match wait {
        Some(w) => Requeue::requeue(w),
        // Nothing scheduled: the sweep and watch events bring it back when needed.
        None => Requeue::await_change(),
    })
}

/// Role names (of the grant and of every policy) the catalogue must know, with the
/// subscription each would be defined in.
fn role_names_to_resolve(
    req: &GrantRequest,
    policies: &[lapse_api::policy::NamedPolicy],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let subs: Vec<String> = req
        .roles
        .iter()
        .filter_map(|r| r.scope.subscription().map(str::to_owned))
        .collect();
    for r in &req.roles {
        if let (RoleRef::Name(n), Some(sub)) = (&r.role, r.scope.subscription()) {
            out.push((sub.to_owned(), n.clone()));
        }
    }
    for p in policies {
        if let Ok(rules) = &p.rules {
            for (_, role) in &rules.roles {
                if let RoleRef::Name(n) = role {
                    out.extend(subs.iter().map(|s| (s.clone(), n.clone())));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

async fn patch_status(ctx: &Context, gref: &GrantRef, status: &AccessGrantStatus) -> Result<()> {
    let api: Api<AccessGrant> = Api::namespaced(ctx.client.clone(), &gref.namespace);
    let patch = json!({
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessGrant",
        "status": status,
    });
    api.patch_status(
        &gref.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::StatusWrite {
        grant: gref.to_string(),
        source,
    })?;
    Ok(())
}

fn observe_metrics(
    ctx: &Context,
    gref: &GrantRef,
    before: &AccessGrantStatus,
    d: &Decision,
    now: chrono::DateTime<Utc>,
) {
    let overdue = lease::find_condition(&d.status, REVOCATION_OVERDUE)
        .is_some_and(|c| c.status == ConditionStatus::True);
    ctx.metrics
        .observe_grant(gref, Some(d.status.phase), overdue);
    // Overstay: a lapsed lease's objects, each deleted now, past their expiry.
    if d.status.end_reason == Some(EndReason::Expired)
        && let Some(exp) = d.status.expires_at
    {
        let newly_deleted = d
            .status
            .role_assignments
            .iter()
            .zip(before.role_assignments.iter())
            .filter(|(a, b)| a.state == ObjectState::Deleted && b.state == ObjectState::Deleting)
            .count()
            + usize::from(
                matches!((&d.status.federated_credential, &before.federated_credential), (Some(a), Some(b)) if a.state == ObjectState::Deleted && b.state == ObjectState::Deleting),
            );
        let overstay = (now - exp).num_milliseconds().max(0) as f64 / 1000.0;
        for _ in 0..newly_deleted {
            ctx.metrics.overstay_seconds.observe(overstay);
        }
    }
}

fn publish(ctx: &Context, g: &AccessGrant, d: &Decision) {
    let reference = g.object_ref(&());
    for e in &d.events {
        let ev = KubeEvent {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.to_owned(),
            note: Some(truncate(&e.message, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        ctx.events.send(ev, reference.clone());
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
