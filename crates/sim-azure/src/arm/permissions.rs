//! `GET {scope}/providers/Microsoft.Authorization/permissions`: what the caller may do at a
//! subscription, resource group or resource (authorization 2022-04-01, `Permissions_ListFor*`;
//! `PermissionGetResult`). One entry per role assignment of the caller at or above the scope,
//! with its role's `actions`, `notActions`, `dataActions` and `notDataActions`; ABAC conditions
//! are not part of the answer.

use std::sync::Arc;
use std::time::Instant;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::api_error::ApiError;
use crate::http::{Reply, Req, lock};
use crate::server::Shared;
use crate::tokens::AccessClaims;

/// 2022-04-01 is the contract; older versions answer the same shape.
const VERSIONS: &[&str] = &[
    "2022-04-01",
    "2022-05-01-preview",
    "2018-01-01-preview",
    "2015-07-01",
];

/// The action ARM's REST reference names for calling the permissions API.
const READ: &str = "Microsoft.Authorization/permissions/read";

pub(crate) fn handle(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    scope: &str,
    rest: &str,
) -> Result<Reply, ApiError> {
    if !rest.is_empty() {
        return Err(ApiError::bad_request(
            "InvalidResourceType",
            format!("The resource path '{}' is not valid.", req.path),
        ));
    }
    req.require_api_version(VERSIONS)?;
    if req.method != Method::GET {
        return Err(ApiError::arm(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "The requested method '{}' is not supported for this resource.",
                req.method
            ),
        ));
    }
    if scope.is_empty() {
        return Err(ApiError::bad_request(
            "InvalidScope",
            "The scope '/' is not valid for listing permissions.",
        ));
    }
    let world = lock(&shared.world);
    world.check_scope_exists(scope)?;
    super::authorize(shared, &world, claims, READ, scope)?;
    let delay = shared.faults.propagation_delay();
    let entries: Vec<serde_json::Value> = world
        .effective_assignments(&claims.oid, scope, Instant::now(), delay)
        .filter_map(|a| world.find_role(&a.role_definition_guid))
        .map(|r| {
            json!({
                "actions": r.actions,
                "notActions": r.not_actions,
                "dataActions": r.data_actions,
                "notDataActions": r.not_data_actions,
            })
        })
        .collect();
    let skip: usize = match req.query("$skipToken") {
        None => 0,
        Some(t) => t.parse().map_err(|_| {
            ApiError::bad_request(
                "InvalidSkipToken",
                format!("The skip token '{t}' is not valid."),
            )
        })?,
    };
    let size = shared.config.page_size.max(1);
    let page: Vec<serde_json::Value> = entries.iter().skip(skip).take(size).cloned().collect();
    let next = (skip + size < entries.len()).then(|| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair(
            "api-version",
            req.query("api-version").unwrap_or("2022-04-01"),
        );
        q.append_pair("$skipToken", &(skip + size).to_string());
        format!("{}{}?{}", shared.base_url, req.path, q.finish())
    });
    Ok(Reply::json(StatusCode::OK, &super::page(page, next)))
}
