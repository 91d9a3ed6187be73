//! What a campaign found: the faults it injected, the grants it saw through, and each
//! invariant with what broke it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// An object deleted more than the allowance after its lease ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overstay {
    pub grant: String,
    pub object: String,
    /// Lease end → DELETE acknowledged.
    pub ms: i64,
    /// Time in that span when no replica led.
    pub leaderless_ms: i64,
    /// Time in that span when an injected Azure fault could refuse or slow a DELETE.
    pub azure_fault_ms: i64,
    /// What the invariant allows this object: the allowance plus what the faults excuse.
    pub allowed_ms: i64,
}

impl Overstay {
    pub fn violates(&self) -> bool {
        self.ms > self.allowed_ms
    }
}

#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub seed: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// Kills that struck the replica leading at the time (the rest struck a standby: the one
    /// aimed at the leader, too, when none led, mid-failover).
    pub kills_of_leader: usize,
    /// Kills that struck while some grant was activating, or revoking.
    pub kills_during_activation: usize,
    pub kills_during_revocation: usize,
    /// Replicas that exited without being killed (restarted in place).
    pub replica_exits: Vec<String>,
    pub grants_planned: usize,
    /// Activated, then Expired with a status that records its objects.
    pub grants_processed: usize,
    /// Grants whose whole lease passed with no replica leading: nothing could activate them.
    pub grants_unseen: Vec<String>,
    /// Objects whose overstay was measured.
    pub objects_deleted: usize,
    pub leaderless_total: Duration,
    pub leaderless_longest: Duration,
    /// The allowance an undisturbed object gets (3 s).
    pub allowance: Duration,
    /// Every object deleted more than `allowance` after its lease ended, excused or not.
    pub overstays: Vec<Overstay>,
    pub max_overstay_ms: i64,
    /// Objects deleted before their lease ended.
    pub early_deletes: Vec<String>,
    /// Objects carrying the cluster's marker left in Azure after every lease ended.
    pub orphans: Vec<String>,
    /// Objects PUT successfully again while their first successful PUT still stood.
    pub duplicate_puts: Vec<String>,
    /// Grants whose final status does not record what happened, and objects written that no
    /// status records.
    pub lost_status: Vec<String>,
    /// Grants that never reached a terminal phase.
    pub unprocessed: Vec<String>,
    /// Grant applications that waited for the previous lease on their slot to end.
    pub slot_waits: usize,
    pub wall: Duration,
    /// Where the operator logs were copied, when an invariant broke.
    pub logs: Option<PathBuf>,
}

impl ChaosReport {
    pub fn violations(&self) -> impl Iterator<Item = &Overstay> {
        self.overstays.iter().filter(|o| o.violates())
    }

    /// Each broken invariant, named with how often it broke; empty when all held.
    pub fn broken(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |n: usize, what: &str| {
            if n > 0 {
                out.push(format!("{what}: {n}"));
            }
        };
        check(
            self.violations().count(),
            "overstay beyond the allowance and the faults' time",
        );
        check(self.early_deletes.len(), "deleted before the lease ended");
        check(self.orphans.len(), "orphans");
        check(self.duplicate_puts.len(), "duplicate PUTs");
        check(self.lost_status.len(), "lost status");
        check(self.unprocessed.len(), "grants never ended");
        out
    }

    pub fn passed(&self) -> bool {
        self.broken().is_empty()
    }
}

fn list(f: &mut fmt::Formatter<'_>, title: &str, items: &[String]) -> fmt::Result {
    writeln!(f, "{title}: {}", items.len())?;
    for i in items {
        writeln!(f, "  - {i}")?;
    }
    Ok(())
}

impl fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chaos campaign, seed {}", self.seed)?;
        let total: usize = self.faults.values().sum();
        writeln!(f, "faults injected: {total}")?;
        for (kind, n) in &self.faults {
            writeln!(f, "  {n:>4}  {kind}")?;
        }
        let kills: usize = self
            .faults
            .iter()
            .filter(|(kind, _)| kind.starts_with("SIGKILL"))
            .map(|(_, n)| n)
            .sum();
        writeln!(
            f,
            "kills: {kills}, of which {} struck the replica leading then (the rest a standby, also when a kill aimed at the leader found none mid-failover)",
            self.kills_of_leader
        )?;
        writeln!(
            f,
            "kills while activations were in flight: {}, while revocations were: {}",
            self.kills_during_activation, self.kills_during_revocation
        )?;
        writeln!(
            f,
            "no leader for {:.1} s in all, longest {:.1} s",
            self.leaderless_total.as_secs_f64(),
            self.leaderless_longest.as_secs_f64()
        )?;
        list(
            f,
            "replicas that exited by themselves (restarted)",
            &self.replica_exits,
        )?;
        writeln!(
            f,
            "grants processed (activated, then Expired with their objects recorded): {} of {}",
            self.grants_processed, self.grants_planned
        )?;
        list(
            f,
            "grants whose whole lease passed without a leader (not counted)",
            &self.grants_unseen,
        )?;
        writeln!(
            f,
            "objects deleted: {}; max overstay {} ms",
            self.objects_deleted, self.max_overstay_ms
        )?;
        let allowance = self.allowance.as_millis();
        writeln!(
            f,
            "overstays beyond {} s: {} ({} beyond their allowance: {allowance} ms + time without a leader + twice the time of Azure faults on DELETEs, + 1 s when there was one)",
            self.allowance.as_secs(),
            self.overstays.len(),
            self.violations().count()
        )?;
        for o in &self.overstays {
            writeln!(
                f,
                "  {} {:>6} ms (no leader {} ms, Azure faults {} ms, allowed {} ms) {} {}",
                if o.violates() { "BROKEN " } else { "excused" },
                o.ms,
                o.leaderless_ms,
                o.azure_fault_ms,
                o.allowed_ms,
                o.grant,
                o.object
            )?;
        }
        list(f, "deleted before the lease ended", &self.early_deletes)?;
        list(f, "orphans", &self.orphans)?;
        list(f, "duplicate PUTs", &self.duplicate_puts)?;
        list(f, "lost status", &self.lost_status)?;
        list(f, "grants never ended", &self.unprocessed)?;
        writeln!(
            f,
            "grant applications that waited for their slot: {}",
            self.slot_waits
        )?;
        writeln!(f, "wall time: {:.1} s", self.wall.as_secs_f64())?;
        if let Some(dir) = &self.logs {
            writeln!(f, "operator logs: {}", dir.display())?;
        }
        let broken = self.broken();
        if broken.is_empty() {
            write!(f, "every invariant held")
        } else {
            write!(f, "INVARIANTS BROKEN: {}", broken.join("; "))
        }
    }
}
