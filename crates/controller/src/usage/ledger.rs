//! The usage ledger, persisted in a ConfigMap in the operator's namespace: each log source's
//! cursor (how far it has been read, and the IDs of the events counted inside the re-read
//! window), the batch sequence, the batches not yet confirmed in a status, and the latest
//! findings no grant carries (`UseWithoutLease`). One document written whole, so a batch and
//! the event IDs it counted are recorded together: a restart neither misses nor double-counts.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams};
use lapse_api::usage::Finding;
use serde::{Deserialize, Serialize};

use crate::usage_book::PendingEntry;

/// The key of the ledger document in the ConfigMap.
pub const LEDGER_KEY: &str = "ledger.json";
/// Most findings without a grant kept for `kubectl lapse audit`.
pub const MAX_UNLEASED: usize = 200;
/// Most counted event IDs a source remembers (a re-read past this many may count twice; the
/// operator logs it).
pub const MAX_SEEN: usize = 20_000;
const FIELD_MANAGER: &str = "lapse-operator-usage";

/// One log source's progress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceCursor {
    /// Every event up to here has been read once; the next read starts one re-read window
    /// earlier.
    pub through: Option<DateTime<Utc>>,
    /// IDs of the events counted in the re-read window, with their times.
    #[serde(default)]
    pub seen: Vec<(String, DateTime<Utc>)>,
}

impl SourceCursor {
    pub fn seen_set(&self) -> HashSet<String> {
        self.seen.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Drops IDs older than `keep_from` (never re-read again) and keeps at most `MAX_SEEN`.
    pub fn prune(&mut self, keep_from: DateTime<Utc>) {
        self.seen.retain(|(_, t)| *t >= keep_from);
        if self.seen.len() > MAX_SEEN {
            self.seen.sort_by_key(|(_, t)| *t);
            let excess = self.seen.len() - MAX_SEEN;
            tracing::warn!(
                excess,
                "usage ledger: more counted events in the re-read window than it remembers; \
                 the oldest may be counted twice if re-read"
            );
            self.seen.drain(..excess);
        }
    }
}

/// The whole ledger.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// When ingestion first read (it read back one re-read window from here): leases that
    /// started earlier were not watched whole and are never concluded.
    pub since: Option<DateTime<Utc>>,
    /// The last batch number handed out.
    pub sequence: u64,
    /// By source: `activity/<subscription>`, `signins/<kind>`.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceCursor>,
    /// Batches not yet confirmed in a status, by grant UID.
    #[serde(default)]
    pub pending: BTreeMap<String, PendingEntry>,
    /// The latest findings no grant carries, newest last.
    #[serde(default)]
    pub unleased: Vec<Finding>,
}

impl Ledger {
    pub fn add_unleased(&mut self, findings: impl IntoIterator<Item = Finding>) {
        self.unleased.extend(findings);
        let excess = self.unleased.len().saturating_sub(MAX_UNLEASED);
        self.unleased.drain(..excess);
    }
}

/// Where the ledger lives.
#[derive(Clone, Debug)]
pub struct LedgerStore {
    api: Api<ConfigMap>,
    name: String,
}

/// A failure to read or write the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("reading the usage ledger ConfigMap {name}: {source}")]
    Read { name: String, source: kube::Error },
    #[error("writing the usage ledger ConfigMap {name}: {source}")]
    Write { name: String, source: kube::Error },
    #[error("the usage ledger ConfigMap {name} does not hold a readable {LEDGER_KEY}: {reason}")]
    Corrupt { name: String, reason: String },
    #[error("encoding the usage ledger: {0}")]
    Encode(String),
}

impl LedgerStore {
    pub fn new(client: kube::Client, namespace: &str, name: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The persisted ledger, or an empty one when there is none yet. A ledger that cannot be
    /// read is an error, never silently replaced: replacing it would count events twice.
    pub async fn load(&self) -> Result<Ledger, LedgerError> {
        let cm = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|source| LedgerError::Read {
                name: self.name.clone(),
                source,
            })?;
        let Some(text) = cm
            .and_then(|c| c.data)
            .and_then(|mut d| d.remove(LEDGER_KEY))
        else {
            return Ok(Ledger::default());
        };
        serde_json::from_str(&text).map_err(|e| LedgerError::Corrupt {
            name: self.name.clone(),
            reason: e.to_string(),
        })
    }

    /// Writes the ledger whole (server-side apply, one field manager: only the leader writes).
    pub async fn save(&self, ledger: &Ledger) -> Result<(), LedgerError> {
        let text = serde_json::to_string(ledger).map_err(|e| LedgerError::Encode(e.to_string()))?;
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "lapse-operator".to_owned(),
                    )]
                    .into_iter()
                    .collect(),
                ),
                ..Default::default()
            },
            data: Some([(LEDGER_KEY.to_owned(), text)].into_iter().collect()),
            ..Default::default()
        };
        self.api
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await
            .map_err(|source| LedgerError::Write {
                name: self.name.clone(),
                source,
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).single().unwrap()
    }

    #[test]
    fn a_cursor_forgets_what_will_never_be_re_read_and_stays_bounded() {
        let mut c = SourceCursor {
            through: Some(t(100)),
            seen: (0..(MAX_SEEN as i64 + 10))
                .map(|i| (format!("e{i}"), t(i)))
                .collect(),
        };
        c.prune(t(5));
        assert_eq!(c.seen.len(), MAX_SEEN);
        // The newest are kept.
        assert!(c.seen_set().contains(&format!("e{}", MAX_SEEN + 9)));
        assert!(!c.seen_set().contains("e4"));
    }

    #[test]
    fn the_ledger_reads_back_what_it_wrote() {
        let mut l = Ledger {
            since: Some(t(0)),
            sequence: 7,
            ..Default::default()
        };
        l.sources.insert(
            "activity/sub".into(),
            SourceCursor {
                through: Some(t(9)),
                seen: vec![("e1".into(), t(8))],
            },
        );
        let back: Ledger = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
    }
}
