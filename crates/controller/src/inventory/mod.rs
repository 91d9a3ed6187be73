//! What the operator knows of Azure and of its own leases, kept in memory so steady state costs
//! no ARM reads: role assignments listed once per subscription per sweep, FICs per identity,
//! updated by every write the operator makes; and which grants claim which Azure object.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use lapse_api::lease::{
    AssignmentSchedule, AzureView, Holder, ObjectKey, ObjectObservation, Observed, recorded_objects,
};
use lapse_api::v1alpha1::{AccessGrantStatus, GrantPhase, ObjectState};

mod load;

pub use crate::grant_ref::GrantRef;
pub use load::{Lister, assignment_key, known_assignment, owns_assignment, schedules};

/// How a grant holds an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// A live lease needs it: nobody else may delete it.
    Live,
    /// An ending lease is deleting it: the sweep leaves it to that lease.
    Ending,
    /// A live lease uses someone else's object for its tuple (`Standing`): it keeps nothing
    /// alive, but the sweep looks for it, and when it is gone the lease creates its own.
    Uses,
}

/// One Azure object the inventory knows of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    /// Resource ID (role assignments, ARM FICs) or Graph path (application FICs).
    pub id: String,
    /// This owner's (by derived name, or for a PIM-made assignment by the name of the request
    /// that shaped its schedule).
    pub owned: bool,
    /// A role assignment made through PIM: its schedule.
    pub schedule: Option<AssignmentSchedule>,
    /// What an object someone else holds says of its holder (`owned` false).
    pub holder: Holder,
}

/// Which part of Azure a key lives in: the unit the inventory lists at once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Partition {
    /// Role assignments of one subscription (lowercase ID) or management group scope.
    RoleAssignments(String),
    /// FICs of one identity or application (the target key).
    Fics(String),
}

impl Partition {
    pub fn of(key: &ObjectKey) -> Self {
        match key {
            ObjectKey::RoleAssignment { scope, .. } => {
                Self::RoleAssignments(assignment_partition(scope))
            }
            ObjectKey::Fic { target, .. } => Self::Fics(target.clone()),
        }
    }
}

/// The listing unit of a role assignment scope (lowercase): its subscription, or the management
/// group for management group scopes.
pub fn assignment_partition(scope_key: &str) -> String {
    let mut parts = scope_key.trim_start_matches('/').split('/');
    match (parts.next(), parts.next()) {
        (Some("subscriptions"), Some(sub)) => format!("/subscriptions/{sub}"),
        _ => scope_key.to_owned(),
    }
}

#[derive(Debug, Default)]
struct PartitionState {
    loaded_at: Option<Instant>,
    objects: HashMap<ObjectKey, Known>,
    /// Objects of the last listing that carry this cluster's name but another owner's identity.
    twins: usize,
}

#[derive(Debug, Default)]
struct State {
    partitions: HashMap<Partition, PartitionState>,
    /// Our own writes made while a read was in flight: a read that started before one of them
    /// is older news. Forgotten once no read that started before them is left (they were kept
    /// ten minutes, about 0.5 KiB per lease activated in that time; docs/performance.md).
    writes: HashMap<ObjectKey, (Instant, Option<Known>)>,
    /// When each read of Azure in flight started (listings and single reads), counted.
    reads: BTreeMap<Instant, usize>,
    /// key -> grants claiming it: almost always one, so a list (a map per key cost about
    /// 250 bytes per live lease; docs/performance.md).
    claims: HashMap<ObjectKey, Vec<(GrantRef, Claim)>>,
    /// grant -> keys it claims (to replace a grant's claims in one go).
    by_grant: HashMap<GrantRef, Vec<ObjectKey>>,
    /// Grants whose claims this process set from a status it wrote itself: fresher than the
    /// watch cache, which may lag behind our own status writes.
    reconciled: HashSet<GrantRef>,
}

/// Shared, synchronous, short critical sections only (never held across an await).
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    state: Arc<Mutex<State>>,
}

/// A read of Azure in flight ([`Inventory::begin_read`]).
#[derive(Debug)]
pub struct Read {
    inventory: Inventory,
    started: Instant,
}

impl Drop for Read {
    fn drop(&mut self) {
        let mut st = self.inventory.lock();
        if let Some(n) = st.reads.get_mut(&self.started) {
            *n -= 1;
            if *n == 0 {
                st.reads.remove(&self.started);
            }
        }
        // A write is news only for reads that started before it.
        match st.reads.keys().next().copied() {
            Some(oldest) => st.writes.retain(|_, (at, _)| *at >= oldest),
            None => st.writes.clear(),
        }
        if st.writes.capacity() > 4 * st.writes.len().max(16) {
            st.writes.shrink_to_fit();
        }
    }
}

impl Inventory {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of plain maps; the
        // data is still usable and the next listing replaces it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn is_loaded(&self, p: &Partition) -> bool {
        self.lock()
            .partitions
            .get(p)
            .is_some_and(|s| s.loaded_at.is_some())
    }

    /// A read of Azure starts: until the returned [`Read`] is dropped, our own writes are
    /// remembered so that what it finds cannot undo them.
    pub fn begin_read(&self) -> Read {
        let started = Instant::now();
        *self.lock().reads.entry(started).or_default() += 1;
        Read {
            inventory: self.clone(),
            started,
        }
    }

    /// Replaces a partition with what `read`, a listing, found. Our own writes made after it
    /// started win over it: the listing cannot have seen them, and believing it would look
    /// like drift (and cost a second PUT).
    pub fn replace(
        &self,
        p: Partition,
        mut objects: HashMap<ObjectKey, Known>,
        twins: usize,
        read: &Read,
    ) {
        let listed_at = read.started;
        let mut st = self.lock();
        for (key, (at, known)) in &st.writes {
            if *at >= listed_at && Partition::of(key) == p {
                match known {
                    Some(k) => objects.insert(key.clone(), k.clone()),
                    None => objects.remove(key),
                };
            }
        }
        st.partitions.insert(
            p,
            PartitionState {
                loaded_at: Some(listed_at),
                objects,
                twins,
            },
        );
    }

    /// Records the outcome of one of our own writes.
    pub fn record(&self, key: &ObjectKey, known: Option<Known>) {
        let mut st = self.lock();
        // Only a read already in flight can bring older news of it.
        if !st.reads.is_empty() {
            st.writes
                .insert(key.clone(), (Instant::now(), known.clone()));
        }
        let part = st.partitions.entry(Partition::of(key)).or_default();
        match known {
            Some(k) => {
                part.objects.insert(key.clone(), k);
            }
            None => {
                part.objects.remove(key);
            }
        }
    }

    /// Records what `read` found of `key` (`None`: nothing), unless one of our own writes of
    /// it came after the read started. Unlike [`Self::record`], not one of our writes.
    pub fn observe(&self, key: &ObjectKey, known: Option<Known>, read: &Read) {
        let listed_at = read.started;
        let mut st = self.lock();
        if st.writes.get(key).is_some_and(|(at, _)| *at >= listed_at) {
            return;
        }
        let Some(part) = st
            .partitions
            .get_mut(&Partition::of(key))
            .filter(|p| p.loaded_at.is_some())
        else {
            return;
        };
        match known {
            Some(k) => part.objects.insert(key.clone(), k),
            None => part.objects.remove(key),
        };
    }

    /// Of these keys, those a loaded listing does not show. ARM pages a list by continuation
    /// token while others delete, so a listing can miss an object that exists: a live lease
    /// reads these again before it repairs what only looks gone.
    pub fn unlisted(&self, keys: &[ObjectKey]) -> Vec<ObjectKey> {
        let st = self.lock();
        keys.iter()
            .filter(|k| {
                st.partitions
                    .get(&Partition::of(k))
                    .is_some_and(|p| p.loaded_at.is_some() && !p.objects.contains_key(*k))
            })
            .cloned()
            .collect()
    }

    /// Of these keys, those held by someone else whose holder is due a look now (see
    /// [`Holder::due`]).
    pub fn due_holders(
        &self,
        keys: &[ObjectKey],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<ObjectKey> {
        let st = self.lock();
        keys.iter()
            .filter(|k| {
                st.partitions
                    .get(&Partition::of(k))
                    .and_then(|p| p.objects.get(*k))
                    .is_some_and(|o| !o.owned && o.holder.due(now))
            })
            .cloned()
            .collect()
    }

    /// Builds the core's view of these keys for one grant. Keys in unloaded partitions stay
    /// unknown, so the core neither creates nor trusts them.
    pub fn view(&self, keys: &[ObjectKey], grant: &GrantRef) -> AzureView {
        let st = self.lock();
        let mut view = AzureView::default();
        for key in keys {
            let needed_by_other_lease = st.claims.get(key).is_some_and(|c| {
                c.iter()
                    .any(|(g, claim)| g != grant && *claim == Claim::Live)
            });
            let (observed, schedule, holder) = match st.partitions.get(&Partition::of(key)) {
                Some(p) if p.loaded_at.is_some() => match p.objects.get(key) {
                    Some(k) => (
                        Observed::Present {
                            owned: k.owned,
                            id: Some(k.id.clone()),
                        },
                        k.schedule,
                        k.holder,
                    ),
                    None => (Observed::Absent, None, Holder::default()),
                },
                _ => (Observed::Unknown, None, Holder::default()),
            };
            view.objects.insert(
                key.clone(),
                ObjectObservation {
                    observed,
                    needed_by_other_lease,
                    schedule,
                    holder,
                },
            );
        }
        view
    }

    /// Replaces the claims of one grant with those its status implies.
    pub fn set_claims(&self, grant: &GrantRef, status: Option<&AccessGrantStatus>) {
        let mut st = self.lock();
        match status {
            Some(_) => st.reconciled.insert(grant.clone()),
            None => st.reconciled.remove(grant),
        };
        Self::replace_claims(&mut st, grant, status);
    }

    /// Whether a reconcile of this process has set this grant's claims (from a status it wrote).
    pub fn reconciled(&self, grant: &GrantRef) -> bool {
        self.lock().reconciled.contains(grant)
    }

    /// Claims from the watch cache, for grants no reconcile of this process has written yet (at
    /// start-up, before the first reconcile). A grant we reconciled keeps the claims of the
    /// status we wrote: the cache may not have seen that write yet.
    pub fn seed_claims(&self, grant: &GrantRef, status: Option<&AccessGrantStatus>) {
        let mut st = self.lock();
        if !st.reconciled.contains(grant) {
            Self::replace_claims(&mut st, grant, status);
        }
    }

    fn replace_claims(st: &mut State, grant: &GrantRef, status: Option<&AccessGrantStatus>) {
        let claims = status.map(claims_of).unwrap_or_default();
        if let Some(old) = st.by_grant.remove(grant) {
            for k in old {
                if let Some(c) = st.claims.get_mut(&k) {
                    c.retain(|(g, _)| g != grant);
                    if c.is_empty() {
                        st.claims.remove(&k);
                    }
                }
            }
        }
        if claims.is_empty() {
            return;
        }
        let keys: Vec<ObjectKey> = claims.iter().map(|(k, _)| k.clone()).collect();
        for (k, claim) in claims {
            let claimants = st.claims.entry(k).or_default();
            match claimants.iter_mut().find(|(g, _)| g == grant) {
                Some((_, c)) => *c = claim,
                None => {
                    // Room for exactly one more: a first push would make room for four, and
                    // almost every object has one claimant (docs/performance.md).
                    claimants.reserve_exact(1);
                    claimants.push((grant.clone(), claim));
                }
            }
        }
        st.by_grant.insert(grant.clone(), keys);
    }

    /// Owned objects of a partition that no grant claims: the sweep's candidates.
    pub fn unclaimed_owned(&self, p: &Partition) -> Vec<(ObjectKey, Known)> {
        let st = self.lock();
        let Some(part) = st.partitions.get(p) else {
            return Vec::new();
        };
        part.objects
            .iter()
            .filter(|(k, v)| v.owned && !keeps_alive(&st, k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Drops the claims of grants not in `live` (deleted without our finalizer).
    pub fn retain_grants(&self, live: &HashSet<GrantRef>) {
        let gone: Vec<GrantRef> = {
            let st = self.lock();
            st.by_grant
                .keys()
                .chain(st.reconciled.iter())
                .filter(|g| !live.contains(g))
                .cloned()
                .collect()
        };
        for g in gone {
            self.set_claims(&g, None);
        }
    }

    /// How many of our writes are remembered.
    #[cfg(test)]
    fn remembered_writes(&self) -> usize {
        self.lock().writes.len()
    }

    /// Twin objects (another operator's, under this cluster's name) in the latest listings.
    pub fn twins(&self) -> usize {
        self.lock().partitions.values().map(|p| p.twins).sum()
    }

    /// Grants holding a live claim on an object of `p` (theirs, or someone else's they use)
    /// that the latest listing of `p` does not show: their access vanished behind their back
    /// and they need a look now (to create their own, for one they used).
    pub fn live_claims_missing(&self, p: &Partition) -> Vec<GrantRef> {
        let st = self.lock();
        let Some(part) = st.partitions.get(p).filter(|ps| ps.loaded_at.is_some()) else {
            return Vec::new();
        };
        let mut out: Vec<GrantRef> = st
            .claims
            .iter()
            .filter(|(k, _)| Partition::of(k) == *p && !part.objects.contains_key(*k))
            .flat_map(|(_, grants)| {
                grants
                    .iter()
                    .filter(|(_, c)| matches!(c, Claim::Live | Claim::Uses))
                    .map(|(g, _)| g.clone())
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The PIM schedule the inventory holds for a key, if any.
    pub fn schedule_of(&self, key: &ObjectKey) -> Option<AssignmentSchedule> {
        self.lock()
            .partitions
            .get(&Partition::of(key))
            .and_then(|p| p.objects.get(key))
            .and_then(|k| k.schedule)
    }

    /// Whether a lease keeps this object alive (a claim other than [`Claim::Uses`]).
    pub fn is_claimed(&self, key: &ObjectKey) -> bool {
        keeps_alive(&self.lock(), key)
    }

    /// The partitions worth sweeping: those a grant claims an object in, and those holding an
    /// object of ours. A partition that has neither (an identity no grant uses) is not listed
    /// again, which keeps the steady-state cost of the sweep to the partitions in use.
    pub fn partitions(&self) -> HashSet<Partition> {
        let st = self.lock();
        st.partitions
            .iter()
            .filter(|(_, ps)| ps.objects.values().any(|k| k.owned))
            .map(|(p, _)| p.clone())
            .chain(st.claims.keys().map(Partition::of))
            .collect()
    }
}

/// Whether a lease keeps this object alive: a claim other than [`Claim::Uses`].
fn keeps_alive(st: &State, key: &ObjectKey) -> bool {
    st.claims
        .get(key)
        .is_some_and(|c| c.iter().any(|(_, c)| *c != Claim::Uses))
}

/// The claims a grant's status implies. Only a status the operator sealed may be passed here:
/// a claim (but [`Claim::Uses`]) keeps an object alive.
pub fn claims_of(status: &AccessGrantStatus) -> Vec<(ObjectKey, Claim)> {
    let claim = match status.phase {
        GrantPhase::Activating | GrantPhase::Active => Claim::Live,
        // A terminal lease may still owe a delete (an object that reappeared): it claims it as
        // ending so the sweep does not delete it twice.
        GrantPhase::Revoking | GrantPhase::Expired | GrantPhase::Revoked | GrantPhase::Failed => {
            Claim::Ending
        }
        GrantPhase::Pending
        | GrantPhase::PendingApproval
        | GrantPhase::Scheduled
        | GrantPhase::Denied => return Vec::new(),
    };
    let holds = |s: ObjectState| match claim {
        Claim::Live => matches!(s, ObjectState::Pending | ObjectState::Present),
        Claim::Ending => s.owes_delete(),
        Claim::Uses => false,
    };
    recorded_objects(status)
        .into_iter()
        .filter_map(|(k, s)| match s {
            _ if holds(s) => Some((k, claim)),
            ObjectState::Standing if claim == Claim::Live => Some((k, Claim::Uses)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
