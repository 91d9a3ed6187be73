//! The lease lifecycle end to end: real `lapse-sandbox` and `lapse-operator` processes,
//! asserted through kubectl, the Kubernetes API, Entra token exchange and ARM.

use std::time::{Duration, Instant};

use lapse_api::v1alpha1::GrantPhase;
use lapse_e2e::World;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(45);

fn policy(name: &str, sub: &str, max: &str) -> String {
    format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: {name}
spec:
  namespaces: ["payments"]
  identities: ["/subscriptions/{sub}/resourceGroups/lapse-demo-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"]
  roles: ["Reader", "Storage Blob Data Reader"]
  scopes: ["/subscriptions/{sub}/resourceGroups/lapse-demo-rg"]
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

fn entries<'a>(audit: &'a [Value], method: &str, path_part: &str) -> Vec<&'a Value> {
    audit
        .iter()
        .filter(|e| {
            e.get("method").and_then(Value::as_str) == Some(method)
                && e.get("path").and_then(Value::as_str).is_some_and(|p| {
                    p.to_ascii_lowercase()
                        .contains(&path_part.to_ascii_lowercase())
                })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_has_access_exactly_while_its_grant_is_active() -> anyhow::Result<()> {
    let w = World::start().await?;
    let sub = w.subscription()?.to_owned();
    let (mi, client_id) = w.identity("backup-runner").await?;
    let storage = format!(
        "/subscriptions/{sub}/resourceGroups/lapse-demo-rg/providers/Microsoft.Storage/storageAccounts/lapsedemodata"
    );
    w.kubectl_ok(&["create", "namespace", "payments"])?;
    w.kubectl_ok(&[
        "-n",
        "payments",
        "create",
        "serviceaccount",
        "backup-runner",
    ])?;
    w.apply_ok(&policy("payments", &sub, "1h"))?;

    // Before the grant: no FIC, so the token exchange itself is refused.
    assert_eq!(
        w.workload_read(
            "payments",
            "backup-runner",
            &client_id,
            &storage,
            "2023-01-01"
        )
        .await?,
        None
    );

    let applied = Instant::now();
    w.apply_ok(&grant("nightly", &mi, &storage, "8s"))?;
    let g = w
        .wait_phase("payments", "nightly", GrantPhase::Active, TIMEOUT)
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
    let assertion = w.service_account_token("payments", "backup-runner").await?;
    let token = w
        .exchange(&assertion, &client_id)
        .await?
        .map_err(|e| anyhow::anyhow!("exchange refused while active: {e}"))?;
    assert_eq!(w.arm_get(&token, &storage, "2023-01-01").await?, 200);

    // After the lease lapses: a token obtained during the lease is refused by RBAC, and no new
    // token can be had.
    let g = w
        .wait_phase("payments", "nightly", GrantPhase::Expired, TIMEOUT)
        .await?;
    assert_eq!(w.arm_get(&token, &storage, "2023-01-01").await?, 403);
    assert_eq!(
        w.workload_read(
            "payments",
            "backup-runner",
            &client_id,
            &storage,
            "2023-01-01"
        )
        .await?,
        None
    );

    // Azure saw exactly one PUT and one DELETE per object.
    let audit = w.audit().await?;
    assert_eq!(
        entries(&audit, "PUT", "/roleAssignments/").len(),
        1,
        "role assignment PUTs"
    );
    assert_eq!(
        entries(&audit, "DELETE", "/roleAssignments/").len(),
        1,
        "role assignment DELETEs"
    );
    assert_eq!(
        entries(&audit, "PUT", "/federatedIdentityCredentials/").len(),
        1,
        "FIC PUTs"
    );
    assert_eq!(
        entries(&audit, "DELETE", "/federatedIdentityCredentials/").len(),
        1,
        "FIC DELETEs"
    );

    // Overstay: lease end to the DELETE Azure acknowledged.
    let expires = g
        .status
        .and_then(|s| s.expires_at)
        .ok_or_else(|| anyhow::anyhow!("no expiresAt"))?;
    for e in entries(&audit, "DELETE", "/").iter().filter(|e| {
        e.get("status")
            .and_then(Value::as_u64)
            .is_some_and(|s| s < 300)
    }) {
        let at: chrono::DateTime<chrono::Utc> = serde_json::from_value(e["time"].clone())?;
        let overstay = (at - expires).num_milliseconds();
        println!("overstay {} ms for {}", overstay, e["path"]);
        assert!(overstay >= 0, "deleted before the lease ended");
    }
    println!("activation (apply -> Ready) {} ms", activation.as_millis());
    Ok(())
}
