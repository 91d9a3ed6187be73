use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::Store;
use lapse_api::lease::CoreSettings;
use lapse_azure::AzureClient;

use crate::cached::CachedGrant;
use crate::inventory::Inventory;
use crate::lanes::{FairShare, GrantLocks, LeaseClock};
use crate::locks::KeyLocks;
use crate::metrics::Metrics;
use crate::observe::{PolicyCache, Resolver};
use crate::quota::LiveGrants;
use crate::seal::Sealer;

/// Controller settings (the operator binary fills them from flags and environment).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The cluster's name: with its ID and the shard, seeds derived names (what this operator owns).
    pub cluster: String,
    /// This cluster's identity; the UID of namespace `kube-system` when unset.
    pub cluster_id: Option<String>,
    /// Set when several operators share the cluster, each watching its own namespaces: they
    /// never own (or sweep) each other's objects.
    pub shard: Option<String>,
    /// The operator's own namespace: the status seal key lives here.
    pub operator_namespace: String,
    /// Name of the Secret holding the status seal key.
    pub seal_secret: String,
    /// This cluster's ServiceAccount token issuer.
    pub oidc_issuer: String,
    /// Namespaces to watch; empty watches all.
    pub namespaces: Vec<String>,
    /// How often the orphan sweep lists Azure.
    pub sweep_interval: Duration,
    /// Subscriptions the sweep always lists, grants or not.
    pub sweep_subscriptions: Vec<String>,
    /// When an unfinished revocation is reported overdue.
    pub overdue_after: Duration,
    /// Base delay before retrying a failed Azure call or an unobserved object.
    pub retry_after: Duration,
    /// How long from a lease's start a create refused with `AuthorizationFailed` is retried.
    pub authorization_grace: Duration,
    /// Delete finished grants this long after their lease ended; `None` keeps them.
    pub retain_finished: Option<Duration>,
    /// Grants reconciled at once in each lane (activation and revocation).
    pub concurrency: u16,
    /// How far ahead the activation lane keeps a timer of its own for a grant. A grant whose
    /// next look is further out (a window opening next month) holds none: a scan every half
    /// horizon wakes it once that moment comes within the horizon (docs/performance.md).
    pub wake_horizon: Duration,
    /// Decide/act rounds one reconcile makes before yielding to other grants and coming back;
    /// [`crate::grant::MAX_ROUNDS`] in the operator.
    pub max_rounds: usize,
    /// How long access may outlast a lease's objects (`status.accessMayContinueUntil`).
    pub residual: lapse_api::lease::ResidualBounds,
    /// Azure-enforced expiry: the grace after `expiresAt` and PIM's minimum.
    pub pim: lapse_api::lease::PimSettings,
    /// The notification webhook; `None` sends none (the audit trail is written either way).
    pub notify: Option<crate::notify::NotifySettings>,
    /// Ticket checkers and how their answers are cached (docs/approval.md, "Tickets").
    pub tickets: crate::tickets::TicketSettings,
    /// Usage evidence: which of Azure's logs are read (docs/usage.md).
    pub usage: crate::usage_book::UsageSettings,
    /// The share (0 to 0.9) of ARM's delete budget the synchronized-expiry plan leaves for
    /// deletes it cannot foresee (docs/architecture.md, "Synchronized expiry").
    pub delete_headroom: f64,
}

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub azure: AzureClient,
    pub settings: Settings,
    pub core: CoreSettings,
    pub inventory: Inventory,
    pub locks: KeyLocks,
    pub policies: PolicyCache,
    pub namespaces: Store<Namespace>,
    /// AccessApprovals and the admission policies that make them believable.
    pub approvals: crate::approvals::ApprovalStores,
    pub grants: GrantStores,
    /// True once every cache is loaded and claims are complete.
    pub ready: tokio::sync::watch::Sender<bool>,
    pub resolver: Resolver,
    /// Events, published in order by one task so that no reconcile waits for them.
    pub events: crate::events::EventQueue,
    /// Objects of our kinds this version cannot read (left out of the caches, reported).
    pub unreadable: Arc<crate::unreadable::Unreadable>,
    pub metrics: Metrics,
    /// Lifecycle notifications, queued for the webhook (docs/notifications.md).
    pub notifier: crate::notify::Notifier,
    /// Signs every status written, and tells the operator's own record from anyone else's.
    pub sealer: Sealer,
    /// One lane at a time per grant.
    pub grant_locks: GrantLocks,
    /// Each namespace's share of the activation lane.
    pub fair: FairShare,
    /// When each lease ends, for the overdue gauge.
    pub clock: LeaseClock,
    /// The leases whose deletes start before their end (synchronized expiry).
    pub early: crate::early::EarlyEnds,
    /// Live grants per namespace and policy (quotas, policy status).
    pub live: LiveGrants,
    /// The version of each grant this process last wrote.
    pub written: crate::written::WrittenVersions,
    /// Counts policy and namespace-label changes: a decision taken before one is stale.
    pub policy_epoch: tokio::sync::watch::Receiver<u64>,
    /// What the ticket checkers said, and the checks under way.
    pub tickets: Arc<crate::tickets::Tickets>,
    /// Usage batches persisted but not yet in their grants' statuses.
    pub usage: Arc<crate::usage_book::UsageBook>,
    /// Asks the activation lane to look at a grant again (an object of a live lease vanished).
    pub repair:
        tokio::sync::mpsc::UnboundedSender<kube::runtime::reflector::ObjectRef<CachedGrant>>,
}

impl Context {
    /// What the inventory lists Azure with.
    pub fn lister(&self) -> crate::inventory::Lister<'_> {
        crate::inventory::Lister {
            azure: &self.azure,
            owner: &self.core.owner,
            oidc_issuer: &self.core.oidc_issuer,
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The grant caches: one per watched namespace, or one for all.
#[derive(Clone, Debug, Default)]
pub struct GrantStores(pub Vec<Store<CachedGrant>>);

impl GrantStores {
    pub fn state(&self) -> Vec<Arc<CachedGrant>> {
        self.0.iter().flat_map(Store::state).collect()
    }

    /// Waits until every cache holds a complete initial list.
    pub async fn wait_until_ready(&self) {
        for s in &self.0 {
            wait_ready(s).await;
        }
    }
}

/// Waits until a reflector store is loaded.
///
/// `Store::wait_until_ready` keeps only the waker of its latest poller (a oneshot receiver
/// behind a mutex), so with the controller also waiting on the same store one waiter may never
/// be woken. Polling again now and then sidesteps that: once any poller has seen the value, it
/// is memoised and every later poll returns at once.
pub async fn wait_ready<K>(store: &Store<K>)
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
            // Err(WriterDropped) only happens on shutdown: nothing to wait for any more.
            Ok(_) => return,
            Err(_elapsed) => {}
        }
    }
}
