//! `kubectl lapse audit` end to end (docs/kubectl-lapse.md, "audit"): the real `kubectl-lapse`
//! binary, run as the sandbox's auditor (`DIR/auditor.env`: Reader on the subscription, Graph
//! Application.Read.All), against the sandbox's estate (`Seed::sandbox_estate`: standing role
//! assignments, a GitHub Actions federated credential, a two-year client secret) and the
//! operator, with an orphan and an overstaying object planted: each found, nothing else; the
//! CI gate; `--suggest`'s manifests applied, their grants activating; and a lease's object
//! under a management lock reported, naming the lock.
//!
//! Each command's output is printed (`--nocapture` shows it): docs/kubectl-lapse.md quotes it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{TimeDelta, Utc};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use lapse_api::arm::ArmId;
use lapse_api::naming::{Marker, Owner};
use lapse_api::v1alpha1::GrantPhase;
use lapse_e2e::{Capability, World, binary, parse_env_file, sandbox_only};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(45);
const NS: &str = "estate";
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";

/// One run of the plugin.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn expect(self, code: i32) -> anyhow::Result<Self> {
        if self.code != code {
            bail!(
                "exit {} (wanted {code})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.code,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }

    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.stdout).with_context(|| format!("not JSON:\n{}", self.stdout))
    }
}

/// `kubectl lapse audit ARGS` as the sandbox's auditor, with the sandbox's kubeconfig.
fn audit(w: &World, args: &[&str]) -> anyhow::Result<Run> {
    let dir = &w.target.sandbox()?.dir;
    let env = parse_env_file(
        &std::fs::read_to_string(dir.join("auditor.env")).context("reading auditor.env")?,
    );
    let started = Instant::now();
    let out = Command::new(binary("kubectl-lapse")?)
        .arg("audit")
        .args(args)
        .env_remove("AZURE_FEDERATED_TOKEN_FILE")
        .envs(&env)
        .env("KUBECONFIG", w.kubeconfig())
        .stdin(Stdio::null())
        .output()?;
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    };
    println!(
        "$ kubectl lapse audit {}\n{}{}[exit {} in {:.2}s]\n",
        args.join(" "),
        run.stdout,
        run.stderr,
        run.code,
        run.took.as_secs_f64()
    );
    Ok(run)
}

/// (kind, principal, what) of every finding, as the table would name them.
fn found(doc: &Value) -> BTreeSet<(String, String, String)> {
    doc["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let principal = f["principal"]["displayName"]
                .as_str()
                .unwrap_or_else(|| f["principal"]["id"].as_str().unwrap_or_default());
            let what = f["role"]
                .as_str()
                .or_else(|| f["subject"].as_str())
                .unwrap_or_default();
            (
                f["kind"].as_str().unwrap_or_default().to_owned(),
                principal.to_owned(),
                what.to_owned(),
            )
        })
        .collect()
}

fn row(kind: &str, principal: &str, what: &str) -> (String, String, String) {
    (kind.to_owned(), principal.to_owned(), what.to_owned())
}

/// The standing access the sandbox's estate seed plants (`Seed::sandbox_estate`), the
/// operator's and the auditor's own roles included: what the audit finds on any sandbox.
fn seeded() -> BTreeSet<(String, String, String)> {
    BTreeSet::from([
        row("StandingRoleAssignment", "ci-deployer", "Contributor"),
        row(
            "StandingRoleAssignment",
            "legacy-etl",
            "Storage Blob Data Contributor",
        ),
        row("StandingRoleAssignment", "legacy-billing", "Reader"),
        row("StandingRoleAssignment", "lapse-auditor", "Reader"),
        row(
            "StandingRoleAssignment",
            "lapse-operator",
            "User Access Administrator",
        ),
        row(
            "StandingRoleAssignment",
            "lapse-operator",
            "Managed Identity Contributor",
        ),
        row(
            "StandingFederation",
            "legacy-etl",
            "repo:contoso/legacy-etl:ref:refs/heads/main",
        ),
        row(
            "LongLivedSecret",
            "legacy-billing",
            "client secret \"billing-prod\"",
        ),
    ])
}

/// This cluster's owner, as the operator derives it: `LAPSE_CLUSTER_NAME` and the
/// `kube-system` namespace's UID.
async fn owner(w: &World) -> anyhow::Result<(Owner, String)> {
    let ns: Api<Namespace> = Api::all(w.kube.clone());
    let uid = ns
        .get("kube-system")
        .await?
        .metadata
        .uid
        .context("kube-system has no UID")?;
    Ok((Owner::new(&w.cluster, &uid, None)?, uid))
}

fn policy(w: &World, ns: &str) -> String {
    let rg = w.fixtures.resource_group_id();
    format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: {ns}
spec:
  namespaces: ["{ns}"]
  identities: ["{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"]
  roles: ["Reader"]
  scopes: ["{rg}"]
  maxDuration: 1h
"#
    )
}

/// The audit finds the planted orphan and overstaying object beside the seeded standing
/// assignments, foreign federated credential and long-lived secret, and nothing else; it gates
/// CI on them (exit 3), refuses to vouch for kinds it could not check (exit 1), and once the
/// operator can delete again, the gate passes (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_finds_exactly_what_was_planted_and_gates_on_it() -> anyhow::Result<()> {
    sandbox_only(
        Capability::Faults,
        "refuses the deletes of the planted objects and reads the sandbox's auditor.env",
    )?;
    let w = World::start().await?;
    let (owner, uid) = owner(&w).await?;
    let rg = w.fixtures.resource_group_id();
    let storage = w.fixtures.storage_account_id();

    // A clean sandbox: exactly the seeded estate. Nothing of lapse's yet.
    let clean = audit(&w, &["-o", "json"])?.expect(0)?;
    let doc = clean.json()?;
    assert_eq!(found(&doc), seeded(), "{}", clean.stdout);
    assert_eq!(doc["notChecked"], json!([]), "{}", clean.stdout);

    // Graph throttles the audit: it waits out each Retry-After and finds the same.
    w.azure_fault(
        json!({"method": "GET", "pathPattern": "^/v1.0/applications$",
        "action": {"type": "throttle", "retryAfterSecs": 1}, "times": 2}),
    )
    .await?;
    let throttled = audit(&w, &["-o", "json"])?.expect(0)?;
    let doc = throttled.json()?;
    assert_eq!(found(&doc), seeded(), "{}", throttled.stdout);
    assert_eq!(doc["reads"]["throttled"], 2, "{}", throttled.stdout);
    assert!(
        throttled.took >= Duration::from_secs(2),
        "{:?}",
        throttled.took
    );
    w.clear_azure_faults().await?;

    // Azure refuses every role assignment delete from here on: the operator can neither sweep
    // the orphan nor revoke the lapsed grant.
    w.azure_fault(json!({"method": "DELETE", "pathPattern": "/roleAssignments/",
        "action": {"type": "status", "status": 500, "code": "InternalServerError",
                   "message": "The server encountered an internal error (planted by the estate audit test)."}}))
    .await?;

    // The overstay: a 4-second lease on report-agent whose delete never succeeds.
    w.kubectl_ok(&["create", "namespace", NS])?;
    w.apply_ok(&policy(&w, NS))?;
    let (report_agent, _) = w.identity("report-agent").await?;
    w.apply_ok(&format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessGrant
metadata: {{name: late, namespace: {NS}}}
spec:
  identity: {{managedIdentity: "{report_agent}"}}
  roles: [{{role: Reader, scope: "{storage}"}}]
  duration: 4s
"#
    ))?;
    let late = w
        .wait_phase(NS, "late", GrantPhase::Revoking, w.scaled(TIMEOUT))
        .await?;
    let late_id = late
        .status
        .as_ref()
        .and_then(|s| s.role_assignments.first())
        .and_then(|r| r.id.clone())
        .context("the lapsed grant records no role assignment")?;

    // The orphan: a role assignment only this cluster's operator would make (its derived name
    // and marker) that no grant claims, for backup-runner.
    let (status, runner) = w
        .arm_json(&w.fixtures.identity_id("backup-runner"), "2023-01-31")
        .await?;
    anyhow::ensure!(status == 200, "reading backup-runner: {status} {runner}");
    let runner_principal: uuid::Uuid = runner["properties"]["principalId"]
        .as_str()
        .context("no principalId")?
        .parse()?;
    let name = owner.role_assignment_name(&runner_principal, &READER.parse()?, &ArmId::parse(&rg)?);
    let marker = Marker {
        cluster: w.cluster.clone(),
        owner: Some(uid.clone()),
        grant: Some(format!("{NS}/ghost")),
        expires_at: Some(Utc::now() - TimeDelta::hours(1)),
    };
    let orphan_id = format!("{rg}/providers/Microsoft.Authorization/roleAssignments/{name}");
    let (status, body) = w
        .arm_put(
            &orphan_id,
            "2022-04-01",
            &json!({"properties": {
                "roleDefinitionId": w.role_definition_id("Reader").await?,
                "principalId": runner_principal,
                "principalType": "ServicePrincipal",
                "description": marker.to_description(),
            }}),
        )
        .await?;
    anyhow::ensure!(status == 201, "planting the orphan: {status} {body}");
    // The lease has ended more than a second ago.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let table = audit(&w, &["--overstay-after", "1s"])?.expect(0)?;
    for line in [
        "Orphan ",
        "Overstay ",
        "StandingFederation ",
        "LongLivedSecret ",
    ] {
        assert!(table.stdout.contains(line), "{line}: {}", table.stdout);
    }
    let run = audit(&w, &["--overstay-after", "1s", "-o", "json"])?.expect(0)?;
    let doc = run.json()?;
    let mut want = seeded();
    want.insert(row("Orphan", "backup-runner", "Reader"));
    want.insert(row("Overstay", "report-agent", "Reader"));
    assert_eq!(found(&doc), want, "{}", run.stdout);
    let by_kind = |kind: &str| -> Vec<&Value> {
        doc["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["kind"] == kind)
            .collect()
    };
    let orphan = by_kind("Orphan")[0];
    assert_eq!(
        orphan["objectId"].as_str().map(str::to_ascii_lowercase),
        Some(orphan_id.to_ascii_lowercase())
    );
    assert_eq!(orphan["grant"], format!("{NS}/ghost"));
    let overstay = by_kind("Overstay")[0];
    assert_eq!(
        overstay["objectId"].as_str().map(str::to_ascii_lowercase),
        Some(late_id.to_ascii_lowercase())
    );
    assert_eq!(overstay["grant"], format!("{NS}/late"));
    // Standing findings carry their object, principal, scope, role and coverage.
    for f in by_kind("StandingRoleAssignment") {
        assert!(
            f["objectId"]
                .as_str()
                .is_some_and(|id| id.contains("/roleAssignments/")),
            "{f}"
        );
        assert!(
            f["scope"].is_string() && f["roleDefinitionId"].is_string(),
            "{f}"
        );
        assert_eq!(f["coveredBy"], json!([]), "{f}");
    }
    let fic = by_kind("StandingFederation")[0];
    assert_eq!(fic["issuer"], "https://token.actions.githubusercontent.com");
    let secret = by_kind("LongLivedSecret")[0];
    assert_eq!(secret["credential"]["lifetimeDays"], 730);
    assert_eq!(doc["cluster"]["names"], json!([w.cluster.clone()]));
    assert_eq!(doc["tally"]["otherClusters"], 0);

    // The CI gate: exit 3 for findings of the chosen kinds, 0 for kinds that are absent.
    let gate = audit(
        &w,
        &["--overstay-after", "1s", "--fail-on", "Orphan,Overstay"],
    )?
    .expect(3)?;
    assert!(
        gate.stderr.contains("findings: 1 Orphan, 1 Overstay"),
        "{}",
        gate.stderr
    );
    audit(
        &w,
        &["--fail-on", "LongLivedSecret", "--max-secret-age", "800d"],
    )?
    .expect(0)?;
    audit(&w, &["--fail-on", "longlivedsecret"])?.expect(3)?;
    audit(&w, &["--fail-on", "Nonsense"])?.expect(2)?;
    // Without the cluster, orphans cannot be told: the gate refuses to vouch.
    let blind = audit(&w, &["--no-cluster", "--fail-on", "Orphan"])?.expect(1)?;
    assert!(blind.stderr.contains("not checked"), "{}", blind.stderr);

    // Azure deletes again: the operator revokes and sweeps, and the gate passes.
    w.clear_azure_faults().await?;
    w.wait_phase(NS, "late", GrantPhase::Expired, w.scaled(TIMEOUT))
        .await?;
    let deadline = Instant::now() + w.scaled(TIMEOUT);
    loop {
        let run = audit(
            &w,
            &["--overstay-after", "1s", "--fail-on", "Orphan,Overstay"],
        )?;
        if run.code == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the orphan was never swept:\n{}\n{}",
                run.stdout,
                run.stderr
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let after = audit(&w, &["-o", "json"])?.expect(0)?;
    assert_eq!(found(&after.json()?), seeded(), "{}", after.stdout);
    println!(
        "audit of the sandbox: {:.2}s for {} reads",
        run.took.as_secs_f64(),
        doc["reads"]["arm"].as_u64().unwrap_or(0) + doc["reads"]["graph"].as_u64().unwrap_or(0)
    );
    Ok(())
}

/// A lock added while a lease runs (the policy denies locks, but the lock came after the
/// activation): the audit reports the lease's role assignment as `LockedLapseObject`, naming
/// the lock, its level and the grant whose revocation it will block, for one ARM read more (the
/// subscription's locks, read only because lapse has objects there); it gates on it and
/// `--suggest` says how to lift it. Once the lock is gone, so is the finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapse_object_under_a_lock_is_reported_naming_the_lock() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableTenant,
        "puts a management lock on the fixtures' storage account",
    )?;
    let w = World::start().await?;
    let storage = w.fixtures.storage_account_id();
    let arm_reads = |doc: &Value| doc["reads"]["arm"].as_u64().unwrap_or_default();

    // Nothing of lapse's: no lock is read.
    let clean = audit(&w, &["-o", "json"])?.expect(0)?;
    let before = arm_reads(&clean.json()?);

    w.kubectl_ok(&["create", "namespace", NS])?;
    w.apply_ok(&policy(&w, NS))?;
    let (report_agent, _) = w.identity("report-agent").await?;
    w.apply_ok(&format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessGrant
metadata: {{name: locked, namespace: {NS}}}
spec:
  identity: {{managedIdentity: "{report_agent}"}}
  roles: [{{role: Reader, scope: "{storage}"}}]
  duration: 1h
"#
    ))?;
    let active = w
        .wait_phase(NS, "locked", GrantPhase::Active, w.scaled(TIMEOUT))
        .await?;
    let ra_id = active
        .status
        .as_ref()
        .and_then(|s| s.role_assignments.first())
        .and_then(|r| r.id.clone())
        .context("the grant records no role assignment")?;
    // lapse's object, unlocked: one ARM read more (the subscription's locks), no finding.
    let unlocked = audit(&w, &["-o", "json"])?.expect(0)?;
    let doc = unlocked.json()?;
    assert_eq!(found(&doc), seeded(), "{}", unlocked.stdout);
    assert_eq!(arm_reads(&doc), before + 1, "{}", unlocked.stdout);

    let lock = format!("{storage}/providers/Microsoft.Authorization/locks/keep-data");
    let (status, body) = w
        .arm_put(
            &lock,
            "2016-09-01",
            &json!({"properties": {"level": "CanNotDelete", "notes": "estate audit e2e"}}),
        )
        .await?;
    anyhow::ensure!(status == 201, "creating the lock: {status} {body}");

    let run = audit(&w, &["-o", "json"])?.expect(0)?;
    let doc = run.json()?;
    let mut want = seeded();
    want.insert(row("LockedLapseObject", "report-agent", "Reader"));
    assert_eq!(found(&doc), want, "{}", run.stdout);
    assert_eq!(arm_reads(&doc), before + 1, "{}", run.stdout);
    let f = doc["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["kind"] == "LockedLapseObject")
        .context("no LockedLapseObject")?;
    assert_eq!(
        f["objectId"].as_str().map(str::to_ascii_lowercase),
        Some(ra_id.to_ascii_lowercase())
    );
    assert_eq!(f["grant"], format!("{NS}/locked"));
    assert_eq!(f["locks"][0]["name"], "keep-data", "{f}");
    assert_eq!(f["locks"][0]["level"], "CanNotDelete", "{f}");
    assert_eq!(
        f["locks"][0]["id"].as_str().map(str::to_ascii_lowercase),
        Some(lock.to_ascii_lowercase()),
        "{f}"
    );
    let detail = f["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("management lock \"keep-data\" (CanNotDelete, ")
            && detail.contains("its revocation will be blocked (RevocationBlocked)"),
        "{detail}"
    );
    assert_eq!(doc["summary"]["LockedLapseObject"], 1, "{}", run.stdout);

    let table = audit(&w, &[])?.expect(0)?;
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("LockedLapseObject ")
                && l.contains("lock keep-data (CanNotDelete); revocation will be blocked")),
        "{}",
        table.stdout
    );
    let gate = audit(&w, &["--fail-on", "LockedLapseObject"])?.expect(3)?;
    assert!(
        gate.stderr.contains("findings: 1 LockedLapseObject"),
        "{}",
        gate.stderr
    );
    let suggested = audit(&w, &["--suggest", "-n", NS])?.expect(0)?;
    assert!(
        suggested
            .stdout
            .contains(&format!("az lock delete --ids {lock}"))
            && suggested
                .stdout
                .contains(&format!("kubectl lapse -n {NS} revoke locked")),
        "{}",
        suggested.stdout
    );
    assert!(
        suggested
            .stderr
            .contains("1 object of lapse's under a management lock"),
        "{}",
        suggested.stderr
    );

    // The lock is lifted: nothing to report; the lease ends as it should.
    let status = w.arm_delete(&lock, "2016-09-01").await?;
    anyhow::ensure!(status == 200, "deleting the lock: {status}");
    audit(&w, &["--fail-on", "LockedLapseObject"])?.expect(0)?;
    w.patch_grant(NS, "locked", r#"{"spec":{"revoked":true}}"#)?;
    w.wait_phase(NS, "locked", GrantPhase::Revoked, w.scaled(TIMEOUT))
        .await?;
    Ok(())
}

/// `--suggest`: for each standing role assignment, an AccessPolicy and an AccessGrant; applied
/// to the sandbox, the grants activate (a service principal's and a managed identity's), and
/// the next audit names the applied policy as covering the standing assignment, which is now
/// safe to remove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggested_manifests_give_the_same_access_just_in_time() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableTenant,
        "applies suggestions for the sandbox estate's own standing assignments",
    )?;
    let w = World::start().await?;
    let ns = "legacy";
    w.kubectl_ok(&["create", "namespace", ns])?;

    let text = audit(&w, &["--suggest", "-n", ns])?.expect(0)?;
    assert!(
        text.stdout.starts_with("# StandingRoleAssignment"),
        "{}",
        text.stdout
    );
    assert!(
        text.stderr.contains("suggestions to review"),
        "{}",
        text.stderr
    );

    let run = audit(&w, &["--suggest", "-n", ns, "-o", "json"])?.expect(0)?;
    let doc = run.json()?;
    let mut applied = BTreeMap::new();
    for f in doc["findings"].as_array().into_iter().flatten() {
        let who = f["principal"]["displayName"].as_str().unwrap_or_default();
        if f["kind"] != "StandingRoleAssignment" || !["ci-deployer", "legacy-etl"].contains(&who) {
            assert!(
                f["kind"] != "StandingRoleAssignment" || f["suggestion"].is_object(),
                "{f}"
            );
            continue;
        }
        let yaml = f["suggestion"]["yaml"]
            .as_str()
            .with_context(|| format!("no suggestion in {f}"))?;
        w.apply_ok(yaml)?;
        let grant = f["suggestion"]["grant"]["metadata"]["name"]
            .as_str()
            .context("suggested grant without a name")?
            .to_owned();
        applied.insert(who.to_owned(), (grant, f["objectId"].clone()));
    }
    assert_eq!(applied.len(), 2, "{}", run.stdout);
    for (who, (grant, _)) in &applied {
        let waited = Instant::now();
        let g = w
            .wait_phase(ns, grant, GrantPhase::Active, w.scaled(TIMEOUT))
            .await
            .with_context(|| format!("the grant suggested for {who}"))?;
        println!(
            "{who}: {ns}/{grant} is Active after {:.1}s, objects {:?}",
            waited.elapsed().as_secs_f64(),
            g.status.as_ref().map(|s| s
                .role_assignments
                .iter()
                .map(|r| r.state)
                .collect::<Vec<_>>())
        );
    }

    // The applied policies now cover the standing assignments they replace.
    let again = audit(&w, &["-o", "json"])?.expect(0)?;
    let doc = again.json()?;
    for (who, (grant, object)) in &applied {
        let f = doc["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| &f["objectId"] == object)
            .with_context(|| format!("{who}'s standing assignment is gone from the audit"))?;
        assert_eq!(f["coveredBy"], json!([grant]), "{f}");
    }
    Ok(())
}
