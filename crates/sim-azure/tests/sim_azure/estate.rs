//! What the estate audit (`kubectl lapse audit`) reads, held to Azure's wire formats: the user-
//! assigned identities of a subscription and of a resource group, page by page (the MSI
//! swagger's `UserAssignedIdentitiesListResult`, whose examples `contract.rs` also replays);
//! app registrations with their `passwordCredentials` and `keyCredentials`; service principals
//! with `displayName` and `servicePrincipalType`; Graph's paging. Graph's shapes are transcribed
//! below from the Microsoft Graph v1.0 reference (there is no Graph swagger in
//! `third_party/azure-rest-api-specs`); each test names its source, as `wire.rs` does.

use std::collections::BTreeMap;

use lapse_sim_azure::{Config, Seed, SeedPrincipal};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;
use crate::contract::{Docs, specs_root, validate};

const MSI_SWAGGER: &str = "specification/msi/resource-manager/Microsoft.ManagedIdentity/stable/2023-01-31/ManagedIdentity.json";
const GRAPH: &str = "https://graph.microsoft.com/.default";

/// A Graph token of a seeded principal with a client secret.
async fn graph_token_of(env: &Env, principal: &str) -> String {
    let c = env.sim.credentials(principal).unwrap();
    let r = env
        .token_request(
            &c.tenant_id,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &c.client_id),
                ("client_secret", c.client_secret.as_deref().unwrap()),
                ("scope", GRAPH),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["access_token"].as_str().unwrap().to_owned()
}

/// Every item of a Graph list, following `@odata.nextLink`; the pages as answered.
async fn graph_pages(env: &Env, token: &str, path: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut next = Some(format!("{}{path}", env.sim.url()));
    while let Some(url) = next.take() {
        let r = env.http.get(&url).bearer_auth(token).send().await.unwrap();
        let r = to_resp(r).await;
        assert_eq!(r.status, StatusCode::OK, "{url}: {}", r.body);
        next = r.body["@odata.nextLink"].as_str().map(str::to_owned);
        pages.push(r.body);
        assert!(pages.len() < 50, "{path}: no end to the pages");
    }
    pages
}

fn items(pages: &[Value]) -> Vec<Value> {
    pages
        .iter()
        .flat_map(|p| p["value"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Graph v1.0 `passwordCredential` (resources/passwordcredential.md, "JSON representation":
/// `customKeyIdentifier`, `displayName`, `endDateTime`, `hint`, `keyId`, `secretText`,
/// `startDateTime`; `keyId` a GUID, the times `DateTimeOffset` in UTC).
fn password_credential_schema() -> Value {
    let string = json!({"type": "string"});
    json!({
        "type": "object",
        "required": ["keyId", "startDateTime", "endDateTime"],
        "properties": {
            "customKeyIdentifier": string,
            "displayName": string,
            "endDateTime": {"type": "string", "format": "date-time"},
            "hint": string,
            "keyId": {"type": "string", "format": "uuid"},
            "secretText": string,
            "startDateTime": {"type": "string", "format": "date-time"},
        }
    })
}

/// Graph v1.0 `keyCredential` (resources/keycredential.md: `customKeyIdentifier`,
/// `displayName`, `endDateTime`, `key` — null unless `$select`ed on a single object —, `keyId`,
/// `startDateTime`, `type`, `usage`).
fn key_credential_schema() -> Value {
    let string = json!({"type": "string"});
    json!({
        "type": "object",
        "required": ["keyId", "startDateTime", "endDateTime", "type", "usage"],
        "properties": {
            "customKeyIdentifier": string,
            "displayName": string,
            "endDateTime": {"type": "string", "format": "date-time"},
            "key": string,
            "keyId": {"type": "string", "format": "uuid"},
            "startDateTime": {"type": "string", "format": "date-time"},
            "type": string,
            "usage": string,
        }
    })
}

fn schema_errors(schema: &Value, body: &Value) -> Vec<String> {
    let mut docs = Docs(BTreeMap::new());
    let mut errors = Vec::new();
    // Transcribed schemas have no `$ref`: any vendored file serves as the base.
    validate(
        &mut docs,
        &specs_root().join(MSI_SWAGGER),
        schema,
        body,
        "$",
        &mut errors,
    );
    errors
}

/// Sources: Graph v1.0 "List applications" (`GET /applications`; default page 100, maximum
/// `$top` 999; the list's `@odata.context`, with the `$select`ed properties in parentheses; no
/// per-item context), the `passwordCredential` and `keyCredential` resources (above), and
/// Graph's paging (`@odata.nextLink` carrying `$skiptoken`, absent on the last page). The
/// message of an out-of-range `$top` is not verified against Graph.
#[tokio::test]
async fn applications_list_their_credentials_metadata_page_by_page() {
    let env = Env::start(Config::default(), Seed::sandbox_estate()).await;
    let token = graph_token_of(&env, "lapse-auditor").await;
    let base = format!("{}/v1.0", env.sim.url());

    let pages = graph_pages(&env, &token, "/v1.0/applications").await;
    assert_eq!(pages.len(), 1);
    assert_eq!(
        pages[0]["@odata.context"],
        format!("{base}/$metadata#applications")
    );
    let apps = items(&pages);
    let names: Vec<&str> = apps
        .iter()
        .map(|a| a["displayName"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"lapse-demo-app") && names.contains(&"legacy-billing"),
        "Application.Read.All reads every application: {names:?}"
    );
    for app in &apps {
        assert!(app.get("@odata.context").is_none(), "{app}");
        assert!(app["passwordCredentials"].is_array(), "{app}");
        assert!(app["keyCredentials"].is_array(), "{app}");
    }
    let billing = apps
        .iter()
        .find(|a| a["displayName"] == "legacy-billing")
        .unwrap();
    let secrets = billing["passwordCredentials"].as_array().unwrap();
    assert_eq!(secrets.len(), 2, "{billing}");
    for secret in secrets {
        let errors = schema_errors(&password_credential_schema(), secret);
        assert!(errors.is_empty(), "{errors:?}: {secret}");
        // Graph never returns a secret's value after addPassword; the hint is its first three
        // characters.
        assert!(secret["secretText"].is_null());
        assert_eq!(secret["hint"].as_str().map(str::len), Some(3));
        assert!(secret["endDateTime"].as_str().unwrap().ends_with('Z'));
    }
    let prod = secrets
        .iter()
        .find(|s| s["displayName"] == "billing-prod")
        .unwrap();
    let at = |k: &str| chrono::DateTime::parse_from_rfc3339(prod[k].as_str().unwrap()).unwrap();
    assert_eq!((at("endDateTime") - at("startDateTime")).num_days(), 730);
    // The schema check is not vacuous.
    assert!(!schema_errors(&password_credential_schema(), &json!({"keyId": "x"})).is_empty());

    // One page at a time: each page names the next, the last none; $select is kept and named
    // in the context.
    let paged = graph_pages(
        &env,
        &token,
        "/v1.0/applications?$select=id,displayName,passwordCredentials&$top=1",
    )
    .await;
    assert_eq!(paged.len(), apps.len());
    assert_eq!(
        paged[0]["@odata.context"],
        format!("{base}/$metadata#applications(id,displayName,passwordCredentials)")
    );
    let link = paged[0]["@odata.nextLink"].as_str().unwrap();
    assert!(
        link.starts_with(&format!("{base}/applications?")) && link.contains("skiptoken"),
        "{link}"
    );
    assert!(paged.last().unwrap().get("@odata.nextLink").is_none());
    let first = &paged[0]["value"][0];
    assert!(first.get("appId").is_none(), "$select trims: {first}");
    assert!(first.get("passwordCredentials").is_some());
    let mut ids: Vec<String> = items(&paged)
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), apps.len(), "every application once");

    let too_big = env
        .arm(Method::GET, "/v1.0/applications?$top=1000", &token, None)
        .await;
    assert_eq!(
        (too_big.status, too_big.code()),
        (StatusCode::BAD_REQUEST, "Request_BadRequest")
    );
}

/// Sources: the `keyCredential` resource (above) and Graph v1.0 "List applications"
/// (`Directory.Read.All` reads applications too; `Application.ReadWrite.OwnedBy` is the
/// operator's, which reads its own here as before).
#[tokio::test]
async fn certificates_are_listed_and_directory_readers_see_every_application() {
    let mut seed = Seed::sandbox_estate();
    seed.principals.push(SeedPrincipal {
        display_name: "directory-reader".into(),
        client_secret: Some("reader".into()),
        graph_roles: vec!["Directory.Read.All".into()],
        ..SeedPrincipal::default()
    });
    seed.applications[1]
        .key_credentials
        .push(lapse_sim_azure::SeedCredential {
            display_name: Some("CN=legacy-billing".into()),
            start_date_time: "2026-01-01T00:00:00Z".into(),
            end_date_time: "2027-01-01T00:00:00Z".into(),
            key_id: Some("2B1E1C1A-0D6B-4F55-9E0B-4A7C4C1F3E22".into()),
        });
    let env = Env::start(Config::default(), seed).await;
    let token = graph_token_of(&env, "directory-reader").await;
    let apps = items(&graph_pages(&env, &token, "/v1.0/applications").await);
    assert_eq!(apps.len(), 2);
    let billing = apps
        .iter()
        .find(|a| a["displayName"] == "legacy-billing")
        .unwrap();
    let cert = &billing["keyCredentials"][0];
    let errors = schema_errors(&key_credential_schema(), cert);
    assert!(errors.is_empty(), "{errors:?}: {cert}");
    assert_eq!(cert["keyId"], "2b1e1c1a-0d6b-4f55-9e0b-4a7c4c1f3e22");
    assert_eq!(cert["type"], "AsymmetricX509Cert");
    assert_eq!(cert["usage"], "Verify");
    assert!(cert["key"].is_null());
    assert_eq!(cert["endDateTime"], "2027-01-01T00:00:00Z");

    // The operator (Application.ReadWrite.OwnedBy) reads the application it owns.
    let operator = graph_token_of(&env, "lapse-operator").await;
    let owned = items(&graph_pages(&env, &operator, "/v1.0/applications").await);
    assert_eq!(
        owned
            .iter()
            .map(|a| a["displayName"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["lapse-demo-app"]
    );
}

/// Sources: Graph v1.0 "Get servicePrincipal" (`GET /servicePrincipals/{id}`; application
/// permissions Application.Read.All, Application.ReadWrite.OwnedBy, Application.ReadWrite.All,
/// Directory.Read.All; "A service principal can retrieve its own application and service
/// principal details without being granted any application permissions"), the
/// `servicePrincipal` resource (`servicePrincipalType`: `Application`, `ManagedIdentity`, …) and
/// "List servicePrincipals" (paged like every directory list).
#[tokio::test]
async fn service_principals_carry_name_and_type_and_need_a_read_permission() {
    let env = Env::start(Config::default(), Seed::sandbox_estate()).await;
    let token = graph_token_of(&env, "lapse-auditor").await;
    let (_, etl, _) = env.sim.identity("legacy-etl").unwrap();
    let sp = env
        .arm(
            Method::GET,
            &format!(
                "/v1.0/servicePrincipals/{etl}?$select=id,appId,displayName,servicePrincipalType"
            ),
            &token,
            None,
        )
        .await;
    assert_eq!(sp.status, StatusCode::OK, "{}", sp.body);
    assert_eq!(sp.body["displayName"], "legacy-etl");
    assert_eq!(sp.body["servicePrincipalType"], "ManagedIdentity");
    assert!(
        sp.body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#servicePrincipals/$entity")
    );
    let deployer = env.sim.credentials("ci-deployer").unwrap().object_id;
    let sp = env
        .arm(
            Method::GET,
            &format!("/v1.0/servicePrincipals/{deployer}"),
            &token,
            None,
        )
        .await;
    assert_eq!(
        (&sp.body["displayName"], &sp.body["servicePrincipalType"]),
        (&json!("ci-deployer"), &json!("Application"))
    );

    // Listed in pages of $top, without per-item context.
    let pages = graph_pages(&env, &token, "/v1.0/servicePrincipals?$top=2").await;
    let all = items(&pages);
    assert!(pages.len() >= 3, "{} principals", all.len());
    assert!(all.iter().all(|p| p.get("@odata.context").is_none()));
    assert!(all.iter().any(|p| p["displayName"] == "legacy-etl"));

    // A workload's token (no Graph permission) reads only itself.
    let (_, runner, _) = env.sim.identity("backup-runner").unwrap();
    let workload = env
        .sim
        .mint_access_token(&runner, "https://graph.microsoft.com")
        .unwrap();
    for path in [
        "/v1.0/servicePrincipals".to_owned(),
        format!("/v1.0/servicePrincipals/{etl}"),
    ] {
        let denied = env.arm(Method::GET, &path, &workload, None).await;
        assert_eq!(
            (denied.status, denied.code()),
            (StatusCode::FORBIDDEN, "Authorization_RequestDenied"),
            "{path}"
        );
    }
    let own = env
        .arm(
            Method::GET,
            &format!("/v1.0/servicePrincipals/{runner}"),
            &workload,
            None,
        )
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
}

/// Sources: the MSI swagger's `UserAssignedIdentities_ListBySubscription` and
/// `_ListByResourceGroup` (`UserAssignedIdentitiesListResult`: `value`, `nextLink`) and their
/// examples, whose `nextLink` carries `$skiptoken` (`contract.rs` replays both examples).
#[tokio::test]
async fn identities_are_listed_per_subscription_and_group_in_pages() {
    let config = Config {
        page_size: 1,
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_estate()).await;
    let token = env.operator_token().await;
    let sub = format!("/subscriptions/{}", env.sub());
    let list = |scope: String| {
        let env = &env;
        let token = &token;
        async move {
            let mut names = Vec::new();
            let mut url = Some(format!(
                "{}{scope}/providers/Microsoft.ManagedIdentity/userAssignedIdentities?api-version=2023-01-31",
                env.sim.url()
            ));
            let mut pages = 0;
            while let Some(u) = url.take() {
                let r = to_resp(env.http.get(&u).bearer_auth(token).send().await.unwrap()).await;
                assert_eq!(r.status, StatusCode::OK, "{u}: {}", r.body);
                let mut docs = Docs(BTreeMap::new());
                let mut errors = Vec::new();
                validate(
                    &mut docs,
                    &specs_root().join(MSI_SWAGGER),
                    &json!({"$ref": "#/definitions/UserAssignedIdentitiesListResult"}),
                    &r.body,
                    "$",
                    &mut errors,
                );
                assert!(errors.is_empty(), "{errors:?}");
                if let Some(next) = r.body["nextLink"].as_str() {
                    assert!(next.contains("$skiptoken="), "{next}");
                }
                for i in r.body["value"].as_array().unwrap() {
                    names.push(i["name"].as_str().unwrap().to_owned());
                }
                url = r.body["nextLink"].as_str().map(str::to_owned);
                pages += 1;
            }
            (names, pages)
        }
    };
    let (mut all, pages) = list(sub.clone()).await;
    all.sort();
    assert_eq!(all, ["backup-runner", "legacy-etl", "report-agent"]);
    assert_eq!(pages, 3);
    let (legacy, _) = list(format!("{sub}/resourceGroups/lapse-legacy-rg")).await;
    assert_eq!(legacy, ["legacy-etl"]);
    // The foreign federated credential the estate seeds on legacy-etl.
    let (etl, _, _) = env.sim.identity("legacy-etl").unwrap();
    let fics = env
        .arm(
            Method::GET,
            &format!("{etl}/federatedIdentityCredentials?api-version=2023-01-31"),
            &token,
            None,
        )
        .await;
    assert_eq!(
        fics.body["value"][0]["properties"]["issuer"],
        "https://token.actions.githubusercontent.com"
    );
}
