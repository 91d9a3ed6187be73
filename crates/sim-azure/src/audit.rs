//! The audit log: one entry per request the simulator answered (or dropped).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::http::lock;

/// One request as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// When the request arrived.
    pub time: DateTime<Utc>,
    /// Object ID of the authenticated caller (ARM, Graph) or the client ID asking for a token.
    pub principal: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// Status answered; 0 when the connection was dropped by fault injection.
    pub status: u16,
    /// Error code answered (ARM `error.code`, Entra `AADSTS…`), if any.
    pub error_code: Option<String>,
    /// Time from arrival to answer.
    #[serde(serialize_with = "millis")]
    pub latency: Duration,
    /// `x-ms-request-id` answered.
    pub request_id: String,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Shared, append-only log of requests.
#[derive(Debug, Clone, Default)]
pub struct AuditLog(Arc<Mutex<Vec<AuditEntry>>>);

impl AuditLog {
    /// A copy of all entries so far, oldest first.
    pub fn entries(&self) -> Vec<AuditEntry> {
        lock(&self.0).clone()
    }

    /// Entries whose method matches and whose path contains `path_part` (case-insensitive).
    pub fn matching(&self, method: &str, path_part: &str) -> Vec<AuditEntry> {
        let part = path_part.to_ascii_lowercase();
        lock(&self.0)
            .iter()
            .filter(|e| e.method.eq_ignore_ascii_case(method) && e.path.to_ascii_lowercase().contains(&part))
            .cloned()
            .collect()
    }

    /// Forgets all entries.
    pub fn clear(&self) {
        lock(&self.0).clear();
    }

    pub(crate) fn push(&self, entry: AuditEntry) {
        lock(&self.0).push(entry);
    }
}
