//! The thin REST layer: one azure_core pipeline, bearer tokens from azure_identity, the limiter
//! around every exchange, and the mapping of transport failures and 429s to [`AzureError`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::headers::{HeaderName, Headers};
use azure_core::http::{
    ClientOptions, Context, ExponentialRetryOptions, HttpClient, Method, Pipeline,
    PipelineSendOptions, Request, RetryOptions, Transport,
};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use url::Url;

use crate::calls::{CallCounts, Outcome};
use crate::config::{AzureConfig, ConfigError, CredentialConfig, Endpoints};
use crate::error::{AzureError, Failure, Operation, scrub};
use crate::limiter::{Budget, CallKind, Limiter, Permit, Priority};

/// Idle connections kept per host. A burst of calls opens as many connections as calls in
/// flight (HTTP/1.1), and each idle one holds its TLS and read buffers (about 60 KiB); steady
/// state needs a few (docs/performance.md). A burst beyond this many reconnects.
const IDLE_CONNECTIONS_PER_HOST: usize = 8;

/// The production transport: reqwest with the extra CA roots, bounded connect and total time,
/// and no redirects (ARM and Graph never redirect; following one could carry the token away).
pub(crate) fn http_client(cfg: &AzureConfig) -> Result<Arc<dyn HttpClient>, ConfigError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
        .timeout(cfg.timeout)
        .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &cfg.ca_bundle {
        let bad = |reason: String| ConfigError::CaBundle {
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
        if certs.is_empty() {
            return Err(bad("contains no PEM certificate".to_owned()));
        }
        builder = builder.tls_certs_merge(certs);
    }
    let client = builder
        .build()
        .map_err(|e| ConfigError::HttpClient(e.to_string()))?;
    Ok(Arc::new(client))
}

/// The Entra ID credential, sending its token requests through the same transport (and so the
/// same CA roots) as ARM and Graph calls.
fn credential(
    cfg: &CredentialConfig,
    endpoints: &Endpoints,
    http: Arc<dyn HttpClient>,
) -> Result<Arc<dyn TokenCredential>, ConfigError> {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = endpoints
        .authority
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let client_options = ClientOptions {
        transport: Some(Transport::new(http)),
        cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
        // Token endpoint hiccups are worth a few quick retries: they do not touch ARM's budget.
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(200),
            max_retries: 3,
            max_total_elapsed: azure_core::time::Duration::seconds(10),
            max_delay: azure_core::time::Duration::seconds(2),
        }),
        ..Default::default()
    };
    let refused = |e: azure_core::Error| ConfigError::Credential {
        field: "credential",
        reason: scrub(&error_chain(&e), &[]),
    };
    match cfg {
        CredentialConfig::ClientSecret {
            tenant_id,
            client_id,
            secret,
        } => {
            let cred = ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                secret.expose_secret().to_owned().into(),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(refused)?;
            Ok(cred)
        }
        CredentialConfig::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => {
            let cred = WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options },
                client_id: Some(client_id.clone()),
                tenant_id: Some(tenant_id.clone()),
                token_file_path: Some(token_file.clone()),
            }))
            .map_err(|e| ConfigError::Credential {
                field: "credential.token_file",
                reason: scrub(&error_chain(&e), &[]),
            })?;
            Ok(cred)
        }
        CredentialConfig::AzureCli { tenant_id } => {
            let cred = AzureCliCredential::new(Some(AzureCliCredentialOptions {
                tenant_id: tenant_id.clone(),
                ..Default::default()
            }))
            .map_err(|e| ConfigError::Credential {
                field: "credential.tenant_id",
                reason: scrub(&error_chain(&e), &[]),
            })?;
            Ok(Arc::new(CachedCredential::new(cred)))
        }
    }
}

/// Tokens are used until this long before they expire.
const TOKEN_REFRESH_MARGIN_SECONDS: i64 = 300;

/// Keeps a credential's tokens per scope until shortly before they expire: the Azure CLI
/// credential runs `az` for every token it is asked for, which would cost a process per call.
#[derive(Debug)]
struct CachedCredential {
    inner: Arc<dyn TokenCredential>,
    tokens:
        tokio::sync::Mutex<std::collections::HashMap<String, azure_core::credentials::AccessToken>>,
}

impl CachedCredential {
    fn new(inner: Arc<dyn TokenCredential>) -> Self {
        Self {
            inner,
            tokens: tokio::sync::Mutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl TokenCredential for CachedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let key = scopes.join(" ");
        // Held across the fetch: concurrent callers wait for one `az` run, not one each.
        let mut tokens = self.tokens.lock().await;
        let fresh_until = azure_core::time::OffsetDateTime::now_utc()
            + azure_core::time::Duration::seconds(TOKEN_REFRESH_MARGIN_SECONDS);
        if let Some(t) = tokens.get(&key).filter(|t| t.expires_on > fresh_until) {
            return Ok(t.clone());
        }
        let token = self.inner.get_token(scopes, options).await?;
        tokens.insert(key, token.clone());
        Ok(token)
    }
}

/// Which service a call goes to; decides the token scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    Arm,
    Graph,
}

/// One HTTP exchange to make.
pub(crate) struct Call<'a> {
    pub operation: Operation,
    pub api: Api,
    pub budget: Budget,
    pub kind: CallKind,
    /// Background calls (log reads) wait behind every other call for budget and slot.
    pub priority: Priority,
    pub method: Method,
    pub url: Url,
    pub body: Option<Vec<u8>>,
    /// What the call is about, for messages: `role assignment <name> at <scope>`.
    pub target: &'a str,
}

/// Any HTTP answer other than 429 (which becomes [`AzureError::Throttled`] here).
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Headers,
    pub body: Bytes,
}

impl Reply {
    /// The error for an answer the operation did not expect.
    pub(crate) fn failure(&self, call: &Call<'_>) -> AzureError {
        Failure {
            operation: call.operation,
            target: call.target,
            status: self.status,
            headers: &self.headers,
            body: &self.body,
        }
        .into_error(SystemTime::now())
    }

    pub(crate) fn json<T: DeserializeOwned>(&self, call: &Call<'_>) -> Result<T, AzureError> {
        serde_json::from_slice(&self.body).map_err(|e| AzureError::Retryable {
            operation: call.operation,
            status: Some(self.status),
            code: "InvalidResponse".to_owned(),
            message: format!("{}: unexpected response body: {e}", call.target),
        })
    }
}

pub(crate) struct Rest {
    pipeline: Pipeline,
    credential: Arc<dyn TokenCredential>,
    pub(crate) endpoints: Endpoints,
    arm_scope: String,
    graph_scope: String,
    pub(crate) limiter: Limiter,
    timeout: Duration,
    /// Scrubbed from any credential error message, should a library ever echo it.
    secret: Option<SecretString>,
    /// Every exchange, by operation and outcome.
    pub(crate) calls: CallCounts,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("endpoints", &self.endpoints)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Rest {
    pub(crate) fn new(cfg: &AzureConfig, http: Arc<dyn HttpClient>) -> Result<Rest, ConfigError> {
        let endpoints = cfg.validate()?;
        let credential = credential(&cfg.credential, &endpoints, http.clone())?;
        let options = ClientOptions {
            transport: Some(Transport::new(http)),
            // No pipeline retries at all: a retried 429 or 5xx would spend ARM budget the limiter
            // never saw and hide throttling from it, and a retried PUT after a lost answer is
            // better decided by the controller, which knows whether the object now exists.
            retry: RetryOptions::none(),
            ..Default::default()
        };
        let pipeline = Pipeline::new(
            Some(env!("CARGO_PKG_NAME")),
            Some(env!("CARGO_PKG_VERSION")),
            options,
            Vec::new(),
            Vec::new(),
            None,
        );
        let secret = match &cfg.credential {
            CredentialConfig::ClientSecret { secret, .. } => Some(secret.clone()),
            CredentialConfig::WorkloadIdentity { .. } | CredentialConfig::AzureCli { .. } => None,
        };
        Ok(Rest {
            pipeline,
            credential,
            arm_scope: endpoints.arm_scope(),
            graph_scope: endpoints.graph_scope(),
            endpoints,
            limiter: Limiter::new(cfg.limits.clone()),
            timeout: cfg.timeout,
            secret,
            calls: CallCounts::default(),
        })
    }

    /// The object ID (`oid`) in the operator's own ARM token: the principal it acts as, which
    /// lapse never grants to or federates. Reads the token it already has; no ARM call.
    pub(crate) async fn own_principal(&self) -> Result<uuid::Uuid, AzureError> {
        use base64::Engine as _;
        let operation = crate::error::Operation::GetOwnIdentity;
        let fail = |why: String| AzureError::Auth {
            operation,
            message: format!("reading the operator's own principal from its ARM token: {why}"),
        };
        let token = self
            .credential
            .get_token(&[self.arm_scope.as_str()], None)
            .await
            .map_err(|e| {
                let secrets: Vec<&str> = self
                    .secret
                    .as_ref()
                    .map(|s| s.expose_secret())
                    .into_iter()
                    .collect();
                fail(scrub(&error_chain(&e), &secrets))
            })?;
        let payload = token
            .token
            .secret()
            .split('.')
            .nth(1)
            .ok_or_else(|| fail("the token is not a JWT".into()))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|e| fail(format!("the token payload is not base64url: {e}")))?;
        #[derive(serde::Deserialize)]
        struct Claims {
            oid: Option<String>,
        }
        let claims: Claims = serde_json::from_slice(&bytes)
            .map_err(|e| fail(format!("the token payload is not JSON: {e}")))?;
        claims
            .oid
            .as_deref()
            .and_then(|o| uuid::Uuid::try_parse(o).ok())
            .ok_or_else(|| fail("the token has no oid claim".into()))
    }

    async fn bearer(&self, call: &Call<'_>) -> Result<String, AzureError> {
        let scope = match call.api {
            Api::Arm => self.arm_scope.as_str(),
            Api::Graph => self.graph_scope.as_str(),
        };
        match self.credential.get_token(&[scope], None).await {
            Ok(token) => Ok(format!("Bearer {}", token.token.secret())),
            Err(e) => {
                let secrets: Vec<&str> = self
                    .secret
                    .as_ref()
                    .map(|s| s.expose_secret())
                    .into_iter()
                    .collect();
                Err(AzureError::Auth {
                    operation: call.operation,
                    message: format!(
                        "{}: no token for {scope}: {}",
                        call.target,
                        scrub(&error_chain(&e), &secrets)
                    ),
                })
            }
        }
    }

    /// Sends one request under the limiter. Returns every HTTP answer except 429, which pauses
    /// the budget and comes back as [`AzureError::Throttled`].
    pub(crate) async fn send(&self, call: &Call<'_>) -> Result<Reply, AzureError> {
        let request = self.request(call).await;
        let result = match request {
            Ok(request) => {
                let permit = self.acquire(call).await;
                self.exchange(call, request, permit).await
            }
            Err(e) => Err(e),
        };
        self.count(call, &result);
        result
    }

    /// Waits for the call's budget and a slot.
    pub(crate) async fn acquire(&self, call: &Call<'_>) -> Permit {
        self.limiter
            .acquire_as(&call.budget, call.kind, call.priority)
            .await
    }

    /// Like [`Rest::send`], with budget and slot already held.
    pub(crate) async fn send_acquired(
        &self,
        call: &Call<'_>,
        permit: Permit,
    ) -> Result<Reply, AzureError> {
        let result = match self.request(call).await {
            Ok(request) => self.exchange(call, request, permit).await,
            Err(e) => Err(e),
        };
        self.count(call, &result);
        result
    }

    fn count(&self, call: &Call<'_>, result: &Result<Reply, AzureError>) {
        let outcome = match result {
            Err(e) => Outcome::of_class(e.class()),
            Ok(reply) => match reply.status {
                200..=399 => Outcome::Ok,
                404 => Outcome::NotFound,
                409 => Outcome::Conflict,
                _ => Outcome::of_class(reply.failure(call).class()),
            },
        };
        self.calls.record(call.operation, outcome);
    }

    async fn request(&self, call: &Call<'_>) -> Result<Request, AzureError> {
        let authorization = self.bearer(call).await?;
        let mut request = Request::new(call.url.clone(), call.method);
        request.insert_header("authorization", authorization);
        request.insert_header("accept", "application/json");
        if let Some(body) = &call.body {
            request.insert_header("content-type", "application/json");
            request.set_body(body.clone());
        }
        Ok(request)
    }

    async fn exchange(
        &self,
        call: &Call<'_>,
        mut request: Request,
        permit: Permit,
    ) -> Result<Reply, AzureError> {
        let started = tokio::time::Instant::now();
        let sent = tokio::time::timeout(
            self.timeout,
            self.pipeline.send(
                &Context::new(),
                &mut request,
                Some(PipelineSendOptions {
                    skip_checks: true,
                    ..Default::default()
                }),
            ),
        )
        .await;
        drop(permit);
        let elapsed_ms = started.elapsed().as_millis();
        let response = match sent {
            Err(_) => {
                tracing::warn!(operation = %call.operation, target = call.target, "Azure call timed out");
                return Err(AzureError::Retryable {
                    operation: call.operation,
                    status: None,
                    code: "Timeout".to_owned(),
                    message: format!(
                        "{}: no answer within {}s",
                        call.target,
                        self.timeout.as_secs_f64()
                    ),
                });
            }
            Ok(Err(e)) => {
                let code = match e.kind() {
                    ErrorKind::Connection => "ConnectionFailed",
                    ErrorKind::Io => "IoError",
                    _ => "TransportError",
                };
                tracing::warn!(operation = %call.operation, target = call.target, code, "Azure call failed in transport");
                return Err(AzureError::Retryable {
                    operation: call.operation,
                    status: None,
                    code: code.to_owned(),
                    message: format!("{}: {}", call.target, scrub(&error_chain(&e), &[])),
                });
            }
            Ok(Ok(response)) => response,
        };
        let (status, headers, body) = response.deconstruct();
        let reply = Reply {
            status: u16::from(status),
            headers,
            body: body.into(),
        };
        tracing::debug!(
            operation = %call.operation,
            target = call.target,
            status = reply.status,
            elapsed_ms,
            "Azure call"
        );
        self.observe_budget(call, &reply.headers);
        if reply.status == 429 {
            let error = reply.failure(call);
            let retry_after = error.retry_after().unwrap_or_default();
            self.limiter.throttled(&call.budget, call.kind, retry_after);
            tracing::warn!(
                operation = %call.operation,
                target = call.target,
                retry_after_s = retry_after.as_secs_f64(),
                "Azure throttled the call; pausing this budget"
            );
            return Err(error);
        }
        Ok(reply)
    }

    fn observe_budget(&self, call: &Call<'_>, headers: &Headers) {
        let scope = match call.budget {
            Budget::Subscription(_) => "subscription",
            Budget::Tenant => "tenant",
            Budget::Graph => return,
        };
        let kind = match call.kind {
            CallKind::Read => "reads",
            CallKind::Write => "writes",
            CallKind::Delete => "deletes",
        };
        let name = HeaderName::from(format!("x-ms-ratelimit-remaining-{scope}-{kind}"));
        if let Some(remaining) = headers
            .get_optional_str(&name)
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            self.limiter
                .observe_remaining(&call.budget, call.kind, remaining);
        }
    }
}

/// The error and its sources, `: `-joined: azure_core puts the useful part (Entra's
/// description, the connection failure) in a source, not in the top message.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}
