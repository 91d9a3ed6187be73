//! User impersonation (`Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid`,
//! `Impersonate-Extra-*`), authorized through RBAC's `impersonate` verb as kube-apiserver's
//! `WithImpersonation` filter does: each user, service account, group, extra value and UID is
//! one authorization check, and the first one refused answers 403 naming it.

use std::collections::BTreeMap;

use hyper::HeaderMap;

use crate::rbac::{self, Attrs, User};
use crate::status::ApiError;
use crate::store::Store;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// What one impersonation header asks for.
#[derive(Debug, Clone, PartialEq)]
enum Wanted {
    User(String),
    ServiceAccount { namespace: String, name: String },
    Group(String),
    Extra { key: String, value: String },
    Uid(String),
}

impl Wanted {
    /// The authorization attributes of impersonating this (`verb: impersonate`).
    fn attrs(&self) -> Attrs {
        let (group, resource, subresource, name, namespace) = match self {
            Self::User(n) => ("", "users", "", n.as_str(), ""),
            Self::ServiceAccount { namespace, name } => {
                ("", "serviceaccounts", "", name.as_str(), namespace.as_str())
            }
            Self::Group(n) => ("", "groups", "", n.as_str(), ""),
            Self::Extra { key, value } => (
                "authentication.k8s.io",
                "userextras",
                key.as_str(),
                value.as_str(),
                "",
            ),
            Self::Uid(u) => ("authentication.k8s.io", "uids", "", u.as_str(), ""),
        };
        Attrs::Resource {
            verb: "impersonate".to_owned(),
            group: group.to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }
    }
}

/// `serviceaccount.SplitUsername`: `system:serviceaccount:<namespace>:<name>`.
fn split_service_account(user: &str) -> Option<(String, String)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    (valid(ns) && valid(name)).then(|| (ns.to_owned(), name.to_owned()))
}

/// `url.PathUnescape`, keeping the input when it is malformed.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => return s.to_owned(),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// `buildImpersonationRequests`: user (or service account), groups, extras, UID.
fn requests(headers: &HeaderMap) -> Result<Vec<Wanted>, String> {
    let mut out = Vec::new();
    let user = header_values(headers, USER)
        .first()
        .map(|s| (*s).to_owned())
        .filter(|s| !s.is_empty());
    if let Some(u) = &user {
        out.push(match split_service_account(u) {
            Some((namespace, name)) => Wanted::ServiceAccount { namespace, name },
            None => Wanted::User(u.clone()),
        });
    }
    let groups = header_values(headers, GROUP);
    out.extend(groups.iter().map(|g| Wanted::Group((*g).to_owned())));
    let mut has_extra = false;
    let mut names: Vec<&str> = headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with(EXTRA_PREFIX))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        has_extra = true;
        let key = unescape(&name[EXTRA_PREFIX.len()..].to_lowercase());
        for value in header_values(headers, name) {
            out.push(Wanted::Extra {
                key: key.clone(),
                value: value.to_owned(),
            });
        }
    }
    let uid = header_values(headers, UID)
        .first()
        .map(|s| (*s).to_owned())
        .filter(|s| !s.is_empty());
    if let Some(u) = &uid {
        out.push(Wanted::Uid(u.clone()));
    }
    if (!groups.is_empty() || has_extra || uid.is_some()) && user.is_none() {
        let list: Vec<String> = out.iter().map(|w| format!("{w:?}")).collect();
        return Err(format!(
            "requested [{}] without impersonating a user",
            list.join(" ")
        ));
    }
    Ok(out)
}

/// Why impersonation failed: a 403 Status, or a 500 the real server answers in plain text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refused {
    Forbidden(ApiError),
    Internal(String),
}

/// The user a request acts as: `requestor` itself, or whom its impersonation headers name once
/// RBAC allows `requestor` to impersonate each of them.
pub(crate) fn impersonate(
    store: &Store,
    requestor: User,
    headers: &HeaderMap,
) -> Result<User, Refused> {
    let wanted = requests(headers).map_err(Refused::Internal)?;
    if wanted.is_empty() {
        return Ok(requestor);
    }
    let groups_specified = !header_values(headers, GROUP).is_empty();
    let mut name = String::new();
    let mut uid = String::new();
    let mut groups: Vec<String> = Vec::new();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for w in &wanted {
        let attrs = w.attrs();
        if !rbac::allowed(store, &requestor, &attrs) {
            tracing::debug!(requestor = %requestor.name, wanted = ?w, "impersonation refused");
            return Err(Refused::Forbidden(rbac::forbidden(&requestor, &attrs)));
        }
        match w {
            Wanted::User(n) => name = n.clone(),
            Wanted::ServiceAccount {
                namespace,
                name: sa,
            } => {
                name = format!("system:serviceaccount:{namespace}:{sa}");
                if !groups_specified {
                    groups = vec![
                        "system:serviceaccounts".to_owned(),
                        format!("system:serviceaccounts:{namespace}"),
                    ];
                }
            }
            Wanted::Group(g) => groups.push(g.clone()),
            Wanted::Extra { key, value } => {
                extra.entry(key.clone()).or_default().push(value.clone())
            }
            Wanted::Uid(u) => uid = u.clone(),
        }
    }
    if name != "system:anonymous" {
        if !groups
            .iter()
            .any(|g| g == "system:authenticated" || g == "system:unauthenticated")
        {
            groups.push("system:authenticated".to_owned());
        }
    } else if !groups.iter().any(|g| g == "system:unauthenticated") {
        groups.push("system:unauthenticated".to_owned());
    }
    tracing::debug!(requestor = %requestor.name, user = %name, "impersonating");
    Ok(User {
        name,
        uid,
        groups,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn store_with(rules: serde_json::Value, user: &str) -> Store {
        let mut s = Store::new(16, registry::builtins());
        s.put(
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            "imp",
            json!({"metadata": {"name": "imp"}, "rules": rules}),
        );
        s.put(
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "",
            "imp",
            json!({"metadata": {"name": "imp"}, "roleRef": {"kind": "ClusterRole", "name": "imp"},
                "subjects": [{"kind": "User", "name": user}]}),
        );
        s
    }

    fn alice() -> User {
        User::named("alice@example.com", "", vec![])
    }

    #[test]
    fn impersonation_needs_the_impersonate_verb_per_user_and_group() {
        let s = store_with(
            json!([{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["bob@example.com"]},
                   {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"]}]),
            "alice@example.com",
        );
        let u = impersonate(
            &s,
            alice(),
            &headers(&[
                ("Impersonate-User", "bob@example.com"),
                ("Impersonate-Group", "oncall"),
                ("Impersonate-Group", "dev"),
            ]),
        )
        .unwrap();
        assert_eq!(u.name, "bob@example.com");
        assert_eq!(u.groups, ["oncall", "dev", "system:authenticated"]);

        let e = impersonate(&s, alice(), &headers(&[("Impersonate-User", "carol")])).unwrap_err();
        let Refused::Forbidden(e) = e else {
            panic!("expected 403")
        };
        assert_eq!(
            e.message,
            "users \"carol\" is forbidden: User \"alice@example.com\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
        // Without the permission, headers change nothing but the answer.
        let e = impersonate(
            &s,
            User::named("bob@example.com", "", vec![]),
            &headers(&[("Impersonate-User", "alice@example.com")]),
        )
        .unwrap_err();
        assert!(matches!(e, Refused::Forbidden(ref s) if s.code == 403));
    }

    #[test]
    fn service_accounts_uids_and_extras_are_their_own_resources() {
        let s = store_with(
            json!([{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
                   {"apiGroups": ["authentication.k8s.io"], "resources": ["uids", "userextras/scopes"], "verbs": ["impersonate"]}]),
            "alice@example.com",
        );
        let u = impersonate(
            &s,
            alice(),
            &headers(&[
                ("Impersonate-User", "system:serviceaccount:demo:bot"),
                ("Impersonate-Uid", "u-1"),
                ("Impersonate-Extra-Scopes", "view"),
            ]),
        )
        .unwrap();
        assert_eq!(u.name, "system:serviceaccount:demo:bot");
        assert_eq!(u.uid, "u-1");
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:demo",
                "system:authenticated"
            ]
        );
        assert_eq!(u.extra["scopes"], ["view"]);
        let Refused::Forbidden(e) = impersonate(
            &s,
            alice(),
            &headers(&[
                ("Impersonate-User", "system:serviceaccount:demo:bot"),
                ("Impersonate-Extra-Acme.com%2fproject", "x"),
            ]),
        )
        .unwrap_err() else {
            panic!("expected 403")
        };
        assert_eq!(
            e.message,
            "userextras.authentication.k8s.io \"x\" is forbidden: User \"alice@example.com\" cannot impersonate resource \"userextras/acme.com/project\" in API group \"authentication.k8s.io\" at the cluster scope"
        );
        // Groups without a user are refused before any authorization.
        assert!(matches!(
            impersonate(&s, alice(), &headers(&[("Impersonate-Group", "g")])),
            Err(Refused::Internal(m)) if m.ends_with("without impersonating a user")
        ));
        assert_eq!(
            impersonate(&s, alice(), &HeaderMap::new()).unwrap(),
            alice()
        );
    }
}
