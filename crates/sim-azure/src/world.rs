//! The simulated tenant: directory principals, subscriptions, resource groups, resources,
//! user-assigned identities with their FICs, role definitions and role assignments.
//! Everything here is synchronous and guarded by one mutex in the server.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::error::SimAzureError;
use crate::ids::{self, key};
use crate::rbac;
use crate::roles::built_in_roles;
use crate::seed::{Seed, derived_guid};

/// Kind of directory principal (the `principalType` of role assignments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PrincipalKind {
    /// An application's or managed identity's service principal.
    #[default]
    ServicePrincipal,
    /// A user.
    User,
    /// A security group.
    Group,
}

impl PrincipalKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ServicePrincipal => "ServicePrincipal",
            Self::User => "User",
            Self::Group => "Group",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub object_id: String,
    pub app_id: Option<String>,
    pub display_name: String,
    pub kind: PrincipalKind,
    pub client_secret: Option<String>,
    /// When it was created; `None` for seeded principals (fully replicated).
    pub created: Option<Instant>,
    /// ARM ID of the user-assigned identity this principal belongs to.
    pub identity_id: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct RoleDef {
    pub id: String,
    pub name: String,
    pub description: String,
    pub built_in: bool,
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    pub data_actions: Vec<String>,
    pub not_data_actions: Vec<String>,
    pub assignable_scopes: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Assignment {
    pub name: String,
    pub scope: String,
    pub role_definition_guid: String,
    pub principal_id: String,
    pub principal_type: String,
    pub description: Option<String>,
    pub condition: Option<String>,
    pub condition_version: Option<String>,
    pub created_on: DateTime<Utc>,
    pub updated_on: DateTime<Utc>,
    pub created_by: Option<String>,
    /// When it was created (for propagation); `None` when seeded.
    pub created: Option<Instant>,
}

/// A role assignment as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAssignmentView {
    /// Assignment name (GUID).
    pub name: String,
    /// Scope it was created at.
    pub scope: String,
    /// Role definition GUID.
    pub role_definition_guid: String,
    /// Principal object ID.
    pub principal_id: String,
    /// `principalType`.
    pub principal_type: String,
    /// `description`, if any.
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Fic {
    pub name: String,
    pub issuer: String,
    pub subject: Option<String>,
    pub audiences: Vec<String>,
    pub claims_matching_expression: Option<Value>,
}

#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub tags: Value,
    pub principal_id: String,
    pub client_id: String,
    pub fics: BTreeMap<String, Fic>,
    /// A FIC write is in progress (Azure refuses overlapping writes on one identity).
    pub fic_write_in_progress: bool,
}

impl Identity {
    pub fn id(&self) -> String {
        // ARM's managed identity RP answers with a lower-case `resourcegroups` segment.
        format!(
            "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Resource {
    pub resource_type: String,
    pub name: String,
    pub location: String,
}

#[derive(Debug, Clone)]
pub(crate) struct ResourceGroup {
    pub name: String,
    pub location: String,
    pub resources: BTreeMap<String, Resource>,
}

#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub id: String,
    pub display_name: String,
    pub resource_groups: BTreeMap<String, ResourceGroup>,
}

/// Input of a role assignment PUT (`properties` of the body).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AssignmentInput {
    pub role_definition_id: Option<String>,
    pub principal_id: Option<String>,
    pub principal_type: Option<String>,
    pub description: Option<String>,
    pub condition: Option<String>,
    pub condition_version: Option<String>,
}

/// Which role assignments a list returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AssignmentFilter {
    pub at_scope: bool,
    pub principal_id: Option<String>,
}

impl AssignmentFilter {
    /// Parses ARM's `$filter`: `atScope()`, `principalId eq '…'`, `assignedTo('…')`, joined by `and`.
    pub fn parse(filter: Option<&str>) -> Result<Self, ApiError> {
        let mut out = Self::default();
        let Some(filter) = filter else { return Ok(out) };
        for clause in split_and(filter) {
            let c = clause.trim();
            let lower = c.to_ascii_lowercase();
            if lower == "atscope()" {
                out.at_scope = true;
            } else if let Some(rest) = lower.strip_prefix("principalid eq ") {
                out.principal_id = Some(unquote(rest.trim()).to_owned());
            } else if let Some(rest) = lower.strip_prefix("assignedto(") {
                out.principal_id = Some(unquote(rest.trim_end_matches(')').trim()).to_owned());
            } else {
                return Err(ApiError::bad_request(
                    "UnsupportedQuery",
                    format!("The filter '{filter}' is not supported. Supported filters are 'atScope()', 'principalId eq {{id}}' and 'assignedTo({{id}})'."),
                ));
            }
        }
        Ok(out)
    }
}

fn split_and(s: &str) -> Vec<&str> {
    let lower = s.to_ascii_lowercase();
    let mut parts = Vec::new();
    let mut start = 0;
    while let Some(i) = lower[start..].find(" and ") {
        parts.push(&s[start..start + i]);
        start += i + 5;
    }
    parts.push(&s[start..]);
    parts
}

fn unquote(s: &str) -> &str {
    s.trim_matches(|c| c == '\'' || c == '"')
}

/// The tenant.
#[derive(Debug)]
pub(crate) struct World {
    pub tenant_id: String,
    pub subscriptions: BTreeMap<String, Subscription>,
    pub identities: BTreeMap<String, Identity>,
    pub principals: BTreeMap<String, Principal>,
    pub role_defs: Vec<RoleDef>,
    pub assignments: BTreeMap<String, Assignment>,
    /// Deleted assignments and when: RBAC keeps honouring them for the propagation delay.
    pub tombstones: Vec<(Assignment, Instant)>,
}

const DEFAULT_TENANT: &str = "00000000-0000-4000-8000-00000000e001";

impl World {
    pub fn from_seed(seed: &Seed) -> Result<Self, SimAzureError> {
        let mut world = World {
            tenant_id: seed.tenant_id.clone().unwrap_or_else(|| DEFAULT_TENANT.to_owned()),
            subscriptions: BTreeMap::new(),
            identities: BTreeMap::new(),
            principals: BTreeMap::new(),
            role_defs: built_in_roles()
                .iter()
                .map(|r| RoleDef {
                    id: r.id.to_owned(),
                    name: r.name.to_owned(),
                    description: r.description.to_owned(),
                    built_in: true,
                    actions: r.actions.iter().map(|s| (*s).to_owned()).collect(),
                    not_actions: r.not_actions.iter().map(|s| (*s).to_owned()).collect(),
                    data_actions: r.data_actions.iter().map(|s| (*s).to_owned()).collect(),
                    not_data_actions: r.not_data_actions.iter().map(|s| (*s).to_owned()).collect(),
                    assignable_scopes: vec!["/".to_owned()],
                })
                .collect(),
            assignments: BTreeMap::new(),
            tombstones: Vec::new(),
        };
        for (i, s) in seed.subscriptions.iter().enumerate() {
            let mut sub = Subscription {
                id: s.id.clone(),
                display_name: s.display_name.clone().unwrap_or_else(|| s.id.clone()),
                resource_groups: BTreeMap::new(),
            };
            for (j, rg) in s.resource_groups.iter().enumerate() {
                let location = rg.location.clone().unwrap_or_else(|| "eastus".to_owned());
                let mut group = ResourceGroup {
                    name: rg.name.clone(),
                    location: location.clone(),
                    resources: BTreeMap::new(),
                };
                for (k, r) in rg.resources.iter().enumerate() {
                    if r.resource_type.split('/').count() < 2 {
                        return Err(SimAzureError::seed(
                            format!("subscriptions[{i}].resourceGroups[{j}].resources[{k}].type"),
                            format!("`{}` is not a full resource type such as Microsoft.Storage/storageAccounts", r.resource_type),
                        ));
                    }
                    group.resources.insert(
                        key(&format!("{}/{}", r.resource_type, r.name)),
                        Resource {
                            resource_type: r.resource_type.clone(),
                            name: r.name.clone(),
                            location: location.clone(),
                        },
                    );
                }
                for ident in &rg.identities {
                    let principal_id = ident
                        .principal_id
                        .clone()
                        .unwrap_or_else(|| derived_guid("identity-principal", &format!("{}/{}/{}", s.id, rg.name, ident.name)));
                    let client_id = ident
                        .client_id
                        .clone()
                        .unwrap_or_else(|| derived_guid("identity-client", &format!("{}/{}/{}", s.id, rg.name, ident.name)));
                    world.add_identity(&s.id, &rg.name, &ident.name, &location, json!({}), principal_id, client_id, None);
                }
                sub.resource_groups.insert(key(&rg.name), group);
            }
            world.subscriptions.insert(key(&s.id), sub);
        }
        for p in &seed.principals {
            let object_id = p.object_id.clone().unwrap_or_else(|| derived_guid("principal", &p.display_name));
            let app_id = match p.kind {
                PrincipalKind::ServicePrincipal => {
                    Some(p.app_id.clone().unwrap_or_else(|| derived_guid("app", &p.display_name)))
                }
                _ => p.app_id.clone(),
            };
            world.principals.insert(
                key(&object_id),
                Principal {
                    object_id,
                    app_id,
                    display_name: p.display_name.clone(),
                    kind: p.kind,
                    client_secret: p.client_secret.clone(),
                    created: None,
                    identity_id: None,
                },
            );
        }
        for (i, d) in seed.role_definitions.iter().enumerate() {
            if !ids::is_guid(&d.id) {
                return Err(SimAzureError::seed(format!("roleDefinitions[{i}].id"), format!("`{}` is not a GUID", d.id)));
            }
            world.role_defs.push(RoleDef {
                id: d.id.to_ascii_lowercase(),
                name: d.role_name.clone(),
                description: d.description.clone(),
                built_in: false,
                actions: d.actions.clone(),
                not_actions: d.not_actions.clone(),
                data_actions: d.data_actions.clone(),
                not_data_actions: d.not_data_actions.clone(),
                assignable_scopes: if d.assignable_scopes.is_empty() { vec!["/".to_owned()] } else { d.assignable_scopes.clone() },
            });
        }
        for (i, ra) in seed.role_assignments.iter().enumerate() {
            let field = |f: &str| format!("roleAssignments[{i}].{f}");
            let principal = world
                .find_principal(&ra.principal)
                .ok_or_else(|| SimAzureError::seed(field("principal"), format!("no principal, identity or object ID `{}`", ra.principal)))?
                .clone();
            let role = world
                .find_role(&ra.role)
                .ok_or_else(|| SimAzureError::seed(field("role"), format!("no role named or with ID `{}`", ra.role)))?
                .id
                .clone();
            world
                .check_scope_exists(&ra.scope)
                .map_err(|e| SimAzureError::seed(field("scope"), e.message))?;
            let name = ra
                .name
                .clone()
                .unwrap_or_else(|| derived_guid("assignment", &format!("{}|{}|{}", principal.object_id, role, key(&ra.scope))));
            let now = Utc::now();
            world.assignments.insert(
                key(&name),
                Assignment {
                    name,
                    scope: ra.scope.trim_end_matches('/').to_owned(),
                    role_definition_guid: role,
                    principal_id: principal.object_id.clone(),
                    principal_type: principal.kind.as_str().to_owned(),
                    description: None,
                    condition: None,
                    condition_version: None,
                    created_on: now,
                    updated_on: now,
                    created_by: None,
                    created: None,
                },
            );
        }
        Ok(world)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn add_identity(
        &mut self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        location: &str,
        tags: Value,
        principal_id: String,
        client_id: String,
        created: Option<Instant>,
    ) -> &Identity {
        let identity = Identity {
            subscription: subscription.to_owned(),
            resource_group: resource_group.to_owned(),
            name: name.to_owned(),
            location: location.to_owned(),
            tags,
            principal_id: principal_id.clone(),
            client_id: client_id.clone(),
            fics: BTreeMap::new(),
            fic_write_in_progress: false,
        };
        let id = identity.id();
        self.principals.insert(
            key(&principal_id),
            Principal {
                object_id: principal_id,
                app_id: Some(client_id),
                display_name: name.to_owned(),
                kind: PrincipalKind::ServicePrincipal,
                client_secret: None,
                created,
                identity_id: Some(id.clone()),
            },
        );
        self.identities.entry(key(&id)).or_insert(identity)
    }

    /// A principal by object ID, app ID or display name.
    pub fn find_principal(&self, needle: &str) -> Option<&Principal> {
        self.principals.get(&key(needle)).or_else(|| {
            self.principals.values().find(|p| {
                p.display_name == needle || p.app_id.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(needle))
            })
        })
    }

    pub fn principal_by_app_id(&self, app_id: &str) -> Option<&Principal> {
        self.principals
            .values()
            .find(|p| p.app_id.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(app_id)))
    }

    /// A role by name (case-insensitive), GUID, or full role definition ID.
    pub fn find_role(&self, needle: &str) -> Option<&RoleDef> {
        let guid = needle.rsplit('/').next().unwrap_or(needle);
        self.role_defs
            .iter()
            .find(|r| r.id.eq_ignore_ascii_case(guid))
            .or_else(|| self.role_defs.iter().find(|r| r.name.eq_ignore_ascii_case(needle)))
    }

    /// 404 in ARM's words when a scope names a subscription, group or resource that does not exist.
    pub fn check_scope_exists(&self, scope: &str) -> Result<(), ApiError> {
        let segs = ids::segments(scope);
        if segs.is_empty() {
            return Ok(());
        }
        if !segs[0].eq_ignore_ascii_case("subscriptions") || segs.len() < 2 {
            if segs[0].eq_ignore_ascii_case("providers") {
                return Ok(()); // tenant-level provider scopes (e.g. management groups): not modelled
            }
            return Err(ApiError::bad_request("InvalidScope", format!("The scope '{scope}' is not valid.")));
        }
        let sub = self
            .subscriptions
            .get(&key(segs[1]))
            .ok_or_else(|| ApiError::not_found("SubscriptionNotFound", format!("The subscription '{}' could not be found.", segs[1])))?;
        if segs.len() == 2 {
            return Ok(());
        }
        if !segs[2].eq_ignore_ascii_case("resourceGroups") || segs.len() < 4 {
            return Err(ApiError::bad_request("InvalidScope", format!("The scope '{scope}' is not valid.")));
        }
        let rg = sub
            .resource_groups
            .get(&key(segs[3]))
            .ok_or_else(|| ApiError::not_found("ResourceGroupNotFound", format!("Resource group '{}' could not be found.", segs[3])))?;
        if segs.len() == 4 {
            return Ok(());
        }
        if !segs[4].eq_ignore_ascii_case("providers") || segs.len() < 8 {
            return Err(ApiError::bad_request("InvalidScope", format!("The scope '{scope}' is not valid.")));
        }
        let (ns, rtype, name) = (segs[5], segs[6], segs[7]);
        let full_type = format!("{ns}/{rtype}");
        let exists = rg.resources.contains_key(&key(&format!("{full_type}/{name}")))
            || (full_type.eq_ignore_ascii_case("Microsoft.ManagedIdentity/userAssignedIdentities")
                && self.identity(segs[1], segs[3], name).is_some());
        if exists {
            Ok(())
        } else {
            Err(ApiError::not_found(
                "ResourceNotFound",
                format!(
                    "The Resource '{full_type}/{name}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                    segs[3]
                ),
            ))
        }
    }

    pub fn identity(&self, sub: &str, rg: &str, name: &str) -> Option<&Identity> {
        self.identities.get(&key(&format!(
            "/subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
        )))
    }

    pub fn identity_mut(&mut self, sub: &str, rg: &str, name: &str) -> Option<&mut Identity> {
        self.identities.get_mut(&key(&format!(
            "/subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
        )))
    }

    /// Whether `object_id` may perform `action` at `scope`, counting only assignments that have
    /// propagated (created at least `delay` ago) and deletions that have not yet propagated.
    pub fn authorized(&self, object_id: &str, action: &str, scope: &str, now: Instant, delay: Duration) -> bool {
        let propagated = |a: &Assignment| a.created.is_none_or(|c| now.saturating_duration_since(c) >= delay);
        let live = self.assignments.values().filter(|a| propagated(a));
        let lingering = self
            .tombstones
            .iter()
            .filter(|(a, deleted)| propagated(a) && now.saturating_duration_since(*deleted) < delay)
            .map(|(a, _)| a);
        live.chain(lingering).any(|a| {
            a.principal_id.eq_ignore_ascii_case(object_id)
                && ids::is_at_or_above(&a.scope, scope)
                && self
                    .find_role(&a.role_definition_guid)
                    .is_some_and(|r| rbac::permits(&r.actions, &r.not_actions, action))
        })
    }

    /// Forgets tombstones older than `delay`.
    pub fn prune_tombstones(&mut self, now: Instant, delay: Duration) {
        self.tombstones.retain(|(_, deleted)| now.saturating_duration_since(*deleted) < delay);
    }

    /// Role assignment PUT: Azure's validation order and errors. Returns 201 or 200.
    pub fn put_assignment(
        &mut self,
        scope: &str,
        name: &str,
        input: AssignmentInput,
        caller: &str,
        now: Instant,
        limits: &crate::config::Config,
    ) -> Result<(StatusCode, Assignment), ApiError> {
        let role_ref = input
            .role_definition_id
            .as_deref()
            .ok_or_else(|| ApiError::invalid_body("The request is missing the required property 'properties.roleDefinitionId'."))?;
        let principal_id = input
            .principal_id
            .clone()
            .ok_or_else(|| ApiError::invalid_body("The request is missing the required property 'properties.principalId'."))?;
        let role_guid = role_ref.rsplit('/').next().unwrap_or(role_ref);
        let role = self
            .role_defs
            .iter()
            .find(|r| r.id.eq_ignore_ascii_case(role_guid))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "RoleDefinitionDoesNotExist",
                    format!("The specified role definition with ID '{role_guid}' does not exist."),
                )
            })?
            .id
            .clone();
        if let Some(t) = input.principal_type.as_deref()
            && !["User", "Group", "ServicePrincipal", "ForeignGroup", "Device"].contains(&t)
        {
            return Err(ApiError::bad_request(
                "InvalidPrincipalType",
                format!("The principal type '{t}' is not valid. Valid values are 'User', 'Group', 'ServicePrincipal', 'ForeignGroup' and 'Device'."),
            ));
        }
        let principal = self.principals.get(&key(&principal_id));
        let replicating = principal.is_some_and(|p| {
            p.created.is_some_and(|c| now.saturating_duration_since(c) < limits.replication_window)
        });
        let principal_type = match (principal, input.principal_type.as_deref()) {
            (None, _) => return Err(principal_not_found(&principal_id, &self.tenant_id)),
            (Some(_), None) if replicating => return Err(principal_not_found(&principal_id, &self.tenant_id)),
            // While replicating, ARM cannot see the principal and trusts the given type.
            (Some(_), Some(t)) if replicating => t.to_owned(),
            (Some(p), Some(t)) if t != p.kind.as_str() => {
                return Err(ApiError::bad_request(
                    "UnmatchedPrincipalType",
                    format!(
                        "The PrincipalType '{t}' in the request does not match the type '{}' of the principal with ID '{principal_id}'.",
                        p.kind.as_str()
                    ),
                ));
            }
            (Some(p), _) => p.kind.as_str().to_owned(),
        };
        let scope = scope.trim_end_matches('/').to_owned();
        let utc = Utc::now();
        if let Some(existing) = self.assignments.get_mut(&key(name)) {
            if !existing.principal_id.eq_ignore_ascii_case(&principal_id)
                || key(&existing.scope) != key(&scope)
                || !existing.role_definition_guid.eq_ignore_ascii_case(&role)
            {
                return Err(ApiError::bad_request(
                    "RoleAssignmentUpdateNotPermitted",
                    "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
                ));
            }
            existing.description = input.description;
            existing.condition_version = condition_version(&input.condition, input.condition_version);
            existing.condition = input.condition;
            existing.updated_on = utc;
            return Ok((StatusCode::OK, existing.clone()));
        }
        if let Some(dup) = self.assignments.values().find(|a| {
            a.principal_id.eq_ignore_ascii_case(&principal_id)
                && a.role_definition_guid.eq_ignore_ascii_case(&role)
                && key(&a.scope) == key(&scope)
        }) {
            return Err(ApiError::arm(
                StatusCode::CONFLICT,
                "RoleAssignmentExists",
                format!("The role assignment already exists. The ID of the existing role assignment is {}.", dup.name),
            ));
        }
        if let Some(sub) = ids::subscription_of(&scope) {
            let count = self
                .assignments
                .values()
                .filter(|a| ids::subscription_of(&a.scope).is_some_and(|s| s.eq_ignore_ascii_case(sub)))
                .count();
            if count >= limits.role_assignment_limit {
                return Err(ApiError::bad_request(
                    "RoleAssignmentLimitExceeded",
                    format!("No more role assignments can be created. The subscription '{sub}' has reached its limit of {} role assignments.", limits.role_assignment_limit),
                ));
            }
        }
        let assignment = Assignment {
            name: name.to_ascii_lowercase(),
            scope,
            role_definition_guid: role,
            principal_id,
            principal_type,
            description: input.description,
            condition_version: condition_version(&input.condition, input.condition_version),
            condition: input.condition,
            created_on: utc,
            updated_on: utc,
            created_by: Some(caller.to_owned()),
            created: Some(now),
        };
        self.assignments.insert(key(name), assignment.clone());
        Ok((StatusCode::CREATED, assignment))
    }

    /// Removes an assignment at `scope` named `name`, if present.
    pub fn delete_assignment(&mut self, scope: &str, name: &str, now: Instant) -> Option<Assignment> {
        let k = key(name);
        if self.assignments.get(&k).is_some_and(|a| key(&a.scope) == key(scope)) {
            let removed = self.assignments.remove(&k)?;
            self.tombstones.push((removed.clone(), now));
            Some(removed)
        } else {
            None
        }
    }

    /// Assignments visible from `scope` under `filter`, in a stable order.
    pub fn list_assignments(&self, scope: &str, filter: &AssignmentFilter) -> Vec<&Assignment> {
        self.assignments
            .values()
            .filter(|a| {
                let above = ids::is_at_or_above(&a.scope, scope);
                let below = ids::is_at_or_above(scope, &a.scope);
                let in_range = if filter.at_scope { above } else { above || below };
                in_range
                    && filter
                        .principal_id
                        .as_deref()
                        .is_none_or(|p| a.principal_id.eq_ignore_ascii_case(p))
            })
            .collect()
    }

    pub fn assignment_views(&self) -> Vec<RoleAssignmentView> {
        self.assignments
            .values()
            .map(|a| RoleAssignmentView {
                name: a.name.clone(),
                scope: a.scope.clone(),
                role_definition_guid: a.role_definition_guid.clone(),
                principal_id: a.principal_id.clone(),
                principal_type: a.principal_type.clone(),
                description: a.description.clone(),
            })
            .collect()
    }
}

fn condition_version(condition: &Option<String>, version: Option<String>) -> Option<String> {
    match (condition, version) {
        (Some(_), None) => Some("2.0".to_owned()),
        (_, v) => v,
    }
}

fn principal_not_found(principal_id: &str, tenant: &str) -> ApiError {
    ApiError::bad_request(
        "PrincipalNotFound",
        format!(
            "Principal {} does not exist in the directory {tenant}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype",
            principal_id.replace('-', "")
        ),
    )
}

/// The role definition ID as ARM renders it for a scope: subscription-qualified when the scope
/// is within a subscription.
pub(crate) fn role_definition_id(scope: &str, guid: &str) -> String {
    match ids::subscription_of(scope) {
        Some(sub) => format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}"),
        None => format!("/providers/Microsoft.Authorization/roleDefinitions/{guid}"),
    }
}

pub(crate) fn assignment_json(a: &Assignment) -> Value {
    let mut props = serde_json::Map::new();
    props.insert("roleDefinitionId".into(), json!(role_definition_id(&a.scope, &a.role_definition_guid)));
    props.insert("principalId".into(), json!(a.principal_id));
    props.insert("principalType".into(), json!(a.principal_type));
    props.insert("scope".into(), json!(a.scope));
    if let Some(d) = &a.description {
        props.insert("description".into(), json!(d));
    }
    if let Some(c) = &a.condition {
        props.insert("condition".into(), json!(c));
    }
    if let Some(v) = &a.condition_version {
        props.insert("conditionVersion".into(), json!(v));
    }
    props.insert("createdOn".into(), json!(a.created_on.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
    props.insert("updatedOn".into(), json!(a.updated_on.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
    if let Some(by) = &a.created_by {
        props.insert("createdBy".into(), json!(by));
        props.insert("updatedBy".into(), json!(by));
    }
    json!({
        "properties": props,
        "id": format!("{}/providers/Microsoft.Authorization/roleAssignments/{}", a.scope, a.name),
        "type": "Microsoft.Authorization/roleAssignments",
        "name": a.name,
    })
}

pub(crate) fn role_definition_json(scope: &str, r: &RoleDef) -> Value {
    json!({
        "id": role_definition_id(scope, &r.id),
        "type": "Microsoft.Authorization/roleDefinitions",
        "name": r.id,
        "properties": {
            "roleName": r.name,
            "type": if r.built_in { "BuiltInRole" } else { "CustomRole" },
            "description": r.description,
            "assignableScopes": r.assignable_scopes,
            "permissions": [{
                "actions": r.actions,
                "notActions": r.not_actions,
                "dataActions": r.data_actions,
                "notDataActions": r.not_data_actions,
            }],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_like_arm() {
        assert_eq!(AssignmentFilter::parse(None).unwrap(), AssignmentFilter::default());
        let f = AssignmentFilter::parse(Some("atScope() and principalId eq 'ABC'")).unwrap();
        assert!(f.at_scope);
        assert_eq!(f.principal_id.as_deref(), Some("abc"));
        assert_eq!(AssignmentFilter::parse(Some("roleName eq 'x'")).unwrap_err().code, "UnsupportedQuery");
    }

    #[test]
    fn seed_errors_name_the_field() {
        let mut seed = Seed::sandbox_default();
        seed.role_assignments[0].role = "No Such Role".into();
        let err = World::from_seed(&seed).unwrap_err().to_string();
        assert!(err.contains("roleAssignments[0].role"), "{err}");
    }

    #[test]
    fn assignment_rbac_follows_ancestor_scopes_and_propagation() {
        let seed = Seed::sandbox_default();
        let mut world = World::from_seed(&seed).unwrap();
        let ident = world.identities.values().next().unwrap().clone();
        let rg_scope = format!("/subscriptions/{}/resourceGroups/{}", ident.subscription, ident.resource_group);
        let account = format!("{rg_scope}/providers/Microsoft.Storage/storageAccounts/lapsedemodata");
        let t0 = Instant::now();
        let delay = Duration::from_secs(10);
        let input = AssignmentInput {
            role_definition_id: Some("/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7".into()),
            principal_id: Some(ident.principal_id.clone()),
            principal_type: None,
            description: None,
            condition: None,
            condition_version: None,
        };
        let cfg = crate::config::Config::default();
        let name = "11111111-1111-4111-8111-111111111111";
        world.put_assignment(&rg_scope, name, input, "caller", t0, &cfg).unwrap();
        let read = "Microsoft.Storage/storageAccounts/read";
        assert!(!world.authorized(&ident.principal_id, read, &account, t0, delay));
        assert!(world.authorized(&ident.principal_id, read, &account, t0 + delay, delay));
        assert!(!world.authorized(&ident.principal_id, "Microsoft.Storage/storageAccounts/write", &account, t0 + delay, delay));
        let t1 = t0 + delay * 2;
        world.delete_assignment(&rg_scope, name, t1).unwrap();
        assert!(world.authorized(&ident.principal_id, read, &account, t1, delay));
        assert!(!world.authorized(&ident.principal_id, read, &account, t1 + delay, delay));
    }
}
