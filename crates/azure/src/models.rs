//! The typed objects the client returns and accepts, and their wire shapes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A role definition (`Microsoft.Authorization/roleDefinitions`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleDefinition {
    /// Full ID, e.g. `/subscriptions/<s>/providers/Microsoft.Authorization/roleDefinitions/<guid>`.
    pub id: String,
    pub guid: Uuid,
    /// Display name, e.g. `Storage Blob Data Reader`.
    pub role_name: String,
    /// `BuiltInRole` or `CustomRole`.
    pub role_type: Option<String>,
    pub description: Option<String>,
    /// What the role allows (control-plane actions only; data actions are not needed here).
    pub permissions: Vec<RolePermission>,
}

/// One `permissions` entry of a role definition.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RolePermission {
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
}

/// One entry of ARM's permissions list (`{scope}/providers/Microsoft.Authorization/permissions`):
/// what one of the caller's role assignments at or above the scope allows. ABAC conditions on
/// those assignments are not part of the answer.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Permission {
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    pub data_actions: Vec<String>,
    pub not_data_actions: Vec<String>,
}

impl Permission {
    /// Whether this entry allows the control-plane `action`: one of `actions` matches it and
    /// none of `not_actions` does (`*` wildcards, case-insensitive, as ARM matches them).
    pub fn allows(&self, action: &str) -> bool {
        lapse_api::role::permits(&self.actions, &self.not_actions, action)
    }

    /// Whether any entry of a permissions list allows `action` (each assignment is judged on
    /// its own: one entry's `notActions` never takes away what another entry allows).
    pub fn any_allows(entries: &[Permission], action: &str) -> bool {
        entries.iter().any(|p| p.allows(action))
    }
}

/// A role assignment (`Microsoft.Authorization/roleAssignments`, api-version 2022-04-01).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignment {
    pub id: String,
    pub name: Uuid,
    pub scope: String,
    pub role_definition_id: String,
    pub principal_id: Uuid,
    pub principal_type: Option<String>,
    pub description: Option<String>,
    pub condition: Option<String>,
    pub condition_version: Option<String>,
}

impl RoleAssignment {
    /// The role definition GUID, whatever the form of `role_definition_id` (ARM answers with the
    /// tenant-level `/providers/...` form even when the subscription form was sent).
    pub fn role_definition_guid(&self) -> Option<Uuid> {
        last_guid(&self.role_definition_id)
    }
}

/// What to create. `principalType: ServicePrincipal` is always sent: it lets ARM skip the
/// directory lookup that fails with `PrincipalNotFound` while a new principal replicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignmentRequest {
    pub scope: String,
    pub name: Uuid,
    /// `/subscriptions/<s>/providers/Microsoft.Authorization/roleDefinitions/<guid>`.
    pub role_definition_id: String,
    pub principal_id: Uuid,
    /// Carries the ownership marker (`lapse:<cluster> ...`).
    pub description: Option<String>,
    /// An ABAC condition; sent with `conditionVersion: "2.0"`.
    pub condition: Option<String>,
}

/// The kind of a PIM role assignment schedule request (`requestType`, api-version 2020-10-01):
/// the administrator's requests lapse makes. The names are Azure's.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleRequestType {
    /// Create an active assignment with a schedule.
    AdminAssign,
    /// Change an active assignment's schedule.
    AdminUpdate,
    /// Extend an active assignment's schedule.
    AdminExtend,
    /// Remove an active assignment (Azure refuses within five minutes of its start).
    AdminRemove,
}

impl ScheduleRequestType {
    /// Azure's spelling, e.g. `AdminAssign`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleRequestType::AdminAssign => "AdminAssign",
            ScheduleRequestType::AdminUpdate => "AdminUpdate",
            ScheduleRequestType::AdminExtend => "AdminExtend",
            ScheduleRequestType::AdminRemove => "AdminRemove",
        }
    }
}

/// What to send in a roleAssignmentScheduleRequests PUT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleRequest {
    /// ARM scope of the assignment.
    pub scope: String,
    /// The request's name.
    pub name: Uuid,
    pub request_type: ScheduleRequestType,
    pub principal_id: Uuid,
    /// `/subscriptions/<s>/providers/Microsoft.Authorization/roleDefinitions/<guid>`.
    pub role_definition_id: String,
    /// `scheduleInfo.startDateTime`, sent with seconds precision (RFC 3339, `Z`); `None`: from
    /// when Azure takes the request.
    pub starts_at: Option<DateTime<Utc>>,
    /// `scheduleInfo.expiration {type: AfterDateTime, endDateTime}`; `None`: no expiration is
    /// sent (what an `AdminRemove` sends).
    pub ends_at: Option<DateTime<Utc>>,
    pub justification: Option<String>,
    /// An ABAC condition; sent with `conditionVersion: "2.0"`.
    pub condition: Option<String>,
}

/// A request as Azure recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleRequestRecord {
    pub id: String,
    pub name: Uuid,
    /// `Provisioned`, `Revoked`, `PendingApproval`, ... (Azure's `status`).
    pub status: String,
    /// `targetRoleAssignmentScheduleId`: the schedule made or changed.
    pub target_schedule_id: Option<String>,
}

/// An active assignment schedule (`Microsoft.Authorization/roleAssignmentSchedules`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignmentSchedule {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub role_definition_id: String,
    pub principal_id: Uuid,
    /// `roleAssignmentScheduleRequestId`: the full ID of the request that made or last changed
    /// it.
    pub request_id: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub status: String,
}

impl RoleAssignmentSchedule {
    /// The role definition GUID, whatever the form of `role_definition_id`.
    pub fn role_definition_guid(&self) -> Option<Uuid> {
        last_guid(&self.role_definition_id)
    }

    /// The name of the request that made or last changed it (the last segment of
    /// `request_id`).
    pub fn request_name(&self) -> Option<Uuid> {
        self.request_id.as_deref().and_then(last_guid)
    }
}

/// The GUID an ARM ID ends with.
fn last_guid(id: &str) -> Option<Uuid> {
    id.trim_end_matches('/')
        .rsplit('/')
        .next()
        .and_then(|g| Uuid::try_parse(g).ok())
}

/// A user-assigned managed identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedIdentity {
    pub id: String,
    pub name: String,
    /// The object ID of its service principal: what role assignments name.
    pub principal_id: Uuid,
    pub client_id: Uuid,
    pub tenant_id: Uuid,
}

/// A federated identity credential, on a managed identity (ARM) or an application (Graph).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fic {
    /// ARM: the full resource ID. Graph: the credential's object ID.
    pub id: String,
    pub name: String,
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    /// Graph only: managed identity FICs have no description.
    pub description: Option<String>,
}

impl Fic {
    /// True if this credential trusts exactly what `req` asks for (audiences in any order).
    pub fn matches(&self, req: &FicRequest) -> bool {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        self.issuer == req.issuer
            && self.subject == req.subject
            && sorted(&self.audiences) == sorted(&req.audiences)
    }
}

/// A federated identity credential to create or update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FicRequest {
    /// Must match `^[a-zA-Z0-9][a-zA-Z0-9-_]{2,119}$` (see `lapse_api::naming::fic_name`).
    pub name: String,
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    /// Sent to Graph (application FICs) only.
    pub description: Option<String>,
}

/// An app registration (Microsoft Graph `application`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Application {
    /// The object ID.
    pub id: Uuid,
    /// The application (client) ID.
    pub app_id: Uuid,
    pub display_name: Option<String>,
}

/// The service principal of an application in this tenant: what its role assignments name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePrincipal {
    /// The object ID.
    pub id: Uuid,
    pub app_id: Uuid,
    pub display_name: Option<String>,
    /// Graph's `servicePrincipalType`: `Application`, `ManagedIdentity`, `Legacy`,
    /// `SocialIdp`; `None` when not asked for or not set.
    pub service_principal_type: Option<String>,
}

/// An Azure subscription the caller can see (`GET /subscriptions`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The subscription ID (a GUID).
    pub id: String,
    pub display_name: Option<String>,
    /// `Enabled`, `Disabled`, `Warned`, `PastDue`, `Deleted`.
    pub state: Option<String>,
    pub tenant_id: Option<String>,
}

/// An app registration with its credentials (Graph `application`: `passwordCredentials` and
/// `keyCredentials`; secrets themselves are never returned, only their metadata).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRegistration {
    /// The object ID.
    pub id: Uuid,
    /// The application (client) ID.
    pub app_id: Uuid,
    pub display_name: Option<String>,
    /// Client secrets.
    pub password_credentials: Vec<AppCredential>,
    /// Certificates (and other keys).
    pub key_credentials: Vec<AppCredential>,
}

/// One credential of an app registration: Graph's `passwordCredential` or `keyCredential`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCredential {
    pub key_id: Option<Uuid>,
    pub display_name: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// `keyCredential.type` (`AsymmetricX509Cert`, `Symmetric`); `None` for passwords.
    pub key_type: Option<String>,
}

// ---- wire shapes ----

#[derive(Deserialize)]
pub(crate) struct ArmPage<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    #[serde(rename = "nextLink")]
    pub next_link: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct GraphPage<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    #[serde(rename = "@odata.nextLink")]
    pub next_link: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct WireRoleDefinition {
    id: String,
    name: Uuid,
    properties: WireRoleDefinitionProperties,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRoleDefinitionProperties {
    role_name: String,
    #[serde(rename = "type")]
    role_type: Option<String>,
    description: Option<String>,
    #[serde(default)]
    permissions: Vec<WirePermission>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePermission {
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    not_actions: Vec<String>,
}

impl From<WireRoleDefinition> for RoleDefinition {
    fn from(w: WireRoleDefinition) -> Self {
        RoleDefinition {
            id: w.id,
            guid: w.name,
            role_name: w.properties.role_name,
            role_type: w.properties.role_type,
            description: w.properties.description,
            permissions: w
                .properties
                .permissions
                .into_iter()
                .map(|p| RolePermission {
                    actions: p.actions,
                    not_actions: p.not_actions,
                })
                .collect(),
        }
    }
}

/// An entry of `PermissionGetResult.value` (authorization 2022-04-01, `Permission`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WirePermissionEntry {
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    not_actions: Vec<String>,
    #[serde(default)]
    data_actions: Vec<String>,
    #[serde(default)]
    not_data_actions: Vec<String>,
}

impl From<WirePermissionEntry> for Permission {
    fn from(w: WirePermissionEntry) -> Self {
        Permission {
            actions: w.actions,
            not_actions: w.not_actions,
            data_actions: w.data_actions,
            not_data_actions: w.not_data_actions,
        }
    }
}

/// `ManagementLockObject` (locks 2016-09-01).
#[derive(Deserialize)]
pub(crate) struct WireLock {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    properties: WireLockProperties,
}

#[derive(Deserialize)]
pub(crate) struct WireLockProperties {
    level: String,
    #[serde(default)]
    notes: Option<String>,
}

impl From<WireLock> for lapse_api::lock::ManagementLock {
    fn from(w: WireLock) -> Self {
        lapse_api::lock::ManagementLock {
            id: w.id,
            name: w.name,
            level: lapse_api::lock::LockLevel::parse(&w.properties.level),
            notes: w.properties.notes,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct WireRoleAssignment {
    id: String,
    name: Uuid,
    properties: WireRoleAssignmentProperties,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireRoleAssignmentProperties {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub role_definition_id: String,
    pub principal_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition_version: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct WireRoleAssignmentCreate {
    pub properties: WireRoleAssignmentProperties,
}

impl From<&RoleAssignmentRequest> for WireRoleAssignmentCreate {
    fn from(r: &RoleAssignmentRequest) -> Self {
        WireRoleAssignmentCreate {
            properties: WireRoleAssignmentProperties {
                scope: None,
                role_definition_id: r.role_definition_id.clone(),
                principal_id: r.principal_id,
                principal_type: Some("ServicePrincipal".to_owned()),
                description: r.description.clone(),
                condition: r.condition.clone(),
                condition_version: r.condition.as_ref().map(|_| "2.0".to_owned()),
            },
        }
    }
}

impl WireRoleAssignment {
    /// `fallback_scope` fills in the scope when ARM leaves it out.
    pub(crate) fn into_model(self, fallback_scope: &str) -> RoleAssignment {
        let p = self.properties;
        RoleAssignment {
            id: self.id,
            name: self.name,
            scope: p.scope.unwrap_or_else(|| fallback_scope.to_owned()),
            role_definition_id: p.role_definition_id,
            principal_id: p.principal_id,
            principal_type: p.principal_type,
            description: p.description,
            condition: p.condition,
            condition_version: p.condition_version,
        }
    }
}

/// The body of a `roleAssignmentScheduleRequests` PUT (2020-10-01).
#[derive(Serialize)]
pub(crate) struct WireScheduleRequestCreate {
    properties: WireScheduleRequestCreateProperties,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireScheduleRequestCreateProperties {
    principal_id: Uuid,
    role_definition_id: String,
    request_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule_info: Option<WireScheduleInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    justification: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    condition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    condition_version: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireScheduleInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    start_date_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration: Option<WireExpiration>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireExpiration {
    #[serde(rename = "type")]
    kind: &'static str,
    end_date_time: String,
}

/// RFC 3339 in UTC with `Z`, whole seconds: what PIM's examples and clients send.
fn pim_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl From<&ScheduleRequest> for WireScheduleRequestCreate {
    fn from(r: &ScheduleRequest) -> Self {
        let expiration = r.ends_at.map(|end| WireExpiration {
            kind: "AfterDateTime",
            end_date_time: pim_time(end),
        });
        let schedule_info =
            (r.starts_at.is_some() || expiration.is_some()).then(|| WireScheduleInfo {
                start_date_time: r.starts_at.map(pim_time),
                expiration,
            });
        WireScheduleRequestCreate {
            properties: WireScheduleRequestCreateProperties {
                principal_id: r.principal_id,
                role_definition_id: r.role_definition_id.clone(),
                request_type: r.request_type.as_str(),
                schedule_info,
                justification: r.justification.clone(),
                condition: r.condition.clone(),
                condition_version: r.condition.as_ref().map(|_| "2.0".to_owned()),
            },
        }
    }
}

/// `RoleAssignmentScheduleRequest` (2020-10-01), the fields the client reads.
#[derive(Deserialize)]
pub(crate) struct WireScheduleRequest {
    id: String,
    name: Uuid,
    #[serde(default)]
    properties: WireScheduleRequestProperties,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireScheduleRequestProperties {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    target_role_assignment_schedule_id: Option<String>,
}

impl From<WireScheduleRequest> for ScheduleRequestRecord {
    fn from(w: WireScheduleRequest) -> Self {
        ScheduleRequestRecord {
            id: w.id,
            name: w.name,
            status: w.properties.status.unwrap_or_default(),
            target_schedule_id: w
                .properties
                .target_role_assignment_schedule_id
                .filter(|t| !t.is_empty()),
        }
    }
}

/// `RoleAssignmentSchedule` (2020-10-01), the fields the client reads.
#[derive(Deserialize)]
pub(crate) struct WireRoleAssignmentSchedule {
    id: String,
    name: String,
    properties: WireRoleAssignmentScheduleProperties,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRoleAssignmentScheduleProperties {
    #[serde(default)]
    scope: Option<String>,
    role_definition_id: String,
    principal_id: Uuid,
    #[serde(default)]
    role_assignment_schedule_request_id: Option<String>,
    #[serde(default)]
    start_date_time: Option<String>,
    #[serde(default)]
    end_date_time: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

impl From<WireRoleAssignmentSchedule> for RoleAssignmentSchedule {
    fn from(w: WireRoleAssignmentSchedule) -> Self {
        let p = w.properties;
        RoleAssignmentSchedule {
            id: w.id,
            name: w.name,
            scope: p.scope.unwrap_or_default(),
            role_definition_id: p.role_definition_id,
            principal_id: p.principal_id,
            request_id: p
                .role_assignment_schedule_request_id
                .filter(|r| !r.is_empty()),
            starts_at: graph_time(p.start_date_time.as_deref()),
            ends_at: graph_time(p.end_date_time.as_deref()),
            status: p.status.unwrap_or_default(),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct WireIdentity {
    id: String,
    name: String,
    properties: WireIdentityProperties,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIdentityProperties {
    tenant_id: Uuid,
    principal_id: Uuid,
    client_id: Uuid,
}

impl From<WireIdentity> for ManagedIdentity {
    fn from(w: WireIdentity) -> Self {
        ManagedIdentity {
            id: w.id,
            name: w.name,
            principal_id: w.properties.principal_id,
            client_id: w.properties.client_id,
            tenant_id: w.properties.tenant_id,
        }
    }
}

#[derive(Deserialize, Serialize)]
pub(crate) struct WireArmFic {
    #[serde(skip_serializing)]
    pub id: Option<String>,
    #[serde(skip_serializing)]
    pub name: Option<String>,
    pub properties: WireArmFicProperties,
}

#[derive(Deserialize, Serialize)]
pub(crate) struct WireArmFicProperties {
    pub issuer: String,
    pub subject: String,
    #[serde(default)]
    pub audiences: Vec<String>,
}

impl WireArmFic {
    pub(crate) fn request(fic: &FicRequest) -> WireArmFic {
        WireArmFic {
            id: None,
            name: None,
            properties: WireArmFicProperties {
                issuer: fic.issuer.clone(),
                subject: fic.subject.clone(),
                audiences: fic.audiences.clone(),
            },
        }
    }

    /// `fallback_id`/`fallback_name` fill in what ARM leaves out.
    pub(crate) fn into_model(self, fallback_id: &str, fallback_name: &str) -> Fic {
        Fic {
            id: self.id.unwrap_or_else(|| fallback_id.to_owned()),
            name: self.name.unwrap_or_else(|| fallback_name.to_owned()),
            issuer: self.properties.issuer,
            subject: self.properties.subject,
            audiences: self.properties.audiences,
            description: None,
        }
    }
}

#[derive(Deserialize, Serialize)]
pub(crate) struct WireGraphFic {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    pub issuer: String,
    pub subject: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl WireGraphFic {
    pub(crate) fn request(fic: &FicRequest) -> WireGraphFic {
        WireGraphFic {
            id: None,
            name: fic.name.clone(),
            issuer: fic.issuer.clone(),
            subject: fic.subject.clone(),
            audiences: fic.audiences.clone(),
            description: fic.description.clone(),
        }
    }
}

impl From<WireGraphFic> for Fic {
    fn from(w: WireGraphFic) -> Self {
        Fic {
            id: w.id.unwrap_or_default(),
            name: w.name,
            issuer: w.issuer,
            subject: w.subject,
            audiences: w.audiences,
            description: w.description,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireGraphPrincipal {
    id: Uuid,
    app_id: Uuid,
    display_name: Option<String>,
    #[serde(default)]
    service_principal_type: Option<String>,
}

impl From<WireGraphPrincipal> for Application {
    fn from(w: WireGraphPrincipal) -> Self {
        Application {
            id: w.id,
            app_id: w.app_id,
            display_name: w.display_name,
        }
    }
}

impl From<WireGraphPrincipal> for ServicePrincipal {
    fn from(w: WireGraphPrincipal) -> Self {
        ServicePrincipal {
            id: w.id,
            app_id: w.app_id,
            display_name: w.display_name,
            service_principal_type: w.service_principal_type,
        }
    }
}

/// A subscription in `SubscriptionListResult.value` (Microsoft.Resources 2022-12-01).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireSubscription {
    subscription_id: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
}

impl From<WireSubscription> for Subscription {
    fn from(w: WireSubscription) -> Self {
        Subscription {
            id: w.subscription_id,
            display_name: w.display_name,
            state: w.state,
            tenant_id: w.tenant_id,
        }
    }
}

/// A Graph `application` with the credential collections selected.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireApplication {
    id: Uuid,
    app_id: Uuid,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    password_credentials: Option<Vec<WireCredential>>,
    #[serde(default)]
    key_credentials: Option<Vec<WireCredential>>,
}

/// Graph's `passwordCredential` and `keyCredential` (the fields both share, and `type`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireCredential {
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    start_date_time: Option<String>,
    #[serde(default)]
    end_date_time: Option<String>,
    #[serde(default, rename = "type")]
    key_type: Option<String>,
}

/// An RFC 3339 time as Graph (and ARM's PIM) writes it; anything else reads as unknown rather
/// than failing the whole page.
fn graph_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

impl From<WireCredential> for AppCredential {
    fn from(w: WireCredential) -> Self {
        AppCredential {
            key_id: w.key_id.as_deref().and_then(|k| Uuid::try_parse(k).ok()),
            display_name: w.display_name,
            start: graph_time(w.start_date_time.as_deref()),
            end: graph_time(w.end_date_time.as_deref()),
            key_type: w.key_type,
        }
    }
}

impl From<WireApplication> for AppRegistration {
    fn from(w: WireApplication) -> Self {
        let list = |v: Option<Vec<WireCredential>>| {
            v.unwrap_or_default().into_iter().map(Into::into).collect()
        };
        AppRegistration {
            id: w.id,
            app_id: w.app_id,
            display_name: w.display_name,
            password_credentials: list(w.password_credentials),
            key_credentials: list(w.key_credentials),
        }
    }
}
