//! What Slack and Teams post, read into what the bridge needs; and what it answers. Pure.

use lapse_api::chat::{ActionError, ChatAction, parse_command};
use serde_json::{Value, json};

/// One Slack `block_actions` click.
#[derive(Clone, Debug, PartialEq)]
pub struct SlackClick {
    pub user_id: String,
    /// Slack's user name, for the record only (never for mapping).
    pub user_name: Option<String>,
    pub action: Result<ChatAction, ActionError>,
    pub response_url: Option<String>,
    /// The message the button was on (its `text` and `blocks`), to update it with the outcome.
    pub message: Option<Value>,
}

/// Reads Slack's interactivity request: `application/x-www-form-urlencoded`, `payload=<json>`.
pub fn slack_click(body: &[u8]) -> Result<SlackClick, String> {
    let payload = form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or("no payload field in the form body")?;
    let p: Value =
        serde_json::from_str(&payload).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let kind = p["type"].as_str().unwrap_or_default();
    if kind != "block_actions" {
        return Err(format!(
            "payload type {kind:?} is not handled: only block_actions (the Approve and Deny buttons)"
        ));
    }
    let user_id = p["user"]["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("the payload names no user.id")?
        .to_owned();
    let first = &p["actions"][0];
    let action = ChatAction::parse(
        first["action_id"].as_str().unwrap_or_default(),
        first["value"].as_str().unwrap_or_default(),
    );
    Ok(SlackClick {
        user_id,
        user_name: p["user"]["username"]
            .as_str()
            .or_else(|| p["user"]["name"].as_str())
            .map(str::to_owned),
        action,
        response_url: p["response_url"].as_str().map(str::to_owned),
        message: p.get("message").filter(|m| m.is_object()).cloned(),
    })
}

/// The message posted to `response_url`: for a recorded decision, the original message with the
/// outcome appended as a context block (everyone in the channel sees who decided; the buttons
/// stay for the next approver of a quorum); otherwise a reply only the clicker sees.
pub fn slack_update(original: Option<&Value>, outcome: &str, public: bool) -> Value {
    if public
        && let Some(msg) = original
        && let Some(blocks) = msg["blocks"].as_array()
        // Block Kit allows 50 blocks a message.
        && blocks.len() < 50
    {
        let mut blocks = blocks.clone();
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": slack_escape(outcome)}],
        }));
        return json!({
            "replace_original": true,
            "text": msg["text"].as_str().unwrap_or(outcome),
            "blocks": blocks,
        });
    }
    json!({
        "response_type": "ephemeral",
        "replace_original": false,
        "text": slack_escape(outcome),
    })
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One Teams outgoing-webhook message.
#[derive(Clone, Debug, PartialEq)]
pub struct TeamsMessage {
    /// The activity's `timestamp`, Unix seconds.
    pub timestamp: i64,
    /// `from.aadObjectId` then `from.id`: the IDs the user map is searched by, in order.
    pub ids: Vec<String>,
    pub name: Option<String>,
    pub command: Result<(ChatAction, Option<String>), ActionError>,
}

pub fn teams_message(body: &[u8]) -> Result<TeamsMessage, String> {
    let a: Value =
        serde_json::from_slice(body).map_err(|e| format!("the activity is not JSON: {e}"))?;
    let ts = a["timestamp"]
        .as_str()
        .ok_or("the activity has no timestamp")?;
    let timestamp = chrono::DateTime::parse_from_rfc3339(ts)
        .map_err(|e| format!("the activity timestamp {ts:?} is not RFC 3339: {e}"))?
        .timestamp();
    let ids: Vec<String> = ["aadObjectId", "id"]
        .iter()
        .filter_map(|k| a["from"][k].as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return Err("the activity names no from.aadObjectId or from.id".into());
    }
    Ok(TeamsMessage {
        timestamp,
        ids,
        name: a["from"]["name"].as_str().map(str::to_owned),
        command: parse_command(a["text"].as_str().unwrap_or_default()),
    })
}

/// The reply Teams shows in the channel.
pub fn teams_reply(text: &str) -> Value {
    json!({"type": "message", "text": text})
}

#[cfg(test)]
mod tests {
    use lapse_api::v1alpha1::ApprovalDecision;

    use super::*;

    fn form(payload: &Value) -> Vec<u8> {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish()
            .into_bytes()
    }

    #[test]
    fn a_block_actions_click_names_the_user_the_decision_and_where_to_answer() {
        let payload = json!({
            "type": "block_actions",
            "user": {"id": "U024BE7LH", "username": "bob", "team_id": "T0"},
            "response_url": "https://hooks.slack.com/actions/T0/1/abc",
            "message": {"text": "Approval needed", "blocks": [{"type": "header"}]},
            "actions": [{"action_id": "lapse.approve", "block_id": "lapse.decide",
                         "value": "payments/nightly/0b1c2d3e-0000-4000-8000-000000000001/1",
                         "type": "button", "action_ts": "1"}],
        });
        let c = slack_click(&form(&payload)).unwrap();
        assert_eq!(c.user_id, "U024BE7LH");
        assert_eq!(c.user_name.as_deref(), Some("bob"));
        assert_eq!(
            c.response_url.as_deref(),
            Some("https://hooks.slack.com/actions/T0/1/abc")
        );
        let a = c.action.clone().unwrap();
        assert_eq!(
            (a.decision, a.name.as_str(), a.generation),
            (ApprovalDecision::Approve, "nightly", 1)
        );

        // The outcome goes under the original message, buttons kept; a refusal is private.
        let public = slack_update(c.message.as_ref(), "Approved by bob <b>", true);
        assert_eq!(public["replace_original"], true);
        assert_eq!(public["blocks"].as_array().map(Vec::len), Some(2));
        assert!(public.to_string().contains("bob &lt;b&gt;"));
        let private = slack_update(c.message.as_ref(), "refused", false);
        assert_eq!(private["response_type"], "ephemeral");
        assert_eq!(private["replace_original"], false);
    }

    #[test]
    fn other_payloads_are_refused_naming_what_is_wrong() {
        for (body, says) in [
            (b"token=abc".to_vec(), "no payload"),
            (b"payload=%7Bnot".to_vec(), "not JSON"),
            (
                form(&json!({"type": "view_submission", "user": {"id": "U1"}})),
                "only block_actions",
            ),
            (form(&json!({"type": "block_actions"})), "user.id"),
        ] {
            let e = slack_click(&body).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        let c = slack_click(&form(
            &json!({"type": "block_actions", "user": {"id": "U1"},
            "actions": [{"action_id": "other", "value": "x"}]}),
        ))
        .unwrap();
        assert!(c.action.is_err());
    }

    #[test]
    fn a_teams_message_names_the_user_by_entra_object_id_first() {
        let body = br#"{"type":"message","id":"1","timestamp":"2026-12-05T10:00:00.000Z",
            "text":"<at>lapse</at> approve payments/nightly/0b1c2d3e-0000-4000-8000-000000000001/1 ok by me",
            "from":{"id":"29:1abc","name":"Bob","aadObjectId":"6f5b"}}"#;
        let m = teams_message(body).unwrap();
        assert_eq!(m.timestamp, 1_796_464_800);
        assert_eq!(m.ids, ["6f5b", "29:1abc"]);
        let (a, comment) = m.command.unwrap();
        assert_eq!(a.decision, ApprovalDecision::Approve);
        assert_eq!(comment.as_deref(), Some("ok by me"));
        assert!(teams_message(br#"{"text":"x","from":{"id":"1"}}"#).is_err());
        assert!(teams_message(br#"{"timestamp":"2026-12-05T10:00:00Z","from":{}}"#).is_err());
        assert_eq!(teams_reply("hi")["type"], "message");
    }
}
