//! What the decision core needs to count approvals (docs/approval.md): the AccessApprovals of
//! a grant, and whether the admission policies that make requesters and approvers unforgeable
//! are in force. Approvals are believed only while they are: a ValidatingAdmissionPolicy with
//! exactly lapse's validations, failing closed, matching everything it must, with no match
//! condition, and a binding that denies for every namespace. Anything less could let someone
//! approve as someone else, so such grants wait and say why.

use k8s_openapi::api::admissionregistration::v1::{
    NamedRuleWithOperations, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use lapse_api::approval::{ApprovalInput, ApprovalView};
use lapse_api::v1alpha1::AccessApproval;

/// The validations of one of lapse's admission policies, as shipped in
/// `config/admission/approval.yaml` (a test holds the file and the chart to these).
#[derive(Debug)]
pub struct Expected {
    /// What it protects, for messages.
    pub what: &'static str,
    pub resource: &'static str,
    pub operations: &'static [&'static str],
    pub expressions: &'static [&'static str],
}

/// `spec.requester` is the creating user, `spec.requesterGroups` groups that user is in, and
/// neither ever changes.
pub const REQUESTER: Expected = Expected {
    what: "the requester rule (spec.requester is the creating user, spec.requesterGroups their groups)",
    resource: "accessgrants",
    operations: &["CREATE", "UPDATE"],
    expressions: &[
        "request.operation != 'CREATE' || !has(object.spec.requester) || object.spec.requester == request.userInfo.username",
        "request.operation != 'UPDATE' || (has(object.spec.requester) == has(oldObject.spec.requester) && (!has(object.spec.requester) || object.spec.requester == oldObject.spec.requester))",
        "request.operation != 'CREATE' || !has(object.spec.requesterGroups) || object.spec.requesterGroups.all(g, has(request.userInfo.groups) && g in request.userInfo.groups)",
        "request.operation != 'UPDATE' || (has(object.spec.requesterGroups) == has(oldObject.spec.requesterGroups) && (!has(object.spec.requesterGroups) || object.spec.requesterGroups == oldObject.spec.requesterGroups))",
    ],
};

/// An approval's `spec.approver` is the caller, with groups the caller is in.
pub const APPROVER: Expected = Expected {
    what: "the approver rule (spec.approver is the caller)",
    resource: "accessapprovals",
    operations: &["CREATE", "UPDATE"],
    expressions: &[
        "object.spec.approver.username == request.userInfo.username",
        "!has(object.spec.approver.groups) || object.spec.approver.groups.all(g, has(request.userInfo.groups) && g in request.userInfo.groups)",
    ],
};

fn covers(rule: &NamedRuleWithOperations, resource: &str, operations: &[&str]) -> bool {
    let has = |list: &Option<Vec<String>>, want: &str| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|x| x == "*" || x == want))
    };
    has(&rule.api_groups, "lapse.dev")
        && has(&rule.api_versions, "v1alpha1")
        && has(&rule.resources, resource)
        && operations.iter().all(|op| has(&rule.operations, op))
        && rule.resource_names.as_ref().is_none_or(Vec::is_empty)
}

/// Whether a policy enforces `want` without exemptions.
fn enforces(p: &ValidatingAdmissionPolicy, want: &Expected) -> bool {
    let spec = &p.spec;
    let Some(spec) = spec else { return false };
    let fails_closed = spec.failure_policy.as_deref().is_none_or(|f| f == "Fail");
    let unconditional = spec.match_conditions.as_ref().is_none_or(Vec::is_empty);
    let constraints = spec.match_constraints.as_ref();
    let matches_all = constraints.is_some_and(|m| {
        m.resource_rules
            .iter()
            .flatten()
            .any(|r| covers(r, want.resource, want.operations))
            && m.exclude_resource_rules.as_ref().is_none_or(Vec::is_empty)
    });
    let expressions: Vec<&str> = spec
        .validations
        .iter()
        .flatten()
        .map(|v| v.expression.as_str())
        .collect();
    fails_closed
        && unconditional
        && matches_all
        && spec.param_kind.is_none()
        && want.expressions.iter().all(|e| expressions.contains(e))
}

/// Whether a binding applies `policy` with Deny to every object it matches.
fn binds(b: &ValidatingAdmissionPolicyBinding, policy: &str) -> bool {
    let Some(spec) = &b.spec else { return false };
    let narrowed = spec.match_resources.as_ref().is_some_and(|m| {
        let selects =
            |s: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>| {
                s.as_ref().is_some_and(|s| {
                    s.match_labels.as_ref().is_some_and(|l| !l.is_empty())
                        || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
                })
            };
        selects(&m.namespace_selector)
            || selects(&m.object_selector)
            || m.resource_rules.as_ref().is_some_and(|r| !r.is_empty())
            || m.exclude_resource_rules
                .as_ref()
                .is_some_and(|r| !r.is_empty())
    });
    spec.policy_name.as_deref() == Some(policy)
        && spec
            .validation_actions
            .as_ref()
            .is_some_and(|a| a.iter().any(|x| x == "Deny"))
        && spec.param_ref.is_none()
        && !narrowed
}

/// `Ok` when both rules are in force; else what is missing, for the `Approved` condition.
pub fn in_force(
    policies: &[std::sync::Arc<ValidatingAdmissionPolicy>],
    bindings: &[std::sync::Arc<ValidatingAdmissionPolicyBinding>],
) -> Result<(), String> {
    let mut missing = Vec::new();
    for want in [&REQUESTER, &APPROVER] {
        let enforcing: Vec<String> = policies
            .iter()
            .filter(|p| enforces(p, want))
            .map(|p| p.name_any())
            .collect();
        if enforcing.is_empty() {
            missing.push(format!(
                "no ValidatingAdmissionPolicy enforces {} as config/admission/approval.yaml does",
                want.what
            ));
        } else if !enforcing
            .iter()
            .any(|name| bindings.iter().any(|b| binds(b, name)))
        {
            missing.push(format!(
                "ValidatingAdmissionPolicy {} ({}) has no binding that denies in every namespace",
                enforcing.join(", "),
                want.what
            ));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// The caches approvals are counted from.
#[derive(Clone, Debug)]
pub struct ApprovalStores {
    pub approvals: Store<AccessApproval>,
    pub policies: Store<ValidatingAdmissionPolicy>,
    pub bindings: Store<ValidatingAdmissionPolicyBinding>,
}

impl ApprovalStores {
    /// The approvals naming `namespace/name`, and whether they can be believed.
    pub fn view(&self, namespace: &str, name: &str) -> ApprovalView {
        let decisions = self
            .approvals
            .state()
            .iter()
            .filter(|a| a.namespace().as_deref() == Some(namespace) && a.spec.grant.name == name)
            .map(|a| ApprovalInput {
                name: a.name_any(),
                grant_uid: a.spec.grant.uid.clone(),
                generation: a.spec.grant.generation,
                decision: a.spec.decision,
                username: a.spec.approver.username.clone(),
                groups: a.spec.approver.groups.clone(),
                comment: a.spec.comment.clone(),
                created_at: a
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .and_then(crate::observe::to_chrono),
            })
            .collect();
        ApprovalView {
            admission: in_force(&self.policies.state(), &self.bindings.state()),
            decisions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The shipped manifests, parsed.
    fn shipped() -> (
        Vec<Arc<ValidatingAdmissionPolicy>>,
        Vec<Arc<ValidatingAdmissionPolicyBinding>>,
    ) {
        let text = include_str!("../../../config/admission/approval.yaml");
        let (mut ps, mut bs) = (Vec::new(), Vec::new());
        for doc in text.split("\n---\n") {
            let v: serde_json::Value =
                serde_yaml_ng::from_str(doc).unwrap_or_else(|e| panic!("{e}"));
            match v["kind"].as_str() {
                Some("ValidatingAdmissionPolicy") => ps.push(Arc::new(
                    serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}")),
                )),
                Some("ValidatingAdmissionPolicyBinding") => bs.push(Arc::new(
                    serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}")),
                )),
                other => panic!("unexpected {other:?}"),
            }
        }
        (ps, bs)
    }

    #[test]
    fn the_shipped_policies_are_in_force() {
        let (ps, bs) = shipped();
        assert_eq!(in_force(&ps, &bs), Ok(()));
    }

    #[test]
    fn anything_less_is_named() {
        let (ps, bs) = shipped();
        // A binding missing.
        let err = in_force(&ps, &bs[..1]).unwrap_err();
        assert!(
            err.contains("lapse-approval-approver") && err.contains("no binding"),
            "{err}"
        );
        // A policy that warns instead of denying.
        let mut warn = (*bs[0]).clone();
        if let Some(s) = warn.spec.as_mut() {
            s.validation_actions = Some(vec!["Warn".into()]);
        }
        assert!(in_force(&ps, &[Arc::new(warn), bs[1].clone()]).is_err());
        // A binding limited to some namespaces.
        let mut narrow = (*bs[1]).clone();
        if let Some(s) = narrow.spec.as_mut() {
            s.match_resources = Some(
                serde_json::from_value(serde_json::json!(
                    {"namespaceSelector": {"matchLabels": {"team": "x"}}}
                ))
                .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        assert!(in_force(&ps, &[bs[0].clone(), Arc::new(narrow)]).is_err());
        // A policy with one validation edited, or exempting by a match condition, or ignoring
        // its own failures.
        for edit in [
            serde_json::json!({"validations": [{"expression": "true"}]}),
            serde_json::json!({"matchConditions": [{"name": "x", "expression": "request.userInfo.username != 'mallory'"}]}),
            serde_json::json!({"failurePolicy": "Ignore"}),
        ] {
            let mut p = serde_json::to_value(&*ps[0]).unwrap_or_else(|e| panic!("{e}"));
            if let (Some(spec), Some(edit)) = (p["spec"].as_object_mut(), edit.as_object()) {
                spec.extend(edit.clone());
            }
            let p: ValidatingAdmissionPolicy =
                serde_json::from_value(p).unwrap_or_else(|e| panic!("{e}"));
            let err = in_force(&[Arc::new(p), ps[1].clone()], &bs).unwrap_err();
            assert!(err.contains("requester rule"), "{err}");
        }
        assert!(in_force(&[], &[]).unwrap_err().contains("approver rule"));
    }
}
