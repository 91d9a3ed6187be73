//! `lapse-operator run` fails fast, naming the setting, on bad configuration or missing CRDs,
//! and serves health and metrics once running.

use std::process::Command;
use std::time::{Duration, Instant};

use lapse_e2e::{Capability, Sandbox, Target, World, binary, sandbox_only};

fn run_with(env: &[(&str, &str)]) -> anyhow::Result<(i32, String)> {
    let mut cmd = Command::new(binary("lapse-operator")?);
    cmd.arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

const GOOD: &[(&str, &str)] = &[
    ("LAPSE_CLUSTER_NAME", "dev"),
    ("LAPSE_OIDC_ISSUER", "https://issuer.example"),
    ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001"),
    ("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000002"),
    ("AZURE_CLIENT_SECRET", "s3cr3t-value"),
    ("KUBECONFIG", "/nonexistent/kubeconfig"),
];

fn with(overrides: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env: Vec<(&str, &str)> = GOOD
        .iter()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .copied()
        .collect();
    env.extend(overrides.iter().filter(|(_, v)| !v.is_empty()).copied());
    env
}

#[test]
fn bad_settings_fail_fast_naming_the_setting() -> anyhow::Result<()> {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("LAPSE_CLUSTER_NAME", "Prod_West")],
            "--cluster-name (LAPSE_CLUSTER_NAME)",
        ),
        (
            &[("LAPSE_OIDC_ISSUER", "http://issuer.example")],
            "--oidc-issuer (LAPSE_OIDC_ISSUER): must be an https URL",
        ),
        (&[("LAPSE_SWEEP_INTERVAL", "0s")], "--sweep-interval"),
        (&[("AZURE_CLIENT_SECRET", "")], "AZURE_CLIENT_SECRET"),
        (
            &[("LAPSE_AZURE_CA_BUNDLE", "/nonexistent/ca.pem")],
            "--azure-ca-bundle (LAPSE_AZURE_CA_BUNDLE)",
        ),
        (&[("LAPSE_CLUSTER_NAME", "")], "--cluster-name"),
        (
            &[("LAPSE_AZURE_CLOUD", "custom")],
            "--azure-cloud custom (LAPSE_AZURE_CLOUD): also set --arm-endpoint",
        ),
        (
            &[("LAPSE_NAMESPACES", "payments")],
            "--namespaces (LAPSE_NAMESPACES) watches only some namespaces: also set --shard",
        ),
        (
            &[("LAPSE_SHARD", "EU_1")],
            "--shard (LAPSE_SHARD): shard `EU_1` is invalid",
        ),
        (
            &[("LAPSE_CLUSTER_ID", "not a uid")],
            "--cluster-id (LAPSE_CLUSTER_ID): cluster ID `not a uid` is invalid",
        ),
    ];
    for (overrides, expect) in cases {
        let (code, stderr) = run_with(&with(overrides))?;
        assert_ne!(code, 0, "{overrides:?} should fail");
        assert!(
            stderr.contains(expect),
            "{overrides:?}: expected {expect:?} in:\n{stderr}"
        );
        // A secret given on the command line or environment is never echoed back.
        assert!(
            !stderr.contains("s3cr3t-value"),
            "the client secret leaked into:\n{stderr}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crds_fail_fast_with_the_fix() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "needs a cluster without lapse's CRDs; it starts a fresh sandbox of its own",
    )?;
    let sb = Sandbox::start()?;
    let mut env: Vec<(String, String)> = sb
        .azure
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push((
        "KUBECONFIG".into(),
        sb.kubeconfig.to_string_lossy().into_owned(),
    ));
    env.push(("LAPSE_CLUSTER_NAME".into(), "dev".into()));
    let (code, stderr) = tokio::task::spawn_blocking(move || {
        let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_with(&refs)
    })
    .await??;
    assert_ne!(code, 0);
    assert!(
        stderr.contains("accessgrants.lapse.dev is not installed")
            && stderr.contains("lapse-operator crd"),
        "{stderr}"
    );
    Ok(())
}

/// Outside a cluster, the default namespace `lapse-system` usually does not exist: the operator
/// says so at once, with the settings and the fix, instead of retrying forever.
#[test]
fn a_missing_operator_namespace_fails_fast_with_the_fix() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "needs a cluster without namespace lapse-system; it starts a fresh sandbox of its own",
    )?;
    let sb = Sandbox::start()?;
    let crds = lapse_e2e::workspace_root().join("config/crd");
    let applied = Command::new("kubectl")
        .args(["apply", "--server-side", "-f"])
        .arg(&crds)
        .env("KUBECONFIG", &sb.kubeconfig)
        .output()?;
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let mut env: Vec<(String, String)> = sb
        .azure
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push((
        "KUBECONFIG".into(),
        sb.kubeconfig.to_string_lossy().into_owned(),
    ));
    env.push(("LAPSE_CLUSTER_NAME".into(), "dev".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let started = Instant::now();
    let (code, stderr) = run_with(&env)?;
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("the operator's namespace \"lapse-system\" (--leader-election-namespace, POD_NAMESPACE) does not exist")
            && stderr.contains("--leader-elect=false"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_are_served() -> anyhow::Result<()> {
    let w = World::start().await?;
    let op = w
        .operator
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no operator"))?;
    let health = format!("http://127.0.0.1:{}", op.health_port);
    assert_eq!(
        w.http
            .get(format!("{health}/healthz"))
            .send()
            .await?
            .status(),
        200
    );
    assert_eq!(
        w.http
            .get(format!("{health}/readyz"))
            .send()
            .await?
            .status(),
        200
    );
    // The sweep runs at start-up and lists the target's subscription once: within half a
    // second on the sandbox (checked once, then); real ARM may take longer (polled for a minute).
    let listed = r#"operation="list_role_assignments",outcome="ok""#;
    let patience = match w.target {
        Target::Sandbox(_) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Duration::ZERO
        }
        Target::External(_) => Duration::from_secs(60),
    };
    let deadline = Instant::now() + patience;
    let metrics = loop {
        let metrics = w
            .http
            .get(format!("http://127.0.0.1:{}/metrics", op.metrics_port))
            .send()
            .await?
            .text()
            .await?;
        if metrics.contains(listed) || Instant::now() >= deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for name in [
        "lapse_grants",
        "lapse_reconciles",
        "lapse_reconcile_duration_seconds",
        "lapse_azure_calls_total",
        "lapse_throttle_waits",
        "lapse_overstay_seconds",
        "lapse_revocations_overdue",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert!(metrics.contains(listed), "{metrics}");
    // The chart's alerts and dashboard read only metrics the operator serves, so neither can
    // rot into silence.
    let root = lapse_e2e::workspace_root().join("charts/lapse");
    for file in ["templates/prometheusrule.yaml", "files/dashboard.json"] {
        let text = std::fs::read_to_string(root.join(file))?;
        let mut names: Vec<&str> = text
            .match_indices("lapse_")
            .map(|(at, _)| {
                let rest = &text[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .filter(|n| n.len() > "lapse_".len())
            .collect();
        names.sort_unstable();
        names.dedup();
        assert!(names.len() >= 5, "{file} names too few metrics: {names:?}");
        for name in names {
            assert!(
                metrics.contains(&format!("{name} ")) || metrics.contains(&format!("{name}{{")),
                "{file} reads {name}, which /metrics does not serve:\n{metrics}"
            );
        }
    }
    Ok(())
}
