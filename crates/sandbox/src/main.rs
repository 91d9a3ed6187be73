//! Binary: `lapse-sandbox up` runs the Kubernetes and Azure simulators on loopback with a seeded tenant;
//! `probe` acts as a workload against a running sandbox and `audit` prints what Azure saw.

#![forbid(unsafe_code)]

mod audit;
mod probe;
mod state;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lapse_sim_azure::{Seed, SimAzure, SimAzureHandle};
use lapse_sim_kube::{Config, SimKube, SimKubeHandle};

#[derive(Debug, Parser)]
#[command(
    name = "lapse-sandbox",
    about = "Simulated Kubernetes and Azure on loopback for tests and demos: no cluster, no Azure account"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start both simulators; write DIR/kubeconfig, DIR/kube-ca.pem, DIR/azure.env,
    /// DIR/auditor.env, DIR/azure-ca.pem and, last, DIR/ready; run until SIGINT/SIGTERM.
    Up {
        /// Directory for the kubeconfig, CA files and the ready marker.
        #[arg(long)]
        state_dir: PathBuf,
        /// Port for the Kubernetes API (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        kube_port: u16,
        /// Port for the Azure simulator: ARM, Entra and Graph (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        azure_port: u16,
        /// Seed file (YAML) for the Azure tenant; when absent, the built-in sandbox tenant
        /// with its estate of standing privileges for `kubectl lapse audit` to find
        /// (`Seed::sandbox_estate`, see docs/sim-azure.md).
        #[arg(long)]
        azure_seed: Option<PathBuf>,
        /// YAML manifests (files or directories of `*.yaml`) to create at start, CRDs first,
        /// e.g. `--apply config/crd`. Repeatable.
        #[arg(long)]
        apply: Vec<PathBuf>,
        /// Lifetime, in seconds, of the access tokens Entra issues to managed identities
        /// (Azure's is about 24 hours; shorter lets a test watch one expire).
        #[arg(long, default_value_t = 24 * 3600)]
        managed_identity_token_lifetime_secs: u64,
        /// Start the tenant without the Entra ID P2 licence PIM needs: every PIM operation
        /// (role assignment schedule requests, schedules, instances) answers 400
        /// `AadPremiumLicenseRequired`, as Azure does.
        #[arg(long)]
        no_pim_licence: bool,
        /// PIM's minimum active duration, in seconds (Azure's is 5 minutes): a shorter schedule
        /// is refused and an assignment cannot be removed within it of its start. Shorter lets
        /// a test or the bench run PIM leases in seconds; tell the operator the same
        /// (`LAPSE_PIM_MINIMUM`).
        #[arg(long, default_value_t = 300)]
        pim_minimum_secs: u64,
        /// Seconds a deleted federated identity credential can still be exchanged for a token
        /// (Azure's delete takes a while to reach every Entra replica; 0, the default, ends it
        /// at once). Such a token's sign-in names the deleted credential.
        #[arg(long, default_value_t = 0)]
        fic_delete_propagation_secs: u64,
    },
    /// Act as a workload of a running sandbox: a ServiceAccount token (audience
    /// api://AzureADTokenExchange), exchanged at Entra for the identity, then one ARM read.
    /// Prints one line; exits 0 when the read answers 200 OK, 1 otherwise.
    Probe {
        /// State directory of a running `lapse-sandbox up`.
        #[arg(long)]
        state_dir: PathBuf,
        /// Namespace of the ServiceAccount.
        #[arg(long)]
        namespace: String,
        /// The ServiceAccount the workload runs as.
        #[arg(long)]
        service_account: String,
        /// User-assigned identity: a name in lapse-demo-rg, or its full ARM ID.
        #[arg(long)]
        identity: String,
        /// ARM ID of the resource to read.
        #[arg(long)]
        resource: String,
        /// api-version of the read.
        #[arg(long, default_value = "2023-01-01")]
        api_version: String,
    },
    /// Print the Azure simulator's audit log of a running sandbox, oldest first: time,
    /// principal, method, shortened path, status.
    Audit {
        /// State directory of a running `lapse-sandbox up`.
        #[arg(long)]
        state_dir: PathBuf,
        /// Only changes (PUT, PATCH, DELETE, and POSTs other than token requests).
        #[arg(long)]
        writes: bool,
    },
}

/// The namespaces every sandbox starts with.
const SEED_NAMESPACES: &[&str] = &["default", "kube-system", "demo"];

/// Everything the sandbox runs: sim-kube, and sim-azure trusting sim-kube's ServiceAccount
/// token issuer so workloads can exchange their tokens.
#[derive(Debug)]
struct Sandbox {
    kube: SimKubeHandle,
    azure: SimAzureHandle,
}

/// The simulated tenant's settings `lapse-sandbox up` takes from its flags.
struct TenantOptions {
    managed_identity_token_lifetime: Duration,
    pim_licensed: bool,
    pim_minimum: Duration,
    fic_delete_propagation: Duration,
}

impl Sandbox {
    async fn start(
        kube_port: u16,
        azure_port: u16,
        azure_seed: Option<&Path>,
        tenant: TenantOptions,
    ) -> anyhow::Result<Self> {
        let kube = SimKube::start(Config {
            bind: SocketAddr::from(([127, 0, 0, 1], kube_port)),
            namespaces: SEED_NAMESPACES.iter().map(|s| (*s).to_owned()).collect(),
            ..Config::default()
        })
        .await
        .context("starting sim-kube")?;
        let seed = match azure_seed {
            Some(path) => Seed::from_file(path)
                .with_context(|| format!("reading the Azure seed {}", path.display()))?,
            None => Seed::sandbox_estate(),
        };
        let azure = SimAzure::start(
            lapse_sim_azure::Config {
                bind: SocketAddr::from(([127, 0, 0, 1], azure_port)),
                // sim-azure fetches the issuer's JWKS over HTTPS from sim-kube.
                trusted_ca_pems: vec![kube.ca_pem().to_owned()],
                managed_identity_token_lifetime: tenant.managed_identity_token_lifetime,
                pim_licensed: tenant.pim_licensed,
                pim_minimum_duration: tenant.pim_minimum,
                fic_delete_propagation_delay: tenant.fic_delete_propagation,
                ..lapse_sim_azure::Config::default()
            },
            seed,
        )
        .await
        .context("starting sim-azure")?;
        Ok(Self { kube, azure })
    }

    /// Creates every object in the manifests, CustomResourceDefinitions first so that their
    /// custom resources can follow.
    fn apply(&self, paths: &[PathBuf]) -> anyhow::Result<()> {
        let mut objects = Vec::new();
        for path in paths {
            for file in manifest_files(path)? {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                    let v: serde_json::Value = serde::Deserialize::deserialize(doc)
                        .with_context(|| format!("parsing {}", file.display()))?;
                    if v.is_object() {
                        objects.push((file.clone(), v));
                    }
                }
            }
        }
        objects.sort_by_key(|(_, v)| v["kind"] != "CustomResourceDefinition");
        for (file, obj) in objects {
            self.kube
                .create(obj)
                .with_context(|| format!("applying {}", file.display()))?;
        }
        Ok(())
    }

    fn write_state(&self, dir: &Path) -> anyhow::Result<()> {
        write_atomic(&dir.join("kube-ca.pem"), self.kube.ca_pem())?;
        write_atomic(&dir.join("kubeconfig"), &self.kube.kubeconfig())?;
        self.azure
            .write_env(dir, self.kube.issuer())
            .context("writing azure.env and azure-ca.pem")?;
        if let Some(auditor) = self.azure.credentials(AUDITOR) {
            let azure_env =
                std::fs::read_to_string(dir.join("azure.env")).context("reading back azure.env")?;
            write_atomic(&dir.join("auditor.env"), &auditor_env(&azure_env, &auditor))?;
        }
        // Last: readers wait for this file, so everything above is complete when it appears.
        write_atomic(
            &dir.join("ready"),
            &format!("kube={}\nazure={}\n", self.kube.url(), self.azure.url()),
        )?;
        Ok(())
    }

    async fn stop(self) {
        self.azure.shutdown().await;
        self.kube.shutdown().await;
    }
}

/// The principal of the sandbox's estate seed that `kubectl lapse audit` runs as: Reader on the
/// subscription and Graph `Application.Read.All`, what the audit's documentation asks for.
const AUDITOR: &str = "lapse-auditor";

/// `azure.env` with the auditor's client ID and secret in place of the operator's: source it
/// and `kubectl lapse audit` reads the sandbox as an auditor would.
fn auditor_env(azure_env: &str, auditor: &lapse_sim_azure::ClientCredentials) -> String {
    let quote = |v: &str| format!("'{}'", v.replace('\'', "'\\''"));
    let mut out = format!(
        "# Written by lapse-sandbox: azure.env as the estate auditor ({AUDITOR}: Reader on the \
         subscription, Graph Application.Read.All).\n"
    );
    for line in azure_env.lines().filter(|l| !l.starts_with('#')) {
        let replaced = match line.split_once('=').map(|(k, _)| k) {
            Some("export AZURE_CLIENT_ID") => {
                format!("export AZURE_CLIENT_ID={}", quote(&auditor.client_id))
            }
            Some("export AZURE_CLIENT_SECRET") => format!(
                "export AZURE_CLIENT_SECRET={}",
                quote(auditor.client_secret.as_deref().unwrap_or_default())
            ),
            _ => line.to_owned(),
        };
        out.push_str(&replaced);
        out.push('\n');
    }
    out
}

/// A manifest file, or the `*.yaml`/`*.yml` files of a directory in name order.
fn manifest_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading directory {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write_atomic(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // kube and reqwest both use rustls; with more than one crypto provider linked in, one
    // must be chosen process-wide.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Cli { command } = Cli::parse();
    match command {
        Command::Up {
            state_dir,
            kube_port,
            azure_port,
            azure_seed,
            apply,
            managed_identity_token_lifetime_secs,
            no_pim_licence,
            pim_minimum_secs,
            fic_delete_propagation_secs,
        } => {
            std::fs::create_dir_all(&state_dir)
                .with_context(|| format!("creating state dir {}", state_dir.display()))?;
            // A stale marker from an earlier run must not make readers think we are up.
            let ready = state_dir.join("ready");
            if ready.exists() {
                std::fs::remove_file(&ready)
                    .with_context(|| format!("removing stale {}", ready.display()))?;
            }
            let sandbox = Sandbox::start(
                kube_port,
                azure_port,
                azure_seed.as_deref(),
                TenantOptions {
                    managed_identity_token_lifetime: Duration::from_secs(
                        managed_identity_token_lifetime_secs,
                    ),
                    pim_licensed: !no_pim_licence,
                    pim_minimum: Duration::from_secs(pim_minimum_secs),
                    fic_delete_propagation: Duration::from_secs(fic_delete_propagation_secs),
                },
            )
            .await?;
            sandbox.apply(&apply)?;
            sandbox.write_state(&state_dir)?;
            tracing::info!(kube = %sandbox.kube.url(), azure = %sandbox.azure.url(), state_dir = %state_dir.display(), "sandbox ready");
            wait_for_signal().await?;
            tracing::info!("stopping");
            let _ = std::fs::remove_file(&ready);
            sandbox.stop().await;
        }
        Command::Probe {
            state_dir,
            namespace,
            service_account,
            identity,
            resource,
            api_version,
        } => {
            let state = state::SandboxState::load(&state_dir)?;
            let outcome = probe::probe(
                &state,
                &probe::ProbeArgs {
                    namespace: &namespace,
                    service_account: &service_account,
                    identity: &identity,
                    resource: &resource,
                    api_version: &api_version,
                },
            )
            .await?;
            println!("{}", outcome.line(&resource));
            if !outcome.allowed() {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        Command::Audit { state_dir, writes } => {
            let state = state::SandboxState::load(&state_dir)?;
            let lines = audit::audit(&state, writes).await?;
            if lines.is_empty() {
                eprintln!("(the audit log has no matching entries)");
            }
            for line in lines {
                println!("{line}");
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auditor_env_is_azure_env_with_the_auditors_client() {
        let azure_env = "# header\nexport AZURE_TENANT_ID='t'\nexport AZURE_CLIENT_ID='operator'\nexport AZURE_CLIENT_SECRET='op-secret'\nexport LAPSE_ARM_ENDPOINT='https://127.0.0.1:1'\n";
        let auditor = lapse_sim_azure::ClientCredentials {
            tenant_id: "t".into(),
            client_id: "auditor".into(),
            client_secret: Some("it's".into()),
            object_id: "o".into(),
        };
        let text = auditor_env(azure_env, &auditor);
        assert!(
            text.contains("export AZURE_CLIENT_ID='auditor'\n"),
            "{text}"
        );
        assert!(
            text.contains("export AZURE_CLIENT_SECRET='it'\\''s'\n"),
            "{text}"
        );
        assert!(text.contains("export AZURE_TENANT_ID='t'\n"), "{text}");
        assert!(text.contains("LAPSE_ARM_ENDPOINT"), "{text}");
        assert!(!text.contains("op-secret"), "{text}");
    }
}
