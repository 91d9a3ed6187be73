//! Kubernetes API server for tests and demos that speaks the real REST protocol over HTTPS (library).
//!
//! ```no_run
//! # async fn demo() -> Result<(), lapse_sim_kube::Error> {
//! let kube = lapse_sim_kube::SimKube::start(lapse_sim_kube::Config::default()).await?;
//! std::fs::write("/tmp/kubeconfig", kube.kubeconfig()).ok();
//! kube.shutdown().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod admission;
mod api;
mod controllers;
mod delete;
mod discovery;
mod events;
mod faults;
mod fields;
mod impersonation;
mod load;
mod openapi;
mod patch;
mod proto;
mod rbac;
mod registry;
mod review;
mod schema;
mod selectors;
mod server;
mod status;
mod store;
mod table;
mod tls;
mod tokens;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch as tokio_watch;
use tokio::task::JoinHandle;

pub use crate::faults::FailRule;
use crate::server::State;
use crate::store::Store;

/// Errors starting or driving the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating TLS material failed: {0}")]
    Tls(String),
    #[error("binding the listener on {addr} failed: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("creating {what} was refused: {message}")]
    Rejected { what: String, message: String },
    #[error("ServiceAccount token signing key: {0}")]
    SigningKey(String),
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
    /// The admin bearer token; generated when `None`.
    pub admin_token: Option<String>,
    /// Changes kept for watches to resume from; older resourceVersions get 410 Gone.
    pub history_limit: usize,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Server-side watch timeout when the client gives no `timeoutSeconds`.
    pub watch_timeout: Duration,
    /// Namespaces created at start.
    pub namespaces: Vec<String>,
    /// ServiceAccount token issuer (`iss`); defaults to the server URL, which serves the
    /// OIDC discovery document and JWKS.
    pub issuer: Option<String>,
    /// Users who authenticate with a static bearer token (kube-apiserver's
    /// `--token-auth-file`); RBAC decides what they may do.
    pub users: Vec<StaticUser>,
    /// Read-only requests served at once (kube-apiserver's `--max-requests-inflight`, 400);
    /// beyond it, 429 with `Retry-After: 1`. Watches are not counted.
    pub max_requests_inflight: usize,
    /// Mutating requests served at once (`--max-mutating-requests-inflight`, 200).
    pub max_mutating_requests_inflight: usize,
}

/// A user named by a static bearer token, like a line of kube-apiserver's `--token-auth-file`
/// (`token,user,uid,"group1,group2"`). The user also gets the group `system:authenticated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticUser {
    pub token: String,
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl StaticUser {
    /// A user with a random token and UID.
    pub fn new(name: &str, groups: &[&str]) -> Self {
        Self {
            token: format!("user-{}", uuid::Uuid::new_v4().simple()),
            name: name.to_owned(),
            uid: uuid::Uuid::new_v4().to_string(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn to_user(&self) -> rbac::User {
        let mut groups = self.groups.clone();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".to_owned());
        }
        rbac::User {
            name: self.name.clone(),
            uid: self.uid.clone(),
            groups,
            extra: Default::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token: None,
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(5),
            watch_timeout: Duration::from_secs(1800),
            namespaces: vec!["default".to_owned(), "kube-system".to_owned()],
            issuer: None,
            users: Vec::new(),
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
        }
    }
}

/// Starts servers.
#[derive(Debug)]
pub struct SimKube;

impl SimKube {
    /// Generates the CA, binds the listener, seeds namespaces and starts serving.
    pub async fn start(config: Config) -> Result<SimKubeHandle, Error> {
        let pki = tls::generate()?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.bind,
            source,
        })?;
        let admin_token = config
            .admin_token
            .clone()
            .unwrap_or_else(|| format!("admin-{}", uuid::Uuid::new_v4().simple()));
        let store = Store::new(config.history_limit, registry::builtins());
        let namespaces = config.namespaces.clone();
        let state = Arc::new(State::new(config, admin_token.clone(), addr, store));
        let (shutdown_tx, shutdown_rx) = tokio_watch::channel(false);
        let task = tokio::spawn(server::serve(
            listener,
            pki.server_config.clone(),
            state.clone(),
            shutdown_rx,
        ));
        let handle = SimKubeHandle {
            url: format!("https://127.0.0.1:{}", addr.port()),
            ca_pem: pki.ca_pem,
            admin_token,
            state,
            shutdown: shutdown_tx,
            task: Some(task),
        };
        handle.seed_rbac()?;
        for ns in namespaces {
            handle.create_namespace(&ns)?;
        }
        tracing::info!(url = %handle.url, "sim-kube serving");
        Ok(handle)
    }
}

/// A running server. Dropping it stops the server.
#[derive(Debug)]
pub struct SimKubeHandle {
    url: String,
    ca_pem: String,
    admin_token: String,
    state: Arc<State>,
    shutdown: tokio_watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SimKubeHandle {
    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA certificate (PEM) that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The ServiceAccount token issuer (`iss`), which serves `/.well-known/openid-configuration`
    /// and `/openid/v1/jwks` without authentication (what sim-azure's FIC checks trust).
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// The JWKS that verifies ServiceAccount tokens (generates the signing key on first use).
    pub fn jwks(&self) -> Result<Value, Error> {
        self.state
            .signer()
            .map(|s| s.jwks())
            .map_err(|e| Error::SigningKey(e.message))
    }

    /// The bearer token with full access.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A kubeconfig (YAML) with context `lapse-sandbox`, the embedded CA and the admin token.
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig_for("lapse-sandbox")
    }

    /// A kubeconfig whose cluster, user and context are all called `context`.
    pub fn kubeconfig_for(&self, context: &str) -> String {
        self.kubeconfig_with_token(context, &self.admin_token)
    }

    /// A kubeconfig like [`Self::kubeconfig_for`] that authenticates with `token` (a static
    /// user's, a ServiceAccount's).
    pub fn kubeconfig_with_token(&self, context: &str, token: &str) -> String {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {context}\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: {context}\n  user:\n    token: {token}\ncontexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {context}\n    namespace: default\ncurrent-context: {context}\n",
            url = self.url,
        )
    }

    /// Adds a static token user while serving (as if it were in `Config::users`).
    pub fn add_user(&self, user: &StaticUser) {
        self.state.add_user(&user.token, user.to_user());
    }

    /// Creates a namespace (idempotent).
    pub fn create_namespace(&self, name: &str) -> Result<(), Error> {
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        self.seed("", "namespaces", obj)
    }

    fn seed_rbac(&self) -> Result<(), Error> {
        for (plural, obj) in rbac::bootstrap() {
            self.seed("rbac.authorization.k8s.io", plural, obj)?;
        }
        Ok(())
    }

    /// Creates a cluster-scoped object as the server itself, unless it exists.
    fn seed(&self, group: &str, plural: &str, obj: Value) -> Result<(), Error> {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if self.state.store().get(group, plural, "", &name).is_some() {
            return Ok(());
        }
        self.create(obj).map(|_| ())
    }

    /// Creates an object as the admin (any served kind, including CRDs and custom resources
    /// of established CRDs), with the same admission as an API request. Returns the stored object.
    pub fn create(&self, obj: Value) -> Result<Value, Error> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let what = || format!("{kind} {name}");
        let mut store = self.state.store();
        let rt = store
            .types
            .iter()
            .find(|t| t.api_version() == api_version && t.kind == kind)
            .cloned()
            .ok_or_else(|| Error::Rejected {
                what: what(),
                message: format!("{api_version} {kind} is not served"),
            })?;
        let ns = rt.namespaced.then(|| {
            obj["metadata"]["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_owned()
        });
        let target = api::Target {
            rt,
            ns,
            name: None,
            sub: None,
        };
        let req = server::Req {
            method: hyper::Method::POST,
            path: String::new(),
            query: Default::default(),
            accept: String::new(),
            content_type: String::new(),
            user_agent: "sim-kube".to_owned(),
            body: bytes::Bytes::new(),
            user: rbac::User::admin(),
            warnings: Default::default(),
        };
        api::create_locked(&mut store, &req, &target, obj, "sim-kube").map_err(|e| {
            Error::Rejected {
                what: what(),
                message: e.message,
            }
        })
    }

    /// The stored object, if any (`group` is empty for the core group).
    pub fn object(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .store()
            .get(group, plural, namespace, name)
            .cloned()
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state.store().current_rv()
    }

    /// Fault injection: forgets watch history, so resuming from any older resourceVersion
    /// gets 410 Gone.
    pub fn compact(&self) {
        self.state.store().compact();
    }

    /// Fault injection: ends every open watch (clients see the stream close and re-watch).
    pub fn drop_watches(&self) {
        self.state.watch_epoch.send_modify(|e| *e += 1);
    }

    /// Fault injection: a simulated API server restart. Every connection and watch is closed;
    /// data and resourceVersions are kept, so clients reconnect and resume.
    pub fn restart(&self) {
        self.drop_watches();
        self.state.restarts.send_modify(|e| *e += 1);
    }

    /// Fault injection: the next `rule.count` requests matching the rule fail with `rule.code`.
    pub fn fail_next(&self, rule: FailRule) {
        self.state.faults().add(rule);
    }

    /// Fault injection: delays every request by `latency` (zero turns it off).
    pub fn set_latency(&self, latency: Duration) {
        self.state.faults().latency = latency;
    }

    /// Stops serving and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.drop_watches();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimKubeHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.state.watch_epoch.send_modify(|e| *e += 1);
    }
}
