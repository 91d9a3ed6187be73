//! The four bodies a notification can be posted as (`LAPSE_NOTIFY_FORMAT`):
//!
//! - `slack`: a Slack incoming-webhook message, `text` (the notification and fallback) plus Block
//!   Kit `blocks` (<https://api.slack.com/messaging/webhooks>,
//!   <https://api.slack.com/reference/block-kit/blocks>).
//! - `teams`: an Adaptive Card in the `message` envelope Teams' incoming webhooks and Workflows'
//!   "when a Teams webhook request is received" take
//!   (<https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using#send-adaptive-cards-using-an-incoming-webhook>).
//!   Adaptive Cards rather than the legacy MessageCard, which Microsoft retires with the Office 365
//!   connectors.
//! - `json`: lapse's own JSON: the [`Notification`] as it is.
//! - `cloudevents`: a CloudEvents 1.0 event in structured content mode, JSON event format
//!   (<https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/formats/json-format.md>), the
//!   notification as its `data`.

use serde_json::{Value, json};

use lapse_api::chat::ChatAction;
use lapse_api::v1alpha1::ApprovalDecision;

use super::{Kind, Notification};

/// How a notification is posted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Slack,
    Teams,
    Json,
    CloudEvents,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Teams => "teams",
            Self::Json => "json",
            Self::CloudEvents => "cloudevents",
        }
    }

    /// The `Content-Type` and the body of one notification, without chat actions.
    pub fn render(self, n: &Notification) -> (&'static str, Value) {
        self.render_with(n, false)
    }

    /// The `Content-Type` and the body of one notification; with `actions` (the approval bridge
    /// is on, `LAPSE_NOTIFY_ACTIONS`), Slack messages carry Approve and Deny buttons and Teams
    /// cards the command that decides through the bridge's outgoing webhook.
    pub fn render_with(self, n: &Notification, actions: bool) -> (&'static str, Value) {
        let actions = if actions { chat_actions(n) } else { Vec::new() };
        match self {
            Self::Slack => ("application/json", slack(n, &actions)),
            Self::Teams => ("application/json", teams(n, &actions)),
            Self::Json => ("application/json", generic(n)),
            Self::CloudEvents => ("application/cloudevents+json; charset=utf-8", cloudevent(n)),
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "slack" => Ok(Self::Slack),
            "teams" => Ok(Self::Teams),
            "json" => Ok(Self::Json),
            "cloudevents" => Ok(Self::CloudEvents),
            other => Err(format!(
                "{other:?} is not a notification format: slack, teams, json or cloudevents"
            )),
        }
    }
}

/// The one-line summary every format leads with.
fn headline(n: &Notification) -> String {
    format!(
        "{} {}: AccessGrant {} ({})",
        emoji(n.kind),
        title(n.kind),
        n.grant.grant(),
        n.grant.cluster
    )
}

fn title(kind: Kind) -> &'static str {
    match kind {
        Kind::PendingApproval => "Approval needed",
        Kind::ApprovalEscalated => "Approval escalated",
        Kind::Approved => "Approved",
        Kind::Denied => "Denied",
        Kind::Activated => "Access active",
        Kind::ExpiringSoon => "Access expiring soon",
        Kind::Expired => "Access expired",
        Kind::Revoked => "Access revoked",
        Kind::RevocationOverdue => "Revocation overdue",
        Kind::BreakGlassActivated => "Break-glass access",
        Kind::UsageFinding => "Usage finding",
    }
}

fn emoji(kind: Kind) -> &'static str {
    match kind {
        Kind::PendingApproval => "⏳",
        Kind::ApprovalEscalated => "📣",
        Kind::Approved => "👍",
        Kind::Denied => "⛔",
        Kind::Activated => "✅",
        Kind::ExpiringSoon => "⌛",
        Kind::Expired => "🔒",
        Kind::Revoked => "🔒",
        Kind::RevocationOverdue => "🚨",
        Kind::BreakGlassActivated => "🚨",
        Kind::UsageFinding => "🔎",
    }
}

/// The facts every chat format shows, in order, leaving out what is not known yet.
fn facts(n: &Notification) -> Vec<(&'static str, String)> {
    let g = &n.grant;
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    let mut out = vec![
        ("Requester", g.requester.clone()),
        ("Identity", Some(g.identity_text())),
        ("Roles", Some(g.roles_text())),
        ("Policy", g.policy.clone()),
        ("Expires", time(g.expires_at)),
        ("Ended", time(g.ended_at)),
        (
            "Ended early",
            g.ended_early_seconds
                .map(|s| format!("{s}s before its expiry, to stay within ARM's delete budget")),
        ),
        ("Justification", g.justification.clone()),
    ];
    let approvals = g.approvals_text();
    out.push((
        "Approvers",
        if approvals.is_empty() {
            (!g.approvers.is_empty()).then(|| g.approvers.join(", "))
        } else {
            Some(approvals)
        },
    ));
    out.into_iter()
        .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k, v)))
        .collect()
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, marked when cut (Block Kit refuses longer texts).
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The decisions a notification offers: Approve and Deny while a grant waits for approval (and
/// when its escalation opens to more approvers), Deny
/// (review after the fact) on break-glass. None without the grant's uid and generation.
fn chat_actions(n: &Notification) -> Vec<ChatAction> {
    let decisions: &[ApprovalDecision] = match n.kind {
        Kind::PendingApproval | Kind::ApprovalEscalated => {
            &[ApprovalDecision::Approve, ApprovalDecision::Deny]
        }
        Kind::BreakGlassActivated => &[ApprovalDecision::Deny],
        _ => &[],
    };
    let (Some(generation), false) = (n.grant.generation, n.grant.uid.is_empty()) else {
        return Vec::new();
    };
    decisions
        .iter()
        .map(|&decision| ChatAction {
            decision,
            namespace: n.grant.namespace.clone(),
            name: n.grant.name.clone(),
            uid: n.grant.uid.clone(),
            generation,
        })
        .collect()
}

/// A Block Kit `actions` block of buttons the approval bridge reads (`action_id`, `value`).
fn slack_buttons(actions: &[ChatAction]) -> Option<Value> {
    let buttons: Vec<Value> = actions
        .iter()
        .map(|a| {
            let (label, style) = match a.decision {
                ApprovalDecision::Approve => ("Approve", "primary"),
                ApprovalDecision::Deny => ("Deny", "danger"),
            };
            json!({
                "type": "button",
                "action_id": a.action_id(),
                "text": {"type": "plain_text", "text": label},
                "style": style,
                "value": a.value(),
            })
        })
        .collect();
    (!buttons.is_empty())
        .then(|| json!({"type": "actions", "block_id": "lapse.decide", "elements": buttons}))
}

fn slack(n: &Notification, actions: &[ChatAction]) -> Value {
    let head = headline(n);
    let fields: Vec<Value> = facts(n)
        .into_iter()
        // A section holds at most 10 fields of at most 2,000 characters.
        .take(10)
        .map(|(k, v)| {
            json!({"type": "mrkdwn", "text": clip(&format!("*{k}*\n{}", slack_escape(&v)), 2000)})
        })
        .collect();
    let mut body = json!({
        "text": clip(&slack_escape(&format!("{head}: {}", n.message)), 3000),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": clip(&head, 150), "emoji": true}},
            {"type": "section", "text": {"type": "mrkdwn", "text": clip(&slack_escape(&n.message), 3000)}},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(&slack_escape(&format!(
                "{} · reason {} · {}",
                n.kind.as_str(),
                n.reason,
                n.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )), 3000)}]},
        ],
    });
    if let (Some(buttons), Some(blocks)) = (slack_buttons(actions), body["blocks"].as_array_mut()) {
        blocks.push(buttons);
    }
    body
}

fn teams(n: &Notification, actions: &[ChatAction]) -> Value {
    let facts: Vec<Value> = facts(n)
        .into_iter()
        .map(|(k, v)| json!({"title": k, "value": v}))
        .collect();
    let color = if n.warning { "Attention" } else { "Default" };
    // Outgoing webhooks receive what people type, not card actions: the card says what to type.
    let hint = (!actions.is_empty()).then(|| {
        let commands: Vec<String> = actions
            .iter()
            .map(|a| format!("`{}`", a.command()))
            .collect();
        json!({"type": "TextBlock", "wrap": true, "text": format!(
            "To decide, mention the lapse approval webhook with {} (and a comment if you like).",
            commands.join(" or ")
        )})
    });
    let mut body = json!({
        "type": "message",
        "summary": headline(n),
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": {"width": "Full"},
                "body": [
                    {"type": "TextBlock", "text": headline(n), "weight": "Bolder", "size": "Medium", "color": color, "wrap": true},
                    {"type": "TextBlock", "text": n.message, "wrap": true},
                    {"type": "FactSet", "facts": facts},
                    {"type": "TextBlock", "text": format!(
                        "{} · reason {} · {}",
                        n.kind.as_str(),
                        n.reason,
                        n.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ), "isSubtle": true, "size": "Small", "wrap": true},
                ],
            },
        }],
    });
    if let (Some(hint), Some(blocks)) = (
        hint,
        body.pointer_mut("/attachments/0/content/body")
            .and_then(Value::as_array_mut),
    ) {
        blocks.push(hint);
    }
    body
}

fn generic(n: &Notification) -> Value {
    serde_json::to_value(n).unwrap_or(Value::Null)
}

fn cloudevent(n: &Notification) -> Value {
    json!({
        "specversion": "1.0",
        "type": n.kind.event_type(),
        "source": format!("lapse.dev/clusters/{}", n.grant.cluster),
        "subject": format!("namespaces/{}/accessgrants/{}", n.grant.namespace, n.grant.name),
        "id": n.id.to_string(),
        "time": n.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "datacontenttype": "application/json",
        "data": generic(n),
    })
}
