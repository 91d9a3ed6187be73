//! Approval end to end (docs/approval.md): requesters and approvers are Kubernetes users,
//! impersonated with `kubectl --as` (the admin kubeconfig may impersonate anyone, as on a real
//! API server), held to who they are by the shipped admission policies
//! (`config/admission/approval.yaml`), and counted by the operator only under the policy's
//! rules.

use std::time::{Duration, Instant};

use lapse_api::v1alpha1::{AccessGrant, ConditionStatus, GrantPhase};
use lapse_e2e::{Capability, World, sandbox_only, workspace_root};

const TIMEOUT: Duration = Duration::from_secs(45);
const NS: &str = "payments";
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";

/// The policy: Reader on the sandbox's resource group, federation for `backup-*`, one approval
/// from bob or the `platform-oncall` group, and break-glass for up to 10 minutes.
fn policy(w: &World) -> String {
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
fn rbac() -> String {
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

fn grant(name: &str, mi: &str, scope: &str, requester: &str, extra: &str) -> String {
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

fn approval(
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

fn approved(g: &AccessGrant) -> Option<(ConditionStatus, String, String)> {
    g.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Approved")
        .map(|c| (c.status, c.reason.clone(), c.message.clone()))
}

fn refused(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "admission let it through");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sets up the namespace, the policy, the people's RBAC and the admission policies.
async fn setup(w: &World) -> anyhow::Result<(String, String)> {
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

/// alice asks; her own approval and a stranger's do not count (and the grant says so); bob
/// approves and only then can the workload read Azure. Forged requesters and approvers are
/// refused by admission, with kubectl printing the policy's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_activates_only_once_an_eligible_approver_other_than_its_requester_approves()
-> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "installs admission policies and impersonates users",
    )?;
    let w = World::start().await?;
    let timeout = w.scaled(TIMEOUT);
    let (mi, client_id) = setup(&w).await?;
    let storage = w.fixtures.storage_account_id();
    let read = async || {
        w.workload_read(NS, "backup-runner", &client_id, &storage, "2023-01-01")
            .await
    };

    // A forged requester is refused by admission.
    let out = w.create_as(ALICE, &[], &grant("forged", &mi, &storage, BOB, ""))?;
    let msg = refused(&out);
    assert!(
        msg.contains("spec.requester must be the user creating the grant") && msg.contains(ALICE),
        "{msg}"
    );

    // alice asks for herself.
    let out = w.create_as(ALICE, &[], &grant("nightly", &mi, &storage, ALICE, ""))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g = w
        .wait_phase(NS, "nightly", GrantPhase::PendingApproval, timeout)
        .await?;
    assert_eq!(read().await?, None, "access before approval");

    // A forged approver is refused: carol cannot approve as bob, nor as a group she is not in.
    let msg = refused(&w.create_as(CAROL, &[], &approval("as-bob", &g, "Approve", BOB, &[]))?);
    assert!(
        msg.contains("spec.approver.username must be you") && msg.contains(CAROL),
        "{msg}"
    );
    let msg = refused(&w.create_as(
        CAROL,
        &["devs"],
        &approval("as-oncall", &g, "Approve", CAROL, &["platform-oncall"]),
    )?);
    assert!(
        msg.contains("spec.approver.groups must be groups you are in"),
        "{msg}"
    );

    // alice approves herself, carol (no approver) approves: neither counts, both are named.
    for (name, who) in [("self", ALICE), ("carol", CAROL)] {
        let out = w.create_as(who, &[], &approval(name, &g, "Approve", who, &[]))?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let g = w
        .wait_grant(NS, "nightly", timeout, |g| {
            approved(g).is_some_and(|(_, _, m)| m.contains(CAROL) && m.contains(ALICE))
        })
        .await?;
    let (status, reason, msg) =
        approved(&g).ok_or_else(|| anyhow::anyhow!("no Approved condition"))?;
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::False, "PendingApproval")
    );
    assert!(
        msg.contains(&format!("{ALICE} (the requester"))
            && msg.contains(&format!("{CAROL} (not an approver")),
        "{msg}"
    );
    assert_eq!(
        g.status.as_ref().map(|s| s.phase),
        Some(GrantPhase::PendingApproval)
    );
    assert_eq!(read().await?, None, "access without an eligible approval");

    // bob approves: it activates, and the workload can read.
    let approved_at = Instant::now();
    let out = w.create_as(BOB, &[], &approval("bob", &g, "Approve", BOB, &[]))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g = w
        .wait_phase(NS, "nightly", GrantPhase::Active, timeout)
        .await?;
    println!(
        "approval to Active: {} ms",
        approved_at.elapsed().as_millis()
    );
    assert_eq!(approved(&g).map(|a| a.0), Some(ConditionStatus::True));
    let st = g.status.clone().unwrap_or_default();
    assert_eq!(
        st.approvals
            .iter()
            .map(|a| a.approver.as_str())
            .collect::<Vec<_>>(),
        [BOB]
    );
    w.settle("the workload's read once approved", Some(200), read)
        .await?;
    let approvers = w.kubectl_ok(&["-n", NS, "get", "apr", "-o", "wide"])?;
    assert!(
        approvers.contains("DECISION") && approvers.contains(BOB),
        "{approvers}"
    );
    Ok(())
}

/// Break-glass activates at once, loudly; an approver's later Deny revokes it within the
/// overstay target. Without the admission policies approvals are not counted, and the grant
/// says which is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_is_loud_and_a_later_deny_ends_it_and_no_admission_no_approval()
-> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "installs admission policies and impersonates users",
    )?;
    let w = World::start().await?;
    let timeout = w.scaled(TIMEOUT);
    let (mi, _) = setup(&w).await?;
    let rg = w.fixtures.resource_group_id();

    let out = w.create_as(
        ALICE,
        &[],
        &grant("glass", &mi, &rg, ALICE, "  breakGlass: true\n"),
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g = w
        .wait_phase(NS, "glass", GrantPhase::Active, timeout)
        .await?;
    let st = g.status.clone().unwrap_or_default();
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "BreakGlass" && c.status == ConditionStatus::True),
        "{:?}",
        st.conditions
    );
    w.wait_event(NS, "glass", "BreakGlassActivated", timeout)
        .await?;

    // Reviewed after the fact: a member of platform-oncall denies; the lease ends at once.
    let denied = Instant::now();
    let out = w.create_as(
        CAROL,
        &["platform-oncall"],
        &approval("review", &g, "Deny", CAROL, &["platform-oncall"]),
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g = w
        .wait_phase(NS, "glass", GrantPhase::Revoked, timeout)
        .await?;
    let took = denied.elapsed();
    println!("break-glass Deny to Revoked: {} ms", took.as_millis());
    assert_eq!(approved(&g).map(|a| a.1), Some("ApprovalDenied".to_owned()));
    let msg = g.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        msg.contains(&format!("denied by {CAROL}")) && msg.contains("review: reviewed"),
        "{msg}"
    );
    let owned = w.owned_objects().await?;
    assert!(owned.is_empty(), "left in Azure: {owned:?}");

    // The approver admission policy goes: an approval is no longer counted, and the grant says why.
    w.kubectl_ok(&[
        "delete",
        "validatingadmissionpolicybinding",
        "lapse-approval-approver",
    ])?;
    let out = w.create_as(ALICE, &[], &grant("waits", &mi, &rg, ALICE, ""))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g = w
        .wait_phase(NS, "waits", GrantPhase::PendingApproval, timeout)
        .await?;
    let out = w.create_as(BOB, &[], &approval("bob", &g, "Approve", BOB, &[]))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g = w
        .wait_grant(NS, "waits", timeout, |g| {
            approved(g).is_some_and(|(_, r, _)| r == "AdmissionPoliciesMissing")
        })
        .await?;
    let (_, _, msg) = approved(&g).ok_or_else(|| anyhow::anyhow!("no Approved condition"))?;
    assert!(
        msg.contains("lapse-approval-approver") && msg.contains("no binding"),
        "{msg}"
    );
    assert_eq!(g.status.map(|s| s.phase), Some(GrantPhase::PendingApproval));
    // Back in force: the approval counts.
    w.kubectl_ok(&[
        "apply",
        "-f",
        &workspace_root()
            .join("config/admission/approval.yaml")
            .to_string_lossy(),
    ])?;
    w.wait_phase(NS, "waits", GrantPhase::Active, timeout)
        .await?;
    Ok(())
}
