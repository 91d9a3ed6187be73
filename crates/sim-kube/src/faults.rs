//! Fault injection: failing requests, latency, dropped watches, compaction. Exposed through
//! `SimKubeHandle` and `POST /sim-kube/faults` (admin token).

use std::time::Duration;

use serde::Deserialize;

use crate::status::ApiError;

/// Fail the next `count` requests matching `verb` and `resource` (`*` matches any).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FailRule {
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection, or `*`.
    pub verb: String,
    /// Plural resource name (`configmaps`, `widgets`), optionally `/status`, or `*`.
    pub resource: String,
    pub count: u32,
    /// HTTP status to answer with (409, 429, 500, 503, ...).
    pub code: u16,
}

/// Active faults.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Vec<FailRule>,
    pub latency: Duration,
}

impl Faults {
    pub fn add(&mut self, rule: FailRule) {
        if rule.count > 0 {
            self.rules.push(rule);
        }
    }

    /// The injected error for this request, if a rule matches (and consumes one count).
    pub fn check(&mut self, verb: &str, resource: &str) -> Option<ApiError> {
        let rule = self.rules.iter_mut().find(|r| {
            (r.verb == "*" || r.verb == verb) && (r.resource == "*" || r.resource == resource)
        })?;
        rule.count -= 1;
        let code = rule.code;
        self.rules.retain(|r| r.count > 0);
        let reason = match code {
            409 => "Conflict",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            404 => "NotFound",
            403 => "Forbidden",
            _ => "Unknown",
        };
        Some(ApiError::new(
            code,
            reason,
            format!("injected fault: {verb} {resource} answered {code}"),
        ))
    }
}

/// Body of `POST /sim-kube/faults`.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub(crate) enum FaultRequest {
    Fail(FailRule),
    Latency { millis: u64 },
    DropWatches,
    Compact,
    Restart,
}
