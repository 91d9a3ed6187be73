//! The figures lapse and the baseline are compared on, both read the same way from sim-azure's
//! request log: what Azure saw, not what either reconciler says about itself.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::harness::Call;
use crate::secs;

/// A sample's sorted values and its percentiles (nearest rank).
#[derive(Debug, Default, Serialize)]
pub struct Distribution {
    pub n: usize,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    /// Every value, ascending: the CDF's points.
    pub samples: Vec<f64>,
}

impl Distribution {
    pub fn new(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let at = |p: f64| {
            let last = samples.len().checked_sub(1)?;
            samples
                .get((((last as f64) * p).round() as usize).min(last))
                .copied()
        };
        Self {
            n: samples.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: samples.last().copied(),
            samples,
        }
    }
}

/// One lease of the workload as the comparison sees it.
#[derive(Debug)]
pub struct Lease {
    /// When the bench's create of the grant was acknowledged.
    pub applied: DateTime<Utc>,
    /// The lease's end (`window.notAfter`).
    pub end: DateTime<Utc>,
    /// Whether the grant was one of the burst's (activation is measured on those).
    pub burst: bool,
    /// The role assignment made for it, as sim-azure logs paths (lower case).
    pub assignment: Option<String>,
}

/// Everything one run is compared on.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    pub leases: usize,
    /// Burst grants: apply → their role assignment's PUT acknowledged by ARM, seconds.
    pub activation: Distribution,
    /// Lease end → its role assignment's DELETE acknowledged by ARM, seconds.
    pub overstay: Distribution,
    /// Leases that never had a role assignment (their window closed first).
    pub never_activated: usize,
    /// Leases with a role assignment ARM never acknowledged deleting.
    pub unrevoked: usize,
    /// ARM GETs (role assignments and anything else) from the start to the last lapse.
    pub arm_reads: usize,
    pub arm_reads_per_lease: f64,
    /// Role assignment PUTs and DELETEs ARM accepted.
    pub assignment_puts: usize,
    pub assignment_deletes: usize,
    pub arm_writes_per_lease: f64,
    /// Role assignment writes refused (429 or other errors).
    pub writes_refused: usize,
    /// Every 429 ARM answered, reads and writes.
    pub throttled: usize,
    /// The reconciler's RSS with every lease live, and its peak then, KiB.
    pub rss_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
}

/// The figures of `leases` from `audit`, counting calls up to `until`.
pub fn figures(
    audit: &[Call],
    leases: &[Lease],
    until: DateTime<Utc>,
    rss: (Option<u64>, Option<u64>),
) -> Figures {
    let calls: Vec<&Call> = audit.iter().filter(|c| c.time <= until).collect();
    // The first acknowledged PUT and DELETE of each assignment.
    let mut put_acked: HashMap<&str, DateTime<Utc>> = HashMap::new();
    let mut delete_acked: HashMap<&str, DateTime<Utc>> = HashMap::new();
    for c in calls.iter().filter(|c| c.is_assignment() && c.ok()) {
        let book = match c.method.as_str() {
            "PUT" => &mut put_acked,
            "DELETE" => &mut delete_acked,
            _ => continue,
        };
        book.entry(c.path.as_str()).or_insert(c.acked);
    }
    let activation = leases
        .iter()
        .filter(|l| l.burst)
        .filter_map(|l| Some(secs(*put_acked.get(l.assignment.as_deref()?)? - l.applied)))
        .collect();
    let overstay: Vec<f64> = leases
        .iter()
        .filter_map(|l| Some(secs(*delete_acked.get(l.assignment.as_deref()?)? - l.end)))
        .collect();
    let arm_reads = calls
        .iter()
        .filter(|c| c.is_arm() && c.method == "GET")
        .count();
    let writes = || {
        calls
            .iter()
            .filter(|c| c.is_assignment() && c.method != "GET")
    };
    let accepted = |m: &str| writes().filter(|c| c.ok() && c.method == m).count();
    let (puts, deletes) = (accepted("PUT"), accepted("DELETE"));
    let per_lease = |k: usize| k as f64 / leases.len().max(1) as f64;
    Figures {
        leases: leases.len(),
        activation: Distribution::new(activation),
        never_activated: leases.iter().filter(|l| l.assignment.is_none()).count(),
        unrevoked: leases
            .iter()
            .filter(|l| {
                l.assignment
                    .as_deref()
                    .is_some_and(|a| !delete_acked.contains_key(a))
            })
            .count(),
        overstay: Distribution::new(overstay),
        arm_reads,
        arm_reads_per_lease: per_lease(arm_reads),
        assignment_puts: puts,
        assignment_deletes: deletes,
        arm_writes_per_lease: per_lease(puts + deletes),
        writes_refused: writes().filter(|c| !c.ok()).count(),
        throttled: calls.iter().filter(|c| c.status == 429).count(),
        rss_kib: rss.0,
        rss_peak_kib: rss.1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_of_the_sorted_sample() {
        let d = Distribution::new((1..=100).rev().map(f64::from).collect());
        assert_eq!(
            (d.n, d.p50, d.p99, d.max),
            (100, Some(51.0), Some(99.0), Some(100.0))
        );
        assert_eq!(d.samples.first(), Some(&1.0));
        let empty = Distribution::new(Vec::new());
        assert_eq!((empty.p50, empty.max), (None, None));
    }
}
