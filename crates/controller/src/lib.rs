//! Reconcilers for AccessGrant and AccessPolicy: drives the pure lease decision core, schedules
//! expiry, sweeps orphans, emits Events and metrics.
#![forbid(unsafe_code)]

mod approvals;
mod audit;
mod blocked;
mod cached;
mod context;
mod early;
mod error;
mod events;
mod execute;
mod expiring;
mod fanout;
pub mod grant;
mod grant_ref;
pub mod inventory;
mod lanes;
pub mod leader;
mod locks;
mod management_locks;
mod metrics;
pub mod notify;
mod observe;
mod outcome;
mod pim;
mod policy;
mod privileges;
mod quota;
mod repeat;
mod retention;
mod route;
mod seal;
pub mod sweep;
mod tickets;
mod triggers;
mod unreadable;
pub mod usage;
mod usage_book;
mod written;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use futures::{StreamExt, future, stream};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use lapse_api::lease::CoreSettings;
use lapse_api::naming::Owner;
use lapse_api::v1alpha1::{AccessApproval, AccessGrant, AccessPolicy};
use lapse_azure::AzureClient;
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, mpsc, watch};

use cached::CachedGrant;
pub use context::{Context, GrantStores, Settings};
pub use error::{Error, Result};
pub use tickets::TicketSettings;
use unreadable::Unreadable;
pub use usage_book::UsageSettings;

/// Room for grant events between the shared watch and its slowest lane. The lanes queue work
/// in their schedulers at once, so this only smooths bursts.
const SHARED_STREAM_BUFFER: usize = 1024;

/// Policy and namespace changes not yet turned into triggers; a lane that falls further behind
/// re-reconciles everything instead.
const AFFECTED_BUFFER: usize = 256;

/// Runs a reflector for `api` until the process ends, returning its store; `changed` is called
/// with each applied or deleted object. Objects that do not deserialize are reported and left
/// out ([`unreadable`]).
fn reflect<K>(
    api: Api<DeserializeGuard<K>>,
    unreadable: Arc<Unreadable>,
    mut changed: impl FnMut(&K, bool) + Send + 'static,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let readable = unreadable::readable(
        watcher(api, watcher::Config::default()),
        reader.clone(),
        unreadable,
        |_| {},
    );
    // Managed fields are never read; dropping them keeps the caches small.
    let stream = reflector::reflector(
        writer,
        readable
            .default_backoff()
            .modify(|o: &mut K| *o.managed_fields_mut() = Vec::new()),
    );
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => changed(&o, false),
                Ok(watcher::Event::Delete(o)) => changed(&o, true),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "watch"),
            }
        }
    });
    reader
}

/// One grant watch: what it lists, the cache it fills and that cache's reader.
type GrantWatch = (
    Api<DeserializeGuard<CachedGrant>>,
    reflector::store::Writer<CachedGrant>,
    Store<CachedGrant>,
);

/// What [`prepare`] hands to [`run`]: the grant caches' writers, the re-evaluation triggers
/// and the repair requests of the sweep.
pub struct Wiring {
    affected: broadcast::Sender<triggers::Affected>,
    grant_writers: Vec<GrantWatch>,
    repairs: mpsc::UnboundedReceiver<ObjectRef<CachedGrant>>,
}

impl std::fmt::Debug for Wiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wiring").finish_non_exhaustive()
    }
}

/// This cluster's identity: the UID of its `kube-system` namespace, which every cluster has,
/// which differs between clusters, and which nothing inside the cluster can change.
async fn cluster_id(client: &kube::Client, settings: &Settings) -> Result<String> {
    if let Some(id) = &settings.cluster_id {
        return Ok(id.clone());
    }
    let ns = Api::<Namespace>::all(client.clone())
        .get("kube-system")
        .await
        .map_err(Error::ClusterId)?;
    ns.uid().ok_or_else(|| {
        Error::ClusterId(kube::Error::Discovery(
            kube::error::DiscoveryError::MissingResource("kube-system has no uid".into()),
        ))
    })
}

/// The principal the operator acts as, asked until Azure answers: lapse never grants to or
/// federates itself, so nothing activates before this is known.
async fn own_principal(azure: &AzureClient, retry: std::time::Duration) -> uuid::Uuid {
    let mut wait = retry;
    loop {
        match azure.own_principal().await {
            Ok(p) => {
                tracing::info!(principal = %p, "the operator's own Azure principal");
                return p;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot learn the operator's own Azure principal yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(60));
            }
        }
    }
}

/// Assembles the shared [`Context`]: the owner identity, the seal key, caches, recorder,
/// metrics. Starts the policy and namespace watches; the grant watches start with [`run`].
async fn assemble_context(
    client: kube::Client,
    azure: AzureClient,
    settings: Settings,
    registry: &mut Registry,
) -> Result<(Arc<Context>, Wiring)> {
    let id = cluster_id(&client, &settings).await?;
    let owner = Owner::new(&settings.cluster, &id, settings.shard.as_deref())?;
    let sealer =
        seal::load_or_create(&client, &settings.operator_namespace, &settings.seal_secret).await?;
    let operator_principal = own_principal(&azure, settings.retry_after).await;
    tracing::info!(cluster = %owner.cluster(), owner = %owner.id(), "owner identity");

    let reporter = Reporter {
        controller: "lapse-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let metrics = metrics::Metrics::new(registry);
    let notifier = match &settings.notify {
        Some(n) => notify::Notifier::start(n, metrics.notifications.clone())?,
        None => notify::Notifier::disabled(metrics.notifications.clone()),
    };
    let events =
        events::EventQueue::start(client.clone(), reporter, metrics.events_dropped.clone());
    let unreadable = Arc::new(Unreadable::new(
        client.clone(),
        events.clone(),
        metrics.unreadable_objects.clone(),
    ));
    // A policy change or a namespace relabel re-evaluates the grants it can affect (and makes
    // decisions taken before it stale: the epoch).
    let (epoch_tx, rx) = watch::channel(0u64);
    let (affected_tx, _) = broadcast::channel(AFFECTED_BUFFER);
    let mut labels_seen: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    let (ns_epoch, ns_affected) = (epoch_tx.clone(), affected_tx.clone());
    let namespaces = reflect(
        Api::<DeserializeGuard<Namespace>>::all(client.clone()),
        unreadable.clone(),
        move |ns: &Namespace, _deleted| {
            let labels = ns.labels().clone();
            if labels_seen
                .insert(ns.name_any(), labels.clone())
                .is_some_and(|old| old != labels)
            {
                ns_epoch.send_modify(|n| *n += 1);
                let _ = ns_affected.send(triggers::Affected::Namespaces(
                    [ns.name_any()].into_iter().collect(),
                ));
            }
        },
    );
    let mut policy_changes = triggers::PolicyChanges::default();
    let (policy_affected, namespace_store) = (affected_tx.clone(), namespaces.clone());
    let policy_epoch = epoch_tx.clone();
    let policies = reflect(
        Api::<DeserializeGuard<AccessPolicy>>::all(client.clone()),
        unreadable.clone(),
        move |p: &AccessPolicy, deleted| {
            // The operator's own status writes change no rule: not news for any grant.
            if let Some(affected) = policy_changes.affected(p, deleted, &namespace_store) {
                policy_epoch.send_modify(|n| *n += 1);
                let _ = policy_affected.send(affected);
            }
        },
    );
    // A decision on a grant is news for that grant; a change in the admission policies that
    // make decisions believable is news for every grant waiting on one. Either makes decisions
    // taken before it stale (the epoch), so the grant is not kept quiet until its last
    // decision's time to look again.
    let tickets = Arc::new(
        tickets::Tickets::new(
            settings.tickets.clone(),
            metrics.ticket_checks.clone(),
            metrics.ticket_cache_entries.clone(),
            affected_tx.clone(),
            epoch_tx.clone(),
        )
        .map_err(Error::Tickets)?,
    );
    let usage = Arc::new(usage_book::UsageBook::new(
        affected_tx.clone(),
        epoch_tx.clone(),
    ));
    let (approval_affected, approval_epoch) = (affected_tx.clone(), epoch_tx.clone());
    let approvals = approvals::ApprovalStores {
        approvals: reflect(
            Api::<DeserializeGuard<AccessApproval>>::all(client.clone()),
            unreadable.clone(),
            move |a: &AccessApproval, _deleted| {
                if let Some(ns) = a.namespace() {
                    approval_epoch.send_modify(|n| *n += 1);
                    let _ = approval_affected
                        .send(triggers::Affected::Grant(ns, a.spec.grant.name.clone()));
                }
            },
        ),
        policies: reflect(
            Api::<DeserializeGuard<ValidatingAdmissionPolicy>>::all(client.clone()),
            unreadable.clone(),
            {
                let (tx, epoch) = (affected_tx.clone(), epoch_tx.clone());
                move |_: &ValidatingAdmissionPolicy, _deleted| {
                    epoch.send_modify(|n| *n += 1);
                    let _ = tx.send(triggers::Affected::All);
                }
            },
        ),
        bindings: reflect(
            Api::<DeserializeGuard<ValidatingAdmissionPolicyBinding>>::all(client.clone()),
            unreadable.clone(),
            {
                let (tx, epoch) = (affected_tx.clone(), epoch_tx);
                move |_: &ValidatingAdmissionPolicyBinding, _deleted| {
                    epoch.send_modify(|n| *n += 1);
                    let _ = tx.send(triggers::Affected::All);
                }
            },
        ),
    };
    let apis: Vec<Api<DeserializeGuard<CachedGrant>>> = if settings.namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        settings
            .namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let mut stores = Vec::new();
    let mut grant_writers = Vec::new();
    for api in apis {
        let (reader, writer) = reflector::store();
        stores.push(reader.clone());
        grant_writers.push((api, writer, reader));
    }
    let core = CoreSettings {
        owner,
        oidc_issuer: settings.oidc_issuer.clone(),
        overdue_after: chrono::TimeDelta::from_std(settings.overdue_after)
            .unwrap_or(chrono::TimeDelta::seconds(30)),
        retry_after: settings.retry_after,
        authorization_grace: chrono::TimeDelta::from_std(settings.authorization_grace)
            .unwrap_or(chrono::TimeDelta::minutes(10)),
        operator_principal: Some(operator_principal),
        residual: settings.residual.clone(),
        pim: settings.pim.clone(),
    };
    let (repair, repairs) = mpsc::unbounded_channel();
    let deletes = &azure.limits().deletes;
    let early = early::EarlyEnds::new(
        deletes.capacity,
        deletes.refill_per_second,
        settings.delete_headroom,
    );
    let ctx = Context {
        events,
        unreadable,
        client,
        azure,
        core,
        inventory: Default::default(),
        locks: Default::default(),
        policies: observe::PolicyCache::new(policies),
        namespaces,
        approvals,
        grants: GrantStores(stores),
        ready: watch::channel(false).0,
        resolver: Default::default(),
        metrics,
        notifier,
        sealer,
        grant_locks: Default::default(),
        fair: lanes::FairShare::new(settings.concurrency),
        clock: Default::default(),
        early,
        live: Default::default(),
        written: Default::default(),
        policy_epoch: rx.clone(),
        tickets,
        usage,
        repair,
        settings,
    };
    Ok((
        Arc::new(ctx),
        Wiring {
            affected: affected_tx,
            grant_writers,
            repairs,
        },
    ))
}

/// What `lapse-operator run` does between reading its settings and running the controllers:
/// the Azure client from its configuration, then the shared [`Context`] (`assemble_context`).
/// Tests build the controllers through this too, so they run what the binary runs.
pub async fn prepare(
    client: kube::Client,
    azure: lapse_azure::AzureConfig,
    settings: Settings,
    registry: &mut Registry,
) -> Result<(Arc<Context>, Wiring)> {
    let azure = AzureClient::new(azure).map_err(Error::AzureConfig)?;
    assemble_context(client, azure, settings, registry).await
}

/// Runs the grant controllers (both lanes), the policy status controller and the orphan sweep
/// until `shutdown` completes.
pub async fn run(
    ctx: Arc<Context>,
    wiring: Wiring,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // Claims must be complete before anything is swept or any lease ends, or a shared object
    // could look unneeded: reconciles wait for `ready`, set once every cache is loaded.
    // Every task below ends with this function, however it ends (aborted included).
    let mut tasks = Tasks::default();
    let starter = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            tracing::info!("waiting for caches");
            ctx.grants.wait_until_ready().await;
            tracing::debug!("grant cache loaded");
            context::wait_ready(ctx.policies.store()).await;
            tracing::debug!("policy cache loaded");
            context::wait_ready(&ctx.namespaces).await;
            tracing::debug!("namespace cache loaded");
            context::wait_ready(&ctx.approvals.approvals).await;
            context::wait_ready(&ctx.approvals.policies).await;
            context::wait_ready(&ctx.approvals.bindings).await;
            tracing::debug!("approval and admission policy caches loaded");
            sweep::rebuild_claims(&ctx);
            ctx.ready.send_replace(true);
            tracing::info!(
                grants = ctx.grants.state().len(),
                "caches loaded; reconciling"
            );
            sweep::run(ctx).await;
        })
    };
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let config = kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency);
    // The lanes end on shutdown (after their reconciles in flight); the shared watches and the
    // clock only feed them.
    let mut lanes: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
    let mut feeds: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
    let mut repairs = Some(wiring.repairs);
    let mut wakers = Vec::new();
    let mut early_wakers = Vec::new();
    for (api, writer, store) in wiring.grant_writers {
        // The one watch per grant cache; the lanes and the clock share what it sees (see
        // `fanout` for why not kube's shared subscribers). Managed fields are never read;
        // dropping them keeps the cache small.
        let mut fan = fanout::FanOut::new(SHARED_STREAM_BUFFER);
        let activation_events = fan.subscribe();
        let revocation_events = fan.subscribe();
        let clock_events = fan.subscribe();
        let release = {
            let unreadable = ctx.unreadable.clone();
            move |bad: &kube::core::error_boundary::InvalidObject| {
                unreadable.release::<AccessGrant>(bad, grant::FINALIZER);
            }
        };
        let events = unreadable::readable(
            watcher(api, watcher::Config::default()),
            store.clone(),
            ctx.unreadable.clone(),
            release,
        )
        .default_backoff()
        .modify({
            let ctx = ctx.clone();
            move |g: &mut CachedGrant| g.pack(&ctx.sealer)
        })
        .reflect(writer);
        feeds.push(Box::pin(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                if let Ok(event) = &event {
                    fan.dispatch(event).await;
                }
            }
        }));
        {
            let ctx = ctx.clone();
            feeds.push(Box::pin(clock_events.for_each(move |g| {
                let sealed = g.summary().sealed;
                if let Some(g) = g.unpacked("lease clock") {
                    let status = g.status.as_ref().filter(|_| sealed);
                    ctx.clock.observe(&g, status, chrono::Utc::now());
                }
                future::ready(())
            })));
        }
        let mut activation = Controller::for_shared_stream(activation_events, store.clone())
            .with_config(config.clone())
            .reconcile_on(triggers::affected_grants(
                wiring.affected.subscribe(),
                store.clone(),
            ))
            .graceful_shutdown_on(shutdown.clone());
        // The sweep's repair requests go to the first activation controller; with several
        // (one per watched namespace) a request for another's grant is simply not found there
        // and the periodic re-evaluation catches it.
        if let Some(rx) = repairs.take() {
            activation = activation.reconcile_on(receiver_stream(rx));
        }
        // Grants the horizon scan wakes; every activation controller hears of each (one not
        // watching its namespace does not find it in its cache and does nothing).
        let (wake, woken) = mpsc::unbounded_channel();
        wakers.push(wake);
        activation = activation.reconcile_on(receiver_stream(woken));
        lanes.push(Box::pin(
            activation
                .run(
                    grant::reconcile_activation,
                    grant::error_policy,
                    ctx.clone(),
                )
                .for_each(|res| async move {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "activation lane");
                    }
                }),
        ));
        // Grants whose deletes the early-end plan starts now (synchronized expiry).
        let (wake, woken) = mpsc::unbounded_channel();
        early_wakers.push(wake);
        let revocation = Controller::for_shared_stream(revocation_events, store.clone())
            .with_config(config.clone())
            .reconcile_on(triggers::affected_grants(
                wiring.affected.subscribe(),
                store,
            ))
            .reconcile_on(receiver_stream(woken))
            .graceful_shutdown_on(shutdown.clone());
        lanes.push(Box::pin(
            revocation
                .run(
                    grant::reconcile_revocation,
                    grant::error_policy,
                    ctx.clone(),
                )
                .for_each(|res| async move {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "revocation lane");
                    }
                }),
        ));
    }
    tasks.0.push(starter);
    tasks.0.push(tokio::spawn(policy::run(ctx.clone())));
    tasks.0.push(tokio::spawn(expiring::run(ctx.clone())));
    tasks.0.push(tokio::spawn(recheck_tickets(ctx.clone())));
    tasks.0.push(tokio::spawn(wake_parked(ctx.clone(), wakers)));
    tasks
        .0
        .push(tokio::spawn(wake_early(ctx.clone(), early_wakers)));
    tasks.0.push(tokio::spawn(usage::run(ctx.clone())));
    if let Some(retain) = ctx.settings.retain_finished {
        tasks
            .0
            .push(tokio::spawn(retention::run(ctx.clone(), retain)));
    }
    tokio::select! {
        _ = future::join_all(lanes) => {}
        _ = future::join_all(feeds) => tracing::error!("the grant watches ended"),
    }
}

/// Background tasks of [`run`], aborted when it returns or is dropped: a controller stopped (or
/// killed in a test) leaves nothing of itself running.
#[derive(Default)]
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The ticket re-check loop (docs/approval.md, "Tickets"): every tick, the tickets that grants
/// not yet ended name (under each policy covering their namespace that has a checker) go to
/// [`tickets::Tickets::tick`], which checks those due and wakes the grants of any that changed.
async fn recheck_tickets(ctx: Arc<Context>) {
    let mut ticker = tokio::time::interval(ctx.tickets.tick_every());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let _ = ctx.ready.subscribe().wait_for(|ready| *ready).await;
    loop {
        ticker.tick().await;
        if !ctx.tickets.any_checker() {
            continue;
        }
        let policies = ctx.policies.snapshot();
        let mut named: HashMap<
            lapse_api::ticket::TicketKey,
            std::collections::BTreeSet<grant_ref::GrantRef>,
        > = HashMap::new();
        for g in ctx.grants.state() {
            let summary = g.summary();
            if summary.sealed && summary.phase.is_some_and(|p| p.is_terminal()) {
                continue;
            }
            let Some(ns) = g.namespace() else { continue };
            let Some(g) = g.unpacked("ticket re-check") else {
                continue;
            };
            let labels = observe::namespace_labels(&ctx.namespaces, &ns);
            for key in lapse_api::ticket::tickets_to_check(
                &policies,
                &ns,
                &labels,
                g.spec.justification.as_deref(),
            ) {
                named
                    .entry(key)
                    .or_default()
                    .insert(grant_ref::GrantRef::new(&ns, g.name_any()));
            }
        }
        ctx.tickets.tick(named);
    }
}

/// The horizon scan: every half horizon, the grants the activation lane parked (their next look
/// beyond the horizon, no timer held) whose look has come within the horizon go back to the
/// activation lane, which then holds a timer of its own for the rest of the wait.
async fn wake_parked(ctx: Arc<Context>, lanes: Vec<mpsc::UnboundedSender<ObjectRef<CachedGrant>>>) {
    let horizon = ctx.settings.wake_horizon;
    let mut ticker =
        tokio::time::interval((horizon / 2).max(std::time::Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let due = ctx.written.due_within(std::time::Instant::now() + horizon);
        if !due.is_empty() {
            tracing::debug!(grants = due.len(), "waking parked grants");
        }
        for g in due {
            wake(&lanes, &g);
        }
    }
}

/// Asks each of `lanes` (one controller per grant cache) to reconcile `g`; a controller that
/// does not watch its namespace does not find it and does nothing.
fn wake(lanes: &[mpsc::UnboundedSender<ObjectRef<CachedGrant>>], g: &grant_ref::GrantRef) {
    let grant = ObjectRef::new(g.name()).within(g.namespace());
    for lane in lanes {
        let _ = lane.send(grant.clone());
    }
}

/// Synchronized expiry (docs/architecture.md): plans again whenever a live lease's end or
/// footprint changed (at most once a second), and wakes the revocation lane for each lease at
/// its planned start. The plan is empty unless more leases of one subscription end together
/// than ARM's delete budget deletes in time.
async fn wake_early(ctx: Arc<Context>, lanes: Vec<mpsc::UnboundedSender<ObjectRef<CachedGrant>>>) {
    const REPLAN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
    let _ = ctx.ready.subscribe().wait_for(|ready| *ready).await;
    let mut planned = None;
    let mut early_leases = 0;
    loop {
        let changes = ctx.clock.changes();
        if planned != Some(changes) {
            planned = Some(changes);
            let n = ctx.early.replan(ctx.clock.deletes(chrono::Utc::now()));
            ctx.metrics
                .leases_ending_early
                .set(i64::try_from(n).unwrap_or(i64::MAX));
            if n != early_leases {
                tracing::info!(
                    leases = n,
                    "synchronized expiry: {n} leases start their deletes early to stay within \
                     ARM's delete budget"
                );
                early_leases = n;
            }
        }
        let now = chrono::Utc::now();
        for g in ctx.early.take_due(now) {
            // The lease's last decision said "nothing before the end": this is news.
            ctx.written.poke(&g);
            wake(&lanes, &g);
        }
        let next = match ctx.early.next_wake() {
            // A start passed meanwhile: at once.
            Some(at) => (at - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
                .min(REPLAN_EVERY),
            None => REPLAN_EVERY,
        };
        tokio::time::sleep(next).await;
    }
}

/// Sets the gauges that are computed rather than counted; called when metrics are scraped.
pub fn refresh_gauges(ctx: &Context) {
    ctx.metrics.azure_call_totals(&ctx.azure.call_counts());
    let after = chrono::TimeDelta::from_std(ctx.settings.overdue_after)
        .unwrap_or(chrono::TimeDelta::seconds(30));
    let overdue = ctx.clock.overdue(chrono::Utc::now(), after);
    ctx.metrics
        .overdue_revocations
        .set(i64::try_from(overdue).unwrap_or(i64::MAX));
    ctx.metrics
        .twin_objects
        .set(i64::try_from(ctx.inventory.twins()).unwrap_or(i64::MAX));
}

/// An unbounded receiver as a stream.
fn receiver_stream<T: Send + 'static>(
    rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}
