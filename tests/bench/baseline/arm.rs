//! The baseline's Azure side: a client-credentials token and three role assignment calls over
//! plain HTTP, as a script with curl would make them. A 429 is answered by sleeping its
//! `Retry-After` and sending the same request again; there is no limiter, no budget and no
//! priority between calls.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const API_VERSION: &str = "2022-04-01";
/// How often one request is retried after 429s before the pass gives it up (the next pass
/// tries again).
const MAX_THROTTLED_RETRIES: u32 = 30;

/// Built-in role names a script would paste as GUIDs; the bench asks for Reader only.
fn role_definition_guid(role: &str) -> Option<&'static str> {
    match role {
        "Reader" => Some("acdd72a7-3385-48ef-bd42-f606fba81ae7"),
        "Contributor" => Some("b24988ac-6180-42a0-9ab0-8e67ffe5bc7b"),
        _ => None,
    }
}

/// Where ARM and Entra are, and the baseline's credentials: the operator's azure.env.
#[derive(Debug)]
pub struct Arm {
    http: reqwest::Client,
    endpoint: url::Url,
    authority: String,
    tenant: String,
    client_id: String,
    client_secret: String,
}

/// What a call came to, after any 429s.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    NotFound,
    /// Still throttled after every retry.
    GaveUp,
}

impl Arm {
    /// From the environment azure.env sets (`AZURE_*`, `LAPSE_ARM_ENDPOINT`,
    /// `LAPSE_AZURE_CA_BUNDLE`).
    pub fn from_env(env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .with_context(|| format!("{k} is not set (source the sandbox's azure.env)"))
        };
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(60));
        if let Some(bundle) = env.get("LAPSE_AZURE_CA_BUNDLE") {
            let pem = std::fs::read(bundle).with_context(|| format!("reading {bundle}"))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: http.build()?,
            endpoint: url::Url::parse(&get("LAPSE_ARM_ENDPOINT")?)?,
            authority: get("AZURE_AUTHORITY_HOST")?
                .trim_end_matches('/')
                .to_owned(),
            tenant: get("AZURE_TENANT_ID")?,
            client_id: get("AZURE_CLIENT_ID")?,
            client_secret: get("AZURE_CLIENT_SECRET")?,
        })
    }

    /// A fresh ARM token; the baseline asks once per resync pass, as `az account
    /// get-access-token` at the top of a script would.
    pub async fn token(&self) -> anyhow::Result<String> {
        let scope = format!("{}/.default", self.endpoint.as_str().trim_end_matches('/'));
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("grant_type", "client_credentials"),
                ("scope", scope.as_str()),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
            ])
            .finish();
        let resp = self
            .http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                self.authority, self.tenant
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let v: Value = resp.json().await?;
        match v.get("access_token").and_then(Value::as_str) {
            Some(t) if status.is_success() => Ok(t.to_owned()),
            _ => bail!("token request refused: {status} {v}"),
        }
    }

    fn url(&self, id: &str) -> anyhow::Result<url::Url> {
        let mut url = self.endpoint.join(id.trim_start_matches('/'))?;
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION);
        Ok(url)
    }

    /// Sends one request until it is not throttled, sleeping each 429's `Retry-After`.
    async fn send(
        &self,
        token: &str,
        method: Method,
        id: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, String)> {
        let mut throttled = 0;
        loop {
            let mut req = self
                .http
                .request(method.clone(), self.url(id)?)
                .bearer_auth(token);
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await?;
            let status = resp.status();
            if status == StatusCode::TOO_MANY_REQUESTS && throttled < MAX_THROTTLED_RETRIES {
                throttled += 1;
                let wait = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            return Ok((status, resp.text().await.unwrap_or_default()));
        }
    }

    /// PUT `{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`.
    pub async fn put_assignment(
        &self,
        token: &str,
        id: &str,
        scope: &str,
        role: &str,
        principal: &str,
    ) -> anyhow::Result<Outcome> {
        let guid = role_definition_guid(role)
            .with_context(|| format!("role {role:?}: the baseline knows Reader and Contributor"))?;
        let subscription = scope
            .trim_start_matches('/')
            .split('/')
            .nth(1)
            .with_context(|| format!("no subscription in scope {scope}"))?;
        let body = json!({"properties": {
            "roleDefinitionId": format!(
                "/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
            ),
            "principalId": principal,
            "principalType": "ServicePrincipal",
        }});
        let (status, text) = self.send(token, Method::PUT, id, Some(&body)).await?;
        outcome(status, &text, "PUT", id)
    }

    /// GET the assignment: the per-grant poll of every resync.
    pub async fn get_assignment(&self, token: &str, id: &str) -> anyhow::Result<Outcome> {
        let (status, text) = self.send(token, Method::GET, id, None).await?;
        outcome(status, &text, "GET", id)
    }

    /// DELETE the assignment (200 with it, 204 when already gone).
    pub async fn delete_assignment(&self, token: &str, id: &str) -> anyhow::Result<Outcome> {
        let (status, text) = self.send(token, Method::DELETE, id, None).await?;
        match outcome(status, &text, "DELETE", id)? {
            Outcome::NotFound => Ok(Outcome::Done),
            o => Ok(o),
        }
    }
}

fn outcome(status: StatusCode, text: &str, what: &str, id: &str) -> anyhow::Result<Outcome> {
    if status.is_success() {
        Ok(Outcome::Done)
    } else if status == StatusCode::NOT_FOUND {
        Ok(Outcome::NotFound)
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        Ok(Outcome::GaveUp)
    } else {
        bail!("{what} {id}: {status} {text}")
    }
}

/// A random role assignment name: no derivation from the grant, so nothing is shared and a
/// lost answer cannot be recognised later.
pub fn random_guid() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    Ok(uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_guids_are_version_4_and_differ() -> anyhow::Result<()> {
        let (a, b) = (random_guid()?, random_guid()?);
        assert_ne!(a, b);
        assert_eq!(uuid::Uuid::parse_str(&a)?.get_version_num(), 4);
        Ok(())
    }

    #[test]
    fn only_pasted_roles_are_known() {
        assert!(role_definition_guid("Reader").is_some());
        assert!(role_definition_guid("Owner").is_none());
    }
}
