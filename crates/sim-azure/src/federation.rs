//! Workload identity federation: fetching an issuer's OIDC discovery document and JWKS over
//! HTTPS (trusting the simulator's CA plus configured ones) and verifying assertion signatures.

use std::collections::HashMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

use crate::error::SimAzureError;

/// Why an assertion's signature could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// The issuer's discovery document or JWKS could not be fetched or read.
    Fetch(String),
    /// No key verifies the signature.
    Invalid(String),
}

/// JWKS fetcher with a per-issuer cache.
#[derive(Debug)]
pub(crate) struct Federation {
    client: reqwest::Client,
    cache: tokio::sync::Mutex<HashMap<String, JwkSet>>,
}

impl Federation {
    pub fn new(own_ca_pem: &str, extra_ca_pems: &[String]) -> Result<Self, SimAzureError> {
        let mut certs = Vec::new();
        for pem in std::iter::once(own_ca_pem).chain(extra_ca_pems.iter().map(String::as_str)) {
            let bundle = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                SimAzureError::Tls(format!("trusted CA bundle for OIDC issuers: {e}"))
            })?;
            certs.extend(bundle);
        }
        let client = reqwest::Client::builder()
            .tls_certs_only(certs)
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| SimAzureError::Tls(format!("HTTPS client for OIDC issuers: {e}")))?;
        Ok(Self {
            client,
            cache: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    async fn fetch_jwks(&self, issuer: &str) -> Result<JwkSet, SignatureError> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Value = self
            .client
            .get(&discovery_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| SignatureError::Fetch(format!("GET {discovery_url}: {e}")))?
            .json()
            .await
            .map_err(|e| SignatureError::Fetch(format!("{discovery_url} is not JSON: {e}")))?;
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| SignatureError::Fetch(format!("{discovery_url} has no jwks_uri")))?;
        self.client
            .get(jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| SignatureError::Fetch(format!("GET {jwks_uri}: {e}")))?
            .json()
            .await
            .map_err(|e| SignatureError::Fetch(format!("{jwks_uri} is not a JWKS: {e}")))
    }

    /// Verifies `token`'s signature with `issuer`'s published keys (refetched once when the
    /// token's `kid` is unknown, as keys rotate). Claims are checked by the caller.
    pub async fn verify_signature(&self, token: &str, issuer: &str) -> Result<(), SignatureError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| SignatureError::Invalid(format!("header: {e}")))?;
        let kid = header.kid.clone().unwrap_or_default();
        let mut cache = self.cache.lock().await;
        let cached_has_kid = cache.get(issuer).is_some_and(|s| s.find(&kid).is_some());
        if !cached_has_kid {
            let fresh = self.fetch_jwks(issuer).await?;
            cache.insert(issuer.to_owned(), fresh);
        }
        let set = cache
            .get(issuer)
            .cloned()
            .unwrap_or(JwkSet { keys: Vec::new() });
        drop(cache);
        let candidates: Vec<_> = match set.find(&kid) {
            Some(k) => vec![k.clone()],
            None => set.keys.clone(),
        };
        let mut validation = Validation::new(header.alg);
        validation.validate_aud = false;
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        for jwk in &candidates {
            if let Ok(key) = DecodingKey::from_jwk(jwk)
                && jsonwebtoken::decode::<Value>(token, &key, &validation).is_ok()
            {
                return Ok(());
            }
        }
        Err(SignatureError::Invalid(format!(
            "no key of {issuer} (kid '{kid}') verifies the signature"
        )))
    }
}
