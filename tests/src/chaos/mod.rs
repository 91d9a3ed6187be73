//! `make chaos`: a seeded, repeatable campaign against the sandbox (docs/testing.md, "Chaos").
//!
//! Grants with short, staggered leases are applied all along, so activations and revocations
//! are always in flight, while two operator replicas compete for the leader Lease and a
//! schedule drawn from the seed kills them (SIGKILL), drops and compacts the watches, restarts
//! sim-kube, and throttles, fails, slows and delays Azure. Once every lease has ended and the
//! faults are gone, [`run`] judges the invariants: no overstay beyond the allowance (plus the
//! time no replica led and the time Azure was refusing), no orphan, no duplicate PUT, no lost
//! status, every grant seen through.

mod inject;
mod replicas;
mod report;
mod rng;
mod schedule;
mod verdict;

pub use replicas::Span;
pub use report::{ChaosReport, Overstay};
pub use schedule::{Fault, KillTarget, PlannedGrant, ROLES, Restart, SLOTS, Schedule, Step};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use chrono::{DateTime, Utc};
use lapse_api::v1alpha1::{AccessGrant, GrantPhase};

use crate::{Sandbox, Target, World};
use replicas::Replicas;
use verdict::{Applied, Observed};

/// The namespace the campaign's grants live in.
pub const NS: &str = "chaos";

/// What a campaign does. Everything random in it is drawn from `seed`.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub seed: u64,
    /// SIGKILLs of an operator replica.
    pub kills: usize,
    pub grants: usize,
    /// Each grant's lease (its `window.notAfter` after it is applied) is drawn from this range.
    /// At least a failover (15 s of leader Lease, then the new leader's start) long, so that a
    /// grant applied as the leader dies still activates.
    pub lease_min: Duration,
    pub lease_max: Duration,
    /// Share of grants that also federate a ServiceAccount (a FIC besides the role
    /// assignment), in percent.
    pub federated_percent: u64,
    /// How late after its lease an undisturbed object may be deleted.
    pub overstay_allowance: Duration,
    /// Quiet time after every grant ended, before Azure is read for orphans.
    pub settle: Duration,
    /// Longest wait for every grant to end once the last lease is over.
    pub drain_timeout: Duration,
}

impl Campaign {
    /// `make chaos`: 30 kills, 120 grants, about 6 minutes.
    pub fn full(seed: u64) -> Self {
        Self {
            seed,
            kills: 30,
            grants: 120,
            lease_min: Duration::from_secs(20),
            lease_max: Duration::from_secs(30),
            federated_percent: 30,
            overstay_allowance: Duration::from_secs(3),
            settle: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(120),
        }
    }

    /// The variant `make test` runs: 4 kills (one a failover), 8 grants, about 60 s.
    pub fn short(seed: u64) -> Self {
        Self {
            kills: 4,
            grants: 8,
            lease_max: Duration::from_secs(24),
            ..Self::full(seed)
        }
    }

    /// How long grants are applied and faults injected: about 9 s a kill and 2.5 s a grant.
    pub fn span(&self) -> Duration {
        let kills = u32::try_from(self.kills).unwrap_or(u32::MAX);
        let grants = u32::try_from(self.grants).unwrap_or(u32::MAX);
        (Duration::from_secs(9) * kills)
            .max(Duration::from_millis(2_500) * grants)
            .max(Duration::from_secs(20))
    }
}

/// The objects of one slot.
#[derive(Debug, Clone)]
struct Slot {
    identity: String,
    role: &'static str,
    scope: String,
}

/// Namespace `chaos` with ServiceAccounts `runner-<slot>`, the policy, and each slot's objects.
async fn setup(w: &World) -> anyhow::Result<Vec<Slot>> {
    w.kubectl_ok(&["create", "namespace", NS])?;
    // One apply for every ServiceAccount: a kubectl process each would take seconds.
    let service_accounts: String = (0..SLOTS)
        .map(|i| {
            format!("---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: runner-{i}\n  namespace: {NS}\n")
        })
        .collect();
    w.apply_ok(&service_accounts)?;
    let rg = w.fixtures.resource_group_id();
    let roles = ROLES.map(|r| format!("{r:?}")).join(", ");
    w.apply_ok(&format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: chaos
spec:
  namespaces: ["{NS}"]
  identities: ["{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"]
  roles: [{roles}]
  scopes: ["{rg}"]
  serviceAccounts: ["runner-*"]
  maxDuration: {max}
"#,
        max = w.lease(3600),
    ))?;
    let mut identities = Vec::new();
    for name in &w.fixtures.identities {
        identities.push(w.identity(name).await?.0);
    }
    if identities.len() * ROLES.len() * 3 < SLOTS {
        return Err(anyhow!(
            "the sandbox has {} identities; the campaign's slots need 2",
            identities.len()
        ));
    }
    let scopes = [
        rg.clone(),
        w.fixtures.storage_account_id(),
        format!("{rg}/providers/Microsoft.KeyVault/vaults/lapse-demo-kv"),
    ];
    Ok((0..SLOTS)
        .map(|s| {
            let per_identity = ROLES.len() * scopes.len();
            let rest = s % per_identity;
            Slot {
                identity: identities[s / per_identity].clone(),
                role: ROLES[rest / scopes.len()],
                scope: scopes[rest % scopes.len()].clone(),
            }
        })
        .collect())
}

fn grant_yaml(g: &PlannedGrant, slot: &Slot, not_after: DateTime<Utc>, seed: u64) -> String {
    let federation = if g.federated {
        format!("  federation:\n    serviceAccount: runner-{}\n", g.slot)
    } else {
        String::new()
    };
    format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessGrant
metadata:
  name: {name}
  namespace: {NS}
spec:
  identity:
    managedIdentity: {identity}
  roles:
  - role: {role}
    scope: {scope}
{federation}  window:
    notAfter: "{not_after}"
  justification: "chaos campaign, seed {seed}"
"#,
        name = g.name,
        identity = slot.identity,
        role = slot.role,
        scope = slot.scope,
        not_after = not_after.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

fn terminal(g: &AccessGrant) -> bool {
    g.status.as_ref().is_some_and(|s| {
        matches!(
            s.phase,
            GrantPhase::Expired | GrantPhase::Revoked | GrantPhase::Denied | GrantPhase::Failed
        )
    })
}

/// Waits (at most a minute) for the previous lease on a slot to end, so no two leases share
/// an object. True when it had to wait.
async fn wait_for_slot(w: &World, previous: Option<&String>) -> anyhow::Result<bool> {
    let Some(name) = previous else {
        return Ok(false);
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut waited = false;
    while Instant::now() < deadline {
        if w.grants(NS)
            .get_opt(name)
            .await?
            .is_none_or(|g| terminal(&g))
        {
            return Ok(waited);
        }
        waited = true;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("  {name} had not ended after 60 s; its slot is reused anyway");
    Ok(true)
}

/// Applies a grant, retrying a refused apply (the API server may be restarting) a few times.
fn apply(w: &World, g: &PlannedGrant, slot: &Slot, seed: u64) -> anyhow::Result<Applied> {
    let at = Utc::now();
    let lease = i64::try_from(g.lease.as_secs())?;
    // notAfter is written to the second: round up.
    let not_after = DateTime::from_timestamp(at.timestamp() + lease + 1, 0)
        .ok_or_else(|| anyhow!("time out of range"))?;
    let yaml = grant_yaml(g, slot, not_after, seed);
    let mut tries = 0;
    loop {
        match w.apply_ok(&yaml) {
            Ok(()) => break,
            Err(e) if tries < 5 => {
                tries += 1;
                println!("  apply {} refused ({e}); again", g.name);
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Applied {
        name: g.name.clone(),
        at,
        not_after,
        federated: g.federated,
    })
}

/// Grants activating and grants revoking right now.
async fn in_flight(w: &World) -> anyhow::Result<(usize, usize)> {
    let now = Utc::now();
    let list = w.grants(NS).list(&Default::default()).await?;
    let (mut activating, mut revoking) = (0, 0);
    for g in &list.items {
        match &g.status {
            None => activating += 1,
            Some(s) => match s.phase {
                GrantPhase::Pending | GrantPhase::Activating => activating += 1,
                GrantPhase::Revoking => revoking += 1,
                GrantPhase::Active if s.expires_at.is_some_and(|e| e <= now) => revoking += 1,
                _ => {}
            },
        }
    }
    Ok((activating, revoking))
}

/// Polls until `done` or `timeout`, restarting replicas that exit meanwhile.
async fn wait_reviving(
    w: &World,
    replicas: &mut Replicas,
    timeout: Duration,
    mut done: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        replicas.revive_exited(w)?;
        if done().await? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Copies the operator and sandbox logs somewhere that outlives the sandbox.
fn keep_logs(w: &World, replicas: &Replicas, seed: u64) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("lapse-chaos-seed-{seed}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for (i, (name, log)) in replicas.logs().iter().enumerate() {
        let to = dir.join(format!("{i:02}-{name}.log"));
        std::fs::copy(log, &to).with_context(|| format!("copying {}", log.display()))?;
    }
    let sandbox_log = w.target.dir().join("sandbox.log");
    if sandbox_log.is_file() {
        std::fs::copy(&sandbox_log, dir.join("sandbox.log"))?;
    }
    Ok(dir)
}

/// Runs the campaign on a fresh sandbox and judges it. Err only when the campaign itself could
/// not run (the sandbox did not start, say); broken invariants are in the report.
pub async fn run(c: &Campaign) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
    let schedule = Schedule::plan(c);
    println!("{schedule}");
    let w = World::on(Target::Sandbox(Sandbox::start()?)).await?;
    println!("sandbox up after {:.1} s", started.elapsed().as_secs_f64());
    let slots = setup(&w).await?;
    let mut replicas = Replicas::start(&w).await?;
    println!(
        "sandbox and replica-a ready after {:.1} s; the schedule starts",
        started.elapsed().as_secs_f64()
    );
    let monitor = replicas.monitor(
        reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?,
    );
    let mut report = ChaosReport {
        seed: c.seed,
        ..Default::default()
    };
    let mut applied: Vec<Applied> = Vec::new();
    let mut last_on_slot: BTreeMap<usize, String> = BTreeMap::new();
    let mut azure_faults: Vec<Span> = Vec::new();
    let mut slowing_since: Option<DateTime<Utc>> = None;

    let t0 = tokio::time::Instant::now();
    for (at, step) in &schedule.steps {
        tokio::time::sleep_until(t0 + *at).await;
        replicas.revive_exited(&w)?;
        let now = t0.elapsed().as_secs_f64();
        match step {
            Step::Apply(i) => {
                let g = schedule
                    .grants
                    .get(*i)
                    .ok_or_else(|| anyhow!("no planned grant {i}"))?;
                let slot = slots
                    .get(g.slot)
                    .ok_or_else(|| anyhow!("no slot {}", g.slot))?;
                if wait_for_slot(&w, last_on_slot.get(&g.slot)).await? {
                    report.slot_waits += 1;
                }
                applied.push(apply(&w, g, slot, c.seed)?);
                last_on_slot.insert(g.slot, g.name.clone());
            }
            Step::Inject(fault @ Fault::Kill { target, restart }) => {
                let (activating, revoking) = in_flight(&w).await?;
                report.kills_during_activation += usize::from(activating > 0);
                report.kills_during_revocation += usize::from(revoking > 0);
                let (what, was_leading) = replicas.kill(&w, *target, *restart).await?;
                if was_leading {
                    report.kills_of_leader += 1;
                }
                println!("+{now:>7.3}s  {what} ({activating} activating, {revoking} revoking)");
                *report.faults.entry(fault.kind()).or_default() += 1;
            }
            Step::Inject(fault) => {
                inject::inject(&w, fault)
                    .await
                    .with_context(|| format!("injecting {fault}"))?;
                if fault.slows_deletes() {
                    slowing_since = Some(Utc::now());
                }
                println!("+{now:>7.3}s  {fault}");
                *report.faults.entry(fault.kind()).or_default() += 1;
            }
            Step::EndAzureFault => {
                inject::end_azure_fault(&w).await?;
                if let Some(since) = slowing_since.take() {
                    azure_faults.push((since, Utc::now()));
                }
            }
        }
    }
    // Belt and braces: the schedule ends every Azure fault, but nothing may outlive the span.
    inject::end_azure_fault(&w).await?;
    println!(
        "+{:>7.3}s  faults over; waiting for every lease to end",
        t0.elapsed().as_secs_f64()
    );

    let last_end = applied.iter().map(|a| a.not_after).max();
    let until_last = last_end
        .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
        .unwrap_or_default();
    wait_reviving(&w, &mut replicas, until_last, async || Ok(false)).await?;
    let names: Vec<String> = applied.iter().map(|a| a.name.clone()).collect();
    let ended = wait_reviving(&w, &mut replicas, c.drain_timeout, async || {
        let list = w.grants(NS).list(&Default::default()).await?;
        Ok(names.iter().all(|n| {
            list.items
                .iter()
                .any(|g| g.metadata.name.as_ref() == Some(n) && terminal(g))
        }))
    })
    .await?;
    if ended {
        println!("+{:>7.3}s  every grant ended", t0.elapsed().as_secs_f64());
    } else {
        println!(
            "not every grant ended within {} s of the last lease",
            c.drain_timeout.as_secs()
        );
    }
    wait_reviving(&w, &mut replicas, c.settle, async || Ok(false)).await?;

    let leaderless = monitor.finish().await?;
    let audit = w.audit().await?;
    let grants: BTreeMap<String, AccessGrant> = w
        .grants(NS)
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|g| Some((g.metadata.name.clone()?, g)))
        .collect();
    let owned = w.owned_objects().await?;
    verdict::judge(
        &Observed {
            applied: &applied,
            grants: &grants,
            audit: &audit,
            owned: &owned,
            leaderless: &leaderless,
            azure_faults: &azure_faults,
        },
        c.overstay_allowance,
        &mut report,
    );
    let gaps: Vec<Duration> = leaderless
        .iter()
        .map(|(a, b)| (*b - *a).to_std().unwrap_or_default())
        .collect();
    report.leaderless_total = gaps.iter().sum();
    report.leaderless_longest = gaps.iter().max().copied().unwrap_or_default();
    report.replica_exits = replicas.exits.clone();
    replicas.stop();
    if !report.passed() {
        report.logs = Some(keep_logs(&w, &replicas, c.seed)?);
    }
    report.wall = started.elapsed();
    Ok(report)
}
