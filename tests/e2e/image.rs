//! The container image (`Containerfile`, `make image`, `scripts/image.sh`) holds the operator
//! and only what it needs, and runs it the way the kubelet would: as UID/GID 65532 from the
//! image's own root filesystem, read-only, with in-cluster configuration (the ServiceAccount's
//! token, CA and namespace under `/var/run/secrets/kubernetes.io/serviceaccount/`, the API
//! server in `KUBERNETES_SERVICE_HOST`/`PORT`), bound by `config/rbac/` only, and a grant goes
//! from apply to lapse.
//!
//! The image is built here with whichever builder `scripts/image.sh builder` finds (buildah on
//! the project's machines; no registry is needed), from the *debug* binary the suites already
//! built: `make image` ships the release binary, but a release build of the operator costs
//! minutes on two cores the first time, and it would double what CI builds. The image does not
//! depend on the profile: both binaries link the same shared libraries (the test checks the
//! root filesystem against `ldd` of the binary it ships), and the Containerfile and the staging
//! script are the same.
//!
//! Running a root filesystem as another user needs root (chroot, then setuid to 65532, as the
//! container runtime does). `make test` skips this test, saying why, when there is no builder
//! or it does not run as root; run anyway, the test fails saying what it needs.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use lapse_api::v1alpha1::GrantPhase;
use lapse_e2e::{
    Capability, Operator, World, binary, free_port, sandbox_only, tail, workspace_root,
};
use serde_json::Value;

const OPERATOR_NS: &str = "lapse-system";
const POD_NAME: &str = "lapse-operator-7d9f8-image";

/// `scripts/image.sh ARGS` with `IMAGE=image`; stdout, or an error with stderr.
fn image_sh(image: &str, args: &[&str], env: &[(&str, &Path)]) -> anyhow::Result<String> {
    let mut cmd = Command::new(workspace_root().join("scripts/image.sh"));
    cmd.args(args).env("IMAGE", image);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().context("running scripts/image.sh")?;
    if !out.status.success() {
        bail!(
            "scripts/image.sh {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the test's image however the test ends.
struct BuiltImage(String);

impl Drop for BuiltImage {
    fn drop(&mut self) {
        let _ = image_sh(&self.0, &["remove"], &[]);
    }
}

/// The effective UID of this process (`/proc/self/status`).
fn euid() -> anyhow::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    ids(&status, "Uid:")?
        .get(1)
        .copied()
        .ok_or_else(|| anyhow!("no effective UID in /proc/self/status"))
}

/// The real, effective, saved and filesystem IDs of a `/proc/PID/status` line (`Uid:`, `Gid:`).
fn ids(status: &str, key: &str) -> anyhow::Result<Vec<u32>> {
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .ok_or_else(|| anyhow!("no {key} line"))?;
    line[key.len()..]
        .split_whitespace()
        .map(|s| s.parse::<u32>().map_err(Into::into))
        .collect()
}

/// Every entry of a root filesystem, as `/path`, sorted.
fn walk(root: &Path) -> anyhow::Result<Vec<(String, std::fs::Metadata)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            let rel = format!("/{}", path.strip_prefix(root)?.display());
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.push((rel, meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// What `ldd` says the binary loads: the libraries' paths and the loader's.
fn ldd(bin: &Path) -> anyhow::Result<BTreeSet<String>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    if !out.status.success() {
        bail!(
            "ldd {}: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            match l.split_once("=>") {
                Some((_, target)) => target.split_whitespace().next(),
                None => l.split_whitespace().next(),
            }
        })
        .filter(|p| p.starts_with('/'))
        .map(str::to_owned)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_a_grant_from_apply_to_lapse_as_uid_65532_with_in_cluster_config()
-> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "installs config/rbac and relies on sim-kube enforcing RBAC for a ServiceAccount token \
         it mints; runs the image's root filesystem on this machine, so the API server must be \
         on loopback",
    )?;
    let builder = image_sh("unused", &["builder"], &[]).map_err(|e| {
        anyhow!(
            "this test builds the container image, and there is no image builder: {e}\nmake test \
             skips it then (Makefile, unit-tests); install buildah (Debian: apt-get install \
             buildah) or docker or podman to run it"
        )
    })?;
    let builder = builder.trim().to_owned();
    if euid()? != 0 {
        bail!(
            "this test must run as root: it runs the image's root filesystem as the container \
             runtime would, chroot into it and switch to UID/GID 65532, which only root may do; \
             make test skips it when not root"
        );
    }
    let t0 = Instant::now();
    let mut w = World::without_operator().await?;
    let sb = w.target.sandbox()?;
    let dir = sb.dir.clone();

    // Build, from the debug binary (see the module's comment).
    let bin = binary("lapse-operator")?;
    let tag = format!("lapse-operator:e2e-{}", std::process::id());
    let context = dir.join("image-context");
    image_sh(
        &tag,
        &["build", &bin.to_string_lossy()],
        &[("IMAGE_CONTEXT", &context)],
    )?;
    let _image = BuiltImage(tag.clone());
    let built = t0.elapsed();

    // The image's config: nonroot, the binary as entrypoint, `run` (what the chart's args say),
    // and the OCI labels.
    let config: Value = serde_json::from_str(&image_sh(&tag, &["config"], &[])?)?;
    assert_eq!(config["User"], "65532:65532", "{config:#}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/lapse-operator"]));
    assert_eq!(config["Cmd"], serde_json::json!(["run"]));
    let label = |k: &str| {
        config["Labels"][format!("org.opencontainers.image.{k}")]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(label("title"), "lapse-operator");
    assert!(!label("description").is_empty());
    assert_eq!(label("licenses"), "Apache-2.0");
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(label("source"), "https://github.com/lapse-dev/lapse");
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(workspace_root())
        .output()?;
    if head.status.success() {
        let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
        assert!(
            label("revision").starts_with(&head),
            "{}",
            label("revision")
        );
    }
    let created = chrono::DateTime::parse_from_rfc3339(&label("created"))
        .with_context(|| format!("created label {:?}", label("created")))?;
    assert!(
        (chrono::Utc::now() - created.to_utc()).num_minutes().abs() < 10,
        "created {created}"
    );

    // The root filesystem, as a runtime unpacks it: exactly the binary, what ldd lists, the NSS
    // modules, the CA bundle, passwd/group/nsswitch.conf and /tmp. All root's, none writable by
    // anyone else (but /tmp), so UID 65532 can write nothing of the image.
    let rootfs = dir.join("rootfs");
    image_sh(&tag, &["export", &rootfs.to_string_lossy()], &[])?;
    let entries = walk(&rootfs)?;
    let mut libs = ldd(&bin)?;
    let libc = libs
        .iter()
        .find(|p| p.ends_with("/libc.so.6"))
        .cloned()
        .ok_or_else(|| anyhow!("ldd lists no libc: {libs:?}"))?;
    let libdir = Path::new(&libc).parent().unwrap_or(Path::new("/"));
    for m in ["files", "dns"] {
        let nss = libdir.join(format!("libnss_{m}.so.2"));
        if nss.exists() {
            libs.insert(nss.to_string_lossy().into_owned());
        }
    }
    let mut expected: BTreeSet<String> = libs.clone();
    expected.extend(
        [
            "/lapse-operator",
            "/etc/passwd",
            "/etc/group",
            "/etc/nsswitch.conf",
            "/etc/ssl/certs/ca-certificates.crt",
        ]
        .map(str::to_owned),
    );
    let files: BTreeSet<String> = entries
        .iter()
        .filter(|(_, m)| !m.is_dir())
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(
        files, expected,
        "the image's files differ from the binary, ldd's libraries and the few files it needs"
    );
    let mut total = 0;
    println!(
        "image {tag} ({builder}), built in {:.1}s:",
        built.as_secs_f64()
    );
    for (path, meta) in &entries {
        assert!(meta.is_dir() || meta.is_file(), "{path}: not a file");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path}: not root's");
        let mode = meta.permissions().mode() & 0o7777;
        if path == "/tmp" {
            assert_eq!(mode, 0o1777, "/tmp");
        } else {
            assert_eq!(
                mode & 0o022,
                0,
                "{path}: writable by group or others ({mode:o})"
            );
        }
        if meta.is_file() {
            total += meta.len();
            println!("  {mode:04o} {:>10}  {path}", meta.len());
        }
    }
    println!("  total {:.1} MB", total as f64 / 1e6);
    // The public CAs, as this machine has them (the sandbox's Azure CA is private, so the run
    // below proves the file is there, not that Azure's public chain verifies against it).
    let bundle = std::fs::read(rootfs.join("etc/ssl/certs/ca-certificates.crt"))?;
    assert_eq!(
        bundle,
        std::fs::read("/etc/ssl/certs/ca-certificates.crt")?,
        "the image's CA bundle is not this machine's"
    );
    let cas = reqwest::Certificate::from_pem_bundle(&bundle)?.len();
    assert!(cas > 100, "only {cas} CA certificates in the bundle");
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd"))?;
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    let group = std::fs::read_to_string(rootfs.join("etc/group"))?;
    assert!(group.contains("nonroot:x:65532:"), "{group}");

    // What the kubelet and the runtime add: the ServiceAccount volume, the chart's CA bundle
    // ConfigMap at its mount path, /etc/hosts, mount points for /proc, /dev and /tmp.
    w.kubectl_ok(&["create", "namespace", OPERATOR_NS])?;
    let rbac = workspace_root().join("config/rbac");
    w.kubectl_ok(&["apply", "-f", &rbac.to_string_lossy()])?;
    let token = w.kubectl_ok(&[
        "-n",
        OPERATOR_NS,
        "create",
        "token",
        "lapse-operator",
        "--duration=1h",
    ])?;
    let sa_dir = rootfs.join("var/run/secrets/kubernetes.io/serviceaccount");
    std::fs::create_dir_all(&sa_dir)?;
    std::fs::write(sa_dir.join("token"), token.trim())?;
    std::fs::copy(dir.join("kube-ca.pem"), sa_dir.join("ca.crt"))?;
    std::fs::write(sa_dir.join("namespace"), OPERATOR_NS)?;
    let azure_ca = rootfs.join("etc/lapse/azure-ca");
    std::fs::create_dir_all(&azure_ca)?;
    std::fs::copy(w.env("LAPSE_AZURE_CA_BUNDLE")?, azure_ca.join("ca.crt"))?;
    std::fs::write(rootfs.join("etc/hosts"), "127.0.0.1\tlocalhost\n")?;
    for d in ["proc", "dev"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    for d in [rootfs.join("var"), rootfs.join("etc/lapse")] {
        for (p, _) in walk(&d)? {
            let p = d.join(p.trim_start_matches('/'));
            let mode = if p.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        }
    }

    // In-cluster configuration: the API server's address, and no kubeconfig anywhere.
    let server = w.kubectl_ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ])?;
    let server = url::Url::parse(server.trim())?;
    let host = server.host_str().unwrap_or_default().to_owned();
    let port = server
        .port()
        .ok_or_else(|| anyhow!("no port in {server}"))?
        .to_string();
    // Entra by host name, so that getaddrinfo (glibc's NSS and the image's nsswitch.conf, then
    // /etc/hosts) must work inside the image: sim-azure's certificate names localhost too.
    let authority = url::Url::parse(w.env("AZURE_AUTHORITY_HOST")?)?;
    let authority = format!(
        "https://localhost:{}",
        authority
            .port()
            .ok_or_else(|| anyhow!("no port in {authority}"))?
    );
    let (metrics_port, health_port) = (free_port()?, free_port()?);
    let image_path = config["Env"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .filter_map(Value::as_str)
                .find(|v| v.starts_with("PATH="))
        })
        .map_or(
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            |p| &p[5..],
        )
        .to_owned();
    let env: Vec<(&str, String)> = vec![
        // What the runtime sets: the image's Env, HOSTNAME, HOME from /etc/passwd.
        ("PATH", image_path),
        ("HOSTNAME", POD_NAME.into()),
        ("HOME", "/nonexistent".into()),
        // What the kubelet sets for every pod.
        ("KUBERNETES_SERVICE_HOST", host),
        ("KUBERNETES_SERVICE_PORT", port),
        // What the chart's Deployment sets.
        ("LAPSE_CLUSTER_NAME", w.cluster.clone()),
        ("LAPSE_OIDC_ISSUER", w.env("LAPSE_OIDC_ISSUER")?.into()),
        ("LAPSE_AZURE_CLOUD", "public".into()),
        ("LAPSE_ARM_ENDPOINT", w.env("LAPSE_ARM_ENDPOINT")?.into()),
        (
            "LAPSE_GRAPH_ENDPOINT",
            w.env("LAPSE_GRAPH_ENDPOINT")?.into(),
        ),
        ("AZURE_AUTHORITY_HOST", authority),
        ("LAPSE_AZURE_CA_BUNDLE", "/etc/lapse/azure-ca/ca.crt".into()),
        ("AZURE_TENANT_ID", w.env("AZURE_TENANT_ID")?.into()),
        ("AZURE_CLIENT_ID", w.env("AZURE_CLIENT_ID")?.into()),
        ("AZURE_CLIENT_SECRET", w.env("AZURE_CLIENT_SECRET")?.into()),
        (
            "AZURE_SUBSCRIPTION_ID",
            w.env("AZURE_SUBSCRIPTION_ID")?.into(),
        ),
        ("LAPSE_SWEEP_INTERVAL", "10s".into()),
        ("LAPSE_METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
        ("LAPSE_HEALTH_ADDR", format!("127.0.0.1:{health_port}")),
        ("LAPSE_LEADER_ELECT", "true".into()),
        ("POD_NAMESPACE", OPERATOR_NS.into()),
        ("POD_NAME", POD_NAME.into()),
        ("LAPSE_LOG_FORMAT", "json".into()),
    ];
    let argv: Vec<String> = [&config["Entrypoint"], &config["Cmd"]]
        .iter()
        .flat_map(|v| v.as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();

    // A read-only root: in a mount namespace of its own, the root filesystem bind-mounted
    // read-only, a tmpfs on /tmp (the chart's emptyDir), /proc and /dev, then chroot and
    // setuid, as runc does. Without the privilege for a mount namespace (a container without
    // CAP_SYS_ADMIN), only the ownership checked above keeps UID 65532 from writing.
    let read_only = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .status()
        .is_ok_and(|s| s.success());
    let mut cmd;
    if read_only {
        cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-euc"])
            .arg(
                r#"root=$1; shift
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t tmpfs -o mode=1777,size=16m tmpfs "$root/tmp"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
exec chroot --userspec=65532:65532 "$root" "$@""#,
            )
            .arg("sh")
            .arg(&rootfs);
    } else {
        println!(
            "no mount namespace here: the root filesystem is read-only to UID 65532 by ownership only"
        );
        cmd = Command::new("chroot");
        cmd.arg("--userspec=65532:65532").arg(&rootfs);
    }
    cmd.args(&argv).env_clear();
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let op = Operator::spawn(
        cmd,
        dir.join("operator-image.log"),
        metrics_port,
        health_port,
    )?;
    w.operator = Some(op);
    let ready = w
        .operator
        .as_mut()
        .ok_or_else(|| anyhow!("no operator"))?
        .wait_ready(&w.http)
        .await;
    ready?;
    let ready_after = started.elapsed();

    // It runs as 65532 inside the image's root, read-only.
    let pid = w.operator.as_ref().map(Operator::pid).unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    assert_eq!(ids(&status, "Uid:")?, [65532; 4], "{status}");
    assert_eq!(ids(&status, "Gid:")?, [65532; 4], "{status}");
    let root = std::fs::read_link(format!("/proc/{pid}/root"))?;
    assert_eq!(root, rootfs, "the operator's root directory");
    if read_only {
        let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
        let root_mount = mountinfo
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))
            .ok_or_else(|| anyhow!("no root mount in {mountinfo}"))?;
        let options = root_mount.split_whitespace().nth(5).unwrap_or_default();
        assert!(
            options.split(',').any(|o| o == "ro"),
            "the root filesystem is not read-only: {root_mount}"
        );
    }

    // A grant from apply to lapse (as tests/e2e/rbac.rs, with the operator in the image).
    let rg = w.fixtures.resource_group_id();
    let (mi, _) = w.identity(w.fixtures.identity()).await?;
    w.kubectl_ok(&["create", "namespace", "payments"])?;
    w.apply_ok(&format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: payments
spec:
  namespaces: ["payments"]
  identities: ["{mi}"]
  roles: ["Reader"]
  scopes: ["{rg}"]
  serviceAccounts: ["backup-*"]
  maxDuration: 1h
---
apiVersion: lapse.dev/v1alpha1
kind: AccessGrant
metadata:
  name: image
  namespace: payments
spec:
  identity:
    managedIdentity: {mi}
  roles:
  - role: Reader
    scope: {rg}
  federation:
    serviceAccount: backup-runner
  duration: 6s
"#
    ))?;
    let applied = Instant::now();
    w.wait_phase(
        "payments",
        "image",
        GrantPhase::Active,
        Duration::from_secs(45),
    )
    .await?;
    let active_after = applied.elapsed();
    w.wait_phase(
        "payments",
        "image",
        GrantPhase::Expired,
        Duration::from_secs(45),
    )
    .await?;
    let expired_after = applied.elapsed();
    w.kubectl_ok(&[
        "-n",
        "payments",
        "delete",
        "accessgrant",
        "image",
        "--wait",
        "--timeout=30s",
    ])?;
    let events = w.kubectl_ok(&[
        "-n",
        "payments",
        "get",
        "events.events.k8s.io",
        "-o",
        "name",
    ])?;
    assert!(!events.trim().is_empty(), "the operator recorded no Events");
    // Leader election went through the in-cluster client, as the pod.
    let leader_lease = Api::<Lease>::namespaced(w.kube.clone(), OPERATOR_NS)
        .get("lapse-operator")
        .await?;
    assert_eq!(
        leader_lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(POD_NAME)
    );
    let logs = w.operator_logs();
    assert!(
        !logs.to_ascii_lowercase().contains("forbidden"),
        "the operator was refused something:\n{}",
        tail(&logs, 40)
    );
    assert!(
        logs.lines()
            .all(|l| l.trim().is_empty() || l.starts_with('{')),
        "LAPSE_LOG_FORMAT=json: every log line is a JSON object:\n{}",
        tail(&logs, 10)
    );
    println!(
        "ran as 65532:65532 in {} ({}): ready {:.1}s after start, Active {:.1}s and Expired \
         {:.1}s after apply; {:.1}s in all",
        rootfs.display(),
        if read_only {
            "root read-only in a mount namespace"
        } else {
            "root read-only by ownership"
        },
        ready_after.as_secs_f64(),
        active_after.as_secs_f64(),
        expired_after.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
