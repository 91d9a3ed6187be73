//! Azure's own logs of what the simulator served: the ARM Activity Log
//! (`Microsoft.Insights/eventtypes/management/values`, 2015-04-01; the vendored
//! `activityLogs_API.json` and its example are the shape) and Entra's sign-in log (Graph
//! `beta/auditLogs/signIns`, shapes from Microsoft's Graph docs as noted in docs/sim-azure.md):
//! writes, deletes and actions are logged, reads are not; every token issued is a sign-in;
//! both appear after the configured ingestion delay.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use lapse_sim_azure::{Config, Seed, SeedPrincipal};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;
use crate::contract::{Docs, specs_root, validate};

const ACTIVITY_API: &str = "2015-04-01";
const ACTIVITY_SWAGGER: &str = "specification/monitor/resource-manager/Microsoft.Insights/stable/2015-04-01/activityLogs_API.json";
const GRAPH: &str = "https://graph.microsoft.com/.default";
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";

fn activity_url(sub: &str, from: &str, extra: &str) -> String {
    let filter = format!("eventTimestamp ge '{from}'{extra}");
    let filter: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
    format!(
        "/subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values?api-version={ACTIVITY_API}&$filter={filter}"
    )
}

async fn env_with_log_reader(delay: Duration) -> Env {
    let mut seed = Seed::sandbox_default();
    seed.principals.push(SeedPrincipal {
        display_name: "log-reader".to_owned(),
        client_secret: Some("log-reader-secret".to_owned()),
        graph_roles: vec!["AuditLog.Read.All".to_owned()],
        ..SeedPrincipal::default()
    });
    Env::start(
        Config {
            log_ingestion_delay: delay,
            ..Config::default()
        },
        seed,
    )
    .await
}

pub(crate) async fn graph_token(env: &Env, principal: &str) -> String {
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

#[tokio::test]
async fn writes_and_deletes_are_in_the_activity_log_and_reads_are_not() {
    let env = env_with_log_reader(Duration::ZERO).await;
    let token = env.operator_token().await;
    let from = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let principal = env.sim.credentials("log-reader").unwrap().object_id;
    let name = guid();
    let put = env
        .put_assignment(
            &token,
            &env.account_scope(),
            &name,
            &principal,
            READER,
            Some("ServicePrincipal"),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    let ra = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{name}",
        env.account_scope()
    );
    let got = env
        .arm(
            Method::GET,
            &format!("{ra}?api-version=2022-04-01"),
            &token,
            None,
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    let del = env
        .arm(
            Method::DELETE,
            &format!("{ra}?api-version=2022-04-01"),
            &token,
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::OK, "{}", del.body);

    let list = env
        .arm(
            Method::GET,
            &activity_url(&env.sub(), &from, ""),
            &token,
            None,
        )
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let events = list.body["value"].as_array().unwrap();
    let ops: Vec<&str> = events
        .iter()
        .map(|e| e["operationName"]["value"].as_str().unwrap())
        .collect();
    // Newest first; the GET is not logged.
    assert_eq!(
        ops,
        [
            "Microsoft.Authorization/roleAssignments/delete",
            "Microsoft.Authorization/roleAssignments/write"
        ]
    );
    let mut errors = Vec::new();
    validate(
        &mut Docs(std::collections::BTreeMap::new()),
        &specs_root().join(ACTIVITY_SWAGGER),
        &json!({"$ref": "#/definitions/EventDataCollection"}),
        &list.body,
        "$",
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:#?}");
    let write = &events[1];
    let operator = env.sim.operator_credentials().unwrap().object_id;
    assert_eq!(write["caller"], json!(operator));
    assert_eq!(write["status"]["value"], "Succeeded");
    assert_eq!(
        write["resourceId"].as_str().unwrap().to_lowercase(),
        ra.to_lowercase()
    );
    assert_eq!(write["subscriptionId"], json!(env.sub()));
    assert_eq!(write["resourceGroupName"], "lapse-demo-rg");
    // The request body names the grantee, as Azure logs it for role assignment writes.
    let body: Value =
        serde_json::from_str(write["properties"]["requestbody"].as_str().unwrap()).unwrap();
    assert_eq!(body["properties"]["principalId"], json!(principal));
    for field in [
        "eventDataId",
        "eventTimestamp",
        "submissionTimestamp",
        "correlationId",
        "level",
        "claims",
        "httpRequest",
        "authorization",
    ] {
        assert!(!write[field].is_null(), "{field} missing: {write}");
    }
    // A refused write is logged as Failed; a filter by caller narrows it.
    let refused = env
        .arm(
            Method::PUT,
            &format!("{}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01", env.account_scope(), guid()),
            &token,
            Some(json!({"properties": {"roleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/00000000-0000-0000-0000-000000000bad", "principalId": principal}})),
        )
        .await;
    assert!(refused.status.is_client_error());
    let by_caller = env
        .arm(
            Method::GET,
            &activity_url(&env.sub(), &from, &format!(" and caller eq '{operator}'")),
            &token,
            None,
        )
        .await;
    let first = &by_caller.body["value"][0];
    assert_eq!(first["status"]["value"], "Failed");
    // A start time is required, as in Azure.
    let no_start = env
        .arm(
            Method::GET,
            &format!("/subscriptions/{}/providers/Microsoft.Insights/eventtypes/management/values?api-version={ACTIVITY_API}", env.sub()),
            &token,
            None,
        )
        .await;
    assert_eq!(no_start.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_logs_lag_by_the_ingestion_delay() {
    let env = env_with_log_reader(Duration::from_secs(2)).await;
    let token = env.operator_token().await;
    let from = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let lock = format!(
        "{}/providers/Microsoft.Authorization/locks/l?api-version=2016-09-01",
        env.rg_scope()
    );
    let put = env
        .arm(
            Method::PUT,
            &lock,
            &token,
            Some(json!({"properties": {"level": "CanNotDelete"}})),
        )
        .await;
    assert!(put.status.is_success(), "{}", put.body);
    let url = activity_url(&env.sub(), &from, "");
    let now = env.arm(Method::GET, &url, &token, None).await;
    assert_eq!(
        now.body["value"].as_array().unwrap().len(),
        0,
        "{}",
        now.body
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let later = env.arm(Method::GET, &url, &token, None).await;
    let events = later.body["value"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{}", later.body);
    assert_eq!(
        events[0]["operationName"]["value"],
        "Microsoft.Authorization/locks/write"
    );
}

#[tokio::test]
async fn every_token_is_a_workload_sign_in() {
    let env = env_with_log_reader(Duration::ZERO).await;
    let from = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let _ = env.operator_token().await;
    let token = graph_token(&env, "log-reader").await;
    let filter = |kind: &str| {
        let f = format!("signInEventTypes/any(t: t eq '{kind}') and createdDateTime ge {from}");
        let f: String = url::form_urlencoded::byte_serialize(f.as_bytes()).collect();
        format!("{}/beta/auditLogs/signIns?$filter={f}", env.sim.url())
    };
    let get = |url: String| {
        let http = env.http.clone();
        let token = token.clone();
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            to_resp(r).await
        }
    };
    let sp = get(filter("servicePrincipal")).await;
    assert_eq!(sp.status, StatusCode::OK, "{}", sp.body);
    let items = sp.body["value"].as_array().unwrap();
    // The operator's ARM token and the reader's Graph token, newest first.
    assert_eq!(items.len(), 2, "{}", sp.body);
    let operator = env.sim.operator_credentials().unwrap();
    assert_eq!(items[1]["servicePrincipalId"], json!(operator.object_id));
    assert_eq!(items[1]["appId"], json!(operator.client_id));
    assert_eq!(items[1]["clientCredentialType"], "clientSecret");
    assert_eq!(items[1]["signInEventTypes"], json!(["servicePrincipal"]));
    assert!(items[1]["federatedCredentialId"].is_null());
    // No managed identity signed in.
    let mi = get(filter("managedIdentity")).await;
    assert_eq!(mi.body["value"].as_array().unwrap().len(), 0);
    // The unquoted DateTimeOffset literal is a filter, not ignored: none from a minute on.
    let later =
        (Utc::now() + chrono::TimeDelta::minutes(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let f =
        format!("signInEventTypes/any(t: t eq 'servicePrincipal') and createdDateTime ge {later}");
    let f: String = url::form_urlencoded::byte_serialize(f.as_bytes()).collect();
    let none = get(format!(
        "{}/beta/auditLogs/signIns?$filter={f}",
        env.sim.url()
    ))
    .await;
    assert_eq!(
        none.body["value"].as_array().unwrap().len(),
        0,
        "{}",
        none.body
    );
    // Without AuditLog.Read.All: refused.
    let c = env.sim.operator_credentials().unwrap();
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
    let unprivileged = r.body["access_token"].as_str().unwrap().to_owned();
    let r = env
        .http
        .get(filter("servicePrincipal"))
        .bearer_auth(unprivileged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

/// Synthetic events (set through the admin endpoint) are served with the real ones, newest
/// first across pages, deterministic, within the time filter, and only for their subscription.
#[tokio::test]
async fn synthetic_events_page_with_the_real_ones() {
    const COUNT: u64 = 2500;
    let env = env_with_log_reader(Duration::ZERO).await;
    let token = env.operator_token().await;
    let start = Utc::now() - chrono::TimeDelta::hours(1);
    let from = start.to_rfc3339_opts(SecondsFormat::Secs, true);
    let principal = env.sim.credentials("log-reader").unwrap().object_id;
    let put = env
        .put_assignment(
            &token,
            &env.account_scope(),
            &guid(),
            &principal,
            READER,
            Some("ServicePrincipal"),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    let set = env
        .http
        .put(format!("{}/admin/logs", env.sim.url()))
        .json(&json!({"syntheticEvents": {
            "subscription": env.sub().to_uppercase(),
            "count": COUNT,
            "from": start + chrono::TimeDelta::minutes(10),
            "to": start + chrono::TimeDelta::minutes(50),
        }}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::NO_CONTENT);

    let page_through = |url: String| {
        let env = &env;
        let token = token.clone();
        async move {
            let mut events: Vec<Value> = Vec::new();
            let mut pages = 0;
            let mut next = Some(format!("{}{url}", env.sim.url()));
            while let Some(url) = next {
                let r = to_resp(env.http.get(&url).bearer_auth(&token).send().await.unwrap()).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.body);
                events.extend(r.body["value"].as_array().unwrap().iter().cloned());
                next = r.body["nextLink"].as_str().map(str::to_owned);
                pages += 1;
            }
            (events, pages)
        }
    };
    let (events, pages) = page_through(activity_url(&env.sub(), &from, "")).await;
    assert_eq!(events.len() as u64, COUNT + 1);
    assert_eq!(pages, 3);
    // The real write is the newest; then the synthetic ones, newest first, each once.
    assert_eq!(
        events[0]["operationName"]["value"],
        "Microsoft.Authorization/roleAssignments/write"
    );
    let times: Vec<&str> = events
        .iter()
        .map(|e| e["eventTimestamp"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "not newest first");
    let ids: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|e| e["eventDataId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), events.len());
    let synthetic = &events[1];
    assert_eq!(
        synthetic["operationName"]["value"],
        "Microsoft.Compute/virtualMachines/write"
    );
    assert_eq!(synthetic["status"]["value"], "Succeeded");
    assert_ne!(synthetic["caller"], json!(principal));
    // The same events on a second read.
    let (again, _) = page_through(activity_url(&env.sub(), &from, "")).await;
    assert_eq!(again, events);
    // A time window: the first half of the synthetic range only.
    let half = (start + chrono::TimeDelta::minutes(30)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let (window, _) = page_through(activity_url(
        &env.sub(),
        &from,
        &format!(" and eventTimestamp le '{half}'"),
    ))
    .await;
    assert!(
        (window.len() as u64).abs_diff(COUNT / 2) <= 1,
        "{} in the first half",
        window.len()
    );
    // A caller filter matches none of them.
    let operator = env.sim.operator_credentials().unwrap().object_id;
    let (mine, _) = page_through(activity_url(
        &env.sub(),
        &from,
        &format!(" and caller eq '{operator}'"),
    ))
    .await;
    assert_eq!(mine.len(), 1);
    // Removed with a count of 0.
    env.sim
        .set_synthetic_events(lapse_sim_azure::SyntheticEvents {
            subscription: env.sub(),
            count: 0,
            from: start,
            to: start,
        });
    let (real, _) = page_through(activity_url(&env.sub(), &from, "")).await;
    assert_eq!(real.len(), 1);
}
