//! In-memory object storage with one global, monotonically increasing resourceVersion and a
//! bounded event history that watches replay from.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
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
    /// UIDs of stored objects, and owner UID → dependents (for garbage collection).
    uids: HashSet<String>,
    dependents: HashMap<String, BTreeSet<ObjectKey>>,
}

/// (group, plural, namespace, name).
pub type ObjectKey = (String, String, String, String);

fn uid_of(obj: &Value) -> Option<&str> {
    obj["metadata"]["uid"].as_str()
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["uid"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
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
            uids: HashSet::new(),
            dependents: HashMap::new(),
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
    pub fn put(
        &mut self,
        group: &str,
        plural: &str,
        ns: &str,
        name: &str,
        mut obj: Value,
    ) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let bucket = self
            .buckets
            .entry((group.to_owned(), plural.to_owned()))
            .or_default();
        let prev = bucket.insert((ns.to_owned(), name.to_owned()), obj.clone());
        let key: ObjectKey = (
            group.to_owned(),
            plural.to_owned(),
            ns.to_owned(),
            name.to_owned(),
        );
        if let Some(p) = &prev {
            self.unindex(&key, p);
        }
        self.index(&key, &obj);
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
        let key: ObjectKey = (
            group.to_owned(),
            plural.to_owned(),
            ns.to_owned(),
            name.to_owned(),
        );
        self.unindex(&key, &obj);
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        self.record(group, plural, ns, EventType::Deleted, obj.clone(), None);
        Some(obj)
    }

    fn index(&mut self, key: &ObjectKey, obj: &Value) {
        if let Some(uid) = uid_of(obj) {
            self.uids.insert(uid.to_owned());
        }
        for owner in owner_uids(obj) {
            self.dependents
                .entry(owner)
                .or_default()
                .insert(key.clone());
        }
    }

    fn unindex(&mut self, key: &ObjectKey, obj: &Value) {
        if let Some(uid) = uid_of(obj) {
            self.uids.remove(uid);
        }
        for owner in owner_uids(obj) {
            if let Some(set) = self.dependents.get_mut(&owner) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(&owner);
                }
            }
        }
    }

    /// Objects that name `owner_uid` as an owner and have no other owner left.
    pub fn orphans_of(&self, owner_uid: &str) -> Vec<ObjectKey> {
        let Some(keys) = self.dependents.get(owner_uid) else {
            return Vec::new();
        };
        keys.iter()
            .filter(|(g, p, ns, n)| {
                self.get(g, p, ns, n)
                    .is_some_and(|o| owner_uids(o).iter().all(|u| !self.uids.contains(u)))
            })
            .cloned()
            .collect()
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
        Some(self.history.iter().filter(|c| c.rv > rv).cloned().collect())
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
