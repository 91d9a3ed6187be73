//! Microsoft.Authorization: role assignments (2022-04-01) at any scope and role definitions.

use std::sync::Arc;
use std::time::Instant;

use hyper::{Method, StatusCode};
use serde::Deserialize;

use crate::api_error::ApiError;
use crate::http::{Reply, Req, lock};
use crate::ids;
use crate::server::Shared;
use crate::tokens::AccessClaims;
use crate::world::{
    AssignmentFilter, AssignmentInput, AssignmentLimits, assignment_json, role_definition_json,
};

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
            Ok(Reply::json(StatusCode::OK, &assignment_json(a)))
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
            super::authorize(shared, &world, claims, WRITE, scope)?;
            let limits = AssignmentLimits {
                replication_window: shared.faults.replication_window(),
                per_subscription: shared.config.role_assignment_limit,
            };
            let (status, a) = world.put_assignment(scope, name, input, &claims.oid, now, limits)?;
            Ok(Reply::json(status, &assignment_json(&a)))
        }
        Method::DELETE => {
            super::authorize(shared, &world, claims, DELETE, scope)?;
            let delay = shared.faults.propagation_delay();
            world.prune_tombstones(now, delay);
            match world.delete_assignment(scope, name, now) {
                Some(a) => Ok(Reply::json(StatusCode::OK, &assignment_json(&a))),
                None => Ok(Reply::empty(StatusCode::NO_CONTENT)),
            }
        }
        _ => Err(method_not_allowed(req)),
    }
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
        .map(|a| assignment_json(a))
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
    let visible = |r: &&crate::world::RoleDef| {
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
