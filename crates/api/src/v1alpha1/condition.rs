use std::borrow::Cow;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    // A `Cow`: the operator sets its own types and reasons from constants, borrowed.
    #[serde(rename = "type")]
    pub type_: Cow<'static, str>,
    pub status: ConditionStatus,
    /// CamelCase machine-readable reason for the last transition.
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
