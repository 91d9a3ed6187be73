//! What the audit reads in the cluster (its I/O): the cluster's identity (the `kube-system`
//! namespace UID, as the operator takes it), every AccessGrant's record of its lease and Azure
//! objects, the AccessPolicies and the namespaces' labels. Each read the caller may not make
//! leaves that part unknown, and the audit says what it could then not check.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use lapse_api::v1alpha1::{AccessGrant, AccessPolicy, ObjectState};

use super::findings::{Cluster, GrantRecord, RecordedObject};
use crate::check;
use crate::cli::{AuditArgs, Global};
use crate::client::{Kube, is_forbidden, is_not_found};

/// A grant's status as the audit judges it.
pub fn record(g: &AccessGrant) -> GrantRecord {
    let st = g.status.clone().unwrap_or_default();
    let lease_end = match (st.ended_at, st.expires_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut objects: Vec<RecordedObject> = st
        .role_assignments
        .iter()
        .map(|r| RecordedObject {
            id: r.id.clone(),
            fic_name: None,
            standing: r.state == ObjectState::Standing,
        })
        .collect();
    if let Some(f) = &st.federated_credential {
        objects.push(RecordedObject {
            id: f.id.clone(),
            fic_name: Some(f.name.clone()),
            standing: f.state == ObjectState::Standing,
        });
    }
    GrantRecord {
        namespace: g.metadata.namespace.clone().unwrap_or_default(),
        name: g.metadata.name.clone().unwrap_or_default(),
        phase: st.phase.as_str().to_owned(),
        terminal: st.phase.is_terminal(),
        lease_end,
        objects,
    }
}

/// The cluster as far as it can be read; `Err` with why when no kubeconfig is usable or the API
/// server cannot be reached.
pub async fn read(global: &Global, args: &AuditArgs) -> Result<Cluster, String> {
    let kube = Kube::connect(global).await.map_err(|e| format!("{e:#}"))?;
    let unreachable = |what: &str, e: &kube::Error| format!("{what}: {e}");
    let namespaces: Api<Namespace> = Api::all(kube.client.clone());
    let cluster_id = match &args.cluster_id {
        Some(id) => Some(id.clone()),
        None => match namespaces.get("kube-system").await {
            Ok(ns) => ns.metadata.uid,
            Err(e) if is_forbidden(&e) || is_not_found(&e) => None,
            Err(e) => return Err(unreachable("reading namespace kube-system", &e)),
        },
    };
    let grants: Api<AccessGrant> = Api::all(kube.client.clone());
    let grants = match grants.list(&ListParams::default()).await {
        Ok(list) => Some(list.items.iter().map(record).collect()),
        // No CRD: lapse does not run here, so no grant claims anything.
        Err(e) if is_not_found(&e) => Some(Vec::new()),
        Err(e) if is_forbidden(&e) => None,
        Err(e) => return Err(unreachable("listing AccessGrants", &e)),
    };
    let policy_api: Api<AccessPolicy> = Api::all(kube.client.clone());
    let policies = match policy_api.list(&ListParams::default()).await {
        Ok(list) => Some(check::named(&list.items)),
        Err(e) if is_not_found(&e) => Some(Vec::new()),
        Err(e) if is_forbidden(&e) => None,
        Err(e) => return Err(unreachable("listing AccessPolicies", &e)),
    };
    let namespace_labels = match namespaces.list(&ListParams::default()).await {
        Ok(list) => Some(
            list.items
                .into_iter()
                .map(|n| {
                    (
                        n.metadata.name.unwrap_or_default(),
                        n.metadata.labels.unwrap_or_default(),
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        ),
        Err(_) => None,
    };
    Ok(Cluster {
        cluster_id,
        cluster_names: args.cluster_name.clone(),
        grants,
        policies,
        namespace_labels,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use lapse_api::v1alpha1::{
        AccessGrantSpec, AccessGrantStatus, FederatedCredentialStatus, GrantPhase,
        RoleAssignmentStatus,
    };

    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn a_grants_record_is_its_lease_end_and_objects() {
        let mut g = AccessGrant::new("late", AccessGrantSpec::default());
        g.metadata.namespace = Some("payments".into());
        g.status = Some(AccessGrantStatus {
            phase: GrantPhase::Revoked,
            expires_at: Some(at(600)),
            ended_at: Some(at(60)),
            role_assignments: vec![
                RoleAssignmentStatus {
                    schedule: None,
                    id: Some("/ra/1".into()),
                    state: ObjectState::Deleting,
                    ..Default::default()
                },
                RoleAssignmentStatus {
                    schedule: None,
                    id: Some("/ra/2".into()),
                    state: ObjectState::Standing,
                    ..Default::default()
                },
            ],
            federated_credential: Some(FederatedCredentialStatus {
                id: Some("/fic".into()),
                name: "lapse-prod-abc".into(),
                state: ObjectState::Present,
                ..Default::default()
            }),
            ..Default::default()
        });
        let r = record(&g);
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str()),
            ("payments", "late")
        );
        assert!(r.terminal);
        // Revoked early: the lease ended when it was revoked.
        assert_eq!(r.lease_end, Some(at(60)));
        assert_eq!(
            r.objects
                .iter()
                .map(|o| (o.id.as_deref(), o.fic_name.as_deref(), o.standing))
                .collect::<Vec<_>>(),
            [
                (Some("/ra/1"), None, false),
                (Some("/ra/2"), None, true),
                (Some("/fic"), Some("lapse-prod-abc"), false),
            ]
        );
    }
}
