//! lapse is not a way around itself (docs/security.md): what a tenant can write never widens
//! access, lengthens a lease or aims a delete at an object lapse did not create; federation
//! never hands over privileged standing access; one namespace's failures never delay another's
//! revocation; and operators that share a cluster name never touch each other's objects.
//!
//! Each test plays the attack of one class against the real operator and asserts through Azure
//! itself what is (and is not) there afterwards.

use std::time::{Duration, Instant};

use lapse_api::v1alpha1::{AccessGrant, ConditionStatus, GrantPhase};
use lapse_e2e::{Capability, World, acknowledged_at, calls, sandbox_only, succeeded};
use serde_json::{Value, json};

const NS: &str = "payments";
const SA: &str = "backup-runner";
const TIMEOUT: Duration = Duration::from_secs(45);

struct Fx {
    w: World,
    mi: String,
    rg: String,
    storage: String,
}

impl Fx {
    async fn start(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut w = World::without_operator().await?;
        w.start_operator(env).await?;
        let (mi, _) = w.identity(w.fixtures.identity()).await?;
        w.namespace_with(NS, &[SA])?;
        Ok(Self {
            rg: w.fixtures.resource_group_id(),
            storage: w.fixtures.storage_account_id(),
            w,
            mi,
        })
    }

    fn policy(&self, name: &str, namespaces: &[&str], extra: Value) -> anyhow::Result<()> {
        let mut spec = json!({
            "namespaces": namespaces,
            "identities": [format!("{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*", self.rg)],
            "servicePrincipals": ["*"],
            "roles": ["Reader", "Storage Blob Data Reader"],
            "scopes": [self.rg],
            "serviceAccounts": ["backup-*"],
            "maxDuration": self.w.lease(3600),
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        self.w.apply_ok(
            &json!({
                "apiVersion": "lapse.dev/v1alpha1",
                "kind": "AccessPolicy",
                "metadata": {"name": name},
                "spec": spec,
            })
            .to_string(),
        )
    }

    fn grant(&self, ns: &str, name: &str, identity: Value, federate: bool, secs: u64) -> String {
        let mut spec = json!({
            "identity": identity,
            "roles": [{"role": "Reader", "scope": self.storage}],
            "duration": self.w.lease(secs),
            "justification": "OPS-10 security e2e",
        });
        if federate {
            spec["federation"] = json!({"serviceAccount": SA});
        }
        json!({
            "apiVersion": "lapse.dev/v1alpha1",
            "kind": "AccessGrant",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        })
        .to_string()
    }

    async fn wait(&self, ns: &str, name: &str, phase: GrantPhase) -> anyhow::Result<AccessGrant> {
        self.w
            .wait_phase(ns, name, phase, self.w.scaled(TIMEOUT))
            .await
    }

    async fn principal_of(&self, identity: &str) -> anyhow::Result<String> {
        let (status, v) = self.w.arm_json(identity, "2023-01-31").await?;
        anyhow::ensure!(status == 200, "GET {identity}: {status} {v}");
        Ok(v["properties"]["principalId"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// A role assignment made by hand (a random name, no marker): standing access lapse did
    /// not create. Returns its ID.
    async fn plant(&self, scope: &str, role: &str, principal: &str) -> anyhow::Result<String> {
        let id = format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
            random_guid()
        );
        let (status, v) = self
            .w
            .arm_put(
                &id,
                "2022-04-01",
                &json!({"properties": {
                    "roleDefinitionId": self.w.role_definition_id(role).await?,
                    "principalId": principal,
                    "principalType": "ServicePrincipal",
                    "description": "standing access made by hand",
                }}),
            )
            .await?;
        anyhow::ensure!(status == 201, "planting {role}: {status} {v}");
        Ok(id)
    }

    async fn exists(&self, id: &str) -> anyhow::Result<bool> {
        Ok(self.w.arm_json(id, "2022-04-01").await?.0 == 200)
    }
}

fn random_guid() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let h = format!("{:032x}", n ^ (u128::from(std::process::id()) << 64));
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn condition<'a>(g: &'a AccessGrant, type_: &str) -> Option<&'a lapse_api::v1alpha1::Condition> {
    g.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Hole 1: a status written by someone else. The tenant points the lease at another principal,
/// moves its start and end years out, aims its delete at a standing assignment lapse did not
/// create and renames its FIC. Nothing of it is believed: no assignment for the other
/// principal, the standing one survives, the real FIC is deleted, the lease is over for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_status_ends_the_lease_and_is_believed_in_nothing() -> anyhow::Result<()> {
    let fx = Fx::start(&[]).await?;
    let w = &fx.w;
    fx.policy("payments", &[NS], json!({}))?;
    let (other_mi, _) = w.identity(&w.fixtures.identities[1]).await?;
    let other = fx.principal_of(&other_mi).await?;
    let standing = fx.plant(&fx.rg, "Reader", &other).await?;
    w.apply_ok(&fx.grant(NS, "forged", json!({"managedIdentity": fx.mi}), true, 3600))?;
    let before = fx.wait(NS, "forged", GrantPhase::Active).await?;
    let st = before.status.clone().unwrap_or_default();
    assert!(st.seal.is_some(), "the operator seals what it writes");
    let real_fic = st
        .federated_credential
        .as_ref()
        .and_then(|f| f.id.clone())
        .unwrap_or_default();
    assert_eq!(w.fics(&fx.mi).await?.len(), 1, "the lease's FIC exists");

    let forged = json!({"status": {
        "principalId": other,
        "activatedAt": "2031-01-01T00:00:00Z",
        "expiresAt": "2032-01-01T00:00:00Z",
        "roleAssignments": [{
            "role": "Reader", "scope": fx.rg, "state": "Present", "id": standing,
            "roleDefinitionId": w.role_definition_id("Reader").await?,
        }],
        "federatedCredential": {
            "name": "someone-elses-credential", "issuer": st.federated_credential.as_ref().map(|f| f.issuer.clone()),
            "subject": "system:serviceaccount:payments:backup-runner", "state": "Present",
            "id": real_fic.replace(&st.federated_credential.as_ref().map(|f| f.name.clone()).unwrap_or_default(), "someone-elses-credential"),
        },
    }});
    let out = w.kubectl(&[
        "-n",
        NS,
        "patch",
        "accessgrant",
        "forged",
        "--subresource=status",
        "--type=merge",
        "-p",
        &forged.to_string(),
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tampered_at = Instant::now();

    let g = fx.wait(NS, "forged", GrantPhase::Revoked).await?;
    println!(
        "[forged] lease ended {} ms after the forged status",
        tampered_at.elapsed().as_millis()
    );
    let c = condition(&g, "Tampered").expect("a Tampered condition");
    assert_eq!(c.status, ConditionStatus::True, "{c:?}");
    assert!(
        g.spec.revoked,
        "spec.revoked is set so no replay brings it back"
    );
    let st = g.status.clone().unwrap_or_default();
    assert_ne!(st.principal_id.as_deref(), Some(other.as_str()));
    let forged_end: chrono::DateTime<chrono::Utc> = "2030-01-01T00:00:00Z".parse()?;
    assert!(st.expires_at.is_none_or(|e| e < forged_end), "{st:?}");
    // Azure: the standing assignment is untouched, the other principal got nothing new, the
    // lease's own objects are gone.
    assert!(
        fx.exists(&standing).await?,
        "the standing assignment was deleted"
    );
    let others = w.assignments_of(&other).await?;
    assert_eq!(others.len(), 1, "{others:#?}");
    let principal = fx.principal_of(&fx.mi).await?;
    w.settle("the lease's objects are gone", (0, 0), async || {
        Ok((
            w.assignments_of(&principal).await?.len(),
            w.fics(&fx.mi).await?.len(),
        ))
    })
    .await?;
    let events = w.events(NS, "forged")?;
    assert!(
        events
            .iter()
            .any(|e| e.reason == "StatusTampered" && e.type_ == "Warning"),
        "{events:?}"
    );
    let m = w.metrics().await?;
    assert!(metric(&m, "lapse_status_tampered_total") >= 1.0, "{m}");
    let logs = w.operator_logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("lapse::audit") && l.contains("StatusTampered")),
        "no audit line:\n{logs}"
    );
    // A replayed status (the one sealed while Active) cannot bring the lease back either.
    let replay = json!({"status": before.status});
    w.kubectl_ok(&[
        "-n",
        NS,
        "patch",
        "accessgrant",
        "forged",
        "--subresource=status",
        "--type=merge",
        "-p",
        &replay.to_string(),
    ])?;
    tokio::time::sleep(w.scaled(Duration::from_secs(3))).await;
    assert!(w.assignments_of(&principal).await?.is_empty());
    let _ = w.arm_delete(&standing, "2022-04-01").await?;
    Ok(())
}

/// Hole 1, the other way round: the status removed mid-lease. The grant is derived again, with
/// the lease it had (anchored on its creation), and without a second PUT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_status_gives_back_only_the_same_lease() -> anyhow::Result<()> {
    let fx = Fx::start(&[]).await?;
    let w = &fx.w;
    fx.policy("payments", &[NS], json!({}))?;
    w.apply_ok(&fx.grant(NS, "wiped", json!({"managedIdentity": fx.mi}), true, 3600))?;
    let g = fx.wait(NS, "wiped", GrantPhase::Active).await?;
    let expires = g.status.as_ref().and_then(|s| s.expires_at);
    w.kubectl_ok(&[
        "-n",
        NS,
        "patch",
        "accessgrant",
        "wiped",
        "--subresource=status",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/status"}]"#,
    ])?;
    let again = w
        .wait_grant(NS, "wiped", w.scaled(TIMEOUT), |g| {
            g.status
                .as_ref()
                .is_some_and(|s| s.phase == GrantPhase::Active && s.seal.is_some())
        })
        .await?;
    assert_eq!(again.status.as_ref().and_then(|s| s.expires_at), expires);
    if let Some(audit) = w.audit_log().await? {
        let puts: Vec<&Value> = calls(&audit, "PUT", "/roleAssignments/")
            .into_iter()
            .filter(|e| succeeded(e))
            .collect();
        assert_eq!(puts.len(), 1, "one PUT per object: {puts:#?}");
    }
    Ok(())
}

/// Hole 2: federation hands over everything the identity holds. An identity with standing
/// Owner is not federated unless a policy opts in; lapse's own identity is never granted to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_and_own_identities_are_refused() -> anyhow::Result<()> {
    let fx = Fx::start(&[]).await?;
    let w = &fx.w;
    fx.policy("payments", &[NS], json!({}))?;
    let (mi2, _) = w.identity(&w.fixtures.identities[1]).await?;
    let principal = fx.principal_of(&mi2).await?;
    let owner = fx.plant(&fx.rg, "Owner", &principal).await?;

    w.apply_ok(&fx.grant(NS, "privileged", json!({"managedIdentity": mi2}), true, 600))?;
    let g = fx.wait(NS, "privileged", GrantPhase::Denied).await?;
    let msg = g
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert!(
        msg.contains("spec.federation: the identity holds privileged standing access")
            && msg
                .to_ascii_lowercase()
                .contains(&owner.to_ascii_lowercase()),
        "{msg}"
    );
    assert!(w.fics(&mi2).await?.is_empty(), "nothing was federated");
    // Without federation the same identity may borrow Reader (nothing is handed over).
    w.apply_ok(&fx.grant(NS, "plain", json!({"managedIdentity": mi2}), false, 600))?;
    fx.wait(NS, "plain", GrantPhase::Active).await?;
    // A policy that opts in allows the federation.
    fx.policy(
        "payments",
        &[NS],
        json!({"allowPrivilegedIdentities": true}),
    )?;
    w.apply_ok(&fx.grant(NS, "opted-in", json!({"managedIdentity": mi2}), true, 600))?;
    fx.wait(NS, "opted-in", GrantPhase::Active).await?;

    // lapse-operator's own service principal, by object ID.
    let token = w.operator_token().await?;
    let claims = lapse_e2e::jwt_claims(&token)?;
    let own = claims["oid"].as_str().unwrap_or_default().to_owned();
    w.apply_ok(&fx.grant(
        NS,
        "self",
        json!({"servicePrincipal": {"objectId": own}}),
        false,
        600,
    ))?;
    let g = fx.wait(NS, "self", GrantPhase::Denied).await?;
    let msg = g
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("lapse-operator's own identity"), "{msg}");
    let _ = w.arm_delete(&owner, "2022-04-01").await?;
    Ok(())
}

/// Hole 3: a noisy neighbour. One namespace fills the activation lane with grants whose role
/// assignment PUTs take seconds and fail; another namespace's lease still ends on time, its
/// revocation in a lane of its own, and its new grant still gets a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_namespace_never_delays_another_namespace_s_revocation() -> anyhow::Result<()> {
    sandbox_only(
        Capability::Faults,
        "slows and fails one namespace's role assignment writes through sim-azure",
    )?;
    let fx = Fx::start(&[("LAPSE_CONCURRENCY", "4"), ("LAPSE_RETRY_AFTER", "1s")]).await?;
    let w = &fx.w;
    w.namespace_with("noisy", &[SA])?;
    w.namespace_with("quiet", &[SA])?;
    fx.policy("both", &["noisy", "quiet"], json!({}))?;
    // Every role assignment write at the storage account takes 3 s and then fails.
    for action in [
        json!({"type": "latency", "millis": 3000}),
        json!({"type": "status", "status": 500, "code": "InternalServerError", "message": "injected"}),
    ] {
        w.azure_fault(json!({
            "method": "PUT",
            "pathPattern": "storageAccounts/[^/]+/providers/Microsoft.Authorization/roleAssignments/",
            "action": action,
        }))
        .await?;
    }
    for i in 0..12 {
        w.apply_ok(&fx.grant(
            "noisy",
            &format!("noisy-{i}"),
            json!({"servicePrincipal": {"objectId": format!("00000000-0000-4000-8000-{i:012}")}}),
            false,
            3600,
        ))?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The quiet namespace's grant is at the resource group, which nothing slows.
    let quiet = json!({
        "apiVersion": "lapse.dev/v1alpha1", "kind": "AccessGrant",
        "metadata": {"name": "quiet", "namespace": "quiet"},
        "spec": {
            "identity": {"managedIdentity": fx.mi},
            "roles": [{"role": "Reader", "scope": fx.rg}],
            "duration": w.lease(6),
            "justification": "OPS-10 quiet",
        }
    });
    let applied = Instant::now();
    w.apply_ok(&quiet.to_string())?;
    let g = fx.wait("quiet", "quiet", GrantPhase::Active).await?;
    println!(
        "[noisy] the quiet namespace activated in {} ms beside the noise",
        applied.elapsed().as_millis()
    );
    let expires = g
        .status
        .as_ref()
        .and_then(|s| s.expires_at)
        .ok_or_else(|| anyhow::anyhow!("no expiry"))?;
    fx.wait("quiet", "quiet", GrantPhase::Expired).await?;
    let audit = w.audit_log().await?.unwrap_or_default();
    let principal = fx.principal_of(&fx.mi).await?;
    let delete = calls(&audit, "DELETE", "/roleAssignments/")
        .into_iter()
        .find(|e| {
            succeeded(e)
                && !e["path"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("storageAccounts")
        })
        .ok_or_else(|| anyhow::anyhow!("no DELETE of the quiet lease's assignment"))?;
    let overstay = (acknowledged_at(delete)? - expires).num_milliseconds();
    println!("[noisy] the quiet lease's overstay beside the noise: {overstay} ms");
    assert!(
        overstay <= 3000,
        "the quiet revocation waited {overstay} ms behind the noise"
    );
    assert!(w.assignments_of(&principal).await?.is_empty());
    let m = w.metrics().await?;
    assert!(
        metric(&m, "lapse_fair_share_waits_total") >= 1.0,
        "the noise was held to its share:\n{m}"
    );
    w.clear_azure_faults().await?;
    Ok(())
}

/// Hole 3, the gauge: an overdue revocation is counted from the lease end, even while its DELETE
/// has not even answered yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overdue_gauge_counts_from_the_lease_end_whatever_holds_it() -> anyhow::Result<()> {
    sandbox_only(Capability::Faults, "holds a DELETE in sim-azure for 20 s")?;
    let fx = Fx::start(&[("LAPSE_OVERDUE_AFTER", "2s")]).await?;
    let w = &fx.w;
    fx.policy("payments", &[NS], json!({}))?;
    w.azure_fault(json!({
        "method": "DELETE",
        "pathPattern": "/roleAssignments/",
        "action": {"type": "latency", "millis": 20000},
        "times": 1,
    }))
    .await?;
    w.apply_ok(&fx.grant(NS, "slow-end", json!({"managedIdentity": fx.mi}), false, 4))?;
    fx.wait(NS, "slow-end", GrantPhase::Active).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = w.metrics().await?;
        if metric(&m, "lapse_revocations_overdue") >= 1.0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "never counted overdue:\n{m}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    fx.wait(NS, "slow-end", GrantPhase::Expired).await?;
    // The gauge falls once the operator has seen its own Expired write, a moment after the
    // API server (and so this test) did.
    w.wait_metrics(
        Duration::from_secs(15),
        "the overdue gauge back at 0 after the revocation",
        |m| metric(m, "lapse_revocations_overdue") == 0.0,
    )
    .await?;
    Ok(())
}

/// Hole 4: operators that share a cluster name. A twin (another cluster's operator, same
/// LAPSE_CLUSTER_NAME) and a second shard of this cluster sweep every 2 s beside the first
/// operator: neither deletes its live objects, the twin reports them, and an object deleted
/// behind a lease's back is repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_named_operators_never_sweep_each_other() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "runs two more operators, one posing as another cluster",
    )?;
    let fx = Fx::start(&[("LAPSE_SWEEP_INTERVAL", "2s")]).await?;
    let w = &fx.w;
    fx.policy("payments", &[NS], json!({}))?;
    w.apply_ok(&fx.grant(NS, "victim", json!({"managedIdentity": fx.mi}), true, 3600))?;
    fx.wait(NS, "victim", GrantPhase::Active).await?;
    let principal = fx.principal_of(&fx.mi).await?;
    let before = w.owned_objects().await?;
    assert_eq!(before.len(), 2, "{before:?}");

    w.kubectl_ok(&["create", "namespace", "twin-system"])?;
    w.kubectl_ok(&["create", "namespace", "shard-b-ns"])?;
    let mut twin = w.spawn_operator(&[
        ("LAPSE_CLUSTER_ID", "11111111-2222-4333-8444-555555555555"),
        ("LAPSE_NAMESPACES", "twin-ns"),
        ("LAPSE_SHARD", "elsewhere"),
        ("POD_NAMESPACE", "twin-system"),
        ("LAPSE_SWEEP_INTERVAL", "2s"),
    ])?;
    twin.wait_ready(&w.http).await?;
    let mut shard = w.spawn_operator(&[
        ("LAPSE_NAMESPACES", "shard-b-ns"),
        ("LAPSE_SHARD", "b"),
        ("LAPSE_SWEEP_INTERVAL", "2s"),
    ])?;
    shard.wait_ready(&w.http).await?;
    // Several sweeps of both.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        w.owned_objects().await?,
        before,
        "another operator deleted the victim's objects"
    );
    let g = fx.wait(NS, "victim", GrantPhase::Active).await?;
    assert!(g.status.is_some());
    let twin_metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", twin.metrics_port))
        .await?
        .text()
        .await?;
    assert!(
        metric(&twin_metrics, "lapse_twin_objects") >= 1.0,
        "{twin_metrics}"
    );
    assert!(twin.logs().contains("TwinObjects"), "{}", twin.logs());

    // An object of the live lease deleted behind its back comes back within a sweep.
    let ra = w
        .assignments_of(&principal)
        .await?
        .first()
        .and_then(|r| r["id"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow::anyhow!("no assignment"))?;
    assert_eq!(w.arm_delete(&ra, "2022-04-01").await?, 200);
    let repaired = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.assignments_of(&principal).await?.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "never repaired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "[twins] repaired {} ms after the out-of-band delete",
        repaired.elapsed().as_millis()
    );
    drop(twin);
    drop(shard);
    Ok(())
}

/// Hole 5: the smaller ones, each refused with its field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smaller_holes_are_closed() -> anyhow::Result<()> {
    let fx = Fx::start(&[]).await?;
    let w = &fx.w;
    // An empty namespaceSelector is refused at apply time.
    let everything = json!({
        "apiVersion": "lapse.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": "everything"},
        "spec": {"namespaceSelector": {}, "servicePrincipals": ["*"], "roles": ["Reader"],
                 "scopes": [fx.rg], "maxDuration": "1h"},
    });
    let out = w.apply(&everything.to_string())?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("an empty selector matches every namespace"),
        "{err}"
    );

    fx.policy("payments", &[NS], json!({"maxActiveGrants": 1}))?;
    // Another audience than the policy's is refused.
    let mut g: Value = serde_json::from_str(&fx.grant(
        NS,
        "audience",
        json!({"managedIdentity": fx.mi}),
        true,
        600,
    ))?;
    g["spec"]["federation"]["audience"] = json!("https://kubernetes.default.svc");
    w.apply_ok(&g.to_string())?;
    let denied = fx.wait(NS, "audience", GrantPhase::Denied).await?;
    let msg = denied.status.and_then(|s| s.message).unwrap_or_default();
    assert!(msg.contains("spec.federation.audience"), "{msg}");
    // A role written by name and by GUID at one scope is one duplicate.
    let dup = json!({
        "apiVersion": "lapse.dev/v1alpha1", "kind": "AccessGrant",
        "metadata": {"name": "dup", "namespace": NS},
        "spec": {"identity": {"managedIdentity": fx.mi}, "duration": "10m", "justification": "x",
                 "roles": [{"role": "Reader", "scope": fx.storage},
                           {"role": "acdd72a7-3385-48ef-bd42-f606fba81ae7", "scope": fx.storage.to_uppercase().replace("SUBSCRIPTIONS", "subscriptions")}]},
    });
    w.apply_ok(&dup.to_string())?;
    let denied = fx.wait(NS, "dup", GrantPhase::Denied).await?;
    let msg = denied.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        msg.contains("spec.roles[1]: duplicates spec.roles[0]"),
        "{msg}"
    );
    // The quota: one live grant, the second is refused.
    w.apply_ok(&fx.grant(NS, "first", json!({"managedIdentity": fx.mi}), false, 600))?;
    fx.wait(NS, "first", GrantPhase::Active).await?;
    w.apply_ok(&fx.grant(
        NS,
        "second",
        json!({"servicePrincipal": {"objectId": "00000000-0000-4000-8000-000000000077"}}),
        false,
        600,
    ))?;
    let denied = fx.wait(NS, "second", GrantPhase::Denied).await?;
    let msg = denied.status.and_then(|s| s.message).unwrap_or_default();
    assert!(msg.contains("maxActiveGrants 1"), "{msg}");
    // A namespace no policy covers learns of no policy and costs no Azure look-up.
    w.namespace_with("elsewhere", &[SA])?;
    let audit_before = w.audit_log().await?.map(|a| a.len());
    w.apply_ok(&fx.grant(
        "elsewhere",
        "stray",
        json!({"managedIdentity": fx.mi}),
        false,
        600,
    ))?;
    let denied = fx.wait("elsewhere", "stray", GrantPhase::Denied).await?;
    let msg = denied.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        msg.contains("no AccessPolicy allows grants in namespace \"elsewhere\""),
        "{msg}"
    );
    assert!(
        !msg.contains("payments"),
        "a policy of another namespace was named: {msg}"
    );
    if let (Some(before), Some(after)) = (audit_before, w.audit_log().await?) {
        let looked: Vec<&Value> = after[before..]
            .iter()
            .filter(|e| e.to_string().contains("userAssignedIdentities/") && e["method"] == "GET")
            .collect();
        assert!(
            looked.is_empty(),
            "an uncovered grant cost Azure look-ups: {looked:#?}"
        );
    }
    // An invalid policy says so in its status; so does one naming a role Azure does not know.
    for (name, extra, said) in [
        (
            "broken",
            json!({"roles": ["Reader"], "justificationPattern": "(["}),
            "InvalidRule spec.justificationPattern",
        ),
        (
            "gardener",
            json!({"roles": ["Reader", "Blob Gardener"]}),
            "UnknownRole spec.roles[1]: \"Blob Gardener\" is not a role definition Azure knows",
        ),
    ] {
        let mut spec = json!({"namespaces": ["x"], "servicePrincipals": ["*"],
                              "scopes": [fx.rg], "maxDuration": "1h"});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        w.apply_ok(
            &json!({
                "apiVersion": "lapse.dev/v1alpha1", "kind": "AccessPolicy",
                "metadata": {"name": name}, "spec": spec,
            })
            .to_string(),
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = w.kubectl_ok(&[
                "get",
                "accesspolicy",
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].reason} {.status.conditions[?(@.type==\"Ready\")].message}",
            ])?;
            if ready.starts_with("False") {
                let (reason, field) = said.split_once(' ').unwrap_or((said, ""));
                assert!(ready.contains(reason) && ready.contains(field), "{ready}");
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "policy {name} status never said {said}: {ready}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let grants = w.kubectl_ok(&[
            "get",
            "accesspolicy",
            "payments",
            "-o",
            "jsonpath={.status.grants}",
        ])?;
        if grants.trim() == "1" {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "policy status grants: {grants:?}, want 1"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}
