//! The resourceVersion of each grant as this process last wrote it. The watch cache may lag
//! behind our own writes, and the two lanes write the same grants: before a lane acts on a cached
//! grant older than our last write of it, it reads the grant again.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::ResourceExt;
use lapse_api::v1alpha1::AccessGrant;

use crate::inventory::GrantRef;

#[derive(Debug, Default)]
pub struct WrittenVersions {
    map: Mutex<HashMap<GrantRef, String>>,
}

impl WrittenVersions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GrantRef, String>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers the version our write produced.
    pub fn record(&self, grant: &GrantRef, written: &AccessGrant) {
        if let Some(rv) = written.resource_version() {
            self.lock().insert(grant.clone(), rv);
        }
    }

    pub fn forget(&self, grant: &GrantRef) {
        self.lock().remove(grant);
    }

    /// True when our last write of `grant` is newer than the cached copy (or their order
    /// cannot be told): read it again before acting.
    pub fn fresher_than_cache(&self, grant: &GrantRef, cached: &AccessGrant) -> bool {
        let Some(ours) = self.lock().get(grant).cloned() else {
            return false;
        };
        let Some(theirs) = cached.resource_version() else {
            return true;
        };
        if ours == theirs {
            return false;
        }
        // resourceVersions are opaque; etcd's (and sim-kube's) are increasing integers, which
        // lets a newer cache skip the read. Anything else is read again.
        match (ours.parse::<u64>(), theirs.parse::<u64>()) {
            (Ok(o), Ok(t)) => o > t,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(rv: &str) -> AccessGrant {
        let mut g = AccessGrant::new("a", Default::default());
        g.metadata.resource_version = Some(rv.into());
        g
    }

    #[test]
    fn a_cache_older_than_our_write_is_read_again() {
        let w = WrittenVersions::default();
        let r = GrantRef {
            namespace: "ns".into(),
            name: "a".into(),
        };
        assert!(!w.fresher_than_cache(&r, &grant("5")), "never written");
        w.record(&r, &grant("7"));
        assert!(w.fresher_than_cache(&r, &grant("5")));
        assert!(!w.fresher_than_cache(&r, &grant("7")));
        assert!(
            !w.fresher_than_cache(&r, &grant("9")),
            "someone wrote after us"
        );
        assert!(w.fresher_than_cache(&r, &grant("x")));
        w.forget(&r);
        assert!(!w.fresher_than_cache(&r, &grant("5")));
    }
}
