//! AccessPolicy status: `Ready` says whether the policy is valid (False naming every invalid
//! rule: an invalid policy allows nothing; or naming role names Azure does not know, which no
//! grant gets), and `grants` how many live grants it allows.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use lapse_api::lease::Reason;
use lapse_api::role::RoleRef;
use lapse_api::v1alpha1::{AccessPolicy, AccessPolicyStatus, Condition, ConditionStatus};
use lapse_api::validate::validate_policy;
use serde_json::json;

use crate::context::Context;
use crate::grant::FIELD_MANAGER;

/// How often policy status is brought up to date (a write happens only when it changed).
const INTERVAL: Duration = Duration::from_secs(5);

/// The status a policy should have, keeping the last transition time of an unchanged `Ready`.
/// `unknown_roles` are the policy's role names Azure said it does not know, as field errors.
pub fn status_of(
    policy: &AccessPolicy,
    live_grants: u32,
    unknown_roles: &[String],
    previous: Option<&AccessPolicyStatus>,
    now: chrono::DateTime<Utc>,
) -> AccessPolicyStatus {
    let (status, reason, message) = match validate_policy(&policy.spec) {
        Ok(_) if !unknown_roles.is_empty() => (
            ConditionStatus::False,
            Reason::UnknownRole,
            format!(
                "no grant gets these roles until fixed: {}",
                unknown_roles.join("; ")
            ),
        ),
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

/// The role names of a valid policy that Azure knows in none of the subscriptions its scopes
/// name, as field errors. Look-ups go through the role cache, so this costs Azure at most one
/// read per name and subscription a minute.
async fn unknown_roles(ctx: &Context, p: &AccessPolicy) -> Vec<String> {
    let Ok(rules) = validate_policy(&p.spec) else {
        return Vec::new();
    };
    let subs: BTreeSet<String> = rules
        .scopes
        .iter()
        .filter_map(|s| s.subscription().map(str::to_ascii_lowercase))
        .collect();
    if subs.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, (written, role)) in rules.roles.iter().enumerate() {
        let RoleRef::Name(name) = role else { continue };
        let wanted: Vec<(String, String)> =
            subs.iter().map(|s| (s.clone(), name.clone())).collect();
        let missing = ctx.resolver.resolve_names(&ctx.azure, &wanted).await;
        if missing.len() == wanted.len() {
            let subs: Vec<&str> = subs.iter().map(String::as_str).collect();
            out.push(format!(
                "spec.roles[{i}]: {written:?} is not a role definition Azure knows in subscription {}",
                subs.join(", ")
            ));
        }
    }
    out
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
            let unknown = unknown_roles(&ctx, &p).await;
            let want = status_of(
                &p,
                counts.get(&name).copied().unwrap_or(0),
                &unknown,
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
        let s = status_of(&p, 0, &[], None, t0);
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
        let later = status_of(&p, 2, &[], Some(&s), t0 + chrono::TimeDelta::hours(1));
        assert_eq!(later.conditions[0].last_transition_time, t0);
        assert_eq!(later.grants, 2);
        p.spec.justification_pattern = None;
        let fixed = status_of(&p, 2, &[], Some(&later), t0 + chrono::TimeDelta::hours(2));
        assert_eq!(fixed.conditions[0].status, ConditionStatus::True);
        assert_eq!(
            fixed.conditions[0].last_transition_time,
            t0 + chrono::TimeDelta::hours(2)
        );
    }

    #[test]
    fn each_kind_of_invalid_rule_is_named() {
        let base = || {
            AccessPolicySpec {
            namespaces: vec!["team-*".into()],
            identities: vec!["/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*".into()],
            roles: vec!["Reader".into()],
            scopes: vec!["/subscriptions/s".into()],
            max_duration: "1h".into(),
            ..Default::default()
        }
        };
        let t0 = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let cases: Vec<(&str, AccessPolicySpec, &str)> = vec![
            (
                "glob",
                AccessPolicySpec {
                    namespaces: vec!["Team_*".into()],
                    ..base()
                },
                "spec.namespaces[0]",
            ),
            (
                "regex",
                AccessPolicySpec {
                    justification_pattern: Some("([".into()),
                    ..base()
                },
                "spec.justificationPattern",
            ),
            (
                "scope",
                AccessPolicySpec {
                    scopes: vec!["subscriptions/s/../x".into()],
                    ..base()
                },
                "spec.scopes[0]",
            ),
            (
                "role",
                AccessPolicySpec {
                    roles: vec!["".into()],
                    ..base()
                },
                "spec.roles[0]",
            ),
        ];
        for (kind, spec, field) in cases {
            let s = status_of(&AccessPolicy::new("p", spec), 0, &[], None, t0);
            let ready = &s.conditions[0];
            assert_eq!(ready.status, ConditionStatus::False, "{kind}");
            assert_eq!(ready.reason, "InvalidRule", "{kind}");
            assert!(ready.message.contains(field), "{kind}: {}", ready.message);
        }
        // A well-formed role name Azure does not know: the rest of the policy works.
        let unknown = vec![
            "spec.roles[0]: \"Blob Gardener\" is not a role definition Azure knows in subscription s"
                .to_owned(),
        ];
        let s = status_of(&AccessPolicy::new("p", base()), 0, &unknown, None, t0);
        assert_eq!(s.conditions[0].status, ConditionStatus::False);
        assert_eq!(s.conditions[0].reason, "UnknownRole");
        assert!(s.conditions[0].message.contains("Blob Gardener"));
    }
}
