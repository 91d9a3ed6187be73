//! The manifests in `config/samples/` (what `make demo` applies and users copy) are valid, and
//! the sample policy allows the sample grant.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

use lapse_api::lease::PrivilegeObservation;
use lapse_api::policy::{NamedPolicy, PolicyContext, Verdict, evaluate};
use lapse_api::role::RoleCatalogue;
use lapse_api::v1alpha1::{AccessGrant, AccessPolicy};
use lapse_api::validate::{validate_grant, validate_policy};

fn sample(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config/samples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_sample_policy_allows_the_sample_grant() {
    let policy: AccessPolicy = serde_yaml_ng::from_str(&sample("policy.yaml")).unwrap();
    let grant: AccessGrant = serde_yaml_ng::from_str(&sample("grant.yaml")).unwrap();
    let rules = validate_policy(&policy.spec).unwrap_or_else(|e| panic!("policy.yaml: {e}"));
    let request = validate_grant(&grant.spec).unwrap_or_else(|e| panic!("grant.yaml: {e}"));
    let federation = request
        .federation
        .as_ref()
        .expect("the sample grant federates");
    assert_eq!(federation.service_account, "backup-runner");
    let lease = request.duration.expect("the sample grant has a duration");
    assert!(
        lease.as_secs() <= 60,
        "the demo waits for the lease to lapse: keep it short ({}s)",
        lease.as_secs()
    );

    let namespace = grant.metadata.namespace.as_deref().expect("namespaced");
    let policies = [NamedPolicy {
        name: policy.metadata.name.clone().expect("named"),
        rules: Ok(rules),
    }];
    let catalogue = RoleCatalogue::builtin();
    let ctx = PolicyContext {
        namespace,
        namespace_labels: &BTreeMap::new(),
        policies: &policies,
        catalogue: &catalogue,
        // The sample identity holds no standing roles.
        privileges: &PrivilegeObservation::Known(Vec::new()),
        live_grants: Some(&BTreeMap::new()),
    };
    let verdict = evaluate(&request, lease.to_chrono(), &ctx);
    assert!(
        matches!(&verdict, Verdict::Allowed { policy, .. } if policy == "demo-backup"),
        "{}",
        verdict.message()
    );
}

#[test]
fn the_sample_service_account_is_the_one_the_grant_federates() {
    let sa: serde_yaml_ng::Value = serde_yaml_ng::from_str(&sample("serviceaccount.yaml")).unwrap();
    let grant: AccessGrant = serde_yaml_ng::from_str(&sample("grant.yaml")).unwrap();
    assert_eq!(sa["kind"].as_str(), Some("ServiceAccount"));
    assert_eq!(
        sa["metadata"]["namespace"].as_str(),
        grant.metadata.namespace.as_deref()
    );
    assert_eq!(
        sa["metadata"]["name"].as_str(),
        grant
            .spec
            .federation
            .as_ref()
            .map(|f| f.service_account.as_str())
    );
}
