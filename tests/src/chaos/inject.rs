//! Carrying out the faults other than kills: sim-kube's watch drops, compactions and restarts,
//! and sim-azure's rules and delays.

use serde_json::{Value, json};

use super::schedule::Fault;
use crate::World;

/// The paths of the Azure objects lapse writes.
const OBJECTS: &str = "roleAssignments/|federatedIdentityCredentials/";

fn rule(method: Option<&str>, action: Value, times: Option<u32>) -> Value {
    let mut r = json!({"pathPattern": OBJECTS, "action": action});
    if let Some(m) = method {
        r["method"] = json!(m);
    }
    if let Some(n) = times {
        r["times"] = json!(n);
    }
    r
}

/// Injects `fault` (not a kill: [`super::replicas::Replicas::kill`] does those).
pub async fn inject(w: &World, fault: &Fault) -> anyhow::Result<()> {
    match fault {
        Fault::Kill { .. } => anyhow::bail!("kills are the replicas' business"),
        Fault::DropWatches => w.kube_fault(json!({"action": "drop-watches"})).await,
        Fault::Compact => w.kube_fault(json!({"action": "compact"})).await,
        Fault::KubeRestart => w.kube_fault(json!({"action": "restart"})).await,
        Fault::Throttle { method, times, .. } => {
            w.azure_fault(rule(
                *method,
                json!({"type": "throttle", "retryAfterSecs": 1}),
                Some(*times),
            ))
            .await
        }
        Fault::ServerErrors {
            method,
            status,
            times,
            ..
        } => {
            let code = if *status == 503 {
                "ServiceUnavailable"
            } else {
                "InternalServerError"
            };
            w.azure_fault(rule(
                *method,
                json!({"type": "status", "status": status, "code": code,
                    "message": "injected by the chaos campaign"}),
                Some(*times),
            ))
            .await
        }
        Fault::LatencySpike { method, millis, .. } => {
            w.azure_fault(rule(
                *method,
                json!({"type": "latency", "millis": millis}),
                None,
            ))
            .await
        }
        Fault::ReplicationDelay {
            replication_ms,
            propagation_ms,
            ..
        } => w
            .azure_admin(
                reqwest::Method::PUT,
                "/admin/delays",
                Some(json!({"replicationWindowMs": replication_ms,
                    "propagationDelayMs": propagation_ms})),
            )
            .await
            .map(|_| ()),
    }
}

/// Ends the Azure fault in force: every rule removed, replication and propagation immediate.
pub async fn end_azure_fault(w: &World) -> anyhow::Result<()> {
    w.clear_azure_faults().await?;
    w.azure_admin(
        reqwest::Method::PUT,
        "/admin/delays",
        Some(json!({"replicationWindowMs": 0, "propagationDelayMs": 0})),
    )
    .await
    .map(|_| ())
}
