//! Throttling, fault injection, the audit log, the admin endpoint and `write_env`.

use std::time::Duration;

use lapse_sim_azure::{Config, FaultAction, FaultRule, Seed, ThrottleConfig, ThrottleLimit};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn throttle_headers_count_down_to_a_429_whose_retry_after_is_honoured() {
    let config = Config {
        throttle: ThrottleConfig {
            enabled: true,
            reads: ThrottleLimit {
                capacity: 4,
                refill_per_sec: 1.0,
            },
            ..ThrottleConfig::default()
        },
        ..Config::default()
    };
    let env = Env::start(config, Seed::sandbox_default()).await;
    let token = env.operator_token().await;
    let path = format!("/subscriptions/{}?api-version=2022-12-01", env.sub());
    let mut remaining = Vec::new();
    let throttled = loop {
        let r = env.arm(Method::GET, &path, &token, None).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            break r;
        }
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        remaining.push(
            r.header("x-ms-ratelimit-remaining-subscription-reads")
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
        assert!(remaining.len() <= 4, "never throttled: {remaining:?}");
    };
    assert_eq!(remaining.first(), Some(&3));
    assert!(remaining.windows(2).all(|w| w[1] < w[0]), "{remaining:?}");
    assert_eq!(throttled.code(), "SubscriptionRequestsThrottled");
    let retry_after: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);

    // Writes have their own bucket.
    let write = env
        .put_assignment(
            &token,
            &env.rg_scope(),
            &guid(),
            &env.sim.identity("backup-runner").unwrap().1,
            READER,
            None,
        )
        .await;
    assert_eq!(write.status, StatusCode::CREATED);
    assert_eq!(
        write.header("x-ms-ratelimit-remaining-subscription-writes"),
        Some("199")
    );

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let after = env.arm(Method::GET, &path, &token, None).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
    assert_eq!(
        ThrottleConfig::default().reads,
        ThrottleLimit {
            capacity: 250,
            refill_per_sec: 25.0
        }
    );
}

#[tokio::test]
async fn faults_inject_errors_bursts_drops_and_are_audited() {
    let env = Env::sandbox().await;
    let token = env.operator_token().await;
    let path = format!("/subscriptions/{}?api-version=2022-12-01", env.sub());
    let faults = env.sim.faults();
    faults
        .add(FaultRule {
            method: Some("GET".into()),
            path_pattern: "^/subscriptions/[^/]+$".into(),
            action: FaultAction::Status {
                status: 503,
                code: "ServiceUnavailable".into(),
                message: "injected".into(),
            },
            times: Some(1),
        })
        .unwrap();
    faults
        .add(FaultRule {
            method: None,
            path_pattern: "^/subscriptions/[^/]+$".into(),
            action: FaultAction::Throttle {
                retry_after_secs: 7,
            },
            times: Some(2),
        })
        .unwrap();
    let first = env.arm(Method::GET, &path, &token, None).await;
    assert_eq!(
        (first.status, first.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
    );
    for _ in 0..2 {
        let t = env.arm(Method::GET, &path, &token, None).await;
        assert_eq!(t.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(t.header("retry-after"), Some("7"));
    }
    assert_eq!(
        env.arm(Method::GET, &path, &token, None).await.status,
        StatusCode::OK
    );

    faults
        .add(FaultRule {
            method: None,
            path_pattern: "^/subscriptions/[^/]+$".into(),
            action: FaultAction::Drop,
            times: Some(1),
        })
        .unwrap();
    let dropped = env
        .http
        .get(format!("{}{path}", env.sim.url()))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(
        dropped.is_err(),
        "expected a dropped connection, got {dropped:?}"
    );
    assert_eq!(
        env.arm(Method::GET, &path, &token, None).await.status,
        StatusCode::OK
    );

    let entries = env
        .sim
        .audit()
        .matching("GET", &format!("/subscriptions/{}", env.sub()));
    let statuses: Vec<u16> = entries.iter().map(|e| e.status).collect();
    assert_eq!(statuses, vec![503, 429, 429, 200, 0, 200]);
    let creds = env.sim.operator_credentials().unwrap();
    // Injected answers come before authentication; handled requests name the caller.
    assert!(
        entries
            .iter()
            .filter(|e| e.status == 200)
            .all(|e| e.principal.as_deref() == Some(creds.object_id.as_str()))
    );
    assert!(entries.iter().all(|e| !e.request_id.is_empty()));
}

#[tokio::test]
async fn admin_endpoint_mirrors_the_rust_api() {
    let env = Env::sandbox().await;
    let token = env.operator_token().await;
    let url = env.sim.url().to_owned();
    let rule = json!({"method": "GET", "pathPattern": "^/subscriptions/[^/]+$", "action": {"type": "status", "status": 500, "code": "InternalServerError", "message": "boom"}, "times": 1});
    let added = env
        .http
        .post(format!("{url}/admin/faults"))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::NO_CONTENT);
    let path = format!("/subscriptions/{}?api-version=2022-12-01", env.sub());
    assert_eq!(
        env.arm(Method::GET, &path, &token, None).await.code(),
        "InternalServerError"
    );

    let delays = env
        .http
        .put(format!("{url}/admin/delays"))
        .json(&json!({"replicationWindowMs": 600000}))
        .send()
        .await
        .unwrap();
    assert_eq!(delays.status(), StatusCode::NO_CONTENT);
    let created = to_resp(
        env.http
            .post(format!("{url}/admin/principals"))
            .json(&json!({"displayName": "late"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let object_id = created.body["objectId"].as_str().unwrap().to_owned();
    let r = env
        .put_assignment(&token, &env.rg_scope(), &guid(), &object_id, READER, None)
        .await;
    assert_eq!(r.code(), "PrincipalNotFound");

    let audit = to_resp(
        env.http
            .get(format!("{url}/admin/audit"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let entries = audit.body.as_array().unwrap();
    assert!(entries.iter().any(
        |e| e["status"] == 500 && e["path"] == format!("/subscriptions/{}", env.sub()).as_str()
    ));
    assert!(entries[0]["latency"].as_f64().is_some());
    let bad = to_resp(
        env.http
            .post(format!("{url}/admin/faults"))
            .json(&json!({"pathPattern": "(", "action": {"type": "drop"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn write_env_produces_a_sourceable_file_and_the_ca() {
    let env = Env::sandbox().await;
    let dir = std::env::temp_dir().join(format!("sim-azure-env-{}", guid()));
    env.sim.write_env(&dir, "https://127.0.0.1:6443").unwrap();
    let text = std::fs::read_to_string(dir.join("azure.env")).unwrap();
    let creds = env.sim.operator_credentials().unwrap();
    for (k, v) in [
        ("AZURE_TENANT_ID", env.sim.tenant_id()),
        ("AZURE_SUBSCRIPTION_ID", env.sub()),
        ("AZURE_CLIENT_ID", creds.client_id.clone()),
        ("AZURE_CLIENT_SECRET", creds.client_secret.clone().unwrap()),
        ("AZURE_AUTHORITY_HOST", env.sim.url().to_owned()),
        ("LAPSE_ARM_ENDPOINT", env.sim.url().to_owned()),
        ("LAPSE_GRAPH_ENDPOINT", env.sim.url().to_owned()),
        ("LAPSE_OIDC_ISSUER", "https://127.0.0.1:6443".to_owned()),
    ] {
        assert!(
            text.contains(&format!("export {k}='{v}'\n")),
            "{k} missing in\n{text}"
        );
    }
    assert!(text.contains("LAPSE_AZURE_CA_BUNDLE="));
    assert_eq!(
        std::fs::read_to_string(dir.join("azure-ca.pem")).unwrap(),
        env.sim.ca_pem()
    );
    // Sourcing it in a shell yields the same values.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            ". '{}' && printf %s \"$AZURE_CLIENT_SECRET\"",
            dir.join("azure.env").display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        creds.client_secret.unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
