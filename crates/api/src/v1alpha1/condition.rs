use std::borrow::Cow;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// `True`, `False` or `Unknown`, as in `metav1.Condition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// The shape of `metav1.Condition`, owned here so the pure core needs no Kubernetes types.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// CamelCase condition type, e.g. `Ready`, `PolicyAllowed`, `StandingAccess`.
    #[serde(rename = "type", deserialize_with = "known_name")]
    pub type_: Cow<'static, str>,
    pub status: ConditionStatus,
    /// CamelCase machine-readable reason for the last transition.
    #[serde(deserialize_with = "known_name")]
    pub reason: Cow<'static, str>,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: DateTime<Utc>,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A condition type or reason as the operator's own constant when it is one: every grant in
/// the operator's cache carries four conditions, and their types and reasons come from a short
/// fixed list, so a read grant shares them instead of holding its own copies
/// (docs/performance.md). Anything else is kept as read.
pub fn condition_name(name: &str) -> Cow<'static, str> {
    crate::lease::CONDITION_TYPES
        .iter()
        .copied()
        .chain(crate::lease::Reason::ALL.iter().map(|r| r.as_str()))
        .find(|known| *known == name)
        .map_or_else(|| Cow::Owned(name.to_owned()), Cow::Borrowed)
}

fn known_name<'de, D: Deserializer<'de>>(d: D) -> Result<Cow<'static, str>, D::Error> {
    let name = <Cow<'de, str>>::deserialize(d)?;
    Ok(condition_name(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known types and reasons are shared, anything else is kept as written; either way the
    /// condition reads and writes back unchanged.
    #[test]
    fn known_names_are_shared_and_every_name_round_trips() {
        let json = r#"{"type":"Ready","status":"True","reason":"Active","message":"m",
            "lastTransitionTime":"2026-12-06T01:45:18Z"}"#;
        let c: Condition = serde_json::from_str(json).unwrap();
        assert!(matches!(c.type_, Cow::Borrowed("Ready")));
        assert!(matches!(c.reason, Cow::Borrowed("Active")));
        let odd = json.replace("\"Active\"", "\"SomethingElse\"");
        let c2: Condition = serde_json::from_str(&odd).unwrap();
        assert!(matches!(&c2.reason, Cow::Owned(r) if r == "SomethingElse"));
        for c in [c, c2] {
            let back: Condition =
                serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
            assert_eq!(back, c);
        }
    }
}
