//! What the audit reads in the cluster (its I/O): the cluster's identity (the `kube-system`
//! namespace UID, as the operator takes it), every AccessGrant's record of its lease and Azure
//! objects, the AccessPolicies and the namespaces' labels. Each read the caller may not make
//! leaves that part unknown, and the audit says what it could then not check.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams};
use lapse_api::v1alpha1::{AccessGrant, AccessPolicy, ObjectState};

use super::findings::{Cluster, GrantRecord, RecordedObject, UsageLogFinding};
use crate::check;
use crate::cli::{AuditArgs, Global};
use crate::client::{Kube, is_forbidden, is_not_found};

/// The key of the ledger document in the usage ledger ConfigMap.
const LEDGER_KEY: &str = "ledger.json";

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
        identity: g.spec.identity.clone(),
        usage: st.usage.map(|u| u.findings).unwrap_or_default(),
    }
}

/// The usage ledger ConfigMap's name: one per shard, like the operator's leader Lease.
pub fn ledger_name(shard: Option<&str>) -> String {
    match shard {
        Some(s) => format!("lapse-usage-ledger-{s}"),
        None => "lapse-usage-ledger".to_owned(),
    }
}

/// Of the operator's usage ledger document (`ledger.json`), only what the audit reads.
#[derive(Debug, Default, serde::Deserialize)]
struct LedgerDoc {
    #[serde(default)]
    unleased: Vec<UsageLogFinding>,
}

/// The ledger's findings no grant carries, from its ConfigMap; with a note when it is absent
/// (usage evidence off, or another namespace or shard), refused or unreadable.
pub fn unleased(
    cm: Result<&ConfigMap, &kube::Error>,
    at: &str,
) -> (Option<Vec<UsageLogFinding>>, Option<String>) {
    match cm {
        Ok(cm) => {
            let doc = cm.data.as_ref().and_then(|d| d.get(LEDGER_KEY));
            match doc.map(|d| serde_json::from_str::<LedgerDoc>(d)) {
                None => (Some(Vec::new()), None),
                Some(Ok(l)) => (Some(l.unleased), None),
                Some(Err(e)) => (
                    None,
                    Some(format!(
                        "the usage ledger ConfigMap {at} does not parse ({e}): UseWithoutLease \
                         is not checked"
                    )),
                ),
            }
        }
        Err(e) if is_not_found(e) => (
            Some(Vec::new()),
            Some(format!(
                "no usage ledger ConfigMap {at}: usage evidence is off, or the operator runs in \
                 another namespace or shard (--operator-namespace, --shard); no UseWithoutLease \
                 seen"
            )),
        ),
        Err(e) if is_forbidden(e) => (
            None,
            Some(format!(
                "you may not read the usage ledger ConfigMap {at}: UseWithoutLease is not \
                 checked"
            )),
        ),
        Err(e) => (
            None,
            Some(format!(
                "reading the usage ledger ConfigMap {at} failed ({e}): UseWithoutLease is not \
                 checked"
            )),
        ),
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
    let ledger = ledger_name(args.shard.as_deref());
    let configmaps: Api<ConfigMap> = Api::namespaced(kube.client.clone(), &args.operator_namespace);
    let at = format!("{}/{ledger}", args.operator_namespace);
    let (unleased, ledger_note) = unleased(configmaps.get(&ledger).await.as_ref(), &at);
    Ok(Cluster {
        cluster_id,
        cluster_names: args.cluster_name.clone(),
        grants,
        policies,
        namespace_labels,
        unleased,
        ledger_note,
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

    fn api_error(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("refused", reason).with_code(code),
        ))
    }

    #[test]
    fn the_ledger_gives_its_unleased_findings_and_says_when_it_cannot() {
        let doc = r#"{"since":"2027-01-15T08:00:00Z","sequence":4,"sources":{},"pending":{},
            "unleased":[{"kind":"UseWithoutLease","at":"2027-01-15T08:05:00Z","grant":null,
            "principal":"00000000-0000-4000-8000-000000000002","event":"ev-9",
            "message":"sp performed x with no lease covering it: a standing path","revoke":false}]}"#;
        let cm = ConfigMap {
            data: Some(BTreeMap::from([(LEDGER_KEY.to_owned(), doc.to_owned())])),
            ..ConfigMap::default()
        };
        let (found, note) = unleased(Ok(&cm), "lapse-system/lapse-usage-ledger");
        let found = found.unwrap_or_default();
        assert_eq!(
            found
                .iter()
                .map(|f| (f.principal.to_string(), f.event.as_deref()))
                .collect::<Vec<_>>(),
            [(
                "00000000-0000-4000-8000-000000000002".to_owned(),
                Some("ev-9")
            )]
        );
        assert_eq!(note, None);

        // Absent: usage evidence is off (or elsewhere); nothing to report, and a note says so.
        let (found, note) = unleased(
            Err(&api_error(404, "NotFound")),
            "lapse-system/lapse-usage-ledger",
        );
        assert_eq!(found.map(|f| f.len()), Some(0));
        assert!(
            note.as_deref().is_some_and(|n| n
                .contains("no usage ledger ConfigMap lapse-system/lapse-usage-ledger")
                && n.contains("--operator-namespace")),
            "{note:?}"
        );
        // Refused: not checked, and the note says so.
        let (found, note) = unleased(Err(&api_error(403, "Forbidden")), "ns/l");
        assert!(found.is_none());
        assert!(
            note.as_deref()
                .is_some_and(|n| n.contains("may not read") && n.contains("not checked")),
            "{note:?}"
        );
        assert_eq!(ledger_name(Some("eu")), "lapse-usage-ledger-eu");
        assert_eq!(ledger_name(None), "lapse-usage-ledger");
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
            federated_credential: Some(Box::new(FederatedCredentialStatus {
                id: Some("/fic".into()),
                name: "lapse-prod-abc".into(),
                state: ObjectState::Present,
                ..Default::default()
            })),
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
