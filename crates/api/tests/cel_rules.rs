//! The CRDs' CEL rules (`x-kubernetes-validations`), evaluated client-side against the generated
//! openAPIV3Schema exactly as an apiserver would on create and update, plus the schema patterns
//! and bounds the apiserver enforces before any rule runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers, not #[test] fns

use kube::CustomResourceExt;
use kube::core::cel::{ErrorKind, Validator};
use lapse_api::v1alpha1::*;
use serde_json::{Value, json};

const MI: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/payments-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/backup";
const GUID: &str = "3fa85f64-5717-4562-b3fc-2c963f66afa6";
const SCOPE: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/payments-rg";

fn schema<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

/// A grant as a user writes it: one managed identity, one role, a duration.
fn grant() -> Value {
    json!({
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessGrant",
        "metadata": {"name": "nightly-backup", "namespace": "payments"},
        "spec": {
            "identity": {"managedIdentity": MI},
            "roles": [{"role": "Storage Blob Data Reader", "scope": SCOPE}],
            "federation": {"serviceAccount": "backup-runner"},
            "duration": "1h",
            "justification": "OPS-1234 nightly backup"
        }
    })
}

/// `grant()` as the operator leaves it once the lease is live.
fn activated(mut g: Value) -> Value {
    g["status"] = json!({
        "phase": "Active",
        "activatedAt": "2026-12-01T02:00:00Z",
        "expiresAt": "2026-12-01T03:00:00Z"
    });
    g
}

/// Every failure as (field path without a leading dot, message); evaluation errors fail the test,
/// because the apiserver would reject with a message that names no field.
fn check<K: CustomResourceExt>(new: &Value, old: Option<&Value>) -> Vec<(String, String)> {
    match Validator::new().validate(&schema::<K>(), new, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| {
                assert_eq!(
                    e.kind,
                    ErrorKind::ValidationFailure,
                    "rule did not evaluate: {e}"
                );
                (
                    e.field_path.trim_start_matches('.').to_owned(),
                    e.message.clone(),
                )
            })
            .collect(),
    }
}

fn create(g: &Value) -> Vec<(String, String)> {
    check::<AccessGrant>(g, None)
}

fn update(old: &Value, new: &Value) -> Vec<(String, String)> {
    check::<AccessGrant>(new, Some(old))
}

/// Exactly one rejection, reported at `field` with a message that names it.
#[track_caller]
fn rejected_at(errors: &[(String, String)], field: &str) {
    assert_eq!(
        errors.len(),
        1,
        "expected one rejection at {field}, got {errors:?}"
    );
    let (path, message) = &errors[0];
    assert_eq!(
        path, field,
        "rejection reported at the wrong path: {message}"
    );
    assert!(
        message.contains(field),
        "message {message:?} does not name {field}"
    );
}

#[test]
fn a_plain_grant_is_accepted() {
    assert_eq!(create(&grant()), []);
}

#[test]
fn each_identity_kind_alone_is_accepted() {
    for identity in [
        json!({"managedIdentity": MI}),
        json!({"servicePrincipal": {"objectId": GUID}}),
        json!({"application": {"objectId": GUID}}),
    ] {
        let mut g = grant();
        g["spec"]["identity"] = identity.clone();
        assert_eq!(create(&g), [], "{identity}");
    }
}

#[test]
fn no_identity_kind_is_rejected() {
    let mut g = grant();
    g["spec"]["identity"] = json!({});
    rejected_at(&create(&g), "spec.identity");
}

#[test]
fn two_identity_kinds_are_rejected() {
    for identity in [
        json!({"managedIdentity": MI, "servicePrincipal": {"objectId": GUID}}),
        json!({"servicePrincipal": {"objectId": GUID}, "application": {"objectId": GUID}}),
        json!({"managedIdentity": MI, "servicePrincipal": {"objectId": GUID}, "application": {"objectId": GUID}}),
    ] {
        let mut g = grant();
        g["spec"]["identity"] = identity;
        rejected_at(&create(&g), "spec.identity");
    }
}

#[test]
fn a_lease_needs_a_duration_or_a_not_after() {
    let mut g = grant();
    g["spec"].as_object_mut().unwrap().remove("duration");
    rejected_at(&create(&g), "spec.duration");

    g["spec"]["window"] = json!({"notBefore": "2026-12-01T02:00:00Z"});
    rejected_at(&create(&g), "spec.duration");

    g["spec"]["window"] = json!({"notAfter": "2026-12-01T04:00:00Z"});
    assert_eq!(create(&g), []);
}

#[test]
fn not_before_must_precede_not_after() {
    let mut g = grant();
    for (before, after) in [
        ("2026-12-01T04:00:00Z", "2026-12-01T02:00:00Z"),
        ("2026-12-01T02:00:00Z", "2026-12-01T02:00:00Z"),
        // The same instant written in two zones is not "before".
        ("2026-12-01T04:00:00+02:00", "2026-12-01T02:00:00Z"),
    ] {
        g["spec"]["window"] = json!({"notBefore": before, "notAfter": after});
        rejected_at(&create(&g), "spec.window.notBefore");
        assert!(create(&g)[0].1.contains("spec.window.notAfter"));
    }
    // Instants compare as times, not strings: 03:00+02:00 is 01:00Z.
    g["spec"]["window"] =
        json!({"notBefore": "2026-12-01T03:00:00+02:00", "notAfter": "2026-12-01T02:00:00Z"});
    assert_eq!(create(&g), []);
}

#[test]
fn revocation_cannot_be_undone() {
    let mut revoked = activated(grant());
    revoked["spec"]["revoked"] = json!(true);
    assert_eq!(
        update(&activated(grant()), &revoked),
        [],
        "setting revoked is allowed"
    );
    assert_eq!(update(&revoked, &revoked), []);

    let mut unrevoked = revoked.clone();
    unrevoked["spec"]["revoked"] = json!(false);
    rejected_at(&update(&revoked, &unrevoked), "spec.revoked");

    let mut dropped = revoked.clone();
    dropped["spec"].as_object_mut().unwrap().remove("revoked");
    rejected_at(&update(&revoked, &dropped), "spec.revoked");
}

#[test]
fn a_new_grant_may_be_created_revoked() {
    let mut g = grant();
    g["spec"]["revoked"] = json!(true);
    assert_eq!(create(&g), []);
}

/// A spec edit, and the field the CRD must name when it refuses it after activation.
type Change = (&'static str, fn(&mut Value));

fn changes() -> Vec<Change> {
    vec![
        ("spec.identity", |g| {
            g["spec"]["identity"] = json!({"servicePrincipal": {"objectId": GUID}})
        }),
        ("spec.identity", |g| {
            g["spec"]["identity"]["managedIdentity"] = json!(MI.replace("backup", "other"))
        }),
        ("spec.roles", |g| {
            g["spec"]["roles"][0]["role"] = json!("Owner")
        }),
        ("spec.roles", |g| {
            g["spec"]["roles"][0]["scope"] =
                json!("/subscriptions/00000000-0000-0000-0000-000000000001")
        }),
        ("spec.roles", |g| {
            g["spec"]["roles"][0]["condition"] = json!("@Resource[x] == 'y'")
        }),
        ("spec.roles", |g| {
            g["spec"]["roles"]
                .as_array_mut()
                .unwrap()
                .push(json!({"role": "Reader", "scope": SCOPE}))
        }),
        ("spec.federation", |g| {
            g["spec"]["federation"]["serviceAccount"] = json!("someone-else")
        }),
        ("spec.federation", |g| {
            g["spec"]["federation"]["audience"] = json!("api://other")
        }),
        ("spec.federation", |g| {
            g["spec"].as_object_mut().unwrap().remove("federation");
        }),
    ]
}

#[test]
fn identity_roles_and_federation_are_frozen_once_activated() {
    let old = activated(grant());
    for (field, change) in changes() {
        let mut new = old.clone();
        change(&mut new);
        rejected_at(&update(&old, &new), field);
    }
    // Adding federation after activation would mint a credential nobody's policy check saw.
    let mut old = activated(grant());
    old["spec"].as_object_mut().unwrap().remove("federation");
    let new = activated(grant());
    rejected_at(&update(&old, &new), "spec.federation");
}

#[test]
fn identity_roles_and_federation_may_change_before_activation() {
    let pending = grant();
    let mut scheduled = grant();
    scheduled["status"] = json!({"phase": "Scheduled"});
    for old in [pending, scheduled] {
        for (field, change) in changes() {
            let mut new = old.clone();
            change(&mut new);
            assert_eq!(
                update(&old, &new),
                [],
                "{field} is editable before activation"
            );
        }
    }
}

#[test]
fn an_activated_lease_may_be_extended() {
    let old = activated(grant());
    let mut longer = old.clone();
    longer["spec"]["duration"] = json!("2h");
    assert_eq!(update(&old, &longer), []);

    let mut windowed = old.clone();
    windowed["spec"]["window"] = json!({"notAfter": "2026-12-01T06:00:00Z"});
    assert_eq!(update(&old, &windowed), []);
}

#[test]
fn policy_needs_an_identity_list_and_namespaces() {
    let policy = json!({
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": "payments-backup"},
        "spec": {
            "namespaces": ["payments", "team-*"],
            "identities": [MI],
            "roles": ["Storage Blob Data Reader"],
            "scopes": [SCOPE],
            "maxDuration": "8h"
        }
    });
    assert_eq!(check::<AccessPolicy>(&policy, None), []);

    let mut no_identities = policy.clone();
    no_identities["spec"]
        .as_object_mut()
        .unwrap()
        .remove("identities");
    let errors = check::<AccessPolicy>(&no_identities, None);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("identities"));

    let mut no_namespaces = policy.clone();
    no_namespaces["spec"]["namespaces"] = json!([]);
    let errors = check::<AccessPolicy>(&no_namespaces, None);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("namespaces"));

    no_namespaces["spec"]["namespaceSelector"] = json!({"matchLabels": {"team": "payments"}});
    assert_eq!(check::<AccessPolicy>(&no_namespaces, None), []);

    let mut selector = policy.clone();
    selector["spec"]["namespaceSelector"] =
        json!({"matchExpressions": [{"key": "team", "operator": "In"}]});
    let errors = check::<AccessPolicy>(&selector, None);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("values"));
}

// The Validator runs CEL only; the apiserver checks patterns and bounds first. These check the
// schema's own keywords (the same ones the apiserver evaluates) against good and bad values.

fn node<'a>(root: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(root, |n, key| match *key {
        "[]" => &n["items"],
        k => &n["properties"][k],
    })
}

#[track_caller]
fn pattern_of(root: &Value, path: &[&str]) -> regex::Regex {
    let p = node(root, path)["pattern"]
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} has no pattern"));
    regex::Regex::new(p).unwrap()
}

#[test]
fn roles_are_bounded_to_sixteen() {
    let s = schema::<AccessGrant>();
    let roles = node(&s, &["spec", "roles"]);
    assert_eq!(roles["maxItems"], json!(16));
    assert_eq!(roles["minItems"], json!(1));
}

#[test]
fn managed_identity_pattern_accepts_only_user_assigned_identity_ids() {
    let re = pattern_of(
        &schema::<AccessGrant>(),
        &["spec", "identity", "managedIdentity"],
    );
    assert!(re.is_match(MI));
    assert!(
        re.is_match(&MI.to_lowercase()),
        "ARM IDs are case-insensitive"
    );
    assert!(re.is_match(&format!("{MI}/")));
    for bad in [
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a",
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/",
        "subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x",
        "/subscriptions//resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x",
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x/extra",
    ] {
        assert!(!re.is_match(bad), "{bad}");
    }
}

#[test]
fn object_ids_must_be_guids() {
    let s = schema::<AccessGrant>();
    for kind in ["servicePrincipal", "application"] {
        let re = pattern_of(&s, &["spec", "identity", kind, "objectId"]);
        assert!(re.is_match(GUID));
        assert!(re.is_match(&GUID.to_uppercase()));
        for bad in [
            "",
            "3fa85f64571745 62b3fc2c963f66afa6",
            "{3fa85f64-5717-4562-b3fc-2c963f66afa6}",
            "3fa85f64-5717-4562-b3fc-2c963f66afa",
        ] {
            assert!(!re.is_match(bad), "{kind}: {bad:?}");
        }
    }
}

#[test]
fn scopes_are_absolute_printable_ascii() {
    let re = pattern_of(&schema::<AccessGrant>(), &["spec", "roles", "[]", "scope"]);
    assert!(re.is_match(SCOPE));
    assert!(re.is_match("/"));
    for bad in [
        "subscriptions/x",
        "/subscriptions/x y",
        "/subscriptions/\u{e9}",
        "/subscriptions/x\n",
    ] {
        assert!(!re.is_match(bad), "{bad:?}");
    }
}

#[test]
fn durations_are_go_durations() {
    let grant = schema::<AccessGrant>();
    let policy = schema::<AccessPolicy>();
    for re in [
        pattern_of(&grant, &["spec", "duration"]),
        pattern_of(&policy, &["spec", "maxDuration"]),
    ] {
        for good in ["90s", "1h30m", "2h", "1.5h", "500ms", "0s"] {
            assert!(re.is_match(good), "{good}");
        }
        for bad in ["", "1", "-1h", "1d", "h", "1h 30m", "P1H", "1.h"] {
            assert!(!re.is_match(bad), "{bad:?}");
        }
    }
}

#[test]
fn window_instants_are_rfc3339_with_a_zone() {
    let s = schema::<AccessGrant>();
    for field in ["notBefore", "notAfter"] {
        let re = pattern_of(&s, &["spec", "window", field]);
        for good in [
            "2026-12-01T02:00:00Z",
            "2026-12-01T02:00:00.5+01:00",
            "2026-12-01T02:00:00-05:30",
        ] {
            assert!(re.is_match(good), "{good}");
        }
        // Lowercase `t`/`z` are RFC 3339 but Go's parser (and so CEL's timestamp() in the
        // apiserver) refuses them: the rule would fail with an error instead of naming the field.
        for bad in [
            "2026-12-01T02:00:00",
            "2026-12-01 02:00:00Z",
            "2026-12-01",
            "2026-12-01t02:00:00z",
            "tomorrow",
        ] {
            assert!(!re.is_match(bad), "{field}: {bad:?}");
        }
    }
}

#[test]
fn service_accounts_are_dns_subdomains() {
    let re = pattern_of(
        &schema::<AccessGrant>(),
        &["spec", "federation", "serviceAccount"],
    );
    for good in ["backup-runner", "a", "x.y-z"] {
        assert!(re.is_match(good), "{good}");
    }
    for bad in [
        "",
        "Backup",
        "-a",
        "a-",
        "ns:sa",
        "system:serviceaccount:payments:backup",
        "a/b",
    ] {
        assert!(!re.is_match(bad), "{bad:?}");
    }
}

#[test]
fn policy_globs_allow_wildcards_but_not_other_namespaces_syntax() {
    let s = schema::<AccessPolicy>();
    for field in ["namespaces", "serviceAccounts"] {
        let re = pattern_of(&s, &["spec", field, "[]"]);
        for good in ["payments", "team-*", "*", "backup-?"] {
            assert!(re.is_match(good), "{field}: {good}");
        }
        for bad in ["", "Team", "ns/sa", "a b", "-x"] {
            assert!(!re.is_match(bad), "{field}: {bad:?}");
        }
    }
}
