//! Entra ID (v2.0 endpoint): the client-credentials token endpoint with a client secret or a
//! federated `client_assertion`, the tenant's OpenID discovery document, its JWKS, and MSAL's
//! instance discovery.

use std::sync::Arc;

use chrono::Utc;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::federation::SignatureError;
use crate::http::{Reply, Req, lock};
use crate::ids::key;
use crate::rbac;
use crate::server::Shared;
use crate::tenant::{Fic, Principal};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An Entra OAuth error: `error`, `AADSTS` code and description.
struct EntraError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

impl EntraError {
    fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            code,
            description: description.into(),
        }
    }

    fn reply(&self, request_id: &str) -> Reply {
        let now = Utc::now();
        let body = json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {} Trace ID: {request_id} Correlation ID: {request_id} Timestamp: {}",
                self.code, self.description, now.format("%Y-%m-%d %H:%M:%SZ")
            ),
            "error_codes": [self.code],
            "timestamp": now.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": request_id,
            "correlation_id": request_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        let mut reply = Reply::json(self.status, &body);
        reply.error_code = Some(format!("AADSTS{}", self.code));
        reply
    }
}

fn tenant_known(shared: &Shared, tenant: &str) -> bool {
    let world = lock(&shared.world);
    tenant.eq_ignore_ascii_case(&world.tenant_id) || ["common", "organizations"].contains(&tenant)
}

fn tenant_not_found(tenant: &str) -> EntraError {
    EntraError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        90002,
        format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
        ),
    )
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn token(
    shared: &Arc<Shared>,
    req: &Req,
    tenant: &str,
    request_id: &str,
    principal_out: &mut Option<String>,
) -> Reply {
    match token_inner(shared, req, tenant, principal_out).await {
        Ok(reply) => reply,
        Err(e) => e.reply(request_id),
    }
}

async fn token_inner(
    shared: &Arc<Shared>,
    req: &Req,
    tenant: &str,
    principal_out: &mut Option<String>,
) -> Result<Reply, EntraError> {
    if req.method != Method::POST {
        return Err(EntraError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        ));
    }
    let tenant_id = lock(&shared.world).tenant_id.clone();
    if !tenant.eq_ignore_ascii_case(&tenant_id) {
        return Err(tenant_not_found(tenant));
    }
    let form = req.form();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let missing = |name: &str| {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    };
    let grant_type = field("grant_type").ok_or_else(|| missing("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let client_id = field("client_id").ok_or_else(|| missing("client_id"))?;
    *principal_out = Some(client_id.to_owned());
    let scope = field("scope").ok_or_else(|| missing("scope"))?;
    let resource = scope.strip_suffix("/.default").filter(|r| !r.is_empty() && !r.contains(' ')).ok_or_else(|| {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        )
    })?;
    let principal = lock(&shared.world).principal_by_app_id(client_id).cloned().ok_or_else(|| {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!("Application with identifier '{client_id}' was not found in the directory '{tenant_id}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."),
        )
    })?;

    let mut federated: Option<(String, String)> = None;
    let credential_type;
    if let Some(secret) = field("client_secret") {
        credential_type = "clientSecret";
        if principal.client_secret.as_deref() != Some(secret) {
            return Err(EntraError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            ));
        }
    } else if let Some(assertion) = field("client_assertion") {
        if field("client_assertion_type") != Some(JWT_BEARER) {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50027,
                format!("The client_assertion_type must be '{JWT_BEARER}'."),
            ));
        }
        federated = Some(verify_assertion(shared, &principal, assertion).await?);
        credential_type = "federatedIdentityCredential";
    } else {
        return Err(EntraError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    }

    let (access_token, expires_in) = shared
        .issue_token(&principal, &tenant_id, resource)
        .map_err(|e| {
            EntraError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                90033,
                e.to_string(),
            )
        })?;
    *principal_out = Some(principal.object_id.clone());
    shared.logs.record_signin(crate::logs::SignIn {
        id: uuid::Uuid::new_v4().to_string(),
        time: Utc::now(),
        principal: principal.object_id.clone(),
        app_id: principal.app_id.clone(),
        display_name: principal.display_name.clone(),
        managed_identity: principal.identity_id.clone(),
        resource: resource.to_owned(),
        credential_type,
        federated_credential: federated.as_ref().map(|(name, _)| name.clone()),
        federated_issuer: federated.map(|(_, iss)| iss),
    });
    Ok(Reply::json(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": access_token,
        }),
    ))
}

fn string_or_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn fic_matches(fic: &Fic, iss: &str, sub: &str, auds: &[String]) -> bool {
    fic.issuer == iss && subject_matches(fic, sub) && fic.audiences.iter().any(|a| auds.contains(a))
}

/// Where workload identity federation errors point (Entra's own link).
const WIF_DOCS: &str = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation";

fn subject_matches(fic: &Fic, sub: &str) -> bool {
    match (&fic.subject, &fic.claims_matching_expression) {
        (Some(s), _) => s == sub,
        (None, Some(expr)) => expr
            .get("value")
            .and_then(Value::as_str)
            .and_then(|v| v.split_once(" matches "))
            .is_some_and(|(lhs, pattern)| {
                lhs.trim() == "claims['sub']" && rbac::action_matches(pattern.trim(), sub)
            }),
        (None, None) => false,
    }
}

/// Entra's refusal when no FIC matches the assertion, naming the first claim that matches none
/// (issuer, then subject, then audience) as Entra does: AADSTS700211, 700213 (7002131 when a
/// flexible FIC's expression was tried), 700212. A FIC that would match but was written too
/// recently to have propagated answers AADSTS70021, the message Microsoft documents for that
/// window.
fn no_matching_fic(
    all: &[Fic],
    effective: &[&Fic],
    iss: &str,
    sub: &str,
    auds: &[String],
) -> EntraError {
    let refused = |code: u32, description: String| {
        EntraError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            code,
            description,
        )
    };
    if all.iter().any(|f| fic_matches(f, iss, sub, auds)) {
        return EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            70021,
            format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{}'. {WIF_DOCS}",
                auds.join(",")
            ),
        );
    }
    let by_issuer: Vec<&&Fic> = effective.iter().filter(|f| f.issuer == iss).collect();
    if by_issuer.is_empty() {
        return refused(
            700211,
            format!(
                "No matching federated identity record found for presented assertion issuer '{iss}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. {WIF_DOCS}"
            ),
        );
    }
    if !by_issuer.iter().any(|f| subject_matches(f, sub)) {
        if by_issuer
            .iter()
            .any(|f| f.claims_matching_expression.is_some())
        {
            return refused(
                7002131,
                format!(
                    "No matching federated identity record found for presented assertion subject '{sub}' or no federated identity credential expression matched. Please check your federated identity credential Subject, Expression, Audience and Issuer against the presented assertion. {WIF_DOCS}"
                ),
            );
        }
        return refused(
            700213,
            format!(
                "No matching federated identity record found for presented assertion subject '{sub}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. {WIF_DOCS}"
            ),
        );
    }
    refused(
        700212,
        format!(
            "No matching federated identity record found for presented assertion audience '{}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. {WIF_DOCS}",
            auds.join(",")
        ),
    )
}

/// Entra's checks for a federated client assertion: well-formed, a FIC on the identity matching
/// issuer, subject and audience exactly, signed by the issuer's published key, unexpired.
async fn verify_assertion(
    shared: &Arc<Shared>,
    principal: &Principal,
    assertion: &str,
) -> Result<(String, String), EntraError> {
    let malformed = |why: String| {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
            format!("JWT token is invalid or malformed: {why}."),
        )
    };
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
        .map_err(|e| malformed(e.to_string()))?;
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("no iss claim".into()))?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("no sub claim".into()))?;
    let auds = string_or_list(claims.get("aud"));
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| malformed("no exp claim".into()))?;
    let nbf = claims.get("nbf").and_then(Value::as_i64);

    let fics: Vec<Fic> = {
        let world = lock(&shared.world);
        let identity_fics = principal
            .identity_id
            .as_deref()
            .and_then(|id| world.identities.get(&key(id)))
            .map(|i| i.fics.values().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        let application_fics = principal
            .application_id
            .as_deref()
            .and_then(|id| world.applications.get(&key(id)))
            .map(|a| a.fics.values().map(Fic::from).collect::<Vec<_>>())
            .unwrap_or_default();
        // Deleted FICs Entra still honours (FIC delete propagation).
        let delay = shared.faults.fic_delete_propagation_delay();
        let now = std::time::Instant::now();
        let buried = [&principal.identity_id, &principal.application_id]
            .into_iter()
            .flatten()
            .flat_map(|owner| world.buried_fics(&key(owner), delay, now));
        identity_fics
            .into_iter()
            .chain(application_fics)
            .chain(buried)
            .collect()
    };
    // A FIC written less than the propagation delay ago is not yet known to Entra.
    let delay = shared.faults.fic_propagation_delay();
    let now = std::time::Instant::now();
    let effective: Vec<&Fic> = fics
        .iter()
        .filter(|f| now.saturating_duration_since(f.written) >= delay)
        .collect();
    let Some(matched) = effective
        .iter()
        .find(|f| fic_matches(f, iss, sub, &auds))
        .map(|f| f.name.clone())
    else {
        return Err(no_matching_fic(&fics, &effective, iss, sub, &auds));
    };
    match shared.federation.verify_signature(assertion, iss).await {
        Ok(()) => {}
        Err(SignatureError::Fetch(why)) => {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50166,
                format!("Request to External OIDC endpoint failed: {why}."),
            ));
        }
        Err(SignatureError::Invalid(why)) => {
            return Err(EntraError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                700027,
                format!("Client assertion failed signature validation: {why}."),
            ));
        }
    }
    let now = Utc::now().timestamp();
    if exp <= now || nbf.is_some_and(|n| n > now) {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {now}, assertion valid from {}, expiry time of assertion {exp}.",
                nbf.map_or_else(|| "-".to_owned(), |n| n.to_string())
            ),
        ));
    }
    Ok((matched, iss.to_owned()))
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
pub(crate) fn discovery(shared: &Shared, tenant: &str, request_id: &str) -> Reply {
    if !tenant_known(shared, tenant) {
        return tenant_not_found(tenant).reply(request_id);
    }
    let base = &shared.base_url;
    Reply::json(
        StatusCode::OK,
        &json!({
            "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": format!("{base}/{tenant}/v2.0"),
            "request_uri_parameter_supported": false,
            "userinfo_endpoint": format!("{base}/oidc/userinfo"),
            "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
            "http_logout_supported": true,
            "frontchannel_logout_supported": true,
            "end_session_endpoint": format!("{base}/{tenant}/oauth2/v2.0/logout"),
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "oid", "tid", "appid", "azp"],
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }),
    )
}

/// `GET /{tenant}/discovery/v2.0/keys`: the key that signs access tokens.
pub(crate) fn keys(shared: &Shared, tenant: &str, request_id: &str) -> Reply {
    if !tenant_known(shared, tenant) {
        return tenant_not_found(tenant).reply(request_id);
    }
    Reply::json(StatusCode::OK, &json!(shared.signer.jwks()))
}

/// `GET /common/discovery/instance`: MSAL's instance discovery, answered for this host.
pub(crate) fn instance_discovery(shared: &Shared, req: &Req) -> Reply {
    let host = shared.base_url.trim_start_matches("https://").to_owned();
    let tenant = req
        .query("authorization_endpoint")
        .and_then(|e| {
            e.trim_start_matches(shared.base_url.as_str())
                .split('/')
                .find(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "common".to_owned());
    Reply::json(
        StatusCode::OK,
        &json!({
            "tenant_discovery_endpoint": format!("{}/{tenant}/v2.0/.well-known/openid-configuration", shared.base_url),
            "api-version": "1.1",
            "metadata": [{ "preferred_network": host, "preferred_cache": host, "aliases": [host] }],
        }),
    )
}
