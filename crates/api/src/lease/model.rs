//! What the lease decision core reads and returns.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::reason::Reason;
use crate::arm::ArmId;
pub use crate::lock::{LockLevel, LockObservation, ManagementLock};
use crate::naming::Owner;
use crate::policy::PolicyContext;
pub use crate::v1alpha1::AssignmentSchedule;
// Defined with policy evaluation, which reads them; the controller fills them in as lease input.
pub use crate::policy::{PrivilegeObservation, StandingPrivilege};
use crate::v1alpha1::{AccessGrantSpec, AccessGrantStatus};

/// Operator-wide settings the core needs.
#[derive(Clone, Debug)]
pub struct CoreSettings {
    /// Seeds every derived name, so it alone decides which Azure objects are this operator's.
    pub owner: Owner,
    /// The OIDC issuer of this cluster's ServiceAccount tokens (operator configuration, never
    /// user input).
    pub oidc_issuer: String,
    /// How long after the lease end an unfinished revocation is reported overdue.
    pub overdue_after: TimeDelta,
    /// How soon to look again when something could not be observed or a call failed.
    pub retry_after: Duration,
    /// The principal lapse-operator itself acts as in Azure: never granted to, never federated.
    pub operator_principal: Option<Uuid>,
    /// How long from a lease's start an `AuthorizationFailed` refusal of a create is retried:
    /// Azure RBAC for the operator's own identity can take minutes to propagate.
    pub authorization_grace: TimeDelta,
    /// How long access may outlast the deletion of a lease's objects (`accessMayContinueUntil`).
    pub residual: super::ResidualBounds,
    /// Azure-enforced expiry through PIM (`azure.expiry: PIM`): the grace and PIM's minimum.
    pub pim: super::PimSettings,
}

/// How far the recorded status can be believed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum StatusTrust {
    /// There is no status: a new grant (or one whose status was removed). The core derives
    /// everything again; the lease start is anchored on server-set times, so nothing gets longer.
    #[default]
    Absent,
    /// The status carries this operator's seal: it is the operator's own record.
    Sealed,
    /// The status is not the operator's record (someone else wrote it). Nothing in it is read:
    /// the lease is ended and the objects the spec derives are removed.
    Tampered { detail: String },
}

/// One grant as the core sees it.
#[derive(Clone, Copy, Debug)]
pub struct GrantView<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// `metadata.uid`: approvals name it.
    pub uid: &'a str,
    pub generation: Option<i64>,
    /// `metadata.deletionTimestamp` is set: revoke, then let the object go.
    pub deleting: bool,
    /// `metadata.creationTimestamp`, set by the API server: where a lease without
    /// `window.notBefore` starts, whatever the status says.
    pub created_at: Option<DateTime<Utc>>,
    pub spec: &'a AccessGrantSpec,
    pub status: &'a AccessGrantStatus,
    /// Whether `status` is the operator's own record.
    pub trust: &'a StatusTrust,
}

/// Identity of one Azure object: the tuple Azure itself keeps unique, not the grant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKey {
    RoleAssignment {
        principal_id: Uuid,
        role_guid: Uuid,
        scope: String,
    },
    Fic {
        target: String,
        issuer: String,
        subject: String,
    },
}

/// Where a FIC lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FicTarget {
    /// A user-assigned managed identity (ARM).
    ManagedIdentity(ArmId),
    /// An app registration by object ID (Microsoft Graph).
    Application(Uuid),
}

impl FicTarget {
    /// Lowercase form used in [`ObjectKey::Fic`] and as the naming seed.
    pub fn key(&self) -> String {
        match self {
            Self::ManagedIdentity(id) => id.key().to_owned(),
            Self::Application(id) => format!("/applications/{id}"),
        }
    }

    /// The FIC's resource path: an ARM ID, or a Graph path relative to `v1.0`.
    pub fn credential_id(&self, name: &str) -> String {
        match self {
            Self::ManagedIdentity(id) => format!("{id}/federatedIdentityCredentials/{name}"),
            Self::Application(id) => {
                format!("/applications/{id}/federatedIdentityCredentials/{name}")
            }
        }
    }
}

/// A role assignment to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignmentPlan {
    pub key: ObjectKey,
    /// The UUIDv5 name.
    pub name: Uuid,
    pub scope: ArmId,
    pub role_guid: Uuid,
    /// Full role definition ID to send in the PUT.
    pub role_definition_id: String,
    pub principal_id: Uuid,
    pub condition: Option<String>,
    /// Description starting with the ownership marker.
    pub description: String,
    /// The role as the user wrote it.
    pub written_role: String,
    /// The role assignment's resource ID (for a plain one; Azure names one made through PIM).
    pub id: String,
    /// Requested through Azure PIM with this schedule (`azure.expiry: PIM`), not created.
    pub schedule: Option<AssignmentSchedule>,
}

/// A federated identity credential to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FicPlan {
    pub key: ObjectKey,
    pub target: FicTarget,
    pub name: String,
    pub issuer: String,
    pub subject: String,
    pub audience: String,
    /// Description with the ownership marker (Graph FICs carry one; ARM FICs are owned by name).
    pub description: String,
    pub id: String,
}

/// A call the controller makes on the core's behalf. Deletes always come first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    DeleteRoleAssignment {
        key: ObjectKey,
        scope: String,
        name: Uuid,
        id: String,
        /// The assignment was made through PIM with a schedule starting here: it is removed by
        /// an `AdminRemove` request (named from this start), not deleted.
        schedule_start: Option<DateTime<Utc>>,
    },
    DeleteFic {
        key: ObjectKey,
        target: FicTarget,
        name: String,
    },
    CreateRoleAssignment(RoleAssignmentPlan),
    CreateFic(FicPlan),
    /// Moves the end Azure enforces on a PIM-made assignment (`AdminExtend` when later,
    /// `AdminUpdate` when earlier).
    RescheduleRoleAssignment(Reschedule),
}

/// A new end for a PIM-made role assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reschedule {
    pub key: ObjectKey,
    pub scope: ArmId,
    pub principal_id: Uuid,
    pub role_guid: Uuid,
    pub role_definition_id: String,
    pub ends_at: DateTime<Utc>,
    /// Later than the end Azure holds now.
    pub extend: bool,
}

impl Action {
    pub fn key(&self) -> &ObjectKey {
        match self {
            Self::DeleteRoleAssignment { key, .. } | Self::DeleteFic { key, .. } => key,
            Self::CreateRoleAssignment(p) => &p.key,
            Self::CreateFic(p) => &p.key,
            Self::RescheduleRoleAssignment(r) => &r.key,
        }
    }

    pub fn is_create(&self) -> bool {
        matches!(self, Self::CreateRoleAssignment(_) | Self::CreateFic(_))
    }

    pub fn is_delete(&self) -> bool {
        matches!(
            self,
            Self::DeleteRoleAssignment { .. } | Self::DeleteFic { .. }
        )
    }
}

/// How an Azure call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Try again (5xx, network, a conflict that clears).
    Retryable { message: String },
    /// Azure asked us to wait.
    Throttled {
        retry_after: Duration,
        message: String,
    },
    /// Azure refused for good: its error code and message.
    Terminal { code: String, message: String },
}

/// What the controller knows of one Azure object.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Observed {
    /// Not looked at, or the look failed: the core neither creates nor trusts it.
    #[default]
    Unknown,
    Absent,
    /// Exists; `owned` when it carries this cluster's marker. `id` names a standing assignment.
    Present {
        owned: bool,
        id: Option<String>,
    },
    /// This reconcile's create failed.
    CreateFailed(Failure),
    /// This reconcile's delete failed.
    DeleteFailed(Failure),
    /// This reconcile's move of a PIM-made assignment's end failed; the assignment stands.
    RescheduleFailed(Failure),
}

/// One object's observation plus what the other leases need.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ObjectObservation {
    pub observed: Observed,
    /// Another live lease (not this grant) needs this object: ending this lease must not delete it.
    pub needed_by_other_lease: bool,
    /// A role assignment made through PIM: the schedule Azure holds for it.
    pub schedule: Option<AssignmentSchedule>,
    /// For an object someone else holds (`Present { owned: false }`): who, as it says itself
    /// (untrusted: it decides only when a lease using it looks again).
    pub holder: super::Holder,
}

/// The Azure objects observed for one grant.
#[derive(Clone, Debug, Default)]
pub struct AzureView {
    pub objects: HashMap<ObjectKey, ObjectObservation>,
    /// The controller's inventory is complete and fresh: a key it does not hold is absent.
    /// Otherwise a missing key is unknown.
    pub complete: bool,
}

impl AzureView {
    pub fn get(&self, key: &ObjectKey) -> ObjectObservation {
        match self.objects.get(key) {
            Some(o) => o.clone(),
            None if self.complete => ObjectObservation {
                observed: Observed::Absent,
                ..ObjectObservation::default()
            },
            None => ObjectObservation::default(),
        }
    }

    pub fn set(&mut self, key: ObjectKey, observed: Observed) {
        self.objects.entry(key).or_default().observed = observed;
    }
}

/// What is known of the identity's principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityObservation {
    /// The principal (object) ID that role assignments go to.
    Resolved { principal_id: Uuid },
    /// Azure says the identity does not exist.
    NotFound { code: String, message: String },
    /// Not resolved yet (not looked up, or the look-up failed transiently).
    Unknown,
}

/// Everything one decision reads.
#[derive(Clone, Copy, Debug)]
pub struct LeaseInput<'a> {
    pub now: DateTime<Utc>,
    pub settings: &'a CoreSettings,
    pub grant: GrantView<'a>,
    pub policy: PolicyContext<'a>,
    pub identity: &'a IdentityObservation,
    pub privileges: &'a PrivilegeObservation,
    /// The management locks that apply to the grant's scopes and identity (looked at before
    /// activation only; a running or ending lease does not read it).
    pub locks: &'a LockObservation,
    pub azure: &'a AzureView,
    /// The AccessApprovals for this grant, and whether they can be believed.
    pub approvals: &'a crate::approval::ApprovalView,
    /// What the ticket checkers said of the tickets the grant names (a ticket not in it is
    /// unknown).
    pub tickets: &'a crate::ticket::TicketView,
    /// Usage ledger batches for this grant not yet counted in a status (docs/usage.md); the
    /// ones at or below `status.usage.sequence` are ignored.
    pub usage: &'a [crate::usage::UsageDelta],
    /// When the controller's delete plan starts this lease's deletes before its end, because
    /// more leases of a subscription end together than ARM's delete budget deletes in time
    /// (`budget` names the subscription).
    pub early_end: Option<&'a super::EarlyEnd<String>>,
}

/// An Event to record on the grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseEvent {
    pub warning: bool,
    pub reason: Reason,
    pub message: String,
}

/// What one decision returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: AccessGrantStatus,
    /// Calls to make, deletes first. Persist `status` before making them.
    pub actions: Vec<Action>,
    pub events: Vec<LeaseEvent>,
    /// Wake up at this instant (`notBefore`, `expiresAt`).
    pub requeue_at: Option<DateTime<Utc>>,
    /// Wake up after this delay (a failure to retry, something unobserved, a throttle).
    pub retry_after: Option<Duration>,
    /// The object is being deleted and nothing of this lease remains: drop the finalizer.
    pub finalized: bool,
    /// The status was not the operator's record: set `spec.revoked` (which cannot be undone), so
    /// no replayed status can bring the lease back. Carries what was wrong.
    pub tampered: Option<String>,
}
