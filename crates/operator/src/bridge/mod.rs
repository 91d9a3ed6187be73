//! `lapse-operator approval-bridge`: approve and deny from Slack and Teams (docs/approval.md,
//! "Approve from Slack or Teams").
//!
//! One HTTP listener takes Slack's interactivity requests (`POST /slack/actions`) and Teams
//! outgoing-webhook messages (`POST /teams/actions`); another serves `/metrics`, `/healthz` and
//! `/readyz` (kept off the listener the internet reaches). For each request, in order: the
//! signature (constant time) → the timestamp window → replay → the payload → the user map →
//! the AccessApproval, created impersonating the mapped user. Every refusal is answered in
//! words and counted in `lapse_bridge_requests_total{platform,result}`; nothing is created
//! for a refused request.
//!
//! Slack wants an answer within 3 seconds: the bridge acknowledges at once (the create runs
//! after) and posts the outcome to the click's `response_url`. A Kubernetes create is usually
//! milliseconds, but admission, impersonation checks and a busy API server have no bound under
//! 3 seconds, and a late answer shows the approver an error for a decision that may well have
//! been recorded. Teams outgoing webhooks have no callback URL: the reply *is* the answer and
//! Teams waits 5 seconds, so the create runs within the request, bounded by
//! `--kube-timeout` (4 s by default).

mod chat;
mod decide;
mod replay;
mod users;
mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lapse_api::duration::LeaseDuration;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use ring::hmac;
use tokio::net::TcpListener;

use crate::run::LogFormat;
use decide::{Impersonator, Outcome};
use replay::{ReplayGuard, Seen};
use users::{Mapped, Platform, UserFile};
use verify::{Secret, Unverified};

/// Every setting has an environment variable; secrets come from the environment or a file
/// (a mounted Secret), never from a flag in a manifest, and are never logged.
#[derive(Debug, Args)]
pub struct BridgeArgs {
    /// The Slack app's signing secret (Basic Information → App Credentials). Slack actions are
    /// refused (404) when neither this nor --slack-signing-secret-file is set.
    #[arg(
        long,
        env = "LAPSE_BRIDGE_SLACK_SIGNING_SECRET",
        hide_env_values = true
    )]
    pub slack_signing_secret: Option<Secret>,

    /// A file holding the Slack signing secret (a mounted Secret); read at start-up.
    #[arg(long, env = "LAPSE_BRIDGE_SLACK_SIGNING_SECRET_FILE")]
    pub slack_signing_secret_file: Option<PathBuf>,

    /// The Teams outgoing webhook's security token, base64 as Teams shows it when the webhook
    /// is created. Teams actions are refused (404) when neither this nor --teams-secret-file is
    /// set.
    #[arg(long, env = "LAPSE_BRIDGE_TEAMS_SECRET", hide_env_values = true)]
    pub teams_secret: Option<Secret>,

    /// A file holding the Teams security token (a mounted Secret); read at start-up.
    #[arg(long, env = "LAPSE_BRIDGE_TEAMS_SECRET_FILE")]
    pub teams_secret_file: Option<PathBuf>,

    /// The user map: YAML mapping Slack user IDs and Teams users (Entra object ID or channel
    /// user ID) to a Kubernetes user and groups (the chart mounts it from a ConfigMap). Read
    /// again whenever the file changes. Required.
    #[arg(long, env = "LAPSE_BRIDGE_USERS")]
    pub users: PathBuf,

    /// Address serving POST /slack/actions and POST /teams/actions (the one to expose).
    #[arg(long, env = "LAPSE_BRIDGE_ADDR", default_value = "0.0.0.0:8090")]
    pub addr: SocketAddr,

    /// Address serving /metrics, /healthz and /readyz (keep it inside the cluster).
    #[arg(
        long,
        env = "LAPSE_BRIDGE_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,

    /// URL prefixes a Slack response_url may have, comma-separated: the outcome is posted there
    /// only. Slack's own by default.
    #[arg(
        long,
        env = "LAPSE_BRIDGE_SLACK_RESPONSE_URL_PREFIXES",
        value_delimiter = ',',
        default_value = "https://hooks.slack.com/"
    )]
    pub slack_response_url_prefixes: Vec<String>,

    /// How long one AccessApproval create may take (Go duration). Teams waits 5 s for the
    /// reply, so keep it under that.
    #[arg(long, env = "LAPSE_BRIDGE_KUBE_TIMEOUT", default_value = "4s")]
    pub kube_timeout: LeaseDuration,

    /// Requests remembered against replay (each for its timestamp's five-minute window);
    /// while this many are remembered new ones are refused as overloaded.
    #[arg(long, env = "LAPSE_BRIDGE_REPLAY_CAPACITY", default_value_t = 10_000)]
    pub replay_capacity: usize,

    /// Log format.
    #[arg(long, env = "LAPSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Largest request body read (Slack payloads carry the whole message: tens of KiB at most).
const MAX_BODY: usize = 256 * 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    platform: String,
    /// `accepted`, `bad_signature`, `stale_timestamp`, `replay`, `unknown_user`, `malformed`,
    /// `overloaded`.
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    platform: String,
    /// `created`, `already_recorded`, `refused`, `failed`.
    outcome: String,
}

const RESULTS: [&str; 7] = [
    "accepted",
    "bad_signature",
    "stale_timestamp",
    "replay",
    "unknown_user",
    "malformed",
    "overloaded",
];
const OUTCOMES: [&str; 4] = ["created", "already_recorded", "refused", "failed"];

struct Bridge {
    slack: Option<hmac::Key>,
    teams: Option<hmac::Key>,
    users: UserFile,
    replay: Mutex<ReplayGuard>,
    kube: Impersonator,
    http: reqwest::Client,
    response_prefixes: Vec<String>,
    requests: Family<RequestLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    registry: Registry,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("slack", &self.slack.is_some())
            .field("teams", &self.teams.is_some())
            .field("users", &self.users)
            .field("kube", &self.kube)
            .finish_non_exhaustive()
    }
}

/// An answer: status, content type, body.
struct Reply(StatusCode, &'static str, String);

const PLAIN: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

impl Reply {
    fn text(status: StatusCode, body: impl Into<String>) -> Self {
        let mut body = body.into();
        body.push('\n');
        Self(status, PLAIN, body)
    }

    fn json(value: &serde_json::Value) -> Self {
        Self(StatusCode::OK, JSON, value.to_string())
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn secret(
    value: Option<&Secret>,
    file: Option<&PathBuf>,
    what: &str,
) -> anyhow::Result<Option<Secret>> {
    match (value, file) {
        (Some(_), Some(_)) => bail!("{what}: set the value or the file, not both"),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{what}: reading {}", path.display()))?;
            Ok(Some(Secret(text.trim().to_owned())))
        }
        (None, None) => Ok(None),
    }
}

pub async fn run(args: BridgeArgs) -> anyhow::Result<()> {
    crate::run::init_logging(args.log_format);
    let slack = secret(
        args.slack_signing_secret.as_ref(),
        args.slack_signing_secret_file.as_ref(),
        "--slack-signing-secret (LAPSE_BRIDGE_SLACK_SIGNING_SECRET)",
    )?
    .filter(|s| !s.0.trim().is_empty())
    .map(|s| verify::slack_key(&s));
    let teams = match secret(
        args.teams_secret.as_ref(),
        args.teams_secret_file.as_ref(),
        "--teams-secret (LAPSE_BRIDGE_TEAMS_SECRET)",
    )?
    .filter(|s| !s.0.trim().is_empty())
    {
        Some(s) => Some(
            verify::teams_key(&s)
                .map_err(|e| anyhow::anyhow!("--teams-secret (LAPSE_BRIDGE_TEAMS_SECRET): {e}"))?,
        ),
        None => None,
    };
    if slack.is_none() && teams.is_none() {
        bail!(
            "neither a Slack signing secret (LAPSE_BRIDGE_SLACK_SIGNING_SECRET[_FILE]) nor a Teams \
             security token (LAPSE_BRIDGE_TEAMS_SECRET[_FILE]) is set: the bridge would refuse everything"
        );
    }
    let users = UserFile::load(&args.users)
        .map_err(|e| anyhow::anyhow!("--users (LAPSE_BRIDGE_USERS): {e}"))?;
    let config = kube::Config::infer()
        .await
        .context("finding the Kubernetes API server (in-cluster or KUBECONFIG)")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the HTTP client for Slack's response_url")?;
    let mut registry = Registry::default();
    let requests = Family::<RequestLabels, Counter>::default();
    let decisions = Family::<DecisionLabels, Counter>::default();
    registry.register(
        "lapse_bridge_requests",
        "Requests to the approval bridge by platform and result (accepted, or why refused)",
        requests.clone(),
    );
    registry.register(
        "lapse_bridge_decisions",
        "AccessApprovals the approval bridge tried to create, by platform and outcome",
        decisions.clone(),
    );
    for platform in [Platform::Slack, Platform::Teams] {
        for result in RESULTS {
            let _ = requests.get_or_create(&RequestLabels {
                platform: platform.as_str().into(),
                result: result.into(),
            });
        }
        for outcome in OUTCOMES {
            let _ = decisions.get_or_create(&DecisionLabels {
                platform: platform.as_str().into(),
                outcome: outcome.into(),
            });
        }
    }
    let bridge = Arc::new(Bridge {
        slack,
        teams,
        users,
        replay: Mutex::new(ReplayGuard::new(args.replay_capacity)),
        kube: Impersonator::new(config, args.kube_timeout.to_std()),
        http,
        response_prefixes: args
            .slack_response_url_prefixes
            .iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
        requests,
        decisions,
        registry,
    });
    let actions = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("--addr (LAPSE_BRIDGE_ADDR): binding {}", args.addr))?;
    let metrics = TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "--metrics-addr (LAPSE_BRIDGE_METRICS_ADDR): binding {}",
                args.metrics_addr
            )
        })?;
    tracing::info!(
        addr = %args.addr,
        metrics_addr = %args.metrics_addr,
        slack = bridge.slack.is_some(),
        teams = bridge.teams.is_some(),
        "approval bridge listening"
    );
    let inside = tokio::spawn(serve(metrics, bridge.clone(), Listener::Inside));
    let outside = tokio::spawn(serve(actions, bridge, Listener::Actions));
    tokio::select! {
        _ = inside => bail!("the metrics listener stopped"),
        _ = outside => bail!("the actions listener stopped"),
        r = tokio::signal::ctrl_c() => {
            r.context("waiting for a signal")?;
            tracing::info!("approval bridge stopping");
        }
        () = terminate() => tracing::info!("approval bridge stopping (SIGTERM)"),
    }
    Ok(())
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending().await
}

#[derive(Clone, Copy, Debug)]
enum Listener {
    Actions,
    Inside,
}

async fn serve(listener: TcpListener, bridge: Arc<Bridge>, which: Listener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let bridge = bridge.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let bridge = bridge.clone();
                async move {
                    let Reply(status, content_type, body) = route(&bridge, which, req).await;
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = status;
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(content_type),
                    );
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn route(bridge: &Arc<Bridge>, which: Listener, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    let post = req.method() == hyper::Method::POST;
    match (which, path.as_str()) {
        (Listener::Inside, "/healthz" | "/livez" | "/readyz") => Reply::text(StatusCode::OK, "ok"),
        (Listener::Inside, "/metrics") => {
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, &bridge.registry) {
                Ok(()) => Reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    out,
                ),
                Err(_) => Reply::text(StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed"),
            }
        }
        (Listener::Actions, "/healthz") => Reply::text(StatusCode::OK, "ok"),
        (Listener::Actions, "/slack/actions") if post => match &bridge.slack {
            Some(key) => {
                let headers = req.headers().clone();
                match read_body(req).await {
                    Ok(body) => slack(bridge, key, &headers, &body),
                    Err(r) => bridge.refuse(Platform::Slack, "malformed", r),
                }
            }
            None => Reply::text(
                StatusCode::NOT_FOUND,
                "Slack is not configured on this bridge",
            ),
        },
        (Listener::Actions, "/teams/actions") if post => match &bridge.teams {
            Some(key) => {
                let headers = req.headers().clone();
                match read_body(req).await {
                    Ok(body) => teams(bridge, key, &headers, &body).await,
                    Err(r) => bridge.refuse(Platform::Teams, "malformed", r),
                }
            }
            None => Reply::text(
                StatusCode::NOT_FOUND,
                "Teams is not configured on this bridge",
            ),
        },
        _ => Reply::text(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Reply> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err(Reply::text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body unreadable or larger than {MAX_BODY} bytes"),
        )),
    }
}

fn header<'h>(headers: &'h hyper::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Bridge {
    fn count(&self, platform: Platform, result: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                platform: platform.as_str().into(),
                result: result.into(),
            })
            .inc();
    }

    /// Counts a refusal, logs it (without secrets or bodies) and answers it.
    fn refuse(&self, platform: Platform, result: &str, reply: Reply) -> Reply {
        self.count(platform, result);
        tracing::warn!(
            platform = platform.as_str(),
            result,
            "request refused: {}",
            reply.2.trim()
        );
        reply
    }

    fn unverified(&self, platform: Platform, e: &Unverified) -> Reply {
        let result = match e {
            Unverified::BadSignature(_) => "bad_signature",
            Unverified::Stale(_) => "stale_timestamp",
        };
        self.refuse(
            platform,
            result,
            Reply::text(StatusCode::UNAUTHORIZED, e.to_string()),
        )
    }

    /// Accepted once: `Err` answers a replay or a full memory.
    fn first_time(&self, platform: Platform, key: &[u8], ts: i64) -> Result<(), Reply> {
        let seen = self
            .replay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .check(key, ts.saturating_add(verify::WINDOW_SECS), now());
        match seen {
            Seen::Fresh => Ok(()),
            Seen::Replay => Err(self.refuse(
                platform,
                "replay",
                Reply::text(
                    StatusCode::CONFLICT,
                    "this request was already received: a replay is never acted on twice",
                ),
            )),
            Seen::Full => Err(self.refuse(
                platform,
                "overloaded",
                Reply::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many requests in the last five minutes to guard against replay; try again shortly",
                ),
            )),
        }
    }

    fn decided(&self, platform: Platform, outcome: &Outcome) {
        self.decisions
            .get_or_create(&DecisionLabels {
                platform: platform.as_str().into(),
                outcome: outcome.label().into(),
            })
            .inc();
    }

    fn response_url_allowed(&self, url: &str) -> bool {
        self.response_prefixes.iter().any(|p| url.starts_with(p))
    }

    /// Posts to a Slack `response_url` (best effort: logged when it fails).
    async fn respond_slack(&self, url: &str, body: &serde_json::Value) {
        match self.http.post(url).json(body).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = %r.status(), "Slack refused the response_url update"),
            Err(e) => tracing::warn!("posting to Slack's response_url failed: {e}"),
        }
    }
}

fn slack(bridge: &Arc<Bridge>, key: &hmac::Key, headers: &hyper::HeaderMap, body: &[u8]) -> Reply {
    let p = Platform::Slack;
    let (ts, tag) = match verify::slack(
        key,
        header(headers, "x-slack-request-timestamp"),
        header(headers, "x-slack-signature"),
        body,
        now(),
    ) {
        Ok(v) => v,
        Err(e) => return bridge.unverified(p, &e),
    };
    if let Err(r) = bridge.first_time(p, &tag, ts) {
        return r;
    }
    let click = match chat::slack_click(body) {
        Ok(c) => c,
        Err(e) => return bridge.refuse(p, "malformed", Reply::text(StatusCode::BAD_REQUEST, e)),
    };
    let response_url = match click.response_url.clone() {
        Some(u) if bridge.response_url_allowed(&u) => u,
        other => {
            return bridge.refuse(
                p,
                "malformed",
                Reply::text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "response_url {:?} is not one the bridge posts to (LAPSE_BRIDGE_SLACK_RESPONSE_URL_PREFIXES)",
                        other.unwrap_or_default()
                    ),
                ),
            );
        }
    };
    let action = match click.action.clone() {
        Ok(a) => a,
        Err(e) => {
            let reply = chat::slack_update(None, &e.to_string(), false);
            bridge.count(p, "malformed");
            tracing::warn!(
                platform = "slack",
                result = "malformed",
                "request refused: {e}"
            );
            return Reply::json(&reply);
        }
    };
    let users = bridge.users.current();
    let Some(who) = users.lookup(p, &[click.user_id.as_str()]).cloned() else {
        let text = format!(
            "Slack user {} is not mapped to a Kubernetes user, so the bridge cannot decide for you: \
             nothing was recorded. Ask your lapse administrators to add you to the approval bridge's \
             user map, or use kubectl lapse -n {} approve {}.",
            click.user_id, action.namespace, action.name
        );
        let reply = chat::slack_update(None, &text, false);
        bridge.count(p, "unknown_user");
        tracing::warn!(platform = "slack", result = "unknown_user", chat_user = %click.user_id, "request refused: user not in the map");
        // Also where the clicker sees it (an interactivity response body may be ignored).
        let (b, answer) = (bridge.clone(), Reply::json(&reply));
        tokio::spawn(async move { b.respond_slack(&response_url, &reply).await });
        return answer;
    };
    bridge.count(p, "accepted");
    let comment = format!(
        "from Slack by {}{}",
        click.user_id,
        click
            .user_name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    );
    let b = bridge.clone();
    // Answered now; the decision is recorded and reported through response_url.
    tokio::spawn(async move {
        let outcome = b.kube.decide(&who, &action, comment).await;
        b.decided(p, &outcome);
        log_outcome(p, &click.user_id, &who, &action, &outcome);
        let text = outcome.text(&action, &who, p);
        let update = chat::slack_update(click.message.as_ref(), &text, outcome.public());
        b.respond_slack(&response_url, &update).await;
    });
    Reply(StatusCode::OK, PLAIN, String::new())
}

async fn teams(
    bridge: &Arc<Bridge>,
    key: &hmac::Key,
    headers: &hyper::HeaderMap,
    body: &[u8],
) -> Reply {
    let p = Platform::Teams;
    let tag = match verify::teams(key, header(headers, "authorization"), body) {
        Ok(t) => t,
        Err(e) => return bridge.unverified(p, &e),
    };
    let msg = match chat::teams_message(body) {
        Ok(m) => m,
        Err(e) => return bridge.refuse(p, "malformed", Reply::text(StatusCode::BAD_REQUEST, e)),
    };
    if let Err(e) = verify::within_window(msg.timestamp, now()) {
        return bridge.unverified(p, &e);
    }
    if let Err(r) = bridge.first_time(p, &tag, msg.timestamp) {
        return r;
    }
    let (action, comment) = match msg.command.clone() {
        Ok(c) => c,
        Err(e) => {
            bridge.count(p, "malformed");
            tracing::warn!(
                platform = "teams",
                result = "malformed",
                "request refused: {e}"
            );
            return Reply::json(&chat::teams_reply(&e.to_string()));
        }
    };
    let ids: Vec<&str> = msg.ids.iter().map(String::as_str).collect();
    let users = bridge.users.current();
    let Some(who) = users.lookup(p, &ids).cloned() else {
        bridge.count(p, "unknown_user");
        tracing::warn!(platform = "teams", result = "unknown_user", chat_user = ?ids, "request refused: user not in the map");
        return Reply::json(&chat::teams_reply(&format!(
            "Teams user {} is not mapped to a Kubernetes user, so the bridge cannot decide for you: \
             nothing was recorded. Ask your lapse administrators to add you to the approval bridge's \
             user map, or use kubectl lapse -n {} approve {}.",
            ids.join(" / "),
            action.namespace,
            action.name
        )));
    };
    bridge.count(p, "accepted");
    let chat_user = ids.first().copied().unwrap_or_default().to_owned();
    let note = match comment {
        Some(c) => format!("{c} (from Teams by {chat_user})"),
        None => format!("from Teams by {chat_user}"),
    };
    let outcome = bridge.kube.decide(&who, &action, note).await;
    bridge.decided(p, &outcome);
    log_outcome(p, &chat_user, &who, &action, &outcome);
    Reply::json(&chat::teams_reply(&outcome.text(&action, &who, p)))
}

fn log_outcome(
    platform: Platform,
    chat_user: &str,
    who: &Mapped,
    action: &lapse_api::chat::ChatAction,
    outcome: &Outcome,
) {
    tracing::info!(
        audit = true,
        platform = platform.as_str(),
        chat_user,
        user = %who.user,
        groups = ?who.groups,
        grant = %format!("{}/{}", action.namespace, action.name),
        uid = %action.uid,
        generation = action.generation,
        decision = action.decision.as_str(),
        outcome = outcome.label(),
        detail = ?outcome,
        "chat decision"
    );
}
