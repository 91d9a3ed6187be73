//! `lapse-operator run`: configuration, start-up checks, leader election, serving health and
//! metrics, and the controllers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use lapse_api::duration::LeaseDuration;
use lapse_api::naming::validate_cluster_name;
use lapse_azure::AzureConfig;
use lapse_controller::Settings;
use lapse_controller::leader::{LeaderConfig, LeaderElector};
use prometheus_client::registry::Registry;

use crate::azure_args::AzureArgs;

/// Every setting has an environment variable; the sandbox's `azure.env` names are used as
/// they are, so `set -a; . DIR/azure.env` is enough to point the operator at it.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Name of this cluster: with the cluster ID (and shard) it seeds every derived Azure name,
    /// which is what decides the objects this operator owns. DNS label, at most 63 characters.
    /// Never change it while grants are live.
    #[arg(long, env = "LAPSE_CLUSTER_NAME")]
    pub cluster_name: String,

    /// This cluster's identity. Defaults to the UID of namespace kube-system, which differs
    /// between clusters, so two clusters given the same name never own each other's objects.
    /// Set it only to keep ownership across a cluster rebuild.
    #[arg(long, env = "LAPSE_CLUSTER_ID")]
    pub cluster_id: Option<String>,

    /// This operator's name among several that share the cluster, each watching its own
    /// --namespaces: they never own or sweep each other's objects. Required with --namespaces.
    /// DNS label. Never change it while grants are live.
    #[arg(long, env = "LAPSE_SHARD")]
    pub shard: Option<String>,

    /// Name of the Secret (in the operator's namespace) holding the key that seals every
    /// AccessGrant status; created with a random key when missing. Deleting it ends every live
    /// lease (their statuses can no longer be verified).
    #[arg(long, env = "LAPSE_SEAL_SECRET", default_value = "lapse-status-seal")]
    pub seal_secret: String,

    /// This cluster's ServiceAccount token issuer (the FIC issuer). Operator configuration,
    /// never user input.
    #[arg(long, env = "LAPSE_OIDC_ISSUER")]
    pub oidc_issuer: String,

    #[command(flatten)]
    pub azure: AzureArgs,

    /// Subscriptions the orphan sweep always lists, comma-separated.
    #[arg(long, env = "LAPSE_SWEEP_SUBSCRIPTIONS", value_delimiter = ',')]
    pub sweep_subscriptions: Vec<String>,

    /// The default subscription (from the Azure environment); swept too.
    #[arg(long, env = "AZURE_SUBSCRIPTION_ID")]
    pub subscription_id: Option<String>,

    /// Namespaces to watch, comma-separated; all when empty.
    #[arg(long, env = "LAPSE_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// How often the orphan sweep lists Azure (Go duration).
    #[arg(long, env = "LAPSE_SWEEP_INTERVAL", default_value = "5m")]
    pub sweep_interval: LeaseDuration,

    /// When an unfinished revocation is reported overdue (Go duration).
    #[arg(long, env = "LAPSE_OVERDUE_AFTER", default_value = "30s")]
    pub overdue_after: LeaseDuration,

    /// How far ahead the activation lane keeps a timer for a grant; grants further out are
    /// woken by a scan every half horizon (Go duration, at least 1s).
    #[arg(long, env = "LAPSE_WAKE_HORIZON", default_value = "10m")]
    pub wake_horizon: LeaseDuration,

    /// The share of ARM's delete budget (percent, 0 to 90) kept free when many leases of one
    /// subscription end together and their deletes are started early to stay within it
    /// (synchronized expiry): room for the deletes no plan foresees (a grant revoked or deleted,
    /// the sweep, another operator in the tenant). More headroom ends crowded leases earlier.
    #[arg(long, env = "LAPSE_DELETE_HEADROOM", default_value_t = 10,
          value_parser = clap::value_parser!(u8).range(0..=90))]
    pub delete_headroom: u8,

    /// Base retry delay for failed Azure calls (Go duration).
    #[arg(long, env = "LAPSE_RETRY_AFTER", default_value = "2s")]
    pub retry_after: LeaseDuration,

    /// How long from a lease's start a create Azure refuses with AuthorizationFailed is retried
    /// before the grant fails (Go duration): Azure RBAC for the operator's own identity takes up
    /// to 10 minutes to propagate on a fresh install.
    #[arg(long, env = "LAPSE_AUTHORIZATION_GRACE", default_value = "10m")]
    pub authorization_grace: LeaseDuration,

    /// Grants reconciled at once in each lane (revocation, activation).
    #[arg(long, env = "LAPSE_CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,

    /// Delete finished grants (Expired, Revoked, Denied, Failed, nothing left in Azure) this long
    /// after their lease ended (Go duration). Off by default: a finished grant is the audit
    /// record of its lease. Each retirement is logged as an audit line. Needs delete on
    /// accessgrants (the chart adds it when set).
    #[arg(long, env = "LAPSE_RETAIN_FINISHED")]
    pub retain_finished: Option<LeaseDuration>,

    /// How long ARM may keep honouring a deleted role assignment from its cache (Go duration):
    /// the propagation part of status.accessMayContinueUntil.
    #[arg(long, env = "LAPSE_PROPAGATION_BOUND", default_value = "30m")]
    pub propagation_bound: LeaseDuration,

    /// The lifetime of access tokens Entra issues to managed identities (Go duration; not
    /// configurable in Entra): how long a token minted through a lease's federated credential
    /// may outlive it.
    #[arg(
        long,
        env = "LAPSE_TOKEN_LIFETIME_MANAGED_IDENTITY",
        default_value = "24h"
    )]
    pub token_lifetime_managed_identity: LeaseDuration,

    /// The lifetime of access tokens Entra issues to app registrations (Go duration; 60 to 90
    /// minutes by default, longer under a token lifetime policy or continuous access evaluation).
    #[arg(long, env = "LAPSE_TOKEN_LIFETIME_APPLICATION", default_value = "90m")]
    pub token_lifetime_application: LeaseDuration,

    /// Under a policy with azure.expiry: PIM, how long after a lease's end Azure itself removes
    /// its role assignments (Go duration): lapse removes them at the end; this is the longest
    /// access outlives the lease when lapse cannot act at all.
    #[arg(long, env = "LAPSE_PIM_GRACE", default_value = "5m")]
    pub pim_grace: LeaseDuration,

    /// Azure PIM's minimum active duration (5 minutes in Azure): shorter leases under a PIM
    /// policy are denied and removals wait for it. Only for testing against a simulator.
    #[arg(long, env = "LAPSE_PIM_MINIMUM", default_value = "5m", hide = true)]
    pub pim_minimum: LeaseDuration,

    /// Webhook that receives lifecycle notifications (docs/notifications.md); none when unset.
    /// Set it from a Secret: a webhook URL usually carries its own secret, so lapse never logs
    /// or prints it.
    #[arg(long, env = "LAPSE_NOTIFY_URL", hide_env_values = true)]
    pub notify_url: Option<String>,

    /// Body of each notification: slack, teams, json or cloudevents.
    #[arg(long, env = "LAPSE_NOTIFY_FORMAT", default_value = "json")]
    pub notify_format: lapse_controller::notify::Format,

    /// Put Approve and Deny actions in slack and teams notifications, for the approval bridge
    /// (`lapse-operator approval-bridge`, docs/approval.md): Slack buttons, and in Teams the
    /// command to send the bridge's outgoing webhook. Only useful with the bridge running.
    #[arg(long, env = "LAPSE_NOTIFY_ACTIONS", default_value_t = false, action = clap::ArgAction::Set)]
    pub notify_actions: bool,

    /// How long before a lease ends the ExpiringSoon notification is sent (Go duration).
    #[arg(long, env = "LAPSE_NOTIFY_EXPIRING_BEFORE", default_value = "10m")]
    pub notify_expiring_before: LeaseDuration,

    /// A directory of ticket checkers (docs/approval.md, "Tickets"): each file is one checker,
    /// named by the file's name and holding its URL. Mount a Secret here (the chart's
    /// `ticketCheckers.secretName`): a checker URL may carry a token, so it lives in a Secret and
    /// never in a policy, which only names the checker. Read at start-up; none when unset.
    #[arg(long, env = "LAPSE_TICKET_CHECKERS_DIR")]
    pub ticket_checkers_dir: Option<std::path::PathBuf>,

    /// How long one ticket check may take, connecting included (Go duration).
    #[arg(long, env = "LAPSE_TICKET_CHECK_TIMEOUT", default_value = "5s")]
    pub ticket_check_timeout: LeaseDuration,

    /// How old a checker's answer may get before the ticket is asked again (Go duration): a
    /// ticket closed under a live lease ends it within this (plus a reconcile).
    #[arg(long, env = "LAPSE_TICKET_RECHECK_INTERVAL", default_value = "1m")]
    pub ticket_recheck_interval: LeaseDuration,

    /// How long a checker's last answer stands while it cannot be reached (Go duration); then
    /// no answer is believed: waiting grants wait, live leases are revoked (TicketUnverified).
    #[arg(long, env = "LAPSE_TICKET_STALE_AFTER", default_value = "5m")]
    pub ticket_stale_after: LeaseDuration,

    /// Most tickets cached with their checkers' answers.
    #[arg(long, env = "LAPSE_TICKET_CACHE_SIZE", default_value_t = 10_000)]
    pub ticket_cache_size: usize,

    /// Read each governed subscription's ARM Activity Log for usage evidence (docs/usage.md):
    /// status.usage, the Used condition and the findings. Needs
    /// Microsoft.Insights/eventtypes/values/read at those subscriptions (`azure-role` plans it).
    #[arg(long, env = "LAPSE_USAGE_ACTIVITY_LOG")]
    pub usage_activity_log: bool,

    /// Read Entra's workload sign-in log for usage evidence (tokens issued, federated
    /// credentials used). Needs the Graph application permission AuditLog.Read.All and Microsoft
    /// Entra ID P1 or P2.
    #[arg(long, env = "LAPSE_USAGE_SIGN_INS")]
    pub usage_sign_ins: bool,

    /// How often each usage log source is read (Go duration).
    #[arg(long, env = "LAPSE_USAGE_POLL_INTERVAL", default_value = "1m")]
    pub usage_poll_interval: LeaseDuration,

    /// How far back each read goes again for events Azure logs late (Go duration): the
    /// Activity Log's and the sign-in log's delay. Findings at a lease's end wait this long
    /// past its end and the propagation bound.
    #[arg(long, env = "LAPSE_USAGE_REREAD", default_value = "20m")]
    pub usage_reread: LeaseDuration,

    /// Address serving Prometheus metrics at /metrics.
    #[arg(long, env = "LAPSE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Address serving /healthz and /readyz.
    #[arg(long, env = "LAPSE_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    pub health_addr: SocketAddr,

    /// Elect a leader on a coordination.k8s.io Lease (the leader Lease) so only one replica acts.
    #[arg(long, env = "LAPSE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// The operator's own namespace: its leader Lease and its status seal key live
    /// here (set POD_NAMESPACE from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "lapse-system")]
    pub leader_election_namespace: String,

    /// This replica's identity in the leader Lease (defaults to the host name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Log format.
    #[arg(long, env = "LAPSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub(crate) fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAPSE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Checks every setting before touching anything; each error names the setting.
fn settings(args: &RunArgs) -> anyhow::Result<(Settings, AzureConfig)> {
    validate_cluster_name(&args.cluster_name)
        .map_err(|e| anyhow::anyhow!("--cluster-name (LAPSE_CLUSTER_NAME): {e}"))?;
    let issuer = url::Url::parse(&args.oidc_issuer).map_err(|e| {
        anyhow::anyhow!(
            "--oidc-issuer (LAPSE_OIDC_ISSUER): {:?} is not a URL: {e}",
            args.oidc_issuer
        )
    })?;
    if issuer.scheme() != "https" {
        bail!(
            "--oidc-issuer (LAPSE_OIDC_ISSUER): must be an https URL, got {:?}",
            args.oidc_issuer
        );
    }
    let azure = args.azure.config()?;
    let mut sweep_subscriptions = args.sweep_subscriptions.clone();
    sweep_subscriptions.extend(args.subscription_id.clone());
    sweep_subscriptions.retain(|s| !s.trim().is_empty());
    let namespaces: Vec<String> = args
        .namespaces
        .iter()
        .filter(|n| !n.trim().is_empty())
        .cloned()
        .collect();
    let shard = args.shard.as_deref().filter(|s| !s.trim().is_empty());
    if !namespaces.is_empty() && shard.is_none() {
        bail!(
            "--namespaces (LAPSE_NAMESPACES) watches only some namespaces: also set --shard \
             (LAPSE_SHARD) to a name no other lapse-operator in this cluster uses, so that \
             operators never own or sweep each other's Azure objects"
        );
    }
    let cluster_id = args.cluster_id.as_deref().filter(|s| !s.trim().is_empty());
    // Checked now, so a bad value is named before anything is contacted (the cluster ID read
    // from kube-system is checked the same way once it is known).
    lapse_api::naming::Owner::new(
        &args.cluster_name,
        cluster_id.unwrap_or("00000000-0000-0000-0000-000000000000"),
        shard,
    )
    .map_err(|e| match e {
        lapse_api::naming::NamingError::InvalidShard { .. } => {
            anyhow::anyhow!("--shard (LAPSE_SHARD): {e}")
        }
        _ => anyhow::anyhow!("--cluster-id (LAPSE_CLUSTER_ID): {e}"),
    })?;
    let settings = Settings {
        cluster: args.cluster_name.clone(),
        cluster_id: cluster_id.map(str::to_owned),
        shard: shard.map(str::to_owned),
        operator_namespace: args.leader_election_namespace.clone(),
        seal_secret: args.seal_secret.clone(),
        oidc_issuer: args.oidc_issuer.clone(),
        namespaces,
        sweep_interval: args.sweep_interval.to_std(),
        sweep_subscriptions,
        overdue_after: args.overdue_after.to_std(),
        retry_after: args.retry_after.to_std(),
        authorization_grace: args.authorization_grace.to_std(),
        concurrency: args.concurrency.max(1),
        wake_horizon: args
            .wake_horizon
            .to_std()
            .max(std::time::Duration::from_secs(1)),
        max_rounds: lapse_controller::grant::MAX_ROUNDS,
        retain_finished: args.retain_finished.map(|d| d.to_std()),
        delete_headroom: f64::from(args.delete_headroom) / 100.0,
        residual: lapse_api::lease::ResidualBounds {
            propagation: args.propagation_bound.to_chrono(),
            managed_identity_token: args.token_lifetime_managed_identity.to_chrono(),
            application_token: args.token_lifetime_application.to_chrono(),
        },
        pim: lapse_api::lease::PimSettings {
            grace: args.pim_grace.to_chrono(),
            minimum: args.pim_minimum.to_chrono(),
        },
        notify: args
            .notify_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .map(|url| {
                let mut n = lapse_controller::notify::NotifySettings::new(
                    url.trim().to_owned().into(),
                    args.notify_format,
                );
                n.expiring_before = args.notify_expiring_before.to_std();
                n.actions = args.notify_actions;
                n
            }),
        tickets: lapse_controller::TicketSettings {
            checkers: match &args.ticket_checkers_dir {
                Some(dir) => ticket_checkers(dir)?,
                None => Default::default(),
            },
            timeout: args.ticket_check_timeout.to_std(),
            recheck: args.ticket_recheck_interval.to_std(),
            stale_after: args.ticket_stale_after.to_std(),
            cache_size: args.ticket_cache_size.max(1),
        },
        usage: lapse_controller::UsageSettings {
            activity_log: args.usage_activity_log,
            sign_ins: args.usage_sign_ins,
            poll_every: args
                .usage_poll_interval
                .to_std()
                .max(std::time::Duration::from_millis(100)),
            reread: args.usage_reread.to_std(),
            ledger_name: usage_ledger_name(args.shard.as_deref()),
        },
    };
    Ok((settings, azure))
}

/// The ticket checkers in `dir`: one per file, named by the file, holding its URL. Names
/// starting with a dot are skipped (a mounted Secret keeps its data in `..data`). The URLs are
/// never printed.
fn ticket_checkers(
    dir: &std::path::Path,
) -> anyhow::Result<std::collections::BTreeMap<String, lapse_azure::SecretString>> {
    let what = || {
        format!(
            "--ticket-checkers-dir (LAPSE_TICKET_CHECKERS_DIR) {}",
            dir.display()
        )
    };
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(what)? {
        let entry = entry.with_context(what)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Follows the Secret volume's symbolic links to the files themselves.
        if name.starts_with('.') || !std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let url = std::fs::read_to_string(entry.path())
            .with_context(|| format!("{}: reading checker {name}", what()))?;
        let url = url.trim();
        if url.is_empty() {
            bail!("{}: checker {name} holds no URL", what());
        }
        out.insert(name, url.to_owned().into());
    }
    tracing::info!(
        checkers = ?out.keys().collect::<Vec<_>>(),
        "ticket checkers"
    );
    Ok(out)
}

/// Fails fast, with the fix, when the operator's namespace does not exist: its leader Lease and
/// its status seal key live there.
async fn check_namespace(client: &kube::Client, namespace: &str) -> anyhow::Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    match api.get_opt(namespace).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => bail!(
            "the operator's namespace {namespace:?} (--leader-election-namespace, POD_NAMESPACE) \
             does not exist: the leader Lease and the status seal key live there. \
             Create it (`kubectl create namespace {namespace}`) or set POD_NAMESPACE to an \
             existing namespace; outside a cluster with one replica, --leader-elect=false skips \
             the leader Lease but the seal key still needs the namespace"
        ),
        // Without permission to read namespaces, the steps below say what is wrong.
        Err(kube::Error::Api(s)) if s.code == 403 => {
            tracing::warn!(
                namespace,
                "cannot read the operator's namespace to check it (403)"
            );
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("checking that namespace {namespace} exists")),
    }
}

/// Fails fast, with the fix, when the CRDs are not installed.
async fn check_crds(client: &kube::Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [
        "accessgrants.lapse.dev",
        "accesspolicies.lapse.dev",
        "accessapprovals.lapse.dev",
    ] {
        match api.get_opt(name).await {
            Ok(Some(_)) => {}
            Ok(None) => bail!(
                "the CustomResourceDefinition {name} is not installed: run `lapse-operator crd | kubectl apply --server-side -f -` (or install the Helm chart) first"
            ),
            // Without permission to read CRDs, the watches below will say what is wrong.
            Err(kube::Error::Api(s)) if s.code == 403 => {
                tracing::warn!(crd = name, "cannot read CRDs to check them (403)")
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("checking that the CRD {name} is installed"));
            }
        }
    }
    Ok(())
}

/// The usage ledger ConfigMap's name: one per shard, like the leader Lease.
fn usage_ledger_name(shard: Option<&str>) -> String {
    match shard.filter(|s| !s.trim().is_empty()) {
        Some(s) => format!("lapse-usage-ledger-{s}"),
        None => "lapse-usage-ledger".to_owned(),
    }
}

/// The leader Lease's name: one per shard, so operators sharing a namespace do not compete.
fn leader_lease_name(shard: Option<&str>) -> String {
    match shard.filter(|s| !s.trim().is_empty()) {
        Some(s) => format!("lapse-operator-{s}"),
        None => "lapse-operator".to_owned(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let (settings, azure_cfg) = settings(&args)?;
    let client = kube::Client::try_default().await.context(
        "connecting to Kubernetes (in a pod: the ServiceAccount; otherwise KUBECONFIG or ~/.kube/config)",
    )?;
    check_crds(&client).await?;
    check_namespace(&client, &args.leader_election_namespace).await?;
    let mut registry = Registry::default();
    let (ctx, wiring) =
        lapse_controller::prepare(client.clone(), azure_cfg, settings, &mut registry)
            .await
            .context("preparing the controllers")?;
    // Never fatal: warns, naming scope and action, of what the identity lacks for the policies.
    tokio::spawn(crate::check::warn_at_startup(
        client.clone(),
        ctx.azure.clone(),
        crate::azure_role::UsageLogs {
            usage_activity_log: args.usage_activity_log,
            usage_sign_ins: args.usage_sign_ins,
        },
    ));
    let registry = Arc::new(registry);
    let standby = Arc::new(std::sync::atomic::AtomicBool::new(args.leader_elect));

    let health = crate::serve::serve(
        args.health_addr,
        crate::serve::Routes::Health {
            ready: ctx.ready.subscribe(),
            standby: standby.clone(),
        },
    )
    .await
    .with_context(|| format!("serving health on --health-addr {}", args.health_addr))?;
    let metrics = crate::serve::serve(
        args.metrics_addr,
        crate::serve::Routes::Metrics {
            registry: registry.clone(),
            ctx: ctx.clone(),
        },
    )
    .await
    .with_context(|| format!("serving metrics on --metrics-addr {}", args.metrics_addr))?;

    let elector = args.leader_elect.then(|| {
        let identity = args
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("lapse-operator-{}", std::process::id()));
        LeaderElector::new(
            client.clone(),
            LeaderConfig {
                namespace: args.leader_election_namespace.clone(),
                // Shards of one cluster elect their leaders apart.
                leader_lease_name: leader_lease_name(args.shard.as_deref()),
                identity,
                leader_lease_duration: Duration::from_secs(15),
                renew_every: Duration::from_secs(5),
                renew_deadline: Duration::from_secs(10),
            },
        )
    });
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown_signal()));
    if let Some(e) = &elector {
        tracing::info!("waiting for leadership");
        tokio::select! {
            () = e.acquire() => {
                standby.store(false, std::sync::atomic::Ordering::Relaxed);
                tracing::info!("leading");
            }
            () = shutdown.clone() => return Ok(()),
        }
    }
    let lost = async {
        match &elector {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lost);
    tracing::info!(cluster = %ctx.settings.cluster, "lapse-operator running");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut controllers = tokio::spawn(lapse_controller::run(ctx.clone(), wiring, async move {
        let _ = stop_rx.await;
    }));
    let mut lost_leadership = false;
    tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down");
            let _ = stop_tx.send(());
            // Draining still needs the leader Lease: keep renewing, and stop acting the moment it
            // is lost.
            tokio::select! {
                _ = tokio::time::timeout(Duration::from_secs(20), &mut controllers) => {}
                () = &mut lost => lost_leadership = true,
            }
        }
        () = &mut lost => lost_leadership = true,
    }
    if lost_leadership {
        // Another replica may act from the leader Lease's expiry on: stop now, without draining.
        tracing::error!("lost leadership; stopping");
        controllers.abort();
    } else if let Some(e) = &elector {
        e.release().await;
    }
    health.abort();
    metrics.abort();
    if lost_leadership {
        bail!(
            "lost leadership of the leader Lease {}/{}",
            args.leader_election_namespace,
            leader_lease_name(args.shard.as_deref())
        );
    }
    Ok(())
}
