//! PIM role assignment schedules (api-version 2020-10-01): the exact request body of a
//! `roleAssignmentScheduleRequests` PUT, and the upstream swagger examples' answers parsed
//! (`third_party/azure-rest-api-specs/.../Microsoft.Authorization/stable/2020-10-01/examples`).

use chrono::{DateTime, TimeZone, Utc};
use lapse_azure::{
    AzureError, ErrorClass, Operation, Outcome, ScheduleRequest, ScheduleRequestType,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fake::{SUB, arm_error, client, reply};

const RG: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/payments-rg";
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";

/// An upstream example's documented answer body.
fn example(file: &str, status: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../../third_party/azure-rest-api-specs/specification/authorization/resource-manager/Microsoft.Authorization/stable/2020-10-01/examples/{file}"
    ));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).unwrap();
    v["responses"][status]["body"].clone()
}

fn name() -> Uuid {
    Uuid::parse_str("4b1a7d2e-0c55-4d0e-9a7e-3f1f2b8c9d10").unwrap()
}

fn principal() -> Uuid {
    Uuid::parse_str("ce2ce14e-85d7-4629-bdbc-454d0519d987").unwrap()
}

fn role_id() -> String {
    format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{READER}")
}

fn at(h: u32, m: u32, s: u32, nanos: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, h, m, s).unwrap()
        + chrono::Duration::nanoseconds(nanos.into())
}

fn request(kind: ScheduleRequestType) -> ScheduleRequest {
    ScheduleRequest {
        scope: RG.to_owned(),
        name: name(),
        request_type: kind,
        principal_id: principal(),
        role_definition_id: role_id(),
        starts_at: Some(at(4, 0, 0, 123_456_789)),
        ends_at: Some(at(12, 0, 0, 999_000_000)),
        justification: Some("lapse:dev payments/backup".into()),
        condition: None,
    }
}

#[tokio::test]
async fn admin_assign_sends_schedule_info_in_rfc_3339_seconds_and_reads_the_record() {
    let (client, fake) = client();
    fake.push(reply(
        201,
        &example("PutRoleAssignmentScheduleRequest.json", "201").to_string(),
    ));
    let cond = "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringEquals 'backups'";
    let mut req = request(ScheduleRequestType::AdminAssign);
    req.condition = Some(cond.into());
    let record = client.put_schedule_request(&req).await.unwrap();
    assert_eq!(
        record.id,
        "/subscriptions/dfa2a084-766f-4003-8ae1-c4aeb893a99f/providers/Microsoft.Authorization/RoleAssignmentScheduleRequests/fea7a502-9a96-4806-a26f-eee560e52045"
    );
    assert_eq!(
        record.name,
        Uuid::parse_str("fea7a502-9a96-4806-a26f-eee560e52045").unwrap()
    );
    assert_eq!(record.status, "Provisioned");
    assert_eq!(
        record.target_schedule_id.as_deref(),
        Some("c9e264ff-3133-4776-a81a-ebc7c33c8ec6")
    );

    let sent = fake.last();
    assert_eq!(sent.method, "PUT");
    assert_eq!(sent.url.host_str(), Some("arm.test"));
    assert_eq!(
        sent.url.path(),
        format!(
            "{RG}/providers/Microsoft.Authorization/roleAssignmentScheduleRequests/{}",
            name()
        )
    );
    assert_eq!(sent.query("api-version").as_deref(), Some("2020-10-01"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(
        sent.json(),
        json!({"properties": {
            "principalId": principal(),
            "roleDefinitionId": role_id(),
            "requestType": "AdminAssign",
            "scheduleInfo": {
                "startDateTime": "2026-12-01T04:00:00Z",
                "expiration": {"type": "AfterDateTime", "endDateTime": "2026-12-01T12:00:00Z"},
            },
            "justification": "lapse:dev payments/backup",
            "condition": cond,
            "conditionVersion": "2.0",
        }})
    );
    let counted = client
        .call_counts()
        .into_iter()
        .find(|c| c.operation == Operation::PutScheduleRequest)
        .map(|c| (c.outcome, c.count));
    assert_eq!(counted, Some((Outcome::Ok, 1)));
}

#[tokio::test]
async fn extend_update_and_remove_send_what_they_change() {
    let (client, fake) = client();
    let answer = example("PutRoleAssignmentScheduleRequest.json", "201").to_string();
    for _ in 0..3 {
        fake.push(reply(201, &answer));
    }
    for kind in [
        ScheduleRequestType::AdminExtend,
        ScheduleRequestType::AdminUpdate,
    ] {
        let mut req = request(kind);
        req.starts_at = None;
        client.put_schedule_request(&req).await.unwrap();
        let props = fake.last().json()["properties"].clone();
        assert_eq!(props["requestType"], kind.as_str());
        assert_eq!(
            props["scheduleInfo"],
            json!({"expiration": {"type": "AfterDateTime", "endDateTime": "2026-12-01T12:00:00Z"}}),
            "{kind:?}: no start, the end only"
        );
        assert!(props.get("conditionVersion").is_none());
    }
    let mut remove = request(ScheduleRequestType::AdminRemove);
    remove.starts_at = None;
    remove.ends_at = None;
    remove.justification = None;
    client.put_schedule_request(&remove).await.unwrap();
    assert_eq!(
        fake.last().json(),
        json!({"properties": {
            "principalId": principal(),
            "roleDefinitionId": role_id(),
            "requestType": "AdminRemove",
        }}),
        "a removal sends no schedule"
    );
}

#[tokio::test]
async fn pim_refusals_are_terminal_with_azures_code() {
    let (client, fake) = client();
    for (code, message) in [
        (
            "ActiveDurationTooShort",
            "The Active duration is too short. Minimum Required is 5 minutes.",
        ),
        (
            "AadPremiumLicenseRequired",
            "The tenant needs an AAD Premium 2 license.",
        ),
        (
            "RoleAssignmentExists",
            "The Role assignment already exists.",
        ),
        (
            "RoleAssignmentDoesNotExist",
            "The Role assignment does not exist.",
        ),
        (
            "InvalidRoleAssignmentRequest",
            "A request with name 4b1a7d2e-0c55-4d0e-9a7e-3f1f2b8c9d10 exists with other properties.",
        ),
    ] {
        fake.push(reply(400, &arm_error(code, message)));
        let err = client
            .put_schedule_request(&request(ScheduleRequestType::AdminAssign))
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Terminal, "{err}");
        assert_eq!(err.code(), Some(code));
        assert_eq!(err.operation(), Operation::PutScheduleRequest);
        assert!(err.to_string().contains(message), "{err}");
        assert!(err.to_string().contains(&name().to_string()), "{err}");
    }
    // Nothing is sent for a request that cannot be valid.
    let sent = fake.requests().len();
    let mut bad = request(ScheduleRequestType::AdminAssign);
    bad.scope = "not a scope".into();
    let err = client.put_schedule_request(&bad).await.unwrap_err();
    assert!(matches!(err, AzureError::Invalid { .. }), "{err:?}");
    let mut bad = request(ScheduleRequestType::AdminAssign);
    bad.condition = Some(" ".into());
    assert!(client.put_schedule_request(&bad).await.is_err());
    assert_eq!(fake.requests().len(), sent);
}

#[tokio::test]
async fn list_role_assignment_schedules_reads_the_swagger_answer_and_follows_next_link() {
    let (client, fake) = client();
    let mut first = example("GetRoleAssignmentSchedulesByScope.json", "200");
    // ARM's link names the public host: the client must stay on the configured endpoint.
    first["nextLink"] = json!(format!(
        "https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignmentSchedules?api-version=2020-10-01&$skipToken=1"
    ));
    let mut second = example("GetRoleAssignmentSchedulesByScope.json", "200");
    second["value"][0]["name"] = json!("d2a43cc1-7e31-4c4b-9a0e-5d4b1bc1c9f1");
    second["value"][0]["properties"]["endDateTime"] = Value::Null;
    fake.push(reply(200, &first.to_string()));
    fake.push(reply(200, &second.to_string()));
    let p = Uuid::parse_str("a3bb8764-cb92-4276-9d2a-ca1e895e55ea").unwrap();
    let schedules = client
        .list_role_assignment_schedules(SUB, Some(&p))
        .await
        .unwrap();
    assert_eq!(schedules.len(), 2);
    let s = &schedules[0];
    assert_eq!(s.name, "c9e264ff-3133-4776-a81a-ebc7c33c8ec6");
    assert_eq!(
        s.id,
        "/providers/Microsoft.Subscription/subscriptions/dfa2a084-766f-4003-8ae1-c4aeb893a99f/providers/Microsoft.Authorization/RoleAssignmentSchedules/c9e264ff-3133-4776-a81a-ebc7c33c8ec6"
    );
    assert_eq!(
        s.scope,
        "/providers/Microsoft.Subscription/subscriptions/dfa2a084-766f-4003-8ae1-c4aeb893a99f"
    );
    assert_eq!(s.principal_id, p);
    assert_eq!(
        s.role_definition_guid(),
        Some(Uuid::parse_str("c8d4ff99-41c3-41a8-9f60-21dfdad59608").unwrap())
    );
    assert_eq!(
        s.request_name(),
        Some(Uuid::parse_str("fea7a502-9a96-4806-a26f-eee560e52045").unwrap())
    );
    assert_eq!(s.status, "Provisioned");
    let t = |text: &str| {
        Some(
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc),
        )
    };
    assert_eq!(s.starts_at, t("2020-09-09T21:35:27.91Z"));
    assert_eq!(s.ends_at, t("2020-09-10T05:35:17.91Z"));
    assert_eq!(schedules[1].ends_at, None, "no end: permanent");

    let sent = fake.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].method, "GET");
    assert_eq!(
        sent[0].url.path(),
        format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignmentSchedules")
    );
    assert_eq!(sent[0].query("api-version").as_deref(), Some("2020-10-01"));
    assert_eq!(
        sent[0].query("$filter"),
        Some(format!("principalId eq '{p}'"))
    );
    assert_eq!(sent[1].url.host_str(), Some("arm.test"));
    assert_eq!(sent[1].query("$skipToken").as_deref(), Some("1"));

    fake.push(reply(200, r#"{"value": []}"#));
    assert!(
        client
            .list_role_assignment_schedules(SUB, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(fake.last().query("$filter"), None);
    assert!(
        client
            .list_role_assignment_schedules("not/a sub", None)
            .await
            .is_err()
    );
}
