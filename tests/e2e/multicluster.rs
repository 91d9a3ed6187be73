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
use lapse_e2e::{Capability, Operator, World, calls, sandbox_only, succeeded, tail};
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

/// When an object was absent while it should have been there: the gap's start and length.
#[derive(Debug, Default)]
struct Gap {
    since: Option<Instant>,
    total: Duration,
    closed: bool,
}

impl Gap {
    fn sample(&mut self, present: bool) {
        match (present, self.since) {
            (false, None) => self.since = Some(Instant::now()),
            (true, Some(s)) => {
                self.total += s.elapsed();
                self.since = None;
                self.closed = true;
            }
            _ => {}
        }
    }

    fn report(&self) -> String {
        match self.since {
            Some(s) => format!(
                "still open after {} ms",
                (self.total + s.elapsed()).as_millis()
            ),
            None if self.closed => format!("{} ms", self.total.as_millis()),
            None => "0 ms (never absent)".into(),
        }
    }

    fn length(&self) -> Duration {
        self.total + self.since.map_or(Duration::ZERO, |s| s.elapsed())
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

    let east_op = EAST.start(&w).await?;
    let west_op = WEST.start(&w).await?;
    let logs = || {
        format!(
            "--- east ---\n{}\n--- west ---\n{}",
            tail(&east_op.logs(), 40),
            tail(&west_op.logs(), 40)
        )
    };

    w.apply_ok(&EAST.grant(&w, &mi, &storage, 12))?;
    let east_grant = wait_active(&w, EAST.apps)
        .await
        .map_err(|e| e.context(logs()))?;
    w.apply_ok(&WEST.grant(&w, &mi, &storage, 32))?;
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

    // Sample the tuple and west's federation until both are back, or west's lease is over.
    let (mut ra_gap, mut fic_gap) = (Gap::default(), Gap::default());
    let mut east_gone = false;
    while Utc::now() + chrono::TimeDelta::seconds(2) < west_ends {
        let assignments = w.assignments_of(&principal.to_string()).await?;
        let holders: Vec<String> = assignments
            .iter()
            .filter(|ra| {
                ra.pointer("/properties/scope")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.eq_ignore_ascii_case(&storage))
                    && ra
                        .pointer("/properties/roleDefinitionId")
                        .and_then(Value::as_str)
                        .is_some_and(|d| d.to_ascii_lowercase().ends_with(READER))
            })
            .filter_map(|ra| ra["name"].as_str().map(str::to_ascii_lowercase))
            .collect();
        east_gone |= !holders.contains(&names.east_ra);
        ra_gap.sample(!holders.is_empty());
        let federated = w
            .exchange(
                &w.service_account_token(WEST.apps, SA).await?,
                &west_client_id,
            )
            .await?
            .is_ok();
        fic_gap.sample(federated);
        if east_gone && ra_gap.since.is_none() && fic_gap.since.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "[multicluster] role assignment gap after east's lease ended (east ends {east_ends}): {}",
        ra_gap.report()
    );
    println!(
        "[multicluster] federation gap after north's credential went ({north_deleted}): {}",
        fic_gap.report()
    );
    assert!(east_gone, "east never deleted its assignment\n{}", logs());
    assert!(
        ra_gap.since.is_none() && ra_gap.length() < GAP_BOUND,
        "west did not put its own role assignment in place within {GAP_BOUND:?}: {}\n{}",
        ra_gap.report(),
        logs()
    );
    assert!(
        fic_gap.since.is_none() && fic_gap.length() < GAP_BOUND,
        "west did not put its own federated credential in place within {GAP_BOUND:?}: {}\n{}",
        fic_gap.report(),
        logs()
    );
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
