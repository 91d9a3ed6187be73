//! Microsoft.Authorization: role assignments (2022-04-01) at any scope and role definitions.

use std::sync::Arc;
use std::time::Instant;

use hyper::{Method, StatusCode};
use serde::Deserialize;

use crate::abac::{Facts, Source};
use crate::api_error::ApiError;
use crate::http::{Reply, Req, lock};
use crate::ids;
use crate::server::Shared;
use crate::tenant::{
    AssignmentFilter, AssignmentInput, AssignmentLimits, LockedOp, Rendered, arm_time,
    assignment_json, role_definition_json,
};
use crate::tokens::AccessClaims;

/// 2022-04-01 is the contract; 2020-10-01-preview has the same shapes (an upstream example
/// still carries it).
const ASSIGNMENT_VERSIONS: &[&str] = &["2022-04-01", "2020-10-01-preview"];
const DEFINITION_VERSIONS: &[&str] = &["2022-04-01", "2022-05-01-preview", "2018-01-01-preview"];

const READ: &str = "Microsoft.Authorization/roleAssignments/read";
const WRITE: &str = "Microsoft.Authorization/roleAssignments/write";
const DELETE: &str = "Microsoft.Authorization/roleAssignments/delete";

#[derive(Debug, Deserialize)]
struct CreateBody {
    properties: Option<AssignmentInput>,
}

fn scope_or_root(scope: &str) -> &str {
    if scope.is_empty() { "/" } else { scope }
}

pub(crate) fn handle(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    scope: &str,
    name: &str,
) -> Result<Reply, ApiError> {
    req.require_api_version(ASSIGNMENT_VERSIONS)?;
    let scope = scope_or_root(scope);
    if name.is_empty() {
        return if req.method == Method::GET {
            list(shared, req, claims, scope)
        } else {
            Err(method_not_allowed(req))
        };
    }
    if name.contains('/') {
        return Err(ApiError::bad_request(
            "InvalidResourceType",
            format!("The resource path '{}' is not valid.", req.path),
        ));
    }
    let now = Instant::now();
    let mut world = lock(&shared.world);
    match req.method {
        Method::GET => {
            super::authorize(shared, &world, claims, READ, scope)?;
            let a = world
                .assignments
                .get(&ids::key(name))
                .filter(|a| ids::same(&a.scope, scope))
                .ok_or_else(|| {
                    ApiError::not_found(
                        "RoleAssignmentNotFound",
                        format!("The role assignment '{name}' is not found."),
                    )
                })?;
            Ok(Reply::json(
                StatusCode::OK,
                &assignment_json(a, Rendered::Stored),
            ))
        }
        Method::PUT => {
            if !ids::is_guid(name) {
                return Err(ApiError::bad_request(
                    "InvalidRoleAssignmentId",
                    format!(
                        "The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."
                    ),
                ));
            }
            let body: CreateBody = req.json()?;
            let input = body.properties.ok_or_else(|| {
                ApiError::invalid_body("The request is missing the required property 'properties'.")
            })?;
            world.check_scope_exists(scope)?;
            let facts = write_facts(&world, &input);
            super::authorize_conditioned(
                shared,
                &world,
                claims,
                WRITE,
                scope,
                &assignment_id(scope, name),
                &facts,
            )?;
            world.check_locks(&assignment_id(scope, name), LockedOp::Write)?;
            let limits = AssignmentLimits {
                replication_window: shared.faults.replication_window(),
                per_subscription: shared.config.role_assignment_limit,
            };
            let (status, a) = world.put_assignment(scope, name, input, &claims.oid, now, limits)?;
            let rendered = if status == StatusCode::CREATED {
                Rendered::Created
            } else {
                Rendered::Stored
            };
            Ok(Reply::json(status, &assignment_json(&a, rendered)))
        }
        Method::DELETE => {
            // ARM cannot authorize anything at a scope that is gone (a deleted resource group or
            // resource): it answers its 403 naming the assignment, "...or the scope is invalid".
            if let Err(e) = world.check_scope_exists(scope) {
                return Err(match e.code.as_str() {
                    "ResourceGroupNotFound" | "ResourceNotFound" => ApiError::authorization_failed(
                        &claims.oid,
                        DELETE,
                        &assignment_id(scope, name),
                    ),
                    _ => e,
                });
            }
            // A condition judges the assignment being deleted (`@Resource`); deleting one that
            // is not there changes nothing, so only the action itself is checked then.
            let existing = world
                .assignments
                .get(&ids::key(name))
                .filter(|a| ids::same(&a.scope, scope))
                .map(|a| {
                    Facts::role_assignment(
                        DELETE,
                        Source::Resource,
                        Some(&a.role_definition_guid),
                        Some(&a.principal_id),
                        Some(&a.principal_type),
                    )
                });
            match &existing {
                Some(facts) => super::authorize_conditioned(
                    shared,
                    &world,
                    claims,
                    DELETE,
                    scope,
                    &assignment_id(scope, name),
                    facts,
                )?,
                None => super::authorize(shared, &world, claims, DELETE, scope)?,
            }
            // ARM's front door checks locks whether or not the assignment exists.
            world.check_locks(&assignment_id(scope, name), LockedOp::Delete)?;
            let delay = shared.faults.propagation_delay();
            world.prune_tombstones(now, delay);
            match world.delete_assignment(scope, name, now) {
                Some(a) => Ok(Reply::json(
                    StatusCode::OK,
                    &assignment_json(&a, Rendered::Stored),
                )),
                None => Ok(Reply::empty(StatusCode::NO_CONTENT)),
            }
        }
        _ => Err(method_not_allowed(req)),
    }
}

/// The full ID of the role assignment `name` at `scope`.
fn assignment_id(scope: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{name}",
        scope.trim_end_matches('/')
    )
}

/// The `@Request` attributes of a role assignment PUT: the role definition GUID and principal
/// of the body, and its `principalType` (else the directory's kind of that principal).
fn write_facts(world: &crate::tenant::Tenant, input: &AssignmentInput) -> Facts {
    let role = input
        .role_definition_id
        .as_deref()
        .map(|r| r.trim_end_matches('/').rsplit('/').next().unwrap_or(r));
    let principal_type = input.principal_type.clone().or_else(|| {
        input
            .principal_id
            .as_deref()
            .and_then(|p| world.principals.get(&ids::key(p)))
            .map(|p| p.kind.as_str().to_owned())
    });
    Facts::role_assignment(
        WRITE,
        Source::Request,
        role,
        input.principal_id.as_deref(),
        principal_type.as_deref(),
    )
}

fn method_not_allowed(req: &Req) -> ApiError {
    ApiError::arm(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!(
            "The requested method '{}' is not supported for this resource.",
            req.method
        ),
    )
}

fn list(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    scope: &str,
) -> Result<Reply, ApiError> {
    let filter = AssignmentFilter::parse(req.query("$filter"))?;
    let world = lock(&shared.world);
    world.check_scope_exists(scope)?;
    super::authorize(shared, &world, claims, READ, scope)?;
    let skip: usize = match req.query("$skipToken") {
        None => 0,
        Some(t) => t.parse().map_err(|_| {
            ApiError::bad_request(
                "InvalidSkipToken",
                format!("The skip token '{t}' is not valid."),
            )
        })?,
    };
    let all = world.list_assignments(scope, &filter);
    let size = shared.config.page_size.max(1);
    let items = all
        .iter()
        .skip(skip)
        .take(size)
        .map(|a| assignment_json(a, Rendered::Stored))
        .collect();
    let next = (skip + size < all.len()).then(|| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair(
            "api-version",
            req.query("api-version").unwrap_or("2022-04-01"),
        );
        if let Some(f) = req.query("$filter") {
            q.append_pair("$filter", f);
        }
        q.append_pair("$skipToken", &(skip + size).to_string());
        format!("{}{}?{}", shared.base_url, req.path, q.finish())
    });
    Ok(Reply::json(StatusCode::OK, &super::page(items, next)))
}

/// `{scope}/providers/Microsoft.Authorization/roleDefinitions[/{id}]`.
pub(crate) fn role_definitions(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    scope: &str,
    id: &str,
) -> Result<Reply, ApiError> {
    req.require_api_version(DEFINITION_VERSIONS)?;
    if req.method == Method::PUT && !id.is_empty() {
        return put_role_definition(shared, req, claims, scope_or_root(scope), id);
    }
    if req.method != Method::GET {
        return Err(method_not_allowed(req));
    }
    let scope = scope_or_root(scope);
    let world = lock(&shared.world);
    world.check_scope_exists(scope)?;
    // Tenant-level reads (scope "/") are open to any authenticated caller, as in Azure.
    if scope != "/" {
        super::authorize(
            shared,
            &world,
            claims,
            "Microsoft.Authorization/roleDefinitions/read",
            scope,
        )?;
    }
    let visible = |r: &&crate::tenant::RoleDef| {
        r.assignable_scopes
            .iter()
            .any(|s| ids::is_at_or_above(s, scope) || ids::is_at_or_above(scope, s))
    };
    if !id.is_empty() {
        let r = world
            .role_defs
            .iter()
            .filter(visible)
            .find(|r| r.id.eq_ignore_ascii_case(id))
            .ok_or_else(|| {
                ApiError::not_found(
                    "RoleDefinitionDoesNotExist",
                    format!("The specified role definition with ID '{id}' does not exist."),
                )
            })?;
        return Ok(Reply::json(StatusCode::OK, &role_definition_json(scope, r)));
    }
    let (name, kind) = parse_definition_filter(req.query("$filter"))?;
    let items = world
        .role_defs
        .iter()
        .filter(visible)
        .filter(|r| {
            name.as_deref()
                .is_none_or(|n| r.name.eq_ignore_ascii_case(n))
        })
        .filter(|r| {
            kind.as_deref().is_none_or(|k| {
                k.eq_ignore_ascii_case(if r.built_in {
                    "BuiltInRole"
                } else {
                    "CustomRole"
                })
            })
        })
        .map(|r| role_definition_json(scope, r))
        .collect();
    Ok(Reply::json(StatusCode::OK, &super::page(items, None)))
}

type DefinitionFilter = (Option<String>, Option<String>);

fn parse_definition_filter(filter: Option<&str>) -> Result<DefinitionFilter, ApiError> {
    let Some(f) = filter else {
        return Ok((None, None));
    };
    let f = f.trim();
    let value = |rest: &str| {
        rest.trim()
            .trim_matches(|c| c == '\'' || c == '"')
            .to_owned()
    };
    let lower = f.to_ascii_lowercase();
    if let Some(i) = lower
        .strip_prefix("rolename eq ")
        .map(|_| "rolename eq ".len())
    {
        Ok((Some(value(&f[i..])), None))
    } else if let Some(i) = lower.strip_prefix("type eq ").map(|_| "type eq ".len()) {
        Ok((None, Some(value(&f[i..]))))
    } else {
        Err(ApiError::bad_request(
            "UnsupportedQuery",
            format!(
                "The filter '{f}' is not supported. Supported filters are 'roleName eq {{name}}' and 'type eq {{type}}'."
            ),
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DefinitionBody {
    properties: Option<DefinitionInput>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DefinitionInput {
    role_name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    permissions: Vec<PermissionInput>,
    #[serde(default)]
    assignable_scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PermissionInput {
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    not_actions: Vec<String>,
    #[serde(default)]
    data_actions: Vec<String>,
    #[serde(default)]
    not_data_actions: Vec<String>,
}

/// `PUT {scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}` (what `az role
/// definition create` sends): creates or updates a custom role. The caller needs
/// `roleDefinitions/write` at every assignable scope; role names are unique in the tenant.
fn put_role_definition(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    scope: &str,
    id: &str,
) -> Result<Reply, ApiError> {
    if id.contains('/') || !ids::is_guid(id) {
        return Err(ApiError::bad_request(
            "InvalidRoleDefinitionId",
            format!(
                "The role definition ID '{id}' is not valid. The role definition ID must be a GUID."
            ),
        ));
    }
    let body: DefinitionBody = req.json()?;
    let input = body.properties.ok_or_else(|| {
        ApiError::invalid_body("The request is missing the required property 'properties'.")
    })?;
    let name = input
        .role_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_body(
                "The request is missing the required property 'properties.roleName'.",
            )
        })?
        .to_owned();
    if input.assignable_scopes.is_empty() {
        return Err(ApiError::invalid_body(
            "The request is missing the required property 'properties.assignableScopes'.",
        ));
    }
    let mut world = lock(&shared.world);
    world.check_scope_exists(scope)?;
    for s in std::iter::once(scope).chain(input.assignable_scopes.iter().map(String::as_str)) {
        world.check_scope_exists(s)?;
        super::authorize(
            shared,
            &world,
            claims,
            "Microsoft.Authorization/roleDefinitions/write",
            s,
        )?;
    }
    // Built-in roles live at the tenant root, where no one may write role definitions.
    if world
        .role_defs
        .iter()
        .any(|r| r.built_in && r.id.eq_ignore_ascii_case(id))
    {
        return Err(ApiError::authorization_failed(
            &claims.oid,
            "Microsoft.Authorization/roleDefinitions/write",
            "/",
        ));
    }
    let permission = input.permissions.into_iter().next().unwrap_or_default();
    let written = arm_time(chrono::Utc::now());
    let def = crate::tenant::RoleDef {
        id: id.to_ascii_lowercase(),
        name,
        description: input.description.unwrap_or_default(),
        built_in: false,
        actions: permission.actions,
        not_actions: permission.not_actions,
        data_actions: permission.data_actions,
        not_data_actions: permission.not_data_actions,
        assignable_scopes: input.assignable_scopes,
        created_on: written.clone(),
        updated_on: written,
        created_by: Some(claims.oid.clone()),
        updated_by: Some(claims.oid.clone()),
    };
    let stored = world.put_role_definition(def)?;
    Ok(Reply::json(
        StatusCode::CREATED,
        &role_definition_json(scope, &stored),
    ))
}
