//! A federated credential with the grant's issuer and subject already exists on the identity,
//! under a name lapse does not derive: Azure allows one per (issuer, subject), so the lease
//! cannot make its own. The operator uses the one there as standing access (execute.rs,
//! `existing_fic`), says so, and never deletes it.

use lapse_api::v1alpha1::{GrantPhase, ObjectState};
use lapse_azure::FicRequest;

use crate::fixtures::*;

/// The hand-made credential's name: not `lapse-<cluster>-…`.
const HAND_MADE: &str = "hand-made-federation";

/// When the operator learns of the credential.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Seen {
    /// A listing of the identity's credentials shows it before the grant comes.
    InListing,
    /// The operator's own create is refused (Azure's 400 for a duplicate issuer and subject),
    /// and it looks.
    OnCreate,
}

async fn a_foreign_federation_is_used_and_never_deleted(seen: Seen) {
    let w = World::start().await.unwrap();
    w.allow(&["Reader"]).await.unwrap();
    let mi = w.identity(SA).unwrap();
    let (issuer, subject) = w.federation_of(SA);
    let hand = w.by_hand().unwrap();
    let foreign = hand
        .put_fic(
            &mi.id,
            &FicRequest {
                name: HAND_MADE.into(),
                issuer,
                subject,
                audiences: vec![lapse_api::v1alpha1::DEFAULT_AUDIENCE.into()],
                description: None,
            },
        )
        .await
        .unwrap();
    if seen == Seen::InListing {
        // What the start-up sweep (and every full sweep) does.
        lapse_controller::sweep::sweep_once(&w.ctx, true).await;
    }

    let g = grant(&w, "nightly", SA)
        .unwrap()
        .role("Reader", &w.storage())
        .federated(SA);
    w.create(&g).await.unwrap();
    let active = w.wait_phase("nightly", GrantPhase::Active).await.unwrap();
    let st = active.status.clone().unwrap_or_default();
    let fic = st
        .federated_credential
        .clone()
        .expect("a federated credential");
    assert_eq!(fic.state, ObjectState::Standing, "{fic:?}");
    assert_eq!(
        st.role_assignments
            .iter()
            .map(|r| r.state)
            .collect::<Vec<_>>(),
        [ObjectState::Present],
        "the lease's own role assignment is made as usual"
    );
    let c = condition(&active, "StandingAccess").expect("a StandingAccess condition");
    assert!(is_true(&active, "StandingAccess"), "{c:?}");
    assert!(
        c.message.contains("federated credential") && c.message.contains(HAND_MADE),
        "the condition names the credential in use: {c:?}"
    );

    let fic_puts = w.calls("PUT", "/federatedIdentityCredentials/");
    let lapse_puts: Vec<_> = fic_puts
        .iter()
        .filter(|e| !e.path.ends_with(HAND_MADE))
        .collect();
    match seen {
        Seen::InListing => assert!(lapse_puts.is_empty(), "{fic_puts:?}"),
        Seen::OnCreate => {
            assert_eq!(lapse_puts.len(), 1, "{fic_puts:?}");
            assert_eq!(lapse_puts[0].status, 400, "{fic_puts:?}");
        }
    }

    w.revoke("nightly").await.unwrap();
    let revoked = w.wait_phase("nightly", GrantPhase::Revoked).await.unwrap();
    assert!(!is_true(&revoked, "Ready"));
    assert_eq!(w.sweep().await, 0);
    let left = hand.list_fics(&mi.id).await.unwrap();
    assert_eq!(
        left.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
        [foreign.id.as_str()],
        "the hand-made credential stays, and only it"
    );
    assert!(
        w.calls("DELETE", "/federatedIdentityCredentials/")
            .is_empty(),
        "a federated credential was deleted: {:?}",
        w.calls("DELETE", "/federatedIdentityCredentials/")
    );
    // The lease's own role assignment went with it, once.
    let deletes = w.calls("DELETE", "/roleAssignments/");
    assert_eq!(
        deletes
            .iter()
            .map(|e| e.path.to_ascii_lowercase())
            .collect::<Vec<_>>(),
        recorded_ids(&active)
            .into_iter()
            .filter(|id| id.contains("/roleassignments/"))
            .collect::<Vec<_>>(),
        "{deletes:?}"
    );
    assert!(deletes.iter().all(succeeded), "{deletes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federation_a_listing_shows_under_another_name_is_used_and_never_deleted() {
    a_foreign_federation_is_used_and_never_deleted(Seen::InListing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federation_azure_refuses_to_duplicate_is_used_and_never_deleted() {
    a_foreign_federation_is_used_and_never_deleted(Seen::OnCreate).await;
}
