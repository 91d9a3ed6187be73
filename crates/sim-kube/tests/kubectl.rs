//! Real kubectl (1.27 and 1.33, which stand beside the `kubectl` on PATH) against sim-kube.
// Test code: helpers outside #[test] functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lapse_sim_kube::{SimKubeHandle, StaticUser};

const VERSIONS: &[&str] = &["1.27", "1.33"];

/// The directory of the real kubectl binary (`kubectl` on PATH is often a dispatcher symlink).
fn kubectl_dir() -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH is set");
    let found = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl is on PATH");
    let real = std::fs::canonicalize(found).expect("kubectl resolves");
    real.parent()
        .expect("kubectl has a directory")
        .to_path_buf()
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn new(h: &SimKubeHandle, version: &str) -> Self {
        let bin = kubectl_dir().join(format!("kubectl.{version}"));
        assert!(bin.is_file(), "{} exists", bin.display());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sim-kube-{}", uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, h.kubeconfig()).unwrap();
        Self { bin, kubeconfig }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.kubeconfig.parent().unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    async fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self.command(args).spawn().expect("kubectl starts");
        let stdin_text = stdin.to_owned();
        tokio::task::spawn_blocking(move || {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin_text.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap()
    }

    /// Runs kubectl and expects success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, "").await
    }

    async fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin).await;
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "kubectl {} {args:?} failed:\nstdout: {so}\nstderr: {se}",
            self.bin.display()
        );
        so.into_owned()
    }

    /// Runs kubectl and expects failure; returns stderr.
    async fn fails(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin).await;
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Starts a long-running kubectl whose stdout lines arrive on a channel.
    fn stream(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let mut child = self.command(args).spawn().expect("kubectl starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Waits (blocking the calling thread only) for a line that satisfies `pred`.
async fn wait_line(
    rx: mpsc::Receiver<String>,
    pred: impl Fn(&str) -> bool + Send + 'static,
) -> (mpsc::Receiver<String>, String) {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if pred(&line) => return (rx, line),
                Ok(line) => seen.push(line),
                Err(_) => panic!("no matching line; saw {seen:?}"),
            }
        }
    })
    .await
    .unwrap()
}

const WIDGET: &str = "apiVersion: test.lapse.dev/v1\nkind: Widget\nmetadata:\n  name: w1\n  namespace: demo\nspec:\n  size: 3\n";

async fn install_crd(k: &Kubectl) {
    let out = k.ok_stdin(&["apply", "-f", "-"], support::WIDGET_CRD).await;
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/widgets.test.lapse.dev created"
        ),
        "{out}"
    );
    let out = k
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/widgets.test.lapse.dev",
            "--timeout=20s",
        ])
        .await;
    assert!(out.contains("condition met"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_crd_apply_get_describe_label_patch() {
    for v in VERSIONS {
        let h = support::start().await;
        let k = Kubectl::new(&h, v);
        install_crd(&k).await;
        let out = k.ok_stdin(&["apply", "-f", "-"], WIDGET).await;
        assert!(
            out.contains("widget.test.lapse.dev/w1 created"),
            "{v}: {out}"
        );

        // Printer columns, server-side: default and wide (priority 1), via short name and category.
        let out = k.ok(&["get", "wd", "-n", "demo"]).await;
        let lines: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0], ["NAME", "SIZE", "PHASE", "AGE"], "{v}: {out}");
        assert_eq!(&lines[1][..2], ["w1", "3"], "{v}: {out}");
        let out = k.ok(&["get", "widgets", "-n", "demo", "-o", "wide"]).await;
        assert!(
            out.lines().next().unwrap().contains("COLOR") && out.contains("green"),
            "{v}: {out}"
        );
        let out = k
            .ok(&["get", "lapse-test", "-n", "demo", "-o", "name"])
            .await;
        assert_eq!(out.trim(), "widget.test.lapse.dev/w1", "{v}");

        let out = k.ok(&["describe", "widget", "w1", "-n", "demo"]).await;
        assert!(
            out.contains("Name:")
                && out.contains("w1")
                && out.contains("Size:")
                && out.contains("Color:"),
            "{v}: {out}"
        );
        // Events recorded through events.k8s.io/v1 show up in describe (which reads core Events).
        let uid = k
            .ok(&[
                "get",
                "wd",
                "w1",
                "-n",
                "demo",
                "-o",
                "jsonpath={.metadata.uid}",
            ])
            .await;
        let event = format!(
            "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: w1.1\n  namespace: demo\n\
             eventTime: \"2026-01-01T00:00:00.000000Z\"\nreportingController: lapse\nreportingInstance: lapse-0\n\
             action: Activate\nreason: Activated\ntype: Normal\nnote: lease started\n\
             regarding:\n  apiVersion: test.lapse.dev/v1\n  kind: Widget\n  name: w1\n  namespace: demo\n  uid: {uid}\n"
        );
        k.ok_stdin(&["create", "-f", "-"], &event).await;
        let out = k.ok(&["describe", "widget", "w1", "-n", "demo"]).await;
        assert!(
            out.contains("Activated") && out.contains("lease started"),
            "{v}: {out}"
        );
        let out = k.ok(&["explain", "widgets.spec.size"]).await;
        assert!(out.contains("How big the widget is."), "{v}: {out}");

        let out = k
            .ok(&["label", "wd", "w1", "-n", "demo", "tier=gold"])
            .await;
        assert!(out.contains("labeled"), "{v}: {out}");
        let out = k
            .ok(&["get", "wd", "-n", "demo", "-l", "tier=gold", "-o", "name"])
            .await;
        assert_eq!(out.trim(), "widget.test.lapse.dev/w1", "{v}");
        k.ok(&[
            "patch",
            "wd",
            "w1",
            "-n",
            "demo",
            "--type=merge",
            "-p",
            r#"{"spec":{"size":5}}"#,
        ])
        .await;
        let out = k
            .ok(&[
                "get",
                "wd",
                "w1",
                "-n",
                "demo",
                "-o",
                "jsonpath={.spec.size} {.metadata.generation}",
            ])
            .await;
        assert_eq!(out, "5 2", "{v}");

        // A CEL rule and schema rules reject bad objects with messages naming the field.
        let err = k
            .fails(
                &[
                    "patch",
                    "wd",
                    "w1",
                    "-n",
                    "demo",
                    "--type=merge",
                    "-p",
                    r#"{"spec":{"size":11}}"#,
                ],
                "",
            )
            .await;
        assert!(
            err.contains("spec: Invalid value: \"object\": sizes above 10 must be red"),
            "{v}: {err}"
        );
        let err = k
            .fails(
                &[
                    "patch",
                    "wd",
                    "w1",
                    "-n",
                    "demo",
                    "--type=merge",
                    "-p",
                    r#"{"spec":{"tags":["a","b","c","d"]}}"#,
                ],
                "",
            )
            .await;
        assert!(
            err.contains("spec.tags: Too many: 4: must have at most 3 items"),
            "{v}: {err}"
        );
        let err = k
            .fails(
                &[
                    "patch",
                    "wd",
                    "w1",
                    "-n",
                    "demo",
                    "--type=merge",
                    "-p",
                    r#"{"spec":{"owner":"Bad"}}"#,
                ],
                "",
            )
            .await;
        assert!(
            err.contains("spec.owner in body should match '^[a-z]+$'"),
            "{v}: {err}"
        );
        // kubectl validates strictly by default: unknown fields are refused by the server.
        let bogus = WIDGET
            .replace("size: 3", "size: 3\n  bogus: 1")
            .replace("w1", "w2");
        let err = k.fails(&["apply", "-f", "-"], &bogus).await;
        assert!(err.contains("unknown field \"spec.bogus\""), "{v}: {err}");
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_waits_for_finalizers() {
    for v in VERSIONS {
        let h = support::start().await;
        let k = Kubectl::new(&h, v);
        install_crd(&k).await;
        k.ok_stdin(&["apply", "-f", "-"], WIDGET).await;
        k.ok(&[
            "patch",
            "wd",
            "w1",
            "-n",
            "demo",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["test/hold"]}}"#,
        ])
        .await;
        let (mut child, _rx) = k.stream(&[
            "delete",
            "wd",
            "w1",
            "-n",
            "demo",
            "--wait=true",
            "--timeout=30s",
        ]);
        support::eventually("deletionTimestamp", || async {
            h.object("test.lapse.dev", "widgets", "demo", "w1")
                .filter(|o| o["metadata"]["deletionTimestamp"].is_string())
        })
        .await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "{v}: delete --wait returned while a finalizer remained"
        );
        k.ok(&[
            "patch",
            "wd",
            "w1",
            "-n",
            "demo",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ])
        .await;
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "{v}");
        let err = k.fails(&["get", "wd", "w1", "-n", "demo"], "").await;
        assert!(
            err.contains("NotFound") || err.contains("not found"),
            "{v}: {err}"
        );
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_streams_changes() {
    for v in VERSIONS {
        let h = support::start().await;
        let k = Kubectl::new(&h, v);
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\n  namespace: demo\ndata:\n  a: \"1\"\n";
        k.ok_stdin(&["apply", "-f", "-"], cm).await;
        let (mut child, rx) = k.stream(&["get", "configmaps", "-n", "demo", "-w"]);
        let (rx, _) = wait_line(rx, |l| l.starts_with("c1 ")).await;
        k.ok_stdin(&["apply", "-f", "-"], &cm.replace("c1", "c2"))
            .await;
        let (_rx, line) = wait_line(rx, |l| l.starts_with("c2 ")).await;
        assert!(
            line.split_whitespace().nth(1) == Some("1"),
            "{v}: DATA column: {line}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_built_ins_and_server_side_conflicts() {
    for v in VERSIONS {
        let h = support::start().await;
        let k = Kubectl::new(&h, v);
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\n  namespace: demo\ndata:\n  a: \"1\"\n  b: \"2\"\n";
        k.ok_stdin(&["apply", "-f", "-"], cm).await;
        // Client-side apply computes a strategic merge patch that removes b.
        let out = k
            .ok_stdin(&["apply", "-f", "-"], &cm.replace("  b: \"2\"\n", ""))
            .await;
        assert!(out.contains("configmap/c1 configured"), "{v}: {out}");
        let out = k
            .ok(&["get", "cm", "c1", "-n", "demo", "-o", "jsonpath={.data}"])
            .await;
        assert_eq!(out, r#"{"a":"1"}"#, "{v}");

        let ssa = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: s1\n  namespace: demo\ndata:\n  k: one\n";
        let out = k
            .ok_stdin(&["apply", "--server-side", "-f", "-"], ssa)
            .await;
        assert!(out.contains("serverside-applied"), "{v}: {out}");
        let err = k
            .fails(
                &["apply", "--server-side", "--field-manager=other", "-f", "-"],
                &ssa.replace("one", "two"),
            )
            .await;
        assert!(
            err.contains("conflict") && err.contains(".data.k"),
            "{v}: {err}"
        );
        k.ok_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=other",
                "--force-conflicts",
                "-f",
                "-",
            ],
            &ssa.replace("one", "two"),
        )
        .await;
        let out = k
            .ok(&["get", "cm", "s1", "-n", "demo", "-o", "jsonpath={.data.k}"])
            .await;
        assert_eq!(out, "two", "{v}");
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_product_crds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/crd");
    for v in VERSIONS {
        let h = support::start().await;
        let k = Kubectl::new(&h, v);
        k.ok(&["apply", "-f", dir.to_str().unwrap()]).await;
        let out = k
            .ok(&[
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
                "--timeout=20s",
            ])
            .await;
        assert!(
            out.contains("accessgrants.lapse.dev condition met"),
            "{v}: {out}"
        );
        let out = k
            .ok(&["api-resources", "--api-group=lapse.dev", "-o", "name"])
            .await;
        assert!(out.contains("accessgrants.lapse.dev"), "{v}: {out}");
        h.shutdown().await;
    }
}

/// Verifies an RS256 JWT against a JWKS document; returns the claims.
fn verify_jwt(token: &str, jwks: &serde_json::Value) -> serde_json::Value {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts");
    let header: serde_json::Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("kid is published");
    let n = B64.decode(key["n"].as_str().unwrap()).unwrap();
    let e = B64.decode(key["e"].as_str().unwrap()).unwrap();
    let public = aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e };
    public
        .verify(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &B64.decode(parts[2]).unwrap(),
        )
        .expect("signature verifies against the JWKS");
    serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_token_verifies_against_published_jwks() {
    for v in VERSIONS {
        let h = support::start().await;
        let k = Kubectl::new(&h, v);
        k.ok(&["create", "serviceaccount", "bot", "-n", "demo"])
            .await;
        let token = k
            .ok(&[
                "create",
                "token",
                "bot",
                "-n",
                "demo",
                "--audience",
                "api://AzureADTokenExchange",
                "--duration",
                "15m",
            ])
            .await;
        let discovery: serde_json::Value = serde_json::from_str(
            &k.ok(&["get", "--raw", "/.well-known/openid-configuration"])
                .await,
        )
        .unwrap();
        assert_eq!(discovery["issuer"], h.url(), "{v}");
        let jwks: serde_json::Value =
            serde_json::from_str(&k.ok(&["get", "--raw", "/openid/v1/jwks"]).await).unwrap();
        let claims = verify_jwt(token.trim(), &jwks);
        assert_eq!(claims["sub"], "system:serviceaccount:demo:bot", "{v}");
        assert_eq!(
            claims["aud"],
            serde_json::json!(["api://AzureADTokenExchange"]),
            "{v}"
        );
        assert_eq!(claims["iss"], h.url(), "{v}");
        let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
        assert_eq!(ttl, 900, "{v}");
        // A token for the API server's own audience authenticates kubectl as the ServiceAccount.
        let api_token = k.ok(&["create", "token", "bot", "-n", "demo"]).await;
        let err = k
            .fails(
                &["--token", api_token.trim(), "get", "secrets", "-n", "demo"],
                "",
            )
            .await;
        assert!(err.contains("User \"system:serviceaccount:demo:bot\" cannot list resource \"secrets\" in API group \"\" in the namespace \"demo\""), "{v}: {err}");
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_follows_rbac() {
    for v in VERSIONS {
        let h = support::start().await;
        let k = Kubectl::new(&h, v);
        let sa = "system:serviceaccount:demo:bot";
        k.ok(&["create", "serviceaccount", "bot", "-n", "demo"])
            .await;
        let out = k
            .run(
                &[
                    "auth",
                    "can-i",
                    "get",
                    "configmaps",
                    "-n",
                    "demo",
                    "--as",
                    sa,
                ],
                "",
            )
            .await;
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
            (Some(1), "no"),
            "{v}"
        );
        k.ok(&[
            "create",
            "role",
            "cm-reader",
            "-n",
            "demo",
            "--verb=get,list",
            "--resource=configmaps",
            "--resource-name=settings",
        ])
        .await;
        k.ok(&[
            "create",
            "rolebinding",
            "bot-reads",
            "-n",
            "demo",
            "--role=cm-reader",
            "--serviceaccount=demo:bot",
        ])
        .await;
        assert_eq!(
            k.ok(&[
                "auth",
                "can-i",
                "get",
                "configmaps/settings",
                "-n",
                "demo",
                "--as",
                sa
            ])
            .await
            .trim(),
            "yes",
            "{v}"
        );
        let out = k
            .run(
                &[
                    "auth",
                    "can-i",
                    "get",
                    "configmaps/other",
                    "-n",
                    "demo",
                    "--as",
                    sa,
                ],
                "",
            )
            .await;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "no",
            "{v}: resourceNames restrict"
        );
        let out = k
            .run(
                &[
                    "auth",
                    "can-i",
                    "get",
                    "configmaps/settings",
                    "-n",
                    "default",
                    "--as",
                    sa,
                ],
                "",
            )
            .await;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "no",
            "{v}: a RoleBinding is namespaced"
        );
        k.ok(&[
            "create",
            "clusterrolebinding",
            "bot-view",
            "--clusterrole=view",
            "--serviceaccount=demo:bot",
        ])
        .await;
        assert_eq!(
            k.ok(&[
                "auth",
                "can-i",
                "list",
                "deployments.apps",
                "-A",
                "--as",
                sa
            ])
            .await
            .trim(),
            "yes",
            "{v}"
        );
        h.shutdown().await;
    }
}

const PDB: &str = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\n  namespace: demo\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels:\n      app: web\n";

const NETPOL: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web\n  namespace: demo\nspec:\n  podSelector:\n    matchLabels:\n      app: web\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          role: frontend\n    ports:\n    - port: 8080\n";

/// Splits `kubectl get` output into rows of columns.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_pod_disruption_budgets_and_network_policies() {
    for v in VERSIONS {
        let h = support::start().await;
        let k = Kubectl::new(&h, v);
        let out = k.ok_stdin(&["create", "-f", "-"], PDB).await;
        assert_eq!(out.trim(), "poddisruptionbudget.policy/web created", "{v}");
        let out = k.ok_stdin(&["apply", "-f", "-"], NETPOL).await;
        assert_eq!(
            out.trim(),
            "networkpolicy.networking.k8s.io/web created",
            "{v}"
        );
        // kubectl's typed client sends protobuf for `create poddisruptionbudget`.
        let out = k
            .ok(&[
                "create",
                "poddisruptionbudget",
                "api",
                "-n",
                "demo",
                "--selector=app=api",
                "--max-unavailable=25%",
            ])
            .await;
        assert_eq!(out.trim(), "poddisruptionbudget.policy/api created", "{v}");

        let out = k.ok(&["get", "pdb,netpol", "-n", "demo"]).await;
        let r = rows(&out);
        assert_eq!(
            r[0],
            [
                "NAME",
                "MIN",
                "AVAILABLE",
                "MAX",
                "UNAVAILABLE",
                "ALLOWED",
                "DISRUPTIONS",
                "AGE"
            ],
            "{v}: {out}"
        );
        assert_eq!(
            &r[1][..4],
            ["poddisruptionbudget.policy/api", "N/A", "25%", "0"],
            "{v}: {out}"
        );
        assert_eq!(
            &r[2][..4],
            ["poddisruptionbudget.policy/web", "1", "N/A", "0"],
            "{v}: {out}"
        );
        assert_eq!(r[3], ["NAME", "POD-SELECTOR", "AGE"], "{v}: {out}");
        assert_eq!(
            &r[4][..2],
            ["networkpolicy.networking.k8s.io/web", "app=web"],
            "{v}: {out}"
        );

        // The disruption controller's stand-in: no pods, so no disruption is allowed.
        let out = k
            .ok(&[
                "get",
                "pdb",
                "web",
                "-n",
                "demo",
                "-o",
                "jsonpath={.status.observedGeneration} {.status.desiredHealthy} {.status.conditions[0].reason}",
            ])
            .await;
        assert_eq!(out, "1 1 InsufficientPods", "{v}");
        let out = k.ok(&["describe", "pdb", "web", "-n", "demo"]).await;
        for want in [
            "Min available:  1",
            "Selector:       app=web",
            "Allowed disruptions:  0",
        ] {
            assert!(out.contains(want), "{v}: {want:?} in {out}");
        }
        // Server-side defaults kubectl shows: policyTypes and the port protocol.
        let out = k.ok(&["describe", "netpol", "web", "-n", "demo"]).await;
        for want in [
            "PodSelector:     app=web",
            "To Port: 8080/TCP",
            "PodSelector: role=frontend",
            "Policy Types: Ingress",
        ] {
            assert!(out.contains(want), "{v}: {want:?} in {out}");
        }
        let out = k.ok(&["delete", "pdb", "web", "-n", "demo"]).await;
        assert_eq!(
            out.trim(),
            "poddisruptionbudget.policy \"web\" deleted",
            "{v}"
        );
        let out = k.ok(&["delete", "netpol", "web", "-n", "demo"]).await;
        assert_eq!(
            out.trim(),
            "networkpolicy.networking.k8s.io \"web\" deleted",
            "{v}"
        );
        let err = k.fails(&["get", "netpol", "web", "-n", "demo"], "").await;
        assert!(
            err.contains("networkpolicies.networking.k8s.io \"web\" not found"),
            "{v}: {err}"
        );
        h.shutdown().await;
    }
}

const REQUIRE_TEAM: &str = "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: require-team\nspec:\n  matchConstraints:\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [\"v1\"]\n      operations: [\"CREATE\", \"UPDATE\"]\n      resources: [\"configmaps\"]\n  validations:\n  - expression: \"has(object.metadata.labels) && 'team' in object.metadata.labels\"\n    message: configmaps need a team label\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n  name: require-team\nspec:\n  policyName: require-team\n  validationActions: [Deny]\n  matchResources:\n    namespaceSelector:\n      matchLabels:\n        kubernetes.io/metadata.name: demo\n";

const ONLY_ALICE_DELETES: &str = "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: only-alice-deletes\nspec:\n  matchConstraints:\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [\"*\"]\n      operations: [\"DELETE\"]\n      resources: [\"configmaps\"]\n  variables:\n  - name: who\n    expression: request.userInfo.username\n  validations:\n  - expression: \"variables.who == 'alice@example.com'\"\n    messageExpression: \"variables.who + ' may not delete ' + request.namespace + '/' + request.name\"\n    reason: Forbidden\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n  name: only-alice-deletes-binding\nspec:\n  policyName: only-alice-deletes\n  validationActions: [Deny]\n";

const CONFIGMAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\n  namespace: demo\ndata:\n  a: \"1\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_validating_admission_policies_deny_with_their_message() {
    for v in VERSIONS {
        let h = support::start().await;
        let k = Kubectl::new(&h, v);
        // Namespaces carry kubernetes.io/metadata.name, which the binding selects on.
        k.ok(&["label", "ns", "demo", "kubernetes.io/metadata.name=demo"])
            .await;
        let out = k.ok_stdin(&["apply", "-f", "-"], REQUIRE_TEAM).await;
        assert!(
            out.contains(
                "validatingadmissionpolicy.admissionregistration.k8s.io/require-team created"
            ) && out.contains(
                "validatingadmissionpolicybinding.admissionregistration.k8s.io/require-team created"
            ),
            "{v}: {out}"
        );
        let r = rows(&k.ok(&["get", "validatingadmissionpolicies"]).await);
        assert_eq!(r[0], ["NAME", "VALIDATIONS", "PARAMKIND", "AGE"], "{v}");
        assert_eq!(&r[1][..3], ["require-team", "1", "<unset>"], "{v}");
        let r = rows(&k.ok(&["get", "validatingadmissionpolicybindings"]).await);
        assert_eq!(r[0], ["NAME", "POLICYNAME", "PARAMREF", "AGE"], "{v}");
        assert_eq!(
            &r[1][..3],
            ["require-team", "require-team", "<unset>"],
            "{v}"
        );

        // Denied with reason Invalid (422): kubectl prints the policy's message as a cause.
        let err = k.fails(&["apply", "-f", "-"], CONFIGMAP).await;
        assert_eq!(
            err.trim(),
            "The configmaps \"c1\" is invalid: : ValidatingAdmissionPolicy 'require-team' with binding 'require-team' denied request: configmaps need a team label",
            "{v}"
        );
        let labelled = CONFIGMAP.replace(
            "namespace: demo\n",
            "namespace: demo\n  labels:\n    team: a\n",
        );
        let out = k.ok_stdin(&["apply", "-f", "-"], &labelled).await;
        assert_eq!(out.trim(), "configmap/c1 created", "{v}");
        // An update that drops the label is denied too; the binding's namespaceSelector leaves
        // other namespaces alone.
        let err = k
            .fails(&["label", "cm", "c1", "-n", "demo", "team-"], "")
            .await;
        assert!(err.contains("configmaps need a team label"), "{v}: {err}");
        k.ok_stdin(&["apply", "-f", "-"], &CONFIGMAP.replace("demo", "default"))
            .await;

        // A policy on the user (after impersonation), with messageExpression and reason Forbidden.
        k.ok_stdin(&["apply", "-f", "-"], ONLY_ALICE_DELETES).await;
        k.ok(&[
            "create",
            "rolebinding",
            "people-edit",
            "-n",
            "demo",
            "--clusterrole=edit",
            "--user=alice@example.com",
            "--user=bob@example.com",
        ])
        .await;
        let err = k
            .fails(
                &[
                    "delete",
                    "cm",
                    "c1",
                    "-n",
                    "demo",
                    "--as",
                    "bob@example.com",
                ],
                "",
            )
            .await;
        assert_eq!(
            err.trim(),
            "Error from server (Forbidden): configmaps \"c1\" is forbidden: ValidatingAdmissionPolicy 'only-alice-deletes' with binding 'only-alice-deletes-binding' denied request: bob@example.com may not delete demo/c1",
            "{v}"
        );
        let out = k
            .ok(&[
                "delete",
                "cm",
                "c1",
                "-n",
                "demo",
                "--as",
                "alice@example.com",
            ])
            .await;
        assert_eq!(out.trim(), "configmap \"c1\" deleted", "{v}");

        // Warn: the request succeeds and kubectl prints the server's warning.
        let warn = REQUIRE_TEAM
            .replace(
                "name: require-team\nspec:\n  policyName",
                "name: require-team-warn\nspec:\n  policyName",
            )
            .replace("validationActions: [Deny]", "validationActions: [Warn]");
        let warn = &warn[warn.find("---").unwrap() + 4..];
        k.ok_stdin(&["apply", "-f", "-"], warn).await;
        k.ok(&["delete", "validatingadmissionpolicybinding", "require-team"])
            .await;
        let out = k.run(&["apply", "-f", "-"], CONFIGMAP).await;
        assert!(out.status.success(), "{v}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            "Warning: Validation failed for ValidatingAdmissionPolicy 'require-team' with binding 'require-team-warn': configmaps need a team label",
            "{v}"
        );
        // A policy whose expression does not compile is refused when written.
        let bad = REQUIRE_TEAM[..REQUIRE_TEAM.find("---").unwrap()].replace(
            "has(object.metadata.labels) &&",
            "has(object.metadata.labels) && &&",
        );
        let err = k.fails(&["apply", "-f", "-"], &bad).await;
        assert!(
            err.contains("spec.validations[0].expression: Invalid value")
                && err.contains("compilation failed"),
            "{v}: {err}"
        );
        h.shutdown().await;
    }
}

const IMPERSONATOR: &str = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: impersonate-bob-oncall\nrules:\n- apiGroups: [\"\"]\n  resources: [\"users\"]\n  verbs: [\"impersonate\"]\n  resourceNames: [\"bob@example.com\"]\n- apiGroups: [\"\"]\n  resources: [\"groups\"]\n  verbs: [\"impersonate\"]\n  resourceNames: [\"oncall\"]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: alice-impersonates\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: impersonate-bob-oncall\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: alice@example.com\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_impersonation_follows_rbac_and_whoami_names_the_user() {
    for v in VERSIONS {
        let h = support::start().await;
        let alice = StaticUser::new("alice@example.com", &["dev"]);
        let bob = StaticUser::new("bob@example.com", &["qa"]);
        h.add_user(&alice);
        h.add_user(&bob);
        let k = Kubectl::new(&h, v);
        let whoami = |out: &str| -> Vec<(String, String)> {
            out.lines()
                .skip(1)
                .filter_map(|l| l.split_once(char::is_whitespace))
                .map(|(a, b)| (a.to_owned(), b.trim().to_owned()))
                .collect()
        };
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        // Fill kubectl's discovery cache (shared by every user of this HOME), so refusals below
        // come from the requests themselves rather than from discovery.
        k.ok(&["get", "cm", "-n", "demo"]).await;

        let out = k.ok(&["auth", "whoami"]).await;
        assert!(out.starts_with("ATTRIBUTE"), "{v}: {out}");
        assert_eq!(
            whoami(&out),
            [
                pair("Username", "kubernetes-admin"),
                pair("Groups", "[system:masters system:authenticated]")
            ],
            "{v}"
        );
        let out = k.ok(&["--token", &alice.token, "auth", "whoami"]).await;
        assert_eq!(
            whoami(&out),
            [
                pair("Username", "alice@example.com"),
                pair("UID", &alice.uid),
                pair("Groups", "[dev system:authenticated]")
            ],
            "{v}"
        );

        // Without the impersonate permission kubectl --as is refused, naming what was asked for.
        let as_bob = [
            "--token",
            &alice.token,
            "--as",
            "bob@example.com",
            "--as-group",
            "oncall",
        ];
        let err = k
            .fails(&[&as_bob[..], &["get", "cm", "-n", "demo"]].concat(), "")
            .await;
        assert_eq!(
            err.trim(),
            "Error from server (Forbidden): users \"bob@example.com\" is forbidden: User \"alice@example.com\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope",
            "{v}"
        );
        k.ok_stdin(&["apply", "-f", "-"], IMPERSONATOR).await;
        let out = k.ok(&[&as_bob[..], &["auth", "whoami"]].concat()).await;
        assert_eq!(
            whoami(&out),
            [
                pair("Username", "bob@example.com"),
                pair("Groups", "[oncall system:authenticated]")
            ],
            "{v}"
        );
        // Each group is checked: alice may impersonate oncall only.
        let err = k
            .fails(
                &[
                    "--token",
                    &alice.token,
                    "--as",
                    "bob@example.com",
                    "--as-group",
                    "admins",
                    "get",
                    "cm",
                    "-n",
                    "demo",
                ],
                "",
            )
            .await;
        assert_eq!(
            err.trim(),
            "Error from server (Forbidden): groups \"admins\" is forbidden: User \"alice@example.com\" cannot impersonate resource \"groups\" in API group \"\" at the cluster scope",
            "{v}"
        );
        // RBAC sees the impersonated user: group oncall may list configmaps, bob alone may not.
        k.ok(&[
            "create",
            "rolebinding",
            "oncall-view",
            "-n",
            "demo",
            "--clusterrole=view",
            "--group=oncall",
        ])
        .await;
        k.ok(&[&as_bob[..], &["get", "cm", "-n", "demo"]].concat())
            .await;
        let err = k
            .fails(&["--token", &bob.token, "get", "cm", "-n", "demo"], "")
            .await;
        assert!(
            err.contains("User \"bob@example.com\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"demo\""),
            "{v}: {err}"
        );
        // bob may not impersonate anyone, not even alice.
        let err = k
            .fails(
                &[
                    "--token",
                    &bob.token,
                    "--as",
                    "alice@example.com",
                    "get",
                    "ns",
                ],
                "",
            )
            .await;
        assert!(
            err.contains("User \"bob@example.com\" cannot impersonate resource \"users\""),
            "{v}: {err}"
        );
        h.shutdown().await;
    }
}
