//! `lapse-sandbox probe`: does what a pod running as a ServiceAccount does with Azure workload
//! identity — a projected token, exchanged at Entra for the identity, then one ARM read — and
//! says in one line how far it got.

use anyhow::{Context as _, anyhow};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::Value;

use crate::state::{IDENTITY_API_VERSION, SandboxState, error_text};

/// The audience Azure workload identity federation expects on the ServiceAccount token.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

#[derive(Debug)]
pub struct ProbeArgs<'a> {
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub identity: &'a str,
    pub resource: &'a str,
    pub api_version: &'a str,
}

/// How far the workload got.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Entra refused the ServiceAccount token (no matching federated credential).
    ExchangeRefused(String),
    /// The ARM read answered this status (and error code when not 2xx).
    Read { status: u16, code: Option<String> },
}

impl Outcome {
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Read { status: 200, .. })
    }

    /// The one line the probe prints.
    pub fn line(&self, resource: &str) -> String {
        match self {
            Self::ExchangeRefused(why) => format!("token exchange refused: {why}"),
            Self::Read { status, code } => {
                let reason = match code {
                    Some(code) => code.clone(),
                    None => reqwest::StatusCode::from_u16(*status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("")
                        .to_owned(),
                };
                format!("GET {} → {status} {reason}", short_resource(resource))
            }
        }
    }
}

/// `…/storageAccounts/lapsedemodata`: the last type and name of an ARM ID.
fn short_resource(id: &str) -> String {
    let segments: Vec<&str> = id.trim_end_matches('/').rsplit('/').take(2).collect();
    match segments.as_slice() {
        [name, kind] => format!("…/{kind}/{name}"),
        _ => id.to_owned(),
    }
}

/// The first sentence of Entra's error description (the rest repeats the assertion's claims).
fn first_sentence(text: &str) -> &str {
    match text.find(". ") {
        Some(i) => &text[..=i],
        None => text,
    }
}

pub async fn probe(state: &SandboxState, args: &ProbeArgs<'_>) -> anyhow::Result<Outcome> {
    let operator = state.operator_token().await?;
    let identity_id = state.identity_id(args.identity)?;
    let (status, body) = state
        .arm_get(&operator, &identity_id, IDENTITY_API_VERSION)
        .await?;
    if status != 200 {
        return Err(anyhow!(
            "looking up identity {} as the operator: {status} {}",
            args.identity,
            error_text(&body)
        ));
    }
    let client_id = body
        .pointer("/properties/clientId")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("identity {identity_id} has no properties.clientId"))?;

    let assertion = service_account_token(state, args.namespace, args.service_account).await?;
    let exchanged = state
        .token(&[
            ("client_id", client_id),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
        ])
        .await
        .context("exchanging the ServiceAccount token at Entra")?;
    let token = match exchanged {
        Ok(token) => token,
        Err(e) => {
            return Ok(Outcome::ExchangeRefused(
                first_sentence(&error_text(&e)).to_owned(),
            ));
        }
    };
    let (status, body) = state
        .arm_get(&token, args.resource, args.api_version)
        .await?;
    let code = (!(200..300).contains(&status)).then(|| {
        body.pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    });
    Ok(Outcome::Read { status, code })
}

/// A token for the ServiceAccount with the token-exchange audience, as the kubelet projects it.
async fn service_account_token(
    state: &SandboxState,
    namespace: &str,
    service_account: &str,
) -> anyhow::Result<String> {
    let client = state.kube_client().await?;
    let sas: Api<ServiceAccount> = Api::namespaced(client, namespace);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![TOKEN_EXCHANGE_AUDIENCE.into()],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = sas
        .create_token_request(service_account, &PostParams::default(), &req)
        .await
        .with_context(|| {
            format!("TokenRequest for ServiceAccount {namespace}/{service_account}")
        })?;
    answer.status.map(|s| s.token).ok_or_else(|| {
        anyhow!("TokenRequest for ServiceAccount {namespace}/{service_account} returned no token")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORAGE: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/lapsedemodata";

    #[test]
    fn lines_say_how_far_the_workload_got() {
        let refused = Outcome::ExchangeRefused("AADSTS70021: No matching record.".into());
        assert_eq!(
            refused.line(STORAGE),
            "token exchange refused: AADSTS70021: No matching record."
        );
        assert!(!refused.allowed());
        let ok = Outcome::Read {
            status: 200,
            code: None,
        };
        assert_eq!(
            ok.line(STORAGE),
            "GET …/storageAccounts/lapsedemodata → 200 OK"
        );
        assert!(ok.allowed());
        let denied = Outcome::Read {
            status: 403,
            code: Some("AuthorizationFailed".into()),
        };
        assert_eq!(
            denied.line(STORAGE),
            "GET …/storageAccounts/lapsedemodata → 403 AuthorizationFailed"
        );
        assert!(!denied.allowed());
    }

    #[test]
    fn only_the_first_sentence_of_entra_errors_is_kept() {
        assert_eq!(
            first_sentence("AADSTS70021: No match. Assertion Issuer: 'x'."),
            "AADSTS70021: No match."
        );
        assert_eq!(first_sentence("no period"), "no period");
    }
}
