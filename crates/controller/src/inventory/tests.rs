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
        federated_credential: Some(Box::new(FederatedCredentialStatus {
            id: Some("/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi/federatedIdentityCredentials/lapse-dev-0123456789abcdef0123456789abcdef".into()),
            name: "lapse-dev-0123456789abcdef0123456789abcdef".into(),
            issuer: "https://issuer".into(),
            subject: "system:serviceaccount:a:b".into(),
            state,
        })),
        ..Default::default()
    }
}

/// An object of ours as a listing shows it.
fn ours() -> Known {
    Known {
        id: "ours".into(),
        owned: true,
        schedule: None,
        holder: Holder::Unmarked,
    }
}

/// Someone else's object, unmarked (made by hand).
fn theirs() -> Known {
    Known {
        id: "theirs".into(),
        owned: false,
        schedule: None,
        holder: Holder::Unmarked,
    }
}

/// The first object a live lease claims.
fn live_key() -> ObjectKey {
    claims_of(&status(GrantPhase::Active, ObjectState::Present))
        .remove(0)
        .0
}

fn grant(n: &str) -> GrantRef {
    GrantRef::new("ns", n)
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
    objects.insert(keys[0].clone(), ours());
    let standing = ObjectKey::RoleAssignment {
        principal_id: uuid::Uuid::nil(),
        role_guid: uuid::Uuid::nil(),
        scope: SCOPE.to_lowercase(),
    };
    objects.insert(standing, theirs());
    inv.replace(part.clone(), objects, 0, &inv.begin_read());
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
    let key = live_key();
    let part = Partition::of(&key);
    let listing = inv.begin_read();
    // We create the object while the listing is in flight; the listing does not show it.
    inv.record(&key, Some(ours()));
    inv.replace(part.clone(), HashMap::new(), 0, &listing);
    assert!(matches!(
        inv.view(std::slice::from_ref(&key), &grant("a"))
            .get(&key)
            .observed,
        Observed::Present { owned: true, .. }
    ));
    // A listing that started after the write is believed (the object vanished: drift).
    inv.replace(part, HashMap::new(), 0, &inv.begin_read());
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
    inv.replace(part.clone(), HashMap::new(), 0, &inv.begin_read());
    assert!(inv.partitions().is_empty());
    // Something of ours in it: swept.
    inv.record(&key, Some(ours()));
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

/// A live lease using someone else's object keeps it alive for nobody, but the sweep looks for
/// it and, when it is gone, sends the lease to put its own in place.
#[test]
fn a_standing_object_in_use_is_watched_but_kept_alive_for_nobody() {
    let inv = Inventory::default();
    let st = status(GrantPhase::Active, ObjectState::Standing);
    let claims = claims_of(&st);
    assert!(claims.iter().all(|(_, c)| *c == Claim::Uses), "{claims:?}");
    let key = claims[0].0.clone();
    let part = Partition::of(&key);
    inv.set_claims(&grant("a"), Some(&st));
    assert!(inv.partitions().contains(&part), "the sweep lists it");
    assert!(!inv.is_claimed(&key));
    assert!(
        !inv.view(std::slice::from_ref(&key), &grant("b"))
            .get(&key)
            .needed_by_other_lease
    );
    // Ours under that tuple (no lease recorded it) is an orphan all the same.
    let mut objects = HashMap::new();
    objects.insert(key.clone(), ours());
    inv.replace(part.clone(), objects, 0, &inv.begin_read());
    assert_eq!(inv.unclaimed_owned(&part).len(), 1);
    assert!(inv.live_claims_missing(&part).is_empty());
    // Gone: the lease is sent to create its own.
    inv.replace(part.clone(), HashMap::new(), 0, &inv.begin_read());
    assert_eq!(inv.live_claims_missing(&part), vec![grant("a")]);
    // Ended leases use nothing.
    assert!(claims_of(&status(GrantPhase::Expired, ObjectState::Standing)).is_empty());
}

/// A holder due a look is read again; the read replaces the inventory's object unless one of
/// our own writes came after the read started.
#[test]
fn held_objects_due_a_look_are_read_again() {
    let inv = Inventory::default();
    let key = live_key();
    let part = Partition::of(&key);
    let end = chrono::Utc::now();
    let theirs = Known {
        id: "theirs".into(),
        owned: false,
        schedule: None,
        holder: Holder::Lapse {
            expires_at: Some(end),
        },
    };
    let mut objects = HashMap::new();
    objects.insert(key.clone(), theirs.clone());
    inv.replace(part.clone(), objects, 0, &inv.begin_read());
    let keys = std::slice::from_ref(&key);
    assert!(
        inv.due_holders(keys, end - chrono::TimeDelta::seconds(1))
            .is_empty()
    );
    assert_eq!(inv.due_holders(keys, end), keys.to_vec());
    // A read that found it gone.
    inv.observe(&key, None, &inv.begin_read());
    assert_eq!(
        inv.view(keys, &grant("a")).get(&key).observed,
        Observed::Absent
    );
    assert!(inv.due_holders(keys, end).is_empty());
    // A read older than our create does not undo it.
    let read = inv.begin_read();
    inv.record(&key, Some(ours()));
    inv.observe(&key, Some(theirs), &read);
    assert!(matches!(
        inv.view(keys, &grant("a")).get(&key).observed,
        Observed::Present { owned: true, .. }
    ));
}

#[test]
fn only_what_a_loaded_listing_left_out_is_read_again() {
    let inv = Inventory::default();
    let st = status(GrantPhase::Active, ObjectState::Present);
    let keys: Vec<ObjectKey> = claims_of(&st).into_iter().map(|(k, _)| k).collect();
    // Nothing listed yet: unknown, not missing.
    assert!(inv.unlisted(&keys).is_empty());
    let listed: HashMap<ObjectKey, Known> = keys.iter().map(|k| (k.clone(), ours())).collect();
    for k in &keys {
        inv.replace(Partition::of(k), listed.clone(), 0, &inv.begin_read());
    }
    assert!(inv.unlisted(&keys).is_empty());
    // A listing that skipped the role assignment (paged while others deleted).
    let mut skipped = listed.clone();
    skipped.remove(&keys[0]);
    inv.replace(Partition::of(&keys[0]), skipped, 0, &inv.begin_read());
    assert_eq!(inv.unlisted(&keys), vec![keys[0].clone()]);
}

/// Our writes are remembered only while a read that started before them is in flight: then
/// they overrule what it finds; afterwards no read can bring older news of them.
#[test]
fn writes_are_remembered_only_while_an_older_read_is_in_flight() {
    let inv = Inventory::default();
    let key = live_key();
    let part = Partition::of(&key);
    inv.record(&key, Some(ours()));
    assert_eq!(inv.remembered_writes(), 0, "no read in flight");
    let slow = inv.begin_read();
    inv.record(&key, Some(ours()));
    // A read that started after the write and ends first does not end its memory.
    let quick = inv.begin_read();
    inv.replace(part.clone(), HashMap::new(), 0, &quick);
    drop(quick);
    assert_eq!(inv.remembered_writes(), 1);
    // The slow listing, which cannot have seen our create, still does not undo it.
    inv.replace(part, HashMap::new(), 0, &slow);
    assert!(matches!(
        inv.view(std::slice::from_ref(&key), &grant("a"))
            .get(&key)
            .observed,
        Observed::Present { owned: true, .. }
    ));
    drop(slow);
    assert_eq!(inv.remembered_writes(), 0);
}
