//! Resilience end to end: the operator killed with SIGKILL while it activates and while it
//! revokes, grants deleted behind its back while it is down, watches dropped and compacted,
//! ARM throttling and 5xx; and no secret in anything the operator emits. Each scenario runs its
//! own operator processes on its own sandbox (or on the external cluster and tenant) and asserts
//! through kubectl, ARM and, on the sandbox, the Azure audit log.
//!
//! On the external target the scenarios that inject faults are skipped. The SIGKILL and
//! start-up sweep scenarios run there without the injected ARM latency that keeps writes in
//! flight on the sandbox (real ARM is slow enough), and check Azure's state instead of its log.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lapse_api::v1alpha1::{AccessGrant, ConditionStatus, GrantPhase};
use lapse_e2e::{
    Capability, Target, World, recorded_ids, requests_by_path, sandbox_only, succeeded,
};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);
const NS: &str = "ops";
/// The paths of the Azure objects the operator writes.
const OBJECTS: &str = "/roleassignments/|/federatedidentitycredentials/";

const ROLES: [&str; 5] = [
    "Reader",
    "Storage Blob Data Reader",
    "Storage Blob Data Contributor",
    "Key Vault Secrets User",
    "Key Vault Reader",
];

/// The scopes grants use: the resource group and resources in it (the sandbox's key vault too,
/// which the external fixtures do not name).
fn scopes(w: &World) -> Vec<String> {
    let rg = w.fixtures.resource_group_id();
    let mut out = vec![rg.clone(), w.fixtures.storage_account_id()];
    if matches!(w.target, Target::Sandbox(_)) {
        out.push(format!(
            "{rg}/providers/Microsoft.KeyVault/vaults/lapse-demo-kv"
        ));
    }
    out
}

/// One policy allowing everything the scenarios ask for in namespace `ops`.
fn policy(w: &World) -> String {
    let roles = ROLES.map(|r| format!("{r:?}")).join(", ");
    format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: ops
spec:
  namespaces: ["{NS}"]
  identities: ["{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"]
  roles: [{roles}]
  scopes: ["{rg}"]
  serviceAccounts: ["runner-*"]
  maxDuration: {max}
"#,
        rg = w.fixtures.resource_group_id(),
        max = w.lease(3600),
    )
}

/// When a lease ends.
enum Lease {
    /// `spec.duration`, from activation.
    Duration(String),
    /// `spec.window.notAfter`: every grant with the same instant lapses together.
    NotAfter(DateTime<Utc>),
}

struct GrantSpec<'a> {
    name: String,
    identity: &'a str,
    role: &'a str,
    scope: &'a str,
    service_account: Option<String>,
    lease: Lease,
}

impl GrantSpec<'_> {
    fn yaml(&self) -> String {
        let federation = self
            .service_account
            .as_ref()
            .map(|sa| format!("  federation:\n    serviceAccount: {sa}\n"))
            .unwrap_or_default();
        let lease = match &self.lease {
            Lease::Duration(d) => format!("  duration: {d}\n"),
            Lease::NotAfter(t) => format!(
                "  window:\n    notAfter: \"{}\"\n",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
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
{federation}{lease}  justification: "OPS-5 resilience"
"#,
            name = self.name,
            identity = self.identity,
            role = self.role,
            scope = self.scope,
        )
    }
}

/// What every scenario starts from: namespace `ops`, ServiceAccounts `runner-0..n`, the policy,
/// the target's identities' resource IDs and the scopes grants use.
struct Setup {
    identities: Vec<String>,
    scopes: Vec<String>,
}

async fn setup(w: &World, service_accounts: usize) -> anyhow::Result<Setup> {
    w.kubectl_ok(&["create", "namespace", NS])?;
    for i in 0..service_accounts {
        w.kubectl_ok(&["-n", NS, "create", "serviceaccount", &format!("runner-{i}")])?;
    }
    w.apply_ok(&policy(w))?;
    let mut identities = Vec::new();
    for name in &w.fixtures.identities {
        identities.push(w.identity(name).await?.0);
    }
    Ok(Setup {
        identities,
        scopes: scopes(w),
    })
}

/// `n` grants whose Azure objects all differ: distinct (identity, role, scope) triples, and
/// the first `federated` with a FIC for their own ServiceAccount. Fewer when the target has
/// fewer triples (the sandbox always has enough; an external target with one identity may not).
fn distinct_grants<'a>(
    s: &'a Setup,
    prefix: &str,
    n: usize,
    federated: usize,
    lease: impl Fn() -> Lease,
) -> Vec<GrantSpec<'a>> {
    let mut out = Vec::new();
    'all: for identity in &s.identities {
        for role in ROLES {
            for scope in &s.scopes {
                if out.len() == n {
                    break 'all;
                }
                let i = out.len();
                out.push(GrantSpec {
                    name: format!("{prefix}-{i}"),
                    identity,
                    role,
                    scope,
                    service_account: (i < federated).then(|| format!("runner-{i}")),
                    lease: lease(),
                });
            }
        }
    }
    out
}

/// How many of these grants federate a ServiceAccount (each writes a FIC besides its role
/// assignment).
fn federated(grants: &[GrantSpec<'_>]) -> usize {
    grants
        .iter()
        .filter(|g| g.service_account.is_some())
        .count()
}

fn names(grants: &[GrantSpec<'_>]) -> Vec<String> {
    grants.iter().map(|g| g.name.clone()).collect()
}

fn phase_is(p: GrantPhase) -> impl Fn(&AccessGrant) -> bool {
    move |g| g.status.as_ref().is_some_and(|s| s.phase == p)
}

fn condition(g: &AccessGrant, type_: &str) -> Option<ConditionStatus> {
    g.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status)
}

/// Every object was written exactly once successfully, with at most one retry of a failure.
/// Returns the number of objects written.
fn assert_no_duplicate_puts(audit: &[Value]) -> usize {
    let puts = requests_by_path(audit, "PUT", "/providers/");
    let objects: BTreeMap<&String, &Vec<&Value>> = puts
        .iter()
        .filter(|(p, _)| OBJECTS.split('|').any(|o| p.contains(o)))
        .collect();
    for (path, entries) in &objects {
        let ok = entries.iter().filter(|e| succeeded(e)).count();
        let statuses: Vec<&Value> = entries.iter().map(|e| &e["status"]).collect();
        assert_eq!(ok, 1, "successful PUTs of {path}: {statuses:?}");
        assert!(entries.len() <= 2, "PUTs of {path}: {statuses:?}");
    }
    objects.len()
}

/// Every object was deleted exactly once successfully.
fn assert_one_delete_each(audit: &[Value]) {
    for part in OBJECTS.split('|') {
        for (path, entries) in requests_by_path(audit, "DELETE", part) {
            let ok = entries.iter().filter(|e| succeeded(e)).count();
            assert_eq!(ok, 1, "successful DELETEs of {path}");
        }
    }
}

/// Lease end → DELETE acknowledged, in milliseconds, for every object deleted.
fn overstays(audit: &[Value], expires: DateTime<Utc>) -> anyhow::Result<Vec<i64>> {
    let mut out = Vec::new();
    for part in OBJECTS.split('|') {
        for entries in requests_by_path(audit, "DELETE", part).values() {
            for e in entries.iter().filter(|e| succeeded(e)) {
                let at: DateTime<Utc> = serde_json::from_value(e["time"].clone())?;
                out.push((at - expires).num_milliseconds());
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Lease end → DELETE acknowledged, in milliseconds, for every object of these grants, each
/// measured from its own grant's `expiresAt`.
fn overstays_of(audit: &[Value], grants: &[AccessGrant]) -> anyhow::Result<Vec<i64>> {
    let mut out = Vec::new();
    for g in grants {
        let expires = g
            .status
            .as_ref()
            .and_then(|s| s.expires_at)
            .ok_or_else(|| anyhow::anyhow!("{:?} has no expiresAt", g.metadata.name))?;
        for id in recorded_ids(g) {
            for e in requests_by_path(audit, "DELETE", &id)
                .values()
                .flatten()
                .filter(|e| succeeded(e))
            {
                let at: DateTime<Utc> = serde_json::from_value(e["time"].clone())?;
                out.push((at - expires).num_milliseconds());
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn summary(ms: &[i64]) -> String {
    match (ms.first(), ms.last()) {
        (Some(min), Some(max)) => format!(
            "n {} min {min} median {} max {max} ms",
            ms.len(),
            ms[ms.len() / 2]
        ),
        _ => "none".into(),
    }
}

/// Objects the grants' statuses record, lower-cased.
fn recorded(grants: &[AccessGrant]) -> BTreeSet<String> {
    grants.iter().flat_map(recorded_ids).collect()
}

/// Polls the audit log until `pred` holds (a trigger for killing the operator mid-flight).
async fn wait_audit(w: &World, pred: impl Fn(&[Value]) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + w.scaled(TIMEOUT);
    while !pred(&w.audit().await?) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "Azure never saw the expected requests"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn count(audit: &[Value], method: &str) -> usize {
    OBJECTS
        .split('|')
        .map(|part| {
            requests_by_path(audit, method, part)
                .values()
                .flatten()
                .count()
        })
        .sum()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_activations_then_restart_activates_everything_once() -> anyhow::Result<()> {
    let mut w = World::start().await?;
    let timeout = w.scaled(TIMEOUT);
    let s = setup(&w, 6).await?;
    let grants = distinct_grants(&s, "act", 20, 6, || Lease::Duration(w.lease(3600)));
    // 20 grants and 26 objects on the sandbox; 14 of the grants applied before the kill.
    let (n, objects) = (grants.len(), grants.len() + federated(&grants));
    let before_kill = n * 7 / 10;
    if w.has(Capability::Faults) {
        // Slow writes keep several in flight when the operator dies. Real ARM is slow anyway.
        w.azure_fault(
            json!({"method": "PUT", "pathPattern": "roleAssignments/|federatedIdentityCredentials/",
            "action": {"type": "latency", "millis": 300}}),
        )
        .await?;
    }
    for g in &grants[..before_kill] {
        w.apply_ok(&g.yaml())?;
    }
    if w.has(Capability::AuditLog) {
        wait_audit(&w, |a| {
            requests_by_path(a, "PUT", "/roleassignments/")
                .values()
                .flatten()
                .any(|e| succeeded(e))
        })
        .await?;
    } else {
        // No request log: kill as soon as Azure lists the first object written.
        w.wait_owned(timeout, |owned| !owned.is_empty()).await?;
    }
    let old = w.kill_operator();
    let puts_at_kill = w.audit_log().await?.map_or_else(
        || "no request log".to_owned(),
        |a| format!("{} object PUTs seen", count(&a, "PUT")),
    );
    let active_at_kill = w
        .grants(NS)
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|g| phase_is(GrantPhase::Active)(g))
        .count();
    println!("killed with {active_at_kill} of {before_kill} grants Active ({puts_at_kill})");
    // Grants applied while no operator runs.
    for g in &grants[before_kill..] {
        w.apply_ok(&g.yaml())?;
    }
    drop(old);

    let restarted = Instant::now();
    w.start_operator(&[]).await?;
    let ready = restarted.elapsed();
    let all = w
        .wait_all(NS, &names(&grants), timeout, phase_is(GrantPhase::Active))
        .await?;
    println!(
        "restart recovery: ready {} ms, all {n} Active {} ms after restart",
        ready.as_millis(),
        restarted.elapsed().as_millis()
    );

    if let Some(audit) = w.audit_log().await? {
        let written = assert_no_duplicate_puts(&audit);
        assert_eq!(written, objects, "{n} role assignments and the FICs");
    }
    // No orphan and no duplicate: what Azure holds is exactly what the grants record.
    let recorded = recorded(&all);
    assert_eq!(
        recorded.len(),
        objects,
        "objects recorded in the grants' status"
    );
    w.settle(
        "the Azure objects carrying the cluster's marker",
        recorded,
        async || w.owned_objects().await,
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_revocations_then_restart_deletes_everything() -> anyhow::Result<()> {
    let mut w = World::start().await?;
    let timeout = w.scaled(TIMEOUT);
    let s = setup(&w, 4).await?;
    // Whole seconds: notAfter is written to the second.
    let lease = i64::try_from(w.scaled(Duration::from_secs(15)).as_secs())?;
    let expires = DateTime::from_timestamp(Utc::now().timestamp() + lease, 0)
        .ok_or_else(|| anyhow::anyhow!("time out of range"))?;
    let grants = distinct_grants(&s, "rev", 12, 4, || Lease::NotAfter(expires));
    // 12 grants and 16 objects on the sandbox.
    let (n, objects) = (grants.len(), grants.len() + federated(&grants));
    for g in &grants {
        w.apply_ok(&g.yaml())?;
    }
    w.wait_all(NS, &names(&grants), timeout, phase_is(GrantPhase::Active))
        .await?;
    w.settle(
        "the number of Azure objects carrying the cluster's marker",
        objects,
        async || Ok(w.owned_objects().await?.len()),
    )
    .await?;
    if w.has(Capability::Faults) {
        // Slow deletes keep several in flight when the operator dies.
        w.azure_fault(
            json!({"method": "DELETE", "pathPattern": "roleAssignments/|federatedIdentityCredentials/",
            "action": {"type": "latency", "millis": 400}}),
        )
        .await?;
    }
    if w.has(Capability::AuditLog) {
        wait_audit(&w, |a| {
            OBJECTS.split('|').any(|p| {
                requests_by_path(a, "DELETE", p)
                    .values()
                    .flatten()
                    .any(|e| succeeded(e))
            })
        })
        .await?;
    } else {
        // No request log: kill as soon as Azure no longer lists one of the objects.
        w.wait_owned(timeout, |owned| owned.len() < objects).await?;
    }
    let old = w.kill_operator();
    let deletes_at_kill = w.audit_log().await?.map_or_else(
        || "no request log".to_owned(),
        |a| format!("{} object DELETEs answered", count(&a, "DELETE")),
    );
    let left_at_kill = w.owned_objects().await?.len();
    println!("killed with {left_at_kill} of {objects} objects still listed ({deletes_at_kill})");
    drop(old);

    let restarted = Instant::now();
    w.start_operator(&[]).await?;
    w.wait_all(NS, &names(&grants), timeout, phase_is(GrantPhase::Expired))
        .await?;
    println!(
        "restart recovery: all {n} Expired {} ms after restart",
        restarted.elapsed().as_millis()
    );
    w.settle(
        "orphans left (Azure objects carrying the cluster's marker)",
        BTreeSet::new(),
        async || w.owned_objects().await,
    )
    .await?;

    if let Some(audit) = w.audit_log().await? {
        assert_one_delete_each(&audit);
        let overstay = overstays(&audit, expires)?;
        assert_eq!(
            overstay.len(),
            objects,
            "one acknowledged DELETE per object"
        );
        assert!(overstay[0] >= 0, "deleted before the lease ended");
        println!(
            "overstay (lease end -> DELETE acknowledged) across the kill: {}",
            summary(&overstay)
        );
    }
    // The new operator reports the overstay of what it deleted.
    let m = w.metrics().await?;
    let observed = metric(&m, "lapse_overstay_seconds_count");
    let sum = metric(&m, "lapse_overstay_seconds_sum");
    println!("operator-reported overstay: {observed} objects, {sum:.1} s in total");
    // Only the injected latency makes sure the old operator left deletes to the new one; real
    // ARM may have finished them all (or acknowledged the last in flight) before the kill.
    if w.has(Capability::Faults) {
        assert!(observed >= 1.0, "no overstay reported:\n{m}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_sweep_deletes_objects_of_grants_deleted_while_down() -> anyhow::Result<()> {
    let mut w = World::start().await?;
    // make e2e-external leaves this test out when the fixture is not set (nextest: skipped).
    anyhow::ensure!(
        w.fixtures.second_identity().is_some(),
        "the orphaned FIC must sit on an identity no live grant names: needs \
         LAPSE_E2E_IDENTITIES with two identities"
    );
    let timeout = w.scaled(TIMEOUT);
    let s = setup(&w, 2).await?;
    let grants = distinct_grants(&s, "sweep", 2, 2, || Lease::Duration(w.lease(3600)));
    // Different identities, so neither shares an object with the other.
    let (gone, kept) = (&grants[0], &grants[1]);
    let kept = GrantSpec {
        identity: &s.identities[1],
        name: kept.name.clone(),
        role: kept.role,
        scope: kept.scope,
        service_account: kept.service_account.clone(),
        lease: Lease::Duration(w.lease(3600)),
    };
    w.apply_ok(&gone.yaml())?;
    w.apply_ok(&kept.yaml())?;
    let active = w
        .wait_all(
            NS,
            &[gone.name.clone(), kept.name.clone()],
            timeout,
            phase_is(GrantPhase::Active),
        )
        .await?;
    let of = |name: &str| -> BTreeSet<String> {
        active
            .iter()
            .filter(|g| g.metadata.name.as_deref() == Some(name))
            .flat_map(recorded_ids)
            .collect()
    };
    let (orphans, live) = (of(&gone.name), of(&kept.name));
    assert_eq!((orphans.len(), live.len()), (2, 2), "RA and FIC each");

    let old = w.kill_operator();
    w.kubectl_ok(&[
        "-n",
        NS,
        "patch",
        "accessgrant",
        &gone.name,
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])?;
    w.kubectl_ok(&["-n", NS, "delete", "accessgrant", &gone.name, "--wait=true"])?;
    drop(old);
    assert!(w.grants(NS).get_opt(&gone.name).await?.is_none());
    w.settle(
        "the deleted grant's objects are still in Azure",
        true,
        async || Ok(w.owned_objects().await?.is_superset(&orphans)),
    )
    .await?;

    let (orphan_ras, orphan_fics): (BTreeSet<String>, BTreeSet<String>) = orphans
        .iter()
        .cloned()
        .partition(|id| id.contains("/roleassignments/"));

    let restarted = Instant::now();
    w.start_operator(&[]).await?;
    let left = w
        .wait_owned(timeout, |owned| owned.is_disjoint(&orphan_ras))
        .await?;
    println!(
        "start-up sweep removed the orphaned role assignment {} ms after restart",
        restarted.elapsed().as_millis()
    );
    assert!(left.is_superset(&live), "the live grant's objects stay");
    w.wait_phase(NS, &kept.name, GrantPhase::Active, timeout)
        .await?;
    // The FIC sits on an identity no live grant names any more; the sweep must still find it.
    // Three sweep intervals (10 s each) are plenty.
    let left = w
        .wait_owned(w.scaled(Duration::from_secs(30)), |owned| {
            owned.is_disjoint(&orphan_fics)
        })
        .await
        .map_err(|e| anyhow::anyhow!("orphaned FIC {orphan_fics:?} never swept: {e}"))?;
    assert_eq!(left, live, "the live grant's objects stay");
    let m = w.metrics().await?;
    assert_eq!(metric(&m, "lapse_orphans_deleted_total"), 2.0, "{m}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_and_compacted_watches_do_not_lose_activations_or_lapses() -> anyhow::Result<()> {
    sandbox_only(
        Capability::Faults,
        "drops and compacts sim-kube's watches and restarts its apiserver",
    )?;
    let w = World::start().await?;
    let s = setup(&w, 3).await?;
    let grants = distinct_grants(&s, "watch", 9, 3, || Lease::Duration(w.lease(12)));
    let faults = [
        json!({"action": "drop-watches"}),
        json!({"action": "compact"}),
        json!({"action": "restart"}),
    ];
    for (g, fault) in grants.iter().zip(faults.iter().cycle()) {
        w.apply_ok(&g.yaml())?;
        w.kube_fault(fault.clone()).await?;
    }
    w.wait_all(NS, &names(&grants), TIMEOUT, phase_is(GrantPhase::Active))
        .await?;
    // And again while the leases lapse.
    for fault in &faults {
        w.kube_fault(fault.clone()).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let ended = w
        .wait_all(NS, &names(&grants), TIMEOUT, phase_is(GrantPhase::Expired))
        .await?;
    assert_eq!(w.owned_objects().await?, BTreeSet::new(), "orphans left");
    let audit = w.audit().await?;
    assert_eq!(assert_no_duplicate_puts(&audit), 12);
    assert_one_delete_each(&audit);
    let overstay = overstays_of(&audit, &ended)?;
    assert_eq!(overstay.len(), 12, "one acknowledged DELETE per object");
    assert!(overstay[0] >= 0, "deleted before the lease ended");
    println!("overstay with watch faults: {}", summary(&overstay));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_throttling_and_5xx_delay_but_never_duplicate_or_orphan() -> anyhow::Result<()> {
    sandbox_only(
        Capability::Faults,
        "injects ARM 429s and 5xx on writes and deletes through sim-azure",
    )?;
    let mut w = World::without_operator().await?;
    w.start_operator(&[("LAPSE_OVERDUE_AFTER", "3s"), ("LAPSE_RETRY_AFTER", "1s")])
        .await?;
    let s = setup(&w, 2).await?;
    let grants = distinct_grants(&s, "storm", 6, 2, || Lease::Duration(w.lease(15)));
    let all = names(&grants);

    // Activation through a 429 storm on role assignment writes and 5xx on FIC writes.
    w.azure_fault(json!({"method": "PUT", "pathPattern": "roleAssignments/",
        "action": {"type": "throttle", "retryAfterSecs": 1}}))
        .await?;
    w.azure_fault(json!({"method": "PUT", "pathPattern": "federatedIdentityCredentials/",
        "action": {"type": "status", "status": 503, "code": "ServiceUnavailable", "message": "injected"}}))
        .await?;
    let applied = Instant::now();
    for g in &grants {
        w.apply_ok(&g.yaml())?;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let storm = w.audit().await?;
    w.clear_azure_faults().await?;
    w.wait_all(NS, &all, TIMEOUT, phase_is(GrantPhase::Active))
        .await?;
    let refused = storm
        .iter()
        .filter(|e| e["method"] == "PUT" && !succeeded(e))
        .count();
    assert!(refused > 0, "the storm refused nothing");
    println!(
        "activation through 4 s of 429/503 ({refused} refused writes): all Active {} ms after apply",
        applied.elapsed().as_millis()
    );

    // Revocation: a 429 burst, then 5xx on every DELETE until the leases are reported overdue.
    w.azure_fault(
        json!({"method": "DELETE", "pathPattern": "roleAssignments/|federatedIdentityCredentials/",
        "action": {"type": "throttle", "retryAfterSecs": 1}, "times": 4}),
    )
    .await?;
    w.azure_fault(json!({"method": "DELETE", "pathPattern": "roleAssignments/|federatedIdentityCredentials/",
        "action": {"type": "status", "status": 500, "code": "InternalServerError", "message": "injected"}}))
        .await?;
    let overdue = w
        .wait_all(NS, &all, TIMEOUT, |g| {
            condition(g, "RevocationOverdue") == Some(ConditionStatus::True)
        })
        .await?;
    for g in &overdue {
        let phase = g.status.as_ref().map(|s| s.phase);
        assert_eq!(phase, Some(GrantPhase::Revoking), "overdue but {phase:?}");
    }
    let m = w.metrics().await?;
    assert_eq!(metric(&m, "lapse_revocations_overdue"), 6.0, "{m}");
    let events_while_overdue = w.kubectl_ok(&["-n", NS, "get", "events", "-o", "json"])?;
    // Nothing was deleted yet, nothing given up on.
    assert_eq!(w.owned_objects().await?.len(), 8);

    let cleared = Instant::now();
    w.clear_azure_faults().await?;
    let ended = w
        .wait_all(NS, &all, TIMEOUT, |g| {
            phase_is(GrantPhase::Expired)(g)
                && condition(g, "RevocationOverdue") != Some(ConditionStatus::True)
        })
        .await?;
    println!(
        "after the 5xx cleared: all Expired and overdue cleared in {} ms",
        cleared.elapsed().as_millis()
    );
    assert_eq!(ended.len(), 6);
    assert_eq!(w.owned_objects().await?, BTreeSet::new(), "orphans left");
    let audit = w.audit().await?;
    let puts = requests_by_path(&audit, "PUT", "/providers/");
    for part in OBJECTS.split('|') {
        for (path, entries) in puts.iter().filter(|(p, _)| p.contains(part)) {
            assert_eq!(
                entries.iter().filter(|e| succeeded(e)).count(),
                1,
                "successful PUTs of {path}"
            );
        }
    }
    assert_one_delete_each(&audit);
    let overstay = overstays_of(&audit, &ended)?;
    assert_eq!(overstay.len(), 8, "one acknowledged DELETE per object");
    println!(
        "overstay with DELETEs failing until cleared: {}",
        summary(&overstay)
    );
    let m = w.metrics().await?;
    assert_eq!(metric(&m, "lapse_revocations_overdue"), 0.0, "{m}");
    // Last, so that everything above is checked even while this fails: the overdue
    // revocation must also be announced as an Event (docs/architecture.md, "Invariants": no overstay).
    assert!(
        events_while_overdue.contains("\"reason\": \"RevocationOverdue\""),
        "no RevocationOverdue Event while the revocations were overdue"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_appears_in_anything_the_operator_emits() -> anyhow::Result<()> {
    let w = World::start().await?;
    let timeout = w.scaled(TIMEOUT);
    let s = setup(&w, 1).await?;
    let grant = distinct_grants(&s, "secret", 1, 1, || Lease::Duration(w.lease(6)));
    let (_, client_id) = w.identity(w.fixtures.identity()).await?;
    w.apply_ok(&grant[0].yaml())?;
    w.wait_phase(NS, &grant[0].name, GrantPhase::Active, timeout)
        .await?;
    // The workload uses the access: an SA token exchanged for an ARM token.
    let sa_token = w.service_account_token(NS, "runner-0").await?;
    let mut access_token = String::new();
    w.settle(
        "the workload's exchange and read while active",
        Ok(200),
        async || {
            Ok(match w.exchange(&sa_token, &client_id).await? {
                Ok(token) => {
                    let read = w.arm_get(&token, &s.scopes[0], "2022-09-01").await?;
                    access_token = token;
                    Ok(read)
                }
                Err(e) => Err(format!("exchange refused while active: {e}")),
            })
        },
    )
    .await?;
    w.wait_phase(NS, &grant[0].name, GrantPhase::Expired, timeout)
        .await?;

    let emitted = [
        ("operator log", w.operator_logs()),
        (
            "Events",
            w.kubectl_ok(&["get", "events", "-A", "-o", "yaml"])?,
        ),
        (
            "grant status",
            w.kubectl_ok(&["get", "accessgrants", "-A", "-o", "yaml"])?,
        ),
        ("metrics", w.metrics().await?),
    ];
    assert!(
        emitted[1].1.contains(&grant[0].name),
        "no Events about the grant"
    );
    let secret = w.env("AZURE_CLIENT_SECRET")?.to_owned();
    let needles = [
        ("the operator's client secret", secret.as_str()),
        ("the ServiceAccount token", sa_token.as_str()),
        ("the workload's access token", access_token.as_str()),
        ("a JWT", "eyJ"),
    ];
    for (what, text) in &emitted {
        assert!(!text.is_empty(), "{what} is empty");
        for (needle_name, needle) in needles {
            assert!(!needle.is_empty());
            assert!(
                !text.contains(needle),
                "{needle_name} appears in the {what}"
            );
        }
    }
    Ok(())
}

/// Installs a newer version's AccessGrant CRD: one more phase (`Suspended`), which this
/// version's types do not know. Grants written under it are what a downgrade leaves behind.
fn newer_crd(w: &World) -> anyhow::Result<()> {
    let crd: Value = serde_json::from_str(&w.kubectl_ok(&[
        "get",
        "crd",
        "accessgrants.lapse.dev",
        "-o",
        "json",
    ])?)?;
    let mut crd = crd;
    let versions = crd
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| anyhow::anyhow!("CRD without versions"))?;
    for v in versions {
        if let Some(phases) = v
            .pointer_mut("/schema/openAPIV3Schema/properties/status/properties/phase/enum")
            .and_then(Value::as_array_mut)
        {
            phases.push(json!("Suspended"));
        }
    }
    if let Some(meta) = crd.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    w.apply_ok(&serde_json::to_string(&crd)?)?;
    Ok(())
}

/// Sets a grant's status phase as a newer operator version would.
fn suspend(w: &World, name: &str) -> anyhow::Result<()> {
    w.kubectl_ok(&[
        "-n",
        NS,
        "patch",
        "accessgrant",
        name,
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"phase":"Suspended"}}"#,
    ])?;
    Ok(())
}

/// A grant this version cannot read (a phase of a newer version, left by a downgrade) neither
/// keeps the cache from loading nor stalls the hundred beside it; it is reported on the grant,
/// in the log and in a gauge. A readable grant that turns unreadable fails closed: its lease
/// ends and its Azure objects go; deleting it is not held up by the finalizer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_grant_beside_a_hundred_good_ones_stalls_nothing() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "installs a newer version's AccessGrant CRD",
    )?;
    let mut w = World::without_operator().await?;
    let timeout = w.scaled(TIMEOUT);
    let s = setup(&w, 0).await?;
    newer_crd(&w)?;
    let identity = s.identities[0].as_str();
    let spec = |name: String, role, scope| GrantSpec {
        name,
        identity,
        role,
        scope,
        service_account: None,
        lease: Lease::Duration(w.lease(3600)),
    };
    // Written before the operator starts: it must load its cache with this one in it.
    let future = spec("future".into(), "Reader", &s.scopes[0]);
    w.apply_ok(&future.yaml())?;
    suspend(&w, "future")?;
    let mut good: Vec<GrantSpec> = (0..99)
        .map(|i| spec(format!("good-{i}"), "Reader", &s.scopes[0]))
        .collect();
    // One with an Azure object of its own, to turn unreadable later.
    good.push(spec("turns".into(), "Key Vault Reader", &s.scopes[1]));
    for g in &good {
        w.apply_ok(&g.yaml())?;
    }
    let started = Instant::now();
    w.start_operator(&[]).await?;
    let all = w
        .wait_all(NS, &names(&good), timeout, phase_is(GrantPhase::Active))
        .await?;
    println!(
        "{} good grants Active {} ms after start, beside an unreadable one",
        all.len(),
        started.elapsed().as_millis()
    );
    let event = w.wait_event(NS, "future", "Unreadable", timeout).await?;
    assert_eq!(event.type_, "Warning");
    assert!(event.message.contains("Suspended"), "{event:?}");
    let logs = w.operator_logs();
    assert!(logs.contains("AccessGrant ops/future"), "{logs}");
    let unreadable = |text: &str| metric(text, "lapse_unreadable_objects{kind=\"AccessGrant\"}");
    assert_eq!(unreadable(&w.metrics().await?), 1.0);
    // The unreadable grant was never acted on.
    assert_eq!(
        w.grant_jsonpath(NS, "future", "{.status.phase}")?,
        "Suspended"
    );

    // A live lease turning unreadable ends: nothing claims its object any more.
    let turns = all
        .iter()
        .find(|g| g.metadata.name.as_deref() == Some("turns"))
        .ok_or_else(|| anyhow::anyhow!("grant turns not listed"))?;
    let own = recorded_ids(turns);
    assert_eq!(own.len(), 1, "{own:?}");
    let shared: BTreeSet<String> = recorded_ids(&all[0]).into_iter().collect();
    suspend(&w, "turns")?;
    let owned = w
        .wait_owned(timeout, |owned| !owned.contains(&own[0]))
        .await?;
    assert!(
        shared.is_subset(&owned),
        "the readable grants' object went too: {owned:?}"
    );
    assert_eq!(unreadable(&w.metrics().await?), 2.0);
    // Deleting it is not held up by a finalizer nobody can act on any more.
    w.kubectl_ok(&[
        "-n",
        NS,
        "delete",
        "accessgrant",
        "turns",
        &format!("--timeout={}s", timeout.as_secs()),
    ])?;
    w.wait_metrics(timeout, "one unreadable grant left", |m| {
        unreadable(m) == 1.0
    })
    .await?;
    w.wait_all(
        NS,
        &names(&good[..99]),
        timeout,
        phase_is(GrantPhase::Active),
    )
    .await?;
    Ok(())
}

/// ARM answers `AuthorizationFailed` while the operator's own role assignment propagates (up to
/// 10 minutes on a fresh install): a create refused so is retried for the grace, and the grant
/// says why it waits; one still refused after the grace fails, naming the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_failures_are_retried_for_the_grace_then_fail_the_grant() -> anyhow::Result<()>
{
    sandbox_only(
        Capability::Faults,
        "makes ARM refuse role assignment writes",
    )?;
    let mut w = World::without_operator().await?;
    w.start_operator(&[("LAPSE_AUTHORIZATION_GRACE", "20s")])
        .await?;
    let timeout = w.scaled(TIMEOUT);
    let s = setup(&w, 0).await?;
    let refused = |scope: &str, times: Option<u32>| {
        let mut rule = json!({"method": "PUT",
            "pathPattern": format!("^{}/providers/Microsoft.Authorization/roleAssignments/", regex_escape(scope)),
            "action": {"type": "status", "status": 403, "code": "AuthorizationFailed",
                "message": "The client does not have authorization to perform action \
                 'Microsoft.Authorization/roleAssignments/write' over scope or the scope is invalid. \
                 If access was recently granted, please refresh your credentials."}});
        if let Some(n) = times {
            rule["times"] = json!(n);
        }
        rule
    };
    let grant = |name: &str, scope| GrantSpec {
        name: name.into(),
        identity: &s.identities[0],
        role: "Reader",
        scope,
        service_account: None,
        lease: Lease::Duration(w.lease(3600)),
    };

    // The role arrives after three refusals: the grant waits, saying why, then activates.
    w.azure_fault(refused(&s.scopes[0], Some(3))).await?;
    let propagating = grant("propagating", s.scopes[0].as_str());
    w.apply_ok(&propagating.yaml())?;
    let waiting = w
        .wait_all(
            NS,
            &names(std::slice::from_ref(&propagating)),
            timeout,
            |g| {
                g.status.as_ref().is_some_and(|st| {
                    st.conditions
                        .iter()
                        .any(|c| c.type_ == "Reconciling" && c.reason == "AuthorizationPending")
                })
            },
        )
        .await?;
    let message = waiting[0]
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert!(message.contains("retrying until"), "{message}");
    w.wait_event(NS, "propagating", "AuthorizationPending", timeout)
        .await?;
    w.wait_all(
        NS,
        &names(std::slice::from_ref(&propagating)),
        timeout,
        phase_is(GrantPhase::Active),
    )
    .await?;

    // Never granted: after the grace the grant fails, and nothing of it is left in Azure.
    w.azure_fault(refused(&s.scopes[1], None)).await?;
    let never = grant("never", s.scopes[1].as_str());
    w.apply_ok(&never.yaml())?;
    let applied = Instant::now();
    let failed = w
        .wait_all(
            NS,
            &names(std::slice::from_ref(&never)),
            timeout,
            phase_is(GrantPhase::Failed),
        )
        .await?;
    println!(
        "refused grant failed {} ms after it was applied (grace 20 s)",
        applied.elapsed().as_millis()
    );
    let message = failed[0]
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("AuthorizationFailed") && message.contains("lacks this permission"),
        "{message}"
    );
    assert!(
        applied.elapsed() >= Duration::from_secs(15),
        "failed before the grace was over"
    );
    w.clear_azure_faults().await?;
    Ok(())
}

/// Someone deletes the key vault a grant's role assignment is on: ARM deletes the assignment
/// with it and refuses the revocation's DELETE with its 403 "… or the scope is invalid". The
/// operator finds the assignment gone and settles the revocation instead of retrying forever:
/// deleting the grant returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_whose_scope_was_deleted_is_revoked_without_retrying_forever() -> anyhow::Result<()>
{
    sandbox_only(
        Capability::DisposableTenant,
        "deletes the key vault a grant's role assignment is on",
    )?;
    let w = World::start().await?;
    let timeout = w.scaled(TIMEOUT);
    let s = setup(&w, 0).await?;
    let vault = s.scopes[2].clone();
    let grant = GrantSpec {
        name: "vault-reader".into(),
        identity: &s.identities[0],
        role: "Key Vault Reader",
        scope: &vault,
        service_account: None,
        lease: Lease::Duration(w.lease(3600)),
    };
    w.apply_ok(&grant.yaml())?;
    let active = w
        .wait_all(
            NS,
            &names(std::slice::from_ref(&grant)),
            timeout,
            phase_is(GrantPhase::Active),
        )
        .await?;
    let assignment = recorded_ids(&active[0])
        .into_iter()
        .find(|id| id.to_ascii_lowercase().contains("/roleassignments/"))
        .ok_or_else(|| anyhow::anyhow!("no role assignment recorded: {:?}", active[0].status))?;

    w.delete_scope(&vault).await?;
    let deleted_at = Utc::now();
    w.kubectl_ok(&[
        "-n",
        NS,
        "delete",
        "accessgrant",
        "vault-reader",
        "--wait",
        &format!("--timeout={}s", timeout.as_secs()),
    ])?;
    assert!(w.grants(NS).get_opt("vault-reader").await?.is_none());

    // Azure refused the DELETE as it does for a scope that is gone; the operator did not retry
    // it once it had seen the assignment was gone.
    let audit = w.audit().await?;
    let deletes: Vec<&Value> = audit
        .iter()
        .filter(|e| {
            e["method"] == "DELETE"
                && e["path"]
                    .as_str()
                    .is_some_and(|p| p.eq_ignore_ascii_case(&assignment))
        })
        .collect();
    assert!(!deletes.is_empty(), "no DELETE of {assignment}");
    for e in &deletes {
        assert_eq!(e["status"], 403, "{e}");
        assert_eq!(e["errorCode"], "AuthorizationFailed", "{e}");
    }
    assert_eq!(
        deletes.len(),
        1,
        "the refused DELETE was retried: {deletes:?}"
    );
    println!(
        "revocation at a deleted scope settled {} ms after kubectl delete",
        (Utc::now() - deleted_at).num_milliseconds()
    );
    Ok(())
}

/// A regular expression matching `s` literally.
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// DESIGN §12 "Locks", on a real lock (created through sim-azure's
/// `Microsoft.Authorization/locks`, no fault injected). A `CanNotDelete` lock at a scope lets
/// Azure create a role assignment there but not delete it (`409 ScopeLocked`). By default a
/// grant under it is `Denied` naming the lock, and nothing is created in Azure. Under a policy
/// with `locks: Tolerate` it activates; its revocation is then blocked, which is never silent
/// (`RevocationBlocked=True` and a Warning Event naming the lock, its level and its scope,
/// `lapse_revocations_blocked`, overdue),
/// and goes through once the lock is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_denies_a_grant_and_blocks_a_tolerated_revocation_until_it_is_removed()
-> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableTenant,
        "puts a management lock on the fixtures' storage account",
    )?;
    let mut w = World::without_operator().await?;
    w.start_operator(&[("LAPSE_OVERDUE_AFTER", "2s"), ("LAPSE_RETRY_AFTER", "1s")])
        .await?;
    let timeout = w.scaled(TIMEOUT);
    let s = setup(&w, 0).await?;
    let account = w.fixtures.storage_account_id();
    let lock = format!("{account}/providers/Microsoft.Authorization/locks/no-delete");
    let (status, body) = w
        .arm_put(
            &lock,
            "2016-09-01",
            &json!({"properties": {"level": "CanNotDelete", "notes": "lapse e2e"}}),
        )
        .await?;
    anyhow::ensure!(status == 201, "creating the lock: {status} {body}");

    // Denied, naming the lock; nothing created in Azure.
    let denied = GrantSpec {
        name: "locked".into(),
        identity: &s.identities[0],
        role: "Reader",
        scope: &account,
        service_account: None,
        lease: Lease::Duration(w.lease(3600)),
    };
    w.apply_ok(&denied.yaml())?;
    let got = w
        .wait_all(
            NS,
            &names(std::slice::from_ref(&denied)),
            timeout,
            phase_is(GrantPhase::Denied),
        )
        .await?;
    let message = got[0]
        .status
        .as_ref()
        .and_then(|st| st.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains(&lock) && message.contains("CanNotDelete"),
        "the denial does not name the lock: {message}"
    );
    assert!(
        w.owned_objects().await?.is_empty(),
        "a denied grant created something in Azure"
    );

    // Tolerated: it activates under the lock.
    w.kubectl_ok(&[
        "patch",
        "accesspolicy",
        "ops",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"locks":"Tolerate"}}"#,
    ])?;
    let tolerated = GrantSpec {
        name: "tolerated".into(),
        ..denied
    };
    let names = names(std::slice::from_ref(&tolerated));
    w.apply_ok(&tolerated.yaml())?;
    w.wait_all(NS, &names, timeout, phase_is(GrantPhase::Active))
        .await?;
    assert_eq!(w.owned_objects().await?.len(), 1);

    // Revoked: Azure refuses the DELETE; the grant says so, naming the locked scope.
    w.patch_grant(NS, "tolerated", r#"{"spec":{"revoked":true}}"#)?;
    let blocked = w
        .wait_all(NS, &names, timeout, |g| {
            condition(g, "RevocationBlocked") == Some(ConditionStatus::True)
                && condition(g, "RevocationOverdue") == Some(ConditionStatus::True)
        })
        .await?;
    let st = blocked[0].status.as_ref();
    assert_eq!(st.map(|s| s.phase), Some(GrantPhase::Revoking));
    let message = st
        .and_then(|st| {
            st.conditions
                .iter()
                .find(|c| c.type_ == "RevocationBlocked")
        })
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("ScopeLocked")
            && message
                .to_ascii_lowercase()
                .contains(&account.to_ascii_lowercase()),
        "RevocationBlocked does not name the locked scope: {message}"
    );
    // It names the lock to remove: its name, level and ID (the controller reads the locks
    // that apply at the refused object, `controller/src/blocked.rs`), and so does the Event.
    let named = format!("management lock \"no-delete\" (CanNotDelete, {lock})");
    assert!(
        message
            .to_ascii_lowercase()
            .contains(&named.to_ascii_lowercase()),
        "RevocationBlocked does not name the lock ({named}): {message}"
    );
    let event = w
        .wait_event(NS, "tolerated", "ScopeLocked", timeout)
        .await?;
    assert!(
        event.type_ == "Warning" && event.message.contains("\"no-delete\""),
        "the ScopeLocked Event does not name the lock: {event:?}"
    );
    assert_eq!(blocked_gauge(&w).await?, 1, "lapse_revocations_blocked");
    assert_eq!(w.owned_objects().await?.len(), 1);

    // The lock is removed: the revocation finishes and nothing is left.
    let status = w.arm_delete(&lock, "2016-09-01").await?;
    anyhow::ensure!(status == 200, "deleting the lock: {status}");
    let done = w
        .wait_all(NS, &names, timeout, phase_is(GrantPhase::Revoked))
        .await?;
    assert_eq!(
        condition(&done[0], "RevocationBlocked"),
        Some(ConditionStatus::False)
    );
    assert!(w.owned_objects().await?.is_empty());
    assert_eq!(blocked_gauge(&w).await?, 0, "lapse_revocations_blocked");
    Ok(())
}

/// `lapse_revocations_blocked` as the operator serves it.
async fn blocked_gauge(w: &World) -> anyhow::Result<i64> {
    let metrics = w.metrics().await?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("lapse_revocations_blocked "))
        .ok_or_else(|| anyhow::anyhow!("lapse_revocations_blocked is not served"))?
        .trim()
        .parse()
        .map_err(Into::into)
}
