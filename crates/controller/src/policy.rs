//! AccessPolicy status: `Ready` says whether the policy is valid (False naming every invalid
//! rule: an invalid policy allows nothing), and `grants` how many live grants it allows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use lapse_api::lease::Reason;
use lapse_api::v1alpha1::{AccessPolicy, AccessPolicyStatus, Condition, ConditionStatus};
use lapse_api::validate::validate_policy;
use serde_json::json;

use crate::context::Context;
use crate::grant::FIELD_MANAGER;

/// How often policy status is brought up to date (a write happens only when it changed).
const INTERVAL: Duration = Duration::from_secs(5);

/// The status a policy should have, keeping the last transition time of an unchanged `Ready`.
pub fn status_of(
    policy: &AccessPolicy,
    live_grants: u32,
    previous: Option<&AccessPolicyStatus>,
    now: chrono::DateTime<Utc>,
) -> AccessPolicyStatus {
    let (status, reason, message) = match validate_policy(&policy.spec) {
        Ok(_) => (
            ConditionStatus::True,
            Reason::Valid,
            "the policy is valid and allows what it lists".to_owned(),
        ),
        Err(errs) => (
            ConditionStatus::False,
            Reason::InvalidRule,
            format!("the policy allows nothing until fixed: {errs}"),
        ),
    };
    let since = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == status)
        .map_or(now, |c| c.last_transition_time);
    AccessPolicyStatus {
        conditions: vec![Condition {
            type_: "Ready".into(),
            status,
            reason: reason.as_str().into(),
            message,
            last_transition_time: since,
            observed_generation: policy.metadata.generation,
        }],
        grants: live_grants,
        observed_generation: policy.metadata.generation,
    }
}

/// Keeps every policy's status current until the process ends.
pub async fn run(ctx: Arc<Context>) {
    let _ = ctx.ready.subscribe().wait_for(|ready| *ready).await;
    let api: Api<AccessPolicy> = Api::all(ctx.client.clone());
    let mut written: HashMap<String, AccessPolicyStatus> = HashMap::new();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let counts = ctx.live.per_policy();
        let policies = ctx.policies.store().state();
        written.retain(|name, _| policies.iter().any(|p| &p.name_any() == name));
        for p in policies {
            let name = p.name_any();
            let previous = written.get(&name).or(p.status.as_ref());
            let want = status_of(
                &p,
                counts.get(&name).copied().unwrap_or(0),
                previous,
                Utc::now(),
            );
            if p.status.as_ref() == Some(&want) || written.get(&name) == Some(&want) {
                continue;
            }
            let patch = json!({
                "apiVersion": "lapse.dev/v1alpha1",
                "kind": "AccessPolicy",
                "status": want,
            });
            match api
                .patch_status(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await
            {
                Ok(_) => {
                    written.insert(name, want);
                }
                Err(e) => tracing::warn!(policy = %name, error = %e, "writing policy status"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapse_api::v1alpha1::AccessPolicySpec;

    #[test]
    fn ready_names_the_invalid_rule_and_keeps_its_transition_time() {
        let mut p = AccessPolicy::new(
            "p",
            AccessPolicySpec {
                namespaces: vec!["team-*".into()],
                identities: vec!["/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*".into()],
                roles: vec!["Reader".into()],
                scopes: vec!["/subscriptions/s".into()],
                max_duration: "1h".into(),
                justification_pattern: Some("([".into()),
                ..Default::default()
            },
        );
        p.metadata.generation = Some(3);
        let t0 = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let s = status_of(&p, 0, None, t0);
        let ready = &s.conditions[0];
        assert_eq!(ready.status, ConditionStatus::False);
        assert!(
            ready
                .message
                .contains("spec.justificationPattern: not a valid regular expression"),
            "{}",
            ready.message
        );
        assert_eq!(s.observed_generation, Some(3));
        let later = status_of(&p, 2, Some(&s), t0 + chrono::TimeDelta::hours(1));
        assert_eq!(later.conditions[0].last_transition_time, t0);
        assert_eq!(later.grants, 2);
        p.spec.justification_pattern = None;
        let fixed = status_of(&p, 2, Some(&later), t0 + chrono::TimeDelta::hours(2));
        assert_eq!(fixed.conditions[0].status, ConditionStatus::True);
        assert_eq!(
            fixed.conditions[0].last_transition_time,
            t0 + chrono::TimeDelta::hours(2)
        );
    }
}
