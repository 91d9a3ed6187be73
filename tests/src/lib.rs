//! The end-to-end harness: starts `lapse-operator` (and, by default, `lapse-sandbox`) as real
//! processes, and talks to them the way users and workloads do: kubectl, the Kubernetes API, the
//! Entra token endpoint and ARM.
//!
//! With `LAPSE_E2E_TARGET=external` the same suites run on the cluster in `KUBECONFIG` and the
//! Azure tenant of the settings in `docs/testing.md` ([`target`]); by default everything runs
//! on a fresh sandbox per test.
#![forbid(unsafe_code)]

pub mod chaos;
mod layering;
mod operator;
pub mod target;
mod ticket_checker;

pub use operator::{Operator, binary, free_port, scratch_dir};
pub use target::{
    Capability, External, ExternalSettings, Fixtures, Sandbox, TARGET_VAR, Target, Timing,
    external_selected, parse_env_file, sandbox_fixtures, sandbox_only,
};
pub use ticket_checker::TicketChecker;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
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

/// Everything an end-to-end suite needs: the target, the operator, clients, and the names and
/// clocks of the target. (`crates/controller/tests/inproc` has a `World` of its own that runs
/// the controllers in the test's process instead of the binaries.)
pub struct World {
    pub target: Target,
    pub operator: Option<Operator>,
    pub kube: kube::Client,
    /// Trusts the target's Azure CA bundle, when it has one.
    pub http: reqwest::Client,
    /// The operator's `LAPSE_CLUSTER_NAME`.
    pub cluster: String,
    /// Where the operator keeps its leader Lease.
    pub operator_namespace: String,
    pub fixtures: Fixtures,
    pub timing: Timing,
    /// What the suite made on an external cluster, deleted when the World goes.
    created: std::sync::Mutex<Created>,
}

#[derive(Debug, Default)]
struct Created {
    namespaces: Vec<String>,
    policies: Vec<String>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("target", &self.target)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Drop for World {
    /// On an external cluster, deletes what the suite made while the operator still runs, so
    /// that its finalizers revoke the grants' Azure objects; the sandbox simply goes.
    fn drop(&mut self) {
        if !matches!(self.target, Target::External(_)) {
            return;
        }
        let created = self
            .created
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        let timeout = format!(
            "--timeout={}s",
            self.scaled(Duration::from_secs(60)).as_secs()
        );
        let operator_running = self.operator.as_mut().is_some_and(Operator::is_running);
        for ns in &created.namespaces {
            let out = self.kubectl(&["delete", "namespace", ns, "--ignore-not-found", &timeout]);
            if !out.as_ref().is_ok_and(|o| o.status.success()) {
                eprintln!(
                    "cleanup: namespace {ns} did not go{}; its grants' Azure objects go with the \
                     next start-up sweep of cluster name {:?}",
                    if operator_running {
                        ""
                    } else {
                        " (no operator running)"
                    },
                    self.cluster
                );
            }
        }
        for policy in &created.policies {
            let _ = self.kubectl(&["delete", "accesspolicy", policy, "--ignore-not-found"]);
        }
        // The next suite's operator need not wait for this one's leader Lease to expire.
        if let Some(op) = self.operator.as_mut() {
            op.stop();
        }
    }
}

/// The target the environment selects: a fresh sandbox, or the external cluster and tenant.
fn target_from_env() -> anyhow::Result<Target> {
    if external_selected() {
        Ok(Target::External(External::acquire(
            ExternalSettings::from_env()?,
        )?))
    } else {
        Ok(Target::Sandbox(Sandbox::start()?))
    }
}

impl World {
    /// The target up, CRDs applied, operator running and ready.
    pub async fn start() -> anyhow::Result<Self> {
        let mut w = Self::without_operator().await?;
        w.start_operator(&[]).await?;
        Ok(w)
    }

    /// The target up and CRDs applied; no operator.
    pub async fn without_operator() -> anyhow::Result<Self> {
        Self::on(target_from_env()?).await
    }

    /// A World on this target, CRDs applied; no operator.
    pub async fn on(target: Target) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (fixtures, timing, cluster, operator_namespace) = match &target {
            Target::Sandbox(sb) => (
                sandbox_fixtures(sb.env("AZURE_SUBSCRIPTION_ID")?),
                Timing::SANDBOX,
                "e2e".to_owned(),
                "kube-system".to_owned(),
            ),
            Target::External(x) => (
                x.settings.fixtures.clone(),
                x.settings.timing,
                x.settings.cluster.clone(),
                x.settings.operator_namespace.clone(),
            ),
        };
        let kubeconfig = kube::config::Kubeconfig::read_from(target.kubeconfig())
            .with_context(|| format!("reading {}", target.kubeconfig().display()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        let kube = kube::Client::try_from(config)?;
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(bundle) = target.azure().get("LAPSE_AZURE_CA_BUNDLE") {
            let pem = std::fs::read(bundle)
                .with_context(|| format!("reading LAPSE_AZURE_CA_BUNDLE {bundle}"))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
                http = http.add_root_certificate(cert);
            }
        }
        let w = Self {
            target,
            operator: None,
            kube,
            http: http.build()?,
            cluster,
            operator_namespace,
            fixtures,
            timing,
            created: Default::default(),
        };
        let crds = workspace_root().join("config/crd");
        w.kubectl_ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &crds.to_string_lossy(),
        ])?;
        w.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/accessgrants.lapse.dev",
            "crd/accessapprovals.lapse.dev",
            "crd/accesspolicies.lapse.dev",
        ])?;
        Ok(w)
    }

    pub async fn start_operator(&mut self, extra_env: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut op = self.spawn_operator(extra_env)?;
        op.wait_ready(&self.http).await?;
        self.operator = Some(op);
        Ok(())
    }

    /// Another operator process on this World's target and cluster name (not waited for, not
    /// kept: a standby replica, say).
    pub fn spawn_operator(&self, extra_env: &[(&str, &str)]) -> anyhow::Result<Operator> {
        Operator::start(
            &self.target,
            &self.cluster,
            &self.operator_namespace,
            extra_env,
        )
    }

    pub fn operator_logs(&self) -> String {
        self.operator
            .as_ref()
            .map(Operator::logs)
            .unwrap_or_default()
    }

    /// Whether the target gives the suites this power.
    pub fn has(&self, cap: Capability) -> bool {
        self.target.has(cap)
    }

    /// A lease of `secs` seconds on this target's clock, for a manifest (`"8s"` on the
    /// sandbox).
    pub fn lease(&self, secs: u64) -> String {
        self.timing.lease(secs)
    }

    /// A wait or timeout on this target's clock.
    pub fn scaled(&self, d: Duration) -> Duration {
        self.timing.scaled(d)
    }

    /// Reads until `read` gives `want`, for as long as Azure may take to make a change visible
    /// (once, on the sandbox: there it must hold at once). Fails naming `what` and the last
    /// value seen.
    pub async fn settle<T: PartialEq + std::fmt::Debug>(
        &self,
        what: &str,
        want: T,
        mut read: impl AsyncFnMut() -> anyhow::Result<T>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.timing.propagation;
        loop {
            let got = read().await?;
            if got == want {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{what}: expected {want:?}, saw {got:?} (after {:?})",
                    self.timing.propagation
                );
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Azure's request log, where the target has one (the sandbox); `None` on a real tenant.
    pub async fn audit_log(&self) -> anyhow::Result<Option<Vec<Value>>> {
        if self.has(Capability::AuditLog) {
            Ok(Some(self.audit().await?))
        } else {
            Ok(None)
        }
    }

    /// The Azure settings of the target (`azure.env` on the sandbox).
    pub fn env(&self, key: &str) -> anyhow::Result<&str> {
        self.target.env(key)
    }

    /// The target's kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        self.target.kubeconfig()
    }

    /// Records what a suite creates on an external cluster, so that it goes with the World.
    fn remember(&self, kind: &str, name: &str) {
        let Ok(mut c) = self.created.lock() else {
            return;
        };
        let list = match kind {
            "Namespace" => &mut c.namespaces,
            "AccessPolicy" => &mut c.policies,
            _ => return,
        };
        if !list.iter().any(|n| n == name) {
            list.push(name.to_owned());
        }
    }

    /// Records the namespaces and policies of a manifest.
    fn remember_manifest(&self, yaml: &str) {
        use serde::Deserialize as _;
        for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
            let Ok(v) = Value::deserialize(doc) else {
                continue;
            };
            if let (Some(kind), Some(name)) = (
                v.get("kind").and_then(Value::as_str),
                v.pointer("/metadata/name").and_then(Value::as_str),
            ) {
                self.remember(kind, name);
            }
        }
    }

    /// Runs kubectl against the target.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        if let ["create", "namespace", name, ..] = args {
            self.remember("Namespace", name);
        }
        Ok(Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
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
        self.apply_as(None, &[], yaml)
    }

    /// `kubectl create -f -` as another user (`--as`, `--as-group`: the admin kubeconfig may
    /// impersonate anyone), with this YAML; returns the output (Ok or the refusal).
    pub fn create_as(&self, user: &str, groups: &[&str], yaml: &str) -> anyhow::Result<Output> {
        self.kubectl_stdin(Some(user), groups, "create", yaml)
    }

    fn apply_as(&self, user: Option<&str>, groups: &[&str], yaml: &str) -> anyhow::Result<Output> {
        self.kubectl_stdin(user, groups, "apply", yaml)
    }

    fn kubectl_stdin(
        &self,
        user: Option<&str>,
        groups: &[&str],
        verb: &str,
        yaml: &str,
    ) -> anyhow::Result<Output> {
        self.remember_manifest(yaml);
        let mut args: Vec<String> = vec![verb.into(), "-f".into(), "-".into()];
        if let Some(u) = user {
            args.push(format!("--as={u}"));
        }
        for g in groups {
            args.push(format!("--as-group={g}"));
        }
        let mut child = Command::new("kubectl")
            .args(&args)
            .env("KUBECONFIG", self.kubeconfig())
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

    /// [`World::create_as`], failing with kubectl's error when the API server refused it.
    pub fn create_as_ok(&self, user: &str, groups: &[&str], yaml: &str) -> anyhow::Result<()> {
        let out = self.create_as(user, groups, yaml)?;
        if !out.status.success() {
            bail!(
                "kubectl create as {user}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
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
        poll(
            timeout,
            Duration::from_millis(100),
            async || Ok(self.grants(ns).get_opt(name).await?),
            |g| g.as_ref().is_some_and(&pred),
            |g| {
                format!(
                    "grant {ns}/{name} did not reach the expected state in {timeout:?}; last seen: {}\n--- operator log ---\n{}",
                    serde_json::to_string_pretty(g).unwrap_or_default(),
                    tail(&self.operator_logs(), 60)
                )
            },
        )
        .await?
        .ok_or_else(|| anyhow!("grant {ns}/{name} gone"))
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
        Ok(url::Url::parse(self.env("LAPSE_ARM_ENDPOINT")?)?)
    }

    /// The sim-azure admin endpoint (the simulator's, not Azure's).
    pub async fn azure_admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.target.sandbox()?;
        sim_azure_admin(&self.http, &self.azure_url()?, method, path, body).await
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

    /// Deletes a resource group (with everything in it) or a resource in sim-azure, as someone
    /// deleting it in Azure would: the role assignments at or below it go with it, and a role
    /// assignment DELETE there answers ARM's 403 "… or the scope is invalid". Sandbox only.
    pub async fn delete_scope(&self, scope_id: &str) -> anyhow::Result<()> {
        let path = format!("/admin/scopes/{}", scope_id.trim_start_matches('/'));
        self.azure_admin(reqwest::Method::DELETE, &path, None)
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

    /// A client-credentials request at the target's Entra endpoint for a token to `resource`,
    /// with these credential fields. Err carries Entra's error body.
    async fn token_request(
        &self,
        resource: &str,
        credential: &[(&str, &str)],
    ) -> anyhow::Result<Result<String, String>> {
        let authority = self
            .env("AZURE_AUTHORITY_HOST")?
            .trim_end_matches('/')
            .to_owned();
        let tenant = self.env("AZURE_TENANT_ID")?;
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

/// A request to sim-azure's admin endpoint at `base` (faults, audit, principals); the parsed
/// answer, `Null` when empty.
pub async fn sim_azure_admin(
    http: &reqwest::Client,
    base: &url::Url,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut req = http.request(method, base.join(path)?);
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

/// Sends a request; its HTTP status and its body, parsed as JSON or else as a string.
async fn status_and_body(req: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Reads with `read` every `every` until `done` holds for what it read, for at most `timeout`;
/// then fails with `failed` of the last read (what a person needs to see why).
async fn poll<T>(
    timeout: Duration,
    every: Duration,
    mut read: impl AsyncFnMut() -> anyhow::Result<T>,
    done: impl Fn(&T) -> bool,
    failed: impl FnOnce(&T) -> String,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = read().await?;
        if done(&last) {
            return Ok(last);
        }
        if Instant::now() > deadline {
            bail!("{}", failed(&last));
        }
        tokio::time::sleep(every).await;
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
        status_and_body(
            self.http
                .get(self.arm_url(path, api_version)?)
                .bearer_auth(token),
        )
        .await
    }

    /// The target's subscription ID.
    pub fn subscription(&self) -> anyhow::Result<&str> {
        Ok(&self.fixtures.subscription)
    }

    /// Resource ID and client ID of one of the target's user-assigned identities.
    pub async fn identity(&self, name: &str) -> anyhow::Result<(String, String)> {
        let id = self.fixtures.identity_id(name);
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

    /// Role assignments in the target's subscription, as ARM lists them.
    pub async fn role_assignments(&self) -> anyhow::Result<Vec<Value>> {
        let path = format!(
            "/subscriptions/{}/providers/Microsoft.Authorization/roleAssignments",
            self.subscription()?
        );
        self.arm_list(&path, "2022-04-01").await
    }

    /// Every item of an ARM list, as the operator, following `nextLink` (a real subscription's
    /// lists come in pages).
    pub async fn arm_list(&self, path: &str, api_version: &str) -> anyhow::Result<Vec<Value>> {
        let token = self.operator_token().await?;
        let mut url = Some(self.arm_url(path, api_version)?);
        let mut items = Vec::new();
        while let Some(u) = url.take() {
            let resp = self.http.get(u).bearer_auth(&token).send().await?;
            let status = resp.status();
            let text = resp.text().await?;
            if !status.is_success() {
                bail!("listing {path}: {status} {text}");
            }
            let mut page: Value = serde_json::from_str(&text)
                .with_context(|| format!("listing {path}: not JSON: {text}"))?;
            if let Some(Value::Array(value)) = page.get_mut("value").map(Value::take) {
                items.extend(value);
            }
            url = page
                .get("nextLink")
                .and_then(Value::as_str)
                .map(url::Url::parse)
                .transpose()?;
        }
        Ok(items)
    }
}

/// Audit entries for `method` on paths containing `part` (case-insensitive), oldest first.
pub fn calls<'a>(audit: &'a [Value], method: &str, part: &str) -> Vec<&'a Value> {
    let part = part.to_ascii_lowercase();
    audit
        .iter()
        .filter(|e| {
            e["method"] == method
                && e["path"]
                    .as_str()
                    .is_some_and(|p| p.to_ascii_lowercase().contains(&part))
        })
        .collect()
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
        let ca =
            std::fs::read(self.target.sandbox()?.dir.join("kube-ca.pem")).context("kube-ca.pem")?;
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
        self.arm_list(&path, "2023-01-31").await
    }

    /// IDs (lower-cased) of every Azure object carrying this cluster's marker: role
    /// assignments by description, FICs on the target's identities by name.
    pub async fn owned_objects(&self) -> anyhow::Result<std::collections::BTreeSet<String>> {
        let mut out = std::collections::BTreeSet::new();
        for ra in self.role_assignments().await? {
            let desc = ra
                .pointer("/properties/description")
                .and_then(Value::as_str);
            if desc
                .and_then(lapse_api::naming::Marker::parse)
                .is_some_and(|m| m.cluster == self.cluster)
                && let Some(id) = ra.get("id").and_then(Value::as_str)
            {
                out.insert(id.to_ascii_lowercase());
            }
        }
        for name in &self.fixtures.identities {
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
            // Guarded: a grant this version cannot read (a suite may make one) is not waited
            // for and does not fail the list.
            let guarded: Api<kube::core::error_boundary::DeserializeGuard<AccessGrant>> =
                Api::namespaced(self.kube.clone(), ns);
            let list = guarded.list(&Default::default()).await?;
            let found: Vec<AccessGrant> = list
                .items
                .into_iter()
                .filter_map(|g| g.0.ok())
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

    /// Waits until `pred` holds for the operator's `/metrics` text: a gauge changes when the
    /// operator's watch has seen the change, a moment after the API call that made it returned.
    pub async fn wait_metrics(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        poll(
            timeout,
            Duration::from_millis(200),
            async || self.metrics().await,
            |text| pred(text),
            |_| {
                format!(
                    "{what}: not so after {timeout:?}\n--- operator log ---\n{}",
                    tail(&self.operator_logs(), 60)
                )
            },
        )
        .await
    }

    /// Waits until `pred` holds for the Azure objects carrying this cluster's marker.
    pub async fn wait_owned(
        &self,
        timeout: Duration,
        pred: impl Fn(&std::collections::BTreeSet<String>) -> bool,
    ) -> anyhow::Result<std::collections::BTreeSet<String>> {
        poll(
            timeout,
            Duration::from_millis(250),
            async || self.owned_objects().await,
            pred,
            |owned| {
                format!(
                    "Azure objects not as expected after {timeout:?}: {owned:#?}\n--- operator log ---\n{}",
                    tail(&self.operator_logs(), 60)
                )
            },
        )
        .await
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
        let events = poll(
            timeout,
            Duration::from_millis(200),
            async || self.events(ns, name),
            |events| events.iter().any(|e| e.reason == reason),
            |events| {
                format!("no {reason} Event on {ns}/{name} after {timeout:?}; seen: {events:#?}")
            },
        )
        .await?;
        events
            .into_iter()
            .find(|e| e.reason == reason)
            .ok_or_else(|| anyhow!("no {reason} Event on {ns}/{name}"))
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
                ("client_id", self.env("AZURE_CLIENT_ID")?),
                ("client_secret", self.env("AZURE_CLIENT_SECRET")?),
            ],
        )
        .await?
        .map_err(|e| anyhow!("the operator's token request for {resource} was refused: {e}"))
    }

    /// A Microsoft Graph GET (path under `/v1.0`) as the operator, parsed.
    pub async fn graph_json(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let base = self.env("LAPSE_GRAPH_ENDPOINT")?.trim_end_matches('/');
        // Graph's token audience is its public endpoint; sim-azure serves Graph beside ARM.
        let audience = match &self.target {
            Target::Sandbox(_) => "https://graph.microsoft.com",
            Target::External(_) => base,
        };
        let token = self.operator_token_for(audience).await?;
        status_and_body(
            self.http
                .get(format!("{base}/v1.0/{}", path.trim_start_matches('/')))
                .bearer_auth(token),
        )
        .await
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

    /// An ARM PUT with a bearer token (a workload acting with its lease).
    pub async fn arm_put_as(
        &self,
        token: &str,
        path: &str,
        api_version: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        status_and_body(
            self.http
                .put(self.arm_url(path, api_version)?)
                .bearer_auth(token)
                .json(body),
        )
        .await
    }

    /// An ARM PUT as the operator's service principal (what a human with its rights could do).
    pub async fn arm_put(
        &self,
        path: &str,
        api_version: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let token = self.operator_token().await?;
        status_and_body(
            self.http
                .put(self.arm_url(path, api_version)?)
                .bearer_auth(token)
                .json(body),
        )
        .await
    }

    /// An ARM DELETE as the operator's service principal; returns the HTTP status.
    pub async fn arm_delete(&self, path: &str, api_version: &str) -> anyhow::Result<u16> {
        let token = self.operator_token().await?;
        let resp = self
            .http
            .delete(self.arm_url(path, api_version)?)
            .bearer_auth(token)
            .send()
            .await?;
        Ok(resp.status().as_u16())
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

/// The claims of a JWT, unverified: what a test reads of a token an issuer wrote.
pub fn jwt_claims(token: &str) -> anyhow::Result<Value> {
    use base64::Engine as _;
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("not a JWT"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?;
    Ok(serde_json::from_slice(&bytes)?)
}
