use super::*;
use lapse_api::v1alpha1::{FederatedCredentialStatus, RoleAssignmentStatus};

const P: &str = "11111111-2222-3333-4444-555555555555";
const SCOPE: &str = "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/rg";
const ROLE: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
const NAME: &str = "6f1d0f0e-0000-5000-8000-000000000001";

fn status(phase: GrantPhase, state: ObjectState) -> AccessGrantStatus {
    AccessGrantStatus {
        phase,
        principal_id: Some(P.into()),
        role_assignments: vec![RoleAssignmentStatus {
            schedule: None,
            role: "Reader".into(),
            role_definition_id: Some(format!("/subscriptions/00000000-0000-0000-0000-0000000000aa/providers/Microsoft.Authorization/roleDefinitions/{ROLE}")),
            scope: SCOPE.into(),
            id: Some(format!("{SCOPE}/providers/Microsoft.Authorization/roleAssignments/{NAME}")),
            state,
        }],
        federated_credential: Some(FederatedCredentialStatus {
            id: Some("/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi/federatedIdentityCredentials/lapse-dev-0123456789abcdef0123456789abcdef".into()),
            name: "lapse-dev-0123456789abcdef0123456789abcdef".into(),
            issuer: "https://issuer".into(),
            subject: "system:serviceaccount:a:b".into(),
            state,
        }),
        ..Default::default()
    }
}

fn grant(n: &str) -> GrantRef {
    GrantRef {
        namespace: "ns".into(),
        name: n.into(),
    }
}

#[test]
fn live_claims_make_objects_needed_by_other_leases() {
    let inv = Inventory::default();
    let st = status(GrantPhase::Active, ObjectState::Present);
    let keys: Vec<ObjectKey> = claims_of(&st).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 2);
    inv.set_claims(&grant("a"), Some(&st));
    inv.set_claims(&grant("b"), Some(&st));
    let view = inv.view(&keys, &grant("a"));
    assert!(keys.iter().all(|k| view.get(k).needed_by_other_lease));
    // b ends: nobody but a needs them.
    inv.set_claims(
        &grant("b"),
        Some(&status(GrantPhase::Revoking, ObjectState::Deleting)),
    );
    let view = inv.view(&keys, &grant("a"));
    assert!(keys.iter().all(|k| !view.get(k).needed_by_other_lease));
    // Unloaded partitions are unknown, never absent.
    assert!(
        keys.iter()
            .all(|k| view.get(k).observed == Observed::Unknown)
    );
}

#[test]
fn the_sweep_only_sees_owned_unclaimed_objects() {
    let inv = Inventory::default();
    let st = status(GrantPhase::Active, ObjectState::Present);
    let keys: Vec<ObjectKey> = claims_of(&st).into_iter().map(|(k, _)| k).collect();
    let part = Partition::of(&keys[0]);
    let mut objects = HashMap::new();
    objects.insert(
        keys[0].clone(),
        Known {
            id: "ours".into(),
            owned: true,
            schedule: None,
        },
    );
    let standing = ObjectKey::RoleAssignment {
        principal_id: uuid::Uuid::nil(),
        role_guid: uuid::Uuid::nil(),
        scope: SCOPE.to_lowercase(),
    };
    objects.insert(
        standing,
        Known {
            id: "theirs".into(),
            owned: false,
            schedule: None,
        },
    );
    inv.replace(part.clone(), objects, 0, Instant::now());
    assert_eq!(inv.unclaimed_owned(&part).len(), 1);
    inv.set_claims(&grant("a"), Some(&st));
    assert!(inv.unclaimed_owned(&part).is_empty());
    // Terminal grants whose objects are all deleted claim nothing.
    inv.set_claims(
        &grant("a"),
        Some(&status(GrantPhase::Expired, ObjectState::Deleted)),
    );
    assert_eq!(inv.unclaimed_owned(&part).len(), 1);
    // A grant that disappears loses its claims.
    inv.set_claims(&grant("a"), Some(&st));
    inv.retain_grants(&HashSet::new());
    assert_eq!(inv.unclaimed_owned(&part).len(), 1);
    let view = inv.view(&keys[..1], &grant("x"));
    assert!(matches!(
        view.get(&keys[0]).observed,
        Observed::Present { owned: true, .. }
    ));
}

#[test]
fn partitions_group_by_subscription() {
    assert_eq!(
        assignment_partition("/subscriptions/abc/resourcegroups/rg/providers/x/y/z"),
        "/subscriptions/abc"
    );
    assert_eq!(
        assignment_partition("/providers/microsoft.management/managementgroups/mg"),
        "/providers/microsoft.management/managementgroups/mg"
    );
}

#[test]
fn a_listing_older_than_our_write_does_not_undo_it() {
    let inv = Inventory::default();
    let st = status(GrantPhase::Active, ObjectState::Present);
    let key = claims_of(&st).remove(0).0;
    let part = Partition::of(&key);
    let listing_started = Instant::now();
    // We create the object while the listing is in flight; the listing does not show it.
    inv.record(
        &key,
        Some(Known {
            id: "ours".into(),
            owned: true,
            schedule: None,
        }),
    );
    inv.replace(part.clone(), HashMap::new(), 0, listing_started);
    assert!(matches!(
        inv.view(std::slice::from_ref(&key), &grant("a"))
            .get(&key)
            .observed,
        Observed::Present { owned: true, .. }
    ));
    // A listing that started after the write is believed (the object vanished: drift).
    inv.replace(part, HashMap::new(), 0, Instant::now());
    assert_eq!(
        inv.view(std::slice::from_ref(&key), &grant("a"))
            .get(&key)
            .observed,
        Observed::Absent
    );
}

#[test]
fn only_partitions_in_use_are_swept_again() {
    let inv = Inventory::default();
    let st = status(GrantPhase::Active, ObjectState::Present);
    let key = claims_of(&st).remove(0).0;
    let part = Partition::of(&key);
    // Loaded, nothing of ours, nobody claims it: not worth listing again.
    inv.replace(part.clone(), HashMap::new(), 0, Instant::now());
    assert!(inv.partitions().is_empty());
    // Something of ours in it: swept.
    inv.record(
        &key,
        Some(Known {
            id: "ours".into(),
            owned: true,
            schedule: None,
        }),
    );
    assert!(inv.partitions().contains(&part));
    // Or claimed by a grant.
    inv.record(&key, None);
    inv.set_claims(&grant("a"), Some(&st));
    assert!(inv.partitions().contains(&part));
}

#[test]
fn a_lagging_watch_cache_never_overrides_claims_we_wrote() {
    let inv = Inventory::default();
    let active = status(GrantPhase::Active, ObjectState::Present);
    let key = claims_of(&active).remove(0).0;
    // We just wrote Active; the cache still shows the grant as Pending (no claims).
    inv.set_claims(&grant("a"), Some(&active));
    inv.seed_claims(&grant("a"), Some(&AccessGrantStatus::default()));
    assert!(
        inv.is_claimed(&key),
        "the sweep would delete an object a live lease needs"
    );
    // Grants this process never reconciled take the cache's word (start-up).
    inv.seed_claims(&grant("b"), Some(&active));
    inv.set_claims(&grant("a"), None);
    assert!(inv.is_claimed(&key));
    // A grant gone from the cache loses its claims, reconciled or not.
    inv.set_claims(&grant("c"), Some(&active));
    inv.retain_grants(&HashSet::new());
    assert!(!inv.is_claimed(&key));
}
