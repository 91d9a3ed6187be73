//! The Helm chart `charts/lapse`, driven by Helm's own library (Python `helm-sdkpy`, which embeds
//! Helm's Go code) against the sandbox's sim-kube: what it renders must be what the operator
//! needs (the RBAC of `config/rbac/`, settings `lapse-operator run` knows, the generated CRDs,
//! a restricted pod), its required values fail with clear messages, and the CRDs outlive an
//! uninstall. Needs `pip install --ignore-requires-python helm-sdkpy` (`.ci/run` does it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};
use lapse_e2e::{Capability, Sandbox, binary, sandbox_only, workspace_root};
use serde::Deserialize as _;
use serde_json::{Value, json};

/// One Helm action per call; prints `{"ok": ..., "result" | "error": ...}` as JSON.
const HELM: &str = r#"
import asyncio, json, sys
import helm_sdkpy as h

async def main(req):
    cfg = h.Configuration(namespace=req["namespace"], kubeconfig=req["kubeconfig"])
    action = req["action"]
    if action == "lint":
        return await h.Lint(cfg).run(req["chart"])
    if action == "install":
        # No wait: sim-kube serves no ReplicaSets, which Helm's readiness check reads.
        return await h.Install(cfg).run(req["release"], req["chart"], values=req["values"],
                                        create_namespace=True, wait=False, timeout=60)
    if action == "uninstall":
        return await h.Uninstall(cfg).run(req["release"], wait=True, timeout=60)
    raise ValueError(f"unknown action {action}")

req = json.loads(sys.argv[1])
try:
    print(json.dumps({"ok": True, "result": asyncio.run(main(req))}, default=str))
except h.HelmError as e:
    print(json.dumps({"ok": False, "error": str(e)}))
"#;

const NAMESPACE: &str = "lapse-system";

fn chart_dir() -> PathBuf {
    workspace_root().join("charts/lapse")
}

/// Helm's library against one sandbox.
struct Helm {
    kubeconfig: PathBuf,
}

impl Helm {
    /// Ok(result) when Helm succeeded, Err(Helm's message) when it refused.
    fn run(
        &self,
        action: &str,
        release: &str,
        values: &Value,
    ) -> anyhow::Result<Result<Value, String>> {
        let request = json!({
            "action": action,
            "namespace": NAMESPACE,
            "kubeconfig": self.kubeconfig,
            "chart": chart_dir(),
            "release": release,
            "values": values,
        });
        let out = Command::new("python3")
            .args(["-c", HELM, &request.to_string()])
            .output()
            .context("running python3")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No module named 'helm_sdkpy'") {
            bail!("helm-sdkpy is missing: pip install --ignore-requires-python helm-sdkpy");
        }
        if !out.status.success() {
            bail!("helm {action} crashed: {stderr}");
        }
        let reply: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("helm {action} printed no JSON: {stderr}"))?;
        Ok(if reply["ok"] == true {
            Ok(reply["result"].clone())
        } else {
            Err(reply["error"].as_str().unwrap_or_default().to_owned())
        })
    }

    fn install(&self, release: &str, values: &Value) -> anyhow::Result<Manifest> {
        match self.run("install", release, values)? {
            Ok(release) => Manifest::parse(release["manifest"].as_str().unwrap_or_default()),
            Err(e) => bail!("helm install {release} failed: {e}"),
        }
    }

    /// Helm's refusal of these values.
    fn install_error(&self, release: &str, values: &Value) -> anyhow::Result<String> {
        match self.run("install", release, values)? {
            Ok(_) => bail!("helm install {release} succeeded with {values}"),
            Err(e) => Ok(e),
        }
    }
}

/// The objects a release rendered.
struct Manifest(Vec<Value>);

impl Manifest {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let docs = parse_yaml_docs(text)?;
        if docs.is_empty() {
            bail!("the release rendered nothing");
        }
        Ok(Self(docs))
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.0.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> anyhow::Result<&Value> {
        match self.of_kind(kind).as_slice() {
            [one] => Ok(one),
            other => bail!("expected one {kind}, the chart rendered {}", other.len()),
        }
    }

    fn named(&self, kind: &str, name: &str) -> anyhow::Result<&Value> {
        self.of_kind(kind)
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
            .ok_or_else(|| anyhow!("the chart rendered no {kind} {name}"))
    }

    fn container(&self) -> anyhow::Result<&Value> {
        let deploy = self.one("Deployment")?;
        match deploy["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::as_slice)
        {
            Some([c]) => Ok(c),
            _ => bail!("the Deployment should run exactly one container: {deploy}"),
        }
    }

    fn env(&self, name: &str) -> anyhow::Result<&Value> {
        self.container()?["env"]
            .as_array()
            .and_then(|env| env.iter().find(|e| e["name"] == name))
            .ok_or_else(|| anyhow!("the Deployment sets no {name}"))
    }

    fn env_names(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.container()?["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect())
    }
}

/// Every document of a multi-document YAML stream, empty ones dropped.
fn parse_yaml_docs(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn yaml_files(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    paths.sort();
    let mut docs = Vec::new();
    for p in paths {
        docs.extend(parse_yaml_docs(&std::fs::read_to_string(&p)?)?);
    }
    Ok(docs)
}

/// The rules of the one object of `kind` in `config/rbac/`.
fn shipped_rules(kind: &str) -> anyhow::Result<Value> {
    let docs = yaml_files(&workspace_root().join("config/rbac"))?;
    docs.iter()
        .find(|d| d["kind"] == kind)
        .map(|d| d["rules"].clone())
        .ok_or_else(|| anyhow!("config/rbac/ has no {kind}"))
}

/// The environment variables `lapse-operator run --help` documents (`[env: NAME=]`).
fn operator_settings() -> anyhow::Result<BTreeSet<String>> {
    settings_of("run")
}

/// The environment variables `lapse-operator <subcommand> --help` documents (`[env: NAME=]`).
fn settings_of(subcommand: &str) -> anyhow::Result<BTreeSet<String>> {
    let out = Command::new(binary("lapse-operator")?)
        .args([subcommand, "--help"])
        .output()?;
    let help = String::from_utf8_lossy(&out.stdout);
    let names: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect();
    if names.len() < 8 {
        bail!("`lapse-operator {subcommand} --help` lists too few environment variables: {help}");
    }
    Ok(names)
}

fn kubectl(sb: &Sandbox, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &sb.kubeconfig)
        .output()?)
}

fn kubectl_ok(sb: &Sandbox, args: &[&str]) -> anyhow::Result<String> {
    let out = kubectl(sb, args)?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn exists(sb: &Sandbox, args: &[&str]) -> anyhow::Result<bool> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let out = kubectl(sb, &all)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(true)
    } else if stderr.contains("NotFound") || stderr.contains("not found") {
        Ok(false)
    } else {
        bail!("kubectl get {}: {stderr}", args.join(" "))
    }
}

/// The values a user must give, taken from the sandbox's own settings.
fn required_values(sb: &Sandbox) -> anyhow::Result<Value> {
    Ok(json!({
        "clusterName": "chart-e2e",
        "oidcIssuer": sb.env("LAPSE_OIDC_ISSUER")?,
        "azure": {
            "tenantId": sb.env("AZURE_TENANT_ID")?,
            "clientId": sb.env("AZURE_CLIENT_ID")?,
        },
    }))
}

/// Merges `b` into `a` (objects recursively, everything else replaced).
fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn port_of(addr: &Value) -> Option<u64> {
    addr.as_str()?.rsplit_once(':')?.1.parse().ok()
}

fn named_port(container: &Value, name: &str) -> Option<u64> {
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["containerPort"]
        .as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_the_operator_as_shipped_and_keeps_the_crds_on_uninstall()
-> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "installs and uninstalls a Helm release with cluster-wide RBAC and the CRDs; it starts a \
         fresh sandbox of its own",
    )?;
    let sb = Sandbox::start()?;
    let helm = Helm {
        kubeconfig: sb.kubeconfig.clone(),
    };

    // With its defaults the chart lints clean: missing required values are only warnings there.
    let lint = helm
        .run("lint", "", &Value::Null)?
        .map_err(|e| anyhow!("helm lint: {e}"))?;
    assert!(
        lint["Errors"].as_array().is_none_or(Vec::is_empty),
        "helm lint found errors: {lint}"
    );

    // Every optional setting on, so every environment variable the chart can set is rendered.
    kubectl_ok(&sb, &["create", "namespace", NAMESPACE])?;
    kubectl_ok(
        &sb,
        &[
            "-n",
            NAMESPACE,
            "create",
            "secret",
            "generic",
            "lapse-azure",
            &format!(
                "--from-literal=client-secret={}",
                sb.env("AZURE_CLIENT_SECRET")?
            ),
        ],
    )?;
    kubectl_ok(
        &sb,
        &[
            "-n",
            NAMESPACE,
            "create",
            "configmap",
            "lapse-azure-ca",
            &format!("--from-file=ca.crt={}", sb.env("LAPSE_AZURE_CA_BUNDLE")?),
        ],
    )?;
    kubectl_ok(
        &sb,
        &[
            "-n",
            NAMESPACE,
            "create",
            "secret",
            "generic",
            "lapse-notify",
            "--from-literal=url=https://hooks.example.com/services/T0/SECRET",
        ],
    )?;
    kubectl_ok(
        &sb,
        &[
            "-n",
            NAMESPACE,
            "create",
            "secret",
            "generic",
            "lapse-ticket-checkers",
            "--from-literal=jira=https://tickets.example.com/check?token=SECRET",
        ],
    )?;
    let mut values = required_values(&sb)?;
    merge(
        &mut values,
        json!({
            "notifications": {"existingSecret": "lapse-notify", "format": "slack", "expiringBefore": "15m"},
            "ticketCheckers": {"secretName": "lapse-ticket-checkers", "recheckInterval": "30s"},
            "usage": {"activityLog": true, "pollInterval": "2m"},
            "azure": {
                "subscriptionId": sb.env("AZURE_SUBSCRIPTION_ID")?,
                "sweepSubscriptions": ["00000000-0000-4000-8000-00000000a002"],
                "armEndpoint": sb.env("LAPSE_ARM_ENDPOINT")?,
                "graphEndpoint": sb.env("LAPSE_GRAPH_ENDPOINT")?,
                "authorityHost": sb.env("AZURE_AUTHORITY_HOST")?,
                "workloadIdentity": false,
                "clientSecret": {"existingSecret": "lapse-azure"},
                "caBundle": {"configMap": "lapse-azure-ca"},
            },
            "namespaces": ["payments", "team-a"],
            "networkPolicy": {"enabled": true},
            "grafanaDashboard": {"enabled": true},
        }),
    );
    let m = helm.install("lapse", &values)?;

    // The operator's own ClusterRole is one of four: the others are for people, aggregated into
    // view, edit and admin, and never touch status.
    let operator_role = m.named("ClusterRole", "lapse")?;
    for (name, aggregates) in [
        ("lapse-view", vec!["view", "edit", "admin"]),
        ("lapse-edit", vec!["edit", "admin"]),
        ("lapse-approver", vec![]),
    ] {
        let role = m.named("ClusterRole", name)?;
        for to in &aggregates {
            assert_eq!(
                role["metadata"]["labels"][format!("rbac.authorization.k8s.io/aggregate-to-{to}")],
                "true",
                "{name}"
            );
        }
        assert!(
            !role["rules"].to_string().contains("/status"),
            "{name} lets people write status: {role}"
        );
    }
    // Two replicas: a disruption budget keeps one; traffic is limited when asked; the
    // dashboard is a ConfigMap the Grafana sidecar finds.
    let pdb = m.one("PodDisruptionBudget")?;
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        m.one("Deployment")?["spec"]["selector"]["matchLabels"]
    );
    let np = m.one("NetworkPolicy")?;
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let dashboard = m.named("ConfigMap", "lapse-dashboard")?;
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let panels: Value =
        serde_json::from_str(dashboard["data"]["lapse.json"].as_str().unwrap_or_default())?;
    assert!(panels["panels"].as_array().is_some_and(|p| p.len() >= 8));
    // Only the operator's ServiceAccount may write grant status.
    let vap = m.named("ValidatingAdmissionPolicy", "lapse-status-writer")?;
    assert!(
        vap["spec"]["validations"][0]["expression"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("system:serviceaccount:{NAMESPACE}:lapse"))),
        "{vap}"
    );
    // The approval policies carry exactly the validations the operator checks for (the same
    // ones as config/admission/approval.yaml): otherwise it would never count an approval.
    let shipped: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&std::fs::read_to_string(
        lapse_e2e::workspace_root().join("config/admission/approval.yaml"),
    )?)
    .map(Value::deserialize)
    .collect::<Result<_, _>>()?;
    for (rendered, plain) in [
        ("lapse-grant-requester", "lapse-grant-requester"),
        ("lapse-approval-approver", "lapse-approval-approver"),
    ] {
        let want = shipped
            .iter()
            .find(|d| d["kind"] == "ValidatingAdmissionPolicy" && d["metadata"]["name"] == plain)
            .ok_or_else(|| anyhow::anyhow!("{plain} not in config/admission/approval.yaml"))?;
        let got = m.named("ValidatingAdmissionPolicy", rendered)?;
        assert_eq!(got["spec"], want["spec"], "{rendered}");
        let binding = m.named("ValidatingAdmissionPolicyBinding", rendered)?;
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    }
    for obj in [
        vec!["validatingadmissionpolicy", "lapse-grant-requester"],
        vec![
            "validatingadmissionpolicybinding",
            "lapse-approval-approver",
        ],
        vec!["validatingadmissionpolicy", "lapse-status-writer"],
        vec!["validatingadmissionpolicybinding", "lapse-status-writer"],
        vec!["-n", NAMESPACE, "pdb", "lapse"],
        vec!["-n", NAMESPACE, "networkpolicy", "lapse"],
        vec!["clusterrole", "lapse-edit"],
    ] {
        assert!(exists(&sb, &obj)?, "{obj:?} was not created");
    }

    // RBAC: exactly the rules the RBAC suite proves sufficient.
    assert_eq!(operator_role["rules"], shipped_rules("ClusterRole")?);
    // With namespaces set the release is one shard of the cluster's operators: its leader
    // election Lease is its own.
    let mut role = shipped_rules("Role")?;
    role[0]["resourceNames"] = json!(["lapse-operator-lapse"]);
    // With usage evidence on, the usage ledger ConfigMap: its shard's, by name, and create.
    if let Some(rules) = role.as_array_mut() {
        rules.push(json!({
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["lapse-usage-ledger-lapse"],
            "verbs": ["get", "patch"],
        }));
        rules.push(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}));
    }
    assert_eq!(m.one("Role")?["rules"], role);
    let sa = m.one("ServiceAccount")?["metadata"]["name"].clone();
    for binding in [
        m.named("ClusterRoleBinding", "lapse")?,
        m.one("RoleBinding")?,
    ] {
        assert_eq!(binding["subjects"][0]["name"], sa, "{binding}");
        assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE, "{binding}");
    }

    // Configuration: only settings the operator knows, and the ones it cannot start without.
    let known = operator_settings()?;
    let names = m.env_names()?;
    let unknown: Vec<&String> = names.iter().filter(|n| !known.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the Deployment sets variables `lapse-operator run` ignores: {unknown:?}"
    );
    assert_eq!(
        names.len(),
        names.iter().collect::<BTreeSet<_>>().len(),
        "duplicate env: {names:?}"
    );
    for required in [
        "LAPSE_CLUSTER_NAME",
        "LAPSE_OIDC_ISSUER",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "{required} missing from {names:?}"
        );
    }
    assert_eq!(m.env("LAPSE_CLUSTER_NAME")?["value"], "chart-e2e");
    // The webhook URL comes from its Secret, never from a value that lands in the manifest.
    assert_eq!(
        m.env("LAPSE_NOTIFY_URL")?["valueFrom"]["secretKeyRef"],
        json!({"name": "lapse-notify", "key": "url"})
    );
    assert_eq!(m.env("LAPSE_NOTIFY_FORMAT")?["value"], "slack");
    assert_eq!(m.env("LAPSE_NOTIFY_EXPIRING_BEFORE")?["value"], "15m");
    assert_eq!(m.env("LAPSE_NAMESPACES")?["value"], "payments,team-a");
    // Usage evidence: only the logs turned on, with their cadence.
    assert_eq!(m.env("LAPSE_USAGE_ACTIVITY_LOG")?["value"], "true");
    assert_eq!(m.env("LAPSE_USAGE_POLL_INTERVAL")?["value"], "2m");
    assert_eq!(m.env("LAPSE_USAGE_REREAD")?["value"], "20m");
    assert!(m.env("LAPSE_USAGE_SIGN_INS").is_err(), "sign-ins are off");
    // Ticket checker URLs are files of their mounted Secret, never values in the manifest.
    let checkers = m.env("LAPSE_TICKET_CHECKERS_DIR")?["value"].clone();
    assert_eq!(m.env("LAPSE_TICKET_RECHECK_INTERVAL")?["value"], "30s");
    let c = m.container()?;
    assert!(
        c["volumeMounts"].as_array().into_iter().flatten().any(|v| {
            v["name"] == "ticket-checkers" && v["mountPath"] == checkers && v["readOnly"] == true
        }),
        "{c}"
    );
    let pod = &m.one("Deployment")?["spec"]["template"]["spec"];
    assert!(
        pod["volumes"].as_array().into_iter().flatten().any(|v| {
            v["name"] == "ticket-checkers" && v["secret"]["secretName"] == "lapse-ticket-checkers"
        }),
        "{pod}"
    );
    assert!(
        !serde_json::to_string(&m.0)?.contains("tickets.example.com"),
        "a checker URL in the manifest"
    );
    // Watching some namespaces means being one shard of the cluster's operators.
    assert_eq!(m.env("LAPSE_SHARD")?["value"], "lapse");
    assert_eq!(
        m.env("AZURE_CLIENT_SECRET")?["valueFrom"]["secretKeyRef"],
        json!({"name": "lapse-azure", "key": "client-secret"})
    );
    assert_eq!(
        m.env("POD_NAMESPACE")?["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    // The CA bundle path must be where the ConfigMap is mounted.
    let ca_path = m.env("LAPSE_AZURE_CA_BUNDLE")?["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let c = m.container()?;
    let mounted = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|vm| {
            vm["name"] == "azure-ca"
                && vm["mountPath"]
                    .as_str()
                    .is_some_and(|p| ca_path == format!("{p}/ca.crt"))
        });
    assert!(
        mounted,
        "{ca_path} is not where the CA ConfigMap is mounted: {c}"
    );

    // Probes and ports agree with the addresses the operator is told to listen on.
    let health = named_port(c, "health");
    assert_eq!(port_of(&m.env("LAPSE_HEALTH_ADDR")?["value"]), health);
    assert_eq!(
        port_of(&m.env("LAPSE_METRICS_ADDR")?["value"]),
        named_port(c, "metrics")
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "health"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "health"})
    );
    assert_eq!(
        m.one("Service")?["spec"]["ports"][0]["targetPort"],
        "metrics"
    );
    assert_eq!(m.one("Deployment")?["spec"]["replicas"], 2);

    // Restricted pod security.
    let pod = &m.one("Deployment")?["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
    assert_eq!(sc["runAsNonRoot"], true, "{sc}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{sc}");

    // The CRDs are the generated ones, marked to survive an uninstall.
    let generated = yaml_files(&workspace_root().join("config/crd"))?;
    let rendered = m.of_kind("CustomResourceDefinition");
    assert_eq!(rendered.len(), generated.len());
    for g in &generated {
        let name = &g["metadata"]["name"];
        let r = rendered
            .iter()
            .find(|r| r["metadata"]["name"] == *name)
            .ok_or_else(|| anyhow!("the chart does not render CRD {name}"))?;
        assert_eq!(
            r["spec"], g["spec"],
            "the chart's CRD {name} differs from config/crd/"
        );
        assert_eq!(
            r["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }

    // Installed for real: the API server took every object.
    for obj in [
        vec!["crd", "accessgrants.lapse.dev"],
        vec!["crd", "accesspolicies.lapse.dev"],
        vec!["clusterrole", "lapse"],
        vec!["-n", NAMESPACE, "deployment", "lapse"],
        vec!["-n", NAMESPACE, "serviceaccount", "lapse"],
        vec!["-n", NAMESPACE, "role", "lapse"],
        vec!["-n", NAMESPACE, "service", "lapse-metrics"],
    ] {
        assert!(exists(&sb, &obj)?, "{obj:?} was not created");
    }
    // An AccessGrant stored now must survive the uninstall with its CRD.
    kubectl_ok(&sb, &["create", "namespace", "payments"])?;
    let grant = r#"{"apiVersion":"lapse.dev/v1alpha1","kind":"AccessGrant",
        "metadata":{"name":"kept","namespace":"payments"},
        "spec":{"identity":{"servicePrincipal":{"objectId":"00000000-0000-4000-8000-000000000042"}},
        "roles":[{"role":"Reader","scope":"/subscriptions/00000000-0000-4000-8000-00000000a001"}],
        "duration":"1h","justification":"chart test"}}"#;
    let grant_file = sb.dir.join("grant.json");
    std::fs::write(&grant_file, grant)?;
    kubectl_ok(&sb, &["apply", "-f", &grant_file.to_string_lossy()])?;

    let out = helm
        .run("uninstall", "lapse", &Value::Null)?
        .map_err(|e| anyhow!("helm uninstall: {e}"))?;
    assert_eq!(out["release"]["info"]["status"], "uninstalled", "{out}");
    assert!(
        !exists(&sb, &["-n", NAMESPACE, "deployment", "lapse"])?,
        "the Deployment outlived the release"
    );
    assert!(
        !exists(&sb, &["clusterrole", "lapse"])?,
        "the ClusterRole outlived the release"
    );
    assert!(
        exists(&sb, &["crd", "accessgrants.lapse.dev"])?,
        "crds.keep did not keep the CRD"
    );
    assert!(
        exists(&sb, &["crd", "accesspolicies.lapse.dev"])?,
        "crds.keep did not keep the CRD"
    );
    assert!(
        exists(&sb, &["-n", "payments", "accessgrant", "kept"])?,
        "the grant went with the release"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_names_missing_values_and_can_leave_the_crds_out() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "installs a Helm release on a cluster without lapse's CRDs; it starts a fresh sandbox of \
         its own",
    )?;
    let sb = Sandbox::start()?;
    let helm = Helm {
        kubeconfig: sb.kubeconfig.clone(),
    };

    for (field, message) in [
        ("clusterName", "clusterName is required"),
        ("oidcIssuer", "oidcIssuer is required"),
    ] {
        let mut values = required_values(&sb)?;
        merge(&mut values, json!({ field: "" }));
        let err = helm.install_error("missing", &values)?;
        assert!(
            err.contains(message),
            "expected {message:?}, Helm said: {err}"
        );
    }
    for field in ["tenantId", "clientId"] {
        let mut values = required_values(&sb)?;
        merge(&mut values, json!({"azure": { field: "" }}));
        let err = helm.install_error("missing", &values)?;
        let message = format!("azure.{field} is required");
        assert!(
            err.contains(&message),
            "expected {message:?}, Helm said: {err}"
        );
    }

    // values.schema.json refuses values of the wrong type or shape, naming them, before any
    // template runs.
    for (bad, names) in [
        (json!({"concurrency": "lots"}), "at '/concurrency'"),
        (json!({"azure": {"cloud": "mars"}}), "at '/azure/cloud'"),
        (json!({"sweepInterval": "5 minutes"}), "at '/sweepInterval'"),
        (json!({"replica": 3}), "'replica' not allowed"),
        (json!({"clusterName": "Prod_West"}), "at '/clusterName'"),
        (
            json!({"networkPolicy": {"egressPorts": [70000]}}),
            "at '/networkPolicy/egressPorts/0'",
        ),
    ] {
        let mut values = required_values(&sb)?;
        merge(&mut values, bad.clone());
        let err = helm.install_error("bad", &values)?;
        assert!(
            err.contains("values don't meet the specifications of the schema")
                && err.contains(names),
            "{bad}: expected a schema error naming {names:?}, Helm said: {err}"
        );
    }

    // crds.install=false with the default credential, workload identity.
    let mut values = required_values(&sb)?;
    merge(&mut values, json!({"crds": {"install": false}}));
    let m = helm.install("lapse", &values)?;
    assert!(
        m.of_kind("CustomResourceDefinition").is_empty(),
        "crds.install=false rendered CRDs"
    );
    assert!(!exists(&sb, &["crd", "accessgrants.lapse.dev"])?);
    let client_id = sb.env("AZURE_CLIENT_ID")?;
    assert_eq!(
        m.one("ServiceAccount")?["metadata"]["annotations"]["azure.workload.identity/client-id"],
        client_id
    );
    assert_eq!(
        m.one("Deployment")?["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    // The webhook provides the token file; a secret must not be asked for as well.
    assert!(
        m.env("AZURE_CLIENT_SECRET").is_err(),
        "workload identity also set a client secret"
    );
    Ok(())
}

/// The approval bridge (docs/approval.md, "Approve from Slack or Teams"): off by default (the
/// tests above install without it); on, it is its own Deployment, ServiceAccount, Service and
/// ClusterRole allowing only creating AccessApprovals and impersonating exactly the users and
/// groups in values, and the operator's notifications carry the actions. Values that would let
/// it impersonate everyone, or map a user it may not impersonate, are refused naming the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_the_approval_bridge_impersonating_exactly_the_listed_approvers()
-> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "installs a Helm release with the approval bridge's cluster-wide RBAC; it starts a fresh \
         sandbox of its own",
    )?;
    let sb = Sandbox::start()?;
    let helm = Helm {
        kubeconfig: sb.kubeconfig.clone(),
    };
    let bridge = |extra: Value| {
        let mut b = json!({
            "enabled": true,
            "slack": {"existingSecret": "lapse-slack"},
            "users": {"slack": {"U024BE7LH": {"user": "bob@example.com", "groups": ["platform-oncall"]}}},
            "impersonate": {"users": ["bob@example.com", "carol@example.com"], "groups": ["platform-oncall"]},
        });
        merge(&mut b, extra);
        b
    };
    for (extra, message) in [
        (
            json!({"slack": {"existingSecret": ""}}),
            "approvalBridge.enabled needs approvalBridge.slack.existingSecret",
        ),
        (
            json!({"impersonate": {"users": []}}),
            "approvalBridge.impersonate.users is empty",
        ),
        (
            json!({"users": {"teams": {"6f5b": {"user": "mallory@example.com"}}}}),
            "approvalBridge.users.teams.6f5b maps to user \"mallory@example.com\", which approvalBridge.impersonate.users does not list",
        ),
        (
            json!({"impersonate": {"groups": ["other"]}}),
            "decides as group \"platform-oncall\", which approvalBridge.impersonate.groups does not list",
        ),
    ] {
        let mut values = required_values(&sb)?;
        merge(
            &mut values,
            json!({"approvalBridge": bridge(extra.clone())}),
        );
        let err = helm.install_error("bad-bridge", &values)?;
        assert!(
            err.contains(message),
            "{extra}: expected {message:?}, Helm said: {err}"
        );
    }

    kubectl_ok(&sb, &["create", "namespace", NAMESPACE])?;
    for (name, literal) in [
        ("lapse-slack", "signing-secret=e2e-signing-secret"),
        (
            "lapse-notify",
            "url=https://hooks.example.com/services/T0/SECRET",
        ),
    ] {
        kubectl_ok(
            &sb,
            &[
                "-n",
                NAMESPACE,
                "create",
                "secret",
                "generic",
                name,
                &format!("--from-literal={literal}"),
            ],
        )?;
    }
    let mut values = required_values(&sb)?;
    merge(
        &mut values,
        json!({
            "notifications": {"existingSecret": "lapse-notify", "format": "slack"},
            "approvalBridge": bridge(json!({})),
        }),
    );
    let m = helm.install("lapse", &values)?;

    // Its own Deployment, whose pods the operator's selector never matches.
    let deploy = m.named("Deployment", "lapse-approval-bridge")?;
    let operator = m.named("Deployment", "lapse")?;
    let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];
    let operator_selects_bridge = operator["spec"]["selector"]["matchLabels"]
        .as_object()
        .is_some_and(|sel| sel.iter().all(|(k, v)| pod_labels[k] == *v));
    assert!(
        !operator_selects_bridge,
        "the operator's selector matches the bridge's pods"
    );
    let c = match deploy["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(Vec::as_slice)
    {
        Some([c]) => c,
        _ => bail!("the bridge should run exactly one container: {deploy}"),
    };
    assert_eq!(c["args"], json!(["approval-bridge"]));
    assert_eq!(
        deploy["spec"]["template"]["spec"]["serviceAccountName"],
        "lapse-approval-bridge"
    );
    let env = |name: &str| {
        c["env"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let known = settings_of("approval-bridge")?;
    let names: Vec<String> = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect();
    let unknown: Vec<&String> = names.iter().filter(|n| !known.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the bridge is given variables it ignores: {unknown:?}"
    );
    // The signing secret comes from its Secret, never from a value in the manifest.
    assert_eq!(
        env("LAPSE_BRIDGE_SLACK_SIGNING_SECRET")["valueFrom"]["secretKeyRef"],
        json!({"name": "lapse-slack", "key": "signing-secret"})
    );
    assert!(env("LAPSE_BRIDGE_TEAMS_SECRET").is_null());
    // The user map is the rendered ConfigMap, mounted where the bridge reads it.
    let users_path = env("LAPSE_BRIDGE_USERS")["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mount = c["volumeMounts"]
        .as_array()
        .and_then(|v| v.iter().find(|vm| vm["name"] == "users"))
        .and_then(|vm| vm["mountPath"].as_str())
        .unwrap_or_default();
    assert_eq!(users_path, format!("{mount}/users.yaml"));
    let cm = m.named("ConfigMap", "lapse-approval-bridge-users")?;
    let map: Value =
        serde_yaml_ng::from_str(cm["data"]["users.yaml"].as_str().unwrap_or_default())?;
    assert_eq!(
        map,
        json!({"slack": {"U024BE7LH": {"user": "bob@example.com", "groups": ["platform-oncall"]}}, "teams": {}})
    );
    // RBAC: create approvals, impersonate exactly the listed users and groups; nothing else.
    assert_eq!(
        m.named("ClusterRole", "lapse-approval-bridge")?["rules"],
        json!([
            {"apiGroups": ["lapse.dev"], "resources": ["accessapprovals"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"],
             "resourceNames": ["bob@example.com", "carol@example.com"]},
            {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"],
             "resourceNames": ["platform-oncall"]},
        ])
    );
    let binding = m.named("ClusterRoleBinding", "lapse-approval-bridge")?;
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "lapse-approval-bridge", "namespace": NAMESPACE}])
    );
    // The Service reaches the bridge's actions port.
    let svc = m.named("Service", "lapse-approval-bridge")?;
    assert_eq!(
        svc["spec"]["selector"],
        deploy["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "actions");
    // The operator's notifications carry Approve and Deny.
    let op_env = operator["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        op_env
            .iter()
            .any(|e| e["name"] == "LAPSE_NOTIFY_ACTIONS" && e["value"] == "true"),
        "{op_env:?}"
    );

    // Installed for real.
    for obj in [
        vec!["-n", NAMESPACE, "deployment", "lapse-approval-bridge"],
        vec!["-n", NAMESPACE, "serviceaccount", "lapse-approval-bridge"],
        vec!["-n", NAMESPACE, "service", "lapse-approval-bridge"],
        vec!["-n", NAMESPACE, "configmap", "lapse-approval-bridge-users"],
        vec!["clusterrole", "lapse-approval-bridge"],
        vec!["clusterrolebinding", "lapse-approval-bridge"],
    ] {
        assert!(exists(&sb, &obj)?, "{obj:?} was not created");
    }
    // The API server's own authorizer agrees: the bridge may impersonate bob, not dave.
    let sa = format!("system:serviceaccount:{NAMESPACE}:lapse-approval-bridge");
    for (user, want) in [("bob@example.com", "yes"), ("dave@example.com", "no")] {
        let out = kubectl(
            &sb,
            &[
                "auth",
                "can-i",
                "impersonate",
                &format!("users/{user}"),
                "--as",
                &sa,
            ],
        )?;
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want, "{user}");
    }
    Ok(())
}
