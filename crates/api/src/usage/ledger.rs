//! The usage ledger: what ingestion adds to a lease's `status.usage`, batch by batch, counted
//! exactly once. Ingestion persists each batch (numbered, with the event IDs it counted)
//! before handing it over; the reconciler applies every batch above the `sequence` the status
//! records and writes the new sequence with the counts, so a batch replayed after a restart
//! is never counted twice and a batch not yet written is never lost.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Finding, Operation, TokenIssue};
use crate::v1alpha1::{ActionCount, UsageFinding, UsageStatus};

/// Most distinct actions `status.usage.actions` keeps.
pub const MAX_ACTIONS: usize = 32;
/// Most findings `status.usage.findings` keeps (the newest).
pub const MAX_FINDINGS: usize = 20;

/// What one batch adds to one lease.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageDelta {
    /// The batch's number in the ledger (increasing).
    pub sequence: u64,
    #[serde(default)]
    pub tokens: u64,
    #[serde(default)]
    pub last_token: Option<DateTime<Utc>>,
    #[serde(default)]
    pub operations: u64,
    #[serde(default)]
    pub last_operation: Option<DateTime<Utc>>,
    /// Actions performed in this batch, with counts.
    #[serde(default)]
    pub actions: Vec<(String, u64)>,
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// The logs were read past the lease's end: its end findings (if any) are in `findings`.
    #[serde(default)]
    pub concluded: bool,
}

impl UsageDelta {
    pub fn new(sequence: u64) -> Self {
        Self {
            sequence,
            ..Self::default()
        }
    }

    /// Counts a succeeded operation (a refused one changed nothing and is not use).
    pub fn count_operation(&mut self, op: &Operation) {
        if !op.succeeded {
            return;
        }
        self.operations += 1;
        self.last_operation = self.last_operation.max(Some(op.time));
        match self.actions.iter_mut().find(|(a, _)| *a == op.action) {
            Some((_, n)) => *n += 1,
            None => self.actions.push((op.action.clone(), 1)),
        }
    }

    pub fn count_token(&mut self, token: &TokenIssue) {
        self.tokens += 1;
        self.last_token = self.last_token.max(Some(token.time));
    }

    pub fn is_empty(&self) -> bool {
        self.tokens == 0 && self.operations == 0 && self.findings.is_empty() && !self.concluded
    }

    /// Whether a finding in it ends the lease (`watch.onSensitiveAction: Revoke`).
    pub fn revokes(&self) -> Option<&Finding> {
        self.findings.iter().find(|f| f.revoke)
    }
}

/// The usage after every delta above `usage.sequence`, in sequence order, and the findings
/// they added (each once: a finding already recorded for the same kind and event is not
/// added again). `None` when there was no usage and no delta to count.
pub fn apply_deltas(
    usage: Option<&UsageStatus>,
    deltas: &[UsageDelta],
) -> (Option<UsageStatus>, Vec<Finding>) {
    let from = usage.map_or(0, |u| u.sequence);
    let mut fresh: Vec<&UsageDelta> = deltas.iter().filter(|d| d.sequence > from).collect();
    if fresh.is_empty() {
        return (usage.cloned(), Vec::new());
    }
    fresh.sort_by_key(|d| d.sequence);
    let mut u = usage.cloned().unwrap_or_default();
    let mut counts: HashMap<String, u64> =
        u.actions.drain(..).map(|a| (a.action, a.count)).collect();
    let mut added = Vec::new();
    for d in fresh {
        u.sequence = d.sequence;
        u.tokens += d.tokens;
        u.last_token = u.last_token.max(d.last_token);
        u.operations += d.operations;
        u.last_operation = u.last_operation.max(d.last_operation);
        for (action, n) in &d.actions {
            *counts.entry(action.clone()).or_default() += n;
        }
        u.concluded |= d.concluded;
        for f in &d.findings {
            let known = u
                .findings
                .iter()
                .any(|k| k.kind == f.kind.as_str() && k.event == f.event && k.at == f.at);
            if known {
                continue;
            }
            u.findings.push(UsageFinding {
                kind: f.kind.as_str().to_owned(),
                at: f.at,
                event: f.event.clone(),
                message: f.message.clone(),
            });
            added.push(f.clone());
        }
    }
    let mut actions: Vec<ActionCount> = counts
        .into_iter()
        .map(|(action, count)| ActionCount { action, count })
        .collect();
    actions.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.action.cmp(&b.action)));
    if actions.len() > MAX_ACTIONS {
        actions.truncate(MAX_ACTIONS);
        u.actions_truncated = true;
    }
    u.actions = actions;
    let excess = u.findings.len().saturating_sub(MAX_FINDINGS);
    u.findings.drain(..excess);
    (Some(u), added)
}
