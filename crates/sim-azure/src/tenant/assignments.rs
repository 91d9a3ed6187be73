//! Role assignments: Azure's PUT validation order and errors, deletion, list filters, and the
//! JSON ARM renders for assignments and role definitions.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Assignment, RoleAssignmentView, RoleDef, Tenant};
use crate::api_error::ApiError;
use crate::ids::{self, key};

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

/// Limits a role assignment PUT is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AssignmentLimits {
    /// New principals are invisible (without `principalType`) for this long.
    pub replication_window: Duration,
    /// Role assignments per subscription.
    pub per_subscription: usize,
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
                    format!(
                        "The filter '{filter}' is not supported. Supported filters are 'atScope()', 'principalId eq {{id}}' and 'assignedTo({{id}})'."
                    ),
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

impl Tenant {
    pub fn put_assignment(
        &mut self,
        scope: &str,
        name: &str,
        input: AssignmentInput,
        caller: &str,
        now: Instant,
        limits: AssignmentLimits,
    ) -> Result<(StatusCode, Assignment), ApiError> {
        let role_ref = input.role_definition_id.as_deref().ok_or_else(|| {
            ApiError::invalid_body(
                "The request is missing the required property 'properties.roleDefinitionId'.",
            )
        })?;
        let principal_id = input.principal_id.clone().ok_or_else(|| {
            ApiError::invalid_body(
                "The request is missing the required property 'properties.principalId'.",
            )
        })?;
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
            && ![
                "User",
                "Group",
                "ServicePrincipal",
                "ForeignGroup",
                "Device",
            ]
            .contains(&t)
        {
            return Err(ApiError::bad_request(
                "InvalidPrincipalType",
                format!(
                    "The principal type '{t}' is not valid. Valid values are 'User', 'Group', 'ServicePrincipal', 'ForeignGroup' and 'Device'."
                ),
            ));
        }
        let principal = self.principals.get(&key(&principal_id));
        let replicating = principal.is_some_and(|p| {
            p.created
                .is_some_and(|c| now.saturating_duration_since(c) < limits.replication_window)
        });
        let principal_type = match (principal, input.principal_type.as_deref()) {
            (None, _) => return Err(principal_not_found(&principal_id, &self.tenant_id)),
            (Some(_), None) if replicating => {
                return Err(principal_not_found(&principal_id, &self.tenant_id));
            }
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
                || !ids::same(&existing.scope, &scope)
                || !existing.role_definition_guid.eq_ignore_ascii_case(&role)
            {
                return Err(ApiError::bad_request(
                    "RoleAssignmentUpdateNotPermitted",
                    "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
                ));
            }
            existing.description = input.description;
            existing.condition_version =
                condition_version(&input.condition, input.condition_version);
            existing.condition = input.condition;
            existing.updated_on = utc;
            existing.updated_by = Some(caller.to_owned());
            return Ok((StatusCode::OK, existing.clone()));
        }
        if let Some(dup) = self
            .tuples
            .get(&tuple_key(&principal_id, &role, &scope))
            .and_then(|k| self.assignments.get(k))
        {
            return Err(ApiError::arm(
                StatusCode::CONFLICT,
                "RoleAssignmentExists",
                format!(
                    "The role assignment already exists. The ID of the existing role assignment is {}.",
                    dup.name
                ),
            ));
        }
        self.check_assignment_limit(&scope, limits)?;
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
            updated_by: Some(caller.to_owned()),
            created: Some(now),
        };
        self.insert_assignment(assignment.clone());
        Ok((StatusCode::CREATED, assignment))
    }

    /// `RoleAssignmentLimitExceeded` when the scope's subscription has no room for another.
    pub(super) fn check_assignment_limit(
        &self,
        scope: &str,
        limits: AssignmentLimits,
    ) -> Result<(), ApiError> {
        if let Some(sub) = ids::subscription_of(scope) {
            let count = self
                .per_subscription
                .get(&sub.to_ascii_lowercase())
                .copied()
                .unwrap_or(0);
            if count >= limits.per_subscription {
                return Err(ApiError::bad_request(
                    "RoleAssignmentLimitExceeded",
                    format!(
                        "No more role assignments can be created. The subscription '{sub}' has reached its limit of {} role assignments.",
                        limits.per_subscription
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn insert_assignment(&mut self, a: Assignment) {
        let name_key = key(&a.name);
        self.tuples.insert(
            tuple_key(&a.principal_id, &a.role_definition_guid, &a.scope),
            name_key.clone(),
        );
        if let Some(sub) = ids::subscription_of(&a.scope) {
            *self
                .per_subscription
                .entry(sub.to_ascii_lowercase())
                .or_insert(0) += 1;
        }
        self.assignments.insert(name_key, a);
    }

    fn remove_assignment(&mut self, name_key: &str) -> Option<Assignment> {
        let a = self.assignments.remove(name_key)?;
        // A PIM schedule's assignment deleted by other means takes its schedule with it.
        self.pim.forget_assignment(name_key);
        self.tuples.remove(&tuple_key(
            &a.principal_id,
            &a.role_definition_guid,
            &a.scope,
        ));
        if let Some(sub) = ids::subscription_of(&a.scope)
            && let Some(n) = self.per_subscription.get_mut(&sub.to_ascii_lowercase())
        {
            *n = n.saturating_sub(1);
        }
        Some(a)
    }

    /// Removes an assignment at `scope` named `name`, if present.
    pub fn delete_assignment(
        &mut self,
        scope: &str,
        name: &str,
        now: Instant,
    ) -> Option<Assignment> {
        let k = key(name);
        if self
            .assignments
            .get(&k)
            .is_some_and(|a| ids::same(&a.scope, scope))
        {
            let removed = self.remove_assignment(&k)?;
            self.tombstones.push((removed.clone(), now));
            Some(removed)
        } else {
            None
        }
    }

    /// Removes every assignment at or below `scope` (its scope was deleted), keeping tombstones
    /// so RBAC forgets them only after the propagation delay. Returns how many went.
    pub(super) fn remove_assignments_under(&mut self, scope: &str, now: Instant) -> usize {
        let doomed: Vec<String> = self
            .assignments
            .iter()
            .filter(|(_, a)| ids::is_at_or_above(scope, &a.scope))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &doomed {
            if let Some(a) = self.remove_assignment(k) {
                self.tombstones.push((a, now));
            }
        }
        self.pim.forget_scope(scope);
        doomed.len()
    }

    /// Assignments visible from `scope` under `filter`, in a stable order.
    pub fn list_assignments(&self, scope: &str, filter: &AssignmentFilter) -> Vec<&Assignment> {
        self.assignments
            .values()
            .filter(|a| {
                let above = ids::is_at_or_above(&a.scope, scope);
                let below = ids::is_at_or_above(scope, &a.scope);
                let in_range = if filter.at_scope {
                    above
                } else {
                    above || below
                };
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

pub(super) fn tuple_key(principal: &str, role: &str, scope: &str) -> (String, String, String) {
    (
        principal.to_ascii_lowercase(),
        role.to_ascii_lowercase(),
        key(scope),
    )
}

fn condition_version(condition: &Option<String>, version: Option<String>) -> Option<String> {
    match (condition, version) {
        (Some(_), None) => Some("2.0".to_owned()),
        (_, v) => v,
    }
}

pub(super) fn principal_not_found(principal_id: &str, tenant: &str) -> ApiError {
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
        Some(sub) => {
            format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}")
        }
        None => format!("/providers/Microsoft.Authorization/roleDefinitions/{guid}"),
    }
}

/// A timestamp as ARM renders `createdOn` / `updatedOn` (RFC 3339, UTC, `Z`).
pub(crate) fn arm_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Which answer an assignment is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rendered {
    /// The 201 of its creation: ARM has not recorded the creator yet, so `createdBy` is null
    /// while `updatedBy` names the caller (Microsoft's "Assign Azure roles using the REST API").
    Created,
    /// Every later answer (GET, list, update, DELETE).
    Stored,
}

/// A role assignment in 2022-04-01's shape: all twelve `RoleAssignmentProperties`, the unset
/// ones as `null`, as ARM answers them.
pub(crate) fn assignment_json(a: &Assignment, rendered: Rendered) -> Value {
    let created_by = match rendered {
        Rendered::Created => None,
        Rendered::Stored => a.created_by.as_deref(),
    };
    json!({
        "properties": {
            "roleDefinitionId": role_definition_id(&a.scope, &a.role_definition_guid),
            "principalId": a.principal_id,
            "principalType": a.principal_type,
            "scope": a.scope,
            "condition": a.condition,
            "conditionVersion": a.condition_version,
            "createdOn": arm_time(a.created_on),
            "updatedOn": arm_time(a.updated_on),
            "createdBy": created_by,
            "updatedBy": a.updated_by,
            "delegatedManagedIdentityResourceId": Value::Null,
            "description": a.description,
        },
        "id": format!("{}/providers/Microsoft.Authorization/roleAssignments/{}", a.scope, a.name),
        "type": "Microsoft.Authorization/roleAssignments",
        "name": a.name,
    })
}

/// A role definition with its `createdOn`, `updatedOn`, `createdBy` and `updatedBy` (null for
/// built-in roles, as Azure answers).
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
            "createdOn": r.created_on,
            "updatedOn": r.updated_on,
            "createdBy": r.created_by,
            "updatedBy": r.updated_by,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::Seed;

    #[test]
    fn filters_parse_like_arm() {
        assert_eq!(
            AssignmentFilter::parse(None).unwrap(),
            AssignmentFilter::default()
        );
        let f = AssignmentFilter::parse(Some("atScope() and principalId eq 'ABC'")).unwrap();
        assert!(f.at_scope);
        assert_eq!(f.principal_id.as_deref(), Some("abc"));
        assert_eq!(
            AssignmentFilter::parse(Some("roleName eq 'x'"))
                .unwrap_err()
                .code,
            "UnsupportedQuery"
        );
    }

    #[test]
    fn assignment_rbac_follows_ancestor_scopes_and_propagation() {
        let seed = Seed::sandbox_default();
        let mut tenant = Tenant::from_seed(&seed).unwrap();
        let ident = tenant.identities.values().next().unwrap().clone();
        let rg_scope = format!(
            "/subscriptions/{}/resourceGroups/{}",
            ident.subscription, ident.resource_group
        );
        let account =
            format!("{rg_scope}/providers/Microsoft.Storage/storageAccounts/lapsedemodata");
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
        let limits = AssignmentLimits {
            replication_window: Duration::ZERO,
            per_subscription: 4000,
        };
        let name = "11111111-1111-4111-8111-111111111111";
        tenant
            .put_assignment(&rg_scope, name, input, "caller", t0, limits)
            .unwrap();
        let read = "Microsoft.Storage/storageAccounts/read";
        assert!(!tenant.authorized(&ident.principal_id, read, &account, t0, delay));
        assert!(tenant.authorized(&ident.principal_id, read, &account, t0 + delay, delay));
        assert!(!tenant.authorized(
            &ident.principal_id,
            "Microsoft.Storage/storageAccounts/write",
            &account,
            t0 + delay,
            delay
        ));
        let t1 = t0 + delay * 2;
        tenant.delete_assignment(&rg_scope, name, t1).unwrap();
        assert!(tenant.authorized(&ident.principal_id, read, &account, t1, delay));
        assert!(!tenant.authorized(&ident.principal_id, read, &account, t1 + delay, delay));
    }
}
