//! Microsoft.Authorization: management locks (2016-09-01, 2020-05-01) at any scope. Every
//! scope-specific operation of the swagger (`...AtSubscriptionLevel`, `...AtResourceGroupLevel`,
//! `...AtResourceLevel`) is the `{scope}` one with that scope, so one handler serves them all.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::api_error::ApiError;
use crate::http::{Reply, Req, lock};
use crate::server::Shared;
use crate::tenant::{LockLevel, LockListing, MgmtLock};
use crate::tokens::AccessClaims;

const VERSIONS: &[&str] = &["2016-09-01", "2020-05-01"];

const READ: &str = "Microsoft.Authorization/locks/read";
const WRITE: &str = "Microsoft.Authorization/locks/write";
const DELETE: &str = "Microsoft.Authorization/locks/delete";

/// Azure's limit on `notes`.
const NOTES_MAX: usize = 512;

#[derive(Debug, Deserialize)]
struct Body {
    properties: Option<Properties>,
}

#[derive(Debug, Deserialize)]
struct Properties {
    level: Option<String>,
    notes: Option<String>,
    owners: Option<Value>,
}

pub(crate) fn handle(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    scope: &str,
    name: &str,
) -> Result<Reply, ApiError> {
    req.require_api_version(VERSIONS)?;
    let scope = scope.trim_end_matches('/');
    if scope.is_empty() {
        return Err(ApiError::bad_request(
            "InvalidScope",
            "Locks can be placed at a subscription, resource group or resource.",
        ));
    }
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
    let mut world = lock(&shared.world);
    world.check_scope_exists(scope)?;
    match req.method {
        Method::GET => {
            super::authorize(shared, &world, claims, READ, scope)?;
            let l = world.get_lock(scope, name).ok_or_else(|| {
                ApiError::not_found(
                    "LockNotFound",
                    format!("The lock '{name}' could not be found."),
                )
            })?;
            Ok(Reply::json(StatusCode::OK, &l.json()))
        }
        Method::PUT => {
            if !crate::tenant::lock_name_ok(name) {
                return Err(ApiError::bad_request(
                    "InvalidLockName",
                    format!(
                        "The lock name '{name}' is invalid. It must be 1 to 90 characters and cannot contain '<', '>', '*', '%', '&', ':', '\\', '?', '.', '+', '/' or control characters."
                    ),
                ));
            }
            let body: Body = req.json()?;
            let props = body.properties.ok_or_else(|| {
                ApiError::invalid_body("The request is missing the required property 'properties'.")
            })?;
            let level = props
                .level
                .as_deref()
                .and_then(LockLevel::parse)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "LockLevelNotSupported",
                        format!(
                            "The lock level '{}' is not supported. Supported levels are 'CanNotDelete' and 'ReadOnly'.",
                            props.level.as_deref().unwrap_or("NotSpecified")
                        ),
                    )
                })?;
            if props
                .notes
                .as_deref()
                .is_some_and(|n| n.chars().count() > NOTES_MAX)
            {
                return Err(ApiError::bad_request(
                    "LockNotesTooLong",
                    format!("The lock notes cannot be longer than {NOTES_MAX} characters."),
                ));
            }
            super::authorize(shared, &world, claims, WRITE, scope)?;
            let (status, l) = world.put_lock(MgmtLock {
                scope: scope.to_owned(),
                name: name.to_owned(),
                level,
                notes: props.notes,
                owners: props.owners,
            });
            Ok(Reply::json(status, &l.json()))
        }
        Method::DELETE => {
            super::authorize(shared, &world, claims, DELETE, scope)?;
            Ok(match world.delete_lock(scope, name) {
                Some(_) => Reply::empty(StatusCode::OK),
                None => Reply::empty(StatusCode::NO_CONTENT),
            })
        }
        _ => Err(method_not_allowed(req)),
    }
}

fn list(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    scope: &str,
) -> Result<Reply, ApiError> {
    let listing = match req.query("$filter").map(str::trim) {
        None | Some("") => LockListing::All,
        Some(f) if f.eq_ignore_ascii_case("atScope()") => LockListing::AtScope,
        Some(f) => {
            return Err(ApiError::bad_request(
                "InvalidFilter",
                format!("The filter '{f}' is not supported. Supported filter: 'atScope()'."),
            ));
        }
    };
    let world = lock(&shared.world);
    world.check_scope_exists(scope)?;
    super::authorize(shared, &world, claims, READ, scope)?;
    let items = world
        .list_locks(scope, listing)
        .into_iter()
        .map(MgmtLock::json)
        .collect();
    Ok(Reply::json(StatusCode::OK, &super::page(items, None)))
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
