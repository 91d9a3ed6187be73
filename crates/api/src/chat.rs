//! What an Approve or Deny action in chat names, as the notifications write it and the approval
//! bridge (`lapse-operator approval-bridge`) reads it: the decision and the grant (namespace,
//! name, uid, generation). Pure, so both sides agree by construction.
//!
//! - Slack buttons carry the decision in `action_id` ([`ACTION_APPROVE`], [`ACTION_DENY`]) and the
//!   grant in `value` ([`ChatAction::value`]: `namespace/name/uid/generation`).
//! - Teams outgoing webhooks receive what the approver types after mentioning the webhook:
//!   `approve namespace/name/uid/generation [comment]` ([`ChatAction::command`],
//!   [`parse_command`]).
//!
//! Nothing here is trusted for *who* decides: that is the API server's authenticated user.

use crate::v1alpha1::ApprovalDecision;

/// `action_id` of the Approve button.
pub const ACTION_APPROVE: &str = "lapse.approve";
/// `action_id` of the Deny button.
pub const ACTION_DENY: &str = "lapse.deny";

/// One decision on one grant, as a chat action names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatAction {
    pub decision: ApprovalDecision,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub generation: i64,
}

/// Why an action could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("unknown action {0:?}: expected {ACTION_APPROVE} or {ACTION_DENY}")]
    UnknownAction(String),
    #[error(
        "{0:?} does not name a grant: expected namespace/name/uid/generation (as the notification shows it)"
    )]
    BadGrant(String),
    #[error(
        "expected `approve <namespace/name/uid/generation> [comment]` or `deny <namespace/name/uid/generation> [comment]`"
    )]
    BadCommand,
}

impl ChatAction {
    /// The button `value`: `namespace/name/uid/generation` (none of them can hold a `/`).
    pub fn value(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace, self.name, self.uid, self.generation
        )
    }

    /// The button `action_id`.
    pub fn action_id(&self) -> &'static str {
        match self.decision {
            ApprovalDecision::Approve => ACTION_APPROVE,
            ApprovalDecision::Deny => ACTION_DENY,
        }
    }

    /// What an approver types after mentioning the Teams outgoing webhook.
    pub fn command(&self) -> String {
        format!(
            "{} {}",
            self.decision.as_str().to_ascii_lowercase(),
            self.value()
        )
    }

    /// Reads a Slack button: its `action_id` and `value`.
    pub fn parse(action_id: &str, value: &str) -> Result<Self, ActionError> {
        let decision = match action_id {
            ACTION_APPROVE => ApprovalDecision::Approve,
            ACTION_DENY => ApprovalDecision::Deny,
            other => return Err(ActionError::UnknownAction(other.to_owned())),
        };
        Self::with_grant(decision, value)
    }

    fn with_grant(decision: ApprovalDecision, grant: &str) -> Result<Self, ActionError> {
        let bad = || ActionError::BadGrant(grant.to_owned());
        let parts: Vec<&str> = grant.split('/').collect();
        let [namespace, name, uid, generation] = parts.as_slice() else {
            return Err(bad());
        };
        let generation: i64 = generation.parse().map_err(|_| bad())?;
        let label = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        };
        let uid_ok = !uid.is_empty()
            && uid.len() <= 64
            && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !label(namespace, 63) || !label(name, 253) || !uid_ok || generation < 1 {
            return Err(bad());
        }
        Ok(Self {
            decision,
            namespace: (*namespace).to_owned(),
            name: (*name).to_owned(),
            uid: (*uid).to_ascii_lowercase(),
            generation,
        })
    }

    /// The AccessApproval's name for this decision by `username`: the same click twice is the
    /// same object (the second is refused as already there), and distinct people, decisions
    /// and generations never collide. At most 253 characters.
    pub fn approval_name(&self, username: &str) -> String {
        let who = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, username.as_bytes()).simple();
        let suffix = format!(
            "-{}-g{}-{}",
            self.decision.as_str().to_ascii_lowercase(),
            self.generation,
            &who.to_string()[..12]
        );
        let keep = 253usize.saturating_sub(suffix.len());
        let base: String = self.name.chars().take(keep).collect();
        format!("{}{suffix}", base.trim_end_matches(['-', '.']))
    }
}

/// Reads what an approver typed in Teams: the mention of the webhook (`<at>…</at>`) and HTML
/// tags are dropped, then `approve|deny namespace/name/uid/generation [comment]`. Returns the
/// action and the comment, if any.
pub fn parse_command(text: &str) -> Result<(ChatAction, Option<String>), ActionError> {
    let plain = strip_tags(text);
    let mut words = plain.split_whitespace();
    let decision = match words.next().map(str::to_ascii_lowercase).as_deref() {
        Some("approve") => ApprovalDecision::Approve,
        Some("deny") => ApprovalDecision::Deny,
        _ => return Err(ActionError::BadCommand),
    };
    let grant = words.next().ok_or(ActionError::BadCommand)?;
    let action = ChatAction::with_grant(decision, grant)?;
    let comment = words.collect::<Vec<_>>().join(" ");
    Ok((action, (!comment.is_empty()).then_some(comment)))
}

/// The text without `<at>mention</at>` (with its content) and without other tags; entities
/// Teams writes (`&nbsp;`, `&amp;`) as characters.
fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let lower = after.to_ascii_lowercase();
        if lower.starts_with("<at>") || lower.starts_with("<at ") {
            match lower.find("</at>") {
                Some(end) => rest = &after[end + 5..],
                None => rest = "",
            }
        } else {
            match after.find('>') {
                Some(end) => {
                    out.push(' ');
                    rest = &after[end + 1..];
                }
                None => rest = "",
            }
        }
    }
    out.push_str(rest);
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(decision: ApprovalDecision) -> ChatAction {
        ChatAction {
            decision,
            namespace: "payments".into(),
            name: "nightly".into(),
            uid: "0b1c2d3e-0000-4000-8000-000000000001".into(),
            generation: 2,
        }
    }

    #[test]
    fn a_button_reads_back_as_written() {
        for d in [ApprovalDecision::Approve, ApprovalDecision::Deny] {
            let a = action(d);
            assert_eq!(ChatAction::parse(a.action_id(), &a.value()), Ok(a.clone()));
            assert_eq!(parse_command(&a.command()), Ok((a, None)));
        }
        assert_eq!(
            action(ApprovalDecision::Approve).value(),
            "payments/nightly/0b1c2d3e-0000-4000-8000-000000000001/2"
        );
    }

    #[test]
    fn malformed_actions_are_refused_naming_what_is_wrong() {
        let a = action(ApprovalDecision::Approve);
        assert!(matches!(
            ChatAction::parse("lapse.delete", &a.value()),
            Err(ActionError::UnknownAction(_))
        ));
        for bad in [
            "payments/nightly/uid",
            "payments/nightly/0b1c/0",
            "payments/nightly/0b1c/x",
            "Payments/nightly/0b1c/1",
            "payments/night ly/0b1c/1",
            "payments/nightly/z_z/1",
            "a/b/c/d/1",
        ] {
            assert!(
                matches!(
                    ChatAction::parse(ACTION_APPROVE, bad),
                    Err(ActionError::BadGrant(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_teams_command_drops_the_mention_and_keeps_the_comment() {
        let a = action(ApprovalDecision::Deny);
        let text = format!(
            "<at>lapse</at>&nbsp;deny {} not during the freeze &amp; not today\n",
            a.value()
        );
        assert_eq!(
            parse_command(&text),
            Ok((a, Some("not during the freeze & not today".into())))
        );
        assert_eq!(
            parse_command("<at>lapse</at> hello"),
            Err(ActionError::BadCommand)
        );
        assert_eq!(
            parse_command("<at>lapse</at> approve"),
            Err(ActionError::BadCommand)
        );
    }

    #[test]
    fn approval_names_are_stable_distinct_and_valid() {
        let a = action(ApprovalDecision::Approve);
        let bob = a.approval_name("bob@example.com");
        assert_eq!(bob, a.approval_name("bob@example.com"));
        assert!(bob.starts_with("nightly-approve-g2-"), "{bob}");
        assert_ne!(bob, a.approval_name("carol@example.com"));
        assert_ne!(
            bob,
            action(ApprovalDecision::Deny).approval_name("bob@example.com")
        );
        let mut long = a.clone();
        long.name = "x".repeat(253);
        let name = long.approval_name("bob@example.com");
        assert!(name.len() <= 253, "{}", name.len());
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }
}
