//! The RBAC lapse ships (`config/rbac/`) is enough: the operator runs as its own ServiceAccount,
//! bound by exactly those rules, against sim-kube, which enforces RBAC like kube-apiserver.

use std::time::Duration;

use lapse_api::v1alpha1::GrantPhase;
use lapse_e2e::{Capability, World, sandbox_only, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_rbac_is_sufficient() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "installs config/rbac and relies on sim-kube enforcing RBAC for a ServiceAccount token \
         it mints, with the operator running outside the cluster as that ServiceAccount",
    )?;
    let mut w = World::without_operator().await?;
    let sb = w.target.sandbox()?;
    w.kubectl_ok(&["create", "namespace", "lapse-system"])?;
    let rbac = workspace_root().join("config/rbac");
    w.kubectl_ok(&["apply", "-f", &rbac.to_string_lossy()])?;
    let token = w.kubectl_ok(&[
        "-n",
        "lapse-system",
        "create",
        "token",
        "lapse-operator",
        "--duration=1h",
    ])?;

    // The operator's kubeconfig: the sandbox's, with the ServiceAccount's token instead of admin's.
    let mut kubeconfig = kube::config::Kubeconfig::read_from(&sb.kubeconfig)?;
    for user in &mut kubeconfig.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.token = Some(token.trim().to_owned().into());
        }
    }
    let sa_kubeconfig = sb.dir.join("operator-kubeconfig");
    std::fs::write(&sa_kubeconfig, serde_yaml_ng::to_string(&kubeconfig)?)?;
    // Sanity: that identity really is limited (it cannot read Secrets).
    let out = std::process::Command::new("kubectl")
        .args(["auth", "can-i", "list", "secrets", "-A"])
        .env("KUBECONFIG", &sa_kubeconfig)
        .output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");

    let sa_kubeconfig = sa_kubeconfig.to_string_lossy().into_owned();
    w.start_operator(&[
        ("KUBECONFIG", &sa_kubeconfig),
        ("POD_NAMESPACE", "lapse-system"),
    ])
    .await?;

    let rg = w.fixtures.resource_group_id();
    let (mi, _) = w.identity(w.fixtures.identity()).await?;
    w.kubectl_ok(&["create", "namespace", "payments"])?;
    w.apply_ok(&format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: payments
spec:
  namespaces: ["payments"]
  identities: ["{mi}"]
  roles: ["Reader"]
  scopes: ["{rg}"]
  serviceAccounts: ["backup-*"]
  maxDuration: 1h
---
apiVersion: lapse.dev/v1alpha1
kind: AccessGrant
metadata:
  name: rbac
  namespace: payments
spec:
  identity:
    managedIdentity: {mi}
  roles:
  - role: Reader
    scope: {rg}
  federation:
    serviceAccount: backup-runner
  duration: 6s
"#
    ))?;
    w.wait_phase(
        "payments",
        "rbac",
        GrantPhase::Active,
        Duration::from_secs(45),
    )
    .await?;
    w.wait_phase(
        "payments",
        "rbac",
        GrantPhase::Expired,
        Duration::from_secs(45),
    )
    .await?;
    // Deletion exercises the finalizer removal; Events were recorded as the ServiceAccount.
    w.kubectl_ok(&[
        "-n",
        "payments",
        "delete",
        "accessgrant",
        "rbac",
        "--wait",
        "--timeout=30s",
    ])?;
    let events = w.kubectl_ok(&[
        "-n",
        "payments",
        "get",
        "events.events.k8s.io",
        "-o",
        "name",
    ])?;
    assert!(!events.trim().is_empty(), "the operator recorded no Events");
    let logs = w.operator_logs();
    assert!(
        !logs.to_ascii_lowercase().contains("forbidden"),
        "the operator was refused something:\n{logs}"
    );
    Ok(())
}
