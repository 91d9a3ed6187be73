//! A small unauthenticated admin endpoint (loopback only) mirroring the Rust API:
//! `GET|DELETE /admin/audit`, `POST|DELETE /admin/faults`, `PUT /admin/delays`,
//! `PUT /admin/logs`, `PUT /admin/pim`, `POST /admin/principals`, `DELETE /admin/scopes/{scope}`.

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::api_error::ApiError;
use crate::faults::FaultRule;
use crate::http::{Reply, Req, lock};
use crate::ids;
use crate::server::Shared;
use crate::tenant::{Principal, PrincipalKind};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Delays {
    latency_ms: Option<u64>,
    replication_window_ms: Option<u64>,
    propagation_delay_ms: Option<u64>,
    fic_propagation_delay_ms: Option<u64>,
    fic_delete_propagation_delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PimSettings {
    licensed: Option<bool>,
    clock_offset_secs: Option<u64>,
    minimum_duration_secs: Option<u64>,
}

/// `PUT /admin/logs`: how long the Activity Log and the sign-in log lag behind, and a
/// subscription's synthetic Activity Log events.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LogSettings {
    ingestion_delay_secs: Option<u64>,
    synthetic_events: Option<crate::logs::SyntheticEvents>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewPrincipal {
    display_name: String,
    #[serde(default)]
    kind: PrincipalKind,
}

/// An application permission granted with admin consent (`AuditLog.Read.All`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GraphRoleGrant {
    role: String,
}

pub(crate) fn handle(shared: &Arc<Shared>, req: &Req, rest: &[&str], request_id: &str) -> Reply {
    match handle_inner(shared, req, rest) {
        Ok(r) => r,
        Err(e) => Reply::error(&e, request_id),
    }
}

fn handle_inner(shared: &Arc<Shared>, req: &Req, rest: &[&str]) -> Result<Reply, ApiError> {
    match (&req.method, rest) {
        (&Method::GET, ["audit"]) => {
            Ok(Reply::json(StatusCode::OK, &json!(shared.audit.entries())))
        }
        (&Method::DELETE, ["audit"]) => {
            shared.audit.clear();
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["faults"]) => {
            let rule: FaultRule = req.json()?;
            shared
                .faults
                .add(rule)
                .map_err(|e| ApiError::bad_request("InvalidFaultRule", e.to_string()))?;
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        }
        (&Method::DELETE, ["faults"]) => {
            shared.faults.clear();
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        }
        (&Method::PUT, ["delays"]) => {
            let d: Delays = req.json()?;
            if let Some(ms) = d.latency_ms {
                shared.faults.set_latency(Duration::from_millis(ms));
            }
            if let Some(ms) = d.replication_window_ms {
                shared
                    .faults
                    .set_replication_window(Duration::from_millis(ms));
            }
            if let Some(ms) = d.propagation_delay_ms {
                shared
                    .faults
                    .set_propagation_delay(Duration::from_millis(ms));
            }
            if let Some(ms) = d.fic_propagation_delay_ms {
                shared
                    .faults
                    .set_fic_propagation_delay(Duration::from_millis(ms));
            }
            if let Some(ms) = d.fic_delete_propagation_delay_ms {
                shared
                    .faults
                    .set_fic_delete_propagation_delay(Duration::from_millis(ms));
            }
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        }
        (&Method::PUT, ["logs"]) => {
            let l: LogSettings = req.json()?;
            if let Some(s) = l.ingestion_delay_secs {
                shared.logs.set_delay(Duration::from_secs(s));
            }
            if let Some(events) = l.synthetic_events {
                shared.logs.set_synthetic(events);
            }
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        }
        (&Method::PUT, ["pim"]) => {
            let p: PimSettings = req.json()?;
            {
                let mut world = lock(&shared.world);
                if let Some(l) = p.licensed {
                    world.pim.licensed = l;
                }
                if let Some(s) = p.clock_offset_secs {
                    world.pim.clock_offset = Duration::from_secs(s);
                }
                if let Some(s) = p.minimum_duration_secs {
                    world.pim.minimum = Duration::from_secs(s);
                }
            }
            crate::arm::pim_sweep(shared);
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["principals"]) => {
            let p: NewPrincipal = req.json()?;
            let mut world = lock(&shared.world);
            let object_id = uuid::Uuid::new_v4().to_string();
            let app_id = (p.kind == PrincipalKind::ServicePrincipal)
                .then(|| uuid::Uuid::new_v4().to_string());
            let secret = app_id
                .as_ref()
                .map(|_| uuid::Uuid::new_v4().simple().to_string());
            world.principals.insert(
                ids::key(&object_id),
                Principal {
                    object_id: object_id.clone(),
                    app_id: app_id.clone(),
                    display_name: p.display_name,
                    kind: p.kind,
                    client_secret: secret.clone(),
                    created: Some(std::time::Instant::now()),
                    identity_id: None,
                    application_id: None,
                    graph_roles: Vec::new(),
                },
            );
            Ok(Reply::json(
                StatusCode::CREATED,
                &json!({ "objectId": object_id, "appId": app_id, "clientSecret": secret, "tenantId": world.tenant_id }),
            ))
        }
        // An admin consenting to an application permission for a principal (by object ID,
        // app ID or display name): its next token carries the role.
        (&Method::POST, ["principals", principal, "graphRoles"]) => {
            let g: GraphRoleGrant = req.json()?;
            let mut world = lock(&shared.world);
            let key = world
                .find_principal(principal)
                .map(|p| ids::key(&p.object_id))
                .ok_or_else(|| {
                    ApiError::not_found(
                        "Request_ResourceNotFound",
                        format!("No principal '{principal}'."),
                    )
                })?;
            if let Some(p) = world.principals.get_mut(&key)
                && !p.graph_roles.contains(&g.role)
            {
                p.graph_roles.push(g.role);
            }
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        }
        // The scope's ARM ID follows, e.g. /admin/scopes/subscriptions/s/resourceGroups/rg.
        (&Method::DELETE, ["scopes", scope @ ..]) if !scope.is_empty() => {
            let scope = format!("/{}", scope.join("/"));
            let deleted = lock(&shared.world).delete_scope(&scope, std::time::Instant::now())?;
            Ok(Reply::json(
                StatusCode::OK,
                &json!({ "scope": scope, "deleted": deleted }),
            ))
        }
        _ => Err(ApiError::not_found(
            "NotFound",
            format!(
                "No admin operation {} /admin/{}.",
                req.method,
                rest.join("/")
            ),
        )),
    }
}
