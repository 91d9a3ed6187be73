//! Reconcilers for AccessGrant and AccessPolicy: drives the pure lease decision core, schedules
//! expiry, sweeps orphans, emits Events and metrics.
#![forbid(unsafe_code)]

pub mod context;
pub mod error;
pub mod events;
pub mod execute;
pub mod grant;
pub mod inventory;
pub mod leader;
pub mod locks;
pub mod metrics;
pub mod observe;
pub mod sweep;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use futures::{StreamExt, future, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use lapse_api::lease::CoreSettings;
use lapse_api::v1alpha1::{AccessGrant, AccessPolicy};
use lapse_azure::AzureClient;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

pub use context::{Context, GrantStores, Settings};
pub use error::{Error, Result};

/// Runs a reflector for `api` until the process ends, returning its store; `changed` is called
/// with each applied or deleted object.
fn reflect<K>(api: Api<K>, mut changed: impl FnMut(&K) + Send + 'static) -> Store<K>
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
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(
                    watcher::Event::Apply(o)
                    | watcher::Event::Delete(o)
                    | watcher::Event::InitApply(o),
                ) => changed(&o),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "watch"),
            }
        }
    });
    reader
}

/// A stream that yields each time `rx` sees a change.
fn changes<T: Send + Sync + 'static>(
    rx: watch::Receiver<T>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok().map(|()| ((), rx))
    })
}

/// What [`context`] hands to [`run`]: the grant caches' writers and the re-evaluation trigger.
pub struct Wiring {
    policy_changes: watch::Receiver<u64>,
    grant_writers: Vec<(
        Api<AccessGrant>,
        reflector::store::Writer<AccessGrant>,
        Store<AccessGrant>,
    )>,
}

impl std::fmt::Debug for Wiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wiring").finish_non_exhaustive()
    }
}

/// Builds the shared context: caches, recorder, metrics. Starts the policy and namespace
/// watches; the grant watches start with [`run`].
pub fn context(
    client: kube::Client,
    azure: AzureClient,
    settings: Settings,
    registry: &mut Registry,
) -> (Arc<Context>, Wiring) {
    // Any policy change, or a namespace label change, re-evaluates every grant.
    let (tx, rx) = watch::channel(0u64);
    let policy_tx = tx.clone();
    let policies = reflect(Api::<AccessPolicy>::all(client.clone()), move |_| {
        policy_tx.send_modify(|n| *n += 1)
    });
    let mut labels_seen: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    let ns_tx = tx;
    let namespaces = reflect(
        Api::<Namespace>::all(client.clone()),
        move |ns: &Namespace| {
            let labels = ns.labels().clone();
            if labels_seen
                .insert(ns.name_any(), labels.clone())
                .is_some_and(|old| old != labels)
            {
                ns_tx.send_modify(|n| *n += 1);
            }
        },
    );
    let apis: Vec<Api<AccessGrant>> = if settings.namespaces.is_empty() {
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
    let reporter = Reporter {
        controller: "lapse-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let core = CoreSettings {
        cluster: settings.cluster.clone(),
        oidc_issuer: settings.oidc_issuer.clone(),
        overdue_after: chrono::TimeDelta::from_std(settings.overdue_after)
            .unwrap_or(chrono::TimeDelta::seconds(30)),
        retry_after: settings.retry_after,
    };
    let metrics = metrics::Metrics::new(registry);
    let ctx = Context {
        events: events::EventQueue::start(
            Recorder::new(client.clone(), reporter),
            metrics.events_dropped.clone(),
        ),
        client,
        azure,
        core,
        inventory: Default::default(),
        locks: Default::default(),
        policies: observe::PolicyCache::new(policies),
        namespaces,
        grants: GrantStores(stores),
        ready: watch::channel(false).0,
        resolver: Default::default(),
        metrics,
        settings,
    };
    (
        Arc::new(ctx),
        Wiring {
            policy_changes: rx,
            grant_writers,
        },
    )
}

/// Runs the grant controllers and the orphan sweep until `shutdown` completes.
pub async fn run(
    ctx: Arc<Context>,
    wiring: Wiring,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // Claims must be complete before anything is swept or any lease ends, or a shared object
    // could look unneeded: reconciles wait for `ready`, set once every cache is loaded.
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
    let controllers = wiring
        .grant_writers
        .into_iter()
        .map(|(api, writer, store)| {
            // Managed fields are never read; dropping them keeps the cache small.
            let stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .modify(|g: &mut AccessGrant| g.managed_fields_mut().clear())
                .reflect(writer)
                .applied_objects();
            let config =
                kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency);
            Controller::for_stream(stream, store)
                .with_config(config)
                .reconcile_all_on(changes(wiring.policy_changes.clone()))
                .graceful_shutdown_on(shutdown.clone())
                .run(grant::reconcile, grant::error_policy, ctx.clone())
                .for_each(|res| async move {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "controller");
                    }
                })
        });
    future::join_all(controllers).await;
    starter.abort();
}
