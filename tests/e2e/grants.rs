//! Grant lifecycles end to end: how leases end early, stretch, wait, get refused, fail whole,
//! share and stand aside. Real `lapse-sandbox` and `lapse-operator` processes, asserted through
//! kubectl output and through Azure itself (ARM, Graph, the token exchange, the audit log).
//!
//! Every test prints what it measured: activation (apply -> Ready), overstay (expiresAt ->
//! DELETE acknowledged by Azure) or revocation latency (the user's action -> DELETE
//! acknowledged).

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use lapse_api::v1alpha1::{AccessGrant, ConditionStatus, GrantPhase, ObjectState};
use lapse_e2e::{World, acknowledged_at, succeeded};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(45);
const NS: &str = "payments";
const SA: &str = "backup-runner";
/// api-version of the storage account read a workload makes.
const STORAGE_API: &str = "2023-01-01";

/// A sandbox and operator, with namespace `payments` and its ServiceAccounts.
struct Fx {
    w: World,
    sub: String,
    /// Resource ID of the `backup-runner` managed identity.
    mi: String,
    client_id: String,
    storage: String,
    vault: String,
    rg: String,
}

impl Fx {
    async fn start() -> anyhow::Result<Self> {
        let t = Instant::now();
        let w = World::start().await?;
        eprintln!(
            "[setup] sandbox and operator ready in {} ms",
            t.elapsed().as_millis()
        );
        let sub = w.subscription()?.to_owned();
        let (mi, client_id) = w.identity("backup-runner").await?;
        let rg = format!("/subscriptions/{sub}/resourceGroups/lapse-demo-rg");
        w.namespace_with(NS, &[SA, "report-agent"])?;
        Ok(Self {
            storage: format!("{rg}/providers/Microsoft.Storage/storageAccounts/lapsedemodata"),
            vault: format!("{rg}/providers/Microsoft.KeyVault/vaults/lapse-demo-kv"),
            w,
            sub,
            mi,
            client_id,
            rg,
        })
    }

    /// The `payments` policy: managed identities of the demo RG, Reader and Storage Blob Data
    /// Reader at or below the RG (plus `extra_scopes`), `backup-*` ServiceAccounts.
    fn apply_policy(&self, max: &str, extra_scopes: &[&str]) -> anyhow::Result<()> {
        let mut scopes = vec![self.rg.clone()];
        scopes.extend(extra_scopes.iter().map(|s| (*s).to_owned()));
        self.w.apply_ok(
            &json!({
                "apiVersion": "lapse.dev/v1alpha1",
                "kind": "AccessPolicy",
                "metadata": {"name": "payments"},
                "spec": {
                    "namespaces": [NS],
                    "identities": [format!("{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*", self.rg)],
                    "roles": ["Reader", "Storage Blob Data Reader"],
                    "scopes": scopes,
                    "serviceAccounts": ["backup-*"],
                    "maxDuration": max,
                }
            })
            .to_string(),
        )
    }

    /// `backup-runner` as Reader of the storage account, federated with `sa`.
    fn reader_grant(&self, name: &str, sa: Option<&str>, lease: Value) -> String {
        grant(
            name,
            self.mi_identity(),
            &[("Reader", &self.storage)],
            sa,
            lease,
        )
    }

    /// `backup-runner` as the grant's identity.
    fn mi_identity(&self) -> Value {
        json!({"managedIdentity": self.mi})
    }

    /// The principal (object) ID of `backup-runner`, which its role assignments name.
    async fn mi_principal(&self) -> anyhow::Result<String> {
        let (status, v) = self.w.arm_json(&self.mi, "2023-01-31").await?;
        anyhow::ensure!(status == 200, "GET {}: {status} {v}", self.mi);
        v.pointer("/properties/principalId")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no principalId in {v}"))
    }

    /// Applies a grant, waits until it is `Active` and prints how long that took.
    async fn activate(&self, name: &str, manifest: &str) -> anyhow::Result<AccessGrant> {
        let applied = Instant::now();
        self.w.apply_ok(manifest)?;
        let g = self.wait(name, GrantPhase::Active).await?;
        let took = applied.elapsed();
        println!(
            "[{name}] activation {} ms (apply -> Ready)",
            took.as_millis()
        );
        assert_eq!(self.w.phase_column(NS, name)?, "Active");
        Ok(g)
    }

    async fn wait(&self, name: &str, phase: GrantPhase) -> anyhow::Result<AccessGrant> {
        self.w.wait_phase(NS, name, phase, TIMEOUT).await
    }

    /// The workload's view of the storage account: `None` when Entra refuses the exchange.
    async fn workload_read(&self, client_id: &str) -> anyhow::Result<Option<u16>> {
        self.w
            .workload_read(NS, SA, client_id, &self.storage, STORAGE_API)
            .await
    }

    /// A token the workload holds, exchanged now.
    async fn workload_token(&self, client_id: &str) -> anyhow::Result<String> {
        let assertion = self.w.service_account_token(NS, SA).await?;
        self.w
            .exchange(&assertion, client_id)
            .await?
            .map_err(|e| anyhow::anyhow!("exchange refused: {e}"))
    }
}

/// An AccessGrant manifest in `payments`; `lease` holds `duration` and/or `window`.
fn grant(
    name: &str,
    identity: Value,
    roles: &[(&str, &str)],
    sa: Option<&str>,
    lease: Value,
) -> String {
    let mut spec = json!({
        "identity": identity,
        "roles": roles.iter().map(|(role, scope)| json!({"role": role, "scope": scope})).collect::<Vec<_>>(),
        "justification": "OPS-5 e2e",
    });
    if let Some(sa) = sa {
        spec["federation"] = json!({ "serviceAccount": sa });
    }
    if let (Some(spec), Some(lease)) = (spec.as_object_mut(), lease.as_object()) {
        spec.extend(lease.clone());
    }
    json!({
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessGrant",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    })
    .to_string()
}

fn duration(d: &str) -> Value {
    json!({ "duration": d })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Audit entries for `method` on paths containing `part` (case-insensitive), oldest first.
fn calls<'a>(audit: &'a [Value], method: &str, part: &str) -> Vec<&'a Value> {
    let part = part.to_ascii_lowercase();
    audit
        .iter()
        .filter(|e| {
            e["method"] == method
                && e["path"]
                    .as_str()
                    .is_some_and(|p| p.to_ascii_lowercase().contains(&part))
        })
        .collect()
}

fn ok_calls<'a>(audit: &'a [Value], method: &str, part: &str) -> Vec<&'a Value> {
    calls(audit, method, part)
        .into_iter()
        .filter(|e| succeeded(e))
        .collect()
}

/// Prints, for every acknowledged delete of a lease object, how long after `since` Azure
/// acknowledged it; fails if Azure saw the delete before `since`.
fn report_deletes(
    test: &str,
    what: &str,
    audit: &[Value],
    since: DateTime<Utc>,
) -> anyhow::Result<()> {
    let deletes: Vec<&Value> = audit
        .iter()
        .filter(|e| e["method"] == "DELETE" && succeeded(e))
        .filter(|e| {
            e["path"].as_str().is_some_and(|p| {
                let p = p.to_ascii_lowercase();
                p.contains("/roleassignments/") || p.contains("/federatedidentitycredentials/")
            })
        })
        .collect();
    anyhow::ensure!(
        !deletes.is_empty(),
        "[{test}] no acknowledged DELETE in the audit"
    );
    for e in deletes {
        let arrived: DateTime<Utc> = serde_json::from_value(e["time"].clone())?;
        let ms = (acknowledged_at(e)? - since).num_milliseconds();
        println!("[{test}] {what} {ms} ms for {}", e["path"]);
        assert!(
            arrived >= since,
            "[{test}] {} deleted before {since}",
            e["path"]
        );
    }
    Ok(())
}

fn condition<'g>(g: &'g AccessGrant, type_: &str) -> Option<&'g lapse_api::v1alpha1::Condition> {
    g.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

fn required_condition(
    g: &AccessGrant,
    type_: &str,
) -> anyhow::Result<lapse_api::v1alpha1::Condition> {
    condition(g, type_).cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "{:?} has no {type_} condition: {:?}",
            g.metadata.name,
            g.status
        )
    })
}

fn expires_at(g: &AccessGrant) -> anyhow::Result<DateTime<Utc>> {
    g.status
        .as_ref()
        .and_then(|s| s.expires_at)
        .ok_or_else(|| anyhow::anyhow!("{:?} has no expiresAt", g.metadata.name))
}

fn message(g: &AccessGrant) -> String {
    g.status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

/// A GUID nobody derived: what a human or another tool would name an assignment.
fn random_guid() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let x = nanos ^ (u128::from(std::process::id()) << 64);
    let h = format!("{x:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_revoke_ends_access_at_once_and_cannot_be_undone() -> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    fx.apply_policy("1h", &[])?;
    let principal = fx.mi_principal().await?;
    let g = fx
        .activate(
            "nightly",
            &fx.reader_grant("nightly", Some(SA), duration("10m")),
        )
        .await?;
    let token = fx.workload_token(&fx.client_id).await?;
    assert_eq!(w.arm_get(&token, &fx.storage, STORAGE_API).await?, 200);

    let revoked_at = Utc::now();
    let out = w.patch_grant(NS, "nightly", r#"{"spec":{"revoked":true}}"#)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g2 = fx.wait("nightly", GrantPhase::Revoked).await?;
    assert_eq!(w.phase_column(NS, "nightly")?, "Revoked");
    assert!(
        message(&g2).contains("spec.revoked is true"),
        "{}",
        message(&g2)
    );
    let st = g2.status.clone().unwrap_or_default();
    let ended = st.ended_at.ok_or_else(|| anyhow::anyhow!("no endedAt"))?;
    assert!(
        ended < expires_at(&g)?,
        "the lease ended early, not at its expiry"
    );
    assert_eq!(
        condition(&g2, "Ready").map(|c| c.status),
        Some(ConditionStatus::False)
    );
    w.wait_event(NS, "nightly", "Revoked", TIMEOUT).await?;

    // Azure: both objects deleted, nothing of the principal left, the workload refused.
    let audit = w.audit().await?;
    assert_eq!(ok_calls(&audit, "DELETE", "/roleAssignments/").len(), 1);
    assert_eq!(
        ok_calls(&audit, "DELETE", "/federatedIdentityCredentials/").len(),
        1
    );
    report_deletes(
        "early_revoke",
        "revocation (patch -> DELETE acknowledged)",
        &audit,
        revoked_at,
    )?;
    assert!(w.assignments_of(&principal).await?.is_empty());
    assert!(w.fics(&fx.mi).await?.is_empty());
    assert_eq!(w.arm_get(&token, &fx.storage, STORAGE_API).await?, 403);
    assert_eq!(fx.workload_read(&fx.client_id).await?, None);

    // `revoked` is one-way: the API server refuses to set it back, naming the field.
    let out = w.patch_grant(NS, "nightly", r#"{"spec":{"revoked":false}}"#)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "un-revoking was accepted");
    assert!(stderr.contains("spec.revoked"), "{stderr}");
    assert!(stderr.contains("cannot be undone"), "{stderr}");
    assert_eq!(w.grant_jsonpath(NS, "nightly", "{.spec.revoked}")?, "true");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_active_grant_returns_only_after_its_azure_objects_are_gone()
-> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    fx.apply_policy("1h", &[])?;
    let principal = fx.mi_principal().await?;
    fx.activate(
        "nightly",
        &fx.reader_grant("nightly", Some(SA), duration("10m")),
    )
    .await?;
    assert_eq!(w.assignments_of(&principal).await?.len(), 1);

    let deleted_at = Utc::now();
    w.kubectl_ok(&[
        "-n",
        NS,
        "delete",
        "accessgrant",
        "nightly",
        "--wait",
        "--timeout=45s",
    ])?;
    let returned = Utc::now();
    // Looked at right after kubectl returned: nothing of the lease is left in Azure.
    assert!(w.assignments_of(&principal).await?.is_empty());
    assert!(w.fics(&fx.mi).await?.is_empty());
    assert!(w.grants(NS).get_opt("nightly").await?.is_none());
    let audit = w.audit().await?;
    let deletes = ok_calls(&audit, "DELETE", "/roleAssignments/")
        .into_iter()
        .chain(ok_calls(&audit, "DELETE", "/federatedIdentityCredentials/"))
        .collect::<Vec<_>>();
    assert_eq!(deletes.len(), 2);
    for e in deletes {
        assert!(
            acknowledged_at(e)? <= returned,
            "{} acknowledged after kubectl returned",
            e["path"]
        );
    }
    report_deletes(
        "delete_grant",
        "revocation (kubectl delete -> DELETE acknowledged)",
        &audit,
        deleted_at,
    )?;
    assert_eq!(fx.workload_read(&fx.client_id).await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_namespace_revokes_its_grants_and_the_namespace_goes() -> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    fx.apply_policy("1h", &[])?;
    let principal = fx.mi_principal().await?;
    fx.activate(
        "nightly",
        &fx.reader_grant("nightly", Some(SA), duration("10m")),
    )
    .await?;

    let deleted_at = Utc::now();
    w.kubectl_ok(&["delete", "namespace", NS, "--wait", "--timeout=45s"])?;
    let out = w.kubectl(&["get", "namespace", NS])?;
    assert!(!out.status.success(), "namespace still there");
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
    assert!(w.assignments_of(&principal).await?.is_empty());
    assert!(w.fics(&fx.mi).await?.is_empty());
    let audit = w.audit().await?;
    assert_eq!(ok_calls(&audit, "DELETE", "/roleAssignments/").len(), 1);
    assert_eq!(
        ok_calls(&audit, "DELETE", "/federatedIdentityCredentials/").len(),
        1
    );
    report_deletes(
        "delete_namespace",
        "revocation (kubectl delete namespace -> DELETE acknowledged)",
        &audit,
        deleted_at,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_within_policy_moves_the_expiry_and_beyond_it_is_refused() -> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    fx.apply_policy("40s", &[])?;
    let g = fx
        .activate(
            "nightly",
            &fx.reader_grant("nightly", None, duration("15s")),
        )
        .await?;
    let activated = g
        .status
        .as_ref()
        .and_then(|s| s.activated_at)
        .ok_or_else(|| anyhow::anyhow!("no activatedAt"))?;
    assert_eq!(expires_at(&g)?, activated + TimeDelta::seconds(15));

    // Within policy: the lease now ends 25 s after activation.
    let out = w.patch_grant(NS, "nightly", r#"{"spec":{"duration":"25s"}}"#)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let extended = activated + TimeDelta::seconds(25);
    w.wait_grant(NS, "nightly", TIMEOUT, |g| {
        expires_at(g).ok() == Some(extended)
    })
    .await?;
    let ev = w.wait_event(NS, "nightly", "Extended", TIMEOUT).await?;
    assert_eq!(ev.type_, "Normal");
    assert!(ev.message.contains("lease extended to"), "{ev:?}");
    // kubectl shows the new expiry too (the EXPIRES column reads this field).
    let shown: DateTime<Utc> = w
        .grant_jsonpath(NS, "nightly", "{.status.expiresAt}")?
        .parse()?;
    assert_eq!(shown, extended);
    assert_eq!(w.phase_column(NS, "nightly")?, "Active");

    // Beyond maxDuration: refused, the recorded lease stands.
    let out = w.patch_grant(NS, "nightly", r#"{"spec":{"duration":"2m"}}"#)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g = w
        .wait_grant(NS, "nightly", TIMEOUT, |g| {
            condition(g, "ExtensionDenied").is_some_and(|c| c.status == ConditionStatus::True)
        })
        .await?;
    let c = required_condition(&g, "ExtensionDenied")?;
    assert_eq!(c.reason, "ExceedsMaxDuration");
    for part in ["spec.duration", "maxDuration 40s", "policy payments"] {
        assert!(c.message.contains(part), "{part:?} not in {:?}", c.message);
    }
    assert_eq!(
        expires_at(&g)?,
        extended,
        "a refused extension moved the expiry"
    );
    assert_eq!(g.status.as_ref().map(|s| s.phase), Some(GrantPhase::Active));
    assert_eq!(
        condition(&g, "Ready").map(|c| c.status),
        Some(ConditionStatus::True)
    );

    // Asking again within policy is granted and clears the refusal.
    let out = w.patch_grant(NS, "nightly", r#"{"spec":{"duration":"30s"}}"#)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let extended = activated + TimeDelta::seconds(30);
    let g = w
        .wait_grant(NS, "nightly", TIMEOUT, |g| {
            expires_at(g).ok() == Some(extended)
        })
        .await?;
    assert_eq!(
        condition(&g, "ExtensionDenied").map(|c| c.status),
        Some(ConditionStatus::False)
    );

    let g = fx.wait("nightly", GrantPhase::Expired).await?;
    assert_eq!(expires_at(&g)?, extended);
    let audit = w.audit().await?;
    assert_eq!(calls(&audit, "PUT", "/roleAssignments/").len(), 1);
    assert_eq!(ok_calls(&audit, "DELETE", "/roleAssignments/").len(), 1);
    report_deletes(
        "extension",
        "overstay (expiresAt -> DELETE acknowledged)",
        &audit,
        extended,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_window_is_scheduled_and_activates_at_not_before() -> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    fx.apply_policy("1h", &[])?;
    // Whole seconds, as a manifest would say it.
    let not_before = DateTime::from_timestamp(Utc::now().timestamp() + 8, 0)
        .ok_or_else(|| anyhow::anyhow!("time out of range"))?;
    let not_after = not_before + TimeDelta::seconds(8);
    let window =
        json!({"window": {"notBefore": rfc3339(not_before), "notAfter": rfc3339(not_after)}});
    w.apply_ok(&fx.reader_grant("later", Some(SA), window))?;

    let g = fx.wait("later", GrantPhase::Scheduled).await?;
    assert_eq!(w.phase_column(NS, "later")?, "Scheduled");
    let msg = message(&g);
    let at: Option<DateTime<Utc>> = msg
        .strip_prefix("activates at ")
        .and_then(|t| t.parse().ok());
    assert_eq!(at, Some(not_before), "{msg}");
    assert_eq!(
        condition(&g, "Ready").map(|c| c.status),
        Some(ConditionStatus::False)
    );

    let g = fx.wait("later", GrantPhase::Active).await?;
    let activated = g
        .status
        .as_ref()
        .and_then(|s| s.activated_at)
        .ok_or_else(|| anyhow::anyhow!("no activatedAt"))?;
    assert!(
        activated >= not_before,
        "activated at {activated}, before {not_before}"
    );
    assert_eq!(expires_at(&g)?, not_after);
    assert_eq!(fx.workload_read(&fx.client_id).await?, Some(200));
    // Nothing was written while the grant waited (checked by arrival, so a slow test runner
    // cannot make this pass or fail by accident).
    let audit = w.audit().await?;
    let puts = ok_calls(&audit, "PUT", "/");
    assert_eq!(puts.len(), 2, "{puts:#?}");
    for e in puts {
        let arrived: DateTime<Utc> = serde_json::from_value(e["time"].clone())?;
        assert!(
            arrived >= not_before,
            "{} written before notBefore",
            e["path"]
        );
        let ms = (acknowledged_at(e)? - not_before).num_milliseconds();
        println!(
            "[window] activation {ms} ms (notBefore -> PUT acknowledged) for {}",
            e["path"]
        );
    }
    w.wait_event(NS, "later", "Scheduled", TIMEOUT).await?;

    fx.wait("later", GrantPhase::Expired).await?;
    let audit = w.audit().await?;
    report_deletes(
        "window",
        "overstay (expiresAt -> DELETE acknowledged)",
        &audit,
        not_after,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_already_past_never_activates_even_when_reapplied() -> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    fx.apply_policy("1h", &[])?;
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0)
        .ok_or_else(|| anyhow::anyhow!("time out of range"))?;
    let window = json!({"window": {
        "notBefore": rfc3339(now - TimeDelta::hours(2)),
        "notAfter": rfc3339(now - TimeDelta::hours(1)),
    }});
    let manifest = fx.reader_grant("old", Some(SA), window);
    for round in 0..2 {
        // A GitOps tool re-creating the object from the same old manifest.
        if round > 0 {
            w.kubectl_ok(&[
                "-n",
                NS,
                "delete",
                "accessgrant",
                "old",
                "--wait",
                "--timeout=45s",
            ])?;
        }
        w.apply_ok(&manifest)?;
        let g = fx.wait("old", GrantPhase::Expired).await?;
        assert_eq!(w.phase_column(NS, "old")?, "Expired");
        let msg = message(&g);
        assert!(msg.contains("never activates"), "{msg}");
        assert!(msg.contains("spec.window.notAfter"), "{msg}");
        let st = g.status.clone().unwrap_or_default();
        assert!(st.activated_at.is_none() && st.expires_at.is_none());
        assert!(st.role_assignments.is_empty() && st.federated_credential.is_none());
    }
    let audit = w.audit().await?;
    let writes: Vec<&Value> = ["PUT", "POST", "PATCH", "DELETE"]
        .iter()
        .flat_map(|m| calls(&audit, m, "/subscriptions/"))
        .collect();
    assert!(
        writes.is_empty(),
        "Azure written for a past window: {writes:#?}"
    );
    assert_eq!(fx.workload_read(&fx.client_id).await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_no_policy_allows_is_denied_naming_the_field_and_the_policy() -> anyhow::Result<()>
{
    let fx = Fx::start().await?;
    let w = &fx.w;
    let check = |name: &'static str, parts: Vec<String>| {
        let fx = &fx;
        async move {
            let g = fx.wait(name, GrantPhase::Denied).await?;
            assert_eq!(fx.w.phase_column(NS, name)?, "Denied");
            let msg = message(&g);
            for p in &parts {
                assert!(msg.contains(p.as_str()), "[{name}] {p:?} not in {msg:?}");
            }
            let c = required_condition(&g, "PolicyAllowed")?;
            assert_eq!(c.status, ConditionStatus::False, "[{name}] {c:?}");
            assert!(msg.contains(&c.message), "[{name}] {c:?}");
            let ev = fx.w.wait_event(NS, name, "Denied", TIMEOUT).await?;
            assert_eq!(ev.type_, "Warning");
            assert!(ev.message.contains(&parts[0]), "[{name}] {ev:?}");
            anyhow::Ok(())
        }
    };

    // No policy at all: default deny.
    w.apply_ok(&fx.reader_grant("no-policy", Some(SA), duration("10m")))?;
    check(
        "no-policy",
        vec![
            "metadata.namespace".into(),
            format!("no AccessPolicy allows grants in namespace \"{NS}\""),
        ],
    )
    .await?;

    fx.apply_policy("1h", &[])?;
    let subscription = format!("/subscriptions/{}", fx.sub);
    w.apply_ok(&grant(
        "wrong-role",
        fx.mi_identity(),
        &[("Contributor", &fx.storage)],
        None,
        duration("10m"),
    ))?;
    w.apply_ok(&grant(
        "wrong-scope",
        fx.mi_identity(),
        &[("Reader", &fx.storage), ("Reader", &subscription)],
        None,
        duration("10m"),
    ))?;
    w.apply_ok(&fx.reader_grant("wrong-sa", Some("report-agent"), duration("10m")))?;
    check(
        "wrong-role",
        vec![
            "spec.roles[0].role".into(),
            "\"Contributor\"".into(),
            "policy payments".into(),
        ],
    )
    .await?;
    check(
        "wrong-scope",
        vec![
            "spec.roles[1].scope".into(),
            subscription.clone(),
            "policy payments".into(),
        ],
    )
    .await?;
    check(
        "wrong-sa",
        vec![
            "spec.federation.serviceAccount".into(),
            "\"report-agent\"".into(),
            "policy payments".into(),
        ],
    )
    .await?;

    // What a user sees first: `kubectl describe` shows the reason and the Event.
    let described = w.kubectl_ok(&["-n", NS, "describe", "accessgrant", "wrong-role"])?;
    for part in ["Denied", "spec.roles[0].role", "policy payments", "Warning"] {
        assert!(described.contains(part), "{part:?} not in:\n{described}");
    }

    // Denied is final: the policy that appeared later does not revive the first grant.
    let g = fx.wait("no-policy", GrantPhase::Denied).await?;
    assert!(g.status.and_then(|s| s.activated_at).is_none());
    let audit = w.audit().await?;
    assert!(
        calls(&audit, "PUT", "/").is_empty(),
        "Azure written for a denied grant"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_policy_revokes_active_grants_at_once() -> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    fx.apply_policy("1h", &[])?;
    let principal = fx.mi_principal().await?;
    fx.activate(
        "nightly",
        &fx.reader_grant("nightly", Some(SA), duration("10m")),
    )
    .await?;
    let token = fx.workload_token(&fx.client_id).await?;

    let deleted_at = Utc::now();
    w.kubectl_ok(&["delete", "accesspolicy", "payments"])?;
    let g = fx.wait("nightly", GrantPhase::Revoked).await?;
    assert_eq!(w.phase_column(NS, "nightly")?, "Revoked");
    assert!(
        message(&g).contains("no AccessPolicy allows the grant any more"),
        "{}",
        message(&g)
    );
    let c = required_condition(&g, "PolicyAllowed")?;
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::False, "PolicyRevoked")
    );
    w.wait_event(NS, "nightly", "PolicyRevoked", TIMEOUT)
        .await?;

    let audit = w.audit().await?;
    assert_eq!(ok_calls(&audit, "DELETE", "/roleAssignments/").len(), 1);
    assert_eq!(
        ok_calls(&audit, "DELETE", "/federatedIdentityCredentials/").len(),
        1
    );
    report_deletes(
        "policy_deleted",
        "revocation (policy delete -> DELETE acknowledged)",
        &audit,
        deleted_at,
    )?;
    assert!(w.assignments_of(&principal).await?.is_empty());
    assert_eq!(w.arm_get(&token, &fx.storage, STORAGE_API).await?, 403);
    assert_eq!(fx.workload_read(&fx.client_id).await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_azure_refuses_fails_the_whole_grant_and_rolls_back_the_rest() -> anyhow::Result<()>
{
    let fx = Fx::start().await?;
    let w = &fx.w;
    let missing_rg = format!("/subscriptions/{}/resourceGroups/no-such-rg", fx.sub);
    fx.apply_policy("1h", &[&missing_rg])?;
    let principal = fx.mi_principal().await?;

    // Azure refuses the key vault assignment for good, once.
    w.azure_fault(json!({
        "method": "PUT",
        "pathPattern": "/vaults/lapse-demo-kv/providers/Microsoft.Authorization/roleAssignments/",
        "action": {"type": "status", "status": 400, "code": "RoleAssignmentLimitExceeded",
                   "message": "No more role assignments can be created."},
        "times": 1,
    }))
    .await?;
    let cases = [
        ("limit", fx.vault.clone(), "RoleAssignmentLimitExceeded"),
        ("no-rg", missing_rg.clone(), "ResourceGroupNotFound"),
    ];
    for (name, second, code) in &cases {
        w.apply_ok(&grant(
            name,
            fx.mi_identity(),
            &[("Reader", &fx.storage), ("Reader", second)],
            Some(SA),
            duration("10m"),
        ))?;
        let g = fx.wait(name, GrantPhase::Failed).await?;
        assert_eq!(w.phase_column(NS, name)?, "Failed");
        let msg = message(&g);
        assert!(msg.contains(code), "[{name}] {code} not in {msg:?}");
        let st = g.status.clone().unwrap_or_default();
        let states: Vec<ObjectState> = st.role_assignments.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            [ObjectState::Deleted, ObjectState::Failed],
            "[{name}]"
        );
        assert_eq!(
            st.federated_credential.map(|f| f.state),
            Some(ObjectState::Deleted)
        );
        let ev = w.wait_event(NS, name, "AzureRefused", TIMEOUT).await?;
        assert_eq!(ev.type_, "Warning");
        assert!(ev.message.contains(code), "[{name}] {ev:?}");
        // Nothing of the grant is left: no assignment of the principal, no object with our marker.
        assert!(w.assignments_of(&principal).await?.is_empty(), "[{name}]");
        assert!(w.owned_objects().await?.is_empty(), "[{name}]");
        assert_eq!(fx.workload_read(&fx.client_id).await?, None);
    }

    // One refused PUT per case, never retried; the storage assignment written and undone twice.
    let audit = w.audit().await?;
    let refused = calls(
        &audit,
        "PUT",
        "/vaults/lapse-demo-kv/providers/Microsoft.Authorization/roleAssignments/",
    );
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["errorCode"], "RoleAssignmentLimitExceeded");
    let missing = calls(
        &audit,
        "PUT",
        "/resourceGroups/no-such-rg/providers/Microsoft.Authorization/roleAssignments/",
    );
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0]["errorCode"], "ResourceGroupNotFound");
    let storage =
        "/storageAccounts/lapsedemodata/providers/Microsoft.Authorization/roleAssignments/";
    assert_eq!(ok_calls(&audit, "PUT", storage).len(), 2);
    assert_eq!(ok_calls(&audit, "DELETE", storage).len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_grants_share_one_assignment_that_goes_with_the_last_lease() -> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    fx.apply_policy("1h", &[])?;
    let principal = fx.mi_principal().await?;
    fx.activate("first", &fx.reader_grant("first", Some(SA), duration("8s")))
        .await?;
    fx.activate(
        "second",
        &fx.reader_grant("second", Some(SA), duration("15s")),
    )
    .await?;
    assert_eq!(w.assignments_of(&principal).await?.len(), 1);
    assert_eq!(w.fics(&fx.mi).await?.len(), 1);

    // The first lease ends; the shared objects stay for the second.
    let first = fx.wait("first", GrantPhase::Expired).await?;
    let second = w.grants(NS).get("second").await?;
    assert_eq!(
        second.status.as_ref().map(|s| s.phase),
        Some(GrantPhase::Active)
    );
    assert_eq!(
        w.assignments_of(&principal).await?.len(),
        1,
        "the shared assignment went with the first lease"
    );
    assert_eq!(w.fics(&fx.mi).await?.len(), 1);
    let st = first.status.clone().unwrap_or_default();
    assert_eq!(
        st.role_assignments.first().map(|r| r.state),
        Some(ObjectState::Released)
    );
    assert_eq!(fx.workload_read(&fx.client_id).await?, Some(200));

    // The second lease ends: now they go.
    let second = fx.wait("second", GrantPhase::Expired).await?;
    assert!(w.assignments_of(&principal).await?.is_empty());
    assert!(w.fics(&fx.mi).await?.is_empty());
    assert_eq!(fx.workload_read(&fx.client_id).await?, None);

    let audit = w.audit().await?;
    assert_eq!(calls(&audit, "PUT", "/roleAssignments/").len(), 1);
    assert_eq!(calls(&audit, "DELETE", "/roleAssignments/").len(), 1);
    assert_eq!(
        calls(&audit, "PUT", "/federatedIdentityCredentials/").len(),
        1
    );
    assert_eq!(
        calls(&audit, "DELETE", "/federatedIdentityCredentials/").len(),
        1
    );
    report_deletes(
        "shared",
        "overstay (second expiresAt -> DELETE acknowledged)",
        &audit,
        expires_at(&second)?,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_assignment_is_used_but_never_touched() -> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    fx.apply_policy("1h", &[])?;
    let principal = fx.mi_principal().await?;

    // Planted by hand with the operator's own rights: a random name and no marker.
    let name = random_guid();
    let standing = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{name}",
        fx.storage
    );
    let (status, v) = w
        .arm_put(
            &standing,
            "2022-04-01",
            &json!({"properties": {
                "roleDefinitionId": w.role_definition_id("Reader").await?,
                "principalId": principal,
                "principalType": "ServicePrincipal",
                "description": "standing access for backups, managed by hand",
            }}),
        )
        .await?;
    assert_eq!(status, 201, "{v}");

    let g = fx
        .activate(
            "nightly",
            &fx.reader_grant("nightly", Some(SA), duration("10s")),
        )
        .await?;
    let c = required_condition(&g, "StandingAccess")?;
    assert_eq!(c.status, ConditionStatus::True, "{c:?}");
    assert!(c.message.to_ascii_lowercase().contains(&name), "{c:?}");
    let st = g.status.clone().unwrap_or_default();
    assert_eq!(
        st.role_assignments.first().map(|r| r.state),
        Some(ObjectState::Standing)
    );
    assert_eq!(fx.workload_read(&fx.client_id).await?, Some(200));

    let ended = fx.wait("nightly", GrantPhase::Expired).await?;
    // The federation was the lease's own: no new token. The standing role stays.
    assert_eq!(fx.workload_read(&fx.client_id).await?, None);
    w.kubectl_ok(&[
        "-n",
        NS,
        "delete",
        "accessgrant",
        "nightly",
        "--wait",
        "--timeout=45s",
    ])?;
    // Let one orphan sweep run after the grant is gone (it lists the subscription's assignments).
    let gone = Utc::now();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let audit = w.audit().await?;
        let swept = calls(
            &audit,
            "GET",
            "/providers/Microsoft.Authorization/roleAssignments",
        )
        .into_iter()
        .any(|e| {
            e["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/roleAssignments"))
                && serde_json::from_value::<DateTime<Utc>>(e["time"].clone())
                    .is_ok_and(|t| t > gone)
        });
        if swept {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no sweep within {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let (status, v) = w.arm_json(&standing, "2022-04-01").await?;
    assert_eq!(status, 200, "the standing assignment is gone: {v}");
    assert_eq!(
        v.pointer("/properties/description").and_then(Value::as_str),
        Some("standing access for backups, managed by hand")
    );
    let audit = w.audit().await?;
    // The only assignment written is the planted one. The operator may have tried its own
    // derived name before its inventory saw the plant; Azure then refused the duplicate.
    let puts = calls(&audit, "PUT", "/roleAssignments/");
    assert_eq!(puts.iter().filter(|e| succeeded(e)).count(), 1, "{puts:#?}");
    assert!(
        puts.iter()
            .filter(|e| !succeeded(e))
            .all(|e| e["errorCode"] == "RoleAssignmentExists"),
        "{puts:#?}"
    );
    assert!(
        calls(&audit, "DELETE", "/roleAssignments/").is_empty(),
        "a role assignment was deleted"
    );
    // The FIC was the lease's own and went with it.
    assert_eq!(
        ok_calls(&audit, "DELETE", "/federatedIdentityCredentials/").len(),
        1
    );
    report_deletes(
        "standing",
        "overstay (expiresAt -> DELETE acknowledged)",
        &audit,
        expires_at(&ended)?,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_gets_a_graph_credential_and_roles_on_its_service_principal()
-> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    let (app, app_id, sp) = w.application("lapse-demo-app").await?;
    w.apply_ok(
        &json!({
            "apiVersion": "lapse.dev/v1alpha1",
            "kind": "AccessPolicy",
            "metadata": {"name": "apps"},
            "spec": {
                "namespaces": [NS],
                "applications": [app],
                "roles": ["Reader"],
                "scopes": [fx.rg],
                "serviceAccounts": ["backup-*"],
                "maxDuration": "1h",
            }
        })
        .to_string(),
    )?;
    assert_eq!(fx.workload_read(&app_id).await?, None);

    let g = fx
        .activate(
            "app",
            &grant(
                "app",
                json!({"application": {"objectId": app}}),
                &[("Reader", &fx.storage)],
                Some(SA),
                duration("10s"),
            ),
        )
        .await?;
    let st = g.status.clone().unwrap_or_default();
    assert_eq!(st.principal_id.as_deref(), Some(sp.as_str()));
    assert_eq!(st.policy.as_deref(), Some("apps"));

    // The FIC lives on the application (Graph), with our marker; the role on its service principal.
    let fics_path = format!("/applications/{app}/federatedIdentityCredentials");
    let (status, v) = w.graph_json(&fics_path).await?;
    assert_eq!(status, 200, "{v}");
    let fics = v["value"].as_array().cloned().unwrap_or_default();
    assert_eq!(fics.len(), 1, "{v}");
    assert_eq!(
        fics[0]["issuer"].as_str(),
        Some(w.sandbox.env("LAPSE_OIDC_ISSUER")?)
    );
    assert_eq!(
        fics[0]["subject"],
        format!("system:serviceaccount:{NS}:{SA}")
    );
    assert!(
        lapse_api::naming::is_owned_by(fics[0]["description"].as_str(), &w.cluster),
        "{}",
        fics[0]
    );
    let ras = w.assignments_of(&sp).await?;
    assert_eq!(ras.len(), 1);
    assert!(
        ras[0]["properties"]["scope"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case(&fx.storage)),
        "{}",
        ras[0]
    );
    assert_eq!(fx.workload_read(&app_id).await?, Some(200));

    let g = fx.wait("app", GrantPhase::Expired).await?;
    let (_, v) = w.graph_json(&fics_path).await?;
    assert_eq!(v["value"].as_array().map(Vec::len), Some(0), "{v}");
    assert!(w.assignments_of(&sp).await?.is_empty());
    assert_eq!(fx.workload_read(&app_id).await?, None);

    let audit = w.audit().await?;
    assert_eq!(ok_calls(&audit, "POST", &fics_path).len(), 1);
    assert_eq!(
        ok_calls(&audit, "DELETE", &format!("{fics_path}/")).len(),
        1
    );
    report_deletes(
        "application",
        "overstay (expiresAt -> DELETE acknowledged)",
        &audit,
        expires_at(&g)?,
    )?;
    Ok(())
}
