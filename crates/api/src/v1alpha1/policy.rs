use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::grant::DEFAULT_AUDIENCE;
use super::patterns::*;

/// Who may be granted what, where, for how long. Cluster-scoped; default deny: a grant is
/// activated only if one AccessPolicy allows all of it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
// Each printcolumn repeats `type_ = "string"`: separate columns, not a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "lapse.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    doc = "Who may be granted which Azure roles, where and for how long. Cluster-scoped; default deny: a grant activates only if one AccessPolicy allows all of it.",
    shortname = "apol",
    category = "lapse",
    status = "AccessPolicyStatus",
    printcolumn(
        name = "Max Duration",
        type_ = "string",
        json_path = ".spec.maxDuration",
        description = "Longest total lease, extensions included"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the policy is valid and in use"
    ),
    printcolumn(
        name = "Grants",
        type_ = "integer",
        json_path = ".status.grants",
        description = "Live grants this policy allows"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("size(self.identities) + size(self.servicePrincipals) + size(self.applications) > 0").message("at least one of identities, servicePrincipals or applications must be listed"),
    validation = Rule::new("size(self.namespaces) > 0 || has(self.namespaceSelector)").message("namespaces or namespaceSelector must be set"),
    validation = Rule::new("!has(self.namespaceSelector) || (has(self.namespaceSelector.matchLabels) && size(self.namespaceSelector.matchLabels) > 0) || (has(self.namespaceSelector.matchExpressions) && size(self.namespaceSelector.matchExpressions) > 0)").message("spec.namespaceSelector: an empty selector matches every namespace, kube-system included; list labels or expressions, or use namespaces").field_path(".namespaceSelector"),
)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// Namespaces whose grants this policy covers, as globs (`payments`, `team-*`). A grant's
    /// namespace must match one of these or `namespaceSelector`.
    #[serde(default)]
    #[schemars(length(max = MAX_POLICY_ENTRIES), inner(regex(pattern = NAME_GLOB_PATTERN), length(min = 1, max = 253)))]
    pub namespaces: Vec<String>,
    /// Namespaces by label, as a Kubernetes label selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Managed identity resource IDs, as globs (`*` matches within one path segment).
    #[serde(default)]
    #[schemars(length(max = MAX_POLICY_ENTRIES), inner(regex(pattern = ARM_ID_PATTERN), length(min = 1, max = MAX_ARM_ID_LEN)))]
    pub identities: Vec<String>,
    /// Service principal object IDs (or `*`).
    #[serde(default)]
    #[schemars(length(max = MAX_POLICY_ENTRIES), inner(length(min = 1, max = 36)))]
    pub service_principals: Vec<String>,
    /// App registration object IDs (or `*`).
    #[serde(default)]
    #[schemars(length(max = MAX_POLICY_ENTRIES), inner(length(min = 1, max = 36)))]
    pub applications: Vec<String>,
    /// Roles that may be granted: names, GUIDs or role definition IDs, compared after resolution
    /// to role definition GUIDs.
    #[schemars(length(min = 1, max = MAX_POLICY_ENTRIES), inner(length(min = 1, max = MAX_ROLE_LEN)))]
    pub roles: Vec<String>,
    /// Scopes under which roles may be granted: a grant's scope must be at or below one of these.
    #[schemars(length(min = 1, max = MAX_POLICY_ENTRIES), inner(regex(pattern = ARM_ID_PATTERN), length(min = 1, max = MAX_ARM_ID_LEN)))]
    pub scopes: Vec<String>,
    /// ServiceAccounts that may be federated, as globs. Empty: no federation allowed.
    #[serde(default)]
    #[schemars(length(max = MAX_POLICY_ENTRIES), inner(regex(pattern = NAME_GLOB_PATTERN), length(min = 1, max = 253)))]
    pub service_accounts: Vec<String>,
    /// Longest total lease, extensions included, as a Go duration.
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 64))]
    pub max_duration: String,
    /// A regular expression (RE2) every grant's justification must match. Unset: none required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub justification_pattern: Option<String>,
    /// Token audiences a federated credential may accept. Only Entra's token exchange audience
    /// by default: any other lets tokens minted for other purposes (the Kubernetes API's, say)
    /// stand in for the workload. Empty means that default.
    #[serde(default = "default_audiences")]
    #[schemars(length(max = 16), inner(length(min = 1, max = MAX_AUDIENCE_LEN)))]
    pub audiences: Vec<String>,
    /// Allow federating an identity that holds privileged standing roles (Owner, User Access
    /// Administrator, Role Based Access Control Administrator, or any role that may write role
    /// assignments). A federated credential hands the workload every right of its identity, so
    /// this is off by default and such grants are denied naming the standing assignment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_privileged_identities: bool,
    /// What a management lock (`CanNotDelete` or `ReadOnly`) at or above a grant's scope or on
    /// its identity means: `Deny` (the default) refuses the grant, naming the lock, because
    /// Azure would let lapse create the access but not delete it; `Tolerate` activates anyway,
    /// and a revocation the lock blocks is reported (`RevocationBlocked`) until it is removed.
    #[serde(default, skip_serializing_if = "LockTolerance::is_default")]
    pub locks: LockTolerance,
    /// At most this many live (activating or active) grants per namespace under this policy;
    /// a grant beyond it is denied. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_active_grants: Option<u32>,
    /// At most this many extensions of one lease (each accepted lengthening of its expiry
    /// counts one); one more is refused (`ExtensionDenied`, reason `ExtensionLimitReached`) and
    /// the lease keeps its expiry. `maxDuration` still bounds the total. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000))]
    pub max_extensions: Option<u32>,
    /// Grants under this policy activate only inside these hours and their leases end at the
    /// window's close. Unset: any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_hours: Option<ActiveHours>,
    /// Every grant must name a change ticket in its justification, and with a `checker` the
    /// ticket must be open (docs/approval.md, "Tickets"). Unset: no ticket required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<TicketRules>,
    /// Grants this policy allows wait for approvers (`PendingApproval`) before they activate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRules>,
    /// Present: grants with `spec.breakGlass` may activate without approval, for at most
    /// `maxDuration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlassRules>,
    /// How federation under this policy ends (docs/security.md, "When access really ends").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation: Option<FederationRules>,
    /// How Azure objects of this policy's grants are made and ended (docs/security.md, "When
    /// access really ends").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureRules>,
    /// What usage evidence (docs/usage.md) treats as sensitive under this policy, and what it
    /// does about it. Read only when the operator reads Azure's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<WatchRules>,
}

/// `spec.watch` of an AccessPolicy (docs/usage.md).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WatchRules {
    /// ARM actions that raise `SensitiveAction` when a lease of this policy performs them
    /// (`*` matches one segment, a trailing `/*` everything below; case-insensitive). Empty:
    /// role assignment and federated credential writes, key listing and regeneration, identity
    /// assignment and Key Vault secret writes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub sensitive_actions: Vec<String>,
    /// `Notify` (the default) reports a sensitive action; `Revoke` also ends the lease at once.
    #[serde(default, skip_serializing_if = "OnSensitiveAction::is_default")]
    pub on_sensitive_action: OnSensitiveAction,
}

/// `spec.watch.onSensitiveAction` of an AccessPolicy.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default,
)]
pub enum OnSensitiveAction {
    /// Report it (Event, notification, metric, audit line).
    #[default]
    Notify,
    /// Report it and revoke the lease.
    Revoke,
}

impl OnSensitiveAction {
    pub fn is_default(&self) -> bool {
        *self == Self::Notify
    }
}

/// `spec.ticket` of an AccessPolicy: the change ticket a grant's justification must name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TicketRules {
    /// A regular expression (RE2) the justification must contain a match of; the first match
    /// is the ticket's ID (`OPS-[0-9]+` finds `OPS-1234` in "OPS-1234 nightly backup").
    #[schemars(length(min = 1, max = 1024))]
    pub pattern: String,
    /// The name of a ticket checker configured on the operator (a key of the Secret its chart
    /// value `ticketCheckers.secretName` names; the URL, which may carry a token, never appears
    /// in a policy). The operator asks it whether the ticket is open: a closed ticket denies a
    /// waiting grant and revokes a live lease. Unset: the pattern alone is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TICKET_CHECKER_PATTERN), length(min = 1, max = 63))]
    pub checker: Option<String>,
}

/// `spec.azure` of an AccessPolicy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AzureRules {
    /// Who ends a role assignment: `Delete` (the default) makes plain role assignments that
    /// lapse deletes at expiry; `PIM` requests them through Azure PIM with an end time
    /// (expiresAt plus the operator's PIM grace), so Azure removes them even if lapse, its
    /// cluster or its credentials are gone. PIM needs Microsoft Entra ID P2 or Governance; a
    /// tenant without it fails the grant, never falls back.
    #[serde(default, skip_serializing_if = "Expiry::is_default")]
    pub expiry: Expiry,
}

/// `spec.azure.expiry` of an AccessPolicy.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default,
)]
pub enum Expiry {
    /// Plain role assignments, deleted by lapse at expiry.
    #[default]
    Delete,
    /// Role assignments requested through Azure PIM with an end time Azure enforces.
    #[serde(rename = "PIM")]
    Pim,
}

impl Expiry {
    pub fn is_default(&self) -> bool {
        *self == Self::Delete
    }
}

/// `spec.locks` of an AccessPolicy.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default,
)]
pub enum LockTolerance {
    /// A lock that applies to a grant's scope or identity denies the grant (`ScopeLocked`).
    #[default]
    Deny,
    /// Grants activate under locks; revocations the locks block are reported and retried.
    Tolerate,
}

impl LockTolerance {
    pub fn is_default(&self) -> bool {
        *self == Self::Deny
    }
}

/// Approval a policy requires before its grants activate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(validation = Rule::new("size(self.approvers.users) + size(self.approvers.groups) > 0").message("spec.approval.approvers must list at least one user or group").field_path(".approvers"))]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRules {
    /// Distinct approvers needed (never the grant's requester).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 16))]
    pub required: u32,
    /// Who may approve or deny.
    pub approvers: Approvers,
    /// Not approved this long after the grant was created: `Denied` (`ApprovalTimedOut`), as a
    /// Go duration. Default 24h.
    #[serde(default = "default_approval_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 64))]
    pub timeout: String,
    /// Grants matching one of these rules need no human: approved at once, the `Approved`
    /// condition naming the rule. The approvers may still deny them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub auto_approve: Vec<AutoApproveRule>,
    /// Further approvers, each tier eligible (and notified) once a grant has waited its
    /// `after`. A tier approver's decision made before then never counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub escalation: Vec<EscalationTier>,
}

/// Working hours: a window opening at `from` on each of `days` and closing at `to` (the next
/// day when `to` is not after `from`), on the wall clock of `timeZone`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(validation = Rule::new("self.from != self.to").message("spec.activeHours.from and to must differ (a window of no time; for all day use 00:00 to 23:59)").field_path(".to"))]
#[serde(rename_all = "camelCase")]
pub struct ActiveHours {
    /// An IANA time zone (`Europe/Berlin`, `America/New_York`, `UTC`); daylight saving time
    /// follows the zone's rules.
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
    /// The days a window opens on (the day of `from`).
    #[schemars(length(min = 1, max = 7))]
    pub days: Vec<Weekday>,
    /// When the window opens, `HH:MM`.
    #[schemars(regex(pattern = CLOCK_TIME_PATTERN))]
    pub from: String,
    /// When the window closes, `HH:MM`; not after `from`: the next day.
    #[schemars(regex(pattern = CLOCK_TIME_PATTERN))]
    pub to: String,
}

/// A day of the week.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// chrono's weekday.
    pub fn to_chrono(self) -> chrono::Weekday {
        match self {
            Self::Mon => chrono::Weekday::Mon,
            Self::Tue => chrono::Weekday::Tue,
            Self::Wed => chrono::Weekday::Wed,
            Self::Thu => chrono::Weekday::Thu,
            Self::Fri => chrono::Weekday::Fri,
            Self::Sat => chrono::Weekday::Sat,
            Self::Sun => chrono::Weekday::Sun,
        }
    }
}

/// A rule under which a grant needs no human approval.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AutoApproveRule {
    /// The longest lease (extensions included) the rule approves, as a Go duration.
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 64))]
    pub max_duration: String,
    /// Every role of the grant must be one of these (names, GUIDs or role definition IDs,
    /// compared after resolution as the policy's `roles` are).
    #[schemars(length(min = 1, max = MAX_POLICY_ENTRIES), inner(length(min = 1, max = MAX_ROLE_LEN)))]
    pub roles: Vec<String>,
    /// When listed, the grant's `spec.requesterGroups` must include one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_POLICY_ENTRIES), inner(length(min = 1, max = MAX_USERNAME_LEN)))]
    pub requester_groups: Vec<String>,
}

/// A further tier of approvers, eligible once the grant has waited `after`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(validation = Rule::new("size(self.approvers.users) + size(self.approvers.groups) > 0").message("an escalation tier's approvers must list at least one user or group").field_path(".approvers"))]
#[serde(rename_all = "camelCase")]
pub struct EscalationTier {
    /// How long after the grant's creation this tier's approvers may decide, as a Go duration.
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 64))]
    pub after: String,
    /// Who joins the approvers then.
    pub approvers: Approvers,
}

fn one() -> u32 {
    1
}

fn default_approval_timeout() -> String {
    "24h".to_owned()
}

/// Kubernetes users and groups (as the API server authenticates them).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Approvers {
    #[serde(default)]
    #[schemars(length(max = MAX_POLICY_ENTRIES), inner(length(min = 1, max = MAX_USERNAME_LEN)))]
    pub users: Vec<String>,
    #[serde(default)]
    #[schemars(length(max = MAX_POLICY_ENTRIES), inner(length(min = 1, max = MAX_USERNAME_LEN)))]
    pub groups: Vec<String>,
}

/// Break-glass: activation without approval, bounded.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BreakGlassRules {
    /// Longest break-glass lease, as a Go duration.
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 64))]
    pub max_duration: String,
}

/// How federation ends.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FederationRules {
    /// Delete the federated credential one token lifetime before the lease ends, so that no
    /// token minted through it outlives the lease. A lease not longer than a token lifetime is
    /// then denied.
    #[serde(default)]
    pub close_early: bool,
}

fn default_audiences() -> Vec<String> {
    vec![DEFAULT_AUDIENCE.to_owned()]
}

/// What the operator reports about a policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    /// `Ready` is True when the policy is valid, False naming the invalid rule otherwise (an
    /// invalid policy allows nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Live grants (activating or active) this policy allows.
    #[serde(default)]
    pub grants: u32,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(validation = Rule::new("(self.operator in ['In', 'NotIn']) == (size(self.values) > 0)").message("values must be non-empty for In and NotIn and empty for Exists and DoesNotExist"))]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    #[schemars(extend("enum" = ["In", "NotIn", "Exists", "DoesNotExist"]))]
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}
