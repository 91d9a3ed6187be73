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
    /// HTTP status to answer with (409, 429, 500, 503, ...); 0 answers normally (after the
    /// delay).
    pub code: u16,
    /// Hold the request this long first: a hung API server, as a client sees it.
    #[serde(default)]
    pub delay_ms: u64,
}

/// What a matching rule does to one request.
#[derive(Debug)]
pub(crate) struct Injected {
    pub delay: Duration,
    pub error: Option<ApiError>,
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

    /// What to do to this request, if a rule matches (and consumes one count).
    pub fn check(&mut self, verb: &str, resource: &str) -> Option<Injected> {
        let rule = self.rules.iter_mut().find(|r| {
            (r.verb == "*" || r.verb == verb) && (r.resource == "*" || r.resource == resource)
        })?;
        rule.count -= 1;
        let (code, delay) = (rule.code, Duration::from_millis(rule.delay_ms));
        self.rules.retain(|r| r.count > 0);
        if code == 0 {
            return Some(Injected { delay, error: None });
        }
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
        Some(Injected {
            delay,
            error: Some(ApiError::new(
                code,
                reason,
                format!("injected fault: {verb} {resource} answered {code}"),
            )),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_can_hold_a_request_and_then_answer_normally_or_fail() {
        let mut f = Faults::default();
        f.add(FailRule {
            verb: "update".into(),
            resource: "leases".into(),
            count: 1,
            code: 0,
            delay_ms: 5000,
        });
        f.add(FailRule {
            verb: "get".into(),
            resource: "leases".into(),
            count: 1,
            code: 503,
            delay_ms: 10,
        });
        assert!(f.check("get", "configmaps").is_none());
        let hung = f.check("update", "leases").expect("matches");
        assert_eq!(hung.delay, Duration::from_secs(5));
        assert!(hung.error.is_none());
        let failed = f.check("get", "leases").expect("matches");
        assert!(failed.error.is_some_and(|e| e.code == 503));
        assert!(f.check("update", "leases").is_none(), "count used up");
    }
}
