//! Change tickets (DESIGN §11, docs/approval.md "Tickets"): the pattern, and what a checker's
//! answer does to a waiting grant and a live lease, with the property test of the invariant.

use super::*;
use crate::ticket::{TicketKey, TicketState, TicketView};

/// `OPS-<n>` must be named; with a checker, `jira` must say it is open.
fn ticket_policy(checker: Option<&str>) -> Vec<NamedPolicy> {
    policy_with(|p| {
        p.ticket = Some(TicketRules {
            pattern: "OPS-[0-9]+".into(),
            checker: checker.map(Into::into),
        });
    })
}

fn key() -> TicketKey {
    TicketKey {
        checker: "jira".into(),
        ticket: "OPS-1234".into(),
    }
}

fn view(state: TicketState) -> TicketView {
    TicketView {
        states: [(key(), state)].into_iter().collect(),
    }
}

fn with_justification(j: &str) -> AccessGrantSpec {
    AccessGrantSpec {
        justification: Some(j.into()),
        ..spec(Some("1h"), None)
    }
}

#[test]
fn a_justification_without_a_matching_ticket_is_denied_naming_the_field() {
    let mut h = Harness::new("8h");
    h.policies = ticket_policy(None);
    let mut st = AccessGrantStatus::default();
    run_to(
        &h,
        &mut AzureModel::default(),
        &with_justification("nightly backup, CHG-1"),
        &mut st,
        t0(),
    );
    assert_eq!(st.phase, GrantPhase::Denied);
    let msg = st.message.unwrap_or_default();
    assert!(
        msg.contains("spec.justification: must name a change ticket matching \"OPS-[0-9]+\""),
        "{msg}"
    );
    // Without a checker the pattern is all: a named ticket activates.
    let mut st = AccessGrantStatus::default();
    run_to(
        &h,
        &mut AzureModel::default(),
        &with_justification("OPS-9 restore"),
        &mut st,
        t0(),
    );
    assert_eq!(st.phase, GrantPhase::Active);
}

#[test]
fn a_grant_waits_while_its_ticket_is_unknown_and_activates_once_open() {
    let mut h = Harness::new("8h");
    h.policies = ticket_policy(Some("jira"));
    let spec = spec(Some("1h"), None);
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    let d = run_to(&h, &mut azure, &spec, &mut st, t0());
    assert!(st.activated_at.is_none());
    assert!(azure.objects.is_empty());
    assert_eq!(
        st.message.as_deref(),
        Some("checking that ticket OPS-1234 (checker jira) is open before activating")
    );
    assert!(d.retry_after.is_some(), "looks again");
    h.tickets = view(TicketState::Unavailable {
        detail: "checker jira: could not connect".into(),
    });
    run_to(&h, &mut azure, &spec, &mut st, t0() + mins(1));
    assert!(st.activated_at.is_none());
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.contains("cannot be checked (checker jira: could not connect)")),
        "{:?}",
        st.message
    );
    h.tickets = view(TicketState::Open);
    run_to(&h, &mut azure, &spec, &mut st, t0() + mins(2));
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(st.activated_at, Some(t0()));
}

#[test]
fn a_closed_ticket_denies_a_waiting_grant_naming_the_ticket() {
    let mut h = Harness::new("8h");
    h.policies = ticket_policy(Some("jira"));
    h.tickets = view(TicketState::Closed);
    let mut st = AccessGrantStatus::default();
    let d = run_to(
        &h,
        &mut AzureModel::default(),
        &spec(Some("1h"), None),
        &mut st,
        t0(),
    );
    assert_eq!(st.phase, GrantPhase::Denied);
    assert!(d.events.iter().any(|e| e.reason == Reason::TicketClosed));
    let c = find_condition(&st, "PolicyAllowed").unwrap();
    assert_eq!(
        (c.status, c.reason.as_ref()),
        (ConditionStatus::False, "TicketClosed")
    );
    assert!(
        c.message
            .contains("ticket OPS-1234 (checker jira) is closed; AccessPolicy payments"),
        "{}",
        c.message
    );
}

#[test]
fn a_live_lease_ends_when_its_ticket_closes_or_cannot_be_checked_but_not_when_unknown() {
    for (state, reason) in [
        (TicketState::Closed, Reason::TicketClosed),
        (
            TicketState::Unavailable {
                detail: "the checker jira has not answered for 5m: timed out".into(),
            },
            Reason::TicketUnverified,
        ),
    ] {
        let mut h = Harness::new("8h");
        h.policies = ticket_policy(Some("jira"));
        h.tickets = view(TicketState::Open);
        let spec = spec(Some("1h"), None);
        let mut azure = AzureModel::default();
        let mut st = active(&h, &mut azure, &spec);
        // The operator restarted: nothing known yet, the lease stands.
        h.tickets = TicketView::default();
        run_to(&h, &mut azure, &spec, &mut st, t0() + mins(5));
        assert_eq!(st.phase, GrantPhase::Active);
        h.tickets = view(state);
        let d = h.decide(&spec, &st, false, t0() + mins(10), &azure.view());
        assert!(
            d.events.iter().any(|e| e.reason == reason),
            "{:?}",
            d.events
        );
        run_to(&h, &mut azure, &spec, &mut st, t0() + mins(10));
        assert_eq!(st.phase, GrantPhase::Revoked, "{:?}", st.message);
        assert_eq!(st.end_reason, Some(EndReason::Revoked));
        assert_eq!(st.ended_at, Some(t0() + mins(10)));
        assert!(azure.objects.is_empty(), "everything deleted");
    }
}

#[test]
fn a_ticket_of_a_policy_that_does_not_allow_the_grant_is_not_read() {
    let mut h = Harness::new("8h");
    // The checked policy does not cover the namespace; the open one allows the grant.
    let mut policies = policy_with(|p| {
        p.namespaces = vec!["search".into()];
        p.ticket = Some(TicketRules {
            pattern: "OPS-[0-9]+".into(),
            checker: Some("jira".into()),
        });
    });
    policies[0].name = "search".into();
    policies.extend(policy("8h"));
    h.policies = policies;
    h.tickets = view(TicketState::Closed);
    let mut st = AccessGrantStatus::default();
    run_to(
        &h,
        &mut AzureModel::default(),
        &spec(Some("1h"), None),
        &mut st,
        t0(),
    );
    assert_eq!(st.phase, GrantPhase::Active, "{:?}", st.message);
}

fn state_of(i: u8) -> TicketState {
    match i % 4 {
        0 => TicketState::Open,
        1 => TicketState::Closed,
        2 => TicketState::Unknown,
        _ => TicketState::Unavailable {
            detail: "unreachable".into(),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A lease is never activated or kept with a ticket known closed, and never activated while
    /// its ticket is not known open: whatever the checker says at each reconcile, a decision
    /// taken with the ticket closed (or unavailable) leaves no live lease, and one taken with it
    /// unknown never starts one.
    #[test]
    fn no_lease_lives_on_a_ticket_not_known_open(
        steps in prop::collection::vec((0u8..4, 1i64..5), 1..10),
    ) {
        let mut h = Harness::new("8h");
        h.policies = ticket_policy(Some("jira"));
        let spec = spec(Some("1h"), None);
        let mut azure = AzureModel::default();
        let mut st = AccessGrantStatus::default();
        let mut now = t0();
        for (state, step) in steps {
            let state = state_of(state);
            h.tickets = view(state.clone());
            let was_live = st.activated_at.is_some() && !st.phase.is_terminal()
                && st.phase != GrantPhase::Revoking;
            run_to(&h, &mut azure, &spec, &mut st, now);
            let live = matches!(st.phase, GrantPhase::Active | GrantPhase::Activating);
            match state {
                TicketState::Open => {}
                TicketState::Closed | TicketState::Unavailable { .. } => {
                    prop_assert!(!live, "live with the ticket {state:?}: {:?}", st.message);
                    if st.activated_at.is_some() {
                        prop_assert!(azure.objects.is_empty(), "objects kept");
                    }
                }
                TicketState::Unknown => {
                    prop_assert!(!live || was_live, "activated on an unknown ticket");
                }
            }
            if state == TicketState::Closed && !was_live && st.activated_at.is_none() {
                prop_assert_eq!(st.phase, GrantPhase::Denied);
            }
            now += mins(step);
        }
    }
}
