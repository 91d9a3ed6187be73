//! `lapse-sandbox probe` reports how far a workload gets (token exchange refused, 403, 200) and
//! exits 0 only on 200; `lapse-sandbox audit` lists what Azure saw, `--writes` only changes.
//! Access is granted here by hand, as the operator's service principal, so the sandbox's
//! commands are tested without the operator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";

/// A running `lapse-sandbox up`, stopped with SIGTERM on drop.
struct Sandbox {
    dir: PathBuf,
    child: Child,
    env: HashMap<String, String>,
}

impl Sandbox {
    fn start() -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sandbox-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut child = Command::new(env!("CARGO_BIN_EXE_lapse-sandbox"))
            .arg("up")
            .arg("--state-dir")
            .arg(&dir)
            .arg("--apply")
            .arg(root.join("config/crd"))
            .arg("--apply")
            .arg(root.join("config/samples/serviceaccount.yaml"))
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
        let env = std::fs::read_to_string(dir.join("azure.env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
            .collect();
        Self { dir, child, env }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_lapse-sandbox"))
            .args(&args[..1])
            .arg("--state-dir")
            .arg(&self.dir)
            .args(&args[1..])
            .output()
            .unwrap()
    }

    fn probe(&self, storage: &str, service_account: &str) -> (Option<i32>, String, String) {
        let out = self.run(&[
            "probe",
            "--namespace",
            "demo",
            "--service-account",
            service_account,
            "--identity",
            "backup-runner",
            "--resource",
            storage,
        ]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// ARM as the operator's service principal (its client secret from azure.env).
struct Arm {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Arm {
    async fn new(sb: &Sandbox) -> Self {
        let ca = std::fs::read(sb.dir.join("azure-ca.pem")).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let base = sb.env["LAPSE_ARM_ENDPOINT"]
            .trim_end_matches('/')
            .to_owned();
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &sb.env["AZURE_CLIENT_ID"])
            .append_pair("client_secret", &sb.env["AZURE_CLIENT_SECRET"])
            .append_pair("scope", &format!("{base}/.default"))
            .finish();
        let v: Value = http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                sb.env["AZURE_AUTHORITY_HOST"].trim_end_matches('/'),
                sb.env["AZURE_TENANT_ID"]
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = v["access_token"].as_str().unwrap().to_owned();
        Self { http, base, token }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }
}

#[tokio::test]
async fn probe_reports_each_stage_and_audit_lists_the_writes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sb = Sandbox::start();
    let sub = sb.env["AZURE_SUBSCRIPTION_ID"].clone();
    let rg = format!("/subscriptions/{sub}/resourceGroups/lapse-demo-rg");
    let storage = format!("{rg}/providers/Microsoft.Storage/storageAccounts/lapsedemodata");
    let mi =
        format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/backup-runner");

    // No federated credential: no record matches the token's issuer, and Entra refuses it.
    let (code, line, _) = sb.probe(&storage, "backup-runner");
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.starts_with("token exchange refused: AADSTS700211: No matching federated identity record found for presented assertion issuer '"),
        "{line}"
    );

    // A FIC for demo/backup-runner: the exchange works, but the identity has no role yet.
    let arm = Arm::new(&sb).await;
    arm.call(
        reqwest::Method::PUT,
        &format!("{mi}/federatedIdentityCredentials/probe-test?api-version=2023-01-31"),
        Some(json!({"properties": {
            "issuer": sb.env["LAPSE_OIDC_ISSUER"],
            "subject": "system:serviceaccount:demo:backup-runner",
            "audiences": ["api://AzureADTokenExchange"],
        }})),
    )
    .await;
    let (code, line, _) = sb.probe(&storage, "backup-runner");
    assert_eq!(code, Some(1), "{line}");
    assert_eq!(
        line,
        "GET …/storageAccounts/lapsedemodata → 403 AuthorizationFailed"
    );

    // Reader on the storage account: the read is allowed.
    let identity = arm
        .call(
            reqwest::Method::GET,
            &format!("{mi}?api-version=2023-01-31"),
            None,
        )
        .await;
    let principal = identity["properties"]["principalId"].as_str().unwrap();
    arm.call(
        reqwest::Method::PUT,
        &format!("{storage}/providers/Microsoft.Authorization/roleAssignments/6d1c3e2a-0c4b-4d3e-9f10-2a3b4c5d6e7f?api-version=2022-04-01"),
        Some(json!({"properties": {
            "roleDefinitionId": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{READER}"),
            "principalId": principal,
            "principalType": "ServicePrincipal",
        }})),
    )
    .await;
    let (code, line, _) = sb.probe(&storage, "backup-runner");
    assert_eq!(line, "GET …/storageAccounts/lapsedemodata → 200 OK");
    assert_eq!(code, Some(0));

    // A ServiceAccount that does not exist: the error names it.
    let (code, line, stderr) = sb.probe(&storage, "nobody");
    assert_ne!(code, Some(0), "{line}");
    assert!(
        stderr.contains("ServiceAccount demo/nobody"),
        "stderr: {stderr}"
    );

    // --writes: exactly the two PUTs made above, by the operator's principal, by name.
    let out = sb.run(&["audit", "--writes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let writes = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = writes.lines().collect();
    assert_eq!(lines.len(), 2, "{writes}");
    let fic = lines
        .iter()
        .find(|l| {
            l.contains(
                "userAssignedIdentities/backup-runner/federatedIdentityCredentials/probe-test",
            )
        })
        .unwrap_or_else(|| panic!("no FIC PUT in:\n{writes}"));
    let ra = lines
        .iter()
        .find(|l| {
            l.contains("lapse-demo-rg/storageAccounts/lapsedemodata/roleAssignments/6d1c3e2a…")
        })
        .unwrap_or_else(|| panic!("no role assignment PUT in:\n{writes}"));
    for l in [fic, ra] {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(cols[1..3], ["lapse-operator", "PUT"], "{l}");
        assert_eq!(cols.last(), Some(&"201"), "{l}");
    }
    // Aligned: the path column starts at the same offset on every line.
    let at = |l: &str| l.find("lapse-demo-rg").unwrap();
    assert_eq!(at(lines[0]), at(lines[1]), "{writes}");

    // Without --writes: the reads and token requests too, refused ones with their codes.
    let out = sb.run(&["audit"]);
    assert!(out.status.success());
    let all = String::from_utf8_lossy(&out.stdout);
    assert!(all.lines().count() > lines.len(), "{all}");
    assert!(
        all.lines().any(|l| l.contains(" POST ")
            && l.contains("oauth2/v2.0/token")
            && l.contains("AADSTS700211")),
        "{all}"
    );
    assert!(
        all.lines().any(|l| l.contains("mi/backup-runner")
            && l.contains(" GET ")
            && l.contains("403 AuthorizationFailed")),
        "{all}"
    );
}

#[test]
fn commands_on_a_directory_without_a_sandbox_say_so() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-sandbox-here");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lapse-sandbox"))
        .args(["audit", "--state-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no `ready` file"), "{stderr}");
}
