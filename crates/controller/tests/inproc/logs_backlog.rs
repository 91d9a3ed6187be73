//! Log reads are background work: a backlog of Activity Log pages never delays a revocation's
//! delete, and Azure's 429 on the Activity Log pauses further log reads for its Retry-After
//! without touching the delete budget. lapse-azure against sim-azure, no controller.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use lapse_azure::{AzureClient, ErrorClass, LimitsConfig, RoleAssignmentRequest};
use lapse_sim_azure::{FaultAction, FaultRule, SimAzureHandle};
use uuid::Uuid;

use crate::fixtures::PATIENCE;
use crate::logs_wire::{client, sim};

const LOG_PATH: &str = "/providers/Microsoft.Insights/eventtypes/management/values";
const BACKLOG: usize = 50;

/// A Reader assignment for the seed's `backup-runner` on the resource group: (scope, name).
async fn assign(azure: &SimAzureHandle, client: &AzureClient) -> (String, Uuid) {
    let sub = azure.subscription_id().unwrap();
    let scope = format!("/subscriptions/{sub}/resourceGroups/lapse-demo-rg");
    let (_, principal, _) = azure.identity("backup-runner").unwrap();
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
            role_definition_id: reader.id,
            principal_id: Uuid::parse_str(&principal).unwrap(),
            description: None,
            condition: None,
        })
        .await
        .unwrap();
    (scope, name)
}

/// Waits until `n` more reads than `before` queue for a slot.
async fn until_reads_queued(client: &AzureClient, before: u64, n: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while client.limiter_snapshot().reads.slot_waits < before + n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log reads never queued: {:?}",
            client.limiter_snapshot()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two slots, every answer 20 ms late, fifty Activity Log pages queued: a delete issued after
/// them is sent as soon as one slot frees, before all but the reads already in flight.
#[tokio::test]
async fn a_delete_is_not_queued_behind_a_backlog_of_log_reads() {
    let azure = sim(Duration::ZERO).await;
    let client = client(
        &azure,
        LimitsConfig {
            max_in_flight: 2,
            ..LimitsConfig::default()
        },
    );
    let sub = azure.subscription_id().unwrap();
    let (scope, name) = assign(&azure, &client).await;
    azure.faults().set_latency(Duration::from_millis(20));
    let from = Utc::now() - chrono::TimeDelta::minutes(5);
    let finished = Arc::new(AtomicUsize::new(0));
    let before = client.limiter_snapshot().reads.slot_waits;
    let mut reads = Vec::new();
    for _ in 0..BACKLOG {
        let (client, sub, finished) = (client.clone(), sub.clone(), finished.clone());
        reads.push(tokio::spawn(async move {
            let page = client.activity_log_page(&sub, from, None, None).await;
            finished.fetch_add(1, Ordering::SeqCst);
            page.map(|_| ())
        }));
    }
    // All but the two in flight are waiting for a slot before the delete is asked for.
    until_reads_queued(&client, before, (BACKLOG - 2) as u64).await;
    assert!(client.delete_role_assignment(&scope, &name).await.unwrap());
    let done_at_delete = finished.load(Ordering::SeqCst);
    for r in reads {
        r.await.unwrap().unwrap();
    }
    assert!(
        done_at_delete < BACKLOG / 2,
        "{done_at_delete} of {BACKLOG} log reads were done before the delete returned"
    );
    // At the simulator: the delete arrived after at most the two reads in flight when it queued
    // and the one the other slot started while the delete was in flight.
    let audit = azure.audit().entries();
    let delete = audit
        .iter()
        .find(|e| e.method == "DELETE" && e.path.ends_with(&name.to_string()))
        .unwrap();
    let logs: Vec<_> = audit
        .iter()
        .filter(|e| e.method == "GET" && e.path.ends_with(LOG_PATH))
        .collect();
    assert_eq!(logs.len(), BACKLOG);
    let earlier = logs.iter().filter(|e| e.time < delete.time).count();
    assert!(
        earlier <= 3,
        "{earlier} log reads arrived before the delete"
    );
}

/// A 429 with Retry-After on the Activity Log: the next log read waits it out, a delete meanwhile
/// does not wait at all.
#[tokio::test]
async fn a_429_on_the_activity_log_is_honoured_for_later_log_reads_only() {
    let azure = sim(Duration::ZERO).await;
    let client = client(&azure, LimitsConfig::default());
    let sub = azure.subscription_id().unwrap();
    let (scope, name) = assign(&azure, &client).await;
    azure
        .faults()
        .add(FaultRule {
            method: Some("GET".into()),
            path_pattern: "eventtypes/management/values$".into(),
            action: FaultAction::Throttle {
                retry_after_secs: 1,
            },
            times: Some(1),
        })
        .unwrap();
    let from = Utc::now() - chrono::TimeDelta::minutes(5);
    let err = client
        .activity_log_page(&sub, from, None, None)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Throttled);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    // The delete budget is not paused.
    assert!(client.delete_role_assignment(&scope, &name).await.unwrap());
    assert_eq!(client.limiter_snapshot().deletes.throttle_waits, 0);
    // The next log read waits for the Retry-After, then succeeds.
    let page = client
        .activity_log_page(&sub, from, None, None)
        .await
        .unwrap();
    assert!(
        page.items
            .iter()
            .any(|e| e.action.ends_with("roleAssignments/write"))
    );
    let stats = client.limiter_snapshot().reads;
    assert_eq!(stats.throttled_responses, 1);
    assert_eq!(stats.throttle_waits, 1);
    let logs: Vec<_> = azure
        .audit()
        .entries()
        .into_iter()
        .filter(|e| e.method == "GET" && e.path.ends_with(LOG_PATH))
        .collect();
    assert_eq!(
        logs.iter().map(|e| e.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let gap = (logs[1].time - logs[0].time).to_std().unwrap();
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");
}
