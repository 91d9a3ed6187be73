//! The orphan sweep: anything this operator owns (by derived name) that no grant claims is
//! deleted, at start-up and every sweep interval. Objects of a twin (another operator using
//! this cluster name) are counted and reported (by the inventory's loader), never touched.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use lapse_api::arm::ArmId;
use lapse_api::lease::{Action, ObjectKey, fic_target, split_role_assignment_id};
use lapse_api::naming::Owner;

use crate::context::Context;
use crate::inventory::{GrantRef, Known, Partition};
use crate::metrics::SweepLabels;

/// Rebuilds every grant's claims (and live counts) from the grant store: grants gone without
/// our finalizer lose theirs here. Only a status the operator sealed claims anything: a claim
/// keeps an object alive, so a forged one could make access outlive its lease.
pub fn rebuild_claims(ctx: &Context) {
    let grants = ctx.grants.state();
    let mut present = std::collections::HashSet::new();
    for cached in &grants {
        let Some(namespace) = cached.namespace() else {
            continue;
        };
        let r = GrantRef::new(namespace, cached.name_any());
        // Most grants claim nothing (scheduled, or ended and cleaned up): the cache's summary
        // says so without unpacking them.
        let g = if cached.summary().claims {
            // Never dropped for failing to unpack: its claims keep its objects alive.
            let Some(g) = cached.unpacked("rebuilding claims") else {
                present.insert(r);
                continue;
            };
            Some(g)
        } else {
            None
        };
        // A status claims only if sealed: the summary checked that when the grant was packed.
        let status = g.as_ref().and_then(|g| g.status.as_ref());
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
        if let Err(e) = ctx.inventory.load(&ctx.lister(), &p).await {
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
                .send(ObjectRef::new(g.name()).within(g.namespace()));
        }
        for (key, known) in ctx.inventory.unclaimed_owned(&p) {
            let _guard = ctx.locks.lock(std::slice::from_ref(&key)).await;
            // A grant may have claimed it while we waited for the lock.
            if ctx.inventory.is_claimed(&key) {
                continue;
            }
            let Some(action) = delete_action(&ctx.core.owner, &key, &known) else {
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

fn delete_action(owner: &Owner, key: &ObjectKey, known: &Known) -> Option<Action> {
    match key {
        ObjectKey::RoleAssignment {
            principal_id,
            role_guid,
            scope,
        } => {
            // A PIM-made one (Azure chose its name) is removed by a request for its tuple.
            if let Some(schedule) = known.schedule {
                let scope = ArmId::parse(scope).ok()?;
                return Some(Action::DeleteRoleAssignment {
                    key: key.clone(),
                    name: owner.role_assignment_name(principal_id, role_guid, &scope),
                    scope: scope.to_string(),
                    id: known.id.clone(),
                    schedule_start: Some(schedule.starts_at),
                });
            }
            let (scope, name) = split_role_assignment_id(&known.id)?;
            Some(Action::DeleteRoleAssignment {
                key: key.clone(),
                scope: scope.to_string(),
                name,
                id: known.id.clone(),
                schedule_start: None,
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
