//! Microsoft.Authorization PIM for Azure resources (2020-10-01) at any scope:
//! `roleAssignmentScheduleRequests` (PUT, GET, list, `cancel`), `roleAssignmentSchedules` and
//! `roleAssignmentScheduleInstances` (GET, list). The rules live in `tenant/pim.rs`; here are
//! authorization, the licence, listing and PIM's clock ([`sweep`]).

use std::sync::Arc;
use std::time::Instant;

use hyper::{Method, StatusCode};
use serde::Deserialize;

use crate::api_error::ApiError;
use crate::audit::{AuditEntry, PIM_EXPIRY_ORIGIN};
use crate::http::{Reply, Req, lock};
use crate::ids;
use crate::server::Shared;
use crate::tenant::{AssignmentFilter, AssignmentLimits, RequestInput, Tenant};
use crate::tokens::AccessClaims;

const VERSIONS: &[&str] = &["2020-10-01"];

const REQUESTS_WRITE: &str = "Microsoft.Authorization/roleAssignmentScheduleRequests/write";
const REQUESTS_READ: &str = "Microsoft.Authorization/roleAssignmentScheduleRequests/read";
const REQUESTS_CANCEL: &str =
    "Microsoft.Authorization/roleAssignmentScheduleRequests/cancel/action";
const SCHEDULES_READ: &str = "Microsoft.Authorization/roleAssignmentSchedules/read";
const INSTANCES_READ: &str = "Microsoft.Authorization/roleAssignmentScheduleInstances/read";

/// The three PIM resource types under `{scope}/providers/Microsoft.Authorization/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Requests,
    Schedules,
    Instances,
}

impl Kind {
    /// The path part after the scope, longest first so that none is taken for another.
    pub(crate) const ROUTES: [(&'static str, Kind); 3] = [
        (
            "/providers/Microsoft.Authorization/roleAssignmentScheduleRequests",
            Kind::Requests,
        ),
        (
            "/providers/Microsoft.Authorization/roleAssignmentScheduleInstances",
            Kind::Instances,
        ),
        (
            "/providers/Microsoft.Authorization/roleAssignmentSchedules",
            Kind::Schedules,
        ),
    ];

    fn read_action(self) -> &'static str {
        match self {
            Kind::Requests => REQUESTS_READ,
            Kind::Schedules => SCHEDULES_READ,
            Kind::Instances => INSTANCES_READ,
        }
    }

    fn not_found(self, name: &str) -> ApiError {
        let (code, what) = match self {
            Kind::Requests => (
                "RoleAssignmentScheduleRequestNotFound",
                "role assignment schedule request",
            ),
            Kind::Schedules => ("RoleAssignmentScheduleNotFound", "role assignment schedule"),
            Kind::Instances => (
                "RoleAssignmentScheduleInstanceNotFound",
                "role assignment schedule instance",
            ),
        };
        ApiError::not_found(code, format!("The {what} '{name}' is not found."))
    }
}

#[derive(Debug, Deserialize)]
struct Body {
    properties: Option<RequestInput>,
}

/// Azure's answer in a tenant without Entra ID P2 (on every PIM operation).
fn unlicensed() -> ApiError {
    ApiError::bad_request(
        "AadPremiumLicenseRequired",
        "The tenant needs an AAD Premium 2 license.",
    )
}

fn check_licence(world: &Tenant) -> Result<(), ApiError> {
    if world.pim.licensed {
        Ok(())
    } else {
        Err(unlicensed())
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

pub(crate) fn handle(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    kind: Kind,
    scope: &str,
    rest: &str,
) -> Result<Reply, ApiError> {
    req.require_api_version(VERSIONS)?;
    let scope = if scope.is_empty() { "/" } else { scope };
    let (name, action) = match rest.split_once('/') {
        Some((n, a)) => (n, Some(a)),
        None => (rest, None),
    };
    match (kind, name.is_empty(), action, &req.method) {
        (_, true, None, &Method::GET) => list(shared, req, claims, kind, scope),
        (_, false, None, &Method::GET) => get(shared, claims, kind, scope, name),
        (Kind::Requests, false, None, &Method::PUT) => put(shared, req, claims, scope, name),
        (Kind::Requests, false, Some(a), &Method::POST) if a.eq_ignore_ascii_case("cancel") => {
            cancel(shared, claims, scope, name)
        }
        (_, _, Some(_), _) => Err(ApiError::bad_request(
            "InvalidResourceType",
            format!("The resource path '{}' is not valid.", req.path),
        )),
        _ => Err(method_not_allowed(req)),
    }
}

fn get(
    shared: &Arc<Shared>,
    claims: &AccessClaims,
    kind: Kind,
    scope: &str,
    name: &str,
) -> Result<Reply, ApiError> {
    let world = lock(&shared.world);
    world.check_scope_exists(scope)?;
    super::authorize(shared, &world, claims, kind.read_action(), scope)?;
    check_licence(&world)?;
    let body = match kind {
        Kind::Requests => world
            .pim
            .request(scope, name)
            .map(|r| world.schedule_request_json(r)),
        Kind::Schedules => world
            .pim
            .schedule(scope, name)
            .map(|s| world.schedule_json(s)),
        Kind::Instances => world
            .pim
            .instance(scope, name)
            .map(|s| world.schedule_instance_json(s)),
    }
    .ok_or_else(|| kind.not_found(name))?;
    Ok(Reply::json(StatusCode::OK, &body))
}

fn put(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    scope: &str,
    name: &str,
) -> Result<Reply, ApiError> {
    if !ids::is_guid(name) {
        return Err(ApiError::bad_request(
            "InvalidRoleAssignmentScheduleRequestName",
            format!(
                "The role assignment schedule request name '{name}' is not valid. The name must be a GUID."
            ),
        ));
    }
    let mut world = lock(&shared.world);
    world.check_scope_exists(scope)?;
    super::authorize(shared, &world, claims, REQUESTS_WRITE, scope)?;
    check_licence(&world)?;
    let body: Body = req.json()?;
    let input = body.properties.ok_or_else(|| {
        ApiError::invalid_body("The request is missing the required property 'properties'.")
    })?;
    let limits = AssignmentLimits {
        replication_window: shared.faults.replication_window(),
        per_subscription: shared.config.role_assignment_limit,
    };
    let stored =
        world.put_schedule_request(scope, name, input, &claims.oid, Instant::now(), limits)?;
    Ok(Reply::json(
        StatusCode::CREATED,
        &world.schedule_request_json(&stored),
    ))
}

/// Only a pending request can be cancelled; the simulator's requests never wait (no approvals,
/// no eligibilities), so an existing one is always past cancelling.
fn cancel(
    shared: &Arc<Shared>,
    claims: &AccessClaims,
    scope: &str,
    name: &str,
) -> Result<Reply, ApiError> {
    let world = lock(&shared.world);
    world.check_scope_exists(scope)?;
    super::authorize(shared, &world, claims, REQUESTS_CANCEL, scope)?;
    check_licence(&world)?;
    let r = world
        .pim
        .request(scope, name)
        .ok_or_else(|| Kind::Requests.not_found(name))?;
    Err(ApiError::bad_request(
        "RoleAssignmentScheduleRequestNotCancellable",
        format!(
            "Only a pending request can be cancelled; the role assignment schedule request '{name}' is {}.",
            r.status
        ),
    ))
}

fn list(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    kind: Kind,
    scope: &str,
) -> Result<Reply, ApiError> {
    let filter = AssignmentFilter::parse(req.query("$filter"))?;
    let world = lock(&shared.world);
    world.check_scope_exists(scope)?;
    super::authorize(shared, &world, claims, kind.read_action(), scope)?;
    check_licence(&world)?;
    let skip: usize = match req.query("$skipToken") {
        None => 0,
        Some(t) => t.parse().map_err(|_| {
            ApiError::bad_request(
                "InvalidSkipToken",
                format!("The skip token '{t}' is not valid."),
            )
        })?,
    };
    let all: Vec<serde_json::Value> = match kind {
        Kind::Requests => world
            .pim
            .requests_at(scope, &filter)
            .into_iter()
            .map(|r| world.schedule_request_json(r))
            .collect(),
        Kind::Schedules => world
            .pim
            .schedules_at(scope, &filter)
            .into_iter()
            .map(|s| world.schedule_json(s))
            .collect(),
        Kind::Instances => world
            .pim
            .schedules_at(scope, &filter)
            .into_iter()
            .map(|s| world.schedule_instance_json(s))
            .collect(),
    };
    let size = shared.config.page_size.max(1);
    let total = all.len();
    let items = all.into_iter().skip(skip).take(size).collect();
    let next = (skip + size < total).then(|| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair(
            "api-version",
            req.query("api-version").unwrap_or(VERSIONS[0]),
        );
        if let Some(f) = req.query("$filter") {
            q.append_pair("$filter", f);
        }
        q.append_pair("$skipToken", &(skip + size).to_string());
        format!("{}{}?{}", shared.base_url, req.path, q.finish())
    });
    Ok(Reply::json(StatusCode::OK, &super::page(items, next)))
}

/// PIM's clock: removes the schedules whose end has passed (with their role assignments,
/// recorded in the audit log as PIM's own DELETEs, `origin: pim-expiry`) and creates the role
/// assignments of schedules whose start has come. Run by the server's ticker every second and
/// before every ARM request, so no answer shows a schedule past its end.
pub(crate) fn sweep(shared: &Shared) {
    let removed = lock(&shared.world).pim_sweep(Instant::now());
    for id in removed {
        shared.audit.push(AuditEntry {
            time: chrono::Utc::now(),
            principal: None,
            method: "DELETE".to_owned(),
            path: id,
            query: None,
            status: 200,
            error_code: None,
            latency: std::time::Duration::ZERO,
            request_id: uuid::Uuid::new_v4().to_string(),
            origin: Some(PIM_EXPIRY_ORIGIN.to_owned()),
        });
    }
}
