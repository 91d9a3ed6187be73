//! The access story with sim-kube as the OIDC issuer: a real ServiceAccount token (TokenRequest
//! API) is refused without a FIC, accepted with one; the workload's ARM read is 403 until a role
//! assignment exists, 200 while it does, and 403 again once it is deleted.

use lapse_sim_azure::{Config, Seed};
use lapse_sim_kube::SimKube;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

async fn service_account_token(
    kube: &lapse_sim_kube::SimKubeHandle,
    ns: &str,
    name: &str,
) -> String {
    let http = https_client(kube.ca_pem());
    let base = format!("{}/api/v1/namespaces/{ns}/serviceaccounts", kube.url());
    let sa = http
        .post(&base)
        .bearer_auth(kube.admin_token())
        .json(&json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        sa.status(),
        StatusCode::CREATED,
        "{}",
        sa.text().await.unwrap()
    );
    let resp = http
        .post(format!("{base}/{name}/token"))
        .bearer_auth(kube.admin_token())
        .json(&json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": ["api://AzureADTokenExchange"], "expirationSeconds": 3600}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    body["status"]["token"].as_str().unwrap().to_owned()
}

fn claim(token: &str, name: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims[name].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn service_account_access_starts_and_ends_with_the_role_assignment() {
    let kube = SimKube::start(lapse_sim_kube::Config {
        namespaces: vec!["default".into(), "payments".into()],
        ..lapse_sim_kube::Config::default()
    })
    .await
    .unwrap();
    let config = Config {
        trusted_ca_pems: vec![kube.ca_pem().to_owned()],
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    let operator = env.operator_token().await;
    let (identity_id, principal, client_id) = env.sim.identity("backup-runner").unwrap();

    let sa_token = service_account_token(&kube, "payments", "backup-runner").await;
    let (issuer, subject) = (claim(&sa_token, "iss"), claim(&sa_token, "sub"));
    assert_eq!(subject, "system:serviceaccount:payments:backup-runner");
    let exchange = || {
        let env = &env;
        let (client_id, sa_token) = (client_id.clone(), sa_token.clone());
        async move {
            env.token_request(
                &env.sim.tenant_id(),
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &client_id),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &sa_token),
                    ("scope", ARM_SCOPE),
                ],
            )
            .await
        }
    };

    let refused = exchange().await;
    assert_eq!(refused.body["error_codes"][0], 700211, "{}", refused.body);

    let fic = env
        .arm(
            Method::PUT,
            &format!("{identity_id}/federatedIdentityCredentials/payments-backup-runner?api-version={MSI_API}"),
            &operator,
            Some(json!({"properties": {"issuer": issuer, "subject": subject, "audiences": ["api://AzureADTokenExchange"]}})),
        )
        .await;
    assert_eq!(fic.status, StatusCode::CREATED, "{}", fic.body);
    let accepted = exchange().await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    let workload = accepted.body["access_token"].as_str().unwrap().to_owned();

    let read = format!("{}?api-version=2023-05-01", env.account_scope());
    assert_eq!(
        env.arm(Method::GET, &read, &workload, None).await.status,
        StatusCode::FORBIDDEN
    );
    let name = guid();
    let scope = env.account_scope();
    let granted = env
        .put_assignment(
            &operator,
            &scope,
            &name,
            &principal,
            "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
            Some("ServicePrincipal"),
        )
        .await;
    assert_eq!(granted.status, StatusCode::CREATED);
    // Storage Blob Data Reader has no control-plane read of the account itself: still 403.
    assert_eq!(
        env.arm(Method::GET, &read, &workload, None).await.status,
        StatusCode::FORBIDDEN
    );
    let reader = guid();
    assert_eq!(
        env.put_assignment(
            &operator,
            &scope,
            &reader,
            &principal,
            READER,
            Some("ServicePrincipal")
        )
        .await
        .status,
        StatusCode::CREATED
    );
    assert_eq!(
        env.arm(Method::GET, &read, &workload, None).await.status,
        StatusCode::OK
    );
    let path = format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignments/{reader}?api-version={RA_API}"
    );
    assert_eq!(
        env.arm(Method::DELETE, &path, &operator, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        env.arm(Method::GET, &read, &workload, None).await.status,
        StatusCode::FORBIDDEN
    );
}
