//! Workload identity federation at the token endpoint and the access story it enables:
//! refused without a FIC, accepted with one, ARM read 403 until a role assignment exists,
//! 200 with it, 403 again after it is deleted.

use std::time::Duration;

use lapse_sim_azure::{Config, Seed, TestIssuer};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const AUDIENCE: &str = "api://AzureADTokenExchange";
const SUBJECT: &str = "system:serviceaccount:payments:backup-runner";

async fn exchange(env: &Env, client_id: &str, assertion: &str) -> Resp {
    let tenant = env.sim.tenant_id();
    env.token_request(
        &tenant,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
            ("scope", ARM_SCOPE),
        ],
    )
    .await
}

fn aadsts(r: &Resp) -> i64 {
    r.body["error_codes"][0].as_i64().unwrap_or_default()
}

async fn setup() -> (TestIssuer, Env) {
    let issuer = TestIssuer::start().await.unwrap();
    let config = Config {
        trusted_ca_pems: vec![issuer.ca_pem().to_owned()],
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    (issuer, env)
}

#[tokio::test]
async fn access_begins_and_ends_with_the_role_assignment() {
    let (issuer, env) = setup().await;
    let operator = env.operator_token().await;
    let (identity_id, principal, client_id) = env.sim.identity("backup-runner").unwrap();
    let sa_token = issuer
        .mint(SUBJECT, AUDIENCE, Duration::from_secs(600))
        .unwrap();

    // No FIC on the identity yet: no record matches the assertion's issuer.
    let refused = exchange(&env, &client_id, &sa_token).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert_eq!(aadsts(&refused), 700211);
    assert!(
        refused.body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS700211")
    );

    let fic_path =
        format!("{identity_id}/federatedIdentityCredentials/payments-backup?api-version={MSI_API}");
    let fic_body = json!({"properties": {"issuer": issuer.issuer(), "subject": SUBJECT, "audiences": [AUDIENCE]}});
    assert_eq!(
        env.arm(Method::PUT, &fic_path, &operator, Some(fic_body))
            .await
            .status,
        StatusCode::CREATED
    );

    let accepted = exchange(&env, &client_id, &sa_token).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    assert_eq!(accepted.body["token_type"], "Bearer");
    let workload = accepted.body["access_token"].as_str().unwrap().to_owned();

    let read = format!("{}?api-version=2023-05-01", env.account_scope());
    let before = env.arm(Method::GET, &read, &workload, None).await;
    assert_eq!(
        (before.status, before.code()),
        (StatusCode::FORBIDDEN, "AuthorizationFailed")
    );

    let name = guid();
    let scope = env.account_scope();
    let granted = env
        .put_assignment(&operator, &scope, &name, &principal, READER, None)
        .await;
    assert_eq!(granted.status, StatusCode::CREATED);
    let during = env.arm(Method::GET, &read, &workload, None).await;
    assert_eq!(during.status, StatusCode::OK, "{}", during.body);
    assert_eq!(during.body["type"], "Microsoft.Storage/storageAccounts");

    let ra_path = format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version={RA_API}"
    );
    assert_eq!(
        env.arm(Method::DELETE, &ra_path, &operator, None)
            .await
            .status,
        StatusCode::OK
    );
    let after = env.arm(Method::GET, &read, &workload, None).await;
    assert_eq!(
        (after.status, after.code()),
        (StatusCode::FORBIDDEN, "AuthorizationFailed")
    );

    // Deleting the FIC stops new exchanges.
    assert_eq!(
        env.arm(Method::DELETE, &fic_path, &operator, None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(aadsts(&exchange(&env, &client_id, &sa_token).await), 700211);
}

#[tokio::test]
async fn assertions_must_match_exactly_be_signed_by_the_issuer_and_unexpired() {
    let (issuer, env) = setup().await;
    let operator = env.operator_token().await;
    let (identity_id, _, client_id) = env.sim.identity("backup-runner").unwrap();
    let fic_path =
        format!("{identity_id}/federatedIdentityCredentials/payments-backup?api-version={MSI_API}");
    let fic_body = json!({"properties": {"issuer": issuer.issuer(), "subject": SUBJECT, "audiences": [AUDIENCE]}});
    assert_eq!(
        env.arm(Method::PUT, &fic_path, &operator, Some(fic_body))
            .await
            .status,
        StatusCode::CREATED
    );

    let other_subject = issuer
        .mint(
            "system:serviceaccount:payments:other",
            AUDIENCE,
            Duration::from_secs(600),
        )
        .unwrap();
    assert_eq!(
        aadsts(&exchange(&env, &client_id, &other_subject).await),
        700213
    );
    let other_audience = issuer
        .mint(SUBJECT, "api://Other", Duration::from_secs(600))
        .unwrap();
    assert_eq!(
        aadsts(&exchange(&env, &client_id, &other_audience).await),
        700212
    );

    // Same claims, signed by a different key the issuer does not publish.
    let impostor = TestIssuer::start().await.unwrap();
    let forged_claims = impostor
        .mint(SUBJECT, AUDIENCE, Duration::from_secs(600))
        .unwrap();
    let genuine = issuer
        .mint(SUBJECT, AUDIENCE, Duration::from_secs(600))
        .unwrap();
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let forged_sig = forged_claims.rsplit('.').next().unwrap();
    parts[2] = forged_sig;
    let forged = parts.join(".");
    let bad_sig = exchange(&env, &client_id, &forged).await;
    assert_eq!(bad_sig.status, StatusCode::UNAUTHORIZED, "{}", bad_sig.body);
    assert_eq!(aadsts(&bad_sig), 700027);

    let expired = issuer
        .mint_expiring_at(SUBJECT, AUDIENCE, chrono::Utc::now().timestamp() - 10)
        .unwrap();
    assert_eq!(aadsts(&exchange(&env, &client_id, &expired).await), 700024);

    let garbage = exchange(&env, &client_id, "not-a-jwt").await;
    assert_eq!(aadsts(&garbage), 50027);
}

#[tokio::test]
async fn token_endpoint_errors_and_discovery() {
    let env = Env::sandbox().await;
    let creds = env.sim.operator_credentials().unwrap();
    let tenant = env.sim.tenant_id();
    let wrong_tenant = env
        .token_request(&guid(), &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(aadsts(&wrong_tenant), 90002);
    let no_scope_suffix = env
        .token_request(
            &tenant,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &creds.client_id),
                ("client_secret", creds.client_secret.as_deref().unwrap()),
                ("scope", "https://management.azure.com"),
            ],
        )
        .await;
    assert_eq!(aadsts(&no_scope_suffix), 1002012);
    let unknown_app = env
        .token_request(
            &tenant,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &guid()),
                ("client_secret", "x"),
                ("scope", ARM_SCOPE),
            ],
        )
        .await;
    assert_eq!(aadsts(&unknown_app), 700016);

    let discovery = to_resp(
        env.http
            .get(format!(
                "{}/{tenant}/v2.0/.well-known/openid-configuration",
                env.sim.url()
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(discovery.status, StatusCode::OK);
    assert_eq!(
        discovery.body["token_endpoint"],
        format!("{}/{tenant}/oauth2/v2.0/token", env.sim.url()).as_str()
    );
    let jwks_uri = discovery.body["jwks_uri"].as_str().unwrap().to_owned();
    let jwks = to_resp(env.http.get(jwks_uri).send().await.unwrap()).await;
    assert_eq!(jwks.body["keys"][0]["kty"], "RSA");

    // Access tokens carry the claims ARM and the operator read.
    let token = env.operator_token().await;
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["oid"], creds.object_id.as_str());
    assert_eq!(claims["tid"], tenant.as_str());
    assert_eq!(claims["appid"], creds.client_id.as_str());
    assert!(claims["exp"].as_i64().unwrap() > chrono::Utc::now().timestamp());
}

#[tokio::test]
async fn token_lifetime_is_configurable_and_expired_tokens_are_refused() {
    let config = Config {
        token_lifetime: Duration::from_secs(1),
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    let creds = env.sim.operator_credentials().unwrap();
    let r = env
        .token_request(
            &creds.tenant_id,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &creds.client_id),
                ("client_secret", creds.client_secret.as_deref().unwrap()),
                ("scope", ARM_SCOPE),
            ],
        )
        .await;
    assert_eq!(r.body["expires_in"], 1);
    let token = r.body["access_token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let path = format!("/subscriptions/{}?api-version=2022-12-01", env.sub());
    let expired = env.arm(Method::GET, &path, &token, None).await;
    assert_eq!(
        (expired.status, expired.code()),
        (StatusCode::UNAUTHORIZED, "ExpiredAuthenticationToken")
    );
    assert!(
        expired
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer authorization_uri=")
    );
}

#[tokio::test]
async fn a_new_fic_works_only_after_its_propagation_delay() {
    let issuer = TestIssuer::start().await.unwrap();
    let config = Config {
        trusted_ca_pems: vec![issuer.ca_pem().to_owned()],
        fic_propagation_delay: Duration::from_secs(3600),
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    let operator = env.operator_token().await;
    let (identity_id, _, client_id) = env.sim.identity("backup-runner").unwrap();
    let fic_path =
        format!("{identity_id}/federatedIdentityCredentials/payments-backup?api-version={MSI_API}");
    let fic_body = json!({"properties": {"issuer": issuer.issuer(), "subject": SUBJECT, "audiences": [AUDIENCE]}});
    let put = env
        .arm(Method::PUT, &fic_path, &operator, Some(fic_body))
        .await;
    assert_eq!(put.status, StatusCode::CREATED);
    let sa_token = issuer
        .mint(SUBJECT, AUDIENCE, Duration::from_secs(600))
        .unwrap();
    assert_eq!(aadsts(&exchange(&env, &client_id, &sa_token).await), 70021);
    env.sim.faults().set_fic_propagation_delay(Duration::ZERO);
    assert_eq!(
        exchange(&env, &client_id, &sa_token).await.status,
        StatusCode::OK
    );
}

/// Entra's delete of a FIC takes a while to reach every replica: within the FIC delete
/// propagation delay the deleted FIC still gets a workload a token, and that sign-in names it
/// as before the delete; once the delay has passed (here: shortened to nothing through the
/// admin endpoint) the exchange is refused as for a FIC that never existed.
#[tokio::test]
async fn a_deleted_fic_still_exchanges_until_its_delete_has_propagated() {
    let issuer = TestIssuer::start().await.unwrap();
    let mut seed = Seed::sandbox_default();
    seed.principals.push(lapse_sim_azure::SeedPrincipal {
        display_name: "log-reader".to_owned(),
        client_secret: Some("log-reader-secret".to_owned()),
        graph_roles: vec!["AuditLog.Read.All".to_owned()],
        ..Default::default()
    });
    let config = Config {
        trusted_ca_pems: vec![issuer.ca_pem().to_owned()],
        fic_delete_propagation_delay: Duration::from_secs(3600),
        ..Config::default()
    };
    let env = Env::start(config, seed).await;
    let from = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let operator = env.operator_token().await;
    let (identity_id, principal, client_id) = env.sim.identity("backup-runner").unwrap();
    let fic_path =
        format!("{identity_id}/federatedIdentityCredentials/payments-backup?api-version={MSI_API}");
    let fic_body = json!({"properties": {"issuer": issuer.issuer(), "subject": SUBJECT, "audiences": [AUDIENCE]}});
    assert_eq!(
        env.arm(Method::PUT, &fic_path, &operator, Some(fic_body))
            .await
            .status,
        StatusCode::CREATED
    );
    let sa_token = issuer
        .mint(SUBJECT, AUDIENCE, Duration::from_secs(600))
        .unwrap();
    let before = exchange(&env, &client_id, &sa_token).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);

    let deleted = env.arm(Method::DELETE, &fic_path, &operator, None).await;
    assert_eq!(deleted.status, StatusCode::OK);
    // Gone from ARM at once...
    assert_eq!(
        env.arm(Method::GET, &fic_path, &operator, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // ...but Entra still honours it.
    let during = exchange(&env, &client_id, &sa_token).await;
    assert_eq!(during.status, StatusCode::OK, "{}", during.body);

    let delays = env
        .http
        .put(format!("{}/admin/delays", env.sim.url()))
        .json(&json!({"ficDeletePropagationDelayMs": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(delays.status(), StatusCode::NO_CONTENT);
    let after = exchange(&env, &client_id, &sa_token).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{}", after.body);
    assert_eq!(aadsts(&after), 700211);

    // The sign-in log: both tokens, the one after the delete naming the FIC as the one before.
    let reader = crate::logs::graph_token(&env, "log-reader").await;
    let filter =
        format!("signInEventTypes/any(t: t eq 'managedIdentity') and createdDateTime ge {from}");
    let filter: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
    let signins = to_resp(
        env.http
            .get(format!(
                "{}/beta/auditLogs/signIns?$filter={filter}",
                env.sim.url()
            ))
            .bearer_auth(reader)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(signins.status, StatusCode::OK, "{}", signins.body);
    let items = signins.body["value"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", signins.body);
    let (after_delete, before_delete) = (&items[0], &items[1]);
    for field in [
        "servicePrincipalId",
        "clientCredentialType",
        "federatedCredentialId",
    ] {
        assert_eq!(after_delete[field], before_delete[field], "{field}");
    }
    assert_eq!(after_delete["servicePrincipalId"], json!(principal));
    assert_eq!(after_delete["federatedCredentialId"], "payments-backup");
    assert_eq!(
        after_delete["managedServiceIdentity"]["federatedTokenIssuer"],
        json!(issuer.issuer())
    );
}
