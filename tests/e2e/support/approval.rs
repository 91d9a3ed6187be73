//! What the approval suites share: the namespace, a policy with approvers and break-glass, the
//! people's RBAC, the shipped admission policies, and manifests for grants and approvals.

#![allow(dead_code)]

use lapse_api::v1alpha1::{AccessGrant, ConditionStatus};
use lapse_e2e::{World, workspace_root};

pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);
pub const NS: &str = "payments";
pub const ALICE: &str = "alice@example.com";
pub const BOB: &str = "bob@example.com";
pub const CAROL: &str = "carol@example.com";

/// The policy: Reader on the sandbox's resource group, federation for `backup-*`, one approval
/// from bob or the `platform-oncall` group, and break-glass for up to 10 minutes.
pub fn policy(w: &World) -> String {
    let rg = w.fixtures.resource_group_id();
    format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: payments
spec:
  namespaces: ["{NS}"]
  identities: ["{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"]
  roles: ["Reader"]
  scopes: ["{rg}"]
  serviceAccounts: ["backup-*"]
  maxDuration: 1h
  approval:
    required: 1
    approvers:
      users: ["{BOB}"]
      groups: ["platform-oncall"]
    timeout: 1h
  breakGlass:
    maxDuration: 10m
"#
    )
}

/// What requesters and approvers may do in the namespace (RBAC is not the security boundary,
/// the policy's approvers are; but nobody gets anything without it either).
pub fn rbac() -> String {
    format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: lapse-users, namespace: {NS}}}
rules:
- apiGroups: ["lapse.dev"]
  resources: ["accessgrants", "accessapprovals"]
  verbs: ["create", "get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: lapse-users, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: lapse-users}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: "{ALICE}"}}
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: "{BOB}"}}
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: "{CAROL}"}}
- {{apiGroup: rbac.authorization.k8s.io, kind: Group, name: platform-oncall}}
"#
    )
}

pub fn grant(name: &str, mi: &str, scope: &str, requester: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessGrant
metadata:
  name: {name}
  namespace: {NS}
spec:
  identity:
    managedIdentity: {mi}
  roles:
  - role: Reader
    scope: {scope}
  federation:
    serviceAccount: backup-runner
  duration: 10m
  justification: "OPS-7 nightly backup"
  requester: "{requester}"
{extra}"#
    )
}

pub fn approval(
    name: &str,
    g: &AccessGrant,
    decision: &str,
    approver: &str,
    groups: &[&str],
) -> String {
    let groups = groups
        .iter()
        .map(|g| format!("\"{g}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessApproval
metadata:
  name: {name}
  namespace: {NS}
spec:
  grant:
    name: {}
    uid: {}
    generation: {}
  decision: {decision}
  approver:
    username: "{approver}"
    groups: [{groups}]
  comment: "{name}: reviewed"
"#,
        g.metadata.name.as_deref().unwrap_or_default(),
        g.metadata.uid.as_deref().unwrap_or_default(),
        g.metadata.generation.unwrap_or(1),
    )
}

pub fn approved(g: &AccessGrant) -> Option<(ConditionStatus, String, String)> {
    g.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Approved")
        .map(|c| (c.status, c.reason.to_string(), c.message.clone()))
}

pub fn refused(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "admission let it through");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sets up the namespace, the policy, the people's RBAC and the admission policies.
pub async fn setup(w: &World) -> anyhow::Result<(String, String)> {
    w.namespace_with(NS, &["backup-runner"])?;
    w.apply_ok(&policy(w))?;
    w.apply_ok(&rbac())?;
    w.kubectl_ok(&[
        "apply",
        "-f",
        &workspace_root()
            .join("config/admission/approval.yaml")
            .to_string_lossy(),
    ])?;
    let (mi, client_id) = w.identity(w.fixtures.identity()).await?;
    Ok((mi, client_id))
}
