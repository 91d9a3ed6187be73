//! `lapse-baseline`, the naive reconciler `lapse-bench --baseline` compares lapse with
//! (tests/bench/baseline/), against the sandbox: the bench runs only on demand, so this keeps the
//! yardstick working. It must assign while a window is open, record what it made, and delete
//! it after the window ends.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, TimeDelta, Utc};
use lapse_e2e::{Capability, World, binary, sandbox_only};
use serde_json::{Value, json};

const NS: &str = "baseline";
const ANNOTATION: &str = "baseline.lapse.dev/role-assignments";

/// The baseline process, killed when the test ends however it ends.
struct Baseline(Child);

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `read` every 250 ms until it gives `want`, for at most `timeout`.
async fn until<T: PartialEq + std::fmt::Debug>(
    what: &str,
    want: T,
    timeout: Duration,
    mut read: impl AsyncFnMut() -> anyhow::Result<T>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = read().await?;
        if got == want {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: expected {want:?}, saw {got:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_assigns_in_the_window_and_deletes_after_it() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableTenant,
        "creates a service principal through sim-azure's admin endpoint",
    )?;
    let w = World::without_operator().await?;
    let principal = w
        .azure_admin(
            reqwest::Method::POST,
            "/admin/principals",
            Some(json!({"displayName": "baseline-workload", "kind": "ServicePrincipal"})),
        )
        .await?["objectId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    w.kubectl_ok(&["create", "namespace", NS])?;
    // Built (if need be) before the window starts to run.
    let exe = binary("lapse-baseline")?;
    let ends = Utc::now() + TimeDelta::seconds(8);
    w.apply_ok(&format!(
        "apiVersion: lapse.dev/v1alpha1\nkind: AccessGrant\nmetadata:\n  name: app\n  \
         namespace: {NS}\nspec:\n  identity:\n    servicePrincipal:\n      objectId: {principal}\n  \
         roles:\n    - role: Reader\n      scope: {}\n  window:\n    notAfter: \"{}\"\n",
        w.fixtures.resource_group_id(),
        ends.to_rfc3339_opts(SecondsFormat::Millis, true)
    ))?;

    let mut cmd = Command::new(exe);
    cmd.args(["--namespace", NS, "--resync-secs", "1"])
        .env("KUBECONFIG", w.kubeconfig());
    for key in [
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_AUTHORITY_HOST",
        "LAPSE_ARM_ENDPOINT",
        "LAPSE_AZURE_CA_BUNDLE",
    ] {
        if let Ok(v) = w.env(key) {
            cmd.env(key, v);
        }
    }
    let _baseline = Baseline(cmd.spawn()?);

    let annotation = || {
        w.grant_jsonpath(
            NS,
            "app",
            &format!(
                "{{.metadata.annotations.{}}}",
                ANNOTATION.replace('.', "\\.")
            ),
        )
    };
    let assigned = async || {
        anyhow::Ok(
            w.assignments_of(&principal)
                .await?
                .iter()
                .filter_map(|ra| ra["id"].as_str().map(str::to_ascii_lowercase))
                .collect::<Vec<_>>(),
        )
    };
    // While the window is open: one assignment, and the grant names it.
    until(
        "the baseline's first pass",
        false,
        Duration::from_secs(5),
        async || anyhow::Ok(assigned().await?.is_empty()),
    )
    .await?;
    let ids = assigned().await?;
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(annotation()?.to_ascii_lowercase(), ids[0]);
    // Reader at the resource group, for that principal, nothing more.
    let ra: Vec<Value> = w.assignments_of(&principal).await?;
    let props = &ra[0]["properties"];
    assert!(
        props["roleDefinitionId"]
            .as_str()
            .is_some_and(|r| r.ends_with("acdd72a7-3385-48ef-bd42-f606fba81ae7")),
        "{props}"
    );

    // After the end: deleted within a resync or two, and the record removed.
    let wait = (ends - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(5);
    until(
        "deleted after the window",
        Vec::<String>::new(),
        wait,
        assigned,
    )
    .await?;
    until(
        "the record removed",
        String::new(),
        Duration::from_secs(3),
        async || annotation(),
    )
    .await?;
    Ok(())
}
