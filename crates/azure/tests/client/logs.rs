//! Azure's logs a page at a time: request shapes, cursors re-rooted on the configured endpoint,
//! a cursor of one log refused by the other, and log reads queued behind everything else.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use lapse_azure::{ErrorClass, SignInKind};
use serde_json::json;
use uuid::Uuid;

use crate::fake::{SUB, client, client_with, config, reply};

fn event(n: u128) -> serde_json::Value {
    json!({
        "eventDataId": Uuid::from_u128(n),
        "eventTimestamp": "2026-03-01T10:00:00Z",
        "caller": Uuid::from_u128(7),
        "operationName": {"value": "Microsoft.Authorization/roleAssignments/write"},
        "resourceId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/{}", Uuid::from_u128(n)),
        "status": {"value": "Succeeded"},
    })
}

#[tokio::test]
async fn the_activity_log_is_read_a_page_at_a_time_with_an_opaque_cursor() {
    let (client, fake) = client();
    let from = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    fake.push(reply(
        200,
        &json!({
            "value": [event(1), event(2)],
            "nextLink": format!("https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values?api-version=2015-04-01&$skipToken=2"),
        })
        .to_string(),
    ));
    fake.push(reply(200, &json!({"value": [event(3)]}).to_string()));
    let first = client
        .activity_log_page(SUB, from, None, None)
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.items[0].id, Uuid::from_u128(1).to_string());
    let cursor = first.next.clone().expect("a second page");
    // Only one page was fetched.
    assert_eq!(fake.requests().len(), 1);
    let sent = fake.last();
    assert_eq!(
        sent.url.path(),
        format!("/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values")
    );
    assert_eq!(
        sent.query("$filter").as_deref(),
        Some("eventTimestamp ge '2026-03-01T00:00:00Z'")
    );
    let second = client
        .activity_log_page(SUB, from, None, Some(&cursor))
        .await
        .unwrap();
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.next, None);
    // The next link was followed on the configured endpoint, not the host it named.
    let sent = fake.last();
    assert_eq!(sent.url.host_str(), Some("arm.test"));
    assert_eq!(sent.query("$skipToken").as_deref(), Some("2"));
    // A cursor of the Activity Log is no cursor of the sign-in log (nor its token's audience).
    let err = client
        .sign_ins_page(SignInKind::ServicePrincipal, from, Some(&cursor))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Terminal);
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn sign_ins_are_read_a_page_at_a_time() {
    let (client, fake) = client();
    let from = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let signin = |n: u128| {
        json!({
            "id": Uuid::from_u128(n),
            "createdDateTime": "2026-03-01T10:00:00Z",
            "servicePrincipalId": Uuid::from_u128(9),
            "clientCredentialType": "federatedIdentityCredential",
            "federatedCredentialId": "lapse-abc",
        })
    };
    fake.push(reply(
        200,
        &json!({"value": [signin(1)], "@odata.nextLink": "https://graph.microsoft.com/beta/auditLogs/signIns?$top=1000&$skiptoken=1000"}).to_string(),
    ));
    fake.push(reply(200, &json!({"value": [signin(2)]}).to_string()));
    let first = client
        .sign_ins_page(SignInKind::ManagedIdentity, from, None)
        .await
        .unwrap();
    assert_eq!(
        first.items[0].federated_credential.as_deref(),
        Some("lapse-abc")
    );
    let sent = fake.last();
    assert_eq!(sent.url.path(), "/beta/auditLogs/signIns");
    assert_eq!(
        sent.query("$filter").as_deref(),
        Some(
            "signInEventTypes/any(t: t eq 'managedIdentity') and createdDateTime ge 2026-03-01T00:00:00Z"
        )
    );
    let second = client
        .sign_ins_page(SignInKind::ManagedIdentity, from, first.next.as_ref())
        .await
        .unwrap();
    assert_eq!(second.items[0].id, Uuid::from_u128(2).to_string());
    assert_eq!(second.next, None);
    let sent = fake.last();
    assert_eq!(sent.url.host_str(), Some("graph.test"));
    assert_eq!(sent.query("$skiptoken").as_deref(), Some("1000"));
}

/// With the one slot busy, a log read queued first is sent after a delete queued later.
#[tokio::test(start_paused = true)]
async fn a_log_read_waits_behind_a_later_delete_for_a_slot() {
    let mut cfg = config();
    cfg.limits.max_in_flight = 1;
    let (client, fake) = client_with(cfg);
    let rg = format!("/subscriptions/{SUB}/resourceGroups/rg");
    let assignment = json!({
        "id": format!("{rg}/providers/Microsoft.Authorization/roleAssignments/{}", Uuid::from_u128(3)),
        "name": Uuid::from_u128(3),
        "properties": {
            "roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{}", Uuid::from_u128(4)),
            "principalId": Uuid::from_u128(5),
            "scope": rg,
        },
    })
    .to_string();
    // In the order the requests should arrive: the busy read, the delete, the log read.
    fake.push(reply(200, &assignment).delayed(Duration::from_secs(1)));
    fake.push(reply(200, &assignment));
    fake.push(reply(200, &json!({"value": []}).to_string()));
    let busy = {
        let (c, rg) = (client.clone(), rg.clone());
        tokio::spawn(async move { c.get_role_assignment(&rg, &Uuid::from_u128(3)).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let log = {
        let c = client.clone();
        tokio::spawn(async move { c.activity_log_page(SUB, Utc::now(), None, None).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let delete = {
        let c = client.clone();
        tokio::spawn(async move { c.delete_role_assignment(&rg, &Uuid::from_u128(3)).await })
    };
    busy.await.unwrap().unwrap();
    delete.await.unwrap().unwrap();
    log.await.unwrap().unwrap();
    let order: Vec<_> = fake
        .requests()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.method,
                r.url.path().rsplit('/').next().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            format!("GET {}", Uuid::from_u128(3)),
            format!("DELETE {}", Uuid::from_u128(3)),
            "GET values".to_owned(),
        ]
    );
}
