//! The end-to-end harness: starts `lapse-sandbox` and `lapse-operator` as real processes, and
//! talks to them the way users and workloads do: kubectl, the Kubernetes API, the Entra token
//! endpoint and ARM.
//!
//! Against a real cluster and tenant the same suites need `KUBECONFIG` and the Azure settings of
//! `docs/testing.md`; by default everything runs on the sandbox.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use lapse_api::v1alpha1::{AccessGrant, GrantPhase};
use serde_json::Value;

/// The workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Builds (once per process) and locates the workspace binaries the suites run.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            // Exactly the command `make test` runs first: the same package selection means the
            // same feature unification, so this is a no-op there instead of a second full build.
            // A release bench runs release binaries.
            let release = std::env::current_exe()
                .is_ok_and(|e| e.components().any(|c| c.as_os_str() == "release"));
            let mut args = vec!["build", "--quiet", "--workspace", "--bins"];
            if release {
                args.push("--release");
            }
            let out = Command::new(cargo)
                .args(&args)
                .current_dir(workspace_root())
                .output()
                .map_err(|e| format!("running cargo build: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cargo build --workspace --bins failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            // target/<profile>/deps/<test binary>, or target/<profile>/<bench binary>.
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            exe.ancestors()
                .skip(1)
                .take(2)
                .find(|d| d.join("lapse-operator").is_file())
                .map(Path::to_path_buf)
                .ok_or_else(|| "no target dir holding lapse-operator".into())
        })
        .clone()
        .map_err(|e| anyhow!(e))?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!("{} not found after building", path.display());
    }
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A unique scratch directory under the system temp dir.
fn scratch_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Parses a shell-sourceable `KEY=value` file (values optionally single- or double-quoted).
pub fn parse_env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("export ").unwrap_or(l);
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// A running `lapse-sandbox up`.
#[derive(Debug)]
pub struct Sandbox {
    pub dir: PathBuf,
    child: Child,
    /// `azure.env`, parsed.
    pub azure: HashMap<String, String>,
    pub kubeconfig: PathBuf,
}

impl Sandbox {
    pub fn start() -> anyhow::Result<Self> {
        let dir = scratch_dir("lapse-e2e")?;
        let log = std::fs::File::create(dir.join("sandbox.log"))?;
        let child = Command::new(binary("lapse-sandbox")?)
            .args(["up", "--state-dir"])
            .arg(&dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting lapse-sandbox")?;
        let mut sb = Self {
            azure: HashMap::new(),
            kubeconfig: dir.join("kubeconfig"),
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !sb.dir.join("ready").exists() {
            if let Some(status) = sb.child.try_wait()? {
                bail!(
                    "lapse-sandbox exited with {status}: {}",
                    std::fs::read_to_string(sb.dir.join("sandbox.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("lapse-sandbox not ready after 60s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        sb.azure = parse_env_file(
            &std::fs::read_to_string(sb.dir.join("azure.env")).context("reading azure.env")?,
        );
        Ok(sb)
    }

    pub fn env(&self, key: &str) -> anyhow::Result<&str> {
        self.azure
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("azure.env has no {key}"))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("LAPSE_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A running `lapse-operator run`.
#[derive(Debug)]
pub struct Operator {
    child: Child,
    pub log: PathBuf,
    pub metrics_port: u16,
    pub health_port: u16,
}

impl Operator {
    /// Starts the operator exactly as a user would against the sandbox: the sandbox's
    /// `azure.env` and kubeconfig, a cluster name, nothing else but ports.
    pub fn start(sb: &Sandbox, cluster: &str, extra_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = sb.dir.join(format!("operator-{n}.log"));
        let file = std::fs::File::create(&log)?;
        let (metrics_port, health_port) = (free_port()?, free_port()?);
        let mut cmd = Command::new(binary("lapse-operator")?);
        cmd.arg("run")
            .envs(&sb.azure)
            .env("KUBECONFIG", &sb.kubeconfig)
            .env("LAPSE_CLUSTER_NAME", cluster)
            .env("POD_NAMESPACE", "kube-system")
            .env("LAPSE_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("LAPSE_HEALTH_ADDR", format!("127.0.0.1:{health_port}"))
            .env("LAPSE_SWEEP_INTERVAL", "10s")
            .env("LAPSE_LOG", "info,lapse_controller=debug")
            .stdout(file.try_clone()?)
            .stderr(file);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting lapse-operator")?;
        Ok(Self {
            child,
            log,
            metrics_port,
            health_port,
        })
    }

    /// Waits for /readyz.
    pub async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("lapse-operator exited with {status}:\n{}", self.logs());
            }
            let url = format!("http://127.0.0.1:{}/readyz", self.health_port);
            // "ok" means leading with caches loaded; a standby answers 200 "standby: …".
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
                && r.text().await.is_ok_and(|body| body.trim() == "ok")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("lapse-operator not ready after 60s:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The operator's process ID (for RSS and the like).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no graceful anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Everything a suite needs.
pub struct World {
    pub sandbox: Sandbox,
    pub operator: Option<Operator>,
    pub kube: kube::Client,
    /// Trusts the sandbox's Azure CA.
    pub http: reqwest::Client,
    pub cluster: String,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("sandbox", &self.sandbox)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl World {
    /// Sandbox up, CRDs applied, operator running and ready.
    pub async fn start() -> anyhow::Result<Self> {
        let mut w = Self::sandbox_only().await?;
        w.start_operator(&[]).await?;
        Ok(w)
    }

    /// Sandbox up and CRDs applied; no operator.
    pub async fn sandbox_only() -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sandbox = Sandbox::start()?;
        let kubeconfig = kube::config::Kubeconfig::read_from(&sandbox.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        let kube = kube::Client::try_from(config)?;
        let ca = std::fs::read(sandbox.dir.join("azure-ca.pem")).context("reading azure-ca.pem")?;
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .timeout(Duration::from_secs(30))
            .build()?;
        let w = Self {
            sandbox,
            operator: None,
            kube,
            http,
            cluster: "e2e".into(),
        };
        let crds = workspace_root().join("config/crd");
        w.kubectl_ok(&["apply", "--server-side", "-f", &crds.to_string_lossy()])?;
        w.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/accessgrants.lapse.dev",
            "crd/accesspolicies.lapse.dev",
        ])?;
        Ok(w)
    }

    pub async fn start_operator(&mut self, extra_env: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut op = Operator::start(&self.sandbox, &self.cluster, extra_env)?;
        op.wait_ready(&self.http).await?;
        self.operator = Some(op);
        Ok(())
    }

    pub fn operator_logs(&self) -> String {
        self.operator
            .as_ref()
            .map(Operator::logs)
            .unwrap_or_default()
    }

    /// Runs kubectl against the sandbox.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.sandbox.kubeconfig)
            .output()?)
    }

    /// Runs kubectl and fails with its stderr unless it succeeds; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl apply -f -` with this YAML; returns the output (Ok or the refusal).
    pub fn apply(&self, yaml: &str) -> anyhow::Result<Output> {
        let mut child = Command::new("kubectl")
            .args(["apply", "-f", "-"])
            .env("KUBECONFIG", &self.sandbox.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(yaml.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    pub fn apply_ok(&self, yaml: &str) -> anyhow::Result<()> {
        let out = self.apply(yaml)?;
        if !out.status.success() {
            bail!("kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    pub fn grants(&self, ns: &str) -> Api<AccessGrant> {
        Api::namespaced(self.kube.clone(), ns)
    }

    /// Polls a grant until `pred` holds; fails with the grant and the operator's log otherwise.
    pub async fn wait_grant(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&AccessGrant) -> bool,
    ) -> anyhow::Result<AccessGrant> {
        let deadline = Instant::now() + timeout;
        loop {
            let g = self.grants(ns).get_opt(name).await?;
            if let Some(g) = &g
                && pred(g)
            {
                return Ok(g.clone());
            }
            if Instant::now() > deadline {
                bail!(
                    "grant {ns}/{name} did not reach the expected state in {timeout:?}; last seen: {}\n--- operator log ---\n{}",
                    serde_json::to_string_pretty(&g).unwrap_or_default(),
                    tail(&self.operator_logs(), 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_phase(
        &self,
        ns: &str,
        name: &str,
        phase: GrantPhase,
        timeout: Duration,
    ) -> anyhow::Result<AccessGrant> {
        self.wait_grant(ns, name, timeout, |g| {
            g.status.as_ref().is_some_and(|s| s.phase == phase)
        })
        .await
    }

    fn arm_url(&self, path: &str, api_version: &str) -> anyhow::Result<url::Url> {
        let mut url = self.azure_url()?.join(path.trim_start_matches('/'))?;
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
        Ok(url)
    }

    fn azure_url(&self) -> anyhow::Result<url::Url> {
        Ok(url::Url::parse(self.sandbox.env("LAPSE_ARM_ENDPOINT")?)?)
    }

    /// The sim-azure admin endpoint (the simulator's, not Azure's).
    pub async fn azure_admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = self.azure_url()?.join(path)?;
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("sim-azure admin {path}: {status}: {text}");
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }

    /// Every request Azure saw, oldest first.
    pub async fn audit(&self) -> anyhow::Result<Vec<Value>> {
        let v = self
            .azure_admin(reqwest::Method::GET, "/admin/audit", None)
            .await?;
        Ok(match v {
            Value::Array(a) => a,
            Value::Object(mut o) => match o.remove("entries") {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        })
    }

    /// Adds a sim-azure fault rule.
    pub async fn azure_fault(&self, rule: Value) -> anyhow::Result<()> {
        self.azure_admin(reqwest::Method::POST, "/admin/faults", Some(rule))
            .await
            .map(|_| ())
    }

    pub async fn clear_azure_faults(&self) -> anyhow::Result<()> {
        self.azure_admin(reqwest::Method::DELETE, "/admin/faults", None)
            .await
            .map(|_| ())
    }

    /// A ServiceAccount token for the workload, as the kubelet would project it.
    pub async fn service_account_token(&self, ns: &str, sa: &str) -> anyhow::Result<String> {
        let sas: Api<ServiceAccount> = Api::namespaced(self.kube.clone(), ns);
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec!["api://AzureADTokenExchange".into()],
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let tr: TokenRequest = sas
            .create_token_request(sa, &PostParams::default(), &req)
            .await?;
        tr.status
            .map(|s| s.token)
            .ok_or_else(|| anyhow!("TokenRequest returned no token"))
    }

    /// Exchanges a ServiceAccount token for an ARM access token of `client_id` (workload
    /// identity federation). Err carries Entra's error body.
    pub async fn exchange(
        &self,
        assertion: &str,
        client_id: &str,
    ) -> anyhow::Result<Result<String, String>> {
        self.token_request(
            self.azure_url()?.as_str(),
            &[
                ("client_id", client_id),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
            ],
        )
        .await
    }

    /// A client-credentials request at the sandbox's Entra endpoint for a token to `resource`,
    /// with these credential fields. Err carries Entra's error body.
    async fn token_request(
        &self,
        resource: &str,
        credential: &[(&str, &str)],
    ) -> anyhow::Result<Result<String, String>> {
        let authority = self
            .sandbox
            .env("AZURE_AUTHORITY_HOST")?
            .trim_end_matches('/')
            .to_owned();
        let tenant = self.sandbox.env("AZURE_TENANT_ID")?;
        let scope = format!("{}/.default", resource.trim_end_matches('/'));
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("grant_type", "client_credentials"),
                ("scope", scope.as_str()),
            ])
            .extend_pairs(credential.iter().copied())
            .finish();
        let resp = self
            .http
            .post(format!("{authority}/{tenant}/oauth2/v2.0/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await?;
        Ok(match v.get("access_token").and_then(Value::as_str) {
            Some(token) if ok => Ok(token.to_owned()),
            _ => Err(v.to_string()),
        })
    }

    /// An ARM GET with a bearer token; returns the HTTP status.
    pub async fn arm_get(&self, token: &str, path: &str, api_version: &str) -> anyhow::Result<u16> {
        let resp = self
            .http
            .get(self.arm_url(path, api_version)?)
            .bearer_auth(token)
            .send()
            .await?;
        Ok(resp.status().as_u16())
    }

    /// The workload's view: SA token → FIC exchange → ARM read of `resource`. `None` when the
    /// exchange itself is refused (no FIC), else the read's HTTP status.
    pub async fn workload_read(
        &self,
        ns: &str,
        sa: &str,
        client_id: &str,
        resource: &str,
        api_version: &str,
    ) -> anyhow::Result<Option<u16>> {
        let assertion = self.service_account_token(ns, sa).await?;
        match self.exchange(&assertion, client_id).await? {
            Ok(token) => Ok(Some(self.arm_get(&token, resource, api_version).await?)),
            Err(_) => Ok(None),
        }
    }
}

/// The last `n` lines of a log.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl World {
    /// An ARM token for the operator's own service principal (client secret from azure.env).
    pub async fn operator_token(&self) -> anyhow::Result<String> {
        self.operator_token_for(self.azure_url()?.as_str()).await
    }

    /// An ARM GET as the operator, parsed.
    pub async fn arm_json(&self, path: &str, api_version: &str) -> anyhow::Result<(u16, Value)> {
        let token = self.operator_token().await?;
        let resp = self
            .http
            .get(self.arm_url(path, api_version)?)
            .bearer_auth(token)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// The sandbox's subscription ID.
    pub fn subscription(&self) -> anyhow::Result<&str> {
        self.sandbox.env("AZURE_SUBSCRIPTION_ID")
    }

    /// Resource ID and client ID of one of the sandbox's user-assigned identities.
    pub async fn identity(&self, name: &str) -> anyhow::Result<(String, String)> {
        let id = format!(
            "/subscriptions/{}/resourceGroups/lapse-demo-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
            self.subscription()?
        );
        let (status, v) = self.arm_json(&id, "2023-01-31").await?;
        if status != 200 {
            bail!("GET {id}: {status} {v}");
        }
        let client_id = v
            .pointer("/properties/clientId")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("no clientId in {v}"))?;
        Ok((id, client_id.to_owned()))
    }

    /// Role assignments in the sandbox subscription, as ARM lists them.
    pub async fn role_assignments(&self) -> anyhow::Result<Vec<Value>> {
        let path = format!(
            "/subscriptions/{}/providers/Microsoft.Authorization/roleAssignments",
            self.subscription()?
        );
        let (status, v) = self.arm_json(&path, "2022-04-01").await?;
        if status != 200 {
            bail!("listing role assignments: {status} {v}");
        }
        Ok(v.get("value")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }
}

/// Requests Azure saw, grouped by lower-cased path: for `method` and paths containing `part`.
pub fn requests_by_path<'a>(
    audit: &'a [Value],
    method: &str,
    part: &str,
) -> std::collections::BTreeMap<String, Vec<&'a Value>> {
    let part = part.to_ascii_lowercase();
    let mut out: std::collections::BTreeMap<String, Vec<&'a Value>> = Default::default();
    for e in audit {
        let path = e
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase();
        if e.get("method").and_then(Value::as_str) == Some(method) && path.contains(&part) {
            out.entry(path).or_default().push(e);
        }
    }
    out
}

/// Whether an audit entry was answered with a 2xx.
pub fn succeeded(entry: &Value) -> bool {
    entry
        .get("status")
        .and_then(Value::as_u64)
        .is_some_and(|s| (200..300).contains(&s))
}

/// The sandbox's user-assigned identities (the ones the suites grant to).
pub const SANDBOX_IDENTITIES: [&str; 2] = ["backup-runner", "report-agent"];

impl World {
    /// SIGKILLs the operator, if one runs; returns it so its log stays readable.
    pub fn kill_operator(&mut self) -> Option<Operator> {
        let mut op = self.operator.take()?;
        op.kill();
        Some(op)
    }

    /// The operator's Prometheus exposition.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let op = self
            .operator
            .as_ref()
            .ok_or_else(|| anyhow!("no operator running"))?;
        let url = format!("http://127.0.0.1:{}/metrics", op.metrics_port);
        Ok(self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// Adds a sim-kube fault (`POST /sim-kube/faults` with the kubeconfig's admin token), e.g.
    /// `{"action":"drop-watches"}`, `{"action":"compact"}`, `{"action":"restart"}`.
    pub async fn kube_fault(&self, rule: Value) -> anyhow::Result<()> {
        let server = self.kubectl_ok(&[
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ])?;
        let token = self.kubectl_ok(&[
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            "jsonpath={.users[0].user.token}",
        ])?;
        let ca = std::fs::read(self.sandbox.dir.join("kube-ca.pem")).context("kube-ca.pem")?;
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .timeout(Duration::from_secs(10))
            .build()?;
        let resp = http
            .post(format!("{}/sim-kube/faults", server.trim_end_matches('/')))
            .bearer_auth(token.trim())
            .json(&rule)
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("sim-kube fault {rule}: {status}: {}", resp.text().await?);
        }
        Ok(())
    }

    /// FICs on a user-assigned identity, as ARM lists them.
    pub async fn fics(&self, identity_id: &str) -> anyhow::Result<Vec<Value>> {
        let path = format!("{identity_id}/federatedIdentityCredentials");
        let (status, v) = self.arm_json(&path, "2023-01-31").await?;
        if status != 200 {
            bail!("listing FICs of {identity_id}: {status} {v}");
        }
        Ok(v.get("value")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// IDs (lower-cased) of every Azure object carrying this cluster's marker: role
    /// assignments by description, FICs on the sandbox identities by name.
    pub async fn owned_objects(&self) -> anyhow::Result<std::collections::BTreeSet<String>> {
        let mut out = std::collections::BTreeSet::new();
        for ra in self.role_assignments().await? {
            let desc = ra
                .pointer("/properties/description")
                .and_then(Value::as_str);
            if lapse_api::naming::is_owned_by(desc, &self.cluster)
                && let Some(id) = ra.get("id").and_then(Value::as_str)
            {
                out.insert(id.to_ascii_lowercase());
            }
        }
        for name in SANDBOX_IDENTITIES {
            let (identity, _) = self.identity(name).await?;
            for f in self.fics(&identity).await? {
                let fic_name = f.get("name").and_then(Value::as_str).unwrap_or_default();
                if lapse_api::naming::fic_cluster(fic_name) == Some(self.cluster.as_str())
                    && let Some(id) = f.get("id").and_then(Value::as_str)
                {
                    out.insert(id.to_ascii_lowercase());
                }
            }
        }
        Ok(out)
    }

    /// Polls every grant of `ns` until all of `names` satisfy `pred`; fails naming the ones
    /// that do not, with the operator's log.
    pub async fn wait_all(
        &self,
        ns: &str,
        names: &[String],
        timeout: Duration,
        pred: impl Fn(&AccessGrant) -> bool,
    ) -> anyhow::Result<Vec<AccessGrant>> {
        let deadline = Instant::now() + timeout;
        loop {
            let list = self.grants(ns).list(&Default::default()).await?;
            let found: Vec<AccessGrant> = list
                .items
                .into_iter()
                .filter(|g| g.metadata.name.as_ref().is_some_and(|n| names.contains(n)))
                .collect();
            let lagging: Vec<String> = names
                .iter()
                .filter(|n| {
                    !found
                        .iter()
                        .any(|g| g.metadata.name.as_ref() == Some(n) && pred(g))
                })
                .cloned()
                .collect();
            if lagging.is_empty() {
                return Ok(found);
            }
            if Instant::now() > deadline {
                let states: Vec<String> = found
                    .iter()
                    .filter(|g| {
                        g.metadata
                            .name
                            .as_ref()
                            .is_some_and(|n| lagging.contains(n))
                    })
                    .map(|g| {
                        format!(
                            "{}: {}",
                            g.metadata.name.as_deref().unwrap_or_default(),
                            serde_json::to_string(&g.status).unwrap_or_default()
                        )
                    })
                    .collect();
                bail!(
                    "grants {lagging:?} in {ns} not in the expected state after {timeout:?}:\n{}\n--- operator log ---\n{}",
                    states.join("\n"),
                    tail(&self.operator_logs(), 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `pred` holds for the Azure objects carrying this cluster's marker.
    pub async fn wait_owned(
        &self,
        timeout: Duration,
        pred: impl Fn(&std::collections::BTreeSet<String>) -> bool,
    ) -> anyhow::Result<std::collections::BTreeSet<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let owned = self.owned_objects().await?;
            if pred(&owned) {
                return Ok(owned);
            }
            if Instant::now() > deadline {
                bail!(
                    "Azure objects not as expected after {timeout:?}: {owned:#?}\n--- operator log ---\n{}",
                    tail(&self.operator_logs(), 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// IDs (lower-cased) of the Azure objects a grant's status records.
pub fn recorded_ids(g: &AccessGrant) -> Vec<String> {
    let Some(s) = &g.status else {
        return Vec::new();
    };
    s.role_assignments
        .iter()
        .filter_map(|r| r.id.clone())
        .chain(s.federated_credential.iter().filter_map(|f| f.id.clone()))
        .map(|id| id.to_ascii_lowercase())
        .collect()
}

/// When Azure acknowledged a request: its arrival plus the time it took to answer.
pub fn acknowledged_at(entry: &Value) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let arrived: chrono::DateTime<chrono::Utc> = serde_json::from_value(
        entry
            .get("time")
            .cloned()
            .ok_or_else(|| anyhow!("audit entry without time: {entry}"))?,
    )?;
    let latency_us = entry.get("latency").and_then(Value::as_f64).unwrap_or(0.0) * 1000.0;
    Ok(arrived + chrono::TimeDelta::microseconds(latency_us as i64))
}

/// One Event recorded on an object, as `kubectl get events` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeEvent {
    /// `Normal` or `Warning`.
    pub type_: String,
    pub reason: String,
    pub message: String,
}

impl World {
    /// The PHASE column of `kubectl get accessgrant NAME`.
    pub fn phase_column(&self, ns: &str, name: &str) -> anyhow::Result<String> {
        let out = self.kubectl_ok(&["-n", ns, "get", "accessgrant", name])?;
        let mut lines = out.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let row: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let col = header
            .iter()
            .position(|h| *h == "PHASE")
            .ok_or_else(|| anyhow!("no PHASE column in:\n{out}"))?;
        row.get(col)
            .map(|s| (*s).to_owned())
            .ok_or_else(|| anyhow!("no PHASE value in:\n{out}"))
    }

    /// One field of a grant through `kubectl get -o jsonpath` (e.g. `{.status.message}`).
    pub fn grant_jsonpath(&self, ns: &str, name: &str, path: &str) -> anyhow::Result<String> {
        self.kubectl_ok(&[
            "-n",
            ns,
            "get",
            "accessgrant",
            name,
            "-o",
            &format!("jsonpath={path}"),
        ])
    }

    /// The Events recorded on a grant, oldest first, as `kubectl get events` lists them.
    pub fn events(&self, ns: &str, name: &str) -> anyhow::Result<Vec<KubeEvent>> {
        let out = self.kubectl_ok(&[
            "-n",
            ns,
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.kind=AccessGrant,involvedObject.name={name}"),
            "-o",
            "json",
        ])?;
        let v: Value = serde_json::from_str(&out)?;
        let text = |e: &Value, k: &str| {
            e.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(v.get("items")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|e| KubeEvent {
                        type_: text(e, "type"),
                        reason: text(e, "reason"),
                        message: text(e, "message"),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Waits for an Event with this reason on a grant (Events are published after the status).
    pub async fn wait_event(
        &self,
        ns: &str,
        name: &str,
        reason: &str,
        timeout: Duration,
    ) -> anyhow::Result<KubeEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events(ns, name)?;
            if let Some(e) = events.iter().find(|e| e.reason == reason) {
                return Ok(e.clone());
            }
            if Instant::now() > deadline {
                bail!("no {reason} Event on {ns}/{name} after {timeout:?}; seen: {events:#?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `kubectl patch --type merge` of a grant; returns the output (Ok or the refusal).
    pub fn patch_grant(&self, ns: &str, name: &str, patch: &str) -> anyhow::Result<Output> {
        self.kubectl(&[
            "-n",
            ns,
            "patch",
            "accessgrant",
            name,
            "--type",
            "merge",
            "-p",
            patch,
        ])
    }

    /// A namespace with these ServiceAccounts.
    pub fn namespace_with(&self, ns: &str, service_accounts: &[&str]) -> anyhow::Result<()> {
        self.kubectl_ok(&["create", "namespace", ns])?;
        for sa in service_accounts {
            self.kubectl_ok(&["-n", ns, "create", "serviceaccount", sa])?;
        }
        Ok(())
    }

    /// An access token of the operator's service principal for `resource`
    /// (`https://graph.microsoft.com`, or ARM).
    async fn operator_token_for(&self, resource: &str) -> anyhow::Result<String> {
        self.token_request(
            resource,
            &[
                ("client_id", self.sandbox.env("AZURE_CLIENT_ID")?),
                ("client_secret", self.sandbox.env("AZURE_CLIENT_SECRET")?),
            ],
        )
        .await?
        .map_err(|e| anyhow!("the operator's token request for {resource} was refused: {e}"))
    }

    /// A Microsoft Graph GET (path under `/v1.0`) as the operator, parsed.
    pub async fn graph_json(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let token = self
            .operator_token_for("https://graph.microsoft.com")
            .await?;
        let base = self
            .sandbox
            .env("LAPSE_GRAPH_ENDPOINT")?
            .trim_end_matches('/');
        let resp = self
            .http
            .get(format!("{base}/v1.0/{}", path.trim_start_matches('/')))
            .bearer_auth(token)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Object ID, client (app) ID and service principal object ID of an app registration the
    /// operator owns, found by display name through Graph.
    pub async fn application(
        &self,
        display_name: &str,
    ) -> anyhow::Result<(String, String, String)> {
        let (status, v) = self.graph_json("/applications").await?;
        if status != 200 {
            bail!("listing applications: {status} {v}");
        }
        let app = v
            .get("value")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|x| x.get("displayName").and_then(Value::as_str) == Some(display_name))
            })
            .ok_or_else(|| anyhow!("no application {display_name:?} in {v}"))?;
        let field = |v: &Value, k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("no {k} in {v}"))
        };
        let (object_id, app_id) = (field(app, "id")?, field(app, "appId")?);
        let (status, sp) = self
            .graph_json(&format!("/servicePrincipals(appId='{app_id}')"))
            .await?;
        if status != 200 {
            bail!("service principal of {app_id}: {status} {sp}");
        }
        Ok((object_id, app_id, field(&sp, "id")?))
    }

    /// An ARM PUT as the operator's service principal (what a human with its rights could do).
    pub async fn arm_put(
        &self,
        path: &str,
        api_version: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let token = self.operator_token().await?;
        let resp = self
            .http
            .put(self.arm_url(path, api_version)?)
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// The full role definition ID of a role, by name, as ARM resolves it in the subscription.
    pub async fn role_definition_id(&self, role_name: &str) -> anyhow::Result<String> {
        let path = format!(
            "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions",
            self.subscription()?
        );
        let token = self.operator_token().await?;
        let mut url = self.arm_url(&path, "2022-04-01")?;
        url.query_pairs_mut()
            .append_pair("$filter", &format!("roleName eq '{role_name}'"));
        let v: Value = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        v.pointer("/value/0/id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no role definition {role_name:?}: {v}"))
    }

    /// Role assignments of one principal (ARM's list, filtered here).
    pub async fn assignments_of(&self, principal_id: &str) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .role_assignments()
            .await?
            .into_iter()
            .filter(|ra| {
                ra.pointer("/properties/principalId")
                    .and_then(Value::as_str)
                    .is_some_and(|p| p.eq_ignore_ascii_case(principal_id))
            })
            .collect())
    }
}
