//! Wire-format contract tests: the fields, nulls, headers and messages Azure answers with,
//! beyond what the vendored examples show. Each test names its source; the swagger schemas come
//! from `third_party/azure-rest-api-specs` (via `contract.rs`'s validator) or are transcribed
//! with their provenance where the file is not vendored. docs/sim-azure.md cites every source.

use std::collections::BTreeMap;
use std::time::Duration;

use lapse_sim_azure::{Config, Seed, TestIssuer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;
use crate::contract::{Docs, specs_root, validate};

const RA_SWAGGER: &str = "specification/authorization/resource-manager/Microsoft.Authorization/stable/2022-04-01/authorization-RoleAssignmentsCalls.json";
const MSI_SWAGGER: &str = "specification/msi/resource-manager/Microsoft.ManagedIdentity/stable/2023-01-31/ManagedIdentity.json";
const ACR_PUSH: &str = "8311e382-0749-4cb8-b61a-304f252e45ec";
const AUDIENCE: &str = "api://AzureADTokenExchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const WIF_DOCS: &str = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation";

fn ra_url(scope: &str, name: &str) -> String {
    format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version={RA_API}")
}

/// The twelve property names of the 2022-04-01 `RoleAssignmentProperties`, read from the
/// vendored swagger (so the test follows the contract, not a copy of it).
fn role_assignment_property_names() -> Vec<String> {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(specs_root().join(RA_SWAGGER)).unwrap())
            .unwrap();
    let mut names: Vec<String> = doc["definitions"]["RoleAssignmentProperties"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    names.sort();
    names
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

/// Validates `body` against `#/definitions/{definition}` of a vendored swagger.
fn schema_errors(swagger: &str, definition: &str, body: &Value) -> Vec<String> {
    let mut docs = Docs(BTreeMap::new());
    let mut errors = Vec::new();
    validate(
        &mut docs,
        &specs_root().join(swagger),
        &json!({ "$ref": format!("#/definitions/{definition}") }),
        body,
        "$",
        &mut errors,
    );
    errors
}

/// Validates an ARM error body against the common `ErrorResponse` (v2 types).
fn arm_error_errors(body: &Value) -> Vec<String> {
    let mut docs = Docs(BTreeMap::new());
    let mut errors = Vec::new();
    validate(
        &mut docs,
        &specs_root().join(RA_SWAGGER),
        &json!({"$ref": "../../../../../common-types/resource-management/v2/types.json#/definitions/ErrorResponse"}),
        body,
        "$",
        &mut errors,
    );
    errors
}

/// Point 1. Source: Microsoft Learn "Assign Azure roles using the REST API" (2022-04-01 create
/// answer: every property, nulls included, `createdBy` null and `updatedBy` the caller), "List
/// Azure role assignments using the REST API" and "Remove Azure role assignments" (later
/// answers name both), and the 2022-04-01 swagger's `RoleAssignmentProperties`.
#[tokio::test]
async fn role_assignment_bodies_carry_all_twelve_properties_with_nulls() {
    let names = role_assignment_property_names();
    assert_eq!(names.len(), 12, "{names:?}");
    let env = Env::sandbox().await;
    let token = env.operator_token().await;
    let caller = env.sim.operator_credentials().unwrap().object_id;
    let (_, principal, _) = env.sim.identity("backup-runner").unwrap();
    let scope = env.account_scope();
    let name = guid();

    let created = env
        .put_assignment(&token, &scope, &name, &principal, READER, None)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let props = &created.body["properties"];
    assert_eq!(keys(props), names, "{}", created.body);
    assert!(props["createdBy"].is_null(), "{props}");
    assert_eq!(props["updatedBy"], caller.as_str());
    for unset in [
        "description",
        "condition",
        "conditionVersion",
        "delegatedManagedIdentityResourceId",
    ] {
        assert!(props[unset].is_null(), "{unset}: {props}");
    }
    assert_eq!(props["createdOn"], props["updatedOn"]);
    let errors = schema_errors(RA_SWAGGER, "RoleAssignment", &created.body);
    assert!(errors.is_empty(), "{errors:?}");

    // Every later answer names the creator.
    let read = env
        .arm(Method::GET, &ra_url(&scope, &name), &token, None)
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(keys(&read.body["properties"]), names);
    assert_eq!(read.body["properties"]["createdBy"], caller.as_str());
    assert_eq!(read.body["properties"]["updatedBy"], caller.as_str());
    let errors = schema_errors(RA_SWAGGER, "RoleAssignment", &read.body);
    assert!(errors.is_empty(), "{errors:?}");

    // An update (description) is a 200 naming both, and records the update time.
    let updated = env
        .arm(
            Method::PUT,
            &ra_url(&scope, &name),
            &token,
            Some(json!({"properties": {
                "roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{READER}"),
                "principalId": principal,
                "description": "lapse:wire",
            }})),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["properties"]["description"], "lapse:wire");
    assert_eq!(updated.body["properties"]["createdBy"], caller.as_str());
    assert!(
        updated.body["properties"]["updatedOn"].as_str() >= props["createdOn"].as_str(),
        "{}",
        updated.body
    );

    // A list at the subscription: the new one and the seeded ones, all twelve properties each;
    // seeded assignments have no recorded writer.
    let list = env
        .arm(
            Method::GET,
            &format!(
                "/subscriptions/{}/providers/Microsoft.Authorization/roleAssignments?api-version={RA_API}",
                env.sub()
            ),
            &token,
            None,
        )
        .await;
    let items = list.body["value"].as_array().unwrap();
    assert!(items.len() >= 3, "{}", list.body);
    for item in items {
        assert_eq!(keys(&item["properties"]), names, "{item}");
        let errors = schema_errors(RA_SWAGGER, "RoleAssignment", item);
        assert!(errors.is_empty(), "{errors:?}");
    }
    let seeded: Vec<&Value> = items
        .iter()
        .filter(|i| i["properties"]["principalId"] == caller.as_str())
        .collect();
    assert!(!seeded.is_empty());
    for s in seeded {
        assert!(s["properties"]["createdBy"].is_null(), "{s}");
        assert!(s["properties"]["updatedBy"].is_null(), "{s}");
    }

    // The DELETE answer is the assignment as stored.
    let deleted = env
        .arm(Method::DELETE, &ra_url(&scope, &name), &token, None)
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(keys(&deleted.body["properties"]), names);
    assert_eq!(deleted.body["properties"]["createdBy"], caller.as_str());
}

/// Point 2. Source: Microsoft Learn "List Azure role definitions" (REST: AcrPush and a custom
/// role with `createdOn`, `updatedOn`, `createdBy`, `updatedBy`; built-ins' writers null) and
/// the Reader definition as Azure serves it (`createdOn` 2015-02-02T21:55:09.8806423Z,
/// `updatedOn` 2021-11-11T20:13:47.8628684Z).
#[tokio::test]
async fn role_definitions_carry_their_creation_and_update() {
    let env = Env::sandbox().await;
    let token = env.operator_token().await;
    let caller = env.sim.operator_credentials().unwrap().object_id;
    let sub = format!("/subscriptions/{}", env.sub());
    let def = |guid: &str| {
        format!(
            "{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}?api-version=2022-04-01"
        )
    };
    for (guid, created, updated) in [
        (
            READER,
            "2015-02-02T21:55:09.8806423Z",
            "2021-11-11T20:13:47.8628684Z",
        ),
        (
            ACR_PUSH,
            "2018-10-29T17:52:32.5201177Z",
            "2021-11-11T20:13:07.4993029Z",
        ),
    ] {
        let r = env.arm(Method::GET, &def(guid), &token, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let p = &r.body["properties"];
        assert_eq!(
            (p["createdOn"].as_str(), p["updatedOn"].as_str()),
            (Some(created), Some(updated))
        );
        assert!(p.get("createdBy").is_some_and(Value::is_null), "{p}");
        assert!(p.get("updatedBy").is_some_and(Value::is_null), "{p}");
    }
    // Every built-in carries the four properties.
    let list = env
        .arm(
            Method::GET,
            &format!("{sub}/providers/Microsoft.Authorization/roleDefinitions?api-version=2022-04-01&$filter=type+eq+'BuiltInRole'"),
            &token,
            None,
        )
        .await;
    let roles = list.body["value"].as_array().unwrap();
    assert!(roles.len() >= 18, "{}", list.body);
    for r in roles {
        let p = &r["properties"];
        for f in ["createdOn", "updatedOn"] {
            let t = p[f].as_str().unwrap_or_default();
            assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{f}: {r}");
        }
        assert!(p["createdBy"].is_null() && p["updatedBy"].is_null(), "{r}");
    }

    // A custom role names who wrote it; replacing it keeps the creation.
    let custom = guid();
    let body = |description: &str| {
        json!({"properties": {
            "roleName": "lapse wire reader",
            "description": description,
            "assignableScopes": [sub.clone()],
            "permissions": [{"actions": ["*/read"]}],
        }})
    };
    let first = env
        .arm(Method::PUT, &def(&custom), &token, Some(body("one")))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let p = &first.body["properties"];
    assert_eq!(
        (p["createdBy"].as_str(), p["updatedBy"].as_str()),
        (Some(caller.as_str()), Some(caller.as_str()))
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = env
        .arm(Method::PUT, &def(&custom), &token, Some(body("two")))
        .await;
    let q = &second.body["properties"];
    assert_eq!(q["createdOn"], p["createdOn"]);
    assert!(q["updatedOn"].as_str() > p["updatedOn"].as_str(), "{q}");
    assert_eq!(q["description"], "two");
}

/// `Subscription`, `SubscriptionPolicies` and `ManagedByTenant` of
/// `specification/resources/resource-manager/Microsoft.Resources/stable/2022-12-01/subscriptions.json`
/// (Azure/azure-rest-api-specs, commit 0c1362ad47b1754da517a7cc0b112f78ec554a5a), transcribed:
/// that swagger is not vendored (its `GetSubscription` example shows a managing tenant the
/// simulator does not model).
fn subscription_schema() -> Value {
    let string = json!({"type": "string"});
    json!({
        "type": "object",
        "properties": {
            "id": string,
            "subscriptionId": string,
            "displayName": string,
            "tenantId": string,
            "state": {"type": "string", "enum": ["Enabled", "Warned", "PastDue", "Disabled", "Deleted"]},
            "subscriptionPolicies": {
                "type": "object",
                "properties": {
                    "locationPlacementId": string,
                    "quotaId": string,
                    "spendingLimit": {"type": "string", "enum": ["On", "Off", "CurrentPeriodOff"]},
                }
            },
            "authorizationSource": string,
            "managedByTenants": {
                "type": "array",
                "items": {"type": "object", "properties": {"tenantId": string}}
            },
            "tags": {"type": "object", "additionalProperties": string},
        }
    })
}

/// Point 3. Source: the 2022-12-01 `Subscription` schema (above) and `az account list` output
/// captured from Azure (`"managedByTenants": []` for a subscription no other tenant manages).
#[tokio::test]
async fn a_subscription_answers_with_an_empty_managed_by_tenants() {
    let env = Env::sandbox().await;
    let token = env.operator_token().await;
    let mut docs = Docs(BTreeMap::new());
    let file = specs_root().join(RA_SWAGGER);
    let get = env
        .arm(
            Method::GET,
            &format!("/subscriptions/{}?api-version=2022-12-01", env.sub()),
            &token,
            None,
        )
        .await;
    assert_eq!(get.status, StatusCode::OK, "{}", get.body);
    assert_eq!(get.body["managedByTenants"], json!([]));
    let list = env
        .arm(
            Method::GET,
            "/subscriptions?api-version=2022-12-01",
            &token,
            None,
        )
        .await;
    let first = &list.body["value"][0];
    assert_eq!(first["managedByTenants"], json!([]), "{}", list.body);
    let mut errors = Vec::new();
    for body in [&get.body, first] {
        validate(
            &mut docs,
            &file,
            &subscription_schema(),
            body,
            "$",
            &mut errors,
        );
    }
    assert!(errors.is_empty(), "{errors:?}");
    // The schema check is not vacuous.
    validate(
        &mut docs,
        &file,
        &subscription_schema(),
        &json!({"managedByTenants": {}}),
        "$",
        &mut errors,
    );
    assert!(!errors.is_empty());
}

/// Point 4: creates name what they made; errors carry their code in the body only; the front
/// door's refusals say so. Sources: captured ARM error answers (a 403 `LinkedAuthorizationFailed`,
/// 404 `ResourceNotFound` and `ResourceGroupNotFound`: `x-ms-failure-cause: gateway`, no
/// `x-ms-error-code`); the `Location` of a 201 is the brief's (not verified against Azure).
#[tokio::test]
async fn creates_carry_location_and_errors_carry_no_code_header() {
    // Reads never refill here, so the budget shows exactly what the requests cost (a refill
    // between two reads once made this test flaky under load).
    let mut config = Config::default();
    config.throttle.reads.refill_per_sec = 0.0;
    let env = Env::start(config, Seed::sandbox_default()).await;
    let token = env.operator_token().await;
    let rg = env.rg_scope();
    let identity_id =
        format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/wire-identity");
    let put = env
        .arm(
            Method::PUT,
            &format!("{identity_id}?api-version={MSI_API}"),
            &token,
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    let own_url = format!("{}{}", env.sim.url(), put.body["id"].as_str().unwrap());
    assert_eq!(put.header("location"), Some(own_url.as_str()));
    let again = env
        .arm(
            Method::PUT,
            &format!("{identity_id}?api-version={MSI_API}"),
            &token,
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(
        (again.status, again.header("location")),
        (StatusCode::OK, None)
    );

    let fic = env
        .arm(
            Method::PUT,
            &format!("{identity_id}/federatedIdentityCredentials/wire-fic?api-version={MSI_API}"),
            &token,
            Some(json!({"properties": {"issuer": "https://issuer.example", "subject": "s", "audiences": [AUDIENCE]}})),
        )
        .await;
    assert_eq!(fic.status, StatusCode::CREATED, "{}", fic.body);
    let fic_url = format!("{}{}", env.sim.url(), fic.body["id"].as_str().unwrap());
    assert_eq!(fic.header("location"), Some(fic_url.as_str()));

    // Resource provider errors: the code in the body, no x-ms-error-code, not the gateway's.
    let missing = env
        .arm(Method::GET, &ra_url(&rg, &guid()), &token, None)
        .await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "RoleAssignmentNotFound")
    );
    let (_, principal, _) = env.sim.identity("backup-runner").unwrap();
    let workload = env
        .sim
        .mint_access_token(&principal, "https://management.azure.com")
        .unwrap();
    let refused = env
        .arm(
            Method::GET,
            &format!("{}?api-version=2023-05-01", env.account_scope()),
            &workload,
            None,
        )
        .await;
    assert_eq!(refused.code(), "AuthorizationFailed");
    for r in [&missing, &refused] {
        assert_eq!(r.header("x-ms-error-code"), None);
        assert_eq!(r.header("x-ms-failure-cause"), None);
        assert!(r.header("x-ms-request-id").is_some());
    }

    // The front door: unknown subscription, missing or unsupported api-version. No rate-limit
    // header, and no read spent: the next read counts down by one from the last.
    let reads = |r: &Resp| {
        r.header("x-ms-ratelimit-remaining-subscription-reads")
            .and_then(|v| v.parse::<u32>().ok())
    };
    let account = env.account_scope();
    let before = env
        .arm(
            Method::GET,
            &format!("{account}?api-version=2023-05-01"),
            &token,
            None,
        )
        .await;
    let before = reads(&before).unwrap();
    let gateway = [
        (
            format!(
                "/subscriptions/{}/resourceGroups/rg?api-version=2021-04-01",
                guid()
            ),
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
        ),
        (
            account.clone(),
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
        ),
        (
            format!(
                "{rg}/providers/Microsoft.Authorization/roleAssignments?api-version=1999-01-01"
            ),
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
        ),
    ];
    for (path, status, code) in gateway {
        let r = env.arm(Method::GET, &path, &token, None).await;
        assert_eq!((r.status, r.code()), (status, code), "{path}: {}", r.body);
        assert_eq!(r.header("x-ms-failure-cause"), Some("gateway"), "{path}");
        assert_eq!(r.header("x-ms-error-code"), None, "{path}");
        assert!(
            !r.headers
                .keys()
                .any(|k| k.as_str().starts_with("x-ms-ratelimit")),
            "{path}: {:?}",
            r.headers
        );
        let errors = arm_error_errors(&r.body);
        assert!(errors.is_empty(), "{errors:?}");
    }
    let after = env
        .arm(
            Method::GET,
            &format!("{account}?api-version=2023-05-01"),
            &token,
            None,
        )
        .await;
    assert_eq!(reads(&after), Some(before - 1));
}

async fn graph_token(env: &Env) -> String {
    let c = env.sim.operator_credentials().unwrap();
    let r = env
        .token_request(
            &c.tenant_id,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &c.client_id),
                ("client_secret", c.client_secret.as_deref().unwrap()),
                ("scope", "https://graph.microsoft.com/.default"),
            ],
        )
        .await;
    r.body["access_token"].as_str().unwrap().to_owned()
}

/// A Graph call, optionally with the client's `client-request-id`.
async fn graph(
    env: &Env,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
    client_request_id: Option<&str>,
) -> Resp {
    let mut req = env
        .http
        .request(method, format!("{}{path}", env.sim.url()))
        .bearer_auth(token);
    if let Some(id) = client_request_id {
        req = req.header("client-request-id", id);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    to_resp(req.send().await.unwrap()).await
}

/// Point 5. Sources: Microsoft Graph v1.0 "Create federatedIdentityCredential" (201 with
/// `@odata.context` `…/$metadata#applications('{id}')/federatedIdentityCredentials/$entity` and
/// `@odata.id`), "Update federatedIdentityCredential" (updatable: audiences, description,
/// issuer, subject; 204), captured Graph answers (`request-id`, `client-request-id` equal to it
/// when the client sent none, `x-ms-ags-diagnostic`; no `x-ms-*` request headers of ARM).
#[tokio::test]
async fn graph_answers_carry_odata_context_location_and_request_ids() {
    let env = Env::sandbox().await;
    let token = graph_token(&env).await;
    let base = format!("{}/v1.0", env.sim.url());
    let apps = graph(&env, Method::GET, "/v1.0/applications", &token, None, None).await;
    let app = apps.body["value"][0]["id"].as_str().unwrap().to_owned();
    let fics = format!("/v1.0/applications/{app}/federatedIdentityCredentials");
    let context =
        format!("{base}/$metadata#applications('{app}')/federatedIdentityCredentials/$entity");

    let created = graph(
        &env,
        Method::POST,
        &fics,
        &token,
        Some(json!({"name": "wire", "issuer": "https://issuer.example", "subject": "one", "audiences": [AUDIENCE]})),
        Some("client-7"),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["@odata.context"], context.as_str());
    let id = created.body["id"].as_str().unwrap().to_owned();
    let odata_id = created.body["@odata.id"].as_str().unwrap();
    assert!(
        odata_id.ends_with(&format!("/federatedIdentityCredentials/{id}")),
        "{odata_id}"
    );
    assert_eq!(created.header("location"), Some(odata_id));
    assert_eq!(created.header("client-request-id"), Some("client-7"));
    assert!(created.header("request-id").is_some());

    // Every Graph answer: request-id (client-request-id the same when none was sent), no
    // ARM request headers.
    let read = graph(
        &env,
        Method::GET,
        &format!("{fics}/{id}"),
        &token,
        None,
        None,
    )
    .await;
    assert_eq!(read.body["@odata.context"], context.as_str());
    let request_id = read.header("request-id").unwrap().to_owned();
    assert_eq!(read.header("client-request-id"), Some(request_id.as_str()));
    assert!(read.header("x-ms-ags-diagnostic").is_some());
    for arm_header in [
        "x-ms-request-id",
        "x-ms-correlation-request-id",
        "x-ms-error-code",
    ] {
        assert_eq!(read.header(arm_header), None, "{arm_header}");
    }
    // List items carry no per-item context; the list has its own.
    let list = graph(&env, Method::GET, &fics, &token, None, None).await;
    assert!(list.body["value"][0].get("@odata.context").is_none());
    assert!(list.body["@odata.context"].is_string());

    // Errors: Graph's shape, the innerError naming the same request and the client's ID.
    let missing = graph(
        &env,
        Method::GET,
        &format!("{fics}/nope"),
        &token,
        None,
        Some("client-8"),
    )
    .await;
    assert_eq!(missing.code(), "Request_ResourceNotFound");
    let inner = &missing.body["error"]["innerError"];
    assert_eq!(inner["request-id"].as_str(), missing.header("request-id"));
    assert_eq!(inner["client-request-id"], "client-8");
    assert_eq!(missing.header("x-ms-error-code"), None);

    // PATCH applies every updatable property.
    let patch = graph(
        &env,
        Method::PATCH,
        &format!("{fics}/wire"),
        &token,
        Some(json!({"name": "wire", "issuer": "https://other.example", "subject": "two", "audiences": ["api://Other"], "description": "patched"})),
        None,
    )
    .await;
    assert_eq!(patch.status, StatusCode::NO_CONTENT, "{}", patch.body);
    let now = graph(
        &env,
        Method::GET,
        &format!("{fics}/{id}"),
        &token,
        None,
        None,
    )
    .await;
    assert_eq!(
        (
            &now.body["issuer"],
            &now.body["subject"],
            &now.body["audiences"],
            &now.body["description"]
        ),
        (
            &json!("https://other.example"),
            &json!("two"),
            &json!(["api://Other"]),
            &json!("patched")
        )
    );
    // The name is immutable; issuer and subject stay unique on the application.
    let rename = graph(
        &env,
        Method::PATCH,
        &format!("{fics}/wire"),
        &token,
        Some(json!({"name": "renamed"})),
        None,
    )
    .await;
    assert_eq!(rename.status, StatusCode::BAD_REQUEST);
    let other = graph(
        &env,
        Method::POST,
        &fics,
        &token,
        Some(json!({"name": "wire-2", "issuer": "https://issuer.example", "subject": "three", "audiences": [AUDIENCE]})),
        None,
    )
    .await;
    assert_eq!(other.status, StatusCode::CREATED);
    let clash = graph(
        &env,
        Method::PATCH,
        &format!("{fics}/wire-2"),
        &token,
        Some(json!({"issuer": "https://other.example", "subject": "two"})),
        None,
    )
    .await;
    assert_eq!(
        (clash.status, clash.code()),
        (
            StatusCode::BAD_REQUEST,
            "InvalidFederatedIdentityCredentialValue"
        )
    );
    let two_audiences = graph(
        &env,
        Method::PATCH,
        &format!("{fics}/wire-2"),
        &token,
        Some(json!({"audiences": [AUDIENCE, "api://Other"]})),
        None,
    )
    .await;
    assert_eq!(two_audiences.status, StatusCode::BAD_REQUEST);
}

/// Point 6. Source: Microsoft's "Important considerations and restrictions for federated
/// identity credentials", Errors (status and message; the codes are not published: ARM's
/// `ResourceNotFound` and the RP's `BadRequest` are kept), and the MSI swagger's `CloudError`.
#[tokio::test]
async fn fic_errors_carry_microsofts_messages() {
    let env = Env::sandbox().await;
    let token = env.operator_token().await;
    let rg = env.rg_scope();
    let (identity_id, _, _) = env.sim.identity("backup-runner").unwrap();
    let put = |identity: String, name: &str, body: Value| {
        let env = &env;
        let token = &token;
        let url = format!("{identity}/federatedIdentityCredentials/{name}?api-version={MSI_API}");
        async move { env.arm(Method::PUT, &url, token, Some(body)).await }
    };
    let good = json!({"properties": {"issuer": "https://issuer.example", "subject": "s", "audiences": [AUDIENCE]}});
    let cases = [
        (
            put(
                format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/nobody"),
                "fic-1",
                good.clone(),
            )
            .await,
            StatusCode::NOT_FOUND,
            "The parent user-assigned identity doesn't exist.",
        ),
        (
            put(
                identity_id.clone(),
                "fic-2",
                json!({"properties": {"issuer": "https://issuer.example", "subject": "s", "audiences": [AUDIENCE, "api://Other"]}}),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "Federated identity credentials must have exactly one audience.",
        ),
        (
            put(identity_id.clone(), "-x", good.clone()).await,
            StatusCode::BAD_REQUEST,
            "Federated Identity Credential name '-x' is invalid.",
        ),
        (
            put(identity_id.clone(), "fic-3", json!({"properties": {"audiences": [AUDIENCE]}})).await,
            StatusCode::BAD_REQUEST,
            "Federated Identity Credential from HTTP body has empty properties",
        ),
    ];
    for (r, status, message) in &cases {
        assert_eq!(
            (r.status, r.body["error"]["message"].as_str()),
            (*status, Some(*message)),
            "{}",
            r.body
        );
        let errors = schema_errors(MSI_SWAGGER, "CloudError", &r.body);
        assert!(errors.is_empty(), "{errors:?}");
    }
    let list = env
        .arm(
            Method::GET,
            &format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/nobody/federatedIdentityCredentials?api-version={MSI_API}"),
            &token,
            None,
        )
        .await;
    assert_eq!(
        list.body["error"]["message"],
        "The parent user-assigned identity doesn't exist."
    );
}

/// Point 7. Source: Entra answers captured from real tenants (401 `invalid_client`,
/// "AADSTS700211: No matching federated identity record found for presented assertion issuer
/// '…'. Please check your federated identity credential Subject, Audience and Issuer against the
/// presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
/// likewise 700213 for the subject and 700212 for the audience).
#[tokio::test]
async fn token_exchange_names_the_claim_no_fic_matches() {
    let issuer = TestIssuer::start().await.unwrap();
    let config = Config {
        trusted_ca_pems: vec![issuer.ca_pem().to_owned()],
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    let token = env.operator_token().await;
    let (identity_id, _, client_id) = env.sim.identity("backup-runner").unwrap();
    let subject = "system:serviceaccount:payments:backup-runner";
    let exchange = |assertion: String| {
        let env = &env;
        let client_id = client_id.clone();
        async move {
            env.token_request(
                &env.sim.tenant_id(),
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &client_id),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", &assertion),
                    ("scope", ARM_SCOPE),
                ],
            )
            .await
        }
    };
    let expect = |r: &Resp, code: u32, claim: &str, value: &str| {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
        assert_eq!(r.body["error"], "invalid_client");
        assert_eq!(r.body["error_codes"], json!([code]));
        let description = r.body["error_description"].as_str().unwrap();
        let want = format!(
            "AADSTS{code}: No matching federated identity record found for presented assertion {claim} '{value}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. {WIF_DOCS} Trace ID: "
        );
        assert!(description.starts_with(&want), "{description}\nwant {want}");
    };
    let sa = |sub: &str, aud: &str| issuer.mint(sub, aud, Duration::from_secs(600)).unwrap();

    expect(
        &exchange(sa(subject, AUDIENCE)).await,
        700211,
        "issuer",
        issuer.issuer(),
    );
    let fic = env
        .arm(
            Method::PUT,
            &format!("{identity_id}/federatedIdentityCredentials/wire?api-version={MSI_API}"),
            &token,
            Some(json!({"properties": {"issuer": issuer.issuer(), "subject": subject, "audiences": [AUDIENCE]}})),
        )
        .await;
    assert_eq!(fic.status, StatusCode::CREATED);
    let other = "system:serviceaccount:payments:other";
    expect(
        &exchange(sa(other, AUDIENCE)).await,
        700213,
        "subject",
        other,
    );
    expect(
        &exchange(sa(subject, "api://Other")).await,
        700212,
        "audience",
        "api://Other",
    );
    assert_eq!(exchange(sa(subject, AUDIENCE)).await.status, StatusCode::OK);
}

/// Names of the role assignments a list answers.
async fn listed(env: &Env, token: &str, url: &str) -> Vec<String> {
    let r = env.arm(Method::GET, url, token, None).await;
    r.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Point 8. ARM deletes a scope's role assignments with it; a role assignment DELETE at a scope
/// that is gone is refused with ARM's 403 ("… or the scope is invalid"), the answer lapse's
/// revocation recognises. Source: ARM's AuthorizationFailed message (as the simulator already
/// serves it) and the brief; the 403 for a deleted scope is not verified against a live tenant.
#[tokio::test]
async fn a_deleted_scope_takes_its_role_assignments_and_refuses_their_delete() {
    let env = Env::sandbox().await;
    let token = env.operator_token().await;
    let caller = env.sim.operator_credentials().unwrap().object_id;
    let (identity_id, principal, _) = env.sim.identity("backup-runner").unwrap();
    let (sub, rg, account) = (
        format!("/subscriptions/{}", env.sub()),
        env.rg_scope(),
        env.account_scope(),
    );
    let mut names = BTreeMap::new();
    for scope in [&sub, &rg, &account] {
        let name = guid();
        let r = env
            .put_assignment(&token, scope, &name, &principal, READER, None)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        names.insert(scope.clone(), name);
    }
    let list_url = format!(
        "{sub}/providers/Microsoft.Authorization/roleAssignments?api-version={RA_API}&$filter=principalId+eq+'{principal}'"
    );
    let refused = |scope: &str, name: &str| {
        format!(
            "The client '{caller}' with object id '{caller}' does not have authorization to perform action 'Microsoft.Authorization/roleAssignments/delete' over scope '{scope}/providers/Microsoft.Authorization/roleAssignments/{name}' or the scope is invalid. If access was recently granted, please refresh your credentials."
        )
    };

    // The storage account goes (the simulator's handle).
    let gone = env.sim.delete_scope(&account).unwrap();
    assert_eq!((gone.resources, gone.role_assignments), (1, 1));
    let now = listed(&env, &token, &list_url).await;
    assert!(
        !now.contains(&names[&account]) && now.contains(&names[&rg]),
        "{now:?}"
    );
    let del = env
        .arm(
            Method::DELETE,
            &ra_url(&account, &names[&account]),
            &token,
            None,
        )
        .await;
    assert_eq!(
        (del.status, del.code()),
        (StatusCode::FORBIDDEN, "AuthorizationFailed")
    );
    assert_eq!(
        del.body["error"]["message"],
        refused(&account, &names[&account]).as_str()
    );
    let read = env
        .arm(
            Method::GET,
            &format!("{account}?api-version=2023-05-01"),
            &token,
            None,
        )
        .await;
    assert_eq!(read.code(), "ResourceNotFound");

    // The resource group goes, through the admin endpoint, with its identities.
    let admin = env
        .http
        .delete(format!("{}/admin/scopes{rg}", env.sim.url()))
        .send()
        .await
        .unwrap();
    let admin = to_resp(admin).await;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.body);
    assert_eq!(admin.body["deleted"]["roleAssignments"], 1);
    assert!(
        admin.body["deleted"]["identities"].as_u64() >= Some(2),
        "{}",
        admin.body
    );
    assert_eq!(
        listed(&env, &token, &list_url).await,
        vec![names[&sub].clone()]
    );
    let del = env
        .arm(Method::DELETE, &ra_url(&rg, &names[&rg]), &token, None)
        .await;
    assert_eq!(
        del.body["error"]["message"],
        refused(&rg, &names[&rg]).as_str()
    );
    let identity = env
        .arm(
            Method::GET,
            &format!("{identity_id}?api-version={MSI_API}"),
            &token,
            None,
        )
        .await;
    assert_eq!(identity.code(), "ResourceGroupNotFound");
    assert!(env.sim.identity("backup-runner").is_none());

    // What survives is untouched; deleting a scope twice, or a subscription, is refused.
    let del = env
        .arm(Method::DELETE, &ra_url(&sub, &names[&sub]), &token, None)
        .await;
    assert_eq!(del.status, StatusCode::OK);
    assert!(env.sim.delete_scope(&rg).is_err());
    assert!(env.sim.delete_scope(&sub).is_err());
    let again = env
        .http
        .delete(format!("{}/admin/scopes{rg}", env.sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}
