//! `lapse-operator`: the lapse Kubernetes operator binary.
#![forbid(unsafe_code)]

mod azure_args;
mod azure_role;
mod bridge;
mod check;
mod crd;
mod policies;
mod run;
mod serve;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// jemalloc rather than the C library's malloc: glibc kept the pages a burst of activations
/// freed, 9 MiB more RSS at 2,000 leases (docs/performance.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Just-in-time, time-bound Azure access for Kubernetes workload identities.
#[derive(Debug, Parser)]
#[command(name = "lapse-operator", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator: reconcile AccessGrants into Azure and end every lease on time.
    ///
    /// Every option also reads an environment variable (shown with each), so against the
    /// sandbox `set -a; . DIR/azure.env; KUBECONFIG=DIR/kubeconfig LAPSE_CLUSTER_NAME=dev
    /// lapse-operator run` needs no flags. Start-up fails fast, naming the setting, on bad
    /// configuration or missing CRDs.
    Run(Box<run::RunArgs>),
    /// Print the lapse CustomResourceDefinitions (AccessPolicy, AccessGrant) as YAML.
    ///
    /// Without options, writes one multi-document YAML stream to stdout, policies first, ready
    /// for `lapse-operator crd | kubectl apply --server-side -f -`. The output is deterministic:
    /// the same binary always prints the same bytes.
    Crd {
        /// Write one file per CRD (`<group>_<plural>.yaml`) into this directory instead of
        /// printing; the directory is created if missing. `make crds` uses it for config/crd/.
        #[arg(long, short = 'o', value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
    /// Print the Azure role assignments the operator's own identity needs for a set of
    /// AccessPolicies, and no more.
    ///
    /// Role Based Access Control Administrator at each scope the policies allow, with an ABAC
    /// condition (conditionVersion 2.0) that lets it create and delete assignments of only the
    /// roles the policies name, and only for service principals; a custom role to read role
    /// assignments, role definitions and identities at each subscription; and a custom role to
    /// manage federated identity credentials on the identities the policies let grants federate
    /// (not Managed Identity Contributor, which can also delete the identities). Role names must
    /// be built-in ones; write a custom role as its GUID. Prints `az` commands (a shell script)
    /// or, with `-o json`, ARM's request bodies.
    AzureRole(azure_role::AzureRoleArgs),
    /// Check, with ARM's permissions API, that the operator's own identity has every Azure
    /// action the AccessPolicies need, and name each missing one.
    ///
    /// Uses the same Azure settings (flags and environment) as `run`. Policies come from
    /// --policies, else from the cluster. Exit status: 0 when everything is granted, 2 when an
    /// action is missing or a scope could not be checked, 1 on any other error. ABAC conditions
    /// are not visible to this check. `run` logs the same check as warnings at start-up.
    Check(Box<check::CheckArgs>),
    /// Approve and deny from Slack and Teams: an HTTP server for Slack interactivity requests
    /// (POST /slack/actions) and Teams outgoing-webhook messages (POST /teams/actions).
    ///
    /// Each request's signature is verified (Slack: X-Slack-Signature over the timestamp and
    /// body with the app's signing secret; Teams: the outgoing webhook's HMAC), its timestamp
    /// must be within five minutes and it is acted on once. The chat user is mapped to a
    /// Kubernetes user through --users, and the AccessApproval is created impersonating that
    /// user, so the API server's RBAC and the approver admission policy judge the real approver:
    /// the bridge's own RBAC allows only impersonating the mapped users and groups. Refusals
    /// (bad signature, stale timestamp, replay, unknown user) are answered in words, counted in
    /// lapse_bridge_requests_total and create nothing. docs/approval.md, "Approve from Slack or
    /// Teams", shows the set-up.
    ApprovalBridge(Box<bridge::BridgeArgs>),
}

/// A multi-threaded runtime, with one rustls crypto provider chosen process-wide: both are
/// linked in (kube uses ring, the Azure SDK's HTTP stack aws-lc), so no TLS config has to guess.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            runtime()?.block_on(run::run(*args))?;
        }
        Command::AzureRole(args) => azure_role::run(&args)?,
        Command::ApprovalBridge(args) => {
            runtime()?.block_on(bridge::run(*args))?;
        }
        Command::Check(args) => {
            if !runtime()?.block_on(check::run(*args))? {
                return Ok(ExitCode::from(2));
            }
        }
        Command::Crd { output_dir: None } => {
            let text = crd::render(&crd::crds())?;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .context("writing the CRDs to stdout")?;
        }
        Command::Crd {
            output_dir: Some(dir),
        } => {
            for path in crd::write_dir(&dir, &crd::crds())? {
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
