//! The lease lifecycle end to end: real `lapse-sandbox` and `lapse-operator` processes,
//! asserted through kubectl, the Kubernetes API, Entra token exchange and ARM.

use std::time::{Duration, Instant};

use lapse_api::v1alpha1::GrantPhase;
use lapse_e2e::{Capability, External, ExternalSettings, Sandbox, Target, World, calls};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(45);

fn policy(name: &str, rg: &str, max: &str) -> String {
    format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: {name}
spec:
  namespaces: ["payments"]
  identities: ["{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"]
  roles: ["Reader", "Storage Blob Data Reader"]
  scopes: ["{rg}"]
  serviceAccounts: ["backup-*"]
  maxDuration: {max}
"#
    )
}

fn grant(name: &str, mi: &str, scope: &str, duration: &str) -> String {
    format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessGrant
metadata:
  name: {name}
  namespace: payments
spec:
  identity:
    managedIdentity: {mi}
  roles:
  - role: Reader
    scope: {scope}
  federation:
    serviceAccount: backup-runner
  duration: {duration}
  justification: "OPS-1 e2e"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_has_access_exactly_while_its_grant_is_active() -> anyhow::Result<()> {
    let w = World::start().await?;
    access_story(&w).await
}

/// The same story on a target described only by the settings a user exports for a real
/// cluster and tenant (`LAPSE_E2E_TARGET=external`): here a sandbox the test starts, seen
/// through none of its powers: no request log, no faults, a stretched clock and polled
/// propagation. This keeps the external path working between runs against real Azure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_story_holds_on_a_target_given_only_by_settings() -> anyhow::Result<()> {
    let sandbox = Sandbox::start()?;
    let mut vars = sandbox.as_external_settings();
    vars.insert("LAPSE_E2E_TIME_SCALE".into(), "2".into());
    vars.insert("LAPSE_E2E_PROPAGATION".into(), "20s".into());
    let settings = ExternalSettings::from_lookup(|k| vars.get(k).cloned())?;
    let mut w = World::on(Target::External(External::acquire(settings)?)).await?;
    assert!(!w.has(Capability::AuditLog) && !w.has(Capability::Faults));
    assert_eq!(w.lease(8), "16s");
    w.start_operator(&[]).await?;
    access_story(&w).await?;
    // What the story made on the cluster goes with the World, while its operator still runs.
    drop(w);
    let kubectl = |args: &[&str]| {
        std::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &sandbox.kubeconfig)
            .output()
    };
    let ns = kubectl(&[
        "get",
        "namespace",
        "payments",
        "--ignore-not-found",
        "-o",
        "name",
    ])?;
    assert_eq!(String::from_utf8_lossy(&ns.stdout).trim(), "");
    let policies = kubectl(&["get", "accesspolicies", "-o", "name"])?;
    assert!(policies.status.success());
    assert_eq!(String::from_utf8_lossy(&policies.stdout).trim(), "");
    Ok(())
}

/// Refused before the grant, allowed while it is Active, refused after it lapses (even with a
/// token obtained during the lease), and nothing left in Azure.
async fn access_story(w: &World) -> anyhow::Result<()> {
    let timeout = w.scaled(TIMEOUT);
    let fx = &w.fixtures;
    let (mi, client_id) = w.identity(fx.identity()).await?;
    let storage = fx.storage_account_id();
    let read = async || {
        w.workload_read(
            "payments",
            "backup-runner",
            &client_id,
            &storage,
            "2023-01-01",
        )
        .await
    };
    w.namespace_with("payments", &["backup-runner"])?;
    w.apply_ok(&policy("payments", &fx.resource_group_id(), "1h"))?;

    // Before the grant: no FIC, so the token exchange itself is refused.
    w.settle("the workload's read before the grant", None, read)
        .await?;

    let applied = Instant::now();
    w.apply_ok(&grant("nightly", &mi, &storage, &w.lease(8)))?;
    let g = w
        .wait_phase("payments", "nightly", GrantPhase::Active, timeout)
        .await?;
    let activation = applied.elapsed();
    let status = g.status.clone().unwrap_or_default();
    assert_eq!(status.policy.as_deref(), Some("payments"));
    // kubectl wait works for pipelines.
    w.kubectl_ok(&[
        "-n",
        "payments",
        "wait",
        "--for=condition=Ready",
        "accessgrant/nightly",
        "--timeout=5s",
    ])?;

    // While active: the exchange works and the read is allowed.
    w.settle("the workload's read while Active", Some(200), read)
        .await?;
    let assertion = w.service_account_token("payments", "backup-runner").await?;
    let token = w
        .exchange(&assertion, &client_id)
        .await?
        .map_err(|e| anyhow::anyhow!("exchange refused while active: {e}"))?;

    // After the lease lapses: a token obtained during the lease is refused by RBAC, and no new
    // token can be had.
    let g = w
        .wait_phase("payments", "nightly", GrantPhase::Expired, timeout)
        .await?;
    w.settle("a token from the lease, read after it", 403, async || {
        w.arm_get(&token, &storage, "2023-01-01").await
    })
    .await?;
    w.settle("the workload's read after the lease", None, read)
        .await?;
    // Nothing this cluster made is left in Azure.
    w.wait_owned(timeout, |owned| owned.is_empty()).await?;
    println!("activation (apply -> Ready) {} ms", activation.as_millis());

    let Some(audit) = w.audit_log().await? else {
        println!("(no Azure request log on this target: write counts and overstay not measured)");
        return Ok(());
    };
    // Azure saw exactly one PUT and one DELETE per object.
    assert_eq!(
        calls(&audit, "PUT", "/roleAssignments/").len(),
        1,
        "role assignment PUTs"
    );
    assert_eq!(
        calls(&audit, "DELETE", "/roleAssignments/").len(),
        1,
        "role assignment DELETEs"
    );
    assert_eq!(
        calls(&audit, "PUT", "/federatedIdentityCredentials/").len(),
        1,
        "FIC PUTs"
    );
    assert_eq!(
        calls(&audit, "DELETE", "/federatedIdentityCredentials/").len(),
        1,
        "FIC DELETEs"
    );

    // Overstay: lease end to the DELETE Azure acknowledged.
    let expires = g
        .status
        .and_then(|s| s.expires_at)
        .ok_or_else(|| anyhow::anyhow!("no expiresAt"))?;
    for e in calls(&audit, "DELETE", "/").iter().filter(|e| {
        e.get("status")
            .and_then(Value::as_u64)
            .is_some_and(|s| s < 300)
    }) {
        let at: chrono::DateTime<chrono::Utc> = serde_json::from_value(e["time"].clone())?;
        let overstay = (at - expires).num_milliseconds();
        println!("overstay {} ms for {}", overstay, e["path"]);
        assert!(overstay >= 0, "deleted before the lease ended");
    }
    Ok(())
}
