use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::patterns::*;

/// The token audience Entra expects for workload identity federation.
pub const DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Time-bound Azure access for one workload identity.
///
/// The operator creates the Azure role assignments (and, with `federation`, a federated identity
/// credential) when the lease starts and deletes them when it lapses, is revoked or the object is
/// deleted. Terminal objects stay as the audit record.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "lapse.dev",
    version = "v1alpha1",
    kind = "AccessGrant",
    doc = "Time-bound Azure access for one workload identity: role assignments (and optionally a federated identity credential) that exist only while the lease lasts.",
    namespaced,
    status = "AccessGrantStatus",
    shortname = "ag",
    shortname = "grant",
    category = "lapse",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Lifecycle phase of the lease"),
    printcolumn(name = "Identity", type_ = "string", json_path = ".status.identityName", description = "The workload identity receiving access"),
    printcolumn(name = "Roles", type_ = "string", json_path = ".status.roleSummary", description = "Granted roles"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt", description = "When the lease lapses (RFC 3339)"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Scope", type_ = "string", json_path = ".status.scopeSummary", priority = 1, description = "Scopes of the role assignments"),
    printcolumn(name = "Policy", type_ = "string", json_path = ".status.policy", priority = 1, description = "The AccessPolicy that allowed the grant"),
    printcolumn(name = "Access-May-Continue", type_ = "string", json_path = ".status.accessMayContinueUntil", priority = 1, description = "Upper bound of when access really ends: ARM's role assignment cache and token lifetimes"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.activatedAt) || self.spec.identity == oldSelf.spec.identity").message("spec.identity is immutable once the grant has activated").field_path(".spec.identity"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.activatedAt) || self.spec.roles == oldSelf.spec.roles").message("spec.roles is immutable once the grant has activated").field_path(".spec.roles"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.activatedAt) || (has(self.spec.federation) == has(oldSelf.spec.federation) && (!has(self.spec.federation) || self.spec.federation == oldSelf.spec.federation))").message("spec.federation is immutable once the grant has activated").field_path(".spec.federation"),
)]
#[x_kube(
    validation = Rule::new("has(self.duration) || (has(self.window) && has(self.window.notAfter))").message("either spec.duration or spec.window.notAfter is required").field_path(".duration"),
    validation = Rule::new("!has(oldSelf.revoked) || !oldSelf.revoked || (has(self.revoked) && self.revoked)").message("spec.revoked cannot be undone once set").field_path(".revoked"),
    validation = Rule::new("has(self.requester) == has(oldSelf.requester) && (!has(self.requester) || self.requester == oldSelf.requester)").message("spec.requester cannot be set, changed or removed after creation").field_path(".requester"),
    validation = Rule::new("has(self.requesterGroups) == has(oldSelf.requesterGroups) && (!has(self.requesterGroups) || self.requesterGroups == oldSelf.requesterGroups)").message("spec.requesterGroups cannot be set, changed or removed after creation").field_path(".requesterGroups"),
    validation = Rule::new("!has(oldSelf.breakGlass) || !oldSelf.breakGlass || (has(self.breakGlass) && self.breakGlass)").message("spec.breakGlass cannot be undone once set").field_path(".breakGlass"),
)]
#[serde(rename_all = "camelCase")]
pub struct AccessGrantSpec {
    /// The workload identity that receives access: exactly one kind.
    pub identity: IdentityRef,
    /// The role assignments to create, 1 to 16.
    #[schemars(length(min = 1, max = MAX_ROLES))]
    pub roles: Vec<RoleRequest>,
    /// Lets a ServiceAccount of this namespace act as the identity through a federated identity
    /// credential (managed identities and applications only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation: Option<Box<Federation>>,
    /// Lease length from activation, as a Go duration (`90m`, `1h30m`). Required unless
    /// `window.notAfter` is set; with both, the lease ends at whichever comes first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 64))]
    pub duration: Option<String>,
    /// An absolute window for the lease. A grant whose `notAfter` has passed never activates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Box<Window>>,
    /// Why the access is needed; policies may require a pattern (a ticket reference, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_JUSTIFICATION_LEN))]
    pub justification: Option<String>,
    /// Set to `true` to end the lease early and keep the record. Cannot be undone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
    /// Who asks: the Kubernetes user creating the grant. Admission makes it equal the creating
    /// user (`config/admission/approval.yaml`) and it never changes. Required under a policy
    /// with `approval`: approvers decide on a request by someone, never their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_USERNAME_LEN))]
    pub requester: Option<String>,
    /// Groups the requester asks as: admission makes them a subset of the creating user's
    /// groups (`config/admission/approval.yaml`) and they never change. An AccessPolicy's
    /// `approval.autoApprove` rule that lists `requesterGroups` matches only a grant whose
    /// groups meet them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_REQUESTER_GROUPS), inner(length(min = 1, max = MAX_USERNAME_LEN)))]
    pub requester_groups: Vec<String>,
    /// Activate without waiting for approvals, where the policy allows break-glass: limited to
    /// its `breakGlass.maxDuration`, justification required, loud (condition, Warning Event,
    /// notification, audit line), and revoked at once by an eligible approver's Deny.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
}

/// Exactly one identity kind.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(validation = Rule::new("[has(self.managedIdentity), has(self.servicePrincipal), has(self.application)].filter(x, x).size() == 1").message("spec.identity must set exactly one of managedIdentity, servicePrincipal or application"))]
#[serde(rename_all = "camelCase")]
pub struct IdentityRef {
    /// Resource ID of a user-assigned managed identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = MANAGED_IDENTITY_PATTERN), length(max = MAX_ARM_ID_LEN))]
    pub managed_identity: Option<String>,
    /// A service principal (enterprise application) by object ID: role assignments only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_principal: Option<ObjectIdRef>,
    /// An app registration by object ID: federation goes on the application (Microsoft Graph),
    /// role assignments go to its service principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<ObjectIdRef>,
}

/// An Entra directory object by ID.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectIdRef {
    /// The object ID (a GUID).
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub object_id: String,
}

/// One Azure role at one scope.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RoleRequest {
    /// A built-in or custom role name, a role definition GUID, or a full role definition ID.
    #[schemars(length(min = 1, max = MAX_ROLE_LEN))]
    pub role: String,
    /// The ARM scope: a subscription, resource group or resource ID.
    #[schemars(regex(pattern = ARM_ID_PATTERN), length(min = 1, max = MAX_ARM_ID_LEN))]
    pub scope: String,
    /// Optional ABAC condition (condition version 2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_CONDITION_LEN))]
    pub condition: Option<String>,
}

/// Workload identity federation for a ServiceAccount of the grant's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Federation {
    /// The ServiceAccount name (in the grant's namespace; other namespaces cannot be named).
    #[schemars(regex(pattern = SERVICE_ACCOUNT_PATTERN), length(min = 1, max = 253))]
    pub service_account: String,
    /// The token audience; defaults to `api://AzureADTokenExchange`.
    #[serde(default = "default_audience")]
    #[schemars(length(min = 1, max = MAX_AUDIENCE_LEN))]
    pub audience: String,
}

fn default_audience() -> String {
    DEFAULT_AUDIENCE.to_owned()
}

/// An absolute lease window (RFC 3339 timestamps).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(validation = Rule::new("!has(self.notBefore) || !has(self.notAfter) || timestamp(self.notBefore) < timestamp(self.notAfter)").message("spec.window.notBefore must be before spec.window.notAfter").field_path(".notBefore"))]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// The lease does not start before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TIMESTAMP_PATTERN), length(max = 64))]
    pub not_before: Option<String>,
    /// The lease ends at this instant at the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TIMESTAMP_PATTERN), length(max = 64))]
    pub not_after: Option<String>,
}

/// Lifecycle phase of a grant.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default,
)]
pub enum GrantPhase {
    /// Seen, not yet decided.
    #[default]
    Pending,
    /// Allowed by a policy that requires approval: waiting for enough approvers.
    PendingApproval,
    /// Allowed, waiting for `window.notBefore`.
    Scheduled,
    /// Creating the Azure objects (or repairing one that vanished).
    Activating,
    /// Every Azure object exists: the access is usable.
    Active,
    /// The lease ended; deleting the Azure objects.
    Revoking,
    /// Terminal: the lease lapsed by time.
    Expired,
    /// Terminal: ended early (`spec.revoked`, deletion, or no policy allows it any more).
    Revoked,
    /// Terminal: no policy allows the grant, or the spec is invalid.
    Denied,
    /// Terminal: Azure refused an object for a non-retryable reason; nothing was left behind.
    Failed,
}

impl GrantPhase {
    /// The phase's name: the Event and `Ready` reason, and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::PendingApproval => "PendingApproval",
            Self::Scheduled => "Scheduled",
            Self::Activating => "Activating",
            Self::Active => "Active",
            Self::Revoking => "Revoking",
            Self::Expired => "Expired",
            Self::Revoked => "Revoked",
            Self::Denied => "Denied",
            Self::Failed => "Failed",
        }
    }

    /// Terminal phases absorb: nothing moves a grant out of them.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Expired | Self::Revoked | Self::Denied | Self::Failed
        )
    }
}

/// Why a lease ended: the terminal phase a `Revoking` grant moves to.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    Expired,
    Revoked,
    Failed,
}

impl EndReason {
    pub fn terminal_phase(self) -> GrantPhase {
        match self {
            Self::Expired => GrantPhase::Expired,
            Self::Revoked => GrantPhase::Revoked,
            Self::Failed => GrantPhase::Failed,
        }
    }
}

/// Where one Azure object of a grant stands.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default,
)]
pub enum ObjectState {
    /// Not created yet.
    #[default]
    Pending,
    /// Exists and carries this cluster's marker.
    Present,
    /// The access already existed without our marker: used, never touched.
    Standing,
    /// The lease ended and the object is being deleted.
    Deleting,
    /// Deleted (or found already gone).
    Deleted,
    /// The lease ended but another live lease still needs the shared object: left in place.
    Released,
    /// Azure refused to create it.
    Failed,
}

impl ObjectState {
    /// The object may exist and the lease will delete it: not created yet, present, or being
    /// deleted.
    pub fn owes_delete(self) -> bool {
        matches!(self, Self::Pending | Self::Present | Self::Deleting)
    }
}

/// Status of one role assignment of a grant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignmentStatus {
    /// The role as written in the spec.
    pub role: String,
    /// The resolved role definition ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_definition_id: Option<String>,
    /// The normalised scope.
    pub scope: String,
    /// The role assignment's resource ID (for one requested through PIM, known once Azure made
    /// it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub state: ObjectState,
    /// Set when the assignment is requested through Azure PIM (`azure.expiry: PIM`): Azure
    /// itself removes it at `endsAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<AssignmentSchedule>,
}

/// The Azure PIM schedule of a role assignment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentSchedule {
    /// When the schedule starts. PIM refuses to remove the assignment within its minimum
    /// active duration (5 minutes) of this.
    pub starts_at: DateTime<Utc>,
    /// When Azure removes the assignment, whatever lapse does.
    pub ends_at: DateTime<Utc>,
}

/// Status of the grant's federated identity credential.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FederatedCredentialStatus {
    /// ARM resource ID (managed identity) or Graph ID (application) of the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    pub issuer: String,
    pub subject: String,
    pub state: ObjectState,
}

/// Observed state of an AccessGrant, written by the operator only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AccessGrantStatus {
    #[serde(default)]
    pub phase: GrantPhase,
    /// When activation started; the lease is measured from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<DateTime<Utc>>,
    /// When the lease lapses. Fixed at activation; moves only by an allowed extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When the lease ended (lapsed, revoked, denied or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// How many seconds before `expiresAt` the lease ended because more leases of its
    /// subscription end about then than ARM's delete budget can delete in time: their deletes
    /// start early, within the budget (docs/architecture.md, "Synchronized expiry").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_early_seconds: Option<u32>,
    /// Why the lease ended; while `Revoking`, the terminal phase that follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// An honest upper bound of when access granted by this lease really ends: ARM may honour a
    /// deleted role assignment from its cache, and a token minted through the federated
    /// credential stays valid for its lifetime. While the lease runs, a forecast from its
    /// expiry; fixed once every object is deleted (docs/security.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_may_continue_until: Option<DateTime<Utc>>,
    /// Short display name of the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_name: Option<String>,
    /// Short display list of the roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_summary: Option<String>,
    /// Short display list of the scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_summary: Option<String>,
    /// The AccessPolicy that allowed the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Principal (object) ID the role assignments are made to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub role_assignments: Vec<RoleAssignmentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_credential: Option<Box<FederatedCredentialStatus>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The latest human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The approvers' decisions that counted for this grant (its uid, at the generation they
    /// name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ApprovalRecord>,
    /// Extensions of the running lease accepted so far (held to the policy's `maxExtensions`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub extensions: u32,
    /// What the lease was used for, from Azure's own logs (docs/usage.md). Absent while the
    /// operator reads no logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Box<UsageStatus>>,
    /// The operator's seal over the rest of the status (an HMAC keyed by a Secret in the
    /// operator's namespace). A status anyone else writes does not carry a valid seal, and the
    /// operator then believes nothing in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `status.usage` of an AccessGrant: what Azure's logs say the lease was used for.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UsageStatus {
    /// Tokens Entra issued to the principal inside the lease (through its federated credential,
    /// for a federated lease).
    #[serde(default)]
    pub tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_token: Option<DateTime<Utc>>,
    /// Succeeded ARM writes, deletes and actions by the principal at the lease's scopes inside
    /// the lease (ARM does not log reads).
    #[serde(default)]
    pub operations: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_operation: Option<DateTime<Utc>>,
    /// Every distinct action performed, most frequent first (at most 32).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionCount>,
    /// More distinct actions were performed than `actions` holds (then no `RightSize`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub actions_truncated: bool,
    /// The findings about this lease, newest last (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<UsageFinding>,
    /// The logs have been read past the end and the propagation bound: `UnusedGrant` and
    /// `RightSize` are decided.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub concluded: bool,
    /// The last batch of the operator's usage ledger counted here (exactly once across
    /// restarts).
    #[serde(default)]
    pub sequence: u64,
}

/// One action and how often the lease performed it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ActionCount {
    pub action: String,
    pub count: u64,
}

/// One finding of usage evidence about a lease.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UsageFinding {
    /// `UseAfterEnd`, `SensitiveAction`, `PrivilegeChain`, `UnusedGrant` or `RightSize`.
    pub kind: String,
    /// When the event it rests on happened (or when it was concluded).
    pub at: DateTime<Utc>,
    /// The log event's ID (Activity Log `eventDataId`, sign-in `id`), if one shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    pub message: String,
}

/// One counted decision of an approver.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    /// The AccessApproval's name.
    pub name: String,
    pub approver: String,
    pub decision: super::approval::ApprovalDecision,
    /// The grant generation decided on.
    pub generation: i64,
    /// When the approval was created (the API server's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}
