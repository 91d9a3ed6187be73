//! Synchronized expiry (docs/architecture.md, "Synchronized expiry"): when more leases of one
//! subscription end together than ARM's delete budget deletes in time, their deletes start
//! early. The lease clock knows every live lease's end and what it will delete where (its
//! [`Footprint`]); [`EarlyEnds`] holds the plan the core's `schedule_early_ends` makes of
//! them, and the wakes it owes the revocation lane. The loop that replans and wakes is in the
//! crate root (`wake_early`); the lane asks [`EarlyEnds::due`] and the core ends the lease.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use lapse_api::lease::{DeleteBudget, Deletes, EarlyEnd, schedule_early_ends};
use lapse_api::v1alpha1::AccessGrantStatus;

use crate::grant_ref::GrantRef;

/// Which ARM delete budget an object's delete draws from: its subscription's GUID, or
/// [`TENANT`] for management-group scopes. A `Uuid` (16 bytes, byte-aligned) keeps the lease
/// clock's entry for every grant small.
pub type BudgetKey = uuid::Uuid;

/// Deletes above any subscription (a management-group scope): ARM's tenant-level budget. The
/// nil GUID is no subscription's.
pub const TENANT: BudgetKey = uuid::Uuid::nil();

/// What a live lease will delete when it ends, by budget: a count per subscription. Role
/// assignments made through PIM (Azure removes them) and app-registration credentials
/// (Microsoft Graph, not ARM) draw on no ARM delete budget and are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Footprint {
    #[default]
    None,
    /// Nearly every lease: its objects in one subscription.
    One([(BudgetKey, u16); 1]),
    Many(Box<[(BudgetKey, u16)]>),
}

impl Footprint {
    /// The deletes `st` still owes, by budget.
    pub fn of(st: &AccessGrantStatus) -> Footprint {
        let roles = st
            .role_assignments
            .iter()
            .filter(|r| r.state.owes_delete() && r.schedule.is_none())
            .map(|r| budget_of(&r.scope));
        let fic = st
            .federated_credential
            .as_ref()
            .filter(|f| f.state.owes_delete())
            .and_then(|f| f.id.as_deref())
            .filter(|id| !id.starts_with("/applications/"))
            .map(budget_of);
        let mut counts: Vec<(BudgetKey, u16)> = Vec::new();
        for key in roles.chain(fic).flatten() {
            match counts.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n = n.saturating_add(1),
                None => counts.push((key, 1)),
            }
        }
        match counts.as_slice() {
            [] => Footprint::None,
            [one] => Footprint::One([*one]),
            _ => Footprint::Many(counts.into_boxed_slice()),
        }
    }

    pub fn parts(&self) -> &[(BudgetKey, u16)] {
        match self {
            Footprint::None => &[],
            Footprint::One(part) => part,
            Footprint::Many(parts) => parts,
        }
    }
}

/// The budget a delete at `scope_or_id` (an ARM scope or resource ID) draws from, as the Azure
/// client charges it: the ID's subscription, or the tenant when it has none. `None` when it
/// does not parse or its subscription is no GUID (nothing to plan with).
fn budget_of(scope_or_id: &str) -> Option<BudgetKey> {
    let id = lapse_api::arm::ArmId::parse(scope_or_id).ok()?;
    match id.subscription() {
        Some(sub) => uuid::Uuid::try_parse(sub).ok().filter(|k| *k != TENANT),
        None => Some(TENANT),
    }
}

/// How a budget is named in a lease's status message.
fn budget_name(key: BudgetKey) -> String {
    if key == TENANT {
        "the tenant's management-group scopes".to_owned()
    } else {
        format!("subscription {key}")
    }
}

/// The current plan: the leases whose deletes start early, and the wakes owed for them.
#[derive(Debug)]
pub struct EarlyEnds {
    budget: DeleteBudget,
    state: Mutex<PlanState>,
}

#[derive(Debug, Default)]
struct PlanState {
    plan: HashMap<GrantRef, EarlyEnd<BudgetKey>>,
    /// Wakes owed: planned starts the revocation lane has not been woken for.
    pending: BTreeSet<(DateTime<Utc>, GrantRef)>,
    /// When each planned lease was last woken: a start moved later than that is owed again.
    woken: HashMap<GrantRef, DateTime<Utc>>,
}

impl EarlyEnds {
    /// A plan against ARM's per-subscription delete bucket (`capacity` at once, then
    /// `refill_per_second`), less `headroom` (a share, 0 to 0.9) kept for the deletes no plan
    /// foresees: a grant revoked or deleted, the sweep, another operator in the tenant.
    pub fn new(capacity: u32, refill_per_second: f64, headroom: f64) -> Self {
        let keep = 1.0 - headroom.clamp(0.0, 0.9);
        EarlyEnds {
            budget: DeleteBudget {
                burst: (f64::from(capacity) * keep).floor(),
                per_second: refill_per_second * keep,
            },
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PlanState> {
        // Plain maps: a panic elsewhere leaves them usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Plans again from every live lease's deletes (the lease clock's). Returns how many
    /// leases start early.
    pub fn replan(&self, deletes: Vec<Deletes<GrantRef, BudgetKey>>) -> usize {
        let plan = schedule_early_ends(deletes, self.budget);
        let mut st = self.lock();
        let PlanState { pending, woken, .. } = &mut *st;
        woken.retain(|g, _| plan.contains_key(g));
        pending.clear();
        for (g, e) in &plan {
            if woken.get(g).is_none_or(|at| *at < e.starts_at) {
                pending.insert((e.starts_at, g.clone()));
            }
        }
        let n = plan.len();
        st.plan = plan;
        n
    }

    /// Whether any lease starts early (most of the time none does).
    pub fn any(&self) -> bool {
        !self.lock().plan.is_empty()
    }

    /// The next planned start not yet woken for.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.lock().pending.first().map(|(at, _)| *at)
    }

    /// The leases whose planned start has come, each once (until a replan moves its start
    /// past the moment it was woken).
    pub fn take_due(&self, now: DateTime<Utc>) -> Vec<GrantRef> {
        let mut st = self.lock();
        let mut due = Vec::new();
        while let Some((at, _)) = st.pending.first() {
            if *at > now {
                break;
            }
            if let Some((_, g)) = st.pending.pop_first() {
                st.woken.insert(g.clone(), now);
                due.push(g);
            }
        }
        due
    }

    /// Whether the plan ends `grant`'s lease now (its planned start has come, for the lease's
    /// end as recorded).
    pub fn due(&self, grant: &GrantRef, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.lock()
            .plan
            .get(grant)
            .is_some_and(|e| e.for_end == expires_at && now >= e.starts_at)
    }

    /// The plan for `grant`, as the core reads it.
    pub fn for_grant(&self, grant: &GrantRef) -> Option<EarlyEnd<String>> {
        self.lock().plan.get(grant).map(|e| EarlyEnd {
            starts_at: e.starts_at,
            for_end: e.for_end,
            budget: budget_name(e.budget),
            crowd: e.crowd,
            crowd_until: e.crowd_until,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use lapse_api::v1alpha1::{
        AssignmentSchedule, FederatedCredentialStatus, ObjectState, RoleAssignmentStatus,
    };

    use super::*;

    const SUB_A: &str = "00000000-0000-0000-0000-0000000000aa";
    const SUB_B: &str = "00000000-0000-0000-0000-0000000000bb";

    fn role(scope: &str, state: ObjectState) -> RoleAssignmentStatus {
        RoleAssignmentStatus {
            role: "Reader".into(),
            scope: scope.into(),
            state,
            ..Default::default()
        }
    }

    fn key(sub: &str) -> BudgetKey {
        uuid::Uuid::parse_str(sub).unwrap_or_default()
    }

    #[test]
    fn a_footprint_counts_the_arm_deletes_a_lease_owes_per_subscription() {
        let mut st = AccessGrantStatus {
            role_assignments: vec![
                role(&format!("/subscriptions/{SUB_A}"), ObjectState::Present),
                role(
                    &format!("/SUBSCRIPTIONS/{}/resourceGroups/rg", SUB_A.to_uppercase()),
                    ObjectState::Pending,
                ),
                role(
                    &format!("/subscriptions/{SUB_B}/resourceGroups/x"),
                    ObjectState::Deleted,
                ),
            ],
            federated_credential: Some(Box::new(FederatedCredentialStatus {
                id: Some(format!(
                    "/subscriptions/{SUB_B}/resourceGroups/id/providers/\
                     Microsoft.ManagedIdentity/userAssignedIdentities/mi/\
                     federatedIdentityCredentials/f"
                )),
                state: ObjectState::Present,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            Footprint::of(&st).parts(),
            &[(key(SUB_A), 2), (key(SUB_B), 1)],
            "deleted objects owe nothing; subscriptions compare as GUIDs"
        );
        // PIM removes its own; an app registration's credential is Graph's; a management
        // group's assignment draws on the tenant's budget.
        st.role_assignments[0].schedule = Some(AssignmentSchedule {
            starts_at: Utc::now(),
            ends_at: Utc::now(),
        });
        st.role_assignments[1] = role(
            "/providers/Microsoft.Management/managementGroups/mg",
            ObjectState::Present,
        );
        if let Some(f) = st.federated_credential.as_mut() {
            f.id = Some("/applications/1f0e/federatedIdentityCredentials/f".into());
        }
        assert_eq!(Footprint::of(&st), Footprint::One([(TENANT, 1)]));
        assert_eq!(
            Footprint::of(&AccessGrantStatus::default()),
            Footprint::None
        );
    }

    #[test]
    fn each_planned_start_wakes_the_lane_once() {
        let early = EarlyEnds::new(200, 10.0, 0.1);
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let deletes: Vec<_> = (0..400)
            .map(|i| Deletes {
                lease: GrantRef::new("ns", format!("g{i:03}")),
                ends_at: t,
                budget: key(SUB_A),
                count: 1,
            })
            .collect();
        // With 10 % headroom: 180 at once, 9/s: 220 start early, the first 24.4 s before.
        assert_eq!(early.replan(deletes.clone()), 220 - 8);
        let first = early.next_wake().unwrap_or(t);
        // 220 / 9 s, each step rounded up to the microsecond.
        assert!((24_444..=24_445).contains(&(t - first).num_milliseconds()));
        let woken = early.take_due(first + TimeDelta::seconds(5));
        assert!(!woken.is_empty());
        assert!(
            early.take_due(first + TimeDelta::seconds(5)).is_empty(),
            "once"
        );
        // A replan with the same leases owes none of them again.
        early.replan(deletes);
        assert!(early.take_due(first + TimeDelta::seconds(5)).is_empty());
        let g = &woken[0];
        assert!(early.due(g, t, first + TimeDelta::seconds(5)));
        assert!(!early.due(g, t + TimeDelta::minutes(1), first + TimeDelta::seconds(5)));
        let plan = early.for_grant(g);
        assert_eq!(
            plan.map(|p| p.budget),
            Some(format!("subscription {SUB_A}"))
        );
        // Once the lease left the plan (its deletes done), nothing is owed or due.
        early.replan(Vec::new());
        assert!(!early.due(g, t, t));
        assert_eq!(early.next_wake(), None);
    }
}
