//! The inventory's loading and the orphan sweep: anything this operator owns (by derived name)
//! that no grant claims is deleted, at start-up and every sweep interval. Objects of a twin
//! (another operator using this cluster name) are counted and reported, never touched.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use lapse_api::arm::ArmId;
use lapse_api::lease::{
    Action, FicTarget, ObjectKey, StatusTrust, fic_target, split_role_assignment_id,
};
use lapse_api::naming;
use lapse_azure::{AzureError, RoleAssignment};
use uuid::Uuid;

use crate::context::Context;
use crate::inventory::{GrantRef, Known, Partition};
use crate::metrics::SweepLabels;

/// The key of a listed role assignment.
pub fn assignment_key(ra: &RoleAssignment) -> Option<ObjectKey> {
    let role_guid = Uuid::try_parse(ra.role_definition_id.rsplit('/').next()?).ok()?;
    let scope = ArmId::parse(&ra.scope).ok()?;
    Some(ObjectKey::RoleAssignment {
        principal_id: ra.principal_id,
        role_guid,
        scope: scope.key().to_owned(),
    })
}

/// Lists one partition and replaces it in the inventory.
pub async fn load(ctx: &Context, p: &Partition) -> Result<(), AzureError> {
    let started = Instant::now();
    let owner = &ctx.core.owner;
    let mut objects = HashMap::new();
    let mut twins = 0usize;
    let mut sample = None;
    match p {
        Partition::RoleAssignments(part) => {
            let Some(sub) = part.strip_prefix("/subscriptions/") else {
                // Never a grant's: validation refuses management group scopes, which the
                // subscription-wide lists here could not see.
                return Ok(());
            };
            let list = ctx.azure.list_role_assignments(sub, None).await;
            for ra in list? {
                if let Some(k) = assignment_key(&ra) {
                    let owned = owns_assignment(owner, &ra, &k);
                    if !owned && owner.is_twin(ra.description.as_deref(), None) {
                        twins += 1;
                        sample.get_or_insert_with(|| ra.id.clone());
                    }
                    objects.insert(k, Known { id: ra.id, owned });
                }
            }
        }
        Partition::Fics(target_key) => {
            let Some(target) = fic_target(target_key) else {
                return Ok(());
            };
            let list = match &target {
                FicTarget::ManagedIdentity(id) => ctx.azure.list_fics(id).await,
                FicTarget::Application(app) => ctx.azure.list_app_fics(app).await,
            };
            for f in list? {
                let k = ObjectKey::Fic {
                    target: target_key.clone(),
                    issuer: f.issuer.clone(),
                    subject: f.subject.clone(),
                };
                let owned = owner.owns_fic(
                    &f.name,
                    target_key,
                    &f.issuer,
                    &f.subject,
                    &ctx.core.oidc_issuer,
                );
                if !owned && owner.is_twin(f.description.as_deref(), Some(&f.name)) {
                    twins += 1;
                    sample.get_or_insert_with(|| f.id.clone());
                }
                objects.insert(k, Known { id: f.id, owned });
            }
        }
    }
    if let Some(sample) = sample {
        crate::audit::twin_objects(twins, &sample);
    }
    ctx.inventory.replace(p.clone(), objects, twins, started);
    Ok(())
}

/// Whether a listed role assignment is this owner's: its name is the one derived for its tuple.
pub fn owns_assignment(owner: &naming::Owner, ra: &RoleAssignment, key: &ObjectKey) -> bool {
    let ObjectKey::RoleAssignment {
        principal_id,
        role_guid,
        ..
    } = key
    else {
        return false;
    };
    ArmId::parse(&ra.scope)
        .is_ok_and(|scope| owner.owns_role_assignment(&ra.name, principal_id, role_guid, &scope))
}

/// Loads the partitions of these keys that are not loaded yet. Failures leave them unknown.
pub async fn ensure_loaded(ctx: &Context, keys: &[ObjectKey]) {
    let mut parts: Vec<Partition> = keys.iter().map(Partition::of).collect();
    parts.dedup();
    for p in parts {
        if !ctx.inventory.is_loaded(&p)
            && let Err(e) = load(ctx, &p).await
        {
            tracing::warn!(partition = ?p, error = %e, "listing Azure objects");
        }
    }
}

/// Rebuilds every grant's claims (and live counts) from the grant store: grants gone without
/// our finalizer lose theirs here. Only a status the operator sealed claims anything: a claim
/// keeps an object alive, so a forged one could make access outlive its lease.
pub fn rebuild_claims(ctx: &Context) {
    let grants = ctx.grants.state();
    let mut present = std::collections::HashSet::new();
    for g in &grants {
        let Some(namespace) = g.namespace() else {
            continue;
        };
        let r = GrantRef {
            namespace,
            name: g.name_any(),
        };
        let uid = g.uid().unwrap_or_default();
        let status = match ctx.sealer.trust(&uid, g.status.as_ref()) {
            StatusTrust::Sealed => g.status.as_ref(),
            _ => None,
        };
        ctx.inventory.seed_claims(&r, status);
        if !ctx.inventory.reconciled(&r) {
            ctx.live.set(&r, status.and_then(crate::quota::live_policy));
        }
        present.insert(r);
    }
    ctx.inventory.retain_grants(&present);
    ctx.live.retain(&present);
}

/// The FIC partitions of every managed identity in the sweep subscriptions: after a restart
/// nothing else remembers an identity whose only grant was deleted while the operator was down.
async fn identity_partitions(ctx: &Context) -> Vec<Partition> {
    let mut out = Vec::new();
    for sub in &ctx.settings.sweep_subscriptions {
        let list = ctx.azure.list_managed_identities(sub).await;
        match list {
            Ok(identities) => out.extend(
                identities
                    .iter()
                    .filter_map(|mi| ArmId::parse(&mi.id).ok())
                    .map(|id| Partition::Fics(id.key().to_owned())),
            ),
            Err(e) => {
                tracing::warn!(subscription = %sub, error = %e, "sweep: listing managed identities")
            }
        }
    }
    out
}

/// One sweep: refresh every partition, delete owned objects no grant claims. `full` also lists
/// the FICs of every identity of the sweep subscriptions (done at start-up; later sweeps cover
/// the identities grants use, so steady state costs one list per partition in use).
pub async fn sweep_once(ctx: &Arc<Context>, full: bool) -> usize {
    rebuild_claims(ctx);
    let mut parts: Vec<Partition> = ctx.inventory.partitions().into_iter().collect();
    for sub in &ctx.settings.sweep_subscriptions {
        parts.push(Partition::RoleAssignments(format!(
            "/subscriptions/{}",
            sub.to_ascii_lowercase()
        )));
    }
    if full {
        parts.extend(identity_partitions(ctx).await);
    }
    parts.sort_by_key(|p| format!("{p:?}"));
    parts.dedup();
    let mut deleted = 0;
    for p in parts {
        if let Err(e) = load(ctx, &p).await {
            tracing::warn!(partition = ?p, error = %e, "sweep: listing Azure objects");
            continue;
        }
        // A live lease whose object vanished (deleted behind its back) is repaired now, not at
        // its next event.
        for g in ctx.inventory.live_claims_missing(&p) {
            tracing::info!(grant = %g, "sweep: an object of a live lease is gone; repairing");
            ctx.written.poke(&g);
            let _ = ctx
                .repair
                .send(ObjectRef::new(&g.name).within(&g.namespace));
        }
        for (key, known) in ctx.inventory.unclaimed_owned(&p) {
            let _guard = ctx.locks.lock(std::slice::from_ref(&key)).await;
            // A grant may have claimed it while we waited for the lock.
            if ctx.inventory.is_claimed(&key) {
                continue;
            }
            let Some(action) = delete_action(&key, &known) else {
                continue;
            };
            let outcome = crate::execute::execute(ctx, &action).await;
            if outcome == lapse_api::lease::Observed::Absent {
                deleted += 1;
                let kind = if matches!(key, ObjectKey::Fic { .. }) {
                    "fic"
                } else {
                    "role_assignment"
                };
                ctx.metrics
                    .orphans_deleted
                    .get_or_create(&SweepLabels { kind: kind.into() })
                    .inc();
                tracing::info!(id = %known.id, "sweep: deleted an orphaned object");
            }
        }
    }
    deleted
}

fn delete_action(key: &ObjectKey, known: &Known) -> Option<Action> {
    match key {
        ObjectKey::RoleAssignment { .. } => {
            let (scope, name) = split_role_assignment_id(&known.id)?;
            Some(Action::DeleteRoleAssignment {
                key: key.clone(),
                scope: scope.to_string(),
                name,
                id: known.id.clone(),
            })
        }
        ObjectKey::Fic { target, .. } => {
            let name = known.id.rsplit('/').next()?.to_owned();
            Some(Action::DeleteFic {
                key: key.clone(),
                target: fic_target(target)?,
                name,
            })
        }
    }
}

/// Sweeps now and then every interval, until the process ends.
pub async fn run(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(ctx.settings.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut full = true;
    let soon = ctx.unreadable.sweep_soon.clone();
    loop {
        // An unreadable grant's objects lost their claim: sweep them now, not at the interval.
        tokio::select! {
            _ = tick.tick() => {}
            () = soon.notified() => {}
        }
        let n = sweep_once(&ctx, full).await;
        full = false;
        tracing::debug!(deleted = n, "sweep finished");
    }
}
