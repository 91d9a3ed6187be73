use lapse_azure::{ErrorClass, FicRequest};
use serde_json::json;
use uuid::Uuid;

use crate::fake::{client, reply};

fn app() -> Uuid {
    Uuid::parse_str("bcd7c908-1c4d-4d48-93ee-ff38349a75c8").unwrap()
}

fn fic() -> FicRequest {
    FicRequest {
        name: "lapse-dev-abc".into(),
        issuer: "https://oidc.example/cluster".into(),
        subject: "system:serviceaccount:payments:agent".into(),
        audiences: vec!["api://AzureADTokenExchange".into()],
        description: Some("lapse:dev payments/agent".into()),
    }
}

fn fic_body(subject: &str) -> String {
    json!({
        "id": "d9b7bf1e-429e-4678-8132-9b00c9846602",
        "name": "lapse-dev-abc",
        "issuer": "https://oidc.example/cluster",
        "subject": subject,
        "audiences": ["api://AzureADTokenExchange"],
        "description": "lapse:dev payments/agent"
    })
    .to_string()
}

#[tokio::test]
async fn applications_and_service_principals_are_read_from_graph_v1() {
    let (client, fake) = client();
    fake.push(reply(
        200,
        &json!({"id": app(), "appId": Uuid::from_u128(9), "displayName": "agent"}).to_string(),
    ));
    fake.push(reply(
        200,
        &json!({"id": Uuid::from_u128(10), "appId": Uuid::from_u128(9), "displayName": "agent"})
            .to_string(),
    ));
    fake.push(reply(
        404,
        r#"{"error":{"code":"Request_ResourceNotFound","message":"gone"}}"#,
    ));

    let a = client.get_application(&app()).await.unwrap().unwrap();
    assert_eq!(a.app_id, Uuid::from_u128(9));
    let sp = client
        .service_principal_of_app(&a.app_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sp.id, Uuid::from_u128(10));
    assert_eq!(client.get_application(&app()).await.unwrap(), None);

    let sent = fake.requests();
    assert_eq!(sent[0].url.host_str(), Some("graph.test"));
    assert_eq!(sent[0].url.path(), format!("/v1.0/applications/{}", app()));
    assert_eq!(
        sent[1].url.path(),
        format!("/v1.0/servicePrincipals(appId='{}')", Uuid::from_u128(9))
    );
    // Graph calls use a Graph token.
    let scopes: Vec<_> = fake
        .token_requests()
        .iter()
        .map(|t| form(&t.body, "scope"))
        .collect();
    assert!(
        scopes.contains(&"https://graph.test/.default".to_owned()),
        "{scopes:?}"
    );
}

pub fn form(body: &str, key: &str) -> String {
    url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn put_app_fic_posts_the_credential_with_its_description() {
    let (client, fake) = client();
    fake.push(reply(
        201,
        &fic_body("system:serviceaccount:payments:agent"),
    ));
    let created = client.put_app_fic(&app(), &fic()).await.unwrap();
    assert_eq!(created.id, "d9b7bf1e-429e-4678-8132-9b00c9846602");
    let sent = fake.last();
    assert_eq!(sent.method, "POST");
    assert_eq!(
        sent.url.path(),
        format!("/v1.0/applications/{}/federatedIdentityCredentials", app())
    );
    assert_eq!(
        sent.json(),
        json!({
            "name": "lapse-dev-abc",
            "issuer": "https://oidc.example/cluster",
            "subject": "system:serviceaccount:payments:agent",
            "audiences": ["api://AzureADTokenExchange"],
            "description": "lapse:dev payments/agent"
        })
    );
}

#[tokio::test]
async fn an_existing_app_fic_with_the_same_trust_counts_as_present() {
    let (client, fake) = client();
    fake.push(reply(
        409,
        r#"{"error":{"code":"Request_MultipleObjectsWithSameKeyValue","message":"exists"}}"#,
    ));
    fake.push(reply(
        200,
        &fic_body("system:serviceaccount:payments:agent"),
    ));
    let got = client.put_app_fic(&app(), &fic()).await.unwrap();
    assert_eq!(got.name, "lapse-dev-abc");
    let sent = fake.last();
    assert_eq!(sent.method, "GET");
    assert_eq!(
        sent.url.path(),
        format!(
            "/v1.0/applications/{}/federatedIdentityCredentials/lapse-dev-abc",
            app()
        )
    );
}

#[tokio::test]
async fn an_existing_app_fic_trusting_something_else_is_a_terminal_conflict() {
    let (client, fake) = client();
    fake.push(reply(
        409,
        r#"{"error":{"code":"Request_MultipleObjectsWithSameKeyValue","message":"exists"}}"#,
    ));
    fake.push(reply(200, &fic_body("system:serviceaccount:other:agent")));
    let err = client.put_app_fic(&app(), &fic()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Terminal);
    assert!(
        err.to_string()
            .contains("system:serviceaccount:other:agent"),
        "{err}"
    );
}

#[tokio::test]
async fn delete_app_fic_is_true_on_204_and_false_on_404() {
    let (client, fake) = client();
    fake.push(reply(204, ""));
    fake.push(reply(
        404,
        r#"{"error":{"code":"Request_ResourceNotFound","message":"gone"}}"#,
    ));
    assert!(
        client
            .delete_app_fic(&app(), "lapse-dev-abc")
            .await
            .unwrap()
    );
    assert!(
        !client
            .delete_app_fic(&app(), "lapse-dev-abc")
            .await
            .unwrap()
    );
    assert_eq!(fake.last().method, "DELETE");
}

#[tokio::test]
async fn list_app_fics_follows_odata_next_link() {
    let (client, fake) = client();
    let item: serde_json::Value = serde_json::from_str(&fic_body("s")).unwrap();
    fake.push(reply(200, &json!({"value": [item.clone()], "@odata.nextLink": format!("https://graph.microsoft.com/v1.0/applications/{}/federatedIdentityCredentials?$skiptoken=p2", app())}).to_string()));
    fake.push(reply(200, &json!({"value": [item]}).to_string()));
    assert_eq!(client.list_app_fics(&app()).await.unwrap().len(), 2);
    let sent = fake.last();
    assert_eq!(sent.url.host_str(), Some("graph.test"));
    assert_eq!(sent.query("$skiptoken").as_deref(), Some("p2"));
}

#[tokio::test]
async fn graph_errors_carry_code_message_and_request_id() {
    let (client, fake) = client();
    fake.push(reply(
        400,
        r#"{"error":{"code":"Request_BadRequest","message":"Issuer must be https.","innerError":{"date":"2026-11-27T20:00:00","request-id":"5d1f-req","client-request-id":"c-1"}}}"#,
    ));
    let err = client.put_app_fic(&app(), &fic()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Terminal);
    assert_eq!(err.code(), Some("Request_BadRequest"));
    let text = err.to_string();
    assert!(
        text.contains("Issuer must be https.") && text.contains("5d1f-req"),
        "{text}"
    );
}

#[tokio::test]
async fn applications_are_listed_with_their_credentials_across_pages() {
    let (client, fake) = client();
    // Graph's passwordCredential and keyCredential shapes (Microsoft Graph v1.0 resource pages).
    let first = json!({
        "@odata.context": "https://graph.test/v1.0/$metadata#applications(id,appId,displayName,passwordCredentials,keyCredentials)",
        "value": [{
            "id": app(), "appId": Uuid::from_u128(9), "displayName": "billing",
            "passwordCredentials": [{
                "customKeyIdentifier": null, "displayName": "prod", "endDateTime": "2028-01-01T00:00:00Z",
                "hint": "abc", "keyId": "6c8a4a7c-33b5-4d3a-9c8f-0c5b3e7f2a11", "secretText": null,
                "startDateTime": "2026-01-01T00:00:00.123Z"
            }],
            "keyCredentials": [{
                "customKeyIdentifier": "QUJD", "displayName": "CN=billing", "endDateTime": "not a time",
                "key": null, "keyId": "2b1e1c1a-0d6b-4f55-9e0b-4a7c4c1f3e22",
                "startDateTime": "2026-01-01T00:00:00Z", "type": "AsymmetricX509Cert", "usage": "Verify"
            }]
        }],
        "@odata.nextLink": "https://graph.microsoft.com/v1.0/applications?$select=id&$top=999&$skiptoken=X1"
    });
    let second = json!({"value": [{"id": Uuid::from_u128(20), "appId": Uuid::from_u128(21)}]});
    fake.push(reply(200, &first.to_string()));
    fake.push(reply(200, &second.to_string()));
    let apps = client.list_applications().await.unwrap();
    assert_eq!(apps.len(), 2);
    let secret = &apps[0].password_credentials[0];
    assert_eq!(secret.display_name.as_deref(), Some("prod"));
    assert_eq!(
        secret.end.map(|t| t.to_rfc3339()),
        Some("2028-01-01T00:00:00+00:00".to_owned())
    );
    assert!(secret.start.is_some());
    let cert = &apps[0].key_credentials[0];
    assert_eq!(cert.key_type.as_deref(), Some("AsymmetricX509Cert"));
    // A time Graph never writes reads as unknown instead of failing the page.
    assert_eq!(cert.end, None);
    assert!(apps[1].password_credentials.is_empty());
    let sent = fake.requests();
    assert_eq!(sent[0].url.path(), "/v1.0/applications");
    assert_eq!(
        sent[0].query("$select").as_deref(),
        Some("id,appId,displayName,passwordCredentials,keyCredentials")
    );
    assert_eq!(sent[0].query("$top").as_deref(), Some("999"));
    // The next link is followed on the configured endpoint.
    assert_eq!(sent[1].url.host_str(), Some("graph.test"));
    assert_eq!(sent[1].query("$skiptoken").as_deref(), Some("X1"));
}

#[tokio::test]
async fn a_service_principal_is_read_by_object_id_with_its_type() {
    let (client, fake) = client();
    fake.push(reply(
        200,
        &json!({"id": Uuid::from_u128(10), "appId": Uuid::from_u128(9), "displayName": "legacy-etl", "servicePrincipalType": "ManagedIdentity"})
            .to_string(),
    ));
    fake.push(reply(
        404,
        r#"{"error":{"code":"Request_ResourceNotFound","message":"gone"}}"#,
    ));
    let sp = client
        .get_service_principal(&Uuid::from_u128(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sp.display_name.as_deref(), Some("legacy-etl"));
    assert_eq!(
        sp.service_principal_type.as_deref(),
        Some("ManagedIdentity")
    );
    assert_eq!(
        client
            .get_service_principal(&Uuid::from_u128(11))
            .await
            .unwrap(),
        None
    );
    let sent = fake.requests();
    assert_eq!(
        sent[0].url.path(),
        format!("/v1.0/servicePrincipals/{}", Uuid::from_u128(10))
    );
    assert_eq!(
        sent[0].query("$select").as_deref(),
        Some("id,appId,displayName,servicePrincipalType")
    );
}
