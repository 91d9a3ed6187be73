//! The wire for PIM, end to end: lapse-azure's `put_schedule_request` and
//! `list_role_assignment_schedules` against sim-azure's PIM (api-version 2020-10-01), no
//! controller involved. Assign, list, extend, remove (refused within five minutes of the start,
//! then accepted on PIM's clock five minutes on), and Azure's refusals as the client classes
//! them.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use lapse_azure::{AzureClient, ErrorClass, ScheduleRequest, ScheduleRequestType};
use lapse_sim_azure::{Seed, SimAzure, SimAzureHandle};
use uuid::Uuid;

/// The sandbox tenant and a client with the operator's credentials (User Access Administrator
/// on the subscription: `Microsoft.Authorization/*` includes the schedule requests).
async fn start() -> (SimAzureHandle, AzureClient) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let azure = SimAzure::start(lapse_sim_azure::Config::default(), Seed::sandbox_default())
        .await
        .unwrap();
    let dir = crate::fixtures::scratch_dir().unwrap();
    let config = crate::fixtures::azure_config(&azure, &dir, "https://issuer.invalid").unwrap();
    let client = AzureClient::new(config).unwrap();
    (azure, client)
}

#[tokio::test]
async fn assign_list_extend_and_remove_through_the_client() {
    let (azure, client) = start().await;
    let sub = azure.subscription_id().unwrap();
    let scope = format!("/subscriptions/{sub}/resourceGroups/lapse-demo-rg");
    let (_, principal, _) = azure.identity("backup-runner").unwrap();
    let principal = Uuid::parse_str(&principal).unwrap();
    let reader = client
        .role_definition_by_name(&sub, "Reader")
        .await
        .unwrap()
        .unwrap();
    let now = Utc::now().trunc_subsecs(0);
    let request = |kind, ends_at| ScheduleRequest {
        scope: scope.clone(),
        name: Uuid::new_v4(),
        request_type: kind,
        principal_id: principal,
        role_definition_id: reader.id.clone(),
        starts_at: None,
        ends_at,
        justification: Some("lapse:inproc payments/backup".into()),
        condition: None,
    };

    let assign = request(
        ScheduleRequestType::AdminAssign,
        Some(now + chrono::Duration::hours(1)),
    );
    let record = client.put_schedule_request(&assign).await.unwrap();
    assert_eq!(record.name, assign.name);
    assert_eq!(record.status, "Provisioned");
    let schedule_id = record.target_schedule_id.clone().unwrap();
    // A retry of the same request answers the recorded one.
    assert_eq!(client.put_schedule_request(&assign).await.unwrap(), record);

    let schedules = client
        .list_role_assignment_schedules(&sub, Some(&principal))
        .await
        .unwrap();
    assert_eq!(schedules.len(), 1, "{schedules:?}");
    let s = &schedules[0];
    assert_eq!(s.id, schedule_id);
    assert_eq!(s.scope, scope);
    assert_eq!(s.principal_id, principal);
    assert_eq!(s.role_definition_guid(), Some(reader.guid));
    assert_eq!(s.request_name(), Some(assign.name));
    assert_eq!(s.ends_at, Some(now + chrono::Duration::hours(1)));
    assert_eq!(s.status, "Provisioned");
    // The role assignment PIM made is an ordinary one for the 2022-04-01 API.
    let assignments = client
        .list_role_assignments(&sub, Some(&principal))
        .await
        .unwrap();
    assert_eq!(assignments.len(), 1);
    assert_eq!(assignments[0].scope, scope);

    let extend = request(
        ScheduleRequestType::AdminExtend,
        Some(now + chrono::Duration::hours(2)),
    );
    let extended = client.put_schedule_request(&extend).await.unwrap();
    assert_eq!(
        extended.target_schedule_id.as_deref(),
        Some(schedule_id.as_str())
    );
    let s = client
        .list_role_assignment_schedules(&sub, None)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(s.ends_at, Some(now + chrono::Duration::hours(2)));
    assert_eq!(s.request_name(), Some(extend.name));

    // Too soon to remove: terminal, Azure's code.
    let early = client
        .put_schedule_request(&request(ScheduleRequestType::AdminRemove, None))
        .await
        .unwrap_err();
    assert_eq!(early.class(), ErrorClass::Terminal, "{early}");
    assert_eq!(early.code(), Some("ActiveDurationTooShort"));

    azure.set_pim_clock_offset(Duration::from_secs(6 * 60));
    let removed = client
        .put_schedule_request(&request(ScheduleRequestType::AdminRemove, None))
        .await
        .unwrap();
    assert_eq!(removed.status, "Revoked");
    assert!(
        client
            .list_role_assignment_schedules(&sub, Some(&principal))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        client
            .list_role_assignments(&sub, Some(&principal))
            .await
            .unwrap()
            .is_empty()
    );
    let gone = client
        .put_schedule_request(&request(ScheduleRequestType::AdminRemove, None))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Some("RoleAssignmentDoesNotExist"), "{gone}");

    // Too short, and no licence: terminal too.
    let short = client
        .put_schedule_request(&request(
            ScheduleRequestType::AdminAssign,
            Some(Utc::now() + chrono::Duration::minutes(2)),
        ))
        .await
        .unwrap_err();
    assert_eq!(short.code(), Some("ActiveDurationTooShort"), "{short}");
    azure.set_pim_licensed(false);
    let unlicensed = client
        .list_role_assignment_schedules(&sub, None)
        .await
        .unwrap_err();
    assert_eq!(unlicensed.class(), ErrorClass::Terminal);
    assert_eq!(unlicensed.code(), Some("AadPremiumLicenseRequired"));
}
