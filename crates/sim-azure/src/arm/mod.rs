//! Azure Resource Manager front door: bearer authentication, throttling, routing to the
//! resource providers the simulator serves, and RBAC on every operation.

mod identities;
mod locks;
mod permissions;
mod pim;
mod resources;
mod role_assignments;

pub(crate) use pim::sweep as pim_sweep;

use std::sync::Arc;
use std::time::Instant;

use hyper::StatusCode;

use crate::api_error::ApiError;
use crate::http::{Reply, Req, lock};
use crate::ids::{self, split_at_ci};
use crate::server::Shared;
use crate::tenant::{Access, Tenant};
use crate::throttle::{Draw, OpKind};
use crate::tokens::AccessClaims;

/// Audiences ARM accepts: Azure's own plus the simulator's URL (the operator may ask for
/// `{LAPSE_ARM_ENDPOINT}/.default`).
fn arm_audiences(base: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "https://management.azure.com",
        "https://management.core.windows.net",
    ]
    .iter()
    .flat_map(|a| [(*a).to_owned(), format!("{a}/")])
    .collect();
    v.push(base.to_owned());
    v.push(format!("{base}/"));
    v
}

fn unauthorized(code: &str, message: String) -> ApiError {
    ApiError::arm(StatusCode::UNAUTHORIZED, code, message)
}

fn authenticate(shared: &Shared, req: &Req) -> Result<AccessClaims, ApiError> {
    let tenant = lock(&shared.world).tenant_id.clone();
    let header = req.header("authorization").ok_or_else(|| {
        unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".into(),
        )
    })?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| {
            unauthorized("AuthenticationFailedInvalidHeader", "Authentication failed. The 'Authorization' header is provided in an invalid format.".into())
        })?;
    let claims: AccessClaims = shared.signer.verify(token).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => unauthorized(
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.".into(),
        ),
        _ => unauthorized(
            "InvalidAuthenticationToken",
            "The access token is invalid.".into(),
        ),
    })?;
    let allowed = arm_audiences(&shared.base_url);
    if !allowed.contains(&claims.aud) {
        return Err(unauthorized(
            "InvalidAuthenticationTokenAudience",
            format!(
                "The access token has been obtained for wrong audience or resource '{}'. It should exactly match with one of the allowed audiences '{}'.",
                claims.aud,
                allowed.join("','")
            ),
        ));
    }
    if !claims.tid.eq_ignore_ascii_case(&tenant) {
        return Err(unauthorized(
            "InvalidAuthenticationTokenTenant",
            format!(
                "The access token is from the wrong issuer. It must match the tenant '{tenant}'."
            ),
        ));
    }
    Ok(claims)
}

/// RBAC check of `action` at `scope` for the caller.
pub(crate) fn authorize(
    shared: &Shared,
    world: &Tenant,
    claims: &AccessClaims,
    action: &str,
    scope: &str,
) -> Result<(), ApiError> {
    let delay = shared.faults.propagation_delay();
    if world.authorized(&claims.oid, action, scope, Instant::now(), delay) {
        Ok(())
    } else {
        Err(ApiError::authorization_failed(&claims.oid, action, scope))
    }
}

/// RBAC check of a role assignment write or delete, evaluating the ABAC conditions of the
/// caller's assignments against `facts`. `assignment_id` (the role assignment's full ID) is the
/// scope Azure names when a condition refuses.
pub(crate) fn authorize_conditioned(
    shared: &Shared,
    world: &Tenant,
    claims: &AccessClaims,
    action: &str,
    scope: &str,
    assignment_id: &str,
    facts: &crate::abac::Facts,
) -> Result<(), ApiError> {
    let delay = shared.faults.propagation_delay();
    match world.access(
        &claims.oid,
        action,
        scope,
        Instant::now(),
        delay,
        Some(facts),
    ) {
        Access::Allowed => Ok(()),
        Access::Denied => Err(ApiError::authorization_failed(&claims.oid, action, scope)),
        Access::ConditionNotFulfilled => Err(ApiError::condition_not_fulfilled(
            &claims.oid,
            action,
            assignment_id,
        )),
    }
}

pub(crate) async fn handle(
    shared: &Arc<Shared>,
    req: &Req,
    request_id: &str,
    principal: &mut Option<String>,
) -> Reply {
    // PIM's clock first: no answer may show a schedule past its end, and RBAC decisions must
    // not count its role assignment.
    pim::sweep(shared);
    let claims = match authenticate(shared, req) {
        Ok(c) => c,
        Err(e) => {
            let tenant = lock(&shared.world).tenant_id.clone();
            return Reply::error(&e, request_id).header(
                "www-authenticate",
                format!(
                    "Bearer authorization_uri=\"{}/{tenant}\", error=\"invalid_token\", error_description=\"{}\"",
                    shared.base_url, e.code
                ),
            );
        }
    };
    *principal = Some(claims.oid.clone());
    // ARM's front door resolves the subscription before throttling or any resource provider.
    if let Some(sub) = ids::subscription_of(&req.path)
        && !lock(&shared.world)
            .subscriptions
            .contains_key(&ids::key(sub))
    {
        return Reply::error(&ApiError::subscription_not_found(sub), request_id);
    }
    let kind = OpKind::of(&req.method);
    let mut drawn = None;
    if shared.throttle.enabled()
        && let Some(sub) = ids::subscription_of(&req.path)
    {
        match shared.throttle.draw(sub, &claims.oid, kind, Instant::now()) {
            Draw::Allowed(left) => drawn = Some((sub, left)),
            Draw::Throttled(secs) => {
                let err = ApiError::arm(
                    StatusCode::TOO_MANY_REQUESTS,
                    "SubscriptionRequestsThrottled",
                    format!(
                        "Number of '{}' requests for subscription '{sub}' actor '{}' exceeded. Please try again after '{secs}' seconds after the additional tokens are available. Refer to https://aka.ms/arm-throttling for additional information.",
                        kind.word(),
                        claims.oid
                    ),
                )
                .with_retry_after(secs);
                return Reply::error(&err, request_id).header(kind.header(), "0");
            }
        }
    }
    let mut reply = match dispatch(shared, req, &claims).await {
        Ok(r) => r,
        Err(e) => Reply::error(&e, request_id),
    };
    match drawn {
        // The front door refused it (api-version): no token spent, no rate-limit header.
        Some((sub, _)) if reply.gateway => shared.throttle.refund(sub, &claims.oid, kind),
        Some((_, left)) => reply
            .headers
            .push((kind.header().to_owned(), left.to_string())),
        None => {}
    }
    reply
}

async fn dispatch(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
) -> Result<Reply, ApiError> {
    let path = req.path.trim_end_matches('/');
    if let Some((scope, "")) = split_at_ci(
        path,
        "/providers/Microsoft.Insights/eventtypes/management/values",
    ) && let ["subscriptions", sub] = crate::ids::segments(scope).as_slice()
    {
        req.require_api_version(&[crate::logs::ACTIVITY_API_VERSION])?;
        return crate::logs::list_activity(shared, req, claims, sub);
    }
    // Before the resource providers: a lock can sit on any resource (an identity's included).
    if let Some((scope, rest)) = split_at_ci(path, "/providers/Microsoft.Authorization/locks")
        && (rest.is_empty() || rest.starts_with('/'))
    {
        return locks::handle(shared, req, claims, scope, rest.trim_start_matches('/'));
    }
    if let Some((scope, rest)) = split_at_ci(path, "/providers/Microsoft.Authorization/permissions")
    {
        return permissions::handle(shared, req, claims, scope, rest);
    }
    // Before role assignments: `roleAssignments` is a prefix of the PIM types' names.
    for (needle, kind) in pim::Kind::ROUTES {
        if let Some((scope, rest)) = split_at_ci(path, needle)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return pim::handle(
                shared,
                req,
                claims,
                kind,
                scope,
                rest.trim_start_matches('/'),
            );
        }
    }
    if let Some((scope, rest)) =
        split_at_ci(path, "/providers/Microsoft.Authorization/roleAssignments")
    {
        return role_assignments::handle(shared, req, claims, scope, rest.trim_start_matches('/'));
    }
    if let Some((scope, rest)) =
        split_at_ci(path, "/providers/Microsoft.Authorization/roleDefinitions")
    {
        return role_assignments::role_definitions(
            shared,
            req,
            claims,
            scope,
            rest.trim_start_matches('/'),
        );
    }
    if let Some((scope, rest)) = split_at_ci(
        path,
        "/providers/Microsoft.ManagedIdentity/userAssignedIdentities",
    ) {
        return identities::handle(shared, req, claims, scope, rest.trim_start_matches('/')).await;
    }
    resources::handle(shared, req, claims, path)
}

/// Renders an `{"value": [...], "nextLink"}` page.
pub(crate) fn page(items: Vec<serde_json::Value>, next_link: Option<String>) -> serde_json::Value {
    let mut body = serde_json::json!({ "value": items });
    if let Some(link) = next_link {
        body["nextLink"] = serde_json::Value::String(link);
    }
    body
}
