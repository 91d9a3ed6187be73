//! Policy evaluation: default deny, and one policy must allow the whole grant.

use std::collections::BTreeMap;
use std::fmt;

use chrono::TimeDelta;

mod outlook;
pub use outlook::{ExtensionOutlook, extension_outlook};
use uuid::Uuid;

use crate::duration::LeaseDuration;
use crate::role::RoleCatalogue;
use crate::validate::{
    ApprovalRule, GrantRequest, IdMatcher, Identity, PolicyRules, selector_matches,
};

/// A named, validated policy, or one whose spec is invalid (which allows nothing).
#[derive(Clone, Debug)]
pub struct NamedPolicy {
    pub name: String,
    pub rules: Result<PolicyRules, String>,
}

/// What a policy refused: the grant field, the policy and the constraint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The policy that refused, or `None` when no policy applies at all.
    pub policy: Option<String>,
    pub kind: DenialKind,
    /// The grant field refused (`spec.roles[0].scope`).
    pub field: String,
    pub reason: String,
}

/// Which constraint refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenialKind {
    NoPolicy,
    InvalidPolicy,
    Namespace,
    Identity,
    Role,
    Scope,
    Federation,
    /// The federated identity holds privileged standing roles the policy does not accept.
    PrivilegedIdentity,
    Duration,
    Justification,
    /// The justification names no ticket matching the policy's `ticket.pattern`.
    Ticket,
    /// The namespace already has `maxActiveGrants` live grants under the policy.
    Quota,
    /// `spec.breakGlass` where the policy allows none, or beyond its `breakGlass` bounds.
    BreakGlass,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.policy {
            Some(p) => write!(f, "{}: {} (policy {p})", self.field, self.reason),
            None => write!(f, "{}: {}", self.field, self.reason),
        }
    }
}

/// What stands between an allowed grant and its activation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Nothing: the policy allows it outright.
    Open,
    /// The policy's approvers must approve first.
    Approval(ApprovalRule),
    /// The policy has approvers, but one of its `approval.autoApprove` rules matches: no human
    /// needs to approve. Its approvers may still deny.
    AutoApproved {
        rule: ApprovalRule,
        /// The matching rule's index in `approval.autoApprove`.
        index: usize,
        /// The rule in words (`Reader for at most 30m`).
        description: String,
        /// The rule lists `requesterGroups`: it matched on `spec.requesterGroups`, which only
        /// the requester admission policy makes believable.
        on_groups: bool,
        /// The first rule that matches without `requesterGroups` (index, in words), for when
        /// the groups cannot be believed.
        fallback: Option<(usize, String)>,
    },
    /// `spec.breakGlass` under a policy that allows it: activates without approval, loudly, and
    /// an eligible approver's Deny still ends it.
    BreakGlass(ApprovalRule),
}

impl Gate {
    /// Whom to ask (or who may still deny), when anyone.
    pub fn approval(&self) -> Option<&ApprovalRule> {
        match self {
            Gate::Open => None,
            Gate::Approval(r) | Gate::BreakGlass(r) | Gate::AutoApproved { rule: r, .. } => Some(r),
        }
    }

    /// How much a gate costs the requester: the open way is preferred when several policies
    /// allow a grant.
    fn rank(&self) -> u8 {
        match self {
            Gate::Open | Gate::AutoApproved { .. } => 0,
            Gate::BreakGlass(_) | Gate::Approval(_) => 1,
        }
    }
}

/// The outcome of evaluating a grant against every policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed {
        policy: String,
        max_duration: LeaseDuration,
        gate: Gate,
    },
    Denied {
        reasons: Vec<Denial>,
    },
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }

    /// True when every denial is about the lease length only: the rest of the grant is allowed.
    pub fn denied_only_for_duration(&self) -> bool {
        match self {
            Self::Denied { reasons } => {
                !reasons.is_empty() && reasons.iter().all(|r| r.kind == DenialKind::Duration)
            }
            Self::Allowed { .. } => false,
        }
    }

    /// One line for status messages and Events.
    pub fn message(&self) -> String {
        match self {
            Self::Allowed { policy, .. } => format!("allowed by AccessPolicy {policy}"),
            Self::Denied { reasons } => reasons
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// A privileged role the identity holds outside lapse: federating it would hand this to the
/// workload, for as long as the FIC lives and beyond (it can create standing access).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandingPrivilege {
    /// The role assignment's resource ID.
    pub assignment: String,
    /// The role's name (or GUID when the name is not known).
    pub role: String,
    pub scope: String,
}

/// What is known of the identity's standing privileged roles.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum PrivilegeObservation {
    /// Not looked at, or the look failed: a federated grant waits.
    #[default]
    Unknown,
    Known(Vec<StandingPrivilege>),
}

/// Everything evaluation reads besides the grant.
#[derive(Clone, Copy, Debug)]
pub struct PolicyContext<'a> {
    pub namespace: &'a str,
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub policies: &'a [NamedPolicy],
    pub catalogue: &'a RoleCatalogue,
    /// The identity's privileged standing roles, as far as known (checked for federation).
    pub privileges: &'a PrivilegeObservation,
    /// Live grants of this namespace per policy, not counting the grant evaluated. Checked
    /// against `maxActiveGrants` when set (for a new activation); `None` skips the quota
    /// (a lease already running is never ended by it).
    pub live_grants: Option<&'a BTreeMap<String, u32>>,
}

/// Whether any valid policy covers the namespace at all. Evaluation of everything else (and
/// every Azure look-up a grant costs) starts only then.
pub fn covers_namespace(
    policies: &[NamedPolicy],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    policies
        .iter()
        .filter_map(|p| p.rules.as_ref().ok())
        .any(|rules| namespace_covered(rules, namespace, labels))
}

fn namespace_covered(
    rules: &PolicyRules,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    rules.namespaces.iter().any(|g| g.matches(namespace))
        || rules
            .namespace_selector
            .as_ref()
            .is_some_and(|s| selector_matches(s, labels))
}

/// Evaluates a grant whose total lease length (extensions included) is `lease`.
///
/// Allowed when one policy allows all of it. When several do, one that needs no approval wins,
/// then the one with the largest `maxDuration` (ties: the first by name), so an extension is
/// judged against the most generous policy that covers the grant.
pub fn evaluate(grant: &GrantRequest, lease: TimeDelta, ctx: &PolicyContext<'_>) -> Verdict {
    let mut allowed: Option<(&str, LeaseDuration, Gate)> = None;
    let mut reasons = Vec::new();
    let mut policies: Vec<&NamedPolicy> = ctx.policies.iter().collect();
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    for policy in policies {
        let rules = match &policy.rules {
            Ok(r) => r,
            Err(e) => {
                reasons.push(Denial {
                    policy: Some(policy.name.clone()),
                    kind: DenialKind::InvalidPolicy,
                    field: "spec".into(),
                    reason: format!("the policy is invalid and allows nothing: {e}"),
                });
                continue;
            }
        };
        let mut denials = check(grant, lease, ctx, &policy.name, rules);
        let gate = gate(grant, lease, ctx, &policy.name, rules, &mut denials);
        if denials.is_empty() {
            let better = allowed.as_ref().is_none_or(|(_, max, g)| {
                (gate.rank(), std::cmp::Reverse(rules.max_duration))
                    < (g.rank(), std::cmp::Reverse(*max))
            });
            if better {
                allowed = Some((&policy.name, rules.max_duration, gate));
            }
        } else {
            reasons.extend(denials);
        }
    }
    if let Some((policy, max_duration, gate)) = allowed {
        return Verdict::Allowed {
            policy: policy.to_owned(),
            max_duration,
            gate,
        };
    }
    // Policies that do not cover the namespace say nothing about the grant, and naming them
    // would tell a namespace about policies that are none of its business: when no policy
    // covers the namespace, that alone is the answer.
    let invalid = reasons
        .iter()
        .filter(|r| r.kind == DenialKind::InvalidPolicy)
        .count();
    let relevant: Vec<Denial> = reasons
        .into_iter()
        .filter(|r| !matches!(r.kind, DenialKind::Namespace | DenialKind::InvalidPolicy))
        .collect();
    let reasons = if !relevant.is_empty() {
        relevant
    } else {
        let note = match invalid {
            0 => String::new(),
            1 => "; 1 AccessPolicy is invalid and allows nothing (its status says why)".into(),
            n => format!(
                "; {n} AccessPolicies are invalid and allow nothing (their status says why)"
            ),
        };
        vec![Denial {
            policy: None,
            kind: DenialKind::NoPolicy,
            field: "metadata.namespace".into(),
            reason: format!(
                "no AccessPolicy allows grants in namespace {:?} (default deny){note}",
                ctx.namespace
            ),
        }]
    };
    Verdict::Denied { reasons }
}

/// What a policy that allows everything else asks before activation; break-glass bounds
/// refused add to `denials`.
fn gate(
    grant: &GrantRequest,
    lease: TimeDelta,
    ctx: &PolicyContext<'_>,
    name: &str,
    rules: &PolicyRules,
    denials: &mut Vec<Denial>,
) -> Gate {
    let Some(approval) = &rules.approval else {
        // Nothing to break: the policy allows the grant outright.
        return Gate::Open;
    };
    if !grant.break_glass {
        let describe = |i: usize| approval.auto_approve[i].describe();
        return match auto_approval(grant, lease, approval, ctx.catalogue, true) {
            Some(index) => Gate::AutoApproved {
                rule: approval.clone(),
                index,
                description: describe(index),
                on_groups: !approval.auto_approve[index].requester_groups.is_empty(),
                fallback: auto_approval(grant, lease, approval, ctx.catalogue, false)
                    .map(|i| (i, describe(i))),
            },
            None => Gate::Approval(approval.clone()),
        };
    }
    let Some(max) = rules.break_glass else {
        denials.push(deny(
            name,
            DenialKind::BreakGlass,
            "spec.breakGlass",
            "the policy requires approval and allows no break-glass",
        ));
        return Gate::Approval(approval.clone());
    };
    if lease > max.to_chrono() {
        denials.push(deny(
            name,
            DenialKind::BreakGlass,
            if grant.duration.is_some() {
                "spec.duration"
            } else {
                "spec.window.notAfter"
            },
            format!(
                "a break-glass lease of {} exceeds breakGlass.maxDuration {max}",
                human(lease)
            ),
        ));
    }
    if grant
        .justification
        .as_deref()
        .is_none_or(|j| j.trim().is_empty())
    {
        denials.push(deny(
            name,
            DenialKind::BreakGlass,
            "spec.justification",
            "break-glass needs a justification",
        ));
    }
    Gate::BreakGlass(approval.clone())
}

/// The first `approval.autoApprove` rule that covers the whole grant: a lease (extensions
/// included) of at most its `maxDuration`, every role among its roles (by role definition GUID,
/// as the policy's roles compare), and, when it lists `requesterGroups`, one of them among the
/// grant's (only when `use_groups`: otherwise such a rule matches nothing). A role that does
/// not resolve matches no rule.
pub fn auto_approval(
    grant: &GrantRequest,
    lease: TimeDelta,
    approval: &ApprovalRule,
    catalogue: &RoleCatalogue,
    use_groups: bool,
) -> Option<usize> {
    let roles: Option<Vec<Uuid>> = grant
        .roles
        .iter()
        .map(|r| catalogue.resolve(&r.role).ok().map(|r| r.guid))
        .collect();
    let roles = roles?;
    approval.auto_approve.iter().position(|rule| {
        let allowed: Vec<Uuid> = rule
            .roles
            .iter()
            .filter_map(|(_, r)| catalogue.resolve(r).ok().map(|r| r.guid))
            .collect();
        lease <= rule.max_duration.to_chrono()
            && !roles.is_empty()
            && roles.iter().all(|g| allowed.contains(g))
            && (rule.requester_groups.is_empty()
                || use_groups
                    && grant
                        .requester_groups
                        .iter()
                        .any(|g| rule.requester_groups.contains(g)))
    })
}

fn deny(
    policy: &str,
    kind: DenialKind,
    field: impl Into<String>,
    reason: impl Into<String>,
) -> Denial {
    Denial {
        policy: Some(policy.to_owned()),
        kind,
        field: field.into(),
        reason: reason.into(),
    }
}

fn id_allowed(list: &[IdMatcher], id: &Uuid) -> bool {
    list.iter().any(|m| match m {
        IdMatcher::Any => true,
        IdMatcher::Exact(x) => x == id,
    })
}

fn check(
    grant: &GrantRequest,
    lease: TimeDelta,
    ctx: &PolicyContext<'_>,
    name: &str,
    rules: &PolicyRules,
) -> Vec<Denial> {
    let mut out = Vec::new();
    if !namespace_covered(rules, ctx.namespace, ctx.namespace_labels) {
        out.push(deny(
            name,
            DenialKind::Namespace,
            "metadata.namespace",
            format!("namespace {:?} is not covered", ctx.namespace),
        ));
        // Nothing else matters for a policy that does not cover the namespace.
        return out;
    }
    match &grant.identity {
        Identity::ManagedIdentity(id) => {
            if !rules.identities.iter().any(|g| g.matches(id.as_str())) {
                out.push(deny(
                    name,
                    DenialKind::Identity,
                    "spec.identity.managedIdentity",
                    format!("{id} is not an allowed identity"),
                ));
            }
        }
        Identity::ServicePrincipal(id) => {
            if !id_allowed(&rules.service_principals, id) {
                out.push(deny(
                    name,
                    DenialKind::Identity,
                    "spec.identity.servicePrincipal.objectId",
                    format!("{id} is not an allowed service principal"),
                ));
            }
        }
        Identity::Application(id) => {
            if !id_allowed(&rules.applications, id) {
                out.push(deny(
                    name,
                    DenialKind::Identity,
                    "spec.identity.application.objectId",
                    format!("{id} is not an allowed application"),
                ));
            }
        }
    }
    // Roles compare by role definition GUID after resolution, so a role allowed by name is not
    // reachable through another role's GUID, and a GUID allows exactly that role.
    let allowed_roles: Vec<Uuid> = rules
        .roles
        .iter()
        .filter_map(|(_, r)| ctx.catalogue.resolve(r).ok().map(|r| r.guid))
        .collect();
    for (i, r) in grant.roles.iter().enumerate() {
        match ctx.catalogue.resolve(&r.role) {
            Ok(resolved) if allowed_roles.contains(&resolved.guid) => {}
            Ok(resolved) => out.push(deny(
                name,
                DenialKind::Role,
                format!("spec.roles[{i}].role"),
                format!("role {:?} ({}) is not allowed", r.written, resolved.guid),
            )),
            Err(e) => out.push(deny(
                name,
                DenialKind::Role,
                format!("spec.roles[{i}].role"),
                e.to_string(),
            )),
        }
        if !rules.scopes.iter().any(|s| r.scope.is_at_or_below(s)) {
            out.push(deny(
                name,
                DenialKind::Scope,
                format!("spec.roles[{i}].scope"),
                format!("{} is not at or below an allowed scope", r.scope),
            ));
        }
    }
    if let Some(f) = &grant.federation {
        if !rules
            .service_accounts
            .iter()
            .any(|g| g.matches(&f.service_account))
        {
            out.push(deny(
                name,
                DenialKind::Federation,
                "spec.federation.serviceAccount",
                format!(
                    "ServiceAccount {:?} may not be federated",
                    f.service_account
                ),
            ));
        }
        if !rules.audiences.iter().any(|a| a == &f.audience) {
            out.push(deny(
                name,
                DenialKind::Federation,
                "spec.federation.audience",
                format!(
                    "audience {:?} is not allowed (allowed: {})",
                    f.audience,
                    rules.audiences.join(", ")
                ),
            ));
        }
        if let PrivilegeObservation::Known(held) = ctx.privileges
            && !held.is_empty()
            && !rules.allow_privileged_identities
        {
            let listed: Vec<String> = held
                .iter()
                .map(|p| format!("{} at {} ({})", p.role, p.scope, p.assignment))
                .collect();
            out.push(deny(
                name,
                DenialKind::PrivilegedIdentity,
                "spec.federation",
                format!(
                    "the identity holds privileged standing access, which a federated \
                     credential would hand to the workload: {}; the policy must set \
                     allowPrivilegedIdentities to allow it",
                    listed.join("; ")
                ),
            ));
        }
    }
    if lease > rules.max_duration.to_chrono() {
        out.push(deny(
            name,
            DenialKind::Duration,
            if grant.duration.is_some() {
                "spec.duration"
            } else {
                "spec.window.notAfter"
            },
            format!(
                "a lease of {} exceeds maxDuration {}",
                human(lease),
                rules.max_duration
            ),
        ));
    }
    if let (Some(max), Some(live)) = (rules.max_active_grants, ctx.live_grants) {
        let n = live.get(name).copied().unwrap_or(0);
        if n >= max {
            out.push(deny(
                name,
                DenialKind::Quota,
                "metadata.namespace",
                format!(
                    "namespace {:?} already has {n} live grants under this policy \
                     (maxActiveGrants {max})",
                    ctx.namespace
                ),
            ));
        }
    }
    if let Some(re) = &rules.justification_pattern {
        let j = grant.justification.as_deref().unwrap_or("");
        if !re.is_match(j) {
            out.push(deny(
                name,
                DenialKind::Justification,
                "spec.justification",
                format!("must match {:?}", re.as_str()),
            ));
        }
    }
    if let Some(rule) = &rules.ticket {
        let j = grant.justification.as_deref().unwrap_or("");
        if rule.ticket_in(j).is_none() {
            out.push(deny(
                name,
                DenialKind::Ticket,
                "spec.justification",
                format!(
                    "must name a change ticket matching {:?} (spec.ticket.pattern)",
                    rule.pattern.as_str()
                ),
            ));
        }
    }
    out
}

/// A lease length for messages, in whole seconds in Go style.
fn human(d: TimeDelta) -> String {
    match u64::try_from(d.num_seconds())
        .ok()
        .and_then(|s| LeaseDuration::from_secs(s).ok())
    {
        Some(ld) => ld.to_string(),
        None => format!("{}s", d.num_seconds()),
    }
}

#[cfg(test)]
mod tests;
