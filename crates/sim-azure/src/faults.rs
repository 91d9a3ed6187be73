//! Fault injection: latency, error statuses, 429 bursts, dropped connections and one-shot
//! errors for requests matching a method and path pattern; and runtime-adjustable replication
//! and propagation delays.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::SimAzureError;
use crate::http::lock;

/// What happens to a matching request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "type"
)]
pub enum FaultAction {
    /// Answer late by this many milliseconds (then handle normally).
    Latency {
        /// Added delay in milliseconds.
        millis: u64,
    },
    /// Answer with this status and ARM error code instead of handling the request.
    Status {
        /// HTTP status, e.g. 500 or 503.
        status: u16,
        /// ARM error code, e.g. `InternalServerError`.
        code: String,
        /// Error message.
        message: String,
    },
    /// Answer 429 `TooManyRequests` with `Retry-After`.
    Throttle {
        /// Seconds for `Retry-After`.
        retry_after_secs: u64,
    },
    /// Close the connection without answering.
    Drop,
}

/// A fault for requests whose method (if given) and path match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    /// HTTP method to match (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// Regular expression matched against the path (case-insensitive).
    pub path_pattern: String,
    /// What to do.
    pub action: FaultAction,
    /// How many requests it applies to; forever when absent (1 makes a one-shot error).
    #[serde(default)]
    pub times: Option<u32>,
}

#[derive(Debug)]
struct State {
    rules: Vec<(FaultRule, Regex)>,
    latency: Duration,
    replication_window: Duration,
    propagation_delay: Duration,
    fic_propagation_delay: Duration,
    fic_delete_propagation_delay: Duration,
}

/// Handle to the simulator's fault injection; cheap to clone.
#[derive(Debug, Clone)]
pub struct Faults(Arc<Mutex<State>>);

impl Faults {
    pub(crate) fn new(
        replication_window: Duration,
        propagation_delay: Duration,
        fic_propagation_delay: Duration,
        fic_delete_propagation_delay: Duration,
    ) -> Self {
        Self(Arc::new(Mutex::new(State {
            rules: Vec::new(),
            latency: Duration::ZERO,
            replication_window,
            propagation_delay,
            fic_propagation_delay,
            fic_delete_propagation_delay,
        })))
    }

    /// Adds a rule; rules are applied in the order added.
    pub fn add(&self, rule: FaultRule) -> Result<(), SimAzureError> {
        let re = Regex::new(&format!("(?i){}", rule.path_pattern)).map_err(|e| {
            SimAzureError::FaultPattern {
                pattern: rule.path_pattern.clone(),
                reason: e.to_string(),
            }
        })?;
        lock(&self.0).rules.push((rule, re));
        Ok(())
    }

    /// Removes all rules and the global latency.
    pub fn clear(&self) {
        let mut s = lock(&self.0);
        s.rules.clear();
        s.latency = Duration::ZERO;
    }

    /// Adds `latency` to every request.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.0).latency = latency;
    }

    /// Sets how long new principals stay invisible to role assignment PUTs without `principalType`.
    pub fn set_replication_window(&self, window: Duration) {
        lock(&self.0).replication_window = window;
    }

    /// Sets how long role assignment changes take to affect RBAC decisions.
    pub fn set_propagation_delay(&self, delay: Duration) {
        lock(&self.0).propagation_delay = delay;
    }

    /// Sets how long a written FIC takes before token exchanges can use it.
    pub fn set_fic_propagation_delay(&self, delay: Duration) {
        lock(&self.0).fic_propagation_delay = delay;
    }

    /// Sets how long a deleted FIC can still be exchanged for a token.
    pub fn set_fic_delete_propagation_delay(&self, delay: Duration) {
        lock(&self.0).fic_delete_propagation_delay = delay;
    }

    pub(crate) fn fic_delete_propagation_delay(&self) -> Duration {
        lock(&self.0).fic_delete_propagation_delay
    }

    pub(crate) fn fic_propagation_delay(&self) -> Duration {
        lock(&self.0).fic_propagation_delay
    }

    pub(crate) fn replication_window(&self) -> Duration {
        lock(&self.0).replication_window
    }

    pub(crate) fn propagation_delay(&self) -> Duration {
        lock(&self.0).propagation_delay
    }

    /// The global latency and the actions of the rules matching this request (consuming one use).
    pub(crate) fn take(&self, method: &str, path: &str) -> (Duration, Vec<FaultAction>) {
        let mut s = lock(&self.0);
        let mut actions = Vec::new();
        let mut answered = false;
        for (rule, re) in s.rules.iter_mut() {
            let method_ok = rule
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method));
            let is_latency = matches!(rule.action, FaultAction::Latency { .. });
            // Latency rules add up; of the rules that answer instead, only the first one fires.
            if method_ok && re.is_match(path) && rule.times != Some(0) && (is_latency || !answered)
            {
                answered |= !is_latency;
                if let Some(t) = rule.times.as_mut() {
                    *t -= 1;
                }
                actions.push(rule.action.clone());
            }
        }
        s.rules.retain(|(r, _)| r.times != Some(0));
        (s.latency, actions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_rules_fire_once_and_patterns_are_checked() {
        let f = Faults::new(
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
        );
        f.add(FaultRule {
            method: Some("PUT".into()),
            path_pattern: "roleAssignments/".into(),
            action: FaultAction::Drop,
            times: Some(1),
        })
        .unwrap();
        assert!(f.take("GET", "/x/roleassignments/1").1.is_empty());
        assert_eq!(
            f.take("put", "/x/roleassignments/1").1,
            vec![FaultAction::Drop]
        );
        assert!(f.take("PUT", "/x/roleassignments/1").1.is_empty());
        let err = f
            .add(FaultRule {
                method: None,
                path_pattern: "(".into(),
                action: FaultAction::Drop,
                times: None,
            })
            .unwrap_err();
        assert!(err.to_string().contains("path pattern"), "{err}");
    }

    #[test]
    fn rules_read_from_admin_json() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"pathPattern":"roleAssignments","action":{"type":"throttle","retryAfterSecs":5},"times":3}"#,
        )
        .unwrap();
        assert_eq!(
            rule.action,
            FaultAction::Throttle {
                retry_after_secs: 5
            }
        );
        assert_eq!(rule.times, Some(3));
        assert_eq!(rule.method, None);
    }
}
