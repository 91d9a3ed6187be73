//! Live grants per namespace and policy: the counts `maxActiveGrants` is checked against, and
//! each policy's `status.grants`.
//!
//! A grant counts from the moment its first `Activating` status is about to be written until
//! its lease ends. Admission is atomic, so grants of one namespace reconciled at the same time
//! cannot together pass a quota each would pass alone.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use lapse_api::v1alpha1::{AccessGrantStatus, GrantPhase};

use crate::grant_ref::GrantRef;

/// The policy a grant's lease runs under, while it is live.
pub fn live_policy(status: &AccessGrantStatus) -> Option<&str> {
    matches!(status.phase, GrantPhase::Activating | GrantPhase::Active)
        .then_some(status.policy.as_deref())
        .flatten()
}

#[derive(Debug, Default)]
pub struct LiveGrants {
    by_grant: Mutex<HashMap<GrantRef, String>>,
}

impl LiveGrants {
    fn lock(&self) -> MutexGuard<'_, HashMap<GrantRef, String>> {
        self.by_grant
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Live grants of `namespace` per policy, `except` one grant (the one being decided).
    pub fn counts(&self, namespace: &str, except: &GrantRef) -> BTreeMap<String, u32> {
        let mut out: BTreeMap<String, u32> = BTreeMap::new();
        for (g, policy) in self.lock().iter() {
            if g.namespace() == namespace && g != except {
                *out.entry(policy.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Live grants per policy, cluster-wide (for policy status).
    pub fn per_policy(&self) -> BTreeMap<String, u32> {
        let mut out: BTreeMap<String, u32> = BTreeMap::new();
        for policy in self.lock().values() {
            *out.entry(policy.clone()).or_default() += 1;
        }
        out
    }

    /// Counts `grant` under `policy` unless that would make its namespace hold more than `max`
    /// live grants under it. False when refused.
    pub fn admit(&self, grant: &GrantRef, policy: &str, max: Option<u32>) -> bool {
        let mut map = self.lock();
        if map.get(grant).is_some_and(|p| p == policy) {
            return true;
        }
        if let Some(max) = max {
            let n = map
                .iter()
                .filter(|(g, p)| g.namespace() == grant.namespace() && *p == policy && *g != grant)
                .count();
            if n >= max as usize {
                return false;
            }
        }
        map.insert(grant.clone(), policy.to_owned());
        true
    }

    /// Records a grant's live policy from its status (`None` once the lease ended or the grant
    /// is gone).
    pub fn set(&self, grant: &GrantRef, policy: Option<&str>) {
        let mut map = self.lock();
        match policy {
            Some(p) => {
                map.insert(grant.clone(), p.to_owned());
            }
            None => {
                map.remove(grant);
            }
        }
    }

    pub fn is_live(&self, grant: &GrantRef) -> bool {
        self.lock().contains_key(grant)
    }

    /// Forgets grants that are not in `keep` (deleted while this process looked away).
    pub fn retain(&self, keep: &std::collections::HashSet<GrantRef>) {
        self.lock().retain(|g, _| keep.contains(g));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(ns: &str, name: &str) -> GrantRef {
        GrantRef::new(ns, name)
    }

    #[test]
    fn admission_is_per_namespace_and_policy() {
        let live = LiveGrants::default();
        assert!(live.admit(&g("a", "1"), "p", Some(2)));
        assert!(live.admit(&g("a", "2"), "p", Some(2)));
        assert!(!live.admit(&g("a", "3"), "p", Some(2)), "over the quota");
        assert!(live.admit(&g("a", "2"), "p", Some(2)), "already counted");
        assert!(live.admit(&g("b", "1"), "p", Some(2)), "another namespace");
        assert!(live.admit(&g("a", "4"), "q", Some(1)), "another policy");
        assert!(live.admit(&g("a", "5"), "p", None), "no quota");
        assert_eq!(live.counts("a", &g("a", "1")).get("p"), Some(&2));
        live.set(&g("a", "1"), None);
        assert_eq!(live.per_policy().get("p"), Some(&3));
    }
}
