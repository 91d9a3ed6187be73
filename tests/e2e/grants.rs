//! Grant lifecycles end to end: how leases end early, stretch, wait, get refused, fail whole,
//! share and stand aside. Real `lapse-sandbox` and `lapse-operator` processes, asserted through
//! kubectl output and through Azure itself (ARM, Graph, the token exchange, the audit log).
//!
//! Every test prints what it measured: activation (apply -> Ready), overstay (expiresAt ->
//! DELETE acknowledged by Azure) or revocation latency (the user's action -> DELETE
//! acknowledged).

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use lapse_api::duration::LeaseDuration;
use lapse_api::v1alpha1::{AccessGrant, ConditionStatus, GrantPhase, ObjectState};
use lapse_e2e::{Capability, Target, World, acknowledged_at, calls, sandbox_only, succeeded};
use serde_json::{Value, json};

/// Waits for the operator, on the sandbox's clock (stretched on other targets).
const TIMEOUT: Duration = Duration::from_secs(45);
const NS: &str = "payments";
/// The workload's ServiceAccount (a Kubernetes name, the same on every target).
const SA: &str = "backup-runner";
/// api-version of the storage account read a workload makes.
const STORAGE_API: &str = "2023-01-01";

/// A target and operator, with namespace `payments` and its ServiceAccounts.
struct Fx {
    w: World,
    sub: String,
    /// Resource ID of the workload's managed identity (the first fixture identity).
    mi: String,
    client_id: String,
    storage: String,
    rg: String,
}

impl Fx {
    async fn start() -> anyhow::Result<Self> {
        let t = Instant::now();
        let w = World::start().await?;
        eprintln!(
            "[setup] target and operator ready in {} ms",
            t.elapsed().as_millis()
        );
        Self::on(w).await
    }

    /// The fixtures on a World started some other way.
    async fn on(w: World) -> anyhow::Result<Self> {
        let sub = w.subscription()?.to_owned();
        let (mi, client_id) = w.identity(w.fixtures.identity()).await?;
        w.namespace_with(NS, &[SA, "report-agent"])?;
        Ok(Self {
            storage: w.fixtures.storage_account_id(),
            rg: w.fixtures.resource_group_id(),
            w,
            sub,
            mi,
            client_id,
        })
    }

    /// A wait for the operator, on the target's clock.
    fn timeout(&self) -> Duration {
        self.w.scaled(TIMEOUT)
    }

    /// kubectl's `--timeout` for a wait on the operator.
    fn kubectl_timeout(&self) -> String {
        format!("--timeout={}s", self.timeout().as_secs())
    }

    /// `secs` seconds on the target's clock.
    fn secs(&self, secs: u64) -> anyhow::Result<TimeDelta> {
        Ok(TimeDelta::from_std(
            self.w.scaled(Duration::from_secs(secs)),
        )?)
    }

    /// A lease of `secs` seconds on the target's clock, as `spec.duration`.
    fn duration(&self, secs: u64) -> Value {
        duration(&self.w.lease(secs))
    }

    /// The `payments` policy: managed identities of the fixture RG, Reader and Storage Blob
    /// Data Reader at or below the RG (plus `extra_scopes`), `backup-*` ServiceAccounts, leases
    /// up to `max_secs` on the target's clock.
    fn apply_policy(&self, max_secs: u64, extra_scopes: &[&str]) -> anyhow::Result<()> {
        self.apply_policy_with(max_secs, extra_scopes, json!({}))
    }

    /// [`Fx::apply_policy`] with more fields of the policy's spec.
    fn apply_policy_with(
        &self,
        max_secs: u64,
        extra_scopes: &[&str],
        more: Value,
    ) -> anyhow::Result<()> {
        let mut scopes = vec![self.rg.clone()];
        scopes.extend(extra_scopes.iter().map(|s| (*s).to_owned()));
        let mut policy = json!({
                "apiVersion": "lapse.dev/v1alpha1",
                "kind": "AccessPolicy",
                "metadata": {"name": "payments"},
                "spec": {
                    "namespaces": [NS],
                    "identities": [format!("{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*", self.rg)],
                    "roles": ["Reader", "Storage Blob Data Reader"],
                    "scopes": scopes,
                    "serviceAccounts": ["backup-*"],
                    "maxDuration": self.w.lease(max_secs),
                }
        });
        if let (Some(spec), Some(more)) = (policy["spec"].as_object_mut(), more.as_object()) {
            spec.extend(more.clone());
        }
        self.w.apply_ok(&policy.to_string())
    }

    /// The workload's identity as Reader of the storage account, federated with `sa`.
    fn reader_grant(&self, name: &str, sa: Option<&str>, lease: Value) -> String {
        grant(
            name,
            self.mi_identity(),
            &[("Reader", &self.storage)],
            sa,
            lease,
        )
    }

    /// The workload's identity as the grant's identity.
    fn mi_identity(&self) -> Value {
        json!({"managedIdentity": self.mi})
    }

    /// The principal (object) ID of the workload's identity, which its role assignments name.
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

    /// Where Azure's request log exists: the role assignment and the FIC were each deleted
    /// exactly once, and how long after `since` Azure acknowledged it (printed).
    async fn deleted_once(
        &self,
        test: &str,
        what: &str,
        since: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        if let Some(audit) = self.w.audit_log().await? {
            assert_eq!(ok_calls(&audit, "DELETE", "/roleAssignments/").len(), 1);
            assert_eq!(
                ok_calls(&audit, "DELETE", "/federatedIdentityCredentials/").len(),
                1
            );
            report_deletes(test, what, &audit, since)?;
        }
        Ok(())
    }

    async fn wait(&self, name: &str, phase: GrantPhase) -> anyhow::Result<AccessGrant> {
        self.w.wait_phase(NS, name, phase, self.timeout()).await
    }

    /// The workload's view of the storage account: `None` when Entra refuses the exchange.
    async fn workload_read(&self, client_id: &str) -> anyhow::Result<Option<u16>> {
        self.w
            .workload_read(NS, SA, client_id, &self.storage, STORAGE_API)
            .await
    }

    /// Asserts the workload's view of the storage account: at once on the sandbox, within the
    /// target's propagation time elsewhere.
    async fn settle_read(
        &self,
        what: &str,
        client_id: &str,
        want: Option<u16>,
    ) -> anyhow::Result<()> {
        self.w
            .settle(what, want, async || self.workload_read(client_id).await)
            .await
    }

    /// A token the workload holds, exchanged once Azure lets it read the storage account with
    /// it (the first exchange and read, on the sandbox).
    async fn workload_token(&self) -> anyhow::Result<String> {
        let mut token = None;
        self.w
            .settle(
                "the workload's token reads the storage account",
                Ok(200),
                async || {
                    let assertion = self.w.service_account_token(NS, SA).await?;
                    Ok(match self.w.exchange(&assertion, &self.client_id).await? {
                        Ok(t) => {
                            let status = self.w.arm_get(&t, &self.storage, STORAGE_API).await?;
                            token = Some(t);
                            Ok(status)
                        }
                        Err(e) => Err(format!("exchange refused: {e}")),
                    })
                },
            )
            .await?;
        token.ok_or_else(|| anyhow::anyhow!("no token"))
    }

    /// Asserts that a token the workload held is refused now (at once on the sandbox).
    async fn settle_refused(&self, token: &str) -> anyhow::Result<()> {
        self.w
            .settle("the held token is refused", 403, async || {
                self.w.arm_get(token, &self.storage, STORAGE_API).await
            })
            .await
    }

    /// Asserts that nothing of the workload identity's leases is left in Azure.
    async fn assert_nothing_left(&self, principal: &str, what: &str) -> anyhow::Result<()> {
        let ras = self.w.assignments_of(principal).await?;
        assert!(ras.is_empty(), "[{what}] role assignments left: {ras:#?}");
        let fics = self.w.fics(&self.mi).await?;
        assert!(fics.is_empty(), "[{what}] FICs left: {fics:#?}");
        Ok(())
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
    fx.apply_policy(3600, &[])?;
    let principal = fx.mi_principal().await?;
    let g = fx
        .activate(
            "nightly",
            &fx.reader_grant("nightly", Some(SA), fx.duration(600)),
        )
        .await?;
    let token = fx.workload_token().await?;

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
    // A token minted through the credential just before its deletion lives out a managed
    // identity's token lifetime (24 h by default): the grant says so (docs/security.md).
    let until = st
        .access_may_continue_until
        .ok_or_else(|| anyhow::anyhow!("no accessMayContinueUntil on a revoked lease"))?;
    let day = chrono::TimeDelta::hours(24);
    assert!(
        until >= ended + day && until <= Utc::now() + day,
        "accessMayContinueUntil {until} not within a token lifetime of the end {ended}"
    );
    assert_eq!(
        condition(&g2, "Ready").map(|c| c.status),
        Some(ConditionStatus::False)
    );
    w.wait_event(NS, "nightly", "Revoked", fx.timeout()).await?;

    // Azure: both objects deleted, nothing of the principal left, the workload refused.
    fx.deleted_once(
        "early_revoke",
        "revocation (patch -> DELETE acknowledged)",
        revoked_at,
    )
    .await?;
    fx.assert_nothing_left(&principal, "early_revoke").await?;
    fx.settle_refused(&token).await?;
    fx.settle_read("the revoked workload's exchange", &fx.client_id, None)
        .await?;

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
    fx.apply_policy(3600, &[])?;
    let principal = fx.mi_principal().await?;
    fx.activate(
        "nightly",
        &fx.reader_grant("nightly", Some(SA), fx.duration(600)),
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
        &fx.kubectl_timeout(),
    ])?;
    let returned = Utc::now();
    // Looked at right after kubectl returned: nothing of the lease is left in Azure.
    fx.assert_nothing_left(&principal, "delete_grant").await?;
    assert!(w.grants(NS).get_opt("nightly").await?.is_none());
    if let Some(audit) = w.audit_log().await? {
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
    }
    fx.settle_read("the deleted grant's exchange", &fx.client_id, None)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_namespace_revokes_its_grants_and_the_namespace_goes() -> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    fx.apply_policy(3600, &[])?;
    let principal = fx.mi_principal().await?;
    fx.activate(
        "nightly",
        &fx.reader_grant("nightly", Some(SA), fx.duration(600)),
    )
    .await?;

    let deleted_at = Utc::now();
    w.kubectl_ok(&["delete", "namespace", NS, "--wait", &fx.kubectl_timeout()])?;
    let out = w.kubectl(&["get", "namespace", NS])?;
    assert!(!out.status.success(), "namespace still there");
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
    fx.assert_nothing_left(&principal, "delete_namespace")
        .await?;
    fx.deleted_once(
        "delete_namespace",
        "revocation (kubectl delete namespace -> DELETE acknowledged)",
        deleted_at,
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_within_policy_moves_the_expiry_and_beyond_it_is_refused() -> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    fx.apply_policy(40, &[])?;
    let principal = fx.mi_principal().await?;
    let g = fx
        .activate(
            "nightly",
            &fx.reader_grant("nightly", None, fx.duration(15)),
        )
        .await?;
    let activated = g
        .status
        .as_ref()
        .and_then(|s| s.activated_at)
        .ok_or_else(|| anyhow::anyhow!("no activatedAt"))?;
    assert_eq!(expires_at(&g)?, activated + fx.secs(15)?);

    // Within policy: the lease now ends 25 s after activation.
    let patch = |secs: u64| json!({"spec": {"duration": w.lease(secs)}}).to_string();
    let out = w.patch_grant(NS, "nightly", &patch(25))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let extended = activated + fx.secs(25)?;
    w.wait_grant(NS, "nightly", fx.timeout(), |g| {
        expires_at(g).ok() == Some(extended)
    })
    .await?;
    let ev = w
        .wait_event(NS, "nightly", "Extended", fx.timeout())
        .await?;
    assert_eq!(ev.type_, "Normal");
    assert!(ev.message.contains("lease extended to"), "{ev:?}");
    // kubectl shows the new expiry too (the EXPIRES column reads this field).
    let shown: DateTime<Utc> = w
        .grant_jsonpath(NS, "nightly", "{.status.expiresAt}")?
        .parse()?;
    assert_eq!(shown, extended);
    assert_eq!(w.phase_column(NS, "nightly")?, "Active");

    // Beyond maxDuration: refused, the recorded lease stands.
    let out = w.patch_grant(NS, "nightly", &patch(120))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g = w
        .wait_grant(NS, "nightly", fx.timeout(), |g| {
            condition(g, "ExtensionDenied").is_some_and(|c| c.status == ConditionStatus::True)
        })
        .await?;
    let c = required_condition(&g, "ExtensionDenied")?;
    assert_eq!(c.reason, "ExceedsMaxDuration");
    // As the operator writes it: "40s" on the sandbox, "20m" at 30 times the clock.
    let max = format!("maxDuration {}", LeaseDuration::parse(&w.lease(40))?);
    for part in ["spec.duration", max.as_str(), "policy payments"] {
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
    let out = w.patch_grant(NS, "nightly", &patch(30))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let extended = activated + fx.secs(30)?;
    let g = w
        .wait_grant(NS, "nightly", fx.timeout(), |g| {
            expires_at(g).ok() == Some(extended)
        })
        .await?;
    assert_eq!(
        condition(&g, "ExtensionDenied").map(|c| c.status),
        Some(ConditionStatus::False)
    );

    let g = fx.wait("nightly", GrantPhase::Expired).await?;
    assert_eq!(expires_at(&g)?, extended);
    assert!(w.assignments_of(&principal).await?.is_empty());
    if let Some(audit) = w.audit_log().await? {
        assert_eq!(calls(&audit, "PUT", "/roleAssignments/").len(), 1);
        assert_eq!(ok_calls(&audit, "DELETE", "/roleAssignments/").len(), 1);
        report_deletes(
            "extension",
            "overstay (expiresAt -> DELETE acknowledged)",
            &audit,
            extended,
        )?;
    }
    Ok(())
}

/// The window opens beyond the operator's wake horizon (2 s here): the activation lane holds no
/// timer for it, and the horizon scan must bring the grant back in time to activate at
/// `notBefore`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_window_is_scheduled_and_activates_at_not_before() -> anyhow::Result<()> {
    let mut w = World::without_operator().await?;
    w.start_operator(&[("LAPSE_WAKE_HORIZON", "2s")]).await?;
    let fx = Fx::on(w).await?;
    let w = &fx.w;
    fx.apply_policy(3600, &[])?;
    let principal = fx.mi_principal().await?;
    // Whole seconds, as a manifest would say it.
    let not_before = DateTime::from_timestamp(Utc::now().timestamp(), 0)
        .ok_or_else(|| anyhow::anyhow!("time out of range"))?
        + fx.secs(8)?;
    let not_after = not_before + fx.secs(8)?;
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
    // Azure while the grant waits: nothing of the lease yet (when looked at before notBefore).
    let ras = w.assignments_of(&principal).await?;
    let fics = w.fics(&fx.mi).await?;
    if Utc::now() < not_before {
        assert!(
            ras.is_empty() && fics.is_empty(),
            "written before notBefore: {ras:#?} {fics:#?}"
        );
    }

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
    // Woken by the horizon scan before notBefore, then held by the lane's own timer to it.
    assert!(
        activated - not_before <= fx.secs(3)?,
        "activated at {activated}, late for {not_before}"
    );
    assert_eq!(expires_at(&g)?, not_after);
    fx.settle_read("the window's workload read", &fx.client_id, Some(200))
        .await?;
    // Nothing was written while the grant waited (checked by arrival, so a slow test runner
    // cannot make this pass or fail by accident).
    if let Some(audit) = w.audit_log().await? {
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
    }
    w.wait_event(NS, "later", "Scheduled", fx.timeout()).await?;

    fx.wait("later", GrantPhase::Expired).await?;
    fx.assert_nothing_left(&principal, "window").await?;
    if let Some(audit) = w.audit_log().await? {
        report_deletes(
            "window",
            "overstay (expiresAt -> DELETE acknowledged)",
            &audit,
            not_after,
        )?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_already_past_never_activates_even_when_reapplied() -> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    fx.apply_policy(3600, &[])?;
    let principal = fx.mi_principal().await?;
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
                &fx.kubectl_timeout(),
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
    if let Some(audit) = w.audit_log().await? {
        let writes: Vec<&Value> = ["PUT", "POST", "PATCH", "DELETE"]
            .iter()
            .flat_map(|m| calls(&audit, m, "/subscriptions/"))
            .collect();
        assert!(
            writes.is_empty(),
            "Azure written for a past window: {writes:#?}"
        );
    }
    fx.assert_nothing_left(&principal, "past_window").await?;
    fx.settle_read("the past window's exchange", &fx.client_id, None)
        .await?;
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
            let ev = fx.w.wait_event(NS, name, "Denied", fx.timeout()).await?;
            assert_eq!(ev.type_, "Warning");
            assert!(ev.message.contains(&parts[0]), "[{name}] {ev:?}");
            anyhow::Ok(())
        }
    };

    // No policy at all: default deny.
    w.apply_ok(&fx.reader_grant("no-policy", Some(SA), fx.duration(600)))?;
    check(
        "no-policy",
        vec![
            "metadata.namespace".into(),
            format!("no AccessPolicy allows grants in namespace \"{NS}\""),
        ],
    )
    .await?;

    fx.apply_policy(3600, &[])?;
    let principal = fx.mi_principal().await?;
    let subscription = format!("/subscriptions/{}", fx.sub);
    w.apply_ok(&grant(
        "wrong-role",
        fx.mi_identity(),
        &[("Contributor", &fx.storage)],
        None,
        fx.duration(600),
    ))?;
    w.apply_ok(&grant(
        "wrong-scope",
        fx.mi_identity(),
        &[("Reader", &fx.storage), ("Reader", &subscription)],
        None,
        fx.duration(600),
    ))?;
    w.apply_ok(&fx.reader_grant("wrong-sa", Some("report-agent"), fx.duration(600)))?;
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
    if let Some(audit) = w.audit_log().await? {
        assert!(
            calls(&audit, "PUT", "/").is_empty(),
            "Azure written for a denied grant"
        );
    }
    fx.assert_nothing_left(&principal, "denied").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_policy_revokes_active_grants_at_once() -> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    fx.apply_policy(3600, &[])?;
    let principal = fx.mi_principal().await?;
    fx.activate(
        "nightly",
        &fx.reader_grant("nightly", Some(SA), fx.duration(600)),
    )
    .await?;
    let token = fx.workload_token().await?;

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
        (c.status, c.reason.as_ref()),
        (ConditionStatus::False, "PolicyRevoked")
    );
    w.wait_event(NS, "nightly", "PolicyRevoked", fx.timeout())
        .await?;

    fx.deleted_once(
        "policy_deleted",
        "revocation (policy delete -> DELETE acknowledged)",
        deleted_at,
    )
    .await?;
    assert!(w.assignments_of(&principal).await?.is_empty());
    assert!(w.fics(&fx.mi).await?.is_empty());
    fx.settle_refused(&token).await?;
    fx.settle_read("the revoked workload's exchange", &fx.client_id, None)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_azure_refuses_fails_the_whole_grant_and_rolls_back_the_rest() -> anyhow::Result<()>
{
    sandbox_only(
        Capability::Faults,
        "Azure must refuse the key vault assignment with RoleAssignmentLimitExceeded, once, \
         and the test counts the refused and rolled-back writes in Azure's request log",
    )?;
    let fx = Fx::start().await?;
    let w = &fx.w;
    let vault = format!(
        "{}/providers/Microsoft.KeyVault/vaults/lapse-demo-kv",
        fx.rg
    );
    let missing_rg = format!("/subscriptions/{}/resourceGroups/no-such-rg", fx.sub);
    fx.apply_policy(3600, &[&missing_rg])?;
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
        ("limit", vault, "RoleAssignmentLimitExceeded"),
        ("no-rg", missing_rg.clone(), "ResourceGroupNotFound"),
    ];
    for (name, second, code) in &cases {
        w.apply_ok(&grant(
            name,
            fx.mi_identity(),
            &[("Reader", &fx.storage), ("Reader", second)],
            Some(SA),
            fx.duration(600),
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
        let ev = w.wait_event(NS, name, "AzureRefused", fx.timeout()).await?;
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
    let storage = format!(
        "/storageAccounts/{}/providers/Microsoft.Authorization/roleAssignments/",
        w.fixtures.storage_account
    );
    assert_eq!(ok_calls(&audit, "PUT", &storage).len(), 2);
    assert_eq!(ok_calls(&audit, "DELETE", &storage).len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_grants_share_one_assignment_that_goes_with_the_last_lease() -> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    fx.apply_policy(3600, &[])?;
    let principal = fx.mi_principal().await?;
    fx.activate("first", &fx.reader_grant("first", Some(SA), fx.duration(8)))
        .await?;
    fx.activate(
        "second",
        &fx.reader_grant("second", Some(SA), fx.duration(15)),
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
    fx.settle_read(
        "the workload's read under the second lease",
        &fx.client_id,
        Some(200),
    )
    .await?;

    // The second lease ends: now they go.
    let second = fx.wait("second", GrantPhase::Expired).await?;
    fx.assert_nothing_left(&principal, "shared").await?;
    fx.settle_read("the exchange after the last lease", &fx.client_id, None)
        .await?;

    if let Some(audit) = w.audit_log().await? {
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
    }
    Ok(())
}

/// What the hand-planted standing assignment says it is.
const STANDING: &str = "standing access for backups, managed by hand";

/// On an external tenant, deletes the planted standing assignment when the test ends, passed or
/// not: it carries no marker, so no sweep ever takes it, and it would give the next tests'
/// workload a role they assert it lacks. (The sandbox simply goes.)
struct PlantedOnTenant<'w> {
    w: &'w World,
    id: String,
}

impl Drop for PlantedOnTenant<'_> {
    fn drop(&mut self) {
        if !matches!(self.w.target, Target::External(_)) {
            return;
        }
        let status = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(self.w.arm_delete(&self.id, "2022-04-01"))
        });
        match status {
            Ok(200 | 204) => {}
            other => eprintln!(
                "cleanup: deleting the standing assignment {}: {other:?}; delete it by hand",
                self.id
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_assignment_is_used_but_never_touched() -> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    fx.apply_policy(3600, &[])?;
    let principal = fx.mi_principal().await?;
    if matches!(w.target, Target::External(_)) {
        // A run that was killed may have left its plant behind.
        for ra in w.assignments_of(&principal).await? {
            if ra
                .pointer("/properties/description")
                .and_then(Value::as_str)
                == Some(STANDING)
                && let Some(id) = ra.get("id").and_then(Value::as_str)
            {
                let status = w.arm_delete(id, "2022-04-01").await?;
                anyhow::ensure!(
                    matches!(status, 200 | 204),
                    "deleting a stale plant {id}: {status}"
                );
            }
        }
    }

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
                "description": STANDING,
            }}),
        )
        .await?;
    let _planted = PlantedOnTenant {
        w,
        id: standing.clone(),
    };
    assert_eq!(status, 201, "{v}");

    let g = fx
        .activate(
            "nightly",
            &fx.reader_grant("nightly", Some(SA), fx.duration(10)),
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
    fx.settle_read(
        "the workload's read through the standing role",
        &fx.client_id,
        Some(200),
    )
    .await?;

    let ended = fx.wait("nightly", GrantPhase::Expired).await?;
    // The federation was the lease's own: no new token. The standing role stays.
    fx.settle_read("the exchange after the lease", &fx.client_id, None)
        .await?;
    w.kubectl_ok(&[
        "-n",
        NS,
        "delete",
        "accessgrant",
        "nightly",
        "--wait",
        &fx.kubectl_timeout(),
    ])?;
    // Let one orphan sweep run after the grant is gone (it lists the subscription's assignments).
    let gone = Utc::now();
    let deadline = Instant::now() + fx.timeout();
    let sweeps_before = w.operator_logs().matches("sweep finished").count();
    loop {
        let swept = match w.audit_log().await? {
            Some(audit) => calls(
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
            }),
            // Without Azure's log: a sweep that finished after the grant was gone, as the
            // operator logs it.
            None => w.operator_logs().matches("sweep finished").count() > sweeps_before,
        };
        if swept {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no sweep within {:?}",
            fx.timeout()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let (status, v) = w.arm_json(&standing, "2022-04-01").await?;
    assert_eq!(status, 200, "the standing assignment is gone: {v}");
    assert_eq!(
        v.pointer("/properties/description").and_then(Value::as_str),
        Some(STANDING)
    );
    // Azure now: the planted assignment is the principal's only one; the lease's FIC is gone.
    let ras = w.assignments_of(&principal).await?;
    assert_eq!(ras.len(), 1, "{ras:#?}");
    assert!(
        ras[0]["id"]
            .as_str()
            .is_some_and(|id| id.eq_ignore_ascii_case(&standing)),
        "{ras:#?}"
    );
    assert!(w.fics(&fx.mi).await?.is_empty());
    if let Some(audit) = w.audit_log().await? {
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
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_gets_a_graph_credential_and_roles_on_its_service_principal()
-> anyhow::Result<()> {
    let fx = Fx::start().await?;
    let w = &fx.w;
    // make e2e-external leaves this test out when the fixture is not set (nextest: skipped).
    let display_name = w.fixtures.application.clone().ok_or_else(|| {
        anyhow::anyhow!("needs an app registration the operator owns: set LAPSE_E2E_APPLICATION")
    })?;
    let (app, app_id, sp) = w.application(&display_name).await?;
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
                "maxDuration": w.lease(3600),
            }
        })
        .to_string(),
    )?;
    fx.settle_read("the application's exchange before the grant", &app_id, None)
        .await?;

    let g = fx
        .activate(
            "app",
            &grant(
                "app",
                json!({"application": {"objectId": app}}),
                &[("Reader", &fx.storage)],
                Some(SA),
                fx.duration(10),
            ),
        )
        .await?;
    let st = g.status.clone().unwrap_or_default();
    assert_eq!(st.principal_id.as_deref(), Some(sp.as_str()));
    assert_eq!(st.policy.as_deref(), Some("apps"));

    // The FIC lives on the application (Graph), with our marker; the role on its service principal.
    let fics_path = format!("/applications/{app}/federatedIdentityCredentials");
    let graph_fics = async || -> anyhow::Result<Vec<Value>> {
        let (status, v) = w.graph_json(&fics_path).await?;
        anyhow::ensure!(status == 200, "GET {fics_path}: {status} {v}");
        Ok(v["value"].as_array().cloned().unwrap_or_default())
    };
    let mut fics = Vec::new();
    w.settle("the application's FICs in Graph", 1, async || {
        fics = graph_fics().await?;
        Ok(fics.len())
    })
    .await?;
    assert_eq!(
        fics[0]["issuer"].as_str(),
        Some(w.env("LAPSE_OIDC_ISSUER")?)
    );
    assert_eq!(
        fics[0]["subject"],
        format!("system:serviceaccount:{NS}:{SA}")
    );
    assert!(
        fics[0]["description"]
            .as_str()
            .and_then(lapse_api::naming::Marker::parse)
            .is_some_and(|m| m.cluster == w.cluster && m.owner.is_some()),
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
    fx.settle_read("the application's workload read", &app_id, Some(200))
        .await?;

    let g = fx.wait("app", GrantPhase::Expired).await?;
    w.settle("the application's FICs after the lease", 0, async || {
        Ok(graph_fics().await?.len())
    })
    .await?;
    assert!(w.assignments_of(&sp).await?.is_empty());
    fx.settle_read("the application's exchange after the lease", &app_id, None)
        .await?;

    if let Some(audit) = w.audit_log().await? {
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
    }
    Ok(())
}

/// `federation.closeEarly`: the federated credential goes one token lifetime (and a margin)
/// before the lease ends, so a token the workload mints at the last moment it still can expires
/// by the lease's end; a lease not longer than a token lifetime is denied naming the setting.
/// Managed identity tokens live 8 s here (Entra's are 24 h).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_federation_early_leaves_no_token_alive_past_the_lease() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "shortens the sandbox's managed identity token lifetime to 8 s",
    )?;
    let sandbox = lapse_e2e::Sandbox::start_with(&["--managed-identity-token-lifetime-secs", "8"])?;
    let mut w = World::on(Target::Sandbox(sandbox)).await?;
    w.start_operator(&[("LAPSE_TOKEN_LIFETIME_MANAGED_IDENTITY", "8s")])
        .await?;
    let fx = Fx::on(w).await?;
    let w = &fx.w;
    fx.apply_policy_with(3600, &[], json!({"federation": {"closeEarly": true}}))?;
    let principal = fx.mi_principal().await?;

    // 8 s of token lifetime and 30 s of margin leave nothing of a 30 s lease.
    w.apply_ok(&fx.reader_grant("short", Some(SA), duration("30s")))?;
    let g = fx.wait("short", GrantPhase::Denied).await?;
    let msg = message(&g);
    assert!(
        msg.contains("federation.closeEarly") && msg.contains("spec.duration"),
        "{msg}"
    );

    let g = fx
        .activate(
            "closing",
            &fx.reader_grant("closing", Some(SA), duration("50s")),
        )
        .await?;
    let expires = expires_at(&g)?;
    // The workload mints tokens for as long as Entra lets it.
    let mut last = None;
    let deadline = Instant::now() + fx.timeout();
    loop {
        let assertion = w.service_account_token(NS, SA).await?;
        match w.exchange(&assertion, &fx.client_id).await? {
            Ok(token) => last = Some((Utc::now(), token)),
            Err(_) if last.is_some() => break,
            Err(e) => anyhow::bail!("the first exchange was refused: {e}"),
        }
        anyhow::ensure!(Instant::now() < deadline, "the credential was never closed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (minted, token) = last.ok_or_else(|| anyhow::anyhow!("no token"))?;
    let exp = lapse_e2e::jwt_claims(&token)?["exp"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no exp in the token"))?;
    println!(
        "[close_early] last token minted {} ms before the lease's end, valid until {} s before it",
        (expires - minted).num_milliseconds(),
        expires.timestamp() - exp
    );
    assert!(
        exp <= expires.timestamp(),
        "a token minted at {minted} is valid until {exp}, after the lease's end {expires}"
    );
    // The lease runs on with its role assignment; the credential is gone, with an Event.
    let g = fx.wait("closing", GrantPhase::Active).await?;
    let st = g.status.clone().unwrap_or_default();
    assert_eq!(
        st.federated_credential.as_ref().map(|f| f.state),
        Some(ObjectState::Deleted)
    );
    w.wait_event(NS, "closing", "FederationClosed", fx.timeout())
        .await?;
    assert!(w.fics(&fx.mi).await?.is_empty());
    let g = fx.wait("closing", GrantPhase::Expired).await?;
    // No token outlives the lease: only ARM's cache is left in the bound.
    let st = g.status.clone().unwrap_or_default();
    let until = st
        .access_may_continue_until
        .ok_or_else(|| anyhow::anyhow!("no accessMayContinueUntil"))?;
    assert!(
        until <= Utc::now() + TimeDelta::minutes(30),
        "accessMayContinueUntil {until} counts a token lifetime"
    );
    fx.assert_nothing_left(&principal, "close_early").await?;
    Ok(())
}

/// DESIGN §12 "Azure-enforced expiry": under `azure.expiry: PIM` the role assignment is made
/// through a PIM schedule request with an end Azure keeps; with the operator SIGKILLed and kept
/// down, Azure (the simulator's own clock) removes it at expiresAt + grace and the workload's
/// read fails; the simulator's log shows its own removal, none by lapse. A revoke within PIM's
/// minimum waits for it and says why. The sandbox's PIM minimum is 10 s here (Azure's is 5
/// minutes), and the operator is told the same.
#[tokio::test]
async fn under_pim_azure_ends_the_access_even_with_the_operator_dead() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "shortens the sandbox's PIM minimum to 10 s and kills the operator",
    )?;
    let sandbox = lapse_e2e::Sandbox::start_with(&["--pim-minimum-secs", "10"])?;
    let mut w = World::on(Target::Sandbox(sandbox)).await?;
    let pim_env = [("LAPSE_PIM_GRACE", "5s"), ("LAPSE_PIM_MINIMUM", "10s")];
    w.start_operator(&pim_env).await?;
    let mut fx = Fx::on(w).await?;
    fx.apply_policy_with(3600, &[], json!({"azure": {"expiry": "PIM"}}))?;

    // Shorter than PIM's minimum: denied naming it, nothing requested.
    fx.w.apply_ok(&fx.reader_grant("tiny", Some(SA), duration("8s")))?;
    let g = fx.wait("tiny", GrantPhase::Denied).await?;
    assert!(message(&g).contains("azure.expiry: PIM"), "{}", message(&g));

    let g = fx
        .activate("pim", &fx.reader_grant("pim", Some(SA), duration("20s")))
        .await?;
    let expires = expires_at(&g)?;
    let st = g.status.clone().unwrap_or_default();
    let schedule = st.role_assignments[0]
        .schedule
        .ok_or_else(|| anyhow::anyhow!("no PIM schedule recorded: {st:?}"))?;
    assert_eq!(schedule.ends_at, expires + TimeDelta::seconds(5));
    assert_eq!(fx.workload_read(&fx.client_id).await?, Some(200));

    // The operator dies and stays dead; Azure alone ends the access.
    let killed_at = Utc::now();
    let dead = fx.w.kill_operator();
    anyhow::ensure!(dead.is_some(), "no operator was running");
    let deadline = Instant::now() + fx.timeout();
    let ended = loop {
        if fx.workload_read(&fx.client_id).await? != Some(200) {
            break Utc::now();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the access outlived the PIM schedule"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "[pim] operator killed {} ms before the lease's end; Azure ended the access {} ms after \
         expiresAt ({} ms after expiresAt + grace)",
        (expires - killed_at).num_milliseconds(),
        (ended - expires).num_milliseconds(),
        (ended - schedule.ends_at).num_milliseconds()
    );
    assert!(
        ended >= schedule.ends_at,
        "the access ended at {ended}, before Azure's end {}",
        schedule.ends_at
    );
    if let Some(audit) = fx.w.audit_log().await? {
        let expiry: Vec<_> = audit
            .iter()
            .filter(|e| e["origin"] == "pim-expiry")
            .collect();
        assert_eq!(
            expiry.len(),
            1,
            "one removal by Azure's own clock: {expiry:?}"
        );
        let by_lapse_after_kill = audit
            .iter()
            .filter(|e| e["origin"].is_null() && e["method"] != "GET")
            .filter(|e| {
                e["time"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t.to_utc() > killed_at)
            })
            .filter(|e| {
                let p = e["path"].as_str().unwrap_or_default();
                p.contains("roleAssignment")
            })
            .count();
        assert_eq!(
            by_lapse_after_kill, 0,
            "a role assignment write after the kill"
        );
    }

    // Back up: the lease ends Expired, the credential goes, nothing is left.
    fx.w.start_operator(&pim_env).await?;
    fx.wait("pim", GrantPhase::Expired).await?;
    let principal = fx.mi_principal().await?;
    fx.assert_nothing_left(&principal, "pim").await?;

    // A revoke in the first 10 s (PIM's minimum here) waits for it, says why, then completes.
    let g = fx
        .activate(
            "early",
            &fx.reader_grant("early", Some(SA), duration("60s")),
        )
        .await?;
    let starts = g.status.clone().unwrap_or_default().role_assignments[0]
        .schedule
        .ok_or_else(|| anyhow::anyhow!("no PIM schedule recorded"))?
        .starts_at;
    fx.w.patch_grant(NS, "early", r#"{"spec":{"revoked":true}}"#)?;
    fx.w.wait_event(NS, "early", "PimMinimumActive", fx.timeout())
        .await?;
    fx.wait("early", GrantPhase::Revoked).await?;
    let ended = Utc::now();
    let removable = starts + TimeDelta::seconds(10);
    println!(
        "[pim] early revoke removed {} ms after PIM's minimum allowed it",
        (ended - removable).num_milliseconds()
    );
    assert!(ended >= removable, "removed at {ended}, before {removable}");
    // lapse waited instead of asking early: Azure never had to refuse a removal.
    if let Some(audit) = fx.w.audit_log().await? {
        let refused = audit
            .iter()
            .filter(|e| e["errorCode"] == "ActiveDurationTooShort")
            .count();
        assert_eq!(refused, 0, "lapse asked PIM to remove before its minimum");
    }
    fx.assert_nothing_left(&principal, "pim-early").await?;
    Ok(())
}

/// The roles the usage policy allows: Contributor and the narrower Storage Account Contributor
/// (for `RightSize`), Reader, and User Access Administrator (to hand access on).
const USAGE_ROLES: [&str; 4] = [
    "Reader",
    "Contributor",
    "Storage Account Contributor",
    "User Access Administrator",
];

/// Usage evidence end to end (docs/usage.md): Azure's logs, two seconds late, tell what each
/// lease was used for; a sensitive action revokes; a token minted through a deleted
/// credential while Entra still honours it, and an operation with no lease, are found.
#[tokio::test]
async fn what_each_lease_was_used_for_is_read_from_azures_own_logs() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "delays sim-azure's logs, keeps deleted FICs working for a while and consents the \
         operator to AuditLog.Read.All",
    )?;
    const DELAY_SECS: i64 = 2;
    let mut w = World::without_operator().await?;
    w.azure_admin(
        reqwest::Method::PUT,
        "/admin/logs",
        Some(json!({"ingestionDelaySecs": DELAY_SECS})),
    )
    .await?;
    w.azure_admin(
        reqwest::Method::PUT,
        "/admin/delays",
        Some(json!({"ficDeletePropagationDelayMs": 60_000})),
    )
    .await?;
    w.azure_admin(
        reqwest::Method::POST,
        "/admin/principals/lapse-operator/graphRoles",
        Some(json!({"role": "AuditLog.Read.All"})),
    )
    .await?;
    w.start_operator(&[
        ("LAPSE_USAGE_ACTIVITY_LOG", "true"),
        ("LAPSE_USAGE_SIGN_INS", "true"),
        ("LAPSE_USAGE_POLL_INTERVAL", "1s"),
        ("LAPSE_USAGE_REREAD", "4s"),
        ("LAPSE_PROPAGATION_BOUND", "2s"),
    ])
    .await?;
    let fx = Fx::on(w).await?;
    fx.apply_policy_with(
        3600,
        &[],
        json!({
            "roles": USAGE_ROLES,
            "serviceAccounts": ["*"],
            "watch": {"onSensitiveAction": "Revoke"},
        }),
    )?;
    let vault = format!(
        "{}/providers/Microsoft.KeyVault/vaults/lapse-demo-kv",
        fx.rg
    );
    let runner = fx.mi_principal().await?;
    let agent_name =
        fx.w.fixtures
            .second_identity()
            .ok_or_else(|| anyhow::anyhow!("the sandbox has a second identity"))?
            .to_owned();
    let (agent_mi, agent_client) = fx.w.identity(&agent_name).await?;

    // A standing path lapse does not know of: Contributor on the vault, made by hand.
    let contributor = fx.w.role_definition_id("Contributor").await?;
    let (status, body) = fx
        .w
        .arm_put(
            &format!(
                "{vault}/providers/Microsoft.Authorization/roleAssignments/{}",
                random_guid()
            ),
            "2022-04-01",
            &json!({"properties": {"roleDefinitionId": contributor, "principalId": runner, "principalType": "ServicePrincipal"}}),
        )
        .await?;
    assert_eq!(status, 201, "{body}");

    // A federated lease the workload uses: a token, one write at its scope (and one at the
    // vault, through the standing path).
    fx.activate(
        "used",
        &grant(
            "used",
            fx.mi_identity(),
            &[("Contributor", &fx.storage)],
            Some(SA),
            duration("16s"),
        ),
    )
    .await?;
    // A lease nobody uses.
    fx.activate(
        "idle",
        &grant(
            "idle",
            json!({"managedIdentity": agent_mi}),
            &[("Reader", &fx.storage)],
            None,
            duration("6s"),
        ),
    )
    .await?;
    let token = fx.workload_token().await?;
    let (status, body) =
        fx.w.arm_put_as(
            &token,
            &format!("{}/blobServices/default/containers/reports", fx.storage),
            STORAGE_API,
            &json!({}),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let (status, body) =
        fx.w.arm_put_as(
            &token,
            &format!("{vault}/secrets/exported"),
            "2023-07-01",
            &json!({"properties": {"value": "x"}}),
        )
        .await?;
    assert_eq!(status, 201, "{body}");

    // status.usage counts the token and the operation at the lease's scope.
    let deadline = Instant::now() + fx.timeout();
    let usage = loop {
        let g = fx.w.grants(NS).get("used").await?;
        let u = g.status.and_then(|s| s.usage).unwrap_or_default();
        if u.tokens >= 1 && u.operations >= 1 {
            break u;
        }
        anyhow::ensure!(Instant::now() < deadline, "usage never counted: {u:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        usage.operations, 1,
        "only the write at its scope: {usage:?}"
    );
    assert_eq!(
        usage.actions[0].action,
        "microsoft.storage/storageaccounts/blobservices/containers/write"
    );
    let g = fx.w.grants(NS).get("used").await?;
    assert_eq!(
        condition(&g, "Used").map(|c| (c.status, c.reason.to_string())),
        Some((ConditionStatus::True, "UsageLogged".to_owned()))
    );
    // The vault write had no lease: a standing path, reported on the policy.
    eventually(&fx, "UseWithoutLease is counted", async || {
        Ok(fx
            .w
            .metrics()
            .await?
            .contains("lapse_usage_findings_total{kind=\"UseWithoutLease\"}"))
    })
    .await?;
    let policy_events = fx.w.kubectl_ok(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        "involvedObject.kind=AccessPolicy,reason=UseWithoutLease",
        "-o",
        "jsonpath={.items[*].message}",
    ])?;
    assert!(
        policy_events.contains(&runner) && policy_events.contains("lapse-demo-kv"),
        "{policy_events}"
    );

    // A workload hands another principal access: revoked, both principals named.
    fx.activate(
        "escalate",
        &grant(
            "escalate",
            json!({"managedIdentity": agent_mi}),
            &[("User Access Administrator", &fx.storage)],
            Some("report-agent"),
            duration("60s"),
        ),
    )
    .await?;
    let assertion = fx.w.service_account_token(NS, "report-agent").await?;
    let agent_token =
        fx.w.exchange(&assertion, &agent_client)
            .await?
            .map_err(|e| anyhow::anyhow!("exchange refused: {e}"))?;
    let reader = fx.w.role_definition_id("Reader").await?;
    let (status, body) = fx
        .w
        .arm_put_as(
            &agent_token,
            &format!(
                "{}/providers/Microsoft.Authorization/roleAssignments/{}",
                fx.storage,
                random_guid()
            ),
            "2022-04-01",
            &json!({"properties": {"roleDefinitionId": reader, "principalId": runner, "principalType": "ServicePrincipal"}}),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let written = Utc::now();
    let g = fx.wait("escalate", GrantPhase::Revoked).await?;
    let st = g.status.clone().unwrap_or_default();
    let findings = st.usage.clone().unwrap_or_default().findings;
    let chain = findings
        .iter()
        .find(|f| f.kind == "PrivilegeChain")
        .ok_or_else(|| anyhow::anyhow!("no PrivilegeChain: {findings:?}"))?;
    let agent_principal = st.principal_id.clone().unwrap_or_default();
    assert!(
        chain.message.contains(&runner) && chain.message.contains(&agent_principal),
        "{}",
        chain.message
    );
    assert!(findings.iter().any(|f| f.kind == "SensitiveAction"));
    if let Some(audit) = fx.w.audit_log().await? {
        let visible = written + TimeDelta::seconds(DELAY_SECS);
        let ids = lapse_e2e::recorded_ids(&g);
        let deleted = ok_calls(&audit, "DELETE", "/roleAssignments/")
            .into_iter()
            .filter(|e| {
                let path = e["path"].as_str().unwrap_or_default().to_ascii_lowercase();
                ids.iter()
                    .any(|id| path.starts_with(&id.to_ascii_lowercase()))
            })
            .filter_map(|e| acknowledged_at(e).ok())
            .min();
        if let Some(d) = deleted {
            println!(
                "[usage] the sensitive write became visible in the log {DELAY_SECS} s after it \
                 was made; the lease's role assignment was deleted {} ms after that",
                (d - visible).num_milliseconds()
            );
        }
    }

    // The unused lease ends with UnusedGrant once the logs are read past its end.
    eventually(&fx, "idle is concluded unused", async || {
        let g = fx.w.grants(NS).get("idle").await?;
        Ok(condition(&g, "Used").is_some_and(|c| c.reason == "UnusedGrant"))
    })
    .await?;
    assert!(
        fx.w.events(NS, "idle")?
            .iter()
            .any(|e| e.reason == "UnusedGrant")
    );

    // After "used" ends, Entra still honours its deleted credential for a while: a token
    // minted through it is use after the end.
    let ended = fx.wait("used", GrantPhase::Expired).await?;
    // Sign-ins are logged to the second: a token in the second after the deletion's.
    let deleted = ended
        .status
        .and_then(|s| s.ended_at)
        .ok_or_else(|| anyhow::anyhow!("no endedAt"))?;
    let wait = (deleted + TimeDelta::milliseconds(1100) - Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    let assertion = fx.w.service_account_token(NS, SA).await?;
    let late = fx.w.exchange(&assertion, &fx.client_id).await?;
    assert!(late.is_ok(), "the deleted FIC still propagating: {late:?}");
    eventually(&fx, "UseAfterEnd and RightSize on used", async || {
        let g = fx.w.grants(NS).get("used").await?;
        let f = g.status.and_then(|s| s.usage).unwrap_or_default().findings;
        Ok(f.iter().any(|f| f.kind == "UseAfterEnd")
            && f.iter().any(|f| {
                f.kind == "RightSize" && f.message.contains("Storage Account Contributor")
            }))
    })
    .await?;

    // `kubectl lapse audit` reports every kind, from the grants and the operator's ledger.
    let dir = &fx.w.target.sandbox()?.dir;
    let env = lapse_e2e::parse_env_file(&std::fs::read_to_string(dir.join("auditor.env"))?);
    let out = std::process::Command::new(lapse_e2e::binary("kubectl-lapse")?)
        .args(["audit", "-o", "json", "--operator-namespace", "kube-system"])
        .env_remove("AZURE_FEDERATED_TOKEN_FILE")
        .envs(&env)
        .env("KUBECONFIG", fx.w.kubeconfig())
        .stdin(std::process::Stdio::null())
        .output()?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("{e}: {}", String::from_utf8_lossy(&out.stderr)))?;
    let kinds: std::collections::BTreeSet<&str> = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    for kind in [
        "UseAfterEnd",
        "UseWithoutLease",
        "SensitiveAction",
        "PrivilegeChain",
        "UnusedGrant",
        "RightSize",
    ] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
    Ok(())
}

/// Polls `check` until it holds, within the operator timeout.
async fn eventually(
    fx: &Fx,
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + fx.timeout();
    while !check().await? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "waited {:?} for {what}",
            fx.timeout()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}
