//! The audit log: one entry per request the simulator answered (or dropped).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::http::lock;

/// [`AuditEntry::origin`] of a role assignment PIM removed at its schedule's end.
pub const PIM_EXPIRY_ORIGIN: &str = "pim-expiry";

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
    /// Set when the simulator itself made the change rather than a caller: `pim-expiry` for a
    /// role assignment PIM removed at its schedule's end (`principal` is then `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

#[derive(Debug)]
struct Log {
    entries: VecDeque<AuditEntry>,
    capacity: usize,
    dropped: u64,
}

/// Shared log of requests, keeping the most recent `capacity` entries (long benchmark runs
/// would otherwise grow it without bound).
#[derive(Debug, Clone)]
pub struct AuditLog(Arc<Mutex<Log>>);

impl AuditLog {
    pub(crate) fn new(capacity: usize) -> Self {
        Self(Arc::new(Mutex::new(Log {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        })))
    }

    /// A copy of the kept entries, oldest first.
    pub fn entries(&self) -> Vec<AuditEntry> {
        lock(&self.0).entries.iter().cloned().collect()
    }

    /// Kept entries whose method matches and whose path contains `path_part` (case-insensitive).
    pub fn matching(&self, method: &str, path_part: &str) -> Vec<AuditEntry> {
        let part = path_part.to_ascii_lowercase();
        lock(&self.0)
            .entries
            .iter()
            .filter(|e| {
                e.method.eq_ignore_ascii_case(method) && e.path.to_ascii_lowercase().contains(&part)
            })
            .cloned()
            .collect()
    }

    /// How many old entries were discarded to stay within the capacity.
    pub fn dropped(&self) -> u64 {
        lock(&self.0).dropped
    }

    /// Forgets all entries.
    pub fn clear(&self) {
        let mut log = lock(&self.0);
        log.entries.clear();
        log.dropped = 0;
    }

    pub(crate) fn push(&self, entry: AuditEntry) {
        let mut log = lock(&self.0);
        if log.entries.len() >= log.capacity {
            log.entries.pop_front();
            log.dropped += 1;
        }
        log.entries.push_back(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> AuditEntry {
        AuditEntry {
            time: Utc::now(),
            principal: None,
            method: "GET".into(),
            path: path.into(),
            query: None,
            status: 200,
            error_code: None,
            latency: Duration::ZERO,
            request_id: String::new(),
            origin: None,
        }
    }

    #[test]
    fn keeps_the_most_recent_entries_within_capacity() {
        let log = AuditLog::new(2);
        for p in ["/a", "/b", "/c"] {
            log.push(entry(p));
        }
        let paths: Vec<String> = log.entries().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["/b", "/c"]);
        assert_eq!(log.dropped(), 1);
        assert_eq!(log.matching("get", "/C").len(), 1);
    }
}
