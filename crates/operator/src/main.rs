//! `lapse-operator`: the lapse Kubernetes operator binary.
#![forbid(unsafe_code)]

mod crd;
mod run;
mod serve;

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            // Both rustls crypto providers are linked in (kube uses ring, the Azure SDK's HTTP
            // stack aws-lc); pick one process-wide so no TLS config has to guess.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(run::run(*args))?;
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
    Ok(())
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
