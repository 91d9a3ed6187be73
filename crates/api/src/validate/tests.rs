use super::*;
use crate::v1alpha1::{Federation, IdentityRef, ObjectIdRef, RoleRequest, Window};

const MI: &str = "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/backup";
const SCOPE: &str = "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/rg";

fn good() -> AccessGrantSpec {
    AccessGrantSpec {
        identity: IdentityRef {
            managed_identity: Some(MI.into()),
            ..Default::default()
        },
        roles: vec![RoleRequest {
            role: "Reader".into(),
            scope: SCOPE.into(),
            condition: None,
        }],
        federation: Some(Box::new(Federation {
            service_account: "runner".into(),
            audience: "api://AzureADTokenExchange".into(),
        })),
        duration: Some("1h".into()),
        ..Default::default()
    }
}

fn fields(spec: &AccessGrantSpec) -> Vec<String> {
    match validate_grant(spec) {
        Ok(_) => vec![],
        Err(e) => e.0.into_iter().map(|f| f.field).collect(),
    }
}

#[test]
fn a_good_grant_validates() {
    let req = validate_grant(&good()).unwrap();
    assert!(matches!(req.identity, Identity::ManagedIdentity(_)));
    assert_eq!(
        req.federation.unwrap().subject("payments"),
        "system:serviceaccount:payments:runner"
    );
}

#[test]
fn identity_must_be_exactly_one_kind() {
    let mut s = good();
    s.identity.service_principal = Some(ObjectIdRef {
        object_id: "11111111-2222-3333-4444-555555555555".into(),
    });
    assert_eq!(fields(&s), ["spec.identity"]);
    s.identity = IdentityRef::default();
    assert_eq!(fields(&s), ["spec.identity"]);
}

#[test]
fn identity_values_are_checked() {
    let mut s = good();
    s.identity.managed_identity = Some(SCOPE.into());
    assert_eq!(fields(&s), ["spec.identity.managedIdentity"]);
    s.identity.managed_identity = Some(format!("{MI}/../x"));
    assert_eq!(fields(&s), ["spec.identity.managedIdentity"]);
    let mut s = good();
    s.federation = None;
    s.identity = IdentityRef {
        service_principal: Some(ObjectIdRef {
            object_id: "not-a-guid".into(),
        }),
        ..Default::default()
    };
    assert_eq!(fields(&s), ["spec.identity.servicePrincipal.objectId"]);
    s.identity = IdentityRef {
        application: Some(ObjectIdRef {
            object_id: "{11111111-2222-3333-4444-555555555555}".into(),
        }),
        ..Default::default()
    };
    assert_eq!(fields(&s), ["spec.identity.application.objectId"]);
}

#[test]
fn service_principals_cannot_be_federated() {
    let mut s = good();
    s.identity = IdentityRef {
        service_principal: Some(ObjectIdRef {
            object_id: "11111111-2222-3333-4444-555555555555".into(),
        }),
        ..Default::default()
    };
    assert_eq!(fields(&s), ["spec.federation"]);
}

#[test]
fn roles_are_bounded_parsed_and_unique() {
    let mut s = good();
    s.roles.clear();
    assert_eq!(fields(&s), ["spec.roles"]);
    s.roles = vec![
        RoleRequest {
            role: "Reader".into(),
            scope: SCOPE.into(),
            condition: None
        };
        17
    ];
    assert!(fields(&s).contains(&"spec.roles".to_string()));
    let mut s = good();
    s.roles.push(RoleRequest {
        role: "reader".into(),
        scope: format!("{}/", SCOPE.to_uppercase()),
        condition: None,
    });
    assert_eq!(
        fields(&s),
        ["spec.roles[1]"],
        "same role and scope modulo case"
    );
    let mut s = good();
    s.roles[0].scope = "/subscriptions/x//resourceGroups/rg".into();
    assert_eq!(fields(&s), ["spec.roles[0].scope"]);
    s.roles[0].scope = "/subscriptions/x/résource".into();
    assert_eq!(fields(&s), ["spec.roles[0].scope"]);
    // A management group is a valid Azure scope, but one the operator could never list,
    // repair or sweep: refused, saying so.
    s.roles[0].scope = "/providers/Microsoft.Management/managementGroups/platform".into();
    let err = validate_grant(&s)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("spec.roles[0].scope: management group scopes are not supported"),
        "{err}"
    );
    s.roles[0].scope = SCOPE.into();
    s.roles[0].role = "".into();
    assert_eq!(fields(&s), ["spec.roles[0].role"]);
    s.roles[0].role = "Reader".into();
    s.roles[0].condition = Some("  ".into());
    assert_eq!(fields(&s), ["spec.roles[0].condition"]);
}

#[test]
fn lease_length_is_required_and_checked() {
    let mut s = good();
    s.duration = None;
    assert_eq!(fields(&s), ["spec.duration"]);
    s.duration = Some("0s".into());
    assert_eq!(fields(&s), ["spec.duration"]);
    s.duration = Some("-5m".into());
    assert_eq!(fields(&s), ["spec.duration"]);
    s.duration = None;
    s.window = Some(Box::new(Window {
        not_before: None,
        not_after: Some("2026-12-01T04:00:00Z".into()),
    }));
    assert!(fields(&s).is_empty());
    s.window = Some(Box::new(Window {
        not_before: Some("2026-12-01T05:00:00Z".into()),
        not_after: Some("2026-12-01T04:00:00Z".into()),
    }));
    assert_eq!(fields(&s), ["spec.window.notBefore"]);
    s.window = Some(Box::new(Window {
        not_before: Some("yesterday".into()),
        not_after: Some("2026-12-01T04:00:00+02:00".into()),
    }));
    assert_eq!(fields(&s), ["spec.window.notBefore"]);
}

#[test]
fn federation_fields_are_checked() {
    let mut s = good();
    s.federation = Some(Box::new(Federation {
        service_account: "Runner_1".into(),
        audience: "".into(),
    }));
    assert_eq!(
        fields(&s),
        ["spec.federation.serviceAccount", "spec.federation.audience"]
    );
}

#[test]
fn expiry_is_duration_capped_by_not_after() {
    let mut s = good();
    s.window = Some(Box::new(Window {
        not_before: None,
        not_after: Some("2026-12-01T00:30:00Z".into()),
    }));
    let req = validate_grant(&s).unwrap();
    let start = parse_timestamp("2026-12-01T00:00:00Z").unwrap();
    assert_eq!(
        req.expiry_from(start),
        parse_timestamp("2026-12-01T00:30:00Z").unwrap()
    );
    s.window = None;
    let req = validate_grant(&s).unwrap();
    assert_eq!(
        req.expiry_from(start),
        parse_timestamp("2026-12-01T01:00:00Z").unwrap()
    );
}

#[test]
fn globs_match_names_and_arm_ids() {
    assert!(Glob::name("team-*").matches("team-a"));
    assert!(Glob::name("team-*").matches("team-"));
    assert!(!Glob::name("team-*").matches("teams"));
    assert!(Glob::name("a?c").matches("abc"));
    assert!(Glob::name("*").matches(""));
    let g = Glob::arm(
        "/subscriptions/S/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*",
    );
    assert!(g.matches("/SUBSCRIPTIONS/s/resourcegroups/RG/providers/microsoft.managedidentity/userassignedidentities/backup"));
    // `*` stays inside one segment.
    assert!(!g.matches("/subscriptions/S/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a/b"));
    assert!(
        !Glob::arm("/subscriptions/*/resourceGroups/rg")
            .matches("/subscriptions/a/b/resourceGroups/rg")
    );
}

#[test]
fn policies_validate_with_field_names() {
    let spec = AccessPolicySpec {
        namespaces: vec!["Team_A".into()],
        identities: vec!["/subscriptions/x//y".into()],
        service_principals: vec!["nope".into()],
        roles: vec![],
        scopes: vec!["relative".into()],
        max_duration: "forever".into(),
        justification_pattern: Some("(".into()),
        watch: Some(crate::v1alpha1::WatchRules {
            sensitive_actions: vec![
                "Microsoft.Storage/storageAccounts/listKeys/action".into(),
                "Microsoft.KeyVault//write".into(),
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = validate_policy(&spec).unwrap_err();
    let f: Vec<&str> = e.0.iter().map(|x| x.field.as_str()).collect();
    for want in [
        "spec.namespaces[0]",
        "spec.identities[0]",
        "spec.servicePrincipals[0]",
        "spec.roles",
        "spec.scopes[0]",
        "spec.maxDuration",
        "spec.justificationPattern",
        "spec.watch.sensitiveActions[1]",
    ] {
        assert!(f.contains(&want), "missing {want} in {f:?}");
    }
    assert!(!f.contains(&"spec.watch.sensitiveActions[0]"), "{f:?}");
}

#[test]
fn label_selectors_match_like_kubernetes() {
    use crate::v1alpha1::LabelSelectorRequirement;
    let labels: BTreeMap<String, String> = [("team".to_string(), "payments".to_string())].into();
    let sel = |op: &str, values: &[&str]| LabelSelector {
        match_labels: Default::default(),
        match_expressions: vec![LabelSelectorRequirement {
            key: "team".into(),
            operator: op.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
        }],
    };
    assert!(selector_matches(&LabelSelector::default(), &labels));
    assert!(selector_matches(&sel("In", &["payments"]), &labels));
    assert!(!selector_matches(&sel("NotIn", &["payments"]), &labels));
    assert!(selector_matches(&sel("Exists", &[]), &labels));
    assert!(!selector_matches(&sel("DoesNotExist", &[]), &labels));
    assert!(!selector_matches(&sel("Bogus", &[]), &labels));
}

#[test]
fn a_window_start_anchors_the_duration() {
    let mut s = good();
    s.window = Some(Box::new(Window {
        not_before: Some("2026-12-01T02:00:00Z".into()),
        not_after: None,
    }));
    let req = validate_grant(&s).unwrap();
    // Activated late, the lease still ends an hour after notBefore.
    let late = parse_timestamp("2026-12-01T02:40:00Z").unwrap();
    assert_eq!(
        req.expiry_from(late),
        parse_timestamp("2026-12-01T03:00:00Z").unwrap()
    );
}
