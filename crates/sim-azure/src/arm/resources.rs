//! Subscriptions, resource groups and generic resources (storage accounts, key vaults, ...):
//! read-only scopes whose GETs are authorized by RBAC.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::api_error::ApiError;
use crate::http::{Reply, Req, lock};
use crate::ids::{key, segments};
use crate::server::Shared;
use crate::tokens::AccessClaims;

const SUBSCRIPTION_VERSIONS: &[&str] = &[
    "2016-06-01",
    "2019-11-01",
    "2020-01-01",
    "2021-01-01",
    "2022-12-01",
];
const RESOURCE_GROUP_VERSIONS: &[&str] = &[
    "2019-10-01",
    "2020-06-01",
    "2021-04-01",
    "2022-09-01",
    "2024-03-01",
    "2024-11-01",
];

fn require_get(req: &Req) -> Result<(), ApiError> {
    if req.method == Method::GET {
        Ok(())
    } else {
        Err(ApiError::arm(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "The requested method '{}' is not supported by sim-azure for this resource.",
                req.method
            ),
        ))
    }
}

/// Any `YYYY-MM-DD` or `YYYY-MM-DD-preview` version: generic resource providers are not modelled
/// per type.
fn require_dated_api_version(req: &Req) -> Result<(), ApiError> {
    let v = req
        .query("api-version")
        .ok_or_else(ApiError::missing_api_version)?;
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let ok = date.len() == 10 && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok();
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_api_version(
            v,
            &["YYYY-MM-DD", "YYYY-MM-DD-preview"],
        ))
    }
}

pub(crate) fn handle(
    shared: &Arc<Shared>,
    req: &Req,
    claims: &AccessClaims,
    path: &str,
) -> Result<Reply, ApiError> {
    let segs = segments(path);
    let is = |i: usize, lit: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(lit));
    let world = lock(&shared.world);
    match segs.len() {
        1 if is(0, "subscriptions") => {
            require_get(req)?;
            req.require_api_version(SUBSCRIPTION_VERSIONS)?;
            let items = world
                .subscriptions
                .values()
                .filter(|s| {
                    super::authorize(
                        shared,
                        &world,
                        claims,
                        "Microsoft.Resources/subscriptions/read",
                        &format!("/subscriptions/{}", s.id),
                    )
                    .is_ok()
                })
                .map(|s| subscription_json(&s.id, &s.display_name, &world.tenant_id))
                .collect();
            Ok(Reply::json(StatusCode::OK, &super::page(items, None)))
        }
        2 if is(0, "subscriptions") => {
            require_get(req)?;
            req.require_api_version(SUBSCRIPTION_VERSIONS)?;
            let scope = format!("/subscriptions/{}", segs[1]);
            super::authorize(
                shared,
                &world,
                claims,
                "Microsoft.Resources/subscriptions/read",
                &scope,
            )?;
            world.check_scope_exists(&scope)?;
            let sub = world
                .subscriptions
                .get(&key(segs[1]))
                .ok_or_else(|| ApiError::subscription_not_found(segs[1]))?;
            Ok(Reply::json(
                StatusCode::OK,
                &subscription_json(&sub.id, &sub.display_name, &world.tenant_id),
            ))
        }
        3 if is(0, "subscriptions") && is(2, "resourceGroups") => {
            require_get(req)?;
            req.require_api_version(RESOURCE_GROUP_VERSIONS)?;
            let scope = format!("/subscriptions/{}", segs[1]);
            world.check_scope_exists(&scope)?;
            let items = world
                .subscriptions
                .get(&key(segs[1]))
                .map(|s| {
                    s.resource_groups
                        .values()
                        .filter(|rg| {
                            let rg_scope = format!("{scope}/resourceGroups/{}", rg.name);
                            super::authorize(
                                shared,
                                &world,
                                claims,
                                "Microsoft.Resources/subscriptions/resourceGroups/read",
                                &rg_scope,
                            )
                            .is_ok()
                        })
                        .map(|rg| resource_group_json(&s.id, &rg.name, &rg.location))
                        .collect()
                })
                .unwrap_or_default();
            Ok(Reply::json(StatusCode::OK, &super::page(items, None)))
        }
        4 if is(0, "subscriptions") && is(2, "resourceGroups") => {
            require_get(req)?;
            req.require_api_version(RESOURCE_GROUP_VERSIONS)?;
            let scope = format!("/subscriptions/{}/resourceGroups/{}", segs[1], segs[3]);
            super::authorize(
                shared,
                &world,
                claims,
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                &scope,
            )?;
            world.check_scope_exists(&scope)?;
            let sub = world
                .subscriptions
                .get(&key(segs[1]))
                .ok_or_else(|| ApiError::subscription_not_found(segs[1]))?;
            let rg = sub.resource_groups.get(&key(segs[3])).ok_or_else(|| {
                ApiError::not_found(
                    "ResourceGroupNotFound",
                    format!("Resource group '{}' could not be found.", segs[3]),
                )
            })?;
            Ok(Reply::json(
                StatusCode::OK,
                &resource_group_json(&sub.id, &rg.name, &rg.location),
            ))
        }
        8 if is(0, "subscriptions") && is(2, "resourceGroups") && is(4, "providers") => {
            require_get(req)?;
            require_dated_api_version(req)?;
            let scope = format!("/{}", segs.join("/"));
            let action = format!("{}/{}/read", segs[5], segs[6]);
            super::authorize(shared, &world, claims, &action, &scope)?;
            world.check_scope_exists(&scope)?;
            let sub = world
                .subscriptions
                .get(&key(segs[1]))
                .ok_or_else(|| ApiError::subscription_not_found(segs[1]))?;
            let rg = sub.resource_groups.get(&key(segs[3])).ok_or_else(|| {
                ApiError::not_found(
                    "ResourceGroupNotFound",
                    format!("Resource group '{}' could not be found.", segs[3]),
                )
            })?;
            let r = rg
                .resources
                .get(&key(&format!("{}/{}/{}", segs[5], segs[6], segs[7])))
                .ok_or_else(|| {
                    ApiError::not_found(
                        "ResourceNotFound",
                        format!(
                            "The Resource '{}/{}/{}' under resource group '{}' was not found.",
                            segs[5], segs[6], segs[7], segs[3]
                        ),
                    )
                })?;
            Ok(Reply::json(
                StatusCode::OK,
                &json!({
                    "id": format!("/subscriptions/{}/resourceGroups/{}/providers/{}/{}", sub.id, rg.name, r.resource_type, r.name),
                    "name": r.name,
                    "type": r.resource_type,
                    "location": r.location,
                    "tags": {},
                    "properties": { "provisioningState": "Succeeded" },
                }),
            ))
        }
        n if n >= 9
            && is(0, "subscriptions")
            && is(2, "resourceGroups")
            && is(4, "providers")
            && req.method != Method::GET =>
        {
            below_resource(shared, &world, req, claims, path, &segs)
        }
        _ => Err(ApiError::bad_request(
            "InvalidResourceType",
            format!("The resource path '{path}' is not served by sim-azure."),
        )),
    }
}

/// A write, delete or action below a seeded resource (a blob container, `listKeys`): what a
/// workload does with its lease. Authorized by RBAC for the action ARM would check, answered
/// without keeping anything (the Activity Log records it, as Azure's does).
fn below_resource(
    shared: &Arc<Shared>,
    world: &crate::tenant::Tenant,
    req: &Req,
    claims: &AccessClaims,
    path: &str,
    segs: &[&str],
) -> Result<Reply, ApiError> {
    require_dated_api_version(req)?;
    let Some((action, resource)) = crate::logs::operation_of(&req.method, path) else {
        return Err(ApiError::bad_request(
            "InvalidResourceType",
            format!("The resource path '{path}' is not served by sim-azure."),
        ));
    };
    super::authorize(shared, world, claims, &action, &resource)?;
    let parent = format!("/{}", segs[..8].join("/"));
    world.check_scope_exists(&parent)?;
    let found = world
        .subscriptions
        .get(&key(segs[1]))
        .and_then(|sub| sub.resource_groups.get(&key(segs[3])))
        .is_some_and(|rg| {
            rg.resources
                .contains_key(&key(&format!("{}/{}/{}", segs[5], segs[6], segs[7])))
        });
    if !found {
        return Err(ApiError::not_found(
            "ParentResourceNotFound",
            format!(
                "Can not perform requested operation on nested resource. Parent resource '{}' not found.",
                segs[7]
            ),
        ));
    }
    if req.method == Method::DELETE {
        return Ok(Reply::empty(StatusCode::OK));
    }
    if req.method == Method::POST {
        return Ok(Reply::json(
            StatusCode::OK,
            &json!({ "keys": [{ "keyName": "key1", "permissions": "FULL", "value": "c2ltLWF6dXJlLWtleQ==" }] }),
        ));
    }
    let name = segs.last().copied().unwrap_or_default();
    Ok(Reply::json(
        StatusCode::CREATED,
        &json!({
            "id": path,
            "name": name,
            "type": action.trim_end_matches("/write"),
            "properties": { "provisioningState": "Succeeded" },
        }),
    ))
}

fn subscription_json(id: &str, name: &str, tenant: &str) -> serde_json::Value {
    json!({
        "id": format!("/subscriptions/{id}"),
        "authorizationSource": "RoleBased",
        "subscriptionId": id,
        "tenantId": tenant,
        "displayName": name,
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
        // No other tenant manages the simulated subscriptions (Azure Lighthouse): ARM still
        // answers the empty list.
        "managedByTenants": [],
    })
}

fn resource_group_json(sub: &str, name: &str, location: &str) -> serde_json::Value {
    json!({
        "id": format!("/subscriptions/{sub}/resourceGroups/{name}"),
        "name": name,
        "type": "Microsoft.Resources/resourceGroups",
        "location": location,
        "properties": { "provisioningState": "Succeeded" },
    })
}
