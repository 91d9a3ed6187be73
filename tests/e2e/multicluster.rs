//! Many clusters, one tenant (docs/architecture.md, "Scaling past one cluster and one
//! subscription"): operators of different clusters grant the same identity the same role at the
//! same scope, and federate the same identity. Azure keeps one role assignment per (principal,
//! role, scope) and one federated credential per (identity, issuer, subject), so the later
//! cluster finds the earlier one's object and uses it as standing access. Neither may ever
//! delete the other's object, each one's sweep leaves the other's alone, and when the earlier
//! lease ends while the later one is live, the later cluster puts its own object in place: the
//! gap in between is measured and printed, and only a generous, lease-independent bound is
//! asserted.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lapse_api::arm::ArmId;
use lapse_api::naming::Owner;
use lapse_api::v1alpha1::{AccessGrant, GrantPhase, ObjectState};
use lapse_e2e::{
    Capability, Operator, World, acknowledged_at, calls, sandbox_only, succeeded, tail,
};
use serde_json::{Value, json};
use uuid::Uuid;

const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
const SA: &str = "runner";
const SHARD: &str = "apps";
const TIMEOUT: Duration = Duration::from_secs(30);
/// A generous bound on the gap, independent of any lease's length: what the test asserts. The
/// measured gap is printed.
const GAP_BOUND: Duration = Duration::from_secs(30);

/// One simulated cluster: its operator's settings and the namespace its grants live in.
struct Cluster {
    name: &'static str,
    id: &'static str,
    apps: &'static str,
    system: &'static str,
}

const EAST: Cluster = Cluster {
    name: "east",
    id: "0e0e0e0e-1111-4222-8333-444444444444",
    apps: "east-apps",
    system: "east-system",
};
const WEST: Cluster = Cluster {
    name: "west",
    id: "7a7a7a7a-5555-4666-8777-888888888888",
    apps: "west-apps",
    system: "west-system",
};

impl Cluster {
    fn owner(&self) -> anyhow::Result<Owner> {
        Ok(Owner::new(self.name, self.id, Some(SHARD))?)
    }

    /// The operator of this cluster: its own name, ID, namespaces and leader namespace, on the
    /// one sandbox tenant.
    async fn start(&self, w: &World) -> anyhow::Result<Operator> {
        w.kubectl_ok(&["create", "namespace", self.system])?;
        w.namespace_with(self.apps, &[SA])?;
        let mut op = Operator::start(
            &w.target,
            self.name,
            self.system,
            &[
                ("LAPSE_CLUSTER_ID", self.id),
                ("LAPSE_NAMESPACES", self.apps),
                ("LAPSE_SHARD", SHARD),
                ("LAPSE_SWEEP_INTERVAL", "2s"),
            ],
        )?;
        op.wait_ready(&w.http).await?;
        Ok(op)
    }

    fn grant(&self, w: &World, mi: &str, storage: &str, secs: u64) -> String {
        json!({
            "apiVersion": "lapse.dev/v1alpha1",
            "kind": "AccessGrant",
            "metadata": {"name": "shared", "namespace": self.apps},
            "spec": {
                "identity": {"managedIdentity": mi},
                "roles": [{"role": "Reader", "scope": storage}],
                "federation": {"serviceAccount": SA},
                "duration": w.lease(secs),
                "justification": "OPS-15 many clusters",
            },
        })
        .to_string()
    }

    fn subject(&self) -> String {
        format!("system:serviceaccount:{}:{SA}", self.apps)
    }
}

/// East grants first (short lease), west the same tuples later (long lease). The role
/// assignment overlap is exact: same principal, role and scope. A federated credential's tuple
/// is (identity, issuer, subject) and the subject names the namespace; two clusters share it only
/// when they share an issuer *and* a namespace name. Two operators of one API server cannot
/// both watch one namespace without both acting on the same grants, so here each cluster
/// federates its own namespace on the same identity with the sandbox's one issuer (each finds
/// the other's credential on the identity and must leave it alone), and the overlapping
/// credential of west's tuple is written by a third cluster, `north`, exactly as its operator
/// would name it, and deleted at its "lease end" while west's lease is live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_sharing_a_tuple_never_delete_each_other_and_access_survives()
-> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "runs two operators posing as two clusters and reads Azure's request log",
    )?;
    let t0 = Instant::now();
    let w = World::without_operator().await?;
    let (mi, west_client_id) = w.identity(w.fixtures.identity()).await?;
    let storage = w.fixtures.storage_account_id();
    let rg = w.fixtures.resource_group_id();
    let issuer = w.env("LAPSE_OIDC_ISSUER")?.to_owned();
    let (status, v) = w.arm_json(&mi, "2023-01-31").await?;
    anyhow::ensure!(status == 200, "GET {mi}: {status} {v}");
    let principal = Uuid::try_parse(v["properties"]["principalId"].as_str().unwrap_or_default())?;
    let reader = Uuid::try_parse(READER)?;
    let scope = ArmId::parse(&storage)?;
    let mi_key = ArmId::parse(&mi)?.key().to_owned();
    let (east, west) = (EAST.owner()?, WEST.owner()?);
    let north = Owner::new("north", "9c9c9c9c-aaaa-4bbb-8ccc-dddddddddddd", None)?;
    let names = Names {
        east_ra: east
            .role_assignment_name(&principal, &reader, &scope)
            .to_string(),
        west_ra: west
            .role_assignment_name(&principal, &reader, &scope)
            .to_string(),
        east_fic: east.fic_name(&mi_key, &EAST.subject()),
        west_fic: west.fic_name(&mi_key, &WEST.subject()),
        north_fic: north.fic_name(&mi_key, &WEST.subject()),
    };

    w.apply_ok(
        &json!({
            "apiVersion": "lapse.dev/v1alpha1",
            "kind": "AccessPolicy",
            "metadata": {"name": "both-clusters"},
            "spec": {
                "namespaces": [EAST.apps, WEST.apps],
                "identities": [format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*")],
                "roles": ["Reader"],
                "scopes": [rg],
                "serviceAccounts": [SA],
                "maxDuration": w.lease(3600),
            },
        })
        .to_string(),
    )?;
    // North's credential for west's tuple, as north's operator would have made it.
    let north_id = format!("{mi}/federatedIdentityCredentials/{}", names.north_fic);
    let (status, v) = w
        .arm_put(
            &north_id,
            "2023-01-31",
            &json!({"properties": {
                "issuer": issuer,
                "subject": WEST.subject(),
                "audiences": ["api://AzureADTokenExchange"],
            }}),
        )
        .await?;
    anyhow::ensure!(
        matches!(status, 200 | 201),
        "planting north's FIC: {status} {v}"
    );

    println!("[multicluster] sandbox up after {:?}", t0.elapsed());
    let east_op = EAST.start(&w).await?;
    let west_op = WEST.start(&w).await?;
    let logs = || {
        format!(
            "--- east ---\n{}\n--- west ---\n{}",
            tail(&east_op.logs(), 40),
            tail(&west_op.logs(), 40)
        )
    };

    println!(
        "[multicluster] both operators ready after {:?}",
        t0.elapsed()
    );
    w.apply_ok(&EAST.grant(&w, &mi, &storage, 8))?;
    let east_grant = wait_active(&w, EAST.apps)
        .await
        .map_err(|e| e.context(logs()))?;
    w.apply_ok(&WEST.grant(&w, &mi, &storage, 20))?;
    let west_grant = wait_active(&w, WEST.apps)
        .await
        .map_err(|e| e.context(logs()))?;
    let east_ends = expires_at(&east_grant)?;
    let west_ends = expires_at(&west_grant)?;
    let west_status = west_grant.status.clone().unwrap_or_default();
    // West found east's assignment and north's credential: it uses them, it does not own them.
    assert_eq!(
        west_status.role_assignments.first().map(|r| r.state),
        Some(ObjectState::Standing),
        "{west_status:?}"
    );
    assert_eq!(
        west_status.federated_credential.as_ref().map(|f| f.state),
        Some(ObjectState::Standing),
        "{west_status:?}"
    );

    // North's lease ends while west's is live; so, a few seconds on, does east's.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = w.arm_delete(&north_id, "2023-01-31").await?;
    anyhow::ensure!(
        matches!(status, 200 | 204),
        "deleting north's FIC: {status}"
    );
    let north_deleted = Utc::now();
    println!("[multicluster] north's credential deleted at {north_deleted}");

    // Wait for east's end and west's own objects in place, while west's lease runs.
    let deadline = west_ends.min(east_ends + chrono::TimeDelta::from_std(GAP_BOUND)?);
    loop {
        let names_held: Vec<String> = w
            .assignments_of(&principal.to_string())
            .await?
            .iter()
            .filter_map(|ra| ra["name"].as_str().map(str::to_ascii_lowercase))
            .collect();
        let west_fics: Vec<String> = w
            .fics(&mi)
            .await?
            .iter()
            .filter_map(|f| f["name"].as_str().map(str::to_owned))
            .collect();
        if !names_held.contains(&names.east_ra)
            && names_held.contains(&names.west_ra)
            && west_fics.contains(&names.west_fic)
        {
            break;
        }
        anyhow::ensure!(
            Utc::now() < deadline,
            "west did not put its own objects in place within {GAP_BOUND:?} of east's end \
             (assignments {names_held:?}, credentials {west_fics:?})\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The gaps as Azure saw them: from the acknowledged DELETE of the holder's object to the
    // acknowledged PUT of west's own.
    let audit = w.audit().await?;
    let ra_gap = handover(&audit, &names.east_ra, &names.west_ra)?;
    let fic_gap = handover(&audit, &names.north_fic, &names.west_fic)?;
    println!(
        "[multicluster] role assignment: {} ms with no assignment for the tuple between east's \
         DELETE and west's PUT (east's lease ended {east_ends})",
        ra_gap.num_milliseconds()
    );
    println!(
        "[multicluster] federation: {} ms with no credential for west's subject between \
         north's DELETE and west's PUT",
        fic_gap.num_milliseconds()
    );
    for (what, gap) in [("role assignment", ra_gap), ("credential", fic_gap)] {
        assert!(
            gap.to_std().is_ok_and(|g| g < GAP_BOUND),
            "{what}: {gap:?}\n{}",
            logs()
        );
    }
    let west_now = wait_active(&w, WEST.apps).await?;
    let st = west_now.status.clone().unwrap_or_default();
    assert_eq!(
        st.role_assignments.first().map(|r| r.state),
        Some(ObjectState::Present),
        "{st:?}"
    );
    assert_eq!(
        st.federated_credential.as_ref().map(|f| f.state),
        Some(ObjectState::Present),
        "{st:?}"
    );
    // The workload reads with its lease while east's is over.
    assert_eq!(
        w.workload_read(WEST.apps, SA, &west_client_id, &storage, "2023-01-01")
            .await?,
        Some(200)
    );

    // West's lease ends: west removes its own objects, nothing else.
    w.wait_phase(WEST.apps, "shared", GrantPhase::Expired, TIMEOUT)
        .await
        .map_err(|e| e.context(logs()))?;
    let deadline = Instant::now() + TIMEOUT;
    while !w.assignments_of(&principal.to_string()).await?.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "west's assignment outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few more sweeps of both, with nothing left to share.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let audit = w.audit().await?;
    names.check_deletes(&audit, east_ends, west_ends, north_deleted)?;
    for (who, op) in [("east", &east_op), ("west", &west_op)] {
        let sweeps = op.logs().matches("sweep finished").count();
        assert!(sweeps >= 3, "{who} swept {sweeps} times");
    }
    drop(east_op);
    drop(west_op);
    Ok(())
}

/// The names each owner derives for the shared tuples.
struct Names {
    east_ra: String,
    west_ra: String,
    east_fic: String,
    west_fic: String,
    north_fic: String,
}

impl Names {
    /// Every DELETE Azure saw aimed at a name its owner's lease had ended for: east's after
    /// east's end, west's after west's, north's once (by this test), nothing else.
    fn check_deletes(
        &self,
        audit: &[Value],
        east_ends: DateTime<Utc>,
        west_ends: DateTime<Utc>,
        north_deleted: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let deletes: Vec<(String, DateTime<Utc>)> = calls(audit, "DELETE", "/")
            .into_iter()
            .filter(|e| succeeded(e))
            .filter_map(|e| {
                let path = e["path"].as_str()?;
                let name = path.rsplit('/').next()?.to_ascii_lowercase();
                let at = serde_json::from_value(e["time"].clone()).ok()?;
                Some((name, at))
            })
            .collect();
        let ended = |name: &str| -> Option<DateTime<Utc>> {
            if name == self.east_ra || name == self.east_fic {
                Some(east_ends)
            } else if name == self.west_ra || name == self.west_fic {
                Some(west_ends)
            } else if name == self.north_fic {
                Some(north_deleted - chrono::TimeDelta::seconds(5))
            } else {
                None
            }
        };
        for (name, at) in &deletes {
            match ended(name) {
                Some(end) => anyhow::ensure!(
                    *at >= end,
                    "{name} was deleted at {at}, before its owner's lease ended at {end}"
                ),
                None => anyhow::bail!("a DELETE of {name}, which neither cluster derives"),
            }
        }
        let count = |n: &str| deletes.iter().filter(|(d, _)| d == n).count();
        anyhow::ensure!(count(&self.north_fic) == 1, "north's FIC: {deletes:?}");
        for own in [&self.east_ra, &self.east_fic, &self.west_ra, &self.west_fic] {
            anyhow::ensure!(count(own) >= 1, "{own} was never deleted: {deletes:?}");
        }
        Ok(())
    }
}

/// From Azure's acknowledgement of the first DELETE of `gone` to that of the first PUT that
/// created `created` after it.
fn handover(audit: &[Value], gone: &str, created: &str) -> anyhow::Result<chrono::TimeDelta> {
    let named = |e: &&Value, name: &str| {
        e["path"]
            .as_str()
            .is_some_and(|p| p.to_ascii_lowercase().ends_with(&format!("/{name}")))
    };
    let deleted = calls(audit, "DELETE", "/")
        .into_iter()
        .find(|e| succeeded(e) && named(e, gone))
        .ok_or_else(|| anyhow::anyhow!("no DELETE of {gone} in Azure's log"))?;
    let put = calls(audit, "PUT", "/")
        .into_iter()
        .find(|e| e["status"] == 201 && named(e, created))
        .ok_or_else(|| anyhow::anyhow!("no PUT creating {created} in Azure's log"))?;
    Ok(acknowledged_at(put)? - acknowledged_at(deleted)?)
}

async fn wait_active(w: &World, ns: &str) -> anyhow::Result<AccessGrant> {
    w.wait_phase(ns, "shared", GrantPhase::Active, TIMEOUT)
        .await
}

fn expires_at(g: &AccessGrant) -> anyhow::Result<DateTime<Utc>> {
    g.status
        .as_ref()
        .and_then(|s| s.expires_at)
        .ok_or_else(|| anyhow::anyhow!("no expiry recorded: {g:?}"))
}
