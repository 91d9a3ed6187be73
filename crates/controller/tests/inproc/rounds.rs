//! One reconcile makes at most `Settings::max_rounds` decide/act rounds, then yields to other
//! grants and comes back soon. These tests give a reconcile a single round, so every grant needs
//! more than one allows. (The operator's budget, `grant::MAX_ROUNDS`, is more than any grant
//! needs today: each round makes every call the core asks for, so a lease takes two or three.)
//! Whatever a reconcile leaves undone, the next one finishes, once.

use std::collections::BTreeMap;

use lapse_api::v1alpha1::{GrantPhase, ObjectState};

use crate::fixtures::*;

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
