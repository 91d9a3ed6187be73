//! The real Helm library (Python `helm-sdkpy`, which embeds Helm's Go code) installs and
//! uninstalls a small chart against sim-kube. Needs `pip install --ignore-requires-python helm-sdkpy`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::Command;

const SCRIPT: &str = r#"
import asyncio, sys
import helm_sdkpy as h

async def main(kubeconfig, chart, phase):
    cfg = h.Configuration(namespace="demo", kubeconfig=kubeconfig)
    if phase == "install":
        r = await h.Install(cfg).run("tiny", chart, values={"greeting": "hi"}, wait=True, timeout=60)
        print("status", r["info"]["status"])
    else:
        r = await h.Uninstall(cfg).run("tiny", wait=True, timeout=60)
        print("status", r["release"]["info"]["status"])

asyncio.run(main(*sys.argv[1:]))
"#;

fn helm(kubeconfig: &Path, phase: &str) -> String {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chart");
    let out = Command::new("python3")
        .args([
            "-c",
            SCRIPT,
            kubeconfig.to_str().unwrap(),
            chart.to_str().unwrap(),
            phase,
        ])
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'helm_sdkpy'"),
        "helm-sdkpy is missing: pip install --ignore-requires-python helm-sdkpy"
    );
    assert!(out.status.success(), "helm {phase} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_and_uninstalls_a_chart() {
    let h = support::start().await;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("helm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, h.kubeconfig()).unwrap();

    let kc = kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || helm(&kc, "install"))
        .await
        .unwrap();
    assert!(out.contains("status deployed"), "{out}");
    let cm = h
        .object("", "configmaps", "demo", "tiny-cfg")
        .expect("chart ConfigMap exists");
    assert_eq!(cm["data"]["greeting"], "hi");
    assert!(
        h.object("rbac.authorization.k8s.io", "roles", "demo", "tiny-role")
            .is_some()
    );
    assert!(
        h.object("", "secrets", "demo", "sh.helm.release.v1.tiny.v1")
            .is_some(),
        "release record stored"
    );

    let kc = kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || helm(&kc, "uninstall"))
        .await
        .unwrap();
    assert!(out.contains("status uninstalled"), "{out}");
    assert!(h.object("", "configmaps", "demo", "tiny-cfg").is_none());
    assert!(h.object("", "serviceaccounts", "demo", "tiny-sa").is_none());
    assert!(
        h.object("", "secrets", "demo", "sh.helm.release.v1.tiny.v1")
            .is_none()
    );
    h.shutdown().await;
}
