//! HTTPS serving: the accept loop, authentication, and routing of non-resource paths.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

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

use crate::status::ApiError;
use crate::store::Store;
use crate::{Config, api, discovery, openapi};

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
}

impl State {
    pub fn new(config: Config, admin_token: String, addr: SocketAddr, store: Store) -> Self {
        let (watch_epoch, _) = watch::channel(0);
        Self {
            store: Mutex::new(store),
            admin_token,
            config,
            addr,
            watch_epoch,
        }
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
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }
    pub fn wants_table(&self) -> bool {
        self.accept.contains("as=Table")
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
    json_response(e.code, &e.to_status())
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
    loop {
        tokio::select! {
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
    let authorized = header(hyper::header::AUTHORIZATION)
        .strip_prefix("Bearer ")
        .is_some_and(|t| t.trim() == state.admin_token);
    let public = matches!(path.as_str(), "/version" | "/healthz" | "/livez" | "/readyz");
    if !authorized && !public {
        return error_response(&ApiError::unauthorized());
    }
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
    };
    tracing::debug!(method = %req.method, path = %req.path, query = ?req.query, "request");
    route(&state, req).await
}

async fn route(state: &Arc<State>, req: Req) -> Response<Body> {
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
