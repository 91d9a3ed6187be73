//! Two lanes for grant work, so that ending access never waits behind creating it.
//!
//! Every grant event reaches two controllers sharing one watch cache. The *revocation lane*
//! acts only on grants whose lease must end now (deleted, revoked, expired, no longer allowed,
//! tampered with, or still owing deletes); the *activation lane* acts on everything else, with a
//! per-namespace share of its slots so one namespace cannot take them all. A slow or failing
//! activation in one namespace therefore never holds up another namespace's revocation: the
//! revocation has its own slots, and inside the Azure client deletes go before writes
//! (docs/architecture.md, "Revocations first").
//!
//! The [`LeaseClock`] remembers when each lease ends (or ended), whichever lane gets to it, so
//! the overdue gauge counts from the lease end whatever held the revocation up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, TimeDelta, Utc};
use kube::ResourceExt;
use lapse_api::lease::Deletes;
use lapse_api::v1alpha1::{AccessGrant, AccessGrantStatus};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::early::{BudgetKey, Footprint};
use crate::grant_ref::GrantRef;

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps: a panic elsewhere leaves them usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn holds_objects(st: &AccessGrantStatus) -> bool {
    st.role_assignments.iter().any(|r| r.state.owes_delete())
        || st
            .federated_credential
            .as_ref()
            .is_some_and(|f| f.state.owes_delete())
}

/// One lock per grant: the two lanes never drive the same grant at once.
#[derive(Debug, Default, Clone)]
pub struct GrantLocks {
    map: Arc<Mutex<HashMap<GrantRef, Arc<AsyncMutex<()>>>>>,
}

/// Held while a grant is driven; forgets the entry when nobody else wants it.
#[derive(Debug)]
pub struct GrantGuard {
    guard: Option<OwnedMutexGuard<()>>,
    grant: GrantRef,
    locks: GrantLocks,
}

impl GrantLocks {
    pub async fn lock(&self, grant: &GrantRef) -> GrantGuard {
        let m = locked(&self.map).entry(grant.clone()).or_default().clone();
        GrantGuard {
            guard: Some(m.lock_owned().await),
            grant: grant.clone(),
            locks: self.clone(),
        }
    }
}

impl Drop for GrantGuard {
    fn drop(&mut self) {
        let mut map = locked(&self.locks.map);
        self.guard = None;
        if map
            .get(&self.grant)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.grant);
        }
    }
}

/// A per-namespace share of the activation lane's slots.
#[derive(Debug)]
pub struct FairShare {
    cap: usize,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

/// One activation slot of a namespace, released on drop.
#[derive(Debug)]
pub struct FairPermit {
    namespace: String,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

impl FairShare {
    /// At most half the lane's slots (at least one) for any one namespace.
    pub fn new(concurrency: u16) -> Self {
        Self {
            cap: (usize::from(concurrency) / 2).max(1),
            in_flight: Arc::default(),
        }
    }

    /// A slot for `namespace`, or `None` when it already holds its share (come back later).
    pub fn try_enter(&self, namespace: &str) -> Option<FairPermit> {
        let mut map = locked(&self.in_flight);
        let n = map.entry(namespace.to_owned()).or_default();
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(FairPermit {
            namespace: namespace.to_owned(),
            in_flight: self.in_flight.clone(),
        })
    }
}

impl Drop for FairPermit {
    fn drop(&mut self) {
        let mut map = locked(&self.in_flight);
        if let Some(n) = map.get_mut(&self.namespace) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.namespace);
            }
        }
    }
}

/// When each lease ends or ended, until its revocation is finished.
#[derive(Debug, Default)]
pub struct LeaseClock {
    state: Mutex<ClockState>,
}

/// One map, one key per grant (an index by end cost two more copies of every grant's name, for
/// a count taken only when metrics are scraped; docs/performance.md).
#[derive(Debug, Default)]
struct ClockState {
    grants: HashMap<GrantRef, Clocked>,
    /// Bumped whenever a live lease's end or footprint changes: the early-end plan is made
    /// again only then.
    changes: u64,
}

#[derive(Debug, Default, Clone)]
struct Clocked {
    end: Option<DateTime<Utc>>,
    /// What a live lease deletes at its end, by ARM budget (synchronized expiry).
    footprint: Footprint,
    /// The newest version of the grant observed: the watch's events and the operator's own
    /// writes race each other, and an older version must not bring back an end already cleared.
    version: Option<u64>,
}

impl LeaseClock {
    /// Records what a watch event shows of a grant: `seen` is when this process first saw it
    /// revoked or deleted (the lease ended then, even if no reconcile ran yet).
    /// `sealed` is the grant's status if the operator's seal holds on it: an unread status
    /// says nothing of when the lease ends (that is for the revocation lane to find out).
    pub fn observe(
        &self,
        g: &AccessGrant,
        sealed: Option<&AccessGrantStatus>,
        seen: DateTime<Utc>,
    ) {
        let Some(ns) = g.namespace() else { return };
        let grant = GrantRef::new(ns, g.name_any());
        // resourceVersions are opaque; etcd's (and sim-kube's) are increasing integers, which
        // tells an older version apart. Anything else is taken as news.
        if let Some(v) = g.resource_version().and_then(|v| v.parse::<u64>().ok()) {
            let mut state = locked(&self.state);
            let clocked = state.grants.entry(grant.clone()).or_default();
            if clocked.version.is_some_and(|seen| seen >= v) {
                return;
            }
            clocked.version = Some(v);
        }
        let st = sealed;
        let footprint = st
            .filter(|st| st.activated_at.is_some() && !st.phase.is_terminal())
            .map(Footprint::of)
            .unwrap_or_default();
        let end = st.and_then(|st| {
            let live = st.activated_at.is_some() && !st.phase.is_terminal();
            if !(live || holds_objects(st)) {
                return None;
            }
            let mut end = st.ended_at.or(st.expires_at)?;
            if g.spec.revoked || g.metadata.deletion_timestamp.is_some() {
                let since = self.end_of(&grant).unwrap_or(seen);
                end = end.min(since);
            }
            if let Some(deleted) = g
                .metadata
                .deletion_timestamp
                .as_ref()
                .and_then(crate::observe::to_chrono)
            {
                end = end.min(deleted);
            }
            Some(end)
        });
        self.record(&grant, end, footprint);
    }

    fn end_of(&self, grant: &GrantRef) -> Option<DateTime<Utc>> {
        locked(&self.state).grants.get(grant).and_then(|c| c.end)
    }

    /// Sets (or with `None` forgets) a lease's end.
    #[cfg(test)]
    pub fn set(&self, grant: &GrantRef, end: Option<DateTime<Utc>>) {
        self.record(grant, end, Footprint::None);
    }

    fn record(&self, grant: &GrantRef, end: Option<DateTime<Utc>>, footprint: Footprint) {
        let mut st = locked(&self.state);
        let changed = match st.grants.get_mut(grant) {
            Some(c) => {
                let changed = c.end != end || c.footprint != footprint;
                c.end = end;
                c.footprint = footprint;
                if c.end.is_none() && c.version.is_none() {
                    st.grants.remove(grant);
                }
                changed
            }
            None if end.is_some() => {
                st.grants.insert(
                    grant.clone(),
                    Clocked {
                        end,
                        footprint,
                        version: None,
                    },
                );
                true
            }
            None => false,
        };
        if changed {
            st.changes = st.changes.wrapping_add(1);
        }
    }

    /// Forgets a grant that is gone (its finalizer released).
    pub fn forget(&self, grant: &GrantRef) {
        let mut st = locked(&self.state);
        if st.grants.remove(grant).is_some() {
            st.changes = st.changes.wrapping_add(1);
        }
    }

    /// A number that changes whenever a lease's end or footprint does.
    pub fn changes(&self) -> u64 {
        locked(&self.state).changes
    }

    /// The deletes every live lease ending after `now` owes at its end, by budget: what the
    /// early-end plan is made of.
    pub fn deletes(&self, now: DateTime<Utc>) -> Vec<Deletes<GrantRef, BudgetKey>> {
        let st = locked(&self.state);
        let mut out = Vec::new();
        for (g, c) in &st.grants {
            let Some(end) = c.end.filter(|end| *end > now) else {
                continue;
            };
            for (budget, count) in c.footprint.parts() {
                out.push(Deletes {
                    lease: g.clone(),
                    ends_at: end,
                    budget: *budget,
                    count: u32::from(*count),
                });
            }
        }
        out
    }

    /// Leases that ended at least `after` before `now` and still owe deletes. A walk of every
    /// lease, done when metrics are scraped.
    pub fn overdue(&self, now: DateTime<Utc>, after: TimeDelta) -> usize {
        let cutoff = now - after;
        locked(&self.state)
            .grants
            .values()
            .filter(|c| c.end.is_some_and(|end| end <= cutoff))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_gets_at_most_half_the_slots() {
        let fair = FairShare::new(4);
        let a1 = fair.try_enter("a");
        let a2 = fair.try_enter("a");
        assert!(a1.is_some() && a2.is_some());
        assert!(
            fair.try_enter("a").is_none(),
            "a third slot for one namespace"
        );
        let b = fair.try_enter("b");
        assert!(b.is_some(), "another namespace still gets one");
        drop(a1);
        assert!(fair.try_enter("a").is_some(), "released on drop");
        assert!(FairShare::new(1).try_enter("x").is_some(), "never zero");
    }

    /// The operator's own write and the watch's events race: an older version observed after a
    /// newer one changes nothing.
    #[test]
    fn an_older_version_never_brings_back_an_end() {
        use lapse_api::v1alpha1::{AccessGrantSpec, GrantPhase};
        let clock = LeaseClock::default();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let at = |rv: &str, phase: GrantPhase| {
            let mut g = AccessGrant::new("g", AccessGrantSpec::default());
            g.metadata.namespace = Some("ns".into());
            g.metadata.resource_version = Some(rv.into());
            let st = AccessGrantStatus {
                phase,
                activated_at: Some(t),
                expires_at: Some(t),
                ended_at: Some(t),
                ..Default::default()
            };
            (g, st)
        };
        let (revoking, st1) = at("10", GrantPhase::Revoking);
        let (expired, st2) = at("11", GrantPhase::Expired);
        clock.observe(&revoking, Some(&st1), t);
        assert_eq!(clock.overdue(t + TimeDelta::hours(1), TimeDelta::zero()), 1);
        clock.observe(&expired, Some(&st2), t);
        assert_eq!(clock.overdue(t + TimeDelta::hours(1), TimeDelta::zero()), 0);
        clock.observe(&revoking, Some(&st1), t);
        assert_eq!(
            clock.overdue(t + TimeDelta::hours(1), TimeDelta::zero()),
            0,
            "a late event of the older version"
        );
    }

    #[test]
    fn overdue_counts_from_the_lease_end() {
        let clock = LeaseClock::default();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let g = |n: &str| GrantRef::new("ns", n);
        clock.set(&g("a"), Some(t));
        clock.set(&g("b"), Some(t + TimeDelta::seconds(20)));
        clock.set(&g("c"), Some(t + TimeDelta::hours(1)));
        let after = TimeDelta::seconds(30);
        assert_eq!(clock.overdue(t + TimeDelta::seconds(29), after), 0);
        assert_eq!(clock.overdue(t + TimeDelta::seconds(30), after), 1);
        assert_eq!(clock.overdue(t + TimeDelta::seconds(50), after), 2);
        clock.set(&g("a"), None);
        assert_eq!(clock.overdue(t + TimeDelta::seconds(50), after), 1);
        // Moving an end replaces it.
        clock.set(&g("c"), Some(t));
        assert_eq!(clock.overdue(t + TimeDelta::seconds(50), after), 2);
    }

    #[tokio::test]
    async fn one_grant_is_driven_by_one_lane_at_a_time() {
        let locks = GrantLocks::default();
        let g = GrantRef::new("ns", "a");
        let held = locks.lock(&g).await;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock(&g));
        assert!(
            waiting.await.is_err(),
            "a second lock while the first is held"
        );
        drop(held);
        let _again = locks.lock(&g).await;
        assert_eq!(locked(&locks.map).len(), 1);
    }
}
