//! Azure keeps failing the revocation's delete: the lease stays `Revoking`, turns
//! `RevocationOverdue` past `--overdue-after` (naming Azure's error), never deletes anything
//! that is not its own, and finishes as soon as Azure recovers.

use std::time::Duration;

use lapse_api::v1alpha1::{ConditionStatus, GrantPhase, ObjectState};
use lapse_azure::RoleAssignmentRequest;

use crate::fixtures::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_azure_keeps_failing_stays_overdue_touches_nothing_else_and_then_finishes() {
    let w = World::with(Options {
        overdue_after: Duration::from_millis(300),
        ..Options::default()
    })
    .await
    .unwrap();
    w.allow(&["Reader", "Storage Blob Data Reader"])
        .await
        .unwrap();
    let mi = w.identity(SA).unwrap();
    // Around the lease: a neighbour's live lease on the same storage account, and a standing
    // assignment of the same identity made by hand.
    let neighbour = grant(&w, "neighbour", "report-agent")
        .unwrap()
        .role("Reader", &w.storage())
        .federated("report-agent");
    w.create(&neighbour).await.unwrap();
    let hand = w.by_hand().unwrap();
    let blob_reader = hand
        .role_definition_by_name(&w.sub, "Storage Blob Data Reader")
        .await
        .unwrap()
        .unwrap();
    let standing = hand
        .put_role_assignment(&RoleAssignmentRequest {
            scope: w.storage(),
            name: hand_made_name(),
            role_definition_id: blob_reader.id,
            principal_id: mi.principal,
            description: Some("standing access, made by hand".into()),
            condition: None,
        })
        .await
        .unwrap();
    let g = grant(&w, "nightly", SA)
        .unwrap()
        .role("Reader", &w.storage())
        .federated(SA);
    w.create(&g).await.unwrap();
    let active = w.wait_phase("nightly", GrantPhase::Active).await.unwrap();
    let neighbour = w.wait_phase("neighbour", GrantPhase::Active).await.unwrap();
    let own = recorded_ids(&active);
    let others: Vec<String> = recorded_ids(&neighbour)
        .into_iter()
        .chain([standing.id.to_ascii_lowercase()])
        .collect();

    w.fail("DELETE", "/roleAssignments/", None).unwrap();
    w.revoke("nightly").await.unwrap();
    // What the user sees: still revoking, overdue, and why. (Each retry first writes the
    // condition saying only "deletes pending", then Azure's answer: wait for the latter.)
    let overdue = w
        .wait_grant("nightly", "RevocationOverdue naming Azure's error", |g| {
            condition(g, "RevocationOverdue").is_some_and(|c| {
                c.status == ConditionStatus::True && c.message.contains("InternalServerError")
            })
        })
        .await
        .unwrap();
    assert_eq!(phase_of(&overdue), Some(GrantPhase::Revoking));
    assert!(!is_true(&overdue, "Ready"));
    let stalled = condition(&overdue, "Stalled").unwrap();
    assert_eq!(
        (stalled.status, stalled.reason.as_ref()),
        (ConditionStatus::True, "RevocationOverdue")
    );
    let st = overdue.status.clone().unwrap_or_default();
    assert_eq!(
        st.role_assignments
            .iter()
            .map(|r| r.state)
            .collect::<Vec<_>>(),
        [ObjectState::Deleting]
    );
    // The credential's delete was not failing: it is gone already.
    assert_eq!(
        st.federated_credential.as_ref().map(|f| f.state),
        Some(ObjectState::Deleted)
    );
    let event = w.wait_event("nightly", "RevocationOverdue").await.unwrap();
    assert_eq!(event.0, "Warning", "{event:?}");
    let tried = w.calls("DELETE", "/roleAssignments/");
    assert!(tried.len() >= 2, "the delete is retried: {tried:?}");

    w.azure.faults().clear();
    let revoked = w.wait_phase("nightly", GrantPhase::Revoked).await.unwrap();
    assert!(!is_true(&revoked, "RevocationOverdue"));
    let left = w.assignment_ids();
    assert!(!left.iter().any(|id| own.contains(id)), "{left:?}");
    for id in others.iter().filter(|id| id.contains("/roleassignments/")) {
        assert!(left.contains(id), "{id} was deleted: {left:?}");
    }
    assert_eq!(
        phase_of(&w.grants().get("neighbour").await.unwrap()),
        Some(GrantPhase::Active)
    );
    // Every delete Azure saw, failed or not, aimed at the revoked lease's own objects, and each
    // of them went exactly once.
    let deletes = w.calls("DELETE", "/");
    for e in &deletes {
        let path = e.path.to_ascii_lowercase();
        assert!(own.contains(&path), "deleted something else: {e:?}");
    }
    for id in &own {
        let ok = deletes
            .iter()
            .filter(|e| succeeded(e) && e.path.eq_ignore_ascii_case(id))
            .count();
        assert_eq!(ok, 1, "{id}: {deletes:?}");
    }
}
