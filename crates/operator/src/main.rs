//! `lapse-operator`: the lapse Kubernetes operator binary.
#![forbid(unsafe_code)]

mod crd;

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
