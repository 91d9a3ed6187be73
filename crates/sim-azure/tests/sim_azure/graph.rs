//! Microsoft Graph v1.0: applications, service principals and application FICs, and token
//! exchange through an application's FIC.

use std::time::Duration;

use lapse_sim_azure::{Config, Seed, TestIssuer};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

async fn graph_token(env: &Env) -> String {
    let c = env.sim.operator_credentials().unwrap();
    let r = env
        .token_request(
            &c.tenant_id,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &c.client_id),
                ("client_secret", c.client_secret.as_deref().unwrap()),
                ("scope", GRAPH_SCOPE),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["access_token"].as_str().unwrap().to_owned()
}

fn fic(name: &str, issuer: &str, subject: &str) -> serde_json::Value {
    json!({"name": name, "issuer": issuer, "subject": subject, "audiences": ["api://AzureADTokenExchange"], "description": "lapse:test"})
}

#[tokio::test]
async fn application_fics_crud_errors_and_limit() {
    let config = Config {
        fic_limit: 2,
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    let token = graph_token(&env).await;
    let apps = env
        .arm(Method::GET, "/v1.0/applications", &token, None)
        .await;
    assert_eq!(apps.status, StatusCode::OK, "{}", apps.body);
    let app = apps.body["value"][0].clone();
    let (object_id, app_id) = (
        app["id"].as_str().unwrap().to_owned(),
        app["appId"].as_str().unwrap().to_owned(),
    );
    let by_app_id = env
        .arm(
            Method::GET,
            &format!("/v1.0/applications(appId='{app_id}')"),
            &token,
            None,
        )
        .await;
    assert_eq!(by_app_id.body["id"], object_id.as_str());
    let selected = env
        .arm(
            Method::GET,
            &format!("/v1.0/applications/{object_id}?$select=id,appId"),
            &token,
            None,
        )
        .await;
    assert_eq!(selected.body["appId"], app_id.as_str());
    assert!(selected.body.get("displayName").is_none());
    let sp = env
        .arm(
            Method::GET,
            &format!("/v1.0/servicePrincipals(appId='{app_id}')"),
            &token,
            None,
        )
        .await;
    assert_eq!(sp.status, StatusCode::OK);
    assert_eq!(sp.body["servicePrincipalType"], "Application");

    let fics = format!("/v1.0/applications/{object_id}/federatedIdentityCredentials");
    let created = env
        .arm(
            Method::POST,
            &fics,
            &token,
            Some(fic(
                "ns-sa",
                "https://issuer.example",
                "system:serviceaccount:ns:sa",
            )),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let fic_id = created.body["id"].as_str().unwrap().to_owned();
    let dup = env
        .arm(
            Method::POST,
            &fics,
            &token,
            Some(fic(
                "other",
                "https://issuer.example",
                "system:serviceaccount:ns:sa",
            )),
        )
        .await;
    assert_eq!(
        (dup.status, dup.code()),
        (
            StatusCode::BAD_REQUEST,
            "InvalidFederatedIdentityCredentialValue"
        )
    );
    assert!(dup.body["error"]["innerError"]["request-id"].is_string());
    let same_name = env
        .arm(
            Method::POST,
            &fics,
            &token,
            Some(fic("ns-sa", "https://issuer.example", "s7")),
        )
        .await;
    assert_eq!(
        (same_name.status, same_name.code()),
        (
            StatusCode::CONFLICT,
            "Request_MultipleObjectsWithSameKeyValue"
        )
    );
    assert_eq!(
        env.arm(
            Method::POST,
            &fics,
            &token,
            Some(fic("second", "https://issuer.example", "s2"))
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let over = env
        .arm(
            Method::POST,
            &fics,
            &token,
            Some(fic("third", "https://issuer.example", "s3")),
        )
        .await;
    assert_eq!(over.status, StatusCode::BAD_REQUEST);
    assert!(
        over.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum of 2")
    );

    let list = env.arm(Method::GET, &fics, &token, None).await;
    assert_eq!(list.body["value"].as_array().unwrap().len(), 2);
    assert_eq!(
        env.arm(Method::GET, &format!("{fics}/{fic_id}"), &token, None)
            .await
            .body["name"],
        "ns-sa"
    );
    assert_eq!(
        env.arm(Method::GET, &format!("{fics}/ns-sa"), &token, None)
            .await
            .body["id"],
        fic_id.as_str()
    );
    assert_eq!(
        env.arm(Method::DELETE, &format!("{fics}/ns-sa"), &token, None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let gone = env
        .arm(Method::DELETE, &format!("{fics}/{fic_id}"), &token, None)
        .await;
    assert_eq!(
        (gone.status, gone.code()),
        (StatusCode::NOT_FOUND, "Request_ResourceNotFound")
    );

    // An identity without Graph permissions is refused; an ARM token is not a Graph token.
    let (_, principal, _) = env.sim.identity("backup-runner").unwrap();
    let weak = env
        .sim
        .mint_access_token(&principal, "https://graph.microsoft.com")
        .unwrap();
    let denied = env
        .arm(
            Method::POST,
            &fics,
            &weak,
            Some(fic("x-y-z", "https://issuer.example", "s9")),
        )
        .await;
    assert_eq!(
        (denied.status, denied.code()),
        (StatusCode::FORBIDDEN, "Authorization_RequestDenied")
    );
    let arm = env.operator_token().await;
    assert_eq!(
        env.arm(Method::GET, &fics, &arm, None).await.code(),
        "InvalidAuthenticationToken"
    );
}

#[tokio::test]
async fn application_fic_enables_token_exchange() {
    let issuer = TestIssuer::start().await.unwrap();
    let config = Config {
        trusted_ca_pems: vec![issuer.ca_pem().to_owned()],
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    let token = graph_token(&env).await;
    let app = env
        .arm(Method::GET, "/v1.0/applications", &token, None)
        .await
        .body["value"][0]
        .clone();
    let subject = "system:serviceaccount:reports:agent";
    let assertion = issuer
        .mint(
            subject,
            "api://AzureADTokenExchange",
            Duration::from_secs(600),
        )
        .unwrap();
    let exchange = |assertion: String| {
        let env = &env;
        let client_id = app["appId"].as_str().unwrap().to_owned();
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
                    ("client_assertion", &assertion),
                    ("scope", ARM_SCOPE),
                ],
            )
            .await
        }
    };
    assert_eq!(
        exchange(assertion.clone()).await.body["error_codes"][0],
        700211
    );
    let fics = format!(
        "/v1.0/applications/{}/federatedIdentityCredentials",
        app["id"].as_str().unwrap()
    );
    let created = env
        .arm(
            Method::POST,
            &fics,
            &token,
            Some(fic("reports-agent", issuer.issuer(), subject)),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let ok = exchange(assertion).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
}

/// An application's FIC deleted through Graph: refused at once by default, honoured within the
/// FIC delete propagation delay when one is set.
#[tokio::test]
async fn a_deleted_application_fic_exchanges_only_within_the_delete_propagation_delay() {
    let issuer = TestIssuer::start().await.unwrap();
    let config = Config {
        trusted_ca_pems: vec![issuer.ca_pem().to_owned()],
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    let token = graph_token(&env).await;
    let app = env
        .arm(Method::GET, "/v1.0/applications", &token, None)
        .await
        .body["value"][0]
        .clone();
    let subject = "system:serviceaccount:reports:agent";
    let assertion = issuer
        .mint(
            subject,
            "api://AzureADTokenExchange",
            Duration::from_secs(600),
        )
        .unwrap();
    let client_id = app["appId"].as_str().unwrap().to_owned();
    let exchange = || {
        let (env, client_id, assertion) = (&env, &client_id, &assertion);
        async move {
            env.token_request(
                &env.sim.tenant_id(),
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion),
                    ("scope", ARM_SCOPE),
                ],
            )
            .await
        }
    };
    let fics = format!(
        "/v1.0/applications/{}/federatedIdentityCredentials",
        app["id"].as_str().unwrap()
    );
    let create_and_delete = || {
        let (env, fics, token, issuer) = (&env, &fics, &token, &issuer);
        async move {
            let created = env
                .arm(
                    Method::POST,
                    fics,
                    token,
                    Some(fic("reports-agent", issuer.issuer(), subject)),
                )
                .await;
            assert_eq!(created.status, StatusCode::CREATED);
            let one = format!("{fics}/reports-agent");
            let deleted = env.arm(Method::DELETE, &one, token, None).await;
            assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        }
    };
    // No delay (the default): refused at once.
    create_and_delete().await;
    assert_eq!(exchange().await.body["error_codes"][0], 700211);
    // With one: honoured until it has passed.
    env.sim
        .faults()
        .set_fic_delete_propagation_delay(Duration::from_secs(3600));
    create_and_delete().await;
    let during = exchange().await;
    assert_eq!(during.status, StatusCode::OK, "{}", during.body);
    env.sim
        .faults()
        .set_fic_delete_propagation_delay(Duration::ZERO);
    assert_eq!(exchange().await.body["error_codes"][0], 700211);
}
