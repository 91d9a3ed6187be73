//! The in-process world: sim-kube and sim-azure as libraries of this test, the CRDs generated
//! from the Rust types, and the controllers built by `lapse_controller::prepare` and run by
//! `lapse_controller::run`, as `lapse-operator run` builds and runs them. Assertions go through
//! the Kubernetes API and sim-azure's audit log and state.
//!
//! Timings are the sandbox's (no Azure latency) with short retry settings, so every wait here
//! is a poll that normally ends within milliseconds; [`PATIENCE`] only bounds a broken run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use lapse_api::arm::ArmId;
use lapse_api::v1alpha1::{
    AccessApproval, AccessGrant, AccessGrantSpec, AccessPolicy, AccessPolicySpec, Condition,
    ConditionStatus, Federation, GrantPhase, IdentityRef, RoleRequest,
};
use lapse_azure::{AzureClient, AzureConfig, Cloud, CredentialConfig, LimitsConfig};
use lapse_controller::inventory::Partition;
use lapse_controller::{Context, Settings};
use lapse_sim_azure::{AuditEntry, FaultAction, FaultRule, Seed, SimAzure, SimAzureHandle};
use lapse_sim_kube::{SimKube, SimKubeHandle};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The namespace grants live in.
pub const NS: &str = "payments";
/// The workload's ServiceAccount (and, in the sandbox seed, its managed identity's name).
pub const SA: &str = "backup-runner";
/// The sandbox seed's resource group.
pub const RG: &str = "lapse-demo-rg";
/// The operator's cluster name: part of every name it derives.
pub const CLUSTER: &str = "inproc";
/// Bounds every wait. What the tests wait for takes milliseconds; this only ends a broken run.
pub const PATIENCE: Duration = Duration::from_secs(15);
/// How often waits look again.
const POLL: Duration = Duration::from_millis(10);
/// A retry delay short enough that retries (doubling per attempt) stay within a test's second.
const RETRY_AFTER: Duration = Duration::from_millis(20);

/// What a test may change about the world before it starts.
#[derive(Debug)]
pub struct Options {
    /// The Azure tenant: the sandbox's, plus whatever a test plants before the operator starts.
    pub seed: Seed,
    /// `--overdue-after`.
    pub overdue_after: Duration,
    /// Decide/act rounds per reconcile (the operator's is `grant::MAX_ROUNDS`).
    pub max_rounds: usize,
    /// Usage evidence (off by default, as in the operator).
    pub usage: lapse_controller::UsageSettings,
    /// `--propagation-bound`.
    pub propagation: chrono::TimeDelta,
    /// sim-azure's most events per page of its logs.
    pub log_page_size: usize,
    /// ARM's delete budget per subscription (at once, then per second), in sim-azure's
    /// throttling and in the operator's limiter alike; Azure's 200 + 10/s by default.
    pub deletes: (u32, f64),
    /// `--delete-headroom` as a share.
    pub delete_headroom: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed: Seed::sandbox_default(),
            overdue_after: Duration::from_secs(30),
            max_rounds: lapse_controller::grant::MAX_ROUNDS,
            usage: Default::default(),
            propagation: lapse_api::lease::ResidualBounds::default().propagation,
            log_page_size: lapse_sim_azure::Config::default().log_page_size,
            deletes: (200, 10.0),
            delete_headroom: 0.1,
        }
    }
}

/// A user-assigned identity of the seed.
#[derive(Clone, Debug)]
pub struct Identity {
    pub id: ArmId,
    pub principal: uuid::Uuid,
}

/// The in-process test world: sim-kube and sim-azure as libraries and the controllers, all in
/// this test's process. (The end-to-end harness's `lapse_e2e::World` runs the real binaries as
/// processes instead; sim-azure's own state is its `Tenant`.)
pub struct World {
    pub kube: SimKubeHandle,
    pub azure: SimAzureHandle,
    pub client: kube::Client,
    pub ctx: Arc<Context>,
    pub sub: String,
    azure_config: AzureConfig,
    dir: PathBuf,
    settings: Settings,
    stop: Option<oneshot::Sender<()>>,
    controllers: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").field("sub", &self.sub).finish()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(c) = self.controllers.take() {
            c.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Logs to the test's output when `LAPSE_TEST_LOG` is set (e.g. `lapse_controller=debug`).
fn init_logging() {
    if let Ok(filter) = std::env::var("LAPSE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A scratch directory for the Azure CA bundle (the client reads it from a file, as the
/// operator reads `LAPSE_AZURE_CA_BUNDLE`).
pub fn scratch_dir() -> anyhow::Result<PathBuf> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("lapse-inproc-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A client configuration for the operator's identity in `azure`: its endpoints, credentials
/// and CA, from the `azure.env` and `azure-ca.pem` the simulator writes into `dir` (as the
/// operator reads them), with `issuer` as the cluster's OIDC issuer.
pub fn azure_config(
    azure: &SimAzureHandle,
    dir: &std::path::Path,
    issuer: &str,
) -> anyhow::Result<AzureConfig> {
    azure.write_env(dir, issuer)?;
    let url = lapse_azure::Url::parse(azure.url())?;
    let creds = azure
        .operator_credentials()
        .ok_or_else(|| anyhow!("the seed has no operator principal"))?;
    Ok(AzureConfig {
        cloud: Cloud::Custom {
            arm: url.clone(),
            graph: url.clone(),
            authority: url.clone(),
        },
        arm_endpoint: Some(url.clone()),
        graph_endpoint: Some(url.clone()),
        authority_host: Some(url),
        credential: CredentialConfig::ClientSecret {
            tenant_id: creds.tenant_id,
            client_id: creds.client_id,
            secret: creds.client_secret.unwrap_or_default().into(),
        },
        ca_bundle: Some(dir.join("azure-ca.pem")),
        limits: LimitsConfig::default(),
        timeout: Duration::from_secs(10),
    })
}

/// Builds and starts the controllers as `lapse-operator run` does.
async fn launch(
    client: &kube::Client,
    azure_config: &AzureConfig,
    settings: Settings,
) -> anyhow::Result<(Arc<Context>, oneshot::Sender<()>, JoinHandle<()>)> {
    let mut registry = prometheus_client::registry::Registry::default();
    let (ctx, wiring) = lapse_controller::prepare(
        client.clone(),
        azure_config.clone(),
        settings,
        &mut registry,
    )
    .await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let controllers = tokio::spawn(lapse_controller::run(ctx.clone(), wiring, async move {
        let _ = stopped.await;
    }));
    Ok((ctx, stop, controllers))
}

impl World {
    /// The sandbox's tenant, a namespace with its ServiceAccounts, the CRDs, and the
    /// controllers running with their caches loaded and the start-up sweep done.
    pub async fn start() -> anyhow::Result<Self> {
        Self::with(Options::default()).await
    }

    pub async fn with(opts: Options) -> anyhow::Result<Self> {
        init_logging();
        // kube (ring) and the Azure SDK (aws-lc) both link a rustls provider: choose one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kube = SimKube::start(lapse_sim_kube::Config {
            namespaces: vec!["default".into(), "kube-system".into(), NS.into()],
            ..Default::default()
        })
        .await?;
        // What `lapse-operator crd` renders (config/crd/), straight from the Rust types.
        for crd in [
            AccessPolicy::crd(),
            AccessGrant::crd(),
            AccessApproval::crd(),
        ] {
            kube.create(serde_json::to_value(crd)?)?;
        }
        for sa in [SA, "report-agent"] {
            kube.create(json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": sa, "namespace": NS},
            }))?;
        }
        let azure = SimAzure::start(
            lapse_sim_azure::Config {
                trusted_ca_pems: vec![kube.ca_pem().to_owned()],
                log_page_size: opts.log_page_size,
                throttle: lapse_sim_azure::ThrottleConfig {
                    deletes: lapse_sim_azure::ThrottleLimit {
                        capacity: opts.deletes.0,
                        refill_per_sec: opts.deletes.1,
                    },
                    ..Default::default()
                },
                ..Default::default()
            },
            opts.seed,
        )
        .await?;
        // The sandbox's own azure.env and azure-ca.pem: the settings the operator would read.
        let dir = scratch_dir()?;
        let mut azure_config = azure_config(&azure, &dir, kube.issuer())?;
        azure_config.limits.deletes = lapse_azure::BucketConfig {
            capacity: opts.deletes.0,
            refill_per_second: opts.deletes.1,
        };
        let sub = azure
            .subscription_id()
            .ok_or_else(|| anyhow!("the seed has no subscription"))?;
        let client = kube::Client::try_from(
            kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::from_yaml(&kube.kubeconfig())?,
                &Default::default(),
            )
            .await?,
        )?;
        let settings = Settings {
            cluster: CLUSTER.into(),
            cluster_id: None,
            shard: None,
            operator_namespace: "kube-system".into(),
            seal_secret: "lapse-status-seal".into(),
            oidc_issuer: kube.issuer().to_owned(),
            namespaces: Vec::new(),
            // Once at start-up, then only when a test calls `sweep`: a test decides when the
            // operator's inventory is refreshed.
            sweep_interval: Duration::from_secs(3600),
            sweep_subscriptions: vec![sub.clone()],
            overdue_after: opts.overdue_after,
            retry_after: RETRY_AFTER,
            authorization_grace: Duration::from_secs(600),
            retain_finished: None,
            delete_headroom: opts.delete_headroom,
            concurrency: 8,
            wake_horizon: Duration::from_secs(600),
            max_rounds: opts.max_rounds,
            notify: None,
            residual: lapse_api::lease::ResidualBounds {
                propagation: opts.propagation,
                ..Default::default()
            },
            pim: Default::default(),
            tickets: Default::default(),
            usage: opts.usage.clone(),
        };
        let (ctx, stop, controllers) = launch(&client, &azure_config, settings.clone()).await?;
        let w = Self {
            kube,
            azure,
            client,
            ctx,
            sub,
            azure_config,
            dir,
            settings,
            stop: Some(stop),
            controllers: Some(controllers),
        };
        w.wait_started().await?;
        Ok(w)
    }

    /// Kills the operator where it stands (its tasks aborted, nothing flushed: what a SIGKILL
    /// leaves) and starts a new one on the same cluster and tenant.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.controllers.take() {
            c.abort();
            let _ = c.await;
        }
        self.stop = None;
        let (ctx, stop, controllers) =
            launch(&self.client, &self.azure_config, self.settings.clone()).await?;
        self.ctx = ctx;
        self.stop = Some(stop);
        self.controllers = Some(controllers);
        self.wait_started().await
    }

    /// Caches loaded and the start-up sweep's listings done: from here on the operator's
    /// inventory changes only by its own writes (and by `sweep`).
    async fn wait_started(&self) -> anyhow::Result<()> {
        let mut parts = vec![Partition::RoleAssignments(format!(
            "/subscriptions/{}",
            self.sub.to_ascii_lowercase()
        ))];
        for name in [SA, "report-agent"] {
            parts.push(Partition::Fics(self.identity(name)?.id.key().to_owned()));
        }
        self.until("the controllers to start", || {
            *self.ctx.ready.borrow() && parts.iter().all(|p| self.ctx.inventory.is_loaded(p))
        })
        .await
    }

    /// Polls `done` until it holds.
    pub async fn until(&self, what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        while !done() {
            if Instant::now() > deadline {
                bail!("waited {PATIENCE:?} for {what}");
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// One orphan sweep now, as the periodic one runs.
    pub async fn sweep(&self) -> usize {
        lapse_controller::sweep::sweep_once(&self.ctx, false).await
    }

    pub fn rg(&self) -> String {
        format!("/subscriptions/{}/resourceGroups/{RG}", self.sub)
    }

    pub fn storage(&self) -> String {
        format!(
            "{}/providers/Microsoft.Storage/storageAccounts/lapsedemodata",
            self.rg()
        )
    }

    pub fn key_vault(&self) -> String {
        format!(
            "{}/providers/Microsoft.KeyVault/vaults/lapse-demo-kv",
            self.rg()
        )
    }

    /// A seeded user-assigned identity by name.
    pub fn identity(&self, name: &str) -> anyhow::Result<Identity> {
        let (id, principal, _client_id) = self
            .azure
            .identity(name)
            .ok_or_else(|| anyhow!("no identity {name} in the seed"))?;
        Ok(Identity {
            id: ArmId::parse(&id).map_err(|e| anyhow!("{id}: {e}"))?,
            principal: uuid::Uuid::parse_str(&principal)?,
        })
    }

    /// The issuer and subject a FIC for `sa` of the test namespace carries.
    pub fn federation_of(&self, sa: &str) -> (String, String) {
        (
            self.kube.issuer().to_owned(),
            format!("system:serviceaccount:{NS}:{sa}"),
        )
    }

    /// Someone with the operator's Azure rights, working by hand: what it makes carries no
    /// name lapse derives, so it is not lapse's.
    pub fn by_hand(&self) -> anyhow::Result<AzureClient> {
        Ok(AzureClient::new(self.azure_config.clone())?)
    }

    /// A policy allowing the seed's identities in [`NS`] these roles at or below the resource
    /// group, federated with any ServiceAccount, for up to an hour.
    pub async fn allow(&self, roles: &[&str]) -> anyhow::Result<()> {
        let policy = AccessPolicy::new(
            "payments",
            AccessPolicySpec {
                namespaces: vec![NS.into()],
                identities: vec![format!(
                    "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*",
                    self.rg()
                )],
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                scopes: vec![self.rg()],
                service_accounts: vec!["*".into()],
                max_duration: "1h".into(),
                ..Default::default()
            },
        );
        Api::<AccessPolicy>::all(self.client.clone())
            .create(&PostParams::default(), &policy)
            .await
            .context("creating the AccessPolicy")?;
        Ok(())
    }

    pub fn grants(&self) -> Api<AccessGrant> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub async fn create(&self, g: &AccessGrant) -> anyhow::Result<()> {
        self.grants()
            .create(&PostParams::default(), g)
            .await
            .with_context(|| format!("creating AccessGrant {}", g.name_any()))?;
        Ok(())
    }

    /// `spec.revoked: true`, as a user ends a lease early.
    pub async fn revoke(&self, name: &str) -> anyhow::Result<()> {
        self.grants()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"revoked": true}})),
            )
            .await
            .with_context(|| format!("revoking {name}"))?;
        Ok(())
    }

    /// Polls a grant through the API until `pred` holds; fails with what was last seen.
    pub async fn wait_grant(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&AccessGrant) -> bool,
    ) -> anyhow::Result<AccessGrant> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let g = self.grants().get_opt(name).await?;
            if let Some(g) = &g
                && pred(g)
            {
                return Ok(g.clone());
            }
            if Instant::now() > deadline {
                bail!(
                    "grant {name}: waited {PATIENCE:?} for {what}; last seen: {}",
                    serde_json::to_string_pretty(&g.map(|g| g.status))?
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn wait_phase(&self, name: &str, phase: GrantPhase) -> anyhow::Result<AccessGrant> {
        self.wait_grant(name, &format!("phase {phase:?}"), |g| {
            phase_of(g) == Some(phase)
        })
        .await
    }

    /// Polls until the grant is gone from the API (its finalizer removed).
    pub async fn wait_gone(&self, name: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let Some(g) = self.grants().get_opt(name).await? else {
                return Ok(());
            };
            if Instant::now() > deadline {
                bail!(
                    "grant {name}: waited {PATIENCE:?} for it to go; last seen: {}",
                    serde_json::to_string_pretty(&g.status)?
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until an Event with this reason is recorded on the grant (Events leave through a
    /// queue, after the status).
    pub async fn wait_event(
        &self,
        name: &str,
        reason: &str,
    ) -> anyhow::Result<(String, String, String)> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let seen = events(self, name).await?;
            if let Some(e) = seen.iter().find(|(_, r, _)| r == reason) {
                return Ok(e.clone());
            }
            if Instant::now() > deadline {
                bail!("grant {name}: no {reason} Event after {PATIENCE:?}; seen: {seen:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Requests with this method whose path contains `part` (case-insensitive).
    pub fn calls(&self, method: &str, part: &str) -> Vec<AuditEntry> {
        self.azure.audit().matching(method, part)
    }

    /// Makes Azure answer matching requests with a 500 (`times: None` for as long as it stays).
    pub fn fail(&self, method: &str, path_pattern: &str, times: Option<u32>) -> anyhow::Result<()> {
        self.azure.faults().add(FaultRule {
            method: Some(method.into()),
            path_pattern: path_pattern.into(),
            action: FaultAction::Status {
                status: 500,
                code: "InternalServerError".into(),
                message: "injected by the test".into(),
            },
            times,
        })?;
        Ok(())
    }

    /// Resource IDs (lower-cased) of every role assignment Azure holds.
    pub fn assignment_ids(&self) -> Vec<String> {
        self.azure
            .role_assignments()
            .into_iter()
            .map(|ra| {
                format!(
                    "{}/providers/microsoft.authorization/roleassignments/{}",
                    ra.scope, ra.name
                )
                .to_ascii_lowercase()
            })
            .collect()
    }
}

/// An AccessGrant in [`NS`] for the seed identity `identity`, lasting an hour, with no roles yet.
pub fn grant(w: &World, name: &str, identity: &str) -> anyhow::Result<AccessGrant> {
    let mut g = AccessGrant::new(
        name,
        AccessGrantSpec {
            identity: IdentityRef {
                managed_identity: Some(w.identity(identity)?.id.as_str().to_owned()),
                ..Default::default()
            },
            duration: Some("1h".into()),
            justification: Some("in-process test".into()),
            ..Default::default()
        },
    );
    g.metadata.namespace = Some(NS.into());
    Ok(g)
}

/// Builders on a grant fixture, in the style of kube-rs's controller-rs `fixtures.rs`.
pub trait GrantFixture: Sized {
    fn role(self, role: &str, scope: &str) -> Self;
    fn federated(self, service_account: &str) -> Self;
    fn lasting(self, duration: &str) -> Self;
}

impl GrantFixture for AccessGrant {
    fn role(mut self, role: &str, scope: &str) -> Self {
        self.spec.roles.push(RoleRequest {
            role: role.into(),
            scope: scope.into(),
            condition: None,
        });
        self
    }

    fn federated(mut self, service_account: &str) -> Self {
        self.spec.federation = Some(Box::new(Federation {
            service_account: service_account.into(),
            audience: lapse_api::v1alpha1::DEFAULT_AUDIENCE.into(),
        }));
        self
    }

    fn lasting(mut self, duration: &str) -> Self {
        self.spec.duration = Some(duration.into());
        self
    }
}

pub fn phase_of(g: &AccessGrant) -> Option<GrantPhase> {
    g.status.as_ref().map(|s| s.phase)
}

pub fn condition<'g>(g: &'g AccessGrant, type_: &str) -> Option<&'g Condition> {
    g.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

pub fn is_true(g: &AccessGrant, type_: &str) -> bool {
    condition(g, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

pub fn succeeded(e: &AuditEntry) -> bool {
    (200..300).contains(&e.status)
}

/// The IDs (lower-cased) of the Azure objects a grant's status records.
pub fn recorded_ids(g: &AccessGrant) -> Vec<String> {
    let Some(s) = &g.status else {
        return Vec::new();
    };
    s.role_assignments
        .iter()
        .filter_map(|r| r.id.clone())
        .chain(s.federated_credential.iter().filter_map(|f| f.id.clone()))
        .map(|id| id.to_ascii_lowercase())
        .collect()
}

/// A GUID nobody derives: what a person or another tool names a role assignment.
pub fn hand_made_name() -> uuid::Uuid {
    uuid::Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0001)
}

/// The Events recorded on a grant, as `kubectl describe` lists them: (type, reason, message).
pub async fn events(w: &World, name: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let list = Api::<Event>::namespaced(w.client.clone(), NS)
        .list(&Default::default())
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect())
}
