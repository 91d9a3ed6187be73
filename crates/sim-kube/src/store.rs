//! In-memory object storage with one global, monotonically increasing resourceVersion and a
//! bounded event history that watches replay from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::registry::ResourceType;

/// Objects of one resource (group + plural), keyed by (namespace, name); cluster-scoped objects
/// use an empty namespace. Versions of a group share one storage.
pub type Bucket = BTreeMap<(String, String), Value>;

/// `ADDED`, `MODIFIED` or `DELETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub type_: EventType,
    pub object: Value,
    /// The state before a MODIFIED change, so label-filtered watches can tell entry from exit.
    pub prev: Option<Value>,
}

/// Everything behind the server's single lock.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    buckets: BTreeMap<(String, String), Bucket>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted_below: u64,
    pub tx: broadcast::Sender<Arc<Change>>,
    pub types: Vec<ResourceType>,
}

impl Store {
    pub fn new(history_limit: usize, types: Vec<ResourceType>) -> Self {
        let (tx, _) = broadcast::channel(history_limit.max(16));
        Self {
            rv: 1,
            buckets: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            compacted_below: 1,
            tx,
            types,
        }
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn compacted_below(&self) -> u64 {
        self.compacted_below
    }

    /// Forgets all history: every watch from an older resourceVersion gets 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_below = self.rv + 1;
    }

    pub fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    pub fn bucket(&self, group: &str, plural: &str) -> Option<&Bucket> {
        self.buckets.get(&(group.to_owned(), plural.to_owned()))
    }

    pub fn get(&self, group: &str, plural: &str, ns: &str, name: &str) -> Option<&Value> {
        self.bucket(group, plural)?
            .get(&(ns.to_owned(), name.to_owned()))
    }

    /// Stores `obj` under a new resourceVersion and records the change; returns the stored object.
    pub fn put(&mut self, group: &str, plural: &str, ns: &str, name: &str, mut obj: Value) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let bucket = self
            .buckets
            .entry((group.to_owned(), plural.to_owned()))
            .or_default();
        let prev = bucket.insert((ns.to_owned(), name.to_owned()), obj.clone());
        let type_ = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(group, plural, ns, type_, obj.clone(), prev);
        obj
    }

    /// Removes an object; the DELETED event carries its last state under a new resourceVersion.
    pub fn remove(&mut self, group: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let bucket = self
            .buckets
            .get_mut(&(group.to_owned(), plural.to_owned()))?;
        let mut obj = bucket.remove(&(ns.to_owned(), name.to_owned()))?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        self.record(group, plural, ns, EventType::Deleted, obj.clone(), None);
        Some(obj)
    }

    fn record(
        &mut self,
        group: &str,
        plural: &str,
        ns: &str,
        type_: EventType,
        object: Value,
        prev: Option<Value>,
    ) {
        let change = Arc::new(Change {
            rv: self.rv,
            group: group.to_owned(),
            plural: plural.to_owned(),
            namespace: ns.to_owned(),
            type_,
            object,
            prev,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted_below = old.rv + 1;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.tx.send(change);
    }

    /// Changes after `rv`, or `None` if some of them were compacted away.
    pub fn changes_since(&self, rv: u64) -> Option<Vec<Arc<Change>>> {
        if rv + 1 < self.compacted_below {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|c| c.rv > rv)
                .cloned()
                .collect(),
        )
    }

    /// Every stored object of all resources (for namespace and CRD cleanup).
    pub fn all_keys_in_namespace(&self, ns: &str) -> Vec<(String, String, String)> {
        self.buckets
            .iter()
            .flat_map(|((g, p), b)| {
                b.keys()
                    .filter(|(n, _)| n == ns)
                    .map(move |(_, name)| (g.clone(), p.clone(), name.clone()))
            })
            .collect()
    }
}
