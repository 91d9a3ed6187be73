//! The campaign's plan, drawn from its seed alone: when each grant is applied and how long its
//! lease is, and when each fault strikes. Same seed, same plan.

use std::fmt;
use std::time::Duration;

use super::Campaign;
use super::rng::SplitMix64;

/// Slots of distinct Azure objects: 2 identities × [`ROLES`] × 3 scopes. A grant takes a slot,
/// and grants on one slot never overlap, so every object belongs to one lease at a time and
/// its PUTs and DELETE can be told apart in the audit log.
pub const SLOTS: usize = 2 * ROLES.len() * 3;
pub const ROLES: [&str; 5] = [
    "Reader",
    "Storage Blob Data Reader",
    "Storage Blob Data Contributor",
    "Key Vault Secrets User",
    "Key Vault Reader",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedGrant {
    pub name: String,
    /// When it is applied, from the campaign's start.
    pub at: Duration,
    /// Its `window.notAfter` is this long after it is applied.
    pub lease: Duration,
    pub slot: usize,
    /// With a federated credential for its own ServiceAccount, besides the role assignment.
    pub federated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillTarget {
    Leader,
    Standby,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// The container restarts in its pod: same name, so it takes its leader Lease straight
    /// back.
    SameName,
    /// The pod is rescheduled under a new name: it competes with the other replica once the
    /// leader Lease expires (15 s).
    NewName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Kill {
        target: KillTarget,
        restart: Restart,
    },
    DropWatches,
    /// sim-kube compacts its history: watches resuming from an old resourceVersion get 410.
    Compact,
    /// sim-kube closes every connection and watch, keeping its data.
    KubeRestart,
    /// 429s with `Retry-After: 1` on Azure object requests, for `times` requests or `lasts`.
    Throttle {
        method: Option<&'static str>,
        times: u32,
        lasts: Duration,
    },
    ServerErrors {
        method: Option<&'static str>,
        status: u16,
        times: u32,
        lasts: Duration,
    },
    LatencySpike {
        method: Option<&'static str>,
        millis: u64,
        lasts: Duration,
    },
    /// New principals unknown to ARM and RBAC changes invisible for a while.
    ReplicationDelay {
        replication_ms: u64,
        propagation_ms: u64,
        lasts: Duration,
    },
}

impl Fault {
    /// The kind, as the report counts faults.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kill {
                target: KillTarget::Leader,
                restart: Restart::SameName,
            } => "SIGKILL leader, restarted in place",
            Self::Kill {
                target: KillTarget::Leader,
                restart: Restart::NewName,
            } => "SIGKILL leader, rescheduled (failover)",
            Self::Kill {
                target: KillTarget::Standby,
                ..
            } => "SIGKILL standby",
            Self::DropWatches => "watch drop",
            Self::Compact => "compaction (410)",
            Self::KubeRestart => "sim-kube restart",
            Self::Throttle { .. } => "ARM 429 storm",
            Self::ServerErrors { .. } => "ARM 5xx burst",
            Self::LatencySpike { .. } => "ARM latency spike",
            Self::ReplicationDelay { .. } => "replication delay",
        }
    }

    pub fn is_kill(&self) -> bool {
        matches!(self, Self::Kill { .. })
    }

    /// How long an Azure fault stays in force (it is cleared then); none for the others.
    pub fn lasts(&self) -> Option<Duration> {
        match self {
            Self::Throttle { lasts, .. }
            | Self::ServerErrors { lasts, .. }
            | Self::LatencySpike { lasts, .. }
            | Self::ReplicationDelay { lasts, .. } => Some(*lasts),
            _ => None,
        }
    }

    /// Whether it can hold up a DELETE of an object (the overstay allowance counts its time).
    pub fn slows_deletes(&self) -> bool {
        match self {
            Self::Throttle { method, .. }
            | Self::ServerErrors { method, .. }
            | Self::LatencySpike { method, .. } => *method != Some("PUT"),
            _ => false,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = |method: &Option<&str>| method.unwrap_or("every method").to_owned();
        match self {
            Self::Kill { .. } => f.write_str(self.kind()),
            Self::Throttle {
                method,
                times,
                lasts,
            } => write!(
                f,
                "ARM 429 storm: {times} × Retry-After 1 s on {} of objects, for {} s",
                m(method),
                lasts.as_secs()
            ),
            Self::ServerErrors {
                method,
                status,
                times,
                lasts,
            } => write!(
                f,
                "ARM 5xx burst: {times} × {status} on {} of objects, for {} s",
                m(method),
                lasts.as_secs()
            ),
            Self::LatencySpike {
                method,
                millis,
                lasts,
            } => write!(
                f,
                "ARM latency spike: +{millis} ms on {} of objects, for {} s",
                m(method),
                lasts.as_secs()
            ),
            Self::ReplicationDelay {
                replication_ms,
                propagation_ms,
                lasts,
            } => write!(
                f,
                "replication delay: window {replication_ms} ms, RBAC propagation {propagation_ms} ms, for {} s",
                lasts.as_secs()
            ),
            _ => f.write_str(self.kind()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Apply the grant with this index.
    Apply(usize),
    Inject(Fault),
    /// The current Azure fault ends: rules removed, delays back to none.
    EndAzureFault,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub seed: u64,
    pub grants: Vec<PlannedGrant>,
    /// In time order.
    pub steps: Vec<(Duration, Step)>,
    /// Faults and applications all happen before this.
    pub span: Duration,
}

/// Where faults start: after the first grants are in flight.
const FIRST_FAULT: Duration = Duration::from_secs(3);

impl Schedule {
    pub fn plan(c: &Campaign) -> Self {
        let mut rng = SplitMix64::new(c.seed);
        let span = c.span();
        let span_ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX);
        let first_ms = u64::try_from(FIRST_FAULT.as_millis()).unwrap_or(0);
        let mut steps: Vec<(Duration, Step)> = Vec::new();

        // Grants: evenly spread with jitter, so leases start and end all along.
        let spacing = span_ms / u64::try_from(c.grants.max(1)).unwrap_or(1);
        let lease_lo = c.lease_min.as_secs();
        let lease_hi = c.lease_max.as_secs().max(lease_lo);
        let grants: Vec<PlannedGrant> = (0..c.grants)
            .map(|i| {
                let base = spacing * u64::try_from(i).unwrap_or(0);
                let at = base + rng.range(0, spacing / 2);
                PlannedGrant {
                    name: format!("chaos-{i}"),
                    at: Duration::from_millis(at),
                    lease: Duration::from_secs(rng.range(lease_lo, lease_hi)),
                    slot: i % SLOTS,
                    federated: rng.chance(c.federated_percent),
                }
            })
            .collect();
        for (i, g) in grants.iter().enumerate() {
            steps.push((g.at, Step::Apply(i)));
        }

        // Kills at uniform random moments. The second is always a failover and the third a
        // standby's death, so even a short campaign has each kind.
        for k in 0..c.kills {
            let at = rng.range(first_ms, span_ms);
            let fault = match k {
                1 => Fault::Kill {
                    target: KillTarget::Leader,
                    restart: Restart::NewName,
                },
                2 => Fault::Kill {
                    target: KillTarget::Standby,
                    restart: Restart::SameName,
                },
                _ => Fault::Kill {
                    target: if rng.chance(85) {
                        KillTarget::Leader
                    } else {
                        KillTarget::Standby
                    },
                    restart: if rng.chance(80) {
                        Restart::SameName
                    } else {
                        Restart::NewName
                    },
                },
            };
            steps.push((Duration::from_millis(at), Step::Inject(fault)));
        }

        // sim-kube faults, one every ~12 s on average, taking turns.
        let kube_faults = (span_ms / 12_000).max(3);
        for k in 0..kube_faults {
            let at = rng.range(first_ms, span_ms);
            let fault = match k % 3 {
                0 => Fault::DropWatches,
                1 => Fault::Compact,
                _ => Fault::KubeRestart,
            };
            steps.push((Duration::from_millis(at), Step::Inject(fault)));
        }

        // Azure faults one after another (clearing one clears every rule), taking turns: one
        // in each of `n` equal windows, starting in its first third and over by its second.
        let episodes = (span_ms / 8_000).max(4);
        let window = span_ms.saturating_sub(first_ms) / episodes;
        for k in 0..episodes {
            let start = first_ms + k * window + rng.range(0, window / 3);
            let lasts = Duration::from_millis(rng.range(window.min(6_000) / 4, window / 2));
            let method = match rng.range(0, 2) {
                0 => Some("PUT"),
                1 => Some("DELETE"),
                _ => None,
            };
            let fault = match k % 4 {
                0 => Fault::Throttle {
                    method,
                    times: u32::try_from(rng.range(3, 12)).unwrap_or(3),
                    lasts,
                },
                1 => Fault::ServerErrors {
                    method,
                    status: if rng.chance(50) { 500 } else { 503 },
                    times: u32::try_from(rng.range(2, 8)).unwrap_or(2),
                    lasts,
                },
                2 => Fault::LatencySpike {
                    method,
                    millis: rng.range(300, 1_500),
                    lasts,
                },
                _ => Fault::ReplicationDelay {
                    replication_ms: rng.range(5_000, 30_000),
                    propagation_ms: rng.range(1_000, 10_000),
                    lasts,
                },
            };
            steps.push((Duration::from_millis(start), Step::Inject(fault)));
            steps.push((Duration::from_millis(start) + lasts, Step::EndAzureFault));
        }
        // Stable: an Azure fault's end never moves before its start.
        steps.sort_by_key(|(at, _)| *at);
        Self {
            seed: c.seed,
            grants,
            steps,
            span,
        }
    }

    pub fn faults(&self) -> impl Iterator<Item = (Duration, &Fault)> {
        self.steps.iter().filter_map(|(at, s)| match s {
            Step::Inject(f) => Some((*at, f)),
            _ => None,
        })
    }
}

impl fmt::Display for Schedule {
    /// The fault schedule, one line a fault, and the grants in one line each.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schedule of seed {}: {} grants and {} faults over {} s",
            self.seed,
            self.grants.len(),
            self.faults().count(),
            self.span.as_secs()
        )?;
        for (at, fault) in self.faults() {
            writeln!(f, "  +{:>7.3}s  {fault}", at.as_secs_f64())?;
        }
        for g in &self.grants {
            writeln!(
                f,
                "  +{:>7.3}s  apply {} (lease {} s, slot {}{})",
                g.at.as_secs_f64(),
                g.name,
                g.lease.as_secs(),
                g.slot,
                if g.federated { ", federated" } else { "" }
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_one_schedule() {
        let a = Schedule::plan(&Campaign::full(1));
        assert_eq!(a, Schedule::plan(&Campaign::full(1)));
        assert_eq!(
            a.to_string(),
            Schedule::plan(&Campaign::full(1)).to_string()
        );
        assert_ne!(a, Schedule::plan(&Campaign::full(2)));
    }

    #[test]
    fn the_full_campaign_has_every_kind_and_thirty_kills() {
        let s = Schedule::plan(&Campaign::full(1));
        assert_eq!(s.faults().filter(|(_, f)| f.is_kill()).count(), 30);
        assert_eq!(s.grants.len(), 120);
        let kinds: std::collections::BTreeSet<&str> = s.faults().map(|(_, f)| f.kind()).collect();
        assert_eq!(kinds.len(), 10, "{kinds:?}");
    }

    #[test]
    fn a_short_campaign_still_has_every_kind() {
        for seed in 0..20 {
            let s = Schedule::plan(&Campaign::short(seed));
            let kinds: std::collections::BTreeSet<&str> =
                s.faults().map(|(_, f)| f.kind()).collect();
            for kind in [
                "SIGKILL leader, rescheduled (failover)",
                "SIGKILL standby",
                "watch drop",
                "compaction (410)",
                "sim-kube restart",
                "ARM 429 storm",
                "ARM 5xx burst",
                "ARM latency spike",
                "replication delay",
            ] {
                assert!(kinds.contains(kind), "seed {seed}: no {kind} in {kinds:?}");
            }
        }
    }

    #[test]
    fn azure_faults_never_overlap_and_grants_on_a_slot_never_overlap() {
        let s = Schedule::plan(&Campaign::full(3));
        let mut open = false;
        for (_, step) in &s.steps {
            match step {
                Step::Inject(f) if f.lasts().is_some() => {
                    assert!(!open, "an Azure fault began while another was on");
                    open = true;
                }
                Step::EndAzureFault => {
                    assert!(open);
                    open = false;
                }
                _ => {}
            }
        }
        for g in &s.grants {
            for later in s.grants.iter().filter(|h| h.slot == g.slot && h.at > g.at) {
                // A minute between a lease's end and the next on its slot: room for a
                // revocation held up by a failover and faults.
                assert!(
                    later.at >= g.at + g.lease + Duration::from_secs(30),
                    "{} and {} share slot {} too closely",
                    g.name,
                    later.name,
                    g.slot
                );
            }
        }
    }
}
