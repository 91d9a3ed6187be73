//! The wire for usage evidence, end to end: lapse-azure's `activity_log_page` and
//! `sign_ins_page` against sim-azure's Activity Log (2015-04-01) and Graph sign-in log, no
//! controller involved: what the client reads is what the simulator logged, writes and deletes
//! but no reads, every token a sign-in, each after the ingestion delay.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lapse_azure::{
    ActivityEvent, AzureClient, LimitsConfig, RoleAssignmentRequest, SignInKind, SignInRecord,
};
use lapse_sim_azure::{Seed, SimAzure, SimAzureHandle};
use uuid::Uuid;

/// The sandbox tenant with the operator also allowed to read sign-ins, logs lagging `delay`.
pub async fn sim(delay: Duration) -> SimAzureHandle {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut seed = Seed::sandbox_default();
    for p in &mut seed.principals {
        if p.graph_roles
            .iter()
            .any(|r| r == "Application.ReadWrite.OwnedBy")
        {
            p.graph_roles.push("AuditLog.Read.All".to_owned());
        }
    }
    SimAzure::start(
        lapse_sim_azure::Config {
            log_ingestion_delay: delay,
            ..lapse_sim_azure::Config::default()
        },
        seed,
    )
    .await
    .unwrap()
}

/// A client with the operator's credentials in `azure`, paced by `limits`.
pub fn client(azure: &SimAzureHandle, limits: LimitsConfig) -> AzureClient {
    let dir = crate::fixtures::scratch_dir().unwrap();
    let mut config = crate::fixtures::azure_config(azure, &dir, "https://issuer.invalid").unwrap();
    config.limits = limits;
    AzureClient::new(config).unwrap()
}

async fn start(delay: Duration) -> (SimAzureHandle, AzureClient) {
    let azure = sim(delay).await;
    let client = client(&azure, LimitsConfig::default());
    (azure, client)
}

/// Every page of the Activity Log of `sub` from `from`.
pub async fn activity_log(
    client: &AzureClient,
    sub: &str,
    from: DateTime<Utc>,
) -> Vec<ActivityEvent> {
    let mut out = Vec::new();
    let mut next = None;
    loop {
        let page = client
            .activity_log_page(sub, from, None, next.as_ref())
            .await
            .unwrap();
        out.extend(page.items);
        match page.next {
            None => return out,
            cursor => next = cursor,
        }
    }
}

/// Every page of the sign-ins of `kind` from `from`.
pub async fn sign_ins(
    client: &AzureClient,
    kind: SignInKind,
    from: DateTime<Utc>,
) -> Vec<SignInRecord> {
    let mut out = Vec::new();
    let mut next = None;
    loop {
        let page = client
            .sign_ins_page(kind, from, next.as_ref())
            .await
            .unwrap();
        out.extend(page.items);
        match page.next {
            None => return out,
            cursor => next = cursor,
        }
    }
}

#[tokio::test]
async fn the_client_reads_what_the_simulator_logged_after_the_delay() {
    let (azure, client) = start(Duration::from_secs(1)).await;
    let from = Utc::now() - chrono::TimeDelta::seconds(1);
    let sub = azure.subscription_id().unwrap();
    let scope = format!("/subscriptions/{sub}/resourceGroups/lapse-demo-rg");
    let (_, principal, _) = azure.identity("backup-runner").unwrap();
    let principal = Uuid::parse_str(&principal).unwrap();
    let reader = client
        .role_definition_by_name(&sub, "Reader")
        .await
        .unwrap()
        .unwrap();
    let name = Uuid::new_v4();
    client
        .put_role_assignment(&RoleAssignmentRequest {
            scope: scope.clone(),
            name,
            role_definition_id: reader.id.clone(),
            principal_id: principal,
            description: None,
            condition: None,
        })
        .await
        .unwrap();
    // Within the delay: not there yet.
    assert!(activity_log(&client, &sub, from).await.is_empty());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let events = activity_log(&client, &sub, from).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.action, "Microsoft.Authorization/roleAssignments/write");
    assert!(e.succeeded());
    let operator = Uuid::parse_str(&azure.operator_credentials().unwrap().object_id).unwrap();
    assert_eq!(e.caller, Some(operator));
    assert_eq!(e.grantee(), Some(principal));
    assert!(e.resource_id.ends_with(&name.to_string()));
    // The client's own token is a service principal sign-in.
    let signins = sign_ins(&client, SignInKind::ServicePrincipal, from).await;
    assert!(
        signins.iter().any(|s| s.principal_id == Some(operator)
            && s.credential_type.as_deref() == Some("clientSecret")),
        "{signins:?}"
    );
    assert!(
        sign_ins(&client, SignInKind::ManagedIdentity, from)
            .await
            .is_empty()
    );
}
