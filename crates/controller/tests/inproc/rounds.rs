//! One reconcile makes at most `Settings::max_rounds` decide/act rounds, then yields to other
//! grants and comes back soon. These tests give a reconcile a single round, so every grant needs
//! more than one allows. (The operator's budget, `grant::MAX_ROUNDS`, is more than any grant
//! needs today: each round makes every call the core asks for, so a lease takes two or three.)
//! Whatever a reconcile leaves undone, the next one finishes, once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::api::DeleteParams;
use lapse_api::v1alpha1::{GrantPhase, ObjectState};

use crate::fixtures::*;

/// Long enough for any reconcile here, which takes milliseconds; shorter than anything that
/// would wake a forgotten grant by chance.
const PROMPTLY: Duration = Duration::from_secs(2);

fn one_round() -> Options {
    Options {
        max_rounds: 1,
        ..Options::default()
    }
}

/// Successful requests per path (lower-cased).
fn successes(w: &World, method: &str, part: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in w.calls(method, part).iter().filter(|e| succeeded(e)) {
        *out.entry(e.path.to_ascii_lowercase()).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_needing_more_rounds_than_a_reconcile_allows_activates_with_one_put_per_object() {
    let w = World::with(one_round()).await.unwrap();
    let roles = [
        ("Reader", w.rg()),
        ("Reader", w.storage()),
        ("Storage Blob Data Reader", w.storage()),
        ("Reader", w.key_vault()),
        ("Key Vault Reader", w.key_vault()),
        ("Key Vault Secrets User", w.key_vault()),
    ];
    let mut names: Vec<&str> = roles.iter().map(|(r, _)| *r).collect();
    names.sort();
    names.dedup();
    w.allow(&names).await.unwrap();
    // Some creates fail once: their retries fall to later reconciles too.
    w.fail("PUT", "/roleAssignments/", Some(2)).unwrap();
    w.fail("PUT", "/federatedIdentityCredentials/", Some(1))
        .unwrap();
    let mut g = grant(&w, "wide", SA).unwrap().federated(SA);
    for (role, scope) in &roles {
        g = g.role(role, scope);
    }
    w.create(&g).await.unwrap();

    let active = w.wait_phase("wide", GrantPhase::Active).await.unwrap();
    let st = active.status.clone().unwrap_or_default();
    assert_eq!(st.role_assignments.len(), roles.len());
    assert!(
        st.role_assignments
            .iter()
            .all(|r| r.state == ObjectState::Present),
        "{st:?}"
    );
    assert_eq!(
        st.federated_credential.as_ref().map(|f| f.state),
        Some(ObjectState::Present)
    );
    // Exactly one successful PUT per object the status records, and none for anything else.
    let mut puts = successes(&w, "PUT", "/roleAssignments/");
    puts.extend(successes(&w, "PUT", "/federatedIdentityCredentials/"));
    let mut recorded = recorded_ids(&active);
    recorded.sort();
    assert_eq!(recorded.len(), roles.len() + 1);
    assert_eq!(
        puts.keys().cloned().collect::<Vec<_>>(),
        recorded,
        "successful PUTs: {puts:?}"
    );
    assert!(puts.values().all(|n| *n == 1), "{puts:?}");
    let refused: Vec<_> = w
        .calls("PUT", "/")
        .into_iter()
        .filter(|e| !succeeded(e))
        .collect();
    assert_eq!(refused.len(), 3, "only the injected failures: {refused:?}");
    assert!(w.calls("DELETE", "/").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_needing_more_rounds_than_a_reconcile_allows_finishes() {
    let w = World::with(one_round()).await.unwrap();
    w.allow(&["Reader"]).await.unwrap();
    let g = grant(&w, "nightly", SA)
        .unwrap()
        .role("Reader", &w.storage())
        .federated(SA);
    w.create(&g).await.unwrap();
    let active = w.wait_phase("nightly", GrantPhase::Active).await.unwrap();

    // Writing `Revoking` and deleting take one reconcile; seeing the deletes done and writing
    // `Revoked` takes the next, at once: not when the lease would have ended, nor when
    // something unrelated (the policy status, every 5 s) happens to wake the grant.
    let asked = Instant::now();
    w.revoke("nightly").await.unwrap();
    let revoked = w.wait_phase("nightly", GrantPhase::Revoked).await.unwrap();
    assert!(
        asked.elapsed() < PROMPTLY,
        "revoked after {:?}",
        asked.elapsed()
    );
    assert!(!is_true(&revoked, "Ready"));
    let mut deleted = successes(&w, "DELETE", "/roleAssignments/");
    deleted.extend(successes(&w, "DELETE", "/federatedIdentityCredentials/"));
    let mut recorded = recorded_ids(&active);
    recorded.sort();
    assert_eq!(deleted.keys().cloned().collect::<Vec<_>>(), recorded);
    assert!(deleted.values().all(|n| *n == 1), "{deleted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_grant_keeps_its_finalizer_until_its_deletes_succeed_however_many_rounds() {
    let w = World::with(one_round()).await.unwrap();
    w.allow(&["Reader"]).await.unwrap();
    let g = grant(&w, "nightly", SA)
        .unwrap()
        .role("Reader", &w.storage());
    w.create(&g).await.unwrap();
    let active = w.wait_phase("nightly", GrantPhase::Active).await.unwrap();
    let assignment = recorded_ids(&active).remove(0);

    w.fail("DELETE", "/roleAssignments/", None).unwrap();
    w.grants()
        .delete("nightly", &DeleteParams::default())
        .await
        .unwrap();
    // The grant stays, finalizer and all, while its access is still in Azure: through several
    // refused deletes, each a reconcile of its own.
    let deadline = Instant::now() + PATIENCE;
    let held = loop {
        let held = w.grants().get_opt("nightly").await.unwrap();
        let refused = w.calls("DELETE", "/roleAssignments/");
        let Some(held) = held else {
            panic!(
                "the grant went while its role assignment is still in Azure ({} refused \
                 deletes; assignment present: {})",
                refused.len(),
                w.assignment_ids().contains(&assignment)
            );
        };
        if refused.len() >= 3 {
            break held;
        }
        assert!(
            Instant::now() < deadline,
            "deletes not retried: {refused:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(phase_of(&held), Some(GrantPhase::Revoking));
    assert!(w.assignment_ids().contains(&assignment));

    w.azure.faults().clear();
    w.wait_gone("nightly").await.unwrap();
    assert!(!w.assignment_ids().contains(&assignment));
}
