//! Two replicas never both act: the second waits on the leader Lease, and takes over when the
//! leader dies.

use std::time::{Duration, Instant};

use lapse_api::v1alpha1::GrantPhase;
use lapse_e2e::World;

/// Who holds the operator's leader Lease.
async fn leader_lease_holder(w: &World) -> anyhow::Result<Option<String>> {
    let leader_leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(w.kube.clone(), &w.operator_namespace);
    Ok(leader_leases
        .get_opt("lapse-operator")
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts_and_a_standby_takes_over() -> anyhow::Result<()> {
    let mut w = World::without_operator().await?;
    w.start_operator(&[("POD_NAME", "replica-a")]).await?;
    // The standby: up and healthy, but not leading, so it does nothing.
    let mut standby = w.spawn_operator(&[("POD_NAME", "replica-b")])?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(standby.is_running());
    // The standby is ready (it can take over), and says why it is idle.
    let body = w
        .http
        .get(format!("http://127.0.0.1:{}/readyz", standby.health_port))
        .send()
        .await?
        .text()
        .await?;
    assert!(body.starts_with("standby"), "{body}");
    assert_eq!(leader_lease_holder(&w).await?.as_deref(), Some("replica-a"));
    assert!(
        standby.logs().contains("waiting for leadership"),
        "{}",
        standby.logs()
    );

    let sub = w.subscription()?.to_owned();
    let rg = w.fixtures.resource_group_id();
    // "report-agent" on the sandbox; the one identity when an external target names only one.
    let identity = w
        .fixtures
        .second_identity()
        .unwrap_or(w.fixtures.identity())
        .to_owned();
    let (mi, _) = w.identity(&identity).await?;
    let (lease, max) = (w.lease(30), w.lease(3600));
    w.kubectl_ok(&["create", "namespace", "payments"])?;
    w.apply_ok(&format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: payments
spec:
  namespaces: ["payments"]
  identities: ["{mi}"]
  roles: ["Reader"]
  scopes: ["/subscriptions/{sub}"]
  maxDuration: {max}
---
apiVersion: lapse.dev/v1alpha1
kind: AccessGrant
metadata:
  name: leader
  namespace: payments
spec:
  identity:
    managedIdentity: {mi}
  roles:
  - role: Reader
    scope: {rg}
  duration: {lease}
"#
    ))?;
    w.wait_phase(
        "payments",
        "leader",
        GrantPhase::Active,
        w.scaled(Duration::from_secs(45)),
    )
    .await?;
    // The standby never started its controllers, so the grant's writes all came from replica-a.
    assert!(
        !standby.logs().contains("lapse-operator running"),
        "the standby acted:\n{}",
        standby.logs()
    );

    // The leader dies without releasing the leader Lease; the standby takes over once it
    // expires (15 s) and the grant's lease still ends on time.
    let killed = Instant::now();
    if let Some(op) = w.operator.as_mut() {
        op.kill();
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    while leader_lease_holder(&w).await?.as_deref() != Some("replica-b") {
        assert!(
            Instant::now() < deadline,
            "the standby never took over:\n{}",
            standby.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("failover after {} ms", killed.elapsed().as_millis());
    w.operator = Some(standby);
    w.wait_phase(
        "payments",
        "leader",
        GrantPhase::Expired,
        w.scaled(Duration::from_secs(60)),
    )
    .await?;
    let marker = format!("lapse:{}", w.cluster);
    w.settle(
        "objects that outlived their lease (role assignments carrying the cluster's marker)",
        0,
        async || {
            Ok(w.role_assignments()
                .await?
                .into_iter()
                .filter(|ra| {
                    ra.pointer("/properties/description")
                        .and_then(serde_json::Value::as_str)
                        .is_some_and(|d| d.starts_with(&marker))
                })
                .count())
        },
    )
    .await?;
    Ok(())
}

/// A leader whose leader Lease renewals hang (an API server that accepts the connection and
/// never answers) must stop acting before the leader Lease can expire for a standby: otherwise
/// two replicas act at once. It steps down within the renew deadline (10 s), inside the 15 s
/// leader Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_hang_steps_down_before_the_leader_lease_expires()
-> anyhow::Result<()> {
    lapse_e2e::sandbox_only(
        lapse_e2e::Capability::Faults,
        "hangs the API server's leader Lease writes",
    )?;
    let mut w = World::without_operator().await?;
    w.start_operator(&[("POD_NAME", "replica-a")]).await?;
    assert_eq!(leader_lease_holder(&w).await?.as_deref(), Some("replica-a"));
    // Every Lease update from now on is held 20 s (twice the renew deadline) before being
    // answered.
    w.kube_fault(serde_json::json!({
        "action": "fail", "verb": "update", "resource": "leases",
        "count": 1000, "code": 0, "delay_ms": 20_000
    }))
    .await?;
    let hung = Instant::now();
    let deadline = hung + Duration::from_secs(30);
    let op = w
        .operator
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("no operator"))?;
    while op.is_running() {
        assert!(
            Instant::now() < deadline,
            "the leader kept acting with hung renewals:\n{}",
            op.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = hung.elapsed();
    println!(
        "stepped down {} ms after renewals hung",
        stopped.as_millis()
    );
    assert!(
        op.logs().contains("lost leadership"),
        "it stopped for another reason:\n{}",
        op.logs()
    );
    // Renewals run every 5 s and the deadline is 10 s from the last good one: the leader has
    // stopped before the 15 s leader Lease lets anyone else take over.
    assert!(
        stopped < Duration::from_secs(15),
        "stepped down only after {stopped:?}, when a standby may already act"
    );
    Ok(())
}
