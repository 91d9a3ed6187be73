//! The resourceVersion of each grant as this process last wrote it, and when the last decision
//! asked to look at it again.
//!
//! Two uses. The watch cache may lag behind our own writes, and the two lanes write the same
//! grants: before a lane acts on a cached grant older than our last write of it, it reads the
//! grant again. And our own write is not news: the watch event it causes must not start a new
//! round before the decision's own retry time, or a failing create would be retried as fast as
//! the API server echoes status writes (backoff ignored, Azure hammered).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use lapse_api::v1alpha1::AccessGrant;

use crate::grant_ref::GrantRef;

#[derive(Debug, Default, Clone)]
struct Written {
    rv: Option<String>,
    /// The decision wants to look again at this instant (a retry, or the lease's end).
    next: Option<Instant>,
    /// `next` is the end of a live lease: the revocation lane's moment, not the activation's.
    next_is_end: bool,
    /// `next` is beyond the wake horizon and no lane holds a timer for it: the horizon scan
    /// ([`WrittenVersions::due_within`]) wakes the grant.
    parked: bool,
    /// The policy epoch the decision saw: a policy or namespace change is news.
    epoch: u64,
    /// Decisions in a row that asked for a retry: the backoff's exponent.
    retries: u32,
}

/// The longest a retry backs off to (unless Azure asked for longer). Deletes are retried
/// forever, so this bounds how late a revocation can notice that Azure recovered.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// When a decision wants to look at a grant again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Next {
    pub at: Instant,
    /// The moment is the end of a live lease, which the revocation lane wakes for.
    pub lease_end: bool,
}

impl Next {
    pub fn at(at: Instant) -> Self {
        Self {
            at,
            lease_end: false,
        }
    }
}

/// How long our own last write leaves a grant with nothing new, and whether that wait runs to
/// the lease's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quiet {
    pub wait: Duration,
    pub lease_end: bool,
}

#[derive(Debug, Default)]
pub struct WrittenVersions {
    map: Mutex<HashMap<GrantRef, Written>>,
}

impl WrittenVersions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GrantRef, Written>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers the version our write produced.
    pub fn record(&self, grant: &GrantRef, written: &AccessGrant) {
        if let Some(rv) = written.resource_version() {
            self.lock().entry(grant.clone()).or_default().rv = Some(rv);
        }
    }

    /// Remembers when the last decision wants to look again, and the policy epoch it saw.
    pub fn settle(&self, grant: &GrantRef, next: Option<Next>, epoch: u64) {
        let mut map = self.lock();
        let w = map.entry(grant.clone()).or_default();
        w.next = next.map(|n| n.at);
        w.next_is_end = next.is_some_and(|n| n.lease_end);
        w.parked = false;
        w.epoch = epoch;
    }

    /// The activation lane holds no timer for this grant's next look (it is beyond the wake
    /// horizon): [`Self::due_within`] returns it once that look comes within the horizon.
    pub fn park(&self, grant: &GrantRef) {
        if let Some(w) = self.lock().get_mut(grant) {
            w.parked = w.next.is_some();
        }
    }

    /// The parked grants whose next look is at or before `until`, each returned once.
    pub fn due_within(&self, until: Instant) -> Vec<GrantRef> {
        self.lock()
            .iter_mut()
            .filter(|(_, w)| w.parked && w.next.is_some_and(|n| n <= until))
            .map(|(g, w)| {
                w.parked = false;
                g.clone()
            })
            .collect()
    }

    /// The delay before the next retry of a grant whose decision asked for one after `wait`:
    /// doubled for each retry in a row, capped at [`MAX_BACKOFF`] (or `wait`, if Azure asked for
    /// longer). `None` (nothing failed) resets the count.
    pub fn backoff(&self, grant: &GrantRef, wait: Option<Duration>) -> Option<Duration> {
        let mut map = self.lock();
        let w = map.entry(grant.clone()).or_default();
        let Some(wait) = wait else {
            w.retries = 0;
            return None;
        };
        let factor = 2u32.saturating_pow(w.retries.min(16));
        w.retries = w.retries.saturating_add(1);
        Some(wait.saturating_mul(factor).min(MAX_BACKOFF.max(wait)))
    }

    /// Something outside the grant changed for it (an object of its lease vanished): look now.
    pub fn poke(&self, grant: &GrantRef) {
        if let Some(w) = self.lock().get_mut(grant) {
            w.next = None;
            w.parked = false;
        }
    }

    /// How long to stay away from a grant whose only news is our own last write: `Some` when
    /// the cached copy is the version we wrote, no policy changed since, and the decision asked
    /// to come back later than `now`.
    pub fn quiet_for(
        &self,
        grant: &GrantRef,
        cached: &AccessGrant,
        epoch: u64,
        now: Instant,
    ) -> Option<Quiet> {
        let map = self.lock();
        let w = map.get(grant)?;
        let next = w.next?;
        let ours = w.rv.as_deref()?;
        (cached.resource_version().as_deref() == Some(ours) && w.epoch == epoch && next > now).then(
            || Quiet {
                wait: next - now,
                lease_end: w.next_is_end,
            },
        )
    }

    pub fn forget(&self, grant: &GrantRef) {
        self.lock().remove(grant);
    }

    /// True when our last write of `grant` is newer than the cached copy (or their order
    /// cannot be told): read it again before acting.
    pub fn fresher_than_cache(&self, grant: &GrantRef, cached: &AccessGrant) -> bool {
        let Some(ours) = self.lock().get(grant).and_then(|w| w.rv.clone()) else {
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

    fn gref(name: &str) -> GrantRef {
        GrantRef::new("ns", name)
    }

    #[test]
    fn retries_back_off_exponentially_to_a_cap_and_reset_on_success() {
        let w = WrittenVersions::default();
        let g = gref("g");
        let two = Some(Duration::from_secs(2));
        let waits: Vec<u64> = (0..7)
            .filter_map(|_| w.backoff(&g, two))
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(w.backoff(&g, None), None, "nothing failed");
        assert_eq!(w.backoff(&g, two), two, "reset after a success");
        // Azure asked for longer than the cap: Azure wins.
        let long = Some(Duration::from_secs(120));
        assert_eq!(w.backoff(&g, long), long);
    }

    fn grant(rv: &str) -> AccessGrant {
        let mut g = AccessGrant::new("a", Default::default());
        g.metadata.resource_version = Some(rv.into());
        g
    }

    #[test]
    fn a_cache_older_than_our_write_is_read_again() {
        let w = WrittenVersions::default();
        let r = gref("a");
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

    #[test]
    fn our_own_write_is_not_news_until_the_decision_s_time() {
        let w = WrittenVersions::default();
        let r = gref("a");
        let t = Instant::now();
        w.record(&r, &grant("7"));
        w.settle(&r, Some(Next::at(t + Duration::from_secs(2))), 1);
        assert_eq!(
            w.quiet_for(&r, &grant("7"), 1, t),
            Some(Quiet {
                wait: Duration::from_secs(2),
                lease_end: false
            })
        );
        assert_eq!(
            w.quiet_for(&r, &grant("8"), 1, t),
            None,
            "someone else wrote"
        );
        assert_eq!(w.quiet_for(&r, &grant("7"), 2, t), None, "a policy changed");
        assert_eq!(
            w.quiet_for(&r, &grant("7"), 1, t + Duration::from_secs(3)),
            None,
            "time is up"
        );
        w.poke(&r);
        assert_eq!(w.quiet_for(&r, &grant("7"), 1, t), None, "poked");
    }

    #[test]
    fn a_parked_grant_is_due_once_its_look_comes_within_the_horizon() {
        let w = WrittenVersions::default();
        let r = gref("a");
        let t = Instant::now();
        let month = Duration::from_secs(30 * 24 * 3600);
        w.settle(&r, Some(Next::at(t + month)), 1);
        assert!(
            w.due_within(t + month).is_empty(),
            "not parked: a timer holds it"
        );
        w.park(&r);
        assert!(w.due_within(t + month - Duration::from_secs(1)).is_empty());
        assert_eq!(w.due_within(t + month), std::slice::from_ref(&r));
        assert!(w.due_within(t + month).is_empty(), "returned once");
        // A new decision replaces the parked look.
        w.park(&r);
        w.settle(&r, Some(Next::at(t + month)), 1);
        assert!(w.due_within(t + month).is_empty());
        // Nothing to look at: nothing to park.
        w.settle(&r, None, 1);
        w.park(&r);
        assert!(w.due_within(t + month).is_empty());
    }
}
