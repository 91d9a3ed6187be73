//! `make chaos`: the seeded chaos campaign against the sandbox (docs/testing.md, "Chaos").
//! Prints the schedule, the faults as they strike and the report; exits 1 when an invariant
//! broke, 2 when the campaign could not run.

use clap::Parser;
use lapse_e2e::chaos::{Campaign, run};

/// Kills the operator, breaks the watches and storms Azure on a schedule drawn from the seed,
/// while grants activate and lapse; then checks overstay, orphans, duplicate PUTs and lost
/// status. The same seed gives the same schedule.
#[derive(Debug, Parser)]
#[command(name = "lapse-chaos")]
struct Args {
    /// The seed every random choice is drawn from: rerun a failing campaign with its seed.
    #[arg(long, env = "LAPSE_CHAOS_SEED", default_value_t = 1)]
    seed: u64,
    /// SIGKILLs of an operator replica (the leader mostly, sometimes the standby).
    #[arg(long, env = "LAPSE_CHAOS_KILLS", default_value_t = 30)]
    kills: usize,
    /// Grants applied over the campaign, each with a lease of 20 to 30 s.
    #[arg(long, env = "LAPSE_CHAOS_GRANTS", default_value_t = 120)]
    grants: usize,
    /// Print the schedule of this seed and exit, without running it.
    #[arg(long)]
    plan_only: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let campaign = Campaign {
        kills: args.kills,
        grants: args.grants,
        ..Campaign::full(args.seed)
    };
    if args.plan_only {
        print!("{}", lapse_e2e::chaos::Schedule::plan(&campaign));
        return std::process::ExitCode::SUCCESS;
    }
    match run(&campaign).await {
        Ok(report) => {
            println!("\n{report}");
            if report.passed() {
                std::process::ExitCode::SUCCESS
            } else {
                eprintln!(
                    "reproduce with: make chaos CHAOS_ARGS=\"--seed {} --kills {} --grants {}\"",
                    args.seed, args.kills, args.grants
                );
                std::process::ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("lapse-chaos: the campaign could not run: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
