//! The policy matcher: a policy and a grant (any JSON), validated, then evaluated: never
//! panics, and an allowed grant is allowed by the one policy given, within its maxDuration.
#![no_main]

use std::collections::BTreeMap;

use lapse_api::policy::{NamedPolicy, PolicyContext, PrivilegeObservation, Verdict, evaluate};
use lapse_api::role::RoleCatalogue;
use lapse_api::v1alpha1::{AccessGrantSpec, AccessPolicySpec};
use lapse_api::validate::{validate_grant, validate_policy};
use libfuzzer_sys::fuzz_target;

#[derive(serde::Deserialize)]
struct Case {
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    policy: AccessPolicySpec,
    grant: AccessGrantSpec,
    /// The lease, in seconds.
    lease: u32,
}

fuzz_target!(|data: &[u8]| {
    let Ok(case) = serde_json::from_slice::<Case>(data) else {
        return;
    };
    let Ok(req) = validate_grant(&case.grant) else {
        return;
    };
    let rules = validate_policy(&case.policy).map_err(|e| e.to_string());
    let max = rules.as_ref().ok().map(|r| r.max_duration.to_chrono());
    let policies = [NamedPolicy {
        name: "fuzz".into(),
        rules,
    }];
    let catalogue = RoleCatalogue::builtin();
    let lease = chrono::TimeDelta::seconds(i64::from(case.lease));
    let verdict = evaluate(
        &req,
        lease,
        &PolicyContext {
            namespace: &case.namespace,
            namespace_labels: &case.labels,
            policies: &policies,
            catalogue: &catalogue,
            privileges: &PrivilegeObservation::Known(Vec::new()),
            live_grants: None,
        },
    );
    if let Verdict::Allowed { policy, .. } = &verdict {
        assert_eq!(policy, "fuzz");
        assert!(
            max.is_some_and(|m| lease <= m),
            "allowed beyond maxDuration"
        );
    }
});
