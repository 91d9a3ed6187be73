use std::time::{Duration, SystemTime};

use lapse_azure::{AzureError, ErrorClass, Operation, RoleAssignmentRequest};
use uuid::Uuid;

use crate::fake::{SUB, arm_error, client, client_with, config, reply};

const RG: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/payments-rg";

fn request() -> RoleAssignmentRequest {
    RoleAssignmentRequest {
        scope: RG.to_owned(),
        name: Uuid::from_u128(42),
        role_definition_id: format!(
            "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"
        ),
        principal_id: Uuid::from_u128(7),
        description: Some("lapse:dev".into()),
        condition: None,
    }
}

async fn put_with(status: u16, body: &str) -> AzureError {
    let (client, fake) = client();
    fake.push(reply(status, body));
    client.put_role_assignment(&request()).await.unwrap_err()
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_seconds_is_throttled_and_pauses_that_budget() {
    let (client, fake) = client();
    fake.push(
        reply(
            429,
            &arm_error(
                "SubscriptionRequestsThrottled",
                "Number of write requests exceeded",
            ),
        )
        .header("retry-after", "7"),
    );
    let err = client.put_role_assignment(&request()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Throttled);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(err.code(), Some("SubscriptionRequestsThrottled"));
    assert_eq!(err.metric_label(), "throttled");
    assert_eq!(client.limiter_snapshot().writes.throttled_responses, 1);

    // Deletes have their own budget and go at once; the next write waits out the pause.
    let start = tokio::time::Instant::now();
    fake.push(reply(204, ""));
    client
        .delete_role_assignment(RG, &Uuid::from_u128(42))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    fake.push(reply(201, &assignment(42)));
    client.put_role_assignment(&request()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(7));
    let writes = client.limiter_snapshot().writes;
    assert_eq!(writes.throttle_waits, 1);
    assert!(
        (writes.throttle_wait_seconds - 7.0).abs() < 0.01,
        "{writes:?}"
    );
}

fn assignment(n: u128) -> String {
    serde_json::json!({
        "id": format!("{RG}/providers/Microsoft.Authorization/roleAssignments/{}", Uuid::from_u128(n)),
        "name": Uuid::from_u128(n),
        "properties": {
            "roleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
            "principalId": Uuid::from_u128(7),
            "principalType": "ServicePrincipal",
            "scope": RG
        }
    })
    .to_string()
}

#[tokio::test]
async fn a_429_with_an_http_date_is_throttled_until_then() {
    let (client, fake) = client();
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    fake.push(reply(429, "").header("retry-after", &at));
    let err = client
        .get_role_assignment(RG, &Uuid::from_u128(1))
        .await
        .unwrap_err();
    let secs = err.retry_after().unwrap().as_secs();
    assert!((118..=120).contains(&secs), "{secs}");
    assert_eq!(err.code(), Some("TooManyRequests"));
}

#[tokio::test]
async fn a_5xx_is_retryable_with_its_status() {
    let err = put_with(503, &arm_error("ServiceUnavailable", "try later")).await;
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.operation(), Operation::PutRoleAssignment);
}

#[tokio::test]
async fn update_not_permitted_is_terminal_with_azures_code_and_message() {
    let err = put_with(
        400,
        &arm_error(
            "RoleAssignmentUpdateNotPermitted",
            "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
        ),
    )
    .await;
    assert_eq!(err.class(), ErrorClass::Terminal);
    assert_eq!(err.code(), Some("RoleAssignmentUpdateNotPermitted"));
    let text = err.to_string();
    assert!(text.contains("put_role_assignment"), "{text}");
    assert!(text.contains(RG), "{text}");
    assert!(text.contains("are not allowed to be updated"), "{text}");
}

#[tokio::test]
async fn role_assignment_exists_is_terminal() {
    let err = put_with(
        409,
        &arm_error(
            "RoleAssignmentExists",
            "The role assignment already exists.",
        ),
    )
    .await;
    assert_eq!(err.class(), ErrorClass::Terminal);
    assert_eq!(err.status(), Some(409));
    assert_eq!(err.code(), Some("RoleAssignmentExists"));
}

#[tokio::test]
async fn authorization_failed_is_terminal_and_names_the_scope() {
    let err = put_with(
        403,
        &arm_error(
            "AuthorizationFailed",
            "The client does not have authorization to perform action 'Microsoft.Authorization/roleAssignments/write'.",
        ),
    )
    .await;
    assert!(
        matches!(err, AzureError::Terminal { status: 403, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(RG));
}

#[tokio::test]
async fn principal_not_found_is_retryable_replication_delay() {
    let err = put_with(
        400,
        &arm_error(
            "PrincipalNotFound",
            "Principal 7 does not exist in the directory.",
        ),
    )
    .await;
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(err.code(), Some("PrincipalNotFound"));
}

#[tokio::test]
async fn a_404_on_write_is_terminal() {
    let err = put_with(
        404,
        &arm_error(
            "ResourceGroupNotFound",
            "Resource group 'payments-rg' could not be found.",
        ),
    )
    .await;
    assert_eq!(err.class(), ErrorClass::Terminal);
    assert_eq!(err.code(), Some("ResourceGroupNotFound"));
}

#[tokio::test]
async fn the_code_header_is_used_when_the_body_has_none() {
    let (client, fake) = client();
    fake.push(reply(403, "").header("x-ms-error-code", "LinkedAuthorizationFailed"));
    let err = client.put_role_assignment(&request()).await.unwrap_err();
    assert_eq!(err.code(), Some("LinkedAuthorizationFailed"));
}

#[tokio::test(start_paused = true)]
async fn no_answer_within_the_timeout_is_retryable_without_status() {
    let mut cfg = config();
    cfg.timeout = Duration::from_secs(5);
    let (client, fake) = client_with(cfg);
    fake.push(reply(200, "").delayed(Duration::from_secs(60)));
    let err = client
        .get_role_assignment(RG, &Uuid::from_u128(1))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(err.status(), None);
    assert_eq!(err.code(), Some("Timeout"));
    // The slot was given back.
    assert_eq!(client.limiter_snapshot().in_flight, 0);
}

#[tokio::test]
async fn an_unparseable_success_body_is_retryable() {
    let (client, fake) = client();
    fake.push(reply(200, "<html>proxy</html>"));
    let err = client
        .get_role_assignment(RG, &Uuid::from_u128(1))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(err.code(), Some("InvalidResponse"));
}

#[tokio::test]
async fn an_unusable_scope_is_refused_before_sending() {
    let (client, fake) = client();
    for scope in [
        "subscriptions/x",
        "/subscriptions/a//resourceGroups/b",
        "/subscriptions/a/../b",
        "",
    ] {
        let err = client
            .get_role_assignment(scope, &Uuid::from_u128(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, AzureError::Invalid { .. }),
            "{scope}: {err:?}"
        );
        assert_eq!(err.class(), ErrorClass::Terminal);
    }
    let err = client.list_role_assignments("a/b", None).await.unwrap_err();
    assert!(err.to_string().contains("a/b"), "{err}");
    assert!(fake.requests().is_empty());
}
