//! Approval end to end (docs/approval.md): requesters and approvers are Kubernetes users,
//! impersonated with `kubectl --as` (the admin kubeconfig may impersonate anyone, as on a real
//! API server), held to who they are by the shipped admission policies
//! (`config/admission/approval.yaml`), and counted by the operator only under the policy's
//! rules.

use std::time::Instant;

use lapse_api::v1alpha1::{ConditionStatus, GrantPhase};
use lapse_e2e::{Capability, World, sandbox_only, workspace_root};

#[path = "support/approval.rs"]
mod support;
use support::*;

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
    w.create_as_ok(ALICE, &[], &grant("nightly", &mi, &storage, ALICE, ""))?;
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
        w.create_as_ok(who, &[], &approval(name, &g, "Approve", who, &[]))?;
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
    w.create_as_ok(BOB, &[], &approval("bob", &g, "Approve", BOB, &[]))?;
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

    w.create_as_ok(
        ALICE,
        &[],
        &grant("glass", &mi, &rg, ALICE, "  breakGlass: true\n"),
    )?;
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
    w.create_as_ok(
        CAROL,
        &["platform-oncall"],
        &approval("review", &g, "Deny", CAROL, &["platform-oncall"]),
    )?;
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
    w.create_as_ok(ALICE, &[], &grant("waits", &mi, &rg, ALICE, ""))?;
    let g = w
        .wait_phase(NS, "waits", GrantPhase::PendingApproval, timeout)
        .await?;
    w.create_as_ok(BOB, &[], &approval("bob", &g, "Approve", BOB, &[]))?;
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
