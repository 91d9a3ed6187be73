//! The binaries under test: built once per test process, and `lapse-operator run` started as
//! a user would start it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use crate::target::Target;
use crate::workspace_root;

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
                // Set by cargo and nextest for the test process; ring's build script reruns
                // when it changes, and with it most of the workspace: without this the first
                // test of every run rebuilt what `make test` had just built.
                .env_remove("CARGO_MANIFEST_DIR")
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

/// A loopback port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A unique scratch directory under the system temp dir.
pub fn scratch_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
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
    /// Starts the operator exactly as a user would: the target's Azure settings (the sandbox's
    /// `azure.env`) and kubeconfig, a cluster name, the namespace of its leader-election Lease,
    /// nothing else but ports.
    pub fn start(
        target: &Target,
        cluster: &str,
        namespace: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = target.dir().join(format!("operator-{n}.log"));
        let file = std::fs::File::create(&log)?;
        let (metrics_port, health_port) = (free_port()?, free_port()?);
        let mut cmd = Command::new(binary("lapse-operator")?);
        cmd.arg("run")
            .envs(target.azure())
            .env("KUBECONFIG", target.kubeconfig())
            .env("LAPSE_CLUSTER_NAME", cluster)
            .env("POD_NAMESPACE", namespace)
            .env("LAPSE_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("LAPSE_HEALTH_ADDR", format!("127.0.0.1:{health_port}"))
            .env("LAPSE_SWEEP_INTERVAL", "10s")
            .env(
                "LAPSE_LOG",
                // A developer chasing a flake may ask for more (kube_runtime=debug).
                std::env::var("LAPSE_E2E_OPERATOR_LOG")
                    .unwrap_or_else(|_| "info,lapse_controller=debug".into()),
            )
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

    /// Starts `cmd` as the operator, for an operator started another way than [`Self::start`]
    /// (from a container image's root filesystem, say). The caller sets its arguments and whole
    /// environment, including `LAPSE_METRICS_ADDR` and `LAPSE_HEALTH_ADDR` on these loopback
    /// ports; its output goes to `log`.
    pub fn spawn(
        mut cmd: Command,
        log: PathBuf,
        metrics_port: u16,
        health_port: u16,
    ) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&log)?;
        cmd.stdout(file.try_clone()?).stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
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

    /// SIGTERM, as Kubernetes stops a pod: the operator finishes and gives up its Lease. SIGKILL
    /// after 10 s.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How the process ended, once it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}
