//! Usage evidence in process (docs/usage.md): a workload acts with its lease, sim-azure logs
//! what it serves, and the operator counts it into `status.usage` exactly once, killed and
//! restarted while it reads; a sensitive action under `onSensitiveAction: Revoke` ends the
//! lease naming both principals.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use lapse_api::v1alpha1::{AccessPolicy, GrantPhase};
use lapse_controller::UsageSettings;
use lapse_sim_azure::Seed;

use crate::fixtures::*;

const ARM: &str = "https://management.azure.com";

/// The sandbox with Activity Log reading on: polled every 100 ms, re-read 3 s back, a
/// propagation bound of 1 s, the log served 7 events a page (so a kill lands between pages).
async fn world() -> World {
    World::with(Options {
        seed: Seed::sandbox_default(),
        usage: UsageSettings {
            activity_log: true,
            sign_ins: false,
            poll_every: Duration::from_millis(100),
            reread: Duration::from_secs(3),
            ledger_name: "lapse-usage-ledger".into(),
        },
        propagation: chrono::TimeDelta::seconds(1),
        log_page_size: 7,
        ..Options::default()
    })
    .await
    .unwrap()
}

fn storage(w: &World) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{RG}/providers/Microsoft.Storage/storageAccounts/lapsedemodata",
        w.sub
    )
}

/// What the workload sends to ARM with its own token.
struct Workload {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Workload {
    fn of(w: &World, principal: &str) -> Self {
        let http = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(w.azure.ca_pem().as_bytes()).unwrap(),
            )
            .build()
            .unwrap();
        Self {
            http,
            base: w.azure.url().trim_end_matches('/').to_owned(),
            token: w.azure.mint_access_token(principal, ARM).unwrap(),
        }
    }

    async fn put(&self, path: &str, api_version: &str, body: serde_json::Value) -> u16 {
        self.http
            .put(format!("{}{path}?api-version={api_version}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

fn operations(w: &World, name: &str) -> Option<u64> {
    w.ctx
        .grants
        .state()
        .iter()
        .find(|g| g.name_any() == name)
        .and_then(|g| g.unpack().ok()?.status?.usage)
        .map(|u| u.operations)
}

#[tokio::test]
async fn every_operation_is_counted_once_though_the_operator_is_killed_while_it_reads() {
    let mut w = world().await;
    w.allow(&["Contributor"]).await.unwrap();
    let g = grant(&w, "nightly", SA)
        .unwrap()
        .role("Contributor", &storage(&w))
        .lasting("1h");
    w.create(&g).await.unwrap();
    w.wait_phase("nightly", GrantPhase::Active).await.unwrap();
    let mi = w.identity(SA).unwrap();
    let workload = Workload::of(&w, &mi.principal.to_string());
    const BATCH: u64 = 20;
    const WRITES: u64 = 3 * BATCH;
    for batch in 0..3 {
        for i in 0..BATCH {
            let path = format!(
                "{}/blobServices/default/containers/c{batch}-{i}",
                storage(&w)
            );
            assert_eq!(
                workload
                    .put(&path, "2023-01-01", serde_json::json!({}))
                    .await,
                201
            );
        }
        // Each page is slow now: the operator is killed after it has counted part of the
        // batch, between one page's commit and the next page.
        w.azure.faults().set_latency(Duration::from_millis(60));
        let before = batch * BATCH;
        w.until("part of the batch counted", || {
            operations(&w, "nightly").is_some_and(|n| n > before)
        })
        .await
        .unwrap();
        let seen = operations(&w, "nightly").unwrap_or_default();
        w.restart().await.unwrap();
        w.azure.faults().set_latency(Duration::ZERO);
        eprintln!(
            "[usage] killed with {seen} of {} writes counted",
            before + BATCH
        );
    }
    w.until("every write counted", || {
        operations(&w, "nightly") == Some(WRITES)
    })
    .await
    .unwrap();
    // Re-reads of the trailing window (3 s, 30 polls) and another kill count nothing twice.
    w.restart().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(operations(&w, "nightly"), Some(WRITES));
    let g = w.wait_phase("nightly", GrantPhase::Active).await.unwrap();
    let usage = g.status.unwrap().usage.unwrap();
    assert_eq!(
        (usage.actions[0].action.as_str(), usage.actions[0].count),
        (
            "microsoft.storage/storageaccounts/blobservices/containers/write",
            WRITES
        )
    );
    assert!(is_true(&g_fresh(&w, "nightly").await, "Used"));
    // The ledger, persisted in the cluster, keeps no batch a status already counts.
    let cms: Api<ConfigMap> = Api::namespaced(w.client.clone(), "kube-system");
    let ledger = cms.get("lapse-usage-ledger").await.unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&ledger.data.unwrap()["ledger.json"]).unwrap();
    assert!(doc["sequence"].as_u64().unwrap() >= 1, "{doc}");
    assert_eq!(doc["pending"], serde_json::json!({}), "{doc}");
}

async fn g_fresh(w: &World, name: &str) -> lapse_api::v1alpha1::AccessGrant {
    w.grants().get(name).await.unwrap()
}

#[tokio::test]
async fn a_role_assignment_for_another_principal_revokes_under_a_revoking_policy() {
    let w = world().await;
    w.allow(&["User Access Administrator"]).await.unwrap();
    Api::<AccessPolicy>::all(w.client.clone())
        .patch(
            "payments",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"watch": {"onSensitiveAction": "Revoke"}}})),
        )
        .await
        .unwrap();
    let g = grant(&w, "escalate", SA)
        .unwrap()
        .role("User Access Administrator", &storage(&w))
        .lasting("1h");
    w.create(&g).await.unwrap();
    w.wait_phase("escalate", GrantPhase::Active).await.unwrap();
    let mi = w.identity(SA).unwrap();
    let other = w.identity("report-agent").unwrap();
    let workload = Workload::of(&w, &mi.principal.to_string());
    let reader = format!(
        "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
        w.sub
    );
    let path = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{}",
        storage(&w),
        uuid::Uuid::new_v4()
    );
    let status = workload
        .put(
            &path,
            "2022-04-01",
            serde_json::json!({"properties": {"roleDefinitionId": reader, "principalId": other.principal.to_string(), "principalType": "ServicePrincipal"}}),
        )
        .await;
    assert_eq!(status, 201);
    let ended = w.wait_phase("escalate", GrantPhase::Revoked).await.unwrap();
    let st = ended.status.unwrap();
    let kinds: Vec<&str> = st
        .usage
        .as_ref()
        .unwrap()
        .findings
        .iter()
        .map(|f| f.kind.as_str())
        .collect();
    assert!(kinds.contains(&"SensitiveAction"), "{kinds:?}");
    let chain = st
        .usage
        .as_ref()
        .unwrap()
        .findings
        .iter()
        .find(|f| f.kind == "PrivilegeChain")
        .unwrap();
    assert!(
        chain.message.contains(&mi.principal.to_string())
            && chain.message.contains(&other.principal.to_string()),
        "{}",
        chain.message
    );
    assert!(
        st.message
            .unwrap_or_default()
            .contains("onSensitiveAction: Revoke"),
        "the end says why"
    );
}
