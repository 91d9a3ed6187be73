//! The bench's own world: a `lapse-sandbox up` seeded with several subscriptions (the e2e
//! harness's sandbox has one), and `lapse-operator run` processes it can SIGKILL and restart
//! under the same pod name, scrape and measure.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use kube::Api;
use kube::api::{ListParams, PostParams};
use lapse_api::v1alpha1::AccessGrant;
use lapse_e2e::{free_port, sim_azure_admin, tail};
use serde_json::{Value, json};

/// The operator's service principal in the bench seed.
const OPERATOR: &str = "lapse-operator";
/// The resource group every subscription of the bench seed has; grants are scoped to it.
pub const RESOURCE_GROUP: &str = "bench-rg";

/// Subscription IDs of the bench tenant: stable, so runs compare.
pub fn subscription_ids(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| format!("00000000-0000-4000-8000-0000000b{i:04}"))
        .collect()
}

/// A sim-azure seed (docs/sim-azure.md) with `subs` subscriptions, each with `bench-rg`, and the
/// operator's service principal holding User Access Administrator on every one.
fn seed_yaml(subs: &[String]) -> String {
    let mut y = String::from("tenantId: 00000000-0000-4000-8000-00000000e001\nsubscriptions:\n");
    for (i, s) in subs.iter().enumerate() {
        y.push_str(&format!(
            "  - id: {s}\n    displayName: bench-{}\n    resourceGroups:\n      - {{ name: {RESOURCE_GROUP}, location: eastus }}\n",
            i + 1
        ));
    }
    y.push_str(&format!(
        "principals:\n  - {{ displayName: {OPERATOR}, kind: ServicePrincipal, clientSecret: lapse-bench-operator-secret }}\nroleAssignments:\n"
    ));
    for s in subs {
        y.push_str(&format!(
            "  - {{ principal: {OPERATOR}, role: User Access Administrator, scope: /subscriptions/{s} }}\n"
        ));
    }
    y
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
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Fails with the log's tail when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "lapse-operator exited with {status}:\n{}",
                tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 40)
            );
        }
        Ok(())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The operator binary the bench measures: `LAPSE_BENCH_OPERATOR` (`make bench` passes the
/// `dist` build, the one the image ships), else the one built beside the bench.
fn operator_binary() -> anyhow::Result<std::path::PathBuf> {
    match std::env::var_os("LAPSE_BENCH_OPERATOR") {
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            if !path.is_file() {
                anyhow::bail!("LAPSE_BENCH_OPERATOR: {} is not a file", path.display());
            }
            Ok(path)
        }
        None => lapse_e2e::binary("lapse-operator"),
    }
}

/// Resident set size and its peak, in KiB.
pub fn rss_kib(pid: u32) -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One request in sim-azure's audit log.
#[derive(Clone, Debug)]
pub struct Call {
    pub time: DateTime<Utc>,
    pub method: String,
    /// Lower-cased.
    pub path: String,
    pub query: String,
    pub status: u16,
    /// Arrival plus the time Azure took to answer.
    pub acked: DateTime<Utc>,
}

impl Call {
    fn from_json(v: &Value) -> Option<Self> {
        let time: DateTime<Utc> = serde_json::from_value(v.get("time")?.clone()).ok()?;
        let latency_us = v.get("latency").and_then(Value::as_f64).unwrap_or(0.0) * 1000.0;
        Some(Self {
            time,
            method: v.get("method")?.as_str()?.to_owned(),
            path: v.get("path")?.as_str()?.to_ascii_lowercase(),
            query: v
                .get("query")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_ascii_lowercase(),
            status: u16::try_from(v.get("status")?.as_u64()?).ok()?,
            acked: time + chrono::TimeDelta::microseconds(latency_us as i64),
        })
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The subscription of an ARM path.
    pub fn subscription(&self) -> Option<&str> {
        self.path.strip_prefix("/subscriptions/")?.split('/').next()
    }

    /// A PUT or DELETE of one role assignment.
    pub fn is_assignment(&self) -> bool {
        self.path
            .contains("/providers/microsoft.authorization/roleassignments/")
    }

    /// A page of a role assignment list (the first page has no `$skipToken`).
    pub fn is_assignment_list(&self) -> bool {
        self.method == "GET"
            && self
                .path
                .ends_with("/providers/microsoft.authorization/roleassignments")
    }

    /// An ARM call (not a token request).
    pub fn is_arm(&self) -> bool {
        self.path.starts_with("/subscriptions/") || self.path.starts_with("/providers/")
    }
}

/// Creates `g`, retrying a 429 after its Retry-After for as long as the server asks (a real
/// client's behaviour; each one counted in `throttled`) and anything else a few times. A 409
/// means an earlier attempt already made it.
pub async fn create_grant(
    api: &Api<AccessGrant>,
    g: &AccessGrant,
    throttled: &AtomicU64,
) -> anyhow::Result<()> {
    let name = g.metadata.name.clone().unwrap_or_default();
    let mut failures = 0;
    loop {
        match api.create(&PostParams::default(), g).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 429 => {
                throttled.fetch_add(1, Ordering::Relaxed);
                let wait = s
                    .details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(u64::from(wait.max(1)))).await;
            }
            Err(e) if failures < 5 => {
                failures += 1;
                eprintln!("creating {name}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200 * failures)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("creating {name}")),
        }
    }
}

/// The sandbox, its clients and the operator.
pub struct Bench {
    pub dir: PathBuf,
    sandbox: Child,
    pub azure: HashMap<String, String>,
    pub kubeconfig: PathBuf,
    pub kube: kube::Client,
    /// Trusts sim-azure's CA.
    pub http: reqwest::Client,
    pub subscriptions: Vec<String>,
    pub operator: Option<Operator>,
    pub operator_env: Vec<(String, String)>,
    started: u32,
}

impl std::fmt::Debug for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bench")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(mut op) = self.operator.take() {
            op.kill();
        }
        let _ = self.sandbox.kill();
        let _ = self.sandbox.wait();
        if std::env::var_os("LAPSE_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept {}", self.dir.display());
        }
    }
}

impl Bench {
    /// Starts a sandbox with `subs` subscriptions, applies the CRDs; `label` names its scratch
    /// directory (one run starts one for lapse, and one for the baseline).
    pub async fn start(subs: usize, label: &str) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!("lapse-bench-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let subscriptions = subscription_ids(subs);
        let seed = dir.join("seed.yaml");
        std::fs::write(&seed, seed_yaml(&subscriptions))?;
        let log = std::fs::File::create(dir.join("sandbox.log"))?;
        let sandbox = Command::new(lapse_e2e::binary("lapse-sandbox")?)
            .args(["up", "--state-dir"])
            .arg(&dir)
            .arg("--azure-seed")
            .arg(&seed)
            .args(["--pim-minimum-secs", &crate::PIM_MINIMUM_SECS.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting lapse-sandbox")?;
        let mut sandbox = ChildGuard(Some(sandbox));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dir.join("ready").exists() {
            if let Some(status) = sandbox.get()?.try_wait()? {
                bail!(
                    "lapse-sandbox exited with {status}: {}",
                    std::fs::read_to_string(dir.join("sandbox.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("lapse-sandbox not ready after 60s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let azure = lapse_e2e::parse_env_file(
            &std::fs::read_to_string(dir.join("azure.env")).context("reading azure.env")?,
        );
        let kubeconfig = dir.join("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig)?,
            &Default::default(),
        )
        .await?;
        let kube = kube::Client::try_from(config)?;
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(120));
        if let Some(bundle) = azure.get("LAPSE_AZURE_CA_BUNDLE") {
            for cert in reqwest::Certificate::from_pem_bundle(&std::fs::read(bundle)?)? {
                http = http.add_root_certificate(cert);
            }
        }
        let bench = Self {
            dir,
            sandbox: sandbox.take()?,
            azure,
            kubeconfig,
            kube,
            http: http.build()?,
            subscriptions,
            operator: None,
            operator_env: Vec::new(),
            started: 0,
        };
        let crds = lapse_e2e::workspace_root().join("config/crd");
        bench.kubectl(&["apply", "--server-side", "-f", &crds.to_string_lossy()])?;
        bench.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/accessgrants.lapse.dev",
            "crd/accesspolicies.lapse.dev",
        ])?;
        Ok(bench)
    }

    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        let file = self.dir.join("manifest.yaml");
        std::fs::write(&file, yaml)?;
        self.kubectl(&["apply", "-f", &file.to_string_lossy()])
            .map(|_| ())
    }

    /// The sim-azure admin endpoint.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let base = self
            .azure
            .get("LAPSE_ARM_ENDPOINT")
            .context("azure.env has no LAPSE_ARM_ENDPOINT")?;
        sim_azure_admin(&self.http, &url::Url::parse(base)?, method, path, body).await
    }

    /// `n` service principals, made `parallel` at a time; their object IDs.
    pub async fn principals(&self, n: usize, parallel: usize) -> anyhow::Result<Vec<String>> {
        let base = url::Url::parse(
            self.azure
                .get("LAPSE_ARM_ENDPOINT")
                .context("azure.env has no LAPSE_ARM_ENDPOINT")?,
        )?;
        let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let (sem, http, base) = (sem.clone(), self.http.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await?;
                let p = sim_azure_admin(
                    &http,
                    &base,
                    reqwest::Method::POST,
                    "/admin/principals",
                    Some(json!({"displayName": format!("bench-{i}"), "kind": "ServicePrincipal"})),
                )
                .await?;
                p["objectId"]
                    .as_str()
                    .map(str::to_owned)
                    .context("no objectId")
            }));
        }
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            out.push(t.await??);
        }
        Ok(out)
    }

    /// Every request Azure saw (the last 100,000), oldest first.
    pub async fn audit(&self) -> anyhow::Result<Vec<Call>> {
        let v = self
            .admin(reqwest::Method::GET, "/admin/audit", None)
            .await?;
        let entries = match v {
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        if entries.len() >= 100_000 {
            eprintln!(
                "warning: sim-azure's audit log is full (100,000 entries): the oldest are gone"
            );
        }
        Ok(entries.iter().filter_map(Call::from_json).collect())
    }

    /// Starts the operator (always as the same pod, so a restart after SIGKILL takes its Lease
    /// back at once, as a container restarted in its pod does); `env` is kept for restarts
    /// (when empty, the last is used). `{n}` in a value becomes the start's number (0, 1, ...).
    pub fn spawn_operator(&mut self, env: Vec<(String, String)>) -> anyhow::Result<()> {
        if !env.is_empty() {
            self.operator_env = env;
        }
        let n = self.started.to_string();
        let log = self.dir.join(format!("operator-{n}.log"));
        self.started += 1;
        let file = std::fs::File::create(&log)?;
        let (metrics_port, health_port) = (free_port()?, free_port()?);
        let mut cmd = Command::new(operator_binary()?);
        cmd.arg("run")
            .envs(&self.azure)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("LAPSE_CLUSTER_NAME", "bench")
            .env("POD_NAMESPACE", "kube-system")
            .env("POD_NAME", "lapse-bench-0")
            .env("LAPSE_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("LAPSE_HEALTH_ADDR", format!("127.0.0.1:{health_port}"))
            .env("LAPSE_LOG", "warn")
            .envs(
                self.operator_env
                    .iter()
                    .map(|(k, v)| (k, v.replace("{n}", &n))),
            )
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd.spawn().context("starting lapse-operator")?;
        self.operator = Some(Operator {
            child,
            log,
            metrics_port,
            health_port,
        });
        Ok(())
    }

    pub fn op(&mut self) -> anyhow::Result<&mut Operator> {
        self.operator.as_mut().context("no operator running")
    }

    /// Whether /readyz answers "ok" (leading, caches loaded, claims rebuilt).
    pub async fn ready(&mut self) -> anyhow::Result<bool> {
        let port = self.op()?.health_port;
        self.op()?.check_alive()?;
        let url = format!("http://127.0.0.1:{port}/readyz");
        Ok(match self.http.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.text().await.is_ok_and(|b| b.trim() == "ok"),
            _ => false,
        })
    }

    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.ready().await? {
            if Instant::now() > deadline {
                bail!("lapse-operator not ready after 120s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The operator's Prometheus exposition.
    pub async fn metrics(&mut self) -> anyhow::Result<Metrics> {
        let port = self.op()?.metrics_port;
        self.op()?.check_alive()?;
        let text = self
            .http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(Metrics(text))
    }

    /// Polls the metrics until `done` holds, failing after `timeout` with `what` and the last
    /// value `progress` gave.
    pub async fn wait_metrics(
        &mut self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut done: impl FnMut(&Metrics) -> (bool, String),
    ) -> anyhow::Result<Metrics> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.metrics().await?;
            let (ok, progress) = done(&m);
            if ok {
                return Ok(m);
            }
            if Instant::now() > deadline {
                bail!("{what}: not done after {timeout:?} ({progress})");
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Every grant of a namespace, listed in pages.
    pub async fn list_grants(&self, ns: &str) -> anyhow::Result<Vec<AccessGrant>> {
        let api: Api<AccessGrant> = Api::namespaced(self.kube.clone(), ns);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(2000);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = api.list(&lp).await?;
            out.extend(page.items);
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Creates the grants `parallel` at a time; each name with the instant its create was
    /// acknowledged.
    pub async fn create_grants(
        &self,
        ns: &str,
        grants: Vec<AccessGrant>,
        parallel: usize,
    ) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
        let api: Api<AccessGrant> = Api::namespaced(self.kube.clone(), ns);
        let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        let mut tasks = Vec::with_capacity(grants.len());
        for g in grants {
            let (sem, api) = (sem.clone(), api.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await?;
                let name = g.metadata.name.clone().unwrap_or_default();
                create_grant(&api, &g, &AtomicU64::new(0)).await?;
                anyhow::Ok((name, Utc::now()))
            }));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await??);
        }
        Ok(out)
    }

    /// sim-kube's `/metrics` (`apiserver_request_total`), as the admin.
    pub async fn kube_metrics(&self) -> anyhow::Result<Metrics> {
        let req = http::Request::get("/metrics").body(Vec::new())?;
        Ok(Metrics(self.kube.request_text(req).await?))
    }

    /// RSS of the sandbox (both simulators), KiB.
    pub fn sandbox_rss(&self) -> Option<u64> {
        rss_kib(self.sandbox.id()).0
    }
}

/// Kills the sandbox if start-up fails half-way.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn get(&mut self) -> anyhow::Result<&mut Child> {
        self.0.as_mut().context("no child")
    }

    fn take(&mut self) -> anyhow::Result<Child> {
        self.0.take().context("no child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Prometheus text exposition.
#[derive(Debug)]
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of every sample of `name` whose labels contain all of `labels` (`k="v"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, rest) = match series.split_once('{') {
                    Some((m, r)) => (m, r),
                    None => (series, ""),
                };
                (metric == name && labels.iter().all(|want| rest.contains(want)))
                    .then(|| value.parse::<f64>().ok())
                    .flatten()
            })
            .sum()
    }

    /// Grants in a phase, by the operator's gauge.
    pub fn phase(&self, phase: &str) -> u64 {
        self.sum("lapse_grants", &[&format!("phase=\"{phase}\"")]) as u64
    }

    pub fn reconciles(&self) -> u64 {
        self.sum("lapse_reconciles_total", &[]) as u64
    }
}
