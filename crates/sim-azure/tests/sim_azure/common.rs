//! Shared helpers: start a simulator, call it over HTTPS trusting its CA.

use lapse_sim_azure::{Config, Seed, SimAzure, SimAzureHandle};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::Value;

pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
pub const RA_API: &str = "2022-04-01";
pub const MSI_API: &str = "2024-11-30";
pub const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";

pub struct Env {
    pub sim: SimAzureHandle,
    pub http: reqwest::Client,
}

pub fn https_client(ca_pem: &str) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .build()
        .unwrap()
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Env {
    pub async fn start(config: Config, seed: Seed) -> Env {
        let sim = SimAzure::start(config, seed).await.unwrap();
        let http = https_client(sim.ca_pem());
        Env { sim, http }
    }

    pub async fn sandbox() -> Env {
        Self::start(Config::default(), Seed::sandbox_default()).await
    }

    pub fn sub(&self) -> String {
        self.sim.subscription_id().unwrap()
    }

    pub fn rg_scope(&self) -> String {
        format!("/subscriptions/{}/resourceGroups/lapse-demo-rg", self.sub())
    }

    pub fn account_scope(&self) -> String {
        format!(
            "{}/providers/Microsoft.Storage/storageAccounts/lapsedemodata",
            self.rg_scope()
        )
    }

    /// Raw token endpoint call with a form body.
    pub async fn token_request(&self, tenant: &str, form: &[(&str, &str)]) -> Resp {
        let resp = self
            .http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.sim.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            )
            .send()
            .await
            .unwrap();
        to_resp(resp).await
    }

    pub async fn secret_token(&self, client_id: &str, secret: &str) -> String {
        let tenant = self.sim.tenant_id();
        let r = self
            .token_request(
                &tenant,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_secret", secret),
                    ("scope", ARM_SCOPE),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn operator_token(&self) -> String {
        let c = self.sim.operator_credentials().unwrap();
        self.secret_token(&c.client_id, c.client_secret.as_deref().unwrap())
            .await
    }

    pub async fn arm(
        &self,
        method: Method,
        path_and_query: &str,
        token: &str,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self
            .http
            .request(method, format!("{}{path_and_query}", self.sim.url()))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        to_resp(req.send().await.unwrap()).await
    }

    pub async fn put_assignment(
        &self,
        token: &str,
        scope: &str,
        name: &str,
        principal: &str,
        role: &str,
        principal_type: Option<&str>,
    ) -> Resp {
        let mut props = serde_json::json!({
            "roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{role}"),
            "principalId": principal,
        });
        if let Some(t) = principal_type {
            props["principalType"] = Value::String(t.to_owned());
        }
        self.arm(
            Method::PUT,
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version={RA_API}"),
            token,
            Some(serde_json::json!({ "properties": props })),
        )
        .await
    }
}

pub async fn to_resp(resp: reqwest::Response) -> Resp {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Resp {
        status,
        headers,
        body,
    }
}

pub fn guid() -> String {
    uuid::Uuid::new_v4().to_string()
}
