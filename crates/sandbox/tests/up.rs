//! `lapse-sandbox up` applies manifests, writes a usable kubeconfig and CA, then `ready` last,
//! and stops on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kubectl() -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH is set");
    let found = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl is on PATH");
    let real = std::fs::canonicalize(found).unwrap();
    real.parent().unwrap().join("kubectl.1.33")
}

#[test]
fn up_writes_state_then_ready_and_stops_on_sigterm() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sandbox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lapse-sandbox"))
        .args(["up", "--state-dir", dir.to_str().unwrap(), "--apply"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/crd"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("ready").exists() {
        assert!(Instant::now() < deadline, "ready never appeared");
        assert!(child.try_wait().unwrap().is_none(), "sandbox exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ca = std::fs::read_to_string(dir.join("kube-ca.pem")).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    let kubeconfig = std::fs::read_to_string(dir.join("kubeconfig")).unwrap();
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&kubeconfig).unwrap();
    assert_eq!(parsed["current-context"].as_str(), Some("lapse-sandbox"));

    // Real kubectl trusts the embedded CA and sees the seeded namespaces.
    let out = Command::new(kubectl())
        .args(["get", "namespaces", "-o", "name"])
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("HOME", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = String::from_utf8_lossy(&out.stdout);
    for ns in [
        "namespace/default",
        "namespace/kube-system",
        "namespace/demo",
    ] {
        assert!(names.lines().any(|l| l == ns), "{ns} missing from {names}");
    }

    // The Azure side: azure.env names every setting the operator reads, and its CA is written.
    let env = std::fs::read_to_string(dir.join("azure.env")).unwrap();
    for key in [
        "AZURE_TENANT_ID=",
        "AZURE_SUBSCRIPTION_ID=",
        "AZURE_CLIENT_ID=",
        "AZURE_CLIENT_SECRET=",
        "AZURE_AUTHORITY_HOST=",
        "LAPSE_ARM_ENDPOINT=",
        "LAPSE_GRAPH_ENDPOINT=",
        "LAPSE_AZURE_CA_BUNDLE=",
        "LAPSE_OIDC_ISSUER=",
    ] {
        assert!(
            env.lines().any(|l| l.contains(key)),
            "{key} missing from azure.env:\n{env}"
        );
    }
    let issuer_line = env
        .lines()
        .find(|l| l.contains("LAPSE_OIDC_ISSUER="))
        .unwrap();
    let kube_url = std::fs::read_to_string(dir.join("ready")).unwrap();
    let kube_url = kube_url
        .lines()
        .find_map(|l| l.strip_prefix("kube="))
        .unwrap()
        .to_owned();
    assert!(
        issuer_line.contains(&kube_url),
        "the FIC issuer is sim-kube's: {issuer_line} vs {kube_url}"
    );
    let azure_ca = std::fs::read_to_string(dir.join("azure-ca.pem")).unwrap();
    assert!(azure_ca.starts_with("-----BEGIN CERTIFICATE-----"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "sandbox did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit}");
    assert!(!dir.join("ready").exists(), "ready is removed on shutdown");
}
