//! The RBAC lapse ships (`config/rbac/`, which the chart renders too) is minimal as well as
//! sufficient: every part of every rule is needed.
//!
//! A *part* is one verb on one resource of one rule of the ClusterRole or the Role, and, where
//! the rule names several objects (`resourceNames`), on one of them: a rule with four verbs is
//! four parts, the CRD rule's `get` on its two CRDs two. Every shipped rule names one resource
//! and one API group; a rule naming several resources would be split the same way. For each part the operator runs as its own
//! ServiceAccount against a sandbox of its own, bound by the shipped RBAC less that part
//! (sim-kube enforces RBAC for the ServiceAccount's token, like kube-apiserver), through one
//! lifecycle: start and become ready; a grant applied while Azure refuses its first two PUTs
//! (the role assignment's and the FIC's, once each), so one decision records the same Warning
//! twice, which the kube-runtime event recorder writes as a create and then a `patch` of its
//! series; the grant `Active`; its lease extended; the policy's status written; the lease
//! `Expired` while the grants watch is down and Azure refuses the first DELETE, so the retried
//! revocation must read the grant again (`get`: its cache is older than its own last write);
//! the grant deleted (the finalizer removed).
//! Each run must break, and is stopped as soon as it does: the operator exits, the API server
//! refuses it a request (its log says so), or a step does not happen in time. With every part
//! the same lifecycle completes without a single refusal. The table printed names, per part, how
//! the run broke and how long after the operator's start.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use lapse_api::v1alpha1::{AccessPolicy, GrantPhase};
use lapse_e2e::{Capability, Operator, Sandbox, Target, World, sandbox_only, workspace_root};
use serde::Deserialize as _;
use serde_json::Value;

const OPERATOR_NS: &str = "lapse-system";
const NS: &str = "payments";
/// Sandboxes (each with its operator) running at once: two cores run six without a step
/// missing its deadline, and the 21 runs take about a minute.
const PARALLEL: usize = 6;

/// One verb on one resource of one rule.
#[derive(Clone, Debug)]
struct Part {
    kind: String,
    rule: usize,
    groups: Vec<String>,
    resource: String,
    names: Vec<String>,
    verb: String,
    /// The one name of `names` this part is about, when the rule names several.
    name: Option<String>,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = self.groups.join(",");
        let resource = if group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{group}", self.resource)
        };
        write!(
            f,
            "{} rule {}: {} {resource}",
            self.kind, self.rule, self.verb
        )?;
        match &self.name {
            Some(name) => write!(f, " {name}")?,
            None if !self.names.is_empty() => write!(f, " [{}]", self.names.join(","))?,
            None => {}
        }
        Ok(())
    }
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Every document of `config/rbac/*.yaml`.
fn shipped_rbac() -> anyhow::Result<Vec<Value>> {
    let dir = workspace_root().join("config/rbac");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).with_context(|| format!("{}", file.display()))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    Ok(docs)
}

/// Every part of every rule of the ClusterRole and the Role.
fn parts(docs: &[Value]) -> Vec<Part> {
    let mut out = Vec::new();
    for doc in docs {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind != "ClusterRole" && kind != "Role" {
            continue;
        }
        let rules = doc.get("rules").and_then(Value::as_array);
        for (i, rule) in rules.into_iter().flatten().enumerate() {
            let names = strings(rule, "resourceNames");
            // One part per name only where there are several: with one, the name is the part.
            let each: Vec<Option<String>> = if names.len() > 1 {
                names.iter().cloned().map(Some).collect()
            } else {
                vec![None]
            };
            for resource in strings(rule, "resources") {
                for verb in strings(rule, "verbs") {
                    for name in &each {
                        out.push(Part {
                            kind: kind.to_owned(),
                            rule: i,
                            groups: strings(rule, "apiGroups"),
                            resource: resource.clone(),
                            names: names.clone(),
                            verb: verb.clone(),
                            name: name.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// `docs` with `part` taken out of its rule: the rule's other resources keep every verb, its
/// resource keeps the other verbs, the part's verb keeps the other names, and a rule left with
/// nothing goes.
fn without(docs: &[Value], part: &Part) -> Vec<Value> {
    let mut docs = docs.to_vec();
    for doc in &mut docs {
        if doc.get("kind").and_then(Value::as_str) != Some(part.kind.as_str()) {
            continue;
        }
        let Some(rules) = doc.get_mut("rules").and_then(Value::as_array_mut) else {
            continue;
        };
        let rule = rules.remove(part.rule);
        let resources = strings(&rule, "resources");
        let verbs = strings(&rule, "verbs");
        let mut replacement = Vec::new();
        let others: Vec<&String> = resources.iter().filter(|r| **r != part.resource).collect();
        if !others.is_empty() {
            let mut r = rule.clone();
            r["resources"] = serde_json::json!(others);
            replacement.push(r);
        }
        let kept: Vec<&String> = verbs.iter().filter(|v| **v != part.verb).collect();
        if !kept.is_empty() {
            let mut r = rule.clone();
            r["resources"] = serde_json::json!([part.resource]);
            r["verbs"] = serde_json::json!(kept);
            replacement.push(r);
        }
        if let Some(name) = &part.name {
            let left: Vec<&String> = part.names.iter().filter(|n| *n != name).collect();
            let mut r = rule.clone();
            r["resources"] = serde_json::json!([part.resource]);
            r["verbs"] = serde_json::json!([part.verb]);
            r["resourceNames"] = serde_json::json!(left);
            replacement.push(r);
        }
        for (k, r) in replacement.into_iter().enumerate() {
            rules.insert(part.rule + k, r);
        }
    }
    docs
}

fn to_yaml(docs: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(d)?);
    }
    Ok(out)
}

/// How a run broke.
#[derive(Debug)]
enum Broke {
    /// The operator exited; its last error.
    Exited(String),
    /// The API server refused the operator a request: the log line saying so.
    Refused(String),
    /// A step did not happen in time.
    Stuck(String),
}

impl fmt::Display for Broke {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(e) => write!(f, "operator exited: {e}"),
            Self::Refused(line) => write!(f, "refused: {line}"),
            Self::Stuck(what) => write!(f, "stuck: {what}"),
        }
    }
}

#[derive(Debug)]
struct Run {
    label: String,
    /// Steps completed, with the time since the operator started.
    steps: Vec<(&'static str, Duration)>,
    /// How it broke, in which step, and when (since the operator started).
    broke: Option<(Broke, &'static str, Duration)>,
    /// From the sandbox's start to the end of the run.
    wall: Duration,
}

/// A run's place in the table and its result.
type Finished = (usize, anyhow::Result<Run>);

/// The first line of the operator's log where the API server refused it something.
fn refusal(log: &str) -> Option<String> {
    log.lines()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("forbidden") || l.contains("(403)")
        })
        .map(|l| {
            let l = plain(l);
            // Without the leading timestamp of the text log format.
            let l = match l.split_once(' ') {
                Some((first, rest)) if first.starts_with("20") && first.ends_with('Z') => rest,
                _ => &l,
            };
            clip(l, 300)
        })
}

/// `s` without terminal colour codes (`ESC [ … m`).
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The operator's last error line (what `anyhow` prints on exit).
fn last_error(log: &str) -> String {
    let line = log
        .lines()
        .rev()
        .find(|l| l.starts_with("Error") || l.contains("ERROR"))
        .or_else(|| log.lines().last())
        .unwrap_or("(no log)");
    clip(&plain(line), 300)
}

fn clip(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Polls `check` until it holds; stops early, saying how, when the operator exits or its log
/// shows a refused request.
async fn step(
    op: &mut Operator,
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Option<Broke>> {
    let deadline = Instant::now() + timeout;
    loop {
        let logs = op.logs();
        if let Some(line) = refusal(&logs) {
            return Ok(Some(Broke::Refused(line)));
        }
        if let Some(status) = op.exit_status() {
            return Ok(Some(Broke::Exited(format!(
                "{status}: {}",
                last_error(&logs)
            ))));
        }
        if check().await? {
            return Ok(None);
        }
        if Instant::now() > deadline {
            return Ok(Some(Broke::Stuck(format!("{what} not within {timeout:?}"))));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn phase_is(g: Option<&lapse_api::v1alpha1::AccessGrant>, phase: GrantPhase) -> bool {
    g.and_then(|g| g.status.as_ref())
        .is_some_and(|s| s.phase == phase)
}

/// One sandbox, the operator bound by `rbac`, one lifecycle.
async fn lifecycle(label: String, rbac: String) -> anyhow::Result<Run> {
    let begun = Instant::now();
    let w = World::on(Target::Sandbox(Sandbox::start()?)).await?;
    let sb = w.target.sandbox()?;
    w.kubectl_ok(&["create", "namespace", OPERATOR_NS])?;
    w.apply_ok(&rbac)?;
    let token = w.kubectl_ok(&[
        "-n",
        OPERATOR_NS,
        "create",
        "token",
        "lapse-operator",
        "--duration=1h",
    ])?;
    let mut kubeconfig = kube::config::Kubeconfig::read_from(&sb.kubeconfig)?;
    for user in &mut kubeconfig.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.token = Some(token.trim().to_owned().into());
        }
    }
    let sa_kubeconfig = sb.dir.join("operator-kubeconfig");
    std::fs::write(&sa_kubeconfig, serde_yaml_ng::to_string(&kubeconfig)?)?;
    let (mi, _) = w.identity(w.fixtures.identity()).await?;
    let rg = w.fixtures.resource_group_id();
    w.kubectl_ok(&["create", "namespace", NS])?;

    let sa_kubeconfig = sa_kubeconfig.to_string_lossy().into_owned();
    let started = Instant::now();
    let mut op = w.spawn_operator(&[
        ("KUBECONFIG", &sa_kubeconfig),
        ("POD_NAMESPACE", OPERATOR_NS),
    ])?;
    let mut run = Run {
        label,
        steps: Vec::new(),
        broke: None,
        wall: Duration::ZERO,
    };
    macro_rules! step {
        ($name:expr, $timeout:expr, $check:expr) => {
            match step(&mut op, $name, $timeout, $check).await? {
                None => run.steps.push(($name, started.elapsed())),
                Some(b) => {
                    run.broke = Some((b, $name, started.elapsed()));
                    run.wall = begun.elapsed();
                    return Ok(run);
                }
            }
        };
    }

    let readyz = format!("http://127.0.0.1:{}/readyz", op.health_port);
    step!("ready", Duration::from_secs(20), async || {
        // "ok": leading, caches loaded (a standby would answer "standby: …").
        Ok(match w.http.get(&readyz).send().await {
            Ok(r) if r.status().is_success() => r.text().await.is_ok_and(|b| b.trim() == "ok"),
            _ => false,
        })
    });
    for path in ["roleAssignments/", "federatedIdentityCredentials/"] {
        w.azure_fault(serde_json::json!({
            "method": "PUT", "pathPattern": path, "times": 1,
            "action": {"type": "status", "status": 503, "code": "ServiceUnavailable",
                       "message": "injected by rbac_minimal"},
        }))
        .await?;
    }
    w.apply_ok(&format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: payments
spec:
  namespaces: ["{NS}"]
  identities: ["{mi}"]
  roles: ["Reader"]
  scopes: ["{rg}"]
  serviceAccounts: ["backup-*"]
  maxDuration: 1h
---
apiVersion: lapse.dev/v1alpha1
kind: AccessGrant
metadata:
  name: minimal
  namespace: {NS}
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
    let grants = w.grants(NS);
    let events: Api<Event> = Api::namespaced(w.kube.clone(), NS);
    step!("azure retried", Duration::from_secs(10), async || {
        let list = events.list(&ListParams::default()).await?;
        Ok(list.items.iter().any(|e| {
            e.reason.as_deref() == Some("AzureCallFailed")
                && e.series.as_ref().is_some_and(|s| s.count >= 2)
        }))
    });
    step!("active", Duration::from_secs(15), async || Ok(phase_is(
        grants.get_opt("minimal").await?.as_ref(),
        GrantPhase::Active
    )));
    // A spec change while Active: the operator re-decides and moves the expiry.
    let out = w.patch_grant(NS, "minimal", r#"{"spec":{"duration":"8s"}}"#)?;
    if !out.status.success() {
        bail!(
            "patching the grant: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    step!("extended", Duration::from_secs(10), async || {
        let list = events.list(&ListParams::default()).await?;
        let reasons: Vec<&str> = list
            .items
            .iter()
            .filter_map(|e| e.reason.as_deref())
            .collect();
        Ok(reasons.contains(&"Activated") && reasons.contains(&"Extended"))
    });
    let policies: Api<AccessPolicy> = Api::all(w.kube.clone());
    step!("policy status", Duration::from_secs(10), async || Ok(
        policies
            .get_opt("payments")
            .await?
            .and_then(|p| p.status)
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready"))
    ));
    // The watch cache lags the operator's own writes across the lease's end, as it may in a
    // real cluster: a second before it, the grants watch is dropped and fails three times (the
    // watcher's backoff keeps it down for at least 0.8 + 1.6 + 3.2 s), and Azure refuses the
    // role assignment's first DELETE. The revocation, retried 2 s later, then finds a cached
    // grant older than its own last write, which it must read again (get accessgrants).
    let expires = grants
        .get("minimal")
        .await?
        .status
        .and_then(|s| s.expires_at)
        .context("an Active grant without expiresAt")?;
    step!("lease end - 1s", Duration::from_secs(15), async || Ok(
        chrono::Utc::now() + chrono::TimeDelta::seconds(1) >= expires
    ));
    w.azure_fault(serde_json::json!({
        "method": "DELETE", "pathPattern": "roleAssignments/", "times": 1,
        "action": {"type": "status", "status": 503, "code": "ServiceUnavailable",
                   "message": "injected by rbac_minimal"},
    }))
    .await?;
    w.kube_fault(serde_json::json!({
        "action": "fail", "verb": "watch", "resource": "accessgrants", "count": 3, "code": 500,
    }))
    .await?;
    w.kube_fault(serde_json::json!({"action": "drop-watches"}))
        .await?;
    step!("expired", Duration::from_secs(20), async || Ok(phase_is(
        grants.get_opt("minimal").await?.as_ref(),
        GrantPhase::Expired
    )));
    w.kubectl_ok(&["-n", NS, "delete", "accessgrant", "minimal", "--wait=false"])?;
    step!("deleted", Duration::from_secs(15), async || Ok(grants
        .get_opt("minimal")
        .await?
        .is_none()));
    // Anything refused after the last step still counts.
    if let Some(line) = refusal(&op.logs()) {
        run.broke = Some((
            Broke::Refused(line),
            "after the lifecycle",
            started.elapsed(),
        ));
    }
    run.wall = begun.elapsed();
    Ok(run)
}

#[test]
fn every_part_of_the_shipped_rbac_is_needed_and_all_of_it_suffices() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "installs reduced copies of config/rbac in sandboxes of its own and relies on sim-kube \
         enforcing RBAC for a ServiceAccount token it mints",
    )?;
    let t0 = Instant::now();
    let docs = shipped_rbac()?;
    let parts = parts(&docs);
    assert!(
        parts.len() >= 10,
        "config/rbac has only {} rule parts: {parts:#?}",
        parts.len()
    );
    let mut jobs: Vec<(String, String)> = vec![("all of config/rbac".into(), to_yaml(&docs)?)];
    for p in &parts {
        let reduced = without(&docs, p);
        assert_ne!(reduced, docs, "removing {p} changed nothing");
        jobs.push((format!("without {p}"), to_yaml(&reduced)?));
    }
    let total = jobs.len();
    let queue = Arc::new(Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>()));
    let results: Arc<Mutex<Vec<Finished>>> = Arc::default();
    let workers: Vec<_> = (0..PARALLEL.min(total))
        .map(|_| {
            let queue = queue.clone();
            let results = results.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                loop {
                    let job = queue.lock().map_err(|_| anyhow!("queue poisoned"))?.pop();
                    let Some((i, (label, rbac))) = job else {
                        return Ok(());
                    };
                    let run = rt.block_on(lifecycle(label, rbac));
                    results
                        .lock()
                        .map_err(|_| anyhow!("results poisoned"))?
                        .push((i, run));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| anyhow!("a worker panicked"))??;
    }
    let mut results = std::mem::take(&mut *results.lock().map_err(|_| anyhow!("poisoned"))?);
    results.sort_by_key(|(i, _)| *i);

    println!(
        "{:<66} {:>6} {:>6}  {:<14} how",
        "run", "after", "wall", "broke during"
    );
    let mut failures = Vec::new();
    for (i, run) in results {
        let run = run.with_context(|| format!("run {i}"))?;
        match &run.broke {
            Some((how, during, at)) => println!(
                "{:<66} {:>5.1}s {:>5.1}s  {:<14} {how}",
                run.label,
                at.as_secs_f64(),
                run.wall.as_secs_f64(),
                during
            ),
            None => println!(
                "{:<66} {:>5.1}s {:>5.1}s  {:<14} completed: {}",
                run.label,
                run.steps.last().map_or(0.0, |(_, d)| d.as_secs_f64()),
                run.wall.as_secs_f64(),
                "-",
                run.steps
                    .iter()
                    .map(|(s, d)| format!("{s} {:.1}s", d.as_secs_f64()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        if i == 0 {
            if let Some((how, during, _)) = &run.broke {
                failures.push(format!(
                    "with all of config/rbac the lifecycle broke during {during}: {how}"
                ));
            }
        } else if run.broke.is_none() {
            failures.push(format!(
                "{}: the lifecycle completed without it and nothing was refused; the rule part \
                 is not needed: remove it from config/rbac/ and charts/lapse/templates/rbac.yaml \
                 (or make this lifecycle exercise it)",
                run.label
            ));
        }
    }
    println!("{total} runs in {:.1}s", t0.elapsed().as_secs_f64());
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// The split is exact: removing a part leaves every other verb, resource and name granted.
#[test]
fn removing_a_part_keeps_every_other_part_of_its_rule() -> anyhow::Result<()> {
    let docs: Vec<Value> = vec![serde_json::json!({
        "kind": "ClusterRole",
        "rules": [
            {"apiGroups": ["g"], "resources": ["a", "b"], "verbs": ["get", "list"]},
            {"apiGroups": ["h"], "resources": ["c"], "resourceNames": ["x", "y"], "verbs": ["get"]},
        ],
    })];
    let parts = parts(&docs);
    let shown: Vec<String> = parts.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "ClusterRole rule 0: get a.g",
            "ClusterRole rule 0: list a.g",
            "ClusterRole rule 0: get b.g",
            "ClusterRole rule 0: list b.g",
            "ClusterRole rule 1: get c.h x",
            "ClusterRole rule 1: get c.h y",
        ]
    );
    // The grants a set of rules makes, one (group, resource, verb, name) at a time.
    let grants = |docs: &[Value]| -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for rule in docs[0]["rules"].as_array().into_iter().flatten() {
            let names = strings(rule, "resourceNames");
            let names = if names.is_empty() {
                vec!["*".to_owned()]
            } else {
                names
            };
            for g in strings(rule, "apiGroups") {
                for r in strings(rule, "resources") {
                    for v in strings(rule, "verbs") {
                        for n in &names {
                            out.insert(format!("{g}/{r}/{v}/{n}"));
                        }
                    }
                }
            }
        }
        out
    };
    let all = grants(&docs);
    assert_eq!(all.len(), 6);
    for (p, gone) in parts.iter().zip([
        "g/a/get/*",
        "g/a/list/*",
        "g/b/get/*",
        "g/b/list/*",
        "h/c/get/x",
        "h/c/get/y",
    ]) {
        let left = grants(&without(&docs, p));
        let expected: std::collections::BTreeSet<String> =
            all.iter().filter(|g| *g != gone).cloned().collect();
        assert_eq!(left, expected, "without {p}");
    }
    Ok(())
}
