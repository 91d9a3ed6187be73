//! Role assignments and definitions: Azure's status codes and every documented error.

use std::time::Duration;

use lapse_sim_azure::{Config, PrincipalKind, Seed, SeedRoleAssignment};
use reqwest::{Method, StatusCode};

use crate::common::*;

#[tokio::test]
async fn put_get_list_delete_follow_arm_status_codes() {
    let env = Env::sandbox().await;
    let token = env.operator_token().await;
    let (_, principal, _) = env.sim.identity("backup-runner").unwrap();
    let scope = env.account_scope();
    let name = guid();

    let created = env
        .put_assignment(&token, &scope, &name, &principal, READER, None)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["name"], name.as_str());
    assert_eq!(
        created.body["properties"]["principalType"],
        "ServicePrincipal"
    );
    assert_eq!(created.body["properties"]["scope"], scope.as_str());
    assert_eq!(
        created.body["properties"]["roleDefinitionId"],
        format!(
            "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{READER}",
            env.sub()
        )
        .as_str()
    );
    let again = env
        .put_assignment(
            &token,
            &scope,
            &name,
            &principal,
            READER,
            Some("ServicePrincipal"),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);

    let path = format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version={RA_API}"
    );
    let got = env.arm(Method::GET, &path, &token, None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.body["id"],
        format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}").as_str()
    );

    // From the subscription, the unfiltered list sees assignments below; atScope() does not.
    let sub_list = format!(
        "/subscriptions/{}/providers/Microsoft.Authorization/roleAssignments?api-version={RA_API}",
        env.sub()
    );
    let all = env.arm(Method::GET, &sub_list, &token, None).await;
    assert!(
        all.body["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == name.as_str())
    );
    let at = env
        .arm(
            Method::GET,
            &format!("{sub_list}&$filter=atScope()"),
            &token,
            None,
        )
        .await;
    assert!(
        !at.body["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == name.as_str())
    );
    let by_principal = env
        .arm(
            Method::GET,
            &format!("{sub_list}&$filter=principalId%20eq%20'{principal}'"),
            &token,
            None,
        )
        .await;
    let values = by_principal.body["value"].as_array().unwrap();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0]["name"], name.as_str());

    let deleted = env.arm(Method::DELETE, &path, &token, None).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.body["name"], name.as_str());
    let gone = env.arm(Method::DELETE, &path, &token, None).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    assert!(gone.body.is_null());
    let missing = env.arm(Method::GET, &path, &token, None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "RoleAssignmentNotFound");
}

#[tokio::test]
async fn list_pages_with_next_link() {
    let config = Config {
        page_size: 2,
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    let token = env.operator_token().await;
    let (_, principal, _) = env.sim.identity("backup-runner").unwrap();
    let roles = [
        READER,
        "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    ];
    for role in roles {
        let r = env
            .put_assignment(
                &token,
                &env.account_scope(),
                &guid(),
                &principal,
                role,
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let mut url = format!(
        "{}{}/providers/Microsoft.Authorization/roleAssignments?api-version={RA_API}&$filter=principalId%20eq%20'{principal}'",
        env.sim.url(),
        env.account_scope()
    );
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let resp = to_resp(env.http.get(&url).bearer_auth(&token).send().await.unwrap()).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
        pages += 1;
        for a in resp.body["value"].as_array().unwrap() {
            seen.push(a["name"].as_str().unwrap().to_owned());
        }
        match resp.body["nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen.len(), 3);
}

#[tokio::test]
async fn documented_errors() {
    let config = Config {
        role_assignment_limit: 4,
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    let token = env.operator_token().await;
    let (_, principal, _) = env.sim.identity("backup-runner").unwrap();
    let (_, other, _) = env.sim.identity("report-agent").unwrap();
    let scope = env.rg_scope();

    let bad_name = env
        .put_assignment(&token, &scope, "not-a-guid", &principal, READER, None)
        .await;
    assert_eq!(
        (bad_name.status, bad_name.code()),
        (StatusCode::BAD_REQUEST, "InvalidRoleAssignmentId")
    );
    // ARM names the code in the body only.
    assert_eq!(bad_name.header("x-ms-error-code"), None);

    let name = guid();
    assert_eq!(
        env.put_assignment(&token, &scope, &name, &principal, READER, None)
            .await
            .status,
        StatusCode::CREATED
    );
    let dup = env
        .put_assignment(&token, &scope, &guid(), &principal, READER, None)
        .await;
    assert_eq!(
        (dup.status, dup.code()),
        (StatusCode::CONFLICT, "RoleAssignmentExists")
    );
    let moved = env
        .put_assignment(&token, &scope, &name, &other, READER, None)
        .await;
    assert_eq!(
        (moved.status, moved.code()),
        (StatusCode::BAD_REQUEST, "RoleAssignmentUpdateNotPermitted")
    );
    let rescoped = env
        .put_assignment(
            &token,
            &env.account_scope(),
            &name,
            &principal,
            READER,
            None,
        )
        .await;
    assert_eq!(rescoped.code(), "RoleAssignmentUpdateNotPermitted");

    let unmatched = env
        .put_assignment(&token, &scope, &guid(), &other, READER, Some("User"))
        .await;
    assert_eq!(
        (unmatched.status, unmatched.code()),
        (StatusCode::BAD_REQUEST, "UnmatchedPrincipalType")
    );

    let unknown = env
        .put_assignment(
            &token,
            &scope,
            &guid(),
            &guid(),
            READER,
            Some("ServicePrincipal"),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::BAD_REQUEST, "PrincipalNotFound")
    );

    let no_role = env
        .put_assignment(&token, &scope, &guid(), &principal, &guid(), None)
        .await;
    assert_eq!(no_role.code(), "RoleDefinitionDoesNotExist");

    let missing_rg = env
        .put_assignment(
            &token,
            &format!("/subscriptions/{}/resourceGroups/nope", env.sub()),
            &guid(),
            &principal,
            READER,
            None,
        )
        .await;
    assert_eq!(
        (missing_rg.status, missing_rg.code()),
        (StatusCode::NOT_FOUND, "ResourceGroupNotFound")
    );

    // The sandbox seed holds 2 assignments; the limit of 4 leaves room for one more.
    let ok = env
        .put_assignment(&token, &scope, &guid(), &other, READER, None)
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    let over = env
        .put_assignment(&token, &env.account_scope(), &guid(), &other, READER, None)
        .await;
    assert_eq!(
        (over.status, over.code()),
        (StatusCode::BAD_REQUEST, "RoleAssignmentLimitExceeded")
    );
    assert_eq!(Config::default().role_assignment_limit, 4000);
}

#[tokio::test]
async fn principal_not_found_during_replication_unless_type_given() {
    let config = Config {
        replication_window: Duration::from_secs(600),
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    let token = env.operator_token().await;
    let fresh = env
        .sim
        .create_principal("fresh-app", PrincipalKind::ServicePrincipal);
    let scope = env.rg_scope();
    let early = env
        .put_assignment(&token, &scope, &guid(), &fresh.object_id, READER, None)
        .await;
    assert_eq!(
        (early.status, early.code()),
        (StatusCode::BAD_REQUEST, "PrincipalNotFound")
    );
    let typed = env
        .put_assignment(
            &token,
            &scope,
            &guid(),
            &fresh.object_id,
            READER,
            Some("ServicePrincipal"),
        )
        .await;
    assert_eq!(typed.status, StatusCode::CREATED, "{}", typed.body);

    // Once replicated (window set to zero at runtime), the untyped PUT works.
    env.sim.faults().set_replication_window(Duration::ZERO);
    let other = env
        .sim
        .create_principal("later-app", PrincipalKind::ServicePrincipal);
    let late = env
        .put_assignment(&token, &scope, &guid(), &other.object_id, READER, None)
        .await;
    assert_eq!(late.status, StatusCode::CREATED, "{}", late.body);
}

#[tokio::test]
async fn callers_without_role_assignment_rights_get_403() {
    let env = Env::sandbox().await;
    let operator = env.operator_token().await;
    let (_, principal, _) = env.sim.identity("backup-runner").unwrap();
    let weak = env
        .sim
        .mint_access_token(&principal, "https://management.azure.com")
        .unwrap();
    let scope = env.rg_scope();
    let denied = env
        .put_assignment(&weak, &scope, &guid(), &principal, READER, None)
        .await;
    assert_eq!(
        (denied.status, denied.code()),
        (StatusCode::FORBIDDEN, "AuthorizationFailed")
    );
    assert!(
        denied.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Microsoft.Authorization/roleAssignments/write")
    );

    let name = guid();
    assert_eq!(
        env.put_assignment(&operator, &scope, &name, &principal, READER, None)
            .await
            .status,
        StatusCode::CREATED
    );
    let path = format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version={RA_API}"
    );
    let no_delete = env.arm(Method::DELETE, &path, &weak, None).await;
    assert_eq!(
        (no_delete.status, no_delete.code()),
        (StatusCode::FORBIDDEN, "AuthorizationFailed")
    );
    assert!(
        no_delete.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("roleAssignments/delete")
    );
    // Reader at the group lets the identity read the assignment, not delete it.
    assert_eq!(
        env.arm(Method::GET, &path, &weak, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn api_version_auth_and_request_id_headers() {
    let env = Env::sandbox().await;
    let token = env.operator_token().await;
    let base = format!(
        "/subscriptions/{}/providers/Microsoft.Authorization/roleAssignments",
        env.sub()
    );
    let bad = env
        .arm(
            Method::GET,
            &format!("{base}?api-version=2015-07-01"),
            &token,
            None,
        )
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "InvalidApiVersionParameter")
    );
    assert!(
        bad.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2022-04-01")
    );
    assert!(bad.header("x-ms-request-id").is_some());
    assert_eq!(bad.header("x-ms-error-code"), None);
    assert_eq!(bad.header("x-ms-failure-cause"), Some("gateway"));
    let missing = env.arm(Method::GET, &base, &token, None).await;
    assert_eq!(missing.code(), "MissingApiVersionParameter");

    let correlated = env
        .http
        .get(format!("{}{base}?api-version={RA_API}", env.sim.url()))
        .bearer_auth(&token)
        .header("x-ms-correlation-request-id", "corr-123")
        .send()
        .await
        .unwrap();
    assert_eq!(
        correlated.headers()["x-ms-correlation-request-id"],
        "corr-123"
    );

    let anonymous = to_resp(
        env.http
            .get(format!("{}{base}?api-version={RA_API}", env.sim.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (anonymous.status, anonymous.code()),
        (StatusCode::UNAUTHORIZED, "AuthenticationFailed")
    );
    let forged = env
        .arm(
            Method::GET,
            &format!("{base}?api-version={RA_API}"),
            "a.b.c",
            None,
        )
        .await;
    assert_eq!(forged.code(), "InvalidAuthenticationToken");
    let (_, principal, _) = env.sim.identity("backup-runner").unwrap();
    let graph_token = env
        .sim
        .mint_access_token(&principal, "https://graph.microsoft.com")
        .unwrap();
    let wrong_aud = env
        .arm(
            Method::GET,
            &format!("{base}?api-version={RA_API}"),
            &graph_token,
            None,
        )
        .await;
    assert_eq!(wrong_aud.code(), "InvalidAuthenticationTokenAudience");
}

#[tokio::test]
async fn role_definitions_get_and_filter_by_name() {
    let env = Env::sandbox().await;
    let token = env.operator_token().await;
    let scope = format!("/subscriptions/{}", env.sub());
    let list = env
        .arm(
            Method::GET,
            &format!("{scope}/providers/Microsoft.Authorization/roleDefinitions?api-version=2022-04-01&$filter=roleName%20eq%20'Storage%20Blob%20Data%20Reader'"),
            &token,
            None,
        )
        .await;
    let values = list.body["value"].as_array().unwrap();
    assert_eq!(values.len(), 1, "{}", list.body);
    assert_eq!(values[0]["name"], "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1");
    assert_eq!(values[0]["properties"]["type"], "BuiltInRole");
    assert_eq!(
        values[0]["properties"]["permissions"][0]["dataActions"][0],
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
    );
    let owner = env
        .arm(
            Method::GET,
            &format!("{scope}/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635?api-version=2022-04-01"),
            &token,
            None,
        )
        .await;
    assert_eq!(owner.body["properties"]["roleName"], "Owner");
    assert_eq!(
        owner.body["id"],
        format!("{scope}/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635").as_str()
    );
    let none = env
        .arm(Method::GET, &format!("{scope}/providers/Microsoft.Authorization/roleDefinitions/{}?api-version=2022-04-01", guid()), &token, None)
        .await;
    assert_eq!(
        (none.status, none.code()),
        (StatusCode::NOT_FOUND, "RoleDefinitionDoesNotExist")
    );
}

#[tokio::test]
async fn rbac_changes_wait_for_the_propagation_delay() {
    let config = Config {
        propagation_delay: Duration::from_secs(3600),
        ..Config::default()
    };
    let mut seed = Seed::sandbox_default();
    let standing = guid();
    seed.role_assignments.push(SeedRoleAssignment {
        principal: "report-agent".into(),
        role: "Reader".into(),
        scope: format!("/subscriptions/{}", seed.subscriptions[0].id),
        name: Some(standing.clone()),
    });
    let env = Env::start(config, seed).await;
    let operator = env.operator_token().await;
    let read = format!("{}?api-version=2023-05-01", env.account_scope());

    // A new assignment is not effective before the delay has passed.
    let (_, backup, _) = env.sim.identity("backup-runner").unwrap();
    let backup_token = env
        .sim
        .mint_access_token(&backup, "https://management.azure.com")
        .unwrap();
    let created = env
        .put_assignment(&operator, &env.rg_scope(), &guid(), &backup, READER, None)
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        env.arm(Method::GET, &read, &backup_token, None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // A deleted (long-standing) assignment keeps granting access until the delay has passed.
    let (_, report, _) = env.sim.identity("report-agent").unwrap();
    let report_token = env
        .sim
        .mint_access_token(&report, "https://management.azure.com")
        .unwrap();
    assert_eq!(
        env.arm(Method::GET, &read, &report_token, None)
            .await
            .status,
        StatusCode::OK
    );
    let path = format!(
        "/subscriptions/{}/providers/Microsoft.Authorization/roleAssignments/{standing}?api-version={RA_API}",
        env.sub()
    );
    assert_eq!(
        env.arm(Method::DELETE, &path, &operator, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        env.arm(Method::GET, &read, &report_token, None)
            .await
            .status,
        StatusCode::OK
    );

    // Once propagated (delay set to zero at runtime), both changes show.
    env.sim.faults().set_propagation_delay(Duration::ZERO);
    assert_eq!(
        env.arm(Method::GET, &read, &backup_token, None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        env.arm(Method::GET, &read, &report_token, None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}
