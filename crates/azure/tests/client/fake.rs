//! A scripted stand-in for ARM, Graph and the token endpoint, plugged in as the pipeline's
//! transport. Token requests are answered automatically; everything else pops the next scripted
//! response (404 when the script is empty) and is recorded for assertions.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::headers::Headers;
use azure_core::http::{AsyncRawResponse, HttpClient, Request, StatusCode};
use lapse_azure::{AzureClient, AzureConfig, Cloud, CredentialConfig, SecretString, Url};

pub const SECRET: &str = "sup3r-s3cret-value";
pub const ACCESS_TOKEN: &str = "eyJhbGciOiJub25lIn0.eyJhdWQiOiJhcm0ifQ.c2lnbmF0dXJl";
pub const SUB: &str = "00000000-0000-0000-0000-000000000001";

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// When it was sent (virtual time under `start_paused`).
    pub at: tokio::time::Instant,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn query(&self, key: &str) -> Option<String> {
        self.url
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

pub fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: body.to_owned(),
        delay: Duration::ZERO,
    }
}

impl Reply {
    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

#[derive(Debug, Default)]
struct State {
    script: VecDeque<Reply>,
    requests: Vec<Recorded>,
    token_requests: Vec<Recorded>,
    token_reply: Option<Reply>,
}

#[derive(Clone, Debug, Default)]
pub struct Fake {
    state: Arc<Mutex<State>>,
}

impl Fake {
    pub fn push(&self, r: Reply) -> &Self {
        self.state.lock().unwrap().script.push_back(r);
        self
    }

    pub fn fail_tokens(&self, r: Reply) {
        self.state.lock().unwrap().token_reply = Some(r);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn token_requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().token_requests.clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("no request was sent")
    }
}

#[async_trait]
impl HttpClient for Fake {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let body: bytes::Bytes = request.body().into();
        let recorded = Recorded {
            method: format!("{:?}", request.method()).to_uppercase(),
            url: request.url().clone(),
            headers: request
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
            at: tokio::time::Instant::now(),
        };
        let reply = {
            let mut state = self.state.lock().unwrap();
            if recorded.url.path().ends_with("/oauth2/v2.0/token") {
                state.token_requests.push(recorded);
                state.token_reply.clone().unwrap_or_else(|| {
                    reply(
                        200,
                        &format!(
                            r#"{{"token_type":"Bearer","expires_in":3600,"ext_expires_in":3600,"access_token":"{ACCESS_TOKEN}"}}"#
                        ),
                    )
                })
            } else {
                state.requests.push(recorded);
                state.script.pop_front().unwrap_or_else(|| {
                    reply(
                        404,
                        r#"{"error":{"code":"NotScripted","message":"no reply scripted"}}"#,
                    )
                })
            }
        };
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        let mut headers = Headers::new();
        for (k, v) in reply.headers {
            headers.insert(k, v);
        }
        Ok(AsyncRawResponse::from_bytes(
            StatusCode::from(reply.status),
            headers,
            reply.body.into_bytes(),
        ))
    }
}

pub fn config() -> AzureConfig {
    let mut cfg = AzureConfig::new(
        Cloud::Public,
        CredentialConfig::ClientSecret {
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            secret: SecretString::from(SECRET),
        },
    );
    cfg.arm_endpoint = Some(Url::parse("https://arm.test/").unwrap());
    cfg.graph_endpoint = Some(Url::parse("https://graph.test/").unwrap());
    cfg.authority_host = Some(Url::parse("https://login.test/").unwrap());
    cfg
}

pub fn client() -> (AzureClient, Fake) {
    client_with(config())
}

pub fn client_with(cfg: AzureConfig) -> (AzureClient, Fake) {
    let fake = Fake::default();
    let client = AzureClient::with_transport(cfg, Arc::new(fake.clone())).unwrap();
    (client, fake)
}

pub fn arm_error(code: &str, message: &str) -> String {
    format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#)
}
