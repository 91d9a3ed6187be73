//! Authentication (admin token, ServiceAccount tokens, impersonation) and RBAC authorization
//! (Roles, ClusterRoles and their bindings), with the real server's 403 message shape.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::status::ApiError;
use crate::store::Store;

const RBAC: &str = "rbac.authorization.k8s.io";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// `user.Info.Extra` (set by impersonation headers `Impersonate-Extra-*`).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    pub fn admin() -> Self {
        Self {
            name: "kubernetes-admin".to_owned(),
            uid: String::new(),
            groups: vec![
                "system:masters".to_owned(),
                "system:authenticated".to_owned(),
            ],
            extra: BTreeMap::new(),
        }
    }

    /// A user as named by impersonation headers or a ServiceAccount token.
    pub fn named(name: &str, uid: &str, mut groups: Vec<String>) -> Self {
        if let Some(rest) = name.strip_prefix("system:serviceaccount:")
            && let Some((ns, _)) = rest.split_once(':')
        {
            groups.push("system:serviceaccounts".to_owned());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
        groups.push("system:authenticated".to_owned());
        groups.dedup();
        Self {
            name: name.to_owned(),
            uid: uid.to_owned(),
            groups,
            extra: BTreeMap::new(),
        }
    }

    pub fn is_superuser(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// What a request asks to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Attrs {
    Resource {
        verb: String,
        group: String,
        resource: String,
        subresource: String,
        name: String,
        namespace: String,
    },
    NonResource {
        verb: String,
        path: String,
    },
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn rule_matches(rule: &Value, attrs: &Attrs) -> bool {
    let has = |field: &str, want: &str| strs(&rule[field]).iter().any(|x| *x == "*" || *x == want);
    match attrs {
        Attrs::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            let res = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let resources = strs(&rule["resources"]);
            let resource_ok = resources.iter().any(|r| {
                *r == "*"
                    || *r == res
                    || (!subresource.is_empty() && *r == format!("*/{subresource}"))
            });
            let names = strs(&rule["resourceNames"]);
            let name_ok = names.is_empty() || (!name.is_empty() && names.contains(&name.as_str()));
            has("verbs", verb) && has("apiGroups", group) && resource_ok && name_ok
        }
        Attrs::NonResource { verb, path } => {
            has("verbs", verb)
                && strs(&rule["nonResourceURLs"]).iter().any(|u| {
                    *u == "*"
                        || u == path
                        || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
                })
        }
    }
}

fn subject_matches(s: &Value, user: &User, binding_ns: &str) -> bool {
    let name = s["name"].as_str().unwrap_or_default();
    match s["kind"].as_str() {
        Some("User") => name == user.name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = s["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn binds(binding: &Value, user: &User, ns: &str) -> bool {
    binding["subjects"]
        .as_array()
        .is_some_and(|ss| ss.iter().any(|s| subject_matches(s, user, ns)))
}

fn role_rules<'a>(store: &'a Store, role_ref: &Value, ns: &str) -> Option<&'a Value> {
    let name = role_ref["name"].as_str()?;
    let role = match role_ref["kind"].as_str()? {
        "ClusterRole" => store.get(RBAC, "clusterroles", "", name)?,
        "Role" => store.get(RBAC, "roles", ns, name)?,
        _ => return None,
    };
    Some(&role["rules"])
}

/// RBAC: allowed if any ClusterRoleBinding, or RoleBinding in the request's namespace, binds the
/// user to a role with a matching rule.
pub fn allowed(store: &Store, user: &User, attrs: &Attrs) -> bool {
    if user.is_superuser() {
        return true;
    }
    let check = |rules: Option<&Value>| {
        rules
            .and_then(Value::as_array)
            .is_some_and(|rs| rs.iter().any(|r| rule_matches(r, attrs)))
    };
    if let Some(b) = store.bucket(RBAC, "clusterrolebindings") {
        for crb in b.values() {
            if binds(crb, user, "") && check(role_rules(store, &crb["roleRef"], "")) {
                return true;
            }
        }
    }
    if let Attrs::Resource { namespace, .. } = attrs
        && !namespace.is_empty()
        && let Some(b) = store.bucket(RBAC, "rolebindings")
    {
        for ((ns, _), rb) in b.iter().filter(|((ns, _), _)| ns == namespace) {
            if binds(rb, user, ns) && check(role_rules(store, &rb["roleRef"], ns)) {
                return true;
            }
        }
    }
    false
}

/// The 403 the real server returns.
pub fn forbidden(user: &User, attrs: &Attrs) -> ApiError {
    match attrs {
        Attrs::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
            namespace,
        } => {
            let res = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let qualified = if group.is_empty() {
                resource.clone()
            } else {
                format!("{resource}.{group}")
            };
            let what = if name.is_empty() {
                qualified
            } else {
                format!("{qualified} \"{name}\"")
            };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace \"{namespace}\"")
            };
            ApiError {
                details: Some(json!({"name": name, "group": group, "kind": resource})),
                ..ApiError::forbidden(format!(
                    "{what} is forbidden: User \"{}\" cannot {verb} resource \"{res}\" in API group \"{group}\" {scope}",
                    user.name
                ))
            }
        }
        Attrs::NonResource { verb, path } => ApiError::forbidden(format!(
            "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
            user.name
        )),
    }
}

/// The bootstrap ClusterRoles and ClusterRoleBindings every cluster starts with (a subset).
pub fn bootstrap() -> Vec<(&'static str, Value)> {
    let read = json!(["get", "list", "watch"]);
    let write = json!(["create", "delete", "deletecollection", "patch", "update"]);
    let core = json!([
        "configmaps",
        "endpoints",
        "events",
        "persistentvolumeclaims",
        "pods",
        "services",
        "serviceaccounts",
        "namespaces",
        "resourcequotas",
        "limitranges"
    ]);
    let apps = json!([
        "deployments",
        "deployments/scale",
        "replicasets",
        "statefulsets",
        "daemonsets"
    ]);
    let role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}, "rules": rules})
    };
    let binding = |name: &str, role: &str, groups: &[&str]| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": groups.iter().map(|g| json!({"apiGroup": RBAC, "kind": "Group", "name": g})).collect::<Vec<_>>()})
    };
    let view = json!([
        {"apiGroups": [""], "resources": core, "verbs": read},
        {"apiGroups": ["apps"], "resources": apps, "verbs": read},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": read},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": read},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets", "poddisruptionbudgets/status"], "verbs": read},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": read},
    ]);
    let mut edit = view.as_array().cloned().unwrap_or_default();
    edit.push(json!({"apiGroups": [""], "resources": core, "verbs": write}));
    edit.push(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": read}));
    edit.push(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": write}));
    edit.push(json!({"apiGroups": ["apps"], "resources": apps, "verbs": write}));
    edit.push(
        json!({"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": write}),
    );
    edit.push(json!({"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": write}));
    edit.push(
        json!({"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}),
    );
    let mut admin = edit.clone();
    admin
        .push(json!({"apiGroups": [RBAC], "resources": ["roles", "rolebindings"], "verbs": ["*"]}));
    vec![
        (
            "clusterroles",
            role(
                "cluster-admin",
                json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
            ),
        ),
        ("clusterroles", role("admin", Value::Array(admin))),
        ("clusterroles", role("edit", Value::Array(edit))),
        ("clusterroles", role("view", view)),
        (
            "clusterroles",
            role(
                "system:discovery",
                json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:basic-user",
                json!([
            {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:public-info-viewer",
                json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
            ),
        ),
        (
            "clusterrolebindings",
            binding("cluster-admin", "cluster-admin", &["system:masters"]),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:discovery",
                "system:discovery",
                &["system:authenticated"],
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:basic-user",
                "system:basic-user",
                &["system:authenticated"],
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:public-info-viewer",
                "system:public-info-viewer",
                &["system:authenticated", "system:unauthenticated"],
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, resource: &str, name: &str, ns: &str) -> Attrs {
        Attrs::Resource {
            verb: verb.into(),
            group: String::new(),
            resource: resource.into(),
            subresource: String::new(),
            name: name.into(),
            namespace: ns.into(),
        }
    }

    #[test]
    fn rules_match_verbs_resources_and_names() {
        let rule = json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["c1"]});
        assert!(rule_matches(
            &rule,
            &attrs("get", "configmaps", "c1", "demo")
        ));
        assert!(!rule_matches(
            &rule,
            &attrs("get", "configmaps", "c2", "demo")
        ));
        assert!(!rule_matches(
            &rule,
            &attrs("list", "configmaps", "", "demo")
        ));
        let sub = json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["patch"]});
        let a = Attrs::Resource {
            verb: "patch".into(),
            group: "x".into(),
            resource: "widgets".into(),
            subresource: "status".into(),
            name: "w".into(),
            namespace: "demo".into(),
        };
        assert!(rule_matches(&sub, &a));
        let nr = json!({"nonResourceURLs": ["/apis/*"], "verbs": ["get"]});
        assert!(rule_matches(
            &nr,
            &Attrs::NonResource {
                verb: "get".into(),
                path: "/apis/apps".into()
            }
        ));
    }

    #[test]
    fn forbidden_message_has_the_real_shape() {
        let u = User::named("system:serviceaccount:demo:bot", "", vec![]);
        let e = forbidden(&u, &attrs("list", "secrets", "", "demo"));
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "secrets is forbidden: User \"system:serviceaccount:demo:bot\" cannot list resource \"secrets\" in API group \"\" in the namespace \"demo\""
        );
        assert!(u.groups.contains(&"system:serviceaccounts:demo".to_owned()));
    }
}
