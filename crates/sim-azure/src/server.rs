//! The HTTPS server: start-up, TLS accept loop and the request pipeline (faults, routing,
//! common headers, audit).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::api_error::ApiError;
use crate::audit::{AuditEntry, AuditLog};
use crate::config::Config;
use crate::error::SimAzureError;
use crate::faults::{FaultAction, Faults};
use crate::federation::Federation;
use crate::handle::SimAzureHandle;
use crate::http::{Reply, Req};
use crate::seed::Seed;
use crate::tenant::{Principal, Tenant};
use crate::throttle::Throttle;
use crate::tokens::{AccessClaims, RsaSigner};
use crate::{admin, arm, entra, graph, ids, tls};

/// Graph's `x-ms-ags-diagnostic` names the serving data center; the simulator names itself.
const GRAPH_DIAGNOSTIC: &str = r#"{"ServerInfo":{"DataCenter":"sim-azure","Slice":"E","Ring":"1","ScaleUnit":"000","RoleInstance":"sim-azure"}}"#;

/// Returned by a request handler to close the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
pub(crate) struct Dropped;

/// Everything the request handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    /// The simulated tenant ([`Tenant`]), behind the one mutex every handler takes.
    pub world: Mutex<Tenant>,
    pub signer: RsaSigner,
    pub federation: Federation,
    pub throttle: Throttle,
    pub audit: AuditLog,
    /// Azure's own logs of what was served (Activity Log, sign-ins).
    pub logs: crate::logs::Logs,
    pub faults: Faults,
    pub base_url: String,
}

impl Shared {
    /// Signs an access token for `principal` with audience `resource`.
    pub fn issue_token(
        &self,
        principal: &Principal,
        tenant: &str,
        resource: &str,
    ) -> Result<(String, i64), SimAzureError> {
        let now = Utc::now().timestamp();
        // A managed identity's principal belongs to a user-assigned identity.
        let lifetime = if principal.identity_id.is_some() {
            self.config.managed_identity_token_lifetime
        } else {
            self.config.token_lifetime
        };
        let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(3600);
        let app_id = principal.app_id.clone().unwrap_or_default();
        let claims = AccessClaims {
            aud: resource.to_owned(),
            iss: format!("{}/{tenant}/v2.0", self.base_url),
            iat: now,
            nbf: now,
            exp: now + lifetime,
            oid: principal.object_id.clone(),
            sub: principal.object_id.clone(),
            tid: tenant.to_owned(),
            appid: app_id.clone(),
            azp: app_id,
            idtyp: "app".to_owned(),
            ver: "2.0".to_owned(),
            uti: uuid::Uuid::new_v4().simple().to_string(),
            roles: if crate::graph::is_graph_audience(resource, &self.base_url) {
                principal.graph_roles.clone()
            } else {
                Vec::new()
            },
        };
        let token = self
            .signer
            .sign(&claims)
            .map_err(|e| SimAzureError::SigningKey(format!("signing an access token: {e}")))?;
        Ok((token, lifetime))
    }
}

/// Entry point: `SimAzure::start(config, seed)`.
#[derive(Debug)]
pub struct SimAzure;

impl SimAzure {
    /// Seeds the tenant, generates the CA and signing key, and starts serving on `config.bind`.
    pub async fn start(config: Config, seed: Seed) -> Result<SimAzureHandle, SimAzureError> {
        let mut tenant = Tenant::from_seed(&seed)?;
        tenant.pim.licensed = config.pim_licensed;
        tenant.pim.minimum = config.pim_minimum_duration;
        let pki = tls::generate("lapse sim-azure")?;
        let signer = RsaSigner::generate()?;
        let listener =
            TcpListener::bind(config.bind)
                .await
                .map_err(|source| SimAzureError::Bind {
                    addr: config.bind,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SimAzureError::Bind {
                addr: config.bind,
                source,
            })?;
        let base_url = format!("https://127.0.0.1:{}", addr.port());
        let federation = Federation::new(&pki.ca_pem, &config.trusted_ca_pems)?;
        let shared = Arc::new(Shared {
            throttle: Throttle::new(config.throttle),
            audit: AuditLog::new(config.audit_capacity),
            logs: crate::logs::Logs::new(
                config.log_capacity,
                config.log_ingestion_delay,
                config.log_page_size,
            ),
            faults: Faults::new(
                config.replication_window,
                config.propagation_delay,
                config.fic_propagation_delay,
                config.fic_delete_propagation_delay,
            ),
            config,
            world: Mutex::new(tenant),
            signer,
            federation,
            base_url,
        });
        let handler_shared = shared.clone();
        let (stop, task) = spawn_https(listener, pki.server_config, move |req| {
            let shared = handler_shared.clone();
            async move { handle(shared, req).await }
        });
        let ticker = spawn_pim_ticker(Arc::downgrade(&shared));
        tracing::info!(url = %shared.base_url, "sim-azure listening");
        Ok(SimAzureHandle {
            shared,
            addr,
            ca_pem: pki.ca_pem,
            stop: Some(stop),
            task: Some(task),
            ticker: Some(ticker),
        })
    }
}

/// How often PIM's clock ends and starts schedules when no request comes in.
const PIM_TICK: Duration = Duration::from_secs(1);

/// PIM's clock, ticking while the simulator runs (the handle aborts it on stop).
fn spawn_pim_ticker(shared: std::sync::Weak<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PIM_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let Some(shared) = shared.upgrade() else {
                break;
            };
            arm::pim_sweep(&shared);
        }
    })
}

/// Serves HTTPS on `listener` with `handler` until the returned sender fires or is dropped.
pub(crate) fn spawn_https<F, Fut>(
    listener: TcpListener,
    server_config: Arc<rustls::ServerConfig>,
    handler: F,
) -> (oneshot::Sender<()>, JoinHandle<()>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Dropped>> + Send + 'static,
{
    let (tx, mut rx) = oneshot::channel::<()>();
    let acceptor = TlsAcceptor::from(server_config);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut rx => break,
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            continue;
                        }
                    };
                    let acceptor = acceptor.clone();
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        let tls = match acceptor.accept(tcp).await {
                            Ok(tls) => tls,
                            Err(e) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                        };
                        let service = service_fn(move |req| (handler.clone())(req));
                        if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(tls), service).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
            }
        }
    });
    (tx, task)
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let started = Instant::now();
    let time = Utc::now();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let raw_query = parts.uri.query().map(str::to_owned);
    let query = raw_query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        raw_query,
        query,
        headers: parts.headers,
        body,
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    // Graph answers carry `request-id` and `client-request-id` (the client's, else the request
    // ID); ARM and Entra answers carry `x-ms-request-id` and `x-ms-correlation-request-id`.
    let graph = crate::graph::is_graph_path(&req.path);
    let client_request_id = req.header("client-request-id").map(str::to_owned);
    let correlation_id = req
        .header("x-ms-correlation-request-id")
        .map(str::to_owned)
        .unwrap_or_else(|| request_id.clone());
    let injected_error = |status: StatusCode, code: &str, message: String| {
        let err = if graph {
            ApiError::graph(status, code, message)
        } else {
            ApiError::arm(status, code, message)
        };
        (err, client_request_id.as_deref())
    };

    let (latency, actions) = shared.faults.take(req.method.as_str(), &req.path);
    let extra: Duration = actions
        .iter()
        .map(|a| match a {
            FaultAction::Latency { millis } => Duration::from_millis(*millis),
            _ => Duration::ZERO,
        })
        .sum();
    if !(latency + extra).is_zero() {
        tokio::time::sleep(latency + extra).await;
    }
    let mut principal = None;
    let injected = actions
        .iter()
        .find(|a| !matches!(a, FaultAction::Latency { .. }));
    let reply = match injected {
        Some(FaultAction::Drop) => {
            record(
                &shared,
                &req,
                time,
                started,
                None,
                0,
                Some("ConnectionDropped".into()),
                &request_id,
            );
            return Err(Dropped);
        }
        Some(FaultAction::Status {
            status,
            code,
            message,
        }) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let (err, client) = injected_error(status, code, message.clone());
            Reply::error_for(&err, &request_id, client)
        }
        Some(FaultAction::Throttle { retry_after_secs }) => {
            let (err, client) = injected_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!(
                    "The request is being throttled. Please try again after '{retry_after_secs}' seconds."
                ),
            );
            Reply::error_for(
                &err.with_retry_after(*retry_after_secs),
                &request_id,
                client,
            )
        }
        _ => route(&shared, &req, &request_id, &mut principal).await,
    };

    let mut builder = Response::builder()
        .status(reply.status)
        .header("cache-control", "no-cache");
    builder = if graph {
        builder
            .header("request-id", &request_id)
            .header(
                "client-request-id",
                client_request_id.as_deref().unwrap_or(&request_id),
            )
            .header("x-ms-ags-diagnostic", GRAPH_DIAGNOSTIC)
    } else {
        builder
            .header("x-ms-request-id", &request_id)
            .header("x-ms-correlation-request-id", &correlation_id)
    };
    if reply.body.is_some() {
        builder = builder.header("content-type", reply.content_type);
    }
    for (name, value) in &reply.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    shared
        .logs
        .record_request(&req, time, principal.as_deref(), reply.status.as_u16());
    record(
        &shared,
        &req,
        time,
        started,
        principal,
        reply.status.as_u16(),
        reply.error_code.clone(),
        &request_id,
    );
    let response = builder
        .body(Full::new(reply.body.unwrap_or_default()))
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "invalid response header");
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        });
    Ok(response)
}

#[allow(clippy::too_many_arguments)]
fn record(
    shared: &Shared,
    req: &Req,
    time: chrono::DateTime<Utc>,
    started: Instant,
    principal: Option<String>,
    status: u16,
    error_code: Option<String>,
    request_id: &str,
) {
    tracing::debug!(method = %req.method, path = %req.path, status, "sim-azure request");
    shared.audit.push(AuditEntry {
        time,
        principal,
        method: req.method.to_string(),
        path: req.path.clone(),
        query: req.raw_query.clone(),
        status,
        error_code,
        latency: started.elapsed(),
        request_id: request_id.to_owned(),
        origin: None,
    });
}

async fn route(
    shared: &Arc<Shared>,
    req: &Req,
    request_id: &str,
    principal: &mut Option<String>,
) -> Reply {
    let segs = ids::segments(&req.path);
    match segs.as_slice() {
        ["admin", rest @ ..] => admin::handle(shared, req, rest, request_id),
        [tenant, "oauth2", "v2.0", "token"] => {
            entra::token(shared, req, tenant, request_id, principal).await
        }
        [tenant, "v2.0", ".well-known", "openid-configuration"] => {
            entra::discovery(shared, tenant, request_id)
        }
        [tenant, "discovery", "v2.0", "keys"] => entra::keys(shared, tenant, request_id),
        [_, "discovery", "instance"] => entra::instance_discovery(shared, req),
        ["v1.0", rest @ ..] => graph::handle(shared, req, rest, request_id, principal),
        ["beta", "auditLogs", "signIns"] => graph::sign_ins(shared, req, request_id, principal),
        _ => arm::handle(shared, req, request_id, principal).await,
    }
}
