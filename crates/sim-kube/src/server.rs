//! HTTPS serving: the accept loop, authentication, and routing of non-resource paths.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::faults::{FaultRequest, Faults};
use crate::impersonation::Refused;
use crate::load::{Load, RequestKind};
use crate::rbac::{self, Attrs, User};
use crate::status::ApiError;
use crate::store::Store;
use crate::tokens::Signer;
use crate::{Config, api, discovery, openapi, review};

pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Shared server state.
#[derive(Debug)]
pub(crate) struct State {
    store: Mutex<Store>,
    pub admin_token: String,
    pub config: Config,
    pub addr: SocketAddr,
    /// Bumped to end every open watch (fault injection and restarts).
    pub watch_epoch: watch::Sender<u64>,
    pub faults: Mutex<Faults>,
    /// Bumped to close every open connection (a simulated API server restart).
    pub restarts: watch::Sender<u64>,
    /// The ServiceAccount token issuer (`https://127.0.0.1:PORT` unless configured).
    pub issuer: String,
    /// Generated on first use: RSA key generation is the slowest part of starting.
    signer: OnceLock<Result<Signer, String>>,
    /// Static bearer tokens (`Config::users`, `SimKubeHandle::add_user`) and whom they name.
    users: Mutex<HashMap<String, User>>,
    /// In-flight limits and request counts.
    pub load: Load,
}

impl State {
    pub fn new(config: Config, admin_token: String, addr: SocketAddr, store: Store) -> Self {
        let issuer = config
            .issuer
            .clone()
            .unwrap_or_else(|| format!("https://127.0.0.1:{}", addr.port()));
        let (watch_epoch, _) = watch::channel(0);
        let load = Load::new(
            config.max_requests_inflight,
            config.max_mutating_requests_inflight,
        );
        let users = config
            .users
            .iter()
            .map(|u| (u.token.clone(), u.to_user()))
            .collect();
        Self {
            store: Mutex::new(store),
            admin_token,
            config,
            addr,
            watch_epoch,
            faults: Mutex::new(Faults::default()),
            restarts: watch::channel(0).0,
            issuer,
            signer: OnceLock::new(),
            users: Mutex::new(users),
            load,
        }
    }

    /// Adds (or replaces) a static token user.
    pub fn add_user(&self, token: &str, user: User) {
        self.users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_owned(), user);
    }

    fn static_user(&self, token: &str) -> Option<User> {
        self.users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    pub fn signer(&self) -> Result<&Signer, ApiError> {
        self.signer
            .get_or_init(|| Signer::generate(self.issuer.clone()).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| ApiError::internal(e.clone()))
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store lock; a poisoned lock is still usable since every write is all-or-nothing.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One parsed request.
#[derive(Debug)]
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub accept: String,
    pub content_type: String,
    pub user_agent: String,
    pub body: Bytes,
    pub user: User,
    /// `Warning` headers for the response (e.g. ValidatingAdmissionPolicy `Warn` actions).
    pub warnings: Mutex<Vec<String>>,
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }
    pub fn wants_table(&self) -> bool {
        self.accept.contains("as=Table")
    }
    pub fn warn(&self, warnings: impl IntoIterator<Item = String>) {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(warnings);
    }
    /// Adds the collected warnings as `Warning: 299 - "..."` headers.
    pub fn add_warnings(&self, resp: &mut Response<Body>) {
        for w in self
            .warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let text = w.replace('\\', "\\\\").replace('"', "\\\"");
            if let Ok(v) = format!("299 - \"{text}\"").parse() {
                resp.headers_mut().append(hyper::header::WARNING, v);
            }
        }
    }
}

pub(crate) fn json_response(code: u16, v: &Value) -> Response<Body> {
    json_response_typed(code, v, "application/json")
}

pub(crate) fn json_response_typed(code: u16, v: &Value, content_type: &str) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(ct) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
    }
    resp
}

pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    let mut resp = json_response(e.code, &e.to_status());
    if let Some(secs) = e
        .details
        .as_ref()
        .and_then(|d| d["retryAfterSeconds"].as_u64())
    {
        resp.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from(secs),
        );
    }
    resp
}

fn text_response(code: u16, text: &str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(text.to_owned())).boxed_unsync());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Runs the accept loop until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut conns = JoinSet::new();
    let mut restarts = state.restarts.subscribe();
    loop {
        tokio::select! {
            _ = restarts.changed() => conns.abort_all(),
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let state = state.clone();
                conns.spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(state, req).await) }
                    });
                    if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await {
                        tracing::debug!(error = %e, "connection ended");
                    }
                });
            }
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let header = |name: hyper::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let path = parts.uri.path().to_owned();
    let public = matches!(
        path.as_str(),
        "/version"
            | "/healthz"
            | "/livez"
            | "/readyz"
            | "/.well-known/openid-configuration"
            | "/openid/v1/jwks"
    );
    let user = match authenticate(&state, &parts.headers) {
        Ok(Some(u)) => match crate::impersonation::impersonate(&state.store(), u, &parts.headers) {
            Ok(u) => u,
            Err(Refused::Forbidden(e)) => return error_response(&e),
            Err(Refused::Internal(why)) => {
                let uri = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                return text_response(500, &format!("Internal Server Error: {uri:?}: {why}\n"));
            }
        },
        Ok(None) if public => User::named(
            "system:anonymous",
            "",
            vec!["system:unauthenticated".to_owned()],
        ),
        Ok(None) => return error_response(&ApiError::unauthorized()),
        Err(e) => return error_response(&e),
    };
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error_response(&ApiError::bad_request(format!("reading body: {e}"))),
    };
    let query = parts
        .uri
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect::<HashMap<_, _>>()
        })
        .unwrap_or_default();
    let req = Req {
        method: parts.method.clone(),
        path,
        query,
        accept: header(hyper::header::ACCEPT),
        content_type: header(hyper::header::CONTENT_TYPE),
        user_agent: header(hyper::header::USER_AGENT),
        body,
        user,
        warnings: Mutex::new(Vec::new()),
    };
    tracing::debug!(method = %req.method, path = %req.path, query = ?req.query, "request");
    let kind = RequestKind::of(&req.method, &req.path, &req.query, &req.content_type);
    // The slot is held until the answer is built, as kube-apiserver holds it until its
    // handler returns.
    let _slot = match state.load.admit(&kind) {
        Ok(slot) => slot,
        Err(e) => {
            state.load.record(kind, e.code);
            return error_response(&e);
        }
    };
    let latency = state.faults().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let resp = route(&state, req).await;
    state.load.record(kind, resp.status().as_u16());
    resp
}

/// Who is calling: the admin token, a static user token or a ServiceAccount token (before
/// impersonation).
fn authenticate(state: &State, headers: &hyper::HeaderMap) -> Result<Option<User>, ApiError> {
    let Some(token) = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return Ok(None);
    };
    if token == state.admin_token {
        return Ok(Some(User::admin()));
    }
    if let Some(user) = state.static_user(token) {
        return Ok(Some(user));
    }
    match review::user_for_token(state, token, &[]) {
        Some((user, _)) => Ok(Some(user)),
        None => Err(ApiError::unauthorized()),
    }
}

async fn route(state: &Arc<State>, req: Req) -> Response<Body> {
    // Resource URLs are authorized per resource (in `api`); everything else is a non-resource URL.
    let is_api = req.path.starts_with("/api/") || req.path.starts_with("/apis/");
    let resource_path = req.path.starts_with("/api/v1/")
        || (is_api && req.path.split('/').filter(|s| !s.is_empty()).count() > 3);
    if !resource_path && !req.user.is_superuser() {
        let attrs = Attrs::NonResource {
            verb: req.method.as_str().to_lowercase(),
            path: req.path.clone(),
        };
        let public = matches!(
            req.path.as_str(),
            "/.well-known/openid-configuration" | "/openid/v1/jwks"
        );
        if !public && !rbac::allowed(&state.store(), &req.user, &attrs) {
            return error_response(&rbac::forbidden(&req.user, &attrs));
        }
    }
    let segs: Vec<String> = req
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let aggregated = aggregated_version(&req.accept);
    match segs.as_slice() {
        ["version"] => json_response(200, &version()),
        ["healthz" | "livez" | "readyz", ..] => text_response(200, "ok"),
        ["api"] => match aggregated {
            Some(v) => {
                let store = state.store();
                aggregated_response(discovery::aggregated(&store.types, true, v), v)
            }
            None => json_response(200, &discovery::api_versions(&state.addr.to_string())),
        },
        ["apis"] => {
            let store = state.store();
            match aggregated {
                Some(v) => aggregated_response(discovery::aggregated(&store.types, false, v), v),
                None => json_response(200, &discovery::api_group_list(&store.types)),
            }
        }
        ["api", "v1"] => {
            let store = state.store();
            opt(discovery::resource_list(&store.types, "", "v1"))
        }
        ["apis", group] => {
            let store = state.store();
            opt(discovery::api_group_doc(&store.types, group))
        }
        ["apis", group, version] => {
            let store = state.store();
            opt(discovery::resource_list(&store.types, group, version))
        }
        ["sim-kube", "faults"] if req.method == Method::POST => fault(state, &req),
        ["metrics"] if req.method == Method::GET => text_response(200, &state.load.exposition()),
        [".well-known", "openid-configuration"] => match state.signer() {
            Ok(s) => json_response(
                200,
                &s.openid_configuration(&format!("https://{}/openid/v1/jwks", state.addr)),
            ),
            Err(e) => error_response(&e),
        },
        ["openid", "v1", "jwks"] => match state.signer() {
            Ok(s) => json_response_typed(200, &s.jwks(), "application/jwk-set+json"),
            Err(e) => error_response(&e),
        },
        [
            "api",
            "v1",
            "namespaces",
            ns,
            "serviceaccounts",
            name,
            "token",
        ] if req.method == Method::POST => reply(review::token_request(state, &req, ns, name)),
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] if req.method == Method::POST => {
            reply(review::token_review(state, &req))
        }
        [
            "apis",
            "authentication.k8s.io",
            version @ ("v1" | "v1beta1"),
            "selfsubjectreviews",
        ] if req.method == Method::POST => reply(review::self_subject_review(state, &req, version)),
        [
            "apis",
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
        ] if req.method == Method::POST => reply(review::self_subject_access_review(state, &req)),
        ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"]
            if req.method == Method::POST =>
        {
            reply(review::subject_access_review(state, &req))
        }
        ["openapi", "v2"] => openapi::v2(state, &req),
        ["openapi", "v3"] => openapi::v3_root(state),
        ["openapi", "v3", rest @ ..] => openapi::v3_group_version(state, rest),
        ["api", "v1", rest @ ..] => api::resource(state, req, "", "v1", rest).await,
        ["apis", group, version, rest @ ..] => {
            api::resource(state, req, group, version, rest).await
        }
        _ => error_response(&ApiError::path_not_found()),
    }
}

fn fault(state: &State, req: &Req) -> Response<Body> {
    let parsed: FaultRequest = match serde_json::from_slice(&req.body) {
        Ok(f) => f,
        Err(e) => return error_response(&ApiError::bad_request(format!("fault request: {e}"))),
    };
    match parsed {
        FaultRequest::Fail(rule) => state.faults().add(rule),
        FaultRequest::Latency { millis } => {
            state.faults().latency = std::time::Duration::from_millis(millis)
        }
        FaultRequest::DropWatches => state.watch_epoch.send_modify(|e| *e += 1),
        FaultRequest::Compact => state.store().compact(),
        FaultRequest::Restart => {
            state.watch_epoch.send_modify(|e| *e += 1);
            state.restarts.send_modify(|e| *e += 1);
        }
    }
    json_response(
        200,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
    )
}

fn reply(r: Result<(u16, Value), ApiError>) -> Response<Body> {
    match r {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

fn opt(v: Option<Value>) -> Response<Body> {
    match v {
        Some(v) => json_response(200, &v),
        None => error_response(&ApiError::path_not_found()),
    }
}

/// The aggregated-discovery version the client accepts (`v2` preferred over `v2beta1`), if any.
fn aggregated_version(accept: &str) -> Option<&'static str> {
    let wants = |v: &str| {
        accept.split(',').any(|part| {
            part.contains("as=APIGroupDiscoveryList")
                && part.contains("g=apidiscovery.k8s.io")
                && part.split(';').any(|p| p.trim() == format!("v={v}"))
        })
    };
    if wants("v2") {
        Some("v2")
    } else if wants("v2beta1") {
        Some("v2beta1")
    } else {
        None
    }
}

fn aggregated_response(mut doc: Value, version: &str) -> Response<Body> {
    doc["apiVersion"] = json!(format!("apidiscovery.k8s.io/{version}"));
    json_response_typed(
        200,
        &doc,
        &format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"),
    )
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-lapse-sim",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_is_negotiated_from_accept() {
        let v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        let beta = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(v2), Some("v2"));
        assert_eq!(aggregated_version(beta), Some("v2beta1"));
        assert_eq!(aggregated_version("application/json, */*"), None);
    }
}
