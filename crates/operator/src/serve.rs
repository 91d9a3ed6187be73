//! The operator's two small HTTP endpoints: health (/healthz, /readyz) and metrics (/metrics).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lapse_controller::Context;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Clone)]
pub enum Routes {
    Health {
        ready: tokio::sync::watch::Receiver<bool>,
        /// Waiting for leadership: ready to take over, so ready for rollouts.
        standby: Arc<std::sync::atomic::AtomicBool>,
    },
    Metrics {
        registry: Arc<Registry>,
        ctx: Arc<Context>,
    },
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Health { .. } => "Routes::Health",
            Self::Metrics { .. } => "Routes::Metrics",
        })
    }
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

fn handle(routes: &Routes, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    match (routes, req.uri().path()) {
        (Routes::Health { .. }, "/healthz" | "/livez") => {
            text(StatusCode::OK, "ok\n".into(), PLAIN)
        }
        (Routes::Health { ready, standby }, "/readyz") => {
            if standby.load(std::sync::atomic::Ordering::Relaxed) {
                // A standby is healthy and able to take over: counting it ready keeps rolling
                // updates moving (only the leader acts either way).
                text(
                    StatusCode::OK,
                    "standby: waiting for leadership\n".into(),
                    PLAIN,
                )
            } else if *ready.borrow() {
                text(StatusCode::OK, "ok\n".into(), PLAIN)
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "caches not loaded yet\n".into(),
                    PLAIN,
                )
            }
        }
        (Routes::Metrics { registry, ctx }, "/metrics") => {
            let s = ctx.azure.limiter_snapshot().total();
            ctx.metrics.limiter_totals(
                s.throttle_waits,
                s.throttle_wait_seconds,
                s.throttled_responses,
            );
            lapse_controller::refresh_gauges(ctx);
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, registry) {
                Ok(()) => text(
                    StatusCode::OK,
                    out,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "encoding metrics failed\n".into(),
                    PLAIN,
                ),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), PLAIN),
    }
}

/// Binds now (so a bad address fails start-up) and serves in the background.
pub async fn serve(addr: SocketAddr, routes: Routes) -> std::io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let routes = routes.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let resp = handle(&routes, &req);
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }))
}
