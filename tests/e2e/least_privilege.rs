//! Least privilege on Azure, end to end. `lapse-operator azure-role` turns an AccessPolicy into
//! the operator's own Azure roles; the operator's broad sandbox roles are replaced by exactly
//! those. Then a grant the policy allows activates, federates and is revoked (role assignment
//! and FIC deleted under the generated roles), while a role another policy allows, but the
//! generated ABAC condition leaves out, is refused by Azure and the grant ends `Failed` with
//! Azure's error; `lapse-operator check` names what the identity lacks for that other policy's
//! extra scope and exits non-zero, and the operator says the same at start-up.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use lapse_api::v1alpha1::GrantPhase;
use lapse_e2e::{Capability, World, binary, calls, sandbox_only, scratch_dir};
use serde_json::{Value, json};

const NS: &str = "payments";
const SA: &str = "backup-runner";
const TIMEOUT: Duration = Duration::from_secs(45);
const ROLE_API: &str = "2022-04-01";
const RBAC_ADMIN: &str = "f58310d9-a9f6-439a-9e8d-f62e7b41a168";
const WRITE: &str = "Microsoft.Authorization/roleAssignments/write";

/// `lapse-operator <args>` in `dir`, with the target's Azure settings and kubeconfig, as a
/// user runs it.
fn operator_cli(w: &World, dir: &Path, args: &[&str]) -> anyhow::Result<Output> {
    let mut cmd = Command::new(binary("lapse-operator")?);
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KUBECONFIG", w.target.kubeconfig());
    for (k, v) in w.target.azure() {
        cmd.env(k, v);
    }
    Ok(cmd.output()?)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn policy(name: &str, roles: &[&str], scopes: &[&str], identity: &str, sas: &[&str]) -> Value {
    json!({
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": name},
        "spec": {
            "namespaces": [NS],
            "identities": [identity],
            "roles": roles,
            "scopes": scopes,
            "serviceAccounts": sas,
            "maxDuration": "1h",
        }
    })
}

fn write_yaml(dir: &Path, file: &str, v: &Value) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(file), serde_yaml_ng::to_string(v)?)?;
    Ok(())
}

fn grant(name: &str, mi: &str, role: &str, scope: &str, sa: Option<&str>) -> String {
    let mut spec = json!({
        "identity": {"managedIdentity": mi},
        "roles": [{"role": role, "scope": scope}],
        "duration": "30m",
        "justification": "OPS-7 least privilege",
    });
    if let Some(sa) = sa {
        spec["federation"] = json!({ "serviceAccount": sa });
    }
    json!({
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessGrant",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    })
    .to_string()
}

/// The role definition GUID at the end of a role definition ID.
fn guid_of(role_definition_id: &str) -> String {
    role_definition_id
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_works_with_exactly_the_roles_azure_role_generates() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableTenant,
        "the test replaces the operator's own Azure role assignments with the generated ones, \
         and reads Azure's request log for the refused write",
    )?;
    let mut w = World::without_operator().await?;
    let sub = w.subscription()?.to_owned();
    let storage = w.fixtures.storage_account_id();
    let rg = w.fixtures.resource_group_id();
    let vault = format!("{rg}/providers/Microsoft.KeyVault/vaults/lapse-demo-kv");
    let (mi, client_id) = w.identity(w.fixtures.identity()).await?;
    w.namespace_with(NS, &[SA])?;

    // The policy the operator's roles are generated from, and another one they are not.
    let dir = scratch_dir("lapse-least-privilege")?;
    let storage_reader = policy(
        "lp-storage-reader",
        &["Reader"],
        &[&storage],
        &mi,
        &["backup-*"],
    );
    let blob_reader = policy(
        "lp-blob-reader",
        &["Storage Blob Data Reader"],
        &[&storage, &vault],
        &mi,
        &[],
    );
    write_yaml(
        &dir.join("generated"),
        "storage-reader.yaml",
        &storage_reader,
    )?;
    write_yaml(&dir.join("all"), "storage-reader.yaml", &storage_reader)?;
    write_yaml(&dir.join("all"), "blob-reader.yaml", &blob_reader)?;
    let (generated, all) = ("generated", "all");

    // 1. The roles, as az commands (shown) and as ARM bodies (applied below).
    let az = operator_cli(&w, &dir, &["azure-role", "--policies", generated])?;
    let (az_text, err) = text(&az);
    assert!(az.status.success(), "{err}");
    println!("$ lapse-operator azure-role --policies generated\n{az_text}");
    let out = operator_cli(
        &w,
        &dir,
        &["azure-role", "--policies", generated, "-o", "json"],
    )?;
    let (json_text, err) = text(&out);
    assert!(out.status.success(), "{err}");
    let roles: Value = serde_json::from_str(&json_text)?;
    let assignments = roles["roleAssignments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let definitions = roles["roleDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(assignments.len(), 3, "{json_text}");
    assert_eq!(definitions.len(), 2, "{json_text}");
    let condition = assignments[0]["properties"]["condition"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        condition.contains("GuidEquals {acdd72a7-3385-48ef-bd42-f606fba81ae7}"),
        "{condition}"
    );

    // 2. Applied as the operator itself, which still holds User Access Administrator: what an
    //    administrator running the printed commands does.
    let (status, sp) = w
        .graph_json(&format!(
            "/servicePrincipals(appId='{}')",
            w.env("AZURE_CLIENT_ID")?
        ))
        .await?;
    anyhow::ensure!(
        status == 200,
        "the operator's service principal: {status} {sp}"
    );
    let operator = sp["id"].as_str().unwrap_or_default().to_owned();
    for d in &definitions {
        let scope = d
            .pointer("/properties/assignableScopes/0")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let path = format!(
            "{scope}/providers/Microsoft.Authorization/roleDefinitions/{}",
            d["name"].as_str().unwrap_or_default()
        );
        let (status, body) = w.arm_put(&path, ROLE_API, d).await?;
        assert_eq!(status, 201, "PUT {path}: {body}");
    }
    let mut created = BTreeSet::new();
    for a in &assignments {
        let scope = a["scope"].as_str().unwrap_or_default();
        let mut props = a["properties"].clone();
        props["principalId"] = json!(operator);
        let name = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("{scope}|{}", props["roleDefinitionId"]).as_bytes(),
        );
        let path = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
        let (status, body) = w
            .arm_put(&path, ROLE_API, &json!({ "properties": props }))
            .await?;
        assert_eq!(status, 201, "PUT {path}: {body}");
        created.insert(name.to_string());
    }
    // 3. Its broad sandbox roles go (User Access Administrator last: it allows the deletes).
    let mut standing: Vec<Value> = w
        .assignments_of(&operator)
        .await?
        .into_iter()
        .filter(|a| !created.contains(a["name"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        standing.len(),
        2,
        "the sandbox's two broad roles: {standing:?}"
    );
    standing.sort_by_key(|a| {
        guid_of(
            a["properties"]["roleDefinitionId"]
                .as_str()
                .unwrap_or_default(),
        ) == "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"
    });
    for a in &standing {
        let id = a["id"].as_str().unwrap_or_default();
        assert_eq!(w.arm_delete(id, ROLE_API).await?, 200, "DELETE {id}");
    }
    let mut now: Vec<(String, String, bool)> = w
        .assignments_of(&operator)
        .await?
        .iter()
        .map(|a| {
            (
                a["properties"]["scope"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                guid_of(
                    a["properties"]["roleDefinitionId"]
                        .as_str()
                        .unwrap_or_default(),
                ),
                a["properties"]["condition"].as_str() == Some(condition.as_str()),
            )
        })
        .collect();
    now.sort();
    let custom = |i: usize| {
        definitions[i]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let mut want = vec![
        (storage.clone(), RBAC_ADMIN.to_owned(), true),
        (format!("/subscriptions/{sub}"), custom(0), false),
        (mi.clone(), custom(1), false),
    ];
    want.sort();
    assert_eq!(now, want, "the operator holds exactly the generated roles");

    // 4. check: everything the generated policy needs is there; the other policy's extra scope
    //    (the key vault) lacks role assignment writes and deletes.
    let ok = operator_cli(&w, &dir, &["check", "--policies", generated])?;
    let (ok_text, err) = text(&ok);
    println!("$ lapse-operator check --policies generated\n{ok_text}");
    assert_eq!(ok.status.code(), Some(0), "{ok_text}{err}");
    assert!(
        ok_text.contains("All 13 actions at 3 scopes are granted"),
        "{ok_text}"
    );
    let short = operator_cli(&w, &dir, &["check", "--policies", all])?;
    let (short_text, err) = text(&short);
    println!("$ lapse-operator check --policies all\n{short_text}");
    assert_eq!(short.status.code(), Some(2), "{short_text}{err}");
    let vault_section = short_text
        .split("\n\n")
        .find(|s| s.starts_with(&vault))
        .unwrap_or_default();
    assert!(
        vault_section.contains(&format!("MISSING  {WRITE}")),
        "{short_text}"
    );
    assert!(
        vault_section.contains("ok       Microsoft.Authorization/roleAssignments/read"),
        "{short_text}"
    );
    assert!(
        short_text.contains(&format!("2 actions are missing:\n  {WRITE} at {vault}")),
        "{short_text}"
    );

    // 5. The cluster gets both policies; the operator, started now, warns at start-up.
    w.apply_ok(&storage_reader.to_string())?;
    w.apply_ok(&blob_reader.to_string())?;
    // A refusal here is the condition's, not propagation: no need to wait out the 10 minutes
    // ARM may take for a new role to reach it.
    w.start_operator(&[("LAPSE_AUTHORIZATION_GRACE", "3s")])
        .await?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let logs = w.operator_logs();
        if let Some(warning) = logs
            .lines()
            .find(|l| l.contains("WARN") && l.contains(WRITE) && l.contains(&vault))
        {
            println!("[start-up] {warning}");
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no start-up warning about {WRITE} at {vault}:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 6. A role the policy lists activates, federates, and the workload reads the account.
    w.apply_ok(&grant("reader", &mi, "Reader", &storage, Some(SA)))?;
    w.wait_phase(NS, "reader", GrantPhase::Active, TIMEOUT)
        .await?;
    w.settle(
        "the workload reads the storage account",
        Some(200),
        async || {
            w.workload_read(NS, SA, &client_id, &storage, "2023-01-01")
                .await
        },
    )
    .await?;

    // 7. A role only the other policy allows: the policy says yes, Azure's condition says no.
    w.apply_ok(&grant(
        "blob",
        &mi,
        "Storage Blob Data Reader",
        &storage,
        None,
    ))?;
    let g = w
        .wait_phase(NS, "blob", GrantPhase::Failed, TIMEOUT)
        .await?;
    let msg = g
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    println!("[blob] Failed: {msg}");
    assert!(msg.contains("AuthorizationFailed"), "{msg}");
    assert!(
        msg.contains(&format!(
            "does not have authorization or an ABAC condition not fulfilled to perform action '{WRITE}' over scope '{storage}/providers/Microsoft.Authorization/roleAssignments/"
        )),
        "{msg}"
    );
    let audit = w.audit().await?;
    let refused: Vec<&Value> = calls(
        &audit,
        "PUT",
        &format!("{storage}/providers/Microsoft.Authorization/roleAssignments/"),
    )
    .into_iter()
    .filter(|e| e["status"] == 403)
    .collect();
    // Retried only within the authorization grace (3 s, at the 2 s retry interval), then never
    // again: the grant failed.
    assert!(
        (1..=3).contains(&refused.len()),
        "refused writes retried beyond the grace: {refused:?}"
    );
    assert!(
        refused
            .iter()
            .all(|e| e["errorCode"] == "AuthorizationFailed")
    );

    // 8. Revoked, the Reader assignment and the FIC are deleted under the generated roles.
    w.patch_grant(NS, "reader", r#"{"spec":{"revoked":true}}"#)?;
    w.wait_phase(NS, "reader", GrantPhase::Revoked, TIMEOUT)
        .await?;
    let (status, mi_body) = w.arm_json(&mi, "2023-01-31").await?;
    anyhow::ensure!(status == 200, "GET {mi}: {status} {mi_body}");
    let principal = mi_body["properties"]["principalId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(w.assignments_of(&principal).await?.is_empty());
    assert!(w.fics(&mi).await?.is_empty());
    let deletes = calls(&w.audit().await?, "DELETE", "")
        .into_iter()
        .filter(|e| e["status"] == 200)
        .count();
    assert!(
        deletes >= 4,
        "2 broad roles, 1 assignment and 1 FIC deleted: {deletes}"
    );
    Ok(())
}
