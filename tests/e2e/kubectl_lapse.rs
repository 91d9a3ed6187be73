//! `kubectl lapse` end to end (docs/kubectl-lapse.md): the real `kubectl-lapse` binary against
//! the sandbox and the operator, as the people in the approval story use it — alice requests,
//! bob approves, carol (in `platform-oncall`) denies, dave may not read policies — through
//! `--as`/`--as-group` impersonation with the admin kubeconfig, as kubectl does.
//!
//! Each command's output is printed (`--nocapture` shows it): docs/kubectl-lapse.md quotes it.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use lapse_api::v1alpha1::{AccessGrant, GrantPhase};
use lapse_e2e::{Capability, World, binary, sandbox_only, workspace_root};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(45);
const NS: &str = "payments";
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const DAVE: &str = "dave@example.com";

/// One run of the plugin.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Fails unless the exit code is `code`, showing both streams.
    fn expect(self, code: i32) -> anyhow::Result<Self> {
        if self.code != code {
            bail!(
                "exit {} (wanted {code})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.code,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }

    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.stdout).with_context(|| format!("not JSON:\n{}", self.stdout))
    }
}

/// `kubectl-lapse ARGS` with the sandbox's kubeconfig in `KUBECONFIG`, as kubectl finds it.
fn lapse(w: &World, args: &[&str]) -> anyhow::Result<Run> {
    let out = Command::new(binary("kubectl-lapse")?)
        .args(args)
        .env("KUBECONFIG", w.kubeconfig())
        .stdin(Stdio::null())
        .output()?;
    let run = Run::from(out);
    println!(
        "$ kubectl lapse {}\n{}{}[exit {}]\n",
        args.join(" "),
        run.stdout,
        run.stderr,
        run.code
    );
    Ok(run)
}

/// As `user` (with `groups`), in the payments namespace.
fn lapse_as(w: &World, user: &str, groups: &[&str], args: &[&str]) -> anyhow::Result<Run> {
    let mut all: Vec<String> = vec!["-n".into(), NS.into(), format!("--as={user}")];
    all.extend(groups.iter().map(|g| format!("--as-group={g}")));
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    lapse(w, &all)
}

fn policy(w: &World, name: &str, extra: &str) -> String {
    let rg = w.fixtures.resource_group_id();
    format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: {name}
spec:
  namespaces: ["{NS}"]
  identities: ["{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"]
  roles: ["Reader"]
  scopes: ["{rg}"]
  serviceAccounts: ["backup-*"]
  maxDuration: 1h
{extra}"#
    )
}

/// Grants and approvals in payments for the people; policies and namespaces cluster-wide for
/// all but dave (a namespace's `view` does not reach cluster-scoped AccessPolicies).
fn rbac() -> String {
    let people = [ALICE, BOB, CAROL, DAVE]
        .iter()
        .map(|u| format!("- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: \"{u}\"}}"))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: lapse-users, namespace: {NS}}}
rules:
- apiGroups: ["lapse.dev"]
  resources: ["accessgrants", "accessapprovals"]
  verbs: ["create", "get", "list", "watch", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: lapse-users, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: lapse-users}}
subjects:
{people}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: lapse-policy-readers}}
rules:
- apiGroups: ["lapse.dev"]
  resources: ["accesspolicies"]
  verbs: ["get", "list"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: lapse-policy-readers}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: lapse-policy-readers}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: "{ALICE}"}}
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: "{BOB}"}}
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: "{CAROL}"}}
"#
    )
}

fn role_flag(w: &World) -> String {
    format!("--role=Reader@{}", w.fixtures.resource_group_id())
}

fn phase(g: &AccessGrant) -> Option<GrantPhase> {
    g.status.as_ref().map(|s| s.phase)
}

/// Self-service without approval: policies, a dry run, a request that waits until Active (and
/// how long that takes), client-side refusals naming field and policy (exit 3, nothing
/// created), usage errors (exit 2), list and describe across Active, Denied, Expired and
/// Revoked grants, extend within and beyond maxDuration, revoke, -o json everywhere, completion
/// and version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_list_describe_extend_and_revoke_without_approval() -> anyhow::Result<()> {
    let w = World::start().await?;
    let timeout = w.scaled(TIMEOUT);
    w.namespace_with(NS, &["backup-runner"])?;
    w.apply_ok(&policy(
        &w,
        "payments-self-service",
        "  justificationPattern: \"^OPS-[0-9]+\"\n",
    ))?;
    let (mi, _) = w.identity(w.fixtures.identity()).await?;
    let role = role_flag(&w);
    let ident = format!("--identity={mi}");
    // Who the API server says we are, and the kubeconfig's context, as kubectl sees them.
    let me = w.kubectl_ok(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ])?;
    let context = w
        .kubectl_ok(&["config", "current-context"])?
        .trim()
        .to_owned();
    let short_identity = format!("mi/{}", w.fixtures.identity());
    let short_rg = format!("Reader@{}", w.fixtures.resource_group);
    w.namespace_with("lapse-uncovered", &[])?;

    // What the namespace may request.
    let out = lapse(&w, &["policies", "-n", NS])?.expect(0)?;
    for part in [
        "AccessPolicy payments-self-service (covers payments by spec.namespaces \"payments\")",
        "Roles:              Reader",
        "Max duration:       1h (extensions included)",
        "Justification:      must match \"^OPS-[0-9]+\"",
        "Approval:           none",
        "Close early:        no: the federated credential lasts the whole lease",
        "Locks:              Deny: a management lock on a scope or the identity denies the grant",
    ] {
        assert!(out.stdout.contains(part), "{part:?}");
    }
    let v = lapse(&w, &["policies", "-n", NS, "-o", "json"])?
        .expect(0)?
        .json()?;
    assert_eq!(v["policies"][0]["maxDuration"], "1h");
    assert_eq!(v["policies"][0]["locks"], "Deny");
    assert_eq!(v["policies"][0]["federationCloseEarly"], false);
    let out = lapse(&w, &["policies", "-n", "lapse-uncovered"])?.expect(0)?;
    assert!(
        out.stdout
            .contains("No AccessPolicy covers namespace lapse-uncovered")
    );

    // A dry run prints the manifest, with the requester the API server names, and creates nothing.
    let base = [
        "-n",
        NS,
        "request",
        "ok",
        &ident,
        &role,
        "--service-account=backup-runner",
        "--justification=OPS-1 restore",
    ];
    let dry = lapse(&w, &[&base[..], &["--for=10m", "--dry-run"]].concat())?.expect(0)?;
    let manifest: AccessGrant = serde_yaml_ng::from_str(&dry.stdout)?;
    assert_eq!(manifest.spec.requester.as_deref(), Some(me.as_str()));
    assert_eq!(manifest.spec.duration.as_deref(), Some("10m"));
    assert!(
        dry.stderr
            .contains("allowed by AccessPolicy payments-self-service")
    );
    assert!(
        w.grants(NS).get_opt("ok").await?.is_none(),
        "a dry run created it"
    );

    // Refused client-side, naming field and policy; nothing created.
    let out = lapse(&w, &[&base[..], &["--for=2h"]].concat())?.expect(3)?;
    assert!(
        out.stderr.contains(
            "spec.duration: a lease of 2h exceeds maxDuration 1h (policy payments-self-service)"
        ),
        "{}",
        out.stderr
    );
    let contributor = format!("--role=Contributor@{}", w.fixtures.resource_group_id());
    let out = lapse(
        &w,
        &[
            "-n",
            NS,
            "request",
            "ok",
            &ident,
            &contributor,
            "--for=10m",
            "--justification=OPS-1",
        ],
    )?
    .expect(3)?;
    assert!(
        out.stderr
            .contains("spec.roles[0].role: role \"Contributor\""),
        "{}",
        out.stderr
    );
    let out = lapse(&w, &["-n", NS, "request", "ok", &ident, &role, "--for=10m"])?.expect(3)?;
    assert!(
        out.stderr.contains("spec.justification: must match"),
        "{}",
        out.stderr
    );
    assert!(
        w.grants(NS).get_opt("ok").await?.is_none(),
        "a refusal created it"
    );

    // Usage errors: exit 2, naming the flag.
    let out = lapse(
        &w,
        &[
            "-n",
            NS,
            "request",
            "x",
            "--identity=mi/backup-runner",
            &role,
            "--for=1h",
        ],
    )?
    .expect(2)?;
    assert!(
        out.stderr.contains("needs its full resource ID"),
        "{}",
        out.stderr
    );
    let out = lapse(
        &w,
        &[
            "-n",
            NS,
            "request",
            "x",
            &ident,
            "--role=Reader",
            "--for=1h",
        ],
    )?
    .expect(2)?;
    assert!(out.stderr.contains("expected ROLE@SCOPE"), "{}", out.stderr);
    lapse(&w, &["frobnicate"])?.expect(2)?;

    // Allowed: --wait until Active.
    let started = Instant::now();
    let out = lapse(&w, &[&base[..], &["--for=10m", "--wait"]].concat())?.expect(0)?;
    let took = started.elapsed();
    println!(
        "request --wait to Active: {} ms (process start to exit)",
        took.as_millis()
    );
    assert!(
        out.stdout
            .contains("accessgrant.lapse.dev/ok is Active: expires in"),
        "{}",
        out.stdout
    );
    let g = w.grants(NS).get("ok").await?;
    assert_eq!(phase(&g), Some(GrantPhase::Active));

    // An Expired, a Revoked and a Denied grant beside it.
    let brief = format!("--for={}", w.lease(4));
    lapse(
        &w,
        &[
            "-n",
            NS,
            "request",
            "brief",
            &ident,
            &role,
            &brief,
            "--justification=OPS-2",
        ],
    )?
    .expect(0)?;
    lapse(
        &w,
        &[
            "-n",
            NS,
            "request",
            "gone",
            &ident,
            &role,
            "--for=10m",
            "--justification=OPS-3",
            "--wait",
        ],
    )?
    .expect(0)?;
    let out = lapse(&w, &["-n", NS, "revoke", "gone"])?.expect(0)?;
    assert!(
        out.stdout.contains("revoked (spec.revoked: true)"),
        "{}",
        out.stdout
    );
    w.wait_phase(NS, "gone", GrantPhase::Revoked, timeout)
        .await?;
    let out = lapse(&w, &["-n", NS, "revoke", "gone"])?.expect(0)?;
    assert!(out.stdout.contains("already Revoked"), "{}", out.stdout);
    assert!(w.grants(NS).get("gone").await?.spec.revoked);
    // Denied by the operator: applied with kubectl, past the client-side check. Another
    // identity: a new grant whose derived role assignment a live lease holds ends Revoked, not
    // Denied (it adopts and releases the shared object).
    let (other, _) = w
        .identity(
            w.fixtures
                .second_identity()
                .unwrap_or(w.fixtures.identity()),
        )
        .await?;
    w.apply_ok(&format!(
        "apiVersion: lapse.dev/v1alpha1\nkind: AccessGrant\nmetadata: {{name: toolong, namespace: {NS}}}\nspec:\n  identity: {{managedIdentity: {other}}}\n  roles: [{{role: Reader, scope: {}}}]\n  duration: 3h\n  justification: OPS-4\n",
        w.fixtures.resource_group_id()
    ))?;
    w.wait_phase(NS, "toolong", GrantPhase::Denied, timeout)
        .await?;
    w.wait_phase(NS, "brief", GrantPhase::Expired, timeout)
        .await?;

    let out = lapse(&w, &["-n", NS, "list"])?.expect(0)?;
    let rows: Vec<&str> = out.stdout.lines().collect();
    assert!(
        rows.first()
            .is_some_and(|h| h.split_whitespace().collect::<Vec<_>>()
                == [
                    "NAME",
                    "IDENTITY",
                    "ROLES@SCOPES",
                    "PHASE",
                    "LEASE",
                    "REQUESTER"
                ]),
        "{}",
        out.stdout
    );
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.starts_with(&format!("{name} ")))
            .map(|r| (*r).to_owned())
            .unwrap_or_default()
    };
    assert!(
        row("ok").contains(&short_identity) && row("ok").contains(&short_rg),
        "{}",
        row("ok")
    );
    assert!(
        row("ok").contains("Active") && row("ok").contains("expires in 9m"),
        "{}",
        row("ok")
    );
    assert!(
        row("brief").contains("Expired") && row("brief").contains("expired "),
        "{}",
        row("brief")
    );
    assert!(
        row("gone").contains("Revoked") && row("gone").contains("revoked "),
        "{}",
        row("gone")
    );
    assert!(
        row("toolong").contains("Denied") && row("toolong").contains("denied"),
        "{}",
        row("toolong")
    );
    assert!(row("ok").ends_with(&me));
    let v = lapse(&w, &["-n", NS, "list", "-o", "json"])?
        .expect(0)?
        .json()?;
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(4));
    let v = lapse(
        &w,
        &["-n", NS, "list", "--phase", "Active,Revoked", "-o", "yaml"],
    )?
    .expect(0)?;
    let v: Value = serde_yaml_ng::from_str(&v.stdout)?;
    let names: Vec<&str> = v["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|g| g["metadata"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, ["gone", "ok"]);
    let out = lapse(&w, &["list", "-A", "--phase", "denied"])?.expect(0)?;
    assert!(
        out.stdout.starts_with("NAMESPACE")
            && out
                .stdout
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([NS, "toolong"])),
        "{}",
        out.stdout
    );
    lapse(&w, &["list", "--phase", "Running"])?.expect(2)?;
    // --kubeconfig and --context instead of $KUBECONFIG.
    let out = Command::new(binary("kubectl-lapse")?)
        .args(["list", "-n", NS, "--context", &context, "--kubeconfig"])
        .arg(w.kubeconfig())
        .env_remove("KUBECONFIG")
        .env("HOME", "/nonexistent")
        .output()?;
    let out = Run::from(out).expect(0)?;
    assert!(out.stdout.contains("toolong"));
    let out = lapse(&w, &["list", "-n", NS, "--context", "no-such-context"])?.expect(1)?;
    assert!(out.stderr.contains("no-such-context"), "{}", out.stderr);

    // describe: one timeline, the Azure objects, the conditions.
    let out = lapse(&w, &["-n", NS, "describe", "ok"])?.expect(0)?;
    let role_assignment = g
        .status
        .as_ref()
        .and_then(|s| s.role_assignments.first())
        .and_then(|r| r.id.clone())
        .context("no role assignment recorded")?;
    for part in [
        &format!("Requester:     {me}"),
        "Phase:         Active (expires in",
        "Policy:        AccessPolicy payments-self-service",
        &format!("requested by {me}"),
        "Activating: ",
        "Activated: ",
        "lease started (status.activatedAt)",
        "lease ends (status.expiresAt)",
        "role assignment",
        "federated credential",
        &role_assignment,
        "Present",
        "Ready",
        "PolicyAllowed",
    ] {
        assert!(out.stdout.contains(part), "{part:?} missing");
    }
    let out = lapse(&w, &["-n", NS, "describe", "toolong"])?.expect(0)?;
    assert!(
        out.stdout.contains("Warning   Denied: ") && out.stdout.contains("exceeds maxDuration 1h"),
        "{}",
        out.stdout
    );
    let out = lapse(&w, &["-n", NS, "describe", "gone"])?.expect(0)?;
    // "ok" holds the same role assignment, so revoking "gone" releases it rather than deleting it.
    assert!(
        out.stdout.contains("lease ended: Revoked (status.endedAt)")
            && out.stdout.contains("Released"),
        "{}",
        out.stdout
    );
    let v = lapse(&w, &["-n", NS, "describe", "brief", "-o", "json"])?
        .expect(0)?
        .json()?;
    let timeline: Vec<&str> = v["timeline"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["what"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        timeline.iter().any(|e| e.starts_with("Expired: ")),
        "{timeline:?}"
    );
    assert!(v["events"].as_array().is_some_and(|e| !e.is_empty()));
    lapse(&w, &["-n", NS, "describe", "nope"])?.expect(1)?;

    // extend: within maxDuration the operator moves the expiry; beyond it, refused client-side.
    let before = g
        .status
        .as_ref()
        .and_then(|s| s.expires_at)
        .context("no expiry")?;
    let out = lapse(&w, &["-n", NS, "extend", "ok", "--by", "30m"])?.expect(0)?;
    assert!(
        out.stdout.contains("spec.duration 10m → 40m; generation 2"),
        "{}",
        out.stdout
    );
    let g = w
        .wait_grant(NS, "ok", timeout, |g| {
            g.status.as_ref().and_then(|s| s.expires_at)
                == Some(before + chrono::TimeDelta::minutes(30))
        })
        .await?;
    assert_eq!(g.spec.duration.as_deref(), Some("40m"));
    w.wait_event(NS, "ok", "Extended", timeout).await?;
    let out = lapse(&w, &["-n", NS, "extend", "ok", "--by", "30m"])?.expect(3)?;
    assert!(
        out.stderr
            .contains("a lease of 1h10m exceeds maxDuration 1h"),
        "{}",
        out.stderr
    );
    let out = lapse(&w, &["-n", NS, "extend", "brief", "--by", "1m"])?.expect(3)?;
    assert!(out.stderr.contains("is Expired"), "{}", out.stderr);

    // Completion and version need no cluster.
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = lapse(&w, &["completion", shell])?.expect(0)?;
        assert!(out.stdout.contains("kubectl-lapse"), "{shell}");
    }
    let out = lapse(&w, &["version"])?.expect(0)?;
    assert_eq!(
        out.stdout.trim(),
        format!("kubectl-lapse {}", env!("CARGO_PKG_VERSION"))
    );
    let out = lapse(&w, &["--help"])?.expect(0)?;
    assert!(out.stdout.contains("Exit codes:") && out.stdout.contains("4  timed out"));
    Ok(())
}

/// Approval through the plugin: alice's request waits (and --wait says for whom, then times out
/// with exit 4); only bob sees it pending; alice and carol may not approve (exit 3, naming the
/// policy); bob approves and it activates; an extension waits for bob again; carol, deciding as
/// platform-oncall, denies another while alice's --wait is watching it (exit 3 with the denial);
/// dave, who may not read policies, is warned and the operator denies his request (exit 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requesters_and_approvers_act_as_themselves() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "installs admission policies and impersonates users",
    )?;
    let w = World::start().await?;
    let timeout = w.scaled(TIMEOUT);
    w.namespace_with(NS, &["backup-runner"])?;
    w.apply_ok(&policy(
        &w,
        "payments-approved",
        &format!(
            "  approval:\n    required: 1\n    approvers:\n      users: [\"{BOB}\"]\n      groups: [platform-oncall]\n    timeout: 1h\n"
        ),
    ))?;
    w.apply_ok(&rbac())?;
    w.kubectl_ok(&[
        "apply",
        "-f",
        &workspace_root()
            .join("config/admission/approval.yaml")
            .to_string_lossy(),
    ])?;
    let (mi, _) = w.identity(w.fixtures.identity()).await?;
    let role = role_flag(&w);
    let ident = format!("--identity={mi}");

    let out = lapse_as(&w, ALICE, &[], &["policies"])?.expect(0)?;
    assert!(
        out.stdout.contains(&format!(
            "Approval:           1 from {BOB} or groups platform-oncall within 1h"
        )),
        "{}",
        out.stdout
    );

    // alice asks and waits: PendingApproval, waiting for bob or platform-oncall; time is up.
    let out = lapse_as(
        &w,
        ALICE,
        &[],
        &[
            "request",
            "nightly",
            &ident,
            &role,
            "--for=10m",
            "--wait",
            "--timeout=3s",
        ],
    )?
    .expect(4)?;
    assert!(out.stderr.contains(&format!("allowed by AccessPolicy payments-approved once approved: 1 approval(s) from users {BOB} or groups platform-oncall")), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("payments/nightly: waiting for approval: waiting for 1 more approval(s)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("timed out: ") && out.stderr.contains("still PendingApproval"),
        "{}",
        out.stderr
    );
    let g = w.grants(NS).get("nightly").await?;
    assert_eq!(
        g.spec.requester.as_deref(),
        Some(ALICE),
        "--as names the requester"
    );

    // Only an eligible approver who is not the requester sees it pending.
    let out = lapse_as(&w, ALICE, &[], &["pending"])?.expect(0)?;
    assert!(out.stdout.is_empty() && out.stderr.contains("Nothing waits for your approval"));
    let out = lapse_as(&w, CAROL, &[], &["pending"])?.expect(0)?;
    assert!(out.stdout.is_empty());
    let out = lapse_as(&w, BOB, &[], &["pending"])?.expect(0)?;
    assert!(
        out.stdout.contains("nightly") && out.stdout.contains(ALICE) && out.stdout.contains("0/1"),
        "{}",
        out.stdout
    );
    let out = lapse_as(&w, CAROL, &["platform-oncall"], &["pending", "-o", "json"])?.expect(0)?;
    assert_eq!(out.json()?["items"][0]["metadata"]["name"], "nightly");

    // alice may not approve her own request, carol is no approver; nothing is created.
    let out = lapse_as(&w, ALICE, &[], &["approve", "nightly"])?.expect(3)?;
    assert!(
        out.stderr
            .contains("you (alice@example.com) requested it (spec.requester)"),
        "{}",
        out.stderr
    );
    let out = lapse_as(&w, CAROL, &["devs"], &["approve", "nightly"])?.expect(3)?;
    assert!(
        out.stderr
            .contains("not an approver under AccessPolicy payments-approved"),
        "{}",
        out.stderr
    );
    assert!(
        w.kubectl_ok(&["-n", NS, "get", "apr", "-o", "name"])?
            .trim()
            .is_empty()
    );

    // bob approves: counted, quorum, Active.
    let approved = Instant::now();
    let out = lapse_as(
        &w,
        BOB,
        &[],
        &["approve", "nightly", "--comment", "LGTM OPS-7"],
    )?
    .expect(0)?;
    assert!(
        out.stdout
            .contains("accessapproval.lapse.dev/nightly-bob-example-com-g1 created"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("quorum reached"), "{}", out.stdout);
    w.wait_phase(NS, "nightly", GrantPhase::Active, timeout)
        .await?;
    println!("approve to Active: {} ms", approved.elapsed().as_millis());
    let out = lapse_as(&w, ALICE, &[], &["describe", "nightly"])?.expect(0)?;
    assert!(out.stdout.contains(&format!("approved by {BOB} (AccessApproval nightly-bob-example-com-g1, generation 1; counted): \"LGTM OPS-7\"")), "{}", out.stdout);

    // An extension is a new request: bob must approve generation 2.
    let before = w
        .grants(NS)
        .get("nightly")
        .await?
        .status
        .and_then(|s| s.expires_at)
        .context("no expiry")?;
    let out = lapse_as(&w, ALICE, &[], &["extend", "nightly", "--by", "5m"])?.expect(0)?;
    assert!(
        out.stdout
            .contains("takes effect once generation 2 is approved"),
        "{}",
        out.stdout
    );
    w.wait_grant(NS, "nightly", timeout, |g| {
        approved_reason(g) == Some("PendingApproval".into())
    })
    .await?;
    let out = lapse_as(&w, BOB, &[], &["pending"])?.expect(0)?;
    assert!(
        out.stdout.contains("nightly"),
        "an extension waiting for approval is pending: {}",
        out.stdout
    );
    lapse_as(&w, BOB, &[], &["approve", "nightly"])?.expect(0)?;
    w.wait_grant(NS, "nightly", timeout, |g| {
        g.status.as_ref().and_then(|s| s.expires_at) == Some(before + chrono::TimeDelta::minutes(5))
    })
    .await?;

    // alice waits on another; carol (platform-oncall) denies it; alice's wait ends refused.
    let waiting = Command::new(binary("kubectl-lapse")?)
        .args([
            "-n",
            NS,
            "--as",
            ALICE,
            "request",
            "second",
            &ident,
            &role,
            "--for=10m",
            "--wait",
        ])
        .env("KUBECONFIG", w.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    w.wait_phase(NS, "second", GrantPhase::PendingApproval, timeout)
        .await?;
    lapse_as(&w, CAROL, &["platform-oncall"], &["deny", "second"])?.expect(2)?;
    let out = lapse_as(
        &w,
        CAROL,
        &["platform-oncall"],
        &["deny", "second", "--comment", "not during the freeze"],
    )?
    .expect(0)?;
    assert!(
        out.stdout.contains(
            "denied by carol@example.com (AccessApproval second-carol-example-com-g1-deny)"
        ),
        "{}",
        out.stdout
    );
    let out = Run::from(waiting.wait_with_output()?);
    println!(
        "alice's request --wait:\n{}{}[exit {}]",
        out.stdout, out.stderr, out.code
    );
    let out = out.expect(3)?;
    assert!(
        out.stderr.contains("refused: ")
            && out
                .stderr
                .contains("is Denied: denied by carol@example.com")
            && out.stderr.contains("not during the freeze"),
        "{}",
        out.stderr
    );
    let a = w.kubectl_ok(&[
        "-n",
        NS,
        "get",
        "apr",
        "second-carol-example-com-g1-deny",
        "-o",
        "jsonpath={.spec.approver.groups}",
    ])?;
    assert_eq!(
        a, "[\"platform-oncall\"]",
        "decides only as the group that counts"
    );

    // (Another identity: a new grant sharing a live lease's role assignment ends Revoked.)
    let (other, _) = w
        .identity(
            w.fixtures
                .second_identity()
                .unwrap_or(w.fixtures.identity()),
        )
        .await?;
    let other_ident = format!("--identity={other}");
    // dave may not read policies: warned, not checked here; the operator denies it.
    let out = lapse_as(
        &w,
        DAVE,
        &[],
        &["request", "big", &other_ident, &role, "--for=2h", "--wait"],
    )?
    .expect(3)?;
    assert!(
        out.stderr.contains("you may not list AccessPolicies"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("is Denied: denied: spec.duration: a lease of 2h exceeds maxDuration 1h (policy payments-approved)"), "{}", out.stderr);
    let out = lapse_as(&w, DAVE, &[], &["pending"])?.expect(1)?;
    assert!(
        out.stderr.contains("may not list AccessPolicies"),
        "{}",
        out.stderr
    );
    Ok(())
}

fn approved_reason(g: &AccessGrant) -> Option<String> {
    g.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Approved")
        .map(|c| c.reason.to_string())
}
