//! Auto-approval rules, escalation tiers, `maxExtensions` and `activeHours` (DESIGN §11), with
//! the property tests for the invariants they add.

use super::*;
use crate::approval::ApprovalView;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn auto_rule(max: &str, roles: &[&str], groups: &[&str]) -> AutoApproveRule {
    AutoApproveRule {
        max_duration: max.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        requester_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

/// Approval by bob (or `oncall`), escalating to erin after 15m; auto-approval by `rules`.
fn workflow_policy(rules: Vec<AutoApproveRule>) -> Vec<NamedPolicy> {
    policy_with(|p| {
        p.approval = Some(ApprovalRules {
            required: 1,
            approvers: Approvers {
                users: vec!["bob".into()],
                groups: vec!["oncall".into()],
            },
            timeout: "4h".into(),
            auto_approve: rules,
            escalation: vec![EscalationTier {
                after: "15m".into(),
                approvers: Approvers {
                    users: vec!["erin".into()],
                    groups: vec!["managers".into()],
                },
            }],
        });
    })
}

fn asked(by: &str, duration: &str, groups: &[&str]) -> AccessGrantSpec {
    AccessGrantSpec {
        requester_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        duration: Some(duration.into()),
        ..requested(by)
    }
}

#[test]
fn a_grant_a_rule_covers_activates_without_a_human_and_names_the_rule() {
    let mut h = Harness::new("8h");
    h.policies = workflow_policy(vec![
        auto_rule("1h", &["Reader"], &[]),
        auto_rule("30m", &["Reader", "Storage Blob Data Reader"], &[]),
    ]);
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    let first = h.decide(
        &asked("alice", "20m", &[]),
        &AccessGrantStatus::default(),
        false,
        t0(),
        &azure.view(),
    );
    assert!(first.events.iter().any(|e| e.reason == Reason::Approved));
    run_to(&h, &mut azure, &asked("alice", "20m", &[]), &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active, "{:?}", st.message);
    assert_eq!(st.activated_at, Some(t0()));
    let (status, reason, msg) = approved_by(&st).unwrap();
    assert_eq!((status, reason), (ConditionStatus::True, Reason::Approved));
    assert_eq!(
        msg,
        "auto-approved by rule 1 of AccessPolicy payments: Reader, Storage Blob Data Reader \
         for at most 30m"
    );
    // Said once: the next reconcile does not repeat the Event.
    let d = run_to(
        &h,
        &mut azure,
        &asked("alice", "20m", &[]),
        &mut st,
        t0() + mins(1),
    );
    assert!(!d.events.iter().any(|e| e.reason == Reason::Approved));

    // Longer than every rule allows: it waits for a human.
    let mut st = AccessGrantStatus::default();
    run_to(
        &h,
        &mut AzureModel::default(),
        &asked("alice", "45m", &[]),
        &mut st,
        t0(),
    );
    assert_eq!(st.phase, GrantPhase::PendingApproval);
}

#[test]
fn a_rule_with_requester_groups_needs_them_and_the_admission_policy() {
    let mut h = Harness::new("8h");
    h.policies = workflow_policy(vec![auto_rule(
        "30m",
        &["Reader", "Storage Blob Data Reader"],
        &["sre"],
    )]);
    let run = |h: &Harness, groups: &[&str]| {
        let mut st = AccessGrantStatus::default();
        run_to(
            h,
            &mut AzureModel::default(),
            &asked("alice", "20m", groups),
            &mut st,
            t0(),
        );
        st
    };
    assert_eq!(run(&h, &[]).phase, GrantPhase::PendingApproval);
    assert_eq!(run(&h, &["devs"]).phase, GrantPhase::PendingApproval);
    let st = run(&h, &["devs", "sre"]);
    assert_eq!(st.phase, GrantPhase::Active);
    assert!(
        approved_by(&st)
            .unwrap()
            .2
            .contains("requested as a member of sre")
    );
    // Groups nobody vouches for approve nothing.
    h.approvals.admission = Err("the requester rule is missing".into());
    let st = run(&h, &["sre"]);
    assert_eq!(st.phase, GrantPhase::PendingApproval);
    assert_eq!(
        approved_by(&st).unwrap().1,
        Reason::AdmissionPoliciesMissing
    );
}

#[test]
fn an_eligible_deny_still_stops_an_auto_approved_grant() {
    let mut h = Harness::new("8h");
    h.policies = workflow_policy(vec![auto_rule(
        "30m",
        &["Reader", "Storage Blob Data Reader"],
        &[],
    )]);
    let mut azure = AzureModel::default();
    let spec = asked("alice", "20m", &[]);
    let mut st = active(&h, &mut azure, &spec);
    h.approvals.decisions = vec![decision(
        "no",
        "bob",
        &[],
        ApprovalDecision::Deny,
        1,
        t0() + mins(2),
    )];
    run_to(&h, &mut azure, &spec, &mut st, t0() + mins(3));
    assert_eq!(st.phase, GrantPhase::Revoked);
    assert!(azure.objects.is_empty());
}

#[test]
fn a_tier_approver_counts_only_once_the_tier_opens_and_must_approve_again() {
    let mut h = Harness::new("8h");
    h.policies = workflow_policy(Vec::new());
    let mut azure = AzureModel::default();
    let spec = asked("alice", "1h", &[]);
    let mut st = AccessGrantStatus::default();
    let d = run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(
        d.requeue_at,
        Some(t0() + mins(15)),
        "wakes when the tier opens"
    );
    let (_, _, msg) = approved_by(&st).unwrap();
    assert!(
        msg.contains("escalates at 2026-12-01T02:15:00Z to users erin or groups managers"),
        "{msg}"
    );

    // erin approves at 00:05: too early, never counted.
    h.approvals.decisions = vec![decision(
        "early",
        "erin",
        &[],
        ApprovalDecision::Approve,
        1,
        t0() + mins(5),
    )];
    for now in [t0() + mins(6), t0() + mins(16)] {
        run_to(&h, &mut azure, &spec, &mut st, now);
        assert_eq!(st.phase, GrantPhase::PendingApproval);
        let (_, _, msg) = approved_by(&st).unwrap();
        assert!(
            msg.contains("erin (an escalation approver deciding before their tier opened"),
            "{msg}"
        );
    }
    assert!(
        approved_by(&st)
            .unwrap()
            .2
            .contains("escalated since 2026-12-01T02:15:00Z")
    );
    // A member of the tier's group, once it opened: counts, and the lease starts then.
    h.approvals.decisions.push(decision(
        "late",
        "frank",
        &["managers"],
        ApprovalDecision::Approve,
        1,
        t0() + mins(20),
    ));
    run_to(&h, &mut azure, &spec, &mut st, t0() + mins(21));
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(st.activated_at, Some(t0() + mins(20)));
    assert_eq!(
        st.approvals
            .iter()
            .map(|a| a.approver.as_str())
            .collect::<Vec<_>>(),
        ["frank"]
    );
}

#[test]
fn the_timeout_still_ends_an_escalated_wait() {
    let mut h = Harness::new("8h");
    h.policies = workflow_policy(Vec::new());
    let mut st = AccessGrantStatus::default();
    let spec = asked("alice", "1h", &[]);
    run_to(
        &h,
        &mut AzureModel::default(),
        &spec,
        &mut st,
        t0() + mins(30),
    );
    assert_eq!(st.phase, GrantPhase::PendingApproval);
    run_to(
        &h,
        &mut AzureModel::default(),
        &spec,
        &mut st,
        t0() + mins(240),
    );
    assert_eq!(st.phase, GrantPhase::Denied);
    assert_eq!(approved_by(&st).unwrap().1, Reason::ApprovalTimedOut);
}

fn extended(
    h: &mut Harness,
    azure: &mut AzureModel,
    st: &mut AccessGrantStatus,
    d: &str,
    now: DateTime<Utc>,
) -> Decision {
    h.generation += 1;
    run_to(
        h,
        azure,
        &AccessGrantSpec {
            duration: Some(d.into()),
            ..spec(None, None)
        },
        st,
        now,
    )
}

#[test]
fn one_extension_past_max_extensions_is_refused_and_the_lease_is_unchanged() {
    let mut h = Harness::new("8h");
    h.policies = policy_with(|p| p.max_extensions = Some(2));
    let mut azure = AzureModel::default();
    let mut st = active(&h, &mut azure, &spec(Some("1h"), None));
    for (i, d) in ["2h", "3h"].iter().enumerate() {
        let dec = extended(
            &mut h,
            &mut azure,
            &mut st,
            d,
            t0() + mins(10 * (i as i64 + 1)),
        );
        assert!(dec.events.iter().any(|e| e.reason == Reason::Extended));
        assert_eq!(st.extensions, i as u32 + 1);
    }
    let before = st.clone();
    let dec = extended(&mut h, &mut azure, &mut st, "4h", t0() + mins(40));
    assert!(!dec.events.iter().any(|e| e.reason == Reason::Extended));
    assert_eq!(st.expires_at, before.expires_at);
    assert_eq!(st.extensions, 2);
    assert_eq!(st.phase, GrantPhase::Active);
    let c = find_condition(&st, "ExtensionDenied").unwrap();
    assert_eq!(
        (c.status, c.reason.as_ref()),
        (ConditionStatus::True, "ExtensionLimitReached")
    );
    assert!(c.message.contains("maxExtensions is 2"), "{}", c.message);
    // Shortening is not an extension, and stays possible.
    let dec = extended(&mut h, &mut azure, &mut st, "90m", t0() + mins(50));
    assert!(dec.events.iter().any(|e| e.reason == Reason::Shortened));
    assert_eq!(st.extensions, 2);
}

fn weekdays(from: &str, to: &str, tz: &str) -> ActiveHours {
    ActiveHours {
        time_zone: tz.into(),
        days: vec![
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
        ],
        from: from.into(),
        to: to.into(),
    }
}

#[test]
fn outside_active_hours_a_grant_waits_for_the_opening_and_its_lease_ends_at_the_close() {
    let mut h = Harness::new("8h");
    h.max_duration = TimeDelta::days(30);
    h.policies = policy_with(|p| p.active_hours = Some(weekdays("09:00", "17:00", "UTC")));
    // t0 is Tuesday 02:00Z: outside.
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    let spec = spec(Some("1h"), None);
    let d = run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Scheduled);
    assert!(azure.objects.is_empty());
    assert_eq!(d.requeue_at, Some(at("2026-12-01T09:00:00Z")));
    let msg = st.message.clone().unwrap();
    assert!(
        msg.contains("Mon,Tue,Wed,Thu,Fri 09:00-17:00 UTC")
            && msg.contains("activates at 2026-12-01T09:00:00Z"),
        "{msg}"
    );
    // Still waiting past its duration from creation: it is not lost.
    run_to(&h, &mut azure, &spec, &mut st, at("2026-12-01T05:00:00Z"));
    assert_eq!(st.phase, GrantPhase::Scheduled);
    run_to(&h, &mut azure, &spec, &mut st, at("2026-12-01T09:00:02Z"));
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(st.activated_at, Some(at("2026-12-01T09:00:00Z")));
    assert_eq!(st.expires_at, Some(at("2026-12-01T10:00:00Z")));

    // Inside: a lease longer than the rest of the window ends at its close.
    h.created = at("2026-12-01T15:00:00Z");
    let mut st = AccessGrantStatus::default();
    let long = super::spec(Some("6h"), None);
    run_to(&h, &mut AzureModel::default(), &long, &mut st, h.created);
    assert_eq!(st.expires_at, Some(at("2026-12-01T17:00:00Z")));
    // Asking for more does not carry it past the close, nor count as an extension.
    let longer = super::spec(Some("7h"), None);
    let d = run_to(
        &h,
        &mut AzureModel::default(),
        &longer,
        &mut st,
        h.created + mins(5),
    );
    assert_eq!(st.expires_at, Some(at("2026-12-01T17:00:00Z")));
    assert_eq!(st.extensions, 0);
    assert!(!d.events.iter().any(|e| e.reason == Reason::Extended));
}

#[test]
fn the_close_follows_daylight_saving_time_on_both_edges_in_berlin() {
    let mut h = Harness::new("8h");
    h.max_duration = TimeDelta::days(30);
    h.policies = policy_with(|p| {
        p.active_hours = Some(ActiveHours {
            time_zone: "Europe/Berlin".into(),
            days: vec![Weekday::Sun],
            from: "01:00".into(),
            to: "04:00".into(),
        })
    });
    // 29 March 2026: 01:00 CET is 00:00Z; 04:00 CEST is 02:00Z (the clocks skip 02:00-03:00).
    h.created = at("2026-03-29T00:30:00Z");
    let mut st = AccessGrantStatus::default();
    run_to(
        &h,
        &mut AzureModel::default(),
        &spec(Some("3h"), None),
        &mut st,
        h.created,
    );
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(st.expires_at, Some(at("2026-03-29T02:00:00Z")));
    // 25 October 2026: 01:00 CEST is 23:00Z the day before; 04:00 CET is 03:00Z (02:00-03:00
    // happens twice).
    h.created = at("2026-10-25T00:30:00Z");
    let mut st = AccessGrantStatus::default();
    run_to(
        &h,
        &mut AzureModel::default(),
        &spec(Some("8h"), None),
        &mut st,
        h.created,
    );
    assert_eq!(st.expires_at, Some(at("2026-10-25T03:00:00Z")));
    // Before the window on the spring day: waits for 00:00Z.
    h.created = at("2026-03-28T22:00:00Z");
    let mut st = AccessGrantStatus::default();
    let d = run_to(
        &h,
        &mut AzureModel::default(),
        &spec(Some("1h"), None),
        &mut st,
        h.created,
    );
    assert_eq!(st.phase, GrantPhase::Scheduled);
    assert_eq!(d.requeue_at, Some(at("2026-03-29T00:00:00Z")));
}

// ---- property tests ----

fn roles_of(mask: u8) -> Vec<&'static str> {
    ["Reader", "Storage Blob Data Reader"]
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, r)| *r)
        .collect()
}

const GROUPS: [&str; 3] = ["sre", "devs", "managers"];

fn groups_of(mask: u8) -> Vec<&'static str> {
    GROUPS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, g)| *g)
        .collect()
}

const DURATIONS: [(&str, i64); 4] = [("10m", 10), ("30m", 30), ("1h", 60), ("2h", 120)];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// An auto-approval never covers a grant no rule matches: without any human decision, a
    /// grant under a policy with approval activates only when a rule's duration, roles and
    /// (believable) requester groups all cover it.
    #[test]
    fn an_auto_approval_never_covers_a_grant_no_rule_matches(
        rules in prop::collection::vec((0usize..4, 1u8..4, 0u8..8), 0..4),
        ask in 0usize..4,
        groups in 0u8..8,
        admission in any::<bool>(),
    ) {
        let mut h = Harness::new("8h");
        h.policies = workflow_policy(
            rules
                .iter()
                .map(|(d, roles, g)| auto_rule(DURATIONS[*d].0, &roles_of(*roles), &groups_of(*g)))
                .collect(),
        );
        h.approvals = ApprovalView {
            admission: if admission { Ok(()) } else { Err("missing".into()) },
            decisions: Vec::new(),
        };
        let spec = asked("alice", DURATIONS[ask].0, &groups_of(groups));
        let mut st = AccessGrantStatus::default();
        run_to(&h, &mut AzureModel::default(), &spec, &mut st, t0());
        // The grant asks for both roles (spec()).
        let matches = rules.iter().any(|(d, roles, g)| {
            DURATIONS[ask].1 <= DURATIONS[*d].1
                && *roles == 3
                && (*g == 0 || (admission && g & groups != 0))
        });
        let live = st.activated_at.is_some();
        prop_assert_eq!(live, matches, "{:?} {:?}", st.phase, st.message);
        if live {
            prop_assert!(approved_by(&st).unwrap().2.starts_with("auto-approved by rule "));
        }
    }

    /// Escalation never makes an ineligible approver count before its tier's time: a lease
    /// under a policy whose first approver (bob) has not approved activates only on a tier
    /// approver's approval made at or after the tier opened, and every counted approval is one.
    #[test]
    fn escalation_never_counts_a_tier_approver_before_the_tier_opens(
        decisions in prop::collection::vec((0usize..4, 0i64..40, any::<bool>()), 0..6),
    ) {
        const WHO: [(&str, &[&str]); 4] = [
            ("erin", &[]),
            ("frank", &["managers"]),
            ("mallory", &["devs"]),
            ("alice", &["managers"]),
        ];
        let mut h = Harness::new("8h");
        h.policies = workflow_policy(Vec::new());
        h.approvals.decisions = decisions
            .iter()
            .enumerate()
            .map(|(i, (who, m, deny))| {
                let (user, groups) = WHO[*who];
                let d = if *deny { ApprovalDecision::Deny } else { ApprovalDecision::Approve };
                decision(&format!("d{i}"), user, groups, d, 1, t0() + mins(*m))
            })
            .collect();
        let mut st = AccessGrantStatus::default();
        run_to(&h, &mut AzureModel::default(), &asked("alice", "1h", &[]), &mut st, t0() + mins(41));
        let opens = t0() + mins(15);
        let counts = |(who, m, _): &(usize, i64, bool)| *who < 2 && t0() + mins(*m) >= opens;
        let approved = decisions.iter().any(|d| counts(d) && !d.2);
        let denied = decisions.iter().any(|d| counts(d) && d.2);
        let live = st.activated_at.is_some() && !st.phase.is_terminal();
        prop_assert_eq!(live, approved && !denied, "{:?} {:?}", st.phase, st.message);
        if denied {
            prop_assert_eq!(st.phase, GrantPhase::Denied);
        }
        for a in &st.approvals {
            prop_assert!(["erin", "frank"].contains(&a.approver.as_str()));
            prop_assert!(a.at.is_some_and(|t| t >= opens), "{:?}", a);
        }
    }

    /// Never more than `maxExtensions` extensions: whatever durations the spec asks in turn,
    /// `status.extensions` counts exactly the Extended events and never passes the limit.
    #[test]
    fn never_more_than_max_extensions(
        max in 0u32..4,
        asks in prop::collection::vec(1i64..8, 1..8),
    ) {
        let mut h = Harness::new("8h");
        h.policies = policy_with(|p| p.max_extensions = Some(max));
        let mut azure = AzureModel::default();
        let mut st = active(&h, &mut azure, &spec(Some("1h"), None));
        let mut extended_events = 0u32;
        for (i, hours) in asks.iter().enumerate() {
            let before = st.expires_at;
            let d = extended(&mut h, &mut azure, &mut st, &format!("{hours}h"), t0() + mins(i as i64 + 1));
            let ext = d.events.iter().filter(|e| e.reason == Reason::Extended).count() as u32;
            extended_events += ext;
            prop_assert!(st.extensions <= max);
            prop_assert_eq!(st.extensions, extended_events);
            if ext == 0 && st.expires_at > before {
                prop_assert!(false, "the expiry moved later without an extension");
            }
        }
    }

    /// A grant never activates (and a lease never runs) outside activeHours: whenever the
    /// lease is live its start and now lie inside one window, and its expiry is not after that
    /// window's close.
    #[test]
    fn no_lease_runs_outside_active_hours(
        tz in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York"]),
        from in 0u32..24 * 4,
        len in 1u32..24 * 4,
        // Two weeks around the spring DST change of 2026 in Europe and America.
        created in 1_772_841_600i64..1_775_520_000,
        duration in 1i64..600,
        steps in prop::collection::vec(1i64..400, 1..10),
    ) {
        let hm = |q: u32| format!("{:02}:{:02}", (q / 4) % 24, (q % 4) * 15);
        prop_assume!(hm(from) != hm(from + len));
        let hours = ActiveHours {
            time_zone: tz.into(),
            days: vec![Weekday::Mon, Weekday::Wed, Weekday::Sat, Weekday::Sun],
            from: hm(from),
            to: hm(from + len),
        };
        let window = crate::hours::ActiveWindow::parse(&hours).unwrap();
        let mut h = Harness::new("8h");
        h.max_duration = TimeDelta::days(30);
        h.policies = policy_with(|p| p.active_hours = Some(hours));
        h.created = DateTime::from_timestamp(created, 0).unwrap();
        let spec = spec(Some(&format!("{duration}m")), None);
        let mut azure = AzureModel::default();
        let mut st = AccessGrantStatus::default();
        let mut now = h.created;
        for step in steps {
            run_to(&h, &mut azure, &spec, &mut st, now);
            if let (Some(a), Some(e)) = (st.activated_at, st.expires_at) {
                let o = window.containing(a);
                prop_assert!(o.is_some(), "started at {a} outside {window}");
                if let Some(o) = o {
                    prop_assert!(e <= o.close, "{e} after the close {}", o.close);
                    if matches!(st.phase, GrantPhase::Active | GrantPhase::Activating) {
                        prop_assert!(o.open <= now && now < o.close, "live at {now} outside {window}");
                    }
                }
                prop_assert!(e - a <= TimeDelta::minutes(duration));
            }
            now += mins(step);
        }
    }
}
