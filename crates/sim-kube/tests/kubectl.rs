//! Real kubectl (1.27 and 1.33, which stand beside the `kubectl` on PATH) against sim-kube.
// Test code: helpers outside #[test] functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lapse_sim_kube::SimKubeHandle;

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
