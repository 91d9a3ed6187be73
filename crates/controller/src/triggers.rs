//! What a policy change or a namespace relabel can affect, so that only those grants are
//! reconciled again: the grants of the namespaces the policy covered before or covers now, or
//! of the relabelled namespace. With thousands of grants, re-reconciling all of them for every
//! policy edit would put every tenant's work behind one team's change.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use lapse_api::policy::{NamedPolicy, covers_namespace};
use lapse_api::v1alpha1::{AccessPolicy, AccessPolicySpec};
use lapse_api::validate::validate_policy;
use tokio::sync::broadcast;

use crate::cached::CachedGrant;

/// Grants to look at again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Affected {
    /// Every grant (the namespace cache is not loaded yet, or a notification was missed).
    All,
    Namespaces(BTreeSet<String>),
    /// One grant, by namespace and name (an approval named it).
    Grant(String, String),
}

impl Affected {
    fn includes(&self, namespace: &str, name: &str) -> bool {
        match self {
            Affected::All => true,
            Affected::Namespaces(set) => set.contains(namespace),
            Affected::Grant(ns, n) => ns == namespace && n == name,
        }
    }
}

/// The namespaces among `namespaces` (name, labels) that a policy with this spec covers. An
/// invalid spec covers none: it allows nothing.
pub fn covered(
    spec: &AccessPolicySpec,
    namespaces: &[(String, BTreeMap<String, String>)],
) -> BTreeSet<String> {
    let policy = [NamedPolicy {
        name: String::new(),
        rules: validate_policy(spec).map_err(|e| e.to_string()),
    }];
    namespaces
        .iter()
        .filter(|(ns, labels)| covers_namespace(&policy, ns, labels))
        .map(|(ns, _)| ns.clone())
        .collect()
}

/// Remembers each policy's last spec, to know what it covered before a change.
#[derive(Debug, Default)]
pub struct PolicyChanges {
    last: HashMap<String, AccessPolicySpec>,
}

impl PolicyChanges {
    /// What a watch event of `policy` can affect: an applied policy what it covered before and
    /// covers now, a deleted one what it covered. `None` when an applied policy's spec did not
    /// change (a status write, the operator's own among them).
    pub fn affected(
        &mut self,
        policy: &AccessPolicy,
        deleted: bool,
        namespaces: &Store<Namespace>,
    ) -> Option<Affected> {
        let old = if deleted {
            self.last.remove(&policy.name_any())
        } else {
            let old = self.last.insert(policy.name_any(), policy.spec.clone());
            if old.as_ref() == Some(&policy.spec) {
                return None;
            }
            old
        };
        let all: Vec<(String, BTreeMap<String, String>)> = namespaces
            .state()
            .iter()
            .map(|ns| (ns.name_any(), ns.labels().clone()))
            .collect();
        if all.is_empty() {
            return Some(Affected::All);
        }
        let mut set = covered(&policy.spec, &all);
        if let Some(old) = old {
            set.extend(covered(&old, &all));
        }
        Some(Affected::Namespaces(set))
    }
}

/// The grants of `store` each notification on `rx` names, as controller triggers.
pub fn affected_grants(
    rx: broadcast::Receiver<Affected>,
    store: Store<CachedGrant>,
) -> impl Stream<Item = ObjectRef<CachedGrant>> + Send + 'static {
    stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(a) => Some((a, rx)),
            // Missed some: whatever they named is among all.
            Err(broadcast::error::RecvError::Lagged(_)) => Some((Affected::All, rx)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
    .flat_map(move |affected| {
        let refs: Vec<ObjectRef<CachedGrant>> = store
            .state()
            .iter()
            .filter(|g| affected.includes(&g.namespace().unwrap_or_default(), &g.name_any()))
            .map(|g| ObjectRef::from_obj(g.as_ref()))
            .collect();
        stream::iter(refs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(namespaces: &[&str], selector: Option<(&str, &str)>) -> AccessPolicySpec {
        serde_json::from_value(serde_json::json!({
            "namespaces": namespaces,
            "namespaceSelector": selector.map(|(k, v)| serde_json::json!({"matchLabels": {k: v}})),
            "identities": ["/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"],
            "roles": ["Reader"],
            "scopes": ["/subscriptions/00000000-0000-0000-0000-000000000001"],
            "maxDuration": "1h"
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn namespaces() -> Vec<(String, BTreeMap<String, String>)> {
        vec![
            ("payments".into(), BTreeMap::new()),
            ("payments-dev".into(), BTreeMap::new()),
            (
                "search".into(),
                BTreeMap::from([("team".into(), "search".into())]),
            ),
            ("billing".into(), BTreeMap::new()),
        ]
    }

    #[test]
    fn a_policy_covers_its_globs_and_its_selector() {
        let set = covered(
            &spec(&["payments*"], Some(("team", "search"))),
            &namespaces(),
        );
        let expected: BTreeSet<String> = ["payments", "payments-dev", "search"]
            .map(String::from)
            .into();
        assert_eq!(set, expected);
        let mut invalid = spec(&["payments"], None);
        invalid.max_duration = "forever".into();
        assert!(
            covered(&invalid, &namespaces()).is_empty(),
            "an invalid policy allows nothing, so it covers nothing"
        );
    }

    fn policy(name: &str, spec: AccessPolicySpec) -> AccessPolicy {
        AccessPolicy::new(name, spec)
    }

    #[test]
    fn a_change_affects_what_the_policy_covered_before_and_covers_now() {
        let (store, mut writer) = kube::runtime::reflector::store::<Namespace>();
        let mut changes = PolicyChanges::default();
        // Before the namespace cache is loaded nothing can be narrowed down.
        assert_eq!(
            changes.affected(&policy("p", spec(&["payments"], None)), false, &store),
            Some(Affected::All)
        );
        for (name, labels) in namespaces() {
            let mut ns = Namespace::default();
            ns.metadata.name = Some(name);
            ns.metadata.labels = Some(labels);
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(ns));
        }
        let set = |names: &[&str]| -> Option<Affected> {
            Some(Affected::Namespaces(
                names.iter().map(|n| (*n).to_owned()).collect(),
            ))
        };
        // Moved from payments to search: both lose or gain access.
        assert_eq!(
            changes.affected(&policy("p", spec(&["search"], None)), false, &store),
            set(&["payments", "search"])
        );
        // Another policy is another history.
        assert_eq!(
            changes.affected(&policy("q", spec(&["billing"], None)), false, &store),
            set(&["billing"])
        );
        // The same spec again (a status write): nothing.
        assert_eq!(
            changes.affected(&policy("p", spec(&["search"], None)), false, &store),
            None
        );
        let affected = changes.affected(&policy("p", spec(&["billing"], None)), false, &store);
        assert_eq!(affected, set(&["billing", "search"]));
        // Deleted: everything it covered loses what it allowed, even with its spec unchanged.
        assert_eq!(
            changes.affected(&policy("q", spec(&["billing"], None)), true, &store),
            set(&["billing"])
        );
        // Re-created: news again.
        assert_eq!(
            changes.affected(&policy("q", spec(&["billing"], None)), false, &store),
            set(&["billing"])
        );
        let affected = affected.unwrap_or(Affected::All);
        assert!(!affected.includes("payments", "g"));
        assert!(Affected::All.includes("payments", "g"));
        let one = Affected::Grant("payments".into(), "g".into());
        assert!(one.includes("payments", "g") && !one.includes("payments", "h"));
    }
}
