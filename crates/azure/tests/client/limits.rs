use std::time::Duration;

use lapse_azure::{BucketConfig, RoleAssignmentRequest};
use uuid::Uuid;

use crate::fake::{SUB, client_with, config, reply};

const RG: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/payments-rg";

fn request(n: u128) -> RoleAssignmentRequest {
    RoleAssignmentRequest {
        scope: RG.to_owned(),
        name: Uuid::from_u128(n),
        role_definition_id: format!(
            "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"
        ),
        principal_id: Uuid::from_u128(7),
        description: None,
        condition: None,
    }
}

fn assignment(n: u128) -> String {
    serde_json::json!({
        "id": format!("{RG}/providers/Microsoft.Authorization/roleAssignments/{}", Uuid::from_u128(n)),
        "name": Uuid::from_u128(n),
        "properties": {
            "roleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
            "principalId": Uuid::from_u128(7),
            "scope": RG
        }
    })
    .to_string()
}

#[tokio::test(start_paused = true)]
async fn writes_are_paced_by_the_subscription_bucket() {
    let mut cfg = config();
    cfg.limits.writes = BucketConfig {
        capacity: 2,
        refill_per_second: 1.0,
    };
    let (client, fake) = client_with(cfg);
    let start = tokio::time::Instant::now();
    for n in 0..4 {
        fake.push(reply(201, &assignment(n)));
        client.put_role_assignment(&request(n)).await.unwrap();
    }
    let at: Vec<_> = fake.requests().iter().map(|r| r.at - start).collect();
    assert_eq!(
        at,
        vec![
            Duration::ZERO,
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(2)
        ]
    );
    assert_eq!(client.limiter_snapshot().writes.throttle_waits, 2);
}

#[tokio::test(start_paused = true)]
async fn arms_remaining_budget_header_slows_the_client_down() {
    let (client, fake) = client_with(config());
    fake.push(
        reply(201, &assignment(0)).header("x-ms-ratelimit-remaining-subscription-writes", "0"),
    );
    fake.push(reply(201, &assignment(1)));
    let start = tokio::time::Instant::now();
    client.put_role_assignment(&request(0)).await.unwrap();
    client.put_role_assignment(&request(1)).await.unwrap();
    // ARM said the bucket is empty: the next write waits one refill interval (10/s).
    assert_eq!(fake.last().at - start, Duration::from_millis(100));
}

/// With one slot busy, a delete queued after two creates is sent before them.
#[tokio::test(start_paused = true)]
async fn deletes_overtake_waiting_creates() {
    let mut cfg = config();
    cfg.limits.max_in_flight = 1;
    let (client, fake) = client_with(cfg);
    // Replies are scripted in the order the requests should arrive.
    fake.push(reply(200, &assignment(0)).delayed(Duration::from_secs(1)));
    fake.push(reply(200, &assignment(3)));
    fake.push(reply(201, &assignment(1)));
    fake.push(reply(201, &assignment(2)));

    let busy = {
        let c = client.clone();
        tokio::spawn(async move { c.get_role_assignment(RG, &Uuid::from_u128(0)).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut tasks = Vec::new();
    for n in [1u128, 2] {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.put_role_assignment(&request(n)).await.map(|_| ())
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c = client.clone();
    tasks.push(tokio::spawn(async move {
        c.delete_role_assignment(RG, &Uuid::from_u128(3))
            .await
            .map(|_| ())
    }));
    busy.await.unwrap().unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let order: Vec<_> = fake.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(order, vec!["GET", "DELETE", "PUT", "PUT"]);
    let snapshot = client.limiter_snapshot();
    assert_eq!(snapshot.writes.slot_waits, 2);
    assert_eq!(snapshot.deletes.slot_waits, 1);
    assert_eq!(snapshot.total().slot_waits, 3);
    assert_eq!(snapshot.in_flight, 0);
}
