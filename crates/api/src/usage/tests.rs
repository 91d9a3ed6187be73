//! Attribution and findings: scenario tests and the invariant that nothing outside a lease's
//! principal, window and scopes is attributed to it.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;

const SUB: &str = "/subscriptions/00000000-0000-0000-0000-0000000000aa";

fn t(mins: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0)
        .single()
        .unwrap_or_default()
        + TimeDelta::minutes(mins)
}

fn arm(s: &str) -> ArmId {
    ArmId::parse(s).unwrap()
}

fn rg(name: &str) -> String {
    format!("{SUB}/resourceGroups/{name}")
}

const P: Uuid = Uuid::from_u128(1);
const OTHER: Uuid = Uuid::from_u128(2);

fn lease() -> LeaseWindow {
    LeaseWindow {
        grant: "payments/nightly".into(),
        principal: P,
        scopes: vec![arm(&rg("payments-rg"))],
        activated_at: t(0),
        ended_at: Some(t(60)),
        fic: Some("lapse-prod-abc".into()),
        fic_deleted_at: Some(t(60)),
        sensitive: DEFAULT_SENSITIVE_ACTIONS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        on_sensitive: OnSensitiveAction::Notify,
    }
}

fn op(at: i64, caller: Uuid, action: &str, resource: &str) -> Operation {
    Operation {
        id: format!("ev-{at}-{action}"),
        time: t(at),
        caller,
        action: action.to_ascii_lowercase(),
        resource: arm(resource),
        succeeded: true,
        grantee: None,
    }
}

const WRITE: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/write";

#[test]
fn an_operation_inside_the_lease_belongs_to_it_and_after_the_bound_is_use_after_end() {
    let leases = [lease()];
    let bound = TimeDelta::minutes(30);
    let acct = format!(
        "{}/providers/Microsoft.Storage/storageAccounts/acct",
        rg("payments-rg")
    );
    let gov = Governed::default();
    assert_eq!(
        attribute(&op(10, P, WRITE, &acct), &leases, &gov, bound),
        Attribution::Lease(0)
    );
    // Within the bound after the end: still the lease's (ARM's cache).
    assert_eq!(
        attribute(&op(80, P, WRITE, &acct), &leases, &gov, bound),
        Attribution::Lease(0)
    );
    let late = op(95, P, WRITE, &acct);
    let a = attribute(&late, &leases, &gov, bound);
    assert_eq!(a, Attribution::AfterEnd(0));
    let f = findings_for_operation(&late, a, &leases);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].kind, FindingKind::UseAfterEnd);
    assert_eq!(f[0].grant.as_deref(), Some("payments/nightly"));
    // A refused operation after the end is the end holding: no finding.
    let refused = Operation {
        succeeded: false,
        ..late
    };
    assert!(findings_for_operation(&refused, a, &leases).is_empty());
}

#[test]
fn a_governed_principal_acting_without_a_lease_is_a_standing_path() {
    let gov = Governed {
        principals: vec![OTHER],
        scopes: vec![arm(&rg("payments-rg"))],
    };
    let o = op(10, OTHER, WRITE, &rg("payments-rg"));
    let a = attribute(&o, &[lease()], &gov, TimeDelta::zero());
    assert_eq!(a, Attribution::WithoutLease);
    assert_eq!(
        findings_for_operation(&o, a, &[lease()])[0].kind,
        FindingKind::UseWithoutLease
    );
    // Outside what lapse governs: nothing.
    let elsewhere = op(10, OTHER, WRITE, &rg("other-rg"));
    assert_eq!(
        attribute(&elsewhere, &[lease()], &gov, TimeDelta::zero()),
        Attribution::Ungoverned
    );
}

#[test]
fn a_sensitive_action_is_found_and_revokes_under_a_revoking_policy() {
    let mut l = lease();
    l.on_sensitive = OnSensitiveAction::Revoke;
    let ra = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{}",
        rg("payments-rg"),
        Uuid::from_u128(9)
    );
    let mut o = op(5, P, "Microsoft.Authorization/roleAssignments/write", &ra);
    o.grantee = Some(OTHER);
    let leases = [l];
    let a = attribute(&o, &leases, &Governed::default(), TimeDelta::zero());
    let f = findings_for_operation(&o, a, &leases);
    let kinds: Vec<FindingKind> = f.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [FindingKind::SensitiveAction, FindingKind::PrivilegeChain]
    );
    assert!(f[0].revoke);
    // The chain names both principals.
    assert!(f[1].message.contains(&P.to_string()) && f[1].message.contains(&OTHER.to_string()));
    // Granting itself access again is no chain.
    o.grantee = Some(P);
    let f = findings_for_operation(&o, a, &leases);
    assert_eq!(f.len(), 1);
}

#[test]
fn a_token_through_a_deleted_credential_is_use_after_end() {
    let leases = [lease()];
    let token = |at, fic: Option<&str>| TokenIssue {
        id: format!("si-{at}"),
        time: t(at),
        principal: P,
        federated_credential: fic.map(str::to_owned),
    };
    assert_eq!(
        attribute_token(
            &token(5, Some("lapse-prod-abc")),
            &leases,
            TimeDelta::zero()
        ),
        Some(0)
    );
    assert!(findings_for_token(&token(5, Some("lapse-prod-abc")), &leases).is_empty());
    let late = token(61, Some("LAPSE-prod-abc"));
    let f = findings_for_token(&late, &leases);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].kind, FindingKind::UseAfterEnd);
    // Through another credential: not this lease's.
    assert_eq!(
        attribute_token(&token(5, Some("someone-else")), &leases, TimeDelta::zero()),
        None
    );
}

#[test]
fn usage_counts_and_ranks_what_a_lease_did() {
    let acct = format!(
        "{}/providers/Microsoft.Storage/storageAccounts/acct",
        rg("payments-rg")
    );
    let ops = [
        op(1, P, WRITE, &acct),
        op(2, P, WRITE, &acct),
        op(
            3,
            P,
            "Microsoft.Storage/storageAccounts/listKeys/action",
            &acct,
        ),
        Operation {
            succeeded: false,
            ..op(4, P, WRITE, &acct)
        },
    ];
    let tokens = [TokenIssue {
        id: "si".into(),
        time: t(0),
        principal: P,
        federated_credential: None,
    }];
    let mut d = UsageDelta::new(1);
    ops.iter().for_each(|o| d.count_operation(o));
    tokens.iter().for_each(|t| d.count_token(t));
    let (u, _) = apply_deltas(None, &[d]);
    let u = u.unwrap();
    assert_eq!(u.operations, 3);
    assert_eq!(u.tokens, 1);
    assert_eq!(u.last_operation, Some(t(3)));
    assert_eq!(
        (u.actions[0].action.as_str(), u.actions[0].count),
        (WRITE.to_ascii_lowercase().as_str(), 2)
    );
    assert!(end_findings(&lease(), &u, &[]).is_empty());
    let unused = end_findings(&lease(), &Default::default(), &[]);
    assert_eq!(unused[0].kind, FindingKind::UnusedGrant);
    let right = end_findings(&lease(), &u, &["Storage Account Contributor".into()]);
    assert_eq!(right[0].kind, FindingKind::RightSize);
}

fn role(name: &str, actions: &[&str], not_actions: &[&str]) -> RolePermissions {
    RolePermissions {
        name: name.into(),
        actions: actions.iter().map(|s| (*s).to_owned()).collect(),
        not_actions: not_actions.iter().map(|s| (*s).to_owned()).collect(),
    }
}

#[test]
fn right_size_names_the_narrower_roles_that_allow_everything_done() {
    let contributor = role(
        "Contributor",
        &["*"],
        &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
        ],
    );
    let storage = role(
        "Storage Account Contributor",
        &[
            "Microsoft.Storage/storageAccounts/*",
            "Microsoft.Resources/deployments/*",
        ],
        &[],
    );
    let keys = role(
        "Storage Account Key Operator Service Role",
        &[
            "Microsoft.Storage/storageAccounts/listkeys/action",
            "Microsoft.Storage/storageAccounts/regeneratekey/action",
        ],
        &[],
    );
    let owner = role("Owner", &["*"], &[]);
    let candidates = [contributor.clone(), storage, keys, owner];
    let listed = ["microsoft.storage/storageaccounts/listkeys/action"];
    assert_eq!(
        narrower_roles(&contributor, &candidates, &listed),
        [
            "Storage Account Key Operator Service Role",
            "Storage Account Contributor"
        ]
    );
    let wrote = ["microsoft.storage/storageaccounts/blobservices/containers/write"];
    assert_eq!(
        narrower_roles(&contributor, &candidates, &wrote),
        ["Storage Account Contributor"]
    );
    // Owner is wider, never suggested; nothing narrower allows a role assignment write.
    assert!(
        narrower_roles(
            &contributor,
            &candidates,
            &["microsoft.authorization/roleassignments/write"]
        )
        .is_empty()
    );
}

#[test]
fn action_patterns_match_by_segment() {
    assert!(action_matches(
        "*",
        "microsoft.storage/storageaccounts/read"
    ));
    assert!(action_matches(
        "Microsoft.Storage/storageAccounts/*",
        "microsoft.storage/storageaccounts/listkeys/action"
    ));
    assert!(action_matches(
        "Microsoft.Authorization/*/Write",
        "microsoft.authorization/roleassignments/write"
    ));
    assert!(!action_matches(
        "Microsoft.Authorization/*/Write",
        "microsoft.authorization/roleassignments/delete"
    ));
    assert!(!action_matches(
        "Microsoft.Storage/storageAccounts/read",
        "microsoft.storage/storageaccounts/read/x"
    ));
}

proptest! {
    /// DESIGN §13: an event outside every lease's window, principal or scope is never
    /// attributed to a lease.
    #[test]
    fn nothing_outside_a_leases_principal_window_and_scope_is_attributed(
        starts in prop::collection::vec((0i64..500, 1i64..200, any::<bool>(), 0usize..3, 0u128..3), 1..6),
        event in (-50i64..900, 0u128..4, 0usize..4),
        bound_mins in 0i64..40,
    ) {
        let groups = ["a-rg", "b-rg", "c-rg"];
        let leases: Vec<LeaseWindow> = starts
            .iter()
            .map(|(start, len, ended, g, p)| LeaseWindow {
                principal: Uuid::from_u128(*p),
                scopes: vec![arm(&rg(groups[*g]))],
                activated_at: t(*start),
                ended_at: ended.then(|| t(start + len)),
                ..lease()
            })
            .collect();
        let (at, who, g) = event;
        let resource = match groups.get(g) {
            Some(g) => format!("{}/providers/Microsoft.Storage/storageAccounts/x", rg(g)),
            None => format!("{SUB}/resourceGroups/elsewhere"),
        };
        let o = op(at, Uuid::from_u128(who), WRITE, &resource);
        let bound = TimeDelta::minutes(bound_mins);
        match attribute(&o, &leases, &Governed::default(), bound) {
            Attribution::Lease(i) => {
                let l = &leases[i];
                prop_assert_eq!(l.principal, o.caller);
                prop_assert!(o.time >= l.activated_at);
                prop_assert!(l.ended_at.is_none_or(|e| o.time <= e + bound));
                prop_assert!(l.reaches(&o.resource));
            }
            Attribution::AfterEnd(i) => {
                let l = &leases[i];
                prop_assert_eq!(l.principal, o.caller);
                prop_assert!(l.ended_at.is_some_and(|e| o.time > e + bound));
                // And no lease covers it.
                prop_assert!(!leases.iter().any(|l| l.principal == o.caller && l.reaches(&o.resource) && l.covers(o.time, bound)));
            }
            Attribution::WithoutLease | Attribution::Ungoverned => {
                prop_assert!(!leases.iter().any(|l| l.principal == o.caller && l.reaches(&o.resource) && l.covers(o.time, bound)));
            }
        }
    }
}

#[test]
fn a_batch_is_counted_once_in_sequence_order_and_replays_change_nothing() {
    let acct = format!(
        "{}/providers/Microsoft.Storage/storageAccounts/acct",
        rg("payments-rg")
    );
    let mut first = UsageDelta::new(1);
    first.count_operation(&op(1, P, WRITE, &acct));
    let mut second = UsageDelta::new(2);
    second.count_operation(&op(2, P, WRITE, &acct));
    let sensitive = op(3, P, "Microsoft.Authorization/roleAssignments/write", &acct);
    second.count_operation(&sensitive);
    second.findings = findings_for_operation(&sensitive, Attribution::Lease(0), &[lease()]);
    // Out of order: still applied by sequence.
    let (u, added) = apply_deltas(None, &[second.clone(), first.clone()]);
    let u = u.unwrap();
    assert_eq!((u.operations, u.sequence), (3, 2));
    assert_eq!(added.len(), 1);
    assert_eq!(u.findings[0].kind, "SensitiveAction");
    // A restart replays both batches: the status's sequence says they are counted.
    let (again, added) = apply_deltas(Some(&u), &[first, second]);
    assert_eq!(again.as_ref(), Some(&u));
    assert!(added.is_empty());
    // No usage and nothing to count: no usage block.
    assert_eq!(apply_deltas(None, &[]), (None, Vec::new()));
}

#[test]
fn the_action_list_and_the_findings_stay_bounded() {
    let acct = format!(
        "{}/providers/Microsoft.Storage/storageAccounts/acct",
        rg("payments-rg")
    );
    let mut d = UsageDelta::new(1);
    for i in 0..(MAX_ACTIONS + 5) {
        d.count_operation(&op(1, P, &format!("Microsoft.Foo/bars{i}/write"), &acct));
        d.findings.push(Finding {
            kind: FindingKind::UseAfterEnd,
            at: t(i as i64),
            grant: None,
            principal: P,
            event: Some(format!("e{i}")),
            resource: None,
            message: String::new(),
            revoke: false,
        });
    }
    let (u, added) = apply_deltas(None, &[d]);
    let u = u.unwrap();
    assert_eq!(u.actions.len(), MAX_ACTIONS);
    assert!(u.actions_truncated);
    assert_eq!(u.findings.len(), MAX_FINDINGS);
    // The newest are kept.
    assert_eq!(
        u.findings.last().and_then(|f| f.event.clone()),
        Some(format!("e{}", MAX_ACTIONS + 4))
    );
    assert_eq!(added.len(), MAX_ACTIONS + 5);
}

#[test]
fn an_operation_belongs_to_the_running_lease_not_one_in_its_propagation_tail() {
    let bound = TimeDelta::minutes(30);
    let acct = format!(
        "{}/providers/Microsoft.Storage/storageAccounts/acct",
        rg("payments-rg")
    );
    let ended = lease();
    let running = LeaseWindow {
        grant: "payments/escalate".into(),
        activated_at: t(61),
        ended_at: None,
        ..lease()
    };
    // The ended lease first in the list: still the running one takes it.
    let leases = [ended, running];
    let op = op(62, P, WRITE, &acct);
    assert_eq!(
        attribute(&op, &leases, &Governed::default(), bound),
        Attribution::Lease(1)
    );
    let token = TokenIssue {
        id: "si".into(),
        time: t(62),
        principal: P,
        federated_credential: Some("lapse-prod-abc".into()),
    };
    assert_eq!(attribute_token(&token, &leases, bound), Some(1));
}
