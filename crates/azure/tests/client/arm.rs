use std::time::Duration;

use lapse_api::arm::ArmId;
use lapse_azure::{AzureError, ErrorClass, FicRequest, RoleAssignmentRequest};
use serde_json::json;
use uuid::Uuid;

use crate::fake::{SUB, arm_error, client, reply};

const RG: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/payments-rg";
const MI: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/payments-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/backup";
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
const CONCURRENT: &str = "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity";

fn name() -> Uuid {
    Uuid::parse_str("05c5a614-a7d6-4502-b150-c2fb455033ff").unwrap()
}

fn principal() -> Uuid {
    Uuid::parse_str("ce2ce14e-85d7-4629-bdbc-454d0519d987").unwrap()
}

fn request(condition: Option<&str>) -> RoleAssignmentRequest {
    RoleAssignmentRequest {
        scope: RG.to_owned(),
        name: name(),
        role_definition_id: format!(
            "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{READER}"
        ),
        principal_id: principal(),
        description: Some("lapse:dev payments/backup until 2026-12-01T04:00:00Z".into()),
        condition: condition.map(str::to_owned),
    }
}

fn assignment_body() -> String {
    json!({
        "id": format!("{RG}/providers/Microsoft.Authorization/roleAssignments/{}", name()),
        "name": name(),
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{READER}"),
            "principalId": principal(),
            "principalType": "ServicePrincipal",
            "scope": RG,
            "description": "lapse:dev payments/backup until 2026-12-01T04:00:00Z"
        }
    })
    .to_string()
}

#[tokio::test]
async fn put_role_assignment_sends_principal_type_and_the_arm_shape() {
    let (client, fake) = client();
    fake.push(reply(201, &assignment_body()));
    let ra = client.put_role_assignment(&request(None)).await.unwrap();
    assert_eq!(ra.name, name());
    assert_eq!(ra.principal_id, principal());
    assert_eq!(ra.scope, RG);
    assert_eq!(
        ra.role_definition_guid(),
        Some(Uuid::parse_str(READER).unwrap())
    );

    let sent = fake.last();
    assert_eq!(sent.method, "PUT");
    assert_eq!(sent.url.host_str(), Some("arm.test"));
    assert_eq!(
        sent.url.path(),
        format!(
            "{RG}/providers/Microsoft.Authorization/roleAssignments/{}",
            name()
        )
    );
    assert_eq!(sent.query("api-version").as_deref(), Some("2022-04-01"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(
        sent.json(),
        json!({"properties": {
            "roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{READER}"),
            "principalId": principal(),
            "principalType": "ServicePrincipal",
            "description": "lapse:dev payments/backup until 2026-12-01T04:00:00Z"
        }})
    );
}

#[tokio::test]
async fn a_condition_goes_with_condition_version_2() {
    let (client, fake) = client();
    fake.push(reply(200, &assignment_body()));
    let cond = "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringEquals 'backups'";
    client
        .put_role_assignment(&request(Some(cond)))
        .await
        .unwrap();
    let props = fake.last().json()["properties"].clone();
    assert_eq!(props["condition"], cond);
    assert_eq!(props["conditionVersion"], "2.0");
    assert_eq!(props["principalType"], "ServicePrincipal");
}

#[tokio::test]
async fn get_role_assignment_is_none_on_404() {
    let (client, fake) = client();
    fake.push(reply(200, &assignment_body()));
    fake.push(reply(404, &arm_error("RoleAssignmentNotFound", "gone")));
    let found = client.get_role_assignment(RG, &name()).await.unwrap();
    assert_eq!(found.map(|r| r.name), Some(name()));
    assert_eq!(client.get_role_assignment(RG, &name()).await.unwrap(), None);
    assert_eq!(fake.last().method, "GET");
}

#[tokio::test]
async fn delete_role_assignment_tells_200_from_204() {
    let (client, fake) = client();
    fake.push(reply(200, &assignment_body()));
    fake.push(reply(204, ""));
    assert!(client.delete_role_assignment(RG, &name()).await.unwrap());
    assert!(!client.delete_role_assignment(RG, &name()).await.unwrap());
    let sent = fake.last();
    assert_eq!(sent.method, "DELETE");
    assert_eq!(sent.query("api-version").as_deref(), Some("2022-04-01"));
}

#[tokio::test]
async fn list_role_assignments_filters_by_principal_and_follows_next_link() {
    let (client, fake) = client();
    let page = |next: Option<&str>| {
        let mut v = json!({"value": [serde_json::from_str::<serde_json::Value>(&assignment_body()).unwrap()]});
        if let Some(n) = next {
            v["nextLink"] = json!(n);
        }
        v.to_string()
    };
    // ARM's link names the public host: the client must stay on the configured endpoint.
    fake.push(reply(200, &page(Some(&format!(
        "https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&$skiptoken=abc"
    )))));
    fake.push(reply(200, &page(None)));
    let all = client
        .list_role_assignments(SUB, Some(&principal()))
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let sent = fake.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].url.path(),
        format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments")
    );
    assert_eq!(
        sent[0].query("$filter"),
        Some(format!("principalId eq '{}'", principal()))
    );
    assert!(
        sent[0].url.as_str().contains("principalId%20eq"),
        "{}",
        sent[0].url
    );
    assert_eq!(sent[1].url.host_str(), Some("arm.test"));
    assert_eq!(sent[1].query("$skiptoken").as_deref(), Some("abc"));
}

fn role_definition(name: &str, guid: &str) -> serde_json::Value {
    json!({
        "id": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{guid}"),
        "name": guid,
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {"roleName": name, "type": "CustomRole", "description": "d", "assignableScopes": ["/"]}
    })
}

fn role_definitions(names: &[(&str, &str)]) -> String {
    let value: Vec<_> = names.iter().map(|(n, g)| role_definition(n, g)).collect();
    json!({ "value": value }).to_string()
}

#[tokio::test(start_paused = true)]
async fn role_definitions_resolve_case_insensitively_and_are_cached_by_name_and_guid() {
    let (client, fake) = client();
    let guid = "11111111-0000-0000-0000-00000000000a";
    fake.push(reply(
        200,
        &role_definitions(&[("Blob Backup Operator", guid)]),
    ));
    let def = client
        .role_definition_by_name(SUB, "blob backup operator")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(def.role_name, "Blob Backup Operator");
    assert_eq!(def.guid.to_string(), guid);
    let sent = fake.last();
    assert_eq!(
        sent.url.path(),
        format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions")
    );
    assert_eq!(
        sent.query("$filter").as_deref(),
        Some("roleName eq 'blob backup operator'")
    );
    // Another spelling, and the GUID, are answered from the cache.
    let again = client
        .role_definition_by_name(SUB, "Blob Backup OPERATOR ")
        .await
        .unwrap();
    assert_eq!(again, Some(def.clone()));
    let by_id = client.role_definition_by_id(SUB, &def.guid).await.unwrap();
    assert_eq!(by_id, Some(def));
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_lookups_of_one_role_cost_one_read() {
    let (client, fake) = client();
    fake.push(
        reply(
            200,
            &role_definitions(&[(
                "Blob Backup Operator",
                "11111111-0000-0000-0000-00000000000a",
            )]),
        )
        .delayed(Duration::from_millis(200)),
    );
    let lookups = (0..20).map(|_| client.role_definition_by_name(SUB, "Blob Backup Operator"));
    let results = futures::future::join_all(lookups).await;
    assert!(results.iter().all(|r| matches!(r, Ok(Some(_)))));
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_role_is_asked_again_after_a_minute() {
    let (client, fake) = client();
    let guid = Uuid::parse_str(READER).unwrap();
    fake.push(reply(
        404,
        &arm_error("RoleDefinitionDoesNotExist", "no such role"),
    ));
    assert_eq!(
        client.role_definition_by_id(SUB, &guid).await.unwrap(),
        None
    );
    assert_eq!(
        client.role_definition_by_id(SUB, &guid).await.unwrap(),
        None
    );
    assert_eq!(fake.requests().len(), 1);
    let sent = fake.last();
    assert_eq!(
        sent.url.path(),
        format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{READER}")
    );
    tokio::time::sleep(Duration::from_secs(61)).await;
    fake.push(reply(200, &role_definition("Reader", READER).to_string()));
    let found = client.role_definition_by_id(SUB, &guid).await.unwrap();
    assert_eq!(found.map(|d| d.role_name).as_deref(), Some("Reader"));
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn get_managed_identity_reads_its_ids() {
    let (client, fake) = client();
    fake.push(reply(
        200,
        &json!({
            "id": MI, "name": "backup", "location": "eastus",
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
            "properties": {
                "clientId": "4024ab25-56a8-4370-aea6-6389221caf29",
                "principalId": "25cc773c-7f05-40fc-a104-32d2300754ad",
                "tenantId": "b6c948ef-f6b5-4384-8354-da3a15eca969"
            }
        })
        .to_string(),
    ));
    fake.push(reply(404, &arm_error("ResourceNotFound", "not found")));
    let id = ArmId::parse(MI).unwrap();
    let mi = client.get_managed_identity(&id).await.unwrap().unwrap();
    assert_eq!(
        mi.principal_id.to_string(),
        "25cc773c-7f05-40fc-a104-32d2300754ad"
    );
    assert_eq!(
        mi.client_id.to_string(),
        "4024ab25-56a8-4370-aea6-6389221caf29"
    );
    let sent = fake.last();
    assert_eq!(sent.url.path(), MI);
    assert_eq!(sent.query("api-version").as_deref(), Some("2023-01-31"));
    assert_eq!(client.get_managed_identity(&id).await.unwrap(), None);
}

fn fic(name: &str) -> FicRequest {
    FicRequest {
        name: name.to_owned(),
        issuer: "https://oidc.example/cluster".into(),
        subject: "system:serviceaccount:payments:backup-runner".into(),
        audiences: vec!["api://AzureADTokenExchange".into()],
        description: Some("only for Graph".into()),
    }
}

fn fic_body(name: &str) -> String {
    json!({
        "id": format!("{MI}/federatedIdentityCredentials/{name}"),
        "name": name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
        "properties": {
            "issuer": "https://oidc.example/cluster",
            "subject": "system:serviceaccount:payments:backup-runner",
            "audiences": ["api://AzureADTokenExchange"]
        }
    })
    .to_string()
}

#[tokio::test]
async fn put_fic_sends_issuer_subject_audiences() {
    let (client, fake) = client();
    fake.push(reply(201, &fic_body("lapse-dev-abc")));
    let id = ArmId::parse(MI).unwrap();
    let created = client.put_fic(&id, &fic("lapse-dev-abc")).await.unwrap();
    assert!(created.matches(&fic("lapse-dev-abc")));
    let sent = fake.last();
    assert_eq!(sent.method, "PUT");
    assert_eq!(
        sent.url.path(),
        format!("{MI}/federatedIdentityCredentials/lapse-dev-abc")
    );
    assert_eq!(sent.query("api-version").as_deref(), Some("2023-01-31"));
    // ARM FICs have no description.
    assert_eq!(
        sent.json(),
        json!({"properties": {
            "issuer": "https://oidc.example/cluster",
            "subject": "system:serviceaccount:payments:backup-runner",
            "audiences": ["api://AzureADTokenExchange"]
        }})
    );
}

#[tokio::test]
async fn a_bad_fic_name_is_refused_before_sending() {
    let (client, fake) = client();
    let id = ArmId::parse(MI).unwrap();
    let err = client.put_fic(&id, &fic("-bad")).await.unwrap_err();
    assert!(matches!(err, AzureError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("-bad"), "{err}");
    assert!(fake.requests().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_concurrent_fic_write_409_is_retried_with_backoff() {
    let (client, fake) = client();
    let id = ArmId::parse(MI).unwrap();
    fake.push(reply(
        409,
        &arm_error(CONCURRENT, "Too many concurrent writes"),
    ));
    fake.push(reply(
        409,
        &arm_error(CONCURRENT, "Too many concurrent writes"),
    ));
    fake.push(reply(200, &fic_body("lapse-dev-abc")));
    let start = tokio::time::Instant::now();
    client.put_fic(&id, &fic("lapse-dev-abc")).await.unwrap();
    assert_eq!(fake.requests().len(), 3);
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn the_concurrent_fic_write_409_surfaces_as_retryable_after_a_few_tries() {
    let (client, fake) = client();
    let id = ArmId::parse(MI).unwrap();
    for _ in 0..5 {
        fake.push(reply(
            409,
            &arm_error(CONCURRENT, "Too many concurrent writes"),
        ));
    }
    let err = client.delete_fic(&id, "lapse-dev-abc").await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(err.code(), Some(CONCURRENT));
    assert_eq!(err.status(), Some(409));
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn fic_writes_to_one_identity_never_overlap() {
    let (client, fake) = client();
    let one = ArmId::parse(MI).unwrap();
    let other = ArmId::parse(&MI.replace("/backup", "/restore")).unwrap();
    for _ in 0..3 {
        fake.push(reply(200, &fic_body("lapse-dev-abc")).delayed(Duration::from_secs(1)));
    }
    let (aaa, ccc) = (fic("lapse-dev-aaa"), fic("lapse-dev-ccc"));
    let start = tokio::time::Instant::now();
    let (a, b, c) = tokio::join!(
        client.put_fic(&one, &aaa),
        client.delete_fic(&one, "lapse-dev-bbb"),
        client.put_fic(&other, &ccc),
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    let sent: Vec<_> = fake
        .requests()
        .into_iter()
        .map(|r| {
            (
                r.url.path().rsplit('/').next().unwrap().to_owned(),
                r.at - start,
            )
        })
        .collect();
    let at = |n: &str| sent.iter().find(|(name, _)| name == n).unwrap().1;
    assert_eq!(at("lapse-dev-aaa"), Duration::ZERO);
    assert_eq!(at("lapse-dev-ccc"), Duration::ZERO);
    assert_eq!(at("lapse-dev-bbb"), Duration::from_secs(1));
}

/// A create waiting for write budget must not hold the identity's lock: the revocation of
/// another credential on the same identity goes first.
#[tokio::test(start_paused = true)]
async fn a_fic_delete_is_not_stuck_behind_a_create_waiting_for_budget() {
    let mut cfg = crate::fake::config();
    cfg.limits.writes = lapse_azure::BucketConfig {
        capacity: 1,
        refill_per_second: 0.5,
    };
    let (client, fake) = crate::fake::client_with(cfg);
    let id = ArmId::parse(MI).unwrap();
    let (aaa, bbb) = (fic("lapse-dev-aaa"), fic("lapse-dev-bbb"));
    fake.push(reply(200, &fic_body("lapse-dev-aaa")));
    client.put_fic(&id, &aaa).await.unwrap();
    // Replies in expected arrival order: the delete, then the paced create.
    fake.push(reply(200, ""));
    fake.push(reply(200, &fic_body("lapse-dev-bbb")));
    let start = tokio::time::Instant::now();
    let create = client.put_fic(&id, &bbb);
    let delete = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        client.delete_fic(&id, "lapse-dev-ccc").await
    };
    let (created, deleted) = tokio::join!(create, delete);
    created.unwrap();
    assert!(deleted.unwrap());
    let sent: Vec<_> = fake
        .requests()
        .into_iter()
        .skip(1)
        .map(|r| (r.method, r.at - start))
        .collect();
    assert_eq!(
        sent,
        vec![
            ("DELETE".to_owned(), Duration::from_millis(10)),
            ("PUT".to_owned(), Duration::from_secs(2)),
        ]
    );
}

#[tokio::test]
async fn delete_fic_tells_200_from_204_and_list_fics_pages() {
    let (client, fake) = client();
    let id = ArmId::parse(MI).unwrap();
    fake.push(reply(200, ""));
    fake.push(reply(204, ""));
    assert!(client.delete_fic(&id, "lapse-dev-abc").await.unwrap());
    assert!(!client.delete_fic(&id, "lapse-dev-abc").await.unwrap());
    let item = serde_json::from_str::<serde_json::Value>(&fic_body("lapse-dev-abc")).unwrap();
    fake.push(reply(200, &json!({"value": [item.clone()], "nextLink": format!("https://arm.test{MI}/federatedIdentityCredentials?api-version=2023-01-31&$skipToken=X'12345'")}).to_string()));
    fake.push(reply(200, &json!({"value": [item]}).to_string()));
    let fics = client.list_fics(&id).await.unwrap();
    assert_eq!(fics.len(), 2);
    assert_eq!(fics[0].name, "lapse-dev-abc");
    let sent = fake.requests();
    assert_eq!(
        sent[2].url.path(),
        format!("{MI}/federatedIdentityCredentials")
    );
    assert_eq!(sent[3].query("$skipToken").as_deref(), Some("X'12345'"));
}

#[tokio::test]
async fn list_managed_identities_lists_a_subscription_across_pages() {
    let (client, fake) = client();
    let item = json!({
        "id": MI, "name": "backup", "location": "eastus",
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
        "properties": {
            "clientId": "4024ab25-56a8-4370-aea6-6389221caf29",
            "principalId": "25cc773c-7f05-40fc-a104-32d2300754ad",
            "tenantId": "b6c948ef-f6b5-4384-8354-da3a15eca969"
        }
    });
    let next = format!(
        "https://arm.test/subscriptions/{SUB}/providers/Microsoft.ManagedIdentity/userAssignedIdentities?api-version=2023-01-31&$skipToken=2"
    );
    fake.push(reply(
        200,
        &json!({"value": [item.clone()], "nextLink": next}).to_string(),
    ));
    fake.push(reply(200, &json!({"value": [item]}).to_string()));
    let list = client.list_managed_identities(SUB).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].id, MI);
    let sent = fake.requests();
    assert_eq!(
        sent[0].url.path(),
        format!("/subscriptions/{SUB}/providers/Microsoft.ManagedIdentity/userAssignedIdentities")
    );
    assert_eq!(sent[1].query("$skipToken").as_deref(), Some("2"));
    assert!(client.list_managed_identities("not a sub").await.is_err());
}

/// ARM's permissions answer (authorization 2022-04-01, `PermissionGetResult`): one entry per
/// role assignment of the caller at or above the scope.
fn permissions_page(entries: serde_json::Value, next: Option<&str>) -> String {
    let mut v = json!({ "value": entries });
    if let Some(n) = next {
        v["nextLink"] = json!(n);
    }
    v.to_string()
}

#[tokio::test]
async fn list_permissions_reads_the_callers_permissions_at_a_scope_across_pages() {
    let (client, fake) = client();
    // A Contributor-like entry first: it allows everything but Authorization writes.
    fake.push(reply(
        200,
        &permissions_page(
            json!([{
                "actions": ["*"],
                "notActions": ["Microsoft.Authorization/*/Write", "Microsoft.Authorization/*/Delete"],
                "dataActions": [],
                "notDataActions": []
            }]),
            Some(&format!(
                "https://management.azure.com{RG}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01&$skipToken=1"
            )),
        ),
    ));
    // Then Role Based Access Control Administrator (no data action fields at all).
    fake.push(reply(
        200,
        &permissions_page(
            json!([{
                "actions": ["Microsoft.Authorization/roleAssignments/write",
                            "Microsoft.Authorization/roleAssignments/delete", "*/read"],
                "notActions": []
            }]),
            None,
        ),
    ));
    let perms = client.list_permissions(RG).await.unwrap();
    assert_eq!(perms.len(), 2);
    assert_eq!(perms[0].not_actions.len(), 2);
    assert!(perms[1].data_actions.is_empty());

    let write = "Microsoft.Authorization/roleAssignments/write";
    // The first entry's notActions do not take away what the second allows.
    assert!(!perms[0].allows(write));
    assert!(perms[1].allows(write));
    assert!(lapse_azure::Permission::any_allows(&perms, write));
    assert!(lapse_azure::Permission::any_allows(
        &perms,
        "microsoft.managedidentity/userAssignedIdentities/federatedIdentityCredentials/write"
    ));
    assert!(!lapse_azure::Permission::any_allows(
        &perms[1..],
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write"
    ));

    let sent = fake.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].method, "GET");
    assert_eq!(
        sent[0].url.path(),
        format!("{RG}/providers/Microsoft.Authorization/permissions")
    );
    assert_eq!(sent[0].query("api-version").as_deref(), Some("2022-04-01"));
    // The next page stays on the configured endpoint.
    assert_eq!(sent[1].url.host_str(), Some("arm.test"));
    assert_eq!(sent[1].query("$skipToken").as_deref(), Some("1"));
}

#[tokio::test]
async fn list_permissions_at_a_resource_and_its_refusals_are_classified() {
    let (client, fake) = client();
    fake.push(reply(200, &permissions_page(json!([]), None)));
    assert!(client.list_permissions(MI).await.unwrap().is_empty());
    assert_eq!(
        fake.last().url.path(),
        format!("{MI}/providers/Microsoft.Authorization/permissions")
    );

    fake.push(reply(
        403,
        &arm_error(
            "AuthorizationFailed",
            "The client 'x' with object id 'x' does not have authorization to perform action 'Microsoft.Authorization/permissions/read' over scope 'y' or the scope is invalid.",
        ),
    ));
    let e = client.list_permissions(RG).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Terminal);
    assert_eq!(e.code(), Some("AuthorizationFailed"));
    assert_eq!(e.operation().as_str(), "list_permissions");
    assert!(
        e.to_string()
            .contains(&format!("permissions of the caller at {RG}")),
        "{e}"
    );

    fake.push(reply(
        404,
        &arm_error(
            "ResourceGroupNotFound",
            "Resource group 'payments-rg' could not be found.",
        ),
    ));
    let e = client.list_permissions(RG).await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert_eq!(e.code(), Some("ResourceGroupNotFound"));

    fake.push(reply(503, &arm_error("ServiceUnavailable", "try later")));
    let e = client.list_permissions(RG).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Retryable);

    // Not a scope: refused before anything is sent.
    let sent = fake.requests().len();
    let e = client
        .list_permissions(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts/x"
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, AzureError::Invalid { .. }), "{e:?}");
    assert!(client.list_permissions("not-an-id").await.is_err());
    assert_eq!(fake.requests().len(), sent);
}

#[tokio::test]
async fn every_exchange_is_counted_by_operation_and_outcome() {
    use lapse_azure::{CallCount, Operation, Outcome};
    let (client, fake) = client();
    fake.push(reply(201, &assignment_body()));
    fake.push(reply(404, ""));
    fake.push(reply(
        409,
        &arm_error(
            "RoleAssignmentExists",
            "The role assignment already exists.",
        ),
    ));
    fake.push(reply(500, &arm_error("InternalServerError", "boom")));
    client.put_role_assignment(&request(None)).await.unwrap();
    assert!(!client.delete_role_assignment(RG, &name()).await.unwrap());
    assert!(client.put_role_assignment(&request(None)).await.is_err());
    assert!(client.delete_role_assignment(RG, &name()).await.is_err());
    let count = |operation, outcome| CallCount {
        operation,
        outcome,
        count: 1,
    };
    assert_eq!(
        client.call_counts(),
        vec![
            count(Operation::DeleteRoleAssignment, Outcome::NotFound),
            count(Operation::DeleteRoleAssignment, Outcome::Retryable),
            count(Operation::PutRoleAssignment, Outcome::Ok),
            count(Operation::PutRoleAssignment, Outcome::Conflict),
        ]
    );
}

#[tokio::test]
async fn subscriptions_are_listed_across_pages() {
    let (client, fake) = client();
    let sub = |id: &str| {
        json!({
            "id": format!("/subscriptions/{id}"), "subscriptionId": id, "tenantId": "t",
            "displayName": "prod", "state": "Enabled", "authorizationSource": "RoleBased",
            "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "q", "spendingLimit": "Off"},
            "managedByTenants": []
        })
    };
    fake.push(reply(
        200,
        &json!({"value": [sub(SUB)], "nextLink": "https://arm.test/subscriptions?api-version=2022-12-01&$skiptoken=2"}).to_string(),
    ));
    fake.push(reply(200, &json!({"value": [sub("other")]}).to_string()));
    let subs = client.list_subscriptions().await.unwrap();
    assert_eq!(
        subs.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [SUB, "other"]
    );
    assert_eq!(subs[0].state.as_deref(), Some("Enabled"));
    let sent = fake.requests();
    assert_eq!(sent[0].url.path(), "/subscriptions");
    assert_eq!(sent[0].query("api-version").as_deref(), Some("2022-12-01"));
    assert_eq!(sent[1].query("$skiptoken").as_deref(), Some("2"));
}

/// ARM's locks answer (locks 2016-09-01, `ManagementLockListResult`) with `$filter=atScope()`:
/// the locks at the scope and above it.
#[tokio::test]
async fn list_locks_reads_the_locks_that_apply_at_a_scope_across_pages() {
    let (client, fake) = client();
    let sub_lock = format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/locks/sub-lock");
    let rg_lock = format!("{RG}/providers/Microsoft.Authorization/locks/no-delete");
    fake.push(reply(
        200,
        &json!({
            "value": [{"properties": {"level": "ReadOnly"}, "id": sub_lock,
                "type": "Microsoft.Authorization/locks", "name": "sub-lock"}],
            "nextLink": format!("https://management.azure.com{MI}/providers/Microsoft.Authorization/locks?api-version=2016-09-01&$filter=atScope()&$skipToken=1"),
        })
        .to_string(),
    ));
    fake.push(reply(
        200,
        &json!({"value": [{"properties": {"level": "CanNotDelete", "notes": "prod",
            "owners": [{"applicationId": "x"}]}, "id": rg_lock,
            "type": "Microsoft.Authorization/locks", "name": "no-delete"}]})
        .to_string(),
    ));
    let locks = client.list_locks(MI).await.unwrap();
    assert_eq!(
        locks,
        vec![
            lapse_api::lock::ManagementLock {
                id: sub_lock,
                name: "sub-lock".into(),
                level: lapse_api::lock::LockLevel::ReadOnly,
                notes: None,
            },
            lapse_api::lock::ManagementLock {
                id: rg_lock,
                name: "no-delete".into(),
                level: lapse_api::lock::LockLevel::CanNotDelete,
                notes: Some("prod".into()),
            },
        ]
    );
    let sent = fake.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].method, "GET");
    assert_eq!(
        sent[0].url.path(),
        format!("{MI}/providers/Microsoft.Authorization/locks")
    );
    assert_eq!(sent[0].query("api-version").as_deref(), Some("2016-09-01"));
    assert_eq!(sent[0].query("$filter").as_deref(), Some("atScope()"));
    assert_eq!(sent[1].url.host_str(), Some("arm.test"));
    assert_eq!(sent[1].query("$skipToken").as_deref(), Some("1"));
    let counted = client
        .call_counts()
        .into_iter()
        .find(|c| c.operation == lapse_azure::Operation::ListLocks)
        .map(|c| (c.outcome, c.count));
    assert_eq!(counted, Some((lapse_azure::Outcome::Ok, 2)));
    assert!(client.list_locks("not a scope").await.is_err());
}

/// A subscription's locks in one list (no filter): those on its resource groups and resources
/// too, as ARM's `ManagementLocks_ListAtSubscriptionLevel` answers.
#[tokio::test]
async fn list_subscription_locks_reads_every_lock_of_a_subscription() {
    let (client, fake) = client();
    let rg_lock = format!("{RG}/providers/Microsoft.Authorization/locks/no-delete");
    let mi_lock = format!("{MI}/providers/Microsoft.Authorization/locks/frozen");
    fake.push(reply(
        200,
        &json!({"value": [
            {"properties": {"level": "CanNotDelete"}, "id": rg_lock, "name": "no-delete"},
            {"properties": {"level": "ReadOnly"}, "id": mi_lock, "name": "frozen"},
        ]})
        .to_string(),
    ));
    let locks = client.list_subscription_locks(SUB).await.unwrap();
    let got: Vec<(&str, &str)> = locks
        .iter()
        .map(|l| (l.name.as_str(), l.level.as_str()))
        .collect();
    assert_eq!(got, [("no-delete", "CanNotDelete"), ("frozen", "ReadOnly")]);
    let sent = fake.requests();
    assert_eq!(
        sent[0].url.path(),
        format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/locks")
    );
    assert_eq!(sent[0].query("api-version").as_deref(), Some("2016-09-01"));
    assert_eq!(sent[0].query("$filter"), None);
    assert!(client.list_subscription_locks("not/a/sub").await.is_err());
}

/// A delete under a lock: ARM's 409 `ScopeLocked` is terminal for the request, and says which
/// scopes are locked.
#[tokio::test]
async fn a_delete_refused_by_a_lock_is_scope_locked_naming_the_locked_scope() {
    let (client, fake) = client();
    let id = format!(
        "{RG}/providers/Microsoft.Authorization/roleAssignments/{}",
        name()
    );
    fake.push(reply(
        409,
        &arm_error(
            "ScopeLocked",
            &format!("The scope '{id}' cannot perform delete operation because following scope(s) are locked: '{RG}'. Please remove the lock and try again."),
        ),
    ));
    let err = client
        .delete_role_assignment(RG, &name())
        .await
        .unwrap_err();
    assert!(err.is_scope_locked(), "{err}");
    assert_eq!(err.class(), ErrorClass::Terminal);
    assert_eq!(err.locked_scopes(), vec![RG.to_owned()]);
    let other = AzureError::Terminal {
        operation: lapse_azure::Operation::DeleteRoleAssignment,
        status: 409,
        code: "RoleAssignmentExists".into(),
        message: String::new(),
    };
    assert!(!other.is_scope_locked());
}
