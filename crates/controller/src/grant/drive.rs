//! Drive: gather → lock → loop { decide, persist, act } for one grant, until the decision
//! core has nothing left to do this reconcile.

use std::time::{Duration, Instant};

use chrono::Utc;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Api, Resource};
use lapse_api::lease::{self, Decision, GrantView, LeaseInput, ObjectKey, StatusTrust};
use lapse_api::policy::PolicyContext;
use lapse_api::v1alpha1::{AccessGrant, AccessGrantStatus, EndReason, ObjectState};
use serde_json::json;

use super::gather::{Observation, gather};
use super::{FIELD_MANAGER, YIELD};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::grant_ref::GrantRef;
use crate::route::{Lane, is_lease_end};
use crate::written::Next;

pub(super) async fn drive(
    g: &AccessGrant,
    ctx: &Context,
    deleting: bool,
    epoch: u64,
    lane: Lane,
) -> Result<Requeue> {
    let obs = gather(g, ctx, deleting).await?;
    // Hold every object this grant touches, so a lease sharing one cannot end under us (and
    // the sweep waits too).
    let _guards = ctx.locks.lock(&obs.keys).await;
    rounds(g, ctx, obs, deleting, epoch, lane).await
}

/// Decide, persist the sealed status, act; again with what the calls observed.
async fn rounds(
    g: &AccessGrant,
    ctx: &Context,
    obs: Observation,
    deleting: bool,
    epoch: u64,
    lane: Lane,
) -> Result<Requeue> {
    let Observation {
        gref,
        uid,
        mut trust,
        mut status,
        labels,
        policies,
        identity,
        privileges,
        locks,
        catalogue,
        keys,
        approvals,
        tickets,
    } = obs;
    let mut view = ctx.inventory.view(&keys, &gref);
    let mut live = ctx.live.counts(gref.namespace(), &gref);
    // Usage batches the sealed record already counts are done with.
    if trust == StatusTrust::Sealed {
        ctx.usage
            .confirm(&uid, status.usage.as_ref().map_or(0, |u| u.sequence));
    }
    let usage = ctx.usage.pending_for(&uid);
    let early_end = ctx.early.for_grant(&gref);

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
                namespace: gref.namespace(),
                name: gref.name(),
                uid: &uid,
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
                namespace: gref.namespace(),
                namespace_labels: &labels,
                policies: &policies,
                catalogue: &catalogue,
                privileges: &privileges,
                live_grants: Some(&live),
            },
            identity: &identity,
            privileges: &privileges,
            locks: &locks,
            azure: &view,
            approvals: &approvals,
            tickets: &tickets,
            usage: &usage,
            early_end: early_end.as_ref(),
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
                live = ctx.live.counts(gref.namespace(), &gref);
                continue;
            }
        }
        if d.status != status || !persisted {
            // Status first: a crash after this point leaves a record of every object we create.
            patch_status(ctx, &gref, &uid, &d.status).await?;
            persisted = true;
            if let Some(u) = &d.status.usage {
                ctx.usage.confirm(&uid, u.sequence);
            }
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
        super::announce::announce(ctx, g, &policies, &status, &d);
        status = d.status.clone();
        let actions: Vec<&lease::Action> = d
            .actions
            .iter()
            .filter(|a| !failed.contains(a.key()))
            .collect();
        if actions.is_empty() {
            return finish(ctx, &gref, &d, deleting, epoch, lane);
        }
        for action in actions {
            let outcome = crate::execute::execute(ctx, action).await;
            if matches!(
                outcome,
                lease::Observed::CreateFailed(_)
                    | lease::Observed::DeleteFailed(_)
                    | lease::Observed::RescheduleFailed(_)
            ) {
                failed.insert(action.key().clone());
            }
            let key = action.key().clone();
            view.set(key.clone(), outcome);
            // A PIM request moved (or made) the schedule Azure holds.
            view.objects.entry(key.clone()).or_default().schedule = ctx.inventory.schedule_of(&key);
        }
    }
    // Still busy after many rounds: yield, and come back soon. Soon replaces an earlier
    // decision's time to look again (the lease's end, say), which would keep the grant quiet
    // until then; and a grant being deleted keeps its finalizer: only a finished revocation
    // lets it go.
    ctx.written
        .settle(&gref, Some(Next::at(Instant::now() + YIELD)), epoch);
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
    let api: Api<AccessGrant> = Api::namespaced(ctx.client.clone(), gref.namespace());
    api.patch(
        gref.name(),
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
    lane: Lane,
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
    // Waiting for a live lease's end, still ahead: the revocation lane's timer.
    let lease_end = wait.is_some_and(|w| !w.is_zero())
        && wait == at
        && d.requeue_at.is_some_and(|t| is_lease_end(&d.status, t));
    ctx.written.settle(
        gref,
        wait.map(|w| Next {
            at: Instant::now() + w,
            lease_end,
        }),
        epoch,
    );
    if deleting {
        if d.finalized {
            ctx.inventory.set_claims(gref, None);
            ctx.live.set(gref, None);
            ctx.clock.forget(gref);
            ctx.written.forget(gref);
            ctx.metrics.observe_grant(gref, None);
            ctx.metrics.observe_blocked(gref, false);
            return Ok(Requeue::await_change());
        }
        // The finalizer stays until the revocation is done.
        return Err(Error::RevocationPending {
            grant: gref.to_string(),
            retry_after: retry.unwrap_or(ctx.settings.retry_after),
        });
    }
    Ok(match wait {
        Some(w) => super::requeue_after(ctx, gref, lane, w, lease_end),
        // Nothing scheduled: the sweep and watch events bring it back when needed.
        None => Requeue::await_change(),
    })
}

/// Replaces the whole status with `status`, sealed. A JSON patch `add` of `/status` replaces
/// it entirely, so nothing another writer put there survives next to the operator's record.
async fn patch_status(
    ctx: &Context,
    gref: &GrantRef,
    uid: &str,
    status: &AccessGrantStatus,
) -> Result<()> {
    let api: Api<AccessGrant> = Api::namespaced(ctx.client.clone(), gref.namespace());
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
            gref.name(),
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
    ctx.metrics.observe_blocked(
        gref,
        lease::find_condition(&d.status, lease::REVOCATION_BLOCKED)
            .is_some_and(|c| c.status == lapse_api::v1alpha1::ConditionStatus::True),
    );
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
            reason: e.reason.as_str().to_owned(),
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
