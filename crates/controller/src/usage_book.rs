//! What usage evidence (`crate::usage`, docs/usage.md) shares with the rest of the controller,
//! apart from it so that the context can hold it: its settings, and the book of batches.
//!
//! The book: the usage batches persisted in the ledger but not yet in their grants' statuses, keyed by
//! grant UID (a grant recreated under the same name is another lease). The reconciler reads a
//! grant's batches into its decision and confirms the sequence it wrote; ingestion hands new
//! batches over only after the ledger holding them is persisted.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use lapse_api::usage::UsageDelta;
use tokio::sync::{broadcast, watch};

use crate::grant_ref::GrantRef;
use crate::triggers::Affected;

/// Which logs are read, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageSettings {
    /// Read each governed subscription's ARM Activity Log (needs
    /// `Microsoft.Insights/eventtypes/values/read`).
    pub activity_log: bool,
    /// Read Entra's workload sign-in log (needs Graph `AuditLog.Read.All` and Entra ID P1/P2).
    pub sign_ins: bool,
    /// How often each source is polled.
    pub poll_every: Duration,
    /// How far before its cursor each poll reads again, for events the log shows late.
    pub reread: Duration,
    /// The ConfigMap (in the operator's namespace) that holds the ledger.
    pub ledger_name: String,
}

impl Default for UsageSettings {
    fn default() -> Self {
        Self {
            activity_log: false,
            sign_ins: false,
            poll_every: Duration::from_secs(60),
            reread: Duration::from_secs(20 * 60),
            ledger_name: "lapse-usage-ledger".into(),
        }
    }
}

impl UsageSettings {
    pub fn enabled(&self) -> bool {
        self.activity_log || self.sign_ins
    }
}

#[derive(Debug, Default)]
struct Entry {
    grant: Option<GrantRef>,
    deltas: Vec<UsageDelta>,
}

/// Pending usage batches, shared by ingestion and the reconcilers.
#[derive(Debug)]
pub struct UsageBook {
    pending: Mutex<HashMap<String, Entry>>,
    /// Wakes the grants a batch names.
    affected: broadcast::Sender<Affected>,
    /// Makes decisions taken before a batch arrived stale.
    epoch: watch::Sender<u64>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A plain map: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl UsageBook {
    pub fn new(affected: broadcast::Sender<Affected>, epoch: watch::Sender<u64>) -> Self {
        Self {
            pending: Mutex::default(),
            affected,
            epoch,
        }
    }

    /// The batches of the grant with this UID not yet confirmed written.
    pub fn pending_for(&self, uid: &str) -> Vec<UsageDelta> {
        locked(&self.pending)
            .get(uid)
            .map(|e| e.deltas.clone())
            .unwrap_or_default()
    }

    /// Whether a pending batch of this grant ends its lease (a sensitive action under
    /// `onSensitiveAction: Revoke`): the revocation lane takes it.
    pub fn revokes(&self, uid: &str) -> bool {
        locked(&self.pending)
            .get(uid)
            .is_some_and(|e| e.deltas.iter().any(|d| d.revokes().is_some()))
    }

    /// Whether a batch with `concluded` is pending for this grant.
    pub fn concluding(&self, uid: &str) -> bool {
        locked(&self.pending)
            .get(uid)
            .is_some_and(|e| e.deltas.iter().any(|d| d.concluded))
    }

    /// The grant's status now records every batch up to `sequence`.
    pub fn confirm(&self, uid: &str, sequence: u64) {
        let mut pending = locked(&self.pending);
        if let Some(e) = pending.get_mut(uid) {
            e.deltas.retain(|d| d.sequence > sequence);
            if e.deltas.is_empty() {
                pending.remove(uid);
            }
        }
    }

    /// Forgets the batches of grants that no longer exist.
    pub fn retain(&self, exists: impl Fn(&str) -> bool) {
        locked(&self.pending).retain(|uid, _| exists(uid));
    }

    /// What the ledger persists: every pending batch by grant UID, with `extra` (a batch about
    /// to be handed over) included.
    pub fn snapshot_with(
        &self,
        extra: &[(String, GrantRef, UsageDelta)],
    ) -> BTreeMap<String, PendingEntry> {
        let mut out: BTreeMap<String, PendingEntry> = locked(&self.pending)
            .iter()
            .map(|(uid, e)| {
                (
                    uid.clone(),
                    PendingEntry {
                        grant: e.grant.as_ref().map(ToString::to_string),
                        deltas: e.deltas.clone(),
                    },
                )
            })
            .collect();
        for (uid, g, d) in extra {
            let e = out.entry(uid.clone()).or_default();
            e.grant = Some(g.to_string());
            e.deltas.push(d.clone());
        }
        out
    }

    /// Hands over batches (persisted already) and wakes their grants.
    pub fn add(&self, batch: Vec<(String, GrantRef, UsageDelta)>) {
        if batch.is_empty() {
            return;
        }
        let mut woken = Vec::new();
        {
            let mut pending = locked(&self.pending);
            for (uid, g, d) in batch {
                let e = pending.entry(uid).or_default();
                e.grant = Some(g.clone());
                e.deltas.push(d);
                woken.push(g);
            }
        }
        self.epoch.send_modify(|n| *n += 1);
        for g in woken {
            let _ = self.affected.send(Affected::Grant(
                g.namespace().to_owned(),
                g.name().to_owned(),
            ));
        }
    }

    /// Loads what a previous run persisted, and wakes those grants.
    pub fn restore(&self, pending: BTreeMap<String, PendingEntry>) {
        let batch: Vec<(String, GrantRef, UsageDelta)> = pending
            .into_iter()
            .flat_map(|(uid, e)| {
                let g = e.grant.as_deref().and_then(parse_grant);
                e.deltas
                    .into_iter()
                    .filter_map(move |d| g.clone().map(|g| (uid.clone(), g, d)))
            })
            .collect();
        self.add(batch);
    }
}

/// One grant's pending batches as the ledger stores them.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PendingEntry {
    /// `namespace/name`.
    pub grant: Option<String>,
    pub deltas: Vec<UsageDelta>,
}

fn parse_grant(s: &str) -> Option<GrantRef> {
    let (namespace, name) = s.split_once('/')?;
    Some(GrantRef::new(namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> (UsageBook, broadcast::Receiver<Affected>) {
        let (tx, rx) = broadcast::channel(16);
        let (epoch, _) = watch::channel(0);
        (UsageBook::new(tx, epoch), rx)
    }

    fn g() -> GrantRef {
        GrantRef::new("payments", "nightly")
    }

    #[test]
    fn batches_wait_until_confirmed_and_survive_a_restart_through_the_snapshot() {
        let (b, mut rx) = book();
        b.add(vec![
            ("u1".into(), g(), UsageDelta::new(1)),
            ("u1".into(), g(), UsageDelta::new(2)),
        ]);
        assert_eq!(
            rx.try_recv().ok(),
            Some(Affected::Grant("payments".into(), "nightly".into()))
        );
        assert_eq!(b.pending_for("u1").len(), 2);
        b.confirm("u1", 1);
        assert_eq!(b.pending_for("u1").len(), 1);
        let snap = b.snapshot_with(&[("u2".into(), g(), UsageDelta::new(3))]);
        assert_eq!(snap.len(), 2);
        let (restored, _rx) = book();
        restored.restore(snap);
        assert_eq!(restored.pending_for("u1")[0].sequence, 2);
        assert_eq!(restored.pending_for("u2")[0].sequence, 3);
        restored.confirm("u1", 2);
        restored.retain(|uid| uid != "u2");
        assert!(restored.snapshot_with(&[]).is_empty());
    }
}
