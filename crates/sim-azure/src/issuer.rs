//! A minimal HTTPS OIDC issuer (discovery document and JWKS) that mints RS256 tokens: stands in
//! for sim-kube's ServiceAccount issuer in tests of workload identity federation.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::SimAzureError;
use crate::server::spawn_https;
use crate::tls;
use crate::tokens::RsaSigner;

/// A running test issuer.
#[derive(Debug)]
pub struct TestIssuer {
    issuer: String,
    ca_pem: String,
    signer: RsaSigner,
    stop: Option<oneshot::Sender<()>>,
    _task: JoinHandle<()>,
}

impl TestIssuer {
    /// Starts an issuer on a free loopback port with its own CA.
    pub async fn start() -> Result<Self, SimAzureError> {
        let pki = tls::generate("lapse test issuer")?;
        let signer = RsaSigner::generate()?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SimAzureError::Bind { addr, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| SimAzureError::Bind { addr, source })?
            .port();
        let issuer = format!("https://127.0.0.1:{port}");
        let discovery = Arc::new(
            json!({
                "issuer": issuer,
                "jwks_uri": format!("{issuer}/openid/v1/jwks"),
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            })
            .to_string(),
        );
        let jwks = Arc::new(json!(signer.jwks()).to_string());
        let (stop, task) = spawn_https(listener, pki.server_config, move |req| {
            let body = match req.uri().path() {
                "/.well-known/openid-configuration" => Some(discovery.as_str().to_owned()),
                "/openid/v1/jwks" => Some(jwks.as_str().to_owned()),
                _ => None,
            };
            async move {
                let mut resp =
                    Response::new(Full::new(Bytes::from(body.clone().unwrap_or_default())));
                if body.is_none() {
                    *resp.status_mut() = StatusCode::NOT_FOUND;
                }
                Ok(resp)
            }
        });
        Ok(Self {
            issuer,
            ca_pem: pki.ca_pem,
            signer,
            stop: Some(stop),
            _task: task,
        })
    }

    /// The issuer URL (`iss` of minted tokens).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// PEM of the CA of the issuer's HTTPS certificate (give it to `Config::trusted_ca_pems`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Mints a token for `subject` and `audience` valid for `lifetime` (negative ages make
    /// expired tokens: see `mint_expiring_at`).
    pub fn mint(
        &self,
        subject: &str,
        audience: &str,
        lifetime: Duration,
    ) -> Result<String, SimAzureError> {
        let exp = chrono::Utc::now().timestamp()
            + i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2);
        self.mint_expiring_at(subject, audience, exp)
    }

    /// Mints a token for `subject` and `audience` expiring at unix time `exp`.
    pub fn mint_expiring_at(
        &self,
        subject: &str,
        audience: &str,
        exp: i64,
    ) -> Result<String, SimAzureError> {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": [audience],
            "iat": now.min(exp - 1),
            "nbf": now.min(exp - 1),
            "exp": exp,
        });
        self.signer
            .sign(&claims)
            .map_err(|e| SimAzureError::SigningKey(format!("signing a test assertion: {e}")))
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ignored = stop.send(());
        }
    }
}
