use std::collections::BTreeMap;

use chrono::TimeDelta;

use super::*;
use crate::v1alpha1::{
    AccessGrantSpec, AccessPolicySpec, Federation, IdentityRef, ObjectIdRef, RoleRequest,
};
use crate::validate::{validate_grant, validate_policy};

const SUB: &str = "/subscriptions/00000000-0000-0000-0000-0000000000aa";

fn mi(name: &str) -> String {
    format!(
        "{SUB}/resourceGroups/payments-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )
}

fn policy_spec() -> AccessPolicySpec {
    AccessPolicySpec {
        namespaces: vec!["payments".into(), "team-*".into()],
        identities: vec![format!(
            "{SUB}/resourceGroups/payments-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"
        )],
        service_principals: vec!["11111111-2222-3333-4444-555555555555".into()],
        roles: vec!["Reader".into(), "Storage Blob Data Reader".into()],
        scopes: vec![format!("{SUB}/resourceGroups/payments-rg")],
        service_accounts: vec!["backup-*".into()],
        max_duration: "8h".into(),
        justification_pattern: Some("^[A-Z]+-[0-9]+".into()),
        ..Default::default()
    }
}

fn named(name: &str, spec: &AccessPolicySpec) -> NamedPolicy {
    NamedPolicy {
        name: name.into(),
        rules: validate_policy(spec).map_err(|e| e.to_string()),
    }
}

fn grant() -> AccessGrantSpec {
    AccessGrantSpec {
        identity: IdentityRef {
            managed_identity: Some(mi("backup")),
            ..Default::default()
        },
        roles: vec![RoleRequest {
            role: "Storage Blob Data Reader".into(),
            scope: format!(
                "{SUB}/resourceGroups/payments-rg/providers/Microsoft.Storage/storageAccounts/acct"
            ),
            condition: None,
        }],
        federation: Some(Box::new(Federation {
            service_account: "backup-runner".into(),
            audience: "api://AzureADTokenExchange".into(),
        })),
        duration: Some("1h".into()),
        justification: Some("OPS-1 backup".into()),
        ..Default::default()
    }
}

fn eval_in(
    ns: &str,
    labels: &BTreeMap<String, String>,
    spec: &AccessGrantSpec,
    policies: &[NamedPolicy],
    lease_h: i64,
) -> Verdict {
    let req = validate_grant(spec).unwrap();
    let catalogue = RoleCatalogue::builtin();
    let ctx = PolicyContext {
        namespace: ns,
        namespace_labels: labels,
        policies,
        catalogue: &catalogue,
        privileges: &PrivilegeObservation::Known(Vec::new()),
        live_grants: Some(&BTreeMap::new()),
    };
    evaluate(&req, TimeDelta::hours(lease_h), &ctx)
}

fn eval(spec: &AccessGrantSpec, policies: &[NamedPolicy]) -> Verdict {
    eval_in("payments", &BTreeMap::new(), spec, policies, 1)
}

fn denied_fields(v: &Verdict) -> Vec<String> {
    match v {
        Verdict::Denied { reasons } => reasons.iter().map(|r| r.field.clone()).collect(),
        Verdict::Allowed { .. } => vec![],
    }
}

#[test]
fn default_deny_without_policies() {
    let v = eval(&grant(), &[]);
    assert_eq!(denied_fields(&v), ["metadata.namespace"]);
    assert!(v.message().contains("default deny"));
}

#[test]
fn one_policy_allowing_everything_allows() {
    let v = eval(&grant(), &[named("payments", &policy_spec())]);
    assert_eq!(
        v,
        Verdict::Allowed {
            policy: "payments".into(),
            max_duration: crate::duration::LeaseDuration::parse("8h").unwrap(),
            gate: Gate::Open
        }
    );
}

#[test]
fn namespaces_match_by_glob_or_selector() {
    let p = [named("payments", &policy_spec())];
    let none = BTreeMap::new();
    assert!(eval_in("team-blue", &none, &grant(), &p, 1).is_allowed());
    assert!(!eval_in("teams", &none, &grant(), &p, 1).is_allowed());
    let mut spec = policy_spec();
    spec.namespaces.clear();
    spec.namespace_selector = Some(crate::v1alpha1::LabelSelector {
        match_labels: [("lapse.dev/tier".to_string(), "prod".to_string())].into(),
        match_expressions: vec![],
    });
    let p = [named("sel", &spec)];
    let labels: BTreeMap<String, String> =
        [("lapse.dev/tier".to_string(), "prod".to_string())].into();
    assert!(eval_in("anything", &labels, &grant(), &p, 1).is_allowed());
    assert!(!eval_in("anything", &none, &grant(), &p, 1).is_allowed());
}

#[test]
fn each_constraint_names_its_field() {
    let p = [named("payments", &policy_spec())];
    let mut g = grant();
    g.identity.managed_identity = Some(mi("backup").replace("payments-rg", "other-rg"));
    assert_eq!(
        denied_fields(&eval(&g, &p)),
        ["spec.identity.managedIdentity"]
    );

    let mut g = grant();
    g.roles[0].role = "Contributor".into();
    assert_eq!(denied_fields(&eval(&g, &p)), ["spec.roles[0].role"]);

    let mut g = grant();
    g.roles[0].scope = format!("{SUB}/resourceGroups/payments-rg-2");
    assert_eq!(denied_fields(&eval(&g, &p)), ["spec.roles[0].scope"]);

    let mut g = grant();
    g.federation.as_mut().unwrap().service_account = "web".into();
    assert_eq!(
        denied_fields(&eval(&g, &p)),
        ["spec.federation.serviceAccount"]
    );

    let mut g = grant();
    g.justification = Some("because".into());
    assert_eq!(denied_fields(&eval(&g, &p)), ["spec.justification"]);

    let v = eval_in("payments", &BTreeMap::new(), &grant(), &p, 9);
    assert_eq!(denied_fields(&v), ["spec.duration"]);
    assert!(v.denied_only_for_duration());
    assert!(v.message().contains("maxDuration 8h"), "{}", v.message());
}

#[test]
fn a_grant_must_be_covered_by_one_policy_not_a_union() {
    // One policy allows Reader, another allows Storage Blob Data Reader: a grant needing both
    // is denied, because no single policy allows all of it.
    let mut a = policy_spec();
    a.roles = vec!["Reader".into()];
    let mut b = policy_spec();
    b.roles = vec!["Storage Blob Data Reader".into()];
    let mut g = grant();
    g.roles.push(RoleRequest {
        role: "Reader".into(),
        scope: format!("{SUB}/resourceGroups/payments-rg"),
        condition: None,
    });
    assert!(!eval(&g, &[named("a", &a), named("b", &b)]).is_allowed());
    let mut both = policy_spec();
    both.roles = vec!["Reader".into(), "Storage Blob Data Reader".into()];
    assert!(eval(&g, &[named("a", &a), named("b", &b), named("both", &both)]).is_allowed());
}

#[test]
fn roles_compare_by_definition_guid() {
    let mut p = policy_spec();
    // Storage Blob Data Reader by GUID allows it by name, and vice versa.
    p.roles = vec!["2a2b9908-6ea1-4ae2-8e65-a410df84e7d1".into()];
    assert!(eval(&grant(), &[named("p", &p)]).is_allowed());
    let mut g = grant();
    g.roles[0].role = "/subscriptions/00000000-0000-0000-0000-0000000000aa/providers/Microsoft.Authorization/roleDefinitions/2a2b9908-6ea1-4ae2-8e65-a410df84e7d1".into();
    assert!(eval(&g, &[named("p", &policy_spec())]).is_allowed());
    // Reader's GUID does not reach Owner, and the name Reader does not allow Owner's GUID.
    let mut g = grant();
    g.roles[0].role = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635".into();
    assert!(!eval(&g, &[named("p", &policy_spec())]).is_allowed());
}

#[test]
fn service_principals_and_applications_by_object_id() {
    let mut g = grant();
    g.federation = None;
    g.identity = IdentityRef {
        service_principal: Some(ObjectIdRef {
            object_id: "11111111-2222-3333-4444-555555555555".into(),
        }),
        ..Default::default()
    };
    assert!(eval(&g, &[named("p", &policy_spec())]).is_allowed());
    g.identity.service_principal = Some(ObjectIdRef {
        object_id: "11111111-2222-3333-4444-555555555556".into(),
    });
    assert_eq!(
        denied_fields(&eval(&g, &[named("p", &policy_spec())])),
        ["spec.identity.servicePrincipal.objectId"]
    );
    g.identity = IdentityRef {
        application: Some(ObjectIdRef {
            object_id: "11111111-2222-3333-4444-555555555555".into(),
        }),
        ..Default::default()
    };
    assert_eq!(
        denied_fields(&eval(&g, &[named("p", &policy_spec())])),
        ["spec.identity.application.objectId"]
    );
    let mut p = policy_spec();
    p.applications = vec!["*".into()];
    assert!(eval(&g, &[named("p", &p)]).is_allowed());
}

#[test]
fn an_invalid_policy_allows_nothing() {
    let mut p = policy_spec();
    p.max_duration = "0s".into();
    let v = eval(&grant(), &[named("broken", &p)]);
    assert!(!v.is_allowed());
    // Which namespaces an invalid policy meant to cover is unknown, so it is not named to a
    // grant (its own status names the invalid rule); the count says where to look.
    assert!(!v.message().contains("broken"), "{}", v.message());
    assert!(
        v.message()
            .contains("1 AccessPolicy is invalid and allows nothing"),
        "{}",
        v.message()
    );
}

#[test]
fn the_most_generous_covering_policy_is_reported() {
    let mut long = policy_spec();
    long.max_duration = "24h".into();
    let v = eval_in(
        "payments",
        &BTreeMap::new(),
        &grant(),
        &[named("a-short", &policy_spec()), named("b-long", &long)],
        1,
    );
    assert_eq!(
        v,
        Verdict::Allowed {
            policy: "b-long".into(),
            max_duration: crate::duration::LeaseDuration::parse("24h").unwrap(),
            gate: Gate::Open
        }
    );
    // Nine hours: only the long policy covers it.
    assert!(
        eval_in(
            "payments",
            &BTreeMap::new(),
            &grant(),
            &[named("a-short", &policy_spec()), named("b-long", &long)],
            9
        )
        .is_allowed()
    );
}

#[test]
fn a_namespace_no_policy_covers_learns_of_no_policy() {
    let mut other = policy_spec();
    other.namespaces = vec!["billing".into()];
    let v = eval_in(
        "kube-system",
        &BTreeMap::new(),
        &grant(),
        &[
            named("billing-readers", &other),
            named("payments", &policy_spec()),
        ],
        1,
    );
    assert_eq!(denied_fields(&v), ["metadata.namespace"]);
    let msg = v.message();
    assert!(
        !msg.contains("billing-readers") && !msg.contains("policy payments"),
        "{msg}"
    );
    assert!(msg.contains("default deny"), "{msg}");
    assert!(!covers_namespace(
        &[named("billing-readers", &other)],
        "kube-system",
        &BTreeMap::new()
    ));
    assert!(covers_namespace(
        &[named("payments", &policy_spec())],
        "payments",
        &BTreeMap::new()
    ));
}

#[test]
fn an_empty_namespace_selector_is_refused_not_a_match_for_everything() {
    let mut p = policy_spec();
    p.namespaces.clear();
    p.namespace_selector = Some(crate::v1alpha1::LabelSelector::default());
    let err = validate_policy(&p).unwrap_err().to_string();
    assert!(
        err.contains("spec.namespaceSelector: an empty selector matches every namespace"),
        "{err}"
    );
    let v = eval_in(
        "kube-system",
        &BTreeMap::new(),
        &grant(),
        &[named("all", &p)],
        1,
    );
    assert!(!v.is_allowed());
}

#[test]
fn policy_fields_of_the_security_review_are_validated() {
    let mut p = policy_spec();
    p.max_active_grants = Some(0);
    p.audiences = vec![" ".into()];
    let err = validate_policy(&p).unwrap_err().to_string();
    assert!(
        err.contains("spec.maxActiveGrants: must be at least 1"),
        "{err}"
    );
    assert!(err.contains("spec.audiences[0]: must be 1 to"), "{err}");
    // No audiences listed: Entra's token exchange audience only.
    let rules = validate_policy(&policy_spec()).unwrap();
    assert_eq!(rules.audiences, ["api://AzureADTokenExchange"]);
    assert!(!rules.allow_privileged_identities);
}
