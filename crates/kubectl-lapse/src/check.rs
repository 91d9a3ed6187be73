//! The client-side policy check: which AccessPolicy would allow a grant, and why not, judged by
//! the operator's own code (`lapse_api::validate`, `lapse_api::policy::evaluate`) on what the
//! caller can see.
//!
//! The operator knows more than a client: custom role names (from Azure), the identity's standing
//! privileged roles (checked before federating it), and namespaces' labels the caller may not be
//! allowed to read. Where a verdict could depend on one of those, the check says so
//! ([`Check::caveats`]) and a refusal is not final ([`Check::conclusive`]): the operator decides.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use kube::api::{Api, ListParams};
use lapse_api::policy::{DenialKind, NamedPolicy, PolicyContext, PrivilegeObservation, Verdict};
use lapse_api::role::{RoleCatalogue, RoleRef};
use lapse_api::v1alpha1::{AccessGrant, AccessPolicy, GrantPhase};
use lapse_api::validate::{GrantRequest, validate_policy};

use crate::client::{Kube, is_forbidden};

/// The AccessPolicies, validated as the operator validates them (an invalid one allows nothing).
pub fn named(policies: &[AccessPolicy]) -> Vec<NamedPolicy> {
    policies
        .iter()
        .map(|p| NamedPolicy {
            name: p.metadata.name.clone().unwrap_or_default(),
            rules: validate_policy(&p.spec).map_err(|e| e.to_string()),
        })
        .collect()
}

/// Every AccessPolicy, or `None` when the caller may not list them (they are cluster-scoped: a
/// namespace's `view` role does not reach them).
pub async fn policies(kube: &Kube) -> anyhow::Result<Option<Vec<AccessPolicy>>> {
    let api: Api<AccessPolicy> = Api::all(kube.client.clone());
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(Some(list.items)),
        Err(e) if is_forbidden(&e) => Ok(None),
        Err(e) => Err(e).context("listing AccessPolicies"),
    }
}

/// What the operator's view of the namespace would hold: its live grants per policy (for
/// `maxActiveGrants`) and the role names their records resolved (custom roles included).
#[derive(Debug, Default)]
pub struct NamespaceView {
    pub live: BTreeMap<String, u32>,
    pub catalogue: RoleCatalogue,
}

impl NamespaceView {
    /// From the namespace's grants, leaving out `except` (the grant being judged).
    pub fn of(grants: &[AccessGrant], except: Option<&str>) -> Self {
        let mut view = Self {
            live: BTreeMap::new(),
            catalogue: RoleCatalogue::builtin(),
        };
        for g in grants {
            let Some(st) = &g.status else { continue };
            if except.is_some_and(|n| g.metadata.name.as_deref() == Some(n)) {
                continue;
            }
            if matches!(st.phase, GrantPhase::Activating | GrantPhase::Active)
                && let Some(p) = &st.policy
            {
                *view.live.entry(p.clone()).or_default() += 1;
            }
            for r in &st.role_assignments {
                if let (Ok(RoleRef::Name(name)), Some(guid)) = (
                    RoleRef::parse(&r.role),
                    r.role_definition_id
                        .as_deref()
                        .and_then(|d| d.rsplit('/').next())
                        .and_then(|g| uuid::Uuid::try_parse(g).ok()),
                ) && view
                    .catalogue
                    .resolve(&RoleRef::Name(name.clone()))
                    .is_err()
                {
                    view.catalogue.insert(&name, guid);
                }
            }
        }
        view
    }

    pub async fn load(kube: &Kube, ns: &str, except: Option<&str>) -> anyhow::Result<Self> {
        let api: Api<AccessGrant> = Api::namespaced(kube.client.clone(), ns);
        match api.list(&ListParams::default()).await {
            Ok(grants) => Ok(Self::of(&grants.items, except)),
            // Without the namespace's grants: no quota counts, built-in role names only.
            Err(e) if is_forbidden(&e) => Ok(Self::of(&[], None)),
            Err(e) => Err(e).with_context(|| format!("listing AccessGrants in namespace {ns}")),
        }
    }
}

/// The outcome of the check.
#[derive(Debug)]
pub struct Check {
    pub verdict: Verdict,
    /// What the operator checks that this client could not, as sentences.
    pub caveats: Vec<String>,
    /// False when a refusal may be down to what the client could not see.
    pub conclusive: bool,
}

/// What evaluation needs besides the grant.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub namespace: &'a str,
    /// `None`: the caller may not read the namespace.
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub policies: &'a [NamedPolicy],
    pub view: &'a NamespaceView,
}

/// Where the lease of `req` starts and how long it is, as the operator measures them for a
/// grant created at `created`: from `window.notBefore` or the creation, whichever is later.
pub fn lease_of(req: &GrantRequest, created: DateTime<Utc>) -> (DateTime<Utc>, TimeDelta) {
    let anchor = req.not_before.map_or(created, |b| b.max(created));
    (anchor, req.expiry_from(anchor) - anchor)
}

/// Evaluates `req` for a lease of `lease` with the operator's code.
pub fn check(req: &GrantRequest, lease: TimeDelta, inputs: &Inputs<'_>) -> Check {
    let empty = BTreeMap::new();
    let ctx = PolicyContext {
        namespace: inputs.namespace,
        namespace_labels: inputs.labels.unwrap_or(&empty),
        policies: inputs.policies,
        catalogue: &inputs.view.catalogue,
        // Azure is out of sight: the standing-privilege check is the operator's.
        privileges: &PrivilegeObservation::Unknown,
        live_grants: Some(&inputs.view.live),
    };
    let verdict = lapse_api::policy::evaluate(req, lease, &ctx);
    let mut caveats = Vec::new();
    let mut conclusive = true;

    let unknown_roles: Vec<&str> = req
        .roles
        .iter()
        .filter(|r| inputs.view.catalogue.resolve(&r.role).is_err())
        .map(|r| r.written.as_str())
        .collect();
    if !unknown_roles.is_empty() {
        caveats.push(format!(
            "role {} is not an Azure built-in role lapse knows by name: the operator looks it up in \
             Azure",
            unknown_roles.join(", ")
        ));
        conclusive = false;
    }
    let custom_in_policies: Vec<String> = inputs
        .policies
        .iter()
        .filter_map(|p| p.rules.as_ref().ok().map(|r| (&p.name, r)))
        .flat_map(|(name, r)| {
            r.roles
                .iter()
                .filter(|(_, role)| inputs.view.catalogue.resolve(role).is_err())
                .map(move |(written, _)| format!("{written:?} (AccessPolicy {name})"))
        })
        .collect();
    let role_denied = matches!(&verdict, Verdict::Denied { reasons }
        if reasons.iter().any(|d| d.kind == DenialKind::Role));
    if !custom_in_policies.is_empty() && role_denied {
        caveats.push(format!(
            "policies name roles only Azure can resolve: {}",
            custom_in_policies.join(", ")
        ));
        conclusive = false;
    }
    let selectors = inputs.policies.iter().any(|p| {
        p.rules
            .as_ref()
            .is_ok_and(|r| r.namespace_selector.is_some())
    });
    if inputs.labels.is_none() && selectors {
        caveats.push(format!(
            "you may not read namespace {}, so policies that select namespaces by label were \
             judged without its labels",
            inputs.namespace
        ));
        conclusive = false;
    }
    if req.federation.is_some() {
        caveats.push(
            "the operator also checks in Azure that the identity holds no privileged standing \
             role (unless the policy sets allowPrivilegedIdentities)"
                .into(),
        );
    }
    Check {
        verdict,
        caveats,
        conclusive,
    }
}

/// The refusal, one reason a line, each naming the field and the policy.
pub fn refusal_lines(verdict: &Verdict) -> Vec<String> {
    match verdict {
        Verdict::Allowed { .. } => Vec::new(),
        Verdict::Denied { reasons } => reasons.iter().map(ToString::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use lapse_api::v1alpha1::{
        AccessGrantSpec, AccessGrantStatus, AccessPolicySpec, IdentityRef, LabelSelector,
        RoleAssignmentStatus, RoleRequest,
    };
    use lapse_api::validate::validate_grant;

    use super::*;

    const RG: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg";

    fn policy(name: &str, edit: impl FnOnce(&mut AccessPolicySpec)) -> AccessPolicy {
        let mut spec = AccessPolicySpec {
            namespaces: vec!["payments".into()],
            identities: vec![format!(
                "{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"
            )],
            roles: vec!["Reader".into()],
            scopes: vec![RG.into()],
            max_duration: "1h".into(),
            ..Default::default()
        };
        edit(&mut spec);
        AccessPolicy::new(name, spec)
    }

    fn request(role: &str, duration: &str) -> GrantRequest {
        let spec = AccessGrantSpec {
            identity: IdentityRef {
                managed_identity: Some(format!(
                    "{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/backup"
                )),
                ..Default::default()
            },
            roles: vec![RoleRequest {
                role: role.into(),
                scope: RG.into(),
                condition: None,
            }],
            duration: Some(duration.into()),
            ..Default::default()
        };
        validate_grant(&spec).unwrap_or_else(|e| panic!("{e}"))
    }

    fn run(
        req: &GrantRequest,
        policies: &[AccessPolicy],
        labels: Option<&BTreeMap<String, String>>,
    ) -> Check {
        let named = named(policies);
        let view = NamespaceView::of(&[], None);
        let (_, lease) = lease_of(req, Utc::now());
        check(
            req,
            lease,
            &Inputs {
                namespace: "payments",
                labels,
                policies: &named,
                view: &view,
            },
        )
    }

    #[test]
    fn the_operators_verdict_names_field_and_policy() {
        let labels = BTreeMap::new();
        let c = run(
            &request("Reader", "30m"),
            &[policy("p", |_| {})],
            Some(&labels),
        );
        assert_eq!(c.verdict.message(), "allowed by AccessPolicy p");
        assert!(c.conclusive && c.caveats.is_empty());
        let c = run(
            &request("Reader", "2h"),
            &[policy("p", |_| {})],
            Some(&labels),
        );
        assert!(c.conclusive);
        assert_eq!(
            refusal_lines(&c.verdict),
            ["spec.duration: a lease of 2h exceeds maxDuration 1h (policy p)"]
        );
        let c = run(&request("Reader", "30m"), &[], Some(&labels));
        assert!(
            c.verdict
                .message()
                .contains("no AccessPolicy allows grants in namespace")
        );
    }

    #[test]
    fn what_only_the_operator_sees_makes_a_refusal_inconclusive() {
        let labels = BTreeMap::new();
        // A custom role by name: only Azure knows it.
        let c = run(
            &request("Backup Operator", "30m"),
            &[policy("p", |_| {})],
            Some(&labels),
        );
        assert!(!c.verdict.is_allowed() && !c.conclusive, "{c:?}");
        // A policy selecting by label, and labels the caller may not read.
        let selecting = policy("p", |s| {
            s.namespaces.clear();
            s.namespace_selector = Some(LabelSelector {
                match_labels: [("team".to_owned(), "payments".to_owned())].into(),
                ..Default::default()
            });
        });
        let c = run(
            &request("Reader", "30m"),
            std::slice::from_ref(&selecting),
            None,
        );
        assert!(!c.verdict.is_allowed() && !c.conclusive);
        let team = [("team".to_owned(), "payments".to_owned())].into();
        let c = run(&request("Reader", "30m"), &[selecting], Some(&team));
        assert!(c.verdict.is_allowed() && c.conclusive);
    }

    #[test]
    fn the_namespace_view_counts_live_grants_and_learns_recorded_roles() {
        let guid = "11111111-2222-3333-4444-555555555555";
        let mut live = AccessGrant::new("a", AccessGrantSpec::default());
        live.status = Some(AccessGrantStatus {
            phase: GrantPhase::Active,
            policy: Some("p".into()),
            role_assignments: vec![RoleAssignmentStatus {
                schedule: None,
                role: "Backup Operator".into(),
                role_definition_id: Some(format!(
                    "/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/{guid}"
                )),
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut ended = live.clone();
        ended.metadata.name = Some("b".into());
        if let Some(s) = ended.status.as_mut() {
            s.phase = GrantPhase::Expired;
        }
        let view = NamespaceView::of(&[live.clone(), ended], None);
        assert_eq!(view.live.get("p"), Some(&1));
        let role = RoleRef::parse("backup operator").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            view.catalogue.resolve(&role).map(|r| r.guid.to_string()),
            Ok(guid.to_owned())
        );
        assert!(NamespaceView::of(&[live], Some("a")).live.is_empty());
    }
}
