//! The real Azure SDK for Rust (azure_identity / azure_core 1.x) against the simulator:
//! custom authority host and CA, tokens from a client secret and from a federated
//! ServiceAccount token, ARM calls through an azure_core pipeline.

use std::sync::Arc;
use std::time::Duration;

use azure_core::cloud::CustomConfiguration;
use azure_core::credentials::TokenCredential;
use azure_core::http::policies::Policy;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{
    ClientOptions, Context, Method as CoreMethod, Pipeline, Request, Transport, Url,
};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use lapse_sim_azure::{Config, Seed, TestIssuer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

fn client_options(env: &Env) -> ClientOptions {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = env.sim.url().to_owned();
    ClientOptions {
        transport: Some(Transport::new(Arc::new(https_client(env.sim.ca_pem())))),
        cloud: Some(Arc::new(cloud.into())),
        ..ClientOptions::default()
    }
}

async fn arm_get_via_pipeline(
    env: &Env,
    credential: Arc<dyn TokenCredential>,
    path: &str,
) -> (u16, Value) {
    let auth: Arc<dyn Policy> =
        Arc::new(BearerTokenAuthorizationPolicy::new(credential, [ARM_SCOPE]));
    let pipeline = Pipeline::new(
        Some("lapse-sim-azure-tests"),
        Some("0"),
        client_options(env),
        vec![auth],
        Vec::new(),
        None,
    );
    let url = Url::parse(&format!("{}{path}", env.sim.url())).unwrap();
    let mut request = Request::new(url, CoreMethod::Get);
    let response = pipeline
        .send(
            &Context::new(),
            &mut request,
            Some(azure_core::http::PipelineSendOptions {
                skip_checks: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let status = u16::from(response.status());
    (status, response.into_body().json().unwrap())
}

#[tokio::test]
async fn client_secret_credential_gets_a_token_and_reads_arm() {
    let env = Env::sandbox().await;
    let creds = env.sim.operator_credentials().unwrap();
    let credential = ClientSecretCredential::new(
        &creds.tenant_id,
        creds.client_id.clone(),
        creds.client_secret.clone().unwrap().into(),
        Some(ClientSecretCredentialOptions {
            client_options: client_options(&env),
        }),
    )
    .unwrap();
    let token = credential.get_token(&[ARM_SCOPE], None).await.unwrap();
    assert!(
        token.expires_on > azure_core::time::OffsetDateTime::now_utc() + Duration::from_secs(3000)
    );

    let (status, body) = arm_get_via_pipeline(
        &env,
        credential,
        &format!("/subscriptions/{}?api-version=2022-12-01", env.sub()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subscriptionId"], env.sub().as_str());

    let wrong = ClientSecretCredential::new(
        &creds.tenant_id,
        creds.client_id.clone(),
        "wrong".to_owned().into(),
        Some(ClientSecretCredentialOptions {
            client_options: client_options(&env),
        }),
    )
    .unwrap();
    let err = wrong
        .get_token(&[ARM_SCOPE], None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("AADSTS7000215"), "{err}");
}

#[tokio::test]
async fn workload_identity_credential_exchanges_a_service_account_token() {
    let issuer = TestIssuer::start().await.unwrap();
    let config = Config {
        trusted_ca_pems: vec![issuer.ca_pem().to_owned()],
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    let operator = env.operator_token().await;
    let (identity_id, principal, client_id) = env.sim.identity("backup-runner").unwrap();
    let subject = "system:serviceaccount:payments:backup-runner";
    let fic = env
        .arm(
            Method::PUT,
            &format!("{identity_id}/federatedIdentityCredentials/payments-backup?api-version={MSI_API}"),
            &operator,
            Some(json!({"properties": {"issuer": issuer.issuer(), "subject": subject, "audiences": ["api://AzureADTokenExchange"]}})),
        )
        .await;
    assert_eq!(fic.status, StatusCode::CREATED, "{}", fic.body);
    assert_eq!(
        env.put_assignment(
            &operator,
            &env.account_scope(),
            &guid(),
            &principal,
            READER,
            None
        )
        .await
        .status,
        StatusCode::CREATED
    );

    let dir = std::env::temp_dir().join(format!("sim-azure-wi-{}", guid()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(
        &token_file,
        issuer
            .mint(
                subject,
                "api://AzureADTokenExchange",
                Duration::from_secs(3600),
            )
            .unwrap(),
    )
    .unwrap();
    let credential = WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: client_options(&env),
        },
        client_id: Some(client_id),
        tenant_id: Some(env.sim.tenant_id()),
        token_file_path: Some(token_file),
    }))
    .unwrap();
    let (status, body) = arm_get_via_pipeline(
        &env,
        credential,
        &format!("{}?api-version=2023-05-01", env.account_scope()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "lapsedemodata");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn azure_core_retry_policy_honours_retry_after_on_429() {
    let config = Config {
        throttle: lapse_sim_azure::ThrottleConfig {
            reads: lapse_sim_azure::ThrottleLimit {
                capacity: 1,
                refill_per_sec: 1.0,
            },
            ..lapse_sim_azure::ThrottleConfig::default()
        },
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    let creds = env.sim.operator_credentials().unwrap();
    let credential = ClientSecretCredential::new(
        &creds.tenant_id,
        creds.client_id.clone(),
        creds.client_secret.clone().unwrap().into(),
        Some(ClientSecretCredentialOptions {
            client_options: client_options(&env),
        }),
    )
    .unwrap();
    let path = format!("/subscriptions/{}?api-version=2022-12-01", env.sub());
    let (first, _) = arm_get_via_pipeline(&env, credential.clone(), &path).await;
    let (second, body) = arm_get_via_pipeline(&env, credential, &path).await;
    assert_eq!((first, second), (200, 200), "{body}");
    // Exactly one 429: the retry waited for Retry-After (the bucket refills one read per
    // second, so an earlier retry would have been throttled again).
    let statuses: Vec<u16> = env
        .sim
        .audit()
        .matching("GET", &format!("/subscriptions/{}", env.sub()))
        .iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(statuses, vec![200, 429, 200]);
}
