//! User-assigned identities and their federated identity credentials.

use std::time::Duration;

use lapse_sim_azure::{Config, Seed};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

fn fic(issuer: &str, subject: &str) -> serde_json::Value {
    json!({"properties": {"issuer": issuer, "subject": subject, "audiences": ["api://AzureADTokenExchange"]}})
}

#[tokio::test]
async fn identities_get_put_list_in_both_api_versions() {
    let env = Env::sandbox().await;
    let token = env.operator_token().await;
    let rg = env.rg_scope();
    let base = format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities");
    for api in ["2023-01-31", "2024-11-30"] {
        let got = env
            .arm(
                Method::GET,
                &format!("{base}/backup-runner?api-version={api}"),
                &token,
                None,
            )
            .await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        let (_, principal, client) = env.sim.identity("backup-runner").unwrap();
        assert_eq!(got.body["properties"]["principalId"], principal.as_str());
        assert_eq!(got.body["properties"]["clientId"], client.as_str());
        assert_eq!(
            got.body["properties"]["tenantId"],
            env.sim.tenant_id().as_str()
        );
    }
    let created = env
        .arm(
            Method::PUT,
            &format!("{base}/new-one?api-version={MSI_API}"),
            &token,
            Some(json!({"location": "westeurope", "tags": {"a": "b"}})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["location"], "westeurope");
    let updated = env
        .arm(
            Method::PUT,
            &format!("{base}/new-one?api-version={MSI_API}"),
            &token,
            Some(json!({"location": "westeurope"})),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK);
    let no_location = env
        .arm(
            Method::PUT,
            &format!("{base}/x1?api-version={MSI_API}"),
            &token,
            Some(json!({})),
        )
        .await;
    assert_eq!(no_location.code(), "LocationRequired");

    let by_rg = env
        .arm(
            Method::GET,
            &format!("{base}?api-version={MSI_API}"),
            &token,
            None,
        )
        .await;
    assert_eq!(by_rg.body["value"].as_array().unwrap().len(), 3);
    let by_sub = env
        .arm(
            Method::GET,
            &format!("/subscriptions/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities?api-version=2023-01-31", env.sub()),
            &token,
            None,
        )
        .await;
    assert_eq!(by_sub.body["value"].as_array().unwrap().len(), 3);
    let bad_version = env
        .arm(
            Method::GET,
            &format!("{base}?api-version=2018-11-30"),
            &token,
            None,
        )
        .await;
    assert_eq!(bad_version.code(), "InvalidApiVersionParameter");
    let missing = env
        .arm(
            Method::GET,
            &format!("{base}/nobody?api-version={MSI_API}"),
            &token,
            None,
        )
        .await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "ResourceNotFound")
    );
}

#[tokio::test]
async fn fic_crud_name_rule_uniqueness_and_limit() {
    let config = Config {
        fic_limit: 3,
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    let token = env.operator_token().await;
    let (identity_id, _, _) = env.sim.identity("backup-runner").unwrap();
    let path = |name: &str| {
        format!("{identity_id}/federatedIdentityCredentials/{name}?api-version={MSI_API}")
    };
    let iss = "https://issuer.example";

    let created = env
        .arm(
            Method::PUT,
            &path("fic-one"),
            &token,
            Some(fic(iss, "sub-1")),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["properties"]["subject"], "sub-1");
    let same = env
        .arm(
            Method::PUT,
            &path("fic-one"),
            &token,
            Some(fic(iss, "sub-1")),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK);
    let got = env.arm(Method::GET, &path("fic-one"), &token, None).await;
    assert_eq!(got.body["name"], "fic-one");

    for bad in ["ab", "-starts-with-dash", "has.dot", &"x".repeat(121)] {
        let r = env
            .arm(Method::PUT, &path(bad), &token, Some(fic(iss, "sub-x")))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "name {bad}: {}", r.body);
    }
    let ok_edge = env
        .arm(
            Method::PUT,
            &path(&format!("a{}", "_".repeat(119))),
            &token,
            Some(fic(iss, "sub-edge")),
        )
        .await;
    assert_eq!(ok_edge.status, StatusCode::CREATED, "{}", ok_edge.body);

    let clash = env
        .arm(
            Method::PUT,
            &path("fic-two"),
            &token,
            Some(fic(iss, "sub-1")),
        )
        .await;
    assert_eq!(clash.status, StatusCode::BAD_REQUEST);
    assert!(
        clash.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Issuer and subject combination already exists")
    );
    let http_issuer = env
        .arm(
            Method::PUT,
            &path("fic-two"),
            &token,
            Some(fic("http://issuer.example", "sub-2")),
        )
        .await;
    assert_eq!(http_issuer.status, StatusCode::BAD_REQUEST);

    assert_eq!(
        env.arm(
            Method::PUT,
            &path("fic-three"),
            &token,
            Some(fic(iss, "sub-3"))
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let over = env
        .arm(
            Method::PUT,
            &path("fic-four"),
            &token,
            Some(fic(iss, "sub-4")),
        )
        .await;
    assert_eq!(over.status, StatusCode::BAD_REQUEST, "{}", over.body);
    assert!(
        over.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum of 3")
    );

    let list = env
        .arm(
            Method::GET,
            &format!("{identity_id}/federatedIdentityCredentials?api-version={MSI_API}&$top=2"),
            &token,
            None,
        )
        .await;
    assert_eq!(list.body["value"].as_array().unwrap().len(), 2);
    assert!(list.body["nextLink"].as_str().is_some());

    assert_eq!(
        env.arm(Method::DELETE, &path("fic-one"), &token, None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        env.arm(Method::DELETE, &path("fic-one"), &token, None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(Config::default().fic_limit, 20);
}

#[tokio::test]
async fn overlapping_fic_writes_on_one_identity_conflict() {
    let config = Config {
        fic_write_duration: Duration::from_millis(1500),
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    let token = env.operator_token().await;
    let (identity_id, _, _) = env.sim.identity("backup-runner").unwrap();
    let (other_id, _, _) = env.sim.identity("report-agent").unwrap();
    let put = |id: String, name: &'static str, sub: &'static str| {
        let env = &env;
        let token = token.clone();
        async move {
            env.arm(
                Method::PUT,
                &format!("{id}/federatedIdentityCredentials/{name}?api-version={MSI_API}"),
                &token,
                Some(fic("https://issuer.example", sub)),
            )
            .await
        }
    };
    let (a, b, c) = tokio::join!(
        put(identity_id.clone(), "fic-a", "a"),
        put(identity_id.clone(), "fic-b", "b"),
        put(other_id, "fic-c", "c")
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT]);
    let conflict = if a.status == StatusCode::CONFLICT {
        &a
    } else {
        &b
    };
    assert_eq!(
        conflict.code(),
        "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity"
    );
    // Writes to another identity do not conflict.
    assert_eq!(c.status, StatusCode::CREATED);
    // Serialised writes succeed.
    assert_eq!(
        put(identity_id, "fic-d", "d").await.status,
        StatusCode::CREATED
    );
}
