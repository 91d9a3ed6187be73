//! `--suggest`: per standing role assignment, the AccessPolicy and AccessGrant that would give
//! the same access just in time, for a person to review, apply and then remove the standing
//! assignment; per object of lapse's under a management lock, the commands that let its lease
//! end it (lift the lock, or remove the object). Pure: built from the finding alone.

use lapse_api::role::{RoleCatalogue, RoleRef};
use serde::Serialize;
use serde_json::{Value, json};

use super::findings::{Finding, FindingKind};

/// The manifests replacing one standing role assignment, or the commands that free an object
/// of lapse's from a management lock.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Suggestion {
    /// `None` when an AccessPolicy already allows the access (or for a locked object).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Value>,
    /// `None` for a locked object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<Value>,
    /// Shell commands, for a locked object: each one way out, to run with the lock's owner.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    /// The manifests as YAML documents, with comments saying what to do (only comments for a
    /// locked object).
    pub yaml: String,
}

/// What every suggestion shares.
#[derive(Clone, Copy, Debug)]
pub struct SuggestOptions<'a> {
    /// The namespace of the grant (and the one the policy covers).
    pub namespace: &'a str,
    /// The lease, as a Go duration (also the policy's `maxDuration`).
    pub duration: &'a str,
}

/// A DNS-1123 label piece: lowercase letters, digits and single dashes.
fn slug(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= max {
            break;
        }
    }
    out.trim_matches('-').to_owned()
}

/// `jit-<principal>-<role>-<6 hex of the assignment>`: stable for one assignment, distinct
/// between two assignments of one principal and role, at most 63 characters.
fn name_for(f: &Finding) -> String {
    let who = slug(
        f.principal
            .display_name
            .as_deref()
            .unwrap_or(&f.principal.id),
        24,
    );
    let role = slug(f.role.as_deref().unwrap_or("role"), 24);
    let tail: String = f
        .object_id
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(6)
        .collect::<String>()
        .to_ascii_lowercase();
    let name = [who.as_str(), role.as_str(), tail.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    format!("jit-{name}")
}

/// The role as a manifest names it: a built-in role's name, else its definition GUID (which
/// the operator resolves whatever the role's name).
fn role_ref(f: &Finding) -> String {
    let name = f.role.clone().unwrap_or_default();
    let builtin = RoleCatalogue::builtin();
    match (RoleRef::parse(&name), &f.role_definition_id) {
        (Ok(r), _) if builtin.resolve(&r).is_ok() => name,
        (_, Some(guid)) => guid.clone(),
        _ => name,
    }
}

/// The suggestion for a `StandingRoleAssignment`, a `LockedLapseObject` or a usage-evidence
/// finding; `None` for other kinds.
pub fn suggest(f: &Finding, opts: &SuggestOptions<'_>) -> Option<Suggestion> {
    match f.kind {
        FindingKind::StandingRoleAssignment => just_in_time(f, opts),
        FindingKind::LockedLapseObject => unlock(f),
        k if k.is_usage() => usage(f),
        _ => None,
    }
}

/// For a usage-evidence finding: what to do about it, as comments (and the commands that help).
fn usage(f: &Finding) -> Option<Suggestion> {
    let facts = f.usage.as_ref()?;
    let grant = f.grant.as_deref().and_then(|g| g.split_once('/'));
    let mut commands = Vec::new();
    let advice: Vec<String> = match f.kind {
        FindingKind::UseAfterEnd => {
            if let Some((ns, name)) = grant {
                commands.push(format!("kubectl lapse -n {ns} describe {name}"));
            }
            vec![
                "Investigate: the access was used after the lease ended and its propagation bound; \
                 find who holds the principal's tokens or credentials."
                    .into(),
                "Shorten how long access outlives a lease: a shorter token lifetime for the \
                 workload, and the policy's federation.closeEarly: true (the federated credential \
                 goes one token lifetime before the end)."
                    .into(),
            ]
        }
        FindingKind::UseWithoutLease => {
            commands.push(format!(
                "az role assignment list --assignee {} --all -o table",
                f.principal.id
            ));
            vec![
                "The principal acted with no lease covering it: a standing path lapse does not \
                 govern. Find the standing role assignment (or group membership) that let it,"
                    .into(),
                "move the access to grants (kubectl lapse audit --suggest prints them for a \
                 StandingRoleAssignment), then remove it: az role assignment delete --ids <its ID>."
                    .into(),
            ]
        }
        FindingKind::SensitiveAction | FindingKind::PrivilegeChain => {
            if let Some((ns, name)) = grant {
                commands.push(format!("kubectl lapse -n {ns} describe {name}"));
            }
            vec![
                "Review the action: was it expected of this lease? If not, revoke the grant \
                 (kubectl lapse revoke) and undo what it did."
                    .into(),
                "To have lapse end such leases itself, set the AccessPolicy's \
                 watch.onSensitiveAction: Revoke (with the action in watch.sensitiveActions)."
                    .into(),
            ]
        }
        FindingKind::UnusedGrant => vec![
            "Nothing used this lease: stop requesting it (or request it only when a run needs \
             it)."
                .into(),
        ],
        FindingKind::RightSize => vec![
            "Every action performed is allowed by a narrower role the policy allows: request \
             the role the message names next time."
                .into(),
        ],
        _ => return None,
    };
    let mut yaml = format!(
        "# {}: {}{}\n#   {}\n",
        f.kind,
        f.grant
            .as_deref()
            .map(|g| format!("grant {g}, "))
            .unwrap_or_default(),
        f.principal.short(),
        facts.message
    );
    for a in &advice {
        yaml.push_str(&format!("# {a}\n"));
    }
    for c in &commands {
        yaml.push_str(&format!("#   {c}\n"));
    }
    Some(Suggestion {
        policy: None,
        grant: None,
        commands,
        yaml,
    })
}

/// For an object of lapse's under a lock: lift the lock so the lease can end it, or remove the
/// object now (which also needs the lock lifted for the moment it takes).
fn unlock(f: &Finding) -> Option<Suggestion> {
    if f.locks.is_empty() {
        return None;
    }
    let what = match (&f.role, &f.scope) {
        (Some(role), Some(scope)) if f.issuer.is_none() => format!("{role} at {scope}"),
        _ => format!(
            "federated credential {}",
            f.object_id.rsplit('/').next().unwrap_or_default()
        ),
    };
    let mut yaml = format!(
        "# {}: {what} for {}\n#   {}\n",
        f.kind,
        f.principal.short(),
        f.object_id
    );
    let mut commands = Vec::new();
    for l in &f.locks {
        yaml.push_str(&format!(
            "# Under management lock {:?} ({}) at {}:\n#   {}\n",
            l.name, l.level, l.scope, l.id
        ));
        commands.push(format!("az lock delete --ids {}", l.id));
    }
    yaml.push_str(
        "# Azure refuses to delete the object while a lock stands, so its lease cannot end it.\n\
         # Either remove the lock, and lapse deletes the object when its lease ends:\n",
    );
    for c in &commands {
        yaml.push_str(&format!("#   {c}\n"));
    }
    let by_hand = if f.issuer.is_some() {
        format!(
            "az resource delete --ids {} --api-version 2023-01-31",
            f.object_id
        )
    } else {
        format!("az role assignment delete --ids {}", f.object_id)
    };
    yaml.push_str("# or remove the object now, the lock lifted for the moment it takes:\n");
    if let Some((ns, name)) = f.grant.as_deref().and_then(|g| g.split_once('/')) {
        let revoke = format!("kubectl lapse -n {ns} revoke {name}");
        yaml.push_str(&format!(
            "#   {revoke}    # end the grant's lease; or by hand:\n"
        ));
        commands.push(revoke);
    }
    yaml.push_str(&format!("#   {by_hand}\n"));
    commands.push(by_hand);
    yaml.push_str(
        "# Locks expected there? An AccessPolicy's spec.locks: Deny (the default) refuses grants under them.\n",
    );
    Some(Suggestion {
        policy: None,
        grant: None,
        commands,
        yaml,
    })
}

/// For a standing role assignment: the AccessPolicy (unless one allows it already) and the
/// AccessGrant that give the same access just in time.
fn just_in_time(f: &Finding, opts: &SuggestOptions<'_>) -> Option<Suggestion> {
    let scope = f.scope.clone()?;
    let name = name_for(f);
    let role = role_ref(f);
    let (identity, policy_identities) = match &f.principal.resource_id {
        Some(id) => (json!({"managedIdentity": id}), json!({"identities": [id]})),
        None => (
            json!({"servicePrincipal": {"objectId": f.principal.id}}),
            json!({"servicePrincipals": [f.principal.id]}),
        ),
    };
    let covered = f.covered_by.clone().unwrap_or_default();
    let policy = covered.is_empty().then(|| {
        let mut spec = json!({
            "namespaces": [opts.namespace],
            "roles": [role],
            "scopes": [scope],
            "maxDuration": opts.duration,
        });
        if let (Some(spec), Some(ids)) = (spec.as_object_mut(), policy_identities.as_object()) {
            for (k, v) in ids {
                spec.insert(k.clone(), v.clone());
            }
        }
        json!({
            "apiVersion": "lapse.dev/v1alpha1",
            "kind": "AccessPolicy",
            "metadata": {"name": name},
            "spec": spec,
        })
    });
    let assignment = f.object_id.rsplit('/').next().unwrap_or(&f.object_id);
    let grant = json!({
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessGrant",
        "metadata": {"name": name, "namespace": opts.namespace},
        "spec": {
            "identity": identity,
            "roles": [{"role": role, "scope": scope}],
            "duration": opts.duration,
            "justification": format!("replaces standing role assignment {assignment}"),
        },
    });
    let mut yaml = format!(
        "# {}: {} at {} for {}\n#   {}\n",
        f.kind,
        f.role.as_deref().unwrap_or_default(),
        scope,
        f.principal.short(),
        f.object_id
    );
    if covered.is_empty() {
        yaml.push_str(
            "# Just in time instead: apply the AccessPolicy and the AccessGrant, check that the\n\
             # grant activates, then delete the standing assignment (az role assignment delete --ids <the ID above>).\n",
        );
    } else {
        yaml.push_str(&format!(
            "# AccessPolicy {} already allows it just in time: apply the AccessGrant, check that it\n\
             # activates, then delete the standing assignment (az role assignment delete --ids <the ID above>).\n",
            covered.join(", ")
        ));
    }
    yaml.push_str(&format!(
        "# Check: kubectl lapse -n {} describe {name}\n",
        opts.namespace
    ));
    if f.principal.is_caller {
        yaml.push_str(
            "# Note: this is the principal the audit runs as; lapse never grants to its operator's own principal.\n",
        );
    }
    for doc in policy.iter().chain(std::iter::once(&grant)) {
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml_ng::to_string(doc).unwrap_or_default());
    }
    Some(Suggestion {
        policy,
        grant: Some(grant),
        commands: Vec::new(),
        yaml,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeDelta;
    use lapse_api::policy::{NamedPolicy, PolicyContext, PrivilegeObservation, evaluate};
    use lapse_api::v1alpha1::{AccessGrantSpec, AccessPolicySpec};
    use lapse_api::validate::{validate_grant, validate_policy};

    use super::*;
    use crate::audit::findings::{LockFacts, Principal};

    const RG: &str =
        "/subscriptions/00000000-0000-4000-8000-00000000a001/resourceGroups/lapse-legacy-rg";

    fn finding(principal: Principal, role: &str, guid: &str) -> Finding {
        Finding {
            kind: FindingKind::StandingRoleAssignment,
            object_id: format!(
                "{RG}/providers/Microsoft.Authorization/roleAssignments/5D3C9A44-0000-4000-8000-000000000001"
            ),
            principal,
            scope: Some(RG.into()),
            role: Some(role.into()),
            role_definition_id: Some(guid.into()),
            issuer: None,
            subject: None,
            credential: None,
            covered_by: Some(Vec::new()),
            grant: None,
            locks: Vec::new(),
            usage: None,
            detail: String::new(),
            note: String::new(),
        }
    }

    fn sp() -> Principal {
        Principal {
            id: "9f1c2e3d-0000-4000-8000-000000000002".into(),
            display_name: Some("ci-deployer".into()),
            kind: "ServicePrincipal".into(),
            resource_id: None,
            is_caller: false,
        }
    }

    /// The documents of a suggestion, parsed back.
    fn docs(s: &Suggestion) -> Vec<Value> {
        serde_yaml_ng::Deserializer::from_str(&s.yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    /// The suggested policy allows the suggested grant, judged by the operator's own code.
    fn allowed(policy: &Value, grant: &Value) -> bool {
        let pspec: AccessPolicySpec =
            serde_json::from_value(policy["spec"].clone()).unwrap_or_else(|e| panic!("{e}"));
        let gspec: AccessGrantSpec =
            serde_json::from_value(grant["spec"].clone()).unwrap_or_else(|e| panic!("{e}"));
        let policies = [NamedPolicy {
            name: policy["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .into(),
            rules: validate_policy(&pspec).map_err(|e| e.to_string()),
        }];
        let req = validate_grant(&gspec).unwrap_or_else(|e| panic!("{e}"));
        let labels = BTreeMap::new();
        let ctx = PolicyContext {
            namespace: grant["metadata"]["namespace"].as_str().unwrap_or_default(),
            namespace_labels: &labels,
            policies: &policies,
            catalogue: &RoleCatalogue::builtin(),
            privileges: &PrivilegeObservation::Unknown,
            live_grants: None,
        };
        let lease = req.duration.map_or(TimeDelta::hours(1), |d| d.to_chrono());
        evaluate(&req, lease, &ctx).is_allowed()
    }

    #[test]
    fn a_service_principals_assignment_becomes_a_policy_and_a_grant_it_allows() {
        let f = finding(sp(), "Contributor", "b24988ac-6180-42a0-ab88-20f7382dd24c");
        let s = suggest(
            &f,
            &SuggestOptions {
                namespace: "ci",
                duration: "1h",
            },
        )
        .unwrap_or_else(|| panic!("no suggestion"));
        let d = docs(&s);
        assert_eq!(d.len(), 2, "{}", s.yaml);
        assert_eq!(d[0]["kind"], "AccessPolicy");
        assert_eq!(d[1]["kind"], "AccessGrant");
        assert_eq!(
            d[1]["metadata"]["name"],
            "jit-ci-deployer-contributor-5d3c9a"
        );
        assert_eq!(d[1]["metadata"]["namespace"], "ci");
        assert_eq!(
            d[1]["spec"]["identity"]["servicePrincipal"]["objectId"],
            sp().id.as_str()
        );
        assert_eq!(d[0]["spec"]["servicePrincipals"][0], sp().id.as_str());
        assert_eq!(d[1]["spec"]["roles"][0]["role"], "Contributor");
        assert!(s.yaml.contains("az role assignment delete"), "{}", s.yaml);
        assert!(allowed(&d[0], &d[1]));
    }

    #[test]
    fn a_managed_identity_by_resource_id_and_a_custom_role_by_guid() {
        let mi = Principal {
            id: "1f1c2e3d-0000-4000-8000-000000000003".into(),
            display_name: Some("legacy-etl".into()),
            kind: "ManagedIdentity".into(),
            resource_id: Some(format!(
                "{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/legacy-etl"
            )),
            is_caller: false,
        };
        let f = finding(
            mi.clone(),
            "Blob lister",
            "11111111-2222-4333-8444-555555555555",
        );
        let s = suggest(
            &f,
            &SuggestOptions {
                namespace: "etl",
                duration: "30m",
            },
        )
        .unwrap_or_else(|| panic!("no suggestion"));
        let d = docs(&s);
        assert_eq!(
            d[1]["spec"]["identity"]["managedIdentity"],
            mi.resource_id.as_deref().unwrap_or_default()
        );
        assert_eq!(
            d[0]["spec"]["identities"][0],
            d[1]["spec"]["identity"]["managedIdentity"]
        );
        assert_eq!(
            d[1]["spec"]["roles"][0]["role"],
            "11111111-2222-4333-8444-555555555555"
        );
        assert_eq!(d[0]["spec"]["maxDuration"], "30m");
        assert!(allowed(&d[0], &d[1]));
    }

    #[test]
    fn a_covered_assignment_needs_only_the_grant_and_other_kinds_none() {
        let mut f = finding(sp(), "Reader", "acdd72a7-3385-48ef-bd42-f606fba81ae7");
        f.covered_by = Some(vec!["ci-readers".into()]);
        let s = suggest(
            &f,
            &SuggestOptions {
                namespace: "ci",
                duration: "1h",
            },
        )
        .unwrap_or_else(|| panic!("no suggestion"));
        assert!(s.policy.is_none());
        let d = docs(&s);
        assert_eq!(d.len(), 1);
        assert!(
            s.yaml.contains("AccessPolicy ci-readers already allows it"),
            "{}",
            s.yaml
        );
        f.kind = FindingKind::Orphan;
        assert!(
            suggest(
                &f,
                &SuggestOptions {
                    namespace: "ci",
                    duration: "1h"
                }
            )
            .is_none()
        );
    }

    #[test]
    fn each_usage_finding_says_what_to_do_as_comments() {
        let opts = SuggestOptions {
            namespace: "ignored",
            duration: "1h",
        };
        let advice = |kind: FindingKind, grant: Option<&str>| {
            let mut f = finding(sp(), "Reader", "acdd72a7-3385-48ef-bd42-f606fba81ae7");
            f.kind = kind;
            f.grant = grant.map(str::to_owned);
            f.object_id = "ev-1".into();
            f.usage = Some(crate::audit::findings::UsageFacts {
                at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
                event: Some("ev-1".into()),
                message: "what the operator saw".into(),
            });
            let s = suggest(&f, &opts).unwrap_or_else(|| panic!("no suggestion for {kind}"));
            assert!(s.policy.is_none() && s.grant.is_none());
            assert!(
                s.yaml.lines().all(|l| l.starts_with('#')),
                "only comments: {}",
                s.yaml
            );
            assert!(s.yaml.contains("what the operator saw"), "{}", s.yaml);
            s
        };
        let s = advice(FindingKind::UseAfterEnd, Some("ci/deploy"));
        assert!(
            s.yaml.contains("Investigate") && s.yaml.contains("federation.closeEarly: true"),
            "{}",
            s.yaml
        );
        assert_eq!(s.commands, ["kubectl lapse -n ci describe deploy"]);
        let s = advice(FindingKind::UseWithoutLease, None);
        assert!(s.yaml.contains("standing role assignment"), "{}", s.yaml);
        assert_eq!(
            s.commands,
            [
                "az role assignment list --assignee 9f1c2e3d-0000-4000-8000-000000000002 --all -o table"
            ]
        );
        for kind in [FindingKind::SensitiveAction, FindingKind::PrivilegeChain] {
            let s = advice(kind, Some("ci/deploy"));
            assert!(
                s.yaml.contains("watch.onSensitiveAction: Revoke"),
                "{}",
                s.yaml
            );
        }
        let s = advice(FindingKind::UnusedGrant, Some("ci/deploy"));
        assert!(s.yaml.contains("stop requesting it"), "{}", s.yaml);
        let s = advice(FindingKind::RightSize, Some("ci/deploy"));
        assert!(
            s.yaml.contains("request the role the message names"),
            "{}",
            s.yaml
        );
    }

    #[test]
    fn a_locked_object_gets_the_ways_out_as_comments_and_commands() {
        let lock = "/subscriptions/00000000-0000-4000-8000-00000000a001/providers/Microsoft.Authorization/locks/keep";
        let mut f = finding(sp(), "Reader", "acdd72a7-3385-48ef-bd42-f606fba81ae7");
        f.kind = FindingKind::LockedLapseObject;
        f.grant = Some("ci/deploy".into());
        f.locks = vec![LockFacts {
            id: lock.into(),
            name: "keep".into(),
            level: "CanNotDelete".into(),
            scope: "/subscriptions/00000000-0000-4000-8000-00000000a001".into(),
        }];
        let opts = SuggestOptions {
            namespace: "ignored",
            duration: "1h",
        };
        let s = suggest(&f, &opts).unwrap_or_else(|| panic!("no suggestion"));
        assert_eq!(
            s.commands,
            [
                format!("az lock delete --ids {lock}"),
                "kubectl lapse -n ci revoke deploy".to_owned(),
                format!("az role assignment delete --ids {}", f.object_id),
            ]
        );
        assert!(s.policy.is_none() && s.grant.is_none());
        assert!(
            s.yaml.lines().all(|l| l.starts_with('#')),
            "only comments: {}",
            s.yaml
        );
        assert!(
            s.yaml.contains("management lock \"keep\" (CanNotDelete)"),
            "{}",
            s.yaml
        );
        assert!(docs(&s).iter().all(Value::is_null), "{}", s.yaml);
        // A federated credential is deleted as an ARM resource; without a grant, no revoke.
        f.issuer = Some("https://issuer".into());
        f.grant = None;
        f.object_id = format!(
            "{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi/federatedIdentityCredentials/lapse-prod-0123"
        );
        let s = suggest(&f, &opts).unwrap_or_else(|| panic!("no suggestion"));
        assert_eq!(s.commands.len(), 2, "{:?}", s.commands);
        assert!(s.commands[1].starts_with("az resource delete --ids "));
        assert!(
            s.yaml.contains("federated credential lapse-prod-0123"),
            "{}",
            s.yaml
        );
        f.locks.clear();
        assert!(suggest(&f, &opts).is_none());
    }

    #[test]
    fn names_are_dns_labels() {
        let mut p = sp();
        p.display_name = Some("Very Long Service Principal Name With Spaces And CAPS!!".into());
        let f = finding(
            p,
            "Storage Blob Data Contributor",
            "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        );
        let name = name_for(&f);
        assert!(name.len() <= 63, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
        assert!(!name.contains("--"), "{name}");
    }
}
