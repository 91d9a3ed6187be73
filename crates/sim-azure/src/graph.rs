//! Microsoft Graph v1.0, the part lapse uses: applications and service principals (read) and
//! application federated identity credentials (create, list, get, update, delete by id or
//! name), with Graph's error shape, app-role authorization and the limit of 20.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::http::{Reply, Req, lock};
use crate::ids::key;
use crate::server::Shared;
use crate::tenant::{AppCredential, Application, GraphFic, Principal, Tenant};
use crate::tokens::AccessClaims;

const READ_ALL: &str = "Application.Read.All";
const WRITE_ALL: &str = "Application.ReadWrite.All";
const WRITE_OWNED: &str = "Application.ReadWrite.OwnedBy";
/// Directory-wide read (and write) permissions, which include applications and service
/// principals.
const DIRECTORY_READ: &[&str] = &["Directory.Read.All", "Directory.ReadWrite.All"];
/// Graph's default page of directory objects, and the largest `$top` it accepts ("The default
/// and maximum page sizes are 100 and 999 application objects respectively": Graph v1.0 "List
/// applications").
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 999;

/// Whether a request path is Graph's (`/v1.0/...`).
pub(crate) fn is_graph_path(path: &str) -> bool {
    path == "/v1.0" || path.starts_with("/v1.0/") || path.starts_with("/beta/")
}

/// `GET /beta/auditLogs/signIns` (see [`crate::logs::list_signins`]).
pub(crate) fn sign_ins(
    shared: &Arc<Shared>,
    req: &Req,
    request_id: &str,
    principal: &mut Option<String>,
) -> Reply {
    let result = authenticate(shared, req).and_then(|claims| {
        *principal = Some(claims.oid.clone());
        crate::logs::list_signins(shared, req, &claims)
    });
    match result {
        Ok(r) => r,
        Err(e) => Reply::error_for(&e, request_id, req.header("client-request-id")),
    }
}

/// Audiences Graph accepts: Graph's own plus the simulator's URL.
pub(crate) fn is_graph_audience(aud: &str, base: &str) -> bool {
    let aud = aud.trim_end_matches('/');
    aud == "https://graph.microsoft.com"
        || aud == "00000003-0000-0000-c000-000000000000"
        || aud == base.trim_end_matches('/')
}

fn not_found(what: &str) -> ApiError {
    ApiError::graph(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        format!(
            "Resource '{what}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

fn denied() -> ApiError {
    ApiError::graph(
        StatusCode::FORBIDDEN,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
}

fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::graph(StatusCode::BAD_REQUEST, code, message)
}

fn authenticate(shared: &Shared, req: &Req) -> Result<AccessClaims, ApiError> {
    let unauthorized =
        |m: &str| ApiError::graph(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", m);
    let token = req
        .header("authorization")
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .ok_or_else(|| unauthorized("Access token is empty."))?;
    let claims: AccessClaims = shared.signer.verify(token).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
            unauthorized("Lifetime validation failed, the token is expired.")
        }
        _ => unauthorized("Access token validation failure."),
    })?;
    if !is_graph_audience(&claims.aud, &shared.base_url) {
        return Err(unauthorized(
            "Access token validation failure. Invalid audience.",
        ));
    }
    Ok(claims)
}

pub(crate) fn handle(
    shared: &Arc<Shared>,
    req: &Req,
    rest: &[&str],
    request_id: &str,
    principal: &mut Option<String>,
) -> Reply {
    let result = authenticate(shared, req).and_then(|claims| {
        *principal = Some(claims.oid.clone());
        route(shared, req, rest, &claims)
    });
    match result {
        Ok(r) => r,
        Err(e) => Reply::error_for(&e, request_id, req.header("client-request-id")),
    }
}

/// `applications/{id}` or `applications(appId='{appId}')` → the application's object ID.
fn find_application<'w>(
    world: &'w Tenant,
    collection: &str,
    id: Option<&str>,
) -> Result<&'w Application, ApiError> {
    if let Some(app_id) = collection
        .strip_prefix("applications(appId='")
        .and_then(|r| r.strip_suffix("')"))
    {
        return world
            .applications
            .values()
            .find(|a| a.app_id.eq_ignore_ascii_case(app_id))
            .ok_or_else(|| not_found(app_id));
    }
    let id = id.unwrap_or_default();
    world
        .applications
        .get(&key(id))
        .ok_or_else(|| not_found(id))
}

fn can_read(claims: &AccessClaims, app: &Application) -> bool {
    claims
        .roles
        .iter()
        .any(|r| r == READ_ALL || r == WRITE_ALL || DIRECTORY_READ.contains(&r.as_str()))
        || can_write(claims, app)
}

/// Reading service principals: any of the application permissions Graph lists for "Get
/// servicePrincipal" (`Application.Read.All`, `Application.ReadWrite.OwnedBy`,
/// `Application.ReadWrite.All`, `Directory.Read.All`), or the caller reading itself ("A service
/// principal can retrieve its own application and service principal details without being
/// granted any application permissions").
fn can_read_principals(claims: &AccessClaims, principal: Option<&Principal>) -> bool {
    claims.roles.iter().any(|r| {
        r == READ_ALL || r == WRITE_ALL || r == WRITE_OWNED || DIRECTORY_READ.contains(&r.as_str())
    }) || principal.is_some_and(|p| p.object_id.eq_ignore_ascii_case(&claims.oid))
}

/// One page of a directory list: `$top` items (1 to 999, default 100) from `$skiptoken`, and
/// the `@odata.nextLink` of the next page, which repeats the request's `$select`, `$filter`
/// and `$top`.
fn paged(
    shared: &Shared,
    req: &Req,
    items: Vec<Value>,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let top = match req.query("$top") {
        None => DEFAULT_PAGE,
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(bad_request(
                    "Request_BadRequest",
                    format!(
                        "Invalid page size specified: '{t}'. Must be between 1 and {MAX_PAGE} inclusive."
                    ),
                ));
            }
        },
    };
    let skip = match req.query("$skiptoken") {
        None => 0,
        Some(t) => t.parse::<usize>().map_err(|_| {
            bad_request(
                "Directory_ExpiredPageToken",
                "The specified page token value has expired and can no longer be included in your request.",
            )
        })?,
    };
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(skip).take(top).collect();
    let next = (skip + top < total).then(|| {
        // Graph's links keep the `$` of system query options literal.
        let mut q: Vec<String> = ["$select", "$filter"]
            .into_iter()
            .filter_map(|name| {
                req.query(name).map(|v| {
                    format!(
                        "{name}={}",
                        url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                    )
                })
            })
            .collect();
        q.push(format!("$top={top}"));
        q.push(format!("$skiptoken={}", skip + top));
        format!("{}{}?{}", shared.base_url, req.path, q.join("&"))
    });
    Ok((page, next))
}

/// A list answer: its `@odata.context` (naming the `$select`ed properties, as Graph does), the
/// page and the next page's link; items carry no context of their own.
fn list_reply(
    shared: &Shared,
    req: &Req,
    collection: &str,
    items: Vec<Value>,
) -> Result<Reply, ApiError> {
    let (value, next) = paged(shared, req, items)?;
    let value: Vec<Value> = value
        .into_iter()
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.remove("@odata.context");
            }
            v
        })
        .collect();
    let context = match req.query("$select") {
        Some(sel) => format!("{}/v1.0/$metadata#{collection}({sel})", shared.base_url),
        None => format!("{}/v1.0/$metadata#{collection}", shared.base_url),
    };
    let mut body = json!({ "@odata.context": context, "value": value });
    if let Some(link) = next {
        body["@odata.nextLink"] = json!(link);
    }
    Ok(Reply::json(StatusCode::OK, &body))
}

fn can_write(claims: &AccessClaims, app: &Application) -> bool {
    claims.roles.iter().any(|r| r == WRITE_ALL)
        || (claims.roles.iter().any(|r| r == WRITE_OWNED)
            && app
                .owners
                .iter()
                .any(|o| o.eq_ignore_ascii_case(&claims.oid)))
}

fn route(
    shared: &Arc<Shared>,
    req: &Req,
    rest: &[&str],
    claims: &AccessClaims,
) -> Result<Reply, ApiError> {
    let base = format!("{}/v1.0", shared.base_url);
    // Split "applications(appId='x')" addressing into collection + optional id.
    let (collection, id, tail): (&str, Option<&str>, &[&str]) = match rest {
        [c, tail @ ..] if c.starts_with("applications(") || c.starts_with("servicePrincipals(") => {
            (c, None, tail)
        }
        [c, id, tail @ ..] => (c, Some(id), tail),
        [c] => (c, None, &[]),
        [] => return Err(not_found("/v1.0")),
    };
    if collection.starts_with("servicePrincipals") {
        if req.method != Method::GET || !tail.is_empty() {
            return Err(bad_request(
                "Request_BadRequest",
                "Only GET of service principals is served.",
            ));
        }
        let world = lock(&shared.world);
        let sp_json = |p: &Principal| selected(sp_json(&base, p, &world), req.query("$select"));
        if let Some(app_id) = collection
            .strip_prefix("servicePrincipals(appId='")
            .and_then(|r| r.strip_suffix("')"))
        {
            let p = world.principal_by_app_id(app_id);
            if !can_read_principals(claims, p) {
                return Err(denied());
            }
            let p = p.ok_or_else(|| not_found(app_id))?;
            return Ok(Reply::json(StatusCode::OK, &sp_json(p)));
        }
        return match id {
            Some(id) => {
                let p = world
                    .principals
                    .get(&key(id))
                    .filter(|p| p.app_id.is_some());
                if !can_read_principals(claims, p) {
                    return Err(denied());
                }
                let p = p.ok_or_else(|| not_found(id))?;
                Ok(Reply::json(StatusCode::OK, &sp_json(p)))
            }
            None => {
                if !can_read_principals(claims, None) {
                    return Err(denied());
                }
                let filter = app_id_filter(req.query("$filter"))?;
                let value: Vec<Value> = world
                    .principals
                    .values()
                    .filter(|p| {
                        p.app_id.as_deref().is_some_and(|a| {
                            filter.as_deref().is_none_or(|f| a.eq_ignore_ascii_case(f))
                        })
                    })
                    .map(sp_json)
                    .collect();
                list_reply(shared, req, "servicePrincipals", value)
            }
        };
    }
    if !collection.starts_with("applications") {
        return Err(not_found(&format!("/v1.0/{}", rest.join("/"))));
    }
    if id.is_none() && !collection.starts_with("applications(") {
        if req.method != Method::GET {
            return Err(bad_request(
                "Request_BadRequest",
                "Creating applications is not served.",
            ));
        }
        let filter = app_id_filter(req.query("$filter"))?;
        let world = lock(&shared.world);
        let value: Vec<Value> = world
            .applications
            .values()
            .filter(|a| can_read(claims, a))
            .filter(|a| {
                filter
                    .as_deref()
                    .is_none_or(|f| a.app_id.eq_ignore_ascii_case(f))
            })
            .map(|a| selected(app_json(&base, a), req.query("$select")))
            .collect();
        return list_reply(shared, req, "applications", value);
    }
    let mut world = lock(&shared.world);
    let tenant = world.tenant_id.clone();
    let app_key = key(&find_application(&world, collection, id)?.object_id);
    let limit = shared.config.fic_limit;
    let app = world
        .applications
        .get_mut(&app_key)
        .ok_or_else(|| not_found(&app_key))?;
    if !can_read(claims, app) {
        return Err(denied());
    }
    match (tail, &req.method) {
        ([], &Method::GET) => Ok(Reply::json(
            StatusCode::OK,
            &selected(app_json(&base, app), req.query("$select")),
        )),
        (["federatedIdentityCredentials"], &Method::GET) => {
            let value: Vec<Value> = app.fics.values().map(|f| fic_json(f, None)).collect();
            Ok(Reply::json(
                StatusCode::OK,
                &json!({ "@odata.context": format!("{base}/$metadata#applications('{}')/federatedIdentityCredentials", app.object_id), "value": value }),
            ))
        }
        (["federatedIdentityCredentials"], &Method::POST) => {
            if !can_write(claims, app) {
                return Err(denied());
            }
            let fic = parse_fic(req)?;
            if app.fics.contains_key(&key(&fic.name)) {
                return Err(ApiError::graph(
                    StatusCode::CONFLICT,
                    "Request_MultipleObjectsWithSameKeyValue",
                    format!(
                        "FederatedIdentityCredential with name {} already exists.",
                        fic.name
                    ),
                ));
            }
            if app
                .fics
                .values()
                .any(|f| f.issuer == fic.issuer && f.subject == fic.subject)
            {
                return Err(duplicate_issuer_subject(&fic.issuer, &fic.subject));
            }
            if app.fics.len() >= limit {
                return Err(bad_request(
                    "Request_BadRequest",
                    format!(
                        "The application already has the maximum of {limit} federated identity credentials."
                    ),
                ));
            }
            // Graph's documented 201 names the new object in `@odata.id` (a directoryObjects
            // URL); `Location` carries the same URL.
            let odata_id = format!(
                "{}/v2/{}/directoryObjects/$/Microsoft.DirectoryServices.Application('{}')/federatedIdentityCredentials/{}",
                shared.base_url, tenant, app.object_id, fic.id
            );
            let mut body = fic_json(&fic, Some(&entity_context(&base, &app.object_id)));
            body["@odata.id"] = json!(odata_id);
            app.fics.insert(key(&fic.name), fic);
            Ok(Reply::json(StatusCode::CREATED, &body).header("location", odata_id))
        }
        (["federatedIdentityCredentials", which], method) => {
            let found = app
                .fics
                .iter()
                .find(|(k, f)| **k == key(which) || f.id.eq_ignore_ascii_case(which))
                .map(|(k, _)| k.clone());
            match *method {
                Method::GET => {
                    let f = found
                        .and_then(|k| app.fics.get(&k))
                        .ok_or_else(|| not_found(which))?;
                    let context = entity_context(&base, &app.object_id);
                    Ok(Reply::json(StatusCode::OK, &fic_json(f, Some(&context))))
                }
                Method::DELETE => {
                    if !can_write(claims, app) {
                        return Err(denied());
                    }
                    let k = found.ok_or_else(|| not_found(which))?;
                    if let Some(gone) = app.fics.remove(&k) {
                        // Entra keeps honouring it for a while (docs/sim-azure.md).
                        world.bury_fic(
                            app_key,
                            crate::tenant::Fic::from(&gone),
                            shared.faults.fic_delete_propagation_delay(),
                            std::time::Instant::now(),
                        );
                    }
                    Ok(Reply::empty(StatusCode::NO_CONTENT))
                }
                Method::PATCH => {
                    if !can_write(claims, app) {
                        return Err(denied());
                    }
                    let k = found.ok_or_else(|| not_found(which))?;
                    let patch: FicPatch = req
                        .json()
                        .map_err(|e| bad_request("Request_BadRequest", e.message))?;
                    let current = app.fics.get(&k).ok_or_else(|| not_found(which))?;
                    let updated = patch.apply(current)?;
                    // Issuer and subject stay unique on the application (Graph's rule for
                    // creates holds for updates too).
                    if app.fics.iter().any(|(other, f)| {
                        *other != k && f.issuer == updated.issuer && f.subject == updated.subject
                    }) {
                        return Err(duplicate_issuer_subject(&updated.issuer, &updated.subject));
                    }
                    app.fics.insert(k, updated);
                    Ok(Reply::empty(StatusCode::NO_CONTENT))
                }
                _ => Err(bad_request(
                    "Request_BadRequest",
                    format!("Method {method} is not served here."),
                )),
            }
        }
        _ => Err(not_found(&req.path)),
    }
}

fn app_id_filter(filter: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(f) = filter else { return Ok(None) };
    let lower = f.to_ascii_lowercase();
    match lower.strip_prefix("appid eq ") {
        Some(rest) => Ok(Some(rest.trim().trim_matches('\'').to_owned())),
        None => Err(bad_request(
            "Request_UnsupportedQuery",
            format!("Unsupported query '{f}': only appId eq '…' is served."),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FicInput {
    name: Option<String>,
    issuer: Option<String>,
    subject: Option<String>,
    audiences: Option<Vec<String>>,
    description: Option<String>,
}

/// A PATCH of an application FIC: Graph's updatable properties (`audiences`, `description`,
/// `issuer`, `subject`); `name` is immutable and may only repeat the current one.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FicPatch {
    name: Option<String>,
    issuer: Option<String>,
    subject: Option<String>,
    description: Option<String>,
    audiences: Option<Vec<String>>,
}

impl FicPatch {
    /// The FIC after this patch, validated as a create is.
    fn apply(self, current: &GraphFic) -> Result<GraphFic, ApiError> {
        if let Some(name) = self.name.filter(|n| *n != current.name) {
            return Err(bad_request(
                "Request_BadRequest",
                format!(
                    "The name of a federated identity credential cannot be changed (from '{}' to '{name}').",
                    current.name
                ),
            ));
        }
        let mut next = current.clone();
        if let Some(issuer) = self.issuer {
            next.issuer = checked_issuer(issuer)?;
        }
        if let Some(subject) = self.subject {
            if subject.is_empty() {
                return Err(bad_request(
                    "Request_BadRequest",
                    "Property 'subject' must not be empty.",
                ));
            }
            next.subject = subject;
        }
        if let Some(audiences) = self.audiences {
            next.audiences = checked_audiences(audiences)?;
        }
        if let Some(d) = self.description {
            next.description = Some(d);
        }
        next.written = std::time::Instant::now();
        Ok(next)
    }
}

fn checked_issuer(issuer: String) -> Result<String, ApiError> {
    if url::Url::parse(&issuer).is_ok_and(|u| u.scheme() == "https") {
        Ok(issuer)
    } else {
        Err(bad_request(
            "InvalidFederatedIdentityCredentialValue",
            format!("The issuer '{issuer}' must be an https URL."),
        ))
    }
}

fn checked_audiences(audiences: Vec<String>) -> Result<Vec<String>, ApiError> {
    if audiences.len() == 1 {
        Ok(audiences)
    } else {
        Err(bad_request(
            "InvalidFederatedIdentityCredentialValue",
            format!(
                "Exactly one audience is required; {} given.",
                audiences.len()
            ),
        ))
    }
}

fn duplicate_issuer_subject(issuer: &str, subject: &str) -> ApiError {
    bad_request(
        "InvalidFederatedIdentityCredentialValue",
        format!(
            "The combination of issuer and subject must be unique for the application. Issuer {issuer} and Subject: {subject} already exist."
        ),
    )
}

fn parse_fic(req: &Req) -> Result<GraphFic, ApiError> {
    let input: FicInput = req
        .json()
        .map_err(|e| bad_request("Request_BadRequest", e.message))?;
    let missing =
        |f: &str| bad_request("Request_BadRequest", format!("Property '{f}' is required."));
    let name = input.name.ok_or_else(|| missing("name"))?;
    if name.len() < 3
        || name.len() > 120
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad_request(
            "Request_BadRequest",
            format!("The name '{name}' is invalid: 3 to 120 letters, digits, '-' or '_'."),
        ));
    }
    let issuer = checked_issuer(input.issuer.ok_or_else(|| missing("issuer"))?)?;
    let subject = input
        .subject
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("subject"))?;
    let audiences = checked_audiences(input.audiences.unwrap_or_default())?;
    Ok(GraphFic {
        id: uuid::Uuid::new_v4().to_string(),
        written: std::time::Instant::now(),
        name,
        issuer,
        subject,
        audiences,
        description: input.description,
    })
}

/// Graph's `$select`: only the listed properties (and OData annotations) are returned.
fn selected(mut v: Value, select: Option<&str>) -> Value {
    if let (Some(fields), Some(obj)) = (select, v.as_object_mut()) {
        let keep: Vec<&str> = fields.split(',').map(str::trim).collect();
        obj.retain(|k, _| k.starts_with('@') || keep.contains(&k.as_str()));
    }
    v
}

fn app_json(base: &str, a: &Application) -> Value {
    json!({
        "@odata.context": format!("{base}/$metadata#applications/$entity"),
        "id": a.object_id,
        "appId": a.app_id,
        "displayName": a.display_name,
        "signInAudience": "AzureADMyOrg",
        "passwordCredentials": a.password_credentials.iter().map(password_json).collect::<Vec<_>>(),
        "keyCredentials": a.key_credentials.iter().map(key_json).collect::<Vec<_>>(),
    })
}

/// Graph's time format: UTC, `Z`, fractions only when there are any.
fn graph_time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A `passwordCredential` (Graph v1.0 resource: `customKeyIdentifier`, `displayName`,
/// `endDateTime`, `hint`, `keyId`, `secretText` — null except in addPassword's answer —,
/// `startDateTime`).
fn password_json(c: &AppCredential) -> Value {
    json!({
        "customKeyIdentifier": null,
        "displayName": c.display_name,
        "endDateTime": graph_time(&c.end),
        "hint": c.hint,
        "keyId": c.key_id,
        "secretText": null,
        "startDateTime": graph_time(&c.start),
    })
}

/// A `keyCredential` (Graph v1.0 resource: `customKeyIdentifier` — the thumbprint —,
/// `displayName`, `endDateTime`, `key` — null in lists —, `keyId`, `startDateTime`, `type`,
/// `usage`).
fn key_json(c: &AppCredential) -> Value {
    json!({
        "customKeyIdentifier": c.custom_key_identifier,
        "displayName": c.display_name,
        "endDateTime": graph_time(&c.end),
        "key": null,
        "keyId": c.key_id,
        "startDateTime": graph_time(&c.start),
        "type": "AsymmetricX509Cert",
        "usage": "Verify",
    })
}

fn sp_json(base: &str, p: &Principal, world: &Tenant) -> Value {
    json!({
        "@odata.context": format!("{base}/$metadata#servicePrincipals/$entity"),
        "id": p.object_id,
        "appId": p.app_id,
        "displayName": p.display_name,
        "accountEnabled": true,
        "appOwnerOrganizationId": world.tenant_id,
        "servicePrincipalType": if p.identity_id.is_some() { "ManagedIdentity" } else { "Application" },
    })
}

/// `@odata.context` of one FIC of the application `app_object_id`, as Graph answers a GET or a
/// create of it (the simulator's URL in place of graph.microsoft.com, as for every link).
fn entity_context(base: &str, app_object_id: &str) -> String {
    format!("{base}/$metadata#applications('{app_object_id}')/federatedIdentityCredentials/$entity")
}

/// A FIC; single-entity answers carry their `@odata.context`, list items none.
fn fic_json(f: &GraphFic, context: Option<&str>) -> Value {
    let mut v = json!({
        "id": f.id,
        "name": f.name,
        "issuer": f.issuer,
        "subject": f.subject,
        "description": f.description,
        "audiences": f.audiences,
    });
    if let Some(c) = context {
        v["@odata.context"] = json!(c);
    }
    v
}
