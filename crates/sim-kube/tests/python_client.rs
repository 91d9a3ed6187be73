//! The official Python `kubernetes` client against sim-kube: typed CRUD with conflicts, a
//! strategic merge patch, label selectors, a custom resource, and a watch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::Command;

const SCRIPT: &str = r#"
import sys
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()

core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py", labels={"team": "py"})))
names = [n.metadata.name for n in core.list_namespace(label_selector="team=py").items]
assert names == ["py"], names

cm = core.create_namespaced_config_map("py", client.V1ConfigMap(
    metadata=client.V1ObjectMeta(name="settings", labels={"app": "lapse"}), data={"a": "1"}))
rv = cm.metadata.resource_version
try:
    core.create_namespaced_config_map("py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings")))
    raise SystemExit("duplicate create accepted")
except ApiException as e:
    assert e.status == 409 and "AlreadyExists" in e.body, (e.status, e.body)

core.patch_namespaced_config_map("settings", "py", {"data": {"b": "2"}})
got = core.read_namespaced_config_map("settings", "py")
assert got.data == {"a": "1", "b": "2"}, got.data
stale = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings", resource_version=rv), data={"c": "3"})
try:
    core.replace_namespaced_config_map("settings", "py", stale)
    raise SystemExit("stale update accepted")
except ApiException as e:
    assert e.status == 409 and "Conflict" in e.body, (e.status, e.body)

crds = client.CustomObjectsApi()
w = crds.create_namespaced_custom_object("test.lapse.dev", "v1", "py", "widgets",
    {"apiVersion": "test.lapse.dev/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}})
assert w["metadata"]["generation"] == 1, w

seen = []
for ev in watch.Watch().stream(core.list_namespaced_config_map, "py", resource_version=rv, timeout_seconds=5):
    seen.append((ev["type"], ev["object"].metadata.name))
    if ev["type"] == "MODIFIED":
        break
assert ("MODIFIED", "settings") in seen, seen

core.delete_namespaced_config_map("settings", "py")
try:
    core.read_namespaced_config_map("settings", "py")
    raise SystemExit("deleted object still readable")
except ApiException as e:
    assert e.status == 404 and "NotFound" in e.body, (e.status, e.body)
print("python client ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_kubernetes_client_works() {
    let h = support::start().await;
    let client = support::client(&h).await;
    support::install_widget_crd(&client).await;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, h.kubeconfig()).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", SCRIPT, kubeconfig.to_str().unwrap()])
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'kubernetes'"),
        "the Python kubernetes client is missing: pip install kubernetes"
    );
    assert!(out.status.success(), "python client: {stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("python client ok"));
}
