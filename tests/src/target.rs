//! Where the suites run: a `lapse-sandbox` the harness starts and owns (the default), or a
//! Kubernetes cluster and Azure tenant given by the environment (`LAPSE_E2E_TARGET=external`).
//!
//! The suites are written once. What differs between the two is gathered here: where the
//! settings come from, the names of the Azure things the suites use ([`Fixtures`]), how long
//! Azure may take to make a change visible ([`Timing`]), and which test-only powers exist
//! ([`Capability`]): a real tenant has no request log to read and no faults to inject, so the
//! assertions that need them are left out there, and the tests that need them are left out by
//! the `external` nextest profile's filter, which reports them as skipped (never as passed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use crate::operator::{binary, scratch_dir};

/// Selects the target: unset or `sandbox`, or `external`.
pub const TARGET_VAR: &str = "LAPSE_E2E_TARGET";

/// A power the sandbox gives the suites and a real cluster and tenant do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Azure's own log of every request it saw (sim-azure's audit), to count writes and time
    /// deletes to the millisecond.
    AuditLog,
    /// Injected failures: ARM throttling, 5xx, latency and refusals; dropped and compacted
    /// watches and apiserver restarts.
    Faults,
    /// A cluster the suites may reshape: delete the CRDs, enforce RBAC for a ServiceAccount
    /// they make up, install and uninstall a Helm release.
    DisposableCluster,
    /// An Azure tenant the suites may reshape: replace the operator's own role assignments.
    DisposableTenant,
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::AuditLog => "Azure's request log",
            Self::Faults => "fault injection",
            Self::DisposableCluster => "a cluster the suite may reshape",
            Self::DisposableTenant => "an Azure tenant the suite may reshape",
        })
    }
}

/// Whether the environment selects the external target.
pub fn external_selected() -> bool {
    std::env::var(TARGET_VAR).is_ok_and(|v| v.eq_ignore_ascii_case("external"))
}

/// For tests that cannot run on the external target. `make e2e-external` leaves them out (the
/// `external` profile's default-filter in `.config/nextest.toml`, so nextest counts them as
/// skipped); run there anyway, they fail saying why rather than pass without testing anything.
pub fn sandbox_only(needs: Capability, why: &str) -> anyhow::Result<()> {
    if external_selected() {
        bail!(
            "this test needs {needs} ({why}), which the external target lacks; make \
             e2e-external leaves it out (.config/nextest.toml, profile external)"
        );
    }
    Ok(())
}

/// Names of the Azure things the suites grant and read.
#[derive(Clone, Debug)]
pub struct Fixtures {
    pub subscription: String,
    /// A resource group holding the identities and the storage account.
    pub resource_group: String,
    /// A storage account in the group: the resource a workload reads.
    pub storage_account: String,
    /// User-assigned identities in the group. The first is the workload's; tests that need two
    /// use the second, and are skipped when there is only one.
    pub identities: Vec<String>,
    /// Display name of an app registration the operator's service principal owns; the Graph
    /// test is skipped without one.
    pub application: Option<String>,
}

impl Fixtures {
    /// The resource ID of the resource group.
    pub fn resource_group_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.subscription, self.resource_group
        )
    }

    /// The resource ID of the storage account.
    pub fn storage_account_id(&self) -> String {
        format!(
            "{}/providers/Microsoft.Storage/storageAccounts/{}",
            self.resource_group_id(),
            self.storage_account
        )
    }

    /// The resource ID of a user-assigned identity in the group.
    pub fn identity_id(&self, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
            self.resource_group_id()
        )
    }

    /// The workload's identity (the first).
    pub fn identity(&self) -> &str {
        self.identities.first().map_or("", String::as_str)
    }

    /// The second identity, when the target has one.
    pub fn second_identity(&self) -> Option<&str> {
        self.identities.get(1).map(String::as_str)
    }
}

/// How the suites' clocks stretch on a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Multiplies every lease, window, policy ceiling and wait the suites use. Real Azure
    /// takes seconds to minutes to make a role assignment or FIC effective, so leases of
    /// seconds would end before a workload could use them.
    pub scale: u32,
    /// How long Azure may take to make a change visible to a workload (RBAC and FIC
    /// propagation). Zero means at once: the sandbox's access checks are single, strict reads.
    pub propagation: Duration,
}

impl Timing {
    pub const SANDBOX: Self = Self {
        scale: 1,
        propagation: Duration::ZERO,
    };

    /// `d`, stretched.
    pub fn scaled(&self, d: Duration) -> Duration {
        d * self.scale
    }

    /// `secs` seconds, stretched, as a Go duration for a manifest (`"8s"` → `"240s"`).
    pub fn lease(&self, secs: u64) -> String {
        format!("{}s", secs * u64::from(self.scale))
    }
}

/// The sandbox's names (`lapse-sandbox`'s seed).
pub fn sandbox_fixtures(subscription: &str) -> Fixtures {
    Fixtures {
        subscription: subscription.to_owned(),
        resource_group: "lapse-demo-rg".into(),
        storage_account: "lapsedemodata".into(),
        identities: vec!["backup-runner".into(), "report-agent".into()],
        application: Some("lapse-demo-app".into()),
    }
}

/// A running `lapse-sandbox up`.
#[derive(Debug)]
pub struct Sandbox {
    pub dir: PathBuf,
    child: Child,
    /// `azure.env`, parsed.
    pub azure: HashMap<String, String>,
    pub kubeconfig: PathBuf,
}

impl Sandbox {
    pub fn start() -> anyhow::Result<Self> {
        let dir = scratch_dir("lapse-e2e")?;
        let log = std::fs::File::create(dir.join("sandbox.log"))?;
        let child = Command::new(binary("lapse-sandbox")?)
            .args(["up", "--state-dir"])
            .arg(&dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting lapse-sandbox")?;
        let mut sb = Self {
            azure: HashMap::new(),
            kubeconfig: dir.join("kubeconfig"),
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !sb.dir.join("ready").exists() {
            if let Some(status) = sb.child.try_wait()? {
                bail!(
                    "lapse-sandbox exited with {status}: {}",
                    std::fs::read_to_string(sb.dir.join("sandbox.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("lapse-sandbox not ready after 60s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        sb.azure = parse_env_file(
            &std::fs::read_to_string(sb.dir.join("azure.env")).context("reading azure.env")?,
        );
        Ok(sb)
    }

    pub fn env(&self, key: &str) -> anyhow::Result<&str> {
        self.azure
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("azure.env has no {key}"))
    }

    /// The settings a user would export to point the suites at this sandbox as if it were an
    /// external cluster and tenant.
    pub fn as_external_settings(&self) -> HashMap<String, String> {
        let mut vars = self.azure.clone();
        vars.insert(
            "KUBECONFIG".into(),
            self.kubeconfig.to_string_lossy().into_owned(),
        );
        let subscription = self.azure.get("AZURE_SUBSCRIPTION_ID").cloned();
        let fx = sandbox_fixtures(subscription.as_deref().unwrap_or_default());
        vars.insert("LAPSE_E2E_RESOURCE_GROUP".into(), fx.resource_group);
        vars.insert("LAPSE_E2E_STORAGE_ACCOUNT".into(), fx.storage_account);
        vars.insert("LAPSE_E2E_IDENTITIES".into(), fx.identities.join(","));
        if let Some(app) = fx.application {
            vars.insert("LAPSE_E2E_APPLICATION".into(), app);
        }
        vars
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("LAPSE_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Parses a shell-sourceable `KEY=value` file (values optionally single- or double-quoted).
pub fn parse_env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("export ").unwrap_or(l);
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// An external cluster and tenant, as the environment describes them.
#[derive(Clone, Debug)]
pub struct ExternalSettings {
    pub kubeconfig: PathBuf,
    /// What the operator and the harness need of Azure: tenant, credentials, subscription,
    /// endpoints, the OIDC issuer, an optional CA bundle. Passed to the operator as they are.
    pub azure: HashMap<String, String>,
    pub fixtures: Fixtures,
    pub timing: Timing,
    pub cluster: String,
    /// Where the operator keeps its leader-election Lease.
    pub operator_namespace: String,
}

/// Settings the external target cannot do without.
const REQUIRED: [(&str, &str); 9] = [
    ("KUBECONFIG", "the kubeconfig of a disposable test cluster"),
    ("AZURE_TENANT_ID", "the Entra tenant"),
    ("AZURE_CLIENT_ID", "the operator's service principal"),
    (
        "AZURE_CLIENT_SECRET",
        "the operator's client secret (the harness also reads Azure as the operator)",
    ),
    ("AZURE_SUBSCRIPTION_ID", "the subscription of the fixtures"),
    (
        "LAPSE_OIDC_ISSUER",
        "the cluster's ServiceAccount issuer, published where Entra can fetch it",
    ),
    (
        "LAPSE_E2E_RESOURCE_GROUP",
        "a resource group holding the identities and the storage account",
    ),
    (
        "LAPSE_E2E_STORAGE_ACCOUNT",
        "a storage account in that group, the resource the workload reads",
    ),
    (
        "LAPSE_E2E_IDENTITIES",
        "comma-separated user-assigned identities in that group; the first is the workload's",
    ),
];

/// Settings passed on to the operator when set.
const PASSED_ON: [&str; 5] = [
    "LAPSE_AZURE_CLOUD",
    "LAPSE_ARM_ENDPOINT",
    "LAPSE_GRAPH_ENDPOINT",
    "AZURE_AUTHORITY_HOST",
    "LAPSE_AZURE_CA_BUNDLE",
];

impl ExternalSettings {
    /// Reads the settings through `var` (the process environment, or a map in tests). Every
    /// error names the variable and what it is for.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let missing: Vec<String> = REQUIRED
            .iter()
            .filter(|(k, _)| get(k).is_none())
            .map(|(k, why)| format!("  {k}: {why}"))
            .collect();
        if !missing.is_empty() {
            bail!(
                "{TARGET_VAR}=external needs these settings (docs/testing.md):\n{}",
                missing.join("\n")
            );
        }
        let required = |k: &str| get(k).unwrap_or_default();
        let mut azure: HashMap<String, String> = REQUIRED
            .iter()
            .filter(|(k, _)| k.starts_with("AZURE_") || k.starts_with("LAPSE_OIDC"))
            .map(|(k, _)| ((*k).to_owned(), required(k)))
            .collect();
        for k in PASSED_ON {
            if let Some(v) = get(k) {
                azure.insert(k.to_owned(), v);
            }
        }
        // The harness reads ARM and Entra itself, so it needs the endpoints the operator
        // would derive from the cloud name.
        let cloud = get("LAPSE_AZURE_CLOUD").unwrap_or_else(|| "public".into());
        let defaults = match cloud.as_str() {
            "public" => Some((
                "https://management.azure.com",
                "https://graph.microsoft.com",
                "https://login.microsoftonline.com",
            )),
            "us-government" => Some((
                "https://management.usgovcloudapi.net",
                "https://graph.microsoft.us",
                "https://login.microsoftonline.us",
            )),
            "china" => Some((
                "https://management.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn",
                "https://login.chinacloudapi.cn",
            )),
            _ => None,
        };
        for (i, k) in [
            "LAPSE_ARM_ENDPOINT",
            "LAPSE_GRAPH_ENDPOINT",
            "AZURE_AUTHORITY_HOST",
        ]
        .into_iter()
        .enumerate()
        {
            if azure.contains_key(k) {
                continue;
            }
            let Some(d) = defaults else {
                bail!("{k}: required with LAPSE_AZURE_CLOUD={cloud}");
            };
            azure.insert(k.into(), [d.0, d.1, d.2][i].into());
        }

        let identities: Vec<String> = required("LAPSE_E2E_IDENTITIES")
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if identities.is_empty() {
            bail!("LAPSE_E2E_IDENTITIES: names no identity");
        }
        let scale = match get("LAPSE_E2E_TIME_SCALE") {
            None => 30,
            Some(v) => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    anyhow!("LAPSE_E2E_TIME_SCALE: {v:?} is not a whole number of at least 1")
                })?,
        };
        let propagation = match get("LAPSE_E2E_PROPAGATION") {
            None => Duration::from_secs(600),
            Some(v) => lapse_api::duration::LeaseDuration::parse(v.trim())
                .map_err(|e| anyhow!("LAPSE_E2E_PROPAGATION: {v:?}: {e}"))?
                .to_std(),
        };
        Ok(Self {
            kubeconfig: PathBuf::from(required("KUBECONFIG")),
            fixtures: Fixtures {
                subscription: required("AZURE_SUBSCRIPTION_ID"),
                resource_group: required("LAPSE_E2E_RESOURCE_GROUP"),
                storage_account: required("LAPSE_E2E_STORAGE_ACCOUNT"),
                identities,
                application: get("LAPSE_E2E_APPLICATION"),
            },
            azure,
            timing: Timing { scale, propagation },
            cluster: get("LAPSE_E2E_CLUSTER_NAME").unwrap_or_else(|| "e2e".into()),
            operator_namespace: get("LAPSE_E2E_OPERATOR_NAMESPACE")
                .unwrap_or_else(|| "default".into()),
        })
    }

    /// From the process environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

/// An external target in use: its settings, a scratch directory for logs, and the lock that
/// keeps suites on one cluster from running at once (they share namespaces, policies and the
/// cluster name).
#[derive(Debug)]
pub struct External {
    pub settings: ExternalSettings,
    pub dir: PathBuf,
    _lock: std::fs::File,
}

impl External {
    /// Waits for the target's lock (one suite at a time per machine), then takes it.
    pub fn acquire(settings: ExternalSettings) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join("lapse-e2e-external.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(Self {
            settings,
            dir: scratch_dir("lapse-e2e-external")?,
            _lock: lock,
        })
    }
}

impl Drop for External {
    fn drop(&mut self) {
        if std::env::var_os("LAPSE_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Where a [`crate::World`] runs.
#[derive(Debug)]
pub enum Target {
    Sandbox(Sandbox),
    External(External),
}

impl Target {
    /// The Azure settings the operator runs with (and the harness reads Azure with).
    pub fn azure(&self) -> &HashMap<String, String> {
        match self {
            Self::Sandbox(sb) => &sb.azure,
            Self::External(x) => &x.settings.azure,
        }
    }

    pub fn env(&self, key: &str) -> anyhow::Result<&str> {
        self.azure()
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("the target's Azure settings have no {key}"))
    }

    pub fn kubeconfig(&self) -> &Path {
        match self {
            Self::Sandbox(sb) => &sb.kubeconfig,
            Self::External(x) => &x.settings.kubeconfig,
        }
    }

    /// A scratch directory for logs and generated files.
    pub fn dir(&self) -> &Path {
        match self {
            Self::Sandbox(sb) => &sb.dir,
            Self::External(x) => &x.dir,
        }
    }

    pub fn has(&self, cap: Capability) -> bool {
        match self {
            Self::Sandbox(_) => true,
            Self::External(_) => {
                let _ = cap;
                false
            }
        }
    }

    /// The sandbox, for the sandbox-only powers.
    pub fn sandbox(&self) -> anyhow::Result<&Sandbox> {
        match self {
            Self::Sandbox(sb) => Ok(sb),
            Self::External(_) => bail!("this needs the sandbox; the target is external"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> HashMap<String, String> {
        REQUIRED
            .iter()
            .map(|(k, _)| ((*k).to_owned(), format!("value-of-{k}")))
            .chain([("LAPSE_E2E_IDENTITIES".to_owned(), "a, b".to_owned())])
            .collect()
    }

    #[test]
    fn missing_settings_are_all_named_with_what_they_are_for() {
        let mut vars = full();
        vars.remove("AZURE_CLIENT_SECRET");
        vars.insert("LAPSE_E2E_STORAGE_ACCOUNT".into(), "  ".into());
        let err = ExternalSettings::from_lookup(|k| vars.get(k).cloned())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("AZURE_CLIENT_SECRET: the operator's client secret"),
            "{err}"
        );
        assert!(
            err.contains("LAPSE_E2E_STORAGE_ACCOUNT: a storage account"),
            "{err}"
        );
        assert!(!err.contains("AZURE_TENANT_ID"), "{err}");
    }

    #[test]
    fn defaults_are_the_public_cloud_a_stretched_clock_and_cluster_e2e() -> anyhow::Result<()> {
        let vars = full();
        let s = ExternalSettings::from_lookup(|k| vars.get(k).cloned())?;
        assert_eq!(
            s.azure["LAPSE_ARM_ENDPOINT"],
            "https://management.azure.com"
        );
        assert_eq!(
            s.azure["AZURE_AUTHORITY_HOST"],
            "https://login.microsoftonline.com"
        );
        assert_eq!(s.fixtures.identities, ["a", "b"]);
        assert_eq!(s.fixtures.application, None);
        assert_eq!(s.timing.scale, 30);
        assert_eq!(s.timing.propagation, Duration::from_secs(600));
        assert_eq!(s.timing.lease(8), "240s");
        assert_eq!(s.cluster, "e2e");
        assert!(!s.azure.contains_key("LAPSE_E2E_IDENTITIES"));
        Ok(())
    }

    #[test]
    fn a_custom_cloud_needs_every_endpoint_and_bad_numbers_are_named() {
        let mut vars = full();
        vars.insert("LAPSE_AZURE_CLOUD".into(), "custom".into());
        vars.insert("LAPSE_ARM_ENDPOINT".into(), "https://arm.example".into());
        let err = ExternalSettings::from_lookup(|k| vars.get(k).cloned())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("LAPSE_GRAPH_ENDPOINT: required"), "{err}");

        let mut vars = full();
        vars.insert("LAPSE_E2E_TIME_SCALE".into(), "0".into());
        let err = ExternalSettings::from_lookup(|k| vars.get(k).cloned())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("LAPSE_E2E_TIME_SCALE: \"0\""), "{err}");
    }

    #[test]
    fn a_sandbox_described_as_external_settings_parses_back_to_its_fixtures() -> anyhow::Result<()>
    {
        let mut vars: HashMap<String, String> = parse_env_file(
            "export AZURE_TENANT_ID='t'\nexport AZURE_SUBSCRIPTION_ID='s'\nexport AZURE_CLIENT_ID='c'\n\
             export AZURE_CLIENT_SECRET='x'\nexport LAPSE_OIDC_ISSUER='https://i'\n\
             export LAPSE_ARM_ENDPOINT='https://127.0.0.1:1'\nexport LAPSE_GRAPH_ENDPOINT='https://127.0.0.1:1'\n\
             export AZURE_AUTHORITY_HOST='https://127.0.0.1:1'\n",
        );
        let fx = sandbox_fixtures("s");
        vars.insert("KUBECONFIG".into(), "/k".into());
        vars.insert("LAPSE_E2E_RESOURCE_GROUP".into(), fx.resource_group.clone());
        vars.insert(
            "LAPSE_E2E_STORAGE_ACCOUNT".into(),
            fx.storage_account.clone(),
        );
        vars.insert("LAPSE_E2E_IDENTITIES".into(), fx.identities.join(","));
        let s = ExternalSettings::from_lookup(|k| vars.get(k).cloned())?;
        assert_eq!(s.fixtures.storage_account_id(), fx.storage_account_id());
        assert_eq!(s.fixtures.identity(), "backup-runner");
        assert_eq!(s.azure["LAPSE_ARM_ENDPOINT"], "https://127.0.0.1:1");
        Ok(())
    }

    /// Every test that calls `sandbox_only` is left out by the `external` profile's filter (so a
    /// run there reports it skipped rather than failing it), and the filter names no test that
    /// does not exist or does not need the sandbox.
    #[test]
    fn the_external_filter_lists_exactly_the_sandbox_only_tests() -> anyhow::Result<()> {
        let root = crate::workspace_root();
        let config = std::fs::read_to_string(root.join(".config/nextest.toml"))?;
        let external = config
            .split("[profile.external]")
            .nth(1)
            .context("no [profile.external] in .config/nextest.toml")?;
        let filter = external
            .split("default-filter = \"\"\"")
            .nth(1)
            .and_then(|rest| rest.split("\"\"\"").next())
            .context("no default-filter in the external profile")?;
        let mut needed = Vec::new();
        for entry in std::fs::read_dir(root.join("tests/e2e"))? {
            let path = entry?.path();
            // Shared modules (tests/e2e/support/) are no test binary of their own.
            if !path.is_file() {
                continue;
            }
            let binary = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let text = std::fs::read_to_string(&path)?;
            let mut current = None;
            for line in text.lines() {
                if let Some(name) = line
                    .split("async fn ")
                    .nth(1)
                    .or_else(|| line.trim_start().strip_prefix("fn "))
                    .and_then(|rest| rest.split(['(', '<']).next())
                {
                    current = Some(name.trim().to_owned());
                }
                let call = line.trim_start();
                if call.starts_with("sandbox_only(") || call.starts_with("lapse_e2e::sandbox_only(")
                {
                    let name = current.clone().context("sandbox_only outside a function")?;
                    needed.push((binary.clone(), name));
                }
            }
        }
        assert!(needed.len() >= 6, "found only {needed:?}");
        for (binary, name) in &needed {
            assert!(
                filter.contains(&format!("binary({binary})"))
                    || filter.contains(&format!("test(={name})")),
                "{binary}::{name} calls sandbox_only but the external profile's default-filter \
                 does not leave it out"
            );
        }
        for listed in filter.split("test(=").skip(1) {
            let name = listed.split(')').next().unwrap_or_default();
            assert!(
                needed.iter().any(|(_, n)| n == name),
                "the external filter lists {name}, which does not call sandbox_only"
            );
        }
        Ok(())
    }
}
