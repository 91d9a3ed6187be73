//! Management locks (`Microsoft.Authorization/locks`, 2016-09-01): CRUD at any scope, listing
//! with inheritance, and ARM's answer to a write or delete under a lock. Sources: the vendored
//! `locks.json` swagger (schemas), Microsoft Learn "Lock your resources to protect your
//! infrastructure" (levels, inheritance, `ScopeLocked`), and the message Azure answers a role
//! assignment DELETE under a `CanNotDelete` lock with (MicrosoftDocs/azure-docs#110791).

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;
use crate::contract::{Docs, specs_root, validate};

const LOCKS_SWAGGER: &str =
    "specification/resources/resource-manager/Microsoft.Authorization/stable/2016-09-01/locks.json";
const LOCK_API: &str = "2016-09-01";

fn lock_url(scope: &str, name: &str) -> String {
    format!("{scope}/providers/Microsoft.Authorization/locks/{name}?api-version={LOCK_API}")
}

fn list_url(scope: &str, filter: Option<&str>) -> String {
    let mut url = format!("{scope}/providers/Microsoft.Authorization/locks?api-version={LOCK_API}");
    if let Some(f) = filter {
        url.push_str("&$filter=");
        url.push_str(f);
    }
    url
}

fn schema_errors(definition: &str, body: &Value) -> Vec<String> {
    let mut docs = Docs(BTreeMap::new());
    let mut errors = Vec::new();
    validate(
        &mut docs,
        &specs_root().join(LOCKS_SWAGGER),
        &json!({ "$ref": definition }),
        body,
        "$",
        &mut errors,
    );
    errors
}

fn names(list: &Value) -> Vec<String> {
    list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn put_lock(env: &Env, token: &str, scope: &str, name: &str, level: &str) -> Resp {
    env.arm(
        Method::PUT,
        &lock_url(scope, name),
        token,
        Some(
            json!({"properties": {"level": level, "notes": "kept by ops",
            "owners": [{"applicationId": "00000000-0000-4000-8000-000000000abc"}]}}),
        ),
    )
    .await
}

#[tokio::test]
async fn locks_are_written_read_listed_with_inheritance_and_deleted() {
    let env = Env::sandbox().await;
    let token = env.operator_token().await;
    let (sub, rg, account) = (
        format!("/subscriptions/{}", env.sub()),
        env.rg_scope(),
        env.account_scope(),
    );

    let created = put_lock(&env, &token, &rg, "rg-no-delete", "CanNotDelete").await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        created.body,
        json!({"properties": {"level": "CanNotDelete", "notes": "kept by ops",
                "owners": [{"applicationId": "00000000-0000-4000-8000-000000000abc"}]},
            "id": format!("{rg}/providers/Microsoft.Authorization/locks/rg-no-delete"),
            "type": "Microsoft.Authorization/locks", "name": "rg-no-delete"})
    );
    assert_eq!(
        schema_errors("#/definitions/ManagementLockObject", &created.body),
        Vec::<String>::new()
    );
    let replaced = put_lock(&env, &token, &rg, "rg-no-delete", "CanNotDelete").await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    let got = env
        .arm(Method::GET, &lock_url(&rg, "rg-no-delete"), &token, None)
        .await;
    assert_eq!((got.status, &got.body), (StatusCode::OK, &created.body));
    assert_eq!(
        put_lock(&env, &token, &sub, "sub-read-only", "ReadOnly")
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        put_lock(&env, &token, &account, "account-lock", "CanNotDelete")
            .await
            .status,
        StatusCode::CREATED
    );

    // atScope(): the locks that apply at the scope, i.e. at it and above it.
    let at_rg = env
        .arm(Method::GET, &list_url(&rg, Some("atScope()")), &token, None)
        .await;
    assert_eq!(at_rg.status, StatusCode::OK, "{}", at_rg.body);
    assert_eq!(
        schema_errors("#/definitions/ManagementLockListResult", &at_rg.body),
        Vec::<String>::new()
    );
    assert_eq!(names(&at_rg.body), ["sub-read-only", "rg-no-delete"]);
    let at_account = env
        .arm(
            Method::GET,
            &list_url(&account, Some("atScope()")),
            &token,
            None,
        )
        .await;
    assert_eq!(
        names(&at_account.body),
        ["sub-read-only", "rg-no-delete", "account-lock"]
    );
    // No filter: also the locks below the scope.
    let all_rg = env
        .arm(Method::GET, &list_url(&rg, None), &token, None)
        .await;
    assert_eq!(
        names(&all_rg.body),
        ["sub-read-only", "rg-no-delete", "account-lock"]
    );
    let at_sub = env
        .arm(
            Method::GET,
            &list_url(&sub, Some("atScope()")),
            &token,
            None,
        )
        .await;
    assert_eq!(names(&at_sub.body), ["sub-read-only"]);
    let bad_filter = env
        .arm(
            Method::GET,
            &list_url(&rg, Some("name eq 'x'")),
            &token,
            None,
        )
        .await;
    assert_eq!(
        bad_filter.status,
        StatusCode::BAD_REQUEST,
        "{}",
        bad_filter.body
    );

    // Only CanNotDelete and ReadOnly are accepted; a scope that does not exist is ARM's 404.
    let not_specified = put_lock(&env, &token, &rg, "x", "NotSpecified").await;
    assert_eq!(
        not_specified.status,
        StatusCode::BAD_REQUEST,
        "{}",
        not_specified.body
    );
    let missing_rg = put_lock(
        &env,
        &token,
        &format!("{sub}/resourceGroups/nope"),
        "x",
        "CanNotDelete",
    )
    .await;
    assert_eq!(
        (missing_rg.status, missing_rg.code()),
        (StatusCode::NOT_FOUND, "ResourceGroupNotFound")
    );

    // Locks do not lock lock operations: the ReadOnly subscription lock can be deleted.
    for (scope, name) in [
        (&sub, "sub-read-only"),
        (&rg, "rg-no-delete"),
        (&account, "account-lock"),
    ] {
        let deleted = env
            .arm(Method::DELETE, &lock_url(scope, name), &token, None)
            .await;
        assert_eq!(deleted.status, StatusCode::OK, "{name}: {}", deleted.body);
        let again = env
            .arm(Method::DELETE, &lock_url(scope, name), &token, None)
            .await;
        assert_eq!(again.status, StatusCode::NO_CONTENT);
    }
    let gone = env
        .arm(Method::GET, &lock_url(&rg, "rg-no-delete"), &token, None)
        .await;
    assert_eq!(
        (gone.status, gone.code()),
        (StatusCode::NOT_FOUND, "LockNotFound")
    );
}

#[tokio::test]
async fn a_role_assignment_under_a_can_not_delete_lock_is_created_but_not_deleted() {
    let env = Env::sandbox().await;
    let token = env.operator_token().await;
    let (rg, account) = (env.rg_scope(), env.account_scope());
    let (_, principal, _) = env.sim.identity("backup-runner").unwrap();
    assert_eq!(
        put_lock(&env, &token, &rg, "no-delete", "CanNotDelete")
            .await
            .status,
        StatusCode::CREATED
    );
    let name = guid();
    let created = env
        .put_assignment(&token, &account, &name, &principal, READER, None)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let url = format!(
        "{account}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version={RA_API}"
    );
    let refused = env.arm(Method::DELETE, &url, &token, None).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "ScopeLocked"),
        "{}",
        refused.body
    );
    assert_eq!(
        refused.body["error"]["message"],
        format!(
            "The scope '{account}/providers/Microsoft.Authorization/roleAssignments/{name}' cannot perform delete operation because following scope(s) are locked: '{rg}'. Please remove the lock and try again."
        )
    );
    let mut docs = Docs(BTreeMap::new());
    let mut errors = Vec::new();
    validate(
        &mut docs,
        &specs_root().join(LOCKS_SWAGGER),
        &json!({"$ref": "../../../../../common-types/resource-management/v2/types.json#/definitions/ErrorResponse"}),
        &refused.body,
        "$",
        &mut errors,
    );
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(
        env.sim
            .role_assignments()
            .iter()
            .filter(|a| a.name == name)
            .count(),
        1
    );
    // A DELETE of an assignment that is not there is refused too: the lock is checked first.
    let absent = format!(
        "{account}/providers/Microsoft.Authorization/roleAssignments/{}?api-version={RA_API}",
        guid()
    );
    assert_eq!(
        env.arm(Method::DELETE, &absent, &token, None).await.code(),
        "ScopeLocked"
    );
    // The lock is removed: the delete goes through.
    env.arm(Method::DELETE, &lock_url(&rg, "no-delete"), &token, None)
        .await;
    let deleted = env.arm(Method::DELETE, &url, &token, None).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
}

#[tokio::test]
async fn a_read_only_lock_refuses_writes_too() {
    let env = Env::sandbox().await;
    let token = env.operator_token().await;
    let rg = env.rg_scope();
    let (_, principal, _) = env.sim.identity("backup-runner").unwrap();
    put_lock(&env, &token, &rg, "read-only", "ReadOnly").await;
    let name = guid();
    let refused = env
        .put_assignment(&token, &rg, &name, &principal, READER, None)
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "ScopeLocked"),
        "{}",
        refused.body
    );
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot perform write operation because following scope(s) are locked"),
        "{}",
        refused.body
    );
    assert!(env.sim.role_assignments().iter().all(|a| a.name != name));
}

#[tokio::test]
async fn a_fic_under_a_lock_on_its_identity_cannot_be_deleted() {
    let env = Env::sandbox().await;
    let token = env.operator_token().await;
    let (identity_id, _, _) = env.sim.identity("backup-runner").unwrap();
    let fic =
        format!("{identity_id}/federatedIdentityCredentials/locked-fic?api-version={MSI_API}");
    let body = json!({"properties": {"issuer": "https://issuer.example", "subject": "s",
        "audiences": ["api://AzureADTokenExchange"]}});
    assert_eq!(
        put_lock(&env, &token, &identity_id, "identity-lock", "CanNotDelete")
            .await
            .status,
        StatusCode::CREATED
    );
    let created = env.arm(Method::PUT, &fic, &token, Some(body.clone())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let refused = env.arm(Method::DELETE, &fic, &token, None).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "ScopeLocked"),
        "{}",
        refused.body
    );
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("locked: '{identity_id}'")),
        "{}",
        refused.body
    );
    // ReadOnly also refuses the write.
    put_lock(&env, &token, &identity_id, "identity-lock", "ReadOnly").await;
    let rewrite = env.arm(Method::PUT, &fic, &token, Some(body)).await;
    assert_eq!(rewrite.code(), "ScopeLocked", "{}", rewrite.body);
    env.arm(
        Method::DELETE,
        &lock_url(&identity_id, "identity-lock"),
        &token,
        None,
    )
    .await;
    let deleted = env.arm(Method::DELETE, &fic, &token, None).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
}
