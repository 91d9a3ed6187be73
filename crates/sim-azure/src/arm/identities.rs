//! Microsoft.ManagedIdentity: user-assigned identities (2023-01-31, 2024-11-30) and their
//! federated identity credentials, with Azure's name rule, uniqueness, limit and refusal of
//! overlapping writes on one identity.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use hyper::{Method, StatusCode};
use regex::Regex;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::http::{Reply, Req, lock};
use crate::ids::{key, segments};
use crate::server::Shared;
use crate::tenant::{Fic, Identity, LockedOp};
use crate::tokens::AccessClaims;

/// 2025-01-31-preview is served for flexible FICs (`claimsMatchingExpression`).
const VERSIONS: &[&str] = &["2023-01-31", "2024-11-30", "2025-01-31-preview"];

const IDENTITY_READ: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/read";
const IDENTITY_WRITE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/write";
const IDENTITY_DELETE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/delete";
const FIC_READ: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read";
const FIC_WRITE: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write";
const FIC_DELETE: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete";

static FIC_NAME: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new("^[a-zA-Z0-9][a-zA-Z0-9-_]{2,119}$").ok());

fn fic_name_ok(name: &str) -> bool {
    FIC_NAME.as_ref().is_some_and(|re| re.is_match(name))
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

fn identity_not_found(rg: &str, name: &str) -> ApiError {
    ApiError::not_found(
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

fn identity_json(i: &Identity, api_version: &str, tenant: &str) -> Value {
    let mut props = json!({
        "tenantId": tenant,
        "principalId": i.principal_id,
        "clientId": i.client_id,
    });
    if api_version >= "2024-11-30" {
        props["isolationScope"] = json!("None");
    }
    json!({
        "id": i.id(),
        "name": i.name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
        "location": i.location,
        "tags": i.tags,
        "properties": props,
    })
}

fn fic_json(identity_id: &str, f: &Fic) -> Value {
    let mut props = json!({ "issuer": f.issuer, "audiences": f.audiences });
    if let Some(s) = &f.subject {
        props["subject"] = json!(s);
    }
    if let Some(e) = &f.claims_matching_expression {
        props["claimsMatchingExpression"] = e.clone();
    }
    json!({
        "id": format!("{identity_id}/federatedIdentityCredentials/{}", f.name),
        "name": f.name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
        "properties": props,
    })
}

#[derive(Debug, Deserialize)]
struct IdentityBody {
    location: Option<String>,
    #[serde(default)]
    tags: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FicProps {
    issuer: Option<String>,
    subject: Option<String>,
    audiences: Option<Vec<String>>,
    claims_matching_expression: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct FicBody {
    properties: Option<FicProps>,
}

pub(crate) async fn handle(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    scope: &str,
    rest: &str,
) -> Result<Reply, ApiError> {
    req.require_api_version(VERSIONS)?;
    let api_version = req.query("api-version").unwrap_or_default().to_owned();
    let scope_segs = segments(scope);
    let is = |i: usize, lit: &str| {
        scope_segs
            .get(i)
            .is_some_and(|s| s.eq_ignore_ascii_case(lit))
    };
    let rest_segs = segments(rest);
    match (scope_segs.len(), rest_segs.as_slice()) {
        (2, []) if is(0, "subscriptions") => {
            list(shared, req, claims, scope_segs[1], None, &api_version)
        }
        (4, []) if is(0, "subscriptions") && is(2, "resourceGroups") => list(
            shared,
            req,
            claims,
            scope_segs[1],
            Some(scope_segs[3]),
            &api_version,
        ),
        (4, [name]) if is(0, "subscriptions") && is(2, "resourceGroups") => identity(
            shared,
            req,
            claims,
            scope_segs[1],
            scope_segs[3],
            name,
            &api_version,
        ),
        (4, [name, fics, tail @ ..])
            if is(0, "subscriptions")
                && is(2, "resourceGroups")
                && fics.eq_ignore_ascii_case("federatedIdentityCredentials") =>
        {
            match tail {
                [] => list_fics(shared, req, claims, scope_segs[1], scope_segs[3], name),
                [fic] => fic_op(shared, req, claims, scope_segs[1], scope_segs[3], name, fic).await,
                _ => Err(ApiError::bad_request(
                    "InvalidResourceType",
                    format!("The resource path '{}' is not valid.", req.path),
                )),
            }
        }
        _ => Err(ApiError::bad_request(
            "InvalidResourceType",
            format!("The resource path '{}' is not valid.", req.path),
        )),
    }
}

fn list(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    sub: &str,
    rg: Option<&str>,
    api_version: &str,
) -> Result<Reply, ApiError> {
    if req.method != Method::GET {
        return Err(method_not_allowed(req));
    }
    let world = lock(&shared.world);
    let scope = match rg {
        Some(rg) => format!("/subscriptions/{sub}/resourceGroups/{rg}"),
        None => format!("/subscriptions/{sub}"),
    };
    world.check_scope_exists(&scope)?;
    let items = world
        .identities
        .values()
        .filter(|i| {
            i.subscription.eq_ignore_ascii_case(sub)
                && rg.is_none_or(|rg| i.resource_group.eq_ignore_ascii_case(rg))
        })
        .filter(|i| super::authorize(shared, &world, claims, IDENTITY_READ, &i.id()).is_ok())
        .map(|i| identity_json(i, api_version, &world.tenant_id))
        .collect::<Vec<Value>>();
    // Pages of `Config::page_size`, the next one named by `$skiptoken` as the MSI provider's
    // list examples write it (`…/userAssignedIdentities?api-version=…&$skiptoken=…`).
    let skip: usize = match req.query("$skiptoken") {
        None => 0,
        Some(t) => t.parse().map_err(|_| {
            ApiError::bad_request(
                "InvalidSkipToken",
                format!("The skip token '{t}' is not valid."),
            )
        })?,
    };
    let size = shared.config.page_size.max(1);
    let next = (skip + size < items.len()).then(|| {
        format!(
            "{}{}?api-version={api_version}&$skiptoken={}",
            shared.base_url,
            req.path,
            skip + size
        )
    });
    let page = items.into_iter().skip(skip).take(size).collect();
    Ok(Reply::json(StatusCode::OK, &super::page(page, next)))
}

fn identity(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    sub: &str,
    rg: &str,
    name: &str,
    api_version: &str,
) -> Result<Reply, ApiError> {
    let id = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    );
    let mut world = lock(&shared.world);
    let tenant = world.tenant_id.clone();
    let render = |i: &Identity| identity_json(i, api_version, &tenant);
    match req.method {
        Method::GET => {
            super::authorize(shared, &world, claims, IDENTITY_READ, &id)?;
            world.check_scope_exists(&format!("/subscriptions/{sub}/resourceGroups/{rg}"))?;
            let i = world
                .identity(sub, rg, name)
                .ok_or_else(|| identity_not_found(rg, name))?;
            Ok(Reply::json(StatusCode::OK, &render(i)))
        }
        Method::PUT => {
            super::authorize(shared, &world, claims, IDENTITY_WRITE, &id)?;
            world.check_scope_exists(&format!("/subscriptions/{sub}/resourceGroups/{rg}"))?;
            let body: IdentityBody = req.json()?;
            world.check_locks(&id, LockedOp::Write)?;
            let location = body.location.ok_or_else(|| {
                ApiError::bad_request(
                    "LocationRequired",
                    "The location property is required for this definition.",
                )
            })?;
            let tags = body.tags.unwrap_or_else(|| json!({}));
            if let Some(existing) = world.identity_mut(sub, rg, name) {
                existing.tags = tags;
                let v = render(existing);
                return Ok(Reply::json(StatusCode::OK, &v));
            }
            let (sub_name, rg_name) = canonical_names(&world, sub, rg);
            let created = world.add_identity(
                &sub_name,
                &rg_name,
                name,
                &location,
                tags,
                uuid::Uuid::new_v4().to_string(),
                uuid::Uuid::new_v4().to_string(),
                Some(Instant::now()),
            );
            let location = format!("{}{}", shared.base_url, created.id());
            let v = render(created);
            Ok(Reply::json(StatusCode::CREATED, &v).header("location", location))
        }
        Method::DELETE => {
            super::authorize(shared, &world, claims, IDENTITY_DELETE, &id)?;
            world.check_locks(&id, LockedOp::Delete)?;
            let Some(i) = world.identity(sub, rg, name).cloned() else {
                return Ok(Reply::empty(StatusCode::NO_CONTENT));
            };
            world.identities.remove(&key(&i.id()));
            world.principals.remove(&key(&i.principal_id));
            Ok(Reply::empty(StatusCode::OK))
        }
        _ => Err(method_not_allowed(req)),
    }
}

/// Subscription and resource group names as seeded (IDs echo the stored case).
fn canonical_names(world: &crate::tenant::Tenant, sub: &str, rg: &str) -> (String, String) {
    let s = world.subscriptions.get(&key(sub));
    let sub_name = s.map_or_else(|| sub.to_owned(), |s| s.id.clone());
    let rg_name = s
        .and_then(|s| s.resource_groups.get(&key(rg)))
        .map_or_else(|| rg.to_owned(), |g| g.name.clone());
    (sub_name, rg_name)
}

fn list_fics(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    sub: &str,
    rg: &str,
    name: &str,
) -> Result<Reply, ApiError> {
    if req.method != Method::GET {
        return Err(method_not_allowed(req));
    }
    let world = lock(&shared.world);
    world.check_scope_exists(&format!("/subscriptions/{sub}/resourceGroups/{rg}"))?;
    let i = world
        .identity(sub, rg, name)
        .ok_or_else(parent_identity_not_found)?;
    super::authorize(shared, &world, claims, FIC_READ, &i.id())?;
    let top: usize = match req.query("$top") {
        None => usize::MAX,
        Some(t) => t.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
            ApiError::bad_request(
                "InvalidParameter",
                format!(
                    "The value '{t}' of $top is not valid: it must be an integer of at least 1."
                ),
            )
        })?,
    };
    let skip: usize = req
        .query("$skiptoken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let id = i.id();
    let all: Vec<&Fic> = i.fics.values().collect();
    let items = all
        .iter()
        .skip(skip)
        .take(top)
        .map(|f| fic_json(&id, f))
        .collect();
    let next = (top != usize::MAX && skip + top < all.len()).then(|| {
        format!(
            "{}{}?api-version={}&$top={top}&$skiptoken={}",
            shared.base_url,
            req.path,
            req.query("api-version").unwrap_or_default(),
            skip + top
        )
    });
    Ok(Reply::json(StatusCode::OK, &super::page(items, next)))
}

/// The managed identity RP's 404 for a FIC operation under an identity that does not exist
/// (Microsoft's "Important considerations and restrictions for federated identity credentials",
/// Errors; the code is not published: ARM's `ResourceNotFound` is kept).
fn parent_identity_not_found() -> ApiError {
    ApiError::not_found(
        "ResourceNotFound",
        "The parent user-assigned identity doesn't exist.",
    )
}

fn concurrent_write(identity_id: &str) -> ApiError {
    ApiError::arm(
        StatusCode::CONFLICT,
        "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
        format!(
            "Too many Federated Identity Credentials are written concurrently for the managed identity '{}'. Concurrent Federated Identity Credentials writes under the same managed identity are not supported.",
            identity_id.to_ascii_lowercase()
        ),
    )
}

#[allow(clippy::too_many_arguments)]
async fn fic_op(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    sub: &str,
    rg: &str,
    name: &str,
    fic: &str,
) -> Result<Reply, ApiError> {
    let identity_id = {
        let world = lock(&shared.world);
        world.check_scope_exists(&format!("/subscriptions/{sub}/resourceGroups/{rg}"))?;
        let i = world
            .identity(sub, rg, name)
            .ok_or_else(parent_identity_not_found)?;
        i.id()
    };
    match req.method {
        Method::GET => {
            let world = lock(&shared.world);
            super::authorize(shared, &world, claims, FIC_READ, &identity_id)?;
            let i = world
                .identity(sub, rg, name)
                .ok_or_else(parent_identity_not_found)?;
            let f = i.fics.get(&key(fic)).ok_or_else(|| {
                ApiError::not_found(
                    "ResourceNotFound",
                    format!("The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/{name}/federatedIdentityCredentials/{fic}' under resource group '{rg}' was not found."),
                )
            })?;
            Ok(Reply::json(StatusCode::OK, &fic_json(&identity_id, f)))
        }
        Method::PUT | Method::DELETE => {
            let is_put = req.method == Method::PUT;
            let parsed = if is_put {
                if !fic_name_ok(fic) {
                    return Err(ApiError::bad_request(
                        "BadRequest",
                        format!("Federated Identity Credential name '{fic}' is invalid."),
                    ));
                }
                Some(validate_fic(req, fic)?)
            } else {
                None
            };
            {
                let mut world = lock(&shared.world);
                super::authorize(
                    shared,
                    &world,
                    claims,
                    if is_put { FIC_WRITE } else { FIC_DELETE },
                    &identity_id,
                )?;
                // A FIC is a child resource of the identity: locks on it and above it apply.
                world.check_locks(
                    &format!("{identity_id}/federatedIdentityCredentials/{fic}"),
                    if is_put {
                        LockedOp::Write
                    } else {
                        LockedOp::Delete
                    },
                )?;
                let i = world
                    .identity_mut(sub, rg, name)
                    .ok_or_else(parent_identity_not_found)?;
                if i.fic_write_in_progress {
                    return Err(concurrent_write(&identity_id));
                }
                i.fic_write_in_progress = true;
            }
            // The write holds the identity for a while, so overlapping writes conflict as in Azure.
            if !shared.config.fic_write_duration.is_zero() {
                tokio::time::sleep(shared.config.fic_write_duration).await;
            }
            let mut world = lock(&shared.world);
            let limit = shared.config.fic_limit;
            let Some(i) = world.identity_mut(sub, rg, name) else {
                return Err(parent_identity_not_found());
            };
            let mut deleted = None;
            let result = match parsed {
                Some(new) => put_fic(i, new, limit, &identity_id, &shared.base_url),
                None => Ok(match i.fics.remove(&key(fic)) {
                    Some(gone) => {
                        deleted = Some(gone);
                        Reply::empty(StatusCode::OK)
                    }
                    None => Reply::empty(StatusCode::NO_CONTENT),
                }),
            };
            i.fic_write_in_progress = false;
            if let Some(gone) = deleted {
                // Entra keeps honouring it for a while (docs/sim-azure.md).
                world.bury_fic(
                    key(&identity_id),
                    gone,
                    shared.faults.fic_delete_propagation_delay(),
                    std::time::Instant::now(),
                );
            }
            result
        }
        _ => Err(method_not_allowed(req)),
    }
}

fn validate_fic(req: &Req, name: &str) -> Result<Fic, ApiError> {
    let body: FicBody = req.json()?;
    // Microsoft's documented FIC errors: all properties are mandatory, exactly one audience.
    let empty = || {
        ApiError::bad_request(
            "BadRequest",
            "Federated Identity Credential from HTTP body has empty properties",
        )
    };
    let p = body.properties.ok_or_else(empty)?;
    let issuer = p.issuer.ok_or_else(empty)?;
    let issuer_ok =
        url::Url::parse(&issuer).is_ok_and(|u| u.scheme() == "https" && u.host().is_some());
    if !issuer_ok {
        return Err(ApiError::bad_request(
            "BadRequest",
            format!("The issuer '{issuer}' is not a valid https URL."),
        ));
    }
    let audiences = p.audiences.unwrap_or_default();
    if audiences.len() != 1 || audiences[0].is_empty() {
        return Err(ApiError::bad_request(
            "BadRequest",
            "Federated identity credentials must have exactly one audience.",
        ));
    }
    let flexible = req.query("api-version") == Some("2025-01-31-preview")
        && p.claims_matching_expression.is_some();
    match (&p.subject, flexible) {
        (Some(s), _) if s.is_empty() => Err(empty()),
        (None, false) => Err(empty()),
        _ => Ok(Fic {
            name: name.to_owned(),
            written: std::time::Instant::now(),
            issuer,
            subject: p.subject,
            audiences,
            claims_matching_expression: if flexible {
                p.claims_matching_expression
            } else {
                None
            },
        }),
    }
}

fn put_fic(
    i: &mut Identity,
    new: Fic,
    limit: usize,
    identity_id: &str,
    base_url: &str,
) -> Result<Reply, ApiError> {
    let k = key(&new.name);
    let clash = i.fics.iter().any(|(other, f)| {
        *other != k && f.issuer == new.issuer && new.subject.is_some() && f.subject == new.subject
    });
    if clash {
        return Err(ApiError::bad_request(
            "BadRequest",
            "Issuer and subject combination already exists for this Managed Identity.",
        ));
    }
    let existed = i.fics.contains_key(&k);
    if !existed && i.fics.len() >= limit {
        return Err(ApiError::bad_request(
            "BadRequest",
            format!(
                "The managed identity '{identity_id}' already has the maximum of {limit} federated identity credentials."
            ),
        ));
    }
    let body = fic_json(identity_id, &new);
    i.fics.insert(k, new);
    if existed {
        return Ok(Reply::json(StatusCode::OK, &body));
    }
    let location = format!("{base_url}{}", body["id"].as_str().unwrap_or_default());
    Ok(Reply::json(StatusCode::CREATED, &body).header("location", location))
}
