use chrono::TimeZone;
use lapse_api::lease::{Decision, LeaseEvent, Reason};
use lapse_api::v1alpha1::{
    AccessGrant, AccessGrantSpec, AccessGrantStatus, ApprovalDecision, ApprovalRecord,
    FederatedCredentialStatus, GrantPhase, IdentityRef, ObjectState, RoleAssignmentStatus,
    RoleRequest,
};
use lapse_api::validate::ApprovalRule;
use serde_json::Value;

use super::*;

fn status(phase: GrantPhase) -> AccessGrantStatus {
    AccessGrantStatus {
        phase,
        message: Some(format!("now {}", phase.as_str())),
        ..Default::default()
    }
}

fn decision(phase: GrantPhase, events: &[(Reason, &str)]) -> Decision {
    Decision {
        status: status(phase),
        actions: Vec::new(),
        events: events
            .iter()
            .map(|(reason, message)| LeaseEvent {
                warning: false,
                reason: *reason,
                message: (*message).to_owned(),
            })
            .collect(),
        requeue_at: None,
        retry_after: None,
        finalized: false,
        tampered: None,
    }
}

fn kinds(before: GrantPhase, d: &Decision) -> Vec<Option<Kind>> {
    transitions(&status(before), d)
        .into_iter()
        .map(|t| t.kind)
        .collect()
}

#[test]
fn each_phase_people_are_told_about_is_a_notification_and_every_change_an_audit_line() {
    use GrantPhase::*;
    let cases = [
        (Pending, PendingApproval, Some(Kind::PendingApproval)),
        (Activating, Active, Some(Kind::Activated)),
        (PendingApproval, Denied, Some(Kind::Denied)),
        (Pending, Denied, Some(Kind::Denied)),
        (Revoking, Expired, Some(Kind::Expired)),
        (Revoking, Revoked, Some(Kind::Revoked)),
        // Audit only.
        (Pending, Activating, None),
        (Active, Revoking, None),
        (Activating, Failed, None),
        (Pending, Scheduled, None),
    ];
    for (from, to, kind) in cases {
        let t = transitions(&status(from), &decision(to, &[]));
        assert_eq!(t.len(), 1, "{from:?} -> {to:?}");
        assert_eq!(t[0].kind, kind, "{from:?} -> {to:?}");
        assert_eq!((t[0].from, t[0].to), (from, to));
    }
    assert!(
        transitions(&status(Active), &decision(Active, &[])).is_empty(),
        "no change, nothing said"
    );
}

#[test]
fn approvals_break_glass_and_overdue_revocations_come_from_the_decision_s_events() {
    use GrantPhase::*;
    let d = decision(
        Activating,
        &[
            (Reason::Approved, "approved by bob"),
            (Reason::Scheduled, "x"),
        ],
    );
    assert_eq!(kinds(PendingApproval, &d), [None, Some(Kind::Approved)]);
    let approved = &transitions(&status(PendingApproval), &d)[1];
    assert_eq!(
        (approved.reason.as_str(), approved.message.as_str()),
        ("Approved", "approved by bob")
    );
    let d = decision(
        Active,
        &[
            (Reason::Activated, "access is active until 12:00"),
            (Reason::BreakGlassActivated, "break-glass by alice"),
        ],
    );
    let t = transitions(&status(Activating), &d);
    assert_eq!(
        t.iter().map(|t| t.kind).collect::<Vec<_>>(),
        [Some(Kind::Activated), Some(Kind::BreakGlassActivated)]
    );
    assert_eq!(t[0].message, "access is active until 12:00");
    let d = decision(
        Revoking,
        &[(Reason::RevocationOverdue, "2 deletes pending")],
    );
    assert_eq!(kinds(Revoking, &d), [Some(Kind::RevocationOverdue)]);
}

#[test]
fn a_repeat_is_news_only_for_a_new_generation_or_expiry() {
    let mut st = status(GrantPhase::Active);
    st.expires_at = Some(chrono::Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap());
    assert_eq!(repeat_key(Kind::Approved, Some(3), &st), "3");
    assert_eq!(repeat_key(Kind::ExpiringSoon, Some(3), &st), "1767268800");
    assert_eq!(repeat_key(Kind::Revoked, Some(3), &st), "");
    let n = Notifier::disabled(Family::default());
    assert!(n.first("uid", "Approved", "1"));
    assert!(!n.first("uid", "Approved", "1"), "the same transition once");
    assert!(n.first("uid", "Approved", "2"), "a new generation is news");
    assert!(n.first("other", "Approved", "1"), "another grant is news");
}

fn grant() -> AccessGrant {
    let mut g = AccessGrant::new(
        "nightly-backup",
        AccessGrantSpec {
            identity: IdentityRef {
                managed_identity: Some(
                    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/backup-runner".into(),
                ),
                ..Default::default()
            },
            roles: vec![RoleRequest {
                role: "Storage Blob Data Reader".into(),
                scope: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/data<&>".into(),
                condition: None,
            }],
            requester: Some("alice@example.com".into()),
            justification: Some("OPS-1234 restore test".into()),
            duration: Some("1h".into()),
            ..Default::default()
        },
    );
    g.metadata.namespace = Some("payments".into());
    g.metadata.uid = Some("0b5c-uid".into());
    g.metadata.generation = Some(1);
    g
}

fn notification(kind: Kind) -> Notification {
    let at = chrono::Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).unwrap();
    let mut st = status(GrantPhase::Active);
    st.identity_name = Some("mi/backup-runner".into());
    st.principal_id = Some("11111111-2222-3333-4444-555555555555".into());
    st.policy = Some("payments".into());
    st.activated_at = Some(at);
    st.expires_at = Some(at + chrono::TimeDelta::hours(1));
    st.role_assignments = vec![RoleAssignmentStatus {
        schedule: None,
        role: "Storage Blob Data Reader".into(),
        role_definition_id: None,
        scope: "/subscriptions/s/resourceGroups/rg".into(),
        id: Some("/subscriptions/s/providers/Microsoft.Authorization/roleAssignments/ra1".into()),
        state: ObjectState::Present,
    }];
    st.federated_credential = Some(Box::new(FederatedCredentialStatus {
        id: Some("/subscriptions/s/fic1".into()),
        name: "lapse-e2e-0123".into(),
        issuer: "https://issuer".into(),
        subject: "system:serviceaccount:payments:backup-runner".into(),
        state: ObjectState::Present,
    }));
    st.approvals = vec![ApprovalRecord {
        name: "nightly-backup-bob".into(),
        approver: "bob@example.com".into(),
        decision: ApprovalDecision::Approve,
        generation: 1,
        at: Some(at),
    }];
    let rule = ApprovalRule {
        required: 1,
        users: vec!["bob@example.com".into()],
        groups: vec!["platform-oncall".into()],
        timeout: "24h".parse().unwrap(),
        auto_approve: Vec::new(),
        escalation: Vec::new(),
    };
    Notification {
        id: uuid::Uuid::nil(),
        kind,
        reason: kind.as_str().into(),
        message: format!("{} <now>", kind.as_str()),
        warning: kind.warning(),
        time: at,
        grant: GrantRecord::of("prod-west", &grant(), &st, Some(&rule)),
    }
}

fn text_of(v: &Value) -> String {
    v.to_string()
}

#[test]
fn slack_bodies_are_block_kit_with_a_fallback_text_and_escaped_mrkdwn() {
    for kind in Kind::ALL {
        let (ct, body) = Format::Slack.render(&notification(kind));
        assert_eq!(ct, "application/json");
        let text = body["text"].as_str().unwrap_or_default();
        assert!(text.contains("payments/nightly-backup"), "{text}");
        assert!(
            !text.contains("<now>"),
            "mrkdwn control characters escaped: {text}"
        );
        let blocks = body["blocks"].as_array().cloned().unwrap_or_default();
        assert_eq!(blocks[0]["type"], "header");
        assert!(blocks[0]["text"]["text"].as_str().unwrap_or_default().len() <= 150);
        let fields = blocks[2]["fields"].as_array().cloned().unwrap_or_default();
        assert!(!fields.is_empty() && fields.len() <= 10, "{fields:?}");
        let all = text_of(&body);
        for fact in [
            "alice@example.com",
            "mi/backup-runner",
            "Storage Blob Data Reader",
        ] {
            assert!(all.contains(fact), "{kind:?} lacks {fact}: {all}");
        }
        assert!(all.contains(kind.as_str()));
    }
}

#[test]
fn teams_bodies_are_adaptive_cards_in_the_message_envelope() {
    for kind in Kind::ALL {
        let (_, body) = Format::Teams.render(&notification(kind));
        assert_eq!(body["type"], "message");
        let card = &body["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        let facts = card["content"]["body"][2]["facts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let titles: Vec<&str> = facts.iter().filter_map(|f| f["title"].as_str()).collect();
        for t in [
            "Requester",
            "Identity",
            "Roles",
            "Policy",
            "Expires",
            "Approvers",
        ] {
            assert!(titles.contains(&t), "{kind:?}: {titles:?}");
        }
        let color = card["content"]["body"][0]["color"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(color == "Attention", kind.warning(), "{kind:?}");
    }
}

#[test]
fn cloudevents_carry_the_required_attributes_and_the_notification_as_data() {
    for kind in Kind::ALL {
        let n = notification(kind);
        let (ct, body) = Format::CloudEvents.render(&n);
        assert!(ct.starts_with("application/cloudevents+json"));
        assert_eq!(body["specversion"], "1.0");
        assert_eq!(body["type"], kind.event_type());
        assert_eq!(body["source"], "lapse.dev/clusters/prod-west");
        assert_eq!(
            body["subject"],
            "namespaces/payments/accessgrants/nightly-backup"
        );
        assert_eq!(body["id"], n.id.to_string());
        assert_eq!(body["datacontenttype"], "application/json");
        assert_eq!(body["data"]["kind"], kind.as_str());
    }
    assert_eq!(
        Kind::BreakGlassActivated.event_type(),
        "dev.lapse.accessgrant.breakglassactivated"
    );
}

#[test]
fn the_json_body_is_the_whole_record() {
    let (_, body) = Format::Json.render(&notification(Kind::Activated));
    let g = &body["grant"];
    assert_eq!(body["kind"], "Activated");
    assert_eq!(g["requester"], "alice@example.com");
    assert_eq!(g["principalId"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(g["policy"], "payments");
    assert_eq!(g["approvers"][0], "bob@example.com");
    assert_eq!(g["approvers"][1], "group:platform-oncall");
    assert_eq!(g["approvals"][0]["approver"], "bob@example.com");
    assert_eq!(
        g["roles"][0]["id"],
        "/subscriptions/s/providers/Microsoft.Authorization/roleAssignments/ra1"
    );
    assert_eq!(g["federatedCredential"]["id"], "/subscriptions/s/fic1");
    assert_eq!(g["expiresAt"], "2026-12-05T11:00:00Z");
}

#[test]
fn formats_are_named_as_the_settings_spell_them() {
    for f in [
        Format::Slack,
        Format::Teams,
        Format::Json,
        Format::CloudEvents,
    ] {
        assert_eq!(f.as_str().parse::<Format>(), Ok(f));
    }
    let err = "xml".parse::<Format>().err().unwrap_or_default();
    assert!(err.contains("slack, teams, json or cloudevents"), "{err}");
}

#[test]
fn with_the_bridge_on_slack_and_teams_offer_the_decisions_the_bridge_reads() {
    use lapse_api::chat::{ACTION_APPROVE, ACTION_DENY, ChatAction, parse_command};
    let n = notification(Kind::PendingApproval);
    let (_, body) = Format::Slack.render_with(&n, true);
    let blocks = body["blocks"].as_array().cloned().unwrap_or_default();
    let buttons = blocks
        .last()
        .filter(|b| b["type"] == "actions")
        .and_then(|b| b["elements"].as_array().cloned())
        .unwrap_or_default();
    let ids: Vec<&str> = buttons
        .iter()
        .filter_map(|b| b["action_id"].as_str())
        .collect();
    assert_eq!(ids, [ACTION_APPROVE, ACTION_DENY]);
    for b in &buttons {
        let a = ChatAction::parse(
            b["action_id"].as_str().unwrap_or_default(),
            b["value"].as_str().unwrap_or_default(),
        )
        .unwrap();
        assert_eq!(
            (a.namespace.as_str(), a.name.as_str(), a.uid.as_str()),
            (
                n.grant.namespace.as_str(),
                n.grant.name.as_str(),
                n.grant.uid.as_str()
            )
        );
        assert_eq!(Some(a.generation), n.grant.generation);
    }
    // Break-glass offers Deny (review after the fact); other kinds and the default, nothing.
    let (_, glass) = Format::Slack.render_with(&notification(Kind::BreakGlassActivated), true);
    assert!(glass.to_string().contains(ACTION_DENY) && !glass.to_string().contains(ACTION_APPROVE));
    for kind in Kind::ALL {
        let (_, off) = Format::Slack.render(&notification(kind));
        assert!(!off.to_string().contains("lapse.deny"), "{kind:?}");
    }
    let (_, active) = Format::Slack.render_with(&notification(Kind::Activated), true);
    assert!(!active.to_string().contains("\"actions\""));

    // Teams: the card says what to send the outgoing webhook, and that reads back.
    let (_, card) = Format::Teams.render_with(&n, true);
    let hint = card
        .pointer("/attachments/0/content/body")
        .and_then(Value::as_array)
        .and_then(|b| b.last())
        .and_then(|b| b["text"].as_str())
        .unwrap_or_default()
        .to_owned();
    let command = hint.split('`').nth(1).unwrap_or_default().to_owned();
    let (a, _) = parse_command(&format!("<at>lapse</at> {command}")).unwrap();
    assert_eq!(a.name, n.grant.name, "{hint}");
}
