//! Standing access: the role assignment a grant asks for already exists, made by someone else
//! under a name lapse does not derive. The lease uses it and never touches it.

use lapse_api::v1alpha1::{GrantPhase, ObjectState};
use lapse_azure::RoleAssignmentRequest;
use lapse_sim_azure::{Seed, SeedRoleAssignment};

use crate::fixtures::*;

/// Where the standing assignment comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Planted {
    /// In the tenant before the operator starts: its start-up listing shows it.
    BeforeStart,
    /// Made after the operator listed Azure: its own create finds it (`RoleAssignmentExists`).
    AfterStart,
}

async fn standing_assignment_is_used_and_outlives_the_lease(planted: Planted) {
    let mut seed = Seed::sandbox_default();
    let sub = seed.subscriptions[0].id.clone();
    let storage = format!(
        "/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.Storage/storageAccounts/lapsedemodata"
    );
    let name = hand_made_name();
    if planted == Planted::BeforeStart {
        seed.role_assignments.push(SeedRoleAssignment {
            principal: SA.into(),
            role: "Reader".into(),
            scope: storage.clone(),
            name: Some(name.to_string()),
        });
    }
    let w = World::with(Options {
        seed,
        ..Options::default()
    })
    .await
    .unwrap();
    w.allow(&["Reader"]).await.unwrap();
    let mi = w.identity(SA).unwrap();
    if planted == Planted::AfterStart {
        let hand = w.by_hand().unwrap();
        let reader = hand
            .role_definition_by_name(&w.sub, "Reader")
            .await
            .unwrap()
            .unwrap();
        hand.put_role_assignment(&RoleAssignmentRequest {
            scope: storage.clone(),
            name,
            role_definition_id: reader.id,
            principal_id: mi.principal,
            description: Some("standing access, made by hand".into()),
            condition: None,
        })
        .await
        .unwrap();
    }
    let standing_id = format!("{storage}/providers/Microsoft.Authorization/roleAssignments/{name}")
        .to_ascii_lowercase();

    // The lease's end is the grant's creation plus 2 s, whole seconds: 1 to 2 s from now.
    let g = grant(&w, "nightly", SA)
        .unwrap()
        .role("Reader", &storage)
        .lasting("2s");
    w.create(&g).await.unwrap();
    let active = w.wait_phase("nightly", GrantPhase::Active).await.unwrap();
    let c = condition(&active, "StandingAccess").expect("a StandingAccess condition");
    assert!(is_true(&active, "StandingAccess"), "{c:?}");
    assert!(
        c.message.to_ascii_lowercase().contains(&name.to_string()),
        "the condition names the standing assignment: {c:?}"
    );
    let st = active.status.clone().unwrap_or_default();
    assert_eq!(
        st.role_assignments
            .iter()
            .map(|r| r.state)
            .collect::<Vec<_>>(),
        [ObjectState::Standing]
    );

    let ended = w.wait_phase("nightly", GrantPhase::Expired).await.unwrap();
    assert!(!is_true(&ended, "Ready"));
    // The periodic sweep would delete an assignment of lapse's that no lease claims; this one is
    // not lapse's.
    assert_eq!(w.sweep().await, 0);
    assert!(
        w.assignment_ids().contains(&standing_id),
        "the standing assignment is gone: {:?}",
        w.assignment_ids()
    );
    let mine: Vec<_> = w
        .azure
        .role_assignments()
        .into_iter()
        .filter(|ra| {
            ra.principal_id
                .eq_ignore_ascii_case(&mi.principal.to_string())
        })
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "the identity holds only the standing assignment: {mine:?}"
    );

    assert!(
        w.calls("DELETE", "/roleAssignments/").is_empty(),
        "a role assignment was deleted: {:?}",
        w.calls("DELETE", "/roleAssignments/")
    );
    let puts = w.calls("PUT", "/roleAssignments/");
    let (ok, refused): (Vec<_>, Vec<_>) = puts.iter().partition(|e| succeeded(e));
    match planted {
        // The operator knew: it asked Azure for nothing.
        Planted::BeforeStart => assert!(puts.is_empty(), "{puts:?}"),
        // The only assignment written is the hand-made one; the operator's own create of the
        // same access was refused as a duplicate, once.
        Planted::AfterStart => {
            assert_eq!(ok.len(), 1, "{puts:?}");
            assert!(ok[0].path.to_ascii_lowercase().ends_with(&name.to_string()));
            assert_eq!(refused.len(), 1, "{puts:?}");
            assert_eq!(
                refused[0].error_code.as_deref(),
                Some("RoleAssignmentExists"),
                "{puts:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_assignment_azure_already_lists_is_used_and_outlives_the_lease() {
    standing_assignment_is_used_and_outlives_the_lease(Planted::BeforeStart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_assignment_found_by_the_create_is_used_and_outlives_the_lease() {
    standing_assignment_is_used_and_outlives_the_lease(Planted::AfterStart).await;
}
