//! Discovery documents: legacy (`/api`, `/apis`, `/apis/{g}/{v}`) and aggregated
//! (`apidiscovery.k8s.io` v2 and v2beta1 `APIGroupDiscoveryList`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::registry::ResourceType;

/// Groups in first-seen order, each with its versions in first-seen order.
fn groups(types: &[ResourceType]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, vs)) => {
                if !vs.contains(&t.version) {
                    vs.push(t.version.clone());
                }
            }
            None => out.push((t.group.clone(), vec![t.version.clone()])),
        }
    }
    out
}

fn preferred(versions: &[String], types: &[ResourceType], group: &str) -> String {
    // The storage version is preferred, like the real server's priority for CRD versions.
    types
        .iter()
        .find(|t| t.group == group && t.version == t.storage_version)
        .map(|t| t.version.clone())
        .or_else(|| versions.first().cloned())
        .unwrap_or_default()
}

pub fn api_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

fn api_group(group: &str, versions: &[String], types: &[ResourceType]) -> Value {
    let pref = preferred(versions, types, group);
    json!({
        "name": group,
        "versions": versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect::<Vec<_>>(),
        "preferredVersion": {"groupVersion": format!("{group}/{pref}"), "version": pref},
    })
}

pub fn api_group_list(types: &[ResourceType]) -> Value {
    let gs: Vec<Value> = groups(types)
        .iter()
        .map(|(g, vs)| api_group(g, vs, types))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

/// `/apis/{group}`, if the group is served.
pub fn api_group_doc(types: &[ResourceType], group: &str) -> Option<Value> {
    groups(types)
        .into_iter()
        .find(|(g, _)| g == group)
        .map(|(g, vs)| {
            let mut v = api_group(&g, &vs, types);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            v
        })
}

/// `/api/v1` or `/apis/{group}/{version}`, if served.
pub fn resource_list(types: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for t in types
        .iter()
        .filter(|t| t.group == group && t.version == version)
    {
        let mut r = json!({
            "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
            "kind": t.kind, "verbs": t.verbs(),
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.has_status {
            resources.push(
                json!({"name": format!("{}/status", t.plural), "singularName": "",
                "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
        if t.group.is_empty() && t.plural == "serviceaccounts" {
            resources.push(json!({"name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]}));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn discovery_resource(t: &ResourceType) -> Value {
    let mut r = json!({
        "resource": t.plural,
        "responseKind": {"group": t.group, "version": t.version, "kind": t.kind},
        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular,
        "verbs": t.verbs(),
    });
    if !t.short_names.is_empty() {
        r["shortNames"] = json!(t.short_names);
    }
    if !t.categories.is_empty() {
        r["categories"] = json!(t.categories);
    }
    let mut subs = Vec::new();
    if t.has_status {
        subs.push(json!({"subresource": "status",
            "responseKind": {"group": t.group, "version": t.version, "kind": t.kind},
            "verbs": ["get", "patch", "update"]}));
    }
    if t.group.is_empty() && t.plural == "serviceaccounts" {
        subs.push(json!({"subresource": "token",
            "responseKind": {"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"},
            "verbs": ["create"]}));
    }
    if !subs.is_empty() {
        r["subresources"] = json!(subs);
    }
    r
}

/// Aggregated discovery for the core group (`legacy`) or all named groups.
pub fn aggregated(types: &[ResourceType], legacy: bool, api_version: &str) -> Value {
    let mut by_group: BTreeMap<usize, (String, Vec<String>)> = BTreeMap::new();
    let order: Vec<(String, Vec<String>)> = if legacy {
        vec![(String::new(), vec!["v1".to_owned()])]
    } else {
        groups(types)
    };
    for (i, g) in order.into_iter().enumerate() {
        by_group.insert(i, g);
    }
    let items: Vec<Value> = by_group
        .values()
        .map(|(g, vs)| {
            let pref = preferred(vs, types, g);
            // The preferred version comes first, as clients take the first as preferred.
            let mut vs = vs.clone();
            vs.sort_by_key(|v| *v != pref);
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| {
                    let rs: Vec<Value> = types
                        .iter()
                        .filter(|t| t.group == *g && t.version == *v)
                        .map(discovery_resource)
                        .collect();
                    json!({"version": v, "resources": rs, "freshness": "Current"})
                })
                .collect();
            let mut meta = json!({"creationTimestamp": null});
            if !g.is_empty() {
                meta["name"] = json!(g);
            }
            json!({"metadata": meta, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::builtins;

    #[test]
    fn resource_lists_carry_what_kubectl_needs() {
        let types = builtins();
        let core = resource_list(&types, "", "v1").unwrap();
        let ns = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "namespaces")
            .unwrap();
        assert_eq!(
            (ns["namespaced"].clone(), ns["kind"].clone()),
            (json!(false), json!("Namespace"))
        );
        assert_eq!(ns["shortNames"], json!(["ns"]));
        assert!(
            core["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "namespaces/status")
        );
        let agg = aggregated(&types, false, "apidiscovery.k8s.io/v2");
        let apps = agg["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = &apps["versions"][0]["resources"][0];
        assert_eq!(
            (deploy["resource"].clone(), deploy["scope"].clone()),
            (json!("deployments"), json!("Namespaced"))
        );
        assert_eq!(deploy["categories"], json!(["all"]));
        assert!(resource_list(&types, "nope.dev", "v1").is_none());
    }
}
