use std::path::PathBuf;
use std::sync::Arc;

use lapse_azure::{AzureClient, ConfigError, CredentialConfig, ErrorClass, Url};
use uuid::Uuid;

use crate::fake::{ACCESS_TOKEN, Fake, SECRET, client, config, reply};
use crate::graph::form;

const RG: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/payments-rg";

#[tokio::test]
async fn arm_calls_carry_a_token_for_the_arm_scope_from_the_configured_authority() {
    let (client, fake) = client();
    fake.push(reply(204, ""));
    client
        .delete_role_assignment(RG, &Uuid::from_u128(1))
        .await
        .unwrap();
    let token = &fake.token_requests()[0];
    assert_eq!(token.url.host_str(), Some("login.test"));
    assert_eq!(
        token.url.path(),
        "/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
    );
    assert_eq!(form(&token.body, "scope"), "https://arm.test/.default");
    assert_eq!(form(&token.body, "grant_type"), "client_credentials");
    assert_eq!(form(&token.body, "client_secret"), SECRET);
    assert_eq!(
        fake.last().header("authorization"),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str())
    );
}

#[tokio::test]
async fn a_token_failure_is_an_auth_error_without_the_secret_and_nothing_is_sent() {
    let (client, fake) = client();
    fake.fail_tokens(reply(
        401,
        &format!(
            r#"{{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided ({SECRET}).","error_codes":[7000215]}}"#
        ),
    ));
    let err = client
        .get_role_assignment(RG, &Uuid::from_u128(1))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth);
    assert_eq!(err.metric_label(), "auth");
    let text = format!("{err} {err:?}");
    assert!(text.contains("AADSTS7000215"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_401_from_arm_is_an_auth_error() {
    let (client, fake) = client();
    fake.push(reply(
        401,
        r#"{"error":{"code":"InvalidAuthenticationToken","message":"The access token is invalid."}}"#,
    ));
    let err = client
        .get_role_assignment(RG, &Uuid::from_u128(1))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth);
    assert!(
        err.to_string().contains("InvalidAuthenticationToken"),
        "{err}"
    );
}

#[tokio::test]
async fn debug_output_never_shows_secrets_or_tokens() {
    let (client, fake) = client();
    fake.push(reply(
        403,
        r#"{"error":{"code":"AuthorizationFailed","message":"no"}}"#,
    ));
    let err = client
        .get_role_assignment(RG, &Uuid::from_u128(1))
        .await
        .unwrap_err();
    let text = format!("{:?} {:?} {err} {err:?}", config(), client);
    assert!(!text.contains(SECRET), "{text}");
    assert!(!text.contains(ACCESS_TOKEN), "{text}");
}

#[tokio::test]
async fn workload_identity_sends_the_token_file_as_client_assertion() {
    let dir = std::env::temp_dir().join(format!("lapse-azure-wi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    let assertion = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2ln";
    std::fs::write(&token_file, assertion).unwrap();

    let mut cfg = config();
    cfg.credential = CredentialConfig::WorkloadIdentity {
        tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
        client_id: "11111111-2222-3333-4444-555555555555".into(),
        token_file: token_file.clone(),
    };
    let fake = Fake::default();
    let client = AzureClient::with_transport(cfg.clone(), Arc::new(fake.clone())).unwrap();
    fake.push(reply(204, ""));
    client
        .delete_role_assignment(RG, &Uuid::from_u128(1))
        .await
        .unwrap();
    let token = &fake.token_requests()[0];
    assert_eq!(token.url.host_str(), Some("login.test"));
    assert_eq!(form(&token.body, "client_assertion"), assertion);
    assert_eq!(
        form(&token.body, "client_assertion_type"),
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(form(&token.body, "scope"), "https://arm.test/.default");
    assert!(!format!("{cfg:?} {client:?}").contains(assertion));

    // A missing token file is a configuration error naming the field.
    std::fs::remove_file(&token_file).unwrap();
    let err = AzureClient::with_transport(cfg, Arc::new(Fake::default())).unwrap_err();
    assert!(err.to_string().contains("token_file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_ca_bundle_is_loaded_or_refused_by_name() {
    let mut cfg = config();
    cfg.ca_bundle =
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/client/test-ca.pem"));
    AzureClient::new(cfg.clone()).unwrap();

    cfg.ca_bundle = Some(PathBuf::from("/nonexistent/ca.pem"));
    let err = AzureClient::new(cfg.clone()).unwrap_err();
    assert!(matches!(err, ConfigError::CaBundle { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");

    cfg.ca_bundle = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    let err = AzureClient::new(cfg).unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
}

#[test]
fn plain_http_endpoints_are_refused() {
    let mut cfg = config();
    cfg.arm_endpoint = Some(Url::parse("http://arm.test/").unwrap());
    let err = AzureClient::with_transport(cfg, Arc::new(Fake::default())).unwrap_err();
    assert!(err.to_string().contains("arm_endpoint"), "{err}");
}
