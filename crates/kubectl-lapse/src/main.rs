//! kubectl plugin for lapse: list, describe, request, extend, revoke, approve and deny
//! AccessGrants, what a namespace may request, and the estate audit of Azure
//! (docs/kubectl-lapse.md).
//!
//! Thin on purpose: parse the command line, connect, hand over to the command's module, map the
//! outcome to the documented exit code ([`cli::EXIT_CODES`]).

#![forbid(unsafe_code)]

mod approve;
mod audit;
mod change;
mod check;
mod cli;
mod client;
mod describe;
mod exit;
mod list;
mod output;
mod policies;
mod request;
mod summary;
mod table;
mod time;
mod wait;

use std::process::ExitCode;

use clap::Parser as _;
use lapse_api::v1alpha1::ApprovalDecision;

use cli::{Cli, Command};
use client::Kube;

fn main() -> ExitCode {
    // Usage errors exit 2, --help and --version 0: clap's own codes are the documented ones.
    let cli = Cli::parse();
    // kube's rustls uses ring (as lapse-operator does); another provider may already be set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = exit::code_of(&e);
            eprintln!("{}: {e:#}", exit::label_of(&e));
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = cli.global.output;
    // Commands that need no cluster.
    match &cli.command {
        Command::Completion(a) => {
            cli::completion(a.shell);
            return Ok(());
        }
        // The audit reads Azure and, when it can, the cluster: it connects itself.
        Command::Audit(a) => return audit::run(&cli.global, a, out).await,
        Command::Version => {
            let version = env!("CARGO_PKG_VERSION");
            return match out {
                Some(format) => output::print(format, &serde_json::json!({"version": version})),
                None => {
                    println!("kubectl-lapse {version}");
                    Ok(())
                }
            };
        }
        _ => {}
    }
    let kube = Kube::connect(&cli.global).await?;
    match &cli.command {
        Command::List(a) => list::run(&kube, a, out).await,
        Command::Describe(a) => describe::run(&kube, &a.name, out).await,
        Command::Request(a) => request::run(&kube, a, out).await,
        Command::Extend(a) => change::extend(&kube, a, out).await,
        Command::Revoke(a) => change::revoke(&kube, a, out).await,
        Command::Pending => approve::pending(&kube, out).await,
        Command::Approve(a) => {
            approve::decide(
                &kube,
                &a.name,
                ApprovalDecision::Approve,
                a.comment.as_deref(),
                out,
            )
            .await
        }
        Command::Deny(a) => {
            approve::decide(
                &kube,
                &a.name,
                ApprovalDecision::Deny,
                Some(&a.comment),
                out,
            )
            .await
        }
        Command::Policies => policies::run(&kube, out).await,
        Command::Completion(_) | Command::Version | Command::Audit(_) => Ok(()),
    }
}
