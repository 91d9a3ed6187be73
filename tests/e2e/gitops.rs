//! GitOps health (docs/gitops.md): the Argo CD health check (`health.lua`, run by a real Lua 5.1
//! interpreter) and the Flux `healthCheckExprs` (run by a CEL interpreter the way Flux's
//! status evaluator runs them) read every phase of a grant as the table says.
//!
//! The Argo CD test data are golden files of grants the real operator produced in each phase;
//! `LAPSE_UPDATE_GOLDEN=1` regenerates them (and `health_test.yaml`) from a live run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kube::core::cel::cel;
use lapse_api::v1alpha1::GrantPhase;
use lapse_e2e::{Capability, World, sandbox_only, workspace_root};
use serde_json::{Value, json};

fn argocd_dir() -> PathBuf {
    workspace_root().join("config/gitops/argocd/resource_customizations/lapse.dev/AccessGrant")
}

/// Argo CD's verdict: `health.lua` with the object as the global `obj` (as Argo CD runs it).
fn argo_health(obj: &Value) -> anyhow::Result<(String, String)> {
    let script = std::fs::read_to_string(argocd_dir().join("health.lua"))?;
    let lua = mlua::Lua::new();
    let globals = lua.globals();
    let value = mlua::LuaSerdeExt::to_value(&lua, obj).map_err(|e| anyhow::anyhow!("{e}"))?;
    globals
        .set("obj", value)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let hs: mlua::Table = lua
        .load(&script)
        .set_name("health.lua")
        .eval()
        .map_err(|e| anyhow::anyhow!("health.lua: {e}"))?;
    let status: String = hs.get("status").map_err(|e| anyhow::anyhow!("{e}"))?;
    let message: String = hs.get("message").map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((status, message))
}

/// Flux's verdict, as `fluxcd/pkg/runtime/cel` evaluates `healthCheckExprs` (RFC 0009): a
/// status for an older generation is InProgress; then inProgress, failed, current in that
/// order, the first true wins; none true is InProgress. The object's top-level fields are the
/// variables.
fn flux_health(obj: &Value) -> anyhow::Result<&'static str> {
    let text = std::fs::read_to_string(
        workspace_root().join("config/gitops/flux/health-check-exprs.yaml"),
    )?;
    let exprs: Vec<Value> = serde_yaml_ng::from_str(&text)?;
    let e = exprs
        .iter()
        .find(|e| e["kind"] == "AccessGrant")
        .ok_or_else(|| anyhow::anyhow!("no AccessGrant entry"))?;
    if let (Some(seen), Some(generation)) = (
        obj.pointer("/status/observedGeneration")
            .and_then(Value::as_i64),
        obj.pointer("/metadata/generation").and_then(Value::as_i64),
    ) && seen != generation
    {
        return Ok("InProgress");
    }
    let mut ctx = cel::Context::default();
    if let Some(fields) = obj.as_object() {
        for (k, v) in fields {
            ctx.add_variable(k.as_str(), v.clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    for (key, verdict) in [
        ("inProgress", "InProgress"),
        ("failed", "Failed"),
        ("current", "Current"),
    ] {
        let Some(expr) = e[key].as_str() else {
            continue;
        };
        let program =
            cel::Program::compile(expr).map_err(|err| anyhow::anyhow!("{key}: {err:?}"))?;
        match program.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => return Ok(verdict),
            Ok(cel::Value::Bool(false)) => {}
            other => anyhow::bail!("{key} evaluated to {other:?}"),
        }
    }
    Ok("InProgress")
}

/// One row of docs/gitops.md's table: a grant, what Argo CD and Flux make of it.
struct Case {
    file: &'static str,
    phase: &'static str,
    argo: &'static str,
    flux: &'static str,
}

const TABLE: &[Case] = &[
    Case {
        file: "progressing_noStatus",
        phase: "-",
        argo: "Progressing",
        flux: "InProgress",
    },
    Case {
        file: "progressing_activating",
        phase: "Activating",
        argo: "Progressing",
        flux: "InProgress",
    },
    Case {
        file: "healthy_active",
        phase: "Active",
        argo: "Healthy",
        flux: "Current",
    },
    Case {
        file: "suspended_scheduled",
        phase: "Scheduled",
        argo: "Suspended",
        flux: "Current",
    },
    Case {
        file: "healthy_expired",
        phase: "Expired",
        argo: "Healthy",
        flux: "Current",
    },
    Case {
        file: "healthy_revoked",
        phase: "Revoked",
        argo: "Healthy",
        flux: "Current",
    },
    Case {
        file: "degraded_denied",
        phase: "Denied",
        argo: "Degraded",
        flux: "Failed",
    },
    Case {
        file: "degraded_failed",
        phase: "Failed",
        argo: "Degraded",
        flux: "Failed",
    },
    Case {
        file: "degraded_revocationOverdue",
        phase: "Revoking",
        argo: "Degraded",
        flux: "Failed",
    },
    Case {
        file: "degraded_tampered",
        phase: "Revoked",
        argo: "Degraded",
        flux: "Failed",
    },
];

fn testdata(file: &str) -> PathBuf {
    argocd_dir().join("testdata").join(format!("{file}.yaml"))
}

/// The committed health_test.yaml passes, in Argo CD's format, and Flux agrees with the table.
#[test]
fn the_argo_cd_health_test_passes_and_flux_agrees() -> anyhow::Result<()> {
    let tests: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(
        argocd_dir().join("health_test.yaml"),
    )?)?;
    let cases = tests["tests"].as_array().cloned().unwrap_or_default();
    assert_eq!(cases.len(), TABLE.len(), "one test per row of the table");
    for case in &cases {
        let input = case["inputPath"].as_str().unwrap_or_default();
        let obj: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(argocd_dir().join(input))?)?;
        let (status, message) = argo_health(&obj)?;
        assert_eq!(
            status,
            case["healthStatus"]["status"].as_str().unwrap_or_default(),
            "{input}"
        );
        assert_eq!(
            message,
            case["healthStatus"]["message"].as_str().unwrap_or_default(),
            "{input}"
        );
        let row = TABLE
            .iter()
            .find(|r| input.ends_with(&format!("{}.yaml", r.file)))
            .ok_or_else(|| anyhow::anyhow!("{input} is not in the table"))?;
        assert_eq!(status, row.argo, "{input}");
        // Without a status Flux's evaluation errors (`status` is not a field yet) and it waits;
        // the operator writes one at once.
        if row.phase != "-" {
            assert_eq!(flux_health(&obj)?, row.flux, "{input}");
        }
        if row.phase != "-" {
            assert_eq!(obj["status"]["phase"], row.phase, "{input}");
        }
    }
    Ok(())
}

/// A status for an older generation is never healthy, whatever its phase says.
#[test]
fn a_stale_status_is_progressing_in_both() -> anyhow::Result<()> {
    let mut obj: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(testdata("healthy_active"))?)?;
    obj["metadata"]["generation"] = json!(2);
    obj["status"]["observedGeneration"] = json!(1);
    assert_eq!(argo_health(&obj)?.0, "Progressing");
    assert_eq!(flux_health(&obj)?, "InProgress");
    Ok(())
}

/// Grants the real operator put in each phase read as the table says; with
/// `LAPSE_UPDATE_GOLDEN=1` they become the committed test data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_grants_in_every_phase_read_as_the_table_says() -> anyhow::Result<()> {
    sandbox_only(
        Capability::Faults,
        "holds, refuses and fails Azure calls to put grants in every phase",
    )?;
    let mut w = World::without_operator().await?;
    w.start_operator(&[("LAPSE_OVERDUE_AFTER", "1s"), ("LAPSE_RETRY_AFTER", "1s")])
        .await?;
    let ns = "gitops";
    w.namespace_with(ns, &["backup-runner"])?;
    let rg = w.fixtures.resource_group_id();
    let storage = w.fixtures.storage_account_id();
    let (mi1, _) = w.identity(&w.fixtures.identities[0]).await?;
    let (mi2, _) = w.identity(&w.fixtures.identities[1]).await?;
    w.apply_ok(
        &json!({
            "apiVersion": "lapse.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "gitops"},
            "spec": {"namespaces": [ns],
                     "identities": [format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*")],
                     "roles": ["Reader", "Storage Blob Data Reader", "Storage Blob Data Contributor",
                               "Storage Blob Data Owner", "Key Vault Reader"],
                     "scopes": [rg], "maxDuration": "2h"},
        })
        .to_string(),
    )?;
    // Each grant holds its own (identity, role, scope), so no two share an Azure object and a
    // fault aimed at one touches no other.
    let grant = |name: &str, mi: &str, role: &str, scope: &str, extra: Value| {
        let mut spec = json!({
            "identity": {"managedIdentity": mi},
            "roles": [{"role": role, "scope": scope}],
            "duration": "1h",
            "justification": "OPS-11 gitops",
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        json!({"apiVersion": "lapse.dev/v1alpha1", "kind": "AccessGrant",
               "metadata": {"name": name, "namespace": ns}, "spec": spec})
        .to_string()
    };
    let timeout = Duration::from_secs(30);
    let soon = (chrono::Utc::now() + chrono::TimeDelta::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    w.apply_ok(&grant("active", &mi1, "Reader", &rg, json!({})))?;
    w.apply_ok(&grant(
        "revoked",
        &mi1,
        "Storage Blob Data Reader",
        &rg,
        json!({}),
    ))?;
    w.apply_ok(&grant(
        "tampered",
        &mi1,
        "Storage Blob Data Contributor",
        &rg,
        json!({}),
    ))?;
    w.apply_ok(&grant(
        "overdue",
        &mi1,
        "Storage Blob Data Owner",
        &rg,
        json!({}),
    ))?;
    w.apply_ok(&grant(
        "expired",
        &mi1,
        "Reader",
        &storage,
        json!({"duration": "2s"}),
    ))?;
    w.apply_ok(&grant(
        "scheduled",
        &mi2,
        "Reader",
        &rg,
        json!({"window": {"notBefore": soon}}),
    ))?;
    w.apply_ok(&grant("denied", &mi2, "Owner", &rg, json!({})))?;
    for name in ["active", "revoked", "tampered", "overdue"] {
        w.wait_phase(ns, name, GrantPhase::Active, timeout).await?;
    }
    w.patch_grant(ns, "revoked", r#"{"spec":{"revoked":true}}"#)?;
    w.kubectl_ok(&[
        "-n",
        ns,
        "patch",
        "accessgrant",
        "tampered",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"expiresAt":"2031-01-01T00:00:00Z"}}"#,
    ])?;
    // Revoking, overdue: Azure keeps failing this lease's delete.
    let overdue = w
        .wait_phase(ns, "overdue", GrantPhase::Active, timeout)
        .await?;
    let name = overdue
        .status
        .as_ref()
        .and_then(|s| s.role_assignments.first())
        .and_then(|r| r.id.as_deref())
        .and_then(|id| id.rsplit('/').next())
        .unwrap_or_default()
        .to_owned();
    w.azure_fault(json!({"method": "DELETE", "pathPattern": format!("/roleAssignments/{name}"),
        "action": {"type": "status", "status": 500, "code": "InternalServerError", "message": "injected"}})).await?;
    w.patch_grant(ns, "overdue", r#"{"spec":{"revoked":true}}"#)?;
    // Failed: Azure refuses the assignment for good.
    w.azure_fault(json!({"method": "PUT", "pathPattern": "storageAccounts/[^/]+/providers/Microsoft.Authorization/roleAssignments/",
        "action": {"type": "status", "status": 400, "code": "RoleAssignmentLimitExceeded",
                   "message": "No more role assignments can be created."}, "times": 1})).await?;
    w.apply_ok(&grant(
        "failed",
        &mi2,
        "Storage Blob Data Reader",
        &storage,
        json!({}),
    ))?;
    w.wait_phase(ns, "failed", GrantPhase::Failed, timeout)
        .await?;
    // Activating: Azure holds the create.
    w.azure_fault(json!({"method": "PUT", "pathPattern": "storageAccounts/[^/]+/providers/Microsoft.Authorization/roleAssignments/",
        "action": {"type": "latency", "millis": 20000}, "times": 1})).await?;
    w.apply_ok(&grant(
        "activating",
        &mi2,
        "Storage Blob Data Contributor",
        &storage,
        json!({}),
    ))?;
    w.wait_phase(ns, "activating", GrantPhase::Activating, timeout)
        .await?;
    w.wait_grant(ns, "overdue", timeout, |g| {
        g.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Stalled" && c.status == lapse_api::v1alpha1::ConditionStatus::True
            })
        })
    })
    .await?;
    for (name, phase) in [
        ("expired", GrantPhase::Expired),
        ("revoked", GrantPhase::Revoked),
        ("denied", GrantPhase::Denied),
        ("tampered", GrantPhase::Revoked),
        ("scheduled", GrantPhase::Scheduled),
    ] {
        w.wait_phase(ns, name, phase, timeout).await?;
    }

    let object = |name: &str| -> anyhow::Result<Value> {
        let mut v: Value = serde_json::from_str(&w.kubectl_ok(&[
            "-n",
            ns,
            "get",
            "accessgrant",
            name,
            "-o",
            "json",
        ])?)?;
        if let Some(meta) = v["metadata"].as_object_mut() {
            meta.retain(|k, _| ["name", "namespace", "generation"].contains(&k.as_str()));
        }
        Ok(v)
    };
    let mut live: BTreeMap<&str, Value> = BTreeMap::new();
    for (file, name) in [
        ("progressing_activating", "activating"),
        ("healthy_active", "active"),
        ("suspended_scheduled", "scheduled"),
        ("healthy_expired", "expired"),
        ("healthy_revoked", "revoked"),
        ("degraded_denied", "denied"),
        ("degraded_failed", "failed"),
        ("degraded_revocationOverdue", "overdue"),
        ("degraded_tampered", "tampered"),
    ] {
        live.insert(file, object(name)?);
    }
    // A grant the operator has not seen yet: the same object before any status.
    let mut fresh = live["healthy_active"].clone();
    if let Some(o) = fresh.as_object_mut() {
        o.remove("status");
    }
    live.insert("progressing_noStatus", fresh);

    let mut tests = Vec::new();
    for row in TABLE {
        let obj = &live[row.file];
        let (status, message) = argo_health(obj)?;
        assert_eq!(status, row.argo, "{}: {obj:#}", row.file);
        if row.file != "progressing_noStatus" {
            assert_eq!(flux_health(obj)?, row.flux, "{}: {obj:#}", row.file);
        }
        println!(
            "[gitops] {:<28} Argo CD {status:<11} Flux {:<10} {message}",
            row.file, row.flux
        );
        tests.push(json!({
            "healthStatus": {"status": status, "message": message},
            "inputPath": format!("testdata/{}.yaml", row.file),
        }));
    }
    if std::env::var_os("LAPSE_UPDATE_GOLDEN").is_some() {
        for (file, obj) in &live {
            std::fs::write(testdata(file), serde_yaml_ng::to_string(obj)?)?;
        }
        std::fs::write(
            argocd_dir().join("health_test.yaml"),
            serde_yaml_ng::to_string(&json!({"tests": tests}))?,
        )?;
        println!("[gitops] wrote the golden test data");
    }
    w.clear_azure_faults().await?;
    Ok(())
}

/// `LAPSE_RETAIN_FINISHED`: a finished grant is deleted after the retention, leaving its audit
/// line; a live one is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_grants_retire_after_the_retention() -> anyhow::Result<()> {
    let mut w = World::without_operator().await?;
    w.start_operator(&[("LAPSE_RETAIN_FINISHED", "2s")]).await?;
    let ns = "retire";
    w.namespace_with(ns, &["backup-runner"])?;
    let rg = w.fixtures.resource_group_id();
    let (mi, _) = w.identity(w.fixtures.identity()).await?;
    w.apply_ok(
        &json!({
            "apiVersion": "lapse.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "retire"},
            "spec": {"namespaces": [ns],
                     "identities": [format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*")],
                     "roles": ["Reader", "Storage Blob Data Reader"], "scopes": [rg], "maxDuration": "2h"},
        })
        .to_string(),
    )?;
    for (name, role, lease) in [
        ("short", "Reader", "2s"),
        ("long", "Storage Blob Data Reader", "1h"),
    ] {
        w.apply_ok(
            &json!({"apiVersion": "lapse.dev/v1alpha1", "kind": "AccessGrant",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"identity": {"managedIdentity": mi}, "duration": lease,
                             "roles": [{"role": role, "scope": rg}], "justification": "OPS-11"}})
            .to_string(),
        )?;
    }
    w.wait_phase(ns, "short", GrantPhase::Expired, Duration::from_secs(30))
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while w.grants(ns).get_opt("short").await?.is_some() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the finished grant was never retired"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        w.grants(ns).get_opt("long").await?.is_some(),
        "a live grant was retired"
    );
    let logs = w.operator_logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("lapse::audit") && l.contains("Retired") && l.contains("short")),
        "no audit line for the retirement:\n{logs}"
    );
    Ok(())
}
