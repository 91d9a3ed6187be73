//! Scenario tests and property tests of the lease decision core.
//!
//! The property tests drive the core the way the controller does (decide, persist, act, observe,
//! decide again) against a model of Azure with injected failures, and check the invariants of
//! docs/architecture.md ("Invariants") that the core owns after every single decision.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::policy::{NamedPolicy, PolicyContext};
use crate::role::RoleCatalogue;
use crate::v1alpha1::*;
use crate::validate::validate_policy;

const SUB: &str = "00000000-0000-0000-0000-0000000000aa";
const PRINCIPAL: &str = "11111111-2222-3333-4444-555555555555";

/// `metadata.uid` of the grant in these tests.
const GRANT_UID: &str = "0b4f6c62-2a4e-4f8e-9d3c-6f1b2e8a9c01";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 2, 0, 0)
        .single()
        .unwrap_or_default()
}

fn owner() -> crate::naming::Owner {
    crate::naming::Owner::new("prod-west", "5b3c6f0e-8a41-4d0c-9a7e-2f6f1c0d9e11", None).unwrap()
}

/// The operator's own principal in these tests.
const OPERATOR: &str = "99999999-2222-3333-4444-555555555555";

fn settings() -> CoreSettings {
    CoreSettings {
        owner: owner(),
        operator_principal: Some(Uuid::parse_str(OPERATOR).unwrap()),
        oidc_issuer: "https://oidc.example.test/cluster".into(),
        overdue_after: TimeDelta::seconds(30),
        retry_after: Duration::from_secs(5),
        authorization_grace: TimeDelta::minutes(10),
        residual: crate::lease::ResidualBounds::default(),
        pim: crate::lease::PimSettings::default(),
    }
}

fn mi() -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/payments-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/backup"
    )
}

fn storage_scope() -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/payments-rg/providers/Microsoft.Storage/storageAccounts/acct"
    )
}

fn policy(max: &str) -> Vec<NamedPolicy> {
    let spec = AccessPolicySpec {
        namespaces: vec!["payments".into(), "team-*".into()],
        identities: vec![format!(
            "/subscriptions/{SUB}/resourceGroups/payments-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"
        )],
        roles: vec!["Reader".into(), "Storage Blob Data Reader".into()],
        scopes: vec![format!("/subscriptions/{SUB}/resourceGroups/payments-rg")],
        service_accounts: vec!["backup-*".into()],
        max_duration: max.into(),
        justification_pattern: Some("^[A-Z]+-[0-9]+".into()),
        ..Default::default()
    };
    vec![NamedPolicy {
        name: "payments".into(),
        rules: validate_policy(&spec).map_err(|e| e.to_string()),
    }]
}

fn spec(duration: Option<&str>, window: Option<Window>) -> AccessGrantSpec {
    AccessGrantSpec {
        identity: IdentityRef {
            managed_identity: Some(mi()),
            ..Default::default()
        },
        roles: vec![
            RoleRequest {
                role: "Storage Blob Data Reader".into(),
                scope: storage_scope(),
                condition: None,
            },
            RoleRequest {
                role: "Reader".into(),
                scope: format!("/subscriptions/{SUB}/resourceGroups/payments-rg"),
                condition: None,
            },
        ],
        federation: Some(Box::new(Federation {
            service_account: "backup-runner".into(),
            audience: DEFAULT_AUDIENCE.into(),
        })),
        duration: duration.map(Into::into),
        window: window.map(Box::new),
        justification: Some("OPS-1234 nightly backup".into()),
        revoked: false,
        requester: None,
        requester_groups: Vec::new(),
        break_glass: false,
    }
}

/// A model of Azure: objects by key, whether they carry our marker, and call counts.
#[derive(Clone, Debug, Default)]
struct AzureModel {
    objects: HashMap<ObjectKey, bool>,
    puts: HashMap<ObjectKey, u32>,
    deletes: HashMap<ObjectKey, u32>,
    /// Keys other leases hold.
    shared: Vec<ObjectKey>,
    /// The PIM schedules of PIM-made assignments: Azure removes them at their end.
    schedules: HashMap<ObjectKey, AssignmentSchedule>,
    /// What objects someone else holds say of their holder.
    holders: HashMap<ObjectKey, Holder>,
}

impl AzureModel {
    fn view(&self) -> AzureView {
        let objects = self
            .objects
            .iter()
            .map(|(k, owned)| {
                let obs = ObjectObservation {
                    observed: Observed::Present {
                        owned: *owned,
                        id: Some("standing".into()),
                    },
                    needed_by_other_lease: self.shared.contains(k),
                    schedule: self.schedules.get(k).copied(),
                    holder: self.holders.get(k).copied().unwrap_or_default(),
                };
                (k.clone(), obs)
            })
            .collect();
        AzureView {
            objects,
            complete: true,
        }
    }
}

/// One injected outcome for an Azure call.
#[derive(Clone, Debug)]
enum Fault {
    Ok,
    Retryable,
    Throttled,
    /// A create refused for good (deletes treat it as retryable: Azure never refuses a delete
    /// of ours for good in this model).
    Terminal,
    /// A create refused with `AuthorizationFailed` (the operator's role not there yet).
    Unauthorized,
    /// The call took effect but the answer was lost.
    LostAnswer,
    /// A management lock: creates go through, deletes are refused (`409 ScopeLocked`).
    Locked,
}

struct Harness {
    max_duration: TimeDelta,
    settings: CoreSettings,
    policies: Vec<NamedPolicy>,
    catalogue: RoleCatalogue,
    labels: BTreeMap<String, String>,
    identity: IdentityObservation,
    privileges: PrivilegeObservation,
    /// The management locks that apply to the grant's scopes and identity.
    locks: LockObservation,
    /// `metadata.creationTimestamp` of the grant.
    created: DateTime<Utc>,
    /// Live grants of the namespace per policy (other than this one).
    live: BTreeMap<String, u32>,
    /// The next decision reads a status someone else wrote (the controller's seal failed).
    tamper_next: std::cell::RefCell<Option<String>>,
    /// The AccessApprovals of the grant's namespace naming it.
    approvals: crate::approval::ApprovalView,
    /// `metadata.generation` of the grant.
    generation: i64,
    /// What the ticket checkers said.
    tickets: crate::ticket::TicketView,
    /// Usage ledger batches handed to the next decisions.
    usage: Vec<crate::usage::UsageDelta>,
    /// The controller's delete plan for the grant (synchronized expiry).
    early_end: Option<EarlyEnd<String>>,
}

impl Harness {
    fn new(max: &str) -> Self {
        Self {
            max_duration: crate::duration::LeaseDuration::parse(max)
                .unwrap()
                .to_chrono(),
            settings: settings(),
            policies: policy(max),
            catalogue: RoleCatalogue::builtin(),
            labels: BTreeMap::new(),
            identity: IdentityObservation::Resolved {
                principal_id: Uuid::parse_str(PRINCIPAL).unwrap(),
            },
            privileges: PrivilegeObservation::Known(Vec::new()),
            locks: LockObservation::Known(Vec::new()),
            created: t0(),
            live: BTreeMap::new(),
            tamper_next: std::cell::RefCell::new(None),
            approvals: crate::approval::ApprovalView {
                admission: Ok(()),
                decisions: Vec::new(),
            },
            generation: 1,
            tickets: crate::ticket::TicketView::default(),
            usage: Vec::new(),
            early_end: None,
        }
    }

    fn decide(
        &self,
        spec: &AccessGrantSpec,
        status: &AccessGrantStatus,
        deleting: bool,
        now: DateTime<Utc>,
        azure: &AzureView,
    ) -> Decision {
        // Every status in these runs is one the core wrote itself, so the controller's seal
        // would hold: an empty one is a new grant.
        let trust = match self.tamper_next.borrow_mut().take() {
            Some(detail) => StatusTrust::Tampered { detail },
            None if *status == AccessGrantStatus::default() => StatusTrust::Absent,
            None => StatusTrust::Sealed,
        };
        self.decide_trusting(spec, status, &trust, deleting, now, azure)
    }

    fn decide_trusting(
        &self,
        spec: &AccessGrantSpec,
        status: &AccessGrantStatus,
        trust: &StatusTrust,
        deleting: bool,
        now: DateTime<Utc>,
        azure: &AzureView,
    ) -> Decision {
        let input = LeaseInput {
            now,
            settings: &self.settings,
            grant: GrantView {
                namespace: "payments",
                name: "nightly",
                uid: GRANT_UID,
                generation: Some(self.generation),
                deleting,
                created_at: Some(self.created),
                spec,
                status,
                trust,
            },
            policy: PolicyContext {
                namespace: "payments",
                namespace_labels: &self.labels,
                policies: &self.policies,
                catalogue: &self.catalogue,
                privileges: &self.privileges,
                live_grants: Some(&self.live),
            },
            identity: &self.identity,
            privileges: &self.privileges,
            locks: &self.locks,
            azure,
            approvals: &self.approvals,
            tickets: &self.tickets,
            usage: &self.usage,
            early_end: self.early_end.as_ref(),
        };
        decide(&input)
    }

    /// One reconcile as the controller runs it: decide, act, observe, until no call is left.
    /// Every decision is checked against the invariants.
    fn reconcile(
        &self,
        azure: &mut AzureModel,
        spec: &AccessGrantSpec,
        status: &mut AccessGrantStatus,
        deleting: bool,
        now: DateTime<Utc>,
        faults: &mut impl Iterator<Item = Fault>,
    ) -> Decision {
        let mut view = azure.view();
        let mut last: Option<Decision> = None;
        let mut tampered = None;
        for _ in 0..8 {
            let d = self.decide(spec, status, deleting, now, &view);
            tampered = tampered.or(d.tampered.clone());
            check_invariants(self, spec, status, deleting, now, &view, &d, azure);
            *status = d.status.clone();
            let actions = d.actions.clone();
            last = Some(d);
            if actions.is_empty() {
                break;
            }
            for a in actions {
                let fault = faults.next().unwrap_or(Fault::Ok);
                let key = a.key().clone();
                if let Action::DeleteRoleAssignment {
                    schedule_start: Some(start),
                    ..
                } = &a
                {
                    // PIM refuses a removal within its minimum of the schedule's start.
                    let held = azure.schedules.get(&key).map_or(*start, |s| s.starts_at);
                    assert!(
                        now >= held + self.settings.pim.minimum,
                        "a PIM removal at {now} within the minimum of its start {held}"
                    );
                }
                if let Action::RescheduleRoleAssignment(r) = &a {
                    let outcome = match fault {
                        Fault::Ok => {
                            if let Some(s) = azure.schedules.get_mut(&key) {
                                s.ends_at = r.ends_at;
                            }
                            Observed::Present {
                                owned: true,
                                id: None,
                            }
                        }
                        _ => Observed::RescheduleFailed(Failure::Retryable {
                            message: "500 Internal Server Error".into(),
                        }),
                    };
                    view.set(key.clone(), outcome);
                    view.objects.entry(key.clone()).or_default().schedule =
                        azure.schedules.get(&key).copied();
                    continue;
                }
                if let Action::CreateRoleAssignment(RoleAssignmentPlan {
                    schedule: Some(schedule),
                    ..
                }) = &a
                    && matches!(fault, Fault::Ok | Fault::LostAnswer | Fault::Locked)
                    && !azure.objects.contains_key(&key)
                {
                    azure.schedules.insert(key.clone(), *schedule);
                }
                if a.is_delete() && matches!(fault, Fault::Ok | Fault::LostAnswer) {
                    azure.schedules.remove(&key);
                }
                let create = a.is_create();
                let outcome = match (&fault, create) {
                    (Fault::Locked, false) => Observed::DeleteFailed(Failure::Terminal {
                        code: "ScopeLocked".into(),
                        message: format!(
                            "The scope '{key:?}' cannot perform delete operation because following scope(s) are locked: '{}'. Please remove the lock and try again.",
                            locked_rg()
                        ),
                    }),
                    (Fault::Ok | Fault::LostAnswer | Fault::Locked, true) => {
                        azure.objects.entry(key.clone()).or_insert(true);
                        *azure.puts.entry(key.clone()).or_default() += 1;
                        if matches!(fault, Fault::Ok) {
                            Observed::Present {
                                owned: true,
                                id: None,
                            }
                        } else {
                            Observed::CreateFailed(Failure::Retryable {
                                message: "connection reset".into(),
                            })
                        }
                    }
                    (Fault::Ok | Fault::LostAnswer, false) => {
                        assert_ne!(
                            azure.objects.get(&key),
                            Some(&false),
                            "deleted an object that is not ours: {key:?}"
                        );
                        if azure.objects.remove(&key).is_some() {
                            *azure.deletes.entry(key.clone()).or_default() += 1;
                        }
                        if matches!(fault, Fault::Ok) {
                            Observed::Absent
                        } else {
                            Observed::DeleteFailed(Failure::Retryable {
                                message: "connection reset".into(),
                            })
                        }
                    }
                    (Fault::Terminal, true) => Observed::CreateFailed(Failure::Terminal {
                        code: "RoleAssignmentLimitExceeded".into(),
                        message: "No more role assignments can be created.".into(),
                    }),
                    (Fault::Unauthorized, true) => Observed::CreateFailed(Failure::Terminal {
                        code: "AuthorizationFailed".into(),
                        message: "The client does not have authorization to perform action \
                                  'Microsoft.Authorization/roleAssignments/write'"
                            .into(),
                    }),
                    (Fault::Retryable | Fault::Terminal | Fault::Unauthorized, c) => {
                        let f = Failure::Retryable {
                            message: "500 Internal Server Error".into(),
                        };
                        if c {
                            Observed::CreateFailed(f)
                        } else {
                            Observed::DeleteFailed(f)
                        }
                    }
                    (Fault::Throttled, c) => {
                        let f = Failure::Throttled {
                            retry_after: Duration::from_secs(3),
                            message: "429".into(),
                        };
                        if c {
                            Observed::CreateFailed(f)
                        } else {
                            Observed::DeleteFailed(f)
                        }
                    }
                };
                view.set(key.clone(), outcome);
                view.objects.entry(key.clone()).or_default().schedule =
                    azure.schedules.get(&key).copied();
            }
        }
        let mut out = last.unwrap();
        out.tampered = out.tampered.or(tampered);
        out
    }
}

/// Keys the status records for this lease.
fn recorded_keys(status: &AccessGrantStatus) -> Vec<ObjectKey> {
    let mut keys = Vec::new();
    if let Some(p) = status
        .principal_id
        .as_deref()
        .and_then(|p| Uuid::try_parse(p).ok())
    {
        keys.extend(
            status
                .role_assignments
                .iter()
                .filter_map(|e| recorded_role_assignment(&owner(), p, e))
                .map(|(k, _)| k),
        );
    }
    keys.extend(
        status
            .federated_credential
            .as_ref()
            .and_then(|f| recorded_fic(&owner(), f))
            .map(|(k, _)| k),
    );
    keys
}

#[allow(clippy::too_many_arguments)]
fn check_invariants(
    h: &Harness,
    spec: &AccessGrantSpec,
    before: &AccessGrantStatus,
    deleting: bool,
    now: DateTime<Utc>,
    view: &AzureView,
    d: &Decision,
    azure: &AzureModel,
) {
    let after = &d.status;
    let principal = match &h.identity {
        IdentityObservation::Resolved { principal_id } => Some(*principal_id),
        _ => None,
    };
    // Creates go to the resolved principal only, whatever a status says.
    for a in &d.actions {
        if let Action::CreateRoleAssignment(p) = a {
            assert_eq!(
                Some(p.principal_id),
                principal,
                "created for another principal"
            );
        }
    }
    // Deletes aim at this owner's derived names only, never at a name a status recorded.
    for a in &d.actions {
        match a {
            Action::DeleteRoleAssignment { key, name, .. } => {
                let ObjectKey::RoleAssignment {
                    principal_id,
                    role_guid,
                    scope,
                } = key
                else {
                    panic!("{key:?}");
                };
                let scope = crate::arm::ArmId::parse(scope).unwrap();
                assert_eq!(
                    *name,
                    owner().role_assignment_name(principal_id, role_guid, &scope)
                );
            }
            Action::DeleteFic { key, name, .. } => {
                let ObjectKey::Fic {
                    target, subject, ..
                } = key
                else {
                    panic!("{key:?}");
                };
                assert_eq!(*name, owner().fic_name(target, subject));
            }
            _ => {}
        }
    }
    // The lease never runs past its anchored start (creation or notBefore) plus maxDuration,
    // whatever the status claims.
    if let (Some(e), Ok(req)) = (after.expires_at, crate::validate::validate_grant(spec)) {
        let anchor = req.not_before.map_or(h.created, |b| b.max(h.created));
        assert!(
            e - anchor <= h.max_duration,
            "lease to {e} is longer than maxDuration from {anchor}"
        );
    }
    // With PIM, Azure's end of every assignment requested or moved is at most one grace after
    // the lease's end (or PIM's minimum after its start, which a lease too short for it is
    // denied before it could need).
    for a in &d.actions {
        let ends = match a {
            Action::CreateRoleAssignment(RoleAssignmentPlan {
                schedule: Some(s), ..
            }) => Some((s.ends_at, s.starts_at)),
            Action::RescheduleRoleAssignment(r) => Some((
                r.ends_at,
                azure.schedules.get(&r.key).map_or(now, |s| s.starts_at),
            )),
            _ => None,
        };
        if let Some((ends_at, starts_at)) = ends {
            let exp = after
                .expires_at
                .expect("a PIM request needs a recorded expiry");
            let pim = &h.settings.pim;
            assert!(
                ends_at <= (exp + pim.grace).max(starts_at + pim.minimum),
                "Azure would end an assignment at {ends_at}, past the lease's end {exp} and \
                 the grace: {a:?} before {:?}",
                before.expires_at
            );
        }
    }
    // Never a create at or after expiry.
    for _create in d.actions.iter().filter(|a| a.is_create()) {
        let exp = after.expires_at.expect("a create needs a recorded expiry");
        assert!(now < exp, "create at {now} with expiry {exp}");
        assert_eq!(
            after.phase,
            GrantPhase::Activating,
            "creates only while activating"
        );
    }
    // Terminal phases absorb (a status someone else wrote is not believed, terminal or not).
    if before.phase.is_terminal() && d.tampered.is_none() {
        assert_eq!(after.phase, before.phase, "terminal phase left");
    }
    // A revoked, expired, ended or deleted lease only ever deletes.
    let ending = before.phase.is_terminal()
        || before.phase == GrantPhase::Revoking
        || after.phase == GrantPhase::Revoking
        || after.phase.is_terminal()
        || spec.revoked
        || deleting;
    if ending {
        assert!(
            d.actions.iter().all(|a| !a.is_create()),
            "an ending lease created something: {:?}",
            d.actions
        );
    }
    // Deletes come first.
    if let Some(first_create) = d.actions.iter().position(Action::is_create) {
        assert!(
            d.actions[first_create..].iter().all(Action::is_create),
            "a delete queued behind a create"
        );
    }
    // Never Active unless every object is present, but a federated credential closed early
    // (`federation.closeEarly`), which is being or has been deleted while the role assignments
    // run to the end.
    if after.phase == GrantPhase::Active {
        let closing = after.federated_credential.as_ref().is_some_and(|f| {
            matches!(
                f.state,
                ObjectState::Deleting | ObjectState::Deleted | ObjectState::Released
            )
        });
        let mut keys = recorded_keys(after);
        if closing {
            keys.retain(|k| !matches!(k, ObjectKey::Fic { .. }));
        }
        assert!(!keys.is_empty());
        for k in keys {
            assert!(
                matches!(
                    view.get(&k).observed,
                    Observed::Present { .. } | Observed::RescheduleFailed(_)
                ),
                "Active with {k:?} not present"
            );
        }
        assert!(
            d.actions
                .iter()
                .all(|a| matches!(a, Action::RescheduleRoleAssignment(_))
                    || (closing && !a.is_create() && matches!(a.key(), ObjectKey::Fic { .. }))),
            "Active with calls other than closing federation or moving a PIM end: {:?}",
            d.actions
        );
    }
    // Every reason written is one of the vocabulary, used where it says (docs/api.md lists it).
    for e in &d.events {
        assert!(
            e.reason.is_event(),
            "Event reason {} is not an Event reason",
            e.reason
        );
    }
    for c in &after.conditions {
        assert!(
            Reason::from_name(&c.reason).is_some_and(Reason::is_condition),
            "{} condition reason {:?} is not a condition reason",
            c.type_,
            c.reason
        );
    }
    // Ready=True exactly while Active.
    let ready = find_condition(after, READY).map(|c| c.status);
    assert_eq!(
        ready == Some(ConditionStatus::True),
        after.phase == GrantPhase::Active
    );
    // kstatus reads the same story: never both Reconciling and Stalled; Ready means neither;
    // Denied and Failed are Stalled (a change is needed), Expired is not an error.
    let cond = |t: &str| find_condition(after, t).map(|c| c.status);
    let (reconciling, stalled) = (cond(RECONCILING), cond(STALLED));
    assert!(
        !(reconciling == Some(ConditionStatus::True) && stalled == Some(ConditionStatus::True)),
        "both Reconciling and Stalled in {:?}",
        after.phase
    );
    match after.phase {
        GrantPhase::Active | GrantPhase::Expired | GrantPhase::Revoked | GrantPhase::Scheduled => {
            assert_eq!(
                reconciling,
                Some(ConditionStatus::False),
                "{:?}",
                after.phase
            );
            assert_eq!(stalled, Some(ConditionStatus::False), "{:?}", after.phase);
        }
        GrantPhase::Denied | GrantPhase::Failed => {
            assert_eq!(stalled, Some(ConditionStatus::True), "{:?}", after.phase)
        }
        GrantPhase::Pending | GrantPhase::PendingApproval | GrantPhase::Activating => {
            assert_eq!(
                reconciling,
                Some(ConditionStatus::True),
                "{:?}",
                after.phase
            )
        }
        GrantPhase::Revoking => {}
    }
    // Extensions never exceed the policy's maxDuration.
    if let (Some(a), Some(e)) = (after.activated_at, after.expires_at) {
        assert!(
            e - a <= h.max_duration,
            "lease {} exceeds maxDuration",
            e - a
        );
        // expiresAt only moves by an extension or shortening the spec asked for.
        if let (Some(b), Some(be)) = (before.activated_at, before.expires_at) {
            assert_eq!(a, b, "activatedAt moved");
            if e != be {
                assert!(spec.duration.is_some() || spec.window.is_some());
            }
        }
    }
    // Never touch what is not ours; never remove what another lease shares (moving a PIM end
    // later keeps it for them too).
    for a in &d.actions {
        if let Action::RescheduleRoleAssignment(r) = a {
            assert!(
                r.extend || !view.get(a.key()).needed_by_other_lease,
                "a shared assignment's PIM end moved earlier"
            );
            continue;
        }
        assert_ne!(
            azure.objects.get(a.key()),
            Some(&false),
            "delete planned for a standing object"
        );
        assert!(
            !azure.shared.contains(a.key()) || !view.get(a.key()).needed_by_other_lease,
            "deleted a shared object"
        );
    }
}

fn run_to(
    h: &Harness,
    azure: &mut AzureModel,
    spec: &AccessGrantSpec,
    status: &mut AccessGrantStatus,
    now: DateTime<Utc>,
) -> Decision {
    h.reconcile(azure, spec, status, false, now, &mut std::iter::empty())
}

#[test]
fn activates_then_lapses_with_one_put_and_one_delete_per_object() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let spec = spec(Some("1h"), None);
    let mut st = AccessGrantStatus::default();
    let d = run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active, "{:?}", st.message);
    assert_eq!(st.expires_at, Some(t0() + TimeDelta::hours(1)));
    assert_eq!(d.requeue_at, Some(t0() + TimeDelta::hours(1)));
    assert_eq!(azure.objects.len(), 3, "two role assignments and one FIC");
    assert_eq!(st.policy.as_deref(), Some("payments"));
    assert_eq!(
        st.role_summary.as_deref(),
        Some("Storage Blob Data Reader,Reader")
    );
    assert_eq!(st.identity_name.as_deref(), Some("mi/backup"));
    // Steady state: nothing to do.
    let d = run_to(
        &h,
        &mut azure,
        &spec,
        &mut st,
        t0() + TimeDelta::minutes(30),
    );
    assert!(d.actions.is_empty());
    assert_eq!(st.phase, GrantPhase::Active);
    // Lapse.
    run_to(&h, &mut azure, &spec, &mut st, t0() + TimeDelta::hours(1));
    assert_eq!(st.phase, GrantPhase::Expired);
    assert_eq!(st.ended_at, Some(t0() + TimeDelta::hours(1)));
    assert!(azure.objects.is_empty());
    assert!(azure.puts.values().all(|n| *n == 1) && azure.puts.len() == 3);
    assert!(azure.deletes.values().all(|n| *n == 1) && azure.deletes.len() == 3);
    assert!(
        st.role_assignments
            .iter()
            .all(|r| r.state == ObjectState::Deleted)
    );
}

/// Synchronized expiry: the controller's delete plan starts a lease's deletes before its end.
/// The lease ends then as `Expired`, its status says how early and why; a plan made for an
/// end the lease no longer has is not followed.
#[test]
fn a_lease_the_delete_budget_crowds_ends_early_and_says_so() {
    let mut h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let spec = spec(Some("1h"), None);
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    let end = t0() + TimeDelta::hours(1);
    let starts_at = end - TimeDelta::seconds(150);
    let plan = EarlyEnd {
        starts_at,
        for_end: end,
        budget: "subscription 00000000-0000-0000-0000-0000000000aa".to_owned(),
        crowd: 2_000,
        crowd_until: end,
    };
    // A plan for another end (the lease was extended since): the lease runs on.
    h.early_end = Some(EarlyEnd {
        for_end: end - TimeDelta::minutes(10),
        ..plan.clone()
    });
    let d = run_to(&h, &mut azure, &spec, &mut st, starts_at);
    assert_eq!(st.phase, GrantPhase::Active);
    assert!(d.actions.is_empty());
    // Before the planned start: nothing yet.
    h.early_end = Some(plan);
    run_to(
        &h,
        &mut azure,
        &spec,
        &mut st,
        starts_at - TimeDelta::seconds(1),
    );
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(azure.objects.len(), 3);
    // At it (the lane woke a little late): the lease ends, every object deleted once.
    let now = starts_at + TimeDelta::milliseconds(300);
    let d = run_to(&h, &mut azure, &spec, &mut st, now);
    assert_eq!(st.phase, GrantPhase::Expired, "{:?}", st.message);
    assert_eq!(st.end_reason, Some(EndReason::Expired));
    assert_eq!(st.ended_at, Some(now));
    assert_eq!(
        st.expires_at,
        Some(end),
        "the expiry as granted stays on record"
    );
    assert_eq!(st.ended_early_seconds, Some(150), "149.7 s, rounded up");
    let msg = st.message.clone().unwrap_or_default();
    assert!(
        msg.contains("ended 150s before its expiry")
            && msg.contains("2000 deletes in subscription 00000000-0000-0000-0000-0000000000aa"),
        "{msg}"
    );
    assert!(azure.objects.is_empty());
    assert!(azure.deletes.values().all(|n| *n == 1) && azure.deletes.len() == 3);
    let _ = d;
    let early = |d: &Decision| {
        d.events
            .iter()
            .filter(|e| e.reason == Reason::EndedEarly && !e.warning)
            .count()
    };
    // The Event is told once, in the decision that ended the lease.
    let mut again = st.clone();
    let d = run_to(
        &h,
        &mut azure,
        &spec,
        &mut again,
        now + TimeDelta::seconds(5),
    );
    assert_eq!(early(&d), 0);
    assert_eq!(again.ended_early_seconds, Some(150));
}

/// `accessMayContinueUntil`: a federated managed identity's token may outlive the lease by its
/// lifetime (24 h), whatever ARM's cache does; the bound is a forecast while the lease runs and
/// fixed from the moment the last object is gone.
#[test]
fn the_residual_access_bound_is_forecast_then_fixed_when_the_objects_are_gone() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let mut spec = spec(Some("1h"), None);
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    let day = TimeDelta::hours(24);
    assert_eq!(
        st.access_may_continue_until,
        Some(t0() + TimeDelta::hours(1) + day)
    );
    spec.revoked = true;
    let revoked_at = t0() + TimeDelta::minutes(5);
    run_to(&h, &mut azure, &spec, &mut st, revoked_at);
    assert_eq!(st.phase, GrantPhase::Revoked);
    assert_eq!(st.access_may_continue_until, Some(revoked_at + day));
    run_to(
        &h,
        &mut azure,
        &spec,
        &mut st,
        revoked_at + TimeDelta::hours(3),
    );
    assert_eq!(
        st.access_may_continue_until,
        Some(revoked_at + day),
        "fixed once the deletes are done"
    );

    // Without federation only ARM's cache counts; never activated, no bound at all.
    let mut plain = super::tests::spec(Some("1h"), None);
    plain.federation = None;
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut AzureModel::default(), &plain, &mut st, t0());
    assert_eq!(
        st.access_may_continue_until,
        Some(t0() + TimeDelta::hours(1) + TimeDelta::minutes(30))
    );
    let too_long = super::tests::spec(Some("9h"), None);
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut AzureModel::default(), &too_long, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Denied);
    assert_eq!(st.access_may_continue_until, None);
}

/// `federation.closeEarly`: the credential goes one token lifetime before the lease ends and is
/// not repaired, the role assignments stay until the end, and a lease not longer than a token
/// lifetime is denied naming the setting.
#[test]
fn a_policy_that_closes_federation_early_deletes_the_credential_a_token_lifetime_before_the_end() {
    let mut h = Harness::new("8h");
    h.policies = policy_with(|p| {
        p.federation = Some(crate::v1alpha1::FederationRules { close_early: true });
    });
    h.settings.residual.managed_identity_token = TimeDelta::minutes(20);
    let is_fic = |k: &ObjectKey| matches!(k, ObjectKey::Fic { .. });

    // Not longer than a token lifetime: denied, nothing created.
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec(Some("20m"), None), &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Denied);
    let msg = st.message.clone().unwrap_or_default();
    assert!(
        msg.contains("federation.closeEarly") && msg.contains("spec.duration"),
        "{msg}"
    );
    assert!(azure.puts.is_empty());

    let spec = spec(Some("1h"), None);
    let mut st = AccessGrantStatus::default();
    let d = run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(
        d.requeue_at,
        Some(t0() + TimeDelta::minutes(40) - TimeDelta::seconds(30)),
        "wakes when the credential must go: a token lifetime and a margin before the end"
    );
    assert!(azure.objects.keys().any(is_fic));
    // Until the cutoff the credential is kept (and repaired).
    let cutoff = t0() + TimeDelta::minutes(40) - TimeDelta::seconds(30);
    run_to(
        &h,
        &mut azure,
        &spec,
        &mut st,
        cutoff - TimeDelta::seconds(1),
    );
    assert!(azure.objects.keys().any(is_fic));
    // At the cutoff it goes, once; the lease stays Active with its role assignments.
    let d = run_to(&h, &mut azure, &spec, &mut st, cutoff);
    assert!(!azure.objects.keys().any(is_fic), "{:?}", azure.objects);
    assert_eq!(azure.objects.len(), 2, "the role assignments stay");
    assert_eq!(st.phase, GrantPhase::Active);
    assert!(
        d.events
            .iter()
            .any(|e| e.reason == Reason::FederationClosed)
    );
    assert_eq!(
        st.federated_credential.as_ref().map(|f| f.state),
        Some(ObjectState::Deleted)
    );
    let d = run_to(
        &h,
        &mut azure,
        &spec,
        &mut st,
        t0() + TimeDelta::minutes(50),
    );
    assert!(d.actions.is_empty(), "not recreated: {:?}", d.actions);
    // The end deletes the rest, each object once.
    run_to(&h, &mut azure, &spec, &mut st, t0() + TimeDelta::hours(1));
    assert_eq!(st.phase, GrantPhase::Expired);
    assert!(azure.objects.is_empty());
    assert!(azure.deletes.values().all(|n| *n == 1) && azure.deletes.len() == 3);
    // With the credential gone before the end, no token outlives the lease: only ARM's cache
    // is left in the bound.
    assert_eq!(
        st.access_may_continue_until,
        Some(t0() + TimeDelta::hours(1) + TimeDelta::minutes(30))
    );
}

#[test]
fn a_passed_window_never_activates() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let window = Window {
        not_before: Some((t0() - TimeDelta::hours(3)).to_rfc3339()),
        not_after: Some((t0() - TimeDelta::hours(1)).to_rfc3339()),
    };
    let spec = spec(None, Some(window));
    let mut st = AccessGrantStatus::default();
    let d = run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Expired);
    assert!(azure.puts.is_empty());
    assert!(d.actions.is_empty());
    assert!(st.message.unwrap().contains("spec.window.notAfter"));
}

#[test]
fn a_future_window_is_scheduled_and_activates_on_time() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let window = Window {
        not_before: Some((t0() + TimeDelta::hours(2)).to_rfc3339()),
        not_after: Some((t0() + TimeDelta::hours(4)).to_rfc3339()),
    };
    let spec = spec(None, Some(window));
    let mut st = AccessGrantStatus::default();
    let d = run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Scheduled);
    assert_eq!(d.requeue_at, Some(t0() + TimeDelta::hours(2)));
    assert!(azure.puts.is_empty());
    run_to(&h, &mut azure, &spec, &mut st, t0() + TimeDelta::hours(2));
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(st.expires_at, Some(t0() + TimeDelta::hours(4)));
}

#[test]
fn denial_names_the_field_and_the_policy() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let mut spec = spec(Some("1h"), None);
    spec.roles[0].role = "Owner".into();
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Denied);
    let msg = st.message.clone().unwrap();
    assert!(
        msg.contains("spec.roles[0].role") && msg.contains("payments"),
        "{msg}"
    );
    let c = find_condition(&st, POLICY_ALLOWED).unwrap();
    assert_eq!(c.status, ConditionStatus::False);
    assert!(azure.puts.is_empty());
}

#[test]
fn invalid_input_is_denied_with_the_field() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let mut spec = spec(Some("1h"), None);
    spec.roles[1].scope = format!("/subscriptions/{SUB}//resourceGroups/payments-rg");
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Denied);
    assert!(st.message.unwrap().contains("spec.roles[1].scope"));
}

#[test]
fn duration_over_policy_is_denied_and_extension_beyond_it_refused() {
    let h = Harness::new("2h");
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec(Some("3h"), None), &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Denied);
    assert!(st.message.unwrap().contains("maxDuration"));

    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec(Some("1h"), None), &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active);
    // Within policy: extended.
    let d = run_to(
        &h,
        &mut azure,
        &spec(Some("2h"), None),
        &mut st,
        t0() + TimeDelta::minutes(30),
    );
    assert_eq!(st.expires_at, Some(t0() + TimeDelta::hours(2)));
    assert!(d.events.iter().any(|e| e.reason == Reason::Extended));
    // Beyond: refused, the lease stands.
    run_to(
        &h,
        &mut azure,
        &spec(Some("5h"), None),
        &mut st,
        t0() + TimeDelta::minutes(40),
    );
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(st.expires_at, Some(t0() + TimeDelta::hours(2)));
    assert_eq!(
        find_condition(&st, EXTENSION_DENIED).unwrap().status,
        ConditionStatus::True
    );
}

#[test]
fn revoke_and_delete_end_the_lease_early() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let mut spec = spec(Some("1h"), None);
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    spec.revoked = true;
    run_to(&h, &mut azure, &spec, &mut st, t0() + TimeDelta::minutes(5));
    assert_eq!(st.phase, GrantPhase::Revoked);
    assert!(azure.objects.is_empty());

    let spec = super::tests::spec(Some("1h"), None);
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    let d = h.reconcile(
        &mut azure,
        &spec,
        &mut st,
        true,
        t0() + TimeDelta::minutes(1),
        &mut std::iter::empty(),
    );
    assert!(d.finalized);
    assert!(azure.objects.is_empty());
}

#[test]
fn policy_deletion_revokes_active_grants() {
    let mut h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let spec = spec(Some("1h"), None);
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active);
    h.policies.clear();
    run_to(&h, &mut azure, &spec, &mut st, t0() + TimeDelta::minutes(1));
    assert_eq!(st.phase, GrantPhase::Revoked);
    assert!(st.message.unwrap().contains("no AccessPolicy allows"));
    assert!(azure.objects.is_empty());
}

#[test]
fn terminal_refusal_rolls_back_everything_this_lease_created() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let spec = spec(Some("1h"), None);
    let mut st = AccessGrantStatus::default();
    // First role assignment succeeds, the second is refused for good, the FIC succeeds.
    let mut faults = vec![Fault::Ok, Fault::Terminal, Fault::Ok].into_iter();
    h.reconcile(&mut azure, &spec, &mut st, false, t0(), &mut faults);
    assert_eq!(st.phase, GrantPhase::Failed);
    assert!(
        azure.objects.is_empty(),
        "rollback left {:?}",
        azure.objects
    );
    let msg = st.message.unwrap();
    assert!(msg.contains("RoleAssignmentLimitExceeded"), "{msg}");
}

#[test]
fn authorization_failures_are_retried_for_the_grace_then_fail() {
    let h = Harness::new("8h");
    let spec = spec(Some("1h"), None);
    // The operator's role reaches ARM five minutes after the lease started: it activates.
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    let mut refused = std::iter::repeat(Fault::Unauthorized);
    let d = h.reconcile(&mut azure, &spec, &mut st, false, t0(), &mut refused);
    assert_eq!(st.phase, GrantPhase::Activating);
    assert!(azure.objects.is_empty());
    assert!(d.retry_after.is_some());
    assert!(
        d.events
            .iter()
            .any(|e| e.reason == Reason::AuthorizationPending && e.warning)
    );
    let reconciling = find_condition(&st, RECONCILING).unwrap();
    assert_eq!(reconciling.reason, "AuthorizationPending");
    assert!(
        reconciling
            .message
            .contains("retrying until 2026-12-01T02:10:00Z"),
        "{}",
        reconciling.message
    );
    run_to(&h, &mut azure, &spec, &mut st, t0() + TimeDelta::minutes(5));
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(azure.objects.len(), 3);

    // It never arrives: past the grace the grant fails, naming the cause.
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    h.reconcile(&mut azure, &spec, &mut st, false, t0(), &mut refused);
    assert_eq!(st.phase, GrantPhase::Activating);
    let later = t0() + TimeDelta::minutes(10);
    h.reconcile(&mut azure, &spec, &mut st, false, later, &mut refused);
    assert_eq!(st.phase, GrantPhase::Failed);
    assert!(azure.objects.is_empty());
    let msg = st.message.unwrap();
    assert!(
        msg.contains("AuthorizationFailed") && msg.contains("lacks this permission"),
        "{msg}"
    );
}

#[test]
fn standing_access_is_used_and_never_touched() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let spec = spec(Some("1h"), None);
    // Plant the Reader assignment without our marker.
    let mut st = AccessGrantStatus::default();
    let probe = h.decide(
        &spec,
        &st,
        false,
        t0(),
        &AzureView {
            complete: true,
            ..Default::default()
        },
    );
    let reader_key = probe.actions.iter().find_map(|a| match a {
        Action::CreateRoleAssignment(p) if p.written_role == "Reader" => Some(p.key.clone()),
        _ => None,
    });
    azure.objects.insert(reader_key.clone().unwrap(), false);
    run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(
        find_condition(&st, STANDING_ACCESS).unwrap().status,
        ConditionStatus::True
    );
    run_to(&h, &mut azure, &spec, &mut st, t0() + TimeDelta::hours(2));
    assert_eq!(st.phase, GrantPhase::Expired);
    assert_eq!(
        azure.objects.get(&reader_key.unwrap()),
        Some(&false),
        "standing assignment must survive"
    );
    assert_eq!(azure.objects.len(), 1);
}

/// The key of the planned Reader assignment of `spec`.
fn reader_key(h: &Harness, spec: &AccessGrantSpec) -> ObjectKey {
    let probe = h.decide(
        spec,
        &AccessGrantStatus::default(),
        false,
        t0(),
        &AzureView {
            complete: true,
            ..Default::default()
        },
    );
    probe
        .actions
        .iter()
        .find_map(|a| match a {
            Action::CreateRoleAssignment(p) if p.written_role == "Reader" => Some(p.key.clone()),
            _ => None,
        })
        .unwrap()
}

/// Another lapse cluster's assignment holds the tuple: the lease uses it, looks again at the
/// end its marker advertises and soon after, and puts its own in place once it is gone; that
/// one, like everything the lease creates, goes at the lease's end.
#[test]
fn a_tuple_held_by_another_cluster_is_taken_over_when_it_goes() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let spec = spec(Some("1h"), None);
    let key = reader_key(&h, &spec);
    let theirs = t0() + TimeDelta::minutes(20);
    azure.objects.insert(key.clone(), false);
    azure.holders.insert(
        key.clone(),
        Holder::Lapse {
            expires_at: Some(theirs),
        },
    );
    let mut st = AccessGrantStatus::default();
    let d = run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active);
    let state = |st: &AccessGrantStatus| {
        st.role_assignments
            .iter()
            .find(|r| r.role == "Reader")
            .map(|r| r.state)
    };
    assert_eq!(state(&st), Some(ObjectState::Standing));
    assert_eq!(d.requeue_at, Some(theirs));
    // Their operator takes a moment to delete it: look again soon.
    let d = run_to(&h, &mut azure, &spec, &mut st, theirs);
    assert!(d.actions.is_empty());
    assert_eq!(d.requeue_at, Some(theirs + TimeDelta::milliseconds(500)));
    // Gone: the lease's own, by its derived name.
    azure.objects.remove(&key);
    azure.holders.remove(&key);
    let now = theirs + TimeDelta::seconds(1);
    let d = h.decide(&spec, &st, false, now, &azure.view());
    let ObjectKey::RoleAssignment {
        principal_id,
        role_guid,
        scope,
    } = &key
    else {
        panic!("{key:?}")
    };
    let ours = owner().role_assignment_name(
        principal_id,
        role_guid,
        &crate::arm::ArmId::parse(scope).unwrap(),
    );
    assert!(d.actions.iter().any(|a| matches!(
        a, Action::CreateRoleAssignment(p) if p.key == key && p.name == ours
    )));
    assert!(
        d.events
            .iter()
            .any(|e| e.reason == Reason::DriftRepaired && !e.warning)
    );
    run_to(&h, &mut azure, &spec, &mut st, now);
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(state(&st), Some(ObjectState::Present));
    assert_eq!(azure.objects.get(&key), Some(&true));
    run_to(&h, &mut azure, &spec, &mut st, t0() + TimeDelta::hours(1));
    assert_eq!(st.phase, GrantPhase::Expired);
    assert!(azure.objects.is_empty());
    assert_eq!(azure.deletes.get(&key), Some(&1));
}

/// Access someone made by hand is left to the sweep; a holder's marker never moves the lease's
/// own end, however late it says the holder ends.
#[test]
fn a_holder_never_moves_the_lease_and_unmarked_ones_are_left_to_the_sweep() {
    let h = Harness::new("8h");
    let spec = spec(Some("1h"), None);
    let ends = t0() + TimeDelta::hours(1);
    for holder in [
        Holder::Unmarked,
        Holder::Lapse {
            expires_at: Some(t0() + TimeDelta::days(365)),
        },
    ] {
        let mut azure = AzureModel::default();
        let key = reader_key(&h, &spec);
        azure.objects.insert(key.clone(), false);
        azure.holders.insert(key, holder);
        let mut st = AccessGrantStatus::default();
        let d = run_to(&h, &mut azure, &spec, &mut st, t0());
        assert_eq!(st.phase, GrantPhase::Active, "{holder:?}");
        assert_eq!(st.expires_at, Some(ends), "{holder:?}");
        assert_eq!(d.requeue_at, Some(ends), "{holder:?}");
    }
}

#[test]
fn a_shared_object_outlives_the_first_lease() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let spec = spec(Some("1h"), None);
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    // Another live lease needs every object.
    azure.shared = azure.objects.keys().cloned().collect();
    run_to(&h, &mut azure, &spec, &mut st, t0() + TimeDelta::hours(1));
    assert_eq!(st.phase, GrantPhase::Expired);
    assert_eq!(azure.objects.len(), 3);
    assert!(
        st.role_assignments
            .iter()
            .all(|r| r.state == ObjectState::Released)
    );
}

#[test]
fn drift_is_repaired_with_an_event() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let spec = spec(Some("1h"), None);
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    let gone = azure.objects.keys().next().cloned().unwrap();
    azure.objects.remove(&gone);
    let mut faults = std::iter::empty();
    // The decision that sees the hole is not Active; the one after the repair is.
    let d = h.decide(
        &spec,
        &st,
        false,
        t0() + TimeDelta::minutes(10),
        &azure.view(),
    );
    assert_eq!(d.status.phase, GrantPhase::Activating);
    assert!(
        d.events
            .iter()
            .any(|e| e.reason == Reason::DriftRepaired && e.warning)
    );
    h.reconcile(
        &mut azure,
        &spec,
        &mut st,
        false,
        t0() + TimeDelta::minutes(10),
        &mut faults,
    );
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(azure.objects.len(), 3);
}

#[test]
fn failing_deletes_never_give_up_and_become_overdue() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let spec = spec(Some("1h"), None);
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    let end = t0() + TimeDelta::hours(1);
    let mut faults = std::iter::repeat(Fault::Retryable);
    let d = h.reconcile(&mut azure, &spec, &mut st, false, end, &mut faults);
    assert_eq!(st.phase, GrantPhase::Revoking);
    assert!(d.retry_after.is_some());
    let d = h.reconcile(
        &mut azure,
        &spec,
        &mut st,
        false,
        end + TimeDelta::minutes(5),
        &mut faults,
    );
    assert_eq!(st.phase, GrantPhase::Revoking);
    assert!(!d.actions.is_empty() || d.retry_after.is_some());
    assert_eq!(
        find_condition(&st, REVOCATION_OVERDUE).unwrap().status,
        ConditionStatus::True
    );
    assert!(
        d.events
            .iter()
            .any(|e| e.reason == Reason::RevocationRetrying && e.warning)
    );
    // The next retry's first look has no failure yet: the overdue message keeps the last cause.
    let cause = find_condition(&st, REVOCATION_OVERDUE)
        .unwrap()
        .message
        .clone();
    assert!(cause.contains("500 Internal Server Error"), "{cause}");
    let again = h.decide(
        &spec,
        &st,
        false,
        end + TimeDelta::minutes(5) + TimeDelta::seconds(2),
        &azure.view(),
    );
    assert_eq!(
        find_condition(&again.status, REVOCATION_OVERDUE)
            .unwrap()
            .message,
        cause
    );
    // Azure recovers: the deletes go through and the condition clears.
    run_to(&h, &mut azure, &spec, &mut st, end + TimeDelta::minutes(6));
    assert_eq!(st.phase, GrantPhase::Expired);
    assert!(azure.objects.is_empty());
    assert_eq!(
        find_condition(&st, REVOCATION_OVERDUE).unwrap().status,
        ConditionStatus::False
    );
}

#[test]
fn immutable_fields_changed_after_activation_revoke_the_lease() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let mut spec = spec(Some("1h"), None);
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    spec.roles.pop();
    run_to(&h, &mut azure, &spec, &mut st, t0() + TimeDelta::minutes(1));
    assert_eq!(st.phase, GrantPhase::Revoked);
    assert!(
        azure.objects.is_empty(),
        "the recorded objects, not the edited spec, decide what is deleted"
    );
}

#[test]
fn unknown_observations_never_create_and_never_claim_active() {
    let h = Harness::new("8h");
    let spec = spec(Some("1h"), None);
    let st = AccessGrantStatus::default();
    let d = h.decide(&spec, &st, false, t0(), &AzureView::default());
    assert_eq!(d.status.phase, GrantPhase::Activating);
    assert!(d.actions.is_empty());
    assert!(d.retry_after.is_some());
}

// ---- property tests ----

#[derive(Clone, Debug)]
struct Scenario {
    duration_mins: Option<i64>,
    not_before_mins: Option<i64>,
    not_after_mins: Option<i64>,
    extend_to_mins: Option<(usize, i64)>,
    revoke_at: Option<usize>,
    delete_at: Option<usize>,
    drop_policy_at: Option<usize>,
    drift_at: Option<usize>,
    plant_standing: bool,
    share: bool,
    /// Someone other than the operator rewrites the status before this step.
    tamper_at: Option<(usize, Tamper)>,
    /// The policy closes federation a token lifetime (30 minutes here) before the end.
    close_early: bool,
    /// The policy makes Azure enforce expiry through PIM.
    pim: bool,
    steps: Vec<i64>,
    faults: Vec<u8>,
}

/// What a tenant who may patch `accessgrants/status` writes.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    /// Another principal (new assignments would go to it).
    Principal,
    /// A later start (the lease would be measured from it).
    LaterStart,
    /// A later expiry.
    LaterExpiry,
    /// IDs and names of objects lapse did not create.
    ForeignIds,
    /// Back to `Active` from wherever it is.
    Reactivate,
    /// The whole status removed.
    Wipe,
}

fn tamper(st: &mut AccessGrantStatus, how: Tamper) -> Option<String> {
    match how {
        Tamper::Principal => st.principal_id = Some("77777777-2222-3333-4444-555555555555".into()),
        Tamper::LaterStart => {
            st.activated_at = st.activated_at.map(|a| a + TimeDelta::hours(20));
        }
        Tamper::LaterExpiry => st.expires_at = Some(t0() + TimeDelta::hours(100)),
        Tamper::ForeignIds => {
            for r in &mut st.role_assignments {
                r.id = Some(format!(
                    "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/{}",
                    Uuid::from_u128(42)
                ));
            }
            if let Some(f) = &mut st.federated_credential {
                f.name = "someone-elses-credential".into();
            }
        }
        Tamper::Reactivate => {
            st.phase = GrantPhase::Active;
            st.ended_at = None;
            st.end_reason = None;
        }
        Tamper::Wipe => {
            *st = AccessGrantStatus::default();
            // No status at all reads as a new grant, not as tampering.
            return None;
        }
    }
    Some(format!("{how:?}"))
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        (
            prop::option::of(1i64..600),
            prop::option::of(-120i64..240),
            prop::option::of(-120i64..600),
        ),
        (
            prop::option::of((0usize..12, 1i64..900)),
            prop::option::of(0usize..12),
            prop::option::of(0usize..12),
            prop::option::of(0usize..12),
            prop::option::of(0usize..12),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            prop::option::of((
                0usize..12,
                prop_oneof![
                    Just(Tamper::Principal),
                    Just(Tamper::LaterStart),
                    Just(Tamper::LaterExpiry),
                    Just(Tamper::ForeignIds),
                    Just(Tamper::Reactivate),
                    Just(Tamper::Wipe),
                ],
            )),
        ),
        prop::collection::vec(0i64..90, 1..12),
        prop::collection::vec(0u8..10, 0..40),
    )
        .prop_filter("duration or notAfter", |((d, _, a), ..)| {
            d.is_some() || a.is_some()
        })
        .prop_map(
            |(
                (d, b, a),
                (ext, rev, del, drop, drift),
                (plant, share, close_early, pim, tamper_at),
                steps,
                faults,
            )| Scenario {
                duration_mins: d,
                not_before_mins: b,
                not_after_mins: a.map(|a| b.map_or(a, |b| a.max(b + 1))),
                extend_to_mins: ext,
                revoke_at: rev,
                delete_at: del,
                drop_policy_at: drop,
                drift_at: drift,
                plant_standing: plant,
                share,
                tamper_at,
                close_early,
                pim,
                steps,
                faults,
            },
        )
}

fn fault_of(n: u8) -> Fault {
    match n {
        0 => Fault::Retryable,
        1 => Fault::Throttled,
        2 => Fault::Terminal,
        3 => Fault::LostAnswer,
        _ => Fault::Ok,
    }
}

fn mins(m: i64) -> TimeDelta {
    TimeDelta::minutes(m)
}

/// Runs a scenario through the harness; every decision is checked by `check_invariants`.
/// Returns the azure and the final status after Azure recovers and time passes the lease.
fn simulate(s: &Scenario) -> (AzureModel, AccessGrantStatus, bool, bool) {
    let mut h = Harness::new("8h");
    let lifetime = mins(30);
    if s.close_early || s.pim {
        h.policies = policy_with(|p| {
            if s.close_early {
                p.federation = Some(crate::v1alpha1::FederationRules { close_early: true });
            }
            if s.pim {
                p.azure = Some(crate::v1alpha1::AzureRules {
                    expiry: Expiry::Pim,
                });
            }
        });
    }
    if s.close_early {
        h.settings.residual.managed_identity_token = lifetime;
    }
    let window = (s.not_before_mins.is_some() || s.not_after_mins.is_some()).then(|| Window {
        not_before: s.not_before_mins.map(|m| (t0() + mins(m)).to_rfc3339()),
        not_after: s.not_after_mins.map(|m| (t0() + mins(m)).to_rfc3339()),
    });
    let duration = s.duration_mins.map(|m| format!("{m}m"));
    let mut spec = spec(duration.as_deref(), window);
    let mut azure = AzureModel::default();
    let mut planted = false;
    if s.plant_standing {
        let probe = h.decide(
            &spec,
            &AccessGrantStatus::default(),
            false,
            t0() + mins(300),
            &AzureView {
                complete: true,
                ..Default::default()
            },
        );
        if let Some(k) = probe
            .actions
            .iter()
            .find(|a| a.is_create())
            .map(|a| a.key().clone())
        {
            azure.objects.insert(k, false);
            planted = true;
        }
    }
    let mut st = AccessGrantStatus::default();
    let mut faults = s
        .faults
        .iter()
        .map(|n| fault_of(*n))
        .collect::<Vec<_>>()
        .into_iter();
    let mut now = t0();
    let mut deleting = false;
    let passed_window_at_start = s.not_after_mins.is_some_and(|a| a <= 0);
    let mut ever_created = false;
    for (i, step) in s.steps.iter().enumerate() {
        if s.revoke_at == Some(i) {
            spec.revoked = true;
        }
        if s.delete_at == Some(i) {
            deleting = true;
        }
        if s.drop_policy_at == Some(i) {
            h.policies.clear();
        }
        if let Some((at, m)) = s.extend_to_mins
            && at == i
            && !spec.revoked
        {
            spec.duration = Some(format!("{m}m"));
        }
        if s.drift_at == Some(i) {
            let ours: Vec<_> = azure
                .objects
                .iter()
                .filter(|(_, o)| **o)
                .map(|(k, _)| k.clone())
                .collect();
            if let Some(k) = ours.first() {
                azure.objects.remove(k);
            }
        }
        if let Some((at, how)) = s.tamper_at
            && at == i
        {
            *h.tamper_next.borrow_mut() = tamper(&mut st, how);
        }
        if s.share && i == 1 {
            azure.shared = azure
                .objects
                .iter()
                .filter(|(_, o)| **o)
                .map(|(k, _)| k.clone())
                .collect();
        }
        // Azure ends what PIM scheduled, whatever lapse does.
        let ended: Vec<ObjectKey> = azure
            .schedules
            .iter()
            .filter(|(_, s)| s.ends_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in ended {
            azure.schedules.remove(&k);
            azure.objects.remove(&k);
        }
        let puts_before: u32 = azure.puts.values().sum();
        let d = h.reconcile(&mut azure, &spec, &mut st, deleting, now, &mut faults);
        // Close-early: from one token lifetime before the end, no credential is created (nor
        // repaired), so no token minted through one outlives the lease.
        if s.close_early
            && let Some(expires) = st.expires_at
            && now >= expires - lifetime
        {
            assert!(
                !d.actions.iter().any(|a| matches!(a, Action::CreateFic(_))),
                "a federated credential created at {now}, within a token lifetime of {expires}"
            );
        }
        if d.tampered.is_some() {
            // The controller sets spec.revoked, which cannot be undone.
            spec.revoked = true;
        }
        ever_created |= azure.puts.values().sum::<u32>() > puts_before;
        if d.finalized {
            break;
        }
        now += mins(*step);
    }
    if passed_window_at_start {
        assert!(!ever_created, "a passed window activated");
        assert!(
            matches!(
                st.phase,
                GrantPhase::Expired | GrantPhase::Denied | GrantPhase::Revoked
            ),
            "{:?}",
            st.phase
        );
    }
    // Azure recovers; time passes every possible end. The lease must wind down completely.
    let later = t0() + TimeDelta::hours(24);
    for k in 0..3 {
        h.reconcile(
            &mut azure,
            &spec,
            &mut st,
            deleting,
            later + mins(k),
            &mut std::iter::empty(),
        );
    }
    (azure, st, deleting, planted)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Every decision of every run keeps the per-step invariants (checked inside), and once
    /// Azure recovers and the lease is over, nothing this lease alone held is left.
    #[test]
    fn leases_keep_the_invariants_and_leave_nothing_behind(s in scenario()) {
        let (azure, st, deleting, planted) = simulate(&s);
        prop_assert!(st.phase.is_terminal() || deleting, "phase {:?} after the lease", st.phase);
        for (k, owned) in &azure.objects {
            prop_assert!(!*owned || azure.shared.contains(k), "orphan {k:?}");
        }
        // Standing access survives everything.
        if planted {
            prop_assert!(azure.objects.values().any(|o| !*o));
        }
    }

    /// Exactly the minimum writes: with a healthy Azure, one PUT and one DELETE per object.
    #[test]
    fn healthy_azure_sees_one_put_and_one_delete_per_object(
        dur in 1i64..480, step in 1i64..60, steps in 1usize..20, early in any::<bool>(),
    ) {
        // Closing federation early changes when the credential goes, not how often.
        let s = Scenario {
            duration_mins: Some(dur), not_before_mins: None, not_after_mins: None,
            extend_to_mins: None, revoke_at: None, delete_at: None, drop_policy_at: None,
            drift_at: None, plant_standing: false, share: false, tamper_at: None,
            close_early: early && dur > 30, pim: false, steps: vec![step; steps], faults: vec![],
        };
        let (azure, st, _, _) = simulate(&s);
        prop_assert_eq!(st.phase, GrantPhase::Expired);
        prop_assert!(azure.puts.values().all(|n| *n == 1));
        prop_assert!(azure.deletes.values().all(|n| *n == 1));
        prop_assert_eq!(azure.puts.len(), 3);
        prop_assert_eq!(azure.deletes.len(), 3);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// An old manifest applied (or re-applied, with its status lost) after its window has
    /// passed never activates, whatever the failures and however often it is reconciled.
    #[test]
    fn an_old_manifest_never_activates(
        nb in prop::option::of(-2000i64..-1), len in 1i64..600, use_not_after in any::<bool>(),
        faults in prop::collection::vec(0u8..10, 0..10), steps in prop::collection::vec(0i64..120, 1..6),
    ) {
        let h = Harness::new("8h");
        // The window ends at or before t0: either notAfter, or notBefore + duration.
        let end = nb.map_or(-len, |b| (b + len).min(0));
        let window = Window {
            not_before: nb.map(|b| (t0() + mins(b)).to_rfc3339()),
            not_after: (use_not_after || nb.is_none()).then(|| (t0() + mins(end)).to_rfc3339()),
        };
        let duration = if nb.is_some() && !use_not_after { Some(format!("{}m", end - nb.unwrap_or(0))) } else { None };
        let spec = spec(duration.as_deref(), Some(window));
        let mut azure = AzureModel::default();
        let mut st = AccessGrantStatus::default();
        let mut faults = faults.into_iter().map(fault_of);
        let mut now = t0();
        for step in steps {
            h.reconcile(&mut azure, &spec, &mut st, false, now, &mut faults);
            prop_assert!(azure.puts.is_empty(), "an old manifest created {:?}", azure.puts);
            prop_assert_eq!(st.phase, GrantPhase::Expired);
            prop_assert!(st.activated_at.is_none());
            now += mins(step);
        }
    }
}

#[test]
fn the_recorded_lease_is_in_whole_seconds_and_never_longer_than_asked() {
    let mut h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let spec = spec(Some("1h"), None);
    let mut st = AccessGrantStatus::default();
    let now = t0() + TimeDelta::milliseconds(1_750);
    // The lease starts at the grant's creation (a sub-second one here, to see the rounding).
    h.created = now;
    run_to(&h, &mut azure, &spec, &mut st, now);
    let (a, e) = (st.activated_at.unwrap(), st.expires_at.unwrap());
    assert_eq!(a.timestamp_subsec_nanos(), 0);
    assert_eq!(e - a, TimeDelta::hours(1));
    assert!(e <= now + TimeDelta::hours(1));
    // A second reconcile sees no extension or shortening in it.
    let d = run_to(&h, &mut azure, &spec, &mut st, now + TimeDelta::seconds(5));
    assert!(d.events.is_empty(), "{:?}", d.events);
    assert_eq!(
        serde_json::to_value(&st).unwrap()["expiresAt"],
        "2026-12-01T03:00:01Z"
    );
}

// --- What a tenant can write never widens access, lengthens a lease or aims a delete -------

fn policy_with(edit: impl FnOnce(&mut AccessPolicySpec)) -> Vec<NamedPolicy> {
    let mut spec = AccessPolicySpec {
        namespaces: vec!["payments".into()],
        identities: vec![format!(
            "/subscriptions/{SUB}/resourceGroups/payments-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"
        )],
        roles: vec!["Reader".into(), "Storage Blob Data Reader".into()],
        scopes: vec![format!("/subscriptions/{SUB}/resourceGroups/payments-rg")],
        service_accounts: vec!["backup-*".into()],
        max_duration: "8h".into(),
        ..Default::default()
    };
    edit(&mut spec);
    vec![NamedPolicy {
        name: "payments".into(),
        rules: validate_policy(&spec).map_err(|e| e.to_string()),
    }]
}

fn active(h: &Harness, azure: &mut AzureModel, spec: &AccessGrantSpec) -> AccessGrantStatus {
    let mut st = AccessGrantStatus::default();
    run_to(h, azure, spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active, "{:?}", st.message);
    st
}

/// A revocation in progress is continued, never announced again: without a recorded cause
/// (a record this operator never writes) it still deletes, and invents no Event for it.
#[test]
fn a_recorded_revocation_continues_without_a_new_event() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let spec = spec(Some("1h"), None);
    let mut st = active(&h, &mut azure, &spec);
    st.phase = GrantPhase::Revoking;
    st.end_reason = None;
    st.ended_at = None;
    st.message = Some("the lease lapsed".into());
    let d = h.decide(&spec, &st, false, t0() + mins(5), &azure.view());
    assert!(d.events.is_empty(), "{:?}", d.events);
    assert_eq!(d.actions.len(), 3);
    assert!(d.actions.iter().all(|a| !a.is_create()));
    assert_eq!(d.status.end_reason, Some(EndReason::Revoked));
    assert_eq!(d.status.message.as_deref(), Some("the lease lapsed"));
}

#[test]
fn a_tampered_principal_creates_nothing_and_ends_the_lease() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let spec = spec(Some("1h"), None);
    let mut st = active(&h, &mut azure, &spec);
    let puts = azure.puts.clone();
    st.principal_id = Some("77777777-2222-3333-4444-555555555555".into());
    *h.tamper_next.borrow_mut() = Some("the recorded principal was changed".into());
    let d = h.reconcile(
        &mut azure,
        &spec,
        &mut st,
        false,
        t0() + TimeDelta::minutes(5),
        &mut std::iter::empty(),
    );
    assert_eq!(azure.puts, puts, "nothing new was created");
    assert!(
        azure.objects.is_empty(),
        "the lease's own objects were removed"
    );
    assert_eq!(st.phase, GrantPhase::Revoked);
    assert_eq!(
        st.principal_id.as_deref(),
        Some(PRINCIPAL),
        "the resolved one"
    );
    assert!(d.tampered.is_some(), "the controller sets spec.revoked");
    let c = find_condition(&st, TAMPERED).expect("a Tampered condition");
    assert_eq!(c.status, ConditionStatus::True);
    assert!(
        c.message.contains("not written by lapse-operator"),
        "{}",
        c.message
    );
}

#[test]
fn a_tampered_status_cannot_aim_a_delete_or_keep_a_credential() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let spec = spec(Some("1h"), None);
    let mut st = active(&h, &mut azure, &spec);
    let fic_key = recorded_keys(&st)
        .into_iter()
        .find(|k| matches!(k, ObjectKey::Fic { .. }))
        .expect("a FIC");
    tamper(&mut st, Tamper::ForeignIds);
    *h.tamper_next.borrow_mut() = Some("foreign IDs".into());
    let mut view = azure.view();
    let d = h.decide(&spec, &st, false, t0() + TimeDelta::minutes(1), &view);
    // The deletes are the derived names (check_invariants also asserts it for every decision).
    let deleted: Vec<&ObjectKey> = d.actions.iter().map(Action::key).collect();
    assert!(
        deleted.contains(&&fic_key),
        "the real FIC goes: {:?}",
        d.actions
    );
    for a in &d.actions {
        match a {
            Action::DeleteRoleAssignment { name, .. } => assert_ne!(*name, Uuid::from_u128(42)),
            Action::DeleteFic { name, .. } => assert_ne!(name, "someone-elses-credential"),
            other => panic!("only deletes, got {other:?}"),
        }
    }
    for a in &d.actions {
        view.set(a.key().clone(), Observed::Absent);
    }
    let d = h.decide(&spec, &d.status, false, t0() + TimeDelta::minutes(1), &view);
    assert_eq!(d.status.phase, GrantPhase::Revoked);
}

#[test]
fn a_removed_status_reactivates_only_the_same_lease() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let spec = spec(Some("1h"), None);
    let st = active(&h, &mut azure, &spec);
    let expiry = st.expires_at;
    // The status is removed half an hour in: the lease is derived again, ending when it did.
    let mut wiped = AccessGrantStatus::default();
    run_to(
        &h,
        &mut azure,
        &spec,
        &mut wiped,
        t0() + TimeDelta::minutes(30),
    );
    assert_eq!(wiped.phase, GrantPhase::Active);
    assert_eq!(wiped.expires_at, expiry);
    assert!(azure.puts.values().all(|n| *n == 1), "no second PUT");
    // Removed again after the end: nothing comes back, and what remained is deleted.
    let mut wiped = AccessGrantStatus::default();
    run_to(
        &h,
        &mut azure,
        &spec,
        &mut wiped,
        t0() + TimeDelta::minutes(61),
    );
    assert_eq!(wiped.phase, GrantPhase::Expired);
    assert!(azure.objects.is_empty());
}

#[test]
fn the_lease_starts_at_creation_not_at_the_first_reconcile() {
    let h = Harness::new("8h");
    let mut azure = AzureModel::default();
    let spec = spec(Some("1h"), None);
    let mut st = AccessGrantStatus::default();
    // The operator was down for 20 minutes after the grant was created.
    run_to(
        &h,
        &mut azure,
        &spec,
        &mut st,
        t0() + TimeDelta::minutes(20),
    );
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(st.activated_at, Some(t0()));
    assert_eq!(st.expires_at, Some(t0() + TimeDelta::hours(1)));
}

#[test]
fn the_operator_never_grants_to_itself() {
    let mut h = Harness::new("8h");
    h.identity = IdentityObservation::Resolved {
        principal_id: Uuid::parse_str(OPERATOR).unwrap(),
    };
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec(Some("1h"), None), &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Denied);
    assert!(azure.puts.is_empty());
    let msg = st.message.unwrap_or_default();
    assert!(
        msg.starts_with("spec.identity: mi/backup is lapse-operator's own identity"),
        "{msg}"
    );
}

#[test]
fn privileged_identities_are_federated_only_where_a_policy_opts_in() {
    let owner_role = StandingPrivilege {
        assignment: format!(
            "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/{}",
            Uuid::from_u128(5)
        ),
        role: "Owner".into(),
        scope: format!("/subscriptions/{SUB}"),
    };
    let spec = spec(Some("1h"), None);
    // Not known yet: wait, create nothing.
    let mut h = Harness::new("8h");
    h.privileges = PrivilegeObservation::Unknown;
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    let d = run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Pending);
    assert!(azure.puts.is_empty() && d.retry_after.is_some());
    // Known privileged: denied, naming the standing assignment.
    h.privileges = PrivilegeObservation::Known(vec![owner_role.clone()]);
    run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Denied);
    assert!(azure.puts.is_empty());
    let msg = st.message.clone().unwrap_or_default();
    assert!(
        msg.contains("spec.federation: the identity holds privileged standing access"),
        "{msg}"
    );
    assert!(
        msg.contains(&owner_role.assignment) && msg.contains("Owner at"),
        "{msg}"
    );
    // A policy that opts in allows it.
    h.policies = policy_with(|p| p.allow_privileged_identities = true);
    let mut st = AccessGrantStatus::default();
    let mut fresh = spec.clone();
    fresh.justification = None;
    run_to(&h, &mut azure, &fresh, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active, "{:?}", st.message);
    // Role assignments alone (no federation) never need the check.
    let mut h = Harness::new("8h");
    h.privileges = PrivilegeObservation::Unknown;
    let mut plain = spec.clone();
    plain.federation = None;
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut AzureModel::default(), &plain, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active, "{:?}", st.message);
}

#[test]
fn a_role_written_by_name_and_by_guid_is_one_duplicate() {
    let h = Harness::new("8h");
    let mut s = spec(Some("1h"), None);
    s.roles[1] = RoleRequest {
        role: "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1".into(),
        scope: storage_scope()
            .to_uppercase()
            .replace("SUBSCRIPTIONS", "subscriptions"),
        condition: None,
    };
    let mut st = AccessGrantStatus::default();
    let mut azure = AzureModel::default();
    run_to(&h, &mut azure, &s, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Denied);
    assert!(azure.puts.is_empty());
    let msg = st.message.unwrap_or_default();
    assert!(
        msg.starts_with("spec.roles[1]: duplicates spec.roles[0]"),
        "{msg}"
    );
}

#[test]
fn audiences_and_quotas_are_the_policy_s() {
    let mut h = Harness::new("8h");
    h.policies = policy_with(|p| p.max_active_grants = Some(2));
    let mut s = spec(Some("1h"), None);
    s.justification = None;
    s.federation = Some(Box::new(Federation {
        service_account: "backup-runner".into(),
        audience: "https://kubernetes.default.svc".into(),
    }));
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut AzureModel::default(), &s, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Denied);
    let msg = st.message.unwrap_or_default();
    assert!(msg.contains("spec.federation.audience: audience \"https://kubernetes.default.svc\" is not allowed (allowed: api://AzureADTokenExchange)"), "{msg}");

    s.federation = None;
    h.live.insert("payments".into(), 2);
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut AzureModel::default(), &s, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Denied);
    let msg = st.message.unwrap_or_default();
    assert!(
        msg.contains("already has 2 live grants under this policy (maxActiveGrants 2)"),
        "{msg}"
    );
    // A running lease is never ended by the quota.
    h.live.insert("payments".into(), 1);
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &s, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active);
    h.live.insert("payments".into(), 5);
    run_to(&h, &mut azure, &s, &mut st, t0() + TimeDelta::minutes(5));
    assert_eq!(st.phase, GrantPhase::Active);
}

// ---- Approval and break-glass (docs/approval.md) ----

fn approval_policy(required: u32, break_glass: Option<&str>) -> Vec<NamedPolicy> {
    policy_with(|p| {
        p.approval = Some(ApprovalRules {
            required,
            approvers: Approvers {
                users: vec!["bob".into(), "carol".into()],
                groups: vec!["oncall".into()],
            },
            timeout: "4h".into(),
            ..Default::default()
        });
        p.break_glass = break_glass.map(|m| BreakGlassRules {
            max_duration: m.into(),
        });
    })
}

fn requested(by: &str) -> AccessGrantSpec {
    AccessGrantSpec {
        requester: Some(by.into()),
        ..spec(Some("1h"), None)
    }
}

fn decision(
    name: &str,
    user: &str,
    groups: &[&str],
    d: ApprovalDecision,
    generation: i64,
    at: DateTime<Utc>,
) -> crate::approval::ApprovalInput {
    crate::approval::ApprovalInput {
        name: name.into(),
        grant_uid: GRANT_UID.into(),
        generation,
        decision: d,
        username: user.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        comment: Some(format!("{name} says so")),
        created_at: Some(at),
    }
}

fn approved_by(t: &AccessGrantStatus) -> Option<(ConditionStatus, Reason, String)> {
    find_condition(t, "Approved").map(|c| {
        (
            c.status,
            Reason::from_name(&c.reason).unwrap_or(Reason::Pending),
            c.message.clone(),
        )
    })
}

#[test]
fn a_grant_waits_for_an_eligible_approver_other_than_its_requester() {
    let mut h = Harness::new("8h");
    h.policies = approval_policy(1, None);
    let mut azure = AzureModel::default();
    let spec = requested("alice");
    let mut st = AccessGrantStatus::default();
    let d = run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::PendingApproval);
    assert!(azure.objects.is_empty(), "nothing before approval");
    assert_eq!(
        d.requeue_at,
        Some(t0() + TimeDelta::hours(4)),
        "wakes at the timeout"
    );
    assert!(d.events.iter().any(|e| e.reason == Reason::PendingApproval));
    let (status, reason, _) = approved_by(&st).unwrap();
    assert_eq!(
        (status, reason),
        (ConditionStatus::False, Reason::PendingApproval)
    );
    assert_eq!(
        find_condition(&st, READY).unwrap().reason,
        "PendingApproval"
    );

    // The requester's own approval and a stranger's are not counted, and say so.
    h.approvals.decisions = vec![
        decision(
            "self",
            "alice",
            &["oncall"],
            ApprovalDecision::Approve,
            1,
            t0() + mins(1),
        ),
        decision(
            "stranger",
            "mallory",
            &["devs"],
            ApprovalDecision::Approve,
            1,
            t0() + mins(2),
        ),
    ];
    run_to(&h, &mut azure, &spec, &mut st, t0() + mins(3));
    assert_eq!(st.phase, GrantPhase::PendingApproval);
    let (_, _, msg) = approved_by(&st).unwrap();
    assert!(
        msg.contains("alice (the requester") && msg.contains("mallory (not an approver"),
        "{msg}"
    );
    assert!(azure.objects.is_empty());

    // An approver (by group) approves at 00:10: the lease starts then, not at creation.
    h.approvals.decisions.push(decision(
        "ok",
        "dave",
        &["oncall"],
        ApprovalDecision::Approve,
        1,
        t0() + mins(10),
    ));
    run_to(&h, &mut azure, &spec, &mut st, t0() + mins(11));
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(st.activated_at, Some(t0() + mins(10)));
    assert_eq!(st.expires_at, Some(t0() + mins(70)));
    assert_eq!(approved_by(&st).unwrap().0, ConditionStatus::True);
    assert_eq!(
        st.approvals
            .iter()
            .map(|a| a.approver.as_str())
            .collect::<Vec<_>>(),
        ["dave"]
    );
}

#[test]
fn the_approved_event_marks_the_moment_of_approval() {
    let mut h = Harness::new("8h");
    h.policies = approval_policy(1, None);
    let spec = requested("alice");
    let mut st = AccessGrantStatus::default();
    let azure = AzureModel::default();
    let d = h.decide(&spec, &st, false, t0(), &azure.view());
    st = d.status;
    h.approvals.decisions = vec![decision(
        "ok",
        "bob",
        &[],
        ApprovalDecision::Approve,
        1,
        t0() + mins(5),
    )];
    let d = h.decide(&spec, &st, false, t0() + mins(6), &azure.view());
    assert!(
        d.events.iter().any(|e| e.reason == Reason::Approved),
        "{:?}",
        d.events
    );
    assert_eq!(d.status.phase, GrantPhase::Activating);
}

#[test]
fn a_quorum_needs_distinct_approvers_of_the_current_generation() {
    let mut h = Harness::new("8h");
    h.policies = approval_policy(2, None);
    let mut azure = AzureModel::default();
    let spec = requested("alice");
    let mut st = AccessGrantStatus::default();
    h.generation = 2;
    h.approvals.decisions = vec![
        decision(
            "b1",
            "bob",
            &[],
            ApprovalDecision::Approve,
            2,
            t0() + mins(1),
        ),
        decision(
            "b2",
            "bob",
            &["oncall"],
            ApprovalDecision::Approve,
            2,
            t0() + mins(2),
        ),
        // For the grant before it was edited: a different request.
        decision(
            "c1",
            "carol",
            &[],
            ApprovalDecision::Approve,
            1,
            t0() + mins(3),
        ),
    ];
    run_to(&h, &mut azure, &spec, &mut st, t0() + mins(4));
    assert_eq!(st.phase, GrantPhase::PendingApproval);
    let (_, _, msg) = approved_by(&st).unwrap();
    assert!(
        msg.contains("1 more approval") && msg.contains("earlier version"),
        "{msg}"
    );
    h.approvals.decisions.push(decision(
        "c2",
        "carol",
        &[],
        ApprovalDecision::Approve,
        2,
        t0() + mins(5),
    ));
    run_to(&h, &mut azure, &spec, &mut st, t0() + mins(6));
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(st.activated_at, Some(t0() + mins(5)));
}

#[test]
fn one_eligible_deny_denies_and_a_timeout_denies() {
    let mut h = Harness::new("8h");
    h.policies = approval_policy(1, None);
    let spec = requested("alice");
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    h.approvals.decisions = vec![
        decision(
            "ok",
            "bob",
            &[],
            ApprovalDecision::Approve,
            1,
            t0() + mins(2),
        ),
        decision(
            "no",
            "carol",
            &[],
            ApprovalDecision::Deny,
            1,
            t0() + mins(1),
        ),
    ];
    run_to(&h, &mut azure, &spec, &mut st, t0() + mins(3));
    assert_eq!(st.phase, GrantPhase::Denied);
    assert!(azure.objects.is_empty());
    let (status, reason, msg) = approved_by(&st).unwrap();
    assert_eq!(
        (status, reason),
        (ConditionStatus::False, Reason::ApprovalDenied)
    );
    assert!(
        msg.contains("denied by carol") && msg.contains("no says so"),
        "{msg}"
    );

    h.approvals.decisions.clear();
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0() + TimeDelta::hours(4));
    assert_eq!(st.phase, GrantPhase::Denied);
    assert_eq!(approved_by(&st).unwrap().1, Reason::ApprovalTimedOut);
}

#[test]
fn no_requester_no_approval_and_no_admission_no_counting() {
    let mut h = Harness::new("8h");
    h.policies = approval_policy(1, None);
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec(Some("1h"), None), &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Denied);
    assert!(
        st.message
            .as_deref()
            .unwrap_or("")
            .contains("spec.requester")
    );

    h.approvals = crate::approval::ApprovalView {
        admission: Err("no ValidatingAdmissionPolicy enforces the approver rule".into()),
        decisions: vec![decision(
            "ok",
            "bob",
            &[],
            ApprovalDecision::Approve,
            1,
            t0(),
        )],
    };
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &requested("alice"), &mut st, t0() + mins(1));
    assert_eq!(st.phase, GrantPhase::PendingApproval);
    let (status, reason, msg) = approved_by(&st).unwrap();
    assert_eq!(
        (status, reason),
        (ConditionStatus::False, Reason::AdmissionPoliciesMissing)
    );
    assert!(msg.contains("approver rule"), "{msg}");
    assert!(azure.objects.is_empty());
}

#[test]
fn an_extension_needs_approval_again_and_the_lease_keeps_its_expiry_meanwhile() {
    let mut h = Harness::new("8h");
    h.policies = approval_policy(1, None);
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    h.approvals.decisions = vec![decision(
        "ok",
        "bob",
        &[],
        ApprovalDecision::Approve,
        1,
        t0(),
    )];
    run_to(&h, &mut azure, &requested("alice"), &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active);
    let expiry = st.expires_at;
    // Raised to 2h: generation 2, not approved yet.
    h.generation = 2;
    let longer = AccessGrantSpec {
        duration: Some("2h".into()),
        ..requested("alice")
    };
    let d = run_to(&h, &mut azure, &longer, &mut st, t0() + mins(20));
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(st.expires_at, expiry, "the lease keeps its expiry");
    assert!(!d.events.iter().any(|e| e.reason == Reason::Extended));
    let (status, reason, msg) = approved_by(&st).unwrap();
    assert_eq!(
        (status, reason),
        (ConditionStatus::False, Reason::PendingApproval)
    );
    assert!(msg.contains("extension"), "{msg}");
    // Approved: it moves.
    h.approvals.decisions.push(decision(
        "ok2",
        "carol",
        &[],
        ApprovalDecision::Approve,
        2,
        t0() + mins(25),
    ));
    let d = run_to(&h, &mut azure, &longer, &mut st, t0() + mins(26));
    assert_eq!(st.expires_at, Some(t0() + TimeDelta::hours(2)));
    assert!(d.events.iter().any(|e| e.reason == Reason::Extended));
    assert_eq!(approved_by(&st).unwrap().0, ConditionStatus::True);
}

#[test]
fn break_glass_activates_loudly_within_its_bounds_and_a_later_deny_ends_it() {
    let mut h = Harness::new("8h");
    h.policies = approval_policy(1, Some("1h"));
    let mut azure = AzureModel::default();
    let glass = AccessGrantSpec {
        break_glass: true,
        duration: Some("30m".into()),
        ..requested("alice")
    };
    let mut st = AccessGrantStatus::default();
    let d = h.decide(&glass, &st, false, t0(), &azure.view());
    assert!(
        d.events
            .iter()
            .any(|e| e.reason == Reason::BreakGlassActivated && e.warning),
        "{:?}",
        d.events
    );
    run_to(&h, &mut azure, &glass, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(
        find_condition(&st, "BreakGlass").map(|c| c.status),
        Some(ConditionStatus::True)
    );
    // Reviewed after the fact: an approver denies, and the lease ends at once.
    h.approvals.decisions = vec![decision(
        "review",
        "bob",
        &[],
        ApprovalDecision::Deny,
        1,
        t0() + mins(5),
    )];
    run_to(&h, &mut azure, &glass, &mut st, t0() + mins(6));
    assert_eq!(st.phase, GrantPhase::Revoked);
    assert!(azure.objects.is_empty());
    assert_eq!(st.ended_at, Some(t0() + mins(6)));
    assert_eq!(approved_by(&st).unwrap().1, Reason::ApprovalDenied);

    // Beyond breakGlass.maxDuration, or without a justification: denied, naming the field.
    h.approvals.decisions.clear();
    for (spec, field) in [
        (
            AccessGrantSpec {
                duration: Some("2h".into()),
                ..glass.clone()
            },
            "spec.duration",
        ),
        (
            AccessGrantSpec {
                justification: None,
                ..glass.clone()
            },
            "spec.justification",
        ),
    ] {
        let mut st = AccessGrantStatus::default();
        run_to(&h, &mut azure, &spec, &mut st, t0());
        assert_eq!(st.phase, GrantPhase::Denied, "{field}");
        assert!(
            st.message.as_deref().unwrap_or("").contains(field),
            "{:?}",
            st.message
        );
    }
    // Under a policy without breakGlass it is refused too.
    h.policies = approval_policy(1, None);
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &glass, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Denied);
    assert!(
        st.message
            .as_deref()
            .unwrap_or("")
            .contains("spec.breakGlass")
    );
}

#[derive(Clone, Debug)]
struct ApprovalScenario {
    required: u32,
    break_glass: bool,
    /// (approver index, deny?, generation offset, minutes after creation)
    decisions: Vec<(usize, bool, i64, i64)>,
    admission: bool,
    generation: i64,
}

fn approval_scenario() -> impl Strategy<Value = ApprovalScenario> {
    (
        1u32..=3,
        any::<bool>(),
        proptest::collection::vec(
            (
                0usize..5,
                proptest::bool::weighted(0.2),
                -1i64..=0,
                0i64..300,
            ),
            0..8,
        ),
        proptest::bool::weighted(0.85),
        1i64..=3,
    )
        .prop_map(
            |(required, break_glass, decisions, admission, generation)| ApprovalScenario {
                required,
                break_glass,
                decisions,
                admission,
                generation,
            },
        )
}

/// alice asks; bob and carol are approvers by name, dave by group; mallory is nobody.
const PEOPLE: [(&str, &[&str]); 5] = [
    ("alice", &["oncall"]),
    ("bob", &[]),
    ("carol", &[]),
    ("dave", &["oncall"]),
    ("mallory", &["devs"]),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No activation without a quorum of distinct eligible approvers other than the requester
    /// (unless break-glass); the requester never counts; an eligible Deny always ends it.
    #[test]
    fn approval_invariants_hold(s in approval_scenario()) {
        let mut h = Harness::new("8h");
        h.policies = approval_policy(s.required, Some("1h"));
        h.generation = s.generation;
        h.approvals = crate::approval::ApprovalView {
            admission: if s.admission { Ok(()) } else { Err("missing".into()) },
            decisions: s
                .decisions
                .iter()
                .enumerate()
                .map(|(i, (who, deny, offset, at))| {
                    let (user, groups) = PEOPLE[*who];
                    decision(
                        &format!("d{i}"),
                        user,
                        groups,
                        if *deny { ApprovalDecision::Deny } else { ApprovalDecision::Approve },
                        (s.generation + offset).max(1),
                        t0() + mins(*at),
                    )
                })
                .collect(),
        };
        let spec = AccessGrantSpec {
            break_glass: s.break_glass,
            duration: Some("30m".into()),
            ..requested("alice")
        };
        let mut azure = AzureModel::default();
        let mut st = AccessGrantStatus::default();
        let now = t0() + mins(301);
        run_to(&h, &mut azure, &spec, &mut st, now);
        let eligible = |who: usize| (1..=3).contains(&who);
        let approvers: std::collections::BTreeSet<usize> = s
            .decisions
            .iter()
            .filter(|(who, deny, offset, _)| {
                eligible(*who) && !deny && (s.generation + offset).max(1) == s.generation
            })
            .map(|(who, ..)| *who)
            .collect();
        let denied = s.admission && s.decisions.iter().any(|(who, deny, ..)| eligible(*who) && *deny);
        let quorum = s.admission && approvers.len() >= s.required as usize;
        let live = st.activated_at.is_some() && !st.phase.is_terminal();
        if denied {
            prop_assert!(!live, "an eligible Deny left the lease live: {:?}", st.phase);
        }
        if live && !s.break_glass {
            prop_assert!(quorum, "activated without a quorum: {:?} {:?}", st.phase, st.message);
        }
        // The requester's own approval is never what counts.
        prop_assert!(st.approvals.iter().all(|a| a.approver != "alice"));
        if !s.admission {
            prop_assert!(st.approvals.is_empty());
        }
    }
}

/// The resource group the lock tests lock.
fn locked_rg() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/payments-rg")
}

fn rg_lock() -> ManagementLock {
    ManagementLock {
        id: format!(
            "{}/providers/Microsoft.Authorization/locks/no-delete",
            locked_rg()
        ),
        name: "no-delete".into(),
        level: LockLevel::CanNotDelete,
        notes: None,
    }
}

fn tolerating(h: &mut Harness) {
    h.policies = policy_with(|p| p.locks = LockTolerance::Tolerate);
}

#[test]
fn a_lock_denies_the_grant_naming_it_and_creates_nothing() {
    let mut h = Harness::new("8h");
    h.locks = LockObservation::Known(vec![rg_lock()]);
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    let d = h.reconcile(
        &mut azure,
        &spec(Some("1h"), None),
        &mut st,
        false,
        t0(),
        &mut std::iter::empty(),
    );
    assert_eq!(st.phase, GrantPhase::Denied);
    assert!(azure.puts.is_empty());
    let msg = st.message.clone().unwrap_or_default();
    assert!(
        msg.contains(&rg_lock().id)
            && msg.contains("CanNotDelete")
            && msg.contains("locks: Tolerate"),
        "{msg}"
    );
    assert!(
        d.events
            .iter()
            .any(|e| e.reason == Reason::ScopeLocked && e.warning)
    );
    let allowed = conditions::find(&st, conditions::POLICY_ALLOWED).unwrap();
    assert_eq!(
        (allowed.status, allowed.reason.as_ref()),
        (ConditionStatus::False, "ScopeLocked")
    );
}

#[test]
fn unknown_locks_hold_the_activation_and_retry() {
    let mut h = Harness::new("8h");
    h.locks = LockObservation::Unknown;
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    let spec = spec(Some("1h"), None);
    let d = h.reconcile(
        &mut azure,
        &spec,
        &mut st,
        false,
        t0(),
        &mut std::iter::empty(),
    );
    assert!(azure.puts.is_empty());
    assert!(st.activated_at.is_none());
    assert!(d.retry_after.is_some());
    assert!(!st.phase.is_terminal(), "{:?}", st.phase);
    // Known and empty: it activates.
    h.locks = LockObservation::Known(Vec::new());
    h.reconcile(
        &mut azure,
        &spec,
        &mut st,
        false,
        t0(),
        &mut std::iter::empty(),
    );
    assert_eq!(st.phase, GrantPhase::Active);
}

#[test]
fn a_tolerated_lock_activates_and_a_blocked_revocation_is_reported_until_the_lock_goes() {
    let mut h = Harness::new("8h");
    tolerating(&mut h);
    h.locks = LockObservation::Known(vec![rg_lock()]);
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    let mut spec = spec(Some("1h"), None);
    h.reconcile(
        &mut azure,
        &spec,
        &mut st,
        false,
        t0(),
        &mut std::iter::empty(),
    );
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(azure.objects.len(), 3);
    // Revoked: every delete is refused by the lock.
    spec.revoked = true;
    let now = t0() + mins(5);
    let d = h.reconcile(
        &mut azure,
        &spec,
        &mut st,
        false,
        now,
        &mut std::iter::repeat(Fault::Locked),
    );
    assert_eq!(st.phase, GrantPhase::Revoking);
    assert_eq!(azure.objects.len(), 3);
    let blocked = conditions::find(&st, conditions::REVOCATION_BLOCKED).unwrap();
    assert_eq!(
        (blocked.status, blocked.reason.as_ref()),
        (ConditionStatus::True, "ScopeLocked")
    );
    assert!(
        blocked.message.contains(&locked_rg()),
        "{}",
        blocked.message
    );
    assert!(d.retry_after.is_some());
    // A later retry that meets the lock again says so again.
    h.reconcile(
        &mut azure,
        &spec,
        &mut st,
        false,
        now + mins(1),
        &mut std::iter::repeat(Fault::Locked),
    );
    assert_eq!(
        conditions::find(&st, conditions::REVOCATION_BLOCKED).map(|c| c.status),
        Some(ConditionStatus::True)
    );
    // The lock is removed: the deletes go through and the condition clears.
    h.reconcile(
        &mut azure,
        &spec,
        &mut st,
        false,
        now + mins(2),
        &mut std::iter::empty(),
    );
    assert_eq!(st.phase, GrantPhase::Revoked);
    assert!(azure.objects.is_empty());
    let cleared = conditions::find(&st, conditions::REVOCATION_BLOCKED).unwrap();
    assert_eq!(cleared.status, ConditionStatus::False);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// DESIGN §12 "Locks": under a policy that does not tolerate locks, nothing is ever created
    /// while a lock applies or while the locks are unknown, whatever Azure does; a lock seen
    /// before the window ends denies the grant, naming it.
    #[test]
    fn no_activation_under_an_untolerated_lock(
        seen in prop::collection::vec(0u8..3, 1..10),
        faults in prop::collection::vec(0u8..10, 0..20),
        step in 0i64..20,
        federated in any::<bool>(),
    ) {
        let mut h = Harness::new("8h");
        let mut spec = spec(Some("2h"), None);
        if !federated {
            spec.federation = None;
        }
        let mut azure = AzureModel::default();
        let mut st = AccessGrantStatus::default();
        let mut faults = faults.iter().map(|n| fault_of(*n)).collect::<Vec<_>>().into_iter();
        let mut now = t0();
        let mut lock_seen = false;
        for l in &seen {
            h.locks = match l {
                0 => LockObservation::Unknown,
                _ => LockObservation::Known(vec![rg_lock()]),
            };
            lock_seen |= *l != 0;
            h.reconcile(&mut azure, &spec, &mut st, false, now, &mut faults);
            prop_assert!(azure.puts.is_empty(), "created under {:?}", h.locks);
            prop_assert!(st.activated_at.is_none());
            if lock_seen {
                prop_assert_eq!(st.phase, GrantPhase::Denied);
                let msg = st.message.clone().unwrap_or_default();
                prop_assert!(msg.contains(&rg_lock().id), "{}", msg);
            }
            now += mins(step);
        }
    }
}

#[test]
fn a_scheduled_grant_waits_for_its_start_before_the_locks_are_read() {
    let mut h = Harness::new("8h");
    // The controller reads locks once the window has started.
    h.locks = LockObservation::Unknown;
    let window = Window {
        not_before: Some((t0() + mins(30)).to_rfc3339()),
        not_after: None,
    };
    let spec = spec(Some("1h"), Some(window));
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    h.reconcile(
        &mut azure,
        &spec,
        &mut st,
        false,
        t0(),
        &mut std::iter::empty(),
    );
    assert_eq!(st.phase, GrantPhase::Scheduled);
    // At its start a lock is found: denied, nothing created.
    h.locks = LockObservation::Known(vec![rg_lock()]);
    h.reconcile(
        &mut azure,
        &spec,
        &mut st,
        false,
        t0() + mins(30),
        &mut std::iter::empty(),
    );
    assert_eq!(st.phase, GrantPhase::Denied);
    assert!(azure.puts.is_empty());
}

fn pim_harness() -> Harness {
    let mut h = Harness::new("8h");
    h.policies = policy_with(|p| {
        p.azure = Some(AzureRules {
            expiry: Expiry::Pim,
        });
    });
    h
}

fn role_spec(duration: &str) -> AccessGrantSpec {
    let mut s = spec(Some(duration), None);
    s.federation = None;
    s.justification = None;
    s
}

#[test]
fn under_pim_azure_ends_every_assignment_one_grace_after_the_lease() {
    let h = pim_harness();
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    let start = t0() + TimeDelta::milliseconds(400);
    let d = h.decide(&role_spec("1h"), &st, false, start, &azure.view());
    let planned: Vec<_> = d
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::CreateRoleAssignment(p) => p.schedule,
            _ => None,
        })
        .collect();
    let expected = AssignmentSchedule {
        starts_at: t0(),
        ends_at: t0() + TimeDelta::minutes(65),
    };
    assert_eq!(planned, vec![expected; 2]);
    // Recorded before the request is made, without an ID (Azure names the assignment).
    assert!(
        d.status
            .role_assignments
            .iter()
            .all(|r| r.schedule == Some(expected) && r.id.is_none())
    );
    run_to(&h, &mut azure, &role_spec("1h"), &mut st, start);
    assert_eq!(st.phase, GrantPhase::Active, "{:?}", st.message);
    assert_eq!(azure.schedules.len(), 2);
    // An extension moves Azure's end too, within the grace.
    run_to(
        &h,
        &mut azure,
        &role_spec("2h"),
        &mut st,
        t0() + TimeDelta::minutes(30),
    );
    assert_eq!(st.phase, GrantPhase::Active);
    assert_eq!(st.expires_at, Some(t0() + TimeDelta::hours(2)));
    assert!(
        azure
            .schedules
            .values()
            .all(|s| s.ends_at == t0() + TimeDelta::minutes(125))
    );
    assert!(
        st.role_assignments
            .iter()
            .all(|r| r.schedule.map(|s| s.ends_at) == Some(t0() + TimeDelta::minutes(125)))
    );
    // At expiry lapse removes them itself (AdminRemove, named from the schedule's start).
    let d = h.decide(
        &role_spec("2h"),
        &st,
        false,
        t0() + TimeDelta::hours(2),
        &azure.view(),
    );
    let removals: Vec<_> = d
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::DeleteRoleAssignment { schedule_start, .. } => Some(*schedule_start),
            _ => None,
        })
        .collect();
    assert_eq!(removals, vec![Some(t0()); 2]);
}

#[test]
fn a_revoke_within_pims_minimum_waits_for_it_and_says_why() {
    let h = pim_harness();
    let mut azure = AzureModel::default();
    let mut spec = role_spec("1h");
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &spec, &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Active);
    spec.revoked = true;
    let d = run_to(&h, &mut azure, &spec, &mut st, t0() + TimeDelta::minutes(1));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(st.phase, GrantPhase::Revoking);
    assert_eq!(d.requeue_at, Some(t0() + TimeDelta::minutes(5)));
    let why = d
        .events
        .iter()
        .find(|e| e.reason == Reason::PimMinimumActive)
        .expect("the wait is told");
    assert!(
        why.message.contains("ActiveDurationTooShort"),
        "{}",
        why.message
    );
    assert!(
        why.message.contains("2026-12-01T02:05:00Z"),
        "{}",
        why.message
    );
    // A deleted grant keeps its finalizer meanwhile.
    let d = h.decide(
        &spec,
        &st,
        true,
        t0() + TimeDelta::minutes(2),
        &azure.view(),
    );
    assert!(!d.finalized);
    // Told once.
    let d = run_to(&h, &mut azure, &spec, &mut st, t0() + TimeDelta::minutes(3));
    assert!(
        !d.events
            .iter()
            .any(|e| e.reason == Reason::PimMinimumActive)
    );
    // Right at the minimum the removal goes.
    run_to(&h, &mut azure, &spec, &mut st, t0() + TimeDelta::minutes(5));
    assert_eq!(st.phase, GrantPhase::Revoked, "{:?}", st.message);
    assert!(azure.objects.is_empty());
}

#[test]
fn under_pim_a_lease_shorter_than_pims_minimum_is_denied() {
    let h = pim_harness();
    let mut azure = AzureModel::default();
    let mut st = AccessGrantStatus::default();
    run_to(&h, &mut azure, &role_spec("4m"), &mut st, t0());
    assert_eq!(st.phase, GrantPhase::Denied);
    let msg = st.message.clone().unwrap_or_default();
    assert!(
        msg.contains("azure.expiry: PIM") && msg.contains("300s"),
        "{msg}"
    );
    assert!(azure.puts.is_empty());
}

#[test]
fn a_tenant_without_pims_licence_fails_the_grant_naming_it() {
    let h = pim_harness();
    let mut st = AccessGrantStatus::default();
    let mut view = AzureView {
        complete: true,
        ..Default::default()
    };
    let d = h.decide(&role_spec("1h"), &st, false, t0(), &view);
    st = d.status.clone();
    for a in &d.actions {
        view.set(
            a.key().clone(),
            Observed::CreateFailed(Failure::Terminal {
                code: PIM_LICENCE_REQUIRED.into(),
                message: "The tenant needs an AAD Premium 2 license.".into(),
            }),
        );
    }
    let d = h.decide(&role_spec("1h"), &st, false, t0(), &view);
    assert_eq!(d.status.end_reason, Some(EndReason::Failed));
    let msg = d.status.message.clone().unwrap_or_default();
    assert!(
        msg.contains("AadPremiumLicenseRequired") && msg.contains("does not fall back"),
        "{msg}"
    );
    // Nothing was made, nothing is created instead.
    assert!(!d.actions.iter().any(Action::is_create));
}
// ---- Workflows (docs/approval.md): auto-approval, escalation, extension limits, hours ----
mod tickets;
mod usage;
mod workflows;
