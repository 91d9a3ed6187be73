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
use serde::Deserialize as _;

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

/// `make demo`'s workflows policy: 10 minutes of Reader approves itself by rule 0, 45 minutes
/// does not (it waits for bob, then carol's tier).
#[test]
fn the_workflows_sample_auto_approves_a_short_reader_request_only() {
    let text = sample("workflows.yaml");
    let policy: AccessPolicy = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
        .find(|v| v["kind"] == "AccessPolicy")
        .map(|v| serde_yaml_ng::from_value(v).unwrap())
        .expect("an AccessPolicy");
    let rules = validate_policy(&policy.spec).unwrap_or_else(|e| panic!("workflows.yaml: {e}"));
    let approval = rules.approval.expect("approval");
    assert_eq!(approval.escalation.len(), 1);
    assert!(
        approval.escalation[0].after.as_secs() <= 10,
        "the demo waits for the tier"
    );
    let ask = |minutes: u32| {
        let spec: lapse_api::v1alpha1::AccessGrantSpec = serde_yaml_ng::from_str(&format!(
            "identity: {{managedIdentity: {}}}\nroles: [{{role: Reader, scope: {}}}]\nduration: {minutes}m\n",
            policy.spec.identities[0], policy.spec.scopes[0]
        ))
        .unwrap();
        let req = validate_grant(&spec).unwrap();
        lapse_api::policy::auto_approval(
            &req,
            chrono::TimeDelta::minutes(i64::from(minutes)),
            &approval,
            &RoleCatalogue::builtin(),
            true,
        )
    };
    assert_eq!(ask(10), Some(0));
    assert_eq!(ask(45), None);
}
