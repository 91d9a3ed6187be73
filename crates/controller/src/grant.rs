//! The AccessGrant reconcilers of both lanes (see [`crate::lanes`]): observe, ask the decision
//! core, persist the sealed status, act, and repeat until the core has nothing left to do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use lapse_api::lease::{
    self, Decision, GrantView, IdentityObservation, LeaseInput, ObjectKey, PrivilegeObservation,
    StatusTrust, recorded_objects,
};
use lapse_api::policy::{PolicyContext, covers_namespace};
use lapse_api::role::RoleRef;
use lapse_api::v1alpha1::{AccessGrant, AccessGrantStatus, EndReason, ObjectState};
use lapse_api::validate::{GrantRequest, validate_grant};
use serde_json::json;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::grant_ref::GrantRef;
use crate::observe::namespace_labels;
use crate::route::{Lane, lane_of};

/// Added to every grant; removed only once its lease's Azure objects are gone.
pub const FINALIZER: &str = "lapse.dev/revoke";
/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "lapse-operator";
/// Decide/act rounds in one reconcile before yielding to other grants: the operator's
/// [`Settings::max_rounds`](crate::Settings::max_rounds).
pub const MAX_ROUNDS: usize = 8;
/// How soon a grant that used up its rounds is reconciled again.
const YIELD: Duration = Duration::from_millis(100);
/// How soon a namespace that holds its whole share of the activation lane is looked at again.
const FAIR_SHARE_RETRY: Duration = Duration::from_millis(250);

/// The activation lane: everything but a lease that must end now.
pub async fn reconcile_activation(grant: Arc<AccessGrant>, ctx: Arc<Context>) -> Result<Requeue> {
    let _ = ctx.ready.subscribe().wait_for(|ready| *ready).await;
    if lane_of(&ctx, &grant, Utc::now()) == Lane::Revocation {
        return Ok(Requeue::await_change());
    }
    let ns = grant.namespace().ok_or(Error::NoNamespace)?;
    let Some(_share) = ctx.fair.try_enter(&ns) else {
        ctx.metrics.fair_share_waits.inc();
        return Ok(Requeue::requeue(FAIR_SHARE_RETRY));
    };
    run(grant, ctx, Lane::Activation).await
}

/// The revocation lane: only leases that must end now, with slots of their own.
pub async fn reconcile_revocation(grant: Arc<AccessGrant>, ctx: Arc<Context>) -> Result<Requeue> {
    let _ = ctx.ready.subscribe().wait_for(|ready| *ready).await;
    let now = Utc::now();
    if lane_of(&ctx, &grant, now) == Lane::Activation {
        // Not ours yet: wake when the lease ends.
        let uid = grant.uid().unwrap_or_default();
        let end = match ctx.sealer.trust(&uid, grant.status.as_ref()) {
            StatusTrust::Sealed => grant.status.as_ref().and_then(|s| s.expires_at),
            _ => None,
        };
        return Ok(match end {
            Some(end) => Requeue::requeue((end - now).to_std().unwrap_or(Duration::ZERO)),
            None => Requeue::await_change(),
        });
    }
    run(grant, ctx, Lane::Revocation).await
}

async fn run(grant: Arc<AccessGrant>, ctx: Arc<Context>, lane: Lane) -> Result<Requeue> {
    let started = Instant::now();
    let ns = grant.namespace().ok_or(Error::NoNamespace)?;
    let gref = GrantRef {
        namespace: ns.clone(),
        name: grant.name_any(),
    };
    let api: Api<AccessGrant> = Api::namespaced(ctx.client.clone(), &ns);
    let _guard = ctx.grant_locks.lock(&gref).await;
    // The other lane may have written this grant while we waited: act on what the API server
    // holds, not on a cache older than our own last write.
    let grant = match ctx.written.fresher_than_cache(&gref, &grant) {
        false => grant,
        true => match api.get_opt(&gref.name).await {
            Ok(Some(g)) => Arc::new(g),
            Ok(None) => return Ok(Requeue::await_change()),
            Err(e) => {
                return Err(Error::StatusWrite {
                    grant: gref.to_string(),
                    source: e,
                });
            }
        },
    };
    if lane_of(&ctx, &grant, Utc::now()) != lane {
        return Ok(Requeue::requeue(Duration::ZERO));
    }
    // The event may be our own status write echoing back: not news before the decision's time.
    let epoch = *ctx.policy_epoch.borrow();
    if let Some(wait) = ctx.written.quiet_for(&gref, &grant, epoch, Instant::now()) {
        return Ok(Requeue::requeue(wait));
    }
    let result = finalizer(&api, FINALIZER, grant, |event| async {
        match event {
            Finalizer::Apply(g) => drive(&g, &ctx, false, epoch).await,
            Finalizer::Cleanup(g) => drive(&g, &ctx, true, epoch).await,
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

/// The keys a grant may touch: those its (sealed) status records, and those its spec plans.
fn keys_of(
    ctx: &Context,
    gref: &GrantRef,
    status: Option<&AccessGrantStatus>,
    req: Option<&GrantRequest>,
    identity: &IdentityObservation,
) -> Vec<ObjectKey> {
    let mut keys: Vec<ObjectKey> = status
        .map(recorded_objects)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    if let (Some(req), IdentityObservation::Resolved { principal_id }) = (req, identity) {
        let catalogue = ctx.resolver.catalogue();
        // Keys do not depend on the expiry; any instant serves.
        if let Ok(plan) = lease::plan(
            req,
            &gref.namespace,
            &gref.name,
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

async fn drive(g: &AccessGrant, ctx: &Context, deleting: bool, epoch: u64) -> Result<Requeue> {
    let gref = GrantRef {
        namespace: g.namespace().ok_or(Error::NoNamespace)?,
        name: g.name_any(),
    };
    let uid = g.uid().unwrap_or_default();
    let now = Utc::now();
    let mut trust = ctx.sealer.trust(&uid, g.status.as_ref());
    // The core reads the status only when sealed; anything else is handed over as it is.
    let mut status = g.status.clone().unwrap_or_default();
    let sealed = (trust == StatusTrust::Sealed).then_some(&status);
    let req = validate_grant(&g.spec).ok();
    let labels = namespace_labels(&ctx.namespaces, &gref.namespace);
    let policies = ctx.policies.snapshot();
    // Namespace first: a grant no policy can cover costs no Azure look-up.
    let covered = covers_namespace(&policies, &gref.namespace, &labels);
    let recorded_principal = sealed
        .and_then(|s| s.principal_id.as_deref())
        .and_then(|p| uuid::Uuid::try_parse(p).ok());
    let activated = sealed.is_some_and(|s| s.activated_at.is_some());
    let started = req
        .as_ref()
        .is_some_and(|r| r.not_before.is_none_or(|b| b <= now));

    // Observe what the core reads from outside. The principal comes from the operator's own
    // record, or is resolved from the spec; never from anything else in the status.
    let needs_identity = req.is_some()
        && recorded_principal.is_none()
        && match &trust {
            StatusTrust::Tampered { .. } => true,
            StatusTrust::Absent => deleting || (covered && started),
            StatusTrust::Sealed => {
                !status.phase.is_terminal() && (deleting || (covered && started))
            }
        };
    let identity = match (recorded_principal, &req) {
        (Some(p), _) => IdentityObservation::Resolved { principal_id: p },
        (None, Some(r)) if needs_identity => ctx.resolver.identity(&ctx.azure, &r.identity).await,
        _ => IdentityObservation::Unknown,
    };
    // A federated credential hands over every right of the identity: read its standing roles
    // before the first activation.
    let privileges = match (&req, &identity) {
        (Some(r), IdentityObservation::Resolved { principal_id })
            if r.federation.is_some() && !activated && !deleting && covered && started =>
        {
            crate::privileges::observe(ctx, r, *principal_id).await
        }
        _ => PrivilegeObservation::Unknown,
    };
    let needs_azure = !status.phase.is_terminal() || activated;
    if let Some(r) = &req
        && needs_azure
        && covered
    {
        ctx.resolver
            .resolve_names(&ctx.azure, &role_names_to_resolve(r, &policies))
            .await;
    }
    let keys = keys_of(ctx, &gref, sealed, req.as_ref(), &identity);
    ctx.inventory.ensure_loaded(&ctx.lister(), &keys).await;
    // Hold every object this grant touches, so a lease sharing one cannot end under us.
    let _guards = ctx.locks.lock(&keys).await;
    let mut view = ctx.inventory.view(&keys, &gref);
    let catalogue = ctx.resolver.catalogue();
    let mut live = ctx.live.counts(&gref.namespace, &gref);

    // Each object gets one attempt per reconcile: after a failure the core's retry delay (or
    // the throttle's) applies instead of hammering Azure in a tight loop.
    let mut failed: std::collections::HashSet<ObjectKey> = std::collections::HashSet::new();
    // A status already sealed need not be written again unless the decision changes it.
    let mut persisted = trust == StatusTrust::Sealed;
    for _ in 0..ctx.settings.max_rounds.max(1) {
        let now = Utc::now();
        let input = LeaseInput {
            now,
            settings: &ctx.core,
            grant: GrantView {
                namespace: &gref.namespace,
                name: &gref.name,
                generation: g.metadata.generation,
                deleting,
                created_at: g
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .and_then(crate::observe::to_chrono),
                spec: &g.spec,
                status: &status,
                trust: &trust,
            },
            policy: PolicyContext {
                namespace: &gref.namespace,
                namespace_labels: &labels,
                policies: &policies,
                catalogue: &catalogue,
                privileges: &privileges,
                live_grants: Some(&live),
            },
            identity: &identity,
            privileges: &privileges,
            azure: &view,
        };
        let d = lease::decide(&input);
        // A quota is admitted atomically before the first live status is written; losing the
        // race to another grant of the namespace means deciding again with the new count.
        if let Some(policy) = crate::quota::live_policy(&d.status)
            && !ctx.live.is_live(&gref)
        {
            let max = policies
                .iter()
                .find(|p| p.name == policy)
                .and_then(|p| p.rules.as_ref().ok())
                .and_then(|r| r.max_active_grants);
            if !ctx.live.admit(&gref, policy, max) {
                live = ctx.live.counts(&gref.namespace, &gref);
                continue;
            }
        }
        if d.status != status || !persisted {
            // Status first: a crash after this point leaves a record of every object we create.
            patch_status(ctx, &gref, &uid, &d.status).await?;
            persisted = true;
        }
        // From here on the status is the one this reconcile wrote.
        trust = StatusTrust::Sealed;
        ctx.inventory.set_claims(&gref, Some(&d.status));
        ctx.live.set(&gref, crate::quota::live_policy(&d.status));
        if let Some(detail) = &d.tampered {
            answer_tampering(ctx, g, &gref, &uid, detail).await?;
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
            return finish(ctx, &gref, &d, deleting, epoch);
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
    // Still busy after many rounds: yield, and come back soon. Soon replaces an earlier
    // decision's time to look again (the lease's end, say), which would keep the grant quiet
    // until then; and a grant being deleted keeps its finalizer: only a finished revocation
    // lets it go.
    ctx.written
        .settle(&gref, Some(Instant::now() + YIELD), epoch);
    if deleting {
        return Err(Error::RevocationPending {
            grant: gref.to_string(),
            retry_after: YIELD,
        });
    }
    Ok(Requeue::requeue(YIELD))
}

/// Someone other than the operator wrote the status. The core has ended the lease; make that
/// final (`spec.revoked` cannot be undone, so no replayed status brings the lease back) and
/// say so everywhere a security team looks.
async fn answer_tampering(
    ctx: &Context,
    g: &AccessGrant,
    gref: &GrantRef,
    uid: &str,
    detail: &str,
) -> Result<()> {
    ctx.metrics.status_tampered.inc();
    crate::audit::status_tampered(gref, uid, detail);
    if g.spec.revoked {
        return Ok(());
    }
    let api: Api<AccessGrant> = Api::namespaced(ctx.client.clone(), &gref.namespace);
    api.patch(
        &gref.name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(&json!({"spec": {"revoked": true}})),
    )
    .await
    .map_err(|source| Error::RevokeWrite {
        grant: gref.to_string(),
        source,
    })?;
    Ok(())
}

fn finish(
    ctx: &Context,
    gref: &GrantRef,
    d: &Decision,
    deleting: bool,
    epoch: u64,
) -> Result<Requeue> {
    let now = Utc::now();
    let at = d
        .requeue_at
        .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO));
    let retry = ctx.written.backoff(gref, d.retry_after);
    let wait = match (at, retry) {
        (Some(a), Some(r)) => Some(a.min(r)),
        (a, r) => a.or(r),
    };
    ctx.written
        .settle(gref, wait.map(|w| Instant::now() + w), epoch);
    if deleting {
        if d.finalized {
            ctx.inventory.set_claims(gref, None);
            ctx.live.set(gref, None);
            ctx.clock.set(gref, None);
            ctx.written.forget(gref);
            ctx.metrics.observe_grant(gref, None);
            return Ok(Requeue::await_change());
        }
        // The finalizer stays until the revocation is done.
        return Err(Error::RevocationPending {
            grant: gref.to_string(),
            retry_after: retry.unwrap_or(ctx.settings.retry_after),
        });
    }
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

/// Replaces the whole status with `status`, sealed. A JSON patch `add` of `/status` replaces
/// it entirely, so nothing another writer put there survives next to the operator's record.
async fn patch_status(
    ctx: &Context,
    gref: &GrantRef,
    uid: &str,
    status: &AccessGrantStatus,
) -> Result<()> {
    let api: Api<AccessGrant> = Api::namespaced(ctx.client.clone(), &gref.namespace);
    let sealed = ctx.sealer.seal(uid, status);
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/status", "value": sealed}
    ]))
    .map_err(|e| Error::StatusEncode {
        grant: gref.to_string(),
        reason: e.to_string(),
    })?;
    let written = api
        .patch_status(
            &gref.name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::<()>::Json(patch),
        )
        .await
        .map_err(|source| Error::StatusWrite {
            grant: gref.to_string(),
            source,
        })?;
    ctx.written.record(gref, &written);
    // Just sealed by us.
    ctx.clock
        .observe(&written, written.status.as_ref(), Utc::now());
    Ok(())
}

fn observe_metrics(
    ctx: &Context,
    gref: &GrantRef,
    before: &AccessGrantStatus,
    d: &Decision,
    now: chrono::DateTime<Utc>,
) {
    ctx.metrics.observe_grant(gref, Some(d.status.phase));
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
