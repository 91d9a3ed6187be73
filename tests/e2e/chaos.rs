//! The short chaos campaign (`make chaos` runs the full one): a few SIGKILLs of the leader and
//! the standby, a failover, watch drops, a compaction, a sim-kube restart and each kind of
//! Azure fault while eight grants activate and lapse; every invariant must hold.

use lapse_e2e::chaos::{Campaign, run};
use lapse_e2e::{Capability, sandbox_only};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_chaos_campaign_breaks_no_invariant() -> anyhow::Result<()> {
    sandbox_only(
        Capability::Faults,
        "kills operators, restarts sim-kube and injects Azure faults",
    )?;
    let report = run(&Campaign::short(1)).await?;
    println!("{report}");
    assert!(report.passed(), "{report}");
    // It did what it says: kills, each fault kind, and every grant seen through.
    let kills: usize = report
        .faults
        .iter()
        .filter(|(kind, _)| kind.starts_with("SIGKILL"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(kills, 4, "{report}");
    assert!(report.faults.len() >= 9, "fault kinds: {:?}", report.faults);
    assert_eq!(report.grants_processed + report.grants_unseen.len(), 8);
    Ok(())
}
