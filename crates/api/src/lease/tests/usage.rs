//! Usage evidence in the lease decision (docs/usage.md): batches counted once into
//! `status.usage`, the `Used` condition, findings as Events, and a sensitive action revoking a
//! lease under `watch.onSensitiveAction: Revoke`.

use super::*;
use crate::usage::{Finding, FindingKind, UsageDelta};
use crate::v1alpha1::{OnSensitiveAction, WatchRules};

fn batch(sequence: u64, operations: u64, finding: Option<(FindingKind, bool)>) -> UsageDelta {
    UsageDelta {
        sequence,
        operations,
        last_operation: (operations > 0).then(|| t0() + mins(5)),
        actions: if operations > 0 {
            vec![(
                "microsoft.authorization/roleassignments/write".into(),
                operations,
            )]
        } else {
            Vec::new()
        },
        findings: finding
            .map(|(kind, revoke)| Finding {
                kind,
                at: t0() + mins(5),
                grant: Some("payments/nightly".into()),
                principal: Uuid::parse_str(PRINCIPAL).unwrap(),
                event: Some(format!("ev-{sequence}")),
                resource: None,
                message: format!("{} found", kind.as_str()),
                revoke,
            })
            .into_iter()
            .collect(),
        ..UsageDelta::default()
    }
}

fn used(st: &AccessGrantStatus) -> (ConditionStatus, String) {
    let c = find_condition(st, "Used").unwrap();
    (c.status, c.reason.to_string())
}

#[test]
fn batches_are_counted_once_and_the_used_condition_follows() {
    let mut h = Harness::new("8h");
    let spec = spec(Some("1h"), None);
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active);
    assert!(st.usage.is_none(), "no logs read, no usage block");
    assert!(find_condition(&st, "Used").is_none());
    h.usage = vec![batch(1, 0, None)];
    run_to(&h, &mut azure, &spec, &mut st, t0() + mins(1));
    assert_eq!(
        used(&st),
        (ConditionStatus::False, "NoUsageLogged".to_owned())
    );
    h.usage = vec![batch(1, 0, None), batch(2, 3, None)];
    run_to(&h, &mut azure, &spec, &mut st, t0() + mins(2));
    // The same batches again (the controller has not heard the status was written).
    let d = run_to(&h, &mut azure, &spec, &mut st, t0() + mins(3));
    let u = st.usage.clone().unwrap();
    assert_eq!((u.operations, u.sequence), (3, 2));
    assert_eq!(used(&st), (ConditionStatus::True, "UsageLogged".to_owned()));
    assert!(d.events.is_empty(), "{:?}", d.events);
}

#[test]
fn a_finding_is_an_event_once_and_notify_leaves_the_lease_running() {
    let mut h = Harness::new("8h");
    let spec = spec(Some("1h"), None);
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    h.usage = vec![batch(1, 1, Some((FindingKind::PrivilegeChain, false)))];
    let d = run_to(&h, &mut azure, &spec, &mut st, t0() + mins(6));
    assert_eq!(
        d.events
            .iter()
            .filter(|e| e.reason == Reason::PrivilegeChain)
            .count(),
        1
    );
    assert_eq!(st.phase, GrantPhase::Active);
    let d = run_to(&h, &mut azure, &spec, &mut st, t0() + mins(7));
    assert!(!d.events.iter().any(|e| e.reason == Reason::PrivilegeChain));
    assert_eq!(st.usage.as_ref().unwrap().findings.len(), 1);
}

#[test]
fn a_sensitive_action_under_a_revoking_policy_ends_the_lease_and_deletes_everything() {
    let mut h = Harness::new("8h");
    h.policies = policy_with(|p| {
        p.watch = Some(WatchRules {
            sensitive_actions: Vec::new(),
            on_sensitive_action: OnSensitiveAction::Revoke,
        });
    });
    let spec = spec(Some("1h"), None);
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active);
    h.usage = vec![batch(1, 1, Some((FindingKind::SensitiveAction, true)))];
    run_to(&h, &mut azure, &spec, &mut st, t0() + mins(6));
    assert_eq!(st.phase, GrantPhase::Revoked);
    assert_eq!(st.end_reason, Some(EndReason::Revoked));
    assert!(azure.objects.is_empty(), "{:?}", azure.objects);
    assert_eq!(
        st.usage.as_ref().unwrap().findings[0].kind,
        "SensitiveAction"
    );
    let c = find_condition(&st, "PolicyAllowed").unwrap();
    assert_eq!(c.reason, "SensitiveAction");
    assert!(
        c.message.contains("watch.onSensitiveAction: Revoke"),
        "{}",
        c.message
    );
    // Counted into the ended lease's record, once.
    assert_eq!(st.usage.as_ref().map(|u| u.sequence), Some(1));
}

#[test]
fn a_lease_concluded_unused_says_so() {
    let mut h = Harness::new("8h");
    let spec = spec(Some("1h"), None);
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    run_to(&h, &mut azure, &spec, &mut st, t0() + mins(61));
    assert_eq!(st.phase, GrantPhase::Expired);
    let mut end = batch(1, 0, Some((FindingKind::UnusedGrant, false)));
    end.concluded = true;
    h.usage = vec![end];
    let d = run_to(&h, &mut azure, &spec, &mut st, t0() + mins(80));
    assert_eq!(st.phase, GrantPhase::Expired);
    assert!(
        d.events
            .iter()
            .any(|e| e.reason == Reason::UnusedGrant && !e.warning)
    );
    assert_eq!(
        used(&st),
        (ConditionStatus::False, "UnusedGrant".to_owned())
    );
}
