//! A running sandbox as its state directory describes it: `azure.env`, `azure-ca.pem` and
//! `kubeconfig`, and clients for it that trust its CAs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

/// The ARM API version for user-assigned identities (sim-azure serves it; so does Azure).
pub const IDENTITY_API_VERSION: &str = "2023-01-31";

/// The sandbox's Azure side, from `DIR/azure.env` and `DIR/azure-ca.pem`.
#[derive(Debug)]
pub struct SandboxState {
    pub dir: PathBuf,
    env: HashMap<String, String>,
    pub http: reqwest::Client,
}

impl SandboxState {
    /// Reads the state files of a sandbox that is up (`DIR/ready` exists).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        if !dir.join("ready").is_file() {
            bail!(
                "{} has no `ready` file: is `lapse-sandbox up --state-dir {}` running?",
                dir.display(),
                dir.display()
            );
        }
        let env_path = dir.join("azure.env");
        let text = std::fs::read_to_string(&env_path)
            .with_context(|| format!("reading {}", env_path.display()))?;
        let ca_path = dir.join("azure-ca.pem");
        let ca =
            std::fs::read(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
        let cert = reqwest::Certificate::from_pem(&ca)
            .with_context(|| format!("parsing the CA in {}", ca_path.display()))?;
        let http = reqwest::Client::builder()
            .add_root_certificate(cert)
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTPS client for sim-azure")?;
        Ok(Self {
            dir: dir.to_path_buf(),
            env: parse_env_file(&text),
            http,
        })
    }

    /// One setting of `azure.env`.
    pub fn env(&self, key: &str) -> anyhow::Result<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("{} has no {key}", self.dir.join("azure.env").display()))
    }

    /// The simulator's base URL (ARM, Entra, Graph and the admin endpoint share it).
    pub fn azure_url(&self) -> anyhow::Result<url::Url> {
        let raw = self.env("LAPSE_ARM_ENDPOINT")?;
        url::Url::parse(raw).with_context(|| format!("LAPSE_ARM_ENDPOINT {raw:?} is not a URL"))
    }

    /// An ARM URL for `path` with `api-version`.
    pub fn arm_url(&self, path: &str, api_version: &str) -> anyhow::Result<url::Url> {
        let mut url = self
            .azure_url()?
            .join(path.trim_start_matches('/'))
            .with_context(|| format!("{path:?} is not a valid ARM path"))?;
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
        Ok(url)
    }

    /// POSTs a client-credentials form to the tenant's token endpoint for an ARM token.
    /// Ok is the access token; Err is Entra's error body.
    pub async fn token(&self, form: &[(&str, &str)]) -> anyhow::Result<Result<String, Value>> {
        let authority = self.env("AZURE_AUTHORITY_HOST")?.trim_end_matches('/');
        let tenant = self.env("AZURE_TENANT_ID")?;
        let scope = format!(
            "{}/.default",
            self.azure_url()?.as_str().trim_end_matches('/')
        );
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().copied())
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", &scope)
            .finish();
        let endpoint = format!("{authority}/{tenant}/oauth2/v2.0/token");
        let resp = self
            .http
            .post(&endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {endpoint}"))?;
        let ok = resp.status().is_success();
        let v: Value = resp
            .json()
            .await
            .with_context(|| format!("reading the answer of POST {endpoint}"))?;
        if !ok {
            return Ok(Err(v));
        }
        v.get("access_token")
            .and_then(Value::as_str)
            .map(|t| Ok(t.to_owned()))
            .ok_or_else(|| anyhow!("POST {endpoint}: the answer has no access_token"))
    }

    /// An ARM token for the operator's service principal (its client secret in azure.env).
    pub async fn operator_token(&self) -> anyhow::Result<String> {
        let client_id = self.env("AZURE_CLIENT_ID")?;
        let secret = self.env("AZURE_CLIENT_SECRET")?;
        self.token(&[("client_id", client_id), ("client_secret", secret)])
            .await?
            .map_err(|e| {
                anyhow!(
                    "the operator's client secret was refused: {}",
                    error_text(&e)
                )
            })
    }

    /// GET an ARM path with a bearer token: status and parsed body.
    pub async fn arm_get(
        &self,
        token: &str,
        path: &str,
        api_version: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let url = self.arm_url(path, api_version)?;
        let resp = self
            .http
            .get(url.clone())
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading the answer of GET {url}"))?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Resource ID of a user-assigned identity: a full ARM ID as given, or a name in the
    /// sandbox's resource group `lapse-demo-rg`.
    pub fn identity_id(&self, identity: &str) -> anyhow::Result<String> {
        if identity.starts_with('/') {
            return Ok(identity.to_owned());
        }
        Ok(format!(
            "/subscriptions/{}/resourceGroups/lapse-demo-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{identity}",
            self.env("AZURE_SUBSCRIPTION_ID")?
        ))
    }

    /// A Kubernetes client from `DIR/kubeconfig`.
    pub async fn kube_client(&self) -> anyhow::Result<kube::Client> {
        let path = self.dir.join("kubeconfig");
        let kubeconfig = kube::config::Kubeconfig::read_from(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .with_context(|| format!("loading {}", path.display()))?;
        kube::Client::try_from(config).context("building the Kubernetes client")
    }
}

/// The readable part of an Entra or ARM error body.
pub fn error_text(v: &Value) -> String {
    v.get("error_description")
        .or_else(|| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .map_or_else(|| v.to_string(), str::to_owned)
}

/// Parses a shell-sourceable `KEY=value` file (`export` optional, values optionally quoted).
pub fn parse_env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("export ").unwrap_or(l);
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_values_are_unquoted_and_comments_skipped() {
        let env = parse_env_file(
            "# comment\nexport A='x y'\nB=\"z\"\nC=plain\n\nexport D='https://127.0.0.1:1'\n",
        );
        assert_eq!(env["A"], "x y");
        assert_eq!(env["B"], "z");
        assert_eq!(env["C"], "plain");
        assert_eq!(env["D"], "https://127.0.0.1:1");
        assert_eq!(env.len(), 4);
    }

    #[test]
    fn error_text_prefers_entra_description_then_arm_message() {
        let entra = serde_json::json!({"error": "invalid_request", "error_description": "AADSTS70021: No match."});
        assert_eq!(error_text(&entra), "AADSTS70021: No match.");
        let arm = serde_json::json!({"error": {"code": "AuthorizationFailed", "message": "no"}});
        assert_eq!(error_text(&arm), "no");
    }
}
