//! The AccessGrant reconcilers of both lanes (see [`crate::lanes`]): observe, ask the decision
//! core, persist the sealed status, act, and repeat until the core has nothing left to do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use lapse_api::v1alpha1::AccessGrant;

mod announce;
mod drive;
mod gather;

use crate::cached::CachedGrant;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::grant_ref::GrantRef;
use crate::route::{Lane, lane_of, revocation_wake};

/// Added to every grant; removed only once its lease's Azure objects are gone.
pub const FINALIZER: &str = "lapse.dev/revoke";
/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "lapse-operator";
/// Decide/act rounds in one reconcile before yielding to other grants: the operator's
/// [`Settings::max_rounds`](crate::Settings::max_rounds).
pub const MAX_ROUNDS: usize = 8;
/// How soon a grant that used up its rounds is reconciled again.
const YIELD: Duration = Duration::from_millis(100);
/// How soon a grant whose cached copy is older than our own last write is looked at again.
const CACHE_CATCH_UP: Duration = Duration::from_millis(50);
/// How soon a namespace that holds its whole share of the activation lane is looked at again.
const FAIR_SHARE_RETRY: Duration = Duration::from_millis(250);

/// The activation lane: everything but a lease that must end now.
pub async fn reconcile_activation(grant: Arc<CachedGrant>, ctx: Arc<Context>) -> Result<Requeue> {
    let _ = ctx.ready.subscribe().wait_for(|ready| *ready).await;
    let grant = Arc::new(grant.unpack()?);
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
pub async fn reconcile_revocation(grant: Arc<CachedGrant>, ctx: Arc<Context>) -> Result<Requeue> {
    let _ = ctx.ready.subscribe().wait_for(|ready| *ready).await;
    let sealed = grant.summary().sealed;
    let grant = Arc::new(grant.unpack()?);
    let now = Utc::now();
    if lane_of(&ctx, &grant, now) == Lane::Activation {
        // Not ours yet: wake when the lease ends.
        return Ok(match revocation_wake(sealed, grant.status.as_ref(), now) {
            Some(wait) => Requeue::requeue(wait),
            None => Requeue::await_change(),
        });
    }
    run(grant, ctx, Lane::Revocation).await
}

async fn run(grant: Arc<AccessGrant>, ctx: Arc<Context>, lane: Lane) -> Result<Requeue> {
    let started = Instant::now();
    let ns = grant.namespace().ok_or(Error::NoNamespace)?;
    let gref = GrantRef::new(&ns, grant.name_any());
    let api: Api<AccessGrant> = Api::namespaced(ctx.client.clone(), &ns);
    let _guard = ctx.grant_locks.lock(&gref).await;
    // The other lane may have written this grant while we waited: never act on a cached copy
    // older than our own last write. The watch brings that write within moments (and its event
    // reconciles the grant again), so wait for it rather than read the grant (which would also
    // need `get` on accessgrants).
    if ctx.written.fresher_than_cache(&gref, &grant) {
        return Ok(Requeue::requeue(CACHE_CATCH_UP));
    }
    if lane_of(&ctx, &grant, Utc::now()) != lane {
        return Ok(Requeue::requeue(Duration::ZERO));
    }
    // The event may be our own status write echoing back: not news before the decision's time.
    let epoch = *ctx.policy_epoch.borrow();
    if let Some(quiet) = ctx.written.quiet_for(&gref, &grant, epoch, Instant::now()) {
        return Ok(requeue_after(
            &ctx,
            &gref,
            lane,
            quiet.wait,
            quiet.lease_end,
        ));
    }
    let result = finalizer(&api, FINALIZER, grant, |event| async {
        match event {
            Finalizer::Apply(g) => drive::drive(&g, &ctx, false, epoch, lane).await,
            Finalizer::Cleanup(g) => drive::drive(&g, &ctx, true, epoch, lane).await,
        }
    })
    .await;
    let result = match result {
        // Our finalizer was already removed and the grant is gone: a stale cached copy of a
        // deleted grant was reconciled again. Nothing is left to do.
        Err(kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(e)))
            if e.code == 404 =>
        {
            Ok(Requeue::await_change())
        }
        other => other.map_err(|e| Error::Finalizer(Box::new(e))),
    };
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

/// How `lane` comes back to a grant whose next look is `wait` away (`lease_end`: the end of its
/// live lease). The activation lane holds no timer for a live lease's end (the revocation lane
/// has its own for it) nor for a look beyond the wake horizon (parked: the horizon scan wakes
/// it, `crate::written::WrittenVersions::due_within`).
fn requeue_after(
    ctx: &Context,
    gref: &GrantRef,
    lane: Lane,
    wait: Duration,
    lease_end: bool,
) -> Requeue {
    if lane == Lane::Activation {
        if lease_end {
            return Requeue::await_change();
        }
        if wait > ctx.settings.wake_horizon {
            ctx.written.park(gref);
            return Requeue::await_change();
        }
    }
    Requeue::requeue(wait)
}

/// Backs off on errors; a pending revocation retries at the pace the core asked for.
pub fn error_policy(_grant: Arc<CachedGrant>, error: &Error, ctx: Arc<Context>) -> Requeue {
    match error.retry_after() {
        Some(d) => Requeue::requeue(d),
        None => {
            tracing::warn!(error = %error, "reconcile failed");
            Requeue::requeue(ctx.settings.retry_after)
        }
    }
}
