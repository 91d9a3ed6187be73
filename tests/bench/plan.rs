//! The workload of phases 1, 2 and 5, the same for lapse and for the baseline: which
//! subscription each grant goes to, and when each lease ends.

use chrono::{DateTime, TimeDelta, Utc};
use lapse_api::v1alpha1::AccessGrant;

use crate::harness::RESOURCE_GROUP;
use crate::{Config, WRITE_BURST, WRITE_REFILL, grant, secs};

#[derive(Debug)]
pub struct Plan {
    /// Each grant's subscription (an index into the bench's subscriptions).
    pub sub_of: Vec<usize>,
    /// Seconds ARM's write budget needs for the burst, and for the rest.
    pub burst_ideal: f64,
    pub fill_ideal: f64,
    /// Each grant's `window.notAfter`.
    pub ends: Vec<DateTime<Utc>>,
    pub lapse_start: DateTime<Utc>,
    pub lapse_end: DateTime<Utc>,
}

impl Plan {
    /// The plan of a run whose grants are created from `t0` on.
    pub fn new(cfg: &Config, t0: DateTime<Utc>) -> Self {
        let (n, s) = (cfg.grants, cfg.subscriptions);
        // Which subscription each grant goes to: the burst all in the first, the rest evening
        // out.
        let mut sub_of = vec![0usize; n];
        let mut per_sub = vec![0usize; s];
        per_sub[0] = cfg.burst;
        for slot in sub_of.iter_mut().skip(cfg.burst) {
            let (i, _) = per_sub
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| **c)
                .unwrap_or((0, &0));
            *slot = i;
            per_sub[i] += 1;
        }
        // When leases start to end: after the activations the write budget allows (with a
        // margin), the steady-state window and the restart. Each subscription's leases then
        // end `end_rate` a second, interleaved across subscriptions.
        let burst_ideal = (cfg.burst as f64 - WRITE_BURST).max(0.0) / WRITE_REFILL;
        let fill_ideal = (0..s)
            .map(|i| {
                let rest = per_sub[i] - if i == 0 { cfg.burst } else { 0 };
                let bucket = if i == 0 && cfg.burst > 0 {
                    0.0
                } else {
                    WRITE_BURST
                };
                (rest as f64 - bucket).max(0.0) / WRITE_REFILL
            })
            .fold(0.0, f64::max);
        let lead = 1.3 * (burst_ideal + fill_ideal)
            + n as f64 / 300.0
            + 30.0
            + cfg.steady_window().as_secs_f64()
            + 60.0;
        let lapse_start = t0 + TimeDelta::milliseconds((lead * 1000.0) as i64);
        let mut ends = vec![lapse_start; n];
        let mut k_of_sub = vec![0usize; s];
        for (i, end) in ends.iter_mut().enumerate() {
            let sub = sub_of[i];
            let k = k_of_sub[sub];
            k_of_sub[sub] += 1;
            let offset = (k as f64 + sub as f64 / s as f64) / cfg.end_rate;
            *end = lapse_start + TimeDelta::milliseconds((offset * 1000.0) as i64);
        }
        let lapse_end = ends.iter().max().copied().unwrap_or(lapse_start);
        println!(
            "plan: write budget allows the burst in {burst_ideal:.0}s and the rest in \
             {fill_ideal:.0}s; leases end from +{lead:.0}s for {:.0}s",
            secs(lapse_end - lapse_start)
        );
        Self {
            sub_of,
            burst_ideal,
            fill_ideal,
            ends,
            lapse_start,
            lapse_end,
        }
    }

    /// The grants `g00000`, `g00001`, ...: grant `i` for `principals[i]`, Reader on `bench-rg`
    /// of its subscription, ending at its planned end.
    pub fn grants(&self, principals: &[String], subs: &[String]) -> Vec<AccessGrant> {
        self.ends
            .iter()
            .enumerate()
            .map(|(i, end)| {
                grant(
                    &grant_name(i),
                    &principals[i],
                    format!(
                        "/subscriptions/{}/resourceGroups/{RESOURCE_GROUP}",
                        subs[self.sub_of[i]]
                    ),
                    None,
                    *end,
                )
            })
            .collect()
    }
}

pub fn grant_name(i: usize) -> String {
    format!("g{i:05}")
}

/// Whether `name` is one of the burst's grants (the first `burst`).
pub fn in_burst(name: &str, burst: usize) -> bool {
    name < grant_name(burst).as_str()
}
